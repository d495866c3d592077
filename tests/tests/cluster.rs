//! A controller cluster of real processes, each in its own network namespace: forming it
//! through the members API, any node answering (writes forwarded to the leader), every
//! acknowledged write surviving leader kills, and the peer link's refusals (a node of another
//! cluster, a member back with an empty disk).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use stratus_common::events::EventEnvelope;
use stratus_e2e::cluster::{TestCluster, WAIT};
use stratus_e2e::events::EventStream;

/// Node 1 starts the cluster; nodes 2..=n join through the members API.
fn formed(name: &str, n: u64) -> TestCluster {
    let mut cluster = TestCluster::new(name, n).expect("namespaces");
    for id in 1..=n {
        cluster.configure(id, id != 1, "").unwrap();
    }
    cluster.form(n).unwrap();
    cluster
}

fn network(k: u32) -> Value {
    json!({
        "name": format!("w{k}"),
        "cidr": format!("10.{}.{}.0/24", 100 + k / 256, k % 256),
        "gateway": format!("10.{}.{}.1", 100 + k / 256, k % 256),
        "bridge": format!("bw{k}"),
    })
}

/// The networks node `id` has (a linearizable read served by that node).
/// A node that just started may not know the leader yet: its reads wait for it.
fn names_on(cluster: &TestCluster, id: u64) -> BTreeSet<String> {
    let deadline = Instant::now() + WAIT;
    let list = loop {
        let (status, list) = cluster.get(id, "/networks").unwrap();
        if status == StatusCode::OK {
            break list;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{list}");
        assert!(Instant::now() < deadline, "node {id} cannot read: {list}");
        std::thread::sleep(Duration::from_millis(50));
    };
    list.as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_three_node_cluster_forms_and_any_node_answers() {
    let cluster = formed("cluster-form", 3);
    let leader = cluster.wait_leader(WAIT).unwrap();
    assert_eq!(leader, 1, "the first node leads until something happens");

    // Every node shows the same members; the leader shows their progress (once it heard from
    // each: a voter promoted a moment ago may not have answered yet).
    let deadline = Instant::now() + WAIT;
    let view = loop {
        let (_, view) = cluster.get(1, "/cluster").unwrap();
        let heard = view["members"]
            .as_array()
            .is_some_and(|ms| ms.iter().all(|m| m["last_contact_ms"].is_u64()));
        if heard {
            break view;
        }
        assert!(
            Instant::now() < deadline,
            "the leader never heard from every member: {view}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let members = view["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{view}");
    for m in members {
        let id = m["id"].as_u64().unwrap();
        let node = &cluster.nodes[&id];
        assert_eq!(m["address"], node.peer(), "{view}");
        assert_eq!(m["api_address"], node.api(), "{view}");
        assert_eq!(
            m["role"],
            if id == 1 { "leader" } else { "voter" },
            "{view}"
        );
        assert!(m["match_index"].as_u64().is_some(), "{view}");
        assert!(m["last_contact_ms"].as_u64().is_some(), "{view}");
    }
    // Asked of a follower, the view is the leader's: every member's progress is in it.
    let (_, on_3) = cluster.get(3, "/cluster").unwrap();
    assert_eq!(on_3["node_id"], 1, "{on_3}");
    assert_eq!(on_3["leader"], 1);
    assert_eq!(on_3["cluster_id"], view["cluster_id"]);
    for m in on_3["members"].as_array().unwrap() {
        assert!(m["match_index"].as_u64().is_some(), "{on_3}");
    }
    let (_, listed) = cluster.get(2, "/cluster/members").unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");

    // A write through a follower is served by the leader and readable on every node at once.
    let (status, made, served) = cluster.post(3, "/networks", &network(1)).unwrap();
    assert_eq!(status, StatusCode::CREATED, "{made}");
    assert_eq!(served, Some(1), "forwarded to the leader");
    for id in 1..=3 {
        assert!(names_on(&cluster, id).contains("w1"), "node {id}");
    }
    // A bad write through a follower gets the leader's error, unchanged.
    let (status, error, _) = cluster
        .post(
            2,
            "/networks",
            &json!({"name": "bad", "cidr": "10.0.0.0/33", "gateway": "10.0.0.1", "bridge": "b"}),
        )
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("cidr"),
        "{error}"
    );

    // A creation retried with its idempotency key, through another node, makes nothing new
    // (with no host, the instance is made Failed at placement: an instance all the same).
    cluster.register_appliance(1, "appliance").unwrap();
    let run = json!({"image": "appliance", "type": "t1.micro"});
    let key = [("Idempotency-Key", "0b7c2f7e-one-launch")];
    let (status, first, _) = cluster.post_with(2, "/instances", &run, &key).unwrap();
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, again, _) = cluster.post_with(3, "/instances", &run, &key).unwrap();
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(again["id"], first["id"]);
    let (_, all) = cluster.get(1, "/instances").unwrap();
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
    let (status, error, _) = cluster
        .post_with(2, "/instances", &run, &[("Idempotency-Key", "two words")])
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("Idempotency-Key"),
        "{error}"
    );

    // Membership rules, through any node.
    let (status, error) = cluster.add_member(2, 3).unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("already a member"),
        "{error}"
    );
    let (status, error) = cluster.delete(2, "/cluster/members/9").unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND, "{error}");
    let (status, error, _) = cluster
        .post(
            1,
            "/cluster/members",
            &json!({"id": 4, "address": "nowhere", "api_address": "x:1"}),
        )
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert!(
        error["message"].as_str().unwrap().starts_with("address"),
        "{error}"
    );
}

/// A client writing networks one after another through whichever node answers (moving on
/// when one fails; acknowledged by a 201, or for a retry after a lost answer by the 409 saying
/// it exists), and an observer recording the leader every node names in every term.
struct Load {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<BTreeSet<String>>>,
    leaders: Arc<Mutex<BTreeMap<u64, BTreeSet<u64>>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(cluster: &TestCluster) -> Self {
        let apis: BTreeMap<u64, String> =
            cluster.nodes.iter().map(|(&id, n)| (id, n.api())).collect();
        let password = cluster.admin_password.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
        let leaders: Arc<Mutex<BTreeMap<u64, BTreeSet<u64>>>> = Arc::default();
        let writer = std::thread::spawn({
            let (stop, acknowledged, apis, password) = (
                stop.clone(),
                acknowledged.clone(),
                apis.clone(),
                password.clone(),
            );
            let http = cluster
                .client(Duration::from_secs(10), Duration::from_millis(500))
                .unwrap();
            move || {
                let ids: Vec<u64> = apis.keys().copied().collect();
                let (mut k, mut target, mut retried) = (1000u32, 0usize, false);
                while !stop.load(Ordering::SeqCst) {
                    let id = ids[target % ids.len()];
                    let answer = http
                        .post(format!("https://{}/api/v1/networks", apis[&id]))
                        .basic_auth("admin", Some(&password))
                        .json(&network(k))
                        .send();
                    match answer.map(|r| r.status()) {
                        Ok(StatusCode::CREATED) => {}
                        Ok(StatusCode::CONFLICT) if retried => {}
                        Ok(StatusCode::SERVICE_UNAVAILABLE) | Err(_) => {
                            target += 1;
                            retried = true;
                            continue;
                        }
                        Ok(other) => panic!("network w{k} through node {id}: {other}"),
                    }
                    acknowledged.lock().unwrap().insert(format!("w{k}"));
                    k += 1;
                    retried = false;
                }
            }
        });
        let observer = std::thread::spawn({
            let (stop, leaders) = (stop.clone(), leaders.clone());
            let http = cluster
                .client(Duration::from_secs(1), Duration::from_secs(1))
                .unwrap();
            move || {
                while !stop.load(Ordering::SeqCst) {
                    for api in apis.values() {
                        let seen = http
                            .get(format!("https://{api}/api/v1/cluster"))
                            .basic_auth("admin", Some(&password))
                            .send()
                            .and_then(|r| r.json::<Value>());
                        if let Ok(view) = seen {
                            if let (Some(leader), Some(term)) =
                                (view["leader"].as_u64(), view["term"].as_u64())
                            {
                                leaders
                                    .lock()
                                    .unwrap()
                                    .entry(term)
                                    .or_default()
                                    .insert(leader);
                            }
                        }
                    }
                }
            }
        });
        Self {
            stop,
            acknowledged,
            leaders,
            threads: vec![writer, observer],
        }
    }

    fn acked(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    /// Waits until `more` writes past the ones acknowledged now are acknowledged.
    fn wait_more(&self, more: usize, what: &str) {
        let target = self.acked() + more;
        let deadline = Instant::now() + WAIT;
        while self.acked() < target {
            assert!(Instant::now() < deadline, "no writes acknowledged {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the load and checks, on every node in `nodes`, that every acknowledged write is
    /// there, and that no term had two leaders. Answers how many writes were acknowledged.
    fn finish(self, cluster: &TestCluster, nodes: &[u64]) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads {
            thread.join().unwrap();
        }
        let acknowledged = self.acknowledged.lock().unwrap().clone();
        for &id in nodes {
            let names = names_on(cluster, id);
            let lost: Vec<_> = acknowledged.difference(&names).collect();
            assert!(
                lost.is_empty(),
                "node {id} lacks acknowledged writes {lost:?}"
            );
        }
        for (term, leaders) in self.leaders.lock().unwrap().iter() {
            assert_eq!(leaders.len(), 1, "term {term} had leaders {leaders:?}");
        }
        acknowledged.len()
    }
}

/// The event stream of node `id` (administrator), from `last` if given.
fn events_on(cluster: &TestCluster, id: u64, query: &str, last: Option<u64>) -> EventStream {
    let http = cluster
        .client(Duration::from_secs(3600), Duration::from_secs(5))
        .unwrap();
    EventStream::connect(
        &http,
        &cluster.url(id, &format!("/events{query}")),
        "admin",
        &cluster.admin_password,
        last,
    )
    .unwrap()
}

fn seqs(events: &[EventEnvelope]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

/// Every node numbers the same changes the same, so a client whose node went away resumes
/// on another from its last event: nothing missed, nothing twice.
#[test]
fn events_are_numbered_alike_on_every_node_and_a_client_resumes_on_another() {
    let mut cluster = formed("cluster-events", 3);
    let leader = cluster.wait_leader(WAIT).unwrap();
    let followers: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    let mut a = events_on(&cluster, followers[0], "?types=network-", None);
    let mut b = events_on(&cluster, followers[1], "?types=network-", None);
    for k in 1..=3 {
        let (status, body, _) = cluster
            .post(followers[0], "/networks", &network(k))
            .unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let on_a = a.until(WAIT, |e| e.object.id == "w3").unwrap();
    let on_b = b.until(WAIT, |e| e.object.id == "w3").unwrap();
    assert_eq!(on_a.len(), 3);
    assert_eq!(seqs(&on_a), seqs(&on_b));
    assert_eq!(on_a, on_b);

    // The leader dies; more changes come while the client of the first follower is away.
    let last = on_a.last().unwrap().seq;
    drop(a);
    cluster.kill(leader);
    cluster.wait_leader(WAIT).unwrap();
    for k in 4..=5 {
        let deadline = Instant::now() + WAIT;
        loop {
            let (status, body, _) = cluster
                .post(followers[1], "/networks", &network(k))
                .unwrap();
            if status == StatusCode::CREATED {
                break;
            }
            assert!(Instant::now() < deadline, "network w{k}: {status} {body}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let on_b = b.until(WAIT, |e| e.object.id == "w5").unwrap();
    // Resumed on the other survivor: exactly what it missed.
    let mut resumed = events_on(&cluster, followers[1], "?types=network-", Some(last));
    let missed = resumed.until(WAIT, |e| e.object.id == "w5").unwrap();
    assert_eq!(missed, on_b);
    assert!(missed[0].seq > last);
}

#[test]
fn every_acknowledged_write_survives_three_leader_kills() {
    let mut cluster = formed("cluster-kills", 3);
    let load = Load::start(&cluster);
    load.wait_more(10, "before the first kill");
    let mut failovers = Vec::new();
    for round in 1..=3 {
        let leader = cluster.wait_leader(WAIT).unwrap();
        let killed_at = Instant::now();
        cluster.kill(leader);
        load.wait_more(1, &format!("after killing leader {leader} (round {round})"));
        failovers.push(killed_at.elapsed());
        let next = cluster.wait_leader(WAIT).unwrap();
        assert_ne!(next, leader, "a killed node cannot lead");
        load.wait_more(5, "under the new leader");
        cluster.start(leader).unwrap();
        cluster.wait_serving(leader, WAIT).unwrap();
    }
    load.wait_more(5, "after the last restart");
    let acked = load.finish(&cluster, &[1, 2, 3]);
    println!("{acked} writes acknowledged; first acknowledged write after each leader kill: {failovers:?}");
}

#[test]
fn a_leader_stopped_past_the_election_timeout_steps_down_and_loses_nothing() {
    let cluster = formed("cluster-sigstop", 3);
    let load = Load::start(&cluster);
    load.wait_more(10, "before the stop");
    let leader = cluster.wait_leader(WAIT).unwrap();
    let (_, term) = cluster.leader_seen_by(leader).unwrap();
    cluster.signal(leader, libc::SIGSTOP);
    // The others elect a leader of a later term and go on taking writes.
    let others: Vec<u64> = (1..=3).filter(|&n| n != leader).collect();
    let deadline = Instant::now() + WAIT;
    let next = loop {
        if let Some((l, t)) = cluster.leader_seen_by(others[0]) {
            if l != leader && t > term {
                break l;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no new leader while {leader} is stopped"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    load.wait_more(10, "while the old leader is stopped");
    cluster.signal(leader, libc::SIGCONT);
    // Resumed, it learns it is no longer the leader.
    let deadline = Instant::now() + WAIT;
    while cluster.leader_seen_by(leader).map(|(l, _)| l) == Some(leader) {
        assert!(
            Instant::now() < deadline,
            "node {leader} still thinks it leads"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    load.wait_more(5, "after the resume");
    load.finish(&cluster, &[1, 2, 3]);
    println!("leader {leader} stopped in term {term}; node {next} took over");
}

#[test]
fn a_partitioned_leader_serves_nothing_within_a_deadline_and_catches_up_after_healing() {
    let cluster = formed("cluster-partition", 3);
    let load = Load::start(&cluster);
    load.wait_more(10, "before the partition");
    let leader = cluster.wait_leader(WAIT).unwrap();
    cluster.isolate(leader).unwrap();
    // The majority side elects a leader and goes on.
    load.wait_more(10, "through the majority");
    // The isolated node answers a write with 503 within its deadline, never hangs, and
    // changes nothing.
    let asked = Instant::now();
    let (status, error, _) = cluster.post(leader, "/networks", &network(1)).unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{error}");
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "answered in {:?}",
        asked.elapsed()
    );
    // A linearizable read there fails too, rather than answer stale data.
    let (status, error) = cluster.get(leader, "/networks").unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{error}");
    // What it knows of the cluster it still tells, itself: no leader, no progress.
    let (status, view) = cluster.get(leader, "/cluster").unwrap();
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["node_id"], leader, "{view}");
    assert!(view["leader"].is_null(), "{view}");
    cluster.heal(leader).unwrap();
    load.wait_more(5, "after healing");
    load.finish(&cluster, &[1, 2, 3]);
    assert!(
        !names_on(&cluster, leader).contains("w1"),
        "the refused write was not made"
    );
}

#[test]
fn five_nodes_losing_two_keep_serving() {
    let mut cluster = formed("cluster-five", 5);
    let load = Load::start(&cluster);
    load.wait_more(10, "with five nodes");
    let leader = cluster.wait_leader(WAIT).unwrap();
    let other = (1..=5).find(|&n| n != leader).unwrap();
    cluster.kill(other);
    cluster.kill(leader);
    load.wait_more(10, "with three of five");
    let survivors: Vec<u64> = (1..=5).filter(|&n| n != leader && n != other).collect();
    load.finish(&cluster, &survivors);
}

#[test]
fn a_node_of_another_cluster_or_back_with_an_empty_disk_is_refused() {
    let mut cluster = formed_with_stranger("cluster-refuse");
    // Node 4 runs a cluster of its own: inviting it is refused, and nothing is added.
    let (status, error) = cluster.add_member(1, 4).unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert_eq!(error["code"], "member_refused", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("belongs to cluster"),
        "{error}"
    );
    let (_, view) = cluster.get(1, "/cluster").unwrap();
    assert_eq!(
        view["members"].as_array().unwrap().len(),
        3,
        "nothing was added: {view}"
    );

    for k in 1..=30 {
        let (status, body, _) = cluster.post(1, "/networks", &network(k)).unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    assert!(names_on(&cluster, 2).contains("w30"));
    // Node 2 comes back with an empty disk under its old ID.
    cluster.kill(2);
    std::fs::remove_dir_all(cluster.nodes[&2].dir.join("state")).unwrap();
    cluster.start(2).unwrap();
    cluster.wait_serving(2, WAIT).unwrap();
    // The leader's messages reach a node without a cluster: it refuses them, and the leader
    // logs why and what to do.
    cluster
        .wait_log(1, "node 2 has no cluster: it is new or lost its disk")
        .unwrap();
    assert!(
        cluster.log(2).contains("peer call refused"),
        "{}",
        cluster.log(2)
    );
    // It cannot be added again under its ID while the old member is on record...
    let (status, error) = cluster.add_member(1, 2).unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("already a member"),
        "{error}"
    );
    // ...but removed (nodes 1 and 3 are a majority) and added again, it catches up from a
    // snapshot (the log was compacted long ago).
    let (status, body) = cluster.delete(3, "/cluster/members/2").unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, member) = cluster.add_member(1, 2).unwrap();
    assert_eq!(status, StatusCode::CREATED, "{member}\n{}", cluster.log(2));
    assert_eq!(names_on(&cluster, 2).len(), 30);
    assert!(
        cluster.log(2).contains("snapshot received and stored"),
        "{}",
        cluster.log(2)
    );

    // Members leave one at a time; the last voter cannot.
    for id in [2, 3] {
        let (status, body) = cluster
            .delete(1, &format!("/cluster/members/{id}"))
            .unwrap();
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }
    let (status, error) = cluster.delete(1, "/cluster/members/1").unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert_eq!(error["code"], "last_voter", "{error}");
    let (_, view) = cluster.get(1, "/cluster").unwrap();
    assert_eq!(view["members"].as_array().unwrap().len(), 1, "{view}");
}

/// Nodes 1 to 3 in one cluster, node 4 running a cluster of its own.
fn formed_with_stranger(name: &str) -> TestCluster {
    let mut cluster = TestCluster::new(name, 4).expect("namespaces");
    for id in 1..=3 {
        cluster.configure(id, id != 1, "").unwrap();
    }
    cluster.configure(4, false, "").unwrap();
    cluster.form(3).unwrap();
    cluster.start(4).unwrap();
    cluster.wait_serving(4, WAIT).unwrap();
    cluster
}

#[test]
fn a_guest_keeps_running_through_a_leader_kill() {
    stratus_e2e::ensure_libvirtd();
    let mut cluster = TestCluster::new("cluster-guest", 3).expect("namespaces");
    for id in 1..=3 {
        // A short host timeout, so that the new leader's grace period runs out in the test.
        cluster
            .configure(id, id != 1, "host_timeout_secs = 5")
            .unwrap();
    }
    cluster.form(3).unwrap();
    cluster.start_agent().unwrap();
    cluster.register_appliance(2, "appliance").unwrap();
    let (status, made, served) = cluster
        .post(
            3,
            "/instances",
            &json!({"image": "appliance", "type": "t1.micro"}),
        )
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{made}");
    assert_eq!(served, Some(1), "placed by the leader");
    let id = made["id"].as_u64().unwrap();
    let state = |cluster: &TestCluster, node: u64| -> String {
        let (status, instance) = cluster.get(node, &format!("/instances/{id}")).unwrap();
        assert_eq!(status, StatusCode::OK, "{instance}");
        instance["state"].as_str().unwrap().to_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while state(&cluster, 2) != "Running" {
        assert!(
            Instant::now() < deadline,
            "instance {id} not Running:\n{}",
            cluster.agent_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    cluster.wait_banner(id, Duration::from_secs(120)).unwrap();
    let (_, view) = cluster.get(1, "/cluster").unwrap();
    let cluster_id = view["cluster_id"].as_str().unwrap().to_owned();
    let before = cluster.domains(&cluster_id);
    assert_eq!(before.len(), 1, "{before:?}");
    let uuid = stratus_e2e::domain_uuid(&before[0]);

    let leader = cluster.wait_leader(WAIT).unwrap();
    let epoch_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    // RFC 3339 times in the API's one format compare as strings.
    let grace_over = stratus_common::time::rfc3339_ms(epoch_ms() + 6_000);
    cluster.kill(leader);
    let next = cluster.wait_leader(WAIT).unwrap();
    assert_ne!(next, leader);
    // The agent reaches the new leader through a surviving node; wait for a report it sent
    // after the kill to be seen, past the new leader's grace period of one host timeout.
    let deadline = Instant::now() + WAIT;
    loop {
        let host = cluster.host().expect("the host");
        let seen = host["last_seen"].as_str().unwrap_or_default().to_owned();
        if seen > grace_over {
            assert_eq!(host["status"], "up", "{host}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no report after the kill: {host}\n{}",
            cluster.agent_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for node in (1..=3).filter(|&n| n != leader) {
        assert_eq!(
            state(&cluster, node),
            "Running",
            "described through node {node}"
        );
    }
    assert_eq!(cluster.domains(&cluster_id), before, "the same domain runs");
    assert_eq!(stratus_e2e::domain_uuid(&before[0]), uuid);

    // Killed through a survivor, it goes.
    let (status, body) = cluster.delete(next, &format!("/instances/{id}")).unwrap();
    assert!(status.is_success(), "{body}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cluster.domains(&cluster_id).is_empty() {
        assert!(Instant::now() < deadline, "domain still running");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_cluster_that_lost_its_majority_is_recovered_from_one_survivor() {
    let mut cluster = formed("cluster-recover", 3);
    for k in 1..=10 {
        let (status, body, _) = cluster.post(2, "/networks", &network(k)).unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // Nodes 2 and 3 are lost for good: node 1 alone cannot commit anything.
    cluster.kill(2);
    cluster.kill(3);
    let (status, error, _) = cluster.post(1, "/networks", &network(11)).unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{error}");
    // The one-shot recovery: node 1 restarted as a one-node cluster from its own store.
    cluster.stop(1);
    cluster
        .start_with_args(1, &["--force-new-cluster"])
        .unwrap();
    cluster.wait_serving(1, WAIT).unwrap();
    assert_eq!(cluster.wait_leader(WAIT).unwrap(), 1);
    assert!(
        cluster.log(1).contains("forced a new one-node cluster"),
        "{}",
        cluster.log(1)
    );
    let names = names_on(&cluster, 1);
    for k in 1..=10 {
        assert!(
            names.contains(&format!("w{k}")),
            "acknowledged w{k} kept: {names:?}"
        );
    }
    let (status, body, _) = cluster.post(1, "/networks", &network(12)).unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, view) = cluster.get(1, "/cluster").unwrap();
    assert_eq!(view["members"].as_array().unwrap().len(), 1, "{view}");

    // An old member coming back as it was is refused, and says what to do.
    cluster.start(3).unwrap();
    cluster.wait_serving(3, WAIT).unwrap();
    cluster
        .wait_log(1, "node 3 is not a member of this cluster")
        .unwrap();
    assert_eq!(
        cluster.leader_seen_by(1).map(|(l, _)| l),
        Some(1),
        "node 1 still leads"
    );
    cluster.kill(3);
    // Members are added again with wiped stores, and catch up.
    for id in [2, 3] {
        std::fs::remove_dir_all(cluster.nodes[&id].dir.join("state")).unwrap();
        cluster.start(id).unwrap();
        cluster.wait_serving(id, WAIT).unwrap();
        let (status, member) = cluster.add_member(1, id).unwrap();
        assert_eq!(status, StatusCode::CREATED, "{member}\n{}", cluster.log(id));
    }
    for id in 1..=3 {
        let names = names_on(&cluster, id);
        assert!(
            names.contains("w12") && names.contains("w1"),
            "node {id}: {names:?}"
        );
    }
}

#[test]
fn a_node_whose_log_was_damaged_refuses_to_start_and_says_why() {
    use raft::{GetEntriesContext, Storage as _};
    use stratus_controller::replica::storage::{self, DurableStorage};

    let mut cluster = formed("cluster-damaged", 3);
    for k in 1..=5 {
        let (status, body, _) = cluster.post(1, "/networks", &network(k)).unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let deadline = Instant::now() + WAIT;
    while !names_on(&cluster, 3).contains("w5") {
        assert!(Instant::now() < deadline, "node 3 never applied w5");
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.stop(3);
    // The newest command node 3 has committed (replayed when it starts), damaged on its disk.
    let store = cluster.nodes[&3].dir.join("state/raft.redb");
    let index = {
        let (log, _) = DurableStorage::open(&store, &[]).unwrap();
        let commit = log.initial_state().unwrap().hard_state.commit;
        let first = log.first_index().unwrap();
        let entries = log
            .entries(first, commit + 1, None, GetEntriesContext::empty(false))
            .unwrap();
        entries
            .iter()
            .rev()
            .find(|e| {
                e.get_entry_type() == raft::eraftpb::EntryType::EntryNormal && !e.data.is_empty()
            })
            .expect("a committed command in node 3's log")
            .index
    };
    storage::rewrite_entry_data(&store, index, |data| {
        let last = data.len() - 1;
        data[last] ^= 0x01;
    });
    cluster.start(3).unwrap();
    let status = cluster.wait_exit(3, WAIT).unwrap();
    assert!(!status.success(), "node 3 exited with {status}");
    let log = cluster.log(3);
    assert!(
        log.contains(&format!(
            "log entry {index} cannot be applied: damaged: its checksum does not match"
        )),
        "{log}"
    );
    // The others go on without it.
    let (status, body, _) = cluster.post(2, "/networks", &network(6)).unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[test]
fn a_follower_whose_disk_fills_up_stops_and_catches_up_once_there_is_room() {
    let mut cluster = TestCluster::new("cluster-diskfull", 3).expect("namespaces");
    for id in 1..=3 {
        cluster.configure(id, id != 1, "").unwrap();
    }
    cluster.small_disk(3, 8).unwrap();
    cluster.form(3).unwrap();
    let load = Load::start(&cluster);
    load.wait_more(10, "before the disk fills");
    // Fill node 3's filesystem: its next fsynced write fails, and it stops rather than go on
    // with a log it could not write.
    let filler = cluster.nodes[&3].dir.join("state/filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 1 << 20];
    while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
    drop(file);
    let status = cluster.wait_exit(3, WAIT).unwrap();
    assert!(!status.success(), "{status}");
    let log = cluster.log(3);
    assert!(log.contains("the raft node stopped"), "{log}");
    assert!(log.to_lowercase().contains("no space left"), "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("the raft node stopped"))
        .unwrap();
    println!("node 3 said: {line}");
    // The majority goes on meanwhile.
    load.wait_more(10, "with node 3 out of disk");
    // Room again: restarted, it catches up.
    std::fs::remove_file(&filler).unwrap();
    cluster.start(3).unwrap();
    cluster.wait_serving(3, WAIT).unwrap();
    load.wait_more(5, "after node 3 came back");
    load.finish(&cluster, &[1, 2, 3]);
}
