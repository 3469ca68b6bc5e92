//! The container's system-call filter: a profile (the built-in default, or a Docker/OCI
//! JSON file) compiled to classic BPF before the clone, installed as the last step
//! before exec.
//!
//! Each BPF program here has one action for the syscalls it lists and one for the rest
//! (`bpf.rs`), so a profile becomes a stack: the first program answers the default
//! action for every syscall no rule names and lets the named ones through; one more
//! program per other action (e.g. ENOSYS for `clone3`) answers that action for its
//! rules and lets everything else through. The kernel runs every program of the stack
//! and keeps the strictest answer, which gives each rule its own action. Syscalls whose
//! answer is a constant "allow" are cached by the kernel and cost nothing per call.
//!
//! Why not `seccompiler`: we used it first. Its programs test the listed syscalls one
//! after the other (1,517 instructions for the default profile), and the kernel, which
//! emulates a new filter for every syscall number to fill its cache, took 1.2 ms to
//! install it, plus 0.4 ms to compile: 2 ms of a 7 ms start. A binary search over the
//! syscall numbers makes both negligible (docs/benchmarks.md).

mod bpf;
mod default;
pub mod profile;
#[cfg(target_arch = "x86_64")]
mod syscalls;

use super::error::{Step, StepError, StepResult};
use crate::spec::{ContainerSpec, Seccomp};
use bpf::{action, Cmp, Cond, Entry, SockFilter};
use profile::Profile;
use std::collections::BTreeMap;

pub use default::CLONE_NAMESPACE_FLAGS;

/// A compiled filter stack, ready to install.
#[derive(Debug, Clone)]
pub struct Filter {
    programs: Vec<Vec<SockFilter>>,
}

#[cfg(target_arch = "x86_64")]
fn syscall_number(name: &str) -> Option<u32> {
    syscalls::number(name).and_then(|n| u32::try_from(n).ok())
}

#[cfg(not(target_arch = "x86_64"))]
fn syscall_number(_name: &str) -> Option<u32> {
    None
}

/// Compiles the container's filter (`None` for `unconfined`). `caps` are the names of
/// the capabilities the container holds, for the profile's per-capability rules.
pub fn prepare(spec: &ContainerSpec, caps: &[String]) -> StepResult<Option<Filter>> {
    let Some(profile) = profile_of(spec)? else {
        return Ok(None);
    };
    compile(&profile, caps)
        .map(Some)
        .map_err(|e| StepError::msg("compile the seccomp filter", e))
}

/// The container's profile (`None` for `unconfined`).
fn profile_of(spec: &ContainerSpec) -> StepResult<Option<Profile>> {
    Ok(Some(match &spec.seccomp {
        Seccomp::Unconfined => return Ok(None),
        Seccomp::Default => default::profile(),
        Seccomp::Profile(path) => {
            let what = || format!("seccomp profile {}", path.display());
            let text = std::fs::read_to_string(path).step(what)?;
            serde_json::from_str::<Profile>(&text)
                .map_err(|e| StepError::msg(what(), e.to_string()))?
        }
    }))
}

/// The container's filter as runtime-spec's `linux.seccomp` (`None` for `unconfined`):
/// the rules that apply to a container holding `caps` on this architecture, with
/// syscall names (OCI has no per-capability rules, so they are resolved here).
pub fn oci_form(spec: &ContainerSpec, caps: &[String]) -> StepResult<Option<serde_json::Value>> {
    let Some(p) = profile_of(spec)? else {
        return Ok(None);
    };
    let arch = std::env::consts::ARCH;
    let mut rules = Vec::new();
    for r in p.syscalls.iter().filter(|r| r.applies(caps, arch)) {
        let mut names: Vec<&str> = r.all_names().collect();
        #[cfg(target_arch = "x86_64")]
        names.extend(
            r.numbers
                .iter()
                .filter_map(|n| syscalls::name(i64::from(*n))),
        );
        if names.is_empty() {
            continue;
        }
        let mut rule = serde_json::json!({ "names": names, "action": r.action });
        if let Some(e) = r.errno_ret {
            rule["errnoRet"] = e.into();
        }
        if !r.args.is_empty() {
            rule["args"] = r
                .args
                .iter()
                .map(|a| {
                    serde_json::json!({
                        "index": a.index, "value": a.value, "valueTwo": a.value_two, "op": a.op
                    })
                })
                .collect();
        }
        rules.push(rule);
    }
    let mut out = serde_json::json!({ "defaultAction": p.default_action, "syscalls": rules });
    if let Some(e) = p.default_errno_ret {
        out["defaultErrnoRet"] = e.into();
    }
    Ok(Some(out))
}

/// A profile action as its `SECCOMP_RET_*` value.
fn action(name: &str, errno: Option<u32>) -> Result<u32, String> {
    let data = |e: Option<u32>| e.unwrap_or(libc::EPERM as u32) & 0xffff;
    Ok(match name {
        "SCMP_ACT_ALLOW" => action::ALLOW,
        "SCMP_ACT_ERRNO" => action::ERRNO | data(errno),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => action::KILL_THREAD,
        "SCMP_ACT_KILL_PROCESS" => action::KILL_PROCESS,
        "SCMP_ACT_TRAP" => action::TRAP,
        "SCMP_ACT_LOG" => action::LOG,
        "SCMP_ACT_TRACE" => action::TRACE | data(errno),
        other => {
            return Err(format!(
                "unknown action '{other}' (expected SCMP_ACT_ALLOW, _ERRNO, _KILL, _KILL_PROCESS, _TRAP, _LOG or _TRACE)"
            ))
        }
    })
}

/// One argument condition; compared on 32 bits when every value fits (the kernel reads
/// `int` arguments from the low half of the register, so a 64-bit compare could be
/// fooled by junk in the high half), else on 64.
fn condition(a: &profile::Arg) -> Result<Cond, String> {
    if a.index > 5 {
        return Err(format!("argument index {} is above 5", a.index));
    }
    let (cmp, value) = match a.op.as_str() {
        "SCMP_CMP_EQ" => (Cmp::Eq, a.value),
        "SCMP_CMP_NE" => (Cmp::Ne, a.value),
        "SCMP_CMP_LT" => (Cmp::Lt, a.value),
        "SCMP_CMP_LE" => (Cmp::Le, a.value),
        "SCMP_CMP_GT" => (Cmp::Gt, a.value),
        "SCMP_CMP_GE" => (Cmp::Ge, a.value),
        "SCMP_CMP_MASKED_EQ" => (Cmp::MaskedEq(a.value), a.value_two),
        other => return Err(format!("unknown comparison '{other}'")),
    };
    Ok(Cond {
        index: a.index,
        cmp,
        value,
        wide: a.value > u64::from(u32::MAX) || a.value_two > u64::from(u32::MAX),
    })
}

/// Syscall → what one program says about it.
type Entries = BTreeMap<u32, Entry>;

fn add(entries: &mut Entries, nr: u32, alt: Option<&Vec<Cond>>) {
    let e = entries.entry(nr).or_insert_with(|| Entry::When(Vec::new()));
    e.add(alt.cloned());
}

/// Compiles a profile for a container holding `caps`, on this architecture.
pub fn compile(p: &Profile, caps: &[String]) -> Result<Filter, String> {
    let arch = std::env::consts::ARCH;
    let default = action(&p.default_action, p.default_errno_ret)?;
    let mut through_default = Entries::new();
    let mut others: Vec<(u32, Entries)> = Vec::new();
    let mut known = 0usize;
    for (i, r) in p.syscalls.iter().enumerate() {
        let at = |e: String| format!("syscalls[{i}]: {e}");
        let act = action(&r.action, r.errno_ret).map_err(at)?;
        let conds = if r.args.is_empty() {
            None
        } else {
            Some(
                r.args
                    .iter()
                    .map(condition)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(at)?,
            )
        };
        if !r.applies(caps, arch) || act == default {
            continue;
        }
        let numbers = r.numbers.iter().copied();
        for nr in numbers.chain(r.all_names().filter_map(syscall_number)) {
            known += 1;
            add(&mut through_default, nr, conds.as_ref());
            if act != action::ALLOW {
                let slot = match others.iter().position(|(a, _)| *a == act) {
                    Some(i) => i,
                    None => {
                        others.push((act, Entries::new()));
                        others.len() - 1
                    }
                };
                add(&mut others[slot].1, nr, conds.as_ref());
            }
        }
    }
    if known == 0 && default != action::ALLOW {
        return Err("the profile names no syscall known here: every syscall would fail".into());
    }
    let mut programs = Vec::new();
    if default != action::ALLOW {
        programs.push(bpf::program(&through_default, action::ALLOW, default)?);
    }
    for (act, entries) in others {
        programs.push(bpf::program(&entries, act, action::ALLOW)?);
    }
    Ok(Filter { programs })
}

/// `struct sock_fprog` of seccomp(2).
#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const SockFilter,
}

/// Installs the filter stack on the calling thread. Needs `no_new_privs` or
/// CAP_SYS_ADMIN (the caller orders its steps for that).
pub fn install(f: &Filter) -> StepResult<()> {
    for prog in &f.programs {
        let len = u16::try_from(prog.len())
            .map_err(|_| StepError::msg("install the seccomp filter", "the filter is too long"))?;
        let fprog = SockFprog {
            len,
            filter: prog.as_ptr(),
        };
        // SAFETY: `fprog` points at `len` valid instructions that outlive the call; the
        // kernel copies them.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0 as libc::c_ulong,
                &fprog as *const SockFprog,
            )
        };
        if rc != 0 {
            return Err(StepError::last("install the seccomp filter"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// The stack's answer to syscall `name` with these arguments.
    fn answer(f: &Filter, name: &str, args: [u64; 6]) -> u32 {
        let nr = syscall_number(name).unwrap_or_else(|| panic!("no syscall {name}"));
        bpf::interpreter::run_stack(&f.programs, nr, args)
    }

    const EPERM: u32 = action::ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = action::ERRNO | libc::ENOSYS as u32;

    #[test]
    fn the_default_profile_answers_as_docker_s_does() {
        let f = compile(&default::profile(), &caps(&["CAP_CHOWN", "CAP_KILL"])).unwrap();
        let none = [0u64; 6];
        let a0 = |v: u64| [v, 0, 0, 0, 0, 0];
        for (name, args, want) in [
            ("read", none, action::ALLOW),
            ("openat", none, action::ALLOW),
            ("clone", a0(libc::SIGCHLD as u64), action::ALLOW),
            // Namespaces and the calls that reach the host's kernel state.
            ("clone", a0(libc::CLONE_NEWUSER as u64), EPERM),
            ("unshare", a0(libc::CLONE_NEWNS as u64), EPERM),
            ("keyctl", none, EPERM),
            ("mount", none, EPERM),
            ("bpf", none, EPERM),
            ("kexec_load", none, EPERM),
            ("init_module", none, EPERM),
            ("open_by_handle_at", none, EPERM),
            // As Docker's since kernel 4.8 (seccomp is checked again after a tracer).
            ("ptrace", none, action::ALLOW),
            // clone3's flags are behind a pointer: ENOSYS makes libc fall back to clone.
            ("clone3", none, ENOSYS),
            ("personality", a0(0), action::ALLOW),
            ("personality", a0(0xffff_ffff), action::ALLOW),
            ("personality", a0(0x0040_0000), EPERM),
            ("socket", a0(libc::AF_INET as u64), action::ALLOW),
            ("socket", a0(40), EPERM),
        ] {
            assert_eq!(answer(&f, name, args), want, "{name}({args:?})");
        }
        // With CAP_SYS_ADMIN, clone3 and mount are the container's to call.
        let f = compile(&default::profile(), &caps(&["CAP_SYS_ADMIN"])).unwrap();
        assert_eq!(answer(&f, "clone3", none), action::ALLOW);
        assert_eq!(answer(&f, "mount", none), action::ALLOW);
        assert_eq!(answer(&f, "kexec_load", none), EPERM);
    }

    #[test]
    fn profiles_in_the_docker_format_parse_and_errors_name_the_rule() {
        let p: Profile = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["keyctl","nosuch"],"action":"SCMP_ACT_ERRNO","errnoRet":38},{"names":["mkdir"],"action":"SCMP_ACT_ERRNO","args":[{"index":1,"value":448,"op":"SCMP_CMP_EQ"}]}]}"#,
        )
        .unwrap();
        let f = compile(&p, &[]).unwrap();
        // Each rule its own errno; a name this architecture lacks is skipped; the
        // default lets the rest through.
        let path_mode = |mode| [0x1000, mode, 0, 0, 0, 0];
        assert_eq!(answer(&f, "keyctl", [0; 6]), action::ERRNO | 38);
        assert_eq!(answer(&f, "mkdir", path_mode(0o700)), EPERM);
        assert_eq!(answer(&f, "mkdir", path_mode(0o755)), action::ALLOW);
        assert_eq!(answer(&f, "read", [0; 6]), action::ALLOW);
        let bad: Profile = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_FOO"}]}"#,
        )
        .unwrap();
        let e = compile(&bad, &[]).unwrap_err();
        assert!(
            e.starts_with("syscalls[0]: unknown action 'SCMP_ACT_FOO'"),
            "{e}"
        );
        let empty: Profile =
            serde_json::from_str(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[]}"#).unwrap();
        assert!(compile(&empty, &[])
            .unwrap_err()
            .contains("every syscall would fail"));
        // A default of errno with an allowlist: what is listed passes, the rest fails.
        let allow: Profile = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,"syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW"}]}"#,
        )
        .unwrap();
        let f = compile(&allow, &[]).unwrap();
        assert_eq!(answer(&f, "write", [0; 6]), action::ALLOW);
        assert_eq!(answer(&f, "openat", [0; 6]), EPERM);
    }

    #[test]
    fn the_name_table_knows_the_default_profile_s_syscalls() {
        // Profile files name syscalls; the built-in one numbers them: the two agree.
        for (name, nr) in [
            ("read", libc::SYS_read),
            ("clone3", libc::SYS_clone3),
            ("io_pgetevents", 333),
            ("keyctl", libc::SYS_keyctl),
        ] {
            assert_eq!(syscall_number(name), Some(nr as u32), "{name}");
        }
        let numbered: usize = default::profile()
            .syscalls
            .iter()
            .map(|r| r.numbers.len())
            .sum();
        assert!(numbered > 300, "{numbered}");
    }
}
