//! A real OCI registry for the tests: Debian's `docker-registry` (distribution 2.8) on a
//! loopback port, optionally with TLS and basic auth, its access log kept to count what
//! clients fetched; images pushed to it with `skopeo` from the layouts the tests write.
//! Stopped by its pid when dropped.

use super::{require_program, BIN};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running registry.
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Its directory (config, data, log, certificates).
    pub dir: PathBuf,
    child: Child,
    /// TLS: the CA that signed its certificate.
    pub ca: Option<PathBuf>,
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    /// Starts a registry in `dir` (plain HTTP).
    pub fn start(dir: &Path) -> Registry {
        Registry::start_with(dir, false, None)
    }

    /// Starts a registry; `tls` serves HTTPS with a certificate from `haconiwa tls`,
    /// `user` = (name, password) requires basic auth.
    pub fn start_with(dir: &Path, tls: bool, user: Option<(&str, &str)>) -> Registry {
        require_program("docker-registry", "docker-registry");
        require_program("skopeo", "skopeo");
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.join("data").display()
        );
        let mut ca = None;
        if tls {
            let ok = |c: &mut Command| {
                let out = c.output().unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            ok(Command::new(BIN)
                .args(["tls", "ca", "create", "--dir"])
                .arg(dir));
            ok(Command::new(BIN)
                .args([
                    "tls",
                    "cert",
                    "create",
                    "--node",
                    "1",
                    "--ip",
                    "127.0.0.1",
                    "--ca-dir",
                ])
                .arg(dir)
                .arg("--dir")
                .arg(dir));
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.join("node-1.pem").display(),
                dir.join("node-1-key.pem").display()
            ));
            ca = Some(dir.join("ca.pem"));
        }
        if let Some((u, p)) = user {
            require_program("htpasswd", "apache2-utils");
            let out = Command::new("htpasswd")
                .args(["-Bbn", u, p])
                .output()
                .unwrap();
            assert!(out.status.success());
            std::fs::write(dir.join("htpasswd"), &out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: haconiwa-test\n    path: {}\n",
                dir.join("htpasswd").display()
            ));
        }
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.join("access.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let reg = Registry {
            addr,
            dir: dir.to_path_buf(),
            child,
            ca,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&reg.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "the registry did not listen: {}",
                reg.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        reg
    }

    /// Its access log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    /// GET requests of a blob that were answered with data (200 or 206).
    pub fn blob_gets(&self, digest: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("GET /v2/") && l.contains(&format!("/blobs/{digest} ")))
            .filter(|l| l.contains("\" 200 ") || l.contains("\" 206 "))
            .count()
    }

    /// Pushes the image of an OCI layout (ref name `1`) as `name` (e.g. `web:1`);
    /// `all` pushes a whole index.
    pub fn push(&self, layout: &Path, name: &str, all: bool, creds: Option<(&str, &str)>) {
        let mut c = Command::new("skopeo");
        c.arg("copy");
        if all {
            c.arg("--all");
        }
        match &self.ca {
            Some(ca) => {
                let certs = self.dir.join("skopeo-certs");
                std::fs::create_dir_all(&certs).unwrap();
                std::fs::copy(ca, certs.join("ca.crt")).unwrap();
                c.arg("--dest-cert-dir").arg(&certs);
            }
            None => {
                c.arg("--dest-tls-verify=false");
            }
        }
        if let Some((u, p)) = creds {
            c.arg("--dest-creds").arg(format!("{u}:{p}"));
        }
        let out = c
            .arg(format!("oci:{}:1", layout.display()))
            .arg(format!("docker://{}/{name}", self.addr))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo copy to {}: {}",
            self.addr,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy in front of a server that can cut its answers after a budget of bytes
/// (a transfer that breaks halfway) and records what clients sent.
pub struct Proxy {
    /// `127.0.0.1:PORT` to connect to.
    pub addr: String,
    /// Bytes from the server still let through before the connection is cut
    /// (`u64::MAX`: never).
    pub budget: Arc<AtomicU64>,
    /// Bytes from the server passed on.
    pub passed: Arc<AtomicU64>,
    /// What clients sent (request heads).
    pub sent: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// A proxy to `upstream`.
    pub fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        listener.set_nonblocking(true).unwrap();
        let p = Proxy {
            addr,
            budget: Arc::new(AtomicU64::new(u64::MAX)),
            passed: Arc::new(AtomicU64::new(0)),
            sent: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (budget, passed, sent, stop) = (
            p.budget.clone(),
            p.passed.clone(),
            p.sent.clone(),
            p.stop.clone(),
        );
        let upstream = upstream.to_string();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let sent = sent.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = c_read.read(&mut buf) {
                        if n == 0 || s_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        sent.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let _ = s_write.shutdown(std::net::Shutdown::Write);
                });
                let (mut s_read, mut c_write) = (server, client);
                let (budget, passed) = (budget.clone(), passed.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = s_read.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let left = budget.load(Ordering::SeqCst);
                        let take = (n as u64).min(left) as usize;
                        if take > 0 && c_write.write_all(&buf[..take]).is_err() {
                            break;
                        }
                        passed.fetch_add(take as u64, Ordering::SeqCst);
                        if left != u64::MAX {
                            budget.fetch_sub(take as u64, Ordering::SeqCst);
                        }
                        if take < n {
                            // Out of budget: the transfer breaks here.
                            let _ = c_write.shutdown(std::net::Shutdown::Both);
                            let _ = s_read.shutdown(std::net::Shutdown::Both);
                            break;
                        }
                    }
                    let _ = c_write.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        p
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
