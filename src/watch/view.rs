//! From the replicated state to what rules see: the view of the cluster and the
//! triggers of committed events. Pure.

use crate::cluster::state::{
    ClusterState, ContainerRecord, Desired, Event, EventKind, NodeRecord, Observed,
};
use crate::spec::watch::{Trigger, ViewContainer, ViewNode, WatchView};

fn container(c: &ContainerRecord, state: &ClusterState) -> ViewContainer {
    ViewContainer {
        id: c.id.clone(),
        definition: c.definition.clone(),
        node: c.node,
        state: c.observed.name().to_string(),
        desired: match c.desired {
            Desired::Running => "running".into(),
            Desired::Stopped => "stopped".into(),
        },
        active: c.is_active(),
        exit_code: match &c.observed {
            Observed::Exited { code, .. } => *code,
            _ => None,
        },
        labels: state.labels_of(c).cloned().unwrap_or_default(),
        rule: c.rule.clone(),
    }
}

fn node(n: &NodeRecord, state: &ClusterState) -> ViewNode {
    ViewNode {
        id: n.id,
        addr: n.addr.clone(),
        state: n.status.name().to_string(),
        labels: n.labels.clone(),
        containers: state.active_on(n.id) as i64,
    }
}

/// The cluster as rules see it.
pub fn view(state: &ClusterState) -> WatchView {
    WatchView {
        containers: state
            .containers()
            .values()
            .map(|c| container(c, state))
            .collect(),
        nodes: state.nodes().values().map(|n| node(n, state)).collect(),
    }
}

/// The rule triggers of committed events (exits, losses, nodes down and up).
pub fn triggers(events: &[Event], state: &ClusterState) -> Vec<Trigger> {
    let mut out = Vec::new();
    for e in events {
        match (e.kind, &e.container, &e.node) {
            (EventKind::ContainerExited | EventKind::ContainerLost, Some(c), _) => {
                out.push(Trigger::ContainerExit(container(c, state)))
            }
            (EventKind::NodeDown, _, Some(n)) => out.push(Trigger::NodeDown(node(n, state))),
            (EventKind::NodeUp | EventKind::NodeAdded, _, Some(n)) => {
                out.push(Trigger::NodeUp(node(n, state)))
            }
            _ => {}
        }
    }
    out
}
