//! A real etcd (Debian's etcd-server) for the mirror tests: one member on a loopback
//! address, with two client ports: `endpoint` for the cluster, `operator` for the test's
//! own `etcdctl` calls, so that the cluster's port can be cut (iptables) while the
//! operator still reaches etcd. Killed and its data removed on drop.
#![allow(dead_code)]

use super::require_program;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// One etcd member.
pub struct Etcd {
    /// The cluster's client URL.
    pub endpoint: String,
    /// The test's (operator's) client URL.
    pub operator: String,
    ip: String,
    dir: PathBuf,
    child: Option<Child>,
    chain: Option<String>,
    /// TLS: the CA, and etcd's certificate and key (clients must present one of the CA).
    tls: Option<[PathBuf; 3]>,
}

impl Etcd {
    /// Starts etcd on `ip` (client ports 2379 and 2381, peer port 2380) with its data
    /// in `dir`, and waits until it answers.
    pub fn start(ip: &str, dir: PathBuf) -> Etcd {
        Etcd::start_with(ip, dir, None)
    }

    /// [`Etcd::start`] with TLS on both client ports and client certificates required:
    /// `[ca, cert, key]` (the operator's etcdctl presents the same certificate).
    pub fn start_with(ip: &str, dir: PathBuf, tls: Option<[PathBuf; 3]>) -> Etcd {
        require_program("etcd", "etcd-server");
        require_program("etcdctl", "etcd-client");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut e = Etcd {
            endpoint: format!("{scheme}://{ip}:2379"),
            operator: format!("{scheme}://{ip}:2381"),
            ip: ip.to_string(),
            dir,
            child: None,
            chain: None,
            tls,
        };
        e.restart();
        e
    }

    /// (Re)starts the process on the same data dir and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "etcd is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .unwrap();
        let peer = format!("http://{}:2380", self.ip);
        let mut cmd = Command::new("etcd");
        if let Some([ca, cert, key]) = &self.tls {
            cmd.arg("--trusted-ca-file")
                .arg(ca)
                .arg("--cert-file")
                .arg(cert)
                .arg("--key-file")
                .arg(key)
                .arg("--client-cert-auth");
        }
        let child = cmd
            .args(["--name", "t"])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args([
                "--listen-client-urls",
                &format!("{},{}", self.endpoint, self.operator),
            ])
            .args(["--advertise-client-urls", &self.endpoint])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start etcd (Debian's etcd-server; scripts/install-deps installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let o = self.ctl(&["endpoint", "health"]);
            if o.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become healthy: {}\n{}",
                String::from_utf8_lossy(&o.stderr),
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Refuses the cluster's port (the operator's stays open) until `reconnect`.
    pub fn cut_cluster_port(&mut self) {
        let chain = super::add_input_chain(&[&[
            "-d",
            &self.ip,
            "-p",
            "tcp",
            "--dport",
            "2379",
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ]]);
        self.chain = Some(chain);
    }

    /// Undoes `cut_cluster_port`.
    pub fn reconnect(&mut self) {
        if let Some(chain) = self.chain.take() {
            super::remove_input_chain(&chain);
        }
    }

    /// `etcdctl` against the operator's port.
    pub fn ctl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("etcdctl");
        if let Some([ca, cert, key]) = &self.tls {
            cmd.arg("--cacert")
                .arg(ca)
                .arg("--cert")
                .arg(cert)
                .arg("--key")
                .arg(key);
        }
        cmd.env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(&self.operator)
            .arg("--command-timeout=3s")
            .args(args)
            .output()
            .expect("run etcdctl")
    }

    /// `etcdctl` that must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.ctl(args);
        assert!(
            o.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The keys under a prefix.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.ok(&["get", "--prefix", "--keys-only", prefix])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// One value (None when the key is absent).
    pub fn get(&self, key: &str) -> Option<String> {
        let out = self.ok(&["get", "--print-value-only", key]);
        (!out.is_empty()).then(|| out.trim_end_matches('\n').to_string())
    }

    /// One value as JSON.
    pub fn json(&self, key: &str) -> Option<serde_json::Value> {
        self.get(key).map(|v| {
            serde_json::from_str(&v).unwrap_or_else(|e| panic!("{key} is not JSON ({e}): {v}"))
        })
    }

    /// Puts a value (read from a string, as `etcdctl put KEY "$(cat FILE)"` would).
    pub fn put(&self, key: &str, value: &str) {
        self.ok(&["put", key, value]);
    }

    /// The store's current revision.
    pub fn revision(&self) -> i64 {
        let out = self.ok(&["endpoint", "status", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0]["Status"]["header"]["revision"].as_i64().unwrap()
    }

    /// The last lines of etcd's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.reconnect();
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
