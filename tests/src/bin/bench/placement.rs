//! The scheduler at the scale of a large site: one placement among 1,000 hosts holding 20,000
//! instances, in-process (`scheduler::place`, the filters and weighers every creation runs,
//! and apply's re-check of the chosen host). Goal: p99 under 5 ms.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use stratus_controller::scheduler::{self, Request};

const HOSTS: usize = 1_000;

pub fn placement_bench(rounds: usize) -> anyhow::Result<()> {
    let state = crate::snapshot::large_state(HOSTS)?;
    println!(
        "placement: {HOSTS} hosts, {} instances",
        crate::snapshot::INSTANCES
    );
    // A tenth of the hosts hold the image already.
    let holding: HashSet<String> = (0..HOSTS / 10)
        .map(|h| format!("host-{}", h * 10))
        .collect();
    let request = Request {
        vcpus: 1,
        memory_mib: 256,
        holding: &holding,
        preferred: None,
    };
    let mut place = Vec::new();
    let mut recheck = Vec::new();
    for _ in 0..rounds.max(1_000) {
        let started = Instant::now();
        let host = scheduler::place(&state, &request).map_err(|e| anyhow::anyhow!("{e}"))?;
        place.push(started.elapsed());
        let record = &state.hosts[&host];
        let started = Instant::now();
        let refused = scheduler::check(&state, record, 1, 256);
        recheck.push(started.elapsed());
        anyhow::ensure!(refused.is_none(), "the chosen host fails {refused:?}");
    }
    let (_, p99) = crate::report("place among every host", &mut place);
    crate::report("apply's re-check of the host", &mut recheck);
    println!(
        "    goal: p99 < 5 ms: {}",
        if p99 < Duration::from_millis(5) {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}
