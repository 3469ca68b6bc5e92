//! One container from a spec: namespaces, id maps, rootfs and pivot_root, mounts,
//! cgroups, capabilities, rlimits, ids, hostname, exec, a tiny PID 1, and setns for
//! attach. Synchronous and single-threaded: it must run before any thread exists
//! (docs/architecture.md, the multi-thread rule). All `unsafe` of the project lives here.

pub mod attach;
pub mod cgroup;
pub mod cgroup_pool;
mod charges;
mod child;
mod clone;
pub mod devices;
mod error;
mod freezer;
pub mod hooks;
pub mod init;
mod masks;
mod memory;
mod mounts;
pub mod netlink;
pub mod network;
mod parent;
pub mod pidfd;
pub mod privileges;
pub mod seccomp;
mod secrets;
pub mod signals;
pub mod terminal;

pub use child::{RootAccess, DEFAULT_PATH};
pub use error::{LaunchError, StepError};
pub use memory::{one_malloc_arena, release_free_memory};
pub use parent::{
    fork_single_threaded, redirect_stdio, start, start_time, wait, wait_watching, Exit, Hold,
    LaunchOptions, Started, Watch,
};
pub use secrets::{wipe, SecretFile};
