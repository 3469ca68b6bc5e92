//! Every decision that can be pure, made without I/O: placement (and what a node's
//! policy allows, `policy`), the view rules see and
//! the triggers of committed events, when each rule runs (its schedule), which
//! containers a kill takes, the node agent's reconcile table, and the leader's health
//! decisions (who is silent, who is stuck, which voter to replace, what to forget), and
//! a container's health from its probes (`checks`). State and events in, decisions
//! out; the supervisor carries them out.

pub mod checks;
pub mod health;
pub mod placement;
pub mod policy;
pub mod reconcile;
pub mod restart;
pub mod rollout;
pub mod schedule;
pub mod victims;
pub mod view;
