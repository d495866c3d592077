//! Placement: choose the host for a new instance, in the manner of Nova's filter scheduler.
//! Filters remove the hosts that cannot take it (down, in maintenance, short of CPU or memory);
//! weighers order the rest: the host named by the request's own preference (next to its first
//! disk) first, then hosts whose cache already holds the image (the start needs no download),
//! then spread (the most free memory), then the name, so the choice is deterministic. When no
//! host is left, the error counts what each filter removed.
//!
//! `place` is pure: it reads only the replicated state and what the request carries, so apply's
//! re-check sees the same hosts the proposer saw.

use std::collections::HashSet;
use std::fmt;

use crate::state::{HostRecord, State};

/// What is being placed.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub vcpus: u32,
    pub memory_mib: u64,
    /// Hosts whose image cache holds the instance's disk.
    pub holding: &'a HashSet<String>,
    /// A host the request would rather have, if it passes the filters.
    pub preferred: Option<&'a str>,
}

/// A reason a host was removed, in the order the filters run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Filter {
    /// Its agent is out of touch.
    Down,
    /// An administrator keeps new instances off it.
    Maintenance,
    /// Not enough vCPUs free (after the site's overcommit ratio).
    Cpu,
    /// Not enough memory free.
    Memory,
}

impl Filter {
    fn describe(self, count: usize) -> String {
        let (one, many) = match self {
            Filter::Down => ("is down", "are down"),
            Filter::Maintenance => ("is in maintenance", "are in maintenance"),
            Filter::Cpu => ("has too few free vCPUs", "have too few free vCPUs"),
            Filter::Memory => ("has too little free memory", "have too little free memory"),
        };
        format!("{count} {}", if count == 1 { one } else { many })
    }
}

/// The first filter `host` fails for an instance of `vcpus` and `memory_mib`, if any: what
/// placement asks of every host, and apply asks again of the host chosen.
pub fn check(state: &State, host: &HostRecord, vcpus: u32, memory_mib: u64) -> Option<Filter> {
    {
        let life = state.host_life(&host.name);
        if !life.up {
            return Some(Filter::Down);
        }
        if life.maintenance.is_some() {
            return Some(Filter::Maintenance);
        }
        let used = state.usage(&host.name);
        let vcpu_cap =
            u64::from(host.vcpus) * u64::from(state.cpu_allocation_ratio_percent.max(100)) / 100;
        if u64::from(used.vcpus) + u64::from(vcpus) > vcpu_cap {
            return Some(Filter::Cpu);
        }
        if used.memory_mib + memory_mib > host.memory_mib {
            return Some(Filter::Memory);
        }
        None
    }
}

/// No host can take the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct NoValidHost {
    pub vcpus: u32,
    pub memory_mib: u64,
    pub hosts: usize,
    /// How many hosts each filter removed.
    pub removed: Vec<(Filter, usize)>,
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
            .map(|(filter, count)| filter.describe(*count))
            .collect();
        write!(f, ": of {} host(s), {}", self.hosts, reasons.join(", "))
    }
}

/// The host for `request`, or why none fits.
pub fn place(state: &State, request: &Request) -> Result<String, NoValidHost> {
    let mut removed: Vec<(Filter, usize)> = Vec::new();
    let mut best: Option<(Weight, &HostRecord)> = None;
    for host in state.hosts.values() {
        if let Some(filter) = check(state, host, request.vcpus, request.memory_mib) {
            match removed.iter_mut().find(|(f, _)| *f == filter) {
                Some((_, count)) => *count += 1,
                None => removed.push((filter, 1)),
            }
            continue;
        }
        let weight = Weight {
            preferred: request.preferred == Some(host.name.as_str()),
            holding: request.holding.contains(&host.name),
            free_memory_mib: host.memory_mib - state.usage(&host.name).memory_mib,
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
                vcpus: request.vcpus,
                memory_mib: request.memory_mib,
                hosts: state.hosts.len(),
                removed,
            })
        }
    }
}

/// How much a host that passed the filters is wanted; compared field by field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Weight {
    preferred: bool,
    holding: bool,
    free_memory_mib: u64,
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

    fn request(vcpus: u32, memory_mib: u64, holding: &HashSet<String>) -> Request<'_> {
        Request {
            vcpus,
            memory_mib,
            holding,
            preferred: None,
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
}
