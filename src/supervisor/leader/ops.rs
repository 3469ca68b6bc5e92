//! What the leader does for the API and for itself: spawn (evaluate, place, commit),
//! join, heartbeats, drain, leave, and registering a rule. Typed errors (`OpError`).

use crate::cluster::state::{
    Command, ContainerRecord, Definition, NodeId, NodeStatus, Response, RuleRecord,
};
use crate::decide::placement;
use crate::supervisor::definitions::{self, definition_name};
use crate::supervisor::error::{OpError, OpResult};
use crate::supervisor::requests::{DefinitionSource, JoinRequest, RuleRequest, SpawnRequest};
use crate::supervisor::shared::{lock, Supervisor};
use openraft::BasicNode;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Spawns from an API request: evaluate (a definition new to the cluster), place,
/// commit. Returns the new record.
pub async fn spawn(core: &Supervisor, r: SpawnRequest) -> OpResult<ContainerRecord> {
    let state = core.state();
    let definition = match r.definition {
        DefinitionSource::Registered(name) => definitions::latest(&state, &name)
            .ok_or_else(|| OpError::NotFound(format!("no registered definition '{name}'")))?,
        DefinitionSource::Text(haco) => {
            if haco.text.trim().is_empty() {
                return Err(OpError::Invalid(
                    "spawn needs a .haco text or a registered definition name".into(),
                ));
            }
            definitions::resolve(&state, haco.text, haco.file, haco.base_dir).await?
        }
    };
    let req = placement::Request {
        definition: &definition.name,
        node: r.target.node,
        labels: r.target.labels,
        exclude: match r.target.node {
            Some(_) => Vec::new(),
            None => super::health::suspects(core),
        },
        host_ports: placement::Request::ports_of(&definition.spec),
        spec: Some(&definition.spec),
    };
    let node = placement::place(&state, &req)?;
    let ids = commit_spawn(core, &definition, vec![node], None).await?;
    let id = ids
        .first()
        .ok_or_else(|| OpError::Internal("spawn returned no container id".into()))?;
    core.state()
        .containers()
        .get(id)
        .cloned()
        .ok_or_else(|| OpError::Internal(format!("container {id} missing after commit")))
}

/// Commits containers of one definition on these nodes (placement decided here) as one
/// entry; returns their ids. The definition travels in the entry only if the cluster
/// does not hold it yet.
pub async fn commit_spawn(
    core: &Supervisor,
    definition: &Definition,
    nodes: Vec<NodeId>,
    rule: Option<String>,
) -> OpResult<Vec<String>> {
    let state = core.state();
    if let Some(s) =
        (definition.spec.secrets.iter()).find(|s| !state.secrets().contains_key(&s.name))
    {
        return Err(OpError::Refused(format!(
            "no secret {0}: create it with `haconiwa secret create {0} FILE`",
            s.name
        )));
    }
    let known = state.definitions().contains_key(&definition.digest);
    let (_, resp) = core
        .propose(Command::Spawn {
            digest: definition.digest.clone(),
            definition: (!known).then(|| definition.clone()),
            nodes,
            rule,
        })
        .await?;
    match resp {
        Response::Spawned(ids) => Ok(ids),
        other => Err(OpError::Internal(format!(
            "spawn returned {other:?}, not container ids"
        ))),
    }
}

/// Registers a node (allocating an id when asked) and adds it as a Raft learner.
pub async fn join(core: &Supervisor, r: JoinRequest) -> OpResult<NodeId> {
    if r.addr.trim().is_empty() {
        return Err(OpError::Invalid("join needs the node's address".into()));
    }
    // The leader's own record first (its loop registers it too, but only once it acts):
    // an id allocated before it would be the leader's.
    if !core.state().nodes().contains_key(&core.id) {
        core.propose(Command::AddNode {
            id: Some(core.id),
            addr: core.config.advertise.clone(),
            labels: core.config.labels.clone(),
        })
        .await?;
    }
    let (_, resp) = core
        .propose(Command::AddNode {
            id: r.id,
            addr: r.addr.clone(),
            labels: r.labels,
        })
        .await?;
    let Response::Node(id) = resp else {
        return Err(OpError::Internal("join returned no node id".into()));
    };
    lock(&core.liveness).heard(id, std::time::Instant::now());
    if r.outside_raft {
        return Ok(id);
    }
    // One membership change at a time (promotions, swaps, leaves wait on the same lock):
    // overlapping changes are refused by openraft ("already undergoing a configuration
    // change").
    let _change = core.membership.lock().await;
    let mut last = String::new();
    for _ in 0..50 {
        match core
            .raft
            .add_learner(
                id,
                BasicNode {
                    addr: r.addr.clone(),
                },
                false,
            )
            .await
        {
            Ok(_) => return Ok(id),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(OpError::Unavailable(format!(
        "add node {id} as a learner: {last}"
    )))
}

/// A heartbeat from a node's agent (leader side): renews its lease (by being answered)
/// and brings a down node back up. A node that stopped applying the log for longer than
/// the node TTL while the leader moved on is refused: its lease then runs out and it is
/// handled as down.
pub async fn heartbeat(
    core: &Supervisor,
    node: NodeId,
    applied: u64,
    policy: Option<crate::spec::NodePolicy>,
) -> OpResult<()> {
    let state = core.state();
    let Some(n) = state.nodes().get(&node) else {
        return Err(OpError::NotFound(format!("no node {node}")));
    };
    if n.status == NodeStatus::Left {
        return Err(OpError::Refused(format!(
            "node {node} has left the cluster"
        )));
    }
    let ttl = std::time::Duration::from_millis(core.config.node_ttl_ms);
    lock(&core.liveness)
        .heartbeat(
            node,
            applied,
            core.applied_index(),
            std::time::Instant::now(),
            ttl,
        )
        .map_err(|e| OpError::Refused(e.to_string()))?;
    if n.status == NodeStatus::Down {
        core.propose(Command::SetNodeStatus {
            id: node,
            status: NodeStatus::Up,
        })
        .await?;
    }
    if let Some(policy) = policy {
        // Rare (a node that started with another policy): committed before the beat
        // is acknowledged, so the node stops sending it once it applies the entry. A
        // failure is the next beat's to retry; it never costs the node its lease.
        if core.policy_differs(node, &policy) {
            if let Err(e) = core.propose(Command::SetNodePolicy { node, policy }).await {
                tracing::warn!("record the policy of node {node}: {e}");
            }
        }
    }
    Ok(())
}

/// Moves every active container off `node`: a copy is placed elsewhere first, then the
/// original is stopped. Returns how many moved.
pub async fn move_off(core: &Supervisor, node: NodeId) -> OpResult<u32> {
    let state = core.state();
    let mut moved = 0;
    let mut failed = Vec::new();
    let active: Vec<ContainerRecord> = state
        .containers()
        .values()
        .filter(|c| c.node == node && c.is_active())
        .cloned()
        .collect();
    for c in active {
        let Some(def) = state.definitions().get(&c.digest).cloned() else {
            failed.push(format!("{}: its definition is gone", c.id));
            continue;
        };
        let mut exclude = super::health::suspects(core);
        exclude.push(node);
        let req = placement::Request {
            definition: &c.definition,
            node: None,
            labels: BTreeMap::new(),
            exclude,
            host_ports: placement::Request::ports_of(&def.spec),
            spec: Some(&def.spec),
        };
        let target = match placement::place(&core.state(), &req) {
            Ok(t) => t,
            Err(e) => {
                failed.push(format!("{}: {e}", c.id));
                continue;
            }
        };
        commit_spawn(core, &def, vec![target], c.rule.clone()).await?;
        core.propose(Command::Stop { id: c.id.clone() }).await?;
        moved += 1;
    }
    if !failed.is_empty() {
        return Err(OpError::Refused(format!(
            "moved {moved} container(s); could not move {}",
            failed.join("; ")
        )));
    }
    Ok(moved)
}

fn existing_node(core: &Supervisor, id: NodeId) -> OpResult<NodeStatus> {
    match core.state().nodes().get(&id) {
        None => Err(OpError::NotFound(format!("no node {id}"))),
        Some(n) if n.status == NodeStatus::Left => {
            Err(OpError::Refused(format!("node {id} has left")))
        }
        Some(n) => Ok(n.status),
    }
}

/// Drain: no new containers there, the existing ones moved elsewhere.
pub async fn drain(core: &Supervisor, id: NodeId) -> OpResult<u32> {
    if existing_node(core, id)? == NodeStatus::Up {
        core.propose(Command::SetNodeStatus {
            id,
            status: NodeStatus::Draining,
        })
        .await?;
    }
    move_off(core, id).await
}

/// Leave: drain, then out of the Raft membership, then recorded as left for good.
pub async fn leave(core: &Supervisor, id: NodeId) -> OpResult<u32> {
    if id == core.id {
        // openraft 0.9 cannot hand leadership over, and a leader that removes itself
        // from the voters does not complete the change: refuse, with the way out.
        existing_node(core, id)?;
        return Err(OpError::Refused(format!(
            "node {id} is the leader and cannot remove itself: stop its supervisor (its \
             containers keep running until they are moved), then `cluster leave {id}` \
             again once another node leads"
        )));
    }
    let moved = drain(core, id).await?;
    let _change = core.membership.lock().await;
    let m = core.metrics();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    if voters.contains(&id) {
        if voters.len() == 1 {
            return Err(OpError::Refused(format!(
                "node {id} is the last voter; it cannot leave"
            )));
        }
        core.raft
            .change_membership(
                openraft::ChangeMembers::RemoveVoters([id].into_iter().collect()),
                false,
            )
            .await
            .map_err(|e| OpError::Raft(format!("remove voter {id}: {e}")))?;
    }
    if core
        .metrics()
        .membership_config
        .membership()
        .get_node(&id)
        .is_some()
    {
        core.raft
            .change_membership(
                openraft::ChangeMembers::RemoveNodes([id].into_iter().collect()),
                false,
            )
            .await
            .map_err(|e| OpError::Raft(format!("remove node {id}: {e}")))?;
    }
    // After removing itself the old leader may no longer lead: the record is best effort
    // there and the new leader's state still shows the node drained.
    match core
        .propose(Command::SetNodeStatus {
            id,
            status: NodeStatus::Left,
        })
        .await
    {
        Ok(_) => {}
        Err(e) if id == core.id => tracing::info!("left the cluster: {e}"),
        Err(e) => return Err(e),
    }
    Ok(moved)
}

/// Registers (or replaces) a rule: compiled and checked here, every `.haco` it names
/// evaluated, all committed together.
pub async fn apply_rule(core: &Supervisor, r: RuleRequest) -> OpResult<RuleRecord> {
    let file = r.file;
    let name = r.name.unwrap_or_else(|| definition_name(&file));
    crate::spec::names::check("rule", &name).map_err(|e| OpError::Invalid(e.to_string()))?;
    let (text, f) = (r.text.clone(), file.clone());
    let info = tokio::task::spawn_blocking(move || crate::spec::watch::check(&text, &f))
        .await
        .map_err(|e| OpError::Internal(format!("check the rule: {e}")))?
        .map_err(|e| OpError::Invalid(e.to_string()))?;
    let mut definitions = Vec::new();
    let mut names = BTreeMap::new();
    for h in &info.hacos {
        let Some(text) = r.hacos.get(&h.path) else {
            return Err(OpError::Invalid(format!(
                "{file}:{}:{}: {} was not sent with the rule (`haconiwa watch apply` reads it next to the .watch file)",
                h.line, h.col, h.path
            )));
        };
        let base = Path::new(&r.base_dir).join(&h.path);
        let base_dir = base
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let d = definitions::resolve(&core.state(), text.clone(), h.path.clone(), base_dir).await?;
        names.insert(h.path.clone(), d.digest.clone());
        definitions.push(d);
    }
    let rule = RuleRecord {
        name: name.clone(),
        digest: crate::spec::digest(&r.text),
        text: r.text,
        file,
        definitions: names,
        last_evaluation_index: 0,
        last_error: None,
        evaluations: 0,
    };
    core.propose(Command::ApplyRule {
        rule,
        definitions,
        applied_at_ms: crate::supervisor::shared::wall_ms(),
    })
    .await?;
    core.state()
        .rules()
        .get(&name)
        .cloned()
        .ok_or_else(|| OpError::Internal("rule missing after commit".into()))
}
