//! Which rules run now and with what triggers: a change was committed, events arrived,
//! a timer is due; a rule that could not place its containers backs off for a while
//! (unless a node comes up). Pure: the clock is an argument.

use crate::spec::watch::Trigger;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a rule that could not place waits before trying again (a node coming up
/// ends the wait at once).
pub const PLACEMENT_BACKOFF: Duration = Duration::from_secs(1);

/// What one rule handles: `(event kind, timer period in ms)` per handler.
pub type Handlers = [(String, Option<u64>)];

/// The rule loop's memory between evaluations.
#[derive(Debug, Default)]
pub struct Scheduler {
    timers: HashMap<(String, u64), Instant>,
    backoff: HashMap<String, Instant>,
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
