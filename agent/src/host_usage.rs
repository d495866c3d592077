//! The host's own use, measured from the kernel's counters (`/proc/stat`, `/proc/loadavg`,
//! `/proc/meminfo`, `/proc/net/dev`) and the state directory's file system, every
//! [`SAMPLE_SECS`](stratus_common::usage::SAMPLE_SECS), in-process. CPU and network figures
//! are rates between two readings, so the first reading gives none. Network counts the
//! physical interfaces only (those with a device behind them in `/sys/class/net`): bridges,
//! taps and veths carry the guests' traffic, which the physical ones carry again.

use std::path::{Path, PathBuf};
use std::time::Instant;

use stratus_common::usage::{HostHistory, HostSample};

/// CPU time counters of `/proc/stat`'s first line: (busy, total) in ticks.
pub fn parse_cpu(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is counted in user).
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// The one-minute load average of `/proc/loadavg`.
pub fn parse_load(loadavg: &str) -> Option<f32> {
    loadavg.split_whitespace().next()?.parse().ok()
}

/// (used, total) bytes of `/proc/meminfo`: used is total less `MemAvailable`.
pub fn parse_memory(meminfo: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:")?;
    Some((total.saturating_sub(available), total))
}

/// Received and sent bytes of `/proc/net/dev`, summed over the interfaces `counted` admits.
pub fn parse_net(dev: &str, counted: impl Fn(&str) -> bool) -> (u64, u64) {
    let mut rx = 0u64;
    let mut tx = 0u64;
    for line in dev.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        if !counted(name.trim()) {
            continue;
        }
        let fields: Vec<u64> = counters
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        if fields.len() >= 9 {
            rx = rx.saturating_add(fields[0]);
            tx = tx.saturating_add(fields[8]);
        }
    }
    (rx, tx)
}

/// Whether a network interface has a device behind it (not a bridge, tap, veth or loopback).
fn physical(name: &str) -> bool {
    Path::new("/sys/class/net")
        .join(name)
        .join("device")
        .exists()
}

/// The previous reading of the counters that give rates.
#[derive(Debug, Clone, Copy)]
struct Counters {
    cpu: (u64, u64),
    net: (u64, u64),
    at: Instant,
}

/// Measures the host and keeps its history (sent whole to a controller that asks).
pub struct HostMeter {
    state_dir: PathBuf,
    previous: Option<Counters>,
    pub history: HostHistory,
}

impl HostMeter {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            state_dir: state_dir.to_owned(),
            previous: None,
            history: HostHistory::default(),
        }
    }

    /// Reads the host's counters now; returns the sample (also kept in the history) once
    /// there is a previous reading to take rates from.
    pub fn sample(
        &mut self,
        at_ms: u64,
        instances: u32,
        cache: (u64, u64),
    ) -> std::io::Result<Option<HostSample>> {
        let read = |path: &str| std::fs::read_to_string(path);
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
        let cpu = parse_cpu(&read("/proc/stat")?).ok_or_else(|| bad("/proc/stat"))?;
        let load1 = parse_load(&read("/proc/loadavg")?).ok_or_else(|| bad("/proc/loadavg"))?;
        let (memory_used, memory_total) =
            parse_memory(&read("/proc/meminfo")?).ok_or_else(|| bad("/proc/meminfo"))?;
        let net = parse_net(&read("/proc/net/dev")?, physical);
        let stat = nix::sys::statvfs::statvfs(&self.state_dir).map_err(std::io::Error::from)?;
        let unit = stat.fragment_size();
        let disk_total = stat.blocks().saturating_mul(unit);
        let disk_used = disk_total.saturating_sub(stat.blocks_free().saturating_mul(unit));
        let now = Instant::now();
        let previous = self.previous.replace(Counters { cpu, net, at: now });
        let Some(previous) = previous else {
            return Ok(None);
        };
        let seconds = now.saturating_duration_since(previous.at).as_secs_f64();
        if seconds <= 0.0 {
            return Ok(None);
        }
        let (busy, total) = (
            cpu.0.saturating_sub(previous.cpu.0),
            cpu.1.saturating_sub(previous.cpu.1),
        );
        let cpu_percent = if total == 0 {
            0.0
        } else {
            (busy as f64 * 100.0 / total as f64) as f32
        };
        let rate = |now: u64, then: u64| (now.saturating_sub(then) as f64 / seconds).round() as u64;
        let sample = HostSample {
            at_ms,
            cpu_percent,
            load1,
            memory_used_bytes: memory_used,
            memory_total_bytes: memory_total,
            disk_used_bytes: disk_used,
            disk_total_bytes: disk_total,
            net_rx_bytes_per_sec: rate(net.0, previous.net.0),
            net_tx_bytes_per_sec: rate(net.1, previous.net.1),
            instances,
            cache_hits: cache.0,
            cache_misses: cache.1,
        };
        self.history.record(sample);
        Ok(Some(sample))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_counters_are_read() {
        let stat = "cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 50 2 25 400 20 1 1 0 0 0\n";
        assert_eq!(parse_cpu(stat), Some((160, 1000)));
        assert_eq!(parse_load("0.52 0.58 0.59 2/467 12345\n"), Some(0.52));
        let meminfo = "MemTotal:       16384 kB\nMemFree:     1000 kB\nMemAvailable:    4096 kB\n";
        assert_eq!(parse_memory(meminfo), Some((12288 * 1024, 16384 * 1024)));
        let dev = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo: 1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0\n  \
eth0: 5000 50 0 0 0 0 0 0 7000 70 0 0 0 0 0 0\n\
vnet3: 300 3 0 0 0 0 0 0 400 4 0 0 0 0 0 0\n";
        assert_eq!(parse_net(dev, |name| name == "eth0"), (5000, 7000));
        assert_eq!(parse_net(dev, |_| true), (6300, 8400));
        assert_eq!(parse_cpu("intr 1 2 3\n"), None);
    }

    /// The real kernel and file system of this machine: rates after two readings, figures
    /// within their bounds.
    #[test]
    fn this_host_is_measured() {
        let dir = tempfile::tempdir().unwrap();
        let mut meter = HostMeter::new(dir.path());
        assert_eq!(meter.sample(1_000, 2, (3, 4)).unwrap(), None);
        // Some CPU time to count between the readings.
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let sample = meter.sample(2_000, 2, (3, 4)).unwrap().expect("a sample");
        assert!((0.0..=100.0).contains(&sample.cpu_percent), "{sample:?}");
        assert!(sample.memory_total_bytes > 0);
        assert!(sample.memory_used_bytes <= sample.memory_total_bytes);
        assert!(sample.disk_total_bytes > 0);
        assert!(sample.disk_used_bytes <= sample.disk_total_bytes);
        assert_eq!(
            (sample.instances, sample.cache_hits, sample.cache_misses),
            (2, 3, 4)
        );
        assert_eq!(meter.history.latest(), Some(&sample));
    }
}
