//! The container model and the DSL loaders. No tokio, no syscalls: plain data and the
//! sandboxed Rhai scripts that produce it.

pub mod cgroup;
pub mod haco;
pub mod health;
pub mod image_ref;
pub mod log_limits;
pub mod masks;
mod model;
pub mod names;
pub mod net;
pub mod policy;
pub mod restart;
pub mod script;
pub mod signal;
pub mod stored;
pub mod sysctl;
pub mod timestamp;
pub mod update;
pub mod volumes;
pub mod watch;

pub use haco::{load_file, load_str, HacoError};
pub use image_ref::{ImageRef, RefError};
pub use log_limits::LogLimits;
pub use model::*;
pub use policy::NodePolicy;
pub use script::ScriptError;

/// Hex SHA-256 of a text: how definitions and rules are identified in the cluster.
pub fn digest(text: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(text.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}
