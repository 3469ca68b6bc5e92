//! Every version of every rule (`haconiwa watch history`, `watch rollback`): what the
//! rule and its definitions were, when it was applied, and how its rollout ended. Kept
//! in the replicated state so that a new leader knows which version failed (and does
//! not resume it) and which one is the last stable one (what `auto_revert` and
//! `rollback` bring back). Bounded: failed and superseded versions go first, the newest
//! stable one and the current one never.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Versions kept per rule.
pub const MAX_VERSIONS: usize = 10;

/// How a version's rollout went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionStatus {
    /// Its copies are being rolled out (or it is the current one and not yet settled).
    Deploying,
    /// All its copies were healthy for the rule's `min_healthy_time`.
    Stable,
    /// Its rollout failed; nothing more is replaced while the rule runs it.
    Failed {
        /// Why.
        reason: String,
    },
    /// Another version was applied before this one settled.
    Superseded,
}

impl VersionStatus {
    /// The name used in the API.
    pub fn name(&self) -> &'static str {
        match self {
            VersionStatus::Deploying => "deploying",
            VersionStatus::Stable => "stable",
            VersionStatus::Failed { .. } => "failed",
            VersionStatus::Superseded => "superseded",
        }
    }
}

/// One version of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleVersion {
    /// From 1, one more at each change.
    pub version: u64,
    /// SHA-256 of the rule's text.
    pub digest: String,
    /// The `.watch` text.
    pub text: String,
    /// Its file name.
    pub file: String,
    /// The `.haco` files it names → definition digests (kept while the version is).
    pub definitions: BTreeMap<String, String>,
    /// Log index it was applied at.
    pub applied_index: u64,
    /// Wall time it was applied at, ms since the epoch, as the proposer stamped it (0
    /// when unknown: entries written before versions were stamped).
    pub applied_at_ms: u64,
    /// How its rollout went.
    pub status: VersionStatus,
    /// The version it brings back, when it is a rollback (manual or `auto_revert`).
    pub rollback_of: Option<u64>,
    /// Its canaries were promoted (`watch promote`, `auto_promote`): the rest of its
    /// rollout goes on.
    pub promoted: bool,
}

impl RuleVersion {
    /// Whether two versions run the same rule and definitions (a rollback to it would
    /// change nothing).
    pub fn same_content(&self, o: &RuleVersion) -> bool {
        self.digest == o.digest && self.definitions == o.definitions
    }
}

/// A rule's versions, oldest first; the last one is the one the rule runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleHistory {
    /// The versions kept.
    pub versions: Vec<RuleVersion>,
}

impl RuleHistory {
    /// The version the rule runs.
    pub fn current(&self) -> Option<&RuleVersion> {
        self.versions.last()
    }

    /// A version by number.
    pub fn get(&self, version: u64) -> Option<&RuleVersion> {
        self.versions.iter().find(|v| v.version == version)
    }

    /// The newest stable version before the current one that differs from it (what a
    /// rollback without a version and `auto_revert` bring back).
    pub fn last_stable_before_current(&self) -> Option<&RuleVersion> {
        let (cur, before) = self.versions.split_last()?;
        before
            .iter()
            .rev()
            .find(|v| v.status == VersionStatus::Stable && !v.same_content(cur))
    }

    /// Adds `v` as the current version (numbered after the last one): the one it
    /// replaces, if still deploying, is superseded; the oldest go beyond
    /// [`MAX_VERSIONS`].
    pub fn push(&mut self, mut v: RuleVersion) -> u64 {
        v.version = self.versions.last().map_or(1, |l| l.version + 1);
        if let Some(prev) = self.versions.last_mut() {
            if prev.status == VersionStatus::Deploying {
                prev.status = VersionStatus::Superseded;
            }
        }
        let n = v.version;
        self.versions.push(v);
        self.trim();
        n
    }

    /// Drops versions beyond the bound: failed and superseded ones first, then the
    /// oldest stable ones; never the current one or the newest stable one.
    fn trim(&mut self) {
        while self.versions.len() > MAX_VERSIONS {
            let last = self.versions.len() - 1;
            let newest_stable = self.versions[..last]
                .iter()
                .rposition(|v| v.status == VersionStatus::Stable);
            let keep = |i: usize| i == last || Some(i) == newest_stable;
            let unstable =
                (0..last).find(|&i| !keep(i) && self.versions[i].status != VersionStatus::Stable);
            match unstable.or_else(|| (0..last).find(|&i| !keep(i))) {
                Some(i) => {
                    self.versions.remove(i);
                }
                None => break,
            }
        }
    }

    /// Every definition digest a kept version names (kept in the state while named).
    pub fn definition_digests(&self) -> impl Iterator<Item = &String> + '_ {
        self.versions.iter().flat_map(|v| v.definitions.values())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(digest: &str, status: VersionStatus) -> RuleVersion {
        RuleVersion {
            version: 0,
            digest: digest.into(),
            text: String::new(),
            file: "r.watch".into(),
            definitions: BTreeMap::new(),
            applied_index: 0,
            applied_at_ms: 0,
            status,
            rollback_of: None,
            promoted: false,
        }
    }

    #[test]
    fn versions_are_numbered_and_a_deploying_one_is_superseded() {
        let mut h = RuleHistory::default();
        assert_eq!(h.push(version("a", VersionStatus::Deploying)), 1);
        assert_eq!(h.push(version("b", VersionStatus::Deploying)), 2);
        assert_eq!(h.versions[0].status, VersionStatus::Superseded);
        assert_eq!(h.current().map(|v| v.version), Some(2));
        assert!(h.last_stable_before_current().is_none());
        // One the same as the current one is passed over.
        h.versions[0].status = VersionStatus::Stable;
        h.push(version("a", VersionStatus::Stable));
        h.push(version("a", VersionStatus::Deploying));
        assert_eq!(h.last_stable_before_current().map(|v| v.version), None);
        h.push(version("c", VersionStatus::Deploying));
        assert_eq!(h.last_stable_before_current().map(|v| v.version), Some(3));
    }

    #[test]
    fn the_bound_drops_failed_ones_first_and_keeps_the_newest_stable_and_the_current() {
        let mut h = RuleHistory::default();
        h.push(version("s1", VersionStatus::Stable));
        h.push(version("s2", VersionStatus::Stable));
        for i in 0..MAX_VERSIONS {
            let failed = VersionStatus::Failed {
                reason: format!("f{i}"),
            };
            h.push(version(&format!("f{i}"), failed));
        }
        assert_eq!(h.versions.len(), MAX_VERSIONS);
        // Both stable ones outlived the failed ones; the current (last failed) is kept.
        assert_eq!(h.versions[0].digest, "s1");
        assert_eq!(h.versions[1].digest, "s2");
        assert_eq!(h.current().map(|v| v.digest.as_str()), Some("f9"));
        assert_eq!(
            h.last_stable_before_current().map(|v| v.digest.as_str()),
            Some("s2")
        );
        // Only stable ones: the oldest go, the newest stable stays.
        for i in 0..MAX_VERSIONS {
            h.push(version(&format!("t{i}"), VersionStatus::Stable));
        }
        assert_eq!(h.versions.len(), MAX_VERSIONS);
        assert_eq!(h.versions[0].digest, "t0");
        assert_eq!(h.current().map(|v| v.version), Some(22));
    }
}
