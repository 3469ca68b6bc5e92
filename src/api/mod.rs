//! The gRPC surface: code generated from `proto/`, the token check every service sits
//! behind, and the client the CLI and the supervisors use.

pub mod certs;
pub mod codec;
pub mod json;
pub mod listener;
pub mod tls;

use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

/// Generated messages and services.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("haconiwa.v1");
}

/// The encoded descriptors of `proto/haconiwa.proto`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("haconiwa_descriptor");

/// Metadata key of the leader hint on forwarded replies.
pub const LEADER_HEADER: &str = "x-haconiwa-leader";

/// Metadata flag on a request a follower forwarded to the leader: never forwarded again.
pub const FORWARDED_HEADER: &str = "x-haconiwa-forwarded";

/// Checks `authorization: Bearer TOKEN` on every incoming call.
#[derive(Clone)]
pub struct TokenCheck {
    expected: String,
}

impl TokenCheck {
    /// A check for this cluster token.
    pub fn new(token: &str) -> Self {
        TokenCheck {
            expected: format!("Bearer {token}"),
        }
    }
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        // Constant-time comparison: the token is the cluster's only secret.
        let a = given.as_bytes();
        let b = self.expected.as_bytes();
        let mut diff = a.len() ^ b.len();
        for (i, x) in b.iter().enumerate() {
            diff |= (*x ^ a.get(i).copied().unwrap_or(0)) as usize;
        }
        if given.is_empty() {
            return Err(Status::unauthenticated(
                "missing cluster token (authorization: Bearer TOKEN)",
            ));
        }
        if diff != 0 {
            return Err(Status::unauthenticated("wrong cluster token"));
        }
        // The connection made an authenticated call: the door stops timing it.
        if let Some(c) = req.extensions().get::<listener::ConnInfo>() {
            c.authenticate();
        }
        Ok(req)
    }
}

/// Adds the cluster token to every outgoing call.
#[derive(Clone)]
pub struct TokenInject {
    header: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl TokenInject {
    /// Sends this token (an empty token sends none).
    pub fn new(token: &str) -> Result<Self, ClientError> {
        let header = if token.is_empty() {
            None
        } else {
            Some(
                format!("Bearer {token}")
                    .parse()
                    .map_err(|_| ClientError::BadToken)?,
            )
        };
        Ok(TokenInject { header })
    }
}

impl tonic::service::Interceptor for TokenInject {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(h) = &self.header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    }
}

/// What a client presents to the cluster: the token on every call, and TLS (the CA it
/// trusts, its own certificate) when the cluster uses it.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// The cluster token.
    pub token: String,
    /// TLS, or plaintext when None.
    pub tls: Option<tls::ClientTls>,
}

impl Credentials {
    /// The token alone (a cluster without TLS).
    pub fn token(token: &str) -> Credentials {
        Credentials {
            token: token.to_string(),
            tls: None,
        }
    }
}

/// A channel with the token on every call.
pub type AuthChannel = InterceptedService<Channel, TokenInject>;

/// Client-side failures before a call is made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No address given.
    #[error("no server given: pass --server ADDR or set HACONIWA_SERVER")]
    NoServer,
    /// The token has characters that cannot travel in metadata.
    #[error("the cluster token must be printable ASCII")]
    BadToken,
    /// The address does not parse.
    #[error("invalid server address '{0}'")]
    BadAddress(String),
    /// TLS files that cannot be used.
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    /// An address with `https://` and no `--ca`, or the reverse.
    #[error("{0}")]
    Scheme(String),
    /// Nobody answered.
    #[error("cannot reach any of {servers}: {reason}")]
    Unreachable {
        /// The addresses tried.
        servers: String,
        /// The last error.
        reason: String,
    },
}

/// An endpoint for `addr` (`host:port` or a URL), optionally bound to a local address;
/// `https` with the client TLS of `tls`.
pub fn endpoint(
    addr: &str,
    local: Option<std::net::IpAddr>,
    tls: Option<&tls::ClientTls>,
) -> Result<Endpoint, ClientError> {
    let bare = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr);
    if addr.starts_with("https://") && tls.is_none() {
        return Err(ClientError::Scheme(format!(
            "{addr}: https needs the cluster's CA (--ca or HACONIWA_CA)"
        )));
    }
    let url = match tls {
        Some(_) => format!("https://{bare}"),
        None => format!("http://{bare}"),
    };
    let mut e = Endpoint::from_shared(url)
        .map_err(|_| ClientError::BadAddress(addr.to_string()))?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        // A connection that lived through a silent partition is found dead within a
        // second and replaced, instead of swallowing calls until they time out.
        .http2_keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE)
        .keep_alive_while_idle(true)
        .tcp_keepalive(Some(Duration::from_secs(5)))
        .local_address(local);
    if let Some(t) = tls {
        e = e
            .tls_config(tls::client_config(t)?)
            .map_err(|err| ClientError::Tls(tls::TlsError::Config(error_chain(&err))))?;
    }
    Ok(e)
}

/// HTTP/2 ping interval and timeout of every channel and of the server.
pub const KEEPALIVE: Duration = Duration::from_millis(500);

/// How long a CLI call may take before it fails naming the member it asked.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(10);

/// A lazily connected, token-carrying channel to one member.
pub fn lazy_channel(
    addr: &str,
    creds: &Credentials,
    local: Option<std::net::IpAddr>,
) -> Result<AuthChannel, ClientError> {
    let ch = endpoint(addr, local, creds.tls.as_ref())?.connect_lazy();
    Ok(InterceptedService::new(ch, TokenInject::new(&creds.token)?))
}

/// Connects to the first member of `servers` (comma-separated or a list) that answers.
pub async fn connect(
    servers: &[String],
    creds: &Credentials,
) -> Result<pb::cluster_client::ClusterClient<AuthChannel>, ClientError> {
    connect_named(servers, creds).await.map(|(c, _)| c)
}

/// [`connect`], also telling which member answered; every call on the client has a
/// deadline of [`CLIENT_DEADLINE`].
pub async fn connect_named(
    servers: &[String],
    creds: &Credentials,
) -> Result<(pb::cluster_client::ClusterClient<AuthChannel>, String), ClientError> {
    let list: Vec<String> = servers
        .iter()
        .flat_map(|s| s.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if list.is_empty() {
        return Err(ClientError::NoServer);
    }
    let inject = TokenInject::new(&creds.token)?;
    let mut last = String::new();
    for addr in &list {
        match endpoint(addr, None, creds.tls.as_ref())?
            .timeout(CLIENT_DEADLINE)
            .connect()
            .await
        {
            Ok(ch) => {
                return Ok((
                    pb::cluster_client::ClusterClient::new(InterceptedService::new(ch, inject))
                        .max_decoding_message_size(64 << 20),
                    addr.clone(),
                ))
            }
            Err(e) => last = format!("{addr}: {}", error_chain(&e)),
        }
    }
    Err(ClientError::Unreachable {
        servers: list.join(", "),
        reason: last,
    })
}

/// An error and its causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}
