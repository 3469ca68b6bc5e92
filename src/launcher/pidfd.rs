//! Waiting for a process that is not our child (a container's first process, its
//! monitor): a pidfd becomes readable when the process ends, and a zombie counts as
//! ended, so nobody polls `/proc` and nobody mistakes an unreaped container for a live
//! one.

use super::parent::start_time;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// A handle on one process, immune to pid reuse once opened.
#[derive(Debug)]
pub struct ProcessHandle {
    fd: OwnedFd,
}

impl ProcessHandle {
    /// Opens the process `pid` if it is still the one that started at `started` (ticks
    /// since boot, see [`start_time`]); `None` when it is gone (or reaped and reused).
    pub fn open(pid: i32, started: u64) -> io::Result<Option<ProcessHandle>> {
        if pid <= 0 {
            return Ok(None);
        }
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1;
        // it touches no memory of ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ESRCH) => Ok(None),
                _ => Err(e),
            };
        }
        // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // Opened first, checked second: if the pid was reused before the open, the start
        // time read now is the newcomer's and differs.
        if start_time(pid) != Some(started) {
            return Ok(None);
        }
        Ok(Some(ProcessHandle { fd }))
    }

    /// Sends `sig` to exactly this process (not to a later owner of its pid).
    pub fn signal(&self, sig: Signal) -> io::Result<()> {
        self.signal_number(sig as i32)
    }

    /// [`ProcessHandle::signal`] by number, real-time signals included (`1..=64`).
    pub fn signal_number(&self, sig: i32) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        if !(1..=64).contains(&sig) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: pidfd_send_signal with a descriptor we own, a valid signal number, a
        // null siginfo (the kernel fills it in) and no flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            // Already gone: nothing left to signal.
            if e.raw_os_error() == Some(libc::ESRCH) {
                return Ok(());
            }
            return Err(e);
        }
        Ok(())
    }

    /// Waits up to `timeout` for the process to end; true when it has (zombie or reaped).
    pub fn wait(&self, timeout: Duration) -> io::Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) if left.is_zero() => return Ok(false),
                Ok(0) => continue,
                Ok(_) => return Ok(true),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl AsFd for ProcessHandle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zombie_counts_as_ended_and_a_live_process_does_not() {
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        let started = start_time(pid).expect("start time");
        // Another process's start time: not the one we meant.
        assert!(ProcessHandle::open(pid, started + 1)
            .expect("open")
            .is_none());
        let h = ProcessHandle::open(pid, started)
            .expect("pidfd_open")
            .expect("alive");
        assert!(!h.wait(Duration::from_millis(50)).expect("poll"));
        h.signal(Signal::SIGKILL).expect("signal");
        // Not reaped yet: a zombie, and the handle says it ended.
        assert!(h.wait(Duration::from_secs(5)).expect("poll"));
        assert!(std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .expect("zombie still listed")
            .contains(") Z "));
        let _ = child.wait();
        assert!(ProcessHandle::open(pid, started).expect("open").is_none());
    }
}
