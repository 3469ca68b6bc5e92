//! The clone itself: a fork-style `clone`/`clone3` into the container's new namespaces
//! (on cgroup v2 straight into its cgroup), and the one mapping from namespace kinds to
//! clone flags that clone, setns and attach all use.

use super::error::{StepError, StepResult};
use crate::spec::{ContainerSpec, NsKind};
use nix::sched::CloneFlags;
use nix::unistd::Pid;
use std::os::fd::RawFd;

/// The clone flag of a namespace kind.
pub fn ns_flag(k: NsKind) -> CloneFlags {
    match k {
        NsKind::Uts => CloneFlags::CLONE_NEWUTS,
        NsKind::Ipc => CloneFlags::CLONE_NEWIPC,
        NsKind::Pid => CloneFlags::CLONE_NEWPID,
        NsKind::Mount => CloneFlags::CLONE_NEWNS,
        NsKind::Net => CloneFlags::CLONE_NEWNET,
        NsKind::User => CloneFlags::CLONE_NEWUSER,
        NsKind::Cgroup => CloneFlags::CLONE_NEWCGROUP,
    }
}

/// The namespaces created by the clone: all the spec unshares but the cgroup one, which
/// the child unshares once it sits in its cgroup (so that cgroup is its root).
pub fn clone_flags(spec: &ContainerSpec) -> CloneFlags {
    spec.namespaces
        .unshare
        .iter()
        .filter(|k| **k != NsKind::Cgroup)
        .fold(CloneFlags::empty(), |f, k| f | ns_flag(*k))
}

/// A fork-style clone(2): the child continues here on a copy of our stack.
pub fn raw_clone(flags: CloneFlags) -> StepResult<Option<Pid>> {
    // SAFETY: with a null stack clone behaves like fork; this process is single-threaded
    // (the launcher's rule), so the child holds no lock another thread owns.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags.bits() as libc::c_ulong) | libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match rc {
        -1 => Err(StepError::last("clone into new namespaces")),
        0 => Ok(None),
        pid => Ok(Some(Pid::from_raw(pid as i32))),
    }
}

/// `struct clone_args` of clone3(2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// clone3's flag to start the child directly in a cgroup v2 directory.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// A fork-style clone3(2) straight into the cgroup v2 directory `cgroup_fd`: no
/// migration afterwards. `Err` when the kernel lacks it (the caller falls back).
pub fn raw_clone_into(flags: CloneFlags, cgroup_fd: RawFd) -> StepResult<Option<Pid>> {
    let args = CloneArgs {
        flags: flags.bits() as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup_fd as u64,
        ..CloneArgs::default()
    };
    // SAFETY: no stack given, so clone3 behaves like fork; `args` is a valid clone_args of
    // the size passed; the process is single-threaded (the launcher's rule).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match rc {
        -1 => Err(StepError::last("clone3 into the container's cgroup")),
        0 => Ok(None),
        pid => Ok(Some(Pid::from_raw(pid as i32))),
    }
}
