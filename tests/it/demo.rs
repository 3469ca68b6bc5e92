//! scripts/demo, run to the end as a newcomer would (with the test build of haconiwa):
//! every scene's expectation met, and nothing left behind.

use crate::common::{require_program, require_root, BIN};
use std::process::Command;

const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo");

fn leftovers() -> Vec<String> {
    let mut out = Vec::new();
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    out.extend(
        String::from_utf8_lossy(&netns.stdout)
            .lines()
            .filter(|l| l.starts_with("hch-"))
            .map(|l| format!("netns {l}")),
    );
    for base in [
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/unified",
    ] {
        if let Ok(rd) = std::fs::read_dir(base) {
            out.extend(
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("hch-"))
                    .map(|e| format!("cgroup {}", e.path().display())),
            );
        }
    }
    // Supervisors and monitors of the demo carry its directory in their command line.
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmd).contains("/run/haconiwa-demo.") {
                out.push(format!("process {}", e.file_name().to_string_lossy()));
            }
        }
    }
    // Mounts of the demo's hosts (their state and roots live under its directory).
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    out.extend(
        mounts
            .lines()
            .filter(|l| l.contains("/run/haconiwa-demo.") || l.contains("/run/netns/hch-"))
            .map(|l| format!("mount {l}")),
    );
    if let Ok(rd) = std::fs::read_dir("/run") {
        out.extend(
            rd.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("haconiwa-demo.")
                })
                .map(|e| format!("dir {}", e.path().display())),
        );
    }
    out
}

#[test]
fn the_demo_runs_every_scene_and_leaves_nothing_behind() {
    require_root();
    for (p, pkg) in [
        ("ip", "iproute2"),
        ("iptables", "iptables"),
        ("nsenter", "util-linux"),
        ("python3", "python3"),
    ] {
        require_program(p, pkg);
    }
    let _machine = crate::common::alone();
    let before = leftovers();
    let o = Command::new(DEMO)
        .args(["--bin", BIN])
        .output()
        .expect("run scripts/demo");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "scripts/demo failed:\n{text}");
    for scene in 1..=5 {
        assert!(
            text.contains(&format!("== scene {scene}:")),
            "scene {scene} missing:\n{text}"
        );
    }
    assert!(text.contains("every expectation met"), "{text}");
    assert!(!text.contains("EXPECTATION FAILED"), "{text}");
    let after: Vec<String> = leftovers()
        .into_iter()
        .filter(|l| !before.contains(l))
        .collect();
    assert!(after.is_empty(), "the demo left {after:?} behind");
}
