//! Processes as the kernel sees them: when one started (from `/proc`) and when one died
//! (from a pidfd), on the same clock, so a test can prove one container stopped before
//! another started instead of sampling and hoping.

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::time::{clock_gettime, ClockId};
use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

/// Field 22 of `/proc/PID/stat`: when the process started, in clock ticks since boot
/// (CLOCK_BOOTTIME); None once it is gone.
pub fn start_ticks(pid: i64) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split(' ').nth(19)?.parse().ok()
}

/// The length of one clock tick of `/proc`'s times.
pub fn tick() -> Duration {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Duration::from_nanos(1_000_000_000 / hz)
}

/// Now on CLOCK_BOOTTIME, the clock `/proc` counts start times on.
pub fn boottime() -> Duration {
    let t = clock_gettime(ClockId::CLOCK_BOOTTIME).expect("CLOCK_BOOTTIME");
    Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
}

/// When a container started: the earliest start of the processes in its cgroup.
pub fn started(pids: &[i32]) -> Option<Duration> {
    let t = tick();
    pids.iter()
        .filter_map(|p| start_ticks(i64::from(*p)))
        .min()
        .map(|ticks| t * ticks as u32)
}

/// Waits on a pidfd per process and notes, on CLOCK_BOOTTIME, when each exits (the
/// kernel wakes a pidfd's poller when the process ends). The noted time is at most a
/// wake-up late, never early.
pub struct DeathWatch {
    handle: std::thread::JoinHandle<BTreeMap<i32, Duration>>,
    pids: Vec<i32>,
}

impl DeathWatch {
    /// Starts watching `pids` (each must be alive now) for at most `within`.
    pub fn start(pids: &[i32], within: Duration) -> DeathWatch {
        let fds: Vec<(i32, OwnedFd)> = pids
            .iter()
            .map(|&p| {
                let pid = rustix::process::Pid::from_raw(p).expect("a positive pid");
                let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
                    .unwrap_or_else(|e| panic!("pidfd_open({p}): {e} (not running?)"));
                (p, fd)
            })
            .collect();
        let handle = std::thread::spawn(move || {
            let deadline = Instant::now() + within;
            let mut died = BTreeMap::new();
            while died.len() < fds.len() && Instant::now() < deadline {
                let waiting: Vec<&(i32, OwnedFd)> =
                    fds.iter().filter(|(p, _)| !died.contains_key(p)).collect();
                let mut polled: Vec<PollFd> = waiting
                    .iter()
                    .map(|(_, fd)| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
                    .collect();
                if poll(&mut polled, PollTimeout::from(100u16)).unwrap_or(0) <= 0 {
                    continue;
                }
                let now = boottime();
                for ((p, _), fd) in waiting.iter().zip(&polled) {
                    if fd.revents().is_some_and(|r| !r.is_empty()) {
                        died.insert(*p, now);
                    }
                }
            }
            died
        });
        DeathWatch {
            handle,
            pids: pids.to_vec(),
        }
    }

    /// When each process died; fails naming the ones that outlived the watch.
    pub fn deaths(self, what: &str) -> BTreeMap<i32, Duration> {
        let died = self.handle.join().expect("the death watch");
        let alive: Vec<&i32> = self.pids.iter().filter(|p| !died.contains_key(p)).collect();
        assert!(alive.is_empty(), "{what}: still alive: {alive:?}");
        died
    }
}

/// Asserts every start in `starts` (container → when it started) came after the last
/// of `deaths`, to the resolution of a clock tick; returns the smallest gap in ms (a
/// start in the same tick as the last death counts as 0).
pub fn assert_started_after(
    what: &str,
    deaths: &BTreeMap<i32, Duration>,
    starts: &BTreeMap<String, Duration>,
) -> i64 {
    let last_death = deaths.values().max().copied().expect("deaths to compare");
    // A start time is truncated to its tick: started after the death means a start
    // tick no earlier than the death's.
    let t = tick();
    let death_tick = t * (last_death.as_nanos() / t.as_nanos()) as u32;
    assert!(!starts.is_empty(), "{what}: no starts to compare");
    for (c, s) in starts {
        assert!(
            *s >= death_tick,
            "{what}: {c} started at {s:?} (boot time) before the last old process died at {last_death:?}"
        );
    }
    let first = starts.values().min().copied().unwrap_or_default();
    first.as_millis() as i64 - last_death.as_millis() as i64
}
