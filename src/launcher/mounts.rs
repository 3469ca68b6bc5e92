//! The container's filesystem view: private propagation, the root bind, /proc, /sys,
//! /dev, user mounts, masked paths, then pivot_root (or chroot).

use super::error::{Step, StepError, StepResult};
use super::RootAccess;
use crate::spec::{
    ContainerSpec, DeviceAllow, MountPoint, MountRef, NsKind, Propagation, RootMode, Rootfs,
    SystemMount, HOST_VIEW_FILESYSTEMS,
};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use std::fs;
use std::os::unix::fs::{symlink, FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Device nodes created in the container's /dev: name, major, minor.
const DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

fn none() -> Option<&'static str> {
    None
}

/// Resolves `inner` (absolute, inside the container) under `root` without following a
/// symlink out of it: a symlink on the way is an error.
pub(super) fn inside(root: &Path, inner: &str) -> StepResult<PathBuf> {
    let mut p = root.to_path_buf();
    for c in Path::new(inner).components() {
        match c {
            Component::Normal(n) => {
                p.push(n);
                if let Ok(md) = fs::symlink_metadata(&p) {
                    if md.file_type().is_symlink() {
                        return Err(StepError::msg(
                            format!("mount target {inner}"),
                            format!(
                                "{} is a symlink; mount targets must be real paths",
                                p.display()
                            ),
                        ));
                    }
                }
            }
            Component::RootDir | Component::CurDir => {}
            _ => {
                return Err(StepError::msg(
                    format!("mount target {inner}"),
                    "'..' is not allowed",
                ))
            }
        }
    }
    Ok(p)
}

pub(super) fn mkdir_p(p: &Path) -> StepResult<()> {
    fs::create_dir_all(p).step(|| format!("mkdir {}", p.display()))
}

/// Creates an empty file (mount point for a file bind) with its parents.
fn touch(p: &Path) -> StepResult<()> {
    if let Some(parent) = p.parent() {
        mkdir_p(parent)?;
    }
    if !p.exists() {
        fs::File::create(p).step(|| format!("create {}", p.display()))?;
    }
    Ok(())
}

/// Flags of an existing mount that a remount must keep (locked in a user namespace).
fn kept_flags(p: &Path) -> MsFlags {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let mut f = MsFlags::empty();
    if let Ok(st) = statvfs(p) {
        let fl = st.flags();
        for (a, b) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            // ST_RELATIME (the kernel's 4096), which musl's headers lack.
            (FsFlags::from_bits_retain(4096), MsFlags::MS_RELATIME),
        ] {
            if fl.contains(a) {
                f |= b;
            }
        }
    }
    f
}

pub(super) fn remount_readonly(p: &Path) -> StepResult<()> {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | kept_flags(p);
    mount(none(), p, none(), flags, none()).step(|| format!("remount {} read-only", p.display()))
}

pub(super) fn bind(src: &Path, dst: &Path, recursive: bool) -> StepResult<()> {
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    mount(Some(src), dst, none(), flags, none())
        .step(|| format!("bind mount {} on {}", src.display(), dst.display()))
}

/// Builds the container's mount table under its root and enters the root. Runs in the
/// child, inside its new mount namespace.
/// `before_pivot` runs once everything is mounted, just before pivot_root.
pub fn setup_root(
    spec: &ContainerSpec,
    access: &RootAccess,
    cgroup_views: &[(String, PathBuf)],
    secrets: &[super::secrets::SecretFile],
    before_pivot: &mut dyn FnMut() -> StepResult<()>,
) -> StepResult<()> {
    let host_table = spec.rootfs.mode == RootMode::HostMountTable;
    if spec.separates(NsKind::Mount) == host_table || spec.rootfs.mode == RootMode::Chroot {
        // The loader never produces these; a spec from elsewhere is refused here too.
        return Err(StepError::msg(
            "enter the root filesystem",
            "a chroot is refused unless an OCI config asks for the caller's mount table: root inside escapes it; unshare \"mount\" and use pivot_root",
        ));
    }
    if !host_table {
        // Nothing propagates from the container to the host or back.
        mount(
            none(),
            "/",
            none(),
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            none(),
        )
        .step(|| "make mount propagation private".into())?;
    }
    let base = &spec.rootfs.path;
    let root_buf;
    let root: &Path = match access {
        RootAccess::Layer(dir) => {
            root_buf = overlay(&spec.rootfs, dir, spec.unshares(NsKind::User))?;
            &root_buf
        }
        RootAccess::ReadOnly | RootAccess::Writable if !spec.rootfs.layers.is_empty() => {
            return Err(StepError::msg(
                "enter the root filesystem",
                "an image's layers are shared and read-only: they are mounted with a layer of the container's own",
            ));
        }
        RootAccess::ReadOnly | RootAccess::Writable => {
            bind(base, base, true)
                .step_ctx(|| format!("bind the root filesystem {}", base.display()))?;
            base
        }
    };
    if spec.mount_order.is_empty() {
        let mut system = spec.system_mounts.clone();
        system.sort();
        for m in system {
            kernel_filesystem(spec, root, m, cgroup_views)?;
        }
        device_nodes(spec, root)?;
        for m in &spec.mounts {
            user_mount(root, m)?;
        }
    } else {
        // As an OCI config lists them (its order is part of the spec).
        for m in &spec.mount_order {
            match m {
                MountRef::System(k) => kernel_filesystem(spec, root, *k, cgroup_views)?,
                MountRef::User(i) => match spec.mounts.get(*i) {
                    Some(m) => user_mount(root, m)?,
                    None => return Err(StepError::msg("mount", format!("no mount {i}"))),
                },
            }
            if *m == MountRef::System(SystemMount::Dev) {
                device_nodes(spec, root)?;
            }
        }
        if !spec.system_mounts.contains(&SystemMount::Dev) {
            device_nodes(spec, root)?;
        }
    }
    let has = |m: SystemMount| spec.system_mounts.contains(&m);
    if !spec.sysctl.is_empty() {
        write_sysctls(spec, root)?;
    }
    // /dev is the tmpfs mounted above unless a mount of the definition replaced it.
    let own_dev = has(SystemMount::Dev)
        && !spec
            .mounts
            .iter()
            .any(|m| Path::new(&m.target) == Path::new("/dev"));
    match &spec.masks {
        Some((masked, readonly)) => super::masks::mask_listed(root, own_dev, masked, readonly)?,
        None if has(SystemMount::Procfs) || has(SystemMount::Sysfs) => {
            let (masked, readonly) = crate::spec::masks::lists(&None);
            super::masks::mask_listed(root, own_dev, &masked, &readonly)?
        }
        None => {}
    }
    if !secrets.is_empty() {
        super::secrets::mount_secrets(spec, root, secrets)?;
    }
    before_pivot()?;
    if host_table {
        nix::unistd::chdir(root).step(|| format!("chdir {}", root.display()))?;
        nix::unistd::chroot(".").step(|| format!("chroot into {}", root.display()))?;
        nix::unistd::chdir("/").step(|| "chdir /".into())?;
    } else {
        pivot(root)?;
    }
    if let Some(p) = spec.rootfs.propagation {
        mount(none(), "/", none(), propagation_flag(p), none())
            .step(|| format!("make the root's propagation {p:?}"))?;
    }
    if *access == RootAccess::ReadOnly || spec.rootfs.readonly {
        remount_readonly(Path::new("/"))?;
    }
    Ok(())
}

/// One of the kernel filesystems the launcher mounts itself: /proc, /sys, /dev (with
/// its nodes), /dev/pts, /dev/shm or /tmp.
fn kernel_filesystem(
    spec: &ContainerSpec,
    root: &Path,
    m: SystemMount,
    cgroup_views: &[(String, PathBuf)],
) -> StepResult<()> {
    let user_ns = spec.unshares(NsKind::User);
    // sysfs may be mounted by whoever owns the network namespace: ours when we made it,
    // the host's when we joined one without a user namespace of our own.
    let net_ns = spec.unshares(NsKind::Net)
        || (!user_ns && spec.namespaces.enter.iter().any(|e| e.kind == NsKind::Net));
    let has = |m: SystemMount| spec.system_mounts.contains(&m);
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    match m {
        SystemMount::Procfs => {
            let p = root.join("proc");
            mkdir_p(&p)?;
            mount(Some("proc"), &p, Some("proc"), nosuid_nodev_noexec, none())
                .step(|| "mount /proc".into())?;
        }
        SystemMount::Sysfs => {
            let p = root.join("sys");
            mkdir_p(&p)?;
            if net_ns {
                mount(
                    Some("sysfs"),
                    &p,
                    Some("sysfs"),
                    nosuid_nodev_noexec | MsFlags::MS_RDONLY,
                    none(),
                )
                .step(|| "mount /sys".into())?;
            } else {
                // sysfs can only be mounted by the owner of the network namespace.
                bind(Path::new("/sys"), &p, true)?;
                remount_readonly(&p)?;
            }
        }
        SystemMount::Dev => setup_dev(root, user_ns)?,
        SystemMount::Devpts => {
            let p = root.join("dev/pts");
            mkdir_p(&p)?;
            let opts = if user_ns {
                "newinstance,ptmxmode=0666,mode=0620"
            } else {
                "newinstance,ptmxmode=0666,mode=0620,gid=5"
            };
            mount(
                Some("devpts"),
                &p,
                Some("devpts"),
                MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
                Some(opts),
            )
            .step(|| "mount /dev/pts".into())?;
            let ptmx = root.join("dev/ptmx");
            if has(SystemMount::Dev) && fs::symlink_metadata(&ptmx).is_err() {
                symlink("pts/ptmx", &ptmx).step(|| "link /dev/ptmx".into())?;
            }
        }
        // A definition's kernel filesystems are mounted in order, /dev before /dev/shm
        // and before any mount of its own: /dev is the container's tmpfs here.
        SystemMount::Shm => {
            let in_dev = spec.mount_order.is_empty() && has(SystemMount::Dev);
            shm(root, in_dev, nosuid_nodev_noexec)?
        }
        SystemMount::Tmpfs => {
            let p = root.join("tmp");
            mkdir_p(&p)?;
            mount(
                Some("tmpfs"),
                &p,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some("mode=1777"),
            )
            .step(|| "mount /tmp".into())?;
        }
        SystemMount::Cgroup => cgroup_view(root, cgroup_views)?,
    }
    Ok(())
}

/// /dev/shm: `in_dev` (a definition's, whose `/dev` is the tmpfs mounted for this
/// container), a directory of that tmpfs bound on itself with `nosuid,nodev,noexec` (no
/// superblock of its own, see `masks.rs`; the two share /dev's 64 MiB, of which /dev's
/// nodes and links use none); else, and for an OCI config, which asks for a tmpfs
/// there, a tmpfs of its own, as Docker's.
fn shm(root: &Path, in_dev: bool, flags: MsFlags) -> StepResult<()> {
    let p = root.join("dev/shm");
    if in_dev {
        mkdir_p(&p)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o1777))
            .step(|| "chmod /dev/shm".into())?;
        bind(&p, &p, false)?;
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags | kept_flags(&p);
        return mount(none(), &p, none(), flags, none()).step(|| "remount /dev/shm".into());
    }
    mkdir_p(&p)?;
    mount(
        Some("shm"),
        &p,
        Some("tmpfs"),
        flags,
        Some("mode=1777,size=65536k"),
    )
    .step(|| "mount /dev/shm".into())
}

/// `/sys/fs/cgroup` showing the container's own cgroups read-only, as runc's bind
/// view does: v2's one directory bound there; on v1 a tmpfs with each hierarchy's
/// directory of the container under the hierarchy's name, plus a link per controller
/// of a shared hierarchy (`cpu` → `cpu,cpuacct`).
fn cgroup_view(root: &Path, views: &[(String, PathBuf)]) -> StepResult<()> {
    let at = root.join("sys/fs/cgroup");
    mkdir_p(&at)?;
    let ro = |p: &Path| {
        let flags = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC;
        mount(none(), p, none(), flags, none())
            .step(|| format!("remount {} read-only", p.display()))
    };
    if let [(name, dir)] = views {
        if name.is_empty() {
            bind(dir, &at, false)?;
            return ro(&at);
        }
    }
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("tmpfs"), &at, Some("tmpfs"), flags, Some("mode=755"))
        .step(|| "mount /sys/fs/cgroup".into())?;
    for (name, dir) in views {
        let p = at.join(name);
        mkdir_p(&p)?;
        bind(dir, &p, false)?;
        ro(&p)?;
        for part in name.split(',').filter(|c| *c != name.as_str()) {
            symlink(name, at.join(part)).step(|| format!("link /sys/fs/cgroup/{part}"))?;
        }
    }
    let flags = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | flags;
    mount(none(), &at, none(), flags, Some("mode=755"))
        .step(|| "remount /sys/fs/cgroup read-only".into())
}

/// The definition's devices, created in its /dev.
fn device_nodes(spec: &ContainerSpec, root: &Path) -> StepResult<()> {
    let user_ns = spec.unshares(NsKind::User);
    for d in spec.devices.iter().filter(|d| d.path.is_some()) {
        device_node(root, d, user_ns)?;
    }
    Ok(())
}

/// One mount of the definition: a bind of a host path, or a filesystem (never one that
/// shows the host past the masks).
fn user_mount(root: &Path, m: &MountPoint) -> StepResult<()> {
    let target = inside(root, &m.target)?;
    mount_only(m, &target)?;
    if let Some(p) = m.propagation {
        mount(none(), &target, none(), propagation_flag(p), none())
            .step(|| format!("make {} {p:?}", m.target))?;
    }
    Ok(())
}

fn propagation_flag(p: Propagation) -> MsFlags {
    MsFlags::MS_REC
        | match p {
            Propagation::Shared => MsFlags::MS_SHARED,
            Propagation::Slave => MsFlags::MS_SLAVE,
            Propagation::Private => MsFlags::MS_PRIVATE,
            Propagation::Unbindable => MsFlags::MS_UNBINDABLE,
        }
}

fn mount_only(m: &MountPoint, target: &Path) -> StepResult<()> {
    let target = target.to_path_buf();
    match &m.fstype {
        None => {
            let src = Path::new(&m.source);
            let md = fs::metadata(src).step(|| format!("bind source {}", m.source))?;
            if md.is_dir() {
                mkdir_p(&target)?;
            } else {
                touch(&target)?;
            }
            bind(src, &target, true)?;
            let mut extra = MsFlags::empty();
            if m.readonly {
                extra |= MsFlags::MS_RDONLY;
            }
            if m.noexec {
                extra |= MsFlags::MS_NOEXEC;
            }
            if m.restrict {
                extra |= MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
            }
            if !extra.is_empty() {
                let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra | kept_flags(&target);
                mount(none(), &target, none(), flags, none())
                    .step(|| format!("remount the bind on {} with its options", m.target))?;
            }
        }
        Some(fstype) if HOST_VIEW_FILESYSTEMS.contains(&fstype.as_str()) => {
            return Err(StepError::msg(
                format!("mount {fstype} on {}", m.target),
                "refused: it would bypass the masked and read-only paths",
            ));
        }
        Some(fstype) => {
            mkdir_p(&target)?;
            let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
            if m.readonly {
                flags |= MsFlags::MS_RDONLY;
            }
            if m.noexec {
                flags |= MsFlags::MS_NOEXEC;
            }
            mount(
                Some(m.source.as_str()),
                &target,
                Some(fstype.as_str()),
                flags,
                m.options.as_deref(),
            )
            .step(|| format!("mount {} ({fstype}) on {}", m.source, m.target))?;
        }
    }
    Ok(())
}

/// The definition's kernel parameters, through the container's /proc (its own
/// namespaces answer there), before /proc/sys is made read-only.
fn write_sysctls(spec: &ContainerSpec, root: &Path) -> StepResult<()> {
    if !spec.system_mounts.contains(&SystemMount::Procfs) {
        return Err(StepError::msg(
            "set kernel parameters",
            "they are written through /proc, which this container does not mount",
        ));
    }
    for (key, value) in &spec.sysctl {
        crate::spec::sysctl::is_namespaced(spec, key)
            .map_err(|why| StepError::msg(format!("set {key}"), why))?;
        let path = root.join("proc/sys").join(key.replace('.', "/"));
        fs::write(&path, value).step(|| format!("set {key} to {value}"))?;
    }
    Ok(())
}

/// The longest mount option string the kernel takes (one page).
const MOUNT_OPTIONS_MAX: usize = 4095;

/// Mounts the container's root at `dir/merged`: the read-only layers below (the
/// bootstrapped base, or an image's layers, top first) and the container's own writable
/// layer on top (`dir/upper`, with overlayfs' `dir/work`). An image's layers are named
/// relative to the store (`l/<short>`) with the store as the working directory during
/// the mount: 100+ layers stay within the one page the kernel takes for mount options.
fn overlay(rootfs: &Rootfs, dir: &Path, user_ns: bool) -> StepResult<PathBuf> {
    let base = &rootfs.path;
    let merged = dir.join("merged");
    let (upper, work) = (dir.join("upper"), dir.join("work"));
    let what = "mount the root's layers";
    let lower = if rootfs.layers.is_empty() {
        base.display().to_string()
    } else {
        rootfs.layers.join(":")
    };
    // The image's layers are joined with ':' (each is checked below).
    let paths = [
        (rootfs.layers.is_empty(), lower.as_str()),
        (true, &upper.to_string_lossy()),
        (true, &work.to_string_lossy()),
    ];
    for (one_path, text) in paths {
        if text.contains([',', '\\']) || (one_path && text.contains(':')) {
            return Err(StepError::msg(
                what,
                format!("{text} contains ',', ':' or '\\', which overlayfs options cannot carry"),
            ));
        }
    }
    if let Some(bad) = rootfs.layers.iter().find(|l| {
        l.is_empty()
            || l.starts_with('/')
            || l.contains([':', ',', '\\'])
            || l.split('/').any(|c| c == "..")
    }) {
        return Err(StepError::msg(
            what,
            format!("layer '{bad}' is not a name inside the image store"),
        ));
    }
    if !rootfs.layers.is_empty() {
        nix::unistd::chdir(base).step(|| format!("chdir {}", base.display()))?;
    }
    // Also for a read-only root: the writable layer takes the mount points an image may
    // lack (/proc, /dev, …); the root is remounted read-only once entered.
    let mut opts = format!(
        // volatile: no syncs of the upper layer, which is thrown away with the container.
        "lowerdir={lower},upperdir={},workdir={},volatile",
        upper.display(),
        work.display()
    );
    if user_ns {
        // trusted.* xattrs belong to the host's root; in a user namespace overlayfs keeps
        // its bookkeeping in user.* ones.
        opts.push_str(",userxattr");
    }
    if opts.len() > MOUNT_OPTIONS_MAX {
        return Err(StepError::msg(
            what,
            format!(
                "{} layers need {} bytes of mount options, over the kernel's {MOUNT_OPTIONS_MAX}",
                rootfs.layers.len().max(1),
                opts.len()
            ),
        ));
    }
    mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .step(|| format!("mount the layers of {}", base.display()))?;
    nix::unistd::chdir("/").step(|| "chdir /".into())?;
    Ok(merged)
}

trait StepCtx<T> {
    fn step_ctx(self, f: impl FnOnce() -> String) -> StepResult<T>;
}

impl<T> StepCtx<T> for StepResult<T> {
    fn step_ctx(self, f: impl FnOnce() -> String) -> StepResult<T> {
        self.map_err(|mut e| {
            e.step = f();
            e
        })
    }
}

fn setup_dev(root: &Path, user_ns: bool) -> StepResult<()> {
    let dev = root.join("dev");
    mkdir_p(&dev)?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )
    .step(|| "mount /dev".into())?;
    for (name, major, minor) in DEVICES {
        let p = dev.join(name);
        if user_ns {
            // mknod is refused in a user namespace: bind the host's node instead.
            touch(&p)?;
            bind(&Path::new("/dev").join(name), &p, false)?;
        } else {
            mknod(
                &p,
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o666),
                makedev(major, minor),
            )
            .step(|| format!("mknod /dev/{name}"))?;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o666))
                .step(|| format!("chmod /dev/{name}"))?;
        }
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(link)).step(|| format!("link /dev/{link}"))?;
    }
    Ok(())
}

/// Creates the host device `dev` at the same path inside (a bind of the host's node in a
/// user namespace, where mknod is refused).
/// One device of the definition in the container's /dev: made as described when it is
/// described in full (an OCI config's device, which the host need not have; it replaces
/// a default node at that path), else copied from the host's node (bound from it in a
/// user namespace, where mknod is refused).
fn device_node(root: &Path, d: &DeviceAllow, user_ns: bool) -> StepResult<()> {
    use std::os::unix::fs::MetadataExt;
    let path = d.path.as_deref().unwrap_or_default();
    let host = Path::new(path);
    let inner = inside(root, path)?;
    let described = match (d.kind, d.major, d.minor, d.mode) {
        (Some(kind), Some(major), Some(minor), Some(mode)) if !user_ns => {
            let kind = match kind {
                'b' => SFlag::S_IFBLK,
                'p' => SFlag::S_IFIFO,
                _ => SFlag::S_IFCHR,
            };
            Some((kind, makedev(u64::from(major), u64::from(minor)), mode))
        }
        _ => None,
    };
    if fs::symlink_metadata(&inner).is_ok() {
        if described.is_none() {
            return Ok(());
        }
        fs::remove_file(&inner).step(|| format!("replace {path}"))?;
    }
    if user_ns {
        touch(&inner)?;
        return bind(host, &inner, false);
    }
    let (kind, rdev, mode) = match described {
        Some(node) => node,
        None => {
            let md = fs::metadata(host).step(|| format!("device {path}"))?;
            let kind = if md.file_type().is_block_device() {
                SFlag::S_IFBLK
            } else {
                SFlag::S_IFCHR
            };
            (kind, md.rdev(), md.mode())
        }
    };
    if let Some(parent) = inner.parent() {
        mkdir_p(parent)?;
    }
    mknod(&inner, kind, Mode::from_bits_truncate(mode), rdev).step(|| format!("mknod {path}"))?;
    if described.is_some() {
        // mknod's mode passes through the umask (0 here, but not by contract).
        fs::set_permissions(&inner, fs::Permissions::from_mode(mode & 0o7777))
            .step(|| format!("chmod {path}"))?;
        if let Some((uid, gid)) = d.owner {
            std::os::unix::fs::chown(&inner, Some(uid), Some(gid))
                .step(|| format!("chown {path}"))?;
        }
    }
    Ok(())
}

fn pivot(root: &Path) -> StepResult<()> {
    nix::unistd::chdir(root).step(|| format!("chdir {}", root.display()))?;
    nix::unistd::pivot_root(".", ".").step(|| format!("pivot_root into {}", root.display()))?;
    // The old root is stacked under the new one at "."; detach it.
    umount2(".", MntFlags::MNT_DETACH).step(|| "detach the old root".into())?;
    nix::unistd::chdir("/").step(|| "chdir /".into())
}
