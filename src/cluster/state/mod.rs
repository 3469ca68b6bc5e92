//! The replicated cluster state and the commands that change it. `apply` (apply.rs) is
//! pure and deterministic: no clock, no I/O, no randomness; replaying the log rebuilds
//! the state. Every decision that depends on time (a node down, a placement) is made by
//! the leader and arrives here as a command. What changed is told as typed events
//! (event.rs), the same kinds the rules and the API see.
//!
//! The cost of an entry follows what it changes, not the size of the state: records live
//! in persistent maps (table.rs) whose copies share everything unchanged, the counts
//! rules and placement ask for are kept as the records change (index.rs), and the keys an
//! entry touched are handed to the store, which writes just those records.

mod apply;
mod apply_rules;
mod command;
mod event;
mod history;
mod index;
mod network;
mod secrets;
mod table;
mod volumes;

pub use command::{Command, Response};
pub use event::{Event, EventKind};
pub use history::{RuleHistory, RuleVersion, VersionStatus, MAX_VERSIONS};
pub use index::Touched;
pub use network::{Allocation, Ipv4Net, Lease, NetRange, NetRecord, CLUSTER_BRIDGE};
pub use secrets::SecretRecord;
pub use table::Table;
pub use volumes::{StorageUsers, VolumeKind, VolumeRecord};

use crate::spec::{ContainerSpec, NodePolicy};
use index::Index;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;

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

/// A definition as registered: the `.haco` text and the spec the leader resolved from
/// it, stored once however many containers it has (theirs differ only by name).
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
    /// The resolved spec; its name is the preferred id of the first container. Kept as
    /// its JSON in binary encodings (`spec::stored`: later fields do not change how
    /// older entries read).
    #[serde(with = "crate::spec::stored")]
    pub spec: ContainerSpec,
    /// Log index it was registered at (set by `apply`; what a command carries is
    /// ignored): the newest of a name is the one `spawn --definition NAME` runs.
    pub registered_index: u64,
}

/// What should happen to a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Desired {
    /// Keep it running on its node.
    Running,
    /// Kill it.
    Stopped,
    /// Keep it running on its node until `by`, its start-first replacement (a rollout
    /// with `max_surge`), is healthy; it no longer counts for its rule (`by` does).
    /// Added last: older entries read as before.
    Retiring {
        /// The container that replaces it.
        by: String,
    },
}

impl Desired {
    /// Its node keeps it running (wanted, or retiring).
    pub fn keeps_running(&self) -> bool {
        matches!(self, Desired::Running | Desired::Retiring { .. })
    }

    /// The name used in the API.
    pub fn name(&self) -> &'static str {
        match self {
            Desired::Running => "running",
            Desired::Stopped => "stopped",
            Desired::Retiring { .. } => "retiring",
        }
    }
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
    /// Its node is fetching its image: bytes so far of the total known so far.
    Pulling {
        /// Bytes fetched.
        done: u64,
        /// Bytes to fetch (0 until the manifest is read).
        total: u64,
    },
    /// Its node could not get its image (the registry's or the image's reason): it
    /// never ran.
    PullFailed {
        /// Why.
        reason: String,
    },
    /// Running with a health check, in this health state (added last: older entries
    /// read as before).
    Checked {
        /// Host pid of its first process.
        pid: i32,
        /// What its checks say.
        health: Health,
    },
    /// It ended (or turned unhealthy) and its node starts it again after a back-off
    /// (its restart policy); it still counts as there.
    Restarting {
        /// Which restart of the policy's interval this is (from 1).
        attempt: u32,
        /// How the run before ended (128+n for signal n).
        code: Option<i32>,
        /// Why its node stopped it, when it did (it turned unhealthy).
        reason: Option<String>,
    },
    /// Placed to replace another container (a rollout): its node starts it only once
    /// that one has ended, so the two never run at once.
    Queued {
        /// The container it replaces.
        after: String,
    },
}

/// What a container's health checks say (`spec::health`, `decide::checks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Not yet passed a check (failures within the start period do not count).
    Starting,
    /// Its last check passed.
    Healthy,
    /// `retries` checks in a row failed: its node stops it and the rule replaces it.
    Unhealthy,
}

impl Health {
    /// The name used in the API.
    pub fn name(self) -> &'static str {
        match self {
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
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
            Observed::Pulling { .. } => "pulling",
            Observed::PullFailed { .. } => "pull_failed",
            Observed::Checked { .. } => "running",
            Observed::Restarting { .. } => "restarting",
            Observed::Queued { .. } => "queued",
        }
    }

    /// The host pid of a running container.
    pub fn running_pid(&self) -> Option<i32> {
        match self {
            Observed::Running { pid } | Observed::Checked { pid, .. } => Some(*pid),
            _ => None,
        }
    }

    /// What its health checks say (running containers with a check).
    pub fn health(&self) -> Option<Health> {
        match self {
            Observed::Checked { health, .. } => Some(*health),
            _ => None,
        }
    }

    /// Exited, lost or never started: nothing will change any more.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Observed::Exited { .. } | Observed::Lost | Observed::PullFailed { .. }
        )
    }
}

/// A container of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// Cluster-unique id; also its name on its host.
    pub id: String,
    /// Definition name.
    pub definition: String,
    /// Definition digest: its spec is the definition's (`ClusterState::spec_of`).
    pub digest: String,
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

/// The whole replicated state. Its records change only through `apply`, which keeps
/// the index and the touched keys in step with them.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    nodes: Table<NodeId, NodeRecord>,
    definitions: Table<String, Definition>,
    containers: Table<String, ContainerRecord>,
    rules: Table<String, RuleRecord>,
    max_node_id: NodeId,
    next_seq: u64,
    /// Every rule's versions, by rule name.
    history: Table<String, RuleHistory>,
    /// The cluster network's range, leases and addresses (network.rs).
    network: Table<String, NetRecord>,
    /// What each node lets a definition ask of it (none recorded: everything).
    policies: Table<NodeId, NodePolicy>,
    /// Named volumes, by name (volumes.rs).
    volumes: Table<String, VolumeRecord>,
    /// Secrets, sealed, by name (secrets.rs).
    secrets: Table<String, SecretRecord>,
    /// Counts kept as records change (derived: rebuilt when a state is decoded).
    index: Index,
    /// Keys changed since the store last took them (not part of the state).
    touched: Touched,
    /// How many record changes this copy has seen (not part of the state): an entry
    /// that changes nothing (a report repeating what is known) leaves it as it was, so
    /// the rule loop and the agents skip it.
    revision: u64,
    /// The part of `revision` that changed only rules and their history (not part of
    /// the state): the agents skip those.
    rule_changes: u64,
}

/// The state as encoded (digest, snapshots): the records, not what is derived.
#[derive(Serialize, Deserialize)]
struct StateData {
    nodes: Table<NodeId, NodeRecord>,
    definitions: Table<String, Definition>,
    containers: Table<String, ContainerRecord>,
    rules: Table<String, RuleRecord>,
    max_node_id: NodeId,
    next_seq: u64,
    history: Table<String, RuleHistory>,
    network: Table<String, NetRecord>,
    policies: Table<NodeId, NodePolicy>,
    volumes: Table<String, VolumeRecord>,
    secrets: Table<String, SecretRecord>,
}

impl Serialize for ClusterState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Copies of tables are O(1): this costs what encoding the records costs.
        StateData {
            nodes: self.nodes.clone(),
            definitions: self.definitions.clone(),
            containers: self.containers.clone(),
            rules: self.rules.clone(),
            max_node_id: self.max_node_id,
            next_seq: self.next_seq,
            history: self.history.clone(),
            network: self.network.clone(),
            policies: self.policies.clone(),
            volumes: self.volumes.clone(),
            secrets: self.secrets.clone(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for ClusterState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let data = StateData::deserialize(d)?;
        Ok(ClusterState::from_records(
            data.nodes,
            data.definitions,
            data.containers,
            data.rules,
            data.max_node_id,
            data.next_seq,
            data.history,
        )
        .with_network(data.network)
        .with_policies(data.policies)
        .with_storage(data.volumes, data.secrets))
    }
}

impl PartialEq for ClusterState {
    fn eq(&self, o: &Self) -> bool {
        self.nodes == o.nodes
            && self.definitions == o.definitions
            && self.containers == o.containers
            && self.rules == o.rules
            && self.max_node_id == o.max_node_id
            && self.next_seq == o.next_seq
            && self.history == o.history
            && self.network == o.network
            && self.policies == o.policies
            && self.volumes == o.volumes
            && self.secrets == o.secrets
    }
}

impl Eq for ClusterState {}

impl ClusterState {
    /// A state of these records, its index built from them.
    pub fn from_records(
        nodes: Table<NodeId, NodeRecord>,
        definitions: Table<String, Definition>,
        containers: Table<String, ContainerRecord>,
        rules: Table<String, RuleRecord>,
        max_node_id: NodeId,
        next_seq: u64,
        history: Table<String, RuleHistory>,
    ) -> ClusterState {
        let index = Index::of(containers.values());
        ClusterState {
            nodes,
            definitions,
            containers,
            rules,
            max_node_id,
            next_seq,
            history,
            network: Table::new(),
            policies: Table::new(),
            volumes: Table::new(),
            secrets: Table::new(),
            index,
            touched: Touched::default(),
            revision: 0,
            rule_changes: 0,
        }
    }

    /// The same state with these network records (network.rs).
    pub fn with_network(mut self, network: Table<String, NetRecord>) -> ClusterState {
        self.network = network;
        self
    }

    /// The same state with these node policies.
    pub fn with_policies(mut self, policies: Table<NodeId, NodePolicy>) -> ClusterState {
        self.policies = policies;
        self
    }

    /// The same state with these volumes and secrets.
    pub fn with_storage(
        mut self,
        volumes: Table<String, VolumeRecord>,
        secrets: Table<String, SecretRecord>,
    ) -> ClusterState {
        self.volumes = volumes;
        self.secrets = secrets;
        self
    }

    /// Node policies, by node id (a node without one allows everything).
    pub fn policies(&self) -> &Table<NodeId, NodePolicy> {
        &self.policies
    }

    /// SHA-256 over the whole state in a canonical encoding: equal on every member that
    /// applied the same log. An encoding failure is an error, never a constant digest.
    pub fn digest(&self) -> Result<String, serde_json::Error> {
        Ok(crate::spec::digest(&serde_json::to_string(self)?))
    }

    /// Members, by id.
    pub fn nodes(&self) -> &Table<NodeId, NodeRecord> {
        &self.nodes
    }

    /// Registered definitions, by digest.
    pub fn definitions(&self) -> &Table<String, Definition> {
        &self.definitions
    }

    /// Containers, by id.
    pub fn containers(&self) -> &Table<String, ContainerRecord> {
        &self.containers
    }

    /// Rules, by name.
    pub fn rules(&self) -> &Table<String, RuleRecord> {
        &self.rules
    }

    /// A rule's versions, by rule name (`rule_history` also answers for a rule
    /// registered before versions were kept).
    pub fn history(&self) -> &Table<String, RuleHistory> {
        &self.history
    }

    /// A rule's versions (borrowed: the rule loop, `watch ls` and `/metrics` ask at
    /// every turn); a rule registered before versions were kept has one, made of its
    /// record (numbered 1, deploying).
    pub fn rule_history(&self, rule: &str) -> Option<Cow<'_, RuleHistory>> {
        if let Some(h) = self.history.get(rule) {
            return Some(Cow::Borrowed(h));
        }
        let r = self.rules.get(rule)?;
        let mut h = RuleHistory::default();
        h.push(RuleVersion {
            version: 0,
            digest: r.digest.clone(),
            text: r.text.clone(),
            file: r.file.clone(),
            definitions: r.definitions.clone(),
            applied_index: 0,
            applied_at_ms: 0,
            status: VersionStatus::Deploying,
            rollback_of: None,
            promoted: false,
        });
        Some(Cow::Owned(h))
    }

    /// Highest node id ever allocated.
    pub fn max_node_id(&self) -> NodeId {
        self.max_node_id
    }

    /// The sequence container ids are made unique with.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Active containers in the whole cluster.
    pub fn active(&self) -> usize {
        self.index.active()
    }

    /// Changes to records this copy has seen: equal between two looks means nothing
    /// changed (compare with `!=`: a restored state starts again from 0).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Changes to what the hosts run (everything but rules and their history): what a
    /// node agent follows. The leader records each rule's evaluation every few seconds;
    /// at thousands of containers an agent pass for each of those is the idle cost.
    pub fn hosts_revision(&self) -> u64 {
        self.revision - self.rule_changes
    }

    /// Finished containers (exited or lost) in the whole cluster.
    pub fn finished(&self) -> usize {
        self.index.finished()
    }

    /// Active containers of the definition with this digest.
    pub fn active_with(&self, digest: &str) -> usize {
        self.index.active_with(digest)
    }

    /// Active containers (wanted running, not finished) on a node.
    pub fn active_on(&self, node: NodeId) -> usize {
        self.index.active_on(node)
    }

    /// Active containers of a definition (by name), on all nodes.
    pub fn active_of(&self, definition: &str) -> usize {
        self.index.active_of(definition)
    }

    /// Active containers of a definition (by name) on a node.
    pub fn active_of_on(&self, definition: &str, node: NodeId) -> usize {
        self.index.active_of_on(definition, node)
    }

    /// Every container assigned to a node (finished ones until they are forgotten), in
    /// the order of their ids.
    pub fn containers_on(&self, node: NodeId) -> impl Iterator<Item = &ContainerRecord> + '_ {
        // A lookup by id descends the table (a string compare a level): when the node
        // holds a large share of all containers, one walk of the table costs less (a
        // node agent looks at its containers at every change).
        let all = self.containers.len();
        let levels = all.max(2).ilog2() as usize;
        self.containers_on_by(
            node,
            self.index.count_on(node).saturating_mul(levels) >= all,
        )
    }

    /// [`Self::containers_on`], by a walk of the whole table or by lookups.
    fn containers_on_by(
        &self,
        node: NodeId,
        walk: bool,
    ) -> impl Iterator<Item = &ContainerRecord> + '_ {
        let walked = walk.then(|| self.containers.values().filter(move |c| c.node == node));
        let looked_up = (!walk).then(|| {
            self.index
                .ids_on(node)
                .filter_map(move |id| self.containers.get(id))
        });
        walked
            .into_iter()
            .flatten()
            .chain(looked_up.into_iter().flatten())
    }

    /// The spec a container runs: its definition's, named after it, daemonized, on its
    /// node's bridge with its address when it has one on the cluster network.
    pub fn spec_of(&self, c: &ContainerRecord) -> Option<ContainerSpec> {
        let mut spec = self.definitions.get(&c.digest)?.spec.clone();
        spec.name = c.id.clone();
        spec.daemonize = true;
        if let (Some(ip), Some(lease)) = (self.address_of(&c.id), self.lease_of(c.node)) {
            spec.network.bridge = Some(crate::spec::BridgeNetwork {
                bridge: CLUSTER_BRIDGE.to_string(),
                address: format!("{ip}/{}", lease.subnet.prefix),
                gateway: Some(lease.subnet.gateway().to_string()),
                routed: true,
            });
        }
        Some(spec)
    }

    /// The spec of a container's definition as stored (its health check, its restart
    /// policy; `spec_of` gives the one it runs).
    pub fn definition_spec(&self, c: &ContainerRecord) -> Option<&ContainerSpec> {
        self.definitions.get(&c.digest).map(|d| &d.spec)
    }

    /// A container's labels (its definition's).
    pub fn labels_of(&self, c: &ContainerRecord) -> Option<&BTreeMap<String, String>> {
        self.definitions.get(&c.digest).map(|d| &d.spec.labels)
    }

    /// The keys changed since the last call (the store writes those records).
    pub fn take_touched(&mut self) -> Touched {
        std::mem::take(&mut self.touched)
    }
}
