//! Request and view types of the HTTP API under `/api/v1`. Inputs deny unknown fields so a typo
//! is a 400 naming the field rather than a silently ignored option.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The JSON body of every error response.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiError {
    /// A stable machine-readable code, e.g. `unknown_image`, `not_found`, `no_leader`.
    pub code: String,
    /// A short human message naming the input at fault.
    pub message: String,
}

/// The lifecycle a user follows: Pending -> Booting -> Running -> Stopping -> Done, or Failed
/// (with a reason) from any state before Done. A Running instance can be powered off
/// (PoweringOff -> Stopped: it keeps its host, disk, addresses and persistent disks), started
/// again (Starting -> Running, on the same host with the same data) and rebooted (Rebooting ->
/// Running). New states are added at the end: the order is part of the stored format.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InstanceState {
    /// Accepted and placed on a host; the host has not started it yet.
    Pending,
    /// The host is preparing the disk and starting the domain.
    Booting,
    /// The domain runs.
    Running,
    /// A kill was asked; the host is tearing it down.
    Stopping,
    /// Gone: the domain and everything made for it are removed.
    Done,
    /// Could not be started or was lost; `reason` says why.
    Failed,
    /// Powered off (asked, or the guest shut itself down; `reason` says which): nothing runs,
    /// but the instance keeps its host reservation, disk, addresses and persistent disks.
    Stopped,
    /// A stop was asked; the host asks the guest to power off (and cuts the power after a
    /// timeout).
    PoweringOff,
    /// A start of a Stopped instance was asked; the host boots it again from its own disk.
    Starting,
    /// A reboot was asked; the host restarts the guest (an ACPI power-off request, the power
    /// cut after a timeout, then a boot from the same disk).
    Rebooting,
    /// Its host is down: the controller cannot tell what the guest does (it may still run, so
    /// it is never started elsewhere). Its host's next report says again.
    Unknown,
}

impl InstanceState {
    /// Every state, in the order of an instance's life (for counts by state).
    pub const ALL: [InstanceState; 11] = [
        Self::Pending,
        Self::Booting,
        Self::Running,
        Self::Unknown,
        Self::Stopping,
        Self::PoweringOff,
        Self::Stopped,
        Self::Starting,
        Self::Rebooting,
        Self::Done,
        Self::Failed,
    ];

    /// Done and Failed are final: nothing runs and nothing will.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Done | Self::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Booting => "Booting",
            Self::Running => "Running",
            Self::Stopping => "Stopping",
            Self::Done => "Done",
            Self::Failed => "Failed",
            Self::Stopped => "Stopped",
            Self::PoweringOff => "PoweringOff",
            Self::Starting => "Starting",
            Self::Rebooting => "Rebooting",
            Self::Unknown => "Unknown",
        }
    }
}

impl std::fmt::Display for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change of a placed instance's power, asked by its owner or an administrator
/// (`POST /api/v1/instances/{id}/stop|start|reboot`: the route's last segment).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum PowerAction {
    /// Power the guest off and keep everything (Running -> PoweringOff -> Stopped).
    Stop,
    /// Boot a Stopped instance again, on its host, from its own disk.
    Start,
    /// Restart a Running guest.
    Reboot,
}

impl PowerAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Start => "start",
            Self::Reboot => "reboot",
        }
    }

    /// The states the action is accepted in, as a user reads it.
    pub fn accepted_from(self) -> &'static str {
        match self {
            Self::Stop => "a Pending, Booting, Starting, Rebooting or Running instance",
            Self::Start => "a Stopped instance",
            Self::Reboot => "a Running instance",
        }
    }
}

impl std::fmt::Display for PowerAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /api/v1/instances`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"image": "appliance", "type": "t1.micro", "name": "web-1"})))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreateInstance {
    /// The image to run, by name.
    pub image: String,
    /// The instance type (size), e.g. `m1.small`; the site default when absent.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// An optional display name (letters, digits, `.`, `_`, `-`); defaults to `vm-<id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    )]
    pub name: Option<String>,
    /// The site network to attach the instance to; `public` when absent and the site defines
    /// it, else the instance gets no network interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// An OpenSSH public key (one `authorized_keys` line, e.g. `ssh-ed25519 AAAA... me@host`)
    /// the guest lets log in as root; at most 16 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_key: Option<String>,
    /// Text handed to the guest as user data (e.g. a cloud-init script); at most 64 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// UUIDs of persistent disks to attach at start (`vdb`, `vdc`, ... in this order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub persistent_disks: Vec<String>,
    /// A server group of the caller's (`POST /api/v1/groups`): the instance is placed by its
    /// policy, with the group's other instances (affinity) or away from them (anti-affinity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Labels its host must carry (e.g. `ssd`), as administrators set them on hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Start it elsewhere, from its image, when its host is down and an administrator fenced
    /// it (what its disk held since it started is lost; without it, it waits for its host).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub evacuate: bool,
    /// What its host does when the guest stops by itself (its emulator crashed or was killed,
    /// or it powered itself off): `never` (the default: it is reported Stopped with the
    /// reason) or `always` (its host starts it again, with its data, also while the
    /// controller is out of reach, and reports it).
    #[serde(default, skip_serializing_if = "RestartPolicy::is_never")]
    pub restart: RestartPolicy,
}

/// What a host does when a guest stops by itself.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum RestartPolicy {
    /// Report it Stopped, with the reason.
    #[default]
    Never,
    /// Start it again (with its data) and report that it was.
    Always,
}

impl RestartPolicy {
    pub fn is_never(&self) -> bool {
        *self == RestartPolicy::Never
    }
}

/// One state change of an instance.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StateChange {
    pub state: InstanceState,
    /// RFC 3339 time of the change.
    pub at: String,
    /// Why, for Failed (and for some other changes, e.g. who asked for a kill).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An instance as the API shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Instance {
    /// Small integer ID, unique for the life of the cloud.
    pub id: u64,
    pub name: String,
    pub owner: String,
    pub image: String,
    #[serde(rename = "type")]
    pub instance_type: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// The host it was placed on; absent when placement failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub state: InstanceState,
    /// Why it Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The libvirt domain name on its host.
    pub domain: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// RFC 3339 time of the last state change.
    pub updated: String,
    /// Every state change, oldest first.
    pub history: Vec<StateChange>,
    /// Its network interfaces, while it holds their addresses (not once Done, or Failed and
    /// cleaned up on its host).
    #[serde(default)]
    pub nics: Vec<Nic>,
    /// The address of its first interface, if any: what the user connects to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Its persistent disks (see `GET /api/v1/volumes` for whether a detaching one is stuck).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<crate::volumes::InstanceDisk>,
    /// The guest's recent CPU use in whole percent of one host CPU (as `top` shows it: up to
    /// 100 per vCPU), as its host last measured it; absent when it is not running or the node
    /// answering has no recent measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<u32>,
    /// The server group it was run in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Labels its host must carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Whether it is started elsewhere (from its image) when its host is down and fenced.
    #[serde(default)]
    pub evacuate: bool,
    /// What its host does when the guest stops by itself.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Who changed it and how (the audit trail), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
}

/// A change made to an object: when, by whom (a user, `user (token NAME)`,
/// `user (certificate)`, or `host NAME`) and what.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Change {
    /// RFC 3339.
    pub at: String,
    pub by: String,
    pub action: String,
}

/// A user account as the API shows it (`GET /api/v1/users`, administrators).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// Administers the cloud.
    pub admin: bool,
}

/// An instance type (size), as the user's guide lists them.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceType {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// Size the instance's root disk may grow to, in GiB.
    pub disk_gib: u64,
}

/// Disk image formats accepted for images.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Qcow2,
    Raw,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Qcow2 => "qcow2",
            Self::Raw => "raw",
        }
    }
}

/// Compression of a file as it is downloaded; hosts decompress while they hash and write.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Xz,
    Zstd,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Xz => "xz",
            Self::Zstd => "zstd",
        }
    }
}

/// A file a host fetches into its content-addressed cache: an image disk, a kernel, an initrd.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// Where to fetch it, tried in order: `http://`, `https://` or `file://` URLs.
    pub locations: Vec<String>,
    /// Lowercase hex SHA-256 of the content after decompression; the cache's key.
    pub sha256: String,
    /// Size in bytes after decompression. A download that grows past it is cut off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Compression of the file at the locations.
    #[serde(default)]
    pub compression: Compression,
}

/// `POST /api/v1/images`: register an image (admin only; the signed Marketplace comes later).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreateImage {
    /// Unique image name (letters, digits, `.`, `_`, `-`).
    pub name: String,
    /// The disk's real format; hosts refuse a disk whose header says otherwise.
    pub format: DiskFormat,
    /// The disk image.
    pub disk: Artifact,
    /// For direct kernel boot: the kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<Artifact>,
    /// For direct kernel boot: the initrd (needs a kernel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<Artifact>,
    /// For direct kernel boot: the kernel command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
}

/// An image as the API shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Image {
    pub name: String,
    pub format: DiskFormat,
    pub disk: Artifact,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<Artifact>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<Artifact>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    pub owner: String,
    pub created: String,
}

/// The hypervisor domain type a host runs guests with.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum DomainType {
    /// Hardware virtualisation.
    Kvm,
    /// Software emulation (TCG).
    Qemu,
}

impl DomainType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Qemu => "qemu",
        }
    }
}

/// A hypervisor host as the API shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    pub domain_type: DomainType,
    pub arch: String,
    pub hypervisor: String,
    /// vCPUs and memory taken by the instances placed here that are not Done or Failed.
    pub used_vcpus: u32,
    pub used_memory_mib: u64,
    /// Local disk those instances may fill, by their types (placement keeps it within
    /// `disk_gib`).
    #[serde(default)]
    pub used_disk_gib: u64,
    /// Instances placed here that are not Done or Failed.
    pub instances: u32,
    /// `up` while its agent keeps in touch, `down` after it has been silent too long (as the
    /// leader judged it; replicated, so every node says the same).
    pub status: String,
    /// RFC 3339 time it went up or down (absent: up since it registered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_since: Option<String>,
    /// Set while an administrator keeps new instances off it; those it runs stay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<HostMaintenance>,
    /// In maintenance and holding no instance any more: it may be shut down.
    #[serde(default)]
    pub drained: bool,
    /// RFC 3339 time it was fenced (declared dead while it was down, by an administrator or
    /// by its lease): its instances that may be evacuated start elsewhere. Cleared when it is
    /// back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fenced: Option<String>,
    /// Instances evacuated from it whose copy here it has not yet destroyed (it is told to
    /// when it is back).
    #[serde(default)]
    pub moved_away: Vec<u64>,
    /// RFC 3339 time the agent last talked to this controller (not replicated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// Domains the agent found that no instance accounts for (reported, never killed).
    pub unknown_domains: Vec<String>,
    /// SHA-256 of the artifacts in the host's image cache, as last reported.
    #[serde(default)]
    pub images: Vec<String>,
    /// SHA-256 of the disks an administrator asked the host to keep cached.
    #[serde(default)]
    pub precache: Vec<String>,
    /// GiB its volume pool may hold in all (the free room of its file system plus what its
    /// volumes occupy, as the host last measured it), when it stores persistent disks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_pool_gib: Option<u64>,
    /// GiB of volumes it stores.
    #[serde(default)]
    pub volume_pool_used_gib: u64,
    /// What it is for: `compute` (it runs instances), `storage` (it stores persistent disks
    /// when its agent has a volume pool), or both.
    #[serde(default = "HostRole::both")]
    pub roles: Vec<HostRole>,
    /// Labels an instance may require of its host (e.g. `ssd`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Who changed it and how (the audit trail), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
}

/// A host's maintenance, as an administrator set it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostMaintenance {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// RFC 3339 time it began.
    pub since: String,
}

/// `PATCH /api/v1/hosts/{name}` (admin): maintenance, roles and labels; each field left out
/// stays as it is.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"maintenance": true, "reason": "disk replacement"})))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UpdateHost {
    /// True: no new instances or disks are placed on it (those it holds stay). False: back in
    /// service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<bool>,
    /// Why, for other administrators (with `maintenance: true` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What it is for (at least one role): a storage-only host gets no instances, a
    /// compute-only host no new persistent disks. What it holds stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<HostRole>>,
    /// Its labels, replacing the earlier ones (letters, digits, `.`, `_`, `-`; at most 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
}

/// What a host is for.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum HostRole {
    /// It runs instances.
    Compute,
    /// It stores persistent disks.
    Storage,
}

impl HostRole {
    /// Both roles: a host nothing was said of.
    pub fn both() -> Vec<HostRole> {
        vec![HostRole::Compute, HostRole::Storage]
    }
}

impl fmt::Display for HostRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostRole::Compute => "compute",
            HostRole::Storage => "storage",
        })
    }
}

/// How a server group places its members.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum GroupPolicy {
    /// All on one host.
    Affinity,
    /// Each on a host of its own.
    AntiAffinity,
}

impl fmt::Display for GroupPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GroupPolicy::Affinity => "affinity",
            GroupPolicy::AntiAffinity => "anti-affinity",
        })
    }
}

/// `POST /api/v1/groups`: a server group of the caller's.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"name": "web", "policy": "anti-affinity"})))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    /// Letters, digits, `.`, `_`, `-`; unique among the caller's groups.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    )]
    pub name: String,
    pub policy: GroupPolicy,
}

/// A server group: instances run with `group` are placed by its policy.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub owner: String,
    pub policy: GroupPolicy,
    /// RFC 3339.
    pub created: String,
    /// Its instances that are not Done or Failed, and their hosts.
    pub members: Vec<GroupMember>,
}

/// An instance of a server group.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupMember {
    pub id: u64,
    pub state: InstanceState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// `POST /api/v1/hosts/{name}/images` (admin): fetch an image onto a host ahead of time.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PrecacheImage {
    /// A site image name or a Marketplace identifier (the site policy applies).
    pub image: String,
}

/// What a controller node is in the Raft group.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    Leader,
    Voter,
    /// Receives the log but does not vote yet (it is promoted once it caught up).
    Learner,
}

/// A member of the controller's Raft group.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterMember {
    pub id: u64,
    /// Where its peers reach it (host:port of its peer listener).
    pub address: String,
    /// Where its HTTP API is (host:port).
    pub api_address: String,
    pub role: MemberRole,
    /// The highest log index known to be on it (as the leader sees it; absent when the node
    /// answering is not the leader).
    pub match_index: Option<u64>,
    /// How many committed entries it lacks.
    pub lag: Option<u64>,
    /// Milliseconds since the leader last heard from it (0 for the leader itself).
    pub last_contact_ms: Option<u64>,
}

/// `GET /api/v1/cluster`: the Raft group as this node sees it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Cluster {
    /// Random ID chosen when the cluster was first created.
    pub cluster_id: String,
    /// This (answering) node's Raft ID.
    pub node_id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub members: Vec<ClusterMember>,
}

/// `POST /api/v1/cluster/members`: add a controller node (it must be running with
/// `join = true`). It joins as a learner and is promoted to voter once it caught up.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    pub id: u64,
    /// Its peer listener (host:port).
    pub address: String,
    /// Its HTTP API (host:port).
    pub api_address: String,
}

/// A Marketplace entry as the API shows it: signed metadata and who vouched for it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MarketplaceEntry {
    /// Upload order, unique in the registry.
    pub seq: u64,
    /// The image identifier (StratusLab style, from the image's SHA-256).
    pub identifier: String,
    pub endorser_email: String,
    /// The signing certificate's subject (RFC 4514).
    pub endorser_subject: String,
    /// SHA-256 of the signing certificate (DER), lowercase hex.
    pub cert_sha256: String,
    /// `ca` (chain to a trusted CA) or `endorser` (a registered endorser certificate).
    pub trusted_by: String,
    /// RFC 3339 time of the upload.
    pub uploaded: String,
    /// The metadata exactly as signed.
    pub metadata: crate::marketplace::ImageMetadata,
}

/// One page of Marketplace entries.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MarketplacePage {
    pub items: Vec<MarketplaceEntry>,
    /// Entries matching the query, over all pages.
    pub total: u64,
    pub offset: u64,
    pub limit: u64,
}

/// `GET /api/v1/images`: the site's own images and a page of the Marketplace.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageList {
    /// Images registered by the site's administrators (unsigned).
    pub site: Vec<Image>,
    /// Marketplace entries matching the query (by default the latest per image and endorser).
    pub marketplace: MarketplacePage,
}

/// `GET /api/v1/images/{identifier}/policy`: may this image run here, and from which entry.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyVerdict {
    pub identifier: String,
    pub allowed: bool,
    /// Stable code of the refusal, e.g. `deprecated`, `expired`, `checksum_denied`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Why it is refused, as a user would read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The entry an instance would use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<MarketplaceEntry>,
}

/// `POST /api/v1/endorsers` (admin): trust one endorser certificate directly.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegisterEndorser {
    /// The endorser's certificate, PEM.
    pub certificate: String,
}

/// A registered endorser.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Endorser {
    pub subject: String,
    pub emails: Vec<String>,
    /// SHA-256 of the certificate (DER), lowercase hex.
    pub cert_sha256: String,
    /// RFC 3339 end of the certificate's validity.
    pub not_after: String,
    /// RFC 3339 time it was registered, and by whom.
    pub added: String,
    pub added_by: String,
}

/// `POST /api/v1/networks` (admin), and a `[[networks]]` table of the controller's config: a
/// site network instances can be attached to.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"name": "private", "cidr": "192.0.2.0/28", "gateway": "192.0.2.1", "bridge": "br-private"})))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreateNetwork {
    /// Unique network name (letters, digits, `.`, `_`, `-`), e.g. `public` or `private`.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    )]
    pub name: String,
    /// The IPv4 network addresses are leased from, e.g. `192.0.2.0/24` (/8 to /30).
    pub cidr: String,
    /// The router's address, inside `cidr`; never leased.
    pub gateway: String,
    /// DNS servers the guests use (at most 3).
    #[serde(default)]
    pub dns: Vec<String>,
    /// The bridge on every host that instance interfaces on this network join (a Linux
    /// interface name, at most 15 characters).
    pub bridge: String,
    /// The 802.1Q VLAN ID (1 to 4094) interfaces are tagged with on the bridge, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
}

/// A site network as the API shows it, with its address usage.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    pub cidr: String,
    pub gateway: String,
    pub dns: Vec<String>,
    pub bridge: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// Addresses leased to instances.
    pub leases_used: u64,
    /// Addresses still free (host addresses, less the gateway and the leased ones).
    pub leases_free: u64,
}

/// One network interface of an instance.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Nic {
    /// The site network it is on.
    pub network: String,
    /// Its leased IPv4 address.
    pub ip: String,
    /// Its MAC address, derived from the address.
    pub mac: String,
}

/// `POST /api/v1/tokens`: an API token for the caller, to use as `Authorization: Bearer`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"name": "ci", "expires_in_secs": 86400})))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreateApiToken {
    /// What the user calls it (e.g. the machine or script using it).
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 64))]
    pub name: String,
    /// Seconds it lasts (1 to ten years); without it, until revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 315_360_000))]
    pub expires_in_secs: Option<u64>,
}

/// An API token as listed (never the secret).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiTokenView {
    pub id: String,
    pub name: String,
    pub owner: String,
    /// RFC 3339.
    pub created: String,
    /// RFC 3339; absent: until revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// A new API token: the secret is shown this once (only its digest is kept).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiTokenCreated {
    #[serde(flatten)]
    pub view: ApiTokenView,
    pub token: String,
}

/// `POST /api/v1/users/{name}/certificate-subjects` (administrators): a certificate subject
/// (RFC 4514, as `openssl x509 -subject -nameopt RFC2253` prints it) the user logs in with.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CertificateSubject {
    pub subject: String,
}
