//! What the etcd mirror (the `mirror` layer, above this one) tells of itself: it writes
//! a `MirrorReport` into the node, and the API and `cluster status` read it here.

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
    pub rules_in: Vec<RuleSource>,
    /// Last etcd revision of the rule keys seen.
    pub rules_revision: i64,
}

/// A rule registered through etcd and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSource {
    /// The rule's name.
    pub name: String,
    /// The etcd key it came from.
    pub key: String,
    /// Why nothing was committed (None: committed through Raft).
    pub error: Option<String>,
    /// The etcd mod revision of the text last considered.
    pub revision: i64,
}
