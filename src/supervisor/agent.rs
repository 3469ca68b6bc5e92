//! The node agent, on every member (the leader too): makes local reality match the
//! containers the state assigns to this node, as `decide::reconcile` says: launches
//! through the single-threaded `haconiwa __monitor` helper (volumes and secrets from
//! `storage`), kills, reports, forgets, re-adopts after a restart. Its picture of what
//! runs here changes only by a launch's handshake, a monitor's exit notice, a kill, and
//! a full re-read every [`FULL_SCAN`] (of the state files that changed:
//! `runtime::scan`). A pass compares it with the state in memory (no I/O),
//! level-triggered: a lost report is decided and sent again at the next one.

use super::admission;
use super::images::{Images, PullFailed, Pulled};
use super::picture::{local_view, Picture};
use super::probes::Probes;
use super::reports::send_report;
use super::restarts::Restarter;
use super::shared::{lock, Supervisor};
use super::storage::{self, NodeVolumes, StorageError};
use crate::cluster::state::{ClusterState, ContainerRecord, NodeStatus, Observed};
use crate::decide::reconcile::{self, Action, ByName, Local, LocalStatus, LocalView};
use crate::runtime::bootstrap::BootstrapError;
use crate::runtime::scan::StateScan;
use crate::runtime::{bootstrap, helper, lease, provision, Runtime, RuntimeError, RECORD_GRACE};
use crate::spec::ContainerSpec;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinSet;

/// How often the agent re-reads every local state file anyway: re-adoption after a
/// restart, a monitor killed before it could send its notice.
pub const FULL_SCAN: Duration = Duration::from_secs(10);
/// Launches under way at once (each is a helper process doing namespaces, mounts and
/// cgroups); the rest wait their turn in order.
const LAUNCH_SLOTS: usize = 8;
/// How often a pull's progress is reported (each report is a committed entry).
const PULL_REPORT_EVERY: Duration = Duration::from_millis(500);
/// Kills under way at once (each holds a blocking thread while it signals and waits for
/// the first process).
const KILL_SLOTS: usize = 16;
/// Waits at once for the monitors of killed containers to record their exits (a
/// blocking thread each; a wait holds no kill slot, see `Agent::kill`).
const RECORD_WAITS: usize = 64;
/// Time a container gets to end after its stop signal, before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Reports in flight at once (the leader batches concurrent proposals).
const REPORT_SLOTS: usize = 64;

/// Why a container could not start here.
#[derive(Debug, thiserror::Error)]
enum LaunchFailure {
    /// Its root filesystem could not be built or provisioned.
    #[error(transparent)]
    Root(#[from] BootstrapError),
    /// Its image could not be applied.
    #[error("image: {0}")]
    Image(#[from] crate::image::ImageError),
    /// The helper could not start it.
    #[error(transparent)]
    Helper(#[from] helper::HelperError),
    /// This node has no image store.
    #[error("no image store here: {0}")]
    NoStore(String),
    /// The blocking task preparing it ended badly.
    #[error("preparing it: {0}")]
    Task(String),
    /// This node's policy refuses it (placed before the leader knew the policy).
    #[error("this node's policy refuses it: {0}")]
    Policy(String),
    /// Its volumes or secrets could not be had here.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The agent is shutting down.
    #[error("the agent is shutting down")]
    ShuttingDown,
}

/// Why a launch did not happen.
enum Failure {
    /// The container could not start (reported as exited, with the reason).
    Launch(LaunchFailure),
    /// Its image could not be had (reported as pull_failed, with the sources' reasons).
    Pull(PullFailed),
    /// It is no longer wanted here (stopped, moved, the node fenced) while its image
    /// came: it is not started; the reconcile table says so.
    Unwanted,
}

/// The agent of this node.
pub struct Agent {
    core: Arc<Supervisor>,
    runtime: Runtime,
    /// The image store; `None` when it cannot be opened (containers of an image then
    /// fail with `store_error`).
    images: Option<Arc<Images>>,
    /// Why the image store could not be opened.
    store_error: Option<String>,
    /// What runs here, by container name (= container id).
    local: Mutex<Picture>,
    /// The state files the last full scan read (it re-reads only the changed ones).
    scan: Arc<Mutex<StateScan>>,
    launching: Mutex<HashSet<String>>,
    killing: Mutex<HashSet<String>>,
    launch_slots: Semaphore,
    kill_slots: Semaphore,
    /// Bounds the waits for killed containers' monitors ([`RECORD_WAITS`]).
    record_waits: Semaphore,
    wake: Arc<Notify>,
    /// The health checks of the containers here.
    probes: Arc<Probes>,
    /// The restart policies of the containers here.
    restarts: Restarter,
    /// Containers whose restart back-off is over (from `restarts`).
    restart_due: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    /// The named volumes here.
    volumes: Arc<NodeVolumes>,
}

/// What the agent last reported per container, so it does not repeat itself.
type Reported = ByName<Observed>;

impl Agent {
    /// An agent for this node's runtime.
    pub fn new(core: Arc<Supervisor>, runtime: Runtime) -> Arc<Agent> {
        let (images, store_error) = match Images::new(&core) {
            Ok(i) => (Some(Arc::new(i)), None),
            Err(e) => {
                tracing::warn!("containers of an image cannot start here: {e}");
                (None, Some(e.to_string()))
            }
        };
        let wake = Arc::new(Notify::new());
        let probes = Probes::new(runtime.clone(), wake.clone());
        let (due_tx, due_rx) = mpsc::unbounded_channel();
        Arc::new(Agent {
            runtime,
            images,
            store_error,
            local: Mutex::new(Picture::default()),
            scan: Arc::default(),
            launching: Mutex::new(HashSet::new()),
            killing: Mutex::new(HashSet::new()),
            launch_slots: Semaphore::new(LAUNCH_SLOTS),
            kill_slots: Semaphore::new(KILL_SLOTS),
            record_waits: Semaphore::new(RECORD_WAITS),
            wake,
            probes,
            restarts: Restarter::new(due_tx),
            restart_due: Mutex::new(Some(due_rx)),
            volumes: NodeVolumes::start(&core),
            core,
        })
    }

    /// Runs forever: a pass on every applied change, exit notices, finished launch or
    /// kill, full scan, and every second while the last pass left work (a launch waiting
    /// for the lease, a report not taken): an idle pass over thousands costs CPU.
    pub async fn run(self: Arc<Self>) {
        let _ = std::fs::create_dir_all(&self.runtime.state_dir);
        let (notice_tx, mut notices) = mpsc::unbounded_channel();
        match bind_notices(&self.runtime) {
            Ok(sock) => drop(tokio::spawn(drain_notices(sock, notice_tx))),
            Err(e) => tracing::warn!(
                "no exit notices ({}: {e}); full scans only",
                self.runtime.notify_socket().display()
            ),
        }
        let mut state_rx = self.core.feed.state.clone();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reported = Reported::default();
        self.full_scan().await;
        let mut scanned = Instant::now();
        let (mut last_revision, mut settled) = (None, false);
        let Some(mut restart_due) = lock(&self.restart_due).take() else {
            return;
        };
        loop {
            tokio::select! {
                Some(name) = restart_due.recv() => self.relaunch(name).await,
                r = state_rx.changed() => {
                    if r.is_err() {
                        return;
                    }
                    // An entry that changed no record (a repeated report) changes
                    // nothing here either.
                    let revision = state_rx.borrow_and_update().1.hosts_revision();
                    if last_revision == Some(revision) {
                        continue;
                    }
                    last_revision = Some(revision);
                }
                Some(name) = notices.recv() => {
                    let mut names = vec![name];
                    while let Ok(n) = notices.try_recv() {
                        names.push(n);
                    }
                    self.reread(names).await;
                }
                _ = tick.tick() => {
                    if scanned.elapsed() >= FULL_SCAN {
                        self.full_scan().await;
                        scanned = Instant::now();
                    } else if settled {
                        continue;
                    }
                }
                _ = self.wake.notified() => {}
            }
            settled = self.clone().reconcile(&mut reported).await;
        }
    }

    /// Re-reads every local state file into the picture (launches under way excepted:
    /// their handshake says when they run).
    async fn full_scan(&self) {
        let (at, began) = (lock(&self.local).begin(), Instant::now());
        let (rt, scan) = (self.runtime.clone(), self.scan.clone());
        let states = tokio::task::spawn_blocking(move || lock(&scan).states(&rt))
            .await
            .unwrap_or_default();
        let took = began.elapsed().as_secs_f64() * 1000.0;
        tracing::debug!(
            "agent: full scan of {} containers: {took:.1} ms",
            states.len()
        );
        let launching = lock(&self.launching).clone();
        let seen: HashMap<String, Option<Local>> = states
            .iter()
            .filter(|st| !launching.contains(&st.name))
            .map(|st| (st.name.clone(), Some(local_view(st))))
            .collect();
        lock(&self.local).replace_all(seen, at);
    }

    /// Re-reads the state files of `names` into the picture.
    async fn reread(&self, names: Vec<String>) {
        self.read_into_picture(names, true).await;
    }

    /// Re-reads the state files of `names` into the picture, skipping launches under
    /// way when `skip_launching` (a launch reads its own result).
    async fn read_into_picture(&self, mut names: Vec<String>, skip_launching: bool) {
        names.sort();
        names.dedup();
        let at = lock(&self.local).begin();
        let rt = self.runtime.clone();
        let read = tokio::task::spawn_blocking(move || {
            names
                .into_iter()
                .map(|n| {
                    let st = rt.get(&n).ok();
                    (n, st)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let launching = lock(&self.launching).clone();
        let mut local = lock(&self.local);
        for (name, st) in read {
            if !(skip_launching && launching.contains(&name)) {
                local.put(name, st.as_ref().map(local_view), at);
            }
        }
    }

    /// One pass; whether it found nothing to do.
    async fn reconcile(self: Arc<Self>, reported: &mut Reported) -> bool {
        let began = Instant::now();
        let state = self.core.state();
        let actions = self.decide(&state, reported);
        // Without a lease a monitor would stop its container at once: launch only with
        // one.
        let leased = lease::remaining_ms(&self.runtime.lease_file()).is_some();
        let settled = actions.is_empty();
        let mut reports = Vec::new();
        let mut forget = Vec::new();
        for action in actions {
            tracing::debug!("agent: {action:?}");
            match action {
                Action::Launch(id) if leased => {
                    let found = state.containers().get(&id);
                    let spec = |c| super::network::container_spec(&self.core, &state, c);
                    if let Some((c, spec)) = found.and_then(|c| Some((c, spec(c)?))) {
                        self.clone().launch(c.clone(), spec);
                    }
                }
                Action::Launch(_) => {}
                Action::Kill(name) => self.clone().kill(name),
                Action::Forget(name) => forget.push(name),
                Action::Report(id, observed) => reports.push((id, observed)),
            }
        }
        let pass = began.elapsed().as_secs_f64();
        self.core.stats.agent_pass_seconds.observe(pass);
        if !forget.is_empty() {
            self.forget(forget).await;
        }
        self.report_all(reports, reported).await;
        settled
    }

    /// The actions of one pass: the state's containers for this node against the
    /// picture, read in place under its lock (a pass copies only what the health checks
    /// and restart policies overlay).
    fn decide(&self, state: &ClusterState, reported: &mut Reported) -> Vec<Action> {
        let me = self.core.id;
        // Launches first, the picture second (see `launch`).
        let launching = lock(&self.launching).clone();
        let picture = lock(&self.local);
        let mut local = LocalView::new(picture.local());
        let mine: Vec<&ContainerRecord> = state.containers_on(me).collect();
        // Health checks start with a running container, restart decisions with an
        // ended one that is still wanted; both join the picture.
        let held_down = state
            .nodes()
            .get(&me)
            .is_some_and(|n| n.status == NodeStatus::Down);
        // Containers of one definition come together: its spec is looked up once.
        let mut last: Option<(&str, &ContainerSpec)> = None;
        for c in mine.iter().filter(|c| c.is_active() && !held_down) {
            let Some(l) = local.get(&c.id) else { continue };
            let spec = match last {
                Some((digest, spec)) if digest == c.digest => spec,
                _ => match state.definition_spec(c) {
                    Some(spec) => last.insert((c.digest.as_str(), spec)).1,
                    None => continue,
                },
            };
            match (l.status, &spec.health, &spec.restart) {
                (LocalStatus::Running, Some(check), _) => self.probes.ensure(&c.id, check),
                (LocalStatus::Exited, _, Some(policy)) => {
                    let mut ended = l.clone();
                    self.probes.overlay_one(&c.id, &mut ended);
                    self.restarts.ended(&c.id, &ended, policy);
                }
                _ => {}
            }
        }
        self.probes.overlay(&mut local);
        self.restarts.overlay(&mut local);
        if !reported.is_empty() {
            let ids: HashSet<&str, foldhash::fast::RandomState> =
                mine.iter().map(|c| c.id.as_str()).collect();
            reported.retain(|id, _| ids.contains(id.as_str()));
        }
        // A rollout's replacement waits until the container it replaces has ended.
        let waiting: HashSet<String> = mine
            .iter()
            .filter(|c| match &c.observed {
                Observed::Queued { after } => state
                    .containers()
                    .get(after)
                    .is_some_and(|old| !old.observed.is_final()),
                _ => false,
            })
            .map(|c| c.id.clone())
            .collect();
        reconcile::decide(&reconcile::Inputs {
            me,
            // While the cluster holds this node down its containers were replaced:
            // nothing is wanted here until the leader sees us again.
            node_down: held_down,
            mine,
            local: &local,
            launching: &launching,
            reported,
            waiting: &waiting,
        })
    }

    /// Sends reports concurrently (the leader commits them together) and remembers the
    /// ones that arrived.
    async fn report_all(&self, reports: Vec<(String, Observed)>, reported: &mut Reported) {
        let mut pending = reports.into_iter();
        let mut in_flight = JoinSet::new();
        loop {
            while in_flight.len() < REPORT_SLOTS {
                let Some((id, observed)) = pending.next() else {
                    break;
                };
                let core = self.core.clone();
                in_flight.spawn(async move {
                    let sent = send_report(&core, &id, &observed).await;
                    (id, observed, sent)
                });
            }
            let Some(done) = in_flight.join_next().await else {
                return;
            };
            match done {
                Ok((id, observed, Ok(()))) => {
                    reported.insert(id, observed);
                }
                Ok((id, observed, Err(e))) => {
                    tracing::debug!("report {id} {}: {e}", observed.name())
                }
                Err(e) => tracing::debug!("report task: {e}"),
            }
        }
    }

    /// Drops the records of finished containers.
    async fn forget(&self, names: Vec<String>) {
        self.probes.forget(&names);
        self.restarts.forget(&names);
        let rt = self.runtime.clone();
        let gone = tokio::task::spawn_blocking(move || {
            names
                .into_iter()
                .filter(|n| !matches!(rt.remove(n), Err(RuntimeError::AlreadyRunning(_))))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let mut local = lock(&self.local);
        let at = local.begin();
        for name in gone {
            local.put(name, None, at);
        }
    }

    /// Ends the back-off of a restart: the old run's record goes, its checks start
    /// afresh, and the next pass launches it again under the same id.
    async fn relaunch(&self, name: String) {
        let rt = self.runtime.clone();
        let n = name.clone();
        let _ = tokio::task::spawn_blocking(move || rt.remove(&n)).await;
        self.probes.forget(std::slice::from_ref(&name));
        self.restarts.relaunching(&name);
        let mut local = lock(&self.local);
        let at = local.begin();
        local.put(name, None, at);
    }

    fn launch(self: Arc<Self>, c: ContainerRecord, spec: ContainerSpec) {
        if !lock(&self.launching).insert(c.id.clone()) {
            return;
        }
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            // An image comes first, outside the launch slots (a long pull does not hold
            // up the launches of others).
            let prepared = if let Some(why) = admission::refused(&self.core.config.policy, &spec) {
                Err(Failure::Launch(LaunchFailure::Policy(why)))
            } else if spec.image.is_some() {
                self.with_image(&c, spec).await
            } else {
                Ok(spec)
            };
            let failed = match prepared {
                Err(f) => Some(f),
                Ok(spec) => match self.launch_slots.acquire().await {
                    Ok(_slot) => self.start(&c, spec).await.err().map(Failure::Launch),
                    Err(_) => Some(Failure::Launch(LaunchFailure::ShuttingDown)),
                },
            };
            match &failed {
                None => self
                    .core
                    .stats
                    .launch_seconds
                    .observe(started.elapsed().as_secs_f64()),
                Some(Failure::Unwanted) => {}
                Some(_) => {
                    self.core.stats.launch_failures.inc();
                }
            }
            // The handshake is over: what the state file says now is the truth (it may
            // already have exited).
            // In the picture before it stops counting as launching (a pass reads the
            // launches first), so no pass sees it in neither and launches it again.
            self.read_into_picture(vec![c.id.clone()], false).await;
            lock(&self.launching).remove(&c.id);
            let observed = match failed {
                Some(Failure::Launch(e)) => {
                    tracing::warn!("container {}: {e}", c.id);
                    Some(Observed::Exited {
                        code: None,
                        oom_killed: false,
                        error: Some(e.to_string()),
                    })
                }
                Some(Failure::Pull(e)) => {
                    tracing::warn!("container {}: image: {e}", c.id);
                    Some(Observed::PullFailed {
                        reason: e.to_string(),
                    })
                }
                Some(Failure::Unwanted) | None => None,
            };
            if let Some(observed) = observed {
                for _ in 0..20 {
                    match send_report(&self.core, &c.id, &observed).await {
                        Ok(()) => break,
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
            self.wake.notify_one();
        });
    }

    /// The spec of a container of an image, ready to launch: the image fetched when this
    /// node lacks it (the container shows `pulling`, with progress), its configuration
    /// applied, the definition's provision layer made; checked again to be still wanted
    /// here (a pull takes time: the container may have been stopped or the node fenced).
    async fn with_image(
        &self,
        c: &ContainerRecord,
        spec: ContainerSpec,
    ) -> Result<ContainerSpec, Failure> {
        let Some(images) = self.images.clone() else {
            let why = self.store_error.clone().unwrap_or_default();
            return Err(Failure::Launch(LaunchFailure::NoStore(why)));
        };
        let reference = spec.image.clone().unwrap_or_default();
        if !images.has(&reference) {
            let (tx, mut rx) = tokio::sync::watch::channel(Pulled::default());
            let core = self.core.clone();
            let id = c.id.clone();
            let reporter = tokio::spawn(async move {
                let mut last = None;
                loop {
                    let p = *rx.borrow_and_update();
                    if last != Some(p) {
                        let observed = Observed::Pulling {
                            done: p.done,
                            total: p.total,
                        };
                        let _ = send_report(&core, &id, &observed).await;
                        last = Some(p);
                    }
                    if rx.changed().await.is_err() {
                        return;
                    }
                    tokio::time::sleep(PULL_REPORT_EVERY).await;
                }
            });
            let pulled = images.ensure(&self.core, &reference, tx).await;
            let _ = reporter.await;
            pulled.map_err(Failure::Pull)?;
        }
        let rt = self.runtime.clone();
        let store = images.store().clone();
        let resolved =
            tokio::task::spawn_blocking(move || -> Result<ContainerSpec, LaunchFailure> {
                let s = crate::image::config::apply(&store, &spec)?;
                Ok(provision::provision_image(&rt, &s, false)?)
            })
            .await
            .map_err(|e| Failure::Launch(LaunchFailure::Task(e.to_string())))?
            .map_err(Failure::Launch)?;
        let state = self.core.state();
        let me = self.core.id;
        let wanted =
            state.containers().get(&c.id).is_some_and(|r| {
                r.node == me && r.desired.keeps_running() && !r.observed.is_final()
            }) && !state
                .nodes()
                .get(&me)
                .is_some_and(|n| n.status == NodeStatus::Down)
                && lease::remaining_ms(&self.runtime.lease_file()).is_some();
        if !wanted {
            tracing::info!(
                "container {}: its image is here, but it is no longer wanted here",
                c.id
            );
            return Err(Failure::Unwanted);
        }
        Ok(resolved)
    }

    /// Bootstraps the root when missing, then starts the container through the helper;
    /// returns once the helper's handshake says it runs (or why it does not).
    async fn start(&self, c: &ContainerRecord, spec: ContainerSpec) -> Result<(), LaunchFailure> {
        // "starting" only when a root filesystem must be built first: on the usual
        // path the report would cost a commit before the launch.
        if spec.image.is_none() && !spec.rootfs.path.is_dir() {
            let _ = send_report(&self.core, &c.id, &Observed::Starting).await;
        }
        let rt = self.runtime.clone();
        let spec = tokio::task::spawn_blocking(move || -> Result<ContainerSpec, LaunchFailure> {
            // An image's root was prepared before (`with_image`).
            if spec.image.is_none() {
                bootstrap::ensure(&spec, false)?;
                provision::provision(&rt, &spec, false, false)?;
            }
            Ok(spec)
        })
        .await
        .map_err(|e| LaunchFailure::Task(e.to_string()))??;
        let (spec, secrets) = storage::for_launch(&self.core, &self.volumes, spec).await?;
        let request = helper::Request::Monitor {
            place: helper::Place {
                state_dir: self.runtime.state_dir.clone(),
                cgroup_parent: self.runtime.cgroup_parent.clone(),
                lease: Some(self.runtime.lease_file()),
            },
            spec: Box::new(spec),
            secrets,
        };
        match helper::call_async(&request).await? {
            (helper::Reply::Started(_), _) => Ok(()),
            (other, stderr) => Err(LaunchFailure::Helper(helper::HelperError::NoReply {
                verb: "__monitor",
                status: format!("unexpected reply {other:?}"),
                stderr: helper::tail(&stderr),
            })),
        }
    }

    fn kill(self: Arc<Self>, name: String) {
        if !lock(&self.killing).insert(name.clone()) {
            return;
        }
        tokio::spawn(async move {
            if let Ok(slot) = self.kill_slots.acquire().await {
                let rt = self.runtime.clone();
                let n = name.clone();
                let res = tokio::task::spawn_blocking(move || {
                    let sig = rt.stop_signal(&n);
                    rt.stop(&n, sig, STOP_GRACE)
                })
                .await;
                drop(slot);
                match res {
                    // The container's processes are gone: its monitor records the exit
                    // and cleans up while the next kills go out (that wait held a slot,
                    // and 5,000 containers took 16 cleanups at a time to remove).
                    Ok(Ok(Some(monitor))) => {
                        if let Ok(_wait) = self.record_waits.acquire().await {
                            let _ = tokio::task::spawn_blocking(move || monitor.wait(RECORD_GRACE))
                                .await;
                        }
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => tracing::debug!("kill {name}: {e}"),
                    Err(e) => tracing::debug!("kill {name}: {e}"),
                }
            }
            self.reread(vec![name.clone()]).await;
            lock(&self.killing).remove(&name);
            self.wake.notify_one();
        });
    }
}

/// Binds the datagram socket monitors send their exit notices to.
fn bind_notices(runtime: &Runtime) -> std::io::Result<tokio::net::UnixDatagram> {
    let path = runtime.notify_socket();
    let _ = std::fs::remove_file(&path);
    tokio::net::UnixDatagram::bind(&path)
}

/// Empties the notice socket on every wake-up (its kernel queue holds only
/// `net.unix.max_dgram_qlen` datagrams, 10 by default) into an unbounded channel, so a
/// monitor's notice waits for the agent in our memory, never in the kernel queue.
async fn drain_notices(sock: tokio::net::UnixDatagram, to: mpsc::UnboundedSender<String>) {
    let mut buf = [0u8; 512];
    loop {
        if sock.readable().await.is_err() {
            return;
        }
        loop {
            match sock.try_recv(&mut buf) {
                Ok(n) => {
                    let name = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if to.send(name).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!("exit notices: {e}");
                    return;
                }
            }
        }
    }
}
