//! A layer as overlayfs reads it, and the view of a stack of layers.
//!
//! Each image layer is unpacked once into a directory of its own, and a container's root
//! is an overlayfs mount of those directories (read-only, top first) under its own
//! writable one. So a layer keeps the OCI deletions in overlayfs' format: a whiteout
//! (`.wh.NAME` in the tar) is a character device 0/0 named NAME, an opaque directory
//! (`.wh..wh..opq`) carries the `trusted.overlay.opaque` (and, for mounts made in a user
//! namespace, `user.overlay.opaque`) attribute `y`.
//!
//! [`Stack`] answers what a path is in the merged view of some layers, as overlayfs
//! would: the unpacker asks it how to create a directory a layer implies and whether an
//! entry would write through a lower layer's symlink; the image configuration asks it
//! for `/etc/passwd`. Every lookup goes one component at a time with `O_NOFOLLOW`
//! beneath the layer's directory handle: nothing a layer contains is ever followed.

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// The attribute overlayfs marks an opaque directory with (mounts by the host's root).
pub const OPAQUE_TRUSTED: &str = "trusted.overlay.opaque";
/// The same, for overlayfs mounted with `userxattr` (in a user namespace).
pub const OPAQUE_USER: &str = "user.overlay.opaque";

/// Opens a directory entry `name` of `dir` without following a symlink.
pub fn open_dir_at(dir: impl AsFd, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens a directory by its host path (the layer's own root).
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// `lstat` of `name` in `dir`.
pub fn lstat_at(dir: impl AsFd, name: &OsStr) -> io::Result<Stat> {
    Ok(rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
}

/// The kind of a stat.
pub fn kind(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// Whether `st` is an overlayfs whiteout (a character device 0/0).
pub fn is_whiteout(st: &Stat) -> bool {
    kind(st) == FileType::CharacterDevice && st.st_rdev == 0
}

/// Whether the open directory `dir` is opaque (hides what lower layers hold beneath it).
pub fn is_opaque(dir: impl AsFd) -> bool {
    let mut buf = [0u8; 4];
    match rustix::fs::fgetxattr(dir.as_fd(), OPAQUE_TRUSTED, &mut buf) {
        Ok(n) => n == 1 && buf[0] == b'y',
        Err(_) => false,
    }
}

/// What a path is in the merged view of a stack.
#[derive(Debug)]
pub enum Lookup {
    /// It exists, in layer `layer` (index from the top), with this stat.
    Found {
        /// Index of the layer that holds it, top first.
        layer: usize,
        /// Its own stat (not followed).
        stat: Stat,
    },
    /// Nothing there.
    Missing,
    /// A proper prefix of it (`prefix` components long) is a symlink in the merged view:
    /// reaching the path would mean following it.
    ThroughSymlink(usize),
    /// A proper prefix of it is neither a directory nor a symlink.
    ThroughFile(usize),
}

/// A stack of layer directories, top first, each held by a directory handle.
pub struct Stack {
    layers: Vec<OwnedFd>,
}

impl Stack {
    /// The stack of these layer directories (top first).
    pub fn open(dirs: &[impl AsRef<Path>]) -> io::Result<Stack> {
        let layers = dirs
            .iter()
            .map(|d| open_dir(d.as_ref()))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Stack { layers })
    }

    /// An empty stack (a base layer has nothing below it).
    pub fn empty() -> Stack {
        Stack { layers: Vec::new() }
    }

    /// The directory handle of layer `i` (top first).
    pub fn layer(&self, i: usize) -> &OwnedFd {
        &self.layers[i]
    }

    /// What `components` (a relative path, already split and checked) is in the merged
    /// view, resolved as overlayfs does: the topmost layer holding it wins, a whiteout
    /// or a non-directory hides what is below, an opaque directory hides what lower
    /// layers hold beneath it.
    pub fn lookup(&self, components: &[&OsStr]) -> io::Result<Lookup> {
        if components.is_empty() {
            return Ok(Lookup::Missing);
        }
        let last = components.len() - 1;
        for (i, root) in self.layers.iter().enumerate() {
            let mut dir = rustix::io::dup(root)?;
            let mut hides_below = false;
            let mut stopped = false;
            for (k, name) in components.iter().enumerate() {
                let st = match lstat_at(&dir, name) {
                    Ok(st) => st,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        stopped = true;
                        break;
                    }
                    Err(e) => return Err(e),
                };
                if is_whiteout(&st) {
                    return Ok(Lookup::Missing);
                }
                if k == last {
                    return Ok(Lookup::Found { layer: i, stat: st });
                }
                match kind(&st) {
                    FileType::Directory => {
                        dir = open_dir_at(&dir, name)?;
                        if is_opaque(&dir) {
                            hides_below = true;
                        }
                    }
                    FileType::Symlink => return Ok(Lookup::ThroughSymlink(k + 1)),
                    _ => return Ok(Lookup::ThroughFile(k + 1)),
                }
            }
            if stopped && hides_below {
                return Ok(Lookup::Missing);
            }
        }
        Ok(Lookup::Missing)
    }

    /// Reads a regular file of the merged view (at most `limit` bytes); `None` when it
    /// is missing or not a regular file reached without a symlink.
    pub fn read_file(&self, components: &[&OsStr], limit: u64) -> io::Result<Option<Vec<u8>>> {
        let Lookup::Found { layer, stat } = self.lookup(components)? else {
            return Ok(None);
        };
        if kind(&stat) != FileType::RegularFile {
            return Ok(None);
        }
        let (parents, name) = components.split_at(components.len() - 1);
        let mut dir = rustix::io::dup(&self.layers[layer])?;
        for p in parents {
            dir = open_dir_at(&dir, p)?;
        }
        let fd = rustix::fs::openat(
            &dir,
            name[0],
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        use std::io::Read;
        let mut out = Vec::new();
        std::fs::File::from(fd).take(limit).read_to_end(&mut out)?;
        Ok(Some(out))
    }
}

/// Splits a slash-separated relative path into its components, without empty and `.`
/// ones (for paths this program wrote itself, such as `etc/passwd`).
pub fn components(path: &str) -> Vec<&OsStr> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(OsStr::new)
        .collect()
}
