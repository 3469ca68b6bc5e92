//! The container model: plain serde data shared by the loader, the launcher, the runtime and
//! the cluster. Everything here is validated by the loader; the launcher trusts it.

use super::log_limits::LogLimits;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// One container definition, as resolved from a `.haco` file (or an OCI config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    /// Unique name on this host; also the default hostname and the cgroup leaf.
    pub name: String,
    /// Hostname inside the UTS namespace; `None` means the name.
    #[serde(default)]
    pub hostname: Option<String>,
    /// The command run as the container's main process (argv).
    pub init_command: Vec<String>,
    /// The whole environment of the command (it replaces the host's, as the original did).
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Working directory inside the container.
    #[serde(default)]
    pub workdir: Option<String>,
    /// `haconiwa run` returns once the container runs instead of waiting for it.
    #[serde(default)]
    pub daemonize: bool,
    /// The root filesystem and how the container enters it.
    pub rootfs: Rootfs,
    /// The OCI image the root comes from (`c.image`), as a canonical reference; once a
    /// node resolved it, pinned to the manifest's digest (`name:tag@sha256:…`). `None`:
    /// the root is `rootfs.path`, built by `bootstrap`.
    #[serde(default)]
    pub image: Option<String>,
    /// The signal that asks the command to stop (`kill` without `-s`, a cluster stop);
    /// SIGTERM when unset. An image's `StopSignal` fills it.
    #[serde(default)]
    pub stop_signal: Option<String>,
    /// How `haconiwa create` builds the root filesystem when it is missing.
    #[serde(default, with = "super::stored::bootstrap_codec")]
    pub bootstrap: Option<Bootstrap>,
    /// Shell steps run once inside the new root filesystem after bootstrap.
    #[serde(default)]
    pub provision: Vec<ProvisionStep>,
    /// Namespaces to create and to join.
    #[serde(default)]
    pub namespaces: Namespaces,
    /// Filesystems mounted inside the container besides the root.
    #[serde(default)]
    pub mounts: Vec<MountPoint>,
    /// The kernel filesystems mounted inside (proc, sys, dev, devpts, shm, tmp).
    #[serde(default = "SystemMount::defaults")]
    pub system_mounts: Vec<SystemMount>,
    /// The order of the two kinds of mounts, when it matters (an OCI config's
    /// `mounts`); empty: the kernel filesystems first, then `mounts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mount_order: Vec<MountRef>,
    /// cgroup settings, keyed by the name the user gave (v1 or v2 form; validated).
    #[serde(default)]
    pub cgroup: BTreeMap<String, String>,
    /// Capability changes on top of the default set.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Resource limits (setrlimit) applied before exec.
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    /// The user the command runs as (inside the user namespace when there is one).
    #[serde(default)]
    pub uid: Option<u32>,
    /// The group the command runs as.
    #[serde(default)]
    pub gid: Option<u32>,
    /// Supplementary groups.
    #[serde(default)]
    pub groups: Vec<u32>,
    /// Free-form labels: used by `cluster.count(#{label: value})` and placement.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `no_new_privs` before exec (on unless the definition turns it off).
    #[serde(default = "default_true")]
    pub no_new_privs: bool,
    /// Network set-up inside a new network namespace.
    #[serde(default)]
    pub network: Network,
    /// The system-call filter installed right before exec.
    #[serde(default)]
    pub seccomp: Seccomp,
    /// Devices the container may use beyond the default allowlist.
    #[serde(default)]
    pub devices: Vec<DeviceAllow>,
    /// What a cluster container does when its node loses the cluster (its lease runs
    /// out): stop (the default: never two copies) or keep running (availability first).
    #[serde(default)]
    pub on_disconnect: OnDisconnect,
    /// Its health check (`c.health(...)`), run by its node's agent (none: running counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<super::health::HealthCheck>,
    /// Its restart policy (`c.restart(...)`); none: not started again where it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<super::restart::RestartPolicy>,
    /// Ports of its node forwarded to its ports on the cluster network (`c.publish`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PublishedPort>,
    /// How much of its output its node keeps (`c.logs(#{ max_size, max_files })`).
    #[serde(default, skip_serializing_if = "LogLimits::is_default")]
    pub logs: LogLimits,
    /// Kernel parameters of its own namespaces (`net.*` with a network namespace,
    /// IPC ones with an IPC namespace), written under its /proc/sys before that is made
    /// read-only (an OCI config's `linux.sysctl`; checked by [`super::sysctl::is_namespaced`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctl: BTreeMap<String, String>,
    /// Paths hidden and paths made read-only, in place of the launcher's lists (an OCI
    /// config's `linux.maskedPaths` and `linux.readonlyPaths`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masks: Option<(Vec<String>, Vec<String>)>,
    /// The process's `oom_score_adj` (an OCI config's `process.oomScoreAdj`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i32>,
    /// The cluster's named volumes it mounts (`c.volume`): it runs where they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<super::volumes::VolumeMount>,
    /// The cluster's secrets it reads, as files of `/run/secrets` (`c.secret`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<super::volumes::SecretMount>,
}

/// What a cluster container does when its node is cut off from the cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDisconnect {
    /// Stopped when the node's lease runs out; the cluster replaces it only after that,
    /// so at most N copies ever run.
    #[default]
    Stop,
    /// Keeps running; the cluster replaces it anyway, so N+1 may run until the node is
    /// back (Nomad's `max_client_disconnect`, Kubernetes' default).
    Keep,
}

fn default_true() -> bool {
    true
}

impl ContainerSpec {
    /// A minimal spec: the name, a command and a root; everything else at its default.
    pub fn new(name: &str, init_command: Vec<String>, root: PathBuf) -> Self {
        ContainerSpec {
            name: name.to_string(),
            hostname: None,
            init_command,
            environment: BTreeMap::new(),
            workdir: None,
            daemonize: false,
            rootfs: Rootfs {
                path: root,
                mode: RootMode::PivotRoot,
                readonly: false,
                layers: Vec::new(),
                propagation: None,
            },
            image: None,
            stop_signal: None,
            bootstrap: None,
            provision: Vec::new(),
            namespaces: Namespaces::default(),
            mounts: Vec::new(),
            system_mounts: SystemMount::defaults(),
            mount_order: Vec::new(),
            cgroup: BTreeMap::new(),
            capabilities: Capabilities::default(),
            rlimits: Vec::new(),
            uid: None,
            gid: None,
            groups: Vec::new(),
            labels: BTreeMap::new(),
            no_new_privs: true,
            network: Network::default(),
            seccomp: Seccomp::default(),
            devices: Vec::new(),
            on_disconnect: OnDisconnect::Stop,
            health: None,
            restart: None,
            volumes: Vec::new(),
            secrets: Vec::new(),
            ports: Vec::new(),
            logs: LogLimits::default(),
            sysctl: BTreeMap::new(),
            masks: None,
            oom_score_adj: None,
        }
    }

    /// The hostname the container gets: the explicit one or its name.
    pub fn effective_hostname(&self) -> &str {
        self.hostname.as_deref().unwrap_or(&self.name)
    }

    /// Whether the container creates a namespace of this kind.
    pub fn unshares(&self, kind: NsKind) -> bool {
        self.namespaces.unshare.contains(&kind)
    }

    /// Whether the container's namespace of this kind is not the caller's: made or joined.
    pub fn separates(&self, kind: NsKind) -> bool {
        self.unshares(kind) || self.namespaces.enter.iter().any(|e| e.kind == kind)
    }
}

/// How the process enters its root filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RootMode {
    /// pivot_root inside a mount namespace (the only mode that starts; the host root is
    /// detached).
    PivotRoot,
    /// plain chroot: kept so that specs recorded by older versions still decode; the
    /// loader and the launcher refuse it, since root inside escapes a chroot.
    Chroot,
    /// chroot in the caller's mount table (mounts under the root removed at `delete`),
    /// as runc does for an OCI config without a mount namespace; only `create` makes it.
    HostMountTable,
}

/// The container's root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rootfs {
    /// Path on the host.
    pub path: PathBuf,
    /// pivot_root or chroot.
    pub mode: RootMode,
    /// Remount the root read-only after set-up.
    #[serde(default)]
    pub readonly: bool,
    /// An image's read-only layers, top first, as paths relative to `path` (then the
    /// image store: short names keep a mount of 100+ layers within the one page the
    /// kernel takes for mount options). Empty: `path` itself is the one read-only base.
    #[serde(default)]
    pub layers: Vec<String>,
    /// How the root mount propagates among the container's own mounts (an OCI
    /// config's `linux.rootfsPropagation`); `None`: private. Nothing propagates to or
    /// from the host either way: every mount is made private before the root is built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation: Option<Propagation>,
}

/// Mount propagation (an OCI config's `linux.rootfsPropagation` and a mount's
/// `shared`, `slave`, `private`, `unbindable` options).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Propagation {
    /// A new peer group: a mount under the root shows wherever the root is bound.
    Shared,
    /// Receives nothing here (its master would be the host's, which is private).
    Slave,
    /// The default.
    Private,
    /// Cannot be bound elsewhere.
    Unbindable,
}

/// Recipes that build a root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "strategy", rename_all = "snake_case", deny_unknown_fields)]
pub enum Bootstrap {
    /// The host's static busybox with its applet links and a minimal /etc.
    Busybox {
        /// Path of the static busybox binary on the host.
        #[serde(default)]
        busybox: Option<PathBuf>,
    },
    /// Named host binaries plus the shared libraries they load.
    Host {
        /// Absolute paths (or names looked up in PATH) of the binaries to copy.
        binaries: Vec<String>,
    },
    /// A tar archive (plain, gzip or xz) unpacked into the root.
    Tarball {
        /// Archive path on the host.
        archive: PathBuf,
    },
    /// A copy of an existing directory.
    Directory {
        /// Source directory on the host.
        source: PathBuf,
    },
    /// A Debian tree from `debootstrap` (when installed).
    Debootstrap {
        /// Suite, e.g. "bookworm".
        suite: String,
        /// Mirror URL; debootstrap's default when absent.
        #[serde(default)]
        mirror: Option<String>,
        /// Variant, e.g. "minbase".
        #[serde(default)]
        variant: Option<String>,
    },
}

impl Bootstrap {
    /// The name used in the DSL (`strategy:`).
    pub fn strategy(&self) -> &'static str {
        match self {
            Bootstrap::Busybox { .. } => "busybox",
            Bootstrap::Host { .. } => "host",
            Bootstrap::Tarball { .. } => "tarball",
            Bootstrap::Directory { .. } => "directory",
            Bootstrap::Debootstrap { .. } => "debootstrap",
        }
    }
}

/// One provisioning step: a shell script run once inside the root with `sh -e`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionStep {
    /// Name shown in progress lines and used to remember that the step ran.
    pub name: String,
    /// The script body.
    pub script: String,
}

/// Kinds of Linux namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NsKind {
    /// Hostname and domain name.
    Uts,
    /// System V IPC and POSIX message queues.
    Ipc,
    /// Process ids.
    Pid,
    /// Mount table.
    Mount,
    /// Network stack.
    Net,
    /// User and group ids.
    User,
    /// cgroup root view.
    Cgroup,
}

impl NsKind {
    /// Every kind, in the order namespaces are joined (user first).
    pub const ALL: [NsKind; 7] = [
        NsKind::User,
        NsKind::Ipc,
        NsKind::Uts,
        NsKind::Net,
        NsKind::Pid,
        NsKind::Cgroup,
        NsKind::Mount,
    ];

    /// The name used in the DSL.
    pub fn name(self) -> &'static str {
        match self {
            NsKind::Uts => "uts",
            NsKind::Ipc => "ipc",
            NsKind::Pid => "pid",
            NsKind::Mount => "mount",
            NsKind::Net => "net",
            NsKind::User => "user",
            NsKind::Cgroup => "cgroup",
        }
    }

    /// The file name under `/proc/PID/ns/`.
    pub fn proc_name(self) -> &'static str {
        match self {
            NsKind::Mount => "mnt",
            other => other.name(),
        }
    }

    /// Parses a DSL name; the original's aliases (`mnt`, `network`) are accepted.
    pub fn parse(s: &str) -> Option<NsKind> {
        Some(match s {
            "uts" => NsKind::Uts,
            "ipc" => NsKind::Ipc,
            "pid" => NsKind::Pid,
            "mount" | "mnt" => NsKind::Mount,
            "net" | "network" => NsKind::Net,
            "user" => NsKind::User,
            "cgroup" => NsKind::Cgroup,
            _ => return None,
        })
    }

    /// The list printed in errors.
    pub fn expected() -> &'static str {
        "uts, ipc, pid, mount, net, user, cgroup"
    }
}

impl fmt::Display for NsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Namespaces created (`unshare`) and joined (`enter`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespaces {
    /// New namespaces, sorted and without duplicates.
    #[serde(default)]
    pub unshare: Vec<NsKind>,
    /// Existing namespaces to join, by path (e.g. `/var/run/netns/blue`).
    #[serde(default)]
    pub enter: Vec<NsEnter>,
    /// uid map for a new user namespace.
    #[serde(default)]
    pub uid_map: Vec<IdMap>,
    /// gid map for a new user namespace.
    #[serde(default)]
    pub gid_map: Vec<IdMap>,
}

/// A namespace joined through a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NsEnter {
    /// Which namespace.
    pub kind: NsKind,
    /// The nsfs file to join.
    pub path: PathBuf,
}

/// One line of a uid_map or gid_map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdMap {
    /// First id inside the namespace.
    pub inside: u32,
    /// First id outside.
    pub outside: u32,
    /// Number of ids.
    pub count: u32,
}

/// A mount inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountPoint {
    /// Host path for a bind mount, or the device name for a filesystem mount.
    pub source: String,
    /// Absolute path inside the container.
    pub target: String,
    /// Filesystem type; `None` means a bind mount.
    #[serde(default)]
    pub fstype: Option<String>,
    /// Mount data (`size=10m`, ...).
    #[serde(default)]
    pub options: Option<String>,
    /// Read-only.
    #[serde(default)]
    pub readonly: bool,
    /// No program runs from it (`noexec`; an OCI config's option). A filesystem mount
    /// is always `nosuid,nodev`; a bind gets them when asked (`restrict`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub noexec: bool,
    /// A bind that is also `nosuid,nodev` (an OCI config's options).
    #[serde(default, skip_serializing_if = "is_false")]
    pub restrict: bool,
    /// Its propagation among the container's mounts (an OCI config's option); `None`:
    /// private, as every mount is made before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation: Option<Propagation>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Filesystem types a definition may not mount itself: each would show the host's
/// processes, kernel knobs or cgroups past the masked and read-only paths (the launcher
/// mounts /proc and /sys itself, with the masks).
pub const HOST_VIEW_FILESYSTEMS: [&str; 14] = [
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "debugfs",
    "tracefs",
    "securityfs",
    "bpf",
    "configfs",
    "efivarfs",
    "pstore",
    "fusectl",
    "binfmt_misc",
    "nsfs",
];

/// One mount in [`ContainerSpec::mount_order`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountRef {
    /// A kernel filesystem of `system_mounts`.
    System(SystemMount),
    /// The mount of `mounts` at this index.
    User(usize),
}

/// Kernel filesystems the launcher mounts inside the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SystemMount {
    /// /proc (with the usual masked paths).
    Procfs,
    /// /sys (read-only).
    Sysfs,
    /// /dev as a tmpfs with null, zero, full, random, urandom, tty, ptmx.
    Dev,
    /// /dev/pts, a new devpts instance.
    Devpts,
    /// /dev/shm.
    Shm,
    /// /tmp as a tmpfs.
    Tmpfs,
    /// /sys/fs/cgroup: the container's own cgroups, read-only (each hierarchy's
    /// directory of the container bound there; an OCI config's `cgroup` mount).
    Cgroup,
}

impl SystemMount {
    /// What a container gets without asking.
    pub fn defaults() -> Vec<SystemMount> {
        vec![
            SystemMount::Procfs,
            SystemMount::Sysfs,
            SystemMount::Dev,
            SystemMount::Devpts,
            SystemMount::Shm,
        ]
    }

    /// Parses the names of the original's `mount_independent`.
    pub fn parse(s: &str) -> Option<SystemMount> {
        Some(match s {
            "procfs" | "proc" => SystemMount::Procfs,
            "sysfs" | "sys" => SystemMount::Sysfs,
            "dev" | "devtmpfs" => SystemMount::Dev,
            "devpts" => SystemMount::Devpts,
            "shm" => SystemMount::Shm,
            "tmpfs" | "tmp" => SystemMount::Tmpfs,
            "cgroup" => SystemMount::Cgroup,
            _ => return None,
        })
    }
}

/// Capability changes relative to the default set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Start from the empty set instead of Docker's default 14.
    #[serde(default)]
    pub reset: bool,
    /// Capabilities added to the container's (bounding) set (canonical `CAP_*` names;
    /// `ALL` means every one).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Capabilities removed.
    #[serde(default)]
    pub drop: Vec<String>,
    /// Capabilities raised as ambient ones: what a non-root `uid` really holds (it holds
    /// none otherwise, as with Docker). Each is part of the container's set too.
    #[serde(default)]
    pub ambient: Vec<String>,
}

/// The system-call filter of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Seccomp {
    /// haconiwa's built-in profile, with the behaviour of Docker's default.
    #[default]
    Default,
    /// No filter at all (`c.seccomp = "unconfined"`).
    Unconfined,
    /// A Docker/OCI-format JSON profile file on the host that runs the container.
    Profile(PathBuf),
}

/// One device the container may use, besides the default allowlist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceAllow {
    /// A host device node (e.g. `/dev/fuse`) also created at the same path inside;
    /// `None` for a bare rule.
    #[serde(default)]
    pub path: Option<String>,
    /// `c` (character), `b` (block) or `a` (both); taken from the node when `path` is set.
    #[serde(default)]
    pub kind: Option<char>,
    /// Major number; `None` means any (or the node's, when `path` is set).
    #[serde(default)]
    pub major: Option<u32>,
    /// Minor number; `None` means any (or the node's).
    #[serde(default)]
    pub minor: Option<u32>,
    /// Any of `r`, `w`, `m` (read, write, mknod).
    pub access: String,
    /// The node's permission bits when it is made from `kind`, `major` and `minor` (an
    /// OCI config's device, which the host need not have); `None`: copied from the
    /// host's node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Its owner inside (with `mode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<(u32, u32)>,
}

/// One setrlimit call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rlimit {
    /// Lower-case resource name without the `RLIMIT_` prefix (`nofile`).
    pub resource: String,
    /// Soft limit; `None` is unlimited.
    pub soft: Option<u64>,
    /// Hard limit; `None` is unlimited.
    pub hard: Option<u64>,
}

/// Networking inside a new network namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Bring the loopback interface up (default on).
    #[serde(default = "default_true")]
    pub loopback: bool,
    /// A veth pair whose host end joins a bridge, as the original's `network.bridge_name`.
    #[serde(default)]
    pub bridge: Option<BridgeNetwork>,
    /// In a cluster with a network (`[network]` of the supervisors), a container gets an
    /// address of it, a name in its DNS and routes to the others (default on; off:
    /// loopback only). Ignored by `run` and when `bridge` is set.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub cluster: bool,
}

fn is_true(b: &bool) -> bool {
    *b
}

impl Default for Network {
    fn default() -> Self {
        Network {
            loopback: true,
            bridge: None,
            cluster: true,
        }
    }
}

/// A port of the node that forwards to a port of the container (TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedPort {
    /// The container's port.
    pub container: u16,
    /// The node's port; None: one the cluster allocates (shown by `containers`).
    #[serde(default)]
    pub host: Option<u16>,
}

/// A veth pair from the container to a host bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeNetwork {
    /// Host bridge (created when missing).
    pub bridge: String,
    /// Container address in CIDR form, e.g. `10.0.5.2/24`.
    pub address: String,
    /// Default gateway inside, if any.
    #[serde(default)]
    pub gateway: Option<String>,
    /// The veth is not a port of the bridge: the host routes the address to it (a /32
    /// inside, the gateway reached `onlink`), so no bridge is on the data path. The
    /// bridge only holds the gateway address (the cluster network).
    #[serde(default, skip_serializing_if = "is_false")]
    pub routed: bool,
}
