//! Who changed what: a command someone asked for (a user by password, API token or
//! certificate, or a host) travels wrapped in [`super::Command::By`] with its actor and time,
//! and once it changed something the change is recorded under every object it concerns
//! (instance, volume, host, user, image, network). The API shows an object's changes beside
//! it. Each object keeps its latest [`MAX_CHANGES`] changes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Command, Outcome};

/// The most changes kept per object; older ones are dropped first.
pub const MAX_CHANGES: usize = 256;

/// One change to an object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Change {
    pub at_ms: u64,
    /// Who: `alice`, `alice (token ci)`, `alice (certificate)`, `host node-1`.
    pub by: String,
    /// What, in a few words: `create`, `stop`, `attach volume <uuid> as vdb`, ...
    pub action: String,
}

/// The changes of every object, by object key (`instance/5`, `volume/<uuid>`, `host/<name>`,
/// `user/<name>`, `image/<name>`, `network/<name>`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditLog {
    pub objects: BTreeMap<String, Vec<Change>>,
}

impl AuditLog {
    /// The changes of `object`, oldest first.
    pub fn of(&self, object: &str) -> &[Change] {
        self.objects.get(object).map_or(&[], Vec::as_slice)
    }

    fn record(&mut self, object: String, change: Change) {
        let changes = self.objects.entry(object).or_default();
        if changes.len() >= MAX_CHANGES {
            changes.remove(0);
        }
        changes.push(change);
    }

    /// Records `changes` (described before the command was applied) as made by `by` at
    /// `at_ms`, if the command did make them: it changed something, and a creation made the
    /// object expected (a creation repeated with its idempotency key answers an older one).
    pub(super) fn record_applied(
        &mut self,
        described: Described,
        outcome: &Outcome,
        by: &str,
        at_ms: u64,
    ) {
        let made = match (outcome, &described.creates) {
            (Outcome::Unchanged, _) => false,
            (Outcome::InstanceCreated(id), Creates::Instance(expected)) => id == expected,
            (Outcome::VolumeCreated(id), Creates::Volume(expected)) => id == expected,
            _ => true,
        };
        if !made {
            return;
        }
        for (object, action) in described.changes {
            self.record(
                object,
                Change {
                    at_ms,
                    by: by.to_owned(),
                    action,
                },
            );
        }
    }
}

/// What a command will change, told before it is applied (so the command itself need not be
/// kept, nor copied, past apply).
pub(super) struct Described {
    changes: Vec<(String, String)>,
    creates: Creates,
}

/// The object a creating command makes, as apply will number it.
enum Creates {
    Nothing,
    Instance(u64),
    Volume(String),
}

/// The key of an object of `kind` named `name`.
pub fn key(kind: &str, name: impl std::fmt::Display) -> String {
    format!("{kind}/{name}")
}

/// The objects `command` changes in `state` (before it is applied) and what it does to each.
pub(super) fn describe(state: &super::State, command: &Command) -> Described {
    let creates = match command.inner() {
        // Apply numbers a new instance with the next ID, as the effects expect too.
        Command::CreateInstance { .. } => Creates::Instance(state.next_instance_id.max(1)),
        Command::CreateVolume { record, .. } => Creates::Volume(record.id.clone()),
        _ => Creates::Nothing,
    };
    let changes = concerned(command, &creates);
    Described { changes, creates }
}

/// The objects a command changes and what it does to each.
fn concerned(command: &Command, creates: &Creates) -> Vec<(String, String)> {
    let instance = |id: u64| key("instance", id);
    let volume = |id: &str| key("volume", id);
    let one = |object: String, action: &str| vec![(object, action.to_owned())];
    match command {
        Command::CreateInstance { .. } => match creates {
            Creates::Instance(id) => one(instance(*id), "create"),
            _ => Vec::new(),
        },
        Command::KillInstance { id, .. } => one(instance(*id), "kill"),
        Command::PowerInstance { id, action, .. } => one(instance(*id), action.as_str()),
        Command::ReportInstance { id, state, .. } => {
            one(instance(*id), &format!("reported {}", state.as_str()))
        }
        Command::CreateVolume { record, .. } => one(volume(&record.id), "create"),
        Command::UpdateVolume { id, .. } => one(volume(id), "update"),
        Command::DeleteVolume { id, .. } => one(volume(id), "delete"),
        Command::ReportVolume { id, state, .. } => {
            one(volume(id), &format!("reported {}", state.as_str()))
        }
        Command::AttachVolume {
            volume: v,
            instance: i,
            ..
        } => vec![
            (volume(v), format!("attach to instance {i}")),
            (instance(*i), format!("attach volume {v}")),
        ],
        Command::DetachVolume {
            volume: v,
            instance: i,
            force,
            ..
        } => {
            let how = if *force { "force detach" } else { "detach" };
            vec![
                (volume(v), format!("{how} from instance {i}")),
                (instance(*i), format!("{how} volume {v}")),
            ]
        }
        Command::ReportDisk { disk, .. } => {
            let what = format!("reported disk {}", disk.state.as_str());
            vec![
                (
                    volume(&disk.volume),
                    format!("{what} on instance {}", disk.instance),
                ),
                (
                    instance(disk.instance),
                    format!("{what}: volume {}", disk.volume),
                ),
            ]
        }
        Command::CreateUser(user) => one(key("user", &user.name), "create"),
        Command::UpdateUser {
            name,
            password_hash,
            admin,
        } => {
            let mut what = Vec::new();
            if password_hash.is_some() {
                what.push("new password".to_owned());
            }
            if let Some(admin) = admin {
                what.push(format!("administrator: {admin}"));
            }
            one(key("user", name), &what.join(", "))
        }
        Command::DeleteUser { name } => one(key("user", name), "delete"),
        Command::RegisterImage(image) => one(key("image", &image.name), "register"),
        Command::DeleteImage { name } => one(key("image", name), "delete"),
        Command::DefineNetwork(network) => one(key("network", &network.name), "define"),
        Command::RegisterHost(host) => one(key("host", &host.name), "register"),
        Command::ReplaceInstance { id, from, to, .. } => one(
            instance(*id),
            &match to {
                Some(to) => format!("placed again: {from} down, on {to}"),
                None => format!("failed: {from} down, no other host"),
            },
        ),
        Command::HostContact { host, up, .. } => {
            one(key("host", host), if *up { "up" } else { "down" })
        }
        Command::HostMaintenance { host, maintenance } => one(
            key("host", host),
            &match maintenance {
                Some(m) => match &m.reason {
                    Some(reason) => format!("maintenance: {reason}"),
                    None => "maintenance".to_owned(),
                },
                None => "back in service".to_owned(),
            },
        ),
        Command::RemoveHost { host, force, .. } => one(
            key("host", host),
            if *force { "remove by force" } else { "remove" },
        ),
        Command::Precache { host, spec } => one(
            key("host", host),
            &format!("pin image {}", spec.disk.sha256),
        ),
        Command::Unpin { host, sha256 } => one(key("host", host), &format!("unpin image {sha256}")),
        Command::CreateJoinToken { token, .. } => one(key("host", &token.host), "join token"),
        Command::IssueHostCertificate {
            host,
            serial,
            grant,
            ..
        } => {
            let how = match grant {
                super::CertificateGrant::JoinToken(_) => "enrolled",
                super::CertificateGrant::Renewal(_) => "renewed",
            };
            one(key("host", host), &format!("{how}: certificate {serial}"))
        }
        Command::RevokeHost { host } => one(key("host", host), "revoke"),
        Command::CreateApiToken { token, .. } => one(
            key("user", &token.owner),
            &format!("API token {} ({})", token.id, token.name),
        ),
        Command::RevokeApiToken { id, caller, .. } => {
            one(key("user", caller), &format!("revoke API token {id}"))
        }
        Command::MapCertificateSubject { subject, user } => match user {
            Some(user) => one(key("user", user), &format!("certificate subject {subject}")),
            None => one(key("subject", subject), "unmapped"),
        },
        Command::By { command, .. } => concerned(command, creates),
        Command::CreateInstanceWith { create, .. } => concerned(create, creates),
        Command::FenceHost { host, .. } => one(key("host", host), "fence"),
        Command::EvacuateInstance { id, from, to, .. } => one(
            instance(*id),
            &format!("evacuated: {from} fenced, started again on {to}"),
        ),
        Command::HostProfile {
            host,
            compute,
            storage,
            labels,
        } => {
            let mut what = Vec::new();
            if let (Some(compute), Some(storage)) = (compute, storage) {
                let roles: Vec<&str> = [(*compute, "compute"), (*storage, "storage")]
                    .into_iter()
                    .filter_map(|(has, role)| has.then_some(role))
                    .collect();
                what.push(format!("roles: {}", roles.join(", ")));
            }
            if let Some(labels) = labels {
                let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
                what.push(format!("labels: {}", labels.join(", ")));
            }
            one(key("host", host), &what.join("; "))
        }
        Command::CreateGroup {
            owner,
            name,
            policy,
            ..
        } => one(key("user", owner), &format!("create {policy} group {name}")),
        Command::DeleteGroup { owner, name } => {
            one(key("user", owner), &format!("delete group {name}"))
        }
        Command::Bootstrap { .. }
        | Command::AppendEntry { .. }
        | Command::RegisterEndorser(_)
        | Command::ReportExport { .. } => Vec::new(),
        // Recorded item by item, each as its single report.
        Command::HostReport { .. } => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use stratus_common::agent::ActualState;

    use super::super::tests::{bootstrapped, creation};
    use super::super::{Command, PowerAction, State};
    use super::*;

    fn by(actor: &str, at_ms: u64, command: Command) -> Command {
        Command::By {
            actor: actor.into(),
            at_ms,
            command: Box::new(command),
        }
    }

    fn actions(s: &State, object: &str) -> Vec<(String, String)> {
        s.audit
            .of(object)
            .iter()
            .map(|c| (c.by.clone(), c.action.clone()))
            .collect()
    }

    #[test]
    fn every_change_records_who_made_it_on_the_objects_it_changed() {
        let mut s = bootstrapped();
        let create = creation(&s, "t1.micro", Some("h1"));
        let Outcome::InstanceCreated(id) = s.apply(by("alice (token ci)", 10, create)).unwrap()
        else {
            panic!("not created");
        };
        let report = |state| Command::ReportInstance {
            host: "h1".into(),
            id,
            state,
            reason: None,
            at_ms: 11,
        };
        s.apply(by("host h1", 11, report(ActualState::Running)))
            .unwrap();
        // A report that changes nothing is not a change.
        assert_eq!(
            s.apply(by("host h1", 12, report(ActualState::Running))),
            Ok(Outcome::Unchanged)
        );
        s.apply(by(
            "alice (certificate)",
            13,
            Command::PowerInstance {
                id,
                action: PowerAction::Stop,
                at_ms: 13,
            },
        ))
        .unwrap();
        // Refused: recorded nowhere.
        assert!(s
            .apply(by(
                "alice",
                14,
                Command::PowerInstance {
                    id,
                    action: PowerAction::Reboot,
                    at_ms: 14,
                },
            ))
            .is_err());
        assert_eq!(
            actions(&s, &key("instance", id)),
            [
                ("alice (token ci)".to_owned(), "create".to_owned()),
                ("host h1".to_owned(), "reported running".to_owned()),
                ("alice (certificate)".to_owned(), "stop".to_owned()),
            ]
        );
        assert_eq!(s.audit.of(&key("instance", id))[2].at_ms, 13);
        // The same replicated record, whatever node applied it.
        let again: State = {
            let mut t = bootstrapped();
            t.apply(by(
                "alice (token ci)",
                10,
                creation(&t, "t1.micro", Some("h1")),
            ))
            .unwrap();
            t
        };
        assert_eq!(again.audit.of(&key("instance", id)).len(), 1);
    }

    #[test]
    fn a_creation_repeated_with_its_idempotency_key_is_not_a_second_change() {
        let mut s = bootstrapped();
        let mut create = creation(&s, "t1.micro", Some("h1"));
        if let Command::CreateInstance {
            idempotency_key, ..
        } = &mut create
        {
            *idempotency_key = Some("key-1".into());
        }
        let first = s.apply(by("alice", 10, create.clone())).unwrap();
        let again = s.apply(by("alice", 11, create)).unwrap();
        assert_eq!(first, again);
        let Outcome::InstanceCreated(id) = first else {
            panic!("not created");
        };
        assert_eq!(actions(&s, &key("instance", id)).len(), 1);
        assert!(s.audit.of(&key("instance", id + 1)).is_empty());
    }

    #[test]
    fn an_object_keeps_its_latest_changes_only() {
        let mut log = AuditLog::default();
        for n in 0..(MAX_CHANGES as u64 + 10) {
            log.record(
                key("host", "h1"),
                Change {
                    at_ms: n,
                    by: "admin".into(),
                    action: "pin image".into(),
                },
            );
        }
        let kept = log.of("host/h1");
        assert_eq!(kept.len(), MAX_CHANGES);
        assert_eq!(kept[0].at_ms, 10);
    }
}
