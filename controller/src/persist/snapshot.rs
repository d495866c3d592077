//! The stored form of a state-machine snapshot: the whole replicated [`State`].

use std::collections::{BTreeMap, BTreeSet};

use super::records::{
    AuditLog, EndorserRecord, GroupRecord, HostLife, HostProfile, HostRecord, ImageRecord,
    ImageSpec, InstanceRecord, InstanceRules, InstanceType, Ipam, Keys, MemberRecord, StoredEntry,
    Trust, UserRecord, VolumeRecord,
};
use super::stored_struct;
use crate::state::State;

stored_struct!(
    /// Everything the state machine holds, in a fixed field order.
    Snapshot for State {
        cluster_id: String,
        users: BTreeMap<String, UserRecord>,
        hosts: BTreeMap<String, HostRecord>,
        types: BTreeMap<String, InstanceType>,
        images: BTreeMap<String, ImageRecord>,
        marketplace: Vec<StoredEntry>,
        endorsers: BTreeMap<String, EndorserRecord>,
        precache: BTreeMap<String, BTreeMap<String, ImageSpec>>,
        instances: BTreeMap<u64, InstanceRecord>,
        next_instance_id: u64,
        cpu_allocation_ratio_percent: u32,
        ipam: Ipam,
        volumes: BTreeMap<String, VolumeRecord>,
        members: BTreeMap<u64, MemberRecord>,
        instance_keys: Keys<u64>,
        volume_keys: Keys<String>,
        // State-machine version 3.
        trust: Trust,
        audit: AuditLog,
        // State-machine version 4.
        host_life: BTreeMap<String, HostLife>,
        // State-machine version 5.
        host_profiles: BTreeMap<String, HostProfile>,
        groups: BTreeMap<String, BTreeMap<String, GroupRecord>>,
        instance_rules: BTreeMap<u64, InstanceRules>,
        fenced: BTreeMap<String, u64>,
        moved_away: BTreeMap<String, BTreeSet<u64>>,
    }
    older { 2 => SnapshotV2, 3 => SnapshotV3, 4 => SnapshotV4 }
);

/// The snapshot of state-machine version 4 (before [`Snapshot::host_profiles`], groups and
/// placement rules), as it was written: frozen, read only to open a store an older controller
/// wrote.
#[derive(Debug, bincode::Encode, bincode::Decode)]
pub struct SnapshotV4 {
    pub cluster_id: String,
    pub users: BTreeMap<String, UserRecord>,
    pub hosts: BTreeMap<String, HostRecord>,
    pub types: BTreeMap<String, InstanceType>,
    pub images: BTreeMap<String, ImageRecord>,
    pub marketplace: Vec<StoredEntry>,
    pub endorsers: BTreeMap<String, EndorserRecord>,
    pub precache: BTreeMap<String, BTreeMap<String, ImageSpec>>,
    pub instances: BTreeMap<u64, InstanceRecord>,
    pub next_instance_id: u64,
    pub cpu_allocation_ratio_percent: u32,
    pub ipam: Ipam,
    pub volumes: BTreeMap<String, VolumeRecord>,
    pub members: BTreeMap<u64, MemberRecord>,
    pub instance_keys: Keys<u64>,
    pub volume_keys: Keys<String>,
    pub trust: Trust,
    pub audit: AuditLog,
    pub host_life: BTreeMap<String, HostLife>,
}

impl From<SnapshotV4> for Snapshot {
    /// Every host of a version-4 state is for both roles and unlabelled; there are no groups.
    fn from(v4: SnapshotV4) -> Self {
        Snapshot {
            cluster_id: v4.cluster_id,
            users: v4.users,
            hosts: v4.hosts,
            types: v4.types,
            images: v4.images,
            marketplace: v4.marketplace,
            endorsers: v4.endorsers,
            precache: v4.precache,
            instances: v4.instances,
            next_instance_id: v4.next_instance_id,
            cpu_allocation_ratio_percent: v4.cpu_allocation_ratio_percent,
            ipam: v4.ipam,
            volumes: v4.volumes,
            members: v4.members,
            instance_keys: v4.instance_keys,
            volume_keys: v4.volume_keys,
            trust: v4.trust,
            audit: v4.audit,
            host_life: v4.host_life,
            host_profiles: BTreeMap::new(),
            groups: BTreeMap::new(),
            instance_rules: BTreeMap::new(),
            fenced: BTreeMap::new(),
            moved_away: BTreeMap::new(),
        }
    }
}

/// The snapshot of state-machine version 3 (before [`Snapshot::host_life`]), as it was
/// written: frozen, read only to open a store an older controller wrote.
#[derive(Debug, bincode::Encode, bincode::Decode)]
pub struct SnapshotV3 {
    pub cluster_id: String,
    pub users: BTreeMap<String, UserRecord>,
    pub hosts: BTreeMap<String, HostRecord>,
    pub types: BTreeMap<String, InstanceType>,
    pub images: BTreeMap<String, ImageRecord>,
    pub marketplace: Vec<StoredEntry>,
    pub endorsers: BTreeMap<String, EndorserRecord>,
    pub precache: BTreeMap<String, BTreeMap<String, ImageSpec>>,
    pub instances: BTreeMap<u64, InstanceRecord>,
    pub next_instance_id: u64,
    pub cpu_allocation_ratio_percent: u32,
    pub ipam: Ipam,
    pub volumes: BTreeMap<String, VolumeRecord>,
    pub members: BTreeMap<u64, MemberRecord>,
    pub instance_keys: Keys<u64>,
    pub volume_keys: Keys<String>,
    pub trust: Trust,
    pub audit: AuditLog,
}

impl From<SnapshotV3> for Snapshot {
    /// Every host of a version-3 state is up and in service (version 3 knew no other).
    fn from(v3: SnapshotV3) -> Self {
        Snapshot::from(SnapshotV4 {
            cluster_id: v3.cluster_id,
            users: v3.users,
            hosts: v3.hosts,
            types: v3.types,
            images: v3.images,
            marketplace: v3.marketplace,
            endorsers: v3.endorsers,
            precache: v3.precache,
            instances: v3.instances,
            next_instance_id: v3.next_instance_id,
            cpu_allocation_ratio_percent: v3.cpu_allocation_ratio_percent,
            ipam: v3.ipam,
            volumes: v3.volumes,
            members: v3.members,
            instance_keys: v3.instance_keys,
            volume_keys: v3.volume_keys,
            trust: v3.trust,
            audit: v3.audit,
            host_life: BTreeMap::new(),
        })
    }
}

/// The snapshot of state-machine version 2 (before [`Snapshot::trust`]), as it was written:
/// frozen, read only to open a store an older controller wrote.
#[derive(Debug, bincode::Encode, bincode::Decode)]
pub struct SnapshotV2 {
    pub cluster_id: String,
    pub users: BTreeMap<String, UserRecord>,
    pub hosts: BTreeMap<String, HostRecord>,
    pub types: BTreeMap<String, InstanceType>,
    pub images: BTreeMap<String, ImageRecord>,
    pub marketplace: Vec<StoredEntry>,
    pub endorsers: BTreeMap<String, EndorserRecord>,
    pub precache: BTreeMap<String, BTreeMap<String, ImageSpec>>,
    pub instances: BTreeMap<u64, InstanceRecord>,
    pub next_instance_id: u64,
    pub cpu_allocation_ratio_percent: u32,
    pub ipam: Ipam,
    pub volumes: BTreeMap<String, VolumeRecord>,
    pub members: BTreeMap<u64, MemberRecord>,
    pub instance_keys: Keys<u64>,
    pub volume_keys: Keys<String>,
}

impl From<SnapshotV2> for Snapshot {
    fn from(v2: SnapshotV2) -> Self {
        Snapshot::from(SnapshotV3 {
            cluster_id: v2.cluster_id,
            users: v2.users,
            hosts: v2.hosts,
            types: v2.types,
            images: v2.images,
            marketplace: v2.marketplace,
            endorsers: v2.endorsers,
            precache: v2.precache,
            instances: v2.instances,
            next_instance_id: v2.next_instance_id,
            cpu_allocation_ratio_percent: v2.cpu_allocation_ratio_percent,
            ipam: v2.ipam,
            volumes: v2.volumes,
            members: v2.members,
            instance_keys: v2.instance_keys,
            volume_keys: v2.volume_keys,
            trust: Trust {
                join_tokens: BTreeMap::new(),
                host_certificates: BTreeMap::new(),
                api_tokens: BTreeMap::new(),
                certificate_subjects: BTreeMap::new(),
            },
            audit: AuditLog {
                objects: BTreeMap::new(),
            },
        })
    }
}
