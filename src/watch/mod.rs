//! Watcher rules and placement, evaluated on the leader. No I/O: events and state in,
//! intents out.

pub mod placement;
pub mod rules;
