//! Whether a node's policy (`spec::policy`, its `node.toml`'s `[policy]`) lets a
//! container of a definition run there. Pure: the leader asks it for every candidate
//! node when it places, and a node's agent asks it again before it launches.

use crate::launcher::privileges::{wanted_set, DEFAULT_CAPS};
use crate::spec::{ContainerSpec, NodePolicy, NsKind, Seccomp};
use std::path::{Component, Path};

/// What of `spec` the policy does not allow, in words (empty: it may run there).
pub fn refusals(policy: &NodePolicy, spec: &ContainerSpec) -> Vec<String> {
    let mut why = Vec::new();
    let all = |list: &[String]| list.iter().any(|v| v.eq_ignore_ascii_case("ALL"));
    if !all(&policy.allow_capabilities) {
        let mut extra: Vec<String> = wanted_set(&spec.capabilities)
            .into_iter()
            .filter(|c| !DEFAULT_CAPS.contains(c))
            .map(|c| c.to_string())
            .filter(|c| {
                !policy
                    .allow_capabilities
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(c))
            })
            .collect();
        extra.sort();
        for c in extra {
            why.push(format!("capability {c} is not in its allow_capabilities"));
        }
    }
    let anywhere = policy.host_paths.iter().any(|p| p == "/");
    if !anywhere && spec.image.is_none() && Path::new(&spec.rootfs.path) == Path::new("/") {
        why.push("the root filesystem '/' is the host's own".into());
    }
    for m in &spec.mounts {
        match &m.fstype {
            None if !anywhere && !policy.host_paths.iter().any(|d| under(&m.source, d)) => why
                .push(format!(
                    "a bind of host path {} is outside its host_paths ({})",
                    m.source,
                    listed(&policy.host_paths)
                )),
            Some(t) if !all(&policy.filesystems) && !policy.filesystems.contains(t) => {
                why.push(format!(
                    "a {t} mount is not in its filesystems ({})",
                    listed(&policy.filesystems)
                ))
            }
            _ => {}
        }
    }
    if !policy.devices && !spec.devices.is_empty() {
        why.push("devices beyond the default set are not allowed".into());
    }
    if !policy.seccomp_unconfined && spec.seccomp == Seccomp::Unconfined {
        why.push("seccomp \"unconfined\" is not allowed".into());
    }
    if !policy.host_network && !spec.separates(NsKind::Net) {
        why.push("the host's network (no network namespace of its own) is not allowed".into());
    }
    if !policy.join_namespaces {
        for e in &spec.namespaces.enter {
            why.push(format!(
                "joining the {} namespace {} is not allowed",
                e.kind,
                e.path.display()
            ));
        }
    }
    if policy.require_user_namespace && !spec.unshares(NsKind::User) {
        why.push("it requires a user namespace of the container's own".into());
    }
    why
}

/// Whether host path `path` lies at or under directory `dir`, by its components (no
/// `..` can climb out: a path holding one is never under anything).
fn under(path: &str, dir: &str) -> bool {
    let p = Path::new(path);
    if !p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
        return false;
    }
    p.starts_with(Path::new(dir))
}

fn listed(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{MountPoint, NsEnter};

    fn locked() -> NodePolicy {
        NodePolicy {
            allow_capabilities: vec!["CAP_NET_ADMIN".into()],
            host_paths: vec!["/srv/volumes".into()],
            filesystems: vec!["tmpfs".into()],
            devices: false,
            seccomp_unconfined: false,
            host_network: false,
            join_namespaces: false,
            require_user_namespace: false,
        }
    }

    fn spec() -> ContainerSpec {
        let mut s = ContainerSpec::new("web", vec!["/bin/sh".into()], "/var/lib/r".into());
        s.namespaces.unshare = vec![NsKind::Mount, NsKind::Net, NsKind::Pid];
        s
    }

    fn bind(source: &str) -> MountPoint {
        MountPoint {
            source: source.into(),
            target: "/data".into(),
            fstype: None,
            options: None,
            readonly: false,
            noexec: false,
            restrict: false,
            propagation: None,
        }
    }

    #[test]
    fn a_locked_down_node_refuses_each_thing_by_name_and_the_default_allows_all() {
        let p = locked();
        assert_eq!(refusals(&p, &spec()), Vec::<String>::new());
        let mut s = spec();
        s.capabilities.allow = vec!["CAP_SYS_ADMIN".into(), "CAP_NET_ADMIN".into()];
        s.mounts = vec![
            bind("/"),
            bind("/srv/volumes/a"),
            bind("/srv/volumes/../../etc"),
            bind("/srv/volumes2"),
        ];
        let mut devtmpfs = bind("devtmpfs");
        devtmpfs.fstype = Some("devtmpfs".into());
        s.mounts.push(devtmpfs);
        s.seccomp = Seccomp::Unconfined;
        s.namespaces.unshare.retain(|k| *k != NsKind::Net);
        s.namespaces.enter.push(NsEnter {
            kind: NsKind::Pid,
            path: "/proc/1/ns/pid".into(),
        });
        let why = refusals(&p, &s);
        for want in [
            "capability CAP_SYS_ADMIN is not in its allow_capabilities",
            "a bind of host path / is outside its host_paths (/srv/volumes)",
            "a bind of host path /srv/volumes/../../etc is outside",
            "a bind of host path /srv/volumes2 is outside",
            "a devtmpfs mount is not in its filesystems (tmpfs)",
            "seccomp \"unconfined\" is not allowed",
            "the host's network",
            "joining the pid namespace /proc/1/ns/pid is not allowed",
        ] {
            assert!(why.iter().any(|w| w.contains(want)), "{want}: {why:?}");
        }
        assert_eq!(why.len(), 8, "{why:?}");
        assert_eq!(refusals(&NodePolicy::default(), &s), Vec::<String>::new());
        // `ALL` added is every capability outside the default set.
        let mut s = spec();
        s.capabilities.allow = vec!["ALL".into()];
        assert!(refusals(&p, &s).len() > 10);
        let mut s = spec();
        s.rootfs.path = "/".into();
        assert!(refusals(&p, &s)[0].contains("the host's own"));
        let p = NodePolicy {
            require_user_namespace: true,
            ..NodePolicy::default()
        };
        assert!(refusals(&p, &spec())[0].contains("user namespace"));
    }
}
