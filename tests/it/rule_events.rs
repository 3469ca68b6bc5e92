//! Every rule event and action, run by a real leader on 3 labelled nodes: `timer`/`every`
//! spawning with `node_labels`, `container_exit` spawning with `node`, `node_down` and
//! `node_up`, `kill(id)` and `kill(#{ definition, count })`, and an impossible placement
//! that reports `rule_failed`, backs off instead of spinning, and places at once when a
//! node that fits comes up. Effects are counted where they live: the hosts' cgroups.

use crate::common::cluster::Cluster;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(40);

/// Containers of `definition` the cluster wants and runs, by node.
fn running_of(c: &[Value], definition: &str) -> BTreeMap<u64, usize> {
    let mut by_node = BTreeMap::new();
    for x in c
        .iter()
        .filter(|x| x["definition"] == definition && x["state"] == "running")
    {
        *by_node.entry(x["node"].as_u64().unwrap()).or_default() += 1;
    }
    by_node
}

/// Containers of `definition` whose cgroup has processes, by node (the truth).
fn really_of(cl: &Cluster, definition: &str) -> BTreeMap<u64, usize> {
    cl.cgroups()
        .into_iter()
        .map(|(node, cs)| {
            let n = cs
                .keys()
                .filter(|c| c.starts_with(&format!("{definition}-")))
                .count();
            (node, n)
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Waits until the hosts' cgroups run exactly `want` (node → count) of `definition`.
fn wait_really(cl: &Cluster, definition: &str, want: &[(u64, usize)]) {
    let want: BTreeMap<u64, usize> = want.iter().copied().collect();
    let deadline = Instant::now() + T;
    while really_of(cl, definition) != want {
        assert!(
            Instant::now() < deadline,
            "the hosts run {:?} of {definition}, not {want:?}",
            really_of(cl, definition)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes a rule file beside the definitions and applies it.
fn apply(cl: &Cluster, name: &str, text: &str) {
    let p = cl.scratch.path.join(name);
    std::fs::write(&p, text).unwrap();
    let out = cl.ok(&["watch", "apply", p.to_str().unwrap()]);
    assert!(out.contains("applied"), "{out}");
}

const EVENTS: &str = r#"haconiwa.watch(|w| {
    w.every(300, |e| {
        if e.cluster.count("ticker") < 3 {
            haconiwa.spawn(#{ haco: "ticker.haco", node_labels: #{ zone: "b" } });
        }
    });
    w.watch("container_exit", |e| {
        if e.container.definition == "short" {
            haconiwa.spawn(#{ haco: "after.haco", node: e.container.node });
        }
    });
    w.watch("node_down", |e| {
        log(`saw node ${e.node.id} down`);
        haconiwa.spawn(#{ haco: "downmark.haco", node_labels: #{ zone: "a" } });
    });
    w.watch("node_up", |e| {
        haconiwa.spawn(#{ haco: "upmark.haco", node: e.node.id });
    });
});
"#;

const KILLER: &str = r#"haconiwa.watch(|w| {
    w.watch("cluster", |e| {
        for c in e.cluster.containers {
            if c.definition == "doomed" && c.desired == "running" {
                haconiwa.kill(c.id);
            }
        }
        let extra = e.cluster.count("extra");
        if extra > 2 {
            haconiwa.kill(#{ definition: "extra", count: extra - 2 });
        }
    });
});
"#;

const IMPOSSIBLE: &str = r#"haconiwa.watch(|w| {
    w.watch("cluster", |e| {
        if e.cluster.count("nowhere") < 1 {
            log("placing nowhere");
            haconiwa.spawn(#{ haco: "nowhere.haco", node_labels: #{ zone: "mars" } });
        }
    });
});
"#;

#[test]
fn rule_events_and_actions_run_on_a_real_leader() {
    let mut cl = Cluster::new("rule-events", &[]);
    cl.start_three_with([
        &["--label", "zone=a"],
        &["--label", "zone=b"],
        &["--label", "zone=b"],
    ]);
    let sleep = "[\"/bin/sleep\", \"3600\"]";
    for name in [
        "ticker", "after", "downmark", "upmark", "doomed", "extra", "nowhere",
    ] {
        cl.haco(name, sleep);
    }
    cl.haco("short", "[\"/bin/true\"]");
    apply(&cl, "events.watch", EVENTS);
    apply(&cl, "killer.watch", KILLER);

    // timer + node_labels: one ticker per tick up to 3, on the zone-b nodes only.
    let c = cl.wait_containers(T, "3 tickers", |c| {
        running_of(c, "ticker").values().sum::<usize>() == 3
    });
    let tickers = running_of(&c, "ticker");
    assert!(
        tickers.keys().all(|n| *n == 2 || *n == 3),
        "a ticker outside zone b: {tickers:?}"
    );
    wait_really(&cl, "ticker", &tickers.into_iter().collect::<Vec<_>>());
    // container_exit + node: the short one ends, an `after` starts on its node.
    cl.ok(&[
        "spawn",
        cl.scratch.path.join("short.haco").to_str().unwrap(),
        "--node",
        "3",
    ]);
    let c = cl.wait_containers(T, "an after on node 3", |c| {
        !running_of(c, "after").is_empty()
    });
    assert_eq!(running_of(&c, "after"), BTreeMap::from([(3, 1)]), "{c:#?}");
    wait_really(&cl, "after", &[(3, 1)]);

    // kill(id): a doomed container is stopped by the rule as soon as it is placed.
    let doomed = cl.scratch.path.join("doomed.haco");
    let out = cl.ok(&["spawn", doomed.to_str().unwrap(), "--json"]);
    let id = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    cl.wait_containers(T, "the doomed one stopped", |c| {
        c.iter()
            .any(|x| x["id"] == id.as_str() && x["desired"] != "running")
    });
    // kill(#{definition, count}): five extras, two stay.
    let extra = cl.scratch.path.join("extra.haco");
    for _ in 0..5 {
        cl.ok(&["spawn", extra.to_str().unwrap()]);
    }
    let c = cl.wait_containers(T, "2 extras", |c| {
        running_of(c, "extra").values().sum::<usize>() == 2
            && c.iter()
                .filter(|x| x["definition"] == "extra")
                .all(|x| x["state"] == "running" || x["state"] == "exited")
    });
    let wanted = c
        .iter()
        .filter(|x| x["definition"] == "extra" && x["desired"] == "running")
        .count();
    assert_eq!(wanted, 2, "{c:#?}");
    let extras: Vec<(u64, usize)> = running_of(&c, "extra").into_iter().collect();
    wait_really(&cl, "extra", &extras);
    wait_really(&cl, "doomed", &[]);

    // node_down and node_up: a zone-b follower dies; the rule marks it on zone a, the
    // timer's tickers come back to 3 on the other zone-b node, and when it returns an
    // upmark is placed on it by id.
    let leader = cl.wait_leader(T);
    let victim = if leader == 2 { 3 } else { 2 };
    let other_b = 5 - victim;
    cl.kill9(victim as usize);
    let c = cl.wait_containers(T, "a downmark and 3 tickers elsewhere", |c| {
        !running_of(c, "downmark").is_empty() && running_of(c, "ticker").get(&other_b) == Some(&3)
    });
    assert_eq!(running_of(&c, "downmark"), BTreeMap::from([(1, 1)]));
    wait_really(&cl, "downmark", &[(1, 1)]);
    wait_really(&cl, "ticker", &[(other_b, 3)]);
    assert!(
        cl.log(leader as usize)
            .contains(&format!("saw node {victim} down")),
        "the node_down handler did not log"
    );
    cl.start(victim as usize);
    let c = cl.wait_containers(T, "an upmark on the node back up", |c| {
        !running_of(c, "upmark").is_empty()
    });
    assert_eq!(running_of(&c, "upmark"), BTreeMap::from([(victim, 1)]));
    wait_really(&cl, "upmark", &[(victim, 1)]);

    // An impossible placement: rule_failed with the reason, and a back-off of about a
    // second while the cluster keeps changing (an evaluation per change would spin).
    apply(&cl, "impossible.watch", IMPOSSIBLE);
    let leader = cl.wait_leader(T) as usize;
    let tries = || cl.log(leader).matches("placing nowhere").count();
    let deadline = Instant::now() + T;
    while tries() == 0 {
        assert!(Instant::now() < deadline, "the impossible rule never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (before, t0) = (tries(), Instant::now());
    while t0.elapsed() < Duration::from_secs(3) {
        // A change every 100 ms (an extra, stopped again by the killer rule): each one
        // would be an evaluation without the back-off.
        cl.ok(&["spawn", extra.to_str().unwrap()]);
        std::thread::sleep(Duration::from_millis(100));
    }
    let during = tries() - before;
    eprintln!("the impossible rule ran {during} times in 3 s of changes");
    assert!(
        (1..=6).contains(&during),
        "{during} evaluations in 3 s: no back-off of about a second"
    );
    let rules: Vec<Value> = serde_json::from_str(&cl.ok(&["watch", "ls", "--json"])).unwrap();
    let failed = rules.iter().find(|r| r["name"] == "impossible").unwrap();
    let err = failed["last_error"].as_str().unwrap();
    assert!(err.contains("zone"), "{err}");
    assert!(
        cl.event_seen(|e| {
            e["kind"] == "rule_failed"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("impossible:") && m.contains("zone=mars"))
        }),
        "no rule_failed event of the rule"
    );
    // A node that fits comes up: its node_up ends the back-off, the rule places there.
    let t = Instant::now();
    let four = cl.add_node(&["--label", "zone=mars"]);
    let c = cl.wait_containers(T, "nowhere placed on the new node", |c| {
        !running_of(c, "nowhere").is_empty()
    });
    eprintln!("placed {:?} after the fitting node started", t.elapsed());
    assert_eq!(
        running_of(&c, "nowhere"),
        BTreeMap::from([(four as u64, 1)])
    );
    assert_eq!(
        really_of(&cl, "nowhere"),
        BTreeMap::from([(four as u64, 1)])
    );
}
