//! The stored form of a Raft log entry: one [`Command`] of the state machine, and the
//! membership change a configuration-change entry carries.

use std::collections::BTreeSet;

use super::records::{
    ActualState, ApiToken, CertificateGrant, EndorserRecord, GroupPolicy, HostRecord, ImageRecord,
    ImageSpec, InstanceRules, InstanceType, JoinToken, Maintenance, MemberRecord, NetworkRecord,
    PowerAction, Quota, ReportedDisk, ReportedExport, ReportedInstance, ReportedVolume,
    UpdateVolume, UserRecord, VerifiedEntry, VolumeRecord, VolumeReport,
};
use super::{FormatError, Persist};
use crate::state::{Command, MemberChange};

/// `impl Persist` for a stored enum whose variants mirror the in-memory enum's, field by
/// field (struct variants) or of one value, named for the match (tuple variants): each field is stored and loaded
/// by its own `Persist`, so a variant or field that differs fails to compile.
macro_rules! persist_variants {
    ($stored:ident for $orig:ident {
        $($variant:ident $({ $($field:ident),* $(,)? })? $(($value:ident))?),* $(,)?
    }) => {
        impl Persist for $orig {
            type Stored = $stored;

            fn store(&self) -> $stored {
                match self {
                    $(
                        $($orig::$variant { $($field),* } => $stored::$variant {
                            $($field: Persist::store($field)),*
                        },)?
                        $($orig::$variant($value) => $stored::$variant(Persist::store($value)),)?
                    )*
                }
            }

            fn load(stored: $stored) -> Result<Self, FormatError> {
                Ok(match stored {
                    $(
                        $($stored::$variant { $($field),* } => $orig::$variant {
                            $($field: Persist::load($field)?),*
                        },)?
                        $($stored::$variant($value) => $orig::$variant(Persist::load($value)?),)?
                    )*
                })
            }
        }
    };
}

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
        entry: Box<VerifiedEntry>,
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
        record: Box<VolumeRecord>,
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
    // State-machine version 3.
    CreateJoinToken {
        digest: String,
        token: JoinToken,
    },
    IssueHostCertificate {
        host: String,
        serial: String,
        not_after_ms: u64,
        grant: CertificateGrant,
        at_ms: u64,
    },
    RevokeHost {
        host: String,
    },
    CreateApiToken {
        digest: String,
        token: ApiToken,
    },
    RevokeApiToken {
        id: String,
        caller: String,
        admin: bool,
    },
    MapCertificateSubject {
        subject: String,
        user: Option<String>,
    },
    // After state-machine version 3: the instance life-cycle, accounts, site images.
    PowerInstance {
        id: u64,
        action: PowerAction,
        at_ms: u64,
    },
    DeleteUser {
        name: String,
    },
    UpdateUser {
        name: String,
        password_hash: Option<String>,
        admin: Option<bool>,
    },
    DeleteImage {
        name: String,
    },
    By {
        actor: String,
        at_ms: u64,
        command: Box<Entry>,
    },
    // State-machine version 4: hosts' life.
    HostContact {
        host: String,
        up: bool,
        at_ms: u64,
    },
    HostMaintenance {
        host: String,
        maintenance: Option<Maintenance>,
    },
    RemoveHost {
        host: String,
        force: bool,
        at_ms: u64,
    },
    ReplaceInstance {
        id: u64,
        from: String,
        to: Option<String>,
        failure: Option<String>,
        at_ms: u64,
    },
    // State-machine version 5: placement rules.
    HostProfile {
        host: String,
        compute: Option<bool>,
        storage: Option<bool>,
        labels: Option<BTreeSet<String>>,
    },
    CreateGroup {
        owner: String,
        name: String,
        policy: GroupPolicy,
        at_ms: u64,
    },
    DeleteGroup {
        owner: String,
        name: String,
    },
    CreateInstanceWith {
        rules: InstanceRules,
        create: Box<Entry>,
    },
    FenceHost {
        host: String,
        at_ms: u64,
    },
    EvacuateInstance {
        id: u64,
        from: String,
        to: String,
        at_ms: u64,
    },
    // State-machine version 6: a host's whole report in one entry.
    HostReport {
        host: String,
        instances: Vec<ReportedInstance>,
        volumes: Vec<ReportedVolume>,
        exports: Vec<ReportedExport>,
        disks: Vec<ReportedDisk>,
        at_ms: u64,
    },
}

persist_variants!(Entry for Command {
    Bootstrap { cluster_id, admin, types, cpu_allocation_ratio_percent, first_member },
    CreateUser(user),
    RegisterHost(host),
    RegisterImage(image),
    AppendEntry { entry, uploaded_ms },
    RegisterEndorser(endorser),
    Precache { host, spec },
    Unpin { host, sha256 },
    DefineNetwork(network),
    CreateInstance { owner, name, image, image_spec, instance_type, host, failure, at_ms, network, ssh_key, user_data, volumes, idempotency_key },
    KillInstance { id, at_ms },
    ReportInstance { host, id, state, reason, at_ms },
    CreateVolume { record, quota, idempotency_key },
    ReportVolume { host, id, state, reason },
    UpdateVolume { id, caller, admin, update },
    DeleteVolume { id, caller, admin },
    AttachVolume { volume, instance, caller, admin, export, at_ms },
    DetachVolume { volume, instance, caller, admin, force, stuck_after_ms, at_ms },
    ReportExport { host, export },
    ReportDisk { host, disk, at_ms },
    CreateJoinToken { digest, token },
    IssueHostCertificate { host, serial, not_after_ms, grant, at_ms },
    RevokeHost { host },
    CreateApiToken { digest, token },
    RevokeApiToken { id, caller, admin },
    MapCertificateSubject { subject, user },
    PowerInstance { id, action, at_ms },
    DeleteUser { name },
    UpdateUser { name, password_hash, admin },
    DeleteImage { name },
    By { actor, at_ms, command },
    HostContact { host, up, at_ms },
    HostMaintenance { host, maintenance },
    RemoveHost { host, force, at_ms },
    ReplaceInstance { id, from, to, failure, at_ms },
    HostProfile { host, compute, storage, labels },
    CreateGroup { owner, name, policy, at_ms },
    DeleteGroup { owner, name },
    CreateInstanceWith { rules, create },
    FenceHost { host, at_ms },
    EvacuateInstance { id, from, to, at_ms },
    HostReport { host, instances, volumes, exports, disks, at_ms },
});

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

persist_variants!(StoredMemberChange for MemberChange {
    AddLearner { id, address, api_address, incarnation },
    Promote { id },
    Remove { id },
});
