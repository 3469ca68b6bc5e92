//! A container model written as an OCI `config.json` (`haconiwa show --oci`): the other
//! direction of `config.rs`, so a `.haco` definition runs under any OCI runtime, and a
//! bundle imported as a definition comes back as the same config. What OCI has no field
//! for (health, restart, published ports, the cluster network, an image's layers) is
//! named in a warning.

use crate::launcher::{privileges, seccomp};
use crate::spec::haco::propagation_name;
use crate::spec::{ContainerSpec, DeviceAllow, MountPoint, MountRef, NsKind, SystemMount};
use serde_json::{json, Value};

/// A config and what it leaves out.
#[derive(Debug, Clone)]
pub struct Exported {
    /// runtime-spec's `config.json`.
    pub config: Value,
    /// Fields of the definition a bundle cannot carry, in words.
    pub warnings: Vec<String>,
}

/// Why a definition has no OCI form.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A file the form needs (a seccomp profile, a host device node).
    #[error("{0}")]
    Read(String),
    /// The result is not a runtime-spec config (a bug: it names the field).
    #[error("the OCI form is not a valid config: {0}")]
    Invalid(String),
}

/// The OCI config of `spec`.
pub fn config_of(spec: &ContainerSpec) -> Result<Exported, ExportError> {
    let mut warnings = Vec::new();
    let caps: Vec<String> = {
        let mut v = privileges::capability_names(&spec.capabilities);
        v.sort();
        v
    };
    let rlimits: Vec<Value> = spec
        .rlimits
        .iter()
        .map(|r| {
            json!({
                "type": format!("RLIMIT_{}", r.resource.to_ascii_uppercase()),
                "soft": r.soft.unwrap_or(u64::MAX),
                "hard": r.hard.unwrap_or(u64::MAX),
            })
        })
        .collect();
    let mut process = json!({
        "terminal": false,
        "user": {
            "uid": spec.uid.unwrap_or(0),
            "gid": spec.gid.unwrap_or(0),
        },
        "args": spec.init_command,
        "env": spec.environment.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        "cwd": spec.workdir.as_deref().unwrap_or("/"),
        "capabilities": { "bounding": caps, "effective": caps, "permitted": caps },
        "rlimits": rlimits,
        "noNewPrivileges": spec.no_new_privs,
    });
    if !spec.capabilities.ambient.is_empty() {
        process["capabilities"]["ambient"] = json!(spec.capabilities.ambient);
    }
    if !spec.groups.is_empty() {
        process["user"]["additionalGids"] = json!(spec.groups);
    }
    if let Some(adj) = spec.oom_score_adj {
        process["oomScoreAdj"] = json!(adj);
    }
    let mut linux = json!({
        "namespaces": namespaces(spec),
        "resources": resources(spec, &mut warnings),
    });
    let own_uts = spec.unshares(NsKind::Uts);
    let id_map = |m: &crate::spec::IdMap| json!({ "containerID": m.inside, "hostID": m.outside, "size": m.count });
    if !spec.namespaces.uid_map.is_empty() {
        linux["uidMappings"] = spec.namespaces.uid_map.iter().map(id_map).collect();
        linux["gidMappings"] = spec.namespaces.gid_map.iter().map(id_map).collect();
    }
    let nodes = devices(spec)?;
    if !nodes.is_empty() {
        linux["devices"] = Value::Array(nodes);
    }
    if !spec.sysctl.is_empty() {
        linux["sysctl"] = json!(spec.sysctl);
    }
    let (masked, readonly) = crate::spec::masks::lists(&spec.masks);
    linux["maskedPaths"] = json!(masked);
    linux["readonlyPaths"] = json!(readonly);
    if let Some(p) = spec.rootfs.propagation {
        linux["rootfsPropagation"] = json!(propagation_name(p));
    }
    if let Some(filter) =
        seccomp::oci_form(spec, &caps).map_err(|e| ExportError::Read(e.to_string()))?
    {
        linux["seccomp"] = filter;
    }
    let mut config = json!({
        "ociVersion": "1.0.2",
        "process": process,
        "root": { "path": spec.rootfs.path, "readonly": spec.rootfs.readonly },
        "mounts": mounts(spec),
        "linux": linux,
    });
    if spec.hostname.is_some() || own_uts {
        config["hostname"] = json!(spec.effective_hostname());
    }
    if !spec.labels.is_empty() {
        config["annotations"] = json!(spec.labels);
    }
    left_out(spec, &mut warnings);
    serde_json::from_value::<oci_spec::runtime::Spec>(config.clone())
        .map_err(|e| ExportError::Invalid(e.to_string()))?;
    Ok(Exported { config, warnings })
}

/// The definition's fields a bundle has no place for.
fn left_out(spec: &ContainerSpec, warnings: &mut Vec<String>) {
    let mut say = |s: &str| warnings.push(s.to_string());
    if spec.image.is_some() || !spec.rootfs.layers.is_empty() {
        say("image: the bundle's root must be the image unpacked (root.path is the definition's root directory)");
    }
    if spec.bootstrap.is_some() || !spec.provision.is_empty() {
        say("bootstrap and provision: build the root first with `haconiwa create`");
    }
    if spec.health.is_some() {
        say("health: OCI has no health check");
    }
    if spec.restart.is_some() {
        say("restart: OCI has no restart policy");
    }
    if !spec.ports.is_empty() {
        say("publish: OCI has no published ports");
    }
    if spec.network.bridge.is_some() {
        say("network bridge: the bundle gets an empty network namespace");
    } else if spec.network.cluster && spec.unshares(NsKind::Net) {
        say("network: the cluster's address and routes are not part of a bundle; it gets loopback only");
    }
    if spec.stop_signal.is_some() {
        say("stop_signal: OCI leaves the stop signal to the caller");
    }
}

fn namespaces(spec: &ContainerSpec) -> Vec<Value> {
    let name = |k: NsKind| match k {
        NsKind::Net => "network",
        other => other.name(),
    };
    let mut out: Vec<Value> = spec
        .namespaces
        .unshare
        .iter()
        .map(|k| json!({ "type": name(*k) }))
        .collect();
    out.extend(
        spec.namespaces
            .enter
            .iter()
            .map(|e| json!({ "type": name(e.kind), "path": e.path })),
    );
    out
}

/// The mounts in the order the launcher makes them.
fn mounts(spec: &ContainerSpec) -> Vec<Value> {
    let order: Vec<MountRef> = if spec.mount_order.is_empty() {
        let system = spec.system_mounts.iter().map(|m| MountRef::System(*m));
        system
            .chain((0..spec.mounts.len()).map(MountRef::User))
            .collect()
    } else {
        spec.mount_order.clone()
    };
    order
        .iter()
        .filter_map(|r| match r {
            MountRef::System(m) => Some(system_mount(*m)),
            MountRef::User(i) => spec.mounts.get(*i).map(user_mount),
        })
        .collect()
}

/// A kernel filesystem as runc's default config writes it.
fn system_mount(m: SystemMount) -> Value {
    let (dest, typ, source, options): (&str, &str, &str, &[&str]) = match m {
        SystemMount::Procfs => ("/proc", "proc", "proc", &[]),
        SystemMount::Sysfs => (
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        SystemMount::Dev => (
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        SystemMount::Devpts => (
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        SystemMount::Shm => (
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        SystemMount::Tmpfs => ("/tmp", "tmpfs", "tmpfs", &["nosuid", "nodev", "mode=1777"]),
        SystemMount::Cgroup => (
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        ),
    };
    let mut v = json!({ "destination": dest, "type": typ, "source": source });
    if !options.is_empty() {
        v["options"] = json!(options);
    }
    v
}

fn user_mount(m: &MountPoint) -> Value {
    let mut options: Vec<String> = Vec::new();
    let typ = match &m.fstype {
        None => {
            options.push("rbind".into());
            if m.restrict {
                options.extend(["nosuid".into(), "nodev".into()]);
            }
            "bind".to_string()
        }
        Some(fs) => {
            options.extend(["nosuid".into(), "nodev".into()]);
            fs.clone()
        }
    };
    options.push(if m.readonly { "ro" } else { "rw" }.into());
    if m.noexec {
        options.push("noexec".into());
    }
    if let Some(p) = m.propagation {
        options.push(propagation_name(p).into());
    }
    if let Some(data) = &m.options {
        options.extend(data.split(',').filter(|s| !s.is_empty()).map(String::from));
    }
    json!({ "destination": m.target, "type": typ, "source": m.source, "options": options })
}

/// Device nodes made in /dev (`linux.devices`): the definition's numbers, or the
/// host's node's.
fn devices(spec: &ContainerSpec) -> Result<Vec<Value>, ExportError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = Vec::new();
    for d in spec.devices.iter().filter(|d| d.path.is_some()) {
        let path = d.path.as_deref().unwrap_or_default();
        let (kind, major, minor, mode, owner) = match (d.kind, d.major, d.minor) {
            (Some(k), Some(ma), Some(mi)) => (k, ma, mi, d.mode.unwrap_or(0o666), d.owner),
            _ => {
                let md = std::fs::metadata(path)
                    .map_err(|e| ExportError::Read(format!("device {path}: {e}")))?;
                let k = if md.file_type().is_block_device() {
                    'b'
                } else if md.file_type().is_char_device() {
                    'c'
                } else {
                    return Err(ExportError::Read(format!(
                        "device {path}: not a device node"
                    )));
                };
                let rdev = md.rdev();
                let (ma, mi) = (libc::major(rdev), libc::minor(rdev));
                (k, ma, mi, md.mode() & 0o7777, Some((md.uid(), md.gid())))
            }
        };
        let (uid, gid) = owner.unwrap_or((0, 0));
        out.push(json!({
            "path": path, "type": kind.to_string(), "major": major, "minor": minor,
            "fileMode": mode, "uid": uid, "gid": gid,
        }));
    }
    Ok(out)
}

/// The cgroup settings as `linux.resources`, with the device allowlist's rules.
fn resources(spec: &ContainerSpec, warnings: &mut Vec<String>) -> Value {
    let g = &spec.cgroup;
    let get = |k: &str| g.get(k).map(String::as_str);
    let num = |v: &str| -> Value {
        if v == "max" {
            json!(-1)
        } else {
            v.parse::<i64>().map(Value::from).unwrap_or(Value::Null)
        }
    };
    let mut memory = serde_json::Map::new();
    let mut cpu = serde_json::Map::new();
    let mut r = json!({});
    let limit = get("memory.limit_in_bytes").or(get("memory.max"));
    if let Some(v) = limit {
        memory.insert("limit".into(), num(v));
    }
    if let Some(v) = get("memory.soft_limit_in_bytes").or(get("memory.low")) {
        memory.insert("reservation".into(), num(v));
    }
    if let Some(v) = get("memory.memsw.limit_in_bytes") {
        memory.insert("swap".into(), num(v));
    } else if let Some(v) = get("memory.swap.max") {
        // OCI's swap is memory plus swap (v1's memsw).
        let total = match (limit.and_then(|l| l.parse::<i64>().ok()), v.parse::<i64>()) {
            (Some(l), Ok(s)) => json!(l + s),
            _ => json!(-1),
        };
        memory.insert("swap".into(), total);
    }
    if let Some(v) = get("memory.swappiness") {
        memory.insert("swappiness".into(), num(v));
    }
    if get("memory.oom_control") == Some("1") {
        memory.insert("disableOOMKiller".into(), json!(true));
    }
    if let Some(v) = get("cpu.shares") {
        cpu.insert("shares".into(), num(v));
    } else if let Some(w) = get("cpu.weight").and_then(|w| w.parse::<u64>().ok()) {
        // runc's conversion, inverted: weight = 1 + (shares - 2) * 9999 / 262142.
        cpu.insert(
            "shares".into(),
            json!(2 + (w.saturating_sub(1)) * 262_142 / 9_999),
        );
    }
    if let Some(v) = get("cpu.cfs_quota_us") {
        cpu.insert("quota".into(), num(v));
    }
    if let Some(v) = get("cpu.cfs_period_us") {
        cpu.insert("period".into(), num(v));
    }
    if let Some((q, p)) = get("cpu.max").and_then(|v| v.split_once(' ')) {
        cpu.insert("quota".into(), num(q));
        cpu.insert("period".into(), num(p));
    }
    for (k, field) in [("cpuset.cpus", "cpus"), ("cpuset.mems", "mems")] {
        if let Some(v) = get(k) {
            cpu.insert(field.into(), json!(v));
        }
    }
    if !memory.is_empty() {
        r["memory"] = Value::Object(memory);
    }
    if !cpu.is_empty() {
        r["cpu"] = Value::Object(cpu);
    }
    if let Some(v) = get("pids.max") {
        r["pids"] = json!({ "limit": num(v) });
    }
    let expressed = [
        "memory.limit_in_bytes",
        "memory.max",
        "memory.soft_limit_in_bytes",
        "memory.low",
        "memory.memsw.limit_in_bytes",
        "memory.swap.max",
        "memory.swappiness",
        "memory.oom_control",
        "cpu.shares",
        "cpu.weight",
        "cpu.cfs_quota_us",
        "cpu.cfs_period_us",
        "cpu.max",
        "cpuset.cpus",
        "cpuset.mems",
        "pids.max",
    ];
    for k in g.keys().filter(|k| !expressed.contains(&k.as_str())) {
        warnings.push(format!("cgroup {k}: not carried into linux.resources"));
    }
    let mut rules = vec![json!({ "allow": false, "access": "rwm" })];
    rules.extend(
        spec.devices
            .iter()
            .filter(|d| d.path.is_none())
            .map(device_rule),
    );
    r["devices"] = Value::Array(rules);
    r
}

fn device_rule(d: &DeviceAllow) -> Value {
    let mut v = json!({ "allow": true, "access": d.access });
    if let Some(k) = d.kind {
        v["type"] = json!(k.to_string());
    }
    if let Some(m) = d.major {
        v["major"] = json!(m);
    }
    if let Some(m) = d.minor {
        v["minor"] = json!(m);
    }
    v
}
