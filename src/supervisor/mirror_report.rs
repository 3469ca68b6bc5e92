//! What the etcd mirror (the `mirror` layer, above this one) tells of itself: it writes
//! a `MirrorReport` into the node, and the API and `cluster status` read it here.

use crate::api::pb;
use std::time::Instant;

/// The mirror's own account, kept current by the mirror task of this member.
#[derive(Debug, Clone, Default)]
pub struct MirrorReport {
    /// `[etcd]` is configured on this member.
    pub enabled: bool,
    /// etcd client URLs.
    pub endpoints: Vec<String>,
    /// Key prefix.
    pub prefix: String,
    /// etcd answered the last call.
    pub connected: bool,
    /// This member holds `meta/writer` (it leads and etcd accepted its claim).
    pub writer: bool,
    /// Raft term of the writer's claim.
    pub term: u64,
    /// Applied index of the state last copied completely.
    pub mirrored_index: u64,
    /// When the oldest change not yet copied was first seen (None: caught up).
    pub behind_since: Option<Instant>,
    /// The last error and when it happened.
    pub last_error: Option<(String, Instant)>,
    /// Full resyncs done since this member started.
    pub resyncs: u64,
    /// State keys under the prefix after the last write.
    pub keys: u64,
    /// Rules registered through etcd and what became of them.
    pub rules_in: Vec<pb::RuleSource>,
    /// Last etcd revision of the rule keys seen.
    pub rules_revision: i64,
}

impl MirrorReport {
    /// The report as the API sends it, with the lag measured now against `applied`.
    pub fn to_pb(&self, node: u64, applied: u64) -> pb::MirrorStatusReply {
        let now = Instant::now();
        pb::MirrorStatusReply {
            enabled: self.enabled,
            endpoints: self.endpoints.clone(),
            prefix: self.prefix.clone(),
            node,
            term: self.term,
            connected: self.connected,
            writer: self.writer,
            mirrored_index: self.mirrored_index,
            applied_index: applied,
            lag_entries: applied.saturating_sub(self.mirrored_index),
            lag_seconds: self
                .behind_since
                .map(|t| now.duration_since(t).as_secs_f64())
                .unwrap_or(0.0),
            last_error: self
                .last_error
                .as_ref()
                .map(|e| e.0.clone())
                .unwrap_or_default(),
            last_error_age_seconds: self
                .last_error
                .as_ref()
                .map(|e| now.duration_since(e.1).as_secs_f64())
                .unwrap_or(0.0),
            resyncs: self.resyncs,
            keys: self.keys,
            rules_in: self.rules_in.clone(),
            rules_revision: self.rules_revision,
        }
    }
}
