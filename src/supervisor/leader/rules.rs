//! The rule loop on the leader: evaluates every rule on each applied change, on
//! committed events and on timer ticks, against the desired state, and carries out the
//! intents as committed entries before it evaluates again (so "keep 5" never races
//! itself above 5). What runs when (`decide::schedule`) and which containers a kill
//! takes (`decide::victims`) are decided in `decide`; this file does the I/O.

use super::ops::commit_spawn;
use crate::cluster::state::{
    ClusterState, Command, Definition, Desired, Event, EventKind, NodeId, Observed, RuleRecord,
};
use crate::decide::schedule::{copy_end, CopyEnd, Scheduler, CRASH_RESET};
use crate::decide::{placement, victims};
use crate::spec::watch::{self, Intent, RuleInfo, Trigger};
use crate::supervisor::error::{OpError, OpResult};
use crate::supervisor::shared::Supervisor;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// Wall-time bound of one rule evaluation (operations are bounded by the engine).
const EVAL_TIMEOUT: Duration = Duration::from_millis(500);
/// The most containers one Raft entry places.
const SPAWN_BATCH: usize = 1000;
/// Placement entries of one spawn proposed at once: one's replication and fsyncs overlap
/// another's apply.
const SPAWNS_IN_FLIGHT: usize = 4;
/// An unchanged evaluation result is committed at most this often.
const RECORD_EVERY: Duration = Duration::from_secs(5);

/// The rule loop's memory between ticks (leader only; reset when leadership is lost).
pub struct RuleLoop {
    core: Arc<Supervisor>,
    events: broadcast::Receiver<Event>,
    infos: HashMap<String, (String, RuleInfo)>,
    schedule: Scheduler,
    recorded: HashMap<String, (Option<String>, Instant)>,
    rollouts: super::rollouts::Rollouts,
    /// When this leader saw each copy of a rule placed, or its run begin (then with
    /// `true`); those running when it took over count as running for long.
    running_since: HashMap<String, (Instant, bool)>,
    /// Whether `running_since` holds the copies found running at the takeover.
    seeded: bool,
    /// Copies of rules this leader saw waiting to restart on their node.
    restarted: HashSet<String>,
    /// Why a rule is held back for crashing copies (its error while the loop lasts).
    crash_notes: HashMap<String, String>,
}

impl RuleLoop {
    /// A loop for this node.
    pub fn new(core: Arc<Supervisor>) -> Self {
        let events = core.feed.events.subscribe();
        RuleLoop {
            core,
            events,
            infos: HashMap::new(),
            schedule: Scheduler::new(),
            recorded: HashMap::new(),
            rollouts: Default::default(),
            running_since: HashMap::new(),
            seeded: false,
            restarted: HashSet::new(),
            crash_notes: HashMap::new(),
        }
    }

    /// Forgets everything when leadership is lost.
    pub fn stand_down(&mut self) {
        self.schedule.reset();
        self.recorded.clear();
        self.rollouts.reset();
        self.running_since.clear();
        self.seeded = false;
        self.restarted.clear();
        self.crash_notes.clear();
        while self.events.try_recv().is_ok() {}
    }

    async fn info(&mut self, rule: &RuleRecord) -> Option<RuleInfo> {
        if let Some((digest, info)) = self.infos.get(&rule.name) {
            if *digest == rule.digest {
                return Some(info.clone());
            }
        }
        let (text, file) = (rule.text.clone(), rule.file.clone());
        let info = tokio::task::spawn_blocking(move || watch::check(&text, &file))
            .await
            .ok()?
            .ok()?;
        self.infos
            .insert(rule.name.clone(), (rule.digest.clone(), info.clone()));
        Some(info)
    }

    /// Evaluates the rules against the state, whose version (one more at every change,
    /// see `leader::run`) is `index`.
    pub async fn evaluate(&mut self, state: &Arc<ClusterState>, index: u64) {
        let mut events = Vec::new();
        loop {
            match self.events.try_recv() {
                Ok(e) => events.push(e),
                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
        let now = Instant::now();
        self.note_pulls(&events, state, now).await;
        self.note_crashes(&events, state, now).await;
        let event_triggers = crate::decide::view::triggers(&events, state);
        self.infos
            .retain(|name, _| state.rules().contains_key(name));
        for rule in state.rules().values() {
            let Some(info) = self.info(rule).await else {
                continue;
            };
            let wanted =
                self.schedule
                    .plan(now, index, &rule.name, &info.handlers, &event_triggers);
            if wanted.is_empty() {
                continue;
            }
            let started = Instant::now();
            let error = self.run_rule(rule, state, wanted).await;
            // Without an error of its own: a crash loop while it lasts, else a halted
            // rollout until the rule changes, else canaries awaiting their promotion.
            let error = error
                .or_else(|| {
                    self.schedule
                        .crash_looping(&rule.name)
                        .then(|| self.crash_notes.get(&rule.name).cloned())
                        .flatten()
                })
                .or_else(|| super::rollouts::standing_failure(state, &rule.name))
                .or_else(|| self.rollouts.waiting_for(&rule.name).cloned());
            let stats = &self.core.stats;
            stats
                .rule_evaluation_seconds
                .observe(started.elapsed().as_secs_f64());
            let outcome = if error.is_some() { "error" } else { "ok" };
            stats
                .rule_evaluations
                .get_or_create(&vec![
                    ("rule".to_string(), rule.name.clone()),
                    ("outcome".to_string(), outcome.to_string()),
                ])
                .inc();
            self.record(rule, error).await;
        }
        self.schedule.done(index);
        // Rollouts: old copies replaced by new ones, at each rule's pace.
        let policies = self
            .infos
            .iter()
            .map(|(name, (_, info))| (name.clone(), info.update.clone()))
            .collect();
        let fresh = self.core.state();
        for failed in self.rollouts.step(&self.core, &fresh, &policies).await {
            if let Some(rule) = fresh.rules().get(&failed.rule).cloned() {
                self.record(&rule, Some(failed.message)).await;
            }
        }
    }

    /// Image pulls of the rules' containers: a failure holds the rule back (longer each
    /// time, so a rule keeping N of an image that cannot be had does not spin) and says
    /// so in `watch ls`; a container that runs ends the wait.
    async fn note_pulls(&mut self, events: &[Event], state: &Arc<ClusterState>, now: Instant) {
        let mut failed: HashMap<String, String> = HashMap::new();
        for e in events {
            let Some(c) = &e.container else { continue };
            let Some(rule) = &c.rule else { continue };
            match (&e.kind, &c.observed) {
                (EventKind::ContainerPullFailed, Observed::PullFailed { reason }) => {
                    failed.insert(rule.clone(), format!("node {}: {reason}", c.node));
                }
                (EventKind::ContainerRunning, _) => self.schedule.pull_succeeded(rule),
                _ => {}
            }
        }
        for (rule, reason) in failed {
            let wait = self.schedule.pull_failed(&rule, now);
            let Some(record) = state.rules().get(&rule).cloned() else {
                continue;
            };
            let msg = format!(
                "image pull failed ({reason}); next attempt in {} s",
                wait.as_secs()
            );
            tracing::warn!("rule {rule}: {msg}");
            self.crash_notes.insert(rule.clone(), msg.clone());
            self.record(&record, Some(msg)).await;
        }
        self.crash_notes
            .retain(|rule, _| self.schedule.crash_looping(rule));
    }

    /// Copies of the rules that end on their own soon after they began (or never ran),
    /// or after their node's restarts were used up: in a row, they hold the rule back
    /// (a copy killed from outside, SIGKILL or SIGTERM without the OOM killer, is not the
    /// program's doing: a copy killed by hand, however soon, is replaced at once)
    /// (`decide::schedule`, longer each time) and say so in `watch ls`, so a definition
    /// that cannot run does not spin the leader and the log; a copy that runs well
    /// ends the count.
    async fn note_crashes(&mut self, events: &[Event], state: &Arc<ClusterState>, now: Instant) {
        if !self.seeded {
            self.seeded = true;
            let long_ago = now.checked_sub(CRASH_RESET).unwrap_or(now);
            for c in state.containers().values() {
                if c.rule.is_some() && c.observed.running_pid().is_some() {
                    self.running_since.insert(c.id.clone(), (long_ago, true));
                }
            }
        }
        let mut held: HashMap<String, (Duration, String)> = HashMap::new();
        for e in events {
            let Some(c) = &e.container else { continue };
            let Some(rule) = &c.rule else { continue };
            match (&e.kind, &c.observed) {
                (EventKind::ContainerSpawned, _) => {
                    self.running_since.insert(c.id.clone(), (now, false));
                }
                (EventKind::ContainerRunning, _) if c.observed.running_pid().is_some() => {
                    // The first report of a run (not a retiring copy kept running).
                    let e = self
                        .running_since
                        .entry(c.id.clone())
                        .or_insert((now, false));
                    if !e.1 {
                        *e = (now, true);
                    }
                }
                (EventKind::ContainerRestarting, _) => {
                    self.restarted.insert(c.id.clone());
                    if let Some(e) = self.running_since.get_mut(&c.id) {
                        e.1 = false;
                    }
                }
                (EventKind::ContainerExited, Observed::Exited { .. })
                    if c.desired == Desired::Running =>
                {
                    let ran_for = self
                        .running_since
                        .remove(&c.id)
                        .map(|(t, _)| now.saturating_duration_since(t));
                    let gave_up = self.restarted.remove(&c.id);
                    let weight = match copy_end(&c.observed, ran_for, gave_up) {
                        CopyEnd::Killed => continue,
                        CopyEnd::RanWell => {
                            self.schedule.copy_ran_well(rule);
                            continue;
                        }
                        CopyEnd::Crashed(weight) => weight,
                    };
                    // A copy of the rule that has run well says the definition works.
                    let works = state.containers().values().any(|o| {
                        o.rule.as_deref() == Some(rule.as_str())
                            && o.observed.running_pid().is_some()
                            && self.running_since.get(&o.id).is_some_and(|(t, ran)| {
                                *ran && now.saturating_duration_since(*t) >= CRASH_RESET
                            })
                    });
                    if works {
                        self.schedule.copy_ran_well(rule);
                        continue;
                    }
                    if let Some(wait) = self.schedule.copy_crashed(rule, weight, now) {
                        let why = if gave_up {
                            format!("{} used up its restarts on node {}", c.id, c.node)
                        } else {
                            ended_how(&c.id, &c.observed)
                        };
                        held.insert(rule.clone(), (wait, why));
                    }
                }
                (EventKind::ContainerForgotten | EventKind::ContainerExited, _) => {
                    self.running_since.remove(&c.id);
                    self.restarted.remove(&c.id);
                }
                _ => {}
            }
        }
        for e in events.iter().filter(|e| e.kind == EventKind::RuleApplied) {
            // "NAME version N": a new version starts the count again.
            if let Some(name) = e.message.split(' ').next() {
                self.schedule.copy_ran_well(name);
            }
        }
        for (rule, (wait, why)) in held {
            self.core
                .stats
                .rule_crash_backoffs
                .get_or_create(&crate::supervisor::stats::label("rule", &rule))
                .inc();
            let Some(record) = state.rules().get(&rule).cloned() else {
                continue;
            };
            let msg = format!(
                "crash loop: its copies end as soon as they begin ({why}); next placement in {:.1} s",
                wait.as_secs_f64()
            );
            tracing::warn!("rule {rule}: {msg}");
            self.crash_notes.insert(rule.clone(), msg.clone());
            self.record(&record, Some(msg)).await;
        }
        self.crash_notes
            .retain(|rule, _| self.schedule.crash_looping(rule));
    }

    /// One evaluation and its intents; returns the error to report, if any.
    async fn run_rule(
        &mut self,
        rule: &RuleRecord,
        state: &Arc<ClusterState>,
        triggers: Vec<Trigger>,
    ) -> Option<String> {
        let (text, file) = (rule.text.clone(), rule.file.clone());
        let view = crate::decide::view::StateView(state.clone());
        let result = tokio::task::spawn_blocking(move || {
            watch::evaluate(&text, &file, view, &triggers, Instant::now() + EVAL_TIMEOUT)
        })
        .await;
        let intents = match result {
            Ok(Ok(i)) => i,
            Ok(Err(e)) => {
                tracing::warn!("rule {}: {e}", rule.name);
                return Some(e.to_string());
            }
            Err(e) => return Some(format!("evaluation aborted: {e}")),
        };
        let mut error = None;
        for intent in Intent::coalesce(intents) {
            if let Err(e) = self.carry_out(rule, intent).await {
                tracing::warn!("rule {}: {e}", rule.name);
                if matches!(e, OpError::Placement(_)) {
                    self.schedule.back_off(&rule.name, Instant::now());
                }
                error.get_or_insert(e.to_string());
            }
        }
        error
    }

    async fn carry_out(&self, rule: &RuleRecord, intent: Intent) -> OpResult<()> {
        let core = &self.core;
        match intent {
            Intent::Log(msg) => {
                tracing::info!("rule {}: {msg}", rule.name);
                Ok(())
            }
            Intent::Spawn {
                haco,
                node,
                node_labels,
                count,
            } => {
                let state = core.state();
                let def = rule
                    .definitions
                    .get(&haco)
                    .and_then(|d| state.definitions().get(d))
                    .cloned()
                    .ok_or_else(|| OpError::Invalid(format!("spawn: {haco} is not one of the rule's definitions (name .haco files as string literals)")))?;
                let req = placement::Request {
                    definition: &def.name,
                    node,
                    labels: node_labels,
                    exclude: if node.is_some() {
                        Vec::new()
                    } else {
                        super::health::suspects(core)
                    },
                    host_ports: placement::Request::ports_of(&def.spec),
                    spec: Some(&def.spec),
                };
                let count = usize::try_from(count).unwrap_or(usize::MAX);
                let targets: Vec<NodeId> = placement::place_many(&state, &req, count)?;
                spawn_in_batches(core, &def, &targets, &rule.name).await
            }
            Intent::Kill { id } => {
                let state = core.state();
                match state.containers().get(&id) {
                    Some(c) if c.is_active() => {
                        core.propose(Command::Stop { id }).await.map(|_| ())
                    }
                    Some(_) => Ok(()),
                    None => Err(OpError::NotFound(format!("kill: no container '{id}'"))),
                }
            }
            Intent::KillSome { definition, count } => {
                let state = core.state();
                for id in victims::choose(&state, &definition, count) {
                    core.propose(Command::Stop { id }).await?;
                }
                Ok(())
            }
        }
    }

    /// Commits the evaluation result when it changed, on a new leader's first
    /// evaluation, or every few seconds.
    async fn record(&mut self, rule: &RuleRecord, error: Option<String>) {
        let now = Instant::now();
        let due = match self.recorded.get(&rule.name) {
            None => true,
            Some((last, at)) => *last != error || now.duration_since(*at) >= RECORD_EVERY,
        };
        if !due {
            return;
        }
        let cmd = Command::RuleEvaluated {
            name: rule.name.clone(),
            error: error.clone(),
        };
        if self.core.propose(cmd).await.is_ok() {
            self.recorded.insert(rule.name.clone(), (error, now));
        }
    }
}

/// How a copy that ended quickly ended, for the rule's error.
fn ended_how(id: &str, o: &Observed) -> String {
    match o {
        Observed::Exited {
            code: None,
            error: Some(e),
            ..
        } => format!("{id} never started: {e}"),
        Observed::Exited { code: Some(c), .. } => {
            format!("{id} ended with exit code {c} within a second of starting")
        }
        _ => format!("{id} ended within a second of starting"),
    }
}

/// Commits a spawn's placements, [`SPAWN_BATCH`] to a Raft entry: the first alone (it
/// registers the definition when the state lacks it), the rest [`SPAWNS_IN_FLIGHT`] at
/// a time. The first failure ends it; entries already proposed may still commit, and
/// the rule's next evaluation counts what was placed.
async fn spawn_in_batches(
    core: &Arc<Supervisor>,
    def: &Definition,
    targets: &[NodeId],
    rule: &str,
) -> OpResult<()> {
    let mut batches = targets.chunks(SPAWN_BATCH);
    if let Some(first) = batches.next() {
        commit_spawn(core, def, first.to_vec(), Some(rule.to_string())).await?;
    }
    let joined = |done: Result<OpResult<()>, tokio::task::JoinError>| {
        done.map_err(|e| OpError::Internal(format!("placing a batch: {e}")))?
    };
    let mut in_flight = tokio::task::JoinSet::new();
    for batch in batches {
        if in_flight.len() >= SPAWNS_IN_FLIGHT {
            if let Some(done) = in_flight.join_next().await {
                joined(done)?;
            }
        }
        let (core, def, batch) = (core.clone(), def.clone(), batch.to_vec());
        let rule = Some(rule.to_string());
        in_flight.spawn(async move { commit_spawn(&core, &def, batch, rule).await.map(|_| ()) });
    }
    while let Some(done) = in_flight.join_next().await {
        joined(done)?;
    }
    Ok(())
}
