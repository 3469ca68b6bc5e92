//! The leader: its loop (failure detection, the membership autopilot, garbage
//! collection, the watcher rules), the operations it runs for the API, and the rule
//! loop. Only the leader acts; a new leader gives every node a fresh TTL before judging
//! it.

mod health;
pub mod ops;
mod rollouts;
mod rules;
pub mod storage;

use super::shared::{lock, Supervisor};
use crate::cluster::state::{Command, NodeId, NodeStatus};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the leader looks.
const TICK: Duration = Duration::from_millis(100);

/// Runs forever.
pub async fn run(core: Arc<Supervisor>) {
    let mut down_since: HashMap<NodeId, Instant> = HashMap::new();
    let mut rules = rules::RuleLoop::new(core.clone());
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut state_rx = core.feed.state.clone();
    // Raft's metrics, watched only while this member is elected but not yet acting: its
    // own term's first entry is applied (the state feed) a moment before the metrics say
    // so, and waiting for the next tick would add up to a tick to every failover.
    let mut metrics_rx = core.raft.metrics();
    let mut elected = false;
    // The state's version as the rule loop counts it: one more whenever a record changed
    // (an entry that changes nothing, such as a repeated report, is not a change).
    let mut version = 0u64;
    let mut last_revision = None;
    loop {
        let ticked = tokio::select! {
            _ = tick.tick() => true,
            r = state_rx.changed() => { if r.is_err() { return; } false }
            r = metrics_rx.changed(), if elected => { if r.is_err() { return; } false }
        };
        // A leader without a recent quorum acknowledgement may be cut off while another
        // leads on the other side: it decides nothing (no placements, rules, node-down).
        if !core.acting_leader() {
            elected = core.is_leader();
            lock(&core.liveness).stand_down();
            rules.stand_down();
            continue;
        }
        elected = false;
        let now = Instant::now();
        let state = state_rx.borrow_and_update().1.clone();
        let changed = last_revision != Some(state.revision());
        if changed {
            last_revision = Some(state.revision());
            version += 1;
        }
        let began = lock(&core.liveness).lead(now);
        if began {
            down_since.clear();
            tracing::info!("node {} leads", core.id);
        }
        if !state.nodes().contains_key(&core.id) {
            let cmd = Command::AddNode {
                id: Some(core.id),
                addr: core.config.advertise.clone(),
                labels: core.config.labels.clone(),
            };
            if let Err(e) = core.propose(cmd).await {
                tracing::warn!("register this node: {e}");
            }
            continue;
        }
        if core.policy_differs(core.id, &core.config.policy) {
            let cmd = Command::SetNodePolicy {
                node: core.id,
                policy: core.config.policy.clone(),
            };
            if let Err(e) = core.propose(cmd).await {
                tracing::warn!("publish this node's policy: {e}");
            }
            continue;
        }
        if state
            .nodes()
            .get(&core.id)
            .is_some_and(|n| n.status == NodeStatus::Down)
        {
            // Marked down while it was cut off, it leads now: it is up (what a
            // heartbeat does for the other members).
            let cmd = Command::SetNodeStatus {
                id: core.id,
                status: NodeStatus::Up,
            };
            if let Err(e) = core.propose(cmd).await {
                tracing::warn!("mark this node up: {e}");
            }
            continue;
        }
        if state.net_range().is_none() && core.config.network.is_some() {
            super::network::set_range(&core, &state).await;
            continue;
        }
        // The health checks look at time as much as at the state: every tick. The rules
        // on every change and every tick (their timers).
        if ticked {
            health::detect_failures(&core, &state, now, &mut down_since).await;
            health::autopilot(&core, &state, now, &down_since).await;
            health::collect_garbage(&core, &state).await;
        }
        if ticked || changed || began {
            rules.evaluate(&state, version).await;
        }
    }
}
