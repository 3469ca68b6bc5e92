//! An OCI bundle turned into a `.haco` definition (`haconiwa import-bundle`): the
//! config translated as `create` does, then written in the definition language and
//! loaded back, which must give the same container. What a definition has no key for
//! (hooks, a terminal, the cgroup path) is named in a warning.

use super::config::{self, ConfigError};
use crate::spec::{ContainerSpec, NsKind, RootMode, Seccomp};
use std::path::Path;

/// Why a bundle could not be written as a definition.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The bundle's config.
    #[error("bundle {bundle}: {source}")]
    Config {
        /// The bundle directory.
        bundle: String,
        /// What is wrong with its config.
        source: ConfigError,
    },
    /// The model has a field no definition key says.
    #[error("bundle {bundle}: {why}")]
    Render {
        /// The bundle directory.
        bundle: String,
        /// Which field.
        why: String,
    },
    /// The text written does not load back as the same container (a bug).
    #[error("the definition written for bundle {bundle} does not load back as the same container (a bug; please report it){detail}")]
    LoadBack {
        /// The bundle directory.
        bundle: String,
        /// The loader's error, if it refused the text.
        detail: String,
    },
}

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
    /// The definition's text, checked to load back as `spec`.
    pub text: String,
}

/// Reads bundle `dir` (an absolute path) as the definition of container `name`, to
/// be kept in directory `base` (`None`: printed); a seccomp filter is referred to as
/// `seccomp_file` beside it.
pub fn import(
    dir: &Path,
    name: &str,
    seccomp_file: &str,
    base: Option<&Path>,
) -> Result<Imported, ImportError> {
    let bundle_name = dir.display().to_string();
    let config_error = |source| ImportError::Config {
        bundle: bundle_name.clone(),
        source,
    };
    let (cfg, mut warnings) = config::read(dir).map_err(config_error)?;
    let bundle = config::translate(&cfg, dir, name).map_err(config_error)?;
    warnings.extend(bundle.warnings);
    let mut spec = bundle.spec;
    spec.labels = bundle.annotations;
    if spec.rootfs.mode == RootMode::HostMountTable {
        // A definition's container always has a mount table of its own (the loader
        // adds the namespace): say so rather than the create-time warning.
        warnings.retain(|w| !w.starts_with("linux.namespaces has no mount namespace"));
        warnings.push("linux.namespaces has no mount namespace: a definition's container always gets one, and enters its root with pivot_root".into());
        spec.rootfs.mode = RootMode::PivotRoot;
        spec.namespaces.unshare.push(NsKind::Mount);
        spec.namespaces.unshare.sort();
    }
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
    let header = [format!(
        "Imported from {:?} by `haconiwa import-bundle`.",
        dir.join("config.json")
    )];
    let text = crate::spec::haco::render(&spec, &header).map_err(|why| ImportError::Render {
        bundle: bundle_name.clone(),
        why,
    })?;
    let mut expected = spec.clone();
    if let (Some(b), Seccomp::Profile(p)) = (base, &spec.seccomp) {
        expected.seccomp = Seccomp::Profile(b.join(p));
    }
    let load_back = |detail: String| ImportError::LoadBack {
        bundle: bundle_name.clone(),
        detail,
    };
    match crate::spec::load_str(&text, "(import)", base) {
        Ok(loaded) if loaded == expected => {}
        Ok(_) => return Err(load_back(String::new())),
        Err(e) => return Err(load_back(format!(": {e}"))),
    }
    Ok(Imported {
        spec,
        seccomp: bundle.seccomp,
        warnings,
        text,
    })
}
