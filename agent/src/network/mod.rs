//! Instance networking on the host: the bridge, one tap per NIC and the anti-spoofing rules
//! that keep each instance to its own MAC and IPv4 address. [`Network::attach`] prepares a
//! NIC before its domain starts (the domain then uses `<interface type='ethernet'>` with
//! `<target dev='TAP' managed='no'/>`); [`Network::detach`] removes it after the domain
//! stopped. Host effects go through [`Links`] and [`Filter`].

pub mod filter;
pub mod links;

#[cfg(test)]
mod root_tests;

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::Arc;

pub use filter::{FakeFilter, Filter, FilterCall, FilterError, NftFilter, TapIdentity};
pub use links::{FakeLinks, LinkCall, LinkError, Links, RtnetlinkLinks};

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

/// A name refused before it reaches the kernel or an nft ruleset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("invalid interface name {0:?}")]
    Interface(String),
    #[error("invalid tap name {0:?}")]
    Tap(String),
    #[error("invalid MAC address {0:?}")]
    Mac(String),
    #[error("tap name for instance {instance_id} NIC {index} is longer than 15 characters")]
    TooLong { instance_id: u64, index: u32 },
}

/// Interface names (bridges, uplinks, namespaces): 1-15 of `[A-Za-z0-9_.-]`, not starting
/// with `-` or `.`.
pub fn validate_ifname(name: &str) -> Result<(), NameError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && !name.starts_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(NameError::Interface(name.to_owned()))
    }
}

/// Tap (and nft table) names: 1-15 of `[a-z0-9]`, starting with a letter, so they go into
/// nft rulesets and chain names without quoting issues.
pub fn validate_tap_name(name: &str) -> Result<(), NameError> {
    let ok = name.len() <= MAX_IFNAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(NameError::Tap(name.to_owned()))
    }
}

/// The tap of NIC `index` of instance `instance_id` of cluster `cluster_id`: `s`, the first four
/// hex digits of the cluster ID (so two clouds on one host never share a tap name), the
/// instance ID, `n` and the index.
pub fn tap_name(cluster_id: &str, instance_id: u64, index: u32) -> Result<String, NameError> {
    let cluster: String = cluster_id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(4)
        .collect::<String>()
        .to_ascii_lowercase();
    let name = format!("s{cluster}{instance_id}n{index}");
    if name.len() > MAX_IFNAME {
        return Err(NameError::TooLong { instance_id, index });
    }
    Ok(name)
}

/// An Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr([u8; 6]);

impl MacAddr {
    pub const fn new(octets: [u8; 6]) -> Self {
        Self(octets)
    }

    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// The MAC for the host side of a guest's tap: `fe` and the guest's other five bytes, as
    /// libvirt does. It must differ from the guest's: a bridge takes the lowest MAC of its
    /// ports as its own, and a bridge owning the guest's MAC keeps the guest's frames for itself
    /// instead of forwarding them; `fe` is high enough never to be picked.
    pub const fn host_side(&self) -> Self {
        let [_, b, c, d, e, g] = self.0;
        Self([0xfe, b, c, d, e, g])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NameError::Mac(s.to_owned());
        let mut octets = [0u8; 6];
        let mut parts = s.split(':');
        for octet in &mut octets {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Self(octets))
    }
}

/// One NIC to attach: all values generated or validated by the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicPlan {
    /// The tap, from [`tap_name`].
    pub tap: String,
    pub mac: MacAddr,
    /// The only IPv4 source address the instance may use on this NIC.
    pub ip: Ipv4Addr,
    /// The host bridge the tap joins.
    pub bridge: String,
    /// A namespace where the bridge side lives too (see [`links`]).
    pub netns: Option<String>,
}

/// The host's bridge uplink: an interface, or a VLAN sub-interface of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Uplink {
    pub interface: Option<String>,
    pub vlan: Option<u16>,
}

/// Errors of attaching or detaching a NIC.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("cannot prepare bridge {bridge}")]
    Bridge {
        bridge: String,
        #[source]
        source: LinkError,
    },
    #[error("cannot set up tap {tap}")]
    Tap {
        tap: String,
        #[source]
        source: LinkError,
    },
    #[error("cannot set anti-spoofing rules of {tap}")]
    Filter {
        tap: String,
        #[source]
        source: FilterError,
    },
}

/// Instance networking over a [`Links`] and a [`Filter`].
#[derive(Clone)]
pub struct Network {
    links: Arc<dyn Links>,
    filter: Arc<dyn Filter>,
    uplink: Uplink,
}

impl Network {
    pub fn new(links: Arc<dyn Links>, filter: Arc<dyn Filter>, uplink: Uplink) -> Self {
        Self {
            links,
            filter,
            uplink,
        }
    }

    /// The real thing: rtnetlink and `nft` with the default table.
    pub fn host(uplink: Uplink) -> Self {
        Self::new(
            Arc::new(RtnetlinkLinks::new()),
            Arc::new(NftFilter::default()),
            uplink,
        )
    }

    /// Prepares `plan`'s NIC: bridge, then anti-spoofing rules, then the tap. Rules come
    /// before the tap so that the tap never forwards a frame unfiltered. On failure the
    /// steps done are undone in reverse order. The returned guard undoes everything when
    /// dropped unless [`NicGuard::keep`] is called (once the domain runs).
    pub fn attach(&self, plan: &NicPlan) -> Result<NicGuard, NetworkError> {
        validate_tap_name(&plan.tap)?;
        validate_ifname(&plan.bridge)?;
        let mut guard = NicGuard {
            links: self.links.clone(),
            filter: self.filter.clone(),
            undo: Vec::new(),
        };
        self.links
            .ensure_bridge(
                &plan.bridge,
                plan.netns.as_deref(),
                self.uplink.interface.as_deref(),
                self.uplink.vlan,
            )
            .map_err(|source| NetworkError::Bridge {
                bridge: plan.bridge.clone(),
                source,
            })?;
        // The bridge is shared with other NICs: never undone here.

        // Pushed before the call: a failed step may have half-happened (idempotent undo).
        guard.undo.push(Undo::Unprotect(plan.tap.clone()));
        self.filter
            .protect(&TapIdentity {
                tap: plan.tap.clone(),
                mac: plan.mac,
                ip: plan.ip,
            })
            .map_err(|source| NetworkError::Filter {
                tap: plan.tap.clone(),
                source,
            })?;

        guard.undo.push(Undo::DeleteTap(plan.tap.clone()));
        self.links
            .create_tap(&plan.tap, plan.mac.host_side(), &plan.bridge)
            .map_err(|source| NetworkError::Tap {
                tap: plan.tap.clone(),
                source,
            })?;
        Ok(guard)
    }

    /// Removes the NIC of `tap` after its domain stopped: rules, then the tap. Fine when
    /// either is already gone.
    pub fn detach(&self, tap: &str) -> Result<(), NetworkError> {
        validate_tap_name(tap)?;
        self.filter
            .unprotect(tap)
            .map_err(|source| NetworkError::Filter {
                tap: tap.to_owned(),
                source,
            })?;
        self.links
            .delete_tap(tap)
            .map_err(|source| NetworkError::Tap {
                tap: tap.to_owned(),
                source,
            })?;
        Ok(())
    }
}

#[derive(Debug)]
enum Undo {
    Unprotect(String),
    DeleteTap(String),
}

/// An attached NIC that is detached again when dropped, unless kept.
#[must_use = "dropping the guard detaches the NIC at once"]
pub struct NicGuard {
    links: Arc<dyn Links>,
    filter: Arc<dyn Filter>,
    undo: Vec<Undo>,
}

impl NicGuard {
    /// Keeps the NIC: from now on only [`Network::detach`] removes it.
    pub fn keep(mut self) {
        self.undo.clear();
    }
}

impl Drop for NicGuard {
    fn drop(&mut self) {
        while let Some(step) = self.undo.pop() {
            let result = match &step {
                Undo::DeleteTap(tap) => self
                    .links
                    .delete_tap(tap)
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Undo::Unprotect(tap) => self.filter.unprotect(tap).map_err(|e| e.to_string()),
            };
            if let Err(error) = result {
                tracing::warn!(?step, %error, "cannot undo NIC attach step");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> NicPlan {
        NicPlan {
            tap: tap_name("c0ffee00", 42, 0).unwrap(),
            mac: "52:54:00:12:34:56".parse().unwrap(),
            ip: Ipv4Addr::new(10, 1, 0, 42),
            bridge: "br0".to_owned(),
            netns: None,
        }
    }

    fn network(uplink: Uplink) -> (Network, Arc<FakeLinks>, Arc<FakeFilter>) {
        let links = Arc::new(FakeLinks::new());
        let filter = Arc::new(FakeFilter::new());
        (
            Network::new(links.clone(), filter.clone(), uplink),
            links,
            filter,
        )
    }

    #[test]
    fn the_host_side_of_a_tap_never_carries_the_guest_mac() {
        let guest: MacAddr = "0a:53:0a:fb:45:02".parse().unwrap();
        assert_eq!(guest.host_side().to_string(), "fe:53:0a:fb:45:02");
        let (network, links, _) = network(Uplink::default());
        network.attach(&plan()).unwrap().keep();
        let tap_mac = links.calls().iter().find_map(|c| match c {
            LinkCall::CreateTap { mac, .. } => Some(*mac),
            _ => None,
        });
        assert_eq!(
            tap_mac.map(|m| m.to_string()).as_deref(),
            Some("fe:54:00:12:34:56")
        );
    }

    #[test]
    fn names_are_validated() {
        assert_eq!(tap_name("C0FFEE00-1111", 42, 1).unwrap(), "sc0ff42n1");
        assert_eq!(tap_name("c0ffee00", 99_999_999, 9).unwrap().len(), 15);
        assert!(tap_name("c0ffee00", 999_999_999, 9).is_err());
        assert!(validate_tap_name("sl1n0").is_ok());
        for bad in [
            "",
            "Sl1",
            "1sl",
            "sl-1",
            "sl 1",
            "sl\"x",
            "abcdefghijklmnop",
        ] {
            assert!(validate_tap_name(bad).is_err(), "{bad}");
        }
        assert!(validate_ifname("eth0.100").is_ok());
        assert!(validate_ifname("-x").is_err());
        assert!(validate_ifname("a/b").is_err());
    }

    #[test]
    fn mac_parses_and_prints() {
        let mac: MacAddr = "52:54:00:AB:cd:0f".parse().unwrap();
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:0f");
        for bad in [
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0f:00",
            "5254.00ab.cd0f",
            "g2:54:00:ab:cd:0f",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn attach_does_bridge_then_rules_then_tap_and_keep_holds() {
        let uplink = Uplink {
            interface: Some("eth0".to_owned()),
            vlan: Some(100),
        };
        let (net, links, filter) = network(uplink);
        net.attach(&plan()).unwrap().keep();
        assert_eq!(
            links.calls(),
            [
                LinkCall::EnsureBridge {
                    name: "br0".to_owned(),
                    netns: None,
                    uplink: Some("eth0".to_owned()),
                    vlan: Some(100),
                },
                LinkCall::CreateTap {
                    name: "sc0ff42n0".to_owned(),
                    mac: plan().mac.host_side(),
                    bridge: "br0".to_owned(),
                },
            ]
        );
        assert_eq!(filter.protected().unwrap(), ["sc0ff42n0"]);
        assert_eq!(links.taps(), ["sc0ff42n0"]);
    }

    #[test]
    fn failed_tap_rolls_back_tap_then_rules() {
        let (net, links, filter) = network(Uplink::default());
        links.fail_on("create_tap");
        let err = net.attach(&plan()).err().unwrap();
        assert!(matches!(err, NetworkError::Tap { .. }), "{err}");
        let calls = links.calls();
        assert_eq!(
            calls.last(),
            Some(&LinkCall::DeleteTap("sc0ff42n0".to_owned()))
        );
        assert_eq!(
            filter.calls().last(),
            Some(&FilterCall::Unprotect("sc0ff42n0".to_owned()))
        );
        assert!(filter.protected().unwrap().is_empty());
    }

    #[test]
    fn failed_rules_roll_back_rules_and_never_make_the_tap() {
        let (net, links, filter) = network(Uplink::default());
        filter.fail_on("protect");
        assert!(matches!(
            net.attach(&plan()),
            Err(NetworkError::Filter { .. })
        ));
        assert!(!links
            .calls()
            .iter()
            .any(|c| matches!(c, LinkCall::CreateTap { .. } | LinkCall::DeleteTap(_))));
        assert_eq!(
            filter.calls().last(),
            Some(&FilterCall::Unprotect("sc0ff42n0".to_owned()))
        );
    }

    #[test]
    fn failed_bridge_changes_nothing() {
        let (net, links, filter) = network(Uplink::default());
        links.fail_on("ensure_bridge");
        assert!(matches!(
            net.attach(&plan()),
            Err(NetworkError::Bridge { .. })
        ));
        assert_eq!(links.calls().len(), 1);
        assert!(filter.calls().is_empty());
    }

    #[test]
    fn dropped_guard_undoes_in_reverse_order() {
        let (net, links, filter) = network(Uplink::default());
        let guard = net.attach(&plan()).unwrap();
        drop(guard);
        assert_eq!(
            links.calls().last(),
            Some(&LinkCall::DeleteTap("sc0ff42n0".to_owned()))
        );
        assert_eq!(
            filter.calls().last(),
            Some(&FilterCall::Unprotect("sc0ff42n0".to_owned()))
        );
        assert!(links.taps().is_empty());
    }

    #[test]
    fn detach_removes_rules_then_tap_and_is_idempotent() {
        let (net, links, filter) = network(Uplink::default());
        net.attach(&plan()).unwrap().keep();
        net.detach("sc0ff42n0").unwrap();
        net.detach("sc0ff42n0").unwrap();
        assert!(links.taps().is_empty());
        assert!(filter.protected().unwrap().is_empty());
        assert!(net.detach("bad name").is_err());
    }
}
