//! The leader's watch over the members: nodes silent past their TTL are committed
//! down, the voters are kept at their number (learners promoted, a voter gone for good
//! replaced), and finished containers beyond a window are forgotten.

use crate::cluster::state::{ClusterState, Command, NodeId, NodeStatus};
use crate::supervisor::node::{lock, Node};
use openraft::ChangeMembers;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// Finished containers kept for `containers --all`.
const KEEP_FINISHED: usize = 100;

pub async fn detect_failures(
    core: &Node,
    state: &ClusterState,
    now: Instant,
    down_since: &mut HashMap<NodeId, Instant>,
) {
    let ttl = Duration::from_millis(core.config.node_ttl_ms);
    let since = lock(&core.leading_since).unwrap_or(now);
    let mut to_down = Vec::new();
    {
        let hb = lock(&core.heartbeats);
        for n in state.nodes().values() {
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
            tracing::warn!("mark node {id} down: {e}");
        }
        down_since.insert(id, now);
    }
}

/// Keeps `voters` voters: promotes healthy, caught-up learners, and swaps a voter that
/// has been down past the threshold for one. One change per tick.
pub async fn autopilot(
    core: &Node,
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
            .nodes()
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

/// Forgets the oldest finished containers past [`KEEP_FINISHED`] (and a half, so that it
/// commits in batches); costs nothing on a tick with fewer (the index counts them).
pub async fn collect_garbage(core: &Node, state: &ClusterState) {
    if state.finished() <= KEEP_FINISHED + KEEP_FINISHED / 2 {
        return;
    }
    let mut finished: Vec<(u64, &String)> = state
        .containers()
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
        tracing::debug!("forget finished containers: {e}");
    }
}
