//! Rules registered through etcd: `<prefix>/v1/rules-in/<name>` holds a `.watch` text,
//! `<prefix>/v1/definitions-in/<path>` the `.haco` texts rules name by path. The leader
//! proposes each through Raft exactly like `haconiwa watch apply` (same checks, same
//! command), removes the rules whose key was deleted, and writes what became of each
//! to `<prefix>/v1/rules-in-status/<name>`. While etcd is away nothing changes: the
//! committed rules stay in force.

use super::etcd::{Etcd, MirrorError, Read};
use super::layout::{Layout, Op};
use crate::cluster::state::Command;
use crate::supervisor::error::OpError;
use crate::supervisor::leader::ops;
use crate::supervisor::mirror_report::RuleSource;
use crate::supervisor::requests::RuleRequest;
use crate::supervisor::shared::Supervisor;
use etcd_client::{EventType, WatchResponse};
use std::collections::BTreeMap;

/// What etcd holds under `rules-in/` and `definitions-in/`, as last read or watched.
#[derive(Debug, Default)]
pub struct RulesIn {
    /// Rule name → its text.
    rules: BTreeMap<String, Read>,
    /// Definition path → its text.
    definitions: BTreeMap<String, Read>,
    /// The etcd revision both maps reflect (0: never read).
    pub revision: i64,
    /// What became of each rule: the fingerprint of what was tried, and the outcome.
    outcome: BTreeMap<String, (String, RuleSource)>,
}

/// What a watch message asks of the mirror.
pub enum WatchStep {
    /// Events applied (or none): reconcile.
    Changed,
    /// The watch cannot go on from our revision (compacted): read everything again.
    Reread,
}

impl RulesIn {
    /// Reads both directories (a full read: at start, after a compaction).
    pub async fn read(&mut self, etcd: &mut Etcd, layout: &Layout) -> Result<(), MirrorError> {
        let rules_dir = layout.rules_in_dir();
        let defs_dir = layout.definitions_in_dir();
        let (rules, r1) = etcd.read_dir(&rules_dir).await?;
        let (defs, r2) = etcd.read_dir(&defs_dir).await?;
        self.rules = strip(rules, &rules_dir);
        self.definitions = strip(defs, &defs_dir);
        self.revision = r1.max(r2);
        Ok(())
    }

    /// Applies one watch message.
    pub fn on_watch(
        &mut self,
        layout: &Layout,
        msg: &WatchResponse,
    ) -> Result<WatchStep, MirrorError> {
        if msg.canceled() {
            if msg.compact_revision() > 0 {
                return Ok(WatchStep::Reread);
            }
            return Err(MirrorError::Watch(msg.cancel_reason().to_string()));
        }
        let rules_dir = layout.rules_in_dir();
        let defs_dir = layout.definitions_in_dir();
        for e in msg.events() {
            let Some(kv) = e.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key());
            let (map, rest) = if let Some(r) = key.strip_prefix(&rules_dir) {
                (&mut self.rules, r)
            } else if let Some(r) = key.strip_prefix(&defs_dir) {
                (&mut self.definitions, r)
            } else {
                continue;
            };
            match e.event_type() {
                EventType::Put => {
                    map.insert(
                        rest.to_string(),
                        Read {
                            value: kv.value().to_vec(),
                            revision: kv.mod_revision(),
                        },
                    );
                }
                EventType::Delete => {
                    map.remove(rest);
                }
            }
            self.revision = self.revision.max(kv.mod_revision());
        }
        if let Some(h) = msg.header() {
            // A watch's header revision is the store's, which may be ahead of the last
            // event; resuming from it skips nothing of ours.
            if msg.events().is_empty() && !msg.created() {
                self.revision = self.revision.max(h.revision());
            }
        }
        Ok(WatchStep::Changed)
    }

    /// What became of every rule, for the status report.
    pub fn report(&self) -> Vec<RuleSource> {
        self.outcome.values().map(|(_, s)| s.clone()).collect()
    }

    /// Brings the committed rules in line with etcd: proposes changed rules, removes
    /// deleted ones, writes the statuses. A proposal that fails for want of a quorum is
    /// tried again next time; a rule that is wrong is not, until its text or the
    /// definitions change.
    pub async fn reconcile(
        &mut self,
        core: &Supervisor,
        etcd: &mut Etcd,
        layout: &Layout,
    ) -> Result<(), MirrorError> {
        let mut status_ops = Vec::new();
        let names: Vec<String> = self.rules.keys().cloned().collect();
        for name in names {
            let Some(read) = self.rules.get(&name).cloned() else {
                continue;
            };
            let text = String::from_utf8_lossy(&read.value).into_owned();
            let key = format!("{}{name}", layout.rules_in_dir());
            let print = self.fingerprint(&text);
            if self.committed(core, layout, &name, &text) {
                let ok = RuleSource {
                    name: name.clone(),
                    key,
                    error: None,
                    revision: read.revision,
                };
                self.record(&name, print, ok, layout, &mut status_ops);
                continue;
            }
            if self
                .outcome
                .get(&name)
                .is_some_and(|(p, s)| *p == print && s.error.is_some())
            {
                continue;
            }
            let result = self.propose(core, layout, &name, &text).await;
            let source = match result {
                Ok(()) => RuleSource {
                    name: name.clone(),
                    key,
                    error: None,
                    revision: read.revision,
                },
                Err(OpError::Invalid(e)) | Err(OpError::Refused(e)) => {
                    tracing::warn!("etcd rule {name} refused: {e}");
                    RuleSource {
                        name: name.clone(),
                        key,
                        error: Some(e),
                        revision: read.revision,
                    }
                }
                // No quorum, not the leader any more, ...: nothing was decided.
                Err(e) => {
                    tracing::info!("etcd rule {name}: {e}; trying again later");
                    continue;
                }
            };
            self.record(&name, print, source, layout, &mut status_ops);
        }
        // Rules whose key is gone.
        let state = core.state();
        let gone: Vec<String> = state
            .rules()
            .values()
            .filter(|r| layout.is_etcd_rule(&r.file) && !self.rules.contains_key(&r.name))
            .map(|r| r.name.clone())
            .collect();
        for name in gone {
            match core
                .propose(Command::RemoveRule { name: name.clone() })
                .await
            {
                Ok(_) | Err(OpError::Refused(_)) => tracing::info!("etcd rule {name} removed"),
                Err(e) => tracing::info!("remove etcd rule {name}: {e}; trying again later"),
            }
        }
        let stale: Vec<String> = self
            .outcome
            .keys()
            .filter(|n| !self.rules.contains_key(*n))
            .cloned()
            .collect();
        for name in stale {
            self.outcome.remove(&name);
            status_ops.push(Op::Delete(layout.rules_in_status(&name)));
        }
        etcd.write(status_ops).await
    }

    /// Remembers an outcome; its status key is written when it changed.
    fn record(
        &mut self,
        name: &str,
        print: String,
        s: RuleSource,
        layout: &Layout,
        ops: &mut Vec<Op>,
    ) {
        let changed = self
            .outcome
            .get(name)
            .is_none_or(|(p, old)| *p != print || old != &s);
        if changed {
            let value = serde_json::json!({
                "ok": s.error.is_none(),
                "error": s.error.clone().unwrap_or_default(),
                "revision": s.revision,
            });
            ops.push(Op::Put(
                layout.rules_in_status(name),
                value.to_string().into_bytes(),
            ));
        }
        self.outcome.insert(name.to_string(), (print, s));
    }

    /// What a try depends on: the rule's text and every definition text.
    fn fingerprint(&self, text: &str) -> String {
        let mut all = text.to_string();
        for (path, d) in &self.definitions {
            all.push('\0');
            all.push_str(path);
            all.push('\0');
            all.push_str(&crate::spec::digest(&String::from_utf8_lossy(&d.value)));
        }
        crate::spec::digest(&all)
    }

    /// Whether the committed rule `name` is this text with these definitions.
    fn committed(&self, core: &Supervisor, layout: &Layout, name: &str, text: &str) -> bool {
        let state = core.state();
        let Some(r) = state.rules().get(name) else {
            return false;
        };
        r.file == layout.rule_source(name)
            && r.digest == crate::spec::digest(text)
            && r.definitions.iter().all(|(path, digest)| {
                self.definitions.get(path).is_some_and(|d| {
                    crate::spec::digest(&String::from_utf8_lossy(&d.value)) == *digest
                })
            })
    }

    /// Checks the rule names only definitions etcd holds, then proposes it as
    /// `watch apply` would.
    async fn propose(
        &self,
        core: &Supervisor,
        layout: &Layout,
        name: &str,
        text: &str,
    ) -> Result<(), OpError> {
        let file = layout.rule_source(name);
        let (t, f) = (text.to_string(), file.clone());
        let info = tokio::task::spawn_blocking(move || crate::spec::watch::check(&t, &f))
            .await
            .map_err(|e| OpError::Internal(format!("check the rule: {e}")))?
            .map_err(|e| OpError::Invalid(e.to_string()))?;
        let mut hacos = BTreeMap::new();
        for h in &info.hacos {
            let Some(d) = self.definitions.get(&h.path) else {
                return Err(OpError::Invalid(format!(
                    "{file}:{}:{}: {} is not in etcd: put its text at {}{}",
                    h.line,
                    h.col,
                    h.path,
                    layout.definitions_in_dir(),
                    h.path
                )));
            };
            hacos.insert(
                h.path.clone(),
                String::from_utf8_lossy(&d.value).into_owned(),
            );
        }
        ops::apply_rule(
            core,
            RuleRequest {
                name: Some(name.to_string()),
                text: text.to_string(),
                file,
                hacos,
                base_dir: String::new(),
            },
        )
        .await
        .map(|_| ())
    }
}

/// Keys relative to their directory.
fn strip(m: BTreeMap<String, Read>, dir: &str) -> BTreeMap<String, Read> {
    m.into_iter()
        .filter_map(|(k, v)| k.strip_prefix(dir).map(|r| (r.to_string(), v)))
        .collect()
}
