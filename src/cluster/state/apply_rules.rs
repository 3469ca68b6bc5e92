//! `apply` of the rule commands: a rule put (a new version when it changed), removed,
//! evaluated; a version's rollout ended (stable, or failed and maybe reverted), rolled
//! back to, promoted. The versions themselves are `history.rs`.

use super::apply::{refused, Events};
use super::{
    ClusterState, Definition, Desired, EventKind, Response, RuleHistory, RuleRecord, RuleVersion,
    VersionStatus,
};
use std::borrow::Cow;

impl ClusterState {
    pub(super) fn put_rule(
        &mut self,
        ev: &mut Events,
        rule: &RuleRecord,
        definitions: &[Definition],
        applied_at_ms: u64,
    ) -> Response {
        for d in definitions {
            if !self.definitions.contains_key(&d.digest) {
                self.put_definition(d.clone(), ev.index);
            }
        }
        let mut history = self
            .rule_history(&rule.name)
            .map(Cow::into_owned)
            .unwrap_or_default();
        let version = RuleVersion {
            version: 0,
            digest: rule.digest.clone(),
            text: rule.text.clone(),
            file: rule.file.clone(),
            definitions: rule.definitions.clone(),
            applied_index: ev.index,
            applied_at_ms,
            status: VersionStatus::Deploying,
            rollback_of: None,
            promoted: false,
        };
        let n = match history.versions.last_mut() {
            // Unchanged: a failed version is tried again, another stays as it is.
            Some(cur) if cur.same_content(&version) => {
                if matches!(cur.status, VersionStatus::Failed { .. }) {
                    cur.status = VersionStatus::Deploying;
                    cur.promoted = false;
                }
                cur.version
            }
            _ => history.push(version),
        };
        self.put_history(&rule.name, history);
        self.install_rule(ev, rule.clone(), n);
        Response::Version(n)
    }

    /// Makes `r` the rule's record (its evaluation counters afresh), version `n`.
    pub(super) fn install_rule(&mut self, ev: &mut Events, mut r: RuleRecord, n: u64) {
        r.last_evaluation_index = 0;
        r.last_error = None;
        r.evaluations = 0;
        ev.push(
            EventKind::RuleApplied,
            None,
            None,
            format!("{} version {n}", r.name),
        );
        self.put_rule_record(r);
    }

    pub(super) fn rollout_ended(
        &mut self,
        ev: &mut Events,
        rule: &str,
        version: u64,
        failure: &Option<String>,
        revert: bool,
        at_ms: u64,
    ) -> Response {
        let Some(mut history) = self.rule_history(rule).map(Cow::into_owned) else {
            return Response::Ok;
        };
        let Some(cur) = history.versions.last_mut() else {
            return Response::Ok;
        };
        if cur.version != version || cur.status != VersionStatus::Deploying {
            return Response::Ok;
        }
        let Some(reason) = failure else {
            cur.status = VersionStatus::Stable;
            ev.push(
                EventKind::RolloutStable,
                None,
                None,
                format!("{rule} version {version}"),
            );
            self.put_history(rule, history);
            return Response::Version(version);
        };
        cur.status = VersionStatus::Failed {
            reason: reason.clone(),
        };
        // Start-first replacements under way stop; the copies they replace are wanted
        // running again.
        let surging: Vec<String> = self
            .containers
            .values()
            .filter(|c| c.rule.as_deref() == Some(rule) && !c.observed.is_final())
            .filter_map(|c| match &c.desired {
                Desired::Retiring { by } => Some(by.clone()),
                _ => None,
            })
            .collect();
        for by in surging {
            self.stop(ev, &by);
        }
        let back = history
            .last_stable_before_current()
            .filter(|_| revert)
            .cloned();
        ev.push(
            EventKind::RolloutFailed,
            None,
            None,
            format!("{rule} version {version}: {reason}"),
        );
        match back {
            Some(target) => self.bring_back(ev, rule, history, &target, at_ms),
            None => {
                self.put_history(rule, history);
                Response::Version(version)
            }
        }
    }

    pub(super) fn rollback_rule(
        &mut self,
        ev: &mut Events,
        rule: &str,
        version: Option<u64>,
        at_ms: u64,
    ) -> Response {
        let Some(history) = self.rule_history(rule).map(Cow::into_owned) else {
            return refused(format!("no rule {rule}"));
        };
        let Some(cur) = history.current() else {
            return refused(format!("rule {rule} has no versions"));
        };
        let target = match version {
            Some(n) => history.get(n).ok_or_else(|| {
                let kept: Vec<String> =
                    history.versions.iter().map(|v| v.version.to_string()).collect();
                format!(
                    "rule {rule} has no version {n} (versions kept: {})",
                    kept.join(", ")
                )
            }),
            None => history.last_stable_before_current().ok_or_else(|| {
                format!(
                    "rule {rule}: no stable version before the current one (version {}) that differs from it; name the version to roll back to",
                    cur.version
                )
            }),
        };
        let target = match target {
            Ok(t) => t.clone(),
            Err(why) => return refused(why),
        };
        if target.same_content(cur) {
            return refused(format!(
                "rule {rule}: version {} is the same rule and definitions as the version it runs ({}); nothing to roll back",
                target.version, cur.version
            ));
        }
        if let Some(d) = target
            .definitions
            .values()
            .find(|d| !self.definitions.contains_key(*d))
        {
            return refused(format!(
                "rule {rule}: version {} names definition {d}, which the cluster no longer holds",
                target.version
            ));
        }
        self.bring_back(ev, rule, history, &target, at_ms)
    }

    pub(super) fn promote_rule(
        &mut self,
        ev: &mut Events,
        rule: &str,
        version: Option<u64>,
    ) -> Response {
        let Some(mut history) = self.rule_history(rule).map(Cow::into_owned) else {
            return refused(format!("no rule {rule}"));
        };
        let Some(cur) = history.versions.last_mut() else {
            return refused(format!("rule {rule} has no versions"));
        };
        if version.is_some_and(|v| v != cur.version) {
            return refused(format!(
                "rule {rule} runs version {}, not {}: only the current version's canaries can be promoted",
                cur.version,
                version.unwrap_or_default()
            ));
        }
        if cur.status != VersionStatus::Deploying {
            return refused(format!(
                "rule {rule}: version {} is {}, not deploying: nothing to promote",
                cur.version,
                cur.status.name()
            ));
        }
        if cur.promoted {
            return refused(format!(
                "rule {rule}: version {} is promoted already",
                cur.version
            ));
        }
        cur.promoted = true;
        let n = cur.version;
        ev.push(
            EventKind::RulePromoted,
            None,
            None,
            format!("{rule} version {n}"),
        );
        self.put_history(rule, history);
        Response::Version(n)
    }

    /// Makes `target`'s content the rule's new current version (a rollback).
    pub(super) fn bring_back(
        &mut self,
        ev: &mut Events,
        rule: &str,
        mut history: RuleHistory,
        target: &RuleVersion,
        at_ms: u64,
    ) -> Response {
        let Some(record) = self.rules.get(rule).cloned() else {
            return refused(format!("no rule {rule}"));
        };
        let n = history.push(RuleVersion {
            applied_index: ev.index,
            applied_at_ms: at_ms,
            status: VersionStatus::Deploying,
            rollback_of: Some(target.version),
            promoted: false,
            ..target.clone()
        });
        self.put_history(rule, history);
        ev.push(
            EventKind::RuleRolledBack,
            None,
            None,
            format!("{rule} version {n} brings back version {}", target.version),
        );
        let r = RuleRecord {
            digest: target.digest.clone(),
            text: target.text.clone(),
            file: target.file.clone(),
            definitions: target.definitions.clone(),
            ..record
        };
        self.install_rule(ev, r, n);
        Response::Version(n)
    }

    pub(super) fn remove_rule(&mut self, ev: &mut Events, name: &str) -> Response {
        if !self.drop_rule(name) {
            return refused(format!("no rule {name}"));
        }
        if self.history.remove(name).is_some() {
            self.touched.history.insert(name.to_string());
        }
        ev.push(EventKind::RuleRemoved, None, None, name.to_string());
        Response::Ok
    }

    pub(super) fn rule_evaluated(
        &mut self,
        ev: &mut Events,
        name: &str,
        error: &Option<String>,
    ) -> Response {
        let index = ev.index;
        let Some(r) = self.rules.get(name) else {
            return Response::Ok;
        };
        let mut r = r.clone();
        r.last_evaluation_index = index;
        r.evaluations += 1;
        match error {
            Some(e) => ev.push(EventKind::RuleFailed, None, None, format!("{name}: {e}")),
            None => ev.push(EventKind::RuleEvaluated, None, None, name.to_string()),
        }
        r.last_error = error.clone();
        self.put_rule_record(r);
        Response::Ok
    }
}
