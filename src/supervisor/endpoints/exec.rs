//! A command in a running container for any member (`haconiwa exec`): on the
//! container's node it runs as `haconiwa attach` runs it (a process of its own that
//! joins the container's namespaces, cgroups, credentials and seccomp filter; the
//! supervisor's threads never do), its stdio on pipes or, with a terminal, on a pty
//! whose master this end holds; another member forwards the stream once to that node.
//! The last output is the exit status; a caller that goes away hangs the command up.

use super::calls::PeerClients;
use crate::api::pb::exec_input::Input;
use crate::api::pb::exec_output::Output;
use crate::api::pb::{ExecInput, ExecOutput, ExecStart};
use crate::runtime::state::Status as LocalStatus;
use crate::runtime::Runtime;
use crate::supervisor::shared::Supervisor;
use std::pin::Pin;
use std::process::Stdio;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Status, Streaming};

/// The stream of `exec`.
pub type ExecOutputs = Pin<Box<dyn Stream<Item = Result<ExecOutput, Status>> + Send + 'static>>;

/// Bytes read from the command at once.
const CHUNK: usize = 32 * 1024;

/// How long, after the command ended, its output may still come before its status.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs the command the first input names.
pub(super) async fn exec(
    core: &Supervisor,
    peers: &PeerClients,
    mut input: Streaming<ExecInput>,
) -> Result<ExecOutputs, Status> {
    let start = match input.message().await? {
        Some(ExecInput {
            input: Some(Input::Start(s)),
        }) => s,
        _ => {
            return Err(Status::invalid_argument(
                "exec: the first message must say what to run (start)",
            ))
        }
    };
    if start.command.is_empty() {
        return Err(Status::invalid_argument("exec: no command"));
    }
    if let Some((node, addr)) = super::elsewhere(core, &start.id, start.forwarded)? {
        let first = ExecInput {
            input: Some(Input::Start(ExecStart {
                forwarded: true,
                ..start
            })),
        };
        // The caller's inputs follow the start; a broken caller ends the stream.
        let rest = input.map_while(Result::ok);
        let outbound = tokio_stream::once(first).chain(rest);
        let stream = peers
            .client_to(&addr)
            .map_err(Status::from)?
            .exec(outbound)
            .await
            .map_err(super::from_node(node))?
            .into_inner();
        return Ok(Box::pin(stream));
    }
    let runtime = core.local_runtime();
    match runtime.get(&start.id) {
        Ok(st) if st.status == LocalStatus::Running => {}
        Ok(st) => {
            return Err(Status::failed_precondition(
                format!(
                    "container {} is not running ({:?}{})",
                    start.id,
                    st.status,
                    st.exit_code
                        .map(|c| format!(", exit code {c}"))
                        .unwrap_or_default()
                )
                .to_lowercase(),
            ))
        }
        Err(_) => {
            return Err(Status::failed_precondition(format!(
                "container {} is not running: node {} holds no process of it",
                start.id, core.id
            )))
        }
    }
    local(&runtime, start, input)
}

/// The `haconiwa attach` process for the command, with its stdio.
fn attach_command(runtime: &Runtime, start: &ExecStart) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(crate::runtime::SELF_EXE);
    cmd.env("HACONIWA_STATE_DIR", &runtime.state_dir)
        .env("HACONIWA_CGROUP_PARENT", &runtime.cgroup_parent)
        .arg("attach");
    if start.tty {
        cmd.arg("--ctty");
    }
    cmd.arg(&start.id).arg("--").args(&start.command);
    cmd.kill_on_drop(true);
    cmd
}

fn internal(what: &str) -> impl FnOnce(std::io::Error) -> Status + '_ {
    move |e| Status::internal(format!("exec: {what}: {e}"))
}

/// On this node: the attach process started, its output and status streamed back.
fn local(
    runtime: &Runtime,
    start: ExecStart,
    input: Streaming<ExecInput>,
) -> Result<ExecOutputs, Status> {
    let mut cmd = attach_command(runtime, &start);
    let (tx, rx) = mpsc::channel::<Result<ExecOutput, Status>>(16);
    let mut readers: Vec<(Box<dyn AsyncRead + Send + Unpin>, bool)> = Vec::new();
    let (child, writer, master): (_, Box<dyn AsyncWrite + Send + Unpin>, _) = if start.tty {
        let size = nix::pty::Winsize {
            ws_row: u16::try_from(start.rows).unwrap_or(24).max(1),
            ws_col: u16::try_from(start.cols).unwrap_or(80).max(1),
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty =
            nix::pty::openpty(Some(&size), None).map_err(|e| internal("open a pty")(e.into()))?;
        let slave = std::fs::File::from(pty.slave);
        cmd.stdin(slave.try_clone().map_err(internal("share the pty"))?)
            .stdout(slave.try_clone().map_err(internal("share the pty"))?)
            .stderr(slave);
        let child = cmd.spawn().map_err(internal("start haconiwa attach"))?;
        let master = std::fs::File::from(pty.master);
        let reading = master.try_clone().map_err(internal("share the pty"))?;
        readers.push((Box::new(tokio::fs::File::from_std(reading)), false));
        let writing = master.try_clone().map_err(internal("share the pty"))?;
        (
            child,
            Box::new(tokio::fs::File::from_std(writing)) as Box<dyn AsyncWrite + Send + Unpin>,
            Some(master),
        )
    } else {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(internal("start haconiwa attach"))?;
        let (Some(i), Some(o), Some(e)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(Status::internal("exec: the attach process has no stdio"));
        };
        readers.push((Box::new(o), false));
        readers.push((Box::new(e), true));
        (
            child,
            Box::new(i) as Box<dyn AsyncWrite + Send + Unpin>,
            None,
        )
    };
    let mut pumps = tokio::task::JoinSet::new();
    for (mut r, stderr) in readers {
        let tx = tx.clone();
        pumps.spawn(async move {
            let mut buf = vec![0u8; CHUNK];
            // A pty's master reads EIO once the last slave is closed: its end.
            while let Ok(n) = r.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let data = buf[..n].to_vec();
                let out = if stderr {
                    Output::Stderr(data)
                } else {
                    Output::Stdout(data)
                };
                if tx.send(Ok(ExecOutput { output: Some(out) })).await.is_err() {
                    break;
                }
            }
        });
    }
    tokio::spawn(feed(input, writer, master));
    tokio::spawn(async move {
        let mut child = child;
        let status = child.wait().await;
        // What it wrote before it ended comes before its status (a pty's reader ends
        // with the slave; a pipe's at its end), unless something it left behind keeps
        // them open.
        let drained = async { while pumps.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(DRAIN, drained).await;
        pumps.abort_all();
        let item = match status {
            Ok(s) => Ok(ExecOutput {
                output: Some(Output::ExitCode(exit_code(s))),
            }),
            Err(e) => Err(Status::internal(format!("exec: wait for the command: {e}"))),
        };
        let _ = tx.send(item).await;
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

/// The caller's inputs into the command: stdin bytes, its end, terminal sizes.
async fn feed(
    mut input: Streaming<ExecInput>,
    mut writer: Box<dyn AsyncWrite + Send + Unpin>,
    master: Option<std::fs::File>,
) {
    while let Ok(Some(msg)) = input.message().await {
        match msg.input {
            Some(Input::Stdin(data))
                if writer.write_all(&data).await.is_err() || writer.flush().await.is_err() =>
            {
                return;
            }
            Some(Input::StdinClosed(true)) if master.is_none() => {
                // The pipe closed: the command reads its end.
                let _ = writer.shutdown().await;
                drop(writer);
                // Keep reading until the caller's end.
                while let Ok(Some(_)) = input.message().await {}
                return;
            }
            Some(Input::Resize(size)) => {
                if let Some(m) = &master {
                    let rows = u16::try_from(size.rows).unwrap_or(u16::MAX);
                    let cols = u16::try_from(size.cols).unwrap_or(u16::MAX);
                    let _ = crate::launcher::terminal::set_window_size(m, rows, cols);
                }
            }
            _ => {}
        }
    }
}

/// The status as a shell reports it: the code, or 128+N for signal N.
fn exit_code(s: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    s.code()
        .or_else(|| s.signal().map(|n| 128 + n))
        .unwrap_or(255)
}
