//! Group commit for client writes: commands proposed while earlier ones are still being
//! committed ride together in one Raft entry (`Command::Batch`).
//!
//! Why: openraft's core handles one entry at a time: each costs an append, a flush, a
//! turn of every replication stream, a commit and an apply, and a leader with 64
//! waiting writers paid all of them 64 times in a row (before the patch in
//! `third_party/openraft` it even waited for each flush before replicating). One entry
//! for many commands costs one of each.
//!
//! A write never waits for company: while fewer than [`IN_FLIGHT`] entries are on their
//! way and nothing queues, it is proposed at once, alone and as itself, from the caller's
//! own task (no extra hop), so one client sees no added latency. Only when every slot is
//! taken do new commands queue, and the next free slot takes all of them (up to
//! [`MAX_BATCH`]) as one entry. Large commands (placements with their definitions,
//! rules) always go alone, so a batch stays far below the transport's message limit.

use super::state::{Command, NodeId, Response};
use super::Raft;
use openraft::error::{ClientWriteError, Fatal, RaftError};
use openraft::BasicNode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Entries proposed and not yet answered, at most: enough to keep the log and the
/// followers busy, few enough that commands queue (and batch) under load.
pub const IN_FLIGHT: usize = 4;
/// Commands in one entry, at most.
pub const MAX_BATCH: usize = 128;

/// What a write gets back: the entry's log index and the command's own response.
pub type WriteResult =
    Result<(u64, Response), RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>>;

struct Pending {
    cmd: Command,
    reply: oneshot::Sender<WriteResult>,
}

/// Proposes commands on the local Raft node, batching those that arrive together.
/// Cheap to clone; the batching task ends when the last clone is dropped.
#[derive(Clone)]
pub struct Proposer {
    raft: Raft,
    queue: mpsc::UnboundedSender<Pending>,
    /// Commands in the queue (not yet taken by the batching task).
    queued: Arc<AtomicUsize>,
    /// Entries on their way (the batching task holds one while it waits for work).
    slots: Arc<Semaphore>,
}

impl Proposer {
    /// A proposer for `raft`; starts its task on the current tokio runtime.
    pub fn new(raft: Raft) -> Proposer {
        let (queue, rx) = mpsc::unbounded_channel();
        let p = Proposer {
            raft,
            queue,
            queued: Arc::default(),
            slots: Arc::new(Semaphore::new(IN_FLIGHT)),
        };
        tokio::spawn(run(p.raft.clone(), rx, p.queued.clone(), p.slots.clone()));
        p
    }

    /// Proposes `cmd` (this node must lead) and waits for it to be applied.
    pub async fn write(&self, cmd: Command) -> WriteResult {
        if !cmd.batchable() {
            return alone(&self.raft, cmd).await;
        }
        if self.queued.load(Ordering::Acquire) == 0 {
            if let Ok(_slot) = self.slots.try_acquire() {
                return alone(&self.raft, cmd).await;
            }
        }
        let (reply, answer) = oneshot::channel();
        self.queued.fetch_add(1, Ordering::AcqRel);
        if self.queue.send(Pending { cmd, reply }).is_err() {
            return Err(RaftError::Fatal(Fatal::Stopped));
        }
        answer
            .await
            .unwrap_or(Err(RaftError::Fatal(Fatal::Stopped)))
    }
}

/// Takes queued commands whenever a slot is free and proposes them as one entry.
async fn run(
    raft: Raft,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    queued: Arc<AtomicUsize>,
    slots: Arc<Semaphore>,
) {
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        queued.fetch_sub(batch.len(), Ordering::AcqRel);
        let raft = raft.clone();
        tokio::spawn(async move {
            commit(&raft, batch).await;
            drop(slot);
        });
    }
}

/// Proposes `cmd` as an entry of its own.
async fn alone(raft: &Raft, cmd: Command) -> WriteResult {
    raft.client_write(cmd)
        .await
        .map(|w| (w.log_id.index, w.data))
}

/// Proposes one entry for `batch` and answers each of its writers.
async fn commit(raft: &Raft, mut batch: Vec<Pending>) {
    if batch.len() == 1 {
        if let Some(p) = batch.pop() {
            let _ = p.reply.send(alone(raft, p.cmd).await);
        }
        return;
    }
    let (cmds, replies): (Vec<Command>, Vec<_>) =
        batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    let n = replies.len();
    match raft.client_write(Command::Batch(cmds)).await {
        Ok(w) => {
            let index = w.log_id.index;
            let responses = match w.data {
                Response::Batch(rs) if rs.len() == n => rs,
                other => {
                    // Cannot happen: `apply` answers a batch with one response per command.
                    let why = format!("a batch of {n} commands was answered with {other:?}");
                    vec![Response::Refused(why); n]
                }
            };
            for (reply, r) in replies.into_iter().zip(responses) {
                let _ = reply.send(Ok((index, r)));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::store::{open_database, LogStore, StateFeed, StateMachineStore};
    use crate::cluster::TypeConfig;
    use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
    use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
    use openraft::raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, VoteRequest, VoteResponse,
    };
    use openraft::{EntryPayload, RaftLogReader};
    use std::collections::{BTreeMap, BTreeSet};

    /// The network of a member alone: no peer is ever reachable.
    struct NoPeers;

    impl RaftNetworkFactory<TypeConfig> for NoPeers {
        type Network = NoPeers;

        async fn new_client(&mut self, _target: u64, _node: &BasicNode) -> NoPeers {
            NoPeers
        }
    }

    fn unreachable<E: std::error::Error>() -> RPCError<u64, BasicNode, E> {
        let e = std::io::Error::new(std::io::ErrorKind::NotConnected, "no peers here");
        RPCError::Unreachable(Unreachable::new(&e))
    }

    impl RaftNetwork<TypeConfig> for NoPeers {
        async fn append_entries(
            &mut self,
            _rpc: AppendEntriesRequest<TypeConfig>,
            _option: RPCOption,
        ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
            Err(unreachable())
        }

        async fn install_snapshot(
            &mut self,
            _rpc: InstallSnapshotRequest<TypeConfig>,
            _option: RPCOption,
        ) -> Result<
            InstallSnapshotResponse<u64>,
            RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
        > {
            Err(unreachable())
        }

        async fn vote(
            &mut self,
            _rpc: VoteRequest<u64>,
            _option: RPCOption,
        ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
            Err(unreachable())
        }
    }

    /// A network of members in one process: each call goes straight to the target's
    /// Raft handle (a member not registered yet is unreachable).
    #[derive(Clone, Default)]
    struct InProcess(Arc<std::sync::Mutex<BTreeMap<u64, Raft>>>);

    struct InProcessClient {
        net: InProcess,
        target: u64,
    }

    impl InProcess {
        fn get(&self, id: u64) -> Option<Raft> {
            self.0.lock().unwrap().get(&id).cloned()
        }
    }

    /// The error of a call the target answered with an error.
    fn remote<E: std::error::Error>(target: u64) -> impl FnOnce(E) -> RPCError<u64, BasicNode, E> {
        move |e| RPCError::RemoteError(RemoteError::new(target, e))
    }

    impl RaftNetworkFactory<TypeConfig> for InProcess {
        type Network = InProcessClient;

        async fn new_client(&mut self, target: u64, _node: &BasicNode) -> InProcessClient {
            InProcessClient {
                net: self.clone(),
                target,
            }
        }
    }

    impl RaftNetwork<TypeConfig> for InProcessClient {
        async fn append_entries(
            &mut self,
            rpc: AppendEntriesRequest<TypeConfig>,
            _option: RPCOption,
        ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
            let raft = self.net.get(self.target).ok_or_else(unreachable)?;
            raft.append_entries(rpc).await.map_err(remote(self.target))
        }

        async fn install_snapshot(
            &mut self,
            rpc: InstallSnapshotRequest<TypeConfig>,
            _option: RPCOption,
        ) -> Result<
            InstallSnapshotResponse<u64>,
            RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
        > {
            let raft = self.net.get(self.target).ok_or_else(unreachable)?;
            raft.install_snapshot(rpc)
                .await
                .map_err(remote(self.target))
        }

        async fn vote(
            &mut self,
            rpc: VoteRequest<u64>,
            _option: RPCOption,
        ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
            let raft = self.net.get(self.target).ok_or_else(unreachable)?;
            raft.vote(rpc).await.map_err(remote(self.target))
        }
    }

    /// Member `id` on real storage under `dir`.
    async fn member<N: RaftNetworkFactory<TypeConfig>>(
        dir: &std::path::Path,
        id: u64,
        network: N,
    ) -> (Raft, LogStore, StateFeed) {
        std::fs::create_dir_all(dir).unwrap();
        let db = open_database(&dir.join("raft.redb")).unwrap();
        let (sm, feed) = StateMachineStore::open(db.clone(), &dir.join("raft.redb")).unwrap();
        let log = LogStore::open(db, &dir.join("raft.log")).unwrap();
        // Elections only when a test starts one (`initialize` elects at once): on a
        // loaded machine, the default 150-300 ms timeouts let a follower depose a
        // leader mid-test, and one whose flush a test holds cannot follow.
        let config = openraft::Config {
            heartbeat_interval: 200,
            election_timeout_min: 30_000,
            election_timeout_max: 60_000,
            ..Default::default()
        };
        let config = Arc::new(config.validate().unwrap());
        let raft = Raft::new(id, config, network, log.clone(), sm)
            .await
            .unwrap();
        (raft, log, feed)
    }

    /// A one-member cluster on real storage (no peers: the network is never used).
    async fn one_member(dir: &std::path::Path) -> (Raft, LogStore, StateFeed) {
        let (raft, log, feed) = member(dir, 1, NoPeers).await;
        let members = BTreeMap::from([(1, BasicNode::new("127.0.0.1:1"))]);
        raft.initialize(members).await.unwrap();
        raft.wait(Some(std::time::Duration::from_secs(10)))
            .state(openraft::ServerState::Leader, "leads")
            .await
            .unwrap();
        (raft, log, feed)
    }

    fn scratch(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("haconiwa-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn a_no_op() -> Command {
        Command::RuleEvaluated {
            name: "none".into(),
            error: None,
        }
    }

    /// Alone, a leader is its own quorum: a write is answered only once the leader's
    /// own flush is done (openraft, patched, does not count an unflushed copy), and
    /// then at once (the flush callback reaches the core).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[allow(clippy::await_holding_lock)] // the held lock is the point: it stops the flusher
    async fn a_leader_counts_its_own_copy_only_once_it_is_flushed() {
        let dir = scratch("own-flush");
        let (raft, log, _feed) = one_member(&dir).await;
        let gate = log.flush_gate();
        let held = gate.lock().unwrap();
        let write = tokio::spawn({
            let raft = raft.clone();
            async move { raft.client_write(a_no_op()).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert!(
            !write.is_finished(),
            "a write was answered before the leader's only copy was flushed"
        );
        drop(held);
        let answered = tokio::time::timeout(std::time::Duration::from_secs(10), write).await;
        assert!(matches!(answered, Ok(Ok(Ok(_)))), "{answered:?}");
        raft.shutdown().await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The leader sends its entries while its own flush runs: with that flush held, a
    /// write still commits on the two followers' copies, and the leader's own copy is
    /// not counted meanwhile. (Unpatched, openraft 0.9 waits for the leader's flush
    /// before it replicates, and this write would hang.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[allow(clippy::await_holding_lock)] // the held lock is the point: it stops the flusher
    async fn a_write_commits_on_the_followers_while_the_leaders_flush_is_held() {
        let dir = scratch("overlap");
        let net = InProcess::default();
        let mut members = BTreeMap::new();
        for id in 1..=3 {
            let (raft, log, _feed) = member(&dir.join(id.to_string()), id, net.clone()).await;
            net.0.lock().unwrap().insert(id, raft.clone());
            members.insert(id, (raft, log));
        }
        let nodes = (1..=3).map(|id| (id, BasicNode::new(format!("127.0.0.1:{id}"))));
        members[&1]
            .0
            .initialize(nodes.collect::<BTreeMap<_, _>>())
            .await
            .unwrap();
        let metrics = members[&1]
            .0
            .wait(Some(std::time::Duration::from_secs(10)))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .unwrap();
        let leader = metrics.current_leader.unwrap();
        let (raft, log) = &members[&leader];
        let gate = log.flush_gate();
        let held = gate.lock().unwrap();
        let answered = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            raft.client_write(a_no_op()),
        )
        .await;
        let index = match answered {
            Ok(Ok(r)) => r.log_id.index,
            other => panic!("no answer with the leader's flush held: {other:?}"),
        };
        let own = raft
            .metrics()
            .borrow()
            .replication
            .clone()
            .unwrap_or_default();
        let own = own.get(&leader).copied().flatten().map(|l| l.index);
        assert!(
            own < Some(index),
            "the leader counted its own unflushed copy of {index}: {own:?}"
        );
        drop(held);
        for (raft, _) in members.values() {
            raft.shutdown().await.unwrap();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_entries_and_each_gets_its_own_answer() {
        let dir = scratch("proposer");
        let (raft, mut log, feed) = one_member(&dir).await;
        let p = Proposer::new(raft.clone());
        let before = raft.metrics().borrow().last_log_index.unwrap_or(0);
        let writes: Vec<_> = (0..200)
            .map(|k| {
                let p = p.clone();
                tokio::spawn(async move {
                    p.write(Command::AddNode {
                        id: None,
                        addr: format!("10.0.0.{k}:7700"),
                        labels: BTreeMap::new(),
                    })
                    .await
                })
            })
            .collect();
        let mut ids = BTreeSet::new();
        let mut answers = Vec::new();
        for (k, w) in writes.into_iter().enumerate() {
            match w.await.unwrap().unwrap() {
                (_, Response::Node(id)) => {
                    assert!(ids.insert(id), "node id {id} given twice");
                    answers.push((k, id));
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(ids.len(), 200);
        // Each writer got the answer to its own command: the id of the node it added.
        let state = feed.state.borrow().1.clone();
        for (k, id) in answers {
            assert_eq!(state.nodes()[&id].addr, format!("10.0.0.{k}:7700"));
        }
        let entries = raft.metrics().borrow().last_log_index.unwrap_or(0) - before;
        assert!(
            entries < 200,
            "200 concurrent writes took {entries} entries: nothing was batched"
        );
        // One at a time, a write is an entry of its own (not wrapped in a batch).
        let (index, r) = p.write(a_no_op()).await.unwrap();
        assert_eq!(r, Response::Ok);
        let entry = log.try_get_log_entries(index..=index).await.unwrap();
        assert!(
            matches!(
                &entry[0].payload,
                EntryPayload::Normal(Command::RuleEvaluated { .. })
            ),
            "{entry:?}"
        );
        raft.shutdown().await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
