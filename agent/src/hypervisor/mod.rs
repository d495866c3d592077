//! The hypervisor seam: everything the agent asks of libvirt goes through [`Hypervisor`], so
//! reconciliation is tested against [`FakeHypervisor`] and only [`LibvirtHypervisor`] talks
//! to the real daemon.
//!
//! Domains are transient (created from XML and started in one call, gone once destroyed or
//! powered off): the controller's desired state, not libvirt's persistent configuration, is
//! the record of what should run. Each domain carries an [`InstanceTag`] in its metadata so
//! the agent recognises its own domains (and its own cluster's) among everything libvirt runs.
//!
//! Persistent disks ([`DomainDisk`]) are attached at start (in the domain XML) or hot-plugged
//! into the live domain. An unplug is only a request to the guest: the device is gone when
//! libvirt removes it from the live definition ([`Hypervisor::disk_targets`]), which it does
//! once QEMU reports the guest released it.

pub mod domain_stats;
pub mod fake;
pub mod libvirt;
pub mod probe;
pub mod xml;

use std::path::PathBuf;

use stratus_common::api::DomainType;

pub use fake::{FakeCall, FakeHypervisor};
pub use libvirt::LibvirtHypervisor;
pub use xml::{disk_xml, domain_xml, parse_instance_tag, XmlError, INSTANCE_NAMESPACE};

/// Everything needed to start one instance's domain. All values are generated or validated
/// by the agent; [`domain_xml`] escapes them anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSpec {
    /// The libvirt domain name (see `stratus_common::agent::domain_name`).
    pub name: String,
    /// The cluster that owns the instance, recorded in the domain's metadata.
    pub cluster_id: String,
    pub instance_id: u64,
    /// The host whose agent runs it, recorded beside the cluster (`None`: no host named, as
    /// domains made before hosts were recorded).
    pub host: Option<String>,
    pub domain_type: DomainType,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// The instance's qcow2 overlay (absolute path).
    pub disk: PathBuf,
    /// Direct kernel boot: kernel, initrd and command line. Without a kernel the guest boots
    /// from its disk.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
    /// Where the guest's serial console is written (absolute path).
    pub console_log: PathBuf,
    /// Network interfaces, each an existing tap (libvirt does not manage it) with its MAC.
    pub nics: Vec<DomainNic>,
    /// The cloud-init `cidata` ISO, attached read-only as an IDE CD-ROM.
    pub cidata: Option<PathBuf>,
    /// Persistent disks attached at start (targets `vdb` to `vdz`, each at most once).
    pub disks: Vec<DomainDisk>,
}

/// A persistent disk as the domain sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainDisk {
    /// `vdb` to `vdz` (`vda` is the instance's root disk).
    pub target: String,
    /// What the guest reads as the disk's serial (`/dev/disk/by-id/virtio-<serial>`): at most
    /// 20 characters (virtio-blk keeps 20 bytes) of `[A-Za-z0-9-]`.
    pub serial: String,
    pub read_only: bool,
    pub source: DiskSource,
}

/// Where the host finds a persistent disk's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSource {
    /// A raw file in this host's volume pool (absolute path).
    File(PathBuf),
    /// A raw export of another host's NBD server.
    Nbd {
        /// An IP address or a DNS name.
        host: String,
        port: u16,
        export: String,
        /// Over TLS, the server presenting the certificate of this host name; `None`: plain
        /// (an export made before TLS).
        tls_server: Option<String>,
    },
}

impl DiskSource {
    /// Whether both name the same disk (same file, or same export at the same place),
    /// however the connection to it is secured: a disk plugged in over plain NBD before an
    /// upgrade is the disk the controller now describes with TLS.
    pub fn same_disk(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::File(a), Self::File(b)) => a == b,
            (
                Self::Nbd {
                    host, port, export, ..
                },
                Self::Nbd {
                    host: h,
                    port: p,
                    export: e,
                    ..
                },
            ) => host == h && port == p && export == e,
            _ => false,
        }
    }
}

/// One network interface of a domain: the tap the agent made for it, and the guest's MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainNic {
    pub tap: String,
    pub mac: String,
}

/// Which instance of which cluster a domain runs, read back from its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstanceTag {
    pub cluster_id: String,
    pub instance_id: u64,
    /// The host whose agent made it; absent on domains made before hosts were recorded.
    pub host: Option<String>,
}

impl InstanceTag {
    /// Whether the agent of `host` in `cluster_id` owns the domain: its cluster's, and made on
    /// this host (a domain naming no host is taken as this host's, as it was before). Two
    /// agents sharing one libvirt leave each other's domains alone.
    pub fn is_of(&self, cluster_id: &str, host: &str) -> bool {
        self.cluster_id == cluster_id && self.host.as_deref().is_none_or(|h| h == host)
    }
}

/// A domain's run state, reduced to what reconciliation distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunState {
    Running,
    Paused,
    Shutoff,
    Crashed,
    /// Starting, shutting down, or a state libvirt could not tell.
    Other,
}

/// One domain libvirt knows about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInfo {
    pub name: String,
    /// `None` for domains the agent did not make (no StratusLab metadata).
    pub tag: Option<InstanceTag>,
    pub state: RunState,
}

/// What libvirt counts of one running guest, for the host's metrics. Counters are since the
/// domain started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GuestStats {
    /// CPU time used, in nanoseconds.
    pub cpu_ns: u64,
    pub vcpus: u32,
    /// Memory given to the guest now, in bytes.
    pub memory_bytes: u64,
    /// Memory the QEMU process holds in host RAM (resident set), when libvirt reports it.
    pub rss_bytes: Option<u64>,
    /// Memory the guest reports usable (its balloon driver), when it does.
    pub usable_bytes: Option<u64>,
    /// Per disk of the live definition (CD-ROMs included), by target (`vda`, `hdc`, ...).
    pub disks: Vec<BlockStats>,
    /// Per network interface, by its host-side device (the tap).
    pub interfaces: Vec<InterfaceStats>,
}

/// One disk's I/O since the domain started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockStats {
    pub device: String,
    pub read_bytes: u64,
    pub written_bytes: u64,
    pub reads: u64,
    pub writes: u64,
}

/// One interface's traffic, as the guest sees it (received: sent to the guest).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceStats {
    pub interface: String,
    pub receive_bytes: u64,
    pub transmit_bytes: u64,
    pub receive_packets: u64,
    pub transmit_packets: u64,
    pub receive_errors: u64,
    pub transmit_errors: u64,
    pub receive_drops: u64,
    pub transmit_drops: u64,
}

/// What the host's hypervisor is, for registration and for choosing the domain type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HypervisorInfo {
    /// Name and version, e.g. `QEMU 7.2.22 (libvirt 9.0.0)`.
    pub hypervisor: String,
    /// The host's architecture, e.g. `x86_64`.
    pub arch: String,
    /// `/dev/kvm` exists and libvirt offers domain type `kvm` for the host's architecture.
    /// Necessary but not sufficient for KVM guests to boot (nested virtualisation may hang
    /// them): see [`probe`].
    pub kvm_available: bool,
}

/// Errors of hypervisor operations.
#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    #[error("cannot connect to libvirt at {uri}")]
    Connect {
        uri: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("invalid domain definition for {name}")]
    Xml {
        name: String,
        #[source]
        source: XmlError,
    },
    #[error("domain {0} already exists")]
    AlreadyExists(String),
    #[error("no domain {0}")]
    NoSuchDomain(String),
    /// The target is taken by a disk with another source (possibly one whose unplug the
    /// guest has not completed yet).
    #[error("domain {domain} already has another disk as {target}")]
    TargetInUse { domain: String, target: String },
    #[error("invalid disk {target} for domain {domain}")]
    Disk {
        domain: String,
        target: String,
        #[source]
        source: XmlError,
    },
    #[error("cannot {action} disk {target} of domain {domain}")]
    DiskOperation {
        action: &'static str,
        domain: String,
        target: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot read the live definition of domain {name}")]
    LiveXml {
        name: String,
        #[source]
        source: XmlError,
    },
    #[error("cannot {action} domain {name}")]
    Domain {
        action: &'static str,
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot {action}")]
    Host {
        action: &'static str,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot read the hypervisor capabilities")]
    Capabilities(#[source] XmlError),
    /// A failure a [`FakeHypervisor`] was told to produce.
    #[error("injected failure: {0}")]
    Injected(String),
}

/// The operations the agent needs from a hypervisor. Calls block (libvirt's API is
/// synchronous): async callers run them on a blocking thread.
pub trait Hypervisor: Send + Sync {
    /// Every domain, running or not, with its tag when it has one. Domains that vanish while
    /// being listed are left out.
    fn list(&self) -> Result<Vec<DomainInfo>, HypervisorError>;

    /// Creates and starts a transient domain.
    fn create(&self, spec: &DomainSpec) -> Result<(), HypervisorError>;

    /// Stops the domain at once (power cut) and so removes it, being transient.
    /// `Ok(false)` when no domain of that name was running.
    fn destroy(&self, name: &str) -> Result<bool, HypervisorError>;

    /// Asks the guest to power off (an ACPI power-button press). Success does not mean it
    /// did: a cooperating guest shuts down and its (transient) domain then goes away, which
    /// [`Self::exists`] tells. `Ok(false)` when no domain of that name runs.
    fn shutdown(&self, name: &str) -> Result<bool, HypervisorError>;

    /// Whether a domain of that name exists (a transient domain exists while it runs).
    fn exists(&self, name: &str) -> Result<bool, HypervisorError>;

    /// CPU time the domain has used so far, in nanoseconds; `None` when no such domain runs.
    fn cpu_time(&self, name: &str) -> Result<Option<u64>, HypervisorError>;

    /// Every running domain's CPU, memory, disk and network counters, by domain name, read
    /// in-process: what a metrics scrape reads (libvirt: one `virConnectGetAllDomainStats`).
    fn all_guest_stats(
        &self,
    ) -> Result<std::collections::BTreeMap<String, GuestStats>, HypervisorError>;

    fn info(&self) -> Result<HypervisorInfo, HypervisorError>;

    /// Hot-plugs `disk` into the running domain (live only: domains are transient). Already
    /// there with the same source: `Ok` (which includes a disk whose unplug is still pending
    /// in the guest: callers learn of its removal from [`Self::disk_targets`]). The target
    /// taken by another source: [`HypervisorError::TargetInUse`].
    fn attach_disk(&self, domain: &str, disk: &DomainDisk) -> Result<(), HypervisorError>;

    /// Asks the guest to release the disk at `target` (an ACPI unplug request). Success does
    /// not mean the device is gone: the guest must cooperate, and one that does not keeps
    /// it. Harmless to repeat while the request is pending (each repetition asks again); no
    /// such disk, or no such domain: `Ok`. May block for several seconds (libvirt waits a
    /// while for the guest before returning).
    fn detach_disk(&self, domain: &str, target: &str) -> Result<(), HypervisorError>;

    /// The persistent-disk targets (`vdb` to `vdz`) of the domain's live definition, sorted.
    /// libvirt removes a disk from it only once QEMU reported the guest released the
    /// device, so this is how a detach is seen to complete.
    fn disk_targets(&self, domain: &str) -> Result<Vec<String>, HypervisorError>;
}
