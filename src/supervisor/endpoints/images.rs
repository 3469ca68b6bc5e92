//! Images between members: what this member's image store holds, served to another
//! member that lacks it (its digests are checked there, as a registry's are). Reads
//! only: the store is never written through these calls.

use crate::api::pb::{ImageBlobChunk, ImageBlobRequest, ImageManifestReply, ImageManifestRequest};
use crate::image::{Digest, ImageError, Store};
use crate::supervisor::error::{OpError, OpResult};
use crate::supervisor::shared::Supervisor;
use std::io::{Read, Seek, SeekFrom};
use tonic::Status;

/// Bytes per streamed chunk (well under the gRPC message limit).
const CHUNK: usize = 256 * 1024;

fn store_error(e: ImageError) -> OpError {
    match e {
        ImageError::NotFound(m) => OpError::NotFound(format!("no image {m} here")),
        ImageError::Invalid(m) => OpError::Invalid(m),
        other => OpError::Internal(other.to_string()),
    }
}

/// The manifest a reference (or digest) names in this member's store.
pub(super) async fn manifest(
    core: &Supervisor,
    r: ImageManifestRequest,
) -> OpResult<ImageManifestReply> {
    let root = core.config.image_store.clone();
    tokio::task::spawn_blocking(move || {
        let store = Store::open(&root).map_err(store_error)?;
        let record = store.find(&r.reference).map_err(store_error)?;
        let manifest = store
            .read_blob(&record.manifest, crate::image::install::MANIFEST_LIMIT)
            .map_err(store_error)?;
        Ok(ImageManifestReply {
            manifest,
            digest: record.manifest.to_string(),
        })
    })
    .await
    .map_err(|e| OpError::Internal(e.to_string()))?
}

/// A blob of this member's store from an offset, in chunks.
pub(super) fn blob(core: &Supervisor, r: ImageBlobRequest) -> Result<super::ImageChunks, Status> {
    let digest = Digest::parse(&r.digest).map_err(Status::invalid_argument)?;
    let store =
        Store::open(&core.config.image_store).map_err(|e| Status::internal(e.to_string()))?;
    let mut file = std::fs::File::open(store.blob_path(&digest))
        .map_err(|_| Status::not_found(format!("no blob {digest} here")))?;
    file.seek(SeekFrom::Start(r.offset))
        .map_err(|e| Status::invalid_argument(format!("offset {}: {e}", r.offset)))?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let item = match file.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => Ok(ImageBlobChunk {
                    data: buf[..n].to_vec(),
                }),
                Err(e) => Err(Status::internal(format!("read blob {digest}: {e}"))),
            };
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}
