//! The replicated cluster state and the commands that change it. `apply` (apply.rs) is
//! pure and deterministic: no clock, no I/O, no randomness; replaying the log rebuilds
//! the state. Every decision that depends on time (a node down, a placement) is made by
//! the leader and arrives here as a command. What changed is told as typed events
//! (event.rs), the same kinds the rules and the API see.

mod apply;
mod event;

pub use event::{Event, EventKind};

use crate::spec::ContainerSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Specs travel as JSON text inside the binary (bincode) encoding: the spec model uses
/// internally tagged enums, which only self-describing formats can decode.
mod spec_json {
    use crate::spec::ContainerSpec;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(spec: &ContainerSpec, s: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(spec).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ContainerSpec, D::Error> {
        let text = String::deserialize(d)?;
        serde_json::from_str(&text).map_err(serde::de::Error::custom)
    }
}

/// A supervisor's id: allocated by the cluster, never reused.
pub type NodeId = u64;

/// Health of a member as the leader last committed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Heartbeating.
    Up,
    /// Silent past its TTL; its containers are lost.
    Down,
    /// Up, but receives no new containers.
    Draining,
    /// Left the cluster for good.
    Left,
}

impl NodeStatus {
    /// The name used in the API.
    pub fn name(self) -> &'static str {
        match self {
            NodeStatus::Up => "up",
            NodeStatus::Down => "down",
            NodeStatus::Draining => "draining",
            NodeStatus::Left => "left",
        }
    }
}

/// A member host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Its id.
    pub id: NodeId,
    /// gRPC address other members reach it at.
    pub addr: String,
    /// Labels for placement.
    pub labels: BTreeMap<String, String>,
    /// Health.
    pub status: NodeStatus,
}

/// A definition as registered: the `.haco` text travels in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    /// Definition name: the file's stem (`sleeper` for `sleeper.haco`).
    pub name: String,
    /// SHA-256 of the text.
    pub digest: String,
    /// The `.haco` text.
    pub text: String,
    /// Directory its relative host paths resolve against.
    pub base_dir: String,
}

/// What should happen to a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Desired {
    /// Keep it running on its node.
    Running,
    /// Kill it.
    Stopped,
}

/// What the node last reported (or the leader concluded) about a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Observed {
    /// Assigned, not yet picked up by its node.
    Pending,
    /// Its node is bootstrapping or launching it.
    Starting,
    /// Running with this host pid.
    Running {
        /// Host pid of its first process.
        pid: i32,
    },
    /// Ended.
    Exited {
        /// Exit code (128+n for signal n); None when it never started.
        code: Option<i32>,
        /// Killed by the OOM killer.
        oom_killed: bool,
        /// Why it failed to start, when it did.
        error: Option<String>,
    },
    /// Its node went down with it.
    Lost,
}

impl Observed {
    /// The name used in the API.
    pub fn name(&self) -> &'static str {
        match self {
            Observed::Pending => "pending",
            Observed::Starting => "starting",
            Observed::Running { .. } => "running",
            Observed::Exited { .. } => "exited",
            Observed::Lost => "lost",
        }
    }

    /// Exited or lost: nothing will change any more.
    pub fn is_final(&self) -> bool {
        matches!(self, Observed::Exited { .. } | Observed::Lost)
    }
}

/// A container of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// Cluster-unique id; also its name on its host.
    pub id: String,
    /// Definition name.
    pub definition: String,
    /// Definition digest.
    pub digest: String,
    /// The resolved spec (name = id), evaluated once by the leader.
    #[serde(with = "spec_json")]
    pub spec: ContainerSpec,
    /// The node it is assigned to.
    pub node: NodeId,
    /// What should happen.
    pub desired: Desired,
    /// What happened.
    pub observed: Observed,
    /// The rule that spawned it, if any.
    pub rule: Option<String>,
    /// Log index of its creation (orders containers).
    pub created_index: u64,
}

impl ContainerRecord {
    /// Counted as "there" by rules and placement: wanted running and not finished.
    pub fn is_active(&self) -> bool {
        self.desired == Desired::Running && !self.observed.is_final()
    }
}

/// A registered watcher rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRecord {
    /// Rule name.
    pub name: String,
    /// SHA-256 of the text.
    pub digest: String,
    /// The `.watch` text.
    pub text: String,
    /// File name for messages.
    pub file: String,
    /// The `.haco` files it names: as written in the rule → definition digest.
    pub definitions: BTreeMap<String, String>,
    /// Log index of the last evaluation the leader committed a result for.
    pub last_evaluation_index: u64,
    /// The last error, if the last evaluation failed.
    pub last_error: Option<String>,
    /// Evaluations committed.
    pub evaluations: u64,
}

/// The whole replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Members.
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    /// Definitions by digest.
    pub definitions: BTreeMap<String, Definition>,
    /// Containers by id.
    pub containers: BTreeMap<String, ContainerRecord>,
    /// Rules by name.
    pub rules: BTreeMap<String, RuleRecord>,
    /// Highest node id ever allocated.
    pub max_node_id: NodeId,
    /// Sequence for container ids.
    pub next_seq: u64,
}

/// A change to the state: the payload of a Raft log entry.
// Entries are built once and encoded; boxing the spec would only add an indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Register a node; `id: None` allocates a fresh id.
    AddNode {
        /// Requested id.
        id: Option<NodeId>,
        /// Its address.
        addr: String,
        /// Its labels.
        labels: BTreeMap<String, String>,
    },
    /// Change a node's health; Down loses its containers.
    SetNodeStatus {
        /// Node.
        id: NodeId,
        /// New status.
        status: NodeStatus,
    },
    /// Start a container on a node (placement already decided).
    Spawn {
        /// The definition (registered if new).
        definition: Definition,
        /// The resolved spec; its name is the preferred id.
        #[serde(with = "spec_json")]
        spec: ContainerSpec,
        /// Target node.
        node: NodeId,
        /// Spawning rule.
        rule: Option<String>,
    },
    /// Stop a container.
    Stop {
        /// Container id.
        id: String,
    },
    /// A node reports on one of its containers.
    Observe {
        /// Container id.
        id: String,
        /// Reporting node (a report from another node is stale and ignored).
        node: NodeId,
        /// What it saw.
        observed: Observed,
    },
    /// Drop finished containers from the state.
    Forget {
        /// Container ids.
        ids: Vec<String>,
    },
    /// Register or replace a rule.
    PutRule {
        /// The rule.
        rule: RuleRecord,
        /// Definitions it names.
        definitions: Vec<Definition>,
    },
    /// Remove a rule.
    RemoveRule {
        /// Rule name.
        name: String,
    },
    /// The result of one rule evaluation (recorded by the leader).
    RuleEvaluated {
        /// Rule name.
        name: String,
        /// Error message when it failed.
        error: Option<String>,
    },
}

/// What applying a command returns to the proposer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Nothing to say.
    #[default]
    Ok,
    /// A node id (AddNode).
    Node(NodeId),
    /// A container id (Spawn, Stop).
    Container(String),
    /// The command was refused; the state did not change.
    Refused(String),
}

impl ClusterState {
    /// SHA-256 over the whole state in a canonical encoding: equal on every member that
    /// applied the same log. An encoding failure is an error, never a constant digest.
    pub fn digest(&self) -> Result<String, serde_json::Error> {
        Ok(crate::spec::digest(&serde_json::to_string(self)?))
    }

    /// Active containers (wanted running, not finished) on a node.
    pub fn active_on(&self, node: NodeId) -> usize {
        self.containers
            .values()
            .filter(|c| c.node == node && c.is_active())
            .count()
    }
}
