//! The cluster: openraft's type configuration, the deterministic replicated state, its
//! durable redb storage (its transport over gRPC is the supervisor's: `endpoints::raft`).

mod applied;
pub mod event_log;
pub mod proposer;
pub mod state;
pub mod store;
pub mod wal;
pub mod write_behind;

use state::{Command, Response};
use std::io::Cursor;

openraft::declare_raft_types!(
    /// haconiwa's Raft types: commands in, responses out, basic nodes (an address).
    pub TypeConfig:
        D = Command,
        R = Response,
);

/// A running Raft node.
pub type Raft = openraft::Raft<TypeConfig>;
