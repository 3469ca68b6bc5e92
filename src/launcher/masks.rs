//! Masked and read-only paths of the container's mount table (a definition's lists, an
//! OCI config's, or the defaults): what of the host `/proc` and `/sys` show stays out
//! of view or unchangeable.

use super::error::{Step, StepResult};
use super::mounts::{bind, inside, remount_readonly};
use nix::mount::{mount, MsFlags};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A masked file is bound to /dev/null, a masked directory hidden under an empty
/// read-only directory, a read-only path bound on itself read-only; paths that do not
/// exist are skipped, as runc does. The empty directory has no filesystem of its own
/// ([`EmptyDir`]). Each superblock registers a shrinker: the kernel walks its lists
/// whenever any memory cgroup of the host ends, and every memory cgroup made later holds
/// about 16 bytes for each shrinker of the host's peak (1 kB per 64; 562 kB a cgroup on
/// this VM after 5,000 containers of 7 superblocks each).
/// `own_dev`: the container's `/dev` is a tmpfs mounted for it.
pub(super) fn mask_listed(
    root: &Path,
    own_dev: bool,
    masked: &[String],
    readonly: &[String],
) -> StepResult<()> {
    let mut empty = if own_dev {
        EmptyDir::in_dev(root)
    } else {
        EmptyDir::None
    };
    for m in masked {
        let p = inside(root, m)?;
        match fs::symlink_metadata(&p) {
            Ok(md) if md.is_dir() => {
                // (A tmpfs of its own when there is no empty directory to bind, or the
                // one there was got hidden by a later mask.)
                if empty.source().is_some_and(|f| bind(f, &p, false).is_ok()) {
                    remount_readonly(&p)?;
                } else {
                    mount(
                        Some("tmpfs"),
                        &p,
                        Some("tmpfs"),
                        MsFlags::MS_RDONLY,
                        None::<&str>,
                    )
                    .step(|| format!("mask {m}"))?;
                    empty.fall_back_to(p);
                }
            }
            Ok(_) => bind(Path::new("/dev/null"), &p, false)?,
            Err(_) => {}
        }
    }
    empty.close()?;
    for r in readonly {
        let p = inside(root, r)?;
        if fs::symlink_metadata(&p).is_ok() {
            bind(&p, &p, true)?;
            remount_readonly(&p)?;
        }
    }
    Ok(())
}

/// Whether `root`'s `/dev` is a tmpfs mounted there, not the host's `/dev` (still in
/// view before `pivot_root`): the container's own, where directories with no
/// filesystem of their own can be made.
fn is_own_dev_tmpfs(root: &Path) -> bool {
    let dev = root.join("dev");
    let ours = || -> Option<bool> {
        let tmpfs =
            nix::sys::statfs::statfs(&dev).ok()?.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC;
        let own = fs::metadata(&dev).ok()?.dev();
        let host = fs::metadata("/dev").ok()?.dev();
        let under = fs::metadata(root).ok()?.dev();
        Some(tmpfs && own != host && own != under)
    };
    ours() == Some(true)
}

/// The empty directory behind the masked directories: one made in the container's own
/// `/dev` tmpfs (no superblock of its own) and removed once bound, so that nothing can
/// reach it but through the read-only masks; or else the first mask's own empty tmpfs.
enum EmptyDir {
    /// Made in `/dev`; removed by [`EmptyDir::close`].
    InDev(PathBuf),
    /// A mask already in place, to bind again.
    Mask(PathBuf),
    None,
}

impl EmptyDir {
    /// Made only where `/dev` is the tmpfs mounted for this container (the caller
    /// knows), checked once more ([`is_own_dev_tmpfs`]).
    fn in_dev(root: &Path) -> EmptyDir {
        if !is_own_dev_tmpfs(root) {
            return EmptyDir::None;
        }
        let p = root
            .join("dev")
            .join(format!(".mask-{}", std::process::id()));
        match fs::create_dir(&p) {
            Ok(()) => EmptyDir::InDev(p),
            Err(_) => EmptyDir::None,
        }
    }

    fn source(&self) -> Option<&Path> {
        match self {
            EmptyDir::InDev(p) | EmptyDir::Mask(p) => Some(p),
            EmptyDir::None => None,
        }
    }

    fn fall_back_to(&mut self, mask: PathBuf) {
        if matches!(self, EmptyDir::None) {
            *self = EmptyDir::Mask(mask);
        }
    }

    /// Removes the directory made in `/dev`: the masks keep it, empty, out of reach.
    fn close(self) -> StepResult<()> {
        match self {
            EmptyDir::InDev(p) => match fs::remove_dir(&p) {
                // Out of reach already: a later mask hid /dev itself.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                r => r.step(|| format!("remove {}", p.display())),
            },
            _ => Ok(()),
        }
    }
}
