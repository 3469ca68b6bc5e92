//! A container model written back as a `.haco` definition (`haconiwa import-bundle`):
//! every field an OCI config can give has a key, so loading the text gives the same
//! model. Cluster-only fields a bundle never has (bootstrap, provisioning, health,
//! restart, published ports, a bridge) are refused by name rather than dropped.

use super::mounts::system_mount_name;
use super::propagation_name;
use crate::spec::model::*;
use std::fmt::Write;

/// A string as a script literal (JSON's escapes are valid in the script language).
fn lit(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

fn list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let v: Vec<String> = items.into_iter().map(lit).collect();
    format!("[{}]", v.join(", "))
}

fn map<'a>(items: impl IntoIterator<Item = (&'a str, String)>) -> String {
    let v: Vec<String> = items
        .into_iter()
        .map(|(k, v)| format!("{}: {v}", lit(k)))
        .collect();
    format!("#{{ {} }}", v.join(", "))
}

fn limit(v: Option<u64>) -> String {
    v.map_or_else(|| lit("unlimited"), |n| n.to_string())
}

/// The definition text of `spec`; `header` lines become comments at the top.
pub fn render(spec: &ContainerSpec, header: &[String]) -> Result<String, String> {
    let refuse = |what: &str| Err(format!("{what} cannot be written as a definition yet"));
    if spec.bootstrap.is_some() || !spec.provision.is_empty() {
        return refuse("a bootstrap recipe or provisioning");
    }
    if spec.health.is_some() || spec.restart.is_some() || !spec.ports.is_empty() {
        return refuse("a health check, a restart policy or a published port");
    }

    if spec.network.bridge.is_some() || spec.image.is_some() || !spec.rootfs.layers.is_empty() {
        return refuse("a bridge network or an image root");
    }
    let mut o = String::new();
    for h in header {
        let _ = writeln!(o, "// {h}");
    }
    o.push_str("haconiwa.define(|c| {\n");
    let mut line = |s: String| {
        let _ = writeln!(o, "    {s};");
    };
    line(format!("c.name = {}", lit(&spec.name)));
    if let Some(h) = &spec.hostname {
        line(format!("c.hostname = {}", lit(h)));
    }
    line(format!(
        "c.init_command = {}",
        list(spec.init_command.iter().map(String::as_str))
    ));
    if !spec.environment.is_empty() {
        let env = spec.environment.iter().map(|(k, v)| (k.as_str(), lit(v)));
        line(format!("c.environment = {}", map(env)));
    }
    if let Some(w) = &spec.workdir {
        line(format!("c.workdir = {}", lit(w)));
    }
    if let Some(u) = spec.uid {
        line(format!("c.uid = {u}"));
    }
    if let Some(g) = spec.gid {
        line(format!("c.gid = {g}"));
    }
    if !spec.groups.is_empty() {
        let g: Vec<String> = spec.groups.iter().map(u32::to_string).collect();
        line(format!("c.groups = [{}]", g.join(", ")));
    }
    line(format!("c.no_new_privs = {}", spec.no_new_privs));
    line(format!(
        "c.chroot_to({})",
        lit(&spec.rootfs.path.to_string_lossy())
    ));
    if spec.rootfs.readonly {
        line("c.readonly_rootfs = true".into());
    }
    if let Some(p) = spec.rootfs.propagation {
        line(format!(
            "c.rootfs_propagation = {}",
            lit(propagation_name(p))
        ));
    }
    let ns = &spec.namespaces;
    line(format!(
        "c.namespace.unshare({})",
        list(ns.unshare.iter().map(|k| k.name()))
    ));
    for e in &ns.enter {
        line(format!(
            "c.namespace.enter({}, {})",
            lit(e.kind.name()),
            lit(&e.path.to_string_lossy())
        ));
    }
    for (f, maps) in [("uid_map", &ns.uid_map), ("gid_map", &ns.gid_map)] {
        for m in maps {
            line(format!(
                "c.namespace.{f}({}, {}, {})",
                m.inside, m.outside, m.count
            ));
        }
    }
    line(format!(
        "c.system_mounts = {}",
        list(spec.system_mounts.iter().map(|m| system_mount_name(*m)))
    ));
    for m in &spec.mounts {
        let mut opts = vec![("to", lit(&m.target))];
        if let Some(fs) = &m.fstype {
            opts.push(("fs", lit(fs)));
        }
        if let Some(data) = &m.options {
            opts.push(("options", lit(data)));
        }
        for (k, on) in [
            ("readonly", m.readonly),
            ("noexec", m.noexec),
            ("restrict", m.restrict),
        ] {
            if on {
                opts.push((k, "true".into()));
            }
        }
        if let Some(p) = m.propagation {
            opts.push(("propagation", lit(propagation_name(p))));
        }
        line(format!(
            "c.add_mount_point({}, {})",
            lit(&m.source),
            map(opts)
        ));
    }
    if !spec.mount_order.is_empty() {
        let order: Vec<String> = spec
            .mount_order
            .iter()
            .map(|r| match r {
                MountRef::System(m) => lit(system_mount_name(*m)),
                MountRef::User(i) => i.to_string(),
            })
            .collect();
        line(format!("c.mount_order = [{}]", order.join(", ")));
    }
    for (k, v) in &spec.cgroup {
        line(format!("c.cgroup[{}] = {}", lit(k), lit(v)));
    }
    for (k, v) in &spec.sysctl {
        line(format!("c.sysctl[{}] = {}", lit(k), lit(v)));
    }
    if let Some((masked, readonly)) = &spec.masks {
        line(format!(
            "c.masked_paths = {}",
            list(masked.iter().map(String::as_str))
        ));
        line(format!(
            "c.readonly_paths = {}",
            list(readonly.iter().map(String::as_str))
        ));
    }
    if !spec.logs.is_default() {
        line(format!(
            "c.logs(#{{ max_size: {}, max_files: {} }})",
            spec.logs.max_size, spec.logs.max_files
        ));
    }
    if let Some(adj) = spec.oom_score_adj {
        line(format!("c.oom_score_adj = {adj}"));
    }
    for v in &spec.volumes {
        let ro = if v.readonly {
            ", #{ readonly: true }"
        } else {
            ""
        };
        line(format!(
            "c.volume({}, {}{ro})",
            lit(&v.name),
            lit(&v.target)
        ));
    }
    for s in &spec.secrets {
        line(format!("c.secret({})", lit(&s.name)));
    }
    let caps = &spec.capabilities;
    if caps.reset {
        line("c.capabilities.reset()".into());
    }
    for (f, names) in [
        ("allow", &caps.allow),
        ("drop", &caps.drop),
        ("ambient", &caps.ambient),
    ] {
        if !names.is_empty() {
            line(format!(
                "c.capabilities.{f}({})",
                list(names.iter().map(String::as_str))
            ));
        }
    }
    for r in &spec.rlimits {
        line(format!(
            "c.set_limit({}, {}, {})",
            lit(&r.resource),
            limit(r.soft),
            limit(r.hard)
        ));
    }
    for d in &spec.devices {
        line(format!("c.devices.allow({})", device(d)));
    }
    match &spec.seccomp {
        Seccomp::Default => {}
        Seccomp::Unconfined => line(format!("c.seccomp = {}", lit("unconfined"))),
        Seccomp::Profile(p) => line(format!("c.seccomp = {}", lit(&p.to_string_lossy()))),
    }
    let net = &spec.network;
    if !net.loopback || !net.cluster {
        line(format!(
            "c.network(#{{ loopback: {}, cluster: {} }})",
            net.loopback, net.cluster
        ));
    }
    if !spec.labels.is_empty() {
        let labels = spec.labels.iter().map(|(k, v)| (k.as_str(), lit(v)));
        line(format!("c.labels = {}", map(labels)));
    }
    if let Some(s) = &spec.stop_signal {
        line(format!("c.stop_signal = {}", lit(s)));
    }
    if spec.on_disconnect == OnDisconnect::Keep {
        line(format!("c.on_disconnect({})", lit("keep")));
    }
    if spec.daemonize {
        line("c.daemonize()".into());
    }
    o.push_str("});\n");
    Ok(o)
}

/// A device rule in the string form when it says all, else the map form.
fn device(d: &DeviceAllow) -> String {
    if d.mode.is_none() && d.owner.is_none() {
        let num = |n: Option<u32>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
        let text = match (&d.path, d.kind) {
            (Some(p), None) if d.major.is_none() && d.minor.is_none() => {
                Some(format!("{p} {}", d.access))
            }
            (None, Some(k)) => Some(format!(
                "{k} {}:{} {}",
                num(d.major),
                num(d.minor),
                d.access
            )),
            _ => None,
        };
        if let Some(t) = text {
            return lit(&t);
        }
    }
    let mut fields: Vec<(&str, String)> = Vec::new();
    if let Some(p) = &d.path {
        fields.push(("path", lit(p)));
    }
    if let Some(k) = d.kind {
        fields.push(("type", lit(&k.to_string())));
    }
    for (k, v) in [("major", d.major), ("minor", d.minor)] {
        if let Some(v) = v {
            fields.push((k, v.to_string()));
        }
    }
    if let Some(m) = d.mode {
        fields.push(("mode", format!("0o{m:o}")));
    }
    fields.push(("access", lit(&d.access)));
    if let Some((u, g)) = d.owner {
        fields.push(("uid", u.to_string()));
        fields.push(("gid", g.to_string()));
    }
    map(fields)
}
