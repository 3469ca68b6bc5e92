//! Secrets: small values (a password, a key) the cluster keeps sealed with the cluster
//! key (`supervisor::secrets`: an AEAD; the state holds only the nonce and the
//! ciphertext) and hands to the containers that ask for them. `apply` never sees a
//! value: it numbers the versions and refuses the removal of a secret in use.

use super::apply::{refused, Events};
use super::{ClusterState, EventKind, Response};
use serde::{Deserialize, Serialize};

/// A secret as the cluster records it: sealed, never its value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRecord {
    /// Its name (the one name rule).
    pub name: String,
    /// 1 for the first value, one more at each new one (set by `apply`).
    pub version: u64,
    /// Which cluster key sealed it (a fingerprint of the key, never the key).
    pub key_id: String,
    /// The nonce, then the ciphertext and its tag.
    pub sealed: Vec<u8>,
    /// The value's length in bytes.
    pub size: u64,
    /// Log index of its current version (set by `apply`).
    pub updated_index: u64,
}

impl std::fmt::Debug for SecretRecord {
    // The sealed bytes say nothing, but a debug print has no business with them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRecord")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("key_id", &self.key_id)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl ClusterState {
    /// Secrets, by name (sealed).
    pub fn secrets(&self) -> &super::Table<String, SecretRecord> {
        &self.secrets
    }

    pub(super) fn put_secret(&mut self, ev: &mut Events, s: &SecretRecord) -> Response {
        if let Err(e) = crate::spec::names::check("secret", &s.name) {
            return refused(e.to_string());
        }
        if s.size > crate::spec::volumes::MAX_SECRET_BYTES as u64 {
            return refused(format!(
                "secret {} is {} bytes; the most is {}",
                s.name,
                s.size,
                crate::spec::volumes::MAX_SECRET_BYTES
            ));
        }
        let mut s = s.clone();
        s.version = self.secrets.get(&s.name).map_or(1, |old| old.version + 1);
        s.updated_index = ev.index;
        let version = s.version;
        let what = format!("secret {} version {version} ({} bytes)", s.name, s.size);
        ev.push(EventKind::SecretStored, None, None, what);
        self.touched.secrets.insert(s.name.clone());
        self.revision += 1;
        self.secrets.insert(s.name.clone(), s);
        Response::Version(version)
    }

    pub(super) fn remove_secret(&mut self, ev: &mut Events, name: &str) -> Response {
        if !self.secrets.contains_key(name) {
            return refused(format!("no secret {name}"));
        }
        let users = self.storage_users().secrets.remove(name);
        if let Some(no) = Self::refused_in_use("secret", name, users) {
            return no;
        }
        self.touched.secrets.insert(name.to_string());
        self.revision += 1;
        self.secrets.remove(name);
        ev.push(
            EventKind::SecretRemoved,
            None,
            None,
            format!("secret {name}"),
        );
        Response::Ok
    }
}
