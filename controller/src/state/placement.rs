//! What placement honours beyond capacity, in the replicated state: each host's roles and
//! labels (set by an administrator), server groups with an affinity or anti-affinity policy
//! (made by their owner), and each instance's rules (its group and the labels it requires,
//! kept so that placing it again honours them too; whether it may be evacuated; what its host
//! does when it stops by itself).
//!
//! The scheduler (`scheduler.rs`) reads these; apply's re-check of a chosen host reads them
//! again, so two creations racing into one anti-affinity group cannot both land on one host.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use stratus_common::api::{GroupPolicy, RestartPolicy};

use super::{Outcome, Rejection, State};

/// What a host is for. A host nothing was said of is both.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostProfile {
    /// It runs instances.
    pub compute: bool,
    /// It stores persistent disks (when its agent has a volume pool).
    pub storage: bool,
    /// Free-form labels an instance may require (e.g. `ssd`, `gpu`).
    pub labels: BTreeSet<String>,
}

/// The profile of a host nothing was said of.
static ANY_HOST: HostProfile = HostProfile {
    compute: true,
    storage: true,
    labels: BTreeSet::new(),
};

/// The rules of an instance made without any.
static NO_RULES: InstanceRules = InstanceRules {
    group: None,
    labels: BTreeSet::new(),
    evacuate: false,
    restart: RestartPolicy::Never,
};

impl Default for HostProfile {
    fn default() -> Self {
        ANY_HOST.clone()
    }
}

/// A server group: its members are placed together (affinity) or apart (anti-affinity).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupRecord {
    pub name: String,
    pub owner: String,
    pub policy: GroupPolicy,
    pub created_ms: u64,
    /// Every instance ever created in it (those Done or Failed no longer bind placement).
    pub members: BTreeSet<u64>,
}

/// The rules an instance is placed by, beyond its size.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceRules {
    /// The name of a server group of the instance's owner.
    pub group: Option<String>,
    /// Labels its host must carry.
    pub labels: BTreeSet<String>,
    /// It may be started elsewhere, from its image, when its host is down and fenced.
    pub evacuate: bool,
    /// What its host does when the guest stops by itself.
    pub restart: RestartPolicy,
}

impl InstanceRules {
    pub fn is_empty(&self) -> bool {
        self.group.is_none() && self.labels.is_empty() && !self.evacuate && self.restart.is_never()
    }
}

/// Where a group's live members are, for the group filters.
#[derive(Debug, Clone, Copy)]
pub struct GroupPlacement<'a> {
    pub group: &'a GroupRecord,
    /// The instance being placed, if it exists already (placing it again): its own host does
    /// not count.
    pub instance: Option<u64>,
}

impl GroupPlacement<'_> {
    /// The hosts of the group's members that still hold their place (not Done or Failed).
    pub fn member_hosts(&self, state: &State) -> BTreeSet<String> {
        self.group
            .members
            .iter()
            .filter(|id| Some(**id) != self.instance)
            .filter_map(|id| state.instances.get(id))
            .filter(|i| i.holds_capacity())
            .filter_map(|i| i.host.clone())
            .collect()
    }
}

impl State {
    /// The profile of host `name` (one nothing was said of is for both roles, unlabelled).
    /// (Borrowed: placement asks it of every candidate host.)
    pub fn host_profile(&self, name: &str) -> &HostProfile {
        self.host_profiles.get(name).unwrap_or(&ANY_HOST)
    }

    /// `owner`'s server group `name`.
    pub fn group(&self, owner: &str, name: &str) -> Option<&GroupRecord> {
        self.groups.get(owner).and_then(|groups| groups.get(name))
    }

    /// The rules instance `id` was placed by (none for most instances).
    /// (Borrowed: every long-poll answer asks it of each of the host's instances.)
    pub fn placement_rules(&self, id: u64) -> &InstanceRules {
        self.instance_rules.get(&id).unwrap_or(&NO_RULES)
    }

    pub(super) fn set_host_profile(
        &mut self,
        host: &str,
        compute: Option<bool>,
        storage: Option<bool>,
        labels: Option<BTreeSet<String>>,
    ) -> Result<Outcome, Rejection> {
        if !self.hosts.contains_key(host) {
            return Err(Rejection::UnknownHost(host.to_owned()));
        }
        let mut profile = self.host_profile(host).clone();
        let before = profile.clone();
        if let Some(compute) = compute {
            profile.compute = compute;
        }
        if let Some(storage) = storage {
            profile.storage = storage;
        }
        if let Some(labels) = labels {
            profile.labels = labels;
        }
        if !profile.compute && !profile.storage {
            return Err(Rejection::NoRole(host.to_owned()));
        }
        if profile == before {
            return Ok(Outcome::Unchanged);
        }
        if profile == HostProfile::default() {
            self.host_profiles.remove(host);
        } else {
            self.host_profiles.insert(host.to_owned(), profile);
        }
        Ok(Outcome::Applied)
    }

    pub(super) fn create_group(
        &mut self,
        owner: String,
        name: String,
        policy: GroupPolicy,
        at_ms: u64,
    ) -> Result<Outcome, Rejection> {
        if self.group(&owner, &name).is_some() {
            return Err(Rejection::GroupExists(name));
        }
        let record = GroupRecord {
            name: name.clone(),
            owner: owner.clone(),
            policy,
            created_ms: at_ms,
            members: BTreeSet::new(),
        };
        self.groups.entry(owner).or_default().insert(name, record);
        Ok(Outcome::Applied)
    }

    /// Removes a group no live instance is in (members Done or Failed are forgotten with it).
    pub(super) fn delete_group(&mut self, owner: &str, name: &str) -> Result<Outcome, Rejection> {
        let group = self
            .group(owner, name)
            .ok_or_else(|| Rejection::UnknownGroup(name.to_owned()))?;
        let live = group
            .members
            .iter()
            .filter_map(|id| self.instances.get(id))
            .filter(|i| i.holds_capacity())
            .count();
        if live > 0 {
            return Err(Rejection::GroupInUse {
                name: name.to_owned(),
                instances: live,
            });
        }
        let members = group.members.clone();
        for id in members {
            if let Some(rules) = self.instance_rules.get_mut(&id) {
                rules.group = None;
                if rules.is_empty() {
                    self.instance_rules.remove(&id);
                }
            }
        }
        if let Some(groups) = self.groups.get_mut(owner) {
            groups.remove(name);
            if groups.is_empty() {
                self.groups.remove(owner);
            }
        }
        Ok(Outcome::Applied)
    }

    /// The group placement of instance `instance` (`None`: a new one) of `owner` with `rules`:
    /// refused when the group does not exist.
    pub fn group_placement(
        &self,
        owner: &str,
        rules: &InstanceRules,
        instance: Option<u64>,
    ) -> Result<Option<GroupPlacement<'_>>, Rejection> {
        rules
            .group
            .as_deref()
            .map(|name| {
                self.group(owner, name)
                    .map(|group| GroupPlacement { group, instance })
                    .ok_or_else(|| Rejection::UnknownGroup(name.to_owned()))
            })
            .transpose()
    }

    /// Records that instance `id` of `owner` was made with `rules`.
    pub(super) fn remember_rules(&mut self, owner: &str, id: u64, rules: InstanceRules) {
        if let Some(group) = rules
            .group
            .as_deref()
            .and_then(|name| self.groups.get_mut(owner)?.get_mut(name))
        {
            group.members.insert(id);
        }
        if !rules.is_empty() {
            self.instance_rules.insert(id, rules);
        }
    }
}
