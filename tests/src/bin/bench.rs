//! `stratus-bench`: the benchmarks behind `make bench`, printing figures against the goals.
//!
//! API to Running: the time from `POST /api/v1/instances` to the instance showing `Running`
//! (image already verified on the host), against a bare `virDomainCreateXML` of the same domain
//! XML, measured alternately in the same run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::json;
use stratus_common::api::InstanceState;
use stratus_e2e::{TestCloud, LIBVIRT_URI};

struct Args {
    rounds: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args { rounds: 10 };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-n" | "--rounds" => args.rounds = it.next().context("-n needs a number")?.parse()?,
            "--appliance" => std::env::set_var(
                "STRATUS_APPLIANCE",
                it.next().context("--appliance needs a directory")?,
            ),
            "-h" | "--help" => {
                println!("usage: stratus-bench [-n ROUNDS] [--appliance DIR]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    if args.rounds < 1 {
        bail!("-n must be at least 1");
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

/// The same domain XML made startable again under another name, with a fresh overlay and
/// console log of its own (the instance's files are gone with it).
fn bare_xml(
    xml: &str,
    name: &str,
    overlay: &Path,
    console: &Path,
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
    // Disk and console paths point into the killed instance's directory.
    let lines: Vec<String> = out
        .lines()
        .map(|line| {
            if line.contains("<source file=") && line.contains("disk.qcow2") {
                format!("<source file='{}'/>", overlay.display())
            } else if line.contains("<source path=") && line.contains("console.log") {
                format!("<source path='{}'/>", console.display())
            } else {
                line.to_owned()
            }
        })
        .filter(|line| !line.contains("<backingStore") && !line.contains("</backingStore>"))
        .collect();
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
    let cloud = TestCloud::with_agent("bench")?;
    let appliance = stratus_e2e::appliance()?;
    let conn = virt::connect::Connect::open(Some(LIBVIRT_URI)).context("libvirt")?;
    let scratch: PathBuf = cloud.dir.join("bare");
    std::fs::create_dir_all(&scratch)?;

    // Warm-up: the host verifies the image's checksum once.
    let (_, id, _) = api_start(&cloud)?;
    kill(&cloud, id)?;

    let (mut api, mut bare) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let (elapsed, id, xml) = api_start(&cloud)?;
        api.push(elapsed);
        kill(&cloud, id)?;
        let name = format!("{}bare-{round}", cloud.cluster_prefix());
        let overlay = scratch.join(format!("bare-{round}.qcow2"));
        let console = scratch.join(format!("bare-{round}.log"));
        let xml = bare_xml(&xml, &name, &overlay, &console, &appliance.disk)?;
        bare.push(bare_start(&conn, &xml)?);
        let _ = std::fs::remove_file(&overlay);
        let _ = std::fs::remove_file(&console);
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
