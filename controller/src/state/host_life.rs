//! Hosts' life in the replicated state: whether each host is up or down, whether an
//! administrator put it in maintenance, and its removal.
//!
//! Up and down are judged by the leader from its agent's contact (see `hosts/liveness.rs`) and
//! proposed, so every replica, every event and every placement agree on them. A host going down
//! turns the instances it was running `Unknown`: the guest may still run there (the host may
//! only be cut off), so they are never started elsewhere; the host's next report says what
//! they are. A host in maintenance takes no new instance and keeps those it runs. A host is
//! removed only when it holds nothing, unless an administrator forces it for a host that is
//! down and gone for good: its instances then fail and the disks it stored are lost.

use serde::{Deserialize, Serialize};
use stratus_common::api::InstanceState;
use stratus_common::volumes::VolumeState;

use super::{Outcome, Rejection, State};

/// What the replicated state knows of a host's life beyond its registration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostLife {
    /// Whether its agent is in touch, as the leader last judged.
    pub up: bool,
    /// Since when it is up or down (0: since it registered).
    pub since_ms: u64,
    /// Set while an administrator keeps new instances off it.
    pub maintenance: Option<Maintenance>,
}

impl Default for HostLife {
    /// A host nothing was said of: up since it registered, in service.
    fn default() -> Self {
        Self {
            up: true,
            since_ms: 0,
            maintenance: None,
        }
    }
}

impl HostLife {
    /// Whether the scheduler may give it new work.
    pub fn schedulable(&self) -> bool {
        self.up && self.maintenance.is_none()
    }
}

/// An administrator's maintenance of a host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Maintenance {
    pub reason: Option<String>,
    pub since_ms: u64,
}

/// What a host still holds, which its removal would lose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Holdings {
    /// Instances placed there that are not Done (a Failed one its host has not cleaned up
    /// counts: its domain may still be there).
    pub instances: usize,
    /// Persistent disks its pool stores.
    pub volumes: usize,
}

/// The states of an instance whose guest its host was running or about to run: they become
/// [`InstanceState::Unknown`] when the host goes down.
fn was_running(state: InstanceState) -> bool {
    matches!(
        state,
        InstanceState::Booting
            | InstanceState::Running
            | InstanceState::Starting
            | InstanceState::Rebooting
            | InstanceState::PoweringOff
    )
}

impl State {
    /// The life of host `name` (a host nothing was said of is up and in service).
    pub fn host_life(&self, name: &str) -> HostLife {
        self.host_life.get(name).cloned().unwrap_or_default()
    }

    /// What `host` holds.
    pub fn holdings(&self, host: &str) -> Holdings {
        Holdings {
            instances: self
                .instances
                .values()
                .filter(|i| i.host.as_deref() == Some(host) && i.holds_lease())
                .count(),
            volumes: self.volumes.values().filter(|v| v.host == host).count(),
        }
    }

    /// The leader judged `host` up or down at `at_ms`.
    pub(super) fn host_contact(
        &mut self,
        host: &str,
        up: bool,
        at_ms: u64,
    ) -> Result<Outcome, Rejection> {
        if !self.hosts.contains_key(host) {
            return Err(Rejection::UnknownHost(host.to_owned()));
        }
        let mut life = self.host_life(host);
        if life.up == up {
            return Ok(Outcome::Unchanged);
        }
        life.up = up;
        life.since_ms = at_ms;
        self.host_life.insert(host.to_owned(), life);
        // A fenced host that is back is in service again: what was moved away from it is
        // destroyed there (see `evacuation.rs`).
        if up {
            self.fenced.remove(host);
        }
        if !up {
            let ids: Vec<u64> = self
                .instances
                .values()
                .filter(|i| i.host.as_deref() == Some(host) && was_running(i.state))
                .map(|i| i.id)
                .collect();
            let reason = format!("host {host} is down: its agent is out of touch");
            for id in ids {
                self.instances.update(id, |i| {
                    i.transition(InstanceState::Unknown, at_ms, Some(reason.clone()))
                });
            }
        }
        Ok(Outcome::Applied)
    }

    /// Moves instance `id`, Pending on `from` which is down, to `to` (the scheduler's choice),
    /// or fails it with `failure` when no host could take it. A Pending instance never started
    /// (its host starts a guest only once the controller recorded Booting there), so this
    /// cannot make it run twice. One with persistent disks attached at launch fails instead:
    /// their exports were made for the host it was placed on.
    pub(super) fn replace_instance(
        &mut self,
        id: u64,
        from: &str,
        to: Option<String>,
        failure: Option<String>,
        at_ms: u64,
    ) -> Result<Outcome, Rejection> {
        let instance = self
            .instances
            .get(&id)
            .ok_or(Rejection::UnknownInstance(id))?;
        if instance.host.as_deref() != Some(from) {
            return Err(Rejection::WrongHost {
                id,
                host: from.to_owned(),
            });
        }
        if instance.state != InstanceState::Pending {
            return Err(Rejection::NotReplaceable {
                id,
                why: format!("it is {}, not Pending", instance.state),
            });
        }
        if self.host_life(from).up {
            return Err(Rejection::NotReplaceable {
                id,
                why: format!("its host {from} is up"),
            });
        }
        let has_disks = !self.volumes_of_instance(id).is_empty();
        let target = match (&to, has_disks) {
            (Some(host), false) => {
                self.recheck_placed(id, host)?;
                Some(host.clone())
            }
            _ => None,
        };
        let down = format!("its host {from} went down before it started");
        self.instances.update(id, |i| match target {
            Some(host) => {
                let reason = format!("{down}: placed again on {host}");
                i.host = Some(host);
                i.transition(InstanceState::Pending, at_ms, Some(reason));
            }
            None => {
                let why = if has_disks {
                    "persistent disks were to be attached at its start: run it again".to_owned()
                } else {
                    failure.unwrap_or_else(|| "no other host can take it".to_owned())
                };
                // Nothing of it ever ran, so nothing is left to clean up.
                i.host_cleaned = true;
                i.transition(InstanceState::Failed, at_ms, Some(format!("{down}; {why}")));
            }
        });
        self.release_finished_leases(id);
        self.release_finished_volumes(id);
        Ok(Outcome::Applied)
    }

    /// An administrator put `host` in maintenance (`Some`, with the reason) or back in
    /// service (`None`).
    pub(super) fn host_maintenance(
        &mut self,
        host: &str,
        maintenance: Option<Maintenance>,
    ) -> Result<Outcome, Rejection> {
        if !self.hosts.contains_key(host) {
            return Err(Rejection::UnknownHost(host.to_owned()));
        }
        let mut life = self.host_life(host);
        // A repeated request changes nothing (and keeps the first one's time).
        if life.maintenance.is_some() == maintenance.is_some()
            && life.maintenance.as_ref().map(|m| &m.reason)
                == maintenance.as_ref().map(|m| &m.reason)
        {
            return Ok(Outcome::Unchanged);
        }
        life.maintenance = maintenance;
        self.host_life.insert(host.to_owned(), life);
        Ok(Outcome::Applied)
    }

    /// Removes `host`: refused while it holds instances or disks, unless `force` and the host is
    /// down (gone for good): its instances then fail, its disks fail as lost, and its
    /// certificates leave force.
    pub(super) fn remove_host(
        &mut self,
        host: &str,
        force: bool,
        at_ms: u64,
    ) -> Result<Outcome, Rejection> {
        if !self.hosts.contains_key(host) {
            return Err(Rejection::UnknownHost(host.to_owned()));
        }
        let holdings = self.holdings(host);
        if holdings != Holdings::default() {
            if !force {
                return Err(Rejection::HostHolds {
                    host: host.to_owned(),
                    instances: holdings.instances,
                    volumes: holdings.volumes,
                });
            }
            if self.host_life(host).up {
                return Err(Rejection::HostUp(host.to_owned()));
            }
        }
        let lost: Vec<u64> = self
            .instances
            .values()
            .filter(|i| i.host.as_deref() == Some(host) && i.holds_lease())
            .map(|i| i.id)
            .collect();
        let reason = format!("host {host} was removed");
        for id in lost {
            self.instances.update(id, |i| {
                // Nothing of it can be cleaned up any more: its host is gone.
                i.host_cleaned = true;
                let state = if i.state == InstanceState::Stopping {
                    InstanceState::Done
                } else {
                    InstanceState::Failed
                };
                i.transition(state, at_ms, Some(reason.clone()));
            });
            self.release_finished_leases(id);
            self.release_finished_volumes(id);
        }
        self.fenced.remove(host);
        self.moved_away.remove(host);
        for volume in self.volumes.values_mut().filter(|v| v.host == host) {
            volume.state = VolumeState::Failed;
            volume.reason = Some(format!(
                "its storage host {host} was removed: the disk's data went with it"
            ));
        }
        self.hosts.remove(host);
        self.host_life.remove(host);
        self.precache.remove(host);
        self.trust.revoke_host(host);
        Ok(Outcome::Applied)
    }
}
