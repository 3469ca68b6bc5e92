//! The commands that change the state (the payload of a Raft log entry) and what
//! applying one answers. New variants go last: older entries read as before.

use super::{Definition, NodeId, NodeStatus, Observed, RuleRecord, SecretRecord, VolumeRecord};
use crate::spec::NodePolicy;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A change to the state: the payload of a Raft log entry.
// Entries are built once and encoded; boxing the definition would only add an indirection.
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
    /// Start containers of one definition, one per listed node (placement already
    /// decided; a node listed twice gets two). All or none: a listed node that is not up
    /// refuses the entry.
    Spawn {
        /// The definition's digest.
        digest: String,
        /// The definition itself when the leader had not registered it yet.
        definition: Option<Definition>,
        /// Target nodes.
        nodes: Vec<NodeId>,
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
    /// Several commands in one entry (group commit, `cluster::proposer`), applied in
    /// order, each on its own: one refused changes nothing of the others. A batch inside
    /// a batch is refused.
    Batch(Vec<Command>),
    /// Replace a container by a new one of a definition (a rollout step): the old one
    /// is wanted stopped, the new one placed on `node` and `queued` behind it (added
    /// last: older entries read as before).
    Replace {
        /// The container replaced; it must be wanted running and not ended.
        old: String,
        /// The definition of the new one (registered).
        digest: String,
        /// Where the new one goes.
        node: NodeId,
    },
    /// Replace a container start-first (a rollout with `max_surge`): a new one of the
    /// definition placed on `node` at once, the old one `Retiring` (kept running, no
    /// longer counted) until the new one is healthy and the leader stops it. If the new
    /// one ends or is lost first, the old one is wanted running again.
    Surge {
        /// The container replaced; it must be wanted running and not ended.
        old: String,
        /// The definition of the new one (registered).
        digest: String,
        /// Where the new one goes.
        node: NodeId,
    },
    /// Register or replace a rule, as a new version of it when its text or definitions
    /// changed (re-applying a failed version unchanged tries it again). `PutRule` of
    /// older entries does the same with no time stamp.
    ApplyRule {
        /// The rule.
        rule: RuleRecord,
        /// Definitions it names.
        definitions: Vec<Definition>,
        /// The proposer's wall time, ms since the epoch (recorded, never read).
        applied_at_ms: u64,
    },
    /// The leader's verdict on a rule's current version: stable, or failed (with
    /// `revert`, the newest stable version before it comes back as a new version). A
    /// verdict on another version than the current deploying one changes nothing.
    RolloutEnded {
        /// Rule name.
        rule: String,
        /// The version judged.
        version: u64,
        /// Why it failed; None: stable.
        failure: Option<String>,
        /// Bring the last stable version back.
        revert: bool,
        /// The proposer's wall time, ms since the epoch.
        at_ms: u64,
    },
    /// Promote the canaries of a rule's current version: the rest of its rollout goes
    /// on. Refused for another version than the current deploying one.
    PromoteRule {
        /// Rule name.
        rule: String,
        /// The version promoted (the current one when None).
        version: Option<u64>,
    },
    /// Bring back a version of a rule (the newest stable one before the current one
    /// when None) as a new version; refused when it is the same as the current one.
    RollbackRule {
        /// Rule name.
        rule: String,
        /// The version to bring back.
        version: Option<u64>,
        /// The proposer's wall time, ms since the epoch.
        applied_at_ms: u64,
    },
    /// Set the cluster network's range (once; the same again is fine, another is
    /// refused) and lease a subnet to every member (`state::network`).
    SetNetwork {
        /// The range, `10.88.0.0/16`.
        cidr: String,
        /// Prefix length of each member's subnet.
        subnet_prefix: u8,
    },
    /// A node's policy (`spec::policy`), as its `node.toml` says it; the default one
    /// is kept as no record
    /// (added last, after `SetNetwork`: older entries read as before).
    SetNodePolicy {
        /// The node.
        node: NodeId,
        /// What it allows.
        policy: NodePolicy,
    },
    /// Record a named volume on its node (refused when the name is taken).
    CreateVolume {
        /// The volume (`created_index` is set by `apply`).
        volume: VolumeRecord,
    },
    /// Forget a named volume (its node removes its data); refused while a container
    /// that has not finished mounts it.
    RemoveVolume {
        /// Its name.
        name: String,
    },
    /// A secret's new value, sealed by the leader with the cluster key (the version is
    /// numbered by `apply`).
    PutSecret {
        /// The sealed secret.
        secret: SecretRecord,
    },
    /// Forget a secret; refused while a container that has not finished reads it.
    RemoveSecret {
        /// Its name.
        name: String,
    },
}

impl Command {
    /// Whether the command may share an entry with others: everything but the ones that
    /// can be large (placements carrying a definition, rules with theirs) and batches.
    pub fn batchable(&self) -> bool {
        !matches!(
            self,
            Command::Spawn { .. }
                | Command::PutRule { .. }
                | Command::ApplyRule { .. }
                | Command::Batch(_)
        )
    }
}

/// What applying a command returns to the proposer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Nothing to say.
    #[default]
    Ok,
    /// A node id (AddNode).
    Node(NodeId),
    /// A container id (Stop).
    Container(String),
    /// The new containers' ids, in the order of the nodes (Spawn).
    Spawned(Vec<String>),
    /// The command was refused; the state did not change.
    Refused(String),
    /// One response per command of a `Batch`, in order.
    Batch(Vec<Response>),
    /// The version a rule runs now (ApplyRule, RollbackRule).
    Version(u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Log entries are encoded by variant index: a variant inserted anywhere but last
    /// would make an older log read as other commands. Pins where each one is.
    #[test]
    fn every_command_keeps_its_place_in_the_encoding() {
        let index =
            |c: &Command| bincode::serde::encode_to_vec(c, bincode::config::standard()).unwrap()[0];
        let name = || String::from("n");
        assert_eq!(index(&Command::Stop { id: name() }), 3);
        assert_eq!(index(&Command::Batch(Vec::new())), 9);
        let rollback = Command::RollbackRule {
            rule: name(),
            version: None,
            applied_at_ms: 0,
        };
        assert_eq!(index(&rollback), 15);
        let network = Command::SetNetwork {
            cidr: name(),
            subnet_prefix: 24,
        };
        assert_eq!(index(&network), 16);
        let policy = Command::SetNodePolicy {
            node: 1,
            policy: NodePolicy::default(),
        };
        assert_eq!(index(&policy), 17);
        assert_eq!(index(&Command::RemoveVolume { name: name() }), 19);
        assert_eq!(index(&Command::RemoveSecret { name: name() }), 21);
    }
}
