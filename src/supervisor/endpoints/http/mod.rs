//! The HTTP listener (`http_listen`, off by default): `/metrics` for Prometheus, the
//! live dashboard (`/`), its data (`/api/state`), its server-sent events
//! (`/api/events`, the resumable event stream) and a container's recent output
//! (`/api/logs?id=ID&tail=N`, from its node as `haconiwa logs` has it). Beyond loopback every route needs the
//! cluster token (`Authorization: Bearer TOKEN`, or `?token=TOKEN` for a browser, whose
//! EventSource cannot send headers).

mod metrics;
mod state;

use crate::cluster::event_log::Logged;
use crate::supervisor::shared::Supervisor;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_stream::StreamExt;

/// The dashboard: one page, served from the binary.
const DASHBOARD: &str = include_str!("dashboard.html");

#[derive(Clone)]
struct Web {
    core: Arc<Supervisor>,
    /// Clients to the other members (a container's output comes from its node).
    peers: Arc<super::calls::PeerClients>,
    /// None on loopback (no token asked); else `Bearer TOKEN`.
    token: Option<String>,
}

/// Binds `addr` and serves until the process ends; with the tasks that count events and
/// elections for `/metrics`.
pub async fn start(
    core: Arc<Supervisor>,
    peers: Arc<super::calls::PeerClients>,
    addr: SocketAddr,
) -> std::io::Result<Vec<tokio::task::JoinHandle<()>>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let token = (!addr.ip().is_loopback()).then(|| core.config.token.clone());
    tracing::info!(
        "HTTP on {addr}: /metrics, the dashboard at /{}",
        if token.is_some() {
            " (token required: ?token= or Authorization)"
        } else {
            ""
        }
    );
    let web = Web {
        core: core.clone(),
        peers,
        token,
    };
    let app = Router::new()
        .route("/", get(dashboard))
        .route("/metrics", get(metrics))
        .route("/api/state", get(api_state))
        .route("/api/events", get(api_events))
        .route("/api/logs", get(api_logs))
        .with_state(web);
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("HTTP listener: {e}");
        }
    });
    Ok(vec![
        server,
        tokio::spawn(count_events(core.clone())),
        tokio::spawn(count_elections(core)),
    ])
}

/// The value of `name` in the query string.
fn query<'a>(uri: &'a Uri, name: &str) -> Option<&'a str> {
    uri.query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the request carries the token (always true on loopback).
fn allowed(token: Option<&str>, headers: &HeaderMap, uri: &Uri) -> bool {
    let Some(token) = token else { return true };
    let header_ok = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.strip_prefix("Bearer ") == Some(token));
    header_ok || query(uri, "token") == Some(token)
}

fn refused() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        "the cluster token is required: Authorization: Bearer TOKEN, or ?token=TOKEN\n",
    )
        .into_response()
}

async fn dashboard(State(web): State<Web>, headers: HeaderMap, uri: Uri) -> Response {
    if !allowed(web.token.as_deref(), &headers, &uri) {
        return refused();
    }
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        DASHBOARD,
    )
        .into_response()
}

async fn metrics(State(web): State<Web>, headers: HeaderMap, uri: Uri) -> Response {
    if !allowed(web.token.as_deref(), &headers, &uri) {
        return refused();
    }
    match metrics::render(&web.core) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("encode: {e}\n")).into_response(),
    }
}

/// Lines of output `/api/logs` gives by default, and at most.
const LOG_LINES: (u64, u64) = (50, 1000);

/// `{"id", "lines": [{"stderr", "text"}]}`: the last lines of a container's output.
async fn api_logs(State(web): State<Web>, headers: HeaderMap, uri: Uri) -> Response {
    if !allowed(web.token.as_deref(), &headers, &uri) {
        return refused();
    }
    let Some(id) = query(&uri, "id").filter(|i| !i.is_empty()) else {
        return (StatusCode::BAD_REQUEST, "id=CONTAINER is required\n").into_response();
    };
    let tail = query(&uri, "tail")
        .and_then(|t| t.parse().ok())
        .unwrap_or(LOG_LINES.0)
        .min(LOG_LINES.1);
    let req = crate::api::pb::ContainerLogsRequest {
        id: id.to_string(),
        tail: Some(tail),
        ..Default::default()
    };
    let failed = |s: tonic::Status| {
        let code = match s.code() {
            tonic::Code::NotFound => StatusCode::NOT_FOUND,
            tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
            _ => StatusCode::BAD_GATEWAY,
        };
        (code, format!("{}\n", s.message())).into_response()
    };
    let mut stream = match super::logs::logs(&web.core, &web.peers, req).await {
        Ok(s) => s,
        Err(s) => return failed(s),
    };
    let mut lines = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => {
                let text = String::from_utf8_lossy(&chunk.data);
                for l in text.lines() {
                    lines.push(serde_json::json!({ "stderr": chunk.stderr, "text": l }));
                }
            }
            Err(s) => return failed(s),
        }
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "id": id, "lines": lines }).to_string(),
    )
        .into_response()
}

async fn api_state(State(web): State<Web>, headers: HeaderMap, uri: Uri) -> Response {
    if !allowed(web.token.as_deref(), &headers, &uri) {
        return refused();
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        state::json(&web.core).to_string(),
    )
        .into_response()
}

/// The position a client asks to resume after: `Last-Event-ID` (what a browser's
/// EventSource sends when it reconnects) or `?after=INDEX.SUB`.
fn resume_from(headers: &HeaderMap, uri: &Uri) -> Option<(u64, u32)> {
    let raw = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or_else(|| query(uri, "after"))?;
    let (i, s) = raw.split_once('.').unwrap_or((raw, "4294967295"));
    Some((i.parse().ok()?, s.parse().ok()?))
}

async fn api_events(State(web): State<Web>, headers: HeaderMap, uri: Uri) -> Response {
    if !allowed(web.token.as_deref(), &headers, &uri) {
        return refused();
    }
    let log = &web.core.feed.log;
    let (backlog, rx) = match resume_from(&headers, &uri) {
        Some((i, s)) => match log.follow(i, s) {
            Ok(x) => x,
            // Too old: the page lists the state again and follows from now.
            Err(e) => {
                return (StatusCode::GONE, format!("{e}\n")).into_response();
            }
        },
        None => (Vec::new(), log.live().0),
    };
    let core = web.core.clone();
    let to_sse = move |l: Logged| -> Result<SseEvent, std::convert::Infallible> {
        let id = format!("{}.{}", l.event.index, l.sub);
        let data = state::event_json(&core, l);
        Ok(SseEvent::default()
            .id(id)
            .event("event")
            .data(data.to_string()))
    };
    let live = tokio_stream::wrappers::BroadcastStream::new(rx)
        .filter_map(|r| r.ok())
        .map(to_sse.clone());
    let stream = tokio_stream::iter(backlog).map(to_sse).chain(live);
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Counts committed events by kind (and OOM kills on this node) for `/metrics`.
async fn count_events(core: Arc<Supervisor>) {
    let mut rx = core.feed.events.subscribe();
    loop {
        match rx.recv().await {
            Ok(e) => {
                core.stats
                    .events
                    .get_or_create(&crate::supervisor::stats::label("kind", e.kind.name()))
                    .inc();
                if let Some(c) = &e.container {
                    if c.node == core.id
                        && matches!(
                            c.observed,
                            crate::cluster::state::Observed::Exited {
                                oom_killed: true,
                                ..
                            }
                        )
                    {
                        core.stats.oom_kills.inc();
                    }
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => return,
        }
    }
}

/// Counts the Raft term changes this member sees.
async fn count_elections(core: Arc<Supervisor>) {
    // The server metrics change with the vote, not at every turn of the core loop.
    let mut rx = core.raft.server_metrics();
    let mut term = rx.borrow().vote.leader_id().term;
    while rx.changed().await.is_ok() {
        let now = rx.borrow().vote.leader_id().term;
        if now > term {
            core.stats.elections.inc_by(now - term);
            term = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(token: Option<&str>, auth: Option<&str>, uri: &str) -> bool {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, a.parse().unwrap());
        }
        allowed(token, &h, &uri.parse().unwrap())
    }

    #[test]
    fn beyond_loopback_the_token_is_asked_for() {
        assert!(check(None, None, "/metrics"), "loopback asks for nothing");
        assert!(!check(Some("s3cret"), None, "/metrics"));
        assert!(check(Some("s3cret"), Some("Bearer s3cret"), "/metrics"));
        assert!(!check(Some("s3cret"), Some("Bearer wrong"), "/metrics"));
        assert!(check(
            Some("s3cret"),
            None,
            "/api/events?after=3.0&token=s3cret"
        ));
        assert!(!check(Some("s3cret"), None, "/api/events?token=s3cre"));
    }

    #[test]
    fn a_browser_resumes_from_its_last_event_id() {
        let mut h = HeaderMap::new();
        let uri: Uri = "/api/events?after=10".parse().unwrap();
        assert_eq!(resume_from(&h, &uri), Some((10, u32::MAX)));
        h.insert("last-event-id", "42.3".parse().unwrap());
        assert_eq!(resume_from(&h, &uri), Some((42, 3)));
        assert_eq!(
            resume_from(&HeaderMap::new(), &"/api/events".parse().unwrap()),
            None
        );
    }
}
