//! Which rules run now and with what triggers: a change was committed, events arrived,
//! a timer is due; a rule that could not place its containers backs off for a while
//! (unless a node comes up), so does one whose images cannot be had and one whose
//! copies crash in a loop. Pure: the clock is an argument.

use crate::cluster::state::Observed;
use crate::spec::watch::Trigger;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a rule that could not place waits before trying again (a node coming up
/// ends the wait at once).
pub const PLACEMENT_BACKOFF: Duration = Duration::from_secs(1);

/// How long a rule waits after one of its containers could not get its image; the wait
/// doubles with each failure in a row, up to [`PULL_BACKOFF_MAX`] (as Kubernetes'
/// ImagePullBackOff), and ends when one of its containers runs.
pub const PULL_BACKOFF_FIRST: Duration = Duration::from_secs(2);
/// The longest wait after image pull failures.
pub const PULL_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Copies of a rule that end on their own this soon after they began to run (or that
/// never ran) count towards a crash loop.
pub const CRASH_QUICK: Duration = Duration::from_secs(1);
/// A copy of the rule running this long ends the count (the definition works).
pub const CRASH_RESET: Duration = Duration::from_secs(10);
/// Quick ends in a row before the rule is held back (a container killed by hand now and
/// then is replaced at once).
pub const CRASH_LOOP_AFTER: u32 = 3;
/// The first hold of a crash loop; it doubles with each further quick end, up to
/// [`CRASH_BACKOFF_MAX`] (as Kubernetes' CrashLoopBackOff and Nomad's reschedule delay).
pub const CRASH_BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// The longest hold of a crash loop.
pub const CRASH_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// What the end of one copy of a rule says of a crash loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyEnd {
    /// Killed from outside (SIGKILL or SIGTERM, not the OOM killer): nothing the program
    /// did; it neither counts nor resets.
    Killed,
    /// It ran a while: the count starts again.
    RanWell,
    /// It crashed: count it this much ([`Scheduler::copy_crashed`]).
    Crashed(u32),
}

/// Judges the end of a copy: how it ended, how long since it was placed or began to
/// run (`None`: unknown, as to a new leader), whether its node had restarted it until
/// it gave up.
pub fn copy_end(observed: &Observed, ran_for: Option<Duration>, gave_up: bool) -> CopyEnd {
    let Observed::Exited {
        code,
        oom_killed,
        error,
    } = observed
    else {
        return CopyEnd::RanWell;
    };
    if gave_up {
        return CopyEnd::Crashed(CRASH_LOOP_AFTER);
    }
    if matches!(code, Some(137 | 143)) && !oom_killed {
        return CopyEnd::Killed;
    }
    // Never started (no exit code, the launch's error), or ended soon after it was
    // placed or began to run.
    let never_ran = code.is_none() && error.is_some();
    if never_ran || ran_for.is_some_and(|d| d < CRASH_QUICK) {
        CopyEnd::Crashed(1)
    } else {
        CopyEnd::RanWell
    }
}

/// What one rule handles: `(event kind, timer period in ms)` per handler.
pub type Handlers = [(String, Option<u64>)];

/// The rule loop's memory between evaluations.
#[derive(Debug, Default)]
pub struct Scheduler {
    timers: HashMap<(String, u64), Instant>,
    backoff: HashMap<String, Instant>,
    /// Per rule: rounds of image pull failures in a row, and until when it waits.
    pull_failures: HashMap<String, (u32, Instant)>,
    /// Per rule: quick ends of its copies in a row, until when it waits, and whether it
    /// is evaluated when the wait ends (nothing else may change meanwhile).
    crashes: HashMap<String, (u32, Instant, bool)>,
    /// Rules to evaluate once their pull back-off ends (nothing else may change).
    retry: std::collections::HashSet<String>,
    last_index: u64,
    fresh: bool,
}

/// The event kind a trigger is for.
pub fn kind_of(t: &Trigger) -> &'static str {
    match t {
        Trigger::Cluster => "cluster",
        Trigger::ContainerExit(_) => "container_exit",
        Trigger::NodeDown(_) => "node_down",
        Trigger::NodeUp(_) => "node_up",
        Trigger::Timer(_) => "timer",
    }
}

impl Scheduler {
    /// A scheduler that has seen nothing yet (its first plan runs every rule).
    pub fn new() -> Self {
        Scheduler {
            fresh: true,
            ..Scheduler::default()
        }
    }

    /// Forgets timers and backoffs (leadership lost: the next leader starts afresh).
    pub fn reset(&mut self) {
        *self = Scheduler::new();
    }

    /// The triggers `rule` gets now, given the state applied at `index` and the event
    /// triggers since the last plan; empty when it should not run. Timers that fire are
    /// re-armed from `now`.
    pub fn plan(
        &mut self,
        now: Instant,
        index: u64,
        rule: &str,
        handlers: &Handlers,
        events: &[Trigger],
    ) -> Vec<Trigger> {
        let mut triggers = Vec::new();
        if index > self.last_index || self.fresh {
            triggers.push(Trigger::Cluster);
        }
        triggers.extend(events.iter().cloned());
        for (kind, every) in handlers {
            if let (true, Some(ms)) = (kind == "timer", every) {
                let due = self.timers.entry((rule.to_string(), *ms)).or_insert(now);
                if now >= *due {
                    triggers.push(Trigger::Timer(*ms));
                    *due = now + Duration::from_millis(*ms);
                }
            }
        }
        triggers.retain(|t| handlers.iter().any(|(k, _)| k == kind_of(t)));
        if self.pull_backoff(rule, now).is_some() || self.crash_backoff(rule, now).is_some() {
            // Nothing a node does helps an image that cannot be had or a program that
            // crashes.
            return Vec::new();
        }
        let woken = self
            .crashes
            .get_mut(rule)
            .is_some_and(|e| std::mem::take(&mut e.2));
        if (self.retry.remove(rule) || woken) && !triggers.contains(&Trigger::Cluster) {
            triggers.push(Trigger::Cluster);
        }
        let backing_off = self.backoff.get(rule).is_some_and(|until| now < *until);
        if backing_off && !triggers.iter().any(|t| matches!(t, Trigger::NodeUp(_))) {
            return Vec::new();
        }
        triggers
    }

    /// Marks the end of one round of plans at `index`.
    pub fn done(&mut self, index: u64) {
        self.last_index = index;
        self.fresh = false;
    }

    /// A container of the rule could not get its image: no evaluation for a while,
    /// doubling with each round of failures in a row (the failures of the containers of
    /// one round count once), then an evaluation. Returns the wait.
    pub fn pull_failed(&mut self, rule: &str, now: Instant) -> Duration {
        self.retry.insert(rule.to_string());
        let e = self
            .pull_failures
            .entry(rule.to_string())
            .or_insert((0, now));
        if let Some(left) = e.1.checked_duration_since(now).filter(|d| !d.is_zero()) {
            return left;
        }
        e.0 = e.0.saturating_add(1);
        let wait = PULL_BACKOFF_FIRST
            .checked_mul(1u32 << (e.0 - 1).min(16))
            .unwrap_or(PULL_BACKOFF_MAX)
            .min(PULL_BACKOFF_MAX);
        e.1 = now + wait;
        wait
    }

    /// A container of the rule runs: image pulls work again.
    pub fn pull_succeeded(&mut self, rule: &str) {
        self.pull_failures.remove(rule);
        self.retry.remove(rule);
    }

    /// How much longer the rule waits after image pull failures, if it does.
    pub fn pull_backoff(&self, rule: &str, now: Instant) -> Option<Duration> {
        self.pull_failures
            .get(rule)
            .and_then(|(_, until)| until.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// A copy of the rule ended on its own soon after it began (`weight` 1), or after
    /// its node's restart attempts were used up (`weight` [`CRASH_LOOP_AFTER`]: its
    /// node already tried it again): from [`CRASH_LOOP_AFTER`] in a row the rule waits
    /// before it places again, doubling, then is evaluated. Copies ending while the rule
    /// waits count once with the ones before (they were placed in the same round).
    /// Returns the wait, if any.
    pub fn copy_crashed(&mut self, rule: &str, weight: u32, now: Instant) -> Option<Duration> {
        let e = self
            .crashes
            .entry(rule.to_string())
            .or_insert((0, now, false));
        if let Some(left) = e.1.checked_duration_since(now).filter(|d| !d.is_zero()) {
            return Some(left);
        }
        e.0 = e.0.saturating_add(weight);
        let over = e.0.checked_sub(CRASH_LOOP_AFTER)?;
        let wait = CRASH_BACKOFF_FIRST
            .checked_mul(1u32 << over.min(16))
            .unwrap_or(CRASH_BACKOFF_MAX)
            .min(CRASH_BACKOFF_MAX);
        e.1 = e.1.max(now + wait);
        e.2 = true;
        Some(wait)
    }

    /// A copy of the rule ran for [`CRASH_RESET`], or the rule changed: the count of
    /// quick ends starts again (a hold under way ends as planned).
    pub fn copy_ran_well(&mut self, rule: &str) {
        if let Some(e) = self.crashes.get_mut(rule) {
            e.0 = 0;
        }
    }

    /// Whether the rule's copies crash in a loop (enough quick ends in a row).
    pub fn crash_looping(&self, rule: &str) -> bool {
        self.crashes
            .get(rule)
            .is_some_and(|(n, _, _)| *n >= CRASH_LOOP_AFTER)
    }

    /// How much longer the rule waits after its copies crashed in a row, if it does.
    pub fn crash_backoff(&self, rule: &str, now: Instant) -> Option<Duration> {
        self.crashes
            .get(rule)
            .and_then(|(_, until, _)| until.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// The rule could not place a container: no evaluation for [`PLACEMENT_BACKOFF`].
    pub fn back_off(&mut self, rule: &str, now: Instant) {
        self.backoff
            .insert(rule.to_string(), now + PLACEMENT_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::watch::ViewNode;

    fn h(list: &[(&str, Option<u64>)]) -> Vec<(String, Option<u64>)> {
        list.iter().map(|(k, e)| (k.to_string(), *e)).collect()
    }

    fn node_up() -> Trigger {
        Trigger::NodeUp(ViewNode {
            id: 2,
            addr: "a".into(),
            state: "up".into(),
            labels: Default::default(),
            containers: 0,
        })
    }

    #[test]
    fn a_change_runs_cluster_handlers_once() {
        let mut s = Scheduler::new();
        let t0 = Instant::now();
        let cluster = h(&[("cluster", None)]);
        assert_eq!(s.plan(t0, 5, "r", &cluster, &[]), vec![Trigger::Cluster]);
        s.done(5);
        assert!(
            s.plan(t0, 5, "r", &cluster, &[]).is_empty(),
            "nothing changed"
        );
        assert_eq!(s.plan(t0, 6, "r", &cluster, &[]), vec![Trigger::Cluster]);
    }

    #[test]
    fn only_watched_kinds_are_handed_over() {
        let mut s = Scheduler::new();
        let exits = h(&[("node_up", None)]);
        let t = s.plan(Instant::now(), 1, "r", &exits, &[node_up()]);
        assert_eq!(t, vec![node_up()]);
    }

    #[test]
    fn timers_fire_when_due_and_rearm() {
        let mut s = Scheduler::new();
        let t0 = Instant::now();
        let timer = h(&[("timer", Some(1000))]);
        s.done(1);
        assert_eq!(s.plan(t0, 1, "r", &timer, &[]), vec![Trigger::Timer(1000)]);
        let later = t0 + Duration::from_millis(999);
        assert!(s.plan(later, 1, "r", &timer, &[]).is_empty());
        let due = t0 + Duration::from_millis(1000);
        assert_eq!(s.plan(due, 1, "r", &timer, &[]), vec![Trigger::Timer(1000)]);
    }

    #[test]
    fn pull_failures_hold_a_rule_longer_each_time_until_a_container_runs() {
        let mut s = Scheduler::new();
        let t0 = Instant::now();
        let hs = h(&[("cluster", None), ("node_up", None)]);
        assert_eq!(s.pull_failed("r", t0), PULL_BACKOFF_FIRST);
        let half = PULL_BACKOFF_FIRST / 2;
        assert_eq!(
            s.pull_failed("r", t0 + half),
            half,
            "the same round counts once"
        );
        assert!(
            s.plan(t0, 2, "r", &hs, &[node_up()]).is_empty(),
            "a node coming up does not help"
        );
        s.done(2);
        let t1 = t0 + PULL_BACKOFF_FIRST;
        assert_eq!(
            s.plan(t1, 2, "r", &hs, &[]),
            vec![Trigger::Cluster],
            "evaluated when the wait ends, though nothing changed"
        );
        assert!(s.plan(t1, 2, "r", &hs, &[]).is_empty(), "once");
        assert_eq!(s.pull_failed("r", t1), PULL_BACKOFF_FIRST * 2);
        assert_eq!(
            s.pull_backoff("r", t1 + PULL_BACKOFF_FIRST),
            Some(PULL_BACKOFF_FIRST)
        );
        let mut t = t1;
        for _ in 0..10 {
            s.pull_failed("r", t);
            t += PULL_BACKOFF_MAX;
        }
        assert_eq!(s.pull_failed("r", t), PULL_BACKOFF_MAX, "capped");
        assert_eq!(
            s.plan(t, 4, "other", &hs, &[]),
            vec![Trigger::Cluster],
            "other rules run"
        );
        s.pull_succeeded("r");
        assert_eq!(s.pull_backoff("r", t), None);
        assert_eq!(s.plan(t, 5, "r", &hs, &[]), vec![Trigger::Cluster]);
    }

    #[test]
    fn a_copy_killed_from_outside_is_no_crash_and_one_that_gave_up_counts_full() {
        let exited = |code, oom_killed, error: Option<&str>| Observed::Exited {
            code,
            oom_killed,
            error: error.map(String::from),
        };
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(
            copy_end(&exited(Some(1), false, None), ms(50), false),
            CopyEnd::Crashed(1)
        );
        assert_eq!(
            copy_end(&exited(Some(1), false, None), ms(5_000), false),
            CopyEnd::RanWell
        );
        assert_eq!(
            copy_end(&exited(Some(1), false, None), None, false),
            CopyEnd::RanWell
        );
        // kill -9 / kill by hand, however soon: not the program's doing.
        assert_eq!(
            copy_end(&exited(Some(137), false, None), ms(50), false),
            CopyEnd::Killed
        );
        assert_eq!(
            copy_end(&exited(Some(143), false, None), ms(50), false),
            CopyEnd::Killed
        );
        // The OOM killer's SIGKILL is the program's doing.
        assert_eq!(
            copy_end(&exited(Some(137), true, None), ms(50), false),
            CopyEnd::Crashed(1)
        );
        // A launch that failed never ran.
        assert_eq!(
            copy_end(&exited(None, false, Some("exec: not found")), None, false),
            CopyEnd::Crashed(1)
        );
        assert_eq!(
            copy_end(&exited(Some(3), false, None), ms(60_000), true),
            CopyEnd::Crashed(CRASH_LOOP_AFTER)
        );
    }

    #[test]
    fn copies_crashing_in_a_row_hold_a_rule_longer_each_time_until_one_runs_well() {
        let t0 = Instant::now();
        let mut s = Scheduler::new();
        let handlers = h(&[("cluster", None)]);
        // Two quick ends: replaced at once.
        assert_eq!(s.copy_crashed("r", 1, t0), None);
        assert_eq!(s.copy_crashed("r", 1, t0), None);
        // The third: held for a second, then evaluated (nothing else need change).
        assert_eq!(s.copy_crashed("r", 1, t0), Some(CRASH_BACKOFF_FIRST));
        s.done(1);
        assert!(s.plan(t0, 1, "r", &handlers, &[node_up()]).is_empty());
        let after = t0 + CRASH_BACKOFF_FIRST;
        // A copy that ran a moment (its image was had) does not cancel the wake-up.
        s.pull_succeeded("r");
        assert_eq!(s.plan(after, 1, "r", &handlers, &[]), [Trigger::Cluster]);
        assert_eq!(s.copy_crashed("r", 1, after), Some(CRASH_BACKOFF_FIRST * 2));
        // Others of the same round, ending during the hold, do not lengthen it.
        assert_eq!(
            s.copy_crashed("r", 1, after + CRASH_BACKOFF_FIRST),
            Some(CRASH_BACKOFF_FIRST)
        );
        let mut t = after;
        for _ in 0..20 {
            t += CRASH_BACKOFF_MAX;
            s.copy_crashed("r", 1, t);
        }
        assert_eq!(s.crash_backoff("r", t), Some(CRASH_BACKOFF_MAX), "capped");
        // A copy that ran well: the count starts again (the hold under way stays).
        assert!(s.crash_looping("r"));
        s.copy_ran_well("r");
        assert!(!s.crash_looping("r"));
        assert!(s.crash_backoff("r", t).is_some());
        let after = t + CRASH_BACKOFF_MAX;
        assert_eq!(s.copy_crashed("r", 1, after), None);
        // A copy that used up its node's restarts holds the rule at once.
        s.copy_ran_well("r");
        let later = after + CRASH_BACKOFF_MAX;
        assert_eq!(
            s.copy_crashed("r", CRASH_LOOP_AFTER, later),
            Some(CRASH_BACKOFF_FIRST)
        );
        assert_eq!(s.crash_backoff("other", later), None);
    }

    #[test]
    fn backoff_holds_a_rule_until_it_ends_or_a_node_comes_up() {
        let mut s = Scheduler::new();
        let t0 = Instant::now();
        let hs = h(&[("cluster", None), ("node_up", None)]);
        s.back_off("r", t0);
        assert!(s.plan(t0, 2, "r", &hs, &[]).is_empty());
        assert_eq!(s.plan(t0, 3, "r", &hs, &[node_up()]).len(), 2);
        let after = t0 + PLACEMENT_BACKOFF;
        assert_eq!(s.plan(after, 4, "r", &hs, &[]), vec![Trigger::Cluster]);
        // Another rule is not held.
        s.back_off("r", after);
        assert_eq!(s.plan(after, 5, "other", &hs, &[]), vec![Trigger::Cluster]);
    }
}
