//! `haconiwa volume …` and `haconiwa secret …`: the cluster's named volumes and secrets,
//! asked of any member (docs/operations.md).

use super::{Cli, CliError, Command};
use crate::api::pb;
use crate::api::pb::cluster_client::ClusterClient;
use crate::api::AuthChannel;
use clap::Subcommand;
use std::io::Read;
use std::path::PathBuf;

/// `haconiwa volume ...`
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a named volume on a node: a container that mounts it (`c.volume(NAME,
    /// PATH)`) runs on that node, and its data outlives the container.
    Create {
        /// The volume's name.
        name: String,
        /// The node that holds it.
        #[arg(long)]
        node: u64,
        /// Its size (64M, 1G): a host volume gets a file system of its own of that
        /// size (an ext4 image, at least 8M); without one, a directory of the node's
        /// disk. Required for --tmpfs.
        #[arg(long)]
        size: Option<String>,
        /// In memory (a tmpfs of --size): kept while the node runs, gone at its reboot.
        #[arg(long)]
        tmpfs: bool,
    },
    /// List the volumes: node, kind, size, the containers using it.
    Ls {
        /// JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a volume and its data (refused while a container uses it).
    Rm {
        /// The volume's name.
        name: String,
    },
}

/// `haconiwa secret ...`
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Store a secret (a new version when it exists: the rules whose definitions read
    /// it roll out a new version, and the containers `spawn` started that read it are
    /// replaced on their node). The value is read from FILE, or stdin for `-`; it is
    /// sealed with the cluster key and never shown again.
    Create {
        /// The secret's name: the file `/run/secrets/NAME` in a container.
        name: String,
        /// Where the value is: a file, or `-` for stdin (at most 500 KiB).
        file: PathBuf,
    },
    /// List the secrets: name, version, size, the containers reading it. Never values.
    Ls {
        /// JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a secret (refused while a container reads it).
    Rm {
        /// The secret's name.
        name: String,
    },
    /// Write a new cluster key to FILE (mode 0600): give every member a copy
    /// (`secrets_key` in node.toml, or --secrets-key).
    Keygen {
        /// The key file to create.
        file: PathBuf,
    },
}

/// Runs a `volume` or `secret` command.
pub fn run(cli: Cli) -> Result<i32, CliError> {
    if let Command::Secret(SecretCommand::Keygen { file }) = &cli.command {
        crate::supervisor::secrets::generate(file)?;
        println!("wrote a new cluster key to {}", file.display());
        return Ok(0);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut c = super::remote::client(&cli).await?;
        match &cli.command {
            Command::Volume(v) => volume(&mut c, v).await,
            Command::Secret(s) => secret(&mut c, s).await,
            _ => Err("not a volume or secret command".into()),
        }
    })?;
    Ok(0)
}

fn status(s: tonic::Status) -> CliError {
    super::remote::status_error(s)
}

async fn volume(c: &mut ClusterClient<AuthChannel>, cmd: &VolumeCommand) -> Result<(), CliError> {
    match cmd {
        VolumeCommand::Create {
            name,
            node,
            size,
            tmpfs,
        } => {
            let size = match size {
                None => 0,
                Some(s) => crate::spec::cgroup::parse_bytes(s)
                    .map_err(|e| format!("--size {s}: {e}"))?
                    .ok_or_else(|| format!("--size {s}: a volume's size is a number of bytes"))?,
            };
            let v = c
                .create_volume(pb::CreateVolumeRequest {
                    name: name.clone(),
                    node_id: *node,
                    tmpfs: *tmpfs,
                    size,
                })
                .await
                .map_err(status)?
                .into_inner();
            println!("volume {} created on node {}", v.name, v.node_id);
        }
        VolumeCommand::Ls { json } => {
            let r = c
                .list_volumes(pb::ListVolumesRequest {})
                .await
                .map_err(status)?
                .into_inner();
            if *json {
                let v: Vec<serde_json::Value> = r
                    .volumes
                    .iter()
                    .map(|v| {
                        serde_json::json!({
                            "name": v.name, "node": v.node_id, "kind": v.kind,
                            "size": v.size, "used_by": v.used_by,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(v));
                return Ok(());
            }
            println!(
                "{:<24} {:>5}  {:<6} {:>10}  USED BY",
                "NAME", "NODE", "KIND", "SIZE"
            );
            for v in &r.volumes {
                println!(
                    "{:<24} {:>5}  {:<6} {:>10}  {}",
                    v.name,
                    v.node_id,
                    v.kind,
                    human_size(v.size),
                    v.used_by.join(",")
                );
            }
        }
        VolumeCommand::Rm { name } => {
            c.remove_volume(pb::RemoveVolumeRequest { name: name.clone() })
                .await
                .map_err(status)?;
            println!("volume {name} removed");
        }
    }
    Ok(())
}

async fn secret(c: &mut ClusterClient<AuthChannel>, cmd: &SecretCommand) -> Result<(), CliError> {
    match cmd {
        SecretCommand::Create { name, file } => {
            let value = read_value(file)?;
            let s = c
                .put_secret(pb::PutSecretRequest {
                    name: name.clone(),
                    value,
                })
                .await
                .map_err(status)?
                .into_inner();
            println!(
                "secret {} version {} stored ({} bytes)",
                s.name, s.version, s.size
            );
            if !s.rolled.is_empty() {
                println!("rolling the rules that read it: {}", s.rolled.join(", "));
            }
            if !s.replaced.is_empty() {
                println!(
                    "replacing the containers that read it: {}",
                    s.replaced.join(", ")
                );
            }
        }
        SecretCommand::Ls { json } => {
            let r = c
                .list_secrets(pb::ListSecretsRequest {})
                .await
                .map_err(status)?
                .into_inner();
            if *json {
                let v: Vec<serde_json::Value> = r
                    .secrets
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "name": s.name, "version": s.version, "size": s.size,
                            "used_by": s.used_by, "key_id": s.key_id,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(v));
                return Ok(());
            }
            println!("{:<24} {:>7} {:>8}  USED BY", "NAME", "VERSION", "SIZE");
            for s in &r.secrets {
                println!(
                    "{:<24} {:>7} {:>8}  {}",
                    s.name,
                    s.version,
                    s.size,
                    s.used_by.join(",")
                );
            }
        }
        SecretCommand::Rm { name } => {
            c.remove_secret(pb::RemoveSecretRequest { name: name.clone() })
                .await
                .map_err(status)?;
            println!("secret {name} removed");
        }
        SecretCommand::Keygen { .. } => {}
    }
    Ok(())
}

/// A secret's value from a file or stdin, at most the cap (read one byte past it to
/// tell).
fn read_value(file: &PathBuf) -> Result<Vec<u8>, CliError> {
    let cap = crate::spec::volumes::MAX_SECRET_BYTES;
    let mut value = Vec::new();
    let read = if file.as_os_str() == "-" {
        std::io::stdin()
            .take(cap as u64 + 1)
            .read_to_end(&mut value)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(cap as u64 + 1).read_to_end(&mut value))
    };
    read.map_err(|e| format!("{}: {e}", file.display()))?;
    if value.len() > cap {
        return Err(format!(
            "{}: a secret is at most {cap} bytes (500 KiB)",
            file.display()
        )
        .into());
    }
    Ok(value)
}

fn human_size(b: u64) -> String {
    match b {
        0 => "-".into(),
        b if b % (1 << 30) == 0 => format!("{}G", b >> 30),
        b if b % (1 << 20) == 0 => format!("{}M", b >> 20),
        b if b % (1 << 10) == 0 => format!("{}K", b >> 10),
        b => b.to_string(),
    }
}
