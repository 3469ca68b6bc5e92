//! Blocking and synchronous waiting for signals (the launcher never installs handlers).

use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};

/// Signals forwarded from outside to the command.
pub const FORWARDED: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// The set the launcher and PID 1 wait on: SIGCHLD and the forwarded signals.
pub fn waited_set() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    for s in FORWARDED {
        set.add(s);
    }
    set
}

/// Blocks the waited set so the signals queue until [`wait_blocked`].
pub fn block() {
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&waited_set()), None);
}

/// Unblocks every signal and restores default dispositions (before exec).
pub fn reset() {
    for s in Signal::iterator() {
        if matches!(s, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: setting the default disposition installs no handler code.
        unsafe {
            let _ = nix::sys::signal::signal(s, nix::sys::signal::SigHandler::SigDfl);
        }
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// Waits for one signal of the blocked set: (signal number, sent by the kernel?).
pub fn wait_blocked() -> Option<(i32, bool)> {
    let set = waited_set();
    // SAFETY: siginfo_t is plain data; sigwaitinfo fills it for the returned signal.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset and `info` a valid out-pointer.
    let sig = unsafe { libc::sigwaitinfo(set.as_ref(), &mut info) };
    if sig < 0 {
        return None;
    }
    Some((sig, info.si_code == libc::SI_KERNEL))
}

/// Waits like [`wait_blocked`] but at most `ms` milliseconds (None on timeout).
pub fn wait_blocked_timeout(ms: u64) -> Option<(i32, bool)> {
    let set = waited_set();
    let ts = libc::timespec {
        tv_sec: (ms / 1000).try_into().unwrap_or(0),
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    // SAFETY: as in wait_blocked.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid set, out-pointer and timeout.
    let sig = unsafe { libc::sigtimedwait(set.as_ref(), &mut info, &ts) };
    if sig < 0 {
        return None;
    }
    Some((sig, info.si_code == libc::SI_KERNEL))
}

/// Ends the process as a Unix tool whose reader went away ends: killed by SIGPIPE. For
/// commands that keep SIGPIPE ignored because they also write to sockets (a socket
/// write to a closed peer must be an error, not death) and find EPIPE on stdout.
pub fn die_of_sigpipe() -> ! {
    default_sigpipe();
    let _ = nix::sys::signal::raise(Signal::SIGPIPE);
    std::process::exit(128 + libc::SIGPIPE)
}

/// Restores the default action of SIGPIPE (Rust ignores it): a command printing into a
/// pipe whose reader left (`haconiwa show F | head`) then ends quietly, as Unix tools
/// do, instead of failing on EPIPE.
pub fn default_sigpipe() {
    // SAFETY: installs the default disposition, no handler code; called by the CLI
    // before it starts any thread.
    unsafe {
        let _ = nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl);
    }
}

/// Sends signal number `sig` (real-time ones included) to `pid`: for a process known
/// only by its pid, such as a member of a container's cgroup.
pub fn send(pid: i32, sig: i32) -> std::io::Result<()> {
    if pid <= 0 || !(1..=64).contains(&sig) {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: kill(2) with a positive pid and a valid signal number touches no memory.
    if unsafe { libc::kill(pid, sig) } < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}
