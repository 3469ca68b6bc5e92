//! Definitions on the leader: their names, their newest registered version, and the
//! evaluation of a `.haco` text (Rhai work, bounded, kept off the async threads).

use super::error::{OpError, OpResult};
use crate::cluster::state::{ClusterState, Definition};
use crate::spec::ContainerSpec;
use std::path::Path;

/// The definition name of a file: its stem (`sleeper` for `dir/sleeper.haco`).
pub fn definition_name(file: &str) -> String {
    Path::new(file)
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| file.to_string())
}

/// Evaluates a `.haco` text on a blocking thread; a script error is `Invalid`.
pub async fn evaluate(text: String, file: String, base_dir: String) -> OpResult<ContainerSpec> {
    tokio::task::spawn_blocking(move || {
        let base = (!base_dir.is_empty()).then(|| Path::new(&base_dir).to_path_buf());
        crate::spec::load_str(&text, &file, base.as_deref())
    })
    .await
    .map_err(|e| OpError::Internal(format!("evaluate definition: {e}")))?
    .map_err(|e| OpError::Invalid(e.to_string()))
}

/// The definition of a `.haco` text: the registered one when the cluster holds this
/// text already (its spec resolved once), else a new one, evaluated here. A definition
/// that reads secrets is identified with their versions too: a secret's new value makes
/// it a new definition (`leader::storage` rolls its rules).
pub async fn resolve(
    state: &ClusterState,
    text: String,
    file: String,
    base_dir: String,
) -> OpResult<Definition> {
    let plain = crate::spec::digest(&text);
    let spec = match state.definitions().get(&plain) {
        Some(d) if d.spec.secrets.is_empty() => return Ok(d.clone()),
        Some(d) => d.spec.clone(),
        None => match state
            .definitions()
            .values()
            .find(|d| !d.spec.secrets.is_empty() && d.text == text)
        {
            Some(d) => d.spec.clone(),
            None => evaluate(text.clone(), file.clone(), base_dir.clone()).await?,
        },
    };
    let digest = with_secret_versions(state, plain, &spec);
    if let Some(d) = state.definitions().get(&digest) {
        return Ok(d.clone());
    }
    Ok(Definition {
        name: definition_name(&file),
        digest,
        text,
        base_dir,
        spec,
        registered_index: 0,
    })
}

/// A definition's digest: its text's, with the versions of the secrets it reads.
fn with_secret_versions(state: &ClusterState, plain: String, spec: &ContainerSpec) -> String {
    if spec.secrets.is_empty() {
        return plain;
    }
    let versions: Vec<String> = spec
        .secrets
        .iter()
        .map(|s| {
            let v = state.secrets().get(&s.name).map_or(0, |r| r.version);
            format!("{}@{v}", s.name)
        })
        .collect();
    crate::spec::digest(&format!("{plain}\nsecrets {}", versions.join(",")))
}

/// The newest registered definition of a name.
pub fn latest(state: &ClusterState, name: &str) -> Option<Definition> {
    state
        .definitions()
        .values()
        .filter(|d| d.name == name)
        .max_by_key(|d| d.registered_index)
        .cloned()
}
