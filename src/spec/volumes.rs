//! What a definition asks of the cluster's storage: named volumes (`c.volume`), which
//! live on one node and outlive the containers that mount them, and secrets
//! (`c.secret`), whose values the cluster keeps encrypted and hands to the container
//! as read-only files of a tmpfs at [`SECRETS_DIR`].

use serde::{Deserialize, Serialize};

/// Where a container finds its secrets, one file per secret.
pub const SECRETS_DIR: &str = "/run/secrets";

/// The largest secret value the cluster keeps, in bytes (as Kubernetes' 1 MiB and
/// Swarm's 500 KiB: a secret is a password or a key, not a file system).
pub const MAX_SECRET_BYTES: usize = 500 * 1024;

/// A named volume of the cluster mounted in a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    /// The volume's name (`haconiwa volume create NAME`).
    pub name: String,
    /// Where it appears inside (an absolute path).
    pub target: String,
    /// Mounted read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub readonly: bool,
}

/// A secret of the cluster a container reads, as `/run/secrets/NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretMount {
    /// The secret's name (`haconiwa secret create NAME`).
    pub name: String,
}

/// The names of the volumes a spec mounts.
pub fn volume_names(spec: &super::ContainerSpec) -> impl Iterator<Item = &str> {
    spec.volumes.iter().map(|v| v.name.as_str())
}

/// Whether a spec reads the secret `name`.
pub fn reads_secret(spec: &super::ContainerSpec, name: &str) -> bool {
    spec.secrets.iter().any(|s| s.name == name)
}
