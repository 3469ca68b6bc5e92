//! Watcher rules on the leader (registration and the evaluation loop).

use super::core::Core;
use crate::api::pb;
use crate::cluster::state::ClusterState;
use std::sync::Arc;
use tonic::Status;

/// Registers a rule.
pub async fn apply(_core: &Core, _r: pb::ApplyRuleRequest) -> Result<pb::Rule, Status> {
    Err(Status::unimplemented("rules"))
}

/// The rule loop's memory between ticks.
pub struct RuleLoop {
    _core: Arc<Core>,
}

impl RuleLoop {
    /// A loop for this node.
    pub fn new(core: Arc<Core>) -> Self {
        RuleLoop { _core: core }
    }

    /// Forgets everything when leadership is lost.
    pub fn stand_down(&mut self) {}

    /// Evaluates the rules against the state applied at `index`.
    pub async fn evaluate(&mut self, _state: &ClusterState, _index: u64) {}
}
