//! Every command and a state holding every kind of record survive the stored format unchanged,
//! and the format itself does not change unnoticed.

use sha2::{Digest, Sha256};
use stratus_common::agent::{
    ActualState, DiskReport, ImageSpec, ReportedDisk, ReportedExport, VolumeReport,
};
use stratus_common::api::{Artifact, Compression, DiskFormat, DomainType};
use stratus_common::volumes::{UpdateVolume, VolumeState, VolumeType};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use stratus_common::api::InstanceType;
use stratus_common::marketplace::SignedMetadata;

use super::snapshot::{SnapshotV2, SnapshotV3, SnapshotV4};
use super::Persist;
use crate::codec;
use crate::marketplace::{TrustPath, VerifiedEntry};
use crate::state::{
    ApiToken, CertificateGrant, Command, EndorserRecord, HostRecord, ImageRecord, JoinToken,
    MemberChange, MemberRecord, NetworkRecord, Quota, State, UserRecord, VolumeRecord,
};

const VOLUME: &str = "11111111-1111-4111-8111-111111111111";

fn artifact(name: &str) -> Artifact {
    Artifact {
        locations: vec![
            format!("http://images.example/{name}"),
            format!("file:///srv/{name}"),
        ],
        sha256: "ab".repeat(32),
        size: Some(1 << 20),
        compression: Compression::Xz,
    }
}

fn spec() -> ImageSpec {
    ImageSpec {
        name: "appliance".into(),
        format: DiskFormat::Qcow2,
        disk: artifact("disk"),
        kernel: Some(artifact("vmlinuz")),
        initrd: Some(artifact("initrd")),
        cmdline: Some("console=ttyS0".into()),
    }
}

/// A Marketplace entry as it was uploaded, its signed metadata written out here (not made by
/// today's types), so an entry stored by an earlier build must still load.
fn entry() -> VerifiedEntry {
    let metadata = r#"{"identifier":"GUBl1Wn_mBsrdqgPnhsgAAbVkBo","kind":"machine","format":"qcow2","compression":"xz","size":1048576,"checksums":{"sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"},"os":"ttylinux","os_version":"16","arch":"x86_64","version":"1.0","description":"a test appliance","locations":["http://images.example/a.qcow2.xz"],"endorser":{"email":"endorser@example.org","subject":"CN=endorser"},"created":"2025-01-01T00:00:00Z","valid_until":"2026-01-01T00:00:00Z","kernel":{"locations":["http://images.example/vmlinuz"],"sha256":"abababababababababababababababababababababababababababababababab"}}"#;
    let envelope = SignedMetadata {
        protected: URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","x5c":[]}"#),
        payload: URL_SAFE_NO_PAD.encode(metadata),
        signature: URL_SAFE_NO_PAD.encode([7u8; 64]),
    };
    VerifiedEntry {
        metadata: envelope.metadata().expect("the entry's metadata parses"),
        endorser_email: "endorser@example.org".into(),
        endorser_subject: "CN=endorser".into(),
        cert_sha256: "00".repeat(32),
        created_ms: 1_735_689_600_000,
        valid_until_ms: 1_767_225_600_000,
        trust: TrustPath::CertificateAuthority {
            ca_subject: "CN=Site CA".into(),
        },
        envelope,
    }
}

fn host(name: &str, pool: Option<u64>) -> HostRecord {
    HostRecord {
        name: name.into(),
        vcpus: 8,
        memory_mib: 16384,
        disk_gib: 100,
        domain_type: DomainType::Qemu,
        arch: "x86_64".into(),
        hypervisor: "QEMU".into(),
        registered_ms: 2,
        volume_pool_gib: pool,
    }
}

/// One of every command, with every optional field set, in an order that applies.
fn commands() -> Vec<Command> {
    vec![
        Command::Bootstrap {
            cluster_id: "c0ffee00-1111".into(),
            admin: UserRecord {
                name: "admin".into(),
                password_hash: "$argon2id$x".into(),
                admin: true,
                created_ms: 1,
            },
            types: vec![
                InstanceType {
                    name: "m1.small".into(),
                    vcpus: 1,
                    memory_mib: 256,
                    disk_gib: 2,
                },
                InstanceType {
                    name: "m1.large".into(),
                    vcpus: 4,
                    memory_mib: 4096,
                    disk_gib: 20,
                },
            ],
            cpu_allocation_ratio_percent: 150,
            first_member: Some(MemberRecord {
                id: 1,
                address: "127.0.0.1:8450".into(),
                api_address: "127.0.0.1:8440".into(),
                incarnation: "inc-1".into(),
                voter: true,
            }),
        },
        Command::CreateUser(UserRecord {
            name: "alice".into(),
            password_hash: "$argon2id$y".into(),
            admin: false,
            created_ms: 3,
        }),
        Command::RegisterHost(host("h1", Some(50))),
        Command::RegisterHost(host("h2", None)),
        Command::RegisterImage(ImageRecord {
            name: "appliance".into(),
            format: DiskFormat::Raw,
            disk: artifact("disk"),
            kernel: Some(artifact("vmlinuz")),
            initrd: None,
            cmdline: Some("quiet".into()),
            owner: "admin".into(),
            created_ms: 4,
        }),
        Command::AppendEntry {
            entry: Box::new(entry()),
            uploaded_ms: 6,
        },
        Command::RegisterEndorser(EndorserRecord {
            pem: "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".into(),
            cert_sha256: "ef".repeat(32),
            subject: "CN=endorser".into(),
            emails: vec!["endorser@example.org".into()],
            not_after_ms: 99,
            added_ms: 7,
            added_by: "admin".into(),
        }),
        Command::Precache {
            host: "h1".into(),
            spec: spec(),
        },
        Command::DefineNetwork(NetworkRecord {
            name: "public".into(),
            cidr: "192.0.2.0/24".into(),
            gateway: "192.0.2.1".into(),
            dns: vec!["192.0.2.53".into()],
            bridge: "br-public".into(),
            vlan: Some(42),
        }),
        Command::CreateVolume {
            record: Box::new(VolumeRecord {
                id: VOLUME.into(),
                owner: "alice".into(),
                tag: "data".into(),
                size_gib: 2,
                public: false,
                volume_type: VolumeType::DataRw,
                host: "h1".into(),
                state: VolumeState::Creating,
                reason: None,
                created_ms: 8,
                attachments: Vec::new(),
            }),
            quota: Quota {
                max_volumes: 5,
                max_gib: 20,
            },
            idempotency_key: Some("volume-key-1".into()),
        },
        Command::ReportVolume {
            host: "h1".into(),
            id: VOLUME.into(),
            state: VolumeReport::Ready,
            reason: Some("made".into()),
        },
        Command::UpdateVolume {
            id: VOLUME.into(),
            caller: "alice".into(),
            admin: false,
            update: UpdateVolume {
                public: Some(true),
                tag: Some("renamed".into()),
                volume_type: Some(VolumeType::DataRw),
            },
        },
        Command::CreateInstance {
            owner: "alice".into(),
            name: Some("web".into()),
            image: "appliance".into(),
            image_spec: spec(),
            instance_type: "m1.small".into(),
            host: Some("h2".into()),
            failure: None,
            at_ms: 10,
            network: Some("public".into()),
            ssh_key: Some("ssh-ed25519 AAAA alice".into()),
            user_data: Some("#!/bin/sh\n".into()),
            volumes: vec![(VOLUME.into(), "export-1".into())],
            idempotency_key: Some("key-1".into()),
        },
        Command::ReportExport {
            host: "h1".into(),
            export: ReportedExport {
                name: "export-1".into(),
                host: "127.0.0.1".into(),
                port: 10809,
            },
        },
        Command::ReportInstance {
            host: "h2".into(),
            id: 1,
            state: ActualState::Running,
            reason: Some("booted".into()),
            at_ms: 11,
        },
        Command::ReportDisk {
            host: "h2".into(),
            disk: ReportedDisk {
                instance: 1,
                volume: VOLUME.into(),
                state: DiskReport::Attached,
                reason: None,
            },
            at_ms: 12,
        },
        Command::DetachVolume {
            volume: VOLUME.into(),
            instance: 1,
            caller: "alice".into(),
            admin: false,
            force: true,
            stuck_after_ms: 60_000,
            at_ms: 13,
        },
        Command::AttachVolume {
            volume: VOLUME.into(),
            instance: 1,
            caller: "alice".into(),
            admin: false,
            export: "export-2".into(),
            at_ms: 14,
        },
        Command::KillInstance { id: 1, at_ms: 15 },
        Command::Unpin {
            host: "h1".into(),
            sha256: "99".repeat(32),
        },
        Command::DeleteVolume {
            id: VOLUME.into(),
            caller: "admin".into(),
            admin: true,
        },
    ]
}

/// The commands of state-machine version 3: trust.
fn trust_commands() -> Vec<Command> {
    vec![
        Command::CreateJoinToken {
            digest: "aa".repeat(32),
            token: JoinToken {
                host: "h1".into(),
                created_ms: 20,
                expires_ms: 3_600_020,
                by: "admin".into(),
            },
        },
        Command::IssueHostCertificate {
            host: "h1".into(),
            serial: "0102".into(),
            not_after_ms: 90_000_000,
            grant: CertificateGrant::JoinToken("aa".repeat(32)),
            at_ms: 21,
        },
        Command::IssueHostCertificate {
            host: "h1".into(),
            serial: "0304".into(),
            not_after_ms: 95_000_000,
            grant: CertificateGrant::Renewal("0102".into()),
            at_ms: 22,
        },
        Command::CreateJoinToken {
            digest: "bb".repeat(32),
            token: JoinToken {
                host: "h2".into(),
                created_ms: 23,
                expires_ms: 3_600_023,
                by: "admin".into(),
            },
        },
        Command::CreateApiToken {
            digest: "cc".repeat(32),
            token: ApiToken {
                id: "tok-1".into(),
                owner: "alice".into(),
                name: "ci".into(),
                created_ms: 24,
                expires_ms: Some(86_400_024),
            },
        },
        Command::CreateApiToken {
            digest: "dd".repeat(32),
            token: ApiToken {
                id: "tok-2".into(),
                owner: "alice".into(),
                name: "laptop".into(),
                created_ms: 25,
                expires_ms: None,
            },
        },
        Command::RevokeApiToken {
            id: "tok-2".into(),
            caller: "alice".into(),
            admin: false,
        },
        Command::By {
            actor: "admin (certificate)".into(),
            at_ms: 26,
            command: Box::new(Command::MapCertificateSubject {
                subject: "CN=Alice,O=Example".into(),
                user: Some("alice".into()),
            }),
        },
        Command::By {
            actor: "admin (token ops)".into(),
            at_ms: 27,
            command: Box::new(Command::RevokeHost { host: "h2".into() }),
        },
    ]
}

/// The state the commands of version 2 and 3 make.
fn state_v3() -> State {
    let mut s = with_a_stopped_instance(state());
    for command in trust_commands() {
        s.apply(command).unwrap();
    }
    s
}

/// `state` in the frozen stored form of version 2 (which has no trust).
fn as_v2(state: &State) -> SnapshotV2 {
    let stored = state.store();
    SnapshotV2 {
        cluster_id: stored.cluster_id,
        users: stored.users,
        hosts: stored.hosts,
        types: stored.types,
        images: stored.images,
        marketplace: stored.marketplace,
        endorsers: stored.endorsers,
        precache: stored.precache,
        instances: stored.instances,
        next_instance_id: stored.next_instance_id,
        cpu_allocation_ratio_percent: stored.cpu_allocation_ratio_percent,
        ipam: stored.ipam,
        volumes: stored.volumes,
        members: stored.members,
        instance_keys: stored.instance_keys,
        volume_keys: stored.volume_keys,
    }
}

/// `state` in the frozen stored form of version 3 (which has no hosts' life).
fn as_v3(state: &State) -> SnapshotV3 {
    let stored = state.store();
    SnapshotV3 {
        cluster_id: stored.cluster_id,
        users: stored.users,
        hosts: stored.hosts,
        types: stored.types,
        images: stored.images,
        marketplace: stored.marketplace,
        endorsers: stored.endorsers,
        precache: stored.precache,
        instances: stored.instances,
        next_instance_id: stored.next_instance_id,
        cpu_allocation_ratio_percent: stored.cpu_allocation_ratio_percent,
        ipam: stored.ipam,
        volumes: stored.volumes,
        members: stored.members,
        instance_keys: stored.instance_keys,
        volume_keys: stored.volume_keys,
        trust: stored.trust,
        audit: stored.audit,
    }
}

/// The state the commands make, with a second instance still holding its address and disk.
fn state() -> State {
    let mut s = State::default();
    for command in commands() {
        // Some refusals are expected (a volume still attached cannot be deleted): the state
        // is what it is, and it is the same on every replica.
        let _ = s.apply(command);
    }
    let mut again = commands()
        .into_iter()
        .find(|c| matches!(c, Command::CreateInstance { .. }))
        .unwrap();
    if let Command::CreateInstance {
        idempotency_key,
        volumes,
        ..
    } = &mut again
    {
        *idempotency_key = Some("key-2".into());
        volumes.clear();
    }
    s.apply(again).unwrap();
    s
}

#[test]
fn every_command_comes_back_as_it_went() {
    for command in commands().into_iter().chain(trust_commands()) {
        let bytes = codec::encode(&command);
        let back: Command = codec::decode(&bytes).unwrap();
        assert_eq!(back, command);
    }
}

#[test]
fn a_state_with_every_kind_of_record_comes_back_as_it_went() {
    let s = state();
    assert_eq!(s.instances.len(), 2);
    assert_eq!(s.volumes.len(), 1);
    assert_eq!(s.marketplace.len(), 1);
    assert_eq!(s.endorsers.len(), 1);
    assert_eq!(s.precache["h1"].len(), 1);
    assert_eq!(s.instance_keys.count("alice"), 2);
    assert_eq!(s.volume_keys.count("alice"), 1);
    assert_eq!(s.ipam.networks().count(), 1);
    assert_eq!(s.members.len(), 1);
    let back: State = codec::decode(&codec::encode(&s)).unwrap();
    assert_eq!(back, s);
    // The same state read from version 1's JSON (stores written before this format).
    let json: State = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
    assert_eq!(json, s);
    let s = state_v3();
    assert_eq!(s.trust.join_tokens.len(), 0, "h1's was used, h2's revoked");
    assert_eq!(s.trust.host_certificates["h1"].len(), 2);
    assert_eq!(s.trust.api_tokens.len(), 1);
    assert_eq!(s.trust.certificate_subjects.len(), 1);
    assert_eq!(s.audit.of("user/alice")[0].by, "admin (certificate)");
    assert_eq!(s.audit.of("host/h2")[0].action, "revoke");
    let back: State = codec::decode(&codec::encode(&s)).unwrap();
    assert_eq!(back, s);
}

#[test]
fn a_snapshot_of_version_2_is_read_as_a_state_without_trust() {
    let s = state();
    let payload = bincode::encode_to_vec(as_v2(&s), super::config()).unwrap();
    let back = State::load_payload(2, &payload).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.trust, Default::default());
    // Read as version 3 it is short of its trust, and refused.
    assert!(State::load_payload(3, &payload).is_err());
}

#[test]
fn a_snapshot_of_version_3_is_read_as_a_state_whose_hosts_are_up_and_in_service() {
    let s = state_v3();
    assert!(s.host_life.is_empty());
    let payload = bincode::encode_to_vec(as_v3(&s), super::config()).unwrap();
    let back = State::load_payload(3, &payload).unwrap();
    assert_eq!(back, s);
    assert!(back.host_life("h1").schedulable());
    // Read as version 4 it is short of the hosts' life, and refused.
    assert!(State::load_payload(4, &payload).is_err());
}

/// Version 4's commands: a host judged down then up, put in maintenance, and one removed.
fn host_life_commands() -> Vec<Command> {
    use crate::state::Maintenance;
    vec![
        Command::HostContact {
            host: "h1".into(),
            up: false,
            at_ms: 200,
        },
        Command::HostContact {
            host: "h1".into(),
            up: true,
            at_ms: 201,
        },
        Command::By {
            actor: "admin (password)".into(),
            at_ms: 202,
            command: Box::new(Command::HostMaintenance {
                host: "h1".into(),
                maintenance: Some(Maintenance {
                    reason: Some("new disks".into()),
                    since_ms: 202,
                }),
            }),
        },
        Command::HostContact {
            host: "h2".into(),
            up: false,
            at_ms: 203,
        },
        Command::RemoveHost {
            host: "h2".into(),
            force: true,
            at_ms: 204,
        },
    ]
}

fn state_v4() -> State {
    let mut s = state_v3();
    for command in host_life_commands() {
        s.apply(command).unwrap();
    }
    assert!(!s.hosts.contains_key("h2"));
    s
}

#[test]
fn the_stored_format_of_version_4_has_not_changed() {
    let mut log = Sha256::new();
    let replace = Command::ReplaceInstance {
        id: 2,
        from: "h1".into(),
        to: Some("h2".into()),
        failure: None,
        at_ms: 205,
    };
    for command in host_life_commands().into_iter().chain([replace]) {
        let bytes = super::to_bytes(&command);
        let back: Command = super::from_bytes(&bytes).unwrap();
        assert_eq!(back, command);
        log.update(bytes);
    }
    let s = state_v4();
    let back: State = codec::decode(&codec::encode(&s)).unwrap();
    assert_eq!(back, s);
    assert!(s.host_life("h1").up);
    assert!(s.host_life("h1").maintenance.is_some());
    let snapshot = Sha256::digest(bincode::encode_to_vec(as_v4(&s), super::config()).unwrap());
    let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(
        hex(&log.finalize()),
        "8700785d2be2eca5b96dc7008338a9aae9a38cb4ffc93b2818c123bbf100e16f",
        "the log entries' stored format changed"
    );
    assert_eq!(
        hex(&snapshot),
        "cd205cb62e740ab9d99f29357dd02fc14a5c7f07ffe0b4336de8938066f37fc6",
        "the snapshot's stored format changed"
    );
}

/// `state` in the frozen stored form of version 4 (which has no placement rules).
fn as_v4(state: &State) -> SnapshotV4 {
    let stored = state.store();
    SnapshotV4 {
        cluster_id: stored.cluster_id,
        users: stored.users,
        hosts: stored.hosts,
        types: stored.types,
        images: stored.images,
        marketplace: stored.marketplace,
        endorsers: stored.endorsers,
        precache: stored.precache,
        instances: stored.instances,
        next_instance_id: stored.next_instance_id,
        cpu_allocation_ratio_percent: stored.cpu_allocation_ratio_percent,
        ipam: stored.ipam,
        volumes: stored.volumes,
        members: stored.members,
        instance_keys: stored.instance_keys,
        volume_keys: stored.volume_keys,
        trust: stored.trust,
        audit: stored.audit,
        host_life: stored.host_life,
    }
}

#[test]
fn a_snapshot_of_version_4_is_read_as_a_state_without_placement_rules() {
    let s = state_v4();
    let payload = bincode::encode_to_vec(as_v4(&s), super::config()).unwrap();
    let back = State::load_payload(4, &payload).unwrap();
    assert_eq!(back, s);
    assert!(back.host_profile("h1").compute && back.host_profile("h1").storage);
    assert!(back.groups.is_empty());
    // Read as version 5 it is short of the placement rules, and refused.
    assert!(State::load_payload(5, &payload).is_err());
}

/// Version 5's commands: a host's roles and labels, a server group and an instance made in it
/// with a required label, and a group deleted.
fn placement_commands() -> Vec<Command> {
    use crate::state::{GroupPolicy, InstanceRules};
    let mut create = commands()
        .into_iter()
        .find(|c| matches!(c, Command::CreateInstance { .. }))
        .unwrap();
    if let Command::CreateInstance {
        idempotency_key,
        volumes,
        host,
        ..
    } = &mut create
    {
        *idempotency_key = None;
        volumes.clear();
        *host = Some("h1".into());
    }
    vec![
        Command::By {
            actor: "admin (password)".into(),
            at_ms: 300,
            command: Box::new(Command::HostProfile {
                host: "h1".into(),
                compute: Some(true),
                storage: Some(false),
                labels: Some(["ssd".to_owned()].into()),
            }),
        },
        Command::CreateGroup {
            owner: "alice".into(),
            name: "web".into(),
            policy: GroupPolicy::AntiAffinity,
            at_ms: 301,
        },
        Command::CreateGroup {
            owner: "alice".into(),
            name: "db".into(),
            policy: GroupPolicy::Affinity,
            at_ms: 302,
        },
        Command::DeleteGroup {
            owner: "alice".into(),
            name: "db".into(),
        },
        Command::CreateInstanceWith {
            rules: InstanceRules {
                group: Some("web".into()),
                labels: ["ssd".to_owned()].into(),
                evacuate: true,
                restart: stratus_common::api::RestartPolicy::Always,
            },
            create: Box::new(create),
        },
    ]
}

fn state_v5() -> State {
    let mut s = state_v4();
    // h1 leaves maintenance, so the instance can go there.
    s.apply(Command::HostMaintenance {
        host: "h1".into(),
        maintenance: None,
    })
    .unwrap();
    for command in placement_commands() {
        s.apply(command).unwrap();
    }
    s
}

#[test]
fn the_stored_format_of_version_5_has_not_changed() {
    let s = state_v5();
    assert!(!s.host_profile("h1").storage);
    assert_eq!(s.groups["alice"].len(), 1);
    let member = *s.groups["alice"]["web"].members.first().unwrap();
    assert_eq!(s.placement_rules(member).group.as_deref(), Some("web"));
    let mut log = Sha256::new();
    let evacuation = [
        Command::FenceHost {
            host: "h1".into(),
            at_ms: 310,
        },
        Command::EvacuateInstance {
            id: member,
            from: "h1".into(),
            to: "h3".into(),
            at_ms: 311,
        },
    ];
    for command in placement_commands().into_iter().chain(evacuation) {
        let bytes = super::to_bytes(&command);
        let back: Command = super::from_bytes(&bytes).unwrap();
        assert_eq!(back, command);
        log.update(bytes);
    }
    let back: State = codec::decode(&codec::encode(&s)).unwrap();
    assert_eq!(back, s);
    // Fenced hosts and copies moved away are kept too.
    let mut s = s;
    s.fenced.insert("h1".into(), 310);
    s.moved_away.insert("h1".into(), [member].into());
    let back: State = codec::decode(&codec::encode(&s)).unwrap();
    assert_eq!(back, s);
    let snapshot = Sha256::digest(super::to_bytes(&s));
    let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(
        hex(&log.finalize()),
        "64805c7507b24f06c531a685f9150cde65e714b8bfc8a561e32b587fa010b335",
        "the log entries' stored format changed"
    );
    assert_eq!(
        hex(&snapshot),
        "ea85250a9fc90ad2b4eaa5ade094bc920e18e447caaa7f3f5fe9ee3a6685423a",
        "the snapshot's stored format changed"
    );
}

/// Version 6's command: a host's whole report, with an item of every kind, as its host asks.
fn host_report_command() -> Command {
    use stratus_common::agent::{ReportedInstance, ReportedVolume};
    Command::By {
        actor: "host h1".into(),
        at_ms: 320,
        command: Box::new(Command::HostReport {
            host: "h1".into(),
            instances: vec![
                ReportedInstance {
                    id: 1,
                    state: ActualState::Running,
                    reason: None,
                },
                ReportedInstance {
                    id: 7,
                    state: ActualState::Failed,
                    reason: Some("qemu exited".into()),
                },
            ],
            volumes: vec![ReportedVolume {
                id: VOLUME.into(),
                state: VolumeReport::Ready,
                reason: None,
            }],
            exports: vec![ReportedExport {
                name: "vol-1".into(),
                host: "192.0.2.10".into(),
                port: 10809,
            }],
            disks: vec![ReportedDisk {
                instance: 1,
                volume: VOLUME.into(),
                state: DiskReport::Attached,
                reason: None,
            }],
            at_ms: 320,
        }),
    }
}

#[test]
fn the_stored_format_of_version_6_has_not_changed() {
    let command = host_report_command();
    let bytes = super::to_bytes(&command);
    let back: Command = super::from_bytes(&bytes).unwrap();
    assert_eq!(back, command);
    let back: Command = codec::decode(&codec::encode(&command)).unwrap();
    assert_eq!(back, command);
    // Version 6 added a command only: a version 5 snapshot reads as it is.
    let s = state_v5();
    assert_eq!(State::load_payload(5, &super::to_bytes(&s)).unwrap(), s);
    let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(
        hex(&Sha256::digest(&bytes)),
        "97e9c8995462efc45eaefeb0fba24c7abf82d61c7af77107ff282a5e274d032e",
        "the log entry's stored format changed"
    );
}

#[test]
fn member_changes_come_back_as_they_went() {
    for change in [
        MemberChange::AddLearner {
            id: 2,
            address: "127.0.0.1:8451".into(),
            api_address: "127.0.0.1:8441".into(),
            incarnation: "inc-2".into(),
        },
        MemberChange::Promote { id: 2 },
        MemberChange::Remove { id: 2 },
    ] {
        let back: MemberChange = codec::decode(&codec::encode(&change)).unwrap();
        assert_eq!(back, change);
    }
}

/// The life-cycle and account commands of version 3.
fn power_and_account_commands() -> Vec<Command> {
    use crate::state::PowerAction;
    vec![
        Command::PowerInstance {
            id: 1,
            action: PowerAction::Stop,
            at_ms: 100,
        },
        Command::PowerInstance {
            id: 1,
            action: PowerAction::Start,
            at_ms: 101,
        },
        Command::PowerInstance {
            id: 1,
            action: PowerAction::Reboot,
            at_ms: 102,
        },
        Command::UpdateUser {
            name: "alice".into(),
            password_hash: Some("$argon2id$new".into()),
            admin: Some(true),
        },
        Command::UpdateUser {
            name: "alice".into(),
            password_hash: None,
            admin: None,
        },
        Command::DeleteUser {
            name: "alice".into(),
        },
        Command::DeleteImage {
            name: "appliance".into(),
        },
    ]
}

/// `state` with its last instance stopped by its owner and reported Stopped by its host.
fn with_a_stopped_instance(mut s: State) -> State {
    use crate::state::PowerAction;
    let id = *s.instances.keys().last().unwrap();
    let host = s.instances[&id].host.clone().unwrap();
    s.apply(Command::PowerInstance {
        id,
        action: PowerAction::Stop,
        at_ms: 100,
    })
    .unwrap();
    s.apply(Command::ReportInstance {
        host,
        id,
        state: stratus_common::agent::ActualState::Stopped,
        reason: Some("the guest powered off".into()),
        at_ms: 101,
    })
    .unwrap();
    s
}

/// Commands and states added after version 2 was frozen: new variants at the end of their
/// enums, so the bytes of version 2 are unchanged and these come back as they went.
#[test]
fn later_commands_and_states_come_back_as_they_went() {
    use stratus_common::api::InstanceState;
    for command in power_and_account_commands() {
        let back: Command = codec::decode(&codec::encode(&command)).unwrap();
        assert_eq!(back, command);
    }
    let s = with_a_stopped_instance(state());
    let id = *s.instances.keys().last().unwrap();
    assert_eq!(s.instances[&id].state, InstanceState::Stopped);
    let back: State = codec::decode(&codec::encode(&s)).unwrap();
    assert_eq!(back, s);
}

#[test]
fn trailing_or_missing_bytes_are_refused() {
    let mut bytes = super::to_bytes(&commands()[1]);
    let whole: Command = super::from_bytes(&bytes).unwrap();
    assert_eq!(whole, commands()[1]);
    bytes.push(0);
    assert!(matches!(
        super::from_bytes::<Command>(&bytes),
        Err(super::FormatError::Trailing(1))
    ));
    bytes.truncate(bytes.len() - 3);
    assert!(matches!(
        super::from_bytes::<Command>(&bytes),
        Err(super::FormatError::Decode(_))
    ));
}

/// The stored formats of state-machine versions 2 and 3 are frozen: these digests change only
/// when the bytes do, and then the change needs a new version (and decoding of this one kept).
#[test]
fn the_stored_format_has_not_changed() {
    let mut log = Sha256::new();
    for command in commands() {
        log.update(super::to_bytes(&command));
    }
    let snapshot =
        Sha256::digest(bincode::encode_to_vec(as_v2(&state()), super::config()).unwrap());
    let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(
        hex(&log.finalize()),
        "afd2932285fbca6b9315e88edb2edf9e91aee5c91735e0d7f74a7076c5f0fc12",
        "the log entries' stored format changed"
    );
    assert_eq!(
        hex(&snapshot),
        "6f1fad2bc547fbf9cd16d19eba2800801d5130d45c86be6d8c6f9b72b21ba7dd",
        "the snapshot's stored format changed"
    );
}

#[test]
fn the_stored_format_of_version_3_has_not_changed() {
    let mut log = Sha256::new();
    for command in trust_commands()
        .into_iter()
        .chain(power_and_account_commands())
    {
        log.update(super::to_bytes(&command));
    }
    let snapshot =
        Sha256::digest(bincode::encode_to_vec(as_v3(&state_v3()), super::config()).unwrap());
    let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(
        hex(&log.finalize()),
        "01f611fa357056ff8f188310699d7ba855f9b0739c6f713a43392ea7c22560b4",
        "the log entries' stored format changed"
    );
    assert_eq!(
        hex(&snapshot),
        "590113efe604e0b38b60d00d1da1c058b2b65b29977ad376ec3420cb786ede81",
        "the snapshot's stored format changed"
    );
}
