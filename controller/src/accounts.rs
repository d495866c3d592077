//! Administrators' changes to existing accounts: a new password, the administrator flag, and
//! removal (`PATCH` and `DELETE /api/v1/users/{name}`). Creating accounts and authenticating
//! them is `users.rs`'s; the rules of what may change are `state/users.rs`'s.

use serde::Deserialize;

use crate::failure::{impl_failure, AdminOnly, InputError};
use crate::replica::{Replica, ReplicaError};
use crate::state::{Command, Rejection};
use crate::users::passwords::PasswordPool;
use crate::users::{Caller, UserView};

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error(transparent)]
    AdminOnly(#[from] AdminOnly),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error("password hashing: {0}")]
    Hashing(#[from] crate::users::passwords::PoolError),
}

impl_failure!(AccountError {
    delegate: [AdminOnly, Input, Rejected, Replica],
    own: [AccountError::Hashing(_) => Kind::Unavailable],
});

/// `PATCH /api/v1/users/{name}`: what to change (at least one field).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// A new password, at least 8 characters (kept only as an argon2 hash).
    #[serde(default)]
    #[schema(min_length = 8)]
    pub password: Option<String>,
    /// Make the account an administrator (`true`) or not (`false`).
    #[serde(default)]
    pub admin: Option<bool>,
}

pub struct Accounts {
    replica: Replica,
    /// Hashes new passwords: the controller's one bounded password pool (see
    /// `users/passwords.rs`), shared with logins.
    passwords: std::sync::Arc<PasswordPool>,
}

impl Accounts {
    pub fn new(replica: Replica, passwords: std::sync::Arc<PasswordPool>) -> Self {
        Self { replica, passwords }
    }

    pub async fn update(
        &self,
        caller: &Caller,
        name: &str,
        update: UpdateUser,
    ) -> Result<UserView, AccountError> {
        caller.require_admin("change users")?;
        if update.password.is_none() && update.admin.is_none() {
            return Err(InputError::new("body", "name a password or admin to change").into());
        }
        let password_hash = match update.password {
            Some(password) if password.chars().count() < crate::users::MIN_PASSWORD_CHARS => {
                return Err(InputError::new("password", "must be at least 8 characters").into())
            }
            Some(password) => Some(self.passwords.hash(&password).await?),
            None => None,
        };
        self.replica
            .propose(caller.by(Command::UpdateUser {
                name: name.to_owned(),
                password_hash,
                admin: update.admin,
            }))
            .await??;
        tracing::info!(user = %name, by = %caller.name, admin = ?update.admin, "user changed");
        let admin = self
            .replica
            .read(caller.reads(), |s| s.users.get(name).map(|u| u.admin))
            .await?
            .ok_or_else(|| Rejection::UnknownUser(name.to_owned()))?;
        Ok(UserView {
            name: name.to_owned(),
            admin,
        })
    }

    pub async fn delete(&self, caller: &Caller, name: &str) -> Result<(), AccountError> {
        caller.require_admin("remove users")?;
        if name == caller.name {
            return Err(InputError::new("name", "you cannot remove your own account").into());
        }
        self.replica
            .propose(caller.by(Command::DeleteUser {
                name: name.to_owned(),
            }))
            .await??;
        tracing::info!(user = %name, by = %caller.name, "user removed");
        Ok(())
    }
}
