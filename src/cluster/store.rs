//! Durable Raft storage: the log (`RaftLogStorage`, an append-only file, `wal.rs`) with
//! the vote, and the state machine with its snapshots (`RaftStateMachine`) in one redb
//! database under the data directory. The vote, truncations, purges, snapshots and
//! installed snapshots are durable (fsync) before the call returns. Appended entries are
//! written in the call and flushed by a thread of their own, in groups ([`Flusher`]):
//! openraft (patched in `third_party/openraft`) lets a leader send its entries to the
//! followers while its own flush runs, and counts its own copy once the flush callback
//! fires; a follower's append, which the core waits for, is flushed in the call. Applied
//! entries commit without an fsync of their own (the log already holds them; see
//! `persist`) and reach the disk with the next durable commit, at the latest every
//! [`DURABLE_EVERY`] entries; a thread syncs their pages in between (`write_behind.rs`),
//! so that the durable commit, which holds the state machine, has little left to write.
//!
//! The applied state is kept one record per row (`applied.rs`), and applying entries
//! writes the rows they touched: the cost of a commit follows the change, not the
//! state's size.

use super::applied::{
    any, dec, enc, read_applied, write_applied, Applied, Rows, SM, SM_CONTAINERS, SM_DEFINITIONS,
    SM_HISTORY, SM_NETWORK, SM_NODES, SM_POLICIES, SM_RULES, SM_SECRETS, SM_VOLUMES,
};
use super::state::{ClusterState, Event, EventKind, Response, Touched};
use super::wal::Wal;
use super::TypeConfig;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, watch};

type NodeId = u64;
type SResult<T> = Result<T, StorageError<NodeId>>;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Opens (or creates) the database with all tables.
pub fn open_database(path: &Path) -> Result<Arc<Database>, Box<redb::Error>> {
    let b = |e: redb::Error| Box::new(e);
    let db = Database::create(path).map_err(|e| b(e.into()))?;
    let tx = db.begin_write().map_err(|e| b(e.into()))?;
    tx.open_table(LOG).map_err(|e| b(e.into()))?;
    for t in [SM_NODES, SM_POLICIES] {
        tx.open_table(t).map_err(|e| b(e.into()))?;
    }
    for t in [
        META,
        SM,
        SM_DEFINITIONS,
        SM_CONTAINERS,
        SM_RULES,
        SM_HISTORY,
        SM_NETWORK,
        SM_VOLUMES,
        SM_SECRETS,
    ] {
        tx.open_table(t).map_err(|e| b(e.into()))?;
    }
    tx.commit().map_err(|e| b(e.into()))?;
    Ok(Arc::new(db))
}

/// The Raft log (an append-only file, `wal.rs`) and the vote (in the database).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    wal: Arc<Mutex<Wal>>,
    flusher: Flusher,
}

/// Told how long each flush of the log took (the metrics' disk latency, the figure etcd
/// calls its WAL fsync duration).
pub type AppendObserver = Arc<dyn Fn(std::time::Duration) + Send + Sync>;

/// An append written and waiting for its flush: the file it went to and whom to tell.
struct Unflushed {
    file: std::fs::File,
    callback: LogFlushed<TypeConfig>,
}

/// The thread that makes appends durable: it takes every append waiting, syncs the log
/// file once for all of them, then calls their callbacks. A leader's appends queue here
/// while the previous flush runs, so one fdatasync covers several.
#[derive(Clone)]
struct Flusher {
    queue: std::sync::mpsc::Sender<Unflushed>,
    /// Set once, by [`LogStore::observed`].
    observer: Arc<std::sync::OnceLock<AppendObserver>>,
    /// Held by a test to keep this store's flushes from completing.
    #[cfg(test)]
    gate: Arc<Mutex<()>>,
}

impl Flusher {
    /// Starts the thread; it ends when the last store clone is dropped.
    fn start() -> Result<Flusher, AnyError> {
        let (queue, waiting) = std::sync::mpsc::channel::<Unflushed>();
        let observer: Arc<std::sync::OnceLock<AppendObserver>> = Arc::default();
        let flusher = Flusher {
            queue,
            observer,
            #[cfg(test)]
            gate: Arc::default(),
        };
        // The thread keeps no sender of its own queue, or it would never end.
        let observer = flusher.observer.clone();
        #[cfg(test)]
        let gate = flusher.gate.clone();
        std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || {
                while let Ok(first) = waiting.recv() {
                    let mut group = vec![first];
                    group.extend(waiting.try_iter());
                    // After the group is taken: an append queued once a test holds the
                    // gate is never in a group that passed it.
                    #[cfg(test)]
                    drop(gate.lock());
                    // The newest handle: a compaction in between rewrote (and synced)
                    // the earlier appends into the file it points at.
                    let Some(newest) = group.last() else {
                        continue;
                    };
                    let synced = sync_observed(&observer, &newest.file);
                    for unflushed in group {
                        let result = match &synced {
                            Ok(()) => Ok(()),
                            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
                        };
                        unflushed.callback.log_io_completed(result);
                    }
                }
            })
            .map_err(any)?;
        Ok(flusher)
    }
}

/// Syncs the log file, telling the observer (if any) how long it took.
fn sync_observed(
    observer: &std::sync::OnceLock<AppendObserver>,
    file: &std::fs::File,
) -> std::io::Result<()> {
    let started = std::time::Instant::now();
    file.sync_data()?;
    if let Some(observe) = observer.get() {
        observe(started.elapsed());
    }
    Ok(())
}

impl LogStore {
    /// The log at `log_path` (created when missing) and the vote in `db`. A database
    /// that still holds the log of an older haconiwa (a `log` table) hands it over to
    /// the new file once.
    pub fn open(db: Arc<Database>, log_path: &Path) -> Result<Self, AnyError> {
        let mut wal = Wal::open(log_path).map_err(any)?;
        if wal.is_new() {
            let old: Vec<Entry<TypeConfig>> = {
                let tx = db.begin_read().map_err(any)?;
                let t = tx.open_table(LOG).map_err(any)?;
                let mut out = Vec::new();
                for item in t.iter().map_err(any)? {
                    let (_, v) = item.map_err(any)?;
                    out.push(dec(v.value())?);
                }
                out
            };
            let last_purged: Option<LogId<NodeId>> = {
                let tx = db.begin_read().map_err(any)?;
                let t = tx.open_table(META).map_err(any)?;
                match t.get("last_purged").map_err(any)? {
                    Some(v) => Some(dec(v.value())?),
                    None => None,
                }
            };
            if let Some(p) = last_purged {
                wal.purge(p).map_err(any)?;
            }
            if !old.is_empty() {
                wal.append(old).map_err(any)?;
                wal.syncer().and_then(|f| f.sync_data()).map_err(any)?;
                let tx = db.begin_write().map_err(any)?;
                tx.open_table(LOG)
                    .map_err(any)?
                    .retain(|_, _| false)
                    .map_err(any)?;
                tx.commit().map_err(any)?;
            }
        }
        Ok(LogStore {
            db,
            wal: Arc::new(Mutex::new(wal)),
            flusher: Flusher::start()?,
        })
    }

    /// The same store, telling `observer` the duration of every flush of the log.
    pub fn observed(self, observer: AppendObserver) -> Self {
        let _ = self.flusher.observer.set(observer);
        self
    }

    /// While a test holds this lock, this store's appends stay unflushed.
    #[cfg(test)]
    pub(crate) fn flush_gate(&self) -> Arc<Mutex<()>> {
        self.flusher.gate.clone()
    }

    fn wal(&self) -> std::sync::MutexGuard<'_, Wal> {
        self.wal.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn meta<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<Option<T>, AnyError> {
        let tx = self.db.begin_read().map_err(any)?;
        let t = tx.open_table(META).map_err(any)?;
        match t.get(key).map_err(any)? {
            Some(v) => Ok(Some(dec(v.value())?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: Serialize>(&self, key: &str, v: &T) -> Result<(), AnyError> {
        let tx = self.db.begin_write().map_err(any)?;
        {
            let mut t = tx.open_table(META).map_err(any)?;
            t.insert(key, enc(v)?.as_slice()).map_err(any)?;
        }
        tx.commit().map_err(any)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> SResult<Vec<Entry<TypeConfig>>> {
        Ok(self.wal().range(range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> SResult<LogState<TypeConfig>> {
        let wal = self.wal();
        Ok(LogState {
            last_purged_log_id: wal.last_purged(),
            last_log_id: wal.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    /// The log is synced first: a leader's appends may still wait for their flush, and
    /// a new vote is the first step of following another leader, whose AppendEntries
    /// this member then answers ("I hold these") without appending the entries it
    /// already has. What it claims to hold must be on disk by then.
    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> SResult<()> {
        let log = self.wal().syncer();
        log.and_then(|file| file.sync_data())
            .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
        self.put_meta("vote", vote)
            .map_err(|e| StorageIOError::write_vote(e).into())
    }

    async fn read_vote(&mut self) -> SResult<Option<Vote<NodeId>>> {
        self.meta("vote")
            .map_err(|e| StorageIOError::read_vote(e).into())
    }

    /// A hint for a restart (apply up to here at once instead of waiting to hear it
    /// from a leader, so that a restarted member never acts on a state far behind),
    /// called by openraft inside its core loop at every commit: a record in the log
    /// file, without a sync of its own.
    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> SResult<()> {
        self.wal()
            .set_committed(committed)
            .map_err(|e| StorageIOError::write(AnyError::new(&e)).into())
    }

    async fn read_committed(&mut self) -> SResult<Option<LogId<NodeId>>> {
        Ok(self.wal().committed())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> SResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        // Written here (readable at once), durable when the flusher's sync is done.
        let written = {
            let mut wal = self.wal();
            wal.append(entries.into_iter().collect())
                .and_then(|()| wal.syncer())
        };
        match written {
            Ok(file) => {
                // A follower's append: the core waits for it, so a thread hop would only
                // add to the wait. (The sync also covers any leader appends queued.)
                let unflushed = Unflushed { file, callback };
                let unflushed = if unflushed.callback.is_awaited() {
                    unflushed
                } else {
                    match self.flusher.queue.send(unflushed) {
                        Ok(()) => return Ok(()),
                        // The thread is gone (it only ends with the store): flush here.
                        Err(refused) => refused.0,
                    }
                };
                #[cfg(test)]
                drop(self.flusher.gate.lock());
                let synced = sync_observed(&self.flusher.observer, &unflushed.file);
                let failed = synced.as_ref().err().map(|e| e.to_string());
                unflushed.callback.log_io_completed(synced);
                match failed {
                    Some(e) => Err(StorageIOError::write_logs(AnyError::error(e)).into()),
                    None => Ok(()),
                }
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(AnyError::new(&e)).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> SResult<()> {
        self.wal()
            .truncate(log_id.index)
            .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> SResult<()> {
        self.wal()
            .purge(log_id)
            .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)).into())
    }
}

/// The snapshot last built or installed, in memory: its meta and the state it shows (a
/// persistent structure, so keeping it costs only what changed since). Its bytes are
/// made when a follower needs them, not when it is built.
type CurrentSnapshot = Option<(SnapshotMeta<NodeId, BasicNode>, Applied)>;

/// What the rest of the supervisor sees of the state machine: the state after each
/// apply, and the events of each applied entry.
#[derive(Clone)]
pub struct StateFeed {
    /// The latest applied state, with the index it reflects.
    pub state: watch::Receiver<(u64, Arc<ClusterState>)>,
    /// Events of applied entries (lagging receivers lose the oldest).
    pub events: broadcast::Sender<Event>,
    /// The recent events with their positions, for streams that resume.
    pub log: Arc<super::event_log::EventLog>,
}

/// The state machine.
#[derive(Clone)]
pub struct StateMachineStore {
    db: Arc<Database>,
    applied: Arc<Mutex<Applied>>,
    state_tx: Arc<watch::Sender<(u64, Arc<ClusterState>)>>,
    events: broadcast::Sender<Event>,
    log: Arc<super::event_log::EventLog>,
    snapshot_seq: Arc<Mutex<u64>>,
    /// The applied index last written to the tables.
    written: Arc<std::sync::atomic::AtomicU64>,
    /// The applied index last written durably.
    durable: Arc<std::sync::atomic::AtomicU64>,
    current: Arc<Mutex<CurrentSnapshot>>,
    /// Syncs the database's pages between durable commits (`write_behind.rs`).
    write_behind: super::write_behind::WriteBehind,
}

/// The most entries that change nothing applied before the applied index is written
/// anyway.
const LAG_UNWRITTEN: u64 = 1024;

/// The most entries applied between two durable commits of the state machine.
const DURABLE_EVERY: u64 = 1024;

impl StateMachineStore {
    /// Loads the persisted state machine (empty on a fresh database) of the database
    /// `db`, whose file is `path`.
    pub fn open(
        db: Arc<Database>,
        path: &Path,
    ) -> Result<(Self, StateFeed), Box<StorageError<NodeId>>> {
        let applied = read_applied(&db)
            .map_err(|e| Box::new(StorageIOError::read_state_machine(e).into()))?;
        let write_behind = super::write_behind::WriteBehind::start(path)
            .map_err(|e| Box::new(StorageIOError::read_state_machine(&e).into()))?;
        let index = applied.last_applied.map(|l| l.index).unwrap_or(0);
        let (state_tx, state_rx) = watch::channel((index, Arc::new(applied.state.clone())));
        let (events, _) = broadcast::channel(4096);
        let log = Arc::new(super::event_log::EventLog::new(index));
        let sm = StateMachineStore {
            db,
            applied: Arc::new(Mutex::new(applied)),
            state_tx: Arc::new(state_tx),
            events: events.clone(),
            log: log.clone(),
            snapshot_seq: Arc::new(Mutex::new(0)),
            written: Arc::new(std::sync::atomic::AtomicU64::new(index)),
            durable: Arc::new(std::sync::atomic::AtomicU64::new(index)),
            current: Arc::new(Mutex::new(None)),
            write_behind,
        };
        Ok((
            sm,
            StateFeed {
                state: state_rx,
                events,
                log,
            },
        ))
    }

    /// Writes the applied state's rows (`rows`) and, when given, a snapshot, in one
    /// transaction.
    fn persist(
        &self,
        applied: &Applied,
        rows: Rows,
        snapshot: Option<&SnapshotMeta<NodeId, BasicNode>>,
        durable: bool,
    ) -> Result<(), AnyError> {
        let mut tx = self.db.begin_write().map_err(any)?;
        // Applied entries need no fsync of their own: the log holds them durably, the
        // next durable commit (every log append is one) takes these rows to disk with
        // it, and after a crash the state machine is simply as of an earlier index, from
        // which openraft applies the log again. A snapshot is built (and the log purged)
        // only after a durable commit (see `build_snapshot`).
        if !durable {
            tx.set_durability(redb::Durability::None);
        }
        write_applied(&tx, applied, rows)?;
        if let Some(meta) = snapshot {
            let mut t = tx.open_table(SM).map_err(any)?;
            t.insert("snapshot_meta", enc(meta)?.as_slice())
                .map_err(any)?;
        }
        let started = std::time::Instant::now();
        tx.commit().map_err(any)?;
        if durable {
            tracing::debug!(
                "durable state commit took {} ms",
                started.elapsed().as_millis()
            );
        } else {
            self.write_behind.written();
        }
        // The meta row written holds the applied index: remember how far the tables go.
        let index = applied.last_applied.map(|l| l.index).unwrap_or(0);
        self.written
            .store(index, std::sync::atomic::Ordering::Relaxed);
        if durable {
            self.durable
                .store(index, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    fn current_snapshot(&self) -> std::sync::MutexGuard<'_, CurrentSnapshot> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `applied` the state every reader sees, and wakes the watchers only when
    /// `changed` (entries that changed nothing and said nothing, such as a repeated
    /// report, move the index a reader sees but wake none of the half dozen loops that
    /// follow the state: each was a task woken per write on every member).
    /// The order matters both ways: an event's reader (a stream describing it from the
    /// state) finds the state it came with, and a loop woken by the state finds the
    /// events that came with it (the leader's rule loop drains them when it wakes).
    fn publish(&self, applied: &Applied, events: Vec<Event>, changed: bool) {
        let index = applied.last_applied.map(|l| l.index).unwrap_or(0);
        let state = Arc::new(applied.state.clone());
        self.state_tx.send_if_modified(|now| {
            *now = (index, state);
            false
        });
        self.log.append(&events);
        for e in events {
            let _ = self.events.send(e);
        }
        if changed {
            self.state_tx.send_modify(|_| {});
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Applied> {
        // A poisoned lock means a panic mid-apply; the data is still the last complete one.
        self.applied.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    /// O(1) in the size of the state: the applied state is a persistent structure (a
    /// copy shares everything), the rows on disk already hold it, and the bytes are made
    /// only when a follower needs them (`get_current_snapshot`). What it writes is the
    /// applied index and the snapshot's meta, durably, before the log is purged.
    async fn build_snapshot(&mut self) -> SResult<Snapshot<TypeConfig>> {
        let applied = self.lock().clone();
        let seq = {
            let mut s = self.snapshot_seq.lock().unwrap_or_else(|p| p.into_inner());
            *s += 1;
            *s
        };
        let meta = snapshot_meta(&applied, &seq.to_string());
        // With the applied index it shows, durably (and with it every row an earlier
        // apply wrote without an fsync): the log is purged up to here next.
        self.persist(
            &applied,
            Rows::Touched(&Touched::default()),
            Some(&meta),
            true,
        )
        .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), e))?;
        *self.current_snapshot() = Some((meta.clone(), applied));
        // openraft keeps only the meta of a snapshot it asked to build.
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(Vec::new())),
        })
    }
}

/// The meta of a snapshot of `applied`.
fn snapshot_meta(applied: &Applied, tag: &str) -> SnapshotMeta<NodeId, BasicNode> {
    let snapshot_id = match applied.last_applied {
        Some(l) => format!("{}-{}-{tag}", l.leader_id, l.index),
        None => format!("none-{tag}"),
    };
    SnapshotMeta {
        last_log_id: applied.last_applied,
        last_membership: applied.last_membership.clone(),
        snapshot_id,
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> SResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let a = self.lock();
        Ok((a.last_applied, a.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> SResult<Vec<Response>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut applied = self.lock().clone();
        let mut responses = Vec::new();
        let mut events = Vec::new();
        let mut membership = false;
        let mut blank = false;
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => {
                    // A new leader's first entry: its loop watches for it.
                    blank = true;
                    responses.push(Response::Ok);
                }
                EntryPayload::Normal(cmd) => {
                    let (resp, ev) = applied.state.apply(entry.log_id.index, &cmd);
                    events.extend(ev);
                    responses.push(resp);
                }
                EntryPayload::Membership(m) => {
                    membership = true;
                    applied.last_membership = StoredMembership::new(Some(entry.log_id), m);
                    responses.push(Response::Ok);
                }
            }
        }
        let touched = applied.state.take_touched();
        // Entries that changed nothing (a repeated report) write nothing; the applied
        // index on disk lags (at most `LAG_UNWRITTEN` entries), and after a restart
        // openraft applies those entries again, to the same effect. A snapshot is built
        // only after a durable write of everything (see `build_snapshot`).
        let index = applied.last_applied.map(|l| l.index).unwrap_or(0);
        let written = self.written.load(std::sync::atomic::Ordering::Relaxed);
        if !touched.is_empty() || membership || index.saturating_sub(written) >= LAG_UNWRITTEN {
            // Durable now and then, so that redb reuses the pages of earlier commits and
            // a restart replays a bounded stretch of the log.
            let durable_at = self.durable.load(std::sync::atomic::Ordering::Relaxed);
            let durable = index.saturating_sub(durable_at) >= DURABLE_EVERY;
            self.persist(&applied, Rows::Touched(&touched), None, durable)
                .map_err(StorageIOError::write_state_machine)?;
        }
        let changed = !touched.is_empty() || !events.is_empty() || membership || blank;
        self.publish(&applied, events, changed);
        *self.lock() = applied;
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> SResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> SResult<()> {
        let data = snapshot.into_inner();
        let applied: Applied =
            dec(&data).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), e))?;
        self.persist(&applied, Rows::All, Some(meta), true)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), e))?;
        *self.current_snapshot() = Some((meta.clone(), applied.clone()));
        let event = Event {
            index: applied.last_applied.map(|l| l.index).unwrap_or(0),
            kind: EventKind::SnapshotInstalled,
            container: None,
            node: None,
            message: meta.snapshot_id.clone(),
        };
        // The entries before the snapshot were never applied here: no stream can be
        // resumed across it; the snapshot event itself is the first after.
        self.log.reset(event.index.saturating_sub(1));
        self.publish(&applied, vec![event], true);
        *self.lock() = applied;
        tracing::info!("installed snapshot {}", meta.snapshot_id);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> SResult<Option<Snapshot<TypeConfig>>> {
        let current = self.current_snapshot().clone();
        let (meta, applied) = match current {
            Some(c) => c,
            None => {
                // After a restart: a snapshot was taken before (its meta is on disk) and
                // the rows hold the state as of that index or later; the state as of now
                // is the snapshot (a later one is as good: it is committed and applied).
                let read = || -> Result<bool, AnyError> {
                    let tx = self.db.begin_read().map_err(any)?;
                    let t = tx.open_table(SM).map_err(any)?;
                    Ok(t.get("snapshot_meta").map_err(any)?.is_some())
                };
                if !read().map_err(|e| StorageIOError::read_snapshot(None, e))? {
                    return Ok(None);
                }
                let applied = self.lock().clone();
                let meta = snapshot_meta(&applied, "restart");
                *self.current_snapshot() = Some((meta.clone(), applied.clone()));
                (meta, applied)
            }
        };
        let data =
            enc(&applied).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::state::Definition;
    use openraft::testing::{StoreBuilder, Suite};

    /// Removes the test database directory when the suite is done with a store.
    struct Dir(std::path::PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A fresh scratch directory for one test (removed when the guard drops) and a
    /// runtime to drive the store with.
    fn scratch(tag: &str) -> (Dir, std::path::PathBuf, tokio::runtime::Runtime) {
        let dir = std::env::temp_dir().join(format!("haconiwa-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        (Dir(dir.clone()), dir, rt)
    }

    /// Entry `i` of term 3: a node joins at `127.0.0.1:i` (an entry that writes rows).
    fn add_node(i: u64) -> Entry<TypeConfig> {
        Entry::<TypeConfig> {
            log_id: LogId::new(openraft::CommittedLeaderId::new(3, 1), i),
            payload: EntryPayload::Normal(crate::cluster::state::Command::AddNode {
                id: None,
                addr: format!("127.0.0.1:{i}"),
                labels: Default::default(),
            }),
        }
    }

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, Dir> for Builder {
        async fn build(&self) -> Result<(Dir, LogStore, StateMachineStore), StorageError<NodeId>> {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let dir = std::env::temp_dir()
                .join(format!("haconiwa-store-suite-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
            let db = open_database(&dir.join("raft.redb"))
                .map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
            let (sm, _) =
                StateMachineStore::open(db.clone(), &dir.join("raft.redb")).map_err(|e| *e)?;
            let log =
                LogStore::open(db, &dir.join("raft.log")).map_err(StorageIOError::write_logs)?;
            Ok((Dir(dir), log, sm))
        }
    }

    /// The state's watchers (the leader's loop, the agent, the volume sweep...) wake
    /// for an entry that changed something, and not for one that changed nothing,
    /// whose index readers still see.
    #[test]
    fn only_an_entry_that_changed_something_wakes_the_state_s_watchers() {
        let (_guard, dir, rt) = scratch("wake");
        let db = open_database(&dir.join("raft.redb")).unwrap();
        let (mut sm, feed) = StateMachineStore::open(db, &dir.join("raft.redb")).unwrap();
        let mut watcher = feed.state.clone();
        watcher.borrow_and_update();
        rt.block_on(sm.apply([add_node(1)])).unwrap();
        assert!(watcher.has_changed().unwrap(), "a new node woke nobody");
        assert_eq!(watcher.borrow_and_update().0, 1);
        let nothing = crate::cluster::state::Command::RuleEvaluated {
            name: "none".into(),
            error: None,
        };
        let nothing = Entry::<TypeConfig> {
            log_id: LogId::new(openraft::CommittedLeaderId::new(3, 1), 2),
            payload: EntryPayload::Normal(nothing),
        };
        rt.block_on(sm.apply([nothing])).unwrap();
        assert!(
            !watcher.has_changed().unwrap(),
            "an entry that changed nothing woke the watchers"
        );
        assert_eq!(feed.state.borrow().0, 2, "readers must still see its index");
    }

    /// An applied entry that wrote rows (a commit without an fsync) has the database's
    /// pages synced ahead of the next durable commit by the write-behind thread.
    #[test]
    fn rows_an_entry_wrote_are_synced_ahead_of_the_durable_commit() {
        let (_guard, dir, rt) = scratch("ahead");
        let db = open_database(&dir.join("raft.redb")).unwrap();
        let (mut sm, _feed) = StateMachineStore::open(db, &dir.join("raft.redb")).unwrap();
        std::thread::sleep(super::super::write_behind::PAUSE);
        assert_eq!(sm.write_behind.synced(), 0, "a sync with nothing applied");
        rt.block_on(sm.apply([add_node(1)])).unwrap();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while sm.write_behind.synced() == 0 {
            assert!(
                std::time::Instant::now() < until,
                "the rows of an applied entry were not synced within 10 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn openraft_storage_suite() {
        Suite::test_all(Builder).expect("openraft storage suite");
    }

    #[test]
    fn a_snapshot_is_built_without_its_bytes_and_served_after_a_restart() {
        let (_guard, dir, rt) = scratch("snap");
        let before = rt.block_on(async {
            let db = open_database(&dir.join("raft.redb")).unwrap();
            let (mut sm, feed) = StateMachineStore::open(db, &dir.join("raft.redb")).unwrap();
            assert!(sm.get_current_snapshot().await.unwrap().is_none());
            sm.apply(vec![add_node(1), add_node(2)]).await.unwrap();
            let built = sm.build_snapshot().await.unwrap();
            assert_eq!(built.meta.last_log_id.map(|l| l.index), Some(2));
            sm.apply(vec![add_node(3)]).await.unwrap();
            // The snapshot built at 2 is served as built, its bytes made now.
            let got = sm.get_current_snapshot().await.unwrap().unwrap();
            assert_eq!(got.meta, built.meta);
            let shown: Applied = dec(got.snapshot.get_ref()).unwrap();
            assert_eq!(shown.state.nodes().len(), 2);
            let state = feed.state.borrow().1.clone();
            state
        });
        let db = open_database(&dir.join("raft.redb")).unwrap();
        let (mut sm, _) = StateMachineStore::open(db, &dir.join("raft.redb")).unwrap();
        rt.block_on(async {
            // After a restart: the state as of the rows on disk (all 3 entries).
            let got = sm.get_current_snapshot().await.unwrap().unwrap();
            assert_eq!(got.meta.last_log_id.map(|l| l.index), Some(3));
            let shown: Applied = dec(got.snapshot.get_ref()).unwrap();
            assert_eq!(shown.state, *before);
        });
    }

    #[test]
    fn a_log_kept_in_the_database_by_an_older_haconiwa_moves_to_the_log_file() {
        let (_guard, dir, rt) = scratch("move");
        let db = open_database(&dir.join("raft.redb")).unwrap();
        let entry = |i: u64| Entry::<TypeConfig> {
            log_id: LogId::new(openraft::CommittedLeaderId::new(2, 1), i),
            payload: EntryPayload::Blank,
        };
        {
            let tx = db.begin_write().unwrap();
            {
                let mut t = tx.open_table(LOG).unwrap();
                for i in 4..=6 {
                    t.insert(i, enc(&entry(i)).unwrap().as_slice()).unwrap();
                }
                let mut m = tx.open_table(META).unwrap();
                m.insert("last_purged", enc(&entry(3).log_id).unwrap().as_slice())
                    .unwrap();
            }
            tx.commit().unwrap();
        }
        let mut log = LogStore::open(db.clone(), &dir.join("raft.log")).unwrap();
        rt.block_on(async {
            let st = log.get_log_state().await.unwrap();
            assert_eq!(st.last_purged_log_id.map(|l| l.index), Some(3));
            assert_eq!(st.last_log_id.map(|l| l.index), Some(6));
            let got = log.try_get_log_entries(4..7).await.unwrap();
            assert_eq!(got.len(), 3);
        });
        let tx = db.begin_read().unwrap();
        use redb::ReadableTableMetadata;
        assert_eq!(
            tx.open_table(LOG).unwrap().len().unwrap(),
            0,
            "moved, not copied"
        );
    }

    #[test]
    fn state_survives_reopen() {
        let (_guard, dir, rt) = scratch("reopen");
        rt.block_on(async {
            let db = open_database(&dir.join("raft.redb")).unwrap();
            let (mut sm, _) = StateMachineStore::open(db.clone(), &dir.join("raft.redb")).unwrap();
            let mut log = LogStore::open(db, &dir.join("raft.log")).unwrap();
            let vote = Vote::new(3, 1);
            log.save_vote(&vote).await.unwrap();
            sm.apply(vec![add_node(1)]).await.unwrap();
        });
        let db = open_database(&dir.join("raft.redb")).unwrap();
        let (sm, feed) = StateMachineStore::open(db.clone(), &dir.join("raft.redb")).unwrap();
        let mut log = LogStore::open(db, &dir.join("raft.log")).unwrap();
        rt.block_on(async {
            assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
        });
        assert_eq!(feed.state.borrow().0, 1);
        assert_eq!(feed.state.borrow().1.nodes().len(), 1);
        drop(sm);
    }

    #[test]
    fn the_rows_each_entry_writes_rebuild_the_same_state() {
        use crate::cluster::state::{Command, Observed};
        let (_guard, dir, rt) = scratch("rows");
        let def = Definition {
            name: "web".into(),
            digest: "d-web".into(),
            text: "text".into(),
            base_dir: "/".into(),
            spec: crate::spec::ContainerSpec::new("web", vec!["/bin/true".into()], "/r".into()),
            registered_index: 0,
        };
        let mut cmds = vec![
            Command::AddNode {
                id: None,
                addr: "a:1".into(),
                labels: Default::default(),
            },
            Command::Spawn {
                digest: "d-web".into(),
                definition: Some(def),
                nodes: vec![1; 50],
                rule: None,
            },
        ];
        for i in 0..50 {
            let id = format!("web-{}", i + 1);
            cmds.push(Command::Observe {
                id: id.clone(),
                node: 1,
                observed: Observed::Running { pid: i },
            });
            if i % 3 == 0 {
                cmds.push(Command::Stop { id: id.clone() });
                cmds.push(Command::Observe {
                    id: id.clone(),
                    node: 1,
                    observed: Observed::Exited {
                        code: Some(0),
                        oom_killed: false,
                        error: None,
                    },
                });
                cmds.push(Command::Forget { ids: vec![id] });
            }
        }
        let in_memory = rt.block_on(async {
            let db = open_database(&dir.join("raft.redb")).unwrap();
            let (mut sm, feed) = StateMachineStore::open(db, &dir.join("raft.redb")).unwrap();
            // A few entries per apply call, as openraft hands them over.
            for (i, chunk) in cmds.chunks(3).enumerate() {
                let entries: Vec<Entry<TypeConfig>> = chunk
                    .iter()
                    .enumerate()
                    .map(|(j, c)| Entry {
                        log_id: LogId::new(
                            openraft::CommittedLeaderId::new(1, 1),
                            (i * 3 + j + 1) as u64,
                        ),
                        payload: EntryPayload::Normal(c.clone()),
                    })
                    .collect();
                sm.apply(entries).await.unwrap();
            }
            let state = feed.state.borrow().1.clone();
            state
        });
        assert_eq!(in_memory.containers().len(), 50 - 17);
        let db = open_database(&dir.join("raft.redb")).unwrap();
        let (_sm, feed) = StateMachineStore::open(db, &dir.join("raft.redb")).unwrap();
        let reopened = feed.state.borrow().1.clone();
        assert_eq!(*reopened, *in_memory);
        assert_eq!(reopened.digest().unwrap(), in_memory.digest().unwrap());
        assert_eq!(reopened.active_on(1), in_memory.active_on(1));
        assert_eq!(feed.state.borrow().0, cmds.len() as u64);
    }
}
