//! The supervisor's own requests: what a spawn, a join or a rule registration asks for,
//! with proto3's "empty means absent" already turned into `Option`s and enums. The
//! endpoints make them from protobuf messages (`endpoints::convert`), the etcd mirror
//! from what etcd holds; `leader::ops` serves them without knowing either.

use crate::cluster::state::NodeId;
use std::collections::BTreeMap;

/// Which definition a spawn runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefinitionSource {
    /// A definition the cluster holds, by name (its latest version).
    Registered(String),
    /// A `.haco` text, evaluated unless the cluster holds it already.
    Text(HacoText),
}

/// A `.haco` text and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HacoText {
    /// The text.
    pub text: String,
    /// Its file name: for error messages, and its stem names the definition.
    pub file: String,
    /// The directory relative host paths of the definition resolve against.
    pub base_dir: String,
}

/// Where a spawn may go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Target {
    /// Exactly this node (None: the scheduler chooses, avoiding suspect nodes).
    pub node: Option<NodeId>,
    /// Only nodes carrying these labels.
    pub labels: BTreeMap<String, String>,
}

/// One container to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnRequest {
    /// What it runs.
    pub definition: DefinitionSource,
    /// Where.
    pub target: Target,
}

/// A member asking to be one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    /// The id it holds already (None: allocate one).
    pub id: Option<NodeId>,
    /// The address the others reach it at.
    pub addr: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// A node record only, no Raft membership (the simulated nodes of
    /// scripts/bench-scale); a supervisor always joins Raft.
    pub outside_raft: bool,
}

/// A rule to register or replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRequest {
    /// Its name (None: the file's stem).
    pub name: Option<String>,
    /// The `.watch` text.
    pub text: String,
    /// Its file name, for error messages.
    pub file: String,
    /// The `.haco` texts the rule names, by the path it names them with.
    pub hacos: BTreeMap<String, String>,
    /// The `.watch` file's directory: relative `.haco` paths and their host paths
    /// resolve against it.
    pub base_dir: String,
}

/// A named volume to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRequest {
    /// Its name.
    pub name: String,
    /// The node that holds it.
    pub node: u64,
    /// A tmpfs (else a host directory).
    pub tmpfs: bool,
    /// Its size in bytes.
    pub size: Option<u64>,
}
