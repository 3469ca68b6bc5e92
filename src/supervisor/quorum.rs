//! Pre-vote, the way openraft 0.9 allows it: a voter stands for election only while it
//! can reach a majority of the voters. Cut off, it keeps its term instead of raising it
//! at every election timeout, so when it comes back it never deposes the healthy leader
//! the others kept (openraft 0.9 has no pre-vote phase; its `elect` switch gates the
//! election timer, which is what this drives). Reachability is a TCP connect from this
//! node's advertised address to each voter's, with a short timeout: it fails through an
//! iptables drop, a pulled cable or a dead host, and succeeds to a frozen process (whose
//! kernel still accepts), which is what "reachable network" means here.

use super::shared::Supervisor;
use crate::cluster::state::NodeId;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// How often reachability is probed.
const PROBE_EVERY: Duration = Duration::from_millis(200);
/// How long one connect may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(150);

/// Whether `addr` accepts a TCP connection from `local` within [`PROBE_TIMEOUT`].
async fn reachable(addr: &str, local: Option<IpAddr>) -> bool {
    let Ok(Some(target)) = tokio::net::lookup_host(addr).await.map(|mut a| a.next()) else {
        return false;
    };
    let socket = match target {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    };
    let Ok(socket) = socket else { return false };
    if let Some(ip) = local {
        if socket.bind(SocketAddr::new(ip, 0)).is_err() {
            return false;
        }
    }
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, socket.connect(target)).await,
        Ok(Ok(_))
    )
}

/// Runs forever: allows elections on this node only while a majority of the voters
/// (itself included) is reachable. Back in reach, it waits two election timeouts before
/// allowing them again: long enough to hear the leader's heartbeat, which resets the
/// election timer that ran out while it was cut off (otherwise it would stand at once and
/// depose a healthy leader); a leader that is really gone costs that much more.
pub async fn gate_elections(core: Arc<Supervisor>) {
    let mut allowed = true;
    let settle = Duration::from_millis(core.config.election_timeout_max_ms * 2);
    let mut in_reach_since: Option<std::time::Instant> = None;
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let m = core.metrics();
        let membership = m.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        if !voters.contains(&core.id) {
            continue;
        }
        let others: Vec<String> = voters
            .iter()
            .filter(|v| **v != core.id)
            .filter_map(|v| membership.get_node(v).map(|n| n.addr.clone()))
            .collect();
        let local = core.config.local_ip();
        let mut probes = tokio::task::JoinSet::new();
        for addr in others {
            probes.spawn(async move { reachable(&addr, local).await });
        }
        let mut reached = 1;
        while let Some(r) = probes.join_next().await {
            if r.unwrap_or(false) {
                reached += 1;
            }
        }
        let majority = reached * 2 > voters.len();
        in_reach_since = match (majority, in_reach_since) {
            (true, None) => Some(std::time::Instant::now()),
            (true, since) => since,
            (false, _) => None,
        };
        let allow = majority && (allowed || in_reach_since.is_some_and(|t| t.elapsed() >= settle));
        if allow != allowed {
            core.raft.runtime_config().elect(allow);
            if allow {
                tracing::info!("a majority of the voters is reachable again: elections allowed");
            } else {
                tracing::warn!(
                    "only {reached} of {} voters reachable: no elections from this node (its term stays)",
                    voters.len()
                );
            }
            allowed = allow;
        }
    }
}
