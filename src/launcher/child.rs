//! The child, from its birth in the new namespaces to the exec of the command: its
//! world (namespaces joined, mounts, hostname, network), PID 1 when it has a PID
//! namespace, and the command's identity, privileges and filter.

use super::charges::SelfPlacement;
use super::clone::ns_flag;
use super::error::{Step, StepError, StepResult};
use super::seccomp::{self, Filter};
use super::{init, mounts, network, privileges, signals, terminal};
use crate::spec::{ContainerSpec, NsKind};
use nix::sched::CloneFlags;
use std::convert::Infallible;
use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

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

/// What the cloned child needs to build the container.
pub(super) struct Child<'a> {
    /// The definition.
    pub spec: &'a ContainerSpec,
    /// Its secrets' values (`secrets.rs`).
    pub secrets: &'a [super::secrets::SecretFile],
    /// How it sees its root.
    pub root: &'a RootAccess,
    /// Its seccomp filter, compiled.
    pub filter: Option<&'a Filter>,
    /// An OCI launch's start gate: the directory of its `exec.fifo` (opened `O_PATH`
    /// before the clone, so the container reaches it after pivot_root, and only until
    /// its exec: the descriptor is close-on-exec). `None`: a supervised launch.
    pub gate_dir: Option<RawFd>,
    /// Descriptors 3.. kept open into the command (an OCI launch's `--preserve-fds`).
    pub preserve_fds: u32,
    /// An OCI launch's console socket: the process gets a terminal of its own.
    pub console: Option<RawFd>,
    /// An OCI launch's hooks (the child runs `createContainer` before pivot_root).
    pub hooks: Option<&'a super::hooks::LaunchHooks>,
    /// The container's cgroup directories shown at /sys/fs/cgroup (`Cgroup::views`).
    pub cgroup_views: &'a [(String, PathBuf)],
}

/// Where an OCI launch waits before its exec, and whom it tells that it does.
#[derive(Clone, Copy)]
pub(crate) struct Gate {
    /// The directory holding `exec.fifo`.
    pub dir: RawFd,
    /// The error pipe: one byte on it says "ready at the gate".
    pub report: RawFd,
    /// Descriptors 3.. that stay open across the exec.
    pub preserve: u32,
}

/// The step of a child whose launcher gave up before releasing it.
pub(super) const WAIT_RELEASE: &str = "wait for release";

/// Stack of the command process between clone and exec.
const COMMAND_STACK: usize = 1 << 20;

/// The child: everything from the release to exec. Returns only on failure.
pub(super) fn child_main(
    c: &Child,
    go_r: OwnedFd,
    err_w: &OwnedFd,
    enter_fds: &[(NsKind, OwnedFd)],
    mut placement: Option<SelfPlacement>,
) -> StepResult<Infallible> {
    let spec = c.spec;
    // Nothing of the launcher's caller (its report pipes, sockets) leaks into the
    // container, not even into PID 1, which never execs.
    let mut keep: Vec<RawFd> = vec![go_r.as_raw_fd(), err_w.as_raw_fd()];
    keep.extend(enter_fds.iter().map(|(_, f)| f.as_raw_fd()));
    keep.extend(c.gate_dir);
    keep.extend(c.console);
    keep.extend((0..c.preserve_fds).map(|i| 3 + i as RawFd));
    keep.extend(placement.iter().flat_map(|p| p.fds()));
    close_other_fds(&keep);
    let gate = c.gate_dir.map(|dir| Gate {
        dir,
        report: err_w.as_raw_fd(),
        preserve: c.preserve_fds,
    });
    if gate.is_none() {
        // Die with the launcher rather than run unsupervised.
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
            .step(|| "set the parent-death signal".into())?;
    }
    // On v2 we were born in our cgroup; on v1 we move ourselves in once our mounts are
    // built (what building them charges is the launcher's), before anything of the
    // container runs. Only the fallback has the parent place us (a slow operation: it
    // waits for an RCU grace period) while we build our mounts; we wait for its word only
    // before anything runs in the container, or at once when the id maps must come first.
    let mut join_cgroup = move || placement.as_mut().map_or(Ok(()), SelfPlacement::join);
    let mut release = Some(File::from(go_r));
    let mut wait_release = || -> StepResult<()> {
        if let Some(mut r) = release.take() {
            let mut go = [0u8; 1];
            if r.read(&mut go).unwrap_or(0) != 1 {
                return Err(StepError::msg(WAIT_RELEASE, "the launcher went away"));
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
    if let Some(adj) = spec.oom_score_adj {
        // Through the host's /proc, still in view before pivot_root.
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .step(|| format!("set oom_score_adj to {adj}"))?;
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let create_container = c.hooks.map(|h| &h.create_container[..]).unwrap_or(&[]);
    mounts::setup_root(spec, c.root, c.cgroup_views, c.secrets, &mut || {
        if create_container.is_empty() {
            return Ok(());
        }
        // The hooks run as the container's processes, in its cgroups.
        join_cgroup()?;
        // After createRuntime (the launcher runs those before the release), in our
        // mount namespace with the host's files still in view.
        wait_release()?;
        let me = std::fs::read_link("/proc/self").step(|| "read our pid".into())?;
        let pid: i32 = me.to_string_lossy().parse().unwrap_or(0);
        let state = c.hooks.map(|h| h.state_of(pid)).unwrap_or_default();
        create_container
            .iter()
            .try_for_each(|h| super::hooks::run(h, &state))
    })?;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    // A joined UTS namespace is renamed only when the definition names a hostname.
    let joined_uts =
        spec.hostname.is_some() && spec.namespaces.enter.iter().any(|e| e.kind == NsKind::Uts);
    if spec.unshares(NsKind::Uts) || joined_uts {
        nix::unistd::sethostname(spec.effective_hostname()).step(|| "set the hostname".into())?;
    }
    if spec.unshares(NsKind::Net) && spec.network.loopback {
        network::loopback_up()?;
    }
    join_cgroup()?;
    wait_release()?;
    if spec.unshares(NsKind::Cgroup) {
        // After the placement, so the container's cgroup is the namespace's root.
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP)
            .step(|| "unshare the cgroup namespace".into())?;
    }
    if let Some(socket) = c.console {
        terminal::take_terminal(socket, spec.uid.unwrap_or(0), spec.gid.unwrap_or(0))?;
    }
    if spec.unshares(NsKind::Pid) && gate.is_none() {
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
                .and_then(|()| exec_command(spec, c.filter, None, 0))
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
    exec_command(spec, c.filter, gate, 0)
}

fn cstr(s: &str, what: &str) -> StepResult<CString> {
    CString::new(s)
        .map_err(|_| StepError::msg(what.to_string(), format!("'{s}' contains a NUL byte")))
}

/// Identity, privileges, environment, working directory, the seccomp filter (the last
/// step), then exec. With a `gate` (an OCI launch) it first says it is ready and waits
/// for `start`; a failure after that is printed on the container's stderr (nobody reads
/// the error pipe any more) and ends the process with 127 (no such command) or 126.
/// Descriptors from 3 on close at the exec but the gate's, or `preserve_fds` of them
/// (an OCI `exec --preserve-fds`).
pub(crate) fn exec_command(
    spec: &ContainerSpec,
    filter: Option<&Filter>,
    gate: Option<Gate>,
    preserve_fds: u32,
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
    let candidates: Vec<String> = if cmd.contains('/') {
        vec![cmd.clone()]
    } else {
        let path = env.get("PATH").cloned().unwrap_or_default();
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| format!("{d}/{cmd}"))
            .collect()
    };
    if let Some(g) = gate {
        // As runc does: a command that is not there fails `create`, not `start`.
        let found = candidates
            .iter()
            .any(|c| nix::unistd::access(c.as_str(), nix::unistd::AccessFlags::X_OK).is_ok());
        if !found {
            return Err(StepError::os(
                format!("exec {cmd}"),
                std::io::Error::from_raw_os_error(libc::ENOENT),
            ));
        }
        wait_at_gate(g)?;
        let e = match finish_exec(spec, filter, &candidates, &argv, &envp, g.preserve) {
            Err(e) => e,
            Ok(never) => match never {},
        };
        let code = if e.errno == Some(libc::ENOENT) {
            127
        } else {
            126
        };
        eprintln!("haconiwa: {}", e.in_container(&spec.name));
        // SAFETY: _exit ends the process without running destructors of a state
        // shared with nobody (this process never returns to its caller's code).
        unsafe { libc::_exit(code) }
    }
    finish_exec(spec, filter, &candidates, &argv, &envp, preserve_fds)
}

/// Says "ready" on the error pipe, then waits until `start` opens `exec.fifo` for
/// reading, and hands it one byte.
fn wait_at_gate(g: Gate) -> StepResult<()> {
    // SAFETY: writes one byte from a local to the error pipe this process holds open.
    if unsafe { libc::write(g.report, [super::parent::READY_AT_GATE].as_ptr().cast(), 1) } != 1 {
        return Err(StepError::last("tell the runtime the container is created"));
    }
    // SAFETY: closes our copy of the error pipe: from now on the caller is gone.
    unsafe { libc::close(g.report) };
    // SAFETY: the gate directory's descriptor stays open in this process until its exec
    // (it is on the kept list and close-on-exec).
    let dir = unsafe { std::os::fd::BorrowedFd::borrow_raw(g.dir) };
    let fifo = nix::fcntl::openat(
        dir,
        "exec.fifo",
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .step(|| "wait for start at exec.fifo".into())?;
    let mut f = File::from(fifo);
    std::io::Write::write_all(&mut f, b"0").step(|| "answer start at exec.fifo".into())
}

/// The end of [`exec_command`]: identity, privileges, working directory, filter, exec.
fn finish_exec(
    spec: &ContainerSpec,
    filter: Option<&Filter>,
    candidates: &[String],
    argv: &[CString],
    envp: &[CString],
    preserve_fds: u32,
) -> StepResult<Infallible> {
    let cmd = spec.init_command.first().map(String::as_str).unwrap_or("");
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
    // Every descriptor but 0-2 (and the preserved ones) closes at exec (the error pipe
    // among them).
    // SAFETY: close_range only changes flags of our own descriptors.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32.saturating_add(preserve_fds),
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
        );
    }
    signals::reset();
    if spec.no_new_privs {
        install(filter)?;
    }
    let mut last = nix::errno::Errno::ENOENT;
    for c in candidates {
        let p = cstr(c, "command")?;
        let Err(e) = nix::unistd::execve(&p, argv, envp);
        if last == nix::errno::Errno::ENOENT || e != nix::errno::Errno::ENOENT {
            last = e;
        }
    }
    Err(StepError::os(
        format!("exec {cmd}"),
        std::io::Error::from(last),
    ))
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
