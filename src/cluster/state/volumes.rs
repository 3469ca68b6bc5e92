//! Named volumes: storage that lives on one node and outlives the containers that mount
//! it (`haconiwa volume create NAME --node N`). The state records where each is and
//! what it is; the node makes it (`supervisor::volumes`). A volume in use by a
//! container that has not finished cannot be removed.

use super::apply::{refused, Events};
use super::{ClusterState, EventKind, NodeId, NodeStatus, Response};
use serde::{Deserialize, Serialize};

/// What backs a volume on its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumeKind {
    /// A directory of the node's disk; with a size, a file system of its own of that
    /// size (a loop-mounted ext4 image), so one volume cannot fill the node's disk.
    Host,
    /// A tmpfs of its size: in memory, kept while the node runs, gone at its reboot.
    Tmpfs,
}

impl VolumeKind {
    /// The name used in the API.
    pub fn name(self) -> &'static str {
        match self {
            VolumeKind::Host => "host",
            VolumeKind::Tmpfs => "tmpfs",
        }
    }
}

/// Who uses the volumes and the secrets (`ClusterState::storage_users`).
#[derive(Debug, Default)]
pub struct StorageUsers {
    /// Volume name → the containers mounting it.
    pub volumes: std::collections::BTreeMap<String, Vec<String>>,
    /// Secret name → the containers reading it.
    pub secrets: std::collections::BTreeMap<String, Vec<String>>,
}

/// A named volume as the cluster records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// Its name (the one name rule).
    pub name: String,
    /// The node that holds it: containers mounting it run there only.
    pub node: NodeId,
    /// What backs it.
    pub kind: VolumeKind,
    /// Its size in bytes (required for a tmpfs; none: a host directory as large as
    /// the node's disk lets it grow).
    pub size: Option<u64>,
    /// Log index of its creation (set by `apply`).
    pub created_index: u64,
}

impl ClusterState {
    /// Named volumes, by name.
    pub fn volumes(&self) -> &super::Table<String, VolumeRecord> {
        &self.volumes
    }

    /// The refusal to remove the volume or secret `name` while `users` use it.
    pub(super) fn refused_in_use(
        what: &str,
        name: &str,
        users: Option<Vec<String>>,
    ) -> Option<Response> {
        let users = users.filter(|u| !u.is_empty())?;
        Some(refused(format!(
            "{what} {name} is in use by {}: stop them first",
            users.join(", ")
        )))
    }

    /// The containers that have not finished, by the volumes they mount and by the
    /// secrets they read: one pass over the containers for a whole listing.
    pub fn storage_users(&self) -> StorageUsers {
        let mut users = StorageUsers::default();
        for c in self.containers.values().filter(|c| !c.observed.is_final()) {
            let Some(spec) = self.definition_spec(c) else {
                continue;
            };
            for v in crate::spec::volumes::volume_names(spec) {
                users
                    .volumes
                    .entry(v.to_string())
                    .or_default()
                    .push(c.id.clone());
            }
            for m in &spec.secrets {
                users
                    .secrets
                    .entry(m.name.clone())
                    .or_default()
                    .push(c.id.clone());
            }
        }
        users
    }

    pub(super) fn create_volume(&mut self, ev: &mut Events, v: &VolumeRecord) -> Response {
        if let Err(e) = crate::spec::names::check("volume", &v.name) {
            return refused(e.to_string());
        }
        if let Some(old) = self.volumes.get(&v.name) {
            return refused(format!(
                "volume {} already exists on node {}",
                v.name, old.node
            ));
        }
        match self.nodes.get(&v.node) {
            None => return refused(format!("no node {}", v.node)),
            Some(n) if n.status == NodeStatus::Left => {
                return refused(format!("node {} left the cluster", v.node))
            }
            Some(_) => {}
        }
        if v.kind == VolumeKind::Tmpfs && v.size.is_none() {
            return refused(format!("tmpfs volume {} needs a size", v.name));
        }
        let mut v = v.clone();
        v.created_index = ev.index;
        let size = v.size.map(|s| format!(", {s} bytes")).unwrap_or_default();
        let what = format!(
            "volume {} on node {} ({}{size})",
            v.name,
            v.node,
            v.kind.name()
        );
        ev.push(
            EventKind::VolumeCreated,
            None,
            self.nodes.get(&v.node),
            what,
        );
        self.touched.volumes.insert(v.name.clone());
        self.revision += 1;
        self.volumes.insert(v.name.clone(), v);
        Response::Ok
    }

    pub(super) fn remove_volume(&mut self, ev: &mut Events, name: &str) -> Response {
        if !self.volumes.contains_key(name) {
            return refused(format!("no volume {name}"));
        }
        let users = self.storage_users().volumes.remove(name);
        if let Some(no) = Self::refused_in_use("volume", name, users) {
            return no;
        }
        self.touched.volumes.insert(name.to_string());
        self.revision += 1;
        if let Some(v) = self.volumes.remove(name) {
            let what = format!("volume {name} of node {}", v.node);
            ev.push(
                EventKind::VolumeRemoved,
                None,
                self.nodes.get(&v.node),
                what,
            );
        }
        Response::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::state::{Command, Definition, Observed, SecretRecord};
    use crate::spec::volumes::{SecretMount, VolumeMount};
    use crate::spec::ContainerSpec;
    use std::collections::BTreeMap;

    fn vol(name: &str, node: NodeId, kind: VolumeKind, size: Option<u64>) -> Command {
        Command::CreateVolume {
            volume: VolumeRecord {
                name: name.into(),
                node,
                kind,
                size,
                created_index: 99,
            },
        }
    }

    /// A state with node 1 and a container of a definition mounting `data` and reading
    /// the secret `pw`.
    fn with_user() -> (ClusterState, String) {
        let mut s = ClusterState::default();
        s.apply(
            1,
            &Command::AddNode {
                id: None,
                addr: "a".into(),
                labels: BTreeMap::new(),
            },
        );
        let mut spec = ContainerSpec::new("u", vec!["/bin/true".into()], "/r".into());
        spec.volumes.push(VolumeMount {
            name: "data".into(),
            target: "/data".into(),
            readonly: false,
        });
        spec.secrets.push(SecretMount { name: "pw".into() });
        assert_eq!(
            s.apply(2, &vol("data", 1, VolumeKind::Host, None)).0,
            Response::Ok
        );
        let secret = SecretRecord {
            name: "pw".into(),
            version: 7,
            key_id: "k".into(),
            sealed: vec![1, 2, 3],
            size: 3,
            updated_index: 0,
        };
        assert_eq!(
            s.apply(3, &Command::PutSecret { secret }).0,
            Response::Version(1)
        );
        let (r, _) = s.apply(
            4,
            &Command::Spawn {
                digest: "d".into(),
                definition: Some(Definition {
                    name: "u".into(),
                    digest: "d".into(),
                    text: String::new(),
                    base_dir: String::new(),
                    spec,
                    registered_index: 0,
                }),
                nodes: vec![1],
                rule: None,
            },
        );
        let Response::Spawned(ids) = r else {
            panic!("{r:?}")
        };
        (s, ids[0].clone())
    }

    #[test]
    fn volumes_are_recorded_once_and_not_removed_while_in_use() {
        let (mut s, id) = with_user();
        let v = &s.volumes()["data"];
        assert_eq!((v.node, v.created_index), (1, 2), "the index is apply's");
        assert!(s.take_touched().volumes.contains("data"));
        let again = s
            .apply(5, &vol("data", 1, VolumeKind::Tmpfs, Some(1 << 20)))
            .0;
        assert_eq!(
            again,
            Response::Refused("volume data already exists on node 1".into())
        );
        for (cmd, why) in [
            (vol("x", 9, VolumeKind::Host, None), "no node 9"),
            (
                vol("t", 1, VolumeKind::Tmpfs, None),
                "tmpfs volume t needs a size",
            ),
            (
                vol("../x", 1, VolumeKind::Host, None),
                "invalid volume name",
            ),
        ] {
            let r = s.apply(6, &cmd).0;
            assert!(
                matches!(&r, Response::Refused(m) if m.contains(why)),
                "{r:?}"
            );
        }
        let rm = Command::RemoveVolume {
            name: "data".into(),
        };
        assert_eq!(
            s.apply(7, &rm).0,
            Response::Refused(format!("volume data is in use by {id}: stop them first"))
        );
        // A secret too.
        let rm_secret = Command::RemoveSecret { name: "pw".into() };
        assert!(matches!(s.apply(8, &rm_secret).0, Response::Refused(m) if m.contains(&id)));
        // Once it has ended, both go.
        let ended = Command::Observe {
            id: id.clone(),
            node: 1,
            observed: Observed::Exited {
                code: Some(0),
                oom_killed: false,
                error: None,
            },
        };
        s.apply(9, &ended);
        s.take_touched();
        assert_eq!(s.apply(10, &rm).0, Response::Ok);
        assert_eq!(s.apply(11, &rm_secret).0, Response::Ok);
        assert!(s.volumes().is_empty() && s.secrets().is_empty());
        let t = s.take_touched();
        assert!(t.volumes.contains("data") && t.secrets.contains("pw"));
        assert_eq!(
            s.apply(12, &rm).0,
            Response::Refused("no volume data".into())
        );
    }

    #[test]
    fn a_secret_s_versions_are_numbered_by_apply_and_the_cap_holds() {
        let (mut s, _) = with_user();
        let put = |size: u64| Command::PutSecret {
            secret: SecretRecord {
                name: "pw".into(),
                version: 0,
                key_id: "k".into(),
                sealed: vec![9],
                size,
                updated_index: 0,
            },
        };
        assert_eq!(s.apply(5, &put(4)).0, Response::Version(2));
        assert_eq!(s.secrets()["pw"].updated_index, 5);
        let big = crate::spec::volumes::MAX_SECRET_BYTES as u64 + 1;
        assert!(matches!(s.apply(6, &put(big)).0, Response::Refused(_)));
        assert_eq!(s.secrets()["pw"].version, 2);
        // What a debug print shows: never the sealed bytes.
        assert!(!format!("{:?}", s.secrets()["pw"]).contains("sealed"));
        // The state round-trips through its encoding with both tables.
        let bin = bincode::serde::encode_to_vec(&s, bincode::config::standard()).unwrap();
        let (back, _): (ClusterState, _) =
            bincode::serde::decode_from_slice(&bin, bincode::config::standard()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.volumes().len(), 1);
    }
}
