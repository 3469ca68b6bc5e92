//! What the process may do: capabilities, the seccomp filter, devices, rlimits.

use super::*;
use crate::spec::script::{as_string, check_keys, dsl_error, int_of, string_list, RhaiResult};
use rhai::{Dynamic, Engine};

/// Registers capabilities, seccomp, devices and resource limits.
pub(super) fn register(engine: &mut Engine) {
    engine.register_get("capabilities", |c: &mut Container| {
        CapabilitiesBuilder(c.d.clone())
    });
    engine.register_fn("allow", |b: &mut CapabilitiesBuilder, v: Dynamic| {
        add_caps(&b.0, &v, true)
    });
    engine.register_fn("drop", |b: &mut CapabilitiesBuilder, v: Dynamic| {
        add_caps(&b.0, &v, false)
    });
    engine.register_fn("reset", |b: &mut CapabilitiesBuilder| {
        let mut d = b.0.borrow_mut();
        d.spec.capabilities = Capabilities {
            reset: true,
            ..Capabilities::default()
        };
    });
    engine.register_fn(
        "ambient",
        |b: &mut CapabilitiesBuilder, v: Dynamic| -> RhaiResult<()> {
            let mut canon = Vec::new();
            for n in string_list(&v, "capabilities.ambient")? {
                let c = canonical_cap(&n)?;
                if c == "ALL" {
                    return Err(dsl_error(
                        "capabilities.ambient: name the capabilities; ALL is not accepted here",
                    ));
                }
                canon.push(c);
            }
            let mut d = b.0.borrow_mut();
            let caps = &mut d.spec.capabilities;
            for c in canon {
                caps.drop.retain(|x| x != &c);
                if !caps.ambient.contains(&c) {
                    caps.ambient.push(c);
                }
            }
            Ok(())
        },
    );

    engine.register_get_set(
        "seccomp",
        |c: &mut Container| -> Dynamic {
            match &c.d.borrow().spec.seccomp {
                Seccomp::Default => "default".into(),
                Seccomp::Unconfined => "unconfined".into(),
                Seccomp::Profile(p) => p.display().to_string().into(),
            }
        },
        |c: &mut Container, v: Dynamic| -> RhaiResult<()> {
            let s = as_string(&v, "seccomp")?;
            let filter = match s.as_str() {
                "default" => Seccomp::Default,
                "unconfined" => Seccomp::Unconfined,
                "" => return Err(dsl_error(
                    "seccomp: expected \"default\", \"unconfined\" or the path of a JSON profile",
                )),
                path => Seccomp::Profile(c.host_path(path)),
            };
            c.d.borrow_mut().spec.seccomp = filter;
            Ok(())
        },
    );
    engine.register_get("devices", |c: &mut Container| DevicesBuilder(c.d.clone()));
    engine.register_fn(
        "allow",
        |b: &mut DevicesBuilder, v: Dynamic| -> RhaiResult<()> {
            let rules: Vec<DeviceAllow> = match v.clone().try_cast::<rhai::Map>() {
                Some(m) => vec![device_of_map(&m)?],
                None => string_list(&v, "devices.allow")?
                    .iter()
                    .map(|r| parse_device(r).map_err(dsl_error))
                    .collect::<RhaiResult<_>>()?,
            };
            for dev in rules {
                let mut d = b.0.borrow_mut();
                if !d.spec.devices.contains(&dev) {
                    d.spec.devices.push(dev);
                }
            }
            Ok(())
        },
    );

    engine.register_fn(
        "set_limit",
        |c: &mut Container, n: &str, s: Dynamic, h: Dynamic| set_limit(&c.d, n, &s, &h),
    );
    engine.register_fn("set_limit", |c: &mut Container, n: &str, v: Dynamic| {
        set_limit(&c.d, n, &v, &v)
    });
    engine.register_get("resource", |c: &mut Container| ResourceBuilder(c.d.clone()));
    engine.register_fn(
        "set_limit",
        |r: &mut ResourceBuilder, n: &str, s: Dynamic, h: Dynamic| set_limit(&r.0, n, &s, &h),
    );
    engine.register_fn(
        "set_limit",
        |r: &mut ResourceBuilder, n: &str, v: Dynamic| set_limit(&r.0, n, &v, &v),
    );
}

fn canonical_cap(name: &str) -> RhaiResult<String> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    match full.parse::<caps::Capability>() {
        Ok(_) => Ok(full),
        Err(_) => Err(dsl_error(format!(
            "unknown capability '{name}'; expected a name such as cap_sys_time or net_bind_service"
        ))),
    }
}

fn add_caps(d: &Shared, v: &Dynamic, allow: bool) -> RhaiResult<()> {
    let names = string_list(
        v,
        if allow {
            "capabilities.allow"
        } else {
            "capabilities.drop"
        },
    )?;
    let mut canon = Vec::new();
    for n in &names {
        canon.push(canonical_cap(n)?);
    }
    let mut d = d.borrow_mut();
    let caps = &mut d.spec.capabilities;
    for c in canon {
        let (add, remove) = if allow {
            (&mut caps.allow, &mut caps.drop)
        } else {
            (&mut caps.drop, &mut caps.allow)
        };
        remove.retain(|x| x != &c);
        if !add.contains(&c) {
            add.push(c);
        }
    }
    Ok(())
}

fn limit_value(v: &Dynamic, what: &str) -> RhaiResult<Option<u64>> {
    if v.is_string() {
        let s = v.clone().into_string().unwrap_or_default();
        if s == "unlimited" || s == "infinity" {
            return Ok(None);
        }
        return s.parse::<u64>().map(Some).map_err(|_| {
            dsl_error(format!(
                "{what}: expected a number or \"unlimited\", got '{s}'"
            ))
        });
    }
    let n = int_of(v, what)?;
    if n < 0 {
        Ok(None)
    } else {
        Ok(Some(n as u64))
    }
}

/// Resource names accepted by `set_limit`.
const RLIMIT_NAMES: [&str; 16] = [
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

fn set_limit(d: &Shared, name: &str, soft: &Dynamic, hard: &Dynamic) -> RhaiResult<()> {
    let res = name.trim().to_ascii_lowercase();
    let res = res.strip_prefix("rlimit_").unwrap_or(&res).to_string();
    if !RLIMIT_NAMES.contains(&res.as_str()) {
        return Err(dsl_error(format!(
            "unknown resource limit '{name}'; expected one of {}",
            RLIMIT_NAMES.join(", ")
        )));
    }
    let soft = limit_value(soft, "set_limit soft")?;
    let hard = limit_value(hard, "set_limit hard")?;
    if let (Some(s), Some(h)) = (soft, hard) {
        if s > h {
            return Err(dsl_error(format!(
                "set_limit {res}: soft limit {s} is above the hard limit {h}"
            )));
        }
    }
    if let (None, Some(h)) = (soft, hard) {
        return Err(dsl_error(format!(
            "set_limit {res}: soft limit unlimited is above the hard limit {h}"
        )));
    }
    let mut d = d.borrow_mut();
    d.spec.rlimits.retain(|r| r.resource != res);
    d.spec.rlimits.push(Rlimit {
        resource: res,
        soft,
        hard,
    });
    Ok(())
}

/// Parses a `devices.allow` entry: a host device path (`/dev/fuse`, `/dev/fuse rw`) or a
/// rule in the cgroup v1 form (`c 10:229 rwm`, `c 136:* rw`, `b *:* m`).
pub fn parse_device(s: &str) -> Result<DeviceAllow, String> {
    let bad = |why: &str| {
        format!("devices.allow '{s}': {why}; expected \"/dev/NAME [rwm]\" or \"c|b|a MAJOR:MINOR rwm\" (MAJOR and MINOR may be *)")
    };
    let parts: Vec<&str> = s.split_whitespace().collect();
    let access_of = |a: Option<&&str>| -> Result<String, String> {
        let a = a.copied().unwrap_or("rwm");
        if a.is_empty() || !a.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(bad("access must be made of r, w and m"));
        }
        Ok(a.to_string())
    };
    if let Some(path) = parts.first().filter(|p| p.starts_with('/')) {
        if parts.len() > 2 {
            return Err(bad("too many fields"));
        }
        if !path.starts_with("/dev/") || path.split('/').any(|c| c == "..") {
            return Err(bad("a device path must be under /dev and without '..'"));
        }
        return Ok(DeviceAllow {
            path: Some(path.to_string()),
            kind: None,
            major: None,
            minor: None,
            access: access_of(parts.get(1))?,
            mode: None,
            owner: None,
        });
    }
    if parts.len() != 3 && parts.len() != 2 {
        return Err(bad("wrong number of fields"));
    }
    let kind = match parts[0] {
        "c" => 'c',
        "b" => 'b',
        "a" => 'a',
        _ => return Err(bad("the type must be c, b or a")),
    };
    let (maj, min) = parts[1]
        .split_once(':')
        .ok_or_else(|| bad("the numbers must be MAJOR:MINOR"))?;
    let num = |n: &str| -> Result<Option<u32>, String> {
        if n == "*" {
            Ok(None)
        } else {
            n.parse::<u32>()
                .map(Some)
                .map_err(|_| bad("MAJOR and MINOR must be numbers or *"))
        }
    };
    Ok(DeviceAllow {
        path: None,
        kind: Some(kind),
        major: num(maj)?,
        minor: num(min)?,
        access: access_of(parts.get(2))?,
        mode: None,
        owner: None,
    })
}

/// `devices.allow(#{ path, type, major, minor, access, mode, uid, gid })`: a device node
/// made in the container's /dev with its numbers, mode and owner (an OCI config's
/// `linux.devices`), or, without `path`, a rule of the allowlist.
fn device_of_map(m: &rhai::Map) -> RhaiResult<DeviceAllow> {
    let what = "devices.allow";
    check_keys(
        m,
        what,
        &[
            "path", "type", "major", "minor", "access", "mode", "uid", "gid",
        ],
    )?;
    let num = |k: &str| -> RhaiResult<Option<u32>> {
        m.get(k)
            .map(|v| {
                let n = int_of(v, &format!("{what} {k}"))?;
                u32::try_from(n).map_err(|_| dsl_error(format!("{what} {k}: {n} is out of range")))
            })
            .transpose()
    };
    let text = |k: &str| {
        m.get(k)
            .map(|v| as_string(v, &format!("{what} {k}")))
            .transpose()
    };
    let path = text("path")?;
    let kind = match text("type")?.as_deref() {
        None => None,
        Some("c") | Some("u") => Some('c'),
        Some("b") => Some('b'),
        Some("a") => Some('a'),
        Some(other) => {
            return Err(dsl_error(format!(
                "{what} type '{other}': expected c, b or a"
            )))
        }
    };
    let access = text("access")?.unwrap_or_else(|| "rwm".into());
    // The rule's form is checked by the string parser (one place says what is valid).
    let probe = match &path {
        Some(p) => format!("{p} {access}"),
        None => format!("{} *:* {access}", kind.unwrap_or('a')),
    };
    parse_device(&probe).map_err(dsl_error)?;
    let owner = match (num("uid")?, num("gid")?) {
        (None, None) => None,
        (u, g) => Some((u.unwrap_or(0), g.unwrap_or(0))),
    };
    if path.is_some() && (kind.is_none() || num("major")?.is_none() || num("minor")?.is_none()) {
        return Err(dsl_error(format!(
            "{what}: a device with a path and a map needs its type, major and minor (or use the string \"{}\")",
            path.as_deref().unwrap_or_default()
        )));
    }
    Ok(DeviceAllow {
        path,
        kind,
        major: num("major")?,
        minor: num("minor")?,
        access,
        mode: num("mode")?,
        owner,
    })
}
