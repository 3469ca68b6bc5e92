//! Content digests: `sha256:<hex>`, the only algorithm the store keeps (every registry
//! and every image tool writes it), computed while bytes stream and compared before
//! anything is used.

use sha2::{Digest as _, Sha256};
use std::fmt;
use std::io::{self, Read, Write};

/// A `sha256:` digest, its 64 hex digits checked.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// Parses `sha256:<64 lower-case hex>`; anything else is an error naming why.
    pub fn parse(text: &str) -> Result<Digest, String> {
        if crate::spec::image_ref::digest_ok(text) {
            Ok(Digest(text.to_string()))
        } else if text.contains(':') && !text.starts_with("sha256:") {
            Err(format!("digest {text}: only sha256 digests are supported"))
        } else {
            Err(format!(
                "digest {text}: not sha256: followed by 64 hex digits"
            ))
        }
    }

    /// The digest of some bytes.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex(&Sha256::digest(bytes))))
    }

    /// The 64 hex digits: file names in the store.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    /// The first 12 hex digits: the short id shown in tables.
    pub fn short(&self) -> &str {
        &self.0[7..19]
    }

    /// The whole text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Digest {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Digest::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl TryFrom<&oci_spec::image::Digest> for Digest {
    type Error = String;
    fn try_from(d: &oci_spec::image::Digest) -> Result<Self, Self::Error> {
        Digest::parse(d.as_ref())
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A running SHA-256 and byte count.
#[derive(Clone, Default)]
pub struct Hasher {
    sha: Sha256,
    /// Bytes hashed so far.
    pub len: u64,
}

impl Hasher {
    /// Adds bytes.
    pub fn update(&mut self, b: &[u8]) {
        self.sha.update(b);
        self.len += b.len() as u64;
    }

    /// The digest of everything added.
    pub fn finish(self) -> Digest {
        Digest(format!("sha256:{}", hex(&self.sha.finalize())))
    }
}

/// A reader that hashes what passes through it.
pub struct HashingReader<R> {
    inner: R,
    /// The hash so far.
    pub hasher: Hasher,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::default(),
        }
    }

    /// Reads to the end (what a tar reader leaves after its last entry still counts),
    /// returns the digest and length.
    pub fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        let len = self.hasher.len;
        Ok((self.hasher.finish(), len))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A writer that hashes what passes through it.
pub struct HashingWriter<W> {
    /// Where the bytes go.
    pub inner: W,
    /// The hash so far.
    pub hasher: Hasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_and_checks() {
        let d = Digest::of(b"");
        assert_eq!(
            d.as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(d.short(), "e3b0c44298fc");
        assert!(Digest::parse("sha512:00")
            .unwrap_err()
            .contains("only sha256"));
        assert!(Digest::parse("sha256:XYZ").is_err());
        let mut r = HashingReader::new(&b"hello"[..]);
        let mut two = [0u8; 2];
        r.read_exact(&mut two).unwrap();
        let (digest, len) = r.finish().unwrap();
        assert_eq!(len, 5);
        assert_eq!(digest, Digest::of(b"hello"));
    }
}
