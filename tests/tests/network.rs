//! A launched VM is a reachable, configured machine: it gets an address from the site's
//! network, answers ping and SSH with the user's key from inside a network namespace the test
//! made (the bridge's far side lives there), reports the host name it was given, and leaves no
//! tap, anti-spoofing chain, ISO or lease behind when killed. A guest that sends frames with a
//! forged source MAC or IP (told to by its user data) is not heard by a second VM.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use stratus_common::api::InstanceState;
use stratus_e2e::netlab::{run, ssh, ssh_key, NetLab};
use stratus_e2e::TestCloud;

const BOOT: Duration = Duration::from_secs(120);

/// Waits for a whole console line of instance `id` containing `needle`; returns it.
fn wait_console(cloud: &TestCloud, id: u64, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let console = cloud.console(id);
        let line = console
            .split_inclusive('\n')
            .find(|l| l.contains(needle) && l.ends_with('\n'));
        if let Some(line) = line {
            return line.trim().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no '{needle}' on the console of instance {id} in {timeout:?}:\n{console}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_vm_on_a_network_answers_ping_and_ssh_with_the_users_key_and_leaves_nothing_behind() {
    let lab = NetLab::new(0, 24);
    let (netns, subnet) = (lab.netns.clone(), lab.subnet);
    let cloud = lab.cloud("network");
    let key = ssh_key(&cloud);
    let public_key = std::fs::read_to_string(key.with_extension("pub")).unwrap();

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
    let login = ssh(&netns, &key, &ip, "hostname");
    assert!(
        login.status.success(),
        "ssh: {}",
        String::from_utf8_lossy(&login.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&login.stdout).trim(), "web-1");

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
fn a_guest_forging_its_mac_or_ip_is_not_heard_by_a_second_vm() {
    let lab = NetLab::new(1, 24);
    let cloud = lab.cloud("spoof");
    let key = ssh_key(&cloud);
    let public_key = std::fs::read_to_string(key.with_extension("pub")).unwrap();

    // The observer: a VM the test logs into to read what it heard.
    let observer = cloud
        .run_instance(
            "admin",
            json!({"image": "appliance", "type": "t1.micro", "name": "observer", "ssh_key": public_key.trim()}),
        )
        .unwrap();
    let observer_ip = observer.ip.clone().expect("the observer's address");
    cloud
        .wait_state("admin", observer.id, InstanceState::Running, BOOT)
        .unwrap();
    let banner = cloud.wait_banner(observer.id, BOOT).unwrap();
    assert!(banner.contains("ssh=ok"), "{banner}");

    // The forger: the appliance's test-only hook first pings and arpings the observer honestly
    // (the positive control), then takes the forged MAC and IP and keeps pinging and arpinging
    // the observer every second.
    let forged_ip = format!("10.251.{}.99", lab.subnet);
    let forged_mac = "0a:53:de:ad:be:ef";
    let user_data = format!(
        "#cloud-config\n#stratus-test: forge-mac {forged_mac}\n#stratus-test: forge-ip {forged_ip}/24\n#stratus-test: forge-target {observer_ip}\n"
    );
    let forger = cloud
        .run_instance(
            "admin",
            json!({"image": "appliance", "type": "t1.micro", "name": "forger", "user_data": user_data}),
        )
        .unwrap();
    let forger = cloud
        .wait_state("admin", forger.id, InstanceState::Running, BOOT)
        .unwrap();
    let forger_ip = forger.ip.clone().expect("the forger's address");
    let forger_mac = forger
        .nics
        .first()
        .expect("the forger's NIC")
        .mac
        .to_lowercase();
    assert_ne!(forger_ip, forged_ip);
    assert_ne!(forger_mac, forged_mac);
    cloud.wait_banner(forger.id, BOOT).unwrap();
    let honest = wait_console(&cloud, forger.id, "test hook: honest ping of", BOOT);
    assert!(
        honest.ends_with(&format!(
            "honest ping of {observer_ip} from {forger_ip} mac={forger_mac}: yes"
        )),
        "the forger could not reach the observer honestly: {honest}"
    );
    let forged = wait_console(&cloud, forger.id, "test hook: eth0 forged", BOOT);
    assert!(
        forged.contains(&format!(
            "forged mac={forged_mac} ip={forged_ip}; pinging {observer_ip}"
        )),
        "{forged}"
    );
    // Several seconds of forged pings and ARP requests.
    std::thread::sleep(Duration::from_secs(8));

    let heard = ssh(
        &lab.netns,
        &key,
        &observer_ip,
        "cat /proc/net/arp; ip neigh",
    );
    assert!(
        heard.status.success(),
        "ssh: {}",
        String::from_utf8_lossy(&heard.stderr)
    );
    let heard = String::from_utf8_lossy(&heard.stdout).to_lowercase();
    // /proc/net/arp: IP address, HW type, Flags, HW address, Mask, Device; flag 0x2 (ATF_COM)
    // is a valid entry (reachable or stale), not a failed or incomplete one.
    let complete = |flags: &str| {
        u32::from_str_radix(flags.trim_start_matches("0x"), 16).is_ok_and(|f| f & 0x2 != 0)
    };
    assert!(
        heard.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 4 && f[0] == forger_ip && complete(f[2]) && f[3] == forger_mac
        }),
        "the observer has no valid entry for the forger's honest {forger_ip} at {forger_mac}: {heard}"
    );
    assert!(
        !heard.contains(&forged_ip),
        "the observer heard the forged address: {heard}"
    );
    assert!(
        !heard.contains(forged_mac),
        "the observer heard the forged MAC: {heard}"
    );
    // Nor did the gateway's side of the network.
    let gateway =
        String::from_utf8_lossy(&run("ip", &["-n", &lab.netns, "neigh"]).stdout).to_lowercase();
    assert!(
        !gateway.contains(&forged_ip) && !gateway.contains(forged_mac),
        "the gateway heard a forged address: {gateway}"
    );
    // The anti-spoofing chain dropped what the guest sent.
    let tap = std::fs::read_to_string(cloud.instance_dir(forger.id).join("taps"))
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
