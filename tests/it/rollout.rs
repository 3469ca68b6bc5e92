//! Rolling updates on a real 3-node cluster: a rule keeps 5 web servers with an HTTP
//! check; a new version rolls out 2 at a time (each new copy queued until the old one
//! it replaces has ended), the leader killed mid-way; a version that never turns
//! healthy fails within its deadline and is reverted. Never more than 5 really run, by
//! the hosts' cgroups.

use crate::common::cluster::Cluster;
use crate::common::hosts::TruthSampler;
use serde_json::Value;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

const RULE: &str = r#"haconiwa.watch(|w| {
    w.update(#{ max_parallel: 2, min_healthy_time: "500ms", healthy_deadline: "4s", auto_revert: true });
    w.watch("cluster", |event| {
        let n = event.cluster.count("web");
        if n < 5 {
            haconiwa.spawn(#{ haco: "web.haco", count: 5 - n });
        }
    });
});
"#;

/// The web server, version `v`, answering its check at `path`.
fn web(v: u32, path: &str) -> String {
    format!(
        "haconiwa.define(|c| {{\n  c.name = `web-${{uuid_short()}}`;\n  c.init_command = [\"/bin/sh\", \"-c\", \"mkdir -p /www && echo {v} > /www/healthz && exec httpd -f -p 8080 -h /www\"];\n  c.chroot_to(\"{}\");\n  c.namespace.unshare([\"uts\", \"ipc\", \"pid\", \"mount\", \"net\"]);\n  c.env(\"VERSION\", \"{v}\");\n  c.health(#{{ http: \"{path}\", port: 8080, interval: \"200ms\", timeout: \"500ms\", retries: 2 }});\n}});\n",
        crate::common::busybox_rootfs().display()
    )
}

fn apply(cl: &Cluster, v: u32, path: &str) {
    let dir = cl.scratch.path.join("rule");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("web.haco"), web(v, path)).unwrap();
    std::fs::write(dir.join("web.watch"), RULE).unwrap();
    cl.ok(&["watch", "apply", dir.join("web.watch").to_str().unwrap()]);
}

fn active(c: &[Value]) -> Vec<&Value> {
    c.iter()
        .filter(|x| {
            x["desired"] == "running"
                && !["exited", "lost", "pull_failed"].contains(&x["state"].as_str().unwrap_or(""))
        })
        .collect()
}

fn rule_of(cl: &Cluster) -> Value {
    let ls: Value = serde_json::from_str(&cl.ok(&["watch", "ls", "--json"])).unwrap();
    ls.as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "web"))
        .cloned()
        .unwrap_or_else(|| panic!("no rule web in {ls:#}"))
}

/// Waits until the 5 copies all run one digest, healthy; returns it.
fn five_healthy_of_one_version(cl: &Cluster, what: &str) -> String {
    let c = cl.wait_containers(T, what, |c| {
        let a = active(c);
        a.len() == 5
            && a.iter().all(|x| x["health"] == "healthy")
            && a.iter().all(|x| x["digest"] == a[0]["digest"])
    });
    active(&c)[0]["digest"].as_str().unwrap().to_string()
}

#[test]
fn a_rollout_replaces_two_at_a_time_survives_a_leader_kill_and_a_bad_version_is_reverted() {
    let mut cl = Cluster::three("rollout", &[]);
    apply(&cl, 1, "/healthz");
    let v1 = five_healthy_of_one_version(&cl, "5 healthy copies of v1");

    // v2: replaced 2 at a time, the leader killed once the first replacements are placed.
    let sampler = TruthSampler::start_for(cl.cgroup_parent.clone());
    apply(&cl, 2, "/healthz");
    let started = Instant::now();
    let mut most_queued = 0;
    let mut killed = None;
    let v2 = loop {
        let c = cl.try_containers().unwrap_or_default();
        let queued = c.iter().filter(|x| x["state"] == "queued").count();
        most_queued = most_queued.max(queued);
        let a = active(&c);
        let new = a.iter().filter(|x| x["digest"] != v1.as_str()).count();
        if killed.is_none() && new >= 2 {
            let leader = cl.wait_leader(T) as usize;
            cl.kill9(leader);
            killed = Some(leader);
        }
        if a.len() == 5 && new == 5 && a.iter().all(|x| x["health"] == "healthy") {
            break a[0]["digest"].as_str().unwrap().to_string();
        }
        assert!(
            started.elapsed() < T * 2,
            "v2 not rolled out: {c:#?}\n{}",
            cl.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let rolled = started.elapsed();
    assert_ne!(v2, v1);
    assert!(killed.is_some(), "the leader was never killed mid-rollout");
    assert!(
        most_queued <= 2,
        "{most_queued} replacements queued at once (max_parallel 2)"
    );
    let rule = rule_of(&cl);
    assert_eq!(rule["containers"]["outdated"], 0, "{rule:#}");
    eprintln!("v2 rolled out over 5 copies in {rolled:?} (leader {killed:?} killed mid-way)");

    // v3 answers 404: its first copies turn unhealthy and are stopped by their nodes;
    // the rollout fails and the rule goes back to v2, replacing the failed copies first.
    apply(&cl, 3, "/nope");
    let c = cl.wait_containers(T, "a v3 copy placed", |c| {
        active(c).iter().any(|x| x["digest"] != v2.as_str())
    });
    let v3 = active(&c)
        .iter()
        .find(|x| x["digest"] != v2.as_str())
        .map(|x| x["digest"].as_str().unwrap().to_string())
        .unwrap();
    let placed = started.elapsed();
    let back = five_healthy_of_one_version(&cl, "5 healthy copies after the revert");
    eprintln!(
        "v3 placed {:?} after v2 began; back on v2 {:?} after",
        placed,
        started.elapsed()
    );
    assert_eq!(back, v2, "reverted to another version than v2");
    let rule = rule_of(&cl);
    let e = rule["last_error"].as_str().unwrap_or_default();
    assert!(
        e.starts_with(&format!("rollout of web.haco to {} failed: ", &v3[..12]))
            && e.contains("ended (unhealthy: http :8080/nope failed 2 times in a row")
            && e.ends_with(&format!("reverted to {}", &v2[..12])),
        "{rule:#}"
    );
    let (most, twice, samples) = sampler.finish();
    assert!(samples > 10);
    assert!(
        most <= 5,
        "{most} copies really ran at once during the rollouts"
    );
    assert!(twice.is_empty(), "{twice:?}");
}
