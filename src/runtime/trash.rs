//! A finished foreground container's directory, removed off the caller's path. Every
//! block a removal frees is discarded by a filesystem mounted `discard`, and ext4 does
//! it before the `unlink` or `rmdir` returns: on this VM's `/run` 80-210 µs per
//! directory or file, about 1 ms for a container's directory and writable layer (ten
//! of them), a seventh of `haconiwa run`. So the directory is renamed into
//! `<state>/trash` (its name is free again at once, and `ps` no longer lists it) and a
//! `__remove` helper, not waited for, deletes it. On a tmpfs (a systemd host's `/run`)
//! the removal takes microseconds and is done in place.
//!
//! The helper also fills the cgroup pool the launch took from (`launcher::cgroup_pool`),
//! and stays a while ([`LINGER`]) for the next finished container: starting it is a
//! `vfork` that holds `run` until the helper's `exec` (0.2-1.7 ms here, more when the
//! other core is busy), so a loop of runs starts one, not one each. A run starts none
//! while a remover of its cgroup parent holds that parent's lock in the trash
//! (`.remover-<hash>`); the remover looks at the trash once more after it lets the lock
//! go, so an entry moved in while it held the lock is never left.

use super::helper::{self, Request};
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The directory of `state_dir` that holds what is being removed.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("trash")
}

/// How long a remover waits for the next finished container before it ends.
pub const LINGER: Duration = Duration::from_secs(1);

/// Removes the container directory `path` of `state_dir`: in place on a tmpfs when no
/// cgroup pool is to be filled, or when it cannot be moved; else moved into the trash
/// for a remover, which also fills the pool of the cgroup parent `refill`. An error is
/// what the removal in place returned (the remover's are its own).
pub fn remove(state_dir: &Path, path: &Path, refill: Option<&str>) -> io::Result<()> {
    let on_tmpfs = nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
    if on_tmpfs && refill.is_none() {
        return std::fs::remove_dir_all(path);
    }
    let trash = dir(state_dir);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let moved = name.and_then(|name| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let to = trash.join(format!("{name}.{}.{nanos}", std::process::id()));
        let renamed = std::fs::rename(path, &to).or_else(|e| {
            if e.kind() != io::ErrorKind::NotFound {
                return Err(e);
            }
            // Only root goes in (the containers' directories are 0711).
            use std::os::unix::fs::DirBuilderExt;
            let made = std::fs::DirBuilder::new().mode(0o700).create(&trash);
            made.or_else(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => Ok(()),
                _ => Err(e),
            })?;
            std::fs::rename(path, &to)
        });
        renamed.ok().map(|()| to)
    });
    let Some(to) = moved else {
        return std::fs::remove_dir_all(path);
    };
    if remover_active(&trash, refill) {
        return Ok(());
    }
    let request = Request::Remove {
        trash,
        refill: refill.map(str::to_string),
    };
    if helper::start_detached(&request).is_err() {
        return std::fs::remove_dir_all(&to);
    }
    Ok(())
}

/// The lock a remover of cgroup parent `refill` holds in `trash`.
fn lock_path(trash: &Path, refill: Option<&str>) -> PathBuf {
    // FNV-1a: a parent may be long or hold '/'.
    let hash = refill
        .unwrap_or("")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    trash.join(format!(".remover-{hash:016x}"))
}

/// Whether a remover of this parent holds its lock (and so will see an entry moved in
/// before this call).
fn remover_active(trash: &Path, refill: Option<&str>) -> bool {
    let Ok(file) = open_lock(trash, refill) else {
        return false;
    };
    let locked = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock);
    locked.is_err()
}

fn open_lock(trash: &Path, refill: Option<&str>) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(lock_path(trash, refill))
}

/// The helper's side: holds the parent's lock while it removes every entry of `trash`
/// and fills the pool of `refill`, again for each entry moved in until none came for
/// [`LINGER`]; then once more after it let the lock go. Refuses a directory that is
/// not an absolute one named `trash`; returns at once if another remover of the same
/// parent holds the lock.
pub fn serve(trash: &Path, refill: Option<&str>) -> io::Result<()> {
    if !(trash.is_absolute() && trash.file_name().is_some_and(|n| n == "trash")) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a trash directory", trash.display()),
        ));
    }
    let lock = open_lock(trash, refill)?;
    let Ok(held) = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
    else {
        return Ok(());
    };
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let watch = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).and_then(|i| {
        let flags = AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_ONLYDIR;
        i.add_watch(trash, flags).map(|_| i)
    });
    let tidy = || {
        drain(trash);
        if let Some(parent) = refill {
            let _ = crate::launcher::cgroup_pool::refill(parent);
        }
    };
    loop {
        tidy();
        let Ok(watch) = &watch else { break };
        let mut fds = [nix::poll::PollFd::new(
            watch.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let timeout =
            nix::poll::PollTimeout::try_from(LINGER).unwrap_or(nix::poll::PollTimeout::ZERO);
        match nix::poll::poll(&mut fds, timeout) {
            // An entry came (or the trash went: the next drain finds nothing).
            Ok(n) if n > 0 => {
                let events = watch.read_events().unwrap_or_default();
                if events.iter().any(|e| {
                    e.mask
                        .contains(nix::sys::inotify::AddWatchFlags::IN_IGNORED)
                }) {
                    break;
                }
            }
            _ => break,
        }
    }
    drop(held);
    // Moved in before the unlock, by a run that saw the lock held.
    tidy();
    Ok(())
}

/// Removes every entry of the trash but the removers' locks.
fn drain(trash: &Path) {
    for e in std::fs::read_dir(trash).into_iter().flatten().flatten() {
        if !e.file_name().to_string_lossy().starts_with('.') {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remover_takes_only_a_trash_directory_and_empties_it_but_for_the_locks() {
        let base = std::env::temp_dir().join(format!("hc-trash-{}", std::process::id()));
        let keep = base.join("containers/keep");
        std::fs::create_dir_all(keep.join("layer")).unwrap();
        let err = serve(&base.join("containers"), None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(keep.join("layer").exists());
        assert!(serve(Path::new("trash"), None).is_err());
        let trash = dir(&base);
        let gone = trash.join("c.1.2");
        std::fs::create_dir_all(gone.join("layer/upper")).unwrap();
        serve(&trash, None).unwrap();
        assert!(!gone.exists());
        assert!(lock_path(&trash, None).exists());
        assert!(!remover_active(&trash, None));
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_run_starts_no_remover_while_one_of_its_parent_holds_the_lock() {
        let base = std::env::temp_dir().join(format!("hc-trash-lock-{}", std::process::id()));
        let trash = dir(&base);
        std::fs::create_dir_all(&trash).unwrap();
        let lock = open_lock(&trash, Some("haconiwa/node-1")).unwrap();
        let held =
            nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
        assert!(remover_active(&trash, Some("haconiwa/node-1")));
        assert!(!remover_active(&trash, Some("haconiwa/node-2")));
        drop(held);
        assert!(!remover_active(&trash, Some("haconiwa/node-1")));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
