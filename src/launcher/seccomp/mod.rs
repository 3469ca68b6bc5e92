//! The container's system-call filter: a profile (the built-in default, or a Docker/OCI
//! JSON file) compiled to classic BPF with `seccompiler` before the clone, installed as
//! the last step before exec.
//!
//! A seccompiler filter has one action for a match and one for the rest, so a profile
//! becomes a stack: the first filter answers the default action for every syscall no
//! rule names and lets the named ones through; one more filter per other action (e.g.
//! ENOSYS for `clone3`) answers that action for its rules and lets everything else
//! through. The kernel runs every filter of the stack and keeps the strictest answer,
//! which gives each rule its own action. Syscalls whose answer is a constant "allow" are
//! cached by the kernel and cost nothing per call.

mod default;
pub mod profile;
#[cfg(target_arch = "x86_64")]
mod syscalls;

use super::error::{Step, StepError, StepResult};
use crate::spec::{ContainerSpec, Seccomp};
use profile::Profile;
use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule,
};
use std::collections::BTreeMap;

pub use default::CLONE_NAMESPACE_FLAGS;

/// A compiled filter stack, ready to install.
#[derive(Debug, Clone)]
pub struct Filter {
    programs: Vec<BpfProgram>,
}

#[cfg(target_arch = "x86_64")]
fn syscall_number(name: &str) -> Option<i64> {
    syscalls::number(name)
}

#[cfg(not(target_arch = "x86_64"))]
fn syscall_number(_name: &str) -> Option<i64> {
    None
}

/// Compiles the container's filter (`None` for `unconfined`). `caps` are the names of
/// the capabilities the container holds, for the profile's per-capability rules.
pub fn prepare(spec: &ContainerSpec, caps: &[String]) -> StepResult<Option<Filter>> {
    let profile = match &spec.seccomp {
        Seccomp::Unconfined => return Ok(None),
        Seccomp::Default => default::profile(),
        Seccomp::Profile(path) => {
            let what = || format!("seccomp profile {}", path.display());
            let text = std::fs::read_to_string(path).step(what)?;
            serde_json::from_str::<Profile>(&text)
                .map_err(|e| StepError::msg(what(), e.to_string()))?
        }
    };
    compile(&profile, caps)
        .map(Some)
        .map_err(|e| StepError::msg("compile the seccomp filter", e))
}

/// A profile action as seccompiler's.
fn action(name: &str, errno: Option<u32>) -> Result<SeccompAction, String> {
    Ok(match name {
        "SCMP_ACT_ALLOW" => SeccompAction::Allow,
        "SCMP_ACT_ERRNO" => SeccompAction::Errno(errno.unwrap_or(libc::EPERM as u32)),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => SeccompAction::KillThread,
        "SCMP_ACT_KILL_PROCESS" => SeccompAction::KillProcess,
        "SCMP_ACT_TRAP" => SeccompAction::Trap,
        "SCMP_ACT_LOG" => SeccompAction::Log,
        "SCMP_ACT_TRACE" => SeccompAction::Trace(errno.unwrap_or(libc::EPERM as u32)),
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
fn condition(a: &profile::Arg) -> Result<SeccompCondition, String> {
    let (op, value) = match a.op.as_str() {
        "SCMP_CMP_EQ" => (SeccompCmpOp::Eq, a.value),
        "SCMP_CMP_NE" => (SeccompCmpOp::Ne, a.value),
        "SCMP_CMP_LT" => (SeccompCmpOp::Lt, a.value),
        "SCMP_CMP_LE" => (SeccompCmpOp::Le, a.value),
        "SCMP_CMP_GT" => (SeccompCmpOp::Gt, a.value),
        "SCMP_CMP_GE" => (SeccompCmpOp::Ge, a.value),
        "SCMP_CMP_MASKED_EQ" => (SeccompCmpOp::MaskedEq(a.value), a.value_two),
        other => return Err(format!("unknown comparison '{other}'")),
    };
    let wide = a.value > u64::from(u32::MAX) || a.value_two > u64::from(u32::MAX);
    let len = if wide {
        SeccompCmpArgLen::Qword
    } else {
        SeccompCmpArgLen::Dword
    };
    SeccompCondition::new(a.index, len, op, value).map_err(|e| format!("argument {}: {e}", a.index))
}

/// Rules of one filter: syscall → its conditional rules; an empty list means "always".
#[derive(Default)]
struct RuleSet(BTreeMap<i64, Option<Vec<SeccompRule>>>);

impl RuleSet {
    fn add(&mut self, nr: i64, rule: Option<&SeccompRule>) {
        let entry = self.0.entry(nr).or_insert_with(|| Some(Vec::new()));
        match (entry.as_mut(), rule) {
            (Some(list), Some(r)) => list.push(r.clone()),
            (_, None) => *entry = None,
            (None, Some(_)) => {}
        }
    }

    fn into_map(self) -> BTreeMap<i64, Vec<SeccompRule>> {
        self.0
            .into_iter()
            .map(|(nr, rules)| (nr, rules.unwrap_or_default()))
            .collect()
    }
}

/// Compiles a profile for a container holding `caps`, on this architecture.
pub fn compile(p: &Profile, caps: &[String]) -> Result<Filter, String> {
    let arch = std::env::consts::ARCH;
    let target = arch
        .try_into()
        .map_err(|_| format!("seccomp filters are not supported on {arch}"))?;
    let default = action(&p.default_action, p.default_errno_ret)?;
    let mut through_default = RuleSet::default();
    let mut others: Vec<(SeccompAction, RuleSet)> = Vec::new();
    let mut known = 0usize;
    for (i, r) in p.syscalls.iter().enumerate() {
        let at = |e: String| format!("syscalls[{i}]: {e}");
        let act = action(&r.action, r.errno_ret).map_err(at)?;
        if !r.applies(caps, arch) || act == default {
            continue;
        }
        let rule = if r.args.is_empty() {
            None
        } else {
            let conds = r.args.iter().map(condition).collect::<Result<Vec<_>, _>>();
            Some(SeccompRule::new(conds.map_err(at)?).map_err(|e| at(e.to_string()))?)
        };
        for name in r.all_names() {
            let Some(nr) = syscall_number(name) else {
                continue;
            };
            known += 1;
            through_default.add(nr, rule.as_ref());
            if act != SeccompAction::Allow {
                let slot = match others.iter().position(|(a, _)| *a == act) {
                    Some(i) => i,
                    None => {
                        others.push((act.clone(), RuleSet::default()));
                        others.len() - 1
                    }
                };
                others[slot].1.add(nr, rule.as_ref());
            }
        }
    }
    if known == 0 && default != SeccompAction::Allow {
        return Err("the profile names no syscall known here: every syscall would fail".into());
    }
    let mut programs = Vec::new();
    let mut push = |rules: RuleSet, mismatch: SeccompAction, matched: SeccompAction| {
        SeccompFilter::new(rules.into_map(), mismatch, matched, target)
            .and_then(BpfProgram::try_from)
            .map(|prog| programs.push(prog))
            .map_err(|e| e.to_string())
    };
    if default != SeccompAction::Allow {
        push(through_default, default, SeccompAction::Allow)?;
    }
    for (act, rules) in others {
        push(rules, SeccompAction::Allow, act)?;
    }
    Ok(Filter { programs })
}

/// `struct sock_fprog` of seccomp(2).
#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const sock_filter,
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

    #[test]
    fn the_default_profile_compiles_to_a_stack_of_two() {
        let f = compile(&default::profile(), &caps(&["CAP_CHOWN", "CAP_KILL"])).unwrap();
        // EPERM for the rest, ENOSYS for clone3.
        assert_eq!(f.programs.len(), 2);
        // With CAP_SYS_ADMIN, clone3 is allowed: no ENOSYS filter.
        let f = compile(&default::profile(), &caps(&["CAP_SYS_ADMIN"])).unwrap();
        assert_eq!(f.programs.len(), 1);
    }

    #[test]
    fn profiles_in_the_docker_format_parse_and_errors_name_the_rule() {
        let p: Profile = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["keyctl","nosuch"],"action":"SCMP_ACT_ERRNO","errnoRet":38},{"names":["mkdir"],"action":"SCMP_ACT_ERRNO","args":[{"index":1,"value":448,"op":"SCMP_CMP_EQ"}]}]}"#,
        )
        .unwrap();
        let f = compile(&p, &[]).unwrap();
        // Two errno values: two filters; an all-allow default adds none.
        assert_eq!(f.programs.len(), 2);
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
    }

    #[test]
    fn every_name_of_the_default_profile_is_known_here() {
        for r in default::profile().syscalls {
            for n in r.all_names() {
                assert!(syscall_number(n).is_some(), "unknown syscall {n}");
            }
        }
    }
}
