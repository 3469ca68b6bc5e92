//! The leader's health decisions, pure (time is an argument): which members are silent
//! past their TTL, which are suspects for a placement, whether a member stopped applying
//! the log, which voter to promote or replace, which finished containers to forget. The
//! leader keeps a [`Liveness`] (what it heard from whom, and since when it leads) and
//! carries the decisions out.

use crate::cluster::state::{NodeId, NodeStatus};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// What the leader heard from the members: their last heartbeat, the applied index they
/// reported and since when it has not moved, and since when this member leads.
#[derive(Debug, Default)]
pub struct Liveness {
    heartbeats: HashMap<NodeId, Instant>,
    applied: HashMap<NodeId, (u64, Instant)>,
    leading_since: Option<Instant>,
}

/// A member whose applied index has not moved for longer than the TTL while the leader's
/// did: it is not renewed (its lease runs out and its containers stop).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node {node} stopped applying the log at index {applied} (the leader is at {leader})")]
pub struct StoppedApplying {
    /// The member.
    pub node: NodeId,
    /// Where it stopped.
    pub applied: u64,
    /// Where the leader is.
    pub leader: u64,
}

impl Liveness {
    /// Leadership gained at `now` (once): everyone gets a fresh TTL from now, since
    /// nobody was listening before.
    pub fn lead(&mut self, now: Instant) -> bool {
        if self.leading_since.is_some() {
            return false;
        }
        self.leading_since = Some(now);
        self.heartbeats.clear();
        true
    }

    /// Leadership lost.
    pub fn stand_down(&mut self) {
        self.leading_since = None;
    }

    /// Since when this member leads.
    pub fn leading_since(&self) -> Option<Instant> {
        self.leading_since
    }

    /// A heartbeat of `node` at `now` reporting `applied`, the leader being at `leader`:
    /// recorded, unless the member has not applied anything new for longer than `ttl`
    /// while behind.
    pub fn heartbeat(
        &mut self,
        node: NodeId,
        applied: u64,
        leader: u64,
        now: Instant,
        ttl: Duration,
    ) -> Result<(), StoppedApplying> {
        let entry = self.applied.entry(node).or_insert((applied, now));
        if applied > entry.0 {
            *entry = (applied, now);
        }
        if applied < leader && now.duration_since(entry.1) > ttl {
            return Err(StoppedApplying {
                node,
                applied,
                leader,
            });
        }
        self.heartbeats.insert(node, now);
        Ok(())
    }

    /// A member was heard from at `now` (it joined).
    pub fn heard(&mut self, node: NodeId, now: Instant) {
        self.heartbeats.insert(node, now);
    }

    /// Members (up or draining, this one excepted) silent for longer than `ttl` at `now`
    /// (counted from the later of their last heartbeat and the start of this leadership).
    pub fn silent(
        &self,
        nodes: impl IntoIterator<Item = (NodeId, NodeStatus)>,
        me: NodeId,
        now: Instant,
        ttl: Duration,
    ) -> Vec<NodeId> {
        let since = self.leading_since.unwrap_or(now);
        nodes
            .into_iter()
            .filter(|(id, status)| {
                *id != me && matches!(status, NodeStatus::Up | NodeStatus::Draining)
            })
            .filter(|(id, _)| {
                let last = self.heartbeats.get(id).copied().unwrap_or(since).max(since);
                now.duration_since(last) > ttl
            })
            .map(|(id, _)| id)
            .collect()
    }

    /// Members (this one excepted) not heard from within `window`: a placement avoids
    /// them before they are declared down.
    pub fn suspects(
        &self,
        nodes: impl IntoIterator<Item = NodeId>,
        me: NodeId,
        now: Instant,
        window: Duration,
    ) -> Vec<NodeId> {
        nodes
            .into_iter()
            .filter(|id| *id != me)
            .filter(|id| {
                self.heartbeats
                    .get(id)
                    .is_none_or(|t| now.duration_since(*t) > window)
            })
            .collect()
    }
}

/// A change of voters the leader makes (one per tick).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoterChange {
    /// A voter down past the threshold gives its place to a learner.
    Replace {
        /// The voter gone.
        gone: NodeId,
        /// The learner that takes its place.
        with: NodeId,
    },
    /// A learner becomes a voter (fewer voters than wanted).
    Promote(NodeId),
}

/// What the voter decision looks at.
pub struct Voters<'a> {
    /// The voters now.
    pub voters: &'a BTreeSet<NodeId>,
    /// The learners now, in id order.
    pub learners: &'a [NodeId],
    /// This member (never replaced by itself).
    pub me: NodeId,
    /// How many voters the cluster keeps.
    pub wanted: usize,
    /// Learners up and caught up with the log.
    pub ready: &'a BTreeSet<NodeId>,
    /// Since when each member down has been down.
    pub down_since: &'a HashMap<NodeId, Instant>,
    /// How long a voter stays down before it is replaced.
    pub replace_after: Duration,
}

/// The voter change to make now, if any: replace a voter down past the threshold with a
/// ready learner, else promote a ready learner while voters are missing.
pub fn voter_change(v: &Voters, now: Instant) -> Option<VoterChange> {
    let candidate = v.learners.iter().find(|l| v.ready.contains(l)).copied()?;
    let gone = v.voters.iter().find(|id| {
        **id != v.me
            && v.down_since
                .get(id)
                .is_some_and(|t| now.duration_since(*t) >= v.replace_after)
    });
    match gone {
        Some(g) => Some(VoterChange::Replace {
            gone: *g,
            with: candidate,
        }),
        None if v.voters.len() < v.wanted => Some(VoterChange::Promote(candidate)),
        None => None,
    }
}

/// The finished containers to forget: the oldest (by creation index) beyond the `keep`
/// newest, once there are more than `keep` and a half (so that forgetting commits in
/// batches).
pub fn to_forget(mut finished: Vec<(u64, String)>, keep: usize) -> Vec<String> {
    if finished.len() <= keep + keep / 2 {
        return Vec::new();
    }
    finished.sort();
    let cut = finished.len() - keep;
    finished.into_iter().take(cut).map(|(_, id)| id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_millis(1800);

    #[test]
    fn members_silent_past_the_ttl_counted_from_the_start_of_the_leadership() {
        let t0 = Instant::now();
        let mut l = Liveness::default();
        assert!(l.lead(t0));
        assert!(!l.lead(t0 + TTL), "once");
        let nodes = [
            (1, NodeStatus::Up),
            (2, NodeStatus::Up),
            (3, NodeStatus::Draining),
            (4, NodeStatus::Down),
            (5, NodeStatus::Left),
        ];
        // Nobody heard yet, but the leadership is young: nobody is silent.
        assert!(l.silent(nodes, 1, t0 + TTL, TTL).is_empty());
        l.heartbeat(2, 10, 10, t0 + TTL, TTL).unwrap();
        // Past the TTL: 3 never spoke; 2 spoke; 1 is this member; 4 and 5 are not up.
        let later = t0 + TTL + Duration::from_millis(1);
        assert_eq!(l.silent(nodes, 1, later, TTL), vec![3]);
        assert_eq!(l.silent(nodes, 1, later + TTL, TTL), vec![2, 3]);
        // A new leadership starts everyone afresh.
        l.stand_down();
        assert!(l.lead(later + TTL));
        assert!(l.silent(nodes, 1, later + TTL, TTL).is_empty());
    }

    #[test]
    fn a_member_that_stops_applying_is_refused_once_the_ttl_passes() {
        let t0 = Instant::now();
        let mut l = Liveness::default();
        l.heartbeat(2, 5, 9, t0, TTL).unwrap();
        l.heartbeat(2, 5, 9, t0 + TTL, TTL).unwrap();
        let e = l
            .heartbeat(2, 5, 12, t0 + TTL + Duration::from_millis(1), TTL)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "node 2 stopped applying the log at index 5 (the leader is at 12)"
        );
        // It applies again: fine at once.
        l.heartbeat(2, 6, 12, t0 + TTL * 2, TTL).unwrap();
        // Level with the leader: never stuck, however long.
        l.heartbeat(3, 7, 7, t0, TTL).unwrap();
        l.heartbeat(3, 7, 7, t0 + TTL * 10, TTL).unwrap();
    }

    #[test]
    fn suspects_are_the_members_not_heard_within_the_window() {
        let t0 = Instant::now();
        let mut l = Liveness::default();
        l.heartbeat(2, 1, 1, t0, TTL).unwrap();
        let w = Duration::from_millis(600);
        assert_eq!(l.suspects([1, 2, 3], 1, t0 + w, w), vec![3]);
        assert_eq!(l.suspects([1, 2, 3], 1, t0 + w * 2, w), vec![2, 3]);
    }

    #[test]
    fn a_voter_down_long_enough_is_replaced_else_learners_fill_the_voters() {
        let t0 = Instant::now();
        let voters: BTreeSet<NodeId> = [1, 2, 3].into();
        let ready: BTreeSet<NodeId> = [5].into();
        let mut down = HashMap::new();
        down.insert(2, t0);
        let v = Voters {
            voters: &voters,
            learners: &[4, 5],
            me: 1,
            wanted: 3,
            ready: &ready,
            down_since: &down,
            replace_after: Duration::from_secs(5),
        };
        assert_eq!(voter_change(&v, t0 + Duration::from_secs(4)), None);
        assert_eq!(
            voter_change(&v, t0 + Duration::from_secs(5)),
            Some(VoterChange::Replace { gone: 2, with: 5 })
        );
        // The leader itself is never replaced; no ready learner, no change.
        let mut me_down = HashMap::new();
        me_down.insert(1, t0);
        let v2 = Voters {
            down_since: &me_down,
            ..v
        };
        assert_eq!(voter_change(&v2, t0 + Duration::from_secs(60)), None);
        let none: BTreeSet<NodeId> = BTreeSet::new();
        let v3 = Voters { ready: &none, ..v };
        assert_eq!(voter_change(&v3, t0 + Duration::from_secs(60)), None);
        // Two voters of three wanted: the ready learner is promoted.
        let two: BTreeSet<NodeId> = [1, 3].into();
        let empty = HashMap::new();
        let v4 = Voters {
            voters: &two,
            down_since: &empty,
            ..v
        };
        assert_eq!(voter_change(&v4, t0), Some(VoterChange::Promote(5)));
    }

    #[test]
    fn the_oldest_finished_are_forgotten_in_batches() {
        let f = |n: u64| {
            (1..=n)
                .rev()
                .map(|i| (i, format!("c{i}")))
                .collect::<Vec<_>>()
        };
        assert!(to_forget(f(15), 10).is_empty(), "within keep and a half");
        assert_eq!(to_forget(f(16), 10), ["c1", "c2", "c3", "c4", "c5", "c6"]);
    }
}
