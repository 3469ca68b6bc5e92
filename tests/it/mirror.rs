//! The etcd mirror against a real etcd (Debian's etcd-server) and a real 3-node cluster:
//! the state readable with `etcdctl`, rules registered through etcd, outages that change
//! nothing for the cluster, the fenced writer.

use crate::common::cluster::Cluster;
use crate::common::etcd::Etcd;
use crate::common::state_digest;
use serde_json::Value;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(40);
const PREFIX: &str = "/haconiwa/test";

/// A 3-node cluster mirroring to a fresh etcd on its own loopback address.
fn cluster_with_etcd(tag: &str) -> (Cluster, Etcd) {
    let mut cl = Cluster::new(tag, &[]);
    // etcd on an address of the cluster's own block, beside its supervisors (.1-.3).
    let etcd = Etcd::start(&format!("{}.200", cl.net), cl.scratch.path.join("etcd"));
    cl.common_flags = vec![
        "--etcd-endpoint".into(),
        etcd.endpoint.clone(),
        "--etcd-prefix".into(),
        PREFIX.into(),
    ];
    cl.start_three();
    (cl, etcd)
}

fn key(rest: &str) -> String {
    format!("{PREFIX}/v1/{rest}")
}

/// Waits until `cond` holds, naming `what` and the mirror's status when it does not.
fn wait_for(cl: &Cluster, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let m = cl.run(&["mirror", "status", "--json"]);
    panic!(
        "timed out after {timeout:?} waiting for {what}; mirror status: {}{}\n{}",
        String::from_utf8_lossy(&m.stdout),
        String::from_utf8_lossy(&m.stderr),
        cl.logs_tail()
    );
}

fn mirror_status(cl: &Cluster) -> Value {
    serde_json::from_str(&cl.ok(&["mirror", "status", "--json"])).expect("mirror status --json")
}

/// The container ids the cluster holds.
fn container_ids(cl: &Cluster) -> Vec<String> {
    let mut ids: Vec<String> = cl
        .containers()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// The container ids under `containers/` in etcd.
fn etcd_container_ids(etcd: &Etcd) -> Vec<String> {
    let dir = key("containers/");
    let mut ids: Vec<String> = etcd
        .keys(&dir)
        .iter()
        .map(|k| k.trim_start_matches(&dir).to_string())
        .collect();
    ids.sort();
    ids
}

/// etcd holds exactly the state: `meta/applied` names the leader's applied index and
/// its state digest, and the containers match.
fn prefix_equals_state(cl: &Cluster, etcd: &Etcd) -> bool {
    let Some(s) = cl.status() else { return false };
    let Some(applied) = etcd.json(&key("meta/applied")) else {
        return false;
    };
    let Some(digest) = state_digest(&s) else {
        return false;
    };
    applied["index"] == s["last_applied"]
        && applied["state_digest"] == digest
        && etcd_container_ids(etcd) == container_ids(cl)
}

fn keep5() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/keep5.watch")).unwrap()
}

fn really_running(cl: &Cluster) -> usize {
    cl.real_running().values().sum()
}

fn running_sleeper(cl: &Cluster) -> String {
    cl.containers()
        .iter()
        .find(|c| c["definition"] == "sleeper" && c["state"] == "running")
        .map(|c| c["id"].as_str().unwrap().to_string())
        .expect("a running sleeper")
}

fn rules_listed(cl: &Cluster) -> Vec<String> {
    let v: Value = serde_json::from_str(&cl.ok(&["watch", "ls", "--json"])).unwrap();
    let list = if v.is_array() { v } else { v["rules"].clone() };
    list.as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_state_is_readable_in_etcd_and_rules_registered_there_run() {
    let (cl, etcd) = cluster_with_etcd("mi-state");

    // The state, readable with etcdctl, after a spawn.
    let haco = cl.haco("web", "[\"/bin/sleep\", \"3600\"]");
    cl.ok(&["spawn", haco.to_str().unwrap()]);
    let ids = container_ids(&cl);
    assert_eq!(ids.len(), 1);
    wait_for(
        &cl,
        "the spawned container in etcd",
        Duration::from_secs(5),
        || {
            etcd.json(&key(&format!("containers/{}", ids[0])))
                .is_some_and(|c| c["observed"]["running"]["pid"].is_number())
        },
    );
    let keys = etcd.keys(&format!("{PREFIX}/v1/"));
    for k in [
        "nodes/1",
        "nodes/2",
        "nodes/3",
        "meta/applied",
        "meta/writer",
        "meta/writer-term",
    ] {
        assert!(keys.contains(&key(k)), "no {k} in etcd: {keys:#?}");
    }
    assert!(
        keys.iter().any(|k| k.starts_with(&key("definitions/"))),
        "no definition in etcd: {keys:#?}"
    );
    let node1 = etcd.json(&key("nodes/1")).unwrap();
    assert_eq!(node1["id"], 1, "{node1}");
    wait_for(
        &cl,
        "the prefix to equal the state",
        Duration::from_secs(5),
        || prefix_equals_state(&cl, &etcd),
    );
    let writer = etcd.json(&key("meta/writer")).unwrap();
    let leader = cl.wait_leader(T);
    assert_eq!(writer["node"], leader, "{writer}");
    let m = mirror_status(&cl);
    assert_eq!(m["connected"], true, "{m}");
    assert_eq!(m["writer"], true, "{m}");
    cl.ok(&["stop", &ids[0]]);

    // A rule put in etcd, with the definition it names, runs like `watch apply`.
    etcd.put(
        &key("definitions-in/sleeper.haco"),
        &crate::common::long_sleeper(),
    );
    etcd.put(&key("rules-in/keep5"), &keep5());
    cl.wait_containers(T, "5 sleepers from the etcd rule", |c| {
        c.iter()
            .filter(|x| x["definition"] == "sleeper" && x["state"] == "running")
            .count()
            == 5
    });
    wait_for(&cl, "5 sleepers really running", T, || {
        really_running(&cl) == 5
    });
    assert_eq!(rules_listed(&cl), ["keep5"]);
    // It keeps its count: a sleeper stopped is replaced.
    let first = running_sleeper(&cl);
    cl.ok(&["stop", &first]);
    cl.wait_containers(T, "the stopped sleeper replaced", |c| {
        c.iter()
            .any(|x| x["id"] == first.as_str() && x["state"] == "exited")
            && c.iter()
                .filter(|x| x["definition"] == "sleeper" && x["state"] == "running")
                .count()
                == 5
    });
    wait_for(&cl, "5 sleepers really running again", T, || {
        really_running(&cl) == 5
    });
    wait_for(&cl, "the rule's status key", Duration::from_secs(5), || {
        etcd.json(&key("rules-in-status/keep5"))
            .is_some_and(|s| s["ok"] == true)
    });
    assert!(etcd.get(&key("rules/keep5")).is_some());

    // A malformed rule: its status key and `watch ls` say why; nothing else changes.
    etcd.put(
        &key("rules-in/broken"),
        "haconiwa.watch(|w| {\n  w.watch(\"cluster\", |event| {\n",
    );
    wait_for(
        &cl,
        "the broken rule's status",
        Duration::from_secs(5),
        || {
            etcd.json(&key("rules-in-status/broken"))
                .is_some_and(|s| s["ok"] == false)
        },
    );
    let status = etcd.json(&key("rules-in-status/broken")).unwrap();
    let err = status["error"].as_str().unwrap();
    assert!(
        err.contains(&format!("etcd:{PREFIX}/v1/rules-in/broken:")),
        "the error names the key and position: {err}"
    );
    let ls = cl.ok(&["watch", "ls"]);
    assert!(
        ls.contains("broken") && ls.contains("refused from etcd"),
        "{ls}"
    );
    assert_eq!(
        rules_listed(&cl),
        ["keep5"],
        "a broken rule changes nothing"
    );
    assert_eq!(really_running(&cl), 5);

    // Deleting the key removes the rule: a container stopped now is not replaced.
    etcd.ok(&["del", &key("rules-in/keep5")]);
    wait_for(&cl, "keep5 removed", Duration::from_secs(5), || {
        rules_listed(&cl).is_empty()
    });
    assert!(
        etcd.get(&key("rules/keep5")).is_none(),
        "rules/keep5 still mirrored"
    );
    let victim = cl.a_running_container();
    cl.ok(&["stop", &victim]);
    wait_for(&cl, "4 really running", T, || really_running(&cl) == 4);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(really_running(&cl), 4, "the deleted rule still acted");
    let stopped: Vec<String> = container_ids(&cl);
    for id in stopped {
        let _ = cl.run(&["stop", &id]);
    }
    wait_for(&cl, "all stopped", T, || really_running(&cl) == 0);
}

#[test]
fn etcd_outages_never_stop_the_cluster_and_end_in_a_resync() {
    let (cl, mut etcd) = cluster_with_etcd("mi-outage");
    let dir = cl.scratch.path.join("rule");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("sleeper.haco"), crate::common::long_sleeper()).unwrap();
    std::fs::write(dir.join("keep5.watch"), keep5()).unwrap();
    cl.ok(&["watch", "apply", dir.join("keep5.watch").to_str().unwrap()]);
    wait_for(&cl, "5 sleepers really running", T, || {
        really_running(&cl) == 5
    });
    wait_for(
        &cl,
        "the prefix to equal the state",
        Duration::from_secs(5),
        || prefix_equals_state(&cl, &etcd),
    );

    // etcd killed: the count holds, spawns work, the status says the mirror is down.
    etcd.kill9();
    let haco = cl.haco("extra", "[\"/bin/sleep\", \"3600\"]");
    let started = Instant::now();
    cl.ok(&["spawn", haco.to_str().unwrap()]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a spawn waited for etcd: {:?}",
        started.elapsed()
    );
    let victim = running_sleeper(&cl);
    cl.ok(&["stop", &victim]);
    wait_for(
        &cl,
        "keep5 replaced the stopped one without etcd",
        T,
        || {
            cl.containers()
                .iter()
                .filter(|c| c["definition"] == "sleeper" && c["state"] == "running")
                .count()
                == 5
                && really_running(&cl) == 6
        },
    );
    wait_for(
        &cl,
        "the mirror reported down with a lag",
        Duration::from_secs(15),
        || {
            let m = mirror_status(&cl);
            m["connected"] == false
                && m["lag_entries"].as_u64().unwrap_or(0) > 0
                && m["last_error"] != ""
        },
    );
    let human = cl.ok(&["cluster", "status"]);
    assert!(human.contains("mirror: DOWN"), "{human}");

    // etcd back: resynced within 2 s, the prefix equals the state.
    etcd.restart();
    let back = Instant::now();
    wait_for(
        &cl,
        "the prefix to equal the state after the outage",
        Duration::from_secs(10),
        || prefix_equals_state(&cl, &etcd),
    );
    let took = back.elapsed();
    assert!(took <= Duration::from_secs(2), "resync took {took:?}");
    let m = mirror_status(&cl);
    assert_eq!(m["connected"], true, "{m}");
    assert!(m["resyncs"].as_u64().unwrap() >= 2, "{m}");

    // The cluster cut from etcd while the operator changes a rule and compacts the
    // history away: on return the leader reads everything again.
    let resyncs = m["resyncs"].as_u64().unwrap();
    etcd.put(
        &key("definitions-in/sleeper.haco"),
        &crate::common::long_sleeper(),
    );
    let keep3 = keep5().replace("< 5", "< 3");
    assert_ne!(
        keep3,
        keep5(),
        "the example keep5 changed: update this test"
    );
    etcd.put(&key("rules-in/keep3"), &keep3);
    wait_for(&cl, "keep3 registered", Duration::from_secs(5), || {
        rules_listed(&cl).contains(&"keep3".to_string())
    });
    etcd.cut_cluster_port();
    wait_for(
        &cl,
        "the mirror reported down",
        Duration::from_secs(15),
        || mirror_status(&cl)["connected"] == false,
    );
    etcd.ok(&["del", &key("rules-in/keep3")]);
    etcd.put(&key("rules-in/other"), "garbage(");
    etcd.ok(&["del", &key("rules-in/other")]);
    let rev = etcd.revision();
    etcd.ok(&["compact", &rev.to_string()]);
    assert!(
        rules_listed(&cl).contains(&"keep3".to_string()),
        "during the outage the committed rules stay"
    );
    etcd.reconnect();
    wait_for(
        &cl,
        "keep3 removed after the compacted outage",
        Duration::from_secs(15),
        || !rules_listed(&cl).contains(&"keep3".to_string()),
    );
    let m = mirror_status(&cl);
    assert!(m["resyncs"].as_u64().unwrap() > resyncs, "{m}");
    let leader = cl.wait_leader(T) as usize;
    assert!(
        cl.log(leader)
            .contains("compacted away; reading the rule keys again"),
        "the leader did not read everything after the compaction:\n{}",
        cl.logs_tail()
    );
    assert!(
        rules_listed(&cl).contains(&"keep5".to_string()),
        "keep5 (applied with watch apply) stays"
    );
    drop(etcd);
    cl.ok(&["watch", "rm", "keep5"]);
    for id in container_ids(&cl) {
        let _ = cl.run(&["stop", &id]);
    }
    wait_for(&cl, "all stopped", T, || really_running(&cl) == 0);
}

#[test]
fn a_new_leader_takes_the_writer_role_and_the_old_term_is_fenced() {
    let (mut cl, etcd) = cluster_with_etcd("mi-fence");
    let old_leader = cl.wait_leader(T);
    wait_for(&cl, "the first writer", Duration::from_secs(5), || {
        etcd.json(&key("meta/writer"))
            .is_some_and(|w| w["node"] == old_leader)
    });
    let old_term: u64 = etcd.get(&key("meta/writer-term")).unwrap().parse().unwrap();
    assert_eq!(etcd.get(&key("meta/writer-term")).unwrap().len(), 20);

    cl.kill9(old_leader as usize);
    let deadline = Instant::now() + T;
    let new_leader = loop {
        if let Some(s) = cl.status() {
            let l = s["leader"].as_u64().unwrap_or(0);
            if l != 0 && l != old_leader {
                break l;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no new leader\n{}",
            cl.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    wait_for(
        &cl,
        "the new leader to write",
        Duration::from_secs(5),
        || {
            etcd.json(&key("meta/writer"))
                .is_some_and(|w| w["node"] == new_leader)
        },
    );
    let new_term: u64 = etcd.get(&key("meta/writer-term")).unwrap().parse().unwrap();
    assert!(new_term > old_term, "{new_term} <= {old_term}");

    // The old writer's term, on a connection of its own: its claim and its writes are
    // refused by etcd.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use haconiwa::mirror::etcd::{Etcd as Writer, MirrorError};
        use haconiwa::mirror::layout::{Layout, Op};
        let cfg = haconiwa::supervisor::config::EtcdConfig {
            endpoints: vec![etcd.operator.clone()],
            prefix: PREFIX.into(),
            tls: None,
            user: None,
            resync: Duration::from_secs(300),
        };
        let layout = Layout::new(PREFIX);
        let mut w = Writer::connect(&cfg, &layout).await.unwrap();
        let lease = w.grant_lease(10).await.unwrap();
        let claim = w.claim(&layout, old_leader, old_term, lease, 0).await;
        assert!(
            matches!(claim, Err(MirrorError::Fenced { .. })),
            "{claim:?}"
        );
        w.assume(old_term);
        let late = w
            .write(vec![Op::Put(
                layout.container("late-write"),
                b"{}".to_vec(),
            )])
            .await;
        match late {
            Err(MirrorError::Fenced { holder, .. }) => {
                assert_eq!(holder, format!("{new_term:020}"))
            }
            other => panic!("a late write of term {old_term} was not refused: {other:?}"),
        }
    });
    assert!(etcd.get(&key("containers/late-write")).is_none());

    // The old leader comes back as a follower and never writes again.
    cl.start(old_leader as usize);
    // Back as a follower that has caught up with the leader's log.
    wait_for(&cl, "the old leader caught up", T, || {
        let (Some(old), Some(now)) = (cl.status_of(old_leader as usize), cl.status()) else {
            return false;
        };
        old["leader"] == new_leader && old["last_applied"].as_u64() >= now["commit_index"].as_u64()
    });
    let w = etcd.json(&key("meta/writer")).unwrap();
    assert_eq!(w["node"], new_leader, "{w}");
    wait_for(
        &cl,
        "the prefix to equal the state",
        Duration::from_secs(10),
        || prefix_equals_state(&cl, &etcd),
    );
}

#[test]
fn the_mirror_talks_tls_to_an_etcd_that_requires_client_certificates() {
    // Certificates from `haconiwa tls`: etcd's (its address), and a client one for the
    // supervisors and the operator's etcdctl.
    let mut cl = Cluster::new("mi-tls", &[]);
    let pki = cl.scratch.path.join("pki");
    let ip = format!("{}.200", cl.net);
    let d = pki.to_str().unwrap().to_string();
    let tls = |args: &[&str]| {
        let o = std::process::Command::new(crate::common::BIN)
            .arg("tls")
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    tls(&["ca", "create", "--dir", &d]);
    tls(&[
        "cert", "create", "--node", "1", "--ip", &ip, "--ca-dir", &d, "--dir", &d,
    ]);
    tls(&[
        "cert", "create", "--client", "mirror", "--ca-dir", &d, "--dir", &d,
    ]);
    let f = |n: &str| pki.join(n);
    let etcd = Etcd::start_with(
        &ip,
        cl.scratch.path.join("etcd"),
        Some([f("ca.pem"), f("node-1.pem"), f("node-1-key.pem")]),
    );
    let s = |p: std::path::PathBuf| p.display().to_string();
    cl.common_flags = vec![
        "--etcd-endpoint".into(),
        etcd.endpoint.clone(),
        "--etcd-prefix".into(),
        PREFIX.into(),
        "--etcd-ca".into(),
        s(f("ca.pem")),
        "--etcd-cert".into(),
        s(f("mirror.pem")),
        "--etcd-key".into(),
        s(f("mirror-key.pem")),
    ];
    cl.add_node(&[]);
    let leader = cl.wait_leader(T);
    wait_for(&cl, "the writer over TLS", Duration::from_secs(10), || {
        etcd.json(&key("meta/writer"))
            .is_some_and(|w| w["node"] == leader)
    });
    let m = mirror_status(&cl);
    assert_eq!(m["connected"], true, "{m}");
    assert!(etcd.keys(&key("nodes/")).contains(&key("nodes/1")));
}
