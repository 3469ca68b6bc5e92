//! The cluster network on this member (docs/networking.md): its settings (`[network]`),
//! the leader setting the range in the replicated state, the node's plumbing kept in
//! step with the members' subnets (`runtime::network`, by netlink), what a container of
//! the cluster network gets besides its address (a `resolv.conf` naming this member's
//! DNS responder), and the responder itself (`dns.rs`).

pub mod dns;
pub mod ports;

use super::shared::Supervisor;
use crate::cluster::state::{ClusterState, Command, ContainerRecord, NodeStatus};
use crate::runtime::network::{self as plumbing, NodeNetwork, Peer};
use crate::spec::{ContainerSpec, MountPoint};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long the loop waits for a change of the state before it looks again.
const RESYNC: Duration = Duration::from_secs(10);

/// The leader's part: the range of its settings into the state when it has none (a
/// member whose settings differ keeps the state's, with a warning at its start).
pub async fn set_range(core: &Supervisor, state: &ClusterState) {
    let Some(net) = core.config.network else {
        return;
    };
    if state.net_range().is_some() {
        return;
    }
    let cmd = Command::SetNetwork {
        cidr: net.range.cidr.to_string(),
        subnet_prefix: net.range.subnet_prefix,
    };
    if let Err(e) = core.propose(cmd).await {
        tracing::warn!("set the cluster network's range: {e}");
    }
}

/// The members' subnets and where they are (every member but those that left).
fn peers(state: &ClusterState) -> Vec<Peer> {
    let mut peers: Vec<Peer> = state
        .leases()
        .filter_map(|l| {
            let n = state.nodes().get(&l.node)?;
            if n.status == NodeStatus::Left {
                return None;
            }
            let host = n.addr.rsplit_once(':').map_or(n.addr.as_str(), |(h, _)| h);
            Some(Peer {
                subnet: l.subnet,
                address: host.trim_matches(['[', ']']).parse().ok()?,
            })
        })
        .collect();
    peers.sort();
    peers
}

/// Keeps this host's end of the network in step with the state: set up once the
/// member has its subnet, routes redone whenever the members' subnets change (retried
/// every few seconds after a failure). Runs forever when the network is on.
pub async fn run(core: Arc<Supervisor>) {
    let Some(net) = core.config.network else {
        return;
    };
    let Some(local) = core.config.local_ip().and_then(|ip| match ip {
        std::net::IpAddr::V4(a) => Some(a),
        _ => None,
    }) else {
        tracing::error!(
            "the cluster network needs this node's IPv4 address (advertise), not {}",
            core.config.advertise
        );
        return;
    };
    tokio::spawn(ports::run(core.clone()));
    let mut rx = core.feed.state.clone();
    let mut node: Option<NodeNetwork> = None;
    let mut routed: Option<Vec<Peer>> = None;
    let mut dns_started = false;
    loop {
        let state = rx.borrow_and_update().1.clone();
        if let Some(range) = state.net_range().filter(|r| *r != net.range) {
            tracing::warn!(
                "the cluster network is {} (/{} subnets), not {} as configured here: using the cluster's",
                range.cidr, range.subnet_prefix, net.range.cidr
            );
        }
        let lease = state.lease_of(core.id);
        if let Some(lease) = lease.filter(|l| node.is_none_or(|n| n.subnet != l.subnet)) {
            let (mtu, range) = (net.mtu, state.net_range().map(|r| r.cidr));
            let made = tokio::task::spawn_blocking(move || {
                let made = plumbing::set_up(lease.subnet, net.mode, local, mtu)?;
                if let Some(range) = range.filter(|_| net.masquerade) {
                    plumbing::masquerade(range)?;
                }
                Ok::<_, std::io::Error>(made)
            })
            .await;
            match made {
                Ok(Ok(n)) => {
                    tracing::info!(
                        "cluster network: subnet {} on {}, MTU {}",
                        n.subnet,
                        crate::cluster::state::CLUSTER_BRIDGE,
                        n.mtu
                    );
                    node = Some(n);
                    routed = None;
                    if net.dns {
                        if let Err(e) = write_resolv_conf(&core, lease.subnet.gateway()) {
                            tracing::warn!("cluster network: resolv.conf: {e}");
                        }
                    }
                    if net.dns && !dns_started {
                        dns_started = true;
                        tokio::spawn(dns::serve(core.clone(), lease.subnet.gateway()));
                    }
                }
                Ok(Err(e)) => tracing::error!("cluster network set-up: {e}"),
                Err(e) => tracing::error!("cluster network set-up: {e}"),
            }
        }
        let mut retry = false;
        if let Some(n) = node {
            let want = peers(&state);
            if routed.as_ref() != Some(&want) {
                let (w, before) = (want.clone(), routed.clone().unwrap_or_default());
                let sync = move || plumbing::sync_peers(&n, &w, &before);
                match tokio::task::spawn_blocking(sync).await {
                    Ok(Ok(())) => routed = Some(want),
                    Ok(Err(e)) => {
                        tracing::warn!("cluster network routes: {e}");
                        retry = true;
                    }
                    Err(e) => tracing::warn!("cluster network routes: {e}"),
                }
            }
        } else if lease.is_some() {
            retry = true;
        }
        let wait = if retry {
            Duration::from_secs(3)
        } else {
            RESYNC
        };
        tokio::select! {
            r = rx.changed() => if r.is_err() { return; },
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Where the `resolv.conf` this member's cluster containers get is kept.
fn resolv_conf_path(core: &Supervisor) -> PathBuf {
    core.config
        .state_dir
        .join(format!("node-{}", core.id))
        .join("resolv.conf")
}

/// Writes the `resolv.conf` containers of this member get: its DNS responder, the
/// cluster's search domains. Once per set-up of the member's network, not per launch.
fn write_resolv_conf(core: &Supervisor, gateway: Ipv4Addr) -> std::io::Result<PathBuf> {
    let path = resolv_conf_path(core);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = format!(
        "# written by haconiwa: this node answers the cluster's names\nnameserver {gateway}\nsearch {} {}\noptions ndots:1\n",
        dns::SERVICE_DOMAIN, dns::CONTAINER_DOMAIN
    );
    crate::runtime::state::write_atomic(&path, text.as_bytes())?;
    Ok(path)
}

/// The spec a container of this member runs (`ClusterState::spec_of`), and on the
/// cluster network a `resolv.conf` naming this member's DNS responder.
pub fn container_spec(
    core: &Supervisor,
    state: &ClusterState,
    c: &ContainerRecord,
) -> Option<ContainerSpec> {
    let mut spec = state.spec_of(c)?;
    let gateway = spec
        .network
        .bridge
        .as_ref()
        .filter(|b| b.bridge == crate::cluster::state::CLUSTER_BRIDGE)
        .and_then(|b| b.gateway.as_deref()?.parse::<Ipv4Addr>().ok());
    let dns = core.config.network.is_some_and(|n| n.dns);
    if let Some(gw) = gateway.filter(|_| dns) {
        let taken = spec.mounts.iter().any(|m| m.target == "/etc/resolv.conf");
        // Written at the member's set-up; a launch that comes first writes it.
        let path = resolv_conf_path(core);
        let ready = if path.exists() {
            Ok(path)
        } else {
            write_resolv_conf(core, gw)
        };
        match ready {
            Ok(path) if !taken => spec.mounts.push(MountPoint {
                source: path.display().to_string(),
                target: "/etc/resolv.conf".into(),
                fstype: None,
                options: None,
                readonly: true,
                noexec: false,
                restrict: false,
                propagation: None,
            }),
            Ok(_) => {}
            Err(e) => tracing::warn!("resolv.conf for {}: {e}", c.id),
        }
    }
    Some(spec)
}
