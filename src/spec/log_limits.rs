//! How much of a container's output its node keeps: `c.logs(#{ max_size, max_files })`.
//! The active file is rotated once it reaches `max_size`, and `max_files` files are kept
//! (the active one included), so a container holds at most their product on disk.

use serde::{Deserialize, Serialize};

/// The default size of a log file before it is rotated: 10 MiB (Kubernetes' default).
pub const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024;

/// The default number of files kept, the active one included (Kubernetes keeps 5).
pub const DEFAULT_MAX_FILES: u32 = 5;

/// A container's log rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogLimits {
    /// Bytes of the active file before it is rotated.
    pub max_size: u64,
    /// Files kept, the active one included (at least 1).
    pub max_files: u32,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            max_size: DEFAULT_MAX_SIZE,
            max_files: DEFAULT_MAX_FILES,
        }
    }
}

impl LogLimits {
    /// Whether these are the defaults (a definition that says nothing).
    pub fn is_default(&self) -> bool {
        *self == LogLimits::default()
    }
}
