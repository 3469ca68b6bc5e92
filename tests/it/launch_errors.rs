//! Failed launches: one line naming the container, the step and the OS error; a
//! non-zero exit; nothing left behind (state, cgroups, mounts, processes).

use crate::common::*;

fn assert_failed_cleanly(host: &Host, out: &std::process::Output, expect: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(125), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    for e in expect {
        assert!(err.contains(e), "missing {e:?} in: {err}");
    }
    assert!(host.ps().is_empty(), "a record was left: {:?}", host.ps());
    host.assert_clean();
}

#[test]
fn missing_rootfs() {
    let host = Host::new("err-root");
    let def = host.haco_raw(
        "noroot",
        "haconiwa.define(|c| { c.name = \"noroot\"; c.init_command = \"/bin/true\"; c.chroot_to(\"/nonexistent/haconiwa-root\"); c.namespace.unshare([\"mount\", \"pid\"]); });",
    );
    let out = host.run(&["run", def.to_str().unwrap()]);
    assert_failed_cleanly(
        &host,
        &out,
        &[
            "haconiwa: container noroot: root filesystem /nonexistent/haconiwa-root:",
            "No such file or directory",
            "haconiwa create",
        ],
    );
}

#[test]
fn unknown_command() {
    let host = Host::new("err-cmd");
    let def = host.haco("nocmd", "    c.init_command = [\"/bin/no-such-program\"];");
    let out = host.run(&["run", def.to_str().unwrap()]);
    assert_failed_cleanly(
        &host,
        &out,
        &["container nocmd: exec /bin/no-such-program: No such file or directory"],
    );
    // PATH lookup failures name the command too.
    let def = host.haco("nocmd2", "    c.init_command = [\"no-such-program\"];");
    let out = host.run(&["run", def.to_str().unwrap()]);
    assert_failed_cleanly(
        &host,
        &out,
        &["container nocmd2: exec no-such-program: No such file or directory"],
    );
}

#[test]
fn failing_mounts() {
    let host = Host::new("err-mount");
    let def = host.haco(
        "badbind",
        "    c.init_command = \"/bin/true\";\n    c.add_mount_point(\"/nonexistent/haconiwa-src\", #{ to: \"/x\" });",
    );
    let out = host.run(&["run", def.to_str().unwrap()]);
    assert_failed_cleanly(
        &host,
        &out,
        &["container badbind: bind source /nonexistent/haconiwa-src: No such file or directory"],
    );
    let def = host.haco(
        "badfs",
        "    c.init_command = \"/bin/true\";\n    c.add_mount_point(\"none\", #{ to: \"/y\", fs: \"nosuchfs\" });",
    );
    let out = host.run(&["run", def.to_str().unwrap()]);
    assert_failed_cleanly(
        &host,
        &out,
        &["container badfs: mount none (nosuchfs) on /y: No such device"],
    );
}

#[test]
fn refused_cgroup_value() {
    let host = Host::new("err-cgroup");
    // A CPU that does not exist: the kernel refuses the write.
    let def = host.haco(
        "badcpu",
        "    c.init_command = \"/bin/true\";\n    c.cgroup[\"cpuset.cpus\"] = \"4000\";",
    );
    let out = host.run(&["run", def.to_str().unwrap()]);
    assert_failed_cleanly(
        &host,
        &out,
        &[
            "container badcpu: write ",
            "cpuset.cpus = 4000: ",
            "(os error ",
        ],
    );
}

#[test]
fn missing_workdir() {
    let host = Host::new("err-wd");
    let def = host.haco(
        "badwd",
        "    c.init_command = \"/bin/true\";\n    c.workdir = \"/no/such/dir\";",
    );
    let out = host.run(&["run", def.to_str().unwrap()]);
    assert_failed_cleanly(
        &host,
        &out,
        &["container badwd: chdir to workdir /no/such/dir: No such file or directory"],
    );
}

#[test]
fn daemon_mode_reports_the_same_error_and_leaves_nothing() {
    let host = Host::new("err-daemon");
    let def = host.haco(
        "dnocmd",
        "    c.init_command = [\"/bin/no-such-program\"];\n    c.daemonize();",
    );
    let out = host.run(&["run", def.to_str().unwrap()]);
    assert_failed_cleanly(
        &host,
        &out,
        &["container dnocmd: exec /bin/no-such-program: No such file or directory"],
    );
}

#[test]
fn a_running_name_cannot_be_started_twice() {
    let host = Host::new("err-twice");
    let def = host.haco(
        "twice",
        "    c.init_command = [\"/bin/sleep\", \"30\"];\n    c.daemonize();",
    );
    host.ok(&["run", def.to_str().unwrap()]);
    let out = host.run(&["run", def.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("container 'twice' is already running"),
        "{}",
        stderr(&out)
    );
    host.ok(&["kill", "twice", "-s", "KILL"]);
    host.assert_clean();
}

#[test]
fn the_helper_answers_a_typed_request_with_a_typed_reply() {
    use haconiwa::runtime::helper::{Place, Reply, Request};
    let host = Host::new("le-helper");
    let place = Place {
        state_dir: host.state_dir.clone(),
        cgroup_parent: host.cgroup_parent.clone(),
        lease: None,
    };
    let ask = |request: &Request| {
        let mut child = std::process::Command::new(BIN)
            .arg("__monitor")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(
            &mut child.stdin.take().unwrap(),
            &serde_json::to_vec(request).unwrap(),
        )
        .unwrap();
        let out = child.wait_with_output().unwrap();
        serde_json::from_slice::<Reply>(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    };
    // A launch that fails: the container, the step and the reason, typed.
    let spec = haconiwa::spec::ContainerSpec::new(
        "helper-missing",
        vec!["/bin/true".into()],
        host.scratch.path.join("no-such-root"),
    );
    let reply = ask(&Request::Monitor {
        place: place.clone(),
        spec: Box::new(spec),
        secrets: Vec::new(),
    });
    let Reply::Failed(haconiwa::runtime::helper::Failure::Launch(e)) = reply else {
        panic!("not a launch failure: {reply:?}");
    };
    assert_eq!(e.container, "helper-missing");
    assert!(e.step.starts_with("root filesystem"), "{e:?}");
    // One that starts: the state record of the running container.
    let mut spec = haconiwa::spec::ContainerSpec::new(
        "helper-ok",
        vec!["/bin/sleep".into(), "3600".into()],
        busybox_rootfs(),
    );
    spec.namespaces.unshare = vec![haconiwa::spec::NsKind::Mount, haconiwa::spec::NsKind::Pid];
    let reply = ask(&Request::Monitor {
        place,
        spec: Box::new(spec),
        secrets: Vec::new(),
    });
    let Reply::Started(st) = reply else {
        panic!("not started: {reply:?}");
    };
    assert!(st.pid > 0 && std::path::Path::new(&format!("/proc/{}", st.pid)).exists());
    host.ok(&["kill", "helper-ok", "--timeout", "1"]);
    host.assert_clean();
}

/// The supervisor keeps a `__monitor` helper started ahead of its request (a launch
/// then skips the helper's start-up): one asked later launches as a new one would,
/// and its reply ends its output before it exits; one never asked (its stdin closed:
/// the supervisor ended or replaced it) leaves at once, quietly, with nothing behind.
#[test]
fn a_spare_helper_launches_when_asked_later_and_leaves_quietly_when_never_asked() {
    use haconiwa::runtime::helper::{Place, Reply, Request};
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    use std::time::Duration;
    let host = Host::new("le-spare");
    let spare = || {
        Command::new(BIN)
            .arg("__monitor")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Never asked.
    let idle = spare();
    std::thread::sleep(Duration::from_millis(300));
    let out = idle.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    // Asked later: the container runs.
    let mut waiting = spare();
    std::thread::sleep(Duration::from_millis(300));
    let mut spec = haconiwa::spec::ContainerSpec::new(
        "spare-ok",
        vec!["/bin/sleep".into(), "3600".into()],
        busybox_rootfs(),
    );
    spec.namespaces.unshare = vec![haconiwa::spec::NsKind::Mount, haconiwa::spec::NsKind::Pid];
    let request = Request::Monitor {
        place: Place {
            state_dir: host.state_dir.clone(),
            cgroup_parent: host.cgroup_parent.clone(),
            lease: None,
        },
        spec: Box::new(spec),
        secrets: Vec::new(),
    };
    let mut stdin = waiting.stdin.take().unwrap();
    stdin
        .write_all(&serde_json::to_vec(&request).unwrap())
        .unwrap();
    drop(stdin);
    let mut reply = Vec::new();
    waiting
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut reply)
        .unwrap();
    let reply = serde_json::from_slice::<Reply>(&reply)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&reply)));
    assert_eq!(waiting.wait().unwrap().code(), Some(0));
    let Reply::Started(st) = reply else {
        panic!("not started: {reply:?}");
    };
    assert!(st.pid > 0 && std::path::Path::new(&format!("/proc/{}", st.pid)).exists());
    host.ok(&["kill", "spare-ok", "--timeout", "1"]);
    host.assert_clean();
}
