//! What the state keeps besides its records: counts that rules, placement and the API ask
//! for at every turn (active containers per node and per definition, the containers of
//! a node, the users of a definition), kept in step as records change instead of
//! recounted over every container; and the keys an entry touched, for the store.

use super::{ContainerRecord, NodeId, Table};
use rpds::HashTrieMapSync;
use std::collections::BTreeSet;

/// A fixed hasher (SipHash with zero keys): the same on every member, though only
/// lookups use it and no order is ever taken from it.
type FixedHasher = std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

/// Children per node of the hashed lookup by id. rpds's default (64) copies a 64-wide
/// node at each level an insert passes; at a million records a placement entry of
/// 1,000 copies about one such node per record, and dropping the replaced version frees
/// it again. 16 costs one more level and a quarter of the copying.
const BY_ID_DEGREE: u8 = 16;

/// Counts derived from the container records (never encoded: rebuilt from them).
#[derive(Debug, Clone)]
pub(super) struct Index {
    /// Active containers per node.
    active_on: Table<NodeId, usize>,
    /// Active containers per definition name.
    active_of: Table<String, usize>,
    /// Active containers per definition name and node.
    active_of_on: Table<(String, NodeId), usize>,
    /// Container ids per node.
    ids_on: Table<NodeId, Table<String, ()>>,
    /// Active containers per definition digest (labels belong to a definition).
    active_with: Table<String, usize>,
    /// Active containers in all.
    active: usize,
    /// Finished containers in all (the leader forgets the oldest past a window).
    finished: usize,
    /// Containers (any state) per definition digest.
    uses: Table<String, usize>,
    /// Retiring containers that have not ended, by the container replacing them.
    retiring_for: Table<String, String>,
    /// Every container by id, hashed: a lookup is a hash and a few levels at any size,
    /// where the ordered table walks ~17 levels of string comparisons at 100,000 (a
    /// follower spent 15 % of its time there under no-op writes).
    by_id: HashTrieMapSync<String, ContainerRecord, FixedHasher>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            active_on: Table::default(),
            active_of: Table::default(),
            active_of_on: Table::default(),
            ids_on: Table::default(),
            active_with: Table::default(),
            active: 0,
            finished: 0,
            uses: Table::default(),
            retiring_for: Table::default(),
            by_id: HashTrieMapSync::new_with_hasher_and_degree_and_ptr_kind(
                FixedHasher::default(),
                BY_ID_DEGREE,
            ),
        }
    }
}

/// Adds one to (or takes one from) a count; a count of zero is no entry.
fn bump<K: Ord + Clone>(t: &mut Table<K, usize>, key: K, up: bool) {
    let n = t.get(&key).copied().unwrap_or(0);
    let n = if up { n + 1 } else { n.saturating_sub(1) };
    if n == 0 {
        t.remove(&key);
    } else {
        t.insert(key, n);
    }
}

impl Index {
    /// The index of these records.
    pub(super) fn of<'a>(records: impl Iterator<Item = &'a ContainerRecord>) -> Index {
        let mut index = Index::default();
        for c in records {
            index.count(c, true);
        }
        index
    }

    /// Counts a record in (`up`) or out.
    pub(super) fn count(&mut self, c: &ContainerRecord, up: bool) {
        if c.is_active() {
            bump(&mut self.active_on, c.node, up);
            bump(&mut self.active_of, c.definition.clone(), up);
            bump(&mut self.active_of_on, (c.definition.clone(), c.node), up);
            bump(&mut self.active_with, c.digest.clone(), up);
            self.active = if up {
                self.active + 1
            } else {
                self.active.saturating_sub(1)
            };
        }
        if c.observed.is_final() {
            self.finished = if up {
                self.finished + 1
            } else {
                self.finished.saturating_sub(1)
            };
        }
        bump(&mut self.uses, c.digest.clone(), up);
        if let (super::Desired::Retiring { by }, false) = (&c.desired, c.observed.is_final()) {
            if up {
                self.retiring_for.insert(by.clone(), c.id.clone());
            } else {
                self.retiring_for.remove(by);
            }
        }
        if up {
            self.by_id.insert_mut(c.id.clone(), c.clone());
        } else {
            self.by_id.remove_mut(&c.id);
        }
        match self.ids_on.get_mut(&c.node) {
            Some(ids) if up => ids.insert(c.id.clone(), ()),
            Some(ids) => {
                ids.remove(&c.id);
                if ids.is_empty() {
                    self.ids_on.remove(&c.node);
                }
            }
            None if up => {
                let mut ids = Table::new();
                ids.insert(c.id.clone(), ());
                self.ids_on.insert(c.node, ids);
            }
            None => {}
        }
    }

    /// The container `id` (the same record as the ordered table's).
    pub(super) fn record(&self, id: &str) -> Option<&ContainerRecord> {
        self.by_id.get(id)
    }

    pub(super) fn active_on(&self, node: NodeId) -> usize {
        self.active_on.get(&node).copied().unwrap_or(0)
    }

    pub(super) fn active_of(&self, definition: &str) -> usize {
        self.active_of.get(definition).copied().unwrap_or(0)
    }

    pub(super) fn active_of_on(&self, definition: &str, node: NodeId) -> usize {
        self.active_of_on
            .get(&(definition.to_string(), node))
            .copied()
            .unwrap_or(0)
    }

    pub(super) fn ids_on(&self, node: NodeId) -> impl Iterator<Item = &String> + '_ {
        self.ids_on.get(&node).into_iter().flat_map(|t| t.keys())
    }

    /// How many containers are assigned to `node` (finished ones included).
    pub(super) fn count_on(&self, node: NodeId) -> usize {
        self.ids_on.get(&node).map_or(0, |t| t.len())
    }

    pub(super) fn active_with(&self, digest: &str) -> usize {
        self.active_with.get(digest).copied().unwrap_or(0)
    }

    pub(super) fn active(&self) -> usize {
        self.active
    }

    pub(super) fn finished(&self) -> usize {
        self.finished
    }

    /// The retiring container `by` replaces, while it has not ended.
    pub(super) fn retiring_for(&self, by: &str) -> Option<&String> {
        self.retiring_for.get(by)
    }

    pub(super) fn uses(&self, digest: &str) -> usize {
        self.uses.get(digest).copied().unwrap_or(0)
    }
}

/// The keys whose records an entry (or a run of entries) changed, added or removed: what
/// the store must write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    /// Node ids.
    pub nodes: BTreeSet<NodeId>,
    /// Definition digests.
    pub definitions: BTreeSet<String>,
    /// Container ids.
    pub containers: BTreeSet<String>,
    /// Rule names.
    pub rules: BTreeSet<String>,
    /// Rule names whose versions changed.
    pub history: BTreeSet<String>,
    /// Keys of network records (`state::network`).
    pub network: BTreeSet<String>,
    /// Node ids whose policy changed.
    pub policies: BTreeSet<NodeId>,
    /// Volume names.
    pub volumes: BTreeSet<String>,
    /// Secret names.
    pub secrets: BTreeSet<String>,
}

impl Touched {
    /// Nothing touched.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
            && self.definitions.is_empty()
            && self.containers.is_empty()
            && self.rules.is_empty()
            && self.history.is_empty()
            && self.network.is_empty()
            && self.policies.is_empty()
            && self.volumes.is_empty()
            && self.secrets.is_empty()
    }
}
