//! Volume actions: create, describe, update, delete, attach, detach. Each checks the request,
//! decides the non-deterministic parts (UUID, time, storage host, export name) and proposes one
//! command; the rules that must survive races (one writer, quotas, ownership) are applied in
//! `state::volumes`.

use std::time::Duration;

use stratus_common::volumes::{
    is_uuid, validate_tag, CreateVolume, UpdateVolume, Volume, VolumeState, VolumeType,
};

use super::{now_ms, proposed, uuid_v4, Caller, Cloud, CloudError};
use crate::state::{volume_view, Command, Quota, VolumeRecord};

/// The site's volume settings (`[volumes]` in the controller's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeSettings {
    pub quota: Quota,
    /// Largest single volume, GiB.
    pub max_size_gib: u64,
    /// An attachment detaching for this long shows as `stuck` and may be forced off.
    pub detach_timeout: Duration,
}

impl Default for VolumeSettings {
    fn default() -> Self {
        Self {
            quota: Quota {
                max_volumes: 20,
                max_gib: 200,
            },
            max_size_gib: 100,
            detach_timeout: Duration::from_secs(60),
        }
    }
}

/// A random export name: 128 bits, so it cannot be guessed.
fn export_name() -> String {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    format!("sl-{}", stratus_common::hex::encode(bytes))
}

fn check_uuid(field: &str, id: &str) -> Result<(), CloudError> {
    if is_uuid(id) {
        Ok(())
    } else {
        Err(CloudError::BadRequest(format!(
            "{field}: {id:?} is not a disk UUID"
        )))
    }
}

impl Cloud {
    fn stuck_after_ms(&self) -> u64 {
        self.volumes.detach_timeout.as_millis() as u64
    }

    /// `(volume UUID, export name)` pairs for the disks of a new instance, checked for shape.
    pub(super) fn launch_volumes(
        &self,
        disks: &[String],
    ) -> Result<Vec<(String, String)>, CloudError> {
        disks
            .iter()
            .map(|id| check_uuid("persistent_disks", id).map(|()| (id.clone(), export_name())))
            .collect()
    }

    /// The storage host of the first of `disks`, to place an instance next to its data.
    pub(super) fn storage_host_of(&self, disks: &[(String, String)]) -> Option<String> {
        let first = disks.first()?;
        self.raft
            .read(|s| s.volumes.get(&first.0).map(|v| v.host.clone()))
    }

    pub async fn create_volume(
        &self,
        caller: &Caller,
        request: CreateVolume,
    ) -> Result<Volume, CloudError> {
        if request.size == 0 || request.size > self.volumes.max_size_gib {
            return Err(CloudError::BadRequest(format!(
                "size: must be 1 to {} GiB, not {}",
                self.volumes.max_size_gib, request.size
            )));
        }
        let tag = request.tag.unwrap_or_default();
        validate_tag(&tag).map_err(CloudError::BadRequest)?;
        // The storage host with the most room among those up.
        let up = self.hosts_up();
        let host = self
            .raft
            .read(|s| {
                s.hosts
                    .values()
                    .filter(|h| h.volume_pool_gib.is_some() && up.contains(&h.name))
                    .map(|h| (s.pool_free_gib(&h.name), std::cmp::Reverse(h.name.clone())))
                    .max()
            })
            .filter(|(free, _)| *free >= request.size)
            .map(|(_, std::cmp::Reverse(name))| name)
            .ok_or_else(|| {
                CloudError::Conflict(format!(
                    "no storage host has {} GiB free for a new disk",
                    request.size
                ))
            })?;
        let id = uuid_v4();
        let record = VolumeRecord {
            id: id.clone(),
            owner: caller.name.clone(),
            tag,
            size_gib: request.size,
            public: request.public,
            volume_type: request.volume_type.unwrap_or(VolumeType::DataRw),
            host: host.clone(),
            state: VolumeState::Creating,
            reason: None,
            created_ms: now_ms(),
            attachments: Vec::new(),
        };
        proposed(
            self.raft
                .propose(Command::CreateVolume {
                    record: Box::new(record),
                    quota: self.volumes.quota,
                })
                .await,
        )?;
        tracing::info!(volume = %id, owner = %caller.name, %host, size_gib = request.size, "volume created");
        // The storage host makes a sparse file: that takes a moment. Answer once it is ready,
        // or with the volume still `creating` if the host is slow.
        let mut applied = self.raft.applied();
        let ready = async {
            loop {
                let state = self.raft.read(|s| s.volumes.get(&id).map(|v| v.state));
                if state != Some(VolumeState::Creating) {
                    return;
                }
                if applied.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), ready).await;
        self.get_volume(caller, &id)
    }

    /// The caller's volumes and everyone's public ones (an administrator sees all).
    pub fn list_volumes(&self, caller: &Caller) -> Vec<Volume> {
        let now = now_ms();
        self.raft.read(|s| {
            let mut volumes: Vec<&VolumeRecord> = s
                .volumes
                .values()
                .filter(|v| v.visible_to(&caller.name, caller.admin))
                .collect();
            volumes.sort_by_key(|v| (v.created_ms, v.id.clone()));
            volumes
                .into_iter()
                .map(|v| volume_view(v, now, self.stuck_after_ms()))
                .collect()
        })
    }

    /// One volume; another user's private volume is "not found".
    pub fn get_volume(&self, caller: &Caller, id: &str) -> Result<Volume, CloudError> {
        let now = now_ms();
        self.raft
            .read(|s| {
                s.volumes
                    .get(id)
                    .filter(|v| v.visible_to(&caller.name, caller.admin))
                    .map(|v| volume_view(v, now, self.stuck_after_ms()))
            })
            .ok_or_else(|| CloudError::NotFound(format!("disk {id} not found")))
    }

    pub async fn update_volume(
        &self,
        caller: &Caller,
        id: &str,
        update: UpdateVolume,
    ) -> Result<Volume, CloudError> {
        check_uuid("id", id)?;
        if let Some(tag) = &update.tag {
            validate_tag(tag).map_err(CloudError::BadRequest)?;
        }
        proposed(
            self.raft
                .propose(Command::UpdateVolume {
                    id: id.to_owned(),
                    caller: caller.name.clone(),
                    admin: caller.admin,
                    update,
                })
                .await,
        )?;
        self.get_volume(caller, id)
    }

    /// Deletes a volume (its owner or an administrator); the storage host removes the file.
    pub async fn delete_volume(&self, caller: &Caller, id: &str) -> Result<(), CloudError> {
        check_uuid("id", id)?;
        proposed(
            self.raft
                .propose(Command::DeleteVolume {
                    id: id.to_owned(),
                    caller: caller.name.clone(),
                    admin: caller.admin,
                })
                .await,
        )?;
        tracing::info!(volume = %id, by = %caller.name, "volume deletion asked");
        Ok(())
    }

    /// Hot-plugs a volume into a Running instance; the attachment starts `attaching`.
    pub async fn attach_volume(
        &self,
        caller: &Caller,
        instance: u64,
        volume: &str,
    ) -> Result<Volume, CloudError> {
        check_uuid("volume", volume)?;
        self.get_instance(caller, instance)?;
        proposed(
            self.raft
                .propose(Command::AttachVolume {
                    volume: volume.to_owned(),
                    instance,
                    caller: caller.name.clone(),
                    admin: caller.admin,
                    export: export_name(),
                    at_ms: now_ms(),
                })
                .await,
        )?;
        tracing::info!(%volume, instance, by = %caller.name, "volume attach asked");
        self.get_volume(caller, volume)
    }

    /// Asks the guest to release a volume; `force` frees an attachment that is stuck.
    pub async fn detach_volume(
        &self,
        caller: &Caller,
        instance: u64,
        volume: &str,
        force: bool,
    ) -> Result<Volume, CloudError> {
        check_uuid("volume", volume)?;
        self.get_instance(caller, instance)?;
        proposed(
            self.raft
                .propose(Command::DetachVolume {
                    volume: volume.to_owned(),
                    instance,
                    caller: caller.name.clone(),
                    admin: caller.admin,
                    force,
                    stuck_after_ms: self.stuck_after_ms(),
                    at_ms: now_ms(),
                })
                .await,
        )?;
        if force {
            tracing::warn!(%volume, instance, by = %caller.name, "stuck attachment forced off");
        } else {
            tracing::info!(%volume, instance, by = %caller.name, "volume detach asked");
        }
        self.get_volume(caller, volume)
    }
}
