//! Evacuation: only an instance of a host that is down and fenced starts elsewhere; the host,
//! if it comes back, is told to destroy its copy, and its reports about it change nothing.
//! Also what a host does on its own by an instance's rules: a restart by policy is recorded.

use stratus_common::agent::{ActualState, Desire};
use stratus_common::api::InstanceState;

use super::tests::{bootstrapped, create, creation};
use super::*;

/// h1 and h2, and an instance Running on h1 then Unknown as h1 went down.
fn unknown_on_h1() -> (State, u64) {
    let mut s = bootstrapped();
    let mut h2 = s.hosts["h1"].clone();
    h2.name = "h2".into();
    s.apply(Command::RegisterHost(h2)).unwrap();
    let Ok(Outcome::InstanceCreated(id)) = s.apply(Command::CreateInstanceWith {
        rules: InstanceRules {
            evacuate: true,
            ..InstanceRules::default()
        },
        create: Box::new(creation(&s, "t1.micro", Some("h1"))),
    }) else {
        panic!("not created");
    };
    report(&mut s, "h1", id, ActualState::Running).unwrap();
    s.apply(Command::HostContact {
        host: "h1".into(),
        up: false,
        at_ms: 30,
    })
    .unwrap();
    assert_eq!(s.instances[&id].state, InstanceState::Unknown);
    (s, id)
}

fn report(s: &mut State, host: &str, id: u64, state: ActualState) -> Result<Outcome, Rejection> {
    s.apply(Command::ReportInstance {
        host: host.into(),
        id,
        state,
        reason: None,
        at_ms: 40,
    })
}

fn evacuate(s: &mut State, id: u64, to: &str) -> Result<Outcome, Rejection> {
    s.apply(Command::EvacuateInstance {
        id,
        from: "h1".into(),
        to: to.into(),
        at_ms: 50,
    })
}

fn desires(s: &State, host: &str) -> Vec<(u64, Desire)> {
    s.desired_for_host(host)
        .into_iter()
        .map(|d| (d.id, d.desire))
        .collect()
}

#[test]
fn nothing_moves_without_a_fence_and_a_host_that_is_up_cannot_be_fenced() {
    let (mut s, id) = unknown_on_h1();
    assert_eq!(
        evacuate(&mut s, id, "h2"),
        Err(Rejection::NotEvacuable {
            id,
            why: "its host h1 is not down and fenced".into()
        })
    );
    assert_eq!(
        s.apply(Command::FenceHost {
            host: "h2".into(),
            at_ms: 45
        }),
        Err(Rejection::FenceUp("h2".into()))
    );
    assert_eq!(s.instances[&id].host.as_deref(), Some("h1"));
}

#[test]
fn a_fenced_hosts_instance_starts_elsewhere_once_and_the_host_destroys_its_copy_when_back() {
    let (mut s, id) = unknown_on_h1();
    let (_, effects) = s.apply_with_effects(Command::FenceHost {
        host: "h1".into(),
        at_ms: 45,
    });
    assert_eq!(effects.events, [Event::HostFenced { host: "h1".into() }]);
    assert_eq!(s.fenced_since("h1"), Some(45));
    // Not onto the fenced host itself.
    assert!(matches!(
        evacuate(&mut s, id, "h1"),
        Err(Rejection::HostUnschedulable { .. })
    ));
    let (outcome, effects) = s.apply_with_effects(Command::EvacuateInstance {
        id,
        from: "h1".into(),
        to: "h2".into(),
        at_ms: 50,
    });
    assert_eq!(outcome, Ok(Outcome::Applied));
    let instance = &s.instances[&id];
    assert_eq!(instance.host.as_deref(), Some("h2"));
    assert_eq!(instance.state, InstanceState::Pending);
    assert_eq!(
        instance.reason.as_deref(),
        Some("evacuated from h1 (fenced): started again on h2 from its image")
    );
    assert!(effects.hosts.contains("h1"), "h1's desired state changed");
    // Once only: it is no longer Unknown on h1.
    assert!(matches!(
        evacuate(&mut s, id, "h2"),
        Err(Rejection::WrongHost { .. })
    ));
    assert_eq!(desires(&s, "h2"), [(id, Desire::Run)]);
    assert_eq!(desires(&s, "h1"), [(id, Desire::Destroy)]);

    // h1 comes back: no longer fenced; what it says of its copy changes nothing.
    s.apply(Command::HostContact {
        host: "h1".into(),
        up: true,
        at_ms: 60,
    })
    .unwrap();
    assert_eq!(s.fenced_since("h1"), None);
    assert_eq!(
        report(&mut s, "h1", id, ActualState::Running),
        Ok(Outcome::Unchanged)
    );
    report(&mut s, "h2", id, ActualState::Running).unwrap();
    assert_eq!(s.instances[&id].state, InstanceState::Running);
    assert_eq!(s.instances[&id].host.as_deref(), Some("h2"));
    // Its copy destroyed, h1 has nothing more to do with it.
    assert_eq!(
        report(&mut s, "h1", id, ActualState::Gone),
        Ok(Outcome::Applied)
    );
    assert!(desires(&s, "h1").is_empty());
    assert!(s.moved_away.is_empty());
    assert_eq!(s.instances[&id].state, InstanceState::Running);
}

#[test]
fn an_instance_with_persistent_disks_or_a_host_still_holding_a_copy_is_not_evacuated() {
    let (mut s, id) = unknown_on_h1();
    s.apply(Command::FenceHost {
        host: "h1".into(),
        at_ms: 45,
    })
    .unwrap();
    evacuate(&mut s, id, "h2").unwrap();
    // h2 fails in turn before h1 destroyed its copy: the instance may not go back to h1.
    report(&mut s, "h2", id, ActualState::Running).unwrap();
    s.apply(Command::HostContact {
        host: "h1".into(),
        up: true,
        at_ms: 60,
    })
    .unwrap();
    s.apply(Command::HostContact {
        host: "h2".into(),
        up: false,
        at_ms: 61,
    })
    .unwrap();
    s.apply(Command::FenceHost {
        host: "h2".into(),
        at_ms: 62,
    })
    .unwrap();
    assert_eq!(
        s.apply(Command::EvacuateInstance {
            id,
            from: "h2".into(),
            to: "h1".into(),
            at_ms: 63,
        }),
        Err(Rejection::NotEvacuable {
            id,
            why: "h1 has not yet destroyed its earlier copy".into()
        })
    );
}

#[test]
fn a_host_restarting_a_guest_by_its_policy_is_recorded_in_the_history_and_the_rule_reaches_it() {
    let mut s = bootstrapped();
    let Ok(Outcome::InstanceCreated(id)) = s.apply(Command::CreateInstanceWith {
        rules: InstanceRules {
            restart: stratus_common::api::RestartPolicy::Always,
            ..InstanceRules::default()
        },
        create: Box::new(creation(&s, "t1.micro", Some("h1"))),
    }) else {
        panic!("not created");
    };
    assert_eq!(
        s.desired_for_host("h1")[0].restart,
        stratus_common::api::RestartPolicy::Always
    );
    report(&mut s, "h1", id, ActualState::Running).unwrap();
    assert_eq!(
        report(&mut s, "h1", id, ActualState::Running),
        Ok(Outcome::Unchanged),
        "a plain repeat changes nothing"
    );
    let (outcome, effects) = s.apply_with_effects(Command::ReportInstance {
        host: "h1".into(),
        id,
        state: ActualState::Running,
        reason: Some("started again by its host".into()),
        at_ms: 70,
    });
    assert_eq!(outcome, Ok(Outcome::Applied));
    let last = s.instances[&id].history.last().unwrap();
    assert_eq!(
        (last.state, last.reason.as_deref()),
        (InstanceState::Running, Some("started again by its host"))
    );
    assert_eq!(s.instances[&id].reason, None);
    assert!(matches!(
        effects.events.as_slice(),
        [Event::InstanceState {
            state: InstanceState::Running,
            reason: Some(_),
            ..
        }]
    ));
}

/// Every host's desired instances, from the table's per-host sets, equal a scan of every
/// instance; and the sets kept equal the ones computed again from the records.
fn assert_desired_as_by_scan(s: &State, step: &str) {
    for host in ["h1", "h2", "h3", "nowhere"] {
        assert_eq!(
            s.desired_for_host(host),
            s.desired_for_host_by_scan(host),
            "{host} after {step}"
        );
    }
    assert_eq!(
        s.instances.on_host_kept(),
        &s.instances.on_host_recounted(),
        "after {step}"
    );
}

#[test]
fn a_hosts_desired_instances_equal_a_scan_through_moves_evacuations_and_ends() {
    let mut s = bootstrapped();
    let big = |name: &str| HostRecord {
        name: name.into(),
        vcpus: 64,
        memory_mib: 65536,
        ..s.hosts["h1"].clone()
    };
    let (h1, h2, h3) = (big("h1"), big("h2"), big("h3"));
    for host in [h1, h2, h3] {
        s.apply(Command::RegisterHost(host)).unwrap();
    }
    let mut ids = Vec::new();
    for n in 0..12 {
        let host = ["h1", "h2", "h3"][n % 3];
        let Ok(Outcome::InstanceCreated(id)) = s.apply(Command::CreateInstanceWith {
            rules: InstanceRules {
                evacuate: n % 2 == 0,
                ..InstanceRules::default()
            },
            create: Box::new(creation(&s, "t1.micro", Some(host))),
        }) else {
            panic!("not created");
        };
        ids.push(id);
    }
    create(&mut s, "t1.micro", None).unwrap();
    assert_desired_as_by_scan(&s, "creations");

    // All run but the last on h1, which stays Pending; then some end, fail, stop.
    for &id in &ids[..9] {
        let host = s.instances[&id].host.clone().unwrap();
        report(&mut s, &host, id, ActualState::Running).unwrap();
    }
    s.apply(Command::KillInstance {
        id: ids[1],
        at_ms: 41,
    })
    .unwrap();
    report(&mut s, "h2", ids[1], ActualState::Gone).unwrap();
    report(&mut s, "h3", ids[2], ActualState::Failed).unwrap();
    assert_desired_as_by_scan(&s, "a failure not cleaned up");
    report(&mut s, "h3", ids[2], ActualState::Gone).unwrap();
    s.apply(Command::KillInstance {
        id: ids[4],
        at_ms: 42,
    })
    .unwrap();
    s.apply(Command::PowerInstance {
        id: ids[5],
        action: PowerAction::Stop,
        at_ms: 43,
    })
    .unwrap();
    assert_desired_as_by_scan(&s, "ends");

    // h1 goes down: its Pending instance is placed again, the others are evacuated.
    s.apply(Command::HostContact {
        host: "h1".into(),
        up: false,
        at_ms: 44,
    })
    .unwrap();
    assert_desired_as_by_scan(&s, "h1 down");
    s.apply(Command::ReplaceInstance {
        id: ids[9],
        from: "h1".into(),
        to: Some("h2".into()),
        failure: None,
        at_ms: 45,
    })
    .unwrap();
    s.apply(Command::FenceHost {
        host: "h1".into(),
        at_ms: 46,
    })
    .unwrap();
    let evacuated: Vec<u64> = [ids[0], ids[6]].into();
    for (&id, to) in evacuated.iter().zip(["h2", "h3"]) {
        evacuate(&mut s, id, to).unwrap();
    }
    assert_desired_as_by_scan(&s, "evacuations");
    // The copies moved away go; the instance that did not opt in waits for h1.
    assert_eq!(
        desires(&s, "h1"),
        [
            (ids[0], Desire::Destroy),
            (ids[3], Desire::Run),
            (ids[6], Desire::Destroy)
        ]
    );

    // h1 is back and destroys one copy; an instance is killed and gone on its new host.
    s.apply(Command::HostContact {
        host: "h1".into(),
        up: true,
        at_ms: 60,
    })
    .unwrap();
    report(&mut s, "h1", ids[0], ActualState::Gone).unwrap();
    report(&mut s, "h1", ids[3], ActualState::Running).unwrap();
    s.apply(Command::KillInstance {
        id: ids[6],
        at_ms: 61,
    })
    .unwrap();
    report(&mut s, "h3", ids[6], ActualState::Gone).unwrap();
    assert_desired_as_by_scan(&s, "h1 back");
    assert_eq!(desires(&s, "h1")[0], (ids[3], Desire::Run));

    // A restored snapshot rebuilds the sets.
    let restored: State = crate::codec::decode(&crate::codec::encode(&s)).unwrap();
    assert_eq!(restored, s);
    assert_desired_as_by_scan(&restored, "a restore");
    for host in ["h1", "h2", "h3"] {
        assert_eq!(restored.desired_for_host(host), s.desired_for_host(host));
    }
}
