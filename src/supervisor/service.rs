//! The client API (`proto/haconiwa.proto`, service Cluster). Reads are served from this
//! member's applied state; writes run on the leader (a follower forwards them once and
//! says who the leader is).

use super::core::{lock, Core, FORWARDED_HEADER};
use super::ops;
use crate::api::pb::cluster_server::Cluster;
use crate::api::pb::*;
use crate::api::LEADER_HEADER;
use crate::cluster::state::{
    ClusterState, Command, ContainerRecord, Desired, Event as StateEvent, NodeRecord, Observed,
};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use tokio_stream::{Stream, StreamExt};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

/// The Cluster service.
pub struct ClusterService {
    /// Shared core.
    pub core: Arc<Core>,
}

/// Runs the call on the leader: returns its reply when this node is a follower.
macro_rules! on_leader {
    ($self:ident, $req:ident, $method:ident) => {
        if !$self.core.is_leader() {
            if $req.metadata().get(FORWARDED_HEADER).is_some() {
                return Err(Status::unavailable(format!(
                    "node {} is not the leader (leader: {})",
                    $self.core.id,
                    $self
                        .core
                        .leader()
                        .map(|l| format!("{}@{}", l.0, l.1))
                        .unwrap_or_else(|| "unknown".into())
                )));
            }
            let (mut client, hint) = $self.core.leader_client()?;
            let mut fwd = Request::new($req.into_inner());
            fwd.metadata_mut()
                .insert(FORWARDED_HEADER, MetadataValue::from_static("1"));
            let mut reply = client.$method(fwd).await?;
            if let Ok(v) = MetadataValue::try_from(hint.as_str()) {
                reply.metadata_mut().insert(LEADER_HEADER, v);
            }
            return Ok(reply);
        }
    };
}

/// API form of a container.
pub fn container_pb(c: &ContainerRecord) -> Container {
    let (exit_code, has_exit_code, pid, error) = match &c.observed {
        Observed::Exited { code, error, .. } => (
            code.unwrap_or(0),
            code.is_some(),
            0,
            error.clone().unwrap_or_default(),
        ),
        Observed::Running { pid } => (0, false, *pid, String::new()),
        _ => (0, false, 0, String::new()),
    };
    Container {
        id: c.id.clone(),
        name: c.spec.name.clone(),
        definition: c.definition.clone(),
        definition_digest: c.digest.clone(),
        node: c.node,
        desired: match c.desired {
            Desired::Running => "running".into(),
            Desired::Stopped => "stopped".into(),
        },
        state: c.observed.name().into(),
        exit_code,
        has_exit_code,
        pid,
        rule: c.rule.clone().unwrap_or_default(),
        error,
        created_index: c.created_index,
        labels: c.spec.labels.clone().into_iter().collect(),
    }
}

/// API form of the members: every node of the state, with its Raft role.
pub fn members_pb(core: &Core, state: &ClusterState) -> Vec<Member> {
    let m = core.metrics();
    let membership = m.membership_config.membership();
    // Voters of the newest configuration (during a change, the one being moved to).
    let voters: std::collections::BTreeSet<u64> = membership
        .get_joint_config()
        .last()
        .cloned()
        .unwrap_or_default();
    let mut out: Vec<Member> = state
        .nodes
        .values()
        .map(|n| node_pb(n, state, &voters, membership.get_node(&n.id).is_some()))
        .collect();
    // Members Raft knows that the state does not (yet).
    for (id, node) in membership.nodes() {
        if !state.nodes.contains_key(id) {
            out.push(Member {
                id: *id,
                addr: node.addr.clone(),
                role: if voters.contains(id) {
                    "voter".into()
                } else {
                    "learner".into()
                },
                state: "joining".into(),
                containers: 0,
                labels: Default::default(),
            });
        }
    }
    out.sort_by_key(|m| m.id);
    out
}

fn node_pb(
    n: &NodeRecord,
    state: &ClusterState,
    voters: &std::collections::BTreeSet<u64>,
    member: bool,
) -> Member {
    Member {
        id: n.id,
        addr: n.addr.clone(),
        role: if voters.contains(&n.id) {
            "voter".into()
        } else if member {
            "learner".into()
        } else {
            "none".into()
        },
        state: n.status.name().into(),
        containers: state.active_on(n.id) as u32,
        labels: n.labels.clone().into_iter().collect(),
    }
}

fn event_pb(e: StateEvent, state: &ClusterState) -> Event {
    let voters = std::collections::BTreeSet::new();
    Event {
        index: e.index,
        kind: e.kind.name().into(),
        container: e.container.as_ref().map(container_pb),
        node: e.node.as_ref().map(|n| node_pb(n, state, &voters, false)),
        message: e.message,
    }
}

fn find<'a>(state: &'a ClusterState, id: &str) -> Result<&'a ContainerRecord, Status> {
    state.containers.get(id).ok_or_else(|| {
        Status::not_found(format!(
            "no container '{id}' (see `haconiwa containers --all`)"
        ))
    })
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn spawn(&self, req: Request<SpawnRequest>) -> Result<Response<SpawnReply>, Status> {
        on_leader!(self, req, spawn);
        let r = req.into_inner();
        let container = ops::spawn(&self.core, r).await?;
        Ok(Response::new(SpawnReply {
            container: Some(container_pb(&container)),
        }))
    }

    async fn stop(&self, req: Request<StopRequest>) -> Result<Response<StopReply>, Status> {
        on_leader!(self, req, stop);
        let id = req.into_inner().id;
        find(&self.core.state(), &id)?;
        self.core.propose(Command::Stop { id: id.clone() }).await?;
        let state = self.core.state();
        Ok(Response::new(StopReply {
            container: Some(container_pb(find(&state, &id)?)),
        }))
    }

    async fn list_containers(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersReply>, Status> {
        let all = req.into_inner().all;
        let state = self.core.state();
        let mut containers: Vec<&ContainerRecord> = state
            .containers
            .values()
            .filter(|c| all || !c.observed.is_final())
            .collect();
        containers.sort_by_key(|c| c.created_index);
        Ok(Response::new(ListContainersReply {
            containers: containers.into_iter().map(container_pb).collect(),
        }))
    }

    async fn get_container(
        &self,
        req: Request<GetContainerRequest>,
    ) -> Result<Response<Container>, Status> {
        let state = self.core.state();
        Ok(Response::new(container_pb(find(
            &state,
            &req.into_inner().id,
        )?)))
    }

    async fn cluster_status(
        &self,
        _req: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusReply>, Status> {
        let m = self.core.metrics();
        let state = self.core.state();
        let leader = m.current_leader.unwrap_or(0);
        let leader_addr = m
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
            .unwrap_or_default();
        Ok(Response::new(ClusterStatusReply {
            leader,
            leader_addr,
            term: m.current_term,
            commit_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            last_applied: m.last_applied.map(|l| l.index).unwrap_or(0),
            members: members_pb(&self.core, &state),
            state_digest: state
                .digest()
                .map_err(|e| Status::internal(format!("state digest: {e}")))?,
            node: self.core.id,
            joint: m.membership_config.membership().get_joint_config().len() > 1,
        }))
    }

    async fn members(
        &self,
        _req: Request<MembersRequest>,
    ) -> Result<Response<MembersReply>, Status> {
        let state = self.core.state();
        Ok(Response::new(MembersReply {
            members: members_pb(&self.core, &state),
        }))
    }

    async fn leave(&self, req: Request<NodeRequest>) -> Result<Response<NodeReply>, Status> {
        on_leader!(self, req, leave);
        let id = req.into_inner().id;
        let moved = ops::leave(&self.core, id).await?;
        let state = self.core.state();
        let member = members_pb(&self.core, &state)
            .into_iter()
            .find(|m| m.id == id);
        Ok(Response::new(NodeReply { member, moved }))
    }

    async fn drain(&self, req: Request<NodeRequest>) -> Result<Response<NodeReply>, Status> {
        on_leader!(self, req, drain);
        let id = req.into_inner().id;
        let moved = ops::drain(&self.core, id).await?;
        let state = self.core.state();
        let member = members_pb(&self.core, &state)
            .into_iter()
            .find(|m| m.id == id);
        Ok(Response::new(NodeReply { member, moved }))
    }

    type WatchEventsStream = Pin<Box<dyn Stream<Item = Result<Event, Status>> + Send + 'static>>;

    async fn watch_events(
        &self,
        _req: Request<WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let rx = self.core.feed.events.subscribe();
        let feed = self.core.feed.state.clone();
        let stream = tokio_stream::wrappers::BroadcastStream::new(rx).map(move |item| match item {
            Ok(e) => {
                let state = feed.borrow().1.clone();
                Ok(event_pb(e, &state))
            }
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                Err(Status::data_loss(format!(
                    "the event stream fell {n} events behind; reconnect"
                )))
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        on_leader!(self, req, join);
        let r = req.into_inner();
        let id = ops::join(&self.core, r).await?;
        Ok(Response::new(JoinReply {
            node_id: id,
            leader: self.core.id,
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        on_leader!(self, req, heartbeat);
        ops::heartbeat(&self.core, req.into_inner().node_id).await?;
        Ok(Response::new(HeartbeatReply {}))
    }

    async fn report(&self, req: Request<ReportRequest>) -> Result<Response<ReportReply>, Status> {
        on_leader!(self, req, report);
        let r = req.into_inner();
        let observed = ops::observed_from_report(&r)?;
        self.core
            .propose(Command::Observe {
                id: r.id,
                node: r.node_id,
                observed,
            })
            .await?;
        Ok(Response::new(ReportReply {}))
    }

    async fn apply_rule(
        &self,
        req: Request<ApplyRuleRequest>,
    ) -> Result<Response<ApplyRuleReply>, Status> {
        on_leader!(self, req, apply_rule);
        let rule = super::rules::apply(&self.core, req.into_inner()).await?;
        Ok(Response::new(ApplyRuleReply { rule: Some(rule) }))
    }

    async fn list_rules(
        &self,
        _req: Request<ListRulesRequest>,
    ) -> Result<Response<ListRulesReply>, Status> {
        let state = self.core.state();
        Ok(Response::new(ListRulesReply {
            rules: state.rules.values().map(ops::rule_pb).collect(),
        }))
    }

    async fn remove_rule(
        &self,
        req: Request<RemoveRuleRequest>,
    ) -> Result<Response<RemoveRuleReply>, Status> {
        on_leader!(self, req, remove_rule);
        let name = req.into_inner().name;
        match self
            .core
            .propose(Command::RemoveRule { name: name.clone() })
            .await
        {
            Ok(_) => Ok(Response::new(RemoveRuleReply {})),
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                Err(Status::not_found(format!("no rule '{name}'")))
            }
            Err(s) => Err(s),
        }
    }
}

/// Records a heartbeat (leader side); used by the service and by the leader's own agent.
pub fn note_heartbeat(core: &Core, node: u64) {
    lock(&core.heartbeats).insert(node, Instant::now());
}
