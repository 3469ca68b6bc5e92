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
    /// `127.0.0.1:PORT` (in its network namespace).
    pub addr: String,
    /// The network namespace it runs in (`None`: this one).
    pub netns: Option<String>,
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

    /// Starts a plain-HTTP registry on port 5000 of every address of the network
    /// namespace `netns` (a test's hub: the hosts reach it, the machine does not).
    pub fn start_in(dir: &Path, netns: &str) -> Registry {
        Registry::start_full(dir, false, None, Some(netns))
    }

    /// Starts a registry; `tls` serves HTTPS with a certificate from `haconiwa tls`,
    /// `user` = (name, password) requires basic auth.
    pub fn start_with(dir: &Path, tls: bool, user: Option<(&str, &str)>) -> Registry {
        Registry::start_full(dir, tls, user, None)
    }

    fn start_full(
        dir: &Path,
        tls: bool,
        user: Option<(&str, &str)>,
        netns: Option<&str>,
    ) -> Registry {
        Registry::start_full_with(dir, tls, user, netns, "")
    }

    fn start_full_with(
        dir: &Path,
        tls: bool,
        user: Option<(&str, &str)>,
        netns: Option<&str>,
        extra_config: &str,
    ) -> Registry {
        require_program("docker-registry", "docker-registry");
        require_program("skopeo", "skopeo");
        std::fs::create_dir_all(dir).unwrap();
        let (addr, listen) = match netns {
            Some(_) => ("127.0.0.1:5000".to_string(), "0.0.0.0:5000".to_string()),
            None => {
                let a = format!("127.0.0.1:{}", free_port());
                (a.clone(), a)
            }
        };
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {listen}\n",
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
        config.push_str(extra_config);
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.join("access.log")).unwrap();
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "docker-registry"]);
                c
            }
            None => Command::new("docker-registry"),
        };
        let child = cmd
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let reg = Registry {
            addr,
            netns: netns.map(str::to_string),
            dir: dir.to_path_buf(),
            child,
            ca,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !reg.listening() {
            assert!(
                Instant::now() < deadline,
                "the registry did not listen: {}",
                reg.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        reg
    }

    /// Whether it accepts connections (asked in its own network namespace).
    pub fn listening(&self) -> bool {
        match &self.netns {
            None => TcpStream::connect(&self.addr).is_ok(),
            Some(ns) => Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    ns,
                    "bash",
                    "-c",
                    "exec 3<>/dev/tcp/127.0.0.1/5000",
                ])
                .status()
                .is_ok_and(|s| s.success()),
        }
    }

    /// Its access log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    /// GET requests of a blob that were answered with data (200 or 206).
    pub fn blob_gets(&self, digest: &str) -> usize {
        self.blob_gets_from(digest, "")
    }

    /// The same, from clients whose address starts with `client`.
    pub fn blob_gets_from(&self, digest: &str, client: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| l.starts_with(client))
            .filter(|l| l.contains("GET /v2/") && l.contains(&format!("/blobs/{digest} ")))
            .filter(|l| l.contains("\" 200 ") || l.contains("\" 206 "))
            .count()
    }

    /// Pushes the image of an OCI layout (ref name `1`) as `name` (e.g. `web:1`);
    /// `all` pushes a whole index.
    pub fn push(&self, layout: &Path, name: &str, all: bool, creds: Option<(&str, &str)>) {
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "skopeo"]);
                c
            }
            None => Command::new("skopeo"),
        };
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
    /// Bytes per second from the server (0: as fast as it goes).
    pub rate: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// A proxy to `upstream` on a free loopback port.
    pub fn start(upstream: &str) -> Proxy {
        Proxy::start_full(None, "127.0.0.1:0", upstream)
    }

    /// A proxy listening on `listen` in the network namespace `netns` (its thread
    /// joins it; the sockets it makes are that namespace's).
    pub fn start_in(netns: &str, listen: &str, upstream: &str) -> Proxy {
        Proxy::start_full(Some(netns), listen, upstream)
    }

    fn start_full(netns: Option<&str>, listen: &str, upstream: &str) -> Proxy {
        let p = Proxy {
            addr: String::new(),
            budget: Arc::new(AtomicU64::new(u64::MAX)),
            passed: Arc::new(AtomicU64::new(0)),
            sent: Arc::new(Mutex::new(Vec::new())),
            rate: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (budget, passed, sent, stop, rate) = (
            p.budget.clone(),
            p.passed.clone(),
            p.sent.clone(),
            p.stop.clone(),
            p.rate.clone(),
        );
        let upstream = upstream.to_string();
        let (listen, netns) = (listen.to_string(), netns.map(str::to_string));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            if let Some(ns) = netns {
                let f = std::fs::File::open(format!("/run/netns/{ns}")).expect("open the netns");
                nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("join the netns");
            }
            let listener = TcpListener::bind(&listen).expect("bind the proxy");
            listener.set_nonblocking(true).unwrap();
            let _ = addr_tx.send(listener.local_addr().unwrap().to_string());
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
                let (budget, passed, rate) = (budget.clone(), passed.clone(), rate.clone());
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
                        let r = rate.load(Ordering::SeqCst);
                        if r > 0 {
                            std::thread::sleep(Duration::from_secs_f64(take as f64 / r as f64));
                        }
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
        let mut p = p;
        p.addr = addr_rx.recv().expect("the proxy listens");
        p
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A token service as Docker's registry token authentication wants one: it checks a
/// user's basic credentials and answers with a JWT (ES256) the registry verifies
/// against the certificate in its `rootcertbundle`; it grants whatever a known user asks.
pub struct TokenService {
    /// `http://127.0.0.1:PORT/token`.
    pub realm: String,
    /// The certificate of its signing key (PEM).
    pub cert_pem: String,
    /// Token requests answered, and refused.
    pub issued: Arc<AtomicU64>,
    /// Requests refused (no or wrong credentials).
    pub refused: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

/// The service name and issuer the registry and the service agree on.
pub const TOKEN_SERVICE: &str = "haconiwa-test-registry";
const TOKEN_ISSUER: &str = "haconiwa-test-issuer";

fn b64url(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// libtrust's key id (what distribution matches a token's `kid` with): the SHA-256 of
/// the public key's DER, 240 bits of it in base32, groups of four.
fn libtrust_kid(spki_der: &[u8]) -> String {
    use sha2::{Digest as _, Sha256};
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = Sha256::digest(spki_der);
    let bytes = &digest[..30];
    let mut bits = 0u32;
    let mut n = 0;
    let mut s = String::new();
    for b in bytes {
        bits = (bits << 8) | *b as u32;
        n += 8;
        while n >= 5 {
            n -= 5;
            s.push(ALPHABET[((bits >> n) & 31) as usize] as char);
        }
    }
    s.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

/// An ECDSA signature in DER (SEQUENCE of two INTEGERs) as JWS wants it: r and s, 32
/// bytes each.
fn der_to_jws(der: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 2;
    for _ in 0..2 {
        assert_eq!(der[i], 0x02, "an INTEGER");
        let len = der[i + 1] as usize;
        let mut int = &der[i + 2..i + 2 + len];
        while int.len() > 32 && int[0] == 0 {
            int = &int[1..];
        }
        out.extend(std::iter::repeat_n(0u8, 32 - int.len()));
        out.extend_from_slice(int);
        i += 2 + len;
    }
    out
}

impl TokenService {
    /// Starts the service for `user` with `password`.
    pub fn start(user: &str, password: &str) -> TokenService {
        use rcgen::{PublicKeyData, SigningKey};
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["token-issuer".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let kid = libtrust_kid(&key.subject_public_key_info());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let svc = TokenService {
            realm,
            cert_pem: cert.pem(),
            issued: Arc::new(AtomicU64::new(0)),
            refused: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (issued, refused, stop) = (svc.issued.clone(), svc.refused.clone(), svc.stop.clone());
        let expected = {
            use base64::Engine as _;
            format!(
                "basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )
        };
        let user = user.to_string();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let Ok((mut c, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = c.set_nonblocking(false);
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let authorized = head.lines().any(|l| {
                    l.to_ascii_lowercase().starts_with("authorization:") && {
                        let v = l[14..].trim();
                        v.len() > 6
                            && v[..6].eq_ignore_ascii_case("basic ")
                            && format!("basic {}", &v[6..]) == expected
                    }
                });
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let query = path.split_once('?').map(|(_, q)| q).unwrap_or("");
                let mut access = Vec::new();
                for kv in query.split('&') {
                    if let Some(scope) = kv.strip_prefix("scope=") {
                        let scope = scope
                            .replace("%3A", ":")
                            .replace("%2F", "/")
                            .replace("%2C", ",");
                        let parts: Vec<&str> = scope.splitn(3, ':').collect();
                        if parts.len() == 3 {
                            access.push(serde_json::json!({
                                "type": parts[0], "name": parts[1],
                                "actions": parts[2].split(',').collect::<Vec<_>>(),
                            }));
                        }
                    }
                }
                let reply = if authorized {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs();
                    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "kid": kid});
                    let claims = serde_json::json!({
                        "iss": TOKEN_ISSUER, "sub": user, "aud": TOKEN_SERVICE,
                        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}"),
                        "access": access,
                    });
                    let signing = format!(
                        "{}.{}",
                        b64url(header.to_string().as_bytes()),
                        b64url(claims.to_string().as_bytes())
                    );
                    let sig = der_to_jws(&key.sign(signing.as_bytes()).unwrap());
                    let token = format!("{signing}.{}", b64url(&sig));
                    issued.fetch_add(1, Ordering::SeqCst);
                    let body = serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string();
                    format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                } else {
                    refused.fetch_add(1, Ordering::SeqCst);
                    let body = r#"{"details":"unknown user or wrong password"}"#;
                    format!("HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                };
                let _ = c.write_all(reply.as_bytes());
            }
        });
        svc
    }
}

impl Drop for TokenService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Registry {
    /// A plain-HTTP registry on loopback that wants bearer tokens from `tokens`.
    pub fn start_with_tokens(dir: &Path, tokens: &TokenService) -> Registry {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("token-cert.pem"), &tokens.cert_pem).unwrap();
        let auth = format!(
            "auth:\n  token:\n    realm: {}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
            tokens.realm,
            dir.join("token-cert.pem").display()
        );
        Registry::start_full_with(dir, false, None, None, &auth)
    }
}
