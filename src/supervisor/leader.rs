//! The leader's loop: failure detection from heartbeats, the membership autopilot
//! (promote learners to voters, replace voters gone for good), garbage collection of
//! finished containers, and the watcher rules. Only the leader acts; a new leader gives
//! every node a fresh TTL before judging it.

use super::core::{lock, Core};
use crate::cluster::state::{ClusterState, Command, NodeId, NodeStatus};
use openraft::ChangeMembers;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the leader looks.
const TICK: Duration = Duration::from_millis(100);
/// Finished containers kept for `containers --all`.
const KEEP_FINISHED: usize = 100;

/// Runs forever.
pub async fn run(core: Arc<Core>) {
    let mut down_since: HashMap<NodeId, Instant> = HashMap::new();
    let mut rules = super::rules::RuleLoop::new(core.clone());
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut state_rx = core.feed.state.clone();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = state_rx.changed() => { if r.is_err() { return; } }
        }
        if !core.is_leader() {
            *lock(&core.leading_since) = None;
            rules.stand_down();
            continue;
        }
        let now = Instant::now();
        let (index, state) = {
            let b = state_rx.borrow_and_update();
            (b.0, b.1.clone())
        };
        if lock(&core.leading_since).is_none() {
            *lock(&core.leading_since) = Some(now);
            down_since.clear();
            // A fresh TTL for everyone: we have not been listening until now.
            lock(&core.heartbeats).clear();
            tracing::info!("node {} leads", core.id);
        }
        if !state.nodes.contains_key(&core.id) {
            let cmd = Command::AddNode {
                id: Some(core.id),
                addr: core.config.advertise.clone(),
                labels: core.config.labels.clone(),
            };
            if let Err(e) = core.propose(cmd).await {
                tracing::warn!("register this node: {}", e.message());
            }
            continue;
        }
        detect_failures(&core, &state, now, &mut down_since).await;
        autopilot(&core, &state, now, &down_since).await;
        collect_garbage(&core, &state).await;
        rules.evaluate(&state, index).await;
    }
}

async fn detect_failures(
    core: &Core,
    state: &ClusterState,
    now: Instant,
    down_since: &mut HashMap<NodeId, Instant>,
) {
    let ttl = Duration::from_millis(core.config.node_ttl_ms);
    let since = lock(&core.leading_since).unwrap_or(now);
    let mut to_down = Vec::new();
    {
        let hb = lock(&core.heartbeats);
        for n in state.nodes.values() {
            match n.status {
                NodeStatus::Up | NodeStatus::Draining => {
                    down_since.remove(&n.id);
                    let last = hb.get(&n.id).copied().unwrap_or(since).max(since);
                    if n.id != core.id && now.duration_since(last) > ttl {
                        to_down.push(n.id);
                    }
                }
                NodeStatus::Down => {
                    down_since.entry(n.id).or_insert(now);
                }
                NodeStatus::Left => {}
            }
        }
    }
    for id in to_down {
        tracing::warn!(
            "node {id} silent for more than {} ms: down",
            ttl.as_millis()
        );
        if let Err(e) = core
            .propose(Command::SetNodeStatus {
                id,
                status: NodeStatus::Down,
            })
            .await
        {
            tracing::warn!("mark node {id} down: {}", e.message());
        }
        down_since.insert(id, now);
    }
}

/// Keeps `voters` voters: promotes healthy, caught-up learners, and swaps a voter that
/// has been down past the threshold for one. One change per tick.
async fn autopilot(
    core: &Core,
    state: &ClusterState,
    now: Instant,
    down_since: &HashMap<NodeId, Instant>,
) {
    let Ok(_change) = core.membership.try_lock() else {
        return; // a join or leave is changing the membership
    };
    let m = core.metrics();
    let membership = m.membership_config.membership();
    let joint = membership.get_joint_config();
    if joint.len() > 1 {
        // A joint configuration left behind (a change overtaken by another): finish it.
        if let Some(target) = joint.last().cloned() {
            tracing::info!("finishing a membership change to voters {target:?}");
            if let Err(e) = core
                .raft
                .change_membership(ChangeMembers::ReplaceAllVoters(target), true)
                .await
            {
                tracing::warn!("membership change: {e}");
            }
        }
        return;
    }
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let learners: Vec<NodeId> = membership.learner_ids().collect();
    let last = m.last_log_index.unwrap_or(0);
    let healthy = |id: &NodeId| {
        state
            .nodes
            .get(id)
            .is_some_and(|n| n.status == NodeStatus::Up)
    };
    let caught_up = |id: &NodeId| {
        m.replication
            .as_ref()
            .and_then(|r| r.get(id))
            .map(|matched| matched.map(|l| l.index).unwrap_or(0) + 64 >= last)
            .unwrap_or(false)
    };
    let candidate = learners
        .iter()
        .find(|l| healthy(l) && caught_up(l))
        .copied();
    let replace_after = Duration::from_millis(core.config.replace_voter_after_ms);
    let gone = voters
        .iter()
        .find(|v| {
            **v != core.id
                && down_since
                    .get(v)
                    .is_some_and(|t| now.duration_since(*t) >= replace_after)
        })
        .copied();
    let change = match (gone, candidate) {
        (Some(v), Some(l)) => {
            let mut new: BTreeSet<NodeId> = voters.clone();
            new.remove(&v);
            new.insert(l);
            tracing::info!("voter {v} is gone: learner {l} takes its place");
            Some(ChangeMembers::ReplaceAllVoters(new))
        }
        (_, Some(l)) if voters.len() < core.config.voters => {
            tracing::info!("promoting learner {l} to voter");
            Some(ChangeMembers::AddVoterIds([l].into_iter().collect()))
        }
        _ => None,
    };
    if let Some(change) = change {
        if let Err(e) = core.raft.change_membership(change, true).await {
            tracing::warn!("membership change: {e}");
        }
    }
}

async fn collect_garbage(core: &Core, state: &ClusterState) {
    let mut finished: Vec<(u64, &String)> = state
        .containers
        .values()
        .filter(|c| c.observed.is_final())
        .map(|c| (c.created_index, &c.id))
        .collect();
    if finished.len() <= KEEP_FINISHED + KEEP_FINISHED / 2 {
        return;
    }
    finished.sort();
    let ids: Vec<String> = finished[..finished.len() - KEEP_FINISHED]
        .iter()
        .map(|(_, id)| (*id).clone())
        .collect();
    if let Err(e) = core.propose(Command::Forget { ids }).await {
        tracing::debug!("forget finished containers: {}", e.message());
    }
}
