use std::time::Duration;

use stratus_common::api::DiskFormat;

use super::*;
use crate::state::Event;
use crate::state::{standard_types, ImageRecord, UserRecord};

fn config(dir: &std::path::Path, snapshot_every: u64) -> ReplicaConfig {
    ReplicaConfig::single(1, dir.join("raft.redb"), snapshot_every)
}

pub(super) fn image(name: &str) -> Command {
    Command::RegisterImage(ImageRecord {
        name: name.into(),
        format: DiskFormat::Raw,
        disk: stratus_common::api::Artifact {
            locations: vec!["file:///images/a.qcow2".into()],
            sha256: "00".repeat(32),
            size: None,
            compression: Default::default(),
        },
        kernel: None,
        initrd: None,
        cmdline: None,
        owner: "admin".into(),
        created_ms: 1,
    })
}

async fn started(dir: &std::path::Path, snapshot_every: u64) -> Replica {
    let handle = Replica::start(config(dir, snapshot_every)).unwrap();
    assert!(
        handle.wait_for_leader(Duration::from_secs(5)).await,
        "single node became leader"
    );
    handle
}

#[tokio::test]
async fn proposals_apply_and_rejections_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let raft = started(dir.path(), 1000).await;
    raft.propose(Command::Bootstrap {
        cluster_id: "c1".into(),
        admin: UserRecord {
            name: "admin".into(),
            password_hash: "h".into(),
            admin: true,
            created_ms: 1,
        },
        types: standard_types(),
        cpu_allocation_ratio_percent: 100,
        first_member: None,
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(raft.propose(image("a")).await, Ok(Ok(Outcome::Applied)));
    assert_eq!(
        raft.propose(image("a")).await,
        Ok(Err(Rejection::ImageExists("a".into())))
    );
    assert!(raft
        .read(Consistency::Linearizable, |s| s.images.contains_key("a"))
        .await
        .unwrap());
    assert!(raft.applied_index() >= 3);
    raft.shutdown();
}

#[tokio::test]
async fn restart_replays_to_the_same_state_with_and_without_snapshots() {
    for snapshot_every in [1000, 3] {
        let dir = tempfile::tempdir().unwrap();
        let before = {
            let raft = started(dir.path(), snapshot_every).await;
            for i in 0..10 {
                raft.propose(image(&format!("img-{i}")))
                    .await
                    .unwrap()
                    .unwrap();
            }
            let state = raft.read(Consistency::Stale, Clone::clone).await.unwrap();
            raft.shutdown();
            state
        };
        let raft = started(dir.path(), snapshot_every).await;
        // Replay of the log after the snapshot happens as the node applies committed entries.
        // A linearizable read waits until this node applied everything committed before it.
        assert_eq!(
            raft.read(Consistency::Linearizable, Clone::clone)
                .await
                .unwrap(),
            before,
            "snapshot_every={snapshot_every}"
        );
        // And it keeps accepting writes after the restart.
        raft.propose(image("after")).await.unwrap().unwrap();
        raft.shutdown();
    }
}

#[tokio::test]
async fn many_concurrent_proposals_all_get_their_own_answer() {
    let dir = tempfile::tempdir().unwrap();
    let raft = started(dir.path(), 50).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let raft = raft.clone();
        tasks.push(tokio::spawn(async move {
            raft.propose(image(&format!("i{i}"))).await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), Ok(Ok(Outcome::Applied)));
    }
    assert_eq!(
        raft.read(Consistency::Linearizable, |s| s.images.len())
            .await
            .unwrap(),
        200
    );
    raft.shutdown();
}

#[tokio::test]
async fn subscribers_hear_every_applied_round_with_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let raft = started(dir.path(), 1000).await;
    let mut applied = raft.subscribe();
    raft.propose(image("a")).await.unwrap().unwrap();
    // The refused duplicate applies too (the log holds it) but changes nothing.
    let _ = raft.propose(image("a")).await.unwrap();
    let mut events = Vec::new();
    while events.is_empty() {
        let round = applied.recv().await.unwrap();
        events.extend(
            round
                .events
                .iter()
                .filter(|(_, e)| !matches!(e, Event::LeaderChanged { .. }))
                .cloned(),
        );
    }
    assert!(
        matches!(&events[..], [(_, Event::ImageRegistered { name, owner })] if name == "a" && owner == "admin"),
        "{events:?}"
    );
    let index = events[0].0;
    let round = applied.recv().await.unwrap();
    assert!(round.index > index && round.events.is_empty(), "{round:?}");
    assert_eq!(raft.applied_index(), round.index);
    raft.shutdown();
}

/// Proposes img-0..img-4 to a new one-node store, and answers the log index of img-2.
async fn five_images(dir: &std::path::Path) -> u64 {
    let raft = started(dir, 1000).await;
    let mut third = 0;
    for i in 0..5 {
        raft.propose(image(&format!("img-{i}")))
            .await
            .unwrap()
            .unwrap();
        if i == 2 {
            third = raft.applied_index();
        }
    }
    raft.shutdown();
    third
}

async fn halted_after_restart(dir: &std::path::Path) -> (String, Vec<String>) {
    let raft = Replica::start(config(dir, 1000)).unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(10), raft.halted())
        .await
        .expect("the node stops");
    let images = raft.stale(|s| s.images.keys().cloned().collect());
    // A halted node serves nothing.
    assert!(raft.propose(image("more")).await.is_err());
    raft.shutdown();
    (reason, images)
}

#[tokio::test]
async fn a_damaged_log_entry_stops_the_node_with_why_and_is_never_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let third = five_images(dir.path()).await;
    storage::rewrite_entry_data(&dir.path().join("raft.redb"), third, |data| {
        let last = data.len() - 1;
        data[last] ^= 0x20;
    });
    let (reason, images) = halted_after_restart(dir.path()).await;
    assert!(
        reason.contains(&format!(
            "log entry {third} cannot be applied: damaged: its checksum does not match"
        )),
        "{reason}"
    );
    assert_eq!(
        images,
        ["img-0", "img-1"],
        "nothing from the damaged entry on"
    );
}

#[tokio::test]
async fn an_entry_from_a_newer_state_machine_stops_the_node_and_says_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let third = five_images(dir.path()).await;
    storage::rewrite_entry_data(&dir.path().join("raft.redb"), third, |data| {
        data[1..3].copy_from_slice(&(crate::codec::STATE_MACHINE_VERSION + 1).to_le_bytes());
    });
    let (reason, images) = halted_after_restart(dir.path()).await;
    assert!(
        reason.contains(&format!("log entry {third} cannot be applied")),
        "{reason}"
    );
    assert!(reason.contains("upgrade it"), "{reason}");
    assert_eq!(images, ["img-0", "img-1"]);
}
