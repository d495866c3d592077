//! What kind of failure an error is, for whoever renders it: every error the controller's
//! services return implements [`Failure`], so the HTTP layer maps it to a status and a stable
//! code by its type and variant, never by its message.

use crate::marketplace::{RegistryError, ResolveError};
use crate::replica::ReplicaError;
use crate::state::{IpamError, Rejection, VolumeError};

/// An error and its causes, as one line (for logs and for errors that carry another's text).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The broad class of a failure; the HTTP layer turns it into a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request itself is wrong (a field, a value): 400.
    BadRequest,
    /// No valid credentials: 401.
    Unauthenticated,
    /// Valid credentials, not allowed (or refused by trust or policy): 403.
    Forbidden,
    /// No such thing, or not the caller's: 404.
    NotFound,
    /// The request conflicts with the state (in use, exists, taken): 409.
    Conflict,
    /// Refused for now to protect the service (too many failed logins): 429.
    TooManyRequests,
    /// The control plane cannot serve it now (no leader, no quorum in time): 503.
    Unavailable,
}

impl Kind {
    /// The code of failures of this kind that have none of their own.
    pub fn code(self) -> &'static str {
        match self {
            Kind::BadRequest => "bad_request",
            Kind::Unauthenticated => "unauthenticated",
            Kind::Forbidden => "forbidden",
            Kind::NotFound => "not_found",
            Kind::Conflict => "conflict",
            Kind::TooManyRequests => "too_many_requests",
            Kind::Unavailable => "unavailable",
        }
    }
}

/// An error with a kind and a stable machine-readable code.
pub trait Failure: std::error::Error + Send + Sync + 'static {
    fn kind(&self) -> Kind;

    /// The code clients match on; by default the kind's.
    fn code(&self) -> &'static str {
        self.kind().code()
    }

    /// How long the client should wait before trying again, when that is known.
    fn retry_after(&self) -> Option<std::time::Duration> {
        None
    }
}

/// A field of the request that is wrong, and why; the message starts with the field's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InputError {
    pub field: &'static str,
    message: String,
}

impl InputError {
    /// `field: reason`.
    pub fn new(field: &'static str, reason: impl std::fmt::Display) -> Self {
        Self {
            field,
            message: format!("{field}: {reason}"),
        }
    }

    /// A validator's message that already names the field (or a path below it).
    pub fn named(field: &'static str, message: String) -> Self {
        Self { field, message }
    }
}

impl Failure for InputError {
    fn kind(&self) -> Kind {
        Kind::BadRequest
    }
}

/// The caller is not an administrator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("only an administrator may {0}")]
pub struct AdminOnly(pub &'static str);

impl Failure for AdminOnly {
    fn kind(&self) -> Kind {
        Kind::Forbidden
    }
}

impl Failure for ReplicaError {
    fn kind(&self) -> Kind {
        Kind::Unavailable
    }

    fn code(&self) -> &'static str {
        match self {
            ReplicaError::NoLeader | ReplicaError::Superseded => "no_leader",
            ReplicaError::ProposalTimeout(_) | ReplicaError::ReadTimeout(_) => "no_quorum",
            ReplicaError::OutcomeUnknown => "outcome_unknown",
            ReplicaError::Removed => "removed",
            ReplicaError::Stopped => "unavailable",
        }
    }
}

impl Failure for IpamError {
    fn kind(&self) -> Kind {
        match self {
            IpamError::InvalidNetwork(_) | IpamError::UnknownNetwork(_) => Kind::BadRequest,
            IpamError::NetworkExists(_)
            | IpamError::Overlaps { .. }
            | IpamError::Exhausted { .. } => Kind::Conflict,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            IpamError::Exhausted { .. } => "network_exhausted",
            _ => self.kind().code(),
        }
    }
}

impl Failure for VolumeError {
    fn kind(&self) -> Kind {
        match self {
            VolumeError::Unknown(_) | VolumeError::UnknownInstance(_) => Kind::NotFound,
            VolumeError::NotOwner { .. }
            | VolumeError::QuotaVolumes { .. }
            | VolumeError::QuotaSize { .. } => Kind::Forbidden,
            VolumeError::SizeZero
            | VolumeError::NamedTwice(_)
            | VolumeError::NotAttached { .. } => Kind::BadRequest,
            VolumeError::InstanceNotOnHost { .. } => Kind::Forbidden,
            VolumeError::Exists(_)
            | VolumeError::InUse { .. }
            | VolumeError::NotAvailable { .. }
            | VolumeError::Taken { .. }
            | VolumeError::AlreadyAttached { .. }
            | VolumeError::NoTarget(_)
            | VolumeError::InstanceNotRunning { .. }
            | VolumeError::NotStuck { .. }
            | VolumeError::NoRoom { .. }
            | VolumeError::TypeWhileAttached(_) => Kind::Conflict,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            VolumeError::QuotaVolumes { .. } | VolumeError::QuotaSize { .. } => "quota_exceeded",
            VolumeError::NotAttached { .. } => "not_attached",
            _ => self.kind().code(),
        }
    }
}

impl Failure for RegistryError {
    fn kind(&self) -> Kind {
        Kind::Conflict
    }
}

impl Failure for ResolveError {
    fn kind(&self) -> Kind {
        match self {
            ResolveError::NotFound { .. } => Kind::NotFound,
            ResolveError::Refused(_) => Kind::Forbidden,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ResolveError::NotFound { .. } => "not_found",
            ResolveError::Refused(refusal) => refusal.code(),
        }
    }
}

impl Failure for Rejection {
    fn kind(&self) -> Kind {
        match self {
            Rejection::Marketplace(e) => e.kind(),
            Rejection::Ipam(e) => e.kind(),
            Rejection::Volume(e) => e.kind(),
            Rejection::Trust(e) => e.kind(),
            Rejection::UnknownType(_) | Rejection::NoRole(_) => Kind::BadRequest,
            Rejection::GroupExists(_) | Rejection::GroupInUse { .. } => Kind::Conflict,
            Rejection::FenceUp(_) | Rejection::NotEvacuable { .. } => Kind::Conflict,
            Rejection::UnknownGroup(_) => Kind::NotFound,
            Rejection::RulesWithoutCreation => Kind::BadRequest,
            Rejection::HostHolds { .. }
            | Rejection::HostUp(_)
            | Rejection::HostUnschedulable { .. }
            | Rejection::NotReplaceable { .. } => Kind::Conflict,
            Rejection::UnknownInstance(_)
            | Rejection::UnknownHost(_)
            | Rejection::UnknownUser(_)
            | Rejection::UnknownImage(_) => Kind::NotFound,
            Rejection::NotPinned { .. } => Kind::NotFound,
            Rejection::WrongHost { .. } => Kind::Forbidden,
            Rejection::AlreadyBootstrapped
            | Rejection::UserExists(_)
            | Rejection::ImageExists(_)
            | Rejection::EndorserExists(_)
            | Rejection::NoRoom { .. }
            | Rejection::AlreadyDone(_)
            | Rejection::WrongState { .. }
            | Rejection::LastAdmin(_)
            | Rejection::UserOwns { .. } => Kind::Conflict,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Rejection::Marketplace(e) => e.code(),
            Rejection::Ipam(e) => e.code(),
            Rejection::Volume(e) => e.code(),
            Rejection::WrongState { .. } => "wrong_state",
            Rejection::HostHolds { .. } => "host_in_use",
            Rejection::GroupInUse { .. } => "group_in_use",
            Rejection::FenceUp(_) => "host_up",
            Rejection::Trust(e) => e.code(),
            _ => self.kind().code(),
        }
    }
}

impl Failure for crate::state::TrustError {
    fn kind(&self) -> Kind {
        use crate::state::TrustError as T;
        match self {
            T::JoinToken { .. } | T::NotInForce { .. } => Kind::Forbidden,
            T::UnknownApiToken(_) | T::UnknownSubject(_) | T::UnknownUser(_) => Kind::NotFound,
            T::SubjectTaken(_) => Kind::Conflict,
        }
    }

    fn code(&self) -> &'static str {
        use crate::state::TrustError as T;
        match self {
            T::JoinToken { .. } => "join_token_invalid",
            T::NotInForce { .. } => "certificate_revoked",
            _ => self.kind().code(),
        }
    }
}

/// Implements [`Failure`] for an error enum: the variants listed under `delegate` wrap another
/// failure (its kind and code are theirs), the patterns under `own` give the rest their kind,
/// and those under `codes` (optional) a code of their own instead of their kind's.
macro_rules! impl_failure {
    ($ty:ident {
        delegate: [$($wrap:ident),* $(,)?],
        own: [$($own:pat => $kind:expr),* $(,)?]
        $(, codes: [$($coded:pat => $code:expr),* $(,)?])? $(,)?
    }) => {
        impl $crate::failure::Failure for $ty {
            fn kind(&self) -> $crate::failure::Kind {
                #[allow(unused_imports)]
                use $crate::failure::Kind;
                match self {
                    $( $ty::$wrap(e) => e.kind(), )*
                    $( $own => $kind, )*
                }
            }

            fn code(&self) -> &'static str {
                #[allow(unreachable_patterns)]
                match self {
                    $( $ty::$wrap(e) => e.code(), )*
                    $($( $coded => $code, )*)?
                    _ => self.kind().code(),
                }
            }

            fn retry_after(&self) -> Option<std::time::Duration> {
                #[allow(unreachable_patterns)]
                match self {
                    $( $ty::$wrap(e) => e.retry_after(), )*
                    _ => None,
                }
            }
        }
    };
}
pub(crate) use impl_failure;

impl Failure for crate::users::throttle::Throttled {
    fn kind(&self) -> Kind {
        Kind::TooManyRequests
    }

    fn code(&self) -> &'static str {
        "too_many_failures"
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        Some(self.retry_after)
    }
}

impl Failure for crate::users::passwords::PoolError {
    fn kind(&self) -> Kind {
        Kind::Unavailable
    }

    fn code(&self) -> &'static str {
        "busy"
    }
}

impl Failure for crate::marketplace::VerifyError {
    fn kind(&self) -> Kind {
        use crate::marketplace::VerifyError as V;
        match self {
            V::Envelope(_)
            | V::InvalidMetadata(_)
            | V::BadCertificate { .. }
            | V::UnsupportedKey { .. }
            | V::AlgorithmMismatch { .. }
            | V::SubjectMismatch { .. }
            | V::EmailNotInCertificate { .. }
            | V::CreatedInFuture { .. } => Kind::BadRequest,
            V::Untrusted { .. }
            | V::UnsuitableCertificate { .. }
            | V::ChainInvalid { .. }
            | V::CertificateExpired { .. }
            | V::CertificateNotYetValid { .. }
            | V::BadSignature
            | V::Expired { .. } => Kind::Forbidden,
        }
    }

    fn code(&self) -> &'static str {
        crate::marketplace::VerifyError::code(self)
    }
}

impl Failure for crate::marketplace::PolicyRefusal {
    fn kind(&self) -> Kind {
        Kind::Forbidden
    }

    fn code(&self) -> &'static str {
        crate::marketplace::PolicyRefusal::code(self)
    }
}
