//! A container's terminal for an OCI runtime's caller (`--console-socket`): a pty of
//! the container's own devpts, its slave the process's controlling terminal and stdio,
//! its master handed to the caller over a Unix socket with SCM_RIGHTS (runc's protocol:
//! the pty's name as the message, the master as the one descriptor). Also the few
//! terminal calls of `haconiwa exec`: a controlling terminal for `attach --ctty`, and a
//! pty's window size read and set.

use super::error::{Step, StepError, StepResult};
use nix::fcntl::OFlag;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use std::io::IoSlice;
use std::os::fd::{AsRawFd, RawFd};

/// Connects to the caller's console socket (on the host, so before the container's
/// root is entered); the descriptor goes to [`take_terminal`].
pub fn connect(path: &std::path::Path) -> StepResult<std::os::unix::net::UnixStream> {
    std::os::unix::net::UnixStream::connect(path)
        .step(|| format!("connect to the console socket {}", path.display()))
}

/// In the process about to exec, inside the container: a new session, a pty from the
/// container's /dev/ptmx whose slave becomes the controlling terminal and stdio (owned
/// by `uid`/`gid`), and its master sent over `socket` (then closed here).
pub fn take_terminal(socket: RawFd, uid: u32, gid: u32) -> StepResult<()> {
    nix::unistd::setsid().step(|| "start a session for the terminal".into())?;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .step(|| "open /dev/ptmx".into())?;
    nix::pty::grantpt(&master).step(|| "grant the pty".into())?;
    nix::pty::unlockpt(&master).step(|| "unlock the pty".into())?;
    let name = nix::pty::ptsname_r(&master).step(|| "name the pty".into())?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY,
        nix::sys::stat::Mode::empty(),
    )
    .step(|| format!("open {name}"))?;
    nix::unistd::fchown(&slave, Some(uid.into()), Some(gid.into()))
        .step(|| format!("give {name} to the process"))?;
    // SAFETY: TIOCSCTTY on a descriptor we own, with an integer argument.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(StepError::last(format!(
            "make {name} the controlling terminal"
        )));
    }
    for to in 0..3 {
        // SAFETY: dup2 of our own descriptor onto the standard ones.
        if unsafe { libc::dup2(slave.as_raw_fd(), to) } < 0 {
            return Err(StepError::last(format!("make {name} the stdio")));
        }
    }
    let fds = [master.as_raw_fd()];
    let payload = [IoSlice::new(name.as_bytes())];
    sendmsg::<()>(
        socket,
        &payload,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .step(|| "send the pty to the console socket".into())?;
    // SAFETY: closes the socket descriptor this process was handed for this one use.
    unsafe { libc::close(socket) };
    Ok(())
}

/// Makes the terminal on stdin this process's controlling terminal, in a new session
/// of its own (`haconiwa attach --ctty`: the supervisor's exec hands it a pty's slave
/// as stdio, and the command attached inherits the terminal with job control).
pub fn control_stdin() -> StepResult<()> {
    nix::unistd::setsid().step(|| "start a session for the terminal".into())?;
    // SAFETY: TIOCSCTTY on our own stdin with an integer argument (0: do not steal it).
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return Err(StepError::last("make stdin the controlling terminal"));
    }
    Ok(())
}

/// Sets the window size of the terminal `fd` (a pty's master): its session gets
/// SIGWINCH.
pub fn set_window_size(fd: &impl AsRawFd, rows: u16, cols: u16) -> std::io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads the winsize we pass by reference, on a descriptor the
    // caller holds open.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &size) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The window size (rows, columns) of the terminal `fd`, if it is one.
pub fn window_size(fd: &impl AsRawFd) -> Option<(u16, u16)> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize into the one we pass by reference.
    let got = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (got == 0 && size.ws_row > 0 && size.ws_col > 0).then_some((size.ws_row, size.ws_col))
}
