//! The one protocol between a caller that must not launch in its own process (the
//! supervisor is multi-threaded: the multi-thread rule of docs/architecture.md) and the
//! single-threaded helper, `haconiwa __monitor`, `__provision`, `__probe` or
//! `__remove`, that does.
//!
//! The caller writes one typed [`Request`] (JSON) on the helper's stdin and reads one
//! typed [`Reply`] from its stdout; nothing travels in arguments or environment
//! variables. A provision step's output goes to the helper's stderr (the caller shows
//! it and keeps its end for the error); a monitor's goes to the container's log.

use super::probe::Finding;
use super::provision::Job;
use super::state::State;
use super::{Runtime, RuntimeError};
use crate::launcher::LaunchError;
use crate::spec::health::Probe;
use crate::spec::ContainerSpec;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// Where the helper's runtime lives (the caller's [`Runtime`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Place {
    /// The state directory.
    pub state_dir: PathBuf,
    /// The cgroup parent.
    pub cgroup_parent: String,
    /// The node's lease the containers obey (cluster containers).
    pub lease: Option<PathBuf>,
}

impl Place {
    /// The place of a runtime.
    pub fn of(rt: &Runtime) -> Place {
        Place {
            state_dir: rt.state_dir.clone(),
            cgroup_parent: rt.cgroup_parent.clone(),
            lease: rt.lease.clone(),
        }
    }

    fn runtime(&self) -> Runtime {
        let rt = Runtime::new(&self.state_dir, &self.cgroup_parent);
        match &self.lease {
            Some(l) => rt.with_lease(l),
            None => rt,
        }
    }
}

/// What a helper is asked to do.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Start a container detached, under a monitor that outlives the helper.
    Monitor {
        /// Its runtime.
        place: Place,
        /// The container (an image's already applied).
        spec: Box<ContainerSpec>,
        /// The values of the secrets it reads (through the helper's stdin, in memory).
        #[serde(default)]
        secrets: Vec<crate::launcher::SecretFile>,
    },
    /// Run one provision step to its end.
    Provision {
        /// Its runtime.
        place: Place,
        /// The step and its sandbox.
        job: Box<Job>,
    },
    /// Probe a running container's health once.
    Probe {
        /// Its runtime.
        place: Place,
        /// The container.
        name: String,
        /// What to probe.
        probe: Probe,
        /// How long a network wait may take, ms.
        timeout_ms: u64,
    },
    /// Remove the finished containers' directories moved into a trash, and fill a
    /// cgroup parent's pool again (`launcher::cgroup_pool`), until none came for a
    /// while (`trash.rs`).
    Remove {
        /// The trash directory.
        trash: PathBuf,
        /// The cgroup parent whose pool a foreground `run` took from.
        #[serde(default)]
        refill: Option<String>,
    },
}

/// The helpers' verbs (their first and only argument, and their name in `ps`).
pub const VERBS: [&str; 4] = [Request::MONITOR, "__provision", "__probe", "__remove"];

impl Request {
    /// The verb of [`Request::Monitor`].
    const MONITOR: &'static str = "__monitor";

    /// The helper's name in the process list.
    fn verb(&self) -> &'static str {
        match self {
            Request::Monitor { .. } => VERBS[0],
            Request::Provision { .. } => VERBS[1],
            Request::Probe { .. } => VERBS[2],
            Request::Remove { .. } => VERBS[3],
        }
    }
}

/// What a helper answers, once.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    /// The container runs (its state record).
    Started(Box<State>),
    /// The step's container ran and exited with this code.
    Ran(i32),
    /// The probe ran: what it found.
    Probed(Finding),
    /// The trash is empty (as far as this remover's lock reached).
    Removed,
    /// It could not start.
    Failed(Failure),
}

/// Why a helper could not do what it was asked.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum Failure {
    /// The launch failed: the container, the step and the OS error.
    #[error(transparent)]
    Launch(LaunchError),
    /// The container is not there or not running (any more).
    #[error("container '{0}' is not running")]
    Gone(String),
    /// Anything else of the runtime (a state file, a name).
    #[error("{0}")]
    Runtime(String),
}

impl From<RuntimeError> for Failure {
    fn from(e: RuntimeError) -> Failure {
        match e {
            RuntimeError::Launch(l) => Failure::Launch(l),
            RuntimeError::NotRunning(n) | RuntimeError::NotFound(n) => Failure::Gone(n),
            other => Failure::Runtime(other.to_string()),
        }
    }
}

/// A call that did not come back with a reply.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    /// The helper answered that it failed.
    #[error(transparent)]
    Failed(#[from] Failure),
    /// The helper could not be started or handed its request.
    #[error("start the {verb} helper: {source}")]
    Start {
        /// Which helper.
        verb: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// It ended without a readable reply.
    #[error("the {verb} helper ended ({status}) without a reply{}", if .stderr.is_empty() { String::new() } else { format!(": {}", .stderr) })]
    NoReply {
        /// Which helper.
        verb: &'static str,
        /// How it ended.
        status: String,
        /// The end of what it wrote on stderr.
        stderr: String,
    },
}

/// The last lines of a helper's stderr, for a message.
pub fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.trim().lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" / ")
}

fn command(verb: &'static str) -> Command {
    let mut c = Command::new(super::SELF_EXE);
    c.arg0("haconiwa")
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn decode(verb: &'static str, out: std::process::Output) -> Result<(Reply, Vec<u8>), HelperError> {
    match serde_json::from_slice::<Reply>(&out.stdout) {
        Ok(reply) => answer(reply, out.stderr),
        Err(_) => Err(no_reply(verb, out.status.to_string(), &out.stderr)),
    }
}

/// A reply as the caller takes it: a failure is an error.
fn answer(reply: Reply, stderr: Vec<u8>) -> Result<(Reply, Vec<u8>), HelperError> {
    match reply {
        Reply::Failed(f) => Err(HelperError::Failed(f)),
        reply => Ok((reply, stderr)),
    }
}

fn no_reply(verb: &'static str, status: String, stderr: &[u8]) -> HelperError {
    HelperError::NoReply {
        verb,
        status,
        stderr: tail(stderr),
    }
}

/// Runs a helper for `request` and waits for its reply (and its stderr).
pub fn call(request: &Request) -> Result<(Reply, Vec<u8>), HelperError> {
    let verb = request.verb();
    let start = |source| HelperError::Start { verb, source };
    let body = serde_json::to_vec(request).map_err(|e| start(e.into()))?;
    let mut child = command(verb).spawn().map_err(start)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&body).map_err(start)?;
    }
    let out = child.wait_with_output().map_err(start)?;
    decode(verb, out)
}

/// Starts a helper for `request` and leaves it: its reply and output go nowhere, it is
/// not waited for (it ends on its own; its parent's parent, or init, reaps it). In a
/// process group of its own, so that a Ctrl-C meant for the caller does not stop it.
pub fn start_detached(request: &Request) -> Result<(), HelperError> {
    let verb = request.verb();
    let start = |source| HelperError::Start { verb, source };
    let body = serde_json::to_vec(request).map_err(|e| start(e.into()))?;
    let mut cmd = command(verb);
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = cmd.spawn().map_err(start)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&body).map_err(start)?;
    }
    Ok(())
}

/// A monitor's helper started ahead of its request and blocked reading it: the next
/// launch of this process skips the helper's exec and start-up (about 2.5 of the 11 ms
/// from a placement to its running report on the test VM). It ends, quietly, when its
/// stdin closes: with this process at the latest.
static SPARE_MONITOR: Mutex<Option<tokio::process::Child>> = Mutex::new(None);

/// How long after a launch the next spare starts.
const SPARE_AFTER: std::time::Duration = std::time::Duration::from_millis(20);

/// The spare's slot (a poisoned lock still holds a usable slot).
fn spare_slot() -> std::sync::MutexGuard<'static, Option<tokio::process::Child>> {
    SPARE_MONITOR.lock().unwrap_or_else(|p| p.into_inner())
}

/// The spare monitor helper, when one waits (still alive).
fn take_spare() -> Option<tokio::process::Child> {
    let spare = spare_slot().take();
    spare.and_then(|mut c| matches!(c.try_wait(), Ok(None)).then_some(c))
}

/// Starts a spare monitor helper unless one waits; without one, the next launch starts
/// its own helper.
fn refill_spare() {
    let mut slot = spare_slot();
    if slot
        .as_mut()
        .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    {
        return;
    }
    *slot = tokio::process::Command::from(command(Request::MONITOR))
        .spawn()
        .ok();
}

/// Hands `body` to a helper for `verb`: the spare when `spare` and one waits, else a new
/// one.
async fn handed(
    verb: &'static str,
    body: &[u8],
    spare: bool,
) -> Result<tokio::process::Child, std::io::Error> {
    use tokio::io::AsyncWriteExt;
    async fn hand(
        mut child: tokio::process::Child,
        body: &[u8],
    ) -> std::io::Result<tokio::process::Child> {
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(body).await?;
        }
        Ok(child)
    }
    if let Some(spare) = spare.then(take_spare).flatten() {
        // A spare that died after the look is replaced by a new helper.
        if let Ok(child) = hand(spare, body).await {
            return Ok(child);
        }
    }
    hand(tokio::process::Command::from(command(verb)).spawn()?, body).await
}

/// [`call`] for async callers.
pub async fn call_async(request: &Request) -> Result<(Reply, Vec<u8>), HelperError> {
    let verb = request.verb();
    let start = |source| HelperError::Start { verb, source };
    let mut body = serde_json::to_vec(request).map_err(|e| start(e.into()))?;
    // Monitors (the agent's launches) are the calls a spare waits for.
    let spare = verb == Request::MONITOR;
    let handed = handed(verb, &body, spare).await;
    // It may hold a container's secrets: not left in freed memory.
    crate::launcher::wipe(&mut body);
    let mut child = handed.map_err(start)?;
    // The helper closes its output once its reply is written: the reply is read without
    // waiting for the helper's exit (its status matters only when there is no reply).
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let (read_out, read_err) = tokio::join!(read_all(out, &mut stdout), read_all(err, &mut stderr));
    read_out.and(read_err).map_err(start)?;
    // The next spare starts a little after this reply: started beside the launch, its
    // exec took the CPU the launch needed on a small host.
    if spare {
        tokio::spawn(async move {
            tokio::time::sleep(SPARE_AFTER).await;
            refill_spare();
        });
    }
    match serde_json::from_slice::<Reply>(&stdout) {
        Ok(reply) => {
            tokio::spawn(async move { child.wait().await });
            answer(reply, stderr)
        }
        Err(_) => {
            let status = child.wait().await.map_err(start)?;
            Err(no_reply(verb, status.to_string(), &stderr))
        }
    }
}

/// All of `from` (nothing when there is no such pipe).
async fn read_all(
    from: Option<impl tokio::io::AsyncRead + Unpin>,
    to: &mut Vec<u8>,
) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    match from {
        Some(mut from) => from.read_to_end(to).await.map(|_| ()),
        None => Ok(()),
    }
}

/// [`call_async`] bounded by `limit`: past it the helper's whole process group (a
/// probe's attached command included) is killed and `None` returned.
pub async fn call_bounded(
    request: &Request,
    limit: std::time::Duration,
) -> Option<Result<(Reply, Vec<u8>), HelperError>> {
    use tokio::io::AsyncWriteExt;
    let verb = request.verb();
    let start = |source| HelperError::Start { verb, source };
    let body = match serde_json::to_vec(request) {
        Ok(b) => b,
        Err(e) => return Some(Err(start(e.into()))),
    };
    let mut cmd = command(verb);
    cmd.process_group(0);
    let mut child = match tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Some(Err(start(e))),
    };
    let group = child.id();
    if let Some(mut stdin) = child.stdin.take() {
        if let Err(e) = stdin.write_all(&body).await {
            return Some(Err(start(e)));
        }
    }
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(Ok(out)) => Some(decode(verb, out)),
        Ok(Err(e)) => Some(Err(start(e))),
        Err(_) => {
            // The helper is killed when its future is dropped; its group goes first.
            if let Some(pgid) = group.and_then(|g| i32::try_from(g).ok()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pgid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            None
        }
    }
}

/// Points stdout at stderr and returns a copy of the old stdout: what a step or a
/// probe's command prints would mix with the reply otherwise.
fn reply_channel() -> Option<std::os::fd::OwnedFd> {
    match nix::unistd::dup(std::io::stdout())
        .and_then(|fd| nix::unistd::dup2_stdout(std::io::stderr()).map(|()| fd))
    {
        Ok(fd) => Some(fd),
        Err(e) => {
            eprintln!("haconiwa: keep the reply channel: {e}");
            None
        }
    }
}

/// The helper's side: reads the request, does it, writes the reply; returns the process
/// exit code. Single-threaded processes only (it launches).
pub fn serve() -> i32 {
    let mut text = Vec::new();
    let request = std::io::stdin()
        .read_to_end(&mut text)
        .map_err(|e| Failure::Runtime(format!("read the request: {e}")));
    // A spare helper whose caller ended (or replaced it) before it had a request.
    if matches!(request, Ok(0)) {
        return 0;
    }
    let request = request.and_then(|_| {
        serde_json::from_slice::<Request>(&text)
            .map_err(|e| Failure::Runtime(format!("the request: {e}")))
    });
    // The request may hold a container's secrets, which the monitor forked below
    // would otherwise keep in its copy of this buffer for the container's life.
    crate::launcher::wipe(&mut text);
    let (reply, channel) = match request {
        Err(f) => (Reply::Failed(f), None),
        // The monitor it forks swaps its stdio for the log: the reply's pipe closes
        // when the helper ends, whatever the monitor goes on with.
        Ok(Request::Monitor {
            place,
            spec,
            secrets,
        }) => match place.runtime().run_daemon_with(&spec, secrets) {
            Ok(st) => (Reply::Started(Box::new(st)), None),
            Err(e) => (Reply::Failed(e.into()), None),
        },
        // A step's output would mix with the reply: stdout keeps only the reply, what
        // the step prints goes to stderr.
        Ok(Request::Provision { place, job }) => {
            let Some(channel) = reply_channel() else {
                return 1;
            };
            let reply = match super::provision::run_job(&place.runtime(), *job) {
                Ok(code) => Reply::Ran(code),
                Err(e) => Reply::Failed(e.into()),
            };
            (reply, Some(channel))
        }
        Ok(Request::Remove { trash, refill }) => {
            match super::trash::serve(&trash, refill.as_deref()) {
                Ok(()) => (Reply::Removed, None),
                Err(e) => (
                    Reply::Failed(Failure::Runtime(format!("empty {}: {e}", trash.display()))),
                    None,
                ),
            }
        }
        Ok(Request::Probe {
            place,
            name,
            probe,
            timeout_ms,
        }) => {
            let Some(channel) = reply_channel() else {
                return 1;
            };
            let timeout = std::time::Duration::from_millis(timeout_ms.max(1));
            let reply = match super::probe::run(&place.runtime(), &name, &probe, timeout) {
                Ok(found) => Reply::Probed(found),
                Err(e) => Reply::Failed(e.into()),
            };
            (reply, Some(channel))
        }
    };
    let failed = matches!(reply, Reply::Failed(_));
    let body = match serde_json::to_vec(&reply) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("haconiwa: encode the reply: {e}");
            return 1;
        }
    };
    let written = match channel {
        Some(fd) => std::fs::File::from(fd).write_all(&body),
        // Flushed here: stdout is closed below, before the exit would flush it.
        None => {
            let mut out = std::io::stdout();
            out.write_all(&body).and_then(|()| out.flush())
        }
    };
    if let Err(e) = written {
        eprintln!("haconiwa: write the reply: {e}");
        return 1;
    }
    // The reply is out: the caller stops reading at the end of both streams, before
    // this process has finished exiting.
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null).and_then(|()| nix::unistd::dup2_stderr(&null));
    }
    i32::from(failed)
}
