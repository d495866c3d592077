//! A launched VM is a reachable, configured machine: it gets an address from the site's
//! network, answers ping and SSH with the user's key from inside a network namespace the test
//! made (the bridge's far side lives there), reports the host name it was given, and leaves no
//! tap, anti-spoofing chain, ISO or lease behind when killed.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use stratus_common::api::InstanceState;
use stratus_e2e::TestCloud;

const BOOT: Duration = Duration::from_secs(120);

fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    Command::new(cmd).args(args).output().unwrap()
}

/// Deletes the namespace and the root-side bridge and veth the test's network used.
struct NetGuard {
    netns: String,
    bridge: String,
}

impl Drop for NetGuard {
    fn drop(&mut self) {
        let _ = run("ip", &["link", "del", &format!("{}-v0", self.bridge)]);
        let _ = run("ip", &["link", "del", &self.bridge]);
        let _ = run("ip", &["netns", "del", &self.netns]);
    }
}

/// A test network: a namespace holding the bridge's far side with the gateway address.
struct NetLab {
    _guard: NetGuard,
    netns: String,
    subnet: u32,
    /// The controller's `[[networks]]` entry for it.
    config: String,
}

impl NetLab {
    fn new(tag: u32, prefix_len: u8) -> Self {
        let pid = std::process::id();
        let subnet = (10 + pid % 200 + tag) % 250;
        let (netns, bridge) = (
            format!("slnet{tag}x{pid}"),
            format!("sb{tag}x{}", pid % 100_000),
        );
        let guard = NetGuard {
            netns: netns.clone(),
            bridge: bridge.clone(),
        };
        assert!(run("ip", &["netns", "add", &netns]).status.success());
        assert!(run(
            "ip",
            &["-n", &netns, "link", "add", &bridge, "type", "bridge"]
        )
        .status
        .success());
        let gateway = format!("10.251.{subnet}.1");
        let cidr = format!("{gateway}/{prefix_len}");
        assert!(
            run("ip", &["-n", &netns, "addr", "add", &cidr, "dev", &bridge])
                .status
                .success()
        );
        assert!(run("ip", &["-n", &netns, "link", "set", &bridge, "up"])
            .status
            .success());
        let config = format!(
            "[[networks]]\nname = \"public\"\ncidr = \"10.251.{subnet}.0/{prefix_len}\"\ngateway = \"{gateway}\"\nbridge = \"{bridge}\"\n"
        );
        Self {
            _guard: guard,
            netns,
            subnet,
            config,
        }
    }

    fn cloud(&self, name: &str) -> TestCloud {
        let mut cloud = TestCloud::start_with(name, &self.config).unwrap();
        cloud
            .set_agent_option("network_netns", &format!("\"{}\"", self.netns))
            .unwrap();
        cloud.start_agent().unwrap();
        cloud.register_appliance("appliance").unwrap();
        cloud
    }
}

#[test]
fn a_vm_on_a_network_answers_ping_and_ssh_with_the_users_key_and_leaves_nothing_behind() {
    let lab = NetLab::new(0, 24);
    let (netns, subnet) = (lab.netns.clone(), lab.subnet);
    let cloud = lab.cloud("network");
    let key = cloud.dir.join("id_ed25519");
    assert!(run(
        "ssh-keygen",
        &["-q", "-t", "ed25519", "-N", "", "-f", key.to_str().unwrap()]
    )
    .status
    .success());
    let public_key = std::fs::read_to_string(cloud.dir.join("id_ed25519.pub")).unwrap();

    let vm = cloud
        .run_instance(
            "admin",
            json!({"image": "appliance", "type": "t1.micro", "name": "web-1", "ssh_key": public_key.trim()}),
        )
        .unwrap();
    let ip = vm.ip.clone().expect("an address from the public network");
    assert_eq!(
        ip,
        format!("10.251.{subnet}.2"),
        "the lowest free address after the gateway"
    );
    cloud
        .wait_state("admin", vm.id, InstanceState::Running, BOOT)
        .unwrap();
    let banner = cloud.wait_banner(vm.id, BOOT).unwrap();
    assert!(banner.contains("hostname=web-1"), "{banner}");
    assert!(
        banner.contains(&format!("ip={ip}")) && banner.contains("ssh=ok"),
        "{banner}"
    );

    let ping = run(
        "ip",
        &["netns", "exec", &netns, "ping", "-c", "3", "-W", "5", &ip],
    );
    if !ping.status.success() {
        let mut report = String::from_utf8_lossy(&ping.stdout).into_owned();
        for (cmd, args) in [
            ("ip", vec!["-br", "link"]),
            ("bridge", vec!["link"]),
            ("ip", vec!["-n", netns.as_str(), "-br", "link"]),
            ("ip", vec!["-n", netns.as_str(), "neigh"]),
            ("nft", vec!["list", "table", "bridge", "stratus"]),
        ] {
            let out = run(cmd, &args);
            report.push_str(&format!(
                "\n$ {cmd} {}\n{}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        report.push_str(&format!("\nconsole:\n{}", cloud.console(vm.id)));
        panic!("ping failed:\n{report}");
    }
    let ssh = run(
        "ip",
        &[
            "netns",
            "exec",
            &netns,
            "ssh",
            "-i",
            key.to_str().unwrap(),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "BatchMode=yes",
            &format!("root@{ip}"),
            "hostname",
        ],
    );
    assert!(
        ssh.status.success(),
        "ssh: {}",
        String::from_utf8_lossy(&ssh.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ssh.stdout).trim(), "web-1");

    let dir = cloud.instance_dir(vm.id);
    let tap = std::fs::read_to_string(dir.join("taps"))
        .unwrap()
        .trim()
        .to_owned();
    assert!(Path::new(&format!("/sys/class/net/{tap}")).exists());
    assert!(run(
        "nft",
        &["list", "chain", "bridge", "stratus", &format!("tap_{tap}")]
    )
    .status
    .success());
    let (_, net) = cloud.get("admin", "/networks/public").unwrap();
    assert_eq!(net["leases_used"], 1, "{net}");

    cloud
        .delete("admin", &format!("/instances/{}", vm.id))
        .unwrap();
    cloud
        .wait_state("admin", vm.id, InstanceState::Done, BOOT)
        .unwrap();
    assert!(
        !Path::new(&format!("/sys/class/net/{tap}")).exists(),
        "tap removed"
    );
    assert!(
        !run(
            "nft",
            &["list", "chain", "bridge", "stratus", &format!("tap_{tap}")]
        )
        .status
        .success(),
        "anti-spoofing chain removed"
    );
    assert!(!dir.exists(), "ISO and disk removed");
    let (_, net) = cloud.get("admin", "/networks/public").unwrap();
    assert_eq!(net["leases_used"], 0, "lease released: {net}");
}

#[test]
fn a_guest_forging_its_mac_or_ip_is_not_heard() {
    let lab = NetLab::new(1, 24);
    let cloud = lab.cloud("spoof");
    let forged_ip = format!("10.251.{}.99", lab.subnet);
    let forged_mac = "0a:53:de:ad:be:ef";
    // The appliance's test-only hook: after boot, take these and keep pinging and arpinging
    // the gateway every second.
    let user_data = format!("#cloud-config\n#stratus-test: forge-mac {forged_mac}\n#stratus-test: forge-ip {forged_ip}/24\n");
    let vm = cloud
        .run_instance(
            "admin",
            json!({"image": "appliance", "type": "t1.micro", "user_data": user_data}),
        )
        .unwrap();
    cloud
        .wait_state("admin", vm.id, InstanceState::Running, BOOT)
        .unwrap();
    cloud.wait_banner(vm.id, BOOT).unwrap();
    std::thread::sleep(Duration::from_secs(6));
    let neighbours =
        String::from_utf8_lossy(&run("ip", &["-n", &lab.netns, "neigh"]).stdout).into_owned();
    assert!(
        !neighbours.contains(&forged_ip),
        "the gateway heard the forged address: {neighbours}"
    );
    assert!(
        !neighbours.contains(forged_mac),
        "the gateway heard the forged MAC: {neighbours}"
    );
    // The anti-spoofing chain dropped what the guest sent.
    let tap = std::fs::read_to_string(cloud.instance_dir(vm.id).join("taps"))
        .unwrap()
        .trim()
        .to_owned();
    let chain = String::from_utf8_lossy(
        &run(
            "nft",
            &["list", "chain", "bridge", "stratus", &format!("tap_{tap}")],
        )
        .stdout,
    )
    .into_owned();
    let dropped_forged_mac = chain
        .lines()
        .find(|l| l.contains("ether saddr !="))
        .and_then(|l| l.split("packets ").nth(1))
        .and_then(|n| n.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(
        dropped_forged_mac > 0,
        "no forged frame was dropped: {chain}"
    );
}

#[test]
fn an_exhausted_pool_is_a_clear_error_and_creates_nothing() {
    // A /30: the gateway takes one of the two host addresses, one is left.
    let lab = NetLab::new(2, 30);
    let cloud = lab.cloud("exhausted");
    let first = cloud
        .run_instance("admin", json!({"image": "appliance", "type": "t1.micro"}))
        .unwrap();
    assert!(first.ip.is_some());
    let ids = |cloud: &TestCloud| -> Vec<u64> {
        let list = cloud.get("admin", "/instances").unwrap().1;
        list.as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_u64().unwrap())
            .collect()
    };
    let before = ids(&cloud);
    let (status, body) = cloud
        .post(
            "admin",
            "/instances",
            &json!({"image": "appliance", "type": "t1.micro"}),
        )
        .unwrap();
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "network_exhausted");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no free address"),
        "{body}"
    );
    assert_eq!(ids(&cloud), before, "nothing was created");
    cloud
        .delete("admin", &format!("/instances/{}", first.id))
        .unwrap();
    cloud
        .wait_state("admin", first.id, InstanceState::Done, BOOT)
        .unwrap();
    // The address is free again.
    let again = cloud
        .run_instance("admin", json!({"image": "appliance", "type": "t1.micro"}))
        .unwrap();
    assert_eq!(again.ip, first.ip);
}

#[test]
fn a_hundred_launch_and_kill_cycles_leave_no_tap_chain_lease_or_file_behind() {
    let lab = NetLab::new(3, 24);
    let cloud = lab.cloud("cycles");
    for cycle in 0..100 {
        let vm = cloud
            .run_instance("admin", json!({"image": "appliance", "type": "t1.micro"}))
            .unwrap();
        cloud
            .wait_state("admin", vm.id, InstanceState::Running, BOOT)
            .unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
        cloud
            .delete("admin", &format!("/instances/{}", vm.id))
            .unwrap();
        cloud
            .wait_state("admin", vm.id, InstanceState::Done, BOOT)
            .unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
    }
    let cluster4: String = cloud
        .cluster_prefix()
        .trim_start_matches("stratus-")
        .chars()
        .take(4)
        .collect();
    let taps: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with(&format!("s{cluster4}")))
        .collect();
    assert!(taps.is_empty(), "taps left: {taps:?}");
    let table =
        String::from_utf8_lossy(&run("nft", &["list", "table", "bridge", "stratus"]).stdout)
            .into_owned();
    assert!(
        !table.contains(&format!("tap_s{cluster4}")),
        "chains left: {table}"
    );
    let (_, net) = cloud.get("admin", "/networks/public").unwrap();
    assert_eq!(net["leases_used"], 0, "{net}");
    let left = std::fs::read_dir(cloud.dir.join("agent/instances")).map_or(0, |d| d.count());
    assert_eq!(left, 0, "instance directories left");
    assert!(cloud.domains().is_empty());
}
