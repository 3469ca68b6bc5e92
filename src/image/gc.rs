//! Removing images: a name, an image with its last name, what nothing uses any more
//! (`prune`), what a refused install made (`discard`); and the leases by which running
//! containers keep their image's layers from all of it.

use super::digest::Digest;
use super::store::{remove_tree, tree_size, Store};
use super::{io_err, ImageError};
use crate::spec::ImageRef;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// What `image prune` (or a removal) freed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Freed {
    /// Images removed.
    pub images: Vec<String>,
    /// Layer directories removed.
    pub layers: usize,
    /// Blobs removed.
    pub blobs: usize,
    /// Bytes freed (layers' files and blobs).
    pub bytes: u64,
}

/// A container using an image's layers: written before it starts, removed when it ends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lease {
    /// The container's state directory (`…/containers/<name>`).
    pub container_dir: PathBuf,
    /// The image, pinned.
    pub image: String,
    /// Its manifest digest.
    pub manifest: Digest,
    /// The lower-dir names it mounts.
    pub layers: Vec<String>,
}

impl Store {
    // ----- containers using images -----

    fn lease_path(&self, container_dir: &Path) -> PathBuf {
        let key = Digest::of(container_dir.as_os_str().as_encoded_bytes());
        self.root()
            .join("leases")
            .join(format!("{}.json", &key.hex()[..32]))
    }

    /// Records that the container at `container_dir` uses these layers (before it
    /// starts; a prune then keeps them).
    pub fn take_lease(&self, lease: &Lease) -> Result<(), ImageError> {
        let text = serde_json::to_vec(lease).map_err(|e| ImageError::Invalid(e.to_string()))?;
        // Not synced: after a crash a lost lease only lets a prune take layers that no
        // container runs on any more (its processes are gone with the crash).
        let path = self.lease_path(&lease.container_dir);
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, &text)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(io_err("write the container's lease"))
    }

    /// The container at `container_dir` no longer uses its image.
    pub fn drop_lease(&self, container_dir: &Path) {
        let _ = fs::remove_file(self.lease_path(container_dir));
    }

    /// Leases of containers that still exist (not exited); stale ones are removed.
    fn live_leases(&self) -> Vec<Lease> {
        let mut out = Vec::new();
        let Ok(rd) = fs::read_dir(self.root().join("leases")) else {
            return out;
        };
        for e in rd.flatten() {
            let lease = fs::read(e.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<Lease>(&b).ok());
            let live = lease.as_ref().is_some_and(|l| {
                let state = fs::read(l.container_dir.join("state.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
                match state {
                    Some(s) => s["status"] != "exited",
                    // Being created: its directory exists before its state.
                    None => l.container_dir.is_dir(),
                }
            });
            match (live, lease) {
                (true, Some(l)) => out.push(l),
                _ => {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        out
    }

    // ----- removal -----

    /// Removes a name; the image goes too when no other name and no container uses it
    /// (with `force`, only the name goes while containers use it). Returns what was
    /// freed.
    pub fn remove(&self, reference: &str, force: bool) -> Result<Freed, ImageError> {
        let _collect = self.collect_lock()?;
        let record = self.find(reference)?;
        let users: Vec<Lease> = self
            .live_leases()
            .into_iter()
            .filter(|l| l.manifest == record.manifest)
            .collect();
        if let (Some(u), false) = (users.first(), force) {
            return Err(ImageError::InUse {
                image: reference.to_string(),
                container: u
                    .container_dir
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default(),
            });
        }
        {
            let _refs = self.refs_lock()?;
            let mut refs = self.refs()?;
            let named = ImageRef::parse(reference).ok().map(|r| r.to_string());
            let before = refs.len();
            match named.filter(|n| refs.get(n) == Some(&record.manifest)) {
                Some(n) => {
                    refs.remove(&n);
                }
                // Named by digest or id: every name of it goes.
                None => refs.retain(|_, d| *d != record.manifest),
            }
            if refs.len() != before {
                self.write_refs(&refs)?;
            }
            if refs.values().any(|d| *d == record.manifest) || !users.is_empty() {
                return Ok(Freed::default());
            }
            fs::remove_file(self.record_path(&record.manifest))
                .map_err(io_err("remove the image record"))?;
        }
        let mut freed = self.collect_unused()?;
        freed.images.push(record.manifest.to_string());
        Ok(freed)
    }

    /// Removes images without a name that no container uses, then every layer and blob
    /// no image and no container uses, downloads and unpacks that were abandoned.
    pub fn prune(&self) -> Result<Freed, ImageError> {
        let _collect = self.collect_lock()?;
        let mut gone = Vec::new();
        {
            let _refs = self.refs_lock()?;
            let named: BTreeSet<Digest> = self.refs()?.into_values().collect();
            let used: BTreeSet<Digest> =
                self.live_leases().into_iter().map(|l| l.manifest).collect();
            for r in self.records()? {
                if !named.contains(&r.manifest) && !used.contains(&r.manifest) {
                    fs::remove_file(self.record_path(&r.manifest))
                        .map_err(io_err("remove an image record"))?;
                    gone.push(r.manifest.to_string());
                }
            }
        }
        let mut freed = self.collect_unused()?;
        freed.images = gone;
        Ok(freed)
    }

    /// Removes what no image record and no live container lease keeps. Call with the
    /// collect lock held (no install is under way).
    fn collect_unused(&self) -> Result<Freed, ImageError> {
        let mut freed = Freed::default();
        let records = self.records()?;
        let mut keep_blobs: BTreeSet<String> = BTreeSet::new();
        let mut keep_layers: BTreeSet<String> = BTreeSet::new();
        for r in &records {
            keep_blobs.insert(r.manifest.hex().to_string());
            keep_blobs.insert(r.config.hex().to_string());
            if let Some(i) = &r.index {
                keep_blobs.insert(i.hex().to_string());
            }
            for l in &r.layers {
                keep_blobs.insert(l.blob.hex().to_string());
                keep_layers.insert(l.chain_id.hex().to_string());
            }
        }
        for lease in self.live_leases() {
            for link in &lease.layers {
                if let Ok(t) = fs::read_link(self.root().join(link)) {
                    // ../layers/<hex>/diff
                    if let Some(hex) = t.parent().and_then(|p| p.file_name()) {
                        keep_layers.insert(hex.to_string_lossy().to_string());
                    }
                }
            }
        }
        keep_layers.insert("empty".into());
        let layers = self.root().join("layers");
        for e in fs::read_dir(&layers)
            .map_err(io_err("read layers/"))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().to_string();
            if !keep_layers.contains(&name) {
                freed.bytes += tree_size(&e.path());
                remove_tree(&e.path()).map_err(io_err(format!("remove layer {name}")))?;
                freed.layers += 1;
            }
        }
        // Short names whose layer is gone.
        for e in fs::read_dir(self.root().join("l"))
            .map_err(io_err("read l/"))?
            .flatten()
        {
            if !e.path().exists() {
                let _ = fs::remove_file(e.path());
            }
        }
        let blobs = self.root().join("blobs/sha256");
        for e in fs::read_dir(&blobs)
            .map_err(io_err("read blobs/"))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().to_string();
            if !keep_blobs.contains(&name) {
                freed.bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(e.path()).map_err(io_err(format!("remove blob {name}")))?;
                freed.blobs += 1;
            }
        }
        // No install runs (the collect lock): what is in ingest/ and tmp/ was abandoned.
        for dir in ["ingest", "tmp", "locks"] {
            let p = self.root().join(dir);
            if let Ok(rd) = fs::read_dir(&p) {
                for e in rd.flatten() {
                    freed.bytes += tree_size(&e.path());
                    let _ = remove_tree(&e.path()).or_else(|_| fs::remove_file(e.path()));
                }
            }
        }
        Ok(freed)
    }

    /// Removes blobs and layers an install made (`blobs`, `layers`) that no image
    /// record uses: a refused image leaves nothing behind. Call with the install lock.
    pub fn discard(&self, blobs: &[Digest], layers: &[Digest]) {
        let records = self.records().unwrap_or_default();
        let used_blob = |d: &Digest| {
            records.iter().any(|r| {
                r.manifest == *d
                    || r.config == *d
                    || r.index.as_ref() == Some(d)
                    || r.layers.iter().any(|l| l.blob == *d)
            })
        };
        let used_layer = |c: &Digest| {
            records
                .iter()
                .any(|r| r.layers.iter().any(|l| l.chain_id == *c))
        };
        for d in blobs.iter().filter(|d| !used_blob(d)) {
            let _ = fs::remove_file(self.blob_path(d));
            let _ = fs::remove_file(self.root().join("ingest").join(d.hex()));
        }
        for c in layers.iter().filter(|c| !used_layer(c)) {
            if let Ok(link) = self.layer_link(c) {
                let _ = fs::remove_file(self.root().join(link));
            }
            let _ = remove_tree(&self.layer_dir(c));
        }
    }
}
