//! Site networks: defining them (from the configuration at start, or by an administrator),
//! describing them with their leases, and choosing the network of a new instance. Address
//! leases themselves are decided inside apply (`state::ipam`).

use stratus_common::api::{CreateNetwork, Network};

use crate::failure::{impl_failure, AdminOnly, InputError};
use crate::replica::{Consistency, Replica, ReplicaError};
use crate::state::{network_view, Command, IpamError, NetworkRecord, Outcome, Rejection};
use crate::users::Caller;

/// The network an instance is attached to when its request names none (if the site has it).
pub const DEFAULT_NETWORK: &str = "public";

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    AdminOnly(#[from] AdminOnly),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error("network {0} not found")]
    NotFound(String),
    #[error("network {0} already exists")]
    Exists(String),
}

impl_failure!(NetworkError {
    delegate: [AdminOnly, Input, Rejected, Replica],
    own: [
        NetworkError::NotFound(_) => Kind::NotFound,
        NetworkError::Exists(_) => Kind::Conflict,
    ],
});

pub struct Networks {
    replica: Replica,
}

impl Networks {
    pub fn new(replica: Replica) -> Self {
        Self { replica }
    }

    /// The network a new instance goes on: the one asked for, which must exist, else `public`
    /// if the site defines it, else none.
    pub async fn for_instance(
        &self,
        caller: &Caller,
        asked: Option<&str>,
    ) -> Result<Option<String>, NetworkError> {
        let name = asked.unwrap_or(DEFAULT_NETWORK);
        let exists = self
            .replica
            .read(caller.reads(), |s| s.ipam.network(name).is_some())
            .await?;
        match (asked, exists) {
            (_, true) => Ok(Some(name.to_owned())),
            (Some(name), false) => {
                Err(InputError::new("network", format!("unknown network {name:?}")).into())
            }
            (None, false) => Ok(None),
        }
    }

    /// Defines a site network (admin).
    pub async fn create(
        &self,
        caller: &Caller,
        request: CreateNetwork,
    ) -> Result<Network, NetworkError> {
        caller.require_admin("define networks")?;
        let record = NetworkRecord::from_definition(&request)
            .map_err(|e| InputError::named("network", e.to_string()))?;
        let name = record.name.clone();
        match self
            .replica
            .propose(caller.by(Command::DefineNetwork(record)))
            .await??
        {
            Outcome::Applied => {
                tracing::info!(network = %name, by = %caller.name, "network defined");
                self.get(&name).await
            }
            _ => Err(NetworkError::Exists(name)),
        }
    }

    /// Defines the networks of the controller's configuration that the state does not have yet.
    /// One the state already has with another definition keeps the replicated definition
    /// (instances may hold its addresses); that is logged, not fatal.
    pub async fn define_configured(&self, networks: &[CreateNetwork]) -> Result<(), NetworkError> {
        for definition in networks {
            let record = NetworkRecord::from_definition(definition)
                .map_err(|e| InputError::new("networks", e))?;
            let name = record.name.clone();
            match self.replica.propose(Command::DefineNetwork(record)).await? {
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

    pub async fn list(&self) -> Result<Vec<Network>, NetworkError> {
        Ok(self
            .replica
            .read(Consistency::Linearizable, |s| {
                s.ipam.networks().map(|n| network_view(s, n)).collect()
            })
            .await?)
    }

    pub async fn get(&self, name: &str) -> Result<Network, NetworkError> {
        self.replica
            .read(Consistency::Linearizable, |s| {
                s.ipam.network(name).map(|n| network_view(s, n))
            })
            .await?
            .ok_or_else(|| NetworkError::NotFound(name.to_owned()))
    }
}
