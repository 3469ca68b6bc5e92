//! runc's command line in front of the launcher (`haconiwa oci …`, or the binary
//! called as `haconiwa-runc`): what podman, conmon and containerd's shim call. Errors
//! go to stderr as one line and, with `--log`, to that file as runc writes them
//! (`--log-format json`: one JSON object per line, which containerd reads back).

use crate::oci::lifecycle::{self, CreateOptions, OciError};
use crate::oci::state::{Root, DEFAULT_ROOT};
use crate::oci::{defaults, state::StateReport};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::path::PathBuf;

/// The name that makes the binary speak runc's command line.
pub const RUNC_NAME: &str = "haconiwa-runc";

/// runc's command line, as `haconiwa-runc`.
#[derive(Debug, Parser)]
#[command(
    name = "haconiwa-runc",
    version,
    about = "haconiwa's launcher as an OCI runtime, with runc's command line (docs/oci.md)"
)]
pub struct RuncCli {
    #[command(flatten)]
    pub args: OciArgs,
}

/// The global flags and the command.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = false)]
pub struct OciArgs {
    /// Where the runtime keeps its containers' records.
    #[arg(long, default_value = DEFAULT_ROOT)]
    pub root: PathBuf,
    /// Also write errors to this file (as containerd and conmon read them).
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// The form of --log's lines.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Manage cgroups through systemd (not supported: refused with an error).
    #[arg(long)]
    pub systemd_cgroup: bool,
    /// More output (accepted; errors are always printed).
    #[arg(long)]
    pub debug: bool,
    /// Rootless mode (only `false`/`auto` as root are accepted).
    #[arg(long)]
    pub rootless: Option<String>,
    #[command(subcommand)]
    pub command: OciCommand,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `time="…" level=error msg="…"`.
    Text,
    /// `{"level":"error","msg":"…","time":"…"}`.
    Json,
}

/// `create`'s and `run`'s flags.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The container's id.
    pub id: String,
    /// The bundle directory (config.json and the root filesystem).
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Unix socket to receive the terminal's master end (with process.terminal).
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Write the container process's pid here.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Accepted for runc's callers: pivot_root is always used (never a plain chroot,
    /// which root inside escapes).
    #[arg(long)]
    pub no_pivot: bool,
    /// Accepted for runc's callers (no session keyring is made).
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass this many descriptors from 3 on to the process.
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
}

/// `update`'s flags: a `linux.resources` JSON file, or runc's single-limit flags on
/// top of it.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The container's id.
    pub id: String,
    /// A runtime-spec `linux.resources` JSON file (`-`: standard input).
    #[arg(short, long)]
    pub resources: Option<PathBuf>,
    /// Memory limit in bytes (suffixes k, m, g; -1: unlimited).
    #[arg(short, long, allow_hyphen_values = true)]
    pub memory: Option<String>,
    /// Memory soft limit in bytes.
    #[arg(long, allow_hyphen_values = true)]
    pub memory_reservation: Option<String>,
    /// Memory plus swap limit in bytes.
    #[arg(long, allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// CPU shares (relative weight).
    #[arg(long)]
    pub cpu_share: Option<u64>,
    /// CPU CFS quota in microseconds per period (-1: none).
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CPU CFS period in microseconds.
    #[arg(long)]
    pub cpu_period: Option<u64>,
    /// CPUs the container may use (0-3, 0,1).
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes the container may use.
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Maximum number of processes (-1: unlimited).
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum OciCommand {
    /// Create a container from a bundle; its process waits for `start`.
    Create(CreateArgs),
    /// Run the process of a created container.
    Start {
        /// The container's id.
        id: String,
    },
    /// Print the container's state (runtime-spec's JSON).
    State {
        /// The container's id.
        id: String,
    },
    /// Send a signal (default SIGTERM; a name with or without SIG, or a number).
    Kill {
        /// The container's id.
        id: String,
        /// The signal.
        #[arg(default_value = "SIGTERM")]
        signal: String,
        /// Signal every process of the container.
        #[arg(short, long)]
        all: bool,
    },
    /// Remove a stopped container (or a running one with --force).
    Delete {
        /// The container's id.
        id: String,
        /// Kill it first if it runs; no error if it does not exist.
        #[arg(short, long)]
        force: bool,
    },
    /// Create and start a container, and wait for it (unless --detach).
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Return once it runs.
        #[arg(short, long)]
        detach: bool,
        /// Keep the container's record after it exits (accepted; it is deleted).
        #[arg(long)]
        keep: bool,
    },
    /// List the containers.
    List {
        /// table or json.
        #[arg(short, long, default_value = "table")]
        format: String,
        /// Only the ids.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Write a default config.json into the bundle directory.
    Spec {
        /// The bundle directory.
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        /// Accepted (a rootless config is not generated).
        #[arg(long)]
        rootless: bool,
    },
    /// Print what this runtime supports (runtime-spec's features JSON).
    Features,
    /// Freeze every process of a running container (the cgroup freezer).
    Pause {
        /// The container's id.
        id: String,
    },
    /// Thaw a paused container.
    Resume {
        /// The container's id.
        id: String,
    },
    /// List the container's processes.
    Ps {
        /// The container's id.
        id: String,
        /// table or json (the pids).
        #[arg(short, long, default_value = "table")]
        format: String,
    },
    /// Change a container's cgroup limits (memory, cpu, cpuset, pids).
    Update(UpdateArgs),
    /// Run another process in a running container.
    Exec {
        /// The container's id.
        id: String,
        /// The command (when there is no --process).
        command: Vec<String>,
        /// A runtime-spec `process` JSON file: the whole process.
        #[arg(short, long)]
        process: Option<PathBuf>,
        /// Return once the process runs.
        #[arg(short, long)]
        detach: bool,
        /// Write the process's pid here.
        #[arg(long)]
        pid_file: Option<PathBuf>,
        /// Add an environment variable (KEY=VALUE).
        #[arg(short, long)]
        env: Vec<String>,
        /// Working directory.
        #[arg(long)]
        cwd: Option<String>,
        /// UID[:GID].
        #[arg(short, long)]
        user: Option<String>,
        /// Give the process a terminal (its master end goes to --console-socket).
        #[arg(short, long)]
        tty: bool,
        /// Unix socket to receive the terminal's master end.
        #[arg(long)]
        console_socket: Option<PathBuf>,
        /// Accepted for runc's callers (no SELinux here).
        #[arg(long)]
        process_label: Option<String>,
        /// Accepted for runc's callers (no AppArmor here).
        #[arg(long)]
        apparmor: Option<String>,
        /// Accepted: no_new_privs comes from the process.
        #[arg(long)]
        no_new_privs: bool,
        /// Pass this many descriptors from 3 on to the process (the others are closed).
        #[arg(long, default_value_t = 0)]
        preserve_fds: u32,
    },
}

/// Runs `args`; returns the exit code.
pub fn run(args: OciArgs) -> i32 {
    let log = Log {
        file: args.log.clone(),
        format: args.log_format,
    };
    match dispatch(args) {
        Ok(code) => code,
        Err(e) => {
            log.error(&e.to_string());
            1
        }
    }
}

/// The entry point of the binary called as `haconiwa-runc`.
pub fn main_as_runc() -> i32 {
    run(RuncCli::parse().args)
}

struct Log {
    file: Option<PathBuf>,
    format: LogFormat,
}

impl Log {
    fn error(&self, msg: &str) {
        eprintln!(
            "haconiwa-runc: {}",
            crate::spec::names::escape_controls(msg)
        );
        self.write("error", msg);
    }

    fn warn(&self, msg: &str) {
        eprintln!("haconiwa-runc: warning: {msg}");
        self.write("warning", msg);
    }

    fn write(&self, level: &str, msg: &str) {
        let Some(path) = &self.file else { return };
        let time = crate::oci::state::rfc3339_now();
        let line = match self.format {
            LogFormat::Json => {
                serde_json::json!({ "level": level, "msg": msg, "time": time }).to_string()
            }
            LogFormat::Text => format!("time=\"{time}\" level={level} msg={msg:?}"),
        };
        let opened = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path);
        if let Ok(mut f) = opened {
            let _ = writeln!(f, "{line}");
        }
    }
}

fn create_options(c: &CreateArgs) -> CreateOptions {
    CreateOptions {
        pid_file: c.pid_file.clone(),
        console_socket: c.console_socket.clone(),
        preserve_fds: c.preserve_fds,
    }
}

fn print_json(v: &impl serde::Serialize) -> Result<(), OciError> {
    let text = serde_json::to_string_pretty(v).map_err(|e| OciError::Unsupported(e.to_string()))?;
    println!("{text}");
    Ok(())
}

fn dispatch(args: OciArgs) -> Result<i32, OciError> {
    if args.systemd_cgroup {
        return Err(OciError::Unsupported(
            "--systemd-cgroup: cgroups through systemd are not supported; use the cgroupfs manager (cgroup_manager = \"cgroupfs\" in containers.conf)".into(),
        ));
    }
    if args.rootless.as_deref() == Some("true") {
        return Err(OciError::Unsupported(
            "--rootless true: rootless containers are not supported".into(),
        ));
    }
    let root = Root::new(&args.root);
    let log = Log {
        file: args.log.clone(),
        format: args.log_format,
    };
    let mut warn = |w: &str| log.warn(w);
    match args.command {
        OciCommand::Create(c) => {
            lifecycle::create(&root, &c.id, &c.bundle, &create_options(&c), &mut warn)?;
        }
        OciCommand::Start { id } => lifecycle::start(&root, &id, &mut warn)?,
        OciCommand::State { id } => print_json(&lifecycle::state(&root, &id)?)?,
        OciCommand::Kill { id, signal, all } => {
            let n = crate::spec::signal::number(&signal)
                .ok_or_else(|| OciError::Unsupported(format!("unknown signal {signal}")))?;
            lifecycle::kill(&root, &id, n, all)?;
        }
        OciCommand::Delete { id, force } => lifecycle::delete(&root, &id, force, &mut warn)?,
        OciCommand::Run { create, detach, .. } => {
            return lifecycle::run(
                &root,
                &create.id,
                &create.bundle,
                &create_options(&create),
                detach,
                &mut warn,
            );
        }
        OciCommand::List { format, quiet } => list(&root, &format, quiet)?,
        OciCommand::Spec { bundle, .. } => {
            let path = bundle.join("config.json");
            if path.exists() {
                return Err(OciError::Unsupported(format!(
                    "{}: already exists; remove it first",
                    path.display()
                )));
            }
            let text = serde_json::to_string_pretty(&defaults::config("rootfs"))
                .map_err(|e| OciError::Unsupported(e.to_string()))?;
            std::fs::write(&path, text + "\n")
                .map_err(|e| OciError::Unsupported(format!("{}: {e}", path.display())))?;
        }
        OciCommand::Features => print_json(&defaults::features())?,
        OciCommand::Pause { id } => lifecycle::pause(&root, &id, true)?,
        OciCommand::Resume { id } => lifecycle::pause(&root, &id, false)?,
        OciCommand::Ps { id, format } => ps(&root, &id, &format)?,
        OciCommand::Update(u) => {
            lifecycle::update(&root, &u.id, &update_resources(&u)?, &mut warn)?
        }
        OciCommand::Exec {
            id,
            command,
            process,
            detach,
            pid_file,
            env,
            cwd,
            user,
            tty,
            console_socket,
            preserve_fds,
            ..
        } => {
            let opts = lifecycle::ExecOptions {
                process,
                args: command,
                env,
                cwd,
                user,
                terminal: tty,
                console_socket,
                detach,
                pid_file,
                preserve_fds,
            };
            return lifecycle::exec(&root, &id, &opts, &mut warn);
        }
    }
    Ok(0)
}

fn list(root: &Root, format: &str, quiet: bool) -> Result<(), OciError> {
    let ids = root
        .ids()
        .map_err(|e| OciError::Unsupported(format!("--root: {e}")))?;
    let reports: Vec<StateReport> = ids
        .iter()
        .filter_map(|id| lifecycle::state(root, id).ok())
        .collect();
    if quiet {
        for r in &reports {
            println!("{}", r.id);
        }
        return Ok(());
    }
    match format {
        "json" => print_json(&reports),
        "table" => {
            println!(
                "{:<24} {:<8} {:<10} {:<40} {:<31} OWNER",
                "ID", "PID", "STATUS", "BUNDLE", "CREATED"
            );
            for r in &reports {
                println!(
                    "{:<24} {:<8} {:<10} {:<40} {:<31} root",
                    r.id,
                    r.pid,
                    r.status,
                    r.bundle.display(),
                    r.created
                );
            }
            Ok(())
        }
        other => Err(OciError::Unsupported(format!(
            "--format {other}: use table or json"
        ))),
    }
}

fn ps(root: &Root, id: &str, format: &str) -> Result<(), OciError> {
    let pids = lifecycle::pids(root, id)?;
    match format {
        "json" => print_json(&pids),
        "table" => {
            println!("{:<8} CMD", "PID");
            for p in pids {
                let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                println!(
                    "{p:<8} {}",
                    crate::spec::names::escape_controls(cmd.trim_end())
                );
            }
            Ok(())
        }
        other => Err(OciError::Unsupported(format!(
            "--format {other}: use table or json"
        ))),
    }
}

/// `update`'s request as one `linux.resources`: the file's, then each flag over it.
fn update_resources(u: &UpdateArgs) -> Result<oci_spec::runtime::LinuxResources, OciError> {
    let bad = |what: String| OciError::Unsupported(format!("update: {what}"));
    let mut v: serde_json::Value = match &u.resources {
        None => serde_json::json!({}),
        Some(path) => {
            let name = path.display().to_string();
            let text = if name == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(path)
            }
            .map_err(|e| bad(format!("{name}: {e}")))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| bad(format!("{name}: {e}")))?;
            if !v.is_object() {
                return Err(bad(format!("{name}: not a linux.resources object")));
            }
            v
        }
    };
    let bytes = |flag: &str, s: &str| -> Result<i64, OciError> {
        match crate::spec::cgroup::parse_bytes(s) {
            Ok(None) => Ok(-1),
            Ok(Some(n)) => i64::try_from(n).map_err(|_| bad(format!("--{flag} {s}: too large"))),
            Err(e) => Err(bad(format!("--{flag} {s}: {e}"))),
        }
    };
    let mut put = |section: &str, key: &str, value: serde_json::Value| {
        let slot = &mut v[section];
        if !(slot.is_null() || slot.is_object()) {
            return Err(bad(format!("{section}: not an object")));
        }
        slot[key] = value;
        Ok(())
    };
    for (flag, key, value) in [
        ("memory", "limit", &u.memory),
        ("memory-reservation", "reservation", &u.memory_reservation),
        ("memory-swap", "swap", &u.memory_swap),
    ] {
        if let Some(s) = value {
            put("memory", key, bytes(flag, s)?.into())?;
        }
    }
    if let Some(n) = u.cpu_share {
        put("cpu", "shares", n.into())?;
    }
    if let Some(n) = u.cpu_quota {
        put("cpu", "quota", n.into())?;
    }
    if let Some(n) = u.cpu_period {
        put("cpu", "period", n.into())?;
    }
    if let Some(s) = &u.cpuset_cpus {
        put("cpu", "cpus", s.clone().into())?;
    }
    if let Some(s) = &u.cpuset_mems {
        put("cpu", "mems", s.clone().into())?;
    }
    if let Some(n) = u.pids_limit {
        put("pids", "limit", n.into())?;
    }
    serde_json::from_value(v).map_err(|e| bad(format!("not a linux.resources object: {e}")))
}
