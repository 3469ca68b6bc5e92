//! Published ports: this member listens on the host ports the state gives its running
//! containers and forwards each connection to the container's address and port.
//!
//! A userspace proxy (as Docker's `docker-proxy`, kube-proxy's first mode) rather than
//! DNAT rules: it answers on every address of the host, loopback included (DNAT does not
//! see a host's own connections to 127.0.0.1 without `route_localnet`); it leaves no
//! kernel rule behind when the supervisor dies (its sockets close with it) and costs a
//! container's start nothing. The price: a copy through user space per connection (the
//! figures are in docs/benchmarks.md), the container sees its node's bridge address as
//! the peer, and connections through a port end when the supervisor restarts.

use super::super::shared::Supervisor;
use crate::cluster::state::ClusterState;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What this member forwards: host port → the container's address and port.
pub fn wanted(state: &ClusterState, node: u64) -> BTreeMap<u16, SocketAddr> {
    state
        .allocations()
        .filter(|a| a.node == node && !a.ports.is_empty())
        .filter(|a| {
            state
                .containers()
                .get(&a.container)
                .is_some_and(|c| c.desired.keeps_running() && c.observed.running_pid().is_some())
        })
        .flat_map(|a| {
            a.ports
                .iter()
                .map(move |p| (p.host, SocketAddr::from((a.ip, p.container))))
        })
        .collect()
}

/// Forwards connections of `listener` to `target` until aborted.
async fn forward(listener: TcpListener, target: SocketAddr) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = inbound.set_nodelay(true);
            match TcpStream::connect(target).await {
                Ok(mut outbound) => {
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Err(e) => tracing::debug!("published port to {target}: {e}"),
            }
        });
    }
}

/// Keeps the listeners what the state says, for as long as the process runs.
pub async fn run(core: Arc<Supervisor>) {
    let mut rx = core.feed.state.clone();
    let mut open: BTreeMap<u16, (SocketAddr, JoinHandle<()>)> = BTreeMap::new();
    loop {
        let want = {
            let state = rx.borrow_and_update().1.clone();
            wanted(&state, core.id)
        };
        open.retain(|port, (target, task)| {
            let keep = want.get(port) == Some(target);
            if !keep {
                task.abort();
            }
            keep
        });
        for (port, target) in want {
            if open.contains_key(&port) {
                continue;
            }
            match TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).await {
                Ok(l) => {
                    tracing::info!("published port {port} -> {target}");
                    open.insert(port, (target, tokio::spawn(forward(l, target))));
                }
                // Held by another program of the host: tried again at the next change.
                Err(e) => tracing::warn!("publish port {port} (to {target}): {e}"),
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
