//! What this node admits: its policy (`[policy]` of node.toml) checked once more by the
//! agent before a launch, with each bind source's symbolic links resolved on this host
//! (the leader placed the container by the names alone, and may not have known the
//! policy yet: a node that restarted with a new one).

use crate::spec::{ContainerSpec, NodePolicy};

/// What `policy` refuses of `spec` here, in words; `None`: it may start.
pub fn refused(policy: &NodePolicy, spec: &ContainerSpec) -> Option<String> {
    if policy.is_permissive() {
        return None;
    }
    let mut resolved = spec.clone();
    for m in resolved.mounts.iter_mut().filter(|m| m.fstype.is_none()) {
        if let Ok(p) = std::fs::canonicalize(&m.source) {
            m.source = p.to_string_lossy().into_owned();
        }
    }
    let why = crate::decide::policy::refusals(policy, &resolved);
    (!why.is_empty()).then(|| why.join("; "))
}
