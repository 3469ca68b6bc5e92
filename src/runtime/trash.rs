//! A finished foreground container's directory, removed off the caller's path. Every
//! block a removal frees is discarded by a filesystem mounted `discard`, and ext4 does
//! it before the `unlink` or `rmdir` returns: on this VM's `/run` 80-210 µs per
//! directory or file, about 1 ms for a container's directory and writable layer (ten
//! of them), a seventh of `haconiwa run`. So the directory is renamed into
//! `<state>/trash` (its name is free again at once, and `ps` no longer lists it) and a
//! `__remove` helper, not waited for, deletes it. On a tmpfs (a systemd host's `/run`)
//! the removal takes microseconds and is done in place.

use super::helper::{self, Request};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The directory of `state_dir` that holds what is being removed.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("trash")
}

/// How old an entry of the trash is before any remover takes it: one whose own remover
/// was killed, or could not start.
const LEFT_OVER: Duration = Duration::from_secs(60);

/// Removes the container directory `path` of `state_dir`: in place on a tmpfs, or
/// when it cannot be moved; else moved into the trash and removed by a helper. The
/// helper also fills the cgroup pool of `refill`, a parent the launch may have taken
/// from (`launcher::cgroup_pool`). An error is what the removal in place returned (the
/// helper's are its own).
pub fn remove(state_dir: &Path, path: &Path, refill: Option<&str>) -> io::Result<()> {
    let refill = refill.map(str::to_string);
    let on_tmpfs = nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
    if on_tmpfs {
        if refill.is_some() {
            let _ = helper::start_detached(&Request::Remove { dir: None, refill });
        }
        return std::fs::remove_dir_all(path);
    }
    let trash = dir(state_dir);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let moved = name.and_then(|name| {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
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
    match moved {
        Some(to) => {
            let request = Request::Remove {
                dir: Some(to.clone()),
                refill,
            };
            if helper::start_detached(&request).is_err() {
                return std::fs::remove_dir_all(&to);
            }
            Ok(())
        }
        None => {
            if refill.is_some() {
                let _ = helper::start_detached(&Request::Remove { dir: None, refill });
            }
            std::fs::remove_dir_all(path)
        }
    }
}

/// The helper's side: removes `entry` of a trash directory, then whatever of that trash
/// is older than [`LEFT_OVER`]. Refuses anything that is not in a directory named
/// `trash`.
pub fn empty(entry: &Path) -> io::Result<()> {
    let trash = entry
        .parent()
        .filter(|p| entry.is_absolute() && p.file_name().is_some_and(|n| n == "trash"))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not in a trash directory", entry.display()),
            )
        })?;
    let own = std::fs::remove_dir_all(entry);
    let now = SystemTime::now();
    for e in std::fs::read_dir(trash).into_iter().flatten().flatten() {
        let old = e
            .metadata()
            .ok()
            .and_then(|m| std::os::unix::fs::MetadataExt::ctime(&m).try_into().ok())
            .map(|s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
            .is_some_and(|t| now.duration_since(t).is_ok_and(|age| age > LEFT_OVER));
        if old {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    own
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_entry_of_a_trash_directory_is_removed() {
        let base = std::env::temp_dir().join(format!("hc-trash-{}", std::process::id()));
        let keep = base.join("containers/keep");
        std::fs::create_dir_all(keep.join("layer")).unwrap();
        let err = empty(&keep).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(keep.join("layer").exists());
        let gone = dir(&base).join("c.1.2");
        std::fs::create_dir_all(gone.join("layer/upper")).unwrap();
        empty(&gone).unwrap();
        assert!(!gone.exists());
        assert!(empty(Path::new("trash/relative")).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
