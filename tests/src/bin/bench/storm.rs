//! storm: 20 concurrent starts of one uncached image (`POST /instances` from 20 threads, to
//! the last instance `Running`) against the floor this host's libvirt sets: 20 concurrent bare
//! `virDomainCreateXML` of the domain XML our agent produced, from 20 threads sharing one
//! connection as the agent does, to the last create returning. The two bursts alternate in the
//! same run; each bare domain gets its own overlay on the cached image, its own console and its
//! own copy of the instance's cloud-init ISO.
//!
//! Twenty TCG guests on two cores make both bursts CPU-bound and noisy (the same burst varies by
//! tens of percent from round to round), so each round also prints where the host's CPU went
//! (QEMU, libvirtd, our agent and controller, the benchmark, and anything else running), and the
//! per-round ratios. A round takes about 75 s here; `-n` sets how many.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::json;
use stratus_common::api::{Instance, InstanceState};
use stratus_e2e::{TestCloud, LIBVIRT_URI};
use virt::connect::Connect;
use virt::domain::Domain;

use super::ms;

/// Starts in one burst.
const STARTS: usize = 20;

/// When each start of a burst finished, from the burst's start, earliest first.
#[derive(Clone)]
struct Burst {
    done: Vec<Duration>,
    /// Where the CPU went meanwhile.
    cpu: String,
}

impl Burst {
    fn new(mut done: Vec<Duration>) -> Self {
        done.sort();
        Self {
            done,
            cpu: String::new(),
        }
    }

    fn first(&self) -> Duration {
        self.done[0]
    }

    fn median(&self) -> Duration {
        self.done[self.done.len() / 2]
    }

    fn last(&self) -> Duration {
        self.done[self.done.len() - 1]
    }

    fn line(&self) -> String {
        format!(
            "first {:>7.0}   median {:>7.0}   last {:>7.0} ms",
            ms(self.first()),
            ms(self.median()),
            ms(self.last())
        )
    }
}

/// The burst as the controller recorded it (millisecond RFC 3339 times), from the moment the
/// POSTs were let go: when each was recorded Booting (placed, sent to the agent, its
/// start confirmed) and Running (disk, ISO, domain created, reported).
struct Phases {
    booting: Burst,
    running: Burst,
}

/// Milliseconds since midnight of a `...THH:MM:SS.mmmZ` time.
fn day_ms(at: &str) -> anyhow::Result<u64> {
    let time = at
        .split_once('T')
        .and_then(|(_, t)| t.strip_suffix('Z'))
        .with_context(|| format!("time {at:?}"))?;
    let (hms, millis) = time.split_once('.').unwrap_or((time, "0"));
    let mut ms = 0;
    for part in hms.split(':') {
        ms = ms * 60 + part.parse::<u64>()?;
    }
    Ok(ms * 1000 + millis.parse::<u64>()?)
}

impl Phases {
    /// `started` is when the POSTs were let go, in milliseconds since the Unix epoch.
    fn of(instances: &[&Instance], started: u64) -> anyhow::Result<Self> {
        let origin = started % 86_400_000;
        // A burst across midnight wraps around.
        let since = |at: &str| -> anyhow::Result<Duration> {
            let ms = day_ms(at)?;
            let ms = if ms + 60_000 < origin {
                ms + 86_400_000
            } else {
                ms
            };
            Ok(Duration::from_millis(ms.saturating_sub(origin)))
        };
        let first = |instance: &Instance, state: InstanceState| -> anyhow::Result<Duration> {
            let change = instance
                .history
                .iter()
                .find(|c| c.state == state)
                .with_context(|| format!("instance {} was never {state}", instance.id))?;
            since(&change.at)
        };
        let (mut booting, mut running) = (Vec::new(), Vec::new());
        for instance in instances {
            booting.push(first(instance, InstanceState::Booting)?);
            running.push(first(instance, InstanceState::Running)?);
        }
        Ok(Self {
            booting: Burst::new(booting),
            running: Burst::new(running),
        })
    }
}

/// CPU time, in clock ticks, of the host and of the processes a burst involves, read from
/// `/proc`: what competes with the guests' starts on this machine's two cores.
#[derive(Default, Clone, Copy)]
struct CpuTicks {
    host_busy: u64,
    qemu: u64,
    libvirtd: u64,
    agent: u64,
    controller: u64,
    bench: u64,
}

fn process_ticks(stat: &str) -> u64 {
    // utime and stime are fields 14 and 15; the command name before them may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

impl CpuTicks {
    /// Now, for the cloud whose files are under `dir` and whose domains start with `prefix`.
    fn now(dir: &Path, prefix: &str) -> Self {
        let mut ticks = Self::default();
        if let Ok(stat) = std::fs::read_to_string("/proc/stat") {
            let all: Vec<u64> = stat
                .lines()
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .skip(1)
                .filter_map(|f| f.parse().ok())
                .collect();
            // idle and iowait are the 4th and 5th.
            let idle = all.get(3).copied().unwrap_or(0) + all.get(4).copied().unwrap_or(0);
            ticks.host_busy = all.iter().sum::<u64>() - idle;
        }
        let dir = dir.display().to_string();
        let me = std::process::id().to_string();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return ticks;
        };
        for entry in entries.flatten() {
            let pid = entry.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let path = entry.path();
            let (Ok(comm), Ok(stat)) = (
                std::fs::read_to_string(path.join("comm")),
                std::fs::read_to_string(path.join("stat")),
            ) else {
                continue;
            };
            let cmdline = std::fs::read(path.join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            let used = process_ticks(&stat);
            let comm = comm.trim();
            if pid == me {
                ticks.bench += used;
            } else if comm == "libvirtd" {
                ticks.libvirtd += used;
            } else if comm.starts_with("qemu-system") && cmdline.contains(prefix) {
                ticks.qemu += used;
            } else if comm == "stratus-agent" && cmdline.contains(&dir) {
                ticks.agent += used;
            } else if comm.starts_with("stratus-contro") && cmdline.contains(&dir) {
                ticks.controller += used;
            }
        }
        ticks
    }

    /// What was spent from `earlier` to `self` over `wall`, in core-seconds.
    fn since(&self, earlier: &Self, wall: Duration) -> String {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let secs = |now: u64, then: u64| now.saturating_sub(then) as f64 / hz;
        format!(
            "host busy {:.1} of {:.1}: qemu {:.1}, libvirtd {:.1}, agent {:.1}, controller {:.1}, bench {:.1}, other {:.1}",
            secs(self.host_busy, earlier.host_busy),
            cores * wall.as_secs_f64(),
            secs(self.qemu, earlier.qemu),
            secs(self.libvirtd, earlier.libvirtd),
            secs(self.agent, earlier.agent),
            secs(self.controller, earlier.controller),
            secs(self.bench, earlier.bench),
            secs(self.host_busy, earlier.host_busy)
                - [
                    secs(self.qemu, earlier.qemu),
                    secs(self.libvirtd, earlier.libvirtd),
                    secs(self.agent, earlier.agent),
                    secs(self.controller, earlier.controller),
                    secs(self.bench, earlier.bench),
                ]
                .iter()
                .sum::<f64>(),
        )
    }
}

/// What the bare burst copies from one of our instances: its live domain XML and its
/// cloud-init ISO (the instance's own files go with it when it is killed).
struct Template {
    xml: String,
    iso: PathBuf,
    /// The cached image the instances' overlays sit on.
    base: PathBuf,
}

/// Kills the instances of a burst when dropped (a failed round included) and waits for them
/// to be Done, so the next burst starts on a quiet host.
struct Instances<'a> {
    cloud: &'a TestCloud,
    ids: Vec<u64>,
}

impl Instances<'_> {
    fn kill_all(&mut self) -> anyhow::Result<()> {
        let ids = std::mem::take(&mut self.ids);
        for &id in &ids {
            self.cloud.delete("admin", &format!("/instances/{id}"))?;
        }
        for &id in &ids {
            self.cloud
                .wait_state("admin", id, InstanceState::Done, Duration::from_secs(120))?;
        }
        Ok(())
    }
}

impl Drop for Instances<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.kill_all() {
            eprintln!("storm: cleaning up instances: {e:#}");
        }
    }
}

/// Destroys the bare domains and removes their files when dropped, also when a create failed.
struct BareDomains<'a> {
    conn: &'a Connect,
    names: Vec<String>,
    files: Vec<PathBuf>,
}

impl Drop for BareDomains<'_> {
    fn drop(&mut self) {
        for name in &self.names {
            if let Ok(domain) = Domain::lookup_by_name(self.conn, name) {
                if let Err(e) = domain.destroy() {
                    eprintln!("storm: destroying {name}: {e}");
                }
            }
        }
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// Every instance's state, through one listing per poll (20 pollers would load the
/// controller being measured).
fn states(cloud: &TestCloud) -> anyhow::Result<HashMap<u64, Instance>> {
    let (status, body) = cloud.get("admin", "/instances")?;
    anyhow::ensure!(status.is_success(), "list instances: {status} {body}");
    let list: Vec<Instance> = serde_json::from_value(body)?;
    Ok(list.into_iter().map(|i| (i.id, i)).collect())
}

/// Our burst: 20 concurrent `POST /instances`, timed to each instance recorded Running.
/// Returns the burst, the instances (still running), one instance's ID and domain name, and
/// the controller's record of the burst.
fn our_burst(cloud: &TestCloud) -> anyhow::Result<(Burst, Instances<'_>, (u64, String), Phases)> {
    let barrier = Barrier::new(STARTS + 1);
    let (cpu_before, wall) = (
        CpuTicks::now(&cloud.dir, cloud.cluster_prefix()),
        Instant::now(),
    );
    let (posted, started) = std::thread::scope(|s| {
        let posts: Vec<_> = (0..STARTS)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    cloud.run_instance("admin", json!({"image": "storm", "type": "t1.micro"}))
                })
            })
            .collect();
        barrier.wait();
        let started = stratus_common::time::now_ms();
        let posted: Vec<_> = posts
            .into_iter()
            .map(|post| post.join().expect("POST thread"))
            .collect();
        (posted, started)
    });
    let mut instances = Instances {
        cloud,
        ids: Vec::new(),
    };
    let mut domain = None;
    let mut failed = None;
    for result in posted {
        match result {
            Ok(vm) => {
                instances.ids.push(vm.id);
                domain.get_or_insert((vm.id, vm.domain));
            }
            Err(e) => failed = Some(e),
        }
    }
    if let Some(e) = failed {
        return Err(e.context("POST /instances"));
    }
    // The controller's record says when each became Running (its clock, this machine's), so
    // the poll can be slow and leave the two cores to the starts it measures.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let now = states(cloud)?;
        let mut running = 0;
        for id in &instances.ids {
            let Some(instance) = now.get(id) else {
                bail!("instance {id} is not listed");
            };
            if instance.state == InstanceState::Running {
                running += 1;
            } else if instance.state.is_terminal() {
                bail!(
                    "instance {id} is {} ({:?})",
                    instance.state,
                    instance.reason
                );
            }
        }
        if running == STARTS {
            break;
        }
        if Instant::now() > deadline {
            bail!("{running} of {STARTS} Running after 180 s");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let domain = domain.context("no instance")?;
    let now = states(cloud)?;
    let ours: Vec<&Instance> = instances.ids.iter().filter_map(|id| now.get(id)).collect();
    let cpu = CpuTicks::now(&cloud.dir, cloud.cluster_prefix()).since(&cpu_before, wall.elapsed());
    let phases = Phases::of(&ours, started)?;
    let mut burst = phases.running.clone();
    burst.cpu = cpu;
    Ok((burst, instances, domain, phases))
}

/// The bare burst: the template's XML under 20 names, each with its own overlay, console and
/// ISO copy (made before the clock starts), created from 20 threads on one connection.
fn bare_burst(
    conn: &Connect,
    template: &Template,
    scratch: &Path,
    prefix: &str,
    round: usize,
) -> anyhow::Result<Burst> {
    let mut bare = BareDomains {
        conn,
        names: Vec::new(),
        files: Vec::new(),
    };
    let mut xmls = Vec::new();
    for i in 0..STARTS {
        let name = format!("{prefix}bare-{round}-{i}");
        let overlay = scratch.join(format!("{name}.qcow2"));
        let console = scratch.join(format!("{name}.log"));
        let iso = scratch.join(format!("{name}.iso"));
        bare.files
            .extend([overlay.clone(), console.clone(), iso.clone()]);
        std::fs::copy(&template.iso, &iso).context("copy the cloud-init ISO")?;
        xmls.push(super::bare_xml(
            &template.xml,
            &name,
            &overlay,
            &console,
            &iso,
            &template.base,
        )?);
        bare.names.push(name);
    }
    let barrier = Barrier::new(STARTS + 1);
    let dir = scratch.parent().unwrap_or(scratch);
    let (cpu_before, wall) = (CpuTicks::now(dir, prefix), Instant::now());
    let (created, started) = std::thread::scope(|s| {
        let creates: Vec<_> = xmls
            .iter()
            .map(|xml| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    Domain::create_xml(conn, xml, 0)
                        .map(|_domain| Instant::now())
                        .context("virDomainCreateXML")
                })
            })
            .collect();
        barrier.wait();
        let started = Instant::now();
        let created: Vec<_> = creates
            .into_iter()
            .map(|create| create.join().expect("create thread"))
            .collect();
        (created, started)
    });
    let done = created
        .into_iter()
        .map(|returned| returned.map(|at| at.saturating_duration_since(started)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cpu = CpuTicks::now(dir, prefix).since(&cpu_before, wall.elapsed());
    drop(bare);
    let mut burst = Burst::new(done);
    burst.cpu = cpu;
    Ok(burst)
}

pub(crate) fn storm_bench(rounds: usize) -> anyhow::Result<()> {
    let mut cloud = TestCloud::with_agent("storm-bench")?;
    let appliance = stratus_e2e::appliance()?;
    let server = stratus_e2e::image_server::ImageServer::start()?;
    for file in ["disk.qcow2", "vmlinuz", "initrd.img"] {
        server.serve_file(&format!("/{file}"), &appliance.dir().join(file));
    }
    cloud.register_image(&appliance.image_json("storm", &server.base()))?;
    let conn = Connect::open(Some(LIBVIRT_URI)).context("libvirt")?;
    let scratch = cloud.dir.join("bare");
    std::fs::create_dir_all(&scratch)?;
    let prefix = cloud.cluster_prefix().to_owned();
    let fresh_cache = |cloud: &mut TestCloud| -> anyhow::Result<()> {
        cloud.kill_agent();
        std::fs::remove_dir_all(cloud.image_cache())?;
        cloud.start_agent()
    };

    // For reference: one start of the uncached image, alone.
    fresh_cache(&mut cloud)?;
    let single = {
        let started = Instant::now();
        let vm = cloud.run_instance("admin", json!({"image": "storm", "type": "t1.micro"}))?;
        let mut instances = Instances {
            cloud: &cloud,
            ids: vec![vm.id],
        };
        cloud.wait_state(
            "admin",
            vm.id,
            InstanceState::Running,
            Duration::from_secs(120),
        )?;
        let elapsed = started.elapsed();
        instances.kill_all()?;
        elapsed
    };

    println!(
        "\n{STARTS} concurrent starts of one uncached image (HTTP on loopback) vs {STARTS} concurrent \
         bare virDomainCreateXML of the same XML (image cached), alternating, {rounds} rounds"
    );
    println!(
        "  single start to Running            {:>8.1} ms",
        ms(single)
    );
    let mut template: Option<Template> = None;
    let (mut ours, mut bare, mut requests) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // Rounds alternate which burst goes first (after the first, which needs our XML).
        let bare_first = round % 2 == 1;
        let mut bare_round = None;
        if bare_first {
            let template = template.as_ref().context("no template yet")?;
            bare_round = Some(bare_burst(&conn, template, &scratch, &prefix, round)?);
        }
        fresh_cache(&mut cloud)?;
        let before = server.requests("/disk.qcow2");
        let (burst, mut instances, (id, domain), phases) = our_burst(&cloud)?;
        let disk_requests = server.requests("/disk.qcow2") - before;
        let xml = Domain::lookup_by_name(&conn, &domain)
            .and_then(|d| d.get_xml_desc(0))
            .with_context(|| format!("the XML of {domain}"))?;
        let iso = scratch.join("template.iso");
        std::fs::copy(cloud.instance_dir(id).join("cidata.iso"), &iso)
            .context("copy the instance's cloud-init ISO")?;
        instances.kill_all()?;
        drop(instances);
        let template = template.insert(Template {
            xml,
            iso,
            base: cloud.image_cache().join("sha256").join(&appliance.sha256),
        });
        if !bare_first {
            bare_round = Some(bare_burst(&conn, template, &scratch, &prefix, round)?);
        }
        let bare_round = bare_round.context("no bare burst")?;
        println!(
            "  round {}: POST -> Running        {}   disk requests {disk_requests}",
            round + 1,
            burst.line()
        );
        println!(
            "           recorded Booting       {}   (placed, sent, start confirmed)",
            phases.booting.line()
        );
        println!(
            "           virDomainCreateXML     {}   ({})",
            bare_round.line(),
            if bare_first {
                "ran first"
            } else {
                "ran second"
            }
        );
        println!("           cpu during ours        {}", burst.cpu);
        println!("           cpu during bare        {}", bare_round.cpu);
        ours.push(burst.last());
        bare.push(bare_round.last());
        requests.push(disk_requests);
    }
    let ratios: Vec<String> = ours
        .iter()
        .zip(&bare)
        .map(|(o, b)| format!("{:.2}", o.as_secs_f64() / b.as_secs_f64()))
        .collect();
    ours.sort();
    bare.sort();
    let (ours_last, bare_last) = (ours[ours.len() / 2], bare[bare.len() / 2]);
    let over = 100.0 * (ours_last.as_secs_f64() / bare_last.as_secs_f64() - 1.0);
    println!(
        "  last Running (median of rounds)    {:>8.1} ms   ({:.1}x the single start)",
        ms(ours_last),
        ours_last.as_secs_f64() / single.as_secs_f64()
    );
    println!(
        "  last bare create (median)          {:>8.1} ms",
        ms(bare_last)
    );
    println!(
        "  last Running / last bare create    per round {}",
        ratios.join(", ")
    );
    let one_download = requests.iter().all(|&r| r == 1);
    println!(
        "  ours over the bare floor           {over:>+8.1} %   (goals: last Running within 10% of the bare floor: {}; one download per storm: {})",
        if over <= 10.0 { "met" } else { "not met" },
        if one_download { "met" } else { "not met" }
    );
    Ok(())
}
