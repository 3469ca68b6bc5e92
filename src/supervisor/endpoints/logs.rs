//! A container's output for any member: served from its node's log files
//! (`runtime::logs`: rotated, each line tagged with its stream and time), or forwarded
//! once to that node over the cluster port (the members' mutual TLS) and streamed back.
//! A follow ends once the container has ended and its last lines are sent, or when the
//! caller goes away.

use super::calls::PeerClients;
use crate::api::pb::{ContainerLogsRequest, LogChunk};
use crate::runtime::logs::{self, Entry, ReadOptions, Stream as Out};
use crate::runtime::state::Status as LocalStatus;
use crate::supervisor::shared::Supervisor;
use std::pin::Pin;
use std::time::Duration;
use tokio_stream::Stream;
use tonic::Status;

/// The stream of `container_logs`.
pub type LogChunks = Pin<Box<dyn Stream<Item = Result<LogChunk, Status>> + Send + 'static>>;

/// Bytes per chunk at most (well under the gRPC message limit).
const CHUNK: usize = 64 * 1024;

/// How often a follow looks for new lines.
const FOLLOW_EVERY: Duration = Duration::from_millis(100);

/// The output of container `r.id`, as `r` asks.
pub(super) async fn logs(
    core: &Supervisor,
    peers: &PeerClients,
    r: ContainerLogsRequest,
) -> Result<LogChunks, Status> {
    if let Some((node, addr)) = super::elsewhere(core, &r.id, r.forwarded)? {
        let request = ContainerLogsRequest {
            forwarded: true,
            ..r
        };
        let stream = peers
            .client_to(&addr)
            .map_err(Status::from)?
            .container_logs(request)
            .await
            .map_err(super::from_node(node))?
            .into_inner();
        return Ok(Box::pin(stream));
    }
    let since = match r.since.as_str() {
        "" => None,
        t => Some(crate::spec::timestamp::parse_rfc3339(t).ok_or_else(|| {
            Status::invalid_argument(format!("since: '{t}' is not an RFC 3339 time in UTC"))
        })?),
    };
    let opts = ReadOptions {
        tail: r.tail.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        since,
        stderr_only: r.stderr_only,
    };
    let runtime = core.local_runtime();
    let dir = runtime.dir(&r.id);
    if !dir.path.is_dir() {
        return Err(Status::not_found(format!(
            "container {} has no output on node {}: it never started there, or its record was removed",
            r.id, core.id
        )));
    }
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    // Off the runtime's threads: a whole log is read and parsed here.
    tokio::task::spawn_blocking(move || {
        let send = |entries: Vec<Entry>| {
            chunks(entries, &opts)
                .into_iter()
                .all(|c| tx.blocking_send(Ok(c)).is_ok())
        };
        let (entries, mut follower) = match logs::read(&dir.path, &opts) {
            Ok(read) => read,
            Err(e) => {
                let why = format!("read the log of {}: {e}", r.id);
                let _ = tx.blocking_send(Err(Status::internal(why)));
                return;
            }
        };
        if !send(entries) || !r.follow {
            return;
        }
        loop {
            // Ended (or removed) before this look: what the look finds is the last.
            let ended = runtime
                .refresh(&dir)
                .map_or(true, |st| st.status == LocalStatus::Exited);
            let more = match follower.next_entries() {
                Ok(m) => m,
                Err(e) => {
                    let _ = tx.blocking_send(Err(Status::internal(format!("read the log: {e}"))));
                    return;
                }
            };
            if !send(more) || ended || tx.is_closed() {
                return;
            }
            std::thread::sleep(FOLLOW_EVERY);
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

/// Entries as chunks: those `opts` keeps, consecutive ones of a stream together.
fn chunks(entries: Vec<Entry>, opts: &ReadOptions) -> Vec<LogChunk> {
    let mut out: Vec<LogChunk> = Vec::new();
    for e in entries {
        if !opts.keeps(&e) {
            continue;
        }
        let stderr = e.stream == Out::Stderr;
        match out.last_mut() {
            Some(c) if c.stderr == stderr && c.data.len() + e.text.len() < CHUNK => {
                c.data.extend(e.output())
            }
            _ => out.push(LogChunk {
                data: e.output(),
                stderr,
            }),
        }
    }
    out
}
