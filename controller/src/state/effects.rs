//! What applying a command changed, as typed events (an instance went Running, a disk was
//! attached, a host registered, ...) and the hosts whose desired state may differ afterwards.
//!
//! Events are not written by the rules one by one: [`Before::capture`] keeps the records a
//! command can touch, and [`Before::diff`] compares them with what apply left. So no rule can
//! change an instance or a volume without its event, and events stay as deterministic as apply
//! itself (every replica derives the same ones from the same entry).

use std::collections::BTreeSet;

use stratus_common::api::InstanceState;
use stratus_common::volumes::{AttachmentState, VolumeState};

use super::{Command, InstanceRecord, Outcome, Rejection, State, VolumeRecord};

/// One change to the state, as operators and users see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The cluster got its ID and first administrator.
    Bootstrapped {
        cluster_id: String,
    },
    UserCreated {
        name: String,
    },
    /// A host registered for the first time, or registered again with other resources.
    HostRegistered {
        host: String,
    },
    /// A site image was registered.
    ImageRegistered {
        name: String,
        owner: String,
    },
    /// A signed entry was appended to the Marketplace.
    ImageEntryAppended {
        seq: u64,
        identifier: String,
        endorser: String,
    },
    EndorserRegistered {
        sha256: String,
    },
    NetworkDefined {
        name: String,
    },
    /// A host got a certificate: enrolled with a join token, or renewed.
    HostCertified {
        host: String,
        renewal: bool,
    },
    /// A host's certificates and join tokens were taken out of force.
    HostRevoked {
        host: String,
    },
    /// The leader judged a host's agent in touch again (`up`) or silent past the timeout.
    HostContact {
        host: String,
        up: bool,
    },
    /// An administrator put a host in maintenance (`reason` given or not) or back in service.
    HostMaintenance {
        host: String,
        maintenance: bool,
        reason: Option<String>,
    },
    /// An administrator fenced a host that is down (declared it dead).
    HostFenced {
        host: String,
    },
    /// An administrator removed a host (`force`: though it held instances or disks).
    HostRemoved {
        host: String,
        force: bool,
    },
    /// An image was pinned in (or unpinned from) a host's cache.
    ImagePinned {
        host: String,
        sha256: String,
        pinned: bool,
    },
    /// An instance entered `state` (its first event is its creation, Pending or Failed).
    InstanceState {
        id: u64,
        /// Its name (so a view that learns of it from the event can show it).
        name: String,
        owner: String,
        host: Option<String>,
        state: InstanceState,
        reason: Option<String>,
        at_ms: u64,
    },
    /// A volume was created, changed state, or was removed (`state` None).
    VolumeState {
        id: String,
        owner: String,
        host: String,
        state: Option<VolumeState>,
        reason: Option<String>,
    },
    /// A volume's attachment to an instance changed (`state` None: detached, it is free of it).
    VolumeAttachment {
        volume: String,
        owner: String,
        instance: u64,
        /// The instance's owner (a public disk may be attached to another user's instance).
        instance_owner: Option<String>,
        target: String,
        state: Option<AttachmentState>,
    },
    /// The Raft group's membership changed.
    MemberChanged {
        change: super::MemberChange,
    },
    /// The Raft leader changed (produced by the node, not by apply).
    LeaderChanged {
        leader: Option<u64>,
        term: u64,
    },
}

/// What one applied command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    pub events: Vec<Event>,
    /// Hosts whose desired state (instances, disks, exports, pinned images) may have changed.
    pub hosts: BTreeSet<String>,
    /// When the command was asked for, if it says (a [`Command::By`]): the same on every
    /// replica, unlike the moment each applies it.
    pub at_ms: Option<u64>,
}

/// The records a command may change, as they were before it applied.
pub(super) struct Before {
    instances: Vec<(u64, Option<InstanceRecord>)>,
    volumes: Vec<(String, Option<VolumeRecord>)>,
    hosts: BTreeSet<String>,
    /// The event of a command that changes neither instances nor volumes, if it applies.
    announce: Option<Announce>,
}

enum Announce {
    Event(Event),
    /// A Marketplace entry: its event names the sequence number apply gives it.
    Entry,
}

impl Before {
    pub(super) fn capture(state: &State, command: &Command) -> Self {
        let mut instances: Vec<u64> = Vec::new();
        let mut volumes: Vec<String> = Vec::new();
        let mut hosts = BTreeSet::new();
        match command {
            Command::CreateInstance { volumes: disks, .. } => {
                instances.push(state.next_instance_id.max(1));
                volumes.extend(disks.iter().map(|(id, _)| id.clone()));
            }
            Command::KillInstance { id, .. }
            | Command::PowerInstance { id, .. }
            | Command::ReportInstance { id, .. }
            | Command::ReplaceInstance { id, .. } => {
                instances.push(*id);
                volumes.extend(state.volumes_of_instance(*id));
            }
            // The host it leaves is told to destroy its copy.
            Command::EvacuateInstance { id, from, .. } => {
                instances.push(*id);
                hosts.insert(from.clone());
            }
            Command::CreateVolume { record, .. } => volumes.push(record.id.clone()),
            Command::ReportVolume { id, .. }
            | Command::UpdateVolume { id, .. }
            | Command::DeleteVolume { id, .. } => volumes.push(id.clone()),
            Command::AttachVolume {
                volume, instance, ..
            }
            | Command::DetachVolume {
                volume, instance, ..
            } => {
                volumes.push(volume.clone());
                instances.push(*instance);
            }
            Command::ReportExport { export, .. } => {
                volumes.extend(
                    state
                        .volumes
                        .values()
                        .filter(|v| {
                            v.attachments
                                .iter()
                                .any(|a| a.export.as_ref().is_some_and(|e| e.name == export.name))
                        })
                        .map(|v| v.id.clone()),
                );
            }
            Command::ReportDisk { disk, .. } => {
                volumes.push(disk.volume.clone());
                instances.push(disk.instance);
            }
            Command::Precache { host, .. } | Command::Unpin { host, .. } => {
                hosts.insert(host.clone());
            }
            Command::RegisterHost(host) => {
                hosts.insert(host.name.clone());
            }
            // A revoked host's long-poll ends now, to be refused on its next call.
            Command::RevokeHost { host } => {
                hosts.insert(host.clone());
            }
            // A host going down turns what it runs Unknown; a removed host loses everything
            // it held (and its long-poll ends, to be refused).
            Command::HostContact { host, .. } | Command::RemoveHost { host, .. } => {
                hosts.insert(host.clone());
                for instance in state
                    .instances
                    .values()
                    .filter(|i| i.host.as_deref() == Some(host.as_str()) && i.holds_lease())
                {
                    instances.push(instance.id);
                    volumes.extend(state.volumes_of_instance(instance.id));
                }
                if matches!(command, Command::RemoveHost { .. }) {
                    volumes.extend(
                        state
                            .volumes
                            .values()
                            .filter(|v| &v.host == host)
                            .map(|v| v.id.clone()),
                    );
                }
            }
            Command::Bootstrap { .. }
            | Command::CreateUser(_)
            | Command::DeleteUser { .. }
            | Command::UpdateUser { .. }
            | Command::DeleteImage { .. }
            | Command::RegisterImage(_)
            | Command::AppendEntry { .. }
            | Command::RegisterEndorser(_)
            | Command::DefineNetwork(_)
            | Command::HostMaintenance { .. }
            | Command::HostProfile { .. }
            | Command::FenceHost { .. }
            | Command::CreateGroup { .. }
            | Command::DeleteGroup { .. }
            | Command::CreateJoinToken { .. }
            | Command::IssueHostCertificate { .. }
            | Command::CreateApiToken { .. }
            | Command::RevokeApiToken { .. }
            | Command::MapCertificateSubject { .. } => {}
            // Never reached: capture is given the command out of its wrappers, and a host's
            // whole report is captured item by item.
            Command::By { .. }
            | Command::CreateInstanceWith { .. }
            | Command::HostReport { .. } => {}
        }
        instances.sort_unstable();
        instances.dedup();
        volumes.sort();
        volumes.dedup();
        Self {
            announce: announcement(command),
            instances: instances
                .into_iter()
                .map(|id| (id, state.instances.get(&id).cloned()))
                .collect(),
            volumes: volumes
                .into_iter()
                .map(|id| {
                    let record = state.volumes.get(&id).cloned();
                    (id, record)
                })
                .collect(),
            hosts,
        }
    }

    /// The events and affected hosts of `command`, now that it applied with `result`.
    pub(super) fn diff(self, state: &State, result: &Result<Outcome, Rejection>) -> Effects {
        let mut effects = Effects {
            hosts: self.hosts,
            ..Effects::default()
        };
        if result.is_err() {
            // A refused command changes nothing.
            return Effects::default();
        }
        if result == &Ok(Outcome::Unchanged) && self.instances.is_empty() && self.volumes.is_empty()
        {
            return Effects::default();
        }
        // The command's own event first: it is the cause of what follows (a host down, then
        // its instances Unknown).
        match (self.announce, result) {
            (Some(Announce::Event(event)), Ok(Outcome::Applied)) => effects.events.push(event),
            (Some(Announce::Entry), Ok(Outcome::EntryAppended(seq))) => {
                if let Some(stored) = state.marketplace.get(*seq) {
                    effects.events.push(Event::ImageEntryAppended {
                        seq: *seq,
                        identifier: stored.identifier().to_owned(),
                        endorser: stored.entry.endorser_email.clone(),
                    });
                }
            }
            _ => {}
        }
        for (id, before) in &self.instances {
            instance_events(before.as_ref(), state.instances.get(id), &mut effects);
        }
        for (id, before) in &self.volumes {
            volume_events(
                state,
                id,
                before.as_ref(),
                state.volumes.get(id),
                &mut effects,
            );
        }
        effects
    }
}

fn instance_events(
    before: Option<&InstanceRecord>,
    after: Option<&InstanceRecord>,
    effects: &mut Effects,
) {
    let Some(after) = after else { return };
    let seen = before.map_or(0, |b| b.history.len());
    for change in after.history.iter().skip(seen) {
        effects.events.push(Event::InstanceState {
            id: after.id,
            name: after.name.clone(),
            owner: after.owner.clone(),
            host: after.host.clone(),
            state: change.state,
            reason: change.reason.clone(),
            at_ms: change.at_ms,
        });
    }
    if seen < after.history.len() || before != Some(after) {
        effects.hosts.extend(after.host.clone());
        effects.hosts.extend(before.and_then(|b| b.host.clone()));
    }
}

fn volume_events(
    state: &State,
    id: &str,
    before: Option<&VolumeRecord>,
    after: Option<&VolumeRecord>,
    effects: &mut Effects,
) {
    if before == after {
        return;
    }
    let record = after.or(before).expect("one side exists when they differ");
    let (state_before, state_after) = (before.map(|v| v.state), after.map(|v| v.state));
    if state_before != state_after {
        effects.events.push(Event::VolumeState {
            id: id.to_owned(),
            owner: record.owner.clone(),
            host: record.host.clone(),
            state: state_after,
            reason: after.and_then(|v| v.reason.clone()),
        });
    }
    let attachments =
        |v: Option<&VolumeRecord>| v.map(|v| v.attachments.clone()).unwrap_or_default();
    let instance_owner = |id: u64| state.instances.get(&id).map(|i| i.owner.clone());
    let (old, new) = (attachments(before), attachments(after));
    for a in &new {
        let previous = old.iter().find(|o| o.instance == a.instance);
        if previous.map(|p| p.state) != Some(a.state) {
            effects.events.push(Event::VolumeAttachment {
                volume: id.to_owned(),
                owner: record.owner.clone(),
                instance: a.instance,
                instance_owner: instance_owner(a.instance),
                target: a.target.clone(),
                state: Some(a.state),
            });
        }
    }
    for o in old
        .iter()
        .filter(|o| !new.iter().any(|a| a.instance == o.instance))
    {
        effects.events.push(Event::VolumeAttachment {
            volume: id.to_owned(),
            owner: record.owner.clone(),
            instance: o.instance,
            instance_owner: instance_owner(o.instance),
            target: o.target.clone(),
            state: None,
        });
    }
    // The storage host (its pool and exports) and every host running an instance that uses
    // the disk, before or after.
    effects.hosts.insert(record.host.clone());
    for instance in old.iter().chain(&new).map(|a| a.instance) {
        if let Some(host) = state.instances.get(&instance).and_then(|i| i.host.clone()) {
            effects.hosts.insert(host);
        }
    }
}

/// The event of a command that changes neither instances nor volumes.
fn announcement(command: &Command) -> Option<Announce> {
    let event = match command {
        Command::Bootstrap { cluster_id, .. } => Event::Bootstrapped {
            cluster_id: cluster_id.clone(),
        },
        Command::CreateUser(user) => Event::UserCreated {
            name: user.name.clone(),
        },
        Command::RegisterHost(host) => Event::HostRegistered {
            host: host.name.clone(),
        },
        Command::RegisterImage(image) => Event::ImageRegistered {
            name: image.name.clone(),
            owner: image.owner.clone(),
        },
        Command::AppendEntry { .. } => return Some(Announce::Entry),
        Command::RegisterEndorser(record) => Event::EndorserRegistered {
            sha256: record.cert_sha256.clone(),
        },
        Command::DefineNetwork(record) => Event::NetworkDefined {
            name: record.name.clone(),
        },
        Command::Precache { host, spec } => Event::ImagePinned {
            host: host.clone(),
            sha256: spec.disk.sha256.clone(),
            pinned: true,
        },
        Command::Unpin { host, sha256 } => Event::ImagePinned {
            host: host.clone(),
            sha256: sha256.clone(),
            pinned: false,
        },
        Command::IssueHostCertificate { host, grant, .. } => Event::HostCertified {
            host: host.clone(),
            renewal: matches!(grant, super::CertificateGrant::Renewal(_)),
        },
        Command::RevokeHost { host } => Event::HostRevoked { host: host.clone() },
        Command::HostContact { host, up, .. } => Event::HostContact {
            host: host.clone(),
            up: *up,
        },
        Command::HostMaintenance { host, maintenance } => Event::HostMaintenance {
            host: host.clone(),
            maintenance: maintenance.is_some(),
            reason: maintenance.as_ref().and_then(|m| m.reason.clone()),
        },
        Command::RemoveHost { host, force, .. } => Event::HostRemoved {
            host: host.clone(),
            force: *force,
        },
        Command::FenceHost { host, .. } => Event::HostFenced { host: host.clone() },
        _ => return None,
    };
    Some(Announce::Event(event))
}
