//! The scheduler at the scale of a large site: one placement among 1,000 hosts holding 20,000
//! instances, in-process (`scheduler::place`, the filters and weighers every creation runs,
//! and apply's re-check of the chosen host). Goal: p99 under 5 ms.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use stratus_controller::scheduler::{self, Demand, Request, Strategy};
use stratus_controller::state::{GroupPlacement, GroupPolicy, GroupRecord, HostProfile, State};

const HOSTS: usize = 1_000;

pub fn placement_bench(rounds: usize) -> anyhow::Result<()> {
    let mut state = crate::snapshot::large_state(HOSTS)?;
    println!(
        "placement: {HOSTS} hosts, {} instances",
        crate::snapshot::INSTANCES
    );
    // A tenth of the hosts hold the image already.
    let holding: HashSet<String> = (0..HOSTS / 10)
        .map(|h| format!("host-{}", h * 10))
        .collect();
    let no_labels = BTreeSet::new();
    let plain = Demand {
        vcpus: 1,
        memory_mib: 256,
        disk_gib: 2,
        labels: &no_labels,
        group: None,
    };
    let (_, plain_p99) = measure("", &state, plain, &holding, rounds)?;
    // With rules: half the hosts labelled `ssd`, and an anti-affinity group whose 200 members
    // each run on a host of their own.
    let group = with_rules(&mut state);
    let ssd: BTreeSet<String> = ["ssd".to_owned()].into();
    let ruled = Demand {
        vcpus: 1,
        memory_mib: 256,
        disk_gib: 2,
        labels: &ssd,
        group: Some(GroupPlacement {
            group: &group,
            instance: None,
        }),
    };
    let (_, ruled_p99) = measure(
        " (label, anti-affinity group of 200)",
        &state,
        ruled,
        &holding,
        rounds,
    )?;
    let p99 = plain_p99.max(ruled_p99);
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

/// Places `demand` `rounds` times (at least 1,000) and re-checks the chosen host; prints both.
fn measure(
    what: &str,
    state: &State,
    demand: Demand,
    holding: &HashSet<String>,
    rounds: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let request = Request {
        demand,
        holding,
        preferred: None,
        strategy: Strategy::Spread,
    };
    let mut place = Vec::new();
    let mut recheck = Vec::new();
    for _ in 0..rounds.max(1_000) {
        let started = Instant::now();
        let host = scheduler::place(state, &request).map_err(|e| anyhow::anyhow!("{e}"))?;
        place.push(started.elapsed());
        let record = &state.hosts[&host];
        let started = Instant::now();
        let refused = scheduler::check(state, record, &demand);
        recheck.push(started.elapsed());
        anyhow::ensure!(refused.is_none(), "the chosen host fails {refused:?}");
    }
    let figures = crate::report(&format!("place among every host{what}"), &mut place);
    crate::report(&format!("apply's re-check of the host{what}"), &mut recheck);
    Ok(figures)
}

/// Labels every other host `ssd` and makes an anti-affinity group of one instance on each of
/// the first 200 hosts.
fn with_rules(state: &mut State) -> GroupRecord {
    let names: Vec<String> = state.hosts.keys().cloned().collect();
    for name in names.iter().step_by(2) {
        let profile = HostProfile {
            labels: ["ssd".to_owned()].into(),
            ..HostProfile::default()
        };
        state.host_profiles.insert(name.clone(), profile);
    }
    let mut seen = BTreeSet::new();
    let members = state
        .instances
        .values()
        .filter(|i| i.holds_capacity())
        .filter(|i| i.host.as_ref().is_some_and(|h| seen.insert(h.clone())))
        .take(200)
        .map(|i| i.id)
        .collect();
    GroupRecord {
        name: "spread-out".into(),
        owner: "bench".into(),
        policy: GroupPolicy::AntiAffinity,
        created_ms: 0,
        members,
    }
}
