//! The catalogue of cgroup keys: which names a definition may use (v1 or v2 form), how a
//! value is checked, and how a setting is written on each hierarchy version. Pure: the
//! launcher asks for the writes and performs them.

use std::collections::BTreeMap;

/// Which cgroup hierarchy a host uses for its resource controllers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Legacy: one hierarchy per controller.
    V1,
    /// Unified hierarchy.
    V2,
}

/// One file write in a container's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupWrite {
    /// v1 controller (hierarchy) the file lives in; on v2 the controller to enable.
    pub controller: &'static str,
    /// File name inside the container's cgroup directory.
    pub file: &'static str,
    /// What is written.
    pub value: String,
}

#[derive(Clone, Copy)]
enum ValueKind {
    /// bytes with K/M/G/T suffixes, or "max" / -1.
    Bytes,
    /// a positive integer within a range.
    Int(i64, i64),
    /// an integer or "max".
    IntOrMax,
    /// microseconds quota: -1 or "max" for none.
    Quota,
    /// a CPU or memory-node list: "0-2,4".
    List,
    /// "QUOTA PERIOD" or "max [PERIOD]".
    CpuMax,
}

struct Key {
    name: &'static str,
    kind: ValueKind,
}

const KEYS: &[Key] = &[
    // v1 names
    Key {
        name: "cpu.shares",
        kind: ValueKind::Int(2, 262144),
    },
    Key {
        name: "cpu.cfs_quota_us",
        kind: ValueKind::Quota,
    },
    Key {
        name: "cpu.cfs_period_us",
        kind: ValueKind::Int(1000, 1_000_000),
    },
    Key {
        name: "memory.limit_in_bytes",
        kind: ValueKind::Bytes,
    },
    Key {
        name: "memory.soft_limit_in_bytes",
        kind: ValueKind::Bytes,
    },
    Key {
        name: "memory.memsw.limit_in_bytes",
        kind: ValueKind::Bytes,
    },
    Key {
        name: "memory.swappiness",
        kind: ValueKind::Int(0, 100),
    },
    Key {
        name: "memory.oom_control",
        kind: ValueKind::Int(0, 1),
    },
    Key {
        name: "blkio.weight",
        kind: ValueKind::Int(10, 1000),
    },
    // both
    Key {
        name: "cpuset.cpus",
        kind: ValueKind::List,
    },
    Key {
        name: "cpuset.mems",
        kind: ValueKind::List,
    },
    Key {
        name: "pids.max",
        kind: ValueKind::IntOrMax,
    },
    // v2 names
    Key {
        name: "cpu.weight",
        kind: ValueKind::Int(1, 10000),
    },
    Key {
        name: "cpu.max",
        kind: ValueKind::CpuMax,
    },
    Key {
        name: "memory.max",
        kind: ValueKind::Bytes,
    },
    Key {
        name: "memory.low",
        kind: ValueKind::Bytes,
    },
    Key {
        name: "memory.high",
        kind: ValueKind::Bytes,
    },
    Key {
        name: "memory.min",
        kind: ValueKind::Bytes,
    },
    Key {
        name: "memory.swap.max",
        kind: ValueKind::Bytes,
    },
    Key {
        name: "io.weight",
        kind: ValueKind::Int(1, 10000),
    },
];

/// The key names accepted, for error messages.
pub fn known_keys() -> String {
    KEYS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

/// Checks a key and value and returns the value in canonical form (bytes as a number,
/// unlimited as "max").
pub fn validate(key: &str, value: &str) -> Result<String, String> {
    let Some(k) = KEYS.iter().find(|k| k.name == key) else {
        return Err(format!(
            "unknown cgroup key '{key}'; expected one of {}",
            known_keys()
        ));
    };
    let value = value.trim();
    let bad = |what: &str| format!("cgroup {key}: invalid value '{value}': {what}");
    match k.kind {
        ValueKind::Bytes => parse_bytes(value).map_err(|e| bad(&e)).map(|b| match b {
            None => "max".to_string(),
            Some(n) => n.to_string(),
        }),
        ValueKind::Int(lo, hi) => match value.parse::<i64>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(n.to_string()),
            _ => Err(bad(&format!("expected an integer from {lo} to {hi}"))),
        },
        ValueKind::IntOrMax => {
            if value == "max" || value == "-1" {
                Ok("max".into())
            } else {
                match value.parse::<u64>() {
                    Ok(n) if n > 0 => Ok(n.to_string()),
                    _ => Err(bad("expected a positive integer or \"max\"")),
                }
            }
        }
        ValueKind::Quota => {
            if value == "max" || value == "-1" {
                Ok("max".into())
            } else {
                match value.parse::<u64>() {
                    Ok(n) if n >= 1000 => Ok(n.to_string()),
                    _ => Err(bad("expected microseconds (>= 1000) or -1")),
                }
            }
        }
        ValueKind::List => parse_list(value)
            .map_err(|e| bad(&e))
            .map(|_| value.to_string()),
        ValueKind::CpuMax => parse_cpu_max(value)
            .map_err(|e| bad(&e))
            .map(|(q, p)| format_cpu_max(q, p)),
    }
}

/// Parses a byte size: "64M", "1g", "4096", "max" or "-1" (None = unlimited).
pub fn parse_bytes(s: &str) -> Result<Option<u64>, String> {
    if s == "max" || s == "-1" {
        return Ok(None);
    }
    let (digits, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult: u64 = match c.to_ascii_lowercase() {
                'k' => 1 << 10,
                'm' => 1 << 20,
                'g' => 1 << 30,
                't' => 1 << 40,
                _ => return Err("expected a size such as 64M, 1G or 4096".into()),
            };
            (&s[..i], mult)
        }
        _ => (s, 1),
    };
    match digits.parse::<u64>() {
        Ok(n) if n > 0 => n
            .checked_mul(mult)
            .map(Some)
            .ok_or_else(|| "size too large".to_string()),
        _ => Err("expected a size such as 64M, 1G or 4096".into()),
    }
}

/// Parses a cpu or node list ("0-2,4") into the ids it names.
pub fn parse_list(s: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let err = || format!("expected a list such as 0-2,4, got '{part}'");
        if let Some((a, b)) = part.split_once('-') {
            let a: u32 = a.trim().parse().map_err(|_| err())?;
            let b: u32 = b.trim().parse().map_err(|_| err())?;
            if a > b || b - a > 4096 {
                return Err(err());
            }
            out.extend(a..=b);
        } else {
            out.push(part.parse().map_err(|_| err())?);
        }
    }
    Ok(out)
}

fn parse_cpu_max(s: &str) -> Result<(Option<u64>, u64), String> {
    let mut it = s.split_whitespace();
    let quota = match it.next() {
        Some("max") => None,
        Some(q) => Some(
            q.parse::<u64>()
                .map_err(|_| "expected \"QUOTA PERIOD\" or \"max\"")?,
        ),
        None => return Err("expected \"QUOTA PERIOD\" or \"max\"".into()),
    };
    let period = match it.next() {
        Some(p) => p
            .parse::<u64>()
            .map_err(|_| "period must be an integer (microseconds)")?,
        None => 100_000,
    };
    if it.next().is_some() {
        return Err("expected \"QUOTA PERIOD\" or \"max\"".into());
    }
    Ok((quota, period))
}

fn format_cpu_max(quota: Option<u64>, period: u64) -> String {
    match quota {
        Some(q) => format!("{q} {period}"),
        None => format!("max {period}"),
    }
}

fn shares_to_weight(shares: u64) -> u64 {
    // The conversion runc and the kernel documentation use.
    1 + (shares.clamp(2, 262144) - 2) * 9999 / 262142
}

fn weight_to_shares(weight: u64) -> u64 {
    2 + (weight.clamp(1, 10000) - 1) * 262142 / 9999
}

fn blkio_to_io_weight(w: u64) -> u64 {
    1 + (w.clamp(10, 1000) - 10) * 9999 / 990
}

fn io_to_blkio_weight(w: u64) -> u64 {
    10 + (w.clamp(1, 10000) - 1) * 990 / 9999
}

fn bytes_of(v: &str) -> Option<u64> {
    v.parse().ok()
}

/// Translates validated settings into the writes for one hierarchy version. A key with
/// no counterpart on that version is an error naming it.
// Long by nature: one arm per key of the catalogue and version, a table read top down.
pub fn translate(
    settings: &BTreeMap<String, String>,
    version: CgroupVersion,
) -> Result<Vec<CgroupWrite>, String> {
    let get = |k: &str| settings.get(k).map(String::as_str);
    let mem_limit = get("memory.max").or(get("memory.limit_in_bytes"));
    let mut out = Vec::new();
    let mut push = |controller, file, value: String| {
        out.push(CgroupWrite {
            controller,
            file,
            value,
        })
    };
    let num = |v: &str| v.parse::<u64>().unwrap_or(0);
    let no_counterpart = |key: &str| {
        let (other, v) = match version {
            CgroupVersion::V1 => ("v1", "v2"),
            CgroupVersion::V2 => ("v2", "v1"),
        };
        format!("cgroup key '{key}' is {v}-only and has no {other} counterpart on this host")
    };
    // Memory first: on v1 memsw must be written after the memory limit.
    match version {
        CgroupVersion::V1 => {
            let max_to_v1 = |v: &str| {
                if v == "max" {
                    "-1".to_string()
                } else {
                    v.to_string()
                }
            };
            if let Some(v) = mem_limit {
                push("memory", "memory.limit_in_bytes", max_to_v1(v));
            }
            if let Some(v) = get("memory.low").or(get("memory.soft_limit_in_bytes")) {
                push("memory", "memory.soft_limit_in_bytes", max_to_v1(v));
            }
            if let Some(v) = get("memory.memsw.limit_in_bytes") {
                push("memory", "memory.memsw.limit_in_bytes", max_to_v1(v));
            } else if let Some(swap) = get("memory.swap.max") {
                let total = match (mem_limit.and_then(bytes_of), bytes_of(swap)) {
                    (_, None) => "-1".to_string(),
                    (Some(m), Some(s)) => (m + s).to_string(),
                    (None, Some(_)) => {
                        return Err("cgroup key 'memory.swap.max' needs 'memory.max' to be \
                                    translated to v1 memory.memsw.limit_in_bytes"
                            .into())
                    }
                };
                push("memory", "memory.memsw.limit_in_bytes", total);
            }
            if let Some(v) = get("memory.swappiness") {
                push("memory", "memory.swappiness", v.to_string());
            }
            if let Some(v) = get("memory.oom_control") {
                push("memory", "memory.oom_control", v.to_string());
            }
            for k in ["memory.high", "memory.min"] {
                if settings.contains_key(k) {
                    return Err(no_counterpart(k));
                }
            }
            if let Some(v) = get("cpu.shares") {
                push("cpu", "cpu.shares", v.to_string());
            } else if let Some(v) = get("cpu.weight") {
                push("cpu", "cpu.shares", weight_to_shares(num(v)).to_string());
            }
            if let Some(v) = get("cpu.max") {
                let (q, p) = parse_cpu_max(v)?;
                push("cpu", "cpu.cfs_period_us", p.to_string());
                let q = q.map(|q| q.to_string()).unwrap_or_else(|| "-1".into());
                push("cpu", "cpu.cfs_quota_us", q);
            } else {
                if let Some(v) = get("cpu.cfs_period_us") {
                    push("cpu", "cpu.cfs_period_us", v.to_string());
                }
                if let Some(v) = get("cpu.cfs_quota_us") {
                    push("cpu", "cpu.cfs_quota_us", max_to_v1(v));
                }
            }
            if let Some(v) = get("blkio.weight") {
                push("blkio", "blkio.weight", v.to_string());
            } else if let Some(v) = get("io.weight") {
                push(
                    "blkio",
                    "blkio.weight",
                    io_to_blkio_weight(num(v)).to_string(),
                );
            }
        }
        CgroupVersion::V2 => {
            if settings.contains_key("memory.oom_control") {
                return Err(no_counterpart("memory.oom_control"));
            }
            if let Some(v) = mem_limit {
                push("memory", "memory.max", v.to_string());
            }
            if let Some(v) = get("memory.low").or(get("memory.soft_limit_in_bytes")) {
                push("memory", "memory.low", v.to_string());
            }
            for k in ["memory.high", "memory.min"] {
                if let Some(v) = get(k) {
                    push(
                        "memory",
                        if k == "memory.high" {
                            "memory.high"
                        } else {
                            "memory.min"
                        },
                        v.to_string(),
                    );
                }
            }
            if let Some(v) = get("memory.swap.max") {
                push("memory", "memory.swap.max", v.to_string());
            } else if let Some(total) = get("memory.memsw.limit_in_bytes") {
                let swap = match (mem_limit.and_then(bytes_of), bytes_of(total)) {
                    (_, None) => "max".to_string(),
                    (Some(m), Some(t)) if t >= m => (t - m).to_string(),
                    (Some(_), Some(_)) => {
                        return Err("cgroup key 'memory.memsw.limit_in_bytes' is below the \
                                    memory limit"
                            .into())
                    }
                    (None, Some(_)) => {
                        return Err("cgroup key 'memory.memsw.limit_in_bytes' needs \
                                    'memory.limit_in_bytes' to be translated to v2 \
                                    memory.swap.max"
                            .into())
                    }
                };
                push("memory", "memory.swap.max", swap);
            }
            if settings.contains_key("memory.swappiness") {
                return Err(no_counterpart("memory.swappiness"));
            }
            if let Some(v) = get("cpu.weight") {
                push("cpu", "cpu.weight", v.to_string());
            } else if let Some(v) = get("cpu.shares") {
                push("cpu", "cpu.weight", shares_to_weight(num(v)).to_string());
            }
            if let Some(v) = get("cpu.max") {
                push("cpu", "cpu.max", v.to_string());
            } else if get("cpu.cfs_quota_us").is_some() || get("cpu.cfs_period_us").is_some() {
                let period = get("cpu.cfs_period_us").map(num).unwrap_or(100_000);
                let quota = get("cpu.cfs_quota_us").and_then(bytes_of);
                push("cpu", "cpu.max", format_cpu_max(quota, period));
            }
            if let Some(v) = get("io.weight") {
                push("io", "io.weight", v.to_string());
            } else if let Some(v) = get("blkio.weight") {
                push("io", "io.weight", blkio_to_io_weight(num(v)).to_string());
            }
        }
    }
    for (k, file) in [
        ("cpuset.cpus", "cpuset.cpus"),
        ("cpuset.mems", "cpuset.mems"),
    ] {
        if let Some(v) = get(k) {
            push("cpuset", file, v.to_string());
        }
    }
    if let Some(v) = get("pids.max") {
        push("pids", "pids.max", v.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), validate(k, v).unwrap()))
            .collect()
    }

    fn writes(s: &BTreeMap<String, String>, v: CgroupVersion) -> Vec<(String, String)> {
        translate(s, v)
            .unwrap()
            .into_iter()
            .map(|w| (w.file.to_string(), w.value))
            .collect()
    }

    #[test]
    fn bytes_are_canonical() {
        assert_eq!(validate("memory.max", "64M").unwrap(), "67108864");
        assert_eq!(validate("memory.limit_in_bytes", "-1").unwrap(), "max");
        assert!(validate("memory.max", "64Q").is_err());
        assert!(validate("memory.max", "").is_err());
    }

    #[test]
    fn unknown_key_lists_the_known_ones() {
        let e = validate("memory.maxx", "1").unwrap_err();
        assert!(e.contains("unknown cgroup key 'memory.maxx'"), "{e}");
        assert!(e.contains("pids.max"), "{e}");
    }

    #[test]
    fn v1_keys_translate_to_v2() {
        let s = settings(&[
            ("cpu.shares", "1024"),
            ("cpu.cfs_quota_us", "50000"),
            ("memory.limit_in_bytes", "64M"),
            ("memory.memsw.limit_in_bytes", "96M"),
            ("blkio.weight", "500"),
            ("pids.max", "64"),
        ]);
        let w = writes(&s, CgroupVersion::V2);
        assert!(w.contains(&("cpu.weight".into(), "39".into())), "{w:?}");
        assert!(
            w.contains(&("cpu.max".into(), "50000 100000".into())),
            "{w:?}"
        );
        assert!(
            w.contains(&("memory.max".into(), "67108864".into())),
            "{w:?}"
        );
        assert!(
            w.contains(&("memory.swap.max".into(), "33554432".into())),
            "{w:?}"
        );
        assert!(w.contains(&("io.weight".into(), "4950".into())), "{w:?}");
        assert!(w.contains(&("pids.max".into(), "64".into())), "{w:?}");
    }

    #[test]
    fn v2_keys_translate_to_v1() {
        let s = settings(&[
            ("cpu.weight", "100"),
            ("cpu.max", "20000 50000"),
            ("memory.max", "64M"),
            ("memory.swap.max", "32M"),
            ("io.weight", "100"),
            ("cpuset.cpus", "0"),
        ]);
        let w = writes(&s, CgroupVersion::V1);
        assert!(w.contains(&("cpu.shares".into(), "2597".into())), "{w:?}");
        assert!(
            w.contains(&("cpu.cfs_period_us".into(), "50000".into())),
            "{w:?}"
        );
        assert!(
            w.contains(&("cpu.cfs_quota_us".into(), "20000".into())),
            "{w:?}"
        );
        assert!(
            w.contains(&("memory.limit_in_bytes".into(), "67108864".into())),
            "{w:?}"
        );
        assert!(
            w.contains(&("memory.memsw.limit_in_bytes".into(), "100663296".into())),
            "{w:?}"
        );
        assert!(w.contains(&("blkio.weight".into(), "19".into())), "{w:?}");
        assert!(w.contains(&("cpuset.cpus".into(), "0".into())), "{w:?}");
        // memory limit comes before memsw (the kernel refuses memsw < limit)
        let mem = w.iter().position(|(f, _)| f == "memory.limit_in_bytes");
        let memsw = w
            .iter()
            .position(|(f, _)| f == "memory.memsw.limit_in_bytes");
        assert!(mem < memsw);
    }

    #[test]
    fn keys_without_counterpart_are_refused() {
        let s = settings(&[("memory.high", "32M")]);
        let e = translate(&s, CgroupVersion::V1).unwrap_err();
        assert!(
            e.contains("memory.high") && e.contains("no v1 counterpart"),
            "{e}"
        );
        let s = settings(&[("memory.swappiness", "10")]);
        let e = translate(&s, CgroupVersion::V2).unwrap_err();
        assert!(
            e.contains("memory.swappiness") && e.contains("no v2 counterpart"),
            "{e}"
        );
        let s = settings(&[("memory.swap.max", "32M")]);
        assert!(translate(&s, CgroupVersion::V1).is_err());
    }

    #[test]
    fn lists_parse() {
        assert_eq!(parse_list("0-2,4").unwrap(), vec![0, 1, 2, 4]);
        assert!(parse_list("2-0").is_err());
        assert!(parse_list("a").is_err());
    }
}
