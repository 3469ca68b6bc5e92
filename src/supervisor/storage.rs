//! This node's side of the cluster's storage: its named volumes (made when a container
//! first mounts one, bound into each container that does, removed once the cluster
//! forgets them) and the secrets a container reads, opened for its launch.
//!
//! A volume lives in `DATA_DIR/volumes/NAME`: `volume.json` (the record it was made
//! for) and `data`, the directory containers mount: a plain directory, the mount of a
//! loop-mounted ext4 image of the volume's size (`image.ext4`), or a tmpfs of its size.
//! Mounts are the host's, so they outlive this supervisor as the containers do.

use super::secrets::{self, SecretError};
use super::shared::Supervisor;
use crate::cluster::state::{ClusterState, NodeId, VolumeKind, VolumeRecord};
use crate::launcher::SecretFile;
use crate::spec::{ContainerSpec, IdMap, MountPoint, NsKind};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

/// Why a container's volumes or secrets could not be had here.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The cluster has no such volume (removed after the placement).
    #[error("no volume {0} in the cluster")]
    NoVolume(String),
    /// The volume is another node's.
    #[error("volume {0} is on node {1}, not here")]
    NotHere(String, NodeId),
    /// Making or mounting it failed.
    #[error("volume {name}: {step}: {reason}")]
    Volume {
        /// The volume.
        name: String,
        /// What was being done.
        step: String,
        /// Why it failed.
        reason: String,
    },
    /// A secret could not be opened.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The blocking task ended badly.
    #[error("preparing its volumes: {0}")]
    Task(String),
}

/// The volumes of this node, on its disk.
pub struct NodeVolumes {
    root: PathBuf,
    /// Making one and sweeping never overlap (a sweep must not take a volume half made).
    busy: Mutex<()>,
}

/// What a launch needs of the cluster's storage: the spec with its volumes bound, and
/// its secrets' values (the blocking part, mkfs and mount, on a blocking thread).
pub async fn for_launch(
    core: &Arc<Supervisor>,
    volumes: &Arc<NodeVolumes>,
    mut spec: ContainerSpec,
) -> Result<(ContainerSpec, Vec<SecretFile>), StorageError> {
    let state = core.state();
    let secrets = secrets::for_launch(&state, core.secrets_key.as_ref(), &spec)?;
    if spec.volumes.is_empty() {
        return Ok((spec, secrets));
    }
    let (me, volumes) = (core.id, volumes.clone());
    tokio::task::spawn_blocking(move || {
        volumes.mount_into(&state, me, &mut spec)?;
        Ok((spec, secrets))
    })
    .await
    .map_err(|e| StorageError::Task(e.to_string()))?
}

/// Keeps this node's volumes in step with the state: the ones the cluster forgot are
/// removed (unmounted first). Runs until the state feed ends.
async fn sweep_forgotten(core: Arc<Supervisor>, volumes: Arc<NodeVolumes>) {
    let mut rx = core.feed.state.clone();
    let mut last = None;
    loop {
        let state = rx.borrow_and_update().1.clone();
        let mine: Vec<VolumeRecord> = state
            .volumes()
            .values()
            .filter(|v| v.node == core.id)
            .cloned()
            .collect();
        if last.as_ref() != Some(&mine) {
            let (v, c) = (volumes.clone(), core.clone());
            let _ = tokio::task::spawn_blocking(move || v.sweep(&c)).await;
            last = Some(mine);
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

impl NodeVolumes {
    /// This node's volumes (`DATA_DIR/volumes`), swept as the state forgets them (a
    /// task; inside the runtime).
    pub fn start(core: &Arc<Supervisor>) -> Arc<NodeVolumes> {
        let volumes = Arc::new(NodeVolumes {
            root: core.config.data_dir.join("volumes"),
            busy: Mutex::new(()),
        });
        tokio::spawn(sweep_forgotten(core.clone(), volumes.clone()));
        volumes
    }

    /// Binds the spec's volumes (each made here first if need be).
    fn mount_into(
        &self,
        state: &ClusterState,
        me: NodeId,
        spec: &mut ContainerSpec,
    ) -> Result<(), StorageError> {
        let owner = host_owner(spec);
        for m in spec.volumes.clone() {
            let v = state
                .volumes()
                .get(&m.name)
                .ok_or_else(|| StorageError::NoVolume(m.name.clone()))?;
            if v.node != me {
                return Err(StorageError::NotHere(m.name.clone(), v.node));
            }
            let data = self.prepare(v, owner)?;
            spec.mounts.push(MountPoint {
                source: data.display().to_string(),
                target: m.target.clone(),
                fstype: None,
                options: None,
                readonly: m.readonly,
                noexec: false,
                restrict: true,
                propagation: None,
            });
        }
        Ok(())
    }

    /// The volume's `data` directory, made and mounted as its record says.
    fn prepare(&self, v: &VolumeRecord, owner: (u32, u32)) -> Result<PathBuf, StorageError> {
        let _busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let fail = |step: &str, reason: String| StorageError::Volume {
            name: v.name.clone(),
            step: step.into(),
            reason,
        };
        let dir = self.root.join(&v.name);
        let data = dir.join("data");
        let record = serde_json::to_string(v).map_err(|e| fail("encode", e.to_string()))?;
        let made = std::fs::read_to_string(dir.join("volume.json")).ok();
        let new = made.as_deref() != Some(record.as_str());
        // An older volume of the name, or one half made: made afresh.
        if new && dir.exists() {
            remove(&dir).map_err(|e| fail("remove what an older volume left", e))?;
        }
        if new {
            std::fs::create_dir_all(&data).map_err(|e| fail("mkdir", e.to_string()))?;
        }
        match (v.kind, v.size) {
            (VolumeKind::Host, None) => {}
            (VolumeKind::Host, Some(size)) => {
                let image = dir.join("image.ext4");
                if new {
                    make_ext4(&image, size, owner).map_err(|e| fail("make its file system", e))?;
                }
                if !mounted(&data) {
                    run(Command::new("mount")
                        .arg("-o")
                        .arg("loop")
                        .arg(&image)
                        .arg(&data))
                    .map_err(|e| fail("mount its file system", e))?;
                }
            }
            (VolumeKind::Tmpfs, size) => {
                if !mounted(&data) {
                    let opts = format!("size={},mode=0755", size.unwrap_or(64 << 20));
                    run(Command::new("mount")
                        .args(["-t", "tmpfs", "-o", &opts, "tmpfs"])
                        .arg(&data))
                    .map_err(|e| fail("mount its tmpfs", e))?;
                    chown(&data, owner).map_err(|e| fail("chown", e))?;
                }
            }
        }
        if new {
            if v.kind == VolumeKind::Host && v.size.is_none() {
                chown(&data, owner).map_err(|e| fail("chown", e))?;
            }
            // Written last: a volume half made is made again.
            std::fs::write(dir.join("volume.json"), &record)
                .map_err(|e| fail("record it", e.to_string()))?;
        }
        Ok(data)
    }

    /// Removes the volumes on disk the latest state does not hold for this node (read
    /// under the lock: a volume made meanwhile is in it).
    fn sweep(&self, core: &Supervisor) {
        let _busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let state = core.state();
        // Only a state that knows this node says what it should hold.
        if !state.nodes().contains_key(&core.id) {
            return;
        }
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if state
                .volumes()
                .get(&name)
                .is_some_and(|v| v.node == core.id)
            {
                continue;
            }
            match remove(&e.path()) {
                Ok(()) => tracing::info!("volume {name}: removed (the cluster forgot it)"),
                Err(why) => tracing::warn!("volume {name}: not removed: {why}"),
            }
        }
    }
}

/// Unmounts a volume's `data` (when mounted) and removes its directory.
fn remove(dir: &Path) -> Result<(), String> {
    let data = dir.join("data");
    if mounted(&data) {
        nix::mount::umount2(&data, nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| format!("unmount {}: {e}", data.display()))?;
    }
    std::fs::remove_dir_all(dir).map_err(|e| format!("remove {}: {e}", dir.display()))
}

/// Whether `p` is a mount point (another device than its parent's).
fn mounted(p: &Path) -> bool {
    match (std::fs::metadata(p), p.parent().map(std::fs::metadata)) {
        (Ok(a), Some(Ok(b))) => a.dev() != b.dev(),
        _ => false,
    }
}

/// An ext4 image of `size` bytes whose root belongs to `owner`.
fn make_ext4(image: &Path, size: u64, owner: (u32, u32)) -> Result<(), String> {
    let f = std::fs::File::create(image).map_err(|e| e.to_string())?;
    f.set_len(size).map_err(|e| e.to_string())?;
    drop(f);
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-m", "0", "-E"])
        .arg(format!("root_owner={}:{}", owner.0, owner.1))
        .arg(image))
}

fn chown(p: &Path, owner: (u32, u32)) -> Result<(), String> {
    std::os::unix::fs::chown(p, Some(owner.0), Some(owner.1)).map_err(|e| e.to_string())
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let what = format!("{:?}", cmd.get_program());
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The container's user and group as the host sees them (through its id maps in a
/// user namespace): a new volume is theirs.
fn host_owner(spec: &ContainerSpec) -> (u32, u32) {
    let on_host = |id: u32, maps: &[IdMap]| {
        if !spec.unshares(NsKind::User) {
            return id;
        }
        maps.iter()
            .find(|m| id >= m.inside && id - m.inside < m.count)
            .map_or(id, |m| m.outside + (id - m.inside))
    };
    (
        on_host(spec.uid.unwrap_or(0), &spec.namespaces.uid_map),
        on_host(spec.gid.unwrap_or(0), &spec.namespaces.gid_map),
    )
}
