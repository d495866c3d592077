//! Instances in the replicated state: their records and history, the rules of their life
//! (created Pending on a host with room or Failed with the reason, stopped, started, rebooted,
//! killed, reported by their host), the capacity they take, and what each host is asked to run.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use stratus_common::agent::{ActualState, Desire, DesiredInstance, ImageSpec};
use stratus_common::api::{InstanceState, PowerAction};
use stratus_common::network::NicSpec;

use crate::scheduler::{self, Filter};

use super::{HostRecord, InstanceRules, IpamError, NicRecord, Outcome, Rejection, State};

/// One recorded state change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Transition {
    pub state: InstanceState,
    pub at_ms: u64,
    pub reason: Option<String>,
}

/// An instance and its whole history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceRecord {
    pub id: u64,
    pub name: String,
    pub owner: String,
    /// The image as the user named it: a site image name or a Marketplace identifier.
    pub image: String,
    /// What the host needs to boot it, resolved (and checked against the site policy) when the
    /// instance was created, so later Marketplace entries do not change a running instance.
    pub image_spec: ImageSpec,
    pub instance_type: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub host: Option<String>,
    pub state: InstanceState,
    pub reason: Option<String>,
    pub created_ms: u64,
    pub history: Vec<Transition>,
    /// For a Failed instance: its host has confirmed that nothing of it is left.
    pub host_cleaned: bool,
    /// Its interfaces on site networks; their addresses are leased while
    /// [`InstanceRecord::holds_lease`].
    #[serde(default)]
    pub nics: Vec<NicRecord>,
    /// The OpenSSH public key the guest accepts for root.
    #[serde(default)]
    pub ssh_key: Option<String>,
    /// User data for the guest.
    #[serde(default)]
    pub user_data: Option<String>,
}

impl InstanceRecord {
    /// Whether it still holds capacity on its host.
    pub fn holds_capacity(&self) -> bool {
        !self.state.is_terminal()
    }

    /// Whether it still holds its addresses: until it is Done, or Failed and its host has
    /// confirmed nothing of it is left. A Failed domain the host has not cleaned up may still
    /// run with the address, so giving the address away then could put it on two machines.
    pub fn holds_lease(&self) -> bool {
        match self.state {
            InstanceState::Done => false,
            InstanceState::Failed => !self.host_cleaned,
            _ => true,
        }
    }

    /// How many starts and reboots were asked of it: the history's Starting and Rebooting
    /// entries (the history is its record, so this needs no stored field of its own).
    pub fn generation(&self) -> u64 {
        self.history
            .iter()
            .filter(|t| matches!(t.state, InstanceState::Starting | InstanceState::Rebooting))
            .count() as u64
    }

    /// When the API accepted the request the current generation answers: the latest start
    /// or reboot, else the creation.
    pub fn accepted_at_ms(&self) -> u64 {
        self.history
            .iter()
            .rev()
            .find(|t| matches!(t.state, InstanceState::Starting | InstanceState::Rebooting))
            .map_or(self.created_ms, |t| t.at_ms)
    }

    /// The state its host is meant to keep it in: its own, or while it is Unknown the state it
    /// was in when its host went down (a stop or reboot asked before is still asked).
    pub fn intended(&self) -> InstanceState {
        self.history
            .iter()
            .rev()
            .map(|t| t.state)
            .find(|&s| s != InstanceState::Unknown)
            .unwrap_or(self.state)
    }

    pub(super) fn transition(&mut self, state: InstanceState, at_ms: u64, reason: Option<String>) {
        self.state = state;
        match state {
            InstanceState::Failed | InstanceState::Stopped | InstanceState::Unknown => {
                self.reason = reason.clone()
            }
            // Placed again: why stays visible while it waits.
            InstanceState::Pending => self.reason = reason.clone(),
            // Done keeps the reason of the Failed or Stopped it came from.
            InstanceState::Done => {}
            _ => self.reason = None,
        }
        self.history.push(Transition {
            state,
            at_ms,
            reason,
        });
    }
}

/// Where the scheduler put a new instance, or why it could not.
pub(super) struct Placement {
    pub(super) host: Option<String>,
    pub(super) failure: Option<String>,
    /// Its group and the labels it requires.
    pub(super) rules: InstanceRules,
}

/// What a new instance's guest gets beyond its image: a network, a key, user data, disks.
pub(super) struct GuestSetup {
    pub(super) network: Option<String>,
    pub(super) ssh_key: Option<String>,
    pub(super) user_data: Option<String>,
    pub(super) volumes: Vec<(String, String)>,
}

/// Capacity used on a host by the instances it holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub vcpus: u32,
    pub memory_mib: u64,
    /// Local disk, by the instances' types (what each disk may grow to).
    pub disk_gib: u64,
    pub instances: u32,
}

impl State {
    /// The instance `owner` already made with idempotency key `key`, if any.
    pub fn instance_for_key(&self, owner: &str, key: &str) -> Option<u64> {
        self.instance_keys.get(owner, key).copied()
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn create_instance(
        &mut self,
        owner: String,
        name: Option<String>,
        image: String,
        image_spec: ImageSpec,
        instance_type: String,
        placement: Placement,
        guest: GuestSetup,
        at_ms: u64,
    ) -> Result<Outcome, Rejection> {
        let Placement {
            host,
            failure,
            rules,
        } = placement;
        let GuestSetup {
            network,
            ssh_key,
            user_data,
            volumes,
        } = guest;
        let size = self
            .types
            .get(&instance_type)
            .ok_or_else(|| Rejection::UnknownType(instance_type.clone()))?
            .clone();
        let group = self.group_placement(&owner, &rules, None)?;
        if let Some(host) = &host {
            let record = self
                .hosts
                .get(host)
                .ok_or_else(|| Rejection::UnknownHost(host.clone()))?;
            // The scheduler's filters again, against the state the command applies to.
            let demand = scheduler::Demand {
                vcpus: size.vcpus,
                memory_mib: size.memory_mib,
                disk_gib: size.disk_gib,
                labels: &rules.labels,
                group,
            };
            self.recheck_host(record, &demand)?;
        }
        if let Some(network) = &network {
            if self.ipam.network(network).is_none() {
                return Err(IpamError::UnknownNetwork(network.clone()).into());
            }
        }
        let id = self.next_instance_id.max(1);
        let mut record = InstanceRecord {
            id,
            name: name.unwrap_or_else(|| format!("vm-{id}")),
            owner,
            image,
            image_spec,
            instance_type,
            vcpus: size.vcpus,
            memory_mib: size.memory_mib,
            host: host.clone(),
            state: InstanceState::Pending,
            reason: None,
            created_ms: at_ms,
            history: Vec::new(),
            host_cleaned: false,
            nics: Vec::new(),
            ssh_key,
            user_data,
        };
        // Disks are checked before anything changes; an instance that could not be placed
        // never runs, so it takes no disk and no address.
        let targets = match &host {
            Some(_) => self.check_launch_volumes(&volumes, &record, &record.owner)?,
            None => Vec::new(),
        };
        // Last of the checks, as it is the only one that changes anything: an exhausted network
        // refuses the whole command.
        if let (Some(network), Some(_)) = (&network, &host) {
            record.nics = vec![self.ipam.allocate(network, id)?];
        }
        self.next_instance_id = id + 1;
        if let Some(host) = &host {
            self.attach_launch_volumes(volumes, targets, id, host, at_ms);
        }
        match (host, failure) {
            (Some(_), _) => record.transition(InstanceState::Pending, at_ms, None),
            (None, reason) => {
                let reason = reason.unwrap_or_else(|| "no host available".to_owned());
                record.host_cleaned = true;
                record.transition(InstanceState::Failed, at_ms, Some(reason));
            }
        }
        let owner = record.owner.clone();
        self.instances.insert(record);
        self.remember_rules(&owner, id, rules);
        Ok(Outcome::InstanceCreated(id))
    }

    pub(super) fn kill_instance(&mut self, id: u64, at_ms: u64) -> Result<Outcome, Rejection> {
        self.instances
            .update(id, |instance| match instance.state {
                InstanceState::Done => Err(Rejection::AlreadyDone(id)),
                InstanceState::Stopping => Ok(Outcome::Unchanged),
                InstanceState::Failed if instance.host_cleaned => {
                    instance.transition(InstanceState::Done, at_ms, None);
                    Ok(Outcome::Applied)
                }
                _ => {
                    instance.transition(InstanceState::Stopping, at_ms, None);
                    Ok(Outcome::Applied)
                }
            })
            .ok_or(Rejection::UnknownInstance(id))?
    }

    /// Stops, starts or reboots instance `id`; refused (409) in a state the action does not
    /// apply to, and a repeated stop of an instance already powering off changes nothing.
    pub(super) fn power_instance(
        &mut self,
        id: u64,
        action: PowerAction,
        at_ms: u64,
    ) -> Result<Outcome, Rejection> {
        use InstanceState as S;
        self.instances
            .update(id, |instance| {
                let next = match (action, instance.state) {
                    (PowerAction::Stop, S::PoweringOff) => return Ok(Outcome::Unchanged),
                    (
                        PowerAction::Stop,
                        S::Pending | S::Booting | S::Starting | S::Rebooting | S::Running,
                    ) => S::PoweringOff,
                    (PowerAction::Start, S::Stopped) => S::Starting,
                    (PowerAction::Reboot, S::Running) => S::Rebooting,
                    (_, state) => return Err(Rejection::WrongState { id, state, action }),
                };
                instance.transition(next, at_ms, None);
                Ok(Outcome::Applied)
            })
            .ok_or(Rejection::UnknownInstance(id))?
    }

    pub(super) fn report_instance(
        &mut self,
        host: &str,
        id: u64,
        actual: ActualState,
        reason: Option<String>,
        at_ms: u64,
    ) -> Result<Outcome, Rejection> {
        if let Some(outcome) = self.moved_away_report(host, id, actual == ActualState::Gone) {
            return Ok(outcome);
        }
        self.instances
            .update(id, |instance| {
                instance_reported(instance, host, actual, reason, at_ms)
            })
            .ok_or(Rejection::UnknownInstance(id))?
    }

    /// The scheduler's filters again for `host`, against the state a command applies to: the
    /// refusal of a host that went down, into maintenance, out of room or out of the rules
    /// since it was chosen.
    pub(super) fn recheck_host(
        &self,
        host: &HostRecord,
        demand: &scheduler::Demand,
    ) -> Result<(), Rejection> {
        let unschedulable = |why| Rejection::HostUnschedulable {
            host: host.name.clone(),
            why,
        };
        match scheduler::check(self, host, demand) {
            None => Ok(()),
            Some(Filter::Down) => Err(unschedulable("down")),
            Some(Filter::Maintenance) => Err(unschedulable("in maintenance")),
            Some(Filter::Role) => Err(unschedulable("not a compute host")),
            Some(Filter::Labels) => Err(unschedulable("without a label the instance requires")),
            Some(Filter::AntiAffinity) => Err(unschedulable(
                "running an instance of the instance's anti-affinity group",
            )),
            Some(Filter::Affinity) => Err(unschedulable(
                "not where the instance's affinity group runs",
            )),
            Some(Filter::Cpu | Filter::Memory | Filter::Disk) => Err(Rejection::NoRoom {
                host: host.name.clone(),
                vcpus: demand.vcpus,
                memory_mib: demand.memory_mib,
            }),
        }
    }

    /// [`Self::recheck_host`] of host `to` for existing instance `id` (placing it again):
    /// its size and rules; its own place does not count against its group.
    pub(super) fn recheck_placed(&self, id: u64, to: &str) -> Result<(), Rejection> {
        let instance = self
            .instances
            .get(&id)
            .ok_or(Rejection::UnknownInstance(id))?;
        let record = self
            .hosts
            .get(to)
            .ok_or_else(|| Rejection::UnknownHost(to.to_owned()))?;
        let rules = self.placement_rules(id);
        let demand = scheduler::Demand {
            vcpus: instance.vcpus,
            memory_mib: instance.memory_mib,
            disk_gib: super::type_disk_gib(&instance.instance_type),
            labels: &rules.labels,
            group: self.group_placement(&instance.owner, rules, Some(id))?,
        };
        self.recheck_host(record, &demand)
    }

    /// Capacity taken on `host` by the instances placed there.
    pub fn usage(&self, host: &str) -> Usage {
        self.instances.usage(host)
    }

    /// What a host needs to plug each interface of `instance`.
    pub fn nic_specs(&self, instance: &InstanceRecord) -> Vec<NicSpec> {
        instance
            .nics
            .iter()
            .filter_map(|nic| self.ipam.nic_spec(nic))
            .collect()
    }

    /// What the controller wants `host` to run: every instance placed there that still needs
    /// the host to act (run it, or make sure nothing of it is left), in ID order.
    pub fn desired_for_host(&self, host: &str) -> Vec<DesiredInstance> {
        // Only the host's own unfinished instances and its copies moved away can need it: the
        // table keeps the former per host, so no answer scans every instance.
        let none = BTreeSet::new();
        let moved_away = self.moved_away.get(host).unwrap_or(&none);
        self.instances
            .on_host(host)
            .union(moved_away)
            .filter_map(|id| self.instances.get(id))
            .filter_map(|i| self.desired_on_host(i, host))
            .collect()
    }

    /// [`Self::desired_for_host`] by a scan of every instance, as it was before the table kept
    /// each host's instances: what the answer must equal.
    #[cfg(test)]
    pub(super) fn desired_for_host_by_scan(&self, host: &str) -> Vec<DesiredInstance> {
        let moved_away = self.moved_away.get(host);
        self.instances
            .values()
            .filter(|i| {
                i.host.as_deref() == Some(host) || moved_away.is_some_and(|m| m.contains(&i.id))
            })
            .filter_map(|i| self.desired_on_host(i, host))
            .collect()
    }

    /// What `host` must do with instance `i`, placed there or moved away from it, if anything.
    fn desired_on_host(&self, i: &InstanceRecord, host: &str) -> Option<DesiredInstance> {
        // Evacuated from here: its copy here goes, whatever it does elsewhere.
        if i.host.as_deref() != Some(host) {
            return Some(self.desired_instance(i, Desire::Destroy));
        }
        let desire = match i.intended() {
            InstanceState::Pending
            | InstanceState::Booting
            | InstanceState::Running
            | InstanceState::Starting
            | InstanceState::Rebooting => Desire::Run,
            InstanceState::PoweringOff | InstanceState::Stopped => Desire::Stop,
            InstanceState::Stopping => Desire::Destroy,
            InstanceState::Failed if !i.host_cleaned => Desire::Destroy,
            InstanceState::Failed | InstanceState::Done | InstanceState::Unknown => return None,
        };
        Some(self.desired_instance(i, desire))
    }

    /// What a host needs to know of `instance` to bring it to `desire`.
    fn desired_instance(&self, i: &InstanceRecord, desire: Desire) -> DesiredInstance {
        let rules = self.placement_rules(i.id);
        DesiredInstance {
            id: i.id,
            desire,
            generation: i.generation(),
            vcpus: i.vcpus,
            memory_mib: i.memory_mib,
            image: i.image_spec.clone(),
            nics: self.nic_specs(i),
            ssh_key: i.ssh_key.clone(),
            user_data: i.user_data.clone(),
            hostname: i.name.clone(),
            disks: self.disks_for_instance(i),
            accepted_at_ms: Some(i.accepted_at_ms()),
            confirm: i.state == InstanceState::Unknown,
            restart: rules.restart,
            evacuate: rules.evacuate,
        }
    }
}

/// The rules of a host's report about one of its instances.
fn instance_reported(
    instance: &mut InstanceRecord,
    host: &str,
    actual: ActualState,
    reason: Option<String>,
    at_ms: u64,
) -> Result<Outcome, Rejection> {
    use InstanceState as S;
    let id = instance.id;
    if instance.host.as_deref() != Some(host) {
        return Err(Rejection::WrongHost {
            id,
            host: host.to_owned(),
        });
    }
    let next = match (instance.state, actual) {
        // Its host is back and says what the guest did meanwhile.
        (S::Unknown, ActualState::Booting) => Some((S::Booting, None)),
        (S::Unknown, ActualState::Running) => Some((S::Running, None)),
        (S::Unknown, ActualState::Stopped) => Some((S::Stopped, reason)),
        (S::Unknown, ActualState::Failed) => Some((
            S::Failed,
            Some(reason.unwrap_or_else(|| "failed on host".to_owned())),
        )),
        (S::Unknown, ActualState::Gone) => Some((
            S::Failed,
            Some("the host lost the domain while it was down".to_owned()),
        )),
        (S::Pending, ActualState::Booting) => Some((S::Booting, None)),
        (S::Pending | S::Booting | S::Starting | S::Rebooting, ActualState::Running) => {
            Some((S::Running, None))
        }
        // Its host started it again on its own (restart policy `always`): the history says
        // so, with the host's reason.
        (S::Running, ActualState::Running) if reason.is_some() => Some((S::Running, reason)),
        (S::Pending | S::Booting | S::Running, ActualState::Failed) => Some((
            S::Failed,
            Some(reason.unwrap_or_else(|| "failed on host".to_owned())),
        )),
        // A failed start (or the start half of a reboot) keeps everything: the instance is
        // Stopped, with the reason, and can be started again.
        (S::Starting | S::Rebooting, ActualState::Failed) => Some((
            S::Stopped,
            Some(format!(
                "the start failed: {}",
                reason.unwrap_or_else(|| "failed on host".to_owned())
            )),
        )),
        (
            S::Pending | S::Booting | S::Running | S::Starting | S::Rebooting | S::PoweringOff,
            ActualState::Stopped,
        ) => Some((S::Stopped, reason)),
        (
            S::Pending
            | S::Booting
            | S::Running
            | S::Starting
            | S::Rebooting
            | S::PoweringOff
            | S::Stopped,
            ActualState::Gone,
        ) => Some((S::Failed, Some("the host lost the domain".to_owned()))),
        (S::Stopping, ActualState::Gone) => Some((S::Done, None)),
        (S::Failed, ActualState::Gone) if !instance.host_cleaned => {
            instance.host_cleaned = true;
            return Ok(Outcome::Applied);
        }
        _ => None,
    };
    match next {
        Some((state, reason)) => {
            if state == S::Failed || state == S::Done {
                // Gone already means nothing is left on the host.
                instance.host_cleaned = actual == ActualState::Gone;
            }
            instance.transition(state, at_ms, reason);
            Ok(Outcome::Applied)
        }
        None => Ok(Outcome::Unchanged),
    }
}
