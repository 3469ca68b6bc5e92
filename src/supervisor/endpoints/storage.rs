//! Volume and secret endpoints: create, list, remove; a secret's value goes in once
//! and never comes out (`Secret` has no value field).

use crate::api::pb::*;
use crate::cluster::state::{ClusterState, SecretRecord, VolumeRecord};
use crate::spec::volumes::{reads_secret, volume_names};
use crate::supervisor::error::OpResult;
use crate::supervisor::leader::storage as ops;
use crate::supervisor::requests::VolumeRequest;
use crate::supervisor::shared::Supervisor;

fn volume_pb(v: &VolumeRecord, state: &ClusterState) -> Volume {
    Volume {
        name: v.name.clone(),
        node_id: v.node,
        kind: v.kind.name().into(),
        size: v.size.unwrap_or(0),
        used_by: state.users_of(|s| volume_names(s).any(|n| n == v.name)),
        created_index: v.created_index,
    }
}

fn secret_pb(s: &SecretRecord, state: &ClusterState, rolled: ops::Rolled) -> Secret {
    Secret {
        name: s.name.clone(),
        version: s.version,
        size: s.size,
        used_by: state.users_of(|spec| reads_secret(spec, &s.name)),
        key_id: s.key_id.clone(),
        rolled: rolled.rules,
        replaced: rolled.containers,
    }
}

pub(super) async fn create_volume(core: &Supervisor, r: CreateVolumeRequest) -> OpResult<Volume> {
    let v = ops::create_volume(
        core,
        VolumeRequest {
            name: r.name,
            node: r.node_id,
            tmpfs: r.tmpfs,
            size: (r.size != 0).then_some(r.size),
        },
    )
    .await?;
    Ok(volume_pb(&v, &core.state()))
}

pub(super) fn list_volumes(core: &Supervisor) -> ListVolumesReply {
    let state = core.state();
    ListVolumesReply {
        volumes: state
            .volumes()
            .values()
            .map(|v| volume_pb(v, &state))
            .collect(),
    }
}

pub(super) async fn remove_volume(
    core: &Supervisor,
    r: RemoveVolumeRequest,
) -> OpResult<RemoveVolumeReply> {
    ops::remove_volume(core, &r.name).await?;
    Ok(RemoveVolumeReply {})
}

pub(super) async fn put_secret(core: &Supervisor, r: PutSecretRequest) -> OpResult<Secret> {
    let (s, rolled) = ops::put_secret(core, &r.name, &r.value).await?;
    Ok(secret_pb(&s, &core.state(), rolled))
}

pub(super) fn list_secrets(core: &Supervisor) -> ListSecretsReply {
    let state = core.state();
    ListSecretsReply {
        secrets: state
            .secrets()
            .values()
            .map(|s| secret_pb(s, &state, ops::Rolled::default()))
            .collect(),
    }
}

pub(super) async fn remove_secret(
    core: &Supervisor,
    r: RemoveSecretRequest,
) -> OpResult<RemoveSecretReply> {
    ops::remove_secret(core, &r.name).await?;
    Ok(RemoveSecretReply {})
}
