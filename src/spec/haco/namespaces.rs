//! Namespaces: unshare, enter, id maps.

use super::*;
use crate::spec::script::{as_string, check_keys, dsl_error, int_of, string_list, RhaiResult};
use rhai::{Dynamic, Engine, Map};

/// Registers the namespace keys.
pub(super) fn register(engine: &mut Engine) {
    engine.register_get("namespace", |c: &mut Container| {
        NamespaceBuilder(c.d.clone())
    });
    engine.register_fn(
        "unshare",
        |n: &mut NamespaceBuilder, v: Dynamic| -> RhaiResult<()> {
            let kinds = string_list(&v, "namespace.unshare")?;
            let parsed = kinds
                .iter()
                .map(|k| parse_ns(k))
                .collect::<RhaiResult<Vec<_>>>()?;
            let mut d = n.0.borrow_mut();
            for k in parsed {
                if !d.spec.namespaces.unshare.contains(&k) {
                    d.spec.namespaces.unshare.push(k);
                }
            }
            Ok(())
        },
    );
    let enter = |n: &mut NamespaceBuilder, kind: &str, path: String| -> RhaiResult<()> {
        let kind = parse_ns(kind)?;
        if !path.starts_with('/') {
            return Err(dsl_error(format!(
                "namespace.enter: '{path}' must be an absolute path"
            )));
        }
        let mut d = n.0.borrow_mut();
        d.spec.namespaces.enter.retain(|e| e.kind != kind);
        d.spec.namespaces.enter.push(NsEnter {
            kind,
            path: PathBuf::from(path),
        });
        Ok(())
    };
    engine.register_fn(
        "enter",
        move |n: &mut NamespaceBuilder, kind: &str, path: &str| enter(n, kind, path.to_string()),
    );
    engine.register_fn(
        "enter",
        move |n: &mut NamespaceBuilder, kind: &str, o: Map| -> RhaiResult<()> {
            check_keys(&o, "namespace.enter", &["via"])?;
            let via = o
                .get("via")
                .ok_or_else(|| dsl_error("namespace.enter: missing 'via'"))?;
            enter(n, kind, as_string(via, "namespace.enter via")?)
        },
    );
    engine.register_fn(
        "uid_map",
        |n: &mut NamespaceBuilder, i: i64, o: i64, c: i64| -> RhaiResult<()> {
            let m = id_map(i, o, c)?;
            n.0.borrow_mut().spec.namespaces.uid_map.push(m);
            Ok(())
        },
    );
    engine.register_fn(
        "gid_map",
        |n: &mut NamespaceBuilder, i: i64, o: i64, c: i64| -> RhaiResult<()> {
            let m = id_map(i, o, c)?;
            n.0.borrow_mut().spec.namespaces.gid_map.push(m);
            Ok(())
        },
    );
    // The original's `set_uid_mapping(min:, max:, offset:)`.
    for (f, is_uid) in [("set_uid_mapping", true), ("set_gid_mapping", false)] {
        engine.register_fn(
            f,
            move |n: &mut NamespaceBuilder, o: Map| -> RhaiResult<()> {
                check_keys(&o, f, &["min", "max", "offset"])?;
                let get = |k: &str| -> RhaiResult<i64> {
                    int_of(
                        o.get(k)
                            .ok_or_else(|| dsl_error(format!("{f}: missing '{k}'")))?,
                        f,
                    )
                };
                let (min, max, offset) = (get("min")?, get("max")?, get("offset")?);
                if max < min {
                    return Err(dsl_error(format!("{f}: max {max} is below min {min}")));
                }
                let m = id_map(min, offset, max - min + 1)?;
                let mut d = n.0.borrow_mut();
                if is_uid {
                    d.spec.namespaces.uid_map.push(m)
                } else {
                    d.spec.namespaces.gid_map.push(m)
                }
                Ok(())
            },
        );
    }
}

fn parse_ns(s: &str) -> RhaiResult<NsKind> {
    NsKind::parse(s).ok_or_else(|| {
        dsl_error(format!(
            "unknown namespace '{s}'; expected one of {}",
            NsKind::expected()
        ))
    })
}

fn id_map(inside: i64, outside: i64, count: i64) -> RhaiResult<IdMap> {
    let conv = |n: i64, w: &str| {
        u32::try_from(n).map_err(|_| dsl_error(format!("id map {w}: {n} is out of range")))
    };
    let m = IdMap {
        inside: conv(inside, "inside")?,
        outside: conv(outside, "outside")?,
        count: conv(count, "count")?,
    };
    if m.count == 0 {
        return Err(dsl_error("id map count must be at least 1"));
    }
    Ok(m)
}
