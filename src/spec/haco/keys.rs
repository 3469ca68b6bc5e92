//! Plain keys: name, hostname, command, environment, workdir, labels, daemonize,
//! read-only root, no_new_privs, ids and groups.

use super::*;
use crate::spec::script::{as_string, bool_of, dsl_error, string_list, u32_of, RhaiResult};
use rhai::{Array, Dynamic, Engine, Map};
use std::collections::BTreeMap;

/// Registers the plain keys.
// Long by nature: one registration per key of the section, each a few lines.
pub(super) fn register(engine: &mut Engine) {
    engine.register_get_set(
        "name",
        |c: &mut Container| Dynamic::from(c.d.borrow().spec.name.clone()),
        |c: &mut Container, v: Dynamic| -> RhaiResult<()> {
            let n = as_string(&v, "name")?;
            valid_name("container", &n)?;
            c.d.borrow_mut().spec.name = n;
            Ok(())
        },
    );
    engine.register_get_set(
        "hostname",
        |c: &mut Container| Dynamic::from(c.d.borrow().spec.hostname.clone().unwrap_or_default()),
        |c: &mut Container, v: Dynamic| -> RhaiResult<()> {
            let n = as_string(&v, "hostname")?;
            if n.is_empty() || n.len() > 64 || n.contains(['/', ' ', '\0']) {
                return Err(dsl_error(format!("invalid hostname '{n}'")));
            }
            c.d.borrow_mut().spec.hostname = Some(n);
            Ok(())
        },
    );
    engine.register_get_set(
        "init_command",
        |c: &mut Container| -> Dynamic {
            let a: Array =
                c.d.borrow()
                    .spec
                    .init_command
                    .iter()
                    .map(|s| Dynamic::from(s.clone()))
                    .collect();
            a.into()
        },
        |c: &mut Container, v: Dynamic| -> RhaiResult<()> {
            let cmd = if v.is_string() {
                split_command(&as_string(&v, "init_command")?).map_err(dsl_error)?
            } else {
                string_list(&v, "init_command")?
            };
            if cmd.is_empty() || cmd[0].is_empty() {
                return Err(dsl_error("init_command is empty"));
            }
            c.d.borrow_mut().spec.init_command = cmd;
            Ok(())
        },
    );
    engine.register_get_set(
        "environment",
        |c: &mut Container| -> Map {
            c.d.borrow()
                .spec
                .environment
                .iter()
                .map(|(k, v)| (k.into(), Dynamic::from(v.clone())))
                .collect()
        },
        |c: &mut Container, m: Map| -> RhaiResult<()> {
            let mut env = BTreeMap::new();
            for (k, v) in m {
                if k.is_empty() || k.contains('=') {
                    return Err(dsl_error(format!(
                        "environment: invalid variable name '{k}'"
                    )));
                }
                env.insert(k.to_string(), as_string(&v, &format!("environment {k}"))?);
            }
            c.d.borrow_mut().spec.environment = env;
            Ok(())
        },
    );
    engine.register_fn(
        "env",
        |c: &mut Container, k: &str, v: Dynamic| -> RhaiResult<()> {
            if k.is_empty() || k.contains('=') {
                return Err(dsl_error(format!(
                    "environment: invalid variable name '{k}'"
                )));
            }
            let v = as_string(&v, &format!("environment {k}"))?;
            c.d.borrow_mut().spec.environment.insert(k.to_string(), v);
            Ok(())
        },
    );
    engine.register_get_set(
        "workdir",
        |c: &mut Container| -> rhai::ImmutableString {
            c.d.borrow().spec.workdir.clone().unwrap_or_default().into()
        },
        |c: &mut Container, v: rhai::ImmutableString| -> RhaiResult<()> {
            abs_in_container(&v, "workdir")?;
            c.d.borrow_mut().spec.workdir = Some(v.to_string());
            Ok(())
        },
    );
    engine.register_get_set(
        "labels",
        |c: &mut Container| -> Map {
            c.d.borrow()
                .spec
                .labels
                .iter()
                .map(|(k, v)| (k.into(), Dynamic::from(v.clone())))
                .collect()
        },
        |c: &mut Container, m: Map| -> RhaiResult<()> {
            let mut labels = BTreeMap::new();
            for (k, v) in m {
                labels.insert(k.to_string(), as_string(&v, &format!("label {k}"))?);
            }
            c.d.borrow_mut().spec.labels = labels;
            Ok(())
        },
    );
    engine.register_fn(
        "label",
        |c: &mut Container, k: &str, v: Dynamic| -> RhaiResult<()> {
            let v = as_string(&v, &format!("label {k}"))?;
            c.d.borrow_mut().spec.labels.insert(k.to_string(), v);
            Ok(())
        },
    );
    engine.register_fn("daemonize", |c: &mut Container| {
        c.d.borrow_mut().spec.daemonize = true;
    });
    engine.register_fn("daemonize", |c: &mut Container, on: bool| {
        c.d.borrow_mut().spec.daemonize = on;
    });
    engine.register_get_set(
        "readonly_rootfs",
        |c: &mut Container| Dynamic::from(c.d.borrow().spec.rootfs.readonly),
        |c: &mut Container, v: Dynamic| -> RhaiResult<()> {
            c.d.borrow_mut().spec.rootfs.readonly = bool_of(&v, "readonly_rootfs")?;
            Ok(())
        },
    );
    engine.register_get_set(
        "no_new_privs",
        |c: &mut Container| Dynamic::from(c.d.borrow().spec.no_new_privs),
        |c: &mut Container, v: Dynamic| -> RhaiResult<()> {
            c.d.borrow_mut().spec.no_new_privs = bool_of(&v, "no_new_privs")?;
            Ok(())
        },
    );
    for (key, is_uid) in [("uid", true), ("gid", false)] {
        engine.register_get_set(
            key,
            move |c: &mut Container| -> Dynamic {
                let d = c.d.borrow();
                let v = if is_uid { d.spec.uid } else { d.spec.gid };
                Dynamic::from(v.map(i64::from).unwrap_or(-1))
            },
            move |c: &mut Container, v: Dynamic| -> RhaiResult<()> {
                let id = u32_of(&v, key)?;
                let mut d = c.d.borrow_mut();
                if is_uid {
                    d.spec.uid = Some(id)
                } else {
                    d.spec.gid = Some(id)
                }
                Ok(())
            },
        );
    }
    engine.register_get_set(
        "groups",
        |c: &mut Container| -> Array {
            c.d.borrow()
                .spec
                .groups
                .iter()
                .map(|g| Dynamic::from(*g as i64))
                .collect()
        },
        |c: &mut Container, v: Array| -> RhaiResult<()> {
            let gs = v
                .iter()
                .map(|g| u32_of(g, "groups"))
                .collect::<RhaiResult<Vec<_>>>()?;
            c.d.borrow_mut().spec.groups = gs;
            Ok(())
        },
    );
    engine.register_get_set(
        "stop_signal",
        |c: &mut Container| -> Dynamic {
            match &c.d.borrow().spec.stop_signal {
                Some(s) => s.clone().into(),
                None => Dynamic::UNIT,
            }
        },
        |c: &mut Container, v: Dynamic| -> RhaiResult<()> {
            let text = as_string(&v, "stop_signal")?;
            let canonical = crate::spec::signal::canonical(&text).ok_or_else(|| {
                dsl_error(format!(
                    "stop_signal: unknown signal '{text}' (a name such as \"SIGQUIT\" or \"QUIT\", or a number 1-64)"
                ))
            })?;
            c.d.borrow_mut().spec.stop_signal = Some(canonical);
            Ok(())
        },
    );
    engine.register_get_set(
        "on_disconnect",
        |c: &mut Container| -> Dynamic {
            match c.d.borrow().spec.on_disconnect {
                OnDisconnect::Stop => "stop".into(),
                OnDisconnect::Keep => "keep".into(),
            }
        },
        |c: &mut Container, v: Dynamic| -> RhaiResult<()> {
            set_on_disconnect(c, &as_string(&v, "on_disconnect")?)
        },
    );
    engine.register_fn("on_disconnect", |c: &mut Container, v: &str| {
        set_on_disconnect(c, v)
    });
}

/// `c.on_disconnect("stop" | "keep")`.
fn set_on_disconnect(c: &mut Container, v: &str) -> RhaiResult<()> {
    let mode = match v {
        "stop" => OnDisconnect::Stop,
        "keep" => OnDisconnect::Keep,
        other => {
            return Err(dsl_error(format!(
                "on_disconnect: '{other}'; expected \"stop\" (the default: stopped when the node is cut off, never two copies) or \"keep\" (keeps running; a replacement may run beside it)"
            )))
        }
    };
    c.d.borrow_mut().spec.on_disconnect = mode;
    Ok(())
}
