//! The restart policies of this node's containers (`c.restart(...)`): when a container
//! whose record still wants it running ends here (by itself, or stopped because it
//! turned unhealthy), `decide::restart` says whether it starts again in place and
//! after how long. While it waits, the agent reports it `restarting` (it still counts,
//! so no rule places another); when the back-off is over the agent drops its local
//! record and launches it again under the same id. Once its attempts are used up it is
//! reported `exited` with why, and a rule that keeps N places a replacement elsewhere.
//! The counts live in memory: a restarted supervisor starts them afresh.

use super::shared::lock;
use crate::decide::reconcile::{Local, LocalStatus, LocalView};
use crate::decide::restart::{seed_of, Next, Restarts};
use crate::spec::restart::RestartPolicy;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What the node decided for one container.
#[derive(Debug, Default)]
struct Book {
    restarts: Restarts,
    /// The run (its first pid) the last decision was for: each end is decided once.
    decided_for: Option<i32>,
    /// A restart waits: its attempt.
    pending: Option<u32>,
    /// Its attempts were used up: how many it had.
    gave_up: Option<u32>,
    /// The window its attempts count in.
    interval: Duration,
}

/// The restart bookkeeping of this node.
pub struct Restarter {
    books: Mutex<HashMap<String, Book>>,
    /// Where the names of containers whose back-off is over go (the agent relaunches).
    due: mpsc::UnboundedSender<String>,
}

impl Restarter {
    /// A restarter that sends the containers whose back-off is over to `due`.
    pub fn new(due: mpsc::UnboundedSender<String>) -> Restarter {
        Restarter {
            books: Mutex::new(HashMap::new()),
            due,
        }
    }

    /// A container `name` that ended here (`local`) while its record wants it running:
    /// decides, once per run, whether and when it starts again.
    pub fn ended(&self, name: &str, local: &Local, policy: &RestartPolicy) {
        if local.status != LocalStatus::Exited {
            return;
        }
        let mut books = lock(&self.books);
        let book = books.entry(name.to_string()).or_default();
        if book.decided_for == Some(local.pid) {
            return;
        }
        book.decided_for = Some(local.pid);
        book.interval = Duration::from_millis(policy.interval_ms);
        match book.restarts.decide(policy, Instant::now(), seed_of(name)) {
            Next::Restart { attempt, after } => {
                tracing::info!(
                    "container {name}: ended ({}); restart {attempt} in {} ms",
                    local
                        .stopped_for
                        .clone()
                        .or_else(|| local.exit_code.map(|c| format!("exit code {c}")))
                        .unwrap_or_else(|| "no exit code".into()),
                    after.as_millis()
                );
                book.pending = Some(attempt);
                book.gave_up = None;
                let due = self.due.clone();
                let name = name.to_string();
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let _ = due.send(name);
                });
            }
            Next::GiveUp { attempts } => {
                tracing::info!("container {name}: ended after {attempts} restart(s); giving up");
                book.pending = None;
                book.gave_up = Some(attempts);
            }
        }
    }

    /// The back-off of `name` is over: its relaunch is under way.
    pub fn relaunching(&self, name: &str) {
        if let Some(b) = lock(&self.books).get_mut(name) {
            b.pending = None;
        }
    }

    /// Adds the decisions to the agent's picture: a pending restart, and why a
    /// container that gave up ended.
    pub fn overlay(&self, local: &mut LocalView) {
        let books = lock(&self.books);
        for (name, b) in books.iter() {
            let decided =
                |l: &Local| l.status == LocalStatus::Exited && b.decided_for == Some(l.pid);
            if !local.get(name).is_some_and(decided) {
                continue;
            }
            let Some(l) = local.get_mut(name) else {
                continue;
            };
            l.restart = b.pending;
            if let Some(n) = b.gave_up.filter(|n| *n > 0) {
                let how = l
                    .stopped_for
                    .clone()
                    .or_else(|| l.exit_code.map(|c| format!("exit code {c}")))
                    .unwrap_or_else(|| "ended".into());
                l.stopped_for = Some(format!(
                    "{how}; restarted {n} times within {} s, gave up",
                    b.interval.as_secs()
                ));
            }
        }
    }

    /// Forgets the containers that are gone from this node.
    pub fn forget(&self, names: &[String]) {
        let mut books = lock(&self.books);
        for n in names {
            books.remove(n);
        }
    }
}
