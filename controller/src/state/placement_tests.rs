//! Placement rules in the replicated state: hosts' roles and labels, server groups, and
//! apply's re-check of a chosen host against them (the race of two creations into one
//! anti-affinity group), placing again included.

use std::collections::{BTreeSet, HashSet};

use stratus_common::api::InstanceState;

use super::tests::{bootstrapped, creation};
use super::*;
use crate::scheduler::{self, Demand, Filter, Request, Strategy};

/// `bootstrapped` with a second host h2 like h1, and user alice.
fn two_hosts() -> State {
    let mut s = bootstrapped();
    let mut h2 = s.hosts["h1"].clone();
    h2.name = "h2".into();
    s.apply(Command::RegisterHost(h2)).unwrap();
    s.apply(Command::CreateUser(UserRecord {
        name: "alice".into(),
        password_hash: "$argon2id$y".into(),
        admin: false,
        created_ms: 4,
    }))
    .unwrap();
    s
}

fn group(s: &mut State, name: &str, policy: GroupPolicy) {
    s.apply(Command::CreateGroup {
        owner: "alice".into(),
        name: name.into(),
        policy,
        at_ms: 5,
    })
    .unwrap();
}

fn rules(group: Option<&str>, labels: &[&str]) -> InstanceRules {
    InstanceRules {
        group: group.map(Into::into),
        labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        evacuate: false,
        restart: Default::default(),
    }
}

/// Where the scheduler puts a t1.micro of alice's with `rules`.
fn place(s: &State, rules: &InstanceRules) -> Result<String, scheduler::NoValidHost> {
    let holding = HashSet::new();
    let request = Request {
        demand: Demand {
            vcpus: 1,
            memory_mib: 128,
            disk_gib: 1,
            labels: &rules.labels,
            group: s.group_placement("alice", rules, None).unwrap(),
        },
        holding: &holding,
        preferred: None,
        strategy: Strategy::Spread,
    };
    scheduler::place(s, &request)
}

/// Alice's t1.micro with `rules`, placed where the scheduler says (Failed with its reason when
/// nowhere).
fn run(s: &mut State, rules: &InstanceRules) -> Result<u64, Rejection> {
    let host = place(s, rules);
    let mut create = creation(s, "t1.micro", host.as_deref().ok());
    if let (Command::CreateInstance { failure, .. }, Err(none)) = (&mut create, &host) {
        *failure = Some(none.to_string());
    }
    match s.apply(Command::CreateInstanceWith {
        rules: rules.clone(),
        create: Box::new(create),
    })? {
        Outcome::InstanceCreated(id) => Ok(id),
        other => panic!("{other:?}"),
    }
}

#[test]
fn anti_affinity_puts_each_instance_on_a_host_of_its_own_and_names_the_filter_when_none_is_left() {
    let mut s = two_hosts();
    group(&mut s, "web", GroupPolicy::AntiAffinity);
    let web = rules(Some("web"), &[]);
    let first = run(&mut s, &web).unwrap();
    let second = run(&mut s, &web).unwrap();
    let hosts: BTreeSet<_> = [first, second]
        .iter()
        .map(|id| s.instances[id].host.clone().unwrap())
        .collect();
    assert_eq!(hosts.len(), 2, "two hosts: {hosts:?}");
    let third = run(&mut s, &web).unwrap();
    assert_eq!(s.instances[&third].state, InstanceState::Failed);
    assert_eq!(
        s.instances[&third].reason.as_deref(),
        Some(
            "no host can take 1 vCPU and 128 MiB: of 2 host(s), 2 already run an instance of \
             anti-affinity group web (anti-affinity filter)"
        )
    );
    // An instance outside the group still goes anywhere.
    assert!(place(&s, &InstanceRules::default()).is_ok());
    // Once a member is Done, its host takes the group again.
    s.apply(Command::KillInstance {
        id: first,
        at_ms: 20,
    })
    .unwrap();
    s.apply(Command::ReportInstance {
        host: s.instances[&first].host.clone().unwrap(),
        id: first,
        state: stratus_common::agent::ActualState::Gone,
        reason: None,
        at_ms: 21,
    })
    .unwrap();
    assert_eq!(
        place(&s, &web).as_deref().ok(),
        s.instances[&first].host.as_deref()
    );
}

#[test]
fn apply_refuses_the_second_of_two_racing_creations_onto_one_host_of_an_anti_affinity_group() {
    let mut s = two_hosts();
    group(&mut s, "web", GroupPolicy::AntiAffinity);
    let web = rules(Some("web"), &[]);
    // Both proposers saw an empty group and chose h1.
    let on_h1 = || Command::CreateInstanceWith {
        rules: web.clone(),
        create: Box::new(creation(&s, "t1.micro", Some("h1"))),
    };
    let (first, second) = (on_h1(), on_h1());
    assert!(matches!(s.apply(first), Ok(Outcome::InstanceCreated(_))));
    assert_eq!(
        s.apply(second),
        Err(Rejection::HostUnschedulable {
            host: "h1".into(),
            why: "running an instance of the instance's anti-affinity group",
        })
    );
    assert_eq!(s.instances.len(), 1, "the refused creation made nothing");
}

#[test]
fn affinity_keeps_a_group_on_the_host_of_its_first_instance() {
    let mut s = two_hosts();
    group(&mut s, "db", GroupPolicy::Affinity);
    let db = rules(Some("db"), &[]);
    let first = run(&mut s, &db).unwrap();
    let host = s.instances[&first].host.clone().unwrap();
    // h2 has more free room now, yet the second goes with the first.
    let second = run(&mut s, &db).unwrap();
    assert_eq!(s.instances[&second].host.as_ref(), Some(&host));
    // h1 and h2 have 2 vCPUs each: the group's host is full, the other is not its host.
    let full = run(&mut s, &db).unwrap();
    assert_eq!(s.instances[&full].state, InstanceState::Failed);
    let reason = s.instances[&full].reason.clone().unwrap();
    assert!(
        reason.contains("1 is not where affinity group db runs (affinity filter)")
            && reason.contains("1 has too few free vCPUs"),
        "{reason}"
    );
}

#[test]
fn a_storage_only_host_gets_no_instance_and_labels_are_required_of_the_host() {
    let mut s = two_hosts();
    s.cpu_allocation_ratio_percent = 1000;
    s.apply(Command::HostProfile {
        host: "h1".into(),
        compute: Some(false),
        storage: Some(true),
        labels: None,
    })
    .unwrap();
    for _ in 0..4 {
        assert_eq!(place(&s, &InstanceRules::default()).unwrap(), "h2");
    }
    let ssd = rules(None, &["ssd"]);
    let err = place(&s, &ssd).unwrap_err();
    assert_eq!(err.removed, [(Filter::Role, 1), (Filter::Labels, 1)]);
    assert_eq!(
        err.to_string(),
        "no host can take 1 vCPU and 128 MiB: of 2 host(s), 1 is not a compute host, 1 lacks \
         a required label (labels filter: ssd)"
    );
    s.apply(Command::HostProfile {
        host: "h2".into(),
        compute: None,
        storage: None,
        labels: Some(["ssd".to_owned(), "fast".to_owned()].into()),
    })
    .unwrap();
    let id = run(&mut s, &ssd).unwrap();
    assert_eq!(s.instances[&id].host.as_deref(), Some("h2"));
    assert_eq!(*s.placement_rules(id), ssd);
    // A host needs a role; the refused change changes nothing.
    assert_eq!(
        s.apply(Command::HostProfile {
            host: "h1".into(),
            compute: Some(false),
            storage: Some(false),
            labels: None,
        }),
        Err(Rejection::NoRole("h1".into()))
    );
    assert!(s.host_profile("h1").storage);
    // Back to the defaults: nothing is kept for it.
    s.apply(Command::HostProfile {
        host: "h1".into(),
        compute: Some(true),
        storage: None,
        labels: None,
    })
    .unwrap();
    assert!(!s.host_profiles.contains_key("h1"));
}

#[test]
fn a_group_is_deleted_only_once_its_instances_are_done_and_names_are_per_owner() {
    let mut s = two_hosts();
    group(&mut s, "web", GroupPolicy::AntiAffinity);
    assert_eq!(
        s.apply(Command::CreateGroup {
            owner: "alice".into(),
            name: "web".into(),
            policy: GroupPolicy::Affinity,
            at_ms: 6,
        }),
        Err(Rejection::GroupExists("web".into()))
    );
    s.apply(Command::CreateGroup {
        owner: "admin".into(),
        name: "web".into(),
        policy: GroupPolicy::Affinity,
        at_ms: 6,
    })
    .unwrap();
    let id = run(&mut s, &rules(Some("web"), &[])).unwrap();
    let delete = |s: &mut State| {
        s.apply(Command::DeleteGroup {
            owner: "alice".into(),
            name: "web".into(),
        })
    };
    assert_eq!(
        delete(&mut s),
        Err(Rejection::GroupInUse {
            name: "web".into(),
            instances: 1
        })
    );
    s.apply(Command::KillInstance { id, at_ms: 20 }).unwrap();
    s.apply(Command::ReportInstance {
        host: s.instances[&id].host.clone().unwrap(),
        id,
        state: stratus_common::agent::ActualState::Gone,
        reason: None,
        at_ms: 21,
    })
    .unwrap();
    assert_eq!(delete(&mut s), Ok(Outcome::Applied));
    assert!(s.group("alice", "web").is_none());
    assert!(
        s.group("admin", "web").is_some(),
        "another owner's group of that name stays"
    );
    assert!(
        s.placement_rules(id).is_empty(),
        "the rules forget the deleted group"
    );
    // An instance cannot be made in a group that does not exist.
    let create = creation(&s, "t1.micro", Some("h1"));
    assert_eq!(
        s.apply(Command::CreateInstanceWith {
            rules: rules(Some("web"), &[]),
            create: Box::new(create),
        }),
        Err(Rejection::UnknownGroup("web".into()))
    );
}

#[test]
fn a_pending_instance_placed_again_keeps_to_its_group() {
    let mut s = two_hosts();
    group(&mut s, "web", GroupPolicy::AntiAffinity);
    let web = rules(Some("web"), &[]);
    let on_h1 = run(&mut s, &web).unwrap();
    assert_eq!(s.instances[&on_h1].host.as_deref(), Some("h1"));
    let on_h2 = run(&mut s, &web).unwrap();
    s.apply(Command::HostContact {
        host: "h1".into(),
        up: false,
        at_ms: 30,
    })
    .unwrap();
    // h2 runs the group's other instance: the Pending one on h1 cannot move there.
    assert_eq!(
        s.apply(Command::ReplaceInstance {
            id: on_h1,
            from: "h1".into(),
            to: Some("h2".into()),
            failure: None,
            at_ms: 31,
        }),
        Err(Rejection::HostUnschedulable {
            host: "h2".into(),
            why: "running an instance of the instance's anti-affinity group",
        })
    );
    // Its own place does not count against it: with h2's instance gone, it may go there.
    s.apply(Command::KillInstance {
        id: on_h2,
        at_ms: 32,
    })
    .unwrap();
    s.apply(Command::ReportInstance {
        host: "h2".into(),
        id: on_h2,
        state: stratus_common::agent::ActualState::Gone,
        reason: None,
        at_ms: 33,
    })
    .unwrap();
    s.apply(Command::ReplaceInstance {
        id: on_h1,
        from: "h1".into(),
        to: Some("h2".into()),
        failure: None,
        at_ms: 34,
    })
    .unwrap();
    assert_eq!(s.instances[&on_h1].host.as_deref(), Some("h2"));
}

/// Local disk: each instance counts what its type may fill; a host takes no more than its
/// disk holds, the filter is named, and apply's re-check refuses a host the disk ran out on.
#[test]
fn a_host_takes_no_more_local_disk_than_it_has_and_the_disk_filter_is_named() {
    let mut s = bootstrapped();
    let mut big = s.hosts["h1"].clone();
    big.vcpus = 64;
    big.memory_mib = 65536;
    big.disk_gib = 20;
    s.apply(Command::RegisterHost(big)).unwrap();
    let mut made = Vec::new();
    for _ in 0..2 {
        let create = creation(&s, "m1.large", Some("h1"));
        let Ok(Outcome::InstanceCreated(id)) = s.apply(create) else {
            panic!("not created");
        };
        made.push(id);
    }
    assert_eq!(s.usage("h1").disk_gib, 16, "two m1.large of 8 GiB");
    // 4 GiB are left: a c1.medium (4) fits, an m1.large (8) does not.
    let holding = HashSet::new();
    let no_labels = BTreeSet::new();
    let ask = |disk_gib| Request {
        demand: Demand {
            vcpus: 1,
            memory_mib: 128,
            disk_gib,
            labels: &no_labels,
            group: None,
        },
        holding: &holding,
        preferred: None,
        strategy: Strategy::Spread,
    };
    assert_eq!(scheduler::place(&s, &ask(4)), Ok("h1".into()));
    let none = scheduler::place(&s, &ask(8)).unwrap_err();
    assert_eq!(none.removed, [(Filter::Disk, 1)]);
    assert_eq!(
        none.to_string(),
        "no host can take 1 vCPU and 128 MiB: of 1 host(s), 1 has too little free local disk \
         (disk filter: 8 GiB asked)"
    );
    let refused = s.apply(creation(&s, "m1.large", Some("h1"))).unwrap_err();
    assert!(matches!(refused, Rejection::NoRoom { .. }), "{refused:?}");
    // An instance that ends frees its disk.
    s.apply(Command::KillInstance {
        id: made[0],
        at_ms: 20,
    })
    .unwrap();
    s.apply(Command::ReportInstance {
        host: "h1".into(),
        id: made[0],
        state: stratus_common::agent::ActualState::Gone,
        reason: None,
        at_ms: 21,
    })
    .unwrap();
    assert_eq!(s.usage("h1").disk_gib, 8);
    assert_eq!(scheduler::place(&s, &ask(8)), Ok("h1".into()));
}
