//! IP address management, part of the replicated state: the site networks and which instance
//! holds which address. Allocation is deterministic (the lowest free host address, skipping the
//! gateway), so every replica applying the same commands leases the same addresses.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
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

/// The networks and their leases.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ipam {
    networks: BTreeMap<String, NetworkRecord>,
    /// Network name -> leased address -> the instance holding it.
    leases: BTreeMap<String, BTreeMap<Ipv4Addr, u64>>,
}

/// Addresses of a network in use and free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkUsage {
    pub leased: u64,
    pub free: u64,
}

impl Ipam {
    /// Its networks and leases, as a snapshot stores them.
    pub(crate) fn parts(
        &self,
    ) -> (
        &BTreeMap<String, NetworkRecord>,
        &BTreeMap<String, BTreeMap<Ipv4Addr, u64>>,
    ) {
        (&self.networks, &self.leases)
    }

    /// The IPAM a snapshot stored.
    pub(crate) fn from_parts(
        networks: BTreeMap<String, NetworkRecord>,
        leases: BTreeMap<String, BTreeMap<Ipv4Addr, u64>>,
    ) -> Self {
        Self { networks, leases }
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
        let leased = self.leases.entry(network.to_owned()).or_default();
        // Leases are sorted, so the walk stops at the first gap: O(leases), not O(addresses).
        let ip = cidr
            .hosts()
            .find(|ip| *ip != gateway && !leased.contains_key(ip))
            .ok_or_else(|| IpamError::Exhausted {
                name: network.to_owned(),
                used: leased.len() as u64 + u64::from(cidr.is_host(gateway)),
            })?;
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
