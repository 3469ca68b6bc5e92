//! Building a root filesystem from a definition's recipe (`haconiwa create`) and running
//! its provision steps once. A rootfs is built in a temporary sibling directory and
//! renamed into place, so a failed or concurrent bootstrap never leaves half a tree.

use crate::spec::{Bootstrap, ContainerSpec};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Bootstrap and provision errors.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// A step failed.
    #[error("bootstrap of {root} ({strategy}): {what}: {detail}")]
    Step {
        /// The root being built.
        root: String,
        /// The recipe.
        strategy: String,
        /// The step.
        what: String,
        /// The cause.
        detail: String,
    },
    /// No recipe and no rootfs.
    #[error("root filesystem {0} is missing and the definition has no bootstrap recipe")]
    NoRecipe(String),
    /// A provision step failed.
    #[error("provision step '{step}' in {root} failed: {detail}")]
    Provision {
        /// The root.
        root: String,
        /// The step name.
        step: String,
        /// What happened.
        detail: String,
    },
}

/// What `ensure` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The root existed.
    Existed,
    /// It was built now.
    Built,
}

struct Ctx<'a> {
    root: &'a Path,
    strategy: &'static str,
    progress: bool,
}

impl Ctx<'_> {
    fn err(&self, what: impl Into<String>, detail: impl ToString) -> BootstrapError {
        BootstrapError::Step {
            root: self.root.display().to_string(),
            strategy: self.strategy.to_string(),
            what: what.into(),
            detail: detail.to_string(),
        }
    }

    fn say(&self, msg: &str) {
        if self.progress {
            eprintln!("haconiwa: {msg}");
        }
    }

    fn run(&self, what: &str, cmd: &mut Command) -> Result<(), BootstrapError> {
        let out = cmd.output().map_err(|e| self.err(what, e))?;
        if !out.status.success() {
            return Err(self.err(what, failure_reason(&out)));
        }
        Ok(())
    }
}

/// Why a tool failed, in a line or a few: its stderr, else its stdout (debootstrap says
/// why there), the `E:` lines when it marks its errors so, else the last lines; the exit
/// status when it said nothing.
fn failure_reason(out: &std::process::Output) -> String {
    let text = if out.stderr.iter().any(|b| !b.is_ascii_whitespace()) {
        String::from_utf8_lossy(&out.stderr)
    } else {
        String::from_utf8_lossy(&out.stdout)
    };
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let marked: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("E:"))
        .collect();
    let said = if marked.is_empty() {
        lines[lines.len().saturating_sub(3)..].join("; ")
    } else {
        marked.join("; ")
    };
    if said.is_empty() {
        out.status.to_string()
    } else {
        format!("{said} ({})", out.status)
    }
}

/// Builds the spec's root filesystem when it is missing. `progress` prints a line for
/// slow steps.
pub fn ensure(spec: &ContainerSpec, progress: bool) -> Result<Outcome, BootstrapError> {
    let root = &spec.rootfs.path;
    if root.is_dir() {
        return Ok(Outcome::Existed);
    }
    // A supervisor launches several containers at once: one of its threads builds a
    // root, the others wanting the same root find it there when it is their turn
    // (another root's build, a debootstrap of minutes, does not hold them up).
    let building = root_lock(root);
    let _one_at_a_time = building.lock().unwrap_or_else(|e| e.into_inner());
    if root.is_dir() {
        return Ok(Outcome::Existed);
    }
    let Some(recipe) = &spec.bootstrap else {
        return Err(BootstrapError::NoRecipe(root.display().to_string()));
    };
    build(root, recipe, progress)?;
    Ok(Outcome::Built)
}

/// The lock of one root's builds in this process (one per root path ever built here).
fn root_lock(root: &Path) -> std::sync::Arc<std::sync::Mutex<()>> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    static ROOTS: Mutex<Option<HashMap<PathBuf, Arc<Mutex<()>>>>> = Mutex::new(None);
    let mut roots = ROOTS.lock().unwrap_or_else(|e| e.into_inner());
    roots
        .get_or_insert_with(HashMap::new)
        .entry(root.to_path_buf())
        .or_default()
        .clone()
}

/// Writes the new tree's data to the disk before it is renamed into place: a root that
/// is there must be whole after a power cut too (a VM powered off within the page
/// cache's 30 s came back with an empty `/bin/sleep`: "Exec format error").
fn flush_to_disk(ctx: &Ctx, tree: &Path) -> Result<(), BootstrapError> {
    let dir = fs::File::open(tree).map_err(|e| ctx.err(format!("open {}", tree.display()), e))?;
    nix::unistd::syncfs(&dir).map_err(|e| ctx.err(format!("flush {} to disk", tree.display()), e))
}

/// Builds `root` from `recipe` (temporary directory, then rename).
pub fn build(root: &Path, recipe: &Bootstrap, progress: bool) -> Result<(), BootstrapError> {
    let ctx = Ctx {
        root,
        strategy: recipe.strategy(),
        progress,
    };
    let parent = root.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(parent).map_err(|e| ctx.err(format!("create {}", parent.display()), e))?;
    let file_name = root
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_else(|| "rootfs".into());
    // Unique to this build, also among the threads of one process: a name shared by
    // two builds let one remove the other's tree and rename half a root into place.
    static BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let build = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = parent.join(format!(".{file_name}.tmp-{}-{build}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir(&tmp).map_err(|e| ctx.err(format!("create {}", tmp.display()), e))?;
    let t0 = Instant::now();
    let result = match recipe {
        Bootstrap::Busybox { busybox } => busybox_root(&ctx, &tmp, busybox.as_deref()),
        Bootstrap::Host { binaries } => host_root(&ctx, &tmp, binaries),
        Bootstrap::Tarball { archive } => {
            ctx.say(&format!(
                "unpacking {} into {} ...",
                archive.display(),
                root.display()
            ));
            ctx.run(
                "tar",
                Command::new("tar")
                    .arg("-xf")
                    .arg(archive)
                    .arg("-C")
                    .arg(&tmp)
                    .arg("--no-same-owner"),
            )
        }
        Bootstrap::Directory { source } => {
            ctx.say(&format!(
                "copying {} into {} ...",
                source.display(),
                root.display()
            ));
            if !source.is_dir() {
                Err(ctx.err("copy", format!("{} is not a directory", source.display())))
            } else {
                ctx.run(
                    "cp -a",
                    Command::new("cp").arg("-a").arg(source.join(".")).arg(&tmp),
                )
            }
        }
        Bootstrap::Debootstrap {
            suite,
            mirror,
            variant,
        } => {
            if which("debootstrap").is_none() {
                Err(ctx.err(
                    "debootstrap",
                    "debootstrap is not installed (apt-get install debootstrap)",
                ))
            } else {
                ctx.say(&format!(
                    "running debootstrap {suite} into {} (this takes minutes) ...",
                    root.display()
                ));
                let mut c = Command::new("debootstrap");
                if let Some(v) = variant {
                    c.arg(format!("--variant={v}"));
                }
                c.arg(suite).arg(&tmp);
                if let Some(m) = mirror {
                    c.arg(m);
                }
                ctx.run("debootstrap", &mut c)
            }
        }
    }
    .and_then(|()| base_dirs(&ctx, &tmp))
    .and_then(|()| flush_to_disk(&ctx, &tmp));
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    match fs::rename(&tmp, root) {
        Ok(()) => {}
        // Someone else built it meanwhile: theirs wins.
        Err(_) if root.is_dir() => {
            let _ = fs::remove_dir_all(&tmp);
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(ctx.err(format!("rename into {}", root.display()), e));
        }
    }
    if t0.elapsed().as_millis() > 500 {
        ctx.say(&format!(
            "built {} in {:.1}s",
            root.display(),
            t0.elapsed().as_secs_f64()
        ));
    }
    Ok(())
}

/// Looks a program up in PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    path.split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Directories every root needs as mount points, and a minimal /etc.
fn base_dirs(ctx: &Ctx, root: &Path) -> Result<(), BootstrapError> {
    for d in ["proc", "sys", "dev", "tmp", "etc", "root", "run", "var/tmp"] {
        let p = root.join(d);
        fs::create_dir_all(&p).map_err(|e| ctx.err(format!("mkdir {d}"), e))?;
    }
    use std::os::unix::fs::PermissionsExt;
    let _ = fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777));
    let etc = root.join("etc");
    let files: [(&str, String); 4] = [
        (
            "passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
                .into(),
        ),
        ("group", "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n".into()),
        (
            "hosts",
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n".into(),
        ),
        (
            "resolv.conf",
            fs::read_to_string("/etc/resolv.conf")
                .unwrap_or_else(|_| "nameserver 127.0.0.1\n".into()),
        ),
    ];
    for (name, text) in files {
        let p = etc.join(name);
        if !p.exists() {
            fs::write(&p, text).map_err(|e| ctx.err(format!("write /etc/{name}"), e))?;
        }
    }
    Ok(())
}

fn busybox_root(ctx: &Ctx, root: &Path, given: Option<&Path>) -> Result<(), BootstrapError> {
    let bb = match given {
        Some(p) => p.to_path_buf(),
        None => ["/bin/busybox", "/usr/bin/busybox"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| ctx.err("find busybox", "no /bin/busybox; install busybox-static"))?,
    };
    let list = Command::new(&bb)
        .arg("--list-full")
        .output()
        .map_err(|e| ctx.err(format!("run {} --list-full", bb.display()), e))?;
    if !list.status.success() {
        return Err(ctx.err("busybox --list-full", String::from_utf8_lossy(&list.stderr)));
    }
    for d in ["bin", "sbin", "usr/bin", "usr/sbin"] {
        fs::create_dir_all(root.join(d)).map_err(|e| ctx.err(format!("mkdir {d}"), e))?;
    }
    fs::copy(&bb, root.join("bin/busybox")).map_err(|e| ctx.err("copy busybox", e))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim().trim_start_matches('/');
        if applet.is_empty() || applet == "bin/busybox" {
            continue;
        }
        let link = root.join(applet);
        if link.exists() {
            continue;
        }
        if let Some(p) = link.parent() {
            fs::create_dir_all(p).map_err(|e| ctx.err(format!("mkdir {}", p.display()), e))?;
        }
        symlink("/bin/busybox", &link).map_err(|e| ctx.err(format!("link {applet}"), e))?;
    }
    Ok(())
}

/// Shared libraries (and the loader) a binary needs, from `ldd`.
fn libraries(ctx: &Ctx, bin: &Path) -> Result<Vec<PathBuf>, BootstrapError> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .map_err(|e| ctx.err("run ldd", e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.trim().split(' ').next().unwrap_or(""),
            None => line.split(' ').next().unwrap_or(""),
        };
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// Copies `src` to the same absolute path under `root`, recreating symlinked parents
/// (merged-/usr hosts link /bin to usr/bin).
fn copy_same_path(ctx: &Ctx, root: &Path, src: &Path) -> Result<(), BootstrapError> {
    let mut cur = PathBuf::from("/");
    let comps: Vec<_> = src.components().skip(1).collect();
    for c in &comps[..comps.len().saturating_sub(1)] {
        cur.push(c);
        let inside = root.join(cur.strip_prefix("/").unwrap_or(&cur));
        match fs::symlink_metadata(&cur) {
            Ok(md) if md.file_type().is_symlink() => {
                if fs::symlink_metadata(&inside).is_err() {
                    let target = fs::read_link(&cur)
                        .map_err(|e| ctx.err(format!("readlink {}", cur.display()), e))?;
                    symlink(&target, &inside)
                        .map_err(|e| ctx.err(format!("link {}", inside.display()), e))?;
                    // Make sure the link's target exists inside too.
                    let resolved = cur.parent().unwrap_or(Path::new("/")).join(&target);
                    let rin = root.join(resolved.strip_prefix("/").unwrap_or(&resolved));
                    fs::create_dir_all(&rin)
                        .map_err(|e| ctx.err(format!("mkdir {}", rin.display()), e))?;
                }
                cur = fs::canonicalize(&cur)
                    .map_err(|e| ctx.err(format!("resolve {}", cur.display()), e))?;
            }
            _ => {
                fs::create_dir_all(&inside)
                    .map_err(|e| ctx.err(format!("mkdir {}", inside.display()), e))?;
            }
        }
    }
    let Some(name) = src.file_name() else {
        return Ok(());
    };
    let dst_dir = root.join(cur.strip_prefix("/").unwrap_or(&cur));
    let dst = dst_dir.join(name);
    if !dst.exists() {
        fs::copy(src, &dst).map_err(|e| ctx.err(format!("copy {}", src.display()), e))?;
    }
    Ok(())
}

fn host_root(ctx: &Ctx, root: &Path, binaries: &[String]) -> Result<(), BootstrapError> {
    for b in binaries {
        let path =
            which(b).ok_or_else(|| ctx.err(format!("find {b}"), "not found on this host"))?;
        copy_same_path(ctx, root, &path)?;
        for lib in libraries(ctx, &path)? {
            copy_same_path(ctx, root, &lib)?;
        }
    }
    // Programs look for /bin/sh.
    let sh = root.join("bin/sh");
    if fs::symlink_metadata(&sh).is_err()
        && binaries.iter().any(|b| b == "sh" || b.ends_with("/sh"))
    {
        let _ = fs::create_dir_all(root.join("bin"));
        let real = which("sh").and_then(|p| fs::canonicalize(p).ok());
        if let Some(real) = real {
            let _ = symlink(real, &sh);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds of one root from many threads of one process at once (a supervisor's
    /// launch slots on a fresh host) each leave the root whole.
    #[test]
    fn concurrent_builds_in_one_process_leave_a_whole_root() {
        let base = std::env::temp_dir().join(format!("hc-bootstrap-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let root = base.join("busybox");
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let root = root.clone();
                std::thread::spawn(move || {
                    build(&root, &Bootstrap::Busybox { busybox: None }, false)
                })
            })
            .collect();
        for t in threads {
            t.join().expect("no panic").expect("every build succeeds");
        }
        let sleep = fs::read_link(root.join("bin/sleep")).expect("bin/sleep is a link");
        assert_eq!(sleep, Path::new("/bin/busybox"));
        assert!(root.join("bin/busybox").is_file());
        assert!(root.join("proc").is_dir(), "the base directories are there");
        let left: Vec<_> = fs::read_dir(&base)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n != "busybox")
            .collect();
        assert!(left.is_empty(), "no temporary tree is left: {left:?}");
        let _ = fs::remove_dir_all(&base);
    }

    /// Launches of one missing root from many threads build it once; the others wait
    /// and find it there.
    #[test]
    fn concurrent_ensures_in_one_process_build_a_root_once() {
        let base = std::env::temp_dir().join(format!("hc-ensure-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let mut spec = ContainerSpec::new("c", vec!["/bin/true".into()], base.join("busybox"));
        spec.bootstrap = Some(Bootstrap::Busybox { busybox: None });
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let spec = spec.clone();
                std::thread::spawn(move || ensure(&spec, false))
            })
            .collect();
        let outcomes: Vec<Outcome> = threads
            .into_iter()
            .map(|t| t.join().expect("no panic").expect("every ensure succeeds"))
            .collect();
        let built = outcomes.iter().filter(|o| **o == Outcome::Built).count();
        assert_eq!(built, 1, "{outcomes:?}");
        assert!(base.join("busybox/bin/sleep").symlink_metadata().is_ok());
        let _ = fs::remove_dir_all(&base);
    }
}
