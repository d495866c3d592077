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
    cpu: Mutex<HashMap<u64, (u32, Instant)>>,
}

impl Usage {
    pub fn record(&self, instance: u64, cpu_percent: u32, at: Instant) {
        let mut cpu = self.cpu.lock().expect("usage lock");
        cpu.insert(instance, (cpu_percent, at));
        cpu.retain(|_, (_, seen)| at.saturating_duration_since(*seen) < FRESH_FOR);
    }

    /// The instance's CPU use if measured within [`FRESH_FOR`] of `now`.
    pub fn cpu_percent(&self, instance: u64, now: Instant) -> Option<u32> {
        let cpu = self.cpu.lock().expect("usage lock");
        cpu.get(&instance)
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
}
