//! Rule endpoints: apply, list, remove.

use super::convert::{rule_pb, rule_request};
use crate::api::pb::*;
use crate::cluster::state::Command;
use crate::supervisor::error::{OpError, OpResult};
use crate::supervisor::leader::ops;
use crate::supervisor::shared::Supervisor;

pub(super) async fn apply(core: &Supervisor, r: ApplyRuleRequest) -> OpResult<ApplyRuleReply> {
    let rule = ops::apply_rule(core, rule_request(r)).await?;
    Ok(ApplyRuleReply {
        rule: Some(rule_pb(&rule, &core.state())),
    })
}

pub(super) fn list(core: &Supervisor) -> ListRulesReply {
    ListRulesReply {
        rules: {
            let state = core.state();
            state.rules().values().map(|r| rule_pb(r, &state)).collect()
        },
    }
}

pub(super) async fn remove(core: &Supervisor, r: RemoveRuleRequest) -> OpResult<RemoveRuleReply> {
    match core
        .propose(Command::RemoveRule {
            name: r.name.clone(),
        })
        .await
    {
        Ok(_) => Ok(RemoveRuleReply {}),
        Err(OpError::Refused(_)) => Err(OpError::NotFound(format!("no rule '{}'", r.name))),
        Err(e) => Err(e),
    }
}
