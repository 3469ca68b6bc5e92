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
/// text already (its spec resolved once), else a new one, evaluated here.
pub async fn resolve(
    state: &ClusterState,
    text: String,
    file: String,
    base_dir: String,
) -> OpResult<Definition> {
    let digest = crate::spec::digest(&text);
    if let Some(d) = state.definitions().get(&digest) {
        return Ok(d.clone());
    }
    let spec = evaluate(text.clone(), file.clone(), base_dir.clone()).await?;
    Ok(Definition {
        name: definition_name(&file),
        digest,
        text,
        base_dir,
        spec,
        registered_index: 0,
    })
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
