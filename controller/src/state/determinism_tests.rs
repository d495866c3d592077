//! The state machine is deterministic: random sequences of commands (valid and invalid ones,
//! in any order) applied to two fresh states give identical states, outcomes and effects, also
//! when one replica goes through the log's codec and restarts from a snapshot half-way.

use proptest::prelude::*;
use stratus_common::agent::{ActualState, DiskReport, ReportedDisk, VolumeReport};
use stratus_common::volumes::{VolumeState, VolumeType};

use super::tests::bootstrapped;
use super::*;

const VOLUMES: [&str; 2] = [
    "11111111-1111-4111-8111-111111111111",
    "22222222-2222-4222-8222-222222222222",
];
const HOSTS: [&str; 2] = ["h1", "h2"];

/// One step of a random history, small enough that steps often hit the same objects.
#[derive(Debug, Clone)]
enum Step {
    Create {
        host: Option<usize>,
        ty: usize,
        disk: Option<usize>,
    },
    Report {
        host: usize,
        id: u64,
        state: usize,
    },
    Kill {
        id: u64,
    },
    CreateVolume {
        volume: usize,
        size: u64,
    },
    VolumeReady {
        volume: usize,
    },
    Attach {
        volume: usize,
        id: u64,
    },
    Detach {
        volume: usize,
        id: u64,
        force: bool,
    },
    Disk {
        host: usize,
        volume: usize,
        id: u64,
        state: usize,
    },
    Delete {
        volume: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (
            proptest::option::of(0..2usize),
            0..3usize,
            proptest::option::of(0..2usize)
        )
            .prop_map(|(host, ty, disk)| Step::Create { host, ty, disk }),
        (0..2usize, 1..6u64, 0..4usize).prop_map(|(host, id, state)| Step::Report {
            host,
            id,
            state
        }),
        (1..6u64).prop_map(|id| Step::Kill { id }),
        (0..2usize, 0..30u64).prop_map(|(volume, size)| Step::CreateVolume { volume, size }),
        (0..2usize).prop_map(|volume| Step::VolumeReady { volume }),
        (0..2usize, 1..6u64).prop_map(|(volume, id)| Step::Attach { volume, id }),
        (0..2usize, 1..6u64, any::<bool>()).prop_map(|(volume, id, force)| Step::Detach {
            volume,
            id,
            force
        }),
        (0..2usize, 0..2usize, 1..6u64, 0..3usize).prop_map(|(host, volume, id, state)| {
            Step::Disk {
                host,
                volume,
                id,
                state,
            }
        }),
        (0..2usize).prop_map(|volume| Step::Delete { volume }),
    ]
}

/// The command of step `n` (its time is its position, as a proposer would stamp it).
fn command(step: &Step, n: u64, image: &ImageSpecOf) -> Command {
    let at_ms = 100 + n;
    match step {
        Step::Create { host, ty, disk } => Command::CreateInstance {
            owner: "alice".into(),
            name: None,
            image: "appliance".into(),
            image_spec: image.0.clone(),
            instance_type: ["t1.micro", "m1.small", "x9.huge"][*ty].into(),
            host: host.map(|h| HOSTS[h].to_owned()),
            failure: host.is_none().then(|| "no host".to_owned()),
            at_ms,
            network: None,
            ssh_key: None,
            user_data: None,
            volumes: disk
                .map(|d| vec![(VOLUMES[d].to_owned(), format!("sl-{n}"))])
                .unwrap_or_default(),
            idempotency_key: None,
        },
        Step::Report { host, id, state } => Command::ReportInstance {
            host: HOSTS[*host].into(),
            id: *id,
            state: [
                ActualState::Booting,
                ActualState::Running,
                ActualState::Failed,
                ActualState::Gone,
            ][*state],
            reason: None,
            at_ms,
        },
        Step::Kill { id } => Command::KillInstance { id: *id, at_ms },
        Step::CreateVolume { volume, size } => Command::CreateVolume {
            idempotency_key: None,
            record: Box::new(VolumeRecord {
                id: VOLUMES[*volume].into(),
                owner: "alice".into(),
                tag: String::new(),
                size_gib: *size,
                public: false,
                volume_type: VolumeType::DataRw,
                host: "h1".into(),
                state: VolumeState::Creating,
                reason: None,
                created_ms: at_ms,
                attachments: Vec::new(),
            }),
            quota: Quota {
                max_volumes: 5,
                max_gib: 40,
            },
        },
        Step::VolumeReady { volume } => Command::ReportVolume {
            host: "h1".into(),
            id: VOLUMES[*volume].into(),
            state: VolumeReport::Ready,
            reason: None,
        },
        Step::Attach { volume, id } => Command::AttachVolume {
            volume: VOLUMES[*volume].into(),
            instance: *id,
            caller: "alice".into(),
            admin: false,
            export: format!("sl-{n}"),
            at_ms,
        },
        Step::Detach { volume, id, force } => Command::DetachVolume {
            volume: VOLUMES[*volume].into(),
            instance: *id,
            caller: "alice".into(),
            admin: false,
            force: *force,
            stuck_after_ms: 5,
            at_ms,
        },
        Step::Disk {
            host,
            volume,
            id,
            state,
        } => Command::ReportDisk {
            host: HOSTS[*host].into(),
            disk: ReportedDisk {
                instance: *id,
                volume: VOLUMES[*volume].into(),
                state: [
                    DiskReport::Attached,
                    DiskReport::Detached,
                    DiskReport::Failed,
                ][*state],
                reason: None,
            },
            at_ms,
        },
        Step::Delete { volume } => Command::DeleteVolume {
            id: VOLUMES[*volume].into(),
            caller: "alice".into(),
            admin: false,
        },
    }
}

struct ImageSpecOf(stratus_common::agent::ImageSpec);

/// h1 stores volumes (50 GiB); h2 does not.
fn start() -> State {
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn replicas_applying_the_same_log_end_in_the_same_state(
        steps in proptest::collection::vec(step(), 1..60),
        restart_at in 0usize..60,
    ) {
        let image = ImageSpecOf(start().images["appliance"].spec());
        let (mut a, mut b) = (start(), start());
        for (n, step) in steps.iter().enumerate() {
            let command = command(step, n as u64, &image);
            // Replica b reads every entry back from the log's encoding, and at one point
            // restarts from a snapshot of its state.
            let logged: Command =
                crate::codec::decode(&crate::codec::encode(&command)).unwrap();
            let (ra, ea) = a.apply_with_effects(command);
            let (rb, eb) = b.apply_with_effects(logged);
            prop_assert_eq!(&ra, &rb);
            prop_assert_eq!(&ea, &eb);
            if n == restart_at {
                b = crate::codec::decode(&crate::codec::encode(&b)).unwrap();
            }
            prop_assert_eq!(&a, &b);
            // The per-host sums kept through every change (and rebuilt by the restart) are
            // what counting the records again gives.
            prop_assert_eq!(a.instances.usage_kept(), &a.instances.usage_recounted());
            prop_assert_eq!(b.instances.usage_kept(), &b.instances.usage_recounted());
        }
        // Whatever happened, no read-write disk has two users and no address two holders.
        for volume in a.volumes.values() {
            if volume.volume_type == VolumeType::DataRw {
                prop_assert!(volume.attachments.len() <= 1, "{:?}", volume);
            }
        }
    }
}
