//! `/metrics`: Prometheus (OpenMetrics text). Raft and the replicated state are read at
//! scrape time; what the supervisor counted as it worked comes from `Stats`; the process
//! from `/proc/self`.

use crate::cluster::state::{ClusterState, ContainerRecord};
use crate::supervisor::shared::Supervisor;
use crate::supervisor::stats::{label, Labels};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

/// A float gauge.
type FGauge = Gauge<f64, AtomicU64>;

fn gauge(v: i64) -> Gauge {
    let g = Gauge::default();
    g.set(v);
    g
}

fn fgauge(v: f64) -> FGauge {
    let g = FGauge::default();
    g.set(v);
    g
}

/// The scrape: every metric of this member, encoded.
pub fn render(core: &Supervisor) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::with_prefix("haconiwa");
    raft(core, &mut reg);
    cluster(core, &mut reg);
    node(core, &mut reg);
    process(&mut reg);
    let mut out = String::new();
    encode(&mut out, &reg)?;
    Ok(out)
}

fn raft(core: &Supervisor, reg: &mut Registry) {
    let m = core.metrics();
    let r = reg.sub_registry_with_prefix("raft");
    r.register("term", "Current Raft term", gauge(m.current_term as i64));
    r.register(
        "leader",
        "Supervisor id of the leader this member knows (0: none)",
        gauge(m.current_leader.unwrap_or(0) as i64),
    );
    r.register(
        "is_leader",
        "1 when this member leads",
        gauge(i64::from(core.is_leader())),
    );
    r.register(
        "last_log_index",
        "Index of the last entry in this member's log",
        gauge(m.last_log_index.unwrap_or(0) as i64),
    );
    r.register(
        "applied_index",
        "Index of the last entry applied to the state",
        gauge(m.last_applied.map(|l| l.index).unwrap_or(0) as i64),
    );
    let commit = crate::supervisor::shared::commit_index(&m);
    r.register(
        "commit_index",
        "Highest index known committed (the leader: its quorum's; a follower: applied)",
        gauge(commit as i64),
    );
    if let Some(ms) = m.millis_since_quorum_ack {
        r.register_with_unit(
            "quorum_ack_age",
            "Time since a quorum last acknowledged this leader",
            Unit::Seconds,
            fgauge(ms as f64 / 1000.0),
        );
    }
    r.register(
        "elections",
        "Raft term changes this member saw since it started",
        core.stats.elections.clone(),
    );
    r.register_with_unit(
        "log_append_duration",
        "fdatasyncs of this member's Raft log (one may cover several appends of a leader)",
        Unit::Seconds,
        core.stats.log_append_seconds.clone(),
    );
}

fn cluster(core: &Supervisor, reg: &mut Registry) {
    let state = core.state();
    let r = reg.sub_registry_with_prefix("cluster");
    let nodes = Family::<Labels, Gauge>::default();
    for s in ["up", "down", "draining", "left"] {
        nodes.get_or_create(&label("state", s)).set(0);
    }
    for n in state.nodes().values() {
        nodes.get_or_create(&label("state", n.status.name())).inc();
    }
    r.register("nodes", "Members by state", nodes);
    let containers = by_definition(&state, "state", |c| Some(c.observed.name()));
    r.register(
        "containers",
        "Containers in the replicated state, by definition and state",
        containers,
    );
    let health = by_definition(&state, "health", |c| c.observed.health().map(|h| h.name()));
    r.register(
        "containers_health",
        "Running containers with a health check, by definition and what the checks say",
        health,
    );
    r.register(
        "rules",
        "Registered rules",
        gauge(state.rules().len() as i64),
    );
    let versions = Family::<Vec<(String, String)>, Gauge>::default();
    for rule in state.rules().values() {
        if let Some(v) = state
            .rule_history(&rule.name)
            .and_then(|h| h.current().cloned())
        {
            versions
                .get_or_create(&vec![
                    ("rule".to_string(), rule.name.clone()),
                    ("rollout".to_string(), v.status.name().to_string()),
                ])
                .set(v.version as i64);
        }
    }
    r.register(
        "rule_version",
        "The version each rule runs, labelled with how its rollout stands (deploying, stable, failed)",
        versions,
    );
    let evals = Family::<Labels, Gauge>::default();
    for rule in state.rules().values() {
        evals
            .get_or_create(&label("rule", &rule.name))
            .set(rule.evaluations as i64);
    }
    r.register(
        "rule_evaluations_recorded",
        "Evaluations of each rule recorded in the state (by every leader)",
        evals,
    );
    r.register(
        "events",
        "Committed events applied by this member since it started, by kind",
        core.stats.events.clone(),
    );
    let placements = prometheus_client::metrics::counter::Counter::<u64>::default();
    placements.inc_by(
        core.stats
            .events
            .get_or_create(&label("kind", "container_spawned"))
            .get(),
    );
    r.register(
        "placements",
        "Containers placed (committed spawns) seen by this member since it started",
        placements,
    );
    r.register(
        "rule_evaluations",
        "Rule evaluations run by this member while it led, by rule and outcome",
        core.stats.rule_evaluations.clone(),
    );
    r.register(
        "rule_crash_backoffs",
        "Times this member, while it led, held a rule back because its copies crashed in a row",
        core.stats.rule_crash_backoffs.clone(),
    );
    r.register_with_unit(
        "rule_evaluation_duration",
        "Time of one rule evaluation, with its intents committed",
        Unit::Seconds,
        core.stats.rule_evaluation_seconds.clone(),
    );
}

/// A gauge of the containers by definition and one more label (`what` of each
/// container; none: not counted).
fn by_definition(
    state: &ClusterState,
    label: &str,
    what: impl Fn(&ContainerRecord) -> Option<&'static str>,
) -> Family<Labels, Gauge> {
    let mut by: BTreeMap<(String, &'static str), i64> = BTreeMap::new();
    for c in state.containers().values() {
        if let Some(v) = what(c) {
            *by.entry((c.definition.clone(), v)).or_default() += 1;
        }
    }
    let family = Family::<Labels, Gauge>::default();
    for ((definition, v), n) in by {
        family
            .get_or_create(&vec![
                ("definition".to_string(), definition),
                (label.to_string(), v.to_string()),
            ])
            .set(n);
    }
    family
}

fn node(core: &Supervisor, reg: &mut Registry) {
    let state = core.state();
    let r = reg.sub_registry_with_prefix("node");
    let running = state
        .containers_on(core.id)
        .filter(|c| c.observed.running_pid().is_some())
        .count();
    r.register("id", "This member's node id", gauge(core.id as i64));
    r.register(
        "containers_running",
        "Containers the state says run on this node",
        gauge(running as i64),
    );
    r.register_with_unit(
        "launch_duration",
        "Container launches on this node, from assignment to running (handshake)",
        Unit::Seconds,
        core.stats.launch_seconds.clone(),
    );
    r.register(
        "launch_failures",
        "Container launches on this node that failed",
        core.stats.launch_failures.clone(),
    );
    r.register_with_unit(
        "agent_pass_duration",
        "The agent's passes over this node's containers (one at every change)",
        Unit::Seconds,
        core.stats.agent_pass_seconds.clone(),
    );
    r.register(
        "oom_kills",
        "Containers on this node killed by the OOM killer",
        core.stats.oom_kills.clone(),
    );
}

fn process(reg: &mut Registry) {
    let r = reg.sub_registry_with_prefix("process");
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss_kb: i64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|x| x.parse().ok()))
        .unwrap_or(0);
    r.register_with_unit(
        "resident_memory",
        "Resident memory of the supervisor",
        Unit::Bytes,
        gauge(rss_kb * 1024),
    );
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rfind(')').map(|i| &stat[i + 2..]).unwrap_or("");
    let f: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    r.register_with_unit(
        "cpu",
        "CPU time of the supervisor (user and system)",
        Unit::Seconds,
        fgauge(ticks as f64 / hz),
    );
    let fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0);
    r.register("open_fds", "Open file descriptors", gauge(fds as i64));
}
