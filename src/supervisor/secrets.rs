//! The cluster's secrets key and what this member does with it: the leader seals a new
//! value before it is proposed (ChaCha20-Poly1305 from ring; a random 96-bit nonce per
//! value, the secret's name as associated data, so a sealed value cannot be passed off
//! as another secret), and a container's node opens the ones it reads at its launch.
//! The key is a 0600 file of 64 hex digits, the same on every member
//! (`haconiwa secret keygen`); the state holds only sealed values and the key's
//! fingerprint.

use crate::cluster::state::{ClusterState, SecretRecord};
use crate::launcher::SecretFile;
use crate::spec::ContainerSpec;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// What can go wrong with a secret, in words that never hold its value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// This member was started without a key.
    #[error("this member has no secrets key (secrets_key in node.toml, or --secrets-key)")]
    NoKey,
    /// The key file cannot be used.
    #[error("secrets key {path}: {reason}")]
    KeyFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The cluster has no such secret.
    #[error("no secret {0}: create it with `haconiwa secret create {0} FILE`")]
    Missing(String),
    /// It was sealed with another key than this member's.
    #[error("secret {name} was sealed with key {sealed_by}, this member's key is {ours}: give every member the same secrets_key")]
    OtherKey {
        /// The secret.
        name: String,
        /// The fingerprint it was sealed with.
        sealed_by: String,
        /// This member's.
        ours: String,
    },
    /// It does not open (damaged, or the key's fingerprint lies).
    #[error("secret {0} does not open with this member's key")]
    Damaged(String),
    /// The system's random source failed.
    #[error("no random nonce: the system's random source failed")]
    Random,
}

/// The cluster key, loaded.
pub struct ClusterKey {
    key: LessSafeKey,
    id: String,
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterKey({})", self.id)
    }
}

/// Writes a new random key to `path` (created, mode 0600; an existing file is kept).
pub fn generate(path: &Path) -> Result<(), SecretError> {
    let bad = |reason: String| SecretError::KeyFile {
        path: path.display().to_string(),
        reason,
    };
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SecretError::Random)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| bad(e.to_string()))?;
    f.write_all(format!("{hex}\n").as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| bad(e.to_string()))
}

impl ClusterKey {
    /// Reads the key file: 64 hex digits, readable by its owner only.
    pub fn load(path: &Path) -> Result<ClusterKey, SecretError> {
        let bad = |reason: String| SecretError::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        let md = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
        if md.permissions().mode() & 0o077 != 0 {
            return Err(bad(format!(
                "mode {:o} lets others read it; chmod 600 it",
                md.permissions().mode() & 0o777
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let text = text.trim();
        let bytes: Option<Vec<u8>> = (text.len() == 64)
            .then(|| {
                (0..32)
                    .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
                    .collect()
            })
            .flatten();
        bytes
            .and_then(|b| ClusterKey::from_bytes(&b))
            .ok_or_else(|| bad("not 64 hex digits (`haconiwa secret keygen` makes one)".into()))
    }

    fn from_bytes(bytes: &[u8]) -> Option<ClusterKey> {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"haconiwa secrets key id\0");
        h.update(bytes);
        let id = h.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, bytes).ok()?;
        Some(ClusterKey {
            key: LessSafeKey::new(unbound),
            id,
        })
    }

    /// The key's fingerprint (what the state records; it says nothing of the key).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals a value for the secret `name`: the record to propose (its version and
    /// index are numbered by `apply`).
    pub fn seal(&self, name: &str, value: &[u8]) -> Result<SecretRecord, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SecretError::Random)?;
        let mut sealed = value.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| SecretError::Damaged(name.to_string()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(SecretRecord {
            name: name.to_string(),
            version: 0,
            key_id: self.id.clone(),
            sealed: out,
            size: value.len() as u64,
            updated_index: 0,
        })
    }

    /// Opens a sealed secret.
    pub fn open(&self, s: &SecretRecord) -> Result<Vec<u8>, SecretError> {
        if s.key_id != self.id {
            return Err(SecretError::OtherKey {
                name: s.name.clone(),
                sealed_by: s.key_id.clone(),
                ours: self.id.clone(),
            });
        }
        let damaged = || SecretError::Damaged(s.name.clone());
        if s.sealed.len() < NONCE_LEN {
            return Err(damaged());
        }
        let (nonce, body) = s.sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| damaged())?;
        let mut buf = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(s.name.as_bytes()), &mut buf)
            .map_err(|_| damaged())?;
        Ok(plain.to_vec())
    }
}

/// The values of the secrets a container reads, opened for its launch.
pub fn for_launch(
    state: &ClusterState,
    key: Option<&ClusterKey>,
    spec: &ContainerSpec,
) -> Result<Vec<SecretFile>, SecretError> {
    if spec.secrets.is_empty() {
        return Ok(Vec::new());
    }
    let key = key.ok_or(SecretError::NoKey)?;
    spec.secrets
        .iter()
        .map(|m| {
            let rec = state
                .secrets()
                .get(&m.name)
                .ok_or_else(|| SecretError::Missing(m.name.clone()))?;
            Ok(SecretFile {
                name: m.name.clone(),
                value: key.open(rec)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_name() {
        let k = ClusterKey::from_bytes(&[7u8; 32]).unwrap();
        let s = k.seal("db", b"hunter2").unwrap();
        assert!(!s.sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(s.size, 7);
        assert_eq!(k.open(&s).unwrap(), b"hunter2");
        // Two seals of one value differ (a fresh nonce each).
        assert_ne!(k.seal("db", b"hunter2").unwrap().sealed, s.sealed);
        // Another name: the associated data differs.
        let mut moved = s.clone();
        moved.name = "other".into();
        assert!(matches!(k.open(&moved), Err(SecretError::Damaged(_))));
        // A flipped bit.
        let mut flipped = s.clone();
        let last = flipped.sealed.len() - 1;
        flipped.sealed[last] ^= 1;
        assert!(matches!(k.open(&flipped), Err(SecretError::Damaged(_))));
        // Another key.
        let other = ClusterKey::from_bytes(&[8u8; 32]).unwrap();
        assert!(matches!(other.open(&s), Err(SecretError::OtherKey { .. })));
        assert!(!format!("{s:?}{k:?}").contains("hunter2"));
    }

    #[test]
    fn a_key_file_is_made_0600_and_read_back_and_a_readable_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("hcsk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("k");
        generate(&p).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let a = ClusterKey::load(&p).unwrap();
        assert!(generate(&p).is_err(), "an existing key is kept");
        let s = a.seal("x", b"v").unwrap();
        assert_eq!(ClusterKey::load(&p).unwrap().open(&s).unwrap(), b"v");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = ClusterKey::load(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::write(dir.join("bad"), "xyz").unwrap();
        std::fs::set_permissions(dir.join("bad"), std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(ClusterKey::load(&dir.join("bad")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
