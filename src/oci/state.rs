//! The OCI runtime's own records: one private directory per container under the root
//! (`--root`, default `/run/haconiwa-oci`), holding `state.json` (what `state` reports
//! and what `kill`/`delete` need), `gate/exec.fifo` while the container waits for `start`,
//! and the seccomp profile the config asked for. The status is never stored: it is
//! read from the process itself, so a crash of anyone leaves no stale answer.

use crate::launcher::cgroup::{Cgroup, Layout};
use crate::launcher::pidfd::ProcessHandle;
use crate::runtime::state::{create_private_dirs, write_atomic};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The runtime-spec version the state and `features` speak.
pub const OCI_VERSION: &str = "1.0.2";

/// Where the records live when `--root` is not given.
pub const DEFAULT_ROOT: &str = "/run/haconiwa-oci";

/// What `create` recorded of one container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The container's id.
    pub id: String,
    /// Host pid of its process.
    pub pid: i32,
    /// That process's start time (ticks since boot): a reused pid is not ours.
    pub start_time: u64,
    /// The bundle directory, absolute.
    pub bundle: PathBuf,
    /// The root filesystem, absolute.
    pub rootfs: PathBuf,
    /// When it was created, RFC 3339 in UTC.
    pub created: String,
    /// Its cgroup: parent and leaf.
    pub cgroup: (String, String),
    /// The cgroup settings it was created with (they name the v1 controllers used).
    pub cgroup_settings: BTreeMap<String, String>,
    /// The config's annotations.
    pub annotations: BTreeMap<String, String>,
    /// The config's hooks (`start` and `delete` run some).
    #[serde(default)]
    pub hooks: Option<oci_spec::runtime::Hooks>,
    /// Without a mount namespace its mounts are in the runtime's table, stacked on the
    /// root above the mount named here: `delete` detaches them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_mounts: Option<HostMounts>,
}

/// The mount under a container's root in the runtime's mount table, before `create`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct HostMounts {
    /// Its id in mountinfo; `None`: the root was no mount point.
    pub below: Option<u64>,
}

/// runtime-spec's statuses (`paused` is runc's addition, from the freezer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// `create` is still at work.
    Creating,
    /// Waiting at its start gate.
    Created,
    /// Its process runs.
    Running,
    /// Frozen by `pause`.
    Paused,
    /// Its process ended.
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// The state JSON of runtime-spec, with runc's extra fields.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateReport {
    /// The runtime-spec version this follows.
    pub oci_version: String,
    /// The container's id.
    pub id: String,
    /// Its status now.
    pub status: Status,
    /// Its process (0 once stopped, as runc reports).
    pub pid: i32,
    /// The bundle.
    pub bundle: PathBuf,
    /// runc's: the root filesystem.
    pub rootfs: PathBuf,
    /// runc's: when it was created.
    pub created: String,
    /// runc's: who owns it (empty: root).
    pub owner: String,
    /// The config's annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The runtime's root directory.
#[derive(Debug, Clone)]
pub struct Root {
    dir: PathBuf,
}

impl Root {
    /// The root at `dir` (made when first written).
    pub fn new(dir: impl Into<PathBuf>) -> Root {
        Root { dir: dir.into() }
    }

    /// The directory of container `id`.
    pub fn dir_of(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Makes the directory of a new container; `AlreadyExists` when the id is taken.
    pub fn make_dir(&self, id: &str) -> io::Result<PathBuf> {
        create_private_dirs(&self.dir)?;
        let d = self.dir_of(id);
        std::fs::create_dir(&d)?;
        std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        Ok(d)
    }

    /// Saves a container's record.
    pub fn save(&self, r: &Record) -> io::Result<()> {
        let text = serde_json::to_vec_pretty(r).map_err(io::Error::other)?;
        write_atomic(&self.dir_of(&r.id).join("state.json"), &text)
    }

    /// The record of `id`; `NotFound` when there is no such container.
    pub fn load(&self, id: &str) -> io::Result<Record> {
        let text = std::fs::read(self.dir_of(id).join("state.json"))?;
        serde_json::from_slice(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// The ids of every container, sorted.
    pub fn ids(&self) -> io::Result<Vec<String>> {
        let mut ids = Vec::new();
        match std::fs::read_dir(&self.dir) {
            Ok(rd) => {
                for e in rd {
                    let e = e?;
                    if e.file_type()?.is_dir() {
                        ids.push(e.file_name().to_string_lossy().into_owned());
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        ids.sort();
        Ok(ids)
    }
}

impl Record {
    /// The start gate in container directory `dir`: `gate/exec.fifo`.
    pub fn gate_dir(dir: &Path) -> PathBuf {
        dir.join("gate")
    }

    /// Its process, if it still runs (a zombie has ended).
    pub fn process(&self) -> Option<ProcessHandle> {
        let h = ProcessHandle::open(self.pid, self.start_time).ok()??;
        match h.wait(Duration::ZERO) {
            Ok(false) => Some(h),
            _ => None,
        }
    }

    /// Its cgroup (nothing is created).
    pub fn cgroup(&self) -> io::Result<Cgroup> {
        let layout = Layout::detect().map_err(|e| io::Error::other(e.to_string()))?;
        Cgroup::handle(
            &layout,
            &self.cgroup.0,
            &self.cgroup.1,
            &self.cgroup_settings,
        )
        .map_err(|e| io::Error::other(e.to_string()))
    }

    /// Its status now, read from the process, the start gate and the freezer.
    pub fn status(&self, root: &Root) -> Status {
        if self.process().is_none() {
            return Status::Stopped;
        }
        if Record::gate_dir(&root.dir_of(&self.id))
            .join("exec.fifo")
            .exists()
        {
            return Status::Created;
        }
        if self.cgroup().map(|c| c.frozen()).unwrap_or(false) {
            return Status::Paused;
        }
        Status::Running
    }

    /// What `state` prints.
    pub fn report(&self, root: &Root) -> StateReport {
        self.report_as(self.status(root))
    }

    /// The report of this container in `status` (its pid is 0 once stopped, as runc
    /// reports), without reading the status: what a hook of that stage is told.
    pub fn report_as(&self, status: Status) -> StateReport {
        StateReport {
            oci_version: OCI_VERSION.into(),
            id: self.id.clone(),
            status,
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            bundle: self.bundle.clone(),
            rootfs: self.rootfs.clone(),
            created: self.created.clone(),
            owner: String::new(),
            annotations: self.annotations.clone(),
        }
    }
}

/// Now as RFC 3339 in UTC with nanoseconds, as runc writes `created`.
pub fn rfc3339_now() -> String {
    crate::spec::timestamp::rfc3339(std::time::SystemTime::now())
}

/// Removes a container's directory (its record, gate and profile).
pub fn remove_dir(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_created_time_is_rfc3339() {
        let t = rfc3339_now();
        assert_eq!(t.len(), "2026-12-06T01:02:03.123456789Z".len(), "{t}");
        let year: i32 = t[..4].parse().expect("year");
        assert!((2024..2200).contains(&year), "{t}");
        assert!(t.ends_with('Z') && &t[10..11] == "T", "{t}");
    }
}
