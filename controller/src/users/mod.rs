//! Users and authentication: accounts (passwords kept only as argon2 hashes), HTTP Basic
//! checks with a per-user cache of the last verified password, run on a bounded pool
//! ([`passwords`]) behind limits on failures per account and per source ([`throttle`]), and
//! the first administrator of a new cluster.

pub mod passwords;
pub mod throttle;
pub mod tokens;

/// The shortest password an account may have, in characters (not bytes).
pub const MIN_PASSWORD_CHARS: usize = 8;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sha2::{Digest, Sha256};
use stratus_common::names::validate_name;

use crate::decide;
use crate::failure::{impl_failure, AdminOnly, InputError};
use crate::replica::{Consistency, Replica, ReplicaError};
use crate::state::{Command, MemberRecord, Rejection, UserRecord};
use passwords::{PasswordPool, PoolError};
use throttle::{FailureLimits, Throttle, Throttled};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub admin: bool,
    /// The applied index this node's state was at when the caller was authenticated.
    pub seen: u64,
    /// How the caller proved who it is.
    pub via: Via,
}

/// How a caller logged in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Via {
    #[default]
    Password,
    /// An API token, by the name its owner gave it.
    Token(String),
    Certificate,
}

impl Caller {
    /// Who the audit log says made a change: the user, and the token or certificate when
    /// the change was made with one.
    pub fn actor(&self) -> String {
        match &self.via {
            Via::Password => self.name.clone(),
            Via::Token(name) => format!("{} (token {name})", self.name),
            Via::Certificate => format!("{} (certificate)", self.name),
        }
    }

    /// `command`, as asked for by this caller now (recorded in the audit log of what it
    /// changes).
    pub fn by(&self, command: Command) -> Command {
        Command::By {
            actor: self.actor(),
            at_ms: decide::now_ms(),
            command: Box::new(command),
        }
    }

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
    #[error("the API token is not valid: unknown, revoked or expired")]
    BadToken,
    #[error(
        "no user logs in with the certificate subject {0:?} (an administrator maps it: POST \
         /api/v1/users/{{name}}/certificate-subjects)"
    )]
    UnmappedSubject(String),
    #[error("a user may hold at most {0} API tokens; revoke one first")]
    TooManyTokens(usize),
    #[error(transparent)]
    AdminOnly(#[from] AdminOnly),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error(transparent)]
    Throttled(#[from] Throttled),
    #[error(transparent)]
    Passwords(#[from] PoolError),
}

impl_failure!(UserError {
    delegate: [AdminOnly, Input, Rejected, Replica, Throttled, Passwords],
    own: [
        UserError::Unauthenticated | UserError::BadToken => Kind::Unauthenticated,
        UserError::UnmappedSubject(_) => Kind::Unauthenticated,
        UserError::TooManyTokens(_) => Kind::Conflict,
    ],
    codes: [
        UserError::BadToken => "token_invalid",
        UserError::UnmappedSubject(_) => "certificate_unmapped",
    ],
});

/// A user as the API shows it (never with the password hash).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub name: String,
    pub admin: bool,
}

pub struct Users {
    replica: Replica,
    /// Passwords already verified against a user's current hash, as SHA-256 digests, so only the
    /// first request of a session pays for argon2.
    verified: Mutex<HashMap<String, (String, [u8; 32])>>,
    /// Password checks under way, by user and presented digest: requests arriving together
    /// with the same credentials take turns, so only the first runs argon2 (and spends the
    /// failure budget) and the others find it verified.
    checking: Checks,
    passwords: Arc<PasswordPool>,
    throttle: Throttle,
}

/// Password checks under way: a turn to take per user and presented digest.
type Checks = Mutex<HashMap<(String, [u8; 32]), Arc<tokio::sync::Mutex<()>>>>;

/// A turn at checking one user's presented password; the last one out removes the entry.
struct CheckTurn<'a> {
    checking: &'a Checks,
    key: (String, [u8; 32]),
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for CheckTurn<'_> {
    fn drop(&mut self) {
        let mut checking = self.checking.lock().expect("checking lock");
        // The map's reference and this one: nobody else waits.
        if Arc::strong_count(&self.gate) == 2 {
            checking.remove(&self.key);
        }
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

impl Users {
    /// The pool passwords are hashed and checked on, for whoever else hashes passwords.
    pub fn password_pool(&self) -> Arc<PasswordPool> {
        self.passwords.clone()
    }

    pub fn new(replica: Replica, limits: FailureLimits) -> Self {
        Self {
            replica,
            verified: Mutex::new(HashMap::new()),
            checking: Mutex::new(HashMap::new()),
            passwords: PasswordPool::for_this_host(),
            throttle: Throttle::new(limits),
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
                password_hash: self.passwords.hash(admin_password).await?,
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

    /// Checks a username and password (HTTP Basic) from `source` against the users as the
    /// cluster has them now (a linearizable read).
    pub async fn authenticate(
        &self,
        user: &str,
        password: &str,
        source: Option<IpAddr>,
    ) -> Result<Caller, UserError> {
        self.authenticate_with(Consistency::Linearizable, user, password, source)
            .await
    }

    /// As [`Users::authenticate`], but when the cluster cannot answer (no leader, no quorum)
    /// against this node's own copy of the users, which may lag behind: for the views that
    /// must answer when this node is cut off.
    pub async fn authenticate_even_alone(
        &self,
        user: &str,
        password: &str,
        source: Option<IpAddr>,
    ) -> Result<Caller, UserError> {
        match self.authenticate(user, password, source).await {
            Err(UserError::Replica(_)) => {
                self.authenticate_with(Consistency::Stale, user, password, source)
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
        source: Option<IpAddr>,
    ) -> Result<Caller, UserError> {
        let (record, seen) = self
            .replica
            .read_seen(consistency, |s| s.users.get(user).cloned())
            .await?;
        let presented = digest(password);
        let verified = || -> Option<Caller> {
            let record = record.as_ref()?;
            let cache = self.verified.lock().expect("cache lock");
            let (hash, known) = cache.get(user)?;
            (*hash == record.password_hash && *known == presented).then(|| Caller {
                name: record.name.clone(),
                admin: record.admin,
                seen,
                via: Via::Password,
            })
        };
        if let Some(caller) = verified() {
            return Ok(caller);
        }
        // Wait for a check of the same credentials under way: it may have verified them.
        let key = (user.to_owned(), presented);
        let gate = self
            .checking
            .lock()
            .expect("checking lock")
            .entry(key.clone())
            .or_default()
            .clone();
        let turn = CheckTurn {
            checking: &self.checking,
            key,
            gate,
        };
        let _held = turn.gate.lock().await;
        if let Some(caller) = verified() {
            return Ok(caller);
        }
        // An argon2 run is needed: it counts against the failure limits until it succeeds, and
        // an unknown user costs the same run as a wrong password.
        let attempt = self.throttle.attempt(user, source, Instant::now())?;
        let hash = record.as_ref().map(|r| r.password_hash.clone());
        if !self.passwords.verify(hash, password).await? {
            tracing::info!(user, source = ?source, "failed login");
            return Err(UserError::Unauthenticated);
        }
        self.throttle.succeeded(attempt, Instant::now());
        let record = record.expect("only a known user's password verifies");
        self.verified
            .lock()
            .expect("cache lock")
            .insert(user.to_owned(), (record.password_hash.clone(), presented));
        Ok(Caller {
            name: record.name,
            admin: record.admin,
            seen,
            via: Via::Password,
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
        if password.chars().count() < MIN_PASSWORD_CHARS {
            return Err(InputError::new("password", "must be at least 8 characters").into());
        }
        let record = UserRecord {
            name: name.to_owned(),
            password_hash: self.passwords.hash(password).await?,
            admin,
            created_ms: decide::now_ms(),
        };
        self.replica
            .propose(caller.by(Command::CreateUser(record)))
            .await??;
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
    use std::net::{IpAddr, Ipv4Addr};

    use futures_util::future::join_all;

    use super::UserError;

    const SOURCE: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));

    #[tokio::test]
    async fn requests_arriving_together_with_the_right_password_share_one_check() {
        let dir = tempfile::tempdir().unwrap();
        let cloud = crate::services::tests::cloud(dir.path(), &[]).await;
        // More than the account's failure budget (10), all before any is verified.
        let answers =
            join_all((0..32).map(|_| cloud.users.authenticate("admin", "password1", SOURCE))).await;
        for answer in &answers {
            let caller = answer
                .as_ref()
                .expect("the right password is never throttled");
            assert_eq!(caller.name, "admin");
        }
        assert!(
            cloud.users.checking.lock().unwrap().is_empty(),
            "nothing left waiting"
        );
        // Wrong passwords arriving together still spend the budget, one check each.
        let answers =
            join_all((0..12).map(|_| cloud.users.authenticate("admin", "wrong-password", SOURCE)))
                .await;
        let throttled = answers
            .iter()
            .filter(|a| matches!(a, Err(UserError::Throttled(_))))
            .count();
        let refused = answers
            .iter()
            .filter(|a| matches!(a, Err(UserError::Unauthenticated)))
            .count();
        assert_eq!((refused, throttled), (10, 2), "{answers:?}");
    }
}
