//! Supervisors started from `cluster-configs/node.toml` itself: every key the shipped
//! file names (set or commented) is uncommented where the file puts it, given a test
//! value, and shown to take effect — through status, TLS, the token, the log, the
//! container's state and cgroup, the HTTP listener (beyond loopback: it wants the token)
//! — or, for timings and paths nothing outside shows, in the settings the node logs.
//! Runs in a network namespace of its own, with addresses on a veth inside it.

use crate::common::output_text as text;
use crate::common::{busybox_rootfs, cgroup_dirs, require_program, require_root, Scratch, BIN};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SHIPPED: &str = include_str!("../../cluster-configs/node.toml");
const T: Duration = Duration::from_secs(30);

/// The shipped file with every `# key = value` and `# [table]` line uncommented.
fn uncommented() -> String {
    SHIPPED
        .lines()
        .map(|l| {
            let body = l.strip_prefix("# ").unwrap_or(l);
            let is_key = body.split_once('=').is_some_and(|(k, _)| {
                !k.trim().is_empty() && k.trim().chars().all(|c| c.is_ascii_lowercase() || c == '_')
            });
            let is_table = body.starts_with('[') && body.trim_end().ends_with(']');
            if l.starts_with("# ") && (is_key || is_table) {
                body.to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `table.key` of every key of a TOML table.
fn paths(t: &toml::Table) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (k, v) in t {
        match v {
            toml::Value::Table(inner) if k != "registry_ca" && k != "mirrors" => {
                out.extend(inner.keys().map(|i| format!("{k}.{i}")))
            }
            _ => {
                out.insert(k.clone());
            }
        }
    }
    out
}

/// A network namespace with addresses on a veth inside it; supervisors started in it;
/// all removed on drop, also after a failure.
struct Site {
    ns: String,
    children: Vec<Child>,
    state_dir: PathBuf,
    cgroup_parent: String,
}

impl Site {
    fn ip(&self, args: &[&str]) {
        let st = Command::new("ip").args(args).status().unwrap();
        assert!(st.success(), "ip {args:?}");
    }

    /// `program` in the namespace's network only (nsenter: `ip netns exec` would also
    /// mount a fresh /sys without the cgroup hierarchies).
    fn exec(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.ns)).arg(program);
        for k in [
            "HACONIWA_TOKEN",
            "HACONIWA_STATE_DIR",
            "HACONIWA_CGROUP_PARENT",
            "HACONIWA_IMAGE_STORE",
            "HACONIWA_SERVER",
        ] {
            c.env_remove(k);
        }
        c
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        crate::common::sweep(&self.state_dir, &self.cgroup_parent);
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

#[test]
fn a_supervisor_runs_from_node_toml_with_every_key_set() {
    require_root();
    require_program("ip", "iproute2");
    require_program("nsenter", "util-linux");
    require_program("curl", "curl");
    let _machine = crate::common::alone();
    let scratch = Scratch::new("node-toml");
    let dir = &scratch.path;
    let pki = dir.join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let tool = |args: &[&str]| {
        let o = Command::new(BIN).args(args).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    };
    let p = |f: &str| pki.join(f).to_string_lossy().into_owned();
    let pki_dir = p("");
    tool(&["tls", "ca", "create", "--dir", &pki_dir]);
    let cert = |what: &[&str]| {
        let mut args = vec![
            "tls", "cert", "create", "--ca-dir", &pki_dir, "--dir", &pki_dir,
        ];
        args.extend_from_slice(what);
        tool(&args);
    };
    cert(&["--node", "7", "--ip", "10.77.0.1"]);
    cert(&["--node", "8", "--ip", "10.77.0.2"]);
    cert(&["--client", "admin"]);
    std::fs::write(dir.join("auth.json"), "{\"auths\": {}}").unwrap();
    tool(&[
        "secret",
        "keygen",
        &dir.join("secrets.key").to_string_lossy(),
    ]);

    let mut site = Site {
        ns: format!("hcconf-{}", std::process::id()),
        children: Vec::new(),
        state_dir: dir.join("state"),
        cgroup_parent: format!("haconiwa-test-conf-{}", std::process::id()),
    };
    site.ip(&["netns", "add", &site.ns]);
    site.ip(&["-n", &site.ns, "link", "set", "lo", "up"]);
    // (No dummy driver here: a veth pair with both ends inside.)
    site.ip(&[
        "-n", &site.ns, "link", "add", "d0", "type", "veth", "peer", "name", "d1",
    ]);
    for a in ["10.77.0.1/24", "10.77.0.2/24"] {
        site.ip(&["-n", &site.ns, "addr", "add", a, "dev", "d0"]);
    }
    site.ip(&["-n", &site.ns, "link", "set", "d0", "up"]);
    site.ip(&["-n", &site.ns, "link", "set", "d1", "up"]);

    // Node 7: the shipped file, every key uncommented where the file puts it.
    let token = "file-token-0123456789abcdef";
    let d = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let mut first: toml::Table = toml::from_str(&uncommented()).expect("the uncommented file");
    let s = |v: &str| toml::Value::String(v.into());
    let i = |v: i64| toml::Value::Integer(v);
    let values: Vec<(&str, toml::Value)> = vec![
        ("node_id", i(7)),
        ("listen", s("10.77.0.1:7700")),
        ("advertise", s("10.77.0.1:7700")),
        ("data_dir", s(&d("a"))),
        ("secrets_key", s(&d("secrets.key"))),
        ("join", toml::Value::Array(vec![])),
        ("token", s(token)),
        ("voters", i(1)),
        ("raft_heartbeat_ms", i(60)),
        ("election_timeout_min_ms", i(200)),
        ("election_timeout_max_ms", i(400)),
        ("snapshot_after", i(5)),
        ("heartbeat_ms", i(250)),
        ("lease_ms", i(2000)),
        ("lease_margin_ms", i(400)),
        ("node_ttl_ms", i(2600)),
        ("replace_voter_after_ms", i(6000)),
        ("cluster_name", s("conf-test")),
        ("max_connections", i(64)),
        ("http_listen", s("10.77.0.1:7780")),
        ("labels.zone", s("conf")),
        ("log_format", s("json")),
        ("state_dir", s(&d("state"))),
        ("cgroup_parent", s(&site.cgroup_parent)),
        (
            "etcd.endpoints",
            toml::Value::Array(vec![s("https://10.77.0.9:2379")]),
        ),
        ("etcd.prefix", s("/conf-test/mirror")),
        ("etcd.ca_file", s(&p("ca.pem"))),
        ("etcd.cert_file", s(&p("admin.pem"))),
        ("etcd.key_file", s(&p("admin-key.pem"))),
        ("etcd.user", s("conf-user")),
        ("etcd.resync_secs", i(42)),
        ("tls.ca_file", s(&p("ca.pem"))),
        ("tls.cert_file", s(&p("node-7.pem"))),
        ("tls.key_file", s(&p("node-7-key.pem"))),
        ("tls.verify_clients", toml::Value::Boolean(true)),
        ("network.cidr", s("10.66.0.0/16")),
        ("network.subnet_prefix", i(24)),
        ("network.mode", s("host-gw")),
        ("network.mtu", i(1400)),
        ("network.vxlan_id", i(7)),
        ("network.vxlan_port", i(4790)),
        ("network.dns", toml::Value::Boolean(false)),
        ("network.masquerade", toml::Value::Boolean(false)),
        (
            "policy.allow_capabilities",
            toml::Value::Array(vec![s("cap_net_admin")]),
        ),
        ("policy.host_paths", toml::Value::Array(vec![s("/")])),
        ("policy.filesystems", toml::Value::Array(vec![s("tmpfs")])),
        ("policy.devices", toml::Value::Boolean(false)),
        ("policy.seccomp_unconfined", toml::Value::Boolean(false)),
        // The test's container shares the host's network.
        ("policy.host_network", toml::Value::Boolean(true)),
        ("policy.join_namespaces", toml::Value::Boolean(false)),
        ("policy.require_user_namespace", toml::Value::Boolean(false)),
        ("images.store", s(&d("images"))),
        ("images.auth_file", s(&d("auth.json"))),
        (
            "images.insecure_registries",
            toml::Value::Array(vec![s("10.77.0.9:5000")]),
        ),
        ("images.registry_ca", {
            let mut t = toml::Table::new();
            t.insert("registry.conf:443".into(), s(&p("ca.pem")));
            toml::Value::Table(t)
        }),
        ("images.mirrors", {
            let mut t = toml::Table::new();
            t.insert("docker.io".into(), s("10.77.0.9:5000"));
            toml::Value::Table(t)
        }),
    ];
    // Every key of the shipped file has a value here, at the place the file puts it (a
    // key that lands in the wrong table, or a new key, fails here).
    let set: BTreeSet<String> = values.iter().map(|(k, _)| k.to_string()).collect();
    assert_eq!(paths(&first), set, "the keys of cluster-configs/node.toml");
    for (k, v) in &values {
        match k.split_once('.') {
            Some((t, key)) => {
                first[t]
                    .as_table_mut()
                    .unwrap()
                    .insert(key.into(), v.clone());
            }
            None => {
                first.insert(k.to_string(), v.clone());
            }
        }
    }
    let a_toml = dir.join("a.toml");
    std::fs::write(&a_toml, toml::to_string(&first).unwrap()).unwrap();
    // Node 8 joins with its own certificate, id and address.
    let mut second = first.clone();
    second.insert("node_id".into(), i(8));
    second.insert("listen".into(), s("10.77.0.2:7700"));
    second.insert("advertise".into(), s("10.77.0.2:7700"));
    second.insert("data_dir".into(), s(&d("b")));
    second.insert("http_listen".into(), s("10.77.0.2:7780"));
    second.insert("join".into(), toml::Value::Array(vec![s("10.77.0.1:7700")]));
    let tls = second["tls"].as_table_mut().unwrap();
    tls.insert("cert_file".into(), s(&p("node-8.pem")));
    tls.insert("key_file".into(), s(&p("node-8-key.pem")));
    let b_toml = dir.join("b.toml");
    std::fs::write(&b_toml, toml::to_string(&second).unwrap()).unwrap();

    let start = |site: &mut Site, file: &Path, log: &str| {
        let log = std::fs::File::create(dir.join(log)).unwrap();
        let child = site
            .exec(BIN)
            .args(["supervisor", "--config", file.to_str().unwrap()])
            .env("HACONIWA_ETCD_PASSWORD", "conf-password")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        site.children.push(child);
    };
    let cli = |site: &Site, args: &[&str], with_cert: bool| -> Output {
        let mut c = site.exec(BIN);
        c.args(args)
            .env("HACONIWA_SERVER", "10.77.0.1:7700,10.77.0.2:7700")
            .env("HACONIWA_TOKEN", token)
            .env("HACONIWA_CA", p("ca.pem"));
        if with_cert {
            c.env("HACONIWA_CERT", p("admin.pem"))
                .env("HACONIWA_KEY", p("admin-key.pem"));
        }
        c.output().unwrap()
    };
    let status = |site: &Site| -> Option<Value> {
        let o = cli(site, &["cluster", "status", "--json"], true);
        serde_json::from_slice(&o.stdout).ok()
    };
    let wait = |site: &Site, what: &str, cond: &dyn Fn(&Value) -> bool| -> Value {
        let deadline = Instant::now() + T;
        loop {
            if let Some(s) = status(site).filter(|s| cond(s)) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:?}\n{}",
                status(site),
                std::fs::read_to_string(dir.join("a.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    start(&mut site, &a_toml, "a.log");
    wait(&site, "node 7 leading", &|s| s["leader"] == 7);
    start(&mut site, &b_toml, "b.log");
    // Up in the state and a member of Raft's configuration (the record comes first).
    // Its policy too: node 7's from the leader's loop, node 8's through its heartbeat.
    let s = wait(&site, "node 8 in, both policies published", &|s| {
        s["members"].as_array().is_some_and(|m| {
            m.len() == 2
                && m.iter()
                    .all(|x| x["state"] == "up" && x["role"] != "none" && x["policy"].is_object())
        })
    });
    let members = s["members"].as_array().unwrap();
    let m7 = members.iter().find(|m| m["id"] == 7).unwrap();
    let m8 = members.iter().find(|m| m["id"] == 8).unwrap();
    // listen, advertise, node_id, join, labels, voters = 1 (the second stays a learner).
    assert_eq!(m7["addr"], "10.77.0.1:7700");
    assert_eq!(m8["addr"], "10.77.0.2:7700");
    assert_eq!(m7["labels"]["zone"], "conf", "{s:#}");
    // [policy]: published, capability names in their canonical form; node 8's is the
    // same file's.
    assert_eq!(
        m7["policy"]["allow_capabilities"],
        serde_json::json!(["CAP_NET_ADMIN"]),
        "{s:#}"
    );
    assert_eq!(m7["policy"]["filesystems"], serde_json::json!(["tmpfs"]));
    assert_eq!(m7["policy"]["devices"], false);
    assert_eq!(m8["policy"], m7["policy"]);
    assert_eq!(
        (&m7["role"], &m8["role"]),
        (&"voter".into(), &"learner".into())
    );
    // etcd endpoints (nothing answers there: the cluster goes on without it).
    assert_eq!(s["mirror"]["enabled"], true, "{s:#}");
    assert_eq!(s["mirror"]["endpoints"][0], "https://10.77.0.9:2379");
    // data_dir keeps the id.
    assert_eq!(
        std::fs::read_to_string(dir.join("a/node_id"))
            .unwrap()
            .trim(),
        "7"
    );
    // tls with verify_clients: no client certificate, no answer; token: a wrong one is
    // refused.
    let o = cli(&site, &["cluster", "status"], false);
    assert!(!o.status.success(), "answered without a client certificate");
    let mut wrong = site.exec(BIN);
    let o = wrong
        .args(["cluster", "status"])
        .env("HACONIWA_SERVER", "10.77.0.1:7700")
        .env("HACONIWA_TOKEN", "not-the-token-0000")
        .env("HACONIWA_CA", p("ca.pem"))
        .env("HACONIWA_CERT", p("admin.pem"))
        .env("HACONIWA_KEY", p("admin-key.pem"))
        .output()
        .unwrap();
    assert!(
        !o.status.success() && text(&o).contains("token"),
        "{}",
        text(&o)
    );
    // state_dir and cgroup_parent: a container on node 7 lives under both.
    let haco = dir.join("conf.haco");
    std::fs::write(
        &haco,
        format!(
            "haconiwa.define(|c| {{\n  c.name = `conf-${{uuid_short()}}`;\n  c.init_command = [\"/bin/sleep\", \"3600\"];\n  c.chroot_to(\"{}\");\n  c.namespace.unshare([\"uts\", \"ipc\", \"pid\", \"mount\"]);\n}});\n",
            busybox_rootfs().display()
        ),
    )
    .unwrap();
    let o = cli(
        &site,
        &["spawn", haco.to_str().unwrap(), "--node", "7", "--json"],
        true,
    );
    assert!(o.status.success(), "{}", text(&o));
    let id = serde_json::from_slice::<Value>(&o.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + T;
    let cgroup = loop {
        let found = cgroup_dirs(&format!("{}/node-7/{id}", site.cgroup_parent))
            .into_iter()
            .find(|p| {
                std::fs::read_to_string(p.join("cgroup.procs")).is_ok_and(|t| !t.trim().is_empty())
            });
        if let Some(c) = found {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "no cgroup for {id}: {}\n{}",
            text(&cli(&site, &["containers", "--json"], true)),
            std::fs::read_to_string(dir.join("a.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let record = site
        .state_dir
        .join("node-7/containers")
        .join(&id)
        .join("state.json");
    assert!(record.exists(), "{record:?} (cgroup {cgroup:?})");
    // [network]: the range in the state, a subnet per member, the MTU on the bridge.
    let o = cli(&site, &["services", "--json"], true);
    let net: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert_eq!(net["cidr"], "10.66.0.0/16", "{}", text(&o));
    assert_eq!(net["subnets"][0], "7=10.66.0.0/24", "{net:#}");
    let deadline = Instant::now() + T;
    loop {
        let o = site
            .exec("ip")
            .args(["-o", "link", "show", "haconiwa0"])
            .output();
        if o.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("mtu 1400")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the bridge, with the MTU of [network]"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // http_listen beyond loopback: the token is required.
    let curl = |auth: Option<&str>| -> String {
        let mut c = site.exec("curl");
        c.args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://10.77.0.1:7780/metrics",
        ]);
        if let Some(t) = auth {
            c.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
    };
    assert_eq!(
        curl(None),
        "401",
        "metrics beyond loopback without the token"
    );
    assert_eq!(curl(Some("wrong-token-000000")), "401");
    assert_eq!(curl(Some(token)), "200");
    // log_format = json, and what the node says it runs with: the timings, the cluster
    // name, max_connections, the image store and registries, the etcd settings.
    let log = std::fs::read_to_string(dir.join("a.log")).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let said: String = lines
        .iter()
        .filter_map(|l| l["fields"]["message"].as_str())
        .filter(|m| m.starts_with("settings: "))
        .collect::<Vec<_>>()
        .join("\n");
    for needle in [
        "cluster conf-test",
        "voters 1",
        "raft heartbeat 60 ms",
        "election timeout 200..400 ms",
        "snapshot after 5 entries",
        "agent heartbeat 250 ms",
        "lease 2000 ms + margin 400 ms",
        "node ttl 2600 ms",
        "voter replaced after 6000 ms",
        "max connections 64",
        &format!("images {}", d("images")),
        "insecure [\"10.77.0.9:5000\"]",
        "mirrors {\"docker.io\": \"10.77.0.9:5000\"}",
        "registry.conf:443",
        "auth.json",
        "under /conf-test/mirror",
        "admin.pem",
        "user Some(\"conf-user\")",
        "resync every 42 s",
    ] {
        assert!(
            said.contains(needle),
            "the settings do not say {needle:?}:\n{said}"
        );
    }
}
