//! Instance actions: run, describe, stop, start, reboot, kill. Running one checks the request, resolves its image
//! (site policy included), its network and disks, places it (next to its first disk if that
//! host has room, else where the scheduler says) and proposes it; apply settles races for the
//! last room on a host, and a refused placement is tried again against the new state.

use std::sync::Arc;

use prometheus_client::metrics::histogram::Histogram;
use stratus_common::api::{CreateInstance, Instance, InstanceType};
use stratus_common::names::validate_name;

use crate::decide::now_ms;
use crate::failure::{impl_failure, InputError};
use crate::guest::{validate_ssh_key, validate_user_data};
use crate::hosts::{validate_labels, Hosts};
use crate::images::{ImageError, Images};
use crate::networks::{NetworkError, Networks};
use crate::observed::Observed;
use crate::replica::{Consistency, Replica, ReplicaError};
use crate::scheduler;
use crate::state::{instance_view, Command, InstanceRules, Outcome, PowerAction, Rejection};
use crate::users::Caller;
use crate::volumes::Volumes;

/// The default instance type when a request names none.
pub const DEFAULT_TYPE: &str = "m1.small";

/// How often a placement that lost a race for the last room on a host is tried again.
const PLACEMENT_TRIES: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error("instance {0} not found")]
    NotFound(u64),
    #[error("placement kept racing with other requests; retry")]
    PlacementRace,
    #[error("instance {0} vanished right after it was created")]
    Vanished(u64),
    #[error("creating an instance had an unexpected outcome {0:?}")]
    Unexpected(Outcome),
}

impl_failure!(InstanceError {
    delegate: [Input, Rejected, Replica, Image, Network],
    own: [
        InstanceError::NotFound(_) => Kind::NotFound,
        InstanceError::PlacementRace => Kind::Conflict,
        InstanceError::Vanished(_) | InstanceError::Unexpected(_) => Kind::Unavailable,
    ],
});

pub struct Instances {
    replica: Replica,
    images: Arc<Images>,
    networks: Arc<Networks>,
    volumes: Arc<Volumes>,
    hosts: Arc<Hosts>,
    /// Where the guests' CPU use comes from.
    observed: Option<Arc<Observed>>,
    /// How long choosing a host took.
    placement_seconds: Histogram,
}

impl Instances {
    pub fn new(
        replica: Replica,
        images: Arc<Images>,
        networks: Arc<Networks>,
        volumes: Arc<Volumes>,
        hosts: Arc<Hosts>,
    ) -> Self {
        Self {
            replica,
            images,
            networks,
            volumes,
            hosts,
            observed: None,
            placement_seconds: crate::metrics::latency_histogram(),
        }
    }

    /// How long choosing a host for each new instance took, in seconds.
    pub fn placement_seconds(&self) -> Histogram {
        self.placement_seconds.clone()
    }

    /// Instances are shown with their guests' CPU use as their hosts push it.
    pub fn with_observed(mut self, observed: Arc<Observed>) -> Self {
        self.observed = Some(observed);
        self
    }

    /// The view with what the hosts measured of the guest, while it runs.
    fn with_usage(&self, mut instance: Instance) -> Instance {
        if instance.state == stratus_common::api::InstanceState::Running {
            instance.cpu_percent = self
                .observed
                .as_ref()
                .and_then(|o| o.cpu_percent(instance.id));
        }
        instance
    }

    /// Creates an instance. With an idempotency key (the `Idempotency-Key` header), a creation
    /// the same owner already made with that key (within a day) is answered again instead of
    /// made twice: a client that timed out, or whose controller node failed, retries safely.
    pub async fn create(
        &self,
        caller: &Caller,
        request: CreateInstance,
        idempotency_key: Option<String>,
    ) -> Result<Instance, InstanceError> {
        if let Some(key) = &idempotency_key {
            check_idempotency_key(key)?;
            let made = self
                .replica
                .read(caller.reads(), |s| s.instance_for_key(&caller.name, key))
                .await?;
            if let Some(id) = made {
                tracing::info!(instance = id, owner = %caller.name, "creation repeated with its idempotency key: answered again");
                return self.get(caller, id).await;
            }
        }
        if let Some(name) = &request.name {
            validate_name("name", name).map_err(|e| InputError::named("name", e.to_string()))?;
        }
        let ssh_key = request
            .ssh_key
            .as_deref()
            .map(validate_ssh_key)
            .transpose()
            .map_err(|e| InputError::named("ssh_key", e.to_string()))?;
        if let Some(data) = &request.user_data {
            validate_user_data(data).map_err(|e| InputError::named("user_data", e.to_string()))?;
        }
        let network = self
            .networks
            .for_instance(caller, request.network.as_deref())
            .await?;
        let volumes = self.volumes.launch_volumes(&request.persistent_disks)?;
        let type_name = request
            .instance_type
            .clone()
            .unwrap_or_else(|| DEFAULT_TYPE.to_owned());
        let rules = InstanceRules {
            group: request.group.clone(),
            labels: validate_labels("labels", &request.labels)?,
            evacuate: request.evacuate || self.hosts.site_evacuates(),
            restart: request.restart,
        };
        if let Some(group) = &rules.group {
            let known = self
                .replica
                .read(caller.reads(), |s| s.group(&caller.name, group).is_some())
                .await?;
            if !known {
                return Err(InputError::new(
                    "group",
                    format!("you have no server group {group:?} (POST /api/v1/groups makes one)"),
                )
                .into());
            }
        }
        let image_spec = self.images.resolve(caller.reads(), &request.image).await?;
        let strategy = self.hosts.strategy();
        for _ in 0..PLACEMENT_TRIES {
            let holding = self.hosts.holding(&image_spec.disk.sha256);
            let first_disk = volumes.first().map(|(id, _)| id.as_str());
            let placing = std::time::Instant::now();
            let placement = self
                .replica
                .read(caller.reads(), |s| {
                    let size = s.types.get(&type_name).cloned().ok_or_else(|| {
                        InputError::new("type", format!("unknown instance type {type_name:?}"))
                    })?;
                    // Next to its first disk if that host can take it (no network hop for the
                    // data).
                    // A group deleted since it was checked: apply refuses the creation.
                    let group = s.group_placement(&caller.name, &rules, None).ok().flatten();
                    let request = scheduler::Request {
                        demand: scheduler::Demand {
                            vcpus: size.vcpus,
                            memory_mib: size.memory_mib,
                            disk_gib: size.disk_gib,
                            labels: &rules.labels,
                            group,
                        },
                        holding: &holding,
                        preferred: first_disk
                            .and_then(|id| s.volumes.get(id))
                            .map(|v| v.host.as_str()),
                        strategy,
                    };
                    Ok::<_, InputError>(scheduler::place(s, &request))
                })
                .await??;
            self.placement_seconds
                .observe(placing.elapsed().as_secs_f64());
            let (host, failure) = match placement {
                Ok(host) => (Some(host), None),
                Err(none) => (None, Some(none.to_string())),
            };
            let create = Command::CreateInstance {
                owner: caller.name.clone(),
                name: request.name.clone(),
                image: request.image.clone(),
                image_spec: image_spec.clone(),
                instance_type: type_name.clone(),
                host,
                failure,
                at_ms: now_ms(),
                network: network.clone(),
                ssh_key: ssh_key.clone(),
                user_data: request.user_data.clone(),
                volumes: volumes.clone(),
                idempotency_key: idempotency_key.clone(),
            };
            let command = match rules.is_empty() {
                true => create,
                false => Command::CreateInstanceWith {
                    rules: rules.clone(),
                    create: Box::new(create),
                },
            };
            match self.replica.propose(caller.by(command)).await? {
                Ok(Outcome::InstanceCreated(id)) => {
                    tracing::info!(instance = id, owner = %caller.name, "instance created");
                    return self
                        .get(caller, id)
                        .await
                        .map_err(|_| InstanceError::Vanished(id));
                }
                Ok(other) => return Err(InstanceError::Unexpected(other)),
                // The state changed between the choice and its apply: choose again.
                Err(Rejection::NoRoom { .. } | Rejection::HostUnschedulable { .. }) => continue,
                Err(r) => return Err(r.into()),
            }
        }
        Err(InstanceError::PlacementRace)
    }

    pub async fn list(&self, caller: &Caller) -> Result<Vec<Instance>, InstanceError> {
        Ok(self.list_page(caller, 0, usize::MAX).await?.0)
    }

    /// The caller's instances (every one, for an administrator) with an ID above `after`, in
    /// ID order, at most `limit`; and the ID to continue after when more follow.
    pub async fn list_page(
        &self,
        caller: &Caller,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<Instance>, Option<u64>), InstanceError> {
        let (instances, more) = self
            .replica
            .read(caller.reads(), |s| {
                let mut visible = s
                    .instances
                    .range(after.saturating_add(1)..)
                    .map(|(_, i)| i)
                    .filter(|i| caller.admin || i.owner == caller.name);
                let page: Vec<Instance> = visible
                    .by_ref()
                    .take(limit)
                    .map(|i| instance_view(s, i))
                    .collect();
                let more = visible.next().is_some();
                (page, more)
            })
            .await?;
        let next = more.then(|| instances.last().map(|i| i.id)).flatten();
        Ok((
            instances.into_iter().map(|i| self.with_usage(i)).collect(),
            next,
        ))
    }

    /// One instance; another user's instance is "not found", as if it did not exist.
    pub async fn get(&self, caller: &Caller, id: u64) -> Result<Instance, InstanceError> {
        self.replica
            .read(caller.reads(), |s| {
                s.instances
                    .get(&id)
                    .filter(|i| caller.admin || i.owner == caller.name)
                    .map(|i| instance_view(s, i))
            })
            .await?
            .map(|i| self.with_usage(i))
            .ok_or(InstanceError::NotFound(id))
    }

    pub async fn kill(&self, caller: &Caller, id: u64) -> Result<Instance, InstanceError> {
        self.get(caller, id).await?;
        self.replica
            .propose(caller.by(Command::KillInstance {
                id,
                at_ms: now_ms(),
            }))
            .await??;
        tracing::info!(instance = id, by = %caller.name, "instance kill asked");
        self.get(caller, id).await
    }

    /// Stops, starts or reboots an instance of the caller's (any, for an administrator).
    pub async fn power(
        &self,
        caller: &Caller,
        id: u64,
        action: PowerAction,
    ) -> Result<Instance, InstanceError> {
        self.get(caller, id).await?;
        self.replica
            .propose(caller.by(Command::PowerInstance {
                id,
                action,
                at_ms: now_ms(),
            }))
            .await??;
        tracing::info!(instance = id, by = %caller.name, %action, "instance power change asked");
        self.get(caller, id).await
    }

    pub async fn types(&self) -> Result<Vec<InstanceType>, InstanceError> {
        Ok(self
            .replica
            .read(Consistency::Linearizable, |s| {
                s.types.values().cloned().collect()
            })
            .await?)
    }
}

/// The `Idempotency-Key` header: 1 to 255 visible ASCII characters (a UUID is typical).
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// Refuses an idempotency key that is not 1 to 255 visible ASCII characters.
pub(crate) fn check_idempotency_key(key: &str) -> Result<(), InputError> {
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(InputError::new(
            IDEMPOTENCY_HEADER,
            "must be 1 to 255 visible ASCII characters, such as a UUID",
        ));
    }
    Ok(())
}
