//! IP address management, part of the replicated state: the site networks and which instance
//! holds which address. Allocation is deterministic (the lowest free host address, skipping the
//! gateway), so every replica applying the same commands leases the same addresses.
//!
//! The lowest free address comes from each network's free ranges, kept beside the leases:
//! finding it by walking the network from its first address past every lease made one creation
//! cost O(leases). The ranges are derived from the leases and the network alone: neither stored
//! nor compared, and rebuilt whenever an [`Ipam`] is made from its parts (a snapshot, a decoded
//! state).

use std::collections::{btree_map, BTreeMap};
use std::net::Ipv4Addr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use stratus_common::api::CreateNetwork;
use stratus_common::network::{mac_from_ip, validate_network, Ipv4Cidr, NicSpec};

/// A site network, as defined (validated and in canonical form) by the site's configuration or
/// an administrator.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkRecord {
    pub name: String,
    pub cidr: String,
    pub gateway: String,
    pub dns: Vec<String>,
    pub bridge: String,
    pub vlan: Option<u16>,
}

impl NetworkRecord {
    /// A record from a definition, which must validate (its addresses are written canonically).
    pub fn from_definition(definition: &CreateNetwork) -> Result<Self, IpamError> {
        let valid =
            validate_network(definition).map_err(|e| IpamError::InvalidNetwork(e.to_string()))?;
        let canonical = valid.canonical(definition);
        Ok(Self {
            name: canonical.name,
            cidr: canonical.cidr,
            gateway: canonical.gateway,
            dns: canonical.dns,
            bridge: canonical.bridge,
            vlan: canonical.vlan,
        })
    }

    fn parsed(&self) -> Result<(Ipv4Cidr, Ipv4Addr), IpamError> {
        let invalid = || IpamError::InvalidNetwork(format!("network {} is malformed", self.name));
        let cidr = Ipv4Cidr::parse("cidr", &self.cidr).map_err(|_| invalid())?;
        let gateway = self.gateway.parse().map_err(|_| invalid())?;
        Ok((cidr, gateway))
    }

    /// Host addresses that can be leased: all but the gateway.
    fn capacity(&self) -> u64 {
        self.parsed().map_or(0, |(cidr, gateway)| {
            cidr.host_count() - u64::from(cidr.is_host(gateway))
        })
    }
}

/// An instance's interface on a site network: the address it leases and the MAC derived from it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NicRecord {
    pub network: String,
    pub ip: Ipv4Addr,
    pub mac: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("{0}")]
    InvalidNetwork(String),
    #[error("network {0} already exists")]
    NetworkExists(String),
    #[error("network {name} overlaps network {other} ({cidr})")]
    Overlaps {
        name: String,
        other: String,
        cidr: String,
    },
    #[error("unknown network {0}")]
    UnknownNetwork(String),
    #[error("network {name} has no free address ({used} in use, gateway included)")]
    Exhausted { name: String, used: u64 },
}

/// Network name -> leased address -> the instance holding it.
pub(crate) type Leases = BTreeMap<String, BTreeMap<Ipv4Addr, u64>>;

/// The networks and their leases.
#[derive(Debug, Clone, Default)]
pub struct Ipam {
    networks: BTreeMap<String, NetworkRecord>,
    leases: Leases,
    /// Network name -> its free host addresses (derived from `networks` and `leases`).
    free: BTreeMap<String, FreeRanges>,
}

/// The free host addresses of one network, as disjoint ranges: first address -> last address
/// (inclusive), both as `u32`. Adjacent ranges are always merged, so the map stays as small as
/// the gaps between leases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FreeRanges(BTreeMap<u32, u32>);

impl FreeRanges {
    /// The host addresses of `record` that are neither its gateway nor in `leased`. A malformed
    /// record has none (allocating from it fails on parsing first).
    fn of(record: &NetworkRecord, leased: Option<&BTreeMap<Ipv4Addr, u64>>) -> Self {
        let Ok((cidr, gateway)) = record.parsed() else {
            return Self::default();
        };
        let Some(first) = cidr.hosts().next().map(u32::from) else {
            return Self::default();
        };
        let last = first + (cidr.host_count() - 1) as u32;
        let mut free = Self::default();
        free.0.insert(first, last);
        free.take(u32::from(gateway));
        for ip in leased.into_iter().flat_map(BTreeMap::keys) {
            free.take(u32::from(*ip));
        }
        free
    }

    fn lowest(&self) -> Option<Ipv4Addr> {
        self.0.keys().next().map(|&ip| Ipv4Addr::from(ip))
    }

    /// Takes `ip` out, if it is free.
    fn take(&mut self, ip: u32) {
        let Some((&start, &end)) = self.0.range(..=ip).next_back() else {
            return;
        };
        if end < ip {
            return;
        }
        self.0.remove(&start);
        if start < ip {
            self.0.insert(start, ip - 1);
        }
        if ip < end {
            self.0.insert(ip + 1, end);
        }
    }

    /// Puts `ip` back, merged with the free ranges either side of it.
    fn give(&mut self, ip: u32) {
        let mut start = ip;
        if let Some((&s, &e)) = self.0.range(..=ip).next_back() {
            if e >= ip {
                return;
            }
            if e + 1 == ip {
                self.0.remove(&s);
                start = s;
            }
        }
        let end = ip
            .checked_add(1)
            .and_then(|next| self.0.remove(&next))
            .unwrap_or(ip);
        self.0.insert(start, end);
    }
}

/// Two IPAMs are equal when their networks and leases are (the free ranges follow from them).
impl PartialEq for Ipam {
    fn eq(&self, other: &Self) -> bool {
        self.networks == other.networks && self.leases == other.leases
    }
}

impl Eq for Ipam {}

/// Serialized as its networks and leases alone, as it was before the free ranges were kept.
#[derive(Serialize)]
struct IpamRef<'a> {
    networks: &'a BTreeMap<String, NetworkRecord>,
    leases: &'a Leases,
}

#[derive(Deserialize)]
struct IpamOwned {
    networks: BTreeMap<String, NetworkRecord>,
    leases: Leases,
}

impl Serialize for Ipam {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        IpamRef {
            networks: &self.networks,
            leases: &self.leases,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Ipam {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let IpamOwned { networks, leases } = IpamOwned::deserialize(deserializer)?;
        Ok(Self::from_parts(networks, leases))
    }
}

/// Addresses of a network in use and free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkUsage {
    pub leased: u64,
    pub free: u64,
}

impl Ipam {
    /// Its networks and leases, as a snapshot stores them.
    pub(crate) fn parts(&self) -> (&BTreeMap<String, NetworkRecord>, &Leases) {
        (&self.networks, &self.leases)
    }

    /// The IPAM a snapshot stored (its free ranges computed again).
    pub(crate) fn from_parts(networks: BTreeMap<String, NetworkRecord>, leases: Leases) -> Self {
        let free = networks
            .values()
            .map(|record| {
                let free = FreeRanges::of(record, leases.get(&record.name));
                (record.name.clone(), free)
            })
            .collect();
        Self {
            networks,
            leases,
            free,
        }
    }

    pub fn network(&self, name: &str) -> Option<&NetworkRecord> {
        self.networks.get(name)
    }

    pub fn networks(&self) -> impl Iterator<Item = &NetworkRecord> {
        self.networks.values()
    }

    /// Adds a network. Defining the same network again changes nothing (`Ok(false)`); another
    /// network of that name, or one whose addresses overlap another's, is refused.
    pub fn define(&mut self, record: NetworkRecord) -> Result<bool, IpamError> {
        if let Some(known) = self.networks.get(&record.name) {
            return if *known == record {
                Ok(false)
            } else {
                Err(IpamError::NetworkExists(record.name))
            };
        }
        let (cidr, _) = record.parsed()?;
        for other in self.networks.values() {
            let (other_cidr, _) = other.parsed()?;
            if cidr.overlaps(&other_cidr) {
                return Err(IpamError::Overlaps {
                    name: record.name,
                    other: other.name.clone(),
                    cidr: other.cidr.clone(),
                });
            }
        }
        let free = FreeRanges::of(&record, self.leases.get(&record.name));
        self.free.insert(record.name.clone(), free);
        self.networks.insert(record.name.clone(), record);
        Ok(true)
    }

    /// Leases the lowest free host address of `network` (never the gateway) to `instance`.
    /// Nothing changes when it fails.
    pub fn allocate(&mut self, network: &str, instance: u64) -> Result<NicRecord, IpamError> {
        let record = self
            .networks
            .get(network)
            .ok_or_else(|| IpamError::UnknownNetwork(network.to_owned()))?;
        let (cidr, gateway) = record.parsed()?;
        // Kept for every network; computed here only should that ever not hold.
        let free = match self.free.entry(network.to_owned()) {
            btree_map::Entry::Occupied(known) => known.into_mut(),
            btree_map::Entry::Vacant(slot) => {
                slot.insert(FreeRanges::of(record, self.leases.get(network)))
            }
        };
        // An empty lease map is left on exhaustion, as before the free ranges were kept: the
        // state (and so a snapshot's bytes) must not depend on the build that applied it.
        let leased = self.leases.entry(network.to_owned()).or_default();
        let ip = free.lowest().ok_or_else(|| IpamError::Exhausted {
            name: network.to_owned(),
            used: leased.len() as u64 + u64::from(cidr.is_host(gateway)),
        })?;
        free.take(u32::from(ip));
        leased.insert(ip, instance);
        Ok(NicRecord {
            network: network.to_owned(),
            ip,
            mac: mac_from_ip(ip),
        })
    }

    /// Returns `nic`'s address to the pool, if `instance` still holds it.
    pub fn release(&mut self, nic: &NicRecord, instance: u64) {
        if let Some(leased) = self.leases.get_mut(&nic.network) {
            if leased.get(&nic.ip) == Some(&instance) {
                leased.remove(&nic.ip);
                if let Some(free) = self.free.get_mut(&nic.network) {
                    free.give(u32::from(nic.ip));
                }
            }
            if leased.is_empty() {
                self.leases.remove(&nic.network);
            }
        }
    }

    /// The instance holding `ip` on `network`.
    pub fn holder(&self, network: &str, ip: Ipv4Addr) -> Option<u64> {
        self.leases.get(network)?.get(&ip).copied()
    }

    pub fn usage(&self, network: &str) -> NetworkUsage {
        let leased = self.leases.get(network).map_or(0, |l| l.len() as u64);
        let capacity = self
            .networks
            .get(network)
            .map_or(0, NetworkRecord::capacity);
        NetworkUsage {
            leased,
            free: capacity.saturating_sub(leased),
        }
    }

    /// Every lease, as (network, address, instance).
    pub fn leases(&self) -> impl Iterator<Item = (&str, Ipv4Addr, u64)> {
        self.leases
            .iter()
            .flat_map(|(n, l)| l.iter().map(move |(ip, id)| (n.as_str(), *ip, *id)))
    }

    /// What a host needs to plug `nic`.
    pub fn nic_spec(&self, nic: &NicRecord) -> Option<NicSpec> {
        let record = self.networks.get(&nic.network)?;
        let (cidr, _) = record.parsed().ok()?;
        Some(NicSpec {
            network: record.name.clone(),
            bridge: record.bridge.clone(),
            vlan: record.vlan,
            mac: nic.mac.clone(),
            ip: nic.ip.to_string(),
            prefix: cidr.prefix(),
            gateway: record.gateway.clone(),
            dns: record.dns.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str, cidr: &str, gateway: &str) -> NetworkRecord {
        NetworkRecord::from_definition(&CreateNetwork {
            name: name.into(),
            cidr: cidr.into(),
            gateway: gateway.into(),
            dns: vec!["192.0.2.53".into()],
            bridge: "br0".into(),
            vlan: None,
        })
        .unwrap()
    }

    #[test]
    fn allocation_takes_the_lowest_free_address_and_skips_the_gateway() {
        let mut ipam = Ipam::default();
        assert!(ipam.define(net("p", "10.0.0.0/29", "10.0.0.2")).unwrap());
        let ips: Vec<_> = (1..=5)
            .map(|id| ipam.allocate("p", id).unwrap().ip.to_string())
            .collect();
        assert_eq!(
            ips,
            ["10.0.0.1", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
        assert_eq!(ipam.usage("p"), NetworkUsage { leased: 5, free: 0 });
        assert_eq!(
            ipam.allocate("p", 6).unwrap_err().to_string(),
            "network p has no free address (6 in use, gateway included)"
        );
        // A released address is the next one given.
        let nic = NicRecord {
            network: "p".into(),
            ip: "10.0.0.4".parse().unwrap(),
            mac: mac_from_ip("10.0.0.4".parse().unwrap()),
        };
        ipam.release(&nic, 99); // not its holder: nothing happens
        assert_eq!(ipam.holder("p", nic.ip), Some(3));
        ipam.release(&nic, 3);
        assert_eq!(ipam.usage("p"), NetworkUsage { leased: 4, free: 1 });
        let again = ipam.allocate("p", 7).unwrap();
        assert_eq!(
            again,
            NicRecord {
                mac: "0a:53:0a:00:00:04".into(),
                ..nic
            }
        );
    }

    #[test]
    fn exhaustion_changes_nothing() {
        let mut ipam = Ipam::default();
        ipam.define(net("tiny", "10.0.0.4/30", "10.0.0.5")).unwrap();
        ipam.allocate("tiny", 1).unwrap();
        let before = ipam.clone();
        assert!(matches!(
            ipam.allocate("tiny", 2),
            Err(IpamError::Exhausted { used: 2, .. })
        ));
        assert_eq!(ipam, before);
        assert_eq!(
            ipam.allocate("nope", 2),
            Err(IpamError::UnknownNetwork("nope".into()))
        );
        assert_eq!(ipam, before);
    }

    #[test]
    fn networks_are_unique_and_never_overlap() {
        let mut ipam = Ipam::default();
        let public = net("public", "192.0.2.0/24", "192.0.2.1");
        assert_eq!(ipam.define(public.clone()), Ok(true));
        assert_eq!(ipam.define(public), Ok(false));
        assert_eq!(
            ipam.define(net("public", "198.51.100.0/24", "198.51.100.1")),
            Err(IpamError::NetworkExists("public".into()))
        );
        assert_eq!(
            ipam.define(net("private", "192.0.0.0/16", "192.0.0.1"))
                .unwrap_err()
                .to_string(),
            "network private overlaps network public (192.0.2.0/24)"
        );
        assert_eq!(
            ipam.define(net("private", "10.0.0.0/8", "10.0.0.1")),
            Ok(true)
        );
        assert_eq!(ipam.usage("private").free, (1 << 24) - 3);
        assert_eq!(ipam.networks().count(), 2);
    }

    /// The lowest free address as allocation found it before the free ranges were kept: a
    /// walk from the network's first host address past the gateway and every lease.
    fn lowest_by_walk(ipam: &Ipam, network: &str) -> Option<Ipv4Addr> {
        let (cidr, gateway) = ipam.networks[network].parsed().unwrap();
        let leased = ipam.leases.get(network);
        cidr.hosts()
            .find(|ip| *ip != gateway && !leased.is_some_and(|l| l.contains_key(ip)))
    }

    #[test]
    fn allocation_after_churn_is_the_lowest_free_address_and_the_ranges_follow_the_leases() {
        let mut ipam = Ipam::default();
        // The gateway in the middle, so ranges split around it too.
        ipam.define(net("p", "10.1.0.0/26", "10.1.0.20")).unwrap();
        let mut held: Vec<NicRecord> = Vec::new();
        // A fixed pseudo-random walk of creations and releases, through exhaustion and back.
        let mut seed = 0x2545_f491_u64;
        let mut exhausted = 0;
        for id in 1..3000_u64 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let release = !held.is_empty() && (seed >> 33) % 100 < 45;
            if release {
                let nic = held.swap_remove(((seed >> 40) as usize) % held.len());
                ipam.release(&nic, ipam.holder("p", nic.ip).unwrap());
            } else {
                let expected = lowest_by_walk(&ipam, "p");
                match ipam.allocate("p", id) {
                    Ok(nic) => {
                        assert_eq!(Some(nic.ip), expected, "allocation {id}");
                        held.push(nic);
                    }
                    Err(IpamError::Exhausted { used, .. }) => {
                        assert_eq!(expected, None);
                        assert_eq!(used, 62);
                        exhausted += 1;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            let (networks, leases) = ipam.parts();
            let rebuilt = Ipam::from_parts(networks.clone(), leases.clone());
            assert_eq!(rebuilt.free, ipam.free, "after step {id}");
        }
        assert!(exhausted > 0, "the walk reached exhaustion");
        assert_eq!(
            ipam.usage("p").leased + ipam.usage("p").free,
            61,
            "every host address but the gateway"
        );
    }

    #[test]
    fn releases_merge_the_ranges_back() {
        let mut ipam = Ipam::default();
        ipam.define(net("p", "10.0.0.0/28", "10.0.0.1")).unwrap();
        let nics: Vec<_> = (1..=13).map(|id| ipam.allocate("p", id).unwrap()).collect();
        assert!(ipam.free["p"].0.is_empty());
        // Released out of order, the addresses come back as the one range they were.
        for i in [5, 3, 4, 12, 0, 1, 2, 6, 8, 7, 11, 9, 10] {
            ipam.release(&nics[i], i as u64 + 1);
        }
        let first = u32::from(Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(ipam.free["p"].0, BTreeMap::from([(first, first + 12)]));
        // A release of an address already free changes nothing.
        ipam.free.get_mut("p").unwrap().give(first + 3);
        assert_eq!(ipam.free["p"].0.len(), 1);
    }

    #[test]
    fn a_decoded_ipam_goes_on_allocating_as_the_original() {
        let mut ipam = Ipam::default();
        ipam.define(net("p", "192.0.2.0/24", "192.0.2.1")).unwrap();
        let nics: Vec<_> = (1..=10).map(|id| ipam.allocate("p", id).unwrap()).collect();
        ipam.release(&nics[3], 4);
        ipam.release(&nics[7], 8);
        let json = serde_json::to_string(&ipam).unwrap();
        assert!(!json.contains("free"), "stored without the ranges: {json}");
        let mut back: Ipam = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ipam);
        let (networks, leases) = ipam.parts();
        let mut restored = Ipam::from_parts(networks.clone(), leases.clone());
        for id in 11..=14 {
            let nic = ipam.allocate("p", id).unwrap();
            assert_eq!(back.allocate("p", id).unwrap(), nic);
            assert_eq!(restored.allocate("p", id).unwrap(), nic);
        }
        assert_eq!(back.holder("p", nics[3].ip), Some(11));
        assert_eq!(back.holder("p", nics[7].ip), Some(12));
    }

    #[test]
    fn nic_spec_carries_what_the_host_needs() {
        let mut ipam = Ipam::default();
        let mut record = net("public", "192.0.2.0/24", "192.0.2.1");
        record.vlan = Some(42);
        ipam.define(record).unwrap();
        let nic = ipam.allocate("public", 1).unwrap();
        assert_eq!(
            ipam.nic_spec(&nic).unwrap(),
            NicSpec {
                network: "public".into(),
                bridge: "br0".into(),
                vlan: Some(42),
                mac: "0a:53:c0:00:02:02".into(),
                ip: "192.0.2.2".into(),
                prefix: 24,
                gateway: "192.0.2.1".into(),
                dns: vec!["192.0.2.53".into()],
            }
        );
    }
}
