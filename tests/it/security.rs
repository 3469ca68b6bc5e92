//! The attacks of issue 8, tried from inside real containers: each must fail on the
//! default container. A small static probe (tests/probe/probe.c, built here with gcc)
//! makes the system calls busybox cannot.

use crate::common::{require_program, stderr, stdout, Cgroup2Mount, Host, Scratch};
use std::io::Read;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The probe, built once per test binary.
fn probe() -> PathBuf {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            require_program("gcc", "gcc and libc6-dev");
            let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("haconiwa-probe");
            let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/probe/probe.c");
            let built = std::process::Command::new("gcc")
                .args(["-static", "-O1", "-o"])
                .arg(&out)
                .arg(src)
                .output()
                .expect("run gcc");
            assert!(
                built.status.success(),
                "building the probe needs gcc and libc6-dev (static libc): {}",
                stderr(&built)
            );
            out
        })
        .clone()
}

/// Definition lines that bind the probe in at /probe.
fn with_probe(extra: &str) -> String {
    format!(
        "    c.add_mount_point(\"{}\", #{{ to: \"/probe\", readonly: true }});\n{extra}",
        probe().display()
    )
}

/// Runs the probe's checks in a container of `extra`; returns "check: result" lines.
fn probe_in(host: &Host, name: &str, extra: &str, checks: &str) -> String {
    let out = host.sh(name, &with_probe(extra), &format!("/probe {checks}"));
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    stdout(&out)
}

fn has(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "expected '{line}' in:\n{text}"
    );
}

#[test]
fn pid_1_cannot_be_traced_read_or_turned_into_a_root_shell() {
    let host = Host::new("sec-pid1");
    let text = probe_in(&host, "pid1", "", "ptrace1 exe1-write exe1-read mem1");
    has(&text, "ptrace1: EPERM");
    has(&text, "exe1-write: EACCES");
    has(&text, "exe1-read: EACCES");
    has(&text, "mem1: EACCES");
    // Even code injected into PID 1 would gain nothing from an exec: no bounding set, no
    // new privileges, nothing but CAP_KILL held. PID 1 hardens itself right after the
    // command's exec (it is non-dumpable from before the command exists, so nothing can
    // be injected meanwhile); on a loaded machine the command may look first: it waits
    // (at most 2 s) for the hardening, then reads.
    let out = host.sh(
        "pid1s",
        "",
        "for i in $(seq 20); do grep -q 'NoNewPrivs:.1' /proc/1/status && break; sleep 0.1; done; grep -E 'CapPrm|CapEff|CapBnd|CapInh|CapAmb|NoNewPrivs' /proc/1/status",
    );
    let text = stdout(&out);
    for line in [
        "CapPrm:\t0000000000000020",
        "CapEff:\t0000000000000020",
        "CapBnd:\t0000000000000000",
        "CapInh:\t0000000000000000",
        "CapAmb:\t0000000000000000",
        "NoNewPrivs:\t1",
    ] {
        has(&text, line);
    }
    host.assert_clean();
}

#[test]
fn with_cap_sys_ptrace_granted_the_host_binary_is_still_not_writable() {
    let host = Host::new("sec-ptrace");
    let text = probe_in(
        &host,
        "ptr",
        "    c.capabilities.allow([\"sys_ptrace\"]);",
        "ptrace1 exe1-write",
    );
    // The definition asked for ptrace; the binary PID 1 runs stays unwritable.
    has(&text, "ptrace1: ok");
    assert!(
        text.lines()
            .any(|l| l.starts_with("exe1-write: ") && l != "exe1-write: ok"),
        "{text}"
    );
    host.assert_clean();
}

#[test]
fn a_container_cannot_change_the_shared_root_or_what_create_runs() {
    let host = Host::new("sec-root");
    let root = host.scratch.path.join("shared");
    let marker = host.scratch.path.join("host-marker");
    let def = host.haco_raw(
        "shared",
        &format!(
            "haconiwa.define(|c| {{\n  c.name = \"shared\";\n  c.chroot_to(\"{}\");\n  c.bootstrap(#{{ strategy: \"busybox\" }});\n  c.namespace.unshare([\"mount\", \"pid\"]);\n  c.init_command = [\"/bin/cat\", \"/srv/count\"];\n  c.run_shell(\"mkdir -p /srv; echo x >> /srv/count\", #{{ name: \"count\" }});\n}});\n",
            root.display()
        ),
    );
    host.ok(&["create", def.to_str().unwrap()]);
    // The attack: replace /bin/sh with a script that reaches for the host, wipe the
    // provision state the old layout kept inside the root.
    let evil = format!(
        "rm -f /bin/sh; printf '#!/bin/busybox sh\\n/bin/busybox touch {m}\\n' > /bin/sh; /bin/busybox chmod 755 /bin/sh; /bin/busybox rm -rf /.haconiwa /srv; /bin/busybox echo done",
        m = marker.display()
    );
    let out = host
        .cmd()
        .args([
            "run",
            def.to_str().unwrap(),
            "--",
            "/bin/busybox",
            "sh",
            "-c",
            &evil,
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "done\n", "{}", stderr(&out));
    // The base is untouched: /bin/sh is still busybox's link, /srv/count still there.
    let sh = std::fs::symlink_metadata(root.join("bin/sh")).unwrap();
    assert!(
        sh.file_type().is_symlink(),
        "the base's /bin/sh was replaced"
    );
    assert_eq!(host.ok(&["run", def.to_str().unwrap()]), "x\n");
    // create runs nothing again, and nothing the container wrote runs on the host.
    let out = host.run(&["create", def.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains("provisioned"), "{}", stdout(&out));
    assert_eq!(host.ok(&["run", def.to_str().unwrap()]), "x\n");
    assert!(!marker.exists(), "the container's script ran on the host");
    // A forced rerun runs the real shell, in a sandbox, on the base.
    host.ok(&["provision", def.to_str().unwrap()]);
    assert_eq!(host.ok(&["run", def.to_str().unwrap()]), "x\nx\n");
    assert!(!marker.exists());
    host.assert_clean();
}

#[test]
fn chroot_mode_is_refused_and_a_chroot_inside_reaches_no_host_file() {
    let host = Host::new("sec-chroot");
    let def = host.haco_raw(
        "ch",
        "haconiwa.define(|c| { c.name = \"ch\"; c.init_command = \"/bin/true\"; c.chroot_to(\"/r\", #{ chroot: true }); });",
    );
    let out = host.run(&["show", def.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("ch.haco:1:") && stderr(&out).contains("chroot mode is refused"),
        "{}",
        stderr(&out)
    );
    // Without "mount" in the list, the container still gets a mount namespace.
    let def = host.haco_raw(
        "nomnt",
        "haconiwa.define(|c| { c.name = \"nomnt\"; c.init_command = \"/bin/true\"; c.chroot_to(\"/r\"); c.namespace.unshare([\"pid\"]); });",
    );
    let shown = host.ok(&["show", def.to_str().unwrap()]);
    assert!(shown.contains("namespaces:    pid, mount"), "{shown}");
    // The classic escape from inside: it chroots, but no host file is reachable.
    let marker = host.scratch.path.join("host-only");
    std::fs::write(&marker, "secret").unwrap();
    let text = probe_in(
        &host,
        "esc",
        "",
        &format!("chroot-escape {}", marker.display()),
    );
    has(&text, "chroot: ok");
    has(&text, "host-marker: ENOENT");
    host.assert_clean();
}

#[test]
fn a_non_root_user_holds_nothing_and_cannot_read_a_root_only_file() {
    let host = Host::new("sec-user");
    let secret = host.scratch.path.join("secret");
    std::fs::write(&secret, "root only\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = host.sh(
        "u1000",
        &format!(
            "    c.uid = 1000;\n    c.gid = 1000;\n    c.add_mount_point(\"{}\", #{{ to: \"/secret\", readonly: true }});",
            secret.display()
        ),
        "grep CapEff /proc/self/status; cat /secret || echo refused",
    );
    let text = stdout(&out);
    has(&text, "CapEff:\t0000000000000000");
    has(&text, "refused");
    assert!(!text.contains("root only"), "{text}");
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    host.assert_clean();
}

#[test]
fn the_default_filter_refuses_what_docker_refuses_and_unconfined_does_not() {
    let host = Host::new("sec-seccomp");
    let checks = "keyctl add_key userns io_uring clone3 clone-newns";
    let text = probe_in(&host, "filtered", "", checks);
    for line in [
        "keyctl: EPERM",
        "add_key: EPERM",
        "userns: EPERM",
        "io_uring: EPERM",
        "clone3: ENOSYS",
        "clone-newns: EPERM",
    ] {
        has(&text, line);
    }
    let out = host.sh("filt-status", "", "grep Seccomp: /proc/self/status");
    has(&stdout(&out), "Seccomp:\t2");
    let text = probe_in(
        &host,
        "unconfined",
        "    c.seccomp = \"unconfined\";",
        "keyctl userns io_uring clone3",
    );
    for line in ["keyctl: ok", "userns: ok", "io_uring: ok", "clone3: ok"] {
        has(&text, line);
    }
    // A profile file in Docker's format.
    let profile = host.scratch.path.join("nomkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
    )
    .unwrap();
    let out = host.sh(
        "profiled",
        &format!("    c.seccomp = \"{}\";", profile.display()),
        "mkdir /tmp/x 2>&1; echo rc=$?",
    );
    let text = stdout(&out);
    assert!(
        text.contains("Permission denied") && text.contains("rc=1"),
        "{text}"
    );
    // A broken profile: a clear launch error naming it, nothing left behind.
    std::fs::write(&profile, "{ not json").unwrap();
    let out = host.sh(
        "badprofile",
        &format!("    c.seccomp = \"{}\";", profile.display()),
        "true",
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("container badprofile: seccomp profile")
            && stderr(&out).contains("nomkdir.json"),
        "{}",
        stderr(&out)
    );
    host.assert_clean();
}

#[test]
fn only_allowlisted_devices_can_be_made_or_opened() {
    let host = Host::new("sec-dev");
    let text = probe_in(&host, "dev", "", "mknod-block mknod-null");
    has(&text, "mknod-block: EPERM");
    has(&text, "mknod-null: ok");
    has(&text, "open-null: ok");
    // Allowed explicitly, a block device can be made.
    let text = probe_in(
        &host,
        "devok",
        "    c.devices.allow(\"b 7:* rwm\");",
        "mknod-block",
    );
    has(&text, "mknod-block: ok");
    host.assert_clean();
}

#[test]
fn on_cgroup_v2_a_device_program_keeps_the_same_allowlist() {
    let host = Host::new("sec-dev2");
    let cg2 = Cgroup2Mount::new(&host);
    let mnt = cg2.path.clone();
    let def = host.haco(
        "dev2",
        &with_probe("    c.init_command = [\"/probe\", \"mknod-block\", \"mknod-null\"];"),
    );
    let out = host
        .cmd()
        .env("HACONIWA_CGROUP2_ROOT", &mnt)
        .args(["run", def.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    has(&text, "mknod-block: EPERM");
    has(&text, "mknod-null: ok");
    has(&text, "open-null: ok");
    assert!(!mnt.join(&host.cgroup_parent).join("dev2").exists());
    drop(cg2);
    host.assert_clean();
}

#[test]
fn a_definition_cannot_remount_proc_or_write_core_pattern() {
    let host = Host::new("sec-proc");
    let def = host.haco(
        "proc2",
        "    c.init_command = \"/bin/true\";\n    c.add_mount_point(\"proc\", #{ to: \"/proc2\", fs: \"proc\" });",
    );
    let out = host.run(&["show", def.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("proc2.haco:") && stderr(&out).contains("would bypass"),
        "{}",
        stderr(&out)
    );
    let text = probe_in(&host, "core", "", "core_pattern");
    has(&text, "core_pattern: EROFS");
    host.assert_clean();
}

#[test]
fn masked_directories_are_empty_read_only_and_have_no_filesystem_of_their_own() {
    let host = Host::new("sec-mask");
    // The default masks that are directories on this host (/sys/firmware is on every
    // x86 machine), their entries, a write into each, the filesystems behind them.
    let script = "for d in /sys/firmware /proc/acpi /proc/scsi /sys/devices/virtual/powercap; do \
         [ -d $d ] || continue; echo \"masked $d $(ls -A $d | wc -l)\"; \
         touch $d/x 2>/dev/null && echo \"wrote $d\"; done; \
         echo \"filesystems $(grep -E ' /(sys/firmware|proc/acpi|proc/scsi|sys/devices/virtual/powercap) ' /proc/self/mountinfo | awk '{print $3}' | sort -u | tr '\\n' ' ')\"; \
         echo \"dev $(awk '$5 == \"/dev\" {print $3}' /proc/self/mountinfo)\"; ls -A /dev";
    let out = host.sh("masks", "", script);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    let masked: Vec<&str> = text.lines().filter(|l| l.starts_with("masked ")).collect();
    assert!(
        masked
            .iter()
            .any(|l| l.starts_with("masked /sys/firmware ")),
        "{text}"
    );
    for l in &masked {
        assert!(
            l.ends_with(" 0"),
            "a masked directory shows entries: {text}"
        );
    }
    assert!(
        !text.contains("wrote "),
        "a masked directory took a write: {text}"
    );
    // No superblock of their own (each one costs the kernel at every memory cgroup's
    // end, and in every memory cgroup made after the host's peak of superblocks): an
    // empty directory of the container's /dev tmpfs, bound, and gone from /dev.
    let dev = text
        .lines()
        .find_map(|l| l.strip_prefix("dev "))
        .unwrap_or_else(|| panic!("{text}"));
    has(&text, &format!("filesystems {dev} "));
    assert!(
        !text.contains(".mask"),
        "the masks' directory is left in /dev: {text}"
    );
    host.assert_clean();
}

#[test]
fn dev_shm_takes_any_users_files_runs_nothing_and_has_no_filesystem_of_its_own() {
    let host = Host::new("sec-shm");
    // As a user who owns nothing: a file written, a program copied there and run, the
    // mount's flags and filesystem, the room it offers.
    let script = "echo \"mode $(stat -c %a /dev/shm)\"; \
         echo x > /dev/shm/f && echo wrote; \
         cp /bin/busybox /dev/shm/bb && /dev/shm/bb true; echo \"exec $?\"; \
         awk '$5 == \"/dev/shm\" {print \"shm \" $3 \" \" $6}' /proc/self/mountinfo; \
         echo \"dev $(awk '$5 == \"/dev\" {print $3}' /proc/self/mountinfo)\"; \
         df -k /dev/shm | awk 'NR == 2 {print \"size \" $2}'";
    let out = host.sh("shm", "    c.uid = 1000;\n    c.gid = 1000;", script);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    has(&text, "mode 1777");
    has(&text, "wrote");
    has(&text, "exec 126");
    let shm = text
        .lines()
        .find_map(|l| l.strip_prefix("shm "))
        .unwrap_or_else(|| panic!("no /dev/shm mount: {text}"));
    let (fs_id, flags) = shm.split_once(' ').unwrap_or_else(|| panic!("{text}"));
    for f in ["nosuid", "nodev", "noexec"] {
        assert!(
            flags.split(',').any(|x| x == f),
            "/dev/shm is not {f}: {text}"
        );
    }
    // A directory of the container's /dev tmpfs (no superblock of its own), with
    // Docker's 64 MiB.
    has(&text, &format!("dev {fs_id}"));
    has(&text, "size 65536");
    host.assert_clean();
}

#[test]
fn slow_definitions_and_rules_are_stopped_by_the_clock() {
    let host = Host::new("sec-slow");
    // Few operations, each slow (a 32 kB string searched): the operation cap alone
    // would let this run for many seconds.
    let slow =
        "let s = \"x\"; for i in 0..15 { s += s; }\nlet n = 0; loop { n += s.index_of(\"y\"); }\n";
    let def = host.haco_raw("slow", slow);
    let t0 = Instant::now();
    let out = host.run(&["show", def.to_str().unwrap()]);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("slow.haco:2:") && e.contains("took longer than 1000 ms"),
        "{e}"
    );
    // A rule's top-level code has its own deadline.
    let t0 = Instant::now();
    let e = haconiwa::spec::watch::check(slow, "slow.watch").unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(e.to_string().contains("took longer than 500 ms"), "{e}");
}

#[test]
fn names_that_would_become_paths_are_refused_before_anything_is_touched() {
    let host = Host::new("sec-names");
    let victim = host.scratch.path.join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("keep"), "x").unwrap();
    let def = host.haco(
        "named",
        "    c.init_command = [\"/bin/sleep\", \"30\"];\n    c.daemonize();",
    );
    host.ok(&["run", def.to_str().unwrap()]);
    for bad in ["../../victim", "", ".", "..", "a/b", "-x", "\u{1b}[31mred"] {
        let out = host.run(&["run", &format!("--name={bad}"), def.to_str().unwrap()]);
        assert!(!out.status.success(), "--name {bad:?} was accepted");
        let e = stderr(&out);
        assert!(e.contains("invalid container name"), "{bad:?}: {e}");
        assert!(!e.contains('\u{1b}'), "raw escape printed: {e:?}");
        let mut cmds = vec![
            vec!["kill", "--", bad],
            vec!["rm", "--", bad],
            vec!["logs", "--", bad],
        ];
        if !bad.starts_with('-') {
            // attach takes `-- COMMAND` after the name, so the name cannot follow `--`.
            cmds.push(vec!["attach", bad]);
        }
        for cmd in cmds {
            let out = host.run(&cmd);
            assert!(!out.status.success());
            assert!(
                stderr(&out).contains("invalid container name"),
                "{cmd:?}: {}",
                stderr(&out)
            );
        }
    }
    assert!(
        victim.join("keep").exists(),
        "a name reached outside the state dir"
    );
    let st = host.state("named").expect("the running record survived");
    assert_eq!(st["status"], "running");
    host.ok(&["kill", "named", "-s", "KILL"]);
    // Provision step names are checked by the loader.
    let def = host.haco(
        "stepname",
        "    c.init_command = \"/bin/true\";\n    c.run_shell(\"true\", #{ name: \"../../x\" });",
    );
    let out = host.run(&["show", def.to_str().unwrap()]);
    assert!(
        stderr(&out).contains("invalid provision step name '../../x'"),
        "{}",
        stderr(&out)
    );
    host.assert_clean();
}

#[test]
fn a_closed_pipe_ends_the_cli_quietly() {
    let host = Host::new("sec-pipe");
    let def = host.haco("piped", "    c.init_command = \"/bin/true\";");
    let mut child = host
        .cmd()
        .args(["show", def.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before anything is written.
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(err.is_empty(), "{err}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "{status:?}");
}

#[test]
fn state_and_log_files_are_private() {
    let host = Host::new("sec-modes");
    let def = host.haco(
        "modes",
        "    c.init_command = [\"/bin/sh\", \"-c\", \"echo hi; sleep 30\"];\n    c.daemonize();",
    );
    host.ok(&["run", def.to_str().unwrap()]);
    let dir = host.state_dir.join("containers/modes");
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: PathBuf| std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    for f in ["state.json", "spec.json", "log"] {
        assert_eq!(mode(dir.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(dir.clone()), 0o711);
    assert_eq!(mode(dir.join("layer")), 0o711);
    host.ok(&["kill", "modes", "-s", "KILL"]);
    host.wait_exited("modes", Duration::from_secs(5));
    assert!(
        !dir.join("layer").exists(),
        "the writable layer outlived the container"
    );
    // Nor under the name the monitor gives it while it records the end.
    let layers: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("layer"))
        .collect();
    assert!(layers.is_empty(), "left after the end: {layers:?}");
    host.assert_clean();
}

#[test]
fn supervisor_data_is_private_and_the_token_can_come_from_a_file() {
    let mut c = crate::common::cluster::Cluster::new("sec-sup", &[]);
    c.add_node(&[]);
    c.wait_leader(Duration::from_secs(20));
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: PathBuf| std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    let data = c.nodes[0].data_dir.clone();
    assert_eq!(mode(data.clone()), 0o700);
    assert_eq!(mode(data.join("raft.redb")), 0o600);
    assert_eq!(mode(data.join("node_id")), 0o600);
    let scratch = Scratch::new("sec-token");
    let token_file = scratch.path.join("token");
    std::fs::write(&token_file, format!("{}\n", c.token)).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = std::process::Command::new(crate::common::BIN)
        .env_remove("HACONIWA_TOKEN")
        .env("HACONIWA_SERVER", c.servers())
        .args([
            "--token-file",
            token_file.to_str().unwrap(),
            "cluster",
            "status",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // A rule name that would be a path is refused by the server.
    let rule = scratch.path.join("r.watch");
    std::fs::write(
        &rule,
        "haconiwa.watch(|w| { w.watch(\"cluster\", |e| { }); });",
    )
    .unwrap();
    let out = c.run(&["watch", "apply", rule.to_str().unwrap(), "--name", "../x"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("invalid rule name '../x'"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn attach_gives_the_container_s_privileges_and_filter_before_anything_runs() {
    let host = Host::new("sec-attach");
    let def = host.haco(
        "att",
        "    c.init_command = [\"/bin/sleep\", \"30\"];\n    c.capabilities.drop([\"chown\"]);\n    c.daemonize();",
    );
    host.ok(&["run", def.to_str().unwrap()]);
    let text = host.ok(&[
        "attach",
        "att",
        "--",
        "/bin/grep",
        "-E",
        "CapBnd|CapEff|NoNewPrivs|Seccomp:",
        "/proc/self/status",
    ]);
    // Docker's 14 without CAP_CHOWN (bit 0).
    has(&text, "CapBnd:\t00000000a80425fa");
    has(&text, "CapEff:\t00000000a80425fa");
    has(&text, "NoNewPrivs:\t1");
    has(&text, "Seccomp:\t2");
    host.ok(&["kill", "att", "-s", "KILL"]);
    host.wait_exited("att", Duration::from_secs(5));
    host.assert_clean();
}
