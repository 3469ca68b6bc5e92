//! Every decision that can be pure, made without I/O: placement, the view rules see and
//! the triggers of committed events, when each rule runs (its schedule), which
//! containers a kill takes, and the node agent's reconcile table. State and events in,
//! decisions out; the supervisor carries them out.

pub mod placement;
pub mod reconcile;
pub mod schedule;
pub mod victims;
pub mod view;
