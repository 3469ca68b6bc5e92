//! What a container's node does when it exits or turns unhealthy
//! (`c.restart(#{ attempts, interval, delay, max_delay, mode })`): start it again in
//! place after a back-off, up to `attempts` times within `interval`; then either give
//! up (`fail`: it ends, and a rule that keeps N places a replacement elsewhere) or keep
//! trying at the longest delay (`delay`). Plain data: `decide::restart` decides.

use serde::{Deserialize, Serialize};

/// After the attempts of an interval are used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartMode {
    /// It ends (reported `exited`); a rule places it elsewhere.
    Fail,
    /// It stays on its node and is tried again at `max_delay`.
    Delay,
}

/// The restart policy of a definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// Restarts allowed within `interval`.
    pub attempts: u32,
    /// The window the attempts are counted in, ms: a container that ran this long
    /// without a restart starts afresh.
    pub interval_ms: u64,
    /// The first back-off, ms; it doubles with each attempt in the window.
    pub delay_ms: u64,
    /// The longest back-off, ms.
    pub max_delay_ms: u64,
    /// What happens after the attempts.
    pub mode: RestartMode,
}

impl Default for RestartPolicy {
    /// Nomad's service defaults: 2 attempts in 30 min, 15 s apart (doubling to 5 min
    /// here), then `fail`.
    fn default() -> RestartPolicy {
        RestartPolicy {
            attempts: 2,
            interval_ms: 30 * 60_000,
            delay_ms: 15_000,
            max_delay_ms: 5 * 60_000,
            mode: RestartMode::Fail,
        }
    }
}
