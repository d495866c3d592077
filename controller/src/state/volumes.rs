//! Persistent disks in the replicated state: volumes, who may see, change and delete them,
//! and their attachments to instances. Every rule that must hold across racing requests (one
//! writer per read-write disk, quotas, a detach is done only when the guest released the
//! device) is checked here, inside apply, so concurrent requests are settled by the log's order.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use stratus_common::agent::{
    DesiredDisk, DesiredExport, DesiredVolume, DiskLocation, DiskReport, ReportedDisk,
    ReportedExport, VolumeReport,
};
use stratus_common::api::InstanceState;
use stratus_common::volumes::{targets, AttachmentState, UpdateVolume, VolumeState, VolumeType};

use super::{InstanceRecord, Outcome, State};

const GIB: u64 = 1 << 30;

/// A persistent disk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeRecord {
    pub id: String,
    pub owner: String,
    pub tag: String,
    pub size_gib: u64,
    pub public: bool,
    pub volume_type: VolumeType,
    /// The storage host whose pool holds it.
    pub host: String,
    pub state: VolumeState,
    /// Why it Failed, or why its last attachment failed.
    pub reason: Option<String>,
    pub created_ms: u64,
    pub attachments: Vec<AttachmentRecord>,
}

impl VolumeRecord {
    /// Whether `user` may see (and attach) it.
    pub fn visible_to(&self, user: &str, admin: bool) -> bool {
        admin || self.public || self.owner == user
    }
}

/// One instance using a volume.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AttachmentRecord {
    pub instance: u64,
    /// `vdb` to `vdz`.
    pub target: String,
    /// Attaching, Attached or Detaching (Stuck is Detaching seen after the timeout).
    pub state: AttachmentState,
    pub hotplug: bool,
    pub read_only: bool,
    /// When it entered its state.
    pub since_ms: u64,
    /// For an instance on another host than the volume: the NBD export serving it.
    pub export: Option<ExportRecord>,
}

/// An NBD export made for one attachment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExportRecord {
    /// Random, decided before proposing.
    pub name: String,
    /// Where it listens, once the storage host has reported it.
    pub endpoint: Option<(String, u16)>,
}

/// Per-user limits, carried in the command so every replica checks the same ones.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Quota {
    pub max_volumes: u32,
    pub max_gib: u64,
}

/// Why a volume command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumeError {
    #[error("disk {0} not found")]
    Unknown(String),
    #[error("disk {0} already exists")]
    Exists(String),
    #[error("Not enough rights to {action} disk {id}")]
    NotOwner { action: &'static str, id: String },
    #[error("disk {id} is in use by instance {instances}")]
    InUse { id: String, instances: String },
    #[error("disk {id} is {state}, not available")]
    NotAvailable { id: String, state: String },
    #[error("disk {id} is read-write and already attached to instance {instance}")]
    Taken { id: String, instance: u64 },
    #[error("disk {id} is already attached to instance {instance}")]
    AlreadyAttached { id: String, instance: u64 },
    #[error("DISK {id}: Disk is not attached to VM {instance}")]
    NotAttached { id: String, instance: u64 },
    #[error("instance {0} has no free device left (vdb to vdz are taken)")]
    NoTarget(u64),
    #[error("instance {id} is {state}: disks are plugged into Running instances")]
    InstanceNotRunning { id: u64, state: String },
    #[error("disk {id} has been detaching for {secs} s; a forced detach is allowed only once it is stuck (after {timeout_secs} s)")]
    NotStuck {
        id: String,
        secs: u64,
        timeout_secs: u64,
    },
    #[error("quota exceeded: {user} may have at most {max} disks")]
    QuotaVolumes { user: String, max: u32 },
    #[error("quota exceeded: {user} may have at most {max} GiB of disks ({used} GiB used, {asked} GiB asked)")]
    QuotaSize {
        user: String,
        max: u64,
        used: u64,
        asked: u64,
    },
    #[error("host {host} has no volume pool with {size} GiB free")]
    NoRoom { host: String, size: u64 },
    #[error("the type of disk {0} can change only while no instance uses it")]
    TypeWhileAttached(String),
    #[error("size: at least 1 GiB")]
    SizeZero,
    #[error("persistent_disks: disk {0} is named twice")]
    NamedTwice(String),
    #[error("instance {0} not found")]
    UnknownInstance(u64),
    #[error("instance {instance} is not on host {host}")]
    InstanceNotOnHost { instance: u64, host: String },
}

impl State {
    /// GiB of volumes placed on `host`'s pool.
    pub fn pool_used_gib(&self, host: &str) -> u64 {
        self.volumes
            .values()
            .filter(|v| v.host == host)
            .map(|v| v.size_gib)
            .sum()
    }

    /// UUIDs of the volumes attached to instance `id`.
    pub fn volumes_of_instance(&self, id: u64) -> Vec<String> {
        self.volumes
            .values()
            .filter(|v| v.attachments.iter().any(|a| a.instance == id))
            .map(|v| v.id.clone())
            .collect()
    }

    /// GiB still free in `host`'s pool (0 without a pool).
    pub fn pool_free_gib(&self, host: &str) -> u64 {
        self.hosts
            .get(host)
            .and_then(|h| h.volume_pool_gib)
            .unwrap_or(0)
            .saturating_sub(self.pool_used_gib(host))
    }

    pub(super) fn create_volume(
        &mut self,
        record: VolumeRecord,
        quota: Quota,
    ) -> Result<Outcome, VolumeError> {
        if self.volumes.contains_key(&record.id) {
            return Err(VolumeError::Exists(record.id));
        }
        if record.size_gib == 0 {
            return Err(VolumeError::SizeZero);
        }
        let (count, used) = self
            .volumes
            .values()
            .filter(|v| v.owner == record.owner)
            .fold((0u32, 0u64), |(n, gib), v| (n + 1, gib + v.size_gib));
        if count >= quota.max_volumes {
            return Err(VolumeError::QuotaVolumes {
                user: record.owner,
                max: quota.max_volumes,
            });
        }
        if used + record.size_gib > quota.max_gib {
            return Err(VolumeError::QuotaSize {
                user: record.owner,
                max: quota.max_gib,
                used,
                asked: record.size_gib,
            });
        }
        if self.pool_free_gib(&record.host) < record.size_gib {
            return Err(VolumeError::NoRoom {
                host: record.host,
                size: record.size_gib,
            });
        }
        self.volumes.insert(record.id.clone(), record);
        Ok(Outcome::Applied)
    }

    pub(super) fn report_volume(
        &mut self,
        host: &str,
        id: &str,
        report: VolumeReport,
        reason: Option<String>,
    ) -> Result<Outcome, VolumeError> {
        let Some(volume) = self.volumes.get_mut(id).filter(|v| v.host == host) else {
            return Err(VolumeError::Unknown(id.to_owned()));
        };
        match (volume.state, report) {
            (VolumeState::Creating, VolumeReport::Ready) => {
                volume.state = VolumeState::Available;
                Ok(Outcome::Applied)
            }
            (VolumeState::Creating, VolumeReport::Failed) => {
                volume.state = VolumeState::Failed;
                volume.reason = reason.or_else(|| Some("the storage host failed".into()));
                Ok(Outcome::Applied)
            }
            (VolumeState::Deleting, VolumeReport::Deleted) => {
                self.volumes.remove(id);
                Ok(Outcome::Applied)
            }
            _ => Ok(Outcome::Unchanged),
        }
    }

    /// The volume `caller` may change: unknown if they cannot see it, refused if not theirs.
    fn owned_volume(
        &mut self,
        id: &str,
        caller: &str,
        admin: bool,
        action: &'static str,
    ) -> Result<&mut VolumeRecord, VolumeError> {
        let volume = self
            .volumes
            .get_mut(id)
            .filter(|v| v.visible_to(caller, admin))
            .ok_or_else(|| VolumeError::Unknown(id.to_owned()))?;
        if !admin && volume.owner != caller {
            return Err(VolumeError::NotOwner {
                action,
                id: id.to_owned(),
            });
        }
        Ok(volume)
    }

    pub(super) fn update_volume(
        &mut self,
        id: &str,
        caller: &str,
        admin: bool,
        update: UpdateVolume,
    ) -> Result<Outcome, VolumeError> {
        let volume = self.owned_volume(id, caller, admin, "update")?;
        if let Some(t) = update.volume_type {
            if t != volume.volume_type && !volume.attachments.is_empty() {
                return Err(VolumeError::TypeWhileAttached(id.to_owned()));
            }
        }
        let before = volume.clone();
        if let Some(public) = update.public {
            volume.public = public;
        }
        if let Some(tag) = update.tag {
            volume.tag = tag;
        }
        if let Some(t) = update.volume_type {
            volume.volume_type = t;
        }
        Ok(if *volume == before {
            Outcome::Unchanged
        } else {
            Outcome::Applied
        })
    }

    pub(super) fn delete_volume(
        &mut self,
        id: &str,
        caller: &str,
        admin: bool,
    ) -> Result<Outcome, VolumeError> {
        let volume = self.owned_volume(id, caller, admin, "delete")?;
        if !volume.attachments.is_empty() {
            return Err(VolumeError::InUse {
                id: id.to_owned(),
                instances: instance_list(volume),
            });
        }
        if volume.state == VolumeState::Deleting {
            return Ok(Outcome::Unchanged);
        }
        volume.state = VolumeState::Deleting;
        Ok(Outcome::Applied)
    }

    /// Checks that `volume` may be attached to `instance` and picks its device; changes
    /// nothing. `taken` are targets already given to this instance in the same command.
    fn check_attach(
        &self,
        volume_id: &str,
        instance: &InstanceRecord,
        caller: &str,
        admin: bool,
        taken: &BTreeSet<String>,
    ) -> Result<String, VolumeError> {
        let volume = self
            .volumes
            .get(volume_id)
            .filter(|v| v.visible_to(caller, admin))
            .ok_or_else(|| VolumeError::Unknown(volume_id.to_owned()))?;
        if volume.state != VolumeState::Available {
            return Err(VolumeError::NotAvailable {
                id: volume_id.to_owned(),
                state: format!("{:?}", volume.state).to_lowercase(),
            });
        }
        if let Some(a) = volume
            .attachments
            .iter()
            .find(|a| a.instance == instance.id)
        {
            return Err(VolumeError::AlreadyAttached {
                id: volume_id.to_owned(),
                instance: a.instance,
            });
        }
        if !volume.volume_type.read_only() {
            if let Some(a) = volume.attachments.first() {
                return Err(VolumeError::Taken {
                    id: volume_id.to_owned(),
                    instance: a.instance,
                });
            }
        }
        let used: BTreeSet<&str> = self
            .volumes
            .values()
            .flat_map(|v| v.attachments.iter())
            .filter(|a| a.instance == instance.id)
            .map(|a| a.target.as_str())
            .chain(taken.iter().map(String::as_str))
            .collect();
        targets()
            .find(|t| !used.contains(t.as_str()))
            .ok_or(VolumeError::NoTarget(instance.id))
    }

    /// Records the attachment checked by [`Self::check_attach`].
    #[allow(clippy::too_many_arguments)]
    fn add_attachment(
        &mut self,
        volume_id: &str,
        instance_id: u64,
        instance_host: &str,
        target: String,
        hotplug: bool,
        export: String,
        at_ms: u64,
    ) {
        let volume = self.volumes.get_mut(volume_id).expect("checked volume");
        // A new attempt: an earlier failure's reason no longer applies.
        volume.reason = None;
        let export = (volume.host != instance_host).then_some(ExportRecord {
            name: export,
            endpoint: None,
        });
        volume.attachments.push(AttachmentRecord {
            instance: instance_id,
            target,
            state: AttachmentState::Attaching,
            hotplug,
            read_only: volume.volume_type.read_only(),
            since_ms: at_ms,
            export,
        });
    }

    /// Checks every disk of a new instance; `Err` leaves the state untouched.
    pub(super) fn check_launch_volumes(
        &self,
        volumes: &[(String, String)],
        instance: &InstanceRecord,
        caller: &str,
    ) -> Result<Vec<String>, VolumeError> {
        let mut taken = BTreeSet::new();
        let mut seen = BTreeSet::new();
        for (volume, _) in volumes {
            if !seen.insert(volume.as_str()) {
                return Err(VolumeError::NamedTwice(volume.clone()));
            }
            let target = self.check_attach(volume, instance, caller, false, &taken)?;
            taken.insert(target);
        }
        Ok(taken.into_iter().collect())
    }

    /// Attaches the checked disks of a new instance (see [`Self::check_launch_volumes`]).
    pub(super) fn attach_launch_volumes(
        &mut self,
        volumes: Vec<(String, String)>,
        targets: Vec<String>,
        instance_id: u64,
        host: &str,
        at_ms: u64,
    ) {
        for ((volume, export), target) in volumes.into_iter().zip(targets) {
            self.add_attachment(&volume, instance_id, host, target, false, export, at_ms);
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn attach_volume(
        &mut self,
        volume_id: &str,
        instance_id: u64,
        caller: &str,
        admin: bool,
        export: String,
        at_ms: u64,
    ) -> Result<Outcome, VolumeError> {
        let instance = self
            .instances
            .get(&instance_id)
            .filter(|i| admin || i.owner == caller)
            .ok_or(VolumeError::UnknownInstance(instance_id))?;
        if instance.state != InstanceState::Running {
            return Err(VolumeError::InstanceNotRunning {
                id: instance_id,
                state: format!("{:?}", instance.state),
            });
        }
        let host = instance.host.clone().unwrap_or_default();
        let target = self.check_attach(volume_id, instance, caller, admin, &BTreeSet::new())?;
        self.add_attachment(volume_id, instance_id, &host, target, true, export, at_ms);
        Ok(Outcome::Applied)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn detach_volume(
        &mut self,
        volume_id: &str,
        instance_id: u64,
        caller: &str,
        admin: bool,
        force: bool,
        stuck_after_ms: u64,
        at_ms: u64,
    ) -> Result<Outcome, VolumeError> {
        if !self
            .instances
            .get(&instance_id)
            .is_some_and(|i| admin || i.owner == caller)
        {
            return Err(VolumeError::UnknownInstance(instance_id));
        }
        let volume = self
            .volumes
            .get_mut(volume_id)
            .filter(|v| v.visible_to(caller, admin))
            .ok_or_else(|| VolumeError::Unknown(volume_id.to_owned()))?;
        let index = volume
            .attachments
            .iter()
            .position(|a| a.instance == instance_id)
            .ok_or_else(|| VolumeError::NotAttached {
                id: volume_id.to_owned(),
                instance: instance_id,
            })?;
        let attachment = &mut volume.attachments[index];
        match attachment.state {
            AttachmentState::Detaching | AttachmentState::Stuck if force => {
                let waited = at_ms.saturating_sub(attachment.since_ms);
                if waited < stuck_after_ms {
                    return Err(VolumeError::NotStuck {
                        id: volume_id.to_owned(),
                        secs: waited / 1000,
                        timeout_secs: stuck_after_ms / 1000,
                    });
                }
                volume.attachments.remove(index);
                volume.reason = Some(format!(
                    "forced off instance {instance_id} while the guest still held it"
                ));
                Ok(Outcome::Applied)
            }
            AttachmentState::Detaching | AttachmentState::Stuck => Ok(Outcome::Unchanged),
            AttachmentState::Attaching | AttachmentState::Attached => {
                attachment.state = AttachmentState::Detaching;
                attachment.since_ms = at_ms;
                Ok(Outcome::Applied)
            }
        }
    }

    pub(super) fn report_export(
        &mut self,
        host: &str,
        report: ReportedExport,
    ) -> Result<Outcome, VolumeError> {
        for volume in self.volumes.values_mut().filter(|v| v.host == host) {
            for attachment in &mut volume.attachments {
                if let Some(export) = attachment.export.as_mut().filter(|e| e.name == report.name) {
                    let endpoint = Some((report.host.clone(), report.port));
                    if export.endpoint == endpoint {
                        return Ok(Outcome::Unchanged);
                    }
                    export.endpoint = endpoint;
                    return Ok(Outcome::Applied);
                }
            }
        }
        Ok(Outcome::Unchanged)
    }

    pub(super) fn report_disk(
        &mut self,
        host: &str,
        report: ReportedDisk,
        at_ms: u64,
    ) -> Result<Outcome, VolumeError> {
        let on_host = self
            .instances
            .get(&report.instance)
            .is_some_and(|i| i.host.as_deref() == Some(host));
        if !on_host {
            return Err(VolumeError::InstanceNotOnHost {
                instance: report.instance,
                host: host.to_owned(),
            });
        }
        let Some(volume) = self.volumes.get_mut(&report.volume) else {
            return Ok(Outcome::Unchanged);
        };
        let Some(index) = volume
            .attachments
            .iter()
            .position(|a| a.instance == report.instance)
        else {
            return Ok(Outcome::Unchanged);
        };
        let attachment = &mut volume.attachments[index];
        match (attachment.state, report.state) {
            (AttachmentState::Attaching, DiskReport::Attached) => {
                attachment.state = AttachmentState::Attached;
                attachment.since_ms = at_ms;
                Ok(Outcome::Applied)
            }
            (AttachmentState::Attaching, DiskReport::Failed) => {
                volume.attachments.remove(index);
                volume.reason = Some(format!(
                    "attaching to instance {} failed: {}",
                    report.instance,
                    report.reason.unwrap_or_else(|| "no reason given".into())
                ));
                Ok(Outcome::Applied)
            }
            (AttachmentState::Detaching | AttachmentState::Stuck, DiskReport::Detached) => {
                volume.attachments.remove(index);
                Ok(Outcome::Applied)
            }
            _ => Ok(Outcome::Unchanged),
        }
    }

    /// Frees the disks of instance `id` once its host has confirmed nothing of it is left
    /// (the domain, and so the guest's use of the disks, is gone).
    pub(super) fn release_finished_volumes(&mut self, id: u64) {
        let finished = self.instances.get(&id).is_some_and(|i| !i.holds_lease());
        if finished {
            for volume in self.volumes.values_mut() {
                volume.attachments.retain(|a| a.instance != id);
            }
        }
    }

    /// The volumes `host` stores, and the exports it serves.
    pub fn storage_desired_for_host(&self, host: &str) -> (Vec<DesiredVolume>, Vec<DesiredExport>) {
        let mut volumes = Vec::new();
        let mut exports = Vec::new();
        for volume in self.volumes.values().filter(|v| v.host == host) {
            let present = match volume.state {
                VolumeState::Creating | VolumeState::Available => true,
                VolumeState::Deleting => false,
                VolumeState::Failed => continue,
            };
            volumes.push(DesiredVolume {
                id: volume.id.clone(),
                size_bytes: volume.size_gib * GIB,
                present,
            });
            for attachment in &volume.attachments {
                // The export opens only for the host of the instance it serves.
                let client = self
                    .instances
                    .get(&attachment.instance)
                    .and_then(|i| i.host.clone());
                if let (Some(export), Some(client)) = (&attachment.export, client) {
                    exports.push(DesiredExport {
                        name: export.name.clone(),
                        volume: volume.id.clone(),
                        read_only: attachment.read_only,
                        client,
                    });
                }
            }
        }
        (volumes, exports)
    }

    /// The persistent disks of `instance`, as its host must present them.
    pub fn disks_for_instance(&self, instance: &InstanceRecord) -> Vec<DesiredDisk> {
        let mut disks: Vec<DesiredDisk> = self
            .volumes
            .values()
            .flat_map(|v| v.attachments.iter().map(move |a| (v, a)))
            .filter(|(_, a)| a.instance == instance.id)
            .map(|(volume, a)| DesiredDisk {
                volume: volume.id.clone(),
                target: a.target.clone(),
                read_only: a.read_only,
                source: match &a.export {
                    None => DiskLocation::Local,
                    Some(ExportRecord {
                        name,
                        endpoint: Some((host, port)),
                    }) => DiskLocation::Nbd {
                        host: host.clone(),
                        port: *port,
                        export: name.clone(),
                        tls_server: Some(volume.host.clone()),
                    },
                    Some(ExportRecord { endpoint: None, .. }) => DiskLocation::Pending,
                },
                attach: matches!(
                    a.state,
                    AttachmentState::Attaching | AttachmentState::Attached
                ),
            })
            .collect();
        disks.sort_by(|a, b| a.target.cmp(&b.target));
        disks
    }
}

/// The instances using a volume, for messages.
fn instance_list(volume: &VolumeRecord) -> String {
    volume
        .attachments
        .iter()
        .map(|a| a.instance.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
