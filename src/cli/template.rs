//! The commented boilerplate `haconiwa new` writes.

/// Renders a definition that shows every key and runs as is after `haconiwa create`;
/// with `image`, its root is that OCI image and its command, environment, working
/// directory and user are the image's unless set.
pub fn boilerplate(name: &str, root: &str, image: Option<&str>) -> String {
    let mut text = TEMPLATE.to_string();
    if let Some(image) = image {
        for (from, to) in IMAGE_LINES {
            text = text.replace(from, &to.replace("@IMAGE@", image));
        }
    }
    text.replace("@NAME@", name).replace("@ROOT@", root)
}

/// What changes in the boilerplate for a definition of an image.
const IMAGE_LINES: [(&str, &str); 6] = [
    (
        "// `haconiwa create THIS_FILE` builds the root filesystem, `haconiwa run THIS_FILE` runs it.",
        "// `haconiwa create THIS_FILE` pulls the image (and makes the provision layer), `haconiwa run THIS_FILE` runs it.",
    ),
    (
        r#"    c.init_command = ["/bin/sh", "-c", "echo hello from $(hostname); sleep 3"];"#,
        r#"    // c.init_command = ["/bin/sh"];          // the image's Entrypoint + Cmd when unset"#,
    ),
    (
        r#"    c.environment = #{ PATH: "/bin:/sbin:/usr/bin:/usr/sbin", LANG: "C" };"#,
        r#"    // c.env("LANG", "C");                    // added to the image's Env (the definition wins)"#,
    ),
    (
        r#"    c.workdir = "/";"#,
        r#"    // c.workdir = "/";                       // the image's WorkingDir when unset"#,
    ),
    (
        r#"    // Root filesystem, and how `haconiwa create` builds it when it is missing.
    c.chroot_to("@ROOT@");                    // pivot_root into it
    c.bootstrap(#{ strategy: "busybox" });   // or host / tarball / directory / debootstrap
    // c.bootstrap(#{ strategy: "tarball", archive: "rootfs.tar.gz" });
    // c.readonly_rootfs = true;
    c.run_shell("mkdir -p /srv && echo provisioned > /srv/marker", #{ name: "marker" });"#,
        r#"    // Root filesystem: an OCI image, pulled by a host that lacks it (docs/images.md).
    c.image = "@IMAGE@";
    // c.readonly_rootfs = true;
    // c.stop_signal = "SIGQUIT";                // the image's StopSignal when unset
    // c.run_shell("echo provisioned > /marker", #{ name: "marker" });   // one more layer, made once"#,
    ),
    (
        "    // c.uid = 1000; c.gid = 1000; c.groups = [100];",
        "    // c.uid = 1000; c.gid = 1000; c.groups = [100];   // the image's User when unset",
    ),
];

const TEMPLATE: &str = r#"// A haconiwa container definition (Rhai script).
// `haconiwa create THIS_FILE` builds the root filesystem, `haconiwa run THIS_FILE` runs it.
// Every key is shown; the commented ones are optional. docs/haco-dsl.md has the reference.
haconiwa.define(|c| {
    c.name = "@NAME@";                       // unique on the host; also the default hostname
    // c.name = `@NAME@-${uuid_short()}`;      // a fresh name each run
    c.hostname = "@NAME@";
    c.init_command = ["/bin/sh", "-c", "echo hello from $(hostname); sleep 3"];
    c.environment = #{ PATH: "/bin:/sbin:/usr/bin:/usr/sbin", LANG: "C" };
    c.workdir = "/";
    // c.daemonize();                         // `haconiwa run` returns once it runs

    // Root filesystem, and how `haconiwa create` builds it when it is missing.
    c.chroot_to("@ROOT@");                    // pivot_root into it
    c.bootstrap(#{ strategy: "busybox" });   // or host / tarball / directory / debootstrap
    // c.bootstrap(#{ strategy: "tarball", archive: "rootfs.tar.gz" });
    // c.readonly_rootfs = true;
    c.run_shell("mkdir -p /srv && echo provisioned > /srv/marker", #{ name: "marker" });

    // Namespaces: uts ipc pid mount net user cgroup; enter(kind, path) joins one.
    c.namespace.unshare(["uts", "ipc", "pid", "mount", "net"]);
    // c.namespace.enter("net", "/var/run/netns/blue");
    // c.namespace.unshare("user"); c.namespace.uid_map(0, 100000, 65536); c.namespace.gid_map(0, 100000, 65536);

    // Filesystems inside besides /proc, /sys, /dev, /dev/pts and /dev/shm.
    c.mount_independent("tmpfs");              // /tmp as tmpfs
    // c.add_mount_point("/var/log", #{ to: "/host-log", readonly: true });
    // c.add_mount_point("tmpfs", #{ to: "/scratch", fs: "tmpfs", options: "size=16m" });

    // cgroup limits, v1 or v2 key names.
    c.cgroup["memory.max"] = "64M";
    c.cgroup["pids.max"] = 64;
    // c.cgroup["cpu.max"] = "50000 100000";   // or cpu.cfs_quota_us / cpu.shares / cpu.weight
    // c.cgroup["cpuset.cpus"] = "0";

    // Privileges: Docker's default 14 capabilities, then allow / drop / reset. A non-root
    // uid holds none of them unless raised with ambient (docs/security.md).
    c.capabilities.drop(["cap_sys_time"]);
    // c.capabilities.allow(["cap_net_admin"]);
    c.set_limit("nofile", 1024, 4096);
    // c.uid = 1000; c.gid = 1000; c.groups = [100];
    // c.capabilities.ambient(["cap_net_bind_service"]);
    // c.no_new_privs = false;
    // c.seccomp = "unconfined";                // or a Docker-format profile: "/etc/haconiwa/p.json"
    // c.devices.allow("/dev/fuse");            // beyond null, zero, full, random, urandom, tty, pts
    c.labels = #{ app: "@NAME@" };
    // c.network(#{ bridge: "haconiwa0", address: "10.88.0.2/24", gateway: "10.88.0.1" });
});
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_boilerplates_load_and_the_image_one_leaves_the_rest_to_the_image() {
        let plain = crate::spec::load_str(&boilerplate("web", "/r", None), "web.haco", None)
            .expect("the boilerplate loads");
        assert_eq!(plain.rootfs.path, std::path::PathBuf::from("/r"));
        assert!(plain.image.is_none() && !plain.init_command.is_empty());
        let text = boilerplate("web", "/r", Some("localhost:5000/web:1"));
        let img =
            crate::spec::load_str(&text, "web.haco", None).expect("the image boilerplate loads");
        assert_eq!(img.image.as_deref(), Some("localhost:5000/web:1"));
        assert!(img.init_command.is_empty() && img.environment.is_empty() && img.workdir.is_none());
        assert!(img.bootstrap.is_none() && img.provision.is_empty());
        assert!(!text.contains("chroot_to"), "{text}");
    }
}
