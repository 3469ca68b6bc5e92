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

#[cfg(test)]
mod tests {
    use crate::spec::load_str;

    fn def(body: &str) -> String {
        format!("haconiwa.define(|c| {{\n  c.name = \"v\";\n  c.init_command = [\"/bin/true\"];\n  c.chroot_to(\"/r\");\n  c.namespace.unshare([\"mount\"]);\n{body}\n}});\n")
    }

    #[test]
    fn volumes_and_secrets_load_render_back_and_bad_ones_say_where() {
        let text = def("  c.volume(\"data\", \"/var/lib/app\");\n  c.volume(\"conf\", \"/etc/app\", #{ readonly: true });\n  c.secret(\"db-password\");");
        let s = load_str(&text, "v.haco", None).unwrap();
        assert_eq!(
            super::volume_names(&s).collect::<Vec<_>>(),
            ["data", "conf"]
        );
        assert!(s.volumes[1].readonly && !s.volumes[0].readonly);
        assert!(super::reads_secret(&s, "db-password"));
        let back = crate::spec::haco::render(&s, &[]).unwrap();
        assert_eq!(load_str(&back, "v.haco", None).unwrap(), s, "{back}");
        for (body, why) in [
            ("  c.volume(\"../x\", \"/x\");", "invalid volume name"),
            ("  c.volume(\"x\", \"rel\");", "must be an absolute path"),
            ("  c.volume(\"x\", \"/\");", "cannot be mounted on '/'"),
            (
                "  c.volume(\"x\", \"/a\");\n  c.volume(\"y\", \"/a\");",
                "two volumes on '/a'",
            ),
            ("  c.volume(\"x\", \"/a\", #{ ro: true });", "ro"),
            ("  c.secret(\"a/b\");", "invalid secret name"),
            ("  c.secret(\"a\");\n  c.secret(\"a\");", "asked for twice"),
        ] {
            let e = load_str(&def(body), "v.haco", None)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why) && e.starts_with("v.haco:"), "{body}: {e}");
        }
    }
}
