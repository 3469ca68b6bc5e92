//! The monitor of a background container (`Runtime::run_daemon`): a process of its
//! own that outlives its caller (and a supervisor restart). It starts the container
//! with its stdout and stderr on pipes, copies them into the rotated log
//! (`logs::spawn_copier`, a thread started once the container runs), waits for the
//! container while it watches the node's lease, records the exit and tells a listening
//! supervisor; the container's mounts and writable layer go after that.

use super::state::{now_secs, ContainerDir, Status};
use super::{lease, logs, release_image, Runtime, NOTIFY_PATIENCE};
use crate::launcher::{self, LaunchError};
use crate::spec::{ContainerSpec, NsKind, OnDisconnect};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// What the monitor tells the process that started it, once, over a pipe.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) enum MonitorReport {
    /// The container runs; its state is in `state.json`.
    Started,
    /// It could not start.
    Failed(LaunchError),
}

impl MonitorReport {
    fn send(&self, to: &mut std::fs::File) {
        if let Ok(bytes) = serde_json::to_vec(self) {
            let _ = to.write_all(&bytes);
        }
    }
}

/// The read and write ends of a pipe, both close-on-exec.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

impl Runtime {
    /// The monitor: detaches, starts the container with its output copied into the
    /// log, reports to the caller through `report`, waits, records the exit. Returns
    /// its exit code.
    pub(super) fn monitor(
        &self,
        spec: &ContainerSpec,
        dir: &ContainerDir,
        mut report: std::fs::File,
        secrets: Vec<launcher::SecretFile>,
    ) -> i32 {
        let _ = nix::unistd::setsid();
        let fail = |step: &str, e: io::Error, report: &mut std::fs::File| {
            MonitorReport::Failed(LaunchError {
                container: spec.name.clone(),
                step: step.into(),
                reason: e.to_string(),
            })
            .send(report);
            release_image(spec, dir);
            let _ = std::fs::remove_dir_all(&dir.path);
            1
        };
        let streams = pipe().and_then(|out| Ok((out, pipe()?)));
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null");
        let ((out_r, out_w), (err_r, err_w), null) = match (streams, null) {
            (Ok((out, err)), Ok(n)) => (out, err, n),
            (Err(e), _) | (_, Err(e)) => return fail("open the output pipes", e, &mut report),
        };
        // The container inherits stdin, stdout and stderr from us (dup2 clears
        // close-on-exec on the copies).
        let fds = (null.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd());
        if let Err(e) = launcher::redirect_stdio(fds.0, fds.1, fds.2) {
            return fail("redirect output", e, &mut report);
        }
        drop((out_w, err_w));
        let mut st = self.initial_state(spec);
        let _ = dir.write_state(&st);
        let started = match launcher::start(spec, &self.options(spec, dir, secrets)) {
            Ok(s) => s,
            Err(e) => {
                MonitorReport::Failed(e).send(&mut report);
                release_image(spec, dir);
                let _ = std::fs::remove_dir_all(&dir.path);
                return 1;
            }
        };
        // Our own copies of the pipes' write ends go: the copier sees their end once
        // the container's processes are gone. Threads only from here on (the launch
        // forks; a fork beside a thread could inherit a lock it holds).
        let _ = launcher::redirect_stdio(fds.0, fds.0, fds.0);
        st.pid = started.pid;
        st.start_time = launcher::start_time(started.pid).unwrap_or(0);
        st.status = Status::Running;
        let _ = dir.write_state(&st);
        // The log exists (mode 0600) once the start is reported; the copier's thread
        // starts after the report, off the launch's path (the pipes hold what the
        // container writes meanwhile).
        let sink = logs::LogSink::open(&dir.path, spec.logs);
        MonitorReport::Started.send(&mut report);
        drop(report);
        // Held until the exit is recorded (`Started::hold_mounts`): the mounts of a
        // container that has its own namespace are torn down after the supervisor knows.
        let mounts = spec
            .unshares(NsKind::Mount)
            .then(|| started.hold_mounts())
            .flatten();
        // The copier's thread allocates in the main arena, not in one of its own.
        launcher::one_malloc_arena();
        let copier = sink.and_then(|sink| logs::spawn_copier(sink, out_r.into(), err_r.into()));
        if let Err(e) = &copier {
            st.reason = Some(format!("its output is lost: the log copier: {e}"));
            let _ = dir.write_state(&st);
        }
        // The cgroup its launch may have taken from the parent's pool is made again,
        // now that the caller has its answer.
        let _ = started.cgroup.refill_pool();
        // From here on the monitor only waits: the heap and stack its parent left go.
        launcher::release_free_memory();
        // Bound to the node's lease: stopped, by this monitor, once it runs out.
        let lease = self
            .lease
            .as_deref()
            .filter(|_| spec.on_disconnect == OnDisconnect::Stop);
        let mut fenced = false;
        let mut exit = launcher::wait_watching(&started, || match lease {
            None => launcher::Watch::Never,
            Some(path) => match lease::remaining_ms(path) {
                Some(ms) => launcher::Watch::After(Duration::from_millis(ms + 1)),
                None => {
                    fenced = true;
                    launcher::Watch::Kill
                }
            },
        });
        match started.cleanup() {
            Ok(oom) => exit.oom_killed |= oom,
            Err(e) => st.reason = Some(e.to_string()),
        }
        // Every process of the container is gone with its cgroup: the copier drains
        // what they wrote and ends.
        if let Ok((handle, end)) = copier {
            end.signal();
            if let Ok(Err(e)) = handle.join() {
                st.reason.get_or_insert(format!("its log: {e}"));
            }
        }
        if fenced {
            st.fenced = true;
            st.reason = Some(
                "fenced: the node's lease ran out (cut off from the cluster or its supervisor gone)"
                    .into(),
            );
        }
        // The writable layer is renamed out of the way now and removed once the
        // supervisor knows (removing its files takes milliseconds on a disk mounted
        // with `discard`): a container started under the same name meanwhile has a
        // layer of its own at `layer`. What is kept by path, the image's lease, goes now.
        let layer = set_layer_aside(dir);
        release_image(spec, dir);
        st.status = Status::Exited;
        st.exit_code = Some(exit.code);
        st.oom_killed = exit.oom_killed;
        if exit.oom_killed {
            st.reason = Some("oom-killed".into());
        }
        st.finished_at = Some(now_secs());
        let _ = dir.write_state(&st);
        self.notify(&spec.name);
        // The record and the log stay for `ps` and `logs` until `rm`; `kill` waits for
        // this monitor's end, so the mounts and the layer are gone when it returns.
        drop(mounts);
        if let Some(layer) = layer {
            let _ = std::fs::remove_dir_all(layer);
        }
        0
    }

    /// Tells a listening supervisor that a container ended. Never blocks: the exit is
    /// already recorded in `state.json`; when the supervisor's queue is full the notice
    /// is offered again for a while, and a supervisor that never takes it still finds
    /// the exit on its next full scan.
    fn notify(&self, name: &str) {
        let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
            return;
        };
        if sock.set_nonblocking(true).is_err() {
            return;
        }
        let deadline = Instant::now() + NOTIFY_PATIENCE;
        let mut pause = Duration::from_millis(1);
        loop {
            match sock.send_to(name.as_bytes(), self.notify_socket()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                // Sent, no supervisor listening, or out of patience.
                _ => return,
            }
        }
    }
}

/// Renames an ended container's writable layer to a name of this monitor's own in
/// its directory, for a removal after its end is recorded; `None` when it has no
/// layer, or when the rename failed and the layer was removed at once.
fn set_layer_aside(dir: &ContainerDir) -> Option<std::path::PathBuf> {
    let aside = dir.path.join(format!("layer.ended-{}", std::process::id()));
    match std::fs::rename(dir.layer_dir(), &aside) {
        Ok(()) => Some(aside),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(_) => {
            let _ = std::fs::remove_dir_all(dir.layer_dir());
            None
        }
    }
}
