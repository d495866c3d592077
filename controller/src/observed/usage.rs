//! The guests' recent CPU use as their hosts last measured it, in memory only; a figure older
//! than [`FRESH_FOR`] is not shown (the host stopped measuring: the guest stopped, or the host
//! pushes to another node now).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a measurement stands.
pub const FRESH_FOR: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct Usage {
    cpu: Mutex<Measured>,
}

#[derive(Default)]
struct Measured {
    by_instance: HashMap<u64, (u32, Instant)>,
    /// When stale figures were last dropped: a sweep of every instance runs at most once per
    /// [`FRESH_FOR`], not on every sample (at a thousand hosts pushing every few seconds, the
    /// sweep per sample took most of the controller's CPU).
    swept: Option<Instant>,
}

impl Usage {
    pub fn record(&self, instance: u64, cpu_percent: u32, at: Instant) {
        let mut cpu = self.cpu.lock().expect("usage lock");
        cpu.by_instance.insert(instance, (cpu_percent, at));
        if cpu
            .swept
            .is_none_or(|swept| at.saturating_duration_since(swept) >= FRESH_FOR)
        {
            cpu.by_instance
                .retain(|_, (_, seen)| at.saturating_duration_since(*seen) < FRESH_FOR);
            cpu.swept = Some(at);
        }
    }

    /// How many instances have a figure kept (fresh or not yet swept).
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.cpu.lock().expect("usage lock").by_instance.len()
    }

    /// The instance's CPU use if measured within [`FRESH_FOR`] of `now`.
    pub fn cpu_percent(&self, instance: u64, now: Instant) -> Option<u32> {
        let cpu = self.cpu.lock().expect("usage lock");
        cpu.by_instance
            .get(&instance)
            .filter(|(_, seen)| now.saturating_duration_since(*seen) < FRESH_FOR)
            .map(|(percent, _)| *percent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_measurement_stands_for_a_while_then_goes() {
        let usage = Usage::default();
        let t0 = Instant::now();
        usage.record(1, 42, t0);
        assert_eq!(usage.cpu_percent(1, t0 + Duration::from_secs(5)), Some(42));
        assert_eq!(usage.cpu_percent(1, t0 + FRESH_FOR), None);
        assert_eq!(usage.cpu_percent(2, t0), None);
    }

    #[test]
    fn stale_figures_are_dropped_by_a_sweep_at_most_once_per_freshness_period() {
        let usage = Usage::default();
        let t0 = Instant::now();
        usage.record(1, 10, t0);
        usage.record(2, 20, t0 + Duration::from_secs(5));
        // Within the period: no sweep, instance 1's figure is kept though not shown later.
        usage.record(3, 30, t0 + FRESH_FOR - Duration::from_secs(1));
        assert_eq!(usage.kept(), 3);
        // A period after the last sweep, the stale ones go.
        usage.record(3, 31, t0 + FRESH_FOR + Duration::from_secs(1));
        assert_eq!(usage.kept(), 2, "instance 1's figure is dropped");
        assert_eq!(
            usage.cpu_percent(3, t0 + FRESH_FOR + Duration::from_secs(1)),
            Some(31)
        );
    }
}
