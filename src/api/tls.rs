//! TLS on the cluster's port: the PEM files, the server side (a rustls configuration that
//! SIGHUP can replace: new connections use the new certificate, key and CA) and the
//! client side (tonic's rustls client, files read when a channel is made).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Why TLS material is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file is missing, unreadable or holds no usable PEM.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the combination (a key that does not match the certificate, ...).
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The files of one side: the CA that signs the other side, our certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate(s), PEM.
    pub ca: PathBuf,
    /// Our certificate chain, PEM.
    pub cert: PathBuf,
    /// Our private key, PEM.
    pub key: PathBuf,
}

/// What a client presents and trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// The CA of the cluster's certificates.
    pub ca: PathBuf,
    /// Our certificate and key, when the cluster verifies clients.
    pub identity: Option<(PathBuf, PathBuf)>,
}

fn file_err(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Every certificate in a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| file_err(path, format!("no usable private key: {e}")))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server configuration of `files`: our certificate, and clients verified against
/// the CA (required when `verify_clients`). HTTP/2 only.
pub fn server_config(
    files: &TlsFiles,
    verify_clients: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = if verify_clients {
        let mut roots = RootCertStore::empty();
        for c in load_certs(&files.ca)? {
            roots
                .add(c)
                .map_err(|e| file_err(&files.ca, format!("not a usable CA certificate: {e}")))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        TlsError::Config(format!(
            "{} with {}: {e}",
            files.cert.display(),
            files.key.display()
        ))
    })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The server side's TLS, reloadable: `reload` reads the files again and, when they are
/// good, new connections use them (established ones keep theirs).
pub struct ServerTls {
    files: TlsFiles,
    verify_clients: bool,
    current: RwLock<Arc<ServerConfig>>,
}

impl ServerTls {
    /// Loads the files (an error names the file and what is wrong with it).
    pub fn new(files: TlsFiles, verify_clients: bool) -> Result<ServerTls, TlsError> {
        let config = server_config(&files, verify_clients)?;
        Ok(ServerTls {
            files,
            verify_clients,
            current: RwLock::new(config),
        })
    }

    /// Reads the files again; on an error the current configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.files, self.verify_clients)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
        Ok(())
    }

    /// An acceptor with the current configuration.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }

    /// Whether clients must present a certificate of the CA.
    pub fn verifies_clients(&self) -> bool {
        self.verify_clients
    }
}

/// tonic's client TLS for `tls` (files read now: a renewed certificate is used by the
/// next channel made).
pub fn client_config(tls: &ClientTls) -> Result<tonic::transport::ClientTlsConfig, TlsError> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| file_err(p, e));
    let ca = read(&tls.ca)?;
    load_certs(&tls.ca)?;
    let mut c = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca));
    if let Some((cert, key)) = &tls.identity {
        load_certs(cert)?;
        load_key(key)?;
        c = c.identity(tonic::transport::Identity::from_pem(
            read(cert)?,
            read(key)?,
        ));
    }
    Ok(c)
}
