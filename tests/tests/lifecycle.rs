//! An instance's whole life through the API and through the CLI: it boots a real guest whose
//! banner shows on the serial console, and a kill removes the domain and every file made for it.

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use stratus_common::api::InstanceState;
use stratus_e2e::{bin_dir, TestCloud};

const BOOT: Duration = Duration::from_secs(120);

#[test]
fn run_an_instance_see_its_banner_then_kill_it_and_nothing_is_left() {
    let cloud = TestCloud::with_agent("lifecycle").unwrap();
    let created = cloud
        .run_instance(
            "admin",
            json!({"image": "appliance", "type": "t1.micro", "name": "web-1"}),
        )
        .unwrap();
    assert_eq!(created.name, "web-1");
    assert_eq!(created.host.as_deref(), Some(cloud.host_name.as_str()));
    let running = cloud
        .wait_state("admin", created.id, InstanceState::Running, BOOT)
        .unwrap();
    let states: Vec<_> = running.history.iter().map(|c| c.state).collect();
    assert_eq!(states.first(), Some(&InstanceState::Pending));
    assert_eq!(states.last(), Some(&InstanceState::Running));

    let banner = cloud.wait_banner(created.id, BOOT).unwrap();
    assert!(
        banner.contains("disk=ok"),
        "the guest mounted its disk through the overlay: {banner}"
    );
    assert_eq!(cloud.domains(), vec![created.domain.clone()]);
    let overlay = cloud.instance_dir(created.id).join("disk.qcow2");
    assert!(overlay.exists());
    let info = Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(&overlay)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["format"], "qcow2");
    assert_eq!(
        info["backing-filename-format"], "qcow2",
        "an explicit backing format is always given"
    );

    let (status, killed) = cloud
        .delete("admin", &format!("/instances/{}", created.id))
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(killed["state"], "Stopping");
    let done = cloud
        .wait_state("admin", created.id, InstanceState::Done, BOOT)
        .unwrap();
    assert_eq!(done.history.last().unwrap().state, InstanceState::Done);
    assert!(cloud.domains().is_empty(), "domain gone");
    assert!(
        !cloud.instance_dir(created.id).exists(),
        "overlay and console log removed"
    );
    let (status, again) = cloud
        .delete("admin", &format!("/instances/{}", created.id))
        .unwrap();
    assert_eq!(status, 409, "{again}");
}

fn cli(cloud: &TestCloud, name: &str, args: &[&str]) -> std::process::Output {
    // The classic name, as `make install` links it.
    let link = cloud.dir.join(format!("stratus-{name}"));
    if !link.exists() {
        std::os::unix::fs::symlink(bin_dir().join("stratus"), &link).unwrap();
    }
    Command::new(&link)
        .args(args)
        .env("HOME", &cloud.dir)
        .env("STRATUSLAB_ENDPOINT", format!("127.0.0.1:{}", cloud.port))
        .env("STRATUSLAB_CA_CERTIFICATE", cloud.ca_certificate())
        .env("STRATUSLAB_USERNAME", "admin")
        .env("STRATUSLAB_PASSWORD", &cloud.admin_password)
        .output()
        .unwrap()
}

#[test]
fn the_guide_workflow_through_the_cli() {
    let cloud = TestCloud::with_agent("cli").unwrap();
    let out = cli(&cloud, "run-instance", &["appliance", "-t", "t1.micro"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(":: Starting machine(s) ::"), "{stdout}");
    let id: u64 = stdout
        .lines()
        .find_map(|l| l.split("(vm ID: ").nth(1))
        .and_then(|rest| rest.trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("no vm ID in {stdout}"));
    assert!(stdout.contains(":: Done!"), "{stdout}");

    cloud
        .wait_state("admin", id, InstanceState::Running, BOOT)
        .unwrap();
    let out = cli(&cloud, "describe-instance", &[&id.to_string()]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    let row = table
        .lines()
        .find(|l| l.starts_with(&id.to_string()))
        .unwrap_or_else(|| panic!("{table}"));
    let cols: Vec<_> = row.split_whitespace().collect();
    assert_eq!(cols[1], "Running", "{table}");
    assert_eq!(cols[3], "131072", "memory in KiB as in the guide: {table}");

    let out = cli(&cloud, "kill-instance", &[&id.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cloud
        .wait_state("admin", id, InstanceState::Done, BOOT)
        .unwrap();

    let out = cli(&cloud, "describe-instance", &["999"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "[ERROR] instance 999 not found"
    );
}

#[test]
fn a_wrong_password_a_wrong_ca_and_an_unreachable_endpoint_are_told_plainly() {
    let cloud = TestCloud::start("cli-errors").unwrap();
    let describe = |ca: Option<&std::path::Path>, password: &str| {
        let mut command = Command::new(bin_dir().join("stratus"));
        command
            .args(["describe-instance"])
            .env("HOME", &cloud.dir)
            .env("STRATUSLAB_ENDPOINT", format!("127.0.0.1:{}", cloud.port))
            .env("STRATUSLAB_USERNAME", "admin")
            .env("STRATUSLAB_PASSWORD", password);
        if let Some(ca) = ca {
            command.env("STRATUSLAB_CA_CERTIFICATE", ca);
        }
        command.output().unwrap()
    };
    // The endpoint is TLS: with the site CA the CLI works.
    let out = describe(Some(&cloud.ca_certificate()), &cloud.admin_password);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Another CA (another site's), or the system's roots, do not vouch for it.
    let other = cloud.dir.join("other-ca");
    stratus_controller::pki::SiteCa::load_or_create(
        &other.join("ca.pem"),
        &other.join("ca.key"),
        true,
    )
    .unwrap();
    let out = describe(Some(&other.join("ca.pem")), &cloud.admin_password);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "[ERROR] cannot verify the cloud endpoint https://127.0.0.1:{}: its certificate was \
             refused (UnknownIssuer); its certificate must chain to the CA in {} (set \
             ca_certificate in the configuration file, STRATUSLAB_CA_CERTIFICATE or \
             --ca-certificate to the site CA)",
            cloud.port,
            other.join("ca.pem").display()
        )
    );
    let out = describe(None, &cloud.admin_password);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("its certificate must chain to one of the system's root CAs"),
        "{err}"
    );

    let out = describe(Some(&cloud.ca_certificate()), "not-the-password");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "[ERROR] authentication failed for user admin at https://127.0.0.1:{}",
            cloud.port
        )
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(bin_dir().join("stratus"))
        .args(["describe-instance"])
        .env("HOME", &cloud.dir)
        .env("STRATUSLAB_ENDPOINT", format!("127.0.0.1:{port}"))
        .env("STRATUSLAB_USERNAME", "admin")
        .env("STRATUSLAB_PASSWORD", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "[ERROR] cannot reach the cloud endpoint https://127.0.0.1:{port}"
        )),
        "{err}"
    );
}
