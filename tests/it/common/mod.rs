//! Helpers shared by the integration tests: a private state directory and cgroup parent
//! per test, a busybox root filesystem built once, and checks that nothing is left.
#![allow(dead_code)]

pub mod cluster;
pub mod etcd;
pub mod hosts;
pub mod images;
pub mod procs;
pub mod registry;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_haconiwa");

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Cluster tests (timing: elections, failovers, rules) run alone, as they did when each
/// test file was its own binary: several clusters, or a cluster beside a crowd of
/// containers, on 2 cores would test the machine's scheduler, not haconiwa. Tests of
/// local containers share the machine with each other.
static MACHINE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Holds the machine alone (a cluster test).
pub fn alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    MACHINE.write().unwrap_or_else(|p| p.into_inner())
}

/// Shares the machine with other local-container tests.
pub fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    MACHINE.read().unwrap_or_else(|p| p.into_inner())
}

/// Fails loudly unless we are root: these tests use real namespaces and cgroups.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (real namespaces, cgroups, pivot_root); run scripts/test as root"
    );
}

/// Fails loudly when a program the test needs is missing.
pub fn require_program(name: &str, package: &str) {
    let found = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .any(|d| Path::new(d).join(name).is_file());
    assert!(
        found,
        "this test needs `{name}` (Debian package {package}); scripts/test installs it"
    );
}

/// A directory removed when dropped.
pub struct Scratch {
    /// Its path.
    pub path: PathBuf,
}

impl Scratch {
    /// A fresh directory under the cargo target tmp dir.
    pub fn new(tag: &str) -> Scratch {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create scratch dir");
        Scratch { path }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A busybox root filesystem, built once per test binary with `haconiwa create`.
pub fn busybox_rootfs() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        require_root();
        require_program("busybox", "busybox-static");
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("rootfs-busybox");
        if root.join("bin/busybox").is_file() {
            return root;
        }
        let def = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("rootfs-{}.haco", std::process::id()));
        std::fs::write(
            &def,
            format!(
                "haconiwa.define(|c| {{ c.name = \"rootfs\"; c.init_command = \"/bin/true\"; c.chroot_to(\"{}\"); c.bootstrap(#{{ strategy: \"busybox\" }}); }});",
                root.display()
            ),
        )
        .expect("write definition");
        let out = Command::new(BIN).arg("create").arg(&def).output().expect("run haconiwa create");
        let _ = std::fs::remove_file(&def);
        assert!(out.status.success(), "haconiwa create failed: {}", String::from_utf8_lossy(&out.stderr));
        root
    })
    .clone()
}

/// One test's private host view: state dir, cgroup parent, definitions.
pub struct Host {
    /// Scratch space (definitions, state).
    pub scratch: Scratch,
    /// `HACONIWA_STATE_DIR`.
    pub state_dir: PathBuf,
    /// `HACONIWA_CGROUP_PARENT`.
    pub cgroup_parent: String,
    _machine: std::sync::RwLockReadGuard<'static, ()>,
}

impl Host {
    /// A new private host view.
    pub fn new(tag: &str) -> Host {
        require_root();
        let scratch = Scratch::new(tag);
        let state_dir = scratch.path.join("state");
        let cgroup_parent = format!(
            "haconiwa-test-{}",
            scratch.path.file_name().unwrap().to_string_lossy()
        );
        Host {
            scratch,
            state_dir,
            cgroup_parent,
            _machine: shared(),
        }
    }

    /// Writes `<name>.haco` with the busybox root and the usual namespaces, plus `body`.
    pub fn haco(&self, name: &str, body: &str) -> PathBuf {
        let root = busybox_rootfs();
        self.haco_raw(
            name,
            &format!(
                "haconiwa.define(|c| {{\n    c.name = \"{name}\";\n    c.chroot_to(\"{}\");\n    c.namespace.unshare([\"uts\", \"ipc\", \"pid\", \"mount\", \"net\"]);\n{body}\n}});\n",
                root.display()
            ),
        )
    }

    /// Runs a foreground container whose command is `sh -c SCRIPT` (plus the `extra`
    /// definition lines); returns its output.
    pub fn sh(&self, name: &str, extra: &str, script: &str) -> Output {
        let def = self.haco(
            name,
            &format!("    c.init_command = [\"/bin/sh\", \"-c\", {script:?}];\n{extra}"),
        );
        self.run(&["run", def.to_str().unwrap()])
    }

    /// Writes a definition file verbatim.
    pub fn haco_raw(&self, name: &str, text: &str) -> PathBuf {
        let p = self.scratch.path.join(format!("{name}.haco"));
        std::fs::write(&p, text).expect("write definition");
        p
    }

    /// A `haconiwa` command bound to this host view.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env("HACONIWA_STATE_DIR", &self.state_dir)
            .env("HACONIWA_CGROUP_PARENT", &self.cgroup_parent);
        c
    }

    /// Runs `haconiwa ARGS` and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run haconiwa")
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "haconiwa {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// `ps --json` parsed.
    pub fn ps(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok(&["ps", "--json"])).expect("ps --json")
    }

    /// The state of one container from `ps --json`.
    pub fn state(&self, name: &str) -> Option<serde_json::Value> {
        self.ps().into_iter().find(|c| c["name"] == name)
    }

    /// Waits until `name` has exited (bounded).
    pub fn wait_exited(&self, name: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self
                .state(name)
                .unwrap_or_else(|| panic!("{name} is not in ps"));
            if st["status"] == "exited" {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "{name} still running after {timeout:?}: {st}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// cgroup directories of this view still present, in any hierarchy.
    pub fn leftover_cgroups(&self) -> Vec<PathBuf> {
        cgroups_under(&self.cgroup_parent)
    }

    /// The parent's directory in every hierarchy (it stays once made: removed by the
    /// view's drop).
    pub fn parent_cgroups(&self) -> Vec<PathBuf> {
        cgroup_dirs(&self.cgroup_parent)
    }

    /// Asserts that nothing of this view is left: no cgroup, no mount under the scratch
    /// dir, no running container record.
    pub fn assert_clean(&self) {
        let cg = self.leftover_cgroups();
        assert!(cg.is_empty(), "cgroups left behind: {cg:?}");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let ours = self.scratch.path.display().to_string();
        let left: Vec<&str> = mounts.lines().filter(|l| l.contains(&ours)).collect();
        assert!(left.is_empty(), "mounts left behind: {left:?}");
        for c in self.ps() {
            assert_eq!(c["status"], "exited", "container still running: {c}");
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Best effort, also when the test failed.
        sweep(&self.state_dir, &self.cgroup_parent);
    }
}

/// Detaches every mount under `dir`, the deepest first (what a failed test left).
pub fn unmount_under(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = format!("{}/", dir.display());
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The cgroups below a parent's directories, in every hierarchy: containers' (and a
/// supervisor's `node-<id>` level) left behind. The parent's first level stays once
/// made, as Docker's, with its pool of memory cgroups (`.pool-<n>`, made ahead for the
/// next container; at most `cgroup_pool::SIZE`, none in a level below the first once
/// its last container is gone).
pub fn cgroups_under(parent: &str) -> Vec<PathBuf> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(e.path());
                walk(&e.path(), out);
            }
        }
    }
    // Judged by name, not against a listing made before the walk: a remover may fill
    // the pool between the two.
    let pooled = |d: &Path, p: &Path| {
        p.parent() == Some(d)
            && p.file_name()
                .is_some_and(|n| haconiwa::launcher::cgroup_pool::is_pooled(&n.to_string_lossy()))
    };
    let mut out = Vec::new();
    for d in cgroup_dirs(parent) {
        let mut found = Vec::new();
        walk(&d, &mut found);
        out.extend(found.into_iter().filter(|p| !pooled(&d, p)));
    }
    out
}

/// The pooled memory cgroups directly in `dir`.
pub fn pooled_cgroups(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| haconiwa::launcher::cgroup_pool::is_pooled(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect()
}

/// Where a cgroup parent's directories are, in every mounted hierarchy: the v1
/// controllers and a unified mount under /sys/fs/cgroup, or /sys/fs/cgroup itself on a
/// v2-only host.
pub fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC};
    let is_hierarchy = |p: &Path| {
        statfs(p).is_ok_and(|s| {
            s.filesystem_type() == CGROUP_SUPER_MAGIC || s.filesystem_type() == CGROUP2_SUPER_MAGIC
        })
    };
    let base = PathBuf::from("/sys/fs/cgroup");
    let mut roots = vec![base.clone()];
    if let Ok(rd) = std::fs::read_dir(&base) {
        roots.extend(rd.flatten().map(|e| e.path()).filter(|p| is_hierarchy(p)));
    }
    roots
        .into_iter()
        .filter(|r| is_hierarchy(r))
        .map(|r| r.join(parent))
        .filter(|p| p.is_dir())
        .collect()
}

/// Cleans up after a test, also after a failure: kills every process a state tree
/// records as still running (containers and their monitors, `ROOT/containers/*` or
/// `ROOT/node-N/containers/*`), then whatever is left in the cgroup parent's trees, and
/// removes those trees. Bounded in time.
pub fn sweep(state_root: &Path, cgroup_parent: &str) {
    let mut dirs = vec![state_root.join("containers")];
    if let Ok(rd) = std::fs::read_dir(state_root) {
        dirs.extend(rd.flatten().map(|e| e.path().join("containers")));
    }
    for dir in dirs {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(text) = std::fs::read_to_string(e.path().join("state.json")) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            if v["status"] == "exited" {
                continue;
            }
            for key in ["monitor_pid", "pid"] {
                if let Some(pid) = v[key].as_i64().filter(|p| *p > 1) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
    for _ in 0..200 {
        let left = cgroup_dirs(cgroup_parent);
        if left.is_empty() {
            break;
        }
        for d in left {
            remove_cgroup_tree(&d);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for p in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// A cgroup2 mount of the test's own (this host's controllers are bound to v1), for the
/// v2 code paths; unmounted, with the test's cgroup parent removed, on drop.
pub struct Cgroup2Mount {
    /// The mount point.
    pub path: PathBuf,
    parent: PathBuf,
}

impl Cgroup2Mount {
    /// Mounts cgroup2 under the host's scratch dir.
    pub fn new(host: &Host) -> Cgroup2Mount {
        let path = host.scratch.path.join("cgroup2");
        std::fs::create_dir_all(&path).unwrap();
        nix::mount::mount(
            Some("cgroup2"),
            &path,
            Some("cgroup2"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .expect("mount cgroup2");
        Cgroup2Mount {
            parent: path.join(&host.cgroup_parent),
            path,
        }
    }
}

impl Drop for Cgroup2Mount {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.parent);
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Stdout then stderr of a command, for failure messages and searches.
pub fn output_text(o: &Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

/// Every iptables chain the tests make is named `hct-<pid of the test binary>-<n>`, so
/// a later run can tell the chains of a killed run from those of a running one.
const CHAIN_PREFIX: &str = "hct-";

static CHAINS: AtomicUsize = AtomicUsize::new(0);

/// An iptables chain of this test's own, jumped to from INPUT, holding `rules` (each the
/// arguments after `-A CHAIN`); its name, for [`remove_input_chain`].
pub fn add_input_chain(rules: &[&[&str]]) -> String {
    require_program("iptables", "iptables");
    static SWEPT: OnceLock<()> = OnceLock::new();
    SWEPT.get_or_init(sweep_stale_chains);
    let chain = format!(
        "{CHAIN_PREFIX}{}-{}",
        std::process::id(),
        CHAINS.fetch_add(1, Ordering::SeqCst)
    );
    let ipt = |args: &[&str]| {
        let st = Command::new("iptables").args(args).status().unwrap();
        assert!(st.success(), "iptables {args:?}");
    };
    ipt(&["-N", &chain]);
    for r in rules {
        let mut args = vec!["-A", &chain];
        args.extend_from_slice(r);
        ipt(&args);
    }
    ipt(&["-I", "INPUT", "-j", &chain]);
    chain
}

/// Undoes [`add_input_chain`] (also after a failure: errors are ignored).
pub fn remove_input_chain(chain: &str) {
    let _ = Command::new("iptables")
        .args(["-D", "INPUT", "-j", chain])
        .status();
    let _ = Command::new("iptables").args(["-F", chain]).status();
    let _ = Command::new("iptables").args(["-X", chain]).status();
}

/// Removes the chains of test processes that are gone: a test binary killed mid-cut
/// never ran its Drop, and its DROP rules would cut the next run's addresses.
fn sweep_stale_chains() {
    let Ok(out) = Command::new("iptables").arg("-S").output() else {
        return;
    };
    let me = std::env::current_exe().ok();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(chain) = line.strip_prefix("-N ") else {
            continue;
        };
        let Some(pid) = chain
            .strip_prefix(CHAIN_PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let running = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        if running.is_none() || running != me {
            eprintln!("removing iptables chain {chain} left by a test run that is gone");
            remove_input_chain(chain);
        }
    }
}

/// The example sleeper (`examples/sleeper.haco`) made to sleep an hour: every exit a
/// test sees is one it caused (the example's own 30-60 s would pass for a kill).
pub fn long_sleeper() -> String {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let sleeper = std::fs::read_to_string(format!("{examples}/sleeper.haco")).unwrap();
    let long = sleeper.replace("`${rand(30, 60)}`", "\"3600\"");
    assert_ne!(
        long, sleeper,
        "the example sleeper changed: update this helper"
    );
    long
}

/// The state digest a `cluster status --json` shows, only when it is one (64 hex
/// digits): a missing or empty digest never compares equal to another.
pub fn state_digest(status: &serde_json::Value) -> Option<String> {
    let d = status["state_digest"].as_str()?;
    (d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit())).then(|| d.to_string())
}

/// Scrapes `url` and parses it with prometheus_client's OpenMetrics parser (an
/// independent implementation of the format); returns `{"name{labels}": value}`.
pub fn scrape(url: &str) -> serde_json::Map<String, serde_json::Value> {
    require_program("python3", "python3");
    let script = r#"
import json, sys, urllib.request
from prometheus_client.openmetrics.parser import text_string_to_metric_families
text = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()
out = {}
for fam in text_string_to_metric_families(text):
    for s in fam.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        out[s.name + ("{" + labels + "}" if labels else "")] = s.value
print(json.dumps(out))
"#;
    let o = Command::new("python3")
        .args(["-c", script, url])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "scrape {url} (python3 prometheus_client; scripts/install-deps installs it): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_object().unwrap().clone()
}
