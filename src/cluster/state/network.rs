//! The cluster network's allocations, kept in the replicated state so the leader and
//! every member agree on them and `apply` reconciles them like containers (docs/
//! networking.md): the cluster range (set once), one subnet leased to each member while
//! it is a member (as flannel does), and one address per container of the cluster
//! network, taken when the container is recorded and given back when it is final
//! (exited, lost, forgotten) — a crash, a fencing or a lost node leaks nothing, and an
//! address is never held twice at once. A lost node's addresses come back only when the
//! leader commits it down, after its lease: by then the node itself has stopped them.
//!
//! All records live in one table keyed by kind: `range`, `lease/<node>`, `addr/<id>`
//! (a container's allocation) and `ip/<address>` (who holds an address).

use super::{ClusterState, ContainerRecord, NodeId, NodeStatus};
pub use crate::spec::net::{Ipv4Net, NetRange, CLUSTER_BRIDGE};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// A member's subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The member.
    pub node: NodeId,
    /// Its subnet.
    pub subnet: Ipv4Net,
    /// Where the next address search starts (addresses go round the subnet, so one just
    /// given back is not the next one taken).
    pub next: u64,
    /// Where the next dynamic host port search starts (0: the range's start).
    pub next_port: u16,
}

/// A container's place on the cluster network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// The container.
    pub container: String,
    /// Its node.
    pub node: NodeId,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its published ports: the node's port → the container's.
    pub ports: Vec<PortBinding>,
}

/// A port of a node forwarding to a container's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    /// The node's port.
    pub host: u16,
    /// The container's port.
    pub container: u16,
}

/// Where the cluster allocates host ports a definition leaves open (as Kubernetes'
/// NodePorts and Nomad's dynamic ports, a range no well-known service uses).
pub const DYNAMIC_PORTS: std::ops::RangeInclusive<u16> = 20000..=32767;

/// One record of the network table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetRecord {
    /// The cluster range (key `range`).
    Range(NetRange),
    /// A member's subnet (key `lease/<node>`).
    Lease(Lease),
    /// A container's allocation (key `addr/<id>`).
    Allocation(Allocation),
    /// Who holds an address (key `ip/<address>`) or a node's port (key
    /// `port/<node>/<port>`).
    Holder(String),
}

fn lease_key(node: NodeId) -> String {
    format!("lease/{node:020}")
}

fn addr_key(id: &str) -> String {
    format!("addr/{id}")
}

fn ip_key(ip: Ipv4Addr) -> String {
    format!("ip/{ip}")
}

fn port_key(node: NodeId, port: u16) -> String {
    format!("port/{node:020}/{port:05}")
}

impl ClusterState {
    /// The cluster range, once set.
    pub fn net_range(&self) -> Option<NetRange> {
        match self.network.get("range") {
            Some(NetRecord::Range(r)) => Some(*r),
            _ => None,
        }
    }

    /// A member's subnet.
    pub fn lease_of(&self, node: NodeId) -> Option<Lease> {
        match self.network.get(&lease_key(node)) {
            Some(NetRecord::Lease(l)) => Some(*l),
            _ => None,
        }
    }

    /// Every member's subnet, by node id.
    pub fn leases(&self) -> impl Iterator<Item = Lease> + '_ {
        self.network.values().filter_map(|r| match r {
            NetRecord::Lease(l) => Some(*l),
            _ => None,
        })
    }

    /// A container's address on the cluster network.
    pub fn address_of(&self, id: &str) -> Option<Ipv4Addr> {
        match self.network.get(&addr_key(id)) {
            Some(NetRecord::Allocation(a)) => Some(a.ip),
            _ => None,
        }
    }

    /// The container holding `port` of `node`.
    pub fn port_holder(&self, node: NodeId, port: u16) -> Option<&str> {
        match self.network.get(&port_key(node, port)) {
            Some(NetRecord::Holder(id)) => Some(id),
            _ => None,
        }
    }

    /// Whether `port` of `node` is free for a new container: nobody holds it, or its
    /// holder is on its way out (wanted stopped: a stop-first replacement takes its
    /// port over; the node forwards only to containers wanted running).
    pub fn port_free(&self, node: NodeId, port: u16) -> bool {
        self.port_holder(node, port).is_none_or(|id| {
            self.containers
                .get(id)
                .is_none_or(|c| !c.desired.keeps_running() || c.observed.is_final())
        })
    }

    /// A container's published ports.
    pub fn ports_of(&self, id: &str) -> &[PortBinding] {
        match self.network.get(&addr_key(id)) {
            Some(NetRecord::Allocation(a)) => &a.ports,
            _ => &[],
        }
    }

    /// Every allocation, by container id.
    pub fn allocations(&self) -> impl Iterator<Item = &Allocation> + '_ {
        self.network.values().filter_map(|r| match r {
            NetRecord::Allocation(a) => Some(a),
            _ => None,
        })
    }

    /// The network records (the store writes them, the digest covers them).
    pub fn network(&self) -> &super::Table<String, NetRecord> {
        &self.network
    }

    /// Sets the cluster range once and leases a subnet to every member; the same range
    /// again is fine, another is refused (a live range cannot move).
    pub(super) fn set_network(&mut self, cidr: &str, subnet_prefix: u8) -> Result<(), String> {
        let range = NetRange::new(cidr, subnet_prefix)?;
        match self.net_range() {
            Some(r) if r == range => return Ok(()),
            Some(r) => {
                return Err(format!(
                    "the cluster network is {} with /{} subnets; it cannot change to {} /{}",
                    r.cidr, r.subnet_prefix, range.cidr, range.subnet_prefix
                ))
            }
            None => {}
        }
        self.put_net("range".into(), Some(NetRecord::Range(range)));
        let members: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| n.status != NodeStatus::Left)
            .map(|n| n.id)
            .collect();
        for node in members {
            self.lease_subnet(node);
        }
        Ok(())
    }

    /// Leases the lowest free subnet to `node` (nothing when the range is not set, the
    /// node has one, or the range is full: its containers then run without an address).
    pub(super) fn lease_subnet(&mut self, node: NodeId) {
        let Some(range) = self.net_range() else {
            return;
        };
        if self.lease_of(node).is_some() {
            return;
        }
        let taken: std::collections::BTreeSet<Ipv4Addr> =
            self.leases().map(|l| l.subnet.addr).collect();
        let free = (0..range.subnets())
            .map(|i| range.subnet(i))
            .find(|s| !taken.contains(&s.addr));
        if let Some(subnet) = free {
            let lease = Lease {
                node,
                subnet,
                next: 2,
                next_port: 0,
            };
            self.put_net(lease_key(node), Some(NetRecord::Lease(lease)));
        }
    }

    /// A member that left gives its subnet back (its containers are lost by then).
    pub(super) fn release_subnet(&mut self, node: NodeId) {
        if self.lease_of(node).is_some() {
            self.put_net(lease_key(node), None);
        }
    }

    /// Gives `c` an address of its node's subnet when it belongs on the cluster network
    /// (its definition unshares the network and asks for no bridge of its own, and did
    /// not opt out) and the node has a subnet with a free address.
    pub(super) fn allocate_address(&mut self, c: &ContainerRecord) {
        let wants = self.definition_spec(c).is_some_and(|s| {
            s.namespaces.unshare.contains(&crate::spec::NsKind::Net)
                && s.network.cluster
                && s.network.bridge.is_none()
        });
        let Some(mut lease) = self.lease_of(c.node).filter(|_| wants) else {
            return;
        };
        if self.address_of(&c.id).is_some() {
            return;
        }
        // Hosts 2 .. size-2: 0 is the network (and the VXLAN endpoint), 1 the gateway,
        // the last the broadcast address.
        let hosts = lease.subnet.size() - 3;
        let start = lease.next.clamp(2, hosts + 1) - 2;
        let free = (0..hosts)
            .map(|k| 2 + (start + k) % hosts)
            .find(|i| !self.network.contains_key(&ip_key(lease.subnet.nth(*i))));
        let Some(i) = free else {
            return;
        };
        let ip = lease.subnet.nth(i);
        lease.next = i + 1;
        let wanted = self
            .definition_spec(c)
            .map(|s| s.ports.clone())
            .unwrap_or_default();
        let mut ports = Vec::new();
        for p in wanted {
            let host = match p.host {
                // Checked free before the container was recorded (`ports_refused`).
                Some(h) => h,
                None => {
                    let Some(h) = self.free_dynamic_port(c.node, &mut lease.next_port) else {
                        continue;
                    };
                    h
                }
            };
            self.put_net(
                port_key(c.node, host),
                Some(NetRecord::Holder(c.id.clone())),
            );
            ports.push(PortBinding {
                host,
                container: p.container,
            });
        }
        self.put_net(lease_key(c.node), Some(NetRecord::Lease(lease)));
        self.put_net(ip_key(ip), Some(NetRecord::Holder(c.id.clone())));
        let alloc = Allocation {
            container: c.id.clone(),
            node: c.node,
            ip,
            ports,
        };
        self.put_net(addr_key(&c.id), Some(NetRecord::Allocation(alloc)));
    }

    /// The next free port of the dynamic range on `node`, round the range from `next`.
    fn free_dynamic_port(&self, node: NodeId, next: &mut u16) -> Option<u16> {
        let (lo, hi) = (*DYNAMIC_PORTS.start(), *DYNAMIC_PORTS.end());
        let span = u32::from(hi - lo) + 1;
        let start = u32::from((*next).clamp(lo, hi) - lo);
        let port = (0..span)
            .map(|k| lo + ((start + k) % span) as u16)
            .find(|p| self.port_free(node, *p))?;
        *next = if port == hi { lo } else { port + 1 };
        Some(port)
    }

    /// Why `nodes` cannot take a container of `spec` now: a host port it publishes is
    /// held there (also by an earlier node of the same list; `leaving`, a container a
    /// stop-first replacement takes the place of, holds nothing).
    pub(super) fn ports_refused(
        &self,
        spec: &crate::spec::ContainerSpec,
        nodes: &[NodeId],
        leaving: Option<&str>,
    ) -> Option<String> {
        let mut taken = std::collections::BTreeSet::new();
        for node in nodes.iter().filter(|n| self.lease_of(**n).is_some()) {
            for h in spec.ports.iter().filter_map(|p| p.host) {
                let free = self.port_free(*node, h) || self.port_holder(*node, h) == leaving;
                if !free || !taken.insert((*node, h)) {
                    let by = self.port_holder(*node, h).unwrap_or("another copy");
                    return Some(format!("host port {h} of node {node} is held by {by}"));
                }
            }
        }
        None
    }

    /// Gives a container's address and ports back (it is final or forgotten).
    pub(super) fn release_address(&mut self, id: &str) {
        let Some(NetRecord::Allocation(a)) = self.network.get(&addr_key(id)).cloned() else {
            return;
        };
        self.put_net(addr_key(id), None);
        self.put_net(ip_key(a.ip), None);
        for p in a.ports {
            // Taken over by a replacement meanwhile: that one keeps it.
            if self.port_holder(a.node, p.host) == Some(id) {
                self.put_net(port_key(a.node, p.host), None);
            }
        }
    }

    /// The only writer of network records.
    fn put_net(&mut self, key: String, record: Option<NetRecord>) {
        self.touched.network.insert(key.clone());
        self.revision += 1;
        match record {
            Some(r) => self.network.insert(key, r),
            None => {
                self.network.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::state::{Command, Definition, Observed, Response};
    use crate::spec::{ContainerSpec, NsKind};
    use std::collections::{BTreeMap, BTreeSet};

    fn def(name: &str, net: bool) -> Definition {
        let mut spec = ContainerSpec::new(name, vec!["/bin/true".into()], "/r".into());
        if net {
            spec.namespaces.unshare.push(NsKind::Net);
        }
        Definition {
            name: name.into(),
            digest: format!("d-{name}"),
            text: String::new(),
            base_dir: String::new(),
            spec,
            registered_index: 0,
        }
    }

    /// A state of `nodes` members on 10.88.0.0/16 with /29 subnets (5 container
    /// addresses each: the round trip of a subnet shows quickly).
    fn cluster(nodes: u64) -> (ClusterState, u64) {
        let mut s = ClusterState::default();
        let mut i = 0;
        for n in 1..=nodes {
            i += 1;
            let add = Command::AddNode {
                id: None,
                addr: format!("10.0.0.{n}:7700"),
                labels: BTreeMap::new(),
            };
            s.apply(i, &add);
        }
        i += 1;
        let set = Command::SetNetwork {
            cidr: "10.88.0.0/16".into(),
            subnet_prefix: 29,
        };
        assert_eq!(s.apply(i, &set).0, Response::Ok);
        (s, i)
    }

    fn spawn(s: &mut ClusterState, i: &mut u64, name: &str, net: bool, node: NodeId) -> String {
        spawn_def(s, i, def(name, net), node)
    }

    fn spawn_def(s: &mut ClusterState, i: &mut u64, d: Definition, node: NodeId) -> String {
        *i += 1;
        let name = d.name.clone();
        let cmd = Command::Spawn {
            digest: format!("d-{name}"),
            definition: Some(d),
            nodes: vec![node],
            rule: None,
        };
        match s.apply(*i, &cmd).0 {
            Response::Spawned(ids) => ids[0].clone(),
            other => panic!("{other:?}"),
        }
    }

    fn exited(s: &mut ClusterState, i: &mut u64, id: &str, node: NodeId) {
        *i += 1;
        let observed = Observed::Exited {
            code: Some(0),
            oom_killed: false,
            error: None,
        };
        let cmd = Command::Observe {
            id: id.into(),
            node,
            observed,
        };
        s.apply(*i, &cmd);
    }

    #[test]
    fn members_get_subnets_and_containers_addresses_of_their_node() {
        let (mut s, mut i) = cluster(2);
        let subnets: Vec<String> = s.leases().map(|l| l.subnet.to_string()).collect();
        assert_eq!(subnets, ["10.88.0.0/29", "10.88.0.8/29"]);
        let a = spawn(&mut s, &mut i, "web", true, 2);
        assert_eq!(s.address_of(&a), Some(Ipv4Addr::new(10, 88, 0, 10)));
        let run = s.spec_of(&s.containers()[&a]).unwrap();
        let bridge = run.network.bridge.unwrap();
        assert_eq!(
            (bridge.address.as_str(), bridge.gateway.as_deref()),
            ("10.88.0.10/29", Some("10.88.0.9"))
        );
        // No network namespace of its own, or opted out: no address.
        let host = spawn(&mut s, &mut i, "host", false, 1);
        assert_eq!(s.address_of(&host), None);
        let mut alone = def("alone", true);
        alone.spec.network.cluster = false;
        let alone = spawn_def(&mut s, &mut i, alone, 1);
        assert_eq!(s.address_of(&alone), None);
        assert!(s
            .spec_of(&s.containers()[&alone])
            .unwrap()
            .network
            .bridge
            .is_none());
        // A later member gets the next subnet at once.
        i += 1;
        let add = Command::AddNode {
            id: None,
            addr: "10.0.0.3:7700".into(),
            labels: BTreeMap::new(),
        };
        s.apply(i, &add);
        assert_eq!(s.lease_of(3).unwrap().subnet.to_string(), "10.88.0.16/29");
        // The range cannot move under a running cluster; the same again is fine.
        let moved = Command::SetNetwork {
            cidr: "10.99.0.0/16".into(),
            subnet_prefix: 24,
        };
        assert!(matches!(s.apply(i + 1, &moved).0, Response::Refused(_)));
        let same = Command::SetNetwork {
            cidr: "10.88.0.0/16".into(),
            subnet_prefix: 29,
        };
        assert_eq!(s.apply(i + 2, &same).0, Response::Ok);
    }

    #[test]
    fn addresses_come_back_when_containers_end_and_go_round_the_subnet() {
        let (mut s, mut i) = cluster(1);
        let ids: Vec<String> = (0..5)
            .map(|_| spawn(&mut s, &mut i, "web", true, 1))
            .collect();
        let held: BTreeSet<Ipv4Addr> = ids.iter().filter_map(|c| s.address_of(c)).collect();
        assert_eq!(held.len(), 5, "five distinct addresses");
        // The subnet is full: a sixth runs without one rather than share.
        let sixth = spawn(&mut s, &mut i, "web", true, 1);
        assert_eq!(s.address_of(&sixth), None);
        exited(&mut s, &mut i, &ids[1], 1);
        assert_eq!(s.address_of(&ids[1]), None);
        let next = spawn(&mut s, &mut i, "web", true, 1);
        assert_eq!(s.address_of(&next), Some(Ipv4Addr::new(10, 88, 0, 3)));
        // Stopped before it started, forgotten: given back too; nothing is left.
        i += 1;
        s.apply(i, &Command::Stop { id: next.clone() });
        for id in ids.iter().chain([&sixth]) {
            exited(&mut s, &mut i, id, 1);
        }
        let all: Vec<String> = s.containers().keys().cloned().collect();
        i += 1;
        s.apply(i, &Command::Forget { ids: all });
        assert_eq!(s.allocations().count(), 0);
        assert_eq!(s.network().len(), 2, "the range and the lease");
    }

    #[test]
    fn a_lost_nodes_addresses_come_back_when_it_is_down_and_its_subnet_when_it_leaves() {
        let (mut s, mut i) = cluster(2);
        let a = spawn(&mut s, &mut i, "web", true, 2);
        assert!(s.address_of(&a).is_some());
        i += 1;
        let down = Command::SetNodeStatus {
            id: 2,
            status: NodeStatus::Down,
        };
        s.apply(i, &down);
        assert_eq!(s.address_of(&a), None);
        assert!(s.lease_of(2).is_some(), "a down node keeps its subnet");
        i += 1;
        let left = Command::SetNodeStatus {
            id: 2,
            status: NodeStatus::Left,
        };
        s.apply(i, &left);
        assert!(s.lease_of(2).is_none());
        // The subnet serves the next member.
        i += 1;
        let add = Command::AddNode {
            id: None,
            addr: "10.0.0.9:7700".into(),
            labels: BTreeMap::new(),
        };
        s.apply(i, &add);
        assert_eq!(s.lease_of(3).unwrap().subnet.to_string(), "10.88.0.8/29");
    }

    fn publishing(name: &str, ports: &[(u16, Option<u16>)]) -> Definition {
        let mut d = def(name, true);
        d.spec.ports = ports
            .iter()
            .map(|(c, h)| crate::spec::PublishedPort {
                container: *c,
                host: *h,
            })
            .collect();
        d
    }

    #[test]
    fn host_ports_are_held_once_per_node_and_handed_over_by_a_stop_first_replacement() {
        let (mut s, mut i) = cluster(2);
        let web = publishing("web", &[(80, Some(8080)), (9000, None)]);
        let a = spawn_def(&mut s, &mut i, web.clone(), 1);
        let ports = s.ports_of(&a).to_vec();
        assert_eq!(
            ports[0],
            PortBinding {
                host: 8080,
                container: 80
            }
        );
        assert_eq!(ports[1].host, *DYNAMIC_PORTS.start());
        // The same fixed port on the same node: refused, nothing recorded.
        let before = s.containers().len();
        i += 1;
        let again = Command::Spawn {
            digest: "d-web".into(),
            definition: None,
            nodes: vec![1],
            rule: None,
        };
        match s.apply(i, &again).0 {
            Response::Refused(why) => assert!(why.contains("8080") && why.contains(&a), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.containers().len(), before);
        // Twice in one batch on one node: refused too; on another node: fine.
        i += 1;
        let batch = Command::Spawn {
            digest: "d-web".into(),
            definition: None,
            nodes: vec![2, 2],
            rule: None,
        };
        assert!(matches!(s.apply(i, &batch).0, Response::Refused(_)));
        let b = spawn_def(&mut s, &mut i, web.clone(), 2);
        assert_eq!(s.ports_of(&b)[0].host, 8080);
        // Dynamic ports differ on one node.
        let dynamic = publishing("api", &[(80, None)]);
        let c = spawn_def(&mut s, &mut i, dynamic.clone(), 1);
        let d = spawn_def(&mut s, &mut i, dynamic, 1);
        assert_ne!(s.ports_of(&c)[0].host, s.ports_of(&d)[0].host);
        // A stop-first replacement takes the port over; the old one's end leaves it.
        i += 1;
        let replace = Command::Replace {
            old: a.clone(),
            digest: "d-web".into(),
            node: 1,
        };
        let new = match s.apply(i, &replace).0 {
            Response::Spawned(ids) => ids[0].clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(s.port_holder(1, 8080), Some(new.as_str()));
        exited(&mut s, &mut i, &a, 1);
        assert_eq!(s.port_holder(1, 8080), Some(new.as_str()));
        exited(&mut s, &mut i, &new, 1);
        assert_eq!(s.port_holder(1, 8080), None);
    }
}
