//! Local containers on this host: the state directory, daemon mode with a small monitor
//! per container, logs, signals, stale-state detection and re-adoption. Knows nothing of
//! Raft; the supervisor drives it through the hidden `__monitor` helper.

pub mod bootstrap;
pub mod helper;
pub mod lease;
pub mod logs;
mod monitor;
pub mod network;
pub mod probe;
pub mod provision;
pub mod scan;
pub mod state;
pub mod trash;

use crate::launcher::pidfd::ProcessHandle;
use crate::launcher::{
    self, cgroup::Cgroup, cgroup::Layout, LaunchError, LaunchOptions, RootAccess,
};
use crate::spec::{names, ContainerSpec, NsKind};
use monitor::MonitorReport;
use nix::sys::signal::Signal;
use nix::unistd::ForkResult;
use state::{now_secs, ContainerDir, State, Status};
use std::io::{self, Read};
use std::path::PathBuf;
use std::time::Duration;

/// How long a container gets to end after SIGKILL before `kill` gives up on it.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// How long `kill` waits for the monitor to record an exit.
pub const RECORD_GRACE: Duration = Duration::from_secs(2);

/// How long a monitor keeps offering its exit notice to a supervisor whose queue is
/// full (it has already reaped and recorded the exit; only its own end waits).
const NOTIFY_PATIENCE: Duration = Duration::from_secs(10);

/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/run/haconiwa";

/// The binary helpers (`__monitor`, `__provision`) are started from: the file this
/// process itself was started from, even after it was replaced or removed (an in-place
/// upgrade, a rebuild): its path would then name another file, or none. Started with
/// argv[0] `haconiwa`, so that the process list reads as before.
pub const SELF_EXE: &str = "/proc/self/exe";

/// Errors of local container management.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The launch failed (container, step, OS error).
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// No such container.
    #[error("no container named '{0}' (see `haconiwa ps`)")]
    NotFound(String),
    /// The name is taken by a live container.
    #[error("container '{0}' is already running")]
    AlreadyRunning(String),
    /// The container is not running.
    #[error("container '{0}' is not running")]
    NotRunning(String),
    /// A name that cannot be a container's.
    #[error(transparent)]
    InvalidName(#[from] names::NameError),
    /// A state file problem.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> RuntimeError {
    let what = what.into();
    move |source| RuntimeError::Io { what, source }
}

/// How a container of `spec` whose record is `dir` sees its root: read-only when the
/// definition says so, else through its own writable layer.
fn root_access(spec: &ContainerSpec, dir: &ContainerDir) -> RootAccess {
    // An image's layers are always mounted together at the layer directory's mount
    // point (read-only when the definition says so).
    if spec.rootfs.readonly && spec.rootfs.layers.is_empty() {
        RootAccess::ReadOnly
    } else {
        RootAccess::Layer(dir.layer_dir())
    }
}

/// Makes the container's writable layer (`upper`, `work`, the mount point `merged`);
/// in a user namespace it belongs to the container's root, who mounts it.
fn make_layer(spec: &ContainerSpec, layer: &std::path::Path) -> Result<(), RuntimeError> {
    let layer = layer.to_path_buf();
    let owner = |maps: &[crate::spec::IdMap]| {
        maps.iter()
            .find(|m| m.inside == 0)
            .map(|m| m.outside)
            .unwrap_or(0)
    };
    let (uid, gid) = if spec.unshares(NsKind::User) {
        (
            owner(&spec.namespaces.uid_map),
            owner(&spec.namespaces.gid_map),
        )
    } else {
        (0, 0)
    };
    for d in [
        layer.clone(),
        layer.join("upper"),
        layer.join("work"),
        layer.join("merged"),
    ] {
        // A provisioning layer is used by one step after the other: it may exist.
        let made = match state::create_private_dir(&d) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => Ok(()),
            other => other,
        };
        made.and_then(|()| match (uid, gid) {
            (0, 0) => Ok(()),
            _ => std::os::unix::fs::chown(&d, Some(uid), Some(gid)),
        })
        .map_err(io_err(format!("create {}", d.display())))?;
    }
    // The upper directory's own attributes are those of the container's `/`: readable
    // by every user of the container (its parent keeps the host's other users out).
    use std::os::unix::fs::PermissionsExt;
    let upper = layer.join("upper");
    std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(0o755))
        .map_err(io_err(format!("chmod {}", upper.display())))?;
    Ok(())
}

/// Records in the image store that the container at `dir` uses its image's layers (a
/// prune keeps them until it ends). Nothing for a container of a bootstrapped root.
fn lease_image(spec: &ContainerSpec, dir: &ContainerDir) -> Result<(), RuntimeError> {
    let Some(manifest) = crate::image::config::pinned_manifest(spec) else {
        return Ok(());
    };
    let store = crate::image::Store::open(&spec.rootfs.path).map_err(|e| RuntimeError::Io {
        what: "open the image store".into(),
        source: io::Error::other(e.to_string()),
    })?;
    store
        .take_lease(&crate::image::gc::Lease {
            container_dir: dir.path.clone(),
            image: spec.image.clone().unwrap_or_default(),
            manifest,
            layers: spec.rootfs.layers.clone(),
        })
        .map_err(|e| RuntimeError::Io {
            what: "record the container in the image store".into(),
            source: io::Error::other(e.to_string()),
        })
}

/// The container at `dir` no longer uses its image's layers.
fn release_image(spec: &ContainerSpec, dir: &ContainerDir) {
    if spec.image.is_some() && !spec.rootfs.layers.is_empty() {
        if let Ok(store) = crate::image::Store::open(&spec.rootfs.path) {
            store.drop_lease(&dir.path);
        }
    }
}

/// Local container management rooted at a state directory.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// e.g. `/run/haconiwa` or `/run/haconiwa/node-2`.
    pub state_dir: PathBuf,
    /// cgroup parent of every container, e.g. `haconiwa` or `haconiwa/node-2`.
    pub cgroup_parent: String,
    /// The node's lease (cluster containers): a container started here stops when it
    /// runs out, unless its definition says `on_disconnect("keep")`. `None` for local
    /// containers, which no cluster fences.
    pub lease: Option<PathBuf>,
}

/// A container as `ps` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    /// The state record (already corrected for stale pids).
    #[serde(flatten)]
    pub state: State,
    /// The command line.
    pub command: Vec<String>,
    /// What its health checks found last (containers with a check, under a supervisor).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<state::HealthRecord>,
}

impl Runtime {
    /// A runtime with explicit locations.
    pub fn new(state_dir: impl Into<PathBuf>, cgroup_parent: impl Into<String>) -> Self {
        let state_dir = state_dir.into();
        Runtime {
            // Absolute: the launch resolves paths under it after changing directory and
            // root (a relative one made `pivot_root` fail with EBUSY on every launch).
            state_dir: std::path::absolute(&state_dir).unwrap_or(state_dir),
            cgroup_parent: cgroup_parent.into(),
            lease: None,
        }
    }

    /// The same runtime, its containers bound to the node's lease at `path`.
    pub fn with_lease(mut self, path: impl Into<PathBuf>) -> Self {
        self.lease = Some(path.into());
        self
    }

    /// Where a supervisor keeps this node's lease: `<state_dir>/lease`.
    pub fn lease_file(&self) -> PathBuf {
        self.state_dir.join("lease")
    }

    /// The directory of container `name`.
    pub fn dir(&self, name: &str) -> ContainerDir {
        ContainerDir {
            path: self.state_dir.join("containers").join(name),
        }
    }

    /// The datagram socket a supervisor listens on for exit notices.
    pub fn notify_socket(&self) -> PathBuf {
        self.state_dir.join("notify.sock")
    }

    fn options(
        &self,
        spec: &ContainerSpec,
        dir: &ContainerDir,
        secrets: Vec<launcher::SecretFile>,
    ) -> LaunchOptions {
        LaunchOptions {
            cgroup_parent: self.cgroup_parent.clone(),
            root: root_access(spec, dir),
            hold: launcher::Hold::Supervised,
            secrets,
        }
    }

    /// Creates the container's directory (with its writable layer); an old one of a dead
    /// container is cleared. The name is checked before anything is touched.
    fn reserve(
        &self,
        spec: &ContainerSpec,
        root: &RootAccess,
    ) -> Result<ContainerDir, RuntimeError> {
        names::check("container", &spec.name)?;
        let dir = self.dir(&spec.name);
        state::create_private_dirs(&self.state_dir.join("containers"))
            .map_err(io_err(format!("create {}", self.state_dir.display())))?;
        for _ in 0..3 {
            match state::create_private_dir(&dir.path) {
                Ok(()) => {
                    let made = dir
                        .write_spec(spec)
                        .map_err(io_err("write spec.json"))
                        .and_then(|()| match root {
                            RootAccess::Layer(layer) => make_layer(spec, layer),
                            _ => Ok(()),
                        })
                        .and_then(|()| lease_image(spec, &dir));
                    if let Err(e) = made {
                        release_image(spec, &dir);
                        let _ = std::fs::remove_dir_all(&dir.path);
                        return Err(e);
                    }
                    return Ok(dir);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let live = self
                        .refresh(&dir)
                        .map(|s| s.status != Status::Exited)
                        .unwrap_or(false);
                    if live {
                        return Err(RuntimeError::AlreadyRunning(spec.name.clone()));
                    }
                    let _ = std::fs::remove_dir_all(&dir.path);
                }
                Err(e) => return Err(io_err(format!("create {}", dir.path.display()))(e)),
            }
        }
        Err(RuntimeError::AlreadyRunning(spec.name.clone()))
    }

    fn initial_state(&self, spec: &ContainerSpec) -> State {
        State {
            name: spec.name.clone(),
            pid: 0,
            start_time: 0,
            monitor_pid: std::process::id() as i32,
            monitor_start_time: launcher::start_time(std::process::id() as i32).unwrap_or(0),
            spec_digest: crate::spec::digest(&serde_json::to_string(spec).unwrap_or_default()),
            status: Status::Creating,
            exit_code: None,
            oom_killed: false,
            reason: None,
            lost: false,
            fenced: false,
            created_at: now_secs(),
            finished_at: None,
            cgroup_parent: self.cgroup_parent.clone(),
            labels: spec.labels.clone(),
        }
    }

    /// Runs a container in the foreground and returns its exit code. Its record exists
    /// while it runs (so `ps` and `attach` see it) and is removed afterwards.
    pub fn run_foreground(&self, spec: &ContainerSpec) -> Result<launcher::Exit, RuntimeError> {
        self.run_foreground_with(spec, root_access(spec, &self.dir(&spec.name)))
    }

    /// [`Runtime::run_foreground`] with an explicit root access (provisioning writes to
    /// the base itself).
    pub fn run_foreground_with(
        &self,
        spec: &ContainerSpec,
        root: RootAccess,
    ) -> Result<launcher::Exit, RuntimeError> {
        let dir = self.reserve(spec, &root)?;
        let mut st = self.initial_state(spec);
        let _ = dir.write_state(&st);
        let opts = LaunchOptions {
            cgroup_parent: self.cgroup_parent.clone(),
            root,
            hold: launcher::Hold::Supervised,
            secrets: Vec::new(),
        };
        let started = match launcher::start(spec, &opts) {
            Ok(s) => s,
            Err(e) => {
                release_image(spec, &dir);
                let _ = std::fs::remove_dir_all(&dir.path);
                return Err(e.into());
            }
        };
        st.pid = started.pid;
        st.start_time = launcher::start_time(started.pid).unwrap_or(0);
        st.status = Status::Running;
        let _ = dir.write_state(&st);
        let mut exit = launcher::wait(&started);
        let cleanup = started.cleanup();
        release_image(spec, &dir);
        // Off this path where removing costs (trash.rs), and so is the cgroup pool's
        // refill.
        let refill = started
            .cgroup
            .pooled()
            .then_some(self.cgroup_parent.as_str());
        let _ = trash::remove(&self.state_dir, &dir.path, refill);
        exit.oom_killed |= cleanup.as_ref().map(|o| *o).unwrap_or(false);
        if let Err(e) = cleanup {
            return Err(e.in_container(&spec.name).into());
        }
        Ok(exit)
    }

    /// Starts a container in the background under a monitor process and returns its
    /// state once the command runs. The monitor waits for it, records the exit and
    /// removes its cgroup; it survives the caller (and a supervisor restart).
    pub fn run_daemon(&self, spec: &ContainerSpec) -> Result<State, RuntimeError> {
        self.run_daemon_with(spec, Vec::new())
    }

    /// `run_daemon` for a container that reads secrets: their values go to the
    /// launch in memory (the monitor's), never to a file of the state directory.
    pub fn run_daemon_with(
        &self,
        spec: &ContainerSpec,
        secrets: Vec<launcher::SecretFile>,
    ) -> Result<State, RuntimeError> {
        let dir = self.reserve(spec, &root_access(spec, &self.dir(&spec.name)))?;
        let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| io_err("pipe")(e.into()))?;
        // The CLI launches before any thread exists; the supervisor goes through the
        // `__monitor` helper process, so this process is single-threaded.
        match launcher::fork_single_threaded().map_err(io_err("fork the monitor"))? {
            ForkResult::Child => {
                drop(rd);
                let code = self.monitor(spec, &dir, std::fs::File::from(wr), secrets);
                std::process::exit(code);
            }
            ForkResult::Parent { child } => {
                drop(wr);
                let mut msg = Vec::new();
                let _ = std::fs::File::from(rd).read_to_end(&mut msg);
                match serde_json::from_slice::<MonitorReport>(&msg) {
                    Ok(MonitorReport::Started) => {
                        dir.read_state().map_err(io_err("read state.json"))
                    }
                    Ok(MonitorReport::Failed(e)) => {
                        let _ = nix::sys::wait::waitpid(child, None);
                        Err(RuntimeError::Launch(e))
                    }
                    Err(_) => {
                        let _ = nix::sys::wait::waitpid(child, None);
                        release_image(spec, &dir);
                        let _ = std::fs::remove_dir_all(&dir.path);
                        Err(RuntimeError::Io {
                            what: format!("start monitor for {}", spec.name),
                            source: io::Error::other("the monitor exited before reporting"),
                        })
                    }
                }
            }
        }
    }

    /// Reads a container's state and corrects it when its processes are gone: a running
    /// container whose pid died (or was reused) without its monitor recording it is
    /// marked exited ("lost") and its cgroup removed.
    pub fn refresh(&self, dir: &ContainerDir) -> io::Result<State> {
        self.correct(dir, dir.read_state()?)
    }

    /// [`Runtime::refresh`] of a state already read from `dir`.
    pub fn correct(&self, dir: &ContainerDir, mut st: State) -> io::Result<State> {
        let alive = |pid: i32, start: u64| pid > 0 && launcher::start_time(pid) == Some(start);
        let stale = match st.status {
            Status::Running => {
                !alive(st.pid, st.start_time) && !alive(st.monitor_pid, st.monitor_start_time)
            }
            Status::Creating => !alive(st.monitor_pid, st.monitor_start_time),
            Status::Exited => false,
        };
        if stale {
            if st.status == Status::Creating {
                let _ = std::fs::remove_dir_all(&dir.path);
                return Err(io::Error::new(io::ErrorKind::NotFound, "stale"));
            }
            if let Ok(spec) = dir.read_spec() {
                if let Ok(layout) = Layout::detect() {
                    if let Ok(cg) =
                        Cgroup::handle(&layout, &st.cgroup_parent, &st.name, &spec.cgroup)
                    {
                        let _ = cg.remove();
                    }
                }
            }
            st.status = Status::Exited;
            st.lost = true;
            st.reason = Some("lost: its monitor vanished".into());
            st.finished_at = Some(now_secs());
            let _ = dir.write_state(&st);
        }
        Ok(st)
    }

    /// The (corrected) state of every container of this runtime, oldest first, every
    /// state file read (`ps`; the node agent's scans go through `scan::StateScan`,
    /// which re-reads only the changed ones).
    pub fn states(&self) -> Vec<State> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(self.state_dir.join("containers")) else {
            return out;
        };
        for e in rd.flatten() {
            if let Ok(state) = self.refresh(&ContainerDir { path: e.path() }) {
                out.push(state);
            }
        }
        oldest_first(&mut out);
        out
    }

    /// Every container of this runtime with its command line (for `ps`).
    pub fn list(&self) -> Vec<Listed> {
        self.states()
            .into_iter()
            .map(|state| {
                let command = self
                    .dir(&state.name)
                    .read_spec()
                    .map(|s| s.init_command)
                    .unwrap_or_default();
                let health = self.dir(&state.name).read_health();
                Listed {
                    state,
                    command,
                    health,
                }
            })
            .collect()
    }

    /// A container's current state.
    pub fn get(&self, name: &str) -> Result<State, RuntimeError> {
        names::check("container", name)?;
        let dir = self.dir(name);
        if !dir.path.exists() {
            return Err(RuntimeError::NotFound(name.to_string()));
        }
        self.refresh(&dir)
            .map_err(|_| RuntimeError::NotFound(name.to_string()))
    }

    /// Signals a running container and waits up to `timeout` for it to end, then sends
    /// SIGKILL; then waits (briefly) for its monitor to record the exit. Returns the
    /// final state. Waits on pidfds: a container whose processes ended but were not
    /// reaped yet counts as ended, and nothing polls.
    pub fn kill(&self, name: &str, sig: Signal, timeout: Duration) -> Result<State, RuntimeError> {
        // The monitor records the exit, removes the cgroup, then ends.
        if let Some(monitor) = self.stop(name, sig, timeout)? {
            let _ = monitor.wait(RECORD_GRACE);
        }
        self.refresh(&self.dir(name))
            .map_err(|_| RuntimeError::NotFound(name.to_string()))
    }

    /// The first half of [`Runtime::kill`]: signals a running container and waits up to
    /// `timeout` for its first process to end (then SIGKILL), and returns a handle on
    /// its monitor (`None` when that is gone already), which records the exit and
    /// cleans up after it. For a caller that stops many containers: the monitor's
    /// cleanup, the slow half on a crowded host, need not hold up the next stop.
    pub fn stop(
        &self,
        name: &str,
        sig: Signal,
        timeout: Duration,
    ) -> Result<Option<ProcessHandle>, RuntimeError> {
        let st = self.get(name)?;
        if st.status != Status::Running {
            return Err(RuntimeError::NotRunning(name.to_string()));
        }
        let what = |step: &str| io_err(format!("{step} of container {name}"));
        // Opened before anything is signalled, so a reused pid is never hit.
        let init =
            ProcessHandle::open(st.pid, st.start_time).map_err(what("open the first process"))?;
        let monitor = ProcessHandle::open(st.monitor_pid, st.monitor_start_time)
            .map_err(what("open the monitor"))?;
        if let Some(init) = &init {
            init.signal(sig).map_err(what("signal the first process"))?;
            use Signal::{SIGKILL, SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU};
            if ![SIGKILL, SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU].contains(&sig) {
                // A stopped process (SIGSTOP, a debugger) cannot take its stop signal:
                // every process of the container is continued, as systemd does.
                self.continue_all(&st);
            }
            if !init
                .wait(timeout)
                .map_err(what("wait for the first process"))?
            {
                init.signal(Signal::SIGKILL)
                    .map_err(what("SIGKILL the first process"))?;
                init.wait(KILL_GRACE)
                    .map_err(what("wait for the first process"))?;
            }
        }
        Ok(monitor)
    }

    /// Sends SIGCONT to every process in the container's cgroup (best effort).
    fn continue_all(&self, st: &State) {
        let Ok(spec) = self.dir(&st.name).read_spec() else {
            return;
        };
        let Ok(layout) = Layout::detect() else { return };
        let Ok(cg) = Cgroup::handle(&layout, &st.cgroup_parent, &st.name, &spec.cgroup) else {
            return;
        };
        for pid in cg.pids() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGCONT);
        }
    }

    /// The signal that asks a container to stop: its definition's (or its image's)
    /// stop signal, SIGTERM when none is set.
    pub fn stop_signal(&self, name: &str) -> Signal {
        self.dir(name)
            .read_spec()
            .ok()
            .and_then(|s| s.stop_signal)
            .and_then(|t| crate::spec::signal::number(&t))
            .and_then(|n| Signal::try_from(n).ok())
            .unwrap_or(Signal::SIGTERM)
    }

    /// Removes the record of an exited container.
    pub fn remove(&self, name: &str) -> Result<(), RuntimeError> {
        let st = self.get(name)?;
        if st.status != Status::Exited {
            return Err(RuntimeError::AlreadyRunning(name.to_string()));
        }
        std::fs::remove_dir_all(self.dir(name).path).map_err(io_err(format!("remove {name}")))
    }

    /// Runs a command inside a running container; returns its exit code.
    pub fn attach(&self, name: &str, command: &[String]) -> Result<i32, RuntimeError> {
        let st = self.get(name)?;
        if st.status != Status::Running {
            return Err(RuntimeError::NotRunning(name.to_string()));
        }
        let dir = self.dir(name);
        let spec = dir.read_spec().map_err(io_err("read spec.json"))?;
        let layout = Layout::detect().map_err(|e| e.in_container(name))?;
        let cg = Cgroup::handle(&layout, &st.cgroup_parent, name, &spec.cgroup)
            .map_err(|e| e.in_container(name))?;
        let dirs = cg.dirs();
        Ok(launcher::attach::attach(st.pid, &spec, dirs, command, 0)?)
    }
}

/// Containers in the order `ps` and the agent list them: oldest first, then by name.
pub(crate) fn oldest_first(states: &mut [State]) {
    states.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.name.cmp(&b.name)));
}
