//! What an operator sees of a real 3-node cluster: `/metrics` parsed by Prometheus'
//! own Python parser and checked against `cluster status`; the dashboard in headless
//! Chromium (through chromedriver) updating without a reload; event streams that resume
//! without gaps or duplicates.

use crate::common::cluster::Cluster;
use crate::common::require_program;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(40);

/// A 3-node cluster, each member with its HTTP listener on its own address, keeping 5
/// sleepers that sleep an hour.
fn cluster_with_http(tag: &str) -> Cluster {
    let cl = Cluster::three_with_http(tag);
    let dir = cl.scratch.path.join("rule");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("sleeper.haco"), crate::common::long_sleeper()).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/keep5.watch"),
        dir.join("keep5.watch"),
    )
    .unwrap();
    cl.ok(&["watch", "apply", dir.join("keep5.watch").to_str().unwrap()]);
    cl.wait_containers(T, "5 sleepers running", |c| {
        c.iter().filter(|x| x["state"] == "running").count() == 5
    });
    cl
}

/// The environment variable that marks the processes a browser test starts.
const BROWSER_MARK: &str = "HACONIWA_TEST_BROWSER";

/// Processes whose environment carries `BROWSER_MARK=mark`.
fn marked(mark: &str) -> Vec<i32> {
    let needle = format!("{BROWSER_MARK}={mark}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
        })
        .collect()
}

#[test]
fn metrics_and_the_dashboard_show_the_cluster_live() {
    require_program("chromium", "chromium");
    require_program("chromedriver", "chromium-driver");
    let cl = cluster_with_http("web-dash");
    let status = cl.status_of(1).expect("status");
    let base = format!("http://{}.1:7780", cl.net);

    // Metrics, parsed by a real parser, against what `cluster status` says.
    let m = crate::common::scrape(&format!("{base}/metrics"));
    let get = |k: &str| {
        m.get(k)
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("no {k} in the scrape: {m:#?}"))
    };
    assert_eq!(get("haconiwa_raft_term"), status["term"].as_f64().unwrap());
    assert_eq!(
        get("haconiwa_raft_leader"),
        status["leader"].as_f64().unwrap()
    );
    assert_eq!(get("haconiwa_cluster_nodes{state=up}"), 3.0);
    assert_eq!(
        get("haconiwa_cluster_containers{definition=sleeper,state=running}"),
        5.0
    );
    assert_eq!(get("haconiwa_cluster_rules"), 1.0);
    assert!(get("haconiwa_cluster_placements_total") >= 5.0);
    assert!(get("haconiwa_process_resident_memory_bytes") > 1e6);
    assert!(get("haconiwa_process_open_fds") > 3.0);
    assert!(
        get("haconiwa_node_launch_duration_seconds_count") >= 1.0,
        "no launch timed on node 1"
    );
    // Its agent's passes are timed too (at least one per launch it made).
    assert!(
        get("haconiwa_node_agent_pass_duration_seconds_count")
            >= get("haconiwa_node_launch_duration_seconds_count"),
        "the agent's passes on node 1 are not timed"
    );
    // Every entry node 1 holds came through a timed append (the log starts empty).
    assert!(
        get("haconiwa_raft_log_append_duration_seconds_count") >= 1.0
            && get("haconiwa_raft_log_append_duration_seconds_sum") > 0.0,
        "no log append timed on node 1"
    );
    let leader = status["leader"].as_u64().unwrap() as usize;
    let lm = crate::common::scrape(&format!("http://{}.{leader}:7780/metrics", cl.net));
    assert_eq!(
        lm.get("haconiwa_raft_is_leader").and_then(Value::as_f64),
        Some(1.0)
    );
    assert!(
        lm.get("haconiwa_cluster_rule_evaluation_duration_seconds_count")
            .and_then(Value::as_f64)
            .unwrap_or(0.0)
            >= 1.0,
        "the leader timed no rule evaluation: {lm:#?}"
    );

    // The dashboard in headless Chromium: the leader and 5 running, then a container
    // stopped from the CLI shows up on the same page, without a reload.
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let mark = format!("{}-{}", std::process::id(), cl.net);
    let mut browser = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dashboard.py"))
        .arg(format!("{base}/"))
        .arg(&shot)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A mark every process it starts inherits (chromedriver, Chromium and the crash
        // handlers Chromium puts in sessions of their own): all of them can be found,
        // ended, and checked gone.
        .env(BROWSER_MARK, &mark)
        .spawn()
        .expect("python3");
    /// Ends the script and every process that carries its mark.
    struct Kill(std::process::Child, String);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            for pid in marked(&self.1) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let mut input = browser.stdin.take().unwrap();
    let mut output = BufReader::new(browser.stdout.take().unwrap());
    let mut stderr = browser.stderr.take().unwrap();
    let browser = Kill(browser, mark.clone());
    let mut line = String::new();
    let mut read = |line: &mut String| {
        line.clear();
        output.read_line(line).unwrap();
        if line.is_empty() {
            let mut e = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut e);
            panic!("the browser script ended: {e}");
        }
    };
    read(&mut line);
    assert!(
        line.starts_with(&format!("ready leader={leader} running=5 members=3")),
        "{line}"
    );
    let victim = cl.a_running_container();
    cl.ok(&["stop", &victim]);
    writeln!(input, "stopped {victim}").unwrap();
    read(&mut line);
    assert!(
        line.starts_with("updated exited same_page=true"),
        "the page did not update in place: {line}"
    );
    // A container's output on the page: a talker on a node other than the page's.
    let talker = cl.haco(
        "talker",
        "[\"/bin/sh\", \"-c\", \"echo hello-from-talker; echo oops-on-stderr >&2; sleep 3600\"]",
    );
    let other = if leader == 1 { 2 } else { leader };
    let out = cl.ok(&[
        "spawn",
        talker.to_str().unwrap(),
        "--node",
        &other.to_string(),
        "--json",
    ]);
    let tid = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // /api/logs from node 1 (the talker runs elsewhere): both streams, marked.
    let deadline = Instant::now() + Duration::from_secs(30);
    let lines = loop {
        let got = std::process::Command::new("curl")
            .args(["-sf", &format!("{base}/api/logs?id={tid}&tail=10")])
            .output()
            .expect("curl");
        let body: Value = serde_json::from_slice(&got.stdout).unwrap_or(Value::Null);
        let lines = body["lines"].as_array().cloned().unwrap_or_default();
        if lines.len() >= 2 || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        lines.contains(&serde_json::json!({"stderr": false, "text": "hello-from-talker"}))
            && lines.contains(&serde_json::json!({"stderr": true, "text": "oops-on-stderr"})),
        "{lines:?}"
    );
    writeln!(input, "output {tid} hello-from-talker").unwrap();
    read(&mut line);
    assert!(
        line.starts_with("output lines=2 stderr=1"),
        "the page's output panel: {line}"
    );
    writeln!(input, "quit").unwrap();
    read(&mut line);
    assert!(line.starts_with("saved"), "{line}");
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "not a screenshot"
    );
    // The script quits the browser and the driver, then ends; nothing of it stays.
    let mut browser = browser;
    let deadline = Instant::now() + Duration::from_secs(20);
    while browser.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the browser script did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !marked(&mark).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let stayed = marked(&mark);
    drop(browser);
    assert!(
        stayed.is_empty(),
        "the browser left processes running: {stayed:?}"
    );
    cl.ok(&["watch", "rm", "keep5"]);
    for c in cl.containers() {
        let _ = cl.run(&["stop", c["id"].as_str().unwrap()]);
    }
}

/// `haconiwa events --since N --json` for a few seconds: the positions printed.
fn events_since(cl: &Cluster, slot: usize, since: u64) -> Vec<(u64, u64)> {
    let o = Command::new("timeout")
        .arg("3")
        .arg(crate::common::BIN)
        .env("HACONIWA_SERVER", &cl.nodes[slot - 1].addr)
        .env("HACONIWA_TOKEN", &cl.token)
        .args(["events", "--json", "--since", &since.to_string()])
        .output()
        .unwrap();
    positions(&String::from_utf8_lossy(&o.stdout))
}

fn positions(text: &str) -> Vec<(u64, u64)> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| (v["index"].as_u64().unwrap(), v["sub"].as_u64().unwrap()))
        .collect()
}

#[test]
fn event_streams_resume_without_gaps_or_duplicates() {
    let mut cl = Cluster::three("web-events", &[]);
    let haco = cl.haco("ev", "[\"/bin/sleep\", \"3600\"]");
    for _ in 0..3 {
        cl.ok(&["spawn", haco.to_str().unwrap()]);
    }
    // Replay from the start: every event, in order, once.
    let all = events_since(&cl, 1, 0);
    assert!(all.len() >= 6, "{all:?}");
    assert!(
        all.windows(2).all(|w| w[0] < w[1]),
        "not strictly in order: {all:?}"
    );
    // Replay from the middle: exactly the tail.
    let mid = all[all.len() / 2].0;
    let tail: Vec<_> = all.iter().copied().filter(|p| p.0 > mid).collect();
    assert_eq!(events_since(&cl, 2, mid), tail);

    // A follower that dies under a following client: -f reconnects to another member
    // and resumes after the last event it printed.
    let leader = cl.wait_leader(T) as usize;
    let victim = if leader == 2 { 3 } else { 2 };
    let other = 5 - victim; // the other of 2 and 3
    let servers = format!("{},{}", cl.nodes[victim - 1].addr, cl.nodes[other - 1].addr);
    let since = all.last().unwrap().0;
    let mut follow = Command::new(crate::common::BIN)
        .env("HACONIWA_SERVER", &servers)
        .env("HACONIWA_TOKEN", &cl.token)
        .args(["events", "-f", "--json", "--since", &since.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let printed = Arc::new(Mutex::new(String::new()));
    let reader = {
        let (printed, mut out) = (printed.clone(), follow.stdout.take().unwrap());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = out.read(&mut buf) {
                printed
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let seen = || positions(&printed.lock().unwrap());
    // The victim dies once the client has printed from it.
    let first = cl.containers().len();
    cl.ok(&["spawn", haco.to_str().unwrap()]);
    let deadline = Instant::now() + T;
    while seen().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the following client printed nothing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    cl.kill9(victim);
    for _ in 0..3 {
        cl.ok(&["spawn", haco.to_str().unwrap()]);
    }
    cl.wait_containers(T, "the 4 spawns listed", |c| c.len() >= first + 4);
    // Until the client has printed exactly what the leader holds after `since`.
    let deadline = Instant::now() + T;
    let caught_up = loop {
        let reference = events_since(&cl, leader, since);
        if seen() == reference {
            break reference;
        }
        assert!(
            Instant::now() < deadline,
            "the following client never caught up: printed {:?}, the leader holds {reference:?}",
            seen()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(caught_up.len() >= 4, "{caught_up:?}");
    let _ = follow.kill();
    let out = follow.wait_with_output().unwrap();
    let _ = reader.join();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("resuming after index"),
        "no reconnect happened: {err}"
    );
    // Whatever it printed after that moment continues the leader's list exactly.
    let (seen, reference) = (seen(), events_since(&cl, leader, since));
    assert!(
        seen.len() >= caught_up.len() && reference.starts_with(&seen),
        "the following client missed or repeated events ({err}): printed {seen:?}, the leader holds {reference:?}"
    );
    cl.start(victim);
}
