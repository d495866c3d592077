//! Site networks, pure: IPv4 CIDR arithmetic, the MAC address an instance NIC gets from its
//! leased address, and validation of a network definition ([`crate::api::CreateNetwork`]).
//! Hand-rolled on `u32`, so the controller's state machine and the agents agree on every bit
//! without another dependency.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::api::CreateNetwork;
use crate::names::{validate_name, NameError};

/// Smallest prefix length a site network may have (a /8: 16M addresses).
pub const MIN_PREFIX: u8 = 8;
/// Largest prefix length a site network may have (a /30: two usable addresses).
pub const MAX_PREFIX: u8 = 30;
/// Longest Linux interface name (`IFNAMSIZ` - 1).
pub const MAX_IFNAME_LEN: usize = 15;
/// Most DNS servers a network hands out (a guest's resolv.conf uses only the first three).
pub const MAX_DNS: usize = 3;

/// First two octets of every instance MAC: `0a` has the locally administered bit set and the
/// multicast bit clear, so it never collides with a vendor (IEEE) address; `53` is `S`.
pub const MAC_PREFIX: [u8; 2] = [0x0a, 0x53];

#[derive(Debug, Error, PartialEq, Eq)]
pub enum NetworkError {
    #[error("{field}: {input:?} is not an IPv4 CIDR (a.b.c.d/len)")]
    BadCidr { field: &'static str, input: String },
    #[error("{field}: {input:?} has host bits set (the network is {network})")]
    HostBits {
        field: &'static str,
        input: String,
        network: String,
    },
    #[error("{field}: prefix /{prefix} is outside /{MIN_PREFIX}../{MAX_PREFIX}")]
    PrefixRange { field: &'static str, prefix: u8 },
    #[error("{field}: {input:?} is not an IPv4 address")]
    BadIpv4 { field: &'static str, input: String },
    #[error("{field}: {input:?} is not an IP address")]
    BadIp { field: &'static str, input: String },
    #[error("gateway: {gateway} is not a host address of {cidr}")]
    GatewayOutside { gateway: String, cidr: String },
    #[error("dns: at most {MAX_DNS} servers")]
    TooManyDns,
    #[error(
        "bridge: {0:?} is not a Linux interface name (1 to {MAX_IFNAME_LEN} of [a-zA-Z0-9_.-])"
    )]
    BadBridge(String),
    #[error("vlan: {0} is outside 1..4094")]
    VlanRange(u16),
    #[error(transparent)]
    Name(#[from] NameError),
}

/// An IPv4 network in CIDR notation, host bits clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    network: u32,
    prefix: u8,
}

fn mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

impl Ipv4Cidr {
    /// The network `addr/prefix`; refuses a prefix above 32 and an address with host bits set
    /// (`10.0.0.5/24` is ambiguous: a host, or the network it is in?).
    pub fn new(field: &'static str, addr: Ipv4Addr, prefix: u8) -> Result<Self, NetworkError> {
        if prefix > 32 {
            return Err(NetworkError::BadCidr {
                field,
                input: format!("{addr}/{prefix}"),
            });
        }
        let bits = u32::from(addr);
        let network = bits & mask(prefix);
        if network != bits {
            return Err(NetworkError::HostBits {
                field,
                input: format!("{addr}/{prefix}"),
                network: Self { network, prefix }.to_string(),
            });
        }
        Ok(Self { network, prefix })
    }

    /// Parses `a.b.c.d/len`; `field` names the input in the error.
    pub fn parse(field: &'static str, input: &str) -> Result<Self, NetworkError> {
        let bad = || NetworkError::BadCidr {
            field,
            input: input.to_owned(),
        };
        let (addr, prefix) = input.split_once('/').ok_or_else(bad)?;
        if prefix.is_empty() || prefix.len() > 2 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let addr = Ipv4Addr::from_str(addr).map_err(|_| bad())?;
        Self::new(field, addr, prefix)
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network)
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask(self.prefix))
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network | !mask(self.prefix))
    }

    /// Number of addresses, network and broadcast included.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == self.network
    }

    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }

    /// Whether `ip` is an address a machine may have here: inside, and neither the network nor
    /// the broadcast address (both are hosts in a /31 and /32).
    pub fn is_host(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && (self.prefix >= 31 || (ip != self.network() && ip != self.broadcast()))
    }

    /// The host addresses, lowest first.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        let (first, last) = if self.prefix >= 31 {
            (self.network, u32::from(self.broadcast()))
        } else {
            (self.network + 1, u32::from(self.broadcast()) - 1)
        };
        (first..=last).map(Ipv4Addr::from)
    }

    /// Number of host addresses.
    pub fn host_count(&self) -> u64 {
        if self.prefix >= 31 {
            self.size()
        } else {
            self.size() - 2
        }
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

/// The MAC address of the NIC holding `ip`: [`MAC_PREFIX`] then the four octets of the address,
/// lowercase, colon-separated. Site networks never overlap and an address is leased to one live
/// instance at a time, so neither is a MAC; and every replica, and the host, derive the same one.
pub fn mac_from_ip(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    let [p, q] = MAC_PREFIX;
    format!("{p:02x}:{q:02x}:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// Whether `name` is a usable Linux interface name: 1 to 15 of `[a-zA-Z0-9_.-]`, not `.`/`..`.
pub fn is_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IFNAME_LEN
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A network definition, checked and parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidNetwork {
    pub cidr: Ipv4Cidr,
    pub gateway: Ipv4Addr,
    pub dns: Vec<IpAddr>,
}

impl ValidNetwork {
    /// The definition with its addresses written canonically (`10.0.0.0/24`, not `10.0.0.0/024`).
    pub fn canonical(&self, definition: &CreateNetwork) -> CreateNetwork {
        CreateNetwork {
            name: definition.name.clone(),
            cidr: self.cidr.to_string(),
            gateway: self.gateway.to_string(),
            dns: self.dns.iter().map(IpAddr::to_string).collect(),
            bridge: definition.bridge.clone(),
            vlan: definition.vlan,
        }
    }
}

/// Checks a network definition: a valid name; a CIDR from /8 to /30 with host bits clear; a
/// gateway that is a host address inside it; at most three DNS servers (IPv4 or IPv6); a bridge
/// that is a Linux interface name; a VLAN ID from 1 to 4094.
pub fn validate_network(definition: &CreateNetwork) -> Result<ValidNetwork, NetworkError> {
    validate_name("name", &definition.name)?;
    let cidr = Ipv4Cidr::parse("cidr", &definition.cidr)?;
    if !(MIN_PREFIX..=MAX_PREFIX).contains(&cidr.prefix()) {
        return Err(NetworkError::PrefixRange {
            field: "cidr",
            prefix: cidr.prefix(),
        });
    }
    let gateway = Ipv4Addr::from_str(&definition.gateway).map_err(|_| NetworkError::BadIpv4 {
        field: "gateway",
        input: definition.gateway.clone(),
    })?;
    if !cidr.is_host(gateway) {
        return Err(NetworkError::GatewayOutside {
            gateway: gateway.to_string(),
            cidr: cidr.to_string(),
        });
    }
    if definition.dns.len() > MAX_DNS {
        return Err(NetworkError::TooManyDns);
    }
    let dns = definition
        .dns
        .iter()
        .map(|d| {
            IpAddr::from_str(d).map_err(|_| NetworkError::BadIp {
                field: "dns",
                input: d.clone(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if !is_ifname(&definition.bridge) {
        return Err(NetworkError::BadBridge(definition.bridge.clone()));
    }
    if let Some(vlan) = definition.vlan {
        if !(1..=4094).contains(&vlan) {
            return Err(NetworkError::VlanRange(vlan));
        }
    }
    Ok(ValidNetwork { cidr, gateway, dns })
}

/// What a host needs to plug one instance NIC and configure the guest's address (meant for the
/// agent protocol's `DesiredInstance`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NicSpec {
    /// The site network's name.
    pub network: String,
    /// The bridge on the host the NIC's tap joins.
    pub bridge: String,
    /// The VLAN the tap is tagged with on the bridge, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// The NIC's MAC address ([`mac_from_ip`] of `ip`).
    pub mac: String,
    /// The leased IPv4 address.
    pub ip: String,
    /// The network's prefix length.
    pub prefix: u8,
    pub gateway: String,
    /// DNS servers for the guest's resolver.
    #[serde(default)]
    pub dns: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn definition() -> CreateNetwork {
        CreateNetwork {
            name: "public".into(),
            cidr: "192.0.2.0/24".into(),
            gateway: "192.0.2.1".into(),
            dns: vec!["192.0.2.53".into(), "2001:db8::53".into()],
            bridge: "br-public".into(),
            vlan: Some(100),
        }
    }

    #[test]
    fn cidr_parses_and_computes() {
        let c = Ipv4Cidr::parse("cidr", "10.1.2.0/24").unwrap();
        assert_eq!(c.to_string(), "10.1.2.0/24");
        assert_eq!(c.netmask(), ip("255.255.255.0"));
        assert_eq!(c.broadcast(), ip("10.1.2.255"));
        assert_eq!(c.size(), 256);
        assert_eq!(c.host_count(), 254);
        assert!(c.contains(ip("10.1.2.0")) && c.contains(ip("10.1.2.255")));
        assert!(!c.contains(ip("10.1.3.0")) && !c.contains(ip("10.1.1.255")));
        assert!(c.is_host(ip("10.1.2.1")) && !c.is_host(ip("10.1.2.0")));
        assert!(!c.is_host(ip("10.1.2.255")));
        let hosts: Vec<_> = c.hosts().collect();
        assert_eq!(hosts.len(), 254);
        assert_eq!(hosts[0], ip("10.1.2.1"));
        assert_eq!(hosts[253], ip("10.1.2.254"));

        let wide = Ipv4Cidr::parse("cidr", "10.0.0.0/8").unwrap();
        assert_eq!(wide.broadcast(), ip("10.255.255.255"));
        assert_eq!(wide.host_count(), (1 << 24) - 2);
        let all = Ipv4Cidr::parse("cidr", "0.0.0.0/0").unwrap();
        assert_eq!(all.size(), 1 << 32);
        assert!(all.contains(ip("255.255.255.255")));
        let one = Ipv4Cidr::parse("cidr", "10.0.0.7/32").unwrap();
        assert_eq!(one.hosts().collect::<Vec<_>>(), vec![ip("10.0.0.7")]);
        let p2p = Ipv4Cidr::parse("cidr", "10.0.0.6/31").unwrap();
        assert_eq!(p2p.host_count(), 2);
        let small = Ipv4Cidr::parse("cidr", "10.0.0.4/30").unwrap();
        assert_eq!(
            small.hosts().collect::<Vec<_>>(),
            vec![ip("10.0.0.5"), ip("10.0.0.6")]
        );
    }

    #[test]
    fn cidr_refuses_bad_input() {
        for bad in [
            "10.0.0.0",
            "10.0.0.0/",
            "10.0.0.0/33",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "10.0.0.0/ 8",
            "10.0.0/8",
            "10.0.0.256/24",
            "a.b.c.d/8",
            "10.0.0.0/24/1",
            "",
        ] {
            assert!(
                matches!(
                    Ipv4Cidr::parse("cidr", bad),
                    Err(NetworkError::BadCidr { .. })
                ),
                "{bad}"
            );
        }
        assert_eq!(
            Ipv4Cidr::parse("cidr", "10.0.0.5/24")
                .unwrap_err()
                .to_string(),
            "cidr: \"10.0.0.5/24\" has host bits set (the network is 10.0.0.0/24)"
        );
    }

    #[test]
    fn cidrs_overlap_when_one_holds_the_other() {
        let a = Ipv4Cidr::parse("cidr", "10.0.0.0/16").unwrap();
        let b = Ipv4Cidr::parse("cidr", "10.0.5.0/24").unwrap();
        let c = Ipv4Cidr::parse("cidr", "10.1.0.0/16").unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c) && !c.overlaps(&b));
    }

    #[test]
    fn macs_are_locally_administered_unicast_and_follow_the_address() {
        assert_eq!(mac_from_ip(ip("192.0.2.10")), "0a:53:c0:00:02:0a");
        assert_eq!(mac_from_ip(ip("10.0.0.255")), "0a:53:0a:00:00:ff");
        assert_ne!(mac_from_ip(ip("10.0.0.1")), mac_from_ip(ip("10.0.0.2")));
        let first = MAC_PREFIX[0];
        assert_eq!(first & 0b01, 0, "unicast");
        assert_eq!(first & 0b10, 0b10, "locally administered");
    }

    #[test]
    fn linux_interface_names() {
        for good in ["br0", "virbr-public", "br.100", "a_b", "abcdefghijklmno"] {
            assert!(is_ifname(good), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "abcdefghijklmnop",
            "br 0",
            "br/0",
            "br:0",
            "bré",
        ] {
            assert!(!is_ifname(bad), "{bad}");
        }
    }

    #[test]
    fn a_good_definition_is_accepted_and_canonical() {
        let mut d = definition();
        let valid = validate_network(&d).unwrap();
        assert_eq!(valid.cidr.to_string(), "192.0.2.0/24");
        assert_eq!(valid.gateway, ip("192.0.2.1"));
        assert_eq!(valid.dns.len(), 2);
        d.dns = vec!["2001:0db8:0000::53".into()];
        let canonical = validate_network(&d).unwrap().canonical(&d);
        assert_eq!(canonical.dns, vec!["2001:db8::53".to_owned()]);
        d.vlan = None;
        d.dns.clear();
        assert!(validate_network(&d).is_ok());
    }

    #[test]
    fn bad_definitions_name_the_field() {
        let check = |edit: &dyn Fn(&mut CreateNetwork), expected: &str| {
            let mut d = definition();
            edit(&mut d);
            let err = validate_network(&d).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{err} (expected {expected})");
        };
        check(&|d| d.name = "../x".into(), "name ");
        check(&|d| d.cidr = "10.0.0.0/7".into(), "cidr: prefix /7");
        check(&|d| d.cidr = "10.0.0.0/31".into(), "cidr: prefix /31");
        check(
            &|d| d.cidr = "10.0.0.1/24".into(),
            "cidr: \"10.0.0.1/24\" has host",
        );
        check(
            &|d| d.gateway = "192.0.3.1".into(),
            "gateway: 192.0.3.1 is not",
        );
        check(
            &|d| d.gateway = "192.0.2.0".into(),
            "gateway: 192.0.2.0 is not",
        );
        check(
            &|d| d.gateway = "192.0.2.255".into(),
            "gateway: 192.0.2.255 is not",
        );
        check(
            &|d| d.gateway = "gw".into(),
            "gateway: \"gw\" is not an IPv4",
        );
        check(
            &|d| d.dns = vec!["1.1.1".into()],
            "dns: \"1.1.1\" is not an IP",
        );
        check(
            &|d| d.dns = vec!["1.1.1.1".into(); 4],
            "dns: at most 3 servers",
        );
        check(&|d| d.bridge = "br;rm -rf".into(), "bridge: ");
        check(&|d| d.bridge = "a-very-long-bridge".into(), "bridge: ");
        check(&|d| d.vlan = Some(0), "vlan: 0 is outside");
        check(&|d| d.vlan = Some(4095), "vlan: 4095 is outside");
    }
}
