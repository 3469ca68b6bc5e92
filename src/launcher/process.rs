//! Starting one container: the parent prepares the cgroup, clones the child into its new
//! namespaces, writes the id maps and releases it; the child builds its world and execs.
//! Errors travel back over a close-on-exec pipe: EOF means the exec happened.

use super::cgroup::{Cgroup, Layout};
use super::error::{LaunchError, Step, StepError, StepResult};
use super::seccomp::{self, Filter};
use super::{devices, init, mounts, network, privileges, signals};
use crate::spec::{ContainerSpec, IdMap, NsKind};
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use std::convert::Infallible;
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// Stack of the command process between clone and exec.
const COMMAND_STACK: usize = 1 << 20;

/// PATH inside the container when the definition sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How the container sees its root filesystem (the bootstrapped base of a definition,
/// shared by all its containers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootAccess {
    /// The base read-only below the container's own writable layer (overlayfs): its
    /// writes land in `DIR/upper` (with `DIR/work` and the mount point `DIR/merged`,
    /// all made by the caller) and nobody else sees them.
    Layer(PathBuf),
    /// The base read-only, nothing writable (`readonly_rootfs`).
    ReadOnly,
    /// The base itself, writable: only for provisioning it, once, at `create`.
    Writable,
}

/// Where the container's cgroups go and how it gets its root.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// Parent cgroup path in every hierarchy, e.g. `haconiwa` or `haconiwa/node-2`.
    pub cgroup_parent: String,
    /// The root filesystem's access mode.
    pub root: RootAccess,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        LaunchOptions {
            cgroup_parent: "haconiwa".into(),
            root: RootAccess::ReadOnly,
        }
    }
}

/// A container whose command has been exec'd.
#[derive(Debug)]
pub struct Started {
    /// Host pid of the container's first process (its PID 1 when it has a PID namespace).
    pub pid: i32,
    /// The container's cgroup, removed by [`Started::cleanup`].
    pub cgroup: Cgroup,
    /// Host end of the container's veth, when it has a bridge network.
    pub host_veth: Option<String>,
}

/// How a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Exit code, 128+n when killed by signal n.
    pub code: i32,
    /// The kernel's OOM killer fired in the container's cgroup.
    pub oom_killed: bool,
}

impl Started {
    /// Removes what the container left (processes, cgroup) and reports whether it was
    /// OOM-killed. Call after its first process was reaped.
    pub fn cleanup(&self) -> StepResult<bool> {
        let oom = self.cgroup.oom_killed();
        if let Some(veth) = &self.host_veth {
            // The kernel drops it with the namespace, but asynchronously; do it now.
            network::remove_link(veth);
        }
        self.cgroup.remove()?;
        Ok(oom)
    }
}

fn clone_flags(spec: &ContainerSpec) -> CloneFlags {
    let mut f = CloneFlags::empty();
    for k in &spec.namespaces.unshare {
        f |= match k {
            NsKind::Uts => CloneFlags::CLONE_NEWUTS,
            NsKind::Ipc => CloneFlags::CLONE_NEWIPC,
            NsKind::Pid => CloneFlags::CLONE_NEWPID,
            NsKind::Mount => CloneFlags::CLONE_NEWNS,
            NsKind::Net => CloneFlags::CLONE_NEWNET,
            NsKind::User => CloneFlags::CLONE_NEWUSER,
            // Unshared by the child once it sits in its cgroup, so that cgroup is its root.
            NsKind::Cgroup => CloneFlags::empty(),
        };
    }
    f
}

fn ns_flag(k: NsKind) -> CloneFlags {
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

/// Checks what can be checked before anything is created.
fn preflight(spec: &ContainerSpec) -> StepResult<()> {
    let root = &spec.rootfs.path;
    match std::fs::metadata(root) {
        Ok(md) if md.is_dir() => Ok(()),
        Ok(_) => Err(StepError::msg(
            format!("root filesystem {}", root.display()),
            "not a directory",
        )),
        Err(e) => Err(StepError::msg(
            format!("root filesystem {}", root.display()),
            format!("{e}; run `haconiwa create` first"),
        )),
    }
}

fn map_text(maps: &[IdMap]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.inside, m.outside, m.count))
        .collect()
}

/// A fork-style clone(2): the child continues here on a copy of our stack.
fn raw_clone(flags: CloneFlags) -> StepResult<Option<Pid>> {
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
fn raw_clone_into(flags: CloneFlags, cgroup_fd: RawFd) -> StepResult<Option<Pid>> {
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

/// Starts the container and returns once its command is exec'd (or the launch failed, in
/// which case nothing is left behind). SIGCHLD and the forwarded signals stay blocked in
/// the caller so that [`wait`] sees every one of them.
pub fn start(spec: &ContainerSpec, opts: &LaunchOptions) -> Result<Started, LaunchError> {
    let fail = |e: StepError| e.in_container(&spec.name);
    preflight(spec).map_err(fail)?;
    // Compiled here, before anything exists, so a bad profile leaves nothing behind.
    let filter =
        seccomp::prepare(spec, &privileges::capability_names(&spec.capabilities)).map_err(fail)?;
    let device_rules = devices::rules(&spec.devices).map_err(fail)?;
    let mut enter_fds = Vec::new();
    for e in &spec.namespaces.enter {
        let f = File::open(&e.path)
            .step(|| format!("open {} namespace {}", e.kind, e.path.display()))
            .map_err(fail)?;
        enter_fds.push((e.kind, OwnedFd::from(f)));
    }
    let layout = Layout::detect().map_err(fail)?;
    let cgroup = Cgroup::create(
        &layout,
        &opts.cgroup_parent,
        &spec.name,
        &spec.cgroup,
        &device_rules,
    )
    .map_err(fail)?;
    let child = Child {
        spec,
        root: &opts.root,
        filter: filter.as_ref(),
    };
    match start_in(&child, cgroup.clone(), enter_fds) {
        Ok(pid) => Ok(Started {
            pid,
            cgroup,
            host_veth: spec
                .network
                .bridge
                .as_ref()
                .map(|_| network::host_veth_name(pid)),
        }),
        Err(e) => {
            let _ = cgroup.remove();
            Err(fail(e))
        }
    }
}

/// What the cloned child needs to build the container.
struct Child<'a> {
    spec: &'a ContainerSpec,
    root: &'a RootAccess,
    filter: Option<&'a Filter>,
}

fn start_in(c: &Child, cgroup: Cgroup, enter_fds: Vec<(NsKind, OwnedFd)>) -> StepResult<i32> {
    let spec = c.spec;
    // A joined PID namespace applies to our children, so the parent joins it.
    for (kind, fd) in &enter_fds {
        if *kind == NsKind::Pid {
            nix::sched::setns(fd, CloneFlags::CLONE_NEWPID)
                .step(|| "join the pid namespace".into())?;
        }
    }
    let (go_r, go_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).step(|| "pipe".into())?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).step(|| "pipe".into())?;
    signals::block();
    // Moving a process between cgroups waits for an RCU grace period on the kernel's
    // global threadgroup lock (milliseconds). On v2 the child is born in its cgroup
    // (CLONE_INTO_CGROUP); on v1 it moves its own single thread (writing 0 to `tasks`),
    // which the kernel does without that lock. Only the fallback migrates from here.
    let v2_fd = cgroup.v2_dir().and_then(|d| File::open(d).ok());
    let mut parent_places = false;
    let cloned = match &v2_fd {
        Some(fd) => match raw_clone_into(clone_flags(spec), fd.as_raw_fd()) {
            Ok(r) => Ok(r),
            Err(_) => {
                parent_places = true;
                raw_clone(clone_flags(spec))
            }
        },
        None => raw_clone(clone_flags(spec)),
    };
    let child = match cloned? {
        None => {
            drop(go_w);
            drop(err_r);
            drop(v2_fd);
            let self_placed = if cgroup.v2_dir().is_none() {
                cgroup.join_self()
            } else {
                Ok(())
            };
            let e = match self_placed.and_then(|()| child_main(c, go_r, &err_w, &enter_fds)) {
                Err(e) => e,
                Ok(never) => match never {},
            };
            let mut f = File::from(err_w);
            let _ = f.write_all(&e.encode());
            // SAFETY: _exit ends the child without running the parent's destructors.
            unsafe { libc::_exit(126) }
        }
        Some(pid) => pid,
    };
    drop(go_r);
    drop(err_w);
    drop(enter_fds);
    let kill_child = |e: StepError| {
        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(child, None);
        e
    };
    let release = || -> StepResult<()> {
        if parent_places {
            cgroup.add(child.as_raw())?;
        }
        if spec.unshares(NsKind::User) {
            let base = format!("/proc/{}", child.as_raw());
            std::fs::write(
                format!("{base}/uid_map"),
                map_text(&spec.namespaces.uid_map),
            )
            .step(|| "write uid_map".into())?;
            std::fs::write(
                format!("{base}/gid_map"),
                map_text(&spec.namespaces.gid_map),
            )
            .step(|| "write gid_map".into())?;
        }
        if let Some(br) = &spec.network.bridge {
            network::attach_bridge(child.as_raw(), br)?;
        }
        let mut w = File::from(go_w);
        w.write_all(b"g").step(|| "release the container".into())
    };
    let released = release();
    let mut r = File::from(err_r);
    if let Err(e) = released {
        // The child may have failed first (and closed its end): its error is the cause.
        let e = kill_child(e);
        let mut msg = Vec::new();
        let _ = r.read_to_end(&mut msg);
        return Err(if msg.is_empty() {
            e
        } else {
            StepError::decode(&msg)
        });
    }
    let mut msg = Vec::new();
    let _ = r.read_to_end(&mut msg);
    if !msg.is_empty() {
        let _ = waitpid(child, None);
        return Err(StepError::decode(&msg));
    }
    Ok(child.as_raw())
}

/// Waits for the container's first process, forwarding signals sent to this process
/// (not the terminal's: those reached the container's group already).
pub fn wait(started: &Started) -> Exit {
    let pid = Pid::from_raw(started.pid);
    let code = loop {
        match signals::wait_blocked() {
            Some((libc::SIGCHLD, _)) => {
                match waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) => continue,
                    Ok(ws) => match init::exit_code(ws) {
                        Some(c) => break c,
                        None => continue,
                    },
                    Err(_) => break 255,
                }
            }
            Some((sig, false)) => {
                if let Ok(s) = nix::sys::signal::Signal::try_from(sig) {
                    let _ = nix::sys::signal::kill(pid, s);
                }
            }
            _ => {}
        }
    };
    let oom_killed = started.cgroup.oom_killed();
    Exit { code, oom_killed }
}

/// The child: everything from the release to exec. Returns only on failure.
fn child_main(
    c: &Child,
    go_r: OwnedFd,
    err_w: &OwnedFd,
    enter_fds: &[(NsKind, OwnedFd)],
) -> StepResult<Infallible> {
    let spec = c.spec;
    // Nothing of the launcher's caller (its report pipes, sockets) leaks into the
    // container, not even into PID 1, which never execs.
    let mut keep: Vec<RawFd> = vec![go_r.as_raw_fd(), err_w.as_raw_fd()];
    keep.extend(enter_fds.iter().map(|(_, f)| f.as_raw_fd()));
    close_other_fds(&keep);
    // Die with the launcher rather than run unsupervised.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .step(|| "set the parent-death signal".into())?;
    // The parent places us in our cgroups (a slow operation on cgroup v1: it waits for
    // an RCU grace period) while we build our mounts; we wait for its word only before
    // anything runs in the container, or at once when the id maps must come first.
    let mut release = Some(File::from(go_r));
    let mut wait_release = || -> StepResult<()> {
        if let Some(mut r) = release.take() {
            let mut go = [0u8; 1];
            if r.read(&mut go).unwrap_or(0) != 1 {
                return Err(StepError::msg("wait for release", "the launcher went away"));
            }
        }
        Ok(())
    };
    if spec.unshares(NsKind::User) {
        wait_release()?;
        // Root inside: the id maps are written now.
        nix::unistd::setresgid(0.into(), 0.into(), 0.into())
            .step(|| "become gid 0 in the user namespace".into())?;
        nix::unistd::setresuid(0.into(), 0.into(), 0.into())
            .step(|| "become uid 0 in the user namespace".into())?;
    }
    // Join namespaces, the user namespace first so the others are owned by it.
    for kind in NsKind::ALL {
        if kind == NsKind::Pid {
            continue;
        }
        for (k, fd) in enter_fds {
            if *k == kind {
                nix::sched::setns(fd, ns_flag(kind))
                    .step(|| format!("join the {kind} namespace"))?;
            }
        }
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    mounts::setup_root(spec, c.root)?;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    if spec.unshares(NsKind::Uts) {
        nix::unistd::sethostname(spec.effective_hostname()).step(|| "set the hostname".into())?;
    }
    if spec.unshares(NsKind::Net) && spec.network.loopback {
        network::loopback_up()?;
    }
    wait_release()?;
    if spec.unshares(NsKind::Cgroup) {
        // After the placement, so the container's cgroup is the namespace's root.
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP)
            .step(|| "unshare the cgroup namespace".into())?;
    }
    if spec.unshares(NsKind::Pid) {
        // The command runs as our child; we stay as its PID 1. It is started vfork-style
        // (shared memory, own stack, we pause until its exec): no page tables to copy.
        let err_fd = err_w.as_raw_fd();
        let mut stack = vec![0u8; COMMAND_STACK];
        // From now on processes of the container exist: PID 1 (and the command until its
        // exec, which shares our memory) can be neither traced nor read through /proc.
        nix::sys::prctl::set_dumpable(false).step(|| "make PID 1 non-dumpable".into())?;
        let command = Box::new(|| -> isize {
            let e = match nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .step(|| "set the parent-death signal".into())
                .and_then(|()| exec_command(spec, c.filter))
            {
                Err(e) => e,
                Ok(never) => match never {},
            };
            let msg = e.encode();
            // SAFETY: writes our encoded error to the error pipe we hold open.
            unsafe { libc::write(err_fd, msg.as_ptr().cast(), msg.len()) };
            126
        });
        // SAFETY: CLONE_VM|CLONE_VFORK with a stack of its own: we are suspended until the
        // child execs or exits, so it never races us on the shared memory; it does not
        // share our descriptor table, signal handlers or credentials.
        let child = unsafe {
            nix::sched::clone(
                command,
                &mut stack,
                CloneFlags::CLONE_VM | CloneFlags::CLONE_VFORK,
                Some(libc::SIGCHLD),
            )
        }
        .step(|| "start the command under PID 1".into())?;
        // The command has exec'd with its own credentials: PID 1 gives up everything
        // but signalling it, before the launcher hears that the start succeeded.
        if let Err(e) = privileges::harden_init(&[caps::Capability::CAP_KILL]) {
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            return Err(e);
        }
        // PID 1 keeps no copy of the error pipe: its EOF must mean "exec'd".
        // SAFETY: closing our own duplicate of the pipe; the OwnedFd is not used again in
        // this process, which never returns from init::run.
        unsafe { libc::close(err_fd) };
        init::run(child);
    }
    exec_command(spec, c.filter)
}

fn cstr(s: &str, what: &str) -> StepResult<CString> {
    CString::new(s)
        .map_err(|_| StepError::msg(what.to_string(), format!("'{s}' contains a NUL byte")))
}

/// Identity, privileges, environment, working directory, the seccomp filter (the last
/// step), then exec.
pub(crate) fn exec_command(
    spec: &ContainerSpec,
    filter: Option<&Filter>,
) -> StepResult<Infallible> {
    let mut env = std::collections::BTreeMap::new();
    env.insert("PATH".to_string(), DEFAULT_PATH.to_string());
    env.insert("HOME".to_string(), "/root".to_string());
    env.insert(
        "HOSTNAME".to_string(),
        spec.effective_hostname().to_string(),
    );
    if let Ok(term) = std::env::var("TERM") {
        env.insert("TERM".to_string(), term);
    }
    for (k, v) in &spec.environment {
        env.insert(k.clone(), v.clone());
    }
    let envp: Vec<CString> = env
        .iter()
        .map(|(k, v)| cstr(&format!("{k}={v}"), "environment"))
        .collect::<StepResult<_>>()?;
    let argv: Vec<CString> = spec
        .init_command
        .iter()
        .map(|a| cstr(a, "command"))
        .collect::<StepResult<_>>()?;
    let Some(cmd) = spec.init_command.first() else {
        return Err(StepError::msg("exec", "empty command"));
    };
    // Installing a filter needs no_new_privs or CAP_SYS_ADMIN: with no_new_privs off it
    // goes in while root still holds its capabilities (the filter allows the few calls
    // that follow).
    let install = |f: Option<&Filter>| f.map(seccomp::install).unwrap_or(Ok(()));
    if !spec.no_new_privs {
        install(filter)?;
    }
    privileges::apply(spec)?;
    let workdir = spec.workdir.as_deref().unwrap_or("/");
    nix::unistd::chdir(workdir).step(|| format!("chdir to workdir {workdir}"))?;
    // Every descriptor but 0-2 closes at exec (the error pipe among them).
    // SAFETY: close_range only changes flags of our own descriptors.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
        );
    }
    signals::reset();
    if spec.no_new_privs {
        install(filter)?;
    }
    let candidates: Vec<String> = if cmd.contains('/') {
        vec![cmd.clone()]
    } else {
        let path = env.get("PATH").cloned().unwrap_or_default();
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| format!("{d}/{cmd}"))
            .collect()
    };
    let mut last = nix::errno::Errno::ENOENT;
    for c in &candidates {
        let p = cstr(c, "command")?;
        let Err(e) = nix::unistd::execve(&p, &argv, &envp);
        if last == nix::errno::Errno::ENOENT || e != nix::errno::Errno::ENOENT {
            last = e;
        }
    }
    Err(StepError::os(
        format!("exec {cmd}"),
        std::io::Error::from(last),
    ))
}

/// Reads a pid's start time (clock ticks since boot, field 22 of /proc/PID/stat), which
/// tells a live container from a reused pid.
pub fn start_time(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    let after = &s[s.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
}

/// Duplicates `fd` onto 0, 1 and 2 (daemon mode: everything to the log).
pub fn redirect_stdio(stdin: RawFd, out: RawFd) -> std::io::Result<()> {
    for (from, to) in [(stdin, 0), (out, 1), (out, 2)] {
        // SAFETY: dup2 onto the standard descriptors of this single-threaded process.
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// fork(2) for the single-threaded CLI and helpers (the monitor of daemon mode).
pub fn fork_single_threaded() -> std::io::Result<ForkResult> {
    // SAFETY: callers are single-threaded processes (the CLI before any runtime thread,
    // the `__monitor` helper), so the child inherits no lock held by another thread.
    unsafe { nix::unistd::fork() }.map_err(std::io::Error::from)
}

/// Closes every descriptor above 2 except `keep`.
fn close_other_fds(keep: &[RawFd]) {
    let mut keep: Vec<u32> = keep.iter().map(|f| *f as u32).collect();
    keep.sort_unstable();
    let mut from = 3u32;
    for k in keep.into_iter().filter(|k| *k >= 3) {
        if k > from {
            // SAFETY: closes descriptors of this process that nothing here refers to.
            unsafe { libc::syscall(libc::SYS_close_range, from, k - 1, 0u32) };
        }
        from = k + 1;
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, from, u32::MAX, 0u32) };
}
