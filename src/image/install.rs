//! Puts an image into the store from any source: a registry, an archive on disk, another
//! member. The source only hands over bytes ([`Fetcher`]); everything it says is checked
//! here before use: the manifest's digest (against the reference's and the source's),
//! every blob's size and digest as it streams, each layer's uncompressed digest against
//! the configuration's `diff_ids`, the platform. Blobs download side by side (three at a
//! time) while layers unpack in order. A refused image leaves nothing behind; a transfer
//! that broke keeps what was verified (and the partial blob), so the next attempt
//! resumes.

use super::digest::Digest;
use super::ingest::Ingest;
use super::overlay::Stack;
use super::store::{ImageRecord, LayerRef, Store};
use super::unpack;
use super::ImageError;
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// A boxed future (the fetchers are trait objects).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Largest manifest or index accepted (as containerd).
pub const MANIFEST_LIMIT: u64 = 4 << 20;
/// Largest image configuration accepted.
pub const CONFIG_LIMIT: u64 = 16 << 20;
/// Blobs downloaded at once.
const PARALLEL_BLOBS: usize = 3;

/// A manifest or index as a source returned it.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Its bytes, exactly as served (their digest is the manifest's identity).
    pub bytes: Vec<u8>,
    /// The media type the source gave (a `Content-Type`), if any.
    pub media_type: Option<String>,
    /// The digest the source claims (`Docker-Content-Digest`), checked when present.
    pub digest: Option<Digest>,
}

/// What went wrong at a source.
#[derive(Debug, Clone)]
pub enum FetchError {
    /// It does not have that (a registry's 404 with its message).
    NotFound(String),
    /// It refused or served something that cannot be right (e.g. unauthorized, a bad
    /// answer): trying again the same way will not help.
    Refused(String),
    /// The transfer broke (connection, timeout, 5xx): may work when tried again.
    Transfer(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::NotFound(m) | FetchError::Refused(m) | FetchError::Transfer(m) => {
                f.write_str(m)
            }
        }
    }
}

/// Where an image's bytes come from.
pub trait Fetcher: Send + Sync {
    /// Names the source in messages (`registry localhost:5000`, `archive app.tar`).
    fn source(&self) -> String;
    /// The manifest or index named by `target` (a tag or a digest).
    fn manifest<'a>(&'a self, target: &'a str) -> BoxFuture<'a, Result<Fetched, FetchError>>;
    /// Streams the blob `digest` into `ingest`, from `ingest.offset()` when the source
    /// can resume (calling `ingest.restart_at(0)` when it cannot); `progress` is told
    /// the bytes as they come.
    fn blob<'a>(
        &'a self,
        digest: &'a Digest,
        ingest: &'a mut Ingest,
        progress: &'a (dyn Fn(u64) + Send + Sync),
    ) -> BoxFuture<'a, Result<(), FetchError>>;
}

/// What an install tells whoever watches (a terminal, the cluster's container record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The image's layers are known: how many bytes must come over.
    Resolved {
        /// The manifest chosen.
        manifest: Digest,
        /// Blobs to fetch: digest and size (layers already here excluded).
        todo: Vec<(Digest, u64)>,
    },
    /// Bytes of a blob arrived (`done` of its `total`).
    Bytes {
        /// The blob.
        blob: Digest,
        /// Bytes so far.
        done: u64,
        /// Its size.
        total: u64,
    },
    /// A layer is being unpacked.
    Unpacking(Digest),
    /// A layer is in place.
    LayerDone(Digest),
    /// An entry of a layer was skipped (a device node): the layer and what.
    Skipped(Digest, String),
}

/// How to install.
#[derive(Clone, Default)]
pub struct Options {
    /// `os/arch[/variant]` to pick from an index (default: this host's).
    pub platform: Option<String>,
    /// Names to point at the image once it is in.
    pub names: Vec<String>,
    /// Told what happens.
    pub progress: Option<Arc<dyn Fn(Progress) + Send + Sync>>,
}

impl Options {
    fn tell(&self, p: Progress) {
        if let Some(f) = &self.progress {
            f(p);
        }
    }
}

/// What the install made, to remove again when the image is refused.
#[derive(Default)]
struct Made {
    blobs: Vec<Digest>,
    layers: Vec<Digest>,
}

fn kind_of(bytes: &[u8], header: Option<&str>) -> Result<String, String> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the manifest is not JSON: {e}"))?;
    if v["schemaVersion"].as_u64() == Some(1) {
        return Err("a Docker schema 1 manifest: deprecated, not supported (push the image again with a current tool)".into());
    }
    if let Some(m) = v["mediaType"].as_str() {
        return Ok(m.to_string());
    }
    if v.get("manifests").is_some() {
        return Ok("application/vnd.oci.image.index.v1+json".into());
    }
    if v.get("layers").is_some() {
        return Ok("application/vnd.oci.image.manifest.v1+json".into());
    }
    Ok(header.unwrap_or("").to_string())
}

fn is_index(media: &str) -> bool {
    matches!(
        media,
        "application/vnd.oci.image.index.v1+json"
            | "application/vnd.docker.distribution.manifest.list.v2+json"
    )
}

fn is_manifest(media: &str) -> bool {
    matches!(
        media,
        "application/vnd.oci.image.manifest.v1+json"
            | "application/vnd.docker.distribution.manifest.v2+json"
    )
}

/// Layer media types the store unpacks (compression is read from the bytes).
fn layer_media_ok(m: &MediaType) -> bool {
    match m {
        MediaType::ImageLayer
        | MediaType::ImageLayerGzip
        | MediaType::ImageLayerZstd
        | MediaType::ImageLayerNonDistributable
        | MediaType::ImageLayerNonDistributableGzip
        | MediaType::ImageLayerNonDistributableZstd => true,
        MediaType::Other(s) => matches!(
            s.as_str(),
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
                | "application/vnd.docker.image.rootfs.diff.tar"
                | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
                | "application/vnd.docker.image.rootfs.diff.tar.zstd"
        ),
        _ => false,
    }
}

fn platform_of(os: &str, arch: &str, variant: Option<&str>) -> String {
    match variant {
        Some(v) if !v.is_empty() => format!("{os}/{arch}/{v}"),
        _ => format!("{os}/{arch}"),
    }
}

/// Whether an image of `have` runs where `want` is asked (a variant is compared only
/// when asked for).
fn platform_matches(want: &str, have: &str) -> bool {
    let w: Vec<&str> = want.split('/').collect();
    let h: Vec<&str> = have.split('/').collect();
    w.len() >= 2
        && h.len() >= 2
        && w[0] == h[0]
        && w[1] == h[1]
        && (w.len() < 3 || w.get(2) == h.get(2))
}

/// Chain ids of a stack of diff ids (OCI: the first is its diff id, each next one the
/// SHA-256 of "parent child").
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => Digest::of(format!("{parent} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// Installs the image `target` (a tag or digest; `expect` the digest it must have)
/// from `fetcher`; `shown` names it in messages.
pub async fn install(
    store: &Store,
    fetcher: Arc<dyn Fetcher>,
    shown: &str,
    target: &str,
    expect: Option<&Digest>,
    opts: &Options,
) -> Result<ImageRecord, ImageError> {
    let lock_store = store.clone();
    let _held = tokio::task::spawn_blocking(move || lock_store.install_lock())
        .await
        .map_err(|e| ImageError::Invalid(e.to_string()))??;
    let made = Arc::new(Mutex::new(Made::default()));
    let result = install_locked(store, fetcher, shown, target, expect, opts, made.clone()).await;
    if let Err(e) = &result {
        if e.is_refusal() {
            let m = std::mem::take(&mut *made.lock().unwrap_or_else(|p| p.into_inner()));
            let s = store.clone();
            let _ = tokio::task::spawn_blocking(move || s.discard(&m.blobs, &m.layers)).await;
        }
    }
    result
}

fn refused(shown: &str, reason: impl Into<String>) -> ImageError {
    ImageError::Refused {
        image: shown.to_string(),
        reason: reason.into(),
    }
}

fn from_fetch(shown: &str, what: &str, e: FetchError) -> ImageError {
    match e {
        FetchError::NotFound(m) | FetchError::Refused(m) => refused(shown, format!("{what}: {m}")),
        FetchError::Transfer(m) => ImageError::Transfer {
            image: shown.to_string(),
            reason: format!("{what}: {m}"),
        },
    }
}

/// Fetches a manifest or index and checks its digest against what is expected and what
/// the source claims.
async fn fetch_manifest(
    fetcher: &dyn Fetcher,
    shown: &str,
    target: &str,
    expect: Option<&Digest>,
) -> Result<(Fetched, Digest), ImageError> {
    let f = fetcher
        .manifest(target)
        .await
        .map_err(|e| from_fetch(shown, "manifest", e))?;
    if f.bytes.len() as u64 > MANIFEST_LIMIT {
        return Err(refused(
            shown,
            format!("the manifest is over {MANIFEST_LIMIT} bytes"),
        ));
    }
    let d = Digest::of(&f.bytes);
    if let Some(e) = expect {
        if *e != d {
            return Err(refused(
                shown,
                format!("the manifest served for {e} hashes to {d}"),
            ));
        }
    }
    if let Some(claimed) = &f.digest {
        if *claimed != d {
            return Err(refused(
                shown,
                format!(
                    "{} says the manifest is {claimed}, its bytes hash to {d}",
                    fetcher.source()
                ),
            ));
        }
    }
    Ok((f, d))
}

/// Makes sure a blob is in the store: fetched under its lock (a concurrent install of
/// the same blob waits and finds it there).
async fn ensure_blob(
    store: &Store,
    fetcher: &dyn Fetcher,
    shown: &str,
    digest: &Digest,
    size: u64,
    opts: &Options,
    made: &Mutex<Made>,
) -> Result<(), ImageError> {
    if store.has_blob(digest) {
        return Ok(());
    }
    let (s, d) = (store.clone(), digest.clone());
    let _work = tokio::task::spawn_blocking(move || s.work_lock("blob", &d))
        .await
        .map_err(|e| ImageError::Invalid(e.to_string()))??;
    if store.has_blob(digest) {
        return Ok(());
    }
    let mut ingest = store.ingest(digest, size)?;
    let blob = digest.clone();
    let tell = |done: u64| {
        opts.tell(Progress::Bytes {
            blob: blob.clone(),
            done,
            total: size,
        })
    };
    match fetcher.blob(digest, &mut ingest, &tell).await {
        Ok(()) => {}
        Err(FetchError::Transfer(m)) => {
            return Err(ImageError::Transfer {
                image: shown.to_string(),
                reason: format!("blob {digest}: {m} (the next pull resumes)"),
            })
        }
        Err(e) => {
            ingest.abandon();
            return Err(from_fetch(shown, &format!("blob {digest}"), e));
        }
    }
    ingest.finish().map_err(|m| refused(shown, m))?;
    made.lock()
        .unwrap_or_else(|p| p.into_inner())
        .blobs
        .push(digest.clone());
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn install_locked(
    store: &Store,
    fetcher: Arc<dyn Fetcher>,
    shown: &str,
    target: &str,
    expect: Option<&Digest>,
    opts: &Options,
    made: Arc<Mutex<Made>>,
) -> Result<ImageRecord, ImageError> {
    let want = opts.platform.clone().unwrap_or_else(super::host_platform);
    let (top, top_digest) = fetch_manifest(fetcher.as_ref(), shown, target, expect).await?;
    let media = kind_of(&top.bytes, top.media_type.as_deref()).map_err(|m| refused(shown, m))?;
    let (manifest_bytes, manifest_digest, index) = if is_index(&media) {
        let idx = ImageIndex::from_reader(&top.bytes[..])
            .map_err(|e| refused(shown, format!("the index: {e}")))?;
        let mut offered = Vec::new();
        let mut chosen: Option<&Descriptor> = None;
        for m in idx.manifests() {
            let Some(p) = m.platform() else { continue };
            let have = platform_of(
                &p.os().to_string(),
                &p.architecture().to_string(),
                p.variant().as_deref(),
            );
            if chosen.is_none() && platform_matches(&want, &have) {
                chosen = Some(m);
            }
            offered.push(have);
        }
        let Some(desc) = chosen else {
            return Err(refused(
                shown,
                format!(
                    "no manifest for {want} in the index (it has: {})",
                    if offered.is_empty() {
                        "none with a platform".into()
                    } else {
                        offered.join(", ")
                    }
                ),
            ));
        };
        let d = Digest::try_from(desc.digest()).map_err(|m| refused(shown, m))?;
        let (child, _) = fetch_manifest(fetcher.as_ref(), shown, d.as_str(), Some(&d)).await?;
        if child.bytes.len() as u64 != desc.size() {
            return Err(refused(
                shown,
                format!(
                    "manifest {d} is {} bytes, the index says {}",
                    child.bytes.len(),
                    desc.size()
                ),
            ));
        }
        (child.bytes, d, Some((top.bytes, top_digest)))
    } else if is_manifest(&media) {
        (top.bytes, top_digest, None)
    } else {
        return Err(refused(
            shown,
            format!("unsupported manifest media type '{media}'"),
        ));
    };
    let manifest = ImageManifest::from_reader(&manifest_bytes[..])
        .map_err(|e| refused(shown, format!("the manifest: {e}")))?;
    if manifest.schema_version() != 2 {
        return Err(refused(shown, "the manifest's schemaVersion is not 2"));
    }
    // Config.
    let config_desc = manifest.config();
    let config_digest = Digest::try_from(config_desc.digest()).map_err(|m| refused(shown, m))?;
    if config_desc.size() > CONFIG_LIMIT {
        return Err(refused(
            shown,
            format!("the configuration is over {CONFIG_LIMIT} bytes"),
        ));
    }
    ensure_blob(
        store,
        fetcher.as_ref(),
        shown,
        &config_digest,
        config_desc.size(),
        opts,
        &made,
    )
    .await?;
    let config_bytes = store.read_blob(&config_digest, CONFIG_LIMIT)?;
    let config = ImageConfiguration::from_reader(&config_bytes[..])
        .map_err(|e| refused(shown, format!("the configuration {config_digest}: {e}")))?;
    let have = platform_of(
        &config.os().to_string(),
        &config.architecture().to_string(),
        config.variant().as_deref(),
    );
    if !platform_matches(&want, &have) {
        return Err(refused(
            shown,
            format!("the image is for {have}, this host runs {want}"),
        ));
    }
    let diff_ids = config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| {
            Digest::parse(d)
                .map_err(|m| refused(shown, format!("the configuration's diff_ids: {m}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if diff_ids.len() != manifest.layers().len() {
        return Err(refused(
            shown,
            format!(
                "the manifest has {} layers, the configuration {} diff_ids",
                manifest.layers().len(),
                diff_ids.len()
            ),
        ));
    }
    let chains = chain_ids(&diff_ids);
    let mut layers = Vec::new();
    for ((desc, diff_id), chain) in manifest.layers().iter().zip(&diff_ids).zip(&chains) {
        if !layer_media_ok(desc.media_type()) {
            return Err(refused(
                shown,
                format!(
                    "layer {}: unsupported media type '{}'",
                    desc.digest(),
                    desc.media_type()
                ),
            ));
        }
        layers.push(LayerRef {
            blob: Digest::try_from(desc.digest()).map_err(|m| refused(shown, m))?,
            media_type: desc.media_type().to_string(),
            size: desc.size(),
            diff_id: diff_id.clone(),
            chain_id: chain.clone(),
        });
    }
    // Manifest and index are kept (the image is served to other members from here).
    for (bytes, d) in std::iter::once((&manifest_bytes, &manifest_digest))
        .chain(index.as_ref().map(|(b, d)| (b, d)))
    {
        if !store.has_blob(d) {
            store.put_blob(bytes, Some(d))?;
            made.lock()
                .unwrap_or_else(|p| p.into_inner())
                .blobs
                .push(d.clone());
        }
    }
    let todo: Vec<(Digest, u64)> = layers
        .iter()
        .filter(|l| !store.has_layer(&l.chain_id) && !store.has_blob(&l.blob))
        .map(|l| (l.blob.clone(), l.size))
        .collect();
    opts.tell(Progress::Resolved {
        manifest: manifest_digest.clone(),
        todo,
    });
    // Downloads side by side, unpacking in order behind them.
    let slots = Arc::new(tokio::sync::Semaphore::new(PARALLEL_BLOBS));
    let mut downloads = Vec::new();
    for l in &layers {
        if store.has_layer(&l.chain_id) {
            downloads.push(None);
            continue;
        }
        let (store, fetcher, shown, opts, made, slots, l) = (
            store.clone(),
            fetcher.clone(),
            shown.to_string(),
            opts.clone(),
            made.clone(),
            slots.clone(),
            l.clone(),
        );
        downloads.push(Some(tokio::spawn(async move {
            let _slot = slots
                .acquire_owned()
                .await
                .map_err(|e| ImageError::Invalid(e.to_string()))?;
            ensure_blob(
                &store,
                fetcher.as_ref(),
                &shown,
                &l.blob,
                l.size,
                &opts,
                &made,
            )
            .await
        })));
    }
    let abort_all = |d: &[Option<tokio::task::JoinHandle<Result<(), ImageError>>>]| {
        for h in d.iter().flatten() {
            h.abort();
        }
    };
    for (i, l) in layers.iter().enumerate() {
        let Some(handle) = downloads[i].take() else {
            continue;
        };
        let fetched = handle
            .await
            .map_err(|e| ImageError::Invalid(format!("download task: {e}")))
            .and_then(|r| r);
        if let Err(e) = fetched {
            abort_all(&downloads);
            return Err(e);
        }
        opts.tell(Progress::Unpacking(l.blob.clone()));
        let below: Vec<Digest> = layers[..i]
            .iter()
            .rev()
            .map(|l| l.chain_id.clone())
            .collect();
        let (s, layer, name) = (store.clone(), l.clone(), shown.to_string());
        let unpacked = tokio::task::spawn_blocking(move || unpack_layer(&s, &name, &layer, &below))
            .await
            .map_err(|e| ImageError::Invalid(format!("unpack task: {e}")))
            .and_then(|r| r);
        let unpacked = unpacked.map(|(made_it, skipped)| {
            for s in skipped {
                opts.tell(Progress::Skipped(l.blob.clone(), s));
            }
            made_it
        });
        match unpacked {
            Ok(true) => made
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .layers
                .push(l.chain_id.clone()),
            Ok(false) => {}
            Err(e) => {
                abort_all(&downloads);
                return Err(e);
            }
        }
        opts.tell(Progress::LayerDone(l.blob.clone()));
    }
    let record = ImageRecord {
        manifest: manifest_digest,
        index: index.map(|(_, d)| d),
        config: config_digest,
        layers,
        platform: have,
        stored_at: super::store::now_secs(),
    };
    store.commit_image(&record, &opts.names)?;
    Ok(record)
}

/// Unpacks one layer under its lock; `false` when another install made it first; the
/// entries it skipped.
fn unpack_layer(
    store: &Store,
    shown: &str,
    layer: &LayerRef,
    below: &[Digest],
) -> Result<(bool, Vec<String>), ImageError> {
    if store.has_layer(&layer.chain_id) {
        return Ok((false, Vec::new()));
    }
    let _work = store.work_lock("layer", &layer.chain_id)?;
    if store.has_layer(&layer.chain_id) {
        return Ok((false, Vec::new()));
    }
    let ws = store.layer_workspace(&layer.chain_id)?;
    let result = (|| {
        let lower_dirs = store.layer_diffs(&below.iter().collect::<Vec<_>>());
        let lowers = Stack::open(&lower_dirs).map_err(super::io_err("open the layers below"))?;
        let dest = super::overlay::open_dir(&ws.join("diff"))
            .map_err(super::io_err("open the workspace"))?;
        let blob = std::fs::File::open(store.blob_path(&layer.blob))
            .map_err(super::io_err(format!("open blob {}", layer.blob)))?;
        let applied = unpack::apply(blob, &dest, &lowers).map_err(|e| {
            if e.entry.is_empty() {
                ImageError::Layer {
                    image: shown.to_string(),
                    layer: layer.blob.to_string(),
                    reason: e.reason,
                }
            } else {
                ImageError::Entry {
                    image: shown.to_string(),
                    layer: layer.blob.to_string(),
                    entry: e.entry,
                    reason: e.reason,
                }
            }
        })?;
        if applied.diff_id != layer.diff_id {
            return Err(ImageError::Layer {
                image: shown.to_string(),
                layer: layer.blob.to_string(),
                reason: format!(
                    "its uncompressed content hashes to {}, the configuration says {}",
                    applied.diff_id, layer.diff_id
                ),
            });
        }
        store.commit_layer(&ws, &layer.chain_id, &layer.diff_id)?;
        Ok(applied.skipped)
    })();
    if result.is_err() {
        let _ = super::store::remove_tree(&ws);
    }
    result.map(|skipped| (true, skipped))
}
