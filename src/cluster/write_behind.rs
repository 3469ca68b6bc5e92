//! The state database's written pages taken to the disk ahead of its durable commits.
//!
//! Applied entries commit to redb without an fsync (`store::persist`): their pages sit
//! dirty in the page cache until the next durable commit (every `DURABLE_EVERY` entries,
//! and at each snapshot), whose fdatasync then writes all of them while the commit
//! holds the state machine. After a thousand placements that took 62-69 ms on the test
//! VM, on every member at once, and each apply waited behind it: the slowest
//! replacements of issue 27's benchmark. A thread of its own syncs the file soon after
//! anything is written (at most once per [`PAUSE`]), outside redb's write lock, so a
//! durable commit finds little left to write. It adds no durability promise: what is
//! durable is still what a durable commit made so.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::time::Duration;

/// The least time between two syncs of the file: a burst of writes costs one sync a
/// pause, not one per commit.
pub const PAUSE: Duration = Duration::from_millis(50);

/// The handle of the syncing thread; the thread ends once every clone is dropped.
#[derive(Clone, Debug)]
pub struct WriteBehind {
    written: SyncSender<()>,
    /// Syncs done so far (the thread holds the other reference while it runs).
    synced: Arc<AtomicU64>,
}

impl WriteBehind {
    /// Starts the thread that syncs the file at `path` (the database, opened again
    /// read-only: a sync of any descriptor of a file writes the file's dirty pages).
    pub fn start(path: &Path) -> io::Result<WriteBehind> {
        let file = File::open(path)?;
        let (written, pending) = sync_channel::<()>(1);
        let synced = Arc::new(AtomicU64::new(0));
        let count = synced.clone();
        std::thread::Builder::new()
            .name("state-db-sync".into())
            .spawn(move || {
                // A failing disk is said once, not at every pause: the next durable
                // commit syncs the file itself, and fails there for the store to see.
                let mut failing = false;
                while pending.recv().is_ok() {
                    match file.sync_data() {
                        Ok(()) => failing = false,
                        Err(e) if !failing => {
                            failing = true;
                            tracing::warn!("syncing the state database ahead: {e}");
                        }
                        Err(_) => {}
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(PAUSE);
                }
            })?;
        Ok(WriteBehind { written, synced })
    }

    /// How many syncs the thread has done.
    pub fn synced(&self) -> u64 {
        self.synced.load(Ordering::Relaxed)
    }

    /// Notes that a commit wrote pages: a sync follows, within one [`PAUSE`] of the
    /// last one. Never waits.
    pub fn written(&self) {
        // Full: a sync is already due. (Disconnected does not happen while a handle
        // lives: the thread ends only once the last one is dropped.)
        let _ = self.written.try_send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Instant;

    /// Waits (bounded) until `done` holds.
    fn soon(what: &str, done: impl Fn() -> bool) {
        let until = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < until, "not within 10 s: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A write is followed by a sync, a burst of writes by one or two (not one per
    /// write), and the thread ends with the last handle.
    #[test]
    fn a_write_is_synced_a_burst_once_and_the_thread_ends_with_its_handles() {
        let dir = std::env::temp_dir().join(format!("hc-write-behind-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db");
        File::create(&path)
            .unwrap()
            .write_all(&[7u8; 1 << 20])
            .unwrap();
        let wb = WriteBehind::start(&path).unwrap();
        std::thread::sleep(PAUSE);
        assert_eq!(wb.synced(), 0, "a sync with nothing written");
        wb.written();
        soon("the first sync", || wb.synced() == 1);
        let other = wb.clone();
        for _ in 0..100 {
            other.written();
        }
        soon("a sync after the burst", || wb.synced() >= 2);
        std::thread::sleep(PAUSE * 4);
        assert!(wb.synced() <= 3, "{} syncs for a burst", wb.synced() - 1);
        let count = wb.synced.clone();
        drop(wb);
        drop(other);
        soon("the thread's end", || Arc::strong_count(&count) == 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
