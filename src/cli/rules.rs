//! `haconiwa watch ...`: apply, ls and rm a rule; `watch history NAME`, a rule's
//! versions as the cluster keeps them (number, time, status, digests) with what changed
//! from one to the next (a line diff of the rule and of each definition); `watch
//! rollback`, the way back to one of them; `watch promote`, a version's canaries.

use super::CliError;
use crate::api::pb;
use crate::api::pb::cluster_client::ClusterClient;
use crate::api::AuthChannel;
use std::collections::BTreeMap;

/// `haconiwa watch apply`: sends the checked rule and the definitions it names.
pub async fn apply(
    c: &mut ClusterClient<AuthChannel>,
    req: pb::ApplyRuleRequest,
) -> Result<(), CliError> {
    let r = c
        .apply_rule(req)
        .await
        .map_err(super::remote::status_error)?
        .into_inner();
    let rule = r.rule.unwrap_or_default();
    println!(
        "rule {} applied, version {} ({} definition(s): {})",
        rule.name,
        rule.version,
        rule.definitions.len(),
        rule.definitions.join(", ")
    );
    Ok(())
}

/// `haconiwa watch ls`: the rules, and those etcd offered that were refused.
pub async fn ls(c: &mut ClusterClient<AuthChannel>, json: bool) -> Result<(), CliError> {
    let r = c
        .list_rules(pb::ListRulesRequest {})
        .await
        .map_err(super::remote::status_error)?
        .into_inner();
    // Rules registered through etcd that were refused never reach the state:
    // the leader's mirror tells what became of them.
    let sources = c
        .mirror_status(pb::MirrorStatusRequest {})
        .await
        .map(|m| m.into_inner().rules_in)
        .unwrap_or_default();
    if json {
        let v: Vec<serde_json::Value> = r
            .rules
            .iter()
            .map(|x| {
                serde_json::json!({
                    "name": x.name,
                    "version": x.version,
                    "rollout": x.rollout,
                    "digest": x.digest,
                    "last_evaluation_index": x.last_evaluation_index,
                    "evaluations": x.evaluations,
                    "last_error": x.last_error,
                    "definitions": x.definitions,
                    "containers": {
                        "active": x.active,
                        "running": x.running,
                        "healthy": x.healthy,
                        "restarting": x.restarting,
                        "outdated": x.outdated,
                    },
                })
            })
            .collect();
        let refused: Vec<serde_json::Value> = sources
            .iter()
            .filter(|x| !x.ok)
            .map(super::remote::rule_source_json)
            .collect();
        if refused.is_empty() {
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            let all = serde_json::json!({ "rules": v, "refused_from_etcd": refused });
            println!("{}", serde_json::to_string_pretty(&all)?);
        }
    } else {
        println!(
            "{:<20} {:>7} {:<10} {:<14} {:>10} {:>6} {:>6} {:>7} {:>7} {:>10} {:>8}  LAST ERROR",
            "NAME",
            "VERSION",
            "ROLLOUT",
            "DIGEST",
            "LAST EVAL",
            "EVALS",
            "ACTIVE",
            "RUNNING",
            "HEALTHY",
            "RESTARTING",
            "OUTDATED"
        );
        for x in &r.rules {
            println!(
                "{:<20} {:>7} {:<10} {:<14} {:>10} {:>6} {:>6} {:>7} {:>7} {:>10} {:>8}  {}",
                x.name,
                x.version,
                x.rollout,
                &x.digest[..12.min(x.digest.len())],
                x.last_evaluation_index,
                x.evaluations,
                x.active,
                x.running,
                x.healthy,
                x.restarting,
                x.outdated,
                if x.last_error.is_empty() {
                    "-"
                } else {
                    &x.last_error
                }
            );
        }
        for x in sources.iter().filter(|x| !x.ok) {
            println!(
                "{:<20} {:>7} {:<10} {:<14} {:>10} {:>6} {:>6} {:>7} {:>7} {:>10} {:>8}  refused from etcd: {}",
                x.name, "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", x.error
            );
        }
    }
    Ok(())
}

/// `haconiwa watch rm NAME`.
pub async fn rm(c: &mut ClusterClient<AuthChannel>, name: String) -> Result<(), CliError> {
    c.remove_rule(pb::RemoveRuleRequest { name: name.clone() })
        .await
        .map_err(super::remote::status_error)?;
    println!("rule {name} removed");
    Ok(())
}

/// `watch history NAME [--json]`.
pub async fn history(
    c: &mut ClusterClient<AuthChannel>,
    name: &str,
    json: bool,
) -> Result<(), CliError> {
    let r = c
        .rule_history(pb::RuleHistoryRequest { name: name.into() })
        .await
        .map_err(super::remote::status_error)?
        .into_inner();
    if json {
        let v: Vec<serde_json::Value> = r
            .versions
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let before = i.checked_sub(1).and_then(|j| r.versions.get(j));
                serde_json::json!({
                    "version": v.version,
                    "current": v.current,
                    "status": v.status,
                    "reason": v.reason,
                    "digest": v.digest,
                    "file": v.file,
                    "applied_index": v.applied_index,
                    "applied_at_ms": v.applied_at_ms,
                    "rollback_of": (v.rollback_of != 0).then_some(v.rollback_of),
                    "promoted": v.promoted,
                    "definitions": v.definitions.iter()
                        .map(|d| (d.file.clone(), d.digest.clone()))
                        .collect::<BTreeMap<String, String>>(),
                    "changes": before.map(|b| changes(b, v)),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<9} {:<23} {:<11} {:<14} {:<30}  NOTE",
        "VERSION", "APPLIED", "STATUS", "RULE", "DEFINITIONS"
    );
    for v in &r.versions {
        let defs: Vec<String> = v
            .definitions
            .iter()
            .map(|d| format!("{}={}", d.file, short(&d.digest)))
            .collect();
        let mut note = Vec::new();
        if v.rollback_of != 0 {
            note.push(format!("brings back version {}", v.rollback_of));
        }
        if v.promoted {
            note.push("promoted".into());
        }
        if !v.reason.is_empty() {
            note.push(v.reason.clone());
        }
        println!(
            "{:<9} {:<23} {:<11} {:<14} {:<30}  {}",
            format!("{}{}", v.version, if v.current { " *" } else { "" }),
            utc(v.applied_at_ms),
            v.status,
            short(&v.digest),
            defs.join(" "),
            if note.is_empty() {
                "-".to_string()
            } else {
                note.join("; ")
            }
        );
    }
    for pair in r.versions.windows(2) {
        let lines = changes(&pair[0], &pair[1]);
        println!();
        println!(
            "version {} (from version {}):",
            pair[1].version, pair[0].version
        );
        if lines.is_empty() {
            println!("  no change");
        }
        for l in lines {
            println!("  {l}");
        }
    }
    Ok(())
}

/// `watch rollback NAME [VERSION]`.
pub async fn rollback(
    c: &mut ClusterClient<AuthChannel>,
    name: &str,
    version: Option<u64>,
) -> Result<(), CliError> {
    let r = c
        .rollback_rule(pb::RollbackRuleRequest {
            name: name.into(),
            version: version.unwrap_or(0),
        })
        .await
        .map_err(super::remote::status_error)?
        .into_inner();
    println!(
        "rule {name} rolled back: version {} brings back version {}",
        r.version, r.rollback_of
    );
    Ok(())
}

/// `watch promote NAME [VERSION]`.
pub async fn promote(
    c: &mut ClusterClient<AuthChannel>,
    name: &str,
    version: Option<u64>,
) -> Result<(), CliError> {
    let r = c
        .promote_rule(pb::PromoteRuleRequest {
            name: name.into(),
            version: version.unwrap_or(0),
        })
        .await
        .map_err(super::remote::status_error)?
        .into_inner();
    println!("rule {name}: version {} promoted", r.version);
    Ok(())
}

fn short(d: &str) -> &str {
    &d[..12.min(d.len())]
}

/// Ms since the epoch as a UTC time ("-" when unknown).
fn utc(ms: u64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64) else {
        return "-".into();
    };
    if ms == 0 {
        return "-".into();
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// What changed from `a` to `b`: the rule's text and each definition's, as line diffs
/// under a header naming the file.
fn changes(a: &pb::RuleVersion, b: &pb::RuleVersion) -> Vec<String> {
    let mut out = Vec::new();
    if a.digest != b.digest {
        out.push(format!("--- {} (rule)", b.file));
        out.extend(diff(&a.text, &b.text));
    }
    let of = |v: &pb::RuleVersion| -> BTreeMap<String, (String, String)> {
        v.definitions
            .iter()
            .map(|d| (d.file.clone(), (d.digest.clone(), d.text.clone())))
            .collect()
    };
    let (da, db) = (of(a), of(b));
    let files: std::collections::BTreeSet<&String> = da.keys().chain(db.keys()).collect();
    for f in files {
        match (da.get(f), db.get(f)) {
            (Some(x), Some(y)) if x.0 == y.0 => {}
            (Some(x), Some(y)) if x.1.is_empty() || y.1.is_empty() => out.push(format!(
                "--- {f}: {} -> {} (text no longer held)",
                short(&x.0),
                short(&y.0)
            )),
            (Some(x), Some(y)) => {
                out.push(format!("--- {f}: {} -> {}", short(&x.0), short(&y.0)));
                out.extend(diff(&x.1, &y.1));
            }
            (None, Some(y)) => out.push(format!("--- {f}: added ({})", short(&y.0))),
            (Some(x), None) => out.push(format!("--- {f}: removed ({})", short(&x.0))),
            (None, None) => {}
        }
    }
    out
}

/// The most lines a diff compares (more: the texts are shown as replaced).
const DIFF_CELLS: usize = 4_000_000;

/// A line diff of `a` to `b`: changed lines with `-`/`+`, each with its line number in
/// its text (unchanged lines are left out).
pub fn diff(a: &str, b: &str) -> Vec<String> {
    let x: Vec<&str> = a.lines().collect();
    let y: Vec<&str> = b.lines().collect();
    let (n, m) = (x.len(), y.len());
    if n.saturating_mul(m) > DIFF_CELLS {
        return vec![format!("(replaced: {n} lines -> {m} lines)")];
    }
    // Longest common subsequence, from the ends.
    let mut l = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            l[i][j] = if x[i] == y[j] {
                l[i + 1][j + 1] + 1
            } else {
                l[i + 1][j].max(l[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n || j < m {
        if i < n && j < m && x[i] == y[j] {
            i += 1;
            j += 1;
        } else if i < n && (j == m || l[i + 1][j] >= l[i][j + 1]) {
            out.push(format!("-{:>4} {}", i + 1, x[i]));
            i += 1;
        } else {
            out.push(format!("+{:>4} {}", j + 1, y[j]));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_shows_the_changed_lines_with_their_numbers() {
        let a = "one\ntwo\nthree\n";
        let b = "one\n2\nthree\nfour\n";
        assert_eq!(diff(a, b), ["-   2 two", "+   2 2", "+   4 four"]);
        assert!(diff(a, a).is_empty());
        assert_eq!(diff("", "x"), ["+   1 x"]);
    }
}
