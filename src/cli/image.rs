//! `haconiwa image …`: this host's image store (pull, import, ls, inspect, rm, prune).

use super::{Cli, CliError};
use crate::image::progress::human_bytes;
use crate::image::registry::{ImagesConfig, RegistryFetcher};
use crate::image::{archive, config, install, Store};
use crate::spec::ImageRef;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;

/// `haconiwa image ...`
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Pull an image from a registry (OCI distribution API): NAME[:TAG] or
    /// NAME@sha256:DIGEST; an index gives this host's platform (or --platform).
    Pull {
        /// The image reference, e.g. localhost:5000/web:1 or busybox.
        reference: String,
        /// os/arch[/variant] to pick from a multi-platform index.
        #[arg(long)]
        platform: Option<String>,
        /// No progress lines, only the result.
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Import images from an OCI layout directory, an oci-archive or a `docker save`
    /// tarball (both forms); names come from the archive, or --name.
    Import {
        /// The directory or archive.
        path: PathBuf,
        /// Name the (single) image this way.
        #[arg(long)]
        name: Option<String>,
        /// os/arch[/variant] to pick from a multi-platform index.
        #[arg(long)]
        platform: Option<String>,
        /// No progress lines, only the result.
        #[arg(short, long)]
        quiet: bool,
    },
    /// List images: id, names, platform, layers, size.
    Ls {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show an image: names, digests, layers, its configuration (JSON).
    Inspect {
        /// A name, a digest or an id.
        reference: String,
    },
    /// Remove names; an image goes with its last name unless a container uses it.
    Rm {
        /// Names, digests or ids.
        #[arg(required = true)]
        references: Vec<String>,
        /// Drop the name even while containers use the image (its layers stay until
        /// they end and a prune runs).
        #[arg(long)]
        force: bool,
    },
    /// Remove images without a name, and every layer and blob no image and no container
    /// uses (and abandoned downloads).
    Prune {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// Where images live and how registries are reached (the keys of a supervisor's
/// `[images]` table).
#[derive(Debug, Clone, Default, Args)]
pub struct RegistryArgs {
    /// Credentials in the format of ~/.docker/config.json [default: the first of
    /// /etc/haconiwa/auth.json and ~/.docker/config.json that exists].
    #[arg(long, env = "HACONIWA_AUTH_FILE")]
    pub authfile: Option<PathBuf>,
    /// A registry (host[:port]) that may be spoken to over plain HTTP when it does not
    /// speak TLS (repeatable; localhost and 127.0.0.1 always may).
    #[arg(long = "insecure-registry")]
    pub insecure_registry: Vec<String>,
    /// HOST[:PORT]=CA.pem: trust this CA for that registry (repeatable).
    #[arg(long = "registry-ca")]
    pub registry_ca: Vec<String>,
    /// HOST[:PORT]=MIRROR[:PORT]: fetch that registry's images from a mirror
    /// (repeatable).
    #[arg(long = "registry-mirror")]
    pub registry_mirror: Vec<String>,
    /// An images file (TOML, the keys of node.toml's [images]) [default:
    /// /etc/haconiwa/images.toml when it exists; the supervisor reads node.toml's].
    #[arg(long = "images-config", env = "HACONIWA_IMAGES_CONFIG")]
    pub images_config: Option<PathBuf>,
}

/// The CLI's images file when no other is named.
const IMAGES_FILE: &str = "/etc/haconiwa/images.toml";

impl RegistryArgs {
    /// The CLI's configuration: the images file (the named one, else
    /// /etc/haconiwa/images.toml when it exists), the flags over it.
    pub fn config(&self) -> Result<ImagesConfig, CliError> {
        let default = std::path::Path::new(IMAGES_FILE);
        let file = match &self.images_config {
            Some(p) => ImagesConfig::load(p)?,
            None if default.is_file() => ImagesConfig::load(default)?,
            None => ImagesConfig::default(),
        };
        Ok(self.flags()?.over(file))
    }

    /// A supervisor's: the flags (and an images file named with --images-config) as its
    /// `[images]`, which node.toml's own lies below.
    pub fn supervisor_config(&self, store: Option<PathBuf>) -> Result<ImagesConfig, CliError> {
        let file = match &self.images_config {
            Some(p) => ImagesConfig::load(p)?,
            None => ImagesConfig::default(),
        };
        let mut flags = self.flags()?;
        flags.store = store;
        Ok(flags.over(file))
    }

    /// What the flags say.
    fn flags(&self) -> Result<ImagesConfig, CliError> {
        let pairs = |items: &[String], flag: &str, want: &str| {
            items
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .ok_or_else(|| CliError::from(format!("{flag} {kv}: expected {want}")))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(ImagesConfig {
            store: None,
            auth_file: self.authfile.clone(),
            insecure_registries: self.insecure_registry.clone(),
            registry_ca: pairs(&self.registry_ca, "--registry-ca", "HOST=CA.pem")?
                .into_iter()
                .map(|(k, v)| (k, PathBuf::from(v)))
                .collect(),
            mirrors: pairs(&self.registry_mirror, "--registry-mirror", "HOST=MIRROR")?
                .into_iter()
                .collect(),
        })
    }
}

/// The store the command works on: --image-store, else the images file's, else the
/// default.
pub fn store_of(cli: &Cli) -> Result<Store, CliError> {
    let from_file = || {
        let p = std::path::Path::new(IMAGES_FILE);
        p.is_file()
            .then(|| ImagesConfig::load(p).ok().and_then(|c| c.store))
            .flatten()
    };
    Ok(Store::open(
        cli.globals
            .image_store
            .clone()
            .or_else(from_file)
            .unwrap_or_else(|| crate::image::DEFAULT_STORE.into()),
    )?)
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("start the async runtime: {e}").into())
}

/// Pulls `reference` into `store`; returns the record.
pub fn pull(
    store: &Store,
    reference: &str,
    platform: Option<String>,
    quiet: bool,
    registry: &ImagesConfig,
) -> Result<crate::image::store::ImageRecord, CliError> {
    let r = ImageRef::parse(reference)?;
    let fetcher = Arc::new(RegistryFetcher::new(registry, &r)?);
    let opts = install::Options {
        platform,
        names: vec![r.unpinned().to_string()],
        progress: crate::image::progress::terminal(quiet),
    };
    let expect = r
        .digest
        .as_deref()
        .map(crate::image::Digest::parse)
        .transpose()?;
    let shown = r.to_string();
    let record = runtime()?.block_on(install::install(
        store,
        fetcher,
        &shown,
        r.target(),
        expect.as_ref(),
        &opts,
    ))?;
    Ok(record)
}

/// Runs one `image` command.
pub fn run(cli: &Cli, cmd: &ImageCommand) -> Result<i32, CliError> {
    let store = store_of(cli)?;
    match cmd {
        ImageCommand::Pull {
            reference,
            platform,
            quiet,
            registry,
        } => {
            let started = std::time::Instant::now();
            let record = pull(
                &store,
                reference,
                platform.clone(),
                *quiet,
                &registry.config()?,
            )?;
            println!(
                "{} {} ({} layers, {:.1} s)",
                ImageRef::parse(reference)?.unpinned(),
                record.manifest,
                record.layers.len(),
                started.elapsed().as_secs_f64()
            );
            Ok(0)
        }
        ImageCommand::Import {
            path,
            name,
            platform,
            quiet,
        } => {
            let (fetcher, items) = archive::plan(path, &store, name.as_deref())?;
            let rt = runtime()?;
            for item in items {
                let opts = install::Options {
                    platform: platform.clone(),
                    names: item.names.clone(),
                    progress: crate::image::progress::terminal(*quiet),
                };
                let shown = item
                    .names
                    .first()
                    .cloned()
                    .unwrap_or_else(|| format!("{}@{}", path.display(), item.target));
                let record = rt.block_on(install::install(
                    &store,
                    fetcher.clone(),
                    &shown,
                    item.target.as_str(),
                    Some(&item.target),
                    &opts,
                ))?;
                println!(
                    "imported {} {} ({} layers)",
                    if item.names.is_empty() {
                        "<no name: tag it with --name>".to_string()
                    } else {
                        item.names.join(", ")
                    },
                    record.manifest,
                    record.layers.len()
                );
            }
            Ok(0)
        }
        ImageCommand::Ls { json } => {
            let list = store.list()?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(0);
            }
            println!(
                "{:<12}  {:<44} {:<12} {:>6} {:>10}",
                "IMAGE ID", "NAME", "PLATFORM", "LAYERS", "SIZE"
            );
            for i in list {
                let names = if i.names.is_empty() {
                    vec!["<none>".to_string()]
                } else {
                    i.names.clone()
                };
                for n in names {
                    println!(
                        "{:<12}  {:<44} {:<12} {:>6} {:>10}",
                        i.id,
                        n,
                        i.platform,
                        i.layers,
                        human_bytes(i.size)
                    );
                }
            }
            Ok(0)
        }
        ImageCommand::Inspect { reference } => {
            let r = config::load(&store, reference)?;
            let names = store.names_of(&r.record.manifest)?;
            let out = serde_json::json!({
                "id": r.record.manifest.short(),
                "digest": r.record.manifest,
                "index": r.record.index,
                "names": names,
                "platform": r.record.platform,
                "config_digest": r.record.config,
                "layers": r.record.layers,
                "labels": config::labels(&r),
                "config": r.config,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(0)
        }
        ImageCommand::Rm { references, force } => {
            for reference in references {
                let freed = store.remove(reference, *force)?;
                if freed.images.is_empty() {
                    println!("untagged {reference}");
                } else {
                    println!(
                        "removed {reference} ({} layers, {} blobs, {})",
                        freed.layers,
                        freed.blobs,
                        human_bytes(freed.bytes)
                    );
                }
            }
            Ok(0)
        }
        ImageCommand::Prune { json } => {
            let freed = store.prune()?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&freed)?);
            } else {
                println!(
                    "removed {} images, {} layers, {} blobs: {} freed",
                    freed.images.len(),
                    freed.layers,
                    freed.blobs,
                    human_bytes(freed.bytes)
                );
            }
            Ok(0)
        }
    }
}
