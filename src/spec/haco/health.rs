//! `c.health(#{ exec: [...] | tcp: PORT | http: "/path", port, status, interval,
//! timeout, retries, start_period })`: the container's health check; `c.restart(#{
//! attempts, interval, delay, max_delay, mode })`: what its node does when it ends or
//! turns unhealthy; `c.logs(#{ max_size, max_files })`: how much of its output its node
//! keeps.

use super::*;
use crate::spec::health::{duration_of, HealthCheck, Probe};
use crate::spec::restart::{RestartMode, RestartPolicy};
use crate::spec::script::{as_string, check_keys, dsl_error, int_of, string_list, RhaiResult};
use crate::spec::LogLimits;
use rhai::{Dynamic, Engine, Map};

/// Registers `health(...)`, `restart(...)` and `logs(...)`.
pub(super) fn register(engine: &mut Engine) {
    engine.register_fn("logs", |c: &mut Container, o: Map| -> RhaiResult<()> {
        let limits = log_limits(&o)?;
        c.d.borrow_mut().spec.logs = limits;
        Ok(())
    });
    engine.register_fn("health", |c: &mut Container, o: Map| -> RhaiResult<()> {
        let check = health_check(&o)?;
        c.d.borrow_mut().spec.health = Some(check);
        Ok(())
    });
    engine.register_fn("restart", |c: &mut Container, o: Map| -> RhaiResult<()> {
        let policy = restart_policy(&o)?;
        c.d.borrow_mut().spec.restart = Some(policy);
        Ok(())
    });
}

/// `max_size`: bytes (an integer, or a string with K, M or G: binary units), 4K to 1G;
/// `max_files`: 1 to 100, the active file included.
fn log_limits(o: &Map) -> RhaiResult<LogLimits> {
    check_keys(o, "logs", &["max_size", "max_files"])?;
    let mut l = LogLimits::default();
    if let Some(v) = o.get("max_size") {
        let text = if v.is_string() {
            as_string(v, "logs max_size")?
        } else {
            int_of(v, "logs max_size")?.to_string()
        };
        let (digits, unit) =
            text.split_at(text.trim_end_matches(['K', 'M', 'G', 'k', 'm', 'g']).len());
        let scale: u64 = match unit.to_ascii_uppercase().as_str() {
            "" => 1,
            "K" => 1 << 10,
            "M" => 1 << 20,
            "G" => 1 << 30,
            _ => 0,
        };
        l.max_size = digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(scale))
            .filter(|n| (4096..=1 << 30).contains(n))
            .ok_or_else(|| {
                dsl_error(format!(
                    "logs max_size: '{text}'; expected 4K to 1G (bytes, or with K, M, G)"
                ))
            })?;
    }
    if let Some(v) = o.get("max_files") {
        let n = int_of(v, "logs max_files")?;
        l.max_files = u32::try_from(n)
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| dsl_error(format!("logs max_files: {n}; expected 1 to 100")))?;
    }
    Ok(l)
}

fn restart_policy(o: &Map) -> RhaiResult<RestartPolicy> {
    check_keys(
        o,
        "restart",
        &["attempts", "interval", "delay", "max_delay", "mode"],
    )?;
    let mut p = RestartPolicy::default();
    if let Some(v) = o.get("attempts") {
        let n = int_of(v, "restart attempts")?;
        p.attempts = u32::try_from(n)
            .ok()
            .filter(|a| *a <= 1000)
            .ok_or_else(|| dsl_error(format!("restart attempts: {n}; expected 0 to 1000")))?;
    }
    if let Some(ms) = duration_of(o, "restart", "interval")? {
        p.interval_ms = ms;
    }
    if let Some(ms) = duration_of(o, "restart", "delay")? {
        if ms < 100 {
            return Err(dsl_error("restart delay: at least 100ms"));
        }
        p.delay_ms = ms;
        p.max_delay_ms = p.max_delay_ms.max(ms);
    }
    if let Some(ms) = duration_of(o, "restart", "max_delay")? {
        if ms < p.delay_ms {
            return Err(dsl_error(format!(
                "restart max_delay: shorter than the delay ({} ms)",
                p.delay_ms
            )));
        }
        p.max_delay_ms = ms;
    }
    if p.interval_ms < p.delay_ms {
        return Err(dsl_error(
            "restart interval: shorter than the delay (no attempt would ever count)",
        ));
    }
    if let Some(v) = o.get("mode") {
        p.mode = match as_string(v, "restart mode")?.as_str() {
            "fail" => RestartMode::Fail,
            "delay" => RestartMode::Delay,
            other => {
                return Err(dsl_error(format!(
                    "restart mode: '{other}'; expected \"fail\" (give up after the attempts: a rule places it elsewhere) or \"delay\" (keep trying on its node at max_delay)"
                )))
            }
        };
    }
    Ok(p)
}

fn health_check(o: &Map) -> RhaiResult<HealthCheck> {
    check_keys(
        o,
        "health",
        &[
            "exec",
            "tcp",
            "http",
            "port",
            "status",
            "interval",
            "timeout",
            "retries",
            "start_period",
        ],
    )?;
    let kinds = ["exec", "tcp", "http"]
        .iter()
        .filter(|k| o.contains_key(**k))
        .count();
    if kinds != 1 {
        return Err(dsl_error(
            "health: give exactly one of exec: [\"cmd\", ...], tcp: PORT or http: \"/path\" (with port:)",
        ));
    }
    let port = |v: &Dynamic, what: &str| -> RhaiResult<u16> {
        let n = int_of(v, what)?;
        u16::try_from(n)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| dsl_error(format!("{what}: {n} is not a port (1-65535)")))
    };
    if o.contains_key("status") && !o.contains_key("http") {
        return Err(dsl_error("health status: only an http check has a status"));
    }
    if o.contains_key("port") && !o.contains_key("http") {
        return Err(dsl_error(
            "health port: only an http check takes port: (a tcp check is tcp: PORT)",
        ));
    }
    let probe = if let Some(v) = o.get("exec") {
        let cmd = string_list(v, "health exec")?;
        if cmd.is_empty() || cmd[0].is_empty() {
            return Err(dsl_error("health exec: the command is empty"));
        }
        Probe::Exec(cmd)
    } else if let Some(v) = o.get("tcp") {
        Probe::Tcp(port(v, "health tcp")?)
    } else {
        let path = o
            .get("http")
            .map(|v| as_string(v, "health http"))
            .transpose()?
            .unwrap_or_default();
        if !path.starts_with('/') || path.contains([' ', '\r', '\n']) {
            return Err(dsl_error(format!(
                "health http: '{path}' is not a path such as \"/healthz\""
            )));
        }
        let port = match o.get("port") {
            Some(v) => port(v, "health port")?,
            None => return Err(dsl_error("health http: needs port: (the container's port)")),
        };
        let status = match o.get("status") {
            Some(v) => {
                let n = int_of(v, "health status")?;
                u16::try_from(n)
                    .ok()
                    .filter(|s| (100..600).contains(s))
                    .ok_or_else(|| dsl_error(format!("health status: {n} is not an HTTP status")))?
            }
            None => 200,
        };
        Probe::Http { path, port, status }
    };
    let mut check = HealthCheck::new(probe);
    let duration = |k: &str| duration_of(o, "health", k);
    if let Some(ms) = duration("interval")? {
        if ms < 100 {
            return Err(dsl_error("health interval: at least 100ms"));
        }
        check.interval_ms = ms;
    }
    if let Some(ms) = duration("timeout")? {
        if ms < 10 {
            return Err(dsl_error("health timeout: at least 10ms"));
        }
        check.timeout_ms = ms;
    }
    if let Some(ms) = duration("start_period")? {
        check.start_period_ms = ms;
    }
    if let Some(v) = o.get("retries") {
        let n = int_of(v, "health retries")?;
        check.retries = u32::try_from(n)
            .ok()
            .filter(|r| (1..=100).contains(r))
            .ok_or_else(|| dsl_error(format!("health retries: {n}; expected 1 to 100")))?;
    }
    Ok(check)
}
