//! `stratus-bench`: the benchmarks behind `make bench`, printing figures against the goals.
//!
//! - start: the time from `POST /api/v1/instances` to the instance showing `Running` (image
//!   cached on the host), against a bare `virDomainCreateXML` of the same domain XML, measured
//!   alternately in the same run.
//! - overlay: a qcow2 overlay written in-process against `qemu-img create -b`, alternately.
//! - download: fetch-and-verify of a 1 GiB image from an HTTP server on loopback into the
//!   image cache (one pass: read, hash, write, fsync), against a bare read of the same bytes
//!   from the same server, alternating in the same run (`download.rs`).
//! - storm: 20 concurrent starts of one uncached image (requests to the image server, time to
//!   the last Running) against 20 concurrent bare `virDomainCreateXML` of the same domain XML,
//!   alternating in the same run (`storm.rs`).
//! - cluster: a 3-node controller cluster's write latency, placements and failover
//!   (`cluster.rs`).
//! - snapshot: the replicated state of 20,000 instances as a Raft snapshot (`snapshot.rs`).
//! - agent-metrics: an agent's `/metrics` scrape with no guest and with 20
//!   (`agent_metrics.rs`).
//! - tls: TLS's cost on a start, requests per second by way of logging in, memory through a
//!   burst of wrong passwords (`tls.rs`).
//! - scale: one controller, 1,000 simulated hosts speaking the agent protocol over HTTPS and
//!   20,000 instances: API latency, convergence, memory, the Raft store, a restart
//!   (`scale.rs`; `--hosts` and `--instances` to try it smaller).

mod agent_metrics;
mod cluster;
mod dashboard;
mod download;
mod events;
mod placement;
mod scale;
mod snapshot;
mod storm;
mod tls;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::json;
use stratus_common::api::InstanceState;
use stratus_e2e::{TestCloud, LIBVIRT_URI};

struct Args {
    rounds: usize,
    only: Option<String>,
    /// Simulated hosts and instances of the scale section.
    hosts: usize,
    instances: usize,
}

const SECTIONS: [&str; 14] = [
    "placement",
    "start",
    "overlay",
    "download",
    "storm",
    "network",
    "volumes",
    "cluster",
    "snapshot",
    "tls",
    "events",
    "dashboard",
    "agent-metrics",
    "scale",
];

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        rounds: 10,
        only: None,
        hosts: scale::HOSTS,
        instances: scale::INSTANCES,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-n" | "--rounds" => args.rounds = it.next().context("-n needs a number")?.parse()?,
            "--hosts" => args.hosts = it.next().context("--hosts needs a number")?.parse()?,
            "--instances" => {
                args.instances = it.next().context("--instances needs a number")?.parse()?
            }
            "--appliance" => std::env::set_var(
                "STRATUS_APPLIANCE",
                it.next().context("--appliance needs a directory")?,
            ),
            "--only" => {
                let name = it.next().context("--only needs a section")?;
                if !SECTIONS.contains(&name.as_str()) {
                    bail!("--only takes one of {SECTIONS:?}");
                }
                args.only = Some(name);
            }
            "-h" | "--help" => {
                println!("usage: stratus-bench [-n ROUNDS] [--appliance DIR] [--hosts N] [--instances M] [--only {}]", SECTIONS.join("|"));
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    if args.rounds < 1 {
        bail!("-n must be at least 1");
    }
    if args.hosts < 1 || args.instances < 1 {
        bail!("--hosts and --instances must be at least 1");
    }
    Ok(args)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Time from POST to Running, polling the API every 2 ms; returns the instance's domain XML too.
fn api_start(cloud: &TestCloud) -> anyhow::Result<(Duration, u64, String)> {
    let started = Instant::now();
    let vm = cloud.run_instance("admin", json!({"image": "appliance", "type": "t1.micro"}))?;
    loop {
        let instance = cloud.instance("admin", vm.id)?;
        if instance.state == InstanceState::Running {
            break;
        }
        if instance.state.is_terminal() || started.elapsed() > Duration::from_secs(60) {
            bail!(
                "instance {} is {} ({:?})",
                vm.id,
                instance.state,
                instance.reason
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let elapsed = started.elapsed();
    let out = Command::new("virsh")
        .args(["-c", LIBVIRT_URI, "dumpxml", &vm.domain])
        .output()?;
    if !out.status.success() {
        bail!(
            "dumpxml {}: {}",
            vm.domain,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((elapsed, vm.id, String::from_utf8(out.stdout)?))
}

fn kill(cloud: &TestCloud, id: u64) -> anyhow::Result<()> {
    cloud.delete("admin", &format!("/instances/{id}"))?;
    cloud.wait_state("admin", id, InstanceState::Done, Duration::from_secs(60))?;
    Ok(())
}

fn replace_between(xml: &str, open: &str, close: &str, value: &str) -> String {
    match (xml.find(open), xml.find(close)) {
        (Some(a), Some(b)) if a < b => format!("{}{open}{value}{}", &xml[..a], &xml[b..]),
        _ => xml.to_owned(),
    }
}

/// The same domain XML made startable again under another name, with a fresh overlay on
/// `base`, a console log and a cloud-init ISO of its own (the instance's files are gone with
/// it). The instance's metadata is left out, so the agent does not take the copy for its
/// instance, and so is the backing chain libvirt reports, which the overlay's header states.
fn bare_xml(
    xml: &str,
    name: &str,
    overlay: &Path,
    console: &Path,
    iso: &Path,
    base: &Path,
) -> anyhow::Result<String> {
    let status = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(base)
        .arg(overlay)
        .status()?;
    if !status.success() {
        bail!("qemu-img create failed");
    }
    let mut out = replace_between(xml, "<name>", "</name>", name);
    out = replace_between(&out, "<uuid>", "</uuid>", "");
    out = out.replace("<uuid></uuid>", "");
    // libvirt writes one element per line: skip whole elements by depth.
    let mut skipping: Option<(&str, usize)> = None;
    let mut lines = Vec::new();
    for line in out.lines() {
        let trimmed = line.trim();
        if let Some((tag, depth)) = skipping.as_mut() {
            let (open, close) = (format!("<{tag}"), format!("</{tag}>"));
            if trimmed.starts_with(&close) {
                *depth -= 1;
            } else if trimmed.starts_with(&open) && !trimmed.ends_with("/>") {
                *depth += 1;
            }
            if *depth == 0 {
                skipping = None;
            }
            continue;
        }
        if let Some(tag) = ["metadata", "backingStore"]
            .into_iter()
            .find(|tag| trimmed.starts_with(&format!("<{tag}")))
        {
            if !trimmed.ends_with("/>") && !trimmed.contains(&format!("</{tag}>")) {
                skipping = Some((tag, 1));
            }
            continue;
        }
        // Disk, console and ISO paths point into the killed instance's directory.
        lines.push(
            if line.contains("<source file=") && line.contains("disk.qcow2") {
                format!("<source file='{}'/>", overlay.display())
            } else if line.contains("<source file=") && line.contains("cidata.iso") {
                format!("<source file='{}'/>", iso.display())
            } else if line.contains("<source path=") && line.contains("console.log") {
                format!("<source path='{}'/>", console.display())
            } else {
                line.to_owned()
            },
        );
    }
    Ok(lines.join("\n"))
}

fn bare_start(conn: &virt::connect::Connect, xml: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let domain = virt::domain::Domain::create_xml(conn, xml, 0).context("virDomainCreateXML")?;
    let elapsed = started.elapsed();
    domain.destroy().context("destroy the bare domain")?;
    Ok(elapsed)
}

fn report(name: &str, samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let (p50, p99) = (percentile(samples, 50.0), percentile(samples, 99.0));
    println!(
        "  {name:<34} n={:<3} p50 {:>8.1} ms   p99 {:>8.1} ms",
        samples.len(),
        ms(p50),
        ms(p99)
    );
    (p50, p99)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let run = |name: &str| args.only.as_deref().is_none_or(|only| only == name);
    if run("overlay") {
        overlay_bench(args.rounds.max(100))?;
    }
    if run("download") {
        download::download_bench(args.rounds)?;
    }
    if run("start") {
        start_bench(args.rounds)?;
    }
    if run("storm") {
        storm::storm_bench(args.rounds)?;
    }
    if run("network") {
        network_bench(args.rounds)?;
    }
    if run("volumes") {
        volume_bench(args.rounds)?;
    }
    if run("placement") {
        placement::placement_bench(args.rounds)?;
    }
    if run("snapshot") {
        snapshot::snapshot_bench()?;
    }
    if run("cluster") {
        cluster::cluster_bench(args.rounds)?;
    }
    if run("tls") {
        tls::tls_bench(args.rounds)?;
    }
    if run("events") {
        events::events_bench(args.rounds)?;
    }
    if run("dashboard") {
        dashboard::dashboard_bench()?;
    }
    if run("agent-metrics") {
        agent_metrics::agent_metrics_bench()?;
    }
    if run("scale") {
        scale::scale_bench(args.hosts, args.instances, args.rounds)?;
    }
    Ok(())
}

/// Hot-plug latency: from the attach call to the guest seeing the disk, and from the detach
/// call to the guest having let it go and the API showing it free. The guest polls its
/// `/sys/block` every 20 ms and prints the serials it has on its console.
fn volume_bench(rounds: usize) -> anyhow::Result<()> {
    println!("volumes: hot-plug into a running guest, local pool (n={rounds})");
    let mut cloud = TestCloud::start("volume-bench")?;
    let pool = cloud.dir.join("agent/volumes");
    cloud.set_agent_option("volume_pool", &format!("\"{}\"", pool.display()))?;
    cloud.set_agent_option("nbd_listen", "\"127.0.0.1\"")?;
    cloud.start_agent()?;
    cloud.register_appliance("appliance")?;
    let (status, body) = cloud.post("admin", "/volumes", &serde_json::json!({"size": 1}))?;
    anyhow::ensure!(status.is_success(), "create volume: {status} {body}");
    let volume = body["id"].as_str().context("volume id")?.to_owned();
    let serial = stratus_common::volumes::serial(&volume);
    let watch = "#!/bin/sh\nlast=x\nwhile :; do\n now=$(cat /sys/block/vd[b-z]/serial 2>/dev/null | tr '\\n' ' ')\n if [ \"$now\" != \"$last\" ]; then echo \"DISKS $now\"; last=$now; fi\n sleep 0.02\ndone\n";
    let vm = cloud.run_instance(
        "admin",
        serde_json::json!({"image": "appliance", "type": "t1.micro", "user_data": watch}),
    )?;
    cloud.wait_state(
        "admin",
        vm.id,
        InstanceState::Running,
        Duration::from_secs(120),
    )?;
    cloud.wait_banner(vm.id, Duration::from_secs(120))?;
    let console_lines = |cloud: &TestCloud| {
        cloud
            .console(vm.id)
            .lines()
            .filter(|l| l.starts_with("DISKS"))
            .count()
    };
    let wait_lines = |cloud: &TestCloud, n: usize| -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while console_lines(cloud) < n {
            anyhow::ensure!(Instant::now() < deadline, "guest did not see the change");
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    };
    wait_lines(&cloud, 1)?;
    let (mut attach, mut detach_guest, mut detach_free) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let seen = console_lines(&cloud);
        let t = Instant::now();
        let (status, body) = cloud.post(
            "admin",
            &format!("/instances/{}/volumes", vm.id),
            &serde_json::json!({"volume": volume}),
        )?;
        anyhow::ensure!(status.is_success(), "attach: {status} {body}");
        wait_lines(&cloud, seen + 1)?;
        attach.push(t.elapsed());
        anyhow::ensure!(
            cloud.console(vm.id).contains(&serial),
            "guest saw another disk"
        );
        // Let the attachment settle in the API before unplugging.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, v) = cloud.get("admin", &format!("/volumes/{volume}"))?;
            if v["attachments"][0]["state"] == "attached" {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "attachment never attached");
            std::thread::sleep(Duration::from_millis(2));
        }
        let seen = console_lines(&cloud);
        let t = Instant::now();
        let (status, body) =
            cloud.delete("admin", &format!("/instances/{}/volumes/{volume}", vm.id))?;
        anyhow::ensure!(status.is_success(), "detach: {status} {body}");
        wait_lines(&cloud, seen + 1)?;
        detach_guest.push(t.elapsed());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, v) = cloud.get("admin", &format!("/volumes/{volume}"))?;
            if v["users"] == 0 {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "never released");
            std::thread::sleep(Duration::from_millis(2));
        }
        detach_free.push(t.elapsed());
    }
    report("attach: call to guest-visible", &mut attach);
    report("detach: call to gone from guest", &mut detach_guest);
    report("detach: call to free in the API", &mut detach_free);
    kill(&cloud, vm.id)?;
    Ok(())
}

/// Deletes the benchmark's namespace and bridges.
struct BenchNet {
    netns: String,
    bridge: String,
}

impl Drop for BenchNet {
    fn drop(&mut self) {
        for args in [
            vec![
                "link".to_owned(),
                "del".to_owned(),
                format!("{}-v0", self.bridge),
            ],
            vec!["link".to_owned(), "del".to_owned(), self.bridge.clone()],
            vec!["netns".to_owned(), "del".to_owned(), self.netns.clone()],
        ] {
            let _ = Command::new("ip").args(&args).output();
        }
    }
}

fn network_bench(rounds: usize) -> anyhow::Result<()> {
    use stratus_agent::network::{Network, NicPlan, Uplink};
    let pid = std::process::id();
    let net = BenchNet {
        netns: format!("slbench{pid}"),
        bridge: format!("sbb{}", pid % 100_000),
    };
    let ip = |args: &[&str]| -> anyhow::Result<()> {
        if !Command::new("ip").args(args).status()?.success() {
            bail!("ip {args:?} failed");
        }
        Ok(())
    };
    ip(&["netns", "add", &net.netns])?;
    ip(&[
        "-n",
        &net.netns,
        "link",
        "add",
        &net.bridge,
        "type",
        "bridge",
    ])?;
    ip(&[
        "-n",
        &net.netns,
        "addr",
        "add",
        "10.252.0.1/16",
        "dev",
        &net.bridge,
    ])?;
    ip(&["-n", &net.netns, "link", "set", &net.bridge, "up"])?;

    // In-process: bridge (already there after the first), rules, tap, ISO; then detach.
    let network = Network::host(Uplink::default());
    let scratch = tempfile::tempdir_in({
        std::fs::create_dir_all(stratus_e2e::TEST_ROOT)?;
        stratus_e2e::TEST_ROOT
    })?;
    let mut setup = Vec::new();
    for i in 0..rounds.max(50) {
        let id = 900_000 + i as u64;
        let instance = stratus_common::agent::DesiredInstance {
            generation: 0,
            id,
            desire: stratus_common::agent::Desire::Run,
            vcpus: 1,
            memory_mib: 128,
            image: serde_json::from_value(
                json!({"name": "x", "format": "raw", "disk": {"locations": [], "sha256": ""}}),
            )?,
            nics: vec![serde_json::from_value(json!({
                "network": "bench", "bridge": net.bridge, "mac": format!("0a:53:0a:fc:{:02x}:{:02x}", i / 256, i % 256),
                "ip": format!("10.252.{}.{}", 1 + i / 250, 1 + i % 250), "prefix": 16, "gateway": "10.252.0.1", "dns": []
            }))?],
            ssh_key: Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBench bench@host".into()),
            user_data: None,
            hostname: format!("bench-{i}"),
            disks: Vec::new(),
            accepted_at_ms: None,
            confirm: false,
            restart: Default::default(),
            evacuate: false,
        };
        let nic = &instance.nics[0];
        let tap = format!("sbn{i}n0");
        let dir = scratch.path().join(i.to_string());
        std::fs::create_dir_all(&dir)?;
        let started = Instant::now();
        let guard = network.attach(&NicPlan {
            tap: tap.clone(),
            mac: nic.mac.parse().map_err(|_| anyhow::anyhow!("mac"))?,
            ip: nic.ip.parse()?,
            bridge: nic.bridge.clone(),
            netns: Some(net.netns.clone()),
        })?;
        stratus_agent::context::write_cidata(&dir, &instance)?;
        setup.push(started.elapsed());
        guard.keep();
        network.detach(&tap)?;
    }

    // API to Running with a NIC, on a cloud whose network uses the same bridge.
    let config = format!(
        "[[networks]]\nname = \"public\"\ncidr = \"10.252.0.0/16\"\ngateway = \"10.252.0.1\"\nbridge = \"{}\"\n",
        net.bridge
    );
    let mut cloud = TestCloud::start_with("network-bench", &config)?;
    cloud.set_agent_option("network_netns", &format!("\"{}\"", net.netns))?;
    cloud.start_agent()?;
    cloud.register_appliance("appliance")?;
    // Warm-up: the image enters the host's cache.
    let (_, warm_id, _) = api_start(&cloud)?;
    kill(&cloud, warm_id)?;
    let mut api = Vec::new();
    for _ in 0..rounds {
        let (elapsed, id, _) = api_start(&cloud)?;
        api.push(elapsed);
        kill(&cloud, id)?;
    }
    println!("\nPer-VM network set-up (bridge check, nft rules, tap, cloud-init ISO), in-process");
    let (setup_p50, _) = report("attach + ISO", &mut setup);
    let (api_p50, _) = report("POST /instances -> Running (with NIC)", &mut api);
    println!(
        "  share of API-to-Running (p50)      {:>8.1} %",
        100.0 * ms(setup_p50) / ms(api_p50)
    );
    Ok(())
}

fn start_bench(rounds: usize) -> anyhow::Result<()> {
    let cloud = TestCloud::with_agent("bench")?;
    let appliance = stratus_e2e::appliance()?;
    let conn = virt::connect::Connect::open(Some(LIBVIRT_URI)).context("libvirt")?;
    let scratch: PathBuf = cloud.dir.join("bare");
    std::fs::create_dir_all(&scratch)?;

    // Warm-up: the host fetches the image into its cache once.
    let (_, id, _) = api_start(&cloud)?;
    kill(&cloud, id)?;

    let (mut api, mut bare) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let (elapsed, id, xml) = api_start(&cloud)?;
        api.push(elapsed);
        // The same domain, with copies of the files the kill removes.
        let iso = scratch.join(format!("bare-{round}.iso"));
        std::fs::copy(cloud.instance_dir(id).join("cidata.iso"), &iso)?;
        kill(&cloud, id)?;
        let name = format!("{}bare-{round}", cloud.cluster_prefix());
        let overlay = scratch.join(format!("bare-{round}.qcow2"));
        let console = scratch.join(format!("bare-{round}.log"));
        let xml = bare_xml(&xml, &name, &overlay, &console, &iso, &appliance.disk)?;
        bare.push(bare_start(&conn, &xml)?);
        let _ = std::fs::remove_file(&overlay);
        let _ = std::fs::remove_file(&console);
        let _ = std::fs::remove_file(&iso);
    }

    println!(
        "\nAPI to Running vs bare virDomainCreateXML (same domain XML, alternating, image cached)"
    );
    let (api_p50, api_p99) = report("POST /instances -> Running", &mut api);
    let (bare_p50, bare_p99) = report("virDomainCreateXML", &mut bare);
    let diff = ms(api_p50) - ms(bare_p50);
    println!(
        "  difference                         p50 {diff:>+8.1} ms   p99 {:>+8.1} ms   (goal: p50 within 30 ms) {}",
        ms(api_p99) - ms(bare_p99),
        if diff <= 30.0 { "MET" } else { "NOT MET" }
    );
    Ok(())
}

fn overlay_bench(rounds: usize) -> anyhow::Result<()> {
    use stratus_agent::images::qcow2::create_overlay;
    use stratus_common::api::DiskFormat;
    let appliance = stratus_e2e::appliance()?;
    let dir = tempfile::tempdir_in(stratus_e2e::TEST_ROOT)?;
    let size = stratus_agent::images::qcow2::inspect(&appliance.disk)?.virtual_size;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let path = dir.path().join(format!("ours-{i}.qcow2"));
        let started = Instant::now();
        create_overlay(&path, &appliance.disk, DiskFormat::Qcow2, size)?;
        ours.push(started.elapsed());
        let path = dir.path().join(format!("qemu-{i}.qcow2"));
        let started = Instant::now();
        let status = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(&appliance.disk)
            .arg(&path)
            .status()?;
        theirs.push(started.elapsed());
        if !status.success() {
            bail!("qemu-img create failed");
        }
    }
    println!("\nqcow2 overlay creation (alternating, same base)");
    let (_, p99) = report("in-process create_overlay (fsync)", &mut ours);
    report("qemu-img create -b (no fsync)", &mut theirs);
    println!(
        "  goal: in-process p99 under 2 ms: {}",
        if ms(p99) < 2.0 { "MET" } else { "NOT MET" }
    );
    Ok(())
}
