//! Where a new container goes: an up, non-draining node carrying the labels asked for,
//! whose policy allows the container (the node of its named volumes, when it mounts
//! some);
//! spread by default (fewest containers of that definition, then fewest overall, then
//! the lowest id). Pure: decided on the leader, committed as part of the spawn.

use crate::cluster::state::{ClusterState, NodeId, NodeStatus};
use crate::spec::ContainerSpec;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

/// A placement question.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    /// Definition name (for spreading).
    pub definition: &'a str,
    /// A node asked for explicitly.
    pub node: Option<NodeId>,
    /// Labels the node must carry.
    pub labels: BTreeMap<String, String>,
    /// Nodes to avoid (the one being drained).
    pub exclude: Vec<NodeId>,
    /// Host ports the container publishes: a node where one is held does not qualify,
    /// and a node takes one copy of a batch.
    pub host_ports: Vec<u16>,
    /// The container: a node whose policy refuses it does not qualify.
    pub spec: Option<&'a ContainerSpec>,
}

impl Request<'_> {
    /// The host ports a definition publishes (its fixed ones).
    pub fn ports_of(spec: &crate::spec::ContainerSpec) -> Vec<u16> {
        spec.ports.iter().filter_map(|p| p.host).collect()
    }
}

/// Why nothing fits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// The node asked for does not exist.
    #[error("no node {0} in the cluster")]
    NoSuchNode(NodeId),
    /// The node asked for cannot take containers.
    #[error("node {0} is {1}")]
    NodeUnavailable(NodeId, &'static str),
    /// No node qualifies.
    #[error("no up node{}", labels_text(.0))]
    NoCandidate(BTreeMap<String, String>),
    /// A host port it publishes is held on the node asked for, or on every node.
    #[error("host port {0} is held on {1}")]
    PortHeld(u16, String),
    /// The policy of the node asked for, or of every node otherwise fit, refuses it.
    #[error("{}", refused_text(.0))]
    PolicyRefuses(Vec<(NodeId, Vec<String>)>),
    /// It mounts a volume the cluster does not have.
    #[error("no volume {0}: create it with `haconiwa volume create {0} --node N`")]
    NoSuchVolume(String),
    /// It mounts volumes of two nodes: no node has them all.
    #[error("its volumes {0} (node {1}) and {2} (node {3}) are on different nodes")]
    VolumesApart(String, NodeId, String, NodeId),
    /// The node asked for, or the only one it can go to, does not hold its volume.
    #[error("volume {volume} is on node {home}, not on node {asked}")]
    VolumeElsewhere {
        /// The volume.
        volume: String,
        /// Its node.
        home: NodeId,
        /// The node asked for.
        asked: NodeId,
    },
}

/// The node of the volumes a container mounts (None: it mounts none, any node fits).
pub fn volume_home(
    state: &ClusterState,
    spec: Option<&ContainerSpec>,
) -> Result<Option<(String, NodeId)>, PlacementError> {
    let mut home: Option<(String, NodeId)> = None;
    for name in spec
        .into_iter()
        .flat_map(crate::spec::volumes::volume_names)
    {
        let v = state
            .volumes()
            .get(name)
            .ok_or_else(|| PlacementError::NoSuchVolume(name.to_string()))?;
        match &home {
            Some((first, node)) if *node != v.node => {
                return Err(PlacementError::VolumesApart(
                    first.clone(),
                    *node,
                    name.to_string(),
                    v.node,
                ))
            }
            Some(_) => {}
            None => home = Some((name.to_string(), v.node)),
        }
    }
    Ok(home)
}

fn refused_text(by: &[(NodeId, Vec<String>)]) -> String {
    let each: Vec<String> = by
        .iter()
        .map(|(n, why)| format!("node {n}'s policy refuses it: {}", why.join("; ")))
        .collect();
    let lead = if by.len() > 1 {
        "no node allows it: "
    } else {
        ""
    };
    format!("{lead}{}", each.join(" | "))
}

/// What the policy of `node` refuses of `spec` (nothing without a policy or a spec).
fn refusals_on(state: &ClusterState, node: NodeId, spec: Option<&ContainerSpec>) -> Vec<String> {
    match (state.policies().get(&node), spec) {
        (Some(p), Some(s)) => super::policy::refusals(p, s),
        _ => Vec::new(),
    }
}

fn labels_text(l: &BTreeMap<String, String>) -> String {
    if l.is_empty() {
        String::new()
    } else {
        let s: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(" has the labels {}", s.join(", "))
    }
}

/// Chooses a node.
pub fn place(state: &ClusterState, req: &Request) -> Result<NodeId, PlacementError> {
    Ok(place_many(state, req, 1)?[0])
}

/// Chooses nodes for `count` containers at once, each choice counting the ones before it
/// (so a batch spreads as one-by-one placement would). O(nodes + count × log nodes),
/// with the per-node counts from the state's index. `count` 0 is taken as 1.
pub fn place_many(
    state: &ClusterState,
    req: &Request,
    count: usize,
) -> Result<Vec<NodeId>, PlacementError> {
    let count = count.max(1);
    // A container of volumes goes where they are, or nowhere.
    let asked = match volume_home(state, req.spec)? {
        None => req.node,
        Some((volume, home)) => match req.node {
            Some(asked) if asked != home => {
                return Err(PlacementError::VolumeElsewhere {
                    volume,
                    home,
                    asked,
                })
            }
            _ if req.exclude.contains(&home) => {
                return Err(PlacementError::NodeUnavailable(home, "excluded"))
            }
            _ => Some(home),
        },
    };
    if let Some(id) = asked {
        let n = state
            .nodes()
            .get(&id)
            .ok_or(PlacementError::NoSuchNode(id))?;
        if n.status != NodeStatus::Up {
            return Err(PlacementError::NodeUnavailable(id, n.status.name()));
        }
        if let Some(p) = req
            .host_ports
            .iter()
            .find(|p| !ports_free(state, id, &[**p]))
        {
            return Err(PlacementError::PortHeld(*p, format!("node {id}")));
        }
        let why = refusals_on(state, id, req.spec);
        if !why.is_empty() {
            return Err(PlacementError::PolicyRefuses(vec![(id, why)]));
        }
        return Ok(vec![id; count]);
    }
    // Smallest (same definition, all, id) first.
    let mut refused = Vec::new();
    let mut heap: BinaryHeap<Reverse<(usize, usize, NodeId)>> = state
        .nodes()
        .values()
        .filter(|n| n.status == NodeStatus::Up && !req.exclude.contains(&n.id))
        .filter(|n| req.labels.iter().all(|(k, v)| n.labels.get(k) == Some(v)))
        .filter(|n| ports_free(state, n.id, &req.host_ports))
        .filter(|n| {
            let why = refusals_on(state, n.id, req.spec);
            let fits = why.is_empty();
            if !fits {
                refused.push((n.id, why));
            }
            fits
        })
        .map(|n| {
            Reverse((
                state.active_of_on(req.definition, n.id),
                state.active_on(n.id),
                n.id,
            ))
        })
        .collect();
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let Some(Reverse((same, all, id))) = heap.pop() else {
            if out.is_empty() && !refused.is_empty() {
                return Err(PlacementError::PolicyRefuses(refused));
            }
            if let Some(p) = req.host_ports.first() {
                return Err(PlacementError::PortHeld(
                    *p,
                    "every node that qualifies".into(),
                ));
            }
            return Err(PlacementError::NoCandidate(req.labels.clone()));
        };
        out.push(id);
        // A node publishes a fixed host port once.
        if req.host_ports.is_empty() {
            heap.push(Reverse((same + 1, all + 1, id)));
        }
    }
    Ok(out)
}

/// Whether `ports` are all free on `node` (a node without the cluster network
/// forwards none: nothing is held there).
fn ports_free(state: &ClusterState, node: NodeId, ports: &[u16]) -> bool {
    state.lease_of(node).is_none() || ports.iter().all(|p| state.port_free(node, *p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::state::{Command, Definition};
    use crate::spec::ContainerSpec;

    fn state() -> ClusterState {
        let mut s = ClusterState::default();
        for (i, zone) in ["a", "b", "b"].iter().enumerate() {
            let labels = [("zone".to_string(), zone.to_string())]
                .into_iter()
                .collect();
            s.apply(
                i as u64 + 1,
                &Command::AddNode {
                    id: None,
                    addr: format!("n{i}"),
                    labels,
                },
            );
        }
        s
    }

    fn spawn(s: &mut ClusterState, def: &str, node: NodeId) {
        let d = Definition {
            name: def.into(),
            digest: def.into(),
            text: String::new(),
            base_dir: String::new(),
            spec: ContainerSpec::new(def, vec!["/bin/true".into()], "/r".into()),
            registered_index: 0,
        };
        s.apply(
            100,
            &Command::Spawn {
                digest: d.digest.clone(),
                definition: Some(d),
                nodes: vec![node],
                rule: None,
            },
        );
    }

    #[test]
    fn spreads_by_definition_then_total() {
        let mut s = state();
        spawn(&mut s, "web", 1);
        spawn(&mut s, "db", 2);
        let r = Request {
            definition: "web",
            ..Default::default()
        };
        assert_eq!(place(&s, &r), Ok(3));
        spawn(&mut s, "web", 3);
        // 2 has one container (db), no web: fewest of the definition wins.
        assert_eq!(place(&s, &r), Ok(2));
    }

    #[test]
    fn honours_labels_status_and_exclusion() {
        let mut s = state();
        let mut r = Request {
            definition: "web",
            ..Default::default()
        };
        r.labels.insert("zone".into(), "b".into());
        assert_eq!(place(&s, &r), Ok(2));
        r.exclude = vec![2];
        assert_eq!(place(&s, &r), Ok(3));
        s.apply(
            5,
            &Command::SetNodeStatus {
                id: 3,
                status: NodeStatus::Draining,
            },
        );
        assert!(matches!(place(&s, &r), Err(PlacementError::NoCandidate(_))));
        let e = place(
            &s,
            &Request {
                node: Some(3),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "node 3 is draining");
        assert_eq!(
            place(
                &s,
                &Request {
                    node: Some(9),
                    ..Default::default()
                }
            ),
            Err(PlacementError::NoSuchNode(9))
        );
    }

    #[test]
    fn a_node_whose_policy_refuses_the_container_does_not_qualify() {
        let mut s = state();
        let locked = crate::spec::NodePolicy {
            allow_capabilities: Vec::new(),
            ..Default::default()
        };
        for node in [1, 3] {
            s.apply(
                10 + node,
                &Command::SetNodePolicy {
                    node,
                    policy: locked.clone(),
                },
            );
        }
        let mut spec = ContainerSpec::new("web", vec!["/bin/sh".into()], "/r".into());
        spec.capabilities.allow = vec!["CAP_SYS_ADMIN".into()];
        let r = Request {
            definition: "web",
            spec: Some(&spec),
            ..Default::default()
        };
        assert_eq!(place_many(&s, &r, 3), Ok(vec![2, 2, 2]));
        let e = place(
            &s,
            &Request {
                node: Some(1),
                ..r.clone()
            },
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "node 1's policy refuses it: capability CAP_SYS_ADMIN is not in its allow_capabilities"
        );
        let mut only_b = r.clone();
        only_b.labels.insert("zone".into(), "a".into());
        let e = place(&s, &only_b).unwrap_err();
        assert!(
            matches!(e, PlacementError::PolicyRefuses(ref by) if by.len() == 1),
            "{e}"
        );
        s.apply(
            20,
            &Command::SetNodePolicy {
                node: 2,
                policy: locked,
            },
        );
        let e = place(&s, &r).unwrap_err().to_string();
        assert!(e.starts_with("no node allows it: node 1's policy"), "{e}");
        // Without a spec (nothing to check) every node qualifies as before.
        assert!(place(&s, &Request { spec: None, ..r }).is_ok());
    }

    #[test]
    fn a_batch_spreads_as_one_by_one_placement_would() {
        let mut s = state();
        spawn(&mut s, "web", 1);
        spawn(&mut s, "db", 3);
        let r = Request {
            definition: "web",
            ..Default::default()
        };
        let batch = place_many(&s, &r, 7).unwrap();
        let mut one_by_one = Vec::new();
        for _ in 0..7 {
            let n = place(&s, &r).unwrap();
            spawn(&mut s, "web", n);
            one_by_one.push(n);
        }
        assert_eq!(batch, one_by_one);
        assert_eq!((s.active_on(1), s.active_on(2), s.active_on(3)), (3, 3, 3));
    }

    #[test]
    fn a_container_of_volumes_goes_to_their_node_or_nowhere() {
        use crate::cluster::state::{VolumeKind, VolumeRecord};
        use crate::spec::volumes::VolumeMount;
        let mut s = state();
        for (i, (name, node)) in [("a", 3), ("b", 3), ("c", 1)].into_iter().enumerate() {
            let volume = VolumeRecord {
                name: name.into(),
                node,
                kind: VolumeKind::Host,
                size: None,
                created_index: 0,
            };
            s.apply(20 + i as u64, &Command::CreateVolume { volume });
        }
        let with = |names: &[&str]| {
            let mut spec = ContainerSpec::new("web", vec!["/bin/sh".into()], "/r".into());
            for n in names {
                spec.volumes.push(VolumeMount {
                    name: n.to_string(),
                    target: format!("/{n}"),
                    readonly: false,
                });
            }
            spec
        };
        let ask_in = |s: &ClusterState, spec: &ContainerSpec, node: Option<NodeId>, n| {
            let r = Request {
                definition: "web",
                node,
                spec: Some(spec),
                ..Default::default()
            };
            place_many(s, &r, n)
        };
        let ask = |spec: &ContainerSpec, node, n| ask_in(&s, spec, node, n);
        // Spread would put 3 on three nodes: they all go to the volumes' node.
        assert_eq!(ask(&with(&["a", "b"]), None, 3), Ok(vec![3, 3, 3]));
        assert_eq!(
            ask(&with(&["a"]), Some(1), 1).unwrap_err().to_string(),
            "volume a is on node 3, not on node 1"
        );
        assert_eq!(
            ask(&with(&["a", "c"]), None, 1).unwrap_err().to_string(),
            "its volumes a (node 3) and c (node 1) are on different nodes"
        );
        assert_eq!(
            ask(&with(&["zz"]), None, 1),
            Err(PlacementError::NoSuchVolume("zz".into()))
        );
        // Its node down: nowhere else.
        s.apply(
            30,
            &Command::SetNodeStatus {
                id: 3,
                status: NodeStatus::Down,
            },
        );
        assert_eq!(
            ask_in(&s, &with(&["a"]), None, 1),
            Err(PlacementError::NodeUnavailable(3, "down"))
        );
    }
}
