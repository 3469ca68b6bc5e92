//! One health probe of a running container (`spec::health::Probe`), done by the
//! single-threaded `haconiwa __probe` helper (`helper::Request::Probe`): a command runs
//! inside the container as `attach` runs one (its namespaces, cgroups, identity,
//! capabilities, seccomp filter); a TCP or HTTP probe joins the container's network
//! namespace and talks to its loopback. The caller bounds the time (it kills the
//! helper's process group, the attached command with it).

use super::state::Status;
use super::{io_err, Runtime, RuntimeError};
use crate::spec::health::Probe;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// It passed.
    pub passed: bool,
    /// What it saw ("exit status 1", "connection refused", "HTTP 503").
    pub detail: String,
}

impl Finding {
    fn failed(detail: impl Into<String>) -> Finding {
        Finding {
            passed: false,
            detail: detail.into(),
        }
    }
}

/// Runs `probe` against the container `name`; `timeout` bounds each network wait (the
/// caller bounds the whole).
pub fn run(
    rt: &Runtime,
    name: &str,
    probe: &Probe,
    timeout: Duration,
) -> Result<Finding, RuntimeError> {
    match probe {
        Probe::Exec(cmd) => {
            let code = rt.attach(name, cmd)?;
            Ok(Finding {
                passed: code == 0,
                detail: format!("exit status {code}"),
            })
        }
        Probe::Tcp(port) => {
            enter_network(rt, name)?;
            Ok(match connect(*port, timeout) {
                Ok(_) => Finding {
                    passed: true,
                    detail: format!("port {port} open"),
                },
                Err(e) => Finding::failed(format!("port {port}: {e}")),
            })
        }
        Probe::Http { path, port, status } => {
            enter_network(rt, name)?;
            Ok(match http_status(*port, path, timeout) {
                Ok(got) if got == *status => Finding {
                    passed: true,
                    detail: format!("HTTP {got}"),
                },
                Ok(got) => {
                    Finding::failed(format!("HTTP {got} (expected {status}) from :{port}{path}"))
                }
                Err(e) => Finding::failed(format!(":{port}{path}: {e}")),
            })
        }
    }
}

/// Joins the network namespace of the container's first process (the one its record
/// names, checked by start time: a reused pid is not joined).
fn enter_network(rt: &Runtime, name: &str) -> Result<(), RuntimeError> {
    let st = rt.get(name)?;
    if st.status != Status::Running {
        return Err(RuntimeError::NotRunning(name.to_string()));
    }
    let ns = std::fs::File::open(format!("/proc/{}/ns/net", st.pid))
        .map_err(io_err(format!("open the network namespace of {name}")))?;
    if crate::launcher::start_time(st.pid) != Some(st.start_time) {
        return Err(RuntimeError::NotRunning(name.to_string()));
    }
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| RuntimeError::Io {
        what: format!("join the network namespace of {name}"),
        source: e.into(),
    })
}

fn connect(port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    Ok(s)
}

/// `GET path` over HTTP/1.0; the status code of the answer.
fn http_status(port: u16, path: &str, timeout: Duration) -> std::io::Result<u16> {
    let mut s = connect(port, timeout)?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: localhost:{port}\r\nUser-Agent: haconiwa-health\r\nConnection: close\r\n\r\n"
    )?;
    // The status line is all we read (at most 1 KiB of it).
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or("");
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "not an HTTP answer: {:?}",
                line.chars().take(60).collect::<String>()
            ),
        )
    };
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => code.parse().map_err(|_| bad()),
        _ => Err(bad()),
    }
}
