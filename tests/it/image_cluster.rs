//! Images in the cluster, on hosts that are network namespaces (`scripts/hosts`), each
//! with its own image store: a real registry in the hub that the hosts reach through a
//! mirror, an HTTP server image spawned on every host and answering, pulled once per
//! host; progress while a pull runs and a container stopped meanwhile never started; a
//! rule keeping an image that cannot be had backing off; an image imported on one host
//! only fetched by another from it, with no registry.

use crate::common::hosts::Hosts;
use crate::common::images::{noise, Compress, Image, Layer};
use crate::common::registry::{Proxy, Registry};
use crate::common::{stderr, stdout, BIN};
use serde_json::{json, Value};
use std::process::Output;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn ok(o: Output, what: &str) -> String {
    assert!(o.status.success(), "{what}: {}{}", stdout(&o), stderr(&o));
    stdout(&o)
}

/// Waits (bounded) until `cond` holds for `containers --all --json`.
fn wait_containers(
    hosts: &Hosts,
    timeout: Duration,
    what: &str,
    cond: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let t0 = Instant::now();
    loop {
        let o = hosts.cli(&["containers", "--all", "--json"]);
        let list: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if cond(&list) {
            return list;
        }
        assert!(
            t0.elapsed() < timeout,
            "{what}: {list:#?}\n{}",
            hosts.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn of(list: &[Value], definition: &str) -> Vec<Value> {
    list.iter()
        .filter(|c| c["definition"] == definition)
        .cloned()
        .collect()
}

#[test]
fn images_in_the_cluster_pulled_once_per_host_fetched_from_members_and_backing_off() {
    let hosts = Hosts::up_with("img-cluster", 3, |net| {
        [
            "--registry-mirror",
            &format!("localhost:5000={net}.254:5000"),
            "--registry-mirror",
            &format!("slow.example:5000={net}.254:5001"),
            "--insecure-registry",
            &format!("{net}.254:5000"),
            "--insecure-registry",
            &format!("{net}.254:5001"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    });
    let net = hosts.net();
    let s = hosts.scratch.path.clone();
    let reg = Registry::start_in(&s.join("registry"), &hosts.hub());
    // An HTTP server image.
    let web = Image::new(
        vec![
            (Layer::new().busybox(), Compress::Gzip),
            (
                Layer::new()
                    .dir("www")
                    .file("www/index.html", b"hello from the image\n"),
                Compress::Zstd,
            ),
        ],
        json!({"Cmd": ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"], "Env": ["PATH=/bin"]}),
    );
    web.layout(&s.join("web"), "web:1");
    reg.push(&s.join("web"), "web:1", false, None);
    // A user pulls it where the CLI runs (the hub).
    let user_store = s.join("user-images");
    let out = ok(
        hosts
            .in_hub(BIN)
            .env("HACONIWA_IMAGE_STORE", &user_store)
            .args(["image", "pull", "localhost:5000/web:1"])
            .output()
            .unwrap(),
        "image pull in the hub",
    );
    assert!(out.starts_with("localhost:5000/web:1 sha256:"), "{out}");
    let record: Value = serde_json::from_str(&ok(
        hosts
            .in_hub(BIN)
            .env("HACONIWA_IMAGE_STORE", &user_store)
            .args(["image", "inspect", "localhost:5000/web:1"])
            .output()
            .unwrap(),
        "inspect",
    ))
    .unwrap();
    let blobs: Vec<String> = record["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["blob"].as_str().unwrap().to_string())
        .chain([record["config_digest"].as_str().unwrap().to_string()])
        .collect();
    // ... and spawns it on every host: it shares the host's network (port 8080).
    let def = s.join("web.haco");
    std::fs::write(
        &def,
        "haconiwa.define(|c| {\n  c.name = \"web\";\n  c.image = \"localhost:5000/web:1\";\n  c.namespace.unshare([\"uts\", \"ipc\", \"pid\", \"mount\"]);\n});\n",
    )
    .unwrap();
    for k in 1..=3 {
        ok(
            hosts.cli(&["spawn", def.to_str().unwrap(), "--node", &k.to_string()]),
            "spawn",
        );
    }
    hosts.wait_n(3, Duration::from_secs(60), "the web containers", 1);
    for k in 1..=3 {
        let page = ok(
            hosts
                .in_hub("busybox")
                .args(["wget", "-qO-", &format!("http://{net}.{k}:8080/index.html")])
                .output()
                .unwrap(),
            "GET the page",
        );
        assert_eq!(page, "hello from the image\n", "host {k}");
    }
    // Pulled once per host: each blob fetched once from each host's address.
    let second = s.join("web-sleep.haco");
    std::fs::write(
        &second,
        "haconiwa.define(|c| {\n  c.name = \"web-sleep\";\n  c.image = \"localhost:5000/web:1\";\n  c.init_command = [\"/bin/sleep\", \"3600\"];\n  c.namespace.unshare([\"uts\", \"ipc\", \"pid\", \"mount\", \"net\"]);\n});\n",
    )
    .unwrap();
    ok(
        hosts.cli(&["spawn", second.to_str().unwrap(), "--node", "1"]),
        "spawn another",
    );
    hosts.wait_n(
        4,
        Duration::from_secs(30),
        "a second container of the image",
        1,
    );
    for k in 1..=3 {
        for b in &blobs {
            assert_eq!(
                reg.blob_gets_from(b, &format!("{net}.{k} ")),
                1,
                "host {k} fetched {b} once: {}",
                reg.log()
            );
        }
    }
    let listed: Vec<Value> =
        serde_json::from_slice(&hosts.cli(&["containers", "--json"]).stdout).unwrap();
    assert!(
        listed.iter().all(|c| c["image"] == "localhost:5000/web:1"),
        "{listed:#?}"
    );

    // A slow pull: progress shows, and a container stopped meanwhile never starts.
    let big = Image::new(
        vec![
            (Layer::new().busybox(), Compress::Gzip),
            (Layer::new().file("big", &noise(6 << 20)), Compress::Gzip),
        ],
        json!({"Cmd": ["/bin/sleep", "3600"], "Env": ["PATH=/bin"]}),
    );
    big.layout(&s.join("big"), "big:1");
    reg.push(&s.join("big"), "big:1", false, None);
    let proxy = Proxy::start_in(&hosts.hub(), &format!("{net}.254:5001"), "127.0.0.1:5000");
    proxy.rate.store(1 << 20, Ordering::SeqCst);
    let slow = s.join("slow.haco");
    std::fs::write(
        &slow,
        "haconiwa.define(|c| {\n  c.name = \"slow\";\n  c.image = \"slow.example:5000/big:1\";\n  c.namespace.unshare([\"uts\", \"ipc\", \"pid\", \"mount\", \"net\"]);\n});\n",
    )
    .unwrap();
    ok(
        hosts.cli(&["spawn", slow.to_str().unwrap(), "--node", "2"]),
        "spawn the slow one",
    );
    let list = wait_containers(
        &hosts,
        Duration::from_secs(30),
        "pulling with progress",
        |l| {
            of(l, "slow").iter().any(|c| {
                c["state"] == "pulling"
                    && c["pull"]["done"].as_u64().unwrap_or(0) > 0
                    && c["pull"]["total"].as_u64().unwrap_or(0) > (6 << 20)
            })
        },
    );
    let id = of(&list, "slow")[0]["id"].as_str().unwrap().to_string();
    ok(hosts.cli(&["stop", &id]), "stop while pulling");
    let sampler = crate::common::hosts::TruthSampler::start(&hosts);
    let t0 = Instant::now();
    while !std::fs::read_to_string(hosts.image_store(2).join("refs.json"))
        .unwrap_or_default()
        .contains("slow.example:5000/big:1")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the slow pull did not end\n{}",
            hosts.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let list = wait_containers(
        &hosts,
        Duration::from_secs(20),
        "the stopped one ends unstarted",
        |l| of(l, "slow").iter().all(|c| c["state"] == "exited"),
    );
    assert_eq!(
        of(&list, "slow")[0]["error"],
        "stopped before it ran",
        "{list:#?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let (most, _, _) = sampler.finish();
    assert_eq!(most, 4, "nothing but the four web containers ever ran");
    assert!(!hosts
        .truth()
        .values()
        .any(|m| m.keys().any(|n| n.starts_with("slow"))));

    // An image no source has: pull_failed with the registry's reason, and a rule
    // keeping two of it backs off instead of spinning.
    let missing = s.join("missing.haco");
    std::fs::write(
        &missing,
        "haconiwa.define(|c| {\n  c.name = `missing-${uuid_short()}`;\n  c.image = \"localhost:5000/missing:1\";\n  c.namespace.unshare([\"uts\", \"ipc\", \"pid\", \"mount\", \"net\"]);\n});\n",
    )
    .unwrap();
    let rule = s.join("keep-missing.watch");
    std::fs::write(
        &rule,
        "haconiwa.watch(|w| {\n  w.watch(\"cluster\", |event| {\n    if event.cluster.count(\"missing\") < 2 { haconiwa.spawn(\"missing.haco\"); }\n  });\n});\n",
    )
    .unwrap();
    ok(
        hosts.cli(&["watch", "apply", rule.to_str().unwrap()]),
        "apply the rule",
    );
    let t0 = Instant::now();
    wait_containers(&hosts, Duration::from_secs(30), "pull_failed", |l| {
        of(l, "missing").iter().any(|c| c["state"] == "pull_failed")
    });
    std::thread::sleep(Duration::from_secs(8).saturating_sub(t0.elapsed()));
    let list = wait_containers(&hosts, Duration::from_secs(5), "", |_| true);
    let tried = of(&list, "missing");
    assert!(
        tried.iter().all(|c| c["state"] == "pull_failed"
            || c["state"] == "pulling"
            || c["state"] == "pending"),
        "{tried:#?}"
    );
    let failed: Vec<&Value> = tried
        .iter()
        .filter(|c| c["state"] == "pull_failed")
        .collect();
    assert!(
        failed
            .iter()
            .all(|c| c["error"].as_str().unwrap().contains("MANIFEST_UNKNOWN")),
        "the registry's reason: {failed:#?}"
    );
    // Rounds of two at about 0, 2 and 6 s (the wait doubles): more than one round,
    // far fewer than a rule spinning would make.
    assert!(
        (4..=10).contains(&tried.len()),
        "backs off and tries again: {} containers in 8 s for a rule keeping 2: {tried:#?}",
        tried.len()
    );
    let rules: Vec<Value> =
        serde_json::from_slice(&hosts.cli(&["watch", "ls", "--json"]).stdout).unwrap();
    let err = rules[0]["last_error"].as_str().unwrap_or("").to_string();
    assert!(
        err.contains("image pull failed") && err.contains("next attempt in"),
        "{rules:#?}"
    );
    ok(
        hosts.cli(&["watch", "rm", "keep-missing"]),
        "remove the rule",
    );

    // Air-gapped: an image imported on host 1 only; host 3 fetches it from host 1.
    let airgap = Image::new(
        vec![
            (Layer::new().busybox(), Compress::Gzip),
            (
                Layer::new().file("marker", b"from a member"),
                Compress::Gzip,
            ),
        ],
        json!({"Cmd": ["/bin/sleep", "3600"], "Env": ["PATH=/bin"]}),
    );
    airgap.layout(&s.join("airgap"), "localhost/airgap:1");
    let imported = std::process::Command::new(BIN)
        .env("HACONIWA_IMAGE_STORE", hosts.image_store(1))
        .args(["image", "import", s.join("airgap").to_str().unwrap()])
        .output()
        .unwrap();
    ok(imported, "import on host 1");
    let gap = s.join("airgap.haco");
    std::fs::write(
        &gap,
        "haconiwa.define(|c| {\n  c.name = \"airgap\";\n  c.image = \"localhost/airgap:1\";\n  c.namespace.unshare([\"uts\", \"ipc\", \"pid\", \"mount\", \"net\"]);\n});\n",
    )
    .unwrap();
    ok(
        hosts.cli(&["spawn", gap.to_str().unwrap(), "--node", "3"]),
        "spawn the imported image",
    );
    wait_containers(
        &hosts,
        Duration::from_secs(30),
        "the imported image runs on host 3",
        |l| of(l, "airgap").iter().any(|c| c["state"] == "running"),
    );
    let refs = std::fs::read_to_string(hosts.image_store(3).join("refs.json")).unwrap();
    assert!(refs.contains("localhost/airgap:1"), "{refs}");
    assert!(!reg.log().contains("airgap"), "the registry was not asked");
}
