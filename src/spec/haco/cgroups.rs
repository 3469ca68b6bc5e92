//! cgroup limits (`c.cgroup[key] = value`, v1 or v2 names).

use super::*;
use crate::spec::script::{as_string, dsl_error, RhaiResult};
use rhai::{Dynamic, Engine};

/// Registers the cgroup indexer.
pub(super) fn register(engine: &mut Engine) {
    engine.register_get("cgroup", |c: &mut Container| CgroupBuilder(c.d.clone()));
    engine.register_indexer_set(|g: &mut CgroupBuilder, key: &str, v: Dynamic| {
        set_cgroup(&g.0, key, v)
    });
    engine.register_indexer_get(|g: &mut CgroupBuilder, key: &str| -> Dynamic {
        g.0.borrow()
            .spec
            .cgroup
            .get(key)
            .cloned()
            .map(Dynamic::from)
            .unwrap_or(Dynamic::UNIT)
    });
}

fn set_cgroup(d: &Shared, key: &str, value: Dynamic) -> RhaiResult<()> {
    let v = as_string(&value, &format!("cgroup[\"{key}\"]"))?;
    let canonical = crate::spec::cgroup::validate(key, &v).map_err(dsl_error)?;
    d.borrow_mut()
        .spec
        .cgroup
        .insert(key.to_string(), canonical);
    Ok(())
}
