//! Provision steps: the definition's `run_shell` scripts, run once per root filesystem,
//! each as a container of its own (the definition's namespaces, capabilities, seccomp
//! filter and devices; root inside) whose root is the base itself, writable: never as
//! plain host root in a chroot. What ran is recorded next to the root, outside it
//! (`.<root>.provisioned.json`, tied to the root directory's inode), so nothing a
//! container writes can make a step run again or be skipped; a lock beside it keeps two
//! launches of one definition from provisioning at once.
//!
//! The supervisor is multi-threaded and must not launch in-process (the multi-thread
//! rule), so each step runs in the hidden single-threaded `__provision` helper.

use super::bootstrap::BootstrapError;
use super::{helper, Runtime};
use crate::launcher::RootAccess;
use crate::spec::{ContainerSpec, ProvisionStep};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Exit code of the helper when the step's container could not start.
pub const LAUNCH_FAILED: i32 = 125;

/// What the helper gets on stdin: the definition and the step to run.
#[derive(Debug, Serialize, Deserialize)]
pub struct Job {
    /// The definition (its sandbox settings).
    pub spec: ContainerSpec,
    /// The step.
    pub step: ProvisionStep,
    /// For an image's root: the directory whose `upper` collects what the steps write
    /// (the image's layers stay read-only below); `None`: the base itself is written.
    #[serde(default)]
    pub layer: Option<PathBuf>,
}

/// The record of what ran in one root.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Record {
    /// Device and inode of the root directory the steps ran in: a rebuilt root (new
    /// inode) starts over.
    root: (u64, u64),
    /// Step name → digest of the script that ran.
    steps: BTreeMap<String, String>,
}

/// `<parent>/.<root name>.<suffix>`: beside the root, outside it.
fn beside(root: &Path, suffix: &str) -> PathBuf {
    let name = root
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "rootfs".into());
    root.parent()
        .unwrap_or(Path::new("/"))
        .join(format!(".{name}.{suffix}"))
}

/// Where the record of `root` lives.
pub fn record_path(root: &Path) -> PathBuf {
    beside(root, "provisioned.json")
}

fn root_id(root: &Path) -> std::io::Result<(u64, u64)> {
    let md = std::fs::metadata(root)?;
    Ok((md.dev(), md.ino()))
}

/// Runs the steps of `spec` not yet run in its root (`force`: all of them), in order,
/// each in its own container through the `__provision` helper. Returns the names of the
/// steps that ran. `progress` copies their output to stderr.
pub fn provision(
    rt: &Runtime,
    spec: &ContainerSpec,
    force: bool,
    progress: bool,
) -> Result<Vec<String>, BootstrapError> {
    let root = &spec.rootfs.path;
    let fail = |step: &str, detail: String| BootstrapError::Provision {
        root: root.display().to_string(),
        step: step.to_string(),
        detail,
    };
    if spec.provision.is_empty() {
        return Ok(Vec::new());
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(beside(root, "lock"))
        .map_err(|e| fail("-", format!("open the provision lock: {e}")))?;
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| fail("-", format!("take the provision lock: {e}")))?;
    let id = root_id(root).map_err(|e| fail("-", format!("{}: {e}", root.display())))?;
    let path = record_path(root);
    let mut record = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
        .filter(|r| r.root == id)
        .unwrap_or(Record {
            root: id,
            steps: BTreeMap::new(),
        });
    let mut ran = Vec::new();
    for step in &spec.provision {
        let digest = crate::spec::digest(&step.script);
        if !force && record.steps.get(&step.name) == Some(&digest) {
            continue;
        }
        if progress {
            eprintln!(
                "haconiwa: provision step '{}' in {} ...",
                step.name,
                root.display()
            );
        }
        run_step(rt, spec, step, None, progress).map_err(|d| fail(&step.name, d.to_string()))?;
        record.steps.insert(step.name.clone(), digest);
        let text =
            serde_json::to_vec_pretty(&record).map_err(|e| fail(&step.name, e.to_string()))?;
        super::state::write_atomic(&path, &text).map_err(|e| {
            fail(
                &step.name,
                format!("record the step in {}: {e}", path.display()),
            )
        })?;
        ran.push(step.name.clone());
    }
    Ok(ran)
}

/// Why a step did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum StepFailure {
    /// Its container could not start, or the helper did not answer.
    #[error(transparent)]
    Helper(#[from] helper::HelperError),
    /// It ran and failed.
    #[error("exit status {code}: {output}")]
    Exit {
        /// Its exit code.
        code: i32,
        /// The end of what it printed.
        output: String,
    },
}

/// Runs one step through the helper.
fn run_step(
    rt: &Runtime,
    spec: &ContainerSpec,
    step: &ProvisionStep,
    layer: Option<&Path>,
    progress: bool,
) -> Result<(), StepFailure> {
    let request = helper::Request::Provision {
        place: helper::Place::of(rt),
        job: Box::new(Job {
            spec: spec.clone(),
            step: step.clone(),
            layer: layer.map(Path::to_path_buf),
        }),
    };
    let (reply, output) = helper::call(&request)?;
    if progress {
        let _ = std::io::stderr().write_all(&output);
    }
    match reply {
        helper::Reply::Ran(0) => Ok(()),
        helper::Reply::Ran(code) => Err(StepFailure::Exit {
            code,
            output: helper::tail(&output),
        }),
        other => Err(StepFailure::Helper(helper::HelperError::NoReply {
            verb: "__provision",
            status: format!("unexpected reply {other:?}"),
            stderr: helper::tail(&output),
        })),
    }
}

/// The helper's side: runs the step as a foreground container over the writable base
/// and returns its exit code. Single-threaded process only.
pub fn run_job(rt: &Runtime, job: Job) -> Result<i32, super::RuntimeError> {
    let mut spec = job.spec;
    spec.name = format!("provision-{}", std::process::id());
    spec.init_command = vec![
        "/bin/sh".into(),
        "-e".into(),
        "-c".into(),
        job.step.script.clone(),
    ];
    // Root inside the sandbox, as the original's provisioning was; the rest as defined.
    spec.uid = None;
    spec.gid = None;
    spec.groups.clear();
    spec.daemonize = false;
    spec.rootfs.readonly = false;
    let root = match job.layer {
        Some(dir) => RootAccess::Layer(dir),
        None => RootAccess::Writable,
    };
    let exit = rt.run_foreground_with(&spec, root)?;
    Ok(exit.code)
}

/// For a container of an image (`spec` resolved: its image pinned, its layers set): the
/// definition's provision steps make one more read-only layer on top of the image's,
/// made once per image and list of steps (its id is their digest) in the image store
/// and shared by every container of the definition; the image's own layers are never
/// written. Returns the spec with that layer on top. A step that fails leaves nothing.
pub fn provision_image(
    rt: &Runtime,
    spec: &ContainerSpec,
    progress: bool,
) -> Result<ContainerSpec, BootstrapError> {
    use crate::image::{store::remove_tree, Digest, Store};
    if spec.provision.is_empty() {
        return Ok(spec.clone());
    }
    let image = spec.image.clone().unwrap_or_default();
    let fail = |step: &str, detail: String| BootstrapError::Provision {
        root: format!("image {image}"),
        step: step.to_string(),
        detail,
    };
    let manifest = crate::image::config::pinned_manifest(spec)
        .ok_or_else(|| fail("-", "the image is not resolved".into()))?;
    let store = Store::open(&spec.rootfs.path).map_err(|e| fail("-", e.to_string()))?;
    let steps: String = spec
        .provision
        .iter()
        .map(|s| format!("{}\n{}\n", s.name, crate::spec::digest(&s.script)))
        .collect();
    let id = Digest::of(format!("haconiwa provision {manifest}\n{steps}").as_bytes());
    let _work = store
        .work_lock("layer", &id)
        .map_err(|e| fail("-", e.to_string()))?;
    if !store.has_layer(&id) {
        let ws = store
            .layer_workspace(&id)
            .map_err(|e| fail("-", e.to_string()))?;
        let made = (|| {
            for step in &spec.provision {
                if progress {
                    eprintln!(
                        "haconiwa: provision step '{}' on image {image} ...",
                        step.name
                    );
                }
                run_step(rt, spec, step, Some(&ws), progress)
                    .map_err(|d| fail(&step.name, d.to_string()))?;
            }
            // What the steps wrote (overlayfs' whiteouts and opaque directories
            // included) is the layer.
            let diff = ws.join("diff");
            let _ = std::fs::remove_dir(&diff);
            std::fs::rename(ws.join("upper"), &diff)
                .map_err(|e| fail("-", format!("keep what the steps wrote: {e}")))?;
            for d in ["work", "merged"] {
                let _ = remove_tree(&ws.join(d));
            }
            if let Ok(f) = std::fs::File::open(&diff) {
                let _ = rustix::fs::syncfs(&f);
            }
            store
                .commit_layer(&ws, &id, &id)
                .map_err(|e| fail("-", e.to_string()))
        })();
        if let Err(e) = made {
            let _ = remove_tree(&ws);
            return Err(e);
        }
    }
    let mut out = spec.clone();
    let link = store
        .layer_link(&id)
        .map_err(|e| fail("-", e.to_string()))?;
    out.rootfs.layers.insert(0, link);
    Ok(out)
}
