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
    /// What each node holds (one path to copy per change of a container, where a
    /// table per count copied one each).
    on: Table<NodeId, OnNode>,
    /// Active containers per definition name.
    active_of: Table<String, usize>,
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
            on: Table::default(),
            active_of: Table::default(),
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

/// The counts of one node's containers.
#[derive(Debug, Clone, Default)]
struct OnNode {
    /// Its active containers.
    active: usize,
    /// Its active containers per definition name.
    active_of: Table<String, usize>,
    /// Its containers' ids (any state).
    ids: Table<String, ()>,
}

/// Adds one to (or takes one from) a count; a count of zero is no entry. The key is
/// copied only when it comes in.
fn bump<K, Q>(t: &mut Table<K, usize>, key: &Q, up: bool)
where
    K: Ord + Clone + std::borrow::Borrow<Q>,
    Q: Ord + ToOwned<Owned = K> + ?Sized,
{
    match t.get_mut(key) {
        Some(n) if up => *n += 1,
        Some(n) if *n > 1 => *n -= 1,
        Some(_) => {
            t.remove(key);
        }
        None if up => t.insert(key.to_owned(), 1),
        None => {}
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
            bump(&mut self.active_of, c.definition.as_str(), up);
            bump(&mut self.active_with, c.digest.as_str(), up);
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
        bump(&mut self.uses, c.digest.as_str(), up);
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
        self.count_node(c, up);
    }

    /// Counts a record in (`up`) or out of its node's counts.
    fn count_node(&mut self, c: &ContainerRecord, up: bool) {
        if up && !self.on.contains_key(&c.node) {
            self.on.insert(c.node, OnNode::default());
        }
        let Some(on) = self.on.get_mut(&c.node) else {
            return;
        };
        if c.is_active() {
            on.active = if up {
                on.active + 1
            } else {
                on.active.saturating_sub(1)
            };
            bump(&mut on.active_of, c.definition.as_str(), up);
        }
        if up {
            on.ids.insert(c.id.clone(), ());
        } else {
            on.ids.remove(&c.id);
            if on.ids.is_empty() {
                self.on.remove(&c.node);
            }
        }
    }

    /// The container `id` (the same record as the ordered table's).
    pub(super) fn record(&self, id: &str) -> Option<&ContainerRecord> {
        self.by_id.get(id)
    }

    pub(super) fn active_on(&self, node: NodeId) -> usize {
        self.on.get(&node).map_or(0, |on| on.active)
    }

    pub(super) fn active_of(&self, definition: &str) -> usize {
        self.active_of.get(definition).copied().unwrap_or(0)
    }

    pub(super) fn active_of_on(&self, definition: &str, node: NodeId) -> usize {
        self.on
            .get(&node)
            .and_then(|on| on.active_of.get(definition))
            .copied()
            .unwrap_or(0)
    }

    pub(super) fn ids_on(&self, node: NodeId) -> impl Iterator<Item = &String> + '_ {
        self.on.get(&node).into_iter().flat_map(|on| on.ids.keys())
    }

    /// How many containers are assigned to `node` (finished ones included).
    pub(super) fn count_on(&self, node: NodeId) -> usize {
        self.on.get(&node).map_or(0, |on| on.ids.len())
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
