//! Resource limits and privileges, checked from inside real containers: capabilities,
//! OOM kills, pids.max, cpuset, rlimits, user namespaces.

use crate::common::*;

#[test]
fn dropping_cap_sys_time_refuses_date_s_even_for_root_while_chown_works() {
    let host = Host::new("caps");
    let out = host.sh(
        "notime",
        "    c.capabilities.drop([\"cap_sys_time\"]);",
        // Setting the clock to what it already says: harmless even if the drop failed.
        "id -u; date -s \"@$(date +%s)\" 2>&1 | grep -o \"can't set date: Operation not permitted\"; touch /tmp/f && chown 1:1 /tmp/f && echo chown-ok; grep CapBnd /proc/self/status",
    );
    let text = stdout(&out);
    assert!(text.starts_with("0\n"), "not root inside: {text}");
    // (busybox date reports the failure but exits 0, so the message is what counts)
    assert!(
        text.contains("can't set date: Operation not permitted"),
        "{text}"
    );
    assert!(text.contains("chown-ok"), "{text}");
    // Docker's default 14 = 0xa80425fb; nothing else in the bounding set.
    assert!(text.contains("CapBnd:\t00000000a80425fb"), "{text}");
    // allow brings a capability back into every set.
    let out = host.sh(
        "withtime",
        "    c.capabilities.allow([\"sys_time\"]);",
        "grep -E 'Cap(Eff|Bnd)' /proc/self/status",
    );
    let text = stdout(&out);
    assert!(text.contains("CapEff:\t00000000aa0425fb"), "{text}");
    // reset + allow: just that one.
    let out = host.sh(
        "onlykill",
        "    c.capabilities.reset();\n    c.capabilities.allow([\"kill\"]);",
        "grep -E 'CapEff|NoNewPrivs' /proc/self/status",
    );
    let text = stdout(&out);
    assert!(text.contains("CapEff:\t0000000000000020"), "{text}");
    assert!(text.contains("NoNewPrivs:\t1"), "{text}");
    host.assert_clean();
}

#[test]
fn non_root_user_holds_no_capabilities_unless_raised_as_ambient() {
    let host = Host::new("caps-user");
    // Docker's default set is the bounding set, but a non-root user holds none of it.
    let out = host.sh(
        "u1000",
        "    c.uid = 1000;\n    c.gid = 1000;\n    c.groups = [10, 20];\n    c.capabilities.allow([\"net_bind_service\"]);",
        "id; grep -E 'CapEff|CapPrm|CapAmb|CapBnd' /proc/self/status",
    );
    let text = stdout(&out);
    assert!(
        text.contains("uid=1000 gid=1000 groups=10,20"),
        "{text}{}",
        stderr(&out)
    );
    for set in ["CapEff", "CapPrm", "CapAmb"] {
        assert!(
            text.contains(&format!("{set}:\t0000000000000000")),
            "{text}"
        );
    }
    assert!(text.contains("CapBnd:\t00000000a80425fb"), "{text}");
    // Raised explicitly, it holds exactly that one, through the ambient set.
    let out = host.sh(
        "u1000b",
        "    c.uid = 1000;\n    c.gid = 1000;\n    c.capabilities.reset();\n    c.capabilities.ambient([\"net_bind_service\"]);",
        "grep -E 'CapEff|CapAmb|CapBnd' /proc/self/status",
    );
    let text = stdout(&out);
    assert!(
        text.contains("CapEff:\t0000000000000400"),
        "{text}{}",
        stderr(&out)
    );
    assert!(text.contains("CapAmb:\t0000000000000400"), "{text}");
    assert!(text.contains("CapBnd:\t0000000000000400"), "{text}");
    host.assert_clean();
}

#[test]
fn memory_hog_is_oom_killed_and_reported() {
    let host = Host::new("oom");
    let def = host.haco(
        "hog",
        // No swap beyond the limit either (a host with swap would page instead of kill).
        "    c.init_command = [\"/bin/dd\", \"if=/dev/zero\", \"of=/dev/null\", \"bs=256M\", \"count=1\"];\n    c.cgroup[\"memory.max\"] = \"32M\";\n    c.cgroup[\"memory.memsw.limit_in_bytes\"] = \"32M\";",
    );
    let out = host.run(&["run", def.to_str().unwrap()]);
    // Killed by SIGKILL (137), reported as an OOM kill; the test process is fine.
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("killed by the OOM killer"),
        "{}",
        stderr(&out)
    );
    // Detached: the state records it.
    let def = host.haco(
        "hogd",
        "    c.init_command = [\"/bin/dd\", \"if=/dev/zero\", \"of=/dev/null\", \"bs=256M\", \"count=1\"];\n    c.cgroup[\"memory.limit_in_bytes\"] = \"32M\";\n    c.cgroup[\"memory.memsw.limit_in_bytes\"] = \"32M\";\n    c.daemonize();",
    );
    host.ok(&["run", def.to_str().unwrap()]);
    let st = host.wait_exited("hogd", std::time::Duration::from_secs(10));
    assert_eq!(st["oom_killed"], true, "{st}");
    assert_eq!(st["reason"], "oom-killed", "{st}");
    assert!(host.ok(&["ps"]).contains("oom-killed"));
    host.assert_clean();
}

#[test]
fn fork_bomb_stops_at_pids_max() {
    let host = Host::new("pids");
    let out = host.sh(
        "bomb",
        "    c.cgroup[\"pids.max\"] = 16;",
        // The bomb runs in a subshell (ash gives up at the first failed fork); the count
        // uses only builtins, since no fork is possible while the sleeps hold every pid.
        "(i=0; while [ $i -lt 40 ]; do sleep 3 & i=$((i+1)); done); n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; echo $n",
    );
    let count: u32 = stdout(&out)
        .trim()
        .lines()
        .last()
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    assert!(
        count > 0 && count <= 16,
        "{count} processes: {}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("can't fork")
            || stderr(&out).contains("Resource temporarily unavailable"),
        "{}",
        stderr(&out)
    );
    host.assert_clean();
}

#[test]
fn cpuset_restricts_allowed_cpus_and_cpu_quota_applies() {
    let host = Host::new("cpuset");
    let def = host.haco(
        "cpu0",
        "    c.cgroup[\"cpuset.cpus\"] = \"0\";\n    c.cgroup[\"cpu.max\"] = \"20000 100000\";\n    c.init_command = [\"/bin/sh\", \"-c\", \"grep Cpus_allowed_list /proc/self/status; sleep 30\"];\n    c.daemonize();",
    );
    host.ok(&["run", def.to_str().unwrap()]);
    let logs = wait_for_log(&host, "cpu0", "Cpus_allowed_list");
    assert!(logs.contains("Cpus_allowed_list:\t0\n"), "{logs}");
    // The quota, read where the kernel enforces it: the container's cpu cgroup.
    let quota = cgroup_file(&host, "cpu0", &["cpu.max", "cpu.cfs_quota_us"]);
    assert!(
        quota.trim() == "20000" || quota.starts_with("20000 100000"),
        "quota: {quota}"
    );
    let period = cgroup_file(&host, "cpu0", &["cpu.max", "cpu.cfs_period_us"]);
    assert!(period.contains("100000"), "period: {period}");
    host.ok(&["kill", "cpu0", "-s", "KILL"]);
    host.wait_exited("cpu0", std::time::Duration::from_secs(5));
    host.assert_clean();
}

/// The first of `files` found in the container's cgroup directories.
fn cgroup_file(host: &Host, name: &str, files: &[&str]) -> String {
    for dir in host.parent_cgroups() {
        let found = walk(&dir.join(name), files);
        if let Some(text) = found {
            return text;
        }
    }
    panic!("none of {files:?} in the cgroups of {name}");
}

fn walk(dir: &std::path::Path, files: &[&str]) -> Option<String> {
    files
        .iter()
        .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
}

/// Waits (bounded) until the detached container's log holds `needle`.
fn wait_for_log(host: &Host, name: &str, needle: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let logs = host.ok(&["logs", name]);
        if logs.contains(needle) {
            return logs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "log of {name}: {logs}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn rlimits_are_seen_inside() {
    let host = Host::new("rlimit");
    let out = host.sh(
        "lim",
        "    c.set_limit(\"nofile\", 123, 456);\n    c.set_limit(\"core\", 0);",
        "ulimit -n; ulimit -Hn; ulimit -c",
    );
    assert_eq!(stdout(&out), "123\n456\n0\n", "{}", stderr(&out));
    host.assert_clean();
}

#[test]
fn user_namespace_maps_root_inside_to_an_unprivileged_range() {
    let host = Host::new("userns");
    let root = busybox_rootfs();
    let def = host.haco_raw(
        "userns",
        &format!(
            "haconiwa.define(|c| {{\n  c.name = \"userns\";\n  c.chroot_to(\"{}\");\n  c.namespace.unshare([\"user\", \"uts\", \"ipc\", \"pid\", \"mount\", \"net\"]);\n  c.namespace.uid_map(0, 100000, 65536);\n  c.namespace.gid_map(0, 200000, 65536);\n  c.init_command = [\"/bin/sh\", \"-c\", \"id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map; sleep 30\"];\n  c.daemonize();\n}});\n",
            root.display()
        ),
    );
    host.ok(&["run", def.to_str().unwrap()]);
    let mut logs = String::new();
    for _ in 0..200 {
        logs = host.ok(&["logs", "userns"]);
        if logs.lines().count() >= 4 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let lines: Vec<String> = logs
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        lines,
        vec!["0", "0", "0 100000 65536", "0 200000 65536"],
        "{logs}"
    );
    // Seen from the host, the command runs as uid 100000, gid 200000.
    let st = host.state("userns").unwrap();
    let pid = st["pid"].as_i64().unwrap();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let cmd_pid = children
        .split_whitespace()
        .next()
        .expect("the command under PID 1");
    let status = std::fs::read_to_string(format!("/proc/{cmd_pid}/status")).unwrap();
    assert!(
        status.lines().any(|l| l.starts_with("Uid:\t100000\t")),
        "{status}"
    );
    assert!(
        status.lines().any(|l| l.starts_with("Gid:\t200000\t")),
        "{status}"
    );
    host.ok(&["kill", "userns", "--timeout", "5"]);
    host.assert_clean();
}
