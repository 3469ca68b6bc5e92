//! What this node tells the leader: the observations of its agent (one report per
//! change) and its heartbeats, whose acknowledgements renew the node's lease (the
//! lease its containers' monitors obey). Both go where `Supervisor::route` says:
//! proposed here when this member leads, else to the leader's address.

use super::error::OpResult;
use super::shared::{Route, Supervisor};
use crate::cluster::state::{Command, NodeStatus, Observed};
use crate::runtime::{lease, Runtime};
use std::sync::Arc;
use std::time::Duration;

/// RPC deadline for reports.
const RPC_TIMEOUT: Duration = Duration::from_secs(2);

/// Reports an observation to the leader (proposing directly when this node leads).
pub async fn send_report(core: &Supervisor, id: &str, observed: &Observed) -> OpResult<()> {
    match core.route()? {
        Route::Here => core
            .propose(Command::Observe {
                id: id.to_string(),
                node: core.id,
                observed: observed.clone(),
            })
            .await
            .map(|_| ()),
        Route::Leader { addr, .. } => {
            core.peers
                .report(&addr, core.id, id, observed, RPC_TIMEOUT)
                .await
        }
    }
}

/// Heartbeats the leader forever, and renews this node's lease on each acknowledgement:
/// the lease runs `lease_ms` from when the heartbeat was *sent*, so it always ends
/// before the leader (which counts from when it *received* it, plus a margin) may
/// replace this node's containers. The leader renews its own only while a quorum
/// acknowledges it.
pub async fn heartbeat_loop(core: Arc<Supervisor>, runtime: Runtime) {
    let lease_file = runtime.lease_file();
    // An answer later than this cannot help the lease much; the next beat is due anyway.
    let rpc_timeout = Duration::from_millis((core.config.lease_ms / 4).max(100));
    let mut tick = tokio::time::interval(Duration::from_millis(core.config.heartbeat_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let sent = lease::now_ms();
        let applied_index = core.applied_index();
        let policy = core
            .policy_differs(core.id, &core.config.policy)
            .then_some(&core.config.policy);
        let acked = match core.route() {
            // The leader's own record: registered (and marked up again after a time
            // down) by the leader's loop; it is acknowledged by its quorum, not by itself.
            Ok(Route::Here) => {
                core.acting_leader()
                    && core
                        .state()
                        .nodes()
                        .get(&core.id)
                        .is_some_and(|n| n.status != NodeStatus::Left)
            }
            Ok(Route::Leader { addr, .. }) => match core
                .peers
                .heartbeat(&addr, core.id, applied_index, policy, rpc_timeout)
                .await
            {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!("heartbeat: {e}");
                    false
                }
            },
            Err(_) => false,
        };
        if acked {
            if let Err(e) = lease::renew(&lease_file, sent + core.config.lease_ms) {
                tracing::warn!("renew the lease in {}: {e}", lease_file.display());
            }
        }
    }
}
