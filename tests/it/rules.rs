//! Watcher rules on a real 3-node cluster with real containers: examples/keep5.watch
//! unchanged, with the example sleeper made to sleep an hour where a test counts exactly
//! (the example's 30-60 s sleepers end by themselves); `haconiwa up` runs both unchanged.

use crate::common::cluster::Cluster;
use crate::common::procs::{self, DeathWatch};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(40);

fn running(c: &[Value]) -> Vec<&Value> {
    c.iter().filter(|x| x["state"] == "running").collect()
}

fn active(c: &[Value]) -> usize {
    c.iter()
        .filter(|x| x["desired"] == "running" && x["state"] != "exited" && x["state"] != "lost")
        .count()
}

fn five_running(cl: &Cluster) -> Vec<Value> {
    cl.wait_containers(T, "exactly 5 sleepers running", |c| {
        running(c).len() == 5 && active(c) == 5
    })
}

/// keep5.watch with sleepers that sleep an hour (the example's sleep 30-60 s and end by
/// themselves, which would pass for a kill).
fn apply_keep5(cl: &Cluster) {
    let dir = cl.scratch.path.join("long");
    std::fs::create_dir_all(&dir).unwrap();
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    std::fs::copy(format!("{examples}/keep5.watch"), dir.join("keep5.watch")).unwrap();
    std::fs::write(dir.join("sleeper.haco"), crate::common::long_sleeper()).unwrap();
    let out = cl.ok(&["watch", "apply", dir.join("keep5.watch").to_str().unwrap()]);
    assert!(
        out.contains("rule keep5 applied, version 1 (1 definition(s): sleeper.haco)"),
        "{out}"
    );
}

/// Samples the cluster in the background: the containers it believes wanted and
/// running, and the containers that really run (non-empty container cgroups on every
/// host, dead supervisors' included). Remembers the most of each it ever saw.
struct Sampler {
    stop: Arc<AtomicBool>,
    max: Arc<Mutex<Maxima>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default, Clone, Copy)]
struct Maxima {
    active: usize,
    running: usize,
    real: usize,
    samples: usize,
}

impl Sampler {
    fn start(cl: &Cluster) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(Mutex::new(Maxima::default()));
        let servers = cl.servers();
        let token = cl.token.clone();
        let probe = cl.probe();
        let (s, m) = (stop.clone(), max.clone());
        let handle = std::thread::spawn(move || {
            // Sampling goes on until asked to stop, and in any case until enough samples
            // exist to mean something (a fast convergence must not starve the check).
            let started = Instant::now();
            while !(s.load(Ordering::SeqCst)
                && (m.lock().unwrap().samples > 10 || started.elapsed() > T))
            {
                let real: usize = probe.real_running().values().sum();
                let o = std::process::Command::new(crate::common::BIN)
                    .env("HACONIWA_SERVER", &servers)
                    .env("HACONIWA_TOKEN", &token)
                    .args(["containers", "--all", "--json"])
                    .output();
                if let Ok(o) = o {
                    if let Ok(c) = serde_json::from_slice::<Vec<Value>>(&o.stdout) {
                        let mut g = m.lock().unwrap();
                        g.active = g.active.max(active(&c));
                        g.running = g.running.max(running(&c).len());
                        g.real = g.real.max(real);
                        g.samples += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Sampler {
            stop,
            max,
            handle: Some(handle),
        }
    }

    /// Stops sampling and checks that neither the wanted, the running nor the real
    /// count ever went above `n` (and that enough samples were taken to mean something).
    fn assert_never_above(self, n: usize) {
        let m = self.finish();
        assert!(m.samples > 10, "the sampler saw too little ({})", m.samples);
        assert!(
            m.active <= n && m.running <= n && m.real <= n,
            "went above {n}: wanted {}, running {}, really running {}",
            m.active,
            m.running,
            m.real
        );
    }

    fn finish(mut self) -> Maxima {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        *self.max.lock().unwrap()
    }
}

#[test]
fn keep5_converges_to_exactly_5_spread_over_3_nodes_and_replaces_killed_ones() {
    let cl = Cluster::three("ru-keep5", &[]);
    let sampler = Sampler::start(&cl);
    apply_keep5(&cl);
    let c = five_running(&cl);
    let mut per_node = [0usize; 4];
    for x in running(&c) {
        per_node[x["node"].as_u64().unwrap() as usize] += 1;
        assert_eq!(x["rule"], "keep5");
        assert_eq!(x["definition"], "sleeper");
    }
    assert!(
        per_node[1..].iter().all(|n| (1..=2).contains(n)),
        "not spread: {per_node:?}"
    );
    // Two containers die (killed on their host): the rule replaces them.
    let victims: Vec<(u64, String, i64)> = running(&c)
        .iter()
        .take(2)
        .map(|x| {
            (
                x["node"].as_u64().unwrap(),
                x["id"].as_str().unwrap().to_string(),
                x["pid"].as_i64().unwrap(),
            )
        })
        .collect();
    for (node, _, pid) in &victims {
        let _ = node;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    let c = cl.wait_containers(T, "2 replacements", |c| {
        running(c).len() == 5
            && victims.iter().all(|(_, id, _)| {
                c.iter()
                    .any(|x| x["id"] == id.as_str() && x["state"] == "exited")
            })
    });
    assert_eq!(active(&c), 5);
    assert_eq!(
        cl.real_running().values().sum::<usize>(),
        5,
        "really running"
    );
    sampler.assert_never_above(5);
    let rules = cl.ok(&["watch", "ls", "--json"]);
    let rules: Vec<Value> = serde_json::from_str(&rules).unwrap();
    assert_eq!(rules[0]["name"], "keep5");
    assert_eq!(rules[0]["last_error"], "");
    assert!(rules[0]["evaluations"].as_u64().unwrap() >= 1);
}

#[test]
fn kill_9_of_the_leader_keeps_5_and_never_more() {
    let mut cl = Cluster::three("ru-failover", &[]);
    apply_keep5(&cl);
    five_running(&cl);
    let sampler = Sampler::start(&cl);
    let old = cl.wait_leader(T);
    cl.kill9(old as usize);
    let new = cl.wait(T, "a new leader", |s| {
        s["leader"].as_u64().is_some_and(|l| l != 0 && l != old)
    })["leader"]
        .as_u64()
        .unwrap();
    // The old leader's containers are lost with it and replaced on the others.
    let c = cl.wait_containers(T, "5 running on the survivors", |c| {
        running(c).len() == 5 && running(c).iter().all(|x| x["node"] != old)
    });
    assert_eq!(active(&c), 5);
    // The dead leader's own containers were stopped by their monitors when its lease ran
    // out, before their replacements started: never more than 5 anywhere.
    assert_eq!(
        cl.real_running().values().sum::<usize>(),
        5,
        "really running"
    );
    sampler.assert_never_above(5);
    assert_ne!(new, old);
}

#[test]
fn a_dead_supervisor_s_containers_stop_before_their_replacements_start() {
    let mut cl = Cluster::three("ru-nodedown", &[]);
    apply_keep5(&cl);
    five_running(&cl);
    let leader = cl.wait_leader(T);
    let victim = (1..=3u64).find(|n| *n != leader).unwrap();
    let before = cl.cgroups();
    let stale: Vec<i32> = before
        .get(&victim)
        .map(|m| m.values().flatten().copied().collect())
        .unwrap_or_default();
    assert!(
        !stale.is_empty(),
        "nothing runs on node {victim}: {before:?}"
    );
    let old: BTreeSet<String> = before.values().flat_map(|m| m.keys().cloned()).collect();
    let deaths = DeathWatch::start(&stale, T);
    let sampler = Sampler::start(&cl);
    cl.kill9(victim as usize);
    // Hour-long sleepers: only their monitors, fencing on the lease, can end them now.
    let deaths = deaths.deaths("the dead supervisor's containers");
    cl.wait_containers(T, "replacements elsewhere", |c| {
        running(c).len() == 5 && running(c).iter().all(|x| x["node"] != victim)
    });
    // Every replacement's first process started after the last stale process died, as
    // the kernel timed both.
    let starts: BTreeMap<String, Duration> = cl
        .cgroups()
        .into_values()
        .flatten()
        .filter(|(c, _)| !old.contains(c))
        .map(|(c, pids)| {
            let at = procs::started(&pids).unwrap_or_else(|| panic!("{c} has no process"));
            (c, at)
        })
        .collect();
    let replaced = before.get(&victim).map_or(0, |m| m.len());
    assert_eq!(starts.len(), replaced, "new containers: {starts:?}");
    let gap = procs::assert_started_after("node down", &deaths, &starts);
    eprintln!("the first replacement started {gap} ms after the last stale process died");
    sampler.assert_never_above(5);
    cl.start(victim as usize);
    cl.wait(T, "the node back up", |s| {
        s["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == victim && m["state"] == "up")
    });
    let c = cl.containers();
    assert_eq!(active(&c), 5);
    assert_eq!(running(&c).len(), 5);
    assert_eq!(
        cl.real_running().values().sum::<usize>(),
        5,
        "really running"
    );
}

#[test]
fn a_rule_with_a_syntax_error_is_refused_with_its_position() {
    let cl = Cluster::three("ru-syntax", &[]);
    let bad = cl.scratch.path.join("bad.watch");
    std::fs::write(&bad, "haconiwa.watch(|w| {\n    w.watch(\"cluster\", |event| {\n        if event.cluster.count( < 5 {\n        }\n    });\n});\n").unwrap();
    let o = cl.run(&["watch", "apply", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("{}:3:", bad.display())), "{err}");
    let o = cl.run(&[
        "watch",
        "apply",
        bad.to_str()
            .unwrap()
            .replace("bad.watch", "missing.watch")
            .as_str(),
    ]);
    assert!(!o.status.success());
    // A rule naming a definition that is not there.
    let orphan = cl.scratch.path.join("orphan.watch");
    std::fs::write(&orphan, "haconiwa.watch(|w| {\n  w.watch(\"cluster\", |e| { haconiwa.spawn(\"nowhere.haco\"); });\n});\n").unwrap();
    let o = cl.run(&["watch", "apply", orphan.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("orphan.watch:2:43:") && err.contains("nowhere.haco"),
        "{err}"
    );
    let rules: Vec<Value> = serde_json::from_str(&cl.ok(&["watch", "ls", "--json"])).unwrap();
    assert!(rules.is_empty(), "{rules:?}");
}

#[test]
fn an_endless_rule_is_stopped_and_reported_while_the_others_are_kept() {
    let cl = Cluster::three("ru-endless", &[]);
    let endless = cl.scratch.path.join("spin.watch");
    std::fs::write(&endless, "haconiwa.watch(|w| {\n    w.watch(\"cluster\", |event| {\n        let n = 0;\n        loop { n += 1; }\n    });\n});\n").unwrap();
    cl.ok(&["watch", "apply", endless.to_str().unwrap()]);
    apply_keep5(&cl);
    five_running(&cl);
    let deadline = Instant::now() + T;
    let spin = loop {
        let rules: Vec<Value> = serde_json::from_str(&cl.ok(&["watch", "ls", "--json"])).unwrap();
        if let Some(r) = rules
            .iter()
            .find(|r| r["name"] == "spin" && r["last_error"] != "")
        {
            break r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the endless rule was never reported: {rules:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let err = spin["last_error"].as_str().unwrap();
    // Stopped by the wall-time or the operation bound; reported at its handler.
    assert!(
        err.contains("spin.watch:") && err.contains("stopped"),
        "{err}"
    );
    // The leader is fine and the other rule still holds.
    assert!(cl.status().is_some());
    let rules: Vec<Value> = serde_json::from_str(&cl.ok(&["watch", "ls", "--json"])).unwrap();
    let keep5 = rules.iter().find(|r| r["name"] == "keep5").unwrap();
    assert_eq!(keep5["last_error"], "", "{keep5}");
    assert_eq!(running(&cl.containers()).len(), 5);
    // Removing it works and is final.
    cl.ok(&["watch", "rm", "spin"]);
    let o = cl.run(&["watch", "rm", "spin"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not found: no rule 'spin'"),
        "{o:?}"
    );
}

#[test]
fn haconiwa_up_shows_5_sleepers_on_3_nodes_and_down_removes_everything() {
    crate::common::require_root();
    let _one_at_a_time = crate::common::cluster::serial();
    // A private directory, addresses and cgroup parent: a user's own `haconiwa up` on this
    // machine is neither seen nor touched.
    let scratch = crate::common::Scratch::new("up");
    let dir = scratch.path.join("up");
    let net = format!("127.{}.{}", 100 + std::process::id() % 100, 7);
    let cgroup_parent = format!("haconiwa-up-test-{}", std::process::id());
    let bin = || {
        let mut c = std::process::Command::new(crate::common::BIN);
        c.env("HACONIWA_UP_DIR", &dir)
            .env("HACONIWA_CGROUP_PARENT", &cgroup_parent);
        c
    };
    let up = bin()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["up", "--detach", "--net", &net])
        .output()
        .unwrap();
    struct Down(std::process::Command, PathBuf, String);
    impl Drop for Down {
        fn drop(&mut self) {
            let _ = self.0.arg("down").output();
            crate::common::sweep(&self.1, &self.2);
        }
    }
    let _down = Down(bin(), dir.clone(), cgroup_parent.clone());
    assert!(
        up.status.success(),
        "{}{}",
        crate::common::stdout(&up),
        crate::common::stderr(&up)
    );
    // The token lives in 0600 files in a 0700 directory.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir.clone()), 0o700);
    assert_eq!(mode(dir.join("env")), 0o600);
    assert_eq!(mode(dir.join("info.json")), 0o600);
    let env = std::fs::read_to_string(dir.join("env")).unwrap();
    let var = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("export {k}=")))
            .unwrap_or_else(|| panic!("{k} missing in {env}"))
            .to_string()
    };
    let (server, token) = (var("HACONIWA_SERVER"), var("HACONIWA_TOKEN"));
    assert!(server.starts_with(&format!("{net}.1:")), "{server}");
    // TLS by default: a CA and certificates, 0600, named in the env file.
    let tls: Vec<(String, String)> = ["HACONIWA_CA", "HACONIWA_CERT", "HACONIWA_KEY"]
        .iter()
        .map(|k| (k.to_string(), var(k)))
        .collect();
    for (_, f) in &tls {
        assert_eq!(mode(PathBuf::from(f)), 0o600, "{f}");
    }
    let plain = std::process::Command::new(crate::common::BIN)
        .env("HACONIWA_SERVER", &server)
        .env("HACONIWA_TOKEN", &token)
        .args(["cluster", "status"])
        .output()
        .unwrap();
    assert!(!plain.status.success(), "a plaintext client was answered");
    let deadline = Instant::now() + T;
    loop {
        let o = std::process::Command::new(crate::common::BIN)
            .env("HACONIWA_SERVER", &server)
            .env("HACONIWA_TOKEN", &token)
            .envs(tls.iter().cloned())
            .args(["containers", "--json"])
            .output()
            .unwrap();
        let c: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap_or_default();
        let r = running(&c);
        let nodes: std::collections::BTreeSet<u64> =
            r.iter().map(|x| x["node"].as_u64().unwrap()).collect();
        if r.len() == 5 && nodes.len() == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no 5 sleepers on 3 nodes: {c:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("info.json")).unwrap()).unwrap();
    let down = bin().arg("down").output().unwrap();
    assert!(down.status.success(), "{}", crate::common::stderr(&down));
    assert!(!dir.exists());
    assert!(!std::path::Path::new(info["data_dir"].as_str().unwrap()).exists());
    for pid in info["pids"].as_array().unwrap() {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "supervisor {pid} still runs"
        );
    }
    let left = crate::common::cgroup_dirs(&cgroup_parent);
    assert!(left.is_empty(), "cgroups left: {left:?}");
}
