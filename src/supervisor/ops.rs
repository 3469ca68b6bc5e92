//! Leader-side operations behind the API: spawn (evaluate, place, commit), join,
//! heartbeats, drain and leave.

use super::core::Core;
use super::service::note_heartbeat;
use crate::api::pb;
use crate::cluster::state::{
    ClusterState, Command, ContainerRecord, Definition, NodeId, NodeStatus, Observed, Response,
    RuleRecord,
};
use crate::watch::placement::{self, PlacementError};
use openraft::BasicNode;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use tonic::Status;

/// The definition name of a file: its stem (`sleeper` for `dir/sleeper.haco`).
pub fn definition_name(file: &str) -> String {
    Path::new(file)
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| file.to_string())
}

/// Evaluates a `.haco` text off the async threads (Rhai is CPU work, bounded).
pub async fn evaluate(
    text: String,
    file: String,
    base_dir: String,
) -> Result<crate::spec::ContainerSpec, Status> {
    tokio::task::spawn_blocking(move || {
        let base = (!base_dir.is_empty()).then(|| Path::new(&base_dir).to_path_buf());
        crate::spec::load_str(&text, &file, base.as_deref())
    })
    .await
    .map_err(|e| Status::internal(format!("evaluate definition: {e}")))?
    .map_err(|e| Status::invalid_argument(e.to_string()))
}

fn placement_status(e: PlacementError) -> Status {
    match e {
        PlacementError::NoSuchNode(_) => Status::invalid_argument(e.to_string()),
        _ => Status::failed_precondition(format!("cannot place the container: {e}")),
    }
}

/// Spawns from an API request: evaluate, place, commit. Returns the new record.
pub async fn spawn(core: &Core, r: pb::SpawnRequest) -> Result<ContainerRecord, Status> {
    let state = core.state();
    let definition = if !r.definition.is_empty() {
        latest_definition(&state, &r.definition).ok_or_else(|| {
            Status::not_found(format!("no registered definition '{}'", r.definition))
        })?
    } else {
        if r.haco.trim().is_empty() {
            return Err(Status::invalid_argument(
                "spawn needs a .haco text or a registered definition name",
            ));
        }
        let file = if r.file.is_empty() {
            "definition.haco".to_string()
        } else {
            r.file.clone()
        };
        Definition {
            name: definition_name(&file),
            digest: crate::spec::digest(&r.haco),
            text: r.haco.clone(),
            base_dir: r.base_dir.clone(),
        }
    };
    let file = if r.file.is_empty() {
        format!("{}.haco", definition.name)
    } else {
        r.file.clone()
    };
    let spec = evaluate(definition.text.clone(), file, definition.base_dir.clone()).await?;
    let req = placement::Request {
        definition: &definition.name,
        node: (r.node != 0).then_some(r.node),
        labels: r.node_labels.clone().into_iter().collect(),
        exclude: if r.node != 0 {
            Vec::new()
        } else {
            core.suspects()
        },
    };
    let node = placement::place(&state, &req).map_err(placement_status)?;
    commit_spawn(core, definition, spec, node, None).await
}

/// Commits a spawn decided here and returns the record.
pub async fn commit_spawn(
    core: &Core,
    definition: Definition,
    spec: crate::spec::ContainerSpec,
    node: NodeId,
    rule: Option<String>,
) -> Result<ContainerRecord, Status> {
    let (_, resp) = core
        .propose(Command::Spawn {
            definition,
            spec,
            node,
            rule,
        })
        .await?;
    let Response::Container(id) = resp else {
        return Err(Status::internal("spawn returned no container id"));
    };
    core.state()
        .containers
        .get(&id)
        .cloned()
        .ok_or_else(|| Status::internal(format!("container {id} missing after commit")))
}

/// The newest registered definition of a name.
pub fn latest_definition(state: &ClusterState, name: &str) -> Option<Definition> {
    let newest = state
        .containers
        .values()
        .filter(|c| c.definition == name)
        .max_by_key(|c| c.created_index)
        .and_then(|c| state.definitions.get(&c.digest));
    newest
        .or_else(|| state.definitions.values().find(|d| d.name == name))
        .cloned()
}

/// Registers a node (allocating an id when asked) and adds it as a Raft learner.
pub async fn join(core: &Core, r: pb::JoinRequest) -> Result<NodeId, Status> {
    if r.addr.trim().is_empty() {
        return Err(Status::invalid_argument("join needs the node's address"));
    }
    let labels: BTreeMap<String, String> = r.labels.into_iter().collect();
    let (_, resp) = core
        .propose(Command::AddNode {
            id: (r.node_id != 0).then_some(r.node_id),
            addr: r.addr.clone(),
            labels,
        })
        .await?;
    let Response::Node(id) = resp else {
        return Err(Status::internal("join returned no node id"));
    };
    note_heartbeat(core, id);
    // A membership change in flight (a promotion) makes this wait its turn.
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
    Err(Status::unavailable(format!(
        "add node {id} as a learner: {last}"
    )))
}

/// A heartbeat from a node's agent (leader side): a down node comes back up.
pub async fn heartbeat(core: &Core, node: NodeId) -> Result<(), Status> {
    let state = core.state();
    let Some(n) = state.nodes.get(&node) else {
        return Err(Status::not_found(format!("no node {node}")));
    };
    note_heartbeat(core, node);
    if n.status == NodeStatus::Down {
        core.propose(Command::SetNodeStatus {
            id: node,
            status: NodeStatus::Up,
        })
        .await?;
    }
    Ok(())
}

/// Converts an agent's report.
pub fn observed_from_report(r: &pb::ReportRequest) -> Result<Observed, Status> {
    Ok(match r.state.as_str() {
        "starting" => Observed::Starting,
        "running" => Observed::Running { pid: r.pid },
        "exited" => Observed::Exited {
            code: Some(r.exit_code),
            oom_killed: r.oom_killed,
            error: None,
        },
        "failed" => Observed::Exited {
            code: None,
            oom_killed: false,
            error: Some(r.error.clone()),
        },
        other => {
            return Err(Status::invalid_argument(format!(
                "unknown container state '{other}'"
            )))
        }
    })
}

/// Moves every active container off `node`: a copy is placed elsewhere first, then the
/// original is stopped. Returns how many moved.
pub async fn move_off(core: &Core, node: NodeId) -> Result<u32, Status> {
    let state = core.state();
    let mut moved = 0;
    let mut failed = Vec::new();
    let active: Vec<ContainerRecord> = state
        .containers
        .values()
        .filter(|c| c.node == node && c.is_active())
        .cloned()
        .collect();
    for c in active {
        let Some(def) = state.definitions.get(&c.digest).cloned() else {
            failed.push(format!("{}: its definition is gone", c.id));
            continue;
        };
        let mut exclude = core.suspects();
        exclude.push(node);
        let req = placement::Request {
            definition: &c.definition,
            node: None,
            labels: BTreeMap::new(),
            exclude,
        };
        let target = match placement::place(&core.state(), &req) {
            Ok(t) => t,
            Err(e) => {
                failed.push(format!("{}: {e}", c.id));
                continue;
            }
        };
        commit_spawn(core, def, c.spec.clone(), target, c.rule.clone()).await?;
        core.propose(Command::Stop { id: c.id.clone() }).await?;
        moved += 1;
    }
    if !failed.is_empty() {
        return Err(Status::failed_precondition(format!(
            "moved {moved} container(s); could not move {}",
            failed.join("; ")
        )));
    }
    Ok(moved)
}

fn existing_node(core: &Core, id: NodeId) -> Result<NodeStatus, Status> {
    match core.state().nodes.get(&id) {
        None => Err(Status::not_found(format!("no node {id}"))),
        Some(n) if n.status == NodeStatus::Left => {
            Err(Status::failed_precondition(format!("node {id} has left")))
        }
        Some(n) => Ok(n.status),
    }
}

/// Drain: no new containers there, the existing ones moved elsewhere.
pub async fn drain(core: &Core, id: NodeId) -> Result<u32, Status> {
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
pub async fn leave(core: &Core, id: NodeId) -> Result<u32, Status> {
    if id == core.id {
        // openraft 0.9 cannot hand leadership over, and a leader that removes itself
        // from the voters does not complete the change: refuse, with the way out.
        existing_node(core, id)?;
        return Err(Status::failed_precondition(format!(
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
            return Err(Status::failed_precondition(format!(
                "node {id} is the last voter; it cannot leave"
            )));
        }
        core.raft
            .change_membership(
                openraft::ChangeMembers::RemoveVoters([id].into_iter().collect()),
                false,
            )
            .await
            .map_err(|e| Status::unavailable(format!("remove voter {id}: {e}")))?;
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
            .map_err(|e| Status::unavailable(format!("remove node {id}: {e}")))?;
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
        Err(e) if id == core.id => tracing::info!("left the cluster: {}", e.message()),
        Err(e) => return Err(e),
    }
    Ok(moved)
}

/// API form of a rule.
pub fn rule_pb(r: &RuleRecord) -> pb::Rule {
    pb::Rule {
        name: r.name.clone(),
        digest: r.digest.clone(),
        last_evaluation_index: r.last_evaluation_index,
        last_error: r.last_error.clone().unwrap_or_default(),
        evaluations: r.evaluations,
        definitions: r.definitions.keys().cloned().collect(),
    }
}
