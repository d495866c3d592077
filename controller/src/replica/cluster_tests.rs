//! Multi-node groups in one process, over [`SimNetwork`]: election, writes and linearizable
//! reads through any node, a minority that refuses both, healing, a follower caught up by
//! snapshot, membership changes under load, and lossy, duplicating, reordering links. Each
//! test checks what a client would see: every acknowledged write is on every node, and no
//! term ever had two leaders.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::sim::{Faults, SimNetwork};
use super::tests::image;
use super::*;

const WAIT: Duration = Duration::from_secs(20);

/// Every (term, leader) any node ever reported, to check there was one leader per term.
#[derive(Default)]
struct Leaders(Mutex<BTreeMap<u64, BTreeSet<u64>>>);

impl Leaders {
    fn watch(self: &Arc<Self>, replica: &Replica) {
        let mut status = replica.status.clone();
        let leaders = self.clone();
        tokio::spawn(async move {
            loop {
                let s = status.borrow_and_update().clone();
                if s.leader == Some(s.node_id) {
                    leaders
                        .0
                        .lock()
                        .unwrap()
                        .entry(s.term)
                        .or_default()
                        .insert(s.node_id);
                }
                if status.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    fn assert_one_per_term(&self) {
        for (term, nodes) in self.0.lock().unwrap().iter() {
            assert!(nodes.len() == 1, "term {term} had leaders {nodes:?}");
        }
    }
}

struct Cluster {
    network: Arc<SimNetwork>,
    nodes: HashMap<u64, Replica>,
    dirs: HashMap<u64, tempfile::TempDir>,
    leaders: Arc<Leaders>,
    snapshot_every: u64,
}

impl Cluster {
    fn config(&self, id: u64, voters: Vec<u64>) -> ReplicaConfig {
        ReplicaConfig {
            node_id: id,
            voters,
            path: self.path(id),
            snapshot_every: self.snapshot_every,
            propose_timeout: Duration::from_secs(3),
            read_timeout: Duration::from_secs(3),
            force_new_cluster: false,
        }
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dirs[&id].path().join("raft.redb")
    }

    fn launch(&mut self, id: u64, voters: Vec<u64>) {
        self.dirs
            .entry(id)
            .or_insert_with(|| tempfile::tempdir().unwrap());
        let replica =
            Replica::start_with(self.config(id, voters), self.network.transport(id)).unwrap();
        self.leaders.watch(&replica);
        self.network.attach(id, replica.clone());
        self.nodes.insert(id, replica);
    }

    /// A cluster of `n` voters: node 1 starts alone, the others join as learners and are
    /// promoted, one change at a time, as an administrator would.
    async fn new(n: u64, snapshot_every: u64, seed: u64) -> Self {
        let mut cluster = Self {
            network: SimNetwork::new(seed),
            nodes: HashMap::new(),
            dirs: HashMap::new(),
            leaders: Arc::default(),
            snapshot_every,
        };
        cluster.launch(1, vec![1]);
        assert!(cluster.nodes[&1].wait_for_leader(WAIT).await);
        for id in 2..=n {
            cluster.join(id).await;
        }
        cluster
    }

    /// Adds node `id` as a learner, waits for it to catch up, promotes it.
    async fn join(&mut self, id: u64) {
        self.launch(id, vec![]);
        let leader = self.leader().await;
        leader
            .change_membership(MemberChange::AddLearner {
                id,
                address: format!("node-{id}"),
                api_address: String::new(),
                incarnation: String::new(),
            })
            .await
            .unwrap();
        let target = leader.status().commit_index;
        assert!(
            self.nodes[&id]
                .wait_for_status(WAIT, |s| s.applied_index >= target)
                .await,
            "node {id} caught up"
        );
        self.leader()
            .await
            .change_membership(MemberChange::Promote { id })
            .await
            .unwrap();
    }

    /// The current leader among the running nodes.
    async fn leader(&self) -> Replica {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            for replica in self.nodes.values() {
                if replica.is_leader() {
                    return replica.clone();
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "no leader elected");
            // Wake on any node's status change rather than a fixed sleep.
            let waits = self
                .nodes
                .values()
                .map(|r| Box::pin(r.wait_for_status(WAIT, |s| s.leader == Some(s.node_id))));
            futures_util::future::select_all(waits).await;
        }
    }

    async fn leader_among(&self, ids: &[u64]) -> Replica {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(r) = ids.iter().map(|id| &self.nodes[id]).find(|r| r.is_leader()) {
                return r.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no leader among {ids:?}"
            );
            let waits = ids.iter().map(|id| {
                Box::pin(self.nodes[id].wait_for_status(WAIT, |s| s.leader == Some(s.node_id)))
            });
            futures_util::future::select_all(waits).await;
        }
    }

    fn stop(&mut self, id: u64) {
        self.network.detach(id);
        if let Some(replica) = self.nodes.remove(&id) {
            replica.shutdown();
        }
    }

    /// Image names every running node has, read linearizably through that node.
    async fn names_on(&self, id: u64) -> BTreeSet<String> {
        self.nodes[&id]
            .read(Consistency::Linearizable, |s| {
                s.images.keys().cloned().collect::<BTreeSet<_>>()
            })
            .await
            .unwrap()
    }

    async fn assert_everywhere(&self, acknowledged: &BTreeSet<String>) {
        for &id in self.nodes.keys() {
            let names = self.names_on(id).await;
            let missing: Vec<_> = acknowledged.difference(&names).collect();
            assert!(
                missing.is_empty(),
                "node {id} lacks acknowledged writes {missing:?}"
            );
        }
        self.leaders.assert_one_per_term();
    }

    fn shutdown(self) {
        for replica in self.nodes.values() {
            replica.shutdown();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_writes_made_through_any_node() {
    let cluster = Cluster::new(3, 1000, 1).await;
    let leader = cluster.leader().await;
    let status = leader.status();
    assert_eq!(
        status.leader,
        Some(1),
        "the first node keeps leading while the others join"
    );
    assert_eq!(status.voters, vec![1, 2, 3]);
    assert!(status.learners.is_empty());
    assert_eq!(status.peers.len(), 2);
    let mut acknowledged = BTreeSet::new();
    for round in 0..5 {
        for id in 1..=3 {
            let name = format!("img-{id}-{round}");
            // A follower forwards its proposal to the leader and answers when its entry
            // applies locally.
            cluster.nodes[&id]
                .propose(image(&name))
                .await
                .unwrap()
                .unwrap();
            acknowledged.insert(name.clone());
            // Read-your-writes through every node.
            for reader in 1..=3 {
                assert!(cluster.names_on(reader).await.contains(&name));
            }
        }
    }
    let members = cluster.nodes[&2]
        .read(Consistency::Linearizable, |s| s.members.clone())
        .await
        .unwrap();
    assert_eq!(members.keys().copied().collect::<Vec<_>>(), vec![2, 3]);
    assert!(members.values().all(|m| m.voter));
    cluster.assert_everywhere(&acknowledged).await;
    cluster.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_serves_nothing_and_the_majority_goes_on() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info,raft=info")
        .with_test_writer()
        .try_init();
    let cluster = Cluster::new(3, 1000, 2).await;
    let old = cluster.leader().await;
    let old_id = old.status().node_id;
    let others: Vec<u64> = (1..=3).filter(|&i| i != old_id).collect();
    let mut acknowledged = BTreeSet::new();
    old.propose(image("before")).await.unwrap().unwrap();
    acknowledged.insert("before".to_owned());

    cluster.network.partition(&[&[old_id], &others]);
    // The isolated node can commit nothing and confirm no read.
    let write = old.propose(image("lost")).await;
    assert!(
        matches!(
            write,
            Err(ReplicaError::ProposalTimeout(_)
                | ReplicaError::Superseded
                | ReplicaError::NoLeader)
        ),
        "{write:?}"
    );
    let read = old
        .read(Consistency::Linearizable, |s| s.images.len())
        .await;
    assert!(
        matches!(
            read,
            Err(ReplicaError::ReadTimeout(_) | ReplicaError::NoLeader)
        ),
        "{read:?}"
    );
    // check-quorum: it no longer believes it leads.
    assert!(
        old.wait_for_status(WAIT, |s| s.leader != Some(s.node_id))
            .await,
        "the isolated leader stepped down"
    );
    // The majority elects a new leader and takes writes through either of its nodes.
    let new = cluster.leader_among(&others).await;
    assert_ne!(new.status().node_id, old_id);
    for &id in &others {
        let name = format!("during-{id}");
        cluster.nodes[&id]
            .propose(image(&name))
            .await
            .unwrap()
            .unwrap();
        acknowledged.insert(name);
    }
    // A stale read on the isolated node still answers, from what it has.
    let stale = old
        .read(Consistency::Stale, |s| s.images.len())
        .await
        .unwrap();
    assert!(stale >= 1);

    cluster.network.heal();
    let target = new.status().commit_index;
    assert!(
        old.wait_for_status(WAIT, |s| s.applied_index >= target)
            .await
    );
    let name = "after".to_owned();
    old.propose(image(&name)).await.unwrap().unwrap();
    acknowledged.insert(name);
    cluster.assert_everywhere(&acknowledged).await;
    cluster.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_fell_behind_the_compacted_log_catches_up_by_snapshot() {
    let mut cluster = Cluster::new(3, 5, 3).await;
    let leader = cluster.leader().await;
    let leader_id = leader.status().node_id;
    let behind = (1..=3).find(|&i| i != leader_id).unwrap();
    cluster.stop(behind);
    let mut acknowledged = BTreeSet::new();
    for i in 0..40 {
        let name = format!("while-down-{i}");
        leader.propose(image(&name)).await.unwrap().unwrap();
        acknowledged.insert(name);
    }
    // The leader compacted its log past what the stopped node has.
    let path = cluster.path(behind);
    assert!(path.exists());
    cluster.launch(behind, vec![]);
    let mut rounds = cluster.nodes[&behind].subscribe();
    let target = leader.status().commit_index;
    assert!(
        cluster.nodes[&behind]
            .wait_for_status(WAIT, |s| s.applied_index >= target)
            .await
    );
    let mut reset = false;
    while let Ok(round) = rounds.try_recv() {
        reset |= round.reset;
    }
    assert!(reset, "the follower installed a snapshot");
    cluster.assert_everywhere(&acknowledged).await;
    // And it keeps applying the log after the snapshot.
    cluster.nodes[&behind]
        .propose(image("after-snapshot"))
        .await
        .unwrap()
        .unwrap();
    acknowledged.insert("after-snapshot".into());
    cluster.assert_everywhere(&acknowledged).await;
    cluster.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_under_load_lose_no_acknowledged_write() {
    let mut cluster = Cluster::new(3, 50, 4).await;
    let leader_id = cluster.leader().await.status().node_id;
    // The node that will be removed: not the leader, so leadership never moves.
    let removed = (1..=3).find(|&i| i != leader_id).unwrap();
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let nodes: Vec<(u64, Replica)> = cluster
            .nodes
            .iter()
            .map(|(id, r)| (*id, r.clone()))
            .collect();
        let (acknowledged, failed) = (acknowledged.clone(), failed.clone());
        tokio::spawn(async move {
            for i in 0..150 {
                let name = format!("load-{i}");
                let (id, node) = &nodes[i % nodes.len()];
                match node.propose(image(&name)).await {
                    Ok(Ok(_)) => {
                        acknowledged.lock().unwrap().insert(name);
                    }
                    other => failed.lock().unwrap().push((*id, format!("{other:?}"))),
                }
            }
        })
    };
    cluster.join(4).await;
    cluster
        .leader()
        .await
        .change_membership(MemberChange::Remove { id: removed })
        .await
        .unwrap();
    writer.await.unwrap();
    cluster.stop(removed);
    let status = cluster.leader().await.status();
    assert_eq!(status.voters.len(), 3);
    assert!(!status.voters.contains(&removed));
    // Writes fail only through the node that left; every other one was acknowledged.
    let failed = failed.lock().unwrap().clone();
    assert!(failed.iter().all(|(id, _)| *id == removed), "{failed:?}");
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 100,
        "{} of 150 acknowledged",
        acknowledged.len()
    );
    cluster.assert_everywhere(&acknowledged).await;
    cluster.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_are_checked_and_made_one_at_a_time() {
    let lone = Cluster::new(1, 1000, 5).await;
    let only = lone.nodes[&1].clone();
    assert_eq!(
        only.change_membership(MemberChange::Remove { id: 1 }).await,
        Err(MembershipError::LastVoter(1))
    );
    assert_eq!(
        only.change_membership(MemberChange::Promote { id: 9 })
            .await,
        Err(MembershipError::NotMember(9))
    );
    lone.shutdown();

    let cluster = Cluster::new(3, 1000, 7).await;
    let leader = cluster.leader().await;
    let leader_id = leader.status().node_id;
    let follower = (1..=3).find(|&i| i != leader_id).unwrap();
    assert_eq!(
        cluster.nodes[&follower]
            .change_membership(MemberChange::Remove { id: leader_id })
            .await,
        Err(MembershipError::NotLeader { leader: leader_id })
    );
    // Cut off from its followers, the leader cannot commit a change; a second one is refused
    // while the first is pending.
    let others: Vec<u64> = (1..=3).filter(|&i| i != leader_id).collect();
    cluster.network.partition(&[&[leader_id], &others]);
    let before = leader.status().last_index;
    let first = tokio::spawn({
        let leader = leader.clone();
        async move {
            leader
                .change_membership(MemberChange::AddLearner {
                    id: 4,
                    address: "node-4".into(),
                    api_address: String::new(),
                    incarnation: String::new(),
                })
                .await
        }
    });
    assert!(
        leader
            .wait_for_status(WAIT, |s| s.last_index > before)
            .await
    );
    assert_eq!(
        leader
            .change_membership(MemberChange::AddLearner {
                id: 5,
                address: "node-5".into(),
                api_address: String::new(),
                incarnation: String::new(),
            })
            .await,
        Err(MembershipError::ChangePending)
    );
    assert!(
        first.await.unwrap().is_err(),
        "the cut-off change never committed"
    );
    cluster.network.heal();
    cluster.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_duplicating_reordering_links_lose_no_acknowledged_write() {
    let cluster = Cluster::new(3, 20, 6).await;
    cluster.network.set_faults(Faults {
        drop: 0.1,
        duplicate: 0.1,
        max_delay: Duration::from_millis(30),
    });
    let mut acknowledged = BTreeSet::new();
    for i in 0..60 {
        let name = format!("lossy-{i}");
        let node = &cluster.nodes[&(1 + i % 3)];
        if let Ok(Ok(_)) = node.propose(image(&name)).await {
            acknowledged.insert(name);
        }
    }
    cluster.network.set_faults(Faults::default());
    assert!(
        acknowledged.len() >= 30,
        "{} of 60 acknowledged",
        acknowledged.len()
    );
    cluster.assert_everywhere(&acknowledged).await;
    cluster.shutdown();
}
