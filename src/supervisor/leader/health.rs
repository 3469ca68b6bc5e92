//! The leader's watch over the members, carried out: what `decide::health` says (members
//! silent past their TTL, the voter to promote or replace, the finished containers to
//! forget) becomes committed entries and membership changes.

use crate::cluster::state::{ClusterState, Command, NodeId, NodeStatus};
use crate::decide::health::{self, VoterChange, Voters};
use crate::supervisor::shared::{lock, Supervisor};
use openraft::ChangeMembers;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// Finished containers kept for `containers --all`.
const KEEP_FINISHED: usize = 100;

/// Nodes the leader has not heard from lately (or not at all since it leads): no new
/// containers go there until they heartbeat, even before their TTL runs out.
pub fn suspects(core: &Supervisor) -> Vec<NodeId> {
    let window = Duration::from_millis(core.config.heartbeat_ms * 3);
    let state = core.state();
    lock(&core.liveness).suspects(
        state.nodes().keys().copied(),
        core.id,
        Instant::now(),
        window,
    )
}

/// Commits down the members silent past their TTL; keeps since when each member down is
/// down (for the voter replacement).
pub async fn detect_failures(
    core: &Supervisor,
    state: &ClusterState,
    now: Instant,
    down_since: &mut HashMap<NodeId, Instant>,
) {
    let ttl = Duration::from_millis(core.config.node_ttl_ms);
    for n in state.nodes().values() {
        match n.status {
            NodeStatus::Up | NodeStatus::Draining => {
                down_since.remove(&n.id);
            }
            NodeStatus::Down => {
                down_since.entry(n.id).or_insert(now);
            }
            NodeStatus::Left => {}
        }
    }
    let silent = lock(&core.liveness).silent(
        state.nodes().values().map(|n| (n.id, n.status)),
        core.id,
        now,
        ttl,
    );
    for id in silent {
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
    core: &Supervisor,
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
    // Up, and within 64 entries of the log's end.
    let ready: BTreeSet<NodeId> = learners
        .iter()
        .filter(|id| {
            state
                .nodes()
                .get(id)
                .is_some_and(|n| n.status == NodeStatus::Up)
        })
        .filter(|id| {
            m.replication
                .as_ref()
                .and_then(|r| r.get(id))
                .map(|matched| matched.map(|l| l.index).unwrap_or(0) + 64 >= last)
                .unwrap_or(false)
        })
        .copied()
        .collect();
    let decided = health::voter_change(
        &Voters {
            voters: &voters,
            learners: &learners,
            me: core.id,
            wanted: core.config.voters,
            ready: &ready,
            down_since,
            replace_after: Duration::from_millis(core.config.replace_voter_after_ms),
        },
        now,
    );
    let change = match decided {
        Some(VoterChange::Replace { gone, with }) => {
            let mut new = voters.clone();
            new.remove(&gone);
            new.insert(with);
            tracing::info!("voter {gone} is gone: learner {with} takes its place");
            ChangeMembers::ReplaceAllVoters(new)
        }
        Some(VoterChange::Promote(l)) => {
            tracing::info!("promoting learner {l} to voter");
            ChangeMembers::AddVoterIds([l].into_iter().collect())
        }
        None => return,
    };
    if let Err(e) = core.raft.change_membership(change, true).await {
        tracing::warn!("membership change: {e}");
    }
}

/// Forgets the oldest finished containers past [`KEEP_FINISHED`] (in batches); costs
/// nothing on a tick with fewer (the index counts them).
pub async fn collect_garbage(core: &Supervisor, state: &ClusterState) {
    if state.finished() <= KEEP_FINISHED + KEEP_FINISHED / 2 {
        return;
    }
    let finished: Vec<(u64, String)> = state
        .containers()
        .values()
        .filter(|c| c.observed.is_final())
        .map(|c| (c.created_index, c.id.clone()))
        .collect();
    let ids = health::to_forget(finished, KEEP_FINISHED);
    if ids.is_empty() {
        return;
    }
    if let Err(e) = core.propose(Command::Forget { ids }).await {
        tracing::debug!("forget finished containers: {e}");
    }
}
