//! Evacuation, in the replicated state: an administrator fences a host that is down (asserts
//! that nothing of it runs any more: it is powered off or cut off for good), and the
//! instances it ran that opted into evacuation are started elsewhere, from their image (their
//! disk stayed on the fenced host), with their addresses. The fenced host's copy of each
//! moved instance is remembered: should the host come back, it is told to destroy it, and its
//! reports about it change nothing. No instance is started elsewhere without a fence, so a
//! host that is only cut off never leads to two running copies.

use std::collections::BTreeSet;

use stratus_common::api::InstanceState;

use super::{Outcome, Rejection, State};

impl State {
    /// Since when `host` is fenced, if it is.
    pub fn fenced_since(&self, host: &str) -> Option<u64> {
        self.fenced.get(host).copied()
    }

    /// Instances moved away from `host` whose copy there it has not yet confirmed gone.
    pub fn moved_away(&self, host: &str) -> BTreeSet<u64> {
        self.moved_away.get(host).cloned().unwrap_or_default()
    }

    /// An administrator fences `host`, which must be down.
    pub(super) fn fence_host(&mut self, host: &str, at_ms: u64) -> Result<Outcome, Rejection> {
        if !self.hosts.contains_key(host) {
            return Err(Rejection::UnknownHost(host.to_owned()));
        }
        if self.host_life(host).up {
            return Err(Rejection::FenceUp(host.to_owned()));
        }
        if self.fenced.contains_key(host) {
            return Ok(Outcome::Unchanged);
        }
        self.fenced.insert(host.to_owned(), at_ms);
        Ok(Outcome::Applied)
    }

    /// Starts instance `id`, Unknown on fenced host `from`, on `to`: Pending there, with its
    /// addresses, its copy on `from` to be destroyed should `from` come back.
    pub(super) fn evacuate_instance(
        &mut self,
        id: u64,
        from: &str,
        to: &str,
        at_ms: u64,
    ) -> Result<Outcome, Rejection> {
        let instance = self
            .instances
            .get(&id)
            .ok_or(Rejection::UnknownInstance(id))?;
        let refuse = |why: String| Err(Rejection::NotEvacuable { id, why });
        if instance.host.as_deref() != Some(from) {
            return Err(Rejection::WrongHost {
                id,
                host: from.to_owned(),
            });
        }
        if instance.state != InstanceState::Unknown {
            return refuse(format!("it is {}, not Unknown", instance.state));
        }
        if self.host_life(from).up || !self.fenced.contains_key(from) {
            return refuse(format!("its host {from} is not down and fenced"));
        }
        if !self.volumes_of_instance(id).is_empty() {
            return refuse("persistent disks are attached to it".to_owned());
        }
        if self
            .moved_away
            .get(to)
            .is_some_and(|copies| copies.contains(&id))
        {
            return refuse(format!("{to} has not yet destroyed its earlier copy"));
        }
        self.recheck_placed(id, to)?;
        let reason =
            format!("evacuated from {from} (fenced): started again on {to} from its image");
        self.instances.update(id, |i| {
            i.host = Some(to.to_owned());
            i.transition(InstanceState::Pending, at_ms, Some(reason));
        });
        self.moved_away
            .entry(from.to_owned())
            .or_default()
            .insert(id);
        Ok(Outcome::Applied)
    }

    /// A report by `host` about instance `id` that was moved away from it: `Some` when it is
    /// one (only its copy's end changes anything), `None` otherwise.
    pub(super) fn moved_away_report(&mut self, host: &str, id: u64, gone: bool) -> Option<Outcome> {
        let moved = self.moved_away.get_mut(host)?;
        if !moved.contains(&id) {
            return None;
        }
        if !gone {
            return Some(Outcome::Unchanged);
        }
        moved.remove(&id);
        if moved.is_empty() {
            self.moved_away.remove(host);
        }
        Some(Outcome::Applied)
    }
}
