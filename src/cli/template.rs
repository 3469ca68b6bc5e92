//! The commented boilerplate `haconiwa new` writes.

/// Renders a definition that shows every key and runs as is after `haconiwa create`.
pub fn boilerplate(name: &str, root: &str) -> String {
    TEMPLATE.replace("@NAME@", name).replace("@ROOT@", root)
}

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
