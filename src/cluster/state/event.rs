//! What a committed command changed, as typed events: the API streams them, the rule
//! loop turns them into triggers. One enum for both, so a renamed kind is a compile
//! error everywhere it is used, never a rule that silently stops firing.

use super::{ContainerRecord, Health, NodeRecord, NodeStatus, Observed};
use serde::{Deserialize, Serialize};

/// Every kind of change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A node joined.
    NodeAdded,
    /// A node is up (again).
    NodeUp,
    /// A node went silent past its TTL.
    NodeDown,
    /// A node takes no new containers.
    NodeDraining,
    /// A node left for good.
    NodeLeft,
    /// A container was placed.
    ContainerSpawned,
    /// A container is wanted stopped.
    ContainerStopping,
    /// A container is pending again (never reported so).
    ContainerPending,
    /// Its node is preparing it.
    ContainerStarting,
    /// It runs.
    ContainerRunning,
    /// It ended.
    ContainerExited,
    /// Its node was lost with it.
    ContainerLost,
    /// Its node is fetching its image (with progress).
    ContainerPulling,
    /// Its node could not get its image.
    ContainerPullFailed,
    /// A finished container was dropped from the state.
    ContainerForgotten,
    /// A rule was registered or replaced.
    RuleApplied,
    /// A rule was removed.
    RuleRemoved,
    /// A rule evaluation succeeded.
    RuleEvaluated,
    /// A rule evaluation failed.
    RuleFailed,
    /// This member replaced its state with a snapshot from the leader.
    SnapshotInstalled,
    /// A running container passed its health check (after starting or failing).
    ContainerHealthy,
    /// A running container failed its health check `retries` times in a row.
    ContainerUnhealthy,
    /// A container that ended is started again on its node after a back-off.
    ContainerRestarting,
    /// A rule's version finished its rollout: every copy healthy for a while.
    RolloutStable,
    /// A rule's version failed its rollout (the message says why).
    RolloutFailed,
    /// A rule went back to an earlier version (`watch rollback`, `auto_revert`).
    RuleRolledBack,
    /// A rule's version had its canaries promoted (`watch promote`, `auto_promote`).
    RulePromoted,
    /// A named volume was recorded on its node.
    VolumeCreated,
    /// A named volume was forgotten (its node removes its data).
    VolumeRemoved,
    /// A secret got a value (a new version; the message never holds the value).
    SecretStored,
    /// A secret was forgotten.
    SecretRemoved,
}

impl EventKind {
    /// The kind a node gets when its status becomes `s`.
    pub fn of_node_status(s: NodeStatus) -> EventKind {
        match s {
            NodeStatus::Up => EventKind::NodeUp,
            NodeStatus::Down => EventKind::NodeDown,
            NodeStatus::Draining => EventKind::NodeDraining,
            NodeStatus::Left => EventKind::NodeLeft,
        }
    }

    /// The kind a container's report gives.
    pub fn of_observed(o: &Observed) -> EventKind {
        match o {
            Observed::Pending => EventKind::ContainerPending,
            Observed::Starting => EventKind::ContainerStarting,
            Observed::Running { .. } => EventKind::ContainerRunning,
            Observed::Exited { .. } => EventKind::ContainerExited,
            Observed::Lost => EventKind::ContainerLost,
            Observed::Pulling { .. } => EventKind::ContainerPulling,
            Observed::PullFailed { .. } => EventKind::ContainerPullFailed,
            Observed::Checked { health, .. } => match health {
                Health::Starting => EventKind::ContainerRunning,
                Health::Healthy => EventKind::ContainerHealthy,
                Health::Unhealthy => EventKind::ContainerUnhealthy,
            },
            Observed::Restarting { .. } => EventKind::ContainerRestarting,
            Observed::Queued { .. } => EventKind::ContainerSpawned,
        }
    }

    /// The name in the API (`proto/haconiwa.proto`, `haconiwa events`).
    pub fn name(self) -> &'static str {
        match self {
            EventKind::NodeAdded => "node_added",
            EventKind::NodeUp => "node_up",
            EventKind::NodeDown => "node_down",
            EventKind::NodeDraining => "node_draining",
            EventKind::NodeLeft => "node_left",
            EventKind::ContainerSpawned => "container_spawned",
            EventKind::ContainerStopping => "container_stopping",
            EventKind::ContainerPending => "container_pending",
            EventKind::ContainerStarting => "container_starting",
            EventKind::ContainerRunning => "container_running",
            EventKind::ContainerExited => "container_exited",
            EventKind::ContainerLost => "container_lost",
            EventKind::ContainerPulling => "container_pulling",
            EventKind::ContainerPullFailed => "container_pull_failed",
            EventKind::ContainerForgotten => "container_forgotten",
            EventKind::RuleApplied => "rule_applied",
            EventKind::RuleRemoved => "rule_removed",
            EventKind::RuleEvaluated => "rule_evaluated",
            EventKind::RuleFailed => "rule_failed",
            EventKind::SnapshotInstalled => "snapshot_installed",
            EventKind::ContainerHealthy => "container_healthy",
            EventKind::ContainerUnhealthy => "container_unhealthy",
            EventKind::ContainerRestarting => "container_restarting",
            EventKind::RolloutStable => "rollout_stable",
            EventKind::RolloutFailed => "rollout_failed",
            EventKind::RuleRolledBack => "rule_rolled_back",
            EventKind::RulePromoted => "rule_promoted",
            EventKind::VolumeCreated => "volume_created",
            EventKind::VolumeRemoved => "volume_removed",
            EventKind::SecretStored => "secret_stored",
            EventKind::SecretRemoved => "secret_removed",
        }
    }
}

/// A state change as streamed to watchers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Log index of the entry.
    pub index: u64,
    /// What kind of change.
    pub kind: EventKind,
    /// The container concerned.
    pub container: Option<ContainerRecord>,
    /// The node concerned.
    pub node: Option<NodeRecord>,
    /// Extra text.
    pub message: String,
}
