//! Rolling updates on a real 3-node cluster: a rule keeps 5 web servers with an HTTP
//! check; a new version rolls out 2 at a time (each new copy queued until the old one
//! it replaces has ended), the leader killed mid-way; a version that never turns
//! healthy fails within its deadline and is reverted to the last stable version; the
//! versions are in `watch history` (with what changed), `watch rollback` brings an
//! older one back and refuses one the same as what runs. Never more than 5 really run,
//! by the hosts' cgroups. Start-first (`max_surge`): never more than 5 + 2, a node cut
//! off mid-way fences its copies while the rollout goes on, and one with the leader
//! killed mid-way goes on under the next leader.

use crate::common::cluster::Cluster;
use crate::common::hosts::TruthSampler;
use serde_json::Value;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

/// A rule keeping 5 copies of web.haco with this update policy.
fn rule(update: &str) -> String {
    format!(
        "haconiwa.watch(|w| {{\n    w.update({update});\n    w.watch(\"cluster\", |event| {{\n        let n = event.cluster.count(\"web\");\n        if n < 5 {{\n            haconiwa.spawn(#{{ haco: \"web.haco\", count: 5 - n }});\n        }}\n    }});\n}});\n"
    )
}

/// Stop-first, 2 at a time, reverted on failure.
const STOP_FIRST: &str =
    r#"#{ max_parallel: 2, min_healthy_time: "500ms", healthy_deadline: "4s", auto_revert: true }"#;
/// Start-first: new copies run beside the old ones, at most 2 more than 5.
const SURGE: &str = r#"#{ max_parallel: 2, max_surge: 2, min_healthy_time: "500ms", healthy_deadline: "4s", auto_revert: true }"#;
/// One canary beside the 5, held until promoted; then the rest, stop-first.
const CANARY: &str =
    r#"#{ max_parallel: 2, canary: 1, min_healthy_time: "500ms", healthy_deadline: "4s" }"#;

/// The web server, version `v`, answering its check at `path`.
fn web(v: u32, path: &str) -> String {
    format!(
        "haconiwa.define(|c| {{\n  c.name = `web-${{uuid_short()}}`;\n  c.init_command = [\"/bin/sh\", \"-c\", \"mkdir -p /www && echo {v} > /www/healthz && exec httpd -f -p 8080 -h /www\"];\n  c.chroot_to(\"{}\");\n  c.namespace.unshare([\"uts\", \"ipc\", \"pid\", \"mount\", \"net\"]);\n  c.env(\"VERSION\", \"{v}\");\n  c.health(#{{ http: \"{path}\", port: 8080, interval: \"200ms\", timeout: \"500ms\", retries: 2 }});\n}});\n",
        crate::common::busybox_rootfs().display()
    )
}

fn apply(cl: &Cluster, v: u32, path: &str) {
    apply_rule(cl, v, path, &rule(STOP_FIRST))
}

fn apply_rule(cl: &Cluster, v: u32, path: &str, rule: &str) {
    let dir = cl.scratch.path.join("rule");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("web.haco"), web(v, path)).unwrap();
    std::fs::write(dir.join("web.watch"), rule).unwrap();
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

/// Waits until the rule runs `version` and its rollout is `status`.
fn wait_rollout(cl: &Cluster, version: u64, status: &str) -> Value {
    let start = Instant::now();
    loop {
        let r = rule_of(cl);
        if r["version"] == version && r["rollout"] == status {
            return r;
        }
        assert!(
            start.elapsed() < T,
            "rule web not at version {version} {status}: {r:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until 5 copies run, healthy, each of a digest `which` takes.
fn five_healthy_where(cl: &Cluster, what: &str, which: impl Fn(&str) -> bool) {
    cl.wait_containers(T, what, |c| {
        let a = active(c);
        a.len() == 5
            && a.iter().all(|x| {
                x["health"] == "healthy" && which(x["digest"].as_str().unwrap_or_default())
            })
    });
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
    wait_rollout(&cl, 1, "stable");

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
    let rule = wait_rollout(&cl, 2, "stable");
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
    let rule = wait_rollout(&cl, 4, "stable");
    let e = rule["last_error"].as_str().unwrap_or_default();
    assert!(
        e.starts_with("version 3 failed: ")
            && e.contains("ended (unhealthy: http :8080/nope failed 2 times in a row")
            && e.ends_with("reverted: version 4 brings back version 2"),
        "{rule:#}"
    );

    // The history: what each version was, how it went, what changed.
    let h: Value = serde_json::from_str(&cl.ok(&["watch", "history", "web", "--json"])).unwrap();
    let h = h.as_array().unwrap();
    let got: Vec<(u64, &str, Option<u64>)> = h
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap(),
                v["status"].as_str().unwrap(),
                v["rollback_of"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (1, "stable", None),
            (2, "stable", None),
            (3, "failed", None),
            (4, "stable", Some(2))
        ],
        "{h:#?}"
    );
    assert_eq!(h[2]["definitions"]["web.haco"], v3.as_str());
    assert!(h[2]["reason"].as_str().unwrap().contains("unhealthy"));
    let changes: Vec<&str> = h[1]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        changes[0].starts_with("--- web.haco: ")
            && changes
                .iter()
                .any(|l| l.starts_with('-') && l.contains("echo 1 >"))
            && changes
                .iter()
                .any(|l| l.starts_with('+') && l.contains("echo 2 >")),
        "{changes:#?}"
    );
    let text = cl.ok(&["watch", "history", "web"]);
    eprintln!("{text}");
    assert!(
        text.contains("version 3 (from version 2):") && text.contains("/nope"),
        "{text}"
    );

    // Back to v1 by hand (the newest stable version that differs from the current
    // one); then rolling back to what runs says so and changes nothing.
    let out = cl.ok(&["watch", "rollback", "web"]);
    assert!(out.contains("version 5 brings back version 1"), "{out}");
    five_healthy_where(&cl, "5 healthy copies of v1 after the rollback", |d| {
        d == v1
    });
    wait_rollout(&cl, 5, "stable");
    let same = cl.run(&["watch", "rollback", "web", "1"]);
    let err = String::from_utf8_lossy(&same.stderr);
    assert!(
        !same.status.success() && err.contains("nothing to roll back"),
        "{err}"
    );
    assert_eq!(rule_of(&cl)["version"], 5);
    let ((most, twice, samples), worst) = sampler.finish_explained();
    assert!(samples > 10);
    assert!(
        most <= 5,
        "{most} copies really ran at once during the rollouts: {worst:#?}"
    );
    assert!(twice.is_empty(), "{twice:?}");
}

#[test]
fn a_surge_rollout_runs_at_most_n_plus_surge_past_a_cut_off_node_and_a_leader_kill() {
    let mut cl = Cluster::three("rollout-surge", &[]);
    apply_rule(&cl, 1, "/healthz", &rule(SURGE));
    let v1 = five_healthy_of_one_version(&cl, "5 healthy copies of v1");
    wait_rollout(&cl, 1, "stable");

    // v2 start-first; once the first new copies are placed, a follower holding copies
    // is cut off: its copies are fenced and replaced, the rollout goes on.
    let sampler = TruthSampler::start_for(cl.cgroup_parent.clone());
    apply_rule(&cl, 2, "/healthz", &rule(SURGE));
    let started = Instant::now();
    let mut most_retiring = 0;
    let mut cut = None;
    loop {
        let c = cl.try_containers().unwrap_or_default();
        most_retiring = most_retiring.max(c.iter().filter(|x| x["desired"] == "retiring").count());
        let a = active(&c);
        let new = a.iter().filter(|x| x["digest"] != v1.as_str()).count();
        if cut.is_none() && new >= 1 {
            let leader = cl.wait_leader(T);
            let victim = (1..=3u64)
                .filter(|n| *n != leader)
                .max_by_key(|n| a.iter().filter(|x| x["node"] == *n).count())
                .unwrap();
            cl.cut_off(victim as usize);
            cut = Some(victim);
        }
        if a.len() == 5
            && new == 5
            && a.iter()
                .all(|x| x["health"] == "healthy" && x["node"] != cut.unwrap_or(0))
        {
            break;
        }
        assert!(
            started.elapsed() < T * 2,
            "v2 not rolled out: {c:#?}\n{}",
            cl.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let ls = wait_rollout(&cl, 2, "stable");
    assert_eq!(ls["containers"]["outdated"], 0, "{ls:#}");
    eprintln!(
        "v2 rolled out start-first in {:?} (node {cut:?} cut off mid-way; at most {most_retiring} retiring at once)",
        started.elapsed()
    );
    assert!(
        most_retiring >= 1,
        "no old copy ever retired: not start-first"
    );
    assert!(
        most_retiring <= 2,
        "{most_retiring} retiring at once (max_surge 2)"
    );
    // The cut-off node fenced its own copies (its lease ran out).
    let victim = cut.unwrap();
    assert_eq!(
        cl.real_running().get(&victim).copied().unwrap_or(0),
        0,
        "copies still run on the cut-off node {victim}"
    );
    cl.heal();
    cl.wait(T, "the cut-off node up again", |s| {
        s["members"]
            .as_array()
            .is_some_and(|m| m.iter().all(|x| x["state"] == "up"))
    });

    // v3 start-first, the leader killed once its first new copies exist: the new leader
    // goes on from the replicated state (the retiring copies and their replacements).
    apply_rule(&cl, 3, "/healthz", &rule(SURGE));
    let v2 = active(&cl.containers())[0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let started = Instant::now();
    let mut killed = None;
    loop {
        let c = cl.try_containers().unwrap_or_default();
        let a = active(&c);
        let new = a
            .iter()
            .filter(|x| x["digest"] != v2.as_str() && x["digest"] != v1.as_str())
            .count();
        if killed.is_none() && new >= 1 {
            let leader = cl.wait_leader(T) as usize;
            cl.kill9(leader);
            killed = Some(leader);
        }
        if a.len() == 5 && new == 5 && a.iter().all(|x| x["health"] == "healthy") {
            break;
        }
        assert!(
            started.elapsed() < T * 2,
            "v3 not rolled out: {c:#?}\n{}",
            cl.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_rollout(&cl, 3, "stable");
    eprintln!(
        "v3 rolled out start-first in {:?} (leader {killed:?} killed mid-way)",
        started.elapsed()
    );
    let (most, twice, samples) = sampler.finish();
    assert!(samples > 10);
    assert!(
        (6..=7).contains(&most),
        "{most} copies really ran at once (5 + max_surge 2, start-first)"
    );
    assert!(twice.is_empty(), "{twice:?}");
}

#[test]
fn a_canary_runs_beside_the_old_copies_until_promoted() {
    let cl = Cluster::three("rollout-canary", &[]);
    apply_rule(&cl, 1, "/healthz", &rule(CANARY));
    let v1 = five_healthy_of_one_version(&cl, "5 healthy copies of v1");
    wait_rollout(&cl, 1, "stable");
    let sampler = TruthSampler::start_for(cl.cgroup_parent.clone());
    apply_rule(&cl, 2, "/healthz", &rule(CANARY));
    // One healthy canary of v2; the 5 copies of v1 all still run.
    let c = cl.wait_containers(T, "a healthy canary beside 5 of v1", |c| {
        let canaries: Vec<&Value> = active(c)
            .into_iter()
            .filter(|x| x["digest"] != v1.as_str())
            .collect();
        let old_running = c
            .iter()
            .filter(|x| x["digest"] == v1.as_str() && x["state"] == "running")
            .count();
        canaries.len() == 1 && canaries[0]["health"] == "healthy" && old_running == 5
    });
    let retiring = c.iter().filter(|x| x["desired"] == "retiring").count();
    assert_eq!(retiring, 1, "{c:#?}");
    // It waits (no deadline: 4 s healthy_deadline passes), and says so.
    std::thread::sleep(Duration::from_secs(5));
    let rule = rule_of(&cl);
    assert_eq!(rule["rollout"], "deploying", "{rule:#}");
    assert!(
        rule["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("awaiting promotion (haconiwa watch promote web)"),
        "{rule:#}"
    );
    assert_eq!(
        active(&cl.containers())
            .iter()
            .filter(|x| x["digest"] != v1.as_str())
            .count(),
        1,
        "more than the canary placed before the promotion"
    );
    let out = cl.ok(&["watch", "promote", "web"]);
    assert!(out.contains("version 2 promoted"), "{out}");
    five_healthy_where(&cl, "5 healthy copies of v2 after the promotion", |d| {
        d != v1
    });
    let rule = wait_rollout(&cl, 2, "stable");
    assert_eq!(rule["last_error"], "", "{rule:#}");
    let again = cl.run(&["watch", "promote", "web"]);
    assert!(!again.status.success());
    let (most, twice, _) = sampler.finish();
    assert!(most <= 6, "{most} copies really ran at once (5 + 1 canary)");
    assert!(twice.is_empty(), "{twice:?}");
}
