//! Mounts: `mount_independent`, `system_mounts`, `add_mount_point`, `mount_order`, and
//! what the cluster keeps for a container: `volume` and `secret` (`spec::volumes`).

use super::*;
use crate::spec::script::{
    as_string, bool_of, check_keys, dsl_error, int_of, string_list, RhaiResult,
};
use crate::spec::volumes::{SecretMount, VolumeMount};
use rhai::{Array, Dynamic, Engine, Map};

/// A kernel filesystem's name in definitions.
pub fn system_mount_name(m: SystemMount) -> &'static str {
    match m {
        SystemMount::Procfs => "procfs",
        SystemMount::Sysfs => "sysfs",
        SystemMount::Dev => "dev",
        SystemMount::Devpts => "devpts",
        SystemMount::Shm => "shm",
        SystemMount::Tmpfs => "tmpfs",
        SystemMount::Cgroup => "cgroup",
    }
}

fn parse_system_mount(name: &str, what: &str) -> RhaiResult<SystemMount> {
    SystemMount::parse(name).ok_or_else(|| {
        dsl_error(format!(
            "unknown filesystem '{name}' for {what}; expected one of procfs, sysfs, dev, devpts, shm, tmpfs, cgroup"
        ))
    })
}

/// A `mount_order` that names every mount of the definition once, or none.
pub(super) fn check_order(s: &ContainerSpec) -> Result<(), String> {
    if s.mount_order.is_empty() {
        return Ok(());
    }
    let mut want: Vec<MountRef> = s
        .system_mounts
        .iter()
        .map(|m| MountRef::System(*m))
        .collect();
    want.extend((0..s.mounts.len()).map(MountRef::User));
    let mut got = s.mount_order.clone();
    want.sort_by_key(|r| format!("{r:?}"));
    got.sort_by_key(|r| format!("{r:?}"));
    if want != got {
        return Err(format!(
            "mount_order must name each kernel filesystem of system_mounts and each add_mount_point (by its index from 0) exactly once; it has {} entries for {} mounts",
            s.mount_order.len(),
            want.len()
        ));
    }
    Ok(())
}

/// Registers the mount keys.
pub(super) fn register(engine: &mut Engine) {
    engine.register_fn(
        "mount_independent",
        |c: &mut Container, v: Dynamic| -> RhaiResult<()> {
            for name in string_list(&v, "mount_independent")? {
                let m = parse_system_mount(&name, "mount_independent")?;
                let mut d = c.d.borrow_mut();
                if !d.spec.system_mounts.contains(&m) {
                    d.spec.system_mounts.push(m);
                }
            }
            Ok(())
        },
    );
    engine.register_get_set(
        "system_mounts",
        |c: &mut Container| -> Dynamic {
            let d = c.d.borrow();
            let names = d
                .spec
                .system_mounts
                .iter()
                .map(|m| Dynamic::from(system_mount_name(*m)));
            names.collect::<Array>().into()
        },
        |c: &mut Container, v: Dynamic| -> RhaiResult<()> {
            let mut list = Vec::new();
            for name in string_list(&v, "system_mounts")? {
                list.push(parse_system_mount(&name, "system_mounts")?);
            }
            c.d.borrow_mut().spec.system_mounts = list;
            Ok(())
        },
    );
    engine.register_set(
        "mount_order",
        |c: &mut Container, v: Array| -> RhaiResult<()> {
            let mut order = Vec::new();
            for item in &v {
                order.push(if item.is_string() {
                    MountRef::System(parse_system_mount(
                        &as_string(item, "mount_order")?,
                        "mount_order",
                    )?)
                } else {
                    let i = int_of(item, "mount_order")?;
                    MountRef::User(usize::try_from(i).map_err(|_| {
                        dsl_error(format!("mount_order: {i} is not an add_mount_point index"))
                    })?)
                });
            }
            c.d.borrow_mut().spec.mount_order = order;
            Ok(())
        },
    );
    engine.register_fn(
        "add_mount_point",
        |c: &mut Container, src: &str, o: Map| -> RhaiResult<()> {
            check_keys(
                &o,
                "add_mount_point",
                &["to", "readonly", "fs", "options", "noexec", "restrict", "propagation"],
            )?;
            let to = o
                .get("to")
                .map(|v| as_string(v, "add_mount_point to"))
                .transpose()?
                .ok_or_else(|| {
                    dsl_error("add_mount_point: missing 'to' (the path inside the container)")
                })?;
            abs_in_container(&to, "add_mount_point to")?;
            let fstype = o
                .get("fs")
                .map(|v| as_string(v, "add_mount_point fs"))
                .transpose()?;
            if let Some(fs) = &fstype {
                if HOST_VIEW_FILESYSTEMS.contains(&fs.as_str()) {
                    return Err(dsl_error(format!(
                        "add_mount_point: a '{fs}' filesystem would bypass the container's masked and read-only paths; use mount_independent(\"procfs\") or (\"sysfs\") for the masked ones"
                    )));
                }
            }
            let options = o
                .get("options")
                .map(|v| as_string(v, "add_mount_point options"))
                .transpose()?;
            let flag = |k: &str| -> RhaiResult<bool> {
                o.get(k)
                    .map(|v| bool_of(v, &format!("add_mount_point {k}")))
                    .transpose()
                    .map(|b| b.unwrap_or(false))
            };
            let (readonly, noexec, restrict) = (flag("readonly")?, flag("noexec")?, flag("restrict")?);
            if restrict && fstype.is_some() {
                return Err(dsl_error(
                    "add_mount_point restrict: a filesystem mount is always nosuid,nodev; restrict is for binds",
                ));
            }
            let propagation = o
                .get("propagation")
                .map(|v| parse_propagation(&as_string(v, "add_mount_point propagation")?))
                .transpose()?;
            let source = match fstype {
                None => {
                    let p = c.host_path(src);
                    p.display().to_string()
                }
                Some(_) => src.to_string(),
            };
            c.d.borrow_mut().spec.mounts.push(MountPoint {
                source,
                target: to,
                fstype,
                options,
                readonly,
                noexec,
                restrict,
                propagation,
            });
            Ok(())
        },
    );
    engine.register_fn(
        "volume",
        |c: &mut Container, name: &str, target: &str| -> RhaiResult<()> {
            volume(c, name, target, &Map::new())
        },
    );
    engine.register_fn(
        "volume",
        |c: &mut Container, name: &str, target: &str, o: Map| -> RhaiResult<()> {
            volume(c, name, target, &o)
        },
    );
    engine.register_fn(
        "secret",
        |c: &mut Container, name: &str| -> RhaiResult<()> {
            crate::spec::names::check("secret", name)
                .map_err(|e| dsl_error(format!("secret: {e}")))?;
            let mut d = c.d.borrow_mut();
            if d.spec.secrets.iter().any(|s| s.name == name) {
                return Err(dsl_error(format!("secret: '{name}' is asked for twice")));
            }
            d.spec.secrets.push(SecretMount {
                name: name.to_string(),
            });
            Ok(())
        },
    );
}

/// `c.volume(NAME, TARGET [, #{ readonly }])`: a named volume of the cluster.
fn volume(c: &mut Container, name: &str, target: &str, o: &Map) -> RhaiResult<()> {
    crate::spec::names::check("volume", name).map_err(|e| dsl_error(format!("volume: {e}")))?;
    check_keys(o, "volume", &["readonly"])?;
    abs_in_container(target, "volume target")?;
    if target.trim_end_matches('/').is_empty() {
        return Err(dsl_error("volume: a volume cannot be mounted on '/'"));
    }
    let readonly = o
        .get("readonly")
        .map(|v| bool_of(v, "volume readonly"))
        .transpose()?
        .unwrap_or(false);
    let mut d = c.d.borrow_mut();
    if d.spec.volumes.iter().any(|v| v.target == target) {
        return Err(dsl_error(format!("volume: two volumes on '{target}'")));
    }
    d.spec.volumes.push(VolumeMount {
        name: name.to_string(),
        target: target.to_string(),
        readonly,
    });
    Ok(())
}
