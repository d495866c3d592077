//! Users' other credentials: API tokens (256-bit secrets shown once, kept as SHA-256 digests,
//! optionally expiring, revocable by their owner or an administrator) and X.509 client
//! certificates, mapped to an account by their subject by an administrator.

use stratus_common::api::{ApiTokenCreated, ApiTokenView, CreateApiToken};
use stratus_common::names::validate_text;
use stratus_common::time::rfc3339_ms;

use super::{Caller, UserError, Users, Via};
use crate::decide::{now_ms, secret, secret_digest, uuid};
use crate::failure::InputError;
use crate::replica::Consistency;
use crate::state::{ApiToken, Command};

/// The longest a token name may be, in bytes.
const MAX_TOKEN_NAME: usize = 64;
/// The longest lifetime a token may be given (ten years); without one it lasts until revoked.
pub const MAX_TOKEN_LIFETIME_SECS: u64 = 10 * 365 * 24 * 3600;
/// The most tokens a user may hold.
const MAX_TOKENS_PER_USER: usize = 32;

fn view(token: &ApiToken) -> ApiTokenView {
    ApiTokenView {
        id: token.id.clone(),
        name: token.name.clone(),
        owner: token.owner.clone(),
        created: rfc3339_ms(token.created_ms),
        expires: token.expires_ms.map(rfc3339_ms),
    }
}

impl Users {
    /// The user holding the API token `token`, if it exists and has not expired.
    pub async fn authenticate_token(&self, token: &str) -> Result<Caller, UserError> {
        let (digest, now) = (secret_digest(token), now_ms());
        let (found, seen) = self
            .replica
            .read_seen(Consistency::Linearizable, |s| {
                let token = s.trust.api_tokens.get(&digest)?;
                if token.expires_ms.is_some_and(|end| end <= now) {
                    return None;
                }
                s.users
                    .get(&token.owner)
                    .map(|user| (user.name.clone(), user.admin, token.name.clone()))
            })
            .await?;
        let (name, admin, token) = found.ok_or(UserError::BadToken)?;
        Ok(Caller {
            name,
            admin,
            seen,
            via: Via::Token(token),
        })
    }

    /// The user an administrator mapped the certificate subject `subject` to.
    pub async fn authenticate_certificate(&self, subject: &str) -> Result<Caller, UserError> {
        let (found, seen) = self
            .replica
            .read_seen(Consistency::Linearizable, |s| {
                let user = s.trust.certificate_subjects.get(subject)?;
                s.users.get(user).map(|u| (u.name.clone(), u.admin))
            })
            .await?;
        let (name, admin) = found.ok_or_else(|| UserError::UnmappedSubject(subject.to_owned()))?;
        Ok(Caller {
            name,
            admin,
            seen,
            via: Via::Certificate,
        })
    }

    /// Makes an API token for the caller; its secret is in the answer only.
    pub async fn create_token(
        &self,
        caller: &Caller,
        request: CreateApiToken,
    ) -> Result<ApiTokenCreated, UserError> {
        validate_text("name", &request.name, MAX_TOKEN_NAME)
            .map_err(|e| InputError::named("name", e.to_string()))?;
        if request.name.trim().is_empty() {
            return Err(InputError::new("name", "must not be empty").into());
        }
        if request
            .expires_in_secs
            .is_some_and(|secs| !(1..=MAX_TOKEN_LIFETIME_SECS).contains(&secs))
        {
            return Err(InputError::new(
                "expires_in_secs",
                format!("must be 1 to {MAX_TOKEN_LIFETIME_SECS} (ten years)"),
            )
            .into());
        }
        let now = now_ms();
        // Expired ones (dashboard sessions, say) no longer count.
        let held = self
            .replica
            .read(caller.reads(), |s| {
                s.trust
                    .api_tokens
                    .values()
                    .filter(|t| t.owner == caller.name && t.expires_ms.is_none_or(|end| end > now))
                    .count()
            })
            .await?;
        if held >= MAX_TOKENS_PER_USER {
            return Err(UserError::TooManyTokens(MAX_TOKENS_PER_USER));
        }
        let secret = secret("stratus-api");
        let created_ms = now;
        let token = ApiToken {
            id: uuid(),
            owner: caller.name.clone(),
            name: request.name,
            created_ms,
            expires_ms: request
                .expires_in_secs
                .map(|secs| created_ms.saturating_add(secs.saturating_mul(1000))),
        };
        self.replica
            .propose(caller.by(Command::CreateApiToken {
                digest: secret_digest(&secret),
                token: token.clone(),
            }))
            .await??;
        Ok(ApiTokenCreated {
            view: view(&token),
            token: secret,
        })
    }

    /// The caller's tokens (every user's for an administrator).
    pub async fn list_tokens(&self, caller: &Caller) -> Result<Vec<ApiTokenView>, UserError> {
        let mut tokens: Vec<ApiTokenView> = self
            .replica
            .read(caller.reads(), |s| {
                s.trust
                    .api_tokens
                    .values()
                    .filter(|t| caller.admin || t.owner == caller.name)
                    .map(view)
                    .collect()
            })
            .await?;
        tokens.sort_by(|a, b| (&a.owner, &a.created, &a.id).cmp(&(&b.owner, &b.created, &b.id)));
        Ok(tokens)
    }

    /// Revokes a token the caller owns (any, for an administrator).
    pub async fn revoke_token(&self, caller: &Caller, id: &str) -> Result<(), UserError> {
        self.replica
            .propose(caller.by(Command::RevokeApiToken {
                id: id.to_owned(),
                caller: caller.name.clone(),
                admin: caller.admin,
            }))
            .await??;
        Ok(())
    }

    /// Lets `user` log in with certificates whose subject is `subject` (administrators); with
    /// `remove`, no longer.
    pub async fn map_subject(
        &self,
        caller: &Caller,
        user: &str,
        subject: &str,
        remove: bool,
    ) -> Result<(), UserError> {
        caller.require_admin("map certificate subjects to users")?;
        validate_text("subject", subject, 1024)
            .map_err(|e| InputError::named("subject", e.to_string()))?;
        if !subject.contains('=') {
            return Err(InputError::new(
                "subject",
                "an RFC 4514 name such as CN=Jane Doe,O=Example",
            )
            .into());
        }
        if remove {
            let mapped = self
                .replica
                .read(caller.reads(), |s| {
                    s.trust.certificate_subjects.get(subject).cloned()
                })
                .await?;
            if mapped.as_deref() != Some(user) {
                return Err(UserError::UnmappedSubject(subject.to_owned()));
            }
        }
        self.replica
            .propose(caller.by(Command::MapCertificateSubject {
                subject: subject.to_owned(),
                user: (!remove).then(|| user.to_owned()),
            }))
            .await??;
        Ok(())
    }
}
