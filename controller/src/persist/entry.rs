//! The stored form of a Raft log entry: one [`Command`] of the state machine, and the
//! membership change a configuration-change entry carries.

use super::records::{
    ActualState, EndorserRecord, HostRecord, ImageRecord, ImageSpec, InstanceType, MemberRecord,
    NetworkRecord, Quota, ReportedDisk, ReportedExport, UpdateVolume, UserRecord, VerifiedEntry,
    VolumeRecord, VolumeReport,
};
use super::{FormatError, Persist};
use crate::state::{Command, MemberChange};

/// A command as the log stores it. The variants' order is the format: add new ones at the end.
#[derive(Debug, bincode::Encode, bincode::Decode)]
pub enum Entry {
    Bootstrap {
        cluster_id: String,
        admin: UserRecord,
        types: Vec<InstanceType>,
        cpu_allocation_ratio_percent: u32,
        first_member: Option<MemberRecord>,
    },
    CreateUser(UserRecord),
    RegisterHost(HostRecord),
    RegisterImage(ImageRecord),
    AppendEntry {
        entry: VerifiedEntry,
        uploaded_ms: u64,
    },
    RegisterEndorser(EndorserRecord),
    Precache {
        host: String,
        spec: ImageSpec,
    },
    Unpin {
        host: String,
        sha256: String,
    },
    DefineNetwork(NetworkRecord),
    CreateInstance {
        owner: String,
        name: Option<String>,
        image: String,
        image_spec: ImageSpec,
        instance_type: String,
        host: Option<String>,
        failure: Option<String>,
        at_ms: u64,
        network: Option<String>,
        ssh_key: Option<String>,
        user_data: Option<String>,
        volumes: Vec<(String, String)>,
        idempotency_key: Option<String>,
    },
    KillInstance {
        id: u64,
        at_ms: u64,
    },
    ReportInstance {
        host: String,
        id: u64,
        state: ActualState,
        reason: Option<String>,
        at_ms: u64,
    },
    CreateVolume {
        record: VolumeRecord,
        quota: Quota,
        idempotency_key: Option<String>,
    },
    ReportVolume {
        host: String,
        id: String,
        state: VolumeReport,
        reason: Option<String>,
    },
    UpdateVolume {
        id: String,
        caller: String,
        admin: bool,
        update: UpdateVolume,
    },
    DeleteVolume {
        id: String,
        caller: String,
        admin: bool,
    },
    AttachVolume {
        volume: String,
        instance: u64,
        caller: String,
        admin: bool,
        export: String,
        at_ms: u64,
    },
    DetachVolume {
        volume: String,
        instance: u64,
        caller: String,
        admin: bool,
        force: bool,
        stuck_after_ms: u64,
        at_ms: u64,
    },
    ReportExport {
        host: String,
        export: ReportedExport,
    },
    ReportDisk {
        host: String,
        disk: ReportedDisk,
        at_ms: u64,
    },
}

impl Persist for Command {
    type Stored = Entry;

    fn store(&self) -> Entry {
        match self {
            Command::Bootstrap {
                cluster_id,
                admin,
                types,
                cpu_allocation_ratio_percent,
                first_member,
            } => Entry::Bootstrap {
                cluster_id: cluster_id.clone(),
                admin: admin.store(),
                types: types.store(),
                cpu_allocation_ratio_percent: *cpu_allocation_ratio_percent,
                first_member: first_member.store(),
            },
            Command::CreateUser(user) => Entry::CreateUser(user.store()),
            Command::RegisterHost(host) => Entry::RegisterHost(host.store()),
            Command::RegisterImage(image) => Entry::RegisterImage(image.store()),
            Command::AppendEntry { entry, uploaded_ms } => Entry::AppendEntry {
                entry: entry.store(),
                uploaded_ms: *uploaded_ms,
            },
            Command::RegisterEndorser(endorser) => Entry::RegisterEndorser(endorser.store()),
            Command::Precache { host, spec } => Entry::Precache {
                host: host.clone(),
                spec: spec.store(),
            },
            Command::Unpin { host, sha256 } => Entry::Unpin {
                host: host.clone(),
                sha256: sha256.clone(),
            },
            Command::DefineNetwork(network) => Entry::DefineNetwork(network.store()),
            Command::CreateInstance {
                owner,
                name,
                image,
                image_spec,
                instance_type,
                host,
                failure,
                at_ms,
                network,
                ssh_key,
                user_data,
                volumes,
                idempotency_key,
            } => Entry::CreateInstance {
                owner: owner.clone(),
                name: name.clone(),
                image: image.clone(),
                image_spec: image_spec.store(),
                instance_type: instance_type.clone(),
                host: host.clone(),
                failure: failure.clone(),
                at_ms: *at_ms,
                network: network.clone(),
                ssh_key: ssh_key.clone(),
                user_data: user_data.clone(),
                volumes: volumes.clone(),
                idempotency_key: idempotency_key.clone(),
            },
            Command::KillInstance { id, at_ms } => Entry::KillInstance {
                id: *id,
                at_ms: *at_ms,
            },
            Command::ReportInstance {
                host,
                id,
                state,
                reason,
                at_ms,
            } => Entry::ReportInstance {
                host: host.clone(),
                id: *id,
                state: state.store(),
                reason: reason.clone(),
                at_ms: *at_ms,
            },
            Command::CreateVolume {
                record,
                quota,
                idempotency_key,
            } => Entry::CreateVolume {
                record: record.store(),
                quota: quota.store(),
                idempotency_key: idempotency_key.clone(),
            },
            Command::ReportVolume {
                host,
                id,
                state,
                reason,
            } => Entry::ReportVolume {
                host: host.clone(),
                id: id.clone(),
                state: state.store(),
                reason: reason.clone(),
            },
            Command::UpdateVolume {
                id,
                caller,
                admin,
                update,
            } => Entry::UpdateVolume {
                id: id.clone(),
                caller: caller.clone(),
                admin: *admin,
                update: update.store(),
            },
            Command::DeleteVolume { id, caller, admin } => Entry::DeleteVolume {
                id: id.clone(),
                caller: caller.clone(),
                admin: *admin,
            },
            Command::AttachVolume {
                volume,
                instance,
                caller,
                admin,
                export,
                at_ms,
            } => Entry::AttachVolume {
                volume: volume.clone(),
                instance: *instance,
                caller: caller.clone(),
                admin: *admin,
                export: export.clone(),
                at_ms: *at_ms,
            },
            Command::DetachVolume {
                volume,
                instance,
                caller,
                admin,
                force,
                stuck_after_ms,
                at_ms,
            } => Entry::DetachVolume {
                volume: volume.clone(),
                instance: *instance,
                caller: caller.clone(),
                admin: *admin,
                force: *force,
                stuck_after_ms: *stuck_after_ms,
                at_ms: *at_ms,
            },
            Command::ReportExport { host, export } => Entry::ReportExport {
                host: host.clone(),
                export: export.store(),
            },
            Command::ReportDisk { host, disk, at_ms } => Entry::ReportDisk {
                host: host.clone(),
                disk: disk.store(),
                at_ms: *at_ms,
            },
        }
    }

    fn load(stored: Entry) -> Result<Self, FormatError> {
        Ok(match stored {
            Entry::Bootstrap {
                cluster_id,
                admin,
                types,
                cpu_allocation_ratio_percent,
                first_member,
            } => Command::Bootstrap {
                cluster_id,
                admin: Persist::load(admin)?,
                types: Persist::load(types)?,
                cpu_allocation_ratio_percent,
                first_member: Persist::load(first_member)?,
            },
            Entry::CreateUser(user) => Command::CreateUser(Persist::load(user)?),
            Entry::RegisterHost(host) => Command::RegisterHost(Persist::load(host)?),
            Entry::RegisterImage(image) => Command::RegisterImage(Persist::load(image)?),
            Entry::AppendEntry { entry, uploaded_ms } => Command::AppendEntry {
                entry: Persist::load(entry)?,
                uploaded_ms,
            },
            Entry::RegisterEndorser(endorser) => {
                Command::RegisterEndorser(Persist::load(endorser)?)
            }
            Entry::Precache { host, spec } => Command::Precache {
                host,
                spec: Persist::load(spec)?,
            },
            Entry::Unpin { host, sha256 } => Command::Unpin { host, sha256 },
            Entry::DefineNetwork(network) => Command::DefineNetwork(Persist::load(network)?),
            Entry::CreateInstance {
                owner,
                name,
                image,
                image_spec,
                instance_type,
                host,
                failure,
                at_ms,
                network,
                ssh_key,
                user_data,
                volumes,
                idempotency_key,
            } => Command::CreateInstance {
                owner,
                name,
                image,
                image_spec: Persist::load(image_spec)?,
                instance_type,
                host,
                failure,
                at_ms,
                network,
                ssh_key,
                user_data,
                volumes,
                idempotency_key,
            },
            Entry::KillInstance { id, at_ms } => Command::KillInstance { id, at_ms },
            Entry::ReportInstance {
                host,
                id,
                state,
                reason,
                at_ms,
            } => Command::ReportInstance {
                host,
                id,
                state: Persist::load(state)?,
                reason,
                at_ms,
            },
            Entry::CreateVolume {
                record,
                quota,
                idempotency_key,
            } => Command::CreateVolume {
                record: Persist::load(record)?,
                quota: Persist::load(quota)?,
                idempotency_key,
            },
            Entry::ReportVolume {
                host,
                id,
                state,
                reason,
            } => Command::ReportVolume {
                host,
                id,
                state: Persist::load(state)?,
                reason,
            },
            Entry::UpdateVolume {
                id,
                caller,
                admin,
                update,
            } => Command::UpdateVolume {
                id,
                caller,
                admin,
                update: Persist::load(update)?,
            },
            Entry::DeleteVolume { id, caller, admin } => {
                Command::DeleteVolume { id, caller, admin }
            }
            Entry::AttachVolume {
                volume,
                instance,
                caller,
                admin,
                export,
                at_ms,
            } => Command::AttachVolume {
                volume,
                instance,
                caller,
                admin,
                export,
                at_ms,
            },
            Entry::DetachVolume {
                volume,
                instance,
                caller,
                admin,
                force,
                stuck_after_ms,
                at_ms,
            } => Command::DetachVolume {
                volume,
                instance,
                caller,
                admin,
                force,
                stuck_after_ms,
                at_ms,
            },
            Entry::ReportExport { host, export } => Command::ReportExport {
                host,
                export: Persist::load(export)?,
            },
            Entry::ReportDisk { host, disk, at_ms } => Command::ReportDisk {
                host,
                disk: Persist::load(disk)?,
                at_ms,
            },
        })
    }
}

/// A membership change as a configuration-change entry's context stores it.
#[derive(Debug, bincode::Encode, bincode::Decode)]
pub enum StoredMemberChange {
    AddLearner {
        id: u64,
        address: String,
        api_address: String,
        incarnation: String,
    },
    Promote {
        id: u64,
    },
    Remove {
        id: u64,
    },
}

impl Persist for MemberChange {
    type Stored = StoredMemberChange;

    fn store(&self) -> StoredMemberChange {
        match self.clone() {
            MemberChange::AddLearner {
                id,
                address,
                api_address,
                incarnation,
            } => StoredMemberChange::AddLearner {
                id,
                address,
                api_address,
                incarnation,
            },
            MemberChange::Promote { id } => StoredMemberChange::Promote { id },
            MemberChange::Remove { id } => StoredMemberChange::Remove { id },
        }
    }

    fn load(stored: StoredMemberChange) -> Result<Self, FormatError> {
        Ok(match stored {
            StoredMemberChange::AddLearner {
                id,
                address,
                api_address,
                incarnation,
            } => MemberChange::AddLearner {
                id,
                address,
                api_address,
                incarnation,
            },
            StoredMemberChange::Promote { id } => MemberChange::Promote { id },
            StoredMemberChange::Remove { id } => MemberChange::Remove { id },
        })
    }
}
