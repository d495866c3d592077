//! Hosts and the agent protocol: agents enrol and prove who they are with a host certificate
//! ([`enrolment`]), register their host, long-poll for its desired state (woken only when it
//! changed, see [`wakeups`]) and report what runs, each only for its own host. This module also
//! owns host liveness ([`liveness`]), what administrators see of hosts, and the images pinned
//! in their caches.

pub mod enrolment;
pub mod fencing;
pub mod liveness;
mod replacement;
pub mod wakeups;

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use stratus_common::agent::{
    HostDesired, HostReport, RefusedReport, RegisterHost, Registered, ReportAnswer,
};
use stratus_common::api::{Host, HostRole, UpdateHost};
use stratus_common::names::validate_name;

use crate::decide::now_ms;
use crate::failure::{impl_failure, AdminOnly, InputError};
use crate::images::{ImageError, Images};
use crate::replica::{Consistency, Replica, ReplicaError};
use crate::scheduler::{SitePlacement, Strategy};
use crate::state::{host_view, Command, Event, HostRecord, Maintenance, Rejection, State};
use crate::users::Caller;
use enrolment::HostIdentity;
use liveness::{Judgment, Liveness};
use wakeups::Wakeups;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(
        "a host must present its certificate over TLS (an agent gets one by enrolling with a \
         join token an administrator made: POST /api/v1/hosts/{{name}}/join-tokens)"
    )]
    NoCertificate,
    #[error("the certificate presented is not a host certificate of this site")]
    NotAHostCertificate,
    #[error(
        "host {host}'s certificate {serial} is not in force (revoked or expired): enrol again \
         with a new join token"
    )]
    Revoked { host: String, serial: String },
    #[error("host {holder}'s certificate cannot act for host {host}")]
    OtherHost { holder: String, host: String },
    #[error("this controller holds no CA key to sign host certificates with")]
    NoSigner,
    #[error(transparent)]
    AdminOnly(#[from] AdminOnly),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("host {0} is not registered")]
    NotRegistered(String),
    #[error("host {0} not found")]
    NotFound(String),
}

impl_failure!(HostError {
    delegate: [AdminOnly, Input, Rejected, Replica, Image],
    own: [
        HostError::NoCertificate | HostError::Revoked { .. } => Kind::Unauthenticated,
        HostError::NotAHostCertificate | HostError::OtherHost { .. } => Kind::Forbidden,
        HostError::NoSigner => Kind::Unavailable,
        HostError::NotRegistered(_) | HostError::NotFound(_) => Kind::NotFound,
    ],
    codes: [
        HostError::NoCertificate => "host_certificate_required",
        HostError::Revoked { .. } => "certificate_revoked",
        HostError::OtherHost { .. } => "other_host",
    ],
});

pub struct Hosts {
    replica: Replica,
    images: Arc<Images>,
    signer: enrolment::Signer,
    liveness: Arc<Liveness>,
    wakeups: Arc<Wakeups>,
    /// The site's placement settings.
    site: SitePlacement,
    /// A host's lease, when hosts are fenced by lease.
    lease: Option<Duration>,
}

impl Hosts {
    /// Starts following the replica (per-host wake-ups, leadership for liveness grace) and, while
    /// this node leads, judging hosts up or down, on the current tokio runtime.
    pub fn start(
        replica: Replica,
        images: Arc<Images>,
        signer: enrolment::Signer,
        host_timeout: Duration,
        lease: Option<Duration>,
        site: SitePlacement,
    ) -> Self {
        let liveness = Arc::new(Liveness::new(host_timeout));
        let mut applied = replica.subscribe();
        let (id, weak) = (replica.status().node_id, Arc::downgrade(&liveness));
        tokio::spawn(async move {
            while let Ok(round) = applied.recv().await {
                let Some(liveness) = weak.upgrade() else {
                    return;
                };
                let elected = round.events.iter().any(
                    |(_, e)| matches!(e, Event::LeaderChanged { leader: Some(l), .. } if *l == id),
                );
                if elected {
                    liveness.restart_grace();
                }
            }
        });
        tokio::spawn(judge_hosts(
            replica.clone(),
            Arc::downgrade(&liveness),
            (host_timeout / 5).clamp(Duration::from_millis(500), Duration::from_secs(10)),
            site,
            lease,
        ));
        Self {
            wakeups: Wakeups::start(replica.clone()),
            replica,
            images,
            signer,
            liveness,
            site,
            lease,
        }
    }

    /// How placement orders the hosts that fit (the site's setting).
    pub fn strategy(&self) -> Strategy {
        self.site.strategy
    }

    /// Whether every instance created now may be evacuated (the site's setting).
    pub fn site_evacuates(&self) -> bool {
        self.site.evacuate
    }

    /// Hosts whose image cache holds the artifact with this SHA-256.
    pub fn holding(&self, sha256: &str) -> HashSet<String> {
        self.liveness.holding(sha256)
    }

    /// Registers the host `identity` names (a host registers only itself).
    pub async fn register(
        &self,
        identity: &HostIdentity,
        request: RegisterHost,
    ) -> Result<Registered, HostError> {
        validate_name("name", &request.name)
            .map_err(|e| InputError::named("name", e.to_string()))?;
        identity.require(&request.name)?;
        if request.vcpus == 0 || request.memory_mib == 0 {
            return Err(InputError::new("vcpus", "vcpus and memory_mib must be positive").into());
        }
        let record = HostRecord {
            name: request.name.clone(),
            vcpus: request.vcpus,
            memory_mib: request.memory_mib,
            disk_gib: request.disk_gib,
            domain_type: request.domain_type,
            arch: request.arch,
            hypervisor: request.hypervisor,
            registered_ms: now_ms(),
            volume_pool_gib: request.volume_pool_gib,
        };
        self.replica
            .propose(identity.by(Command::RegisterHost(record)))
            .await??;
        self.liveness.touch(&request.name, None, None);
        tracing::info!(host = %request.name, "host registered");
        Ok(Registered {
            cluster_id: self
                .replica
                .read(Consistency::Stale, |s| s.cluster_id.clone())
                .await?,
        })
    }

    async fn require_registered(&self, host: &str) -> Result<(), HostError> {
        if self
            .replica
            .read(Consistency::Linearizable, |s| s.hosts.contains_key(host))
            .await?
        {
            Ok(())
        } else {
            Err(HostError::NotRegistered(host.to_owned()))
        }
    }

    /// The host's desired state, once its version is above `since` or `wait` has passed.
    pub async fn desired(
        &self,
        identity: &HostIdentity,
        host: &str,
        since: u64,
        wait: Duration,
    ) -> Result<HostDesired, HostError> {
        identity.require(host)?;
        self.require_registered(host).await?;
        let poll = self.liveness.poll(host);
        if since > 0 && self.lease.is_some() {
            self.liveness.leased(host, since);
        }
        self.back_in_touch(host).await?;
        let mut version = self.wakeups.watch(host);
        let _ = tokio::time::timeout(wait, version.wait_for(|&v| v > since)).await;
        drop(poll);
        let version = *version.borrow();
        Ok(self
            .replica
            .read(Consistency::Linearizable, |s| {
                let mut desired = desired_of(s, host, version);
                desired.lease_secs = self.lease.map(|l| l.as_secs());
                desired
            })
            .await?)
    }

    /// The host's agent gives up its lease (it stops on purpose): this node, which leads, will
    /// not fence the host by lease until the agent shows it holds the lease again.
    pub async fn release_lease(
        &self,
        identity: &HostIdentity,
        host: &str,
        since: u64,
    ) -> Result<(), HostError> {
        identity.require(host)?;
        self.require_registered(host).await?;
        self.liveness.unleased(host, since);
        tracing::info!(host, "the host's agent gave up its lease (stopping)");
        Ok(())
    }

    /// Records what a host reports, all of it in one proposal; answers the instance reports
    /// refused because the instance is not (or no longer) placed on this host. Any other
    /// refusal fails the call (after the report's other items applied).
    pub async fn report(
        &self,
        identity: &HostIdentity,
        host: &str,
        report: HostReport,
    ) -> Result<ReportAnswer, HostError> {
        let mut answer = ReportAnswer::default();
        identity.require(host)?;
        self.require_registered(host).await?;
        self.liveness
            .touch(host, Some(report.unknown_domains), report.images);
        self.back_in_touch(host).await?;
        let HostReport {
            instances,
            volumes,
            exports,
            disks,
            ..
        } = report;
        if instances.is_empty() && volumes.is_empty() && exports.is_empty() && disks.is_empty() {
            return Ok(answer);
        }
        // The whole report is one entry, applied item by item (`state/host_report.rs`): a
        // refused item does not keep the others from applying.
        let ids: Vec<u64> = instances.iter().map(|item| item.id).collect();
        let command = Command::HostReport {
            host: host.to_owned(),
            instances,
            volumes,
            exports,
            disks,
            at_ms: now_ms(),
        };
        let outcomes = match self.replica.propose(identity.by(command)).await?? {
            crate::state::Outcome::HostReported(outcomes) => outcomes,
            _ => crate::state::ReportOutcomes::default(),
        };
        let mut failure = None;
        for (id, outcome) in ids.into_iter().zip(outcomes.instances) {
            match outcome {
                Ok(_) => {}
                Err(r @ (Rejection::UnknownInstance(_) | Rejection::WrongHost { .. })) => {
                    tracing::warn!(host, error = %r, "report about an instance the host does not hold");
                    answer.refused.push(RefusedReport {
                        id,
                        reason: r.to_string(),
                    });
                }
                Err(r) => {
                    failure.get_or_insert(r);
                }
            }
        }
        for outcome in outcomes.storage {
            match outcome {
                Ok(_) => {}
                Err(r @ Rejection::Volume(_)) => {
                    tracing::warn!(host, error = %r, "volume report not applied");
                }
                Err(r) => {
                    failure.get_or_insert(r);
                }
            }
        }
        match failure {
            Some(r) => Err(r.into()),
            None => Ok(answer),
        }
    }

    /// A host judged down that calls is up again, before what it says is applied: so its
    /// reports about its instances follow the event that it is back.
    async fn back_in_touch(&self, host: &str) -> Result<(), HostError> {
        let up = self
            .replica
            .read(Consistency::Stale, |s| s.host_life(host).up)
            .await?;
        if !up {
            match self.replica.propose(contact_judged(host, true)).await? {
                Ok(_) => tracing::info!(host, "host up: its agent is in touch again"),
                Err(rejection) => tracing::debug!(host, %rejection, "host judgment refused"),
            }
        }
        Ok(())
    }

    /// Every host with its load, liveness and cache (administrators only).
    pub async fn list(&self, caller: &Caller) -> Result<Vec<Host>, HostError> {
        caller.require_admin("list hosts")?;
        Ok(self
            .replica
            .read(caller.reads(), |s| {
                s.hosts.values().map(|h| self.view(s, h)).collect()
            })
            .await?)
    }

    fn view(&self, state: &State, record: &HostRecord) -> Host {
        let contact = self.liveness.contact(&record.name);
        let mut view = host_view(state, record, contact.last_seen_ms, contact.unknown_domains);
        view.images = contact.images.into_iter().collect();
        view.images.sort();
        view.precache = state
            .precache
            .get(&record.name)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        view
    }

    /// One host (admin).
    pub async fn show(&self, caller: &Caller, name: &str) -> Result<Host, HostError> {
        caller.require_admin("see a host")?;
        self.replica
            .read(caller.reads(), |s| {
                s.hosts.get(name).map(|h| self.view(s, h))
            })
            .await?
            .ok_or_else(|| HostError::NotFound(name.to_owned()))
    }

    async fn get(&self, name: &str) -> Result<Host, HostError> {
        self.replica
            .read(Consistency::Linearizable, |s| {
                s.hosts.get(name).map(|h| self.view(s, h))
            })
            .await?
            .ok_or_else(|| HostError::NotFound(name.to_owned()))
    }

    /// Puts `name` in maintenance (no new instances or disks; those it holds stay) or back in
    /// service (admin).
    pub async fn update(
        &self,
        caller: &Caller,
        name: &str,
        update: UpdateHost,
    ) -> Result<Host, HostError> {
        caller.require_admin("change a host")?;
        let UpdateHost {
            maintenance,
            reason,
            roles,
            labels,
        } = update;
        if maintenance.is_none() && roles.is_none() && labels.is_none() {
            return Err(InputError::new(
                "maintenance",
                "nothing to change: give maintenance, roles or labels",
            )
            .into());
        }
        let maintenance = match (maintenance, reason) {
            (Some(true), reason) => {
                if let Some(reason) = &reason {
                    validate_reason(reason)?;
                }
                Some(Some(Maintenance {
                    reason,
                    since_ms: now_ms(),
                }))
            }
            (Some(false), None) => Some(None),
            (None, None) => None,
            (_, Some(_)) => {
                return Err(
                    InputError::new("reason", "a reason goes with maintenance: true only").into(),
                )
            }
        };
        if let Some(roles) = &roles {
            if roles.is_empty() {
                return Err(InputError::new(
                    "roles",
                    "at least one role: compute, storage or both",
                )
                .into());
            }
        }
        let labels = labels
            .map(|labels| validate_labels("labels", &labels))
            .transpose()?;
        let mut commands = Vec::new();
        if roles.is_some() || labels.is_some() {
            commands.push(Command::HostProfile {
                host: name.to_owned(),
                compute: roles.as_ref().map(|r| r.contains(&HostRole::Compute)),
                storage: roles.as_ref().map(|r| r.contains(&HostRole::Storage)),
                labels,
            });
        }
        if let Some(maintenance) = maintenance {
            commands.push(Command::HostMaintenance {
                host: name.to_owned(),
                maintenance,
            });
        }
        for command in commands {
            match self.replica.propose(caller.by(command)).await? {
                Ok(_) => {}
                Err(Rejection::UnknownHost(_)) => return Err(HostError::NotFound(name.to_owned())),
                Err(rejection) => return Err(rejection.into()),
            }
        }
        self.get(name).await
    }

    /// Fences `name` (admin): declares the host, which must be down, dead (powered off or cut
    /// off for good), so that its instances that may be evacuated start elsewhere.
    pub async fn fence(&self, caller: &Caller, name: &str) -> Result<Host, HostError> {
        caller.require_admin("fence a host")?;
        let command = Command::FenceHost {
            host: name.to_owned(),
            at_ms: now_ms(),
        };
        match self.replica.propose(caller.by(command)).await? {
            Ok(_) => tracing::warn!(host = name, by = %caller.name, "host fenced"),
            Err(Rejection::UnknownHost(_)) => return Err(HostError::NotFound(name.to_owned())),
            Err(rejection) => return Err(rejection.into()),
        }
        self.get(name).await
    }

    /// Removes `name` (admin): refused while it holds instances or disks unless `force`, which
    /// is for a host that is down and gone for good (its instances fail, its disks are lost).
    pub async fn remove(&self, caller: &Caller, name: &str, force: bool) -> Result<(), HostError> {
        caller.require_admin("remove a host")?;
        let command = Command::RemoveHost {
            host: name.to_owned(),
            force,
            at_ms: now_ms(),
        };
        match self.replica.propose(caller.by(command)).await? {
            Ok(_) => {
                tracing::warn!(host = name, force, by = %caller.name, "host removed");
                Ok(())
            }
            Err(Rejection::UnknownHost(_)) => Err(HostError::NotFound(name.to_owned())),
            Err(rejection) => Err(rejection.into()),
        }
    }

    /// Asks `host` to fetch `image` ahead of time and keep it cached (admin).
    pub async fn precache(
        &self,
        caller: &Caller,
        host: &str,
        image: &str,
    ) -> Result<Host, HostError> {
        caller.require_admin("pin images on hosts")?;
        let spec = self
            .images
            .resolve(Consistency::Linearizable, image)
            .await?;
        self.replica
            .propose(caller.by(Command::Precache {
                host: host.to_owned(),
                spec,
            }))
            .await??;
        self.get(host).await
    }

    /// Stops keeping an image cached on `host` (it may then be evicted when unused).
    pub async fn unpin(
        &self,
        caller: &Caller,
        host: &str,
        sha256: &str,
    ) -> Result<Host, HostError> {
        caller.require_admin("unpin images on hosts")?;
        let command = Command::Unpin {
            host: host.to_owned(),
            sha256: sha256.to_owned(),
        };
        self.replica.propose(caller.by(command)).await??;
        self.get(host).await
    }
}

/// The controller's judgment that `host` is up or down, as proposed.
fn contact_judged(host: &str, up: bool) -> Command {
    let at_ms = now_ms();
    Command::By {
        actor: "controller".to_owned(),
        at_ms,
        command: Box::new(Command::HostContact {
            host: host.to_owned(),
            up,
            at_ms,
        }),
    }
}

/// The longest reason for a maintenance.
const MAX_REASON: usize = 500;

/// At most this many labels on a host or in a request.
const MAX_LABELS: usize = 16;

/// Labels as a host carries them or an instance requires them: names (letters, digits, `.`,
/// `_`, `-`), at most [`MAX_LABELS`].
pub(crate) fn validate_labels(
    field: &'static str,
    labels: &[String],
) -> Result<BTreeSet<String>, InputError> {
    if labels.len() > MAX_LABELS {
        return Err(InputError::new(
            field,
            format!("at most {MAX_LABELS} labels, not {}", labels.len()),
        ));
    }
    labels
        .iter()
        .map(|label| {
            validate_name(field, label)
                .map(|()| label.clone())
                .map_err(|e| InputError::named(field, e.to_string()))
        })
        .collect()
}

fn validate_reason(reason: &str) -> Result<(), InputError> {
    if reason.len() > MAX_REASON {
        return Err(InputError::new(
            "reason",
            format!("at most {MAX_REASON} bytes, not {}", reason.len()),
        ));
    }
    if reason.chars().any(char::is_control) {
        return Err(InputError::new(
            "reason",
            "control characters are not allowed",
        ));
    }
    Ok(())
}

/// While this node leads, every `period`: proposes each host whose agent's contact no longer
/// matches the replicated judgment up or down (see [`Liveness::judge`]), then places again the
/// Pending instances of hosts that are down. Ends with the hosts' service.
async fn judge_hosts(
    replica: Replica,
    liveness: Weak<Liveness>,
    period: Duration,
    site: SitePlacement,
    lease: Option<Duration>,
) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(liveness) = liveness.upgrade() else {
            return;
        };
        if !replica.is_leader() {
            continue;
        }
        let Ok(judged) = replica
            .read(Consistency::Stale, |s| {
                s.hosts
                    .keys()
                    .map(|h| (h.clone(), s.host_life(h).up))
                    .collect::<Vec<_>>()
            })
            .await
        else {
            continue;
        };
        for (host, up) in judged {
            let Some(judgment) = liveness.judge(&host, up) else {
                continue;
            };
            let up = judgment == Judgment::Up;
            match replica.propose(contact_judged(&host, up)).await {
                Ok(Ok(_)) if up => tracing::info!(%host, "host up: its agent is in touch again"),
                Ok(Ok(_)) => tracing::warn!(%host, "host down: its agent is out of touch"),
                // Removed meanwhile.
                Ok(Err(rejection)) => tracing::debug!(%host, %rejection, "host judgment refused"),
                // No longer the leader, or no quorum: the next leader judges again.
                Err(error) => {
                    tracing::debug!(%host, %error, "host judgment not committed");
                    break;
                }
            }
        }
        replacement::replace_pending(&replica, &liveness, site.strategy).await;
        if let Some(lease) = lease {
            fencing::fence_expired(&replica, &liveness, lease).await;
        }
        replacement::evacuate_fenced(&replica, &liveness, site.strategy).await;
    }
}

/// What `host` is asked to do, at desired-state `version`.
fn desired_of(state: &State, host: &str, version: u64) -> HostDesired {
    let (volumes, exports) = state.storage_desired_for_host(host);
    HostDesired {
        version,
        cluster_id: state.cluster_id.clone(),
        instances: state.desired_for_host(host),
        precache: state
            .precache
            .get(host)
            .map(|pins| pins.values().cloned().collect())
            .unwrap_or_default(),
        volumes,
        exports,
        lease_secs: None,
    }
}
