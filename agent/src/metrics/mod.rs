//! The host's metrics, in the Prometheus text format (version 0.0.4, [`CONTENT_TYPE`]),
//! served at `/metrics` on the agent's own listen address ([`server`]):
//!
//! - per instance of this cluster running here, read from libvirt in-process at scrape time
//!   (named after the libvirt exporters' and Incus' `/1.0/metrics`): CPU seconds, vCPUs,
//!   memory, and per disk and per interface the bytes and operations counted since the domain
//!   started; every series labelled `instance_id` and `name` (not `instance`, which
//!   Prometheus gives each scraped target and would rename ours to `exported_instance`);
//! - the image cache: bytes and artifacts held, hits, misses, downloads and downloaded bytes;
//! - latency histograms observed where the work happens ([`Timings`], kept by the
//!   reconciler): from the API accepting an instance (or its start or reboot) to its guest
//!   running here, network set-up per instance start, disk hot-plug attach and detach.

pub mod server;

use std::collections::HashMap;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use stratus_common::agent::HostDesired;
use tokio::sync::watch;

use crate::failure::error_chain;
use crate::hypervisor::{BlockStats, GuestStats, Hypervisor, InterfaceStats};
use crate::images::cache::{CacheStats, ImageCache};

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The latencies the reconciler observes. Cheap to clone: clones share their counts.
#[derive(Clone, Debug)]
pub struct Timings {
    /// From the API accepting the request a generation answers to the agent seeing its guest
    /// run (once per instance generation).
    pub accepted_to_running: Histogram,
    /// Bridges, anti-spoofing rules and taps of one instance start (instances with NICs).
    pub network_setup: Histogram,
    /// One disk hot-plug, asked of libvirt until QEMU has the device.
    pub disk_attach: Histogram,
    /// One disk unplug, from the first request to the guest releasing the device.
    pub disk_detach: Histogram,
}

/// Host work: 0.5 ms to about 16 s, doubling (the controller's latency buckets).
fn short_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// What may include an image download or a guest's cooperation: 50 ms to about 7 minutes.
fn long_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 14))
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            accepted_to_running: long_buckets(),
            network_setup: short_buckets(),
            disk_attach: short_buckets(),
            disk_detach: long_buckets(),
        }
    }
}

impl Timings {
    /// The guest of a request accepted at `accepted_at_ms` (the controller's clock,
    /// milliseconds since the epoch) runs now. A controller clock ahead of ours counts as 0.
    pub fn observe_running(&self, accepted_at_ms: u64) {
        let now_ms = stratus_common::time::now_ms();
        self.accepted_to_running
            .observe(now_ms.saturating_sub(accepted_at_ms) as f64 / 1000.0);
    }
}

/// One running instance of this cluster, as a scrape saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceSample {
    pub id: u64,
    /// The instance's name, as the controller's desired state has it (empty if unknown).
    pub name: String,
    pub stats: GuestStats,
}

/// Everything read at scrape time.
#[derive(Debug)]
struct Scrape {
    instances: Vec<InstanceSample>,
    /// Whether libvirt could list the domains.
    libvirt_up: bool,
    cache: CacheStats,
    cache_budget: u64,
}

/// The registry: the reconciler's histograms, and a collector reading the rest at scrape time.
pub struct AgentMetrics {
    registry: Registry,
}

impl std::fmt::Debug for AgentMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentMetrics").finish_non_exhaustive()
    }
}

impl AgentMetrics {
    /// Registers every metric. `desired` is the controller's latest desired state for this
    /// host (the instances' names); `timings` the reconciler's.
    pub fn new(
        hv: Arc<dyn Hypervisor>,
        cluster_id: String,
        images: Arc<ImageCache>,
        desired: watch::Receiver<Option<HostDesired>>,
        timings: &Timings,
    ) -> Self {
        let mut registry = Registry::with_prefix("stratus");
        registry.register(
            "instance_accepted_to_running_seconds",
            "Time from the API accepting an instance (or its start or reboot) to its guest \
             running on this host, once per instance generation",
            timings.accepted_to_running.clone(),
        );
        registry.register(
            "network_setup_seconds",
            "Time to set up an instance's network interfaces (bridge, anti-spoofing rules, tap) \
             at its start",
            timings.network_setup.clone(),
        );
        registry.register(
            "disk_attach_seconds",
            "Time to hot-plug a persistent disk into a running guest",
            timings.disk_attach.clone(),
        );
        registry.register(
            "disk_detach_seconds",
            "Time from asking a guest to release a persistent disk to its releasing it",
            timings.disk_detach.clone(),
        );
        registry.register_collector(Box::new(ScrapeCollector {
            hv,
            cluster_id,
            images,
            desired,
        }));
        Self { registry }
    }

    /// Every metric as of now, in the Prometheus text format. Blocks (libvirt): async
    /// callers run it on a blocking thread.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// Reads the guests' counters and the image cache's figures when the registry is encoded.
struct ScrapeCollector {
    hv: Arc<dyn Hypervisor>,
    cluster_id: String,
    images: Arc<ImageCache>,
    desired: watch::Receiver<Option<HostDesired>>,
}

impl std::fmt::Debug for ScrapeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrapeCollector")
            .field("cluster_id", &self.cluster_id)
            .finish_non_exhaustive()
    }
}

impl ScrapeCollector {
    fn gather(&self) -> Scrape {
        let names: HashMap<u64, String> = self
            .desired
            .borrow()
            .as_ref()
            .map(|d| {
                d.instances
                    .iter()
                    .map(|i| (i.id, i.hostname.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let (instances, libvirt_up) =
            match collect_instances(self.hv.as_ref(), &self.cluster_id, &names) {
                Ok(instances) => (instances, true),
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "metrics: cannot list the domains");
                    (Vec::new(), false)
                }
            };
        Scrape {
            instances,
            libvirt_up,
            cache: self.images.stats(),
            cache_budget: self.images.budget_bytes(),
        }
    }
}

/// The counters of every running domain of this cluster, by instance ID, read for all
/// domains at once; a failure to read them or to list the domains is an error.
pub fn collect_instances(
    hv: &dyn Hypervisor,
    cluster_id: &str,
    names: &HashMap<u64, String>,
) -> Result<Vec<InstanceSample>, crate::hypervisor::HypervisorError> {
    let mut samples = Vec::new();
    let mut all = hv.all_guest_stats()?;
    for domain in hv.list()? {
        let Some(tag) = domain.tag.filter(|t| t.cluster_id == cluster_id) else {
            continue;
        };
        // A domain started since the statistics were read shows at the next scrape.
        if let Some(stats) = all.remove(&domain.name) {
            samples.push(InstanceSample {
                id: tag.instance_id,
                name: names.get(&tag.instance_id).cloned().unwrap_or_default(),
                stats,
            });
        }
    }
    samples.sort_by_key(|s| s.id);
    Ok(samples)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    instance_id: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeviceLabels {
    instance_id: String,
    name: String,
    device: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InterfaceLabels {
    instance_id: String,
    name: String,
    interface: String,
}

/// A counter read from a device's statistics: its name, its help and how to read it.
type Reading<T> = (&'static str, &'static str, fn(&T) -> u64);

/// One metric family with a sample per item that has a value.
fn family<'a, T, L: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    items: impl IntoIterator<Item = &'a T>,
    sample: impl Fn(&T) -> Option<(L, M)>,
) -> Result<(), std::fmt::Error>
where
    T: 'a,
{
    let samples: Vec<(L, M)> = items.into_iter().filter_map(sample).collect();
    if samples.is_empty() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in &samples {
        value.encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

fn single(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, value.metric_type())?;
    value.encode(metric)
}

fn gauge(value: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
}

impl Collector for ScrapeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let scrape = self.gather();
        let e = &mut encoder;
        single(
            e,
            "libvirt_up",
            "1 if libvirt answered this scrape, else 0 (and no instance series)",
            gauge(u64::from(scrape.libvirt_up)),
        )?;
        let cache = &scrape.cache;
        single(
            e,
            "image_cache_bytes",
            "Bytes of the artifacts the image cache holds",
            gauge(cache.bytes),
        )?;
        single(
            e,
            "image_cache_budget_bytes",
            "Bytes the image cache may hold before evicting unused artifacts",
            gauge(scrape.cache_budget),
        )?;
        single(
            e,
            "image_cache_artifacts",
            "Artifacts (disks, kernels, initrds) the image cache holds",
            gauge(cache.entries as u64),
        )?;
        single(
            e,
            "image_cache_hits",
            "Artifacts an instance start asked for and found in the cache",
            ConstCounter::new(cache.hits),
        )?;
        single(
            e,
            "image_cache_misses",
            "Artifacts an instance start asked for and had to download or wait for",
            ConstCounter::new(cache.misses),
        )?;
        single(
            e,
            "image_cache_downloads",
            "Downloads started (one however many starts wait for it)",
            ConstCounter::new(cache.downloads),
        )?;
        single(
            e,
            "image_cache_download_bytes",
            "Bytes downloaded, checked and published into the cache (decompressed)",
            ConstCounter::new(cache.download_bytes),
        )?;
        let list = &scrape.instances;
        let labels = |s: &InstanceSample| InstanceLabels {
            instance_id: s.id.to_string(),
            name: s.name.clone(),
        };
        family(
            e,
            "instance_cpu_seconds",
            "CPU time the instance's guest used since its domain started",
            MetricType::Counter,
            list,
            |s| Some((labels(s), ConstCounter::new(s.stats.cpu_ns as f64 / 1e9))),
        )?;
        family(
            e,
            "instance_vcpus",
            "Virtual CPUs of the instance",
            MetricType::Gauge,
            list,
            |s| Some((labels(s), gauge(u64::from(s.stats.vcpus)))),
        )?;
        family(
            e,
            "instance_memory_bytes",
            "Memory given to the instance's guest",
            MetricType::Gauge,
            list,
            |s| Some((labels(s), gauge(s.stats.memory_bytes))),
        )?;
        family(
            e,
            "instance_memory_rss_bytes",
            "Host memory the instance's emulator holds (resident set)",
            MetricType::Gauge,
            list,
            |s| Some((labels(s), gauge(s.stats.rss_bytes?))),
        )?;
        family(
            e,
            "instance_memory_usable_bytes",
            "Memory the guest reports usable (guests with a balloon driver)",
            MetricType::Gauge,
            list,
            |s| Some((labels(s), gauge(s.stats.usable_bytes?))),
        )?;
        let disks: Vec<(DeviceLabels, &BlockStats)> = list
            .iter()
            .flat_map(|s| {
                s.stats.disks.iter().map(move |d| {
                    (
                        DeviceLabels {
                            instance_id: s.id.to_string(),
                            name: s.name.clone(),
                            device: d.device.clone(),
                        },
                        d,
                    )
                })
            })
            .collect();
        let disk_counters: [Reading<BlockStats>; 4] = [
            (
                "instance_disk_read_bytes",
                "Bytes the guest read from the disk since its domain started",
                |d| d.read_bytes,
            ),
            (
                "instance_disk_written_bytes",
                "Bytes the guest wrote to the disk since its domain started",
                |d| d.written_bytes,
            ),
            (
                "instance_disk_reads_completed",
                "Read requests the guest made of the disk",
                |d| d.reads,
            ),
            (
                "instance_disk_writes_completed",
                "Write requests the guest made of the disk",
                |d| d.writes,
            ),
        ];
        for (name, help, value) in disk_counters {
            family(e, name, help, MetricType::Counter, &disks, |(labels, d)| {
                Some((labels.clone(), ConstCounter::new(value(d))))
            })?;
        }
        let interfaces: Vec<(InterfaceLabels, &InterfaceStats)> = list
            .iter()
            .flat_map(|s| {
                s.stats.interfaces.iter().map(move |i| {
                    (
                        InterfaceLabels {
                            instance_id: s.id.to_string(),
                            name: s.name.clone(),
                            interface: i.interface.clone(),
                        },
                        i,
                    )
                })
            })
            .collect();
        let nic_counters: [Reading<InterfaceStats>; 8] = [
            (
                "instance_network_receive_bytes",
                "Bytes the guest received on the interface",
                |i| i.receive_bytes,
            ),
            (
                "instance_network_transmit_bytes",
                "Bytes the guest sent on the interface",
                |i| i.transmit_bytes,
            ),
            (
                "instance_network_receive_packets",
                "Packets the guest received on the interface",
                |i| i.receive_packets,
            ),
            (
                "instance_network_transmit_packets",
                "Packets the guest sent on the interface",
                |i| i.transmit_packets,
            ),
            (
                "instance_network_receive_errors",
                "Receive errors on the interface",
                |i| i.receive_errors,
            ),
            (
                "instance_network_transmit_errors",
                "Transmit errors on the interface",
                |i| i.transmit_errors,
            ),
            (
                "instance_network_receive_drops",
                "Packets for the guest dropped on the interface",
                |i| i.receive_drops,
            ),
            (
                "instance_network_transmit_drops",
                "Packets from the guest dropped on the interface",
                |i| i.transmit_drops,
            ),
        ];
        for (name, help, value) in nic_counters {
            family(
                e,
                name,
                help,
                MetricType::Counter,
                &interfaces,
                |(labels, i)| Some((labels.clone(), ConstCounter::new(value(i)))),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
