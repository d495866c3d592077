//! The hosts' own use over time ([`HostHistory`]: the last hour's samples and the day's
//! points), in memory where the hosts push it (the leader). A node that has none for a host
//! asks the host for its whole kept history once, so the graphs survive a controller restart
//! or a change of leader.

use std::collections::HashMap;
use std::sync::Mutex;

use stratus_common::usage::{HostHistory, HostSample, HostUsage, Range};

#[derive(Default)]
pub struct HostUsages {
    hosts: Mutex<HashMap<String, HostHistory>>,
}

impl HostUsages {
    /// Takes what `host` pushed: its whole history (replacing what this node had) and a new
    /// sample. Returns whether to ask the host for its history (this node has none yet).
    pub fn record(
        &self,
        host: &str,
        sample: Option<HostSample>,
        history: Option<HostHistory>,
    ) -> bool {
        let mut hosts = self.hosts.lock().expect("host usage lock");
        let known = hosts.contains_key(host);
        let entry = hosts.entry(host.to_owned()).or_default();
        let sent_history = history.is_some();
        if let Some(history) = history {
            *entry = history;
        }
        if let Some(sample) = sample {
            entry.record(sample);
        }
        !known && !sent_history
    }

    /// `host`'s graph over `range` (no points when it never pushed its use here).
    pub fn usage(&self, host: &str, range: Range) -> HostUsage {
        let hosts = self.hosts.lock().expect("host usage lock");
        hosts
            .get(host)
            .map(|h| h.usage(host, range))
            .unwrap_or_else(|| HostHistory::default().usage(host, range))
    }

    /// Every host's latest sample.
    pub fn latest(&self) -> Vec<(String, HostSample)> {
        let hosts = self.hosts.lock().expect("host usage lock");
        let mut latest: Vec<(String, HostSample)> = hosts
            .iter()
            .filter_map(|(name, h)| h.latest().map(|s| (name.clone(), *s)))
            .collect();
        latest.sort_by(|a, b| a.0.cmp(&b.0));
        latest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_secs: u64) -> HostSample {
        HostSample {
            at_ms: at_secs * 1000,
            cpu_percent: 5.0,
            ..HostSample::default()
        }
    }

    #[test]
    fn a_node_without_a_hosts_history_asks_for_it_once_and_takes_it_whole() {
        let usages = HostUsages::default();
        assert!(usages.record("h1", Some(sample(100)), None));
        assert!(!usages.record("h1", Some(sample(110)), None));
        assert_eq!(usages.usage("h1", Range::Hour).points.len(), 2);
        // The host's kept history, older than what this node saw, replaces it.
        let mut kept = HostHistory::default();
        for t in [60, 70, 80, 90, 100, 110] {
            kept.record(sample(t));
        }
        assert!(!usages.record("h1", Some(sample(120)), Some(kept)));
        let hour = usages.usage("h1", Range::Hour);
        assert_eq!(hour.points.len(), 7);
        assert_eq!(hour.points[0].avg.at_ms, 60_000);
        assert_eq!(usages.latest(), vec![("h1".to_owned(), sample(120))]);
        assert!(usages.usage("h2", Range::Day).points.is_empty());
    }
}
