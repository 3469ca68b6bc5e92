//! What the supervisor counts as it works, for `/metrics` (`http`): launches, rule
//! evaluations, committed events by kind, elections seen. Values the state or Raft hold
//! (terms, counts of nodes and containers) are read at scrape time instead.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

/// Label sets: `[(name, value)]`.
pub type Labels = Vec<(String, String)>;

/// The counters and histograms of one supervisor (clones share their values).
#[derive(Clone)]
pub struct Stats {
    /// Container launches on this node, from assignment seen to running (handshake).
    pub launch_seconds: Histogram,
    /// Launches on this node that failed.
    pub launch_failures: Counter,
    /// The agent's passes over this node's containers: their CPU time on the agent's
    /// path, paid at every change (a replacement takes several).
    pub agent_pass_seconds: Histogram,
    /// Rule evaluations by this member while it led, by rule and outcome (ok, error).
    pub rule_evaluations: Family<Labels, Counter>,
    /// Their duration.
    pub rule_evaluation_seconds: Histogram,
    /// Times a rule was held back because its copies crashed in a row, by rule.
    pub rule_crash_backoffs: Family<Labels, Counter>,
    /// Committed events applied here, by kind.
    pub events: Family<Labels, Counter>,
    /// OOM kills of containers on this node (from the committed exits).
    pub oom_kills: Counter,
    /// Raft term changes this member saw (each one an election).
    pub elections: Counter,
    /// fdatasyncs of the Raft log: the disk latency a commit waits for.
    pub log_append_seconds: Histogram,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            launch_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            launch_failures: Counter::default(),
            agent_pass_seconds: Histogram::new(exponential_buckets(0.00002, 2.0, 16)),
            rule_evaluations: Family::default(),
            rule_evaluation_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            rule_crash_backoffs: Family::default(),
            events: Family::default(),
            oom_kills: Counter::default(),
            elections: Counter::default(),
            log_append_seconds: Histogram::new(exponential_buckets(0.00005, 2.0, 16)),
        }
    }
}

/// One label.
pub fn label(name: &str, value: &str) -> Labels {
    vec![(name.to_string(), value.to_string())]
}
