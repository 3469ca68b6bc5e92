//! What the command may do: capabilities (all five sets), rlimits, uid/gid/groups and
//! no_new_privs, applied right before exec.

use super::error::{Step, StepError, StepResult};
use crate::spec::{Capabilities, ContainerSpec};
use caps::{Capability, CapsHashSet};
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

/// The container's capability set as defined: the default 14 (or none after `reset`),
/// plus `allow`, minus `drop`. `ALL` means every capability this library knows.
pub fn wanted_set(c: &Capabilities) -> CapsHashSet {
    let mut set: CapsHashSet = if c.reset {
        CapsHashSet::new()
    } else {
        DEFAULT_CAPS.iter().copied().collect()
    };
    for a in &c.allow {
        if a == "ALL" {
            set.extend(caps::all());
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
    set
}

/// [`wanted_set`] limited to what the running kernel knows (for display).
pub fn effective_set(c: &Capabilities) -> CapsHashSet {
    let known = caps::runtime::thread_all_supported();
    let mut set = wanted_set(c);
    set.retain(|c| known.contains(c));
    set
}

/// The `CAP_*` names of [`effective_set`] (what seccomp profiles' per-capability rules
/// look at).
pub fn capability_names(c: &Capabilities) -> Vec<String> {
    effective_set(c).iter().map(|c| c.to_string()).collect()
}

fn bits(set: &CapsHashSet) -> u64 {
    set.iter().fold(0u64, |acc, c| acc | c.bitmask())
}

/// The three capability sets of this thread (capget v3).
fn capget() -> StepResult<[u64; 3]> {
    let mut header = libc_cap_header();
    let mut data = [CapData::default(); 2];
    // SAFETY: header and a two-element data array, as capget v3 expects.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(StepError::last("read capabilities"));
    }
    let join = |lo: u32, hi: u32| (lo as u64) | ((hi as u64) << 32);
    Ok([
        join(data[0].effective, data[1].effective),
        join(data[0].permitted, data[1].permitted),
        join(data[0].inheritable, data[1].inheritable),
    ])
}

/// Sets effective, permitted and inheritable at once (capset v3).
fn capset(eff: u64, perm: u64, inh: u64) -> StepResult<()> {
    let mut header = libc_cap_header();
    let data = [
        CapData {
            effective: eff as u32,
            permitted: perm as u32,
            inheritable: inh as u32,
        },
        CapData {
            effective: (eff >> 32) as u32,
            permitted: (perm >> 32) as u32,
            inheritable: (inh >> 32) as u32,
        },
    ];
    // SAFETY: header and a two-element data array, as capset v3 expects.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(StepError::last("set capabilities"));
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn libc_cap_header() -> CapHeader {
    // _LINUX_CAPABILITY_VERSION_3
    CapHeader {
        version: 0x2008_0522,
        pid: 0,
    }
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
    // What the kernel knows is what root holds now; the rest of the wanted set is moot.
    let [_, permitted, _] = capget()?;
    let want = bits(&wanted_set(&spec.capabilities)) & permitted;
    let ambient = bits(&named_set(&spec.capabilities.ambient)) & want;
    drop_bounding_except(want)?;
    if uid != 0 {
        // Keep the permitted set across setuid, for the ambient capabilities below.
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
    // Root keeps the container's set (an exec as root regains the bounding set anyway);
    // any other user holds only what the definition raises as ambient, as with Docker.
    // Nothing is inheritable beyond the ambient set (the runc CVE-2022-29162 lesson).
    let held = if uid == 0 { want } else { ambient };
    capset(held, held, ambient)?;
    raise_ambient(ambient)?;
    if spec.no_new_privs {
        nix::sys::prctl::set_no_new_privs().step(|| "set no_new_privs".into())?;
    }
    Ok(())
}

/// The capabilities named in a list (unknown names are ignored: the loader refused them).
fn named_set(names: &[String]) -> CapsHashSet {
    names.iter().filter_map(|n| n.parse().ok()).collect()
}

/// Drops every capability outside `keep` from the bounding set, which limits what any
/// later exec can regain. CAP_SETPCAP is needed to shrink it, so this goes before the
/// capability sets change. The loop ends at the first capability the kernel does not
/// know.
pub fn drop_bounding_except(keep: u64) -> StepResult<()> {
    for cap in 0..64u64 {
        if keep & (1 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(StepError::os(
                format!("drop capability {cap} from the bounding set"),
                err,
            ));
        }
    }
    Ok(())
}

/// Raises each capability of `set` as an ambient one (it must be permitted and
/// inheritable already).
fn raise_ambient(set: u64) -> StepResult<()> {
    for cap in 0..64u64 {
        if set & (1 << cap) != 0 {
            // SAFETY: prctl with integer arguments only.
            let rc = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap as libc::c_ulong,
                    0,
                    0,
                )
            };
            if rc != 0 {
                return Err(StepError::last(format!("raise ambient capability {cap}")));
            }
        }
    }
    Ok(())
}

/// Leaves the calling process (the container's PID 1, the launcher's own stages inside
/// the container) nothing worth stealing: not dumpable (no ptrace, no `/proc/PID/exe`,
/// `mem`, `root` or `fd` for anyone without CAP_SYS_PTRACE), an empty bounding set,
/// `no_new_privs`, and only `keep` in its effective and permitted sets.
pub fn harden_init(keep: &[Capability]) -> StepResult<()> {
    nix::sys::prctl::set_dumpable(false).step(|| "make PID 1 non-dumpable".into())?;
    drop_bounding_except(0)?;
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    let keep = keep.iter().fold(0u64, |acc, c| acc | c.bitmask());
    capset(keep, keep, 0)?;
    nix::sys::prctl::set_no_new_privs().step(|| "set no_new_privs on PID 1".into())
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
            allow: vec!["CAP_SYS_TIME".into()],
            drop: vec!["CAP_CHOWN".into()],
            ..Capabilities::default()
        };
        let s = effective_set(&c);
        assert!(s.contains(&Capability::CAP_SYS_TIME));
        assert!(!s.contains(&Capability::CAP_CHOWN));
        let r = Capabilities {
            reset: true,
            allow: vec!["CAP_KILL".into()],
            ..Capabilities::default()
        };
        assert_eq!(effective_set(&r).len(), 1);
    }
}
