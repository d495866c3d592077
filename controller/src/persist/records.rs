//! Stored twins of the records the state keeps (users, hosts, images, instances, networks,
//! volumes, members, Marketplace entries) and of the shared types inside them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use stratus_common::{agent, api, marketplace as signed, volumes as vol};

use super::{stored_enum, stored_struct, FormatError, Persist};
use crate::marketplace::{self, registry};
use crate::state;

stored_enum!(DiskFormat for api::DiskFormat { Qcow2, Raw });
stored_enum!(Compression for api::Compression { None, Gzip, Xz, Zstd });
stored_enum!(DomainType for api::DomainType { Kvm, Qemu });
stored_enum!(InstanceState for api::InstanceState {
    Pending, Booting, Running, Stopping, Done, Failed, Stopped, PoweringOff, Starting, Rebooting,
    // After state-machine version 3.
    Unknown,
});
stored_enum!(ActualState for agent::ActualState { Booting, Running, Failed, Gone, Stopped });
stored_enum!(PowerAction for api::PowerAction { Stop, Start, Reboot });
stored_enum!(VolumeReport for agent::VolumeReport { Ready, Failed, Deleted });
stored_enum!(DiskReport for agent::DiskReport { Attached, Detached, Failed });
stored_enum!(VolumeType for vol::VolumeType { DataRw, DataRo });
stored_enum!(VolumeState for vol::VolumeState { Creating, Available, Failed, Deleting });
stored_enum!(AttachmentState for vol::AttachmentState { Attaching, Attached, Detaching, Stuck });

stored_struct!(Artifact for api::Artifact {
    locations: Vec<String>,
    sha256: String,
    size: Option<u64>,
    compression: Compression,
});

stored_struct!(ImageSpec for agent::ImageSpec {
    name: String,
    format: DiskFormat,
    disk: Artifact,
    kernel: Option<Artifact>,
    initrd: Option<Artifact>,
    cmdline: Option<String>,
});

stored_struct!(InstanceType for api::InstanceType {
    name: String,
    vcpus: u32,
    memory_mib: u64,
    disk_gib: u64,
});

stored_struct!(ReportedExport for agent::ReportedExport { name: String, host: String, port: u16 });

stored_struct!(ReportedDisk for agent::ReportedDisk {
    instance: u64,
    volume: String,
    state: DiskReport,
    reason: Option<String>,
});

// State-machine version 6: a host's whole report in one entry.
stored_struct!(ReportedInstance for agent::ReportedInstance {
    id: u64,
    state: ActualState,
    reason: Option<String>,
});

stored_struct!(ReportedVolume for agent::ReportedVolume {
    id: String,
    state: VolumeReport,
    reason: Option<String>,
});

stored_struct!(UpdateVolume for vol::UpdateVolume {
    public: Option<bool>,
    tag: Option<String>,
    volume_type: Option<VolumeType>,
});

stored_struct!(UserRecord for state::UserRecord {
    name: String,
    password_hash: String,
    admin: bool,
    created_ms: u64,
});

stored_struct!(HostRecord for state::HostRecord {
    name: String,
    vcpus: u32,
    memory_mib: u64,
    disk_gib: u64,
    domain_type: DomainType,
    arch: String,
    hypervisor: String,
    registered_ms: u64,
    volume_pool_gib: Option<u64>,
});

// State-machine version 4.
stored_struct!(Maintenance for state::Maintenance { reason: Option<String>, since_ms: u64 });

stored_struct!(HostLife for state::HostLife {
    up: bool,
    since_ms: u64,
    maintenance: Option<Maintenance>,
});

// State-machine version 5: placement rules.
stored_struct!(HostProfile for state::HostProfile {
    compute: bool,
    storage: bool,
    labels: BTreeSet<String>,
});

stored_enum!(GroupPolicy for api::GroupPolicy { Affinity, AntiAffinity });

stored_struct!(GroupRecord for state::GroupRecord {
    name: String,
    owner: String,
    policy: GroupPolicy,
    created_ms: u64,
    members: BTreeSet<u64>,
});

stored_enum!(RestartPolicy for api::RestartPolicy { Never, Always });

stored_struct!(InstanceRules for state::InstanceRules {
    group: Option<String>,
    labels: BTreeSet<String>,
    evacuate: bool,
    restart: RestartPolicy,
});

stored_struct!(ImageRecord for state::ImageRecord {
    name: String,
    format: DiskFormat,
    disk: Artifact,
    kernel: Option<Artifact>,
    initrd: Option<Artifact>,
    cmdline: Option<String>,
    owner: String,
    created_ms: u64,
});

stored_struct!(EndorserRecord for state::EndorserRecord {
    pem: String,
    cert_sha256: String,
    subject: String,
    emails: Vec<String>,
    not_after_ms: u64,
    added_ms: u64,
    added_by: String,
});

stored_struct!(Transition for state::Transition {
    state: InstanceState,
    at_ms: u64,
    reason: Option<String>,
});

stored_struct!(NicRecord for state::NicRecord { network: String, ip: Ipv4Addr, mac: String });

stored_struct!(InstanceRecord for state::InstanceRecord {
    id: u64,
    name: String,
    owner: String,
    image: String,
    image_spec: ImageSpec,
    instance_type: String,
    vcpus: u32,
    memory_mib: u64,
    host: Option<String>,
    state: InstanceState,
    reason: Option<String>,
    created_ms: u64,
    history: Vec<Transition>,
    host_cleaned: bool,
    nics: Vec<NicRecord>,
    ssh_key: Option<String>,
    user_data: Option<String>,
});

/// What one idempotency key made, and when.
#[derive(Debug, bincode::Encode, bincode::Decode)]
pub struct Keyed<T> {
    pub made: T,
    pub at_ms: u64,
}

/// Owner -> key -> what it made.
pub type Keys<T> = BTreeMap<String, BTreeMap<String, Keyed<T>>>;

impl<T: Persist> Persist for state::Keys<T> {
    type Stored = Keys<T::Stored>;
    fn store(&self) -> Self::Stored {
        self.entries()
            .iter()
            .map(|(owner, keys)| {
                let keys = keys
                    .iter()
                    .map(|(key, k)| {
                        let made = k.made.store();
                        (
                            key.clone(),
                            Keyed {
                                made,
                                at_ms: k.at_ms,
                            },
                        )
                    })
                    .collect();
                (owner.clone(), keys)
            })
            .collect()
    }
    fn load(stored: Self::Stored) -> Result<Self, FormatError> {
        let mut entries = BTreeMap::new();
        for (owner, keys) in stored {
            let mut loaded = BTreeMap::new();
            for (key, k) in keys {
                let made = T::load(k.made)?;
                loaded.insert(
                    key,
                    state::Keyed {
                        made,
                        at_ms: k.at_ms,
                    },
                );
            }
            entries.insert(owner, loaded);
        }
        Ok(Self::from_entries(entries))
    }
}

stored_struct!(NetworkRecord for state::NetworkRecord {
    name: String,
    cidr: String,
    gateway: String,
    dns: Vec<String>,
    bridge: String,
    vlan: Option<u16>,
});

/// The site networks and their leases: network name -> address -> instance.
#[derive(Debug, bincode::Encode, bincode::Decode)]
pub struct Ipam {
    pub networks: BTreeMap<String, NetworkRecord>,
    pub leases: BTreeMap<String, BTreeMap<Ipv4Addr, u64>>,
}

impl Persist for state::Ipam {
    type Stored = Ipam;
    fn store(&self) -> Ipam {
        let (networks, leases) = self.parts();
        Ipam {
            networks: networks.store(),
            leases: leases.store(),
        }
    }
    fn load(stored: Ipam) -> Result<Self, FormatError> {
        Ok(Self::from_parts(
            Persist::load(stored.networks)?,
            Persist::load(stored.leases)?,
        ))
    }
}

/// The instances, stored as the map of their records (the per-host sums are rebuilt on load).
impl Persist for state::InstanceTable {
    type Stored = BTreeMap<u64, InstanceRecord>;
    fn store(&self) -> Self::Stored {
        (**self).store()
    }
    fn load(stored: Self::Stored) -> Result<Self, FormatError> {
        BTreeMap::<u64, state::InstanceRecord>::load(stored).map(Self::from)
    }
}

stored_struct!(ExportRecord for state::ExportRecord {
    name: String,
    endpoint: Option<(String, u16)>,
});

stored_struct!(AttachmentRecord for state::AttachmentRecord {
    instance: u64,
    target: String,
    state: AttachmentState,
    hotplug: bool,
    read_only: bool,
    since_ms: u64,
    export: Option<ExportRecord>,
});

stored_struct!(VolumeRecord for state::VolumeRecord {
    id: String,
    owner: String,
    tag: String,
    size_gib: u64,
    public: bool,
    volume_type: VolumeType,
    host: String,
    state: VolumeState,
    reason: Option<String>,
    created_ms: u64,
    attachments: Vec<AttachmentRecord>,
});

stored_struct!(Quota for state::Quota { max_volumes: u32, max_gib: u64 });

stored_struct!(Change for state::audit::Change {
    at_ms: u64,
    by: String,
    action: String,
});

stored_struct!(AuditLog for state::audit::AuditLog {
    objects: BTreeMap<String, Vec<Change>>,
});

stored_struct!(JoinToken for state::trust::JoinToken {
    host: String,
    created_ms: u64,
    expires_ms: u64,
    by: String,
});

stored_struct!(ApiToken for state::trust::ApiToken {
    id: String,
    owner: String,
    name: String,
    created_ms: u64,
    expires_ms: Option<u64>,
});

stored_struct!(Trust for state::trust::Trust {
    join_tokens: BTreeMap<String, JoinToken>,
    host_certificates: BTreeMap<String, BTreeMap<String, u64>>,
    api_tokens: BTreeMap<String, ApiToken>,
    certificate_subjects: BTreeMap<String, String>,
});

/// How a new host certificate is paid for.
#[derive(Debug, bincode::Encode, bincode::Decode)]
pub enum CertificateGrant {
    JoinToken(String),
    Renewal(String),
}

impl Persist for state::trust::CertificateGrant {
    type Stored = CertificateGrant;
    fn store(&self) -> CertificateGrant {
        match self {
            Self::JoinToken(d) => CertificateGrant::JoinToken(d.clone()),
            Self::Renewal(s) => CertificateGrant::Renewal(s.clone()),
        }
    }
    fn load(stored: CertificateGrant) -> Result<Self, FormatError> {
        Ok(match stored {
            CertificateGrant::JoinToken(d) => Self::JoinToken(d),
            CertificateGrant::Renewal(s) => Self::Renewal(s),
        })
    }
}

stored_struct!(MemberRecord for state::MemberRecord {
    id: u64,
    address: String,
    api_address: String,
    incarnation: String,
    voter: bool,
});

stored_struct!(SignedMetadata for signed::SignedMetadata {
    protected: String,
    payload: String,
    signature: String,
});

/// Why an entry's signer was trusted.
#[derive(Debug, bincode::Encode, bincode::Decode)]
pub enum TrustPath {
    CertificateAuthority { ca_subject: String },
    RegisteredEndorser,
}

impl Persist for marketplace::TrustPath {
    type Stored = TrustPath;
    fn store(&self) -> TrustPath {
        match self {
            Self::CertificateAuthority { ca_subject } => TrustPath::CertificateAuthority {
                ca_subject: ca_subject.clone(),
            },
            Self::RegisteredEndorser => TrustPath::RegisteredEndorser,
        }
    }
    fn load(stored: TrustPath) -> Result<Self, FormatError> {
        Ok(match stored {
            TrustPath::CertificateAuthority { ca_subject } => {
                Self::CertificateAuthority { ca_subject }
            }
            TrustPath::RegisteredEndorser => Self::RegisteredEndorser,
        })
    }
}

/// A verified Marketplace entry. Its metadata is not stored a second time: it is what the
/// signed envelope's payload says, parsed again when the entry is loaded (the signed bytes are
/// the Marketplace's own stable format).
#[derive(Debug, bincode::Encode, bincode::Decode)]
pub struct VerifiedEntry {
    pub envelope: SignedMetadata,
    pub endorser_email: String,
    pub endorser_subject: String,
    pub cert_sha256: String,
    pub created_ms: u64,
    pub valid_until_ms: u64,
    pub trust: TrustPath,
}

impl Persist for marketplace::VerifiedEntry {
    type Stored = VerifiedEntry;
    fn store(&self) -> VerifiedEntry {
        VerifiedEntry {
            envelope: self.envelope.store(),
            endorser_email: self.endorser_email.clone(),
            endorser_subject: self.endorser_subject.clone(),
            cert_sha256: self.cert_sha256.clone(),
            created_ms: self.created_ms,
            valid_until_ms: self.valid_until_ms,
            trust: self.trust.store(),
        }
    }
    fn load(stored: VerifiedEntry) -> Result<Self, FormatError> {
        let envelope = signed::SignedMetadata::load(stored.envelope)?;
        Ok(Self {
            metadata: envelope.metadata()?,
            endorser_email: stored.endorser_email,
            endorser_subject: stored.endorser_subject,
            cert_sha256: stored.cert_sha256,
            created_ms: stored.created_ms,
            valid_until_ms: stored.valid_until_ms,
            trust: Persist::load(stored.trust)?,
            envelope,
        })
    }
}

stored_struct!(StoredEntry for registry::StoredEntry {
    seq: u64,
    uploaded_ms: u64,
    entry: VerifiedEntry,
});

impl Persist for registry::Registry {
    type Stored = Vec<StoredEntry>;
    fn store(&self) -> Vec<StoredEntry> {
        self.entries().iter().map(Persist::store).collect()
    }
    fn load(stored: Vec<StoredEntry>) -> Result<Self, FormatError> {
        Ok(Self::from_entries(Persist::load(stored)?))
    }
}
