//! The mirror's side of etcd: connecting, paged prefix reads, the writer's claim and the
//! fenced writes. Every write is a transaction guarded by "`meta/writer-term` still holds
//! my term", so a deposed leader's late writes are refused by etcd itself.

use super::layout::{batches, fence_value, prefix_end, Layout, Op};
use crate::supervisor::config::EtcdConfig;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions, WatchStream,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// Keys read per request of a prefix read.
const PAGE: i64 = 1000;

/// Why a mirror step failed.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// etcd refused or did not answer.
    #[error("etcd: {what}: {source}")]
    Etcd {
        /// What was being done.
        what: &'static str,
        /// The client's error.
        source: etcd_client::Error,
    },
    /// A newer leader holds `meta/writer-term`: this member must not write.
    #[error("fenced: etcd's writer term is {holder}, this leader's is {mine}")]
    Fenced {
        /// The stored fence.
        holder: String,
        /// Ours.
        mine: String,
    },
    /// The writer's lease ran out or its keep-alive stream ended.
    #[error("the writer's etcd lease {0}")]
    Lease(String),
    /// A TLS file could not be read.
    #[error("read {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A record could not be encoded.
    #[error("encode a record: {0}")]
    Encode(#[from] serde_json::Error),
    /// A worker task of the mirror failed.
    #[error("mirror task: {0}")]
    Task(String),
    /// The watch of the rule keys ended or was cancelled for a reason other than
    /// compaction.
    #[error("the watch of the rule keys ended: {0}")]
    Watch(String),
}

/// Shorthand for a client error.
fn etcd(what: &'static str) -> impl FnOnce(etcd_client::Error) -> MirrorError {
    move |source| MirrorError::Etcd { what, source }
}

/// A key and value as read.
#[derive(Debug, Clone)]
pub struct Read {
    /// The value.
    pub value: Vec<u8>,
    /// Its etcd mod revision.
    pub revision: i64,
}

/// A connection to etcd, for one writer.
pub struct Etcd {
    client: Client,
    fence_key: String,
    fence: String,
}

impl Etcd {
    /// Connects (does not wait for etcd: the first call tells whether it answers).
    pub async fn connect(cfg: &EtcdConfig, layout: &Layout) -> Result<Etcd, MirrorError> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        if let Some((user, password)) = &cfg.user {
            opts = opts.with_user(user.clone(), password.clone());
        }
        if let Some(tls) = &cfg.tls {
            let read = |p: &std::path::Path| {
                std::fs::read(p).map_err(|source| MirrorError::File {
                    path: p.display().to_string(),
                    source,
                })
            };
            let mut t = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(read(&tls.ca_file)?));
            if let Some((cert, key)) = &tls.identity {
                t = t.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
            }
            opts = opts.with_tls(t);
        }
        let client = Client::connect(&cfg.endpoints, Some(opts))
            .await
            .map_err(etcd("connect"))?;
        Ok(Etcd {
            client,
            fence_key: layout.fence(),
            fence: String::new(),
        })
    }

    /// Grants the writer's lease.
    pub async fn grant_lease(&mut self, ttl_secs: i64) -> Result<i64, MirrorError> {
        let r = self
            .client
            .lease_grant(ttl_secs, None)
            .await
            .map_err(etcd("grant the writer's lease"))?;
        Ok(r.id())
    }

    /// Starts keeping the lease alive: send on the keeper, read the stream.
    pub async fn keep_alive(
        &mut self,
        lease: i64,
    ) -> Result<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream), MirrorError> {
        self.client
            .lease_keep_alive(lease)
            .await
            .map_err(etcd("keep the writer's lease alive"))
    }

    /// Claims the writer's role for `term`: refused when the stored fence is a newer
    /// term. On success every later write of this connection is guarded by it.
    pub async fn claim(
        &mut self,
        layout: &Layout,
        node: u64,
        term: u64,
        lease: i64,
        since_unix_ms: u128,
    ) -> Result<(), MirrorError> {
        let mine = fence_value(term);
        let writer =
            serde_json::json!({ "node": node, "term": term, "since_unix_ms": since_unix_ms })
                .to_string();
        let txn = Txn::new()
            .when([Compare::value(
                self.fence_key.clone(),
                CompareOp::Greater,
                mine.clone(),
            )])
            .and_then([TxnOp::get(self.fence_key.clone(), None)])
            .or_else([
                TxnOp::put(self.fence_key.clone(), mine.clone(), None),
                TxnOp::put(
                    layout.writer(),
                    writer,
                    Some(PutOptions::new().with_lease(lease)),
                ),
            ]);
        let r = self
            .client
            .txn(txn)
            .await
            .map_err(etcd("claim meta/writer"))?;
        if r.succeeded() {
            return Err(MirrorError::Fenced {
                holder: stored(&r),
                mine,
            });
        }
        self.fence = mine;
        Ok(())
    }

    /// Writes as the writer of `term` without claiming: what the connection of a leader
    /// deposed meanwhile holds (the fencing test plays one).
    pub fn assume(&mut self, term: u64) {
        self.fence = fence_value(term);
    }

    /// Writes `ops` in transactions within etcd's limits, each guarded by the fence.
    pub async fn write(&mut self, ops: Vec<Op>) -> Result<(), MirrorError> {
        for batch in batches(ops) {
            let then: Vec<TxnOp> = batch
                .into_iter()
                .map(|op| match op {
                    Op::Put(k, v) => TxnOp::put(k, v, None),
                    Op::Delete(k) => TxnOp::delete(k, None),
                })
                .collect();
            let txn = Txn::new()
                .when([Compare::value(
                    self.fence_key.clone(),
                    CompareOp::Equal,
                    self.fence.clone(),
                )])
                .and_then(then)
                .or_else([TxnOp::get(self.fence_key.clone(), None)]);
            let r = self.client.txn(txn).await.map_err(etcd("write"))?;
            if !r.succeeded() {
                return Err(MirrorError::Fenced {
                    holder: stored(&r),
                    mine: self.fence.clone(),
                });
            }
        }
        Ok(())
    }

    /// Every key under `dir` (a prefix ending in `/`), read at one revision, page by
    /// page; and that revision.
    pub async fn read_dir(
        &mut self,
        dir: &str,
    ) -> Result<(BTreeMap<String, Read>, i64), MirrorError> {
        let end = prefix_end(dir);
        let mut out = BTreeMap::new();
        let mut start = dir.as_bytes().to_vec();
        let mut revision = 0;
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if revision > 0 {
                opts = opts.with_revision(revision);
            }
            let r = self
                .client
                .get(start.clone(), Some(opts))
                .await
                .map_err(etcd("read"))?;
            if revision == 0 {
                revision = r.header().map(|h| h.revision()).unwrap_or(0);
            }
            for kv in r.kvs() {
                out.insert(
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    Read {
                        value: kv.value().to_vec(),
                        revision: kv.mod_revision(),
                    },
                );
            }
            match r.kvs().last() {
                Some(last) if r.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => return Ok((out, revision)),
            }
        }
    }

    /// Watches the operator's keys (`rules-in/`, `definitions-in/`) from `revision`.
    pub async fn watch_rules(
        &mut self,
        layout: &Layout,
        revision: i64,
    ) -> Result<WatchStream, MirrorError> {
        let opts = || {
            WatchOptions::new()
                .with_prefix()
                .with_start_revision(revision)
        };
        let mut w = self
            .client
            .watch(layout.rules_in_dir(), Some(opts()))
            .await
            .map_err(etcd("watch rules-in"))?;
        w.watch(layout.definitions_in_dir(), Some(opts()))
            .await
            .map_err(etcd("watch definitions-in"))?;
        Ok(w)
    }
}

/// The fence value a refused transaction read back.
fn stored(r: &etcd_client::TxnResponse) -> String {
    r.op_responses()
        .into_iter()
        .find_map(|o| match o {
            TxnOpResponse::Get(g) => g
                .kvs()
                .first()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
            _ => None,
        })
        .unwrap_or_else(|| "(none)".into())
}
