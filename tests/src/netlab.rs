//! A test network for guests: a network namespace the test makes, holding a bridge with the
//! gateway address (the far side of the agent's taps), the controller's `[[networks]]` entry
//! for it, SSH keys and SSH into guests from inside the namespace. Test traffic goes only
//! there. Everything is removed on drop, also when a test fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::TestCloud;

/// Runs a program to the end and returns what it did.
pub fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    Command::new(cmd).args(args).output().unwrap()
}

/// Deletes the namespace and the root-side bridge and veth the test's network used.
pub struct NetGuard {
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
pub struct NetLab {
    _guard: NetGuard,
    pub netns: String,
    pub subnet: u32,
    /// The controller's `[[networks]]` entry for it.
    pub config: String,
}

impl NetLab {
    pub fn new(tag: u32, prefix_len: u8) -> Self {
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

    pub fn cloud(&self, name: &str) -> TestCloud {
        self.cloud_with(name, "", &[])
    }

    /// Like [`Self::cloud`], with more TOML for the controller's configuration and more
    /// settings (key, TOML value) for the agent; `{dir}` in an agent value stands for the
    /// cloud's directory.
    pub fn cloud_with(&self, name: &str, controller: &str, agent: &[(&str, &str)]) -> TestCloud {
        let mut cloud =
            TestCloud::start_with(name, &format!("{}\n{controller}", self.config)).unwrap();
        cloud
            .set_agent_option("network_netns", &format!("\"{}\"", self.netns))
            .unwrap();
        for (key, value) in agent {
            let value = value.replace("{dir}", &cloud.dir.display().to_string());
            cloud.set_agent_option(key, &value).unwrap();
        }
        cloud.start_agent().unwrap();
        cloud.register_appliance("appliance").unwrap();
        cloud
    }
}

/// A fresh ed25519 key pair in the cloud's directory; returns the private key's path.
pub fn ssh_key(cloud: &TestCloud) -> PathBuf {
    let key = cloud.dir.join("id_ed25519");
    assert!(run(
        "ssh-keygen",
        &["-q", "-t", "ed25519", "-N", "", "-f", key.to_str().unwrap()]
    )
    .status
    .success());
    key
}

/// `ssh root@ip command` with `key`, run inside the test's namespace.
pub fn ssh(netns: &str, key: &Path, ip: &str, command: &str) -> std::process::Output {
    run(
        "ip",
        &[
            "netns",
            "exec",
            netns,
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
            "-o",
            "LogLevel=ERROR",
            &format!("root@{ip}"),
            command,
        ],
    )
}
