//! Placement: choose the host for a new instance among the hosts that are up and have room.
//! Hosts that already hold the image in their cache come first (the start needs no download);
//! among those, spread: the host with the most free memory wins, so load evens out.
//! (Anti-affinity and pack policies come with the full scheduler.)

use std::collections::HashSet;

use crate::state::State;

/// Picks a host for an instance of `vcpus` and `memory_mib`, or says why none fits.
pub fn place(
    state: &State,
    up: &HashSet<String>,
    holding: &HashSet<String>,
    vcpus: u32,
    memory_mib: u64,
) -> Result<String, String> {
    let candidates: Vec<_> = state
        .hosts
        .values()
        .filter(|h| up.contains(&h.name))
        .collect();
    if candidates.is_empty() {
        return Err("no host is up".to_owned());
    }
    candidates
        .into_iter()
        .filter(|h| state.fits(h, vcpus, memory_mib))
        .max_by_key(|h| {
            let free = h.memory_mib - state.usage(&h.name).memory_mib;
            (
                holding.contains(&h.name),
                free,
                std::cmp::Reverse(h.name.clone()),
            )
        })
        .map(|h| h.name.clone())
        .ok_or_else(|| format!("no host with {vcpus} vCPU and {memory_mib} MiB free"))
}

#[cfg(test)]
mod tests {
    use stratus_common::api::DomainType;

    use super::*;
    use crate::state::HostRecord;

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

    #[test]
    fn picks_the_up_host_with_most_free_memory() {
        let mut s = State {
            cpu_allocation_ratio_percent: 100,
            ..Default::default()
        };
        for h in [host("a", 4, 2048), host("b", 4, 4096), host("c", 4, 8192)] {
            s.hosts.insert(h.name.clone(), h);
        }
        let up: HashSet<String> = ["a".to_owned(), "b".to_owned()].into();
        let none = HashSet::new();
        assert_eq!(place(&s, &up, &none, 1, 512), Ok("b".into()));
        assert_eq!(
            place(&s, &up, &none, 8, 512),
            Err("no host with 8 vCPU and 512 MiB free".into())
        );
        assert_eq!(
            place(&s, &HashSet::new(), &none, 1, 1),
            Err("no host is up".into())
        );
    }

    #[test]
    fn a_host_holding_the_image_wins_if_it_has_room() {
        let mut s = State {
            cpu_allocation_ratio_percent: 100,
            ..Default::default()
        };
        for h in [host("a", 4, 2048), host("b", 4, 8192)] {
            s.hosts.insert(h.name.clone(), h);
        }
        let up: HashSet<String> = ["a".to_owned(), "b".to_owned()].into();
        let holding: HashSet<String> = ["a".to_owned()].into();
        assert_eq!(
            place(&s, &up, &holding, 1, 512),
            Ok("a".into()),
            "no download needed on a"
        );
        // Without room there, the image is fetched elsewhere.
        assert_eq!(place(&s, &up, &holding, 1, 4096), Ok("b".into()));
    }
}
