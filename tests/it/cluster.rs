//! The supervisor cluster with real processes on 127.x.y.N and real containers.

use crate::common::cluster::Cluster;
use crate::common::procs;
use crate::common::{state_digest, stdout};
use serde_json::Value;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn running_on(c: &[Value], id: &str) -> Option<(u64, i64)> {
    c.iter()
        .find(|x| x["id"] == id && x["state"] == "running")
        .map(|x| (x["node"].as_u64().unwrap(), x["pid"].as_i64().unwrap()))
}

fn spawn(cl: &Cluster, def: &std::path::Path, extra: &[&str]) -> String {
    let mut args = vec!["spawn", def.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let out = cl.ok(&args);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// Runs tests/grpc_client.py (an independent gRPC client) and returns its stdout.
fn python_client(args: &[&str]) -> String {
    let py = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc_client.py"))
        .args(args)
        .output()
        .unwrap();
    let out = stdout(&py);
    assert!(
        py.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&py.stderr)
    );
    out
}

fn pid_alive(pid: i64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn three_supervisors_form_a_cluster_with_one_leader() {
    let cl = Cluster::three("cl-form", &[]);
    cl.wait(T, "every member knows the leader", |_| {
        let l: Vec<Value> = (1..=3)
            .filter_map(|i| cl.status_of(i))
            .map(|s| s["leader"].clone())
            .collect();
        l.len() == 3 && l.windows(2).all(|w| w[0] == w[1])
    });
    let views: Vec<Value> = (1..=3)
        .map(|i| cl.status_of(i).expect("member answers"))
        .collect();
    let leader = views[0]["leader"].as_u64().unwrap();
    assert!((1..=3).contains(&leader));
    for v in &views {
        assert_eq!(
            v["leader"], leader,
            "members disagree on the leader: {views:#?}"
        );
        assert_eq!(v["members"].as_array().unwrap().len(), 3);
    }
    // Every member applied the same state.
    cl.wait(T, "equal digests", |_| {
        let d: Vec<String> = (1..=3)
            .filter_map(|i| cl.status_of(i))
            .filter_map(|s| state_digest(&s))
            .collect();
        d.len() == 3 && d.windows(2).all(|w| w[0] == w[1])
    });
}

#[test]
fn spawn_placed_on_node_2_runs_a_real_container_there_and_stop_kills_it() {
    let cl = Cluster::three("cl-spawn", &[]);
    let def = cl.haco("web", "[\"/bin/sleep\", \"600\"]");
    let id = spawn(&cl, &def, &["--node", "2"]);
    let c = cl.wait_containers(T, "running on node 2", |c| running_on(c, &id).is_some());
    let (node, pid) = running_on(&c, &id).unwrap();
    assert_eq!(node, 2);
    assert!(pid_alive(pid));
    // Node 2's own runtime has it; nobody else does.
    let local = cl.local_ps(2);
    assert!(
        local
            .iter()
            .any(|x| x["name"] == id.as_str() && x["status"] == "running" && x["pid"] == pid),
        "{local:#?}"
    );
    assert!(cl
        .local_ps(1)
        .iter()
        .chain(cl.local_ps(3).iter())
        .all(|x| x["name"] != id.as_str()));
    // A follower forwards the write to the leader.
    let leader = cl.wait_leader(T);
    let follower = (1..=3).find(|i| *i as u64 != leader).unwrap();
    let o = cl.run_on(follower, &["stop", &id]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    cl.wait_containers(T, "stopped", |c| {
        c.iter()
            .any(|x| x["id"] == id.as_str() && x["state"] == "exited")
    });
    assert!(!pid_alive(pid), "the container still runs after stop");
}

#[test]
fn kill_9_of_the_leader_elects_a_new_one_and_writes_work_again() {
    let mut cl = Cluster::three("cl-failover", &[]);
    let def = cl.haco("job", "[\"/bin/sleep\", \"600\"]");
    let before = cl.status().unwrap();
    let old = before["leader"].as_u64().unwrap();
    cl.kill9(old as usize);
    let s = cl.wait(T, "a new leader", |s| {
        let l = s["leader"].as_u64().unwrap_or(0);
        l != 0 && l != old
    });
    assert!(s["term"].as_u64() > before["term"].as_u64());
    let id = spawn(&cl, &def, &[]);
    let c = cl.wait_containers(T, "running", |c| running_on(c, &id).is_some());
    assert_ne!(
        running_on(&c, &id).unwrap().0,
        old,
        "placed on the dead node"
    );
}

#[test]
fn a_restarted_node_keeps_its_state_and_readopts_its_containers() {
    let mut cl = Cluster::three(
        "cl-readopt",
        &["--lease-ms", "7000", "--node-ttl-ms", "8000"],
    );
    let def = cl.haco("keep", "[\"/bin/sleep\", \"600\"]");
    let id = spawn(&cl, &def, &["--node", "3"]);
    let c = cl.wait_containers(T, "running", |c| running_on(c, &id).is_some());
    let (_, pid) = running_on(&c, &id).unwrap();
    let started = procs::start_ticks(pid).expect("the container's process");
    let cgroups = cl.cgroups();
    assert!(cgroups[&3][&id].contains(&(pid as i32)), "{cgroups:?}");
    let applied = applied_index(&cl, 3);
    cl.stop(3);
    // Its container keeps running without its supervisor.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(procs::start_ticks(pid), Some(started));
    cl.start(3);
    cl.wait(T, "node 3 back", |_| {
        cl.status_of(3)
            .is_some_and(|s| s["leader"].as_u64().unwrap_or(0) != 0)
    });
    // Re-adopted: the same process (same pid, same start time), no second copy, in the
    // cluster's view, node 3's own and the hosts' cgroups.
    let c = cl.wait_containers(T, "still running", |c| running_on(c, &id).is_some());
    assert_eq!(running_on(&c, &id), Some((3, pid)));
    assert_eq!(
        procs::start_ticks(pid),
        Some(started),
        "pid {pid} was reused"
    );
    assert_eq!(cl.cgroups(), cgroups, "the hosts' cgroups changed");
    let local: Vec<Value> = cl
        .local_ps(3)
        .into_iter()
        .filter(|x| x["status"] == "running")
        .collect();
    assert_eq!(local.len(), 1, "{local:#?}");
    assert!(cl.log(3).contains("node 3 serving"));
    // And it follows the log again: a write made now is applied on node 3.
    spawn(&cl, &def, &["--node", "1"]);
    let target = applied_index(&cl, cl.wait_leader(T) as usize);
    cl.wait(T, "node 3 applies the new write", |_| {
        cl.status_of(3)
            .is_some_and(|s| s["last_applied"].as_u64() >= Some(target))
    });
    assert!(target > applied, "the applied index stayed at {applied}");
}

/// The index `slot` has applied, as it says.
fn applied_index(cl: &Cluster, slot: usize) -> u64 {
    let s = cl.status_of(slot).expect("status");
    s["last_applied"]
        .as_u64()
        .unwrap_or_else(|| panic!("no last_applied: {s:#}"))
}

#[test]
fn all_three_stopped_and_restarted_come_back_with_the_same_state() {
    let mut cl = Cluster::three(
        "cl-fullrestart",
        &["--lease-ms", "7000", "--node-ttl-ms", "8000"],
    );
    let def = cl.haco("svc", "[\"/bin/sleep\", \"600\"]");
    let ids: Vec<String> = (1..=3)
        .map(|n| spawn(&cl, &def, &["--node", &n.to_string()]))
        .collect();
    cl.wait_containers(T, "3 running", |c| {
        ids.iter().all(|id| running_on(c, id).is_some())
    });
    let before = cl.status().unwrap();
    let applied: Vec<u64> = (1..=3).map(|n| applied_index(&cl, n)).collect();
    let pids: Vec<(u64, i64)> = ids
        .iter()
        .map(|id| running_on(&cl.containers(), id).unwrap())
        .collect();
    let started: Vec<Option<u64>> = pids.iter().map(|(_, p)| procs::start_ticks(*p)).collect();
    let cgroups = cl.cgroups();
    for i in 1..=3 {
        cl.stop(i);
    }
    for i in 1..=3 {
        cl.start(i);
    }
    cl.wait_leader(T);
    let before = state_digest(&before).expect("a digest before the restart");
    let after = cl.wait(T, "the same state", |s| {
        state_digest(s).as_ref() == Some(&before)
    });
    assert_eq!(after["members"].as_array().unwrap().len(), 3);
    let c = cl.containers();
    for (id, p) in ids.iter().zip(&pids) {
        assert_eq!(running_on(&c, id), Some(*p), "{id} changed: {c:#?}");
    }
    assert_eq!(c.len(), 3, "duplicates: {c:#?}");
    // The same processes (start times as /proc has them) in the same cgroups.
    let now: Vec<Option<u64>> = pids.iter().map(|(_, p)| procs::start_ticks(*p)).collect();
    assert_eq!(now, started, "a pid was reused: {pids:?}");
    assert_eq!(cl.cgroups(), cgroups, "the hosts' cgroups changed");
    for n in 1..=3 {
        let running = cl
            .local_ps(n)
            .into_iter()
            .filter(|x| x["status"] == "running")
            .count();
        assert_eq!(running, 1, "node {n} runs {running} containers");
    }
    // And all follow the log again: a write made now is applied everywhere. (A leader
    // restarted with its committed vote leads again without a new entry.)
    spawn(&cl, &def, &["--node", "1"]);
    let target = applied_index(&cl, cl.wait_leader(T) as usize);
    assert!(
        applied.iter().all(|a| target > *a),
        "the applied index stayed at {applied:?}"
    );
    for n in 1..=3 {
        cl.wait(T, "every member applies the new write", |_| {
            cl.status_of(n)
                .is_some_and(|s| s["last_applied"].as_u64() >= Some(target))
        });
    }
}

#[test]
fn a_fourth_node_joins_as_learner_and_replaces_a_voter_gone_for_good() {
    let mut cl = Cluster::three(
        "cl-learner",
        &["--snapshot-after", "10", "--replace-voter-after-ms", "1500"],
    );
    // Enough entries that the newcomer starts from a snapshot, not the whole log.
    let def = cl.haco("fill", "[\"/bin/sleep\", \"600\"]");
    for _ in 0..4 {
        spawn(&cl, &def, &[]);
    }
    cl.wait_containers(T, "4 running", |c| {
        c.iter().filter(|x| x["state"] == "running").count() == 4
    });
    let slot = cl.add_node(&["--label", "role=spare"]);
    let s = cl.wait(T, "4 members", |s| {
        s["members"].as_array().unwrap().len() == 4
    });
    let m4 = s["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == 4)
        .cloned()
        .expect("node 4");
    assert_eq!(m4["role"], "learner", "{s:#}");
    assert_eq!(m4["labels"]["role"], "spare");
    cl.wait(T, "node 4 has the same state", |s| {
        let theirs = cl.status_of(slot).and_then(|v| state_digest(&v));
        theirs.is_some() && theirs == state_digest(s)
    });
    assert!(
        cl.log(slot).contains("installed snapshot"),
        "node 4 did not start from a snapshot:\n{}",
        cl.log(slot)
    );
    // A voter that is not the leader dies for good.
    let leader = cl.status().unwrap()["leader"].as_u64().unwrap();
    let victim = (1..=3).find(|i| *i != leader).unwrap();
    cl.kill9(victim as usize);
    let s = cl.wait(T, "the learner promoted", |s| {
        let m = s["members"].as_array().unwrap();
        let role = |id: u64| m.iter().find(|x| x["id"] == id).map(|x| x["role"].clone());
        role(4) == Some("voter".into()) && role(victim) != Some("voter".into())
    });
    let voters = s["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "voter")
        .count();
    assert_eq!(voters, 3, "{s:#}");
    // The cluster still commits.
    let id = spawn(&cl, &def, &[]);
    cl.wait_containers(T, "running", |c| running_on(c, &id).is_some());
}

#[test]
fn a_wrong_or_missing_token_is_refused() {
    let cl = Cluster::three("cl-token", &[]);
    let wrong = cl
        .cli()
        .env("HACONIWA_TOKEN", "not-the-token")
        .args(["containers"])
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("unauthenticated: wrong cluster token"),
        "{wrong:?}"
    );
    let out = std::process::Command::new(crate::common::BIN)
        .env("HACONIWA_SERVER", cl.servers())
        .env("HACONIWA_TOKEN", "")
        .args(["containers"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no cluster token"),
        "{out:?}"
    );
    // Without a token the server refuses every service, Raft included (a client of its
    // own, since the CLI refuses to send nothing).
    let out = python_client(&["no-token", &cl.nodes[0].addr]);
    for service in ["haconiwa.v1.Cluster/ClusterStatus", "haconiwa.v1.Raft/Vote"] {
        assert!(
            out.lines()
                .any(|l| l == format!("{service}: UNAUTHENTICATED")),
            "{service} was not refused for want of a token:\n{out}"
        );
    }
}

#[test]
fn an_independent_grpc_client_lists_services_and_calls_cluster_status() {
    let cl = Cluster::three("cl-reflect", &[]);
    // The leader it reports is the one the cluster had before and after the call (an
    // election in between would make the comparison meaningless: then try again).
    for attempt in 0..3 {
        let before = cl.wait_leader(T);
        let out = python_client(&["status", &cl.nodes[1].addr, &cl.token]);
        assert!(
            out.contains("haconiwa.v1.Cluster") && out.contains("haconiwa.v1.Raft"),
            "{out}"
        );
        if cl.wait_leader(T) == before {
            assert!(out.contains(&format!("leader={before}")), "{out}");
            return;
        }
        eprintln!("attempt {attempt}: the leader changed during the call");
    }
    panic!("the leader kept changing");
}

#[test]
fn bad_requests_get_clear_errors_and_change_nothing() {
    let cl = Cluster::three("cl-bad", &[]);
    let before = state_digest(&cl.status().unwrap()).expect("a state digest");
    let o = cl.run(&["stop", "no-such-container"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not found: no container 'no-such-container'"),
        "{o:?}"
    );
    let def = cl.haco("ok", "[\"/bin/true\"]");
    let o = cl.run(&["spawn", def.to_str().unwrap(), "--node", "9"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("invalid argument: no node 9 in the cluster"),
        "{o:?}"
    );
    let o = cl.run(&["cluster", "drain", "9"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not found: no node 9"),
        "{o:?}"
    );
    let o = cl.run(&["cluster", "drain", "n9"]);
    assert!(
        !o.status.success()
            && String::from_utf8_lossy(&o.stderr).contains("'n9' is neither a node id nor `self`"),
        "{o:?}"
    );
    // An invalid definition sent straight to the API (no local check) is refused with
    // its position.
    // Bytes that are no protobuf: the caller's fault, INVALID_ARGUMENT (not INTERNAL).
    let out = python_client(&["malformed", &cl.nodes[2].addr, &cl.token]);
    for call in [
        "haconiwa.v1.Cluster/ClusterStatus",
        "haconiwa.v1.Cluster/Spawn",
        "haconiwa.v1.Raft/Vote",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{call}: INVALID_ARGUMENT"))),
            "{call}:\n{out}"
        );
    }
    let out = python_client(&["bad-spawn", &cl.nodes[2].addr, &cl.token]);
    assert!(
        out.contains("INVALID_ARGUMENT broken.haco:2:7: unknown key 'nmae'"),
        "{}",
        out
    );
    assert_eq!(
        state_digest(&cl.status().unwrap()),
        Some(before),
        "a refused request changed the state"
    );
}

#[test]
fn a_node_cut_off_fences_its_containers_before_the_cluster_replaces_them() {
    let mut cl = Cluster::three("cl-partition", &[]);
    let def = cl.haco("stale", "[\"/bin/sleep\", \"600\"]");
    let leader = cl.wait_leader(T);
    let victim = (1..=3).find(|i| *i != leader).unwrap();
    let id = spawn(&cl, &def, &["--node", &victim.to_string()]);
    let c = cl.wait_containers(T, "running", |c| running_on(c, &id).is_some());
    let (_, pid) = running_on(&c, &id).unwrap();
    let cut = std::time::Instant::now();
    cl.cut_off(victim as usize);
    // Over there its lease runs out and its monitor stops it (default lease 1.5 s)...
    let deadline = cut + Duration::from_secs(10);
    while pid_alive(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "not fenced while cut off"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let fenced_after = cut.elapsed();
    assert!(
        fenced_after >= Duration::from_millis(1000),
        "fenced too early, at {fenced_after:?}: the lease should have held"
    );
    // ...and only then do the others see it lost (lease + margin after its last beat).
    let c = cl.containers();
    assert!(
        c.iter()
            .all(|x| x["id"] != id.as_str() || x["state"] != "lost"),
        "marked lost while it could still run: {c:#?}"
    );
    cl.wait_containers(T, "lost", |c| {
        c.iter()
            .any(|x| x["id"] == id.as_str() && x["state"] == "lost")
    });
    cl.heal();
    cl.wait(T, "node back up", |s| {
        s["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == victim && m["state"] == "up")
    });
    // Its local record says why it ended (until the agent forgets it).
    let local = cl.local_ps(victim);
    assert!(local.iter().all(|x| x["status"] != "running"), "{local:#?}");
}

#[test]
fn a_supervisor_whose_port_is_taken_fails_before_it_joins() {
    let cl = Cluster::three("cl-port", &[]);
    let before = cl.status().unwrap()["members"].as_array().unwrap().len();
    // The port of a fourth member is held by someone else.
    let addr = format!("{}.4:7700", cl.net);
    let _squatter = std::net::TcpListener::bind(&addr).expect("hold the port");
    let out = std::process::Command::new(crate::common::BIN)
        .args(["supervisor", "--listen", &addr, "--data-dir"])
        .arg(cl.scratch.path.join("n4"))
        .args(["--join", &cl.servers()])
        .env("HACONIWA_TOKEN", &cl.token)
        .env("HACONIWA_STATE_DIR", &cl.state_dir)
        .env("HACONIWA_CGROUP_PARENT", &cl.cgroup_parent)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("listen on {addr}")), "{err}");
    // Nothing joined: no dead member left behind. (It has exited: a join it had asked
    // for would have been committed before its answer.)
    let s = cl.status().unwrap();
    assert_eq!(s["members"].as_array().unwrap().len(), before, "{s:#}");
    assert!(!cl.scratch.path.join("n4/node_id").exists());
}

#[test]
fn an_on_disconnect_keep_container_runs_on_through_a_cut() {
    let mut cl = Cluster::three("cl-keep", &[]);
    let def = cl.haco("keeper", "[\"/bin/sleep\", \"600\"]");
    let text = std::fs::read_to_string(&def).unwrap();
    std::fs::write(
        &def,
        text.replace("c.cgroup[", "c.on_disconnect(\"keep\");\n  c.cgroup["),
    )
    .unwrap();
    let leader = cl.wait_leader(T);
    let victim = (1..=3).find(|i| *i != leader).unwrap();
    let id = spawn(&cl, &def, &["--node", &victim.to_string()]);
    let c = cl.wait_containers(T, "running", |c| running_on(c, &id).is_some());
    let (_, pid) = running_on(&c, &id).unwrap();
    cl.cut_off(victim as usize);
    cl.wait_containers(T, "lost", |c| {
        c.iter()
            .any(|x| x["id"] == id.as_str() && x["state"] == "lost")
    });
    // Well past the lease, it still runs: availability over uniqueness, as asked.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        pid_alive(pid),
        "an on_disconnect(\"keep\") container was fenced"
    );
    cl.heal();
}

#[test]
fn drain_moves_containers_and_leave_removes_the_node_with_events_streamed() {
    let cl = Cluster::three("cl-drain", &[]);
    let def = cl.haco("mov", "[\"/bin/sleep\", \"600\"]");
    let leader = cl.status().unwrap()["leader"].as_u64().unwrap();
    let victim = (1..=3u64).find(|n| *n != leader).unwrap();
    let ids: Vec<String> = (0..2)
        .map(|_| spawn(&cl, &def, &["--node", &victim.to_string()]))
        .collect();
    let c = cl.wait_containers(T, "2 running on the victim", |c| {
        ids.iter().all(|id| running_on(c, id).is_some())
    });
    let pids: Vec<i64> = ids.iter().map(|id| running_on(&c, id).unwrap().1).collect();
    // Watch the committed changes while draining: the stream is live once a change
    // committed after it started shows up in it.
    let stream = EventStream::start(&cl);
    let probe = cl.scratch.path.join("probe.watch");
    std::fs::write(
        &probe,
        "haconiwa.watch(|w| { w.watch(\"timer\", #{ every: 86400000 }, |e| { }); });",
    )
    .unwrap();
    cl.ok(&["watch", "apply", probe.to_str().unwrap()]);
    stream.wait_for("rule_applied");
    cl.ok(&["watch", "rm", "probe"]);
    // `self`: the member asked drains itself (what the systemd unit does at shutdown).
    let o = cl.run_on(victim as usize, &["cluster", "drain", "self"]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{o:?}");
    assert!(
        out.contains(&format!("node {victim} drained; 2 container(s) moved")),
        "{out}"
    );
    let c = cl.wait_containers(T, "copies running elsewhere, originals stopped", |c| {
        let elsewhere = c
            .iter()
            .filter(|x| x["state"] == "running" && x["node"] != victim)
            .count();
        elsewhere == 2
            && ids.iter().all(|id| {
                c.iter()
                    .any(|x| x["id"] == id.as_str() && x["state"] == "exited")
            })
    });
    assert_eq!(running(&c).len(), 2);
    // The originals are really gone from the victim.
    for pid in &pids {
        assert!(!pid_alive(*pid), "drained container {pid} still runs");
    }
    let s = cl.status().unwrap();
    let m = s["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == victim)
        .unwrap()
        .clone();
    assert_eq!(m["state"], "draining", "{s:#}");
    // Nothing new goes to a draining node.
    let id = spawn(&cl, &def, &[]);
    let c = cl.wait_containers(T, "running", |c| running_on(c, &id).is_some());
    assert_ne!(running_on(&c, &id).unwrap().0, victim);
    // The leader cannot remove itself; it says how to proceed.
    let leader = cl.wait_leader(T);
    let o = cl.run(&["cluster", "leave", &leader.to_string()]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is the leader and cannot remove itself"),
        "{o:?}"
    );
    // Leave: out of the Raft membership for good.
    let out = cl.ok(&["cluster", "leave", &victim.to_string()]);
    assert!(out.contains(&format!("node {victim} left")), "{out}");
    let s = cl.wait(T, "the node left", |s| {
        s["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == victim && m["state"] == "left" && m["role"] == "none")
    });
    let voters = s["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "voter")
        .count();
    assert_eq!(voters, 2, "{s:#}");
    let o = cl.run(&["cluster", "drain", &victim.to_string()]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("has left"),
        "{o:?}"
    );
    let kinds = stream.stop();
    for k in [
        "node_draining",
        "container_spawned",
        "container_stopping",
        "container_exited",
        "node_left",
    ] {
        assert!(kinds.iter().any(|x| x == k), "no {k} event in {kinds:?}");
    }
}

/// `haconiwa events --json` in the background, its lines collected as they come.
struct EventStream {
    child: std::process::Child,
    kinds: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl EventStream {
    fn start(cl: &Cluster) -> EventStream {
        let mut child = cl
            .cli()
            .args(["events", "--json"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let kinds = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let k = kinds.clone();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(e) = serde_json::from_str::<Value>(&line) {
                    k.lock()
                        .unwrap()
                        .push(e["kind"].as_str().unwrap_or("").to_string());
                }
            }
        });
        EventStream {
            child,
            kinds,
            reader: Some(reader),
        }
    }

    /// Waits (bounded) until an event of `kind` arrived.
    fn wait_for(&self, kind: &str) {
        let deadline = std::time::Instant::now() + T;
        while !self.kinds.lock().unwrap().iter().any(|k| k == kind) {
            assert!(
                std::time::Instant::now() < deadline,
                "no {kind} event on the stream"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Ends the stream; the kinds seen.
    fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let kinds = self.kinds.lock().unwrap().clone();
        kinds
    }
}

fn running(c: &[Value]) -> Vec<&Value> {
    c.iter().filter(|x| x["state"] == "running").collect()
}

#[test]
fn a_supervisor_whose_binary_file_was_replaced_still_launches_containers() {
    // An in-place upgrade (or a rebuild) replaces the file a running supervisor was
    // started from: its helpers must still be its own binary, not whatever the path
    // names now (or nothing).
    let mut cl = Cluster::new("cl-exe", &[]);
    let copy = cl.scratch.path.join("haconiwa-copy");
    std::fs::copy(crate::common::BIN, &copy).unwrap();
    cl.bin = copy.clone();
    cl.add_node(&[]);
    // A leader places only on members it has registered and heard from: wait for that,
    // not just for the leader (which spawned too early about one time in four).
    cl.wait(T, "the member registered and up", |s| {
        s["leader"].as_u64().unwrap_or(0) != 0
            && s["members"]
                .as_array()
                .is_some_and(|m| m.len() == 1 && m[0]["state"] == "up")
    });
    std::fs::remove_file(&copy).unwrap();
    std::fs::write(&copy, "#!/bin/sh\nexit 3\n").unwrap();
    let def = cl.haco("upgraded", "[\"/bin/sleep\", \"3600\"]");
    let id = spawn(&cl, &def, &[]);
    cl.wait_containers(T, "the container running", |c| {
        c.iter()
            .any(|x| x["id"] == id.as_str() && x["state"] == "running")
    });
    cl.ok(&["stop", &id]);
}
