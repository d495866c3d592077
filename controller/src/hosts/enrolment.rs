//! Host identity: an administrator makes a one-time join token for a host name; the host's
//! agent sends a certificate request with it and gets a certificate of the site CA naming the
//! host; from then on it talks mutual TLS, renews its certificate with the one in force, and
//! every agent route acts only for the host its certificate names. Removing a host's trust
//! (revocation) takes all its certificates out of force at once.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use stratus_common::agent::{CreateJoinToken, EnrolHost, HostCertificate, JoinTokenCreated};
use stratus_common::names::validate_name;
use stratus_common::time::rfc3339_ms;

use super::{HostError, Hosts};
use crate::decide::{now_ms, secret, secret_digest};
use crate::failure::InputError;
use crate::pki::{holder_of, Holder, SiteCa};
use crate::replica::Consistency;
use crate::state::{CertificateGrant, Command, JoinToken};
use crate::users::Caller;

/// A join token lasts an hour unless asked otherwise, and never more than a week.
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a host certificate lasts; agents renew when two thirds of it have passed.
pub const HOST_CERTIFICATE_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);

/// A host, as its certificate (in force) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostIdentity {
    pub name: String,
    pub serial: String,
}

/// `command`, as asked for by host `host` now (recorded in the audit log of what it changes).
pub fn by_host(host: &str, command: Command) -> Command {
    Command::By {
        actor: format!("host {host}"),
        at_ms: now_ms(),
        command: Box::new(command),
    }
}

impl HostIdentity {
    /// `command`, as asked for by this host now.
    pub fn by(&self, command: Command) -> Command {
        by_host(&self.name, command)
    }

    /// Fails unless this identity is `host`'s: a host acts only for itself.
    pub fn require(&self, host: &str) -> Result<(), HostError> {
        if self.name == host {
            Ok(())
        } else {
            Err(HostError::OtherHost {
                holder: self.name.clone(),
                host: host.to_owned(),
            })
        }
    }
}

/// What signs host certificates: the site CA, on controllers that hold its key.
pub type Signer = Option<Arc<SiteCa>>;

impl Hosts {
    /// The host a presented certificate (DER, verified by TLS) names, if the certificate is a
    /// host's and in force now.
    pub async fn identify(&self, certificate: Option<&[u8]>) -> Result<HostIdentity, HostError> {
        let Some(der) = certificate else {
            return Err(HostError::NoCertificate);
        };
        let Some(Holder::Host { name, serial }) = holder_of(der) else {
            return Err(HostError::NotAHostCertificate);
        };
        let now = now_ms();
        // This node's own view first (cheap, and right but for the last milliseconds); a
        // certificate it does not know in force yet (just issued, or this node just became
        // leader) is looked up again at the cluster's latest.
        let mut in_force = false;
        for consistency in [Consistency::Stale, Consistency::Linearizable] {
            in_force = self
                .replica
                .read(consistency, |s| {
                    s.trust.certificate_in_force(&name, &serial, now)
                })
                .await?;
            if in_force {
                break;
            }
        }
        if !in_force {
            return Err(HostError::Revoked { host: name, serial });
        }
        Ok(HostIdentity { name, serial })
    }

    /// Makes a join token for `host` (administrators): shown once, kept as a digest.
    pub async fn create_join_token(
        &self,
        caller: &Caller,
        host: &str,
        request: CreateJoinToken,
    ) -> Result<JoinTokenCreated, HostError> {
        caller.require_admin("make join tokens")?;
        validate_name("name", host).map_err(|e| InputError::named("name", e.to_string()))?;
        let ttl = request
            .ttl_secs
            .map_or(DEFAULT_TOKEN_TTL, Duration::from_secs);
        if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
            return Err(InputError::new(
                "ttl_secs",
                format!("between 1 and {} seconds", MAX_TOKEN_TTL.as_secs()),
            )
            .into());
        }
        let token = secret("stratus-join");
        let created_ms = now_ms();
        let expires_ms = created_ms + ttl.as_millis() as u64;
        self.replica
            .propose(caller.by(Command::CreateJoinToken {
                digest: secret_digest(&token),
                token: JoinToken {
                    host: host.to_owned(),
                    created_ms,
                    expires_ms,
                    by: caller.name.clone(),
                },
            }))
            .await??;
        tracing::info!(host, by = %caller.name, "join token made");
        Ok(JoinTokenCreated {
            host: host.to_owned(),
            token,
            expires: rfc3339_ms(expires_ms),
        })
    }

    /// Signs a host's certificate request, paid for by a join token (`request.join_token`) or
    /// by the host's certificate in force (`renewing`, from the request's TLS connection).
    pub async fn enrol(
        &self,
        host: &str,
        request: EnrolHost,
        renewing: Option<HostIdentity>,
    ) -> Result<HostCertificate, HostError> {
        validate_name("name", host).map_err(|e| InputError::named("name", e.to_string()))?;
        let ca = self.signer.clone().ok_or(HostError::NoSigner)?;
        let grant = match (request.join_token, renewing) {
            (Some(token), _) => CertificateGrant::JoinToken(secret_digest(&token)),
            (None, Some(identity)) => {
                identity.require(host)?;
                CertificateGrant::Renewal(identity.serial)
            }
            (None, None) => return Err(HostError::NoCertificate),
        };
        let now = SystemTime::now();
        let issued = ca
            .sign_host(host, &request.csr, &[], now, HOST_CERTIFICATE_VALIDITY)
            .map_err(|e| InputError::new("csr", e))?;
        let renewal = matches!(grant, CertificateGrant::Renewal(_));
        // The certificate counts only once this is applied: refused, it was never in force.
        self.replica
            .propose(by_host(
                host,
                Command::IssueHostCertificate {
                    host: host.to_owned(),
                    serial: issued.serial.clone(),
                    not_after_ms: issued.not_after_ms,
                    grant,
                    at_ms: now_ms(),
                },
            ))
            .await??;
        tracing::info!(host, serial = %issued.serial, renewal, "host certificate issued");
        Ok(HostCertificate {
            host: host.to_owned(),
            certificate: issued.certificate_pem,
            ca_certificate: ca.certificate_pem().to_owned(),
            serial: issued.serial,
            not_after: rfc3339_ms(issued.not_after_ms),
        })
    }

    /// Takes every certificate and join token of `host` out of force (administrators).
    pub async fn revoke(&self, caller: &Caller, host: &str) -> Result<(), HostError> {
        caller.require_admin("revoke hosts")?;
        self.replica
            .propose(caller.by(Command::RevokeHost {
                host: host.to_owned(),
            }))
            .await??;
        tracing::info!(host, by = %caller.name, "host certificates revoked");
        Ok(())
    }
}
