//! The OCI distribution API, client side: manifests and blobs of one repository, over
//! HTTP/1.1 on hyper with our own rustls configuration (the system's roots plus a CA per
//! registry), plain HTTP only for registries listed as insecure (and localhost),
//! Docker's token flow (a `Bearer` challenge answered at its realm, with the user's
//! credentials when the auth file has some) and basic auth, redirects (credentials are
//! not sent to another host), and ranged requests so that a broken blob download
//! resumes where it stopped.
//!
//! Why our own client and not `oci-client`/`reqwest`: hyper, rustls and tokio are already
//! in the tree (tonic), so this costs no build time, and a pull needs what those crates
//! hide: resuming into a partial file, hashing while streaming, telling a refusal (the
//! image is bad: never retry) from a broken transfer (resume later).

pub use super::access::ImagesConfig;
use super::access::{
    credentials_for, is_loopback, parse_challenge, percent_encode, tls_config, Credentials,
};
use super::digest::Digest;
use super::ingest::Ingest;
use super::install::{BoxFuture, FetchError, Fetched, Fetcher, MANIFEST_LIMIT};
use super::ImageError;
use crate::spec::ImageRef;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode, Uri};
use serde::Deserialize;
use std::collections::BTreeMap;

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Connecting (TCP and TLS) may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A response's headers may take this long.
const HEADERS_TIMEOUT: Duration = Duration::from_secs(30);
/// A body may pause this long between two chunks.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Redirects followed for one request.
const MAX_REDIRECTS: usize = 5;

/// The media types a manifest request accepts.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// A client of one repository of one registry.
pub struct RegistryFetcher {
    /// The registry as the reference names it.
    registry: String,
    /// Where requests go (`host:port` of the registry or its mirror).
    endpoint: String,
    /// Whether plain HTTP may be used (a registry listed as insecure, or loopback): then
    /// HTTPS is tried first and plain HTTP only when the server does not speak TLS.
    plain_allowed: bool,
    /// The scheme that answered (decided on the first connection).
    scheme: Mutex<Option<&'static str>>,
    repository: String,
    credentials: Option<Credentials>,
    tls: Arc<rustls::ClientConfig>,
    /// The `Authorization` value that worked last.
    authorization: Mutex<Option<String>>,
    /// Hosts credentials may go to over plain HTTP (the insecure-listed ones).
    insecure: Vec<String>,
}

impl RegistryFetcher {
    /// A client for `image`'s repository, configured by `cfg`.
    pub fn new(cfg: &ImagesConfig, image: &ImageRef) -> Result<RegistryFetcher, ImageError> {
        let endpoint = match cfg.mirrors.get(&image.registry) {
            Some(m) => m.clone(),
            None if image.registry == crate::spec::image_ref::DOCKER_HUB => {
                "registry-1.docker.io".to_string()
            }
            None => image.registry.clone(),
        };
        let ca = cfg
            .registry_ca
            .get(&endpoint)
            .or_else(|| cfg.registry_ca.get(&image.registry));
        let plain = ca.is_none()
            && (cfg
                .insecure_registries
                .iter()
                .any(|h| *h == endpoint || *h == image.registry)
                || is_loopback(&endpoint));
        let credentials = match cfg.auth_path() {
            Some(p) => credentials_for(&p, &image.registry)?,
            None => None,
        };
        Ok(RegistryFetcher {
            registry: image.registry.clone(),
            endpoint,
            plain_allowed: plain,
            scheme: Mutex::new(None),
            repository: image.repository.clone(),
            credentials,
            tls: tls_config(ca.map(|p| p.as_path()))?,
            authorization: Mutex::new(None),
            insecure: cfg.insecure_registries.clone(),
        })
    }

    /// Opens a connection to the place `uri` names (one per request: a pull makes a
    /// handful, each layer's download is one long request).
    async fn connection(&self, uri: &Uri) -> Result<SendRequest<Empty<Bytes>>, FetchError> {
        let scheme = uri.scheme_str().unwrap_or("https").to_string();
        let host = uri
            .host()
            .ok_or_else(|| FetchError::Refused(format!("{uri}: no host")))?
            .to_string();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let addr_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((addr_host.as_str(), port)),
        )
        .await
        .map_err(|_| FetchError::Transfer(format!("connect to {host}:{port}: timed out")))?
        .map_err(|e| FetchError::Transfer(format!("connect to {host}:{port}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let send = if scheme == "https" {
            let name = rustls::pki_types::ServerName::try_from(addr_host.clone())
                .map_err(|e| FetchError::Refused(format!("{host}: {e}")))?;
            let tls = tokio::time::timeout(
                CONNECT_TIMEOUT,
                tokio_rustls::TlsConnector::from(self.tls.clone()).connect(name, tcp),
            )
            .await
            .map_err(|_| FetchError::Transfer(format!("TLS with {host}:{port}: timed out")))?
            .map_err(|e| FetchError::Refused(format!("TLS with {host}:{port}: {e}")))?;
            handshake(hyper_util::rt::TokioIo::new(tls)).await?
        } else {
            handshake(hyper_util::rt::TokioIo::new(tcp)).await?
        };
        Ok(send)
    }

    /// One GET with redirects; `authorization` goes only to the registry's own host.
    async fn get_once(
        &self,
        url: &str,
        headers: &[(&str, String)],
        authorization: Option<&str>,
    ) -> Result<Response<hyper::body::Incoming>, FetchError> {
        let mut uri: Uri = url
            .parse()
            .map_err(|e| FetchError::Refused(format!("{url}: {e}")))?;
        let origin = uri.authority().map(|a| a.to_string());
        for _ in 0..=MAX_REDIRECTS {
            let same_host = uri.authority().map(|a| a.to_string()) == origin;
            let mut send = self.connection(&uri).await?;
            let path = uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into());
            let host = uri.authority().map(|a| a.to_string()).unwrap_or_default();
            let mut req = Request::get(path).header("host", host).header(
                "user-agent",
                concat!("haconiwa/", env!("CARGO_PKG_VERSION")),
            );
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            if let (Some(a), true) = (authorization, same_host) {
                req = req.header("authorization", a);
            }
            let req = req
                .body(Empty::new())
                .map_err(|e| FetchError::Refused(format!("request: {e}")))?;
            let resp = tokio::time::timeout(HEADERS_TIMEOUT, send.send_request(req))
                .await
                .map_err(|_| {
                    FetchError::Transfer(format!("{uri}: no answer within {HEADERS_TIMEOUT:?}"))
                })?
                .map_err(|e| FetchError::Transfer(format!("{uri}: {e}")))?;
            let status = resp.status();
            if status.is_redirection() {
                let loc = resp
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| {
                        FetchError::Refused(format!("{uri}: a redirect without a location"))
                    })?
                    .to_string();
                drop(resp);
                uri = if loc.starts_with("http://") || loc.starts_with("https://") {
                    loc.parse()
                } else {
                    format!(
                        "{}://{}{}",
                        uri.scheme_str().unwrap_or("https"),
                        uri.authority().map(|a| a.as_str()).unwrap_or(""),
                        loc
                    )
                    .parse()
                }
                .map_err(|e| FetchError::Refused(format!("redirect to {loc}: {e}")))?;
                continue;
            }
            return Ok(resp);
        }
        Err(FetchError::Refused(format!(
            "{url}: more than {MAX_REDIRECTS} redirects"
        )))
    }

    /// A GET of the registry API with authentication: answers a `401` challenge once
    /// (a bearer token from its realm, or basic credentials) and keeps what worked.
    async fn get(
        &self,
        path: &str,
        headers: &[(&str, String)],
    ) -> Result<Response<hyper::body::Incoming>, FetchError> {
        let url = format!("{}://{}{path}", self.scheme().await?, self.endpoint);
        let auth = self
            .authorization
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let resp = self.get_once(&url, headers, auth.as_deref()).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let _ = resp.into_body().collect().await;
        let Some((scheme, params)) = challenge.as_deref().and_then(parse_challenge) else {
            return Err(FetchError::Refused(format!(
                "registry {}: unauthorized, and no challenge to answer",
                self.registry
            )));
        };
        let authorization = match scheme.as_str() {
            "basic" => match &self.credentials {
                Some(c) => format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("{}:{}", c.user, c.password))
                ),
                None => {
                    return Err(FetchError::Refused(format!(
                        "registry {}: unauthorized: it wants a user and password (an auth file entry for {}: --authfile)",
                        self.registry, self.registry
                    )))
                }
            },
            "bearer" => format!("Bearer {}", self.token(&params).await?),
            other => {
                return Err(FetchError::Refused(format!(
                    "registry {}: unsupported authentication scheme '{other}'",
                    self.registry
                )))
            }
        };
        let resp = self.get_once(&url, headers, Some(&authorization)).await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            let msg = error_message(resp).await;
            return Err(FetchError::Refused(format!(
                "registry {}: unauthorized{}: {msg}",
                self.registry,
                if self.credentials.is_some() {
                    " with the auth file's credentials"
                } else {
                    ""
                }
            )));
        }
        *self.authorization.lock().unwrap_or_else(|p| p.into_inner()) = Some(authorization);
        Ok(resp)
    }

    /// `https`, or `http` for a registry that may be spoken to in plain and does not
    /// speak TLS (as Docker does for insecure registries: TLS first). A certificate the
    /// client does not trust is an error, never a reason to drop TLS.
    async fn scheme(&self) -> Result<&'static str, FetchError> {
        if let Some(s) = *self.scheme.lock().unwrap_or_else(|p| p.into_inner()) {
            return Ok(s);
        }
        let chosen = if !self.plain_allowed {
            "https"
        } else {
            let uri: Uri = format!("https://{}/v2/", self.endpoint)
                .parse()
                .map_err(|e| FetchError::Refused(format!("{}: {e}", self.endpoint)))?;
            match self.connection(&uri).await {
                Ok(_) => "https",
                Err(FetchError::Refused(m))
                    if m.contains("InvalidContentType") || m.contains("corrupt message") =>
                {
                    "http"
                }
                Err(e) => return Err(e),
            }
        };
        *self.scheme.lock().unwrap_or_else(|p| p.into_inner()) = Some(chosen);
        Ok(chosen)
    }

    /// A token from a `Bearer` challenge's realm.
    async fn token(&self, params: &BTreeMap<String, String>) -> Result<String, FetchError> {
        let realm = params.get("realm").ok_or_else(|| {
            FetchError::Refused(format!(
                "registry {}: a bearer challenge without a realm",
                self.registry
            ))
        })?;
        let mut query = Vec::new();
        if let Some(s) = params.get("service") {
            query.push(format!("service={}", percent_encode(s)));
        }
        let scope = params
            .get("scope")
            .cloned()
            .unwrap_or_else(|| format!("repository:{}:pull", self.repository));
        query.push(format!("scope={}", percent_encode(&scope)));
        let url = format!(
            "{realm}{}{}",
            if realm.contains('?') { "&" } else { "?" },
            query.join("&")
        );
        let realm_uri: Uri = realm.parse().map_err(|e| {
            FetchError::Refused(format!(
                "registry {}: token realm {realm}: {e}",
                self.registry
            ))
        })?;
        let realm_host = realm_uri
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        if self.credentials.is_some()
            && realm_uri.scheme_str() != Some("https")
            && !is_loopback(&realm_host)
            && !self.insecure.contains(&realm_host)
        {
            return Err(FetchError::Refused(format!(
                "registry {}: its token service {realm} is plain HTTP: the credentials are not sent there (list {realm_host} as an insecure registry to allow it)",
                self.registry
            )));
        }
        let basic = self.credentials.as_ref().map(|c| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", c.user, c.password))
            )
        });
        // The realm is usually another host: the credentials go to it on purpose.
        let resp = self.get_once_to_realm(&url, basic.as_deref()).await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let msg = error_message(resp).await;
            return Err(FetchError::Refused(format!(
                "registry {}: the token service said {status}: {msg}",
                self.registry
            )));
        }
        let body = read_limited(resp, 1 << 20).await?;
        #[derive(Deserialize)]
        struct Token {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let t: Token = serde_json::from_slice(&body).map_err(|e| {
            FetchError::Refused(format!("registry {}: token answer: {e}", self.registry))
        })?;
        t.token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                FetchError::Refused(format!(
                    "registry {}: the token answer has no token",
                    self.registry
                ))
            })
    }

    async fn get_once_to_realm(
        &self,
        url: &str,
        authorization: Option<&str>,
    ) -> Result<Response<hyper::body::Incoming>, FetchError> {
        self.get_once(url, &[], authorization).await
    }
}

async fn handshake<I>(io: I) -> Result<SendRequest<Empty<Bytes>>, FetchError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (send, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| FetchError::Transfer(format!("HTTP: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// Reads a whole (small) body.
async fn read_limited(
    resp: Response<hyper::body::Incoming>,
    limit: usize,
) -> Result<Vec<u8>, FetchError> {
    let mut body = resp.into_body();
    let mut out = Vec::new();
    while let Some(frame) = tokio::time::timeout(IDLE_TIMEOUT, body.frame())
        .await
        .map_err(|_| FetchError::Transfer("the registry stopped sending".into()))?
    {
        let frame = frame.map_err(|e| FetchError::Transfer(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            out.extend_from_slice(&data);
            if out.len() > limit {
                return Err(FetchError::Refused(format!("an answer over {limit} bytes")));
            }
        }
    }
    Ok(out)
}

/// The registry's own words for an error (`{"errors":[{"code","message"}]}`), or the
/// body's start.
async fn error_message(resp: Response<hyper::body::Incoming>) -> String {
    let status = resp.status();
    let body = read_limited(resp, 64 * 1024).await.unwrap_or_default();
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(Deserialize)]
    struct ErrorItem {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Errors>(&body) {
        Ok(e) if !e.errors.is_empty() => e
            .errors
            .iter()
            .map(|i| format!("{} {}", i.code, i.message).trim().to_string())
            .collect::<Vec<_>>()
            .join("; "),
        _ => {
            let text = String::from_utf8_lossy(&body);
            let text = text.trim();
            if text.is_empty() {
                status.to_string()
            } else {
                format!("{status}: {}", text.chars().take(200).collect::<String>())
            }
        }
    }
}

/// A registry answer's status as a fetch error.
async fn status_error(what: &str, resp: Response<hyper::body::Incoming>) -> FetchError {
    let status = resp.status();
    let msg = error_message(resp).await;
    let text = format!("{what}: {msg}");
    if status == StatusCode::NOT_FOUND {
        FetchError::NotFound(text)
    } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        FetchError::Transfer(text)
    } else {
        FetchError::Refused(text)
    }
}

impl Fetcher for RegistryFetcher {
    fn source(&self) -> String {
        format!("registry {}", self.registry)
    }

    fn manifest<'a>(&'a self, target: &'a str) -> BoxFuture<'a, Result<Fetched, FetchError>> {
        Box::pin(async move {
            let path = format!("/v2/{}/manifests/{target}", self.repository);
            let resp = self.get(&path, &[("accept", ACCEPT.to_string())]).await?;
            if !resp.status().is_success() {
                let sep = if target.starts_with("sha256:") {
                    '@'
                } else {
                    ':'
                };
                return Err(status_error(
                    &format!(
                        "registry {}: {}{sep}{target}",
                        self.registry, self.repository
                    ),
                    resp,
                )
                .await);
            }
            let media_type = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(|s| s.split(';').next().unwrap_or(s).trim().to_string());
            let digest = match resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
            {
                Some(d) => Some(Digest::parse(d).map_err(FetchError::Refused)?),
                None => None,
            };
            let bytes = read_limited(resp, MANIFEST_LIMIT as usize).await?;
            Ok(Fetched {
                bytes,
                media_type,
                digest,
            })
        })
    }

    fn blob<'a>(
        &'a self,
        digest: &'a Digest,
        ingest: &'a mut Ingest,
        progress: &'a (dyn Fn(u64) + Send + Sync),
    ) -> BoxFuture<'a, Result<(), FetchError>> {
        Box::pin(async move {
            let path = format!("/v2/{}/blobs/{digest}", self.repository);
            let offset = ingest.offset();
            let mut headers = Vec::new();
            if offset > 0 && offset < ingest.size() {
                headers.push(("range", format!("bytes={offset}-")));
            }
            let resp = self.get(&path, &headers).await?;
            let start = match resp.status() {
                StatusCode::PARTIAL_CONTENT => offset,
                StatusCode::OK => 0,
                StatusCode::RANGE_NOT_SATISFIABLE => {
                    // What is here is already all of it (or wrong): start over.
                    let _ = resp.into_body().collect().await;
                    ingest
                        .restart_at(0)
                        .map_err(|e| FetchError::Transfer(e.to_string()))?;
                    return Box::pin(self.blob(digest, ingest, progress)).await;
                }
                _ => {
                    return Err(status_error(
                        &format!("registry {}: blob {digest}", self.registry),
                        resp,
                    )
                    .await)
                }
            };
            ingest
                .restart_at(start)
                .map_err(|e| FetchError::Transfer(e.to_string()))?;
            progress(start);
            let mut body = resp.into_body();
            loop {
                let frame = tokio::time::timeout(IDLE_TIMEOUT, body.frame())
                    .await
                    .map_err(|_| {
                        FetchError::Transfer(format!("blob {digest}: the registry stopped sending"))
                    })?;
                let Some(frame) = frame else { break };
                let frame =
                    frame.map_err(|e| FetchError::Transfer(format!("blob {digest}: {e}")))?;
                if let Ok(data) = frame.into_data() {
                    ingest
                        .write_progress(&data, progress)
                        .map_err(FetchError::Refused)?;
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::access::auth_key_host;

    #[test]
    fn credentials_never_go_to_a_plain_http_token_service_elsewhere() {
        let dir = std::env::temp_dir().join(format!("hcw-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let auth = dir.join("auth.json");
        std::fs::write(
            &auth,
            r#"{"auths": {"registry.example": {"username": "u", "password": "p"}}}"#,
        )
        .unwrap();
        let cfg = ImagesConfig {
            auth_file: Some(auth),
            ..Default::default()
        };
        let r = ImageRef::parse("registry.example/app:1").unwrap();
        let f = RegistryFetcher::new(&cfg, &r).unwrap();
        let params: BTreeMap<String, String> =
            [("realm".to_string(), "http://auth.example/token".to_string())].into();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let e = rt.block_on(f.token(&params)).unwrap_err().to_string();
        assert!(
            e.contains("is plain HTTP: the credentials are not sent there"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn challenges_and_auth_file_keys() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(s, "bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["scope"], "repository:library/busybox:pull");
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(s, "basic");
        assert_eq!(p["realm"], "Registry Realm");
        assert_eq!(auth_key_host("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(auth_key_host("localhost:5000"), "localhost:5000");
        assert_eq!(auth_key_host("http://10.0.0.1:5000/"), "10.0.0.1:5000");
        assert_eq!(
            percent_encode("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
        assert!(is_loopback("localhost:5000") && is_loopback("127.0.0.1:5000"));
        assert!(!is_loopback("10.1.1.1:5000"));
    }
}
