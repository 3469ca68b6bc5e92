//! Applies one layer (a tar stream: plain, gzip or zstd) into an empty directory, entry
//! by entry, beneath that directory's handle, as the OCI image spec describes a layer.
//!
//! Nothing here trusts a path: every entry's path is split into components and refused
//! when it is absolute or holds `..`; parents are opened one component at a time with
//! `O_NOFOLLOW` from the layer's handle, so a symlink on the way (written by this layer,
//! or a lower layer's, for a directory this layer only implies) refuses the entry instead
//! of being followed; files are created with `O_EXCL | O_NOFOLLOW` in their parent's
//! handle; a hard link must name a file of the layer (or a lower one, copied up) reached
//! the same way. The tar crate only reads headers and data here: its own `unpack` has
//! had escapes and is never called.
//!
//! Deletions become overlayfs' format ([`super::overlay`]): `.wh.NAME` a 0/0 character
//! device, `.wh..wh..opq` the opaque attribute on its directory (whatever its position
//! in the stream: it hides only lower layers, never this layer's own entries). Device
//! nodes are skipped (and reported): a container gets its own `/dev`, and an image has
//! no business creating a host device.
//!
//! While it reads, the uncompressed stream is hashed: the result must equal the layer's
//! `diff_id` from the image configuration, or the caller throws the directory away.

pub use super::compression::Compression;
use super::digest::{Digest, HashingReader};
use super::overlay::{self, kind, lstat_at, open_dir_at, Lookup, Stack};
use rustix::fs::Timespec;
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timestamps, Uid, XattrFlags};
use std::ffi::{OsStr, OsString};
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

/// Why a layer was refused: the entry (its path as written; empty for the stream
/// itself) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryError {
    /// The entry's path as the tar holds it (control characters escaped).
    pub entry: String,
    /// What is wrong.
    pub reason: String,
}

impl EntryError {
    fn new(entry: &[u8], reason: impl Into<String>) -> EntryError {
        EntryError {
            entry: crate::spec::names::escape_controls(&String::from_utf8_lossy(entry))
                .into_owned(),
            reason: reason.into(),
        }
    }

    fn stream(reason: impl Into<String>) -> EntryError {
        EntryError {
            entry: String::new(),
            reason: reason.into(),
        }
    }
}

/// What applying a layer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// SHA-256 of the uncompressed tar stream (compare with the configuration's diff_id).
    pub diff_id: Digest,
    /// Bytes of the uncompressed stream.
    pub tar_size: u64,
    /// Entries skipped: device nodes (path and kind).
    pub skipped: Vec<String>,
}

/// Size of the copy buffer for file data.
const COPY_BUF: usize = 256 * 1024;

/// Applies the layer read from `blob` into the empty directory `dest`, with `lowers`
/// (the layers below it, top first) for the directories it only implies and the hard
/// links it takes from below.
pub fn apply(blob: impl Read, dest: &OwnedFd, lowers: &Stack) -> Result<Applied, EntryError> {
    let mut buffered = BufReader::with_capacity(COPY_BUF, blob);
    let compression =
        Compression::detect(&mut buffered).map_err(|e| EntryError::stream(format!("read: {e}")))?;
    let plain: Box<dyn Read> = match compression {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered)
                .map_err(|e| EntryError::stream(format!("zstd: {e}")))?,
        ),
    };
    let mut archive = tar::Archive::new(HashingReader::new(plain));
    let mut writer = Writer {
        root: dest,
        lowers,
        cursor: Vec::new(),
        dir_times: Vec::new(),
        skipped: Vec::new(),
        buf: vec![0u8; COPY_BUF],
    };
    let entries = archive
        .entries()
        .map_err(|e| EntryError::stream(format!("read the tar stream: {e}")))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| EntryError::stream(format!("read the tar stream: {e}")))?;
        let path = entry.path_bytes().into_owned();
        writer.entry(&path, &mut entry)?;
    }
    writer.restore_dir_times()?;
    let skipped = std::mem::take(&mut writer.skipped);
    drop(writer);
    let (diff_id, tar_size) = archive
        .into_inner()
        .finish()
        .map_err(|e| EntryError::stream(format!("read the tar stream: {e}")))?;
    Ok(Applied {
        diff_id,
        tar_size,
        skipped,
    })
}

/// A checked path: its components, none empty, `.` or `..`.
fn split_path(raw: &[u8]) -> Result<Vec<&OsStr>, &'static str> {
    // "/" alone names the layer's root (umoci writes it so); any other absolute path
    // is refused.
    let root_only = raw.split(|b| *b == b'/').all(|c| c.is_empty() || c == b".");
    if raw.first() == Some(&b'/') && !root_only {
        return Err("absolute path: entries are relative to the layer");
    }
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("'..' in the path: entries stay inside the layer"),
            c => out.push(OsStr::from_bytes(c)),
        }
    }
    Ok(out)
}

/// Applies entries beneath one layer directory.
struct Writer<'a> {
    root: &'a OwnedFd,
    lowers: &'a Stack,
    /// The directories of the last parent path, opened: entries come depth first, so
    /// the next parent mostly shares a prefix with the last (cleared when an entry
    /// removes a directory).
    cursor: Vec<(OsString, OwnedFd)>,
    /// Directories and the modification time their entry gave them (set at the end,
    /// after their contents changed them).
    dir_times: Vec<(Vec<OsString>, u64)>,
    skipped: Vec<String>,
    buf: Vec<u8>,
}

/// A path of components for messages.
fn show_path(components: &[&OsStr]) -> String {
    let joined: Vec<String> = components
        .iter()
        .map(|c| String::from_utf8_lossy(c.as_bytes()).into_owned())
        .collect();
    joined.join("/")
}

fn owned(components: &[&OsStr]) -> Vec<OsString> {
    components.iter().map(|c| c.to_os_string()).collect()
}

fn os_err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

fn id_of(v: u64, what: &str) -> Result<u32, String> {
    u32::try_from(v)
        .ok()
        .filter(|&x| x != u32::MAX)
        .ok_or_else(|| format!("{what} {v} is not a valid id"))
}

fn timestamps(mtime: u64) -> Timestamps {
    let t = Timespec {
        tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Removes `name` in `dir` whatever it is (a directory with everything beneath it),
/// never following a symlink; says whether a directory went.
fn remove_all_at(dir: &OwnedFd, name: &OsStr) -> io::Result<bool> {
    let st = match lstat_at(dir, name) {
        Ok(st) => st,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if kind(&st) == FileType::Directory {
        let sub = open_dir_at(dir, name)?;
        let mut names = Vec::new();
        for e in rustix::fs::Dir::read_from(&sub)? {
            let e = e?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(OsStr::from_bytes(n).to_os_string());
            }
        }
        for n in names {
            remove_all_at(&sub, &n)?;
        }
        rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
        Ok(true)
    } else {
        rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
        Ok(false)
    }
}

/// Gives `name` in `parent` (not followed) the entry's owner.
fn chown_at(parent: &OwnedFd, name: &OsStr, meta: &Meta) -> Result<(), String> {
    rustix::fs::chownat(
        parent,
        name,
        Some(Uid::from_raw(meta.uid)),
        Some(Gid::from_raw(meta.gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| os_err("chown", e))
}

/// The attributes an entry sets.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: u64,
    xattrs: Vec<(String, Vec<u8>)>,
}

impl Writer<'_> {
    fn entry<R: Read>(&mut self, raw: &[u8], e: &mut tar::Entry<R>) -> Result<(), EntryError> {
        let fail = |reason: String| EntryError::new(raw, reason);
        let comps = split_path(raw).map_err(|r| fail(r.to_string()))?;
        let etype = e.header().entry_type();
        if matches!(
            etype,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let Some((name, parents)) = comps.split_last() else {
            // The layer's root itself ("./"): its attributes are the store's.
            return Ok(());
        };
        let name_bytes = name.as_bytes();
        if let Some(target) = name_bytes.strip_prefix(b".wh.") {
            return self.whiteout(parents, target).map_err(fail);
        }
        let meta = self.meta(e).map_err(fail)?;
        let parent = self.parent(parents).map_err(fail)?;
        match etype {
            tar::EntryType::Directory => self.directory(&parent, parents, name, &meta),
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.file(&parent, name, &meta, e)
            }
            tar::EntryType::Symlink => {
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| "a symlink without a target".to_string())
                    .map_err(fail)?
                    .into_owned();
                self.symlink(&parent, name, &target, &meta)
            }
            tar::EntryType::Link => {
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| "a hard link without a target".to_string())
                    .map_err(fail)?
                    .into_owned();
                self.hard_link(&parent, name, &target)
            }
            tar::EntryType::Fifo => self.fifo(&parent, name, &meta),
            tar::EntryType::Char | tar::EntryType::Block => {
                let what = if etype == tar::EntryType::Char {
                    "character device"
                } else {
                    "block device"
                };
                self.skipped.push(format!(
                    "{} ({what}: skipped, a container gets its own /dev)",
                    String::from_utf8_lossy(raw)
                ));
                Ok(())
            }
            other => Err(format!("unsupported entry type {other:?}")),
        }
        .map_err(fail)
    }

    fn meta<R: Read>(&self, e: &mut tar::Entry<R>) -> Result<Meta, String> {
        let h = e.header();
        let uid = id_of(h.uid().map_err(|e| os_err("uid", e))?, "uid")?;
        let gid = id_of(h.gid().map_err(|e| os_err("gid", e))?, "gid")?;
        let mode = h.mode().map_err(|e| os_err("mode", e))? & 0o7777;
        let mtime = h.mtime().unwrap_or(0);
        let mut xattrs = Vec::new();
        if let Some(exts) = e.pax_extensions().map_err(|e| os_err("PAX header", e))? {
            for ext in exts {
                let ext = ext.map_err(|e| os_err("PAX header", e))?;
                let Ok(key) = ext.key() else { continue };
                if let Some(attr) = key.strip_prefix("SCHILY.xattr.") {
                    if attr.starts_with("trusted.overlay.") || attr.starts_with("user.overlay.") {
                        return Err(format!(
                            "sets overlayfs' own attribute {attr}: a layer expresses deletions with .wh. entries"
                        ));
                    }
                    xattrs.push((attr.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
        Ok(Meta {
            uid,
            gid,
            mode,
            mtime,
            xattrs,
        })
    }

    /// The directory `parents` of this layer, opened one component at a time without
    /// following anything; the directories the layer only implies are created with the
    /// attributes lower layers give them.
    fn parent(&mut self, parents: &[&OsStr]) -> Result<OwnedFd, String> {
        let shared = self
            .cursor
            .iter()
            .zip(parents)
            .take_while(|((a, _), b)| a.as_os_str() == **b)
            .count();
        self.cursor.truncate(shared);
        for k in shared..parents.len() {
            let c = parents[k];
            let shown = || show_path(&parents[..=k]);
            let dir = match self.cursor.last() {
                Some((_, fd)) => fd,
                None => self.root,
            };
            let next = match open_dir_at(dir, c) {
                Ok(fd) => fd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.implied_dir(dir, &parents[..=k], &shown())?
                }
                Err(_) => {
                    let st = lstat_at(dir, c).map_err(|e| os_err(&shown(), e))?;
                    return Err(if kind(&st) == FileType::Symlink {
                        format!(
                            "its parent {} is a symlink of this layer: writing beneath it would follow it",
                            shown()
                        )
                    } else {
                        format!("its parent {} is not a directory", shown())
                    });
                }
            };
            self.cursor.push((c.to_os_string(), next));
        }
        let dir = match self.cursor.last() {
            Some((_, fd)) => fd,
            None => self.root,
        };
        rustix::io::dup(dir).map_err(|e| os_err("dup", e))
    }

    /// Removes what an entry replaces (see [`remove_all_at`]).
    fn replace(&mut self, parent: &OwnedFd, name: &OsStr) -> Result<(), String> {
        if remove_all_at(parent, name).map_err(|e| os_err("replace", e))? {
            self.cursor.clear();
        }
        Ok(())
    }

    /// Creates the directory `path` (its last component in `dir`), which the layer uses
    /// without an entry of its own: with the owner and mode it has below, refused when
    /// below it is a symlink (the entry would be written through it) or a file.
    fn implied_dir(&self, dir: &OwnedFd, path: &[&OsStr], shown: &str) -> Result<OwnedFd, String> {
        let (uid, gid, mode) = match self.lowers.lookup(path).map_err(|e| os_err(shown, e))? {
            Lookup::Missing => (0, 0, 0o755),
            Lookup::Found { stat, .. } => match kind(&stat) {
                FileType::Directory => (stat.st_uid, stat.st_gid, stat.st_mode & 0o7777),
                FileType::Symlink => {
                    return Err(format!(
                        "its parent {shown} is a symlink in a lower layer: writing beneath it would follow it"
                    ))
                }
                _ => return Err(format!("its parent {shown} is a file in a lower layer")),
            },
            Lookup::ThroughSymlink(_) => {
                return Err(format!(
                    "its parent {shown} lies beneath a symlink of a lower layer: writing there would follow it"
                ))
            }
            Lookup::ThroughFile(_) => {
                return Err(format!("its parent {shown} lies beneath a file of a lower layer"))
            }
        };
        let name = path[path.len() - 1];
        rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)).map_err(|e| os_err(shown, e))?;
        let fd = open_dir_at(dir, name).map_err(|e| os_err(shown, e))?;
        rustix::fs::fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
            .map_err(|e| os_err(&format!("chown {shown}"), e))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|e| os_err(shown, e))?;
        Ok(fd)
    }

    fn whiteout(&mut self, parents: &[&OsStr], target: &[u8]) -> Result<(), String> {
        if target == b".wh..opq" {
            let dir = self.parent(parents)?;
            for attr in [overlay::OPAQUE_TRUSTED, overlay::OPAQUE_USER] {
                rustix::fs::fsetxattr(&dir, attr, b"y", XattrFlags::empty())
                    .map_err(|e| os_err(&format!("mark the directory opaque ({attr})"), e))?;
            }
            return Ok(());
        }
        if target.starts_with(b".wh.") {
            // aufs' own bookkeeping (.wh..wh.plnk, .wh..wh.aufs): not part of the image.
            return Ok(());
        }
        match target {
            b"" => return Err("a whiteout that names nothing".into()),
            b"." | b".." => {
                return Err(format!(
                    "a whiteout naming '{}'",
                    String::from_utf8_lossy(target)
                ))
            }
            _ => {}
        }
        let dir = self.parent(parents)?;
        let name = OsStr::from_bytes(target);
        if remove_all_at(&dir, name).map_err(|e| os_err("remove what the whiteout hides", e))? {
            self.cursor.clear();
        }
        rustix::fs::mknodat(
            &dir,
            name,
            FileType::CharacterDevice,
            Mode::empty(),
            rustix::fs::makedev(0, 0),
        )
        .map_err(|e| os_err("create the whiteout", e))
    }

    fn set_meta(&self, fd: &OwnedFd, meta: &Meta) -> Result<(), String> {
        rustix::fs::fchown(
            fd,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
        )
        .map_err(|e| os_err("chown", e))?;
        // After the owner: chown clears setuid and setgid.
        rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode)).map_err(|e| os_err("chmod", e))?;
        for (name, value) in &meta.xattrs {
            match rustix::fs::fsetxattr(fd, name.as_str(), value, XattrFlags::empty()) {
                Ok(()) => {}
                // Attributes the filesystem does not take are dropped, as tar does.
                Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::PERM) => {}
                Err(e) => return Err(os_err(&format!("set the attribute {name}"), e)),
            }
        }
        Ok(())
    }

    fn directory(
        &mut self,
        parent: &OwnedFd,
        parents: &[&OsStr],
        name: &OsStr,
        meta: &Meta,
    ) -> Result<(), String> {
        let fd = match open_dir_at(parent, name) {
            Ok(fd) => fd,
            Err(_) => {
                self.replace(parent, name)?;
                rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700))
                    .map_err(|e| os_err("mkdir", e))?;
                open_dir_at(parent, name).map_err(|e| os_err("open", e))?
            }
        };
        self.set_meta(&fd, meta)?;
        let mut path = owned(parents);
        path.push(name.to_os_string());
        self.dir_times.push((path, meta.mtime));
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        parent: &OwnedFd,
        name: &OsStr,
        meta: &Meta,
        data: &mut R,
    ) -> Result<(), String> {
        self.replace(parent, name)?;
        let fd = rustix::fs::openat(
            parent,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| os_err("create", e))?;
        let mut f = std::fs::File::from(fd);
        loop {
            let n = data.read(&mut self.buf).map_err(|e| os_err("read", e))?;
            if n == 0 {
                break;
            }
            f.write_all(&self.buf[..n])
                .map_err(|e| os_err("write", e))?;
        }
        let fd = OwnedFd::from(f);
        self.set_meta(&fd, meta)?;
        rustix::fs::futimens(&fd, &timestamps(meta.mtime)).map_err(|e| os_err("set times", e))
    }

    fn symlink(
        &mut self,
        parent: &OwnedFd,
        name: &OsStr,
        target: &[u8],
        meta: &Meta,
    ) -> Result<(), String> {
        self.replace(parent, name)?;
        // The target is stored, never followed by the unpacker.
        rustix::fs::symlinkat(OsStr::from_bytes(target), parent, name)
            .map_err(|e| os_err("symlink", e))?;
        chown_at(parent, name, meta)?;
        rustix::fs::utimensat(
            parent,
            name,
            &timestamps(meta.mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| os_err("set times", e))
    }

    fn fifo(&mut self, parent: &OwnedFd, name: &OsStr, meta: &Meta) -> Result<(), String> {
        self.replace(parent, name)?;
        rustix::fs::mknodat(parent, name, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
            .map_err(|e| os_err("mkfifo", e))?;
        chown_at(parent, name, meta)?;
        rustix::fs::chmodat(
            parent,
            name,
            Mode::from_raw_mode(meta.mode),
            AtFlags::empty(),
        )
        .map_err(|e| os_err("chmod", e))
    }

    /// A hard link to `target`: a file this layer already holds, reached without a
    /// symlink; a file only a lower layer holds is copied up.
    fn hard_link(&mut self, parent: &OwnedFd, name: &OsStr, target: &[u8]) -> Result<(), String> {
        let shown = String::from_utf8_lossy(target).into_owned();
        let comps = split_path(target).map_err(|r| format!("hard link to {shown}: {r}"))?;
        let Some((tname, tparents)) = comps.split_last() else {
            return Err("a hard link to the layer's root".into());
        };
        // In this layer: walk without following.
        let mut dir = rustix::io::dup(self.root).map_err(|e| os_err("dup", e))?;
        let mut here = true;
        for (k, c) in tparents.iter().enumerate() {
            match open_dir_at(&dir, c) {
                Ok(fd) => dir = fd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    here = false;
                    break;
                }
                Err(_) => {
                    return Err(format!(
                        "hard link to {shown}: {} is a symlink or a file: links are never followed",
                        show_path(&tparents[..=k])
                    ))
                }
            }
        }
        if here {
            match lstat_at(&dir, tname) {
                Ok(st) if kind(&st) == FileType::Directory => {
                    return Err(format!("hard link to the directory {shown}"))
                }
                Ok(st) => {
                    if let Ok(mine) = lstat_at(parent, name) {
                        if mine.st_ino == st.st_ino && mine.st_dev == st.st_dev {
                            return Ok(());
                        }
                    }
                    self.replace(parent, name)?;
                    return rustix::fs::linkat(&dir, *tname, parent, name, AtFlags::empty())
                        .map_err(|e| os_err(&format!("hard link to {shown}"), e));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(os_err(&format!("hard link to {shown}"), e)),
            }
        }
        // Only below: copy the file up (a link across layers cannot be one inode).
        match self.lowers.lookup(&comps).map_err(|e| os_err(&shown, e))? {
            Lookup::Found { layer, stat } if kind(&stat) == FileType::RegularFile => {
                let mut src_dir =
                    rustix::io::dup(self.lowers.layer(layer)).map_err(|e| os_err("dup", e))?;
                for c in tparents {
                    src_dir = open_dir_at(&src_dir, c).map_err(|e| os_err(&shown, e))?;
                }
                let src = rustix::fs::openat(
                    &src_dir,
                    *tname,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| os_err(&shown, e))?;
                let meta = Meta {
                    uid: stat.st_uid,
                    gid: stat.st_gid,
                    mode: stat.st_mode & 0o7777,
                    mtime: u64::try_from(stat.st_mtime).unwrap_or(0),
                    xattrs: Vec::new(),
                };
                self.file(parent, name, &meta, &mut std::fs::File::from(src))
            }
            Lookup::Found { .. } => Err(format!(
                "hard link to {shown}, which a lower layer holds as a directory or a special file"
            )),
            Lookup::ThroughSymlink(_) => Err(format!(
                "hard link to {shown}, reached through a symlink of a lower layer: links are never followed"
            )),
            Lookup::Missing | Lookup::ThroughFile(_) => {
                Err(format!("hard link to {shown}, which no layer holds"))
            }
        }
    }

    /// Sets the directories' times last (their contents changed them), deepest first.
    fn restore_dir_times(&mut self) -> Result<(), EntryError> {
        // Setting a directory's times changes no other directory's: in path order, each
        // walk shares its prefix with the last.
        let mut times = std::mem::take(&mut self.dir_times);
        times.sort();
        let mut open: Vec<(OsString, OwnedFd)> = Vec::new();
        for (path, mtime) in times {
            let shared = open
                .iter()
                .zip(&path)
                .take_while(|((a, _), b)| a == *b)
                .count();
            open.truncate(shared);
            let mut found = true;
            for c in &path[shared..] {
                let dir = open.last().map(|(_, fd)| fd).unwrap_or(self.root);
                match open_dir_at(dir, c) {
                    Ok(fd) => open.push((c.clone(), fd)),
                    // Replaced by a later entry: its own times stand.
                    Err(_) => {
                        found = false;
                        break;
                    }
                }
            }
            if found {
                let dir = open.last().map(|(_, fd)| fd).unwrap_or(self.root);
                let _ = rustix::fs::futimens(dir.as_fd(), &timestamps(mtime));
            }
        }
        Ok(())
    }
}
