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
