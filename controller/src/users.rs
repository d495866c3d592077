//! Users and authentication: accounts (passwords kept only as argon2 hashes), HTTP Basic
//! checks with a per-user cache of the last verified password, and the first administrator
//! of a new cluster.

use std::collections::HashMap;
use std::sync::Mutex;

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use sha2::{Digest, Sha256};
use stratus_common::names::validate_name;

use crate::decide;
use crate::failure::{impl_failure, AdminOnly, InputError};
use crate::replica::{Consistency, Replica, ReplicaError};
use crate::state::{Command, MemberRecord, Rejection, UserRecord};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub admin: bool,
    /// The applied index this node's state was at when the caller was authenticated.
    pub seen: u64,
}

impl Caller {
    /// How fresh the reads made for this caller's request are: at least what its
    /// authentication saw, which was linearizable (ReadIndex) unless the cluster could not
    /// answer. So one ReadIndex round serves a whole request, however many reads it makes.
    pub fn reads(&self) -> Consistency {
        Consistency::AtLeast(self.seen)
    }

    /// Fails unless the caller administers the cloud; `action` completes "only an
    /// administrator may ...".
    pub fn require_admin(&self, action: &'static str) -> Result<(), AdminOnly> {
        if self.admin {
            Ok(())
        } else {
            Err(AdminOnly(action))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("authentication required")]
    Unauthenticated,
    #[error(transparent)]
    AdminOnly(#[from] AdminOnly),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error("password hashing failed")]
    Hashing,
}

impl_failure!(UserError {
    delegate: [AdminOnly, Input, Rejected, Replica],
    own: [
        UserError::Unauthenticated => Kind::Unauthenticated,
        UserError::Hashing => Kind::Unavailable,
    ],
});

/// A user as the API shows it (never with the password hash).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserView {
    pub name: String,
    pub admin: bool,
}

pub struct Users {
    replica: Replica,
    /// Passwords already verified against a user's current hash, as SHA-256 digests, so only the
    /// first request of a session pays for argon2.
    verified: Mutex<HashMap<String, (String, [u8; 32])>>,
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

/// argon2 is deliberately slow: keep it off the async workers.
async fn hash_off_thread(password: &str) -> Result<String, UserError> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|_| UserError::Hashing)
}

impl Users {
    pub fn new(replica: Replica) -> Self {
        Self {
            replica,
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// Creates the cluster's ID, first admin and instance types on the very first start;
    /// false when the cluster already existed.
    pub async fn bootstrap_if_needed(
        &self,
        admin_user: &str,
        admin_password: &str,
        cpu_allocation_ratio: f64,
        cluster_id: Option<String>,
        first_member: Option<MemberRecord>,
    ) -> Result<bool, UserError> {
        if self
            .replica
            .read(Consistency::Linearizable, |s| s.is_bootstrapped())
            .await?
        {
            return Ok(false);
        }
        let command = Command::Bootstrap {
            cluster_id: cluster_id.unwrap_or_else(decide::uuid),
            admin: UserRecord {
                name: admin_user.to_owned(),
                password_hash: hash_off_thread(admin_password).await?,
                admin: true,
                created_ms: decide::now_ms(),
            },
            types: crate::state::standard_types(),
            cpu_allocation_ratio_percent: (cpu_allocation_ratio * 100.0).round() as u32,
            first_member,
        };
        match self.replica.propose(command).await? {
            Ok(_) | Err(Rejection::AlreadyBootstrapped) => Ok(true),
            Err(r) => Err(r.into()),
        }
    }

    /// Checks a username and password (HTTP Basic) against the users as the cluster has them
    /// now (a linearizable read).
    pub async fn authenticate(&self, user: &str, password: &str) -> Result<Caller, UserError> {
        self.authenticate_with(Consistency::Linearizable, user, password)
            .await
    }

    /// As [`Users::authenticate`], but when the cluster cannot answer (no leader, no quorum)
    /// against this node's own copy of the users, which may lag behind: for the views that
    /// must answer when this node is cut off.
    pub async fn authenticate_even_alone(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Caller, UserError> {
        match self.authenticate(user, password).await {
            Err(UserError::Replica(_)) => {
                self.authenticate_with(Consistency::Stale, user, password)
                    .await
            }
            other => other,
        }
    }

    async fn authenticate_with(
        &self,
        consistency: Consistency,
        user: &str,
        password: &str,
    ) -> Result<Caller, UserError> {
        let (record, seen) = self
            .replica
            .read_seen(consistency, |s| s.users.get(user).cloned())
            .await?;
        let record = record.ok_or(UserError::Unauthenticated)?;
        let presented = digest(password);
        {
            let cache = self.verified.lock().expect("cache lock");
            if let Some((hash, known)) = cache.get(user) {
                if *hash == record.password_hash && *known == presented {
                    return Ok(Caller {
                        name: record.name,
                        admin: record.admin,
                        seen,
                    });
                }
            }
        }
        let (hash, password) = (record.password_hash.clone(), password.to_owned());
        let verified = tokio::task::spawn_blocking(move || {
            let parsed = PasswordHash::new(&hash).map_err(|_| UserError::Unauthenticated)?;
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .map_err(|_| UserError::Unauthenticated)
        })
        .await
        .map_err(|_| UserError::Hashing)?;
        verified?;
        self.verified
            .lock()
            .expect("cache lock")
            .insert(user.to_owned(), (record.password_hash.clone(), presented));
        Ok(Caller {
            name: record.name,
            admin: record.admin,
            seen,
        })
    }

    pub async fn create_user(
        &self,
        caller: &Caller,
        name: &str,
        password: &str,
        admin: bool,
    ) -> Result<UserView, UserError> {
        caller.require_admin("create users")?;
        validate_name("name", name).map_err(|e| InputError::named("name", e.to_string()))?;
        if password.len() < 8 {
            return Err(InputError::new("password", "must be at least 8 characters").into());
        }
        let record = UserRecord {
            name: name.to_owned(),
            password_hash: hash_off_thread(password).await?,
            admin,
            created_ms: decide::now_ms(),
        };
        self.replica.propose(Command::CreateUser(record)).await??;
        Ok(UserView {
            name: name.to_owned(),
            admin,
        })
    }

    pub async fn list_users(&self, caller: &Caller) -> Result<Vec<UserView>, UserError> {
        caller.require_admin("list users")?;
        Ok(self
            .replica
            .read(caller.reads(), |s| {
                s.users
                    .values()
                    .map(|u| UserView {
                        name: u.name.clone(),
                        admin: u.admin,
                    })
                    .collect()
            })
            .await?)
    }
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
}
