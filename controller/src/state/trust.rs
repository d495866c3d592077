//! Who may act as whom, replicated: hosts' one-time join tokens and the host certificates in
//! force, users' API tokens and the certificate subjects users log in with. Secrets are kept
//! only as SHA-256 digests; the rules (a join token is used once, before it expires, for its
//! own host; a renewal needs a certificate still in force; a revoked host's certificates are
//! gone) are checked here, in apply, so every replica decides alike.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A join token an administrator made for a host, not used yet.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JoinToken {
    pub host: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    /// The administrator who made it.
    pub by: String,
}

/// A user's API token (the secret itself is never kept).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiToken {
    /// Public ID, to list and revoke it by.
    pub id: String,
    pub owner: String,
    /// What the user calls it.
    pub name: String,
    pub created_ms: u64,
    pub expires_ms: Option<u64>,
}

/// The replicated trust of the cloud.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Trust {
    /// Unused join tokens, by the SHA-256 (hex) of the token.
    pub join_tokens: BTreeMap<String, JoinToken>,
    /// Per host, its certificates in force: serial (hex) to end of validity (epoch ms).
    pub host_certificates: BTreeMap<String, BTreeMap<String, u64>>,
    /// Users' API tokens, by the SHA-256 (hex) of the token.
    pub api_tokens: BTreeMap<String, ApiToken>,
    /// Certificate subjects (RFC 4514) users log in with, to the user's name.
    pub certificate_subjects: BTreeMap<String, String>,
}

/// Why a trust command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("the join token is not valid for host {host}: unknown, already used, or expired")]
    JoinToken { host: String },
    #[error("host {host}'s certificate {serial} is not in force (revoked or expired)")]
    NotInForce { host: String, serial: String },
    #[error("API token {0} not found")]
    UnknownApiToken(String),
    #[error("the certificate subject {0:?} is already mapped to a user")]
    SubjectTaken(String),
    #[error("no user logs in with the certificate subject {0:?}")]
    UnknownSubject(String),
    #[error("user {0} not found")]
    UnknownUser(String),
}

impl Trust {
    /// Records a join token for its host; an unused earlier one for the same host goes.
    pub fn create_join_token(&mut self, digest: String, token: JoinToken) {
        let host = token.host.clone();
        self.join_tokens.retain(|_, t| t.host != host);
        self.join_tokens.insert(digest, token);
    }

    /// Puts a new certificate of `host` in force, paid for by a join token (enrolment) or by a
    /// certificate still in force (renewal). Certificates past their end are dropped.
    pub fn issue_host_certificate(
        &mut self,
        host: &str,
        serial: String,
        not_after_ms: u64,
        by: CertificateGrant,
        at_ms: u64,
    ) -> Result<(), TrustError> {
        match by {
            CertificateGrant::JoinToken(digest) => {
                let valid = self
                    .join_tokens
                    .get(&digest)
                    .is_some_and(|t| t.host == host && t.expires_ms > at_ms);
                if !valid {
                    return Err(TrustError::JoinToken {
                        host: host.to_owned(),
                    });
                }
                self.join_tokens.remove(&digest);
            }
            CertificateGrant::Renewal(current) => {
                if !self.certificate_in_force(host, &current, at_ms) {
                    return Err(TrustError::NotInForce {
                        host: host.to_owned(),
                        serial: current,
                    });
                }
            }
        }
        let certificates = self.host_certificates.entry(host.to_owned()).or_default();
        certificates.retain(|_, not_after| *not_after > at_ms);
        certificates.insert(serial, not_after_ms);
        Ok(())
    }

    /// Whether `serial` is a certificate of `host` in force at `at_ms`.
    pub fn certificate_in_force(&self, host: &str, serial: &str, at_ms: u64) -> bool {
        self.host_certificates
            .get(host)
            .and_then(|c| c.get(serial))
            .is_some_and(|not_after| *not_after > at_ms)
    }

    /// Takes every certificate and join token of `host` out of force; true if there was any.
    pub fn revoke_host(&mut self, host: &str) -> bool {
        let tokens = self.join_tokens.len();
        self.join_tokens.retain(|_, t| t.host != host);
        let certificates = self.host_certificates.remove(host).is_some();
        certificates || tokens != self.join_tokens.len()
    }

    /// Forgets what a deleted user logged in with: their API tokens and certificate subjects.
    pub fn forget_user(&mut self, user: &str) {
        self.api_tokens.retain(|_, t| t.owner != user);
        self.certificate_subjects.retain(|_, u| u != user);
    }

    pub fn create_api_token(&mut self, digest: String, token: ApiToken) {
        self.api_tokens.insert(digest, token);
    }

    /// Revokes the API token with public ID `id`, if `caller` owns it or is an administrator.
    pub fn revoke_api_token(
        &mut self,
        id: &str,
        caller: &str,
        admin: bool,
    ) -> Result<(), TrustError> {
        let digest = self
            .api_tokens
            .iter()
            .find(|(_, t)| t.id == id && (admin || t.owner == caller))
            .map(|(d, _)| d.clone())
            .ok_or_else(|| TrustError::UnknownApiToken(id.to_owned()))?;
        self.api_tokens.remove(&digest);
        Ok(())
    }

    /// Maps a certificate subject to `user` (`None`: removes the mapping).
    pub fn map_subject(
        &mut self,
        subject: String,
        user: Option<String>,
        users: &BTreeMap<String, super::UserRecord>,
    ) -> Result<(), TrustError> {
        match user {
            Some(user) => {
                if !users.contains_key(&user) {
                    return Err(TrustError::UnknownUser(user));
                }
                match self.certificate_subjects.get(&subject) {
                    Some(known) if *known == user => Ok(()),
                    Some(_) => Err(TrustError::SubjectTaken(subject)),
                    None => {
                        self.certificate_subjects.insert(subject, user);
                        Ok(())
                    }
                }
            }
            None => self
                .certificate_subjects
                .remove(&subject)
                .map(|_| ())
                .ok_or(TrustError::UnknownSubject(subject)),
        }
    }
}

/// What pays for a new host certificate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum CertificateGrant {
    /// Enrolment: a join token's digest.
    JoinToken(String),
    /// Renewal: the serial of the host's certificate in force that asked.
    Renewal(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(host: &str, expires_ms: u64) -> JoinToken {
        JoinToken {
            host: host.into(),
            created_ms: 0,
            expires_ms,
            by: "admin".into(),
        }
    }

    #[test]
    fn a_join_token_is_used_once_before_it_expires_for_its_own_host() {
        let mut trust = Trust::default();
        trust.create_join_token("d1".into(), token("node-1", 1000));
        let grant = || CertificateGrant::JoinToken("d1".into());
        // For another host: refused, and the token is still there for its own.
        assert_eq!(
            trust.issue_host_certificate("node-2", "s0".into(), 5000, grant(), 10),
            Err(TrustError::JoinToken {
                host: "node-2".into()
            })
        );
        trust
            .issue_host_certificate("node-1", "s1".into(), 5000, grant(), 10)
            .unwrap();
        assert!(trust.certificate_in_force("node-1", "s1", 4999));
        assert!(!trust.certificate_in_force("node-1", "s1", 5000));
        // Used: a second enrolment with it is refused.
        assert!(trust
            .issue_host_certificate("node-1", "s2".into(), 5000, grant(), 20)
            .is_err());
        // Expired: refused.
        trust.create_join_token("d3".into(), token("node-3", 100));
        assert!(trust
            .issue_host_certificate(
                "node-3",
                "s3".into(),
                5000,
                CertificateGrant::JoinToken("d3".into()),
                100
            )
            .is_err());
    }

    #[test]
    fn renewal_needs_a_certificate_in_force_and_revocation_ends_them_all() {
        let mut trust = Trust::default();
        trust.create_join_token("d".into(), token("node-1", 1000));
        trust
            .issue_host_certificate(
                "node-1",
                "s1".into(),
                2000,
                CertificateGrant::JoinToken("d".into()),
                0,
            )
            .unwrap();
        trust
            .issue_host_certificate(
                "node-1",
                "s2".into(),
                4000,
                CertificateGrant::Renewal("s1".into()),
                1500,
            )
            .unwrap();
        // Both in force until the first ends; an expired one cannot renew.
        assert!(trust.certificate_in_force("node-1", "s1", 1600));
        assert!(trust
            .issue_host_certificate(
                "node-1",
                "s3".into(),
                6000,
                CertificateGrant::Renewal("s1".into()),
                2500
            )
            .is_err());
        assert!(trust.revoke_host("node-1"));
        assert!(!trust.certificate_in_force("node-1", "s2", 1600));
        assert!(trust
            .issue_host_certificate(
                "node-1",
                "s4".into(),
                6000,
                CertificateGrant::Renewal("s2".into()),
                1600
            )
            .is_err());
        assert!(!trust.revoke_host("node-1"));
    }

    #[test]
    fn a_deleted_user_leaves_no_token_or_certificate_subject_behind() {
        use crate::state::{Command, State, UserRecord};
        let mut state = State::default();
        state
            .apply(Command::CreateUser(UserRecord {
                name: "alice".into(),
                password_hash: "x".into(),
                admin: false,
                created_ms: 0,
            }))
            .unwrap();
        state
            .apply(Command::CreateApiToken {
                digest: "d".into(),
                token: ApiToken {
                    id: "t".into(),
                    owner: "alice".into(),
                    name: "ci".into(),
                    created_ms: 0,
                    expires_ms: None,
                },
            })
            .unwrap();
        state
            .apply(Command::MapCertificateSubject {
                subject: "CN=Alice".into(),
                user: Some("alice".into()),
            })
            .unwrap();
        state
            .apply(Command::DeleteUser {
                name: "alice".into(),
            })
            .unwrap();
        assert!(state.trust.api_tokens.is_empty());
        assert!(state.trust.certificate_subjects.is_empty());
    }
}
