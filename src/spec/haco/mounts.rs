//! Mounts: `mount_independent` and `add_mount_point`.

use super::*;
use crate::spec::script::{as_string, bool_of, check_keys, dsl_error, string_list, RhaiResult};
use rhai::{Dynamic, Engine, Map};

/// Registers the mount keys.
pub(super) fn register(engine: &mut Engine) {
    engine.register_fn("mount_independent", |c: &mut Container, v: Dynamic| -> RhaiResult<()> {
        for name in string_list(&v, "mount_independent")? {
            let m = SystemMount::parse(&name).ok_or_else(|| {
                dsl_error(format!(
                    "unknown filesystem '{name}' for mount_independent; expected one of procfs, sysfs, devpts, shm, tmpfs"
                ))
            })?;
            let mut d = c.d.borrow_mut();
            if !d.spec.system_mounts.contains(&m) {
                d.spec.system_mounts.push(m);
            }
        }
        Ok(())
    });
    engine.register_fn(
        "add_mount_point",
        |c: &mut Container, src: &str, o: Map| -> RhaiResult<()> {
            check_keys(&o, "add_mount_point", &["to", "readonly", "fs", "options"])?;
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
            let readonly = o
                .get("readonly")
                .map(|v| bool_of(v, "add_mount_point readonly"))
                .transpose()?
                .unwrap_or(false);
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
                noexec: false,
                restrict: false,
                propagation: None,
            });
            Ok(())
        },
    );
}
