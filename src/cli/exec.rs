//! `haconiwa exec ID [-i] [-t] -- CMD`: a command in a running cluster container, from
//! any member (the `Exec` stream; the member forwards it to the container's node). With
//! `-i` this terminal's stdin goes to it; with `-t` it runs on a terminal, and when this
//! side is one too, ours is raw for the while and its size follows ours. Exits with the
//! command's status.

use super::{Cli, CliError, Command};
use crate::api::pb::exec_input::Input;
use crate::api::pb::exec_output::Output;
use crate::api::pb::{ExecInput, ExecStart, TerminalSize};
use std::io::{IsTerminal, Read, Write};
use tokio::sync::mpsc;

/// Runs `haconiwa exec`.
pub fn run(cli: Cli) -> Result<i32, CliError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(exec(&cli))
}

/// The size of this terminal (stdout's, else stdin's), or 24×80.
fn terminal_size() -> (u32, u32) {
    use crate::launcher::terminal::window_size;
    window_size(&std::io::stdout())
        .or_else(|| window_size(&std::io::stdin()))
        .map_or((24, 80), |(r, c)| (u32::from(r), u32::from(c)))
}

/// This terminal in raw mode until dropped (only when stdin is one).
struct Raw(Option<nix::sys::termios::Termios>);

impl Raw {
    fn enter() -> Raw {
        let stdin = std::io::stdin();
        let Ok(saved) = nix::sys::termios::tcgetattr(&stdin) else {
            return Raw(None);
        };
        let mut raw = saved.clone();
        nix::sys::termios::cfmakeraw(&mut raw);
        let set = nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &raw);
        Raw(set.ok().map(|()| saved))
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}

fn input(i: Input) -> ExecInput {
    ExecInput { input: Some(i) }
}

async fn exec(cli: &Cli) -> Result<i32, CliError> {
    let Command::Exec {
        id,
        interactive,
        tty,
        command,
    } = &cli.command
    else {
        return Err("not the exec command".into());
    };
    crate::spec::names::check("container", id)?;
    let mut client = super::remote::client(cli).await?;
    let (rows, cols) = terminal_size();
    let (tx, rx) = mpsc::channel::<ExecInput>(16);
    tx.send(input(Input::Start(ExecStart {
        id: id.clone(),
        command: command.clone(),
        tty: *tty,
        rows,
        cols,
        forwarded: false,
    })))
    .await
    .map_err(|_| "exec: the request could not be queued")?;
    if *interactive {
        // stdin is read by a thread of its own (a blocking read cannot be cancelled).
        let stdin_tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 32 * 1024];
            let mut stdin = std::io::stdin();
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = stdin_tx.blocking_send(input(Input::StdinClosed(true)));
                        return;
                    }
                    Ok(n) => {
                        if stdin_tx
                            .blocking_send(input(Input::Stdin(buf[..n].to_vec())))
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
    } else {
        let _ = tx.send(input(Input::StdinClosed(true))).await;
    }
    let local_tty = *tty && *interactive && std::io::stdin().is_terminal();
    let _raw = local_tty.then(Raw::enter);
    if local_tty {
        let resize_tx = tx.clone();
        if let Ok(mut winch) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        {
            tokio::spawn(async move {
                while winch.recv().await.is_some() {
                    let (rows, cols) = terminal_size();
                    let msg = input(Input::Resize(TerminalSize { rows, cols }));
                    if resize_tx.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    }
    drop(tx);
    let mut outputs = client
        .exec(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(super::remote::status_error)?
        .into_inner();
    loop {
        match outputs
            .message()
            .await
            .map_err(super::remote::status_error)?
        {
            Some(out) => match out.output {
                Some(Output::Stdout(d)) => {
                    let mut o = std::io::stdout().lock();
                    let _ = o.write_all(&d).and_then(|()| o.flush());
                }
                Some(Output::Stderr(d)) => {
                    let _ = std::io::stderr().write_all(&d);
                }
                Some(Output::ExitCode(code)) => return Ok(code),
                None => {}
            },
            None => return Err("exec: the stream ended without the command's exit status".into()),
        }
    }
}
