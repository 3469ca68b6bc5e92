//! The parent side of a launch: it prepares the cgroup, clones the child (clone.rs) into
//! its new namespaces, writes the id maps and releases it; the child (child.rs) builds
//! its world and execs. Errors travel back over a close-on-exec pipe as typed messages:
//! EOF means the exec happened. Then it waits, forwarding signals.

use super::cgroup::{Cgroup, Layout};
use super::child::{child_main, Child, RootAccess};
use super::clone::{clone_flags, raw_clone, raw_clone_into};
use super::error::{LaunchError, Step, StepError, StepResult};
use super::seccomp::{self};
use super::{devices, init, network, privileges, signals};
use crate::spec::{ContainerSpec, IdMap, NsKind, SystemMount};
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

/// Where the container's cgroups go and how it gets its root.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// Parent cgroup path in every hierarchy, e.g. `haconiwa` or `haconiwa/node-2`.
    pub cgroup_parent: String,
    /// The root filesystem's access mode.
    pub root: RootAccess,
    /// How the container's processes are held: by haconiwa (its PID 1 and its death
    /// with the launcher) or as an OCI runtime's caller expects.
    pub hold: Hold,
    /// The values of the secrets it reads (`c.secret`), written on a tmpfs of its own.
    pub secrets: Vec<super::secrets::SecretFile>,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        LaunchOptions {
            cgroup_parent: "haconiwa".into(),
            root: RootAccess::ReadOnly,
            hold: Hold::Supervised,
            secrets: Vec::new(),
        }
    }
}

/// Who holds a container's processes once it is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// haconiwa's own: a PID 1 of ours reaps and forwards (with a PID namespace), and
    /// the container dies with the process that launched it (its monitor).
    Supervised,
    /// An OCI runtime's (runtime-spec, runc): the command itself is PID 1, the
    /// container outlives the `create` that made it, and it waits before its exec at
    /// `DIR/exec.fifo` (a FIFO the caller made; `DIR` is opened before the container
    /// exists) until `start` opens the FIFO and reads its one byte.
    Oci {
        /// The runtime's directory of this container, where `exec.fifo` is.
        gate_dir: std::path::PathBuf,
        /// How many descriptors from 3 on the process keeps (`--preserve-fds`, as
        /// `LISTEN_FDS` users need).
        preserve_fds: u32,
        /// The caller's console socket: the process gets a terminal, whose master end
        /// goes there (`--console-socket`).
        console_socket: Option<std::path::PathBuf>,
        /// The hooks that run during the launch.
        hooks: super::hooks::LaunchHooks,
    },
}

/// A container whose command has been exec'd.
#[derive(Debug)]
pub struct Started {
    /// Host pid of the container's first process (its PID 1 when it has a PID namespace).
    pub pid: i32,
    /// The container's cgroup, removed by [`Started::cleanup`]. (The host end of its
    /// veth, if any, goes with its network namespace: the kernel removes both ends.)
    pub cgroup: Cgroup,
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
        self.cgroup.remove()?;
        Ok(oom)
    }

    /// A descriptor of the container's mount namespace (`None` when it is gone
    /// already): while it is held, the container's last process exits without tearing
    /// its mounts down. That teardown waits for two expedited RCU grace periods on
    /// this kernel (the namespace's and its overlayfs root's, 1-5 ms, more on a busy
    /// host), and a PID 1's parent hears of its exit only after it. The holder drops
    /// the descriptor once it has recorded the exit, and pays them then.
    pub fn hold_mounts(&self) -> Option<OwnedFd> {
        mount_namespace(self.pid)
    }
}

/// A descriptor of process `pid`'s mount namespace, which lives while it is open.
fn mount_namespace(pid: i32) -> Option<OwnedFd> {
    File::open(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(OwnedFd::from)
}

/// Checks what can be checked before anything is created.
fn preflight(spec: &ContainerSpec) -> StepResult<()> {
    let root = &spec.rootfs.path;
    for layer in &spec.rootfs.layers {
        if !root.join(layer).is_dir() {
            return Err(StepError::msg(
                format!("image layer {layer} in {}", root.display()),
                "missing from the image store; pull the image again",
            ));
        }
    }
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
        opts.hold == Hold::Supervised,
    )
    .map_err(fail)?;
    let gate_dir = match &opts.hold {
        Hold::Supervised => None,
        Hold::Oci { gate_dir, .. } => Some(
            nix::fcntl::open(
                gate_dir,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .step(|| format!("open the start gate's directory {}", gate_dir.display()))
            .map_err(fail)?,
        ),
    };
    let console = match &opts.hold {
        Hold::Oci {
            console_socket: Some(p),
            ..
        } => Some(super::terminal::connect(p).map_err(fail)?),
        _ => None,
    };
    let views = if spec.system_mounts.contains(&SystemMount::Cgroup) {
        cgroup.views()
    } else {
        Vec::new()
    };
    let child = Child {
        cgroup_views: &views,
        spec,
        secrets: &opts.secrets,
        root: &opts.root,
        filter: filter.as_ref(),
        console: console.as_ref().map(|c| c.as_raw_fd()),
        hooks: match &opts.hold {
            Hold::Oci { hooks, .. } => Some(hooks),
            Hold::Supervised => None,
        },
        gate_dir: gate_dir.as_ref().map(|f| f.as_raw_fd()),
        preserve_fds: match opts.hold {
            Hold::Supervised => 0,
            Hold::Oci { preserve_fds, .. } => preserve_fds,
        },
    };
    match start_in(&child, cgroup.clone(), enter_fds) {
        Ok(pid) => Ok(Started { pid, cgroup }),
        Err(e) => {
            let _ = cgroup.remove();
            Err(fail(e))
        }
    }
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
            // v1: the child moves itself in once its mounts are built (SelfPlacement).
            let placement = if cgroup.v2_dir().is_none() {
                cgroup.self_placement().map(Some)
            } else {
                Ok(None)
            };
            let e = match placement.and_then(|p| child_main(c, go_r, &err_w, &enter_fds, p)) {
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
        if let Some(h) = c.hooks {
            let state = h.state_of(child.as_raw());
            for hook in &h.create_runtime {
                super::hooks::run(hook, &state)?;
            }
        }
        let mut w = File::from(go_w);
        w.write_all(b"g").step(|| "release the container".into())
    };
    let released = release();
    let mut r = File::from(err_r);
    if let Err(e) = released {
        // The child may have failed first (and closed its end): its error is the cause,
        // unless it only saw us give up (our end of the release closed with our error).
        let e = kill_child(e);
        let mut msg = Vec::new();
        let _ = r.read_to_end(&mut msg);
        let theirs = (!msg.is_empty()).then(|| StepError::decode(&msg));
        return Err(match theirs {
            Some(t) if t.step != super::child::WAIT_RELEASE => t,
            _ => e,
        });
    }
    let mut msg = Vec::new();
    if c.gate_dir.is_some() {
        // Ready at the gate: one byte, then nothing (its errors from now on go to the
        // container's stderr: `create` is gone by then).
        let mut first = [0u8; 1];
        if r.read(&mut first).unwrap_or(0) == 1 {
            if first[0] == READY_AT_GATE {
                return Ok(child.as_raw());
            }
            msg.push(first[0]);
        }
    }
    let _ = r.read_to_end(&mut msg);
    if !msg.is_empty() {
        let _ = waitpid(child, None);
        return Err(StepError::decode(&msg));
    }
    Ok(child.as_raw())
}

/// What the child writes on the error pipe when it waits at an OCI start gate (an
/// error report is JSON: it never starts with this byte).
pub(super) const READY_AT_GATE: u8 = 0;

/// Waits for the container's first process, forwarding signals sent to this process
/// (not the terminal's: those reached the container's group already).
pub fn wait(started: &Started) -> Exit {
    wait_watching(started, || Watch::Never)
}

/// What a watcher wants while the container runs (see [`wait_watching`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Ask again after this long.
    After(std::time::Duration),
    /// Kill the container now (it is no longer allowed to run).
    Kill,
    /// Nothing more to watch.
    Never,
}

/// [`wait`], also calling `watch` when it asked to be called; on `Watch::Kill` the
/// container's processes get SIGKILL (and the wait goes on until the first one is
/// reaped).
pub fn wait_watching(started: &Started, mut watch: impl FnMut() -> Watch) -> Exit {
    let pid = Pid::from_raw(started.pid);
    let mut next = watch();
    let code = loop {
        let got = match next {
            Watch::After(d) => {
                let ms = d.as_millis().clamp(1, u128::from(u32::MAX)) as u64;
                match signals::wait_blocked_timeout(ms) {
                    None => {
                        next = watch();
                        if next == Watch::Kill {
                            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                            for p in started.cgroup.pids() {
                                let _ = nix::sys::signal::kill(
                                    Pid::from_raw(p),
                                    nix::sys::signal::Signal::SIGKILL,
                                );
                            }
                            next = Watch::Never;
                        }
                        continue;
                    }
                    some => some,
                }
            }
            Watch::Kill | Watch::Never => signals::wait_blocked(),
        };
        match got {
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

/// Reads a pid's start time (clock ticks since boot, field 22 of /proc/PID/stat), which
/// tells a live container from a reused pid.
pub fn start_time(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    let after = &s[s.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
}

/// Duplicates `stdin`, `out` and `err` onto 0, 1 and 2 (daemon mode: the output pipes).
pub fn redirect_stdio(stdin: RawFd, out: RawFd, err: RawFd) -> std::io::Result<()> {
    for (from, to) in [(stdin, 0), (out, 1), (err, 2)] {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    fn ns_of(path: String) -> String {
        std::fs::read_link(path)
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }

    #[test]
    fn a_held_mount_namespace_is_the_process_one_and_outlives_it() {
        let mine = ns_of("/proc/self/ns/mnt".into());
        let mut child = std::process::Command::new("unshare")
            .args(["-m", "sleep", "30"])
            .spawn()
            .expect("unshare (util-linux) runs");
        let pid = child.id() as i32;
        // `unshare` execs `sleep` once its namespace is made.
        let deadline = Instant::now() + Duration::from_secs(10);
        let theirs = loop {
            let ns = ns_of(format!("/proc/{pid}/ns/mnt"));
            if (!ns.is_empty() && ns != mine) || Instant::now() > deadline {
                break ns;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(theirs.starts_with("mnt:") && theirs != mine, "{theirs}");
        let held = mount_namespace(pid);
        let _ = child.kill();
        let _ = child.wait();
        let held = held.expect("the namespace of a live process opens");
        assert_eq!(
            ns_of(format!("/proc/self/fd/{}", held.as_raw_fd())),
            theirs,
            "the descriptor holds the process's namespace after its end"
        );
    }
}
