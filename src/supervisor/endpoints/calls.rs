//! The calls this supervisor makes to the other members, on the wire: `Peers` made of
//! the generated gRPC clients (one cached connection per member, the cluster's token and
//! TLS), and the join of a new supervisor through the members it was told of.

use super::convert::report_pb;
use crate::api::pb::cluster_client::ClusterClient;
use crate::api::pb::{HeartbeatRequest, ImageBlobRequest, ImageManifestRequest, JoinRequest};
use crate::api::{lazy_channel, AuthChannel, Credentials};
use crate::cluster::state::{NodeId, Observed};
use crate::spec::NodePolicy;
use crate::supervisor::config::Config;
use crate::supervisor::error::{OpError, OpResult};
use crate::supervisor::peers::{BoxFuture, Chunks, Peers, StoredManifest};
use crate::supervisor::shared::lock;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;
use tonic::{Request, Status};

/// Clients to the other members, one per address, made on first use.
pub struct PeerClients {
    creds: Credentials,
    local_ip: Option<IpAddr>,
    clients: Mutex<HashMap<String, ClusterClient<AuthChannel>>>,
}

impl PeerClients {
    /// Clients with this supervisor's credentials and source address.
    pub fn new(config: &Config) -> PeerClients {
        PeerClients {
            creds: config.credentials(),
            local_ip: config.local_ip(),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The (cached) client to the member at `addr`.
    pub fn client_to(&self, addr: &str) -> OpResult<ClusterClient<AuthChannel>> {
        let mut clients = lock(&self.clients);
        if let Some(c) = clients.get(addr) {
            return Ok(c.clone());
        }
        let ch = lazy_channel(addr, &self.creds, self.local_ip)
            .map_err(|e| OpError::Internal(format!("client to {addr}: {e}")))?;
        let c = ClusterClient::new(ch).max_decoding_message_size(64 << 20);
        clients.insert(addr.to_string(), c.clone());
        Ok(c)
    }
}

/// A member's refusal as the supervisor's error: "not found" stays recognisable.
fn from_status(s: Status) -> OpError {
    match s.code() {
        tonic::Code::NotFound => OpError::NotFound(s.message().to_string()),
        _ => OpError::Remote(s),
    }
}

fn with_timeout<T>(message: T, timeout: Duration) -> Request<T> {
    let mut req = Request::new(message);
    req.set_timeout(timeout);
    req
}

impl Peers for PeerClients {
    fn heartbeat<'a>(
        &'a self,
        leader: &'a str,
        node: NodeId,
        applied: u64,
        policy: Option<&'a NodePolicy>,
        timeout: Duration,
    ) -> BoxFuture<'a, OpResult<()>> {
        Box::pin(async move {
            let req = HeartbeatRequest {
                node_id: node,
                applied_index: applied,
                policy: match policy {
                    Some(p) => serde_json::to_string(p)
                        .map_err(|e| OpError::Internal(format!("encode the policy: {e}")))?,
                    None => String::new(),
                },
            };
            self.client_to(leader)?
                .heartbeat(with_timeout(req, timeout))
                .await
                .map(|_| ())
                .map_err(from_status)
        })
    }

    fn report<'a>(
        &'a self,
        leader: &'a str,
        node: NodeId,
        id: &'a str,
        observed: &'a Observed,
        timeout: Duration,
    ) -> BoxFuture<'a, OpResult<()>> {
        Box::pin(async move {
            let req = with_timeout(report_pb(node, id, observed), timeout);
            self.client_to(leader)?
                .report(req)
                .await
                .map(|_| ())
                .map_err(from_status)
        })
    }

    fn image_manifest<'a>(
        &'a self,
        addr: &'a str,
        reference: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, OpResult<StoredManifest>> {
        Box::pin(async move {
            let req = ImageManifestRequest {
                reference: reference.to_string(),
            };
            let reply = self
                .client_to(addr)?
                .image_manifest(with_timeout(req, timeout))
                .await
                .map_err(from_status)?
                .into_inner();
            Ok(StoredManifest {
                bytes: reply.manifest,
                digest: reply.digest,
            })
        })
    }

    fn image_blob<'a>(
        &'a self,
        addr: &'a str,
        digest: &'a str,
        offset: u64,
    ) -> BoxFuture<'a, OpResult<Chunks>> {
        Box::pin(async move {
            let req = ImageBlobRequest {
                digest: digest.to_string(),
                offset,
            };
            let stream = self
                .client_to(addr)?
                .image_blob(req)
                .await
                .map_err(from_status)?
                .into_inner();
            let chunks: Chunks = Box::pin(stream.map(|c| c.map(|c| c.data).map_err(from_status)));
            Ok(chunks)
        })
    }
}

/// Asks the cluster (through any of `config.join`) for membership, and an id when
/// `id` is None; retries for 30 s while no leader is elected. The id, or why not.
pub async fn join_cluster(config: &Config, id: Option<NodeId>) -> Result<NodeId, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut last, mut said) = (String::new(), String::new());
    while Instant::now() < deadline {
        match crate::api::connect(&config.join, &config.credentials()).await {
            Ok(mut c) => {
                let req = JoinRequest {
                    node_id: id.unwrap_or(0),
                    addr: config.advertise.clone(),
                    labels: config.labels.clone().into_iter().collect(),
                    outside_raft: false,
                };
                match c.join(req).await {
                    Ok(r) => return Ok(r.into_inner().node_id),
                    Err(s)
                        if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown) =>
                    {
                        last = crate::api::error_chain(&s)
                    }
                    Err(s) => return Err(s.message().to_string()),
                }
            }
            Err(e) => last = e.to_string(),
        }
        // Said once per reason: an operator watching a join that does not happen sees
        // why (a wrong certificate, no leader yet) before the 30 s run out.
        if last != said {
            tracing::warn!("join through {}: {last}; retrying", config.join.join(", "));
            said = last.clone();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(last)
}
