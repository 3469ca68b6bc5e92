//! The supervisor's edge, the only part of it that speaks protobuf: the client API
//! (`proto/haconiwa.proto`, service Cluster), the Raft transport (`raft`), the HTTP
//! listener (`http`), the calls to other members (`calls`), and the conversions
//! (`convert`). Reads are served from this member's applied state; writes run on the
//! leader (a follower forwards them once and says who the leader is). The handlers live
//! by resource in `containers`, `logs`, `exec`, `nodes`, `rules` and `images`; this is where `OpError`
//! becomes a `tonic::Status`.

pub mod calls;
mod containers;
pub mod convert;
mod exec;
pub mod http;
mod images;
mod logs;
mod nodes;
pub mod raft;
mod rules;
mod storage;

use super::config::Config;
use super::shared::Supervisor;
use crate::api::pb::cluster_server::{Cluster, ClusterServer};
use crate::api::pb::raft_server::RaftServer;
use crate::api::pb::*;
use crate::api::{TokenCheck, FILE_DESCRIPTOR_SET, FORWARDED_HEADER, LEADER_HEADER};
use crate::cluster::state::NodeId;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

/// Where container `id` runs: `None` here, else its node and that node's address. A
/// call already `forwarded` must find it here.
fn elsewhere(
    core: &Supervisor,
    id: &str,
    forwarded: bool,
) -> Result<Option<(NodeId, String)>, Status> {
    let state = core.state();
    let c = state
        .containers()
        .get(id)
        .ok_or_else(|| Status::not_found(format!("no container {id} in the cluster")))?;
    if c.node == core.id {
        return Ok(None);
    }
    if forwarded {
        return Err(Status::failed_precondition(format!(
            "container {id} is on node {}, not on node {}",
            c.node, core.id
        )));
    }
    let addr = state
        .nodes()
        .get(&c.node)
        .map(|n| n.addr.clone())
        .ok_or_else(|| Status::not_found(format!("no node {} in the cluster", c.node)))?;
    Ok(Some((c.node, addr)))
}

/// A status from the node a call was forwarded to, saying so.
fn from_node(node: NodeId) -> impl Fn(Status) -> Status {
    move |s| Status::new(s.code(), format!("node {node}: {}", s.message()))
}

/// The Cluster service.
pub struct ClusterService {
    /// This supervisor.
    pub core: Arc<Supervisor>,
    /// Clients to the other members (the same `core.peers` holds), for forwarding.
    pub peers: Arc<calls::PeerClients>,
}

/// Runs the call on the leader: returns its reply when this node is a follower.
macro_rules! on_leader {
    ($self:ident, $req:ident, $method:ident) => {
        match $self.core.route() {
            Ok($crate::supervisor::shared::Route::Here) => {
                if !$self.core.await_quorum().await {
                    return Err($self.core.cut_off().into());
                }
            }
            // Forwarded once at most: a member that is not the leader either says so.
            _ if $req.metadata().get(FORWARDED_HEADER).is_some() => {
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
            Err(e) => return Err(e.into()),
            Ok($crate::supervisor::shared::Route::Leader { id, addr }) => {
                let hint = format!("{id}@{addr}");
                let mut client = $self.peers.client_to(&addr)?;
                let mut fwd = Request::new($req.into_inner());
                fwd.metadata_mut()
                    .insert(FORWARDED_HEADER, MetadataValue::from_static("1"));
                let mut reply = client.$method(fwd).await?;
                if let Ok(v) = MetadataValue::try_from(hint.as_str()) {
                    reply.metadata_mut().insert(LEADER_HEADER, v);
                }
                return Ok(reply);
            }
        }
    };
}

/// The gRPC server (Raft, the client API, reflection) on `listener`, behind the bounded
/// door (`api::listener`: TLS when configured, connection cap, authentication deadline)
/// and the token check, with HTTP/2 keep-alive (dead connections are dropped, not kept)
/// and a bounded number of concurrent calls per connection.
pub fn serve(
    config: &Config,
    listener: tokio::net::TcpListener,
    core: Arc<Supervisor>,
    peers: Arc<calls::PeerClients>,
    tls: Option<Arc<crate::api::tls::ServerTls>>,
    elections: Arc<crate::supervisor::quorum::ElectionWatch>,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> Result<impl std::future::Future<Output = Result<(), tonic::transport::Error>>, String> {
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| format!("reflection: {e}"))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| format!("reflection: {e}"))?;
    Ok(tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(crate::api::KEEPALIVE))
        .http2_keepalive_timeout(Some(crate::api::KEEPALIVE))
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .layer(tonic::service::InterceptorLayer::new(TokenCheck::new(
            &config.token,
        )))
        .add_service(
            RaftServer::new(raft::RaftService {
                raft: core.raft.clone(),
                elections,
            })
            .max_decoding_message_size(256 << 20),
        )
        .add_service(ClusterServer::new(ClusterService { core, peers }))
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(
            crate::api::listener::incoming(listener, tls, config.limits),
            async {
                let _ = stop.await;
            },
        ))
}

/// Concurrent calls one connection may have in flight (HTTP/2 streams).
const MAX_STREAMS_PER_CONNECTION: u32 = 256;

type Reply<T> = Result<Response<T>, Status>;

/// The stream of `image_blob`.
type ImageChunks = Pin<Box<dyn Stream<Item = Result<ImageBlobChunk, Status>> + Send + 'static>>;

/// The stream of `watch_events`.
type ClusterServiceEvents = Pin<Box<dyn Stream<Item = Result<Event, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn spawn(&self, req: Request<SpawnRequest>) -> Reply<SpawnReply> {
        on_leader!(self, req, spawn);
        Ok(Response::new(
            containers::spawn(&self.core, req.into_inner()).await?,
        ))
    }

    async fn stop(&self, req: Request<StopRequest>) -> Reply<StopReply> {
        on_leader!(self, req, stop);
        Ok(Response::new(
            containers::stop(&self.core, req.into_inner()).await?,
        ))
    }

    async fn list_containers(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Reply<ListContainersReply> {
        Ok(Response::new(containers::list(
            &self.core,
            req.into_inner(),
        )))
    }

    async fn list_services(&self, _req: Request<ListServicesRequest>) -> Reply<ListServicesReply> {
        let state = self.core.feed.state.borrow().1.clone();
        Ok(Response::new(containers::services(&state)))
    }

    async fn get_container(&self, req: Request<GetContainerRequest>) -> Reply<Container> {
        Ok(Response::new(containers::get(
            &self.core,
            req.into_inner(),
        )?))
    }

    async fn report(&self, req: Request<ReportRequest>) -> Reply<ReportReply> {
        on_leader!(self, req, report);
        Ok(Response::new(
            containers::report(&self.core, req.into_inner()).await?,
        ))
    }

    async fn mirror_status(&self, req: Request<MirrorStatusRequest>) -> Reply<MirrorStatusReply> {
        on_leader!(self, req, mirror_status);
        let report = convert::mirror_status_pb(
            &super::shared::lock(&self.core.mirror),
            self.core.id,
            self.core.applied_index(),
        );
        Ok(Response::new(report))
    }

    async fn image_manifest(
        &self,
        req: Request<ImageManifestRequest>,
    ) -> Reply<ImageManifestReply> {
        Ok(Response::new(
            images::manifest(&self.core, req.into_inner()).await?,
        ))
    }

    type ImageBlobStream = ImageChunks;

    async fn image_blob(&self, req: Request<ImageBlobRequest>) -> Reply<Self::ImageBlobStream> {
        Ok(Response::new(images::blob(&self.core, req.into_inner())?))
    }

    type ExecStream = exec::ExecOutputs;

    async fn exec(&self, req: Request<tonic::Streaming<ExecInput>>) -> Reply<Self::ExecStream> {
        Ok(Response::new(
            exec::exec(&self.core, &self.peers, req.into_inner()).await?,
        ))
    }

    type ContainerLogsStream = logs::LogChunks;

    async fn container_logs(
        &self,
        req: Request<ContainerLogsRequest>,
    ) -> Reply<Self::ContainerLogsStream> {
        Ok(Response::new(
            logs::logs(&self.core, &self.peers, req.into_inner()).await?,
        ))
    }

    type WatchEventsStream = ClusterServiceEvents;

    async fn watch_events(
        &self,
        req: Request<WatchEventsRequest>,
    ) -> Reply<Self::WatchEventsStream> {
        Ok(Response::new(containers::events(
            &self.core,
            req.get_ref(),
        )?))
    }

    async fn cluster_status(
        &self,
        req: Request<ClusterStatusRequest>,
    ) -> Reply<ClusterStatusReply> {
        let with_digest = !req.get_ref().without_digest;
        Ok(Response::new(nodes::status(&self.core, with_digest)?))
    }

    async fn members(&self, _req: Request<MembersRequest>) -> Reply<MembersReply> {
        Ok(Response::new(nodes::members(&self.core)))
    }

    async fn leave(&self, req: Request<NodeRequest>) -> Reply<NodeReply> {
        on_leader!(self, req, leave);
        Ok(Response::new(
            nodes::leave(&self.core, req.into_inner()).await?,
        ))
    }

    async fn drain(&self, req: Request<NodeRequest>) -> Reply<NodeReply> {
        on_leader!(self, req, drain);
        Ok(Response::new(
            nodes::drain(&self.core, req.into_inner()).await?,
        ))
    }

    async fn join(&self, req: Request<JoinRequest>) -> Reply<JoinReply> {
        on_leader!(self, req, join);
        Ok(Response::new(
            nodes::join(&self.core, req.into_inner()).await?,
        ))
    }

    async fn heartbeat(&self, req: Request<HeartbeatRequest>) -> Reply<HeartbeatReply> {
        on_leader!(self, req, heartbeat);
        Ok(Response::new(
            nodes::heartbeat(&self.core, req.into_inner()).await?,
        ))
    }

    async fn apply_rule(&self, req: Request<ApplyRuleRequest>) -> Reply<ApplyRuleReply> {
        on_leader!(self, req, apply_rule);
        Ok(Response::new(
            rules::apply(&self.core, req.into_inner()).await?,
        ))
    }

    async fn list_rules(&self, _req: Request<ListRulesRequest>) -> Reply<ListRulesReply> {
        Ok(Response::new(rules::list(&self.core)))
    }

    async fn remove_rule(&self, req: Request<RemoveRuleRequest>) -> Reply<RemoveRuleReply> {
        on_leader!(self, req, remove_rule);
        Ok(Response::new(
            rules::remove(&self.core, req.into_inner()).await?,
        ))
    }

    async fn rule_history(&self, req: Request<RuleHistoryRequest>) -> Reply<RuleHistoryReply> {
        Ok(Response::new(rules::history(&self.core, req.into_inner())?))
    }

    async fn promote_rule(&self, req: Request<PromoteRuleRequest>) -> Reply<PromoteRuleReply> {
        on_leader!(self, req, promote_rule);
        Ok(Response::new(
            rules::promote(&self.core, req.into_inner()).await?,
        ))
    }

    async fn rollback_rule(&self, req: Request<RollbackRuleRequest>) -> Reply<RollbackRuleReply> {
        on_leader!(self, req, rollback_rule);
        Ok(Response::new(
            rules::rollback(&self.core, req.into_inner()).await?,
        ))
    }

    async fn create_volume(&self, req: Request<CreateVolumeRequest>) -> Reply<Volume> {
        on_leader!(self, req, create_volume);
        Ok(Response::new(
            storage::create_volume(&self.core, req.into_inner()).await?,
        ))
    }

    async fn list_volumes(&self, _req: Request<ListVolumesRequest>) -> Reply<ListVolumesReply> {
        Ok(Response::new(storage::list_volumes(&self.core)))
    }

    async fn remove_volume(&self, req: Request<RemoveVolumeRequest>) -> Reply<RemoveVolumeReply> {
        on_leader!(self, req, remove_volume);
        Ok(Response::new(
            storage::remove_volume(&self.core, req.into_inner()).await?,
        ))
    }

    async fn put_secret(&self, req: Request<PutSecretRequest>) -> Reply<Secret> {
        on_leader!(self, req, put_secret);
        Ok(Response::new(
            storage::put_secret(&self.core, req.into_inner()).await?,
        ))
    }

    async fn list_secrets(&self, _req: Request<ListSecretsRequest>) -> Reply<ListSecretsReply> {
        Ok(Response::new(storage::list_secrets(&self.core)))
    }

    async fn remove_secret(&self, req: Request<RemoveSecretRequest>) -> Reply<RemoveSecretReply> {
        on_leader!(self, req, remove_secret);
        Ok(Response::new(
            storage::remove_secret(&self.core, req.into_inner()).await?,
        ))
    }
}
