//! The stored form of a state-machine snapshot: the whole replicated [`State`].

use std::collections::BTreeMap;

use super::records::{
    EndorserRecord, HostRecord, ImageRecord, ImageSpec, InstanceRecord, InstanceType, Ipam, Keys,
    MemberRecord, StoredEntry, UserRecord, VolumeRecord,
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
    }
);
