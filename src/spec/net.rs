//! IPv4 networks as the cluster network uses them (docs/networking.md): the cluster's
//! range cut into one subnet per member, and the name of the bridge a member's cluster
//! containers join. Plain data, shared by the replicated state (which allocates), the
//! node's plumbing and the DNS responder.

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// The name of the bridge each member's cluster containers join (its gateway address
/// is the first of the member's subnet).
pub const CLUSTER_BRIDGE: &str = "haconiwa0";

/// An IPv4 network: its first address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ipv4Net {
    /// The network address (host bits zero).
    pub addr: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

impl Ipv4Net {
    /// Parses `a.b.c.d/n` (host bits must be zero).
    pub fn parse(text: &str) -> Result<Ipv4Net, String> {
        let bad = || format!("'{text}' is not an IPv4 network such as 10.88.0.0/16");
        let (a, p) = text.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().ok().filter(|p| *p <= 32).ok_or_else(bad)?;
        let net = Ipv4Net { addr, prefix };
        if u32::from(addr) & !net.mask() != 0 {
            return Err(format!(
                "'{text}' has host bits set (the network is {}/{prefix})",
                Ipv4Addr::from(u32::from(addr) & net.mask())
            ));
        }
        Ok(net)
    }

    /// The netmask as a number.
    pub fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }

    /// Number of addresses in it.
    pub fn size(&self) -> u64 {
        1u64 << (32 - self.prefix)
    }

    /// The `i`th address of it.
    pub fn nth(&self, i: u64) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr).wrapping_add(i as u32))
    }

    /// Whether `ip` is in it.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    /// The gateway of a member's subnet: its first host address (on the member's
    /// bridge; also where the member answers DNS).
    pub fn gateway(&self) -> Ipv4Addr {
        self.nth(1)
    }
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The cluster range and the size of the members' subnets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetRange {
    /// The whole range (`[network] cidr`).
    pub cidr: Ipv4Net,
    /// Prefix length of each member's subnet (`[network] subnet_prefix`).
    pub subnet_prefix: u8,
}

impl NetRange {
    /// Checks a range: a subnet holds at least a gateway and two containers, and the
    /// range at least one subnet.
    pub fn new(cidr: &str, subnet_prefix: u8) -> Result<NetRange, String> {
        let cidr = Ipv4Net::parse(cidr)?;
        if subnet_prefix < cidr.prefix || subnet_prefix > 29 {
            return Err(format!(
                "subnet prefix /{subnet_prefix} must lie between the range's /{} and /29",
                cidr.prefix
            ));
        }
        Ok(NetRange {
            cidr,
            subnet_prefix,
        })
    }

    /// How many subnets the range holds.
    pub fn subnets(&self) -> u64 {
        1u64 << (self.subnet_prefix - self.cidr.prefix)
    }

    /// The `i`th subnet.
    pub fn subnet(&self, i: u64) -> Ipv4Net {
        Ipv4Net {
            addr: self.cidr.nth(i << (32 - self.subnet_prefix)),
            prefix: self.subnet_prefix,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_parse_and_refuse_host_bits_and_odd_sizes() {
        let n = Ipv4Net::parse("10.88.0.0/16").unwrap();
        assert_eq!((n.size(), n.nth(257)), (65536, Ipv4Addr::new(10, 88, 1, 1)));
        assert!(n.contains(Ipv4Addr::new(10, 88, 200, 3)));
        assert!(!n.contains(Ipv4Addr::new(10, 89, 0, 1)));
        assert!(Ipv4Net::parse("10.88.0.1/16")
            .unwrap_err()
            .contains("host bits"));
        assert!(Ipv4Net::parse("10.88.0.0").is_err());
        assert!(Ipv4Net::parse("10.88.0.0/33").is_err());
        let r = NetRange::new("10.88.0.0/16", 24).unwrap();
        assert_eq!(r.subnets(), 256);
        assert_eq!(r.subnet(3).to_string(), "10.88.3.0/24");
        assert_eq!(r.subnet(3).gateway(), Ipv4Addr::new(10, 88, 3, 1));
        assert!(NetRange::new("10.88.0.0/16", 15).is_err());
        assert!(NetRange::new("10.88.0.0/16", 30).is_err());
    }
}
