//! When this voter stands for election. Two rules, the way openraft 0.9 allows them:
//!
//! - **Pre-vote** (`gate_elections`): a voter stands only while it can reach a majority of
//!   the voters. Cut off, it keeps its term instead of raising it at every election
//!   timeout, so when it comes back it never deposes the healthy leader the others kept
//!   (openraft 0.9 has no pre-vote phase; its `elect` switch gates the election timer,
//!   which is what this drives). Reachability is a TCP connect from this node's
//!   advertised address to each voter's, with a short timeout: it fails through an
//!   iptables drop, a pulled cable or a dead host, and succeeds to a frozen process (whose
//!   kernel still accepts), which is what "reachable network" means here.
//! - **A leader that is gone is replaced when its lease ends**
//!   (`stand_when_the_leader_is_gone`): when the leader has been silent for most of its
//!   lease and its address refuses (its process is gone) or does not answer (its host is
//!   down or cut off), the first surviving voter by id stands the moment the lease has
//!   ended on the others, instead of waiting for openraft's election timer, which adds a
//!   random election timeout and a tick to the lease.

use super::shared::{lock, Supervisor};
use crate::cluster::state::NodeId;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often reachability is probed.
const PROBE_EVERY: Duration = Duration::from_millis(200);
/// How long one connect may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(150);
/// How long after a look at a silent leader that still answered the next may come.
const LOOK_AGAIN: Duration = Duration::from_millis(100);
/// Added to a silent leader's lease before the first voter stands: each voter counts the
/// lease from its own last word from the leader, which may reach it a moment after it
/// reached this one.
const LEASE_MARGIN: Duration = Duration::from_millis(20);

/// What a connect to a member's address found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// Something accepted the connection.
    Accepted,
    /// The host answered that nothing listens there: the process is gone.
    Refused,
    /// No answer in time, or no address: cut off, or a host that is down.
    Silent,
}

/// Connects from `local` to `addr` within [`PROBE_TIMEOUT`].
async fn probe(addr: &str, local: Option<IpAddr>) -> Probe {
    let Ok(Some(target)) = tokio::net::lookup_host(addr).await.map(|mut a| a.next()) else {
        return Probe::Silent;
    };
    let socket = match target {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    };
    let Ok(socket) = socket else {
        return Probe::Silent;
    };
    if let Some(ip) = local {
        if socket.bind(SocketAddr::new(ip, 0)).is_err() {
            return Probe::Silent;
        }
    }
    match tokio::time::timeout(PROBE_TIMEOUT, socket.connect(target)).await {
        Ok(Ok(_)) => Probe::Accepted,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Probe::Refused,
        _ => Probe::Silent,
    }
}

/// What a connect to each other voter finds now, from this node's address (none when
/// this node is not a voter).
async fn probe_voters(core: &Supervisor) -> Vec<(NodeId, Probe)> {
    let m = core.metrics();
    let membership = m.membership_config.membership();
    if !membership.voter_ids().any(|v| v == core.id) {
        return Vec::new();
    }
    let local = core.config.local_ip();
    let mut probes = tokio::task::JoinSet::new();
    for id in membership.voter_ids().filter(|v| *v != core.id) {
        let addr = membership.get_node(&id).map(|n| n.addr.clone());
        probes.spawn(async move {
            match addr {
                Some(addr) => (id, probe(&addr, local).await),
                None => (id, Probe::Silent),
            }
        });
    }
    let mut found = Vec::new();
    while let Some(r) = probes.join_next().await {
        if let Ok(p) = r {
            found.push(p);
        }
    }
    found
}

/// How many voters a voter reaches, itself included, from its [`probe_voters`].
fn reached(probes: &[(NodeId, Probe)]) -> usize {
    1 + probes.iter().filter(|(_, p)| *p == Probe::Accepted).count()
}

/// Whether those probes reach a majority of `voters`.
fn majority(probes: &[(NodeId, Probe)], voters: usize) -> bool {
    reached(probes) * 2 > voters
}

/// Runs forever: allows elections on this node only while a majority of the voters
/// (itself included) is reachable. Back in reach, it waits two election timeouts before
/// allowing them again: long enough to hear the leader's heartbeat, which resets the
/// election timer that ran out while it was cut off (otherwise it would stand at once and
/// depose a healthy leader); a leader that is really gone costs that much more.
pub async fn gate_elections(core: Arc<Supervisor>, watch: Arc<ElectionWatch>) {
    let mut allowed = true;
    let settle = Duration::from_millis(core.config.election_timeout_max_ms * 2);
    let mut in_reach_since: Option<Instant> = None;
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let m = core.metrics();
        let membership = m.membership_config.membership();
        if !membership.voter_ids().any(|v| v == core.id) {
            continue;
        }
        let voters = membership.voter_ids().count();
        let probes = probe_voters(&core).await;
        let majority = majority(&probes, voters);
        in_reach_since = match (majority, in_reach_since) {
            (true, None) => Some(Instant::now()),
            (true, since) => since,
            (false, _) => None,
        };
        let allow = majority && (allowed || in_reach_since.is_some_and(|t| t.elapsed() >= settle));
        if allow != allowed {
            core.raft.runtime_config().elect(allow);
            watch.allowed.store(allow, Ordering::Relaxed);
            if allow {
                tracing::info!("a majority of the voters is reachable again: elections allowed");
            } else {
                tracing::warn!(
                    "only {} of {voters} voters reachable: no elections from this node (its term stays)",
                    reached(&probes)
                );
            }
            allowed = allow;
        }
    }
}

/// What decides when this voter stands, shared by the two rules and the Raft endpoint:
/// when it last heard from its leader (an AppendEntries, heartbeats included: the moment
/// openraft renews the leader's lease here too) and whether the pre-vote gate allows
/// elections.
#[derive(Debug)]
pub struct ElectionWatch {
    heard: Mutex<Option<Heard>>,
    allowed: AtomicBool,
}

/// The last word from a leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Heard {
    leader: NodeId,
    term: u64,
    at: Instant,
}

impl ElectionWatch {
    /// Nothing heard yet; elections allowed.
    pub fn new() -> Arc<ElectionWatch> {
        Arc::new(ElectionWatch {
            heard: Mutex::new(None),
            allowed: AtomicBool::new(true),
        })
    }

    /// An AppendEntries of the leader of `vote` arrived now.
    pub fn heard_from(&self, vote: &openraft::Vote<NodeId>) {
        let leader = vote.leader_id();
        if let Some(id) = leader.voted_for() {
            *lock(&self.heard) = Some(Heard {
                leader: id,
                term: leader.term,
                at: Instant::now(),
            });
        }
    }

    fn last_heard(&self) -> Option<Heard> {
        *lock(&self.heard)
    }
}

/// Where this voter stands in the queue of the voters that survive a silent `leader`
/// (lowest id first), or `None` when it is not one of them.
fn turn(voters: &[NodeId], leader: NodeId, me: NodeId) -> Option<u32> {
    if me == leader || !voters.contains(&me) {
        return None;
    }
    let ahead = voters.iter().filter(|v| **v != leader && **v < me).count();
    u32::try_from(ahead).ok()
}

/// How long after its last word from the leader this voter stands: the leader's lease
/// (which the other voters count from their own last word from it), a margin, then half
/// an election timeout per voter ahead in the queue, so that two do not split the vote.
fn stand_after(lease: Duration, election_timeout_min: Duration, turn: u32) -> Duration {
    lease + LEASE_MARGIN + election_timeout_min / 2 * turn
}

/// Whether this node still follows the leader it `heard` from: no election since.
fn still_following(core: &Supervisor, heard: &Heard) -> bool {
    let m = core.metrics();
    m.current_leader == Some(heard.leader) && m.vote.leader_id().term == heard.term
}

/// Runs forever: when the leader has been silent for most of its lease, looks whether it
/// is still there; when its address refuses (the process is gone: killed, crashed) or
/// does not answer (its host is down or cut off), and a majority of the voters is in
/// reach, this voter stands for election in its turn ([`stand_after`]) instead of
/// waiting for openraft's timer (the lease, then a random election timeout, then a
/// tick: 450–675 ms after the last heartbeat with the defaults). A leader that still
/// accepts connections (slow, or frozen by SIGSTOP, whose kernel still accepts) is left
/// to openraft's timer, as before. Standing early asks for nothing the lease forbids:
/// the other voters refuse a vote while they heard from a leader within its lease.
pub async fn stand_when_the_leader_is_gone(core: Arc<Supervisor>, watch: Arc<ElectionWatch>) {
    let lease = Duration::from_millis(core.config.election_timeout_max_ms);
    let election_min = Duration::from_millis(core.config.election_timeout_min_ms);
    let heartbeat = Duration::from_millis(core.config.raft_heartbeat_ms);
    // Look early enough that a probe timing out still ends within the lease.
    let look_after = lease.saturating_sub(PROBE_TIMEOUT).max(heartbeat * 2);
    let mut looked: Option<Instant> = None;
    // Once per silence: a lost election is then openraft's timer's to retry.
    let mut stood: Option<Heard> = None;
    loop {
        // Asleep until the last word is `look_after` old (each new word moves that on)
        // and the last look is `LOOK_AGAIN` old: no wake-ups while the leader speaks.
        let Some(heard) = watch.last_heard() else {
            tokio::time::sleep(look_after).await;
            continue;
        };
        let due = (heard.at + look_after).max(looked.map_or(heard.at, |t| t + LOOK_AGAIN));
        if Instant::now() < due {
            tokio::time::sleep_until(due.into()).await;
            continue;
        }
        looked = Some(Instant::now());
        if stood == Some(heard)
            || !watch.allowed.load(Ordering::Relaxed)
            || !still_following(&core, &heard)
        {
            continue;
        }
        let m = core.metrics();
        let membership = m.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let Some(turn) = turn(&voters, heard.leader, core.id) else {
            continue;
        };
        let probes = probe_voters(&core).await;
        let leader = probes
            .iter()
            .find(|(id, _)| *id == heard.leader)
            .map_or(Probe::Silent, |(_, p)| *p);
        if leader == Probe::Accepted || !majority(&probes, voters.len()) {
            continue;
        }
        tokio::time::sleep_until((heard.at + stand_after(lease, election_min, turn)).into()).await;
        // Still nothing from it, nobody elected meanwhile, the gate still open.
        if watch.last_heard() != Some(heard)
            || !watch.allowed.load(Ordering::Relaxed)
            || !still_following(&core, &heard)
        {
            continue;
        }
        tracing::info!(
            "leader {} is gone ({}, silent for {} ms): standing for election",
            heard.leader,
            if leader == Probe::Refused {
                "nothing listens at its address"
            } else {
                "its address does not answer"
            },
            heard.at.elapsed().as_millis()
        );
        stood = Some(heard);
        if let Err(e) = core.raft.trigger().elect().await {
            tracing::warn!("stand for election: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_survivors_stand_in_turn_by_id_after_the_lease() {
        let voters = [1, 2, 3, 5];
        assert_eq!(turn(&voters, 2, 1), Some(0));
        assert_eq!(turn(&voters, 2, 3), Some(1));
        assert_eq!(turn(&voters, 2, 5), Some(2));
        assert_eq!(turn(&voters, 1, 2), Some(0));
        // Not the silent leader itself, not a learner.
        assert_eq!(turn(&voters, 2, 2), None);
        assert_eq!(turn(&voters, 2, 4), None);
        let (lease, emin) = (Duration::from_millis(300), Duration::from_millis(150));
        assert_eq!(stand_after(lease, emin, 0), Duration::from_millis(320));
        assert_eq!(stand_after(lease, emin, 2), Duration::from_millis(470));
    }

    #[test]
    fn the_last_word_heard_is_kept() {
        let watch = ElectionWatch::new();
        assert_eq!(watch.last_heard(), None);
        watch.heard_from(&openraft::Vote::new_committed(7, 3));
        let first = watch.last_heard().map(|h| (h.leader, h.term));
        assert_eq!(first, Some((3, 7)));
        watch.heard_from(&openraft::Vote::new_committed(8, 1));
        let second = watch.last_heard().map(|h| (h.leader, h.term));
        assert_eq!(second, Some((1, 8)));
    }

    #[tokio::test]
    async fn a_closed_port_is_refused_and_an_open_one_accepted() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        assert_eq!(probe(&addr, None).await, Probe::Accepted);
        drop(listener);
        assert_eq!(probe(&addr, None).await, Probe::Refused);
    }
}
