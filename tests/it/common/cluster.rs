//! A cluster of real supervisor processes on 127.x.y.N for tests: start, join, kill -9,
//! restart, cut off with iptables; everything removed on drop, also after a failure.
#![allow(dead_code)]

use super::{busybox_rootfs, require_program, require_root, Scratch, BIN};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Holds the machine alone (for tests that start clusters another way): see
/// [`super::alone`].
pub fn serial() -> std::sync::RwLockWriteGuard<'static, ()> {
    super::alone()
}

/// One supervisor slot.
pub struct Node {
    /// 1-based slot (its IP ends with it; usually also its id).
    pub slot: usize,
    /// `127.a.b.slot:7700`.
    pub addr: String,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// Its log.
    pub log: PathBuf,
    /// The process, while it runs.
    pub child: Option<Child>,
    /// Extra flags it was started with.
    pub flags: Vec<String>,
}

/// A test cluster.
pub struct Cluster {
    /// Scratch space.
    pub scratch: Scratch,
    /// Supervisors.
    pub nodes: Vec<Node>,
    /// Token.
    pub token: String,
    /// State dir base.
    pub state_dir: PathBuf,
    /// cgroup parent base.
    pub cgroup_parent: String,
    /// `127.a.b`.
    pub net: String,
    /// Flags given to every supervisor.
    pub common_flags: Vec<String>,
    /// Environment of every client command (TLS: HACONIWA_CA, _CERT, _KEY).
    pub client_env: Vec<(String, String)>,
    /// The binary the supervisors run (default: the test build).
    pub bin: PathBuf,
    chain: Option<String>,
    _serial: std::sync::RwLockWriteGuard<'static, ()>,
}

impl Cluster {
    /// An empty cluster description; `common_flags` go to every supervisor.
    pub fn new(tag: &str, common_flags: &[&str]) -> Cluster {
        require_root();
        busybox_rootfs();
        let serial = super::alone();
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let scratch = Scratch::new(tag);
        // Every member gets the same secrets key, as `haconiwa up` gives them.
        let key = scratch.path.join("secrets.key");
        let made = Command::new(BIN)
            .args(["secret", "keygen"])
            .arg(&key)
            .output()
            .expect("haconiwa secret keygen");
        assert!(made.status.success(), "secret keygen: {made:?}");
        let net = format!("127.{}.{}", 20 + n % 200, std::process::id() % 250 + 1);
        let cgroup_parent = format!(
            "haconiwa-test-{}",
            scratch.path.file_name().unwrap().to_string_lossy()
        );
        Cluster {
            state_dir: scratch.path.join("state"),
            scratch,
            nodes: Vec::new(),
            token: "test-token-0123".into(),
            cgroup_parent,
            net,
            common_flags: common_flags.iter().map(|s| s.to_string()).collect(),
            client_env: Vec::new(),
            bin: PathBuf::from(BIN),
            chain: None,
            _serial: serial,
        }
    }

    /// Starts a 3-node cluster and waits for 3 voters.
    pub fn three(tag: &str, common_flags: &[&str]) -> Cluster {
        let mut c = Cluster::new(tag, common_flags);
        c.start_three();
        c
    }

    /// A 3-node cluster whose members also listen for HTTP (`/metrics`, the dashboard)
    /// on port 7780 of their own address.
    pub fn three_with_http(tag: &str) -> Cluster {
        let mut cl = Cluster::new(tag, &[]);
        for k in 1..=3 {
            let http = format!("{}.{k}:7780", cl.net);
            cl.add_node(&["--http-listen", &http]);
            if k == 1 {
                cl.wait_leader(Duration::from_secs(40));
            }
        }
        cl.wait(Duration::from_secs(40), "3 voters up", |s| {
            let m = s["members"].as_array().unwrap();
            m.len() == 3 && m.iter().all(|x| x["role"] == "voter" && x["state"] == "up")
        });
        cl
    }

    /// Starts 3 supervisors on an empty description and waits for 3 voters.
    pub fn start_three(&mut self) {
        self.start_three_with([&[], &[], &[]]);
    }

    /// [`Cluster::start_three`] with flags of each node's own (labels).
    pub fn start_three_with(&mut self, flags: [&[&str]; 3]) {
        self.add_node(flags[0]);
        self.wait_leader(Duration::from_secs(20));
        self.add_node(flags[1]);
        self.wait(Duration::from_secs(30), "node 2 joined", |s| {
            s["members"].as_array().unwrap().len() == 2
        });
        self.add_node(flags[2]);
        self.wait(
            Duration::from_secs(30),
            "3 voters up, membership settled",
            |s| {
                let m = s["members"].as_array().unwrap();
                s["joint"] == false
                    && m.len() == 3
                    && m.iter().all(|x| x["role"] == "voter" && x["state"] == "up")
            },
        );
    }

    fn supervisor_cmd(&self, node: &Node) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("supervisor")
            .arg("--listen")
            .arg(&node.addr)
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--secrets-key")
            .arg(self.scratch.path.join("secrets.key"))
            .args(&self.common_flags)
            .args(&node.flags)
            .env("HACONIWA_TOKEN", &self.token)
            .env("HACONIWA_STATE_DIR", &self.state_dir)
            .env("HACONIWA_CGROUP_PARENT", &self.cgroup_parent)
            .env(
                "RUST_LOG",
                std::env::var("HC_TEST_LOG")
                    .unwrap_or_else(|_| "info,openraft=error,openraft::replication=off".into()),
            )
            .stdin(Stdio::null());
        cmd
    }

    /// Adds a supervisor: the first starts the cluster, the others join the first.
    pub fn add_node(&mut self, flags: &[&str]) -> usize {
        let slot = self.nodes.len() + 1;
        let mut flags: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        if slot > 1 {
            flags.push("--join".into());
            flags.push(
                self.nodes
                    .iter()
                    .map(|n| n.addr.clone())
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        let node = Node {
            slot,
            addr: format!("{}.{slot}:7700", self.net),
            data_dir: self.scratch.path.join(format!("n{slot}")),
            log: self.scratch.path.join(format!("n{slot}.log")),
            child: None,
            flags,
        };
        self.nodes.push(node);
        self.start(slot);
        slot
    }

    /// Starts (or restarts) slot `slot`.
    pub fn start(&mut self, slot: usize) {
        let node = &self.nodes[slot - 1];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let child = self
            .supervisor_cmd(node)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start supervisor");
        self.nodes[slot - 1].child = Some(child);
    }

    /// kill -9.
    pub fn kill9(&mut self, slot: usize) {
        if let Some(mut c) = self.nodes[slot - 1].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self, slot: usize) {
        if let Some(mut c) = self.nodes[slot - 1].child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Addresses of running supervisors.
    pub fn servers(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.addr.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A `haconiwa` client command against the running members.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env("HACONIWA_SERVER", self.servers())
            .env("HACONIWA_TOKEN", &self.token)
            .envs(self.client_env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Runs a client command against one member.
    pub fn run_on(&self, slot: usize, args: &[&str]) -> Output {
        Command::new(BIN)
            .env("HACONIWA_SERVER", &self.nodes[slot - 1].addr)
            .env("HACONIWA_TOKEN", &self.token)
            .envs(self.client_env.iter().map(|(k, v)| (k, v)))
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs a client command; returns the output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cli().args(args).output().unwrap()
    }

    /// Runs a client command that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "haconiwa {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).to_string()
    }

    /// `cluster status --json` from one member, if it answers.
    pub fn status_of(&self, slot: usize) -> Option<Value> {
        let o = self.run_on(slot, &["cluster", "status", "--json"]);
        if !o.status.success() {
            eprintln!(
                "status of slot {slot}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            return None;
        }
        serde_json::from_slice(&o.stdout).ok()
    }

    /// `cluster status --json` from any member.
    pub fn status(&self) -> Option<Value> {
        let o = self.run(&["cluster", "status", "--json"]);
        o.status
            .success()
            .then(|| serde_json::from_slice(&o.stdout).ok())
            .flatten()
    }

    /// `containers --all --json`, or the CLI's error.
    pub fn try_containers(&self) -> Result<Vec<Value>, String> {
        let o = self.run(&["containers", "--all", "--json"]);
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).trim().to_string());
        }
        serde_json::from_slice(&o.stdout).map_err(|e| format!("containers --json: {e}"))
    }

    /// `containers --all --json`; a failed call fails the test (never an empty list).
    pub fn containers(&self) -> Vec<Value> {
        self.try_containers()
            .unwrap_or_else(|e| panic!("containers --all --json failed: {e}"))
    }

    /// Waits (bounded) until `cond` holds for the cluster status.
    pub fn wait(&self, timeout: Duration, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Some(s) = self.status() {
                if cond(&s) {
                    return s;
                }
                last = s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "timed out after {timeout:?} waiting for {what}; last status: {last:#}\n{}",
            self.logs_tail()
        );
    }

    /// Waits for a leader; returns its id.
    pub fn wait_leader(&self, timeout: Duration) -> u64 {
        self.wait(timeout, "a leader", |s| {
            s["leader"].as_u64().unwrap_or(0) != 0
        })["leader"]
            .as_u64()
            .unwrap()
    }

    /// Waits (bounded) until `cond` holds for the container list.
    pub fn wait_containers(
        &self,
        timeout: Duration,
        what: &str,
        cond: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut last = Err("never asked".to_string());
        while Instant::now() < deadline {
            // A failed call (no leader for a moment) is "not yet", never an empty list.
            let c = self.try_containers();
            if let Ok(c) = &c {
                if cond(c) {
                    return c.clone();
                }
            }
            last = c;
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "timed out after {timeout:?} waiting for {what}; containers: {last:#?}\n{}",
            self.logs_tail()
        );
    }

    /// The local view of node `id` (`haconiwa ps --json` in its state dir).
    pub fn local_ps(&self, id: u64) -> Vec<Value> {
        let o = Command::new(BIN)
            .env(
                "HACONIWA_STATE_DIR",
                self.state_dir.join(format!("node-{id}")),
            )
            .env(
                "HACONIWA_CGROUP_PARENT",
                format!("{}/node-{id}", self.cgroup_parent),
            )
            .args(["ps", "--json"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "ps of node {id} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).expect("ps --json prints a JSON list")
    }

    /// The containers that really run on each node (see [`Truth`]).
    pub fn real_running(&self) -> std::collections::BTreeMap<u64, usize> {
        self.probe().real_running()
    }

    /// Every process in every container cgroup, by node and container (the truth).
    pub fn cgroups(&self) -> super::hosts::Truth {
        super::hosts::truth(&self.cgroup_parent)
    }

    /// A handle that counts the truth from another thread.
    pub fn probe(&self) -> Truth {
        Truth {
            cgroup_parent: self.cgroup_parent.clone(),
        }
    }

    /// Writes a definition into the scratch dir, rooted at the test busybox root.
    pub fn haco(&self, name: &str, cmd: &str) -> PathBuf {
        let p = self.scratch.path.join(format!("{name}.haco"));
        std::fs::write(
            &p,
            format!(
                "haconiwa.define(|c| {{\n  c.name = `{name}-${{uuid_short()}}`;\n  c.init_command = {cmd};\n  c.chroot_to(\"{}\");\n  c.namespace.unshare([\"uts\", \"ipc\", \"pid\", \"mount\"]);\n  c.cgroup[\"pids.max\"] = 32;\n}});\n",
                busybox_rootfs().display()
            ),
        )
        .unwrap();
        p
    }

    /// The id of a container the cluster says runs.
    pub fn a_running_container(&self) -> String {
        self.containers()
            .iter()
            .find(|c| c["state"] == "running")
            .and_then(|c| c["id"].as_str())
            .map(str::to_string)
            .expect("a running container")
    }

    /// Cuts slot `slot` off the network (both directions) with iptables.
    pub fn cut_off(&mut self, slot: usize) {
        require_program("iptables", "iptables");
        let ip = self.nodes[slot - 1]
            .addr
            .rsplit_once(':')
            .unwrap()
            .0
            .to_string();
        let chain =
            super::add_input_chain(&[&["-s", &ip, "-j", "DROP"], &["-d", &ip, "-j", "DROP"]]);
        self.chain = Some(chain);
    }

    /// Undoes `cut_off`.
    pub fn heal(&mut self) {
        if let Some(chain) = self.chain.take() {
            super::remove_input_chain(&chain);
        }
    }

    /// The last lines of every supervisor log (for failure messages).
    pub fn logs_tail(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            s.push_str(&format!("--- node slot {} ---\n", n.slot));
            for l in &lines[lines.len().saturating_sub(15)..] {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }

    /// Whether `haconiwa events --json --since 0` (which replays, then follows) prints an
    /// event that `matches` within 20 s.
    pub fn event_seen(&self, matches: impl Fn(&Value) -> bool) -> bool {
        let (mut follow, rx) = self.follow_events();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = false;
        while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if serde_json::from_str::<Value>(&line).is_ok_and(|e| matches(&e)) {
                seen = true;
                break;
            }
        }
        let _ = follow.kill();
        let _ = follow.wait();
        seen
    }

    /// `haconiwa events --json --since 0` running (end it by its pid: kill, then wait),
    /// and its lines as they come.
    pub fn follow_events(&self) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
        use std::io::BufRead;
        let mut follow = self
            .cli()
            .args(["events", "--json", "--since", "0"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(follow.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        (follow, rx)
    }

    /// Log text of one slot.
    pub fn log(&self, slot: usize) -> String {
        std::fs::read_to_string(&self.nodes[slot - 1].log).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.heal();
        for i in 1..=self.nodes.len() {
            self.kill9(i);
        }
        super::sweep(&self.state_dir, &self.cgroup_parent);
        // Volumes (tmpfs, loop-mounted images) the members left mounted.
        super::unmount_under(&self.scratch.path);
    }
}

/// What the hosts of a test cluster really run, counted where it lives.
#[derive(Clone)]
pub struct Truth {
    cgroup_parent: String,
}

impl Truth {
    /// The containers that really run on each node: the non-empty container cgroups
    /// under `<parent>/node-N/` (the truth, whatever the cluster believes).
    pub fn real_running(&self) -> std::collections::BTreeMap<u64, usize> {
        super::hosts::truth(&self.cgroup_parent)
            .into_iter()
            .map(|(node, running)| (node, running.len()))
            .collect()
    }
}
