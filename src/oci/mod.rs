//! haconiwa's launcher behind runc's command line (docs/oci.md): an OCI bundle's
//! `config.json` becomes the one container model (`config.rs`), the runtime keeps its
//! own record of each container (`state.rs`), and the lifecycle of runtime-spec runs on
//! them (`lifecycle.rs`); `hooks.rs` runs the config's hooks at their stages; `defaults.rs` writes what `spec` and
//! `features` print; `host_mounts.rs` removes what a container without a mount namespace
//! mounted in the runtime's table.

pub mod config;
pub mod defaults;
pub mod export;
pub mod hooks;
pub mod host_mounts;
pub mod import;
pub mod lifecycle;
pub mod state;
