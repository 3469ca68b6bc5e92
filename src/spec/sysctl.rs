//! Which kernel parameters a container may set: only those of a namespace it creates
//! (an OCI config's `linux.sysctl`), so that setting one never changes the host.

use super::model::{ContainerSpec, NsKind};

/// IPC parameters that belong to an IPC namespace (as runc's list).
const IPC_SYSCTLS: [&str; 8] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Whether kernel parameter `key` belongs to a namespace `spec` creates (so setting it
/// changes nothing of the host); the reason when it does not.
pub fn is_namespaced(spec: &ContainerSpec, key: &str) -> Result<(), String> {
    let valid = !key.is_empty()
        && key.split('.').all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
        });
    if !valid {
        return Err(format!("'{key}' is not a kernel parameter name"));
    }
    let needs = if IPC_SYSCTLS.contains(&key) || key.starts_with("fs.mqueue.") {
        NsKind::Ipc
    } else if key.starts_with("net.") {
        NsKind::Net
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        NsKind::Uts
    } else {
        return Err(format!(
            "'{key}' is not namespaced: it would change the host"
        ));
    };
    if spec.unshares(needs) {
        Ok(())
    } else {
        Err(format!("'{key}' needs a new {needs} namespace"))
    }
}
