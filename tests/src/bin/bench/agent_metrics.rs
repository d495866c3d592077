//! `--only agent-metrics`: what a Prometheus scrape of an agent's `/metrics` costs as its host
//! runs more guests. One agent with real guests (20 at most here: TCG guests of 128 MiB), the
//! scrape over HTTPS with its bearer token, timed to the last byte with no guest, then with
//! 20 booted and idle: the time per guest is what a host with many more guests would pay for each
//! (every guest's counters are read from libvirt at scrape time).

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;
use stratus_common::api::InstanceState;
use stratus_e2e::{free_port, TestCloud, LIBVIRT_URI};

use crate::{kill, ms, report};

const GUESTS: usize = 20;
const SCRAPES: usize = 50;

pub fn agent_metrics_bench() -> anyhow::Result<()> {
    println!("agent /metrics scrape (HTTPS, bearer token; n={SCRAPES} each)");
    let mut cloud = TestCloud::start("agent-metrics-bench")?;
    let port = free_port();
    let token = format!("bench-token-{}", std::process::id());
    let token_file = cloud.dir.join("metrics-token");
    std::fs::write(&token_file, format!("{token}\n"))?;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600))?;
    cloud.set_agent_option("metrics_listen", &format!("\"127.0.0.1:{port}\""))?;
    cloud.set_agent_option(
        "metrics_token_file",
        &format!("\"{}\"", token_file.display()),
    )?;
    cloud.start_agent()?;
    cloud.register_appliance("appliance")?;
    let ca = std::fs::read(cloud.ca_certificate())?;
    let http = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
        .resolve(&cloud.host_name, format!("127.0.0.1:{port}").parse()?)
        .timeout(Duration::from_secs(30))
        .build()?;
    let url = format!("https://{}:{port}/metrics", cloud.host_name);
    let scrape = |label: &str| -> anyhow::Result<(Duration, usize, usize)> {
        let mut samples = Vec::with_capacity(SCRAPES);
        let mut text = String::new();
        for _ in 0..SCRAPES {
            let started = Instant::now();
            text = http
                .get(&url)
                .bearer_auth(&token)
                .send()?
                .error_for_status()?
                .text()?;
            samples.push(started.elapsed());
        }
        let (p50, _) = report(label, &mut samples);
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count();
        Ok((p50, text.len(), series))
    };
    let (idle, idle_size, idle_series) = scrape("GET /metrics, no guest")?;
    println!(
        "  no guest: {:.1} KiB, {idle_series} series",
        idle_size as f64 / 1024.0
    );
    let ids: Vec<u64> = (0..GUESTS)
        .map(|_| {
            cloud
                .run_instance("admin", json!({"image": "appliance", "type": "t1.micro"}))
                .map(|vm| vm.id)
        })
        .collect::<Result<_, _>>()?;
    for &id in &ids {
        cloud
            .wait_state(
                "admin",
                id,
                InstanceState::Running,
                Duration::from_secs(300),
            )
            .with_context(|| format!("instance {id}"))?;
    }
    // Booted and idle (banner printed): a scrape among guests still booting would measure the
    // two cores' emulation load, not the scrape. Twenty TCG guests booting on two cores now
    // and then lose one to a kernel panic ("IO-APIC + timer doesn't work"): its domain still
    // runs and is scraped; it is said, not waited for.
    for &id in &ids {
        if let Err(e) = cloud.wait_banner(id, Duration::from_secs(240)) {
            let last = format!("{e:#}")
                .lines()
                .last()
                .unwrap_or_default()
                .to_owned();
            println!("  instance {id} did not boot (its console ends: {last})");
        }
    }
    let (busy, size, series) = scrape(&format!("GET /metrics, {GUESTS} guests"))?;
    // What libvirt itself takes for the two reads a scrape makes, from this process: every
    // running domain's statistics in one call, and the domains with their metadata.
    let conn = virt::connect::Connect::open(Some(LIBVIRT_URI))?;
    let mut bulk = Vec::with_capacity(SCRAPES);
    for _ in 0..SCRAPES {
        let started = Instant::now();
        let all = stratus_agent::hypervisor::domain_stats::all(&conn)?;
        bulk.push(started.elapsed());
        anyhow::ensure!(all.len() >= GUESTS, "{} domains with statistics", all.len());
    }
    report("libvirt: all domains' statistics", &mut bulk);
    let hv = stratus_agent::hypervisor::libvirt::LibvirtHypervisor::connect(LIBVIRT_URI)?;
    let mut lists = Vec::with_capacity(SCRAPES);
    for _ in 0..SCRAPES {
        let started = Instant::now();
        stratus_agent::hypervisor::Hypervisor::list(&hv)?;
        lists.push(started.elapsed());
    }
    report("libvirt: the domains and their metadata", &mut lists);
    let per_guest = (busy.saturating_sub(idle)) / GUESTS as u32;
    println!(
        "  {GUESTS} guests: {:.1} KiB, {series} series; {:.2} ms and {} series per guest \
         (a host of 1,000 guests: about {:.0} ms, not measured)",
        size as f64 / 1024.0,
        ms(per_guest),
        (series - idle_series) / GUESTS,
        ms(idle + per_guest * 1000)
    );
    for id in ids {
        kill(&cloud, id)?;
    }
    Ok(())
}
