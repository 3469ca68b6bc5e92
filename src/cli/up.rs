//! `haconiwa up` / `haconiwa down`: a whole local cluster in one command, as
//! `nomad agent -dev` is for Nomad.

use super::remote::rule_request;
use super::{Cli, CliError, Command};
use crate::api::pb;
use crate::runtime::{bootstrap, Runtime};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Where a detached local cluster is recorded by default.
pub const UP_DIR: &str = "/run/haconiwa-up";

/// Flags of `haconiwa up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Rule to apply [default: examples/keep5.watch].
    watch: Option<PathBuf>,
    /// Number of supervisors (1-7).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Leave it running and return (stop it with `haconiwa down`).
    #[arg(long)]
    detach: bool,
    /// Where the cluster's token, addresses and pids are recorded (0700).
    #[arg(long, env = "HACONIWA_UP_DIR", default_value = UP_DIR)]
    dir: PathBuf,
    /// The first three parts of the supervisors' addresses: NET.1, NET.2, ... on
    /// loopback.
    #[arg(long, default_value = "127.0.0")]
    net: String,
    /// The supervisors' port.
    #[arg(long, default_value_t = 7700)]
    port: u16,
    /// Plaintext (the token only): no CA, no certificates.
    #[arg(long)]
    no_tls: bool,
}

/// Flags of `haconiwa down`.
#[derive(Debug, Args)]
pub struct DownArgs {
    /// Where `up` recorded the cluster.
    #[arg(long, env = "HACONIWA_UP_DIR", default_value = UP_DIR)]
    dir: PathBuf,
}

/// What `down` needs to find a detached cluster.
#[derive(Debug, Serialize, Deserialize)]
struct UpInfo {
    /// The directory this is recorded in.
    dir: PathBuf,
    pids: Vec<u32>,
    servers: Vec<String>,
    token: String,
    data_dir: PathBuf,
    state_dir: PathBuf,
    cgroup_parent: String,
    /// The CA, and the client certificate and key the CLI uses (None: plaintext).
    #[serde(default)]
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
}

impl UpInfo {
    /// What the CLI presents to this cluster.
    fn credentials(&self) -> crate::api::Credentials {
        crate::api::Credentials {
            token: self.token.clone(),
            tls: self
                .tls
                .as_ref()
                .map(|(ca, cert, key)| crate::api::tls::ClientTls {
                    ca: ca.clone(),
                    identity: Some((cert.clone(), key.clone())),
                }),
        }
    }
}

/// Runs `up` or `down`.
pub fn run(cli: Cli) -> Result<i32, CliError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(
            "haconiwa up/down must run as root (containers need namespaces and cgroups)".into(),
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cgroup_parent = cli
        .globals
        .cgroup_parent
        .clone()
        .unwrap_or_else(|| "haconiwa-up".into());
    match cli.command {
        Command::Up(a) => rt.block_on(up(a, cgroup_parent)),
        Command::Down(d) => {
            let info = read_info(&d.dir).ok_or_else(|| {
                format!("no local cluster is up (nothing in {})", d.dir.display())
            })?;
            teardown(&info);
            println!("local cluster stopped and removed");
            Ok(0)
        }
        _ => Err("not an up/down command".into()),
    }
}

fn read_info(dir: &Path) -> Option<UpInfo> {
    let text = std::fs::read_to_string(dir.join("info.json")).ok()?;
    serde_json::from_str(&text).ok()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    crate::spec::script::fill_random(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Stops the supervisors, kills every container, removes cgroups and data.
fn teardown(info: &UpInfo) {
    for pid in &info.pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while info.pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in &info.pids {
        if alive(*pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    if let Ok(rd) = std::fs::read_dir(&info.state_dir) {
        for node in rd.flatten() {
            let name = node.file_name().to_string_lossy().to_string();
            let rt = Runtime::new(node.path(), format!("{}/{name}", info.cgroup_parent));
            for c in rt.list() {
                if c.state.status == crate::runtime::state::Status::Running {
                    let _ = rt.kill(
                        &c.state.name,
                        nix::sys::signal::Signal::SIGKILL,
                        Duration::from_secs(1),
                    );
                }
            }
        }
    }
    // The cluster's cgroup parent, in every hierarchy (the launcher keeps its first
    // level once made, and a pool in it); a parent something else still uses stays.
    crate::launcher::cgroup_pool::remove_parent(&info.cgroup_parent);
    // The members' volumes that are file systems of their own (tmpfs, ext4 images).
    let dirs = |p: &std::path::Path| std::fs::read_dir(p).into_iter().flatten().flatten();
    for node in dirs(&info.data_dir) {
        for v in dirs(&node.path().join("volumes")) {
            let _ = nix::mount::umount2(&v.path().join("data"), nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _ = std::fs::remove_dir_all(&info.data_dir);
    let _ = std::fs::remove_dir_all(&info.dir);
}

async fn up(a: UpArgs, cgroup_parent: String) -> Result<i32, CliError> {
    if !(1..=7).contains(&a.nodes) {
        return Err("--nodes must be between 1 and 7".into());
    }
    let net_ok = a.net.split('.').count() == 3
        && format!("{}.1", a.net)
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !net_ok {
        return Err(format!(
            "--net {}: expected the first three parts of a loopback address, such as 127.0.0",
            a.net
        )
        .into());
    }
    if let Some(info) = read_info(&a.dir) {
        if info.pids.iter().any(|p| alive(*p)) {
            return Err(format!(
                "a local cluster is already up ({}); `haconiwa down` stops it",
                info.servers.join(", ")
            )
            .into());
        }
        teardown(&info);
    }
    let watch = a
        .watch
        .clone()
        .unwrap_or_else(|| PathBuf::from("examples/keep5.watch"));
    let rule = rule_request(&watch, None)?;
    // Root filesystems first, once, rather than in every agent at the same time.
    for (path, text) in &rule.hacos {
        let full = Path::new(&rule.base_dir).join(path);
        let spec = crate::spec::load_str(text, &full.display().to_string(), full.parent())?;
        if bootstrap::ensure(&spec, true)? == bootstrap::Outcome::Built {
            println!("built root filesystem {}", spec.rootfs.path.display());
        }
    }
    let data_dir = std::env::temp_dir().join(format!("haconiwa-up-{}", random_hex(4)));
    private_dir(&data_dir)?;
    let token = random_hex(16);
    let exe = std::env::current_exe()?;
    let mut info = UpInfo {
        dir: a.dir.clone(),
        pids: Vec::new(),
        servers: Vec::new(),
        token: token.clone(),
        data_dir: data_dir.clone(),
        state_dir: data_dir.join("state"),
        cgroup_parent,
        tls: None,
    };
    private_dir(&a.dir)?;
    if !a.no_tls {
        info.tls = Some(make_certificates(&a)?);
    }
    // One secrets key for all the members (`haconiwa secret create` seals with it).
    let key = a.dir.join("secrets.key");
    if !key.exists() {
        crate::supervisor::secrets::generate(&key)?;
    }
    let save = |info: &UpInfo| -> Result<(), CliError> {
        let text = serde_json::to_string_pretty(info)?;
        crate::runtime::state::write_atomic(&info.dir.join("info.json"), text.as_bytes())?;
        Ok(())
    };
    let started = start_all(&a, &exe, &mut info, &save).await;
    if let Err(e) = started {
        teardown(&info);
        return Err(e);
    }
    let servers = info.servers.clone();
    let mut client = crate::api::connect(&servers, &info.credentials()).await?;
    if let Err(e) = client.apply_rule(rule).await {
        teardown(&info);
        return Err(format!("apply {}: {}", watch.display(), e.message()).into());
    }
    let mut env = format!(
        "export HACONIWA_SERVER={}\nexport HACONIWA_TOKEN={token}\n",
        servers.join(",")
    );
    if let Some((ca, cert, key)) = &info.tls {
        env.push_str(&format!(
            "export HACONIWA_CA={}\nexport HACONIWA_CERT={}\nexport HACONIWA_KEY={}\n",
            ca.display(),
            cert.display(),
            key.display()
        ));
    }
    // The token inside: 0600 in a 0700 directory.
    crate::runtime::state::write_atomic(&a.dir.join("env"), env.as_bytes())?;
    if a.detach {
        println!(
            "local cluster of {} supervisors up; rule {} applied",
            a.nodes,
            watch.display()
        );
        println!("reach it with:  source {}/env   (or:)", a.dir.display());
        print!("{env}");
        println!("then: haconiwa cluster status | haconiwa containers | haconiwa events; stop: haconiwa down");
        println!(
            "dashboard: http://{}.1:{}/   metrics: http://{}.1:{}/metrics",
            a.net,
            a.port.saturating_add(80),
            a.net,
            a.port.saturating_add(80)
        );
        return Ok(0);
    }
    let result = live_table(&mut client, &watch).await;
    teardown(&info);
    println!("\nlocal cluster stopped and removed");
    result.map(|()| 0)
}

/// A cluster CA, a certificate for each supervisor (its loopback address) and one for the
/// CLI, in DIR/tls; returns the CA, the CLI's certificate and key.
fn make_certificates(a: &UpArgs) -> Result<(PathBuf, PathBuf, PathBuf), CliError> {
    use crate::api::certs::{self, Subject};
    let dir = a.dir.join("tls");
    private_dir(&dir)?;
    let ca = certs::create_ca(30)?;
    certs::write_private(&dir.join("ca.pem"), &ca.cert_pem, true)?;
    certs::write_private(&dir.join("ca-key.pem"), &ca.key_pem, true)?;
    let (from, until) = certs::validity(30);
    for i in 1..=a.nodes {
        let ip: std::net::IpAddr = format!("{}.{i}", a.net)
            .parse()
            .map_err(|_| format!("--net {}: not an address", a.net))?;
        let subject = Subject::Node {
            id: i as u64,
            ips: vec![ip],
            dns: vec!["localhost".into()],
        };
        let c = certs::issue(&ca.key_pem, &subject, from, until)?;
        certs::write_private(&dir.join(format!("node-{i}.pem")), &c.cert_pem, true)?;
        certs::write_private(&dir.join(format!("node-{i}-key.pem")), &c.key_pem, true)?;
    }
    let admin = Subject::Client {
        name: "admin".into(),
    };
    let c = certs::issue(&ca.key_pem, &admin, from, until)?;
    let (cert, key) = (dir.join("admin.pem"), dir.join("admin-key.pem"));
    certs::write_private(&cert, &c.cert_pem, true)?;
    certs::write_private(&key, &c.key_pem, true)?;
    Ok((dir.join("ca.pem"), cert, key))
}

/// Creates `dir` (and parents) and makes it 0700: it holds the token or a cluster's data.
fn private_dir(dir: &Path) -> Result<(), CliError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| format!("{}: {e}", dir.display()).into())
}

async fn start_all(
    a: &UpArgs,
    exe: &Path,
    info: &mut UpInfo,
    save: &dyn Fn(&UpInfo) -> Result<(), CliError>,
) -> Result<(), CliError> {
    for i in 1..=a.nodes {
        let addr = format!("{}.{i}:{}", a.net, a.port);
        let log = std::os::unix::fs::OpenOptionsExt::mode(
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true),
            0o600,
        )
        .open(info.data_dir.join(format!("n{i}.log")))?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("supervisor")
            .args(["--listen", &addr, "--data-dir"])
            .arg(info.data_dir.join(format!("n{i}")))
            .env("HACONIWA_TOKEN", &info.token)
            .env("HACONIWA_STATE_DIR", &info.state_dir)
            .env("HACONIWA_CGROUP_PARENT", &info.cgroup_parent)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: the terminal's Ctrl-C is ours to handle.
            .process_group(0);
        if i > 1 {
            cmd.args(["--join", &info.servers.join(",")]);
        }
        cmd.arg("--secrets-key").arg(a.dir.join("secrets.key"));
        // The dashboard and /metrics of each supervisor, on loopback: port + 80.
        cmd.arg("--http-listen")
            .arg(format!("{}.{i}:{}", a.net, a.port.saturating_add(80)));
        if info.tls.is_some() {
            let tls = a.dir.join("tls");
            cmd.arg("--tls-ca")
                .arg(tls.join("ca.pem"))
                .arg("--tls-cert")
                .arg(tls.join(format!("node-{i}.pem")))
                .arg("--tls-key")
                .arg(tls.join(format!("node-{i}-key.pem")));
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("start supervisor {i}: {e}"))?;
        info.pids.push(child.id());
        info.servers.push(addr.clone());
        save(info)?;
        wait_members(&info.servers, &info.credentials(), i).await?;
    }
    Ok(())
}

async fn wait_members(
    servers: &[String],
    creds: &crate::api::Credentials,
    n: usize,
) -> Result<(), CliError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        match crate::api::connect(servers, creds).await {
            Ok(mut c) => match c
                .cluster_status(pb::ClusterStatusRequest {
                    without_digest: true,
                })
                .await
            {
                Ok(s) => {
                    let s = s.into_inner();
                    if s.leader != 0
                        && s.members.iter().filter(|m| m.state == "up").count() >= n
                        && !s.joint
                    {
                        return Ok(());
                    }
                    last = format!("{} member(s) up", s.members.len());
                }
                Err(e) => last = e.message().to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("the local cluster did not form ({last}); logs in the data directory").into())
}

async fn live_table(
    client: &mut pb::cluster_client::ClusterClient<crate::api::AuthChannel>,
    watch: &Path,
) -> Result<(), CliError> {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tick.tick() => {}
        }
        let status = client
            .cluster_status(pb::ClusterStatusRequest {
                without_digest: true,
            })
            .await;
        let containers = client
            .list_containers(pb::ListContainersRequest { all: false })
            .await;
        let mut out = String::from("\x1b[2J\x1b[H");
        out.push_str(&format!(
            "haconiwa up: rule {}   (Ctrl-C stops and removes everything)\n\n",
            watch.display()
        ));
        match (status, containers) {
            (Ok(s), Ok(c)) => {
                let s = s.into_inner();
                let c = c.into_inner().containers;
                out.push_str(&format!(
                    "leader: node {}   term: {}   commit index: {}\n\n",
                    s.leader, s.term, s.commit_index
                ));
                out.push_str(&format!(
                    "{:>4}  {:<16} {:<8} {:<9} {:>10}\n",
                    "NODE", "ADDRESS", "ROLE", "STATE", "CONTAINERS"
                ));
                for m in &s.members {
                    let mark = if m.id == s.leader { "*" } else { " " };
                    out.push_str(&format!(
                        "{:>3}{mark}  {:<16} {:<8} {:<9} {:>10}\n",
                        m.id, m.addr, m.role, m.state, m.containers
                    ));
                }
                out.push_str(&format!(
                    "\n{:<26} {:<12} {:>4} {:<9} {:>7}\n",
                    "CONTAINER", "DEFINITION", "NODE", "STATE", "PID"
                ));
                for x in &c {
                    out.push_str(&format!(
                        "{:<26} {:<12} {:>4} {:<9} {:>7}\n",
                        x.id, x.definition, x.node, x.state, x.pid
                    ));
                }
                let running = c.iter().filter(|x| x.state == "running").count();
                out.push_str(&format!(
                    "\n{running} running, {} wanted\n",
                    c.iter().filter(|x| x.desired == "running").count()
                ));
            }
            (Err(e), _) | (_, Err(e)) => {
                out.push_str(&format!("(waiting for the cluster: {})\n", e.message()))
            }
        }
        print!("{out}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
}
