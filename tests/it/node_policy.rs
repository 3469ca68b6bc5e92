//! A node's policy (issue 26): the `[policy]` of its node.toml limits what a definition
//! may ask of it. The leader places a container only on a node that allows it, and a
//! `spawn` that no node allows fails at once, naming each node and what it refuses.
//! Checked against what the hosts really run (their cgroups).

use crate::common::cluster::Cluster;
use crate::common::*;
use serde_json::Value;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// A definition that binds the host's `/` and adds CAP_SYS_ADMIN.
fn privileged(cl: &Cluster) -> std::path::PathBuf {
    let p = cl.scratch.path.join("privileged.haco");
    std::fs::write(
        &p,
        format!(
            "haconiwa.define(|c| {{\n  c.name = `privileged-${{uuid_short()}}`;\n  c.init_command = [\"/bin/sleep\", \"3600\"];\n  c.chroot_to(\"{}\");\n  c.namespace.unshare([\"uts\", \"ipc\", \"pid\", \"mount\", \"net\"]);\n  c.add_mount_point(\"/\", #{{ to: \"/host\", readonly: true }});\n  c.capabilities.allow([\"cap_sys_admin\"]);\n}});\n",
            busybox_rootfs().display()
        ),
    )
    .expect("write definition");
    p
}

fn policy_of(s: &Value, id: u64) -> Value {
    s["members"]
        .as_array()
        .and_then(|m| m.iter().find(|x| x["id"] == id))
        .map(|m| m["policy"].clone())
        .unwrap_or(Value::Null)
}

#[test]
fn a_locked_down_node_refuses_at_spawn_and_the_leader_places_only_where_it_is_allowed() {
    let mut cl = Cluster::new("policy", &[]);
    let locked = cl.scratch.path.join("locked.toml");
    std::fs::write(
        &locked,
        "[policy]\nallow_capabilities = []\nhost_paths = [\"/srv/hc-volumes\"]\nfilesystems = [\"tmpfs\"]\n",
    )
    .expect("write node.toml");
    let locked = locked.to_str().unwrap();
    cl.start_three_with([
        &["--label", "zone=a"],
        &["--config", locked, "--label", "zone=b"],
        &["--config", locked, "--label", "zone=b"],
    ]);
    cl.wait(T, "the policies of nodes 2 and 3 published", |s| {
        policy_of(s, 1).is_null()
            && policy_of(s, 2)["host_paths"] == serde_json::json!(["/srv/hc-volumes"])
            && policy_of(s, 3) == policy_of(s, 2)
    });
    let members = cl.ok(&["cluster", "members"]);
    assert!(
        members.contains("POLICY") && members.contains("limited"),
        "{members}"
    );
    let def = privileged(&cl);
    let def = def.to_str().unwrap();

    // Asked for node 2: refused at spawn, with each reason.
    let out = cl.run(&["spawn", def, "--node", "2"]);
    assert!(!out.status.success(), "{}", output_text(&out));
    let err = stderr(&out);
    for want in [
        "node 2's policy refuses it",
        "capability CAP_SYS_ADMIN is not in its allow_capabilities",
        "a bind of host path / is outside its host_paths (/srv/hc-volumes)",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
    // Only nodes 2 and 3 qualify by label: no node allows it, and both say why.
    let out = cl.run(&["spawn", def, "--node-label", "zone=b"]);
    assert!(!out.status.success(), "{}", output_text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("no node allows it")
            && err.contains("node 2's policy refuses it")
            && err.contains("node 3's policy refuses it"),
        "{err}"
    );
    assert!(cl.containers().is_empty(), "a refused spawn left a record");

    // Anywhere: three copies, all on node 1, the one that allows it.
    for _ in 0..3 {
        cl.ok(&["spawn", def]);
    }
    cl.wait_containers(T, "3 running", |c| {
        c.len() == 3 && c.iter().all(|x| x["state"] == "running")
    });
    let on: Vec<u64> = cl
        .containers()
        .iter()
        .map(|c| c["node"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(on, [1, 1, 1], "placed where the policy refuses it");
    let real = cl.real_running();
    assert_eq!(
        (real.get(&1), real.get(&2), real.get(&3)),
        (Some(&3), None, None),
        "what the hosts run"
    );
    // A plain definition still runs on a locked-down node.
    let plain = cl.haco("plain", "[\"/bin/sleep\", \"3600\"]");
    cl.ok(&["spawn", plain.to_str().unwrap(), "--node", "3"]);
    cl.wait_containers(T, "the plain one running on node 3", |c| {
        c.iter().any(|x| x["node"] == 3 && x["state"] == "running")
    });

    // Node 2 restarts without its policy: the record goes, and it takes the definition.
    cl.stop(2);
    cl.nodes[1].flags.retain(|f| f != "--config" && f != locked);
    cl.start(2);
    cl.wait(T, "node 2 back with the default policy", |s| {
        policy_of(s, 2).is_null()
            && s["members"]
                .as_array()
                .is_some_and(|m| m.iter().all(|x| x["state"] == "up"))
    });
    cl.ok(&["spawn", def, "--node", "2"]);
    cl.wait_containers(T, "the privileged one running on node 2", |c| {
        c.iter().any(|x| x["node"] == 2 && x["state"] == "running")
    });
}
