//! The arrows docs/architecture.md draws, checked: every `crate::…` and `super::…` path in
//! `src/` is resolved to the module it names, and a path that points up (or sideways
//! where the map forbids it) fails the test with the file and the line. Every file of
//! `src/` is named in the map.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The crate's layers, bottom up: a module uses only the ones before it.
const LAYERS: [&str; 11] = [
    "api",
    "spec",
    "launcher",
    "image",
    "runtime",
    "oci",
    "cluster",
    "decide",
    "supervisor",
    "mirror",
    "cli",
];

/// Inside `supervisor`, bottom up (`mod` wires them all together).
const SUPERVISOR: [(&str, u8); 22] = [
    ("error", 0),
    ("secrets", 0),
    ("config", 0),
    ("admission", 0),
    ("stats", 0),
    ("mirror_report", 0),
    ("requests", 0),
    ("picture", 0),
    ("peers", 1),
    ("shared", 2),
    ("definitions", 3),
    ("images", 3),
    ("probes", 3),
    ("reports", 3),
    ("restarts", 3),
    ("storage", 3),
    ("quorum", 3),
    ("network", 3),
    ("leader", 4),
    ("agent", 4),
    ("endpoints", 5),
    ("mod", 6),
];

/// The modules that may speak protobuf (`api::pb`): the wire's edge.
const PROTOBUF_EDGE: [&str; 3] = ["api", "cli", "supervisor::endpoints"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file: `src/supervisor/leader/ops.rs` → `supervisor::leader::ops`.
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| {
            c.as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string()
        })
        .collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    parts
}

/// Every path the code names from `crate::` or `super::`, resolved to an absolute module
/// path (its first two segments are enough here), with its line.
fn paths(module: &[String], text: &str) -> Vec<(usize, Vec<String>)> {
    // A file's `super::` is its module's parent; a `mod.rs`'s module is its directory.
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        if line.contains("#[cfg(test)]") {
            // Tests below the code use whatever they test with.
            break;
        }
        let mut rest = line;
        while let Some(i) = rest.find(['c', 's']) {
            let tail = &rest[i..];
            let (mut base, after) = if let Some(a) = tail.strip_prefix("crate::") {
                (Vec::new(), a)
            } else if let Some(a) = tail.strip_prefix("super::") {
                (module[..module.len().saturating_sub(1)].to_vec(), a)
            } else {
                rest = &rest[i + 1..];
                continue;
            };
            // Not part of a longer identifier (`my_crate::`).
            if i > 0 && rest[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                rest = &rest[i + 1..];
                continue;
            }
            let mut after = after;
            while let Some(a) = after.strip_prefix("super::") {
                base.pop();
                after = a;
            }
            for p in expand(base, after) {
                out.push((n + 1, p));
            }
            rest = &rest[i + 6..];
        }
    }
    out
}

/// The paths `base::<after>` names, two segments deep at most (`a::{b, c::d}` gives
/// `a::b` and `a::c`).
fn expand(base: Vec<String>, after: &str) -> Vec<Vec<String>> {
    if let Some(group) = after.strip_prefix('{') {
        let mut depth = 0;
        let mut end = group.len();
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    end = i;
                    break;
                }
                '}' => depth -= 1,
                _ => {}
            }
        }
        let mut out = Vec::new();
        let mut item = String::new();
        let mut d = 0;
        for c in group[..end].chars().chain(std::iter::once(',')) {
            match c {
                '{' => d += 1,
                '}' => d -= 1,
                ',' if d == 0 => {
                    let t = item.trim();
                    if !t.is_empty() && t != "self" {
                        out.extend(expand(base.clone(), t));
                    }
                    item.clear();
                    continue;
                }
                _ => {}
            }
            item.push(c);
        }
        return out;
    }
    let seg: String = after
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if seg.is_empty() {
        return Vec::new();
    }
    let mut p = base;
    p.push(seg.clone());
    if p.len() >= 2 {
        return vec![p];
    }
    match after[seg.len()..].strip_prefix("::") {
        Some(more) => {
            let deeper = expand(p.clone(), more);
            if deeper.is_empty() {
                vec![p]
            } else {
                deeper
            }
        }
        None => vec![p],
    }
}

fn layer(m: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == m)
}

fn supervisor_level(m: &str) -> Option<u8> {
    SUPERVISOR.iter().find(|(n, _)| *n == m).map(|(_, l)| *l)
}

/// The source files of `src/`: their module paths and texts.
fn sources() -> Vec<(Vec<String>, String)> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files
        .iter()
        .map(|f| (module_of(f), std::fs::read_to_string(f).unwrap()))
        .collect()
}

/// The arrows of `sources` that the map forbids: `module:line: from -> to`.
fn wrong_arrows(sources: &[(Vec<String>, String)]) -> Vec<String> {
    let mut wrong = Vec::new();
    for (me, text) in sources {
        let Some(top) = me.first() else { continue };
        let Some(my_layer) = layer(top) else { continue };
        for (line, p) in paths(me, text) {
            let Some(target) = p.first() else { continue };
            let shown = || format!("{}:{line}: -> {}", me.join("::"), p.join("::"));
            let at_edge = PROTOBUF_EDGE.iter().any(|e| {
                let edge: Vec<&str> = e.split("::").collect();
                me.len() >= edge.len() && me.iter().zip(&edge).all(|(a, b)| a == b)
            });
            if p == ["api", "pb"] && !at_edge {
                wrong.push(shown());
                continue;
            }
            if let Some(t) = layer(target) {
                if t > my_layer {
                    wrong.push(shown());
                    continue;
                }
            }
            // Inside supervisor: the level of the inner module named.
            if top == "supervisor" && target == "supervisor" {
                let mine = me.get(1).map(String::as_str).unwrap_or("mod");
                let Some(theirs) = p.get(1) else { continue };
                if mine == theirs {
                    continue;
                }
                match (supervisor_level(mine), supervisor_level(theirs)) {
                    (Some(a), Some(b)) if b < a => {}
                    (Some(_), Some(_)) => wrong.push(shown()),
                    _ => wrong.push(format!(
                        "{}: supervisor::{mine} or ::{theirs} is not in the map",
                        shown()
                    )),
                }
            }
        }
    }
    wrong
}

#[test]
fn the_arrows_point_down_as_the_map_draws_them() {
    let wrong = wrong_arrows(&sources());
    assert!(
        wrong.is_empty(),
        "arrows the map forbids:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_check_sees_an_arrow_that_points_up() {
    // What the check says of `spec` using `cluster`, of `shared` using `agent` (two ways),
    // of the agent using the leader, of protobuf below the edge (two ways), from lines as
    // a source file holds them.
    let module = |m: &str| m.split("::").map(str::to_string).collect::<Vec<_>>();
    let probes = vec![
        (
            module("spec::probe"),
            "use crate::cluster::state::ClusterState;\n".to_string(),
        ),
        (
            module("supervisor::shared"),
            "use super::agent::Agent;\nuse crate::supervisor::{error, agent};\n".to_string(),
        ),
        (
            module("supervisor::agent"),
            "use super::leader::ops;\n".to_string(),
        ),
        (
            module("supervisor::leader::ops"),
            "use crate::api::pb;\nuse crate::api::{lazy_channel, pb::JoinRequest};\n".to_string(),
        ),
        (
            module("supervisor::endpoints::calls"),
            "use crate::api::pb::JoinRequest;\n".to_string(),
        ),
        (
            module("image::probe"),
            "fn f() { let _ = my_crate::cluster::x; }\n".to_string(),
        ),
    ];
    let wrong = wrong_arrows(&probes);
    assert_eq!(
        wrong,
        [
            "spec::probe:1: -> cluster::state",
            "supervisor::shared:1: -> supervisor::agent",
            "supervisor::shared:2: -> supervisor::agent",
            "supervisor::agent:1: -> supervisor::leader",
            "supervisor::leader::ops:1: -> api::pb",
            "supervisor::leader::ops:2: -> api::pb",
        ]
    );
}

#[test]
fn every_file_of_src_is_in_the_map() {
    let map =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/architecture.md"))
            .unwrap();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut missing = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(src()).unwrap().to_path_buf();
        let name = rel.file_name().unwrap().to_string_lossy().to_string();
        if ["lib.rs", "main.rs", "mod.rs"].contains(&name.as_str()) {
            continue;
        }
        // Named by its file name (`store.rs`) or its directory (`seccomp/`).
        let dir = rel
            .parent()
            .and_then(|p| p.file_name())
            .map(|d| format!("{}/", d.to_string_lossy()));
        let named = map.contains(&format!("`{name}`"))
            || map.contains(&format!("{name}`"))
            || map.contains(&format!("`{}`", rel.display()))
            || dir
                .as_ref()
                .is_some_and(|d| map.contains(&format!("`{d}`")) && rel.components().count() > 2);
        if !named {
            missing.insert(rel.display().to_string(), ());
        }
    }
    assert!(
        missing.is_empty(),
        "files of src/ docs/architecture.md does not name: {:?}",
        missing.keys().collect::<Vec<_>>()
    );
}

/// The most lines a file of `src/` may hold before its tests: beyond it a file holds more
/// than one job (issue 21).
const MAX_LINES: usize = 700;

#[test]
fn no_file_of_src_holds_more_than_700_lines_before_its_tests() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            let n = text
                .lines()
                .take_while(|l| !l.contains("#[cfg(test)]"))
                .count();
            (n > MAX_LINES).then(|| format!("{} ({n})", f.display()))
        })
        .collect();
    long.sort();
    assert!(long.is_empty(), "files over {MAX_LINES} lines: {long:?}");
}

/// The leader's bookkeeping (`Liveness`: heartbeats heard, applied indexes, leading
/// since) is the leader's own: outside `supervisor::leader` only its declaration in
/// `shared.rs` names it.
#[test]
fn only_the_leader_touches_its_liveness_bookkeeping() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut outside = Vec::new();
    for f in files {
        let rel = f.strip_prefix(src()).unwrap().to_string_lossy().to_string();
        if rel.starts_with("supervisor/leader/") || rel == "decide/health.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let decl = rel == "supervisor/shared.rs"
                && (line.trim_start().starts_with("pub liveness:")
                    || line.trim_start().starts_with("liveness: Mutex::new"));
            if line.contains("liveness") && !decl && !line.trim_start().starts_with("//") {
                outside.push(format!("{rel}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        outside.is_empty(),
        "the leader's Liveness used outside supervisor::leader: {outside:#?}"
    );
}
