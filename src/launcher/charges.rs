//! Who pays for a container's memory in cgroup v1. The launch's own work (its mounts,
//! the overlayfs of its writable layer, the mount points made there) is charged to the
//! launcher: the child moves itself into its cgroups only once its mounts are built
//! ([`SelfPlacement`]). What the container's processes wrote is reclaimed when its
//! memory cgroup is removed ([`MemoryLeft`]). Page cache charged to a removed memory
//! cgroup keeps it alive in the kernel, dying, until memory runs short; thousands of
//! them slow every later start and removal on the host.

use super::error::{Step, StepResult};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The v1 `tasks` files a child writes 0 to, moving its own single thread in: a thread
/// moving itself skips the kernel's global threadgroup lock. The child does it after
/// building its mounts, so that what the launch itself charges (kernel memory for the
/// mounts, the page cache of the directories it makes in the writable layer) goes to the
/// launcher's memory cgroup, not to the container's: it does not count against the
/// container's limit, and a removed container's memory cgroup is freed at once unless
/// its own processes left page cache.
#[derive(Debug)]
pub struct SelfPlacement {
    tasks: Vec<(PathBuf, fs::File)>,
}

impl SelfPlacement {
    /// Opens `tasks` in each of the container's v1 directories: while the child still
    /// sees the host's cgroup files, so that it can write them after `pivot_root` too.
    pub(super) fn open(dirs: &[PathBuf]) -> StepResult<SelfPlacement> {
        let tasks = dirs
            .iter()
            .map(|d| {
                fs::OpenOptions::new()
                    .write(true)
                    .open(d.join("tasks"))
                    .map(|f| (d.clone(), f))
                    .step(|| format!("open {}/tasks", d.display()))
            })
            .collect::<StepResult<_>>()?;
        Ok(SelfPlacement { tasks })
    }

    /// The descriptors the child keeps across its closing of every other one.
    pub fn fds(&self) -> impl Iterator<Item = std::os::fd::RawFd> + '_ {
        use std::os::fd::AsRawFd;
        self.tasks.iter().map(|(_, f)| f.as_raw_fd())
    }

    /// Moves the calling (single-threaded) process into every hierarchy; done once.
    pub fn join(&mut self) -> StepResult<()> {
        for (dir, mut f) in std::mem::take(&mut self.tasks) {
            f.write_all(b"0")
                .step(|| format!("join cgroup {}", dir.display()))?;
        }
        Ok(())
    }
}

/// Up to this much page cache left by a container that wrote files is reclaimed when its
/// cgroup is removed (v1 `memory.force_empty`). More (a database's cache, gigabytes not
/// yet on disk) would hold up the exit's record, which waits for the removal; the
/// kernel reclaims that under memory pressure.
const RECLAIM_AT_REMOVAL: u64 = 64 << 20;

/// What a v1 memory cgroup's `memory.stat` counts (its descendants included), in bytes.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct MemoryLeft {
    /// Page cache and anonymous memory.
    charged: u64,
    /// Of which written and not yet on disk, or being written.
    written: u64,
}

impl MemoryLeft {
    /// Reads the cgroup at `dir`; `None` when it has no readable `memory.stat`.
    pub(super) fn read(dir: &Path) -> Option<MemoryLeft> {
        // In one read: the kernel builds the whole file again for each (tens of µs).
        let mut stat = String::with_capacity(8192);
        fs::File::open(dir.join("memory.stat"))
            .and_then(|mut f| f.read_to_string(&mut stat))
            .ok()?;
        Self::parse(&stat)
    }

    fn parse(stat: &str) -> Option<MemoryLeft> {
        let mut left = MemoryLeft::default();
        for line in stat.lines() {
            let mut it = line.split_whitespace();
            let field = match it.next() {
                Some("total_cache" | "total_rss") => &mut left.charged,
                Some("total_dirty" | "total_writeback") => &mut left.written,
                _ => continue,
            };
            *field = field.saturating_add(it.next()?.parse().ok()?);
        }
        Some(left)
    }

    /// Whether the removal reclaims it first: only what the container wrote, within
    /// the cap. Pages it only read (its image's binaries, which it may have been the
    /// first to read) stay cached for the next container: reclaiming them would make
    /// every start read them again, and cost a millisecond of reclaim passes besides.
    pub(super) fn worth_reclaiming(&self) -> bool {
        self.written > 0 && self.charged <= RECLAIM_AT_REMOVAL
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cache 0\nrss 0\ndirty 0\nhierarchical_memory_limit 67108864\n\
total_cache 16777216\ntotal_rss 8192\ntotal_rss_huge 0\ntotal_dirty 12288\ntotal_writeback 4096\n";

    #[test]
    fn counts_the_hierarchys_pages_and_what_of_them_was_written() {
        assert_eq!(
            MemoryLeft::parse(STAT),
            Some(MemoryLeft {
                charged: 16777216 + 8192,
                written: 16384
            })
        );
        assert_eq!(MemoryLeft::parse("total_cache x\n"), None);
    }

    #[test]
    fn only_written_pages_within_the_cap_are_reclaimed() {
        let left = |charged, written| MemoryLeft { charged, written };
        assert!(left(16 << 20, 4096).worth_reclaiming());
        // Read pages only: the image's binaries stay cached for the next container.
        assert!(!left(4096, 0).worth_reclaiming());
        assert!(!left(RECLAIM_AT_REMOVAL + 4096, 4096).worth_reclaiming());
    }
}
