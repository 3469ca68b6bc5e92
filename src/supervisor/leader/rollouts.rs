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
use std::sync::Arc;
use std::time::{Duration, Instant};

/// (rule, version): one rollout.
type Key = (String, u64);

/// A step looks at every copy of the rules rolling out: at a million copies that is
/// tens of milliseconds, and the rule loop asks for a step on every change and every
/// 100 ms tick. After a step whose look took `d`, the next one waits `SPACING × d`,
/// so that looking takes at most 1/SPACING of the leader's time; at a few thousand
/// copies that wait is well under a millisecond, as good as none.
const SPACING: u32 = 20;

/// From this many containers in the state, a look runs on a blocking thread (below
/// it, the hop to that thread would cost more than the look).
const LOOK_APART_FROM: usize = 10_000;

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
    /// The last look of each rollout whose steps only wait: good while the state's
    /// revision stands and until its `due` moment.
    waiting: HashMap<Key, Waiting>,
}

/// A look whose steps replace and stop nothing (the copies are on their way).
struct Waiting {
    revision: u64,
    promoted: bool,
    due: Option<Instant>,
    steps: Vec<Step>,
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
        state: &Arc<ClusterState>,
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
        self.waiting.retain(|k, _| live.contains(k));
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
        state: &Arc<ClusterState>,
        rule: &RuleRecord,
        (version, promoted): (u64, bool),
        policy: &UpdatePolicy,
        now: Instant,
    ) -> Option<String> {
        let key = (rule.name.clone(), version);
        let unchanged = self.waiting.get(&key).filter(|w| {
            w.revision == state.revision()
                && w.promoted == promoted
                && w.due.is_none_or(|due| now < due)
        });
        if let Some(w) = unchanged {
            // Nothing the step reads has changed: the same steps, without a look.
            let steps = w.steps.clone();
            let seen = self.seen.entry(key).or_default();
            let awaiting = &mut self.awaiting;
            return judge(core, rule, version, policy, &steps, seen, awaiting, now).await;
        }
        let seen = self.seen.remove(&key).unwrap_or_default();
        // A large look is off the async threads: at a million copies it takes a second
        // or more, and the Raft and gRPC tasks must not wait behind it.
        let look = if state.containers().len() < LOOK_APART_FROM {
            look(state, rule, policy, seen, promoted, now)
        } else {
            let (state, rule, policy) = (Arc::clone(state), rule.clone(), policy.clone());
            let apart = tokio::task::spawn_blocking(move || {
                look(&state, &rule, &policy, seen, promoted, now)
            });
            match apart.await {
                Ok(look) => look,
                Err(e) => return Some(format!("rollout: the look at the copies failed: {e}")),
            }
        };
        let Look {
            seen,
            steps,
            took,
            missing,
            due,
            copies,
        } = look;
        self.looked += took;
        tracing::debug!(
            "rule {}: rollout look at {copies} copies took {} ms",
            rule.name,
            took.as_millis()
        );
        self.waiting.remove(&key);
        // Kept before anything is proposed: a failed proposal below must not cost the
        // rollout what it saw (its next look would take every copy for a veteran).
        self.seen.insert(key.clone(), seen);
        if missing {
            return None;
        }
        let waits = steps.iter().all(|(_, _, step)| {
            matches!(step, Step::Go { replace, stop, .. } if replace.is_empty() && stop.is_empty())
        });
        for (file, digest, step) in &steps {
            let Step::Go {
                replace: ids,
                stop,
                start_first,
                ..
            } = step
            else {
                continue;
            };
            let Some(def) = state.definitions().get(digest) else {
                continue;
            };
            for old in stop {
                let cmd = Command::Stop { id: old.clone() };
                if let Err(e) = core.propose(cmd).await {
                    return Some(format!("rollout of {file}: stop retiring {old}: {e}"));
                }
                tracing::info!("rule {}: rollout of {file}: {old} retired", rule.name);
            }
            for old in ids {
                if let Err(e) = replace(core, state, &def.name, digest, old, *start_first).await {
                    tracing::warn!("rule {}: replace {old}: {e}", rule.name);
                    return Some(format!("rollout of {file}: replace {old}: {e}"));
                }
                tracing::info!("rule {}: rollout of {file}: replacing {old}", rule.name);
            }
        }
        let plain: Vec<Step> = steps.iter().map(|(_, _, step)| step.clone()).collect();
        if waits {
            let revision = state.revision();
            self.waiting.insert(
                key.clone(),
                Waiting {
                    revision,
                    promoted,
                    due,
                    steps: plain.clone(),
                },
            );
        }
        let seen = self.seen.entry(key).or_default();
        judge(
            core,
            rule,
            version,
            policy,
            &plain,
            seen,
            &mut self.awaiting,
            now,
        )
        .await
    }
}

/// The verdict on a version from its steps, carried out (`awaiting`: the rules waiting
/// for a promotion, what to tell).
#[allow(clippy::too_many_arguments)]
async fn judge(
    core: &Supervisor,
    rule: &RuleRecord,
    version: u64,
    policy: &UpdatePolicy,
    steps: &[Step],
    seen: &mut Seen,
    awaiting: &mut HashMap<String, String>,
    now: Instant,
) -> Option<String> {
    let failure = match rollout::verdict(policy, steps, seen, now) {
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
            awaiting.insert(rule.name.clone(), msg);
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

/// What one look at a rule's copies found: each definition's step, in the rule's order.
struct Look {
    seen: Seen,
    /// (file, digest, step)
    steps: Vec<(String, String, Step)>,
    /// How long the look took (`SPACING`).
    took: Duration,
    /// A definition of the rule is not in the state: no step.
    missing: bool,
    /// When a step could change with the same copies (`rollout::next_change`).
    due: Option<Instant>,
    /// How many copies it looked at.
    copies: usize,
}

/// Looks at the copies of each definition of `rule` and says its step. A definition
/// that replaces copies starts the stagger before the next one is looked at, as the
/// steps are carried out in this order.
fn look(
    state: &ClusterState,
    rule: &RuleRecord,
    policy: &UpdatePolicy,
    mut seen: Seen,
    promoted: bool,
    now: Instant,
) -> Look {
    let start = Instant::now();
    let mut steps = Vec::new();
    let mut missing = false;
    let mut due: Option<Instant> = None;
    let mut looked_at = 0;
    for (file, digest) in &rule.definitions {
        let Some(def) = state.definitions().get(digest) else {
            missing = true;
            break;
        };
        let copies: Vec<&ContainerRecord> = state
            .containers()
            .values()
            .filter(|c| c.rule.as_deref() == Some(rule.name.as_str()) && c.definition == def.name)
            .collect();
        looked_at += copies.len();
        seen.observe(copies.iter().copied().filter(|c| c.digest == *digest), now);
        let step = rollout::step(policy, digest, &copies, &seen, promoted, now);
        if let Some(t) = rollout::next_change(policy, digest, &copies, &seen, now) {
            due = Some(due.map_or(t, |d| d.min(t)));
        }
        if matches!(&step, Step::Go { replace, .. } if !replace.is_empty()) {
            seen.replaced(now);
        }
        steps.push((file.clone(), digest.clone(), step));
    }
    Look {
        seen,
        steps,
        took: start.elapsed(),
        missing,
        due,
        copies: looked_at,
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
