//! The recent committed events, kept so that a client that lost its stream resumes it
//! where it stopped: every event has a position (its entry's log index, and its place
//! among that entry's events), and a stream may start after any position the log still
//! covers. In memory and bounded: a position older than what it holds (or from before
//! this member started, or before a snapshot it installed) is refused, and the client
//! lists the state again.

use super::state::Event;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::broadcast;

/// Events kept for resuming streams.
pub const KEEP: usize = 10_000;

/// An event and its position.
#[derive(Debug, Clone)]
pub struct Logged {
    /// The event (its `index` is the entry's log index).
    pub event: Event,
    /// Its place among the events of its entry, from 0.
    pub sub: u32,
}

impl Logged {
    /// Whether it comes after the position `(index, sub)`.
    pub fn after(&self, index: u64, sub: u32) -> bool {
        (self.event.index, self.sub) > (index, sub)
    }
}

/// A position the log no longer covers.
#[derive(Debug, thiserror::Error)]
#[error("events up to index {complete_after} are no longer kept (asked for those after {asked}): list the state again and follow from index {complete_after}")]
pub struct TooOld {
    /// What was asked.
    pub asked: u64,
    /// Every event after this index is kept.
    pub complete_after: u64,
}

struct Inner {
    events: VecDeque<Logged>,
    /// Every event of an entry after this index is in `events`.
    complete_after: u64,
    /// The last position handed out.
    last: (u64, u32),
}

/// The log, and the live feed of what is appended to it.
pub struct EventLog {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Logged>,
}

impl EventLog {
    /// An empty log of a state applied up to `index` (nothing before it can be replayed).
    pub fn new(index: u64) -> EventLog {
        let (tx, _) = broadcast::channel(4096);
        EventLog {
            inner: Mutex::new(Inner {
                events: VecDeque::new(),
                complete_after: index,
                last: (index, u32::MAX),
            }),
            tx,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends the events of one applied entry.
    pub fn append(&self, events: &[Event]) {
        let mut g = self.lock();
        for e in events {
            let sub = if g.last.0 == e.index {
                g.last.1.wrapping_add(1)
            } else {
                0
            };
            g.last = (e.index, sub);
            let l = Logged {
                event: e.clone(),
                sub,
            };
            if g.events.len() >= KEEP {
                if let Some(old) = g.events.pop_front() {
                    // Its entry may have more events still kept: the entry counts as gone.
                    g.complete_after = g.complete_after.max(old.event.index);
                }
            }
            g.events.push_back(l.clone());
            // Under the lock: a follower subscribes under it too, so it gets every event
            // either from the backlog or from the feed, once.
            let _ = self.tx.send(l);
        }
    }

    /// Forgets everything up to `index` (a snapshot was installed: the entries before it
    /// were never applied here).
    pub fn reset(&self, index: u64) {
        let mut g = self.lock();
        g.events.clear();
        g.complete_after = index;
        g.last = (index, u32::MAX);
    }

    /// The events after `(index, sub)` still kept, and the feed of those to come.
    pub fn follow(
        &self,
        index: u64,
        sub: u32,
    ) -> Result<(Vec<Logged>, broadcast::Receiver<Logged>), TooOld> {
        let g = self.lock();
        // Some events of the entry at `complete_after` may be gone: only a position past
        // all of them is covered.
        if (index, sub) < (g.complete_after, u32::MAX) {
            return Err(TooOld {
                asked: index,
                complete_after: g.complete_after,
            });
        }
        let rx = self.tx.subscribe();
        let backlog = g
            .events
            .iter()
            .filter(|l| l.after(index, sub))
            .cloned()
            .collect();
        Ok((backlog, rx))
    }

    /// The feed of events from now on, and the position of the last one before it.
    pub fn live(&self) -> (broadcast::Receiver<Logged>, (u64, u32)) {
        let g = self.lock();
        (self.tx.subscribe(), g.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::state::EventKind;

    fn ev(index: u64) -> Event {
        Event {
            index,
            kind: EventKind::NodeUp,
            container: None,
            node: None,
            message: String::new(),
        }
    }

    #[test]
    fn a_stream_resumes_without_gaps_or_duplicates() {
        let log = EventLog::new(10);
        log.append(&[ev(11), ev(11), ev(11)]);
        log.append(&[ev(13)]);
        // Stopped after the second event of entry 11: the third, then 13.
        let (backlog, mut rx) = log.follow(11, 1).unwrap();
        let pos: Vec<(u64, u32)> = backlog.iter().map(|l| (l.event.index, l.sub)).collect();
        assert_eq!(pos, [(11, 2), (13, 0)]);
        log.append(&[ev(14)]);
        let next = rx.try_recv().unwrap();
        assert_eq!((next.event.index, next.sub), (14, 0));
        assert!(rx.try_recv().is_err(), "an event came twice");
        // From before the log started: refused, with where to start instead.
        let e = log.follow(5, 0).unwrap_err();
        assert_eq!(e.complete_after, 10);
    }

    #[test]
    fn what_falls_out_of_the_log_is_refused() {
        let log = EventLog::new(0);
        for i in 1..=(KEEP as u64 + 5) {
            log.append(&[ev(i)]);
        }
        assert!(log.follow(4, 0).is_err());
        let (backlog, _) = log.follow(5, u32::MAX).unwrap();
        assert_eq!(backlog.len(), KEEP);
        assert_eq!(backlog[0].event.index, 6);
        log.reset(20_000);
        assert!(log.follow(10_005, 0).is_err());
    }
}
