//! Programs an OCI runtime's caller asks to run at points of a container's life
//! (runtime-spec's hooks): each gets the container's state on its stdin, its own
//! arguments and environment (nothing of ours), and is killed at its timeout. The
//! launcher runs two kinds itself, because they fall inside a launch: `createRuntime`
//! (and the older `prestart`) in the runtime's namespaces once the container's exist,
//! and `createContainer` in the container's mount namespace before pivot_root.

use super::error::{Step, StepError, StepResult};
use super::{fork_single_threaded, signals};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::ForkResult;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One hook: runtime-spec's `path`, `args` (its argv, `args[0]` included), `env` and
/// `timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookCommand {
    /// Where the program is (absolute).
    pub path: PathBuf,
    /// Its argv; empty: just the path.
    pub args: Vec<String>,
    /// Its whole environment (`KEY=VALUE`).
    pub env: Vec<String>,
    /// Killed after this long.
    pub timeout: Option<Duration>,
    /// Which hook, for errors: `createRuntime[0]`.
    pub name: String,
}

/// The hooks a launch runs itself, and the state they read: JSON with `{pid}` where
/// the container's pid goes (known only once it is cloned).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchHooks {
    /// The state's JSON, `{pid}` in place of the pid.
    pub state: String,
    /// `prestart` then `createRuntime`: in the runtime's namespaces, before the
    /// container is released.
    pub create_runtime: Vec<HookCommand>,
    /// `createContainer`: in the container's mount namespace, before pivot_root.
    pub create_container: Vec<HookCommand>,
}

impl LaunchHooks {
    /// The state of container `pid`.
    pub fn state_of(&self, pid: i32) -> Vec<u8> {
        self.state.replace("{pid}", &pid.to_string()).into_bytes()
    }
}

/// Runs `hook` with `state` on its stdin and waits for it (at most its timeout);
/// fails with its exit status and what it wrote on stderr.
pub fn run(hook: &HookCommand, state: &[u8]) -> StepResult<()> {
    let step = || format!("hook {} ({})", hook.name, hook.path.display());
    let mut cmd = Command::new(&hook.path);
    if let Some((first, rest)) = hook.args.split_first() {
        cmd.arg0(first).args(rest);
    }
    cmd.env_clear()
        .envs(hook.env.iter().filter_map(|kv| kv.split_once('=')))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec the closure only calls sigprocmask (async-signal
    // safe): the hook starts with no signal blocked, whatever the launcher blocked.
    unsafe {
        cmd.pre_exec(|| {
            signals::reset();
            Ok(())
        });
    }
    let mut child = cmd.spawn().step(step)?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its state closes the pipe: not an error.
        let _ = stdin.write_all(state);
    }
    let deadline = hook.timeout.map(|t| Instant::now() + t);
    let status = loop {
        match child.try_wait().step(step)? {
            Some(s) => break s,
            None if deadline.is_some_and(|d| Instant::now() >= d) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(StepError::msg(
                    step(),
                    format!(
                        "timed out after {} s",
                        hook.timeout.unwrap_or_default().as_secs()
                    ),
                ));
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let err = err.trim();
    Err(StepError::msg(
        step(),
        if err.is_empty() {
            format!("failed ({status})")
        } else {
            format!("failed ({status}): {err}")
        },
    ))
}

/// Runs `hooks` in order inside the namespaces of the container whose process is `pid`
/// (its mount namespace first, so a hook's path is found in the container's root), as
/// `startContainer` asks. A child process joins them; this one stays where it is.
pub fn run_in_container(pid: i32, hooks: &[HookCommand], state: &[u8]) -> StepResult<()> {
    if hooks.is_empty() {
        return Ok(());
    }
    let joins = super::attach::namespaces_of(pid)?;
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).step(|| "pipe".into())?;
    match fork_single_threaded().step(|| "fork for the container's hooks".into())? {
        ForkResult::Child => {
            drop(err_r);
            let r = joins
                .iter()
                .try_for_each(|(kind, f)| {
                    nix::sched::setns(f, super::clone::ns_flag(*kind))
                        .step(|| format!("join the {kind} namespace"))
                })
                .and_then(|()| nix::unistd::chdir("/").step(|| "chdir /".into()))
                .and_then(|()| hooks.iter().try_for_each(|h| run(h, state)));
            let code = match r {
                Ok(()) => 0,
                Err(e) => {
                    let _ = std::fs::File::from(err_w).write_all(&e.encode());
                    1
                }
            };
            // SAFETY: leave the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(err_w);
            let mut msg = Vec::new();
            let _ = std::fs::File::from(err_r).read_to_end(&mut msg);
            loop {
                match waitpid(child, Some(WaitPidFlag::empty())) {
                    Ok(WaitStatus::Exited(_, 0)) if msg.is_empty() => return Ok(()),
                    Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) => {
                        return Err(if msg.is_empty() {
                            StepError::msg("startContainer hooks", "their process died")
                        } else {
                            StepError::decode(&msg)
                        })
                    }
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        return Err(StepError::os("wait for the container's hooks", e.into()))
                    }
                }
            }
        }
    }
}
