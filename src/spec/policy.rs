//! What a host lets a definition ask of it: the `[policy]` of its `node.toml`, as
//! Nomad's driver settings (`allow_privileged`, `allow_caps`, host volumes) limit a
//! job. Every node publishes its policy into the replicated state; the leader places a
//! container only on a node whose policy allows it (`decide::policy`). The defaults
//! allow everything, as `haconiwa up` expects.

use serde::{Deserialize, Serialize};

/// One host's limits on what a definition may ask of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodePolicy {
    /// Capabilities a definition may add to the default 14 (`CAP_*` names, or `ALL`).
    pub allow_capabilities: Vec<String>,
    /// Host directories a bind mount's source may lie under (`/`: anywhere; empty:
    /// no bind of a host path at all).
    pub host_paths: Vec<String>,
    /// Filesystem types a definition may mount itself (`tmpfs`, `devtmpfs`, ...; `ALL`).
    pub filesystems: Vec<String>,
    /// Devices beyond the default set (`c.devices`).
    pub devices: bool,
    /// A container without the seccomp filter (`c.seccomp = "unconfined"`).
    pub seccomp_unconfined: bool,
    /// The host's network: no network namespace of the container's own.
    pub host_network: bool,
    /// Namespaces joined by path (`c.namespace.enter`), which may be the host's.
    pub join_namespaces: bool,
    /// Every container must have a user namespace (its root is not the host's).
    pub require_user_namespace: bool,
}

impl Default for NodePolicy {
    fn default() -> Self {
        NodePolicy {
            allow_capabilities: vec!["ALL".into()],
            host_paths: vec!["/".into()],
            filesystems: vec!["ALL".into()],
            devices: true,
            seccomp_unconfined: true,
            host_network: true,
            join_namespaces: true,
            require_user_namespace: false,
        }
    }
}

impl NodePolicy {
    /// Whether it allows everything (the default).
    pub fn is_permissive(&self) -> bool {
        *self == NodePolicy::default()
    }

    /// Checks the operator's words: known capability names, absolute host paths,
    /// filesystem type names. The error names the key and the value.
    pub fn validate(&self) -> Result<(), String> {
        for c in &self.allow_capabilities {
            let name = c.to_ascii_uppercase();
            if name != "ALL" && name.parse::<caps::Capability>().is_err() {
                return Err(format!(
                    "policy.allow_capabilities: '{c}' is not a capability (CAP_NET_ADMIN, ..., or ALL)"
                ));
            }
        }
        for p in &self.host_paths {
            if !p.starts_with('/') || p.split('/').any(|c| c == "..") {
                return Err(format!(
                    "policy.host_paths: '{p}' is not an absolute path without '..'"
                ));
            }
        }
        for f in &self.filesystems {
            if f.is_empty()
                || !f
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(format!(
                    "policy.filesystems: '{f}' is not a filesystem type name"
                ));
            }
        }
        Ok(())
    }

    /// The policy with capability names in their canonical form (`CAP_SYS_ADMIN`), so
    /// two spellings of one policy are one record.
    pub fn canonical(mut self) -> NodePolicy {
        for c in &mut self.allow_capabilities {
            *c = c.to_ascii_uppercase();
        }
        self.allow_capabilities.sort();
        self.allow_capabilities.dedup();
        self.host_paths.sort();
        self.host_paths.dedup();
        self.filesystems.sort();
        self.filesystems.dedup();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_policy_section_allows_everything_and_bad_words_are_named() {
        let p: NodePolicy = toml::from_str("").expect("parse");
        assert!(p.is_permissive());
        let p: NodePolicy =
            toml::from_str("allow_capabilities = [\"cap_net_admin\"]\nhost_network = false")
                .expect("parse");
        assert!(!p.is_permissive() && p.devices);
        assert_eq!(p.clone().canonical().allow_capabilities, ["CAP_NET_ADMIN"]);
        p.validate().expect("valid");
        let bad = NodePolicy {
            allow_capabilities: vec!["CAP_NOPE".into()],
            ..NodePolicy::default()
        };
        assert!(bad.validate().unwrap_err().contains("'CAP_NOPE'"));
        let bad = NodePolicy {
            host_paths: vec!["srv".into()],
            ..NodePolicy::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .contains("policy.host_paths: 'srv'"));
        assert!(toml::from_str::<NodePolicy>("privileged = true").is_err());
    }
}
