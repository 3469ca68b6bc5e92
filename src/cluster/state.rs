//! The replicated cluster state and the commands that change it. `apply` is pure and
//! deterministic: no clock, no I/O, no randomness; replaying the log rebuilds the state.
//! Every decision that depends on time (a node down, a placement) is made by the leader
//! and arrives here as a command.

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

/// A state change as streamed to watchers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Log index of the entry.
    pub index: u64,
    /// What kind of change (see proto/haconiwa.proto).
    pub kind: String,
    /// The container concerned.
    pub container: Option<ContainerRecord>,
    /// The node concerned.
    pub node: Option<NodeRecord>,
    /// Extra text.
    pub message: String,
}

impl ClusterState {
    /// Applies one command at log `index`; returns the response and the events.
    pub fn apply(&mut self, index: u64, cmd: &Command) -> (Response, Vec<Event>) {
        let mut events = Vec::new();
        let mut ev = |kind: &str,
                      container: Option<&ContainerRecord>,
                      node: Option<&NodeRecord>,
                      message: String| {
            events.push(Event {
                index,
                kind: kind.to_string(),
                container: container.cloned(),
                node: node.cloned(),
                message,
            })
        };
        let resp = match cmd {
            Command::AddNode { id, addr, labels } => {
                let same_addr = self
                    .nodes
                    .values()
                    .find(|n| n.addr == *addr && n.status != NodeStatus::Left);
                let id = match (id, same_addr) {
                    // A join retried after its reply was lost: the same node again.
                    (None, Some(n)) => return (Response::Node(n.id), events),
                    (Some(id), _) => *id,
                    (None, None) => self.max_node_id + 1,
                };
                if let Some(n) = self.nodes.get(&id) {
                    if n.status == NodeStatus::Left {
                        return (
                            Response::Refused(format!(
                                "node id {id} left the cluster and is never reused"
                            )),
                            events,
                        );
                    }
                    if n.addr != *addr {
                        return (
                            Response::Refused(format!(
                                "node id {id} is already used by {}",
                                n.addr
                            )),
                            events,
                        );
                    }
                }
                if self
                    .nodes
                    .values()
                    .any(|n| n.addr == *addr && n.id != id && n.status != NodeStatus::Left)
                {
                    return (
                        Response::Refused(format!("address {addr} is already a member")),
                        events,
                    );
                }
                self.max_node_id = self.max_node_id.max(id);
                let rec = NodeRecord {
                    id,
                    addr: addr.clone(),
                    labels: labels.clone(),
                    status: NodeStatus::Up,
                };
                ev("node_added", None, Some(&rec), String::new());
                self.nodes.insert(id, rec);
                Response::Node(id)
            }
            Command::SetNodeStatus { id, status } => {
                let Some(n) = self.nodes.get_mut(id) else {
                    return (Response::Refused(format!("no node {id}")), events);
                };
                if n.status == NodeStatus::Left {
                    return (Response::Refused(format!("node {id} has left")), events);
                }
                if n.status == *status {
                    return (Response::Ok, events);
                }
                n.status = *status;
                let rec = n.clone();
                ev(
                    &format!("node_{}", status.name()),
                    None,
                    Some(&rec),
                    String::new(),
                );
                if matches!(status, NodeStatus::Down | NodeStatus::Left) {
                    for c in self.containers.values_mut() {
                        if c.node == *id && !c.observed.is_final() {
                            c.observed = Observed::Lost;
                            ev(
                                "container_lost",
                                Some(c),
                                None,
                                format!("node {id} is {}", status.name()),
                            );
                        }
                    }
                }
                Response::Ok
            }
            Command::Spawn {
                definition,
                spec,
                node,
                rule,
            } => {
                match self.nodes.get(node) {
                    Some(n) if n.status == NodeStatus::Up => {}
                    Some(n) => {
                        return (
                            Response::Refused(format!("node {node} is {}", n.status.name())),
                            events,
                        )
                    }
                    None => return (Response::Refused(format!("no node {node}")), events),
                }
                self.definitions
                    .entry(definition.digest.clone())
                    .or_insert_with(|| definition.clone());
                self.next_seq += 1;
                let id = if self.containers.contains_key(&spec.name) {
                    format!("{}-{}", spec.name, self.next_seq)
                } else {
                    spec.name.clone()
                };
                let mut spec = spec.clone();
                spec.name = id.clone();
                spec.daemonize = true;
                let rec = ContainerRecord {
                    id: id.clone(),
                    definition: definition.name.clone(),
                    digest: definition.digest.clone(),
                    spec,
                    node: *node,
                    desired: Desired::Running,
                    observed: Observed::Pending,
                    rule: rule.clone(),
                    created_index: index,
                };
                ev("container_spawned", Some(&rec), None, String::new());
                self.containers.insert(id.clone(), rec);
                Response::Container(id)
            }
            Command::Stop { id } => {
                let Some(c) = self.containers.get_mut(id) else {
                    return (Response::Refused(format!("no container {id}")), events);
                };
                if c.desired != Desired::Stopped {
                    c.desired = Desired::Stopped;
                    if c.observed == Observed::Pending {
                        // Never started: nothing to kill.
                        c.observed = Observed::Exited {
                            code: None,
                            oom_killed: false,
                            error: None,
                        };
                    }
                    ev("container_stopping", Some(c), None, String::new());
                }
                Response::Container(id.clone())
            }
            Command::Observe { id, node, observed } => {
                let Some(c) = self.containers.get_mut(id) else {
                    return (Response::Ok, events);
                };
                // Stale: another node, or a container already finished (lost stays lost).
                if c.node != *node || c.observed.is_final() || c.observed == *observed {
                    return (Response::Ok, events);
                }
                c.observed = observed.clone();
                let kind = format!("container_{}", observed.name());
                ev(&kind, Some(c), None, String::new());
                Response::Ok
            }
            Command::Forget { ids } => {
                for id in ids {
                    if self
                        .containers
                        .get(id)
                        .is_some_and(|c| c.observed.is_final())
                    {
                        if let Some(c) = self.containers.remove(id) {
                            ev("container_forgotten", Some(&c), None, String::new());
                        }
                    }
                }
                // Definitions no container or rule uses any more go too.
                let used: std::collections::BTreeSet<&String> = self
                    .containers
                    .values()
                    .map(|c| &c.digest)
                    .chain(self.rules.values().flat_map(|r| r.definitions.values()))
                    .collect();
                let unused: Vec<String> = self
                    .definitions
                    .keys()
                    .filter(|d| !used.contains(d))
                    .cloned()
                    .collect();
                for d in unused {
                    self.definitions.remove(&d);
                }
                Response::Ok
            }
            Command::PutRule { rule, definitions } => {
                for d in definitions {
                    self.definitions
                        .entry(d.digest.clone())
                        .or_insert_with(|| d.clone());
                }
                let mut r = rule.clone();
                r.last_evaluation_index = 0;
                r.last_error = None;
                r.evaluations = 0;
                ev("rule_applied", None, None, r.name.clone());
                self.rules.insert(r.name.clone(), r);
                Response::Ok
            }
            Command::RemoveRule { name } => {
                if self.rules.remove(name).is_none() {
                    return (Response::Refused(format!("no rule {name}")), events);
                }
                ev("rule_removed", None, None, name.clone());
                Response::Ok
            }
            Command::RuleEvaluated { name, error } => {
                let Some(r) = self.rules.get_mut(name) else {
                    return (Response::Ok, events);
                };
                r.last_evaluation_index = index;
                r.evaluations += 1;
                match error {
                    Some(e) => ev("rule_failed", None, None, format!("{name}: {e}")),
                    None => ev("rule_evaluated", None, None, name.clone()),
                }
                r.last_error = error.clone();
                Response::Ok
            }
        };
        (resp, events)
    }

    /// SHA-256 over the whole state in a canonical encoding: equal on every member that
    /// applied the same log.
    pub fn digest(&self) -> String {
        crate::spec::digest(&serde_json::to_string(self).unwrap_or_default())
    }

    /// Active containers (wanted running, not finished) on a node.
    pub fn active_on(&self, node: NodeId) -> usize {
        self.containers
            .values()
            .filter(|c| c.node == node && c.is_active())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn spec(name: &str) -> ContainerSpec {
        ContainerSpec::new(name, vec!["/bin/true".into()], PathBuf::from("/r"))
    }

    fn def(name: &str) -> Definition {
        Definition {
            name: name.into(),
            digest: format!("d-{name}"),
            text: String::new(),
            base_dir: String::new(),
        }
    }

    fn with_nodes(n: u64) -> ClusterState {
        let mut s = ClusterState::default();
        for i in 1..=n {
            s.apply(
                i,
                &Command::AddNode {
                    id: None,
                    addr: format!("127.0.0.{i}:7000"),
                    labels: BTreeMap::new(),
                },
            );
        }
        s
    }

    #[test]
    fn node_ids_are_allocated_and_never_reused() {
        let mut s = with_nodes(3);
        assert_eq!(s.nodes.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
        s.apply(
            4,
            &Command::SetNodeStatus {
                id: 3,
                status: NodeStatus::Left,
            },
        );
        let (r, _) = s.apply(
            5,
            &Command::AddNode {
                id: None,
                addr: "127.0.0.9:7000".into(),
                labels: BTreeMap::new(),
            },
        );
        assert_eq!(r, Response::Node(4));
        let (r, _) = s.apply(
            6,
            &Command::AddNode {
                id: Some(3),
                addr: "127.0.0.3:7000".into(),
                labels: BTreeMap::new(),
            },
        );
        assert!(matches!(r, Response::Refused(_)));
    }

    #[test]
    fn spawn_ids_are_unique_and_node_down_loses_containers() {
        let mut s = with_nodes(2);
        let (a, _) = s.apply(
            10,
            &Command::Spawn {
                definition: def("web"),
                spec: spec("web"),
                node: 1,
                rule: None,
            },
        );
        let (b, _) = s.apply(
            11,
            &Command::Spawn {
                definition: def("web"),
                spec: spec("web"),
                node: 2,
                rule: None,
            },
        );
        assert_eq!(a, Response::Container("web".into()));
        assert_eq!(b, Response::Container("web-2".into()));
        assert_eq!(s.containers["web-2"].spec.name, "web-2");
        let (_, ev) = s.apply(
            12,
            &Command::SetNodeStatus {
                id: 2,
                status: NodeStatus::Down,
            },
        );
        assert_eq!(s.containers["web-2"].observed, Observed::Lost);
        assert!(ev.iter().any(|e| e.kind == "container_lost"));
        // Reports from the lost node no longer change anything.
        s.apply(
            13,
            &Command::Observe {
                id: "web-2".into(),
                node: 2,
                observed: Observed::Running { pid: 5 },
            },
        );
        assert_eq!(s.containers["web-2"].observed, Observed::Lost);
        // Nothing is placed on a down node.
        let (r, _) = s.apply(
            14,
            &Command::Spawn {
                definition: def("web"),
                spec: spec("web"),
                node: 2,
                rule: None,
            },
        );
        assert!(matches!(r, Response::Refused(_)));
    }

    #[test]
    fn replay_gives_the_same_state() {
        let cmds = [
            Command::AddNode {
                id: None,
                addr: "a".into(),
                labels: BTreeMap::new(),
            },
            Command::Spawn {
                definition: def("x"),
                spec: spec("x"),
                node: 1,
                rule: Some("r".into()),
            },
            Command::Observe {
                id: "x".into(),
                node: 1,
                observed: Observed::Running { pid: 9 },
            },
            Command::Stop { id: "x".into() },
        ];
        let run = || {
            let mut s = ClusterState::default();
            for (i, c) in cmds.iter().enumerate() {
                s.apply(i as u64 + 1, c);
            }
            s
        };
        assert_eq!(run(), run());
        assert_eq!(run().digest(), run().digest());
    }
}
