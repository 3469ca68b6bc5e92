//! `haconiwa logs`: a container's output, each stream to its own (stdout to stdout,
//! stderr to stderr). A container of this host's state directory is read from its files
//! (`runtime::logs`); any other id is asked of the cluster (`--server`), whose members
//! stream it from the node that runs it. `--rule NAME` shows every container of a rule
//! at once, each line prefixed with its id.

use super::{Cli, CliError, Command};
use crate::api::pb;
use crate::runtime::logs::{self, Entry, ReadOptions, Stream as Out};
use crate::runtime::state::Status;
use crate::runtime::Runtime;
use std::io::Write;
use std::time::{Duration, SystemTime};

/// How often a local follow looks for new lines.
const FOLLOW_EVERY: Duration = Duration::from_millis(100);

/// What `logs` was asked.
struct Asked {
    name: Option<String>,
    rule: Option<String>,
    follow: bool,
    opts: ReadOptions,
}

/// Runs `haconiwa logs`.
pub fn run(cli: Cli) -> Result<i32, CliError> {
    let Command::Logs {
        name,
        follow,
        tail,
        since,
        stderr,
        rule,
    } = &cli.command
    else {
        return Err("not the logs command".into());
    };
    let asked = Asked {
        name: name.clone(),
        rule: rule.clone(),
        follow: *follow,
        opts: ReadOptions {
            tail: *tail,
            since: since.as_deref().map(parse_since).transpose()?,
            stderr_only: *stderr,
        },
    };
    if let Some(name) = &asked.name {
        // A local name and a cluster id follow the same rule (they become paths).
        crate::spec::names::check("container", name)?;
        let rt = super::local::runtime_of(&cli);
        if rt.get(name).is_ok() {
            return local(&rt, name, &asked);
        }
        if cli.globals.server.is_none() {
            return Err(format!(
                "no container {name} on this host (a cluster container's output needs --server or HACONIWA_SERVER)"
            )
            .into());
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(cluster(&cli, &asked))
}

/// `--since`: a duration back from now (`90s`, `10m`, `2h`, `1d`, as the DSL writes
/// them) or an RFC 3339 time in UTC.
fn parse_since(s: &str) -> Result<SystemTime, CliError> {
    if let Some(t) = crate::spec::timestamp::parse_rfc3339(s) {
        return Ok(t);
    }
    let ms = crate::spec::health::parse_duration_ms(s).map_err(|_| {
        format!(
            "--since '{s}': give a duration back from now (90s, 10m, 2h, 1d) or a time such as 2026-12-06T07:10:00Z"
        )
    })?;
    Ok(SystemTime::now() - Duration::from_millis(ms))
}

/// Writes one stream's bytes; a reader that went away ends us as SIGPIPE would.
fn emit(stderr: bool, data: &[u8]) {
    let written = if stderr {
        std::io::stderr().write_all(data)
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(data).and_then(|()| out.flush())
    };
    if written.is_err() {
        crate::launcher::signals::die_of_sigpipe();
    }
}

fn print(entries: Vec<Entry>) {
    for e in entries {
        emit(e.stream == Out::Stderr, &e.output());
    }
}

/// A container of this host: its files, followed until it has ended.
fn local(rt: &Runtime, name: &str, asked: &Asked) -> Result<i32, CliError> {
    let dir = rt.dir(name);
    let (entries, mut follower) = logs::read(&dir.path, &asked.opts)?;
    print(entries);
    if !asked.follow {
        return Ok(0);
    }
    loop {
        let ended = rt.get(name).map_or(true, |st| st.status == Status::Exited);
        let more: Vec<Entry> = follower.next_entries()?;
        print(more.into_iter().filter(|e| asked.opts.keeps(e)).collect());
        if ended {
            return Ok(0);
        }
        std::thread::sleep(FOLLOW_EVERY);
    }
}

/// The request for one container.
fn request(id: &str, asked: &Asked) -> pb::ContainerLogsRequest {
    pb::ContainerLogsRequest {
        id: id.to_string(),
        follow: asked.follow,
        tail: asked.opts.tail.map(|n| n as u64),
        since: asked
            .opts
            .since
            .map(crate::spec::timestamp::rfc3339)
            .unwrap_or_default(),
        stderr_only: asked.opts.stderr_only,
        forwarded: false,
    }
}

/// A cluster container (or every one of a rule), streamed by a member.
async fn cluster(cli: &Cli, asked: &Asked) -> Result<i32, CliError> {
    let mut client = super::remote::client(cli).await?;
    let ids: Vec<String> = match (&asked.name, &asked.rule) {
        (Some(name), _) => vec![name.clone()],
        (None, Some(rule)) => {
            let list = client
                .list_containers(pb::ListContainersRequest { all: !asked.follow })
                .await
                .map_err(super::remote::status_error)?
                .into_inner()
                .containers;
            let ids: Vec<String> = list
                .into_iter()
                .filter(|c| &c.rule == rule)
                .map(|c| c.id)
                .collect();
            if ids.is_empty() {
                return Err(format!("rule {rule} has no containers").into());
            }
            ids
        }
        (None, None) => return Err("logs: name a container, or a rule with --rule".into()),
    };
    let prefix = asked.rule.is_some();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, Result<pb::LogChunk, CliError>)>(64);
    for id in ids {
        let mut c = client.clone();
        let req = request(&id, asked);
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut stream = match c.container_logs(req).await {
                Ok(s) => s.into_inner(),
                Err(s) => {
                    let _ = tx.send((id, Err(super::remote::status_error(s)))).await;
                    return;
                }
            };
            loop {
                let item = match stream.message().await {
                    Ok(Some(chunk)) => Ok(chunk),
                    Ok(None) => return,
                    Err(s) => Err(super::remote::status_error(s)),
                };
                let failed = item.is_err();
                if tx.send((id.clone(), item)).await.is_err() || failed {
                    return;
                }
            }
        });
    }
    drop(tx);
    let mut failed = None;
    while let Some((id, item)) = rx.recv().await {
        match item {
            Ok(chunk) if prefix => {
                let mut text = Vec::new();
                for line in chunk.data.split_inclusive(|b| *b == b'\n') {
                    text.extend_from_slice(format!("[{id}] ").as_bytes());
                    text.extend_from_slice(line);
                }
                emit(chunk.stderr, &text);
            }
            Ok(chunk) => emit(chunk.stderr, &chunk.data),
            Err(e) if prefix => eprintln!("haconiwa: {id}: {}", e.message),
            Err(e) => failed = Some(e),
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(0),
    }
}
