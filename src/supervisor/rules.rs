//! Watcher rules on the leader: registration (`watch apply`) and the rule loop, which
//! evaluates every rule on each applied change, on committed events and on timer ticks,
//! against the desired state, and carries out the intents as committed entries before it
//! evaluates again (so "keep 5" never races itself above 5).

use super::core::Core;
use super::ops::{commit_spawn, definition_name, evaluate as evaluate_haco, rule_pb};
use crate::api::pb;
use crate::cluster::state::{ClusterState, Command, Definition, Event, NodeId, RuleRecord};
use crate::spec::watch::{self, Intent, RuleInfo, Trigger};
use crate::watch::placement;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tonic::Status;

/// Wall-time bound of one rule evaluation (operations are bounded by the engine).
const EVAL_TIMEOUT: Duration = Duration::from_millis(500);
/// After a placement failure a rule waits this long (or for a node to come up).
const PLACEMENT_BACKOFF: Duration = Duration::from_secs(1);
/// An unchanged evaluation result is committed at most this often.
const RECORD_EVERY: Duration = Duration::from_secs(5);

/// Registers (or replaces) a rule: compiled and checked here, every `.haco` it names
/// evaluated, all committed together.
pub async fn apply(core: &Core, r: pb::ApplyRuleRequest) -> Result<pb::Rule, Status> {
    let file = if r.file.is_empty() {
        "rule.watch".to_string()
    } else {
        r.file.clone()
    };
    let name = if r.name.is_empty() {
        definition_name(&file)
    } else {
        r.name.clone()
    };
    crate::spec::names::check("rule", &name)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let (text, f) = (r.text.clone(), file.clone());
    let info = tokio::task::spawn_blocking(move || watch::check(&text, &f))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let mut definitions = Vec::new();
    let mut names = BTreeMap::new();
    for h in &info.hacos {
        let Some(text) = r.hacos.get(&h.path) else {
            return Err(Status::invalid_argument(format!(
                "{file}:{}:{}: {} was not sent with the rule (`haconiwa watch apply` reads it next to the .watch file)",
                h.line, h.col, h.path
            )));
        };
        let base = Path::new(&r.base_dir).join(&h.path);
        let base_dir = base
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        evaluate_haco(text.clone(), h.path.clone(), base_dir.clone()).await?;
        let d = Definition {
            name: definition_name(&h.path),
            digest: crate::spec::digest(text),
            text: text.clone(),
            base_dir,
        };
        names.insert(h.path.clone(), d.digest.clone());
        definitions.push(d);
    }
    let rule = RuleRecord {
        name: name.clone(),
        digest: crate::spec::digest(&r.text),
        text: r.text,
        file,
        definitions: names,
        last_evaluation_index: 0,
        last_error: None,
        evaluations: 0,
    };
    core.propose(Command::PutRule { rule, definitions }).await?;
    let state = core.state();
    state
        .rules
        .get(&name)
        .map(rule_pb)
        .ok_or_else(|| Status::internal("rule missing after commit"))
}

/// The rule loop's memory between ticks (leader only; reset when leadership is lost).
pub struct RuleLoop {
    core: Arc<Core>,
    events: broadcast::Receiver<Event>,
    infos: HashMap<String, (String, RuleInfo)>,
    timers: HashMap<(String, u64), Instant>,
    last_index: u64,
    backoff: HashMap<String, Instant>,
    recorded: HashMap<String, (Option<String>, Instant)>,
    fresh: bool,
}

impl RuleLoop {
    /// A loop for this node.
    pub fn new(core: Arc<Core>) -> Self {
        let events = core.feed.events.subscribe();
        RuleLoop {
            core,
            events,
            infos: HashMap::new(),
            timers: HashMap::new(),
            last_index: 0,
            backoff: HashMap::new(),
            recorded: HashMap::new(),
            fresh: true,
        }
    }

    /// Forgets everything when leadership is lost.
    pub fn stand_down(&mut self) {
        if !self.fresh {
            self.timers.clear();
            self.backoff.clear();
            self.recorded.clear();
            self.fresh = true;
        }
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

    /// Evaluates the rules against the state applied at `index`.
    pub async fn evaluate(&mut self, state: &ClusterState, index: u64) {
        let mut events = Vec::new();
        loop {
            match self.events.try_recv() {
                Ok(e) => events.push(e),
                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
        let now = Instant::now();
        let changed = index > self.last_index || self.fresh;
        let event_triggers = crate::watch::rules::triggers(&events, state);
        self.infos.retain(|name, _| state.rules.contains_key(name));
        for rule in state.rules.values() {
            let Some(info) = self.info(rule).await else {
                continue;
            };
            let mut triggers: Vec<Trigger> = Vec::new();
            if changed {
                triggers.push(Trigger::Cluster);
            }
            triggers.extend(event_triggers.iter().cloned());
            for (kind, every) in &info.handlers {
                if let (true, Some(ms)) = (kind == "timer", every) {
                    let due = self.timers.entry((rule.name.clone(), *ms)).or_insert(now);
                    if now >= *due {
                        triggers.push(Trigger::Timer(*ms));
                        *due = now + Duration::from_millis(*ms);
                    }
                }
            }
            let wanted: Vec<Trigger> = triggers
                .into_iter()
                .filter(|t| info.handlers.iter().any(|(k, _)| k == kind_of(t)))
                .collect();
            if wanted.is_empty() {
                continue;
            }
            if self
                .backoff
                .get(&rule.name)
                .is_some_and(|until| now < *until)
                && !wanted.iter().any(|t| matches!(t, Trigger::NodeUp(_)))
            {
                continue;
            }
            let error = self.run_rule(rule, state, wanted).await;
            self.record(rule, error).await;
        }
        self.last_index = index;
        self.fresh = false;
    }

    /// One evaluation and its intents; returns the error to report, if any.
    async fn run_rule(
        &mut self,
        rule: &RuleRecord,
        state: &ClusterState,
        triggers: Vec<Trigger>,
    ) -> Option<String> {
        let (text, file) = (rule.text.clone(), rule.file.clone());
        let view = crate::watch::rules::view(state);
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
        for intent in intents {
            if let Err(e) = self.carry_out(rule, intent).await {
                tracing::warn!("rule {}: {e}", rule.name);
                if e.starts_with("cannot place") {
                    self.backoff
                        .insert(rule.name.clone(), Instant::now() + PLACEMENT_BACKOFF);
                }
                error.get_or_insert(e);
            }
        }
        error
    }

    async fn carry_out(&self, rule: &RuleRecord, intent: Intent) -> Result<(), String> {
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
            } => {
                let state = core.state();
                let def = rule
                    .definitions
                    .get(&haco)
                    .and_then(|d| state.definitions.get(d))
                    .cloned()
                    .ok_or_else(|| format!("spawn: {haco} is not one of the rule's definitions (name .haco files as string literals)"))?;
                let spec = evaluate_haco(def.text.clone(), haco.clone(), def.base_dir.clone())
                    .await
                    .map_err(|s| s.message().to_string())?;
                let req = placement::Request {
                    definition: &def.name,
                    node,
                    labels: node_labels,
                    exclude: if node.is_some() {
                        Vec::new()
                    } else {
                        core.suspects()
                    },
                };
                let target: NodeId = placement::place(&state, &req)
                    .map_err(|e| format!("cannot place {haco}: {e}"))?;
                commit_spawn(core, def, spec, target, Some(rule.name.clone()))
                    .await
                    .map(|_| ())
                    .map_err(|s| s.message().to_string())
            }
            Intent::Kill { id } => {
                let state = core.state();
                match state.containers.get(&id) {
                    Some(c) if c.is_active() => core
                        .propose(Command::Stop { id })
                        .await
                        .map(|_| ())
                        .map_err(|s| s.message().to_string()),
                    Some(_) => Ok(()),
                    None => Err(format!("kill: no container '{id}'")),
                }
            }
            Intent::KillSome { definition, count } => {
                let state = core.state();
                let mut active: Vec<_> = state
                    .containers
                    .values()
                    .filter(|c| c.definition == definition && c.is_active())
                    .collect();
                // From the most loaded node first, newest first: keeps the spread.
                let mut per_node: HashMap<NodeId, usize> = HashMap::new();
                for c in &active {
                    *per_node.entry(c.node).or_default() += 1;
                }
                active.sort_by_key(|c| {
                    (
                        std::cmp::Reverse(per_node[&c.node]),
                        std::cmp::Reverse(c.created_index),
                    )
                });
                for c in active.into_iter().take(count as usize) {
                    core.propose(Command::Stop { id: c.id.clone() })
                        .await
                        .map_err(|s| s.message().to_string())?;
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

fn kind_of(t: &Trigger) -> &'static str {
    match t {
        Trigger::Cluster => "cluster",
        Trigger::ContainerExit(_) => "container_exit",
        Trigger::NodeDown(_) => "node_down",
        Trigger::NodeUp(_) => "node_up",
        Trigger::Timer(_) => "timer",
    }
}
