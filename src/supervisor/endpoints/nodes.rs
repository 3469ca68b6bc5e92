//! Node and membership endpoints: status, members, join, heartbeat, drain, leave.

use super::convert::{join_request, members_pb};
use crate::api::pb::*;
use crate::supervisor::error::{OpError, OpResult};
use crate::supervisor::leader::ops;
use crate::supervisor::shared::Supervisor;

pub(super) fn status(core: &Supervisor, with_digest: bool) -> OpResult<ClusterStatusReply> {
    let m = core.metrics();
    let state = core.state();
    let leader = m.current_leader.unwrap_or(0);
    let leader_addr = m
        .membership_config
        .membership()
        .get_node(&leader)
        .map(|n| n.addr.clone())
        .unwrap_or_default();
    Ok(ClusterStatusReply {
        leader,
        leader_addr,
        term: m.current_term,
        commit_index: crate::supervisor::shared::commit_index(&m),
        last_applied: m.last_applied.map(|l| l.index).unwrap_or(0),
        members: members_pb(&m, &state),
        state_digest: match with_digest {
            true => state
                .digest()
                .map_err(|e| OpError::Internal(format!("state digest: {e}")))?,
            false => String::new(),
        },
        node: core.id,
        joint: m.membership_config.membership().get_joint_config().len() > 1,
        quorum_lost: core.is_leader() && !core.has_quorum(),
    })
}

pub(super) fn members(core: &Supervisor) -> MembersReply {
    MembersReply {
        members: members_pb(&core.metrics(), &core.state()),
    }
}

fn node_reply(core: &Supervisor, id: u64, moved: u32) -> NodeReply {
    let member = members_pb(&core.metrics(), &core.state())
        .into_iter()
        .find(|m| m.id == id);
    NodeReply { member, moved }
}

pub(super) async fn leave(core: &Supervisor, r: NodeRequest) -> OpResult<NodeReply> {
    let moved = ops::leave(core, r.id).await?;
    Ok(node_reply(core, r.id, moved))
}

pub(super) async fn drain(core: &Supervisor, r: NodeRequest) -> OpResult<NodeReply> {
    let moved = ops::drain(core, r.id).await?;
    Ok(node_reply(core, r.id, moved))
}

pub(super) async fn join(core: &Supervisor, r: JoinRequest) -> OpResult<JoinReply> {
    let id = ops::join(core, join_request(r)).await?;
    Ok(JoinReply {
        node_id: id,
        leader: core.id,
    })
}

pub(super) async fn heartbeat(core: &Supervisor, r: HeartbeatRequest) -> OpResult<HeartbeatReply> {
    // A policy this member cannot read (a node of a newer version) is left unrecorded;
    // it never costs the node its heartbeat, hence its lease.
    let policy = match r.policy.as_str() {
        "" => None,
        text => serde_json::from_str::<crate::spec::NodePolicy>(text)
            .inspect_err(|e| tracing::warn!("the policy node {} sent: {e}", r.node_id))
            .ok(),
    };
    ops::heartbeat(core, r.node_id, r.applied_index, policy).await?;
    Ok(HeartbeatReply {})
}
