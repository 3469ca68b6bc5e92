//! The node agent's full scan of its state files, kept cheap beside thousands of
//! containers: a state file whose identity (device, inode, size, modification time) is
//! the one of the last read, and that was already at least [`SETTLED`] old at that
//! read, is taken from memory instead of being opened and parsed again. Every write of
//! a state file is a rename (a new inode, a new time), so a changed file is always read;
//! the settling time covers a file rewritten within one tick of the coarse file clock
//! onto a reused inode number. What a state says is corrected on every scan: a running
//! container whose first process and monitor are both gone is found lost at once.
//! While a remembered container's monitor lives, its state file stands as it is (the
//! monitor records the container's end itself): the scan holds a pidfd on each such
//! monitor, opened at the first read (so a reused pid is never mistaken for it), and
//! asks all of them at once with one `poll`. Without that handle (no pidfd, no fd left)
//! the first process is probed with a signal 0, and that its pid still names the same
//! process is checked in `/proc` at the first read and every [`IDENTITY_EVERY`] scans;
//! a signal 0 and a `/proc` read per container were most of an idle scan's cost.

use super::state::{ContainerDir, State, Status};
use super::Runtime;
use crate::launcher::pidfd::ProcessHandle;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How old a state file must be at a read for that read to stand for it later.
pub const SETTLED: Duration = Duration::from_secs(2);

/// Scans between two checks of a running container's process identity in `/proc`.
pub const IDENTITY_EVERY: u32 = 6;

/// What identifies one version of a state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        }
    }

    /// Whether the file was written at least [`SETTLED`] before `read_at`.
    fn settled_before(&self, read_at: SystemTime) -> bool {
        let (secs, nanos) = self.mtime;
        let (Ok(secs), Ok(nanos)) = (u64::try_from(secs), u32::try_from(nanos)) else {
            return false;
        };
        let written = UNIX_EPOCH + Duration::new(secs, nanos);
        written + SETTLED <= read_at
    }
}

/// The states the last full scan read, by container directory, with the identity of
/// the file each came from (only files settled at their read are kept).
#[derive(Debug, Default)]
pub struct StateScan {
    read: HashMap<OsString, Known>,
}

/// One settled state file as last read.
#[derive(Debug)]
struct Known {
    stamp: Stamp,
    state: State,
    /// Scans since its processes' identity was last checked in `/proc`.
    unchecked: u32,
    /// A handle on its monitor while the state says it runs (see the module's doc).
    monitor: Option<ProcessHandle>,
}

/// One container as this scan found it, before its state is corrected.
struct Found {
    dir: ContainerDir,
    name: OsString,
    stamp: Stamp,
    state: State,
    /// What to remember of it (a settled read).
    kept: Option<State>,
    unchecked: u32,
    monitor: Option<ProcessHandle>,
}

impl StateScan {
    /// The (corrected) state of every container of `rt`, oldest first, as
    /// [`Runtime::states`] gives it, re-reading only the state files that changed.
    pub fn states(&mut self, rt: &Runtime) -> Vec<State> {
        let mut out = Vec::new();
        let mut read = HashMap::with_capacity(self.read.len());
        let Ok(entries) = std::fs::read_dir(rt.state_dir.join("containers")) else {
            self.read = read;
            return out;
        };
        let mut found = Vec::new();
        // Handles held from the last scan count against the budget until it ends.
        let held = self.read.values().filter(|k| k.monitor.is_some()).count();
        let mut handles = handle_budget().saturating_sub(held);
        for e in entries.flatten() {
            let dir = ContainerDir { path: e.path() };
            let Ok(meta) = std::fs::metadata(dir.state_file()) else {
                continue;
            };
            let stamp = Stamp::of(&meta);
            let name = e.file_name();
            let known = self.read.remove(&name).filter(|k| k.stamp == stamp);
            let (state, kept, unchecked, monitor) = match known {
                Some(k) => (k.state.clone(), Some(k.state), k.unchecked + 1, k.monitor),
                None => {
                    let read_at = SystemTime::now();
                    let Ok(st) = dir.read_state() else { continue };
                    // The file may have been replaced between the stat and the read: it
                    // stands for `stamp` only if it is still that file.
                    let same =
                        std::fs::metadata(dir.state_file()).is_ok_and(|m| Stamp::of(&m) == stamp);
                    let kept = (same && stamp.settled_before(read_at)).then(|| st.clone());
                    let monitor = match (&kept, st.status) {
                        (Some(_), Status::Running) if handles > 0 => {
                            let h = ProcessHandle::open(st.monitor_pid, st.monitor_start_time)
                                .ok()
                                .flatten();
                            handles -= usize::from(h.is_some());
                            h
                        }
                        _ => None,
                    };
                    (st, kept, IDENTITY_EVERY, monitor)
                }
            };
            found.push(Found {
                dir,
                name,
                stamp,
                state,
                kept,
                unchecked,
                monitor,
            });
        }
        let monitors_live = monitors_live(&found);
        for (f, monitor_live) in found.into_iter().zip(monitors_live) {
            let Found {
                dir,
                name,
                stamp,
                state: st,
                kept,
                unchecked,
                monitor,
            } = f;
            let running = st.status == Status::Running;
            // Its monitor lives: the state stands (`Runtime::correct` would keep it too).
            let watched = running && monitor_live;
            let cheap = watched || (running && unchecked < IDENTITY_EVERY && signalable(st.pid));
            let corrected = if cheap { Ok(st) } else { rt.correct(&dir, st) };
            if let Some(state) = kept {
                let unchecked = if cheap { unchecked } else { 0 };
                read.insert(
                    name,
                    Known {
                        stamp,
                        state,
                        unchecked,
                        monitor: monitor.filter(|_| watched),
                    },
                );
            }
            if let Ok(st) = corrected {
                out.push(st);
            }
        }
        self.read = read;
        super::oldest_first(&mut out);
        out
    }
}

/// How many monitor handles a scan may hold: half the process's open-file limit, so that
/// thousands of containers never take the descriptors its connections need (the
/// containers past it are checked the way without a handle).
fn handle_budget() -> usize {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| usize::try_from(soft / 2).unwrap_or(usize::MAX))
        .unwrap_or(0)
}

/// For each container found, whether its state says it runs and the monitor it holds a
/// handle on has not ended: one `poll` for all of them (false for all when it fails).
fn monitors_live(found: &[Found]) -> Vec<bool> {
    let polled: Vec<usize> = (0..found.len())
        .filter(|&i| found[i].state.status == Status::Running && found[i].monitor.is_some())
        .collect();
    let mut fds: Vec<PollFd> = polled
        .iter()
        .filter_map(|&i| found[i].monitor.as_ref())
        .map(|m| PollFd::new(m.as_fd(), PollFlags::POLLIN))
        .collect();
    let mut live = vec![false; found.len()];
    if fds.is_empty() || poll(&mut fds, PollTimeout::ZERO).is_err() {
        return live;
    }
    for (&i, fd) in polled.iter().zip(&fds) {
        // Readable (or in error) once the process has ended.
        live[i] = fd.revents().is_some_and(|r| r.is_empty());
    }
    live
}

/// Whether a process with this pid exists (signal 0: no `/proc` read).
fn signalable(pid: i32) -> bool {
    pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    use std::path::Path;

    fn exited(name: &str, code: i32) -> State {
        State {
            name: name.into(),
            pid: 0,
            start_time: 0,
            monitor_pid: 0,
            monitor_start_time: 0,
            spec_digest: String::new(),
            status: Status::Exited,
            exit_code: Some(code),
            oom_killed: false,
            reason: None,
            lost: false,
            fenced: false,
            created_at: 1,
            finished_at: Some(2),
            cgroup_parent: "none".into(),
            labels: Default::default(),
        }
    }

    /// Overwrites `path` in place (same inode, same size) and gives it back its
    /// modification time: a change no stamp can see, to tell a read from a memory.
    fn rewrite_unseen(path: &Path, st: &State) {
        let meta = std::fs::metadata(path).unwrap();
        let text = serde_json::to_vec_pretty(st).unwrap();
        assert_eq!(text.len() as u64, meta.len(), "same size");
        std::fs::write(path, text).unwrap();
        set_mtime(path, TimeSpec::new(meta.mtime(), meta.mtime_nsec()));
    }

    fn set_mtime(path: &Path, at: TimeSpec) {
        utimensat(
            nix::fcntl::AT_FDCWD,
            path,
            &at,
            &at,
            UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }

    fn age(path: &Path, secs: i64) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        set_mtime(path, TimeSpec::new(now - secs, 0));
    }

    #[test]
    fn a_settled_unchanged_state_file_is_not_read_again_and_a_changed_one_is() {
        let root = std::env::temp_dir().join(format!("hc-scan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let _root = Root(root.clone());
        let rt = Runtime::new(&root, "none");
        let (old, fresh) = (rt.dir("old"), rt.dir("fresh"));
        for d in [&old, &fresh] {
            std::fs::create_dir_all(&d.path).unwrap();
        }
        old.write_state(&exited("old", 1)).unwrap();
        age(&old.state_file(), 60);
        fresh.write_state(&exited("fresh", 1)).unwrap();
        let mut scan = StateScan::default();
        let codes = |scan: &mut StateScan| -> Vec<(String, Option<i32>)> {
            let mut v: Vec<_> = scan
                .states(&rt)
                .into_iter()
                .map(|s| (s.name, s.exit_code))
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            codes(&mut scan),
            [("fresh".into(), Some(1)), ("old".into(), Some(1))]
        );
        // Changes no stamp shows: the settled file comes from memory, the fresh one
        // (written just now, maybe within one tick of the file clock) is read again.
        rewrite_unseen(&old.state_file(), &exited("old", 2));
        rewrite_unseen(&fresh.state_file(), &exited("fresh", 2));
        assert_eq!(
            codes(&mut scan),
            [("fresh".into(), Some(2)), ("old".into(), Some(1))]
        );
        // A real write (a rename) is always read.
        old.write_state(&exited("old", 3)).unwrap();
        assert_eq!(
            codes(&mut scan),
            [("fresh".into(), Some(2)), ("old".into(), Some(3))]
        );
        // A container whose directory went is gone from the scan and its memory.
        std::fs::remove_dir_all(&old.path).unwrap();
        assert_eq!(codes(&mut scan), [("fresh".into(), Some(2))]);
        assert_eq!(scan.read.len(), 0, "only settled files are remembered");
    }

    /// A runtime under a fresh directory whose container "c" runs, by its settled state
    /// file, as `pid` under the monitor `monitor_pid` (0: none); the directory goes with
    /// the returned guard.
    fn remembered_running(tag: &str, pid: i32, monitor_pid: i32) -> (Runtime, ContainerDir, Root) {
        let root = std::env::temp_dir().join(format!("hc-scan-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let guard = Root(root.clone());
        let rt = Runtime::new(&root, "none");
        let dir = rt.dir("c");
        std::fs::create_dir_all(&dir.path).unwrap();
        let started = |pid| crate::launcher::start_time(pid).unwrap();
        let running = State {
            pid,
            start_time: started(pid),
            monitor_pid,
            monitor_start_time: if monitor_pid > 0 {
                started(monitor_pid)
            } else {
                0
            },
            status: Status::Running,
            exit_code: None,
            finished_at: None,
            ..exited("c", 0)
        };
        dir.write_state(&running).unwrap();
        age(&dir.state_file(), 60);
        (rt, dir, guard)
    }

    /// The status of the one container a scan finds, and whether it was lost.
    fn status(scan: &mut StateScan, rt: &Runtime) -> (Status, bool) {
        let st = scan.states(rt).pop().unwrap();
        (st.status, st.lost)
    }

    /// A `sleep 30` this test started, ended (by its pid) when the test ends, also
    /// when it fails.
    struct Sleeper(std::process::Child);

    impl Sleeper {
        fn pid(&self) -> i32 {
            self.0.id() as i32
        }

        /// Kills it and reaps it.
        fn end(&mut self) {
            self.0.kill().unwrap();
            self.0.wait().unwrap();
        }
    }

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn sleeper() -> Sleeper {
        Sleeper(
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap(),
        )
    }

    /// A test's state directory, removed when the test ends, also when it fails.
    struct Root(std::path::PathBuf);

    impl Drop for Root {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_remembered_running_container_whose_process_ended_is_found_lost_at_the_next_scan() {
        let mut child = sleeper();
        let (rt, dir, _root) = remembered_running("lost", child.pid(), 0);
        let mut scan = StateScan::default();
        assert_eq!(
            status(&mut scan, &rt),
            (Status::Running, false),
            "checked in /proc"
        );
        assert_eq!(
            status(&mut scan, &rt),
            (Status::Running, false),
            "from memory"
        );
        assert_eq!(scan.read.len(), 1);
        child.end();
        // Its process and (here, no) monitor gone, its end unrecorded: lost, at once.
        assert_eq!(status(&mut scan, &rt), (Status::Exited, true));
        assert!(dir.read_state().unwrap().lost, "and recorded");
    }

    #[test]
    fn a_container_whose_monitor_lives_stands_and_is_lost_once_both_are_gone() {
        let (mut init, mut monitor) = (sleeper(), sleeper());
        let (rt, dir, _root) = remembered_running("mon", init.pid(), monitor.pid());
        let mut scan = StateScan::default();
        assert_eq!(status(&mut scan, &rt), (Status::Running, false));
        assert_eq!(scan.read.len(), 1);
        assert!(
            scan.read.values().all(|k| k.monitor.is_some()),
            "a handle on the monitor is held"
        );
        // The first process ended, the monitor lives (it would record the end): the
        // state stands, as `Runtime::correct` would leave it.
        init.end();
        for _ in 0..IDENTITY_EVERY + 1 {
            assert_eq!(status(&mut scan, &rt), (Status::Running, false));
        }
        // Both gone, the end unrecorded: lost at the next scan.
        monitor.end();
        assert_eq!(status(&mut scan, &rt), (Status::Exited, true));
        assert!(dir.read_state().unwrap().lost, "and recorded");
    }
}
