//! The leader's operations on the cluster's storage: volumes created and removed, and
//! secrets sealed with the cluster key before they are proposed (the value never
//! reaches the log), a new value rolling the rules whose definitions read it and
//! replacing the containers `spawn` started that read it.

use crate::cluster::state::{
    Command, ContainerRecord, Definition, Response, RuleRecord, SecretRecord, VolumeKind,
    VolumeRecord,
};
use crate::spec::volumes::{reads_secret, MAX_SECRET_BYTES};
use crate::supervisor::definitions;
use crate::supervisor::error::{OpError, OpResult};
use crate::supervisor::requests::VolumeRequest;
use crate::supervisor::shared::Supervisor;
use std::collections::BTreeMap;

/// The smallest host volume of its own size: an ext4 file system with room to use.
const MIN_HOST_SIZE: u64 = 8 << 20;

/// Records a volume on its node (made there when a container first mounts it).
pub async fn create_volume(core: &Supervisor, r: VolumeRequest) -> OpResult<VolumeRecord> {
    crate::spec::names::check("volume", &r.name).map_err(|e| OpError::Invalid(e.to_string()))?;
    match (r.tmpfs, r.size) {
        (true, None) => {
            return Err(OpError::Invalid(
                "a tmpfs volume needs a size (--size 64M)".into(),
            ))
        }
        (false, Some(s)) if s < MIN_HOST_SIZE => {
            return Err(OpError::Invalid(format!(
            "a host volume of its own size takes at least 8M (an ext4 file system), not {s} bytes"
        )))
        }
        (true, Some(s)) if s < 4096 => {
            return Err(OpError::Invalid(format!("{s} bytes: too small a tmpfs")))
        }
        _ => {}
    }
    if !core.state().nodes().contains_key(&r.node) {
        return Err(OpError::Invalid(format!(
            "no node {} in the cluster",
            r.node
        )));
    }
    let volume = VolumeRecord {
        name: r.name.clone(),
        node: r.node,
        kind: if r.tmpfs {
            VolumeKind::Tmpfs
        } else {
            VolumeKind::Host
        },
        size: r.size,
        created_index: 0,
    };
    core.propose(Command::CreateVolume { volume }).await?;
    core.state()
        .volumes()
        .get(&r.name)
        .cloned()
        .ok_or_else(|| OpError::Internal("volume missing after commit".into()))
}

/// Forgets a volume (its node removes the data); refused while in use.
pub async fn remove_volume(core: &Supervisor, name: &str) -> OpResult<()> {
    if !core.state().volumes().contains_key(name) {
        return Err(OpError::NotFound(format!("no volume {name}")));
    }
    core.propose(Command::RemoveVolume { name: name.into() })
        .await
        .map(drop)
}

/// What a secret's new value set going.
#[derive(Debug, Default)]
pub struct Rolled {
    /// The rules applied again (a new version each, rolled out under its policy).
    pub rules: Vec<String>,
    /// The containers started by `spawn` alone that are replaced (stop-first, on their
    /// node) by one that reads the new value.
    pub containers: Vec<String>,
}

/// Seals and stores a secret's new value; returns its record and what it rolled.
pub async fn put_secret(
    core: &Supervisor,
    name: &str,
    value: &[u8],
) -> OpResult<(SecretRecord, Rolled)> {
    crate::spec::names::check("secret", name).map_err(|e| OpError::Invalid(e.to_string()))?;
    if value.len() > MAX_SECRET_BYTES {
        return Err(OpError::Invalid(format!(
            "secret {name} is {} bytes; the most is {MAX_SECRET_BYTES}",
            value.len()
        )));
    }
    let no_key = crate::supervisor::secrets::SecretError::NoKey;
    let key = core
        .secrets_key
        .as_ref()
        .ok_or_else(|| OpError::Refused(format!("node {} (the leader): {no_key}", core.id)))?;
    let secret = key
        .seal(name, value)
        .map_err(|e| OpError::Internal(e.to_string()))?;
    let (_, resp) = core.propose(Command::PutSecret { secret }).await?;
    if !matches!(resp, Response::Version(_)) {
        return Err(OpError::Internal(format!("put secret returned {resp:?}")));
    }
    let mut rolled = Rolled::default();
    let rules: Vec<RuleRecord> = core.state().rules().values().cloned().collect();
    for rule in rules {
        let state = core.state();
        let reads = rule.definitions.values().any(|d| {
            state
                .definitions()
                .get(d)
                .is_some_and(|d| reads_secret(&d.spec, name))
        });
        if !reads {
            continue;
        }
        let rule_name = rule.name.clone();
        // The value is stored: a rule that cannot be rolled is logged, not an error.
        match reapply_rule(core, rule).await {
            Ok(true) => rolled.rules.push(rule_name),
            Ok(false) => {}
            Err(e) => tracing::warn!("rule {rule_name}: not rolled for secret {name}: {e}"),
        }
    }
    rolled.containers = replace_spawned(core, name).await;
    let record = core
        .state()
        .secrets()
        .get(name)
        .cloned()
        .ok_or_else(|| OpError::Internal("secret missing after commit".into()))?;
    Ok((record, rolled))
}

/// Forgets a secret; refused while a container reads it.
pub async fn remove_secret(core: &Supervisor, name: &str) -> OpResult<()> {
    if !core.state().secrets().contains_key(name) {
        return Err(OpError::NotFound(format!("no secret {name}")));
    }
    core.propose(Command::RemoveSecret { name: name.into() })
        .await
        .map(drop)
}

/// Replaces the running containers started by `spawn` alone that read the secret, each
/// stop-first on its node (`Command::Replace`, as a rollout step) by one of its
/// definition as it resolves now. Their ids.
async fn replace_spawned(core: &Supervisor, secret: &str) -> Vec<String> {
    let state = core.state();
    let users: Vec<ContainerRecord> = state
        .containers()
        .values()
        .filter(|c| c.rule.is_none() && c.is_active())
        .filter(|c| {
            state
                .definition_spec(c)
                .is_some_and(|s| reads_secret(s, secret))
        })
        .cloned()
        .collect();
    let mut replaced = Vec::new();
    for c in users {
        let Some(d) = state.definitions().get(&c.digest) else {
            continue;
        };
        match replace_one(core, &c, d).await {
            Ok(true) => replaced.push(c.id.clone()),
            Ok(false) => {}
            Err(e) => tracing::warn!("container {}: not replaced for secret {secret}: {e}", c.id),
        }
    }
    replaced
}

/// One container replaced by one of its definition as it resolves now (whether its
/// definition changed).
async fn replace_one(core: &Supervisor, c: &ContainerRecord, d: &Definition) -> OpResult<bool> {
    let file = format!("{}.haco", d.name);
    let now = core.state();
    let new = definitions::resolve(&now, d.text.clone(), file, d.base_dir.clone()).await?;
    if new.digest == c.digest {
        return Ok(false);
    }
    if !now.definitions().contains_key(&new.digest) {
        // Registered by a spawn of no container (Replace takes a registered one).
        core.propose(Command::Spawn {
            digest: new.digest.clone(),
            definition: Some(new.clone()),
            nodes: Vec::new(),
            rule: None,
        })
        .await?;
    }
    core.propose(Command::Replace {
        old: c.id.clone(),
        digest: new.digest,
        node: c.node,
    })
    .await?;
    Ok(true)
}

/// Applies a rule again as it stands, its definitions resolved afresh: a secret they
/// read has a new version, so they are new definitions and the rule a new version,
/// rolled out under its update policy. Whether it made a new version.
async fn reapply_rule(core: &Supervisor, rule: RuleRecord) -> OpResult<bool> {
    let state = core.state();
    let mut definitions = Vec::new();
    let mut names = BTreeMap::new();
    for (path, digest) in &rule.definitions {
        let Some(d) = state.definitions().get(digest) else {
            return Ok(false);
        };
        let d =
            definitions::resolve(&state, d.text.clone(), path.clone(), d.base_dir.clone()).await?;
        names.insert(path.clone(), d.digest.clone());
        definitions.push(d);
    }
    if names == rule.definitions {
        return Ok(false);
    }
    let rule = RuleRecord {
        definitions: names,
        ..rule
    };
    core.propose(Command::ApplyRule {
        rule,
        definitions,
        applied_at_ms: crate::supervisor::shared::wall_ms(),
    })
    .await?;
    Ok(true)
}
