//! The rules of stop, start and reboot: which states accept them, what the host is asked to
//! do, and what a Stopped instance keeps.

use stratus_common::agent::{ActualState, Desire};
use stratus_common::api::InstanceState;

use super::tests::{bootstrapped, create};
use super::*;

fn running(s: &mut State, ty: &str) -> u64 {
    let Ok(Outcome::InstanceCreated(id)) = create(s, ty, Some("h1")) else {
        panic!("not created");
    };
    report(s, id, ActualState::Running, None).unwrap();
    id
}

fn report(
    s: &mut State,
    id: u64,
    state: ActualState,
    reason: Option<&str>,
) -> Result<Outcome, Rejection> {
    s.apply(Command::ReportInstance {
        host: "h1".into(),
        id,
        state,
        reason: reason.map(Into::into),
        at_ms: 20,
    })
}

fn power(s: &mut State, id: u64, action: PowerAction) -> Result<Outcome, Rejection> {
    s.apply(Command::PowerInstance {
        id,
        action,
        at_ms: 30,
    })
}

fn desired(s: &State, id: u64) -> (Desire, u64) {
    let d = s
        .desired_for_host("h1")
        .into_iter()
        .find(|d| d.id == id)
        .expect("desired");
    (d.desire, d.generation)
}

#[test]
fn stop_start_and_reboot_walk_through_their_states() {
    let mut s = bootstrapped();
    let id = running(&mut s, "m1.small");
    assert_eq!(desired(&s, id), (Desire::Run, 0));

    assert_eq!(power(&mut s, id, PowerAction::Stop), Ok(Outcome::Applied));
    assert_eq!(s.instances[&id].state, InstanceState::PoweringOff);
    assert_eq!(desired(&s, id), (Desire::Stop, 0));
    // Asked again while it powers off: nothing more to do.
    assert_eq!(power(&mut s, id, PowerAction::Stop), Ok(Outcome::Unchanged));
    // A late report of the old run changes nothing.
    assert_eq!(
        report(&mut s, id, ActualState::Running, None),
        Ok(Outcome::Unchanged)
    );
    report(&mut s, id, ActualState::Stopped, None).unwrap();
    assert_eq!(s.instances[&id].state, InstanceState::Stopped);
    assert_eq!(desired(&s, id), (Desire::Stop, 0));

    assert_eq!(power(&mut s, id, PowerAction::Start), Ok(Outcome::Applied));
    assert_eq!(s.instances[&id].state, InstanceState::Starting);
    assert_eq!(desired(&s, id), (Desire::Run, 1));
    report(&mut s, id, ActualState::Booting, None).unwrap();
    assert_eq!(s.instances[&id].state, InstanceState::Starting);
    report(&mut s, id, ActualState::Running, None).unwrap();
    assert_eq!(s.instances[&id].state, InstanceState::Running);

    assert_eq!(power(&mut s, id, PowerAction::Reboot), Ok(Outcome::Applied));
    assert_eq!(s.instances[&id].state, InstanceState::Rebooting);
    assert_eq!(desired(&s, id), (Desire::Run, 2));
    report(&mut s, id, ActualState::Running, None).unwrap();
    assert_eq!(s.instances[&id].state, InstanceState::Running);
    assert_eq!(desired(&s, id), (Desire::Run, 2));

    let states: Vec<InstanceState> = s.instances[&id].history.iter().map(|t| t.state).collect();
    use InstanceState as S;
    assert_eq!(
        states,
        [
            S::Pending,
            S::Running,
            S::PoweringOff,
            S::Stopped,
            S::Starting,
            S::Running,
            S::Rebooting,
            S::Running
        ]
    );
}

#[test]
fn an_action_in_the_wrong_state_is_refused_and_changes_nothing() {
    let mut s = bootstrapped();
    let id = running(&mut s, "m1.small");
    let before = s.clone();
    let refused = power(&mut s, id, PowerAction::Start).unwrap_err();
    assert_eq!(
        refused.to_string(),
        format!("instance {id} is Running: only a Stopped instance can be started")
    );
    assert_eq!(s, before);

    power(&mut s, id, PowerAction::Stop).unwrap();
    report(&mut s, id, ActualState::Stopped, None).unwrap();
    let before = s.clone();
    for action in [PowerAction::Stop, PowerAction::Reboot] {
        assert!(matches!(
            power(&mut s, id, action),
            Err(Rejection::WrongState {
                state: InstanceState::Stopped,
                ..
            })
        ));
    }
    assert_eq!(s, before);
    assert_eq!(
        power(&mut s, 99, PowerAction::Stop),
        Err(Rejection::UnknownInstance(99))
    );
    s.apply(Command::KillInstance { id, at_ms: 40 }).unwrap();
    assert!(matches!(
        power(&mut s, id, PowerAction::Start),
        Err(Rejection::WrongState {
            state: InstanceState::Stopping,
            ..
        })
    ));
}

#[test]
fn a_guest_that_powers_itself_off_is_stopped_with_the_reason_and_can_start_again() {
    let mut s = bootstrapped();
    let id = running(&mut s, "m1.small");
    report(
        &mut s,
        id,
        ActualState::Stopped,
        Some("the guest powered off"),
    )
    .unwrap();
    let instance = &s.instances[&id];
    assert_eq!(instance.state, InstanceState::Stopped);
    assert_eq!(instance.reason.as_deref(), Some("the guest powered off"));
    assert_eq!(desired(&s, id), (Desire::Stop, 0));
    power(&mut s, id, PowerAction::Start).unwrap();
    assert_eq!(s.instances[&id].reason, None, "a start clears the reason");
}

#[test]
fn a_failed_start_leaves_the_instance_stopped_with_its_data() {
    let mut s = bootstrapped();
    let id = running(&mut s, "m1.small");
    power(&mut s, id, PowerAction::Stop).unwrap();
    report(&mut s, id, ActualState::Stopped, None).unwrap();
    power(&mut s, id, PowerAction::Start).unwrap();
    report(&mut s, id, ActualState::Failed, Some("libvirt: boom")).unwrap();
    let instance = &s.instances[&id];
    assert_eq!(instance.state, InstanceState::Stopped);
    assert_eq!(
        instance.reason.as_deref(),
        Some("the start failed: libvirt: boom")
    );
    // Stopped, not Failed: the host keeps the disk (no destroy is asked).
    assert_eq!(desired(&s, id), (Desire::Stop, 1));
}

#[test]
fn a_stopped_instance_keeps_its_host_reservation_until_killed() {
    let mut s = bootstrapped();
    // h1 has 2 vCPUs and 1024 MiB: one c1.medium (2 vCPUs) fills its vCPUs.
    let id = running(&mut s, "c1.medium");
    power(&mut s, id, PowerAction::Stop).unwrap();
    report(&mut s, id, ActualState::Stopped, None).unwrap();
    assert_eq!(s.usage("h1").vcpus, 2);
    let host = s.hosts["h1"].clone();
    let no_labels = std::collections::BTreeSet::new();
    let small = crate::scheduler::Demand {
        vcpus: 1,
        memory_mib: 128,
        disk_gib: 1,
        labels: &no_labels,
        group: None,
    };
    assert_eq!(
        crate::scheduler::check(&s, &host, &small),
        Some(crate::scheduler::Filter::Cpu),
        "a Stopped instance keeps its room"
    );
    s.apply(Command::KillInstance { id, at_ms: 40 }).unwrap();
    assert_eq!(desired(&s, id).0, Desire::Destroy);
    report(&mut s, id, ActualState::Gone, None).unwrap();
    assert_eq!(s.instances[&id].state, InstanceState::Done);
    assert_eq!(crate::scheduler::check(&s, &host, &small), None);
}
