//! How registries are reached: the configuration (`[images]` of node.toml, the CLI's
//! images file and flags), the user's credentials from a docker-format auth file, the
//! challenges a registry answers `401` with, and the TLS settings per registry.

use super::ImageError;
use base64::Engine as _;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where this host keeps its images and how registries are reached: a supervisor's
/// `[images]` table, the CLI's images file (`/etc/haconiwa/images.toml`) and flags.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImagesConfig {
    /// The image store (default /var/lib/haconiwa/images).
    #[serde(default)]
    pub store: Option<PathBuf>,
    /// Credentials in the format of `~/.docker/config.json`.
    #[serde(default)]
    pub auth_file: Option<PathBuf>,
    /// Registries (`host[:port]`) spoken to over plain HTTP.
    #[serde(default)]
    pub insecure_registries: Vec<String>,
    /// A CA (PEM) to trust per registry.
    #[serde(default)]
    pub registry_ca: BTreeMap<String, PathBuf>,
    /// Registry → the mirror its images are fetched from (`host[:port]`).
    #[serde(default)]
    pub mirrors: BTreeMap<String, String>,
}

impl ImagesConfig {
    /// Reads an images file (TOML: the keys of node.toml's `[images]`).
    pub fn load(path: &Path) -> Result<ImagesConfig, ImageError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ImageError::Invalid(format!("{}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| ImageError::Invalid(format!("{}: {e}", path.display())))
    }

    /// `self` over `base`: its store and auth file when it has them, the lists and maps
    /// of both (its entry wins).
    pub fn over(self, base: ImagesConfig) -> ImagesConfig {
        let mut insecure = base.insecure_registries;
        insecure.extend(self.insecure_registries);
        let mut ca = base.registry_ca;
        ca.extend(self.registry_ca);
        let mut mirrors = base.mirrors;
        mirrors.extend(self.mirrors);
        ImagesConfig {
            store: self.store.or(base.store),
            auth_file: self.auth_file.or(base.auth_file),
            insecure_registries: insecure,
            registry_ca: ca,
            mirrors,
        }
    }

    /// The auth file to read: the configured one, else the first of
    /// `/etc/haconiwa/auth.json` and `$HOME/.docker/config.json` that exists.
    pub(super) fn auth_path(&self) -> Option<PathBuf> {
        if let Some(p) = &self.auth_file {
            return Some(p.clone());
        }
        let mut candidates = vec![PathBuf::from("/etc/haconiwa/auth.json")];
        if let Some(home) = std::env::var_os("HOME") {
            candidates.push(PathBuf::from(home).join(".docker/config.json"));
        }
        candidates.into_iter().find(|p| p.is_file())
    }
}

/// Whether a registry may be spoken to over plain HTTP without being listed.
pub(super) fn is_loopback(host: &str) -> bool {
    let h = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    h == "localhost" || h.starts_with("127.") || h == "[::1]"
}

/// A user's credentials for one registry.
#[derive(Debug, Clone)]
pub(super) struct Credentials {
    /// The user.
    pub user: String,
    /// The password.
    pub password: String,
}

/// `~/.docker/config.json`'s shape.
#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The host a key of an auth file names (`https://host:port/v1/` → `host:port`).
pub(super) fn auth_key_host(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        h => h.to_string(),
    }
}

pub(super) fn credentials_for(
    path: &Path,
    registry: &str,
) -> Result<Option<Credentials>, ImageError> {
    let text = std::fs::read(path)
        .map_err(|e| ImageError::Invalid(format!("auth file {}: {e}", path.display())))?;
    let file: AuthFile = serde_json::from_slice(&text)
        .map_err(|e| ImageError::Invalid(format!("auth file {}: {e}", path.display())))?;
    for (key, entry) in file.auths {
        if auth_key_host(&key) != registry {
            continue;
        }
        if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
            return Ok(Some(Credentials {
                user: u.clone(),
                password: p.clone(),
            }));
        }
        if let Some(a) = entry.auth.filter(|a| !a.is_empty()) {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(a.trim())
                .map_err(|e| {
                    ImageError::Invalid(format!("auth file {}: {key}: {e}", path.display()))
                })?;
            let text = String::from_utf8_lossy(&raw).into_owned();
            let (u, p) = text.split_once(':').ok_or_else(|| {
                ImageError::Invalid(format!(
                    "auth file {}: {key}: auth is not user:password",
                    path.display()
                ))
            })?;
            return Ok(Some(Credentials {
                user: u.to_string(),
                password: p.to_string(),
            }));
        }
    }
    Ok(None)
}

/// Parses `Bearer realm="…",service="…",scope="…"` (or `Basic realm="…"`).
pub(super) fn parse_challenge(header: &str) -> Option<(String, BTreeMap<String, String>)> {
    let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    let mut params = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if key.is_empty() || chars.next() != Some('=') {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
        }
        params.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    Some((scheme.to_ascii_lowercase(), params))
}

pub(super) fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// TLS settings per registry (the system's roots, plus the registry's CA).
pub(super) fn tls_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, ImageError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for bundle in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ] {
        if let Ok(iter) = CertificateDer::pem_file_iter(bundle) {
            for c in iter.flatten() {
                let _ = roots.add(c);
            }
            break;
        }
    }
    if let Some(ca) = ca {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
            .map_err(|e| ImageError::Invalid(format!("registry CA {}: {e}", ca.display())))?
            .collect::<Result<_, _>>()
            .map_err(|e| ImageError::Invalid(format!("registry CA {}: {e}", ca.display())))?;
        if certs.is_empty() {
            return Err(ImageError::Invalid(format!(
                "registry CA {}: no certificate in it",
                ca.display()
            )));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| ImageError::Invalid(format!("registry CA {}: {e}", ca.display())))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ImageError::Invalid(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
