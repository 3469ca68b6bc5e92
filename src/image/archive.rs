//! Images from files: an OCI image layout directory, an `oci-archive` (that layout as a
//! tar), and a `docker save` tarball in both of its forms: the OCI one (Docker 25 and
//! later: a layout plus `manifest.json`) and the older one (`manifest.json`, a
//! `<id>/layer.tar` per layer, the configuration as `<hex>.json`), for which the manifest
//! is made here. Each becomes a [`Fetcher`], so an import is checked exactly as a pull
//! is. A tarball is read in place: its entries are indexed once and read by offset
//! (compressed ones are first decompressed into the store's `tmp/`); nothing of it is
//! unpacked onto the filesystem.

use super::digest::{Digest, HashingReader};
use super::ingest::Ingest;
use super::install::{BoxFuture, FetchError, Fetched, Fetcher, MANIFEST_LIMIT};
use super::store::Store;
use super::unpack::Compression;
use super::ImageError;
use crate::spec::ImageRef;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a tarball entry's bytes are.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A regular file: its data's offset in the tar and its size.
    File {
        /// Offset of the data.
        offset: u64,
        /// Bytes.
        size: u64,
    },
    /// A symlink (target relative to its directory) or a hard link (target from the
    /// archive's root), already made a path from the root.
    Link(String),
}

/// The files of an image archive or layout.
pub enum Bundle {
    /// A layout directory.
    Dir(PathBuf),
    /// A plain tar, read in place.
    Tar {
        /// The tar file (the original, or its decompressed copy).
        file: PathBuf,
        /// Its entries by normalized path.
        entries: HashMap<String, Entry>,
        /// A decompressed copy to remove when done.
        temp: Option<PathBuf>,
    },
}

impl Drop for Bundle {
    fn drop(&mut self) {
        if let Bundle::Tar { temp: Some(t), .. } = self {
            let _ = std::fs::remove_file(t);
        }
    }
}

/// `a/./b/` → `a/b`; `..` goes up (never above the root).
fn normalize(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

fn bad(path: &Path, what: impl std::fmt::Display) -> ImageError {
    ImageError::Invalid(format!("{}: {what}", path.display()))
}

impl Bundle {
    /// Opens a layout directory or an archive (plain, gzip or zstd).
    pub fn open(path: &Path, store: &Store) -> Result<Bundle, ImageError> {
        let md = std::fs::metadata(path).map_err(|e| bad(path, e))?;
        if md.is_dir() {
            return Ok(Bundle::Dir(path.to_path_buf()));
        }
        let mut r = BufReader::new(File::open(path).map_err(|e| bad(path, e))?);
        let (file, temp) = match Compression::detect(&mut r).map_err(|e| bad(path, e))? {
            Compression::None => (path.to_path_buf(), None),
            c => {
                let tmp = store
                    .root()
                    .join("tmp")
                    .join(format!("import-{}.tar", std::process::id()));
                let mut out = File::create(&tmp).map_err(|e| bad(&tmp, e))?;
                let mut dec: Box<dyn Read> = match c {
                    Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
                    _ => Box::new(
                        zstd::stream::read::Decoder::with_buffer(r).map_err(|e| bad(path, e))?,
                    ),
                };
                if let Err(e) = io::copy(&mut dec, &mut out) {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(bad(path, format!("decompress: {e}")));
                }
                (tmp.clone(), Some(tmp))
            }
        };
        let mut entries = HashMap::new();
        let index = (|| -> io::Result<()> {
            let mut archive = tar::Archive::new(File::open(&file)?);
            for e in archive.entries()? {
                let e = e?;
                let raw = String::from_utf8_lossy(&e.path_bytes()).into_owned();
                let name = normalize(&raw);
                let kind = e.header().entry_type();
                let entry = match kind {
                    tar::EntryType::Regular | tar::EntryType::Continuous => Entry::File {
                        offset: e.raw_file_position(),
                        size: e.size(),
                    },
                    tar::EntryType::Symlink | tar::EntryType::Link => {
                        let t = e
                            .link_name_bytes()
                            .map(|b| String::from_utf8_lossy(&b).into_owned())
                            .unwrap_or_default();
                        let from_root = if kind == tar::EntryType::Symlink && !t.starts_with('/') {
                            let dir = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                            normalize(&format!("{dir}/{t}"))
                        } else {
                            normalize(&t)
                        };
                        Entry::Link(from_root)
                    }
                    _ => continue,
                };
                entries.insert(name, entry);
            }
            Ok(())
        })();
        let bundle = Bundle::Tar {
            file: file.clone(),
            entries,
            temp,
        };
        index.map_err(|e| bad(path, format!("read the archive: {e}")))?;
        Ok(bundle)
    }

    /// Whether the bundle has a file.
    pub fn has(&self, name: &str) -> bool {
        self.reader(name).is_ok()
    }

    /// A reader of one file and its size.
    pub fn reader(&self, name: &str) -> io::Result<(Box<dyn Read + Send>, u64)> {
        match self {
            Bundle::Dir(d) => {
                let f = File::open(d.join(name)).map_err(|e| match e.kind() {
                    io::ErrorKind::NotFound => {
                        io::Error::new(e.kind(), format!("{name}: not in the layout"))
                    }
                    _ => e,
                })?;
                let len = f.metadata()?.len();
                Ok((Box::new(f), len))
            }
            Bundle::Tar { file, entries, .. } => {
                let mut key = normalize(name);
                for _ in 0..8 {
                    match entries.get(&key) {
                        Some(Entry::File { offset, size }) => {
                            let mut f = File::open(file)?;
                            f.seek(SeekFrom::Start(*offset))?;
                            return Ok((Box::new(f.take(*size)), *size));
                        }
                        Some(Entry::Link(t)) => key = t.clone(),
                        None => break,
                    }
                }
                Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{name}: not in the archive"),
                ))
            }
        }
    }

    /// Reads a whole (small) file.
    pub fn read(&self, name: &str, limit: u64) -> io::Result<Vec<u8>> {
        let (r, len) = self.reader(name)?;
        if len > limit {
            return Err(io::Error::other(format!("{name} is over {limit} bytes")));
        }
        let mut out = Vec::new();
        r.take(limit).read_to_end(&mut out)?;
        Ok(out)
    }
}

/// One image an archive holds.
#[derive(Debug, Clone)]
pub struct Item {
    /// The manifest (or index) digest to install.
    pub target: Digest,
    /// Names it carries (canonical references).
    pub names: Vec<String>,
}

/// A bundle as a source: blobs by digest, the manifests made for the old `docker save`
/// form.
pub struct BundleFetcher {
    bundle: Bundle,
    shown: String,
    /// Made-up manifests (old docker form): digest → bytes.
    made: HashMap<Digest, Vec<u8>>,
    /// Blobs that live elsewhere than `blobs/sha256/<hex>` (old docker form).
    paths: HashMap<Digest, String>,
}

/// The older `docker save` manifest.json.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn canonical_names(candidates: &[String]) -> Vec<String> {
    candidates
        .iter()
        .filter_map(|n| ImageRef::parse(n).ok())
        // A bare tag ("latest") parses as docker.io/library/latest: not a name.
        .filter(|r| r.digest.is_none())
        .map(|r| r.to_string())
        .collect()
}

/// Reads what an archive or layout holds: the fetcher and the images in it.
pub fn plan(
    path: &Path,
    store: &Store,
    name: Option<&str>,
) -> Result<(Arc<BundleFetcher>, Vec<Item>), ImageError> {
    let bundle = Bundle::open(path, store)?;
    let mut fetcher = BundleFetcher {
        bundle,
        shown: path.display().to_string(),
        made: HashMap::new(),
        paths: HashMap::new(),
    };
    let mut items = Vec::new();
    if fetcher.bundle.has("index.json") {
        let bytes = fetcher
            .bundle
            .read("index.json", MANIFEST_LIMIT)
            .map_err(|e| bad(path, e))?;
        let idx = oci_spec::image::ImageIndex::from_reader(&bytes[..])
            .map_err(|e| bad(path, format!("index.json: {e}")))?;
        for m in idx.manifests() {
            let target = Digest::try_from(m.digest()).map_err(|e| bad(path, e))?;
            let ann = m.annotations().clone().unwrap_or_default();
            let mut candidates = Vec::new();
            for key in [
                "io.containerd.image.name",
                "org.opencontainers.image.ref.name",
            ] {
                if let Some(v) = ann.get(key) {
                    // ref.name may be a whole reference or only its tag.
                    if v.contains('/') || v.contains(':') {
                        candidates.push(v.clone());
                    }
                }
            }
            items.push(Item {
                target,
                names: canonical_names(&candidates),
            });
        }
    } else if fetcher.bundle.has("manifest.json") {
        let bytes = fetcher
            .bundle
            .read("manifest.json", MANIFEST_LIMIT)
            .map_err(|e| bad(path, e))?;
        let list: Vec<DockerManifest> =
            serde_json::from_slice(&bytes).map_err(|e| bad(path, format!("manifest.json: {e}")))?;
        for m in list {
            let config = fetcher
                .bundle
                .read(&m.config, super::install::CONFIG_LIMIT)
                .map_err(|e| bad(path, format!("{}: {e}", m.config)))?;
            let config_digest = Digest::of(&config);
            fetcher
                .paths
                .insert(config_digest.clone(), m.config.clone());
            let mut layers = Vec::new();
            for l in &m.layers {
                let (r, size) = fetcher
                    .bundle
                    .reader(l)
                    .map_err(|e| bad(path, format!("{l}: {e}")))?;
                let (digest, _) = HashingReader::new(r)
                    .finish()
                    .map_err(|e| bad(path, format!("{l}: {e}")))?;
                fetcher.paths.insert(digest.clone(), l.clone());
                layers.push(serde_json::json!({
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar",
                    "size": size,
                    "digest": digest.as_str(),
                }));
            }
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {
                    "mediaType": "application/vnd.docker.container.image.v1+json",
                    "size": config.len(),
                    "digest": config_digest.as_str(),
                },
                "layers": layers,
            });
            let bytes = serde_json::to_vec(&manifest).map_err(|e| bad(path, e))?;
            let target = Digest::of(&bytes);
            fetcher.made.insert(target.clone(), bytes);
            items.push(Item {
                target,
                names: canonical_names(&m.repo_tags.unwrap_or_default()),
            });
        }
    } else {
        return Err(bad(
            path,
            "neither an OCI layout (index.json) nor a docker save archive (manifest.json)",
        ));
    }
    if let Some(n) = name {
        let r = ImageRef::parse(n).map_err(|e| ImageError::Invalid(e.to_string()))?;
        if items.len() != 1 {
            return Err(bad(
                path,
                format!(
                    "--name needs an archive of one image; this one holds {}",
                    items.len()
                ),
            ));
        }
        items[0].names = vec![r.to_string()];
    }
    if items.is_empty() {
        return Err(bad(path, "it holds no image"));
    }
    Ok((Arc::new(fetcher), items))
}

impl BundleFetcher {
    fn path_of(&self, d: &Digest) -> String {
        self.paths
            .get(d)
            .cloned()
            .unwrap_or_else(|| format!("blobs/sha256/{}", d.hex()))
    }
}

impl Fetcher for BundleFetcher {
    fn source(&self) -> String {
        format!("archive {}", self.shown)
    }

    fn manifest<'a>(&'a self, target: &'a str) -> BoxFuture<'a, Result<Fetched, FetchError>> {
        Box::pin(async move {
            let d = Digest::parse(target).map_err(FetchError::Refused)?;
            if let Some(b) = self.made.get(&d) {
                return Ok(Fetched {
                    bytes: b.clone(),
                    media_type: None,
                    digest: None,
                });
            }
            let bytes = self
                .bundle
                .read(&self.path_of(&d), MANIFEST_LIMIT)
                .map_err(|e| FetchError::NotFound(format!("manifest {d}: {e}")))?;
            Ok(Fetched {
                bytes,
                media_type: None,
                digest: None,
            })
        })
    }

    fn blob<'a>(
        &'a self,
        digest: &'a Digest,
        ingest: &'a mut Ingest,
        progress: &'a (dyn Fn(u64) + Send + Sync),
    ) -> BoxFuture<'a, Result<(), FetchError>> {
        Box::pin(async move {
            let name = self.path_of(digest);
            let (mut r, _) = self
                .bundle
                .reader(&name)
                .map_err(|e| FetchError::NotFound(format!("{name}: {e}")))?;
            ingest
                .restart_at(0)
                .map_err(|e| FetchError::Transfer(e.to_string()))?;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = r
                    .read(&mut buf)
                    .map_err(|e| FetchError::Refused(format!("read {name}: {e}")))?;
                if n == 0 {
                    return Ok(());
                }
                ingest
                    .write_progress(&buf[..n], progress)
                    .map_err(FetchError::Refused)?;
            }
        })
    }
}
