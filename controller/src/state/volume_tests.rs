//! The volume rules of the state machine: ownership, quotas, one writer, the attach/detach
//! life of an attachment and what hosts are told.

use stratus_common::agent::{
    ActualState, DiskLocation, DiskReport, ReportedDisk, ReportedExport, VolumeReport,
};
use stratus_common::api::{DomainType, InstanceState};
use stratus_common::volumes::{AttachmentState, UpdateVolume, VolumeState, VolumeType};

use super::tests::bootstrapped;
use super::*;

const V1: &str = "11111111-1111-4111-8111-111111111111";
const V2: &str = "22222222-2222-4222-8222-222222222222";
const QUOTA: Quota = Quota {
    max_volumes: 3,
    max_gib: 10,
};

/// A cloud with hosts h1 (which also stores volumes, 50 GiB) and h2 (no pool).
fn cloud() -> State {
    let mut s = bootstrapped();
    let mut storage = s.hosts["h1"].clone();
    storage.volume_pool_gib = Some(50);
    s.apply(Command::RegisterHost(storage)).unwrap();
    let mut other = s.hosts["h1"].clone();
    other.name = "h2".into();
    other.volume_pool_gib = None;
    other.domain_type = DomainType::Qemu;
    s.apply(Command::RegisterHost(other)).unwrap();
    s
}

fn record(id: &str, owner: &str, size_gib: u64) -> VolumeRecord {
    VolumeRecord {
        id: id.into(),
        owner: owner.into(),
        tag: "t".into(),
        size_gib,
        public: false,
        volume_type: VolumeType::DataRw,
        host: "h1".into(),
        state: VolumeState::Creating,
        reason: None,
        created_ms: 5,
        attachments: Vec::new(),
    }
}

/// Creates an available volume.
fn volume(s: &mut State, id: &str, owner: &str) {
    s.apply(Command::CreateVolume {
        idempotency_key: None,
        record: Box::new(record(id, owner, 1)),
        quota: QUOTA,
    })
    .unwrap();
    s.apply(Command::ReportVolume {
        host: "h1".into(),
        id: id.into(),
        state: VolumeReport::Ready,
        reason: None,
    })
    .unwrap();
}

/// A Running instance of alice on `host`, with the given launch disks.
fn instance(s: &mut State, host: &str, volumes: &[&str]) -> Result<u64, Rejection> {
    let outcome = s.apply(Command::CreateInstance {
        owner: "alice".into(),
        name: None,
        image: "appliance".into(),
        image_spec: s.images["appliance"].spec(),
        instance_type: "t1.micro".into(),
        host: Some(host.into()),
        failure: None,
        at_ms: 10,
        network: None,
        ssh_key: None,
        user_data: None,
        volumes: volumes
            .iter()
            .map(|v| (v.to_string(), format!("sl-export-{v}")))
            .collect(),
        idempotency_key: None,
    })?;
    let Outcome::InstanceCreated(id) = outcome else {
        panic!("{outcome:?}")
    };
    s.apply(Command::ReportInstance {
        host: host.into(),
        id,
        state: ActualState::Running,
        reason: None,
        at_ms: 11,
    })
    .unwrap();
    Ok(id)
}

fn attach(s: &mut State, volume: &str, instance: u64, who: &str) -> Result<Outcome, Rejection> {
    s.apply(Command::AttachVolume {
        volume: volume.into(),
        instance,
        caller: who.into(),
        admin: false,
        export: format!("sl-export-{volume}-{instance}"),
        at_ms: 20,
    })
}

fn detach(
    s: &mut State,
    volume: &str,
    instance: u64,
    force: bool,
    at_ms: u64,
) -> Result<Outcome, Rejection> {
    s.apply(Command::DetachVolume {
        volume: volume.into(),
        instance,
        caller: "alice".into(),
        admin: false,
        force,
        stuck_after_ms: 60_000,
        at_ms,
    })
}

fn disk_report(s: &mut State, host: &str, instance: u64, volume: &str, state: DiskReport) {
    s.apply(Command::ReportDisk {
        host: host.into(),
        disk: ReportedDisk {
            instance,
            volume: volume.into(),
            state,
            reason: Some("because".into()),
        },
        at_ms: 30,
    })
    .unwrap();
}

fn attachment_states(s: &State, volume: &str) -> Vec<(u64, AttachmentState)> {
    s.volumes[volume]
        .attachments
        .iter()
        .map(|a| (a.instance, a.state))
        .collect()
}

#[test]
fn a_volume_is_created_on_its_storage_host_and_becomes_available() {
    let mut s = cloud();
    s.apply(Command::CreateVolume {
        idempotency_key: None,
        record: Box::new(record(V1, "alice", 5)),
        quota: QUOTA,
    })
    .unwrap();
    assert_eq!(s.volumes[V1].state, VolumeState::Creating);
    let (volumes, exports) = s.storage_desired_for_host("h1");
    assert_eq!(volumes.len(), 1);
    assert_eq!(volumes[0].size_bytes, 5 << 30);
    assert!(volumes[0].present);
    assert!(exports.is_empty());
    assert!(s.storage_desired_for_host("h2").0.is_empty());
    s.apply(Command::ReportVolume {
        host: "h1".into(),
        id: V1.into(),
        state: VolumeReport::Ready,
        reason: None,
    })
    .unwrap();
    assert_eq!(s.volumes[V1].state, VolumeState::Available);
    assert_eq!(s.pool_free_gib("h1"), 45);
}

#[test]
fn a_host_without_room_or_pool_refuses_the_volume() {
    let mut s = cloud();
    let mut big = record(V1, "alice", 51);
    let roomy = Quota {
        max_volumes: 10,
        max_gib: 1000,
    };
    assert!(matches!(
        s.apply(Command::CreateVolume {
            idempotency_key: None,
            record: Box::new(big.clone()),
            quota: roomy
        }),
        Err(Rejection::Volume(VolumeError::NoRoom { .. }))
    ));
    big.size_gib = 1;
    big.host = "h2".into();
    assert!(matches!(
        s.apply(Command::CreateVolume {
            idempotency_key: None,
            record: Box::new(big),
            quota: roomy
        }),
        Err(Rejection::Volume(VolumeError::NoRoom { .. }))
    ));
    assert!(s.volumes.is_empty());
}

#[test]
fn quotas_count_disks_and_gib_per_user() {
    let mut s = cloud();
    for id in [V1, V2, "33333333-3333-4333-8333-333333333333"] {
        volume(&mut s, id, "alice");
    }
    let fourth = s.apply(Command::CreateVolume {
        idempotency_key: None,
        record: Box::new(record("44444444-4444-4444-8444-444444444444", "alice", 1)),
        quota: QUOTA,
    });
    assert_eq!(
        fourth.unwrap_err().to_string(),
        "quota exceeded: alice may have at most 3 disks"
    );
    // Bob has his own quota; 8 GiB more than his 10 would be over.
    s.apply(Command::CreateVolume {
        idempotency_key: None,
        record: Box::new(record("55555555-5555-4555-8555-555555555555", "bob", 3)),
        quota: QUOTA,
    })
    .unwrap();
    let too_big = s.apply(Command::CreateVolume {
        idempotency_key: None,
        record: Box::new(record("66666666-6666-4666-8666-666666666666", "bob", 8)),
        quota: QUOTA,
    });
    assert_eq!(
        too_big.unwrap_err().to_string(),
        "quota exceeded: bob may have at most 10 GiB of disks (3 GiB used, 8 GiB asked)"
    );
    assert_eq!(s.volumes.len(), 4);
}

#[test]
fn only_the_owner_deletes_and_never_a_disk_in_use() {
    let mut s = cloud();
    volume(&mut s, V1, "alice");
    s.volumes.get_mut(V1).unwrap().public = true;
    let by_bob = s.apply(Command::DeleteVolume {
        id: V1.into(),
        caller: "bob".into(),
        admin: false,
    });
    assert_eq!(
        by_bob.unwrap_err().to_string(),
        format!("Not enough rights to delete disk {V1}")
    );
    let id = instance(&mut s, "h1", &[V1]).unwrap();
    let in_use = s.apply(Command::DeleteVolume {
        id: V1.into(),
        caller: "alice".into(),
        admin: false,
    });
    assert_eq!(
        in_use.unwrap_err().to_string(),
        format!("disk {V1} is in use by instance {id}")
    );
    assert_eq!(s.volumes[V1].state, VolumeState::Available);
    // Killed and cleaned up on its host: the disk is free and can go.
    s.apply(Command::KillInstance { id, at_ms: 40 }).unwrap();
    s.apply(Command::ReportInstance {
        host: "h1".into(),
        id,
        state: ActualState::Gone,
        reason: None,
        at_ms: 41,
    })
    .unwrap();
    assert!(s.volumes[V1].attachments.is_empty());
    s.apply(Command::DeleteVolume {
        id: V1.into(),
        caller: "alice".into(),
        admin: false,
    })
    .unwrap();
    assert!(!s.storage_desired_for_host("h1").0[0].present);
    s.apply(Command::ReportVolume {
        host: "h1".into(),
        id: V1.into(),
        state: VolumeReport::Deleted,
        reason: None,
    })
    .unwrap();
    assert!(s.volumes.is_empty());
}

#[test]
fn a_private_disk_of_another_user_does_not_exist_for_them() {
    let mut s = cloud();
    volume(&mut s, V1, "bob");
    let err = instance(&mut s, "h1", &[V1]).unwrap_err();
    assert_eq!(err.to_string(), format!("disk {V1} not found"));
    // Nothing was made: no instance, no attachment.
    assert!(s.instances.is_empty());
    assert!(s.volumes[V1].attachments.is_empty());
    let update = s.apply(Command::UpdateVolume {
        id: V1.into(),
        caller: "alice".into(),
        admin: false,
        update: UpdateVolume {
            public: Some(true),
            ..Default::default()
        },
    });
    assert!(matches!(
        update,
        Err(Rejection::Volume(VolumeError::Unknown(_)))
    ));
}

#[test]
fn launch_disks_attach_local_or_over_an_export() {
    let mut s = cloud();
    volume(&mut s, V1, "alice");
    volume(&mut s, V2, "alice");
    let local = instance(&mut s, "h1", &[V1]).unwrap();
    let remote = instance(&mut s, "h2", &[V2]).unwrap();
    let on_h1 = &s.desired_for_host("h1")[0];
    assert_eq!(on_h1.disks.len(), 1);
    assert_eq!(on_h1.disks[0].target, "vdb");
    assert_eq!(on_h1.disks[0].source, DiskLocation::Local);
    assert!(on_h1.disks[0].attach);
    // The remote disk waits for its export, which the storage host is told to serve.
    assert_eq!(
        s.desired_for_host("h2")[0].disks[0].source,
        DiskLocation::Pending
    );
    let exports = s.storage_desired_for_host("h1").1;
    assert_eq!(exports.len(), 1);
    assert_eq!(exports[0].volume, V2);
    // It opens only for the host of the instance it serves.
    assert_eq!(exports[0].client, "h2");
    s.apply(Command::ReportExport {
        host: "h1".into(),
        export: ReportedExport {
            name: exports[0].name.clone(),
            host: "127.0.0.1".into(),
            port: 10809,
        },
    })
    .unwrap();
    assert_eq!(
        s.desired_for_host("h2")[0].disks[0].source,
        DiskLocation::Nbd {
            host: "127.0.0.1".into(),
            port: 10809,
            export: exports[0].name.clone(),
            // Over TLS, the server checked to be the storage host.
            tls_server: Some("h1".into()),
        }
    );
    disk_report(&mut s, "h1", local, V1, DiskReport::Attached);
    assert_eq!(
        attachment_states(&s, V1),
        vec![(local, AttachmentState::Attached)]
    );
    let _ = remote;
}

#[test]
fn a_read_write_disk_has_one_user_and_the_second_attach_is_refused() {
    let mut s = cloud();
    volume(&mut s, V1, "alice");
    let a = instance(&mut s, "h1", &[]).unwrap();
    let b = instance(&mut s, "h1", &[]).unwrap();
    assert_eq!(attach(&mut s, V1, a, "alice"), Ok(Outcome::Applied));
    let second = attach(&mut s, V1, b, "alice").unwrap_err();
    assert_eq!(
        second.to_string(),
        format!("disk {V1} is read-write and already attached to instance {a}")
    );
    // Also at launch: nothing is created.
    let before = s.instances.len();
    assert!(instance(&mut s, "h1", &[V1]).is_err());
    assert_eq!(s.instances.len(), before);
    assert_eq!(
        attachment_states(&s, V1),
        vec![(a, AttachmentState::Attaching)]
    );
}

#[test]
fn a_read_only_disk_is_shared() {
    let mut s = cloud();
    volume(&mut s, V1, "alice");
    s.apply(Command::UpdateVolume {
        id: V1.into(),
        caller: "alice".into(),
        admin: false,
        update: UpdateVolume {
            volume_type: Some(VolumeType::DataRo),
            ..Default::default()
        },
    })
    .unwrap();
    let a = instance(&mut s, "h1", &[V1]).unwrap();
    let b = instance(&mut s, "h2", &[V1]).unwrap();
    assert_eq!(s.volumes[V1].attachments.len(), 2);
    assert!(s.desired_for_host("h1")[0].disks[0].read_only);
    assert!(s.storage_desired_for_host("h1").1[0].read_only);
    // Its type cannot change while in use.
    let change = s.apply(Command::UpdateVolume {
        id: V1.into(),
        caller: "alice".into(),
        admin: false,
        update: UpdateVolume {
            volume_type: Some(VolumeType::DataRw),
            ..Default::default()
        },
    });
    assert!(matches!(
        change,
        Err(Rejection::Volume(VolumeError::TypeWhileAttached(_)))
    ));
    let _ = (a, b);
}

#[test]
fn hot_plug_needs_a_running_instance_and_takes_the_next_free_device() {
    let mut s = cloud();
    volume(&mut s, V1, "alice");
    volume(&mut s, V2, "alice");
    let id = instance(&mut s, "h1", &[V1]).unwrap();
    attach(&mut s, V2, id, "alice").unwrap();
    let targets: Vec<String> = s.desired_for_host("h1")[0]
        .disks
        .iter()
        .map(|d| d.target.clone())
        .collect();
    assert_eq!(targets, ["vdb", "vdc"]);
    assert!(s.volumes[V2].attachments[0].hotplug);
    assert!(!s.volumes[V1].attachments[0].hotplug);
    // Bob cannot plug into alice's instance (it does not exist for him).
    let third = "33333333-3333-4333-8333-333333333333";
    volume(&mut s, third, "bob");
    assert!(attach(&mut s, third, id, "bob").is_err());
    // A stopping instance takes no disk.
    s.apply(Command::KillInstance { id, at_ms: 50 }).unwrap();
    s.volumes.get_mut(third).unwrap().owner = "alice".into();
    let late = attach(&mut s, third, id, "alice").unwrap_err();
    assert_eq!(
        late.to_string(),
        format!("instance {id} is Stopping: disks are plugged into Running instances")
    );
}

#[test]
fn a_detach_is_done_only_when_the_host_reports_the_device_removed() {
    let mut s = cloud();
    volume(&mut s, V1, "alice");
    let id = instance(&mut s, "h1", &[]).unwrap();
    attach(&mut s, V1, id, "alice").unwrap();
    disk_report(&mut s, "h1", id, V1, DiskReport::Attached);
    detach(&mut s, V1, id, false, 100).unwrap();
    assert_eq!(
        attachment_states(&s, V1),
        vec![(id, AttachmentState::Detaching)]
    );
    assert!(!s.desired_for_host("h1")[0].disks[0].attach);
    // Asking again changes nothing; the disk is not free for anyone else meanwhile.
    assert_eq!(detach(&mut s, V1, id, false, 200), Ok(Outcome::Unchanged));
    let other = instance(&mut s, "h1", &[]).unwrap();
    assert!(attach(&mut s, V1, other, "alice").is_err());
    // A report from another host is refused.
    let wrong = s.apply(Command::ReportDisk {
        host: "h2".into(),
        disk: ReportedDisk {
            instance: id,
            volume: V1.into(),
            state: DiskReport::Detached,
            reason: None,
        },
        at_ms: 300,
    });
    assert!(wrong.is_err());
    disk_report(&mut s, "h1", id, V1, DiskReport::Detached);
    assert!(s.volumes[V1].attachments.is_empty());
    assert!(s.desired_for_host("h1")[0].disks.is_empty());
    attach(&mut s, V1, other, "alice").unwrap();
}

#[test]
fn a_stuck_detach_is_forced_only_after_the_timeout() {
    let mut s = cloud();
    volume(&mut s, V1, "alice");
    let id = instance(&mut s, "h1", &[V1]).unwrap();
    detach(&mut s, V1, id, false, 1_000).unwrap();
    let early = detach(&mut s, V1, id, true, 31_000).unwrap_err();
    assert_eq!(
        early.to_string(),
        format!("disk {V1} has been detaching for 30 s; a forced detach is allowed only once it is stuck (after 60 s)")
    );
    assert_eq!(
        attachment_states(&s, V1),
        vec![(id, AttachmentState::Detaching)]
    );
    let view = volume_view(&s, &s.volumes[V1], 61_000, 60_000);
    assert_eq!(view.attachments[0].state, AttachmentState::Stuck);
    detach(&mut s, V1, id, true, 61_000).unwrap();
    assert!(s.volumes[V1].attachments.is_empty());
    assert!(s.volumes[V1].reason.as_deref().unwrap().contains("forced"));
}

#[test]
fn detaching_a_disk_not_attached_is_a_clear_error() {
    let mut s = cloud();
    volume(&mut s, V1, "alice");
    let id = instance(&mut s, "h1", &[]).unwrap();
    let err = detach(&mut s, V1, id, false, 10).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("DISK {V1}: Disk is not attached to VM {id}")
    );
}

#[test]
fn a_failed_hot_plug_frees_the_disk_with_the_reason() {
    let mut s = cloud();
    volume(&mut s, V1, "alice");
    let id = instance(&mut s, "h1", &[]).unwrap();
    attach(&mut s, V1, id, "alice").unwrap();
    disk_report(&mut s, "h1", id, V1, DiskReport::Failed);
    assert!(s.volumes[V1].attachments.is_empty());
    assert_eq!(
        s.volumes[V1].reason.as_deref(),
        Some(format!("attaching to instance {id} failed: because").as_str())
    );
}

#[test]
fn a_failed_instance_keeps_its_disks_until_its_host_cleaned_up() {
    let mut s = cloud();
    volume(&mut s, V1, "alice");
    let id = instance(&mut s, "h1", &[V1]).unwrap();
    s.apply(Command::ReportInstance {
        host: "h1".into(),
        id,
        state: ActualState::Failed,
        reason: Some("crashed".into()),
        at_ms: 50,
    })
    .unwrap();
    assert_eq!(s.instances[&id].state, InstanceState::Failed);
    // The domain may still exist on the host: the disk is still in use.
    assert_eq!(s.volumes[V1].attachments.len(), 1);
    s.apply(Command::ReportInstance {
        host: "h1".into(),
        id,
        state: ActualState::Gone,
        reason: None,
        at_ms: 51,
    })
    .unwrap();
    assert!(s.volumes[V1].attachments.is_empty());
}

#[test]
fn a_volume_creation_repeated_with_its_idempotency_key_makes_no_second_disk() {
    let mut s = cloud();
    let create = |s: &mut State, id: &str, key: &str| {
        s.apply(Command::CreateVolume {
            idempotency_key: Some(key.into()),
            record: Box::new(record(id, "alice", 2)),
            quota: QUOTA,
        })
    };
    assert_eq!(
        create(&mut s, V1, "k-1"),
        Ok(Outcome::VolumeCreated(V1.into()))
    );
    let before = s.clone();
    // The retry carries a UUID of its own (chosen before proposing): the first disk is the
    // answer, nothing changes, and the quota is not charged twice.
    assert_eq!(
        create(&mut s, V2, "k-1"),
        Ok(Outcome::VolumeCreated(V1.into()))
    );
    assert_eq!(s, before);
    assert_eq!(
        create(&mut s, V2, "k-2"),
        Ok(Outcome::VolumeCreated(V2.into()))
    );
    assert_eq!(s.volumes.len(), 2);
    assert_eq!(s.volume_keys.get("alice", "k-1"), Some(&V1.to_string()));
    assert_eq!(s.volume_keys.get("bob", "k-1"), None);
}
