//! Definition keys that the loader parses, run for real: each test looks from inside the
//! container at what the key says should be there.

use crate::common::{stderr, stdout, Host};

fn out(o: &std::process::Output) -> String {
    assert!(o.status.success(), "{}{}", stdout(o), stderr(o));
    stdout(o)
}

#[test]
fn readonly_rootfs_leaves_nothing_writable_but_the_mounts() {
    let h = Host::new("dsl-ro");
    let o = h.sh(
        "ro",
        "    c.readonly_rootfs = true;\n    c.mount_independent(\"tmpfs\");",
        "touch /x 2>/dev/null || echo root-ro; touch /tmp/x && echo tmp-rw",
    );
    assert_eq!(out(&o), "root-ro\ntmp-rw\n");
    h.assert_clean();
}

#[test]
fn a_tmpfs_mount_has_its_size_and_options() {
    let h = Host::new("dsl-tmpfs");
    let o = h.sh(
        "tmpfs",
        "    c.add_mount_point(\"tmpfs\", #{ to: \"/scratch\", fs: \"tmpfs\", options: \"size=1m,mode=0700\" });",
        "grep ' /scratch ' /proc/mounts | cut -d' ' -f3,4; stat -c %a /scratch; \
         dd if=/dev/zero of=/scratch/f bs=1k count=2048 2>/dev/null || echo full",
    );
    let text = out(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("tmpfs rw,nosuid,nodev") && lines[0].contains("size=1024k"),
        "{text}"
    );
    assert_eq!(&lines[1..], ["700", "full"], "{text}");
    h.assert_clean();
}

#[test]
fn loopback_false_keeps_lo_down_and_the_default_brings_it_up() {
    let h = Host::new("dsl-lo");
    let flags = |extra: &str| {
        let o = h.sh("lo", extra, "cat /sys/class/net/lo/flags");
        u32::from_str_radix(out(&o).trim().trim_start_matches("0x"), 16).unwrap()
    };
    assert_eq!(flags("") & 1, 1, "IFF_UP by default");
    assert_eq!(
        flags("    c.network(#{ loopback: false });") & 1,
        0,
        "IFF_UP cleared"
    );
    h.assert_clean();
}

#[test]
fn an_allowed_device_is_there_and_opens_and_the_others_do_not() {
    let h = Host::new("dsl-dev");
    let o = h.sh(
        "dev",
        "    c.devices.allow(\"/dev/fuse\");",
        "stat -c '%t:%T %F' /dev/fuse; exec 3<>/dev/fuse && echo opened; \
         (mknod /dev/tun c 10 200 && exec 4<>/dev/tun) 2>&1 | grep -q 'not permitted' && echo other-refused",
    );
    // /dev/fuse is there and opens; another device can be neither made nor opened.
    assert_eq!(
        out(&o),
        "a:e5 character special file\nopened\nother-refused\n"
    );
    h.assert_clean();
}

#[test]
fn a_cgroup_namespace_shows_its_own_cgroup_as_the_root() {
    let h = Host::new("dsl-cgns");
    let own = out(&h.sh(
        "cgns",
        "    c.namespace.unshare([\"cgroup\"]);",
        "cat /proc/self/cgroup",
    ));
    assert!(own.lines().all(|l| l.ends_with(":/")), "{own}");
    let shared = out(&h.sh("nocgns", "", "cat /proc/self/cgroup"));
    assert!(shared.contains(&h.cgroup_parent), "{shared}");
    h.assert_clean();
}

#[test]
fn a_user_namespace_maps_gids_like_uids_unless_told() {
    let h = Host::new("dsl-gidmap");
    let o = h.sh(
        "userns",
        "    c.namespace.unshare([\"user\"]);\n    c.namespace.uid_map(0, 300000, 1000);",
        "cat /proc/self/uid_map /proc/self/gid_map | tr -s ' '",
    );
    assert_eq!(out(&o), " 0 300000 1000\n 0 300000 1000\n");
    h.assert_clean();
}

#[test]
fn the_environment_has_its_defaults_and_unlimited_limits_are_unlimited() {
    let h = Host::new("dsl-env");
    let o = h.sh(
        "envd",
        "    c.set_limit(\"core\", \"unlimited\", \"unlimited\");\n    c.set_limit(\"fsize\", 1024, -1);",
        "echo $PATH; echo $HOME; echo $HOSTNAME; echo $TERM; ulimit -c; ulimit -f; ulimit -Hf",
    );
    let text = out(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], haconiwa::launcher::DEFAULT_PATH, "{text}");
    assert_eq!(&lines[1..3], ["/root", "envd"], "{text}");
    assert!(!lines[3].is_empty(), "TERM: {text}");
    // busybox counts the file size in 512-byte blocks.
    assert_eq!(&lines[4..], ["unlimited", "2", "unlimited"], "{text}");
    h.assert_clean();
}
