//! Container endpoints: spawn, stop, list, get, the agents' reports, the event stream.

use super::convert::{container_pb, event_pb, observed_from_report, spawn_request};
use crate::api::pb::*;
use crate::cluster::state::{ClusterState, Command, ContainerRecord};
use crate::supervisor::error::{OpError, OpResult};
use crate::supervisor::leader::ops;
use crate::supervisor::shared::Supervisor;
use tokio_stream::StreamExt;
use tonic::Status;

fn find<'a>(state: &'a ClusterState, id: &str) -> OpResult<&'a ContainerRecord> {
    state.containers().get(id).ok_or_else(|| {
        OpError::NotFound(format!(
            "no container '{id}' (see `haconiwa containers --all`)"
        ))
    })
}

pub(super) async fn spawn(core: &Supervisor, r: SpawnRequest) -> OpResult<SpawnReply> {
    let container = ops::spawn(core, spawn_request(r)).await?;
    Ok(SpawnReply {
        container: Some(container_pb(&container, &core.state())),
    })
}

pub(super) async fn stop(core: &Supervisor, r: StopRequest) -> OpResult<StopReply> {
    find(&core.state(), &r.id)?;
    core.propose(Command::Stop { id: r.id.clone() }).await?;
    let state = core.state();
    Ok(StopReply {
        container: Some(container_pb(find(&state, &r.id)?, &state)),
    })
}

pub(super) fn list(core: &Supervisor, r: ListContainersRequest) -> ListContainersReply {
    let state = core.state();
    let mut containers: Vec<&ContainerRecord> = state
        .containers()
        .values()
        .filter(|c| r.all || !c.observed.is_final())
        .collect();
    containers.sort_by_key(|c| c.created_index);
    ListContainersReply {
        containers: containers
            .into_iter()
            .map(|c| container_pb(c, &state))
            .collect(),
    }
}

pub(super) fn get(core: &Supervisor, r: GetContainerRequest) -> OpResult<Container> {
    let state = core.state();
    Ok(container_pb(find(&state, &r.id)?, &state))
}

pub(super) async fn report(core: &Supervisor, r: ReportRequest) -> OpResult<ReportReply> {
    let observed = observed_from_report(&r)
        .ok_or_else(|| OpError::Invalid(format!("unknown container state '{}'", r.state)))?;
    core.propose(Command::Observe {
        id: r.id,
        node: r.node_id,
        observed,
    })
    .await?;
    Ok(ReportReply {})
}

pub(super) fn events(
    core: &Supervisor,
    r: &WatchEventsRequest,
) -> Result<super::ClusterServiceEvents, Status> {
    let (backlog, rx) = if r.resume {
        core.feed
            .log
            .follow(r.after_index, r.after_sub)
            .map_err(|e| Status::out_of_range(e.to_string()))?
    } else {
        (Vec::new(), core.feed.log.live().0)
    };
    let feed = core.feed.state.clone();
    let pb_of = move |l: crate::cluster::event_log::Logged| {
        let state = feed.borrow().1.clone();
        event_pb(l.event, l.sub, &state)
    };
    let replay = tokio_stream::iter(backlog.into_iter().map(pb_of.clone()).map(Ok));
    let live = tokio_stream::wrappers::BroadcastStream::new(rx).map(move |item| match item {
        Ok(l) => Ok(pb_of(l)),
        Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
            Err(Status::data_loss(format!(
                "the event stream fell {n} events behind; resume from the last event seen"
            )))
        }
    });
    Ok(Box::pin(replay.chain(live)))
}

/// The services of the cluster network, as the DNS responder answers them: one per
/// rule, and per definition with copies outside a rule.
pub fn services(state: &ClusterState) -> ListServicesReply {
    use crate::supervisor::network::dns;
    let mut names = std::collections::BTreeSet::new();
    for c in state.containers().values() {
        if state.address_of(&c.id).is_some() || c.desired.keeps_running() {
            names.insert(c.rule.clone().unwrap_or_else(|| c.definition.clone()));
        }
    }
    let services = names
        .into_iter()
        .map(|name| {
            let of = |c: &&ContainerRecord| {
                c.rule.as_deref() == Some(name.as_str()) || c.definition == name
            };
            let serving: Vec<String> = state
                .containers()
                .values()
                .filter(of)
                .filter(|c| dns::serves(c) && state.address_of(&c.id).is_some())
                .map(|c| c.id.clone())
                .collect();
            Service {
                dns_name: format!("{name}.{}", dns::SERVICE_DOMAIN),
                addresses: dns::service_addresses(state, &name)
                    .iter()
                    .map(|a| a.to_string())
                    .collect(),
                serving,
                copies: state
                    .containers()
                    .values()
                    .filter(of)
                    .filter(|c| c.is_active())
                    .count() as u32,
                name,
            }
        })
        .collect();
    let range = state.net_range();
    ListServicesReply {
        services,
        cidr: range.map(|r| r.cidr.to_string()).unwrap_or_default(),
        subnet_prefix: range.map_or(0, |r| r.subnet_prefix as u32),
        subnets: state
            .leases()
            .map(|l| format!("{}={}", l.node, l.subnet))
            .collect(),
    }
}
