//! cgroup v2 for real: this host's controllers are bound to v1 (a cgroup2 mount of our
//! own offers only `hugetlb`), so the launcher's v2 writes run in a qemu guest (software
//! emulation) booting Debian's cloud kernel with only the unified hierarchy mounted. The
//! guest runs the binary under test on `pids`, `memory` and `cpu`, and the test reads
//! what the guest's kernel enforced: the limit files, the processes' cgroups (the clone
//! into the cgroup), refused forks, an OOM kill, CPU throttling, and nothing left.

use crate::common::{require_program, require_root, Scratch, BIN};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The guest's first process: the initramfs cannot be pivoted away from (pivot_root
/// refuses the rootfs), so it copies itself to a tmpfs and switches root, as a real
/// initramfs hands over to the real root.
const STAGE1: &str = r#"#!/bin/busybox sh
/bin/busybox mount -t tmpfs -o size=400m root /newroot
for d in bin lib guest.sh limits.haco forks.haco hog.haco spin.haco; do
  /bin/busybox cp -a /$d /newroot/
done
/bin/busybox mkdir -p /newroot/proc /newroot/sys /newroot/dev /newroot/run /newroot/tmp \
  /newroot/var/lib/haconiwa/rootfs
exec /bin/busybox switch_root /newroot /guest.sh
"#;

/// The guest's checks; each result is one `HCT key=value` line on the serial console.
const GUEST: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tmpfs run /run; mount -t tmpfs tmp /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
insmod /lib/overlay.ko
echo "+pids +memory +cpu" > /sys/fs/cgroup/cgroup.subtree_control
say() { echo "HCT $1=$2"; }
cg=/sys/fs/cgroup/haconiwa
say mount "$(grep ' /sys/fs/cgroup ' /proc/mounts | cut -d' ' -f3)"
say controllers "$(cat /sys/fs/cgroup/cgroup.controllers)"
# Wait (bounded) until a container's log (its stdout and stderr) holds a word.
wait_log() { i=0; while [ $i -lt 100 ]; do haconiwa logs $1 2>&1 | grep -q "$2" && return 0; sleep 0.1; i=$((i+1)); done; return 1; }

haconiwa run --create /limits.haco > /tmp/limits.out 2>&1; say limits.run $?
for f in pids.max memory.max cpu.max; do say limits.$f "$(cat $cg/limits/$f)"; done
# The container's command may still be on its way to exec (an emulated CPU, a busy
# host): look for it a while (bounded).
i=0; found=
while [ -z "$found" ] && [ $i -lt 100 ]; do
  for p in $(cat $cg/limits/cgroup.procs); do
    [ "$(tr '\0' ' ' < /proc/$p/cmdline)" = "/bin/sleep 600 " ] && found=$p
  done
  [ -z "$found" ] && sleep 0.1; i=$((i+1))
done
[ -n "$found" ] && say limits.init_cgroup "$(cat /proc/$found/cgroup)"

haconiwa run /forks.haco > /tmp/forks.out 2>&1; say forks.run $?
wait_log forks 'Resource temporarily unavailable'; say forks.refused $?
say forks.current "$(cat $cg/forks/pids.current)"
say forks.events "$(cat $cg/forks/pids.events)"

haconiwa run /hog.haco > /tmp/hog.out 2>&1; say hog.exit $?
say hog.error "$(grep -o 'killed by the OOM killer' /tmp/hog.out | head -1)"
say hog.left "$(ls -d $cg/hog 2>/dev/null)"

haconiwa run /spin.haco > /tmp/spin.out 2>&1; say spin.run $?
sleep 2
say spin.cpu.max "$(cat $cg/spin/cpu.max)"
say spin.memory.max "$(cat $cg/spin/memory.max)"
say spin.throttled "$(grep nr_throttled $cg/spin/cpu.stat | cut -d' ' -f2)"

for c in limits forks spin; do haconiwa kill $c -s KILL > /tmp/kill.out 2>&1 || say kill.$c "$(cat /tmp/kill.out)"; done
say left "$(ls -d $cg/*/ 2>/dev/null | tr '\n' ' ')"
for f in /tmp/*.out; do echo "== $f"; cat $f; done
say end 1
poweroff -f
"#;

/// One definition for the guest, on the busybox root it builds with `--create`.
fn definition(name: &str, command: &str, extra: &str) -> String {
    format!(
        "haconiwa.define(|c| {{\n    c.name = \"{name}\";\n    c.init_command = [\"/bin/sh\", \"-c\", {command:?}];\n    c.chroot_to(\"/var/lib/haconiwa/rootfs/busybox\");\n    c.bootstrap(#{{ strategy: \"busybox\" }});\n    c.namespace.unshare([\"uts\", \"ipc\", \"pid\", \"mount\", \"net\"]);\n{extra}\n}});\n"
    )
}

/// The cached guest kernel (scripts/guest-kernel); fails loudly when it is missing.
fn guest_kernel() -> PathBuf {
    let dir = std::env::var("HACONIWA_GUEST_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/var/cache/haconiwa/guest-kernel"));
    assert!(
        dir.join("vmlinuz").is_file() && dir.join("overlay.ko").is_file(),
        "no guest kernel in {}: run scripts/guest-kernel (scripts/test does)",
        dir.display()
    );
    dir
}

/// Builds the initramfs: busybox, the binary under test (debug info stripped: it is
/// unpacked twice in the guest's memory), the kernel's overlay module, the scripts.
fn initramfs(work: &Path, kernel: &Path) -> PathBuf {
    let root = work.join("root");
    for d in ["bin", "lib", "newroot"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
    let out = Command::new("objcopy")
        .args(["--strip-debug", BIN])
        .arg(root.join("bin/haconiwa"))
        .output()
        .expect("run objcopy");
    assert!(
        out.status.success(),
        "objcopy: {}",
        crate::common::stderr(&out)
    );
    std::fs::copy(kernel.join("overlay.ko"), root.join("lib/overlay.ko")).unwrap();
    let files = [
        ("init", STAGE1.to_string()),
        ("guest.sh", GUEST.to_string()),
        (
            "limits.haco",
            definition(
                "limits",
                "exec /bin/sleep 600",
                "    c.cgroup[\"pids.max\"] = 16;\n    c.cgroup[\"memory.max\"] = \"64M\";\n    c.cgroup[\"cpu.max\"] = \"50000 100000\";\n    c.daemonize();",
            ),
        ),
        (
            "forks.haco",
            definition(
                "forks",
                "seq 12 | xargs -P 12 -I N sleep 300",
                "    c.cgroup[\"pids.max\"] = 6;\n    c.daemonize();",
            ),
        ),
        (
            "hog.haco",
            definition(
                "hog",
                "dd if=/dev/zero of=/dev/null bs=96M count=1",
                "    c.cgroup[\"memory.max\"] = \"32M\";",
            ),
        ),
        (
            "spin.haco",
            definition(
                "spin",
                "while :; do :; done",
                "    c.cgroup[\"cpu.max\"] = \"10000 100000\";\n    c.cgroup[\"memory.max\"] = -1;\n    c.daemonize();",
            ),
        ),
    ];
    for (name, text) in files {
        let p = root.join(name);
        std::fs::write(&p, text).unwrap();
        if !name.ends_with(".haco") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    let image = work.join("initrd.gz");
    let out = Command::new("sh")
        .arg("-c")
        .arg("cd \"$1\" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 > \"$2\"")
        .args(["sh"])
        .arg(&root)
        .arg(&image)
        .output()
        .expect("run cpio");
    assert!(
        out.status.success(),
        "initramfs: {}",
        crate::common::stderr(&out)
    );
    image
}

/// Boots the guest and returns its serial console; qemu is killed (by pid) after
/// `limit`.
fn boot(work: &Path, kernel: &Path, initrd: &Path, limit: Duration) -> String {
    let serial = work.join("serial.log");
    let mut qemu = Command::new("qemu-system-x86_64")
        // Software emulation (a guest under KVM hangs on this kind of machine); `-cpu
        // max` offers RDRAND so that the guest's random pool is ready at once.
        .args(["-accel", "tcg", "-cpu", "max", "-m", "768", "-smp", "1"])
        .args([
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
            "-nic",
            "none",
        ])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-kernel")
        .arg(kernel.join("vmlinuz"))
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            "console=ttyS0 panic=-1 random.trust_cpu=on quiet",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qemu-system-x86_64");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = qemu.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > limit {
            let _ = qemu.kill();
            let _ = qemu.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let console = std::fs::read_to_string(&serial).unwrap_or_default();
    let mut err = String::new();
    if let Some(mut e) = qemu.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    match status {
        Some(s) => assert!(s.success(), "qemu failed ({s}): {err}\n{console}"),
        None => panic!("the guest did not power off within {limit:?}:\n{console}"),
    }
    eprintln!(
        "guest booted, tested and powered off in {:?}",
        start.elapsed()
    );
    console
}

#[test]
fn limits_are_written_and_enforced_on_a_cgroup_v2_kernel() {
    require_root();
    require_program("qemu-system-x86_64", "qemu-system-x86");
    require_program("busybox", "busybox-static");
    require_program("objcopy", "binutils");
    let kernel = guest_kernel();
    let work = Scratch::new("cgv2-guest");
    let initrd = initramfs(&work.path, &kernel);
    // About 6 s here; the bound only stops a hung guest.
    let console = boot(&work.path, &kernel, &initrd, Duration::from_secs(240));
    let seen: BTreeMap<&str, &str> = console
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("HCT "))
        .filter_map(|l| l.split_once('='))
        .collect();
    let get = |k: &str| -> &str {
        seen.get(k)
            .copied()
            .unwrap_or_else(|| panic!("the guest reported no {k}:\n{console}"))
    };
    assert_eq!(get("end"), "1", "{console}");
    // Only the unified hierarchy, with the controllers the test needs.
    assert_eq!(get("mount"), "cgroup2", "{console}");
    for c in ["cpu", "memory", "pids"] {
        assert!(get("controllers").split(' ').any(|x| x == c), "{console}");
    }
    // The limits as written on v2, and the container's init born in its cgroup.
    assert_eq!(get("limits.run"), "0", "{console}");
    assert_eq!(get("limits.pids.max"), "16", "{console}");
    assert_eq!(get("limits.memory.max"), "67108864", "{console}");
    assert_eq!(get("limits.cpu.max"), "50000 100000", "{console}");
    assert_eq!(
        get("limits.init_cgroup"),
        "0::/haconiwa/limits",
        "{console}"
    );
    // pids.max: the 7th process is refused (xargs says so), and the kernel counts it.
    assert_eq!(get("forks.run"), "0", "{console}");
    assert_eq!(
        get("forks.refused"),
        "0",
        "xargs saw no refused fork: {console}"
    );
    let current: u32 = get("forks.current").parse().unwrap();
    assert!(
        (1..=6).contains(&current),
        "pids.current {current}: {console}"
    );
    let refused_by_kernel: u32 = get("forks.events")
        .strip_prefix("max ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("pids.events: {console}"));
    assert!(refused_by_kernel > 0, "{console}");
    // memory.max: a 96 MB buffer under 32M is an OOM kill, reported as such, cleaned up.
    assert_eq!(get("hog.exit"), "137", "{console}");
    assert_eq!(get("hog.error"), "killed by the OOM killer", "{console}");
    assert_eq!(get("hog.left"), "", "{console}");
    // cpu.max: a busy loop held to 10% is throttled; -1 (unlimited) is v2's "max".
    assert_eq!(get("spin.run"), "0", "{console}");
    assert_eq!(get("spin.cpu.max"), "10000 100000", "{console}");
    assert_eq!(get("spin.memory.max"), "max", "{console}");
    assert!(
        get("spin.throttled").parse::<u32>().unwrap() > 0,
        "{console}"
    );
    // Every container's cgroup removed after it was killed.
    assert_eq!(get("left"), "", "{console}");
    assert!(!seen.keys().any(|k| k.starts_with("kill.")), "{console}");
}
