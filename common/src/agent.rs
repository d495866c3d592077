//! The protocol between a host's agent and the controller: registration, the desired state the
//! agent long-polls for, and the actual state it reports back. Routes:
//! `POST /api/v1/hosts` (register), `GET /api/v1/hosts/{name}/desired?since=V&wait=S`,
//! `POST /api/v1/hosts/{name}/report`. Agents authenticate with the site's agent token as a
//! bearer token.

use serde::{Deserialize, Serialize};

use crate::api::{Artifact, DiskFormat, DomainType};

/// `POST /api/v1/hosts`: what an agent tells about its host when it starts.
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
}

/// The answer to a registration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Registered {
    /// The cluster's ID; domains carry it so two clouds on one host never mix their domains.
    pub cluster_id: String,
}

/// What the controller wants an agent's host to run.
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
}

/// What should happen to one instance on the host.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Desire {
    /// It should run (start it if it does not).
    Run,
    /// It should be gone: destroy the domain and remove everything made for it.
    Destroy,
}

/// One instance the controller placed on this host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DesiredInstance {
    pub id: u64,
    pub desire: Desire,
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
}

/// What a host needs to know of an image to boot from it.
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
}

/// One instance's actual state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReportedInstance {
    pub id: u64,
    pub state: ActualState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /api/v1/hosts/{name}/report`.
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
}

/// The libvirt domain name of an instance: unique per cluster and per host, made only of
/// generated values.
pub fn domain_name(cluster_id: &str, instance_id: u64) -> String {
    let short: String = cluster_id.chars().take(8).collect();
    format!("stratus-{short}-{instance_id}")
}
