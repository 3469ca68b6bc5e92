//! `haconiwa create`: busybox, host and tarball root filesystems, provision steps run
//! once, and a container actually running from each root.

use crate::common::*;

fn create_and_run(
    host: &Host,
    name: &str,
    root: &std::path::Path,
    bootstrap: &str,
    cmd: &str,
) -> String {
    let def = host.haco_raw(
        name,
        &format!(
            "haconiwa.define(|c| {{\n  c.name = \"{name}\";\n  c.chroot_to(\"{}\");\n  c.bootstrap({bootstrap});\n  c.namespace.unshare([\"mount\", \"pid\", \"uts\"]);\n  c.init_command = {cmd};\n}});\n",
            root.display()
        ),
    );
    let created = host.ok(&["create", def.to_str().unwrap()]);
    assert!(created.contains("built root filesystem"), "{created}");
    // A second create finds it.
    assert!(host
        .ok(&["create", def.to_str().unwrap()])
        .contains("exists"));
    host.ok(&["run", def.to_str().unwrap()])
}

#[test]
fn busybox_root() {
    let host = Host::new("bs-busybox");
    let root = host.scratch.path.join("bb");
    let out = create_and_run(
        &host,
        "bb",
        &root,
        "#{ strategy: \"busybox\" }",
        "[\"/bin/sh\", \"-c\", \"cat /etc/passwd | head -1; ls /bin | wc -l\"]",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "root:x:0:0:root:/root:/bin/sh");
    assert!(lines[1].trim().parse::<u32>().unwrap() > 50, "{out}");
    for f in [
        "etc/group",
        "etc/hosts",
        "etc/resolv.conf",
        "proc",
        "dev",
        "tmp",
    ] {
        assert!(root.join(f).exists(), "{f} missing");
    }
    host.assert_clean();
}

#[test]
fn host_binaries_root() {
    let host = Host::new("bs-host");
    let root = host.scratch.path.join("hostroot");
    let out = create_and_run(
        &host,
        "hb",
        &root,
        "#{ strategy: \"host\", binaries: [\"sh\", \"echo\", \"cat\"] }",
        "[\"sh\", \"-c\", \"echo from-host-binaries; cat /etc/hostname 2>/dev/null || true\"]",
    );
    assert!(out.contains("from-host-binaries"), "{out}");
    // No busybox in there: only what was asked for and its libraries.
    assert!(!root.join("bin/busybox").exists());
    host.assert_clean();
}

#[test]
fn tarball_root_and_failed_tarball_leaves_nothing() {
    let host = Host::new("bs-tar");
    let archive = host.scratch.path.join("root.tar.gz");
    let src = busybox_rootfs();
    let st = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let root = host.scratch.path.join("tarroot");
    let bootstrap = format!(
        "#{{ strategy: \"tarball\", archive: {:?} }}",
        archive.display().to_string()
    );
    let out = create_and_run(
        &host,
        "tb",
        &root,
        &bootstrap,
        "[\"/bin/echo\", \"from-tarball\"]",
    );
    assert_eq!(out.trim(), "from-tarball");
    // A broken archive: a clear error, no half-built root.
    let bad = host.scratch.path.join("bad.tar.gz");
    std::fs::write(&bad, b"not a tarball").unwrap();
    let root2 = host.scratch.path.join("badroot");
    let def = host.haco_raw(
        "bad",
        &format!(
            "haconiwa.define(|c| {{ c.name = \"bad\"; c.chroot_to(\"{}\"); c.bootstrap(#{{ strategy: \"tarball\", archive: \"{}\" }}); c.init_command = \"/bin/true\"; }});",
            root2.display(),
            bad.display()
        ),
    );
    let out = host.run(&["create", def.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("bootstrap of") && stderr(&out).contains("tar"),
        "{}",
        stderr(&out)
    );
    assert!(!root2.exists());
    let leftovers: Vec<_> = std::fs::read_dir(&host.scratch.path)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    host.assert_clean();
}

#[test]
fn provision_steps_run_once_and_rerun_on_demand() {
    let host = Host::new("bs-prov");
    let root = host.scratch.path.join("prov");
    let def = host.haco_raw(
        "prov",
        &format!(
            "haconiwa.define(|c| {{\n  c.name = \"prov\";\n  c.chroot_to(\"{}\");\n  c.bootstrap(#{{ strategy: \"busybox\" }});\n  c.init_command = [\"/bin/cat\", \"/srv/count\"];\n  c.namespace.unshare([\"mount\"]);\n  c.run_shell(\"mkdir -p /srv; echo x >> /srv/count\", #{{ name: \"count\" }});\n}});\n",
            root.display()
        ),
    );
    host.ok(&["create", def.to_str().unwrap()]);
    host.ok(&["create", def.to_str().unwrap()]);
    assert_eq!(host.ok(&["run", def.to_str().unwrap()]), "x\n");
    host.ok(&["provision", def.to_str().unwrap()]);
    assert_eq!(host.ok(&["run", def.to_str().unwrap()]), "x\nx\n");
    // A failing step is reported with its name and output, and not marked done.
    let bad = host.haco_raw(
        "badprov",
        &format!(
            "haconiwa.define(|c| {{ c.name = \"bp\"; c.chroot_to(\"{}\"); c.init_command = \"/bin/true\"; c.run_shell(\"echo oops >&2; false\", #{{ name: \"fails\" }}); }});",
            root.display()
        ),
    );
    let out = host.run(&["create", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("provision step 'fails'") && stderr(&out).contains("oops"),
        "{}",
        stderr(&out)
    );
    // The record lives beside the root, outside it, and holds only the step that ran.
    let record = std::fs::read_to_string(host.scratch.path.join(".prov.provisioned.json"))
        .expect("provision record beside the root");
    assert!(
        record.contains("\"count\"") && !record.contains("fails"),
        "{record}"
    );
    assert!(!root.join(".haconiwa").exists());
    host.assert_clean();
}

#[test]
fn new_writes_a_boilerplate_that_runs_after_create() {
    let host = Host::new("bs-new");
    let def = host.scratch.path.join("web.haco");
    let root = host.scratch.path.join("webroot");
    host.ok(&[
        "new",
        def.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&def).unwrap();
    for key in [
        "c.hostname",
        "c.namespace.enter",
        "c.cgroup[",
        "c.capabilities.allow",
        "c.set_limit",
        "c.uid",
        "c.network",
        "add_mount_point",
        "uid_map",
        "c.capabilities.ambient",
        "c.seccomp",
        "c.devices.allow",
    ] {
        assert!(text.contains(key), "boilerplate lacks {key}");
    }
    // Refuses to overwrite, and leaves the file as it was.
    std::fs::write(&def, format!("{text}// edited by hand\n")).unwrap();
    let again = host.run(&["new", def.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("exists; pass --force"),
        "{}",
        stderr(&again)
    );
    assert_eq!(
        std::fs::read_to_string(&def).unwrap(),
        format!("{text}// edited by hand\n")
    );
    host.ok(&["create", def.to_str().unwrap()]);
    let out = host.ok(&["run", def.to_str().unwrap()]);
    assert!(out.contains("hello from web"), "{out}");
    let shown: serde_json::Value =
        serde_json::from_str(&host.ok(&["show", "--json", def.to_str().unwrap()])).unwrap();
    assert_eq!(shown["name"], "web");
    host.assert_clean();
}

#[test]
fn directory_root_and_an_edited_step_runs_again() {
    let host = Host::new("bs-dir");
    let source = busybox_rootfs();
    let root = host.scratch.path.join("copied");
    let out = create_and_run(
        &host,
        "dir",
        &root,
        &format!(
            "#{{ strategy: \"directory\", source: \"{}\" }}",
            source.display()
        ),
        "[\"/bin/sh\", \"-c\", \"ls /bin/busybox\"]",
    );
    assert_eq!(out, "/bin/busybox\n");
    // A copy, not the source: a step writing into it leaves the source alone.
    let def = |script: &str| {
        host.haco_raw(
            "edited",
            &format!(
                "haconiwa.define(|c| {{\n  c.name = \"edited\";\n  c.chroot_to(\"{}\");\n  c.init_command = [\"/bin/cat\", \"/srv/log\"];\n  c.namespace.unshare([\"mount\"]);\n  c.run_shell({script:?}, #{{ name: \"step\" }});\n}});\n",
                root.display()
            ),
        )
    };
    let first = def("mkdir -p /srv; echo first >> /srv/log");
    host.ok(&["create", first.to_str().unwrap()]);
    host.ok(&["create", first.to_str().unwrap()]);
    assert_eq!(host.ok(&["run", first.to_str().unwrap()]), "first\n");
    // The same step name with another script: it runs again, once.
    let second = def("mkdir -p /srv; echo second >> /srv/log");
    let created = host.ok(&["create", second.to_str().unwrap()]);
    assert!(created.contains("provisioned: step"), "{created}");
    host.ok(&["create", second.to_str().unwrap()]);
    assert_eq!(
        host.ok(&["run", second.to_str().unwrap()]),
        "first\nsecond\n"
    );
    assert!(!source.join("srv").exists(), "the source was written");
    host.assert_clean();
}

/// The local Debian mirror scripts/test makes (scripts/debian-mirror); the test never
/// reaches the archive itself.
fn debian_mirror() -> std::path::PathBuf {
    let dir = std::env::var_os("HACONIWA_DEBIAN_MIRROR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/var/cache/haconiwa/debian-mirror".into());
    assert!(
        dir.join("complete").is_file(),
        "no local Debian mirror in {} (scripts/test makes it: scripts/debian-mirror)",
        dir.display()
    );
    dir
}

#[test]
fn debootstrap_root_from_a_local_mirror_and_a_failed_one_leaves_nothing() {
    require_program("debootstrap", "debootstrap");
    let mirror = debian_mirror();
    let host = Host::new("bs-debootstrap");
    let root = host.scratch.path.join("deb");
    let recipe = format!(
        "#{{ strategy: \"debootstrap\", suite: \"bookworm\", variant: \"minbase\", mirror: \"file://{}\" }}",
        mirror.display()
    );
    let t0 = std::time::Instant::now();
    let out = create_and_run(
        &host,
        "deb",
        &root,
        &recipe,
        "[\"/bin/sh\", \"-c\", \"cat /etc/debian_version; dpkg-query -W -f='${Status}' dpkg\"]",
    );
    eprintln!(
        "debootstrap minbase from the local mirror: {:?}",
        t0.elapsed()
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("12."), "not Debian 12: {out}");
    assert_eq!(lines.get(1).copied(), Some("install ok installed"), "{out}");
    // A suite the mirror does not have: the step and debootstrap's reason, nothing left.
    let bad_root = host.scratch.path.join("nosuch");
    let def = host.haco_raw(
        "nosuch",
        &format!(
            "haconiwa.define(|c| {{\n  c.name = \"nosuch\";\n  c.chroot_to(\"{}\");\n  c.bootstrap(#{{ strategy: \"debootstrap\", suite: \"no-such-suite\", variant: \"minbase\", mirror: \"file://{}\" }});\n  c.init_command = [\"/bin/true\"];\n}});\n",
            bad_root.display(),
            mirror.display()
        ),
    );
    let o = host.run(&["create", def.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = stderr(&o);
    let reason = err
        .lines()
        .find(|l| l.contains("bootstrap of"))
        .unwrap_or_else(|| panic!("no bootstrap error: {err}"));
    eprintln!("{reason}");
    assert!(
        reason.contains("(debootstrap)")
            && reason.contains("E: No such script")
            && reason.contains("no-such-suite"),
        "{reason}"
    );
    assert!(
        !bad_root.exists(),
        "a failed bootstrap left {}",
        bad_root.display()
    );
    let leftovers: Vec<_> = std::fs::read_dir(&host.scratch.path)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("nosuch") && n != "nosuch.haco")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    host.assert_clean();
}
