//! This supervisor as every part of it sees it: the Raft node, the applied state, the
//! heartbeat bookkeeping of the leader, and the ways to reach the leader (propose here
//! when leading, a client to the leader otherwise).

use super::config::Config;
use super::error::{OpError, OpResult};
use crate::api::pb::cluster_client::ClusterClient;
use crate::api::{lazy_channel, AuthChannel};
use crate::cluster::state::{ClusterState, Command, NodeId, Response};
use crate::cluster::store::StateFeed;
use crate::cluster::Raft;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, RaftMetrics, ServerState};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The supervisor's shared state (one per process).
pub struct Node {
    /// This node's id.
    pub id: NodeId,
    /// The Raft node.
    pub raft: Raft,
    /// Applied state and events.
    pub feed: StateFeed,
    /// Settings.
    pub config: Config,
    peers: Mutex<HashMap<String, ClusterClient<AuthChannel>>>,
    /// Leader side: when each node last heartbeated (cleared when leadership is gained).
    pub heartbeats: Mutex<HashMap<NodeId, Instant>>,
    /// Leader side: since when this node leads.
    pub leading_since: Mutex<Option<Instant>>,
    /// Serializes membership changes (joins, promotions, swaps, leaves): openraft leaves
    /// a joint configuration behind when a second change overtakes a first.
    pub membership: tokio::sync::Mutex<()>,
}

/// Locks a mutex, surviving a poisoned one (its data is still consistent here: plain maps).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Node {
    /// Builds the shared state.
    pub fn new(id: NodeId, raft: Raft, feed: StateFeed, config: Config) -> Arc<Node> {
        Arc::new(Node {
            id,
            raft,
            feed,
            config,
            peers: Mutex::new(HashMap::new()),
            heartbeats: Mutex::new(HashMap::new()),
            leading_since: Mutex::new(None),
            membership: tokio::sync::Mutex::new(()),
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

    /// A client to the leader (never to this node), and its hint `ID@ADDR`.
    pub fn leader_client(&self) -> OpResult<(ClusterClient<AuthChannel>, String)> {
        let (id, addr) = self
            .leader()
            .ok_or_else(|| OpError::Unavailable("no leader elected yet; retry shortly".into()))?;
        if id == self.id {
            return Err(OpError::Unavailable(
                "leadership is changing; retry shortly".into(),
            ));
        }
        Ok((self.client_to(&addr)?, format!("{id}@{addr}")))
    }

    /// A (cached) client to a member.
    pub fn client_to(&self, addr: &str) -> OpResult<ClusterClient<AuthChannel>> {
        let mut peers = lock(&self.peers);
        if let Some(c) = peers.get(addr) {
            return Ok(c.clone());
        }
        let ch = lazy_channel(addr, &self.config.token, self.config.local_ip())
            .map_err(|e| OpError::Internal(format!("client to {addr}: {e}")))?;
        let c = ClusterClient::new(ch).max_decoding_message_size(64 << 20);
        peers.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// Records a heartbeat of `node` (leader side): from its agent, or this node's own.
    pub fn note_heartbeat(&self, node: NodeId) {
        lock(&self.heartbeats).insert(node, Instant::now());
    }

    /// Nodes the leader has not heard from lately (or not at all since it leads): no new
    /// containers go there until they heartbeat, even before their TTL runs out.
    pub fn suspects(&self) -> Vec<NodeId> {
        let window = std::time::Duration::from_millis(self.config.heartbeat_ms * 3);
        let hb = lock(&self.heartbeats);
        let now = Instant::now();
        self.state()
            .nodes
            .keys()
            .filter(|id| **id != self.id)
            .filter(|id| hb.get(id).is_none_or(|t| now.duration_since(*t) > window))
            .copied()
            .collect()
    }

    /// Proposes a command on this node, which must lead. Returns the entry's index and the
    /// response; a command the state refuses is `OpError::Refused`.
    pub async fn propose(&self, cmd: Command) -> OpResult<(u64, Response)> {
        match self.raft.client_write(cmd).await {
            Ok(r) => match r.data {
                Response::Refused(m) => Err(OpError::Refused(m)),
                other => Ok((r.log_id.index, other)),
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
