//! The on-disk record of a local container: `<state_dir>/containers/<name>/` holds
//! `state.json`, `spec.json` and `log`.

use crate::spec::ContainerSpec;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};

/// Lifecycle of a local container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Being set up; no command yet.
    Creating,
    /// Its command runs.
    Running,
    /// It ended (see the exit code).
    Exited,
}

/// What `state.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Container name (unique on this host).
    pub name: String,
    /// Host pid of the container's first process (0 while creating).
    pub pid: i32,
    /// Start time of that pid (ticks since boot), to detect a reused pid.
    pub start_time: u64,
    /// Pid of the monitor that waits for it (0 in the foreground).
    pub monitor_pid: i32,
    /// Start time of the monitor.
    pub monitor_start_time: u64,
    /// SHA-256 of the resolved spec.
    pub spec_digest: String,
    /// Lifecycle.
    pub status: Status,
    /// Exit code once exited (128+n for signal n).
    pub exit_code: Option<i32>,
    /// The exit was an OOM kill.
    #[serde(default)]
    pub oom_killed: bool,
    /// Why it ended when not by itself ("lost: its monitor vanished").
    #[serde(default)]
    pub reason: Option<String>,
    /// It was found running with its processes and its monitor gone: its end was never
    /// recorded, only concluded.
    #[serde(default)]
    pub lost: bool,
    /// Its monitor stopped it because the node's lease ran out.
    #[serde(default)]
    pub fenced: bool,
    /// Wall-clock start, seconds since the epoch.
    pub created_at: u64,
    /// Wall-clock end.
    #[serde(default)]
    pub finished_at: Option<u64>,
    /// cgroup parent it was created under.
    pub cgroup_parent: String,
    /// Labels copied from the spec (the cluster id lives here for supervised ones).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// What a container's health checks found last (`health.json`, written by the node's
/// agent, shown by `ps`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthRecord {
    /// starting | healthy | unhealthy.
    pub status: String,
    /// Failed probes in a row.
    pub failures: u32,
    /// What the last probe said.
    pub detail: String,
    /// When the last probe ended, seconds since the epoch.
    pub checked_at: u64,
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The directory of one container.
#[derive(Debug, Clone)]
pub struct ContainerDir {
    /// `<state_dir>/containers/<name>`.
    pub path: PathBuf,
}

impl ContainerDir {
    /// `state.json`.
    pub fn state_file(&self) -> PathBuf {
        self.path.join("state.json")
    }
    /// `spec.json`.
    pub fn spec_file(&self) -> PathBuf {
        self.path.join("spec.json")
    }
    /// The container's stdout and stderr.
    pub fn log_file(&self) -> PathBuf {
        self.path.join("log")
    }
    /// The container's writable layer of its root filesystem.
    pub fn layer_dir(&self) -> PathBuf {
        self.path.join("layer")
    }

    /// `health.json`: what the node's agent last found with its health checks.
    pub fn health_file(&self) -> PathBuf {
        self.path.join("health.json")
    }

    /// Reads `health.json` (none: no check has run).
    pub fn read_health(&self) -> Option<HealthRecord> {
        let text = std::fs::read_to_string(self.health_file()).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Replaces `health.json`.
    pub fn write_health(&self, h: &HealthRecord) -> io::Result<()> {
        write_atomic(
            &self.health_file(),
            &serde_json::to_vec_pretty(h).map_err(io::Error::other)?,
        )
    }

    /// Reads `state.json`.
    pub fn read_state(&self) -> io::Result<State> {
        let text = std::fs::read_to_string(self.state_file())?;
        serde_json::from_str(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Reads `spec.json`.
    pub fn read_spec(&self) -> io::Result<ContainerSpec> {
        let text = std::fs::read_to_string(self.spec_file())?;
        serde_json::from_str(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Replaces `state.json` atomically (write + rename).
    pub fn write_state(&self, st: &State) -> io::Result<()> {
        write_atomic(
            &self.state_file(),
            &serde_json::to_vec_pretty(st).map_err(io::Error::other)?,
        )
    }

    /// Writes `spec.json`.
    pub fn write_spec(&self, spec: &ContainerSpec) -> io::Result<()> {
        write_atomic(
            &self.spec_file(),
            &serde_json::to_vec_pretty(spec).map_err(io::Error::other)?,
        )
    }
}

/// Writes a file (mode 0600) through a temporary name and a rename, so readers never
/// see half.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    write_renamed(path, data, false)
}

/// [`write_atomic`] that also survives a power cut: the data is flushed before the
/// rename and the rename before returning. For what a node must find again after a
/// crash of the machine (its node id: ext4 leaves a new file empty when the power goes
/// before its delayed allocation is written, which a `virsh destroy` of a VM showed).
pub fn write_durable(path: &Path, data: &[u8]) -> io::Result<()> {
    write_renamed(path, data, true)
}

/// A 0600 temporary file beside `path` with `data`, renamed over `path`; `durable`:
/// flushed first, and the directory after.
fn write_renamed(path: &Path, data: &[u8], durable: bool) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    if durable {
        f.sync_all()?;
    }
    drop(f);
    std::fs::rename(&tmp, path)?;
    if durable {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        std::fs::File::open(dir.unwrap_or(Path::new(".")))?.sync_all()?;
    }
    Ok(())
}

/// Mode of state directories: only root lists or reads them; others may pass through,
/// which a container's root in a user namespace needs to reach its writable layer.
pub const STATE_DIR_MODE: u32 = 0o711;

/// Creates one state directory with [`STATE_DIR_MODE`] (an existing one keeps its mode).
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(STATE_DIR_MODE).create(path)
}

/// Creates a state directory and its missing parents with [`STATE_DIR_MODE`].
pub fn create_private_dirs(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(STATE_DIR_MODE)
        .recursive(true)
        .create(path)
}
