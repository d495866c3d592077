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

pub(super) fn bootstrapped() -> State {
    let mut s = State::default();
    s.apply(Command::Bootstrap {
        cluster_id: "c0ffee00-1111".into(),
        admin: admin(),
        types: standard_types(),
        cpu_allocation_ratio_percent: 100,
        first_member: None,
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
        volume_pool_gib: None,
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

pub(super) fn create(s: &mut State, ty: &str, host: Option<&str>) -> Result<Outcome, Rejection> {
    let command = creation(s, ty, host);
    s.apply(command)
}

/// Alice's creation of an instance of type `ty` placed on `host` (Failed when none).
pub(super) fn creation(s: &State, ty: &str, host: Option<&str>) -> Command {
    Command::CreateInstance {
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
        network: None,
        ssh_key: None,
        user_data: None,
        volumes: Vec::new(),
        idempotency_key: None,
    }
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
        first_member: None,
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
    // The host measures from the API's acceptance: the creation, later the latest start or
    // reboot (the request its generation answers).
    let created = s.instances[&1].created_ms;
    assert_eq!(s.desired_for_host("h1")[0].accepted_at_ms, Some(created));
    let mut later = s.instances[&1].clone();
    later.transition(InstanceState::Rebooting, created + 500, None);
    later.transition(InstanceState::Running, created + 900, None);
    assert_eq!(later.accepted_at_ms(), created + 500);
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
    let bytes = crate::codec::encode(&a);
    let back: State = crate::codec::decode(&bytes).unwrap();
    assert_eq!(a, back);
}

// --- Networks and address leases ---

/// A bootstrapped state with a roomy host `big` and the network `tiny` (10.0.0.4/30, gateway
/// 10.0.0.5: one leasable address, 10.0.0.6) and `public` (192.0.2.0/24).
fn with_networks() -> State {
    let mut s = bootstrapped();
    s.apply(Command::RegisterHost(HostRecord {
        name: "big".into(),
        vcpus: 64,
        memory_mib: 65536,
        disk_gib: 100,
        domain_type: DomainType::Kvm,
        arch: "x86_64".into(),
        hypervisor: "QEMU".into(),
        registered_ms: 2,
        volume_pool_gib: None,
    }))
    .unwrap();
    for (name, cidr, gateway) in [
        ("tiny", "10.0.0.4/30", "10.0.0.5"),
        ("public", "192.0.2.0/24", "192.0.2.1"),
    ] {
        let record = NetworkRecord::from_definition(&stratus_common::api::CreateNetwork {
            name: name.into(),
            cidr: cidr.into(),
            gateway: gateway.into(),
            dns: vec!["192.0.2.53".into()],
            bridge: format!("br-{name}"),
            vlan: None,
        })
        .unwrap();
        assert_eq!(
            s.apply(Command::DefineNetwork(record)),
            Ok(Outcome::Applied)
        );
    }
    s
}

fn create_on(s: &mut State, network: &str, host: Option<&str>) -> Result<Outcome, Rejection> {
    s.apply(Command::CreateInstance {
        owner: "alice".into(),
        name: None,
        image: "appliance".into(),
        image_spec: s.images["appliance"].spec(),
        instance_type: "m1.small".into(),
        host: host.map(Into::into),
        failure: host.is_none().then(|| "no host".to_owned()),
        at_ms: 10,
        network: Some(network.into()),
        ssh_key: Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA jane@laptop".into()),
        user_data: Some("#cloud-config\n".into()),
        volumes: Vec::new(),
        idempotency_key: None,
    })
}

fn report_from(s: &mut State, host: &str, id: u64, state: ActualState) {
    s.apply(Command::ReportInstance {
        host: host.into(),
        id,
        state,
        reason: None,
        at_ms: 20,
    })
    .unwrap();
}

fn ip_of(s: &State, id: u64) -> Option<String> {
    instance_view(s, &s.instances[&id]).ip
}

/// No address is leased to two instances that hold leases, and the lease table is exactly the
/// interfaces of the instances holding leases.
fn assert_leases_consistent(s: &State) {
    let mut from_instances: Vec<(String, std::net::Ipv4Addr, u64)> = s
        .instances
        .values()
        .filter(|i| i.holds_lease())
        .flat_map(|i| i.nics.iter().map(|n| (n.network.clone(), n.ip, i.id)))
        .collect();
    from_instances.sort();
    let before = from_instances.len();
    from_instances.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    assert_eq!(before, from_instances.len(), "an address held twice");
    let table: Vec<_> = s
        .ipam
        .leases()
        .map(|(n, ip, id)| (n.to_owned(), ip, id))
        .collect();
    assert_eq!(table, from_instances);
}

#[test]
fn a_placed_instance_leases_the_lowest_free_address_with_its_mac() {
    let mut s = with_networks();
    assert_eq!(
        create_on(&mut s, "public", Some("big")),
        Ok(Outcome::InstanceCreated(1))
    );
    assert_eq!(
        create_on(&mut s, "public", Some("big")),
        Ok(Outcome::InstanceCreated(2))
    );
    let view = instance_view(&s, &s.instances[&2]);
    assert_eq!(view.ip.as_deref(), Some("192.0.2.3"));
    assert_eq!(view.nics[0].mac, "0a:53:c0:00:02:03");
    assert_eq!(view.nics[0].network, "public");
    assert_eq!(ip_of(&s, 1).as_deref(), Some("192.0.2.2"));
    let nic = &s.nic_specs(&s.instances[&1])[0];
    assert_eq!((nic.bridge.as_str(), nic.prefix), ("br-public", 24));
    assert_eq!(nic.gateway, "192.0.2.1");
    let public = network_view(&s, s.ipam.network("public").unwrap());
    assert_eq!((public.leases_used, public.leases_free), (2, 251));
    assert_eq!(
        s.instances[&1].ssh_key.as_deref(),
        Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA jane@laptop")
    );
    assert_leases_consistent(&s);
}

#[test]
fn an_exhausted_network_rejects_the_instance_and_changes_nothing() {
    let mut s = with_networks();
    create_on(&mut s, "tiny", Some("big")).unwrap();
    assert_eq!(ip_of(&s, 1).as_deref(), Some("10.0.0.6"));
    let before = s.clone();
    let refused = create_on(&mut s, "tiny", Some("big")).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "network tiny has no free address (2 in use, gateway included)"
    );
    assert_eq!(s, before, "no instance, no ID, no lease");
}

#[test]
fn an_unknown_network_is_rejected_and_changes_nothing() {
    let mut s = with_networks();
    let before = s.clone();
    assert_eq!(
        create_on(&mut s, "nope", Some("big")),
        Err(Rejection::Ipam(IpamError::UnknownNetwork("nope".into())))
    );
    assert_eq!(s, before);
}

#[test]
fn an_instance_that_could_not_be_placed_takes_no_address() {
    let mut s = with_networks();
    create_on(&mut s, "tiny", None).unwrap();
    assert_eq!(s.instances[&1].state, InstanceState::Failed);
    assert!(s.instances[&1].nics.is_empty());
    create_on(&mut s, "tiny", Some("big")).unwrap();
    assert_eq!(ip_of(&s, 2).as_deref(), Some("10.0.0.6"));
}

#[test]
fn the_address_returns_when_the_instance_is_done() {
    let mut s = with_networks();
    create_on(&mut s, "tiny", Some("big")).unwrap();
    report_from(&mut s, "big", 1, ActualState::Running);
    s.apply(Command::KillInstance { id: 1, at_ms: 30 }).unwrap();
    // Stopping: the domain may still run with the address.
    assert!(create_on(&mut s, "tiny", Some("big")).is_err());
    assert_eq!(ip_of(&s, 1).as_deref(), Some("10.0.0.6"));
    report_from(&mut s, "big", 1, ActualState::Gone);
    assert_eq!(s.instances[&1].state, InstanceState::Done);
    assert_eq!(ip_of(&s, 1), None, "a Done instance shows no address");
    assert_leases_consistent(&s);
    assert_eq!(
        create_on(&mut s, "tiny", Some("big")),
        Ok(Outcome::InstanceCreated(2))
    );
    assert_eq!(ip_of(&s, 2).as_deref(), Some("10.0.0.6"));
    assert_leases_consistent(&s);
}

#[test]
fn a_failed_instance_keeps_its_address_until_its_host_cleaned_up() {
    let mut s = with_networks();
    create_on(&mut s, "tiny", Some("big")).unwrap();
    report_from(&mut s, "big", 1, ActualState::Running);
    report_from(&mut s, "big", 1, ActualState::Failed);
    assert_eq!(s.instances[&1].state, InstanceState::Failed);
    assert!(matches!(
        create_on(&mut s, "tiny", Some("big")),
        Err(Rejection::Ipam(IpamError::Exhausted { .. }))
    ));
    assert_eq!(s.ipam.holder("tiny", "10.0.0.6".parse().unwrap()), Some(1));
    report_from(&mut s, "big", 1, ActualState::Gone);
    assert_eq!(s.ipam.holder("tiny", "10.0.0.6".parse().unwrap()), None);
    assert_eq!(
        create_on(&mut s, "tiny", Some("big")),
        Ok(Outcome::InstanceCreated(2))
    );
    assert_leases_consistent(&s);
    // A domain the host lost (Gone while running) is cleaned up at once.
    report_from(&mut s, "big", 2, ActualState::Gone);
    assert_eq!(s.instances[&2].state, InstanceState::Failed);
    assert_eq!(s.ipam.usage("tiny").leased, 0);
}

#[test]
fn replicas_applying_the_same_commands_lease_the_same_addresses() {
    let script = |s: &mut State| {
        for _ in 0..5 {
            create_on(s, "public", Some("big")).unwrap();
        }
        s.apply(Command::KillInstance { id: 2, at_ms: 30 }).unwrap();
        report_from(s, "big", 2, ActualState::Gone);
        report_from(s, "big", 4, ActualState::Failed);
        report_from(s, "big", 4, ActualState::Gone);
        create_on(s, "public", Some("big")).unwrap();
        create_on(s, "public", Some("big")).unwrap();
        create_on(s, "public", Some("big")).unwrap();
    };
    let (mut a, mut b) = (with_networks(), with_networks());
    script(&mut a);
    script(&mut b);
    assert_eq!(a, b);
    let ips: Vec<_> = (6..=8).map(|id| ip_of(&a, id).unwrap()).collect();
    assert_eq!(ips, ["192.0.2.3", "192.0.2.5", "192.0.2.7"]);
    assert_leases_consistent(&a);
    let back: State = crate::codec::decode(&crate::codec::encode(&a)).unwrap();
    assert_eq!(a, back);
}

#[test]
fn redefining_a_network_is_idempotent_but_a_different_one_is_refused() {
    let mut s = with_networks();
    let same = s.ipam.network("tiny").unwrap().clone();
    assert_eq!(
        s.apply(Command::DefineNetwork(same.clone())),
        Ok(Outcome::Unchanged)
    );
    let other = NetworkRecord {
        bridge: "br-other".into(),
        ..same
    };
    assert_eq!(
        s.apply(Command::DefineNetwork(other)),
        Err(Rejection::Ipam(IpamError::NetworkExists("tiny".into())))
    );
}

#[test]
fn entries_and_snapshots_from_before_networks_still_decode() {
    let mut s = bootstrapped();
    create(&mut s, "m1.small", Some("h1")).unwrap();
    // A CreateInstance entry and a state written before these fields existed.
    let mut entry = serde_json::to_value(Command::CreateInstance {
        owner: "alice".into(),
        name: None,
        image: "appliance".into(),
        image_spec: s.images["appliance"].spec(),
        instance_type: "m1.small".into(),
        host: Some("h1".into()),
        failure: None,
        at_ms: 10,
        network: None,
        ssh_key: None,
        user_data: None,
        volumes: Vec::new(),
        idempotency_key: None,
    })
    .unwrap();
    let fields = entry["CreateInstance"].as_object_mut().unwrap();
    for key in ["network", "ssh_key", "user_data", "volumes"] {
        fields.remove(key);
    }
    let command: Command = serde_json::from_value(entry).unwrap();
    assert!(matches!(
        command,
        Command::CreateInstance { network: None, .. }
    ));
    let mut state = serde_json::to_value(&s).unwrap();
    state.as_object_mut().unwrap().remove("ipam");
    for instance in state["instances"].as_object_mut().unwrap().values_mut() {
        let instance = instance.as_object_mut().unwrap();
        for key in ["nics", "ssh_key", "user_data"] {
            instance.remove(key);
        }
    }
    let old: State = serde_json::from_value(state).unwrap();
    assert_eq!(old, s);
    // Without networks, instances have no interface, as before.
    assert!(instance_view(&s, &s.instances[&1]).nics.is_empty());
}

fn create_with_key(s: &mut State, owner: &str, key: &str, at_ms: u64) -> Outcome {
    s.apply(Command::CreateInstance {
        owner: owner.into(),
        name: None,
        image: "appliance".into(),
        image_spec: s.images["appliance"].spec(),
        instance_type: "t1.micro".into(),
        // Failed at placement: it is an instance all the same, and takes no room.
        host: None,
        failure: Some("no room".into()),
        at_ms,
        network: None,
        ssh_key: None,
        user_data: None,
        volumes: Vec::new(),
        idempotency_key: Some(key.into()),
    })
    .unwrap()
}

#[test]
fn a_creation_repeated_with_its_idempotency_key_makes_nothing_new() {
    let mut s = bootstrapped();
    let first = create_with_key(&mut s, "alice", "k-1", 100);
    let Outcome::InstanceCreated(id) = first else {
        panic!("{first:?}")
    };
    let before = s.clone();
    // The retry: the same answer, and not a byte of the state changed.
    assert_eq!(create_with_key(&mut s, "alice", "k-1", 200), first);
    assert_eq!(s, before);
    // Whatever became of the instance, the key still names it.
    assert!(s.instances.contains_key(&id));
    assert_eq!(create_with_key(&mut s, "alice", "k-1", 400), first);
    // Another owner's key is another key; another key is another instance.
    assert_ne!(create_with_key(&mut s, "bob", "k-1", 500), first);
    assert_ne!(create_with_key(&mut s, "alice", "k-2", 600), first);
    assert_eq!(s.instances.len(), 3);
    // A day later the key is forgotten (when the owner next creates with a key).
    let later = 100 + keys::KEY_TTL_MS;
    let again = create_with_key(&mut s, "alice", "k-3", later);
    assert_ne!(again, first);
    assert_eq!(s.instance_for_key("alice", "k-1"), None);
    assert!(s.instance_for_key("alice", "k-3").is_some());
}
