//! Where the mirror puts things in etcd, and the puts and deletes that turn one copy of
//! the state into another. Pure: no etcd, no clock.
//!
//! ```text
//! <prefix>/v1/nodes/<id>              NodeRecord as JSON        (written by the leader)
//! <prefix>/v1/definitions/<digest>    Definition as JSON
//! <prefix>/v1/containers/<id>         ContainerRecord as JSON
//! <prefix>/v1/rules/<name>            RuleRecord as JSON
//! <prefix>/v1/history/<name>          the rule's versions (RuleHistory) as JSON
//! <prefix>/v1/network/<key>           the cluster network (NetRecord as JSON): range,
//!                                     lease/<node>, addr/<container>, ip/<address>,
//!                                     port/<node>/<port>
//! <prefix>/v1/volumes/<name>          VolumeRecord as JSON (secrets are never mirrored)
//! <prefix>/v1/meta/applied            {index, term, state_digest}
//! <prefix>/v1/meta/writer             {node, term, since_unix_ms}, under the writer's lease
//! <prefix>/v1/meta/writer-term        the fence: the writer's term, 20 digits
//! <prefix>/v1/rules-in/<name>         a .watch text             (written by operators)
//! <prefix>/v1/definitions-in/<path>   a .haco text a rule names (written by operators)
//! <prefix>/v1/rules-in-status/<name>  {ok, error, revision}     (written by the leader)
//! ```

use crate::cluster::state::{ClusterState, Table};
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// etcd's default limit of operations in one transaction (`--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;
/// Bytes of keys and values per transaction: under etcd's default request limit
/// (`--max-request-bytes`, 1.5 MiB) with room for the framing.
pub const MAX_TXN_BYTES: usize = 1_400_000;

/// The keys under one prefix.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `<prefix>/v1/`.
    base: String,
}

/// The directories of the replicated state (each a key prefix ending in `/`).
pub const STATE_DIRS: [&str; 7] = [
    "nodes/",
    "definitions/",
    "containers/",
    "rules/",
    "history/",
    "network/",
    "volumes/",
];

impl Layout {
    /// The layout under `prefix` (no trailing slash).
    pub fn new(prefix: &str) -> Layout {
        Layout {
            base: format!("{}/v1/", prefix.trim_end_matches('/')),
        }
    }

    /// `<prefix>/v1/<rest>`.
    pub fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.base)
    }

    /// The key of a member.
    pub fn node(&self, id: u64) -> String {
        self.key(&format!("nodes/{id}"))
    }

    /// The key of a definition.
    pub fn definition(&self, digest: &str) -> String {
        self.key(&format!("definitions/{digest}"))
    }

    /// The key of a container.
    pub fn container(&self, id: &str) -> String {
        self.key(&format!("containers/{id}"))
    }

    /// The key of a rule.
    pub fn rule(&self, name: &str) -> String {
        self.key(&format!("rules/{name}"))
    }

    /// The key of a rule's versions.
    pub fn history(&self, name: &str) -> String {
        self.key(&format!("history/{name}"))
    }

    /// The key of a record of the cluster network.
    pub fn network(&self, key: &str) -> String {
        self.key(&format!("network/{key}"))
    }

    /// The key of a named volume.
    pub fn volume(&self, name: &str) -> String {
        self.key(&format!("volumes/{name}"))
    }

    /// `meta/applied`.
    pub fn applied(&self) -> String {
        self.key("meta/applied")
    }

    /// `meta/writer`.
    pub fn writer(&self) -> String {
        self.key("meta/writer")
    }

    /// `meta/writer-term`: every write of the mirror is guarded by its value.
    pub fn fence(&self) -> String {
        self.key("meta/writer-term")
    }

    /// Where operators put rules.
    pub fn rules_in_dir(&self) -> String {
        self.key("rules-in/")
    }

    /// Where operators put the definitions their rules name.
    pub fn definitions_in_dir(&self) -> String {
        self.key("definitions-in/")
    }

    /// The status of an operator's rule.
    pub fn rules_in_status(&self, name: &str) -> String {
        self.key(&format!("rules-in-status/{name}"))
    }

    /// Where the leader writes rule statuses.
    pub fn rules_in_status_dir(&self) -> String {
        self.key("rules-in-status/")
    }

    /// The `file` a rule registered through etcd carries (its error messages name it,
    /// and it tells the mirror the rule is etcd's to remove).
    pub fn rule_source(&self, name: &str) -> String {
        format!("etcd:{}{name}", self.rules_in_dir())
    }

    /// Whether a rule came from this prefix's `rules-in/`.
    pub fn is_etcd_rule(&self, file: &str) -> bool {
        file.strip_prefix("etcd:")
            .is_some_and(|k| k.starts_with(&self.rules_in_dir()))
    }
}

/// One change to etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Put a value.
    Put(String, Vec<u8>),
    /// Delete a key.
    Delete(String),
}

impl Op {
    /// Bytes it adds to a request.
    fn size(&self) -> usize {
        match self {
            Op::Put(k, v) => k.len() + v.len() + 16,
            Op::Delete(k) => k.len() + 16,
        }
    }
}

/// A record as the mirror writes it.
pub fn json<T: Serialize>(v: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(v)
}

/// The fence value of a term: zero-padded so that etcd's byte order is numeric order.
pub fn fence_value(term: u64) -> String {
    format!("{term:020}")
}

/// `meta/applied`.
pub fn applied_value(index: u64, term: u64, state_digest: &str) -> Vec<u8> {
    serde_json::json!({ "index": index, "term": term, "state_digest": state_digest })
        .to_string()
        .into_bytes()
}

/// Every state key and its value.
pub fn full(
    layout: &Layout,
    s: &ClusterState,
) -> Result<BTreeMap<String, Vec<u8>>, serde_json::Error> {
    let mut out = BTreeMap::new();
    for (id, n) in s.nodes().iter() {
        out.insert(layout.node(*id), json(n)?);
    }
    for (d, v) in s.definitions().iter() {
        out.insert(layout.definition(d), json(v)?);
    }
    for (id, c) in s.containers().iter() {
        out.insert(layout.container(id), json(c)?);
    }
    for (name, r) in s.rules().iter() {
        out.insert(layout.rule(name), json(r)?);
    }
    for (name, h) in s.history().iter() {
        out.insert(layout.history(name), json(h)?);
    }
    for (k, r) in s.network().iter() {
        out.insert(layout.network(k), json(r)?);
    }
    for (name, v) in s.volumes().iter() {
        out.insert(layout.volume(name), json(v)?);
    }
    Ok(out)
}

/// The changes that turn etcd's keys `have` into `want` (both of the state dirs only).
pub fn reconcile(have: &BTreeMap<String, Vec<u8>>, want: &BTreeMap<String, Vec<u8>>) -> Vec<Op> {
    let mut ops: Vec<Op> = have
        .keys()
        .filter(|k| !want.contains_key(*k))
        .map(|k| Op::Delete(k.clone()))
        .collect();
    ops.extend(
        want.iter()
            .filter(|(k, v)| have.get(*k) != Some(*v))
            .map(|(k, v)| Op::Put(k.clone(), v.clone())),
    );
    ops
}

/// The changes from the state `old` to `new`. Both are copies of one persistent state:
/// a record no entry touched is the same allocation in both, so the walk compares
/// pointers and serializes only what changed.
pub fn diff(
    layout: &Layout,
    old: &ClusterState,
    new: &ClusterState,
) -> Result<Vec<Op>, serde_json::Error> {
    let mut ops = Vec::new();
    diff_table(old.nodes(), new.nodes(), |id| layout.node(*id), &mut ops)?;
    diff_table(
        old.definitions(),
        new.definitions(),
        |d| layout.definition(d),
        &mut ops,
    )?;
    diff_table(
        old.containers(),
        new.containers(),
        |id| layout.container(id),
        &mut ops,
    )?;
    diff_table(old.rules(), new.rules(), |n| layout.rule(n), &mut ops)?;
    diff_table(
        old.history(),
        new.history(),
        |n| layout.history(n),
        &mut ops,
    )?;
    diff_table(
        old.network(),
        new.network(),
        |k| layout.network(k),
        &mut ops,
    )?;
    diff_table(old.volumes(), new.volumes(), |n| layout.volume(n), &mut ops)?;
    Ok(ops)
}

fn diff_table<K, V>(
    old: &Table<K, V>,
    new: &Table<K, V>,
    key: impl Fn(&K) -> String,
    ops: &mut Vec<Op>,
) -> Result<(), serde_json::Error>
where
    K: Ord + Clone,
    V: Clone + PartialEq + Serialize,
{
    let mut a = old.iter().peekable();
    let mut b = new.iter().peekable();
    loop {
        let order = match (a.peek(), b.peek()) {
            (None, None) => return Ok(()),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((ka, _)), Some((kb, _))) => ka.cmp(kb),
        };
        match order {
            Ordering::Less => {
                if let Some((k, _)) = a.next() {
                    ops.push(Op::Delete(key(k)));
                }
            }
            Ordering::Greater => {
                if let Some((k, v)) = b.next() {
                    ops.push(Op::Put(key(k), json(v)?));
                }
            }
            Ordering::Equal => {
                if let (Some((_, va)), Some((k, vb))) = (a.next(), b.next()) {
                    if !std::ptr::eq(va, vb) && va != vb {
                        ops.push(Op::Put(key(k), json(vb)?));
                    }
                }
            }
        }
    }
}

/// `ops` cut into transactions within etcd's limits, in order.
pub fn batches(ops: Vec<Op>) -> Vec<Vec<Op>> {
    let mut out: Vec<Vec<Op>> = Vec::new();
    let mut bytes = 0;
    for op in ops {
        let size = op.size();
        let full = out.last().is_none_or(|b| {
            b.len() >= MAX_TXN_OPS || (bytes + size > MAX_TXN_BYTES && !b.is_empty())
        });
        if full {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(b) = out.last_mut() {
            b.push(op);
        }
    }
    out
}

/// The end of the key range of a prefix (etcd's `range_end` for "every key starting
/// with it").
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::state::{Command, NodeStatus};

    fn state_with(nodes: &[u64]) -> ClusterState {
        let mut s = ClusterState::default();
        for id in nodes {
            s.apply(
                1,
                &Command::AddNode {
                    id: Some(*id),
                    addr: format!("127.0.0.{id}:7700"),
                    labels: Default::default(),
                },
            );
        }
        s
    }

    #[test]
    fn fence_values_sort_as_numbers() {
        assert!(fence_value(9) < fence_value(10));
        assert!(fence_value(99) < fence_value(100));
        assert_eq!(fence_value(7).len(), 20);
    }

    #[test]
    fn volumes_are_mirrored_and_secrets_never() {
        use crate::cluster::state::{SecretRecord, VolumeKind, VolumeRecord};
        let l = Layout::new("/haconiwa/t");
        let a = state_with(&[1]);
        let mut b = a.clone();
        let volume = VolumeRecord {
            name: "data".into(),
            node: 1,
            kind: VolumeKind::Host,
            size: None,
            created_index: 0,
        };
        b.apply(2, &Command::CreateVolume { volume });
        let secret = SecretRecord {
            name: "pw".into(),
            version: 0,
            key_id: "k".into(),
            sealed: b"sealed-bytes".to_vec(),
            size: 5,
            updated_index: 0,
        };
        b.apply(3, &Command::PutSecret { secret });
        assert_eq!(b.secrets().len(), 1);
        let ops = diff(&l, &a, &b).unwrap();
        assert_eq!(ops.len(), 1, "{ops:?}");
        assert!(matches!(&ops[0], Op::Put(k, _) if k == "/haconiwa/t/v1/volumes/data"));
        let all = full(&l, &b).unwrap();
        assert!(all
            .keys()
            .all(|k| !k.contains("pw") && !k.contains("secret")));
        assert!(all
            .values()
            .all(|v| !v.windows(12).any(|w| w == b"sealed-bytes")));
    }

    #[test]
    fn diff_names_only_what_changed() {
        let l = Layout::new("/haconiwa/t");
        let a = state_with(&[1, 2, 3]);
        let mut b = a.clone();
        b.apply(
            2,
            &Command::SetNodeStatus {
                id: 2,
                status: NodeStatus::Down,
            },
        );
        b.apply(
            3,
            &Command::AddNode {
                id: Some(4),
                addr: "127.0.0.4:7700".into(),
                labels: Default::default(),
            },
        );
        let ops = diff(&l, &a, &b).unwrap();
        let keys: Vec<_> = ops
            .iter()
            .map(|o| match o {
                Op::Put(k, _) => format!("put {k}"),
                Op::Delete(k) => format!("del {k}"),
            })
            .collect();
        assert_eq!(
            keys,
            ["put /haconiwa/t/v1/nodes/2", "put /haconiwa/t/v1/nodes/4"]
        );
        // The diff of a state with itself is empty; reconciling the full maps of two
        // states gives the same changes as the diff.
        assert!(diff(&l, &b, &b).unwrap().is_empty());
        let full_ops = reconcile(&full(&l, &a).unwrap(), &full(&l, &b).unwrap());
        assert_eq!(full_ops, ops);
        let back = diff(&l, &b, &a).unwrap();
        assert!(back.contains(&Op::Delete("/haconiwa/t/v1/nodes/4".into())));
    }

    #[test]
    fn batches_stay_within_etcd_limits() {
        let ops: Vec<Op> = (0..300)
            .map(|i| Op::Put(format!("k{i}"), vec![b'x'; 20_000]))
            .collect();
        let b = batches(ops.clone());
        assert!(b.iter().all(|t| t.len() <= MAX_TXN_OPS));
        assert!(b
            .iter()
            .all(|t| t.iter().map(Op::size).sum::<usize>() <= MAX_TXN_BYTES));
        assert_eq!(b.concat(), ops);
        let small: Vec<Op> = (0..300).map(|i| Op::Delete(format!("k{i}"))).collect();
        assert_eq!(
            batches(small).iter().map(Vec::len).collect::<Vec<_>>(),
            [128, 128, 44]
        );
        assert!(batches(Vec::new()).is_empty());
    }

    #[test]
    fn prefix_ends_and_etcd_rules() {
        assert_eq!(prefix_end("a/b/"), b"a/b0".to_vec());
        let l = Layout::new("/haconiwa/t/");
        assert_eq!(l.rules_in_dir(), "/haconiwa/t/v1/rules-in/");
        assert!(l.is_etcd_rule(&l.rule_source("keep5")));
        assert!(!l.is_etcd_rule("keep5.watch"));
        assert!(!Layout::new("/other").is_etcd_rule(&l.rule_source("keep5")));
    }
}
