//! Images: site images an administrator registers, the Marketplace of signed entries (upload,
//! queries, policy verdicts), endorser certificates, and what an instance of an image boots
//! (a site image by name, or the entry the site policy picks for an identifier).

use stratus_common::agent::ImageSpec;
use stratus_common::api::{
    CreateImage, Endorser, Image, ImageList, MarketplaceEntry, MarketplacePage, PolicyVerdict,
};
use stratus_common::artifact::validate_artifact;
use stratus_common::certificate::read_certificate;
use stratus_common::marketplace::{image_spec, ImageKind, SignedMetadata};
use stratus_common::names::{validate_name, validate_text};

use crate::decide::now_ms;
use crate::failure::{impl_failure, AdminOnly, InputError};
use crate::marketplace::{
    policy, verify, PolicyRefusal, Query, ResolveError, SitePolicy, TrustError, TrustStore,
    VerifyError,
};
use crate::replica::{Consistency, Replica, ReplicaError};
use crate::state::{
    endorser_view, entry_view, image_view, Command, EndorserRecord, ImageRecord, Outcome,
    Rejection, State,
};
use crate::users::Caller;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    AdminOnly(#[from] AdminOnly),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    /// The signed envelope cannot be read at all.
    #[error("{0}")]
    Envelope(String),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Policy(#[from] PolicyRefusal),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("image: {0} is a disk image, not a machine image")]
    NotMachine(String),
    #[error("image: unknown image {0:?}")]
    Unknown(String),
    #[error("registered endorsers cannot be read")]
    Endorsers(#[source] TrustError),
    #[error("{0} vanished right after it was applied")]
    Vanished(&'static str),
}

impl_failure!(ImageError {
    delegate: [AdminOnly, Input, Rejected, Replica, Verify, Policy, Resolve],
    own: [
        ImageError::Envelope(_) | ImageError::NotMachine(_) | ImageError::Unknown(_) => Kind::BadRequest,
        ImageError::Endorsers(_) | ImageError::Vanished(_) => Kind::Unavailable,
    ],
    codes: [ImageError::Envelope(_) => "malformed_envelope"],
});

/// The site's Marketplace settings: the CAs it trusts and its policy.
#[derive(Debug, Clone, Default)]
pub struct MarketplaceSettings {
    /// DER certificates of the trusted CAs.
    pub trusted_cas: Vec<Vec<u8>>,
    pub policy: SitePolicy,
}

pub struct Images {
    replica: Replica,
    marketplace: MarketplaceSettings,
}

/// What an instance of `image` boots, as `state` and `policy` decide at `now`.
pub fn resolve_in(
    state: &State,
    policy: &SitePolicy,
    image: &str,
    now: u64,
) -> Result<ImageSpec, ImageError> {
    if let Some(site) = state.images.get(image) {
        return Ok(site.spec());
    }
    match state.marketplace.resolve(image, policy, now) {
        Ok(stored) if stored.entry.metadata.kind == ImageKind::Disk => {
            Err(ImageError::NotMachine(image.to_owned()))
        }
        Ok(stored) => Ok(image_spec(&stored.entry.metadata)),
        Err(ResolveError::NotFound { .. }) => Err(ImageError::Unknown(image.to_owned())),
        Err(e @ ResolveError::Refused(_)) => Err(e.into()),
    }
}

impl Images {
    pub fn new(replica: Replica, marketplace: MarketplaceSettings) -> Self {
        Self {
            replica,
            marketplace,
        }
    }

    /// What an instance of `image` boots: a site image by name, or the Marketplace entry the
    /// site policy picks for an identifier.
    pub async fn resolve(
        &self,
        consistency: Consistency,
        image: &str,
    ) -> Result<ImageSpec, ImageError> {
        let now = now_ms();
        self.replica
            .read(consistency, |s| {
                resolve_in(s, &self.marketplace.policy, image, now)
            })
            .await?
    }

    async fn trust_store(&self) -> Result<TrustStore, ImageError> {
        let endorsers = self
            .replica
            .read(Consistency::Linearizable, |s| {
                s.endorsers
                    .values()
                    .map(|e| e.pem.clone())
                    .collect::<Vec<_>>()
            })
            .await?;
        let mut trust = TrustStore {
            trusted_cas: self.marketplace.trusted_cas.clone(),
            endorsers: Vec::new(),
        };
        for pem in endorsers {
            trust
                .add_endorsers_pem("registered endorser", &pem)
                .map_err(ImageError::Endorsers)?;
        }
        Ok(trust)
    }

    /// Uploads a signed Marketplace entry: structure and content, signature and chain, dates,
    /// then the site's deny lists and endorser allow-list; only then is it made visible.
    pub async fn upload_entry(
        &self,
        caller: &Caller,
        body: &[u8],
    ) -> Result<MarketplaceEntry, ImageError> {
        let envelope =
            SignedMetadata::from_json(body).map_err(|e| ImageError::Envelope(e.to_string()))?;
        let now = now_ms();
        let verified = verify(&envelope, &self.trust_store().await?, now)?;
        // Content the site refuses is not registered either; a deprecation is a normal entry.
        match policy::evaluate(&self.marketplace.policy, &verified, now) {
            Ok(()) | Err(PolicyRefusal::Deprecated { .. }) => {}
            Err(refusal) => return Err(refusal.into()),
        }
        let identifier = verified.metadata.identifier.clone();
        let email = verified.endorser_email.clone();
        let command = Command::AppendEntry {
            entry: Box::new(verified),
            uploaded_ms: now,
        };
        let Outcome::EntryAppended(seq) = self.replica.propose(caller.by(command)).await?? else {
            return Err(ImageError::Vanished("the entry"));
        };
        tracing::info!(%identifier, endorser = %email, seq, by = %caller.name, "marketplace entry uploaded");
        self.replica
            .read(Consistency::Stale, |s| {
                s.marketplace.get(seq).map(entry_view)
            })
            .await?
            .ok_or(ImageError::Vanished("the entry"))
    }

    /// Site images and a page of Marketplace entries.
    pub async fn list(&self, query: &Query) -> Result<ImageList, ImageError> {
        Ok(self
            .replica
            .read(Consistency::Linearizable, |s| {
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
            .await?)
    }

    /// Asks the site policy about an image without running it (`stratus-policy-image`).
    pub async fn policy_verdict(&self, identifier: &str) -> Result<PolicyVerdict, ImageError> {
        let now = now_ms();
        self.replica
            .read(Consistency::Linearizable, |s| {
                match s
                    .marketplace
                    .resolve(identifier, &self.marketplace.policy, now)
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
                    Err(e @ ResolveError::NotFound { .. }) => Err(e.into()),
                }
            })
            .await?
    }

    pub async fn register_endorser(
        &self,
        caller: &Caller,
        pem: &str,
    ) -> Result<Endorser, ImageError> {
        caller.require_admin("register endorsers")?;
        let bad = |message: String| InputError::new("certificate", message);
        let mut parsed = TrustStore::default();
        let count = parsed
            .add_endorsers_pem("certificate", pem)
            .map_err(|e| bad(e.to_string()))?;
        if count != 1 {
            return Err(bad(format!("expected one PEM certificate, found {count}")).into());
        }
        let der = &parsed.endorsers[0];
        let info = read_certificate(der).map_err(|e| bad(e.to_string()))?;
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
        self.replica
            .propose(caller.by(Command::RegisterEndorser(record)))
            .await??;
        self.replica
            .read(Consistency::Stale, |s| {
                s.endorsers.get(&sha).map(endorser_view)
            })
            .await?
            .ok_or(ImageError::Vanished("the endorser"))
    }

    pub async fn list_endorsers(&self) -> Result<Vec<Endorser>, ImageError> {
        Ok(self
            .replica
            .read(Consistency::Linearizable, |s| {
                s.endorsers.values().map(endorser_view).collect()
            })
            .await?)
    }

    /// Registers a site image (administrators only).
    /// Removes a site image (administrators): new instances can no longer name it; those
    /// made from it keep the image they resolved at their creation.
    pub async fn delete(&self, caller: &Caller, name: &str) -> Result<(), ImageError> {
        caller.require_admin("remove site images")?;
        self.replica
            .propose(caller.by(Command::DeleteImage {
                name: name.to_owned(),
            }))
            .await??;
        tracing::info!(image = %name, by = %caller.name, "site image removed");
        Ok(())
    }

    pub async fn create(&self, caller: &Caller, request: CreateImage) -> Result<Image, ImageError> {
        caller.require_admin("register site images")?;
        validate_name("name", &request.name)
            .map_err(|e| InputError::named("name", e.to_string()))?;
        validate_artifact("disk", &request.disk).map_err(|m| InputError::named("disk", m))?;
        for (field, artifact) in [("kernel", &request.kernel), ("initrd", &request.initrd)] {
            if let Some(artifact) = artifact {
                validate_artifact(field, artifact).map_err(|m| InputError::named(field, m))?;
            }
        }
        if request.initrd.is_some() && request.kernel.is_none() {
            return Err(InputError::new("initrd", "needs a kernel").into());
        }
        if let Some(cmdline) = &request.cmdline {
            validate_text("cmdline", cmdline, 2048)
                .map_err(|e| InputError::named("cmdline", e.to_string()))?;
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
        self.replica
            .propose(caller.by(Command::RegisterImage(record)))
            .await??;
        self.replica
            .read(Consistency::Stale, |s| {
                s.images.get(&request.name).map(image_view)
            })
            .await?
            .ok_or(ImageError::Vanished("the image"))
    }
}
