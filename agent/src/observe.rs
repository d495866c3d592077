//! What the agent observes of its guests and host and pushes to the controller: new output of
//! each instance's serial console log (`instances/<id>/console.log`, which only grows while
//! the instance exists), the CPU use of running guests, from libvirt's CPU time, and the
//! host's own use ([`crate::host_usage`]). Logs are looked at every [`CONSOLE_TICK`]; a push
//! goes when there is output, and at least every [`HEARTBEAT`] with where each log stands, so
//! a controller that lost what it had (a restart, a new leader) asks for it again; it asks
//! for the host's history of use the same way.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use stratus_common::agent::domain_name;
use stratus_common::observed::{ConsoleChunk, GuestUsage, HostObserved, CONSOLE_KEEP_BYTES};
use stratus_common::time::now_ms;

use crate::controller_client::ControllerClient;
use crate::failure::error_chain;
use crate::host_usage::HostMeter;
use crate::hypervisor::Hypervisor;
use crate::images::cache::ImageCache;
use crate::instance_dir::InstanceDirs;

/// How often the console logs are looked at.
pub const CONSOLE_TICK: Duration = Duration::from_millis(250);
/// How often CPU use is measured.
pub const CPU_TICK: Duration = Duration::from_secs(5);
/// The longest time without a push.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// How often the host's own use is measured.
pub const HOST_TICK: Duration = Duration::from_secs(stratus_common::usage::SAMPLE_SECS);

/// Where each instance's console log has been sent up to.
#[derive(Debug, Default)]
pub struct ConsoleTail {
    sent: HashMap<u64, u64>,
}

impl ConsoleTail {
    /// The output of every instance's log not sent yet (at most [`CONSOLE_KEEP_BYTES`] per
    /// instance: the controller keeps no more), marked sent. With `heartbeat`, an empty chunk
    /// for each log with nothing new, saying where it stands. A log seen for the first time
    /// is sent from its last kept window on.
    pub fn collect(&mut self, dirs: &InstanceDirs, heartbeat: bool) -> Vec<ConsoleChunk> {
        let ids = dirs.instance_ids();
        self.sent.retain(|id, _| ids.contains(id));
        let mut chunks = Vec::new();
        for id in ids {
            let path = dirs.console_log(id);
            let Ok(size) = std::fs::metadata(&path).map(|m| m.len()) else {
                continue;
            };
            let sent = self
                .sent
                .entry(id)
                .or_insert_with(|| size.saturating_sub(CONSOLE_KEEP_BYTES));
            // A log shorter than what was sent was made anew: send it from its start.
            if size < *sent {
                *sent = 0;
            }
            if size == *sent {
                if heartbeat {
                    chunks.push(chunk(id, *sent, &[]));
                }
                continue;
            }
            let len = (size - *sent).min(CONSOLE_KEEP_BYTES);
            match read_at(&path, *sent, len) {
                Ok(bytes) => {
                    chunks.push(chunk(id, *sent, &bytes));
                    *sent += bytes.len() as u64;
                }
                Err(e) => tracing::debug!(instance = id, error = %e, "cannot read the console log"),
            }
        }
        chunks
    }

    /// The controller asked for `instance`'s log again from `from`.
    pub fn resend(&mut self, instance: u64, from: u64) {
        if let Some(sent) = self.sent.get_mut(&instance) {
            *sent = (*sent).min(from);
        }
    }
}

fn chunk(instance: u64, offset: u64, bytes: &[u8]) -> ConsoleChunk {
    ConsoleChunk {
        instance,
        offset,
        data: base64::engine::general_purpose::STANDARD.encode(bytes),
    }
}

fn read_at(path: &std::path::Path, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// CPU use from successive CPU-time samples of each running guest.
#[derive(Debug, Default)]
pub struct CpuMeter {
    last: HashMap<u64, (u64, Instant)>,
}

impl CpuMeter {
    /// Records a sample (`cpu_ns` used so far, read `at`); returns the use since the previous
    /// sample in percent of one host CPU, once there is one.
    pub fn sample(&mut self, instance: u64, cpu_ns: u64, at: Instant) -> Option<u32> {
        let previous = self.last.insert(instance, (cpu_ns, at));
        let (before, then) = previous?;
        let wall = at.saturating_duration_since(then).as_nanos();
        if wall == 0 || cpu_ns < before {
            return None;
        }
        Some(((u128::from(cpu_ns - before) * 100 + wall / 2) / wall) as u32)
    }

    /// Forgets the instances not in `running`.
    pub fn keep(&mut self, running: &[u64]) {
        self.last.retain(|id, _| running.contains(id));
    }
}

/// Measures the CPU use of every instance with a directory whose domain runs; returns it
/// with how many run.
fn measure(
    hv: &dyn Hypervisor,
    dirs: &InstanceDirs,
    cluster_id: &str,
    meter: &mut CpuMeter,
) -> (Vec<GuestUsage>, u32) {
    let now = Instant::now();
    let mut running = Vec::new();
    let mut usage = Vec::new();
    for id in dirs.instance_ids() {
        match hv.cpu_time(&domain_name(cluster_id, id)) {
            Ok(Some(cpu_ns)) => {
                running.push(id);
                if let Some(cpu_percent) = meter.sample(id, cpu_ns, now) {
                    usage.push(GuestUsage {
                        instance: id,
                        cpu_percent,
                    });
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(instance = id, error = %error_chain(&e), "cannot read CPU time")
            }
        }
    }
    meter.keep(&running);
    (usage, running.len() as u32)
}

/// What the agent measures between pushes.
struct Meters {
    cpu: CpuMeter,
    host: HostMeter,
}

/// Pushes console output, CPU use and the host's use to the controller, forever.
pub async fn observe_loop(
    client: ControllerClient,
    host: String,
    dirs: InstanceDirs,
    hv: Arc<dyn Hypervisor>,
    cluster_id: String,
    state_dir: PathBuf,
    images: Arc<ImageCache>,
) {
    let mut tail = ConsoleTail::default();
    let meters = Arc::new(std::sync::Mutex::new(Meters {
        cpu: CpuMeter::default(),
        host: HostMeter::new(&state_dir),
    }));
    let mut tick = tokio::time::interval(CONSOLE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut last_push, mut last_cpu) = (Instant::now() - HEARTBEAT, Instant::now() - CPU_TICK);
    let mut last_host = Instant::now() - HOST_TICK;
    let mut send_history = false;
    loop {
        tick.tick().await;
        let heartbeat = last_push.elapsed() >= HEARTBEAT;
        let consoles = tail.collect(&dirs, heartbeat);
        let mut usage = Vec::new();
        let mut host_sample = None;
        if last_cpu.elapsed() >= CPU_TICK {
            last_cpu = Instant::now();
            let with_host = last_host.elapsed() >= HOST_TICK;
            if with_host {
                last_host = Instant::now();
            }
            let cache = images.stats();
            let (hv, dirs, cluster_id, meters) =
                (hv.clone(), dirs.clone(), cluster_id.clone(), meters.clone());
            (usage, host_sample) = tokio::task::spawn_blocking(move || {
                let mut meters = meters.lock().unwrap_or_else(|e| e.into_inner());
                let (usage, running) = measure(hv.as_ref(), &dirs, &cluster_id, &mut meters.cpu);
                let sample = if with_host {
                    meters
                        .host
                        .sample(now_ms(), running, (cache.hits, cache.misses))
                        .unwrap_or_else(|e| {
                            tracing::debug!(error = %e, "cannot measure the host");
                            None
                        })
                } else {
                    None
                };
                (usage, sample)
            })
            .await
            .unwrap_or_default();
        }
        if consoles.is_empty() && usage.is_empty() && host_sample.is_none() && !heartbeat {
            continue;
        }
        let history = send_history.then(|| {
            meters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .host
                .history
                .clone()
        });
        let sent: Vec<(u64, u64)> = consoles.iter().map(|c| (c.instance, c.offset)).collect();
        let observed = HostObserved {
            consoles,
            usage,
            host: host_sample,
            history,
        };
        match client.observed(&host, &observed).await {
            Ok(answer) => {
                last_push = Instant::now();
                send_history = answer.send_history;
                for r in answer.resend {
                    tail.resend(r.instance, r.from);
                }
            }
            Err(e) => {
                tracing::debug!(error = %error_chain(&e), "cannot push observations; will send again");
                for (instance, offset) in sent {
                    tail.resend(instance, offset);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(chunk: &ConsoleChunk) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(&chunk.data)
            .unwrap()
    }

    #[test]
    fn new_console_output_is_sent_once_and_again_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = InstanceDirs::new(dir.path());
        std::fs::create_dir_all(dirs.dir(3)).unwrap();
        let mut tail = ConsoleTail::default();
        assert!(tail.collect(&dirs, false).is_empty(), "no log yet");
        std::fs::write(dirs.console_log(3), b"booting\n").unwrap();
        let chunks = tail.collect(&dirs, false);
        assert_eq!(chunks.len(), 1);
        assert_eq!((chunks[0].instance, chunks[0].offset), (3, 0));
        assert_eq!(decoded(&chunks[0]), b"booting\n");
        assert!(tail.collect(&dirs, false).is_empty());
        let beat = tail.collect(&dirs, true);
        assert_eq!((beat[0].offset, decoded(&beat[0]).len()), (8, 0));

        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(dirs.console_log(3))
            .unwrap();
        std::io::Write::write_all(&mut log, b"READY\n").unwrap();
        let chunks = tail.collect(&dirs, false);
        assert_eq!(
            (chunks[0].offset, decoded(&chunks[0])),
            (8, b"READY\n".to_vec())
        );
        tail.resend(3, 0);
        assert_eq!(decoded(&tail.collect(&dirs, false)[0]), b"booting\nREADY\n");
        // Gone with its directory: forgotten.
        std::fs::remove_dir_all(dirs.dir(3)).unwrap();
        assert!(tail.collect(&dirs, true).is_empty());
    }

    #[test]
    fn cpu_use_is_the_cpu_time_over_the_wall_time_between_samples() {
        let mut meter = CpuMeter::default();
        let t0 = Instant::now();
        assert_eq!(meter.sample(1, 1_000_000_000, t0), None);
        // 0.5 s of CPU in 2 s: 25 %; two busy vCPUs over 1 s: 200 %.
        assert_eq!(
            meter.sample(1, 1_500_000_000, t0 + Duration::from_secs(2)),
            Some(25)
        );
        assert_eq!(
            meter.sample(1, 3_500_000_000, t0 + Duration::from_secs(3)),
            Some(200)
        );
        meter.keep(&[]);
        assert_eq!(
            meter.sample(1, 4_000_000_000, t0 + Duration::from_secs(4)),
            None
        );
    }
}
