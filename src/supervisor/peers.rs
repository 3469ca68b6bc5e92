//! The calls this supervisor makes to the other members, in its own terms: the agent's
//! heartbeats and reports to the leader, and image manifests and blobs from a member's
//! store. The wire's side (the generated gRPC clients, protobuf messages and a cache of
//! connections) is `endpoints::calls`, handed in when the supervisor is wired; nothing
//! below the endpoints sees protobuf.

use super::error::OpResult;
use crate::cluster::state::{NodeId, Observed};
use crate::spec::NodePolicy;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio_stream::Stream;

/// A call in flight.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A blob's bytes as they arrive, chunk by chunk.
pub type Chunks = Pin<Box<dyn Stream<Item = OpResult<Vec<u8>>> + Send + 'static>>;

/// An image manifest a member holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredManifest {
    /// Its bytes, exactly as stored (their digest is the image's identity).
    pub bytes: Vec<u8>,
    /// Its digest, as the member states it.
    pub digest: String,
}

/// The other members, as this supervisor calls them (`addr` is a member's address).
pub trait Peers: Send + Sync {
    /// Tells the leader at `leader` this node is alive and has applied up to `applied`,
    /// with its policy when the state holds another one for it.
    fn heartbeat<'a>(
        &'a self,
        leader: &'a str,
        node: NodeId,
        applied: u64,
        policy: Option<&'a NodePolicy>,
        timeout: Duration,
    ) -> BoxFuture<'a, OpResult<()>>;

    /// Tells the leader at `leader` what this node saw of container `id`.
    fn report<'a>(
        &'a self,
        leader: &'a str,
        node: NodeId,
        id: &'a str,
        observed: &'a Observed,
        timeout: Duration,
    ) -> BoxFuture<'a, OpResult<()>>;

    /// The manifest of `reference` (a reference or a manifest digest) in the store of
    /// the member at `addr`; `OpError::NotFound` when it holds none.
    fn image_manifest<'a>(
        &'a self,
        addr: &'a str,
        reference: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, OpResult<StoredManifest>>;

    /// Blob `digest` from the store of the member at `addr`, from byte `offset` on;
    /// `OpError::NotFound` when it holds none.
    fn image_blob<'a>(
        &'a self,
        addr: &'a str,
        digest: &'a str,
        offset: u64,
    ) -> BoxFuture<'a, OpResult<Chunks>>;
}
