//! Network set-up for a new network namespace: loopback up (inside), and the optional
//! veth pair to a host bridge (from the parent, by rtnetlink: `netlink.rs`).

use super::error::{StepError, StepResult};
use super::netlink::Rtnl;
use crate::spec::BridgeNetwork;
use std::net::IpAddr;

/// An `AF_INET` socket for the interface ioctls (`SIOCGIF*`): they read a link under
/// RCU, without the rtnl lock a netlink request waits for, and without a message to
/// build and parse (a link's netlink dump is ~2 KB of attributes and statistics).
struct IfSocket(std::os::fd::OwnedFd);

impl IfSocket {
    fn open() -> StepResult<IfSocket> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket creation.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(StepError::last("socket for the interface ioctls"));
        }
        // SAFETY: fd was just created and is owned by nothing else.
        Ok(IfSocket(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }))
    }

    /// Runs ioctl `op` on the request for link `name`; returns the request as the
    /// kernel left it.
    fn ioctl(
        &self,
        name: &str,
        op: libc::Ioctl,
        mut req: libc::ifreq,
    ) -> std::io::Result<libc::ifreq> {
        use std::os::fd::AsRawFd;
        if name.len() >= req.ifr_name.len() {
            return Err(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        for (i, b) in name.bytes().enumerate() {
            req.ifr_name[i] = b as libc::c_char;
        }
        // SAFETY: the SIOCGIF*/SIOCSIFFLAGS requests read and write the ifreq we own.
        if unsafe { libc::ioctl(self.0.as_raw_fd(), op, &mut req) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(req)
    }

    /// The flags of link `name`.
    fn flags(&self, name: &str) -> std::io::Result<libc::c_short> {
        let req = self.ioctl(name, libc::SIOCGIFFLAGS as libc::Ioctl, zeroed_ifreq())?;
        // SAFETY: ifru_flags is the member SIOCGIFFLAGS fills.
        Ok(unsafe { req.ifr_ifru.ifru_flags })
    }

    /// The index, MTU and whether it is up of link `name`, if there is one.
    fn link_state(&self, name: &str) -> std::io::Result<Option<(u32, u32, bool)>> {
        let index = match self.ioctl(name, libc::SIOCGIFINDEX as libc::Ioctl, zeroed_ifreq()) {
            // SAFETY: ifru_ifindex is the member SIOCGIFINDEX fills.
            Ok(req) => unsafe { req.ifr_ifru.ifru_ifindex },
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(None),
            Err(e) => return Err(e),
        };
        let req = self.ioctl(name, libc::SIOCGIFMTU as libc::Ioctl, zeroed_ifreq())?;
        // SAFETY: ifru_mtu is the member SIOCGIFMTU fills.
        let mtu = unsafe { req.ifr_ifru.ifru_mtu };
        let up = self.flags(name)? & libc::IFF_UP as libc::c_short != 0;
        Ok(Some((index as u32, mtu as u32, up)))
    }
}

fn zeroed_ifreq() -> libc::ifreq {
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    unsafe { std::mem::zeroed() }
}

/// Brings `lo` up in the current network namespace.
pub fn loopback_up() -> StepResult<()> {
    let os = |e| StepError::os("bring loopback up", e);
    let sock = IfSocket::open()?;
    let mut req = zeroed_ifreq();
    req.ifr_ifru.ifru_flags =
        sock.flags("lo").map_err(os)? | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    sock.ioctl("lo", libc::SIOCSIFFLAGS as libc::Ioctl, req)
        .map_err(os)?;
    Ok(())
}

/// Host-side name of a container's veth (interface names are at most 15 bytes).
fn host_veth_name(pid: i32) -> String {
    format!("hcn{pid}")
}

/// `ADDRESS/PREFIX` of the definition (a plain address: a host address).
fn cidr(text: &str) -> StepResult<(IpAddr, u8)> {
    let (addr, len) = text.split_once('/').unwrap_or((text, ""));
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| StepError::msg("network address", format!("'{text}' is not an IP address")))?;
    let most = if addr.is_ipv4() { 32 } else { 128 };
    let len = if len.is_empty() {
        most
    } else {
        len.parse::<u8>()
            .ok()
            .filter(|l| *l <= most)
            .ok_or_else(|| {
                StepError::msg("network address", format!("'{text}': bad prefix length"))
            })?
    };
    Ok((addr, len))
}

/// Creates the bridge when missing (with the gateway's address on it), a veth pair with
/// one end in the container's network namespace (as `eth0`) and the other on the
/// bridge, addresses the container's end and sets its default route; all by rtnetlink.
/// A routed pair (the cluster network) is not on the bridge: the host routes the
/// container's address to its end, and the container has it as a /32 with the gateway
/// `onlink` (no bridge to cross: about a tenth more throughput, docs/benchmarks.md).
pub fn attach_bridge(pid: i32, net: &BridgeNetwork) -> StepResult<()> {
    let (address, len) = cidr(&net.address)?;
    let gateway = net
        .gateway
        .as_deref()
        .map(|g| {
            g.parse::<IpAddr>().map_err(|_| {
                StepError::msg("network gateway", format!("'{g}' is not an IP address"))
            })
        })
        .transpose()?;
    let br = net.bridge.as_str();
    let os = |what: String| move |e: std::io::Error| StepError::os(what, e);
    let mut host = Rtnl::open().map_err(os("open rtnetlink".into()))?;
    let ifs = IfSocket::open()?;
    // The bridge is there but for a node's first container: one look, no request more.
    let (bridge, mtu) = match ifs
        .link_state(br)
        .map_err(os(format!("find bridge {br}")))?
    {
        Some((index, mtu, true)) => (index, mtu),
        found => {
            if found.is_none()
                && host
                    .add_bridge(br)
                    .map_err(os(format!("create bridge {br}")))?
            {
                if let Some(gw) = gateway {
                    let index = bridge_index(&mut host, br)?;
                    // Routed: the gateway alone (the node's set-up makes the rest).
                    let len = if net.routed { 32 } else { len };
                    host.add_address(index, gw, len)
                        .map_err(os(format!("address {gw}/{len} on bridge {br}")))?;
                }
            }
            let (index, mtu) = host
                .link(br)
                .map_err(os(format!("find bridge {br}")))?
                .ok_or_else(|| StepError::msg(format!("find bridge {br}"), "not there"))?;
            host.set_up(index, None)
                .map_err(os(format!("set bridge {br} up")))?;
            (index, mtu)
        }
    };
    let veth = host_veth_name(pid);
    let master = (!net.routed).then_some(bridge);
    // The bridge's MTU: a cluster network over VXLAN has a smaller one.
    let made = match host.add_veth(&veth, "eth0", pid, mtu, master) {
        // Left by an earlier container of this pid whose namespace the kernel is still
        // tearing down (it removes a veth with its namespace, asynchronously).
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            if let Ok(Some(stale)) = host.link_index(&veth) {
                let _ = host.delete_link(stale);
            }
            host.add_veth(&veth, "eth0", pid, mtu, master)
        }
        other => other,
    };
    made.map_err(os(format!(
        "create veth {veth} on bridge {br} (eth0 in the container)"
    )))?;
    let (len, onlink) = match (net.routed, address, gateway) {
        (true, IpAddr::V4(a), Some(IpAddr::V4(gw))) => {
            // An ioctl, not a netlink dump: this is on every start's path.
            let index = ifs
                .link_state(&veth)
                .map_err(os(format!("find veth {veth}")))?
                .ok_or_else(|| StepError::msg(format!("find veth {veth}"), "not there"))?
                .0;
            host.add_host_route(a, index, Some(gw))
                .map_err(os(format!("route {a} to veth {veth}")))?;
            (32, true)
        }
        (true, ..) => {
            return Err(StepError::msg(
                "routed veth",
                "needs an IPv4 address and gateway",
            ))
        }
        (false, ..) => (len, false),
    };
    let mut inside = Rtnl::open_in(pid).map_err(os("open rtnetlink in the container".into()))?;
    let eth0 = inside
        .link_index("eth0")
        .map_err(os("find eth0 in the container".into()))?
        .ok_or_else(|| StepError::msg("find eth0 in the container", "not there"))?;
    inside.add_address(eth0, address, len).map_err(os(format!(
        "address {address}/{len} on eth0 (in the container)"
    )))?;
    inside
        .set_up(eth0, None)
        .map_err(os("set eth0 up (in the container)".into()))?;
    if let Some(gw) = gateway {
        inside
            .add_default_route(gw, onlink.then_some(eth0))
            .map_err(os(format!("default route via {gw} (in the container)")))?;
    }
    Ok(())
}

fn bridge_index(rtnl: &mut Rtnl, br: &str) -> StepResult<u32> {
    rtnl.link_index(br)
        .map_err(|e| StepError::os(format!("find bridge {br}"), e))?
        .ok_or_else(|| StepError::msg(format!("find bridge {br}"), "not there"))
}
