//! The Raft transport: openraft's RPCs as bincode payloads over tonic gRPC, client side
//! (`RaftNetworkFactory`) and server side (`RaftService`).

use super::{Raft, TypeConfig};
use crate::api::pb::raft_client::RaftClient;
use crate::api::pb::raft_server;
use crate::api::pb::RaftPayload;
use crate::api::{lazy_channel, AuthChannel};
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

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, Status> {
    bincode::serde::encode_to_vec(v, bincode::config::standard())
        .map_err(|e| Status::internal(format!("encode: {e}")))
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, Status> {
    bincode::serde::decode_from_slice(b, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft payload: {e}")))
}

/// Error for an RPC that never reached its target.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

/// Creates one client per peer.
#[derive(Clone)]
pub struct Network {
    /// This node: it never opens a client to itself.
    pub self_id: NodeId,
    /// Cluster token sent on every call.
    pub token: String,
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
            Err(format!("node {target} is this node; no client to itself"))
        } else {
            lazy_channel(&node.addr, &self.token, self.local_ip)
                .map(|ch| RaftClient::new(ch).max_decoding_message_size(256 << 20))
                .map_err(|e| e.to_string())
        };
        PeerClient {
            target,
            client,
            retry: self.retry,
        }
    }
}

/// The client to one peer.
pub struct PeerClient {
    target: NodeId,
    client: Result<RaftClient<AuthChannel>, String>,
    retry: std::time::Duration,
}

impl PeerClient {
    async fn call<Req, Resp, E>(
        &mut self,
        kind: &'static str,
        rpc: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &mut self.client {
            Ok(c) => c,
            Err(e) => {
                return Err(RPCError::Unreachable(Unreachable::new(&TransportError(
                    e.clone(),
                ))))
            }
        };
        let data = encode(rpc).map_err(|s| {
            RPCError::Network(NetworkError::new(&TransportError(s.message().into())))
        })?;
        let mut req = Request::new(RaftPayload { data });
        req.set_timeout(option.hard_ttl());
        let reply = match kind {
            "append" => client.append_entries(req).await,
            "vote" => client.vote(req).await,
            _ => client.install_snapshot(req).await,
        };
        let payload = match reply {
            Ok(r) => r.into_inner().data,
            Err(status) => {
                let e = TransportError(format!(
                    "{kind} to node {}: {}",
                    self.target,
                    status.message()
                ));
                return Err(match status.code() {
                    tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Cancelled => RPCError::Unreachable(Unreachable::new(&e)),
                    _ => RPCError::Network(NetworkError::new(&e)),
                });
            }
        };
        let result: Result<Resp, RaftError<NodeId, E>> = decode(&payload).map_err(|s| {
            RPCError::Network(NetworkError::new(&TransportError(s.message().into())))
        })?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
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
        self.call("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("vote", &rpc, &option).await
    }
}

/// The server side: hands incoming RPCs to the local Raft node.
pub struct RaftService {
    /// The local node.
    pub raft: Raft,
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(&req.into_inner().data)?;
        let res = self.raft.append_entries(rpc).await;
        Ok(Response::new(RaftPayload {
            data: encode(&res)?,
        }))
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: VoteRequest<NodeId> = decode(&req.into_inner().data)?;
        let res = self.raft.vote(rpc).await;
        Ok(Response::new(RaftPayload {
            data: encode(&res)?,
        }))
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(&req.into_inner().data)?;
        let res = self.raft.install_snapshot(rpc).await;
        Ok(Response::new(RaftPayload {
            data: encode(&res)?,
        }))
    }
}
