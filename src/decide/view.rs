//! From the replicated state to what rules see: the view of the cluster and the
//! triggers of committed events. Pure.

use crate::cluster::state::{
    ClusterState, ContainerRecord, Event, EventKind, NodeRecord, Observed,
};
use crate::spec::watch::{ClusterView, CountFilter, Trigger, ViewContainer, ViewNode};
use std::sync::Arc;

fn container(c: &ContainerRecord, state: &ClusterState) -> ViewContainer {
    ViewContainer {
        id: c.id.clone(),
        definition: c.definition.clone(),
        node: c.node,
        state: c.observed.name().to_string(),
        desired: c.desired.name().into(),
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

/// The cluster as rules see it: the replicated state itself (an `Arc`, shared, never
/// copied), counted from its index, listed only when a rule reads a list.
pub struct StateView(pub Arc<ClusterState>);

impl ClusterView for StateView {
    fn count(&self, filter: CountFilter) -> i64 {
        let s = &self.0;
        let n = match filter {
            CountFilter::All => s.active(),
            CountFilter::Definition(d) => s.active_of(d),
            CountFilter::Labels(want) => s
                .definitions()
                .values()
                .filter(|d| want.iter().all(|(k, v)| d.spec.labels.get(k) == Some(v)))
                .map(|d| s.active_with(&d.digest))
                .sum(),
        };
        n as i64
    }

    fn containers(&self) -> Vec<ViewContainer> {
        self.0
            .containers()
            .values()
            .map(|c| container(c, &self.0))
            .collect()
    }

    fn nodes(&self) -> Vec<ViewNode> {
        self.0.nodes().values().map(|n| node(n, &self.0)).collect()
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
