//! The health checks of this node's running containers (`c.health(...)`): one task
//! per container probes it through the single-threaded `haconiwa __probe` helper (the
//! multi-thread rule), bounded by the check's timeout, feeds the results to the pure
//! `decide::checks::Checks`, writes what it found to the container's `health.json`
//! (for `ps`) and wakes the agent when the health changes. The agent reports it, and
//! stops a container that turned unhealthy (the reconcile table says so); the rule
//! then replaces it like any container that ended.

use super::shared::lock;
use crate::cluster::state::Health;
use crate::decide::checks::{Checks, Outcome};
use crate::decide::reconcile::{Local, LocalStatus, LocalView};
use crate::runtime::helper::{self, Failure, HelperError, Reply};
use crate::runtime::state::{now_secs, HealthRecord};
use crate::runtime::Runtime;
use crate::spec::health::HealthCheck;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};

/// Probes under way at once on this node (each is a helper process).
const PROBE_SLOTS: usize = 16;

/// What the checks of one container say, as the agent reads it.
#[derive(Debug, Clone)]
struct Found {
    health: Health,
    /// Why this node stopped it (it turned unhealthy).
    stopped_for: Option<String>,
    /// Which run of the container the checks are for: a container restarted in place
    /// keeps its name, and the task of its old run must not go on with the new one.
    run: u64,
}

/// The health checks of this node's containers.
pub struct Probes {
    runtime: Runtime,
    found: Mutex<HashMap<String, Found>>,
    slots: Semaphore,
    /// The agent's wake-up.
    wake: Arc<Notify>,
    /// The next run number.
    runs: std::sync::atomic::AtomicU64,
}

impl Probes {
    /// The checks of `runtime`'s containers; `wake` is pulled when a health changes.
    pub fn new(runtime: Runtime, wake: Arc<Notify>) -> Arc<Probes> {
        Arc::new(Probes {
            runtime,
            found: Mutex::new(HashMap::new()),
            slots: Semaphore::new(PROBE_SLOTS),
            wake,
            runs: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Starts checking the running container `name` (once: later calls do nothing).
    pub fn ensure(self: &Arc<Self>, name: &str, check: &HealthCheck) {
        let run = self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut found = lock(&self.found);
            if found.contains_key(name) {
                return;
            }
            found.insert(
                name.to_string(),
                Found {
                    health: Health::Starting,
                    stopped_for: None,
                    run,
                },
            );
        }
        let me = self.clone();
        let name = name.to_string();
        let check = check.clone();
        tokio::spawn(async move { me.watch(name, check, run).await });
    }

    /// Adds what the checks say to the agent's picture: the health of running
    /// containers, why this node stopped the ones it stopped.
    pub fn overlay(&self, local: &mut LocalView) {
        let found = lock(&self.found);
        for (name, f) in found.iter() {
            if let Some(l) = local.get_mut(name) {
                overlay_found(Some(f), l);
            }
        }
    }

    /// [`Probes::overlay`] for one container.
    pub fn overlay_one(&self, name: &str, l: &mut Local) {
        overlay_found(lock(&self.found).get(name), l);
    }

    /// Forgets the containers that are gone from this node.
    pub fn forget(&self, names: &[String]) {
        let mut found = lock(&self.found);
        for n in names {
            found.remove(n);
        }
    }

    /// Whether run `run` of `name` is still checked (it is forgotten once its record
    /// goes or the container is restarted in place).
    fn checked(&self, name: &str, run: u64) -> bool {
        lock(&self.found).get(name).is_some_and(|f| f.run == run)
    }

    /// Probes one container until it ends, turns unhealthy or is forgotten.
    async fn watch(self: Arc<Self>, name: String, check: HealthCheck, run: u64) {
        let mut checks = Checks::new(&check, Instant::now());
        let timeout = Duration::from_millis(check.timeout_ms);
        loop {
            tokio::time::sleep_until(checks.due().into()).await;
            if !self.checked(&name, run) {
                return;
            }
            let outcome = {
                let Ok(_slot) = self.slots.acquire().await else {
                    return;
                };
                match self.probe(&name, &check, timeout).await {
                    Some(o) => o,
                    // The container is gone: its exit is the agent's news.
                    None => return,
                }
            };
            if !self.checked(&name, run) {
                return;
            }
            let passed = outcome == Outcome::Passed;
            let changed = checks.record(outcome, Instant::now());
            let last = checks.last_failure().unwrap_or_default().to_string();
            let record = HealthRecord {
                status: checks.health().name().to_string(),
                failures: checks.failures(),
                detail: if passed {
                    "passed".to_string()
                } else {
                    last.clone()
                },
                checked_at: now_secs(),
            };
            let dir = self.runtime.dir(&name);
            let _ = tokio::task::spawn_blocking(move || dir.write_health(&record)).await;
            let Some(health) = changed else {
                continue;
            };
            tracing::info!("container {name}: {} ({})", health.name(), check.describe());
            {
                let mut found = lock(&self.found);
                let Some(f) = found.get_mut(&name).filter(|f| f.run == run) else {
                    return;
                };
                f.health = health;
                if health == Health::Unhealthy {
                    f.stopped_for = Some(format!(
                        "unhealthy: {} failed {} times in a row (last: {last})",
                        check.describe(),
                        checks.failures()
                    ));
                }
            }
            self.wake.notify_one();
            if health == Health::Unhealthy {
                return;
            }
        }
    }

    /// One probe, bounded by the check's timeout; `None` when the container is gone.
    async fn probe(&self, name: &str, check: &HealthCheck, timeout: Duration) -> Option<Outcome> {
        let request = helper::Request::Probe {
            place: helper::Place::of(&self.runtime),
            name: name.to_string(),
            probe: check.probe.clone(),
            timeout_ms: check.timeout_ms,
        };
        Some(match helper::call_bounded(&request, timeout).await {
            None => Outcome::Failed(format!("timed out after {} ms", check.timeout_ms)),
            Some(Ok((Reply::Probed(f), stderr))) if !f.passed => {
                let said = helper::tail(&stderr);
                Outcome::Failed(if said.is_empty() {
                    f.detail
                } else {
                    format!("{}: {said}", f.detail)
                })
            }
            Some(Ok((Reply::Probed(_), _))) => Outcome::Passed,
            Some(Ok((other, _))) => Outcome::Failed(format!("unexpected reply {other:?}")),
            Some(Err(HelperError::Failed(Failure::Gone(_)))) => return None,
            Some(Err(e)) => Outcome::Failed(e.to_string()),
        })
    }
}

fn overlay_found(f: Option<&Found>, l: &mut Local) {
    if let Some(f) = f {
        if l.status == LocalStatus::Running {
            l.health = Some(f.health);
        }
        l.stopped_for = f.stopped_for.clone();
    }
}
