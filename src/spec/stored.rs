//! How a [`ContainerSpec`] is kept in the replicated state (the Raft log, snapshots, the
//! store's rows), which a binary encoding (bincode) writes: as one string, a marker and
//! the spec's JSON, so that a field added later (with a default) does not change how
//! older entries read. Specs written before this form (bincode's field by field, of the
//! fields up to `on_disconnect`) are still read: an upgraded member keeps its state and
//! its log. A member of the older version cannot read the new form and refuses such an
//! entry as undecodable, as docs/multi-host.md says of upgrades (followers first).
//!
//! Human-readable encodings (JSON: the etcd mirror, the state digest) write the spec as
//! it is.

use super::model::*;
use serde::de::{Error as _, SeqAccess, Visitor};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// What starts the stored form. A container name never starts with a NUL (the name
/// rule), so the older form, whose first field is the name, is never mistaken for it.
const MARKER: &str = "\u{0}haconiwa-spec-json:";

/// Fields of the older form, in their order.
const OLD_FIELDS: usize = 24;

/// `#[serde(with = "crate::spec::stored")]` on a `ContainerSpec` field.
pub fn serialize<S: Serializer>(spec: &ContainerSpec, s: S) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() {
        return spec.serialize(s);
    }
    let json = serde_json::to_string(spec).map_err(S::Error::custom)?;
    format!("{MARKER}{json}").serialize(s)
}

/// The other half of [`serialize`]: the stored form, or the older one.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ContainerSpec, D::Error> {
    if d.is_human_readable() {
        return ContainerSpec::deserialize(d);
    }
    d.deserialize_tuple(OLD_FIELDS, Stored)
}

/// The root as the older form kept it (before an image's layers).
#[derive(Deserialize)]
struct OldRootfs {
    path: PathBuf,
    mode: RootMode,
    readonly: bool,
}

/// The network as the older form kept it (before the cluster network).
#[derive(Deserialize)]
struct OldNetwork {
    loopback: bool,
    bridge: Option<BridgeNetwork>,
}

struct Stored;

impl<'de> Visitor<'de> for Stored {
    type Value = ContainerSpec;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a stored container spec")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ContainerSpec, A::Error> {
        let missing = || A::Error::custom("a stored container spec ends early");
        let first: String = seq.next_element()?.ok_or_else(missing)?;
        if let Some(json) = first.strip_prefix(MARKER) {
            return serde_json::from_str(json).map_err(A::Error::custom);
        }
        // The older form, field by field; `first` was the name.
        macro_rules! next {
            () => {
                seq.next_element()?.ok_or_else(missing)?
            };
        }
        let hostname: Option<String> = next!();
        let init_command: Vec<String> = next!();
        let environment: BTreeMap<String, String> = next!();
        let workdir: Option<String> = next!();
        let daemonize: bool = next!();
        let rootfs: OldRootfs = next!();
        let bootstrap_text: Option<String> = next!();
        let network = |n: OldNetwork| Network {
            loopback: n.loopback,
            bridge: n.bridge,
            cluster: true,
        };
        let bootstrap = bootstrap_text
            .map(|t| serde_json::from_str::<Bootstrap>(&t))
            .transpose()
            .map_err(A::Error::custom)?;
        Ok(ContainerSpec {
            name: first,
            hostname,
            init_command,
            environment,
            workdir,
            daemonize,
            rootfs: Rootfs {
                path: rootfs.path,
                mode: rootfs.mode,
                readonly: rootfs.readonly,
                layers: Vec::new(),
                propagation: None,
            },
            image: None,
            stop_signal: None,
            bootstrap,
            provision: next!(),
            namespaces: next!(),
            mounts: next!(),
            system_mounts: next!(),
            mount_order: Vec::new(),
            cgroup: next!(),
            capabilities: next!(),
            rlimits: next!(),
            uid: next!(),
            gid: next!(),
            groups: next!(),
            labels: next!(),
            no_new_privs: next!(),
            network: network(next!()),
            seccomp: next!(),
            devices: next!(),
            on_disconnect: next!(),
            health: None,
            restart: None,
            ports: Vec::new(),
            logs: Default::default(),
            sysctl: BTreeMap::new(),
            masks: None,
            oom_score_adj: None,
            volumes: Vec::new(),
            secrets: Vec::new(),
        })
    }
}

/// `bootstrap` is internally tagged (`"strategy": "busybox"`) in JSON and TOML, which a
/// binary encoding (bincode, the replicated state's) cannot decode: there it travels as
/// its JSON text, a few bytes once per definition.
pub mod bootstrap_codec {
    use super::Bootstrap;
    use serde::de::Error as _;
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(b: &Option<Bootstrap>, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return b.serialize(s);
        }
        let text = b
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(S::Error::custom)?;
        text.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Bootstrap>, D::Error> {
        if d.is_human_readable() {
            return Option::<Bootstrap>::deserialize(d);
        }
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Holder {
        #[serde(with = "crate::spec::stored")]
        spec: ContainerSpec,
        after: u64,
    }

    /// The spec as the older version wrote it (its fields, in order, the root without
    /// layers, bootstrap as its JSON text).
    #[derive(Serialize)]
    struct OldSpec<'a> {
        name: &'a str,
        hostname: Option<String>,
        init_command: Vec<String>,
        environment: BTreeMap<String, String>,
        workdir: Option<String>,
        daemonize: bool,
        rootfs: (PathBuf, RootMode, bool),
        bootstrap: Option<String>,
        provision: Vec<ProvisionStep>,
        namespaces: Namespaces,
        mounts: Vec<MountPoint>,
        system_mounts: Vec<SystemMount>,
        cgroup: BTreeMap<String, String>,
        capabilities: Capabilities,
        rlimits: Vec<Rlimit>,
        uid: Option<u32>,
        gid: Option<u32>,
        groups: Vec<u32>,
        labels: BTreeMap<String, String>,
        no_new_privs: bool,
        network: Network,
        seccomp: Seccomp,
        devices: Vec<DeviceAllow>,
        on_disconnect: OnDisconnect,
    }

    fn bin<T: Serialize>(v: &T) -> Vec<u8> {
        bincode::serde::encode_to_vec(v, bincode::config::standard()).unwrap()
    }

    fn unbin(b: &[u8]) -> Holder {
        bincode::serde::decode_from_slice(b, bincode::config::standard())
            .unwrap()
            .0
    }

    #[test]
    fn the_older_form_still_reads_and_the_new_one_round_trips() {
        let mut spec =
            ContainerSpec::new("web", vec!["/bin/sleep".into(), "9".into()], "/r".into());
        spec.bootstrap = Some(Bootstrap::Busybox { busybox: None });
        spec.labels.insert("app".into(), "web".into());
        spec.uid = Some(7);
        spec.on_disconnect = OnDisconnect::Keep;
        let old = OldSpec {
            name: "web",
            hostname: None,
            init_command: spec.init_command.clone(),
            environment: BTreeMap::new(),
            workdir: None,
            daemonize: false,
            rootfs: (PathBuf::from("/r"), RootMode::PivotRoot, false),
            bootstrap: Some(r#"{"strategy":"busybox","busybox":null}"#.into()),
            provision: Vec::new(),
            namespaces: Namespaces::default(),
            mounts: Vec::new(),
            system_mounts: SystemMount::defaults(),
            cgroup: BTreeMap::new(),
            capabilities: Capabilities::default(),
            rlimits: Vec::new(),
            uid: Some(7),
            gid: None,
            groups: Vec::new(),
            labels: spec.labels.clone(),
            no_new_privs: true,
            network: Network::default(),
            seccomp: Seccomp::Default,
            devices: Vec::new(),
            on_disconnect: OnDisconnect::Keep,
        };
        // The older form, with what follows it in the entry read in its place.
        let bytes = bin(&(old, 42u64));
        assert_eq!(
            unbin(&bytes),
            Holder {
                spec: spec.clone(),
                after: 42
            }
        );
        // The new form, with an image and its layers.
        spec.image = Some("localhost:5000/web:1@sha256:00".into());
        spec.stop_signal = Some("SIGQUIT".into());
        spec.rootfs.layers = vec!["l/abc".into()];
        let h = Holder { spec, after: 43 };
        assert_eq!(unbin(&bin(&h)), h);
        // JSON as it is.
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(json["spec"]["image"], "localhost:5000/web:1@sha256:00");
    }
}
