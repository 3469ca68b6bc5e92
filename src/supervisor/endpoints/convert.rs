//! Every record ⇄ protobuf conversion of the API, in one place: the supervisor's
//! records and reports out, its requests (`supervisor::requests`) in, proto3's empty
//! strings and zeros read as "absent" here and nowhere else.

use crate::api::pb;
use crate::cluster::state::{
    ClusterState, ContainerRecord, Event, Health, NodeId, NodeRecord, Observed, RuleHistory,
    RuleRecord, VersionStatus,
};
use crate::supervisor::mirror_report::{MirrorReport, RuleSource};
use crate::supervisor::requests::{
    DefinitionSource, HacoText, JoinRequest, RuleRequest, SpawnRequest, Target,
};
use openraft::{BasicNode, RaftMetrics};
use std::collections::BTreeSet;

/// API form of a container (its labels are its definition's, found in `state`).
pub fn container_pb(c: &ContainerRecord, state: &ClusterState) -> pb::Container {
    let (exit_code, has_exit_code, pid, error) = match &c.observed {
        Observed::Exited { code, error, .. } => (
            code.unwrap_or(0),
            code.is_some(),
            0,
            error.clone().unwrap_or_default(),
        ),
        Observed::Running { pid } | Observed::Checked { pid, .. } => {
            (0, false, *pid, String::new())
        }
        Observed::PullFailed { reason } => (0, false, 0, reason.clone()),
        Observed::Restarting { code, reason, .. } => (
            code.unwrap_or(0),
            code.is_some(),
            0,
            reason.clone().unwrap_or_default(),
        ),
        _ => (0, false, 0, String::new()),
    };
    let (pull_done, pull_total) = match &c.observed {
        Observed::Pulling { done, total } => (*done, *total),
        _ => (0, 0),
    };
    pb::Container {
        id: c.id.clone(),
        name: c.id.clone(),
        definition: c.definition.clone(),
        definition_digest: c.digest.clone(),
        node: c.node,
        desired: c.desired.name().into(),
        state: c.observed.name().into(),
        exit_code,
        has_exit_code,
        pid,
        rule: c.rule.clone().unwrap_or_default(),
        error,
        created_index: c.created_index,
        labels: state
            .labels_of(c)
            .map(|l| l.clone().into_iter().collect())
            .unwrap_or_default(),
        pull_done,
        pull_total,
        image: state
            .definitions()
            .get(&c.digest)
            .and_then(|d| d.spec.image.clone())
            .unwrap_or_default(),
        health: c
            .observed
            .health()
            .map(|h| h.name().to_string())
            .unwrap_or_default(),
        restart_attempt: match &c.observed {
            Observed::Restarting { attempt, .. } => *attempt,
            _ => 0,
        },
        address: state
            .address_of(&c.id)
            .map(|a| a.to_string())
            .unwrap_or_default(),
        ports: state
            .ports_of(&c.id)
            .iter()
            .map(|p| format!("{}->{}/tcp", p.host, p.container))
            .collect(),
    }
}

/// API form of the members: every node of the state, with its Raft role from `metrics`.
pub fn members_pb(
    metrics: &RaftMetrics<NodeId, BasicNode>,
    state: &ClusterState,
) -> Vec<pb::Member> {
    let membership = metrics.membership_config.membership();
    // Voters of the newest configuration (during a change, the one being moved to).
    let voters: BTreeSet<u64> = membership
        .get_joint_config()
        .last()
        .cloned()
        .unwrap_or_default();
    let mut out: Vec<pb::Member> = state
        .nodes()
        .values()
        .map(|n| node_pb(n, state, &voters, membership.get_node(&n.id).is_some()))
        .collect();
    // Members Raft knows that the state does not (yet).
    for (id, node) in membership.nodes() {
        if !state.nodes().contains_key(id) {
            out.push(pb::Member {
                id: *id,
                addr: node.addr.clone(),
                role: if voters.contains(id) {
                    "voter".into()
                } else {
                    "learner".into()
                },
                state: "joining".into(),
                containers: 0,
                labels: Default::default(),
                policy: String::new(),
            });
        }
    }
    out.sort_by_key(|m| m.id);
    out
}

fn node_pb(
    n: &NodeRecord,
    state: &ClusterState,
    voters: &BTreeSet<u64>,
    member: bool,
) -> pb::Member {
    pb::Member {
        id: n.id,
        addr: n.addr.clone(),
        role: if voters.contains(&n.id) {
            "voter".into()
        } else if member {
            "learner".into()
        } else {
            "none".into()
        },
        state: n.status.name().into(),
        containers: state.active_on(n.id) as u32,
        labels: n.labels.clone().into_iter().collect(),
        policy: state
            .policies()
            .get(&n.id)
            .and_then(|p| serde_json::to_string(p).ok())
            .unwrap_or_default(),
    }
}

/// API form of an event.
pub fn event_pb(e: Event, sub: u32, state: &ClusterState) -> pb::Event {
    let voters = BTreeSet::new();
    pb::Event {
        index: e.index,
        sub,
        kind: e.kind.name().into(),
        container: e.container.as_ref().map(|c| container_pb(c, state)),
        node: e.node.as_ref().map(|n| node_pb(n, state, &voters, false)),
        message: e.message,
    }
}

/// API form of a rule.
pub fn rule_pb(r: &RuleRecord, state: &ClusterState) -> pb::Rule {
    let (mut active, mut running, mut healthy, mut restarting, mut outdated) = (0, 0, 0, 0, 0);
    for c in state
        .containers()
        .values()
        .filter(|c| c.is_active() && c.rule.as_deref() == Some(r.name.as_str()))
    {
        active += 1;
        running += u32::from(c.observed.running_pid().is_some());
        healthy += u32::from(c.observed.health() == Some(Health::Healthy));
        restarting += u32::from(matches!(c.observed, Observed::Restarting { .. }));
        outdated += u32::from(!r.definitions.values().any(|d| *d == c.digest));
    }
    let current = state
        .rule_history(&r.name)
        .and_then(|h| h.current().cloned());
    pb::Rule {
        version: current.as_ref().map_or(0, |v| v.version),
        rollout: current
            .as_ref()
            .map(|v| v.status.name().to_string())
            .unwrap_or_default(),
        outdated,
        active,
        running,
        healthy,
        restarting,
        name: r.name.clone(),
        digest: r.digest.clone(),
        last_evaluation_index: r.last_evaluation_index,
        last_error: r.last_error.clone().unwrap_or_default(),
        evaluations: r.evaluations,
        definitions: r.definitions.keys().cloned().collect(),
    }
}

/// API form of a rule's versions, with the texts of their definitions the cluster
/// still holds.
pub fn history_pb(h: &RuleHistory, state: &ClusterState) -> pb::RuleHistoryReply {
    let last = h.current().map(|v| v.version);
    pb::RuleHistoryReply {
        versions: h
            .versions
            .iter()
            .map(|v| pb::RuleVersion {
                version: v.version,
                digest: v.digest.clone(),
                file: v.file.clone(),
                text: v.text.clone(),
                definitions: v
                    .definitions
                    .iter()
                    .map(|(file, digest)| pb::RuleDefinitionVersion {
                        file: file.clone(),
                        digest: digest.clone(),
                        text: state
                            .definitions()
                            .get(digest)
                            .map(|d| d.text.clone())
                            .unwrap_or_default(),
                    })
                    .collect(),
                applied_index: v.applied_index,
                applied_at_ms: v.applied_at_ms,
                status: v.status.name().to_string(),
                reason: match &v.status {
                    VersionStatus::Failed { reason } => reason.clone(),
                    _ => String::new(),
                },
                rollback_of: v.rollback_of.unwrap_or(0),
                current: Some(v.version) == last,
                promoted: v.promoted,
            })
            .collect(),
    }
}

/// An agent's report as what the state records; `None` for an unknown state name.
pub fn observed_from_report(r: &pb::ReportRequest) -> Option<Observed> {
    Some(match r.state.as_str() {
        "starting" => Observed::Starting,
        "pulling" => Observed::Pulling {
            done: r.pull_done,
            total: r.pull_total,
        },
        "pull_failed" => Observed::PullFailed {
            reason: r.error.clone(),
        },
        "running" => match r.health.as_str() {
            "" => Observed::Running { pid: r.pid },
            "starting" => Observed::Checked {
                pid: r.pid,
                health: Health::Starting,
            },
            "healthy" => Observed::Checked {
                pid: r.pid,
                health: Health::Healthy,
            },
            "unhealthy" => Observed::Checked {
                pid: r.pid,
                health: Health::Unhealthy,
            },
            _ => return None,
        },
        "restarting" => Observed::Restarting {
            attempt: r.restart_attempt,
            code: r.has_exit_code.then_some(r.exit_code),
            reason: (!r.error.is_empty()).then(|| r.error.clone()),
        },
        "exited" => Observed::Exited {
            code: Some(r.exit_code),
            oom_killed: r.oom_killed,
            error: (!r.error.is_empty()).then(|| r.error.clone()),
        },
        "failed" => Observed::Exited {
            code: None,
            oom_killed: false,
            error: Some(r.error.clone()),
        },
        _ => return None,
    })
}

/// A report for the leader, from what this node saw.
pub fn report_pb(node: NodeId, id: &str, observed: &Observed) -> pb::ReportRequest {
    let mut req = pb::ReportRequest {
        node_id: node,
        id: id.to_string(),
        state: observed.name().into(),
        ..Default::default()
    };
    match observed {
        Observed::Running { pid } => req.pid = *pid,
        Observed::Checked { pid, health } => {
            req.pid = *pid;
            req.health = health.name().into();
        }
        Observed::Restarting {
            attempt,
            code,
            reason,
        } => {
            req.restart_attempt = *attempt;
            req.exit_code = code.unwrap_or(0);
            req.has_exit_code = code.is_some();
            req.error = reason.clone().unwrap_or_default();
        }
        Observed::Pulling { done, total } => {
            req.pull_done = *done;
            req.pull_total = *total;
        }
        Observed::PullFailed { reason } => req.error = reason.clone(),
        Observed::Exited {
            code,
            oom_killed,
            error,
        } => {
            req.exit_code = code.unwrap_or(0);
            req.oom_killed = *oom_killed;
            req.error = error.clone().unwrap_or_default();
            if code.is_none() {
                req.state = "failed".into();
            }
        }
        _ => {}
    }
    req
}

/// `Some(s)` unless proto3's default (empty).
fn given(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// A spawn request: a registered definition by name, else the `.haco` text sent.
pub fn spawn_request(r: pb::SpawnRequest) -> SpawnRequest {
    let definition = match given(r.definition) {
        Some(name) => DefinitionSource::Registered(name),
        None => DefinitionSource::Text(HacoText {
            text: r.haco,
            file: given(r.file).unwrap_or_else(|| "definition.haco".into()),
            base_dir: r.base_dir,
        }),
    };
    SpawnRequest {
        definition,
        target: Target {
            node: (r.node != 0).then_some(r.node),
            labels: r.node_labels.into_iter().collect(),
        },
    }
}

/// A join request (node id 0: allocate one).
pub fn join_request(r: pb::JoinRequest) -> JoinRequest {
    JoinRequest {
        id: (r.node_id != 0).then_some(r.node_id),
        addr: r.addr,
        labels: r.labels.into_iter().collect(),
        outside_raft: r.outside_raft,
    }
}

/// A rule registration (no file name: `rule.watch`; no name: the file's stem).
pub fn rule_request(r: pb::ApplyRuleRequest) -> RuleRequest {
    RuleRequest {
        name: given(r.name),
        text: r.text,
        file: given(r.file).unwrap_or_else(|| "rule.watch".into()),
        hacos: r.hacos.into_iter().collect(),
        base_dir: r.base_dir,
    }
}

/// API form of a rule registered through etcd.
fn rule_source_pb(s: &RuleSource) -> pb::RuleSource {
    pb::RuleSource {
        name: s.name.clone(),
        key: s.key.clone(),
        ok: s.error.is_none(),
        error: s.error.clone().unwrap_or_default(),
        revision: s.revision,
    }
}

/// The mirror's report as the API sends it, with the lag measured now against
/// `applied`.
pub fn mirror_status_pb(m: &MirrorReport, node: u64, applied: u64) -> pb::MirrorStatusReply {
    let now = std::time::Instant::now();
    let age = |t: std::time::Instant| now.duration_since(t).as_secs_f64();
    pb::MirrorStatusReply {
        enabled: m.enabled,
        endpoints: m.endpoints.clone(),
        prefix: m.prefix.clone(),
        node,
        term: m.term,
        connected: m.connected,
        writer: m.writer,
        mirrored_index: m.mirrored_index,
        applied_index: applied,
        lag_entries: applied.saturating_sub(m.mirrored_index),
        lag_seconds: m.behind_since.map(age).unwrap_or(0.0),
        last_error: m
            .last_error
            .as_ref()
            .map(|e| e.0.clone())
            .unwrap_or_default(),
        last_error_age_seconds: m.last_error.as_ref().map(|e| age(e.1)).unwrap_or(0.0),
        resyncs: m.resyncs,
        keys: m.keys,
        rules_in: m.rules_in.iter().map(rule_source_pb).collect(),
        rules_revision: m.rules_revision,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto3_defaults_become_absent_values() {
        let s = spawn_request(pb::SpawnRequest {
            haco: "x".into(),
            ..Default::default()
        });
        assert_eq!(s.target, Target::default());
        assert_eq!(
            s.definition,
            DefinitionSource::Text(HacoText {
                text: "x".into(),
                file: "definition.haco".into(),
                base_dir: String::new(),
            })
        );
        let s = spawn_request(pb::SpawnRequest {
            definition: "web".into(),
            node: 3,
            ..Default::default()
        });
        assert_eq!(s.definition, DefinitionSource::Registered("web".into()));
        assert_eq!(s.target.node, Some(3));
        assert_eq!(join_request(pb::JoinRequest::default()).id, None);
        let r = rule_request(pb::ApplyRuleRequest::default());
        assert_eq!((r.name, r.file.as_str()), (None, "rule.watch"));
    }

    #[test]
    fn every_report_survives_the_wire() {
        let reports = [
            Observed::Starting,
            Observed::Pulling { done: 1, total: 2 },
            Observed::PullFailed {
                reason: "gone".into(),
            },
            Observed::Running { pid: 7 },
            Observed::Checked {
                pid: 7,
                health: Health::Starting,
            },
            Observed::Checked {
                pid: 7,
                health: Health::Healthy,
            },
            Observed::Checked {
                pid: 7,
                health: Health::Unhealthy,
            },
            Observed::Restarting {
                attempt: 2,
                code: Some(3),
                reason: None,
            },
            Observed::Restarting {
                attempt: 1,
                code: Some(0),
                reason: Some("unhealthy: tcp 80".into()),
            },
            Observed::Restarting {
                attempt: 1,
                code: None,
                reason: None,
            },
            Observed::Exited {
                code: Some(137),
                oom_killed: true,
                error: Some("unhealthy: tcp 80".into()),
            },
            Observed::Exited {
                code: Some(0),
                oom_killed: false,
                error: None,
            },
            Observed::Exited {
                code: None,
                oom_killed: false,
                error: Some("no root".into()),
            },
        ];
        for o in reports {
            let wire = report_pb(4, "c-1", &o);
            assert_eq!(observed_from_report(&wire), Some(o.clone()), "{wire:?}");
        }
    }
}
