//! Hosts on one machine for fault tests: `scripts/hosts` (network namespaces on a
//! bridge, one supervisor each) driven from Rust, and the truth of what the hosts run,
//! counted from their cgroups.

use super::{busybox_rootfs, require_program, require_root, Scratch, BIN};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The script.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/hosts");

/// What runs on each node: node → container name → its processes.
pub type Truth = BTreeMap<u64, BTreeMap<String, Vec<i32>>>;

/// A set of hosts (removed on drop, also after a failure).
pub struct Hosts {
    /// Scratch space: the script's directory, definitions.
    pub scratch: Scratch,
    dir: PathBuf,
    /// Number of hosts.
    pub n: usize,
    cgroup_parent: String,
    _machine: std::sync::RwLockWriteGuard<'static, ()>,
}

impl Hosts {
    /// `n` hosts, each running a supervisor with `flags`; waits for `n` voters up.
    pub fn up(tag: &str, n: usize, flags: &[&str]) -> Hosts {
        Hosts::up_with(tag, n, |_| flags.iter().map(|f| f.to_string()).collect())
    }

    /// `n` hosts whose supervisor flags are made from the hosts' network prefix
    /// (`10.a.b`: host K is `10.a.b.K`, the hub `10.a.b.254`).
    pub fn up_with(tag: &str, n: usize, flags: impl Fn(&str) -> Vec<String>) -> Hosts {
        require_root();
        for (p, pkg) in [
            ("ip", "iproute2"),
            ("iptables", "iptables"),
            ("nsenter", "util-linux"),
        ] {
            require_program(p, pkg);
        }
        busybox_rootfs();
        let machine = super::alone();
        let scratch = Scratch::new(tag);
        let dir = scratch.path.join("hosts");
        let k = NEXT.fetch_add(1, Ordering::SeqCst);
        let net = format!("10.{}.{}", 100 + std::process::id() % 100, k % 250);
        let flags = flags(&net);
        let out = Command::new(SCRIPT)
            .args(["up", &n.to_string(), "--dir"])
            .arg(&dir)
            .args(["--net", &net, "--bin", BIN, "--"])
            .args(flags)
            .output()
            .expect("run scripts/hosts");
        let settings = std::fs::read_to_string(dir.join("settings")).unwrap_or_default();
        let tag = settings
            .lines()
            .find_map(|l| l.strip_prefix("tag="))
            .unwrap_or("")
            .to_string();
        let hosts = Hosts {
            scratch,
            dir,
            n,
            cgroup_parent: format!("hch-{tag}"),
            _machine: machine,
        };
        assert!(
            out.status.success(),
            "scripts/hosts up failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        hosts.wait(Duration::from_secs(30), "every host up and a voter", |s| {
            let m = s["members"].as_array().unwrap();
            m.len() == n && m.iter().all(|x| x["state"] == "up" && x["role"] == "voter")
        });
        hosts
    }

    /// Runs `scripts/hosts ARGS` on this set.
    pub fn script(&self, args: &[&str]) -> Output {
        let out = Command::new(SCRIPT)
            .args(args)
            .arg("--dir")
            .arg(&self.dir)
            .output()
            .expect("run scripts/hosts");
        assert!(
            out.status.success(),
            "scripts/hosts {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `haconiwa ARGS` from the hub, which reaches every host.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(SCRIPT)
            .args(["cli", "--dir"])
            .arg(&self.dir)
            .arg("--")
            .args(args)
            .output()
            .expect("run scripts/hosts cli")
    }

    /// `haconiwa ARGS` asked of one host only.
    pub fn cli_on(&self, host: usize, args: &[&str]) -> Output {
        let server = format!("--server={}", self.addr(host));
        let mut all = vec![server.as_str()];
        all.extend_from_slice(args);
        self.cli(&all)
    }

    /// Host K's address.
    pub fn addr(&self, host: usize) -> String {
        let settings = std::fs::read_to_string(self.dir.join("settings")).unwrap();
        let net = settings
            .lines()
            .find_map(|l| l.strip_prefix("net="))
            .unwrap()
            .to_string();
        format!("{net}.{host}:7700")
    }

    /// `cluster status --json` of the first member that answers.
    pub fn status(&self) -> Option<Value> {
        let o = self.cli(&["cluster", "status", "--json"]);
        serde_json::from_slice(&o.stdout).ok()
    }

    /// `cluster status --json` as host K sees it.
    pub fn status_of(&self, host: usize) -> Option<Value> {
        let o = self.cli_on(host, &["cluster", "status", "--json"]);
        serde_json::from_slice(&o.stdout).ok()
    }

    /// Waits (bounded) for the status to satisfy `cond`.
    pub fn wait(&self, timeout: Duration, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.status() {
                if cond(&s) {
                    return s;
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:#?}\n{}",
                self.status(),
                self.logs_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The leader (waits for one).
    pub fn leader(&self) -> u64 {
        self.wait(Duration::from_secs(20), "a leader", |s| {
            s["leader"].as_u64().unwrap_or(0) != 0
        })["leader"]
            .as_u64()
            .unwrap()
    }

    /// `containers --json` as host K sees it, or the CLI's error (a host cut off or
    /// frozen cannot answer: callers that wait take that as "not yet" and say why).
    pub fn containers_of(&self, host: u64) -> Result<Vec<Value>, String> {
        let o = self.cli_on(host as usize, &["containers", "--json"]);
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).trim().to_string());
        }
        serde_json::from_slice(&o.stdout).map_err(|e| format!("containers --json: {e}"))
    }

    /// Applies a keep-N rule of hour-long sleepers.
    pub fn keep(&self, n: usize) {
        let root = busybox_rootfs();
        std::fs::write(
            self.scratch.path.join("sleeper.haco"),
            format!(
                "haconiwa.define(|c| {{\n  c.name = `sleeper-${{uuid_short()}}`;\n  c.init_command = [\"/bin/sleep\", \"3600\"];\n  c.chroot_to(\"{}\");\n  c.namespace.unshare([\"uts\", \"ipc\", \"pid\", \"mount\", \"net\"]);\n  c.daemonize();\n}});\n",
                root.display()
            ),
        )
        .unwrap();
        let rule = self.scratch.path.join("keep.watch");
        std::fs::write(
            &rule,
            format!("haconiwa.watch(|w| {{\n  w.watch(\"cluster\", |event| {{\n    if event.cluster.count(\"sleeper\") < {n} {{ haconiwa.spawn(\"sleeper.haco\"); }}\n  }});\n}});\n"),
        )
        .unwrap();
        let o = self.cli(&["watch", "apply", rule.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    /// What the hosts really run (see [`Truth`]).
    pub fn truth(&self) -> Truth {
        truth(&self.cgroup_parent)
    }

    /// A handle for sampling the truth from another thread.
    pub fn truth_probe(&self) -> String {
        self.cgroup_parent.clone()
    }

    /// Waits (bounded) until exactly `n` containers really run and the cluster, as host
    /// `ask` sees it, agrees.
    pub fn wait_n(&self, n: usize, timeout: Duration, what: &str, ask: u64) -> Duration {
        let t0 = Instant::now();
        loop {
            let real = total(&self.truth());
            let c = self.containers_of(ask);
            let running = c
                .as_ref()
                .map(|c| c.iter().filter(|x| x["state"] == "running").count());
            if real == n && running == Ok(n) {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < timeout,
                "{what}: not back to {n} within {timeout:?} (really {real}, cluster says {running:?})\n{:#?}\n{}",
                c,
                self.logs_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (bounded) until nothing runs on node `node` any more (its monitors fenced
    /// its containers); how long it took.
    pub fn wait_none_on(&self, node: u64, timeout: Duration, what: &str) -> Duration {
        let t0 = Instant::now();
        while self.truth().get(&node).is_some_and(|m| !m.is_empty()) {
            assert!(
                t0.elapsed() < timeout,
                "{what}: node {node} still runs {:?}\n{}",
                self.truth().get(&node),
                self.logs_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        t0.elapsed()
    }

    /// The last lines of every host's log.
    pub fn logs_tail(&self) -> String {
        let mut s = String::new();
        for k in 1..=self.n {
            let text =
                std::fs::read_to_string(self.dir.join(format!("h{k}/log"))).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            s.push_str(&format!("--- host {k} ---\n"));
            for l in &lines[lines.len().saturating_sub(12)..] {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }

    /// Host K's supervisor pid.
    pub fn pid(&self, host: usize) -> i32 {
        std::fs::read_to_string(self.dir.join(format!("h{host}/pid")))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Host K's data directory.
    pub fn data_dir(&self, host: usize) -> PathBuf {
        self.dir.join(format!("h{host}/data"))
    }

    /// Host K's image store.
    pub fn image_store(&self, host: usize) -> PathBuf {
        self.dir.join(format!("h{host}/images"))
    }

    /// The hosts' network prefix (`10.a.b`).
    pub fn net(&self) -> String {
        let settings = std::fs::read_to_string(self.dir.join("settings")).unwrap();
        settings
            .lines()
            .find_map(|l| l.strip_prefix("net="))
            .unwrap()
            .to_string()
    }

    /// The hub's network namespace (where the CLI runs; it reaches every host).
    pub fn hub(&self) -> String {
        format!("{}-hub", self.cgroup_parent)
    }

    /// A command run in the hub's network namespace.
    pub fn in_hub(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.hub(), program]);
        c
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let _ = Command::new(SCRIPT)
            .args(["down", "--dir"])
            .arg(&self.dir)
            .output();
        super::sweep(&self.dir.join("state"), &self.cgroup_parent);
    }
}

/// What runs under a cgroup parent of hosts: `<parent>/node-K/<container>`.
pub fn truth(cgroup_parent: &str) -> Truth {
    let mut out = Truth::new();
    let Some(root) = super::cgroup_dirs(cgroup_parent).into_iter().next() else {
        return out;
    };
    let Ok(nodes) = std::fs::read_dir(&root) else {
        return out;
    };
    for n in nodes.flatten() {
        let name = n.file_name().to_string_lossy().to_string();
        let Some(id) = name
            .strip_prefix("node-")
            .and_then(|i| i.parse::<u64>().ok())
        else {
            continue;
        };
        let mut here = BTreeMap::new();
        if let Ok(rd) = std::fs::read_dir(n.path()) {
            for c in rd.flatten() {
                let procs: Vec<i32> = std::fs::read_to_string(c.path().join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect();
                if !procs.is_empty() {
                    here.insert(c.file_name().to_string_lossy().to_string(), procs);
                }
            }
        }
        out.insert(id, here);
    }
    out
}

/// Containers really running, all nodes.
pub fn total(t: &Truth) -> usize {
    t.values().map(|m| m.len()).sum()
}

/// The first process of each container on `nodes` (to tell a container left alone from
/// one stopped and started again).
pub fn first_pids(t: &Truth, nodes: &[u64]) -> BTreeMap<String, i32> {
    t.iter()
        .filter(|(n, _)| nodes.contains(n))
        .flat_map(|(_, m)| {
            m.iter()
                .map(|(c, p)| (c.clone(), p.iter().copied().min().unwrap_or(0)))
        })
        .collect()
}

/// Samples the truth every 50 ms in the background: the most containers ever running at
/// once, and any container id seen running on two nodes at once.
pub struct TruthSampler {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<(usize, Vec<String>, usize)>>,
    /// What ran at the sample with the most: per container, its node and processes.
    worst: Arc<Mutex<Vec<String>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

/// Each container of a truth and its processes' names, for a failure's message.
fn explain(t: &Truth) -> Vec<String> {
    let mut out = Vec::new();
    for (node, containers) in t {
        for (name, pids) in containers {
            let procs: Vec<String> = pids
                .iter()
                .map(|p| {
                    let comm =
                        std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
                    format!("{p} {}", comm.trim())
                })
                .collect();
            out.push(format!("node {node}: {name} [{}]", procs.join(", ")));
        }
    }
    out
}

impl TruthSampler {
    /// Starts sampling.
    pub fn start(hosts: &Hosts) -> TruthSampler {
        TruthSampler::start_for(hosts.truth_probe())
    }

    /// Starts sampling the containers under a cgroup parent (a test cluster's).
    pub fn start_for(parent: String) -> TruthSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new((0usize, Vec::new(), 0usize)));
        let worst = Arc::new(Mutex::new(Vec::new()));
        let (s, m, w) = (stop.clone(), seen.clone(), worst.clone());
        let handle = std::thread::spawn(move || {
            // On until asked to stop, and in any case until enough samples exist to mean
            // something.
            while !(s.load(Ordering::SeqCst) && m.lock().unwrap().2 >= 10) {
                let t = truth(&parent);
                let mut names: Vec<&String> = t.values().flat_map(|m| m.keys()).collect();
                let count = names.len();
                names.sort();
                let dups: Vec<String> = names
                    .windows(2)
                    .filter(|w| w[0] == w[1])
                    .map(|w| w[0].clone())
                    .collect();
                let mut g = m.lock().unwrap();
                if count > g.0 {
                    *w.lock().unwrap() = explain(&t);
                }
                g.0 = g.0.max(count);
                g.1.extend(dups);
                g.2 += 1;
                drop(g);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        TruthSampler {
            stop,
            seen,
            worst,
            handle: Some(handle),
        }
    }

    /// Stops, as `finish`, and tells what ran at the sample with the most.
    pub fn finish_explained(self) -> ((usize, Vec<String>, usize), Vec<String>) {
        let worst = self.worst.clone();
        let seen = self.finish();
        let w = worst.lock().unwrap().clone();
        (seen, w)
    }

    /// Stops; (most running at once, ids seen twice at once, samples).
    pub fn finish(mut self) -> (usize, Vec<String>, usize) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for TruthSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
