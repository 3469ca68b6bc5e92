//! Memory cgroups made ahead, off a launch's path, and renamed into a container's.
//!
//! Making a v1 memory cgroup costs the kernel 0.2-0.7 ms on the test VM (it allocates
//! the cgroup's shrinker map, which grows with the host's peak number of superblocks
//! and never shrinks): a tenth of `haconiwa run`. Renaming one within its parent costs
//! 6 µs. So a container's memory cgroup is taken from a small pool in its parent
//! (`<parent>/.pool-0`, `.pool-1`: a container's name starts with a letter or digit,
//! so never collides), and the pool is filled again after the start, by the container's
//! monitor or the foreground `run`'s remover. SOCK (Oakes et al., USENIX ATC '18)
//! pools cgroups for the same reason.
//!
//! A pooled cgroup has never held a process, so it is as fresh as a new one; it took
//! the parent's inherited settings (`memory.swappiness`, `memory.use_hierarchy`) when
//! it was made. Only v1 (cgroup v2 does not rename cgroups) and only haconiwa's own
//! parents (never an OCI caller's `cgroupsPath`). A parent's pool goes with the parent:
//! with its last container below the first level, or by [`remove_parent`].

use super::cgroup::{Cgroup, Layout};
use std::io;
use std::path::{Path, PathBuf};

/// How many cgroups a parent keeps ready.
pub const SIZE: usize = 2;

/// The start of a pooled cgroup's name.
const PREFIX: &str = ".pool-";

/// Whether a directory name is a pooled cgroup's (not a container's).
pub fn is_pooled(name: &str) -> bool {
    name.starts_with(PREFIX)
}

fn slots(parent_dir: &Path) -> impl Iterator<Item = PathBuf> + '_ {
    (0..SIZE).map(move |i| parent_dir.join(format!("{PREFIX}{i}")))
}

/// Renames a pooled cgroup of `leaf`'s parent into `leaf`. `Ok(false)` when the pool is
/// empty (or the parent does not exist yet); an error of kind `AlreadyExists` when
/// `leaf` exists.
pub(super) fn take(leaf: &Path) -> io::Result<bool> {
    let Some(parent) = leaf.parent() else {
        return Ok(false);
    };
    for slot in slots(parent) {
        match std::fs::rename(&slot, leaf) {
            Ok(()) => return Ok(true),
            // Taken by another launch meanwhile, never made, or no parent yet.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

impl Cgroup {
    /// Whether its parent keeps a pool: a v1 host's memory hierarchy.
    pub fn pooled(&self) -> bool {
        self.memory_dir().is_some()
    }

    /// Fills the pool of this container's parent (its own layout: no second look at
    /// the host's mounts). Returns how many were made; none where nothing is pooled.
    pub fn refill_pool(&self) -> io::Result<usize> {
        match self.memory_dir().as_deref().and_then(Path::parent) {
            Some(parent_dir) => fill(parent_dir),
            None => Ok(0),
        }
    }
}

/// Fills `parent`'s pool (the cgroup parent, e.g. `haconiwa/node-2`) up to [`SIZE`],
/// for a process that has no container's cgroup at hand (the foreground run's
/// remover). Returns how many were made.
pub fn refill(parent: &str) -> io::Result<usize> {
    match Layout::detect() {
        Ok(Layout::V1 { controllers }) => match controllers.get("memory") {
            Some(m) => fill(&m.join(parent)),
            None => Ok(0),
        },
        _ => Ok(0),
    }
}

/// Makes the missing pooled cgroups of a parent's memory directory, if the parent
/// exists: a pool never makes a parent, nor keeps one alive that its last container
/// left.
fn fill(parent_dir: &Path) -> io::Result<usize> {
    let mut made = 0;
    for slot in slots(parent_dir) {
        match std::fs::create_dir(&slot) {
            Ok(()) => made += 1,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(made),
            Err(e) => return Err(e),
        }
    }
    Ok(made)
}

/// Removes the pool of a parent's directory (in the memory hierarchy; elsewhere there
/// is none and this does nothing).
pub(super) fn drain(parent_dir: &Path) {
    for slot in slots(parent_dir) {
        let _ = std::fs::remove_dir(slot);
    }
}

/// Removes a cgroup parent (`haconiwa-up`, or `haconiwa/node-2`) in every hierarchy:
/// its pools and its empty levels, the deepest first. A level that still holds a
/// container's cgroup stays, with whatever is above it.
pub fn remove_parent(parent: &str) {
    let roots = match Layout::detect() {
        Ok(Layout::V1 { controllers }) => controllers.into_values().collect(),
        Ok(Layout::V2 { root }) => vec![root],
        Err(_) => Vec::new(),
    };
    for root in roots {
        // Every level below the parent's own that only pools keep (supervisors'
        // `node-<id>` left by a kill -9), then the parent's levels upwards.
        let top = root.join(parent);
        let mut below: Vec<PathBuf> = std::fs::read_dir(&top)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.is_dir()
                    && !p
                        .file_name()
                        .is_some_and(|n| is_pooled(&n.to_string_lossy()))
            })
            .collect();
        below.sort();
        for level in below {
            drain(&level);
            let _ = std::fs::remove_dir(&level);
        }
        let mut p = top;
        while p.starts_with(&root) && p != root {
            drain(&p);
            if std::fs::remove_dir(&p).is_err() {
                break;
            }
            p.pop();
        }
    }
}
