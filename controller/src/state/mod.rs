//! The replicated state machine: every change to users, hosts, images and instances is a
//! [`Command`] committed through Raft and applied here by the pure [`State::apply`]. Apply reads
//! no clock, does no I/O and draws no random numbers: times, hashes and IDs chosen outside are
//! carried in the command, so every replica (and every replay after a restart) reaches the same
//! state.

pub mod audit;
pub mod effects;
mod evacuation;
mod host_life;
mod host_report;
mod instance_table;
mod instances;
pub mod ipam;
pub mod keys;
pub mod members;
mod placement;
pub mod trust;
mod users;
mod views;
pub mod volumes;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use stratus_common::agent::{ActualState, ImageSpec};
use stratus_common::api::{Artifact, DiskFormat, DomainType, InstanceType};

pub use audit::{AuditLog, Change};
pub use effects::{Effects, Event};
pub use host_life::{Holdings, HostLife, Maintenance};
pub use host_report::ReportOutcomes;
pub use instance_table::InstanceTable;
use instances::{GuestSetup, Placement};
pub use instances::{InstanceRecord, Transition, Usage};
pub use ipam::{Ipam, IpamError, NetworkRecord, NicRecord};
pub use keys::{Keyed, Keys};
pub use members::{MemberChange, MemberRecord};
pub use placement::{GroupPlacement, GroupRecord, HostProfile, InstanceRules};
pub use stratus_common::api::GroupPolicy;
pub use stratus_common::api::PowerAction;
pub use trust::{ApiToken, CertificateGrant, JoinToken, Trust, TrustError};
pub use views::{
    endorser_view, entry_view, group_view, host_view, image_view, instance_view, network_view,
    volume_view,
};
pub use volumes::{AttachmentRecord, ExportRecord, Quota, VolumeError, VolumeRecord};

use crate::marketplace::{Registry, RegistryError, VerifiedEntry};

/// A user account. The password is kept only as an argon2 PHC string.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserRecord {
    pub name: String,
    pub password_hash: String,
    pub admin: bool,
    pub created_ms: u64,
}

/// A hypervisor host, as its agent registered it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostRecord {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    pub domain_type: DomainType,
    pub arch: String,
    pub hypervisor: String,
    pub registered_ms: u64,
    /// GiB of its volume pool, when it stores persistent disks.
    #[serde(default)]
    pub volume_pool_gib: Option<u64>,
}

/// A registered image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    pub name: String,
    pub format: DiskFormat,
    pub disk: Artifact,
    pub kernel: Option<Artifact>,
    pub initrd: Option<Artifact>,
    pub cmdline: Option<String>,
    pub owner: String,
    pub created_ms: u64,
}

impl ImageRecord {
    pub fn spec(&self) -> ImageSpec {
        ImageSpec {
            name: self.name.clone(),
            format: self.format,
            disk: self.disk.clone(),
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            cmdline: self.cmdline.clone(),
        }
    }
}

/// An endorser certificate an administrator registered: entries it signs are trusted directly.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndorserRecord {
    /// The certificate, PEM.
    pub pem: String,
    /// SHA-256 of its DER, lowercase hex.
    pub cert_sha256: String,
    pub subject: String,
    pub emails: Vec<String>,
    /// End of validity, epoch milliseconds.
    pub not_after_ms: u64,
    pub added_ms: u64,
    pub added_by: String,
}

/// The whole replicated state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    /// Chosen at bootstrap; empty until then.
    pub cluster_id: String,
    pub users: BTreeMap<String, UserRecord>,
    pub hosts: BTreeMap<String, HostRecord>,
    pub types: BTreeMap<String, InstanceType>,
    pub images: BTreeMap<String, ImageRecord>,
    /// Signed image metadata, never forgotten.
    #[serde(default)]
    pub marketplace: Registry,
    /// Registered endorser certificates, by SHA-256.
    #[serde(default)]
    pub endorsers: BTreeMap<String, EndorserRecord>,
    /// Images administrators asked hosts to keep cached: host -> disk SHA-256 -> image.
    #[serde(default)]
    pub precache: BTreeMap<String, BTreeMap<String, ImageSpec>>,
    pub instances: InstanceTable,
    pub next_instance_id: u64,
    /// Overcommit of vCPUs allowed by placement (set at bootstrap from the site config).
    pub cpu_allocation_ratio_percent: u32,
    /// Site networks and their address leases.
    #[serde(default)]
    pub ipam: Ipam,
    /// Persistent disks, by UUID.
    #[serde(default)]
    pub volumes: BTreeMap<String, VolumeRecord>,
    /// The controller nodes and their peer addresses.
    #[serde(default)]
    pub members: BTreeMap<u64, MemberRecord>,
    /// Idempotency keys of instance creations, per owner: the instance each one made (kept a
    /// day, see `state/keys.rs`).
    #[serde(default)]
    pub instance_keys: Keys<u64>,
    /// Idempotency keys of volume creations, per owner: the volume each one made.
    #[serde(default)]
    pub volume_keys: Keys<String>,
    /// Join tokens, host certificates in force, API tokens, certificate subjects.
    #[serde(default)]
    pub trust: Trust,
    /// Who changed what, per object.
    #[serde(default)]
    pub audit: AuditLog,
    /// Hosts' life beyond their registration: up or down, maintenance (a host missing here
    /// is up and in service).
    #[serde(default)]
    pub host_life: BTreeMap<String, HostLife>,
    /// Hosts' roles and labels (a host missing here is for both roles, unlabelled).
    #[serde(default)]
    pub host_profiles: BTreeMap<String, HostProfile>,
    /// Server groups, by owner and name.
    #[serde(default)]
    pub groups: BTreeMap<String, BTreeMap<String, GroupRecord>>,
    /// The placement rules of the instances made with any (a group, required labels).
    #[serde(default)]
    pub instance_rules: BTreeMap<u64, InstanceRules>,
    /// Hosts an administrator fenced (declared dead while down), and since when.
    #[serde(default)]
    pub fenced: BTreeMap<String, u64>,
    /// Per host, the instances evacuated from it whose copy there it has not confirmed gone.
    #[serde(default)]
    pub moved_away: BTreeMap<String, BTreeSet<u64>>,
}

/// A change to the state, decided (with its time and any hashes) before it is proposed.
// Commands live only from proposal to apply; boxing the big ones would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Command {
    /// First start of a cluster: its ID, the first admin and the standard instance types.
    Bootstrap {
        cluster_id: String,
        admin: UserRecord,
        types: Vec<InstanceType>,
        cpu_allocation_ratio_percent: u32,
        /// The first node, the group's only voter.
        #[serde(default)]
        first_member: Option<MemberRecord>,
    },
    CreateUser(UserRecord),
    /// Remove an account (an administrator asked; see `state/users.rs` for when it may go).
    DeleteUser {
        name: String,
    },
    /// Change an account's password (its argon2 hash, made before proposing) or admin flag.
    UpdateUser {
        name: String,
        password_hash: Option<String>,
        admin: Option<bool>,
    },
    /// Remove a site image (instances made from it keep what they resolved).
    DeleteImage {
        name: String,
    },
    RegisterHost(HostRecord),
    RegisterImage(ImageRecord),
    /// A Marketplace entry whose signature and dates were verified before proposing.
    AppendEntry {
        entry: Box<VerifiedEntry>,
        uploaded_ms: u64,
    },
    RegisterEndorser(EndorserRecord),
    /// Keep `spec` cached on `host` (fetched ahead of time, never evicted while listed).
    Precache {
        host: String,
        spec: ImageSpec,
    },
    /// Stop keeping the image with this disk SHA-256 cached on `host`.
    Unpin {
        host: String,
        sha256: String,
    },
    /// A site network (from the config, or an administrator).
    DefineNetwork(NetworkRecord),
    /// A new instance, placed on `host` by the scheduler, or Failed with `failure` when no host
    /// could take it. A placed instance with a `network` leases an address there in the same
    /// step, or is not created at all when the network has none free.
    CreateInstance {
        owner: String,
        name: Option<String>,
        image: String,
        image_spec: ImageSpec,
        instance_type: String,
        host: Option<String>,
        failure: Option<String>,
        at_ms: u64,
        #[serde(default)]
        network: Option<String>,
        #[serde(default)]
        ssh_key: Option<String>,
        #[serde(default)]
        user_data: Option<String>,
        /// Persistent disks attached at start: (volume UUID, the export name to use if the
        /// instance lands on another host than the volume).
        #[serde(default)]
        volumes: Vec<(String, String)>,
        /// The client's idempotency key: a second creation with the same key by the same
        /// owner makes nothing and answers the instance the first one made.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idempotency_key: Option<String>,
    },
    KillInstance {
        id: u64,
        at_ms: u64,
    },
    /// Stop, start or reboot an instance (see [`PowerAction`]).
    PowerInstance {
        id: u64,
        action: PowerAction,
        at_ms: u64,
    },
    /// What a host's agent reports of one of its instances.
    ReportInstance {
        host: String,
        id: u64,
        state: ActualState,
        reason: Option<String>,
        at_ms: u64,
    },
    /// A new volume on the storage host chosen before proposing.
    CreateVolume {
        record: Box<VolumeRecord>,
        quota: Quota,
        /// As for instances: a second creation with the same key by the same owner makes
        /// nothing and answers the volume the first one made.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idempotency_key: Option<String>,
    },
    /// What a storage host did with one of its volumes.
    ReportVolume {
        host: String,
        id: String,
        state: stratus_common::agent::VolumeReport,
        reason: Option<String>,
    },
    UpdateVolume {
        id: String,
        caller: String,
        admin: bool,
        update: stratus_common::volumes::UpdateVolume,
    },
    DeleteVolume {
        id: String,
        caller: String,
        admin: bool,
    },
    /// Hot-plug a volume into a Running instance.
    AttachVolume {
        volume: String,
        instance: u64,
        caller: String,
        admin: bool,
        /// The export name to use if the instance is on another host than the volume.
        export: String,
        at_ms: u64,
    },
    /// Unplug a volume; `force` frees a stuck attachment (Detaching for `stuck_after_ms`).
    DetachVolume {
        volume: String,
        instance: u64,
        caller: String,
        admin: bool,
        force: bool,
        stuck_after_ms: u64,
        at_ms: u64,
    },
    /// A storage host's export is listening.
    ReportExport {
        host: String,
        export: stratus_common::agent::ReportedExport,
    },
    /// What an instance's host did with one of its persistent disks.
    ReportDisk {
        host: String,
        disk: stratus_common::agent::ReportedDisk,
        at_ms: u64,
    },
    /// A host's one-time join token, by its digest, made by an administrator.
    CreateJoinToken {
        digest: String,
        token: JoinToken,
    },
    /// A host certificate the CA signed before proposing, put in force if `grant` pays.
    IssueHostCertificate {
        host: String,
        serial: String,
        not_after_ms: u64,
        grant: CertificateGrant,
        at_ms: u64,
    },
    /// Every certificate and join token of `host` out of force.
    RevokeHost {
        host: String,
    },
    /// A user's API token, by its digest.
    CreateApiToken {
        digest: String,
        token: ApiToken,
    },
    RevokeApiToken {
        id: String,
        caller: String,
        admin: bool,
    },
    /// A certificate subject a user logs in with (`None`: no user any more).
    MapCertificateSubject {
        subject: String,
        user: Option<String>,
    },
    /// The leader judged `host`'s agent in touch (`up`) or silent past the timeout.
    HostContact {
        host: String,
        up: bool,
        at_ms: u64,
    },
    /// Instance `id`, Pending on `from` which went down, placed on `to` by the scheduler, or
    /// Failed with `failure` when none could take it.
    ReplaceInstance {
        id: u64,
        from: String,
        to: Option<String>,
        failure: Option<String>,
        at_ms: u64,
    },
    /// An administrator put `host` in maintenance (no new instances) or back in service.
    HostMaintenance {
        host: String,
        maintenance: Option<Maintenance>,
    },
    /// An administrator removed `host` (`force`: even though it holds instances or disks,
    /// for a host that is down and gone for good).
    RemoveHost {
        host: String,
        force: bool,
        at_ms: u64,
    },
    /// `command`, asked for by `actor` (a user, by password, token or certificate, or a host)
    /// at `at_ms`: applied as it is, and recorded in the audit log of the objects it changed.
    /// An administrator's change of a host's roles or labels (what is left out stays).
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
    /// An administrator declares host `host`, which is down, dead: its instances that opted
    /// into evacuation may be started elsewhere.
    FenceHost {
        host: String,
        at_ms: u64,
    },
    /// Instance `id`, Unknown on fenced host `from`, starts again on `to`.
    EvacuateInstance {
        id: u64,
        from: String,
        to: String,
        at_ms: u64,
    },
    /// A [`Command::CreateInstance`] with placement rules: its host is checked against them as
    /// well, and they are kept for placing it again.
    CreateInstanceWith {
        rules: InstanceRules,
        create: Box<Command>,
    },
    /// Everything a host reported in one call, as one entry: applied as the single reports
    /// ([`Command::ReportInstance`], [`Command::ReportVolume`], [`Command::ReportExport`],
    /// [`Command::ReportDisk`]) one after the other in this order, each wrapped in the
    /// [`Command::By`] around this one, so events and audit records are theirs. A refused item
    /// does not stop the others; [`Outcome::HostReported`] says what each came to.
    HostReport {
        host: String,
        instances: Vec<stratus_common::agent::ReportedInstance>,
        volumes: Vec<stratus_common::agent::ReportedVolume>,
        exports: Vec<stratus_common::agent::ReportedExport>,
        disks: Vec<stratus_common::agent::ReportedDisk>,
        at_ms: u64,
    },
    By {
        actor: String,
        at_ms: u64,
        command: Box<Command>,
    },
}

impl Command {
    /// The command itself, out of any [`Command::By`] around it (and the creation out of
    /// its placement rules).
    pub fn inner(&self) -> &Command {
        match self {
            Command::By { command, .. } => command.inner(),
            Command::CreateInstanceWith { create, .. } => create.inner(),
            other => other,
        }
    }
}

/// What a successfully applied command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Nothing changed (e.g. a report repeating the known state).
    Unchanged,
    InstanceCreated(u64),
    /// The volume made (or made before, by a creation with the same idempotency key).
    VolumeCreated(String),
    EntryAppended(u64),
    /// What each item of a [`Command::HostReport`] came to.
    HostReported(ReportOutcomes),
}

/// Why a command was refused. Refusals are deterministic: every replica refuses alike.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the cluster is already bootstrapped")]
    AlreadyBootstrapped,
    #[error("user {0} already exists")]
    UserExists(String),
    #[error("image {0} already exists")]
    ImageExists(String),
    #[error("site image {0} not found")]
    UnknownImage(String),
    #[error("user {0} not found")]
    UnknownUser(String),
    #[error("user {0} is the last administrator")]
    LastAdmin(String),
    #[error("user {name} still owns {instances} instance(s) and {volumes} volume(s): kill and delete them first")]
    UserOwns {
        name: String,
        instances: usize,
        volumes: usize,
    },
    #[error("endorser certificate {0} is already registered")]
    EndorserExists(String),
    #[error(transparent)]
    Marketplace(#[from] RegistryError),
    #[error("unknown instance type {0}")]
    UnknownType(String),
    #[error("unknown host {0}")]
    UnknownHost(String),
    #[error(
        "host {host} still holds {instances} instance(s) and {volumes} volume(s): move or \
         delete them first, or force the removal of a host that is down and gone for good"
    )]
    HostHolds {
        host: String,
        instances: usize,
        volumes: usize,
    },
    #[error("instance {id} cannot be placed again: {why}")]
    NotReplaceable { id: u64, why: String },
    #[error("host {0} is up: only a host that is down can be removed by force")]
    HostUp(String),
    #[error("host {host} takes no new instances: it is {why}")]
    HostUnschedulable { host: String, why: &'static str },
    #[error("instance {0} not found")]
    UnknownInstance(u64),
    #[error("host {0} needs at least one role (compute or storage)")]
    NoRole(String),
    #[error("server group {0} already exists")]
    GroupExists(String),
    #[error("server group {0} not found")]
    UnknownGroup(String),
    #[error(
        "server group {name} still has {instances} instance(s) that are not Done: kill them first"
    )]
    GroupInUse { name: String, instances: usize },
    #[error("host {0} is up: only a host whose agent is out of touch can be fenced")]
    FenceUp(String),
    #[error("instance {id} cannot be evacuated: {why}")]
    NotEvacuable { id: u64, why: String },
    #[error("placement rules apply only to an instance's creation")]
    RulesWithoutCreation,
    #[error("host {host} no longer has room for {vcpus} vCPU and {memory_mib} MiB")]
    NoRoom {
        host: String,
        vcpus: u32,
        memory_mib: u64,
    },
    #[error("instance {0} is already Done")]
    AlreadyDone(u64),
    #[error("instance {id} is {state}: only {} can be {}", action.accepted_from(), past(*action))]
    WrongState {
        id: u64,
        state: stratus_common::api::InstanceState,
        action: PowerAction,
    },
    #[error("image {sha256} is not pinned on host {host}")]
    NotPinned { host: String, sha256: String },
    #[error("instance {id} is not placed on host {host}")]
    WrongHost { id: u64, host: String },
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Trust(#[from] TrustError),
}

impl State {
    pub fn is_bootstrapped(&self) -> bool {
        !self.cluster_id.is_empty()
    }

    /// Applies one committed command. Pure and deterministic.
    pub fn apply(&mut self, command: Command) -> Result<Outcome, Rejection> {
        self.apply_with_effects(command).0
    }

    /// Applies one committed command and says what it changed: the events and the hosts whose
    /// desired state may differ. Pure and deterministic, effects included.
    pub fn apply_with_effects(
        &mut self,
        command: Command,
    ) -> (Result<Outcome, Rejection>, Effects) {
        match host_report::HostReport::split(command) {
            Ok(report) => self.apply_host_report(report),
            Err(command) => self.apply_single(command),
        }
    }

    /// [`Self::apply_with_effects`] of any command but a host's whole report.
    fn apply_single(&mut self, command: Command) -> (Result<Outcome, Rejection>, Effects) {
        let before = effects::Before::capture(self, command.inner());
        let at_ms = match &command {
            Command::By { at_ms, .. } => Some(*at_ms),
            _ => None,
        };
        let result = self.apply_command(command);
        let mut effects = before.diff(self, &result);
        if !effects.events.is_empty() {
            effects.at_ms = at_ms;
        }
        (result, effects)
    }

    fn apply_command(&mut self, command: Command) -> Result<Outcome, Rejection> {
        match command {
            Command::Bootstrap {
                cluster_id,
                admin,
                types,
                cpu_allocation_ratio_percent,
                first_member,
            } => {
                if self.is_bootstrapped() {
                    return Err(Rejection::AlreadyBootstrapped);
                }
                if let Some(member) = first_member {
                    self.members.insert(member.id, member);
                }
                self.cluster_id = cluster_id;
                self.cpu_allocation_ratio_percent = cpu_allocation_ratio_percent;
                self.next_instance_id = 1;
                self.users.insert(admin.name.clone(), admin);
                self.types = types.into_iter().map(|t| (t.name.clone(), t)).collect();
                Ok(Outcome::Applied)
            }
            Command::CreateUser(user) => {
                if self.users.contains_key(&user.name) {
                    return Err(Rejection::UserExists(user.name));
                }
                self.users.insert(user.name.clone(), user);
                Ok(Outcome::Applied)
            }
            Command::DeleteUser { name } => self.delete_user(&name),
            Command::UpdateUser {
                name,
                password_hash,
                admin,
            } => self.update_user(&name, password_hash, admin),
            Command::DeleteImage { name } => match self.images.remove(&name) {
                Some(_) => Ok(Outcome::Applied),
                None => Err(Rejection::UnknownImage(name)),
            },
            Command::RegisterHost(mut host) => {
                if let Some(known) = self.hosts.get(&host.name) {
                    // A re-registration keeps the original registration time.
                    host.registered_ms = known.registered_ms;
                    if *known == host {
                        return Ok(Outcome::Unchanged);
                    }
                }
                self.hosts.insert(host.name.clone(), host);
                Ok(Outcome::Applied)
            }
            Command::RegisterImage(image) => {
                if self.images.contains_key(&image.name) {
                    return Err(Rejection::ImageExists(image.name));
                }
                self.images.insert(image.name.clone(), image);
                Ok(Outcome::Applied)
            }
            Command::AppendEntry { entry, uploaded_ms } => {
                let seq = self.marketplace.append(*entry, uploaded_ms)?;
                Ok(Outcome::EntryAppended(seq))
            }
            Command::RegisterEndorser(record) => {
                if self.endorsers.contains_key(&record.cert_sha256) {
                    return Err(Rejection::EndorserExists(record.cert_sha256));
                }
                self.endorsers.insert(record.cert_sha256.clone(), record);
                Ok(Outcome::Applied)
            }
            Command::Precache { host, spec } => {
                if !self.hosts.contains_key(&host) {
                    return Err(Rejection::UnknownHost(host));
                }
                let pins = self.precache.entry(host).or_default();
                match pins.insert(spec.disk.sha256.clone(), spec.clone()) {
                    Some(old) if old == spec => Ok(Outcome::Unchanged),
                    _ => Ok(Outcome::Applied),
                }
            }
            Command::Unpin { host, sha256 } => {
                let removed = self
                    .precache
                    .get_mut(&host)
                    .and_then(|pins| pins.remove(&sha256));
                if self.precache.get(&host).is_some_and(BTreeMap::is_empty) {
                    self.precache.remove(&host);
                }
                match removed {
                    Some(_) => Ok(Outcome::Applied),
                    None => Err(Rejection::NotPinned { host, sha256 }),
                }
            }
            create @ Command::CreateInstance { .. } => {
                self.apply_create_instance(create, InstanceRules::default())
            }
            Command::DefineNetwork(record) => match self.ipam.define(record)? {
                true => Ok(Outcome::Applied),
                false => Ok(Outcome::Unchanged),
            },
            Command::KillInstance { id, at_ms } => {
                let outcome = self.kill_instance(id, at_ms);
                self.release_finished_leases(id);
                self.release_finished_volumes(id);
                outcome
            }
            Command::PowerInstance { id, action, at_ms } => self.power_instance(id, action, at_ms),
            Command::ReportInstance {
                host,
                id,
                state,
                reason,
                at_ms,
            } => {
                let outcome = self.report_instance(&host, id, state, reason, at_ms);
                self.release_finished_leases(id);
                self.release_finished_volumes(id);
                outcome
            }
            Command::CreateVolume {
                record,
                quota,
                idempotency_key,
            } => {
                if let Some(id) = idempotency_key
                    .as_deref()
                    .and_then(|key| self.volume_keys.get(&record.owner, key))
                {
                    return Ok(Outcome::VolumeCreated(id.clone()));
                }
                let (owner, id, at_ms) =
                    (record.owner.clone(), record.id.clone(), record.created_ms);
                self.create_volume(*record, quota)?;
                if let Some(key) = idempotency_key {
                    self.volume_keys.remember(owner, key, id.clone(), at_ms);
                }
                Ok(Outcome::VolumeCreated(id))
            }
            Command::ReportVolume {
                host,
                id,
                state,
                reason,
            } => Ok(self.report_volume(&host, &id, state, reason)?),
            Command::UpdateVolume {
                id,
                caller,
                admin,
                update,
            } => Ok(self.update_volume(&id, &caller, admin, update)?),
            Command::DeleteVolume { id, caller, admin } => {
                Ok(self.delete_volume(&id, &caller, admin)?)
            }
            Command::AttachVolume {
                volume,
                instance,
                caller,
                admin,
                export,
                at_ms,
            } => Ok(self.attach_volume(&volume, instance, &caller, admin, export, at_ms)?),
            Command::DetachVolume {
                volume,
                instance,
                caller,
                admin,
                force,
                stuck_after_ms,
                at_ms,
            } => Ok(self.detach_volume(
                &volume,
                instance,
                &caller,
                admin,
                force,
                stuck_after_ms,
                at_ms,
            )?),
            Command::ReportExport { host, export } => Ok(self.report_export(&host, export)?),
            Command::ReportDisk { host, disk, at_ms } => Ok(self.report_disk(&host, disk, at_ms)?),
            Command::CreateJoinToken { digest, token } => {
                self.trust.create_join_token(digest, token);
                Ok(Outcome::Applied)
            }
            Command::IssueHostCertificate {
                host,
                serial,
                not_after_ms,
                grant,
                at_ms,
            } => {
                self.trust
                    .issue_host_certificate(&host, serial, not_after_ms, grant, at_ms)?;
                Ok(Outcome::Applied)
            }
            Command::RevokeHost { host } => Ok(if self.trust.revoke_host(&host) {
                Outcome::Applied
            } else {
                Outcome::Unchanged
            }),
            Command::CreateApiToken { digest, token } => {
                self.trust.create_api_token(digest, token);
                Ok(Outcome::Applied)
            }
            Command::RevokeApiToken { id, caller, admin } => {
                self.trust.revoke_api_token(&id, &caller, admin)?;
                Ok(Outcome::Applied)
            }
            Command::MapCertificateSubject { subject, user } => {
                self.trust.map_subject(subject, user, &self.users)?;
                Ok(Outcome::Applied)
            }
            Command::HostContact { host, up, at_ms } => self.host_contact(&host, up, at_ms),
            Command::ReplaceInstance {
                id,
                from,
                to,
                failure,
                at_ms,
            } => self.replace_instance(id, &from, to, failure, at_ms),
            Command::HostMaintenance { host, maintenance } => {
                self.host_maintenance(&host, maintenance)
            }
            Command::RemoveHost { host, force, at_ms } => self.remove_host(&host, force, at_ms),
            Command::HostProfile {
                host,
                compute,
                storage,
                labels,
            } => self.set_host_profile(&host, compute, storage, labels),
            Command::CreateGroup {
                owner,
                name,
                policy,
                at_ms,
            } => self.create_group(owner, name, policy, at_ms),
            Command::DeleteGroup { owner, name } => self.delete_group(&owner, &name),
            Command::FenceHost { host, at_ms } => self.fence_host(&host, at_ms),
            Command::EvacuateInstance {
                id,
                from,
                to,
                at_ms,
            } => self.evacuate_instance(id, &from, &to, at_ms),
            Command::CreateInstanceWith { rules, create } => {
                self.apply_create_instance(*create, rules)
            }
            // Reached only inside two `By`s (apply_with_effects takes a report out of one):
            // applied alike, its items unwrapped.
            report @ Command::HostReport { .. } => match host_report::HostReport::split(report) {
                Ok(report) => self.apply_host_report(report).0,
                Err(_) => unreachable!("a report splits"),
            },
            Command::By {
                actor,
                at_ms,
                command,
            } => {
                let described = audit::describe(self, &command);
                let outcome = self.apply_command(*command)?;
                self.audit
                    .record_applied(described, &outcome, &actor, at_ms);
                Ok(outcome)
            }
        }
    }

    /// Applies a [`Command::CreateInstance`] with placement `rules`.
    fn apply_create_instance(
        &mut self,
        create: Command,
        rules: InstanceRules,
    ) -> Result<Outcome, Rejection> {
        let Command::CreateInstance {
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
        } = create
        else {
            return Err(Rejection::RulesWithoutCreation);
        };
        if let Some(id) = idempotency_key
            .as_deref()
            .and_then(|key| self.instance_for_key(&owner, key))
        {
            return Ok(Outcome::InstanceCreated(id));
        }
        let key_owner = owner.clone();
        let placement = Placement {
            host,
            failure,
            rules,
        };
        let guest = GuestSetup {
            network,
            ssh_key,
            user_data,
            volumes,
        };
        let outcome = self.create_instance(
            owner,
            name,
            image,
            image_spec,
            instance_type,
            placement,
            guest,
            at_ms,
        );
        if let (Ok(Outcome::InstanceCreated(id)), Some(key)) = (&outcome, idempotency_key) {
            self.instance_keys.remember(key_owner, key, *id, at_ms);
        }
        outcome
    }

    /// Gives back the addresses of instance `id` once it no longer holds them. Called after
    /// every command that can change an instance's state, so no path can forget it.
    fn release_finished_leases(&mut self, id: u64) {
        if let Some(instance) = self.instances.get(&id) {
            if !instance.holds_lease() {
                for nic in &instance.nics {
                    self.ipam.release(nic, id);
                }
            }
        }
    }
}

/// "stopped", "started", "rebooted": for [`Rejection::WrongState`]'s message.
fn past(action: PowerAction) -> &'static str {
    match action {
        PowerAction::Stop => "stopped",
        PowerAction::Start => "started",
        PowerAction::Reboot => "rebooted",
    }
}

/// The standard instance types, after the StratusLab client's list: the types of every
/// cluster (its bootstrap records them, and they never change).
pub fn standard_types() -> Vec<InstanceType> {
    STANDARD_TYPES
        .into_iter()
        .map(|(name, vcpus, memory_mib, disk_gib)| InstanceType {
            name: name.to_owned(),
            vcpus,
            memory_mib,
            disk_gib,
        })
        .collect()
}

/// The local disk an instance of type `name` may fill, in GiB (0 for a type unknown here).
/// From the standard types, which are every cluster's, so the per-host sums of the instance
/// table need no state beside the records.
pub fn type_disk_gib(name: &str) -> u64 {
    STANDARD_TYPES
        .iter()
        .find(|(n, ..)| *n == name)
        .map_or(0, |&(.., disk_gib)| disk_gib)
}

/// Name, vCPUs, memory (MiB), local disk (GiB).
const STANDARD_TYPES: [(&str, u32, u64, u64); 6] = [
    ("t1.micro", 1, 128, 1),
    ("m1.small", 1, 256, 2),
    ("c1.medium", 2, 512, 4),
    ("m1.large", 2, 1024, 8),
    ("m1.xlarge", 4, 2048, 16),
    ("c1.xlarge", 8, 4096, 32),
];

#[cfg(test)]
mod determinism_tests;
#[cfg(test)]
mod effects_tests;
#[cfg(test)]
mod evacuation_tests;
#[cfg(test)]
mod host_life_tests;
#[cfg(test)]
mod host_report_tests;
#[cfg(test)]
mod placement_tests;
#[cfg(test)]
mod power_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod volume_tests;
