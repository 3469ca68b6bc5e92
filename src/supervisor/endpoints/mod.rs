//! The client API (`proto/haconiwa.proto`, service Cluster). Reads are served from this
//! member's applied state; writes run on the leader (a follower forwards them once and
//! says who the leader is). The handlers live by resource in `containers`, `nodes` and
//! `rules`; this is where `OpError` becomes a `tonic::Status`.

mod containers;
mod images;
mod nodes;
mod rules;

use super::node::Node;
use crate::api::pb::cluster_server::Cluster;
use crate::api::pb::*;
use crate::api::{FORWARDED_HEADER, LEADER_HEADER};
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

/// The Cluster service.
pub struct ClusterService {
    /// This supervisor.
    pub core: Arc<Node>,
}

/// Runs the call on the leader: returns its reply when this node is a follower.
macro_rules! on_leader {
    ($self:ident, $req:ident, $method:ident) => {
        if $self.core.is_leader() && !$self.core.await_quorum().await {
            return Err($self.core.cut_off().into());
        }
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
        let report =
            super::node::lock(&self.core.mirror).to_pb(self.core.id, self.core.applied_index());
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
}
