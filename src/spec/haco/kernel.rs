//! What of the kernel the container sees: its kernel parameters (`c.sysctl[key]`), the
//! paths hidden or read-only (`c.masked_paths`, `c.readonly_paths`), its
//! `oom_score_adj` and its root's propagation. An OCI config carries all four, so an
//! imported bundle's definition can say them.

use super::*;
use crate::spec::script::{as_string, dsl_error, int_of, string_list, RhaiResult};
use rhai::{Array, Dynamic, Engine};

/// Registers the kernel keys.
pub(super) fn register(engine: &mut Engine) {
    engine.register_get("sysctl", |c: &mut Container| SysctlBuilder(c.d.clone()));
    engine.register_indexer_set(
        |g: &mut SysctlBuilder, key: &str, v: Dynamic| -> RhaiResult<()> {
            // Whether the container has the namespace is checked once it is defined.
            let v = as_string(&v, &format!("sysctl[\"{key}\"]"))?;
            g.0.borrow_mut().spec.sysctl.insert(key.to_string(), v);
            Ok(())
        },
    );
    engine.register_indexer_get(|g: &mut SysctlBuilder, key: &str| -> Dynamic {
        g.0.borrow()
            .spec
            .sysctl
            .get(key)
            .cloned()
            .map(Dynamic::from)
            .unwrap_or(Dynamic::UNIT)
    });
    for (key, masked) in [("masked_paths", true), ("readonly_paths", false)] {
        engine.register_get_set(
            key,
            move |c: &mut Container| -> Dynamic {
                let (m, r) = crate::spec::masks::lists(&c.d.borrow().spec.masks);
                let list = if masked { m } else { r };
                list.into_iter()
                    .map(Dynamic::from)
                    .collect::<Array>()
                    .into()
            },
            move |c: &mut Container, v: Dynamic| -> RhaiResult<()> {
                let list = string_list(&v, key)?;
                for p in &list {
                    abs_in_container(p, key)?;
                }
                let mut d = c.d.borrow_mut();
                let (mut m, mut r) = crate::spec::masks::lists(&d.spec.masks);
                if masked {
                    m = list
                } else {
                    r = list
                }
                d.spec.masks = Some((m, r));
                Ok(())
            },
        );
    }
    engine.register_get_set(
        "oom_score_adj",
        |c: &mut Container| -> Dynamic {
            match c.d.borrow().spec.oom_score_adj {
                Some(v) => Dynamic::from(i64::from(v)),
                None => Dynamic::UNIT,
            }
        },
        |c: &mut Container, v: Dynamic| -> RhaiResult<()> {
            let n = int_of(&v, "oom_score_adj")?;
            if !(-1000..=1000).contains(&n) {
                return Err(dsl_error(format!(
                    "oom_score_adj: {n} is outside -1000..1000"
                )));
            }
            c.d.borrow_mut().spec.oom_score_adj = Some(n as i32);
            Ok(())
        },
    );
    engine.register_get_set(
        "rootfs_propagation",
        |c: &mut Container| -> Dynamic {
            match c.d.borrow().spec.rootfs.propagation {
                Some(p) => propagation_name(p).into(),
                None => Dynamic::UNIT,
            }
        },
        |c: &mut Container, v: Dynamic| -> RhaiResult<()> {
            let p = parse_propagation(&as_string(&v, "rootfs_propagation")?)?;
            c.d.borrow_mut().spec.rootfs.propagation = Some(p);
            Ok(())
        },
    );
}
