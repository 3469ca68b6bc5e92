//! Which containers a rule's "kill N of this definition" stops: from the most loaded node
//! first, newest first, so what stays keeps its spread. Pure.

use crate::cluster::state::{ClusterState, NodeId};
use std::collections::HashMap;

/// The ids of up to `count` active containers of `definition` to stop.
pub fn choose(state: &ClusterState, definition: &str, count: u64) -> Vec<String> {
    let mut active: Vec<_> = state
        .containers()
        .values()
        .filter(|c| c.definition == definition && c.is_active())
        .collect();
    let mut per_node: HashMap<NodeId, usize> = HashMap::new();
    for c in &active {
        *per_node.entry(c.node).or_default() += 1;
    }
    active.sort_by_key(|c| {
        (
            std::cmp::Reverse(per_node[&c.node]),
            std::cmp::Reverse(c.created_index),
        )
    });
    active
        .into_iter()
        .take(usize::try_from(count).unwrap_or(usize::MAX))
        .map(|c| c.id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::state::{Command, Definition};
    use crate::spec::ContainerSpec;
    use std::collections::BTreeMap;

    fn state(layout: &[(u64, &str)]) -> ClusterState {
        let mut s = ClusterState::default();
        for n in 1..=3 {
            s.apply(
                n,
                &Command::AddNode {
                    id: None,
                    addr: format!("n{n}"),
                    labels: BTreeMap::new(),
                },
            );
        }
        for (i, (node, def)) in layout.iter().enumerate() {
            s.apply(
                10 + i as u64,
                &Command::Spawn {
                    digest: format!("d{def}"),
                    definition: Some(Definition {
                        name: def.to_string(),
                        digest: format!("d{def}"),
                        text: String::new(),
                        base_dir: String::new(),
                        spec: ContainerSpec::new(def, vec!["x".into()], "/r".into()),
                        registered_index: 0,
                    }),
                    nodes: vec![*node],
                    rule: None,
                },
            );
        }
        s
    }

    #[test]
    fn the_most_loaded_node_loses_first_newest_first() {
        // node 1: w-1 w-2 w-3, node 2: w-4, node 3: w-5 w-6, plus another definition on 2.
        let s = state(&[
            (1, "w"),
            (1, "w"),
            (1, "w"),
            (2, "w"),
            (3, "w"),
            (3, "w"),
            (2, "x"),
        ]);
        assert_eq!(choose(&s, "w", 1), vec!["w-3"]);
        // All of the busiest node first (by its count before any stop), then the next.
        assert_eq!(choose(&s, "w", 4), vec!["w-3", "w-2", "w-1", "w-6"]);
        assert_eq!(choose(&s, "w", 10).len(), 6);
        assert!(choose(&s, "nope", 2).is_empty());
    }
}
