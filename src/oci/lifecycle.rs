//! The operations of runtime-spec's lifecycle on one container: `create` (everything of
//! the config applied, the process waiting at its start gate), `start`, `state`,
//! `kill`, `delete`, and `run` (create, start and wait). Each checks the status it
//! needs first and fails with the status it found; a failed `create` leaves nothing.

use super::config::{self, Bundle, ConfigError};
use super::state::{remove_dir, rfc3339_now, HostMounts, Record, Root, StateReport, Status};
use super::{hooks, host_mounts};
use crate::launcher::{self, Exit, Hold, LaunchError, LaunchOptions, RootAccess, Started};
use crate::spec::names::{self, NameError};
use crate::spec::{NsKind, RootMode, Seccomp};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why an operation failed: one line each, naming the container.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The id breaks the name rule (it becomes a directory and a cgroup).
    #[error(transparent)]
    BadId(#[from] NameError),
    /// No container of that id.
    #[error("container {0} does not exist")]
    NotFound(String),
    /// The id is taken.
    #[error("container {0} already exists")]
    Exists(String),
    /// The operation does not apply to the container's status.
    #[error("container {id} is {status}: cannot {action} it{hint}")]
    Status {
        /// The container.
        id: String,
        /// What it is.
        status: Status,
        /// What was asked.
        action: &'static str,
        /// What to do instead, if anything.
        hint: &'static str,
    },
    /// The bundle's config.
    #[error("bundle {bundle}: {source}")]
    Config {
        /// The bundle directory.
        bundle: PathBuf,
        /// What is wrong with its config.
        source: ConfigError,
    },
    /// The launch itself.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// A file of the runtime's own, or a process it signals.
    #[error("container {id}: {what}: {source}")]
    Io {
        /// The container.
        id: String,
        /// What was being done.
        what: String,
        /// The OS error.
        source: io::Error,
    },
    /// A flag or a request this runtime does not carry out (yet).
    #[error("{0}")]
    Unsupported(String),
}

fn io_err(id: &str, what: impl Into<String>) -> impl FnOnce(io::Error) -> OciError {
    let (id, what) = (id.to_string(), what.into());
    move |source| OciError::Io { id, what, source }
}

/// `create`'s flags.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Where to write the container's pid.
    pub pid_file: Option<PathBuf>,
    /// Where to send the pty master (`process.terminal`).
    pub console_socket: Option<PathBuf>,
    /// Descriptors from 3 on passed to the process besides the stdio.
    pub preserve_fds: u32,
}

/// Loads the record of `id`.
pub fn load(root: &Root, id: &str) -> Result<Record, OciError> {
    names::check("container", id)?;
    root.load(id).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => OciError::NotFound(id.to_string()),
        _ => io_err(id, "read its state.json")(e),
    })
}

/// Loads the record of `id` if the container is `want`; else the status it is.
fn load_when(
    root: &Root,
    id: &str,
    want: Status,
    action: &'static str,
) -> Result<Record, OciError> {
    let r = load(root, id)?;
    let status = r.status(root);
    if status != want {
        return Err(OciError::Status {
            id: id.into(),
            status,
            action,
            hint: "",
        });
    }
    Ok(r)
}

/// `create`: the container is built and waits at its gate; returns its record and the
/// launcher's handle (for `run`, which waits on it).
pub fn create(
    root: &Root,
    id: &str,
    bundle: &Path,
    opts: &CreateOptions,
    warn: &mut dyn FnMut(&str),
) -> Result<(Record, Started), OciError> {
    names::check("container", id)?;
    let bundle = std::fs::canonicalize(bundle)
        .map_err(io_err(id, format!("bundle {}", bundle.display())))?;
    let cfg_err = |source| OciError::Config {
        bundle: bundle.clone(),
        source,
    };
    let (cfg, read_warnings) = config::read(&bundle).map_err(cfg_err)?;
    let mut b = config::translate(&cfg, &bundle, id).map_err(cfg_err)?;
    for w in read_warnings.iter().chain(&b.warnings) {
        warn(w);
    }
    if b.terminal != opts.console_socket.is_some() {
        return Err(OciError::Unsupported(if b.terminal {
            format!(
                "container {id}: process.terminal needs --console-socket (where its terminal goes)"
            )
        } else {
            format!("container {id}: --console-socket without process.terminal: there is no terminal to send")
        }));
    }
    let dir = root.make_dir(id).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => OciError::Exists(id.to_string()),
        _ => io_err(id, "make its state directory")(e),
    })?;
    match create_in(root, &dir, id, &bundle, &mut b, opts) {
        Ok(done) => Ok(done),
        Err(e) => {
            let _ = remove_dir(&dir);
            Err(e)
        }
    }
}

fn create_in(
    root: &Root,
    dir: &Path,
    id: &str,
    bundle: &Path,
    b: &mut Bundle,
    opts: &CreateOptions,
) -> Result<(Record, Started), OciError> {
    // The gate: a directory of its own holding only the FIFO, both owned by the
    // container's root (a host uid other than 0 in a user namespace), which opens the
    // FIFO through the directory just before its exec.
    let gate = Record::gate_dir(dir);
    let owner = |maps: &[crate::spec::IdMap]| {
        maps.iter()
            .find(|m| m.inside == 0)
            .map(|m| m.outside)
            .unwrap_or(0)
    };
    let (uid, gid) = if b.spec.unshares(NsKind::User) {
        (
            owner(&b.spec.namespaces.uid_map),
            owner(&b.spec.namespaces.gid_map),
        )
    } else {
        (0, 0)
    };
    std::fs::create_dir(&gate).map_err(io_err(id, "make its start gate"))?;
    nix::unistd::mkfifo(
        &gate.join("exec.fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| io_err(id, "make exec.fifo")(e.into()))?;
    for p in [gate.join("exec.fifo"), gate.clone()] {
        std::os::unix::fs::chown(&p, Some(uid), Some(gid))
            .map_err(io_err(id, "give the start gate to the container's root"))?;
    }
    if let Some(profile) = &b.seccomp {
        let p = dir.join("seccomp.json");
        std::fs::write(&p, profile).map_err(io_err(id, "write seccomp.json"))?;
        b.spec.seccomp = Seccomp::Profile(p);
    }
    // The cgroup's leaf is the launcher's name of the container.
    b.spec.name = b.cgroup.1.clone();
    if b.spec.hostname.is_none() && b.spec.unshares(NsKind::Uts) {
        // runtime-spec: without `hostname` the new UTS namespace keeps the host's.
        let host =
            nix::unistd::gethostname().map_err(|e| io_err(id, "read the hostname")(e.into()))?;
        b.spec.hostname = Some(host.to_string_lossy().into_owned());
    }
    let mut record = Record {
        id: id.to_string(),
        pid: 0,
        start_time: 0,
        bundle: bundle.to_path_buf(),
        rootfs: b.spec.rootfs.path.clone(),
        created: rfc3339_now(),
        cgroup: b.cgroup.clone(),
        cgroup_settings: b.spec.cgroup.clone(),
        annotations: b.annotations.clone(),
        hooks: b.hooks.clone(),
        host_mounts: None,
    };
    if b.spec.rootfs.mode == RootMode::HostMountTable {
        let below = host_mounts::top_mount(&record.rootfs)
            .map_err(io_err(id, "read the mounts at its root"))?;
        record.host_mounts = Some(HostMounts { below });
    }
    let launch = LaunchOptions {
        cgroup_parent: b.cgroup.0.clone(),
        root: if b.spec.rootfs.readonly {
            RootAccess::ReadOnly
        } else {
            RootAccess::Writable
        },
        secrets: Vec::new(),
        hold: Hold::Oci {
            gate_dir: gate,
            preserve_fds: opts.preserve_fds,
            console_socket: opts.console_socket.clone(),
            hooks: hooks::for_launch(b.hooks.as_ref(), &record.report_as(Status::Creating)),
        },
    };
    // What `exec` needs of the container: its identity, privileges and filter.
    let spec_text = serde_json::to_vec(&b.spec)
        .map_err(|e| io_err(id, "encode spec.json")(io::Error::other(e)))?;
    std::fs::write(dir.join("spec.json"), spec_text).map_err(io_err(id, "write spec.json"))?;
    let started = launcher::start(&b.spec, &launch).inspect_err(|_| {
        let _ = unmount_host_mounts(&record);
    })?;
    record.pid = started.pid;
    record.start_time = launcher::start_time(started.pid).unwrap_or(0);
    let saved = root
        .save(&record)
        .map_err(io_err(id, "write state.json"))
        .and_then(|()| match &opts.pid_file {
            Some(p) => crate::runtime::state::write_atomic(p, started.pid.to_string().as_bytes())
                .map_err(io_err(id, format!("write the pid file {}", p.display()))),
            None => Ok(()),
        });
    if let Err(e) = saved {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(started.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(started.pid), None);
        let _ = started.cleanup();
        let _ = unmount_host_mounts(&record);
        return Err(e);
    }
    Ok((record, started))
}

/// `start`: runs the `startContainer` hooks in the container, opens its gate, then
/// runs the `poststart` hooks (their failures are warnings).
pub fn start(root: &Root, id: &str, warn: &mut dyn FnMut(&str)) -> Result<(), OciError> {
    let r = load_when(root, id, Status::Created, "start")?;
    let state = hooks::state_json(&r.report(root));
    let start_container = hooks::commands(r.hooks.as_ref(), "startContainer");
    if let Err(e) = launcher::hooks::run_in_container(r.pid, &start_container, &state) {
        // runtime-spec: the container is stopped, and goes on to delete.
        if let Some(p) = r.process() {
            let _ = p.signal_number(libc::SIGKILL);
        }
        return Err(e.in_container(id).into());
    }
    open_gate(root, &r)?;
    hooks::run_warning(r.hooks.as_ref(), "poststart", &r.report(root), warn);
    Ok(())
}

fn open_gate(root: &Root, r: &Record) -> Result<(), OciError> {
    let id = r.id.as_str();
    let ended = || OciError::Status {
        id: id.into(),
        status: Status::Stopped,
        action: "start",
        hint: " (it ended at its start gate)",
    };
    let fifo = Record::gate_dir(&root.dir_of(id)).join("exec.fifo");
    // Non-blocking: if the container died at the gate, nobody would ever write.
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&fifo)
        .map_err(io_err(id, "open exec.fifo"))?;
    loop {
        let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => {
                if r.process().is_none() {
                    return Err(ended());
                }
            }
            Ok(_) => break,
            Err(e) => return Err(io_err(id, "wait on exec.fifo")(e.into())),
        }
    }
    let mut byte = [0u8; 1];
    match f.read(&mut byte) {
        Ok(1) => {}
        Ok(_) => return Err(ended()),
        Err(e) => return Err(io_err(id, "read exec.fifo")(e)),
    }
    std::fs::remove_file(&fifo).map_err(io_err(id, "remove exec.fifo"))
}

/// `state`: runtime-spec's state of `id`.
pub fn state(root: &Root, id: &str) -> Result<StateReport, OciError> {
    Ok(load(root, id)?.report(root))
}

/// `kill`: `signal` (a number) to the container's process, or with `all` to every
/// process of its cgroup.
pub fn kill(root: &Root, id: &str, signal: i32, all: bool) -> Result<(), OciError> {
    let r = load(root, id)?;
    let Some(process) = r.process() else {
        return Err(OciError::Status {
            id: id.into(),
            status: Status::Stopped,
            action: "kill",
            hint: "",
        });
    };
    if all {
        let cg = r.cgroup().map_err(io_err(id, "find its cgroup"))?;
        for pid in cg.pids() {
            launcher::signals::send(pid, signal)
                .map_err(io_err(id, format!("signal pid {pid}")))?;
        }
        return Ok(());
    }
    process
        .signal_number(signal)
        .map_err(io_err(id, format!("send signal {signal}")))
}

/// `delete`: removes a stopped (or created) container; `force` kills a running one
/// first. With `force`, a container that does not exist is not an error.
pub fn delete(
    root: &Root,
    id: &str,
    force: bool,
    warn: &mut dyn FnMut(&str),
) -> Result<(), OciError> {
    let r = match load(root, id) {
        Ok(r) => r,
        Err(OciError::NotFound(_)) if force => {
            return remove_dir(&root.dir_of(id)).map_err(io_err(id, "remove its state directory"))
        }
        Err(e) => return Err(e),
    };
    let status = r.status(root);
    if status == Status::Running && !force {
        return Err(OciError::Status {
            id: id.into(),
            status,
            action: "delete",
            hint: " (stop it first, or delete --force)",
        });
    }
    let cg = r.cgroup().map_err(io_err(id, "find its cgroup"))?;
    if cg.frozen() {
        // A paused container's processes die only once thawed.
        let _ = cg.freeze(false);
    }
    if let Some(p) = r.process() {
        let _ = p.signal_number(libc::SIGKILL);
        let _ = p.wait(Duration::from_secs(10));
    }
    // Whatever else its cgroup holds is killed by its removal.
    cg.remove().map_err(|e| e.in_container(id))?;
    unmount_host_mounts(&r)?;
    cg.remove_freezer().map_err(|e| e.in_container(id))?;
    remove_dir(&root.dir_of(id)).map_err(io_err(id, "remove its state directory"))?;
    hooks::run_warning(
        r.hooks.as_ref(),
        "poststop",
        &r.report_as(Status::Stopped),
        warn,
    );
    Ok(())
}

/// Detaches what a container without a mount namespace mounted at its root.
fn unmount_host_mounts(r: &Record) -> Result<(), OciError> {
    match r.host_mounts {
        Some(HostMounts { below }) => host_mounts::detach_above(&r.rootfs, below)
            .map_err(io_err(&r.id, "unmount what it mounted at its root")),
        None => Ok(()),
    }
}

/// `run`: create, start, and (unless detached) wait for the process, forwarding
/// signals, then delete; returns its exit code.
pub fn run(
    root: &Root,
    id: &str,
    bundle: &Path,
    opts: &CreateOptions,
    detach: bool,
    warn: &mut dyn FnMut(&str),
) -> Result<i32, OciError> {
    let (_, started) = create(root, id, bundle, opts, warn)?;
    if let Err(e) = start(root, id, warn) {
        let _ = delete(root, id, true, warn);
        return Err(e);
    }
    if detach {
        return Ok(0);
    }
    let Exit { code, .. } = launcher::wait(&started);
    delete(root, id, true, warn)?;
    Ok(code)
}

/// `exec`'s request: the process (a runtime-spec `process` file, or a command with a
/// few of its fields as flags) and how to run it.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// `--process FILE`: the whole process.
    pub process: Option<PathBuf>,
    /// The command, when there is no `--process`.
    pub args: Vec<String>,
    /// `--env K=V`, added to the container's environment.
    pub env: Vec<String>,
    /// `--cwd`.
    pub cwd: Option<String>,
    /// `--user UID[:GID]`.
    pub user: Option<String>,
    /// `--tty`: a terminal (sent to `console_socket`).
    pub terminal: bool,
    /// `--console-socket`.
    pub console_socket: Option<PathBuf>,
    /// Return once the process runs (its caller waits for it).
    pub detach: bool,
    /// Where to write the process's pid (with `detach`).
    pub pid_file: Option<PathBuf>,
    /// `--preserve-fds N`: descriptors 3..3+N passed to the process.
    pub preserve_fds: u32,
}

/// `exec`: runs another process in a running container, with the container's
/// namespaces, cgroup, identity, privileges and seccomp filter (as the config or
/// `--process` says); returns its exit code, or 0 at once with `detach`.
pub fn exec(
    root: &Root,
    id: &str,
    opts: &ExecOptions,
    warn: &mut dyn FnMut(&str),
) -> Result<i32, OciError> {
    let r = load_when(root, id, Status::Running, "exec in")?;
    let text =
        std::fs::read(root.dir_of(id).join("spec.json")).map_err(io_err(id, "read spec.json"))?;
    let mut spec: crate::spec::ContainerSpec = serde_json::from_slice(&text)
        .map_err(|e| io_err(id, "read spec.json")(io::Error::new(io::ErrorKind::InvalidData, e)))?;
    let mut terminal = opts.terminal;
    if let Some(path) = &opts.process {
        let text = std::fs::read_to_string(path)
            .map_err(io_err(id, format!("read {}", path.display())))?;
        let process: oci_spec::runtime::Process = serde_json::from_str(&text).map_err(|e| {
            OciError::Unsupported(format!(
                "{}:{}:{}: {e}",
                path.display(),
                e.line(),
                e.column()
            ))
        })?;
        let mut warnings = Vec::new();
        config::apply_process(&mut spec, &process, &mut warnings);
        for w in &warnings {
            warn(w);
        }
        terminal |= process.terminal().unwrap_or(false);
    } else if opts.args.is_empty() {
        return Err(OciError::Unsupported(
            "exec: give a command (exec ID -- CMD…) or --process FILE".into(),
        ));
    } else {
        spec.init_command = opts.args.clone();
    }
    if terminal && !(opts.detach && opts.console_socket.is_some()) {
        return Err(OciError::Unsupported(format!(
            "container {id}: exec with a terminal needs --detach and --console-socket (as conmon calls it)"
        )));
    }
    for kv in &opts.env {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(OciError::Unsupported(format!("--env {kv}: use KEY=VALUE")));
        };
        spec.environment.insert(k.to_string(), v.to_string());
    }
    if let Some(cwd) = &opts.cwd {
        spec.workdir = Some(cwd.clone());
    }
    if let Some(user) = &opts.user {
        let (u, g) = user.split_once(':').unwrap_or((user, "0"));
        let parse = |s: &str| {
            s.parse::<u32>().map_err(|_| {
                OciError::Unsupported(format!("--user {user}: use UID[:GID] (numbers)"))
            })
        };
        spec.uid = Some(parse(u)?);
        spec.gid = Some(parse(g)?);
    }
    let cg = r.cgroup().map_err(io_err(id, "find its cgroup"))?;
    if opts.detach {
        // Opened here: once attached, this process sees the container's files only.
        let mut pid_file = match &opts.pid_file {
            Some(p) => Some((
                std::fs::File::create(p)
                    .map_err(io_err(id, format!("open the pid file {}", p.display())))?,
                p,
            )),
            None => None,
        };
        // Connected here too: the socket is a path on the host.
        let console = match opts.console_socket.as_ref().filter(|_| terminal) {
            Some(p) => Some(launcher::terminal::connect(p).map_err(|e| e.in_container(id))?),
            None => None,
        };
        let pid = launcher::attach::attach_detached(
            r.pid,
            &spec,
            cg.dirs(),
            console.as_ref().map(std::os::fd::AsRawFd::as_raw_fd),
            opts.preserve_fds,
        )?;
        if let Some((f, p)) = &mut pid_file {
            std::io::Write::write_all(f, pid.to_string().as_bytes())
                .map_err(io_err(id, format!("write the pid file {}", p.display())))?;
        }
        return Ok(0);
    }
    Ok(launcher::attach::attach(
        r.pid,
        &spec,
        cg.dirs(),
        &spec.init_command,
        opts.preserve_fds,
    )?)
}

/// `pause` (`freeze`) or `resume`: every process of a running (or paused) container
/// frozen or thawed through its cgroup's freezer.
pub fn pause(root: &Root, id: &str, freeze: bool) -> Result<(), OciError> {
    let (want, action) = if freeze {
        (Status::Running, "pause")
    } else {
        (Status::Paused, "resume")
    };
    let r = load_when(root, id, want, action)?;
    let cg = r.cgroup().map_err(io_err(id, "find its cgroup"))?;
    Ok(cg.freeze(freeze).map_err(|e| e.in_container(id))?)
}

/// `update`: new cgroup limits (`linux.resources`' memory, cpu, cpuset and pids) on a
/// container that has not stopped; the record keeps them.
pub fn update(
    root: &Root,
    id: &str,
    resources: &oci_spec::runtime::LinuxResources,
    warn: &mut dyn FnMut(&str),
) -> Result<(), OciError> {
    let mut r = load(root, id)?;
    let status = r.status(root);
    if status == Status::Stopped {
        return Err(OciError::Status {
            id: id.into(),
            status,
            action: "update",
            hint: "",
        });
    }
    let mut warnings = Vec::new();
    let new = config::cgroup_settings(resources, &mut warnings);
    if resources.devices().as_ref().is_some_and(|d| !d.is_empty()) {
        warnings.push(
            "linux.resources.devices ignored by update: the device allowlist is set at create"
                .into(),
        );
    }
    warnings.iter().for_each(|w| warn(w));
    let mut settings = r.cgroup_settings.clone();
    for (k, v) in new {
        let v = crate::spec::cgroup::validate(&k, &v)
            .map_err(|m| OciError::Unsupported(format!("container {id}: {m}")))?;
        settings.insert(k, v);
    }
    let cg = r.cgroup().map_err(io_err(id, "find its cgroup"))?;
    cg.update(&settings).map_err(|e| e.in_container(id))?;
    r.cgroup_settings = settings;
    root.save(&r).map_err(io_err(id, "write its state.json"))
}

/// `ps`: the pids of the container's processes (as the host sees them).
pub fn pids(root: &Root, id: &str) -> Result<Vec<i32>, OciError> {
    let r = load(root, id)?;
    let cg = r.cgroup().map_err(io_err(id, "find its cgroup"))?;
    let mut pids = cg.pids();
    pids.sort_unstable();
    Ok(pids)
}
