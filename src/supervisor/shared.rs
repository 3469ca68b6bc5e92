//! This supervisor as every part of it sees it: the Raft node, the applied state, the
//! heartbeat bookkeeping of the leader, and the ways to reach the leader (propose here
//! when leading, a call through `Peers` otherwise).

use super::config::Config;
use super::error::{OpError, OpResult};
use super::peers::Peers;
use crate::cluster::proposer::Proposer;
use crate::cluster::state::{ClusterState, Command, NodeId, Response};
use crate::cluster::store::StateFeed;
use crate::cluster::Raft;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, RaftMetrics, ServerState};
use std::sync::{Arc, Mutex};

/// This supervisor, shared by all its parts (one per process; not to be confused with
/// a cluster member's record, `cluster::state::NodeRecord`).
pub struct Supervisor {
    /// This node's id.
    pub id: NodeId,
    /// The Raft node.
    pub raft: Raft,
    /// Writes to it, batched under load (group commit).
    proposer: Proposer,
    /// Applied state and events.
    pub feed: StateFeed,
    /// Settings.
    pub config: Config,
    /// The cluster's secrets key, when this member has one (`secrets`).
    pub secrets_key: Option<super::secrets::ClusterKey>,
    /// The calls to the other members.
    pub peers: Arc<dyn Peers>,
    /// Leader side: what it heard from the members and since when it leads (the pure
    /// bookkeeping of `decide::health`).
    pub liveness: Mutex<crate::decide::health::Liveness>,
    /// Serializes membership changes (joins, promotions, swaps, leaves): openraft leaves
    /// a joint configuration behind when a second change overtakes a first.
    pub membership: tokio::sync::Mutex<()>,
    /// The etcd mirror's account of itself (default: not configured).
    pub mirror: Mutex<super::mirror_report::MirrorReport>,
    /// Counters and histograms for `/metrics`.
    pub stats: super::stats::Stats,
}

/// How long a proposal may wait for its commit.
const PROPOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
/// How often a pending write looks whether its leader was cut off meanwhile.
const CUT_OFF_CHECK: std::time::Duration = std::time::Duration::from_millis(50);

/// Locks a mutex, surviving a poisoned one (its data is still consistent here: plain maps).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where [`Supervisor::route`] sends a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This member leads: do it here.
    Here,
    /// Another member leads: send it there.
    Leader {
        /// Its id.
        id: NodeId,
        /// Its address.
        addr: String,
    },
}

impl Supervisor {
    /// This node's local containers: `<state_dir>/node-<id>`, cgroups under
    /// `<cgroup_parent>/node-<id>` (the agent's, and what logs and exec read).
    pub fn local_runtime(&self) -> crate::runtime::Runtime {
        crate::runtime::Runtime::new(
            self.config.state_dir.join(format!("node-{}", self.id)),
            format!("{}/node-{}", self.config.cgroup_parent, self.id),
        )
    }

    /// Whether the replicated state holds another policy for `node` than `policy`
    /// (none recorded: the default).
    pub fn policy_differs(&self, node: NodeId, policy: &crate::spec::NodePolicy) -> bool {
        match self.state().policies().get(&node) {
            Some(p) => p != policy,
            None => !policy.is_permissive(),
        }
    }

    /// Builds the shared state (inside the runtime: it starts the proposer's task).
    pub fn new(
        id: NodeId,
        raft: Raft,
        feed: StateFeed,
        config: Config,
        secrets_key: Option<super::secrets::ClusterKey>,
        stats: super::stats::Stats,
        peers: Arc<dyn Peers>,
    ) -> Arc<Supervisor> {
        Arc::new(Supervisor {
            id,
            proposer: Proposer::new(raft.clone()),
            raft,
            feed,
            config,
            secrets_key,
            peers,
            liveness: Mutex::new(Default::default()),
            membership: tokio::sync::Mutex::new(()),
            mirror: Mutex::new(Default::default()),
            stats,
        })
    }

    /// The latest applied state.
    pub fn state(&self) -> Arc<ClusterState> {
        self.feed.state.borrow().1.clone()
    }

    /// Raft metrics now.
    pub fn metrics(&self) -> RaftMetrics<NodeId, BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    /// Whether this node leads now.
    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }

    /// Whether a quorum acknowledged this leader within an election timeout: a leader
    /// that has not heard from a majority may be cut off (another may lead on the other
    /// side) and must not act.
    pub fn has_quorum(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
        if voters == [self.id] {
            return true;
        }
        m.millis_since_quorum_ack
            .is_some_and(|ms| ms <= self.config.election_timeout_max_ms)
    }

    /// Whether this leader has (or soon gets) a quorum's acknowledgement: a leader just
    /// elected has none until its first round of heartbeats comes back, which takes a
    /// moment, not a partition. It waits until the last acknowledgement is two election
    /// timeouts old (two timeouts from now if there was none), so a leader cut off for
    /// longer refuses at once.
    pub async fn await_quorum(&self) -> bool {
        let since_ack = self.raft.metrics().borrow().millis_since_quorum_ack;
        let wait = self
            .quorum_patience_ms()
            .saturating_sub(since_ack.unwrap_or(0));
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(wait);
        let mut rx = self.raft.metrics();
        loop {
            if self.has_quorum() {
                return true;
            }
            if !self.is_leader() {
                return false;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return self.has_quorum();
            }
        }
    }

    /// How old a leader's last quorum acknowledgement may grow before a write gives up on
    /// it: two election timeouts (one is when the leader loop stops acting).
    fn quorum_patience_ms(&self) -> u64 {
        self.config.election_timeout_max_ms * 2
    }

    /// Leads and knows it: Raft says so, a quorum acknowledged it lately, and it has
    /// applied an entry of its own term (so everything before it too: a member that
    /// just restarted and won an election never decides on a state that is behind).
    pub fn acting_leader(&self) -> bool {
        self.is_leader() && self.has_quorum() && self.applied_own_term()
    }

    fn applied_own_term(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.last_applied
            .is_some_and(|l| l.leader_id.term == m.current_term)
    }

    /// This node's last applied log index.
    pub fn applied_index(&self) -> u64 {
        self.raft
            .metrics()
            .borrow()
            .last_applied
            .map(|l| l.index)
            .unwrap_or(0)
    }

    /// The leader's id and address, when one is known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.metrics();
        let id = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())?;
        Some((id, addr))
    }

    /// Where a write or a report from this member goes: here when it leads, else to the
    /// leader it knows. The one decision behind the client calls a follower forwards,
    /// the agent's reports and its heartbeats.
    pub fn route(&self) -> OpResult<Route> {
        if self.is_leader() {
            return Ok(Route::Here);
        }
        self.leader_elsewhere()
            .map(|(id, addr)| Route::Leader { id, addr })
    }

    /// The leader's id and address when it is another member.
    fn leader_elsewhere(&self) -> OpResult<(NodeId, String)> {
        let (id, addr) = self
            .leader()
            .ok_or_else(|| OpError::Unavailable("no leader elected yet; retry shortly".into()))?;
        if id == self.id {
            return Err(OpError::Unavailable(
                "leadership is changing; retry shortly".into(),
            ));
        }
        Ok((id, addr))
    }

    /// The error of a leader that has not heard from a quorum lately.
    pub fn cut_off(&self) -> OpError {
        let ms = self
            .raft
            .metrics()
            .borrow()
            .millis_since_quorum_ack
            .map(|m| format!("{m} ms"))
            .unwrap_or_else(|| "ever".into());
        OpError::Unavailable(format!(
            "node {} leads but no quorum has acknowledged it for {ms}: it is probably cut off from the cluster; ask another member",
            self.id
        ))
    }

    /// Proposes a command on this node, which must lead. Returns the entry's index and the
    /// response; a command the state refuses is `OpError::Refused`; a leader cut off from
    /// its quorum fails fast instead of waiting for a commit that cannot come.
    pub async fn propose(&self, cmd: Command) -> OpResult<(u64, Response)> {
        if self.is_leader() && !self.await_quorum().await {
            return Err(self.cut_off());
        }
        let write = self.proposer.write(cmd);
        tokio::pin!(write);
        let deadline = tokio::time::sleep(PROPOSE_TIMEOUT);
        tokio::pin!(deadline);
        // Cut off while it waits (a write that came just before the cut): fail soon after
        // the leader knows, not at the deadline. Either way the entry may still commit if
        // the network heals, like any write whose answer was lost. A tick, not a watch on
        // openraft's metrics: those change at every turn of its core loop, and waking every
        // pending write at each turn cost more than the writes themselves.
        let mut tick = tokio::time::interval(CUT_OFF_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let written = loop {
            tokio::select! {
                written = &mut write => break written,
                _ = &mut deadline => {
                    return Err(OpError::Unavailable(format!(
                        "node {}: no quorum committed the change within {} s",
                        self.id,
                        PROPOSE_TIMEOUT.as_secs()
                    )))
                }
                _ = tick.tick() => {
                    let m = self.raft.metrics();
                    let m = m.borrow();
                    if m.running_state.is_err() {
                        return Err(OpError::Unavailable(format!("node {}: raft stopped", self.id)));
                    }
                    if m.state == ServerState::Leader
                        && m.millis_since_quorum_ack.is_some_and(|ms| ms > self.quorum_patience_ms())
                    {
                        drop(m);
                        return Err(self.cut_off());
                    }
                }
            }
        };
        match written {
            Ok((index, r)) => match r {
                Response::Refused(m) => Err(OpError::Refused(m)),
                other => Ok((index, other)),
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(OpError::Unavailable(format!(
                    "not the leader any more (leader: {}); retry",
                    f.leader_id
                        .map(|l| l.to_string())
                        .unwrap_or_else(|| "unknown".into())
                )))
            }
            Err(e) => Err(OpError::Raft(e.to_string())),
        }
    }
}

/// The highest index a quorum holds on disk, on the leader (from its replication
/// progress, where the leader's own entry is what its log has flushed: its last
/// appended entry may not be yet); elsewhere the last applied one, known committed.
pub fn commit_index(m: &openraft::RaftMetrics<u64, openraft::BasicNode>) -> u64 {
    let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
    let Some(progress) = &m.replication else {
        return applied;
    };
    let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
    let mut matched: Vec<u64> = voters
        .iter()
        .map(|v| {
            progress
                .get(v)
                .and_then(|l| l.map(|l| l.index))
                .unwrap_or(0)
        })
        .collect();
    matched.sort_unstable_by(|a, b| b.cmp(a));
    // The quorum-th highest: what a majority has.
    matched
        .get(voters.len() / 2)
        .copied()
        .unwrap_or(applied)
        .max(applied)
}

/// The wall clock in ms since the epoch: stamped on commands that record when a user
/// did something (a rule's versions), never read by `apply`.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId, Membership, RaftMetrics, StoredMembership};
    use std::collections::{BTreeMap, BTreeSet};

    fn at(index: u64) -> Option<LogId<u64>> {
        Some(LogId::new(CommittedLeaderId::new(1, 1), index))
    }

    #[test]
    fn the_leader_counts_towards_the_commit_index_only_with_what_it_flushed() {
        let mut m = RaftMetrics::<u64, openraft::BasicNode>::new_initial(1);
        let voters = BTreeSet::from([1, 2, 3]);
        m.membership_config = Arc::new(StoredMembership::new(
            at(1),
            Membership::new(vec![voters], None),
        ));
        m.current_leader = Some(1);
        m.last_log_index = Some(12);
        m.last_applied = at(5);
        // The leader appended 12 but flushed 8; node 2 holds 10, node 3 nothing yet.
        m.replication = Some(BTreeMap::from([(1, at(8)), (2, at(10)), (3, None)]));
        assert_eq!(commit_index(&m), 8, "a majority holds 8 on disk, not 10");
        m.replication = Some(BTreeMap::from([(1, at(12)), (2, at(10)), (3, at(9))]));
        assert_eq!(commit_index(&m), 10);
        // A follower: what it applied.
        m.replication = None;
        assert_eq!(commit_index(&m), 5);
    }
}
