//! What the command may do: capabilities (all five sets), rlimits, uid/gid/groups and
//! no_new_privs, applied right before exec.

use super::error::{Step, StepError, StepResult};
use crate::spec::{Capabilities, ContainerSpec};
use caps::{CapSet, Capability, CapsHashSet};
use nix::sys::resource::{setrlimit, Resource};
use nix::unistd::{Gid, Uid};

/// The capabilities Docker grants a container by default.
pub const DEFAULT_CAPS: [Capability; 14] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// The container's capability set: the default 14 (or none after `reset`), plus
/// `allow`, minus `drop`, limited to what the running kernel knows.
pub fn effective_set(c: &Capabilities) -> CapsHashSet {
    let known = caps::runtime::thread_all_supported();
    let mut set: CapsHashSet = if c.reset {
        CapsHashSet::new()
    } else {
        DEFAULT_CAPS.iter().copied().collect()
    };
    for a in &c.allow {
        if a == "ALL" {
            set.extend(known.iter().copied());
        } else if let Ok(cap) = a.parse::<Capability>() {
            set.insert(cap);
        }
    }
    for d in &c.drop {
        if d == "ALL" {
            set.clear();
        } else if let Ok(cap) = d.parse::<Capability>() {
            set.remove(&cap);
        }
    }
    set.retain(|c| known.contains(c));
    set
}

fn resource(name: &str) -> Option<Resource> {
    Some(match name {
        "as" => Resource::RLIMIT_AS,
        "core" => Resource::RLIMIT_CORE,
        "cpu" => Resource::RLIMIT_CPU,
        "data" => Resource::RLIMIT_DATA,
        "fsize" => Resource::RLIMIT_FSIZE,
        "locks" => Resource::RLIMIT_LOCKS,
        "memlock" => Resource::RLIMIT_MEMLOCK,
        "msgqueue" => Resource::RLIMIT_MSGQUEUE,
        "nice" => Resource::RLIMIT_NICE,
        "nofile" => Resource::RLIMIT_NOFILE,
        "nproc" => Resource::RLIMIT_NPROC,
        "rss" => Resource::RLIMIT_RSS,
        "rtprio" => Resource::RLIMIT_RTPRIO,
        "rttime" => Resource::RLIMIT_RTTIME,
        "sigpending" => Resource::RLIMIT_SIGPENDING,
        "stack" => Resource::RLIMIT_STACK,
        _ => return None,
    })
}

/// Applies rlimits, identity, capabilities and no_new_privs, in the order the kernel
/// needs: limits, then groups/gid/uid (keeping capabilities across the uid change),
/// then the capability sets, then no_new_privs.
pub fn apply(spec: &ContainerSpec) -> StepResult<()> {
    for r in &spec.rlimits {
        let res = resource(&r.resource).ok_or_else(|| {
            StepError::msg("setrlimit", format!("unknown resource {}", r.resource))
        })?;
        let inf = libc::RLIM_INFINITY;
        setrlimit(res, r.soft.unwrap_or(inf), r.hard.unwrap_or(inf))
            .step(|| format!("setrlimit {}", r.resource))?;
    }
    let uid = spec.uid.unwrap_or(0);
    let gid = spec.gid.unwrap_or(0);
    let set = effective_set(&spec.capabilities);
    let known = caps::runtime::thread_all_supported();
    // The bounding set limits what any later exec can regain; CAP_SETPCAP is needed to
    // shrink it, so it goes first.
    for cap in known.iter() {
        if !set.contains(cap) {
            caps::drop(None, CapSet::Bounding, *cap).map_err(|e| {
                StepError::msg(format!("drop {cap} from the bounding set"), e.to_string())
            })?;
        }
    }
    if uid != 0 {
        // Keep the permitted set across setuid; ambient capabilities carry it over exec.
        caps::securebits::set_keepcaps(true)
            .map_err(|e| StepError::msg("keep capabilities", e.to_string()))?;
    }
    if !spec.groups.is_empty() || spec.gid.is_some() || spec.uid.is_some() {
        let groups: Vec<Gid> = spec.groups.iter().map(|g| Gid::from_raw(*g)).collect();
        nix::unistd::setgroups(&groups).step(|| "setgroups".into())?;
    }
    nix::unistd::setresgid(Gid::from_raw(gid), Gid::from_raw(gid), Gid::from_raw(gid))
        .step(|| format!("setgid {gid}"))?;
    nix::unistd::setresuid(Uid::from_raw(uid), Uid::from_raw(uid), Uid::from_raw(uid))
        .step(|| format!("setuid {uid}"))?;
    let setc = |which: CapSet, name: &str| {
        caps::set(None, which, &set)
            .map_err(|e| StepError::msg(format!("set {name} capabilities"), e.to_string()))
    };
    setc(CapSet::Effective, "effective")?;
    setc(CapSet::Permitted, "permitted")?;
    setc(CapSet::Inheritable, "inheritable")?;
    if uid != 0 {
        setc(CapSet::Ambient, "ambient")?;
    }
    if spec.no_new_privs {
        nix::sys::prctl::set_no_new_privs().step(|| "set no_new_privs".into())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_set_is_dockers_14() {
        let s = effective_set(&Capabilities::default());
        assert_eq!(s.len(), 14);
        assert!(s.contains(&Capability::CAP_CHOWN));
        assert!(!s.contains(&Capability::CAP_SYS_TIME));
    }

    #[test]
    fn allow_drop_reset() {
        let c = Capabilities {
            reset: false,
            allow: vec!["CAP_SYS_TIME".into()],
            drop: vec!["CAP_CHOWN".into()],
        };
        let s = effective_set(&c);
        assert!(s.contains(&Capability::CAP_SYS_TIME));
        assert!(!s.contains(&Capability::CAP_CHOWN));
        let r = Capabilities {
            reset: true,
            allow: vec!["CAP_KILL".into()],
            drop: vec![],
        };
        assert_eq!(effective_set(&r).len(), 1);
    }
}
