//! The `.haco` loader: runs a definition script in the sandboxed engine and resolves it
//! into a validated [`ContainerSpec`]. The vocabulary follows the original Ruby DSL.

use super::cgroup;
use super::model::*;
use super::script::{check_keys, dsl_error, sandboxed_engine, ScriptError, HACO_TIME_LIMIT};
use rhai::{Array, Dynamic, Engine, EvalAltResult, FnPtr, Map, NativeCallContext, Position, Scope};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

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
    let text = std::fs::read_to_string(path).map_err(|source| HacoError::Read {
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
        if s.init_command.is_empty() {
            return Err("the container has no command: set c.init_command = [\"/bin/sh\"]".into());
        }
        if !self.root_set {
            return Err("the container has no root filesystem: call c.chroot_to(\"/path\")".into());
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
        let mount_ns =
            s.unshares(NsKind::Mount) || s.namespaces.enter.iter().any(|e| e.kind == NsKind::Mount);
        if !mount_ns {
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

fn as_string(v: &Dynamic, what: &str) -> RhaiResult<String> {
    if v.is_string() {
        Ok(v.clone().into_string().unwrap_or_default())
    } else if v.is_int() || v.is_float() || v.is_bool() {
        Ok(v.to_string())
    } else {
        Err(dsl_error(format!(
            "{what}: expected a string, got {}",
            v.type_name()
        )))
    }
}

fn string_list(v: &Dynamic, what: &str) -> RhaiResult<Vec<String>> {
    if v.is_array() {
        let arr: Array = v.clone().into_array().unwrap_or_default();
        arr.iter().map(|x| as_string(x, what)).collect()
    } else {
        Ok(vec![as_string(v, what)?])
    }
}

fn int_of(v: &Dynamic, what: &str) -> RhaiResult<i64> {
    v.as_int()
        .map_err(|t| dsl_error(format!("{what}: expected an integer, got {t}")))
}

fn u32_of(v: &Dynamic, what: &str) -> RhaiResult<u32> {
    let n = int_of(v, what)?;
    u32::try_from(n).map_err(|_| dsl_error(format!("{what}: {n} is out of range")))
}

fn bool_of(v: &Dynamic, what: &str) -> RhaiResult<bool> {
    v.as_bool()
        .map_err(|t| dsl_error(format!("{what}: expected true or false, got {t}")))
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
    super::names::check(what, name).map_err(|e| dsl_error(e.to_string()))
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

fn parse_ns(s: &str) -> RhaiResult<NsKind> {
    NsKind::parse(s).ok_or_else(|| {
        dsl_error(format!(
            "unknown namespace '{s}'; expected one of {}",
            NsKind::expected()
        ))
    })
}

fn canonical_cap(name: &str) -> RhaiResult<String> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    match full.parse::<caps::Capability>() {
        Ok(_) => Ok(full),
        Err(_) => Err(dsl_error(format!(
            "unknown capability '{name}'; expected a name such as cap_sys_time or net_bind_service"
        ))),
    }
}

fn limit_value(v: &Dynamic, what: &str) -> RhaiResult<Option<u64>> {
    if v.is_string() {
        let s = v.clone().into_string().unwrap_or_default();
        if s == "unlimited" || s == "infinity" {
            return Ok(None);
        }
        return s.parse::<u64>().map(Some).map_err(|_| {
            dsl_error(format!(
                "{what}: expected a number or \"unlimited\", got '{s}'"
            ))
        });
    }
    let n = int_of(v, what)?;
    if n < 0 {
        Ok(None)
    } else {
        Ok(Some(n as u64))
    }
}

fn set_limit(d: &Shared, name: &str, soft: &Dynamic, hard: &Dynamic) -> RhaiResult<()> {
    let res = name.trim().to_ascii_lowercase();
    let res = res.strip_prefix("rlimit_").unwrap_or(&res).to_string();
    if !RLIMIT_NAMES.contains(&res.as_str()) {
        return Err(dsl_error(format!(
            "unknown resource limit '{name}'; expected one of {}",
            RLIMIT_NAMES.join(", ")
        )));
    }
    let soft = limit_value(soft, "set_limit soft")?;
    let hard = limit_value(hard, "set_limit hard")?;
    if let (Some(s), Some(h)) = (soft, hard) {
        if s > h {
            return Err(dsl_error(format!(
                "set_limit {res}: soft limit {s} is above the hard limit {h}"
            )));
        }
    }
    if let (None, Some(h)) = (soft, hard) {
        return Err(dsl_error(format!(
            "set_limit {res}: soft limit unlimited is above the hard limit {h}"
        )));
    }
    let mut d = d.borrow_mut();
    d.spec.rlimits.retain(|r| r.resource != res);
    d.spec.rlimits.push(Rlimit {
        resource: res,
        soft,
        hard,
    });
    Ok(())
}

fn id_map(inside: i64, outside: i64, count: i64) -> RhaiResult<IdMap> {
    let conv = |n: i64, w: &str| {
        u32::try_from(n).map_err(|_| dsl_error(format!("id map {w}: {n} is out of range")))
    };
    let m = IdMap {
        inside: conv(inside, "inside")?,
        outside: conv(outside, "outside")?,
        count: conv(count, "count")?,
    };
    if m.count == 0 {
        return Err(dsl_error("id map count must be at least 1"));
    }
    Ok(m)
}

fn set_cgroup(d: &Shared, key: &str, value: Dynamic) -> RhaiResult<()> {
    let v = as_string(&value, &format!("cgroup[\"{key}\"]"))?;
    let canonical = cgroup::validate(key, &v).map_err(dsl_error)?;
    d.borrow_mut()
        .spec
        .cgroup
        .insert(key.to_string(), canonical);
    Ok(())
}

fn add_caps(d: &Shared, v: &Dynamic, allow: bool) -> RhaiResult<()> {
    let names = string_list(
        v,
        if allow {
            "capabilities.allow"
        } else {
            "capabilities.drop"
        },
    )?;
    let mut canon = Vec::new();
    for n in &names {
        canon.push(canonical_cap(n)?);
    }
    let mut d = d.borrow_mut();
    let caps = &mut d.spec.capabilities;
    for c in canon {
        let (add, remove) = if allow {
            (&mut caps.allow, &mut caps.drop)
        } else {
            (&mut caps.drop, &mut caps.allow)
        };
        remove.retain(|x| x != &c);
        if !add.contains(&c) {
            add.push(c);
        }
    }
    Ok(())
}

fn add_provision(d: &Shared, script: &str, name: Option<String>) -> RhaiResult<()> {
    let mut d = d.borrow_mut();
    d.provision_counter += 1;
    let name = name.unwrap_or_else(|| format!("step-{}", d.provision_counter));
    valid_name("provision step", &name)?;
    if d.spec.provision.iter().any(|s| s.name == name) {
        return Err(dsl_error(format!(
            "provision step '{name}' is defined twice"
        )));
    }
    d.spec.provision.push(ProvisionStep {
        name,
        script: script.to_string(),
    });
    Ok(())
}

/// `run_shell(script, #{name})`, on the container or in a `provision` block.
fn run_shell_named(d: &Shared, script: &str, o: Map) -> RhaiResult<()> {
    check_keys(&o, "run_shell", &["name"])?;
    let name = o
        .get("name")
        .map(|v| as_string(v, "run_shell name"))
        .transpose()?;
    add_provision(d, script, name)
}

fn bootstrap_from(c: &Container, m: &Map) -> RhaiResult<Bootstrap> {
    let strategy =
        match m.get("strategy") {
            Some(v) => as_string(v, "bootstrap strategy")?,
            None => return Err(dsl_error(
                "bootstrap: missing 'strategy' (busybox, host, tarball, directory, debootstrap)",
            )),
        };
    let s = |k: &str| -> RhaiResult<Option<String>> {
        m.get(k)
            .map(|v| as_string(v, &format!("bootstrap {k}")))
            .transpose()
    };
    Ok(match strategy.as_str() {
        "busybox" => {
            check_keys(m, "bootstrap busybox", &["strategy", "busybox"])?;
            Bootstrap::Busybox { busybox: s("busybox")?.map(|p| c.host_path(&p)) }
        }
        "host" => {
            check_keys(m, "bootstrap host", &["strategy", "binaries"])?;
            let bins = match m.get("binaries") {
                Some(v) => string_list(v, "bootstrap binaries")?,
                None => vec!["sh".into(), "sleep".into(), "true".into(), "cat".into(), "ls".into()],
            };
            Bootstrap::Host { binaries: bins }
        }
        "tarball" => {
            check_keys(m, "bootstrap tarball", &["strategy", "archive", "archive_path"])?;
            let a = s("archive")?.or(s("archive_path")?).ok_or_else(|| dsl_error("bootstrap tarball: missing 'archive'"))?;
            Bootstrap::Tarball { archive: c.host_path(&a) }
        }
        "directory" => {
            check_keys(m, "bootstrap directory", &["strategy", "source", "src"])?;
            let a = s("source")?.or(s("src")?).ok_or_else(|| dsl_error("bootstrap directory: missing 'source'"))?;
            Bootstrap::Directory { source: c.host_path(&a) }
        }
        "debootstrap" => {
            check_keys(m, "bootstrap debootstrap", &["strategy", "suite", "mirror", "variant"])?;
            Bootstrap::Debootstrap {
                suite: s("suite")?.unwrap_or_else(|| "bookworm".into()),
                mirror: s("mirror")?,
                variant: s("variant")?,
            }
        }
        other => {
            return Err(dsl_error(format!(
                "unknown bootstrap strategy '{other}'; expected one of busybox, host, tarball, directory, debootstrap"
            )))
        }
    })
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

    // Plain keys.
    engine.register_get_set(
        "name",
        |c: &mut Container| Dynamic::from(c.d.borrow().spec.name.clone()),
        |c: &mut Container, v: Dynamic| -> RhaiResult<()> {
            let n = as_string(&v, "name")?;
            valid_name("container", &n)?;
            c.d.borrow_mut().spec.name = n;
            Ok(())
        },
    );
    engine.register_get_set(
        "hostname",
        |c: &mut Container| Dynamic::from(c.d.borrow().spec.hostname.clone().unwrap_or_default()),
        |c: &mut Container, v: Dynamic| -> RhaiResult<()> {
            let n = as_string(&v, "hostname")?;
            if n.is_empty() || n.len() > 64 || n.contains(['/', ' ', '\0']) {
                return Err(dsl_error(format!("invalid hostname '{n}'")));
            }
            c.d.borrow_mut().spec.hostname = Some(n);
            Ok(())
        },
    );
    engine.register_get_set(
        "init_command",
        |c: &mut Container| -> Dynamic {
            let a: Array =
                c.d.borrow()
                    .spec
                    .init_command
                    .iter()
                    .map(|s| Dynamic::from(s.clone()))
                    .collect();
            a.into()
        },
        |c: &mut Container, v: Dynamic| -> RhaiResult<()> {
            let cmd = if v.is_string() {
                split_command(&as_string(&v, "init_command")?).map_err(dsl_error)?
            } else {
                string_list(&v, "init_command")?
            };
            if cmd.is_empty() || cmd[0].is_empty() {
                return Err(dsl_error("init_command is empty"));
            }
            c.d.borrow_mut().spec.init_command = cmd;
            Ok(())
        },
    );
    engine.register_get_set(
        "environment",
        |c: &mut Container| -> Map {
            c.d.borrow()
                .spec
                .environment
                .iter()
                .map(|(k, v)| (k.into(), Dynamic::from(v.clone())))
                .collect()
        },
        |c: &mut Container, m: Map| -> RhaiResult<()> {
            let mut env = BTreeMap::new();
            for (k, v) in m {
                if k.is_empty() || k.contains('=') {
                    return Err(dsl_error(format!(
                        "environment: invalid variable name '{k}'"
                    )));
                }
                env.insert(k.to_string(), as_string(&v, &format!("environment {k}"))?);
            }
            c.d.borrow_mut().spec.environment = env;
            Ok(())
        },
    );
    engine.register_fn(
        "env",
        |c: &mut Container, k: &str, v: Dynamic| -> RhaiResult<()> {
            if k.is_empty() || k.contains('=') {
                return Err(dsl_error(format!(
                    "environment: invalid variable name '{k}'"
                )));
            }
            let v = as_string(&v, &format!("environment {k}"))?;
            c.d.borrow_mut().spec.environment.insert(k.to_string(), v);
            Ok(())
        },
    );
    engine.register_get_set(
        "workdir",
        |c: &mut Container| -> rhai::ImmutableString {
            c.d.borrow().spec.workdir.clone().unwrap_or_default().into()
        },
        |c: &mut Container, v: rhai::ImmutableString| -> RhaiResult<()> {
            abs_in_container(&v, "workdir")?;
            c.d.borrow_mut().spec.workdir = Some(v.to_string());
            Ok(())
        },
    );
    engine.register_get_set(
        "labels",
        |c: &mut Container| -> Map {
            c.d.borrow()
                .spec
                .labels
                .iter()
                .map(|(k, v)| (k.into(), Dynamic::from(v.clone())))
                .collect()
        },
        |c: &mut Container, m: Map| -> RhaiResult<()> {
            let mut labels = BTreeMap::new();
            for (k, v) in m {
                labels.insert(k.to_string(), as_string(&v, &format!("label {k}"))?);
            }
            c.d.borrow_mut().spec.labels = labels;
            Ok(())
        },
    );
    engine.register_fn(
        "label",
        |c: &mut Container, k: &str, v: Dynamic| -> RhaiResult<()> {
            let v = as_string(&v, &format!("label {k}"))?;
            c.d.borrow_mut().spec.labels.insert(k.to_string(), v);
            Ok(())
        },
    );
    engine.register_fn("daemonize", |c: &mut Container| {
        c.d.borrow_mut().spec.daemonize = true;
    });
    engine.register_fn("daemonize", |c: &mut Container, on: bool| {
        c.d.borrow_mut().spec.daemonize = on;
    });
    engine.register_get_set(
        "readonly_rootfs",
        |c: &mut Container| Dynamic::from(c.d.borrow().spec.rootfs.readonly),
        |c: &mut Container, v: Dynamic| -> RhaiResult<()> {
            c.d.borrow_mut().spec.rootfs.readonly = bool_of(&v, "readonly_rootfs")?;
            Ok(())
        },
    );
    engine.register_get_set(
        "no_new_privs",
        |c: &mut Container| Dynamic::from(c.d.borrow().spec.no_new_privs),
        |c: &mut Container, v: Dynamic| -> RhaiResult<()> {
            c.d.borrow_mut().spec.no_new_privs = bool_of(&v, "no_new_privs")?;
            Ok(())
        },
    );
    for (key, is_uid) in [("uid", true), ("gid", false)] {
        engine.register_get_set(
            key,
            move |c: &mut Container| -> Dynamic {
                let d = c.d.borrow();
                let v = if is_uid { d.spec.uid } else { d.spec.gid };
                Dynamic::from(v.map(i64::from).unwrap_or(-1))
            },
            move |c: &mut Container, v: Dynamic| -> RhaiResult<()> {
                let id = u32_of(&v, key)?;
                let mut d = c.d.borrow_mut();
                if is_uid {
                    d.spec.uid = Some(id)
                } else {
                    d.spec.gid = Some(id)
                }
                Ok(())
            },
        );
    }
    engine.register_get_set(
        "groups",
        |c: &mut Container| -> Array {
            c.d.borrow()
                .spec
                .groups
                .iter()
                .map(|g| Dynamic::from(*g as i64))
                .collect()
        },
        |c: &mut Container, v: Array| -> RhaiResult<()> {
            let gs = v
                .iter()
                .map(|g| u32_of(g, "groups"))
                .collect::<RhaiResult<Vec<_>>>()?;
            c.d.borrow_mut().spec.groups = gs;
            Ok(())
        },
    );

    // Root filesystem.
    engine.register_fn(
        "chroot_to",
        |c: &mut Container, p: &str| -> RhaiResult<()> {
            if p.is_empty() {
                return Err(dsl_error("chroot_to: empty path"));
            }
            let path = c.host_path(p);
            let mut d = c.d.borrow_mut();
            d.spec.rootfs.path = path;
            d.root_set = true;
            Ok(())
        },
    );
    engine.register_fn(
        "chroot_to",
        |c: &mut Container, p: &str, o: Map| -> RhaiResult<()> {
            check_keys(&o, "chroot_to", &["chroot", "readonly"])?;
            if p.is_empty() {
                return Err(dsl_error("chroot_to: empty path"));
            }
            let path = c.host_path(p);
            let mut d = c.d.borrow_mut();
            d.spec.rootfs.path = path;
            d.root_set = true;
            if let Some(v) = o.get("chroot") {
                if bool_of(v, "chroot_to chroot")? {
                    return Err(dsl_error(CHROOT_REFUSED));
                }
            }
            if let Some(v) = o.get("readonly") {
                d.spec.rootfs.readonly = bool_of(v, "chroot_to readonly")?;
            }
            Ok(())
        },
    );
    engine.register_fn("bootstrap", |c: &mut Container, m: Map| -> RhaiResult<()> {
        let b = bootstrap_from(c, &m)?;
        c.d.borrow_mut().spec.bootstrap = Some(b);
        Ok(())
    });
    engine.register_fn("run_shell", |c: &mut Container, script: &str| {
        add_provision(&c.d, script, None)
    });
    engine.register_fn("run_shell", |c: &mut Container, script: &str, o: Map| {
        run_shell_named(&c.d, script, o)
    });
    engine.register_fn(
        "provision",
        |ctx: NativeCallContext, c: &mut Container, f: FnPtr| -> RhaiResult<()> {
            let _ = f.call_within_context::<Dynamic>(&ctx, (ProvisionBuilder(c.d.clone()),))?;
            Ok(())
        },
    );
    engine.register_fn("run_shell", |p: &mut ProvisionBuilder, script: &str| {
        add_provision(&p.0, script, None)
    });
    engine.register_fn(
        "run_shell",
        |p: &mut ProvisionBuilder, script: &str, o: Map| run_shell_named(&p.0, script, o),
    );

    // Namespaces.
    engine.register_get("namespace", |c: &mut Container| {
        NamespaceBuilder(c.d.clone())
    });
    engine.register_fn(
        "unshare",
        |n: &mut NamespaceBuilder, v: Dynamic| -> RhaiResult<()> {
            let kinds = string_list(&v, "namespace.unshare")?;
            let parsed = kinds
                .iter()
                .map(|k| parse_ns(k))
                .collect::<RhaiResult<Vec<_>>>()?;
            let mut d = n.0.borrow_mut();
            for k in parsed {
                if !d.spec.namespaces.unshare.contains(&k) {
                    d.spec.namespaces.unshare.push(k);
                }
            }
            Ok(())
        },
    );
    let enter = |n: &mut NamespaceBuilder, kind: &str, path: String| -> RhaiResult<()> {
        let kind = parse_ns(kind)?;
        if !path.starts_with('/') {
            return Err(dsl_error(format!(
                "namespace.enter: '{path}' must be an absolute path"
            )));
        }
        let mut d = n.0.borrow_mut();
        d.spec.namespaces.enter.retain(|e| e.kind != kind);
        d.spec.namespaces.enter.push(NsEnter {
            kind,
            path: PathBuf::from(path),
        });
        Ok(())
    };
    engine.register_fn(
        "enter",
        move |n: &mut NamespaceBuilder, kind: &str, path: &str| enter(n, kind, path.to_string()),
    );
    engine.register_fn(
        "enter",
        move |n: &mut NamespaceBuilder, kind: &str, o: Map| -> RhaiResult<()> {
            check_keys(&o, "namespace.enter", &["via"])?;
            let via = o
                .get("via")
                .ok_or_else(|| dsl_error("namespace.enter: missing 'via'"))?;
            enter(n, kind, as_string(via, "namespace.enter via")?)
        },
    );
    engine.register_fn(
        "uid_map",
        |n: &mut NamespaceBuilder, i: i64, o: i64, c: i64| -> RhaiResult<()> {
            let m = id_map(i, o, c)?;
            n.0.borrow_mut().spec.namespaces.uid_map.push(m);
            Ok(())
        },
    );
    engine.register_fn(
        "gid_map",
        |n: &mut NamespaceBuilder, i: i64, o: i64, c: i64| -> RhaiResult<()> {
            let m = id_map(i, o, c)?;
            n.0.borrow_mut().spec.namespaces.gid_map.push(m);
            Ok(())
        },
    );
    // The original's `set_uid_mapping(min:, max:, offset:)`.
    for (f, is_uid) in [("set_uid_mapping", true), ("set_gid_mapping", false)] {
        engine.register_fn(
            f,
            move |n: &mut NamespaceBuilder, o: Map| -> RhaiResult<()> {
                check_keys(&o, f, &["min", "max", "offset"])?;
                let get = |k: &str| -> RhaiResult<i64> {
                    int_of(
                        o.get(k)
                            .ok_or_else(|| dsl_error(format!("{f}: missing '{k}'")))?,
                        f,
                    )
                };
                let (min, max, offset) = (get("min")?, get("max")?, get("offset")?);
                if max < min {
                    return Err(dsl_error(format!("{f}: max {max} is below min {min}")));
                }
                let m = id_map(min, offset, max - min + 1)?;
                let mut d = n.0.borrow_mut();
                if is_uid {
                    d.spec.namespaces.uid_map.push(m)
                } else {
                    d.spec.namespaces.gid_map.push(m)
                }
                Ok(())
            },
        );
    }

    // Mounts.
    engine.register_fn("mount_independent", |c: &mut Container, v: Dynamic| -> RhaiResult<()> {
        for name in string_list(&v, "mount_independent")? {
            let m = SystemMount::parse(&name).ok_or_else(|| {
                dsl_error(format!(
                    "unknown filesystem '{name}' for mount_independent; expected one of procfs, sysfs, devpts, shm, tmpfs"
                ))
            })?;
            let mut d = c.d.borrow_mut();
            if !d.spec.system_mounts.contains(&m) {
                d.spec.system_mounts.push(m);
            }
        }
        Ok(())
    });
    engine.register_fn(
        "add_mount_point",
        |c: &mut Container, src: &str, o: Map| -> RhaiResult<()> {
            check_keys(&o, "add_mount_point", &["to", "readonly", "fs", "options"])?;
            let to = o
                .get("to")
                .map(|v| as_string(v, "add_mount_point to"))
                .transpose()?
                .ok_or_else(|| {
                    dsl_error("add_mount_point: missing 'to' (the path inside the container)")
                })?;
            abs_in_container(&to, "add_mount_point to")?;
            let fstype = o
                .get("fs")
                .map(|v| as_string(v, "add_mount_point fs"))
                .transpose()?;
            if let Some(fs) = &fstype {
                if HOST_VIEW_FILESYSTEMS.contains(&fs.as_str()) {
                    return Err(dsl_error(format!(
                        "add_mount_point: a '{fs}' filesystem would bypass the container's masked and read-only paths; use mount_independent(\"procfs\") or (\"sysfs\") for the masked ones"
                    )));
                }
            }
            let options = o
                .get("options")
                .map(|v| as_string(v, "add_mount_point options"))
                .transpose()?;
            let readonly = o
                .get("readonly")
                .map(|v| bool_of(v, "add_mount_point readonly"))
                .transpose()?
                .unwrap_or(false);
            let source = match fstype {
                None => {
                    let p = c.host_path(src);
                    p.display().to_string()
                }
                Some(_) => src.to_string(),
            };
            c.d.borrow_mut().spec.mounts.push(MountPoint {
                source,
                target: to,
                fstype,
                options,
                readonly,
            });
            Ok(())
        },
    );

    // cgroups.
    engine.register_get("cgroup", |c: &mut Container| CgroupBuilder(c.d.clone()));
    engine.register_indexer_set(|g: &mut CgroupBuilder, key: &str, v: Dynamic| {
        set_cgroup(&g.0, key, v)
    });
    engine.register_indexer_get(|g: &mut CgroupBuilder, key: &str| -> Dynamic {
        g.0.borrow()
            .spec
            .cgroup
            .get(key)
            .cloned()
            .map(Dynamic::from)
            .unwrap_or(Dynamic::UNIT)
    });

    // Capabilities.
    engine.register_get("capabilities", |c: &mut Container| {
        CapabilitiesBuilder(c.d.clone())
    });
    engine.register_fn("allow", |b: &mut CapabilitiesBuilder, v: Dynamic| {
        add_caps(&b.0, &v, true)
    });
    engine.register_fn("drop", |b: &mut CapabilitiesBuilder, v: Dynamic| {
        add_caps(&b.0, &v, false)
    });
    engine.register_fn("reset", |b: &mut CapabilitiesBuilder| {
        let mut d = b.0.borrow_mut();
        d.spec.capabilities = Capabilities {
            reset: true,
            ..Capabilities::default()
        };
    });
    engine.register_fn(
        "ambient",
        |b: &mut CapabilitiesBuilder, v: Dynamic| -> RhaiResult<()> {
            let mut canon = Vec::new();
            for n in string_list(&v, "capabilities.ambient")? {
                let c = canonical_cap(&n)?;
                if c == "ALL" {
                    return Err(dsl_error(
                        "capabilities.ambient: name the capabilities; ALL is not accepted here",
                    ));
                }
                canon.push(c);
            }
            let mut d = b.0.borrow_mut();
            let caps = &mut d.spec.capabilities;
            for c in canon {
                caps.drop.retain(|x| x != &c);
                if !caps.ambient.contains(&c) {
                    caps.ambient.push(c);
                }
            }
            Ok(())
        },
    );

    // System-call filter and devices.
    engine.register_get_set(
        "seccomp",
        |c: &mut Container| -> Dynamic {
            match &c.d.borrow().spec.seccomp {
                Seccomp::Default => "default".into(),
                Seccomp::Unconfined => "unconfined".into(),
                Seccomp::Profile(p) => p.display().to_string().into(),
            }
        },
        |c: &mut Container, v: Dynamic| -> RhaiResult<()> {
            let s = as_string(&v, "seccomp")?;
            let filter = match s.as_str() {
                "default" => Seccomp::Default,
                "unconfined" => Seccomp::Unconfined,
                "" => return Err(dsl_error(
                    "seccomp: expected \"default\", \"unconfined\" or the path of a JSON profile",
                )),
                path => Seccomp::Profile(c.host_path(path)),
            };
            c.d.borrow_mut().spec.seccomp = filter;
            Ok(())
        },
    );
    engine.register_get("devices", |c: &mut Container| DevicesBuilder(c.d.clone()));
    engine.register_fn(
        "allow",
        |b: &mut DevicesBuilder, v: Dynamic| -> RhaiResult<()> {
            for rule in string_list(&v, "devices.allow")? {
                let dev = parse_device(&rule).map_err(dsl_error)?;
                let mut d = b.0.borrow_mut();
                if !d.spec.devices.contains(&dev) {
                    d.spec.devices.push(dev);
                }
            }
            Ok(())
        },
    );

    // Resource limits.
    engine.register_fn(
        "set_limit",
        |c: &mut Container, n: &str, s: Dynamic, h: Dynamic| set_limit(&c.d, n, &s, &h),
    );
    engine.register_fn("set_limit", |c: &mut Container, n: &str, v: Dynamic| {
        set_limit(&c.d, n, &v, &v)
    });
    engine.register_get("resource", |c: &mut Container| ResourceBuilder(c.d.clone()));
    engine.register_fn(
        "set_limit",
        |r: &mut ResourceBuilder, n: &str, s: Dynamic, h: Dynamic| set_limit(&r.0, n, &s, &h),
    );
    engine.register_fn(
        "set_limit",
        |r: &mut ResourceBuilder, n: &str, v: Dynamic| set_limit(&r.0, n, &v, &v),
    );

    // Network.
    engine.register_fn("network", |c: &mut Container, o: Map| -> RhaiResult<()> {
        check_keys(&o, "network", &["loopback", "bridge", "address", "gateway"])?;
        let mut net = Network::default();
        if let Some(v) = o.get("loopback") {
            net.loopback = bool_of(v, "network loopback")?;
        }
        let s = |k: &str| {
            o.get(k)
                .map(|v| as_string(v, &format!("network {k}")))
                .transpose()
        };
        if let Some(bridge) = s("bridge")? {
            let address = s("address")?.ok_or_else(|| {
                dsl_error("network: a bridge needs an 'address' such as 10.0.5.2/24")
            })?;
            validate_cidr(&address)?;
            let gateway = s("gateway")?;
            if let Some(g) = &gateway {
                g.parse::<std::net::Ipv4Addr>().map_err(|_| {
                    dsl_error(format!("network gateway: '{g}' is not an IPv4 address"))
                })?;
            }
            if bridge.is_empty() || bridge.len() > 15 {
                return Err(dsl_error(format!(
                    "network bridge: invalid interface name '{bridge}'"
                )));
            }
            net.bridge = Some(BridgeNetwork {
                bridge,
                address,
                gateway,
            });
        }
        let mut d = c.d.borrow_mut();
        if !d.spec.namespaces.unshare.contains(&NsKind::Net) {
            d.spec.namespaces.unshare.push(NsKind::Net);
        }
        d.spec.network = net;
        Ok(())
    });
}

/// Parses a `devices.allow` entry: a host device path (`/dev/fuse`, `/dev/fuse rw`) or a
/// rule in the cgroup v1 form (`c 10:229 rwm`, `c 136:* rw`, `b *:* m`).
pub fn parse_device(s: &str) -> Result<DeviceAllow, String> {
    let bad = |why: &str| {
        format!("devices.allow '{s}': {why}; expected \"/dev/NAME [rwm]\" or \"c|b|a MAJOR:MINOR rwm\" (MAJOR and MINOR may be *)")
    };
    let parts: Vec<&str> = s.split_whitespace().collect();
    let access_of = |a: Option<&&str>| -> Result<String, String> {
        let a = a.copied().unwrap_or("rwm");
        if a.is_empty() || !a.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(bad("access must be made of r, w and m"));
        }
        Ok(a.to_string())
    };
    if let Some(path) = parts.first().filter(|p| p.starts_with('/')) {
        if parts.len() > 2 {
            return Err(bad("too many fields"));
        }
        if !path.starts_with("/dev/") || path.split('/').any(|c| c == "..") {
            return Err(bad("a device path must be under /dev and without '..'"));
        }
        return Ok(DeviceAllow {
            path: Some(path.to_string()),
            kind: None,
            major: None,
            minor: None,
            access: access_of(parts.get(1))?,
        });
    }
    if parts.len() != 3 && parts.len() != 2 {
        return Err(bad("wrong number of fields"));
    }
    let kind = match parts[0] {
        "c" => 'c',
        "b" => 'b',
        "a" => 'a',
        _ => return Err(bad("the type must be c, b or a")),
    };
    let (maj, min) = parts[1]
        .split_once(':')
        .ok_or_else(|| bad("the numbers must be MAJOR:MINOR"))?;
    let num = |n: &str| -> Result<Option<u32>, String> {
        if n == "*" {
            Ok(None)
        } else {
            n.parse::<u32>()
                .map(Some)
                .map_err(|_| bad("MAJOR and MINOR must be numbers or *"))
        }
    };
    Ok(DeviceAllow {
        path: None,
        kind: Some(kind),
        major: num(maj)?,
        minor: num(min)?,
        access: access_of(parts.get(2))?,
    })
}

fn validate_cidr(s: &str) -> RhaiResult<()> {
    let ok = s
        .split_once('/')
        .map(|(ip, len)| {
            ip.parse::<std::net::Ipv4Addr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 32)
        })
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(dsl_error(format!(
            "network address: '{s}' is not IPv4 CIDR such as 10.0.5.2/24"
        )))
    }
}
