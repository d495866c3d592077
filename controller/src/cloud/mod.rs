//! The controller's actions, apart from HTTP: each method checks who asks and what they ask,
//! decides everything non-deterministic (time, hashes, placement), proposes a command through
//! Raft and renders the result. The HTTP layer only parses requests into calls here.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use sha2::{Digest, Sha256};
use stratus_common::agent::ImageSpec;
use stratus_common::agent::{HostDesired, HostReport, RegisterHost, Registered};
use stratus_common::api::{
    Cluster, ClusterMember, CreateImage, CreateInstance, CreateNetwork, Endorser, Host, Image,
    ImageList, Instance, InstanceType, MarketplaceEntry, MarketplacePage, Network, PolicyVerdict,
};
use stratus_common::artifact::validate_artifact;
use stratus_common::certificate::read_certificate;
use stratus_common::marketplace::{image_spec, ImageKind, SignedMetadata};
use stratus_common::names::validate_name;

mod volumes;

pub use volumes::VolumeSettings;

use crate::guest::{validate_ssh_key, validate_user_data};
use crate::marketplace::{
    policy, verify, PolicyRefusal, Query, RegistryError, ResolveError, SitePolicy, TrustStore,
    VerifyError,
};
use crate::raft::{ProposeError, RaftHandle};
use crate::scheduler;
use crate::state::{
    endorser_view, entry_view, host_view, image_view, instance_view, network_view, Command,
    EndorserRecord, HostRecord, ImageRecord, IpamError, NetworkRecord, Outcome, Rejection,
    UserRecord, VolumeError,
};

/// Why an action failed, in terms the API maps to a status and a stable code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CloudError {
    #[error("{0}")]
    BadRequest(String),
    #[error("authentication required")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A network has no free address left.
    #[error("{0}")]
    Exhausted(String),
    #[error("{0}")]
    Unavailable(String),
    /// Bad input with a specific code (e.g. `invalid_metadata`).
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// Refused by trust or site policy, with a specific code (e.g. `untrusted_signer`).
    #[error("{message}")]
    Refused { code: &'static str, message: String },
}

impl From<ProposeError> for CloudError {
    fn from(e: ProposeError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl From<Rejection> for CloudError {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::Marketplace(RegistryError::Duplicate { .. }) => {
                Self::Conflict(r.to_string())
            }
            Rejection::UnknownType(_) => Self::BadRequest(r.to_string()),
            Rejection::Ipam(IpamError::Exhausted { .. }) => Self::Exhausted(r.to_string()),
            Rejection::Ipam(IpamError::UnknownNetwork(_)) => {
                Self::BadRequest(format!("network: {r}"))
            }
            Rejection::Ipam(IpamError::InvalidNetwork(_)) => Self::BadRequest(r.to_string()),
            Rejection::UnknownInstance(_) | Rejection::UnknownHost(_) => {
                Self::NotFound(r.to_string())
            }
            Rejection::Volume(e) => match e {
                VolumeError::Unknown(_) => Self::NotFound(e.to_string()),
                VolumeError::NotOwner { .. } => Self::Forbidden(e.to_string()),
                VolumeError::QuotaVolumes { .. } | VolumeError::QuotaSize { .. } => Self::Refused {
                    code: "quota_exceeded",
                    message: e.to_string(),
                },
                VolumeError::Invalid(ref m) if m.ends_with("not found") => {
                    Self::NotFound(e.to_string())
                }
                VolumeError::Invalid(_) => Self::BadRequest(e.to_string()),
                VolumeError::NotAttached { .. } => Self::Invalid {
                    code: "not_attached",
                    message: e.to_string(),
                },
                _ => Self::Conflict(e.to_string()),
            },
            _ => Self::Conflict(r.to_string()),
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub admin: bool,
}

/// What the controller last heard from a host's agent (soft state, not replicated).
#[derive(Debug, Clone, Default)]
struct Contact {
    last_seen: Option<Instant>,
    last_seen_ms: Option<u64>,
    unknown_domains: Vec<String>,
    /// SHA-256 of what the host's image cache holds.
    images: HashSet<String>,
}

/// The default instance type when a request names none.
pub const DEFAULT_TYPE: &str = "m1.small";

/// The network an instance is attached to when its request names none (if the site has it).
pub const DEFAULT_NETWORK: &str = "public";

/// The site's Marketplace settings: the CAs it trusts and its policy.
#[derive(Debug, Clone, Default)]
pub struct MarketplaceSettings {
    /// DER certificates of the trusted CAs.
    pub trusted_cas: Vec<Vec<u8>>,
    pub policy: SitePolicy,
}

pub struct Cloud {
    raft: RaftHandle,
    marketplace: MarketplaceSettings,
    agent_token_digest: [u8; 32],
    host_timeout: Duration,
    started: Instant,
    contacts: Mutex<HashMap<String, Contact>>,
    /// Passwords already verified against a user's current hash, as SHA-256 digests, so only the
    /// first request of a session pays for argon2.
    verified: Mutex<HashMap<String, (String, [u8; 32])>>,
    volumes: VolumeSettings,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Hashes a password with argon2id and a random salt.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hash")
        .to_string()
}

fn proposed(
    result: Result<Result<Outcome, Rejection>, ProposeError>,
) -> Result<Outcome, CloudError> {
    Ok(result??)
}

impl Cloud {
    pub fn new(
        raft: RaftHandle,
        agent_token: &str,
        host_timeout: Duration,
        marketplace: MarketplaceSettings,
    ) -> Self {
        Self {
            raft,
            marketplace,
            agent_token_digest: digest(agent_token),
            host_timeout,
            started: Instant::now(),
            contacts: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
            volumes: VolumeSettings::default(),
        }
    }

    /// Sets the site's volume quotas and limits.
    pub fn with_volume_settings(mut self, settings: VolumeSettings) -> Self {
        self.volumes = settings;
        self
    }

    pub fn raft(&self) -> &RaftHandle {
        &self.raft
    }

    /// Creates the cluster's ID, first admin and instance types on the very first start.
    pub async fn bootstrap_if_needed(
        &self,
        admin_user: &str,
        admin_password: &str,
        cpu_allocation_ratio: f64,
    ) -> Result<bool, CloudError> {
        if self.raft.read(|s| s.is_bootstrapped()) {
            return Ok(false);
        }
        let command = Command::Bootstrap {
            cluster_id: uuid_v4(),
            admin: UserRecord {
                name: admin_user.to_owned(),
                password_hash: hash_password(admin_password),
                admin: true,
                created_ms: now_ms(),
            },
            types: crate::state::standard_types(),
            cpu_allocation_ratio_percent: (cpu_allocation_ratio * 100.0).round() as u32,
        };
        match self.raft.propose(command).await? {
            Ok(_) | Err(Rejection::AlreadyBootstrapped) => Ok(true),
            Err(r) => Err(r.into()),
        }
    }

    /// Checks a username and password (HTTP Basic).
    pub fn authenticate(&self, user: &str, password: &str) -> Result<Caller, CloudError> {
        let record = self
            .raft
            .read(|s| s.users.get(user).cloned())
            .ok_or(CloudError::Unauthenticated)?;
        let presented = digest(password);
        {
            let cache = self.verified.lock().expect("cache lock");
            if let Some((hash, known)) = cache.get(user) {
                if *hash == record.password_hash && *known == presented {
                    return Ok(Caller {
                        name: record.name,
                        admin: record.admin,
                    });
                }
            }
        }
        let parsed =
            PasswordHash::new(&record.password_hash).map_err(|_| CloudError::Unauthenticated)?;
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .map_err(|_| CloudError::Unauthenticated)?;
        self.verified
            .lock()
            .expect("cache lock")
            .insert(user.to_owned(), (record.password_hash.clone(), presented));
        Ok(Caller {
            name: record.name,
            admin: record.admin,
        })
    }

    /// Checks an agent's bearer token.
    pub fn authenticate_agent(&self, token: &str) -> Result<(), CloudError> {
        // Comparing digests keeps the comparison's time independent of the secret's content.
        if digest(token) == self.agent_token_digest {
            Ok(())
        } else {
            Err(CloudError::Unauthenticated)
        }
    }

    pub async fn create_user(
        &self,
        caller: &Caller,
        name: &str,
        password: &str,
        admin: bool,
    ) -> Result<(), CloudError> {
        require_admin(caller)?;
        validate_name("name", name).map_err(|e| CloudError::BadRequest(e.to_string()))?;
        if password.len() < 8 {
            return Err(CloudError::BadRequest(
                "password must be at least 8 characters".into(),
            ));
        }
        let password = password.to_owned();
        // argon2 is deliberately slow: keep it off the async workers.
        let password_hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|_| CloudError::Unavailable("password hashing failed".into()))?;
        let record = UserRecord {
            name: name.to_owned(),
            password_hash,
            admin,
            created_ms: now_ms(),
        };
        proposed(self.raft.propose(Command::CreateUser(record)).await)?;
        Ok(())
    }

    pub fn list_users(&self, caller: &Caller) -> Result<Vec<(String, bool)>, CloudError> {
        require_admin(caller)?;
        Ok(self.raft.read(|s| {
            s.users
                .values()
                .map(|u| (u.name.clone(), u.admin))
                .collect()
        }))
    }

    pub async fn create_instance(
        &self,
        caller: &Caller,
        request: CreateInstance,
    ) -> Result<Instance, CloudError> {
        if let Some(name) = &request.name {
            validate_name("name", name).map_err(|e| CloudError::BadRequest(e.to_string()))?;
        }
        let ssh_key = request
            .ssh_key
            .as_deref()
            .map(validate_ssh_key)
            .transpose()
            .map_err(|e| CloudError::BadRequest(e.to_string()))?;
        if let Some(data) = &request.user_data {
            validate_user_data(data).map_err(|e| CloudError::BadRequest(e.to_string()))?;
        }
        let network = self.network_for(request.network.as_deref())?;
        let volumes = self.launch_volumes(&request.persistent_disks)?;
        let storage_host = self.storage_host_of(&volumes);
        let type_name = request
            .instance_type
            .clone()
            .unwrap_or_else(|| DEFAULT_TYPE.to_owned());
        // A few tries: two placements racing for the last room on a host are settled by apply,
        // which refuses the second; it is placed again against the new state.
        let image_spec = self.resolve_image(&request.image, now_ms())?;
        for _ in 0..3 {
            let size = self.raft.read(|s| s.types.get(&type_name).cloned());
            let size = size.ok_or_else(|| {
                CloudError::BadRequest(format!("type: unknown instance type {type_name:?}"))
            })?;
            let up = self.hosts_up();
            let holding = self.hosts_holding(&image_spec.disk.sha256);
            // Next to its first disk if that host can take it (no network hop for the data),
            // else wherever the scheduler says.
            let local = storage_host.clone().filter(|h| {
                up.contains(h)
                    && self.raft.read(|s| {
                        s.hosts
                            .get(h)
                            .is_some_and(|r| s.fits(r, size.vcpus, size.memory_mib))
                    })
            });
            let placement = match local {
                Some(host) => Ok(host),
                None => self
                    .raft
                    .read(|s| scheduler::place(s, &up, &holding, size.vcpus, size.memory_mib)),
            };
            let (host, failure) = match placement {
                Ok(host) => (Some(host), None),
                Err(reason) => (None, Some(reason)),
            };
            let command = Command::CreateInstance {
                owner: caller.name.clone(),
                name: request.name.clone(),
                image: request.image.clone(),
                image_spec: image_spec.clone(),
                instance_type: type_name.clone(),
                host,
                failure,
                at_ms: now_ms(),
                network: network.clone(),
                ssh_key: ssh_key.clone(),
                user_data: request.user_data.clone(),
                volumes: volumes.clone(),
            };
            match self.raft.propose(command).await? {
                Ok(Outcome::InstanceCreated(id)) => {
                    tracing::info!(instance = id, owner = %caller.name, "instance created");
                    return self.get_instance(caller, id);
                }
                Ok(other) => {
                    return Err(CloudError::Unavailable(format!(
                        "unexpected outcome {other:?}"
                    )))
                }
                Err(Rejection::NoRoom { .. }) => continue,
                Err(r) => return Err(r.into()),
            }
        }
        Err(CloudError::Conflict(
            "placement kept racing with other requests; retry".into(),
        ))
    }

    /// The network a new instance goes on: the one asked for, which must exist, else `public`
    /// if the site defines it, else none.
    fn network_for(&self, asked: Option<&str>) -> Result<Option<String>, CloudError> {
        match asked {
            Some(name) => {
                if self.raft.read(|s| s.ipam.network(name).is_some()) {
                    Ok(Some(name.to_owned()))
                } else {
                    Err(CloudError::BadRequest(format!(
                        "network: unknown network {name:?}"
                    )))
                }
            }
            None => Ok(self
                .raft
                .read(|s| s.ipam.network(DEFAULT_NETWORK).is_some())
                .then(|| DEFAULT_NETWORK.to_owned())),
        }
    }

    /// Defines a site network (admin).
    pub async fn create_network(
        &self,
        caller: &Caller,
        request: CreateNetwork,
    ) -> Result<Network, CloudError> {
        require_admin(caller)?;
        let record = NetworkRecord::from_definition(&request)
            .map_err(|e| CloudError::BadRequest(e.to_string()))?;
        let name = record.name.clone();
        match proposed(self.raft.propose(Command::DefineNetwork(record)).await)? {
            Outcome::Applied => {
                tracing::info!(network = %name, by = %caller.name, "network defined");
                self.get_network(&name)
            }
            _ => Err(CloudError::Conflict(format!(
                "network {name} already exists"
            ))),
        }
    }

    /// Defines the networks of the controller's configuration that the state does not have yet.
    /// One the state already has with another definition keeps the replicated definition
    /// (instances may hold its addresses); that is logged, not fatal.
    pub async fn define_configured_networks(
        &self,
        networks: &[CreateNetwork],
    ) -> Result<(), CloudError> {
        for definition in networks {
            let record = NetworkRecord::from_definition(definition)
                .map_err(|e| CloudError::BadRequest(format!("networks: {e}")))?;
            let name = record.name.clone();
            match self.raft.propose(Command::DefineNetwork(record)).await? {
                Ok(Outcome::Applied) => {
                    tracing::info!(network = %name, "network defined from the configuration")
                }
                Ok(_) => {}
                Err(
                    r @ Rejection::Ipam(IpamError::NetworkExists(_) | IpamError::Overlaps { .. }),
                ) => {
                    tracing::warn!(network = %name, error = %r, "configured network not applied; the replicated definition stays");
                }
                Err(r) => return Err(r.into()),
            }
        }
        Ok(())
    }

    pub fn list_networks(&self) -> Vec<Network> {
        self.raft
            .read(|s| s.ipam.networks().map(|n| network_view(s, n)).collect())
    }

    pub fn get_network(&self, name: &str) -> Result<Network, CloudError> {
        self.raft
            .read(|s| s.ipam.network(name).map(|n| network_view(s, n)))
            .ok_or_else(|| CloudError::NotFound(format!("network {name} not found")))
    }

    pub fn list_instances(&self, caller: &Caller) -> Vec<Instance> {
        self.raft.read(|s| {
            s.instances
                .values()
                .filter(|i| caller.admin || i.owner == caller.name)
                .map(|i| instance_view(s, i))
                .collect()
        })
    }

    /// One instance; another user's instance is "not found", as if it did not exist.
    pub fn get_instance(&self, caller: &Caller, id: u64) -> Result<Instance, CloudError> {
        self.raft
            .read(|s| {
                s.instances
                    .get(&id)
                    .filter(|i| caller.admin || i.owner == caller.name)
                    .map(|i| instance_view(s, i))
            })
            .ok_or_else(|| CloudError::NotFound(format!("instance {id} not found")))
    }

    pub async fn kill_instance(&self, caller: &Caller, id: u64) -> Result<Instance, CloudError> {
        self.get_instance(caller, id)?;
        proposed(
            self.raft
                .propose(Command::KillInstance {
                    id,
                    at_ms: now_ms(),
                })
                .await,
        )?;
        tracing::info!(instance = id, by = %caller.name, "instance kill asked");
        self.get_instance(caller, id)
    }

    /// What an instance of `image` boots: a site image by name, or the Marketplace entry the
    /// site policy picks for an identifier.
    fn resolve_image(&self, image: &str, now: u64) -> Result<ImageSpec, CloudError> {
        self.raft.read(|s| {
            if let Some(site) = s.images.get(image) {
                return Ok(site.spec());
            }
            match s.marketplace.resolve(image, &self.marketplace.policy, now) {
                Ok(stored) if stored.entry.metadata.kind == ImageKind::Disk => {
                    Err(CloudError::BadRequest(format!(
                        "image: {image} is a disk image, not a machine image"
                    )))
                }
                Ok(stored) => Ok(image_spec(&stored.entry.metadata)),
                Err(ResolveError::NotFound { .. }) => Err(CloudError::BadRequest(format!(
                    "image: unknown image {image:?}"
                ))),
                Err(ResolveError::Refused(refusal)) => Err(CloudError::Refused {
                    code: refusal.code(),
                    message: refusal.to_string(),
                }),
            }
        })
    }

    fn trust_store(&self) -> Result<TrustStore, CloudError> {
        let endorsers = self.raft.read(|s| {
            s.endorsers
                .values()
                .map(|e| e.pem.clone())
                .collect::<Vec<_>>()
        });
        let mut trust = TrustStore {
            trusted_cas: self.marketplace.trusted_cas.clone(),
            endorsers: Vec::new(),
        };
        for pem in endorsers {
            trust
                .add_endorsers_pem("registered endorser", &pem)
                .map_err(|e| CloudError::Unavailable(format!("registered endorsers: {e}")))?;
        }
        Ok(trust)
    }

    /// Uploads a signed Marketplace entry: structure and content, signature and chain, dates,
    /// then the site's deny lists and endorser allow-list; only then is it made visible.
    pub async fn upload_entry(
        &self,
        caller: &Caller,
        body: &[u8],
    ) -> Result<MarketplaceEntry, CloudError> {
        let envelope = SignedMetadata::from_json(body).map_err(|e| CloudError::Invalid {
            code: "malformed_envelope",
            message: e.to_string(),
        })?;
        let now = now_ms();
        let verified = verify(&envelope, &self.trust_store()?, now).map_err(|e| {
            let (code, message) = (e.code(), e.to_string());
            match e {
                VerifyError::Envelope(_)
                | VerifyError::InvalidMetadata(_)
                | VerifyError::BadCertificate { .. }
                | VerifyError::UnsupportedKey { .. }
                | VerifyError::AlgorithmMismatch { .. }
                | VerifyError::SubjectMismatch { .. }
                | VerifyError::EmailNotInCertificate { .. }
                | VerifyError::CreatedInFuture { .. } => CloudError::Invalid { code, message },
                _ => CloudError::Refused { code, message },
            }
        })?;
        // Content the site refuses is not registered either; a deprecation is a normal entry.
        match policy::evaluate(&self.marketplace.policy, &verified, now) {
            Ok(()) | Err(PolicyRefusal::Deprecated { .. }) => {}
            Err(refusal) => {
                return Err(CloudError::Refused {
                    code: refusal.code(),
                    message: refusal.to_string(),
                })
            }
        }
        let identifier = verified.metadata.identifier.clone();
        let email = verified.endorser_email.clone();
        let command = Command::AppendEntry {
            entry: Box::new(verified),
            uploaded_ms: now,
        };
        match proposed(self.raft.propose(command).await)? {
            Outcome::EntryAppended(seq) => {
                tracing::info!(%identifier, endorser = %email, seq, by = %caller.name, "marketplace entry uploaded");
                self.raft
                    .read(|s| s.marketplace.get(seq).map(entry_view))
                    .ok_or_else(|| CloudError::Unavailable("entry vanished".into()))
            }
            other => Err(CloudError::Unavailable(format!(
                "unexpected outcome {other:?}"
            ))),
        }
    }

    /// Site images and a page of Marketplace entries.
    pub fn list_images(&self, query: &Query) -> ImageList {
        self.raft.read(|s| {
            let page = s.marketplace.query(query);
            ImageList {
                site: s.images.values().map(image_view).collect(),
                marketplace: MarketplacePage {
                    items: page.items.iter().map(entry_view).collect(),
                    total: page.total as u64,
                    offset: query.offset as u64,
                    limit: query.effective_limit() as u64,
                },
            }
        })
    }

    /// Asks the site policy about an image without running it (`stratus-policy-image`).
    pub fn policy_verdict(&self, identifier: &str) -> Result<PolicyVerdict, CloudError> {
        self.raft.read(|s| {
            match s
                .marketplace
                .resolve(identifier, &self.marketplace.policy, now_ms())
            {
                Ok(stored) => Ok(PolicyVerdict {
                    identifier: identifier.to_owned(),
                    allowed: true,
                    code: None,
                    reason: None,
                    entry: Some(entry_view(stored)),
                }),
                Err(ResolveError::Refused(refusal)) => Ok(PolicyVerdict {
                    identifier: identifier.to_owned(),
                    allowed: false,
                    code: Some(refusal.code().to_owned()),
                    reason: Some(refusal.to_string()),
                    entry: None,
                }),
                Err(e @ ResolveError::NotFound { .. }) => Err(CloudError::NotFound(e.to_string())),
            }
        })
    }

    pub async fn register_endorser(
        &self,
        caller: &Caller,
        pem: &str,
    ) -> Result<Endorser, CloudError> {
        require_admin(caller)?;
        let mut parsed = TrustStore::default();
        let count = parsed
            .add_endorsers_pem("certificate", pem)
            .map_err(|e| CloudError::BadRequest(e.to_string()))?;
        if count != 1 {
            return Err(CloudError::BadRequest(format!(
                "certificate: expected one PEM certificate, found {count}"
            )));
        }
        let der = &parsed.endorsers[0];
        let info = read_certificate(der)
            .map_err(|e| CloudError::BadRequest(format!("certificate: {e}")))?;
        let record = EndorserRecord {
            pem: pem.trim().to_owned() + "\n",
            cert_sha256: crate::marketplace::trust::sha256_hex(der),
            subject: info.subject,
            emails: info.emails,
            not_after_ms: u64::try_from(info.not_after)
                .unwrap_or(0)
                .saturating_mul(1000),
            added_ms: now_ms(),
            added_by: caller.name.clone(),
        };
        let sha = record.cert_sha256.clone();
        proposed(self.raft.propose(Command::RegisterEndorser(record)).await)?;
        self.raft
            .read(|s| s.endorsers.get(&sha).map(endorser_view))
            .ok_or_else(|| CloudError::Unavailable("endorser vanished".into()))
    }

    pub fn list_endorsers(&self) -> Vec<Endorser> {
        self.raft
            .read(|s| s.endorsers.values().map(endorser_view).collect())
    }

    pub fn list_types(&self) -> Vec<InstanceType> {
        self.raft.read(|s| s.types.values().cloned().collect())
    }

    pub async fn create_image(
        &self,
        caller: &Caller,
        request: CreateImage,
    ) -> Result<Image, CloudError> {
        require_admin(caller)?;
        validate_name("name", &request.name).map_err(|e| CloudError::BadRequest(e.to_string()))?;
        validate_artifact("disk", &request.disk).map_err(CloudError::BadRequest)?;
        for (field, artifact) in [("kernel", &request.kernel), ("initrd", &request.initrd)] {
            if let Some(artifact) = artifact {
                validate_artifact(field, artifact).map_err(CloudError::BadRequest)?;
            }
        }
        if request.initrd.is_some() && request.kernel.is_none() {
            return Err(CloudError::BadRequest("initrd: needs a kernel".into()));
        }
        if let Some(cmdline) = &request.cmdline {
            if cmdline.len() > 2048 || cmdline.chars().any(char::is_control) {
                return Err(CloudError::BadRequest(
                    "cmdline: at most 2048 printable characters".into(),
                ));
            }
        }
        let record = ImageRecord {
            name: request.name.clone(),
            format: request.format,
            disk: request.disk,
            kernel: request.kernel,
            initrd: request.initrd,
            cmdline: request.cmdline,
            owner: caller.name.clone(),
            created_ms: now_ms(),
        };
        proposed(self.raft.propose(Command::RegisterImage(record)).await)?;
        self.raft
            .read(|s| s.images.get(&request.name).map(image_view))
            .ok_or_else(|| CloudError::Unavailable("image vanished".into()))
    }

    pub fn list_hosts(&self) -> Vec<Host> {
        let up = self.hosts_up();
        let contacts = self.contacts.lock().expect("contacts lock").clone();
        self.raft.read(|s| {
            s.hosts
                .values()
                .map(|h| {
                    let contact = contacts.get(&h.name).cloned().unwrap_or_default();
                    let mut view = host_view(
                        s,
                        h,
                        contact.last_seen_ms,
                        up.contains(&h.name),
                        contact.unknown_domains,
                    );
                    view.images = contact.images.into_iter().collect();
                    view.images.sort();
                    view.precache = s
                        .precache
                        .get(&h.name)
                        .map(|p| p.keys().cloned().collect())
                        .unwrap_or_default();
                    view
                })
                .collect()
        })
    }

    pub fn cluster(&self) -> Cluster {
        let status = self.raft.status();
        Cluster {
            cluster_id: self.raft.read(|s| s.cluster_id.clone()),
            node_id: status.node_id,
            leader: status.leader,
            term: status.term,
            commit_index: status.commit_index,
            applied_index: status.applied_index,
            members: status
                .voters
                .iter()
                .map(|&id| ClusterMember {
                    id,
                    address: String::new(),
                })
                .collect(),
        }
    }

    /// Hosts that count as up: in touch within the timeout, or not yet heard from since this
    /// controller started (agents reconnect within seconds of a controller restart).
    fn hosts_up(&self) -> HashSet<String> {
        let contacts = self.contacts.lock().expect("contacts lock");
        let grace = self.started.elapsed() < self.host_timeout;
        self.raft.read(|s| {
            s.hosts
                .keys()
                .filter(|name| match contacts.get(*name).and_then(|c| c.last_seen) {
                    Some(seen) => seen.elapsed() < self.host_timeout,
                    None => grace,
                })
                .cloned()
                .collect()
        })
    }

    /// Hosts whose image cache holds the artifact with this SHA-256.
    fn hosts_holding(&self, sha256: &str) -> HashSet<String> {
        let contacts = self.contacts.lock().expect("contacts lock");
        contacts
            .iter()
            .filter(|(_, c)| c.images.contains(sha256))
            .map(|(h, _)| h.clone())
            .collect()
    }

    /// Asks `host` to fetch `image` ahead of time and keep it cached (admin).
    pub async fn precache(
        &self,
        caller: &Caller,
        host: &str,
        image: &str,
    ) -> Result<Host, CloudError> {
        require_admin(caller)?;
        let spec = self.resolve_image(image, now_ms())?;
        proposed(
            self.raft
                .propose(Command::Precache {
                    host: host.to_owned(),
                    spec,
                })
                .await,
        )?;
        self.host(host)
    }

    /// Stops keeping an image cached on `host` (it may then be evicted when unused).
    pub async fn unpin(
        &self,
        caller: &Caller,
        host: &str,
        sha256: &str,
    ) -> Result<Host, CloudError> {
        require_admin(caller)?;
        let command = Command::Unpin {
            host: host.to_owned(),
            sha256: sha256.to_owned(),
        };
        match self.raft.propose(command).await? {
            Ok(_) => self.host(host),
            Err(r @ Rejection::NotPinned { .. }) => Err(CloudError::NotFound(r.to_string())),
            Err(r) => Err(r.into()),
        }
    }

    fn host(&self, name: &str) -> Result<Host, CloudError> {
        self.list_hosts()
            .into_iter()
            .find(|h| h.name == name)
            .ok_or_else(|| CloudError::NotFound(format!("host {name} not found")))
    }

    fn touch(&self, host: &str, unknown_domains: Option<Vec<String>>, images: Option<Vec<String>>) {
        let mut contacts = self.contacts.lock().expect("contacts lock");
        let contact = contacts.entry(host.to_owned()).or_default();
        contact.last_seen = Some(Instant::now());
        contact.last_seen_ms = Some(now_ms());
        if let Some(unknown) = unknown_domains {
            contact.unknown_domains = unknown;
        }
        if let Some(images) = images {
            contact.images = images.into_iter().collect();
        }
    }

    pub async fn register_host(&self, request: RegisterHost) -> Result<Registered, CloudError> {
        validate_name("name", &request.name).map_err(|e| CloudError::BadRequest(e.to_string()))?;
        if request.vcpus == 0 || request.memory_mib == 0 {
            return Err(CloudError::BadRequest(
                "vcpus and memory_mib must be positive".into(),
            ));
        }
        let record = HostRecord {
            name: request.name.clone(),
            vcpus: request.vcpus,
            memory_mib: request.memory_mib,
            disk_gib: request.disk_gib,
            domain_type: request.domain_type,
            arch: request.arch,
            hypervisor: request.hypervisor,
            registered_ms: now_ms(),
            volume_pool_gib: request.volume_pool_gib,
        };
        proposed(self.raft.propose(Command::RegisterHost(record)).await)?;
        self.touch(&request.name, None, None);
        tracing::info!(host = %request.name, "host registered");
        Ok(Registered {
            cluster_id: self.raft.read(|s| s.cluster_id.clone()),
        })
    }

    /// The host's desired state, once the state is newer than `since` or `wait` has passed.
    pub async fn desired(
        &self,
        host: &str,
        since: u64,
        wait: Duration,
    ) -> Result<HostDesired, CloudError> {
        if !self.raft.read(|s| s.hosts.contains_key(host)) {
            return Err(CloudError::NotFound(format!(
                "host {host} is not registered"
            )));
        }
        self.touch(host, None, None);
        let mut applied = self.raft.applied();
        let _ = tokio::time::timeout(wait, applied.wait_for(|&v| v > since)).await;
        self.touch(host, None, None);
        let version = *applied.borrow();
        Ok(self.raft.read(|s| {
            let (volumes, exports) = s.storage_desired_for_host(host);
            HostDesired {
                version,
                cluster_id: s.cluster_id.clone(),
                instances: s.desired_for_host(host),
                precache: s
                    .precache
                    .get(host)
                    .map(|pins| pins.values().cloned().collect())
                    .unwrap_or_default(),
                volumes,
                exports,
            }
        }))
    }

    /// Records what a host reports; only changes are proposed.
    pub async fn report(&self, host: &str, report: HostReport) -> Result<(), CloudError> {
        if !self.raft.read(|s| s.hosts.contains_key(host)) {
            return Err(CloudError::NotFound(format!(
                "host {host} is not registered"
            )));
        }
        self.touch(host, Some(report.unknown_domains), report.images);
        for item in report.instances {
            let command = Command::ReportInstance {
                host: host.to_owned(),
                id: item.id,
                state: item.state,
                reason: item.reason,
                at_ms: now_ms(),
            };
            match self.raft.propose(command).await? {
                Ok(_) => {}
                Err(r @ (Rejection::UnknownInstance(_) | Rejection::WrongHost { .. })) => {
                    tracing::warn!(host, error = %r, "report about an instance the host does not hold");
                }
                Err(r) => return Err(r.into()),
            }
        }
        let mut commands = Vec::new();
        for item in report.volumes {
            commands.push(Command::ReportVolume {
                host: host.to_owned(),
                id: item.id,
                state: item.state,
                reason: item.reason,
            });
        }
        for export in report.exports {
            commands.push(Command::ReportExport {
                host: host.to_owned(),
                export,
            });
        }
        for disk in report.disks {
            commands.push(Command::ReportDisk {
                host: host.to_owned(),
                disk,
                at_ms: now_ms(),
            });
        }
        for command in commands {
            match self.raft.propose(command).await? {
                Ok(_) => {}
                Err(r @ Rejection::Volume(_)) => {
                    tracing::warn!(host, error = %r, "volume report not applied");
                }
                Err(r) => return Err(r.into()),
            }
        }
        Ok(())
    }
}

fn require_admin(caller: &Caller) -> Result<(), CloudError> {
    if caller.admin {
        Ok(())
    } else {
        Err(CloudError::Forbidden(
            "only an administrator may do this".into(),
        ))
    }
}

/// A random (version 4) UUID, decided before proposing.
fn uuid_v4() -> String {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = stratus_common::hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let hash = hash_password("correct horse");
        let parsed = PasswordHash::new(&hash).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_ok());
        assert!(Argon2::default()
            .verify_password(b"wrong", &parsed)
            .is_err());
    }

    mod networks {
        use stratus_common::agent::RegisterHost;
        use stratus_common::api::{Artifact, DiskFormat, DomainType};

        use super::*;
        use crate::raft::{start, RaftConfig};

        fn admin() -> Caller {
            Caller {
                name: "admin".into(),
                admin: true,
            }
        }

        fn alice() -> Caller {
            Caller {
                name: "alice".into(),
                admin: false,
            }
        }

        fn network(name: &str, cidr: &str, gateway: &str) -> CreateNetwork {
            CreateNetwork {
                name: name.into(),
                cidr: cidr.into(),
                gateway: gateway.into(),
                dns: vec!["192.0.2.53".into()],
                bridge: format!("br-{name}"),
                vlan: None,
            }
        }

        fn run(image: &str, network: Option<&str>) -> CreateInstance {
            CreateInstance {
                image: image.into(),
                instance_type: None,
                name: None,
                network: network.map(Into::into),
                ssh_key: None,
                user_data: None,
                persistent_disks: Vec::new(),
            }
        }

        /// A bootstrapped one-node cloud with a host and an image, and the given networks
        /// defined as from the configuration.
        async fn cloud(dir: &std::path::Path, networks: &[CreateNetwork]) -> Cloud {
            let raft = start(RaftConfig {
                node_id: 1,
                voters: vec![1],
                path: dir.join("raft.redb"),
                snapshot_every: 1000,
            })
            .unwrap();
            assert!(raft.wait_for_leader(Duration::from_secs(5)).await);
            let cloud = Cloud::new(
                raft,
                "token",
                Duration::from_secs(60),
                MarketplaceSettings::default(),
            );
            cloud
                .bootstrap_if_needed("admin", "password1", 4.0)
                .await
                .unwrap();
            cloud.define_configured_networks(networks).await.unwrap();
            cloud
                .register_host(RegisterHost {
                    name: "node-1".into(),
                    vcpus: 64,
                    memory_mib: 65536,
                    disk_gib: 100,
                    domain_type: DomainType::Kvm,
                    arch: "x86_64".into(),
                    hypervisor: "QEMU".into(),
                    volume_pool_gib: None,
                })
                .await
                .unwrap();
            let disk = Artifact {
                locations: vec!["file:///images/ttylinux.qcow2".into()],
                sha256: "ab".repeat(32),
                size: None,
                compression: Default::default(),
            };
            cloud
                .create_image(
                    &admin(),
                    CreateImage {
                        name: "ttylinux".into(),
                        format: DiskFormat::Qcow2,
                        disk,
                        kernel: None,
                        initrd: None,
                        cmdline: None,
                    },
                )
                .await
                .unwrap();
            cloud
        }

        #[tokio::test]
        async fn instances_go_on_public_by_default_and_show_their_address() {
            let dir = tempfile::tempdir().unwrap();
            let cloud = cloud(
                dir.path(),
                &[
                    network("public", "192.0.2.0/24", "192.0.2.1"),
                    network("private", "10.0.0.0/30", "10.0.0.1"),
                ],
            )
            .await;
            // Starting again with the same configuration changes nothing.
            cloud
                .define_configured_networks(&[network("public", "192.0.2.0/24", "192.0.2.1")])
                .await
                .unwrap();
            let mut request = run("ttylinux", None);
            request.ssh_key = Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA me@host\n".into());
            request.user_data = Some("#!/bin/sh\n".into());
            let first = cloud.create_instance(&alice(), request).await.unwrap();
            assert_eq!(first.ip.as_deref(), Some("192.0.2.2"));
            assert_eq!(first.nics[0].mac, "0a:53:c0:00:02:02");
            let private = cloud
                .create_instance(&alice(), run("ttylinux", Some("private")))
                .await
                .unwrap();
            assert_eq!(private.ip.as_deref(), Some("10.0.0.2"));
            let networks = cloud.list_networks();
            assert_eq!(networks.len(), 2);
            let public = cloud.get_network("public").unwrap();
            assert_eq!((public.leases_used, public.leases_free), (1, 252));
            assert!(matches!(
                cloud.get_network("dmz"),
                Err(CloudError::NotFound(_))
            ));
            let desired = cloud.raft().read(|s| {
                let record = &s.instances[&first.id];
                (record.ssh_key.clone(), s.nic_specs(record))
            });
            assert_eq!(
                desired.0.as_deref(),
                Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA me@host"),
                "stored trimmed"
            );
            assert_eq!(desired.1[0].bridge, "br-public");
        }

        #[tokio::test]
        async fn an_exhausted_network_is_a_clear_conflict_and_makes_nothing() {
            let dir = tempfile::tempdir().unwrap();
            let cloud = cloud(dir.path(), &[network("private", "10.0.0.0/30", "10.0.0.1")]).await;
            cloud
                .create_instance(&alice(), run("ttylinux", Some("private")))
                .await
                .unwrap();
            let err = cloud
                .create_instance(&alice(), run("ttylinux", Some("private")))
                .await
                .unwrap_err();
            assert_eq!(
                err,
                CloudError::Exhausted(
                    "network private has no free address (2 in use, gateway included)".into()
                )
            );
            assert_eq!(cloud.list_instances(&alice()).len(), 1);
            // No `public` here: an instance asking for no network gets none.
            let plain = cloud
                .create_instance(&alice(), run("ttylinux", None))
                .await
                .unwrap();
            assert!(plain.nics.is_empty() && plain.ip.is_none());
        }

        #[tokio::test]
        async fn bad_requests_are_refused_before_anything_is_proposed() {
            let dir = tempfile::tempdir().unwrap();
            let cloud = cloud(dir.path(), &[]).await;
            let unknown = cloud
                .create_instance(&alice(), run("ttylinux", Some("public")))
                .await;
            assert_eq!(
                unknown,
                Err(CloudError::BadRequest(
                    "network: unknown network \"public\"".into()
                ))
            );
            let mut bad_key = run("ttylinux", None);
            bad_key.ssh_key = Some("-----BEGIN RSA PRIVATE KEY-----".into());
            assert!(matches!(
                cloud.create_instance(&alice(), bad_key).await,
                Err(CloudError::BadRequest(m)) if m.starts_with("ssh_key: unknown key type")
            ));
            let mut big = run("ttylinux", None);
            big.user_data = Some("x".repeat(64 * 1024 + 1));
            assert!(matches!(
                cloud.create_instance(&alice(), big).await,
                Err(CloudError::BadRequest(m)) if m.starts_with("user_data:")
            ));
            assert!(cloud.list_instances(&alice()).is_empty());

            let public = network("public", "192.0.2.0/24", "192.0.2.1");
            assert!(matches!(
                cloud.create_network(&alice(), public.clone()).await,
                Err(CloudError::Forbidden(_))
            ));
            let mut bad = public.clone();
            bad.gateway = "198.51.100.1".into();
            assert!(matches!(
                cloud.create_network(&admin(), bad).await,
                Err(CloudError::BadRequest(m)) if m.starts_with("gateway:")
            ));
            let made = cloud
                .create_network(&admin(), public.clone())
                .await
                .unwrap();
            assert_eq!((made.leases_used, made.leases_free), (0, 253));
            assert_eq!(
                cloud.create_network(&admin(), public).await,
                Err(CloudError::Conflict("network public already exists".into()))
            );
            assert_eq!(
                cloud
                    .create_network(&admin(), network("dmz", "192.0.2.0/25", "192.0.2.1"))
                    .await,
                Err(CloudError::Conflict(
                    "network dmz overlaps network public (192.0.2.0/24)".into()
                ))
            );
        }
    }

    #[test]
    fn uuids_are_v4_shaped_and_differ() {
        let (a, b) = (uuid_v4(), uuid_v4());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }
}
