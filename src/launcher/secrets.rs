//! A container's secrets (`c.secret`): a tmpfs at `/run/secrets` of its own mount
//! namespace, one file per secret, mode 0400 and owned by the container's user, the
//! whole made read-only before the command runs. The values come in memory from the
//! monitor (never a file of the host), and the tmpfs goes with the mount namespace.

use super::error::{Step, StepError, StepResult};
use crate::spec::volumes::SECRETS_DIR;
use crate::spec::ContainerSpec;
use nix::mount::{mount, MsFlags};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// One secret's value on its way into a container.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct SecretFile {
    /// The secret's name: the file's name under `/run/secrets`.
    pub name: String,
    /// Its value.
    pub value: Vec<u8>,
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        wipe(&mut self.value);
    }
}

/// Zeroes a buffer that held a secret before it is freed (the barrier keeps the
/// compiler from dropping the writes as dead stores).
pub fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    std::hint::black_box(bytes);
}

impl std::fmt::Debug for SecretFile {
    // A launch's options are printed in errors and traces: never the value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretFile({}, {} bytes)", self.name, self.value.len())
    }
}

/// Mounts the tmpfs under `root` (before the root is entered) and writes the secrets.
pub(super) fn mount_secrets(
    spec: &ContainerSpec,
    root: &Path,
    secrets: &[SecretFile],
) -> StepResult<()> {
    let dir = super::mounts::inside(root, SECRETS_DIR)?;
    super::mounts::mkdir_p(&dir)?;
    // Each file takes whole pages; a little room on top for the directory.
    let pages: usize = secrets
        .iter()
        .map(|s| s.value.len().div_ceil(4096).max(1))
        .sum();
    let size = (pages + 16) * 4096;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let data = format!("size={size},nr_inodes={},mode=0755", secrets.len() + 16);
    mount(
        Some("tmpfs"),
        &dir,
        Some("tmpfs"),
        flags,
        Some(data.as_str()),
    )
    .step(|| format!("mount the secrets' tmpfs on {SECRETS_DIR}"))?;
    let (uid, gid) = (spec.uid.unwrap_or(0), spec.gid.unwrap_or(0));
    for s in secrets {
        if crate::spec::names::check("secret", &s.name).is_err() {
            return Err(StepError::msg(
                "write the secrets",
                "a secret with a bad name",
            ));
        }
        let path = dir.join(&s.name);
        let step = || format!("write the secret {SECRETS_DIR}/{}", s.name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&path)
            .step(step)?;
        f.write_all(&s.value).step(step)?;
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
            .step(|| format!("give {SECRETS_DIR}/{} to {uid}:{gid}", s.name))?;
    }
    mount(
        None::<&str>,
        &dir,
        None::<&str>,
        flags | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        Some(data.as_str()),
    )
    .step(|| format!("make {SECRETS_DIR} read-only"))
}
