//! The Raft transport: openraft's RPCs as bincode payloads over tonic gRPC, client side
//! (`RaftNetworkFactory`) and server side (`RaftService`).

use crate::api::pb::raft_client::RaftClient;
use crate::api::pb::raft_server;
use crate::api::pb::RaftPayload;
use crate::api::{lazy_channel, AuthChannel};
use crate::cluster::{Raft, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::{de::DeserializeOwned, Serialize};
use std::net::IpAddr;
use tonic::{Request, Response, Status};

type NodeId = u64;

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, bincode::error::EncodeError> {
    bincode::serde::encode_to_vec(v, bincode::config::standard())
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, bincode::error::DecodeError> {
    bincode::serde::decode_from_slice(b, bincode::config::standard()).map(|(v, _)| v)
}

/// The server side's answer to a payload it cannot decode or encode.
fn payload_status(what: &str, e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{what} raft payload: {e}"))
}

/// The three Raft RPCs.
#[derive(Debug, Clone, Copy)]
enum RpcKind {
    Append,
    Vote,
    Snapshot,
}

impl std::fmt::Display for RpcKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RpcKind::Append => "append-entries",
            RpcKind::Vote => "vote",
            RpcKind::Snapshot => "install-snapshot",
        })
    }
}

/// Why an RPC failed on our side of the wire.
#[derive(Debug, thiserror::Error)]
enum TransportError {
    /// No client could be made for the peer.
    #[error("no client for node {target}: {reason}")]
    NoClient { target: NodeId, reason: String },
    /// The request could not be encoded.
    #[error("encode the {kind} request: {source}")]
    Encode {
        kind: RpcKind,
        source: bincode::error::EncodeError,
    },
    /// The call failed.
    #[error("{kind} to node {target}: {}", .status.message())]
    Call {
        kind: RpcKind,
        target: NodeId,
        status: Status,
    },
    /// The reply could not be decoded.
    #[error("decode the {kind} reply of node {target}: {source}")]
    Decode {
        kind: RpcKind,
        target: NodeId,
        source: bincode::error::DecodeError,
    },
}

/// Creates one client per peer.
#[derive(Clone)]
pub struct Network {
    /// This node: it never opens a client to itself.
    pub self_id: NodeId,
    /// Token (on every call) and TLS towards the other members.
    pub creds: crate::api::Credentials,
    /// Source address for outgoing connections (this node's advertised IP).
    pub local_ip: Option<IpAddr>,
    /// Retry interval for an unreachable peer (openraft's default is 500 ms, which lets a
    /// restarted member time out and start a disruptive election before it hears from
    /// the leader).
    pub retry: std::time::Duration,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        let client = if target == self.self_id {
            Err(TransportError::NoClient {
                target,
                reason: "it is this node; no client to itself".into(),
            })
        } else {
            lazy_channel(&node.addr, &self.creds, self.local_ip)
                .map(|ch| RaftClient::new(ch).max_decoding_message_size(256 << 20))
                .map_err(|e| TransportError::NoClient {
                    target,
                    reason: e.to_string(),
                })
        };
        PeerClient {
            target,
            client,
            retry: self.retry,
            stream: None,
        }
    }
}

/// The client to one peer.
pub struct PeerClient {
    target: NodeId,
    client: Result<RaftClient<AuthChannel>, TransportError>,
    retry: std::time::Duration,
    /// The open AppendEntries stream (requests out, replies in), if any.
    stream: Option<(
        tokio::sync::mpsc::Sender<RaftPayload>,
        tonic::Streaming<RaftPayload>,
    )>,
}

impl PeerClient {
    async fn call<Req, Resp, E>(
        &mut self,
        kind: RpcKind,
        rpc: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let target = self.target;
        let client = match &mut self.client {
            Ok(c) => c,
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(e))),
        };
        let data = encode(rpc).map_err(|source| {
            RPCError::Network(NetworkError::new(&TransportError::Encode { kind, source }))
        })?;
        let mut req = Request::new(RaftPayload { data });
        req.set_timeout(option.hard_ttl());
        let reply = match kind {
            RpcKind::Append => client.append_entries(req).await,
            RpcKind::Vote => client.vote(req).await,
            RpcKind::Snapshot => client.install_snapshot(req).await,
        };
        let payload = match reply {
            Ok(r) => r.into_inner().data,
            Err(status) => {
                let unreachable = matches!(
                    status.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::DeadlineExceeded
                        | tonic::Code::Cancelled
                );
                let e = TransportError::Call {
                    kind,
                    target,
                    status,
                };
                return Err(if unreachable {
                    RPCError::Unreachable(Unreachable::new(&e))
                } else {
                    RPCError::Network(NetworkError::new(&e))
                });
            }
        };
        let result: Result<Resp, RaftError<NodeId, E>> = decode(&payload).map_err(|source| {
            RPCError::Network(NetworkError::new(&TransportError::Decode {
                kind,
                target,
                source,
            }))
        })?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(target, e)))
    }
}

impl PeerClient {
    /// One AppendEntries on the peer's stream (opened when there is none).
    async fn append_on_stream(
        &mut self,
        rpc: &AppendEntriesRequest<TypeConfig>,
    ) -> Result<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>, TransportError> {
        let (target, kind) = (self.target, RpcKind::Append);
        let call = |status| TransportError::Call {
            kind,
            target,
            status,
        };
        if self.stream.is_none() {
            let client = match &mut self.client {
                Ok(c) => c,
                Err(e) => {
                    return Err(TransportError::NoClient {
                        target,
                        reason: e.to_string(),
                    })
                }
            };
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let replies = client
                .append_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .map_err(call)?
                .into_inner();
            self.stream = Some((tx, replies));
        }
        let Some((tx, replies)) = &mut self.stream else {
            return Err(call(Status::internal("no stream")));
        };
        let data = encode(rpc).map_err(|source| TransportError::Encode { kind, source })?;
        tx.send(RaftPayload { data })
            .await
            .map_err(|_| call(Status::unavailable("the append stream closed")))?;
        let reply = replies
            .message()
            .await
            .map_err(call)?
            .ok_or_else(|| call(Status::unavailable("the append stream ended")))?;
        decode(&reply.data).map_err(|source| TransportError::Decode {
            kind,
            target,
            source,
        })
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(self.retry))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match tokio::time::timeout(option.hard_ttl(), self.append_on_stream(&rpc)).await {
            Ok(Ok(r)) => r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            // The stream broke or timed out: forget it (the next call opens another) and
            // let openraft retry.
            Ok(Err(e)) => {
                self.stream = None;
                Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            Err(_) => {
                self.stream = None;
                let e = TransportError::Call {
                    kind: RpcKind::Append,
                    target: self.target,
                    status: Status::deadline_exceeded("no reply in time"),
                };
                Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(RpcKind::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(RpcKind::Vote, &rpc, &option).await
    }
}

/// A reply payload.
fn reply<T: Serialize>(res: &T) -> Result<Response<RaftPayload>, Status> {
    let data = encode(res).map_err(|e| Status::internal(format!("encode the raft reply: {e}")))?;
    Ok(Response::new(RaftPayload { data }))
}

/// The server side: hands incoming RPCs to the local Raft node.
pub struct RaftService {
    /// The local node.
    pub raft: Raft,
    /// Told of each AppendEntries' leader (`quorum::stand_when_the_leader_is_gone`).
    pub elections: std::sync::Arc<crate::supervisor::quorum::ElectionWatch>,
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> =
            decode(&req.into_inner().data).map_err(|e| payload_status("undecodable", e))?;
        self.elections.heard_from(&rpc.vote);
        let res = self.raft.append_entries(rpc).await;
        reply(&res)
    }

    type AppendStreamStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<RaftPayload, Status>> + Send + 'static>,
    >;

    async fn append_stream(
        &self,
        req: Request<tonic::Streaming<RaftPayload>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        use tokio_stream::StreamExt;
        let raft = self.raft.clone();
        let elections = self.elections.clone();
        // One at a time, in order: the leader sends the next only after this reply. Each
        // is handled as the reply stream is polled (no task and channel in between: one
        // thread hop less per entry); the stream ends with the inbound one, or after a
        // failed reply (tonic ends a response at its first error).
        let replies = req.into_inner().map_while(Result::ok).then(move |p| {
            let (raft, elections) = (raft.clone(), elections.clone());
            async move {
                match decode::<AppendEntriesRequest<TypeConfig>>(&p.data) {
                    Ok(rpc) => {
                        elections.heard_from(&rpc.vote);
                        reply(&raft.append_entries(rpc).await).map(|r| r.into_inner())
                    }
                    Err(e) => Err(payload_status("undecodable", e)),
                }
            }
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: VoteRequest<NodeId> =
            decode(&req.into_inner().data).map_err(|e| payload_status("undecodable", e))?;
        let res = self.raft.vote(rpc).await;
        reply(&res)
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> =
            decode(&req.into_inner().data).map_err(|e| payload_status("undecodable", e))?;
        let res = self.raft.install_snapshot(rpc).await;
        reply(&res)
    }
}
