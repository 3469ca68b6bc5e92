//! Rollouts on the leader: a rule's current version (`ClusterState::rule_history`) is
//! rolled out while it is `deploying`: for every definition it names,
//! `decide::rollout::step` says which old copies to replace now, each replaced by
//! `Command::Replace` (the new copy placed and queued behind the old one, which its node
//! stops) or, start-first (`max_surge`, canaries), by `Command::Surge` (the old one
//! retiring until the new one settles, then stopped here); `decide::rollout::verdict`
//! says when the version is stable, failed or awaiting its canaries' promotion, which
//! the leader commits (`Command::RolloutEnded`, with `auto_revert` the last stable
//! version coming back as a new version; `Command::PromoteRule` for `auto_promote`). A failed version stays failed in the
//! replicated state: no leader resumes it until the rule is applied again or rolled
//! back. Everything is in the replicated state but the times the leader saw the new
//! copies placed and healthy: a new leader resumes a rollout, counting the copies of
//! the version it finds healthy as settled.

use super::health::suspects;
use crate::cluster::state::{ClusterState, Command, ContainerRecord, RuleRecord, VersionStatus};
use crate::decide::placement;
use crate::decide::rollout::{self, Seen, Step, Verdict};
use crate::spec::update::UpdatePolicy;
use crate::supervisor::error::{OpError, OpResult};
use crate::supervisor::shared::Supervisor;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// (rule, version): one rollout.
type Key = (String, u64);

/// A step looks at every copy of the rules rolling out: at a million copies that is
/// tens of milliseconds, and the rule loop asks for a step on every change and every
/// 100 ms tick. After a step whose look took `d`, the next one waits `SPACING × d`,
/// so that looking takes at most 1/SPACING of the leader's time; at a few thousand
/// copies that wait is well under a millisecond, as good as none.
const SPACING: u32 = 20;

/// The leader's memory of the rollouts under way.
#[derive(Default)]
pub struct Rollouts {
    seen: HashMap<Key, Seen>,
    /// Rules whose version waits for its canaries to be promoted: what to tell.
    awaiting: HashMap<String, String>,
    /// No step before this (see `SPACING`).
    next_step: Option<Instant>,
    /// What looking at the copies took in the step under way.
    looked: Duration,
}

/// What a rollout step did that the rule should tell (`watch ls`).
pub struct Outcome {
    /// The rule.
    pub rule: String,
    /// What happened.
    pub message: String,
}

impl Rollouts {
    /// Forgets everything (leadership lost).
    pub fn reset(&mut self) {
        *self = Rollouts::default();
    }

    /// What a rule's rollout waits for, while it does (its canaries' promotion; shown as
    /// the rule's error, the same at every evaluation until it changes).
    pub fn waiting_for(&self, rule: &str) -> Option<&String> {
        self.awaiting.get(rule)
    }

    /// One step of every rollout; returns what went wrong (for the rule's record).
    pub async fn step(
        &mut self,
        core: &Supervisor,
        state: &ClusterState,
        policies: &HashMap<String, UpdatePolicy>,
    ) -> Vec<Outcome> {
        let now = Instant::now();
        if self.next_step.is_some_and(|at| now < at) {
            return Vec::new();
        }
        self.looked = Duration::ZERO;
        let mut out = Vec::new();
        let mut live = Vec::new();
        let before = std::mem::take(&mut self.awaiting);
        for rule in state.rules().values() {
            let Some(policy) = policies.get(&rule.name) else {
                continue;
            };
            let Some((version, promoted)) = state.rule_history(&rule.name).and_then(|h| {
                h.current()
                    .filter(|v| v.status == VersionStatus::Deploying)
                    .map(|v| (v.version, v.promoted))
            }) else {
                continue;
            };
            let key = (rule.name.clone(), version);
            live.push(key.clone());
            let at = (version, promoted);
            if let Some(message) = self.one(core, state, rule, at, policy, now).await {
                out.push(Outcome {
                    rule: rule.name.clone(),
                    message,
                });
            }
        }
        self.seen.retain(|k, _| live.contains(k));
        self.next_step = Some(Instant::now() + self.looked * SPACING);
        // Newly waiting: told now (then at every evaluation, by `waiting_for`).
        for (rule, msg) in &self.awaiting {
            if before.get(rule) != Some(msg) {
                out.push(Outcome {
                    rule: rule.clone(),
                    message: msg.clone(),
                });
            }
        }
        out
    }

    async fn one(
        &mut self,
        core: &Supervisor,
        state: &ClusterState,
        rule: &RuleRecord,
        (version, promoted): (u64, bool),
        policy: &UpdatePolicy,
        now: Instant,
    ) -> Option<String> {
        let seen = self.seen.entry((rule.name.clone(), version)).or_default();
        let mut steps = Vec::new();
        for (file, digest) in &rule.definitions {
            let look = Instant::now();
            let def = state.definitions().get(digest)?;
            let copies: Vec<&ContainerRecord> = state
                .containers()
                .values()
                .filter(|c| {
                    c.rule.as_deref() == Some(rule.name.as_str()) && c.definition == def.name
                })
                .collect();
            seen.observe(copies.iter().copied().filter(|c| c.digest == *digest), now);
            let step = rollout::step(policy, digest, &copies, seen, promoted, now);
            self.looked += look.elapsed();
            if let Step::Go {
                replace: ids,
                stop,
                start_first,
                ..
            } = &step
            {
                for old in stop {
                    let cmd = Command::Stop { id: old.clone() };
                    if let Err(e) = core.propose(cmd).await {
                        return Some(format!("rollout of {file}: stop retiring {old}: {e}"));
                    }
                    tracing::info!("rule {}: rollout of {file}: {old} retired", rule.name);
                }
                if !ids.is_empty() {
                    seen.replaced(now);
                }
                for old in ids {
                    if let Err(e) = replace(core, state, &def.name, digest, old, *start_first).await
                    {
                        tracing::warn!("rule {}: replace {old}: {e}", rule.name);
                        return Some(format!("rollout of {file}: replace {old}: {e}"));
                    }
                    tracing::info!("rule {}: rollout of {file}: replacing {old}", rule.name);
                }
            }
            steps.push(step);
        }
        let failure = match rollout::verdict(policy, &steps, seen, now) {
            Verdict::Going => return None,
            Verdict::AwaitingPromotion if policy.auto_promote => {
                let cmd = Command::PromoteRule {
                    rule: rule.name.clone(),
                    version: Some(version),
                };
                return match core.propose(cmd).await {
                    Ok(_) => {
                        tracing::info!("rule {}: version {version} promoted", rule.name);
                        None
                    }
                    Err(e) => Some(format!("version {version}: promote: {e}")),
                };
            }
            Verdict::AwaitingPromotion => {
                let msg = format!(
                    "version {version}: its canaries ({}) are healthy beside the old copies; awaiting promotion (haconiwa watch promote {})",
                    policy.canary, rule.name
                );
                self.awaiting.insert(rule.name.clone(), msg);
                return None;
            }
            Verdict::Stable => None,
            Verdict::Failed(reason) => Some(reason),
        };
        let cmd = Command::RolloutEnded {
            rule: rule.name.clone(),
            version,
            failure: failure.clone(),
            revert: policy.auto_revert,
            at_ms: crate::supervisor::shared::wall_ms(),
        };
        let committed = core.propose(cmd).await;
        let reason = failure?;
        let msg = match committed {
            Ok(_) => standing_failure(&core.state(), &rule.name)
                .unwrap_or_else(|| format!("version {version} failed: {reason}")),
            Err(e) => format!("version {version} failed: {reason}; not recorded: {e}"),
        };
        tracing::warn!("rule {}: {msg}", rule.name);
        Some(msg)
    }
}

/// Why the rule's rollout stands failed, from its versions: its current version
/// failed (halted), or it is a rollback of one that did (shown as the rule's error
/// until the rule changes).
pub fn standing_failure(state: &ClusterState, rule: &str) -> Option<String> {
    let h = state.rule_history(rule)?;
    let n = h.versions.len();
    let cur = h.current()?;
    let failed = |v: &crate::cluster::state::RuleVersion| match &v.status {
        VersionStatus::Failed { reason } => Some(format!("version {} failed: {reason}", v.version)),
        _ => None,
    };
    if let Some(msg) = failed(cur) {
        return Some(format!(
            "{msg}; halted (apply the rule again, or `watch rollback`, to go on or back)"
        ));
    }
    let back = cur.rollback_of?;
    let before = h.versions.get(n.checked_sub(2)?)?;
    failed(before).map(|msg| {
        format!(
            "{msg}; reverted: version {} brings back version {back}",
            cur.version
        )
    })
}

/// Places the new copy of `digest` that replaces `old` and commits the replacement:
/// stop-first (`Replace`) or start-first (`Surge`).
async fn replace(
    core: &Supervisor,
    state: &ClusterState,
    definition: &str,
    digest: &str,
    old: &str,
    surge: bool,
) -> OpResult<()> {
    let spec = state.definitions().get(digest).map(|d| &d.spec);
    let ports = spec.map(placement::Request::ports_of).unwrap_or_default();
    // Fixed host ports: a stop-first copy takes the old one's place (and ports) on its
    // node; a start-first one goes where they are free.
    let (node, host_ports) = match state.containers().get(old) {
        Some(c) if !ports.is_empty() && !surge => (Some(c.node), Vec::new()),
        _ => (None, ports),
    };
    let req = placement::Request {
        definition,
        node,
        labels: Default::default(),
        exclude: if node.is_some() {
            Vec::new()
        } else {
            suspects(core)
        },
        host_ports,
        spec,
    };
    let node = placement::place_many(state, &req, 1)?
        .into_iter()
        .next()
        .ok_or_else(|| OpError::Internal("placement chose no node".into()))?;
    let (old, digest) = (old.to_string(), digest.to_string());
    let cmd = if surge {
        Command::Surge { old, digest, node }
    } else {
        Command::Replace { old, digest, node }
    };
    core.propose(cmd).await.map(|_| ())
}
