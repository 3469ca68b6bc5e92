//! cgroups v1 and v2, detected at run time: one cgroup per container
//! (`<parent>/<name>` in each hierarchy), limits written before the container runs,
//! OOM kills read back, and everything removed after exit.

use super::cgroup_pool;
use super::charges::{MemoryLeft, SelfPlacement};
use super::devices;
use super::error::{Step, StepError, StepResult};
use crate::spec::cgroup::{translate, CgroupVersion, CgroupWrite};
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Controllers haconiwa manages on a v1 host. `pids` and `memory` always get a cgroup
/// (process tracking and OOM reporting); the others only when a key needs them.
const V1_ALWAYS: [&str; 2] = ["pids", "memory"];

/// v1 controllers haconiwa knows about.
const V1_CONTROLLERS: [&str; 8] = [
    "cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "freezer", "devices",
];

/// Where the cgroup hierarchies of this host are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// v1 controllers, each mounted somewhere (co-mounts share a path).
    V1 {
        /// controller name → mount point.
        controllers: BTreeMap<String, PathBuf>,
    },
    /// A unified hierarchy at `root`.
    V2 {
        /// Mount point of the cgroup2 filesystem.
        root: PathBuf,
    },
}

/// Environment variable that points haconiwa at a cgroup2 mount of one's own (tests,
/// hosts that mount the unified hierarchy elsewhere).
pub const V2_ROOT_ENV: &str = "HACONIWA_CGROUP2_ROOT";

impl Layout {
    /// Reads `/proc/self/mountinfo`: v2 when `/sys/fs/cgroup` is a cgroup2 mount (or
    /// `HACONIWA_CGROUP2_ROOT` names one), v1 when cgroup controllers are mounted.
    pub fn detect() -> StepResult<Layout> {
        if let Ok(root) = std::env::var(V2_ROOT_ENV) {
            if !root.is_empty() {
                return Ok(Layout::V2 {
                    root: PathBuf::from(root),
                });
            }
        }
        // The usual places first, recognised by their filesystem type (one statfs each,
        // far cheaper than rendering mountinfo); anything else through mountinfo.
        use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC};
        let base = Path::new("/sys/fs/cgroup");
        if statfs(base).is_ok_and(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC) {
            return Ok(Layout::V2 {
                root: base.to_path_buf(),
            });
        }
        let mut controllers = BTreeMap::new();
        for c in V1_CONTROLLERS {
            let p = base.join(c);
            if statfs(&p).is_ok_and(|s| s.filesystem_type() == CGROUP_SUPER_MAGIC) {
                controllers.insert(c.to_string(), p);
            }
        }
        if V1_ALWAYS.iter().all(|c| controllers.contains_key(*c)) {
            return Ok(Layout::V1 { controllers });
        }
        let info = fs::read_to_string("/proc/self/mountinfo")
            .step(|| "read /proc/self/mountinfo".into())?;
        Ok(Self::from_mountinfo(&info))
    }

    /// Parses mountinfo text (split out for tests).
    pub fn from_mountinfo(info: &str) -> Layout {
        let mut controllers = BTreeMap::new();
        let mut unified_root = None;
        for line in info.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            if left.len() < 5 || right.len() < 3 {
                continue;
            }
            let mount_point = unescape(left[4]);
            match right[0] {
                "cgroup2" if mount_point == "/sys/fs/cgroup" => {
                    unified_root = Some(PathBuf::from(&mount_point))
                }
                "cgroup" => {
                    for opt in right[2].split(',') {
                        if matches!(
                            opt,
                            "cpu"
                                | "cpuacct"
                                | "cpuset"
                                | "memory"
                                | "pids"
                                | "blkio"
                                | "freezer"
                                | "devices"
                        ) {
                            controllers
                                .entry(opt.to_string())
                                .or_insert_with(|| PathBuf::from(&mount_point));
                        }
                    }
                }
                _ => {}
            }
        }
        match unified_root {
            Some(root) => Layout::V2 { root },
            None if controllers.is_empty() => Layout::V2 {
                root: PathBuf::from("/sys/fs/cgroup"),
            },
            None => Layout::V1 { controllers },
        }
    }

    /// The hierarchy version.
    pub fn version(&self) -> CgroupVersion {
        match self {
            Layout::V1 { .. } => CgroupVersion::V1,
            Layout::V2 { .. } => CgroupVersion::V2,
        }
    }
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// A container's cgroup in every hierarchy it uses.
#[derive(Debug, Clone)]
pub struct Cgroup {
    pub(super) layout: Layout,
    /// `parent/name` relative to each hierarchy root.
    pub(super) rel: PathBuf,
    /// The leaf directories (one per v1 hierarchy, one on v2).
    pub(super) dirs: Vec<PathBuf>,
}

pub(super) fn write_file(path: &Path, value: &str) -> io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
}

/// Creates every missing level of `rel` under `root`, returning the leaf.
/// Each new level is prepared by `prepare` (cpuset inheritance, subtree control).
fn mkdir_levels(
    root: &Path,
    rel: &Path,
    prepare: &dyn Fn(&Path) -> io::Result<()>,
) -> io::Result<PathBuf> {
    let mut cur = root.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for (i, c) in comps.iter().enumerate() {
        cur.push(c);
        let is_leaf = i + 1 == comps.len();
        match fs::create_dir(&cur) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && !is_leaf => {}
            Err(e) => return Err(e),
        }
        if !is_leaf {
            prepare(&cur)?;
        }
    }
    Ok(cur)
}

impl Cgroup {
    /// The cgroup of container `name` under `parent` (e.g. `haconiwa` or
    /// `haconiwa/node-2`), without creating anything.
    pub fn handle(
        layout: &Layout,
        parent: &str,
        name: &str,
        settings: &BTreeMap<String, String>,
    ) -> StepResult<Cgroup> {
        let rel = Path::new(parent).join(name);
        let writes = translate(settings, layout.version())
            .map_err(|m| StepError::msg("cgroup settings", m))?;
        let dirs = match layout {
            Layout::V2 { root } => vec![root.join(&rel)],
            Layout::V1 { controllers } => {
                let mut wanted: Vec<&str> = V1_ALWAYS.to_vec();
                // The device allowlist lives in the devices controller, wherever mounted.
                if controllers.contains_key("devices") {
                    wanted.push("devices");
                }
                for w in &writes {
                    if !wanted.contains(&w.controller) {
                        wanted.push(w.controller);
                    }
                }
                let mut dirs: Vec<PathBuf> = Vec::new();
                for c in wanted {
                    let Some(mp) = controllers.get(c) else {
                        if V1_ALWAYS.contains(&c) {
                            continue;
                        }
                        return Err(StepError::msg(
                            "cgroup",
                            format!("the {c} controller is not mounted on this host"),
                        ));
                    };
                    let d = mp.join(&rel);
                    if !dirs.contains(&d) {
                        dirs.push(d);
                    }
                }
                dirs
            }
        };
        Ok(Cgroup {
            layout: layout.clone(),
            rel,
            dirs,
        })
    }

    /// Creates the container's cgroup, writes its limits and its device allowlist. On
    /// failure nothing is left. `pooled`: the v1 memory cgroup is taken from the
    /// parent's pool when it has one (`cgroup_pool.rs`; haconiwa's own parents only).
    pub fn create(
        layout: &Layout,
        parent: &str,
        name: &str,
        settings: &BTreeMap<String, String>,
        device_rules: &[devices::Rule],
        pooled: bool,
    ) -> StepResult<Cgroup> {
        let cg = Cgroup::handle(layout, parent, name, settings)?;
        let writes = translate(settings, layout.version())
            .map_err(|m| StepError::msg("cgroup settings", m))?;
        match cg
            .create_dirs(&writes, pooled)
            .and_then(|()| cg.restrict_devices(device_rules))
        {
            Ok(()) => Ok(cg),
            Err(e) => {
                let _ = cg.remove();
                Err(e)
            }
        }
    }

    fn create_dirs(&self, writes: &[CgroupWrite], pooled: bool) -> StepResult<()> {
        match &self.layout {
            Layout::V2 { root } => {
                let needed: Vec<&str> = {
                    let mut v: Vec<&str> = writes.iter().map(|w| w.controller).collect();
                    v.push("pids");
                    v.push("memory");
                    v.sort();
                    v.dedup();
                    v
                };
                let available =
                    fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
                let enable: String = needed
                    .iter()
                    .filter(|c| available.split_whitespace().any(|a| a == **c))
                    .map(|c| format!("+{c} "))
                    .collect();
                let enable = enable.trim().to_string();
                let enable_at = |dir: &Path| -> io::Result<()> {
                    if !enable.is_empty() {
                        write_file(&dir.join("cgroup.subtree_control"), &enable)?;
                    }
                    Ok(())
                };
                enable_at(root).step(|| format!("enable controllers in {}", root.display()))?;
                let leaf = self.mkdir_with_retry(root, &enable_at)?;
                for w in writes {
                    let f = leaf.join(w.file);
                    if !f.exists() {
                        return Err(StepError::msg(
                            format!("cgroup {}", w.file),
                            format!(
                                "the cgroup v2 controller '{}' is not available here ({} missing)",
                                w.controller,
                                f.display()
                            ),
                        ));
                    }
                    write_file(&f, &w.value)
                        .step(|| format!("write {} = {}", f.display(), w.value))?;
                }
            }
            Layout::V1 { controllers } => {
                let memory = controllers.get("memory");
                for dir in &self.dirs {
                    // On failure (none left, the name taken) the mkdir below says why.
                    if pooled
                        && memory.is_some_and(|m| dir.starts_with(m))
                        && cgroup_pool::take(dir).unwrap_or(false)
                    {
                        continue;
                    }
                    let root = dir
                        .ancestors()
                        .find(|a| controllers.values().any(|m| m == a))
                        .unwrap_or(dir)
                        .to_path_buf();
                    let prepare = |d: &Path| -> io::Result<()> {
                        // A v1 cpuset group starts with no CPUs: copy the parent's, and let
                        // the container's group inherit them (clone_children).
                        if d.join("cpuset.cpus").exists() {
                            for f in ["cpuset.cpus", "cpuset.mems"] {
                                let mine = fs::read_to_string(d.join(f)).unwrap_or_default();
                                if mine.trim().is_empty() {
                                    let parent = d.parent().unwrap_or(d);
                                    let theirs = fs::read_to_string(parent.join(f))?;
                                    write_file(&d.join(f), theirs.trim())?;
                                }
                            }
                            write_file(&d.join("cgroup.clone_children"), "1")?;
                        }
                        Ok(())
                    };
                    self.mkdir_with_retry(&root, &prepare)?;
                }
                for w in writes {
                    let Some(mp) = controllers.get(w.controller) else {
                        return Err(StepError::msg(
                            "cgroup",
                            format!("the {} controller is not mounted", w.controller),
                        ));
                    };
                    let f = mp.join(&self.rel).join(w.file);
                    if !f.exists() {
                        return Err(StepError::msg(
                            format!("cgroup {}", w.file),
                            format!("not supported by this kernel ({} missing)", f.display()),
                        ));
                    }
                    write_file(&f, &w.value)
                        .step(|| format!("write {} = {}", f.display(), w.value))?;
                }
            }
        }
        Ok(())
    }

    /// Lets the container use only the allowlisted devices: the v1 controller's files,
    /// or a device program on v2.
    fn restrict_devices(&self, rules: &[devices::Rule]) -> StepResult<()> {
        match &self.layout {
            Layout::V2 { .. } => match self.dirs.first() {
                Some(leaf) => devices::attach_v2(leaf, rules),
                None => Ok(()),
            },
            Layout::V1 { controllers } => {
                let Some(mp) = controllers.get("devices") else {
                    return Ok(());
                };
                devices::apply_v1(&mp.join(&self.rel), rules)
            }
        }
    }

    /// mkdir of every level; a concurrent removal of an empty parent by another
    /// container's cleanup is retried.
    fn mkdir_with_retry(
        &self,
        root: &Path,
        prepare: &dyn Fn(&Path) -> io::Result<()>,
    ) -> StepResult<PathBuf> {
        let mut last = None;
        for _ in 0..5 {
            match mkdir_levels(root, &self.rel, prepare) {
                Ok(p) => return Ok(p),
                Err(e) if e.kind() == io::ErrorKind::NotFound => last = Some(e),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(StepError::msg(
                        "cgroup",
                        format!(
                            "{} already exists (a container of that name is running)",
                            root.join(&self.rel).display()
                        ),
                    ))
                }
                Err(e) => {
                    return Err(StepError::os(
                        format!("create cgroup {}", root.join(&self.rel).display()),
                        e,
                    ))
                }
            }
        }
        Err(StepError::os(
            format!("create cgroup {}", root.join(&self.rel).display()),
            last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::ENOENT)),
        ))
    }

    /// Moves a process into every hierarchy of the container.
    pub fn add(&self, pid: i32) -> StepResult<()> {
        for d in &self.dirs {
            let f = d.join("cgroup.procs");
            write_file(&f, &pid.to_string()).step(|| format!("join cgroup {}", d.display()))?;
        }
        Ok(())
    }

    /// Writes new limits on an existing cgroup (an OCI `update`): `settings` as a whole,
    /// validated and translated for this host. A write the kernel refuses in this order
    /// (a v1 memory limit above the old swap limit) is tried again after the others.
    pub fn update(&self, settings: &BTreeMap<String, String>) -> StepResult<()> {
        let writes = translate(settings, self.layout.version())
            .map_err(|m| StepError::msg("cgroup settings", m))?;
        let mut files = Vec::new();
        for w in &writes {
            let dir = match &self.layout {
                Layout::V2 { .. } => self.dirs.first().cloned(),
                Layout::V1 { controllers } => {
                    controllers.get(w.controller).map(|m| m.join(&self.rel))
                }
            };
            let file = dir.map(|d| d.join(w.file)).filter(|f| f.exists()).ok_or_else(|| {
                StepError::msg(
                    format!("cgroup {}", w.file),
                    format!(
                        "the container's cgroup has no {} file (its {} controller was not set up when it was created)",
                        w.file, w.controller
                    ),
                )
            })?;
            files.push((file, &w.value));
        }
        let mut refused = Vec::new();
        for (f, v) in files {
            if write_file(&f, v).is_err() {
                refused.push((f, v));
            }
        }
        for (f, v) in refused {
            write_file(&f, v).step(|| format!("write {} = {v}", f.display()))?;
        }
        Ok(())
    }

    /// What the container's `/sys/fs/cgroup` shows: per hierarchy, the name of its
    /// mount point (`memory`, `cpu,cpuacct`; empty on v2: the one tree is the view)
    /// and the container's directory in it.
    pub fn views(&self) -> Vec<(String, PathBuf)> {
        self.dirs
            .iter()
            .map(|d| {
                let name = match &self.layout {
                    Layout::V2 { .. } => String::new(),
                    Layout::V1 { controllers } => controllers
                        .values()
                        .find(|mp| d.starts_with(mp) && d.strip_prefix(mp).ok() == Some(&self.rel))
                        .and_then(|mp| mp.file_name())
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                };
                (name, d.clone())
            })
            .filter(|(name, _)| matches!(self.layout, Layout::V2 { .. }) || !name.is_empty())
            .collect()
    }

    /// The v2 directory (for CLONE_INTO_CGROUP), `None` on v1.
    pub fn v2_dir(&self) -> Option<&Path> {
        match self.layout {
            Layout::V2 { .. } => self.dirs.first().map(PathBuf::as_path),
            Layout::V1 { .. } => None,
        }
    }

    /// Opens every v1 hierarchy's `tasks` file, for the child to move itself in once
    /// its mounts are built (`SelfPlacement`).
    pub fn self_placement(&self) -> StepResult<SelfPlacement> {
        SelfPlacement::open(&self.dirs)
    }

    /// The cgroup directories (for attach and diagnostics).
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Pids still in the container's cgroups.
    pub fn pids(&self) -> Vec<i32> {
        let mut out = Vec::new();
        for d in &self.dirs {
            if let Ok(s) = fs::read_to_string(d.join("cgroup.procs")) {
                for p in s.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    if !out.contains(&p) {
                        out.push(p);
                    }
                }
            }
        }
        out
    }

    /// The container's directory in the v1 memory hierarchy (None on v2, or with no
    /// memory controller mounted).
    pub(super) fn memory_dir(&self) -> Option<PathBuf> {
        match &self.layout {
            Layout::V1 { controllers } => controllers.get("memory").map(|m| m.join(&self.rel)),
            Layout::V2 { .. } => None,
        }
    }

    /// Whether the kernel OOM-killed a process of this container.
    pub fn oom_killed(&self) -> bool {
        // On v1 only the memory hierarchy has the file (its directory, if mounted).
        let memory_dir = self.memory_dir();
        let (file, dirs) = match &self.layout {
            Layout::V1 { .. } => ("memory.oom_control", memory_dir.as_slice()),
            Layout::V2 { .. } => ("memory.events", self.dirs.as_slice()),
        };
        let key = "oom_kill";
        dirs.iter().any(|d| {
            fs::read_to_string(d.join(file))
                .map(|s| {
                    s.lines().any(|l| {
                        let mut it = l.split_whitespace();
                        it.next() == Some(key)
                            && it.next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0) > 0
                    })
                })
                .unwrap_or(false)
        })
    }

    /// Kills whatever is left and removes the cgroup, then the empty parents it created
    /// below the first level.
    pub fn remove(&self) -> StepResult<()> {
        // Page cache charged to it (what its processes wrote, or read first) keeps the
        // removed memory cgroup alive in the kernel until memory runs short: thousands
        // of them slow every later start and removal on the host. The launch charges it
        // nothing (`SelfPlacement`); what the container wrote is reclaimed first (v1;
        // its processes are gone by now). Its kernel objects go to the parent.
        if let Layout::V1 { controllers } = &self.layout {
            if let Some(mem) = controllers.get("memory") {
                let dir = mem.join(&self.rel);
                if MemoryLeft::read(&dir).is_some_and(|m| m.worth_reclaiming()) {
                    let _ = write_file(&dir.join("memory.force_empty"), "0");
                }
            }
        }
        let mut result = Ok(());
        for d in &self.dirs {
            if !d.exists() {
                continue;
            }
            let mut removed = false;
            for attempt in 0..200 {
                match fs::remove_dir(d) {
                    Ok(()) => {
                        removed = true;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        removed = true;
                        break;
                    }
                    Err(_) => {
                        if let Ok(s) = fs::read_to_string(d.join("cgroup.procs")) {
                            for p in s.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                                let _ = nix::sys::signal::kill(
                                    nix::unistd::Pid::from_raw(p),
                                    nix::sys::signal::Signal::SIGKILL,
                                );
                            }
                        }
                        std::thread::sleep(std::time::Duration::from_millis(if attempt < 20 {
                            1
                        } else {
                            10
                        }));
                    }
                }
            }
            if !removed && result.is_ok() {
                result = Err(StepError::msg(
                    "remove cgroup",
                    format!("{} is still busy", d.display()),
                ));
            }
            self.remove_empty_parents(d);
        }
        result
    }

    /// Removes the now-empty parents of the container's directory `d` below the
    /// parent's first level (`node-1` of `haconiwa/node-1/<name>`); a parent others
    /// still use stays. The first level (`haconiwa`) stays too, as Docker's, podman's
    /// and runc's parents do: making a memory cgroup costs the kernel 0.3-0.5 ms (its
    /// shrinker map), which a lone `run` paid twice when it made the parent again.
    pub(super) fn remove_empty_parents(&self, d: &Path) {
        let mut p = d.parent();
        for _ in 2..self.rel.components().count() {
            match p {
                Some(dir) if self.remove_level(dir) => p = dir.parent(),
                _ => break,
            }
        }
    }

    /// Removes an empty level; in the v1 memory hierarchy also one that only its pool
    /// keeps, once no container's `pids` cgroup is left at that level (every container
    /// has one, and the `pids` directories are removed before the `memory` ones).
    fn remove_level(&self, dir: &Path) -> bool {
        if fs::remove_dir(dir).is_ok() {
            return true;
        }
        let Layout::V1 { controllers } = &self.layout else {
            return false;
        };
        let (Some(memory), Some(pids)) = (controllers.get("memory"), controllers.get("pids"))
        else {
            return false;
        };
        match dir.strip_prefix(memory) {
            Ok(rel) if memory != pids && !pids.join(rel).exists() => {
                cgroup_pool::drain(dir);
                fs::remove_dir(dir).is_ok()
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_hybrid_as_v1() {
        let info = "\
30 23 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
33 30 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids";
        match Layout::from_mountinfo(info) {
            Layout::V1 { controllers } => {
                assert_eq!(
                    controllers["cpu"],
                    PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
                );
                assert_eq!(
                    controllers["memory"],
                    PathBuf::from("/sys/fs/cgroup/memory")
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn detects_v2_only() {
        let info = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate";
        assert_eq!(
            Layout::from_mountinfo(info),
            Layout::V2 {
                root: PathBuf::from("/sys/fs/cgroup")
            }
        );
    }
}
