//! `haconiwa attach`: join every namespace, the cgroups and the root of a running
//! container, then run a command there with the container's privileges.

use super::clone::ns_flag;
use super::error::{LaunchError, Step, StepError, StepResult};
use super::{child, init, privileges, seccomp, signals};
use crate::spec::{ContainerSpec, NsKind};
use nix::sys::stat::stat;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::ForkResult;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::PathBuf;

/// Runs `command` inside the container whose first process is `pid`, placed in the
/// cgroup directories `cgroup_dirs`; returns the command's exit code. Of this
/// process's descriptors the command keeps its stdio and the `preserve_fds` from 3 on
/// (an OCI `exec --preserve-fds`); the others close at its exec.
pub fn attach(
    pid: i32,
    spec: &ContainerSpec,
    cgroup_dirs: &[PathBuf],
    command: &[String],
    preserve_fds: u32,
) -> Result<i32, LaunchError> {
    attach_inner(pid, spec, cgroup_dirs, command, None, preserve_fds)
        .map_err(|e| e.in_container(&spec.name))
}

/// [`attach`] with the process described by `spec` (its command, identity,
/// environment, privileges), returning as soon as it is started: its pid (in this
/// process's PID namespace). For an OCI runtime's `exec --detach`, whose caller waits
/// for the process itself. With `console` (a connected console socket), the process
/// gets a terminal whose master end goes there.
pub fn attach_detached(
    pid: i32,
    spec: &ContainerSpec,
    cgroup_dirs: &[PathBuf],
    console: Option<std::os::fd::RawFd>,
    preserve_fds: u32,
) -> Result<i32, LaunchError> {
    let command = &spec.init_command;
    attach_inner(pid, spec, cgroup_dirs, command, Some(console), preserve_fds)
        .map_err(|e| e.in_container(&spec.name))
}

fn attach_inner(
    pid: i32,
    spec: &ContainerSpec,
    cgroup_dirs: &[PathBuf],
    command: &[String],
    detached: Option<Option<std::os::fd::RawFd>>,
    preserve_fds: u32,
) -> StepResult<i32> {
    // The attached command gets the container's filter, and until its exec (in the
    // container's PID namespace, running this binary) nobody there can trace or read it.
    let filter = seccomp::prepare(spec, &privileges::capability_names(&spec.capabilities))?;
    nix::sys::prctl::set_dumpable(false)
        .step(|| "make the attaching process non-dumpable".into())?;
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let joins = namespaces_of(pid)?;
    let root = File::open(proc_dir.join("root")).step(|| "open the container's root".into())?;
    for d in cgroup_dirs {
        std::fs::write(d.join("cgroup.procs"), std::process::id().to_string())
            .step(|| format!("join cgroup {}", d.display()))?;
    }
    for (kind, f) in &joins {
        nix::sched::setns(f.as_fd(), ns_flag(*kind))
            .step(|| format!("join the {kind} namespace"))?;
    }
    if !joins.iter().any(|(k, _)| *k == NsKind::Mount) {
        // A chroot-only container: enter its root directly.
        nix::unistd::fchdir(root.as_fd()).step(|| "enter the container's root".into())?;
        nix::unistd::chroot(".").step(|| "chroot into the container's root".into())?;
    }
    drop(root);
    let mut spec = spec.clone();
    spec.init_command = command.to_vec();
    signals::block();
    // SAFETY: single-threaded process (the launcher's rule).
    match unsafe { nix::unistd::fork() }.step(|| "fork the attached command".into())? {
        ForkResult::Child => {
            let console = detached.flatten();
            let e = match console
                .map(|s| {
                    super::terminal::take_terminal(s, spec.uid.unwrap_or(0), spec.gid.unwrap_or(0))
                })
                .unwrap_or(Ok(()))
                .and_then(|()| child::exec_command(&spec, filter.as_ref(), None, preserve_fds))
            {
                Err(e) => e,
                Ok(never) => match never {},
            };
            eprintln!("haconiwa: {}", e.in_container(&spec.name));
            // SAFETY: leave the forked child without running the parent's destructors.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } if detached.is_some() => Ok(child.as_raw()),
        ForkResult::Parent { child } => loop {
            match signals::wait_blocked() {
                Some((libc::SIGCHLD, _)) => {
                    match waitpid(child, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                        Ok(WaitStatus::StillAlive) => {}
                        Ok(ws) => {
                            if let Some(c) = init::exit_code(ws) {
                                return Ok(c);
                            }
                        }
                        Err(e) => {
                            return Err(StepError::os("wait for the attached command", e.into()))
                        }
                    }
                }
                Some((sig, false)) => {
                    if let Ok(s) = nix::sys::signal::Signal::try_from(sig) {
                        let _ = nix::sys::signal::kill(child, s);
                    }
                }
                _ => {}
            }
        },
    }
}

/// The namespaces of process `pid` that differ from ours, opened (before anyone moves
/// anywhere), in the order they are joined.
pub(super) fn namespaces_of(pid: i32) -> StepResult<Vec<(NsKind, File)>> {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    // Namespaces that differ from ours, opened before we move anywhere.
    let mut joins = Vec::new();
    for kind in NsKind::ALL {
        let theirs = proc_dir.join("ns").join(kind.proc_name());
        let ours = PathBuf::from("/proc/self/ns").join(kind.proc_name());
        let same = match (stat(&theirs), stat(&ours)) {
            (Ok(a), Ok(b)) => a.st_ino == b.st_ino && a.st_dev == b.st_dev,
            (Err(e), _) => {
                return Err(StepError::os(
                    format!("open {}", theirs.display()),
                    e.into(),
                ))
            }
            _ => false,
        };
        if !same {
            let f = File::open(&theirs).step(|| format!("open {}", theirs.display()))?;
            joins.push((kind, f));
        }
    }
    Ok(joins)
}
