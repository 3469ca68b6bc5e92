//! Volume and secret endpoints: create, list, remove; a secret's value goes in once
//! and never comes out (`Secret` has no value field).

use crate::api::pb::*;
use crate::cluster::state::{SecretRecord, StorageUsers, VolumeRecord};
use crate::supervisor::error::OpResult;
use crate::supervisor::leader::storage as ops;
use crate::supervisor::requests::VolumeRequest;
use crate::supervisor::shared::Supervisor;

fn volume_pb(v: &VolumeRecord, users: &mut StorageUsers) -> Volume {
    Volume {
        name: v.name.clone(),
        node_id: v.node,
        kind: v.kind.name().into(),
        size: v.size.unwrap_or(0),
        used_by: users.volumes.remove(&v.name).unwrap_or_default(),
        created_index: v.created_index,
    }
}

fn secret_pb(s: &SecretRecord, users: &mut StorageUsers, rolled: ops::Rolled) -> Secret {
    Secret {
        name: s.name.clone(),
        version: s.version,
        size: s.size,
        used_by: users.secrets.remove(&s.name).unwrap_or_default(),
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
    Ok(volume_pb(&v, &mut core.state().storage_users()))
}

pub(super) fn list_volumes(core: &Supervisor) -> ListVolumesReply {
    let state = core.state();
    let mut users = state.storage_users();
    ListVolumesReply {
        volumes: (state.volumes().values())
            .map(|v| volume_pb(v, &mut users))
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
    Ok(secret_pb(&s, &mut core.state().storage_users(), rolled))
}

pub(super) fn list_secrets(core: &Supervisor) -> ListSecretsReply {
    let state = core.state();
    let mut users = state.storage_users();
    ListSecretsReply {
        secrets: (state.secrets().values())
            .map(|s| secret_pb(s, &mut users, ops::Rolled::default()))
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
