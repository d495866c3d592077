//! Restarts lose nothing: an agent that crashes and comes back adopts its running domains
//! (the same domains, not restarted), and reports a guest that powered off while it was down
//! as Stopped instead of booting it again; a controller that restarts comes back with all its
//! state; with the controller away, the agent starts again a guest whose emulator died when
//! its restart policy says so, and reports it (and the other, left stopped) once it is back.

use std::time::Duration;

use serde_json::json;
use stratus_common::api::InstanceState;
use stratus_e2e::{domain_uuid, TestCloud};

const BOOT: Duration = Duration::from_secs(120);

/// An instance of the appliance, Running and booted (its banner on the console).
fn running_vm(cloud: &TestCloud) -> stratus_common::api::Instance {
    let vm = cloud
        .run_instance("admin", json!({"image": "appliance", "type": "t1.micro"}))
        .unwrap();
    cloud
        .wait_state("admin", vm.id, InstanceState::Running, BOOT)
        .unwrap();
    cloud.wait_banner(vm.id, BOOT).unwrap();
    vm
}

#[test]
fn a_restarted_agent_adopts_the_running_domain_without_restarting_it() {
    let mut cloud = TestCloud::with_agent("agent-restart").unwrap();
    let vm = running_vm(&cloud);
    let uuid = domain_uuid(&vm.domain).expect("domain runs");

    cloud.kill_agent();
    // The guest does not depend on the agent.
    assert_eq!(domain_uuid(&vm.domain).as_deref(), Some(uuid.as_str()));
    cloud.start_agent().unwrap();
    std::thread::sleep(Duration::from_secs(5));

    assert_eq!(
        domain_uuid(&vm.domain).as_deref(),
        Some(uuid.as_str()),
        "same domain, not restarted"
    );
    assert_eq!(cloud.domains(), vec![vm.domain.clone()]);
    let after = cloud.instance("admin", vm.id).unwrap();
    assert_eq!(after.state, InstanceState::Running);
    let (_, hosts) = cloud.get("admin", "/hosts").unwrap();
    assert_eq!(hosts[0]["unknown_domains"], json!([]));
    assert_eq!(hosts[0]["instances"], 1);
    // Booted once: one banner on the console.
    assert_eq!(cloud.console(vm.id).matches(stratus_e2e::BANNER).count(), 1);

    cloud
        .delete("admin", &format!("/instances/{}", vm.id))
        .unwrap();
    cloud
        .wait_state("admin", vm.id, InstanceState::Done, BOOT)
        .unwrap();
    assert!(cloud.domains().is_empty());
}

#[test]
fn a_guest_that_powered_off_while_its_agent_was_down_is_reported_stopped_not_booted_again() {
    let mut cloud = TestCloud::with_agent("agent-down-poweroff").unwrap();
    let vm = running_vm(&cloud);

    cloud.kill_agent();
    // The guest's power goes off while nothing of ours watches (its emulator ends).
    stratus_e2e::destroy_domain(&vm.domain);
    assert!(domain_uuid(&vm.domain).is_none());
    cloud.start_agent().unwrap();

    let stopped = cloud
        .wait_state("admin", vm.id, InstanceState::Stopped, BOOT)
        .unwrap();
    assert_eq!(
        stopped.reason.as_deref(),
        Some("the guest powered off (or its emulator stopped)")
    );
    assert!(
        cloud.domains().is_empty(),
        "not booted again: {:?}",
        cloud.domains()
    );
    assert_eq!(cloud.console(vm.id).matches(stratus_e2e::BANNER).count(), 1);
    // Its owner starts it again, from its own disk.
    let (status, body) = cloud
        .post("admin", &format!("/instances/{}/start", vm.id), &json!({}))
        .unwrap();
    assert!(status.is_success(), "{body}");
    cloud
        .wait_state("admin", vm.id, InstanceState::Running, BOOT)
        .unwrap();
}

/// Kills a guest's emulator as a crash would (SIGKILL to the QEMU process libvirt started for
/// it, found by libvirt's pid file).
fn kill_emulator(domain: &str) {
    let pid_file = format!("/run/libvirt/qemu/{domain}.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap_or_else(|e| panic!("{pid_file}: {e}"))
        .trim()
        .parse()
        .unwrap();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {pid}");
}

#[test]
fn with_the_controller_away_a_crashed_guest_is_restarted_by_policy_and_reported_after() {
    let mut cloud = TestCloud::with_agent("agent-autonomy").unwrap();
    let restarted = cloud
        .run_instance(
            "admin",
            json!({"image": "appliance", "type": "t1.micro", "restart": "always"}),
        )
        .unwrap();
    assert_eq!(
        restarted.restart,
        stratus_common::api::RestartPolicy::Always
    );
    let left = running_vm(&cloud);
    cloud
        .wait_state("admin", restarted.id, InstanceState::Running, BOOT)
        .unwrap();
    cloud.wait_banner(restarted.id, BOOT).unwrap();
    let old_uuid = domain_uuid(&restarted.domain).unwrap();

    cloud.stop_controller();
    kill_emulator(&restarted.domain);
    kill_emulator(&left.domain);
    // The agent alone starts the one whose policy says so again, from its own disk: a second
    // boot on the same console.
    let deadline = std::time::Instant::now() + BOOT;
    while cloud
        .console(restarted.id)
        .matches(stratus_e2e::BANNER)
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "not restarted: {}",
            cloud.console(restarted.id)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let new_uuid = domain_uuid(&restarted.domain).expect("running again");
    assert_ne!(new_uuid, old_uuid);
    assert!(domain_uuid(&left.domain).is_none(), "the other stays off");

    // Back, the controller hears what happened.
    cloud.start_controller().unwrap();
    let stopped = cloud
        .wait_state("admin", left.id, InstanceState::Stopped, BOOT)
        .unwrap();
    assert_eq!(
        stopped.reason.as_deref(),
        Some("the guest powered off (or its emulator stopped)")
    );
    let reason = "started again by its host after the guest stopped by itself (restart policy \
                  always; restart 1)";
    let deadline = std::time::Instant::now() + BOOT;
    loop {
        let vm = cloud.instance("admin", restarted.id).unwrap();
        assert_eq!(vm.state, InstanceState::Running);
        if vm.history.last().and_then(|t| t.reason.as_deref()) == Some(reason) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{:?}", vm.history);
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(domain_uuid(&restarted.domain), Some(new_uuid));
    for vm in [&restarted, &left] {
        cloud
            .delete("admin", &format!("/instances/{}", vm.id))
            .unwrap();
        cloud
            .wait_state("admin", vm.id, InstanceState::Done, BOOT)
            .unwrap();
    }
    assert!(cloud.domains().is_empty());
}

#[test]
fn a_restarted_controller_comes_back_with_all_its_state() {
    let mut cloud = TestCloud::with_agent("controller-restart").unwrap();
    cloud.create_user("alice").unwrap();
    let vm = cloud
        .run_instance(
            "alice",
            json!({"image": "appliance", "type": "t1.micro", "name": "keep-me"}),
        )
        .unwrap();
    cloud
        .wait_state("alice", vm.id, InstanceState::Running, BOOT)
        .unwrap();
    // Enough entries to cross a snapshot (snapshot_every = 50 in the test config) and replay.
    cloud.create_user("bob").unwrap();
    for i in 0..60 {
        let image = json!({
            "name": format!("image-{i}"),
            "format": "qcow2",
            "disk": {"locations": [format!("http://images.example/{i}.qcow2")], "sha256": format!("{i:064x}")},
        });
        let (status, body) = cloud.post("admin", "/images", &image).unwrap();
        assert_eq!(status, 201, "{body}");
    }
    let (_, instances_before) = cloud.get("admin", "/instances").unwrap();
    let (_, images_before) = cloud.get("admin", "/images").unwrap();
    let (_, users_before) = cloud.get("admin", "/users").unwrap();
    let (_, cluster_before) = cloud.get("admin", "/cluster").unwrap();

    cloud.stop_controller();
    cloud.start_controller().unwrap();

    assert_eq!(
        cloud.get("admin", "/instances").unwrap().1,
        instances_before
    );
    assert_eq!(cloud.get("admin", "/images").unwrap().1, images_before);
    assert_eq!(cloud.get("admin", "/users").unwrap().1, users_before);
    let (_, cluster_after) = cloud.get("admin", "/cluster").unwrap();
    assert_eq!(cluster_after["cluster_id"], cluster_before["cluster_id"]);
    assert!(cluster_after["applied_index"].as_u64() >= cluster_before["applied_index"].as_u64());
    // alice's password still works (only its hash was stored) and her instance is still hers.
    assert_eq!(cloud.instance("alice", vm.id).unwrap().name, "keep-me");
    // The agent reconnects by itself and the instance can be killed as usual.
    cloud
        .delete("alice", &format!("/instances/{}", vm.id))
        .unwrap();
    cloud
        .wait_state("alice", vm.id, InstanceState::Done, BOOT)
        .unwrap();
    assert!(cloud.domains().is_empty());
}

#[test]
fn a_domain_of_this_cluster_that_no_instance_accounts_for_is_reported_not_killed() {
    use stratus_agent::hypervisor::{DomainSpec, Hypervisor, LibvirtHypervisor};
    use stratus_common::api::{DiskFormat, DomainType};

    let cloud = TestCloud::with_agent("unknown-domain").unwrap();
    let appliance = stratus_e2e::appliance().unwrap();
    let (_, cluster) = cloud.get("admin", "/cluster").unwrap();
    let cluster_id = cluster["cluster_id"].as_str().unwrap().to_owned();
    // A domain that looks like instance 999 of this cluster, which the controller never made
    // (say, left over from a restored backup).
    let stray = cloud.dir.join("stray");
    std::fs::create_dir_all(&stray).unwrap();
    let disk = stray.join("disk.qcow2");
    let size = stratus_agent::images::qcow2::inspect(&appliance.disk)
        .unwrap()
        .virtual_size;
    stratus_agent::images::qcow2::create_overlay(&disk, &appliance.disk, DiskFormat::Qcow2, size)
        .unwrap();
    let name = stratus_common::agent::domain_name(&cluster_id, 999);
    let hv = LibvirtHypervisor::connect(stratus_e2e::LIBVIRT_URI).unwrap();
    hv.create(&DomainSpec {
        name: name.clone(),
        cluster_id,
        instance_id: 999,
        host: None,
        domain_type: DomainType::Qemu,
        vcpus: 1,
        memory_mib: 128,
        disk,
        kernel: Some(appliance.kernel.clone()),
        initrd: Some(appliance.initrd.clone()),
        cmdline: Some(appliance.cmdline.clone()),
        console_log: stray.join("console.log"),
        nics: Vec::new(),
        cidata: None,
        disks: Vec::new(),
    })
    .unwrap();
    let uuid = domain_uuid(&name).unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, hosts) = cloud.get("admin", "/hosts").unwrap();
        if hosts[0]["unknown_domains"] == json!([name]) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not reported: {hosts}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Several resync rounds later (2 s each in tests) it still runs, untouched.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(domain_uuid(&name).as_deref(), Some(uuid.as_str()));
    assert!(cloud.log("agent.log").contains("no instance accounts for"));
}
