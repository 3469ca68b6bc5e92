//! The supervisor daemon: Raft node, gRPC API (with reflection), node agent, leader loop
//! and heartbeats, wired together. One per host; `haconiwa supervisor --config FILE`.
//!
//! Rooms, arrows pointing down: `endpoints` (the edge: gRPC, Raft transport, HTTP, the
//! calls to other members; the only room that speaks protobuf) → `leader` (its loop,
//! its operations, the rule loop) and `agent` (carries out `decide::reconcile`) →
//! `definitions`, `images`, `quorum` → `shared` (`Supervisor`: what every part shares) → `error`,
//! `requests`, `peers` and the rest (docs/architecture.md).

pub mod admission;
pub mod agent;
pub mod config;
pub mod definitions;
pub mod endpoints;
pub mod error;
pub mod images;
pub mod leader;
pub mod mirror_report;
pub mod network;
pub mod peers;
pub mod picture;
pub mod probes;
pub mod quorum;
pub mod reports;
pub mod requests;
pub mod restarts;
pub mod secrets;
pub mod shared;
pub mod stats;
pub mod storage;

use crate::cluster::store::{open_database, LogStore, StateMachineStore};
use crate::cluster::Raft;
use crate::supervisor::endpoints::raft::Network;
use config::Config;
use openraft::{BasicNode, SnapshotPolicy};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Why the supervisor cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The secrets key cannot be used.
    #[error(transparent)]
    Secrets(#[from] secrets::SecretError),
    /// A file or directory of the data dir.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The Raft store could not be opened.
    #[error("raft storage in {path}: {source}")]
    Store {
        /// The database file.
        path: std::path::PathBuf,
        /// The storage error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Raft (or the server it talks through) failed.
    #[error("{what}: {source}")]
    Raft {
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Joining the cluster failed.
    #[error("join through {servers}: {reason}")]
    Join {
        /// The members tried.
        servers: String,
        /// Why.
        reason: String,
    },
    /// Bad settings.
    #[error("{0}")]
    Config(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SupervisorError {
    let what = what.into();
    move |source| SupervisorError::Io { what, source }
}

/// Reads the node id this data dir was given, if any.
fn stored_id(data_dir: &Path) -> Result<Option<u64>, SupervisorError> {
    let f = data_dir.join("node_id");
    match std::fs::read_to_string(&f) {
        Ok(s) => s.trim().parse().map(Some).map_err(|_| {
            SupervisorError::Config(format!("{} does not hold a node id", f.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(format!("read {}", f.display()))(e)),
    }
}

/// This node's id: the one its data dir was given, else one the cluster allocates when
/// joining, else the configured one (or 1) for a new cluster. The data dir is made
/// private (it holds the log, the state and the cluster's secrets).
async fn node_identity(config: &Config) -> Result<u64, SupervisorError> {
    // The log, the state and the cluster's secrets: for root's eyes only.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&config.data_dir)
            .and_then(|()| {
                std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
            })
            .map_err(io(format!("create {}", config.data_dir.display())))?;
    }
    let id = match (stored_id(&config.data_dir)?, config.node_id) {
        (Some(s), Some(c)) if s != c => {
            return Err(SupervisorError::Config(format!(
                "{} belongs to node {s}, not {c}; ids are never reused or changed",
                config.data_dir.display()
            )))
        }
        (Some(s), _) => s,
        (None, wanted) if !config.join.is_empty() => {
            let id = endpoints::calls::join_cluster(config, wanted)
                .await
                .map_err(|reason| SupervisorError::Join {
                    servers: config.join.join(", "),
                    reason,
                })?;
            tracing::info!("joined as node {id}");
            id
        }
        (None, wanted) => wanted.unwrap_or(1),
    };
    let id_file = config.data_dir.join("node_id");
    if !id_file.exists() {
        crate::runtime::state::write_durable(&id_file, format!("{id}\n").as_bytes())
            .map_err(io(format!("write {}", id_file.display())))?;
    }
    Ok(id)
}

/// Makes this node a new one-member cluster, unless its Raft state says it belongs to
/// one already (initialize exactly once, on exactly one node).
async fn initialize_once(raft: &Raft, id: u64, advertise: &str) -> Result<(), SupervisorError> {
    let raft_err = |what: &'static str| {
        move |e: openraft::error::RaftError<
            u64,
            openraft::error::InitializeError<u64, BasicNode>,
        >| {
            SupervisorError::Raft {
                what,
                source: Box::new(e),
            }
        }
    };
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| SupervisorError::Raft {
            what: "read the raft state",
            source: Box::new(e),
        })?;
    if initialized {
        return Ok(());
    }
    let members: BTreeMap<u64, BasicNode> = [(
        id,
        BasicNode {
            addr: advertise.to_string(),
        },
    )]
    .into();
    raft.initialize(members)
        .await
        .map_err(raft_err("initialize the cluster"))?;
    tracing::info!("initialized a new cluster with node {id}");
    Ok(())
}

/// Starts the tasks of a layer above this one (the etcd mirror) on the running node.
pub type ExtraTasks = fn(Arc<shared::Supervisor>) -> Vec<tokio::task::JoinHandle<()>>;

/// Runs the supervisor until SIGTERM or SIGINT. Containers keep running after it stops.
/// `extra` starts the tasks of the layers above (the etcd mirror), stopped with the rest.
pub async fn run(config: Config, extra: ExtraTasks) -> Result<(), SupervisorError> {
    raise_fd_limit();
    // TLS files and the port first: bad files or a port in use fail here, before this
    // node joins anything.
    let tls = server_tls(&config)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(io(format!("listen on {}", config.listen)))?;
    let secrets_key = match &config.secrets_key {
        Some(path) => Some(secrets::ClusterKey::load(path)?),
        None => None,
    };
    let id = node_identity(&config).await?;
    let stats = stats::Stats::default();
    let (raft, feed) = start_raft(&config, id, &stats).await?;
    let peers = Arc::new(endpoints::calls::PeerClients::new(&config));
    let core = shared::Supervisor::new(
        id,
        raft.clone(),
        feed,
        config.clone(),
        secrets_key,
        stats,
        peers.clone(),
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let elections = quorum::ElectionWatch::new();
    let server = endpoints::serve(
        &config,
        listener,
        core.clone(),
        peers.clone(),
        tls,
        elections.clone(),
        stop_rx,
    )
    .map_err(SupervisorError::Config)?;
    let server = tokio::spawn(server);
    tracing::info!(
        "node {id} serving on {} (advertised {})",
        config.listen,
        config.advertise
    );
    log_settings(&config);
    if config.join.is_empty() {
        initialize_once(&raft, id, &config.advertise).await?;
    }
    let runtime = core.local_runtime();
    let mut tasks = extra(core.clone());
    if let Some(addr) = config.http_listen {
        tasks.extend(
            endpoints::http::start(core.clone(), peers.clone(), addr)
                .await
                .map_err(io(format!("listen on {addr} (http_listen)")))?,
        );
    }
    tasks.extend([
        tokio::spawn(leader::run(core.clone())),
        tokio::spawn(agent::Agent::new(core.clone(), runtime.clone()).run()),
        tokio::spawn(reports::heartbeat_loop(core.clone(), runtime)),
        tokio::spawn(quorum::gate_elections(core.clone(), elections.clone())),
        tokio::spawn(quorum::stand_when_the_leader_is_gone(
            core.clone(),
            elections,
        )),
        tokio::spawn(network::run(core.clone())),
    ]);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(io("install the SIGTERM handler"))?;
    let result = tokio::select! {
        _ = term.recv() => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
        r = server => match r {
            Ok(Err(e)) => Err(SupervisorError::Raft {
                what: "gRPC server",
                source: Box::new(e),
            }),
            _ => Ok(()),
        },
        // Crash-only: a storage or Raft-core failure ends the process (systemd restarts
        // it); the lease then runs out and this node's containers stop.
        e = raft_failure(raft.clone()) => Err(SupervisorError::Raft {
            what: "raft stopped (storage or core failure); exiting",
            source: e,
        }),
    };
    if result.is_ok() {
        tracing::info!("node {id} stopping; its containers keep running while its lease lasts");
    }
    for t in tasks {
        t.abort();
    }
    let _ = stop_tx.send(());
    let _ = raft.shutdown().await;
    result
}

/// Resolves when the Raft core has stopped on a fatal error, with that error. It looks
/// every 100 ms rather than at each change of Raft's metrics: those change several
/// times a write, and a task woken for each was a thread switch per write.
async fn raft_failure(raft: Raft) -> Box<dyn std::error::Error + Send + Sync> {
    let rx = raft.metrics();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        tick.tick().await;
        if let Err(e) = &rx.borrow().running_state {
            return Box::new(e.clone());
        }
        if rx.has_changed().is_err() {
            return "the raft core is gone".into();
        }
    }
}

/// Opens the store and starts Raft on it.
async fn start_raft(
    config: &Config,
    id: u64,
    stats: &stats::Stats,
) -> Result<(Raft, crate::cluster::store::StateFeed), SupervisorError> {
    let db_path = config.data_dir.join("raft.redb");
    let store_err = |source| SupervisorError::Store {
        path: db_path.clone(),
        source,
    };
    let db = open_database(&db_path).map_err(|e| store_err(e))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&db_path, std::fs::Permissions::from_mode(0o600))
            .map_err(io(format!("chmod {}", db_path.display())))?;
    }
    let (sm, feed) = StateMachineStore::open(db.clone(), &db_path).map_err(|e| store_err(e))?;
    let log_path = config.data_dir.join("raft.log");
    let appends = stats.log_append_seconds.clone();
    let log = LogStore::open(db, &log_path)
        .map_err(|e| {
            SupervisorError::Config(format!("open the Raft log {}: {e}", log_path.display()))
        })?
        .observed(Arc::new(move |d| appends.observe(d.as_secs_f64())));
    let raft_config = openraft::Config {
        cluster_name: "haconiwa".into(),
        heartbeat_interval: config.raft_heartbeat_ms,
        election_timeout_min: config.election_timeout_min_ms,
        election_timeout_max: config.election_timeout_max_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_after),
        max_in_snapshot_log_to_keep: (config.snapshot_after / 2).max(1),
        install_snapshot_timeout: 2000,
        ..Default::default()
    }
    .validate()
    .map_err(|e| SupervisorError::Config(format!("raft settings: {e}")))?;
    let network = Network {
        self_id: id,
        creds: config.credentials(),
        local_ip: config.local_ip(),
        retry: Duration::from_millis(config.raft_heartbeat_ms),
    };
    let raft = Raft::new(id, Arc::new(raft_config), network, log, sm)
        .await
        .map_err(|e| SupervisorError::Raft {
            what: "start raft",
            source: Box::new(e),
        })?;
    Ok((raft, feed))
}

/// The port's TLS from `[tls]` (None: plaintext, said in the log), and a task that
/// reloads it on SIGHUP.
fn server_tls(config: &Config) -> Result<Option<Arc<crate::api::tls::ServerTls>>, SupervisorError> {
    let Some(t) = &config.tls else {
        tracing::warn!(
            "no [tls]: the cluster token and all traffic cross the network in clear; see docs/security.md (TLS)"
        );
        return Ok(None);
    };
    let tls = crate::api::tls::ServerTls::new(t.files.clone(), t.verify_clients)
        .map_err(|e| SupervisorError::Config(format!("[tls] {e}")))?;
    let tls = Arc::new(tls);
    tracing::info!(
        "TLS on {} ({} client certificates){}",
        config.listen,
        if tls.verifies_clients() {
            "verifying"
        } else {
            "not verifying"
        },
        "; SIGHUP reloads the certificate, key and CA"
    );
    let reload = tls.clone();
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(io("install the SIGHUP handler"))?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match reload.reload() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificate, key and CA reloaded"),
                Err(e) => {
                    tracing::error!("SIGHUP: TLS not reloaded, the old files stay in use: {e}")
                }
            }
        }
    });
    Ok(Some(tls))
}

/// Raises this process's open-file limit to its hard limit: every connection and every
/// container's pidfd is a descriptor.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// Says at start what the settings resolved to (file, flags and defaults merged), so an
/// operator can tell which timings and paths a node really runs with.
fn log_settings(c: &Config) {
    tracing::info!(
        "settings: cluster {}, voters {}, raft heartbeat {} ms, election timeout {}..{} ms, snapshot after {} entries, agent heartbeat {} ms, lease {} ms + margin {} ms, node ttl {} ms, voter replaced after {} ms, max connections {}, labels {:?}, state {}, cgroups {}, images {}",
        c.cluster_name,
        c.voters,
        c.raft_heartbeat_ms,
        c.election_timeout_min_ms,
        c.election_timeout_max_ms,
        c.snapshot_after,
        c.heartbeat_ms,
        c.lease_ms,
        c.lease_margin_ms,
        c.node_ttl_ms,
        c.replace_voter_after_ms,
        c.limits.max_connections,
        c.labels,
        c.state_dir.display(),
        c.cgroup_parent,
        c.image_store.display(),
    );
    let r = &c.registry;
    tracing::info!(
        "settings: registries: insecure {:?}, mirrors {:?}, CAs {:?}, auth file {:?}",
        r.insecure_registries,
        r.mirrors,
        r.registry_ca,
        r.auth_file
    );
    if let Some(e) = &c.etcd {
        tracing::info!(
            "settings: etcd mirror {:?} under {}, CA {:?}, client certificate {:?}, user {:?}, resync every {} s",
            e.endpoints,
            e.prefix,
            e.tls.as_ref().map(|t| &t.ca_file),
            e.tls.as_ref().and_then(|t| t.identity.as_ref().map(|i| &i.0)),
            e.user.as_ref().map(|u| &u.0),
            e.resync.as_secs()
        );
    }
}
