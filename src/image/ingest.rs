//! A blob on its way into the store: written into `ingest/`, hashed as it comes,
//! renamed into `blobs/` only when its size and digest match; what an interrupted
//! transfer left is hashed again and the next one resumes after it.

use super::digest::{Digest, Hasher};
use super::store::Store;
use super::{io_err, ImageError};
use std::fs;
use std::io::{self, Read, Seek, Write};
use std::path::PathBuf;

impl Store {
    /// A download (or copy) of blob `expected` of `size` bytes into `ingest/`, resumable.
    pub fn ingest(&self, expected: &Digest, size: u64) -> Result<Ingest, ImageError> {
        let path = self.root().join("ingest").join(expected.hex());
        let mut file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(format!("open {}", path.display())))?;
        // What an earlier, interrupted transfer left: hashed again, the rest resumes.
        let mut hasher = Hasher::default();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(io_err(format!("read {}", path.display())))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        if hasher.len > size {
            file.set_len(0).map_err(io_err("truncate"))?;
            file.rewind().map_err(io_err("rewind"))?;
            hasher = Hasher::default();
        }
        Ok(Ingest {
            path,
            file,
            hasher,
            expected: expected.clone(),
            size,
            final_path: self.blob_path(expected),
        })
    }
}

/// A blob being written into `ingest/`, hashed as it goes; renamed into `blobs/` by
/// [`Ingest::finish`] only when its size and digest match.
pub struct Ingest {
    path: PathBuf,
    file: fs::File,
    hasher: Hasher,
    expected: Digest,
    size: u64,
    final_path: PathBuf,
}

impl Ingest {
    /// Bytes already there (where a transfer resumes).
    pub fn offset(&self) -> u64 {
        self.hasher.len
    }

    /// The blob's expected size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The bytes that follow start at `offset` (a source that cannot resume says 0).
    pub fn restart_at(&mut self, offset: u64) -> io::Result<()> {
        if offset == self.hasher.len {
            return Ok(());
        }
        if offset != 0 {
            return Err(io::Error::other(format!(
                "the source resumed at {offset}, not at {}",
                self.hasher.len
            )));
        }
        self.file.set_len(0)?;
        self.file.rewind()?;
        self.hasher = Hasher::default();
        Ok(())
    }

    /// Appends bytes; more than the expected size is an error at once.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), String> {
        if self.hasher.len + chunk.len() as u64 > self.size {
            return Err(format!(
                "blob {} is longer than the {} bytes its descriptor gives",
                self.expected, self.size
            ));
        }
        self.file
            .write_all(chunk)
            .map_err(|e| format!("write {}: {e}", self.path.display()))?;
        self.hasher.update(chunk);
        Ok(())
    }

    /// Appends a chunk of a transfer and tells `progress` how far it is.
    pub fn write_progress(
        &mut self,
        chunk: &[u8],
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(), String> {
        self.write(chunk)?;
        progress(self.hasher.len);
        Ok(())
    }

    /// Checks size and digest; a match moves the blob into place, a mismatch removes
    /// the download (it cannot resume into anything right).
    pub fn finish(self) -> Result<(), String> {
        if self.hasher.len != self.size {
            let _ = fs::remove_file(&self.path);
            return Err(format!(
                "blob {} is truncated: {} of {} bytes",
                self.expected, self.hasher.len, self.size
            ));
        }
        let got = self.hasher.clone().finish();
        if got != self.expected {
            let _ = fs::remove_file(&self.path);
            return Err(format!(
                "blob {} does not match its digest (its content hashes to {got})",
                self.expected
            ));
        }
        self.file
            .sync_all()
            .map_err(|e| format!("sync {}: {e}", self.path.display()))?;
        fs::rename(&self.path, &self.final_path)
            .map_err(|e| format!("move blob {} into place: {e}", self.expected))
    }

    /// Drops the partial download (the source is wrong, not interrupted).
    pub fn abandon(self) {
        let _ = fs::remove_file(&self.path);
    }
}
