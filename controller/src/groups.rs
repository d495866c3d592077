//! Server groups: a user's named sets of instances placed together (affinity) or apart
//! (anti-affinity), as Nova's server groups. Creating and deleting them here; the scheduler
//! and apply honour them when an instance is run with `group`.

use stratus_common::api::{CreateGroup, Group};
use stratus_common::names::validate_name;

use crate::decide::now_ms;
use crate::failure::{impl_failure, InputError};
use crate::replica::{Replica, ReplicaError};
use crate::state::{group_view, Command, Rejection};
use crate::users::Caller;

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error("server group {0} not found")]
    NotFound(String),
}

impl_failure!(GroupError {
    delegate: [Input, Rejected, Replica],
    own: [GroupError::NotFound(_) => Kind::NotFound],
});

pub struct Groups {
    replica: Replica,
}

impl Groups {
    pub fn new(replica: Replica) -> Self {
        Self { replica }
    }

    /// Makes a group of the caller's.
    pub async fn create(&self, caller: &Caller, request: CreateGroup) -> Result<Group, GroupError> {
        validate_name("name", &request.name)
            .map_err(|e| InputError::named("name", e.to_string()))?;
        let command = Command::CreateGroup {
            owner: caller.name.clone(),
            name: request.name.clone(),
            policy: request.policy,
            at_ms: now_ms(),
        };
        self.replica.propose(caller.by(command)).await??;
        self.get(caller, &request.name).await
    }

    /// The caller's groups (every user's, for an administrator).
    pub async fn list(&self, caller: &Caller) -> Result<Vec<Group>, GroupError> {
        Ok(self
            .replica
            .read(caller.reads(), |s| {
                s.groups
                    .iter()
                    .filter(|(owner, _)| caller.admin || **owner == caller.name)
                    .flat_map(|(_, groups)| groups.values())
                    .map(|g| group_view(s, g))
                    .collect()
            })
            .await?)
    }

    /// The caller's group `name`.
    pub async fn get(&self, caller: &Caller, name: &str) -> Result<Group, GroupError> {
        self.replica
            .read(caller.reads(), |s| {
                s.group(&caller.name, name).map(|g| group_view(s, g))
            })
            .await?
            .ok_or_else(|| GroupError::NotFound(name.to_owned()))
    }

    /// Deletes the caller's group `name`: refused while an instance in it is not Done.
    pub async fn delete(&self, caller: &Caller, name: &str) -> Result<(), GroupError> {
        let command = Command::DeleteGroup {
            owner: caller.name.clone(),
            name: name.to_owned(),
        };
        match self.replica.propose(caller.by(command)).await? {
            Ok(_) => Ok(()),
            Err(Rejection::UnknownGroup(_)) => Err(GroupError::NotFound(name.to_owned())),
            Err(rejection) => Err(rejection.into()),
        }
    }
}
