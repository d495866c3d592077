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

#[test]
fn a_vm_on_a_network_answers_ping_and_ssh_with_the_users_key_and_leaves_nothing_behind() {
    let pid = std::process::id();
    let subnet = 10 + pid % 200;
    let (netns, bridge) = (format!("slnet{pid}"), format!("sb{}", pid % 100_000));
    let _guard = NetGuard {
        netns: netns.clone(),
        bridge: bridge.clone(),
    };
    assert!(run("ip", &["netns", "add", &netns]).status.success());
    // The far side of the bridge, with the network's gateway address: the test's own host.
    assert!(run(
        "ip",
        &["-n", &netns, "link", "add", &bridge, "type", "bridge"]
    )
    .status
    .success());
    let gateway = format!("10.251.{subnet}.1");
    assert!(run(
        "ip",
        &[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{gateway}/24"),
            "dev",
            &bridge
        ]
    )
    .status
    .success());
    assert!(run("ip", &["-n", &netns, "link", "set", &bridge, "up"])
        .status
        .success());

    let network = format!(
        "[[networks]]\nname = \"public\"\ncidr = \"10.251.{subnet}.0/24\"\ngateway = \"{gateway}\"\nbridge = \"{bridge}\"\n"
    );
    let mut cloud = TestCloud::start_with("network", &network).unwrap();
    cloud
        .set_agent_option("network_netns", &format!("\"{netns}\""))
        .unwrap();
    cloud.start_agent().unwrap();
    cloud.register_appliance("appliance").unwrap();
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
