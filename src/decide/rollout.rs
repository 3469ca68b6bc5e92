//! One step of a rule's rollout (pure: time is an argument). The rule names a
//! definition by its current digest; its copies of another digest are old. Old copies
//! are replaced `max_parallel` at a time (and `stagger` apart), each by a new copy
//! queued behind it (it starts only once the old one ended: never more than N), or,
//! with `max_surge`, start-first: the new copy runs at once and the old one retires
//! (runs on, uncounted) until the new one has settled, then stops (never more than
//! N + `max_surge`); the next ones only once every new copy has been healthy (running,
//! without a check) for `min_healthy_time`. A new copy that is not healthy by `healthy_deadline` after it
//! was placed, or that ended, fails the version; so does a rollout that made no
//! progress (no copy settled, no old copy gone) for `progress_deadline`. With every
//! copy new and settled the version is stable. What happens to a failed version
//! (`auto_revert`: the last stable version comes back, whose copies are then the
//! current ones, so the failed copies are the old ones and go first) is the state's
//! business (`Command::RolloutEnded`).

use crate::cluster::state::{ContainerRecord, Desired, Health, Observed};
use crate::spec::update::UpdatePolicy;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// What the leader remembers of one version's rollout (from when it first looked; a
/// new leader starts counting afresh, which only makes it wait longer).
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// When each copy was first seen placed.
    pub placed: HashMap<String, Instant>,
    /// Since when each copy has been healthy (or running, without a check).
    pub healthy_since: HashMap<String, Instant>,
    /// Copies already there at the first look (a revert's target version): healthy,
    /// they count as settled at once.
    pub veterans: HashSet<String>,
    /// The last progress seen, and when it was first seen.
    progress: Option<(Progress, Instant)>,
    /// When old copies were last replaced (`stagger`).
    last_replace: Option<Instant>,
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
            // Looked up before inserting: a step looks at every copy, and all but the
            // new ones are known (no copy of their id at every look).
            if !self.placed.contains_key(&c.id) {
                self.placed.insert(c.id.clone(), now);
            }
            if counts_as_healthy(&c.observed) {
                if !self.healthy_since.contains_key(&c.id) {
                    self.healthy_since.insert(c.id.clone(), now);
                }
            } else {
                self.healthy_since.remove(&c.id);
            }
        }
    }

    /// When copy `id` settles (healthy for `settle`): `None` while it is not healthy,
    /// `Some(None)` for a veteran (settled at once). `step` and `next_change` both ask.
    fn settles_at(&self, id: &str, settle: Duration) -> Option<Option<Instant>> {
        let since = self.healthy_since.get(id)?;
        Some((!self.veterans.contains(id)).then(|| *since + settle))
    }

    /// Whether copy `id` is settled at `now`.
    fn settled(&self, id: &str, settle: Duration, now: Instant) -> bool {
        match self.settles_at(id, settle) {
            Some(Some(at)) => now >= at,
            Some(None) => true,
            None => false,
        }
    }

    /// Notes that old copies were replaced at `now`.
    pub fn replaced(&mut self, now: Instant) {
        self.last_replace = Some(now);
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

/// Where a rollout stands: its copies by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Active copies of another version.
    pub old: u32,
    /// Active copies of the version not yet settled.
    pub unsettled: u32,
    /// Copies of the version healthy for `min_healthy_time`.
    pub settled: u32,
    /// Its canaries are all placed and settled: it waits for a promotion.
    pub awaiting_promotion: bool,
}

impl Progress {
    /// Both together (the files of a rule).
    pub fn plus(self, o: Progress) -> Progress {
        Progress {
            old: self.old + o.old,
            unsettled: self.unsettled + o.unsettled,
            settled: self.settled + o.settled,
            awaiting_promotion: self.awaiting_promotion || o.awaiting_promotion,
        }
    }

    /// Moved forward since `before`: a copy settled or an old one went.
    fn beyond(self, before: Progress) -> bool {
        self.settled > before.settled || self.old < before.old
    }
}

/// What to do now, for one definition of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Replace these old copies now (maybe none: waiting for the new ones).
    Go {
        /// Old copies to replace (start-first with `max_surge`, else stop-first).
        replace: Vec<String>,
        /// Whether they are replaced start-first (`max_surge`, canaries).
        start_first: bool,
        /// Retiring copies whose start-first replacement has settled: stop them now.
        stop: Vec<String>,
        /// Where the definition's rollout stands.
        progress: Progress,
    },
    /// The version failed.
    Failed {
        /// What failed.
        reason: String,
    },
}

/// The step for the copies (`copies`: every container of the rule and definition,
/// finished ones included) of a definition whose current digest is `current`.
///
/// With `canary` copies in the policy and the version not `promoted`, the first step
/// of an update places that many new copies start-first beside the old ones (which
/// keep running: N + canary), then waits, once they have settled, for a promotion.
pub fn step(
    policy: &UpdatePolicy,
    current: &str,
    copies: &[&ContainerRecord],
    seen: &Seen,
    promoted: bool,
    now: Instant,
) -> Step {
    let old: Vec<&&ContainerRecord> = copies
        .iter()
        .filter(|c| c.digest != current && c.is_active())
        .collect();
    let deadline = Duration::from_millis(policy.healthy_deadline_ms);
    let settle = Duration::from_millis(policy.min_healthy_ms);
    let mut progress = Progress {
        old: old.len() as u32,
        ..Progress::default()
    };
    // Old copies still run (wanted, stopping or retiring): the version replaces them.
    let updating = copies
        .iter()
        .any(|c| c.digest != current && !c.observed.is_final());
    for c in copies.iter().filter(|c| c.digest == current) {
        // A new copy placed in this rollout that ended on its own while old ones still
        // run: the version fails (a copy lost with its node says nothing of the version;
        // the rule replaces it). Once no old copy is left (or for a first version) a
        // copy that ends is churn the rule and the restart policy handle; the deadlines
        // still judge the version.
        let ended_itself = matches!(
            c.observed,
            Observed::Exited { .. } | Observed::PullFailed { .. }
        );
        if updating
            && ended_itself
            && c.desired == Desired::Running
            && seen.placed.contains_key(&c.id)
        {
            return Step::Failed {
                reason: format!("{} ended ({})", c.id, ended(&c.observed)),
            };
        }
        if !c.is_active() {
            continue;
        }
        if seen.settled(&c.id, settle, now) {
            progress.settled += 1;
            continue;
        }
        progress.unsettled += 1;
        let placed = seen.placed.get(&c.id).copied().unwrap_or(now);
        if now.saturating_duration_since(placed) >= deadline && !counts_as_healthy(&c.observed) {
            return Step::Failed {
                reason: format!(
                    "{} not healthy within {} s ({})",
                    c.id,
                    deadline.as_secs(),
                    c.observed.name()
                ),
            };
        }
    }
    // Old copies being replaced (stopped, not ended yet) are in flight too; so are the
    // retiring ones (start-first: they run until their replacement settles).
    let stopping = copies
        .iter()
        .filter(|c| c.digest != current && c.desired == Desired::Stopped && !c.observed.is_final())
        .count() as u32;
    let mut stop = Vec::new();
    let mut retiring = 0u32;
    for c in copies.iter().filter(|c| !c.observed.is_final()) {
        if let Desired::Retiring { by } = &c.desired {
            retiring += 1;
            if seen.settled(by, settle, now) {
                stop.push(c.id.clone());
            }
        }
    }
    let canaries = policy.canary > 0 && !promoted && (!old.is_empty() || retiring > 0);
    if canaries {
        // The old copies the canaries replace run on until the promotion.
        stop.clear();
    }
    progress.old += retiring;
    let staggered = seen.last_replace.is_some_and(|t| {
        now.saturating_duration_since(t) < Duration::from_millis(policy.stagger_ms)
    });
    let parallel = policy
        .max_parallel
        .saturating_sub(progress.unsettled + stopping);
    let room = if staggered {
        0
    } else if canaries {
        policy.canary.saturating_sub(retiring) as usize
    } else if policy.max_surge > 0 {
        // Start-first: never more than N + max_surge running.
        parallel.min(policy.max_surge.saturating_sub(retiring + stopping)) as usize
    } else {
        parallel as usize
    };
    let room = room.min(old.len());
    // Every canary placed and settled: the version waits for its promotion.
    progress.awaiting_promotion =
        canaries && room == 0 && progress.unsettled == 0 && retiring > 0 && !staggered;
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
    Step::Go {
        replace: pick.into_iter().take(room).map(|c| c.id.clone()).collect(),
        start_first: canaries || policy.max_surge > 0,
        stop,
        progress,
    }
}

/// When [`step`] could answer otherwise for the same copies and the same `seen`: the
/// first moment after `now` at which a healthy copy settles, an unhealthy one reaches
/// its deadline, a retiring copy's replacement settles or the stagger ends. `None`:
/// only a change of the copies can change the step. The leader looks again no sooner
/// (a look at a million copies takes a second).
pub fn next_change(
    policy: &UpdatePolicy,
    current: &str,
    copies: &[&ContainerRecord],
    seen: &Seen,
    now: Instant,
) -> Option<Instant> {
    let deadline = Duration::from_millis(policy.healthy_deadline_ms);
    let settle = Duration::from_millis(policy.min_healthy_ms);
    let mut due: Option<Instant> = None;
    let mut at = |t: Instant| {
        if t > now {
            due = Some(due.map_or(t, |d| d.min(t)));
        }
    };
    for c in copies
        .iter()
        .filter(|c| c.digest == current && c.is_active())
    {
        match seen.settles_at(&c.id, settle) {
            Some(Some(t)) => at(t),
            Some(None) => {}
            None if !counts_as_healthy(&c.observed) => {
                at(seen.placed.get(&c.id).copied().unwrap_or(now) + deadline);
            }
            None => {}
        }
    }
    for c in copies.iter().filter(|c| !c.observed.is_final()) {
        if let Desired::Retiring { by } = &c.desired {
            if let Some(Some(t)) = seen.settles_at(by, settle) {
                at(t);
            }
        }
    }
    if let Some(t) = seen.last_replace {
        at(t + Duration::from_millis(policy.stagger_ms));
    }
    due
}

/// How a version's rollout stands, from its definitions' steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Under way.
    Going,
    /// Its canaries are healthy; it waits for a promotion (no deadline runs meanwhile).
    AwaitingPromotion,
    /// Every copy runs the version and is settled.
    Stable,
    /// It failed (a copy, or no progress for `progress_deadline`).
    Failed(String),
}

/// The verdict on a version from the steps of its definitions; notes the progress in
/// `seen` (the clock of `progress_deadline` restarts when a copy settles or an old one
/// goes).
pub fn verdict(policy: &UpdatePolicy, steps: &[Step], seen: &mut Seen, now: Instant) -> Verdict {
    let mut total = Progress::default();
    for s in steps {
        match s {
            Step::Failed { reason } => return Verdict::Failed(reason.clone()),
            Step::Go { progress, .. } => total = total.plus(*progress),
        }
    }
    if total.old == 0 && total.unsettled == 0 && total.settled > 0 {
        return Verdict::Stable;
    }
    if total.awaiting_promotion {
        seen.progress = None;
        return Verdict::AwaitingPromotion;
    }
    let since = match seen.progress {
        Some((before, at)) if !total.beyond(before) => at,
        _ => now,
    };
    seen.progress = Some((total, since));
    let limit = Duration::from_millis(policy.progress_deadline_ms);
    if policy.progress_deadline_ms > 0 && now.saturating_duration_since(since) >= limit {
        return Verdict::Failed(format!(
            "no progress for {} s ({} old, {} new not yet healthy, {} healthy)",
            limit.as_secs(),
            total.old,
            total.unsettled,
            total.settled
        ));
    }
    Verdict::Going
}

fn ended(o: &Observed) -> String {
    match o {
        Observed::Exited { error: Some(e), .. } => e.clone(),
        Observed::Exited { code: Some(c), .. } => format!("exit code {c}"),
        other => other.name().to_string(),
    }
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

    fn policy(max_parallel: u32) -> UpdatePolicy {
        UpdatePolicy {
            max_parallel,
            max_surge: 0,
            canary: 0,
            auto_promote: false,
            min_healthy_ms: 1_000,
            healthy_deadline_ms: 10_000,
            progress_deadline_ms: 30_000,
            stagger_ms: 0,
            auto_revert: false,
        }
    }

    #[test]
    fn the_step_changes_at_the_next_change_and_not_before() {
        let t0 = Instant::now();
        let mut p = policy(1);
        p.stagger_ms = 5_000;
        let mut all = [
            copy("o0", "v1", healthy(1), 1),
            copy("n0", "v2", healthy(2), 2),
            copy("n1", "v2", Observed::Pending, 3),
        ];
        let mut seen = Seen::default();
        seen.observe(std::iter::empty(), t0);
        let refs: Vec<&ContainerRecord> = all.iter().collect();
        seen.observe(refs.iter().copied().filter(|c| c.digest == "v2"), t0);
        seen.replaced(t0);
        let settled = |s: &Step| match s {
            Step::Go { progress, .. } => progress.settled,
            Step::Failed { .. } => u32::MAX,
        };
        // n0 settles at t0 + 1 s: the first change; before it, the step stands.
        let due = next_change(&p, "v2", &refs, &seen, t0);
        assert_eq!(due, Some(t0 + Duration::from_millis(1_000)));
        let before = t0 + Duration::from_millis(999);
        assert_eq!(
            step(&p, "v2", &refs, &seen, false, before),
            step(&p, "v2", &refs, &seen, false, t0)
        );
        let at = due.unwrap();
        assert_eq!(settled(&step(&p, "v2", &refs, &seen, false, at)), 1);
        // Then the stagger ends (t0 + 5 s), then n1 reaches its deadline (t0 + 10 s).
        assert_eq!(
            next_change(&p, "v2", &refs, &seen, at),
            Some(t0 + Duration::from_secs(5))
        );
        let late = t0 + Duration::from_secs(5);
        let deadline = next_change(&p, "v2", &refs, &seen, late).unwrap();
        assert_eq!(deadline, t0 + Duration::from_secs(10));
        assert!(matches!(
            step(
                &p,
                "v2",
                &refs,
                &seen,
                false,
                deadline - Duration::from_millis(1)
            ),
            Step::Go { .. }
        ));
        assert!(matches!(
            step(&p, "v2", &refs, &seen, false, deadline),
            Step::Failed { .. }
        ));
        // A retiring copy waits for its replacement to settle.
        all[2].observed = healthy(3);
        all[0].desired = Desired::Retiring { by: "n1".into() };
        let refs: Vec<&ContainerRecord> = all.iter().collect();
        let t1 = t0 + Duration::from_secs(6);
        seen.observe(refs.iter().copied().filter(|c| c.digest == "v2"), t1);
        assert_eq!(
            next_change(&p, "v2", &refs, &seen, t1),
            Some(t1 + Duration::from_millis(1_000))
        );
        // All settled, no stagger left: only a change of the copies changes the step.
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(next_change(&p, "v2", &refs, &seen, t2), None);
    }

    /// The copies a step replaces (it must not fail).
    fn replaced(s: Step) -> Vec<String> {
        match s {
            Step::Go { replace, .. } => replace,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn old_copies_go_max_parallel_at_a_time_once_the_new_ones_settled() {
        let t0 = Instant::now();
        let p = policy(2);
        let old: Vec<ContainerRecord> = (0..5)
            .map(|i| copy(&format!("o{i}"), "v1", healthy(i), i as u64))
            .collect();
        let refs: Vec<&ContainerRecord> = old.iter().collect();
        // The leader looks before each step (no new copy at the first).
        let mut seen = Seen::default();
        seen.observe(refs.iter().copied().filter(|c| c.digest == "v2"), t0);
        assert_eq!(
            replaced(step(&p, "v2", &refs, &seen, false, t0)),
            ["o0", "o1"]
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
        assert!(replaced(step(&p, "v2", &refs, &seen, false, t0)).is_empty());
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
        assert!(replaced(step(&p, "v2", &refs, &seen, false, t1)).is_empty());
        let t2 = t1 + Duration::from_millis(1_000);
        let s = step(&p, "v2", &refs, &seen, false, t2);
        assert_eq!(
            s,
            Step::Go {
                replace: vec!["o2".into(), "o3".into()],
                start_first: false,
                stop: vec![],
                progress: Progress {
                    old: 3,
                    unsettled: 0,
                    settled: 2,
                    awaiting_promotion: false,
                }
            }
        );
        // With a stagger, the next ones wait for it after a replacement.
        let mut staggered = p.clone();
        staggered.stagger_ms = 5_000;
        seen.replaced(t2);
        assert!(replaced(step(&staggered, "v2", &refs, &seen, false, t2)).is_empty());
        let t3 = t2 + Duration::from_secs(5);
        assert_eq!(
            replaced(step(&staggered, "v2", &refs, &seen, false, t3)).len(),
            2
        );
    }

    #[test]
    fn canaries_go_first_beside_the_old_copies_and_wait_for_a_promotion() {
        let t0 = Instant::now();
        let mut p = policy(2);
        p.canary = 1;
        let mut all: Vec<ContainerRecord> = (0..3)
            .map(|i| copy(&format!("o{i}"), "v1", healthy(i), i as u64))
            .collect();
        let mut seen = Seen::default();
        let refs: Vec<&ContainerRecord> = all.iter().collect();
        seen.observe(refs.iter().copied().filter(|c| c.digest == "v2"), t0);
        let s = step(&p, "v2", &refs, &seen, false, t0);
        assert!(matches!(&s, Step::Go { replace, start_first: true, .. } if replace == &["o0"]));
        // The canary placed start-first: o0 retires; nothing more until promoted.
        all[0].desired = Desired::Retiring { by: "n1".into() };
        all.push(copy("n1", "v2", healthy(9), 10));
        let refs: Vec<&ContainerRecord> = all.iter().collect();
        seen.observe(refs.iter().copied().filter(|c| c.digest == "v2"), t0);
        let t1 = t0 + Duration::from_secs(60);
        let s = step(&p, "v2", &refs, &seen, false, t1);
        match &s {
            Step::Go {
                replace,
                stop,
                progress,
                ..
            } => {
                assert!(replace.is_empty() && stop.is_empty(), "{s:?}");
                assert!(progress.awaiting_promotion);
            }
            other => panic!("{other:?}"),
        }
        // Waiting for the user is not a stall: no progress deadline runs.
        assert_eq!(verdict(&p, &[s], &mut seen, t1), Verdict::AwaitingPromotion);
        // Promoted: the canary's old copy stops, the rest go by the policy.
        let s = step(&p, "v2", &refs, &seen, true, t1);
        assert!(
            matches!(&s, Step::Go { replace, stop, start_first: false, .. }
                if stop == &["o0"] && replace == &["o1", "o2"]),
            "{s:?}"
        );
    }

    #[test]
    fn a_new_copy_not_healthy_in_time_fails_and_after_a_revert_the_failed_ones_go_first() {
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
        assert!(replaced(step(&policy(1), "v2", &refs, &seen, false, t0)).is_empty());
        let late = t0 + Duration::from_secs(10);
        assert_eq!(
            step(&policy(1), "v2", &refs, &seen, false, late),
            Step::Failed {
                reason: "n1 not healthy within 10 s (running)".into()
            }
        );
        // Reverted: v1 is current (the leader looks afresh), its healthy copies are
        // settled at once, and the not-healthy v2 copy is replaced first.
        let mut seen = Seen::default();
        seen.observe(refs.iter().copied().filter(|c| c.digest == "v1"), late);
        assert_eq!(
            replaced(step(&policy(1), "v1", &refs, &seen, false, late)),
            ["n1"]
        );
    }

    #[test]
    fn a_new_copy_that_ended_fails_and_all_copies_settled_is_stable() {
        let t0 = Instant::now();
        let p = policy(1);
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
        let s = step(&p, "v2", &refs, &seen, false, t0);
        assert_eq!(
            s,
            Step::Failed {
                reason: "n1 ended (exit code 3)".into(),
            }
        );
        assert_eq!(
            verdict(&p, &[s], &mut seen, t0),
            Verdict::Failed("n1 ended (exit code 3)".into())
        );
        // With no old copy left (or a first version), a copy that ends is churn: the
        // rule replaces it, the version goes on.
        let churn = [all[1].clone(), copy("n3", "v2", healthy(4), 4)];
        let refs: Vec<&ContainerRecord> = churn.iter().collect();
        assert!(replaced(step(&p, "v2", &refs, &seen, false, t0)).is_empty());
        // Only new copies, healthy: stable once they have been for min_healthy_time.
        let only_new = [copy("n2", "v2", healthy(3), 3)];
        let refs: Vec<&ContainerRecord> = only_new.iter().collect();
        let mut seen = Seen::default();
        seen.observe(refs.iter().copied(), t0);
        seen.veterans.clear();
        let s = step(&p, "v2", &refs, &seen, false, t0);
        assert_eq!(verdict(&p, &[s], &mut seen, t0), Verdict::Going);
        let t1 = t0 + Duration::from_secs(1);
        let s = step(&p, "v2", &refs, &seen, false, t1);
        assert_eq!(verdict(&p, &[s], &mut seen, t1), Verdict::Stable);
        // No copy at all is not stable (a first version waits for its copies).
        let s = step(&p, "v2", &[], &seen, false, t1);
        assert_eq!(verdict(&p, &[s], &mut seen, t1), Verdict::Going);
    }

    #[test]
    fn a_rollout_that_stops_moving_fails_at_its_progress_deadline() {
        let t0 = Instant::now();
        let p = policy(1);
        // One old copy that never goes (its node does not stop it), one settled new one.
        let mut all = [
            copy("o1", "v1", healthy(1), 1),
            copy("n1", "v2", healthy(2), 2),
        ];
        all[0].desired = Desired::Running;
        let refs: Vec<&ContainerRecord> = all.iter().collect();
        let mut seen = Seen::default();
        seen.observe(refs.iter().copied().filter(|c| c.digest == "v2"), t0);
        let at = |secs: u64, seen: &mut Seen| {
            let now = t0 + Duration::from_secs(secs);
            let mut s = step(&p, "v2", &refs, seen, false, now);
            // The leader replaced nothing (say, placement failed): no progress.
            if let Step::Go { replace, .. } = &mut s {
                replace.clear();
            }
            verdict(&p, &[s], seen, now)
        };
        assert_eq!(at(0, &mut seen), Verdict::Going);
        assert_eq!(at(29, &mut seen), Verdict::Going);
        assert_eq!(
            at(30, &mut seen),
            Verdict::Failed(
                "no progress for 30 s (1 old, 0 new not yet healthy, 1 healthy)".into()
            )
        );
        // With no deadline, never.
        let mut none = p.clone();
        none.progress_deadline_ms = 0;
        let s = step(
            &none,
            "v2",
            &refs,
            &seen,
            false,
            t0 + Duration::from_secs(3600),
        );
        assert_eq!(
            verdict(&none, &[s], &mut seen, t0 + Duration::from_secs(3600)),
            Verdict::Going
        );
    }

    /// A model of the cluster under a rollout: the hosts run an old copy until it ends,
    /// a new one from when its node starts it (stop-first: only once its predecessor
    /// ended; start-first: at once, its predecessor retiring) until it ends; a new copy
    /// may also fail; events come in any order.
    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Event {
            /// A stopping old copy (the i-th of them) ends.
            OldEnds(usize),
            /// A queued or pending new copy (the i-th) is started by its node.
            NewStarts(usize),
            /// A started new copy (the i-th) passes its check.
            NewHealthy(usize),
            /// A started new copy (the i-th) ends by itself.
            NewEnds(usize),
            /// Time passes (ms).
            Tick(u64),
            /// The user promotes the version.
            Promote,
            /// The leader takes a step.
            Step,
        }

        fn event() -> impl Strategy<Value = Event> {
            prop_oneof![
                (0..8usize).prop_map(Event::OldEnds),
                (0..8usize).prop_map(Event::NewStarts),
                (0..8usize).prop_map(Event::NewHealthy),
                (0..40usize).prop_map(Event::NewEnds),
                (0..3_000u64).prop_map(Event::Tick),
                Just(Event::Promote),
                Just(Event::Step),
            ]
        }

        /// What `apply` does when `id` ends or stops: a copy retiring for it is wanted
        /// running again.
        fn unretire_for(copies: &mut [ContainerRecord], id: &str) {
            for c in copies.iter_mut() {
                if c.desired == (Desired::Retiring { by: id.to_string() }) && !c.observed.is_final()
                {
                    c.desired = Desired::Running;
                }
            }
        }

        proptest! {
            #[test]
            fn a_rollout_never_runs_more_than_n_or_n_plus_surge_or_canaries(
                n in 1..7usize,
                max_parallel in 1..4u32,
                max_surge in 0..3u32,
                canary in 0..3u32,
                events in proptest::collection::vec(event(), 0..200),
            ) {
                let policy = UpdatePolicy {
                    max_parallel,
                    max_surge,
                    canary,
                    auto_promote: false,
                    min_healthy_ms: 500,
                    healthy_deadline_ms: 60_000,
                    progress_deadline_ms: 0,
                    stagger_ms: 0,
                    auto_revert: false,
                };
                let mut copies: Vec<ContainerRecord> = (0..n)
                    .map(|i| copy(&format!("o{i}"), "v1", healthy(i as i32), i as u64))
                    .collect();
                let mut seen = Seen::default();
                let mut now = Instant::now();
                let mut next = 100u64;
                let mut failed = false;
                let mut promoted = false;
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
                            if let Some(c) = copies.iter_mut().filter(|c| c.desired == Desired::Running && match &c.observed {
                                Observed::Queued { after } => ended.contains(after),
                                Observed::Pending => true,
                                _ => false,
                            }).nth(i) {
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
                        Event::NewEnds(i) => {
                            let id = copies.iter_mut().filter(|c| {
                                c.digest == "v2" && c.observed.running_pid().is_some()
                            }).nth(i).map(|c| {
                                c.observed = Observed::Exited { code: Some(1), oom_killed: false, error: None };
                                c.id.clone()
                            });
                            if let Some(id) = id {
                                unretire_for(&mut copies, &id);
                            }
                        }
                        Event::Tick(ms) => now += Duration::from_millis(ms),
                        Event::Promote => promoted = true,
                        Event::Step if failed => {}
                        Event::Step => {
                            let refs: Vec<&ContainerRecord> = copies.iter().collect();
                            seen.observe(refs.iter().copied().filter(|c| c.digest == "v2"), now);
                            match step(&policy, "v2", &refs, &seen, promoted, now) {
                                Step::Go { replace: ids, stop, start_first, .. } => {
                                    prop_assert!(ids.len() <= max_parallel.max(canary) as usize);
                                    for id in stop {
                                        let old = copies.iter_mut().find(|c| c.id == id).unwrap();
                                        let retiring = matches!(old.desired, Desired::Retiring { .. });
                                        prop_assert!(retiring, "{id} stopped but not retiring");
                                        old.desired = Desired::Stopped;
                                    }
                                    for id in ids {
                                        // As `apply` does: only an active copy is replaced.
                                        let old = copies.iter_mut().find(|c| c.id == id).unwrap();
                                        prop_assert!(old.is_active(), "{id} replaced twice");
                                        next += 1;
                                        let new_id = format!("n{next}");
                                        if start_first {
                                            old.desired = Desired::Retiring { by: new_id.clone() };
                                            copies.push(copy(&new_id, "v2", Observed::Pending, next));
                                        } else {
                                            old.desired = Desired::Stopped;
                                            copies.push(copy(&new_id, "v2", Observed::Queued { after: id }, next));
                                        }
                                    }
                                }
                                Step::Failed { .. } => {
                                    // As `apply` does for a failed version: replacements
                                    // under way stop, what they replace runs on.
                                    failed = true;
                                    let surging: Vec<String> = copies.iter()
                                        .filter(|c| !c.observed.is_final())
                                        .filter_map(|c| match &c.desired {
                                            Desired::Retiring { by } => Some(by.clone()),
                                            _ => None,
                                        })
                                        .collect();
                                    for by in surging {
                                        if let Some(c) = copies.iter_mut().find(|c| c.id == by) {
                                            c.desired = Desired::Stopped;
                                        }
                                        unretire_for(&mut copies, &by);
                                    }
                                }
                            }
                        }
                    }
                    // The truth: what runs on the hosts.
                    let running = copies.iter().filter(|c| {
                        !c.observed.is_final()
                            && !matches!(c.observed, Observed::Queued { .. } | Observed::Pending)
                    }).count();
                    let limit = n + max_surge.max(canary) as usize;
                    prop_assert!(running <= limit, "{running} running of {n} + {max_surge} / {canary}: {copies:#?}");
                    // And the rule counts N: it places a copy only for one that ended.
                    let active = copies.iter().filter(|c| c.is_active()).count();
                    prop_assert!(active <= n, "the rule counts {active} of {n}");
                    for _ in active..n {
                        next += 1;
                        copies.push(copy(&format!("r{next}"), "v2", Observed::Pending, next));
                    }
                }
            }
        }
    }
}
