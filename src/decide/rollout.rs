//! One step of a rule's rollout (pure: time is an argument). The rule names a
//! definition by its current digest; its copies of another digest are old. Old copies
//! are replaced `max_parallel` at a time, each by a new copy queued behind it (it starts
//! only once the old one ended: never more than N); the next ones only once every new
//! copy has been healthy (running, without a check) for `min_healthy_time`. A new copy
//! that is not there by `healthy_deadline` after it was placed, or that ended, fails
//! the rollout: it stops, and with `auto_revert` the digest the old copies run comes
//! back, which makes the failed copies the old ones (replaced first: not healthy ones
//! before healthy ones).

use crate::cluster::state::{ContainerRecord, Desired, Health, Observed};
use crate::spec::update::UpdatePolicy;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What the leader remembers of the new copies (from when it first saw them; a new
/// leader starts counting afresh, which only makes it wait longer).
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// When each copy was first seen placed.
    pub placed: HashMap<String, Instant>,
    /// Since when each copy has been healthy (or running, without a check).
    pub healthy_since: HashMap<String, Instant>,
    /// Copies already there at the first look (a revert's target version): healthy,
    /// they count as settled at once.
    pub veterans: std::collections::HashSet<String>,
    looked: bool,
}

impl Seen {
    /// Notes what the copies show at `now`.
    pub fn observe<'a>(&mut self, copies: impl Iterator<Item = &'a ContainerRecord>, now: Instant) {
        let first = !self.looked;
        self.looked = true;
        for c in copies {
            if first {
                self.veterans.insert(c.id.clone());
            }
            self.placed.entry(c.id.clone()).or_insert(now);
            if counts_as_healthy(&c.observed) {
                self.healthy_since.entry(c.id.clone()).or_insert(now);
            } else {
                self.healthy_since.remove(&c.id);
            }
        }
    }
}

/// Running and, with a check, passing it.
fn counts_as_healthy(o: &Observed) -> bool {
    match o {
        Observed::Running { .. } => true,
        Observed::Checked { health, .. } => *health == Health::Healthy,
        _ => false,
    }
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No old copy left: nothing to do.
    Done,
    /// Replace these old copies now (maybe none: waiting for the new ones).
    Replace(Vec<String>),
    /// The new version failed: stop replacing; with `revert_to`, roll back to it.
    Failed {
        /// What failed.
        reason: String,
        /// The digest to go back to (`auto_revert`).
        revert_to: Option<String>,
    },
}

/// The step for the copies (`copies`: every container of the rule and definition,
/// finished ones included) of a definition whose current digest is `current`.
pub fn step(
    policy: &UpdatePolicy,
    current: &str,
    copies: &[&ContainerRecord],
    seen: &Seen,
    now: Instant,
) -> Step {
    let old: Vec<&&ContainerRecord> = copies
        .iter()
        .filter(|c| c.digest != current && c.is_active())
        .collect();
    if old.is_empty() {
        return Step::Done;
    }
    let deadline = Duration::from_millis(policy.healthy_deadline_ms);
    let settle = Duration::from_millis(policy.min_healthy_ms);
    let mut unsettled = 0u32;
    for c in copies.iter().filter(|c| c.digest == current) {
        // A new copy placed in this rollout that ended on its own: the version fails (a
        // copy lost with its node says nothing of the version; the rule replaces it).
        let ended_itself = matches!(
            c.observed,
            Observed::Exited { .. } | Observed::PullFailed { .. }
        );
        if ended_itself && c.desired == Desired::Running && seen.placed.contains_key(&c.id) {
            return failed(
                policy,
                &old,
                format!("{} ended ({})", c.id, ended(&c.observed)),
            );
        }
        if !c.is_active() {
            continue;
        }
        let settled = seen.healthy_since.get(&c.id).is_some_and(|t| {
            seen.veterans.contains(&c.id) || now.saturating_duration_since(*t) >= settle
        });
        if settled {
            continue;
        }
        unsettled += 1;
        let placed = seen.placed.get(&c.id).copied().unwrap_or(now);
        if now.saturating_duration_since(placed) >= deadline && !counts_as_healthy(&c.observed) {
            return failed(
                policy,
                &old,
                format!(
                    "{} not healthy within {} s ({})",
                    c.id,
                    deadline.as_secs(),
                    c.observed.name()
                ),
            );
        }
    }
    // Old copies being replaced (stopped, not ended yet) are in flight too.
    let stopping = copies
        .iter()
        .filter(|c| c.digest != current && c.desired == Desired::Stopped && !c.observed.is_final())
        .count() as u32;
    let room = policy.max_parallel.saturating_sub(unsettled + stopping) as usize;
    let mut pick: Vec<&&ContainerRecord> = old;
    // Not healthy ones first (a revert replaces failed copies before healthy ones), then
    // the oldest.
    pick.sort_by_key(|c| {
        (
            counts_as_healthy(&c.observed),
            c.created_index,
            c.id.clone(),
        )
    });
    Step::Replace(pick.into_iter().take(room).map(|c| c.id.clone()).collect())
}

fn ended(o: &Observed) -> String {
    match o {
        Observed::Exited { error: Some(e), .. } => e.clone(),
        Observed::Exited { code: Some(c), .. } => format!("exit code {c}"),
        other => other.name().to_string(),
    }
}

fn failed(policy: &UpdatePolicy, old: &[&&ContainerRecord], reason: String) -> Step {
    // The version most old copies run.
    let mut by: HashMap<&str, usize> = HashMap::new();
    for c in old {
        *by.entry(c.digest.as_str()).or_default() += 1;
    }
    let revert_to = policy
        .auto_revert
        .then(|| {
            by.into_iter()
                .max_by_key(|(d, n)| (*n, *d))
                .map(|(d, _)| d.to_string())
        })
        .flatten();
    Step::Failed { reason, revert_to }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(id: &str, digest: &str, observed: Observed, index: u64) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            definition: "web".into(),
            digest: digest.into(),
            node: 1,
            desired: Desired::Running,
            observed,
            rule: Some("r".into()),
            created_index: index,
        }
    }

    fn healthy(pid: i32) -> Observed {
        Observed::Checked {
            pid,
            health: Health::Healthy,
        }
    }

    fn policy(max_parallel: u32, auto_revert: bool) -> UpdatePolicy {
        UpdatePolicy {
            max_parallel,
            min_healthy_ms: 1_000,
            healthy_deadline_ms: 10_000,
            auto_revert,
        }
    }

    #[test]
    fn old_copies_go_max_parallel_at_a_time_once_the_new_ones_settled() {
        let t0 = Instant::now();
        let p = policy(2, false);
        let old: Vec<ContainerRecord> = (0..5)
            .map(|i| copy(&format!("o{i}"), "v1", healthy(i), i as u64))
            .collect();
        let refs: Vec<&ContainerRecord> = old.iter().collect();
        // The leader looks before each step (no new copy at the first).
        let mut seen = Seen::default();
        seen.observe(refs.iter().copied().filter(|c| c.digest == "v2"), t0);
        assert_eq!(
            step(&p, "v2", &refs, &seen, t0),
            Step::Replace(vec!["o0".into(), "o1".into()])
        );
        // Two queued new copies and two stopping old ones: no room.
        let mut all = old.clone();
        all[0].desired = Desired::Stopped;
        all[1].desired = Desired::Stopped;
        all.push(copy(
            "n1",
            "v2",
            Observed::Queued { after: "o0".into() },
            10,
        ));
        all.push(copy(
            "n2",
            "v2",
            Observed::Queued { after: "o1".into() },
            11,
        ));
        let refs: Vec<&ContainerRecord> = all.iter().collect();
        seen.observe(refs.iter().copied().filter(|c| c.digest == "v2"), t0);
        assert_eq!(step(&p, "v2", &refs, &seen, t0), Step::Replace(vec![]));
        // Old ones ended, new ones healthy but not yet for min_healthy_time.
        all[0].observed = Observed::Exited {
            code: Some(143),
            oom_killed: false,
            error: None,
        };
        all[1].observed = all[0].observed.clone();
        all[5].observed = healthy(20);
        all[6].observed = healthy(21);
        let refs: Vec<&ContainerRecord> = all.iter().collect();
        let t1 = t0 + Duration::from_secs(2);
        seen.observe(refs.iter().copied().filter(|c| c.digest == "v2"), t1);
        assert_eq!(step(&p, "v2", &refs, &seen, t1), Step::Replace(vec![]));
        let t2 = t1 + Duration::from_millis(1_000);
        assert_eq!(
            step(&p, "v2", &refs, &seen, t2),
            Step::Replace(vec!["o2".into(), "o3".into()])
        );
    }

    #[test]
    fn a_new_copy_not_healthy_in_time_fails_and_reverts_to_what_the_old_ones_run() {
        let t0 = Instant::now();
        let mut all: Vec<ContainerRecord> = (0..3)
            .map(|i| copy(&format!("o{i}"), "v1", healthy(i), i as u64))
            .collect();
        all.push(copy(
            "n1",
            "v2",
            Observed::Checked {
                pid: 9,
                health: Health::Starting,
            },
            10,
        ));
        let refs: Vec<&ContainerRecord> = all.iter().collect();
        let mut seen = Seen::default();
        seen.observe(refs.iter().copied().filter(|c| c.digest == "v2"), t0);
        assert_eq!(
            step(&policy(1, true), "v2", &refs, &seen, t0),
            Step::Replace(vec![])
        );
        let late = t0 + Duration::from_secs(10);
        match step(&policy(1, true), "v2", &refs, &seen, late) {
            Step::Failed { reason, revert_to } => {
                assert_eq!(reason, "n1 not healthy within 10 s (running)");
                assert_eq!(revert_to.as_deref(), Some("v1"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            step(&policy(1, false), "v2", &refs, &seen, late),
            Step::Failed {
                revert_to: None,
                ..
            }
        ));
        // Reverted: v1 is current (the leader looks afresh), its healthy copies are
        // settled at once, and the not-healthy v2 copy is replaced first.
        let mut seen = Seen::default();
        seen.observe(refs.iter().copied().filter(|c| c.digest == "v1"), late);
        assert_eq!(
            step(&policy(1, true), "v1", &refs, &seen, late),
            Step::Replace(vec!["n1".into()])
        );
    }

    #[test]
    fn a_new_copy_that_ended_fails_the_rollout_and_done_when_no_old_copy_is_left() {
        let t0 = Instant::now();
        let mut all = [
            copy("o1", "v1", healthy(1), 1),
            copy("n1", "v2", Observed::Running { pid: 2 }, 2),
        ];
        let refs: Vec<&ContainerRecord> = all.iter().collect();
        let mut seen = Seen::default();
        seen.observe(refs.iter().copied().filter(|c| c.digest == "v2"), t0);
        all[1].observed = Observed::Exited {
            code: Some(3),
            oom_killed: false,
            error: None,
        };
        let refs: Vec<&ContainerRecord> = all.iter().collect();
        assert_eq!(
            step(&policy(1, false), "v2", &refs, &seen, t0),
            Step::Failed {
                reason: "n1 ended (exit code 3)".into(),
                revert_to: None
            }
        );
        let only_new = [copy("n2", "v2", healthy(3), 3)];
        let refs: Vec<&ContainerRecord> = only_new.iter().collect();
        assert_eq!(step(&policy(1, false), "v2", &refs, &seen, t0), Step::Done);
    }

    /// A model of the cluster under a rollout: the hosts run an old copy until it ends,
    /// a new one from when its node starts it (only once its predecessor ended) until it
    /// ends; events come in any order.
    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Event {
            /// A stopping old copy (the i-th of them) ends.
            OldEnds(usize),
            /// A queued new copy (the i-th) is started by its node.
            NewStarts(usize),
            /// A started new copy (the i-th) passes its check.
            NewHealthy(usize),
            /// Time passes (ms).
            Tick(u64),
            /// The leader takes a step.
            Step,
        }

        fn event() -> impl Strategy<Value = Event> {
            prop_oneof![
                (0..8usize).prop_map(Event::OldEnds),
                (0..8usize).prop_map(Event::NewStarts),
                (0..8usize).prop_map(Event::NewHealthy),
                (0..3_000u64).prop_map(Event::Tick),
                Just(Event::Step),
            ]
        }

        proptest! {
            #[test]
            fn a_rollout_never_runs_more_than_n(
                n in 1..7usize,
                max_parallel in 1..4u32,
                events in proptest::collection::vec(event(), 0..200),
            ) {
                let policy = UpdatePolicy {
                    max_parallel,
                    min_healthy_ms: 500,
                    healthy_deadline_ms: 60_000,
                    auto_revert: false,
                };
                let mut copies: Vec<ContainerRecord> = (0..n)
                    .map(|i| copy(&format!("o{i}"), "v1", healthy(i as i32), i as u64))
                    .collect();
                let mut seen = Seen::default();
                let mut now = Instant::now();
                let mut next = 100u64;
                for e in events {
                    match e {
                        Event::OldEnds(i) => {
                            if let Some(c) = copies.iter_mut().filter(|c| {
                                c.desired == Desired::Stopped && !c.observed.is_final()
                            }).nth(i) {
                                c.observed = Observed::Exited { code: Some(143), oom_killed: false, error: None };
                            }
                        }
                        Event::NewStarts(i) => {
                            let ended: Vec<String> = copies.iter()
                                .filter(|c| c.observed.is_final()).map(|c| c.id.clone()).collect();
                            if let Some(c) = copies.iter_mut().filter(|c| matches!(
                                &c.observed, Observed::Queued { after } if ended.contains(after)
                            )).nth(i) {
                                c.observed = Observed::Checked { pid: 1, health: Health::Starting };
                            }
                        }
                        Event::NewHealthy(i) => {
                            if let Some(c) = copies.iter_mut().filter(|c| matches!(
                                c.observed, Observed::Checked { health: Health::Starting, .. }
                            )).nth(i) {
                                c.observed = healthy(2);
                            }
                        }
                        Event::Tick(ms) => now += Duration::from_millis(ms),
                        Event::Step => {
                            let refs: Vec<&ContainerRecord> = copies.iter().collect();
                            seen.observe(refs.iter().copied().filter(|c| c.digest == "v2"), now);
                            if let Step::Replace(ids) = step(&policy, "v2", &refs, &seen, now) {
                                prop_assert!(ids.len() <= max_parallel as usize);
                                for id in ids {
                                    // As `apply` does: only an active copy is replaced.
                                    let old = copies.iter_mut().find(|c| c.id == id).unwrap();
                                    prop_assert!(old.is_active(), "{id} replaced twice");
                                    old.desired = Desired::Stopped;
                                    next += 1;
                                    copies.push(copy(&format!("n{next}"), "v2", Observed::Queued { after: id }, next));
                                }
                            }
                        }
                    }
                    // The truth: what runs on the hosts.
                    let running = copies.iter().filter(|c| {
                        !c.observed.is_final() && !matches!(c.observed, Observed::Queued { .. })
                    }).count();
                    prop_assert!(running <= n, "{running} running of {n}: {copies:#?}");
                    // And the rule always counts N (so it places nothing more).
                    prop_assert_eq!(copies.iter().filter(|c| c.is_active()).count(), n);
                }
            }
        }
    }
}
