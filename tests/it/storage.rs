//! The cluster's storage (issue 26): named volumes whose data outlives a container's
//! replacement on their node (a directory, an ext4 image of its size, a tmpfs of its
//! size), placement on the volume's node, removal refused in use; and secrets read
//! inside at /run/secrets, a new value rolling the rule that reads them, the value found
//! nowhere else: not in any file the cluster writes, not in etcd, the events, the
//! dashboard's state or `show`.

use crate::common::cluster::Cluster;
use crate::common::etcd::Etcd;
use crate::common::*;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(40);

/// A definition at the test busybox root, `extra` lines added.
fn haco(cl: &Cluster, name: &str, extra: &str) -> PathBuf {
    let p = cl.scratch.path.join(format!("{name}.haco"));
    std::fs::write(
        &p,
        format!(
            "haconiwa.define(|c| {{\n  c.name = `{name}-${{uuid_short()}}`;\n  c.init_command = [\"/bin/sleep\", \"3600\"];\n  c.chroot_to(\"{}\");\n  c.namespace.unshare([\"uts\", \"ipc\", \"pid\", \"mount\"]);\n  c.uid = 1000;\n  c.gid = 1000;\n{extra}\n}});\n",
            busybox_rootfs().display()
        ),
    )
    .unwrap();
    p
}

/// A rule keeping one container of `def`.
fn keep_one(cl: &Cluster, def: &str) -> PathBuf {
    let p = cl.scratch.path.join(format!("keep-{def}.watch"));
    std::fs::write(
        &p,
        format!(
            "haconiwa.watch(|w| {{\n  w.watch(\"cluster\", |event| {{\n    if event.cluster.count(\"{def}\") < 1 {{\n      haconiwa.spawn(\"{def}.haco\");\n    }}\n  }});\n}});\n"
        ),
    )
    .unwrap();
    p
}

/// The one running container of a definition, once there is one (and not `not`).
fn running_of(cl: &Cluster, def: &str, not: &[String]) -> Value {
    let list = cl.wait_containers(T, &format!("a running {def}"), |c| {
        c.iter().any(|x| {
            x["definition"] == def
                && x["state"] == "running"
                && !not.iter().any(|n| x["id"] == n.as_str())
        })
    });
    list.into_iter()
        .find(|x| {
            x["definition"] == def
                && x["state"] == "running"
                && !not.iter().any(|n| x["id"] == n.as_str())
        })
        .unwrap()
}

fn exec(cl: &Cluster, id: &str, script: &str) -> Output {
    cl.run_on(1, &["exec", id, "--", "/bin/sh", "-c", script])
}

fn exec_ok(cl: &Cluster, id: &str, script: &str) -> String {
    let o = exec(cl, id, script);
    assert!(o.status.success(), "exec {script}: {}", output_text(&o));
    stdout(&o)
}

fn refused(o: &Output, words: &str) {
    assert!(!o.status.success(), "not refused: {}", output_text(o));
    assert!(
        stderr(o).contains(words),
        "{words:?} not in: {}",
        output_text(o)
    );
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

fn is_mount_point(p: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let p = p.display().to_string();
    mounts
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(p.as_str()))
}

#[test]
fn a_volume_s_data_survives_the_replacement_of_its_container_on_its_node() {
    let cl = Cluster::three("vol", &[]);
    let ok = |args: &[&str]| cl.ok(args);
    ok(&["volume", "create", "data", "--node", "2"]);
    ok(&[
        "volume", "create", "scratch", "--node", "2", "--tmpfs", "--size", "8M",
    ]);
    ok(&["volume", "create", "sized", "--node", "3", "--size", "16M"]);
    refused(
        &cl.run(&["volume", "create", "data", "--node", "1"]),
        "already exists on node 2",
    );
    refused(
        &cl.run(&["volume", "create", "t", "--node", "2", "--tmpfs"]),
        "needs a size",
    );
    refused(
        &cl.run(&["volume", "create", "../x", "--node", "2"]),
        "invalid volume name",
    );
    refused(
        &cl.run(&["volume", "create", "y", "--node", "9"]),
        "no node 9",
    );

    // A rule keeps one container mounting two volumes of node 2: it runs there, as the
    // container's user, with the tmpfs at its size.
    let def = "voluser";
    haco(
        &cl,
        def,
        "  c.volume(\"data\", \"/data\");\n  c.volume(\"scratch\", \"/scratch\");",
    );
    ok(&["watch", "apply", keep_one(&cl, def).to_str().unwrap()]);
    let first = running_of(&cl, def, &[]);
    let id = first["id"].as_str().unwrap().to_string();
    assert_eq!(first["node"], 2, "{first}");
    let on_hosts = cl.cgroups();
    assert!(
        on_hosts.get(&2).is_some_and(|c| c.contains_key(&id)),
        "{on_hosts:?}"
    );
    let out = exec_ok(
        &cl,
        &id,
        "echo kept > /data/f && echo fast > /scratch/g && id -u && df -k /scratch | tail -1",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1000", "{out}");
    let total_kb: u64 = lines[1].split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(total_kb, 8192, "the tmpfs is 8M: {out}");
    let o = exec(
        &cl,
        &id,
        "dd if=/dev/zero of=/scratch/big bs=1M count=9 2>&1",
    );
    assert!(
        !o.status.success(),
        "9M fit an 8M tmpfs: {}",
        output_text(&o)
    );
    assert!(stdout(&o).contains("No space left"), "{}", output_text(&o));

    // In use: not removed.
    refused(
        &cl.run(&["volume", "rm", "data"]),
        &format!("in use by {id}"),
    );
    let ls: Value = serde_json::from_str(&ok(&["volume", "ls", "--json"])).unwrap();
    let data = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "data")
        .unwrap();
    assert_eq!(data["used_by"][0], id.as_str(), "{ls}");

    // The container stopped: its replacement, on node 2 again, finds the data.
    ok(&["stop", &id]);
    let second = running_of(&cl, def, std::slice::from_ref(&id));
    let id2 = second["id"].as_str().unwrap().to_string();
    assert_eq!(second["node"], 2, "{second}");
    assert_eq!(exec_ok(&cl, &id2, "cat /data/f /scratch/g"), "kept\nfast\n");

    // A volume of its own size on node 3: a container of it goes there, never elsewhere;
    // one of a volume that does not exist, or of volumes of two nodes, nowhere.
    let sized = haco(&cl, "sizeduser", "  c.volume(\"sized\", \"/v\");");
    refused(
        &cl.run(&["spawn", sized.to_str().unwrap(), "--node", "1"]),
        "volume sized is on node 3, not on node 1",
    );
    let out = ok(&["spawn", sized.to_str().unwrap(), "--json"]);
    let s: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["node"], 3, "{s}");
    let sid = s["id"].as_str().unwrap().to_string();
    running_of(&cl, "sizeduser", &[]);
    let df = exec_ok(
        &cl,
        &sid,
        "df -k /v | tail -1; touch /v/mine && ls -ln /v/mine",
    );
    let total_kb: u64 = df.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        (10_000..=16_384).contains(&total_kb),
        "not a 16M file system: {df}"
    );
    assert!(
        df.lines().nth(1).is_some_and(|l| l.contains(" 1000 ")),
        "{df}"
    );
    // A local run has no cluster volumes: refused, not silently without its data.
    refused(
        &cl.run(&["run", sized.to_str().unwrap()]),
        "are the cluster's",
    );
    let nope = haco(&cl, "nope", "  c.volume(\"nope\", \"/x\");");
    refused(
        &cl.run(&["spawn", nope.to_str().unwrap()]),
        "no volume nope",
    );
    let apart = haco(
        &cl,
        "apart",
        "  c.volume(\"data\", \"/a\");\n  c.volume(\"sized\", \"/b\");",
    );
    refused(
        &cl.run(&["spawn", apart.to_str().unwrap()]),
        "are on different nodes",
    );

    // Once nothing uses them, removed: their node unmounts and deletes them.
    ok(&["watch", "rm", &format!("keep-{def}")]);
    ok(&["stop", &id2]);
    ok(&["stop", &sid]);
    cl.wait_containers(T, "all ended", |c| {
        c.iter()
            .all(|x| x["state"] == "exited" || x["state"] == "lost")
    });
    let vols = |n: usize| cl.nodes[n - 1].data_dir.join("volumes");
    assert!(is_mount_point(&vols(2).join("scratch/data")));
    assert!(is_mount_point(&vols(3).join("sized/data")));
    for v in ["data", "scratch", "sized"] {
        ok(&["volume", "rm", v]);
    }
    wait_until("node 2 and 3 removing their volumes", || {
        !vols(2).join("data").exists()
            && !vols(2).join("scratch").exists()
            && !vols(3).join("sized").exists()
    });
    assert!(!is_mount_point(&vols(2).join("scratch/data")));
    assert!(!is_mount_point(&vols(3).join("sized/data")));
    assert_eq!(ok(&["volume", "ls", "--json"]).trim(), "[]");
    let events = std::process::Command::new("timeout")
        .args(["2", BIN, "events", "--since", "0"])
        .env("HACONIWA_SERVER", &cl.nodes[0].addr)
        .env("HACONIWA_TOKEN", &cl.token)
        .output()
        .unwrap();
    let events = stdout(&events);
    for said in [
        "volume scratch on node 2 (tmpfs, 8388608 bytes)",
        "volume sized on node 3 (host, 16777216 bytes)",
        "volume data of node 2",
    ] {
        assert!(events.contains(said), "no event {said:?}: {events}");
    }
}

/// Every file under `dir` whose bytes hold `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            found.extend(files_holding(&p, needle));
        } else if ft.is_file() {
            if let Ok(bytes) = std::fs::read(&p) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(p);
                }
            }
        }
    }
    found
}

fn http_get(url: &str) -> String {
    let o = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())",
            url,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "GET {url}: {}", output_text(&o));
    stdout(&o)
}

fn put_secret(cl: &Cluster, name: &str, value: &str) -> String {
    let mut child = cl
        .cli()
        .args(["secret", "create", name, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(value.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "secret create: {}", output_text(&o));
    stdout(&o)
}

#[test]
fn a_secret_is_read_inside_only_and_a_new_value_rolls_the_rule_that_reads_it() {
    let mut cl = Cluster::new("sec", &[]);
    let etcd = Etcd::start(&format!("{}.200", cl.net), cl.scratch.path.join("etcd"));
    cl.common_flags = vec![
        "--etcd-endpoint".into(),
        etcd.endpoint.clone(),
        "--etcd-prefix".into(),
        "/sec-test".into(),
    ];
    for k in 1..=3 {
        let http = format!("{}.{k}:7780", cl.net);
        cl.add_node(&["--http-listen", &http]);
        if k == 1 {
            cl.wait_leader(T);
        }
    }
    cl.wait(T, "3 voters up", |s| {
        let m = s["members"].as_array().unwrap();
        m.len() == 3 && m.iter().all(|x| x["role"] == "voter" && x["state"] == "up")
    });
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let stamp = format!("{}-{nanos}", std::process::id());
    let v1 = format!("pw1-{stamp}-Zq8");
    let v2 = format!("pw2-{stamp}-Xk3");

    let out = put_secret(&cl, "db-password", &v1);
    assert!(out.contains("version 1"), "{out}");
    let ls = cl.ok(&["secret", "ls", "--json"]);
    let l: Value = serde_json::from_str(&ls).unwrap();
    assert_eq!(l[0]["name"], "db-password");
    assert_eq!(l[0]["version"], 1);
    assert_eq!(l[0]["size"], v1.len());

    let def = "reader";
    haco(&cl, def, "  c.secret(\"db-password\");");
    let missing = haco(&cl, "lacking", "  c.secret(\"missing\");");
    refused(
        &cl.run(&["spawn", missing.to_str().unwrap()]),
        "no secret missing",
    );
    cl.ok(&["watch", "apply", keep_one(&cl, def).to_str().unwrap()]);
    let first = running_of(&cl, def, &[]);
    let id = first["id"].as_str().unwrap().to_string();
    // Inside: the value, 0400, the container's user's, on a read-only tmpfs.
    let file = "/run/secrets/db-password";
    assert_eq!(exec_ok(&cl, &id, &format!("cat {file}")), v1);
    assert_eq!(
        exec_ok(&cl, &id, &format!("stat -c '%a %u %g' {file}")).trim(),
        "400 1000 1000"
    );
    let o = exec(&cl, &id, "echo x > /run/secrets/other");
    assert!(!o.status.success(), "the secrets' tmpfs is writable");
    let mounts = exec_ok(&cl, &id, "grep ' /run/secrets ' /proc/self/mounts");
    assert!(
        mounts.starts_with("tmpfs /run/secrets tmpfs ro,"),
        "{mounts}"
    );

    // One started by `spawn` alone, on node 3.
    let direct = haco(&cl, "direct", "  c.secret(\"db-password\");");
    let out = cl.ok(&["spawn", direct.to_str().unwrap(), "--node", "3", "--json"]);
    let d1: Value = serde_json::from_str(&out).unwrap();
    let d1 = d1["id"].as_str().unwrap().to_string();
    running_of(&cl, "direct", &[]);
    assert_eq!(exec_ok(&cl, &d1, &format!("cat {file}")), v1);

    // A new value: the rule rolls, its new container reads the new value; the spawned
    // one is replaced on its node by one that reads it.
    let out = put_secret(&cl, "db-password", &v2);
    assert!(
        out.contains("version 2") && out.contains("rolling the rules that read it: keep-reader"),
        "{out}"
    );
    assert!(
        out.contains(&format!("replacing the containers that read it: {d1}")),
        "{out}"
    );
    let d2 = running_of(&cl, "direct", std::slice::from_ref(&d1));
    assert_eq!(d2["node"], 3, "{d2}");
    let d2 = d2["id"].as_str().unwrap().to_string();
    assert_eq!(exec_ok(&cl, &d2, &format!("cat {file}")), v2);
    let second = running_of(&cl, def, std::slice::from_ref(&id));
    let id2 = second["id"].as_str().unwrap().to_string();
    assert_eq!(exec_ok(&cl, &id2, &format!("cat {file}")), v2);
    cl.wait_containers(T, "the old readers replaced", |c| {
        [&id, &d1].iter().all(|old| {
            c.iter()
                .any(|x| x["id"] == old.as_str() && x["state"] != "running")
        })
    });
    let o = cl.run(&["secret", "rm", "db-password"]);
    refused(&o, "secret db-password is in use by");
    assert!(
        stderr(&o).contains(&id2) && stderr(&o).contains(&d2),
        "{}",
        output_text(&o)
    );

    // Nowhere else: every file the cluster wrote (data dirs: the log, the state, the
    // snapshots; the state dirs; the supervisors' logs; etcd's own files), etcd's keys,
    // the events, the dashboard, `show` and the container list.
    let events = std::process::Command::new("timeout")
        .args(["3", BIN, "events", "--json", "--since", "0"])
        .env("HACONIWA_SERVER", &cl.nodes[0].addr)
        .env("HACONIWA_TOKEN", &cl.token)
        .output()
        .unwrap();
    let mut shown = stdout(&events);
    assert!(shown.contains("rule_applied"), "no events read: {shown}");
    for said in [
        "secret db-password version 1 (",
        "secret db-password version 2 (",
    ] {
        assert!(shown.contains(said), "no event {said:?}: {shown}");
    }
    for args in [
        &["containers", "--all", "--json"][..],
        &["show", &id2],
        &["secret", "ls"],
        &["cluster", "status", "--json"],
    ] {
        let o = cl.run(args);
        shown.push_str(&output_text(&o));
    }
    shown.push_str(&etcd.ok(&["get", "--prefix", ""]));
    shown.push_str(&http_get(&format!("http://{}.1:7780/api/state", cl.net)));
    shown.push_str(&http_get(&format!("http://{}.2:7780/", cl.net)));
    assert!(shown.contains(&id2), "the outputs searched hold nothing");
    // The mirror holds the state (a volume too), not the secrets.
    cl.ok(&["volume", "create", "mirrored", "--node", "1"]);
    wait_until("the volume in etcd", || {
        etcd.ok(&["get", "--prefix", "", "--keys-only"])
            .contains("/sec-test/v1/volumes/mirrored")
    });
    let keys = etcd.ok(&["get", "--prefix", "", "--keys-only"]);
    assert!(keys.contains("/sec-test/v1/containers/"), "{keys}");
    assert!(!keys.contains("secret"), "a secret in etcd: {keys}");
    // The search finds a value where one is (a control file written by the test).
    std::fs::write(cl.scratch.path.join("control"), format!("x{v1}x")).unwrap();
    let control = files_holding(&cl.scratch.path, v1.as_bytes());
    assert_eq!(control, [cl.scratch.path.join("control")]);
    std::fs::remove_file(cl.scratch.path.join("control")).unwrap();
    for v in [&v1, &v2] {
        assert!(!shown.contains(v.as_str()), "a secret's value shown");
        let files = files_holding(&cl.scratch.path, v.as_bytes());
        assert!(files.is_empty(), "a secret's value in {files:?}");
    }
}
