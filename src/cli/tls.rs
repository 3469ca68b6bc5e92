//! `haconiwa tls`: a cluster CA and the node and client certificates it signs, written
//! 0600 (docs/security.md, "TLS").

use super::CliError;
use crate::api::certs::{self, Subject};
use clap::Subcommand;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// `haconiwa tls ...`
#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// The cluster CA: DIR/ca.pem and DIR/ca-key.pem (keep the key off the nodes).
    #[command(subcommand)]
    Ca(CaCommand),
    /// Certificates signed by the CA.
    #[command(subcommand)]
    Cert(CertCommand),
}

/// `haconiwa tls ca ...`
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Make a new cluster CA.
    Create {
        /// Where to write ca.pem and ca-key.pem.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Validity, days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
}

/// `haconiwa tls cert ...`
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Make a node certificate (`--node ID --ip ADDR`) or a client certificate
    /// (`--client NAME`): DIR/node-ID.pem and DIR/node-ID-key.pem, or NAME.pem and
    /// NAME-key.pem.
    Create {
        /// A node certificate for this node id (server and member-to-member).
        #[arg(long, conflicts_with = "client", required_unless_present = "client")]
        node: Option<u64>,
        /// An IP address the node is reached at (repeatable; the server name checked).
        #[arg(long)]
        ip: Vec<IpAddr>,
        /// A DNS name the node is reached by (repeatable).
        #[arg(long)]
        dns: Vec<String>,
        /// A client certificate with this name (operators, tools).
        #[arg(long)]
        client: Option<String>,
        /// The CA's directory (ca-key.pem).
        #[arg(long, default_value = ".")]
        ca_dir: PathBuf,
        /// Where to write the certificate and key.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Validity, days.
        #[arg(long, default_value_t = 825)]
        days: u32,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
}

/// Runs a `tls` command.
pub fn run(cmd: TlsCommand) -> Result<i32, CliError> {
    match cmd {
        TlsCommand::Ca(CaCommand::Create { dir, days, force }) => {
            let ca = certs::create_ca(days)?;
            let (cert, key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
            write_pair(&cert, &key, &ca, force)?;
            println!(
                "cluster CA: {} (give it to every node and client), {} (keep it safe, off the nodes)",
                cert.display(),
                key.display()
            );
        }
        TlsCommand::Cert(CertCommand::Create {
            node,
            ip,
            dns,
            client,
            ca_dir,
            dir,
            days,
            force,
        }) => {
            let ca_key = certs::read(&ca_dir.join("ca-key.pem"))?;
            let (subject, stem) = match (node, client) {
                (Some(id), None) => (Subject::Node { id, ips: ip, dns }, format!("node-{id}")),
                (None, Some(name)) => {
                    crate::spec::names::check("client", &name)?;
                    (Subject::Client { name: name.clone() }, name)
                }
                _ => return Err("give --node ID (with --ip/--dns) or --client NAME".into()),
            };
            let (from, until) = certs::validity(days);
            let issued = certs::issue(&ca_key, &subject, from, until)?;
            let (cert, key) = (
                dir.join(format!("{stem}.pem")),
                dir.join(format!("{stem}-key.pem")),
            );
            write_pair(&cert, &key, &issued, force)?;
            println!("{}: {} and {}", stem, cert.display(), key.display());
        }
    }
    Ok(0)
}

fn write_pair(cert: &Path, key: &Path, pem: &certs::Issued, force: bool) -> Result<(), CliError> {
    if let Some(d) = cert.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    certs::write_private(key, &pem.key_pem, force)?;
    certs::write_private(cert, &pem.cert_pem, force)?;
    Ok(())
}
