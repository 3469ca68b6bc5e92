//! The container's PID 1: reaps every zombie, forwards termination and user signals to
//! the command and exits with the command's status (128+n for a signal).

use super::signals;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Exit code for a wait status, shell style.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Runs as PID 1 until `child` exits; never returns. The caller has blocked SIGCHLD and
/// the forwarded signals before forking `child`, so nothing is lost in between.
pub fn run(child: Pid) -> ! {
    // This process keeps only what it needs to signal the command.
    let keep: caps::CapsHashSet = [caps::Capability::CAP_KILL].into_iter().collect();
    let _ = caps::set(None, caps::CapSet::Effective, &keep);
    let _ = caps::set(None, caps::CapSet::Permitted, &keep);
    drop(keep);
    // From here on it only reaps and forwards signals, with no allocation, and ends
    // with _exit: the heap and stack of the process it was forked from go, all of them.
    super::memory::release_heap_for_good();
    let mut status = None;
    loop {
        let Some((sig, from_kernel)) = signals::wait_blocked() else {
            continue;
        };
        if sig == libc::SIGCHLD {
            loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(ws) => {
                        if ws.pid() == Some(child) {
                            status = exit_code(ws);
                        }
                    }
                }
            }
            if let Some(code) = status {
                // Our exit kills whatever is left in the namespace. `_exit`: no exit
                // handler or TLS destructor may touch the heap given back above.
                // SAFETY: _exit ends the process at once; nothing of it is used again.
                unsafe { libc::_exit(code) };
            }
        } else if !from_kernel {
            // A terminal's signal already reached the whole foreground group; only
            // signals sent with kill() are forwarded, so the command never gets two.
            if let Ok(s) = Signal::try_from(sig) {
                let _ = kill(child, s);
            }
        }
    }
}
