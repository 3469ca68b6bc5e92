//! The JSON form of the API's messages: what `--json` prints and what the dashboard
//! reads, one shape for both.

use super::pb;
use serde_json::{json, Value};

/// A container.
pub fn container(c: &pb::Container) -> Value {
    json!({
        "id": c.id,
        "name": c.name,
        "definition": c.definition,
        "digest": c.definition_digest,
        "node": c.node,
        "desired": c.desired,
        "state": c.state,
        "exit_code": if c.has_exit_code { json!(c.exit_code) } else { Value::Null },
        "pid": c.pid,
        "rule": c.rule,
        "error": c.error,
        "labels": c.labels,
        "image": if c.image.is_empty() { Value::Null } else { json!(c.image) },
        "health": if c.health.is_empty() { Value::Null } else { json!(c.health) },
        "address": if c.address.is_empty() { Value::Null } else { json!(c.address) },
        "ports": c.ports,
        "restart": if c.state == "restarting" {
            json!({"attempt": c.restart_attempt})
        } else {
            Value::Null
        },
        "pull": if c.state == "pulling" {
            json!({"done": c.pull_done, "total": c.pull_total})
        } else {
            Value::Null
        },
    })
}

/// A service of the cluster network.
pub fn service(s: &pb::Service) -> Value {
    json!({
        "name": s.name,
        "dns_name": s.dns_name,
        "addresses": s.addresses,
        "serving": s.serving,
        "copies": s.copies,
    })
}

/// A member.
pub fn member(m: &pb::Member) -> Value {
    json!({
        "id": m.id,
        "addr": m.addr,
        "role": m.role,
        "state": m.state,
        "containers": m.containers,
        "labels": m.labels,
        "policy": serde_json::from_str::<Value>(&m.policy).ok(),
    })
}

/// An event, with its position (`index`, `sub`).
pub fn event(e: &pb::Event) -> Value {
    json!({
        "index": e.index,
        "sub": e.sub,
        "kind": e.kind,
        "container": e.container.as_ref().map(container),
        "node": e.node.as_ref().map(member),
        "message": e.message,
    })
}
