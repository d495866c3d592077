//! `--only events`: how fast the event stream tells its followers. 100 clients follow
//! `GET /api/v1/events` (each on its own connection and thread, stamping each event as it is
//! parsed); the administrator makes `n` networks one after another; the time from sending
//! each `POST /networks` to each client having its `network-defined` event (the fsynced
//! commit and apply included; the POST's own round trip is printed beside it).

use std::collections::HashMap;
use std::io::BufRead;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::json;
use stratus_common::events::{EventEnvelope, SseParser};
use stratus_e2e::TestCloud;

use crate::report;

const SUBSCRIBERS: usize = 100;

pub fn events_bench(rounds: usize) -> anyhow::Result<()> {
    let n = rounds.max(50);
    println!("events: {SUBSCRIBERS} followers of GET /events, {n} changes one after another");
    let cloud = TestCloud::start("events-bench")?;
    let (tx, rx) = mpsc::channel::<(usize, String, Instant)>();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    for client in 0..SUBSCRIBERS {
        let response = cloud
            .streaming_client()?
            .get(cloud.url("/events?types=network-defined"))
            .basic_auth("admin", Some(cloud.password("admin")))
            .send()?;
        if !response.status().is_success() {
            bail!("events: {}", response.status());
        }
        let (tx, ready_tx) = (tx.clone(), ready_tx.clone());
        std::thread::spawn(move || {
            let mut parser = SseParser::default();
            let mut ready = Some(ready_tx);
            for line in std::io::BufReader::new(response).lines() {
                let Ok(line) = line else { return };
                let message = parser.line(&line);
                if parser.last_id().is_some() {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                }
                let Some(message) = message else { continue };
                let at = Instant::now();
                let Ok(event) = serde_json::from_str::<EventEnvelope>(&message.data) else {
                    continue;
                };
                if tx.send((client, event.object.id, at)).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    for _ in 0..SUBSCRIBERS {
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .context("a follower's stream did not start")?;
    }
    let mut sent: HashMap<String, Instant> = HashMap::new();
    let mut posts = Vec::with_capacity(n);
    for k in 0..n {
        let name = format!("ev{k}");
        let body = json!({
            "name": name,
            "cidr": format!("10.{}.{}.0/24", 200 + k / 256, k % 256),
            "gateway": format!("10.{}.{}.1", 200 + k / 256, k % 256),
            "bridge": format!("bev{k}"),
        });
        let at = Instant::now();
        sent.insert(name.clone(), at);
        let (status, answer) = cloud.post("admin", "/networks", &body)?;
        if !status.is_success() {
            bail!("network {name}: {status} {answer}");
        }
        posts.push(at.elapsed());
    }
    let mut delays = Vec::with_capacity(n * SUBSCRIBERS);
    let deadline = Instant::now() + Duration::from_secs(60);
    while delays.len() < n * SUBSCRIBERS {
        let left = deadline.saturating_duration_since(Instant::now());
        let (_, name, at) = rx
            .recv_timeout(left)
            .with_context(|| format!("only {} of {} deliveries", delays.len(), n * SUBSCRIBERS))?;
        if let Some(sent) = sent.get(&name) {
            delays.push(at.saturating_duration_since(*sent));
        }
    }
    report("POST /networks round trip", &mut posts);
    report(
        &format!("POST sent -> event at each of {SUBSCRIBERS}"),
        &mut delays,
    );
    Ok(())
}
