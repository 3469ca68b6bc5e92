//! The sandboxed Rhai engine shared by the `.haco` and `.watch` loaders, and the
//! translation of Rhai errors into `file:line:col: message`.

use rhai::{Array, Dynamic, Engine, EvalAltResult, Position};
use std::time::{Duration, Instant};

/// Operations one script run may execute before it is stopped.
pub const MAX_OPERATIONS: u64 = 2_000_000;

/// The largest definition or rule file read: what the API takes in one message (4 MiB).
/// A bigger file is refused before it is read (a 50 MB one kept `show` busy for 10 s).
pub const MAX_SOURCE_BYTES: u64 = 4 << 20;

/// Reads a `.haco` or `.watch` file, refusing one over [`MAX_SOURCE_BYTES`] without
/// reading it (and one that grows past it while read).
pub fn read_source(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let too_big = |n: u64| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{n} bytes, over the {MAX_SOURCE_BYTES} a definition or rule file may have"),
        )
    };
    let f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    if len > MAX_SOURCE_BYTES {
        return Err(too_big(len));
    }
    let mut text = String::new();
    f.take(MAX_SOURCE_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_SOURCE_BYTES {
        return Err(too_big(text.len() as u64));
    }
    Ok(text)
}

/// Wall-clock time a `.haco` evaluation may take (a definition is loaded at every
/// `run` and on the leader for every spawn).
pub const HACO_TIME_LIMIT: Duration = Duration::from_millis(1000);

/// Wall-clock time a `.watch` registration (its top-level code) may take; handlers get
/// the deadline the rule loop gives them.
pub const WATCH_TIME_LIMIT: Duration = Duration::from_millis(500);

/// A script error located in its file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{col}: {message}")]
pub struct ScriptError {
    /// The file name as the user gave it.
    pub file: String,
    /// 1-based line (0 when the position is unknown).
    pub line: usize,
    /// 1-based column (0 when unknown).
    pub col: usize,
    /// What is wrong.
    pub message: String,
}

impl ScriptError {
    /// An error at a Rhai position.
    pub fn at(file: &str, pos: Position, message: impl Into<String>) -> Self {
        ScriptError {
            file: file.to_string(),
            line: pos.line().unwrap_or(0),
            col: pos.position().unwrap_or(0),
            message: message.into(),
        }
    }

    /// Translates a Rhai parse error.
    pub fn from_parse(file: &str, err: &rhai::ParseError) -> Self {
        let msg = err.err_type().to_string();
        ScriptError::at(file, err.position(), msg)
    }

    /// Translates a Rhai runtime error: the innermost cause and its position.
    pub fn from_eval(file: &str, err: &EvalAltResult) -> Self {
        let mut pos = err.position();
        let mut cur = err;
        while let EvalAltResult::ErrorInFunctionCall(_, _, inner, p) = cur {
            if !p.is_none() {
                pos = *p;
            }
            cur = inner;
        }
        if !cur.position().is_none() {
            pos = cur.position();
        }
        ScriptError::at(file, pos, describe(cur))
    }
}

/// A human sentence for the innermost Rhai error.
fn describe(err: &EvalAltResult) -> String {
    match err {
        EvalAltResult::ErrorRuntime(d, _) => runtime_text(d),
        EvalAltResult::ErrorFunctionNotFound(sig, _) => {
            let name = sig.split(' ').next().unwrap_or(sig);
            if let Some(p) = name
                .strip_prefix("set$")
                .or_else(|| name.strip_prefix("get$"))
            {
                format!("unknown key '{p}'")
            } else if let Some(p) = name.strip_prefix("index$set$") {
                format!("indexing is not supported here ({p})")
            } else {
                format!("unknown function or wrong arguments: {sig}")
            }
        }
        EvalAltResult::ErrorPropertyNotFound(p, _) => format!("unknown key '{p}'"),
        EvalAltResult::ErrorTooManyModules(_) => {
            "`import` is not allowed: scripts cannot load modules".into()
        }
        EvalAltResult::ErrorTooManyOperations(_) => format!(
            "the script ran more than {MAX_OPERATIONS} operations (endless loop?) and was stopped"
        ),
        EvalAltResult::ErrorTerminated(token, _) => match token.as_int() {
            Ok(ms) if ms >= 0 => format!("the script took longer than {ms} ms and was stopped"),
            _ => "the script ran out of time and was stopped".into(),
        },
        EvalAltResult::ErrorDotExpr(msg, _) if msg.contains("property '") => {
            let name = msg.split('\'').nth(1).unwrap_or(msg);
            format!("unknown key '{name}'")
        }
        other => {
            let mut s = other.to_string();
            // Rhai appends " (line x, position y)"; the prefix carries it already.
            if let Some(i) = s.rfind(" (line ") {
                s.truncate(i);
            }
            s
        }
    }
}

fn runtime_text(d: &Dynamic) -> String {
    d.clone()
        .into_immutable_string()
        .map(|s| s.to_string())
        .unwrap_or_else(|_| d.to_string())
}

/// What DSL functions return.
pub type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

/// A string, or a number or boolean written as one.
pub fn as_string(v: &Dynamic, what: &str) -> RhaiResult<String> {
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

/// A list of strings, or one string.
pub fn string_list(v: &Dynamic, what: &str) -> RhaiResult<Vec<String>> {
    if v.is_array() {
        let arr: Array = v.clone().into_array().unwrap_or_default();
        arr.iter().map(|x| as_string(x, what)).collect()
    } else {
        Ok(vec![as_string(v, what)?])
    }
}

/// An integer.
pub fn int_of(v: &Dynamic, what: &str) -> RhaiResult<i64> {
    v.as_int()
        .map_err(|t| dsl_error(format!("{what}: expected an integer, got {t}")))
}

/// An integer that fits a u32 (ids).
pub fn u32_of(v: &Dynamic, what: &str) -> RhaiResult<u32> {
    let n = int_of(v, what)?;
    u32::try_from(n).map_err(|_| dsl_error(format!("{what}: {n} is out of range")))
}

/// A boolean.
pub fn bool_of(v: &Dynamic, what: &str) -> RhaiResult<bool> {
    v.as_bool()
        .map_err(|t| dsl_error(format!("{what}: expected true or false, got {t}")))
}

/// A runtime error raised by a DSL function; Rhai fills in the call position.
pub fn dsl_error(msg: impl Into<String>) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(
        Dynamic::from(msg.into()),
        Position::NONE,
    ))
}

/// Refuses map options a DSL call does not know, naming the ones it does.
pub fn check_keys(m: &rhai::Map, what: &str, allowed: &[&str]) -> Result<(), Box<EvalAltResult>> {
    for k in m.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(dsl_error(format!(
                "{what}: unknown option '{k}'; expected one of {}",
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

/// Stops the engine's scripts once `deadline` has passed (checked every 64 operations,
/// so one slow built-in overshoots by little); the error says "took longer than `ms`".
pub fn set_deadline(engine: &mut Engine, deadline: Instant, ms: u128) {
    let token = i64::try_from(ms).unwrap_or(i64::MAX);
    engine.on_progress(move |ops| {
        (ops % 64 == 0 && Instant::now() > deadline).then(|| Dynamic::from(token))
    });
}

/// A Rhai engine with no file, network or process access and bounded size and work:
/// at most [`MAX_OPERATIONS`] operations and `time_limit` of wall-clock time from now.
/// `spawn` (a reserved word in Rhai) is turned into an identifier so `haconiwa.spawn`
/// parses.
pub fn sandboxed_engine(time_limit: Duration) -> Engine {
    use rhai::packages::{
        BasicArrayPackage, BasicFnPackage, BasicIteratorPackage, BasicMapPackage,
        BasicStringPackage, LanguageCorePackage, MoreStringPackage, Package,
    };
    // Engine::new() builds the whole standard library, about a millisecond at every start
    // of `haconiwa run`. Operators on integers, floats, strings and booleans are built into
    // the engine; these packages add the functions and methods scripts use. Left out:
    // the arithmetic and logic packages (operators for the other integer widths), math,
    // time, blobs.
    let mut engine = Engine::new_raw();
    for module in [
        LanguageCorePackage::new().as_shared_module(),
        BasicStringPackage::new().as_shared_module(),
        MoreStringPackage::new().as_shared_module(),
        BasicIteratorPackage::new().as_shared_module(),
        BasicFnPackage::new().as_shared_module(),
        BasicArrayPackage::new().as_shared_module(),
        BasicMapPackage::new().as_shared_module(),
    ] {
        engine.register_global_module(module);
    }
    engine
        .set_max_operations(MAX_OPERATIONS)
        .set_max_string_size(64 * 1024)
        .set_max_array_size(10_000)
        .set_max_map_size(10_000)
        .set_max_call_levels(32)
        .set_max_expr_depths(64, 32)
        .set_max_variables(1_000)
        .set_max_functions(256)
        .set_max_modules(0)
        .set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new())
        .set_strict_variables(true)
        .set_fail_on_invalid_map_property(true);
    engine.disable_symbol("eval");
    set_deadline(
        &mut engine,
        Instant::now() + time_limit,
        time_limit.as_millis(),
    );
    engine.on_print(|s| eprintln!("{s}"));
    engine.on_debug(|s, _, pos| eprintln!("{pos:?}: {s}"));
    #[allow(deprecated)] // volatile, not deprecated: the only way to un-reserve `spawn`
    engine.on_parse_token(|token, _pos, _state| match token {
        rhai::Token::Reserved(s) if s.as_str() == "spawn" => rhai::Token::Identifier(s),
        other => other,
    });
    engine
        .register_fn("uuid_short", uuid_short)
        .register_fn("rand", rand_range);
    engine
}

/// Eight random hex digits, as the original's `uuid_short`-style demo names.
pub fn uuid_short() -> String {
    let mut b = [0u8; 4];
    fill_random(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A uniform-enough integer in `a..=b`, total over every pair of bounds.
fn rand_range(a: i64, b: i64) -> Result<i64, Box<EvalAltResult>> {
    if a > b {
        return Err(dsl_error(format!(
            "rand({a}, {b}): the first bound is above the second"
        )));
    }
    // In i128 the span of any two i64 bounds fits (at most 2^64).
    let span = (b as i128 - a as i128 + 1) as u128;
    let mut buf = [0u8; 16];
    fill_random(&mut buf);
    let offset = (u128::from_le_bytes(buf) % span) as i128;
    Ok((a as i128 + offset) as i64)
}

/// Fills `buf` with unpredictable bytes (std's per-process random hash keys; no syscalls
/// or unsafe code in the spec layer).
pub fn fill_random(buf: &mut [u8]) {
    use std::hash::{BuildHasher, Hasher};
    for chunk in buf.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x6861_636f_6e69_7761);
        let v = h.finish().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rand_is_total() {
        for (a, b) in [
            (i64::MIN, i64::MAX),
            (i64::MIN, i64::MIN),
            (i64::MAX, i64::MAX),
            (-1, 0),
            (0, i64::MAX),
            (i64::MIN, 0),
        ] {
            for _ in 0..100 {
                let r = rand_range(a, b).unwrap();
                assert!((a..=b).contains(&r));
            }
        }
        assert!(rand_range(1, 0).is_err());
    }

    #[test]
    fn a_slow_script_is_stopped_by_the_clock() {
        let engine = sandboxed_engine(Duration::from_millis(100));
        let t0 = Instant::now();
        // Few operations, each slow: the operation cap alone would let it run for long.
        let err = engine
            .run(r#"let s = "x"; for i in 0..15 { s += s; } let n = 0; loop { n += s.index_of("y"); }"#)
            .unwrap_err();
        assert!(
            t0.elapsed() < Duration::from_millis(1000),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!(
            describe(&err),
            "the script took longer than 100 ms and was stopped"
        );
    }
}
