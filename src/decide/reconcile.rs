//! The node agent's decision table: the containers the state gives to this node, and
//! what really runs here, in; what to launch, kill, report and forget, out. Pure and
//! level-triggered: the same inputs give the same actions, so a lost report is simply
//! decided again on the next pass. The agent carries the actions out.

use crate::cluster::state::{ContainerRecord, Desired, Health, NodeId, Observed};
use std::collections::{HashMap, HashSet};

/// A map by container name that a pass reads for each of thousands of containers: a fast
/// seeded hash instead of SipHash (the names come from the leader, not from strangers).
pub type ByName<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// A local container as the agent sees it (from its state record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    /// Its lifecycle.
    pub status: LocalStatus,
    /// Host pid of its first process.
    pub pid: i32,
    /// Exit code once exited.
    pub exit_code: Option<i32>,
    /// OOM-killed.
    pub oom_killed: bool,
    /// Why it ended, when not by itself.
    pub reason: Option<String>,
    /// Its end was concluded (processes and monitor gone), not recorded.
    pub lost: bool,
    /// What its health checks say (running containers with a check).
    pub health: Option<Health>,
    /// Why this node stopped it, when it did on its own (it turned unhealthy).
    pub stopped_for: Option<String>,
    /// Ended, and its node starts it again (its restart policy): which attempt.
    pub restart: Option<u32>,
}

impl Local {
    /// A local container of which only its lifecycle and first process are known.
    pub fn new(status: LocalStatus, pid: i32) -> Local {
        Local {
            status,
            pid,
            exit_code: None,
            oom_killed: false,
            reason: None,
            lost: false,
            health: None,
            stopped_for: None,
            restart: None,
        }
    }
}

/// Lifecycle of a local container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalStatus {
    /// Being set up.
    Creating,
    /// Running.
    Running,
    /// Ended.
    Exited,
}

/// One thing for the agent to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start this container here.
    Launch(String),
    /// Kill the local container of this name.
    Kill(String),
    /// Tell the leader what happened to this container.
    Report(String, Observed),
    /// Drop the local record of this (finished) container.
    Forget(String),
}

/// The local containers as one pass sees them: the agent's picture, read in place, with
/// the few entries its health checks and restart policies speak for overlaid (a copy of
/// each of those, not of the whole picture).
pub struct LocalView<'a> {
    picture: &'a ByName<Local>,
    overlaid: ByName<Local>,
}

impl<'a> LocalView<'a> {
    /// The picture as it is.
    pub fn new(picture: &'a ByName<Local>) -> Self {
        LocalView {
            picture,
            overlaid: ByName::default(),
        }
    }

    /// How many local containers there are.
    pub fn len(&self) -> usize {
        self.picture.len()
    }

    /// Whether none runs here.
    pub fn is_empty(&self) -> bool {
        self.picture.is_empty()
    }

    /// The local container of this name.
    pub fn get(&self, name: &str) -> Option<&Local> {
        self.overlaid.get(name).or_else(|| self.picture.get(name))
    }

    /// The local container of this name, to overlay what the picture does not hold.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Local> {
        if !self.overlaid.contains_key(name) {
            let l = self.picture.get(name)?.clone();
            self.overlaid.insert(name.to_string(), l);
        }
        self.overlaid.get_mut(name)
    }

    /// Every local container, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Local)> {
        self.picture
            .iter()
            .map(|(name, l)| match self.overlaid.is_empty() {
                true => (name, l),
                false => (name, self.overlaid.get(name).unwrap_or(l)),
            })
    }
}

/// Everything one pass decides from.
pub struct Inputs<'a> {
    /// This node.
    pub me: NodeId,
    /// Whether the cluster holds this node down (its containers were replaced).
    pub node_down: bool,
    /// Every container the state assigns to this node.
    pub mine: Vec<&'a ContainerRecord>,
    /// Every local container, by name (= container id).
    pub local: &'a LocalView<'a>,
    /// Launches under way.
    pub launching: &'a HashSet<String>,
    /// What was last reported per container (so nothing is said twice).
    pub reported: &'a ByName<Observed>,
    /// Containers queued behind one that has not ended yet (a rollout's replacements):
    /// not started until it has.
    pub waiting: &'a HashSet<String>,
}

/// The actions of one pass.
pub fn decide(i: &Inputs) -> Vec<Action> {
    let mut out = Vec::new();
    let mut report = |c: &ContainerRecord, observed: Observed| {
        if c.observed != observed && i.reported.get(&c.id) != Some(&observed) {
            out.push(Action::Report(c.id.clone(), observed));
        }
    };
    let mut kill = Vec::new();
    let mut forget = Vec::new();
    let mut launch = Vec::new();
    // Local containers the state gives to this node (the others are stale, below).
    let mut known = 0;
    for c in &i.mine {
        debug_assert_eq!(c.node, i.me);
        let found = i.local.get(&c.id);
        known += usize::from(found.is_some());
        // A retiring copy runs on until its replacement is healthy (never restarted).
        let wanted = c.desired.keeps_running() && !c.observed.is_final() && !i.node_down;
        let restarts = wanted && c.desired == Desired::Running;
        match found {
            Some(l) if l.status == LocalStatus::Running => {
                if wanted {
                    report(
                        c,
                        match l.health {
                            None => Observed::Running { pid: l.pid },
                            Some(health) => Observed::Checked { pid: l.pid, health },
                        },
                    );
                    // Unhealthy: stopped here; the rule replaces it once it ended.
                    if l.health == Some(Health::Unhealthy) {
                        kill.push(c.id.clone());
                    }
                } else {
                    kill.push(c.id.clone());
                }
            }
            Some(l) if l.status == LocalStatus::Exited => {
                if let Some(attempt) = l.restart.filter(|_| restarts) {
                    // Started again here once its back-off is over (the agent drops
                    // the local record; then it is launched as if new).
                    report(
                        c,
                        Observed::Restarting {
                            attempt,
                            code: l.exit_code,
                            reason: l.stopped_for.clone().or_else(|| l.reason.clone()),
                        },
                    );
                } else if !c.observed.is_final() {
                    report(
                        c,
                        Observed::Exited {
                            code: l.exit_code,
                            oom_killed: l.oom_killed,
                            error: l
                                .reason
                                .clone()
                                .filter(|_| l.lost)
                                .or_else(|| l.stopped_for.clone()),
                        },
                    );
                }
                // Reported: its record (and its output, for `logs`) stays here until
                // the cluster forgets the container (then it is stale, below).
            }
            Some(_) => {}
            None => {
                let in_flight = i.launching.contains(&c.id);
                if wanted && !in_flight && !i.waiting.contains(&c.id) {
                    launch.push(c.id.clone());
                } else if !wanted
                    && !in_flight
                    && !c.observed.is_final()
                    && c.desired == Desired::Stopped
                {
                    report(
                        c,
                        Observed::Exited {
                            code: None,
                            oom_killed: false,
                            error: Some("stopped before it ran".into()),
                        },
                    );
                }
            }
        }
    }
    // Local containers the state does not give to this node: stale (after a partition,
    // a stop, a reschedule). Kill the running ones, drop the records of the others.
    // (The ids are unique: when each local container was found among them, none is.)
    let mut stale: Vec<(&String, &Local)> = Vec::new();
    if known < i.local.len() {
        let mine: HashSet<&str, foldhash::fast::RandomState> =
            i.mine.iter().map(|c| c.id.as_str()).collect();
        stale.extend(i.local.iter().filter(|(n, _)| !mine.contains(n.as_str())));
    }
    stale.sort_by_key(|(name, _)| name.as_str());
    for (name, l) in stale {
        match l.status {
            LocalStatus::Running => kill.push(name.clone()),
            LocalStatus::Exited => forget.push(name.clone()),
            LocalStatus::Creating => {}
        }
    }
    out.extend(launch.into_iter().map(Action::Launch));
    out.extend(kill.into_iter().map(Action::Kill));
    out.extend(forget.into_iter().map(Action::Forget));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, desired: Desired, observed: Observed) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            definition: "d".into(),
            digest: "x".into(),
            node: 1,
            desired,
            observed,
            rule: None,
            created_index: 1,
        }
    }

    fn local(status: LocalStatus, pid: i32) -> Local {
        Local {
            exit_code: (status == LocalStatus::Exited).then_some(0),
            ..Local::new(status, pid)
        }
    }

    fn run(
        mine: &[ContainerRecord],
        local: &[(&str, Local)],
        node_down: bool,
        launching: &[&str],
        reported: &[(&str, Observed)],
    ) -> Vec<Action> {
        let local: ByName<Local> = local
            .iter()
            .map(|(n, l)| (n.to_string(), l.clone()))
            .collect();
        let launching: HashSet<String> = launching.iter().map(|s| s.to_string()).collect();
        let reported: ByName<Observed> = reported
            .iter()
            .map(|(n, o)| (n.to_string(), o.clone()))
            .collect();
        decide(&Inputs {
            me: 1,
            node_down,
            mine: mine.iter().collect(),
            local: &LocalView::new(&local),
            launching: &launching,
            reported: &reported,
            waiting: &HashSet::from(["queued".to_string()]),
        })
    }

    const RUN: Desired = Desired::Running;
    const STOP: Desired = Desired::Stopped;

    #[test]
    fn assigned_and_absent_is_launched_once() {
        let c = [rec("a", RUN, Observed::Pending)];
        assert_eq!(run(&c, &[], false, &[], &[]), [Action::Launch("a".into())]);
        assert!(
            run(&c, &[], false, &["a"], &[]).is_empty(),
            "already launching"
        );
        assert!(run(&c, &[], true, &[], &[]).is_empty(), "node held down");
    }

    #[test]
    fn running_is_reported_once_and_killed_when_unwanted() {
        let c = [rec("a", RUN, Observed::Pending)];
        let l = [("a", local(LocalStatus::Running, 42))];
        let running = Observed::Running { pid: 42 };
        assert_eq!(
            run(&c, &l, false, &[], &[]),
            [Action::Report("a".into(), running.clone())]
        );
        assert!(run(&c, &l, false, &[], &[("a", running.clone())]).is_empty());
        let stopped = [rec("a", STOP, running.clone())];
        assert_eq!(
            run(&stopped, &l, false, &[], &[]),
            [Action::Kill("a".into())]
        );
        // Held down: its containers were replaced elsewhere; it kills its own.
        assert_eq!(run(&c, &l, true, &[], &[]), [Action::Kill("a".into())]);
    }

    #[test]
    fn exits_are_reported_then_forgotten() {
        let running = [rec("a", RUN, Observed::Running { pid: 4 })];
        let l = [("a", local(LocalStatus::Exited, 4))];
        let exited = Observed::Exited {
            code: Some(0),
            oom_killed: false,
            error: None,
        };
        assert_eq!(
            run(&running, &l, false, &[], &[]),
            [Action::Report("a".into(), exited.clone())]
        );
        // Reported: kept (its output stays readable) until the cluster forgets it.
        let done = [rec("a", RUN, exited)];
        assert_eq!(run(&done, &l, false, &[], &[]), []);
        assert_eq!(run(&[], &l, false, &[], &[]), [Action::Forget("a".into())]);
        // A lost monitor is reported with its reason.
        let mut lost = local(LocalStatus::Exited, 4);
        lost.reason = Some("lost: its monitor vanished".into());
        lost.lost = true;
        let acts = run(&running, &[("a", lost)], false, &[], &[]);
        assert!(
            matches!(&acts[..], [Action::Report(_, Observed::Exited { error: Some(e), .. })] if e.starts_with("lost")),
            "{acts:?}"
        );
    }

    #[test]
    fn health_is_reported_and_an_unhealthy_container_stopped_with_its_reason() {
        let c = [rec("a", RUN, Observed::Running { pid: 4 })];
        let mut l = local(LocalStatus::Running, 4);
        l.health = Some(Health::Healthy);
        let healthy = Observed::Checked {
            pid: 4,
            health: Health::Healthy,
        };
        assert_eq!(
            run(&c, &[("a", l.clone())], false, &[], &[]),
            [Action::Report("a".into(), healthy)]
        );
        l.health = Some(Health::Unhealthy);
        let unhealthy = Observed::Checked {
            pid: 4,
            health: Health::Unhealthy,
        };
        assert_eq!(
            run(&c, &[("a", l.clone())], false, &[], &[]),
            [
                Action::Report("a".into(), unhealthy.clone()),
                Action::Kill("a".into())
            ]
        );
        // Reported already: still killed until it ended (level-triggered).
        assert_eq!(
            run(&c, &[("a", l)], false, &[], &[("a", unhealthy)]),
            [Action::Kill("a".into())]
        );
        // Ended: reported with why this node stopped it.
        let mut ended = local(LocalStatus::Exited, 4);
        ended.exit_code = Some(137);
        ended.stopped_for = Some("unhealthy: tcp 80 failed 3 times in a row".into());
        let acts = run(&c, &[("a", ended)], false, &[], &[]);
        assert!(
            matches!(&acts[..], [Action::Report(_, Observed::Exited { code: Some(137), error: Some(e), .. })] if e.starts_with("unhealthy: tcp 80")),
            "{acts:?}"
        );
    }

    #[test]
    fn a_queued_replacement_starts_only_once_its_predecessor_ended() {
        let queued = Observed::Queued {
            after: "old".into(),
        };
        let c = [rec("queued", RUN, queued.clone())];
        assert!(run(&c, &[], false, &[], &[]).is_empty(), "started too soon");
        let c = [rec("free", RUN, queued)];
        assert_eq!(
            run(&c, &[], false, &[], &[]),
            [Action::Launch("free".into())]
        );
    }

    #[test]
    fn stopped_before_it_ran_is_reported_as_such() {
        let c = [rec("a", STOP, Observed::Starting)];
        let acts = run(&c, &[], false, &[], &[]);
        assert!(
            matches!(&acts[..], [Action::Report(_, Observed::Exited { error: Some(e), .. })] if e == "stopped before it ran"),
            "{acts:?}"
        );
        assert!(
            run(&c, &[], false, &["a"], &[]).is_empty(),
            "its launch is under way"
        );
    }

    #[test]
    fn stale_local_containers_are_killed_or_forgotten() {
        let l = [
            ("old-run", local(LocalStatus::Running, 1)),
            ("old-done", local(LocalStatus::Exited, 2)),
            ("new", local(LocalStatus::Creating, 3)),
        ];
        assert_eq!(
            run(&[], &l, false, &[], &[]),
            [
                Action::Kill("old-run".into()),
                Action::Forget("old-done".into())
            ]
        );
        // Beside containers the state gives here: only the others are stale.
        let c = [rec("a", RUN, Observed::Running { pid: 4 })];
        let mut l = l.to_vec();
        l.push(("a", local(LocalStatus::Running, 4)));
        assert_eq!(
            run(&c, &l, false, &[], &[]),
            [
                Action::Kill("old-run".into()),
                Action::Forget("old-done".into())
            ]
        );
        assert!(run(&c, &l[3..], false, &[], &[]).is_empty(), "none stale");
    }

    #[test]
    fn a_view_overlays_copies_and_leaves_the_picture_alone() {
        let picture: ByName<Local> = [("a", 1), ("b", 2)]
            .map(|(n, pid)| (n.to_string(), local(LocalStatus::Running, pid)))
            .into_iter()
            .collect();
        let mut view = LocalView::new(&picture);
        view.get_mut("b").unwrap().health = Some(Health::Unhealthy);
        assert!(view.get_mut("c").is_none(), "nothing to overlay");
        assert_eq!(view.get("b").unwrap().health, Some(Health::Unhealthy));
        assert_eq!(view.get("a"), picture.get("a"));
        let mut seen: Vec<(&str, Option<Health>)> =
            view.iter().map(|(n, l)| (n.as_str(), l.health)).collect();
        seen.sort_by_key(|(n, _)| *n);
        assert_eq!(seen, [("a", None), ("b", Some(Health::Unhealthy))]);
        assert_eq!(picture["b"].health, None);
        assert_eq!(view.len(), 2);
    }
}
