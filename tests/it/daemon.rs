//! Daemon mode: ps, logs, attach, kill with escalation, stale state, and the cgroup v2
//! code path on a cgroup2 mount of the test's own.

use crate::common::images::digest;
use crate::common::procs;
use crate::common::*;
use std::time::{Duration, Instant};

fn wait_log(host: &Host, name: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let l = host.ok(&["logs", name]);
        if l.contains(needle) {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} never showed in the logs of {name}: {l}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Pretty JSON made compact (whitespace outside strings dropped): serde's compact form.
fn compact_json(pretty: &str) -> String {
    let (mut out, mut in_string, mut escaped) = (String::new(), false, false);
    for c in pretty.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    out
}

#[test]
fn ps_and_logs_follow_a_detached_container() {
    let host = Host::new("ps-logs");
    let def = host.haco(
        "talker",
        "    c.init_command = [\"/bin/sh\", \"-c\", \"echo out-line; echo err-line >&2; sleep 0.5; echo late-line; exit 3\"];\n    c.daemonize();",
    );
    let out = host.ok(&["run", def.to_str().unwrap()]);
    assert!(out.starts_with("talker running (pid "), "{out}");
    let st = host.state("talker").expect("listed");
    assert_eq!(st["status"], "running");
    // The pid is the container's: the process that runs now (its start time as /proc
    // has it, so not a reused pid), in the container's cgroup; the digest is the spec's.
    let pid = st["pid"].as_i64().unwrap();
    assert!(pid > 1);
    assert_eq!(st["start_time"].as_u64(), procs::start_ticks(pid));
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        cgroups
            .lines()
            .any(|l| l.ends_with(&format!("{}/talker", host.cgroup_parent))),
        "{cgroups}"
    );
    let shown = host.ok(&["show", "--json", def.to_str().unwrap()]);
    let spec_digest = digest(compact_json(&shown).as_bytes());
    assert_eq!(
        Some(spec_digest.trim_start_matches("sha256:")),
        st["spec_digest"].as_str()
    );
    let table = host.ok(&["ps"]);
    let row = table
        .lines()
        .find(|l| l.starts_with("talker"))
        .unwrap_or_else(|| panic!("no talker in {table}"));
    assert!(
        row.contains("running") && row.split_whitespace().any(|w| w == pid.to_string()),
        "{table}"
    );
    // logs -f returns when the container ends, with everything it wrote: its stdout
    // on stdout, its stderr on stderr.
    let followed = host.run(&["logs", "-f", "talker"]);
    assert!(followed.status.success(), "{}", output_text(&followed));
    let (out, err) = (stdout(&followed), stderr(&followed));
    assert_eq!(out, "out-line\nlate-line\n", "{err}");
    assert_eq!(err, "err-line\n", "{out}");
    let st = host.wait_exited("talker", Duration::from_secs(5));
    assert_eq!(st["exit_code"], 3);
    assert!(host.ok(&["ps"]).contains("exited"));
    host.ok(&["rm", "talker"]);
    assert!(host.state("talker").is_none());
    host.assert_clean();
}

#[test]
fn attach_joins_hostname_pid_namespace_and_cgroup() {
    let host = Host::new("attach");
    let def = host.haco(
        "box",
        "    c.hostname = \"attached-box\";\n    c.init_command = [\"/bin/sh\", \"-c\", \"echo ready; sleep 60\"];\n    c.cgroup[\"pids.max\"] = 32;\n    c.capabilities.drop([\"cap_sys_time\"]);\n    c.daemonize();",
    );
    host.ok(&["run", def.to_str().unwrap()]);
    wait_log(&host, "box", "ready");
    let pid = host.state("box").unwrap()["pid"].as_i64().unwrap();
    let host_pidns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    let out = host.ok(&[
        "attach",
        "box",
        "--",
        "/bin/sh",
        "-c",
        "hostname; readlink /proc/self/ns/pid; grep pids /proc/self/cgroup; ps -o pid,args | grep -c 'sleep 60'; grep CapBnd /proc/self/status",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "attached-box", "{out}");
    assert_eq!(lines[1], host_pidns.to_string_lossy(), "{out}");
    assert!(
        lines[2].ends_with(&format!("{}/box", host.cgroup_parent)),
        "{out}"
    );
    assert!(
        lines[3].trim().parse::<u32>().unwrap() >= 1,
        "the container's sleep is not visible: {out}"
    );
    assert_eq!(lines[4], "CapBnd:\t00000000a80425fb", "{out}");
    // The exit status of the attached command comes back.
    let o = host.run(&["attach", "box", "--", "/bin/sh", "-c", "exit 9"]);
    assert_eq!(o.status.code(), Some(9));
    host.ok(&["kill", "box", "-s", "KILL"]);
    host.assert_clean();
}

#[test]
fn kill_escalates_to_sigkill_after_the_timeout() {
    let host = Host::new("kill");
    let def = host.haco(
        "stubborn",
        "    c.init_command = [\"/bin/sh\", \"-c\", \"trap 'echo got TERM' TERM; echo ready; while :; do sleep 0.1; done\"];\n    c.daemonize();",
    );
    host.ok(&["run", def.to_str().unwrap()]);
    wait_log(&host, "stubborn", "ready");
    let t0 = Instant::now();
    let out = host.ok(&["kill", "stubborn", "--timeout", "0.5"]);
    let took = t0.elapsed();
    assert!(out.contains("exited with 137"), "{out}");
    // TERM first (the command saw it and carried on), SIGKILL once the timeout passed,
    // and not much later.
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_millis(2500),
        "escalated at {took:?} for a 0.5 s timeout"
    );
    let logs = host.ok(&["logs", "stubborn"]);
    assert!(logs.contains("got TERM"), "TERM never arrived: {logs}");
    let st = host.wait_exited("stubborn", Duration::from_secs(5));
    assert_eq!(st["exit_code"], 137);
    // Killing an exited container is an error, not a hang.
    let o = host.run(&["kill", "stubborn"]);
    assert!(
        !o.status.success() && stderr(&o).contains("not running"),
        "{}",
        stderr(&o)
    );
    host.assert_clean();
}

#[test]
fn stale_state_is_detected_and_cleaned() {
    let host = Host::new("stale");
    let def = host.haco(
        "ghost",
        "    c.init_command = [\"/bin/sleep\", \"60\"];\n    c.daemonize();",
    );
    host.ok(&["run", def.to_str().unwrap()]);
    let st = host.state("ghost").unwrap();
    let monitor = st["monitor_pid"].as_i64().unwrap() as i32;
    // The monitor dies without recording anything; the container dies with it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let st = loop {
        let st = host.state("ghost").unwrap();
        if st["status"] == "exited" {
            break st;
        }
        assert!(Instant::now() < deadline, "never detected: {st}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(st["reason"].as_str().unwrap().starts_with("lost"), "{st}");
    assert!(host.ok(&["ps"]).contains("lost"));
    // Its cgroup was removed by the detection, and the name is free again.
    host.assert_clean();
    host.ok(&["run", def.to_str().unwrap()]);
    host.ok(&["kill", "ghost", "-s", "KILL"]);
    host.assert_clean();
}

/// The directories in `dir` (none when it does not exist).
fn subdirs(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn cgroup_v2_code_path_on_a_cgroup2_mount() {
    let host = Host::new("cg2");
    let cg2 = Cgroup2Mount::new(&host);
    let mnt = cg2.path.clone();
    let def = host.haco(
        "v2",
        "    c.init_command = [\"/bin/sh\", \"-c\", \"cat /proc/self/cgroup; echo ready; sleep 30\"];\n    c.cgroup[\"pids.max\"] = 10;\n    c.daemonize();",
    );
    // On this hybrid host every controller is bound to v1, so the unified hierarchy has
    // none: a controller key is refused with a clear error and nothing is left...
    let out = host
        .cmd()
        .env("HACONIWA_CGROUP2_ROOT", &mnt)
        .args(["run", def.to_str().unwrap()])
        .output()
        .unwrap();
    let avail = std::fs::read_to_string(mnt.join("cgroup.controllers")).unwrap();
    if !avail.contains("pids") {
        assert_eq!(out.status.code(), Some(125));
        assert!(
            stderr(&out).contains("the cgroup v2 controller 'pids' is not available here"),
            "{}",
            stderr(&out)
        );
        assert_eq!(
            subdirs(&mnt.join(&host.cgroup_parent)),
            Vec::<String>::new(),
            "v2 cgroup left after a failed start"
        );
    } else {
        assert!(out.status.success(), "{}", stderr(&out));
        host.ok(&["kill", "v2", "-s", "KILL"]);
    }
    // ...and without controller keys the container is placed and removed on v2.
    let def = host.haco(
        "v2b",
        "    c.init_command = [\"/bin/sh\", \"-c\", \"cat /proc/self/cgroup; echo ready; sleep 30\"];\n    c.daemonize();",
    );
    let out = host
        .cmd()
        .env("HACONIWA_CGROUP2_ROOT", &mnt)
        .args(["run", def.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let logs = wait_log(&host, "v2b", "ready");
    assert!(
        logs.contains(&format!("0::/{}/v2b", host.cgroup_parent)),
        "{logs}"
    );
    let pid = host.state("v2b").unwrap()["pid"].as_i64().unwrap();
    let procs =
        std::fs::read_to_string(mnt.join(&host.cgroup_parent).join("v2b/cgroup.procs")).unwrap();
    assert!(procs.lines().any(|l| l == pid.to_string()), "{procs}");
    let out = host
        .cmd()
        .env("HACONIWA_CGROUP2_ROOT", &mnt)
        .args(["kill", "v2b"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    host.wait_exited("v2b", Duration::from_secs(5));
    // The parent stays once made (as Docker's); nothing under it.
    assert_eq!(
        subdirs(&mnt.join(&host.cgroup_parent)),
        Vec::<String>::new(),
        "v2 cgroup left after exit"
    );
    drop(cg2);
    host.assert_clean();
}

#[test]
fn a_finished_foreground_container_is_gone_at_once_and_its_files_soon_after() {
    // The state directory is on ext4 here: the directory is moved into the trash and
    // removed by a helper that `run` does not wait for.
    let host = Host::new("trash");
    let def = host.haco(
        "writer",
        "    c.init_command = [\"/bin/sh\", \"-c\", \"dd if=/dev/zero of=/big bs=1M count=16 2>/dev/null; echo wrote\"];",
    );
    let first = host.ok(&["run", def.to_str().unwrap()]);
    assert_eq!(first.trim(), "wrote");
    // At once: no record, and the name is free for the next run.
    assert!(!host.state_dir.join("containers/writer").exists());
    assert!(host.ps().is_empty(), "{:?}", host.ps());
    let second = host.ok(&["run", def.to_str().unwrap()]);
    assert_eq!(second.trim(), "wrote");
    // Soon: nothing of either left in the trash (16 MiB each, written to the layer),
    // but the remover's lock (`.remover-<hash>`). The second run most likely found the
    // first's remover still there (it stays a second for the next) and started none.
    let trash = host.state_dir.join("trash");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left: Vec<_> = std::fs::read_dir(&trash)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name())
                    .filter(|n| !n.to_string_lossy().starts_with(".remover-"))
                    .collect()
            })
            .unwrap_or_default();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left in the trash: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&trash).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the trash is for root only");
    host.assert_clean();
}

#[test]
fn a_relative_state_directory_works_from_where_it_was_given() {
    // `--state-dir state` from the scratch directory: the same directory the host view
    // uses, given relative to the working directory (it once broke every launch: the
    // launch resolved it after changing directory, and `pivot_root` said EBUSY).
    let host = Host::new("relative-state");
    let def = host.haco(
        "rel",
        "    c.init_command = [\"/bin/echo\", \"relative-ok\"];",
    );
    let out = host
        .cmd()
        .current_dir(&host.scratch.path)
        .env("HACONIWA_STATE_DIR", "state")
        .args(["run", def.to_str().unwrap()])
        .output()
        .expect("run haconiwa");
    assert!(
        out.status.success(),
        "run with a relative state directory failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "relative-ok");
}
