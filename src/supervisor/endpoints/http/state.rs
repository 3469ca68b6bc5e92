//! The dashboard's data as JSON: the members, the containers, the rules, and one event.

use super::super::convert::{container_pb, event_pb, members_pb, rule_pb};
use crate::api::json as shapes;
use crate::api::pb;
use crate::cluster::event_log::Logged;
use crate::supervisor::shared::Supervisor;
use serde_json::{json, Value};

fn member(m: &pb::Member, leader: u64) -> Value {
    let mut v = shapes::member(m);
    v["leader"] = Value::Bool(m.id == leader);
    v
}

/// Everything the dashboard shows, as this member sees it.
pub fn json(core: &Supervisor) -> Value {
    let m = core.metrics();
    let state = core.state();
    let leader = m.current_leader.unwrap_or(0);
    let (index, _) = *core.feed.state.borrow();
    let members: Vec<Value> = members_pb(&m, &state)
        .iter()
        .map(|x| member(x, leader))
        .collect();
    let containers: Vec<Value> = state
        .containers()
        .values()
        .map(|c| shapes::container(&container_pb(c, &state)))
        .collect();
    let rules: Vec<Value> = state
        .rules()
        .values()
        .map(|r| {
            let p = rule_pb(r, &state);
            json!({
                "name": p.name,
                "version": p.version,
                "rollout": p.rollout,
                "active": p.active,
                "running": p.running,
                "healthy": p.healthy,
                "restarting": p.restarting,
                "outdated": p.outdated,
                "last_evaluation_index": p.last_evaluation_index,
                "evaluations": p.evaluations,
                "last_error": p.last_error,
                "definitions": p.definitions,
            })
        })
        .collect();
    json!({
        "node": core.id,
        "leader": leader,
        "term": m.current_term,
        "applied_index": index,
        "members": members,
        "containers": containers,
        "rules": rules,
    })
}

/// One event.
pub fn event_json(core: &Supervisor, l: Logged) -> Value {
    shapes::event(&event_pb(l.event, l.sub, &core.state()))
}
