//! Cluster commands: talk to any member over gRPC (`--server`, `--token`).

use super::supervise::parse_labels;
use super::{Cli, CliError, ClusterCommand, Command, MirrorCommand, WatchCommand};
use crate::api::pb;
use crate::api::pb::cluster_client::ClusterClient;
use crate::api::AuthChannel;
use tokio_stream::StreamExt;

/// The member this command talks to (one process, one command).
static MEMBER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
/// What a transport failure may be caused by, given what the command was given: no --ca
/// (the cluster may use TLS), or a --ca without a certificate (it may verify clients).
static TRANSPORT_HINT: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

pub(super) fn status_error(s: tonic::Status) -> CliError {
    let code = match s.code() {
        tonic::Code::NotFound => "not found",
        tonic::Code::InvalidArgument => "invalid argument",
        tonic::Code::FailedPrecondition => "refused",
        tonic::Code::Unauthenticated => "unauthenticated",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::PermissionDenied => "permission denied",
        tonic::Code::DeadlineExceeded => "deadline exceeded",
        _ => "error",
    };
    // When the member itself is the problem, say which one was asked.
    let member = match s.code() {
        tonic::Code::Unavailable
        | tonic::Code::DeadlineExceeded
        | tonic::Code::Cancelled
        | tonic::Code::Unknown => MEMBER
            .get()
            .map(|m| format!("member {m}: "))
            .unwrap_or_default(),
        _ => String::new(),
    };
    let message = match s.code() {
        tonic::Code::DeadlineExceeded => format!(
            "no answer within {} s",
            crate::api::CLIENT_DEADLINE.as_secs()
        ),
        // A transport failure says why underneath (TLS refused, connection reset).
        _ => match std::error::Error::source(&s) {
            Some(cause) => {
                let chain = crate::api::error_chain(cause);
                // A TLS member drops a plaintext client with a garbled frame or a reset, and
                // (TLS 1.3) a client without a certificate with an alert or a plain close.
                let hint = TRANSPORT_HINT.get().copied().unwrap_or_default();
                if chain.starts_with(s.message()) {
                    format!("{chain}{hint}")
                } else {
                    format!("{}: {chain}{hint}", s.message())
                }
            }
            None => s.message().to_string(),
        },
    };
    CliError {
        message: format!("{member}{code}: {message}"),
        code: 1,
    }
}

/// Runs a cluster command.
pub fn run(cli: Cli) -> Result<i32, CliError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(cli))
}

pub(super) async fn client(cli: &Cli) -> Result<ClusterClient<AuthChannel>, CliError> {
    let servers: Vec<String> = cli.globals.server.iter().cloned().collect();
    let creds = cli.credentials()?;
    let hint = match &creds.tls {
        None => " (if the cluster uses TLS: pass --ca or set HACONIWA_CA)",
        Some(t) if t.identity.is_none() => {
            " (if the cluster verifies clients: pass --cert and --key or set HACONIWA_CERT and HACONIWA_KEY)"
        }
        Some(_) => "",
    };
    let _ = TRANSPORT_HINT.set(hint);
    let (client, member) = match crate::api::connect_named(&servers, &creds).await {
        Ok(c) => c,
        // A member that answers and then drops the connection (a TLS refusal) is not one
        // that is down: name the likely cause here too.
        Err(e @ crate::api::ClientError::Unreachable { .. })
            if !e.to_string().contains("onnection refused") =>
        {
            return Err(format!("{e}{hint}").into())
        }
        Err(e) => return Err(e.into()),
    };
    let _ = MEMBER.set(member);
    Ok(client)
}

/// The cluster's status as the member answering sees it.
async fn status(c: &mut ClusterClient<AuthChannel>) -> Result<pb::ClusterStatusReply, CliError> {
    Ok(c.cluster_status(pb::ClusterStatusRequest::default())
        .await
        .map_err(status_error)?
        .into_inner())
}

/// JSON form of the members (the fields `cluster members --json` promises).
fn members_json(members: &[pb::Member]) -> Vec<serde_json::Value> {
    members.iter().map(crate::api::json::member).collect()
}

fn print_members(members: &[pb::Member], leader: u64) {
    println!(
        "{:>4}  {:<22} {:<8} {:<9} {:>10}  {:<8} LABELS",
        "ID", "ADDRESS", "ROLE", "STATE", "CONTAINERS", "POLICY"
    );
    for m in members {
        let mark = if m.id == leader { "*" } else { " " };
        let labels: Vec<String> = m.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "{:>3}{mark}  {:<22} {:<8} {:<9} {:>10}  {:<8} {}",
            m.id,
            m.addr,
            m.role,
            m.state,
            m.containers,
            if m.policy.is_empty() {
                "default"
            } else {
                "limited"
            },
            labels.join(",")
        );
    }
}

/// Reads and checks a definition for `spawn`, before any connection: errors name the
/// user's own file and position.
fn spawn_request(
    file: &std::path::Path,
    node: Option<u64>,
    node_labels: &[String],
) -> Result<pb::SpawnRequest, CliError> {
    let text =
        crate::spec::script::read_source(file).map_err(|e| format!("{}: {e}", file.display()))?;
    crate::spec::load_str(&text, &file.display().to_string(), file.parent())?;
    let base_dir = std::fs::canonicalize(file)
        .ok()
        .and_then(|p| p.parent().map(|d| d.display().to_string()))
        .unwrap_or_default();
    Ok(pb::SpawnRequest {
        haco: text,
        file: file.display().to_string(),
        base_dir,
        definition: String::new(),
        node: node.unwrap_or(0),
        node_labels: parse_labels(node_labels)?.into_iter().collect(),
    })
}

/// Runs one cluster command: local files are read and checked first (a broken file is
/// reported without a server), then one function per command calls and prints.
async fn run_async(cli: Cli) -> Result<i32, CliError> {
    match &cli.command {
        Command::Spawn {
            file,
            node,
            node_labels,
            json,
        } => {
            let req = spawn_request(file, *node, node_labels)?;
            spawn(&mut client(&cli).await?, req, *json).await?
        }
        Command::Stop { id } => stop(&mut client(&cli).await?, id.clone()).await?,
        Command::Containers { all, json } => {
            containers(&mut client(&cli).await?, *all, *json).await?
        }
        Command::Services { json } => services(&mut client(&cli).await?, *json).await?,
        Command::Events {
            json,
            since,
            follow,
        } => events(&cli, *json, *since, *follow).await?,
        Command::Cluster(ClusterCommand::Status { json }) => {
            cluster_status(&mut client(&cli).await?, *json).await?
        }
        Command::Mirror(MirrorCommand::Status { json }) => {
            mirror_status(&mut client(&cli).await?, *json).await?
        }
        Command::Cluster(ClusterCommand::Members { json }) => {
            members(&mut client(&cli).await?, *json).await?
        }
        Command::Cluster(ClusterCommand::Leave { id }) => {
            leave(&mut client(&cli).await?, *id).await?
        }
        Command::Cluster(ClusterCommand::Drain { id }) => {
            let mut c = client(&cli).await?;
            let id = match id {
                super::NodeRef::Id(id) => *id,
                super::NodeRef::This => status(&mut c).await?.node,
            };
            drain(&mut c, id).await?
        }
        Command::Watch(WatchCommand::Apply { file, name }) => {
            let req = rule_request(file, name.clone())?;
            super::rules::apply(&mut client(&cli).await?, req).await?
        }
        Command::Watch(WatchCommand::Ls { json }) => {
            super::rules::ls(&mut client(&cli).await?, *json).await?
        }
        Command::Watch(WatchCommand::Rm { name }) => {
            super::rules::rm(&mut client(&cli).await?, name.clone()).await?
        }
        Command::Watch(WatchCommand::History { name, json }) => {
            super::rules::history(&mut client(&cli).await?, name, *json).await?
        }
        Command::Watch(WatchCommand::Rollback { name, version }) => {
            super::rules::rollback(&mut client(&cli).await?, name, *version).await?
        }
        Command::Watch(WatchCommand::Promote { name, version }) => {
            super::rules::promote(&mut client(&cli).await?, name, *version).await?
        }
        _ => return Err("not a cluster command".into()),
    }
    Ok(0)
}

/// `haconiwa spawn`: sends the checked definition; prints where it went.
async fn spawn(
    c: &mut ClusterClient<AuthChannel>,
    req: pb::SpawnRequest,
    json: bool,
) -> Result<(), CliError> {
    let r = c.spawn(req).await.map_err(status_error)?.into_inner();
    let container = r.container.unwrap_or_default();
    if json {
        println!("{}", crate::api::json::container(&container));
    } else {
        println!("{} assigned to node {}", container.id, container.node);
    }
    Ok(())
}

/// `haconiwa stop ID`.
async fn stop(c: &mut ClusterClient<AuthChannel>, id: String) -> Result<(), CliError> {
    let r = c
        .stop(pb::StopRequest { id })
        .await
        .map_err(status_error)?
        .into_inner();
    let container = r.container.unwrap_or_default();
    println!("{} stopping on node {}", container.id, container.node);
    Ok(())
}

/// `haconiwa containers`: a table or JSON.
async fn containers(
    c: &mut ClusterClient<AuthChannel>,
    all: bool,
    json: bool,
) -> Result<(), CliError> {
    let r = c
        .list_containers(pb::ListContainersRequest { all })
        .await
        .map_err(status_error)?
        .into_inner();
    if json {
        let v: Vec<serde_json::Value> = r
            .containers
            .iter()
            .map(crate::api::json::container)
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{:<28} {:<14} {:>4} {:<8} {:<9} {:<9} {:<15} {:>6} {:>4}  RULE",
            "ID", "DEFINITION", "NODE", "DESIRED", "STATE", "HEALTH", "ADDRESS", "PID", "EXIT"
        );
        for x in &r.containers {
            println!(
                "{:<28} {:<14} {:>4} {:<8} {:<9} {:<9} {:<15} {:>6} {:>4}  {}",
                x.id,
                x.definition,
                x.node,
                x.desired,
                x.state,
                if x.health.is_empty() { "-" } else { &x.health },
                if x.address.is_empty() {
                    "-"
                } else {
                    &x.address
                },
                if x.pid > 0 {
                    x.pid.to_string()
                } else {
                    "-".into()
                },
                if x.has_exit_code {
                    x.exit_code.to_string()
                } else {
                    "-".into()
                },
                x.rule
            );
        }
    }
    Ok(())
}

/// `haconiwa services`: the services of the cluster network and their addresses.
async fn services(c: &mut ClusterClient<AuthChannel>, json: bool) -> Result<(), CliError> {
    let r = c
        .list_services(pb::ListServicesRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    if json {
        let v = serde_json::json!({
            "cidr": if r.cidr.is_empty() { serde_json::Value::Null } else { r.cidr.clone().into() },
            "subnet_prefix": r.subnet_prefix,
            "subnets": r.subnets,
            "services": r.services.iter().map(crate::api::json::service).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if r.cidr.is_empty() {
        println!("the cluster has no network (supervisors' [network] cidr)");
    } else {
        println!("network {}: {}", r.cidr, r.subnets.join(" "));
    }
    println!(
        "{:<20} {:<36} {:>7}  ADDRESSES",
        "SERVICE", "DNS NAME", "SERVING"
    );
    for s in &r.services {
        println!(
            "{:<20} {:<36} {:>7}  {}",
            s.name,
            s.dns_name,
            format!("{}/{}", s.serving.len(), s.copies),
            if s.addresses.is_empty() {
                "-".to_string()
            } else {
                s.addresses.join(" ")
            }
        );
    }
    Ok(())
}

/// `haconiwa events`: the event stream, resumed after the last event printed when it breaks (with `--follow`).
async fn events(cli: &Cli, json: bool, since: Option<u64>, follow: bool) -> Result<(), CliError> {
    let mut c = client(cli).await?;
    // The position of the last event printed: a broken stream resumes after it.
    let mut after = since.map(|i| (i, u32::MAX));
    let mut backoff = std::time::Duration::from_millis(100);
    loop {
        let req = pb::WatchEventsRequest {
            resume: after.is_some(),
            after_index: after.map(|a| a.0).unwrap_or(0),
            after_sub: after.map(|a| a.1).unwrap_or(0),
        };
        let broke = match c.watch_events(req).await {
            Ok(r) => {
                let mut stream = r.into_inner();
                let mut broke = None;
                while let Some(e) = stream.next().await {
                    match e {
                        Ok(e) => {
                            print_event(&e, json);
                            after = Some((e.index, e.sub));
                            backoff = std::time::Duration::from_millis(100);
                        }
                        Err(s) => {
                            broke = Some(s);
                            break;
                        }
                    }
                }
                broke.unwrap_or_else(|| tonic::Status::unavailable("the stream ended"))
            }
            Err(s) => s,
        };
        // Refusals are final; a broken connection is followed up with -f.
        let transient = matches!(
            broke.code(),
            tonic::Code::Unavailable
                | tonic::Code::Unknown
                | tonic::Code::DataLoss
                | tonic::Code::Cancelled
                | tonic::Code::DeadlineExceeded
        );
        if !follow || !transient {
            return Err(status_error(broke));
        }
        eprintln!(
            "haconiwa: events: {}; resuming{}",
            broke.message(),
            after
                .map(|a| format!(" after index {}", a.0))
                .unwrap_or_default()
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
        if let Ok(fresh) = client(cli).await {
            c = fresh;
        }
    }
}

/// `haconiwa cluster status`: the leader, the term, the mirror, the members.
async fn cluster_status(c: &mut ClusterClient<AuthChannel>, json: bool) -> Result<(), CliError> {
    let s = status(c).await?;
    // The mirror's account comes from the leader (its only writer); a cluster
    // without a leader still shows its status.
    let mirror = c
        .mirror_status(pb::MirrorStatusRequest {})
        .await
        .map(|r| r.into_inner());
    if json {
        let v = serde_json::json!({
            "leader": s.leader,
            "leader_addr": s.leader_addr,
            "term": s.term,
            "commit_index": s.commit_index,
            "last_applied": s.last_applied,
            "state_digest": s.state_digest,
            "node": s.node,
            "joint": s.joint,
            "quorum_lost": s.quorum_lost,
            "members": members_json(&s.members),
            "mirror": match &mirror {
                Ok(m) => mirror_json(m),
                Err(e) => serde_json::json!({ "error": e.message() }),
            },
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "leader: node {} ({})   term: {}   commit index: {}",
            s.leader, s.leader_addr, s.term, s.commit_index
        );
        if s.quorum_lost {
            println!(
                    "warning: node {} leads but no quorum acknowledged it lately: it may be cut off and this view stale; ask another member",
                    s.node
                );
        }
        match &mirror {
            Ok(m) if m.enabled => println!("mirror: {}", mirror_line(m)),
            Ok(_) => {}
            Err(e) => println!("mirror: unknown ({})", e.message()),
        }
        println!();
        print_members(&s.members, s.leader);
    }
    Ok(())
}

/// `haconiwa mirror status`: the etcd mirror as the leader tells it.
async fn mirror_status(c: &mut ClusterClient<AuthChannel>, json: bool) -> Result<(), CliError> {
    let m = c
        .mirror_status(pb::MirrorStatusRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    if json {
        println!("{}", serde_json::to_string_pretty(&mirror_json(&m))?);
    } else if !m.enabled {
        println!("mirror: off (no [etcd] on the leader, node {})", m.node);
    } else {
        println!("mirror: {}", mirror_line(&m));
        println!("etcd: {}   prefix: {}", m.endpoints.join(","), m.prefix);
        println!(
            "mirrored index: {}   applied index: {}   keys: {}   resyncs: {}",
            m.mirrored_index, m.applied_index, m.keys, m.resyncs
        );
        if !m.last_error.is_empty() {
            println!(
                "last error ({:.0} s ago): {}",
                m.last_error_age_seconds, m.last_error
            );
        }
        print_rule_sources(&m.rules_in);
    }
    Ok(())
}

/// `haconiwa cluster members`.
async fn members(c: &mut ClusterClient<AuthChannel>, json: bool) -> Result<(), CliError> {
    let s = status(c).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&members_json(&s.members))?
        );
    } else {
        print_members(&s.members, s.leader);
    }
    Ok(())
}

/// `haconiwa cluster leave ID`.
async fn leave(c: &mut ClusterClient<AuthChannel>, id: u64) -> Result<(), CliError> {
    let r = c
        .leave(pb::NodeRequest { id })
        .await
        .map_err(status_error)?
        .into_inner();
    println!("node {id} left; {} container(s) moved", r.moved);
    Ok(())
}

/// `haconiwa cluster drain ID`.
async fn drain(c: &mut ClusterClient<AuthChannel>, id: u64) -> Result<(), CliError> {
    let r = c
        .drain(pb::NodeRequest { id })
        .await
        .map_err(status_error)?
        .into_inner();
    println!("node {id} drained; {} container(s) moved", r.moved);
    Ok(())
}

/// Reads a .watch file and the .haco files it names (relative to it), checking both
/// here so errors name the user's files and positions.
pub fn rule_request(
    file: &std::path::Path,
    name: Option<String>,
) -> Result<pb::ApplyRuleRequest, CliError> {
    let text =
        crate::spec::script::read_source(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let shown = file.display().to_string();
    let info = crate::spec::watch::check(&text, &shown)?;
    let dir = file
        .parent()
        .map(|d| {
            if d.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                d
            }
        })
        .unwrap_or(std::path::Path::new("."));
    let mut hacos = std::collections::HashMap::new();
    for h in &info.hacos {
        let p = dir.join(&h.path);
        let t = crate::spec::script::read_source(&p)
            .map_err(|e| format!("{shown}:{}:{}: {}: {e}", h.line, h.col, p.display()))?;
        crate::spec::load_str(&t, &p.display().to_string(), p.parent())?;
        hacos.insert(h.path.clone(), t);
    }
    let base_dir = std::fs::canonicalize(dir)
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    Ok(pb::ApplyRuleRequest {
        name: name.unwrap_or_default(),
        text,
        file: shown,
        hacos,
        base_dir,
    })
}

/// One event, as a line of text or of JSON.
fn print_event(e: &pb::Event, json: bool) {
    if json {
        println!("{}", crate::api::json::event(e));
    } else {
        let what = match (&e.container, &e.node) {
            (Some(c), _) => format!("{} on node {} ({})", c.id, c.node, c.state),
            (None, Some(n)) => format!("node {} {}", n.id, n.addr),
            _ => String::new(),
        };
        println!("{:>6} {:<20} {} {}", e.index, e.kind, what, e.message);
    }
}

/// One line: is the mirror writing, and how far behind.
fn mirror_line(m: &pb::MirrorStatusReply) -> String {
    let state = match (m.connected, m.writer) {
        (true, true) => "up, writing",
        (true, false) => "connected, not the writer",
        (false, _) => "DOWN",
    };
    format!(
        "{state} (leader node {}, term {})   lag: {} entries, {:.1} s{}",
        m.node,
        m.term,
        m.lag_entries,
        m.lag_seconds,
        if m.last_error.is_empty() {
            String::new()
        } else {
            format!("   last error: {}", m.last_error)
        }
    )
}

fn mirror_json(m: &pb::MirrorStatusReply) -> serde_json::Value {
    serde_json::json!({
        "enabled": m.enabled,
        "endpoints": m.endpoints,
        "prefix": m.prefix,
        "node": m.node,
        "term": m.term,
        "connected": m.connected,
        "writer": m.writer,
        "mirrored_index": m.mirrored_index,
        "applied_index": m.applied_index,
        "lag_entries": m.lag_entries,
        "lag_seconds": m.lag_seconds,
        "last_error": m.last_error,
        "last_error_age_seconds": m.last_error_age_seconds,
        "resyncs": m.resyncs,
        "keys": m.keys,
        "rules_revision": m.rules_revision,
        "rules_in": m.rules_in.iter().map(rule_source_json).collect::<Vec<_>>(),
    })
}

pub(super) fn rule_source_json(x: &pb::RuleSource) -> serde_json::Value {
    serde_json::json!({
        "name": x.name,
        "key": x.key,
        "ok": x.ok,
        "error": x.error,
        "revision": x.revision,
    })
}

fn print_rule_sources(sources: &[pb::RuleSource]) {
    if sources.is_empty() {
        return;
    }
    println!();
    println!("{:<20} {:>9}  STATUS", "RULE FROM ETCD", "REVISION");
    for x in sources {
        println!(
            "{:<20} {:>9}  {}",
            x.name,
            x.revision,
            if x.ok { "applied" } else { &x.error }
        );
    }
}
