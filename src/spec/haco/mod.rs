//! The `.haco` loader: runs a definition script in the sandboxed engine and resolves it
//! into a validated [`ContainerSpec`]. The vocabulary follows the original Ruby DSL.

mod cgroups;
mod health;
mod kernel;
mod keys;
mod mounts;
mod namespaces;
mod network;
mod privileges;
mod render;
mod rootfs;

pub use privileges::parse_device;
pub use render::render;

use super::model::*;
use super::script::{dsl_error, sandboxed_engine, RhaiResult, ScriptError, HACO_TIME_LIMIT};
use rhai::{Dynamic, Engine, FnPtr, NativeCallContext, Position, Scope};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Why `chroot_to(p, #{ chroot: true })` is refused.
const CHROOT_REFUSED: &str = "chroot mode is refused: a chroot leaves the host's root filesystem reachable (root inside escapes it with chroot(2)); haconiwa always enters the root with pivot_root in a mount namespace, so drop `chroot: true`";

/// The default root filesystem of the examples.
pub const DEFAULT_ROOT: &str = "/var/lib/haconiwa/rootfs/busybox";

/// Why a definition could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum HacoError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Read {
        /// The path.
        file: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A syntax or evaluation error, with its position.
    #[error(transparent)]
    Script(#[from] ScriptError),
}

/// Loads a definition file. The path is used in error messages and to resolve relative
/// paths (rootfs, tarballs, bind sources) against the file's directory.
pub fn load_file(path: &Path) -> Result<ContainerSpec, HacoError> {
    let text = super::script::read_source(path).map_err(|source| HacoError::Read {
        file: path.display().to_string(),
        source,
    })?;
    load_str(&text, &path.display().to_string(), path.parent())
}

/// Loads a definition from text; `file` names it in errors, `base_dir` anchors relative
/// host paths (none when the text came over the network).
pub fn load_str(
    text: &str,
    file: &str,
    base_dir: Option<&Path>,
) -> Result<ContainerSpec, HacoError> {
    let drafts: Rc<RefCell<Vec<(Draft, Position)>>> = Rc::default();
    let mut engine = sandboxed_engine(HACO_TIME_LIMIT);
    register(&mut engine, base_dir.map(Path::to_path_buf));
    let mut scope = Scope::new();
    scope.push_constant(
        "haconiwa",
        HacoHandle {
            drafts: drafts.clone(),
        },
    );
    let ast = engine
        .compile_with_scope(&scope, text)
        .map_err(|e| ScriptError::from_parse(file, &e))?;
    engine
        .run_ast_with_scope(&mut scope, &ast)
        .map_err(|e| ScriptError::from_eval(file, &e))?;
    let mut drafts = drafts.take();
    match drafts.len() {
        0 => Err(ScriptError::at(
            file,
            Position::new(1, 1),
            "no container defined: the file must call haconiwa.define(|c| { ... })",
        )
        .into()),
        1 => {
            let (draft, pos) = drafts.remove(0);
            draft
                .finish()
                .map_err(|m| ScriptError::at(file, pos, m).into())
        }
        _ => Err(ScriptError::at(
            file,
            drafts[1].1,
            "a .haco file defines one container; this is the second haconiwa.define",
        )
        .into()),
    }
}

/// The definition as the script builds it.
#[derive(Debug, Clone)]
struct Draft {
    spec: ContainerSpec,
    root_set: bool,
    provision_counter: usize,
}

impl Draft {
    fn new() -> Self {
        Draft {
            spec: ContainerSpec::new("", Vec::new(), PathBuf::from(DEFAULT_ROOT)),
            root_set: false,
            provision_counter: 0,
        }
    }

    fn finish(self) -> Result<ContainerSpec, String> {
        let mut s = self.spec;
        if s.name.is_empty() {
            return Err("the container has no name: set c.name = \"...\"".into());
        }
        if s.image.is_some() {
            if self.root_set {
                return Err(
                    "c.image and c.chroot_to both give the root filesystem; keep one".into(),
                );
            }
            if s.bootstrap.is_some() {
                return Err(
                    "c.bootstrap builds a root directory; an image is its own root: drop c.bootstrap or c.image".into(),
                );
            }
        } else {
            if s.init_command.is_empty() {
                return Err(
                    "the container has no command: set c.init_command = [\"/bin/sh\"] (or name an image: c.image = \"busybox\")".into(),
                );
            }
            if !self.root_set {
                return Err(
                    "the container has no root filesystem: call c.chroot_to(\"/path\") or set c.image = \"REF\"".into(),
                );
            }
        }
        s.namespaces.unshare.sort();
        s.namespaces.unshare.dedup();
        s.system_mounts.sort();
        s.system_mounts.dedup();
        let user_ns = s.unshares(NsKind::User);
        if !user_ns && (!s.namespaces.uid_map.is_empty() || !s.namespaces.gid_map.is_empty()) {
            return Err(
                "uid/gid maps need a user namespace: add \"user\" to namespace.unshare".into(),
            );
        }
        if user_ns && s.namespaces.uid_map.is_empty() {
            return Err(
                "a user namespace needs a uid map: c.namespace.uid_map(0, 100000, 65536)".into(),
            );
        }
        if user_ns && s.namespaces.gid_map.is_empty() {
            s.namespaces.gid_map = s.namespaces.uid_map.clone();
        }
        for e in &s.namespaces.enter {
            if s.unshares(e.kind) {
                return Err(format!(
                    "namespace '{}' is both unshared and entered; choose one",
                    e.kind
                ));
            }
        }
        if !s.separates(NsKind::Mount) {
            // A root without a private mount table would only be a chroot, which root
            // inside escapes: every container gets a mount namespace and pivot_root.
            s.namespaces.unshare.push(NsKind::Mount);
            s.namespaces.unshare.sort();
        }
        for a in &s.capabilities.ambient {
            if !s.capabilities.allow.contains(a) {
                s.capabilities.allow.push(a.clone());
            }
        }
        for key in s.sysctl.keys() {
            crate::spec::sysctl::is_namespaced(&s, key).map_err(|why| format!("sysctl: {why}"))?;
        }
        mounts::check_order(&s)?;
        Ok(s)
    }
}

type Shared = Rc<RefCell<Draft>>;

/// The `haconiwa` constant of a `.haco` script.
#[derive(Clone)]
struct HacoHandle {
    drafts: Rc<RefCell<Vec<(Draft, Position)>>>,
}

/// The `c` argument of `haconiwa.define(|c| ...)`.
#[derive(Clone)]
struct Container {
    d: Shared,
    base: Option<PathBuf>,
}

#[derive(Clone)]
struct NamespaceBuilder(Shared);
#[derive(Clone)]
struct CgroupBuilder(Shared);
#[derive(Clone)]
struct CapabilitiesBuilder(Shared);
#[derive(Clone)]
struct ResourceBuilder(Shared);
#[derive(Clone)]
struct ProvisionBuilder(Shared);
#[derive(Clone)]
struct DevicesBuilder(Shared);
#[derive(Clone)]
struct SysctlBuilder(Shared);

/// A propagation's name in definitions (and OCI's, without the `r`).
pub fn propagation_name(p: Propagation) -> &'static str {
    match p {
        Propagation::Shared => "shared",
        Propagation::Slave => "slave",
        Propagation::Private => "private",
        Propagation::Unbindable => "unbindable",
    }
}

fn parse_propagation(s: &str) -> RhaiResult<Propagation> {
    Ok(match s {
        "shared" => Propagation::Shared,
        "slave" => Propagation::Slave,
        "private" => Propagation::Private,
        "unbindable" => Propagation::Unbindable,
        other => {
            return Err(dsl_error(format!(
                "propagation '{other}'; expected shared, slave, private or unbindable"
            )))
        }
    })
}

/// Splits a command line on blanks, honouring single and double quotes.
pub fn split_command(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    in_word = true;
                }
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("unterminated quote in command".into());
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

fn valid_name(what: &'static str, name: &str) -> RhaiResult<()> {
    crate::spec::names::check(what, name).map_err(|e| dsl_error(e.to_string()))
}

fn abs_in_container(p: &str, what: &str) -> RhaiResult<()> {
    if p.starts_with('/') && !p.split('/').any(|c| c == "..") {
        Ok(())
    } else {
        Err(dsl_error(format!(
            "{what}: '{p}' must be an absolute path without '..'"
        )))
    }
}

impl Container {
    fn host_path(&self, p: &str) -> PathBuf {
        let path = PathBuf::from(p);
        match (&self.base, path.is_absolute()) {
            (Some(base), false) => base.join(path),
            _ => path,
        }
    }
}

fn register(engine: &mut Engine, base: Option<PathBuf>) {
    engine.register_type_with_name::<HacoHandle>("Haconiwa");
    engine.register_type_with_name::<Container>("Container");
    engine.register_type_with_name::<NamespaceBuilder>("Namespace");
    engine.register_type_with_name::<CgroupBuilder>("Cgroup");
    engine.register_type_with_name::<CapabilitiesBuilder>("Capabilities");
    engine.register_type_with_name::<ResourceBuilder>("Resource");
    engine.register_type_with_name::<ProvisionBuilder>("Provision");
    engine.register_type_with_name::<DevicesBuilder>("Devices");
    engine.register_type_with_name::<SysctlBuilder>("Sysctl");

    engine.register_fn(
        "define",
        move |ctx: NativeCallContext, h: &mut HacoHandle, f: FnPtr| -> RhaiResult<()> {
            let d: Shared = Rc::new(RefCell::new(Draft::new()));
            let c = Container {
                d: d.clone(),
                base: base.clone(),
            };
            let _ = f.call_within_context::<Dynamic>(&ctx, (c,))?;
            let draft = d.borrow().clone();
            h.drafts.borrow_mut().push((draft, ctx.call_position()));
            Ok(())
        },
    );
    keys::register(engine);
    kernel::register(engine);
    rootfs::register(engine);
    namespaces::register(engine);
    mounts::register(engine);
    cgroups::register(engine);
    privileges::register(engine);
    network::register(engine);
    network::register_publish(engine);
    health::register(engine);
}
