//! How a blob is compressed: read from its first bytes, since media types lie (a `docker
//! save` layer named `…tar.gzip` is often a plain tar).

use std::io::{self, BufRead};

/// How a layer blob is compressed, from its first bytes (media types lie: a `docker
/// save` layer named `…tar.gzip` is often plain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (one or more members).
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// Detects the compression of the stream behind `r` without consuming it.
    pub fn detect(r: &mut impl BufRead) -> io::Result<Compression> {
        let head = r.fill_buf()?;
        Ok(if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        })
    }
}
