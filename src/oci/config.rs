//! An OCI bundle's `config.json` (runtime-spec, parsed into `oci-spec`'s types) turned
//! into the one container model the `.haco` loader produces, so both front doors share
//! one launch path. What the model cannot carry yet is refused by name (never dropped
//! in silence), or, where it only weakens nothing, named in a warning.

use crate::spec::{
    Capabilities, ContainerSpec, DeviceAllow, IdMap, MountPoint, MountRef, NsEnter, NsKind,
    Propagation, Rlimit, RootMode, Rootfs, Seccomp, SystemMount,
};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why a bundle cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `config.json` could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `config.json` is not a runtime-spec configuration.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where serde stopped.
        line: usize,
        /// The column there.
        column: usize,
        /// What it found.
        message: String,
    },
    /// A field whose meaning the launcher does not (yet) carry out.
    #[error("{field}: {why}")]
    Unsupported {
        /// The field, as runtime-spec names it (`linux.sysctl`).
        field: String,
        /// Why, and what to do.
        why: String,
    },
}

fn unsupported(field: impl Into<String>, why: impl Into<String>) -> ConfigError {
    ConfigError::Unsupported {
        field: field.into(),
        why: why.into(),
    }
}

/// A bundle, ready for the launcher.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The container as the launcher takes it (the seccomp profile still to be written
    /// where the lifecycle keeps it: see `seccomp`).
    pub spec: ContainerSpec,
    /// `linux.seccomp`, as JSON text in the profile format the launcher reads; `None`:
    /// no filter (runtime-spec: a config without `linux.seccomp` gets none).
    pub seccomp: Option<String>,
    /// The cgroup parent and leaf (`linux.cgroupsPath`, or `haconiwa-oci/ID`).
    pub cgroup: (String, String),
    /// `process.terminal`.
    pub terminal: bool,
    /// `annotations`, reported by `state`.
    pub annotations: BTreeMap<String, String>,
    /// `hooks`.
    pub hooks: Option<oci_spec::runtime::Hooks>,
    /// What is ignored, in words (printed as warnings).
    pub warnings: Vec<String>,
}

/// Reads `DIR/config.json`, with warnings: capabilities this host's kernel does not
/// know are dropped with a warning, as runc does (a newer engine's default list must
/// not fail on an older kernel).
pub fn read(dir: &Path) -> Result<(Spec, Vec<String>), ConfigError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let parse_error = |e: serde_json::Error| ConfigError::Parse {
        path: path.clone(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    };
    let first = match serde_json::from_str::<Spec>(&text) {
        Ok(spec) => return Ok((spec, Vec::new())),
        Err(e) => e,
    };
    let Ok(mut value) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Err(parse_error(first));
    };
    let mut warnings = Vec::new();
    if let Some(sets) = value
        .pointer_mut("/process/capabilities")
        .and_then(|c| c.as_object_mut())
    {
        for (set, list) in sets.iter_mut() {
            if let Some(names) = list.as_array_mut() {
                names.retain(|n| {
                    let known = n
                        .as_str()
                        .is_some_and(|s| s.parse::<caps::Capability>().is_ok());
                    if !known {
                        warnings.push(format!(
                            "process.capabilities.{set}: {n} is not a capability of this kernel; ignored"
                        ));
                    }
                    known
                });
            }
        }
    }
    if warnings.is_empty() {
        return Err(parse_error(first));
    }
    serde_json::from_value(value)
        .map(|spec| (spec, warnings))
        .map_err(|_| parse_error(first))
}

/// A serde-named enum value as its name (`CAP_KILL`, `RLIMIT_NOFILE`, `network`).
fn serde_name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}

fn ns_kind(t: LinuxNamespaceType) -> Result<NsKind, ConfigError> {
    Ok(match t {
        LinuxNamespaceType::Mount => NsKind::Mount,
        LinuxNamespaceType::Cgroup => NsKind::Cgroup,
        LinuxNamespaceType::Uts => NsKind::Uts,
        LinuxNamespaceType::Ipc => NsKind::Ipc,
        LinuxNamespaceType::User => NsKind::User,
        LinuxNamespaceType::Pid => NsKind::Pid,
        LinuxNamespaceType::Network => NsKind::Net,
        other => {
            return Err(unsupported(
                "linux.namespaces",
                format!("the {} namespace is not supported", serde_name(&other)),
            ))
        }
    })
}

/// The container of bundle `dir` named `id`.
pub fn translate(cfg: &Spec, dir: &Path, id: &str) -> Result<Bundle, ConfigError> {
    let mut warnings = Vec::new();
    let process = cfg
        .process()
        .as_ref()
        .ok_or_else(|| unsupported("process", "required to create a container"))?;
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(unsupported("process.args", "must name a command"));
    }
    let root = cfg
        .root()
        .as_ref()
        .ok_or_else(|| unsupported("root", "required: the bundle's root filesystem"))?;
    let root_path = if root.path().is_absolute() {
        root.path().clone()
    } else {
        dir.join(root.path())
    };
    let mut spec = ContainerSpec::new(id, args, root_path.clone());
    spec.rootfs = Rootfs {
        path: root_path,
        mode: RootMode::PivotRoot,
        readonly: root.readonly().unwrap_or(false),
        layers: Vec::new(),
        propagation: None,
    };
    spec.hostname = cfg.hostname().clone();
    apply_process(&mut spec, process, &mut warnings);
    for (stage, list) in super::hooks::stages(cfg.hooks().as_ref()) {
        for (i, h) in list.iter().enumerate() {
            if !h.path().is_absolute() {
                return Err(unsupported(
                    format!("hooks.{stage}[{i}].path"),
                    format!("'{}' is not absolute", h.path().display()),
                ));
            }
            if h.timeout().is_some_and(|t| t <= 0) {
                return Err(unsupported(
                    format!("hooks.{stage}[{i}].timeout"),
                    "must be more than 0 seconds",
                ));
            }
        }
    }
    let (mut system_mounts, mounts, order) = mounts(cfg, &mut warnings)?;
    // Sorted as a definition's are: `mount_order` carries the order.
    system_mounts.sort();
    spec.system_mounts = system_mounts;
    spec.mounts = mounts;
    spec.mount_order = order;
    let linux = cfg
        .linux()
        .as_ref()
        .ok_or_else(|| unsupported("linux", "required on Linux"))?;
    spec.namespaces.unshare.clear();
    for ns in linux.namespaces().iter().flatten() {
        let kind = ns_kind(ns.typ())?;
        match ns.path() {
            Some(p) => spec.namespaces.enter.push(NsEnter {
                kind,
                path: p.clone(),
            }),
            None if !spec.namespaces.unshare.contains(&kind) => spec.namespaces.unshare.push(kind),
            None => {}
        }
    }
    spec.namespaces.unshare.sort();
    if !spec.separates(NsKind::Mount) {
        spec.rootfs.mode = RootMode::HostMountTable;
        warnings.push(
            "linux.namespaces has no mount namespace: the container's mounts go into this runtime's mount table (until delete) and its root is entered with chroot, which root inside can escape"
                .into(),
        );
    }
    let map = |m: &oci_spec::runtime::LinuxIdMapping| IdMap {
        inside: m.container_id(),
        outside: m.host_id(),
        count: m.size(),
    };
    spec.namespaces.uid_map = linux.uid_mappings().iter().flatten().map(map).collect();
    spec.namespaces.gid_map = linux.gid_mappings().iter().flatten().map(map).collect();
    if spec.hostname.is_some() && !spec.separates(NsKind::Uts) {
        return Err(unsupported(
            "hostname",
            "set without a uts namespace of the container's own: it would rename the host",
        ));
    }
    for (k, v) in linux.sysctl().iter().flatten() {
        crate::spec::sysctl::is_namespaced(&spec, k)
            .map_err(|why| unsupported(format!("linux.sysctl.{k}"), why))?;
        spec.sysctl.insert(k.clone(), v.clone());
    }
    spec.rootfs.propagation = match linux.rootfs_propagation().as_deref() {
        None => None,
        Some("private") | Some("rprivate") => Some(Propagation::Private),
        Some("shared") | Some("rshared") => Some(Propagation::Shared),
        Some("slave") | Some("rslave") => Some(Propagation::Slave),
        Some("unbindable") | Some("runbindable") => Some(Propagation::Unbindable),
        Some(other) => {
            return Err(unsupported(
                "linux.rootfsPropagation",
                format!("'{other}' is not a propagation (shared, slave, private, unbindable)"),
            ))
        }
    };
    if linux.masked_paths().is_some() || linux.readonly_paths().is_some() {
        spec.masks = Some((
            linux.masked_paths().clone().unwrap_or_default(),
            linux.readonly_paths().clone().unwrap_or_default(),
        ));
    }
    if linux.mount_label().is_some() {
        warnings.push("linux.mountLabel ignored: this host runs no SELinux".into());
    }
    for d in linux.devices().iter().flatten() {
        spec.devices.push(DeviceAllow {
            path: Some(d.path().to_string_lossy().into_owned()),
            kind: serde_name(&d.typ()).chars().next(),
            major: u32::try_from(d.major()).ok(),
            minor: u32::try_from(d.minor()).ok(),
            access: "rwm".into(),
            mode: Some(d.file_mode().unwrap_or(0o666) & 0o7777),
            owner: Some((d.uid().unwrap_or(0), d.gid().unwrap_or(0))),
        });
    }
    if let Some(res) = linux.resources() {
        resources(res, &mut spec, &mut warnings)?;
    }
    spec.network.loopback = spec.unshares(NsKind::Net);
    spec.network.cluster = false;
    spec.seccomp = Seccomp::Unconfined;
    let seccomp = match linux.seccomp() {
        Some(s) => Some(
            serde_json::to_string(s).map_err(|e| unsupported("linux.seccomp", e.to_string()))?,
        ),
        None => None,
    };
    let cgroup = cgroup_place(linux.cgroups_path().as_deref(), id)?;
    Ok(Bundle {
        spec,
        seccomp,
        cgroup,
        terminal: process.terminal().unwrap_or(false),
        hooks: cfg.hooks().clone(),
        annotations: cfg
            .annotations()
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        warnings,
    })
}

/// A process of the config (or of `exec --process`) on top of a container: its
/// environment, working directory, identity, capabilities, limits and `no_new_privs`.
pub fn apply_process(
    spec: &mut ContainerSpec,
    process: &oci_spec::runtime::Process,
    warnings: &mut Vec<String>,
) {
    if let Some(args) = process.args().as_ref().filter(|a| !a.is_empty()) {
        spec.init_command = args.clone();
    }
    spec.environment = process
        .env()
        .iter()
        .flatten()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect();
    spec.workdir = Some(process.cwd().to_string_lossy().into_owned());
    let user = process.user();
    spec.uid = Some(user.uid());
    spec.gid = Some(user.gid());
    spec.groups = user.additional_gids().clone().unwrap_or_default();
    spec.no_new_privs = process.no_new_privileges().unwrap_or(false);
    spec.capabilities = capabilities(process.capabilities().as_ref());
    spec.rlimits = process
        .rlimits()
        .iter()
        .flatten()
        .map(|r| Rlimit {
            resource: serde_name(&r.typ())
                .trim_start_matches("RLIMIT_")
                .to_ascii_lowercase(),
            soft: Some(r.soft()).filter(|v| *v != u64::MAX),
            hard: Some(r.hard()).filter(|v| *v != u64::MAX),
        })
        .collect();
    if process.apparmor_profile().is_some() {
        warnings.push("process.apparmorProfile ignored: this host runs no AppArmor".into());
    }
    if process.selinux_label().is_some() {
        warnings.push("process.selinuxLabel ignored: this host runs no SELinux".into());
    }
    if let Some(adj) = process.oom_score_adj() {
        spec.oom_score_adj = Some(adj);
    }
}

/// The OCI sets as the model's: start from nothing, allow what any set names (the
/// bounding set bounds them all), raise the ambient ones.
fn capabilities(c: Option<&oci_spec::runtime::LinuxCapabilities>) -> Capabilities {
    let mut allow: Vec<String> = Vec::new();
    let mut ambient: Vec<String> = Vec::new();
    if let Some(c) = c {
        for set in [c.bounding(), c.effective(), c.permitted()]
            .into_iter()
            .flatten()
        {
            allow.extend(set.iter().map(serde_name));
        }
        ambient.extend(c.ambient().iter().flatten().map(serde_name));
    }
    allow.sort();
    allow.dedup();
    ambient.sort();
    Capabilities {
        reset: true,
        allow,
        drop: Vec::new(),
        ambient,
    }
}

/// The kernel filesystems the launcher mounts itself, the others, and the order of all.
type Mounts = (Vec<SystemMount>, Vec<MountPoint>, Vec<MountRef>);

/// The config's mounts: the kernel filesystems the launcher mounts itself (with its
/// masks) where the config puts them, everything else as a mount of the definition.
fn mounts(cfg: &Spec, warnings: &mut Vec<String>) -> Result<Mounts, ConfigError> {
    let mut system = Vec::new();
    let mut user = Vec::new();
    let mut order = Vec::new();
    for m in cfg.mounts().iter().flatten() {
        let dest = m.destination().to_string_lossy().into_owned();
        let typ = m.typ().as_deref().unwrap_or("");
        let opts = m.options().clone().unwrap_or_default();
        let is_bind = typ == "bind" || opts.iter().any(|o| o == "bind" || o == "rbind");
        let known = match (typ, dest.as_str()) {
            ("proc", "/proc") => Some(SystemMount::Procfs),
            ("sysfs", "/sys") => Some(SystemMount::Sysfs),
            ("tmpfs", "/dev") => Some(SystemMount::Dev),
            ("devpts", "/dev/pts") => Some(SystemMount::Devpts),
            ("tmpfs", "/dev/shm") | ("shm", "/dev/shm") if !is_bind => Some(SystemMount::Shm),
            ("cgroup", "/sys/fs/cgroup") | ("cgroup2", "/sys/fs/cgroup") => {
                Some(SystemMount::Cgroup)
            }
            _ => None,
        };
        if let Some(k) = known {
            if !system.contains(&k) {
                system.push(k);
                order.push(MountRef::System(k));
            }
            continue;
        }
        if typ == "cgroup" || typ == "cgroup2" {
            warnings.push(format!(
                "mount {dest} ({typ}) ignored: the container's cgroups are shown at /sys/fs/cgroup only"
            ));
            continue;
        }
        let source = m
            .source()
            .as_ref()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| typ.to_string());
        let readonly = opts.iter().any(|o| o == "ro");
        let noexec = opts.iter().any(|o| o == "noexec");
        let restrict = is_bind && opts.iter().any(|o| o == "nosuid" || o == "nodev");
        let mut data = Vec::new();
        let mut propagation = None;
        for o in &opts {
            match o.as_str() {
                "bind" | "rbind" | "ro" | "rw" | "nosuid" | "nodev" | "noexec" | "suid" | "dev"
                | "exec" | "private" | "rprivate" | "relatime" | "norelatime" | "strictatime"
                | "nostrictatime" | "noatime" | "atime" => {}
                "shared" | "rshared" => propagation = Some(Propagation::Shared),
                "slave" | "rslave" => propagation = Some(Propagation::Slave),
                "unbindable" | "runbindable" => propagation = Some(Propagation::Unbindable),
                other if other.contains('=') || !is_bind => data.push(other.to_string()),
                other => {
                    return Err(unsupported(
                        format!("mounts[{dest}].options"),
                        format!("unknown option '{other}'"),
                    ))
                }
            }
        }
        order.push(MountRef::User(user.len()));
        user.push(MountPoint {
            source,
            target: dest,
            fstype: (!is_bind).then(|| typ.to_string()),
            options: (!data.is_empty()).then(|| data.join(",")),
            readonly,
            noexec,
            restrict,
            propagation,
        });
    }
    Ok((system, user, order))
}

/// `linux.resources` as the model's cgroup settings and device rules.
fn resources(
    r: &oci_spec::runtime::LinuxResources,
    spec: &mut ContainerSpec,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    spec.cgroup.extend(cgroup_settings(r, warnings));
    device_rules(r, spec, warnings);
    Ok(())
}

/// The cgroup limits of `linux.resources` (memory, cpu, cpuset, pids) as the model's
/// settings (v1 names; the launcher writes either version). Shared by `create` and
/// `update`; what has no setting yet is named in a warning.
pub fn cgroup_settings(
    r: &oci_spec::runtime::LinuxResources,
    warnings: &mut Vec<String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        out.insert(k.to_string(), v);
    };
    // runtime-spec: -1 is "unlimited" (what `update` uses to lift a limit).
    let limit = |v: i64| {
        (v == -1)
            .then(|| "max".to_string())
            .or((v > 0).then(|| v.to_string()))
    };
    if let Some(m) = r.memory() {
        if let Some(v) = m.limit().and_then(limit) {
            set("memory.limit_in_bytes", v);
        }
        if let Some(v) = m.reservation().and_then(limit) {
            set("memory.soft_limit_in_bytes", v);
        }
        if let Some(v) = m.swap().and_then(limit) {
            set("memory.memsw.limit_in_bytes", v);
        }
        if let Some(v) = m.swappiness().filter(|v| *v <= 100) {
            set("memory.swappiness", v.to_string());
        }
        if m.disable_oom_killer() == Some(true) {
            set("memory.oom_control", "1".into());
        }
    }
    if let Some(c) = r.cpu() {
        if let Some(v) = c.shares().filter(|v| *v > 0) {
            set("cpu.shares", v.to_string());
        }
        if let Some(v) = c.quota().and_then(limit) {
            set("cpu.cfs_quota_us", v);
        }
        if let Some(v) = c.period().filter(|v| *v > 0) {
            set("cpu.cfs_period_us", v.to_string());
        }
        if let Some(v) = c.cpus().as_ref().filter(|v| !v.is_empty()) {
            set("cpuset.cpus", v.clone());
        }
        if let Some(v) = c.mems().as_ref().filter(|v| !v.is_empty()) {
            set("cpuset.mems", v.clone());
        }
    }
    if let Some(p) = r.pids() {
        if let Some(v) = limit(p.limit()) {
            set("pids.max", v);
        }
    }
    for (field, present) in [
        ("blockIO", r.block_io().is_some()),
        ("hugepageLimits", r.hugepage_limits().is_some()),
        ("network", r.network().is_some()),
        ("rdma", r.rdma().is_some()),
        (
            "unified",
            r.unified().as_ref().is_some_and(|u| !u.is_empty()),
        ),
    ] {
        if present {
            warnings.push(format!(
                "linux.resources.{field} ignored (not supported yet)"
            ));
        }
    }
    out
}

/// The device rules of `linux.resources` added to the model's allowlist.
fn device_rules(
    r: &oci_spec::runtime::LinuxResources,
    spec: &mut ContainerSpec,
    warnings: &mut Vec<String>,
) {
    for (i, d) in r.devices().iter().flatten().enumerate() {
        let any = d.typ().is_none() && d.major().is_none() && d.minor().is_none();
        if !d.allow() {
            // The launcher's allowlist starts from nothing but the default devices.
            if !any {
                warnings.push(format!(
                    "linux.resources.devices[{i}]: a deny rule of one device is not supported; the default allowlist stands"
                ));
            }
            continue;
        }
        spec.devices.push(DeviceAllow {
            path: None,
            kind: d
                .typ()
                .map(|t| serde_name(&t).chars().next().unwrap_or('a')),
            major: d.major().and_then(|v| u32::try_from(v).ok()),
            minor: d.minor().and_then(|v| u32::try_from(v).ok()),
            access: d.access().clone().unwrap_or_else(|| "rwm".into()),
            mode: None,
            owner: None,
        });
    }
}

/// `linux.cgroupsPath` as a parent and a leaf: `/a/b/c` → (`a/b`, `c`); a relative path
/// goes under `haconiwa-oci`; none: `haconiwa-oci/ID`. systemd's `slice:prefix:name`
/// form is refused.
pub fn cgroup_place(path: Option<&Path>, id: &str) -> Result<(String, String), ConfigError> {
    let Some(p) = path else {
        return Ok(("haconiwa-oci".into(), id.to_string()));
    };
    let text = p.to_string_lossy();
    if text.contains(':') {
        return Err(unsupported(
            "linux.cgroupsPath",
            format!("'{text}' is a systemd cgroup path; use the cgroupfs form (/a/b/c)"),
        ));
    }
    let parts: Vec<&str> = text.split('/').filter(|s| !s.is_empty()).collect();
    if parts.iter().any(|s| *s == "." || *s == "..") || parts.is_empty() {
        return Err(unsupported(
            "linux.cgroupsPath",
            format!("'{text}' is not a cgroup path"),
        ));
    }
    let leaf = parts[parts.len() - 1].to_string();
    let mut parent = parts[..parts.len() - 1].join("/");
    if !p.is_absolute() {
        parent = if parent.is_empty() {
            "haconiwa-oci".into()
        } else {
            format!("haconiwa-oci/{parent}")
        };
    }
    Ok((parent, leaf))
}
