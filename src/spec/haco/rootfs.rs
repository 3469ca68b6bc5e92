//! The root filesystem: `chroot_to`, `bootstrap` recipes, provision steps.

use super::*;
use crate::spec::script::{as_string, bool_of, check_keys, dsl_error, string_list, RhaiResult};
use rhai::{Dynamic, Engine, FnPtr, Map, NativeCallContext};

/// Registers the root filesystem keys.
pub(super) fn register(engine: &mut Engine) {
    engine.register_fn("chroot_to", |c: &mut Container, p: &str| set_root(c, p));
    engine.register_fn(
        "chroot_to",
        |c: &mut Container, p: &str, o: Map| -> RhaiResult<()> {
            check_keys(&o, "chroot_to", &["chroot", "readonly"])?;
            set_root(c, p)?;
            let mut d = c.d.borrow_mut();
            if let Some(v) = o.get("chroot") {
                if bool_of(v, "chroot_to chroot")? {
                    return Err(dsl_error(CHROOT_REFUSED));
                }
            }
            if let Some(v) = o.get("readonly") {
                d.spec.rootfs.readonly = bool_of(v, "chroot_to readonly")?;
            }
            Ok(())
        },
    );
    engine.register_get_set(
        "image",
        |c: &mut Container| -> Dynamic {
            match &c.d.borrow().spec.image {
                Some(r) => r.clone().into(),
                None => Dynamic::UNIT,
            }
        },
        |c: &mut Container, v: Dynamic| -> RhaiResult<()> {
            let text = as_string(&v, "image")?;
            let r = crate::spec::ImageRef::parse(&text).map_err(|e| dsl_error(e.to_string()))?;
            let mut d = c.d.borrow_mut();
            d.spec.image = Some(r.to_string());
            d.spec.rootfs.path = PathBuf::new();
            Ok(())
        },
    );
    engine.register_fn("bootstrap", |c: &mut Container, m: Map| -> RhaiResult<()> {
        let b = bootstrap_from(c, &m)?;
        c.d.borrow_mut().spec.bootstrap = Some(b);
        Ok(())
    });
    engine.register_fn("run_shell", |c: &mut Container, script: &str| {
        add_provision(&c.d, script, None)
    });
    engine.register_fn("run_shell", |c: &mut Container, script: &str, o: Map| {
        run_shell_named(&c.d, script, o)
    });
    engine.register_fn(
        "provision",
        |ctx: NativeCallContext, c: &mut Container, f: FnPtr| -> RhaiResult<()> {
            let _ = f.call_within_context::<Dynamic>(&ctx, (ProvisionBuilder(c.d.clone()),))?;
            Ok(())
        },
    );
    engine.register_fn("run_shell", |p: &mut ProvisionBuilder, script: &str| {
        add_provision(&p.0, script, None)
    });
    engine.register_fn(
        "run_shell",
        |p: &mut ProvisionBuilder, script: &str, o: Map| run_shell_named(&p.0, script, o),
    );
}

/// `chroot_to(path)`: the root filesystem, relative paths from the file's directory.
fn set_root(c: &mut Container, p: &str) -> RhaiResult<()> {
    if p.is_empty() {
        return Err(dsl_error("chroot_to: empty path"));
    }
    let path = c.host_path(p);
    let mut d = c.d.borrow_mut();
    d.spec.rootfs.path = path;
    d.root_set = true;
    Ok(())
}

fn add_provision(d: &Shared, script: &str, name: Option<String>) -> RhaiResult<()> {
    let mut d = d.borrow_mut();
    d.provision_counter += 1;
    let name = name.unwrap_or_else(|| format!("step-{}", d.provision_counter));
    valid_name("provision step", &name)?;
    if d.spec.provision.iter().any(|s| s.name == name) {
        return Err(dsl_error(format!(
            "provision step '{name}' is defined twice"
        )));
    }
    d.spec.provision.push(ProvisionStep {
        name,
        script: script.to_string(),
    });
    Ok(())
}

/// `run_shell(script, #{name})`, on the container or in a `provision` block.
fn run_shell_named(d: &Shared, script: &str, o: Map) -> RhaiResult<()> {
    check_keys(&o, "run_shell", &["name"])?;
    let name = o
        .get("name")
        .map(|v| as_string(v, "run_shell name"))
        .transpose()?;
    add_provision(d, script, name)
}

fn bootstrap_from(c: &Container, m: &Map) -> RhaiResult<Bootstrap> {
    let strategy =
        match m.get("strategy") {
            Some(v) => as_string(v, "bootstrap strategy")?,
            None => return Err(dsl_error(
                "bootstrap: missing 'strategy' (busybox, host, tarball, directory, debootstrap)",
            )),
        };
    let s = |k: &str| -> RhaiResult<Option<String>> {
        m.get(k)
            .map(|v| as_string(v, &format!("bootstrap {k}")))
            .transpose()
    };
    Ok(match strategy.as_str() {
        "busybox" => {
            check_keys(m, "bootstrap busybox", &["strategy", "busybox"])?;
            Bootstrap::Busybox { busybox: s("busybox")?.map(|p| c.host_path(&p)) }
        }
        "host" => {
            check_keys(m, "bootstrap host", &["strategy", "binaries"])?;
            let bins = match m.get("binaries") {
                Some(v) => string_list(v, "bootstrap binaries")?,
                None => vec!["sh".into(), "sleep".into(), "true".into(), "cat".into(), "ls".into()],
            };
            Bootstrap::Host { binaries: bins }
        }
        "tarball" => {
            check_keys(m, "bootstrap tarball", &["strategy", "archive", "archive_path"])?;
            let a = s("archive")?.or(s("archive_path")?).ok_or_else(|| dsl_error("bootstrap tarball: missing 'archive'"))?;
            Bootstrap::Tarball { archive: c.host_path(&a) }
        }
        "directory" => {
            check_keys(m, "bootstrap directory", &["strategy", "source", "src"])?;
            let a = s("source")?.or(s("src")?).ok_or_else(|| dsl_error("bootstrap directory: missing 'source'"))?;
            Bootstrap::Directory { source: c.host_path(&a) }
        }
        "debootstrap" => {
            check_keys(m, "bootstrap debootstrap", &["strategy", "suite", "mirror", "variant"])?;
            Bootstrap::Debootstrap {
                suite: s("suite")?.unwrap_or_else(|| "bookworm".into()),
                mirror: s("mirror")?,
                variant: s("variant")?,
            }
        }
        other => {
            return Err(dsl_error(format!(
                "unknown bootstrap strategy '{other}'; expected one of busybox, host, tarball, directory, debootstrap"
            )))
        }
    })
}
