//! How a rule rolls out a changed definition (`w.update(#{ max_parallel, max_surge,
//! min_healthy_time, healthy_deadline, progress_deadline, stagger, auto_revert })` in
//! its `.watch` file): old copies are replaced a few at a time, each new copy starting
//! only once the old one it replaces has ended (never more than N) or, with
//! `max_surge`, beside it until it is healthy (never more than N + surge); `canary`
//! new copies first, beside the old ones, held until the version is promoted; the next ones only
//! once the new ones are healthy for a while; a new copy that is not healthy in time,
//! or a rollout that stops moving, fails the version, and `auto_revert` brings the last
//! stable version back. Plain data: `decide::rollout` decides.

use super::health::duration_of;
use super::script::{bool_of, check_keys, dsl_error, int_of, RhaiResult};
use rhai::Map;
use serde::{Deserialize, Serialize};

/// A rule's update policy (Nomad's `update` block, its defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdatePolicy {
    /// Old copies replaced at once.
    pub max_parallel: u32,
    /// Start-first: new copies that may run beside the N while their old ones retire (0:
    /// stop-first, never more than N).
    pub max_surge: u32,
    /// New copies placed first beside the old ones (N + canary), then held until the
    /// version is promoted (0: none).
    pub canary: u32,
    /// Promote the version once its canaries are healthy.
    pub auto_promote: bool,
    /// How long a new copy must be healthy (running, without a check) before it counts
    /// as done, ms.
    pub min_healthy_ms: u64,
    /// A new copy not healthy this long after it was placed fails the rollout, ms.
    pub healthy_deadline_ms: u64,
    /// A rollout in which no copy settled and no old copy went for this long fails, ms
    /// (0: never).
    pub progress_deadline_ms: u64,
    /// The least time between two replacements, ms.
    pub stagger_ms: u64,
    /// On failure, roll back to the version the old copies run.
    pub auto_revert: bool,
}

impl Default for UpdatePolicy {
    fn default() -> UpdatePolicy {
        UpdatePolicy {
            max_parallel: 1,
            max_surge: 0,
            canary: 0,
            auto_promote: false,
            min_healthy_ms: 10_000,
            healthy_deadline_ms: 5 * 60_000,
            progress_deadline_ms: 10 * 60_000,
            stagger_ms: 0,
            auto_revert: false,
        }
    }
}

/// `w.update(#{ max_parallel, max_surge, canary, auto_promote, min_healthy_time,
/// healthy_deadline, progress_deadline, stagger, auto_revert })`.
pub fn from_map(o: &Map) -> RhaiResult<UpdatePolicy> {
    check_keys(
        o,
        "update",
        &[
            "max_parallel",
            "max_surge",
            "canary",
            "auto_promote",
            "min_healthy_time",
            "healthy_deadline",
            "progress_deadline",
            "stagger",
            "auto_revert",
        ],
    )?;
    let mut p = UpdatePolicy::default();
    let duration = |k: &str| duration_of(o, "update", k);
    // A count of copies from `least` to 1000.
    let count = |k: &str, least: u32| -> RhaiResult<Option<u32>> {
        let Some(v) = o.get(k) else { return Ok(None) };
        let n = int_of(v, &format!("update {k}"))?;
        u32::try_from(n)
            .ok()
            .filter(|n| (least..=1000).contains(n))
            .map(Some)
            .ok_or_else(|| dsl_error(format!("update {k}: {n}; expected {least} to 1000")))
    };
    if let Some(n) = count("max_parallel", 1)? {
        p.max_parallel = n;
    }
    if let Some(n) = count("max_surge", 0)? {
        p.max_surge = n;
    }
    if let Some(n) = count("canary", 0)? {
        p.canary = n;
    }
    if let Some(v) = o.get("auto_promote") {
        p.auto_promote = bool_of(v, "update auto_promote")?;
        if p.auto_promote && p.canary == 0 {
            return Err(dsl_error(
                "update auto_promote: there is nothing to promote without canary".to_string(),
            ));
        }
    }
    if let Some(ms) = duration("min_healthy_time")? {
        p.min_healthy_ms = ms;
    }
    if let Some(ms) = duration("healthy_deadline")? {
        p.healthy_deadline_ms = ms;
    }
    if p.healthy_deadline_ms <= p.min_healthy_ms {
        return Err(dsl_error(format!(
            "update healthy_deadline: {} ms is not longer than min_healthy_time ({} ms): no copy could ever make it",
            p.healthy_deadline_ms, p.min_healthy_ms
        )));
    }
    if let Some(ms) = duration("progress_deadline")? {
        p.progress_deadline_ms = ms;
    }
    if p.progress_deadline_ms != 0 && p.progress_deadline_ms < p.healthy_deadline_ms {
        return Err(dsl_error(format!(
            "update progress_deadline: {} ms is shorter than healthy_deadline ({} ms); make it at least as long, or 0 for none",
            p.progress_deadline_ms, p.healthy_deadline_ms
        )));
    }
    if let Some(ms) = duration("stagger")? {
        p.stagger_ms = ms;
    }
    if let Some(v) = o.get("auto_revert") {
        p.auto_revert = bool_of(v, "update auto_revert")?;
    }
    Ok(p)
}
