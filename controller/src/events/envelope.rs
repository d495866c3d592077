//! How a state event reads in the stream: its type name, the object it is about, owner, host
//! and details, and who may receive it.

use serde_json::{json, Map, Value};
use stratus_common::api::InstanceState;
use stratus_common::events::{EventEnvelope, EventObject, EVENTS_LOST};
use stratus_common::volumes::{AttachmentState, VolumeState};

use crate::state::{Event, MemberChange};
use crate::users::Caller;

/// Who may receive an event (administrators receive every event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    Admins,
    /// Every user: what every user may list anyway (site images, Marketplace entries,
    /// endorsers, networks).
    Everyone,
    /// These users: an object's owner (and, for a disk's attachment, the instance's owner).
    Users(Vec<String>),
}

/// An event as published: its envelope and its audience.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub envelope: EventEnvelope,
    pub audience: Audience,
}

impl Published {
    pub fn visible_to(&self, caller: &Caller) -> bool {
        caller.admin
            || match &self.audience {
                Audience::Admins => false,
                Audience::Everyone => true,
                Audience::Users(users) => users.contains(&caller.name),
            }
    }
}

/// The notice that events up to `horizon` (a sequence number) cannot be told: everyone gets
/// it, and it says nothing about any object.
pub fn lost(horizon: u64, now_ms: u64) -> EventEnvelope {
    let mut details = Map::new();
    details.insert("through_seq".into(), json!(horizon));
    EventEnvelope {
        seq: horizon,
        time: stratus_common::time::rfc3339_ms(now_ms),
        kind: EVENTS_LOST.into(),
        object: EventObject {
            kind: "cluster".into(),
            id: String::new(),
        },
        owner: None,
        host: None,
        details,
    }
}

/// The envelope of `event`, numbered `seq`, at `now_ms` unless the event says when it
/// happened.
pub fn publish(seq: u64, now_ms: u64, event: &Event) -> Published {
    let mut at_ms = now_ms;
    let mut owner = None;
    let mut host = None;
    let mut details = Map::new();
    let mut detail = |key: &str, value: Value| {
        if !value.is_null() {
            details.insert(key.to_owned(), value);
        }
    };
    let (kind, object, audience): (String, (&str, String), Audience) = match event {
        Event::Bootstrapped { cluster_id } => (
            "cluster-bootstrapped".into(),
            ("cluster", cluster_id.clone()),
            Audience::Admins,
        ),
        Event::UserCreated { name } => (
            "user-created".into(),
            ("user", name.clone()),
            Audience::Admins,
        ),
        Event::HostRegistered { host: name } => {
            host = Some(name.clone());
            (
                "host-registered".into(),
                ("host", name.clone()),
                Audience::Admins,
            )
        }
        Event::HostCertified {
            host: name,
            renewal,
        } => {
            host = Some(name.clone());
            let kind = if *renewal {
                "host-certificate-renewed"
            } else {
                "host-enrolled"
            };
            (kind.into(), ("host", name.clone()), Audience::Admins)
        }
        Event::HostFenced { host: name } => {
            host = Some(name.clone());
            (
                "host-fenced".into(),
                ("host", name.clone()),
                Audience::Admins,
            )
        }
        Event::HostRevoked { host: name } => {
            host = Some(name.clone());
            (
                "host-revoked".into(),
                ("host", name.clone()),
                Audience::Admins,
            )
        }
        Event::HostContact { host: name, up } => {
            host = Some(name.clone());
            let kind = if *up { "host-up" } else { "host-down" };
            (kind.into(), ("host", name.clone()), Audience::Admins)
        }
        Event::HostMaintenance {
            host: name,
            maintenance,
            reason,
        } => {
            host = Some(name.clone());
            detail("reason", json!(reason));
            let kind = if *maintenance {
                "host-maintenance"
            } else {
                "host-in-service"
            };
            (kind.into(), ("host", name.clone()), Audience::Admins)
        }
        Event::HostRemoved { host: name, force } => {
            host = Some(name.clone());
            detail("force", json!(force));
            (
                "host-removed".into(),
                ("host", name.clone()),
                Audience::Admins,
            )
        }
        Event::ImagePinned {
            host: name,
            sha256,
            pinned,
        } => {
            host = Some(name.clone());
            let kind = if *pinned {
                "image-pinned"
            } else {
                "image-unpinned"
            };
            (kind.into(), ("artifact", sha256.clone()), Audience::Admins)
        }
        Event::ImageRegistered { name, owner: by } => {
            owner = Some(by.clone());
            (
                "image-registered".into(),
                ("image", name.clone()),
                Audience::Everyone,
            )
        }
        Event::ImageEntryAppended {
            seq: entry,
            identifier,
            endorser,
        } => {
            detail("entry_seq", json!(entry));
            detail("endorser", json!(endorser));
            (
                "image-entry-appended".into(),
                ("image", identifier.clone()),
                Audience::Everyone,
            )
        }
        Event::EndorserRegistered { sha256 } => (
            "endorser-registered".into(),
            ("endorser", sha256.clone()),
            Audience::Everyone,
        ),
        Event::NetworkDefined { name } => (
            "network-defined".into(),
            ("network", name.clone()),
            Audience::Everyone,
        ),
        Event::InstanceState {
            id,
            name,
            owner: by,
            host: on,
            state,
            reason,
            at_ms: when,
        } => {
            at_ms = *when;
            owner = Some(by.clone());
            host = on.clone();
            detail("name", json!(name));
            detail("state", json!(state.as_str()));
            detail("reason", json!(reason));
            let kind = match state {
                // An instance is Pending when it was just made (no reason), or placed again
                // because its host went down before it started (the reason says so).
                InstanceState::Pending if reason.is_none() => "instance-created".to_owned(),
                InstanceState::Pending => "instance-rescheduled".to_owned(),
                other => format!("instance-{}", kebab(other.as_str())),
            };
            (
                kind,
                ("instance", id.to_string()),
                Audience::Users(vec![by.clone()]),
            )
        }
        Event::VolumeState {
            id,
            owner: by,
            host: on,
            state,
            reason,
        } => {
            owner = Some(by.clone());
            host = Some(on.clone());
            detail("reason", json!(reason));
            let kind = match state {
                Some(VolumeState::Creating) => "volume-created",
                Some(VolumeState::Available) => "volume-available",
                Some(VolumeState::Failed) => "volume-failed",
                Some(VolumeState::Deleting) => "volume-deleting",
                None => "volume-deleted",
            };
            (
                kind.into(),
                ("volume", id.clone()),
                Audience::Users(vec![by.clone()]),
            )
        }
        Event::VolumeAttachment {
            volume,
            owner: by,
            instance,
            instance_owner,
            target,
            state,
        } => {
            owner = Some(by.clone());
            detail("instance", json!(instance));
            detail("target", json!(target));
            let kind = match state {
                Some(AttachmentState::Attaching) => "volume-attaching",
                Some(AttachmentState::Attached) => "volume-attached",
                Some(AttachmentState::Detaching) => "volume-detaching",
                Some(AttachmentState::Stuck) => "volume-stuck",
                None => "volume-detached",
            };
            let mut users = vec![by.clone()];
            users.extend(instance_owner.iter().filter(|o| *o != by).cloned());
            (
                kind.into(),
                ("volume", volume.clone()),
                Audience::Users(users),
            )
        }
        Event::MemberChanged { change } => {
            let (kind, id) = match change {
                MemberChange::AddLearner { id, address, .. } => {
                    detail("address", json!(address));
                    ("member-added", id)
                }
                MemberChange::Promote { id } => ("member-promoted", id),
                MemberChange::Remove { id } => ("member-removed", id),
            };
            (kind.into(), ("member", id.to_string()), Audience::Admins)
        }
        Event::LeaderChanged { leader, term } => {
            detail("leader", json!(leader));
            detail("term", json!(term));
            (
                "leader-changed".into(),
                ("cluster", String::new()),
                Audience::Admins,
            )
        }
    };
    Published {
        envelope: EventEnvelope {
            seq,
            time: stratus_common::time::rfc3339_ms(at_ms),
            kind,
            object: EventObject {
                kind: object.0.into(),
                id: object.1,
            },
            owner,
            host,
            details,
        },
        audience,
    }
}

/// `PoweringOff` → `powering-off`.
fn kebab(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::Via;

    fn caller(name: &str, admin: bool) -> Caller {
        Caller {
            name: name.into(),
            admin,
            seen: 0,
            via: Via::default(),
        }
    }

    /// Every kind of event, in each of its states: what a client must be able to listen to.
    fn every_event() -> Vec<Event> {
        use stratus_common::volumes::{AttachmentState, VolumeState};
        let host = || "h1".to_owned();
        let mut events = vec![
            Event::Bootstrapped {
                cluster_id: "c".into(),
            },
            Event::UserCreated { name: "u".into() },
            Event::HostRegistered { host: host() },
            Event::HostRevoked { host: host() },
            Event::EndorserRegistered {
                sha256: "ab".into(),
            },
            Event::NetworkDefined { name: "n".into() },
            Event::ImageRegistered {
                name: "i".into(),
                owner: "u".into(),
            },
            Event::ImageEntryAppended {
                seq: 1,
                identifier: "x".into(),
                endorser: "e@x".into(),
            },
            Event::LeaderChanged {
                leader: Some(1),
                term: 2,
            },
        ];
        for flag in [false, true] {
            events.push(Event::HostCertified {
                host: host(),
                renewal: flag,
            });
            events.push(Event::HostContact {
                host: host(),
                up: flag,
            });
            events.push(Event::HostFenced { host: host() });
            events.push(Event::HostMaintenance {
                host: host(),
                maintenance: flag,
                reason: None,
            });
            events.push(Event::HostRemoved {
                host: host(),
                force: flag,
            });
            events.push(Event::ImagePinned {
                host: host(),
                sha256: "ab".into(),
                pinned: flag,
            });
        }
        for state in InstanceState::ALL {
            events.push(Event::InstanceState {
                id: 1,
                name: "vm-1".into(),
                owner: "u".into(),
                host: Some(host()),
                state,
                reason: None,
                at_ms: 1,
            });
        }
        events.push(Event::InstanceState {
            id: 1,
            name: "vm-1".into(),
            owner: "u".into(),
            host: Some(host()),
            state: InstanceState::Pending,
            reason: Some("its host h0 went down before it started: placed again on h1".into()),
            at_ms: 1,
        });
        for state in [
            Some(VolumeState::Creating),
            Some(VolumeState::Available),
            Some(VolumeState::Failed),
            Some(VolumeState::Deleting),
            None,
        ] {
            events.push(Event::VolumeState {
                id: "v".into(),
                owner: "u".into(),
                host: host(),
                state,
                reason: None,
            });
        }
        for state in [
            Some(AttachmentState::Attaching),
            Some(AttachmentState::Attached),
            Some(AttachmentState::Detaching),
            Some(AttachmentState::Stuck),
            None,
        ] {
            events.push(Event::VolumeAttachment {
                volume: "v".into(),
                owner: "u".into(),
                instance: 1,
                instance_owner: None,
                target: "vdb".into(),
                state,
            });
        }
        for change in [
            MemberChange::AddLearner {
                id: 2,
                address: "a".into(),
                api_address: "b".into(),
                incarnation: "i".into(),
            },
            MemberChange::Promote { id: 2 },
            MemberChange::Remove { id: 2 },
        ] {
            events.push(Event::MemberChanged { change });
        }
        events
    }

    /// The list clients (the dashboard) listen to names every type the stream sends, and
    /// nothing else.
    #[test]
    fn every_event_type_is_in_the_list_clients_listen_to() {
        use std::collections::BTreeSet;
        use stratus_common::events::TYPES;
        let mut sent: BTreeSet<String> = every_event()
            .iter()
            .map(|e| publish(1, 1, e).envelope.kind)
            .collect();
        sent.insert(lost(1, 1).kind);
        let listed: BTreeSet<String> = TYPES.iter().map(|t| (*t).to_owned()).collect();
        assert_eq!(sent, listed);
        assert_eq!(listed.len(), TYPES.len(), "listed once each");
    }

    #[test]
    fn instance_events_name_their_state_and_reach_their_owner_only() {
        let created = publish(
            7_0000,
            1,
            &Event::InstanceState {
                id: 5,
                name: "web".into(),
                owner: "alice".into(),
                host: None,
                state: InstanceState::Pending,
                reason: None,
                at_ms: 1_765_000_000_000,
            },
        );
        assert_eq!(created.envelope.kind, "instance-created");
        assert_eq!(created.envelope.details["name"], "web");
        assert_eq!(created.envelope.object.key(), "instance/5");
        assert_eq!(created.envelope.time, "2025-12-06T05:46:40.000Z");
        assert!(created.visible_to(&caller("alice", false)));
        assert!(!created.visible_to(&caller("bob", false)));
        assert!(created.visible_to(&caller("root", true)));
        let failed = publish(
            7_0001,
            1,
            &Event::InstanceState {
                id: 5,
                name: "web".into(),
                owner: "alice".into(),
                host: Some("node-1".into()),
                state: InstanceState::Failed,
                reason: Some("no host fits".into()),
                at_ms: 2,
            },
        );
        assert_eq!(failed.envelope.kind, "instance-failed");
        assert_eq!(kebab("PoweringOff"), "powering-off");
        assert_eq!(failed.envelope.host.as_deref(), Some("node-1"));
        assert_eq!(failed.envelope.details["reason"], "no host fits");
        let json = serde_json::to_value(&failed.envelope).unwrap();
        assert_eq!(json["type"], "instance-failed");
        assert_eq!(json["seq"], 70001);
    }

    #[test]
    fn an_attachment_reaches_the_disk_owner_and_the_instance_owner() {
        let event = publish(
            1,
            1,
            &Event::VolumeAttachment {
                volume: "v".into(),
                owner: "bob".into(),
                instance: 3,
                instance_owner: Some("alice".into()),
                target: "vdb".into(),
                state: Some(AttachmentState::Attached),
            },
        );
        assert_eq!(event.envelope.kind, "volume-attached");
        assert_eq!(event.envelope.details["instance"], 3);
        for (name, sees) in [("bob", true), ("alice", true), ("carol", false)] {
            assert_eq!(event.visible_to(&caller(name, false)), sees, "{name}");
        }
    }

    #[test]
    fn infrastructure_events_are_for_administrators_and_catalogues_for_everyone() {
        let leader = publish(
            1,
            1,
            &Event::LeaderChanged {
                leader: Some(2),
                term: 3,
            },
        );
        assert_eq!(leader.envelope.kind, "leader-changed");
        assert!(!leader.visible_to(&caller("alice", false)));
        assert!(leader.visible_to(&caller("admin", true)));
        let image = publish(
            1,
            1,
            &Event::ImageRegistered {
                name: "debian".into(),
                owner: "admin".into(),
            },
        );
        assert!(image.visible_to(&caller("alice", false)));
    }
}
