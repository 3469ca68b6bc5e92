//! The optional etcd mirror (`[etcd]` in node.toml, docs/etcd.md): the leader copies the
//! replicated state to etcd as JSON under a versioned layout (`layout`), as the one
//! fenced writer (`etcd`), and proposes the rules operators put in etcd (`rules_in`).
//!
//! Never in the way: it runs in its own task, fed by the latest applied state; `apply`
//! and client calls never wait for it. Errors back off and end in a full resync (read
//! the prefix, put and delete the difference), as does becoming leader, and a timer.

pub mod etcd;
pub mod layout;
pub mod rules_in;

use crate::cluster::state::ClusterState;
use crate::supervisor::config::EtcdConfig;
use crate::supervisor::shared::{lock, Supervisor};
use etcd::{Etcd, MirrorError};
use layout::{Layout, Op, STATE_DIRS};
use rules_in::{RulesIn, WatchStep};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// TTL of the writer's lease, s: `meta/writer` disappears this long after its writer.
const LEASE_TTL_SECS: i64 = 10;
/// How often the writer looks whether it still leads, and renews its lease.
const TICK: Duration = Duration::from_millis(100);
/// `meta/applied` (with its O(state) digest) is written at most this often while
/// changes keep coming, and as soon as they stop.
const APPLIED_EVERY: Duration = Duration::from_secs(1);
/// Backoff after an error: doubles from the first to the last (a connection attempt
/// to a dead etcd costs little; a returning etcd is back in the copy within a second).
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(1));

/// Starts the mirror task when `[etcd]` is configured (the supervisor's extra tasks).
pub fn start(core: Arc<Supervisor>) -> Vec<tokio::task::JoinHandle<()>> {
    let Some(cfg) = core.config.etcd.clone() else {
        return Vec::new();
    };
    {
        let mut r = lock(&core.mirror);
        r.enabled = true;
        r.endpoints = cfg.endpoints.clone();
        r.prefix = cfg.prefix.clone();
    }
    tracing::info!(
        "etcd mirror: {} under {} (written while this member leads)",
        cfg.endpoints.join(","),
        cfg.prefix
    );
    vec![tokio::spawn(run(core, cfg))]
}

/// Leads → writes; loses leadership or hits an error → stops writing, backs off, and
/// starts over with a full resync.
async fn run(core: Arc<Supervisor>, cfg: EtcdConfig) {
    let layout = Layout::new(&cfg.prefix);
    let mut rules = RulesIn::default();
    let mut backoff = BACKOFF.0;
    let mut last_error = String::new();
    loop {
        while !core.acting_leader() {
            tokio::time::sleep(TICK).await;
        }
        let term = core.metrics().current_term;
        let result = session(&core, &cfg, &layout, term, &mut rules).await;
        {
            let mut r = lock(&core.mirror);
            r.writer = false;
            r.behind_since = None;
            if let Err(e) = &result {
                r.connected = !matches!(e, MirrorError::Etcd { .. });
                r.last_error = Some((e.to_string(), Instant::now()));
            }
        }
        match result {
            Ok(()) => {
                backoff = BACKOFF.0;
                last_error.clear();
            }
            Err(e) => {
                // A long outage retries every second: say so once, not every second.
                let text = e.to_string();
                if text != last_error {
                    tracing::warn!(
                        "etcd mirror: {text}; retrying every {} s until it works",
                        BACKOFF.1.as_secs()
                    );
                    last_error = text;
                } else {
                    tracing::debug!("etcd mirror: {text}");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF.1);
            }
        }
    }
}

/// One writer's term of office: claim, resync, then follow the state and the rule keys
/// until leadership ends (Ok) or etcd fails (Err).
async fn session(
    core: &Supervisor,
    cfg: &EtcdConfig,
    layout: &Layout,
    term: u64,
    rules: &mut RulesIn,
) -> Result<(), MirrorError> {
    let mut etcd = Etcd::connect(cfg, layout).await?;
    let lease = etcd.grant_lease(LEASE_TTL_SECS).await?;
    lock(&core.mirror).connected = true;
    let (mut keeper, mut renewals) = etcd.keep_alive(lease).await?;
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    etcd.claim(layout, core.id, term, lease, since).await?;
    {
        let mut r = lock(&core.mirror);
        r.writer = true;
        r.term = term;
    }
    tracing::info!("etcd mirror: node {} writes under term {term}", core.id);
    let mut copy = resync(core, &mut etcd, layout, term).await?;
    // Rules: resume from the last revision seen (a first session reads everything).
    if rules.revision == 0 {
        rules.read(&mut etcd, layout).await?;
    }
    let mut watch = etcd.watch_rules(layout, rules.revision + 1).await?;
    rules.reconcile(core, &mut etcd, layout).await?;
    report_rules(core, rules);

    let mut states = core.feed.state.clone();
    let mut tick = tokio::time::interval(TICK);
    let mut renew_at = Instant::now();
    let mut resync_at = Instant::now() + cfg.resync;
    loop {
        tokio::select! {
            changed = states.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let mut r = lock(&core.mirror);
                if r.behind_since.is_none() {
                    r.behind_since = Some(Instant::now());
                }
            }
            _ = tick.tick() => {
                if !core.acting_leader() || core.metrics().current_term != term {
                    tracing::info!("etcd mirror: node {} no longer leads term {term}; stops writing", core.id);
                    return Ok(());
                }
                if renew_at.elapsed() >= Duration::from_secs(LEASE_TTL_SECS as u64 / 3) {
                    keeper.keep_alive().await.map_err(|source| MirrorError::Etcd { what: "renew the writer's lease", source })?;
                    renew_at = Instant::now();
                }
                if Instant::now() >= resync_at {
                    copy = resync(core, &mut etcd, layout, term).await?;
                    rules.read(&mut etcd, layout).await?;
                    watch = etcd.watch_rules(layout, rules.revision + 1).await?;
                    rules.reconcile(core, &mut etcd, layout).await?;
                    report_rules(core, rules);
                    resync_at = Instant::now() + cfg.resync;
                }
            }
            renewal = renewals.message() => match renewal {
                Ok(Some(r)) if r.ttl() > 0 => {}
                Ok(Some(_)) => return Err(MirrorError::Lease("expired".into())),
                Ok(None) => return Err(MirrorError::Lease("keep-alive stream ended".into())),
                Err(source) => return Err(MirrorError::Etcd { what: "renew the writer's lease", source }),
            },
            msg = watch.message() => {
                let msg = match msg {
                    Ok(Some(m)) => m,
                    Ok(None) => return Err(MirrorError::Watch("the stream closed".into())),
                    Err(source) => return Err(MirrorError::Etcd { what: "watch the rule keys", source }),
                };
                match rules.on_watch(layout, &msg)? {
                    WatchStep::Changed => {}
                    WatchStep::Reread => {
                        tracing::info!("etcd mirror: the rule watch was compacted away; reading the rule keys again");
                        rules.read(&mut etcd, layout).await?;
                        watch = etcd.watch_rules(layout, rules.revision + 1).await?;
                    }
                }
                if !msg.events().is_empty() || msg.canceled() {
                    rules.reconcile(core, &mut etcd, layout).await?;
                    report_rules(core, rules);
                }
            }
        }
        catch_up(core, &mut etcd, layout, term, &mut copy).await?;
    }
}

/// What the writer last copied: the state, its index, and when `meta/applied` was last
/// written (and for which index).
struct Copy {
    state: Arc<ClusterState>,
    index: u64,
    applied_written: (u64, Instant),
}

/// Copies the latest applied state if it moved since `copy`.
async fn catch_up(
    core: &Supervisor,
    etcd: &mut Etcd,
    layout: &Layout,
    term: u64,
    copy: &mut Copy,
) -> Result<(), MirrorError> {
    let (index, state) = core.feed.state.borrow().clone();
    if index != copy.index {
        let (old, new, l) = (copy.state.clone(), state.clone(), layout.clone());
        let ops = tokio::task::spawn_blocking(move || layout::diff(&l, &old, &new))
            .await
            .map_err(|e| MirrorError::Task(format!("diff task: {e}")))??;
        etcd.write(ops).await?;
        copy.state = state;
        copy.index = index;
    }
    let stale = copy.applied_written.0 != copy.index;
    let idle = core.feed.state.borrow().0 == copy.index;
    if stale && (idle || copy.applied_written.1.elapsed() >= APPLIED_EVERY) {
        write_applied(etcd, layout, term, copy).await?;
    }
    let mut r = lock(&core.mirror);
    r.mirrored_index = copy.index;
    r.keys = keys_of(&copy.state);
    if idle {
        r.behind_since = None;
    }
    Ok(())
}

/// Writes `meta/applied` for the copied state.
async fn write_applied(
    etcd: &mut Etcd,
    layout: &Layout,
    term: u64,
    copy: &mut Copy,
) -> Result<(), MirrorError> {
    let s = copy.state.clone();
    let digest = tokio::task::spawn_blocking(move || s.digest())
        .await
        .map_err(|e| MirrorError::Task(format!("digest task: {e}")))??;
    etcd.write(vec![Op::Put(
        layout.applied(),
        layout::applied_value(copy.index, term, &digest),
    )])
    .await?;
    copy.applied_written = (copy.index, Instant::now());
    Ok(())
}

/// Reads the state keys under the prefix and puts and deletes the difference to the
/// latest applied state.
async fn resync(
    core: &Supervisor,
    etcd: &mut Etcd,
    layout: &Layout,
    term: u64,
) -> Result<Copy, MirrorError> {
    let started = Instant::now();
    let (index, state) = core.feed.state.borrow().clone();
    let mut have = BTreeMap::new();
    for dir in STATE_DIRS {
        let (keys, _) = etcd.read_dir(&layout.key(dir)).await?;
        have.extend(keys.into_iter().map(|(k, r)| (k, r.value)));
    }
    let (s, l) = (state.clone(), layout.clone());
    let want = tokio::task::spawn_blocking(move || layout::full(&l, &s))
        .await
        .map_err(|e| MirrorError::Task(format!("resync task: {e}")))??;
    let ops = layout::reconcile(&have, &want);
    let changed = ops.len();
    etcd.write(ops).await?;
    let mut copy = Copy {
        state,
        index,
        applied_written: (0, Instant::now()),
    };
    write_applied(etcd, layout, term, &mut copy).await?;
    {
        let mut r = lock(&core.mirror);
        r.resyncs += 1;
        r.mirrored_index = index;
        r.keys = want.len() as u64;
        r.connected = true;
    }
    tracing::info!(
        "etcd mirror: resynced {} keys ({changed} changed) at index {index} in {} ms",
        want.len(),
        started.elapsed().as_millis()
    );
    Ok(copy)
}

/// State keys of a state (what `layout::full` would write), counted, not built.
fn keys_of(s: &ClusterState) -> u64 {
    (s.nodes().len()
        + s.definitions().len()
        + s.containers().len()
        + s.rules().len()
        + s.history().len()) as u64
}

/// Publishes the rules' outcomes and revision.
fn report_rules(core: &Supervisor, rules: &RulesIn) {
    let mut r = lock(&core.mirror);
    r.rules_in = rules.report();
    r.rules_revision = rules.revision;
}
