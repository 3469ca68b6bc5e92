//! The rtnetlink requests of a container's network set-up, synchronous (the launcher
//! has no runtime): a bridge, a veth pair with one end in the container's network
//! namespace, addresses, links up, a default route. One request, one acknowledgement;
//! a refusal is the kernel's errno. This replaced seven `ip`/`nsenter` processes (about
//! 33 ms of a container's start, docs/benchmarks.md). The node's plumbing of the cluster
//! network (routes to the other members' subnets, the VXLAN device and its neighbours,
//! `runtime::network`) uses the same socket.

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::io;
use std::net::IpAddr;

/// What a VXLAN device is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vxlan {
    /// VXLAN network identifier.
    pub vni: u32,
    /// The node's own underlay address.
    pub local: std::net::Ipv4Addr,
    /// The underlay link's index.
    pub underlay: u32,
    /// UDP port.
    pub port: u16,
    /// The device's MTU (the underlay's less the 50 bytes of encapsulation).
    pub mtu: u32,
    /// The device's MAC address.
    pub mac: [u8; 6],
}

/// A route netlink socket of one network namespace.
pub struct Rtnl {
    socket: Socket,
    seq: u32,
}

impl Rtnl {
    /// A socket in this process's network namespace.
    pub fn open() -> io::Result<Rtnl> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Rtnl { socket, seq: 0 })
    }

    /// A socket in the network namespace of process `pid`: this thread enters it for
    /// the socket's creation only (a socket keeps the namespace it was made in).
    pub fn open_in(pid: i32) -> io::Result<Rtnl> {
        use nix::sched::{setns, CloneFlags};
        let home = std::fs::File::open("/proc/thread-self/ns/net")?;
        let theirs = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
        setns(&theirs, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        let made = Rtnl::open();
        setns(&home, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        made
    }

    /// Sends one request and reads until its acknowledgement; returns the messages
    /// that came before it (a dump's).
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let mut answers = Vec::new();
        loop {
            let (bytes, _) = self.socket.recv_from_full()?;
            let mut at = 0;
            while at < bytes.len() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[at..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = reply.header.length as usize;
                if len == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "netlink message of length 0",
                    ));
                }
                at += len;
                if reply.header.sequence_number != self.seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(answers),
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::InnerMessage(m) => answers.push(m),
                    _ => {}
                }
            }
        }
    }

    /// The index of the link `name`, if there is one.
    pub fn link_index(&mut self, name: &str) -> io::Result<Option<u32>> {
        Ok(self.link(name)?.map(|(index, _)| index))
    }

    /// The index and MTU of the link `name`, if there is one.
    pub fn link(&mut self, name: &str) -> io::Result<Option<(u32, u32)>> {
        Ok(self.link_state(name)?.map(|(index, mtu, _)| (index, mtu)))
    }

    /// The index, MTU and whether it is up of the link `name`, if there is one.
    pub fn link_state(&mut self, name: &str) -> io::Result<Option<(u32, u32, bool)>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(answers) => Ok(answers.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => {
                    let mtu = l.attributes.iter().find_map(|a| match a {
                        LinkAttribute::Mtu(m) => Some(*m),
                        _ => None,
                    });
                    let up = l.header.flags.contains(LinkFlags::Up);
                    Some((l.header.index, mtu.unwrap_or(1500), up))
                }
                _ => None,
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a bridge `name`; one already there is fine (false).
    pub fn add_bridge(&mut self, name: &str) -> io::Result<bool> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        match self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates a veth pair with `mtu`: `host` here, up and, with `master`, a port of
    /// that bridge (one request: the kernel applies both as it creates the link), and
    /// `peer` (down) in the network namespace of `pid`.
    pub fn add_veth(
        &mut self,
        host: &str,
        peer: &str,
        pid: i32,
        mtu: u32,
        master: Option<u32>,
    ) -> io::Result<()> {
        // The peer cannot be set up in the same request (the kernel opens it before
        // the pair is linked: ENOTCONN); its namespace's socket does that.
        let mut other = LinkMessage::default();
        other
            .attributes
            .push(LinkAttribute::IfName(peer.to_string()));
        other.attributes.push(LinkAttribute::NetNsPid(pid as u32));
        other.attributes.push(LinkAttribute::Mtu(mtu));
        // One queue per end, asked for: otherwise the kernel makes one per CPU, then
        // cuts them to one on a registered device, waiting for an RCU grace period per
        // end under the rtnl lock (`veth_init_queues`; docs/benchmarks.md).
        other.attributes.push(LinkAttribute::NumTxQueues(1));
        other.attributes.push(LinkAttribute::NumRxQueues(1));
        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes.push(LinkAttribute::IfName(host.to_string()));
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        if let Some(m) = master {
            msg.attributes.push(LinkAttribute::Controller(m));
        }
        msg.attributes.push(LinkAttribute::NumTxQueues(1));
        msg.attributes.push(LinkAttribute::NumRxQueues(1));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(other))),
        ]));
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map(drop)
    }

    /// Sets link `index` up, and when `master` is given, a port of that bridge.
    pub fn set_up(&mut self, index: u32, master: Option<u32>) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        if let Some(m) = master {
            msg.attributes.push(LinkAttribute::Controller(m));
        }
        self.request(RouteNetlinkMessage::SetLink(msg), 0).map(drop)
    }

    /// Adds `address/prefix` to link `index`; the same address already there is fine.
    pub fn add_address(&mut self, index: u32, address: IpAddr, prefix: u8) -> io::Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = family(address);
        msg.header.prefix_len = prefix;
        msg.header.index = index;
        if address.is_ipv4() {
            msg.attributes.push(AddressAttribute::Local(address));
        }
        msg.attributes.push(AddressAttribute::Address(address));
        match self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            other => other.map(drop),
        }
    }

    /// Adds the default route via `gateway`; with `dev`, out of that link and `onlink`
    /// (the gateway is not in any subnet of the link: a routed veth's).
    pub fn add_default_route(&mut self, gateway: IpAddr, dev: Option<u32>) -> io::Result<()> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(gateway);
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        msg.attributes.push(RouteAttribute::Gateway(match gateway {
            IpAddr::V4(a) => RouteAddress::Inet(a),
            IpAddr::V6(a) => RouteAddress::Inet6(a),
        }));
        if let Some(index) = dev {
            msg.attributes.push(RouteAttribute::Oif(index));
            msg.header.flags = netlink_packet_route::route::RouteFlags::Onlink;
        }
        self.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Adds the route to host `dst` out of link `dev` (scope link), answering from
    /// `src`: a routed veth's container.
    pub fn add_host_route(
        &mut self,
        dst: std::net::Ipv4Addr,
        dev: u32,
        src: Option<std::net::Ipv4Addr>,
    ) -> io::Result<()> {
        let mut msg = ipv4_route((dst, 32), RouteProtocol::Boot, RouteType::Unicast);
        msg.header.scope = RouteScope::Link;
        msg.attributes.push(RouteAttribute::Oif(dev));
        if let Some(a) = src {
            msg.attributes
                .push(RouteAttribute::PrefSource(RouteAddress::Inet(a)));
        }
        self.replace_route(msg)
    }

    /// Makes `dst/prefix` unreachable (ICMP to the sender at once, no neighbour lookup):
    /// the addresses of a member's subnet no container holds.
    pub fn put_unreachable(&mut self, dst: (std::net::Ipv4Addr, u8)) -> io::Result<()> {
        self.replace_route(ipv4_route(dst, RouteProtocol::Boot, RouteType::Unreachable))
    }

    /// Adds a route, or replaces the one to the same destination.
    fn replace_route(&mut self, msg: RouteMessage) -> io::Result<()> {
        self.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | netlink_packet_core::NLM_F_REPLACE,
        )
        .map(drop)
    }

    /// The routes of the main table that `protocol` marks (the ones this program put
    /// there): their destination, prefix length and gateway.
    pub fn routes(&mut self, protocol: u8) -> io::Result<Vec<RouteMessage>> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        let answers = self.request(
            RouteNetlinkMessage::GetRoute(msg),
            netlink_packet_core::NLM_F_DUMP,
        )?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r)
                    if r.header.protocol == RouteProtocol::Other(protocol)
                        && r.header.table == RouteHeader::RT_TABLE_MAIN =>
                {
                    Some(r)
                }
                _ => None,
            })
            .collect())
    }

    /// Adds (or replaces) the route to `dst/prefix` via `gateway`, marked `protocol`;
    /// with `dev`, out of that link and `onlink` (the gateway needs no route of its own:
    /// a VXLAN endpoint).
    pub fn put_route(
        &mut self,
        dst: (std::net::Ipv4Addr, u8),
        gateway: std::net::Ipv4Addr,
        dev: Option<u32>,
        protocol: u8,
    ) -> io::Result<()> {
        let mut msg = ipv4_route(dst, RouteProtocol::Other(protocol), RouteType::Unicast);
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        if let Some(index) = dev {
            msg.attributes.push(RouteAttribute::Oif(index));
            msg.header.flags = netlink_packet_route::route::RouteFlags::Onlink;
        }
        self.replace_route(msg)
    }

    /// Deletes a route as `routes` listed it.
    pub fn delete_route(&mut self, route: RouteMessage) -> io::Result<()> {
        self.request(RouteNetlinkMessage::DelRoute(route), 0)
            .map(drop)
    }

    /// Creates the VXLAN device `name` (no learning: the neighbours and forwarding
    /// entries are written by the node, one per member), sending from `local` over link
    /// `underlay`, with `mac` and `mtu`; one already there is deleted first (its
    /// settings may be stale).
    pub fn add_vxlan(&mut self, name: &str, vxlan: &Vxlan) -> io::Result<u32> {
        if let Some(old) = self.link_index(name)? {
            self.delete_link(old)?;
        }
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::Mtu(vxlan.mtu));
        msg.attributes
            .push(LinkAttribute::Address(vxlan.mac.to_vec()));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vxlan),
            LinkInfo::Data(InfoData::Vxlan(vec![
                InfoVxlan::Id(vxlan.vni),
                InfoVxlan::Local(vxlan.local),
                InfoVxlan::Link(vxlan.underlay),
                InfoVxlan::Port(vxlan.port),
                InfoVxlan::Learning(false),
            ])),
        ]));
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)?;
        self.link_index(name)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "vxlan device gone"))
    }

    /// A permanent neighbour entry: `ip` is at `mac` on link `index`.
    pub fn put_neighbour(
        &mut self,
        index: u32,
        ip: std::net::Ipv4Addr,
        mac: [u8; 6],
    ) -> io::Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.ifindex = index;
        msg.header.state = NeighbourState::Permanent;
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        self.request(
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_CREATE | netlink_packet_core::NLM_F_REPLACE,
        )
        .map(drop)
    }

    /// The IPv4 neighbour entries of link `index`: their addresses.
    pub fn neighbours(&mut self, index: u32) -> io::Result<Vec<std::net::Ipv4Addr>> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        let answers = self.request(
            RouteNetlinkMessage::GetNeighbour(msg),
            netlink_packet_core::NLM_F_DUMP,
        )?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) if n.header.ifindex == index => {
                    n.attributes.into_iter().find_map(|a| match a {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(ip),
                        _ => None,
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// Removes the neighbour entry of `ip` on link `index` (none there is fine).
    pub fn delete_neighbour(&mut self, index: u32, ip: std::net::Ipv4Addr) -> io::Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.ifindex = index;
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        match self.request(RouteNetlinkMessage::DelNeighbour(msg), 0) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            other => other.map(drop),
        }
    }

    /// A permanent forwarding entry of a VXLAN device: frames for `mac` go to `dst`
    /// (`remove`: the entry goes; none there is fine).
    pub fn put_fdb(
        &mut self,
        index: u32,
        mac: [u8; 6],
        dst: std::net::Ipv4Addr,
        remove: bool,
    ) -> io::Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = index;
        msg.header.state = NeighbourState::Permanent;
        msg.header.flags = NeighbourFlags::Own;
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
        if remove {
            return match self.request(RouteNetlinkMessage::DelNeighbour(msg), 0) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
                other => other.map(drop),
            };
        }
        self.request(
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_CREATE | netlink_packet_core::NLM_F_REPLACE,
        )
        .map(drop)
    }

    /// The link that holds address `ip`, and its MTU.
    pub fn link_with_address(&mut self, ip: IpAddr) -> io::Result<Option<(u32, u32)>> {
        let mut msg = AddressMessage::default();
        msg.header.family = family(ip);
        let answers = self.request(
            RouteNetlinkMessage::GetAddress(msg),
            netlink_packet_core::NLM_F_DUMP,
        )?;
        let index = answers.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewAddress(a)
                if a.attributes.contains(&AddressAttribute::Address(ip)) =>
            {
                Some(a.header.index)
            }
            _ => None,
        });
        let Some(index) = index else {
            return Ok(None);
        };
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        let mtu = self
            .request(RouteNetlinkMessage::GetLink(msg), 0)?
            .into_iter()
            .find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => l.attributes.into_iter().find_map(|a| match a {
                    LinkAttribute::Mtu(m) => Some(m),
                    _ => None,
                }),
                _ => None,
            })
            .unwrap_or(1500);
        Ok(Some((index, mtu)))
    }

    /// Sets the MTU of link `index`.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        self.request(RouteNetlinkMessage::SetLink(msg), 0).map(drop)
    }

    /// Deletes link `index`.
    pub fn delete_link(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.request(RouteNetlinkMessage::DelLink(msg), 0).map(drop)
    }
}

/// A main-table IPv4 route to `dst/prefix` (scope universe): what every route request
/// of the node's shares.
fn ipv4_route(
    (dst, prefix): (std::net::Ipv4Addr, u8),
    protocol: RouteProtocol,
    kind: RouteType,
) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    msg.header.destination_prefix_length = prefix;
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = protocol;
    msg.header.scope = RouteScope::Universe;
    msg.header.kind = kind;
    msg.attributes
        .push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
    msg
}

fn family(a: IpAddr) -> AddressFamily {
    match a {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}
