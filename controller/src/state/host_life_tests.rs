//! The rules of hosts' life: a host judged down turns what it ran Unknown (never started
//! elsewhere) and its report brings it back; maintenance keeps new instances off; removal is
//! refused while a host holds anything, unless forced for a host that is down.

use stratus_common::agent::{ActualState, Desire};
use stratus_common::api::InstanceState;

use super::tests::{bootstrapped, create};
use super::*;

fn contact(s: &mut State, up: bool, at_ms: u64) -> (Result<Outcome, Rejection>, Effects) {
    s.apply_with_effects(Command::HostContact {
        host: "h1".into(),
        up,
        at_ms,
    })
}

fn report(s: &mut State, id: u64, state: ActualState) -> Result<Outcome, Rejection> {
    s.apply(Command::ReportInstance {
        host: "h1".into(),
        id,
        state,
        reason: None,
        at_ms: 60,
    })
}

fn placed(s: &mut State) -> u64 {
    let Ok(Outcome::InstanceCreated(id)) = create(s, "t1.micro", Some("h1")) else {
        panic!("not created");
    };
    id
}

fn desired(s: &State, id: u64) -> stratus_common::agent::DesiredInstance {
    s.desired_for_host("h1")
        .into_iter()
        .find(|d| d.id == id)
        .expect("desired")
}

#[test]
fn a_host_going_down_makes_what_it_ran_unknown_until_it_reports_again() {
    let mut s = bootstrapped();
    // Room for three t1.micro on h1's two vCPUs.
    s.cpu_allocation_ratio_percent = 200;
    let running = placed(&mut s);
    report(&mut s, running, ActualState::Running).unwrap();
    let pending = placed(&mut s);
    let stopping = placed(&mut s);
    report(&mut s, stopping, ActualState::Running).unwrap();
    s.apply(Command::PowerInstance {
        id: stopping,
        action: PowerAction::Stop,
        at_ms: 30,
    })
    .unwrap();

    let (outcome, effects) = contact(&mut s, false, 50);
    assert_eq!(outcome, Ok(Outcome::Applied));
    assert!(!s.host_life("h1").up);
    assert_eq!(s.host_life("h1").since_ms, 50);
    assert_eq!(s.instances[&running].state, InstanceState::Unknown);
    assert_eq!(
        s.instances[&running].reason.as_deref(),
        Some("host h1 is down: its agent is out of touch")
    );
    assert_eq!(s.instances[&stopping].state, InstanceState::Unknown);
    // Never started: nothing of it can run, so it is not in doubt.
    assert_eq!(s.instances[&pending].state, InstanceState::Pending);
    assert!(effects.events.contains(&Event::HostContact {
        host: "h1".into(),
        up: false
    }));
    let unknown = effects
        .events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::InstanceState {
                    state: InstanceState::Unknown,
                    ..
                }
            )
        })
        .count();
    assert_eq!(unknown, 2);
    assert!(effects.hosts.contains("h1"), "the host is told to confirm");
    // Judged down again: nothing changes.
    assert_eq!(contact(&mut s, false, 51).0, Ok(Outcome::Unchanged));

    // Unknown instances keep what was asked of them, and their host is asked to confirm.
    let d = desired(&s, running);
    assert_eq!((d.desire, d.confirm), (Desire::Run, true));
    let d = desired(&s, stopping);
    assert_eq!((d.desire, d.confirm), (Desire::Stop, true));
    assert!(!desired(&s, pending).confirm);
    // Capacity stays taken: the guests may run.
    assert_eq!(s.usage("h1").instances, 3);
    // Power actions wait for the host to say what the guest is doing.
    assert!(matches!(
        s.apply(Command::PowerInstance {
            id: running,
            action: PowerAction::Reboot,
            at_ms: 55
        }),
        Err(Rejection::WrongState {
            state: InstanceState::Unknown,
            ..
        })
    ));

    let (outcome, effects) = contact(&mut s, true, 59);
    assert_eq!(outcome, Ok(Outcome::Applied));
    assert!(effects.events.contains(&Event::HostContact {
        host: "h1".into(),
        up: true
    }));
    assert_eq!(s.instances[&running].state, InstanceState::Unknown);
    report(&mut s, running, ActualState::Running).unwrap();
    assert_eq!(s.instances[&running].state, InstanceState::Running);
    assert!(!desired(&s, running).confirm);
    report(&mut s, stopping, ActualState::Stopped).unwrap();
    assert_eq!(s.instances[&stopping].state, InstanceState::Stopped);
}

#[test]
fn an_unknown_instance_whose_guest_vanished_fails_and_one_killed_meanwhile_goes() {
    let mut s = bootstrapped();
    let lost = placed(&mut s);
    report(&mut s, lost, ActualState::Running).unwrap();
    let killed = placed(&mut s);
    report(&mut s, killed, ActualState::Running).unwrap();
    contact(&mut s, false, 50).0.unwrap();
    s.apply(Command::KillInstance {
        id: killed,
        at_ms: 52,
    })
    .unwrap();
    assert_eq!(s.instances[&killed].state, InstanceState::Stopping);
    assert_eq!(desired(&s, killed).desire, Desire::Destroy);
    contact(&mut s, true, 59).0.unwrap();
    report(&mut s, lost, ActualState::Gone).unwrap();
    assert_eq!(s.instances[&lost].state, InstanceState::Failed);
    assert_eq!(
        s.instances[&lost].reason.as_deref(),
        Some("the host lost the domain while it was down")
    );
    report(&mut s, killed, ActualState::Gone).unwrap();
    assert_eq!(s.instances[&killed].state, InstanceState::Done);
}

#[test]
fn no_instance_is_placed_on_a_host_down_or_in_maintenance() {
    let mut s = bootstrapped();
    contact(&mut s, false, 50).0.unwrap();
    assert_eq!(
        create(&mut s, "t1.micro", Some("h1")),
        Err(Rejection::HostUnschedulable {
            host: "h1".into(),
            why: "down"
        })
    );
    contact(&mut s, true, 51).0.unwrap();
    let maintenance = Some(Maintenance {
        reason: Some("new disks".into()),
        since_ms: 52,
    });
    let command = Command::HostMaintenance {
        host: "h1".into(),
        maintenance: maintenance.clone(),
    };
    let (outcome, effects) = s.apply_with_effects(command.clone());
    assert_eq!(outcome, Ok(Outcome::Applied));
    assert_eq!(
        effects.events,
        [Event::HostMaintenance {
            host: "h1".into(),
            maintenance: true,
            reason: Some("new disks".into())
        }]
    );
    assert_eq!(s.apply(command), Ok(Outcome::Unchanged));
    assert_eq!(
        create(&mut s, "t1.micro", Some("h1")),
        Err(Rejection::HostUnschedulable {
            host: "h1".into(),
            why: "in maintenance"
        })
    );
    s.apply(Command::HostMaintenance {
        host: "h1".into(),
        maintenance: None,
    })
    .unwrap();
    assert!(create(&mut s, "t1.micro", Some("h1")).is_ok());
    assert_eq!(
        s.apply(Command::HostMaintenance {
            host: "nope".into(),
            maintenance,
        }),
        Err(Rejection::UnknownHost("nope".into()))
    );
}

#[test]
fn a_host_holding_instances_is_removed_only_by_force_and_only_when_down() {
    let mut s = bootstrapped();
    let id = placed(&mut s);
    report(&mut s, id, ActualState::Running).unwrap();
    let remove = |force| Command::RemoveHost {
        host: "h1".into(),
        force,
        at_ms: 70,
    };
    assert_eq!(
        s.apply(remove(false)),
        Err(Rejection::HostHolds {
            host: "h1".into(),
            instances: 1,
            volumes: 0
        })
    );
    assert_eq!(s.apply(remove(true)), Err(Rejection::HostUp("h1".into())));
    assert!(s.hosts.contains_key("h1"), "refusals change nothing");
    contact(&mut s, false, 60).0.unwrap();
    let (outcome, effects) = s.apply_with_effects(remove(true));
    assert_eq!(outcome, Ok(Outcome::Applied));
    assert!(!s.hosts.contains_key("h1"));
    assert!(!s.host_life.contains_key("h1"));
    let instance = &s.instances[&id];
    assert_eq!(instance.state, InstanceState::Failed);
    assert_eq!(instance.reason.as_deref(), Some("host h1 was removed"));
    assert!(instance.host_cleaned);
    assert_eq!(s.usage("h1").instances, 0);
    assert!(effects.events.contains(&Event::HostRemoved {
        host: "h1".into(),
        force: true
    }));
    assert_eq!(
        s.apply(remove(false)),
        Err(Rejection::UnknownHost("h1".into()))
    );
}

#[test]
fn an_empty_host_is_removed_and_a_finished_instance_keeps_its_history() {
    let mut s = bootstrapped();
    let id = placed(&mut s);
    s.apply(Command::KillInstance { id, at_ms: 40 }).unwrap();
    report(&mut s, id, ActualState::Gone).unwrap();
    assert_eq!(s.holdings("h1"), Holdings::default());
    s.apply(Command::RemoveHost {
        host: "h1".into(),
        force: false,
        at_ms: 70,
    })
    .unwrap();
    assert_eq!(s.instances[&id].state, InstanceState::Done);
    assert_eq!(s.instances[&id].host.as_deref(), Some("h1"));
}

/// h1 (from `bootstrapped`) and h2, alike.
fn two_hosts() -> State {
    let mut s = bootstrapped();
    let mut h2 = s.hosts["h1"].clone();
    h2.name = "h2".into();
    s.apply(Command::RegisterHost(h2)).unwrap();
    s
}

fn replace(s: &mut State, id: u64, to: Option<&str>) -> (Result<Outcome, Rejection>, Effects) {
    s.apply_with_effects(Command::ReplaceInstance {
        id,
        from: "h1".into(),
        to: to.map(Into::into),
        failure: to.is_none().then(|| "no host can take it".to_owned()),
        at_ms: 80,
    })
}

#[test]
fn a_pending_instance_of_a_host_that_went_down_is_placed_again_and_only_then() {
    let mut s = two_hosts();
    let id = placed(&mut s);
    assert!(
        matches!(
            replace(&mut s, id, Some("h2")).0,
            Err(Rejection::NotReplaceable { .. })
        ),
        "h1 is up"
    );
    contact(&mut s, false, 70).0.unwrap();
    let (outcome, effects) = replace(&mut s, id, Some("h2"));
    assert_eq!(outcome, Ok(Outcome::Applied));
    let instance = &s.instances[&id];
    assert_eq!(instance.host.as_deref(), Some("h2"));
    assert_eq!(instance.state, InstanceState::Pending);
    let reason = "its host h1 went down before it started: placed again on h2";
    assert_eq!(instance.reason.as_deref(), Some(reason));
    assert_eq!(
        effects.events,
        [Event::InstanceState {
            id,
            name: format!("vm-{id}"),
            owner: "alice".into(),
            host: Some("h2".into()),
            state: InstanceState::Pending,
            reason: Some(reason.into()),
            at_ms: 80,
        }]
    );
    assert!(effects.hosts.contains("h1") && effects.hosts.contains("h2"));
    assert_eq!((s.usage("h1").instances, s.usage("h2").instances), (0, 1));
    assert!(s.desired_for_host("h1").is_empty());
    assert_eq!(s.desired_for_host("h2")[0].id, id);
    // h1's late report about it is refused: it is not h1's any more.
    assert!(matches!(
        report(&mut s, id, ActualState::Booting),
        Err(Rejection::WrongHost { .. })
    ));
    // Once started on h2, it is not moved again.
    s.apply(Command::ReportInstance {
        host: "h2".into(),
        id,
        state: ActualState::Booting,
        reason: None,
        at_ms: 81,
    })
    .unwrap();
    assert_eq!(s.instances[&id].state, InstanceState::Booting);
}

#[test]
fn a_pending_instance_no_host_can_take_fails_with_the_reason_and_frees_what_it_held() {
    let mut s = two_hosts();
    let id = placed(&mut s);
    let booting = placed(&mut s);
    report(&mut s, booting, ActualState::Booting).unwrap();
    contact(&mut s, false, 70).0.unwrap();
    assert_eq!(s.instances[&booting].state, InstanceState::Unknown);
    assert!(
        matches!(
            replace(&mut s, booting, Some("h2")).0,
            Err(Rejection::NotReplaceable { .. })
        ),
        "it may have started: never moved"
    );
    s.apply(Command::HostMaintenance {
        host: "h2".into(),
        maintenance: Some(Maintenance {
            reason: None,
            since_ms: 71,
        }),
    })
    .unwrap();
    assert_eq!(
        replace(&mut s, id, Some("h2")).0,
        Err(Rejection::HostUnschedulable {
            host: "h2".into(),
            why: "in maintenance"
        })
    );
    replace(&mut s, id, None).0.unwrap();
    let instance = &s.instances[&id];
    assert_eq!(instance.state, InstanceState::Failed);
    assert_eq!(
        instance.reason.as_deref(),
        Some("its host h1 went down before it started; no host can take it")
    );
    assert!(instance.host_cleaned, "nothing of it ever ran");
    assert_eq!(s.usage("h1").instances, 1, "only the Unknown one");
}
