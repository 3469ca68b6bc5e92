//! The `.watch` loader: watcher rules as Rhai scripts (`haconiwa.watch(|w| ...)`). A rule
//! registers handlers for events (`cluster`, `container_exit`, `node_down`, `node_up`,
//! `timer`); evaluating it against a view of the cluster gives intents (spawn, kill,
//! log). Pure: the leader decides when to evaluate and carries the intents out.

use super::script::{
    check_keys, dsl_error, sandboxed_engine, set_deadline, RhaiResult, ScriptError,
    WATCH_TIME_LIMIT,
};
use rhai::{Array, Dynamic, Engine, FnPtr, Map, NativeCallContext, Position, Scope, AST};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Instant;

mod model;
pub use model::*;

#[derive(Clone)]
struct Registered {
    kind: String,
    every: Option<u64>,
    f: FnPtr,
    /// Where the handler was registered (for errors without a position of their own).
    pos: Position,
}

#[derive(Default)]
struct Shared {
    handlers: Vec<Registered>,
    intents: Vec<Intent>,
    defined: bool,
    update: Option<crate::spec::update::UpdatePolicy>,
}

/// The `haconiwa` constant of a `.watch` script.
#[derive(Clone)]
struct WatchHandle(Rc<RefCell<Shared>>);

/// The `w` argument of `haconiwa.watch(|w| ...)`.
#[derive(Clone)]
struct Registrar(Rc<RefCell<Shared>>);

/// `event.cluster`.
#[derive(Clone)]
struct ClusterHandle(Rc<dyn ClusterView>);

/// The `event` argument of a handler.
#[derive(Clone)]
struct EventHandle {
    kind: String,
    cluster: ClusterHandle,
    container: Dynamic,
    node: Dynamic,
}

fn labels_map(l: &BTreeMap<String, String>) -> Map {
    l.iter()
        .map(|(k, v)| (k.into(), Dynamic::from(v.clone())))
        .collect()
}

fn container_map(c: &ViewContainer) -> Dynamic {
    let mut m = Map::new();
    m.insert("id".into(), c.id.clone().into());
    m.insert("definition".into(), c.definition.clone().into());
    m.insert("node".into(), Dynamic::from(c.node as i64));
    m.insert("state".into(), c.state.clone().into());
    m.insert("desired".into(), c.desired.clone().into());
    m.insert(
        "exit_code".into(),
        c.exit_code
            .map(|x| Dynamic::from(x as i64))
            .unwrap_or(Dynamic::UNIT),
    );
    m.insert("labels".into(), labels_map(&c.labels).into());
    m.insert(
        "rule".into(),
        c.rule.clone().map(Dynamic::from).unwrap_or(Dynamic::UNIT),
    );
    m.into()
}

fn node_map(n: &ViewNode) -> Dynamic {
    let mut m = Map::new();
    m.insert("id".into(), Dynamic::from(n.id as i64));
    m.insert("addr".into(), n.addr.clone().into());
    m.insert("state".into(), n.state.clone().into());
    m.insert("labels".into(), labels_map(&n.labels).into());
    m.insert("containers".into(), Dynamic::from(n.containers));
    m.into()
}

fn as_str(v: &Dynamic, what: &str) -> RhaiResult<String> {
    v.clone()
        .into_string()
        .map_err(|t| dsl_error(format!("{what}: expected a string, got {t}")))
}

fn string_map(v: &Dynamic, what: &str) -> RhaiResult<BTreeMap<String, String>> {
    let m = v
        .clone()
        .try_cast::<Map>()
        .ok_or_else(|| dsl_error(format!("{what}: expected a map such as #{{zone: \"a\"}}")))?;
    m.into_iter()
        .map(|(k, v)| {
            Ok((
                k.to_string(),
                if v.is_string() {
                    as_str(&v, what)?
                } else {
                    v.to_string()
                },
            ))
        })
        .collect()
}

fn register_kind(
    s: &Rc<RefCell<Shared>>,
    kind: &str,
    every: Option<u64>,
    f: FnPtr,
    pos: Position,
) -> RhaiResult<()> {
    if !EVENT_KINDS.contains(&kind) {
        return Err(dsl_error(format!(
            "unknown event '{kind}'; expected one of {}",
            EVENT_KINDS.join(", ")
        )));
    }
    if kind == "timer" && every.is_none() {
        return Err(dsl_error(
            "a timer needs its interval: w.watch(\"timer\", #{ every: 1000 }, |e| { ... })",
        ));
    }
    if kind != "timer" && every.is_some() {
        return Err(dsl_error(format!(
            "'every' only applies to timers, not to '{kind}'"
        )));
    }
    s.borrow_mut().handlers.push(Registered {
        kind: kind.to_string(),
        every,
        f,
        pos,
    });
    Ok(())
}

/// The rule engine: the sandbox plus the `.watch` vocabulary.
// Long by nature: one registration per DSL function; split, the vocabulary would scatter.
fn engine_for(shared: Rc<RefCell<Shared>>) -> Engine {
    let mut engine = sandboxed_engine(WATCH_TIME_LIMIT);
    engine.register_type_with_name::<WatchHandle>("Haconiwa");
    engine.register_type_with_name::<Registrar>("Watcher");
    engine.register_type_with_name::<ClusterHandle>("Cluster");
    engine.register_type_with_name::<EventHandle>("Event");

    engine.register_fn(
        "watch",
        |ctx: NativeCallContext, h: &mut WatchHandle, f: FnPtr| -> RhaiResult<()> {
            if h.0.borrow().defined {
                return Err(dsl_error("a .watch file calls haconiwa.watch once"));
            }
            h.0.borrow_mut().defined = true;
            let _ = f.call_within_context::<Dynamic>(&ctx, (Registrar(h.0.clone()),))?;
            Ok(())
        },
    );
    engine.register_fn(
        "watch",
        |ctx: NativeCallContext, w: &mut Registrar, kind: &str, f: FnPtr| {
            register_kind(&w.0, kind, None, f, ctx.call_position())
        },
    );
    engine.register_fn(
        "watch",
        |ctx: NativeCallContext,
         w: &mut Registrar,
         kind: &str,
         o: Map,
         f: FnPtr|
         -> RhaiResult<()> {
            check_keys(&o, "watch", &["every"])?;
            let every = match o.get("every") {
                Some(v) => {
                    let n = v
                        .as_int()
                        .map_err(|t| dsl_error(format!("every: expected milliseconds, got {t}")))?;
                    if !(10..=86_400_000).contains(&n) {
                        return Err(dsl_error(format!(
                            "every: {n} ms is outside 10 ms .. 1 day"
                        )));
                    }
                    Some(n as u64)
                }
                None => None,
            };
            register_kind(&w.0, kind, every, f, ctx.call_position())
        },
    );
    engine.register_fn("update", |w: &mut Registrar, o: Map| -> RhaiResult<()> {
        let policy = crate::spec::update::from_map(&o)?;
        let mut s = w.0.borrow_mut();
        if s.update.is_some() {
            return Err(dsl_error("a rule calls w.update once"));
        }
        s.update = Some(policy);
        Ok(())
    });
    engine.register_fn(
        "every",
        |ctx: NativeCallContext, w: &mut Registrar, ms: i64, f: FnPtr| -> RhaiResult<()> {
            if !(10..=86_400_000).contains(&ms) {
                return Err(dsl_error(format!(
                    "every: {ms} ms is outside 10 ms .. 1 day"
                )));
            }
            register_kind(&w.0, "timer", Some(ms as u64), f, ctx.call_position())
        },
    );

    // Actions.
    engine.register_fn(
        "spawn",
        |h: &mut WatchHandle, haco: &str| -> RhaiResult<()> {
            if !haco.ends_with(".haco") {
                return Err(dsl_error(format!("spawn: '{haco}' is not a .haco file")));
            }
            h.0.borrow_mut().intents.push(Intent::Spawn {
                haco: haco.to_string(),
                node: None,
                node_labels: BTreeMap::new(),
                count: 1,
            });
            Ok(())
        },
    );
    engine.register_fn("spawn", |h: &mut WatchHandle, o: Map| -> RhaiResult<()> {
        check_keys(&o, "spawn", &["haco", "node", "node_labels", "count"])?;
        let haco = as_str(
            o.get("haco")
                .ok_or_else(|| dsl_error("spawn: missing 'haco'"))?,
            "spawn haco",
        )?;
        if !haco.ends_with(".haco") {
            return Err(dsl_error(format!("spawn: '{haco}' is not a .haco file")));
        }
        let node =
            match o.get("node") {
                Some(v) => Some(
                    u64::try_from(v.as_int().map_err(|t| {
                        dsl_error(format!("spawn node: expected a node id, got {t}"))
                    })?)
                    .map_err(|_| dsl_error("spawn node: expected a node id"))?,
                ),
                None => None,
            };
        let node_labels = match o.get("node_labels") {
            Some(v) => string_map(v, "spawn node_labels")?,
            None => BTreeMap::new(),
        };
        let count = match o.get("count") {
            Some(v) => v
                .as_int()
                .map_err(|t| dsl_error(format!("spawn count: expected an integer, got {t}")))?,
            None => 1,
        };
        if !(0..=MAX_SPAWN_COUNT).contains(&count) {
            return Err(dsl_error(format!(
                "spawn count: must be between 0 and {MAX_SPAWN_COUNT}, got {count}"
            )));
        }
        if count > 0 {
            h.0.borrow_mut().intents.push(Intent::Spawn {
                haco,
                node,
                node_labels,
                count: count as u64,
            });
        }
        Ok(())
    });
    engine.register_fn("kill", |h: &mut WatchHandle, id: &str| {
        h.0.borrow_mut()
            .intents
            .push(Intent::Kill { id: id.to_string() });
    });
    engine.register_fn("kill", |h: &mut WatchHandle, o: Map| -> RhaiResult<()> {
        check_keys(&o, "kill", &["definition", "count"])?;
        let definition = as_str(
            o.get("definition")
                .ok_or_else(|| dsl_error("kill: missing 'definition'"))?,
            "kill definition",
        )?;
        let count = match o.get("count") {
            Some(v) => v
                .as_int()
                .map_err(|t| dsl_error(format!("kill count: expected an integer, got {t}")))?,
            None => 1,
        };
        if count < 0 {
            return Err(dsl_error("kill count: must not be negative"));
        }
        h.0.borrow_mut().intents.push(Intent::KillSome {
            definition,
            count: count as u64,
        });
        Ok(())
    });
    let s = shared.clone();
    engine.register_fn("log", move |msg: Dynamic| {
        s.borrow_mut().intents.push(Intent::Log(msg.to_string()));
    });

    // The event and the cluster view.
    engine.register_get("kind", |e: &mut EventHandle| e.kind.clone());
    engine.register_get("cluster", |e: &mut EventHandle| e.cluster.clone());
    engine.register_get("container", |e: &mut EventHandle| e.container.clone());
    engine.register_get("node", |e: &mut EventHandle| e.node.clone());
    engine.register_fn("count", |c: &mut ClusterHandle| c.0.count(CountFilter::All));
    engine.register_fn("count", |c: &mut ClusterHandle, def: &str| {
        c.0.count(CountFilter::Definition(def))
    });
    engine.register_fn(
        "count",
        |c: &mut ClusterHandle, labels: Map| -> RhaiResult<i64> {
            let want = string_map(&Dynamic::from(labels), "count")?;
            Ok(c.0.count(CountFilter::Labels(&want)))
        },
    );
    engine.register_get("nodes", |c: &mut ClusterHandle| -> Array {
        c.0.nodes().iter().map(node_map).collect()
    });
    engine.register_get("containers", |c: &mut ClusterHandle| -> Array {
        c.0.containers().iter().map(container_map).collect()
    });
    engine
}

/// Literal `.haco` names in the text, with positions (a rule names its definitions with
/// string literals, so they can be resolved when the rule is registered).
fn haco_refs(text: &str) -> Vec<HacoRef> {
    let mut out: Vec<HacoRef> = Vec::new();
    for (lineno, line) in text.lines().enumerate() {
        let bytes = line.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let q = bytes[i];
            if q == b'"' || q == b'`' {
                if let Some(end) = line[i + 1..].find(q as char) {
                    let lit = &line[i + 1..i + 1 + end];
                    if lit.ends_with(".haco")
                        && !lit.contains("${")
                        && !out.iter().any(|r| r.path == lit)
                    {
                        out.push(HacoRef {
                            path: lit.to_string(),
                            line: lineno + 1,
                            col: i + 1,
                        });
                    }
                    i += end + 2;
                    continue;
                }
            }
            if q == b'/' && bytes.get(i + 1) == Some(&b'/') {
                break;
            }
            i += 1;
        }
    }
    out
}

/// Compiles and runs the registration of a rule: syntax, event names and options are
/// checked here (file:line:col), and the `.haco` files it names are listed.
pub fn check(text: &str, file: &str) -> Result<RuleInfo, ScriptError> {
    let rule = register(text, file)?;
    let s = rule.shared.borrow();
    if !s.defined {
        return Err(ScriptError::at(
            file,
            Position::new(1, 1),
            "no rule defined: the file must call haconiwa.watch(|w| { ... })",
        ));
    }
    if s.handlers.is_empty() {
        return Err(ScriptError::at(
            file,
            Position::new(1, 1),
            "the rule watches nothing: call w.watch(\"cluster\", |event| { ... })",
        ));
    }
    Ok(RuleInfo {
        handlers: s
            .handlers
            .iter()
            .map(|h| (h.kind.clone(), h.every))
            .collect(),
        hacos: haco_refs(text),
        update: s.update.clone().unwrap_or_default(),
    })
}

/// How many compiled rules each evaluating thread keeps.
const COMPILED_CACHE: usize = 256;

/// A compiled rule: its engine (the vocabulary registered once), its AST, and the
/// registration state both refer to (the optimizer folds the `haconiwa` constant, which
/// holds it, into the AST).
struct CompiledRule {
    engine: RefCell<Engine>,
    ast: AST,
    shared: Rc<RefCell<Shared>>,
}

thread_local! {
    /// Compiled rules by file and text, per thread (an AST is not `Send` without Rhai's
    /// `sync` feature, and the leader evaluates on a few blocking threads): a rule is
    /// parsed, and its engine built, once per thread, not at every evaluation.
    static COMPILED: RefCell<HashMap<(String, String), Rc<CompiledRule>>> =
        RefCell::new(HashMap::new());
}

/// Compiles (or takes from this thread's cache) and runs the registration of a rule,
/// with a fresh registration state.
fn register(text: &str, file: &str) -> Result<Rc<CompiledRule>, ScriptError> {
    let key = (file.to_string(), text.to_string());
    let rule = match COMPILED.with(|c| c.borrow().get(&key).cloned()) {
        Some(rule) => {
            *rule.shared.borrow_mut() = Shared::default();
            rule
        }
        None => {
            let shared: Rc<RefCell<Shared>> = Rc::default();
            let engine = engine_for(shared.clone());
            let mut scope = Scope::new();
            scope.push_constant("haconiwa", WatchHandle(shared.clone()));
            let ast = engine
                .compile_with_scope(&scope, text)
                .map_err(|e| ScriptError::from_parse(file, &e))?;
            let rule = Rc::new(CompiledRule {
                engine: RefCell::new(engine),
                ast,
                shared,
            });
            COMPILED.with(|c| {
                let mut c = c.borrow_mut();
                if c.len() >= COMPILED_CACHE {
                    c.clear();
                }
                c.insert(key, rule.clone());
            });
            rule
        }
    };
    let mut engine = rule.engine.borrow_mut();
    let limit = Instant::now() + WATCH_TIME_LIMIT;
    set_deadline(&mut engine, limit, WATCH_TIME_LIMIT.as_millis());
    let mut scope = Scope::new();
    scope.push_constant("haconiwa", WatchHandle(rule.shared.clone()));
    engine
        .run_ast_with_scope(&mut scope, &rule.ast)
        .map_err(|e| ScriptError::from_eval(file, &e))?;
    drop(engine);
    Ok(rule)
}

/// Evaluates a rule for some triggers against a view; returns its intents. The work is
/// bounded by the engine's operation limit and by `deadline` (wall time).
pub fn evaluate(
    text: &str,
    file: &str,
    view: impl ClusterView + 'static,
    triggers: &[Trigger],
    deadline: Instant,
) -> Result<Vec<Intent>, ScriptError> {
    let rule = register(text, file)?;
    let (mut engine, ast, shared) = (rule.engine.borrow_mut(), &rule.ast, &rule.shared);
    let ms = deadline
        .saturating_duration_since(Instant::now())
        .as_millis();
    set_deadline(&mut engine, deadline, ms);
    let view: Rc<dyn ClusterView> = Rc::new(view);
    let handlers = shared.borrow().handlers.clone();
    for t in triggers {
        for h in handlers.iter().filter(|h| h.kind == t.kind()) {
            if let Trigger::Timer(every) = t {
                if h.every != Some(*every) {
                    continue;
                }
            }
            let event = EventHandle {
                kind: t.kind().to_string(),
                cluster: ClusterHandle(view.clone()),
                container: match t {
                    Trigger::ContainerExit(c) => container_map(c),
                    _ => Dynamic::UNIT,
                },
                node: match t {
                    Trigger::NodeDown(n) | Trigger::NodeUp(n) => node_map(n),
                    _ => Dynamic::UNIT,
                },
            };
            if let Err(e) = h.f.call::<Dynamic>(&engine, ast, (event,)) {
                let mut err = ScriptError::from_eval(file, &e);
                if err.line == 0 {
                    err.line = h.pos.line().unwrap_or(0);
                    err.col = h.pos.position().unwrap_or(0);
                }
                return Err(err);
            }
        }
    }
    let intents = std::mem::take(&mut shared.borrow_mut().intents);
    Ok(intents)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const KEEP5: &str = include_str!("../../../examples/keep5.watch");

    fn view(n: usize) -> WatchView {
        let containers = (0..n)
            .map(|i| ViewContainer {
                id: format!("sleeper-{i}"),
                definition: "sleeper".into(),
                node: 1,
                state: "running".into(),
                desired: "running".into(),
                active: true,
                exit_code: None,
                labels: BTreeMap::new(),
                rule: Some("keep5".into()),
            })
            .collect();
        WatchView {
            containers,
            nodes: Vec::new(),
        }
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(2)
    }

    #[test]
    fn design_keep5_spawns_one_at_a_time_below_five() {
        let info = check(KEEP5, "keep5.watch").unwrap();
        assert_eq!(info.handlers, vec![("cluster".to_string(), None)]);
        assert_eq!(info.hacos.len(), 1);
        assert_eq!(info.hacos[0].path, "sleeper.haco");
        let i = evaluate(KEEP5, "keep5.watch", view(3), &[Trigger::Cluster], soon()).unwrap();
        assert_eq!(
            i,
            vec![Intent::Spawn {
                haco: "sleeper.haco".into(),
                node: None,
                node_labels: BTreeMap::new(),
                count: 1,
            }]
        );
        assert!(
            evaluate(KEEP5, "keep5.watch", view(5), &[Trigger::Cluster], soon())
                .unwrap()
                .is_empty()
        );
        // Other triggers do not run a cluster handler.
        assert!(evaluate(
            KEEP5,
            "keep5.watch",
            view(0),
            &[Trigger::Timer(1000)],
            soon()
        )
        .unwrap()
        .is_empty());
    }

    #[test]
    fn every_event_and_action() {
        let text = r#"haconiwa.watch(|w| {
    w.watch("container_exit", |e| { log(`exit ${e.container.id} ${e.container.exit_code}`); });
    w.watch("node_down", |e| { haconiwa.spawn(#{ haco: "db.haco", node_labels: #{ zone: "b" }, count: 3 }); });
    w.watch("node_up", |e| { haconiwa.kill(#{ definition: "db", count: 2 }); });
    w.every(500, |e| { if e.cluster.count(#{ tier: "web" }) > 0 { haconiwa.kill("web-1"); } });
    w.watch("timer", #{ every: 1000 }, |e| { log(`${e.cluster.nodes.len()} nodes, ${e.cluster.containers.len()} containers`); });
});"#;
        let info = check(text, "all.watch").unwrap();
        assert_eq!(info.hacos[0].path, "db.haco");
        assert_eq!(info.hacos[0].line, 3);
        let mut v = view(1);
        v.containers[0].labels.insert("tier".into(), "web".into());
        v.nodes.push(ViewNode {
            id: 2,
            addr: "a".into(),
            state: "down".into(),
            labels: BTreeMap::new(),
            containers: 0,
        });
        let exited = ViewContainer {
            exit_code: Some(3),
            ..v.containers[0].clone()
        };
        let triggers = [
            Trigger::ContainerExit(exited),
            Trigger::NodeDown(v.nodes[0].clone()),
            Trigger::NodeUp(v.nodes[0].clone()),
            Trigger::Timer(500),
            Trigger::Timer(1000),
        ];
        let i = evaluate(text, "all.watch", v, &triggers, soon()).unwrap();
        assert_eq!(i[0], Intent::Log("exit sleeper-0 3".into()));
        assert_eq!(
            i[1],
            Intent::Spawn {
                haco: "db.haco".into(),
                node: None,
                node_labels: [("zone".into(), "b".into())].into(),
                count: 3,
            }
        );
        assert_eq!(
            i[2],
            Intent::KillSome {
                definition: "db".into(),
                count: 2
            }
        );
        assert_eq!(i[3], Intent::Kill { id: "web-1".into() });
        assert_eq!(i[4], Intent::Log("1 nodes, 1 containers".into()));
    }

    #[test]
    fn errors_have_positions() {
        let e = check(
            "haconiwa.watch(|w| {\n  w.watch(\"clster\", |e| {});\n});",
            "r.watch",
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "r.watch:2:5: unknown event 'clster'; expected one of cluster, container_exit, node_down, node_up, timer");
        let e = check(
            "haconiwa.watch(|w| {\n  w.watch(\"cluster\", |e| { if e.x < });\n});",
            "r.watch",
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("r.watch:2:"), "{e}");
        let e = check("let x = 1;", "r.watch").unwrap_err();
        assert!(e.to_string().contains("no rule defined"), "{e}");
    }

    #[test]
    fn update_policies_read_with_nomads_defaults_and_bad_ones_have_positions() {
        use crate::spec::update::UpdatePolicy;
        let rule = |u: &str| {
            format!("haconiwa.watch(|w| {{\n  {u}\n  w.watch(\"cluster\", |e| {{}});\n}});")
        };
        assert_eq!(
            check(&rule(""), "r.watch").unwrap().update,
            UpdatePolicy::default()
        );
        let info = check(
            &rule("w.update(#{ max_parallel: 3, max_surge: 1, min_healthy_time: \"2s\", healthy_deadline: \"1m\", progress_deadline: \"3m\", stagger: \"500ms\", auto_revert: true });"),
            "r.watch",
        )
        .unwrap();
        assert_eq!(
            info.update,
            UpdatePolicy {
                max_parallel: 3,
                max_surge: 1,
                canary: 0,
                auto_promote: false,
                min_healthy_ms: 2_000,
                healthy_deadline_ms: 60_000,
                progress_deadline_ms: 180_000,
                stagger_ms: 500,
                auto_revert: true,
            }
        );
        for (bad, says) in [
            (
                "w.update(#{ max_parallel: 0 });",
                "update max_parallel: 0; expected 1 to 1000",
            ),
            (
                "w.update(#{ canaries: 1 });",
                "update: unknown option 'canaries'",
            ),
            (
                "w.update(#{ auto_promote: true });",
                "nothing to promote without canary",
            ),
            (
                "w.update(#{ min_healthy_time: \"5m\" });",
                "is not longer than min_healthy_time",
            ),
            (
                "w.update(#{ healthy_deadline: \"5m\", progress_deadline: \"1m\" });",
                "update progress_deadline: 60000 ms is shorter than healthy_deadline",
            ),
            (
                "w.update(#{ auto_revert: \"yes\" });",
                "update auto_revert: expected true or false",
            ),
            (
                "w.update(#{}); w.update(#{});",
                "a rule calls w.update once",
            ),
        ] {
            let e = check(&rule(bad), "r.watch").unwrap_err().to_string();
            assert!(
                e.starts_with("r.watch:2:") && e.contains(says),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn endless_rules_are_stopped() {
        let text = "haconiwa.watch(|w| { w.watch(\"cluster\", |e| { loop { } }); });";
        let t0 = Instant::now();
        let e = evaluate(
            text,
            "loop.watch",
            view(0),
            &[Trigger::Cluster],
            Instant::now() + Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert!(e.message.contains("stopped"), "{e}");
        assert!(e.to_string().starts_with("loop.watch:1:"), "{e}");
    }

    #[test]
    fn a_rule_is_compiled_once_per_thread_and_each_evaluation_starts_afresh() {
        let key = ("keep5.watch".to_string(), KEEP5.to_string());
        COMPILED.with(|c| c.borrow_mut().remove(&key));
        let first = evaluate(KEEP5, "keep5.watch", view(3), &[Trigger::Cluster], soon()).unwrap();
        let ast = COMPILED.with(|c| c.borrow().get(&key).map(Rc::as_ptr));
        assert!(ast.is_some(), "not cached");
        let second = evaluate(KEEP5, "keep5.watch", view(3), &[Trigger::Cluster], soon()).unwrap();
        let again = COMPILED.with(|c| c.borrow().get(&key).map(Rc::as_ptr));
        assert_eq!(ast, again, "compiled a second time");
        // No intent of the first evaluation leaks into the second.
        assert_eq!(first, second);
        assert_eq!(first.len(), 1, "{first:?}");
        let none = evaluate(KEEP5, "keep5.watch", view(5), &[Trigger::Cluster], soon()).unwrap();
        assert!(none.is_empty(), "{none:?}");
    }

    #[test]
    fn spawns_in_a_loop_become_one_batch() {
        let text = r#"haconiwa.watch(|w| {
    w.watch("cluster", |e| {
        for i in 0..3 { haconiwa.spawn("a.haco"); }
        haconiwa.spawn(#{ haco: "a.haco", count: 4 });
        haconiwa.spawn(#{ haco: "a.haco", count: 0 });
        haconiwa.spawn(#{ haco: "a.haco", node: 2 });
        haconiwa.spawn("a.haco");
    });
});"#;
        let i = evaluate(text, "loop.watch", view(0), &[Trigger::Cluster], soon()).unwrap();
        let spawn = |node, count| Intent::Spawn {
            haco: "a.haco".into(),
            node,
            node_labels: BTreeMap::new(),
            count,
        };
        assert_eq!(
            Intent::coalesce(i),
            vec![spawn(None, 7), spawn(Some(2), 1), spawn(None, 1)]
        );
        let bad = r#"haconiwa.watch(|w| { w.watch("cluster", |e| { haconiwa.spawn(#{ haco: "a.haco", count: -1 }); }); });"#;
        let e = evaluate(bad, "bad.watch", view(0), &[Trigger::Cluster], soon()).unwrap_err();
        assert!(
            e.to_string()
                .contains("spawn count: must be between 0 and 100000, got -1"),
            "{e}"
        );
    }
}
