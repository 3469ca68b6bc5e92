//! Supervisor settings: a TOML file (`--config`) and the same settings as flags, flags
//! winning. `cluster-configs/node.toml` documents every key.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Why the settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for these settings.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong, with its line.
        message: String,
    },
    /// A setting is out of range or missing.
    #[error("{0}")]
    Invalid(String),
}

/// Every setting, as the file spells it (all optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Node id; a joining node without one gets a fresh id from the cluster.
    pub node_id: Option<u64>,
    /// gRPC listen address (`127.0.0.1:7700`).
    pub listen: Option<String>,
    /// Address other members and clients reach this node at (default: `listen`).
    pub advertise: Option<String>,
    /// Where the Raft log, state and node id live.
    pub data_dir: Option<PathBuf>,
    /// Members to join through (any member; the first that answers).
    pub join: Option<Vec<String>>,
    /// The cluster token every call must carry.
    pub token: Option<String>,
    /// Number of Raft voters the cluster keeps (1 to 7; default 3).
    pub voters: Option<usize>,
    /// Leader heartbeat interval, ms.
    pub raft_heartbeat_ms: Option<u64>,
    /// Election timeout range, ms.
    pub election_timeout_min_ms: Option<u64>,
    /// Election timeout range, ms.
    pub election_timeout_max_ms: Option<u64>,
    /// Build a snapshot after this many applied entries.
    pub snapshot_after: Option<u64>,
    /// How often the node agent heartbeats the leader, ms.
    pub heartbeat_ms: Option<u64>,
    /// A node silent this long is committed down, ms (at least lease + margin).
    pub node_ttl_ms: Option<u64>,
    /// How long a node may run its containers after the leader last acknowledged its
    /// heartbeat, ms.
    pub lease_ms: Option<u64>,
    /// Safety margin the leader adds to the lease before replacing a silent node's
    /// containers (clock-rate drift, scheduling), ms.
    pub lease_margin_ms: Option<u64>,
    /// A voter down this long is replaced by a healthy learner, ms.
    pub replace_voter_after_ms: Option<u64>,
    /// Labels of this node (for placement).
    pub labels: Option<BTreeMap<String, String>>,
    /// `human` or `json`.
    pub log_format: Option<String>,
    /// Base of the local state directories (containers go to `<state_dir>/node-<id>`).
    pub state_dir: Option<PathBuf>,
    /// Base cgroup parent (containers go to `<cgroup_parent>/node-<id>/<container>`).
    pub cgroup_parent: Option<String>,
    /// The cluster's name (default `haconiwa`): names its etcd prefix.
    pub cluster_name: Option<String>,
    /// The optional etcd mirror (`[etcd]`); off when absent.
    pub etcd: Option<EtcdSettings>,
    /// TLS on the port (`[tls]`); plaintext when absent.
    pub tls: Option<TlsSettings>,
    /// Connections the port holds at once (default 4096).
    pub max_connections: Option<usize>,
    /// HTTP listener for /metrics and the dashboard (`127.0.0.1:7780`); off when absent.
    pub http_listen: Option<String>,
    /// `[images]`: where this host's images live and how registries are reached.
    pub images: Option<crate::image::registry::ImagesConfig>,
    /// `[network]`: the cluster network (off without a `cidr`).
    pub network: Option<crate::runtime::network::NetworkSettings>,
    /// `[policy]`: what a definition may ask of this host (everything when absent).
    pub policy: Option<crate::spec::NodePolicy>,
    /// The cluster's secrets key: a 0600 file (`haconiwa secret keygen`), the same on
    /// every member; without it this member cannot seal or open secrets.
    pub secrets_key: Option<PathBuf>,
}

/// `[tls]`: the node's certificate (it serves the port and calls the other members) and
/// the cluster CA that signs the members' and clients' certificates.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// The cluster CA (PEM).
    pub ca_file: Option<PathBuf>,
    /// This node's certificate (PEM), from `haconiwa tls cert create --node`.
    pub cert_file: Option<PathBuf>,
    /// Its key (PEM, 0600).
    pub key_file: Option<PathBuf>,
    /// Clients must present a certificate of the CA (default true).
    pub verify_clients: Option<bool>,
}

impl TlsSettings {
    fn over(self, base: TlsSettings) -> TlsSettings {
        TlsSettings {
            ca_file: self.ca_file.or(base.ca_file),
            cert_file: self.cert_file.or(base.cert_file),
            key_file: self.key_file.or(base.key_file),
            verify_clients: self.verify_clients.or(base.verify_clients),
        }
    }
}

/// The resolved `[tls]`.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// CA, certificate, key.
    pub files: crate::api::tls::TlsFiles,
    /// Clients must present a certificate of the CA.
    pub verify_clients: bool,
}

/// `[etcd]`: where the leader mirrors the state and reads rules registered through etcd.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdSettings {
    /// etcd client URLs (`http://10.0.0.5:2379`); the mirror is on when there is one.
    pub endpoints: Option<Vec<String>>,
    /// Key prefix (default `/haconiwa/<cluster_name>`).
    pub prefix: Option<String>,
    /// CA that signed the etcd servers' certificates (turns TLS on).
    pub ca_file: Option<PathBuf>,
    /// Client certificate for etcd's client-cert auth (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// Key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// etcd user (with `password`; prefer HACONIWA_ETCD_PASSWORD for the password).
    pub user: Option<String>,
    /// Password of `user`.
    pub password: Option<String>,
    /// Full resync at least this often, s (default 300).
    pub resync_secs: Option<u64>,
}

impl EtcdSettings {
    /// Fills every unset field of `self` from `base`.
    fn over(self, base: EtcdSettings) -> EtcdSettings {
        EtcdSettings {
            endpoints: self.endpoints.or(base.endpoints),
            prefix: self.prefix.or(base.prefix),
            ca_file: self.ca_file.or(base.ca_file),
            cert_file: self.cert_file.or(base.cert_file),
            key_file: self.key_file.or(base.key_file),
            user: self.user.or(base.user),
            password: self.password.or(base.password),
            resync_secs: self.resync_secs.or(base.resync_secs),
        }
    }
}

/// The resolved etcd mirror settings.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// Client URLs.
    pub endpoints: Vec<String>,
    /// Key prefix, without a trailing slash.
    pub prefix: String,
    /// TLS: CA file, and the client certificate and key when etcd checks clients.
    pub tls: Option<EtcdTls>,
    /// User and password.
    pub user: Option<(String, String)>,
    /// Full resync interval.
    pub resync: std::time::Duration,
}

/// TLS files for etcd.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// CA certificate (PEM).
    pub ca_file: PathBuf,
    /// Client certificate and key (PEM), if etcd asks for one.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl Settings {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string().replace('\n', " "),
        })
    }

    /// Fills every unset setting of `self` from `base` (flags over file).
    pub fn over(self, base: Settings) -> Settings {
        let (self_etcd, base_etcd) = (self.etcd.clone(), base.etcd.clone());
        let (self_tls, base_tls) = (self.tls.clone(), base.tls.clone());
        let images = match (self.images.clone(), base.images.clone()) {
            (Some(f), Some(b)) => Some(f.over(b)),
            (f, b) => f.or(b),
        };
        let network = match (self.network.clone(), base.network.clone()) {
            (Some(f), Some(b)) => Some(f.over(b)),
            (f, b) => f.or(b),
        };
        macro_rules! pick {
            ($($f:ident),*) => { Settings { $($f: self.$f.or(base.$f),)* } };
        }
        pick!(
            node_id,
            listen,
            advertise,
            data_dir,
            join,
            token,
            voters,
            raft_heartbeat_ms,
            election_timeout_min_ms,
            election_timeout_max_ms,
            snapshot_after,
            heartbeat_ms,
            node_ttl_ms,
            lease_ms,
            lease_margin_ms,
            replace_voter_after_ms,
            labels,
            log_format,
            state_dir,
            cgroup_parent,
            cluster_name,
            etcd,
            tls,
            max_connections,
            http_listen,
            images,
            network,
            policy,
            secrets_key
        )
        .with_etcd_merged(self_etcd, base_etcd)
        .with_tls_merged(self_tls, base_tls)
        .with_images(images)
        .with_network(network)
    }

    /// `[network]` merged field by field.
    fn with_network(
        mut self,
        network: Option<crate::runtime::network::NetworkSettings>,
    ) -> Settings {
        self.network = network;
        self
    }

    /// `[images]` as merged by [`ImagesConfig::over`](crate::image::registry::ImagesConfig::over).
    fn with_images(mut self, images: Option<crate::image::registry::ImagesConfig>) -> Settings {
        self.images = images;
        self
    }

    /// `[tls]` merged field by field.
    fn with_tls_merged(
        mut self,
        flags: Option<TlsSettings>,
        file: Option<TlsSettings>,
    ) -> Settings {
        self.tls = match (flags, file) {
            (Some(f), Some(b)) => Some(f.over(b)),
            (f, b) => f.or(b),
        };
        self
    }

    /// `[etcd]` merged field by field (a flag overrides one key, not the whole table).
    fn with_etcd_merged(
        mut self,
        flags: Option<EtcdSettings>,
        file: Option<EtcdSettings>,
    ) -> Settings {
        self.etcd = match (flags, file) {
            (Some(f), Some(b)) => Some(f.over(b)),
            (f, b) => f.or(b),
        };
        self
    }
}

/// Resolved settings with defaults applied and checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// Explicit node id.
    pub node_id: Option<u64>,
    /// Listen address.
    pub listen: SocketAddr,
    /// Advertised address.
    pub advertise: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Join addresses (empty: this node starts a new cluster).
    pub join: Vec<String>,
    /// Cluster token.
    pub token: String,
    /// Voters to keep.
    pub voters: usize,
    /// Raft heartbeat, ms.
    pub raft_heartbeat_ms: u64,
    /// Election timeout, ms.
    pub election_timeout_min_ms: u64,
    /// Election timeout, ms.
    pub election_timeout_max_ms: u64,
    /// Snapshot every N entries.
    pub snapshot_after: u64,
    /// Agent heartbeat, ms.
    pub heartbeat_ms: u64,
    /// Node TTL, ms.
    pub node_ttl_ms: u64,
    /// Node lease, ms.
    pub lease_ms: u64,
    /// Lease safety margin, ms.
    pub lease_margin_ms: u64,
    /// Voter replacement threshold, ms.
    pub replace_voter_after_ms: u64,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// What a definition may ask of this host.
    pub policy: crate::spec::NodePolicy,
    /// The cluster's secrets key file, when this member has one.
    pub secrets_key: Option<PathBuf>,
    /// Log format.
    pub json_logs: bool,
    /// State dir base.
    pub state_dir: PathBuf,
    /// cgroup parent base.
    pub cgroup_parent: String,
    /// The cluster's name.
    pub cluster_name: String,
    /// The etcd mirror, when configured.
    pub etcd: Option<EtcdConfig>,
    /// TLS on the port and towards the other members.
    pub tls: Option<TlsConfig>,
    /// Bounds of the port.
    pub limits: crate::api::listener::Limits,
    /// The cluster network, when on.
    pub network: Option<crate::runtime::network::NetworkConfig>,
    /// The HTTP listener (metrics, dashboard), when on.
    pub http_listen: Option<SocketAddr>,
    /// The image store.
    pub image_store: PathBuf,
    /// How registries are reached.
    pub registry: crate::image::registry::ImagesConfig,
}

/// Checks `[etcd]`: no endpoints means no mirror.
fn resolve_etcd(e: EtcdSettings, cluster: &str) -> Result<Option<EtcdConfig>, ConfigError> {
    let bad = |m: String| Err(ConfigError::Invalid(format!("[etcd] {m}")));
    let endpoints: Vec<String> = e
        .endpoints
        .unwrap_or_default()
        .into_iter()
        .flat_map(|s| {
            s.split(',')
                .map(|x| x.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .collect();
    if endpoints.is_empty() {
        return Ok(None);
    }
    let prefix = e.prefix.unwrap_or_else(|| format!("/haconiwa/{cluster}"));
    let prefix = prefix.trim_end_matches('/').to_string();
    if !prefix.starts_with('/') || prefix.len() < 2 || prefix.contains("//") {
        return bad(format!(
            "prefix '{prefix}' must be an absolute key path such as /haconiwa/prod"
        ));
    }
    let tls = match (e.ca_file, e.cert_file, e.key_file) {
        (None, None, None) => None,
        (Some(ca_file), None, None) => Some(EtcdTls {
            ca_file,
            identity: None,
        }),
        (Some(ca_file), Some(c), Some(k)) => Some(EtcdTls {
            ca_file,
            identity: Some((c, k)),
        }),
        (None, _, _) => return bad("cert_file and key_file need ca_file".into()),
        _ => return bad("cert_file and key_file go together".into()),
    };
    let user = match (e.user, e.password) {
        (None, None) => None,
        (Some(u), Some(p)) => Some((u, p)),
        (Some(_), None) => return bad("user needs a password (HACONIWA_ETCD_PASSWORD)".into()),
        (None, Some(_)) => return bad("password without user".into()),
    };
    Ok(Some(EtcdConfig {
        endpoints,
        prefix,
        tls,
        user,
        resync: std::time::Duration::from_secs(e.resync_secs.unwrap_or(300).max(1)),
    }))
}

impl Config {
    /// What this node presents when it calls the other members (its node certificate is
    /// also its client certificate).
    pub fn credentials(&self) -> crate::api::Credentials {
        crate::api::Credentials {
            token: self.token.clone(),
            tls: self.tls.as_ref().map(|t| crate::api::tls::ClientTls {
                ca: t.files.ca.clone(),
                identity: Some((t.files.cert.clone(), t.files.key.clone())),
            }),
        }
    }

    /// Applies defaults and checks ranges.
    pub fn resolve(s: Settings) -> Result<Config, ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let listen_s = s.listen.unwrap_or_else(|| "127.0.0.1:7700".into());
        let listen: SocketAddr = match listen_s.parse() {
            Ok(a) => a,
            Err(_) => return bad(format!("listen: '{listen_s}' is not an IP:PORT address")),
        };
        let advertise = s.advertise.unwrap_or_else(|| listen.to_string());
        let token = s.token.unwrap_or_default();
        if token.is_empty() {
            return bad(
                "a cluster token is required: --token, HACONIWA_TOKEN or `token` in the config"
                    .into(),
            );
        }
        if !token.chars().all(|c| c.is_ascii_graphic()) {
            return bad("the cluster token must be printable ASCII without spaces".into());
        }
        let voters = s.voters.unwrap_or(3);
        if !(1..=7).contains(&voters) {
            return bad(format!("voters must be between 1 and 7, not {voters}"));
        }
        let hb = s.raft_heartbeat_ms.unwrap_or(50);
        let emin = s.election_timeout_min_ms.unwrap_or(150);
        let emax = s.election_timeout_max_ms.unwrap_or(300);
        if hb == 0 || emin <= hb * 2 || emax <= emin {
            return bad(format!(
                "raft timings: need heartbeat ({hb} ms) < election timeout min/2 ({emin} ms) and min < max ({emax} ms)"
            ));
        }
        let heartbeat_ms = s.heartbeat_ms.unwrap_or(200);
        let lease_ms = s.lease_ms.unwrap_or(1500);
        let lease_margin_ms = s.lease_margin_ms.unwrap_or(300);
        let node_ttl_ms = s.node_ttl_ms.unwrap_or(lease_ms + lease_margin_ms);
        // A lease must outlive a leader election with room to spare (renewals stop while
        // there is no leader), and hold several heartbeats.
        if lease_ms < heartbeat_ms * 3 || lease_ms < emax * 3 {
            return bad(format!(
                "lease_ms ({lease_ms}) must be at least 3 heartbeats ({heartbeat_ms} ms) and 3 election timeouts ({emax} ms): a leader election must never stop healthy containers"
            ));
        }
        if node_ttl_ms < lease_ms + lease_margin_ms {
            return bad(format!(
                "node_ttl_ms ({node_ttl_ms}) must be at least lease_ms + lease_margin_ms ({}): a node's containers are replaced only once its lease has surely run out",
                lease_ms + lease_margin_ms
            ));
        }
        let log_format = s.log_format.unwrap_or_else(|| "human".into());
        if log_format != "human" && log_format != "json" {
            return bad(format!(
                "log_format must be human or json, not {log_format}"
            ));
        }
        let cluster_name = s.cluster_name.unwrap_or_else(|| "haconiwa".into());
        if let Err(e) = crate::spec::names::check("cluster", &cluster_name) {
            return bad(format!("cluster_name: {e}"));
        }
        let etcd = match s.etcd {
            Some(e) => resolve_etcd(e, &cluster_name)?,
            None => None,
        };
        let tls = match s.tls {
            None => None,
            Some(t) => match (t.ca_file, t.cert_file, t.key_file) {
                (Some(ca), Some(cert), Some(key)) => Some(TlsConfig {
                    files: crate::api::tls::TlsFiles { ca, cert, key },
                    verify_clients: t.verify_clients.unwrap_or(true),
                }),
                (None, None, None) => None,
                _ => {
                    return bad(
                        "[tls] needs ca_file, cert_file and key_file (haconiwa tls --help)".into(),
                    )
                }
            },
        };
        let mut limits = crate::api::listener::Limits::default();
        if let Some(m) = s.max_connections {
            if m < 16 {
                return bad(format!("max_connections must be at least 16, not {m}"));
            }
            limits.max_connections = m;
        }
        let http_listen = match s.http_listen {
            None => None,
            Some(h) => match h.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => return bad(format!("http_listen: '{h}' is not an IP:PORT address")),
            },
        };
        let images = s.images.clone().unwrap_or_default();
        let network = match s.network.clone().map(|n| n.resolve()).transpose() {
            Ok(n) => n.flatten(),
            Err(e) => return bad(e),
        };
        let policy = s.policy.unwrap_or_default().canonical();
        if let Err(e) = policy.validate() {
            return bad(e);
        }
        Ok(Config {
            policy,
            secrets_key: s.secrets_key.clone(),
            network,
            image_store: images
                .store
                .clone()
                .unwrap_or_else(|| PathBuf::from(crate::image::DEFAULT_STORE)),
            registry: images,
            cluster_name,
            etcd,
            tls,
            limits,
            http_listen,
            node_id: s.node_id,
            listen,
            advertise,
            data_dir: s
                .data_dir
                .unwrap_or_else(|| PathBuf::from("/var/lib/haconiwa/supervisor")),
            join: s.join.unwrap_or_default(),
            token,
            voters,
            raft_heartbeat_ms: hb,
            election_timeout_min_ms: emin,
            election_timeout_max_ms: emax,
            snapshot_after: s.snapshot_after.unwrap_or(1000).max(2),
            heartbeat_ms,
            node_ttl_ms,
            lease_ms,
            lease_margin_ms,
            replace_voter_after_ms: s.replace_voter_after_ms.unwrap_or(5000),
            labels: s.labels.unwrap_or_default(),
            json_logs: log_format == "json",
            state_dir: s
                .state_dir
                .unwrap_or_else(|| PathBuf::from(crate::runtime::DEFAULT_STATE_DIR)),
            cgroup_parent: s.cgroup_parent.unwrap_or_else(|| "haconiwa".into()),
        })
    }

    /// The IP outgoing connections are bound to (so a host can be cut off by address).
    pub fn local_ip(&self) -> Option<std::net::IpAddr> {
        self.advertise
            .rsplit_once(':')
            .and_then(|(h, _)| h.trim_matches(['[', ']']).parse().ok())
            .filter(|ip: &std::net::IpAddr| !ip.is_unspecified())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses_and_resolves() {
        let text = include_str!("../../cluster-configs/node.toml");
        let s: Settings = toml::from_str(text).expect("cluster-configs/node.toml");
        let flags = Settings {
            token: Some("t0k3n".into()),
            ..Default::default()
        };
        let c = Config::resolve(flags.over(s)).unwrap();
        assert_eq!(c.listen.to_string(), "10.0.0.11:7700");
        assert_eq!(c.voters, 3);
        assert_eq!(c.labels["zone"], "a");
        assert_eq!(
            c.local_ip().map(|i| i.to_string()).as_deref(),
            Some("10.0.0.11")
        );
    }

    #[test]
    fn the_network_example_resolves_and_bad_settings_are_refused() {
        let text = include_str!("../../cluster-configs/node.toml");
        let net: String = text
            .lines()
            .skip_while(|l| *l != "# [network]")
            .take_while(|l| !l.is_empty())
            .map(|l| l.trim_start_matches("# "))
            .collect::<Vec<_>>()
            .join("\n");
        let file: Settings = toml::from_str(&net).expect("the [network] example");
        let flags = Settings {
            token: Some("t".into()),
            network: Some(crate::runtime::network::NetworkSettings {
                mode: Some("vxlan".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let c = Config::resolve(flags.over(file)).unwrap();
        let n = c.network.expect("the network is on");
        assert_eq!(n.range.cidr.to_string(), "10.88.0.0/16");
        assert_eq!(n.range.subnet_prefix, 24);
        assert_eq!(n.mtu, Some(1450));
        assert!(matches!(
            n.mode,
            crate::runtime::network::Mode::Vxlan { vni: 1, port: 4789 }
        ));
        for (bad, why) in [
            ("cidr = \"10.88.0.1/16\"", "host bits"),
            (
                "cidr = \"10.88.0.0/16\"\nmode = \"flat\"",
                "host-gw or vxlan",
            ),
            (
                "cidr = \"10.88.0.0/16\"\nsubnet_prefix = 8",
                "subnet prefix",
            ),
        ] {
            let file: Settings =
                toml::from_str(&format!("token = \"t\"\n[network]\n{bad}")).unwrap();
            let e = Config::resolve(file).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn the_images_table_and_the_flags_merge() {
        // The shipped example's [images], uncommented.
        let text = include_str!("../../cluster-configs/node.toml");
        let images: String = text
            .lines()
            .skip_while(|l| *l != "# [images]")
            .map(|l| l.trim_start_matches("# "))
            .collect::<Vec<_>>()
            .join("\n");
        let file: Settings = toml::from_str(&images).expect("the [images] example");
        let flags = Settings {
            token: Some("t".into()),
            images: Some(crate::image::registry::ImagesConfig {
                insecure_registries: vec!["10.9.9.9:5000".into()],
                mirrors: [("docker.io".to_string(), "10.9.9.9:5000".to_string())].into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let c = Config::resolve(flags.over(file)).unwrap();
        assert_eq!(c.image_store, PathBuf::from("/var/lib/haconiwa/images"));
        assert_eq!(
            c.registry.auth_file,
            Some(PathBuf::from("/etc/haconiwa/auth.json"))
        );
        assert_eq!(
            c.registry.insecure_registries,
            ["10.0.0.5:5000", "10.9.9.9:5000"]
        );
        assert_eq!(
            c.registry.mirrors["docker.io"], "10.9.9.9:5000",
            "a flag wins"
        );
        assert_eq!(
            c.registry.registry_ca["registry.internal:443"],
            PathBuf::from("/etc/haconiwa/registry-ca.pem")
        );
        let bad: Result<Settings, _> = toml::from_str("[images]\nstor = \"/x\"\n");
        assert!(bad.is_err(), "unknown keys are refused");
    }

    #[test]
    fn bad_settings_are_named() {
        let e = Config::resolve(Settings::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("cluster token is required"), "{e}");
        let s = Settings {
            token: Some("t".into()),
            voters: Some(9),
            ..Default::default()
        };
        assert!(Config::resolve(s)
            .unwrap_err()
            .to_string()
            .contains("voters must be between 1 and 7"));
        let e = toml::from_str::<Settings>("nodeid = 3")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nodeid"), "{e}");
    }
}
