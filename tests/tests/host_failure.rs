//! Hosts fail and are taken out of service, with real agents and real guests: an agent killed
//! without warning makes its host go down after the timeout (an event says so), its guest is
//! Unknown (still running, never started elsewhere) and new instances go to the other host;
//! when the agent is back the host is up and the same guest is Running again, not rebooted.
//! Maintenance keeps new instances off a host, and a host holding instances is not removed.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use stratus_common::api::InstanceState;
use stratus_e2e::cluster::TestCluster;
use stratus_e2e::events::EventStream;
use stratus_e2e::TestCloud;

const BOOT: Duration = Duration::from_secs(120);
/// The controller's host timeout in this test, and how long a judgment may take beyond it (a
/// long-poll the killed agent left open ends within its wait of 20 s).
const HOST_TIMEOUT_SECS: u64 = 5;
const JUDGED: Duration = Duration::from_secs(HOST_TIMEOUT_SECS + 20 + 10);

fn host(cloud: &TestCloud, name: &str) -> Value {
    let (status, host) = cloud.get("admin", &format!("/hosts/{name}")).unwrap();
    assert_eq!(status, StatusCode::OK, "{host}");
    host
}

fn maintenance(cloud: &TestCloud, name: &str, on: bool) -> Value {
    let body = if on {
        json!({"maintenance": true, "reason": "test keeps it free"})
    } else {
        json!({"maintenance": false})
    };
    let (status, host) = cloud
        .patch("admin", &format!("/hosts/{name}"), &body)
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{host}");
    host
}

/// A cloud with the short host timeout, two hosts (their names), the appliance and alice.
fn two_hosts(name: &str) -> (TestCloud, String, String) {
    let config = format!("host_timeout_secs = {HOST_TIMEOUT_SECS}");
    let mut cloud = TestCloud::start_with(name, &config).unwrap();
    cloud.start_agent().unwrap();
    cloud.register_appliance("appliance").unwrap();
    cloud.create_user("alice").unwrap();
    cloud.start_second_agent("").unwrap();
    let (a, b) = (cloud.host_name.clone(), cloud.host2_name());
    (cloud, a, b)
}

#[test]
fn a_host_whose_agent_dies_goes_down_takes_nothing_new_and_its_guest_comes_back_untouched() {
    let (mut cloud, a, b) = two_hosts("host-down");

    // With b in maintenance (through the CLI), the first guest can only go to a.
    let out = cloud.stratus(
        "admin",
        &[
            "update-host",
            &b,
            "--maintenance",
            "--reason",
            "test keeps it free",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("MAINTENANCE host {b} (test keeps it free): drained\n")
    );
    let b_view = host(&cloud, &b);
    assert_eq!(b_view["maintenance"]["reason"], "test keeps it free");
    assert_eq!(b_view["drained"], true, "{b_view}");
    let vm = cloud
        .run_instance("alice", json!({"image": "appliance", "type": "t1.micro"}))
        .unwrap();
    assert_eq!(vm.host.as_deref(), Some(a.as_str()));
    cloud
        .wait_state("alice", vm.id, InstanceState::Running, BOOT)
        .unwrap();
    cloud.wait_banner(vm.id, BOOT).unwrap();
    // A host holding an instance is not removed, and its maintenance is refused input-checked.
    let (status, error) = cloud.delete("admin", &format!("/hosts/{a}")).unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert_eq!(error["code"], "host_in_use");
    let (status, error) = cloud
        .patch(
            "admin",
            &format!("/hosts/{a}"),
            &json!({"maintenance": false, "reason": "x"}),
        )
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert!(
        error["message"].as_str().unwrap().starts_with("reason:"),
        "{error}"
    );
    let (status, error) = cloud
        .patch(
            "alice",
            &format!("/hosts/{a}"),
            &json!({"maintenance": true}),
        )
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
    maintenance(&cloud, &b, false);

    let (_, cluster) = cloud.get("admin", "/cluster").unwrap();
    let domain = stratus_common::agent::domain_name(cluster["cluster_id"].as_str().unwrap(), vm.id);
    let uuid = stratus_e2e::domain_uuid(&domain).expect("the guest's domain");
    let mut events = EventStream::open(&cloud, "admin", "?types=host-,instance-", None).unwrap();

    cloud.kill_agent();
    let seen = events
        .until(JUDGED, |e| {
            e.kind == "instance-unknown" && e.object.id == vm.id.to_string()
        })
        .unwrap();
    let kinds: Vec<(&str, &str)> = seen
        .iter()
        .map(|e| (e.kind.as_str(), e.object.id.as_str()))
        .collect();
    let vm_id = vm.id.to_string();
    assert_eq!(
        kinds,
        [
            ("host-down", a.as_str()),
            ("instance-unknown", vm_id.as_str())
        ],
        "the silent host only, then what it ran"
    );
    let down = host(&cloud, &a);
    assert_eq!(down["status"], "down", "{down}");
    assert!(down["status_since"].is_string(), "{down}");
    let out = cloud.stratus("admin", &["describe-hosts"]);
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{table}"))
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_owned()
    };
    assert_eq!(row(&a), "down", "{table}");
    assert_eq!(row(&b), "up", "{table}");
    let unknown = cloud.instance("alice", vm.id).unwrap();
    assert_eq!(unknown.state, InstanceState::Unknown);
    assert_eq!(
        unknown.reason.as_deref(),
        Some(format!("host {a} is down: its agent is out of touch").as_str())
    );
    // The guest itself runs on: nothing killed it, nothing started it elsewhere.
    assert_eq!(
        stratus_e2e::domain_uuid(&domain).as_deref(),
        Some(uuid.as_str())
    );
    // New work goes to the host that is up.
    let second = cloud
        .run_instance("alice", json!({"image": "appliance", "type": "t1.micro"}))
        .unwrap();
    assert_eq!(second.host.as_deref(), Some(b.as_str()), "{second:?}");
    cloud
        .wait_state("alice", second.id, InstanceState::Running, BOOT)
        .unwrap();
    // With b in maintenance too, nothing can take an instance, and the reason says why.
    maintenance(&cloud, &b, true);
    let refused = cloud
        .run_instance("alice", json!({"image": "appliance", "type": "t1.micro"}))
        .unwrap();
    assert_eq!(refused.state, InstanceState::Failed);
    assert_eq!(
        refused.reason.as_deref(),
        Some("no host can take 1 vCPU and 128 MiB: of 2 host(s), 1 is down, 1 is in maintenance")
    );
    maintenance(&cloud, &b, false);

    // The agent comes back: the host is up, and the same guest is Running again.
    cloud.start_agent().unwrap();
    let seen = events
        .until(JUDGED, |e| {
            e.kind == "instance-running" && e.object.id == vm.id.to_string()
        })
        .unwrap();
    let kinds: Vec<(&str, &str)> = seen
        .iter()
        .map(|e| (e.kind.as_str(), e.object.id.as_str()))
        .filter(|&(kind, id)| (id == a && kind != "host-enrolled") || id == vm_id)
        .collect();
    assert_eq!(
        kinds,
        [
            ("host-up", a.as_str()),
            ("instance-running", vm_id.as_str())
        ],
        "{seen:?}"
    );
    assert_eq!(host(&cloud, &a)["status"], "up");
    // The two agents share this machine's libvirt: each leaves the other's guest alone, and
    // neither reports it as a domain no instance accounts for (a's report with vm's Running
    // carried its list).
    for name in [&a, &b] {
        assert_eq!(host(&cloud, name)["unknown_domains"], json!([]), "{name}");
    }
    assert_eq!(
        stratus_e2e::domain_uuid(&domain).as_deref(),
        Some(uuid.as_str()),
        "the same guest, not a new boot"
    );
    let history: Vec<InstanceState> = cloud
        .instance("alice", vm.id)
        .unwrap()
        .history
        .iter()
        .map(|t| t.state)
        .collect();
    assert_eq!(
        history,
        [
            InstanceState::Pending,
            InstanceState::Booting,
            InstanceState::Running,
            InstanceState::Unknown,
            InstanceState::Running
        ]
    );
    for id in [vm.id, second.id] {
        let (status, body) = cloud.delete("alice", &format!("/instances/{id}")).unwrap();
        assert!(status.is_success(), "{body}");
        cloud
            .wait_state("alice", id, InstanceState::Done, BOOT)
            .unwrap();
    }
    // Empty now, a is removed; its certificate goes with it, so its agent is refused.
    let (status, body) = cloud.delete("admin", &format!("/hosts/{a}")).unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _) = cloud.get("admin", &format!("/hosts/{a}")).unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[test]
fn a_pending_instance_of_a_host_that_died_is_placed_again_and_runs_elsewhere() {
    let (mut cloud, a, b) = two_hosts("host-replace");
    maintenance(&cloud, &b, true);
    let mut events = EventStream::open(&cloud, "admin", "?types=host-,instance-", None).unwrap();

    // a dies; until it is judged down it still counts, so the instance is placed there and
    // stays Pending: nothing on a can start it.
    cloud.kill_agent();
    let vm = cloud
        .run_instance("alice", json!({"image": "appliance", "type": "t1.micro"}))
        .unwrap();
    assert_eq!(vm.host.as_deref(), Some(a.as_str()));
    assert_eq!(vm.state, InstanceState::Pending);
    maintenance(&cloud, &b, false);

    let vm_id = vm.id.to_string();
    let seen = events
        .until(JUDGED + BOOT, |e| {
            e.kind == "instance-running" && e.object.id == vm_id
        })
        .unwrap();
    let story: Vec<(&str, Option<&str>)> = seen
        .iter()
        .filter(|e| e.object.id == vm_id || (e.object.id == a && e.kind == "host-down"))
        .map(|e| (e.kind.as_str(), e.host.as_deref()))
        .collect();
    assert_eq!(
        story,
        [
            ("instance-created", Some(a.as_str())),
            ("host-down", Some(a.as_str())),
            ("instance-rescheduled", Some(b.as_str())),
            ("instance-booting", Some(b.as_str())),
            ("instance-running", Some(b.as_str())),
        ],
        "{seen:?}"
    );
    let rescheduled = seen
        .iter()
        .find(|e| e.kind == "instance-rescheduled")
        .unwrap();
    assert_eq!(
        rescheduled.details["reason"],
        format!("its host {a} went down before it started: placed again on {b}")
    );
    let running = cloud.instance("alice", vm.id).unwrap();
    assert_eq!(running.host.as_deref(), Some(b.as_str()));
    cloud.wait_banner(vm.id, BOOT).unwrap();
    assert!(
        cloud.dir.join("agent2/instances").join(&vm_id).exists(),
        "its files are on b"
    );
    assert!(
        !cloud.dir.join("agent/instances").join(&vm_id).exists(),
        "nothing of it on a"
    );
    let (_, view) = cloud.get("admin", &format!("/instances/{vm_id}")).unwrap();
    let changes: Vec<&str> = view["changes"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["action"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        changes.contains(&format!("placed again: {a} down, on {b}").as_str()),
        "the audit trail says who moved it: {view}"
    );
}

#[test]
fn an_instance_of_a_fenced_host_is_evacuated_once_and_the_host_destroys_its_copy_when_back() {
    let (mut cloud, a, b) = two_hosts("host-fence");
    maintenance(&cloud, &b, true);
    let vm = cloud
        .run_instance(
            "alice",
            json!({"image": "appliance", "type": "t1.micro", "evacuate": true}),
        )
        .unwrap();
    assert_eq!(vm.host.as_deref(), Some(a.as_str()));
    assert!(vm.evacuate);
    cloud
        .wait_state("alice", vm.id, InstanceState::Running, BOOT)
        .unwrap();
    maintenance(&cloud, &b, false);
    let vm_id = vm.id.to_string();
    let mut events = EventStream::open(&cloud, "admin", "?types=host-,instance-", None).unwrap();

    // A host that is up cannot be fenced.
    let (status, error) = cloud
        .post("admin", &format!("/hosts/{a}/fence"), &json!({}))
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert_eq!(error["code"], "host_up");

    // a dies: its agent is killed, and the test powers its guest off, as a site's fencing
    // (IPMI, a PDU) would. Until an administrator fences a, nothing is started elsewhere.
    cloud.kill_agent();
    events
        .until(JUDGED, |e| {
            e.kind == "instance-unknown" && e.object.id == vm_id
        })
        .unwrap();
    let (_, cluster) = cloud.get("admin", "/cluster").unwrap();
    let domain = stratus_common::agent::domain_name(cluster["cluster_id"].as_str().unwrap(), vm.id);
    let old_uuid = stratus_e2e::domain_uuid(&domain).expect("a's guest");
    stratus_e2e::destroy_domain(&domain);
    assert_eq!(
        cloud.instance("alice", vm.id).unwrap().host.as_deref(),
        Some(a.as_str()),
        "not moved without a fence"
    );
    let out = cloud.stratus("admin", &["fence-host", &a]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("FENCED host {a}\n")
    );
    assert!(host(&cloud, &a)["fenced"].is_string());

    let seen = events
        .until(BOOT, |e| {
            e.kind == "instance-running" && e.object.id == vm_id
        })
        .unwrap();
    let story: Vec<(&str, Option<&str>)> = seen
        .iter()
        .filter(|e| e.object.id == vm_id || (e.object.id == a && e.kind == "host-fenced"))
        .map(|e| (e.kind.as_str(), e.host.as_deref()))
        .collect();
    assert_eq!(
        story,
        [
            ("host-fenced", Some(a.as_str())),
            ("instance-rescheduled", Some(b.as_str())),
            ("instance-booting", Some(b.as_str())),
            ("instance-running", Some(b.as_str())),
        ],
        "started elsewhere exactly once: {seen:?}"
    );
    let moved = cloud.instance("alice", vm.id).unwrap();
    assert_eq!(moved.host.as_deref(), Some(b.as_str()));
    assert_eq!(
        moved.reason, None,
        "Running: the evacuation's reason is in the history"
    );
    assert!(moved.history.iter().any(|t| t.reason.as_deref()
        == Some(
            format!("evacuated from {a} (fenced): started again on {b} from its image").as_str()
        )));
    let new_uuid = stratus_e2e::domain_uuid(&domain).expect("b's guest");
    assert_ne!(new_uuid, old_uuid, "a new guest, from the image");
    cloud.wait_banner(vm.id, BOOT).unwrap();

    // a comes back: it is up and no longer fenced, it destroys what it held of the instance,
    // and the instance runs on b, untouched.
    let a_files = cloud.dir.join("agent/instances").join(&vm_id);
    assert!(a_files.exists(), "a's copy of the instance is still there");
    cloud.start_agent().unwrap();
    events
        .until(JUDGED, |e| e.kind == "host-up" && e.object.id == a)
        .unwrap();
    let back = host(&cloud, &a);
    assert!(back["fenced"].is_null(), "{back}");
    // Until a confirms its copy is gone, its view lists it.
    let deadline = std::time::Instant::now() + BOOT;
    while host(&cloud, &a)["moved_away"] != json!([]) {
        assert!(
            std::time::Instant::now() < deadline,
            "a never destroyed its copy"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(!a_files.exists(), "a's copy of the instance is gone");
    let after = cloud.instance("alice", vm.id).unwrap();
    assert_eq!(
        (after.state, after.host.as_deref()),
        (InstanceState::Running, Some(b.as_str()))
    );
    assert_eq!(stratus_e2e::domain_uuid(&domain), Some(new_uuid));
    let (status, body) = cloud
        .delete("alice", &format!("/instances/{vm_id}"))
        .unwrap();
    assert!(status.is_success(), "{body}");
    cloud
        .wait_state("alice", vm.id, InstanceState::Done, BOOT)
        .unwrap();
}

/// The host's lease in the cut-off test, and the controller's host timeout there.
const LEASE_SECS: u64 = 10;

/// An instance as node 1 shows it to the administrator.
fn instance_in(cluster: &TestCluster, id: u64) -> Value {
    let (status, vm) = cluster.get(1, &format!("/instances/{id}")).unwrap();
    assert_eq!(status, StatusCode::OK, "{vm}");
    vm
}

/// Waits until instance `id` is in `state` on `host`.
fn wait_instance(cluster: &TestCluster, id: u64, state: &str, host: &str, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let vm = instance_in(cluster, id);
        if vm["state"] == state && vm["host"] == host {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "instance {id} not {state} on {host} in {timeout:?}: {vm}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A host cut off from the controllers (its agent in a namespace whose link the test takes
/// down): its instances become Unknown and the one that may not be evacuated is never started
/// elsewhere; the one that may be is destroyed by the host itself once its lease ran out, and
/// only then, the leader having fenced the host by lease, started on the other host, once.
/// When the link is back the host is up and no longer fenced, its other guest is Running again
/// untouched, and its copy of the evacuated instance is gone.
#[test]
fn a_host_cut_off_fences_itself_for_what_may_be_evacuated_and_runs_the_rest_again_when_back() {
    let mut cluster = TestCluster::new("cut-off", 1).expect("namespaces");
    cluster
        .configure(
            1,
            false,
            &format!("host_timeout_secs = {HOST_TIMEOUT_SECS}\nhost_lease_secs = {LEASE_SECS}\ncpu_allocation_ratio = 16.0"),
        )
        .unwrap();
    cluster.form(1).unwrap();
    cluster.register_appliance(1, "appliance").unwrap();
    // Host a alone first, so both instances go there.
    let a = cluster.start_agent_in_namespace("a").unwrap();
    let run = |evacuate: bool| {
        let (status, vm, _) = cluster
            .post(
                1,
                "/instances",
                &json!({"image": "appliance", "type": "t1.micro", "evacuate": evacuate}),
            )
            .unwrap();
        assert_eq!(status, StatusCode::CREATED, "{vm}");
        assert_eq!(vm["host"], a.as_str(), "{vm}");
        vm["id"].as_u64().unwrap()
    };
    let (stays, moves) = (run(false), run(true));
    for id in [stays, moves] {
        wait_instance(&cluster, id, "Running", &a, BOOT);
        cluster.wait_banner_in("agent-a", id, BOOT).unwrap();
    }
    cluster.start_agent().unwrap();
    let b = cluster.host_name.clone();
    let (_, about) = cluster.get(1, "/cluster").unwrap();
    let cluster_id = about["cluster_id"].as_str().unwrap().to_owned();
    let domain = |id| stratus_common::agent::domain_name(&cluster_id, id);
    let stays_uuid = stratus_e2e::domain_uuid(&domain(stays)).expect("a's guest");
    let moves_uuid = stratus_e2e::domain_uuid(&domain(moves)).expect("a's guest");

    // Cut off: both become Unknown, on a.
    cluster.cut_agent("a").unwrap();
    for id in [stays, moves] {
        wait_instance(&cluster, id, "Unknown", &a, JUDGED);
    }
    assert_eq!(cluster.host_status_of(&a).as_deref(), Some("down"));

    // Past the lease: a destroyed its guest that may be evacuated, the leader fenced a and
    // started that instance on b.
    wait_instance(&cluster, moves, "Running", &b, BOOT);
    let log = cluster.ns_agent_log("a");
    assert!(
        log.contains("the host's lease ran out: fenced itself"),
        "a fenced itself:\n{log}"
    );
    let a_view = cluster.host_named(&a).unwrap();
    assert!(a_view["fenced"].is_string(), "fenced by lease: {a_view}");
    let moved = instance_in(&cluster, moves);
    let history: Vec<&str> = moved["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["reason"].as_str())
        .collect();
    assert!(
        history.contains(
            &format!("evacuated from {a} (fenced): started again on {b} from its image").as_str()
        ),
        "{moved}"
    );
    let moved_uuid = stratus_e2e::domain_uuid(&domain(moves)).expect("b's guest");
    assert_ne!(moved_uuid, moves_uuid, "a new guest, on b");
    cluster.wait_banner(moves, BOOT).unwrap();
    // The other one is not started elsewhere: still Unknown on a, its guest untouched.
    let vm = instance_in(&cluster, stays);
    assert_eq!(
        (vm["state"].as_str(), vm["host"].as_str()),
        (Some("Unknown"), Some(a.as_str())),
        "{vm}"
    );
    assert_eq!(
        stratus_e2e::domain_uuid(&domain(stays)).as_deref(),
        Some(stays_uuid.as_str())
    );

    // The link is back: a is up and no longer fenced, its guest Running again, untouched, and
    // its copy of the evacuated instance gone; the evacuated one runs on b only.
    let a_files = cluster
        .dir
        .join("agent-a/instances")
        .join(moves.to_string());
    cluster.reconnect_agent("a").unwrap();
    wait_instance(&cluster, stays, "Running", &a, JUDGED);
    let deadline = std::time::Instant::now() + JUDGED;
    loop {
        let view = cluster.host_named(&a).unwrap();
        if view["status"] == "up" && view["fenced"].is_null() && view["moved_away"] == json!([]) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a never came back whole: {view}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        !a_files.exists(),
        "a's copy of the evacuated instance is gone"
    );
    assert_eq!(
        stratus_e2e::domain_uuid(&domain(stays)).as_deref(),
        Some(stays_uuid.as_str()),
        "not rebooted"
    );
    assert_eq!(
        stratus_e2e::domain_uuid(&domain(moves)).as_deref(),
        Some(moved_uuid.as_str()),
        "b's guest untouched"
    );
    wait_instance(&cluster, moves, "Running", &b, JUDGED);

    // An agent stopped on purpose gives its lease back: its guests run on, and its host is
    // not fenced by lease (only down, its instance Unknown).
    cluster.stop_ns_agent("a");
    let log = cluster.ns_agent_log("a");
    assert!(log.contains("lease given back to the controller"), "{log}");
    assert!(
        cluster.log(1).contains("gave up its lease"),
        "{}",
        cluster.log(1)
    );
}
