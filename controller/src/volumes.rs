//! Volume actions: create, describe, update, delete, attach, detach. Each checks the request,
//! decides the non-deterministic parts (UUID, time, storage host, export name) and proposes one
//! command; the rules that must survive races (one writer, quotas, ownership) are applied in
//! `state::volumes`.

use std::time::Duration;

use stratus_common::volumes::{
    is_uuid, validate_tag, CreateVolume, UpdateVolume, Volume, VolumeState, VolumeType,
};

use crate::decide::{export_name, now_ms, uuid};
use crate::failure::{impl_failure, InputError};
use crate::replica::{Consistency, Replica, ReplicaError};
use crate::state::{volume_view, Command, Outcome, Quota, Rejection, State, VolumeRecord};
use crate::users::Caller;

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

#[derive(Debug, thiserror::Error)]
pub enum VolumeActionError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error("disk {0} not found")]
    NotFound(String),
    #[error("instance {0} not found")]
    InstanceNotFound(u64),
    #[error("no storage host has {0} GiB free for a new disk")]
    NoStorage(u64),
}

impl_failure!(VolumeActionError {
    delegate: [Input, Rejected, Replica],
    own: [
        VolumeActionError::NotFound(_) | VolumeActionError::InstanceNotFound(_) => Kind::NotFound,
        VolumeActionError::NoStorage(_) => Kind::Conflict,
    ],
});

fn check_uuid(field: &'static str, id: &str) -> Result<(), InputError> {
    if is_uuid(id) {
        Ok(())
    } else {
        Err(InputError::new(field, format!("{id:?} is not a disk UUID")))
    }
}

pub struct Volumes {
    replica: Replica,
    settings: VolumeSettings,
}

impl Volumes {
    pub fn new(replica: Replica, settings: VolumeSettings) -> Self {
        Self { replica, settings }
    }

    fn stuck_after_ms(&self) -> u64 {
        self.settings.detach_timeout.as_millis() as u64
    }

    /// `(volume UUID, export name)` pairs for the disks of a new instance, checked for shape.
    pub fn launch_volumes(&self, disks: &[String]) -> Result<Vec<(String, String)>, InputError> {
        disks
            .iter()
            .map(|id| check_uuid("persistent_disks", id).map(|()| (id.clone(), export_name())))
            .collect()
    }

    /// Creates a volume. With an idempotency key (checked by the API), a creation the same
    /// owner already made with that key (within a day) is answered again, not made twice.
    pub async fn create(
        &self,
        caller: &Caller,
        request: CreateVolume,
        idempotency_key: Option<String>,
    ) -> Result<Volume, VolumeActionError> {
        if let Some(key) = &idempotency_key {
            crate::instances::check_idempotency_key(key)?;
            let made = self
                .replica
                .read(caller.reads(), |s| {
                    s.volume_keys.get(&caller.name, key).cloned()
                })
                .await?;
            if let Some(id) = made {
                tracing::info!(volume = %id, owner = %caller.name, "creation repeated with its idempotency key: answered again");
                return self.get(caller, &id).await;
            }
        }
        if request.size == 0 || request.size > self.settings.max_size_gib {
            return Err(InputError::new(
                "size",
                format!(
                    "must be 1 to {} GiB, not {}",
                    self.settings.max_size_gib, request.size
                ),
            )
            .into());
        }
        let tag = request.tag.unwrap_or_default();
        validate_tag(&tag).map_err(|e| InputError::named("tag", e.to_string()))?;
        // The storage host with the most room among those up, in service and for storage.
        let host = self
            .replica
            .read(caller.reads(), |s| {
                s.hosts
                    .values()
                    .filter(|h| {
                        h.volume_pool_gib.is_some()
                            && s.host_life(&h.name).schedulable()
                            && s.host_profile(&h.name).storage
                    })
                    .map(|h| (s.pool_free_gib(&h.name), std::cmp::Reverse(h.name.clone())))
                    .max()
            })
            .await?
            .filter(|(free, _)| *free >= request.size)
            .map(|(_, std::cmp::Reverse(name))| name)
            .ok_or(VolumeActionError::NoStorage(request.size))?;
        let id = uuid();
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
        let outcome = self
            .replica
            .propose(caller.by(Command::CreateVolume {
                record: Box::new(record),
                quota: self.settings.quota,
                idempotency_key,
            }))
            .await??;
        // The volume made: this one, or the one a concurrent retry with the same key made.
        let id = match outcome {
            Outcome::VolumeCreated(made) => made,
            _ => id,
        };
        tracing::info!(volume = %id, owner = %caller.name, %host, size_gib = request.size, "volume created");
        // The storage host makes a sparse file: that takes a moment. Answer once it is ready,
        // or with the volume still `creating` if the host is slow.
        let mut applied = self.replica.subscribe();
        let ready = async {
            loop {
                let state = self
                    .replica
                    .read(Consistency::Stale, |s| s.volumes.get(&id).map(|v| v.state))
                    .await;
                if !matches!(state, Ok(Some(VolumeState::Creating))) {
                    return;
                }
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = applied.recv().await
                {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), ready).await;
        self.get(caller, &id).await
    }

    fn view_of(&self, state: &State, caller: &Caller, id: &str, now: u64) -> Option<Volume> {
        state
            .volumes
            .get(id)
            .filter(|v| v.visible_to(&caller.name, caller.admin))
            .map(|v| volume_view(state, v, now, self.stuck_after_ms()))
    }

    /// The caller's volumes and everyone's public ones (an administrator sees all).
    pub async fn list(&self, caller: &Caller) -> Result<Vec<Volume>, VolumeActionError> {
        let now = now_ms();
        Ok(self
            .replica
            .read(caller.reads(), |s| {
                let mut volumes: Vec<&VolumeRecord> = s
                    .volumes
                    .values()
                    .filter(|v| v.visible_to(&caller.name, caller.admin))
                    .collect();
                volumes.sort_by_key(|v| (v.created_ms, v.id.clone()));
                volumes
                    .into_iter()
                    .map(|v| volume_view(s, v, now, self.stuck_after_ms()))
                    .collect()
            })
            .await?)
    }

    /// One volume; another user's private volume is "not found".
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<Volume, VolumeActionError> {
        let now = now_ms();
        self.replica
            .read(caller.reads(), |s| self.view_of(s, caller, id, now))
            .await?
            .ok_or_else(|| VolumeActionError::NotFound(id.to_owned()))
    }

    pub async fn update(
        &self,
        caller: &Caller,
        id: &str,
        update: UpdateVolume,
    ) -> Result<Volume, VolumeActionError> {
        check_uuid("id", id)?;
        if let Some(tag) = &update.tag {
            validate_tag(tag).map_err(|e| InputError::named("tag", e.to_string()))?;
        }
        self.replica
            .propose(caller.by(Command::UpdateVolume {
                id: id.to_owned(),
                caller: caller.name.clone(),
                admin: caller.admin,
                update,
            }))
            .await??;
        self.get(caller, id).await
    }

    /// Deletes a volume (its owner or an administrator); the storage host removes the file.
    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<(), VolumeActionError> {
        check_uuid("id", id)?;
        self.replica
            .propose(caller.by(Command::DeleteVolume {
                id: id.to_owned(),
                caller: caller.name.clone(),
                admin: caller.admin,
            }))
            .await??;
        tracing::info!(volume = %id, by = %caller.name, "volume deletion asked");
        Ok(())
    }

    /// Fails unless the caller sees instance `id` (another user's instance is not found).
    async fn require_instance(&self, caller: &Caller, id: u64) -> Result<(), VolumeActionError> {
        let visible = self
            .replica
            .read(caller.reads(), |s| {
                s.instances
                    .get(&id)
                    .is_some_and(|i| caller.admin || i.owner == caller.name)
            })
            .await?;
        visible
            .then_some(())
            .ok_or(VolumeActionError::InstanceNotFound(id))
    }

    /// Hot-plugs a volume into a Running instance; the attachment starts `attaching`.
    pub async fn attach(
        &self,
        caller: &Caller,
        instance: u64,
        volume: &str,
    ) -> Result<Volume, VolumeActionError> {
        check_uuid("volume", volume)?;
        self.require_instance(caller, instance).await?;
        self.replica
            .propose(caller.by(Command::AttachVolume {
                volume: volume.to_owned(),
                instance,
                caller: caller.name.clone(),
                admin: caller.admin,
                export: export_name(),
                at_ms: now_ms(),
            }))
            .await??;
        tracing::info!(%volume, instance, by = %caller.name, "volume attach asked");
        self.get(caller, volume).await
    }

    /// Asks the guest to release a volume; `force` frees an attachment that is stuck.
    pub async fn detach(
        &self,
        caller: &Caller,
        instance: u64,
        volume: &str,
        force: bool,
    ) -> Result<Volume, VolumeActionError> {
        check_uuid("volume", volume)?;
        self.require_instance(caller, instance).await?;
        self.replica
            .propose(caller.by(Command::DetachVolume {
                volume: volume.to_owned(),
                instance,
                caller: caller.name.clone(),
                admin: caller.admin,
                force,
                stuck_after_ms: self.stuck_after_ms(),
                at_ms: now_ms(),
            }))
            .await??;
        if force {
            tracing::warn!(%volume, instance, by = %caller.name, "stuck attachment forced off");
        } else {
            tracing::info!(%volume, instance, by = %caller.name, "volume detach asked");
        }
        self.get(caller, volume).await
    }
}
