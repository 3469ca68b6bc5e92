//! Rollouts on the leader: for every definition a rule names whose copies run another
//! digest than the rule's, `decide::rollout::step` says which old copies to replace
//! now; each is replaced by `Command::Replace` (the new copy placed and queued behind
//! the old one, which its node stops). A failed version halts its rollout (the rule
//! says why in `watch ls`) and, with `auto_revert`, the rule goes back to the digest
//! the old copies run. Everything it needs is in the replicated state but the times it
//! saw the new copies placed and healthy: a new leader resumes the rollout, counting
//! the copies of the new version it finds healthy as settled.

use super::health::suspects;
use crate::cluster::state::{ClusterState, Command, ContainerRecord, RuleRecord};
use crate::decide::placement;
use crate::decide::rollout::{self, Seen, Step};
use crate::spec::update::UpdatePolicy;
use crate::supervisor::error::{OpError, OpResult};
use crate::supervisor::shared::Supervisor;
use std::collections::HashMap;
use std::time::Instant;

/// (rule, `.haco` file): one rollout.
type Key = (String, String);

/// The leader's memory of the rollouts under way.
#[derive(Default)]
pub struct Rollouts {
    seen: HashMap<Key, Seen>,
    /// Rollouts that failed: why, until the rule is applied again.
    halted: HashMap<Key, Halted>,
}

/// A failed rollout.
struct Halted {
    /// The digest that failed (nothing more is replaced while the rule names it).
    failed: String,
    /// The digest it went back to (`auto_revert`).
    reverted_to: Option<String>,
    /// Why, for `watch ls`.
    message: String,
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

    /// Why a rollout of `rule` failed, while it stays halted (shown as the rule's
    /// error).
    pub fn failure(&self, rule: &str) -> Option<String> {
        self.halted
            .iter()
            .find(|((r, _), _)| r == rule)
            .map(|(_, h)| h.message.clone())
    }

    /// One step of every rollout; returns what failed (for the rule's record).
    pub async fn step(
        &mut self,
        core: &Supervisor,
        state: &ClusterState,
        policies: &HashMap<String, UpdatePolicy>,
    ) -> Vec<Outcome> {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut live = Vec::new();
        for rule in state.rules().values() {
            let Some(policy) = policies.get(&rule.name) else {
                continue;
            };
            for (file, digest) in &rule.definitions {
                let key = (rule.name.clone(), file.clone());
                live.push(key.clone());
                if let Some(msg) = self.one(core, state, rule, file, digest, policy, now).await {
                    out.push(Outcome {
                        rule: rule.name.clone(),
                        message: msg,
                    });
                }
            }
        }
        self.seen.retain(|k, _| live.contains(k));
        self.halted.retain(|k, _| live.contains(k));
        out
    }

    #[allow(clippy::too_many_arguments)]
    async fn one(
        &mut self,
        core: &Supervisor,
        state: &ClusterState,
        rule: &RuleRecord,
        file: &str,
        digest: &str,
        policy: &UpdatePolicy,
        now: Instant,
    ) -> Option<String> {
        let key = (rule.name.clone(), file.to_string());
        match self.halted.get(&key) {
            Some(h) if h.failed == digest => return None,
            // Reverted: the failed copies are the outdated ones now; the reason stays.
            Some(h) if h.reverted_to.as_deref() == Some(digest) => {}
            _ => {
                self.halted.remove(&key);
            }
        }
        let def = state.definitions().get(digest)?;
        let copies: Vec<&ContainerRecord> = state
            .containers()
            .values()
            .filter(|c| c.rule.as_deref() == Some(rule.name.as_str()) && c.definition == def.name)
            .collect();
        let seen = self.seen.entry(key.clone()).or_default();
        seen.observe(copies.iter().copied().filter(|c| c.digest == digest), now);
        match rollout::step(policy, digest, &copies, seen, now) {
            Step::Done => {
                self.seen.remove(&key);
                None
            }
            Step::Replace(ids) => {
                for old in ids {
                    if let Err(e) = replace(core, state, &def.name, digest, &old).await {
                        tracing::warn!("rule {}: replace {old}: {e}", rule.name);
                        return Some(format!("rollout of {file}: replace {old}: {e}"));
                    }
                    tracing::info!("rule {}: rollout of {file}: replacing {old}", rule.name);
                }
                None
            }
            Step::Failed { reason, revert_to } => {
                self.seen.remove(&key);
                let short = |d: &str| d.chars().take(12).collect::<String>();
                let mut msg = format!("rollout of {file} to {} failed: {reason}", short(digest));
                let mut reverted_to = None;
                if let Some(back) = revert_to {
                    let mut reverted = rule.clone();
                    reverted.definitions.insert(file.to_string(), back.clone());
                    let cmd = Command::PutRule {
                        rule: reverted,
                        definitions: Vec::new(),
                    };
                    match core.propose(cmd).await {
                        Ok(_) => {
                            msg.push_str(&format!("; reverted to {}", short(&back)));
                            reverted_to = Some(back);
                        }
                        Err(e) => msg.push_str(&format!("; revert failed: {e}")),
                    }
                } else {
                    msg.push_str("; halted (apply the rule again to go on or back)");
                }
                tracing::warn!("rule {}: {msg}", rule.name);
                self.halted.insert(
                    key,
                    Halted {
                        failed: digest.to_string(),
                        reverted_to,
                        message: msg.clone(),
                    },
                );
                Some(msg)
            }
        }
    }
}

/// Places the new copy of `digest` that replaces `old` and commits the replacement.
async fn replace(
    core: &Supervisor,
    state: &ClusterState,
    definition: &str,
    digest: &str,
    old: &str,
) -> OpResult<()> {
    let req = placement::Request {
        definition,
        node: None,
        labels: Default::default(),
        exclude: suspects(core),
    };
    let node = placement::place_many(state, &req, 1)?
        .into_iter()
        .next()
        .ok_or_else(|| OpError::Internal("placement chose no node".into()))?;
    core.propose(Command::Replace {
        old: old.to_string(),
        digest: digest.to_string(),
        node,
    })
    .await
    .map(|_| ())
}
