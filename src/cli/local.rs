//! Commands that act on this host only: new, create, provision, show, run, ps, kill,
//! logs, attach, rm, and the hidden monitor helper.

use super::{template, Cli, CliError, Command};
use crate::runtime::state::Status;
use crate::runtime::{bootstrap, provision, Runtime, RuntimeError};
use crate::spec::names::escape_controls;
use crate::spec::{self, ContainerSpec, Seccomp};
use std::path::Path;
use std::time::Duration;

/// Exit code for a container that could not be started (as docker run).
const LAUNCH_FAILED: i32 = 125;

fn load(file: &Path) -> Result<ContainerSpec, CliError> {
    Ok(spec::load_file(file)?)
}

/// This host's containers as the flags and environment place them.
pub(super) fn runtime_of(cli: &Cli) -> Runtime {
    Runtime::new(
        cli.globals
            .state_dir
            .clone()
            .unwrap_or_else(|| crate::runtime::DEFAULT_STATE_DIR.into()),
        cli.globals
            .cgroup_parent
            .clone()
            .unwrap_or_else(|| "haconiwa".into()),
    )
}

/// Runs one command and returns the process exit code.
// Long by nature: a flat dispatcher, one short arm per local command.
pub fn dispatch(cli: Cli) -> Result<i32, CliError> {
    let rt = runtime_of(&cli);
    let images = cli
        .globals
        .image_store
        .clone()
        .unwrap_or_else(|| crate::image::DEFAULT_STORE.into());
    match cli.command {
        Command::New {
            file,
            name,
            root,
            image,
            force,
        } => {
            let image = image
                .map(|i| crate::spec::ImageRef::parse(&i).map(|r| r.to_string()))
                .transpose()?;
            if file.exists() && !force {
                return Err(format!("{} exists; pass --force to overwrite", file.display()).into());
            }
            let name = name.unwrap_or_else(|| {
                file.file_stem()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_else(|| "container".into())
            });
            std::fs::write(&file, template::boilerplate(&name, &root, image.as_deref()))
                .map_err(|e| format!("write {}: {e}", file.display()))?;
            println!(
                "wrote {}; next: haconiwa create {0} && haconiwa run {0}",
                file.display()
            );
            Ok(0)
        }
        Command::Create { file } => {
            let spec = load(&file)?;
            if let Some(image) = &spec.image {
                let r = with_image(&rt, &images, spec.clone())?;
                println!(
                    "image {} is here ({} layers)",
                    r.image.as_deref().unwrap_or(image),
                    r.rootfs.layers.len()
                );
                return Ok(0);
            }
            match bootstrap::ensure(&spec, true)? {
                bootstrap::Outcome::Existed => {
                    println!("root filesystem {} exists", spec.rootfs.path.display())
                }
                bootstrap::Outcome::Built => {
                    println!("built root filesystem {}", spec.rootfs.path.display())
                }
            }
            let ran = provision::provision(&rt, &spec, false, true)?;
            if !ran.is_empty() {
                println!("provisioned: {}", ran.join(", "));
            }
            Ok(0)
        }
        Command::Provision { file } => {
            let spec = load(&file)?;
            if spec.image.is_some() {
                return Err("the provision steps of an image's definition make a layer of their own, once per image and list of steps (`haconiwa create` makes it): change a step, or the image, to make a new one".into());
            }
            if !spec.rootfs.path.is_dir() {
                return Err(format!(
                    "root filesystem {} is missing; run `haconiwa create {}` first",
                    spec.rootfs.path.display(),
                    file.display()
                )
                .into());
            }
            let ran = provision::provision(&rt, &spec, true, true)?;
            println!(
                "provisioned: {}",
                if ran.is_empty() {
                    "nothing to do".into()
                } else {
                    ran.join(", ")
                }
            );
            Ok(0)
        }
        Command::ImportBundle {
            dir,
            output,
            name,
            force,
        } => import_bundle(&dir, output.as_deref(), name, force),
        Command::Show { file, json, oci } => {
            let spec = load(&file)?;
            // With the image here, what a container really gets: its configuration
            // applied, its labels.
            let local = spec.image.as_ref().and_then(|r| {
                let store = crate::image::Store::open(&images).ok()?;
                let resolved = crate::image::config::load(&store, r).ok()?;
                let applied = crate::image::config::apply(&store, &spec).ok()?;
                Some((applied, crate::image::config::labels(&resolved)))
            });
            let (shown, labels) = match local {
                Some((s, l)) => (s, Some(l)),
                None => (spec, None),
            };
            if oci {
                let e = crate::oci::export::config_of(&shown)?;
                for w in &e.warnings {
                    eprintln!("haconiwa: warning: {w}");
                }
                println!("{}", serde_json::to_string_pretty(&e.config)?);
            } else if json {
                println!("{}", serde_json::to_string_pretty(&shown)?);
            } else {
                print_spec(&shown);
                match (&shown.image, labels) {
                    (Some(_), Some(l)) => println!(
                        "{:<14} {}",
                        "image labels:",
                        escape_controls(
                            &l.iter()
                                .map(|(k, v)| format!("{k}={v}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    ),
                    (Some(i), None) => println!(
                        "{:<14} (image {} is not in the store here: `haconiwa image pull {0}` shows what it sets)",
                        "image labels:",
                        escape_controls(i)
                    ),
                    _ => {}
                }
            }
            Ok(0)
        }
        Command::Run(super::RunArgs {
            file,
            daemon,
            foreground,
            name,
            create,
            command,
        }) => {
            let mut spec = load(&file)?;
            if !spec.volumes.is_empty() || !spec.secrets.is_empty() {
                return Err(format!(
                    "{}: c.volume and c.secret are the cluster's: run it with `haconiwa spawn`",
                    file.display()
                )
                .into());
            }
            if let Some(n) = name {
                spec.name = n;
            }
            if !command.is_empty() {
                spec.init_command = command;
            }
            if create && spec.image.is_none() {
                bootstrap::ensure(&spec, true)?;
                provision::provision(&rt, &spec, false, true)?;
            }
            let spec = with_image(&rt, &images, spec)?;
            let detach = daemon || (spec.daemonize && !foreground);
            run(&rt, &spec, detach)
        }
        Command::Ps { json } => {
            let list = rt.list();
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(0);
            }
            println!(
                "{:<28} {:>8} {:<10} {:>5} {:<20} COMMAND",
                "NAME", "PID", "STATUS", "EXIT", "CREATED"
            );
            for c in list {
                let s = &c.state;
                let status = match s.status {
                    Status::Running => match &c.health {
                        Some(h) => h.status.clone(),
                        None => "running".to_string(),
                    },
                    Status::Creating => "creating".to_string(),
                    Status::Exited if s.oom_killed => "oom-killed".to_string(),
                    Status::Exited if s.lost => "lost".into(),
                    Status::Exited => "exited".to_string(),
                };
                println!(
                    "{:<28} {:>8} {:<10} {:>5} {:<20} {}",
                    s.name,
                    s.pid,
                    status,
                    s.exit_code
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "-".into()),
                    format_time(s.created_at),
                    escape_controls(&c.command.join(" "))
                );
            }
            Ok(0)
        }
        Command::Kill {
            name,
            signal,
            timeout,
        } => {
            let sig = match signal {
                Some(s) => parse_signal(&s)?,
                None => rt.stop_signal(&name),
            };
            if !(0.0..=86400.0).contains(&timeout) {
                return Err("--timeout must be between 0 and 86400 seconds".into());
            }
            let st = rt.kill(&name, sig, Duration::from_secs_f64(timeout))?;
            match st.exit_code {
                Some(c) => println!("{name} exited with {c}"),
                None => println!("{name} signalled"),
            }
            Ok(0)
        }
        Command::Attach {
            name,
            ctty,
            command,
        } => {
            let command = if command.is_empty() {
                vec!["/bin/sh".to_string()]
            } else {
                command
            };
            if ctty {
                crate::launcher::terminal::control_stdin().map_err(|e| e.in_container(&name))?;
            }
            Ok(rt.attach(&name, &command)?)
        }
        Command::Rm { name } => {
            rt.remove(&name)?;
            println!("removed {name}");
            Ok(0)
        }
        Command::Supervisor(_)
        | Command::Spawn { .. }
        | Command::Logs { .. }
        | Command::Exec { .. }
        | Command::Stop { .. }
        | Command::Containers { .. }
        | Command::Services { .. }
        | Command::Events { .. }
        | Command::Watch(_)
        | Command::Up(_)
        | Command::Tls(_)
        | Command::Oci(_)
        | Command::Image(_)
        | Command::Volume(_)
        | Command::Secret(_)
        | Command::Down(_)
        | Command::Mirror(_)
        | Command::Cluster(_) => Err("not a local command".into()),
        // The helpers: the request on stdin, the reply on stdout (runtime::helper).
        Command::ProvisionStep | Command::Monitor | Command::Probe | Command::Remove => {
            Ok(crate::runtime::helper::serve())
        }
    }
}

/// The spec with its image applied (pulled first when the store lacks it, by a
/// `haconiwa image pull` process of its own: this one launches, so it must stay
/// single-threaded). A spec without an image is returned as it is.
fn with_image(
    rt: &Runtime,
    store_dir: &Path,
    spec: ContainerSpec,
) -> Result<ContainerSpec, CliError> {
    let Some(reference) = spec.image.clone() else {
        return Ok(spec);
    };
    let store = crate::image::Store::open(store_dir)?;
    if let Err(crate::image::ImageError::NotFound(_)) = store.find(&reference) {
        use std::os::fd::AsFd;
        use std::os::unix::process::CommandExt;
        // Its output goes to stderr: stdout is the container's.
        let err = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("dup stderr: {e}"))?;
        let status = std::process::Command::new(crate::runtime::SELF_EXE)
            .arg0("haconiwa")
            .args(["image", "pull", &reference])
            .env("HACONIWA_IMAGE_STORE", store_dir)
            .stdout(std::process::Stdio::from(err))
            .status()
            .map_err(|e| format!("start `haconiwa image pull`: {e}"))?;
        if !status.success() {
            return Err(CliError {
                message: format!("image {reference} could not be pulled (see above)"),
                code: LAUNCH_FAILED,
            });
        }
    }
    let resolved = crate::image::config::apply(&store, &spec)?;
    Ok(provision::provision_image(rt, &resolved, true)?)
}

fn run(rt: &Runtime, spec: &ContainerSpec, detach: bool) -> Result<i32, CliError> {
    let launch_failed = |e: RuntimeError| match e {
        RuntimeError::Launch(_) => CliError {
            message: e.to_string(),
            code: LAUNCH_FAILED,
        },
        other => CliError::from(other),
    };
    if detach {
        let st = rt.run_daemon(spec).map_err(launch_failed)?;
        println!(
            "{} running (pid {}); logs: haconiwa logs {0}",
            st.name, st.pid
        );
        return Ok(0);
    }
    let exit = rt.run_foreground(spec).map_err(launch_failed)?;
    if exit.oom_killed {
        eprintln!(
            "haconiwa: container {}: killed by the OOM killer (memory limit)",
            spec.name
        );
    }
    Ok(exit.code)
}

fn parse_signal(s: &str) -> Result<nix::sys::signal::Signal, CliError> {
    use std::str::FromStr;
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n)
            .map_err(|_| format!("unknown signal {s}").into());
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    nix::sys::signal::Signal::from_str(&name).map_err(|_| format!("unknown signal {s}").into())
}

fn format_time(secs: u64) -> String {
    let ago = crate::runtime::state::now_secs().saturating_sub(secs);
    match ago {
        0..=59 => format!("{ago}s ago"),
        60..=3599 => format!("{}m ago", ago / 60),
        3600..=86399 => format!("{}h ago", ago / 3600),
        _ => format!("{}d ago", ago / 86400),
    }
}

/// `show`: the resolved definition, one line per key.
// Long by nature: one line per key of the model.
fn print_spec(s: &ContainerSpec) {
    let list = |v: Vec<String>| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(", ")
        }
    };
    // Everything from the file is shown with its control characters escaped.
    let line = |key: &str, value: String| println!("{key:<14} {}", escape_controls(&value));
    line("name:", s.name.clone());
    line("hostname:", s.effective_hostname().to_string());
    line("command:", s.init_command.join(" "));
    if let Some(image) = &s.image {
        line(
            "image:",
            format!(
                "{image}{}",
                if s.rootfs.layers.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({} read-only layers, {})",
                        s.rootfs.layers.len(),
                        if s.rootfs.readonly {
                            "no writable layer"
                        } else {
                            "a writable layer per container"
                        }
                    )
                }
            ),
        );
    } else {
        line(
            "rootfs:",
            format!(
                "{} (read-only base, {})",
                s.rootfs.path.display(),
                if s.rootfs.readonly {
                    "no writable layer"
                } else {
                    "a writable layer per container"
                }
            ),
        );
    }
    line(
        "stop signal:",
        s.stop_signal.clone().unwrap_or_else(|| "SIGTERM".into()),
    );
    line(
        "bootstrap:",
        s.bootstrap
            .as_ref()
            .map(|b| b.strategy())
            .unwrap_or("-")
            .to_string(),
    );
    line(
        "provision:",
        list(s.provision.iter().map(|p| p.name.clone()).collect()),
    );
    line(
        "namespaces:",
        list(s.namespaces.unshare.iter().map(|n| n.to_string()).collect()),
    );
    line(
        "enter:",
        list(
            s.namespaces
                .enter
                .iter()
                .map(|e| format!("{}={}", e.kind, e.path.display()))
                .collect(),
        ),
    );
    line(
        "mounts:",
        list(
            s.mounts
                .iter()
                .map(|m| {
                    let kind = match &m.fstype {
                        // A host path seen inside: the operator's choice, shown plainly.
                        None => "HOST BIND ".to_string(),
                        Some(fs) => format!("{fs} "),
                    };
                    format!(
                        "{kind}{}->{}{}",
                        m.source,
                        m.target,
                        if m.readonly { " (ro)" } else { " (rw)" }
                    )
                })
                .collect(),
        ),
    );
    line(
        "cgroup:",
        list(s.cgroup.iter().map(|(k, v)| format!("{k}={v}")).collect()),
    );
    line(
        "capabilities:",
        list(
            crate::launcher::privileges::effective_set(&s.capabilities)
                .iter()
                .map(|c| c.to_string().to_lowercase())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
        ),
    );
    line(
        "ambient caps:",
        list(
            s.capabilities
                .ambient
                .iter()
                .map(|c| c.to_lowercase())
                .collect(),
        ),
    );
    line(
        "seccomp:",
        match &s.seccomp {
            Seccomp::Default => "default (Docker's default profile)".to_string(),
            Seccomp::Unconfined => "UNCONFINED (no system-call filter)".to_string(),
            Seccomp::Profile(p) => format!("profile {}", p.display()),
        },
    );
    line(
        "devices:",
        format!(
            "null, zero, full, random, urandom, tty, ptmx, pts{}",
            s.devices
                .iter()
                .map(|d| match &d.path {
                    Some(p) => format!(", {p} ({})", d.access),
                    None => format!(
                        ", {} {}:{} ({})",
                        d.kind.unwrap_or('a'),
                        d.major.map(|m| m.to_string()).unwrap_or("*".into()),
                        d.minor.map(|m| m.to_string()).unwrap_or("*".into()),
                        d.access
                    ),
                })
                .collect::<String>()
        ),
    );
    line(
        "rlimits:",
        list(
            s.rlimits
                .iter()
                .map(|r| format!("{}={:?}/{:?}", r.resource, r.soft, r.hard))
                .collect(),
        ),
    );
    line(
        "user:",
        format!("uid {} gid {}", s.uid.unwrap_or(0), s.gid.unwrap_or(0)),
    );
    line("no_new_privs:", s.no_new_privs.to_string());
    line(
        "environment:",
        list(
            s.environment
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        ),
    );
    line("workdir:", s.workdir.as_deref().unwrap_or("/").to_string());
    line(
        "labels:",
        list(s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect()),
    );
    line("daemonize:", s.daemonize.to_string());
}

/// `import-bundle`: the bundle's config as a definition, checked to load back as the
/// same container before anything is written.
fn import_bundle(
    dir: &Path,
    output: Option<&Path>,
    name: Option<String>,
    force: bool,
) -> Result<i32, CliError> {
    // Absolute: the definition names the root and binds wherever it is read from.
    let dir = &std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let name = match name {
        Some(n) => n,
        None => dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    spec::names::check("container", &name).map_err(|e| format!("{e} (give --name)"))?;
    let stem = output
        .and_then(Path::file_stem)
        .map_or(name.clone(), |s| s.to_string_lossy().into_owned());
    let seccomp_name = format!("{stem}.seccomp.json");
    let base = output.and_then(Path::parent).map(|p| {
        if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        }
    });
    let imported = crate::oci::import::import(dir, &name, &seccomp_name, base)?;
    for w in &imported.warnings {
        eprintln!("haconiwa: warning: {w}");
    }
    let text = imported.text;
    let Some(out) = output else {
        if imported.seccomp.is_some() {
            return Err("the bundle has a seccomp filter: give -o FILE so that it can be written beside the definition".into());
        }
        print!("{text}");
        return Ok(0);
    };
    let profile = base.map(|b| b.join(&seccomp_name));
    let mut files = vec![(out.to_path_buf(), text)];
    if let (Some(p), Some(json)) = (profile, imported.seccomp) {
        files.push((p, json));
    }
    for (path, _) in &files {
        if path.exists() && !force {
            return Err(
                format!("{}: already exists (--force overwrites it)", path.display()).into(),
            );
        }
    }
    for (path, body) in files {
        std::fs::write(&path, body).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(0)
}
