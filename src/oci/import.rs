//! An OCI bundle turned into a `.haco` definition (`haconiwa import-bundle`): the
//! config translated as `create` does, then written in the definition language. What a
//! definition has no key for (hooks, a terminal, the cgroup path) is named in a warning.

use super::config::{self, ConfigError};
use crate::spec::{ContainerSpec, Seccomp};
use std::path::Path;

/// A bundle as a definition.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The container as the definition says it; its seccomp profile (if any) is the
    /// file named by `seccomp_file`, beside the definition.
    pub spec: ContainerSpec,
    /// `linux.seccomp` as a profile file's text.
    pub seccomp: Option<String>,
    /// What the definition leaves out, in words.
    pub warnings: Vec<String>,
}

/// Reads bundle `dir` as the definition of container `name`; a seccomp filter is
/// referred to as `seccomp_file` (relative to the definition's directory).
pub fn import(dir: &Path, name: &str, seccomp_file: &str) -> Result<Imported, ConfigError> {
    let (cfg, mut warnings) = config::read(dir)?;
    let bundle = config::translate(&cfg, dir, name)?;
    warnings.extend(bundle.warnings);
    let mut spec = bundle.spec;
    spec.labels = bundle.annotations;
    if bundle.seccomp.is_some() {
        spec.seccomp = Seccomp::Profile(seccomp_file.into());
    }
    if cfg.hooks().is_some() {
        warnings.push("hooks: a definition has no hooks; they are left out".into());
    }
    if bundle.terminal {
        warnings.push(
            "process.terminal: a definition has no terminal key (a foreground `haconiwa run` passes its own stdio); left out"
                .into(),
        );
    }
    if cfg
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .is_some()
    {
        warnings.push(
            "linux.cgroupsPath: a definition's container gets its cgroup from haconiwa; left out"
                .into(),
        );
    }
    Ok(Imported {
        spec,
        seccomp: bundle.seccomp,
        warnings,
    })
}
