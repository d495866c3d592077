//! The protocol between a host's agent and the controller: registration, the desired state the
//! agent long-polls for, and the actual state it reports back. Routes:
//! `POST /api/v1/hosts` (register), `GET /api/v1/hosts/{name}/desired?since=V&wait=S`,
//! `POST /api/v1/hosts/{name}/report`. Agents authenticate with the site's agent token as a
//! bearer token.

use serde::{Deserialize, Serialize};

use crate::api::{Artifact, DiskFormat, DomainType};

/// `POST /api/v1/hosts`: what an agent tells about its host when it starts.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegisterHost {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    pub domain_type: DomainType,
    /// Machine architecture, e.g. `x86_64`.
    pub arch: String,
    /// Hypervisor name and version, e.g. `QEMU 7.2.0 (libvirt 9.0.0)`.
    pub hypervisor: String,
    /// GiB the host's volume pool may hold in all, when it stores persistent disks: the free
    /// room of its file system plus what its volumes occupy (see `VolumePool::capacity`); the
    /// host registers again when it moves by a GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_pool_gib: Option<u64>,
}

/// `POST /api/v1/hosts/{name}/join-tokens` (administrators): a one-time token a new host
/// enrols with.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreateJoinToken {
    /// How long the token may be used, in seconds (default an hour, at most a week).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
}

/// A join token, shown once: only its digest is kept.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JoinTokenCreated {
    pub host: String,
    pub token: String,
    /// RFC 3339.
    pub expires: String,
}

/// `POST /api/v1/hosts/{name}/certificate`: a host asks for a certificate, with a join token
/// (enrolment) or with its certificate in force (renewal, over mutual TLS).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EnrolHost {
    /// A PKCS#10 certificate request (PEM) for the host's new key; only its key is used.
    pub csr: String,
    /// The join token an administrator made for this host; absent for a renewal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_token: Option<String>,
}

/// A host's certificate, signed by the site CA.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostCertificate {
    pub host: String,
    /// PEM.
    pub certificate: String,
    /// The site CA's certificate, PEM.
    pub ca_certificate: String,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
}

/// The answer to a registration.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Registered {
    /// The cluster's ID; domains carry it so two clouds on one host never mix their domains.
    pub cluster_id: String,
}

/// What the controller wants an agent's host to run.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostDesired {
    /// Grows with every change of the controller's state; pass it back as `since` to wait for
    /// the next change.
    pub version: u64,
    pub cluster_id: String,
    pub instances: Vec<DesiredInstance>,
    /// Images an administrator asked this host to fetch ahead of time and keep (pinned in the
    /// cache while listed).
    #[serde(default)]
    pub precache: Vec<ImageSpec>,
    /// Persistent disks this host stores (it has a volume pool).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<DesiredVolume>,
    /// NBD exports this host serves, one per attachment of one of its volumes to an instance
    /// on another host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exports: Vec<DesiredExport>,
    /// The host's lease, in seconds, when the site fences hosts by lease: an agent that has
    /// not heard from the controller for this long since it sent its last answered request
    /// destroys its guests that may be evacuated (self-fencing), as the controller may start
    /// them elsewhere a margin later. Absent: the site fences only by an administrator's word.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_secs: Option<u64>,
}

/// A volume the host's pool should hold, or no longer hold.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DesiredVolume {
    /// Its UUID (also its file name in the pool).
    pub id: String,
    pub size_bytes: u64,
    /// `false`: delete it.
    pub present: bool,
}

/// An NBD export of a volume for one attachment.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DesiredExport {
    /// The export's name: random, decided by the controller, known only to the two hosts.
    pub name: String,
    pub volume: String,
    pub read_only: bool,
    /// The host whose instance uses it: the export opens only for a client presenting that
    /// host's certificate (empty from a controller that predates it: not served).
    #[serde(default)]
    pub client: String,
}

/// A persistent disk of an instance, as its host must present it to the guest.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DesiredDisk {
    pub volume: String,
    /// `vdb` to `vdz`.
    pub target: String,
    pub read_only: bool,
    pub source: DiskLocation,
    /// `false`: unplug it (the guest must release it).
    pub attach: bool,
}

/// Where the host finds a persistent disk.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum DiskLocation {
    /// In this host's own volume pool.
    Local,
    /// On another host, over NBD.
    Nbd {
        host: String,
        port: u16,
        export: String,
        /// The storage host's name: the connection is TLS and the server must present that
        /// host's certificate (absent from a controller that predates it: plain NBD).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tls_server: Option<String>,
    },
    /// On another host, whose export is not ready yet.
    Pending,
}

/// What should happen to one instance on the host.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Desire {
    /// It should run (start it if it does not).
    Run,
    /// It should be gone: destroy the domain and remove everything made for it.
    Destroy,
    /// It should not run, but keep everything: power the guest off (an ACPI request, the power
    /// cut after a timeout) and keep its directory (disk, console log) for a later start.
    Stop,
}

/// One instance the controller placed on this host.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DesiredInstance {
    pub id: u64,
    pub desire: Desire,
    /// How many starts and reboots were asked of this instance so far. A host whose domain
    /// was booted for an older generation restarts it (a reboot); one whose domain of the
    /// current generation vanished on its own reports it Stopped (the guest powered off).
    #[serde(default)]
    pub generation: u64,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub image: ImageSpec,
    /// The instance's network interfaces (leases decided by the controller).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<crate::network::NicSpec>,
    /// The user's SSH public key, for the guest's authorized keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_key: Option<String>,
    /// The user's data, passed to the guest as cloud-init user-data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// The instance's name, for the guest's host name (the agent makes it a valid host name).
    #[serde(default)]
    pub hostname: String,
    /// Persistent disks: attached at start, hot-plugged or unplugged while it runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DesiredDisk>,
    /// When the API accepted the request this generation answers (the instance's creation,
    /// or its latest start or reboot), milliseconds since the Unix epoch: the host measures
    /// from it the time to the guest running (its metrics). Absent from older controllers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_at_ms: Option<u64>,
    /// The controller lost track of this instance (its host was counted down): report its
    /// state again even if it did not change since the last report.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub confirm: bool,
    /// What to do when the guest stops by itself (the agent applies it on its own, also
    /// while the controller is out of reach).
    #[serde(default)]
    pub restart: crate::api::RestartPolicy,
    /// The instance may be started elsewhere once its host is fenced: its host destroys it
    /// when its lease expires (see [`HostDesired::lease_secs`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub evacuate: bool,
}

/// What a host needs to know of an image to boot from it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageSpec {
    /// The image's name or Marketplace identifier (for messages only).
    pub name: String,
    pub format: DiskFormat,
    pub disk: Artifact,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<Artifact>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<Artifact>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
}

/// The state of one instance as its host sees it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ActualState {
    /// Preparing the disk or starting the domain.
    Booting,
    /// The domain runs.
    Running,
    /// It could not be started, or its domain stopped without being asked to.
    Failed,
    /// Destroyed and cleaned up, as asked.
    Gone,
    /// Powered off (as asked, or by the guest itself); its disk and files are kept.
    Stopped,
}

impl ActualState {
    /// The name the protocol uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Booting => "booting",
            Self::Running => "running",
            Self::Failed => "failed",
            Self::Gone => "gone",
            Self::Stopped => "stopped",
        }
    }
}

/// One instance's actual state.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReportedInstance {
    pub id: u64,
    pub state: ActualState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /api/v1/hosts/{name}/report`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostReport {
    pub instances: Vec<ReportedInstance>,
    /// Names of domains on the host that carry no instance of this cluster.
    #[serde(default)]
    pub unknown_domains: Vec<String>,
    /// SHA-256 of every artifact in the host's image cache, when it changed since the last
    /// report (absent: unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
    /// Changes of the volumes the host stores.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<ReportedVolume>,
    /// Exports the host serves, once listening.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exports: Vec<ReportedExport>,
    /// Changes of the persistent disks of the host's instances.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<ReportedDisk>,
}

/// The controller's answer to a host's report: the instance reports it refused (the instance
/// is not placed on this host any more, or not at all). A host that asked to confirm a start
/// does not start a refused one.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReportAnswer {
    #[serde(default)]
    pub refused: Vec<RefusedReport>,
}

/// One instance report the controller refused, and why.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefusedReport {
    pub id: u64,
    pub reason: String,
}

/// What a storage host did with a volume.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReportedVolume {
    pub id: String,
    pub state: VolumeReport,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum VolumeReport {
    /// The file exists with its size.
    Ready,
    /// It could not be made.
    Failed,
    /// Deleted as asked.
    Deleted,
}

impl VolumeReport {
    /// The name the protocol uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Failed => "failed",
            Self::Deleted => "deleted",
        }
    }
}

/// An export listening for its attachment's host.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReportedExport {
    pub name: String,
    pub host: String,
    pub port: u16,
}

/// What happened to one persistent disk of an instance.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReportedDisk {
    pub instance: u64,
    pub volume: String,
    pub state: DiskReport,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum DiskReport {
    /// The guest has the device.
    Attached,
    /// libvirt reported the device removed (the guest released it), or the domain is gone.
    Detached,
    /// Plugging it in failed (see `reason`); the guest does not have it.
    Failed,
}

impl DiskReport {
    /// The name the protocol uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Attached => "attached",
            Self::Detached => "detached",
            Self::Failed => "failed",
        }
    }
}

/// The libvirt domain name of an instance: unique per cluster and per host, made only of
/// generated values.
pub fn domain_name(cluster_id: &str, instance_id: u64) -> String {
    let short: String = cluster_id.chars().take(8).collect();
    format!("stratus-{short}-{instance_id}")
}
