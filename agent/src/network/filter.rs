//! Anti-spoofing for instance taps with nftables: from a protected tap only frames with the
//! NIC's own source MAC pass, and of those only IPv4 from its own address and ARP whose
//! sender MAC and IP are its own. Everything else from that tap is dropped, so an instance
//! cannot take another's MAC or address. Consequences: no IPv6, no VLAN tags from guests,
//! and DHCP clients (source 0.0.0.0) are dropped, which is fine because addresses are
//! static and handed over by cloud-init.
//!
//! Layout, in a table of our own (`table bridge stratus` by default):
//!
//! ```text
//! map taps { type ifname : verdict }                 # "sc0ff12n0" : jump tap_sc0ff12n0
//! chain prerouting { type filter hook prerouting priority -200; iifname vmap @taps }
//! chain tap_sc0ff12n0 { ...allow own MAC/IP/ARP...; drop }
//! ```
//!
//! Rules match the tap by name, so they are in place before the tap (or the VM) exists.
//! [`NftFilter`] applies each change as one `nft -f -` transaction, atomic and idempotent
//! (`add` then `delete` removes without failing on absence). The `nft` CLI rather than a
//! netlink crate: the nftables netlink ABI is large and the Rust bindings need libnftnl,
//! while the CLI is the reference implementation and rulesets stay readable in logs.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use super::{validate_tap_name, MacAddr, NameError};

/// The default table name.
pub const DEFAULT_TABLE: &str = "stratus";

/// Errors of filter operations.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("cannot run nft")]
    Spawn(#[source] std::io::Error),
    #[error("nft failed to {action}: {stderr}")]
    Nft { action: String, stderr: String },
    #[error("cannot read nft output")]
    Output(#[source] serde_json::Error),
    /// A failure a [`FakeFilter`] was told to produce.
    #[error("injected failure: {0}")]
    Injected(String),
}

/// What may leave one tap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapIdentity {
    pub tap: String,
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
}

/// The anti-spoofing filter. Calls block.
pub trait Filter: Send + Sync {
    /// Installs (or replaces) the rules of `identity.tap`.
    fn protect(&self, identity: &TapIdentity) -> Result<(), FilterError>;
    /// Removes the rules of `tap`; fine when there are none.
    fn unprotect(&self, tap: &str) -> Result<(), FilterError>;
    /// Taps that have rules, sorted.
    fn protected(&self) -> Result<Vec<String>, FilterError>;
}

/// [`Filter`] through the `nft` command line tool.
#[derive(Debug, Clone)]
pub struct NftFilter {
    table: String,
}

impl Default for NftFilter {
    fn default() -> Self {
        Self {
            table: DEFAULT_TABLE.to_owned(),
        }
    }
}

impl NftFilter {
    /// A filter in `table bridge <table>` (tests use a table of their own).
    pub fn new(table: &str) -> Result<Self, FilterError> {
        validate_tap_name(table)?;
        Ok(Self {
            table: table.to_owned(),
        })
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Deletes the whole table, if present.
    pub fn delete_table(&self) -> Result<(), FilterError> {
        let t = &self.table;
        self.apply(
            "delete table",
            &format!("add table bridge {t}\ndelete table bridge {t}\n"),
        )
    }

    /// Whether the table exists.
    pub fn table_exists(&self) -> Result<bool, FilterError> {
        let output = Command::new("nft")
            .args(["list", "tables", "bridge"])
            .output()
            .map_err(FilterError::Spawn)?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let wanted = format!("table bridge {}", self.table);
        Ok(stdout.lines().any(|l| l.trim() == wanted))
    }

    fn skeleton(&self) -> String {
        let t = &self.table;
        format!(
            "add table bridge {t}\n\
             add map bridge {t} taps {{ type ifname : verdict; }}\n\
             add chain bridge {t} prerouting {{ type filter hook prerouting priority -200; policy accept; }}\n\
             flush chain bridge {t} prerouting\n\
             add rule bridge {t} prerouting iifname vmap @taps\n"
        )
    }

    /// The transaction that installs `id`'s rules (pure: tested without nft).
    pub fn protect_ruleset(&self, id: &TapIdentity) -> String {
        let t = &self.table;
        let tap = &id.tap;
        let chain = format!("tap_{tap}");
        let mac = id.mac;
        let ip = id.ip;
        let mut s = self.skeleton();
        s.push_str(&format!(
            "add chain bridge {t} {chain}\n\
             flush chain bridge {t} {chain}\n\
             add rule bridge {t} {chain} ether saddr != {mac} counter drop\n\
             add rule bridge {t} {chain} ether type arp arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp saddr ether {mac} arp saddr ip {ip} counter accept\n\
             add rule bridge {t} {chain} ether type ip ip saddr {ip} counter accept\n\
             add rule bridge {t} {chain} counter drop\n\
             add element bridge {t} taps {{ \"{tap}\" : jump {chain} }}\n\
             delete element bridge {t} taps {{ \"{tap}\" }}\n\
             add element bridge {t} taps {{ \"{tap}\" : jump {chain} }}\n"
        ));
        s
    }

    /// The transaction that removes `tap`'s rules (pure: tested without nft).
    pub fn unprotect_ruleset(&self, tap: &str) -> String {
        let t = &self.table;
        let chain = format!("tap_{tap}");
        let mut s = self.skeleton();
        // `add` first so that the deletes find something even when nothing was installed.
        s.push_str(&format!(
            "add chain bridge {t} {chain}\n\
             add element bridge {t} taps {{ \"{tap}\" : jump {chain} }}\n\
             delete element bridge {t} taps {{ \"{tap}\" }}\n\
             flush chain bridge {t} {chain}\n\
             delete chain bridge {t} {chain}\n"
        ));
        s
    }

    fn apply(&self, action: &str, ruleset: &str) -> Result<(), FilterError> {
        tracing::debug!(table = %self.table, %action, "nft -f -");
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(FilterError::Spawn)?;
        let written = child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(ruleset.as_bytes());
        let output = child.wait_with_output().map_err(FilterError::Spawn)?;
        written.map_err(FilterError::Spawn)?;
        if output.status.success() {
            Ok(())
        } else {
            Err(FilterError::Nft {
                action: action.to_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }
}

impl Filter for NftFilter {
    fn protect(&self, identity: &TapIdentity) -> Result<(), FilterError> {
        validate_tap_name(&identity.tap)?;
        self.apply(
            &format!("protect {}", identity.tap),
            &self.protect_ruleset(identity),
        )
    }

    fn unprotect(&self, tap: &str) -> Result<(), FilterError> {
        validate_tap_name(tap)?;
        self.apply(&format!("unprotect {tap}"), &self.unprotect_ruleset(tap))
    }

    fn protected(&self) -> Result<Vec<String>, FilterError> {
        if !self.table_exists()? {
            return Ok(Vec::new());
        }
        let output = Command::new("nft")
            .args(["-j", "list", "map", "bridge", &self.table, "taps"])
            .output()
            .map_err(FilterError::Spawn)?;
        if !output.status.success() {
            return Err(FilterError::Nft {
                action: "list taps".to_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        let json: serde_json::Value =
            serde_json::from_slice(&output.stdout).map_err(FilterError::Output)?;
        Ok(map_keys(&json))
    }
}

/// Keys of the map in `nft -j list map` output: `{"nftables": [.., {"map": {"elem":
/// [[key, verdict], ..]}}]}`.
fn map_keys(json: &serde_json::Value) -> Vec<String> {
    let mut keys: Vec<String> = json["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["map"]["elem"].as_array())
        .flatten()
        .filter_map(|pair| pair[0].as_str().map(str::to_owned))
        .collect();
    keys.sort();
    keys
}

/// One call made to a [`FakeFilter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterCall {
    Protect(TapIdentity),
    Unprotect(String),
}

#[derive(Debug, Default)]
struct FakeFilterState {
    calls: Vec<FilterCall>,
    protected: Vec<String>,
    fail_on: Option<&'static str>,
}

/// [`Filter`] in memory, recording calls; can be told to fail `"protect"` or `"unprotect"`.
#[derive(Debug, Default)]
pub struct FakeFilter {
    state: Mutex<FakeFilterState>,
}

impl FakeFilter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn fail_on(&self, operation: &'static str) {
        self.state.lock().unwrap().fail_on = Some(operation);
    }

    pub fn calls(&self) -> Vec<FilterCall> {
        self.state.lock().unwrap().calls.clone()
    }
}

impl Filter for FakeFilter {
    fn protect(&self, identity: &TapIdentity) -> Result<(), FilterError> {
        validate_tap_name(&identity.tap)?;
        let mut state = self.state.lock().unwrap();
        state.calls.push(FilterCall::Protect(identity.clone()));
        if state.fail_on == Some("protect") {
            return Err(FilterError::Injected("protect".to_owned()));
        }
        if !state.protected.contains(&identity.tap) {
            state.protected.push(identity.tap.clone());
        }
        Ok(())
    }

    fn unprotect(&self, tap: &str) -> Result<(), FilterError> {
        let mut state = self.state.lock().unwrap();
        state.calls.push(FilterCall::Unprotect(tap.to_owned()));
        if state.fail_on == Some("unprotect") {
            return Err(FilterError::Injected("unprotect".to_owned()));
        }
        state.protected.retain(|t| t != tap);
        Ok(())
    }

    fn protected(&self) -> Result<Vec<String>, FilterError> {
        let mut taps = self.state.lock().unwrap().protected.clone();
        taps.sort();
        Ok(taps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> TapIdentity {
        TapIdentity {
            tap: "sl7n0".to_owned(),
            mac: "52:54:00:00:00:07".parse().unwrap(),
            ip: Ipv4Addr::new(10, 0, 0, 7),
        }
    }

    #[test]
    fn protect_ruleset_allows_only_own_mac_ip_and_arp() {
        let rules = NftFilter::default().protect_ruleset(&identity());
        assert!(rules.contains("add chain bridge stratus tap_sl7n0\n"));
        assert!(rules.contains("ether saddr != 52:54:00:00:00:07 counter drop"));
        assert!(rules
            .contains("arp saddr ether 52:54:00:00:00:07 arp saddr ip 10.0.0.7 counter accept"));
        assert!(rules.contains("ether type ip ip saddr 10.0.0.7 counter accept"));
        assert!(rules.trim_end().ends_with("\"sl7n0\" : jump tap_sl7n0 }"));
        assert!(rules.contains("add rule bridge stratus tap_sl7n0 counter drop\n"));
    }

    #[test]
    fn unprotect_ruleset_creates_before_deleting_so_absence_is_fine() {
        let rules = NftFilter::default().unprotect_ruleset("sl7n0");
        let add_chain = rules.find("add chain bridge stratus tap_sl7n0").unwrap();
        let add_elem = rules.find("add element").unwrap();
        let del_elem = rules.find("delete element").unwrap();
        let del_chain = rules.find("delete chain").unwrap();
        assert!(add_chain < add_elem && add_elem < del_elem && del_elem < del_chain);
    }

    #[test]
    fn map_keys_reads_nft_json() {
        let json = serde_json::json!({"nftables": [{"metainfo": {}}, {"map": {"name": "taps",
            "elem": [["sl2n0", {"jump": {"target": "tap_sl2n0"}}],
                     ["sl1n0", {"jump": {"target": "tap_sl1n0"}}]]}}]});
        assert_eq!(map_keys(&json), ["sl1n0", "sl2n0"]);
        assert!(map_keys(&serde_json::json!({"nftables": [{"map": {}}]})).is_empty());
    }

    #[test]
    fn bad_table_and_tap_names_are_refused() {
        assert!(NftFilter::new("x; flush ruleset").is_err());
        let mut id = identity();
        id.tap = "a\"b".to_owned();
        assert!(FakeFilter::new().protect(&id).is_err());
    }
}
