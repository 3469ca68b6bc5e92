//! The node agent, on every member (the leader too): makes local reality match the
//! containers the state assigns to this node. What to do is decided by the pure table
//! of `watch::reconcile`; this carries it out: launches through the single-threaded
//! `haconiwa __monitor` helper (never in-process), kills, reports, forgets, and
//! re-adopts its containers after a restart (their monitors outlive the supervisor).
//! Level-triggered: every pass compares the whole state with the whole local picture,
//! so a lost report is simply decided and sent again.

use super::convert::report_pb;
use super::error::{OpError, OpResult};
use super::node::{lock, Node};
use crate::api::pb::HeartbeatRequest;
use crate::cluster::state::{Command, ContainerRecord, NodeStatus, Observed};
use crate::runtime::state::{State as LocalState, Status as RuntimeStatus};
use crate::runtime::{bootstrap, lease, provision, Runtime};
use crate::spec::ContainerSpec;
use crate::watch::reconcile::{self, Action, Local, LocalStatus};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tonic::Request;

/// RPC deadline for reports and heartbeats.
const RPC_TIMEOUT: Duration = Duration::from_secs(2);

/// The agent of this node.
pub struct Agent {
    core: Arc<Node>,
    runtime: Runtime,
    launching: Mutex<HashSet<String>>,
    killing: Mutex<HashSet<String>>,
    wake: Notify,
}

/// What the agent last reported per container, so it does not repeat itself.
type Reported = HashMap<String, Observed>;

impl Agent {
    /// An agent for this node's runtime.
    pub fn new(core: Arc<Node>, runtime: Runtime) -> Arc<Agent> {
        Arc::new(Agent {
            core,
            runtime,
            launching: Mutex::new(HashSet::new()),
            killing: Mutex::new(HashSet::new()),
            wake: Notify::new(),
        })
    }

    /// Runs forever: on every applied change, every exit notice from a monitor, and
    /// every second.
    pub async fn run(self: Arc<Self>) {
        let _ = std::fs::create_dir_all(&self.runtime.state_dir);
        let sock_path = self.runtime.notify_socket();
        let _ = std::fs::remove_file(&sock_path);
        let sock = match tokio::net::UnixDatagram::bind(&sock_path) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(
                    "no exit notices ({}: {e}); polling only",
                    sock_path.display()
                );
                None
            }
        };
        let mut state_rx = self.core.feed.state.clone();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut buf = [0u8; 256];
        let mut reported = Reported::new();
        loop {
            tokio::select! {
                r = state_rx.changed() => { if r.is_err() { return; } }
                _ = async { match &sock { Some(s) => { let _ = s.recv(&mut buf).await; } None => std::future::pending::<()>().await } } => {}
                _ = tick.tick() => {}
                _ = self.wake.notified() => {}
            }
            self.clone().reconcile(&mut reported).await;
        }
    }

    async fn list_local(&self) -> Vec<LocalState> {
        let rt = self.runtime.clone();
        tokio::task::spawn_blocking(move || rt.states())
            .await
            .unwrap_or_default()
    }

    async fn reconcile(self: Arc<Self>, reported: &mut Reported) {
        let state = self.core.state();
        let me = self.core.id;
        let local: HashMap<String, Local> = self
            .list_local()
            .await
            .into_iter()
            .map(|l| (l.name.clone(), local_view(&l)))
            .collect();
        let mine: Vec<&ContainerRecord> = state.containers_on(me).collect();
        reported.retain(|id, _| mine.iter().any(|c| c.id == *id));
        let launching = lock(&self.launching).clone();
        let actions = reconcile::decide(&reconcile::Inputs {
            me,
            // While the cluster holds this node down its containers were replaced:
            // nothing is wanted here until the leader sees us again.
            node_down: state
                .nodes()
                .get(&me)
                .is_some_and(|n| n.status == NodeStatus::Down),
            mine,
            local: &local,
            launching: &launching,
            reported,
        });
        for action in actions {
            match action {
                Action::Launch(id) => {
                    // Without a lease its monitor would stop it at once: wait for one.
                    if lease::remaining_ms(&self.runtime.lease_file()).is_none() {
                        continue;
                    }
                    let found = state.containers().get(&id);
                    if let Some((c, spec)) = found.and_then(|c| Some((c, state.spec_of(c)?))) {
                        self.clone().launch(c.clone(), spec);
                    }
                }
                Action::Kill(name) => self.clone().kill(name),
                Action::Forget(name) => self.forget_local(&name),
                Action::Report(id, observed) => match send_report(&self.core, &id, &observed).await
                {
                    Ok(()) => {
                        reported.insert(id, observed);
                    }
                    Err(e) => tracing::debug!("report {id} {}: {e}", observed.name()),
                },
            }
        }
    }

    fn forget_local(&self, name: &str) {
        let _ = self.runtime.remove(name);
    }

    fn launch(self: Arc<Self>, c: ContainerRecord, spec: ContainerSpec) {
        if !lock(&self.launching).insert(c.id.clone()) {
            return;
        }
        tokio::spawn(async move {
            // "starting" only when a root filesystem must be built first: on the usual
            // path the report would cost a commit before the launch.
            if !spec.rootfs.path.is_dir() {
                let _ = send_report(&self.core, &c.id, &Observed::Starting).await;
            }
            let observed = match self.start(spec).await {
                Ok(st) => Observed::Running { pid: st.pid },
                Err(e) => {
                    tracing::warn!("container {}: {e}", c.id);
                    Observed::Exited {
                        code: None,
                        oom_killed: false,
                        error: Some(e),
                    }
                }
            };
            for _ in 0..20 {
                match send_report(&self.core, &c.id, &observed).await {
                    Ok(()) => break,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            lock(&self.launching).remove(&c.id);
            self.wake.notify_one();
        });
    }

    /// Bootstraps the root when missing, then starts the container through the helper.
    async fn start(&self, spec: ContainerSpec) -> Result<LocalState, String> {
        let json = serde_json::to_vec(&spec).map_err(|e| e.to_string())?;
        let rt = self.runtime.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            bootstrap::ensure(&spec, false)?;
            provision::provision(&rt, &spec, false, false).map(|_| ())
        })
        .await
        .map_err(|e| format!("bootstrap: {e}"))?;
        prepared.map_err(|e| e.to_string())?;
        let exe = std::env::current_exe().map_err(|e| format!("find the haconiwa binary: {e}"))?;
        let mut child = tokio::process::Command::new(exe)
            .arg("__monitor")
            .env("HACONIWA_STATE_DIR", &self.runtime.state_dir)
            .env("HACONIWA_CGROUP_PARENT", &self.runtime.cgroup_parent)
            .env("HACONIWA_LEASE_FILE", self.runtime.lease_file())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("start the launcher helper: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(&json)
                .await
                .map_err(|e| format!("hand the spec to the helper: {e}"))?;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| format!("launcher helper: {e}"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let line = err
                .lines()
                .last()
                .unwrap_or("the launcher helper failed")
                .trim();
            return Err(line.trim_start_matches("haconiwa: ").to_string());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("launcher helper output: {e}"))
    }

    fn kill(self: Arc<Self>, name: String) {
        if !lock(&self.killing).insert(name.clone()) {
            return;
        }
        tokio::spawn(async move {
            let rt = self.runtime.clone();
            let n = name.clone();
            let res = tokio::task::spawn_blocking(move || {
                rt.kill(
                    &n,
                    nix::sys::signal::Signal::SIGTERM,
                    Duration::from_secs(10),
                )
            })
            .await;
            if let Ok(Err(e)) = res {
                tracing::debug!("kill {name}: {e}");
            }
            lock(&self.killing).remove(&name);
            self.wake.notify_one();
        });
    }
}

/// What the decision table needs of a local record.
fn local_view(l: &LocalState) -> Local {
    Local {
        status: match l.status {
            RuntimeStatus::Creating => LocalStatus::Creating,
            RuntimeStatus::Running => LocalStatus::Running,
            RuntimeStatus::Exited => LocalStatus::Exited,
        },
        pid: l.pid,
        exit_code: l.exit_code,
        oom_killed: l.oom_killed,
        reason: l.reason.clone(),
        lost: l.lost,
    }
}

/// Reports an observation to the leader (proposing directly when this node leads).
pub async fn send_report(core: &Node, id: &str, observed: &Observed) -> OpResult<()> {
    if core.is_leader() {
        return core
            .propose(Command::Observe {
                id: id.to_string(),
                node: core.id,
                observed: observed.clone(),
            })
            .await
            .map(|_| ());
    }
    let (mut client, _) = core.leader_client()?;
    let mut req = Request::new(report_pb(core.id, id, observed));
    req.set_timeout(RPC_TIMEOUT);
    client.report(req).await.map(|_| ()).map_err(OpError::from)
}

/// Heartbeats the leader forever, and renews this node's lease on each acknowledgement:
/// the lease runs `lease_ms` from when the heartbeat was *sent*, so it always ends
/// before the leader (which counts from when it *received* it, plus a margin) may
/// replace this node's containers. The leader renews its own only while a quorum
/// acknowledges it.
pub async fn heartbeat_loop(core: Arc<Node>, runtime: Runtime) {
    let lease_file = runtime.lease_file();
    // An answer later than this cannot help the lease much; the next beat is due anyway.
    let rpc_timeout = Duration::from_millis((core.config.lease_ms / 4).max(100));
    let mut tick = tokio::time::interval(Duration::from_millis(core.config.heartbeat_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let sent = lease::now_ms();
        let applied_index = core.applied_index();
        let acked = if core.is_leader() {
            core.acting_leader()
                && super::leader::ops::heartbeat(&core, core.id, applied_index)
                    .await
                    .is_ok()
        } else if let Ok((mut client, _)) = core.leader_client() {
            let mut req = Request::new(HeartbeatRequest {
                node_id: core.id,
                applied_index,
            });
            req.set_timeout(rpc_timeout);
            match client.heartbeat(req).await {
                Ok(_) => true,
                Err(e) => {
                    tracing::debug!("heartbeat: {}", e.message());
                    false
                }
            }
        } else {
            false
        };
        if acked {
            if let Err(e) = lease::renew(&lease_file, sent + core.config.lease_ms) {
                tracing::warn!("renew the lease in {}: {e}", lease_file.display());
            }
        }
    }
}
