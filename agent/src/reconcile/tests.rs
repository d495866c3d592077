use std::sync::Arc;

use sha2::{Digest, Sha256};
use stratus_common::agent::{ActualState, Desire, DesiredInstance, HostDesired, ImageSpec};
use stratus_common::api::{Artifact, Compression, DiskFormat, DomainType};
use tokio::sync::mpsc;

use super::*;
use crate::hypervisor::{DiskSource, FakeHypervisor, InstanceTag, RunState};
use crate::images::cache::ImageCache;
use crate::images::download::{Downloader, SourcePolicy};
use crate::network::filter::{FakeFilter, FilterCall};
use crate::network::links::FakeLinks;
use crate::network::Network;

const CLUSTER: &str = "c0ffee00-0000-4000-8000-000000000000";

struct Rig {
    _dir: tempfile::TempDir,
    hv: Arc<FakeHypervisor>,
    reconciler: Reconciler,
    events: mpsc::UnboundedReceiver<ReportEvent>,
    image: ImageSpec,
    dirs: InstanceDirs,
    cache: Arc<ImageCache>,
    links: Arc<FakeLinks>,
    filter: Arc<FakeFilter>,
}

fn rig() -> Rig {
    rig_with(|r| r)
}

/// A rig whose reconciler `adjust` sets up further.
fn rig_with(adjust: impl FnOnce(Reconciler) -> Reconciler) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("src/base.raw");
    std::fs::create_dir_all(base.parent().unwrap()).unwrap();
    let content = vec![0u8; 1 << 20];
    std::fs::write(&base, &content).unwrap();
    let image = ImageSpec {
        name: "img".into(),
        format: DiskFormat::Raw,
        disk: Artifact {
            locations: vec![format!("file://{}", base.display())],
            sha256: stratus_common::hex::encode(Sha256::digest(&content)),
            size: Some(content.len() as u64),
            compression: Compression::None,
        },
        kernel: None,
        initrd: None,
        cmdline: None,
    };
    let hv = Arc::new(FakeHypervisor::new());
    let (tx, events) = mpsc::unbounded_channel();
    let dirs = InstanceDirs::new(&dir.path().join("state"));
    let downloader = Downloader::new(SourcePolicy {
        file_roots: vec![dir.path().join("src")],
        ..SourcePolicy::default()
    });
    let cache =
        Arc::new(ImageCache::open(&dir.path().join("state/images"), u64::MAX, downloader).unwrap());
    let links = Arc::new(FakeLinks::new());
    let filter = Arc::new(FakeFilter::new());
    let network = Network::new(links.clone(), filter.clone(), Default::default());
    let reconciler = Reconciler::new(
        hv.clone(),
        cache.clone(),
        network,
        None,
        dirs.clone(),
        DomainType::Qemu,
        CLUSTER.into(),
        tx,
    )
    .with_volume_pool(Arc::new(
        crate::volumes::pool::VolumePool::open(&dir.path().join("state/volumes")).unwrap(),
    ))
    .with_detach_wait(std::time::Duration::from_millis(100));
    let reconciler = adjust(reconciler);
    Rig {
        _dir: dir,
        hv,
        reconciler,
        events,
        image,
        dirs,
        cache,
        links,
        filter,
    }
}

/// A desired state of `items` on `image` (each instance named `vm-<id>`); also the metrics'
/// tests'.
pub(crate) fn desired(image: &ImageSpec, items: &[(u64, Desire)]) -> HostDesired {
    HostDesired {
        version: 1,
        cluster_id: CLUSTER.into(),
        instances: items
            .iter()
            .map(|&(id, desire)| DesiredInstance {
                id,
                desire,
                generation: 0,
                vcpus: 1,
                memory_mib: 128,
                image: image.clone(),
                nics: Vec::new(),
                ssh_key: None,
                user_data: None,
                hostname: format!("vm-{id}"),
                disks: Vec::new(),
                accepted_at_ms: None,
                confirm: false,
                restart: Default::default(),
                evacuate: false,
            })
            .collect(),
        precache: Vec::new(),
        volumes: Vec::new(),
        exports: Vec::new(),
        lease_secs: None,
    }
}

fn tag(id: u64) -> Option<InstanceTag> {
    Some(InstanceTag {
        cluster_id: CLUSTER.into(),
        instance_id: id,
        host: None,
    })
}

fn drain(rig: &mut Rig) -> Vec<(u64, ActualState, Option<String>)> {
    let mut out = Vec::new();
    while let Ok(event) = rig.events.try_recv() {
        if let ReportEvent::Instance(r) = event {
            out.push((r.id, r.state, r.reason));
        }
    }
    out
}

/// One reconcile pass run to the end, as the agent's loop does it.
fn pass(rig: &Rig, want: &HostDesired) -> Vec<Action> {
    let listed_at = rig.reconciler.epoch();
    let domains = rig.hv.list().unwrap();
    let actions = rig.reconciler.plan(want, &domains, listed_at);
    for action in actions.clone() {
        rig.reconciler.execute(action);
    }
    actions
}

#[test]
fn starts_a_wanted_instance_with_an_overlay_and_reports_it_running() {
    let mut rig = rig();
    let want = desired(&rig.image, &[(7, Desire::Run)]);
    let actions = pass(&rig, &want);
    assert!(matches!(actions.as_slice(), [Action::Start(i)] if i.id == 7));
    let created = rig.hv.created();
    assert_eq!(created.len(), 1);
    assert_eq!(
        created[0].name,
        stratus_common::agent::domain_name(CLUSTER, 7)
    );
    assert_eq!(created[0].disk, rig.dirs.disk(7));
    let info = crate::images::qcow2::inspect(&rig.dirs.disk(7)).unwrap();
    let base = rig.cache.path(&rig.image.disk.sha256);
    assert_eq!(
        info.backing_file.as_deref(),
        base.to_str(),
        "the overlay sits on the cached base"
    );
    assert_eq!(
        rig.cache.refs(&rig.image.disk.sha256),
        1,
        "the base is held while the instance lives"
    );
    assert_eq!(
        drain(&mut rig),
        vec![
            (7, ActualState::Booting, None),
            (7, ActualState::Running, None)
        ]
    );
    // The next pass finds it running and neither starts it again nor repeats the report.
    assert!(pass(&rig, &want).is_empty());
    assert_eq!(rig.hv.created().len(), 1);
    assert!(drain(&mut rig).is_empty());
}

/// Runs one pass whose start (on its own thread, as the agent does) is answered with `word`.
fn pass_confirmed(rig: &mut Rig, want: &HostDesired, word: crate::outbox::Confirmation) {
    let listed_at = rig.reconciler.epoch();
    let domains = rig.hv.list().unwrap();
    let actions = rig.reconciler.plan(want, &domains, listed_at);
    assert!(
        matches!(actions.as_slice(), [Action::Start(_)]),
        "{actions:?}"
    );
    std::thread::scope(|scope| {
        let reconciler = &rig.reconciler;
        let start = scope.spawn(move || {
            for action in actions {
                reconciler.execute(action);
            }
        });
        // The start waits for the answer: it comes once the report was "delivered".
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Ok(ReportEvent::ConfirmStart(confirm)) = rig.events.try_recv() {
                confirm.answer.send(word).unwrap();
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no confirmation asked"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        start.join().unwrap();
    });
}

#[test]
fn a_fresh_start_creates_the_guest_only_once_the_controller_recorded_it() {
    use crate::outbox::Confirmation;
    let mut rig = rig_with(|r| r.with_start_confirmation(std::time::Duration::from_secs(10)));
    let want = desired(&rig.image, &[(7, Desire::Run)]);
    // Refused: the controller placed it elsewhere meanwhile. Nothing is made or reported.
    pass_confirmed(
        &mut rig,
        &want,
        Confirmation::Refused("not placed here".into()),
    );
    assert!(rig.hv.created().is_empty());
    assert!(!rig.dirs.dir(7).exists());
    assert!(
        drain(&mut rig).is_empty(),
        "no Failed: it was never this host's to run"
    );
    // Recorded: it starts.
    pass_confirmed(&mut rig, &want, Confirmation::Recorded);
    assert_eq!(rig.hv.created().len(), 1);
    assert_eq!(drain(&mut rig), vec![(7, ActualState::Running, None)]);
}

#[test]
fn a_start_the_controller_does_not_answer_in_time_makes_nothing_and_is_tried_again() {
    let mut rig = rig_with(|r| r.with_start_confirmation(std::time::Duration::from_millis(50)));
    let want = desired(&rig.image, &[(7, Desire::Run)]);
    let actions = pass(&rig, &want);
    assert!(matches!(actions.as_slice(), [Action::Start(_)]));
    assert!(rig.hv.created().is_empty());
    assert!(!rig.dirs.dir(7).exists());
    let events: Vec<ReportEvent> = std::iter::from_fn(|| rig.events.try_recv().ok())
        .filter(|e| !matches!(e, ReportEvent::Images(_)))
        .collect();
    let [ReportEvent::ConfirmStart(confirm)] = events.as_slice() else {
        panic!("no instance report but the confirmation: {events:?}");
    };
    assert!(
        confirm
            .answer
            .send(crate::outbox::Confirmation::Recorded)
            .is_err(),
        "the start no longer waits"
    );
    // The next pass asks again.
    assert!(matches!(pass(&rig, &want).as_slice(), [Action::Start(_)]));
}

#[test]
fn says_again_what_it_reported_when_the_controller_asks_to_confirm() {
    let mut rig = rig();
    let mut want = desired(&rig.image, &[(7, Desire::Run)]);
    pass(&rig, &want);
    assert_eq!(drain(&mut rig).len(), 2, "Booting, Running");
    // The controller counted the host down meanwhile: it asks for the state once per
    // desired-state version.
    want.version = 2;
    want.instances[0].confirm = true;
    assert!(pass(&rig, &want).is_empty(), "nothing to do to the guest");
    assert_eq!(drain(&mut rig), vec![(7, ActualState::Running, None)]);
    assert!(pass(&rig, &want).is_empty());
    assert!(drain(&mut rig).is_empty(), "once per version");
    want.version = 3;
    pass(&rig, &want);
    assert_eq!(drain(&mut rig), vec![(7, ActualState::Running, None)]);
    assert_eq!(rig.hv.created().len(), 1, "never started again");
}

#[test]
fn adopts_running_domains_after_a_restart_without_touching_them() {
    let mut rig = rig();
    rig.hv.insert_domain(
        &stratus_common::agent::domain_name(CLUSTER, 3),
        tag(3),
        RunState::Running,
    );
    assert!(pass(&rig, &desired(&rig.image, &[(3, Desire::Run)])).is_empty());
    assert!(rig.hv.created().is_empty());
    assert!(rig.hv.destroyed().is_empty());
    assert_eq!(drain(&mut rig), vec![(3, ActualState::Running, None)]);
}

#[test]
fn unknown_domains_are_reported_and_left_running() {
    let mut rig = rig();
    rig.hv
        .insert_domain("stratus-c0ffee00-99", tag(99), RunState::Running);
    rig.hv
        .insert_domain("someone-elses-vm", None, RunState::Running);
    rig.hv.insert_domain(
        "other-cloud",
        Some(InstanceTag {
            cluster_id: "another".into(),
            instance_id: 1,
            host: None,
        }),
        RunState::Running,
    );
    assert!(pass(&rig, &desired(&rig.image, &[])).is_empty());
    assert!(rig.hv.destroyed().is_empty());
    let unknown: Vec<_> = std::iter::from_fn(|| rig.events.try_recv().ok())
        .filter_map(|e| match e {
            ReportEvent::UnknownDomains(list) => Some(list),
            _ => None,
        })
        .collect();
    assert_eq!(unknown, vec![vec!["stratus-c0ffee00-99".to_owned()]]);
}

#[test]
fn domains_another_host_made_on_a_shared_libvirt_are_neither_ours_nor_unknown() {
    let mut rig = rig_with(|r| r.with_host("h1"));
    let named = |id: u64, host: Option<&str>| {
        Some(InstanceTag {
            cluster_id: CLUSTER.into(),
            instance_id: id,
            host: host.map(Into::into),
        })
    };
    // The other agent's guest, ours, and one made before hosts were recorded (ours).
    rig.hv.insert_domain(
        "stratus-c0ffee00-5",
        named(5, Some("h2")),
        RunState::Running,
    );
    rig.hv.insert_domain(
        "stratus-c0ffee00-6",
        named(6, Some("h1")),
        RunState::Running,
    );
    rig.hv
        .insert_domain("stratus-c0ffee00-7", named(7, None), RunState::Running);
    assert!(pass(&rig, &desired(&rig.image, &[(6, Desire::Run)])).is_empty());
    let unknown: Vec<_> = std::iter::from_fn(|| rig.events.try_recv().ok())
        .filter_map(|e| match e {
            ReportEvent::UnknownDomains(list) => Some(list),
            _ => None,
        })
        .collect();
    assert_eq!(unknown, vec![vec!["stratus-c0ffee00-7".to_owned()]]);
    // A guest it starts names this host.
    let want = desired(&rig.image, &[(6, Desire::Run), (8, Desire::Run)]);
    pass(&rig, &want);
    let created = rig.hv.created();
    assert_eq!(created.last().unwrap().host.as_deref(), Some("h1"));
}

#[test]
fn destroy_removes_the_domain_and_its_files_then_reports_gone_once() {
    let mut rig = rig();
    pass(&rig, &desired(&rig.image, &[(5, Desire::Run)]));
    assert!(rig.dirs.dir(5).exists());
    drain(&mut rig);
    let want = desired(&rig.image, &[(5, Desire::Destroy)]);
    pass(&rig, &want);
    assert_eq!(
        rig.hv.destroyed(),
        vec![stratus_common::agent::domain_name(CLUSTER, 5)]
    );
    assert!(!rig.dirs.dir(5).exists());
    assert_eq!(drain(&mut rig), vec![(5, ActualState::Gone, None)]);
    // Seen again before the controller caught up: nothing to do, nothing to repeat.
    assert!(pass(&rig, &want).is_empty());
    assert!(drain(&mut rig).is_empty());
}

/// An instance evacuated from h1 to h2, which share one libvirt: h1, back, is told to
/// destroy its copy. The domain of that name is h2's now: h1 removes its own files only.
#[test]
fn destroying_a_copy_leaves_the_same_named_domain_of_another_host_running() {
    let mut rig = rig_with(|r| r.with_host("h1"));
    pass(&rig, &desired(&rig.image, &[(5, Desire::Run)]));
    assert!(rig.dirs.dir(5).exists());
    drain(&mut rig);
    // Its guest gone (the host was powered off), h2 started the instance again.
    rig.hv
        .remove_domain(&stratus_common::agent::domain_name(CLUSTER, 5));
    rig.hv.insert_domain(
        &stratus_common::agent::domain_name(CLUSTER, 5),
        Some(InstanceTag {
            cluster_id: CLUSTER.into(),
            instance_id: 5,
            host: Some("h2".into()),
        }),
        RunState::Running,
    );
    let actions = pass(&rig, &desired(&rig.image, &[(5, Desire::Destroy)]));
    assert_eq!(
        actions,
        [Action::Destroy {
            id: 5,
            domain: false
        }]
    );
    assert!(rig.hv.destroyed().is_empty(), "h2's guest runs on");
    assert!(!rig.dirs.dir(5).exists(), "h1's files are gone");
    assert_eq!(drain(&mut rig), vec![(5, ActualState::Gone, None)]);
}

#[test]
fn a_checksum_mismatch_fails_the_start_and_leaves_nothing() {
    let mut rig = rig();
    rig.image.disk.sha256 = "00".repeat(32);
    let want = desired(&rig.image, &[(9, Desire::Run)]);
    pass(&rig, &want);
    assert!(rig.hv.created().is_empty());
    assert!(!rig.dirs.dir(9).exists());
    assert!(rig.cache.held().is_empty(), "nothing enters the cache");
    let reports = drain(&mut rig);
    assert_eq!(reports.last().unwrap().1, ActualState::Failed);
    assert_eq!(
        reports.last().unwrap().2.as_deref(),
        Some("image checksum mismatch")
    );
    // Until the controller marks it Failed, it is not retried.
    assert!(pass(&rig, &want).is_empty());
}

#[test]
fn a_libvirt_failure_fails_the_start_and_removes_the_overlay() {
    let mut rig = rig();
    rig.hv.fail_creates(Some("no room at the inn"));
    pass(&rig, &desired(&rig.image, &[(4, Desire::Run)]));
    assert!(!rig.dirs.dir(4).exists());
    assert_eq!(
        rig.cache.refs(&rig.image.disk.sha256),
        0,
        "the failed start let go of its base"
    );
    let (_, state, reason) = drain(&mut rig).pop().unwrap();
    assert_eq!(state, ActualState::Failed);
    assert!(reason.unwrap().contains("no room at the inn"));
}

#[test]
fn a_domain_that_vanishes_after_running_is_reported_stopped_not_restarted() {
    let mut rig = rig();
    let want = desired(&rig.image, &[(2, Desire::Run)]);
    pass(&rig, &want);
    drain(&mut rig);
    // The guest powers itself off: its transient domain goes away.
    assert!(rig
        .hv
        .remove_domain(&stratus_common::agent::domain_name(CLUSTER, 2)));
    assert!(pass(&rig, &want).is_empty());
    assert_eq!(rig.hv.created().len(), 1, "not restarted");
    let (_, state, reason) = drain(&mut rig).pop().unwrap();
    assert_eq!(state, ActualState::Stopped);
    assert!(reason.unwrap().contains("powered off"));
    assert!(rig.dirs.disk(2).exists(), "its disk is kept");
    // Nor by an agent restarted in the same host boot.
    let again = restarted(&rig, mpsc::unbounded_channel().0);
    let domains = rig.hv.list().unwrap();
    assert!(again.plan(&want, &domains, again.epoch()).is_empty());
}

/// A new reconciler over the rig's host (hypervisor, cache, instance directories), as a
/// restarted agent has.
fn restarted(rig: &Rig, reports: mpsc::UnboundedSender<ReportEvent>) -> Reconciler {
    Reconciler::new(
        rig.hv.clone(),
        rig.cache.clone(),
        Network::new(rig.links.clone(), rig.filter.clone(), Default::default()),
        None,
        rig.dirs.clone(),
        DomainType::Qemu,
        CLUSTER.into(),
        reports,
    )
}

#[test]
fn a_domain_gone_with_a_host_reboot_is_started_again_on_its_disk() {
    let mut rig = rig();
    let want = desired(&rig.image, &[(3, Desire::Run)]);
    pass(&rig, &want);
    std::fs::write(rig.dirs.disk(3), b"the guest's data").unwrap();
    rig.hv
        .remove_domain(&stratus_common::agent::domain_name(CLUSTER, 3));
    // The agent of the host's next boot.
    let (tx, mut events) = mpsc::unbounded_channel();
    let after_reboot = restarted(&rig, tx).with_host_boot("another-boot");
    let domains = rig.hv.list().unwrap();
    let actions = after_reboot.plan(&want, &domains, after_reboot.epoch());
    assert!(
        matches!(actions.as_slice(), [Action::Start(_)]),
        "{actions:?}"
    );
    after_reboot.execute(actions[0].clone());
    assert_eq!(rig.hv.created().len(), 2);
    assert_eq!(
        std::fs::read(rig.dirs.disk(3)).unwrap(),
        b"the guest's data"
    );
    let mut last = None;
    while let Ok(event) = events.try_recv() {
        if let ReportEvent::Instance(r) = event {
            last = Some(r.state);
        }
    }
    assert_eq!(last, Some(ActualState::Running));
    drain(&mut rig);
}

fn at_generation(mut want: HostDesired, desire: Desire, generation: u64) -> HostDesired {
    want.instances[0].desire = desire;
    want.instances[0].generation = generation;
    want
}

/// Restart policy `always`: the guest that stopped by itself is started again with its disk,
/// and the report says why; one that keeps stopping is left Stopped after three restarts.
#[test]
fn a_guest_that_stops_by_itself_is_started_again_with_its_data_under_restart_always() {
    let mut rig = rig();
    let mut want = desired(&rig.image, &[(2, Desire::Run)]);
    want.instances[0].restart = stratus_common::api::RestartPolicy::Always;
    pass(&rig, &want);
    std::fs::write(rig.dirs.disk(2), b"the guest's data").unwrap();
    drain(&mut rig);
    let name = stratus_common::agent::domain_name(CLUSTER, 2);
    for restart in 1..=3 {
        assert!(rig.hv.remove_domain(&name), "its emulator dies");
        let actions = pass(&rig, &want);
        assert!(
            matches!(actions.as_slice(), [Action::Restart(i)] if i.id == 2),
            "{actions:?}"
        );
        assert_eq!(rig.hv.created().len(), 1 + restart);
        assert_eq!(
            std::fs::read(rig.dirs.disk(2)).unwrap(),
            b"the guest's data",
            "the same disk"
        );
        let (_, state, reason) = drain(&mut rig).pop().unwrap();
        assert_eq!(state, ActualState::Running);
        assert_eq!(
            reason.as_deref(),
            Some(
                format!(
                    "started again by its host after the guest stopped by itself (restart \
                     policy always; restart {restart})"
                )
                .as_str()
            )
        );
        assert_eq!(rig.dirs.restarts(2).len(), restart, "recorded on disk");
    }
    // A fourth time within the window: left stopped, and said why.
    assert!(rig.hv.remove_domain(&name));
    assert!(pass(&rig, &want).is_empty());
    assert_eq!(rig.hv.created().len(), 4);
    let (_, state, reason) = drain(&mut rig).pop().unwrap();
    assert_eq!(state, ActualState::Stopped);
    assert_eq!(
        reason.as_deref(),
        Some(
            "the guest powered off (or its emulator stopped) again after 3 restarts within 10 \
             minutes: left stopped"
        )
    );
}

#[test]
fn a_stop_powers_the_guest_off_and_keeps_its_disk_and_a_start_boots_it_again() {
    let mut rig = rig();
    let want = with_nic(&rig.image, 20);
    let name = stratus_common::agent::domain_name(CLUSTER, 20);
    pass(&rig, &want);
    assert_eq!(rig.links.taps().len(), 1);
    std::fs::write(rig.dirs.disk(20), b"the guest's data").unwrap();
    drain(&mut rig);

    let stop = at_generation(want.clone(), Desire::Stop, 0);
    let actions = pass(&rig, &stop);
    assert_eq!(actions, vec![Action::Stop(20)]);
    assert_eq!(rig.hv.shut_down(), vec![name.clone()]);
    assert!(
        rig.hv.destroyed().is_empty(),
        "the guest powered off by itself"
    );
    assert!(rig.hv.domains().is_empty());
    assert!(rig.links.taps().is_empty(), "its tap went with it");
    assert_eq!(drain(&mut rig), vec![(20, ActualState::Stopped, None)]);
    assert!(
        pass(&rig, &stop).is_empty(),
        "nothing more to do while stopped"
    );
    assert_eq!(
        std::fs::read(rig.dirs.disk(20)).unwrap(),
        b"the guest's data"
    );

    let start = at_generation(want, Desire::Run, 1);
    let actions = pass(&rig, &start);
    assert!(
        matches!(actions.as_slice(), [Action::Start(_)]),
        "{actions:?}"
    );
    let created = rig.hv.created();
    assert_eq!(created.len(), 2);
    assert_eq!(created[1].disk, rig.dirs.disk(20), "the same disk");
    assert_eq!(created[1].nics, created[0].nics, "the same tap and MAC");
    assert_eq!(rig.links.taps().len(), 1);
    assert_eq!(
        std::fs::read(rig.dirs.disk(20)).unwrap(),
        b"the guest's data"
    );
    let states: Vec<ActualState> = drain(&mut rig).into_iter().map(|r| r.1).collect();
    assert_eq!(states, [ActualState::Booting, ActualState::Running]);
    assert!(pass(&rig, &start).is_empty());
}

#[test]
fn a_guest_deaf_to_the_power_off_request_has_its_power_cut_after_the_timeout() {
    let mut rig = rig_with(|r| r.with_stop_timeout(std::time::Duration::from_millis(300)));
    let want = desired(&rig.image, &[(21, Desire::Run)]);
    let name = stratus_common::agent::domain_name(CLUSTER, 21);
    pass(&rig, &want);
    rig.hv.set_guest_powers_off(&name, false);
    drain(&mut rig);
    let started = std::time::Instant::now();
    pass(&rig, &at_generation(want, Desire::Stop, 0));
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    assert_eq!(rig.hv.destroyed(), vec![name]);
    let (_, state, reason) = drain(&mut rig).pop().unwrap();
    assert_eq!(state, ActualState::Stopped);
    assert!(reason.unwrap().contains("power was cut"));
    assert!(rig.dirs.disk(21).exists());
}

#[test]
fn a_reboot_powers_off_and_boots_the_same_disk_once_per_generation() {
    let mut rig = rig();
    let want = desired(&rig.image, &[(22, Desire::Run)]);
    let name = stratus_common::agent::domain_name(CLUSTER, 22);
    pass(&rig, &want);
    std::fs::write(rig.dirs.disk(22), b"kept across the reboot").unwrap();
    drain(&mut rig);

    let reboot = at_generation(want, Desire::Run, 1);
    let actions = pass(&rig, &reboot);
    assert!(
        matches!(actions.as_slice(), [Action::Reboot(_)]),
        "{actions:?}"
    );
    assert_eq!(rig.hv.shut_down(), vec![name]);
    assert_eq!(rig.hv.created().len(), 2);
    assert_eq!(
        std::fs::read(rig.dirs.disk(22)).unwrap(),
        b"kept across the reboot"
    );
    let states: Vec<ActualState> = drain(&mut rig).into_iter().map(|r| r.1).collect();
    assert_eq!(states, [ActualState::Booting, ActualState::Running]);
    // Done for this generation: the next passes leave it running.
    assert!(pass(&rig, &reboot).is_empty());
    assert_eq!(rig.hv.created().len(), 2);
}

#[test]
fn a_disk_unplugged_from_a_stopped_instance_is_released_at_once() {
    let mut rig = rig();
    let mut want = desired(&rig.image, &[(24, Desire::Run)]);
    want.instances[0].disks = vec![disk("vdb", DiskLocation::Local, true)];
    pass(&rig, &want);
    want.instances[0].desire = Desire::Stop;
    pass(&rig, &want);
    disk_events(&mut rig);
    want.instances[0].disks[0].attach = false;
    pass(&rig, &want);
    assert_eq!(
        disk_events(&mut rig),
        vec![(24, DiskReport::Detached, None)]
    );
    assert!(rig.hv.detached().is_empty(), "no guest to ask");
}

#[test]
fn a_failed_start_of_a_stopped_instance_keeps_its_disk() {
    let mut rig = rig();
    let want = desired(&rig.image, &[(23, Desire::Run)]);
    pass(&rig, &want);
    std::fs::write(rig.dirs.disk(23), b"precious").unwrap();
    pass(&rig, &at_generation(want.clone(), Desire::Stop, 0));
    drain(&mut rig);
    rig.hv.fail_creates(Some("no room at the inn"));
    pass(&rig, &at_generation(want, Desire::Run, 1));
    let (_, state, reason) = drain(&mut rig).pop().unwrap();
    assert_eq!(state, ActualState::Failed);
    assert!(reason.unwrap().contains("no room at the inn"));
    assert_eq!(std::fs::read(rig.dirs.disk(23)).unwrap(), b"precious");
    assert_eq!(
        rig.cache.refs(&rig.image.disk.sha256),
        1,
        "still held by its disk"
    );
}

#[test]
fn a_restarted_agent_holds_the_images_of_the_instances_it_finds() {
    let rig = rig();
    pass(&rig, &desired(&rig.image, &[(8, Desire::Run)]));
    // A new reconciler over the same state directory, as after an agent restart.
    let downloader = Downloader::new(SourcePolicy::default());
    let cache = Arc::new(
        ImageCache::open(
            &rig.dirs.root.parent().unwrap().join("images"),
            0,
            downloader,
        )
        .unwrap(),
    );
    let (tx, _events) = mpsc::unbounded_channel();
    let network = Network::new(rig.links.clone(), rig.filter.clone(), Default::default());
    let _again = Reconciler::new(
        rig.hv.clone(),
        cache.clone(),
        network,
        None,
        rig.dirs.clone(),
        DomainType::Qemu,
        CLUSTER.into(),
        tx,
    );
    assert_eq!(cache.refs(&rig.image.disk.sha256), 1);
    assert!(
        cache.evict().is_empty(),
        "a base in use is never evicted, even over budget"
    );
}

#[test]
fn a_precache_request_fetches_and_pins_the_image_until_it_is_withdrawn() {
    let mut rig = rig();
    let mut want = desired(&rig.image, &[]);
    want.precache = vec![rig.image.clone()];
    let actions = pass(&rig, &want);
    assert!(matches!(actions.as_slice(), [Action::Precache(_)]));
    let sha = rig.image.disk.sha256.clone();
    assert!(rig.cache.held().contains(&sha));
    assert_eq!(rig.cache.refs(&sha), 1, "pinned while asked for");
    // The next pass reports what the cache holds and asks for nothing more.
    assert!(pass(&rig, &want).is_empty());
    let images: Vec<_> = std::iter::from_fn(|| rig.events.try_recv().ok())
        .filter_map(|e| match e {
            ReportEvent::Images(list) => Some(list),
            _ => None,
        })
        .collect();
    assert_eq!(images.last(), Some(&vec![sha.clone()]));
    // Withdrawn: no longer held, so the cache may evict it.
    want.precache.clear();
    pass(&rig, &want);
    assert_eq!(rig.cache.refs(&sha), 0);
}

#[test]
fn a_domain_list_taken_before_a_start_finished_does_not_count_the_new_guest_as_gone() {
    let mut rig = rig();
    let want = desired(&rig.image, &[(6, Desire::Run)]);
    // The loop lists domains (none yet), then the start finishes, then it plans.
    let listed_at = rig.reconciler.epoch();
    let stale = rig.hv.list().unwrap();
    for action in rig.reconciler.plan(&want, &stale, listed_at) {
        rig.reconciler.execute(action);
    }
    drain(&mut rig);
    assert!(rig.reconciler.plan(&want, &stale, listed_at).is_empty());
    assert!(
        drain(&mut rig).is_empty(),
        "no Failed report from a stale list"
    );
    // A fresh list sees it running.
    assert!(pass(&rig, &want).is_empty());
    assert_eq!(rig.hv.created().len(), 1);
}

fn with_nic(image: &ImageSpec, id: u64) -> HostDesired {
    let mut want = desired(image, &[(id, Desire::Run)]);
    want.instances[0].nics = vec![stratus_common::network::NicSpec {
        network: "public".into(),
        bridge: "brtest".into(),
        vlan: None,
        mac: "0a:53:0a:fa:01:0a".into(),
        ip: "10.250.1.10".into(),
        prefix: 24,
        gateway: "10.250.1.1".into(),
        dns: vec![],
    }];
    want.instances[0].ssh_key = Some("ssh-ed25519 AAAAC3Nza me@host".into());
    want.instances[0].hostname = "web-1".into();
    want
}

#[test]
fn a_nic_gets_a_protected_tap_and_a_cidata_iso_and_loses_both_with_the_instance() {
    let mut rig = rig();
    let want = with_nic(&rig.image, 12);
    pass(&rig, &want);
    let created = rig.hv.created();
    assert_eq!(created.len(), 1, "{:?}", drain(&mut rig));
    let tap = "sc0ff12n0".to_owned();
    assert_eq!(created[0].nics[0].tap, tap);
    assert_eq!(created[0].nics[0].mac, "0a:53:0a:fa:01:0a");
    assert_eq!(
        created[0].cidata.as_deref(),
        Some(rig.dirs.dir(12).join("cidata.iso").as_path())
    );
    assert!(rig.dirs.dir(12).join("cidata.iso").exists());
    assert_eq!(rig.links.taps(), vec![tap.clone()]);
    assert!(rig
        .filter
        .calls()
        .iter()
        .any(|c| matches!(c, FilterCall::Protect(t) if t.tap == tap)));
    drain(&mut rig);
    let mut gone = want.clone();
    gone.instances[0].desire = Desire::Destroy;
    pass(&rig, &gone);
    assert!(rig.links.taps().is_empty(), "tap removed");
    assert!(rig
        .filter
        .calls()
        .iter()
        .any(|c| matches!(c, FilterCall::Unprotect(t) if t == &tap)));
    assert!(
        !rig.dirs.dir(12).exists(),
        "ISO removed with the instance directory"
    );
}

#[test]
fn a_failed_domain_start_removes_the_tap_and_its_rules() {
    let mut rig = rig();
    rig.hv.fail_creates(Some("boom"));
    pass(&rig, &with_nic(&rig.image, 13));
    assert!(rig.links.taps().is_empty());
    assert!(rig
        .filter
        .calls()
        .iter()
        .any(|c| matches!(c, FilterCall::Unprotect(_))));
    let (_, state, reason) = drain(&mut rig).pop().unwrap();
    assert_eq!(state, ActualState::Failed);
    assert!(reason.unwrap().contains("boom"));
}

const VOL: &str = "11111111-1111-4111-8111-111111111111";

fn disk(target: &str, source: DiskLocation, attach: bool) -> DesiredDisk {
    DesiredDisk {
        volume: VOL.into(),
        target: target.into(),
        read_only: false,
        source,
        attach,
    }
}

fn disk_events(rig: &mut Rig) -> Vec<(u64, DiskReport, Option<String>)> {
    let mut out = Vec::new();
    while let Ok(event) = rig.events.try_recv() {
        if let ReportEvent::Disk(d) = event {
            assert_eq!(d.volume, VOL);
            out.push((d.instance, d.state, d.reason));
        }
    }
    out
}

#[test]
fn a_launch_disk_is_in_the_domain_from_its_pool_with_its_serial() {
    let mut rig = rig();
    let mut want = desired(&rig.image, &[(3, Desire::Run)]);
    want.instances[0].disks = vec![disk("vdb", DiskLocation::Local, true)];
    pass(&rig, &want);
    let created = rig.hv.created();
    assert_eq!(created.len(), 1);
    let d = &created[0].disks[0];
    assert_eq!(d.target, "vdb");
    assert_eq!(d.serial, "11111111-1111-4111-8");
    assert!(matches!(&d.source, DiskSource::File(p) if p.ends_with(format!("{VOL}.raw"))));
    assert_eq!(disk_events(&mut rig), vec![(3, DiskReport::Attached, None)]);
}

#[test]
fn an_instance_waits_for_the_export_of_a_remote_disk() {
    let rig = rig();
    let mut want = desired(&rig.image, &[(3, Desire::Run)]);
    want.instances[0].disks = vec![disk("vdb", DiskLocation::Pending, true)];
    assert!(pass(&rig, &want).is_empty());
    assert!(rig.hv.created().is_empty());
    want.instances[0].disks[0].source = DiskLocation::Nbd {
        host: "127.0.0.1".into(),
        port: 10809,
        export: "sl-abc".into(),
        tls_server: Some("storage-1".into()),
    };
    pass(&rig, &want);
    assert!(matches!(
        &rig.hv.created()[0].disks[0].source,
        DiskSource::Nbd { port: 10809, tls_server: Some(server), .. } if server == "storage-1"
    ));
}

#[test]
fn hot_plug_and_unplug_are_reported_once_each() {
    let mut rig = rig();
    let mut want = desired(&rig.image, &[(4, Desire::Run)]);
    pass(&rig, &want);
    pass(&rig, &want);
    want.instances[0].disks = vec![disk("vdb", DiskLocation::Local, true)];
    pass(&rig, &want);
    let domain = stratus_common::agent::domain_name(CLUSTER, 4);
    assert_eq!(rig.hv.disks(&domain).len(), 1);
    assert_eq!(disk_events(&mut rig), vec![(4, DiskReport::Attached, None)]);
    // Settled: the next pass does not look again.
    assert!(pass(&rig, &want).is_empty());
    want.instances[0].disks[0].attach = false;
    pass(&rig, &want);
    assert!(rig.hv.disks(&domain).is_empty());
    assert_eq!(disk_events(&mut rig), vec![(4, DiskReport::Detached, None)]);
}

#[test]
fn a_guest_that_keeps_the_disk_is_never_reported_detached_until_it_lets_go() {
    let mut rig = rig();
    let mut want = desired(&rig.image, &[(4, Desire::Run)]);
    want.instances[0].disks = vec![disk("vdb", DiskLocation::Local, true)];
    pass(&rig, &want);
    pass(&rig, &want);
    disk_events(&mut rig);
    let domain = stratus_common::agent::domain_name(CLUSTER, 4);
    rig.hv.set_guest_cooperates(&domain, false);
    want.instances[0].disks[0].attach = false;
    for _ in 0..3 {
        pass(&rig, &want);
    }
    assert!(disk_events(&mut rig).is_empty());
    // The guest was asked once, not at every pass.
    assert_eq!(rig.hv.detached().len(), 1);
    assert!(rig.hv.release_disk(&domain, "vdb"));
    pass(&rig, &want);
    assert_eq!(disk_events(&mut rig), vec![(4, DiskReport::Detached, None)]);
}

#[test]
fn a_guest_that_missed_the_unplug_request_is_asked_again_later() {
    let mut rig = rig_with(|r| r.with_detach_retry(std::time::Duration::from_millis(200)));
    let mut want = desired(&rig.image, &[(4, Desire::Run)]);
    want.instances[0].disks = vec![disk("vdb", DiskLocation::Local, true)];
    pass(&rig, &want);
    pass(&rig, &want);
    disk_events(&mut rig);
    let domain = stratus_common::agent::domain_name(CLUSTER, 4);
    rig.hv.set_guest_cooperates(&domain, false);
    want.instances[0].disks[0].attach = false;
    pass(&rig, &want);
    assert_eq!(rig.hv.detached().len(), 1);
    std::thread::sleep(std::time::Duration::from_millis(250));
    // This time the guest hears it.
    rig.hv.set_guest_cooperates(&domain, true);
    pass(&rig, &want);
    assert_eq!(rig.hv.detached().len(), 2);
    assert_eq!(disk_events(&mut rig), vec![(4, DiskReport::Detached, None)]);
}

#[test]
fn a_failed_hot_plug_is_reported_with_its_reason() {
    let mut rig = rig();
    let mut want = desired(&rig.image, &[(4, Desire::Run)]);
    pass(&rig, &want);
    pass(&rig, &want);
    rig.hv.fail_attaches(Some("no PCI slot"));
    want.instances[0].disks = vec![disk("vdb", DiskLocation::Local, true)];
    pass(&rig, &want);
    let events = disk_events(&mut rig);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1, DiskReport::Failed);
    assert!(events[0].2.as_deref().unwrap().contains("no PCI slot"));
    // Not retried behind the controller's back.
    assert!(pass(&rig, &want).is_empty());
}

#[test]
fn latencies_are_observed_once_per_generation_network_set_up_and_disk_change() {
    let mut rig = rig();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut want = with_nic(&rig.image, 30);
    want.instances[0].accepted_at_ms = Some(now_ms - 1_500);
    pass(&rig, &want);
    let timings = rig.reconciler.timings().clone();
    assert_eq!(timings.accepted_to_running.count(), 1);
    let waited = timings.accepted_to_running.sum();
    assert!((1.5..60.0).contains(&waited), "{waited}");
    assert_eq!(timings.network_setup.count(), 1);
    // Running already: later passes observe nothing more.
    pass(&rig, &want);
    assert_eq!(timings.accepted_to_running.count(), 1);

    // The same generation booted again after a host reboot was measured the first time.
    rig.hv
        .remove_domain(&stratus_common::agent::domain_name(CLUSTER, 30));
    let (tx, _events) = mpsc::unbounded_channel();
    let after_reboot = restarted(&rig, tx).with_host_boot("another-boot");
    let domains = rig.hv.list().unwrap();
    for action in after_reboot.plan(&want, &domains, after_reboot.epoch()) {
        after_reboot.execute(action);
    }
    assert_eq!(rig.hv.created().len(), 2);
    assert_eq!(after_reboot.timings().accepted_to_running.count(), 0);
    assert_eq!(after_reboot.timings().network_setup.count(), 1);

    // A reboot is a new generation, timed from its own acceptance.
    let mut reboot = at_generation(want, Desire::Run, 1);
    reboot.instances[0].accepted_at_ms = Some(now_ms);
    pass(&rig, &reboot);
    assert_eq!(rig.hv.created().len(), 3);
    assert_eq!(timings.accepted_to_running.count(), 2);

    // One hot-plug, one unplug that the guest completes on a later pass.
    drain(&mut rig);
    reboot.instances[0].disks = vec![disk("vdb", DiskLocation::Local, true)];
    pass(&rig, &reboot);
    assert_eq!(timings.disk_attach.count(), 1);
    let domain = stratus_common::agent::domain_name(CLUSTER, 30);
    rig.hv.set_guest_cooperates(&domain, false);
    reboot.instances[0].disks[0].attach = false;
    pass(&rig, &reboot);
    assert_eq!(timings.disk_detach.count(), 0, "not released yet");
    assert!(rig.hv.release_disk(&domain, "vdb"));
    pass(&rig, &reboot);
    assert_eq!(
        disk_events(&mut rig),
        vec![
            (30, DiskReport::Attached, None),
            (30, DiskReport::Detached, None)
        ]
    );
    assert_eq!(timings.disk_detach.count(), 1);
    assert_eq!(timings.disk_attach.count(), 1);
}

/// Self-fencing: once the host's lease ran out, the guests that may be evacuated are destroyed
/// (their disks kept) and held back, the others run on; in touch again, a fenced guest the
/// controller kept here is started again on its disk, and the report says why.
#[test]
fn a_host_whose_lease_ran_out_destroys_and_holds_back_what_may_be_evacuated() {
    let dir = tempfile::tempdir().unwrap();
    let lease = Arc::new(crate::lease::Lease::open(dir.path().join("lease"), "boot"));
    let mut rig = rig_with(|r| r.with_lease(lease.clone()));
    let mut want = desired(&rig.image, &[(1, Desire::Run), (2, Desire::Run)]);
    want.instances[1].evacuate = true;
    want.lease_secs = Some(60);
    let sent = crate::lease::boottime() - std::time::Duration::from_secs(30);
    lease.renewed(sent, &want).unwrap();
    pass(&rig, &want);
    std::fs::write(rig.dirs.disk(2), b"the guest's data").unwrap();
    drain(&mut rig);
    assert_eq!(rig.hv.created().len(), 2);

    // The site's lease is now 20 s, and the last answer came to a request sent 30 s ago.
    want.lease_secs = Some(20);
    lease.renewed(sent, &want).unwrap();
    assert!(lease.expired());
    let fenced = crate::self_fence::fence(
        &*rig.hv,
        &rig.dirs,
        CLUSTER,
        "this-host",
        &lease.evacuable(),
        std::time::Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(fenced.destroyed, vec![2]);
    assert_eq!(fenced.failed, 0);
    let names: Vec<String> = rig.hv.domains().into_iter().map(|d| d.name).collect();
    assert_eq!(
        names,
        vec![stratus_common::agent::domain_name(CLUSTER, 1)],
        "the instance that may not be evacuated runs on"
    );
    assert_eq!(
        std::fs::read(rig.dirs.disk(2)).unwrap(),
        b"the guest's data"
    );
    // Held back while the lease is out: neither started again nor reported.
    assert!(pass(&rig, &want).is_empty());
    assert_eq!(rig.hv.created().len(), 2);
    assert!(drain(&mut rig).is_empty());

    // The controller answers again and still wants it here: started again on its disk.
    want.lease_secs = Some(60);
    lease.renewed(crate::lease::boottime(), &want).unwrap();
    let actions = pass(&rig, &want);
    assert!(
        matches!(actions.as_slice(), [Action::Restart(i)] if i.id == 2),
        "{actions:?}"
    );
    assert_eq!(rig.hv.created().len(), 3);
    assert_eq!(rig.hv.created()[2].disk, rig.dirs.disk(2));
    assert_eq!(
        std::fs::read(rig.dirs.disk(2)).unwrap(),
        b"the guest's data"
    );
    let (id, state, reason) = drain(&mut rig).pop().unwrap();
    assert_eq!((id, state), (2, ActualState::Running));
    assert_eq!(
        reason.as_deref(),
        Some(
            "started again by its host, back in touch with the controller, which kept the \
             instance there: its host destroyed the guest after 30 s out of touch with the \
             controller (self-fencing, as the instance may be evacuated)"
        )
    );
    assert!(rig.dirs.fenced(2).is_none(), "the mark is gone");
    assert!(
        rig.dirs.restarts(2).is_empty(),
        "not a restart of the policy"
    );
}

/// A desired state older than the generation this host already booted (a stale answer) is
/// never acted on: no start, no stop, no report.
#[test]
fn an_older_generation_than_the_one_booted_is_refused() {
    let mut rig = rig();
    let want = at_generation(desired(&rig.image, &[(4, Desire::Run)]), Desire::Run, 3);
    pass(&rig, &want);
    drain(&mut rig);
    assert_eq!(rig.dirs.booted_generation(4), 3);
    let name = stratus_common::agent::domain_name(CLUSTER, 4);
    assert!(rig.hv.remove_domain(&name), "the guest is gone");
    for desire in [Desire::Run, Desire::Stop] {
        let stale = at_generation(want.clone(), desire, 2);
        assert!(pass(&rig, &stale).is_empty(), "{desire:?}");
        assert!(drain(&mut rig).is_empty());
    }
    assert_eq!(rig.hv.created().len(), 1);
}
