//! An image's configuration mapped onto a container spec, as the OCI image spec's
//! conversion document says: `Entrypoint` + `Cmd` become the command unless the
//! definition gives `init_command`; `Env` is merged (the definition wins); `WorkingDir`,
//! `User` (a name resolved in the image's own `/etc/passwd` and `/etc/group`, with the
//! user's supplementary groups) and `StopSignal` apply unless the definition sets them.
//! The root becomes the image's layers, top first, by their short names in the store.

use super::digest::Digest;
use super::overlay::{components, Stack};
use super::store::{ImageRecord, Store};
use super::ImageError;
use crate::spec::{ContainerSpec, ImageRef};
use oci_spec::image::ImageConfiguration;
use std::collections::BTreeMap;

/// Largest `/etc/passwd` or `/etc/group` read.
const ID_FILE_LIMIT: u64 = 4 << 20;

/// An image as a container needs it: its record and configuration.
pub struct Resolved {
    /// The record.
    pub record: ImageRecord,
    /// The configuration.
    pub config: ImageConfiguration,
}

/// Loads the image a reference names.
pub fn load(store: &Store, reference: &str) -> Result<Resolved, ImageError> {
    let record = store.find(reference)?;
    let bytes = store.read_blob(&record.config, super::install::CONFIG_LIMIT)?;
    let config = ImageConfiguration::from_reader(&bytes[..]).map_err(|e| ImageError::Refused {
        image: reference.to_string(),
        reason: format!("the configuration {}: {e}", record.config),
    })?;
    Ok(Resolved { record, config })
}

/// The image's labels (for `show` and `inspect`).
pub fn labels(r: &Resolved) -> BTreeMap<String, String> {
    r.config
        .config()
        .as_ref()
        .and_then(|c| c.labels().clone())
        .map(|l| l.into_iter().collect())
        .unwrap_or_default()
}

/// The spec of a container of `spec` (whose `image` is set) with its image: the
/// configuration applied, the root set to the image's layers, the image pinned to its
/// digest.
pub fn apply(store: &Store, spec: &ContainerSpec) -> Result<ContainerSpec, ImageError> {
    let Some(reference) = spec.image.as_deref() else {
        return Ok(spec.clone());
    };
    let shown = reference.to_string();
    let r = load(store, reference)?;
    let mut out = spec.clone();
    let mut links = Vec::new();
    for l in r.record.layers.iter().rev() {
        if !store.has_layer(&l.chain_id) {
            return Err(ImageError::Refused {
                image: shown,
                reason: format!(
                    "its layer {} is missing from the store; pull the image again",
                    l.blob
                ),
            });
        }
        links.push(store.layer_link(&l.chain_id)?);
    }
    if links.is_empty() {
        links.push(store.empty_layer()?);
    }
    let cfg = r.config.config().clone().unwrap_or_default();
    if out.init_command.is_empty() {
        out.init_command = cfg
            .entrypoint()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .chain(cfg.cmd().clone().unwrap_or_default())
            .collect();
        if out.init_command.is_empty() {
            return Err(ImageError::Invalid(format!(
                "image {shown} has neither Entrypoint nor Cmd and the definition no init_command"
            )));
        }
    }
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for kv in cfg.env().clone().unwrap_or_default() {
        if let Some((k, v)) = kv.split_once('=') {
            if !k.is_empty() {
                env.insert(k.to_string(), v.to_string());
            }
        }
    }
    env.extend(spec.environment.clone());
    out.environment = env;
    if out.workdir.is_none() {
        if let Some(w) = cfg.working_dir().as_deref().filter(|w| !w.is_empty()) {
            out.workdir = Some(if w.starts_with('/') {
                w.to_string()
            } else {
                format!("/{w}")
            });
        }
    }
    if out.stop_signal.is_none() {
        if let Some(s) = cfg.stop_signal().as_deref().filter(|s| !s.is_empty()) {
            out.stop_signal =
                Some(
                    crate::spec::signal::canonical(s).ok_or_else(|| ImageError::Refused {
                        image: shown.clone(),
                        reason: format!("its StopSignal '{s}' is not a signal"),
                    })?,
                );
        }
    }
    if out.uid.is_none() {
        if let Some(user) = cfg.user().as_deref().filter(|u| !u.is_empty()) {
            let diffs = store.layer_diffs(
                &r.record
                    .layers
                    .iter()
                    .rev()
                    .map(|l| &l.chain_id)
                    .collect::<Vec<_>>(),
            );
            let stack = Stack::open(&diffs).map_err(super::io_err("open the image's layers"))?;
            let ids = resolve_user(&stack, user).map_err(|reason| ImageError::Refused {
                image: shown.clone(),
                reason,
            })?;
            out.uid = Some(ids.uid);
            if out.gid.is_none() {
                out.gid = Some(ids.gid);
            }
            if out.groups.is_empty() {
                out.groups = ids.groups;
            }
        }
    }
    let pinned = ImageRef::parse(reference)
        .map_err(|e| ImageError::Invalid(e.to_string()))?
        .pinned(r.record.manifest.as_str());
    out.image = Some(pinned.to_string());
    out.rootfs.path = store.root().to_path_buf();
    out.rootfs.layers = links;
    Ok(out)
}

/// The manifest digest a resolved spec is pinned to.
pub fn pinned_manifest(spec: &ContainerSpec) -> Option<Digest> {
    let r = ImageRef::parse(spec.image.as_deref()?).ok()?;
    Digest::parse(r.digest.as_deref()?).ok()
}

/// The ids a `User` value gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    /// The user.
    pub uid: u32,
    /// The primary group.
    pub gid: u32,
    /// Supplementary groups (from `/etc/group`).
    pub groups: Vec<u32>,
}

struct Passwd {
    name: String,
    uid: u32,
    gid: u32,
}

fn parse_passwd(text: &str) -> Vec<Passwd> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(Passwd {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

/// (name, gid, members)
fn parse_group(text: &str) -> Vec<(String, u32, Vec<String>)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((
                f.first()?.to_string(),
                f.get(2)?.parse().ok()?,
                f.get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            ))
        })
        .collect()
}

/// Resolves `user[:group]` (names or numbers) against the image's files.
pub fn resolve_user(stack: &Stack, user: &str) -> Result<Ids, String> {
    let read = |path: &str| -> Result<String, String> {
        stack
            .read_file(&components(path), ID_FILE_LIMIT)
            .map(|o| String::from_utf8_lossy(&o.unwrap_or_default()).into_owned())
            .map_err(|e| format!("read /{path}: {e}"))
    };
    let passwd = parse_passwd(&read("etc/passwd")?);
    let groups = parse_group(&read("etc/group")?);
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let (uid, mut gid, name) = match u.parse::<u32>() {
        Ok(uid) => match passwd.iter().find(|p| p.uid == uid) {
            Some(p) => (uid, p.gid, Some(p.name.clone())),
            None => (uid, 0, None),
        },
        Err(_) => match passwd.iter().find(|p| p.name == u) {
            Some(p) => (p.uid, p.gid, Some(p.name.clone())),
            None => {
                return Err(format!(
                    "its User '{user}': no user '{u}' in the image's /etc/passwd"
                ))
            }
        },
    };
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|(n, _, _)| n == g)
                .map(|(_, id, _)| *id)
                .ok_or_else(|| {
                    format!("its User '{user}': no group '{g}' in the image's /etc/group")
                })?,
        };
    }
    let mut extra: Vec<u32> = match &name {
        Some(n) => groups
            .iter()
            .filter(|(_, id, members)| *id != gid && members.iter().any(|m| m == n))
            .map(|(_, id, _)| *id)
            .collect(),
        None => Vec::new(),
    };
    extra.sort();
    extra.dedup();
    Ok(Ids {
        uid,
        gid,
        groups: extra,
    })
}
