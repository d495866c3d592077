//! The effects of applying commands: the typed events and the hosts whose desired state may
//! have changed, derived from what apply changed.

use std::collections::BTreeSet;

use stratus_common::agent::{ActualState, DiskReport, ReportedDisk, VolumeReport};
use stratus_common::api::InstanceState;
use stratus_common::volumes::{AttachmentState, VolumeState, VolumeType};

use super::tests::bootstrapped;
use super::*;

const V1: &str = "11111111-1111-4111-8111-111111111111";

fn hosts(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|h| h.to_string()).collect()
}

/// h1 stores volumes; h2 does not.
fn cloud() -> State {
    let mut s = bootstrapped();
    let mut storage = s.hosts["h1"].clone();
    storage.volume_pool_gib = Some(50);
    s.apply(Command::RegisterHost(storage)).unwrap();
    let mut other = s.hosts["h1"].clone();
    other.name = "h2".into();
    other.volume_pool_gib = None;
    s.apply(Command::RegisterHost(other)).unwrap();
    s
}

fn create_on(host: &str, at_ms: u64) -> Command {
    Command::CreateInstance {
        owner: "alice".into(),
        name: None,
        image: "appliance".into(),
        image_spec: bootstrapped().images["appliance"].spec(),
        instance_type: "t1.micro".into(),
        host: Some(host.into()),
        failure: None,
        at_ms,
        network: None,
        ssh_key: None,
        user_data: None,
        volumes: Vec::new(),
        idempotency_key: None,
    }
}

fn report(host: &str, id: u64, state: ActualState, at_ms: u64) -> Command {
    Command::ReportInstance {
        host: host.into(),
        id,
        state,
        reason: None,
        at_ms,
    }
}

fn instance_event(id: u64, host: &str, state: InstanceState, at_ms: u64) -> Event {
    Event::InstanceState {
        id,
        name: format!("vm-{id}"),
        owner: "alice".into(),
        host: Some(host.into()),
        state,
        reason: None,
        at_ms,
    }
}

#[test]
fn an_instance_life_is_one_event_per_state_and_wakes_only_its_host() {
    let mut s = cloud();
    let (result, effects) = s.apply_with_effects(create_on("h2", 10));
    assert_eq!(result, Ok(Outcome::InstanceCreated(1)));
    assert_eq!(
        effects.events,
        vec![instance_event(1, "h2", InstanceState::Pending, 10)]
    );
    assert_eq!(effects.hosts, hosts(&["h2"]));

    let steps = [
        (
            report("h2", 1, ActualState::Booting, 11),
            InstanceState::Booting,
            11,
        ),
        (
            report("h2", 1, ActualState::Running, 12),
            InstanceState::Running,
            12,
        ),
        (
            Command::KillInstance { id: 1, at_ms: 13 },
            InstanceState::Stopping,
            13,
        ),
        (
            report("h2", 1, ActualState::Gone, 14),
            InstanceState::Done,
            14,
        ),
    ];
    for (command, state, at_ms) in steps {
        let (result, effects) = s.apply_with_effects(command);
        assert_eq!(result, Ok(Outcome::Applied));
        assert_eq!(effects.events, vec![instance_event(1, "h2", state, at_ms)]);
        assert_eq!(effects.hosts, hosts(&["h2"]), "only the instance's host");
    }

    // A report repeating what is known, and a refused one, change nothing and wake no one.
    let (result, effects) = s.apply_with_effects(report("h2", 1, ActualState::Gone, 15));
    assert_eq!(
        (result, effects),
        (Ok(Outcome::Unchanged), Effects::default())
    );
    let (result, effects) = s.apply_with_effects(report("h1", 1, ActualState::Running, 16));
    assert!(result.is_err());
    assert_eq!(effects, Effects::default());
}

#[test]
fn a_failed_placement_is_created_failed_with_its_reason() {
    let mut s = cloud();
    let mut command = create_on("h1", 10);
    if let Command::CreateInstance { host, failure, .. } = &mut command {
        *host = None;
        *failure = Some("no host with 1 vCPU free".into());
    }
    let (_, effects) = s.apply_with_effects(command);
    assert_eq!(
        effects.events,
        vec![Event::InstanceState {
            id: 1,
            name: "vm-1".into(),
            owner: "alice".into(),
            host: None,
            state: InstanceState::Failed,
            reason: Some("no host with 1 vCPU free".into()),
            at_ms: 10,
        }]
    );
    assert!(effects.hosts.is_empty());
}

#[test]
fn a_volume_life_names_the_storage_host_and_the_instances_host() {
    let mut s = cloud();
    let record = VolumeRecord {
        id: V1.into(),
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
    };
    let quota = Quota {
        max_volumes: 3,
        max_gib: 10,
    };
    let volume_event = |state| Event::VolumeState {
        id: V1.into(),
        owner: "alice".into(),
        host: "h1".into(),
        state,
        reason: None,
    };
    let (_, effects) = s.apply_with_effects(Command::CreateVolume {
        idempotency_key: None,
        record: Box::new(record),
        quota,
    });
    assert_eq!(
        effects.events,
        vec![volume_event(Some(VolumeState::Creating))]
    );
    assert_eq!(effects.hosts, hosts(&["h1"]));
    let (_, effects) = s.apply_with_effects(Command::ReportVolume {
        host: "h1".into(),
        id: V1.into(),
        state: VolumeReport::Ready,
        reason: None,
    });
    assert_eq!(
        effects.events,
        vec![volume_event(Some(VolumeState::Available))]
    );

    s.apply(create_on("h2", 10)).unwrap();
    s.apply(report("h2", 1, ActualState::Running, 11)).unwrap();
    let attachment = |state| Event::VolumeAttachment {
        volume: V1.into(),
        owner: "alice".into(),
        instance: 1,
        instance_owner: Some("alice".into()),
        target: "vdb".into(),
        state,
    };
    let (_, effects) = s.apply_with_effects(Command::AttachVolume {
        volume: V1.into(),
        instance: 1,
        caller: "alice".into(),
        admin: false,
        export: "sl-export".into(),
        at_ms: 20,
    });
    assert_eq!(
        effects.events,
        vec![attachment(Some(AttachmentState::Attaching))]
    );
    assert_eq!(
        effects.hosts,
        hosts(&["h1", "h2"]),
        "the export's host and the guest's"
    );
    let disk = |state| Command::ReportDisk {
        host: "h2".into(),
        disk: ReportedDisk {
            instance: 1,
            volume: V1.into(),
            state,
            reason: None,
        },
        at_ms: 30,
    };
    let (_, effects) = s.apply_with_effects(disk(DiskReport::Attached));
    assert_eq!(
        effects.events,
        vec![attachment(Some(AttachmentState::Attached))]
    );
    let (_, effects) = s.apply_with_effects(Command::DetachVolume {
        volume: V1.into(),
        instance: 1,
        caller: "alice".into(),
        admin: false,
        force: false,
        stuck_after_ms: 60_000,
        at_ms: 40,
    });
    assert_eq!(
        effects.events,
        vec![attachment(Some(AttachmentState::Detaching))]
    );
    let (_, effects) = s.apply_with_effects(disk(DiskReport::Detached));
    assert_eq!(effects.events, vec![attachment(None)]);
    assert_eq!(effects.hosts, hosts(&["h1", "h2"]));

    let (_, effects) = s.apply_with_effects(Command::DeleteVolume {
        id: V1.into(),
        caller: "alice".into(),
        admin: false,
    });
    assert_eq!(
        effects.events,
        vec![volume_event(Some(VolumeState::Deleting))]
    );
}

#[test]
fn other_commands_announce_themselves_once() {
    let mut s = cloud();
    let host = s.hosts["h2"].clone();
    let (result, effects) = s.apply_with_effects(Command::RegisterHost(host.clone()));
    assert_eq!(
        (result, effects),
        (Ok(Outcome::Unchanged), Effects::default())
    );
    let mut bigger = host;
    bigger.vcpus += 1;
    let (_, effects) = s.apply_with_effects(Command::RegisterHost(bigger));
    assert_eq!(
        effects.events,
        vec![Event::HostRegistered { host: "h2".into() }]
    );
    assert_eq!(effects.hosts, hosts(&["h2"]));
    let mut user = s.users["admin"].clone();
    user.name = "bob".into();
    let (_, effects) = s.apply_with_effects(Command::CreateUser(user.clone()));
    assert_eq!(
        effects.events,
        vec![Event::UserCreated { name: "bob".into() }]
    );
    let (result, effects) = s.apply_with_effects(Command::CreateUser(user));
    assert!(result.is_err());
    assert!(effects.events.is_empty());
}
