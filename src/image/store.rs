//! The store on disk, under one directory (`/var/lib/haconiwa/images` by default):
//!
//! ```text
//! blobs/sha256/<hex>      verified content: indexes, manifests, configurations, layer archives
//! ingest/<hex>            a download under way (resumed from its length)
//! layers/<chain id hex>/  one unpacked layer: diff/ (the tree), layer.json
//! l/<short>               -> ../layers/<chain id hex>/diff: short lower-dir names
//! images/<manifest hex>.json  an image: its manifest, configuration, layers
//! refs.json               names (canonical references) -> manifest digest
//! leases/<key>.json       a container using an image's layers (until it ends)
//! tmp/                    layers being unpacked (renamed into layers/ when whole)
//! locks/                  one lock per blob and per layer being made
//! lock, refs.lock         the store's locks
//! ```
//!
//! Nothing half-made is ever visible: a blob is renamed into `blobs/` once its digest and
//! size match, a layer into `layers/` once every entry is applied and its diff_id
//! matches, an image's record is written last. An install holds `lock` shared (installs
//! run side by side; the per-blob and per-layer locks make concurrent pulls of one image
//! do the work once); `rm` and `prune` hold it exclusively, so they never take what an
//! install is still assembling.

use super::digest::Digest;
use super::{io_err, ImageError};
use crate::spec::ImageRef;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// One layer of an image, as its record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    /// The blob (compressed archive) digest.
    pub blob: Digest,
    /// Its media type as the manifest gives it.
    pub media_type: String,
    /// The blob's size in bytes.
    pub size: u64,
    /// The digest of the uncompressed tar (the configuration's diff_id).
    pub diff_id: Digest,
    /// The chain id: this layer on top of the ones below it (its directory's name).
    pub chain_id: Digest,
}

/// An image in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The manifest's digest: the image's identity here.
    pub manifest: Digest,
    /// The index it was chosen from, if it came from one.
    #[serde(default)]
    pub index: Option<Digest>,
    /// The configuration blob.
    pub config: Digest,
    /// Layers, base first.
    pub layers: Vec<LayerRef>,
    /// `os/arch[/variant]`.
    pub platform: String,
    /// When the store got it (seconds since the epoch).
    pub stored_at: u64,
}

/// What `layers/<chain>/layer.json` says.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LayerMeta {
    chain_id: Digest,
    diff_id: Digest,
    /// The short name under `l/`.
    link: String,
    /// Bytes its files take (apparent sizes).
    size: u64,
}

/// An image as `image ls` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ImageSummary {
    /// Short id (first 12 hex digits of the manifest digest).
    pub id: String,
    /// The manifest digest.
    pub digest: Digest,
    /// Names pointing at it.
    pub names: Vec<String>,
    /// `os/arch`.
    pub platform: String,
    /// Layers.
    pub layers: usize,
    /// Bytes of its unpacked layers (shared layers counted in every image).
    pub size: u64,
    /// When the store got it.
    pub stored_at: u64,
}

/// A held `flock`, released when dropped.
pub struct Lock(#[allow(dead_code)] nix::fcntl::Flock<fs::File>);

/// The image store at a directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// Names → manifest digest.
type Refs = BTreeMap<String, Digest>;

/// Seconds since the epoch (when an image was stored).
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

/// Bytes the files under `p` take (apparent sizes; hard links counted once per name).
pub fn tree_size(p: &Path) -> u64 {
    let Ok(md) = fs::symlink_metadata(p) else {
        return 0;
    };
    if !md.is_dir() {
        return md.len();
    }
    let mut total = 0;
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            total += tree_size(&e.path());
        }
    }
    total
}

/// Removes a tree that may hold directories without write permission for their owner
/// (an image's `0555` directories): permissions are opened on the way down.
pub fn remove_tree(p: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            fn open_up(p: &Path) {
                if let Ok(md) = fs::symlink_metadata(p) {
                    if md.is_dir() {
                        let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o700));
                        if let Ok(rd) = fs::read_dir(p) {
                            for e in rd.flatten() {
                                open_up(&e.path());
                            }
                        }
                    }
                }
            }
            open_up(p);
            fs::remove_dir_all(p)
        }
    }
}

impl Store {
    /// Opens (creating when missing) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, ImageError> {
        let store = Store { root: root.into() };
        if store.root.join("tmp").is_dir() {
            return Ok(store);
        }
        // The store and its layers can be passed through by a container's root in a user
        // namespace (it mounts them), not listed; the rest is root's alone.
        use std::os::unix::fs::PermissionsExt;
        for (d, mode) in [
            ("", 0o711),
            ("layers", 0o711),
            ("l", 0o711),
            ("blobs", 0o700),
            ("blobs/sha256", 0o700),
            ("ingest", 0o700),
            ("images", 0o700),
            ("leases", 0o700),
            ("locks", 0o700),
            // Last: its presence says the store is made.
            ("tmp", 0o700),
        ] {
            let p = store.root.join(d);
            fs::create_dir_all(&p)
                .and_then(|()| fs::set_permissions(&p, fs::Permissions::from_mode(mode)))
                .map_err(io_err(format!("create {}", p.display())))?;
        }
        Ok(store)
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock_file(&self, path: &Path, exclusive: bool) -> Result<Lock, ImageError> {
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_err(format!("open the lock {}", path.display())))?;
        let arg = if exclusive {
            nix::fcntl::FlockArg::LockExclusive
        } else {
            nix::fcntl::FlockArg::LockShared
        };
        nix::fcntl::Flock::lock(f, arg)
            .map(Lock)
            .map_err(|(_, e)| io_err(format!("take the lock {}", path.display()))(e.into()))
    }

    /// Held by an install for its whole duration (installs run side by side).
    pub fn install_lock(&self) -> Result<Lock, ImageError> {
        self.lock_file(&self.root.join("lock"), false)
    }

    /// Held by removals and prune: waits for installs to finish, keeps new ones out.
    pub fn collect_lock(&self) -> Result<Lock, ImageError> {
        self.lock_file(&self.root.join("lock"), true)
    }

    pub(super) fn refs_lock(&self) -> Result<Lock, ImageError> {
        self.lock_file(&self.root.join("refs.lock"), true)
    }

    /// The lock under which one blob is fetched or one layer made.
    pub fn work_lock(&self, what: &str, d: &Digest) -> Result<Lock, ImageError> {
        self.lock_file(
            &self.root.join("locks").join(format!("{what}-{}", d.hex())),
            true,
        )
    }

    // ----- blobs -----

    /// Where a verified blob lives.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    /// Whether the store holds this blob.
    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Reads a blob of at most `limit` bytes.
    pub fn read_blob(&self, d: &Digest, limit: u64) -> Result<Vec<u8>, ImageError> {
        let p = self.blob_path(d);
        let f = fs::File::open(&p).map_err(io_err(format!("read blob {d}")))?;
        let mut out = Vec::new();
        f.take(limit + 1)
            .read_to_end(&mut out)
            .map_err(io_err(format!("read blob {d}")))?;
        if out.len() as u64 > limit {
            return Err(ImageError::Invalid(format!(
                "blob {d} is over {limit} bytes"
            )));
        }
        Ok(out)
    }

    /// Stores bytes already in memory (a manifest, a configuration) under their digest,
    /// which must be `expected` when given. Returns the digest.
    pub fn put_blob(&self, bytes: &[u8], expected: Option<&Digest>) -> Result<Digest, ImageError> {
        let d = Digest::of(bytes);
        if let Some(e) = expected {
            if *e != d {
                return Err(ImageError::Invalid(format!(
                    "content of {e} has the digest {d}"
                )));
            }
        }
        let p = self.blob_path(&d);
        if !p.is_file() {
            write_atomic(&p, bytes).map_err(io_err(format!("write blob {d}")))?;
        }
        Ok(d)
    }

    // ----- layers -----

    /// The directory of a layer by chain id.
    pub fn layer_dir(&self, chain: &Digest) -> PathBuf {
        self.root.join("layers").join(chain.hex())
    }

    /// Whether the layer is unpacked.
    pub fn has_layer(&self, chain: &Digest) -> bool {
        self.layer_dir(chain).join("layer.json").is_file()
    }

    /// The `diff/` directories of these layers (chain ids), in the given order.
    pub fn layer_diffs(&self, chains: &[&Digest]) -> Vec<PathBuf> {
        chains
            .iter()
            .map(|c| self.layer_dir(c).join("diff"))
            .collect()
    }

    /// A fresh directory to unpack a layer into (`tmp/<chain>-<pid>-<n>/diff`).
    pub fn layer_workspace(&self, chain: &Digest) -> Result<PathBuf, ImageError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = self.root.join("tmp").join(format!(
            "{}-{}-{}",
            chain.short(),
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = remove_tree(&dir);
        fs::create_dir_all(dir.join("diff"))
            .map_err(io_err(format!("create {}", dir.display())))?;
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(dir.join("diff"), fs::Permissions::from_mode(0o755));
        Ok(dir)
    }

    /// Makes a finished workspace the layer `chain` (rename, then its short name).
    pub fn commit_layer(
        &self,
        workspace: &Path,
        chain: &Digest,
        diff_id: &Digest,
    ) -> Result<(), ImageError> {
        let size = tree_size(&workspace.join("diff"));
        let link = self.free_link_name(chain)?;
        let meta = LayerMeta {
            chain_id: chain.clone(),
            diff_id: diff_id.clone(),
            link: link.clone(),
            size,
        };
        let text =
            serde_json::to_vec_pretty(&meta).map_err(|e| ImageError::Invalid(e.to_string()))?;
        fs::write(workspace.join("layer.json"), text).map_err(io_err("write layer.json"))?;
        let dir = self.layer_dir(chain);
        let _ = remove_tree(&dir);
        fs::rename(workspace, &dir)
            .map_err(io_err(format!("move the layer to {}", dir.display())))?;
        let l = self.root.join("l").join(&link);
        let _ = fs::remove_file(&l);
        std::os::unix::fs::symlink(format!("../layers/{}/diff", chain.hex()), &l)
            .map_err(io_err(format!("link {}", l.display())))?;
        Ok(())
    }

    /// A short name under `l/` for the layer: its chain id's first 12 hex digits, longer
    /// when another layer holds those.
    fn free_link_name(&self, chain: &Digest) -> Result<String, ImageError> {
        let want = format!("../layers/{}/diff", chain.hex());
        for len in [12usize, 20, 32, 64] {
            let name = chain.hex()[..len].to_string();
            match fs::read_link(self.root.join("l").join(&name)) {
                Err(_) => return Ok(name),
                Ok(t) if t == Path::new(&want) => return Ok(name),
                Ok(t) => {
                    // A link whose layer is gone is free again.
                    if !self.root.join("l").join(&t).exists() {
                        return Ok(name);
                    }
                }
            }
        }
        Err(ImageError::Invalid(format!(
            "no free short name for layer {chain}"
        )))
    }

    /// The lower-dir name (`l/<short>`) of an unpacked layer.
    pub fn layer_link(&self, chain: &Digest) -> Result<String, ImageError> {
        let p = self.layer_dir(chain).join("layer.json");
        let text = fs::read(&p).map_err(io_err(format!("read {}", p.display())))?;
        let meta: LayerMeta = serde_json::from_slice(&text)
            .map_err(|e| ImageError::Invalid(format!("{}: {e}", p.display())))?;
        Ok(format!("l/{}", meta.link))
    }

    /// The empty layer an image without layers mounts (overlayfs needs one lower dir).
    pub fn empty_layer(&self) -> Result<String, ImageError> {
        let dir = self.root.join("layers/empty/diff");
        fs::create_dir_all(&dir).map_err(io_err(format!("create {}", dir.display())))?;
        let l = self.root.join("l/empty");
        if fs::read_link(&l).is_err() {
            let _ = fs::remove_file(&l);
            std::os::unix::fs::symlink("../layers/empty/diff", &l)
                .map_err(io_err(format!("link {}", l.display())))?;
        }
        Ok("l/empty".into())
    }

    // ----- images and names -----

    pub(super) fn refs(&self) -> Result<Refs, ImageError> {
        let p = self.root.join("refs.json");
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| ImageError::Invalid(format!("{}: {e}", p.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Refs::new()),
            Err(e) => Err(io_err(format!("read {}", p.display()))(e)),
        }
    }

    pub(super) fn write_refs(&self, refs: &Refs) -> Result<(), ImageError> {
        let text =
            serde_json::to_vec_pretty(refs).map_err(|e| ImageError::Invalid(e.to_string()))?;
        write_atomic(&self.root.join("refs.json"), &text).map_err(io_err("write refs.json"))
    }

    pub(super) fn record_path(&self, manifest: &Digest) -> PathBuf {
        self.root
            .join("images")
            .join(format!("{}.json", manifest.hex()))
    }

    /// Reads an image's record.
    pub fn record(&self, manifest: &Digest) -> Result<Option<ImageRecord>, ImageError> {
        let p = self.record_path(manifest);
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| ImageError::Invalid(format!("{}: {e}", p.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(format!("read {}", p.display()))(e)),
        }
    }

    /// Every image record.
    pub fn records(&self) -> Result<Vec<ImageRecord>, ImageError> {
        let mut out = Vec::new();
        let dir = self.root.join("images");
        let rd = fs::read_dir(&dir).map_err(io_err(format!("read {}", dir.display())))?;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(hex) = name.strip_suffix(".json") else {
                continue;
            };
            if let Ok(d) = Digest::parse(&format!("sha256:{hex}")) {
                if let Some(r) = self.record(&d)? {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    /// Records an image (its blobs and layers already in place) and points `names` at it.
    pub fn commit_image(&self, record: &ImageRecord, names: &[String]) -> Result<(), ImageError> {
        let _refs = self.refs_lock()?;
        let text =
            serde_json::to_vec_pretty(record).map_err(|e| ImageError::Invalid(e.to_string()))?;
        write_atomic(&self.record_path(&record.manifest), &text)
            .map_err(io_err("write the image record"))?;
        let mut refs = self.refs()?;
        for n in names {
            refs.insert(n.clone(), record.manifest.clone());
        }
        self.write_refs(&refs)
    }

    /// The image a reference (or a manifest digest, or its first 12+ hex digits) names.
    pub fn find(&self, reference: &str) -> Result<ImageRecord, ImageError> {
        let refs = self.refs()?;
        let by_digest = |d: &Digest| -> Result<Option<ImageRecord>, ImageError> {
            if let Some(r) = self.record(d)? {
                return Ok(Some(r));
            }
            // An index digest names the image chosen from it.
            Ok(self
                .records()?
                .into_iter()
                .find(|r| r.index.as_ref() == Some(d)))
        };
        if let Ok(d) = Digest::parse(reference) {
            return by_digest(&d)?.ok_or_else(|| ImageError::NotFound(reference.into()));
        }
        if reference.len() >= 12 && reference.bytes().all(|b| b.is_ascii_hexdigit()) {
            let matches: Vec<ImageRecord> = self
                .records()?
                .into_iter()
                .filter(|r| r.manifest.hex().starts_with(reference))
                .collect();
            match matches.len() {
                1 => return Ok(matches.into_iter().next().expect("one")),
                0 => {}
                _ => {
                    return Err(ImageError::Invalid(format!(
                        "{reference} names more than one image; give more digits"
                    )))
                }
            }
        }
        let r = ImageRef::parse(reference).map_err(|e| ImageError::Invalid(e.to_string()))?;
        if let Some(d) = &r.digest {
            let d = Digest::parse(d).map_err(ImageError::Invalid)?;
            return by_digest(&d)?.ok_or_else(|| ImageError::NotFound(r.to_string()));
        }
        let key = r.to_string();
        match refs.get(&key) {
            Some(d) => self
                .record(d)?
                .ok_or_else(|| ImageError::NotFound(key.clone())),
            None => Err(ImageError::NotFound(key)),
        }
    }

    /// The names pointing at each manifest.
    fn names_by_manifest(&self) -> Result<BTreeMap<Digest, Vec<String>>, ImageError> {
        let mut out: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
        for (name, d) in self.refs()? {
            out.entry(d).or_default().push(name);
        }
        Ok(out)
    }

    fn layer_size(&self, chain: &Digest) -> u64 {
        fs::read(self.layer_dir(chain).join("layer.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<LayerMeta>(&b).ok())
            .map(|m| m.size)
            .unwrap_or(0)
    }

    /// Every image, newest first.
    pub fn list(&self) -> Result<Vec<ImageSummary>, ImageError> {
        let names = self.names_by_manifest()?;
        let mut out: Vec<ImageSummary> = self
            .records()?
            .into_iter()
            .map(|r| ImageSummary {
                id: r.manifest.short().to_string(),
                names: names.get(&r.manifest).cloned().unwrap_or_default(),
                platform: r.platform.clone(),
                layers: r.layers.len(),
                size: r.layers.iter().map(|l| self.layer_size(&l.chain_id)).sum(),
                stored_at: r.stored_at,
                digest: r.manifest,
            })
            .collect();
        out.sort_by(|a, b| b.stored_at.cmp(&a.stored_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// The names pointing at an image.
    pub fn names_of(&self, manifest: &Digest) -> Result<Vec<String>, ImageError> {
        Ok(self
            .names_by_manifest()?
            .remove(manifest)
            .unwrap_or_default())
    }
}
