//! The `.haco` loader: the example sleeper, every key, and each kind of error with
//! its file:line:col.

use haconiwa::spec::{self, Bootstrap, NsKind, RootMode, SystemMount};

fn load(text: &str) -> Result<spec::ContainerSpec, String> {
    spec::load_str(text, "t.haco", None).map_err(|e| e.to_string())
}

fn err(text: &str) -> String {
    load(text).expect_err("the definition should be refused")
}

const DESIGN_SLEEPER: &str = include_str!("../../examples/sleeper.haco");

#[test]
fn design_example_loads() {
    let s = load(DESIGN_SLEEPER).unwrap();
    assert!(
        s.name.starts_with("sleeper-") && s.name.len() == 16,
        "{}",
        s.name
    );
    assert_eq!(s.init_command[0], "/bin/sleep");
    let secs: u32 = s.init_command[1].parse().unwrap();
    assert!((30..=60).contains(&secs));
    assert_eq!(
        s.rootfs.path.to_str(),
        Some("/var/lib/haconiwa/rootfs/busybox")
    );
    assert_eq!(s.rootfs.mode, RootMode::PivotRoot);
    assert_eq!(s.bootstrap, Some(Bootstrap::Busybox { busybox: None }));
    assert_eq!(
        s.namespaces.unshare,
        vec![
            NsKind::Uts,
            NsKind::Ipc,
            NsKind::Pid,
            NsKind::Mount,
            NsKind::Net
        ]
    );
    assert_eq!(s.cgroup["memory.max"], "67108864");
    assert_eq!(s.cgroup["pids.max"], "64");
    assert_eq!(s.capabilities.drop, vec!["CAP_SYS_TIME"]);
    assert!(s.daemonize);
    // Two loads give two names (uuid_short) — the original's demo relied on it.
    assert_ne!(load(DESIGN_SLEEPER).unwrap().name, s.name);
}

#[test]
fn every_key_has_a_counterpart() {
    let s = load(
        r#"haconiwa.define(|c| {
    c.name = "full";
    c.hostname = "full-host";
    c.init_command = "/bin/sh -c 'echo hi'";
    c.environment = #{ A: "1" };
    c.env("B", 2);
    c.workdir = "/srv";
    c.daemonize();
    c.chroot_to("/tmp/root", #{ readonly: true });
    c.bootstrap(#{ strategy: "tarball", archive: "/tmp/r.tar.gz" });
    c.run_shell("echo one", #{ name: "first" });
    c.provision(|p| { p.run_shell("echo two"); });
    c.namespace.unshare(["uts", "ipc", "pid", "mount", "net", "user", "cgroup"]);
    c.namespace.uid_map(0, 100000, 65536);
    c.namespace.set_gid_mapping(#{ min: 0, max: 65535, offset: 200000 });
    c.mount_independent("tmpfs");
    c.add_mount_point("/var/log", #{ to: "/host-log", readonly: true });
    c.add_mount_point("tmpfs", #{ to: "/scratch", fs: "tmpfs", options: "size=1m" });
    c.cgroup["cpu.shares"] = 512;
    c.cgroup["cpuset.cpus"] = "0";
    c.cgroup["memory.limit_in_bytes"] = "32M";
    c.capabilities.reset();
    c.capabilities.allow(["net_bind_service", "CAP_KILL"]);
    c.set_limit("NOFILE", 100, 200);
    c.resource.set_limit("core", 0);
    c.uid = 1000;
    c.gid = 1000;
    c.groups = [10, 20];
    c.labels = #{ app: "web" };
    c.label("tier", "front");
    c.no_new_privs = false;
    c.network(#{ bridge: "hcbr0", address: "10.9.0.2/24", gateway: "10.9.0.1" });
    c.capabilities.ambient(["net_raw"]);
    c.seccomp = "unconfined";
    c.devices.allow("c 10:200 rw");
    c.devices.allow("/dev/fuse");
});"#,
    )
    .unwrap();
    assert_eq!(s.name, "full");
    assert_eq!(s.effective_hostname(), "full-host");
    assert!(s.daemonize);
    assert_eq!(s.init_command, vec!["/bin/sh", "-c", "echo hi"]);
    assert_eq!(s.environment["A"], "1");
    assert_eq!(s.environment["B"], "2");
    assert_eq!(s.workdir.as_deref(), Some("/srv"));
    assert!(s.rootfs.readonly);
    assert_eq!(s.rootfs.path, std::path::PathBuf::from("/tmp/root"));
    assert_eq!(
        s.bootstrap,
        Some(Bootstrap::Tarball {
            archive: "/tmp/r.tar.gz".into()
        })
    );
    assert_eq!(s.provision.len(), 2);
    assert_eq!(
        (s.provision[0].name.as_str(), s.provision[0].script.as_str()),
        ("first", "echo one")
    );
    assert_eq!(
        (s.provision[1].name.as_str(), s.provision[1].script.as_str()),
        ("step-2", "echo two")
    );
    assert_eq!(s.namespaces.unshare.len(), 7);
    assert_eq!(s.namespaces.uid_map[0].outside, 100000);
    assert_eq!(s.namespaces.gid_map[0].outside, 200000);
    assert_eq!(s.namespaces.gid_map[0].count, 65536);
    assert!(s.system_mounts.contains(&SystemMount::Tmpfs));
    assert_eq!(s.mounts.len(), 2);
    let bind = &s.mounts[0];
    assert_eq!(
        (bind.source.as_str(), bind.target.as_str(), bind.readonly),
        ("/var/log", "/host-log", true)
    );
    assert!(bind.fstype.is_none());
    let tmp = &s.mounts[1];
    assert_eq!(
        (
            tmp.fstype.as_deref(),
            tmp.options.as_deref(),
            tmp.target.as_str(),
            tmp.readonly
        ),
        (Some("tmpfs"), Some("size=1m"), "/scratch", false)
    );
    assert_eq!(s.cgroup["memory.limit_in_bytes"], "33554432");
    assert_eq!(s.cgroup["cpu.shares"], "512");
    assert_eq!(s.cgroup["cpuset.cpus"], "0");
    assert!(s.capabilities.reset);
    // ambient adds to the set too.
    assert_eq!(
        s.capabilities.allow,
        vec!["CAP_NET_BIND_SERVICE", "CAP_KILL", "CAP_NET_RAW"]
    );
    assert_eq!(s.capabilities.ambient, vec!["CAP_NET_RAW"]);
    assert_eq!(s.rlimits.len(), 2);
    assert_eq!(
        (
            s.rlimits[0].resource.as_str(),
            s.rlimits[0].soft,
            s.rlimits[0].hard
        ),
        ("nofile", Some(100), Some(200))
    );
    assert_eq!(
        (
            s.rlimits[1].resource.as_str(),
            s.rlimits[1].soft,
            s.rlimits[1].hard
        ),
        ("core", Some(0), Some(0))
    );
    assert_eq!(s.seccomp, spec::Seccomp::Unconfined);
    assert_eq!(s.devices.len(), 2);
    assert_eq!(
        (
            s.devices[0].kind,
            s.devices[0].major,
            s.devices[0].minor,
            s.devices[0].access.as_str()
        ),
        (Some('c'), Some(10), Some(200), "rw")
    );
    assert_eq!(s.devices[1].path.as_deref(), Some("/dev/fuse"));
    assert_eq!((s.uid, s.gid), (Some(1000), Some(1000)));
    assert_eq!(s.groups, vec![10, 20]);
    assert_eq!(s.labels["app"], "web");
    assert_eq!(s.labels["tier"], "front");
    assert!(!s.no_new_privs);
    let br = s.network.bridge.as_ref().unwrap();
    assert_eq!(
        (
            br.bridge.as_str(),
            br.address.as_str(),
            br.gateway.as_deref()
        ),
        ("hcbr0", "10.9.0.2/24", Some("10.9.0.1"))
    );
    assert!(s.network.loopback);
    // The JSON form is stable: it round-trips.
    let json = serde_json::to_string(&s).unwrap();
    let back: spec::ContainerSpec = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
}

#[test]
fn relative_paths_resolve_against_the_file() {
    let s = spec::load_str(
        "haconiwa.define(|c| { c.name = \"r\"; c.init_command = \"/bin/true\"; c.chroot_to(\"roots/x\"); });",
        "/etc/defs/r.haco",
        Some(std::path::Path::new("/etc/defs")),
    )
    .unwrap();
    assert_eq!(s.rootfs.path.to_str(), Some("/etc/defs/roots/x"));
}

const HEAD: &str = "haconiwa.define(|c| {\n    c.name = \"e\";\n    c.init_command = \"/bin/true\";\n    c.chroot_to(\"/r\");\n";

fn with(line: &str) -> String {
    format!("{HEAD}{line}\n}});\n")
}

#[test]
fn syntax_error_has_line_and_column() {
    let e = err("haconiwa.define(|c| {\n    c.name = \"x\"\n    c.init_command = 1;\n});");
    assert!(e.starts_with("t.haco:3:5: "), "{e}");
    let e = err("let x = ;");
    assert_eq!(e, "t.haco:1:9: Unexpected ';'");
}

#[test]
fn unknown_namespace_names_the_choices() {
    let e = err(&with("    c.namespace.unshare([\"uts2\"]);"));
    assert_eq!(
        e,
        "t.haco:5:17: unknown namespace 'uts2'; expected one of uts, ipc, pid, mount, net, user, cgroup"
    );
}

#[test]
fn unknown_key_is_reported_at_its_position() {
    let e = err(&with("    c.nmae = \"x\";"));
    assert!(e.starts_with("t.haco:5:"), "{e}");
    assert!(e.contains("unknown key 'nmae'"), "{e}");
}

#[test]
fn unknown_cgroup_key_and_bad_value() {
    let e = err(&with("    c.cgroup[\"memory.maxx\"] = \"1M\";"));
    assert!(e.starts_with("t.haco:5:"), "{e}");
    assert!(e.contains("unknown cgroup key 'memory.maxx'"), "{e}");
    let e = err(&with("    c.cgroup[\"memory.max\"] = \"lots\";"));
    assert!(
        e.starts_with("t.haco:5:") && e.contains("invalid value 'lots'"),
        "{e}"
    );
}

#[test]
fn unknown_capability_limit_mount_and_strategy() {
    let e = err(&with("    c.capabilities.drop([\"cap_time_travel\"]);"));
    assert!(
        e.starts_with("t.haco:5:20: ") && e.contains("unknown capability 'cap_time_travel'"),
        "{e}"
    );
    let e = err(&with("    c.set_limit(\"nofiles\", 1, 2);"));
    assert!(
        e.starts_with("t.haco:5:7: ") && e.contains("unknown resource limit 'nofiles'"),
        "{e}"
    );
    let e = err(&with("    c.set_limit(\"nofile\", 20, 10);"));
    assert!(
        e.contains("soft limit 20 is above the hard limit 10"),
        "{e}"
    );
    let e = err(&with("    c.mount_independent(\"procfs2\");"));
    assert!(
        e.starts_with("t.haco:5:7: ") && e.contains("unknown filesystem 'procfs2'"),
        "{e}"
    );
    let e = err(&with("    c.add_mount_point(\"/x\", #{ too: \"/y\" });"));
    assert!(e.contains("add_mount_point: unknown option 'too'"), "{e}");
    let e = err(&with("    c.bootstrap(#{ strategy: \"docker\" });"));
    assert!(
        e.starts_with("t.haco:5:7: ") && e.contains("unknown bootstrap strategy 'docker'"),
        "{e}"
    );
}

#[test]
fn missing_pieces_point_at_define() {
    let e = err("\n  haconiwa.define(|c| { c.name = \"x\"; c.chroot_to(\"/r\"); });");
    assert_eq!(
        e,
        "t.haco:2:12: the container has no command: set c.init_command = [\"/bin/sh\"] (or name an image: c.image = \"busybox\")"
    );
    // An image gives the root and the command; with a root directory too it is refused.
    let e = err("haconiwa.define(|c| {\n c.name = \"x\";\n c.image = \"busybox\";\n c.chroot_to(\"/r\");\n});");
    assert!(
        e.starts_with("t.haco:1:10: c.image and c.chroot_to both give the root"),
        "{e}"
    );
    let e = err("haconiwa.define(|c| { c.name = \"x\"; c.image = \"busybox\"; c.bootstrap(#{ strategy: \"busybox\" }); });");
    assert!(e.contains("an image is its own root"), "{e}");
    let e = err("haconiwa.define(|c| {\n c.name = \"x\";\n c.image = \"Bad:Ref\";\n});");
    assert!(
        e.starts_with("t.haco:3:") && e.contains("invalid image reference 'Bad:Ref'"),
        "{e}"
    );
    let e = err("haconiwa.define(|c| {\n c.name = \"x\";\n c.image = \"busybox\";\n c.stop_signal = \"SIGNOPE\";\n});");
    assert!(
        e.starts_with("t.haco:4:") && e.contains("unknown signal 'SIGNOPE'"),
        "{e}"
    );
    let e = err("haconiwa.define(|c| { c.init_command = \"/bin/true\"; c.chroot_to(\"/r\"); });");
    assert!(e.contains("no name"), "{e}");
    let e = err("haconiwa.define(|c| { c.name = \"x\"; c.init_command = \"/bin/true\"; });");
    assert!(e.contains("no root filesystem"), "{e}");
    let e = err("let a = 1;");
    assert!(e.starts_with("t.haco:1:1: no container defined"), "{e}");
    let e = err(&with("    c.namespace.unshare(\"user\");"));
    assert!(e.contains("needs a uid map"), "{e}");
    let e = err("haconiwa.define(|c| {\n c.name = \"x y\";\n});");
    assert!(
        e.starts_with("t.haco:2:") && e.contains("invalid container name 'x y'"),
        "{e}"
    );
}

#[test]
fn scripts_are_sandboxed_and_bounded() {
    let e = err("haconiwa.define(|c| { loop { } });");
    assert!(e.contains("operations") && e.contains("stopped"), "{e}");
    let e = err("let s = \"x\"; loop { s += s; }");
    assert!(
        e.starts_with("t.haco:1:") && e.contains("Length of string too large"),
        "{e}"
    );
    // No module loading, no eval: each refusal names what was refused.
    let e = err("import \"os\" as os;");
    assert_eq!(
        e,
        "t.haco:1:1: `import` is not allowed: scripts cannot load modules"
    );
    let e = err("eval(\"1\");");
    assert_eq!(e, "t.haco:1:1: reserved keyword 'eval' is disabled");
}

#[test]
fn command_strings_split_like_a_shell() {
    assert_eq!(
        spec::haco::split_command(r#"/bin/sh -c 'echo "a b"' x\ y"#).unwrap(),
        vec!["/bin/sh", "-c", "echo \"a b\"", "x y"]
    );
    assert!(spec::haco::split_command("echo 'open").is_err());
}

/// A small deterministic generator (xorshift) for the fuzz runs below.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// Values that break naive code: extreme integers, empty and odd strings, wrong types.
const VALUES: &[&str] = &[
    "0",
    "-1",
    "9223372036854775807",
    "-9223372036854775808",
    "4294967296",
    "1.5e308",
    "\"\"",
    "\"../../x\"",
    "\"a\\u001b[31m\"",
    "\"/dev/../etc\"",
    "\"ALL\"",
    "\"unconfined\"",
    "\"c *:* rwm\"",
    "\"b 8:x\"",
    "[]",
    "[\"/bin/sh\", 1]",
    "#{}",
    "#{ strategy: \"tarball\" }",
    "#{ to: \"/x\", fs: \"tmpfs\", readonly: 3 }",
    "()",
    "true",
    "rand(-9223372036854775808, 9223372036854775807)",
    "rand(9223372036854775807, -9223372036854775808)",
    "uuid_short()",
];

/// Statements on the `c` of a definition, with `{}` for a value.
const STATEMENTS: &[&str] = &[
    "c.name = {};",
    "c.hostname = {};",
    "c.init_command = {};",
    "c.chroot_to({});",
    "c.chroot_to(\"/r\", {});",
    "c.bootstrap({});",
    "c.namespace.unshare({});",
    "c.namespace.enter(\"net\", {});",
    "c.namespace.uid_map({}, {}, {});",
    "c.namespace.set_uid_mapping({});",
    "c.cgroup[\"memory.max\"] = {};",
    "c.cgroup[\"cpu.max\"] = {};",
    "c.cgroup[{}] = {};",
    "c.capabilities.allow({});",
    "c.capabilities.drop({});",
    "c.capabilities.ambient({});",
    "c.set_limit(\"nofile\", {}, {});",
    "c.set_limit({}, {});",
    "c.uid = {};",
    "c.groups = {};",
    "c.environment = {};",
    "c.env({}, {});",
    "c.add_mount_point({}, {});",
    "c.mount_independent({});",
    "c.run_shell({}, #{ name: {} });",
    "c.network({});",
    "c.seccomp = {};",
    "c.devices.allow({});",
    "c.labels = {};",
    "c.workdir = {};",
    "c.readonly_rootfs = {};",
];

fn fill(rng: &mut Rng, template: &str) -> String {
    let mut out = String::new();
    let mut parts = template.split("{}").peekable();
    while let Some(p) = parts.next() {
        out.push_str(p);
        if parts.peek().is_some() {
            out.push_str(rng.pick(VALUES));
        }
    }
    out
}

#[test]
fn fuzzed_definitions_and_rules_never_panic() {
    // CPU-bound for seconds (each rule evaluation may spin to its wall-time bound): run
    // alone, not beside a cluster test's elections.
    let _machine = crate::common::alone();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let t0 = std::time::Instant::now();
    let mut refused = 0;
    for i in 0..1500 {
        let mut body =
            String::from("c.name = \"f\"; c.init_command = \"/bin/true\"; c.chroot_to(\"/r\");\n");
        for _ in 0..(1 + rng.next() % 6) {
            let template = rng.pick(STATEMENTS);
            let s = fill(&mut rng, template);
            body.push_str(&s);
            body.push('\n');
        }
        let text = format!("haconiwa.define(|c| {{\n{body}}});\n");
        let result = std::panic::catch_unwind(|| spec::load_str(&text, "fuzz.haco", None));
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                refused += 1;
                let e = e.to_string();
                assert!(e.starts_with("fuzz.haco:"), "case {i}: {e}\n{text}");
            }
            Err(_) => panic!("case {i} panicked:\n{text}"),
        }
    }
    assert!(
        refused > 100,
        "the generator should produce many bad definitions"
    );
    // Rules: registration and evaluation with odd arguments.
    let calls = [
        "haconiwa.spawn({});",
        "haconiwa.spawn(#{ haco: \"a.haco\", node: {} });",
        "haconiwa.kill({});",
        "haconiwa.kill(#{ definition: {}, count: {} });",
        "log({});",
        "let n = event.cluster.count({});",
        "let n = event.cluster.count(#{ label: {} });",
        "let n = rand({}, {});",
    ];
    for i in 0..600 {
        let template = rng.pick(&calls);
        let call = fill(&mut rng, template);
        let every = rng.pick(VALUES);
        let text = format!(
            "haconiwa.watch(|w| {{\n w.watch(\"cluster\", |event| {{ {call} }});\n w.watch(\"timer\", #{{ every: {every} }}, |event| {{ {call} }});\n}});\n"
        );
        let checked =
            std::panic::catch_unwind(|| spec::watch::check(&text, "fuzz.watch").map(|_| ()));
        assert!(checked.is_ok(), "rule case {i} panicked at check:\n{text}");
        let evaluated = std::panic::catch_unwind(|| {
            spec::watch::evaluate(
                &text,
                "fuzz.watch",
                spec::watch::WatchView::default(),
                &[spec::watch::Trigger::Cluster],
                std::time::Instant::now() + std::time::Duration::from_millis(200),
            )
            .map(|_| ())
        });
        assert!(
            evaluated.is_ok(),
            "rule case {i} panicked at evaluation:\n{text}"
        );
    }
    // Every bad case refused quickly, not slowly: the figure, bounded generously.
    eprintln!("2,100 fuzzed cases in {:?}", t0.elapsed());
    assert!(t0.elapsed() < std::time::Duration::from_secs(60));
}

#[test]
fn a_file_over_the_size_cap_is_refused_before_it_is_read() {
    let host = crate::common::Host::new("haco-big");
    // 50 MB that takes no disk (sparse): read, it would keep the loader busy for seconds.
    let big = host.scratch.path.join("big.haco");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(50 << 20)
        .unwrap();
    let t0 = std::time::Instant::now();
    let out = host.run(&["show", big.to_str().unwrap()]);
    let elapsed = t0.elapsed();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(
        err.contains("52428800 bytes, over the 4194304 a definition or rule file may have"),
        "{err}"
    );
    // Refused from its size, not after reading it (generous: a read took ~10 s).
    assert!(elapsed < std::time::Duration::from_secs(3), "{elapsed:?}");
    let watch = host.scratch.path.join("big.watch");
    std::fs::File::create(&watch)
        .unwrap()
        .set_len(50 << 20)
        .unwrap();
    let out = host
        .cmd()
        .env("HACONIWA_TOKEN", "t")
        .env("HACONIWA_SERVER", "127.0.0.1:1")
        .args(["watch", "apply", watch.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("over the 4194304"), "{err}");
}

#[test]
fn health_checks_load_with_their_defaults_and_bad_ones_are_refused_in_place() {
    use haconiwa::spec::health::{HealthCheck, Probe};
    let web = load(include_str!("../../examples/web.haco")).unwrap();
    assert_eq!(
        web.health,
        Some(HealthCheck {
            probe: Probe::Http {
                path: "/healthz".into(),
                port: 8080,
                status: 200
            },
            interval_ms: 2_000,
            timeout_ms: 1_000,
            retries: 3,
            start_period_ms: 5_000,
        })
    );
    let with = |h: &str| {
        format!(
            "haconiwa.define(|c| {{\n    c.name = \"h\";\n    c.init_command = \"/bin/true\";\n    c.chroot_to(\"/r\");\n    c.health(#{{ {h} }});\n}});\n"
        )
    };
    let exec = load(&with("exec: [\"/bin/check\", \"-q\"]")).unwrap();
    assert_eq!(
        exec.health,
        Some(HealthCheck::new(Probe::Exec(vec![
            "/bin/check".into(),
            "-q".into()
        ])))
    );
    let tcp = load(&with(
        "tcp: 5432, interval: 3, retries: 5, status_ignored_by_none: 1",
    ));
    assert!(tcp
        .unwrap_err()
        .contains("unknown option 'status_ignored_by_none'"));
    let tcp = load(&with(
        "tcp: 5432, interval: 3, retries: 5, timeout: \"250ms\"",
    ))
    .unwrap();
    let h = tcp.health.unwrap();
    assert_eq!(
        (h.probe, h.interval_ms, h.retries, h.timeout_ms),
        (Probe::Tcp(5432), 3_000, 5, 250)
    );
    for (bad, says) in [
        ("tcp: 1, http: \"/\"", "give exactly one of exec"),
        ("interval: \"1s\"", "give exactly one of exec"),
        ("tcp: 70000", "health tcp: 70000 is not a port"),
        ("http: \"healthz\", port: 80", "is not a path such as"),
        ("http: \"/h\"", "health http: needs port:"),
        (
            "http: \"/h\", port: 80, status: 999",
            "health status: 999 is not an HTTP status",
        ),
        ("tcp: 80, status: 200", "only an http check has a status"),
        ("exec: []", "health exec: the command is empty"),
        (
            "tcp: 80, interval: \"10ms\"",
            "health interval: at least 100ms",
        ),
        ("tcp: 80, interval: \"soon\"", "'soon' is not a duration"),
        (
            "tcp: 80, retries: 0",
            "health retries: 0; expected 1 to 100",
        ),
    ] {
        let e = err(&with(bad));
        assert!(e.contains(says), "{bad}: {e}");
        assert!(e.starts_with("t.haco:5:"), "{bad}: no position in {e}");
    }
}

#[test]
fn restart_policies_load_with_nomads_defaults_and_bad_ones_are_refused_in_place() {
    use haconiwa::spec::restart::{RestartMode, RestartPolicy};
    let with = |r: &str| {
        format!(
            "haconiwa.define(|c| {{\n    c.name = \"r\";\n    c.init_command = \"/bin/true\";\n    c.chroot_to(\"/r\");\n    c.restart(#{{ {r} }});\n}});\n"
        )
    };
    assert_eq!(
        load(&with("")).unwrap().restart,
        Some(RestartPolicy::default())
    );
    assert_eq!(
        load(&with(
            "attempts: 5, interval: \"10m\", delay: \"2s\", max_delay: \"1m\", mode: \"delay\""
        ))
        .unwrap()
        .restart,
        Some(RestartPolicy {
            attempts: 5,
            interval_ms: 600_000,
            delay_ms: 2_000,
            max_delay_ms: 60_000,
            mode: RestartMode::Delay,
        })
    );
    // A delay above the default cap raises the cap.
    let long = load(&with("delay: \"10m\", interval: \"1h\""))
        .unwrap()
        .restart
        .unwrap();
    assert_eq!((long.delay_ms, long.max_delay_ms), (600_000, 600_000));
    assert_eq!(
        load(&with("")).unwrap().restart.unwrap().mode,
        RestartMode::Fail
    );
    for (bad, says) in [
        (
            "mode: \"always\"",
            "restart mode: 'always'; expected \"fail\"",
        ),
        ("attempts: -1", "restart attempts: -1; expected 0 to 1000"),
        ("delay: \"10ms\"", "restart delay: at least 100ms"),
        (
            "delay: \"5s\", max_delay: \"1s\"",
            "restart max_delay: shorter than the delay",
        ),
        (
            "interval: \"1s\", delay: \"5s\"",
            "restart interval: shorter than the delay",
        ),
        ("tries: 3", "unknown option 'tries'"),
    ] {
        let e = err(&with(bad));
        assert!(e.contains(says), "{bad}: {e}");
        assert!(e.starts_with("t.haco:5:"), "{bad}: no position in {e}");
    }
}

/// The keys an imported OCI bundle needs (issue 25): kernel parameters, masks, the
/// OOM score, propagation, exact kernel filesystems and their order, bind options and
/// device nodes with their numbers; each refused with its position when wrong.
#[test]
fn the_oci_keys_load_and_refuse_what_they_cannot_mean() {
    use haconiwa::spec::{MountRef, Propagation};
    let s = load(&with(
        r#"    c.namespace.unshare(["ipc", "mount"]);
    c.sysctl["kernel.shmmax"] = "4096";
    c.masked_paths = ["/proc/kcore"];
    c.oom_score_adj = -500;
    c.rootfs_propagation = "shared";
    c.system_mounts = ["procfs", "dev"];
    c.add_mount_point("/srv", #{ to: "/srv", readonly: true, noexec: true, restrict: true, propagation: "slave" });
    c.mount_order = ["dev", 0, "procfs"];
    c.devices.allow(#{ path: "/dev/hc", type: "c", major: 1, minor: 3, mode: 0o620, uid: 0, gid: 5 });"#,
    ))
    .unwrap();
    assert_eq!(
        s.sysctl.get("kernel.shmmax").map(String::as_str),
        Some("4096")
    );
    let (masked, readonly) = s.masks.clone().unwrap();
    assert_eq!(masked, vec!["/proc/kcore"]);
    assert!(
        readonly.contains(&"/proc/sys".to_string()),
        "the default read-only list stays"
    );
    assert_eq!(s.oom_score_adj, Some(-500));
    assert_eq!(s.rootfs.propagation, Some(Propagation::Shared));
    assert_eq!(s.system_mounts, vec![SystemMount::Procfs, SystemMount::Dev]);
    let m = &s.mounts[0];
    assert!(m.readonly && m.noexec && m.restrict && m.propagation == Some(Propagation::Slave));
    assert_eq!(
        s.mount_order,
        vec![
            MountRef::System(SystemMount::Dev),
            MountRef::User(0),
            MountRef::System(SystemMount::Procfs)
        ]
    );
    let d = &s.devices[0];
    assert_eq!(
        (d.kind, d.major, d.minor, d.mode, d.owner),
        (Some('c'), Some(1), Some(3), Some(0o620), Some((0, 5)))
    );
    for (line, want) in [
        (
            "    c.sysctl[\"net.ipv4.ip_forward\"] = \"1\";",
            "needs a new net namespace",
        ),
        (
            "    c.sysctl[\"vm.swappiness\"] = \"1\";",
            "would change the host",
        ),
        ("    c.oom_score_adj = 1001;", "outside -1000..1000"),
        (
            "    c.rootfs_propagation = \"everywhere\";",
            "expected shared, slave, private or unbindable",
        ),
        (
            "    c.system_mounts = [\"procfs\", \"nfs\"];",
            "unknown filesystem 'nfs'",
        ),
        (
            "    c.mount_order = [\"procfs\"];",
            "mount_order must name each",
        ),
        (
            "    c.add_mount_point(\"t\", #{ to: \"/t\", fs: \"tmpfs\", restrict: true });",
            "restrict is for binds",
        ),
        (
            "    c.devices.allow(#{ path: \"/dev/x\", type: \"c\" });",
            "needs its type, major and minor",
        ),
        (
            "    c.devices.allow(#{ type: \"z\" });",
            "expected c, b or a",
        ),
    ] {
        let e = err(&with(line));
        assert!(e.starts_with("t.haco:"), "{e}");
        assert!(e.contains(want), "{line}: {e}");
    }
}
