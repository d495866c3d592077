use stratus_common::agent::{ActualState, Desire};
use stratus_common::api::{DiskFormat, DomainType, InstanceState};

use super::*;

fn admin() -> UserRecord {
    UserRecord {
        name: "admin".into(),
        password_hash: "$argon2id$x".into(),
        admin: true,
        created_ms: 1,
    }
}

fn bootstrapped() -> State {
    let mut s = State::default();
    s.apply(Command::Bootstrap {
        cluster_id: "c0ffee00-1111".into(),
        admin: admin(),
        types: standard_types(),
        cpu_allocation_ratio_percent: 100,
    })
    .unwrap();
    s.apply(Command::RegisterHost(HostRecord {
        name: "h1".into(),
        vcpus: 2,
        memory_mib: 1024,
        disk_gib: 10,
        domain_type: DomainType::Qemu,
        arch: "x86_64".into(),
        hypervisor: "QEMU".into(),
        registered_ms: 2,
    }))
    .unwrap();
    s.apply(Command::RegisterImage(ImageRecord {
        name: "appliance".into(),
        format: DiskFormat::Qcow2,
        disk: stratus_common::api::Artifact {
            locations: vec!["file:///images/a.qcow2".into()],
            sha256: "ab".repeat(32),
            size: None,
            compression: Default::default(),
        },
        kernel: None,
        initrd: None,
        cmdline: None,
        owner: "admin".into(),
        created_ms: 3,
    }))
    .unwrap();
    s
}

fn create(s: &mut State, ty: &str, host: Option<&str>) -> Result<Outcome, Rejection> {
    s.apply(Command::CreateInstance {
        owner: "alice".into(),
        name: None,
        image: "appliance".into(),
        image_spec: s.images["appliance"].spec(),
        instance_type: ty.into(),
        host: host.map(Into::into),
        failure: host
            .is_none()
            .then(|| "no host with 4096 MiB free".to_owned()),
        at_ms: 10,
    })
}

fn report(s: &mut State, id: u64, state: ActualState) -> Result<Outcome, Rejection> {
    s.apply(Command::ReportInstance {
        host: "h1".into(),
        id,
        state,
        reason: None,
        at_ms: 20,
    })
}

#[test]
fn bootstrap_happens_once() {
    let mut s = bootstrapped();
    let again = s.apply(Command::Bootstrap {
        cluster_id: "other".into(),
        admin: admin(),
        types: vec![],
        cpu_allocation_ratio_percent: 100,
    });
    assert_eq!(again, Err(Rejection::AlreadyBootstrapped));
    assert_eq!(s.cluster_id, "c0ffee00-1111");
}

#[test]
fn instance_runs_through_its_lifecycle() {
    let mut s = bootstrapped();
    assert_eq!(
        create(&mut s, "m1.small", Some("h1")),
        Ok(Outcome::InstanceCreated(1))
    );
    assert_eq!(s.instances[&1].name, "vm-1");
    assert_eq!(s.desired_for_host("h1")[0].desire, Desire::Run);
    // The host is told the image as it was resolved at creation.
    assert_eq!(
        s.desired_for_host("h1")[0].image,
        s.images["appliance"].spec()
    );
    report(&mut s, 1, ActualState::Booting).unwrap();
    report(&mut s, 1, ActualState::Running).unwrap();
    assert_eq!(
        report(&mut s, 1, ActualState::Running),
        Ok(Outcome::Unchanged)
    );
    s.apply(Command::KillInstance { id: 1, at_ms: 30 }).unwrap();
    assert_eq!(s.instances[&1].state, InstanceState::Stopping);
    assert_eq!(s.desired_for_host("h1")[0].desire, Desire::Destroy);
    report(&mut s, 1, ActualState::Gone).unwrap();
    let states: Vec<_> = s.instances[&1].history.iter().map(|t| t.state).collect();
    use InstanceState::*;
    assert_eq!(states, vec![Pending, Booting, Running, Stopping, Done]);
    assert!(s.desired_for_host("h1").is_empty());
    assert_eq!(
        s.apply(Command::KillInstance { id: 1, at_ms: 40 }),
        Err(Rejection::AlreadyDone(1))
    );
}

#[test]
fn placement_failure_is_a_failed_instance_with_its_reason() {
    let mut s = bootstrapped();
    assert_eq!(
        create(&mut s, "c1.xlarge", None),
        Ok(Outcome::InstanceCreated(1))
    );
    let i = &s.instances[&1];
    assert_eq!(i.state, InstanceState::Failed);
    assert_eq!(i.reason.as_deref(), Some("no host with 4096 MiB free"));
    assert!(s.desired_for_host("h1").is_empty());
    // Killing it just marks it Done: nothing is on any host.
    s.apply(Command::KillInstance { id: 1, at_ms: 11 }).unwrap();
    assert_eq!(s.instances[&1].state, InstanceState::Done);
}

#[test]
fn apply_rechecks_capacity_so_two_racing_placements_cannot_overbook() {
    let mut s = bootstrapped();
    // h1 has 1024 MiB: two m1.large (1024 MiB each) were both placed against the same view.
    assert!(create(&mut s, "m1.large", Some("h1")).is_ok());
    assert_eq!(
        create(&mut s, "m1.large", Some("h1")),
        Err(Rejection::NoRoom {
            host: "h1".into(),
            vcpus: 2,
            memory_mib: 1024
        })
    );
    assert_eq!(s.instances.len(), 1);
}

#[test]
fn an_unknown_type_is_rejected_and_changes_nothing() {
    let mut s = bootstrapped();
    let before = s.clone();
    assert_eq!(
        create(&mut s, "x9.huge", Some("h1")),
        Err(Rejection::UnknownType("x9.huge".into()))
    );
    assert_eq!(s, before);
}

#[test]
fn a_host_cannot_report_on_an_instance_it_does_not_hold() {
    let mut s = bootstrapped();
    create(&mut s, "m1.small", Some("h1")).unwrap();
    let r = s.apply(Command::ReportInstance {
        host: "h2".into(),
        id: 1,
        state: ActualState::Gone,
        reason: None,
        at_ms: 5,
    });
    assert_eq!(
        r,
        Err(Rejection::WrongHost {
            id: 1,
            host: "h2".into()
        })
    );
}

#[test]
fn a_failure_on_the_host_keeps_its_reason_and_asks_for_cleanup() {
    let mut s = bootstrapped();
    create(&mut s, "m1.small", Some("h1")).unwrap();
    s.apply(Command::ReportInstance {
        host: "h1".into(),
        id: 1,
        state: ActualState::Failed,
        reason: Some("image checksum mismatch".into()),
        at_ms: 5,
    })
    .unwrap();
    assert_eq!(
        s.instances[&1].reason.as_deref(),
        Some("image checksum mismatch")
    );
    assert_eq!(s.desired_for_host("h1")[0].desire, Desire::Destroy);
    // Failed frees its capacity at once.
    assert_eq!(s.usage("h1").memory_mib, 0);
    report(&mut s, 1, ActualState::Gone).unwrap();
    assert!(s.desired_for_host("h1").is_empty());
    assert_eq!(s.instances[&1].state, InstanceState::Failed);
}

#[test]
fn replaying_the_same_commands_gives_the_same_state_and_codec_round_trips() {
    let mut a = bootstrapped();
    create(&mut a, "m1.small", Some("h1")).unwrap();
    report(&mut a, 1, ActualState::Running).unwrap();
    let mut b = bootstrapped();
    create(&mut b, "m1.small", Some("h1")).unwrap();
    report(&mut b, 1, ActualState::Running).unwrap();
    assert_eq!(a, b);
    let bytes = crate::codec::encode(&a).unwrap();
    let back: State = crate::codec::decode(&bytes).unwrap();
    assert_eq!(a, back);
}
