//! `--only scale`: one control plane at the scale of a large site, driven through the real
//! agent protocol over HTTPS. A controller process (one node, fsync on, the default
//! configuration but for its addresses and a /16 network) and, in this process, an agent
//! simulator for `--hosts` hosts (1,000): each enrolled with a join token the administrator
//! made, registered with 64 vCPUs and 256 GiB, and running the agent's loops with a key,
//! certificate and HTTP client of its own:
//! - the long-poll of its desired state (`since`, 30 s, the agent's back-off when it fails,
//!   registering again on 404);
//! - the reports (`agent/src/reconcile.rs`, `agent/src/outbox.rs`): a start is reported Booting
//!   and waits for the controller's answer (a refused start makes nothing), then Running (no
//!   guest runs here: it is Running as soon as its Booting was recorded); Gone for an instance
//!   to destroy, Stopped for one to stop; a state the controller asks to confirm, again; the
//!   image cache's (empty) contents in the first report; every report retried until delivered;
//! - the observations pushed every 5 s (`agent/src/observe.rs`): guests' CPU use, the host's
//!   own use every 10 s (its whole history when asked), each console's boot text once and its
//!   position every 10 s.
//!
//! `--instances` instances (20,000) are created through the API by a normal user, 32 requests
//! in flight, from a site image whose files nobody ever fetches.
//!
//! Printed: enrolment; `POST /instances` latency during creation and the time until all are
//! Running; at full scale, one request at a time while the agents run, describe
//! (`GET /instances/{id}`), list (`GET /instances`, with its size) and `GET /hosts`; the
//! controller's memory; a restart (SIGTERM, started again with the same configuration): until
//! the API serves, until every host's long-poll was answered by the new process, until
//! `GET /hosts` shows every host up; last, the Raft store (file, log entries, snapshot).
//!
//! The bench binary has no async runtime of its own (tokio is only a dev-dependency of this
//! crate), so the simulator runs on threads: per host, the blocking client's own runtime
//! thread and one agent thread; observation pushes from a small pool of threads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};
use stratus_common::agent::{ActualState, Desire, HostDesired, ReportAnswer, ReportedInstance};
use stratus_common::observed::{ConsoleChunk, GuestUsage, HostObserved, ObservedAnswer};
use stratus_common::usage::{HostHistory, HostSample};
use stratus_e2e::hosts;

use crate::{ms, report};

/// Simulated hosts at full scale.
pub const HOSTS: usize = 1_000;
/// Instances at full scale.
pub const INSTANCES: usize = 20_000;
/// `POST /instances` in flight during creation.
const CREATORS: usize = 32;
/// Hosts enrolling at once (each enrolment signs a certificate and commits through Raft).
const ENROLLERS: usize = 16;
/// The agent's default `poll_wait_secs`.
const POLL_WAIT: Duration = Duration::from_secs(30);
/// The agent pushes CPU use this often (`observe.rs` `CPU_TICK`); every second push carries
/// the host's own use and the consoles' positions (`HOST_TICK`, `HEARTBEAT`).
const OBSERVE_EVERY: Duration = Duration::from_secs(5);
/// Threads sharing the observation pushes of all hosts.
const OBSERVERS: usize = 16;
/// A host's offer.
const HOST_VCPUS: u32 = 64;
const HOST_MEMORY_MIB: u64 = 256 * 1024;
/// The longest wait for the instances to run, or for anything after a restart.
const CONVERGE_LIMIT: Duration = Duration::from_secs(20 * 60);
/// What a guest's console says once booted (sent once per instance, as the agent tails it).
const BOOT_TEXT: &str = "[    0.000000] Linux version 6.1.0-stratus (simulated guest)\n\
[    0.412000] virtio_blk virtio1: [vda] 2097152 512-byte logical blocks\n\
[    0.980000] EXT4-fs (vda): mounted filesystem with ordered data mode\n\
STRATUSLAB-APPLIANCE-READY disk=ok\n";

pub fn scale_bench(hosts: usize, instances: usize, rounds: usize) -> anyhow::Result<()> {
    println!(
        "scale: one controller, {hosts} simulated hosts (the agent protocol over HTTPS), {instances} instances"
    );
    raise_open_files(4 * hosts as u64 + 4096);
    std::fs::create_dir_all(stratus_e2e::TEST_ROOT)?;
    let dir = tempfile::Builder::new()
        .prefix("scale-bench-")
        .tempdir_in(stratus_e2e::TEST_ROOT)?;
    let mut controller = ControllerProcess::configure(dir.path())?;
    controller.start()?;
    let admin = controller.admin_client()?;
    let base = controller.base.clone();
    let admin_password = controller.admin_password.clone();
    let ca_pem = std::fs::read(controller.ca_certificate())?;
    let user_http = Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem)?)
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(CREATORS)
        .build()?;
    let api = |path: &str| format!("{base}/api/v1{path}");

    // The site image (never fetched: no guest runs) and the user creating the instances.
    let image = json!({
        "name": "scale",
        "format": "qcow2",
        "disk": {
            "locations": ["file:///var/lib/stratuslab-test/scale-bench-never-fetched.qcow2"],
            "sha256": "5ca1e".repeat(12) + "5ca1",
            "size": 1u64 << 30,
        },
    });
    expect_status(
        admin
            .post(api("/images"))
            .basic_auth("admin", Some(&admin_password))
            .json(&image),
        StatusCode::CREATED,
        "register the image",
    )?;
    let (user, password) = ("bench", "bench-password");
    expect_status(
        admin
            .post(api("/users"))
            .basic_auth("admin", Some(&admin_password))
            .json(&json!({"name": user, "password": password})),
        StatusCode::CREATED,
        "create the user",
    )?;

    let sim = Arc::new(Sim::new(base.clone()));
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    for k in 0..OBSERVERS {
        let sim = sim.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("observe-{k}"))
                .stack_size(256 << 10)
                .spawn(move || observe_loop(&sim, k))?,
        );
    }

    // Enrolment and registration, each host's agent starting as soon as it is registered.
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let mut enrolments = std::thread::scope(|scope| -> anyhow::Result<Vec<Duration>> {
        let workers: Vec<_> = (0..ENROLLERS)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<(Vec<Duration>, Vec<JoinHandle<()>>)> {
                    let (mut times, mut agents) = (Vec::new(), Vec::new());
                    loop {
                        let h = next.fetch_add(1, Ordering::Relaxed);
                        if h >= hosts {
                            return Ok((times, agents));
                        }
                        let t = Instant::now();
                        let host = enrol_and_register(&admin, &base, &admin_password, &ca_pem, h)?;
                        times.push(t.elapsed());
                        let host = Arc::new(host);
                        sim.hosts.lock().expect("hosts lock").push(host.clone());
                        let sim = sim.clone();
                        agents.push(
                            std::thread::Builder::new()
                                .name(format!("agent-{h}"))
                                .stack_size(256 << 10)
                                .spawn(move || agent_loop(&sim, &host))?,
                        );
                    }
                })
            })
            .collect();
        let mut times = Vec::new();
        for worker in workers {
            let (t, agents) = worker.join().expect("enrolment thread")?;
            times.extend(t);
            threads.extend(agents);
        }
        Ok(times)
    })?;
    let enrolled_in = started.elapsed();
    report("enrol + register one host", &mut enrolments);
    println!(
        "  {:<34} {:>8.1} s    ({:.0} hosts/s, {ENROLLERS} at once)",
        format!("{hosts} hosts enrolled and registered"),
        enrolled_in.as_secs_f64(),
        hosts as f64 / enrolled_in.as_secs_f64()
    );
    wait_for(
        "every host's first report",
        Duration::from_secs(120),
        || Ok(sim.first_reports.load(Ordering::Relaxed) >= hosts),
    )?;

    // Creation. One request first: the controller checks a password with argon2 once, then
    // from its cache; concurrent first checks of one account each take a token of its
    // failed-login budget (10) until argon2 answers, so a cold burst of 32 is refused (429).
    expect_status(
        user_http
            .get(api("/instances"))
            .basic_auth(user, Some(password)),
        StatusCode::OK,
        "the user's first request",
    )?;
    let created: Mutex<Vec<u64>> = Mutex::new(Vec::with_capacity(instances));
    let failed: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    let creation_started = Instant::now();
    let timed = std::thread::scope(|scope| -> anyhow::Result<Vec<(Instant, Duration)>> {
        let workers: Vec<_> = (0..CREATORS)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<Vec<(Instant, Duration)>> {
                    let mut times = Vec::new();
                    while next.fetch_add(1, Ordering::Relaxed) < instances {
                        let t = Instant::now();
                        let answer = user_http
                            .post(api("/instances"))
                            .basic_auth(user, Some(password))
                            .json(&json!({"image": "scale", "type": "t1.micro"}))
                            .send()?;
                        let status = answer.status();
                        let body: Value = answer.json()?;
                        times.push((t, t.elapsed()));
                        if status != StatusCode::CREATED {
                            bail!("POST /instances: {status} {body}");
                        }
                        if body["state"] == "Failed" {
                            failed
                                .lock()
                                .expect("failed lock")
                                .push(body["reason"].as_str().unwrap_or("").to_owned());
                        }
                        let id = body["id"].as_u64().context("an instance ID")?;
                        created.lock().expect("created lock").push(id);
                    }
                    Ok(times)
                })
            })
            .collect();
        let mut times = Vec::new();
        for worker in workers {
            times.extend(worker.join().expect("creation thread")?);
        }
        Ok(times)
    })?;
    let creation = creation_started.elapsed();
    let created = created.into_inner().expect("created lock");
    let failed = failed.into_inner().expect("failed lock");
    let mut creates: Vec<Duration> = timed.iter().map(|&(_, d)| d).collect();
    let (_, create_p99) = report(
        &format!("POST /instances ({CREATORS} in flight)"),
        &mut creates,
    );
    print_by_fifths(timed);
    println!(
        "  {:<34} {:>8.1} s    ({:.0} /s)",
        format!("{instances} instances created"),
        creation.as_secs_f64(),
        instances as f64 / creation.as_secs_f64()
    );
    goal(
        "create p99 < 100 ms",
        create_p99 < Duration::from_millis(100),
    );
    if !failed.is_empty() {
        println!(
            "  !! {} instances were created Failed, e.g.: {}",
            failed.len(),
            failed[0]
        );
    }
    let expected = instances - failed.len();
    wait_for("every instance Running", CONVERGE_LIMIT, || {
        Ok(sim.running.load(Ordering::Relaxed) >= expected)
    })?;
    let last_running = sim
        .last_running
        .lock()
        .expect("lock")
        .unwrap_or_else(Instant::now);
    println!(
        "  {:<34} {:>8.1} s    (after the last create: {:.1} s)",
        format!("first create -> all {expected} Running"),
        last_running
            .saturating_duration_since(creation_started)
            .as_secs_f64(),
        last_running
            .saturating_duration_since(creation_started + creation)
            .as_secs_f64()
    );
    sim.print_errors("agent-side errors so far");

    // The API at full scale, one request at a time, the agents running.
    let listed: Vec<Value> = user_http
        .get(api("/instances"))
        .basic_auth(user, Some(password))
        .send()?
        .error_for_status()?
        .json()?;
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    for instance in &listed {
        *states
            .entry(instance["state"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    println!(
        "  the user's instances by state: {}",
        states
            .iter()
            .map(|(state, n)| format!("{state} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  placement among {hosts} hosts, in-process: see `--only placement` (goal: p99 < 5 ms)"
    );
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut describes = Vec::new();
    for _ in 0..(rounds * 50).max(500) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let id = created[(rng % created.len() as u64) as usize];
        let t = Instant::now();
        let body = user_http
            .get(api(&format!("/instances/{id}")))
            .basic_auth(user, Some(password))
            .send()?
            .error_for_status()?
            .bytes()?;
        describes.push(t.elapsed());
        anyhow::ensure!(!body.is_empty(), "instance {id}: empty answer");
    }
    let (_, describe_p99) = report("GET /instances/{id} (describe)", &mut describes);
    goal(
        "describe p99 < 100 ms",
        describe_p99 < Duration::from_millis(100),
    );
    let mut lists = Vec::new();
    let mut list_bytes = 0;
    for _ in 0..(rounds * 2).max(20) {
        let t = Instant::now();
        let body = user_http
            .get(api("/instances"))
            .basic_auth(user, Some(password))
            .send()?
            .error_for_status()?
            .bytes()?;
        lists.push(t.elapsed());
        list_bytes = body.len();
    }
    let (_, list_p99) = report(
        &format!("GET /instances (list of {})", listed.len()),
        &mut lists,
    );
    println!(
        "  {:<34} {:>8.1} MiB ({:.0} bytes per instance)",
        "list size",
        list_bytes as f64 / (1 << 20) as f64,
        list_bytes as f64 / listed.len().max(1) as f64
    );
    goal("list p99 < 100 ms", list_p99 < Duration::from_millis(100));
    // A page of 1,000 from the middle of the table (`?limit` and `?after`, in ID order).
    let mut sorted = created.clone();
    sorted.sort_unstable();
    let middle = sorted[sorted.len() / 2];
    let mut pages = Vec::new();
    let mut page_bytes = 0;
    for _ in 0..(rounds * 5).max(50) {
        let t = Instant::now();
        let body = user_http
            .get(api(&format!("/instances?limit=1000&after={middle}")))
            .basic_auth(user, Some(password))
            .send()?
            .error_for_status()?
            .bytes()?;
        pages.push(t.elapsed());
        page_bytes = body.len();
    }
    let (_, page_p99) = report("GET /instances?limit=1000&after=", &mut pages);
    println!(
        "  {:<34} {:>8.1} KiB",
        "page size",
        page_bytes as f64 / 1024.0
    );
    goal("page p99 < 100 ms", page_p99 < Duration::from_millis(100));
    let mut host_lists = Vec::new();
    let mut hosts_bytes = 0;
    for _ in 0..(rounds * 2).max(20) {
        let t = Instant::now();
        let body = admin
            .get(api("/hosts"))
            .basic_auth("admin", Some(&admin_password))
            .send()?
            .error_for_status()?
            .bytes()?;
        host_lists.push(t.elapsed());
        hosts_bytes = body.len();
    }
    let (_, hosts_p99) = report(&format!("GET /hosts (list of {hosts})"), &mut host_lists);
    println!(
        "  {:<34} {:>8.1} KiB",
        "hosts list size",
        hosts_bytes as f64 / 1024.0
    );
    goal(
        "hosts list p99 < 100 ms",
        hosts_p99 < Duration::from_millis(100),
    );

    // One at a time at full scale: creates (each run by its host), then kills (each host
    // destroys and reports Gone).
    let (mut one_creates, mut kills, mut extra) = (Vec::new(), Vec::new(), Vec::new());
    let running_before = sim.running.load(Ordering::Relaxed);
    for _ in 0..(rounds * 10).max(100) {
        let t = Instant::now();
        let body = expect_status(
            user_http
                .post(api("/instances"))
                .basic_auth(user, Some(password))
                .json(&json!({"image": "scale", "type": "t1.micro"})),
            StatusCode::CREATED,
            "POST /instances",
        )?;
        one_creates.push(t.elapsed());
        extra.push(body["id"].as_u64().context("an instance ID")?);
    }
    let (_, one_create_p99) = report("POST /instances (1 at a time)", &mut one_creates);
    goal(
        "create p99 < 100 ms",
        one_create_p99 < Duration::from_millis(100),
    );
    wait_for("the new instances Running", CONVERGE_LIMIT, || {
        Ok(sim.running.load(Ordering::Relaxed) >= running_before + extra.len())
    })?;
    for &id in &extra {
        let t = Instant::now();
        let answer = user_http
            .delete(api(&format!("/instances/{id}")))
            .basic_auth(user, Some(password))
            .send()?;
        kills.push(t.elapsed());
        anyhow::ensure!(
            answer.status().is_success(),
            "DELETE /instances/{id}: {}",
            answer.status()
        );
    }
    let (_, kill_p99) = report("DELETE /instances/{id} (1 at a time)", &mut kills);
    goal("kill p99 < 100 ms", kill_p99 < Duration::from_millis(100));
    let killed = Instant::now();
    for &id in &extra {
        wait_for(&format!("instance {id} Done"), CONVERGE_LIMIT, || {
            let instance: Value = user_http
                .get(api(&format!("/instances/{id}")))
                .basic_auth(user, Some(password))
                .send()?
                .json()?;
            Ok(instance["state"] == "Done")
        })?;
    }
    println!(
        "  {:<34} {:>8.1} ms",
        format!("last kill -> all {} Done", extra.len()),
        ms(killed.elapsed())
    );

    let pid = controller.pid();
    // Steady state: every instance running, the agents long-polling and pushing observations.
    let window = OBSERVE_EVERY * 3;
    let (controller_cpu, own_cpu, started) = (
        cpu_time(pid)?,
        cpu_time(std::process::id())?,
        Instant::now(),
    );
    std::thread::sleep(window);
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "  {:<34} {:>8.1} % of a core   (the simulator: {:.1} %; over {:.0} s)",
        "controller CPU, steady state",
        100.0 * (cpu_time(pid)? - controller_cpu).as_secs_f64() / elapsed,
        100.0 * (cpu_time(std::process::id())? - own_cpu).as_secs_f64() / elapsed,
        elapsed
    );
    print_memory("controller memory", pid)?;
    let state_dir = controller.state_dir();
    println!(
        "  {:<34} {:>8.1} MiB (raft.redb {:.1} MiB)",
        "controller state directory",
        dir_bytes(&state_dir) as f64 / (1 << 20) as f64,
        file_mib(&state_dir.join("raft.redb"))
    );

    // Restart: every host must be answered again by the new process.
    let stopping = Instant::now();
    let stop = controller.stop();
    sim.epoch.fetch_add(1, Ordering::SeqCst);
    sim.answered.store(0, Ordering::SeqCst);
    let _ = sim.take_errors();
    println!(
        "  {:<34} {:>8.1} ms",
        "controller SIGTERM -> exited",
        ms(stop)
    );
    let spawned = Instant::now();
    controller.spawn()?;
    controller.wait_serving(&admin, CONVERGE_LIMIT)?;
    let serving = spawned.elapsed();
    wait_for("every host answered again", CONVERGE_LIMIT, || {
        Ok(sim.answered.load(Ordering::SeqCst) >= hosts)
    })?;
    let answered = sim
        .last_answered
        .lock()
        .expect("lock")
        .unwrap_or_else(Instant::now)
        .saturating_duration_since(spawned);
    let all_up = {
        let mut up_at = None;
        let deadline = Instant::now() + CONVERGE_LIMIT;
        while up_at.is_none() {
            let listed: Vec<Value> = admin
                .get(api("/hosts"))
                .basic_auth("admin", Some(&admin_password))
                .send()?
                .error_for_status()?
                .json()?;
            let up = listed.iter().filter(|h| h["status"] == "up").count();
            if up >= hosts {
                up_at = Some(spawned.elapsed());
            } else if Instant::now() > deadline {
                bail!("only {up} of {hosts} hosts up after the restart");
            } else {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        up_at.expect("set above")
    };
    println!(
        "  {:<34} {:>8.1} ms",
        "restart -> API serving (leader)",
        ms(serving)
    );
    println!(
        "  {:<34} {:>8.1} ms   (from SIGTERM: {:.1} s)",
        format!("restart -> all {hosts} hosts answered"),
        ms(answered),
        (spawned + answered)
            .saturating_duration_since(stopping)
            .as_secs_f64()
    );
    println!(
        "  {:<34} {:>8.1} ms",
        "restart -> all up in GET /hosts",
        ms(all_up)
    );
    sim.print_errors("agent-side errors across the restart (expected: the controller was away)");
    // Settled: what the agents do after the restart (history re-sent, consoles asked again).
    std::thread::sleep(OBSERVE_EVERY * 3);
    let _ = sim.take_errors();
    let mut after = Vec::new();
    for _ in 0..(rounds * 20).max(200) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let id = created[(rng % created.len() as u64) as usize];
        let t = Instant::now();
        user_http
            .get(api(&format!("/instances/{id}")))
            .basic_auth(user, Some(password))
            .send()?
            .error_for_status()?;
        after.push(t.elapsed());
    }
    report("describe after the restart", &mut after);
    print_memory("controller memory after restart", controller.pid())?;
    std::thread::sleep(OBSERVE_EVERY);
    sim.print_errors("agent-side errors after the restart settled");

    // Stop everything, then look into the Raft store.
    sim.stop.store(true, Ordering::SeqCst);
    controller.stop();
    for thread in threads {
        let _ = thread.join();
    }
    raft_store_figures(&state_dir.join("raft.redb"))?;
    drop(controller);
    Ok(())
}

/// Creation rate and latency over each fifth of the creations, in the order they were sent:
/// whether they slow down as the state grows.
fn print_by_fifths(mut timed: Vec<(Instant, Duration)>) {
    timed.sort_by_key(|&(sent, _)| sent);
    let fifth = timed.len().div_ceil(5).max(1);
    for (k, part) in timed.chunks(fifth).enumerate() {
        let first = part[0].0;
        let last = part
            .iter()
            .map(|&(sent, d)| sent + d)
            .max()
            .unwrap_or(first);
        let mut latencies: Vec<Duration> = part.iter().map(|&(_, d)| d).collect();
        latencies.sort();
        println!(
            "    creates {:>6}..{:<6} {:>6.0} /s   p50 {:>6.1} ms   p99 {:>6.1} ms",
            k * fifth,
            k * fifth + part.len(),
            part.len() as f64 / last.duration_since(first).as_secs_f64().max(1e-6),
            ms(crate::percentile(&latencies, 50.0)),
            ms(crate::percentile(&latencies, 99.0))
        );
    }
}

fn goal(what: &str, met: bool) {
    println!("    goal: {what}: {}", if met { "met" } else { "NOT met" });
}

/// Raises the soft limit of open files (to the hard limit at most): every simulated host
/// holds connections on both sides, and the controller inherits the limit.
fn raise_open_files(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a struct owned here.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn expect_status(
    request: reqwest::blocking::RequestBuilder,
    want: StatusCode,
    what: &str,
) -> anyhow::Result<Value> {
    let answer = request.send()?;
    let status = answer.status();
    let body: Value = answer.json().unwrap_or(Value::Null);
    if status != want {
        bail!("{what}: {status} {body}");
    }
    Ok(body)
}

/// Waits until `done`, printing progress to stderr every 30 s.
fn wait_for(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut said = Instant::now();
    while !done()? {
        if started.elapsed() > limit {
            bail!("{what}: not done after {limit:?}");
        }
        if said.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "  ... waiting for {what} ({:.0} s)",
                started.elapsed().as_secs_f64()
            );
            said = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("{field} of {pid}"))
}

/// User and system CPU time process `pid` used so far.
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) from the third on: utime and
    // stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').context("/proc/pid/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf only reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(Duration::from_secs_f64(ticks as f64 / per_second))
}

fn print_memory(what: &str, pid: u32) -> anyhow::Result<()> {
    println!(
        "  {:<34} VmRSS {:.1} MiB   VmHWM {:.1} MiB   threads {}",
        what,
        status_kib(pid, "VmRSS:")? as f64 / 1024.0,
        status_kib(pid, "VmHWM:")? as f64 / 1024.0,
        status_kib(pid, "Threads:")?
    );
    Ok(())
}

fn file_mib(path: &Path) -> f64 {
    std::fs::metadata(path).map_or(0.0, |m| m.len() as f64 / (1 << 20) as f64)
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// The Raft store of a stopped controller: its log and its latest snapshot.
fn raft_store_figures(path: &Path) -> anyhow::Result<()> {
    use raft::Storage as _;
    use stratus_controller::replica::storage::DurableStorage;
    let size = file_mib(path);
    let (storage, recovered) =
        DurableStorage::open(path, &[]).map_err(|e| anyhow::anyhow!("{path:?}: {e}"))?;
    let (first, last) = (storage.first_log_index(), storage.last_index());
    let entries = if last >= first {
        storage
            .entries(first, last + 1, None, raft::GetEntriesContext::empty(false))
            .map_err(|e| anyhow::anyhow!("raft log: {e}"))?
    } else {
        Vec::new()
    };
    let entry_bytes: usize = entries.iter().map(|e| e.data.len()).sum();
    println!(
        "  {:<34} {:>8.1} MiB on disk",
        "Raft store (raft.redb)", size
    );
    println!(
        "  {:<34} {:>8} entries ({first}..={last}), {:.1} MiB of entry data",
        "Raft log kept",
        entries.len(),
        entry_bytes as f64 / (1 << 20) as f64
    );
    match recovered.snapshot {
        Some(snapshot) => println!(
            "  {:<34} {:>8.1} MiB at index {}",
            "latest snapshot",
            snapshot.data.len() as f64 / (1 << 20) as f64,
            snapshot.get_metadata().index
        ),
        None => println!("  latest snapshot: none"),
    }
    Ok(())
}

/// Enrols host number `h` (a join token made by the administrator, a new key, the certificate
/// the site CA signs) and registers it with its inventory.
fn enrol_and_register(
    admin: &Client,
    base: &str,
    admin_password: &str,
    ca_pem: &[u8],
    h: usize,
) -> anyhow::Result<SimHost> {
    let name = format!("scale-{h:04}");
    let token = hosts::join_token(admin, base, admin_password, &name)?;
    let enrolled = hosts::enrol(base, ca_pem, &name, &token)?;
    let registration = json!({
        "name": name,
        "vcpus": HOST_VCPUS,
        "memory_mib": HOST_MEMORY_MIB,
        "disk_gib": 2000,
        "domain_type": "kvm",
        "arch": "x86_64",
        "hypervisor": "QEMU 7.2.0 (libvirt 9.0.0), simulated",
    });
    let host = SimHost {
        name,
        client: enrolled.client,
        registration,
        observed: Mutex::new(Observed {
            // Pushes spread over the period, as agents started at different times would.
            due: Some(Instant::now() + OBSERVE_EVERY.mul_f64((h % 97) as f64 / 97.0)),
            ..Observed::default()
        }),
    };
    host.register(base)?;
    Ok(host)
}

/// The controller process: its configuration, started and stopped by its pid.
struct ControllerProcess {
    dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    base: String,
    admin_password: String,
    child: Option<Child>,
}

impl ControllerProcess {
    /// Writes the configuration: the defaults (snapshots, host timeout, overcommit) but for
    /// the addresses, the state directory and the administrator's password, and a public /16
    /// network, so every instance holds an address lease as on a site.
    fn configure(dir: &Path) -> anyhow::Result<Self> {
        let (port, peer_port) = (stratus_e2e::free_port(), stratus_e2e::free_port());
        let admin_password = format!("admin-pw-{}", std::process::id());
        let config = dir.join("controller.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\npeer_listen = \"127.0.0.1:{peer_port}\"\n\
                 state_dir = \"{}\"\nadmin_password = \"{admin_password}\"\n\n\
                 [[networks]]\nname = \"public\"\ncidr = \"10.128.0.0/16\"\n\
                 gateway = \"10.128.0.1\"\nbridge = \"br-scale\"\n",
                dir.join("controller").display()
            ),
        )?;
        Ok(Self {
            dir: dir.to_owned(),
            config,
            log: dir.join("controller.log"),
            base: format!("https://127.0.0.1:{port}"),
            admin_password,
            child: None,
        })
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.join("controller")
    }

    fn ca_certificate(&self) -> PathBuf {
        self.state_dir().join("ca.pem")
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "controller already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        self.child = Some(
            Command::new(stratus_e2e::bin("stratus-controller"))
                .arg("--config")
                .arg(&self.config)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()?,
        );
        Ok(())
    }

    /// First start: spawns, waits for the site CA it makes, then for a leader.
    fn start(&mut self) -> anyhow::Result<()> {
        self.spawn()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.ca_certificate().exists() {
            if Instant::now() > deadline {
                bail!("no site CA after 30 s; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let admin = self.admin_client()?;
        self.wait_serving(&admin, Duration::from_secs(30))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn admin_client(&self) -> anyhow::Result<Client> {
        let pem = std::fs::read(self.ca_certificate())?;
        Ok(Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
            .timeout(Duration::from_secs(120))
            .build()?)
    }

    /// Waits until the API answers with a leader.
    fn wait_serving(&self, admin: &Client, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let answer = admin
                .get(format!("{}/api/v1/cluster", self.base))
                .basic_auth("admin", Some(&self.admin_password))
                .timeout(Duration::from_secs(5))
                .send()
                .ok()
                .filter(|r| r.status() == StatusCode::OK)
                .and_then(|r| r.json::<Value>().ok());
            if answer.is_some_and(|c| !c["leader"].is_null()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "controller not serving after {limit:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGTERM to the controller's pid, then waits for it to exit (SIGKILL after 60 s);
    /// answers how long it took.
    fn stop(&mut self) -> Duration {
        let Some(mut child) = self.child.take() else {
            return Duration::ZERO;
        };
        let started = Instant::now();
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: a plain syscall to our own child, not reaped yet (so the pid is its).
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if started.elapsed() < Duration::from_secs(60) => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => {
                    eprintln!("  !! the controller did not exit within 60 s of SIGTERM: killed");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
        started.elapsed()
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the simulated agents share with the bench.
struct Sim {
    base: String,
    stop: AtomicBool,
    hosts: Mutex<Vec<Arc<SimHost>>>,
    /// Hosts whose first report (the image cache's contents) was delivered.
    first_reports: AtomicUsize,
    /// Instances whose Running the controller recorded, and when the last one was.
    running: AtomicUsize,
    last_running: Mutex<Option<Instant>>,
    /// Raised while the controller is down for its restart; each host counts itself in
    /// `answered` at its first desired state after that.
    epoch: AtomicU64,
    answered: AtomicUsize,
    last_answered: Mutex<Option<Instant>>,
    /// Failed calls by kind.
    errors: Mutex<BTreeMap<String, usize>>,
}

impl Sim {
    fn new(base: String) -> Self {
        Self {
            base,
            stop: AtomicBool::new(false),
            hosts: Mutex::new(Vec::new()),
            first_reports: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            last_running: Mutex::new(None),
            epoch: AtomicU64::new(0),
            answered: AtomicUsize::new(0),
            last_answered: Mutex::new(None),
            errors: Mutex::new(BTreeMap::new()),
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn error(&self, kind: String) {
        if !self.stopping() {
            *self
                .errors
                .lock()
                .expect("errors lock")
                .entry(kind)
                .or_default() += 1;
        }
    }

    fn take_errors(&self) -> BTreeMap<String, usize> {
        std::mem::take(&mut *self.errors.lock().expect("errors lock"))
    }

    fn print_errors(&self, what: &str) {
        let errors = self.take_errors();
        if errors.is_empty() {
            println!("  {what}: none");
        } else {
            let list: Vec<String> = errors.iter().map(|(k, n)| format!("{k} x{n}")).collect();
            println!("  {what}: {}", list.join(", "));
        }
    }
}

/// A failed call's kind, for the error counts.
fn failure(call: &str, e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_decode() || e.is_body() {
        "body"
    } else {
        "request"
    };
    format!("{call}: {kind}")
}

/// One simulated host.
struct SimHost {
    name: String,
    /// Presents the host's certificate.
    client: Client,
    registration: Value,
    observed: Mutex<Observed>,
}

/// What the observation pushes need.
#[derive(Default)]
struct Observed {
    /// When the next push is due.
    due: Option<Instant>,
    /// Running instances, with how much of the boot text their console sent so far.
    running: BTreeMap<u64, u64>,
    history: HostHistory,
    send_history: bool,
    pushes: u64,
}

/// The agent's memory of what it reported (`Reconciler`'s `reported` and `confirmed`).
#[derive(Default)]
struct Reported {
    states: HashMap<u64, ActualState>,
    confirmed: HashMap<u64, u64>,
    images_sent: bool,
}

impl SimHost {
    fn url(&self, base: &str, path: &str) -> String {
        format!("{base}/api/v1/hosts/{}{path}", self.name)
    }

    fn register(&self, base: &str) -> anyhow::Result<()> {
        let answer = self
            .client
            .post(format!("{base}/api/v1/hosts"))
            .json(&self.registration)
            .send()?;
        let status = answer.status();
        if !status.is_success() {
            bail!("registering {}: {status} {}", self.name, answer.text()?);
        }
        Ok(())
    }

    /// Delivers a report, again every second until it is (as the agent's outbox does);
    /// `None` when the simulator stops first.
    fn report(&self, sim: &Sim, body: &Value) -> Option<ReportAnswer> {
        let url = self.url(&sim.base, "/report");
        loop {
            if sim.stopping() {
                return None;
            }
            match self.client.post(&url).json(body).send() {
                Ok(answer) if answer.status().is_success() => match answer.bytes() {
                    Ok(bytes) if bytes.is_empty() => return Some(ReportAnswer::default()),
                    Ok(bytes) => match serde_json::from_slice(&bytes) {
                        Ok(answer) => return Some(answer),
                        Err(_) => sim.error("report: answer does not parse".into()),
                    },
                    Err(e) => sim.error(failure("report", &e)),
                },
                Ok(answer) => sim.error(format!("report: {}", answer.status())),
                Err(e) => sim.error(failure("report", &e)),
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

fn instance_report(id: u64, state: ActualState) -> ReportedInstance {
    ReportedInstance {
        id,
        state,
        reason: None,
    }
}

/// The agent's loop: long-polls the desired state and reconciles each answer.
fn agent_loop(sim: &Sim, host: &SimHost) {
    let mut version = 0u64;
    let mut delay = Duration::from_millis(200);
    let mut reported = Reported::default();
    let mut epoch = sim.epoch.load(Ordering::SeqCst);
    let url = host.url(&sim.base, "/desired");
    while !sim.stopping() {
        let answer = host
            .client
            .get(&url)
            .query(&[("since", version), ("wait", POLL_WAIT.as_secs())])
            .timeout(POLL_WAIT + Duration::from_secs(15))
            .send();
        let desired = match answer {
            Ok(answer) if answer.status().is_success() => answer
                .json::<HostDesired>()
                .map_err(|e| sim.error(failure("desired", &e)))
                .ok(),
            Ok(answer) => {
                let status = answer.status();
                sim.error(format!("desired: {status}"));
                if status == StatusCode::NOT_FOUND {
                    if let Err(e) = host.register(&sim.base) {
                        sim.error(format!("register again: {e}"));
                    }
                }
                None
            }
            Err(e) => {
                sim.error(failure("desired", &e));
                None
            }
        };
        let Some(desired) = desired else {
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(5));
            continue;
        };
        delay = Duration::from_millis(200);
        version = desired.version;
        let now = sim.epoch.load(Ordering::SeqCst);
        if now != epoch {
            epoch = now;
            sim.answered.fetch_add(1, Ordering::SeqCst);
            *sim.last_answered.lock().expect("lock") = Some(Instant::now());
        }
        reconcile(sim, host, &desired, &mut reported);
    }
}

/// One pass over a desired state, as `Reconciler::plan` and `execute` would do it on a host
/// whose guests start at once.
fn reconcile(sim: &Sim, host: &SimHost, desired: &HostDesired, reported: &mut Reported) {
    let mut instances = Vec::new();
    let mut starts = Vec::new();
    let mut ends = Vec::new();
    for instance in &desired.instances {
        let id = instance.id;
        if instance.confirm && reported.confirmed.get(&id) != Some(&desired.version) {
            reported.confirmed.insert(id, desired.version);
            if let Some(&state) = reported.states.get(&id) {
                instances.push(instance_report(id, state));
            }
        }
        let last = reported.states.get(&id).copied();
        match instance.desire {
            Desire::Run if last.is_none() => starts.push(id),
            Desire::Run => {}
            Desire::Destroy if last != Some(ActualState::Gone) => {
                ends.push((id, ActualState::Gone))
            }
            Desire::Stop if last != Some(ActualState::Stopped) => {
                ends.push((id, ActualState::Stopped))
            }
            Desire::Destroy | Desire::Stop => {}
        }
    }
    let wanted: HashSet<u64> = desired.instances.iter().map(|i| i.id).collect();
    reported.states.retain(|id, _| wanted.contains(id));
    reported.confirmed.retain(|id, _| wanted.contains(id));
    {
        let mut observed = host.observed.lock().expect("observed lock");
        observed.running.retain(|id, _| wanted.contains(id));
        for (id, _) in &ends {
            observed.running.remove(id);
        }
    }
    let first = !reported.images_sent;
    if instances.is_empty() && starts.is_empty() && ends.is_empty() && !first {
        return;
    }
    instances.extend(ends.iter().map(|&(id, state)| instance_report(id, state)));
    instances.extend(
        starts
            .iter()
            .map(|&id| instance_report(id, ActualState::Booting)),
    );
    let mut body = json!({"instances": instances, "unknown_domains": []});
    if first {
        body["images"] = json!([]);
    }
    let Some(answer) = host.report(sim, &body) else {
        return;
    };
    if first {
        reported.images_sent = true;
        sim.first_reports.fetch_add(1, Ordering::Relaxed);
    }
    for (id, state) in ends {
        reported.states.insert(id, state);
    }
    let refused: HashSet<u64> = answer.refused.iter().map(|r| r.id).collect();
    for _ in &answer.refused {
        sim.error("report refused".into());
    }
    // Recorded Booting: the guest starts (at once here) and is reported Running.
    let started: Vec<u64> = starts
        .into_iter()
        .filter(|id| !refused.contains(id))
        .collect();
    if started.is_empty() {
        return;
    }
    for &id in &started {
        reported.states.insert(id, ActualState::Booting);
    }
    let body = json!({
        "instances": started.iter().map(|&id| instance_report(id, ActualState::Running)).collect::<Vec<_>>(),
        "unknown_domains": [],
    });
    let Some(answer) = host.report(sim, &body) else {
        return;
    };
    let refused: HashSet<u64> = answer.refused.iter().map(|r| r.id).collect();
    let mut observed = host.observed.lock().expect("observed lock");
    let mut newly = 0;
    for id in started {
        if refused.contains(&id) {
            sim.error("refused Running".into());
            continue;
        }
        reported.states.insert(id, ActualState::Running);
        observed.running.insert(id, 0);
        newly += 1;
    }
    drop(observed);
    sim.running.fetch_add(newly, Ordering::Relaxed);
    *sim.last_running.lock().expect("lock") = Some(Instant::now());
}

/// Pushes the observations of the hosts `k`, `k + OBSERVERS`, ... when each is due.
fn observe_loop(sim: &Sim, k: usize) {
    while !sim.stopping() {
        let hosts: Vec<Arc<SimHost>> = sim
            .hosts
            .lock()
            .expect("hosts lock")
            .iter()
            .skip(k)
            .step_by(OBSERVERS)
            .cloned()
            .collect();
        let mut next = Instant::now() + Duration::from_millis(200);
        for host in hosts {
            let due = host
                .observed
                .lock()
                .expect("observed lock")
                .due
                .unwrap_or_else(Instant::now);
            if due <= Instant::now() {
                push_observed(sim, &host);
            } else {
                next = next.min(due);
            }
            if sim.stopping() {
                return;
            }
        }
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

/// One push of what the host observes: its guests' CPU use, every second time its own use
/// and where each console stands, the boot text of consoles not sent yet, the whole history
/// when the controller asked.
fn push_observed(sim: &Sim, host: &SimHost) {
    let (body, sent) = {
        let mut observed = host.observed.lock().expect("observed lock");
        observed.due = Some(Instant::now() + OBSERVE_EVERY);
        observed.pushes += 1;
        let full = observed.pushes % 2 == 1;
        let boot = BOOT_TEXT.as_bytes();
        let mut consoles = Vec::new();
        let mut sent = Vec::new();
        for (&id, &offset) in &observed.running {
            let offset = offset.min(boot.len() as u64);
            if offset < boot.len() as u64 {
                consoles.push(ConsoleChunk {
                    instance: id,
                    offset,
                    data: base64(&boot[offset as usize..]),
                });
                sent.push(id);
            } else if full {
                consoles.push(ConsoleChunk {
                    instance: id,
                    offset,
                    data: String::new(),
                });
            }
        }
        let usage: Vec<GuestUsage> = observed
            .running
            .keys()
            .map(|&id| GuestUsage {
                instance: id,
                cpu_percent: (id % 7) as u32 + 1,
            })
            .collect();
        let running = observed.running.len() as u64;
        let host_sample = full.then(|| HostSample {
            at_ms: stratus_common::time::now_ms(),
            cpu_percent: 2.0 + running as f32 * 0.1,
            load1: 0.2 + running as f32 * 0.05,
            memory_used_bytes: (4096 + running * 128) << 20,
            memory_total_bytes: HOST_MEMORY_MIB << 20,
            disk_used_bytes: (20 + running) << 30,
            disk_total_bytes: 2000 << 30,
            net_rx_bytes_per_sec: 2_000 + running * 300,
            net_tx_bytes_per_sec: 1_000 + running * 200,
            instances: running as u32,
            cache_hits: 0,
            cache_misses: 0,
        });
        if let Some(sample) = host_sample {
            observed.history.record(sample);
        }
        let history = observed.send_history.then(|| observed.history.clone());
        (
            HostObserved {
                consoles,
                usage,
                host: host_sample,
                history,
            },
            sent,
        )
    };
    let answer = host
        .client
        .post(host.url(&sim.base, "/observed"))
        .json(&body)
        .send();
    let answer = match answer {
        Ok(answer) if answer.status().is_success() => answer
            .json::<ObservedAnswer>()
            .map_err(|e| sim.error(failure("observed", &e)))
            .ok(),
        Ok(answer) => {
            sim.error(format!("observed: {}", answer.status()));
            None
        }
        Err(e) => {
            sim.error(failure("observed", &e));
            None
        }
    };
    let Some(answer) = answer else {
        return;
    };
    let mut observed = host.observed.lock().expect("observed lock");
    for id in sent {
        if let Some(offset) = observed.running.get_mut(&id) {
            *offset = BOOT_TEXT.len() as u64;
        }
    }
    for resend in answer.resend {
        if let Some(offset) = observed.running.get_mut(&resend.instance) {
            *offset = (*offset).min(resend.from);
        }
    }
    observed.send_history = answer.send_history;
}

/// Standard base64 with padding (the console chunks' encoding).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_standard_alphabet_with_padding() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(super::base64(b"foobar"), "Zm9vYmFy");
    }
}
