//! Placement: choose the host for a new instance, in the manner of Nova's filter scheduler.
//! Filters remove the hosts that cannot take it: down, in maintenance, not a compute host,
//! without a label the instance requires, breaking its server group's policy (anti-affinity:
//! a host already running one of the group; affinity: any host but the one the group runs on),
//! short of CPU (after the site's overcommit ratio) or memory. Weighers order the rest: the
//! host named by the request's own preference (next to its first disk) first, then hosts whose
//! cache already holds the image (the start needs no download), then the site's strategy
//! (spread: the most free memory; pack: the least), then the name, so the choice is
//! deterministic. When no host is left, the error counts what each filter removed.
//!
//! `place` is pure: it reads only the replicated state and what the request carries, so apply's
//! re-check (`check`) sees the same hosts the proposer saw.

use std::collections::{BTreeSet, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use stratus_common::api::GroupPolicy;

use crate::state::{GroupPlacement, HostRecord, InstanceRecord, State};

/// What an instance asks of its host, whoever places it (the scheduler or apply's re-check).
#[derive(Debug, Clone, Copy)]
pub struct Demand<'a> {
    pub vcpus: u32,
    pub memory_mib: u64,
    /// Local disk its type allows it to fill.
    pub disk_gib: u64,
    /// Labels the host must carry.
    pub labels: &'a BTreeSet<String>,
    /// Its server group, if any.
    pub group: Option<GroupPlacement<'a>>,
}

/// How hosts that can all take an instance are ordered: a site setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// The host with the most free memory: load spread evenly, room left on every host.
    #[default]
    Spread,
    /// The host with the least free memory that fits: hosts filled one by one, whole hosts
    /// left free (for large instances, or to be powered down).
    Pack,
}

/// The site's placement settings (from the controller's configuration).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SitePlacement {
    pub strategy: Strategy,
    /// Every instance created now may be evacuated, not only those run with `evacuate`.
    pub evacuate: bool,
}

/// What is being placed.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub demand: Demand<'a>,
    /// Hosts whose image cache holds the instance's disk.
    pub holding: &'a HashSet<String>,
    /// A host the request would rather have, if it passes the filters.
    pub preferred: Option<&'a str>,
    pub strategy: Strategy,
}

/// A reason a host was removed, in the order the filters run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Filter {
    /// Its agent is out of touch.
    Down,
    /// An administrator keeps new instances off it.
    Maintenance,
    /// It is not a compute host (storage only).
    Role,
    /// It lacks a label the instance requires.
    Labels,
    /// It already runs an instance of the instance's anti-affinity group.
    AntiAffinity,
    /// The instance's affinity group runs on another host.
    Affinity,
    /// Not enough vCPUs free (after the site's overcommit ratio).
    Cpu,
    /// Not enough memory free.
    Memory,
    /// Not enough local disk free (by the types of the instances placed there).
    Disk,
}

impl Filter {
    fn describe(self, count: usize, cause: &NoValidHost) -> String {
        let plural = count != 1;
        let verb = |one: &str, many: &str| {
            if plural {
                many.to_owned()
            } else {
                one.to_owned()
            }
        };
        let text = match self {
            Filter::Down => verb("is down", "are down"),
            Filter::Maintenance => verb("is in maintenance", "are in maintenance"),
            Filter::Role => verb("is not a compute host", "are not compute hosts"),
            Filter::Labels => format!(
                "{} (labels filter: {})",
                verb("lacks a required label", "lack a required label"),
                cause.labels.join(", ")
            ),
            Filter::AntiAffinity => format!(
                "{} of anti-affinity group {} (anti-affinity filter)",
                verb("already runs an instance", "already run an instance"),
                cause.group.as_deref().unwrap_or_default()
            ),
            Filter::Affinity => format!(
                "{} (affinity filter)",
                match cause.group.as_deref() {
                    Some(group) => format!(
                        "{} not where affinity group {group} runs",
                        verb("is", "are")
                    ),
                    None => verb(
                        "is not where its group runs",
                        "are not where its group runs"
                    ),
                }
            ),
            Filter::Cpu => verb("has too few free vCPUs", "have too few free vCPUs"),
            Filter::Memory => verb("has too little free memory", "have too little free memory"),
            Filter::Disk => format!(
                "{} (disk filter: {} GiB asked)",
                verb(
                    "has too little free local disk",
                    "have too little free local disk"
                ),
                cause.disk_gib
            ),
        };
        format!("{count} {text}")
    }
}

/// The first filter `host` fails for `demand`, if any: what placement asks of every host, and
/// apply asks again of the host chosen.
pub fn check(state: &State, host: &HostRecord, demand: &Demand) -> Option<Filter> {
    check_with(state, host, demand, &member_hosts(state, demand))
}

/// The hosts the demand's group runs on (empty without a group).
fn member_hosts(state: &State, demand: &Demand) -> BTreeSet<String> {
    demand
        .group
        .map(|group| group.member_hosts(state))
        .unwrap_or_default()
}

fn check_with(
    state: &State,
    host: &HostRecord,
    demand: &Demand,
    member_hosts: &BTreeSet<String>,
) -> Option<Filter> {
    let life = state.host_life(&host.name);
    if !life.up {
        return Some(Filter::Down);
    }
    if life.maintenance.is_some() {
        return Some(Filter::Maintenance);
    }
    let profile = state.host_profile(&host.name);
    if !profile.compute {
        return Some(Filter::Role);
    }
    if !demand.labels.is_subset(&profile.labels) {
        return Some(Filter::Labels);
    }
    if let Some(group) = &demand.group {
        match group.group.policy {
            GroupPolicy::AntiAffinity if member_hosts.contains(&host.name) => {
                return Some(Filter::AntiAffinity);
            }
            GroupPolicy::Affinity
                if !member_hosts.is_empty() && !member_hosts.contains(&host.name) =>
            {
                return Some(Filter::Affinity);
            }
            _ => {}
        }
    }
    let used = state.usage(&host.name);
    let vcpu_cap =
        u64::from(host.vcpus) * u64::from(state.cpu_allocation_ratio_percent.max(100)) / 100;
    if u64::from(used.vcpus) + u64::from(demand.vcpus) > vcpu_cap {
        return Some(Filter::Cpu);
    }
    if used.memory_mib + demand.memory_mib > host.memory_mib {
        return Some(Filter::Memory);
    }
    if used.disk_gib + demand.disk_gib > host.disk_gib {
        return Some(Filter::Disk);
    }
    None
}

/// No host can take the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct NoValidHost {
    pub vcpus: u32,
    pub memory_mib: u64,
    /// The local disk asked, for the disk filter's message.
    pub disk_gib: u64,
    pub hosts: usize,
    /// How many hosts each filter removed.
    pub removed: Vec<(Filter, usize)>,
    /// The labels the request required, for the message.
    pub labels: Vec<String>,
    /// The request's server group, for the message.
    pub group: Option<String>,
}

impl fmt::Display for NoValidHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no host can take {} vCPU and {} MiB",
            self.vcpus, self.memory_mib
        )?;
        if self.hosts == 0 {
            return f.write_str(": no host is registered");
        }
        let reasons: Vec<String> = self
            .removed
            .iter()
            .map(|(filter, count)| filter.describe(*count, self))
            .collect();
        write!(f, ": of {} host(s), {}", self.hosts, reasons.join(", "))
    }
}

/// The host for `request`, or why none fits.
pub fn place(state: &State, request: &Request) -> Result<String, NoValidHost> {
    let demand = &request.demand;
    let member_hosts = member_hosts(state, demand);
    let mut removed: Vec<(Filter, usize)> = Vec::new();
    let mut best: Option<(Weight, &HostRecord)> = None;
    for host in state.hosts.values() {
        if let Some(filter) = check_with(state, host, demand, &member_hosts) {
            match removed.iter_mut().find(|(f, _)| *f == filter) {
                Some((_, count)) => *count += 1,
                None => removed.push((filter, 1)),
            }
            continue;
        }
        let free_memory_mib = host.memory_mib - state.usage(&host.name).memory_mib;
        let weight = Weight {
            preferred: request.preferred == Some(host.name.as_str()),
            holding: request.holding.contains(&host.name),
            strategy: match request.strategy {
                Strategy::Spread => free_memory_mib,
                Strategy::Pack => u64::MAX - free_memory_mib,
            },
        };
        // Ties go to the first name, as the hosts come in name order.
        if best.as_ref().is_none_or(|(w, _)| weight > *w) {
            best = Some((weight, host));
        }
    }
    match best {
        Some((_, host)) => Ok(host.name.clone()),
        None => {
            removed.sort();
            Err(NoValidHost {
                vcpus: demand.vcpus,
                memory_mib: demand.memory_mib,
                disk_gib: demand.disk_gib,
                hosts: state.hosts.len(),
                removed,
                labels: demand.labels.iter().cloned().collect(),
                group: demand.group.map(|g| g.group.name.clone()),
            })
        }
    }
}

/// Where existing instance `instance` would go now (placing it again): the same demand, rules
/// and strategy as at its creation; its own place does not count against its group.
pub fn place_again(
    state: &State,
    instance: &InstanceRecord,
    holding: &HashSet<String>,
    strategy: Strategy,
) -> Result<String, NoValidHost> {
    let rules = state.placement_rules(instance.id);
    // A group deleted meanwhile binds nothing any more.
    let group = state
        .group_placement(&instance.owner, rules, Some(instance.id))
        .ok()
        .flatten();
    let request = Request {
        demand: Demand {
            vcpus: instance.vcpus,
            memory_mib: instance.memory_mib,
            disk_gib: crate::state::type_disk_gib(&instance.instance_type),
            labels: &rules.labels,
            group,
        },
        holding,
        preferred: None,
        strategy,
    };
    place(state, &request)
}

/// How much a host that passed the filters is wanted; compared field by field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Weight {
    preferred: bool,
    holding: bool,
    /// Higher is better: free memory (spread) or its complement (pack).
    strategy: u64,
}

#[cfg(test)]
mod tests {
    use stratus_common::api::DomainType;

    use super::*;
    use crate::state::{Command, HostLife, Maintenance};

    fn host(name: &str, vcpus: u32, memory_mib: u64) -> HostRecord {
        HostRecord {
            name: name.into(),
            vcpus,
            memory_mib,
            disk_gib: 10,
            domain_type: DomainType::Qemu,
            arch: "x86_64".into(),
            hypervisor: "QEMU".into(),
            registered_ms: 0,
            volume_pool_gib: None,
        }
    }

    fn site(hosts: &[HostRecord]) -> State {
        let mut s = State {
            cpu_allocation_ratio_percent: 100,
            ..Default::default()
        };
        for h in hosts {
            s.hosts.insert(h.name.clone(), h.clone());
        }
        s
    }

    static NO_LABELS: BTreeSet<String> = BTreeSet::new();

    fn demand(vcpus: u32, memory_mib: u64) -> Demand<'static> {
        Demand {
            vcpus,
            memory_mib,
            disk_gib: 1,
            labels: &NO_LABELS,
            group: None,
        }
    }

    fn request(vcpus: u32, memory_mib: u64, holding: &HashSet<String>) -> Request<'_> {
        Request {
            demand: demand(vcpus, memory_mib),
            holding,
            preferred: None,
            strategy: Strategy::Spread,
        }
    }

    #[test]
    fn spreads_to_the_host_with_most_free_memory_among_those_up_and_in_service() {
        let mut s = site(&[
            host("a", 4, 2048),
            host("b", 4, 4096),
            host("c", 4, 8192),
            host("d", 4, 16384),
        ]);
        s.apply(Command::HostContact {
            host: "c".into(),
            up: false,
            at_ms: 1,
        })
        .unwrap();
        s.host_life.insert(
            "d".into(),
            HostLife {
                maintenance: Some(Maintenance {
                    reason: None,
                    since_ms: 1,
                }),
                ..HostLife::default()
            },
        );
        let none = HashSet::new();
        assert_eq!(place(&s, &request(1, 512, &none)), Ok("b".into()));
        let err = place(&s, &request(8, 512, &none)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no host can take 8 vCPU and 512 MiB: of 4 host(s), 1 is down, 1 is in \
             maintenance, 2 have too few free vCPUs"
        );
        let err = place(&s, &request(1, 5000, &none)).unwrap_err();
        assert_eq!(
            err.removed,
            [
                (Filter::Down, 1),
                (Filter::Maintenance, 1),
                (Filter::Memory, 2)
            ]
        );
        assert_eq!(
            place(&State::default(), &request(1, 1, &none))
                .unwrap_err()
                .to_string(),
            "no host can take 1 vCPU and 1 MiB: no host is registered"
        );
    }

    #[test]
    fn the_preferred_host_then_one_holding_the_image_win_if_they_have_room() {
        let s = site(&[host("a", 4, 2048), host("b", 4, 8192), host("c", 4, 4096)]);
        let holding: HashSet<String> = ["a".to_owned()].into();
        assert_eq!(
            place(&s, &request(1, 512, &holding)),
            Ok("a".into()),
            "no download needed on a"
        );
        // Without room there, the image is fetched elsewhere.
        assert_eq!(place(&s, &request(1, 4096, &holding)), Ok("b".into()));
        let near_disk = Request {
            preferred: Some("c"),
            ..request(1, 512, &holding)
        };
        assert_eq!(place(&s, &near_disk), Ok("c".into()));
    }

    #[test]
    fn overcommit_counts_vcpus_by_the_site_ratio() {
        let mut s = site(&[host("a", 2, 8192)]);
        s.cpu_allocation_ratio_percent = 200;
        let none = HashSet::new();
        assert_eq!(place(&s, &request(4, 512, &none)), Ok("a".into()));
        assert_eq!(
            place(&s, &request(5, 512, &none)).unwrap_err().removed,
            [(Filter::Cpu, 1)]
        );
    }

    #[test]
    fn pack_fills_the_fullest_host_that_fits_first() {
        let s = site(&[host("a", 4, 2048), host("b", 4, 8192), host("c", 4, 4096)]);
        let none = HashSet::new();
        let pack = |memory_mib| Request {
            strategy: Strategy::Pack,
            ..request(1, memory_mib, &none)
        };
        assert_eq!(place(&s, &pack(512)), Ok("a".into()));
        assert_eq!(place(&s, &pack(4096)), Ok("c".into()), "a is too small");
        assert_eq!(place(&s, &request(1, 512, &none)), Ok("b".into()), "spread");
    }
}
