//! The whole life of a VM as its user lives it, with real guests: a reboot boots the guest
//! again and its disk keeps what it wrote; a stop and a start keep the host, the address and
//! the data; a guest that powers itself off is reported Stopped, not Failed and not restarted;
//! the console is read (and followed) over the API by its owner only; actions in the wrong
//! state are refused with 409, bad input with 400.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use stratus_common::api::InstanceState;
use stratus_e2e::netlab::NetLab;
use stratus_e2e::{TestCloud, BANNER};

const BOOT: Duration = Duration::from_secs(120);

/// User data that, at every boot, finds the mark it wrote at the end of its root disk on its
/// first boot (`DISK-KEPT <mark>`), or writes one (`DISK-MARKED <mark>`). Shared with the
/// Libcloud driver's live tests.
const MARK_SCRIPT: &str = include_str!("../guest/disk-mark.sh");

/// The instance's console as its owner reads it through the API.
fn console(cloud: &TestCloud, user: &str, id: u64) -> String {
    let (status, body) = cloud
        .get(user, &format!("/instances/{id}/console"))
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_str().map(str::to_owned).unwrap_or_default()
}

/// Waits until the API console holds `count` whole lines containing `needle`; returns them.
fn wait_lines(cloud: &TestCloud, id: u64, needle: &str, count: usize) -> Vec<String> {
    let deadline = Instant::now() + BOOT;
    loop {
        let text = console(cloud, "alice", id);
        let lines: Vec<String> = text
            .split_inclusive('\n')
            .filter(|l| l.contains(needle) && l.ends_with('\n'))
            .map(|l| l.trim().to_owned())
            .collect();
        if lines.len() >= count {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{count} '{needle}' lines not on the console of {id}:\n{text}\nagent log:\n{}",
            cloud.log("agent.log")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Log text without its terminal colour codes.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn cli(cloud: &TestCloud, args: &[&str]) -> String {
    let out = cloud.stratus("alice", args);
    assert!(
        out.status.success(),
        "stratus {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn reboot_stop_and_start_keep_the_disk_the_host_and_the_address() {
    let lab = NetLab::new(0, 24);
    let cloud = lab.cloud("power");
    cloud.create_user("alice").unwrap();
    cloud.create_user("mallory").unwrap();
    let vm = cloud
        .run_instance(
            "alice",
            json!({"image": "appliance", "type": "t1.micro", "user_data": MARK_SCRIPT}),
        )
        .unwrap();
    let (id, ip, host) = (vm.id, vm.ip.clone().unwrap(), vm.host.clone().unwrap());
    cloud
        .wait_state("alice", id, InstanceState::Running, BOOT)
        .unwrap();
    let marked = wait_lines(&cloud, id, "DISK-MARKED", 1);
    let mark = marked[0].trim_start_matches("DISK-MARKED ").to_owned();
    let banner = &wait_lines(&cloud, id, BANNER, 1)[0];
    assert!(banner.contains(&format!("ip={ip}")), "{banner}");

    // The console is its owner's (and an administrator's) only.
    assert_eq!(
        cloud
            .get("mallory", &format!("/instances/{id}/console"))
            .unwrap()
            .0,
        StatusCode::NOT_FOUND
    );
    assert!(console(&cloud, "admin", id).contains(BANNER));

    // Wrong state and bad input change nothing.
    let (status, body) = cloud
        .post("alice", &format!("/instances/{id}/start"), &json!(null))
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "wrong_state");
    assert_eq!(
        body["message"],
        format!("instance {id} is Running: only a Stopped instance can be started")
    );
    let (status, body) = cloud
        .post("alice", "/instances/abc/stop", &json!(null))
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["message"].as_str().unwrap().contains("id"), "{body}");
    assert_eq!(
        cloud
            .post("mallory", &format!("/instances/{id}/stop"), &json!(null))
            .unwrap()
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        cloud.instance("alice", id).unwrap().state,
        InstanceState::Running
    );

    // Reboot, followed live on the console: the guest boots again and finds its mark.
    let stream = cloud.follow_console("alice", id).unwrap();
    let out = cli(&cloud, &["reboot-instance", &id.to_string()]);
    assert_eq!(
        out,
        format!(" :: Rebooting instance {id} (now Rebooting)\n")
    );
    let mut lines = BufReader::new(stream).lines();
    let kept = loop {
        let line = lines.next().expect("the followed console ended").unwrap();
        if line.contains("DISK-KEPT") {
            break line;
        }
    };
    assert_eq!(kept.trim(), format!("DISK-KEPT {mark}"));
    let after = cloud
        .wait_state("alice", id, InstanceState::Running, BOOT)
        .unwrap();
    assert_eq!(wait_lines(&cloud, id, BANNER, 2).len(), 2);
    assert!(after
        .history
        .iter()
        .any(|c| c.state == InstanceState::Rebooting));

    // Stop: Stopped, still on its host with its address; nothing runs.
    let out = cli(&cloud, &["stop-instance", &id.to_string()]);
    assert_eq!(
        out,
        format!(" :: Stopping instance {id} (now PoweringOff)\n")
    );
    let stopped = cloud
        .wait_state("alice", id, InstanceState::Stopped, BOOT)
        .unwrap();
    assert_eq!(stopped.host.as_deref(), Some(host.as_str()));
    assert_eq!(stopped.ip.as_deref(), Some(ip.as_str()));
    assert!(cloud.domains().is_empty(), "{:?}", cloud.domains());
    let table = cli(&cloud, &["describe-instance", &id.to_string()]);
    assert!(table.starts_with("id  state     vcpu memory    name            cpu% host/ip\n"));
    assert!(
        table.contains(&format!(
            "Stopped   1    131072    vm-{id}            -    {ip}"
        )),
        "{table}"
    );

    // Start: the same host, the same address, the same disk.
    let out = cli(&cloud, &["start-instance", &id.to_string()]);
    assert_eq!(out, format!(" :: Starting instance {id} (now Starting)\n"));
    let started = cloud
        .wait_state("alice", id, InstanceState::Running, BOOT)
        .unwrap();
    assert_eq!(started.host.as_deref(), Some(host.as_str()));
    assert_eq!(started.ip.as_deref(), Some(ip.as_str()));
    let kept = wait_lines(&cloud, id, "DISK-KEPT", 2);
    assert_eq!(kept[1], format!("DISK-KEPT {mark}"));
    let banners = wait_lines(&cloud, id, BANNER, 3);
    assert!(banners[2].contains(&format!("ip={ip}")), "{}", banners[2]);

    // Its CPU use shows once its host measured it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while cloud.instance("alice", id).unwrap().cpu_percent.is_none() {
        assert!(Instant::now() < deadline, "no CPU figure");
        std::thread::sleep(Duration::from_millis(200));
    }

    cli(&cloud, &["kill-instance", &id.to_string()]);
    cloud
        .wait_state("alice", id, InstanceState::Done, BOOT)
        .unwrap();
}

#[test]
fn a_guest_that_powers_itself_off_is_stopped_not_failed_nor_restarted() {
    let lab = NetLab::new(1, 24);
    let cloud = lab.cloud("poweroff");
    cloud.create_user("alice").unwrap();
    let script = "#!/bin/sh\necho POWERING-OFF\nsync\npoweroff -f\n";
    let vm = cloud
        .run_instance(
            "alice",
            json!({"image": "appliance", "type": "t1.micro", "user_data": script}),
        )
        .unwrap();
    let stopped = cloud
        .wait_state("alice", vm.id, InstanceState::Stopped, BOOT)
        .unwrap();
    assert_eq!(
        stopped.reason.as_deref(),
        Some("the guest powered off (or its emulator stopped)")
    );
    assert!(console(&cloud, "alice", vm.id).contains("POWERING-OFF"));
    // The agent acted on the Stopped instance (took its tap away) and started nothing.
    let marker = format!("instance{{id={}}}", vm.id);
    let deadline = Instant::now() + BOOT;
    while !plain(&cloud.log("agent.log"))
        .lines()
        .any(|l| l.contains(&marker) && l.contains("instance stopped"))
    {
        assert!(Instant::now() < deadline, "{}", cloud.log("agent.log"));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(cloud.domains().is_empty(), "{:?}", cloud.domains());
    let now = cloud.instance("alice", vm.id).unwrap();
    assert_eq!(now.state, InstanceState::Stopped);
    assert_eq!(console(&cloud, "alice", vm.id).matches(BANNER).count(), 1);
    assert!(now.ip.is_some(), "a Stopped instance keeps its address");
}
