//! A host's own use over time, as its agent measures it ([`HostSample`], every
//! [`SAMPLE_SECS`]) and both keep it ([`HostHistory`]): every sample of the last hour, and a
//! point per [`DAY_STEP_SECS`] for the last day with the average and the maximum of its
//! samples (as Proxmox's node graphs show them). The agent keeps its own history so that a
//! controller which has none for it (restarted, or newly leader) can be sent the whole of it.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// How often an agent measures its host.
pub const SAMPLE_SECS: u64 = 10;
/// The span of the hour graph, every sample.
pub const HOUR_MS: u64 = 3600 * 1000;
/// The step of the day graph.
pub const DAY_STEP_SECS: u64 = 300;
/// The span of the day graph.
pub const DAY_MS: u64 = 24 * HOUR_MS;

/// One measurement of a host's own use.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostSample {
    /// When it was taken, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Busy share of all the host's CPUs since the previous sample, percent (0 to 100).
    pub cpu_percent: f32,
    /// The one-minute load average.
    pub load1: f32,
    /// Memory in use (total less what the kernel says is available).
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    /// The file system of the agent's state (image cache, instances' overlays).
    pub disk_used_bytes: u64,
    pub disk_total_bytes: u64,
    /// Bytes per second received and sent on the host's physical interfaces since the
    /// previous sample.
    pub net_rx_bytes_per_sec: u64,
    pub net_tx_bytes_per_sec: u64,
    /// Guests running.
    pub instances: u32,
    /// The image cache's hits and misses since the agent started.
    pub cache_hits: u64,
    pub cache_misses: u64,
}

/// A point of a graph: the average and the maximum of the samples of its step (the same
/// sample twice on the hour graph). `avg.at_ms` is the step's start.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UsagePoint {
    pub avg: HostSample,
    pub max: HostSample,
}

/// The samples of the day graph's step under way.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Step {
    start_ms: u64,
    count: u32,
    /// Sums of each figure (as f64, so nothing overflows).
    sum: [f64; FIGURES],
    max: HostSample,
}

const FIGURES: usize = 10;

/// A sample's figures, in one order, to sum and compare them alike.
fn figures(s: &HostSample) -> [f64; FIGURES] {
    [
        f64::from(s.cpu_percent),
        f64::from(s.load1),
        s.memory_used_bytes as f64,
        s.memory_total_bytes as f64,
        s.disk_used_bytes as f64,
        s.disk_total_bytes as f64,
        s.net_rx_bytes_per_sec as f64,
        s.net_tx_bytes_per_sec as f64,
        f64::from(s.instances),
        (s.cache_hits + s.cache_misses) as f64,
    ]
}

fn max_of(a: &HostSample, b: &HostSample) -> HostSample {
    HostSample {
        at_ms: a.at_ms.max(b.at_ms),
        cpu_percent: a.cpu_percent.max(b.cpu_percent),
        load1: a.load1.max(b.load1),
        memory_used_bytes: a.memory_used_bytes.max(b.memory_used_bytes),
        memory_total_bytes: a.memory_total_bytes.max(b.memory_total_bytes),
        disk_used_bytes: a.disk_used_bytes.max(b.disk_used_bytes),
        disk_total_bytes: a.disk_total_bytes.max(b.disk_total_bytes),
        net_rx_bytes_per_sec: a.net_rx_bytes_per_sec.max(b.net_rx_bytes_per_sec),
        net_tx_bytes_per_sec: a.net_tx_bytes_per_sec.max(b.net_tx_bytes_per_sec),
        instances: a.instances.max(b.instances),
        cache_hits: a.cache_hits.max(b.cache_hits),
        cache_misses: a.cache_misses.max(b.cache_misses),
    }
}

impl Step {
    fn new(sample: &HostSample) -> Self {
        Self {
            start_ms: sample.at_ms - sample.at_ms % (DAY_STEP_SECS * 1000),
            count: 1,
            sum: figures(sample),
            max: *sample,
        }
    }

    fn add(&mut self, sample: &HostSample) {
        self.count += 1;
        for (sum, figure) in self.sum.iter_mut().zip(figures(sample)) {
            *sum += figure;
        }
        self.max = max_of(&self.max, sample);
    }

    fn point(&self) -> UsagePoint {
        let n = f64::from(self.count.max(1));
        let avg = |i: usize| self.sum[i] / n;
        UsagePoint {
            avg: HostSample {
                at_ms: self.start_ms,
                cpu_percent: avg(0) as f32,
                load1: avg(1) as f32,
                memory_used_bytes: avg(2).round() as u64,
                memory_total_bytes: avg(3).round() as u64,
                disk_used_bytes: avg(4).round() as u64,
                disk_total_bytes: avg(5).round() as u64,
                net_rx_bytes_per_sec: avg(6).round() as u64,
                net_tx_bytes_per_sec: avg(7).round() as u64,
                instances: avg(8).round() as u32,
                // Counters: the step's last (largest) value.
                cache_hits: self.max.cache_hits,
                cache_misses: self.max.cache_misses,
            },
            max: self.max,
        }
    }
}

/// A host's samples of the last hour and the day's points.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostHistory {
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<HostSample>))]
    hour: VecDeque<HostSample>,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<UsagePoint>))]
    day: VecDeque<UsagePoint>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    step: Option<Step>,
}

/// Which graph.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Range {
    #[default]
    Hour,
    Day,
}

/// `GET /api/v1/hosts/{name}/usage`: one graph's points, oldest first.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostUsage {
    pub host: String,
    pub range: Range,
    /// Seconds between points.
    pub step_secs: u64,
    pub points: Vec<UsagePoint>,
}

impl HostHistory {
    /// Takes a new sample (one older than the latest is ignored: samples come in order).
    pub fn record(&mut self, sample: HostSample) {
        if self
            .hour
            .back()
            .is_some_and(|last| last.at_ms >= sample.at_ms)
        {
            return;
        }
        self.hour.push_back(sample);
        let hour_from = sample.at_ms.saturating_sub(HOUR_MS);
        while self.hour.front().is_some_and(|s| s.at_ms < hour_from) {
            self.hour.pop_front();
        }
        let step_start = sample.at_ms - sample.at_ms % (DAY_STEP_SECS * 1000);
        match &mut self.step {
            Some(step) if step.start_ms == step_start => step.add(&sample),
            _ => {
                if let Some(done) = self.step.take() {
                    self.day.push_back(done.point());
                }
                self.step = Some(Step::new(&sample));
            }
        }
        let day_from = sample.at_ms.saturating_sub(DAY_MS);
        while self.day.front().is_some_and(|p| p.avg.at_ms < day_from) {
            self.day.pop_front();
        }
    }

    /// The latest sample.
    pub fn latest(&self) -> Option<&HostSample> {
        self.hour.back()
    }

    /// One graph's points, oldest first (the day's includes its step under way).
    pub fn points(&self, range: Range) -> Vec<UsagePoint> {
        match range {
            Range::Hour => self
                .hour
                .iter()
                .map(|s| UsagePoint { avg: *s, max: *s })
                .collect(),
            Range::Day => self
                .day
                .iter()
                .copied()
                .chain(self.step.as_ref().map(Step::point))
                .collect(),
        }
    }

    /// The answer for `host`'s graph over `range`.
    pub fn usage(&self, host: &str, range: Range) -> HostUsage {
        HostUsage {
            host: host.to_owned(),
            range,
            step_secs: match range {
                Range::Hour => SAMPLE_SECS,
                Range::Day => DAY_STEP_SECS,
            },
            points: self.points(range),
        }
    }

    /// Whether it holds no more than an hour of samples every second and a day of points:
    /// what a controller accepts from a host.
    pub fn is_bounded(&self) -> bool {
        self.hour.len() as u64 <= HOUR_MS / 1000 + 1
            && self.day.len() as u64 <= DAY_MS / 1000 / DAY_STEP_SECS + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_secs: u64, cpu: f32) -> HostSample {
        HostSample {
            at_ms: at_secs * 1000,
            cpu_percent: cpu,
            memory_total_bytes: 1000,
            memory_used_bytes: (cpu * 10.0) as u64,
            instances: 1,
            ..HostSample::default()
        }
    }

    #[test]
    fn the_hour_keeps_every_sample_of_the_last_hour() {
        let mut history = HostHistory::default();
        let t0 = 1_800_000_000;
        for k in 0..400 {
            history.record(sample(t0 + k * SAMPLE_SECS, k as f32));
        }
        let hour = history.points(Range::Hour);
        // The last hour: 3600 s at 10 s, both ends included.
        assert_eq!(hour.len(), 361);
        assert_eq!(hour.last().unwrap().avg.cpu_percent, 399.0);
        assert_eq!(hour[0].avg.at_ms, (t0 + 39 * SAMPLE_SECS) * 1000);
        // An older sample than the latest is ignored.
        history.record(sample(t0, 5.0));
        assert_eq!(history.points(Range::Hour).len(), 361);
    }

    #[test]
    fn a_day_point_is_the_average_and_the_maximum_of_its_step() {
        let mut history = HostHistory::default();
        // Aligned on a step: 30 samples in the first step, then one in the next.
        let t0 = 1_800_000_000 - 1_800_000_000 % DAY_STEP_SECS;
        for k in 0..30 {
            history.record(sample(
                t0 + k * SAMPLE_SECS,
                if k == 7 { 90.0 } else { 10.0 },
            ));
        }
        history.record(sample(t0 + DAY_STEP_SECS, 50.0));
        let day = history.points(Range::Day);
        assert_eq!(day.len(), 2, "{day:?}");
        assert_eq!(day[0].avg.at_ms, t0 * 1000);
        assert!((day[0].avg.cpu_percent - (29.0 * 10.0 + 90.0) / 30.0).abs() < 1e-4);
        assert_eq!(day[0].max.cpu_percent, 90.0);
        assert_eq!(day[0].max.memory_used_bytes, 900);
        // The step under way is shown as it stands.
        assert_eq!(day[1].avg.cpu_percent, 50.0);
        assert_eq!(day[1].avg.at_ms, (t0 + DAY_STEP_SECS) * 1000);
    }

    #[test]
    fn the_day_keeps_a_day_and_travels_whole() {
        let mut history = HostHistory::default();
        let t0 = 1_800_000_000;
        // Two days at one sample a minute.
        for k in 0..(2 * 24 * 60) {
            history.record(sample(t0 + k * 60, 1.0));
        }
        let day = history.points(Range::Day);
        assert!(day.len() <= 289 && day.len() >= 288, "{}", day.len());
        assert!(history.is_bounded());
        let json = serde_json::to_string(&history).unwrap();
        let back: HostHistory = serde_json::from_str(&json).unwrap();
        assert_eq!(back, history);
    }
}
