//! This host's OCI image store: images pulled over the distribution API, imported from
//! an OCI layout, an `oci-archive` or a `docker save` tarball, or fetched from another
//! member; blobs kept by digest, each layer unpacked once (by chain id) into a directory
//! of its own that every container of every image using it shares read-only (overlayfs
//! lower layers), garbage collection. No container lifecycle and no Raft: the runtime
//! asks it for a container's root, the supervisor for what a spawn needs.
//!
//! - [`digest`]: `sha256:` digests, computed as bytes stream.
//! - [`overlay`]: a layer in overlayfs' format, lookups through a stack of layers.
//! - [`unpack`]: one layer's tar entries applied beneath a directory handle.
//! - [`store`]: the on-disk store (layout, locks, blobs, layers, records, names).
//! - [`ingest`]: a blob on its way in, hashed, resumable.
//! - [`gc`]: removal, prune, and the leases of running containers.
//! - [`compression`]: gzip, zstd or plain, from the bytes.
//! - [`install`]: manifest → config → layers → record, from any [`install::Fetcher`].
//! - [`archive`]: OCI layouts, `oci-archive` and `docker save` tarballs as a fetcher.
//! - [`registry`]: the distribution API client (auth, redirects, resumable ranges).
//! - [`access`]: how registries are reached (configuration, credentials, TLS).
//! - [`config`]: the image configuration mapped onto a container spec.
//! - [`progress`]: what a pull tells a terminal.

pub mod access;
pub mod archive;
pub mod compression;
pub mod config;
pub mod digest;
pub mod gc;
pub mod ingest;
pub mod install;
pub mod overlay;
pub mod progress;
pub mod registry;
pub mod store;
pub mod unpack;

pub use digest::Digest;
pub use store::Store;

/// Where images live unless configured otherwise.
pub const DEFAULT_STORE: &str = "/var/lib/haconiwa/images";

/// Why an image operation failed. Refusals (the image is bad: a digest, a size, a
/// hostile entry) leave the store as it was; a transfer that broke keeps what was
/// verified, and the next pull resumes.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A layer entry was refused.
    #[error("image {image}: layer {layer}: entry '{entry}': {reason}")]
    Entry {
        /// The image as named.
        image: String,
        /// The layer's blob digest.
        layer: String,
        /// The entry's path in the tar.
        entry: String,
        /// Why.
        reason: String,
    },
    /// A layer was refused as a whole (its stream, its diff_id).
    #[error("image {image}: layer {layer}: {reason}")]
    Layer {
        /// The image as named.
        image: String,
        /// The layer's blob digest.
        layer: String,
        /// Why.
        reason: String,
    },
    /// The image is refused (its manifest, its configuration, a blob's digest or size).
    #[error("image {image}: {reason}")]
    Refused {
        /// The image as named.
        image: String,
        /// Why.
        reason: String,
    },
    /// A transfer failed (network, registry error): what was verified stays and the
    /// next attempt resumes.
    #[error("image {image}: {reason}")]
    Transfer {
        /// The image as named.
        image: String,
        /// What the source said.
        reason: String,
    },
    /// No such image in the store.
    #[error("no image {0} in the store (see `haconiwa image ls`; get it with `haconiwa image pull {0}`)")]
    NotFound(String),
    /// The image is used by a container.
    #[error("image {image} is used by container {container} (stop it first, or `image rm --force` to drop only the name)")]
    InUse {
        /// The image.
        image: String,
        /// A container using it.
        container: String,
    },
    /// A bad argument (a reference, a platform, a path).
    #[error("{0}")]
    Invalid(String),
    /// The store itself (its files, its locks).
    #[error("image store {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl ImageError {
    /// Whether the image itself is bad (as opposed to a transfer that may succeed when
    /// tried again): a refusal leaves nothing behind.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ImageError::Entry { .. } | ImageError::Layer { .. } | ImageError::Refused { .. }
        )
    }
}

/// An I/O error of the store, with what was being done.
pub fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
    let what = what.into();
    move |source| ImageError::Io { what, source }
}

/// The platform this host runs images of (`linux/amd64`, …), in the OCI names.
pub fn host_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    };
    format!("linux/{arch}")
}
