//! `haconiwa supervisor`: flags, logging, the tokio runtime, the daemon.

use super::{Cli, CliError, Command};
use crate::supervisor::config::{Config, EtcdSettings, Settings, TlsSettings};
use clap::Args;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Flags of `haconiwa supervisor` (each overrides the same key of `--config`).
#[derive(Debug, Args)]
pub struct SupervisorArgs {
    /// TOML settings file (see cluster-configs/node.toml): also the only place for
    /// `[policy]`, what a definition may ask of this host.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Node id (a joining node without one gets a fresh id from the cluster).
    #[arg(long)]
    node_id: Option<u64>,
    /// gRPC listen address.
    #[arg(long)]
    listen: Option<String>,
    /// Address other members reach this node at (default: --listen).
    #[arg(long)]
    advertise: Option<String>,
    /// Raft log, state and node id.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The cluster's secrets key (`haconiwa secret keygen FILE`; a 0600 file, the same
    /// on every member): without it this member can neither seal nor open secrets.
    #[arg(long)]
    secrets_key: Option<PathBuf>,
    /// A member to join through (repeatable); none starts a new cluster.
    #[arg(long)]
    join: Vec<String>,
    /// Raft voters the cluster keeps (1-7, default 3).
    #[arg(long)]
    voters: Option<usize>,
    /// Raft leader heartbeat, ms (default 50).
    #[arg(long)]
    raft_heartbeat_ms: Option<u64>,
    /// Election timeout minimum, ms (default 150).
    #[arg(long)]
    election_timeout_min_ms: Option<u64>,
    /// Election timeout maximum, ms (default 300).
    #[arg(long)]
    election_timeout_max_ms: Option<u64>,
    /// Snapshot after this many entries (default 1000).
    #[arg(long)]
    snapshot_after: Option<u64>,
    /// Agent heartbeat to the leader, ms (default 200).
    #[arg(long)]
    heartbeat_ms: Option<u64>,
    /// A node silent this long is down, ms (default lease + margin; never less).
    #[arg(long)]
    node_ttl_ms: Option<u64>,
    /// How long a node runs its containers without the leader's acknowledgement, ms
    /// (default 1500); then its monitors stop them.
    #[arg(long)]
    lease_ms: Option<u64>,
    /// What the leader adds to the lease before replacing a silent node's containers,
    /// ms (default 300).
    #[arg(long)]
    lease_margin_ms: Option<u64>,
    /// A voter down this long is replaced by a learner, ms (default 5000).
    #[arg(long)]
    replace_voter_after_ms: Option<u64>,
    /// Node label KEY=VALUE (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// human or json.
    #[arg(long)]
    log_format: Option<String>,
    /// The cluster's name (default haconiwa; names the etcd prefix).
    #[arg(long)]
    cluster_name: Option<String>,
    /// etcd client URL to mirror the state to and read rules from (repeatable or
    /// comma-separated); the mirror is off without one. docs/etcd.md.
    #[arg(long = "etcd-endpoint")]
    etcd_endpoints: Vec<String>,
    /// etcd key prefix (default /haconiwa/<cluster name>).
    #[arg(long)]
    etcd_prefix: Option<String>,
    /// CA of the etcd servers (turns TLS to etcd on).
    #[arg(long)]
    etcd_ca: Option<PathBuf>,
    /// Client certificate for etcd (with --etcd-key).
    #[arg(long)]
    etcd_cert: Option<PathBuf>,
    /// Key of --etcd-cert.
    #[arg(long)]
    etcd_key: Option<PathBuf>,
    /// etcd user (the password from HACONIWA_ETCD_PASSWORD).
    #[arg(long)]
    etcd_user: Option<String>,
    /// etcd password.
    #[arg(long, env = "HACONIWA_ETCD_PASSWORD", hide_env_values = true)]
    etcd_password: Option<String>,
    /// The cluster CA (PEM): turns TLS on, with --tls-cert and --tls-key.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// This node's certificate (PEM; `haconiwa tls cert create --node`).
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// Its key (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Whether clients must present a certificate of the CA (default true).
    #[arg(long)]
    tls_verify_clients: Option<bool>,
    /// Connections the port holds at once (default 4096).
    #[arg(long)]
    max_connections: Option<usize>,
    /// HTTP listener for /metrics and the dashboard, e.g. 127.0.0.1:7780 (off by
    /// default; beyond loopback every route needs the cluster token).
    #[arg(long)]
    http_listen: Option<String>,
    /// The cluster network's range, e.g. 10.88.0.0/16: every member leases a subnet of
    /// it and every container an address (off by default; `[network]` of --config).
    #[arg(long)]
    network_cidr: Option<String>,
    /// How members' subnets reach each other: host-gw (a shared link) or vxlan.
    #[arg(long)]
    network_mode: Option<String>,
    #[command(flatten)]
    registry: super::image::RegistryArgs,
}

/// Parses `KEY=VALUE` pairs.
pub fn parse_labels(items: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    let mut out = BTreeMap::new();
    for l in items {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| format!("label '{l}' is not KEY=VALUE"))?;
        if k.is_empty() {
            return Err(format!("label '{l}' has an empty key").into());
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// The `--etcd-*` flags as an `[etcd]` table (None when no flag is given).
fn etcd_flags(
    endpoints: Vec<String>,
    prefix: Option<String>,
    (ca_file, cert_file, key_file): (Option<PathBuf>, Option<PathBuf>, Option<PathBuf>),
    user: Option<String>,
    password: Option<String>,
) -> Option<EtcdSettings> {
    let e = EtcdSettings {
        endpoints: (!endpoints.is_empty()).then_some(endpoints),
        prefix,
        ca_file,
        cert_file,
        key_file,
        user,
        password,
        resync_secs: None,
    };
    let any = e.endpoints.is_some()
        || e.prefix.is_some()
        || e.ca_file.is_some()
        || e.cert_file.is_some()
        || e.key_file.is_some()
        || e.user.is_some()
        || e.password.is_some();
    any.then_some(e)
}

/// Runs the supervisor in the foreground.
pub fn run(cli: Cli) -> Result<i32, CliError> {
    let token = cli.cluster_token()?;
    let Command::Supervisor(a) = cli.command else {
        return Err("not the supervisor command".into());
    };
    let file = match &a.config {
        Some(p) => Settings::from_file(p)?,
        None => Settings::default(),
    };
    let labels = parse_labels(&a.labels)?;
    let flags = Settings {
        node_id: a.node_id,
        listen: a.listen,
        advertise: a.advertise,
        data_dir: a.data_dir,
        join: (!a.join.is_empty()).then_some(a.join),
        token,
        voters: a.voters,
        raft_heartbeat_ms: a.raft_heartbeat_ms,
        election_timeout_min_ms: a.election_timeout_min_ms,
        election_timeout_max_ms: a.election_timeout_max_ms,
        snapshot_after: a.snapshot_after,
        heartbeat_ms: a.heartbeat_ms,
        node_ttl_ms: a.node_ttl_ms,
        lease_ms: a.lease_ms,
        lease_margin_ms: a.lease_margin_ms,
        replace_voter_after_ms: a.replace_voter_after_ms,
        labels: (!labels.is_empty()).then_some(labels),
        log_format: a.log_format,
        state_dir: cli.globals.state_dir.clone(),
        cgroup_parent: cli.globals.cgroup_parent.clone(),
        cluster_name: a.cluster_name,
        tls: (a.tls_ca.is_some()
            || a.tls_cert.is_some()
            || a.tls_key.is_some()
            || a.tls_verify_clients.is_some())
        .then_some(TlsSettings {
            ca_file: a.tls_ca,
            cert_file: a.tls_cert,
            key_file: a.tls_key,
            verify_clients: a.tls_verify_clients,
        }),
        max_connections: a.max_connections,
        images: Some(
            a.registry
                .supervisor_config(cli.globals.image_store.clone())?,
        ),
        http_listen: a.http_listen,
        network: (a.network_cidr.is_some() || a.network_mode.is_some()).then_some(
            crate::runtime::network::NetworkSettings {
                cidr: a.network_cidr,
                mode: a.network_mode,
                ..Default::default()
            },
        ),
        // Only node.toml says it: a host's limits are its operator's file.
        policy: None,
        secrets_key: a.secrets_key,
        etcd: etcd_flags(
            a.etcd_endpoints,
            a.etcd_prefix,
            (a.etcd_ca, a.etcd_cert, a.etcd_key),
            a.etcd_user,
            a.etcd_password,
        ),
    };
    let config = Config::resolve(flags.over(file))?;
    init_logging(config.json_logs);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("haconiwa-supervisor")
        .build()?;
    rt.block_on(crate::supervisor::run(config, crate::mirror::start))?;
    Ok(0)
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,openraft=error,openraft::replication=off,h2=warn,tower=warn,hyper=warn",
        )
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
