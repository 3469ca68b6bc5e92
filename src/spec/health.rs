//! A container's health check as the definition writes it (`c.health(#{ ... })`): what
//! to probe (a command inside the container, a TCP port or an HTTP path in its network
//! namespace) and how often, how long, how many failures make it unhealthy. Plain data:
//! the node's agent runs the probes, `decide::checks` turns their results into states.

use super::script::{as_string, dsl_error, RhaiResult};
use serde::{Deserialize, Serialize};

/// What one probe does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// Runs a command inside the container (its namespaces, cgroups, identity,
    /// capabilities and seccomp filter, as `attach`); exit status 0 is healthy.
    Exec(Vec<String>),
    /// Connects to this port on the container's loopback (in its network namespace).
    Tcp(u16),
    /// `GET path` on the container's loopback port; healthy when the answer's status is
    /// `status`.
    Http {
        /// The request's path.
        path: String,
        /// The port.
        port: u16,
        /// The status that means healthy.
        status: u16,
    },
}

/// A health check with its timing (Docker's and Nomad's parameters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// What to probe.
    pub probe: Probe,
    /// Time between the end of one probe and the start of the next, ms.
    pub interval_ms: u64,
    /// A probe still going after this long failed, ms.
    pub timeout_ms: u64,
    /// Consecutive failures that make a healthy (or started) container unhealthy.
    pub retries: u32,
    /// A grace period from the start during which failures do not count, ms.
    pub start_period_ms: u64,
}

impl HealthCheck {
    /// Defaults: every 10 s, 5 s timeout, 3 retries, no start period.
    pub fn new(probe: Probe) -> HealthCheck {
        HealthCheck {
            probe,
            interval_ms: 10_000,
            timeout_ms: 5_000,
            retries: 3,
            start_period_ms: 0,
        }
    }

    /// How the probe reads in a message ("exec [/bin/check]", "tcp 80", "http :80/ready").
    pub fn describe(&self) -> String {
        match &self.probe {
            Probe::Exec(cmd) => format!("exec {cmd:?}"),
            Probe::Tcp(port) => format!("tcp {port}"),
            Probe::Http { path, port, .. } => format!("http :{port}{path}"),
        }
    }
}

/// A duration option `key` of a DSL call's map (`what` names the call in errors), in
/// ms; none when it is not given.
pub fn duration_of(o: &rhai::Map, what: &str, key: &str) -> RhaiResult<Option<u64>> {
    o.get(key)
        .map(|v| {
            let text = as_string(v, &format!("{what} {key}"))?;
            parse_duration_ms(&text).map_err(|e| dsl_error(format!("{what} {key}: {e}")))
        })
        .transpose()
}

/// Parses a duration of the DSL: "500ms", "10s", "2m", "1h", "1d", or a number of
/// seconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let bad = || format!("'{s}' is not a duration such as 500ms, 10s or 2m");
    let (digits, mult) = if let Some(d) = s.strip_suffix("ms") {
        (d, 1)
    } else if let Some(d) = s.strip_suffix('s') {
        (d, 1_000)
    } else if let Some(d) = s.strip_suffix('m') {
        (d, 60_000)
    } else if let Some(d) = s.strip_suffix('h') {
        (d, 3_600_000)
    } else if let Some(d) = s.strip_suffix('d') {
        (d, 86_400_000)
    } else {
        (s, 1_000)
    };
    let n: u64 = digits.trim().parse().map_err(|_| bad())?;
    n.checked_mul(mult).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("10s"), Ok(10_000));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        assert_eq!(parse_duration_ms("3"), Ok(3_000));
        assert!(parse_duration_ms("ten").is_err());
        assert!(parse_duration_ms("-1s").is_err());
        assert!(parse_duration_ms("99999999999999999999h").is_err());
    }
}
