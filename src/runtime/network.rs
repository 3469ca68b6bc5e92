//! This host's end of the cluster network, by rtnetlink (docs/networking.md): the
//! bridge that holds the gateway address of its subnet (its containers' veths are
//! routed, not its ports: `launcher::network`),
//! forwarding on, and a route to every other member's subnet — host-gw (via the
//! member's address: the members share a link) or VXLAN (through a kernel VXLAN device:
//! a permanent neighbour and forwarding entry per member, as flannel does, MTU the
//! underlay's less 50). The routes carry [`ROUTE_PROTOCOL`], so the node finds and
//! removes the ones it put there when a member leaves or after a restart.

use crate::launcher::netlink::{Rtnl, Vxlan};
use crate::spec::net::{Ipv4Net, NetRange, CLUSTER_BRIDGE};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr};

/// The mark of this program's routes (the kernel's route protocol field; 104, unused
/// by the routing daemons' registered numbers).
pub const ROUTE_PROTOCOL: u8 = 104;

/// The VXLAN device's name.
pub const VXLAN_DEVICE: &str = "haconiwa-vx";

/// The bytes VXLAN adds to a frame (outer IPv4, UDP, VXLAN and Ethernet headers).
pub const VXLAN_OVERHEAD: u32 = 50;

/// How members' subnets are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A route via the member's address (the members share a link).
    HostGw,
    /// A VXLAN overlay over the members' addresses (any IP path between them).
    Vxlan {
        /// VXLAN network identifier.
        vni: u32,
        /// UDP port.
        port: u16,
    },
}

/// `[network]` as the file (or the `--network-*` flags) spell it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSettings {
    /// The cluster range, `10.88.0.0/16`; the network is off without one.
    pub cidr: Option<String>,
    /// Prefix length of each member's subnet (default 24).
    pub subnet_prefix: Option<u8>,
    /// `host-gw` (default: the members share a link) or `vxlan`.
    pub mode: Option<String>,
    /// Containers' MTU (default: the underlay's, less 50 with VXLAN).
    pub mtu: Option<u32>,
    /// VXLAN network identifier (default 1).
    pub vxlan_id: Option<u32>,
    /// VXLAN UDP port (default 4789).
    pub vxlan_port: Option<u16>,
    /// Answer DNS on the bridge address (default true).
    pub dns: Option<bool>,
    /// Masquerade containers' traffic to addresses beyond the range behind the member's
    /// own address (default true).
    pub masquerade: Option<bool>,
}

impl NetworkSettings {
    /// Fills every unset field of `self` from `base`.
    pub fn over(self, base: NetworkSettings) -> NetworkSettings {
        NetworkSettings {
            cidr: self.cidr.or(base.cidr),
            subnet_prefix: self.subnet_prefix.or(base.subnet_prefix),
            mode: self.mode.or(base.mode),
            mtu: self.mtu.or(base.mtu),
            vxlan_id: self.vxlan_id.or(base.vxlan_id),
            vxlan_port: self.vxlan_port.or(base.vxlan_port),
            dns: self.dns.or(base.dns),
            masquerade: self.masquerade.or(base.masquerade),
        }
    }

    /// Checks the settings; None when the network is off (no range).
    pub fn resolve(self) -> Result<Option<NetworkConfig>, String> {
        let Some(cidr) = self.cidr else {
            return Ok(None);
        };
        let range = NetRange::new(&cidr, self.subnet_prefix.unwrap_or(24))
            .map_err(|e| format!("[network] cidr/subnet_prefix: {e}"))?;
        let mode = match self.mode.as_deref().unwrap_or("host-gw") {
            "host-gw" => Mode::HostGw,
            "vxlan" => Mode::Vxlan {
                vni: self.vxlan_id.unwrap_or(1),
                port: self.vxlan_port.unwrap_or(4789),
            },
            other => return Err(format!("[network] mode: host-gw or vxlan, not '{other}'")),
        };
        if let Some(m) = self.mtu.filter(|m| !(576..=9000).contains(m)) {
            return Err(format!("[network] mtu: {m} is not between 576 and 9000"));
        }
        Ok(Some(NetworkConfig {
            range,
            mode,
            mtu: self.mtu,
            dns: self.dns.unwrap_or(true),
            masquerade: self.masquerade.unwrap_or(true),
        }))
    }
}

/// The resolved `[network]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkConfig {
    /// The cluster range and subnet size.
    pub range: NetRange,
    /// How members' subnets are reached.
    pub mode: Mode,
    /// Containers' MTU, when set.
    pub mtu: Option<u32>,
    /// Answer DNS on the bridge address.
    pub dns: bool,
    /// Masquerade traffic leaving the range.
    pub masquerade: bool,
}

/// Masquerades traffic from the cluster range to anywhere beyond it behind the
/// member's own address (an iptables rule in the nat table, added once, found again by
/// its comment): containers reach what their host reaches, as Docker's and Kubernetes'
/// do. Traffic between containers, across hosts too, keeps its addresses.
pub fn masquerade(range: Ipv4Net) -> io::Result<()> {
    let rule = |op: &str| {
        let cidr = range.to_string();
        std::process::Command::new("iptables")
            .args([
                "-w",
                "5",
                "-t",
                "nat",
                op,
                "POSTROUTING",
                "-s",
                &cidr,
                "!",
                "-d",
                &cidr,
            ])
            .args(["-m", "comment", "--comment", "haconiwa cluster network"])
            .args(["-j", "MASQUERADE"])
            .output()
    };
    let present = rule("-C")?;
    if present.status.success() {
        return Ok(());
    }
    let added = rule("-A")?;
    if added.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "iptables -t nat -A POSTROUTING -s {range} -j MASQUERADE: {}",
            String::from_utf8_lossy(&added.stderr).trim()
        )))
    }
}

/// Another member's subnet and where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    /// Its subnet.
    pub subnet: Ipv4Net,
    /// Its underlay address.
    pub address: Ipv4Addr,
}

/// This host's set-up, as made by [`set_up`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeNetwork {
    /// Its subnet.
    pub subnet: Ipv4Net,
    /// How the others are reached.
    pub mode: Mode,
    /// The VXLAN device's index (VXLAN mode).
    pub vxlan: Option<u32>,
    /// The MTU containers get (the underlay's, less the overlay's headers).
    pub mtu: u32,
}

/// The MAC address of a member's VXLAN device: derived from its subnet, so every
/// member knows every other's without asking.
pub fn vtep_mac(subnet: Ipv4Net) -> [u8; 6] {
    let o = subnet.addr.octets();
    [0x0e, 0x68, o[0], o[1], o[2], o[3]]
}

fn os(what: String) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Sets up this host's end: the bridge with the gateway address, forwarding on, and in
/// VXLAN mode the device over the link that holds `local` (MTU detected from it unless
/// `mtu` is given).
pub fn set_up(
    subnet: Ipv4Net,
    mode: Mode,
    local: Ipv4Addr,
    mtu: Option<u32>,
) -> io::Result<NodeNetwork> {
    let mut rtnl = Rtnl::open()?;
    rtnl.add_bridge(CLUSTER_BRIDGE)
        .map_err(os(format!("create bridge {CLUSTER_BRIDGE}")))?;
    let bridge = rtnl
        .link_index(CLUSTER_BRIDGE)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "bridge gone"))?;
    // The gateway alone: the subnet's other addresses are the containers', each routed
    // to its veth; one no container holds is unreachable (a late packet to a container
    // gone is refused at once and leaves no neighbour entry behind).
    let gw = subnet.gateway();
    rtnl.add_address(bridge, IpAddr::V4(gw), 32)
        .map_err(os(format!("address {gw}/32 on {CLUSTER_BRIDGE}")))?;
    rtnl.put_unreachable((subnet.addr, subnet.prefix))
        .map_err(os(format!("unreachable route for {subnet}")))?;
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(os("turn IPv4 forwarding on".into()))?;
    let (underlay, underlay_mtu) = rtnl.link_with_address(IpAddr::V4(local))?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface holds this node's address {local}"),
        )
    })?;
    let (vxlan, mtu) = match mode {
        Mode::HostGw => (None, mtu.unwrap_or(underlay_mtu)),
        Mode::Vxlan { vni, port } => {
            let mtu = mtu.unwrap_or(underlay_mtu.saturating_sub(VXLAN_OVERHEAD));
            let dev = Vxlan {
                vni,
                local,
                underlay,
                port,
                mtu,
                mac: vtep_mac(subnet),
            };
            let index = rtnl
                .add_vxlan(VXLAN_DEVICE, &dev)
                .map_err(os(format!("create VXLAN device {VXLAN_DEVICE}")))?;
            rtnl.add_address(index, IpAddr::V4(subnet.addr), 32)
                .map_err(os(format!("address {} on {VXLAN_DEVICE}", subnet.addr)))?;
            rtnl.set_up(index, None)?;
            (Some(index), mtu)
        }
    };
    rtnl.set_mtu(bridge, mtu)
        .map_err(os(format!("MTU {mtu} on {CLUSTER_BRIDGE}")))?;
    rtnl.set_up(bridge, None)?;
    Ok(NodeNetwork {
        subnet,
        mode,
        vxlan,
        mtu,
    })
}

/// Makes the routes to the other members' subnets what `peers` says: adds or replaces
/// theirs (and, in VXLAN mode, their neighbour and forwarding entries), removes the
/// routes this program put there for anyone else (and the VXLAN entries of `before`'s
/// members no longer there).
pub fn sync_peers(node: &NodeNetwork, peers: &[Peer], before: &[Peer]) -> io::Result<()> {
    let mut rtnl = Rtnl::open()?;
    if let Some(dev) = node.vxlan {
        for p in before.iter().filter(|p| !peers.contains(p)) {
            let mac = vtep_mac(p.subnet);
            rtnl.put_fdb(dev, mac, p.address, true)
                .map_err(os(format!("remove VXLAN forwarding entry {}", p.address)))?;
            rtnl.delete_neighbour(dev, p.subnet.addr)
                .map_err(os(format!("remove VXLAN neighbour {}", p.subnet.addr)))?;
        }
    }
    let wanted: BTreeMap<(Ipv4Addr, u8), &Peer> = peers
        .iter()
        .filter(|p| p.subnet != node.subnet)
        .map(|p| ((p.subnet.addr, p.subnet.prefix), p))
        .collect();
    for route in rtnl.routes(ROUTE_PROTOCOL)? {
        let dst = route.attributes.iter().find_map(|a| match a {
            netlink_packet_route::route::RouteAttribute::Destination(
                netlink_packet_route::route::RouteAddress::Inet(d),
            ) => Some(*d),
            _ => None,
        });
        let keep =
            dst.is_some_and(|d| wanted.contains_key(&(d, route.header.destination_prefix_length)));
        if !keep {
            rtnl.delete_route(route)
                .map_err(os("remove a route of a member gone".into()))?;
        }
    }
    for p in wanted.values() {
        let dst = (p.subnet.addr, p.subnet.prefix);
        match (node.mode, node.vxlan) {
            (Mode::Vxlan { .. }, Some(dev)) => {
                let mac = vtep_mac(p.subnet);
                rtnl.put_fdb(dev, mac, p.address, false)
                    .map_err(os(format!("VXLAN forwarding entry for {}", p.address)))?;
                rtnl.put_neighbour(dev, p.subnet.addr, mac)
                    .map_err(os(format!("VXLAN neighbour {}", p.subnet.addr)))?;
                rtnl.put_route(dst, p.subnet.addr, Some(dev), ROUTE_PROTOCOL)
            }
            _ => rtnl.put_route(dst, p.address, None, ROUTE_PROTOCOL),
        }
        .map_err(os(format!("route to {} via {}", p.subnet, p.address)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vtep_macs_are_local_unicast_and_differ_by_subnet() {
        let a = vtep_mac(Ipv4Net::parse("10.88.1.0/24").unwrap());
        let b = vtep_mac(Ipv4Net::parse("10.88.2.0/24").unwrap());
        assert_ne!(a, b);
        // Locally administered, unicast.
        assert_eq!(a[0] & 0b11, 0b10);
    }
}
