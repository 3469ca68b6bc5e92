//! A container's health, from its probes' results (pure: time is an argument). Docker's
//! rules: `starting` until a probe passes; a failure within the start period does not
//! count; `retries` failures in a row make it `unhealthy`; a pass makes it `healthy`
//! and clears the count. The next probe is due `interval` after the last one ended.

use crate::cluster::state::Health;
use crate::spec::health::HealthCheck;
use std::time::{Duration, Instant};

/// How one probe ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It passed.
    Passed,
    /// It failed (or timed out), with what it said.
    Failed(String),
}

/// The health of one container, probe by probe.
#[derive(Debug, Clone)]
pub struct Checks {
    interval: Duration,
    retries: u32,
    grace_until: Instant,
    health: Health,
    failures: u32,
    due: Instant,
    last_failure: Option<String>,
}

impl Checks {
    /// A container that started at `started` (its first probe is due one interval
    /// later, as Docker's).
    pub fn new(check: &HealthCheck, started: Instant) -> Checks {
        let interval = Duration::from_millis(check.interval_ms);
        Checks {
            interval,
            retries: check.retries.max(1),
            grace_until: started + Duration::from_millis(check.start_period_ms),
            health: Health::Starting,
            failures: 0,
            due: started + interval,
            last_failure: None,
        }
    }

    /// When the next probe is due.
    pub fn due(&self) -> Instant {
        self.due
    }

    /// What the checks say now.
    pub fn health(&self) -> Health {
        self.health
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// What the last failed probe said.
    pub fn last_failure(&self) -> Option<&str> {
        self.last_failure.as_deref()
    }

    /// A probe that ended at `at`: the new health when it changed.
    pub fn record(&mut self, outcome: Outcome, at: Instant) -> Option<Health> {
        self.due = at + self.interval;
        let before = self.health;
        match outcome {
            Outcome::Passed => {
                self.failures = 0;
                self.health = Health::Healthy;
            }
            Outcome::Failed(why) => {
                self.last_failure = Some(why);
                // Within the start period a failure of a container that never passed
                // does not count (it is still coming up).
                if self.health == Health::Starting && at < self.grace_until {
                    return None;
                }
                self.failures = self.failures.saturating_add(1);
                if self.failures >= self.retries {
                    self.health = Health::Unhealthy;
                }
            }
        }
        (self.health != before).then_some(self.health)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::health::Probe;

    fn check(interval: u64, retries: u32, start_period: u64) -> HealthCheck {
        HealthCheck {
            probe: Probe::Tcp(80),
            interval_ms: interval,
            timeout_ms: 100,
            retries,
            start_period_ms: start_period,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn starting_then_healthy_then_unhealthy_after_retries_in_a_row() {
        let t0 = Instant::now();
        let mut c = Checks::new(&check(1000, 3, 0), t0);
        assert_eq!(c.health(), Health::Starting);
        assert_eq!(c.due(), t0 + ms(1000));
        assert_eq!(
            c.record(Outcome::Passed, t0 + ms(1010)),
            Some(Health::Healthy)
        );
        assert_eq!(c.due(), t0 + ms(2010));
        assert_eq!(c.record(Outcome::Passed, t0 + ms(2020)), None);
        // Two failures, a pass (the count starts again), then three in a row.
        assert_eq!(
            c.record(Outcome::Failed("refused".into()), t0 + ms(3000)),
            None
        );
        assert_eq!(
            c.record(Outcome::Failed("refused".into()), t0 + ms(4000)),
            None
        );
        assert_eq!(c.failures(), 2);
        assert_eq!(c.record(Outcome::Passed, t0 + ms(5000)), None);
        assert_eq!(c.failures(), 0);
        assert_eq!(c.record(Outcome::Failed("a".into()), t0 + ms(6000)), None);
        assert_eq!(c.record(Outcome::Failed("b".into()), t0 + ms(7000)), None);
        assert_eq!(
            c.record(Outcome::Failed("timed out".into()), t0 + ms(8000)),
            Some(Health::Unhealthy)
        );
        assert_eq!(c.last_failure(), Some("timed out"));
        assert_eq!(c.due(), t0 + ms(9000));
    }

    #[test]
    fn failures_within_the_start_period_do_not_count_until_a_pass() {
        let t0 = Instant::now();
        let mut c = Checks::new(&check(1000, 2, 5000), t0);
        for s in 1..5 {
            assert_eq!(
                c.record(Outcome::Failed("no".into()), t0 + ms(s * 1000)),
                None
            );
            assert_eq!(c.failures(), 0, "counted within the start period");
        }
        // Past the start period they count...
        assert_eq!(c.record(Outcome::Failed("no".into()), t0 + ms(5000)), None);
        assert_eq!(
            c.record(Outcome::Failed("no".into()), t0 + ms(6000)),
            Some(Health::Unhealthy)
        );
        // ...and within it too once it passed once (a healthy container that fails).
        let mut c = Checks::new(&check(1000, 1, 60_000), t0);
        assert_eq!(
            c.record(Outcome::Passed, t0 + ms(1000)),
            Some(Health::Healthy)
        );
        assert_eq!(
            c.record(Outcome::Failed("no".into()), t0 + ms(2000)),
            Some(Health::Unhealthy)
        );
    }

    #[test]
    fn a_starting_container_that_never_passes_turns_unhealthy() {
        let t0 = Instant::now();
        let mut c = Checks::new(&check(500, 3, 0), t0);
        let mut seen = Vec::new();
        let mut now = c.due();
        for _ in 0..5 {
            if let Some(h) = c.record(Outcome::Failed("down".into()), now) {
                seen.push((h, now));
            }
            now = c.due();
        }
        assert_eq!(seen, vec![(Health::Unhealthy, t0 + ms(1500))]);
    }
}
