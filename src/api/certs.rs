//! `haconiwa tls`: a cluster CA and the certificates it signs (rcgen, ECDSA P-256).
//! A node's certificate serves its port and is its client certificate towards the other
//! members; a client's certificate identifies an operator or a tool.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::net::IpAddr;
use std::path::Path;
use time::{Duration, OffsetDateTime};

/// The subject of every CA `create_ca` makes: `issue` rebuilds the issuer from it and the
/// CA's key, so that the CA certificate itself need not be parsed.
const CA_NAME: &str = "haconiwa cluster CA";

/// Why a certificate could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused.
    #[error("{0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A name or address is not usable in a certificate.
    #[error("{0}")]
    Invalid(String),
}

/// A certificate and its key, PEM.
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

/// Who a certificate is for.
#[derive(Debug, Clone)]
pub enum Subject {
    /// A member: serves the port (server name: its IPs and DNS names) and calls the
    /// other members.
    Node {
        /// Its node id (in the common name).
        id: u64,
        /// Addresses clients and members reach it at.
        ips: Vec<IpAddr>,
        /// DNS names clients and members reach it by.
        dns: Vec<String>,
    },
    /// A client (the CLI, a tool): client authentication only.
    Client {
        /// Its name (the common name).
        name: String,
    },
}

/// The validity window of a new certificate: from an hour ago (clock skew) for `days`.
pub fn validity(days: u32) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (
        now - Duration::hours(1),
        now + Duration::days(i64::from(days)),
    )
}

fn ca_params(not_before: OffsetDateTime, not_after: OffsetDateTime) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    dn.push(DnType::OrganizationName, "haconiwa");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = not_before;
    p.not_after = not_after;
    p
}

/// A new cluster CA, valid for `days`.
pub fn create_ca(days: u32) -> Result<Issued, CertError> {
    let key = KeyPair::generate()?;
    let (from, until) = validity(days);
    let cert = ca_params(from, until).self_signed(&key)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A certificate for `subject` signed by the CA whose key is `ca_key_pem`, valid from
/// `not_before` to `not_after`.
pub fn issue(
    ca_key_pem: &str,
    subject: &Subject,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<Issued, CertError> {
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = Issuer::new(ca_params(not_before, not_after), ca_key);
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    match subject {
        Subject::Node { id, ips, dns } => {
            if ips.is_empty() && dns.is_empty() {
                return Err(CertError::Invalid(
                    "a node certificate needs the --ip or --dns its members and clients reach it by".into(),
                ));
            }
            dn.push(DnType::CommonName, format!("haconiwa node {id}"));
            p.subject_alt_names = ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
            for d in dns {
                let name = d
                    .clone()
                    .try_into()
                    .map_err(|_| CertError::Invalid(format!("'{d}' is not a DNS name")))?;
                p.subject_alt_names.push(SanType::DnsName(name));
            }
            p.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
        }
        Subject::Client { name } => {
            if name.is_empty() {
                return Err(CertError::Invalid(
                    "a client certificate needs a name".into(),
                ));
            }
            dn.push(DnType::CommonName, name.clone());
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
    }
    dn.push(DnType::OrganizationName, "haconiwa");
    p.distinguished_name = dn;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.not_before = not_before;
    p.not_after = not_after;
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, &issuer)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Writes a file readable by its owner only (keys, and certificates beside them);
/// refuses to overwrite unless `force`.
pub fn write_private(path: &Path, text: &str, force: bool) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| CertError::File {
        path: path.display().to_string(),
        source,
    };
    let mut o = std::fs::OpenOptions::new();
    o.write(true).mode(0o600);
    if force {
        o.create(true).truncate(true);
    } else {
        o.create_new(true);
    }
    let mut f = o.open(path).map_err(err)?;
    // An existing file keeps its mode on truncate: make it private too.
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)
}

/// Reads a PEM file.
pub fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::File {
        path: path.display().to_string(),
        source,
    })
}
