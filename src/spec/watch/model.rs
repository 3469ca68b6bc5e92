//! What a rule sees and what it asks for, as plain data: the view of the cluster
//! (containers, nodes, counts asked lazily), the triggers of an evaluation, the intents
//! it returns, and what registration tells of a rule.

use std::collections::BTreeMap;

/// Event kinds a rule can watch.
pub const EVENT_KINDS: [&str; 5] = ["cluster", "container_exit", "node_down", "node_up", "timer"];

/// A container as rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewContainer {
    /// Cluster id.
    pub id: String,
    /// Definition name.
    pub definition: String,
    /// Node.
    pub node: u64,
    /// `pending | starting | running | exited | lost`.
    pub state: String,
    /// `running | stopped`.
    pub desired: String,
    /// Counted as there (wanted running, not finished).
    pub active: bool,
    /// Exit code, when exited.
    pub exit_code: Option<i32>,
    /// Labels of its definition.
    pub labels: BTreeMap<String, String>,
    /// The rule that spawned it.
    pub rule: Option<String>,
}

/// A node as rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewNode {
    /// Id.
    pub id: u64,
    /// Address.
    pub addr: String,
    /// `up | down | draining | left`.
    pub state: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Active containers on it.
    pub containers: i64,
}

/// The cluster as rules see it (the desired state: pending and running count).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchView {
    /// Every container the state holds.
    pub containers: Vec<ViewContainer>,
    /// Every node.
    pub nodes: Vec<ViewNode>,
}

/// Which active containers a rule counts.
#[derive(Debug, Clone, Copy)]
pub enum CountFilter<'a> {
    /// All of them.
    All,
    /// Those of a definition (by name).
    Definition(&'a str),
    /// Those whose definition carries all these labels.
    Labels(&'a BTreeMap<String, String>),
}

/// The cluster as rules see it, asked lazily: the leader answers counts from the state's
/// index and builds the lists only when a rule reads them, so an evaluation costs what
/// the rule asks, not the size of the cluster.
pub trait ClusterView {
    /// Active containers (wanted running, not finished) that match.
    fn count(&self, filter: CountFilter) -> i64;
    /// Every container the state holds.
    fn containers(&self) -> Vec<ViewContainer>;
    /// Every node.
    fn nodes(&self) -> Vec<ViewNode>;
}

impl ClusterView for WatchView {
    fn count(&self, filter: CountFilter) -> i64 {
        self.containers
            .iter()
            .filter(|c| {
                c.active
                    && match filter {
                        CountFilter::All => true,
                        CountFilter::Definition(d) => c.definition == d,
                        CountFilter::Labels(want) => {
                            want.iter().all(|(k, v)| c.labels.get(k) == Some(v))
                        }
                    }
            })
            .count() as i64
    }

    fn containers(&self) -> Vec<ViewContainer> {
        self.containers.clone()
    }

    fn nodes(&self) -> Vec<ViewNode> {
        self.nodes.clone()
    }
}

/// Why a rule is evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Something was committed.
    Cluster,
    /// A container exited (or was lost).
    ContainerExit(ViewContainer),
    /// A node went down.
    NodeDown(ViewNode),
    /// A node came (back) up.
    NodeUp(ViewNode),
    /// A timer handler's interval elapsed (its `every` in ms).
    Timer(u64),
}

impl Trigger {
    /// The event kind of handlers this trigger runs.
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::Cluster => "cluster",
            Trigger::ContainerExit(_) => "container_exit",
            Trigger::NodeDown(_) => "node_down",
            Trigger::NodeUp(_) => "node_up",
            Trigger::Timer(_) => "timer",
        }
    }
}

/// What a rule wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Start a container of this `.haco` (as written in the rule).
    Spawn {
        /// The file as the rule names it.
        haco: String,
        /// A node asked for.
        node: Option<u64>,
        /// Labels the node must carry.
        node_labels: BTreeMap<String, String>,
        /// How many (placed and committed in batches).
        count: u64,
    },
    /// Stop one container.
    Kill {
        /// Its id.
        id: String,
    },
    /// Stop `count` containers of a definition.
    KillSome {
        /// Definition name.
        definition: String,
        /// How many.
        count: u64,
    },
    /// A message for the supervisor's log.
    Log(String),
}

impl Intent {
    /// Consecutive spawns of the same definition, node and labels as one: a rule that
    /// calls `spawn` in a loop gets its containers placed and committed in batches.
    pub fn coalesce(intents: Vec<Intent>) -> Vec<Intent> {
        let mut out: Vec<Intent> = Vec::with_capacity(intents.len());
        for i in intents {
            if let (
                Some(Intent::Spawn {
                    haco: h0,
                    node: n0,
                    node_labels: l0,
                    count: c0,
                }),
                Intent::Spawn {
                    haco,
                    node,
                    node_labels,
                    count,
                },
            ) = (out.last_mut(), &i)
            {
                if h0 == haco && n0 == node && l0 == node_labels {
                    *c0 = c0.saturating_add(*count);
                    continue;
                }
            }
            out.push(i);
        }
        out
    }
}

/// The most containers one `spawn` may ask for.
pub const MAX_SPAWN_COUNT: i64 = 100_000;

/// A `.haco` file named by a rule, with where it is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HacoRef {
    /// The path as written.
    pub path: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

/// What registration tells about a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleInfo {
    /// (event kind, timer interval in ms) of every handler.
    pub handlers: Vec<(String, Option<u64>)>,
    /// `.haco` files the rule names (string literals ending in `.haco`).
    pub hacos: Vec<HacoRef>,
    /// How it rolls out a changed definition (`w.update(...)`; Nomad's defaults).
    pub update: crate::spec::update::UpdatePolicy,
}
