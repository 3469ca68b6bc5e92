//! The command line: clap commands, human tables and `--json`. No logic the libraries
//! or the API lack; errors become one line on stderr.

mod exec;
mod image;
mod local;
mod logs;
pub mod oci;
mod remote;
mod rules;
mod storage;
mod supervise;
mod template;
mod tls;
mod up;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// haconiwa: containers defined in a small DSL, run here or kept running by a cluster.
#[derive(Debug, Parser)]
#[command(name = "haconiwa", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub globals: Globals,
    #[command(subcommand)]
    pub command: Command,
}

/// The options every command takes, before or after its name.
#[derive(Debug, Args)]
pub struct Globals {
    /// State directory of local containers [default: /run/haconiwa].
    #[arg(long, global = true, env = "HACONIWA_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// The image store [default: /var/lib/haconiwa/images].
    #[arg(long, global = true, env = "HACONIWA_IMAGE_STORE")]
    pub image_store: Option<PathBuf>,
    /// Parent cgroup of local containers, in every hierarchy; its first level stays once
    /// made, as Docker's does, with two memory cgroups made ahead for the next
    /// containers (`.pool-0`, `.pool-1`; v1) [default: haconiwa].
    #[arg(long, global = true, env = "HACONIWA_CGROUP_PARENT")]
    pub cgroup_parent: Option<String>,
    /// Cluster member(s) to talk to, comma-separated (cluster commands).
    #[arg(long, global = true, env = "HACONIWA_SERVER")]
    pub server: Option<String>,
    /// Cluster token (cluster commands and the supervisor). A value given here is visible
    /// to every user of the host in `ps`: prefer --token-file or HACONIWA_TOKEN.
    #[arg(long, global = true, env = "HACONIWA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the cluster token (its first line), e.g. a 0600 file; used when no
    /// --token or HACONIWA_TOKEN is given.
    #[arg(long, global = true, env = "HACONIWA_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The cluster's CA (PEM): talk TLS to the members and check their certificates
    /// against it (cluster commands).
    #[arg(long, global = true, env = "HACONIWA_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for a cluster that verifies clients (with --key).
    #[arg(long, global = true, env = "HACONIWA_CERT")]
    pub cert: Option<PathBuf>,
    /// Key of --cert (PEM).
    #[arg(long, global = true, env = "HACONIWA_KEY")]
    pub key: Option<PathBuf>,
}

/// The arguments of `haconiwa run`, a type of their own so that a `run` line can be read
/// without the rest of the command tree (`parse`).
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The definition.
    pub file: PathBuf,
    /// Detach once the container runs.
    #[arg(short = 'D', long)]
    pub daemon: bool,
    /// Stay in the foreground even when the definition says daemonize().
    #[arg(short = 'F', long, conflicts_with = "daemon")]
    pub foreground: bool,
    /// Override the container name.
    #[arg(long)]
    pub name: Option<String>,
    /// Build a missing root filesystem first (as `create`).
    #[arg(long)]
    pub create: bool,
    /// Command to run instead of init_command.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// Every subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented boilerplate definition.
    New {
        /// The file to write (.haco).
        file: PathBuf,
        /// Container name (default: the file's stem).
        #[arg(long)]
        name: Option<String>,
        /// Root filesystem path.
        #[arg(long, default_value = crate::spec::haco::DEFAULT_ROOT, conflicts_with = "image")]
        root: String,
        /// Use this OCI image as the root (NAME[:TAG] or NAME@sha256:DIGEST).
        #[arg(long)]
        image: Option<String>,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Build the root filesystem from the definition's bootstrap recipe when it is
    /// missing, then run the provision steps not yet run.
    Create {
        /// The definition.
        file: PathBuf,
    },
    /// Rerun every provision step of a definition.
    Provision {
        /// The definition.
        file: PathBuf,
    },
    /// Print the resolved definition.
    Show {
        /// The definition.
        file: PathBuf,
        /// Stable JSON of the spec model.
        #[arg(long)]
        json: bool,
        /// The definition as an OCI runtime config (config.json); what OCI has no
        /// field for is named on stderr.
        #[arg(long, conflicts_with = "json")]
        oci: bool,
    },
    /// Turn an OCI bundle (DIR/config.json) into a .haco definition.
    ImportBundle {
        /// The bundle directory.
        dir: PathBuf,
        /// Write the definition here (and a seccomp filter beside it, FILE's name with
        /// .seccomp.json) instead of printing it.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// The container's name [default: the bundle directory's name].
        #[arg(long)]
        name: Option<String>,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Run a container here: in the foreground (exit status = the container's), or
    /// detached with -D or `daemonize()`.
    Run(RunArgs),
    /// List local containers (running and exited).
    Ps {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Signal a container (then SIGCONT to its processes, so a stopped one takes it) and
    /// wait for it to end; SIGKILL after the timeout.
    Kill {
        /// Container name.
        name: String,
        /// Signal name or number [default: the container's stop signal, else TERM].
        #[arg(short, long)]
        signal: Option<String>,
        /// Seconds to wait before SIGKILL.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
    /// Print a container's output (stdout to stdout, stderr to stderr): a detached
    /// container of this host, or any container of the cluster (asked of --server,
    /// streamed from its node).
    Logs {
        /// Container name here, or a cluster container's id.
        #[arg(required_unless_present = "rule")]
        name: Option<String>,
        /// Keep printing new output until the container ends.
        #[arg(short, long)]
        follow: bool,
        /// Only its last N lines.
        #[arg(long, value_name = "N")]
        tail: Option<usize>,
        /// Only output since a time: a duration back from now (90s, 10m, 2h, 1d) or
        /// RFC 3339 in UTC (2026-12-06T07:10:00Z).
        #[arg(long, value_name = "T")]
        since: Option<String>,
        /// Only its stderr.
        #[arg(long)]
        stderr: bool,
        /// Every container of this rule (cluster), each line prefixed with its id.
        #[arg(long, value_name = "NAME", conflicts_with = "name")]
        rule: Option<String>,
    },
    /// Run a command inside a running container (default /bin/sh).
    Attach {
        /// Container name.
        name: String,
        /// Make stdin, a terminal, the command's controlling terminal (a new session):
        /// how the supervisor runs `exec -t`.
        #[arg(long)]
        ctty: bool,
        /// Command and arguments.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Run a command in a running cluster container, from any member: its stdio (or,
    /// with -t, a terminal) over the cluster port; exits with the command's status.
    Exec {
        /// The container's id.
        id: String,
        /// Pass this terminal's stdin to the command (without it, its stdin is empty).
        #[arg(short, long)]
        interactive: bool,
        /// Run it on a terminal (with -i and a terminal here: raw, resized with it).
        #[arg(short, long)]
        tty: bool,
        /// Command and arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Remove the record of an exited container.
    Rm {
        /// Container name.
        name: String,
    },
    /// Run this host's supervisor (joins or starts a cluster).
    Supervisor(Box<supervise::SupervisorArgs>),
    /// Start a container somewhere in the cluster: on an up node with the labels asked
    /// for whose `[policy]` allows what the definition asks (else refused, with each
    /// node's reason).
    Spawn {
        /// The definition (.haco), sent with the request.
        file: PathBuf,
        /// Place it on this node.
        #[arg(long)]
        node: Option<u64>,
        /// Place it only on a node with this label (KEY=VALUE, repeatable).
        #[arg(long = "node-label")]
        node_labels: Vec<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Stop a cluster container.
    Stop {
        /// Container id.
        id: String,
    },
    /// List the cluster's containers: id, definition, node, desired, state, health (of
    /// those with a check), pid, exit code, rule.
    Containers {
        /// Include exited and lost ones.
        #[arg(long)]
        all: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// List the services of the cluster network: each rule (or definition run outside
    /// one), its DNS name and the addresses that name answers with (the copies that run
    /// and are healthy), and each member's subnet.
    Services {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Stream the cluster's committed changes.
    Events {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Replay the committed events after this log index (those the member still
        /// keeps: the last 10,000), then follow.
        #[arg(long)]
        since: Option<u64>,
        /// Keep following: reconnect (to any of --server) when the stream breaks and
        /// resume after the last event printed, without gaps or duplicates.
        #[arg(short, long)]
        follow: bool,
    },
    /// Cluster membership and health.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Watcher rules the leader keeps true.
    #[command(subcommand)]
    Watch(WatchCommand),
    /// This host's OCI images: pull, import, ls, inspect, rm, prune (docs/images.md).
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Named volumes: storage on one node that outlives the containers mounting it.
    #[command(subcommand)]
    Volume(storage::VolumeCommand),
    /// Secrets: values sealed with the cluster key, read by containers at /run/secrets.
    #[command(subcommand)]
    Secret(storage::SecretCommand),
    /// Certificates for the cluster's TLS: a cluster CA, node and client certificates.
    #[command(subcommand)]
    Tls(tls::TlsCommand),
    /// The launcher as an OCI runtime, with runc's command line (also reached as the
    /// binary named `haconiwa-runc`; docs/oci.md).
    Oci(oci::OciArgs),
    /// The optional etcd mirror of the cluster state (docs/etcd.md).
    #[command(subcommand)]
    Mirror(MirrorCommand),
    /// A whole local cluster in one command: N supervisors on 127.0.0.x talking mutual
    /// TLS, the example root filesystem, a watch file applied, a dashboard on port + 80,
    /// a live table until Ctrl-C.
    Up(up::UpArgs),
    /// Stop a cluster started with `haconiwa up --detach`.
    Down(up::DownArgs),
    /// Internal: start a detached container from a JSON spec on stdin.
    #[command(name = "__monitor", hide = true)]
    Monitor,
    /// Internal: run one provision step (JSON job on stdin) in its sandbox.
    #[command(name = "__provision", hide = true)]
    ProvisionStep,
    /// Internal: probe a running container's health once (JSON request on stdin).
    #[command(name = "__probe", hide = true)]
    Probe,
    /// Internal: empty the trash of finished containers' directories and fill a cgroup
    /// parent's pool, until none came for a second (JSON request on stdin).
    #[command(name = "__remove", hide = true)]
    Remove,
}

/// `haconiwa watch ...`
#[derive(Debug, Subcommand)]
pub enum WatchCommand {
    /// Register a rule (replaces one of the same name); the .haco files it names are
    /// read next to it and sent along.
    Apply {
        /// The .watch file.
        file: PathBuf,
        /// Rule name (default: the file's stem).
        #[arg(long)]
        name: Option<String>,
    },
    /// List rules: name, version and how its rollout stands (deploying, stable,
    /// failed), digest, last evaluation, their containers (active, running, healthy,
    /// restarting, outdated: a rollout under way or halted), last error.
    Ls {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// A rule's versions (the last 10, the newest stable one always kept): number,
    /// time applied, status (deploying, stable, failed, superseded), digests, and what
    /// changed from one to the next (a line diff of the rule and its definitions).
    History {
        /// Rule name.
        name: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Promote the canaries of a rule's current version (`w.update(#{ canary })`): the
    /// rest of its rollout goes on.
    Promote {
        /// Rule name.
        name: String,
        /// The version (default: the current one).
        version: Option<u64>,
    },
    /// Bring back a version of a rule as a new version, rolled out by the rule's update
    /// policy. Without VERSION: the newest stable version before the current one that
    /// differs from it.
    /// Refused when that version is the same as the one the rule runs.
    Rollback {
        /// Rule name.
        name: String,
        /// The version to bring back (see `watch history`).
        version: Option<u64>,
    },
    /// Remove a rule.
    Rm {
        /// Rule name.
        name: String,
    },
}

/// `haconiwa mirror ...`
#[derive(Debug, Subcommand)]
pub enum MirrorCommand {
    /// The leader's copy to etcd: connected, writer, lag in entries and seconds, last
    /// error, and the rules registered through etcd.
    Status {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// `haconiwa cluster ...`
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Leader, term, commit index and members.
    Status {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Members with their role (voter, learner) and state.
    Members {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Remove a node for good: its containers are moved first.
    Leave {
        /// Node id.
        id: u64,
    },
    /// Move every container off a node; nothing new goes there.
    Drain {
        /// Node id, or `self`: the member the CLI talks to (the systemd unit drains its
        /// own node this way when the machine shuts down).
        id: NodeRef,
    },
}

/// A node named on the command line: its id, or `self` (the member answering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRef {
    /// A node id.
    Id(u64),
    /// The member the CLI is connected to.
    This,
}

impl std::str::FromStr for NodeRef {
    type Err = String;

    fn from_str(s: &str) -> Result<NodeRef, String> {
        if s == "self" {
            return Ok(NodeRef::This);
        }
        s.parse()
            .map(NodeRef::Id)
            .map_err(|_| format!("'{s}' is neither a node id nor `self`"))
    }
}

impl Cli {
    /// What a cluster command presents: the token, and TLS when --ca is given.
    pub fn credentials(&self) -> Result<crate::api::Credentials, CliError> {
        let Some(token) = self.cluster_token()? else {
            return Err(
                "no cluster token: pass --token-file or --token, or set HACONIWA_TOKEN(_FILE)"
                    .into(),
            );
        };
        let tls = match (&self.globals.ca, &self.globals.cert, &self.globals.key) {
            (None, None, None) => None,
            (Some(ca), None, None) => Some(crate::api::tls::ClientTls {
                ca: ca.clone(),
                identity: None,
            }),
            (Some(ca), Some(c), Some(k)) => Some(crate::api::tls::ClientTls {
                ca: ca.clone(),
                identity: Some((c.clone(), k.clone())),
            }),
            (None, _, _) => return Err("--cert and --key need --ca (HACONIWA_CA)".into()),
            _ => return Err("--cert and --key go together".into()),
        };
        Ok(crate::api::Credentials { token, tls })
    }

    /// The cluster token: --token / HACONIWA_TOKEN, else the first line of --token-file /
    /// HACONIWA_TOKEN_FILE.
    pub fn cluster_token(&self) -> Result<Option<String>, CliError> {
        if let Some(t) = self.globals.token.as_ref().filter(|t| !t.is_empty()) {
            return Ok(Some(t.clone()));
        }
        let Some(path) = &self.globals.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("token file {}: {e}", path.display()))?;
        let token = text.lines().next().unwrap_or("").trim().to_string();
        if token.is_empty() {
            return Err(format!("token file {} is empty", path.display()).into());
        }
        use std::os::unix::fs::PermissionsExt;
        if let Ok(md) = std::fs::metadata(path) {
            if md.permissions().mode() & 0o077 != 0 {
                eprintln!(
                    "haconiwa: warning: token file {} is readable by others; chmod 600 it",
                    path.display()
                );
            }
        }
        Ok(Some(token))
    }
}

/// The command line, read. A `haconiwa [OPTIONS] run …` line is read by a tree of the
/// `run` command alone: clap builds the tree of every command (with every global option
/// copied into each) before it reads a word, 0.6–0.8 ms of each `run` on the test VM, the
/// start the benchmarks time against runc's. Every line that tree does not take
/// (another command, `--help`, a mistake) is read again by the whole tree, so what is
/// printed and refused is the whole tree's.
fn parse<I>(args: I) -> Cli
where
    I: IntoIterator<Item = std::ffi::OsString> + Clone,
{
    match RunLine::try_parse_from(args.clone()) {
        Ok(RunLine {
            globals,
            command: RunOnly::Run(run),
        }) => Cli {
            globals,
            command: Command::Run(run),
        },
        Err(_) => Cli::parse_from(args),
    }
}

/// `haconiwa [OPTIONS] run …`, with the same options and arguments as in [`Cli`].
#[derive(Debug, Parser)]
#[command(name = "haconiwa")]
struct RunLine {
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    command: RunOnly,
}

/// The one command of [`RunLine`].
#[derive(Debug, Subcommand)]
enum RunOnly {
    Run(RunArgs),
}

/// Whether this process is one of the internal helpers (`haconiwa __monitor` and the
/// like, their request on stdin, no argument): they skip building clap's tree of every
/// command, which costs each launch ~0.3 ms and leaves ~300 kB of heap churn in the
/// monitor forked from the helper for its container's whole life.
fn is_helper_call() -> bool {
    let mut args = std::env::args_os().skip(1);
    match (args.next(), args.next()) {
        (Some(verb), None) => crate::runtime::helper::VERBS.iter().any(|v| verb == *v),
        _ => false,
    }
}

/// Whether a command only prints for a reader (a terminal or a pipe such as `| head`)
/// and should end quietly when that reader goes away. Every other command keeps SIGPIPE
/// ignored: the launcher writes to pipes whose other end may be gone (a child that
/// failed first), and the supervisor, the helpers and `up` must outlive their readers.
fn prints_for_a_reader(c: &Command) -> bool {
    matches!(
        c,
        Command::Show { .. }
            | Command::Ps { .. }
            | Command::Logs { .. }
            | Command::Containers { .. }
            | Command::Services { .. }
            | Command::Events { .. }
            | Command::Cluster(_)
            | Command::Mirror(_)
            | Command::Watch(WatchCommand::Ls { .. })
            | Command::Watch(WatchCommand::History { .. })
            | Command::Volume(storage::VolumeCommand::Ls { .. })
            | Command::Secret(storage::SecretCommand::Ls { .. })
            | Command::Image(image::ImageCommand::Ls { .. })
            | Command::Image(image::ImageCommand::Inspect { .. })
    )
}

/// Whether a command talks to cluster members (over sockets).
fn talks_to_the_cluster(c: &Command) -> bool {
    matches!(
        c,
        Command::Containers { .. }
            | Command::Logs { .. }
            | Command::Exec { .. }
            | Command::Services { .. }
            | Command::Events { .. }
            | Command::Cluster(_)
            | Command::Mirror(_)
            | Command::Watch(_)
            | Command::Volume(_)
            | Command::Secret(_)
    )
}

/// Entry point: parses, dispatches, and turns errors into one line and an exit code.
pub fn main() -> i32 {
    let called_as = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    if called_as.as_deref() == Some(oci::RUNC_NAME) {
        return oci::main_as_runc();
    }
    if is_helper_call() {
        return crate::runtime::helper::serve();
    }
    let cli = parse(std::env::args_os().collect::<Vec<_>>());
    if prints_for_a_reader(&cli.command) {
        if talks_to_the_cluster(&cli.command) {
            // SIGPIPE stays ignored: these also write to sockets, where a peer that went
            // away (a TLS member refusing a plaintext client) must be an error, not a
            // silent death. EPIPE on stdout ends them as SIGPIPE would.
            std::panic::set_hook(Box::new(|info| {
                let text = info
                    .payload()
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| info.payload().downcast_ref::<&str>().copied())
                    .unwrap_or("");
                if text.contains("Broken pipe") {
                    crate::launcher::signals::die_of_sigpipe();
                }
                eprintln!("haconiwa: internal error: {info}");
            }));
        } else {
            crate::launcher::signals::default_sigpipe();
        }
    }
    let result = match cli.command {
        Command::Supervisor(_) => supervise::run(cli),
        Command::Spawn { .. }
        | Command::Stop { .. }
        | Command::Containers { .. }
        | Command::Services { .. }
        | Command::Events { .. }
        | Command::Watch(_)
        | Command::Mirror(_)
        | Command::Cluster(_) => remote::run(cli),
        Command::Logs { .. } => logs::run(cli),
        Command::Exec { .. } => exec::run(cli),
        Command::Volume(_) | Command::Secret(_) => storage::run(cli),
        Command::Up(_) | Command::Down(_) => up::run(cli),
        Command::Tls(t) => tls::run(t),
        Command::Oci(o) => return oci::run(o),
        Command::Image(ref i) => image::run(&cli, i),
        _ => local::dispatch(cli),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!(
                "haconiwa: {}",
                crate::spec::names::escape_controls(&e.message)
            );
            e.code
        }
    }
}

/// A CLI failure: its line and exit code.
#[derive(Debug)]
pub struct CliError {
    /// The one line printed.
    pub message: String,
    /// Process exit code.
    pub code: i32,
}

impl<E: std::fmt::Display> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError {
            message: e.to_string(),
            code: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every command's arguments are consistent (ids unique across global and local
    /// flags, types matching): clap checks it only when a command is used.
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
        super::oci::RuncCli::command().debug_assert();
    }

    /// A `run` line read by the tree of `run` alone gives what the whole tree gives, and
    /// every other line is left to the whole tree.
    #[test]
    fn a_run_line_reads_as_the_whole_tree_reads_it() {
        use clap::Parser;
        let line = |words: &[&str]| -> Vec<std::ffi::OsString> {
            std::iter::once("haconiwa")
                .chain(words.iter().copied())
                .map(Into::into)
                .collect()
        };
        for words in [
            &["run", "a.haco"][..],
            &["--state-dir", "/s", "run", "-D", "--name", "n", "a.haco"],
            &[
                "run",
                "a.haco",
                "--cgroup-parent",
                "p",
                "--",
                "/bin/sh",
                "-c",
                "x",
            ],
            &["run", "-F", "--create", "--server", "127.0.0.1:1", "a.haco"],
        ] {
            assert!(
                super::RunLine::try_parse_from(line(words)).is_ok(),
                "{words:?} was not taken as a run line"
            );
            let fast = super::parse(line(words));
            let whole = super::Cli::try_parse_from(line(words)).expect("a valid line");
            assert_eq!(format!("{fast:?}"), format!("{whole:?}"), "{words:?}");
        }
        for words in [
            &["ps"][..],
            &["--version"],
            &["run"],
            &["run", "--help"],
            &["help", "run"],
            &["run", "-D", "-F", "a.haco"],
            &["run", "a.haco", "--bogus"],
            &["runx", "a.haco"],
        ] {
            assert!(
                super::RunLine::try_parse_from(line(words)).is_err(),
                "{words:?} was taken as a run line"
            );
        }
    }

    /// The helpers skip clap (`is_helper_call`), but their hidden commands name the
    /// same verbs: a helper started with an argument more still reaches clap's error.
    #[test]
    fn every_helper_verb_is_also_a_hidden_command() {
        use clap::Parser;
        for verb in crate::runtime::helper::VERBS {
            let cli = super::Cli::try_parse_from(["haconiwa", verb]).expect(verb);
            use super::Command::*;
            let helper = matches!(cli.command, Monitor | ProvisionStep | Probe | Remove);
            assert!(helper, "{verb} is {:?}", cli.command);
        }
    }
}
