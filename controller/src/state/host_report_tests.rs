//! A host's whole report as one command: it applies as its single reports applied one after
//! the other, with their events and audit records, and says what each item came to.

use stratus_common::agent::{
    ActualState, DiskReport, ReportedDisk, ReportedExport, ReportedInstance, ReportedVolume,
    VolumeReport,
};
use stratus_common::api::InstanceState;
use stratus_common::volumes::{VolumeState, VolumeType};

use super::tests::{bootstrapped, creation};
use super::*;

const VOLUME: &str = "11111111-1111-4111-8111-111111111111";
const UNKNOWN_VOLUME: &str = "99999999-9999-4999-8999-999999999999";

/// h1 (storing volumes) with instances 1 and 2, h2 with instance 3, a volume of h1 being made.
fn cloud() -> State {
    let mut s = bootstrapped();
    let mut h1 = s.hosts["h1"].clone();
    h1.volume_pool_gib = Some(50);
    s.apply(Command::RegisterHost(h1)).unwrap();
    let mut h2 = s.hosts["h1"].clone();
    h2.name = "h2".into();
    h2.volume_pool_gib = None;
    s.apply(Command::RegisterHost(h2)).unwrap();
    for host in ["h1", "h1", "h2"] {
        let create = creation(&s, "t1.micro", Some(host));
        s.apply(create).unwrap();
    }
    s.apply(Command::CreateVolume {
        record: Box::new(VolumeRecord {
            id: VOLUME.into(),
            owner: "alice".into(),
            tag: "t".into(),
            size_gib: 1,
            public: false,
            volume_type: VolumeType::DataRw,
            host: "h1".into(),
            state: VolumeState::Creating,
            reason: None,
            created_ms: 5,
            attachments: Vec::new(),
        }),
        quota: Quota {
            max_volumes: 3,
            max_gib: 10,
        },
        idempotency_key: None,
    })
    .unwrap();
    s
}

fn instance(id: u64, state: ActualState, reason: Option<&str>) -> ReportedInstance {
    ReportedInstance {
        id,
        state,
        reason: reason.map(Into::into),
    }
}

/// h1's report: two of its instances change, one it does not hold (on h2), one unknown; its
/// volume is ready, another volume is unknown, an export it serves, a disk of h2's instance.
fn report(at_ms: u64) -> Command {
    Command::HostReport {
        host: "h1".into(),
        instances: vec![
            instance(1, ActualState::Running, None),
            instance(3, ActualState::Running, None),
            instance(2, ActualState::Failed, Some("qemu exited")),
            instance(99, ActualState::Gone, None),
        ],
        volumes: vec![
            ReportedVolume {
                id: VOLUME.into(),
                state: VolumeReport::Ready,
                reason: None,
            },
            ReportedVolume {
                id: UNKNOWN_VOLUME.into(),
                state: VolumeReport::Ready,
                reason: None,
            },
        ],
        exports: vec![ReportedExport {
            name: "vol-1".into(),
            host: "192.0.2.10".into(),
            port: 10809,
        }],
        disks: vec![ReportedDisk {
            instance: 3,
            volume: UNKNOWN_VOLUME.into(),
            state: DiskReport::Attached,
            reason: None,
        }],
        at_ms,
    }
}

/// The single reports `report` stands for, in order, each wrapped in `by` if given.
fn singles(report: Command, by: Option<(&str, u64)>) -> Vec<Command> {
    let Command::HostReport {
        host,
        instances,
        volumes,
        exports,
        disks,
        at_ms,
    } = report
    else {
        panic!("not a report");
    };
    let mut commands = Vec::new();
    for item in instances {
        commands.push(Command::ReportInstance {
            host: host.clone(),
            id: item.id,
            state: item.state,
            reason: item.reason,
            at_ms,
        });
    }
    for item in volumes {
        commands.push(Command::ReportVolume {
            host: host.clone(),
            id: item.id,
            state: item.state,
            reason: item.reason,
        });
    }
    for export in exports {
        commands.push(Command::ReportExport {
            host: host.clone(),
            export,
        });
    }
    for disk in disks {
        commands.push(Command::ReportDisk {
            host: host.clone(),
            disk,
            at_ms,
        });
    }
    commands
        .into_iter()
        .map(|command| match by {
            Some((actor, at_ms)) => Command::By {
                actor: actor.into(),
                at_ms,
                command: Box::new(command),
            },
            None => command,
        })
        .collect()
}

fn by_host(command: Command, at_ms: u64) -> Command {
    Command::By {
        actor: "host h1".into(),
        at_ms,
        command: Box::new(command),
    }
}

#[test]
fn a_whole_report_applies_as_its_single_reports_with_their_events_and_audit_records() {
    let mut batched = cloud();
    let mut single = batched.clone();
    let (outcome, effects) = batched.apply_with_effects(by_host(report(50), 50));

    let mut results = Vec::new();
    let mut expected = Effects::default();
    for command in singles(report(50), Some(("host h1", 50))) {
        let (result, made) = single.apply_with_effects(command);
        results.push(result);
        expected.events.extend(made.events);
        expected.hosts.extend(made.hosts);
        expected.at_ms = expected.at_ms.or(made.at_ms);
    }
    assert_eq!(batched, single, "the same state, audit log included");
    assert_eq!(effects, expected, "the same events and woken hosts");
    assert_eq!(effects.at_ms, Some(50));

    let Ok(Outcome::HostReported(outcomes)) = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(
        outcomes.instances,
        [
            Ok(Outcome::Applied),
            Err(Rejection::WrongHost {
                id: 3,
                host: "h1".into()
            }),
            Ok(Outcome::Applied),
            Err(Rejection::UnknownInstance(99)),
        ]
    );
    let storage: Vec<_> = results.split_off(outcomes.instances.len());
    assert_eq!(outcomes.instances, results);
    assert_eq!(outcomes.storage, storage);
    assert_eq!(outcomes.storage[0], Ok(Outcome::Applied));
    assert!(matches!(outcomes.storage[1], Err(Rejection::Volume(_))));
    assert!(matches!(outcomes.storage[3], Err(Rejection::Volume(_))));

    // What the accepted items did, and who is on record for it.
    assert_eq!(batched.instances[&1].state, InstanceState::Running);
    assert_eq!(batched.instances[&2].state, InstanceState::Failed);
    assert_eq!(batched.instances[&3].state, InstanceState::Pending);
    assert_eq!(batched.volumes[VOLUME].state, VolumeState::Available);
    let changes = batched.audit.of("instance/1");
    let last = changes.last().unwrap();
    assert_eq!(
        (last.by.as_str(), last.action.as_str(), last.at_ms),
        ("host h1", "reported running", 50)
    );
    assert!(batched
        .audit
        .of("instance/3")
        .iter()
        .all(|c| c.by != "host h1"));
    assert!(effects.events.iter().any(|e| matches!(
        e,
        Event::InstanceState {
            id: 2,
            state: InstanceState::Failed,
            ..
        }
    )));
    assert!(effects.hosts.contains("h1") && !effects.hosts.contains("h2"));
}

#[test]
fn a_report_without_an_actor_or_repeating_the_known_states_applies_alike() {
    let mut batched = cloud();
    let mut single = batched.clone();
    batched.apply(report(50)).unwrap();
    for command in singles(report(50), None) {
        let _ = single.apply(command);
    }
    assert_eq!(batched, single);
    // Said again, it changes nothing and says so item by item.
    let before = batched.clone();
    let (outcome, effects) = batched.apply_with_effects(by_host(report(60), 60));
    assert_eq!(batched.instances, before.instances);
    assert_eq!(effects, Effects::default());
    let Ok(Outcome::HostReported(outcomes)) = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(outcomes.instances[0], Ok(Outcome::Unchanged));
    // Through the stored format and back, it is the same command.
    let command = by_host(report(60), 60);
    let back: Command = crate::codec::decode(&crate::codec::encode(&command)).unwrap();
    assert_eq!(back, command);
}
