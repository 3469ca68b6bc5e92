//! The scale benchmark of docs/benchmarks.md, run by `scripts/bench-scale`: three real
//! supervisors of the release build on 127.78.x.{1,2,3} and N simulated nodes (joined
//! outside Raft; heartbeats and reports through the real gRPC API; no containers).
//! For each N it measures placements per second as a rule asks for more and more
//! records, and no-op writes (a report that changes nothing, one Raft entry each) with 1
//! and many clients at each size: throughput, p50/p99 latency, the leader's CPU and
//! RSS. The same client then writes to a 3-member etcd on the same machine. With
//! `--catch-up`, a fourth supervisor with an empty data directory joins at the largest
//! size and is timed until it has applied the leader's commit index (from a snapshot).
//! Issue 27's C1M: `--nodes 5000 --records 1000000 --catch-up`.
//! With `--containers N`: one real supervisor keeps N of the example sleeper on its own
//! node: time until all really run (from the cgroups), until the rule's first version is
//! rolled out, the supervisor's idle CPU after that, the cost of the agent's full scan of
//! the N state files (old way and new way), the memory each container's monitor and
//! PID 1 hold, and the time until all are gone.
//!
//! `cargo bench --bench scale -- [--nodes 100,1000] [--records 10000,100000]
//!  [--clients 1,16,64] [--secs 5] [--no-etcd] [--catch-up] [--containers 5000]`;
//! prints markdown and writes `target/bench/scale.md`.

use haconiwa::api::{self, pb};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-scale-token-0123";
const BIN: &str = env!("CARGO_BIN_EXE_haconiwa");
/// Every node heartbeats this often (the supervisors' `--heartbeat-ms`, and the
/// simulated nodes) up to 1,000 nodes: a thousand nodes at the default 200 ms would be
/// 5,000 calls a second. The leader places only on nodes heard from within 3
/// heartbeats. Beyond 1,000 nodes the period grows with the count (`Pace`).
const HEARTBEAT_MS: u64 = 1000;
/// The most heartbeats a second the simulated nodes send together: Nomad spaces its
/// clients' heartbeats the same way (`max_heartbeats_per_second`), so that 5,000 hosts
/// do not drown its servers.
const HEARTBEATS_PER_SEC: u64 = 1000;

/// The heartbeat period, lease and node TTL of one cluster of the bench.
#[derive(Clone, Copy)]
struct Pace {
    heartbeat_ms: u64,
}

impl Pace {
    /// The pace for `nodes` simulated nodes.
    fn for_nodes(nodes: usize) -> Pace {
        let spread = (nodes as u64 * 1000).div_ceil(HEARTBEATS_PER_SEC);
        Pace {
            heartbeat_ms: HEARTBEAT_MS.max(spread),
        }
    }

    /// The lease that goes with it (at least 3 heartbeats).
    fn lease_ms(self) -> u64 {
        3 * self.heartbeat_ms
    }

    /// The TTL after which a silent node is down.
    fn node_ttl_ms(self) -> u64 {
        10 * self.heartbeat_ms
    }
}

type Client = pb::cluster_client::ClusterClient<api::AuthChannel>;
type Error = Box<dyn std::error::Error + Send + Sync>;

struct Opts {
    nodes: Vec<usize>,
    records: Vec<usize>,
    clients: Vec<usize>,
    secs: f64,
    etcd: bool,
    /// Containers on one real node (`--containers 1000,2000`); empty: skipped.
    containers: Vec<usize>,
    /// Records of the etcd mirror run (`--mirror 10000`); 0: skipped.
    mirror: usize,
    /// Writes and calls with and without TLS (`--tls`).
    tls: bool,
    /// A fourth supervisor catching up from a snapshot at the largest size (`--catch-up`).
    catch_up: bool,
}

fn list(v: &str) -> Vec<usize> {
    v.split(',').filter_map(|x| x.trim().parse().ok()).collect()
}

fn parse() -> Opts {
    let mut o = Opts {
        nodes: vec![100, 1000],
        records: vec![10_000, 100_000],
        clients: vec![1, 16, 64],
        secs: 5.0,
        etcd: true,
        containers: Vec::new(),
        mirror: 0,
        tls: false,
        catch_up: false,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let next = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--nodes" => o.nodes = list(&next),
            "--records" => o.records = list(&next),
            "--clients" => o.clients = list(&next),
            "--secs" => o.secs = next.parse().unwrap_or(5.0),
            "--containers" => o.containers = list(&next),
            "--mirror" => o.mirror = next.parse().unwrap_or(10_000),
            "--tls" => {
                o.tls = true;
                i += 1;
                continue;
            }
            "--catch-up" => {
                o.catch_up = true;
                i += 1;
                continue;
            }
            "--no-etcd" => {
                o.etcd = false;
                i += 1;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

/// Latencies of one write run.
struct Run {
    ops: usize,
    secs: f64,
    lat: Vec<Duration>,
    errors: usize,
}

impl Run {
    fn per_sec(&self) -> f64 {
        self.ops as f64 / self.secs
    }

    fn pct(&self, p: f64) -> f64 {
        if self.lat.is_empty() {
            return 0.0;
        }
        let i = ((self.lat.len() as f64 * p).ceil() as usize).clamp(1, self.lat.len()) - 1;
        self.lat[i].as_secs_f64() * 1000.0
    }
}

/// Runs `clients` loops of `write` for `secs`; each loop gets its number.
async fn drive<F, Fut>(clients: usize, secs: f64, write: F) -> Run
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), Error>> + Send,
{
    let write = Arc::new(write);
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..clients {
        let write = write.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            while Instant::now() < end {
                let t = Instant::now();
                match write(k).await {
                    Ok(()) => {
                        let l = t.elapsed();
                        if std::env::var_os("BENCH_SLOW").is_some() && l > Duration::from_millis(20)
                        {
                            eprintln!(
                                "slow at {:.3}: {:.1} ms",
                                t.duration_since(t0).as_secs_f64(),
                                l.as_secs_f64() * 1000.0
                            );
                        }
                        lat.push(l)
                    }
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut run = Run {
        ops: 0,
        secs: 0.0,
        lat: Vec::new(),
        errors: 0,
    };
    for t in tasks {
        if let Ok((lat, errors)) = t.await {
            run.lat.extend(lat);
            run.errors += errors;
        }
    }
    run.secs = t0.elapsed().as_secs_f64();
    run.ops = run.lat.len();
    run.lat.sort();
    run
}

/// CPU seconds (user + system) and RSS (kB) of a process.
fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rfind(')').map(|i| &stat[i + 2..]).unwrap_or("");
    let f: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0);
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|x| x.parse().ok()))
        .unwrap_or(0);
    (ticks as f64 / 100.0, rss)
}

/// Three supervisors of the release build.
struct Supervisors {
    dir: PathBuf,
    addrs: Vec<String>,
    procs: Vec<Child>,
}

impl Supervisors {
    fn start(dir: &Path, net: u8, extra: &[String]) -> Supervisors {
        Supervisors::start_paced(dir, net, extra, Pace::for_nodes(0))
    }

    fn start_paced(dir: &Path, net: u8, extra: &[String], pace: Pace) -> Supervisors {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("create the bench dir");
        let addrs: Vec<String> = (1..=3).map(|i| format!("127.78.{net}.{i}:7900")).collect();
        let mut s = Supervisors {
            dir: dir.to_path_buf(),
            addrs: addrs.clone(),
            procs: Vec::new(),
        };
        for i in 0..3 {
            let mut cmd = supervisor(dir, net, i + 1, pace);
            cmd.args(extra);
            if i > 0 {
                cmd.args(["--join", &addrs[..i].join(",")]);
            }
            s.procs.push(cmd.spawn().expect("start a supervisor"));
            // One at a time: the ids follow the order (1, 2, 3).
            let want = i + 1;
            wait_for(
                Duration::from_secs(60),
                "the supervisors to form a cluster",
                || {
                    let out = cli(&s.addrs[..=i], &["cluster", "status", "--json"]);
                    out.and_then(|o| serde_json::from_str::<serde_json::Value>(&o).ok())
                        .is_some_and(|v| {
                            v["leader"].as_u64().unwrap_or(0) != 0
                                && v["joint"] == false
                                && v["members"].as_array().is_some_and(|m| {
                                    m.len() == want
                                        && m.iter()
                                            .all(|x| x["role"] == "voter" && x["state"] == "up")
                                })
                        })
                },
            );
        }
        s
    }

    fn pid_of(&self, node: u64) -> u32 {
        self.procs[(node as usize).saturating_sub(1).min(2)].id()
    }
}

/// The command of supervisor `n` (1, 2, 3, ...) of a bench cluster on 127.78.`net`.x.
fn supervisor(dir: &Path, net: u8, n: usize, pace: Pace) -> Command {
    let log = std::fs::File::create(dir.join(format!("n{n}.log"))).expect("log");
    let mut cmd = Command::new(BIN);
    cmd.arg("supervisor")
        .args(["--listen", &format!("127.78.{net}.{n}:7900")])
        .arg("--data-dir")
        .arg(dir.join(format!("n{n}")))
        .args(["--heartbeat-ms", &pace.heartbeat_ms.to_string()])
        .args(["--lease-ms", &pace.lease_ms().to_string()])
        .args(["--node-ttl-ms", &pace.node_ttl_ms().to_string()])
        .env("HACONIWA_TOKEN", TOKEN)
        .env("HACONIWA_STATE_DIR", dir.join("state"))
        .env(
            "HACONIWA_CGROUP_PARENT",
            format!("haconiwa-bench-scale-{net}"),
        )
        .env(
            "RUST_LOG",
            "warn,haconiwa::mirror=info,haconiwa::supervisor::leader::rollouts=debug",
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    cmd
}

impl Drop for Supervisors {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        let _ = std::fs::remove_dir_all(self.dir.join("state"));
    }
}

/// TLS settings of the CLI while the TLS run's supervisors are up (empty otherwise).
static CLI_ENV: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// What the bench's clients present (the token; TLS in the TLS run).
static CREDS: std::sync::Mutex<Option<api::Credentials>> = std::sync::Mutex::new(None);

fn creds() -> api::Credentials {
    CREDS
        .lock()
        .ok()
        .and_then(|c| c.clone())
        .unwrap_or_else(|| api::Credentials::token(TOKEN))
}

fn cli(servers: &[String], args: &[&str]) -> Option<String> {
    let env = CLI_ENV.lock().map(|e| e.clone()).unwrap_or_default();
    let o = Command::new(BIN)
        .args(args)
        .env("HACONIWA_SERVER", servers.join(","))
        .env("HACONIWA_TOKEN", TOKEN)
        .envs(env)
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

fn wait_for(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

async fn leader(servers: &[String]) -> Result<(Client, u64), Error> {
    let mut c = api::connect(servers, &creds()).await?;
    let s = c
        .cluster_status(pb::ClusterStatusRequest {
            without_digest: true,
        })
        .await?
        .into_inner();
    let c = api::connect(std::slice::from_ref(&s.leader_addr), &creds()).await?;
    Ok((c, s.leader))
}

/// Active containers on the simulated nodes, as the leader counts them.
async fn placed(c: &mut Client, sims: &[u64]) -> Result<u64, Error> {
    let s = c
        .cluster_status(pb::ClusterStatusRequest {
            without_digest: true,
        })
        .await?
        .into_inner();
    Ok(s.members
        .iter()
        .filter(|m| sims.contains(&m.id))
        .map(|m| m.containers as u64)
        .sum())
}

/// Joins `n` simulated nodes and keeps them heartbeating at their pace until `stop`.
async fn simulate(c: &Client, n: usize, stop: Arc<AtomicBool>) -> Result<Vec<u64>, Error> {
    let period = Duration::from_millis(Pace::for_nodes(n).heartbeat_ms);
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let mut labels = std::collections::HashMap::new();
        labels.insert("sim".to_string(), "yes".to_string());
        let r = c
            .clone()
            .join(pb::JoinRequest {
                node_id: 0,
                addr: format!("sim-{i}.invalid:1"),
                labels,
                outside_raft: true,
            })
            .await?;
        ids.push(r.into_inner().node_id);
    }
    for chunk in ids.chunks(50) {
        let chunk = chunk.to_vec();
        let mut c = c.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                for id in &chunk {
                    // Simulated nodes apply nothing: they claim to be up to date.
                    let _ = c
                        .heartbeat(pb::HeartbeatRequest {
                            node_id: *id,
                            applied_index: u64::MAX,
                            policy: String::new(),
                        })
                        .await;
                }
                tokio::time::sleep(period.saturating_sub(t.elapsed())).await;
            }
        });
    }
    Ok(ids)
}

/// The most one `spawn` may ask for (the DSL's bound); the rule asks again as the
/// placements commit, until the count is reached.
const SPAWN_MOST: usize = 100_000;

fn write_rule(dir: &Path, target: usize) -> PathBuf {
    let root = dir.join("rootfs");
    let _ = std::fs::create_dir_all(&root);
    std::fs::write(
        dir.join("simwork.haco"),
        format!(
            "haconiwa.define(|c| {{\n  c.name = `simwork-${{uuid_short()}}`;\n  c.init_command = [\"/bin/sleep\", \"3600\"];\n  c.chroot_to(\"{}\");\n  c.daemonize();\n}});\n",
            root.display()
        ),
    )
    .expect("write simwork.haco");
    let rule = dir.join("simwork.watch");
    std::fs::write(
        &rule,
        format!(
            "haconiwa.watch(|w| {{\n  w.watch(\"cluster\", |event| {{\n    let missing = {target} - event.cluster.count(\"simwork\");\n    if missing > {SPAWN_MOST} {{ missing = {SPAWN_MOST}; }}\n    if missing > 0 {{ haconiwa.spawn(#{{ haco: \"simwork.haco\", count: missing, node_labels: #{{ sim: \"yes\" }} }}); }}\n  }});\n}});\n"
        ),
    )
    .expect("write simwork.watch");
    rule
}

/// One report per call on the caller's own container: the first changes it to
/// running, every later one changes nothing (a no-op write: one Raft entry).
async fn noop_writes(c: &Client, targets: &[(u64, String)], clients: usize, secs: f64) -> Run {
    let c = c.clone();
    let targets = Arc::new(targets.to_vec());
    drive(clients, secs, move |k| {
        let mut c = c.clone();
        let targets = targets.clone();
        async move {
            let (node, id) = targets[k % targets.len()].clone();
            c.report(pb::ReportRequest {
                node_id: node,
                id,
                state: "running".into(),
                pid: 1,
                ..Default::default()
            })
            .await?;
            Ok(())
        }
    })
    .await
}

/// Up to `n` containers of the simulated nodes, spread over the nodes.
async fn some_containers(c: &mut Client, n: usize) -> Result<Vec<(u64, String)>, Error> {
    let list = c
        .list_containers(pb::ListContainersRequest { all: false })
        .await?
        .into_inner();
    let mut by_node: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for x in list.containers {
        by_node.entry(x.node).or_default().push(x.id);
    }
    let mut out = Vec::new();
    'outer: for round in 0.. {
        let mut any = false;
        for (node, ids) in &by_node {
            if let Some(id) = ids.get(round) {
                out.push((*node, id.clone()));
                any = true;
                if out.len() >= n {
                    break 'outer;
                }
            }
        }
        if !any {
            break;
        }
    }
    Ok(out)
}

struct Report {
    lines: Vec<String>,
}

impl Report {
    fn line(&mut self, s: String) {
        println!("{s}");
        self.lines.push(s);
    }
}

fn write_row(
    out: &mut Report,
    who: &str,
    size: &str,
    clients: usize,
    run: &Run,
    cpu: Option<(f64, u64)>,
) {
    let cpu = cpu
        .map(|(c, rss)| format!("{:.0} % | {} MB", c * 100.0, rss / 1024))
        .unwrap_or_else(|| "– | –".into());
    out.line(format!(
        "| {who} | {size} | {clients} | {:.0} | {:.2} | {:.2} | {} | {cpu} |",
        run.per_sec(),
        run.pct(0.5),
        run.pct(0.99),
        run.errors
    ));
}

async fn writes_at(
    out: &mut Report,
    c: &Client,
    sup: &Supervisors,
    leader: u64,
    size: &str,
    targets: &[(u64, String)],
    o: &Opts,
) {
    for &k in &o.clients {
        let pid = sup.pid_of(leader);
        let (cpu0, _) = usage(pid);
        let run = noop_writes(c, targets, k, o.secs).await;
        let (cpu1, rss) = usage(pid);
        write_row(
            out,
            "haconiwa",
            size,
            k,
            &run,
            Some(((cpu1 - cpu0) / run.secs, rss)),
        );
    }
}

/// What the leader's rollout looks at the rule's copies cost in all (its debug lines,
/// "rollout look at N copies took M ms"): the look is one pass over every copy.
fn rollout_looks(dir: &Path, leader_id: u64) -> String {
    let log = std::fs::read_to_string(dir.join(format!("n{leader_id}.log"))).unwrap_or_default();
    let looks: Vec<(u64, u64)> = log
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find("rollout look at ")? + "rollout look at ".len()..];
            let mut words = rest.split_whitespace();
            let copies = words.next()?.parse().ok()?;
            let ms = words.nth(2)?.parse().ok()?;
            Some((copies, ms))
        })
        .collect();
    let total: u64 = looks.iter().map(|(_, ms)| ms).sum();
    let longest = looks
        .iter()
        .max_by_key(|(_, ms)| *ms)
        .copied()
        .unwrap_or((0, 0));
    format!(
        "- the leader's rollout looks: {} in all, {:.1} s together, the longest {} ms at {} copies",
        looks.len(),
        total as f64 / 1000.0,
        longest.1,
        longest.0
    )
}

async fn bench_cluster(out: &mut Report, o: &Opts, nodes: usize, net: u8) -> Result<(), Error> {
    let dir = PathBuf::from(format!("target/bench/scale-{nodes}"));
    let sup = Supervisors::start_paced(&dir, net, &[], Pace::for_nodes(nodes));
    let (mut c, leader_id) = leader(&sup.addrs).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let t = Instant::now();
    let sims = simulate(&c, nodes, stop.clone()).await?;
    out.line(format!(
        "\n### {nodes} simulated nodes (joined in {:.1} s), leader node {leader_id}\n",
        t.elapsed().as_secs_f64()
    ));
    let (_, rss0) = usage(sup.pid_of(leader_id));
    // A first small placement so that the no-op writes have records to report on.
    let mut placements = vec![
        "| wanted | committed in | placements/s | leader CPU | leader RSS |".to_string(),
        "|---|---|---|---|---|".to_string(),
    ];
    let first = 100.min(o.records.first().copied().unwrap_or(100));
    let mut sizes = vec![first];
    sizes.extend(o.records.iter().copied().filter(|r| *r > first));
    let writes = vec![
        "| system | records | clients | writes/s | p50 ms | p99 ms | errors | leader CPU | leader RSS |".to_string(),
        "|---|---|---|---|---|---|---|---|---|".to_string(),
    ];
    let mut before = 0u64;
    let mut written = Report { lines: Vec::new() };
    let mut trace = Vec::new();
    let mut targets = Vec::new();
    for target in sizes {
        let rule = write_rule(&dir, target);
        let pid = sup.pid_of(leader_id);
        let (cpu0, _) = usage(pid);
        let t = Instant::now();
        cli(
            &sup.addrs,
            &["watch", "apply", rule.to_str().unwrap_or_default()],
        )
        .ok_or("watch apply failed")?;
        let end = Instant::now() + Duration::from_secs(600);
        // The rate of each tenth of the new records: sustained to the last one?
        let mut tenths = Vec::new();
        let step = ((target as u64).saturating_sub(before) / 10).max(1);
        let mut mark = (before, 0.0);
        loop {
            let n = placed(&mut c, &sims).await?;
            if n >= mark.0 + step || n >= target as u64 {
                let now = t.elapsed().as_secs_f64();
                tenths.push((n - mark.0) as f64 / (now - mark.1).max(1e-9));
                mark = (n, now);
            }
            if n >= target as u64 {
                break;
            }
            if Instant::now() > end {
                return Err(format!("only {n} of {target} placed in 600 s").into());
            }
            // Each look lists every member (5,000 of them cost the leader a few ms):
            // often while a step is short, then every 200 ms.
            let poll = if t.elapsed() < Duration::from_secs(1) {
                20
            } else {
                200
            };
            tokio::time::sleep(Duration::from_millis(poll)).await;
        }
        let secs = t.elapsed().as_secs_f64();
        if tenths.len() > 2 {
            let rates: Vec<String> = tenths.iter().map(|r| format!("{r:.0}")).collect();
            eprintln!("placements/s by tenth up to {target}: {}", rates.join(", "));
            trace.push(format!(
                "- up to {target}: {} (slowest {:.0}, last {:.0})",
                rates.join(", "),
                tenths.iter().copied().fold(f64::MAX, f64::min),
                tenths.last().copied().unwrap_or(0.0)
            ));
        }
        let (cpu1, rss) = usage(pid);
        // The writes measure the commit at this size, not beside followers still
        // applying the placements: all three first apply what the leader committed.
        let lag = all_applied(&mut c, &sup.addrs).await?;
        if lag > 0.5 {
            trace.push(format!(
                "- up to {target}: every member had applied it {lag:.1} s after the leader counted it"
            ));
        }
        let new = target as u64 - before;
        before = target as u64;
        placements.push(format!(
            "| {target} (+{new}) | {secs:.2} s | {:.0} | {:.0} % | {} MB |",
            new as f64 / secs,
            (cpu1 - cpu0) / secs * 100.0,
            rss / 1024
        ));
        // Chosen at the first size and kept: listing a million containers is a
        // benchmark of its own.
        if targets.is_empty() {
            targets = some_containers(&mut c, *o.clients.iter().max().unwrap_or(&1)).await?;
        }
        writes_at(
            &mut written,
            &c,
            &sup,
            leader_id,
            &target.to_string(),
            &targets,
            o,
        )
        .await;
    }
    let (_, rss1) = usage(sup.pid_of(leader_id));
    for l in placements {
        out.line(l);
    }
    out.line(format!(
        "\nLeader RSS {} MB with {nodes} nodes and no records, {} MB at {} records: {:.2} kB per record.\n",
        rss0 / 1024,
        rss1 / 1024,
        before,
        (rss1.saturating_sub(rss0)) as f64 / before.max(1) as f64
    ));
    trace.push(rollout_looks(&dir, leader_id));
    if !trace.is_empty() {
        out.line(
            "Placements per second by tenth of each step (`watch apply` to the last record):\n"
                .into(),
        );
        for l in trace {
            out.line(l);
        }
        out.line(String::new());
    }
    for l in writes {
        out.line(l);
    }
    for l in written.lines {
        out.lines.push(l);
    }
    if o.catch_up {
        catch_up(out, &sup, &mut c, net, Pace::for_nodes(nodes), before).await?;
    }
    stop.store(true, Ordering::Relaxed);
    Ok(())
}

/// Waits until every member has applied the leader's commit index of now; the seconds
/// it took.
async fn all_applied(leader: &mut Client, addrs: &[String]) -> Result<f64, Error> {
    let t = Instant::now();
    let goal = leader
        .cluster_status(pb::ClusterStatusRequest {
            without_digest: true,
        })
        .await?
        .into_inner()
        .commit_index;
    for addr in addrs {
        applied_up_to(addr, goal).await?;
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Waits (up to 300 s) until the member at `addr` has applied index `goal`, connecting
/// again while it does not answer yet (a member still starting).
async fn applied_up_to(addr: &str, goal: u64) -> Result<(), Error> {
    let end = Instant::now() + Duration::from_secs(300);
    let mut member = None;
    while Instant::now() < end {
        if member.is_none() {
            member = api::connect(&[addr.to_string()], &creds()).await.ok();
        }
        if let Some(m) = member.as_mut() {
            let s = m
                .cluster_status(pb::ClusterStatusRequest {
                    without_digest: true,
                })
                .await;
            if s.is_ok_and(|s| s.into_inner().last_applied >= goal) {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("{addr} had not applied index {goal} after 300 s").into())
}

/// A fourth supervisor joins with an empty data directory when the state is at its
/// largest. The leader purged its log long before, so the newcomer can only start from
/// a snapshot of the whole state: the time until it has applied what the leader had
/// committed when it started, and its RSS then.
async fn catch_up(
    out: &mut Report,
    sup: &Supervisors,
    c: &mut Client,
    net: u8,
    pace: Pace,
    records: u64,
) -> Result<(), Error> {
    let status = c
        .cluster_status(pb::ClusterStatusRequest {
            without_digest: true,
        })
        .await?
        .into_inner();
    let goal = status.commit_index;
    let addr = format!("127.78.{net}.4:7900");
    let t = Instant::now();
    let mut child = supervisor(&sup.dir, net, 4, pace)
        .args(["--join", &sup.addrs.join(",")])
        .spawn()?;
    let pid = child.id();
    let result = applied_up_to(&addr, goal)
        .await
        .map(|()| t.elapsed().as_secs_f64());
    let (_, rss) = usage(pid);
    let _ = child.kill();
    let _ = child.wait();
    let secs = result?;
    out.line(format!(
        "A fourth supervisor with an empty data directory joined at {records} records and had applied the leader's commit index ({goal}) after **{secs:.1} s** (from a snapshot once the leader has purged its log; its RSS then {} MB).\n",
        rss / 1024
    ));
    Ok(())
}

/// A 3-member etcd on 127.78.200.{1,2,3}, removed on drop.
struct Etcd {
    dir: PathBuf,
    procs: Vec<Child>,
}

impl Etcd {
    fn start(dir: &Path) -> Result<Etcd, Error> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        let peers: Vec<String> = (1..=3)
            .map(|i| format!("e{i}=http://127.78.200.{i}:2380"))
            .collect();
        let mut e = Etcd {
            dir: dir.to_path_buf(),
            procs: Vec::new(),
        };
        for i in 1..=3 {
            let log = std::fs::File::create(dir.join(format!("e{i}.log")))?;
            let child = Command::new("etcd")
                .args(["--name", &format!("e{i}")])
                .arg("--data-dir")
                .arg(dir.join(format!("e{i}")))
                .args([
                    "--listen-client-urls",
                    &format!("http://127.78.200.{i}:2379"),
                ])
                .args([
                    "--advertise-client-urls",
                    &format!("http://127.78.200.{i}:2379"),
                ])
                .args(["--listen-peer-urls", &format!("http://127.78.200.{i}:2380")])
                .args([
                    "--initial-advertise-peer-urls",
                    &format!("http://127.78.200.{i}:2380"),
                ])
                .args(["--initial-cluster", &peers.join(",")])
                .args(["--initial-cluster-state", "new"])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .map_err(|e| {
                    format!(
                        "start etcd (Debian's etcd-server; scripts/bench-scale installs it): {e}"
                    )
                })?;
            e.procs.push(child);
        }
        Ok(e)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn bench_etcd(out: &mut Report, o: &Opts) -> Result<(), Error> {
    let etcd = Etcd::start(Path::new("target/bench/scale-etcd"))?;
    let endpoints: Vec<String> = (1..=3)
        .map(|i| format!("http://127.78.200.{i}:2379"))
        .collect();
    // The leader, as for haconiwa: the client writes to it directly.
    let end = Instant::now() + Duration::from_secs(30);
    let (client, leader_pid) = loop {
        let mut found = None;
        for (i, ep) in endpoints.iter().enumerate() {
            if let Ok(mut c) = etcd_client::Client::connect([ep.as_str()], None).await {
                if let Ok(s) = c.status().await {
                    if s.leader() != 0 && s.header().map(|h| h.member_id()) == Some(s.leader()) {
                        found = Some((c, etcd.procs[i].id()));
                        break;
                    }
                }
            }
        }
        if let Some(f) = found {
            break f;
        }
        if Instant::now() > end {
            return Err("etcd elected no leader in 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let kv = client.kv_client();
    for &k in &o.clients {
        let kv = kv.clone();
        let (cpu0, _) = usage(leader_pid);
        let run = drive(k, o.secs, move |n| {
            let mut kv = kv.clone();
            async move {
                kv.put(format!("bench/noop/{n}"), "running", None).await?;
                Ok(())
            }
        })
        .await;
        let (cpu1, rss) = usage(leader_pid);
        write_row(
            out,
            "etcd 3 members",
            "1 key per client",
            k,
            &run,
            Some(((cpu1 - cpu0) / run.secs, rss)),
        );
    }
    Ok(())
}

/// The etcd mirror (docs/etcd.md) of a cluster holding `records` containers: the time
/// to copy them all after an outage (etcd frozen with SIGSTOP while they are placed),
/// then the lag from a change applied (the client's call returned) to the change seen
/// by a watcher of etcd, at a steady 100 changes a second.
async fn bench_mirror(out: &mut Report, records: usize) -> Result<(), Error> {
    let etcd = Etcd::start(Path::new("target/bench/mirror-etcd"))?;
    let endpoints: Vec<String> = (1..=3)
        .map(|i| format!("http://127.78.200.{i}:2379"))
        .collect();
    let prefix = "/haconiwa/bench";
    let extra = vec![
        "--etcd-endpoint".to_string(),
        endpoints.join(","),
        "--etcd-prefix".to_string(),
        prefix.to_string(),
    ];
    let dir = PathBuf::from("target/bench/mirror");
    let sup = Supervisors::start(&dir, 30, &extra);
    let (mut c, leader_id) = leader(&sup.addrs).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let sims = simulate(&c, 10, stop.clone()).await?;
    let mirror = |c: &mut Client| {
        let mut c = c.clone();
        async move {
            c.mirror_status(pb::MirrorStatusRequest {})
                .await
                .map(|r| r.into_inner())
        }
    };
    let end = Instant::now() + Duration::from_secs(30);
    while !mirror(&mut c)
        .await
        .is_ok_and(|m| m.writer && m.lag_entries == 0)
    {
        if Instant::now() > end {
            return Err("the mirror did not start writing in 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The outage: etcd frozen while the records are placed.
    for p in &etcd.procs {
        signal(p.id(), "STOP");
    }
    let rule = write_rule(&dir, records);
    cli(
        &sup.addrs,
        &["watch", "apply", rule.to_str().unwrap_or_default()],
    )
    .ok_or("watch apply failed")?;
    let end = Instant::now() + Duration::from_secs(600);
    while placed(&mut c, &sims).await? < records as u64 {
        if Instant::now() > end {
            return Err(format!("{records} not placed in 600 s").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The mirror notices (its calls time out) before etcd comes back.
    let end = Instant::now() + Duration::from_secs(30);
    while mirror(&mut c).await.is_ok_and(|m| m.connected) {
        if Instant::now() > end {
            return Err("the mirror did not notice the frozen etcd in 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = mirror(&mut c).await?;
    let resyncs = m.resyncs;
    let lag_before = m.lag_entries;
    for p in &etcd.procs {
        signal(p.id(), "CONT");
    }
    let back = Instant::now();
    let end = back + Duration::from_secs(120);
    let caught_up = loop {
        let m = mirror(&mut c).await?;
        if m.connected && m.writer && m.resyncs > resyncs && m.lag_entries == 0 {
            break back.elapsed();
        }
        if Instant::now() > end {
            return Err(format!("the mirror did not catch up in 120 s: {m:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let log = std::fs::read_to_string(dir.join(format!("n{leader_id}.log"))).unwrap_or_default();
    let resync_line = log
        .lines()
        .rev()
        .find(|l| l.contains("etcd mirror: resynced"))
        .map(|l| l[l.find("resynced").unwrap_or(0)..].to_string())
        .unwrap_or_default();

    // Lag at 100 changes a second: reports that change a container's pid, each key's
    // change timed from the call's return to the watcher's event.
    let targets = some_containers(&mut c, 100).await?;
    let mut ec = etcd_client::Client::connect(&endpoints, None).await?;
    let dir_key = format!("{prefix}/v1/containers/");
    let mut watch = ec
        .watch(
            dir_key.clone(),
            Some(etcd_client::WatchOptions::new().with_prefix()),
        )
        .await?;
    let acked: Arc<std::sync::Mutex<BTreeMap<(String, i64), Instant>>> = Default::default();
    let lags: Arc<std::sync::Mutex<Vec<Duration>>> = Default::default();
    let (acked2, lags2) = (acked.clone(), lags.clone());
    let watcher = tokio::spawn(async move {
        while let Ok(Some(msg)) = watch.message().await {
            let now = Instant::now();
            for e in msg.events() {
                let Some(kv) = e.kv() else { continue };
                let id = String::from_utf8_lossy(kv.key())
                    .trim_start_matches(&dir_key)
                    .to_string();
                let v: serde_json::Value = serde_json::from_slice(kv.value()).unwrap_or_default();
                let Some(pid) = v["observed"]["running"]["pid"].as_i64() else {
                    continue;
                };
                // A change seen before its call returned counts as no lag.
                let t = acked2
                    .lock()
                    .map(|mut a| a.remove(&(id, pid)))
                    .ok()
                    .flatten();
                if let (Some(t), Ok(mut l)) = (t, lags2.lock()) {
                    l.push(now.saturating_duration_since(t));
                }
            }
        }
    });
    let secs = 20;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut sent = 0usize;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        let (node, id) = targets[sent % targets.len()].clone();
        let pid = 1_000 + sent as i32;
        c.report(pb::ReportRequest {
            node_id: node,
            id: id.clone(),
            state: "running".into(),
            pid,
            ..Default::default()
        })
        .await?;
        if let Ok(mut a) = acked.lock() {
            a.insert((id, pid as i64), Instant::now());
        }
        sent += 1;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    watcher.abort();
    let mut lags = lags.lock().map(|l| l.clone()).unwrap_or_default();
    lags.sort();
    let pct = |p: f64| {
        if lags.is_empty() {
            return 0.0;
        }
        let i = ((lags.len() as f64 * p).ceil() as usize).clamp(1, lags.len()) - 1;
        lags[i].as_secs_f64() * 1000.0
    };
    out.line(format!(
        "\n### The etcd mirror ({records} container records, 3 supervisors, a 3-member etcd)\n"
    ));
    out.line("| measure | value |".into());
    out.line("|---|---|".into());
    out.line(format!(
        "| resync after an outage: etcd frozen while {records} records were placed ({lag_before} entries behind), from SIGCONT to caught up | {:.2} s |",
        caught_up.as_secs_f64()
    ));
    out.line(format!(
        "| the leader's log of that resync | {resync_line} |"
    ));
    out.line(format!(
        "| lag from applied to visible in etcd at {:.0} changes/s: p50 / p99 / max ({} of {sent} changes seen) | {:.1} / {:.1} / {:.1} ms |",
        sent as f64 / secs as f64,
        lags.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    ));
    stop.store(true, Ordering::Relaxed);
    drop(sup);
    drop(etcd);
    Ok(())
}

/// Raft writes (no-op reports) and client calls (`cluster status` without the digest)
/// on the same 3-supervisor cluster shape, plaintext and with mutual TLS, one after the
/// other in one run.
async fn bench_tls(out: &mut Report, o: &Opts) -> Result<(), Error> {
    use haconiwa::api::certs::{self, Subject};
    let dir = PathBuf::from("target/bench/tls");
    let pki = dir.join("pki");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&pki)?;
    let net = 40u8;
    let ca = certs::create_ca(1)?;
    let (from, until) = certs::validity(1);
    // One node certificate naming all three addresses, for every supervisor.
    let ips = (1..=3)
        .map(|i| format!("127.78.{net}.{i}").parse())
        .collect::<Result<Vec<std::net::IpAddr>, _>>()?;
    let node = certs::issue(
        &ca.key_pem,
        &Subject::Node {
            id: 1,
            ips,
            dns: vec![],
        },
        from,
        until,
    )?;
    let client = certs::issue(
        &ca.key_pem,
        &Subject::Client {
            name: "bench".into(),
        },
        from,
        until,
    )?;
    for (name, text) in [
        ("ca.pem", &ca.cert_pem),
        ("node.pem", &node.cert_pem),
        ("node-key.pem", &node.key_pem),
        ("client.pem", &client.cert_pem),
        ("client-key.pem", &client.key_pem),
    ] {
        certs::write_private(&pki.join(name), text, true)?;
    }
    let p = |f: &str| pki.join(f).display().to_string();
    out.line(
        "\n### With and without TLS (3 supervisors, 10 simulated nodes, 100 records)\n".into(),
    );
    out.line("| transport | clients | writes/s | write p50 ms | write p99 ms | status calls/s (1 client) | status p50 ms | status p99 ms | leader CPU |".into());
    out.line("|---|---|---|---|---|---|---|---|---|".into());
    for tls in [false, true] {
        let extra: Vec<String> = if tls {
            vec![
                "--tls-ca".into(),
                p("ca.pem"),
                "--tls-cert".into(),
                p("node.pem"),
                "--tls-key".into(),
                p("node-key.pem"),
            ]
        } else {
            Vec::new()
        };
        if tls {
            if let Ok(mut e) = CLI_ENV.lock() {
                *e = vec![
                    ("HACONIWA_CA".into(), p("ca.pem")),
                    ("HACONIWA_CERT".into(), p("client.pem")),
                    ("HACONIWA_KEY".into(), p("client-key.pem")),
                ];
            }
            if let Ok(mut c) = CREDS.lock() {
                *c = Some(api::Credentials {
                    token: TOKEN.into(),
                    tls: Some(api::tls::ClientTls {
                        ca: pki.join("ca.pem"),
                        identity: Some((pki.join("client.pem"), pki.join("client-key.pem"))),
                    }),
                });
            }
        }
        let sup = Supervisors::start(&dir.join(if tls { "tls" } else { "plain" }), net, &extra);
        let (mut c, leader_id) = leader(&sup.addrs).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let sims = simulate(&c, 10, stop.clone()).await?;
        let rule = write_rule(&dir, 100);
        cli(
            &sup.addrs,
            &["watch", "apply", rule.to_str().unwrap_or_default()],
        )
        .ok_or("watch apply failed")?;
        let end = Instant::now() + Duration::from_secs(60);
        while placed(&mut c, &sims).await? < 100 {
            if Instant::now() > end {
                return Err("100 not placed in 60 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let targets = some_containers(&mut c, 64).await?;
        let status = {
            let c = c.clone();
            drive(1, o.secs, move |_| {
                let mut c = c.clone();
                async move {
                    c.cluster_status(pb::ClusterStatusRequest {
                        without_digest: true,
                    })
                    .await?;
                    Ok(())
                }
            })
            .await
        };
        for &k in &[1usize, 64] {
            let pid = sup.pid_of(leader_id);
            let (cpu0, _) = usage(pid);
            let run = noop_writes(&c, &targets, k, o.secs).await;
            let (cpu1, _) = usage(pid);
            out.line(format!(
                "| {} | {k} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.0} % |",
                if tls { "mutual TLS" } else { "plaintext" },
                run.per_sec(),
                run.pct(0.5),
                run.pct(0.99),
                status.per_sec(),
                status.pct(0.5),
                status.pct(0.99),
                (cpu1 - cpu0) / run.secs * 100.0
            ));
        }
        stop.store(true, Ordering::Relaxed);
        drop(sup);
    }
    if let Ok(mut e) = CLI_ENV.lock() {
        e.clear();
    }
    if let Ok(mut c) = CREDS.lock() {
        *c = None;
    }
    Ok(())
}

/// Sends a signal (`STOP`, `CONT`) to a process of ours.
fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Where a cgroup parent is, in every hierarchy that has it: the pids hierarchy first
/// (v1), then the unified one, then the others.
fn parent_dirs(parent: &str) -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    let mut roots = vec![base.join("pids"), base.to_path_buf()];
    if let Ok(rd) = std::fs::read_dir(base) {
        let others: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        roots.extend(others.into_iter().filter(|p| !p.ends_with("pids")));
    }
    roots
        .into_iter()
        .map(|r| r.join(parent))
        .filter(|p| p.is_dir())
        .collect()
}

/// The first of [`parent_dirs`]: where the parent's tasks are counted.
fn parent_dir(parent: &str) -> Option<PathBuf> {
    parent_dirs(parent).into_iter().next()
}

/// The tasks in a cgroup parent's whole subtree, from its pids controller: one read
/// (the monitors are outside the containers' cgroups, so only containers count).
fn tasks_under(parent: &str) -> Option<u64> {
    let dir = parent_dir(parent)?;
    std::fs::read_to_string(dir.join("pids.current"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Containers that really run under a cgroup parent: container cgroups of
/// `<hierarchy>/<parent>/node-*/` that hold a task. Read from `pids.current` (a counter)
/// where the pids controller is, else from `cgroup.procs`, which builds a list of pids
/// under the cgroup's locks: 5,000 of those every 100 ms slowed the very launches and
/// removals being measured.
fn really_running(parent: &str) -> usize {
    let Some(root) = parent_dir(parent) else {
        return 0;
    };
    let holds_a_task = |c: &Path| match std::fs::read_to_string(c.join("pids.current")) {
        Ok(n) => n.trim() != "0",
        Err(_) => !std::fs::read_to_string(c.join("cgroup.procs"))
            .unwrap_or_default()
            .trim()
            .is_empty(),
    };
    let mut n = 0;
    for node in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for c in std::fs::read_dir(node.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if c.path().is_dir() && holds_a_task(&c.path()) {
                n += 1;
            }
        }
    }
    n
}

/// One real supervisor keeps `n` of the example sleeper (sleeping an hour instead of
/// 30-60 s, so that "idle" is idle) on its own node: time until all really run, the
/// supervisor's CPU and RSS while they run, time until all are gone again.
async fn bench_node(out: &mut Report, n: usize) -> Result<String, Error> {
    let dir = PathBuf::from(format!("target/bench/node-{n}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let parent = format!("haconiwa-bench-node-{n}");
    let addr = "127.78.100.1:7900".to_string();
    let log = std::fs::File::create(dir.join("supervisor.log"))?;
    let mut sup = Command::new(BIN)
        .arg("supervisor")
        .args(["--listen", &addr])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("HACONIWA_TOKEN", TOKEN)
        .env("HACONIWA_STATE_DIR", dir.join("state"))
        .env("HACONIWA_CGROUP_PARENT", &parent)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let servers = vec![addr.clone()];
    let result = async {
        wait_for(Duration::from_secs(30), "the supervisor to lead", || {
            cli(&servers, &["cluster", "status", "--json"])
                .and_then(|o| serde_json::from_str::<serde_json::Value>(&o).ok())
                .is_some_and(|v| v["leader"].as_u64().unwrap_or(0) != 0)
        });
        let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sleeper.haco"))?;
        std::fs::write(dir.join("sleeper.haco"), example.replace("`${rand(30, 60)}`", "\"3600\""))?;
        let keep = |count: &str| {
            format!("haconiwa.watch(|w| {{\n  w.watch(\"cluster\", |event| {{\n{count}\n  }});\n}});\n")
        };
        std::fs::write(
            dir.join("many.watch"),
            keep(&format!("    let missing = {n} - event.cluster.count(\"sleeper\");\n    if missing > 0 {{ haconiwa.spawn(#{{ haco: \"sleeper.haco\", count: missing }}); }}")),
        )?;
        let pid = sup.id();
        let t = Instant::now();
        cli(&servers, &["watch", "apply", dir.join("many.watch").to_str().unwrap_or_default()])
            .ok_or("watch apply failed")?;
        let mut up = None;
        let end = Instant::now() + Duration::from_secs(300);
        while Instant::now() < end {
            // Each running container holds a task: fewer tasks, not all run yet.
            let maybe = tasks_under(&parent).is_none_or(|t| t >= n as u64);
            if maybe && really_running(&parent) >= n {
                up = Some(t.elapsed().as_secs_f64());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let up = up.ok_or_else(|| format!("{} of {n} running after 300 s", really_running(&parent)))?;
        // Idle is after the rule's first version is rolled out: until every copy is
        // settled, the leader steps the rollout over all of them (up to 1/20 of its
        // time, leader/rollouts.rs).
        let t_up = Instant::now();
        let end = t_up + Duration::from_secs(120);
        let current_status = || {
            cli(&servers, &["watch", "history", "many", "--json"])
                .and_then(|o| serde_json::from_str::<serde_json::Value>(&o).ok())
                .and_then(|v| {
                    let current = v.as_array()?.iter().find(|x| x["current"] == true)?;
                    current["status"].as_str().map(str::to_string)
                })
        };
        let mut stable = None;
        while Instant::now() < end {
            if let Some(status) = current_status().filter(|s| s != "deploying") {
                stable = Some((t_up.elapsed().as_secs_f64(), status));
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let (stable, status) =
            stable.ok_or("the rule's first version still deploying 120 s after all ran")?;
        // Settle (the last reports), then watch the supervisor idle.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (cpu0, _) = usage(pid);
        let idle = 20.0;
        tokio::time::sleep(Duration::from_secs_f64(idle)).await;
        let (cpu1, rss) = usage(pid);
        let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0);
        let scans = scan_costs(&dir.join("state"));
        let (pss, dirty) = memory_per_container(&dir.join("state"));
        std::fs::write(
            dir.join("none.watch"),
            keep("    let n = event.cluster.count(\"sleeper\");\n    if n > 0 { haconiwa.kill(#{ definition: \"sleeper\", count: n }); }"),
        )?;
        // The same rule name, so it replaces the first.
        std::fs::rename(dir.join("none.watch"), dir.join("many.watch"))?;
        let t = Instant::now();
        cli(&servers, &["watch", "apply", dir.join("many.watch").to_str().unwrap_or_default()])
            .ok_or("watch apply (remove all) failed")?;
        let (mut down, mut polls) = (None, 0u32);
        let end = Instant::now() + Duration::from_secs(300);
        while Instant::now() < end {
            // No task left under the parent: none runs (looked at in full now and then,
            // should anything else hold a task there).
            polls += 1;
            let maybe = tasks_under(&parent).is_none_or(|t| t == 0) || polls % 10 == 0;
            if maybe && really_running(&parent) == 0 {
                down = Some(t.elapsed().as_secs_f64());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let down = down.ok_or_else(|| format!("{} of {n} still running after 300 s", really_running(&parent)))?;
        out.line(format!(
            "| {n} | {up:.1} s | {stable:.1} s ({status}) | {:.2} % | {} MB | {threads} | {pss:.0} / {dirty:.0} kB | {down:.1} s |",
            (cpu1 - cpu0) / idle * 100.0,
            rss / 1024
        ));
        Ok::<String, Error>(scans)
    }
    .await;
    let _ = sup.kill();
    let _ = sup.wait();
    sweep_node(&dir.join("state"), &parent);
    result
}

/// What the agent's full scan of the node's state files costs while they all run, done
/// here the supervisor's two ways: every file read and every process checked in `/proc`
/// (`Runtime::states`, the scan before session 35), and `StateScan::states` after a
/// first read (unchanged files from memory, the live monitors asked at once with one
/// `poll` of their pidfds).
fn scan_costs(state: &Path) -> String {
    use haconiwa::runtime::{scan::StateScan, Runtime};
    let Some(node) = std::fs::read_dir(state)
        .into_iter()
        .flatten()
        .flatten()
        .next()
    else {
        return "(no node state directory to scan)".into();
    };
    let rt = Runtime::new(node.path(), "unused");
    let median = |f: &mut dyn FnMut() -> usize| {
        let mut times: Vec<f64> = (0..5)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        times[2]
    };
    let count = rt.states().len();
    let read_all = median(&mut || rt.states().len());
    let mut scan = StateScan::default();
    scan.states(&rt);
    // Six scans after the first read: one of them checks every process in /proc.
    let t = Instant::now();
    for _ in 0..6 {
        std::hint::black_box(scan.states(&rt).len());
    }
    let remembered = t.elapsed().as_secs_f64() * 1e3 / 6.0;
    format!(
        "A full scan of the {count} state files while they run: every file read and every process checked in /proc {read_all:.1} ms (median of 5); unchanged files from memory, live monitors polled at once {remembered:.1} ms (mean of 6)."
    )
}

/// What a container costs in memory beside its own command, averaged over the
/// running ones: its monitor's and its PID 1's Pss and private dirty memory, kB
/// (`/proc/PID/smaps_rollup`; the binary's pages are shared by all, so counted in Pss
/// by their share).
fn memory_per_container(state: &Path) -> (f64, f64) {
    use haconiwa::runtime::{state::Status, Runtime};
    let rollup = |pid: i32| -> (u64, u64) {
        let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| {
                    l.strip_prefix(name)?
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                })
                .unwrap_or(0)
        };
        (field("Pss:"), field("Private_Dirty:"))
    };
    let (mut pss, mut dirty, mut n) = (0u64, 0u64, 0u64);
    for node in std::fs::read_dir(state).into_iter().flatten().flatten() {
        for st in Runtime::new(node.path(), "unused").states() {
            if st.status != Status::Running {
                continue;
            }
            let (monitor, init) = (rollup(st.monitor_pid), rollup(st.pid));
            pss += monitor.0 + init.0;
            dirty += monitor.1 + init.1;
            n += 1;
        }
    }
    let n = n.max(1) as f64;
    (pss as f64 / n, dirty as f64 / n)
}

/// Kills what a node bench left running (monitors and containers by their state files,
/// then anything in the cgroups) and removes its cgroups.
fn sweep_node(state: &Path, parent: &str) {
    for node in std::fs::read_dir(state).into_iter().flatten().flatten() {
        for c in std::fs::read_dir(node.path().join("containers"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let Ok(text) = std::fs::read_to_string(c.path().join("state.json")) else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if v["status"] == "exited" {
                continue;
            }
            for key in ["monitor_pid", "pid"] {
                if let Some(pid) = v[key].as_i64().filter(|p| *p > 1) {
                    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                }
            }
        }
    }
    for root in parent_dirs(parent) {
        for _ in 0..50 {
            let mut dirs: Vec<PathBuf> = Vec::new();
            let mut stack = vec![root.clone()];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                    if e.path().is_dir() {
                        stack.push(e.path());
                    }
                }
                dirs.push(d);
            }
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for d in &dirs {
                let _ = std::fs::remove_dir(d);
            }
            if !root.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `--write-load RATE SERVER TOKEN NODE ID PID`: scripts/bench-cluster's load beside
/// its replacement runs, from a process of its own (the Python client it replaces took
/// about a core of this 2-core machine and held the measuring process's interpreter
/// lock). RATE no-op writes a second (reports of container ID on NODE, unchanged) from 8
/// paced tasks, until standard input closes; prints the writes done so far every 100 ms.
async fn write_load(args: &[String]) -> Result<(), Error> {
    const TASKS: u32 = 8;
    let [rate, server, token, node, id, pid] = args else {
        return Err("--write-load RATE SERVER TOKEN NODE ID PID".into());
    };
    let rate: f64 = rate.parse()?;
    let (node, pid): (u64, i32) = (node.parse()?, pid.parse()?);
    let c = api::connect(
        std::slice::from_ref(server),
        &api::Credentials::token(token),
    )
    .await?;
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let period = Duration::from_secs_f64(f64::from(TASKS) / rate);
    let start = tokio::time::Instant::now();
    for k in 0..TASKS {
        let (mut c, done, id) = (c.clone(), done.clone(), id.clone());
        let mut tick = tokio::time::interval_at(start + period * k / TASKS, period);
        tokio::spawn(async move {
            loop {
                tick.tick().await;
                let r = c.report(pb::ReportRequest {
                    node_id: node,
                    id: id.clone(),
                    state: "running".into(),
                    pid,
                    ..Default::default()
                });
                if r.await.is_ok() {
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
    }
    let mut closed = tokio::task::spawn_blocking(|| {
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    });
    let mut every = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = &mut closed => return Ok(()),
            _ = every.tick() => {
                println!("{}", done.load(std::sync::atomic::Ordering::Relaxed));
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == "--write-load") {
        // (cargo bench adds `--bench` after the arguments given.)
        let given = args.get(at + 1..at + 7).unwrap_or_default();
        if let Err(e) = write_load(given).await {
            eprintln!("bench-scale --write-load: {e}");
            std::process::exit(1);
        }
        return;
    }
    let o = parse();
    let _ = std::fs::create_dir_all("target/bench");
    let mut out = Report { lines: Vec::new() };
    out.line(format!(
        "## scripts/bench-scale (nodes {:?}, records {:?}, clients {:?}, {} s per write run)",
        o.nodes, o.records, o.clients, o.secs
    ));
    if !o.containers.is_empty() {
        out.line(
            "\n### Containers on one node (the example sleeper, one real supervisor)\n".into(),
        );
        out.line("| containers | all running after | rolled out after that | supervisor CPU, idle | supervisor RSS | threads | memory per container (monitor + PID 1: Pss / private dirty) | all gone after |".into());
        out.line("|---|---|---|---|---|---|---|---|".into());
        let mut scans = Vec::new();
        for &n in &o.containers {
            match bench_node(&mut out, n).await {
                Ok(scan) => scans.push(scan),
                Err(e) => {
                    eprintln!("bench-scale: {n} containers on one node: {e}");
                    std::process::exit(1);
                }
            }
        }
        // After the table, not inside it.
        for scan in scans {
            out.line(format!("\n{scan}"));
        }
    }
    for (i, &n) in o.nodes.iter().enumerate() {
        if let Err(e) = bench_cluster(&mut out, &o, n, 10 + i as u8).await {
            eprintln!("bench-scale: {n} nodes: {e}");
            std::process::exit(1);
        }
    }
    if o.tls {
        if let Err(e) = bench_tls(&mut out, &o).await {
            eprintln!("bench-scale: tls: {e}");
            std::process::exit(1);
        }
    }
    if o.mirror > 0 {
        if let Err(e) = bench_mirror(&mut out, o.mirror).await {
            eprintln!("bench-scale: mirror: {e}");
            std::process::exit(1);
        }
    }
    if o.etcd {
        out.line("\n### etcd, the same client\n".into());
        out.line(
            "| system | records | clients | writes/s | p50 ms | p99 ms | errors | leader CPU | leader RSS |".into(),
        );
        out.line("|---|---|---|---|---|---|---|---|---|".into());
        if let Err(e) = bench_etcd(&mut out, &o).await {
            eprintln!("bench-scale: etcd: {e}");
            std::process::exit(1);
        }
    }
    let _ = std::fs::write("target/bench/scale.md", out.lines.join("\n") + "\n");
}
