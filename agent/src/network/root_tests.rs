//! Tests against the real kernel (rtnetlink, /dev/net/tun, nftables); they need root. Every
//! namespace, link and nft table is made with a name unique to the test and removed by a
//! guard, also when the test fails. Frames only travel between the test's own taps and
//! namespaces: the bridges have no address and no uplink.

use std::fs::File;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::links::{open_tap, veth_names};
use super::*;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process and call, e.g. `slt4242a3`.
fn unique(tag: &str) -> String {
    let name = format!(
        "slt{}{tag}{}",
        std::process::id() % 100_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    assert!(name.len() <= 12, "{name}");
    name
}

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deletes what a test made, in reverse order, when dropped.
#[derive(Default)]
struct Cleanup(Vec<Vec<String>>);

impl Cleanup {
    fn later(&mut self, args: &[&str]) {
        self.0.push(args.iter().map(|s| s.to_string()).collect());
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        while let Some(args) = self.0.pop() {
            let _ = Command::new(&args[0])
                .args(&args[1..])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

fn netns(cleanup: &mut Cleanup) -> String {
    let ns = unique("ns");
    run(&["ip", "netns", "add", &ns]);
    cleanup.later(&["ip", "netns", "del", &ns]);
    ns
}

/// `ip -j link show` of `name` in `ns` (root when `None`), if it exists.
fn link(ns: Option<&str>, name: &str) -> Option<serde_json::Value> {
    let mut args = vec!["ip"];
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    args.extend(["-j", "-d", "link", "show", "dev", name]);
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    Some(v[0].clone())
}

fn master(ns: Option<&str>, name: &str) -> Option<String> {
    link(ns, name).and_then(|l| l["master"].as_str().map(str::to_owned))
}

/// Packets the IPv4 accept rule of `tap` counted.
fn ipv4_accepted(table: &str, tap: &str) -> u64 {
    let chain = run(&[
        "nft",
        "list",
        "chain",
        "bridge",
        table,
        &format!("tap_{tap}"),
    ]);
    let line = chain
        .lines()
        .find(|l| l.contains("ip saddr"))
        .expect("IPv4 rule");
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "packets").expect("counter");
    words[at + 1].parse().unwrap()
}

fn disable_ipv6(name: &str) {
    // Keeps the host from sending its own IPv6 autoconfiguration into the test bridge.
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
}

#[test]
fn bridge_is_idempotent_in_a_namespace_with_uplink() {
    let mut cleanup = Cleanup::default();
    let ns = netns(&mut cleanup);
    let br = unique("b");
    // The uplink: a veth whose peer sits in the test namespace (no dummy module here).
    let uplink = unique("u");
    run(&[
        "ip",
        "link",
        "add",
        &uplink,
        "type",
        "veth",
        "peer",
        "name",
        "uplinkpeer",
        "netns",
        &ns,
    ]);
    cleanup.later(&["ip", "link", "del", &uplink]);
    cleanup.later(&["ip", "link", "del", &br]);
    let links = RtnetlinkLinks::new();

    for _ in 0..2 {
        links
            .ensure_bridge(&br, Some(&ns), Some(&uplink), None)
            .unwrap();
        disable_ipv6(&br);
    }
    let (v0, v1) = veth_names(&br);
    let root = link(None, &br).expect("root bridge");
    assert_eq!(root["linkinfo"]["info_kind"], "bridge");
    assert_eq!(
        link(Some(&ns), &br).unwrap()["linkinfo"]["info_kind"],
        "bridge"
    );
    assert_eq!(master(None, &v0).as_deref(), Some(br.as_str()));
    assert_eq!(master(Some(&ns), &v1).as_deref(), Some(br.as_str()));
    assert_eq!(master(None, &uplink).as_deref(), Some(br.as_str()));
    // This machine's kernel has no 8021q (`ip link add .. type vlan` fails), so VLAN
    // sub-interfaces are covered by the fake-based tests only.

    links.delete_bridge(&br, Some(&ns)).unwrap();
    assert!(link(None, &br).is_none());
    assert!(link(None, &v0).is_none());
    assert!(link(Some(&ns), &br).is_none());
    links.delete_bridge(&br, Some(&ns)).unwrap();
    assert!(matches!(
        links.ensure_bridge(&br, Some("sltnosuchns"), None, None),
        Err(LinkError::NoNamespace(_))
    ));
    links.delete_bridge(&br, None).unwrap();
}

#[test]
fn tap_gets_mac_master_and_is_listed_then_deleted() {
    let mut cleanup = Cleanup::default();
    let br = unique("b");
    let tap = unique("t");
    cleanup.later(&["ip", "link", "del", &br]);
    cleanup.later(&["ip", "link", "del", &tap]);
    let links = RtnetlinkLinks::new();
    links.ensure_bridge(&br, None, None, None).unwrap();
    disable_ipv6(&br);
    let mac: MacAddr = "52:54:00:5a:00:01".parse().unwrap();
    for _ in 0..2 {
        links.create_tap(&tap, mac, &br).unwrap();
    }
    let l = link(None, &tap).expect("tap exists");
    assert_eq!(l["address"], "52:54:00:5a:00:01");
    assert_eq!(l["master"], br.as_str());
    assert_eq!(l["linkinfo"]["info_kind"], "tun");
    assert_eq!(l["linkinfo"]["info_data"]["type"], "tap");
    assert_eq!(l["linkinfo"]["info_data"]["pi"], false);
    assert_eq!(l["linkinfo"]["info_data"]["persist"], true);
    assert_eq!(l["linkinfo"]["info_data"]["user"], "root");
    assert!(l["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    assert_eq!(links.list_taps(&tap).unwrap(), std::slice::from_ref(&tap));
    assert!(links.list_taps(&br).unwrap().is_empty());

    assert!(matches!(
        links.create_tap(&tap, mac, "sltnosuchbr"),
        Err(LinkError::NotFound(_))
    ));
    assert!(matches!(
        links.delete_tap(&br),
        Err(LinkError::WrongKind { .. })
    ));
    assert!(links.delete_tap(&tap).unwrap());
    assert!(!links.delete_tap(&tap).unwrap());
    assert!(link(None, &tap).is_none());
    links.delete_bridge(&br, None).unwrap();
}

/// A "VM": the test holds the tap open as QEMU would and reads/writes raw frames.
struct Vm {
    tap: String,
    mac: MacAddr,
    ip: Ipv4Addr,
    file: File,
}

impl Vm {
    fn send(&mut self, frame: &[u8]) {
        self.file.write_all(frame).unwrap();
    }

    /// Whether a frame containing `marker` arrives within `wait`.
    fn receives(&mut self, marker: &[u8], wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 2048];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::POLLIN)];
            if poll(&mut fds, PollTimeout::from(ms)).unwrap() == 0 {
                return false;
            }
            let n = self.file.read(&mut buf).unwrap();
            if buf[..n].windows(marker.len()).any(|w| w == marker) {
                return true;
            }
        }
    }
}

const BROADCAST: [u8; 6] = [0xff; 6];

fn ether(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// An ARP request from (`eth_src`; sender `sha`/`spa`) for `tpa`.
fn arp(eth_src: [u8; 6], sha: [u8; 6], spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut f = ether(BROADCAST, eth_src, 0x0806);
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&tpa.octets());
    f
}

/// A UDP datagram carrying `marker`.
fn udp(dst: [u8; 6], src: [u8; 6], sip: Ipv4Addr, dip: Ipv4Addr, marker: &[u8]) -> Vec<u8> {
    let mut f = ether(dst, src, 0x0800);
    let total = (20 + 8 + marker.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&sip.octets());
    ip.extend_from_slice(&dip.octets());
    // A valid header checksum: br_netfilter (loaded on many hosts) drops bad ones.
    let mut sum = ip.chunks(2).fold(0u32, |acc, w| {
        acc + u32::from(u16::from_be_bytes([w[0], w[1]]))
    });
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let sum = !(sum as u16);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&40001u16.to_be_bytes());
    f.extend_from_slice(&((8 + marker.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(marker);
    f
}

#[test]
fn anti_spoofing_drops_forged_frames_and_passes_legit_ones() {
    let mut cleanup = Cleanup::default();
    let ns = netns(&mut cleanup);
    let br = unique("b");
    let table = unique("nft");
    cleanup.later(&["ip", "link", "del", &br]);
    cleanup.later(&["ip", "link", "del", &veth_names(&br).0]);
    cleanup.later(&["nft", "delete", "table", "bridge", &table]);
    let links: Arc<dyn Links> = Arc::new(RtnetlinkLinks::new());
    let nft = NftFilter::new(&table).unwrap();
    let filter: Arc<dyn Filter> = Arc::new(nft.clone());
    let net = Network::new(links.clone(), filter.clone(), Uplink::default());

    let mut vms = Vec::new();
    for (i, last) in [(1u8, 11u8), (2, 12)] {
        let tap = unique("t");
        cleanup.later(&["ip", "link", "del", &tap]);
        let plan = NicPlan {
            tap: tap.clone(),
            mac: MacAddr::new([0x52, 0x54, 0, 0x5a, 0, i]),
            ip: Ipv4Addr::new(10, 99, 0, last),
            bridge: br.clone(),
            netns: Some(ns.clone()),
        };
        net.attach(&plan).unwrap().keep();
        disable_ipv6(&br);
        disable_ipv6(&tap);
        disable_ipv6(&veth_names(&br).0);
        vms.push(Vm {
            file: open_tap(&tap).unwrap(),
            tap,
            mac: plan.mac,
            ip: plan.ip,
        });
    }
    let mut taps: Vec<String> = vms.iter().map(|v| v.tap.clone()).collect();
    taps.sort();
    assert_eq!(filter.protected().unwrap(), taps);
    let [a, b] = &mut vms[..] else { unreachable!() };
    let wait = Duration::from_millis(400);
    let (a_mac, b_mac, a_ip, b_ip) = (a.mac.octets(), b.mac.octets(), a.ip, b.ip);
    let stranger_mac = [0x52, 0x54, 0, 0x5a, 0, 0x99];
    let tpa = |n: u8| Ipv4Addr::new(10, 99, 1, n);
    let tpa_bytes = |n: u8| tpa(n).octets();

    // Legit ARP and IPv4 from A reach B.
    a.send(&arp(a_mac, a_mac, a_ip, tpa(1)));
    assert!(b.receives(&tpa_bytes(1), wait), "legit ARP was dropped");
    b.send(&arp(b_mac, b_mac, b_ip, tpa(6)));
    assert!(
        a.receives(&tpa_bytes(6), wait),
        "legit ARP from B was dropped"
    );
    // Legit IPv4 is accepted by our rules. (Whether it then reaches B depends on the host:
    // here br_netfilter, loaded with bridge-nf-call-iptables=1, drops the test's bare UDP
    // frames after our chain accepted them, so the verdict is read from the rule counter.)
    a.send(&udp(b_mac, a_mac, a_ip, b_ip, b"legit-udp"));
    assert_eq!(
        ipv4_accepted(&table, &a.tap),
        1,
        "legit IPv4 was not accepted"
    );

    // Forged source MAC (a stranger's, or B's own) from A.
    a.send(&arp(stranger_mac, stranger_mac, a_ip, tpa(2)));
    a.send(&arp(b_mac, b_mac, a_ip, tpa(3)));
    a.send(&udp(b_mac, stranger_mac, a_ip, b_ip, b"forged-mac"));
    // ARP claiming B's address, or with a sender MAC not A's own.
    a.send(&arp(a_mac, a_mac, b_ip, tpa(4)));
    a.send(&arp(a_mac, stranger_mac, a_ip, tpa(5)));
    // IPv4 from B's address, and from 0.0.0.0 (DHCP-like).
    a.send(&udp(b_mac, a_mac, b_ip, b_ip, b"forged-ip"));
    a.send(&udp(
        BROADCAST,
        a_mac,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        b"dhcp-ish",
    ));
    // Other ethertypes (IPv6) from A.
    let mut v6 = ether(BROADCAST, a_mac, 0x86dd);
    v6.extend_from_slice(b"ipv6-frame");
    a.send(&v6);
    // A proof that the path still works, sent last: everything before it is on B's queue.
    a.send(&arp(a_mac, a_mac, a_ip, tpa(9)));
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        let mut fds = [PollFd::new(b.file.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(200u16)).unwrap() == 0 {
            break;
        }
        let n = b.file.read(&mut buf).unwrap();
        seen.push(buf[..n].to_vec());
    }
    let got = |marker: &[u8]| {
        seen.iter()
            .any(|f| f.windows(marker.len()).any(|w| w == marker))
    };
    assert!(
        got(&tpa_bytes(9)),
        "the legit sentinel frame did not arrive"
    );
    assert_eq!(ipv4_accepted(&table, &a.tap), 1, "forged IPv4 was accepted");
    for n in 2..=5 {
        assert!(!got(&tpa_bytes(n)), "forged ARP {n} passed");
    }
    for marker in [&b"forged-mac"[..], b"forged-ip", b"dhcp-ish", b"ipv6-frame"] {
        assert!(!got(marker), "{} passed", String::from_utf8_lossy(marker));
    }

    // Detach removes rules and taps; the table's own cleanup then leaves nothing.
    drop(vms);
    for tap in &taps {
        net.detach(tap).unwrap();
        net.detach(tap).unwrap();
        assert!(link(None, tap).is_none(), "{tap} left behind");
    }
    assert!(filter.protected().unwrap().is_empty());
    links.delete_bridge(&br, Some(&ns)).unwrap();
    nft.delete_table().unwrap();
    assert!(!nft.table_exists().unwrap());
    assert!(!run(&["nft", "list", "tables"]).contains(&table));
}

#[test]
fn rules_exist_before_the_tap_and_attach_rolls_back_on_failure() {
    let mut cleanup = Cleanup::default();
    let table = unique("nft");
    let tap = unique("t");
    cleanup.later(&["nft", "delete", "table", "bridge", &table]);
    cleanup.later(&["ip", "link", "del", &tap]);
    let nft = NftFilter::new(&table).unwrap();
    // The bridge does not exist: the tap step fails after the rules went in.
    let plan = NicPlan {
        tap: tap.clone(),
        mac: "52:54:00:5a:00:03".parse().unwrap(),
        ip: Ipv4Addr::new(10, 99, 0, 13),
        bridge: unique("b"),
        netns: None,
    };
    nft.protect(&TapIdentity {
        tap: tap.clone(),
        mac: plan.mac,
        ip: plan.ip,
    })
    .unwrap();
    assert_eq!(
        nft.protected().unwrap(),
        std::slice::from_ref(&tap),
        "rules need no tap"
    );
    nft.protect(&TapIdentity {
        tap: tap.clone(),
        mac: plan.mac,
        ip: plan.ip,
    })
    .unwrap();
    let ruleset = run(&[
        "nft",
        "list",
        "chain",
        "bridge",
        &table,
        &format!("tap_{tap}"),
    ]);
    let drops = ruleset
        .lines()
        .filter(|l| l.trim_end().ends_with("drop"))
        .count();
    assert_eq!(
        drops, 2,
        "protect twice must not duplicate rules: {ruleset}"
    );

    // Real taps and rules, but a bridge step that makes nothing, so the tap step fails.
    struct NoBridgeTap(RtnetlinkLinks);
    impl Links for NoBridgeTap {
        fn ensure_bridge(
            &self,
            _: &str,
            _: Option<&str>,
            _: Option<&str>,
            _: Option<u16>,
        ) -> Result<(), LinkError> {
            Ok(())
        }
        fn delete_bridge(&self, n: &str, ns: Option<&str>) -> Result<(), LinkError> {
            self.0.delete_bridge(n, ns)
        }
        fn create_tap(&self, n: &str, m: MacAddr, b: &str) -> Result<(), LinkError> {
            self.0.create_tap(n, m, b)
        }
        fn delete_tap(&self, n: &str) -> Result<bool, LinkError> {
            self.0.delete_tap(n)
        }
        fn list_taps(&self, p: &str) -> Result<Vec<String>, LinkError> {
            self.0.list_taps(p)
        }
    }
    let net = Network::new(
        Arc::new(NoBridgeTap(RtnetlinkLinks::new())),
        Arc::new(nft.clone()),
        Uplink::default(),
    );
    let err = net.attach(&plan).err().expect("no bridge: attach fails");
    assert!(matches!(err, NetworkError::Tap { .. }), "{err}");
    assert!(link(None, &tap).is_none(), "half-made tap left behind");
    assert!(nft.protected().unwrap().is_empty(), "rules left behind");
    nft.delete_table().unwrap();
    assert!(!nft.table_exists().unwrap());
}
