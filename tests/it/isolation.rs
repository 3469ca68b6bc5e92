//! Real containers, checked from inside: each isolation feature of the launcher.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[test]
fn hostname_is_the_containers() {
    let host = Host::new("hostname");
    let out = host.sh("hn1", "    c.hostname = \"inside-box\";", "hostname");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "inside-box");
    // Default: the name.
    let out = host.sh("hn2", "", "hostname");
    assert_eq!(stdout(&out).trim(), "hn2");
    assert_ne!(
        stdout(&out).trim(),
        nix::unistd::gethostname().unwrap().to_string_lossy()
    );
    host.assert_clean();
}

#[test]
fn pid_namespace_has_its_own_pid_1_and_only_its_processes() {
    let host = Host::new("pidns");
    let out = host.sh(
        "pid1",
        "",
        "echo self=$$; ls /proc | grep -E '^[0-9]+$' | wc -l; cat /proc/1/status | grep PPid",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    // PID 1 is haconiwa's reaper, the command comes right after it.
    assert_eq!(lines[0], "self=2", "{text}");
    let count: usize = lines[1].trim().parse().unwrap();
    // PID 1, the shell, ls, grep, wc: nothing of the host.
    assert!(count <= 6, "saw {count} processes in /proc: {text}");
    // PID 1's parent is outside the namespace, so it shows as 0.
    assert!(lines[2].contains("PPid:\t0"), "{text}");
    host.assert_clean();
}

#[test]
fn host_mounts_and_container_mounts_do_not_cross() {
    let host = Host::new("mounts");
    // A mount made on the host before the container starts...
    let host_mnt = host.scratch.path.join("host-only");
    std::fs::create_dir_all(&host_mnt).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &host_mnt,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _guard = Unmount(host_mnt.clone());
    let def = host.haco(
        "mnt",
        "    c.init_command = [\"/bin/sh\", \"-c\", \"cat /proc/self/mountinfo; sleep 30\"];\n    c.add_mount_point(\"tmpfs\", #{ to: \"/scratch-inside\", fs: \"tmpfs\" });\n    c.daemonize();",
    );
    host.ok(&["run", def.to_str().unwrap()]);
    // ...is not visible inside,
    let mut inside = String::new();
    for _ in 0..100 {
        inside = host.ok(&["logs", "mnt"]);
        if inside.contains("scratch-inside") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        inside.contains("/scratch-inside"),
        "container mount missing inside: {inside}"
    );
    assert!(
        !inside.contains("host-only"),
        "host mount leaked into the container: {inside}"
    );
    // and the container's mounts are not visible on the host.
    let host_view = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !host_view.contains("scratch-inside"),
        "container mount leaked to the host"
    );
    assert!(
        !host_view.contains(busybox_rootfs().to_str().unwrap()),
        "rootfs bind leaked to the host"
    );
    host.ok(&["kill", "mnt", "--timeout", "5"]);
    drop(_guard);
    host.assert_clean();
}

#[test]
fn new_network_namespace_has_only_loopback_and_it_is_up() {
    let host = Host::new("netns");
    let out = host.sh(
        "net",
        "",
        "ls /sys/class/net; cat /sys/class/net/lo/operstate /sys/class/net/lo/flags",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "lo", "{text}");
    // IFF_UP set.
    let flags = u32::from_str_radix(lines[2].trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "lo is down: {text}");
    host.assert_clean();
}

#[test]
fn readonly_bind_mount_refuses_writes_and_writable_one_accepts() {
    let host = Host::new("robind");
    let data = host.scratch.path.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("hello"), "from host\n").unwrap();
    let extra = format!(
        "    c.add_mount_point({:?}, #{{ to: \"/ro\", readonly: true }});\n    c.add_mount_point({:?}, #{{ to: \"/rw\" }});",
        data.display().to_string(),
        data.display().to_string()
    );
    let out = host.sh(
        "ro",
        &extra,
        "cat /ro/hello; touch /ro/x && echo ro-writable; touch /rw/y && echo rw-ok",
    );
    let text = stdout(&out);
    assert!(text.contains("from host"), "{text}");
    assert!(
        !text.contains("ro-writable"),
        "read-only mount accepted a write: {text}"
    );
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );
    assert!(text.contains("rw-ok"), "{text}");
    assert!(data.join("y").exists());
    assert!(!data.join("x").exists());
    host.assert_clean();
}

#[test]
fn environment_replaces_the_hosts_and_workdir_applies() {
    let host = Host::new("env");
    let def = host.haco(
        "env",
        "    c.init_command = [\"/bin/sh\", \"-c\", \"echo foo=$FOO; pwd; env | grep -c LEAK_CHECK\"];\n    c.environment = #{ FOO: \"bar baz\", PATH: \"/bin\" };\n    c.workdir = \"/etc\";",
    );
    let out = host
        .cmd()
        .env("LEAK_CHECK", "1")
        .args(["run", def.to_str().unwrap()])
        .output()
        .unwrap();
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        vec!["foo=bar baz", "/etc", "0"],
        "{text}{}",
        stderr(&out)
    );
    host.assert_clean();
}

#[test]
fn exit_status_and_signal_status_propagate() {
    let host = Host::new("exit");
    let out = host.sh("ex7", "", "exit 7");
    assert_eq!(out.status.code(), Some(7));
    let out = host.sh("sig", "", "kill -USR1 $$; sleep 5");
    assert_eq!(out.status.code(), Some(128 + 10), "{}", stderr(&out));
    host.assert_clean();
}

#[test]
fn pid_1_reaps_orphaned_grandchildren() {
    let host = Host::new("reap");
    // The grandchild is orphaned at once (its parent subshell exits), shows itself as a
    // child of PID 1, and dies 0.3 s later; PID 1 must reap it, so no zombie shows up.
    let out = host.sh(
        "reap",
        "",
        "(sleep 0.3 & echo orphan $!); sleep 0.1; for s in /proc/[0-9]*/stat; do read -r l < $s; set -- $l; echo \"$1 $3 $4\"; done; echo --; sleep 1; for s in /proc/[0-9]*/stat; do read -r l < $s; set -- $l; echo \"$1 $3 $4\"; done",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let orphan = text
        .lines()
        .find_map(|l| l.strip_prefix("orphan "))
        .expect("the orphan's pid")
        .to_string();
    let (before, after) = text.split_once("--\n").expect("two listings");
    // It existed, orphaned: adopted by PID 1 (ppid 1).
    assert!(
        before
            .lines()
            .any(|l| l.starts_with(&format!("{orphan} ")) && l.ends_with(" 1")),
        "no orphan under PID 1: {text}"
    );
    // And it was reaped: gone, no zombie anywhere.
    assert!(
        !after.lines().any(|l| l.starts_with(&format!("{orphan} "))),
        "the orphan is still listed: {text}"
    );
    assert!(
        !text.lines().any(|l| l.split(' ').nth(1) == Some("Z")),
        "zombie left: {text}"
    );
    host.assert_clean();
}

#[test]
fn term_is_forwarded_to_the_command_by_pid_1() {
    let host = Host::new("fwd");
    let def = host.haco(
        "fwd",
        "    c.init_command = [\"/bin/sh\", \"-c\", \"trap 'echo got-term; exit 5' TERM; echo ready; while :; do sleep 0.05; done\"];\n    c.daemonize();",
    );
    host.ok(&["run", def.to_str().unwrap()]);
    for _ in 0..200 {
        if host.ok(&["logs", "fwd"]).contains("ready") {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    host.ok(&["kill", "fwd", "-s", "TERM", "--timeout", "5"]);
    let st = host.wait_exited("fwd", Duration::from_secs(5));
    assert_eq!(st["exit_code"], 5, "{st}");
    assert!(host.ok(&["logs", "fwd"]).contains("got-term"));
    host.assert_clean();
}

#[test]
fn namespace_enter_joins_a_namespace_made_by_the_test() {
    let host = Host::new("enter");
    require_program("ip", "iproute2");
    let ns = format!("hcn-test-{}", std::process::id());
    struct NetNs(String);
    impl Drop for NetNs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.0])
                .status();
        }
    }
    let ok = |args: &[&str]| {
        let st = std::process::Command::new("ip")
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "ip {args:?}");
    };
    ok(&["netns", "add", &ns]);
    let _guard = NetNs(ns.clone());
    // (this kernel has no dummy driver; a veth pair inside the namespace does the same)
    ok(&[
        "-n", &ns, "link", "add", "hcveth0", "type", "veth", "peer", "name", "hcveth1",
    ]);
    let root = busybox_rootfs();
    let def = host.haco_raw(
        "enter",
        &format!(
            "haconiwa.define(|c| {{\n  c.name = \"enter\";\n  c.chroot_to(\"{}\");\n  c.namespace.unshare([\"mount\", \"pid\", \"uts\"]);\n  c.namespace.enter(\"net\", #{{ via: \"/var/run/netns/{ns}\" }});\n  c.init_command = [\"/bin/sh\", \"-c\", \"cat /proc/net/dev; ls /sys/class/net\"];\n}});\n",
            root.display()
        ),
    );
    let out = host.run(&["run", def.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("hcveth0"), "{}", stdout(&out));
    // sysfs shows exactly the joined namespace's interfaces, none of the host's.
    let text = stdout(&out);
    let listed: Vec<&str> = text.lines().rev().take(3).collect();
    assert_eq!(listed, vec!["lo", "hcveth1", "hcveth0"], "{text}");
    host.assert_clean();
}

#[test]
fn design_sleeper_runs_unchanged() {
    let host = Host::new("sleeper");
    // examples/sleeper.haco (the design's file) verbatim, with the test's root filesystem path.
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/sleeper.haco"
    ))
    .unwrap();
    assert!(text.contains("c.daemonize();") && text.contains("uuid_short()"));
    let text = text.replace(
        "/var/lib/haconiwa/rootfs/busybox",
        busybox_rootfs().to_str().unwrap(),
    );
    let def = host.haco_raw("sleeper", &text);
    let out = host.ok(&[
        "run",
        def.to_str().unwrap(),
        "--",
        "/bin/sh",
        "-c",
        "grep CapBnd /proc/self/status; hostname; sleep 0.5",
    ]);
    let name = out.split_whitespace().next().unwrap().to_string();
    assert!(
        name.starts_with("sleeper-") && name.len() == "sleeper-".len() + 8,
        "{out}"
    );
    // Its limits hold while it runs: 64M of memory, 64 pids (read from its cgroups).
    let mut limits = Vec::new();
    for dir in host.parent_cgroups() {
        for f in ["memory.max", "memory.limit_in_bytes", "pids.max"] {
            if let Ok(v) = std::fs::read_to_string(dir.join(&name).join(f)) {
                limits.push(format!("{f}={}", v.trim()));
            }
        }
    }
    assert!(
        limits
            .iter()
            .any(|l| l == "memory.max=67108864" || l == "memory.limit_in_bytes=67108864"),
        "{limits:?}"
    );
    assert!(limits.iter().any(|l| l == "pids.max=64"), "{limits:?}");
    let st = host.wait_exited(&name, Duration::from_secs(10));
    assert_eq!(st["exit_code"], 0, "{st}");
    // Its own UTS namespace and name; Docker's 14 exactly (the CAP_SYS_TIME it drops is not
    // among them: nothing was added).
    let logs = host.ok(&["logs", &name]);
    assert!(logs.contains("CapBnd:\t00000000a80425fb"), "{logs}");
    assert!(logs.contains(&name), "{logs}");
    host.assert_clean();
}

#[test]
fn bridge_network_gives_an_address_reachable_from_the_host() {
    let host = Host::new("bridge");
    require_program("ip", "iproute2");
    require_program("nsenter", "util-linux");
    // The "host" is a network namespace of the test's own: the bridge and its addresses
    // exist only there, and go with it.
    let ns = format!("hct-br-{}", std::process::id());
    struct Netns(String);
    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.0])
                .status();
        }
    }
    let made = std::process::Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .unwrap();
    assert!(made.success(), "ip netns add {ns}");
    let _guard = Netns(ns.clone());
    let br = "hcbr0";
    let extra = format!("    c.network(#{{ bridge: \"{br}\", address: \"10.213.7.2/24\", gateway: \"10.213.7.1\" }});");
    let def = host.haco(
        "br",
        &format!(
            "    c.init_command = [\"/bin/sh\", \"-c\", {:?}];\n{extra}",
            "ip -4 addr show eth0 | grep inet; ip route | grep default; ping -c 1 -W 2 10.213.7.1 >/dev/null && echo gw-reachable"
        ),
    );
    // nsenter, not `ip netns exec` (which remounts /sys and hides the cgroup mounts).
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .arg(crate::common::BIN)
        .args(["run", def.to_str().unwrap()])
        .env("HACONIWA_STATE_DIR", &host.state_dir)
        .env("HACONIWA_CGROUP_PARENT", &host.cgroup_parent)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("inet 10.213.7.2/24"), "{text}");
    assert!(text.contains("default via 10.213.7.1"), "{text}");
    assert!(text.contains("gw-reachable"), "{text}");
    // The host end of the veth goes away with the container's namespace (the kernel
    // tears it down after the container ends, within moments).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let links = std::process::Command::new("ip")
            .args(["-n", &ns, "-o", "link", "show", "master", br])
            .output()
            .unwrap();
        if stdout(&links).trim().is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "veth left on the bridge: {}",
            stdout(&links)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    host.assert_clean();
}

/// A removed container leaves no page cache charged to its memory cgroup: what it wrote
/// to a host directory (and ext4's blocks behind it) would keep the cgroup alive in the
/// kernel, dying, until memory runs short, and thousands of those slow every later start
/// and removal on the host (5,000 after each run of `scripts/bench-scale --containers
/// 5000`). The charges of a dying child still count in its parent's usage (v1).
#[test]
fn a_removed_containers_page_cache_does_not_keep_its_memory_cgroup_alive() {
    let host = Host::new("memfree");
    let (parent, _cleanup) = kept_memory_parent(&host);
    let data = host.scratch.path.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let extra = format!(
        "    c.cgroup[\"memory.max\"] = \"64M\";\n    c.add_mount_point({:?}, #{{ to: \"/data\" }});",
        data.display().to_string()
    );
    let out = host.sh(
        "memfree",
        &extra,
        "dd if=/dev/zero of=/data/f bs=1M count=16 2>/dev/null && echo written",
    );
    assert!(stdout(&out).contains("written"), "{}", stderr(&out));
    assert_eq!(std::fs::metadata(data.join("f")).unwrap().len(), 16 << 20);
    let usage: u64 = std::fs::read_to_string(parent.join("memory.usage_in_bytes"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        usage < 4 << 20,
        "{usage} bytes still charged under {} after the container's removal (it wrote 16 MiB)",
        parent.display()
    );
}

/// The v1 memory cgroup that holds `host`'s containers, made now, with a sibling that
/// keeps it after their cgroups go (so that what a dying child still holds can be read
/// there); both removed when the guard drops, whatever happens.
fn kept_memory_parent(host: &Host) -> (PathBuf, impl Drop) {
    assert!(
        Path::new("/sys/fs/cgroup/memory/memory.usage_in_bytes").exists(),
        "this test needs the v1 memory controller at /sys/fs/cgroup/memory"
    );
    let parent = Path::new("/sys/fs/cgroup/memory").join(&host.cgroup_parent);
    let keep = parent.join("keep");
    std::fs::create_dir_all(&keep).unwrap();
    struct Rmdir(Vec<PathBuf>);
    impl Drop for Rmdir {
        fn drop(&mut self) {
            for d in &self.0 {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
    (parent.clone(), Rmdir(vec![keep, parent]))
}

/// A `total_*` field of a v1 memory cgroup's `memory.stat` (its descendants included,
/// dying ones too).
fn memory_stat_total(dir: &Path, field: &str) -> u64 {
    let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap();
    let key = format!("total_{field} ");
    stat.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no total_{field} in {}", dir.display()))
}

/// What the launch itself allocates (its mounts, the overlayfs of the writable layer, the
/// mount points it makes there) is not charged to the container's memory cgroup: it
/// counted against the container's limit, and its page cache kept the cgroup alive in
/// the kernel after the removal (200 sleepers started and killed left 201 dying memory
/// cgroups). The child joins its cgroups once its mounts are built. On this machine a
/// sleeper's kernel memory peaks at 127-131 kB, and at 200-205 kB when the child joined
/// first: the first assertion is the one that tells the two apart; the page cache left
/// after the removal is checked too, but a warm cache hides the launch's share of it.
#[test]
fn a_containers_launch_is_not_charged_to_its_memory_cgroup() {
    let host = Host::new("memlaunch");
    let (parent, _cleanup) = kept_memory_parent(&host);
    // The image's binary read from here first: its pages are not the container's.
    std::fs::read(busybox_rootfs().join("bin/busybox")).unwrap();
    let def = host.haco(
        "memlaunch",
        "    c.init_command = [\"/bin/sleep\", \"2\"];\n    c.cgroup[\"memory.max\"] = \"64M\";",
    );
    let mut run = host
        .cmd()
        .args(["run", def.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let dir = parent.join("memlaunch");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // Running: PID 1 and the sleeper in the cgroup.
    while std::fs::read_to_string(dir.join("cgroup.procs")).map_or(0, |s| s.lines().count()) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the container never ran"
        );
        assert!(
            run.try_wait().unwrap().is_none(),
            "the container ended early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let kmem: u64 = std::fs::read_to_string(dir.join("memory.kmem.max_usage_in_bytes"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(run.wait().unwrap().success());
    assert!(
        kmem <= 160 << 10,
        "{kmem} bytes of kernel memory charged to {} at its peak: the launch's own",
        dir.display()
    );
    // The kernel brings a cgroup's counts up to date every 2 s (sooner only after many
    // changes).
    std::thread::sleep(Duration::from_millis(2500));
    let left = memory_stat_total(&parent, "cache");
    assert!(
        left <= 16 << 10,
        "{left} bytes of page cache left under {} after the removal",
        parent.display()
    );
}

/// A container's v1 memory cgroup is one its parent made ahead, from a pool of
/// `cgroup_pool::SIZE` (making a memory cgroup costs this kernel 0.2-0.7 ms, a rename
/// 6 µs), and the pool is filled again after each start: by the foreground `run`'s
/// remover, by a background container's monitor. The container still gets its own
/// limit. A level below the parent's first goes with its last container, pool and all.
#[test]
fn a_containers_memory_cgroup_comes_from_its_parents_pool_which_is_filled_again() {
    use haconiwa::launcher::cgroup_pool::SIZE;
    use std::os::unix::fs::MetadataExt;
    let host = Host::new("mempool");
    let memory = Path::new("/sys/fs/cgroup/memory");
    assert!(
        memory.join("memory.usage_in_bytes").exists(),
        "this test needs the v1 memory controller at /sys/fs/cgroup/memory"
    );
    let ino = |p: &Path| std::fs::metadata(p).map(|m| m.ino()).unwrap_or(0);
    // The pool of `dir` once full (bounded), by inode.
    let full = |dir: &Path| -> Vec<u64> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let pool = pooled_cgroups(dir);
            if pool.len() == SIZE {
                return pool.iter().map(|p| ino(p)).collect();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the pool of {} is not filled again within 10 s: {pool:?}",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let parent = memory.join(&host.cgroup_parent);
    let first = host.haco("first", "    c.init_command = [\"/bin/true\"];");
    host.ok(&["run", first.to_str().unwrap()]);
    let pool = full(&parent);
    // That run's remover stays a second and fills the pool once more as it ends: wait
    // for it to end (found by its verb and this view's state directory in its
    // environment), so that only the monitor below can fill the pool.
    let mark = format!("HACONIWA_STATE_DIR={}", host.state_dir.display());
    let removers = || -> Vec<String> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                let p = e.path();
                std::fs::read(p.join("cmdline"))
                    .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"__remove"))
                    && std::fs::read(p.join("environ"))
                        .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == mark.as_bytes()))
            })
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !removers().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the remover {:?} still runs after 10 s",
            removers()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(pooled_cgroups(&parent).len(), SIZE);

    let limited =
        "    c.init_command = [\"/bin/sleep\", \"30\"];\n    c.cgroup[\"memory.max\"] = \"48M\";";
    let second = host.haco("second", limited);
    host.ok(&["run", "-D", second.to_str().unwrap()]);
    let taken = ino(&parent.join("second"));
    assert!(
        pool.contains(&taken),
        "the container's memory cgroup (inode {taken}) is not one of the pool's {pool:?}"
    );
    let limit = std::fs::read_to_string(parent.join("second/memory.limit_in_bytes")).unwrap();
    assert_eq!(limit.trim(), (48u64 << 20).to_string());
    let refilled = full(&parent);
    assert!(
        !refilled.contains(&taken),
        "{refilled:?} still holds {taken}"
    );

    // Below the first level: the pool goes with the level's last container.
    let level = format!("{}/node-7", host.cgroup_parent);
    let third = host.haco("third", "    c.init_command = [\"/bin/sleep\", \"30\"];");
    let below = |args: &[&str]| {
        let out = host
            .cmd()
            .env("HACONIWA_CGROUP_PARENT", &level)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    };
    below(&["run", "-D", third.to_str().unwrap()]);
    full(&memory.join(&level));
    below(&["kill", "third", "-s", "KILL"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while memory.join(&level).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} is still there 10 s after its last container, its pool {:?}",
            memory.join(&level).display(),
            pooled_cgroups(&memory.join(&level))
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    host.ok(&["kill", "second", "-s", "KILL"]);
    host.assert_clean();
}
