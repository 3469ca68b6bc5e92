//! A command in a cluster container from a member that does not run it (issue 26):
//! `haconiwa exec` over the cluster port, with stdin, separate stdout and stderr, a
//! terminal, the exit status, and a refusal for a container that no longer runs.

use crate::common::cluster::Cluster;
use crate::common::*;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

#[test]
fn exec_from_another_member_runs_in_the_container_with_stdio_a_terminal_and_the_status() {
    let cl = Cluster::three("exec", &[]);
    let def = cl.haco("sleeper", "[\"/bin/sleep\", \"3600\"]");
    let out = cl.ok(&["spawn", def.to_str().unwrap(), "--node", "3", "--json"]);
    let id = serde_json::from_str::<serde_json::Value>(&out).expect("spawn --json")["id"]
        .as_str()
        .expect("an id")
        .to_string();
    cl.wait_containers(T, "the sleeper running", |c| {
        c.iter()
            .any(|x| x["id"] == id.as_str() && x["state"] == "running")
    });
    // Asked of node 1; the command runs in the container on node 3: it sees the
    // sleeper among its processes, and it is in the container's cgroup.
    let o = cl.run_on(
        1,
        &[
            "exec", &id, "--", "/bin/sh", "-c",
            "ps -o args | grep '^/bin/sleep 3600'; grep -c sleeper /proc/self/cgroup; echo to-stderr >&2; exit 7",
        ],
    );
    assert_eq!(o.status.code(), Some(7), "{}", output_text(&o));
    let out = stdout(&o);
    assert!(out.starts_with("/bin/sleep 3600\n"), "{out}");
    assert!(
        out.lines().nth(1).is_some_and(|n| n.trim() != "0"),
        "not in its cgroup: {out}"
    );
    assert_eq!(stderr(&o), "to-stderr\n");
    // -i: stdin goes to the command, and its end too.
    let mut child = cl
        .cli()
        .env("HACONIWA_SERVER", &cl.nodes[0].addr)
        .args(["exec", "-i", &id, "--", "/bin/sh", "-c", "cat; echo done"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("exec -i");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"hello\nworld\n")
        .expect("write stdin");
    let o = child.wait_with_output().expect("exec -i ends");
    assert!(o.status.success(), "{}", output_text(&o));
    assert_eq!(stdout(&o), "hello\nworld\ndone\n");
    // -t: a terminal of the size asked (24×80 without one here), the status still comes.
    let o = cl.run_on(
        1,
        &[
            "exec",
            "-t",
            &id,
            "--",
            "/bin/sh",
            "-c",
            "test -t 0 && test -t 1 && stty size; exit 3",
        ],
    );
    assert_eq!(o.status.code(), Some(3), "{}", output_text(&o));
    assert_eq!(stdout(&o).trim(), "24 80", "{}", output_text(&o));
    // A window change: an independent gRPC client (tests/grpc_client.py) resizes the
    // terminal between two `stty size` (the terminal echoes what it types, `go`).
    let py = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc_client.py"))
        .args(["exec-resize", &cl.nodes[0].addr, &cl.token, &id])
        .output()
        .expect("python3");
    let said = stdout(&py);
    assert!(py.status.success(), "{said}{}", stderr(&py));
    assert!(
        said.contains("output: 24 80 go 50 132") && said.contains("exit: 5"),
        "{said}"
    );
    // A command that does not exist: the attach's reason, and a failure status.
    let o = cl.run_on(1, &["exec", &id, "--", "/no/such/program"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("/no/such/program"),
        "{}",
        output_text(&o)
    );
    // Stopped: refused with the reason.
    cl.ok(&["stop", &id]);
    cl.wait_containers(T, "the sleeper ended", |c| {
        c.iter()
            .any(|x| x["id"] == id.as_str() && x["state"] != "running")
    });
    let o = cl.run_on(1, &["exec", &id, "--", "/bin/true"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is not running"), "{}", output_text(&o));
    let o = cl.run_on(1, &["exec", "no-such-container", "--", "/bin/true"]);
    assert!(
        stderr(&o).contains("no container no-such-container in the cluster"),
        "{}",
        output_text(&o)
    );
}
