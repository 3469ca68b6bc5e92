//! Whether a container that ended is started again on its node, and after how long
//! (pure: time and the jitter's seed are arguments). The restarts of the last
//! `interval` count; below `attempts` the next one waits `delay` doubled per restart in
//! the window, up to `max_delay`, plus up to a quarter of jitter (so that copies that
//! failed together do not come back together); past it, `fail` gives up and `delay`
//! waits `max_delay`. A container that ran a whole interval without a restart starts
//! afresh: its old restarts have left the window.

use crate::spec::restart::{RestartMode, RestartPolicy};
use std::time::{Duration, Instant};

/// What to do with a container that ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Start it again on its node after this long; `attempt` counts from 1 within the
    /// window.
    Restart {
        /// Which restart of the window this is.
        attempt: u32,
        /// The back-off.
        after: Duration,
    },
    /// Its attempts are used up: it ends.
    GiveUp {
        /// Restarts it had within the window.
        attempts: u32,
    },
}

/// The restarts of one container on its node.
#[derive(Debug, Clone, Default)]
pub struct Restarts {
    at: Vec<Instant>,
}

impl Restarts {
    /// The decision for a container that ended at `now`; `seed` makes the jitter (the
    /// same seed, the same jitter). A `Restart` is recorded as done at `now`.
    pub fn decide(&mut self, policy: &RestartPolicy, now: Instant, seed: u64) -> Next {
        let window = Duration::from_millis(policy.interval_ms);
        self.at
            .retain(|t| now.saturating_duration_since(*t) < window);
        let used = self.at.len() as u32;
        let max = Duration::from_millis(policy.max_delay_ms);
        let after = if used < policy.attempts {
            let doubled = Duration::from_millis(policy.delay_ms)
                .checked_mul(1u32.checked_shl(used.min(31)).unwrap_or(u32::MAX))
                .unwrap_or(max);
            doubled.min(max)
        } else if policy.mode == RestartMode::Delay {
            max
        } else {
            return Next::GiveUp { attempts: used };
        };
        // Up to 25% more, from the seed (a cheap mix of it, not a random source).
        let mixed = seed
            .wrapping_add(u64::from(used))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            >> 40;
        let jitter = after.mul_f64((mixed % 1000) as f64 / 4000.0);
        self.at.push(now);
        Next::Restart {
            attempt: used + 1,
            after: after + jitter,
        }
    }
}

/// A seed for the jitter of a container: a hash of its id.
pub fn seed_of(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(attempts: u32, mode: RestartMode) -> RestartPolicy {
        RestartPolicy {
            attempts,
            interval_ms: 60_000,
            delay_ms: 1_000,
            max_delay_ms: 5_000,
            mode,
        }
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// The back-off without its jitter (which is at most a quarter on top).
    fn base(n: Next) -> (u32, Duration) {
        match n {
            Next::Restart { attempt, after } => (attempt, after),
            Next::GiveUp { .. } => panic!("gave up"),
        }
    }

    #[test]
    fn the_delay_doubles_up_to_the_cap_then_fail_gives_up() {
        let t0 = Instant::now();
        let p = policy(4, RestartMode::Fail);
        let mut r = Restarts::default();
        let mut seen = Vec::new();
        for i in 0..4 {
            let (attempt, after) = base(r.decide(&p, t0 + s(i), 7));
            seen.push(attempt);
            let want = [s(1), s(2), s(4), s(5)][i as usize];
            assert!(
                after >= want && after <= want + want / 4,
                "attempt {attempt}: {after:?} not within 25% above {want:?}"
            );
        }
        assert_eq!(seen, [1, 2, 3, 4]);
        assert_eq!(r.decide(&p, t0 + s(5), 7), Next::GiveUp { attempts: 4 });
        // Giving up records nothing: asked again, the answer is the same.
        assert_eq!(r.decide(&p, t0 + s(6), 7), Next::GiveUp { attempts: 4 });
    }

    #[test]
    fn delay_mode_keeps_trying_at_the_cap() {
        let t0 = Instant::now();
        let p = policy(1, RestartMode::Delay);
        let mut r = Restarts::default();
        assert_eq!(base(r.decide(&p, t0, 1)).0, 1);
        for i in 1..10 {
            let (attempt, after) = base(r.decide(&p, t0 + s(i), 1));
            assert_eq!(attempt, i as u32 + 1);
            assert!(after >= s(5) && after <= s(5) + s(5) / 4, "{after:?}");
        }
    }

    #[test]
    fn a_whole_interval_without_a_restart_starts_afresh() {
        let t0 = Instant::now();
        let p = policy(2, RestartMode::Fail);
        let mut r = Restarts::default();
        base(r.decide(&p, t0, 3));
        base(r.decide(&p, t0 + s(10), 3));
        assert_eq!(r.decide(&p, t0 + s(20), 3), Next::GiveUp { attempts: 2 });
        // 60 s after the first restart it has left the window: one attempt is back.
        let (attempt, after) = base(r.decide(&p, t0 + s(61), 3));
        assert_eq!(attempt, 2);
        assert!(after >= s(2), "{after:?}");
        // After a quiet interval, the first delay again.
        let (attempt, after) = base(r.decide(&p, t0 + s(200), 3));
        assert_eq!(attempt, 1);
        assert!(after < s(2), "{after:?}");
    }

    #[test]
    fn zero_attempts_gives_up_at_once_and_jitter_differs_by_seed() {
        let t0 = Instant::now();
        let mut r = Restarts::default();
        assert_eq!(
            r.decide(&policy(0, RestartMode::Fail), t0, 1),
            Next::GiveUp { attempts: 0 }
        );
        let p = policy(3, RestartMode::Fail);
        let afters: std::collections::BTreeSet<Duration> = (0..20)
            .map(|seed| base(Restarts::default().decide(&p, t0, seed_of(&format!("web-{seed}")))).1)
            .collect();
        assert!(afters.len() > 10, "jitter hardly varies: {afters:?}");
        assert!(afters.iter().all(|a| *a >= s(1) && *a <= s(1) + s(1) / 4));
    }
}
