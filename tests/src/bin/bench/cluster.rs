//! The controller cluster's figures: three controller processes (each in a network namespace
//! of its own, joined by veths, fsyncing their Raft stores), measured through the HTTP API.
//!
//! - write latency: a `POST /api/v1/networks` to the leader until its 201, one at a time (an
//!   HTTP round trip, authentication from the cache, the Raft commit on a majority with fsync on
//!   each, and apply): an upper bound of the commit latency.
//! - placements: instances created through the leader by 16 clients at once on 100
//!   registered hosts (no agent runs them: this is the control plane's part), per second.
//! - failover: the leader SIGKILLed, then writes through the survivors until one is
//!   acknowledged; the time from the kill to that first acknowledged write (a write started
//!   after the kill). The killed node is restarted and caught up before the next round.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use stratus_e2e::cluster::{TestCluster, WAIT};
use stratus_e2e::hosts;

use crate::{ms, percentile, report};

fn network(k: u32) -> serde_json::Value {
    json!({
        "name": format!("b{k}"),
        "cidr": format!("10.{}.{}.0/24", 100 + k / 256, k % 256),
        "gateway": format!("10.{}.{}.1", 100 + k / 256, k % 256),
        "bridge": format!("bb{k}"),
    })
}

pub fn cluster_bench(rounds: usize) -> anyhow::Result<()> {
    println!("controller cluster: 3 nodes, each in its own network namespace, fsync on");
    let mut cluster = TestCluster::new("bench-cluster", 3)?;
    for id in 1..=3 {
        cluster.configure(id, id != 1, "snapshot_every = 1000")?;
    }
    cluster.form(3)?;
    let mut k = 0u32;
    let mut next = || {
        k += 1;
        network(k)
    };

    // Warm the authentication cache and the peer streams.
    for _ in 0..5 {
        cluster.post(1, "/networks", &next())?;
    }
    let leader = cluster.wait_leader(WAIT)?;
    let mut latencies = Vec::new();
    for _ in 0..(rounds * 20).max(200) {
        let body = next();
        let started = Instant::now();
        let (status, answer, _) = cluster.post(leader, "/networks", &body)?;
        latencies.push(started.elapsed());
        anyhow::ensure!(status == StatusCode::CREATED, "write: {answer}");
    }
    let (_, p99) = report("write through the leader (3 nodes)", &mut latencies);
    println!(
        "    goal: commit p99 < 10 ms: {}",
        if p99 < Duration::from_millis(10) {
            "met"
        } else {
            "not met (this includes HTTP and apply)"
        }
    );

    placements(&cluster, leader)?;

    let mut failovers = Vec::new();
    for round in 0..rounds.clamp(3, 10) {
        let leader = cluster.wait_leader(WAIT)?;
        let survivors: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
        let killed = Instant::now();
        cluster.kill(leader);
        let mut target = 0;
        loop {
            anyhow::ensure!(
                killed.elapsed() < WAIT,
                "no write acknowledged {WAIT:?} after killing leader {leader}"
            );
            let id = survivors[target % survivors.len()];
            let body = next();
            match cluster.post(id, "/networks", &body) {
                Ok((StatusCode::CREATED, _, _)) => break,
                _ => target += 1,
            }
        }
        failovers.push(killed.elapsed());
        cluster.start(leader)?;
        cluster.wait_serving(leader, WAIT)?;
        // Caught up: it reads what the cluster has (a linearizable read on that node).
        let deadline = Instant::now() + WAIT;
        while !matches!(cluster.get(leader, "/networks"), Ok((StatusCode::OK, _))) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "node {leader} did not catch up (round {round})"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    failovers.sort();
    println!(
        "  {:<34} n={:<3} p50 {:>8.1} ms   max {:>8.1} ms",
        "leader SIGKILL -> first acked write",
        failovers.len(),
        ms(percentile(&failovers, 50.0)),
        ms(*failovers.last().expect("rounds"))
    );
    let max = *failovers.last().expect("rounds");
    println!(
        "    goal: failover < 1.5 s: {}",
        if max < Duration::from_millis(1500) {
            "met"
        } else {
            "not met"
        }
    );
    Ok(())
}

/// Creates instances from 16 client threads through the leader, on 100 hosts, each enrolled
/// and registered with its own certificate; prints placements per second.
fn placements(cluster: &TestCluster, leader: u64) -> anyhow::Result<()> {
    let api = cluster.nodes[&leader].api();
    let http = cluster.client(Duration::from_secs(30), Duration::from_secs(5))?;
    let ca_pem = std::fs::read(cluster.dir.join("ca.pem"))?;
    let base = format!("https://{api}");
    for h in 0..100 {
        let name = format!("bench-host-{h}");
        let token = hosts::join_token(&http, &base, &cluster.admin_password, &name)?;
        let host = hosts::enrol(&base, &ca_pem, &name, &token)?;
        let answer = host
            .client
            .post(format!("https://{api}/api/v1/hosts"))
            .json(&json!({"name": name, "vcpus": 64, "memory_mib": 262144,
                "disk_gib": 1000, "domain_type": "qemu", "arch": "x86_64", "hypervisor": "bench"}))
            .send()?;
        let status = answer.status();
        anyhow::ensure!(status.is_success(), "host {h}: {status} {}", answer.text()?);
    }
    cluster.register_appliance(leader, "appliance")?;
    let mut one = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        let answer = http
            .post(format!("https://{api}/api/v1/instances"))
            .basic_auth("admin", Some(&cluster.admin_password))
            .json(&json!({"image": "appliance", "type": "t1.micro"}))
            .send()?;
        anyhow::ensure!(answer.status() == StatusCode::CREATED, "{}", answer.text()?);
        one.push(started.elapsed());
    }
    report("one placement at a time", &mut one);
    let (threads, each) = (16, 125);
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (api, password, http) = (api.clone(), cluster.admin_password.clone(), http.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                for _ in 0..each {
                    let answer = http
                        .post(format!("https://{api}/api/v1/instances"))
                        .basic_auth("admin", Some(&password))
                        .json(&json!({"image": "appliance", "type": "t1.micro"}))
                        .send()?;
                    anyhow::ensure!(answer.status() == StatusCode::CREATED, "{}", answer.text()?);
                }
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("client thread")?;
    }
    let elapsed = started.elapsed();
    let rate = (threads * each) as f64 / elapsed.as_secs_f64();
    println!(
        "  {:<34} n={:<4} {:>8.0} /s   ({:.1} s)",
        "placements through the leader",
        threads * each,
        rate,
        elapsed.as_secs_f64()
    );
    println!(
        "    goal: >= 2,000 placements/s: {}",
        if rate >= 2000.0 { "met" } else { "not met" }
    );
    Ok(())
}
