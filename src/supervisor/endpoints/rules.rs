//! Rule endpoints: apply, list, remove, history, rollback, promote.

use super::convert::{history_pb, rule_pb, rule_request};
use crate::api::pb::*;
use crate::cluster::state::{Command, Response};
use crate::supervisor::error::{OpError, OpResult};
use crate::supervisor::leader::ops;
use crate::supervisor::shared::wall_ms;
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

pub(super) fn history(core: &Supervisor, r: RuleHistoryRequest) -> OpResult<RuleHistoryReply> {
    let state = core.state();
    let h = state
        .rule_history(&r.name)
        .ok_or_else(|| OpError::NotFound(format!("no rule '{}'", r.name)))?;
    Ok(history_pb(&h, &state))
}

pub(super) async fn rollback(
    core: &Supervisor,
    r: RollbackRuleRequest,
) -> OpResult<RollbackRuleReply> {
    let cmd = Command::RollbackRule {
        rule: r.name.clone(),
        version: (r.version != 0).then_some(r.version),
        applied_at_ms: wall_ms(),
    };
    let version = version_after(core, &r.name, cmd).await?;
    let rollback_of = core
        .state()
        .rule_history(&r.name)
        .and_then(|h| h.get(version).and_then(|v| v.rollback_of))
        .unwrap_or(0);
    Ok(RollbackRuleReply {
        version,
        rollback_of,
    })
}

pub(super) async fn promote(
    core: &Supervisor,
    r: PromoteRuleRequest,
) -> OpResult<PromoteRuleReply> {
    let cmd = Command::PromoteRule {
        rule: r.name.clone(),
        version: (r.version != 0).then_some(r.version),
    };
    let version = version_after(core, &r.name, cmd).await?;
    Ok(PromoteRuleReply { version })
}

/// Commits a command on rule `name`'s versions; the version it answers.
async fn version_after(core: &Supervisor, name: &str, cmd: Command) -> OpResult<u64> {
    if !core.state().rules().contains_key(name) {
        return Err(OpError::NotFound(format!("no rule '{name}'")));
    }
    match core.propose(cmd).await?.1 {
        Response::Version(n) => Ok(n),
        other => Err(OpError::Internal(format!("{name}: answered {other:?}"))),
    }
}
