//! Placement rules with real agents and real guests: an anti-affinity group puts its two
//! instances on the two hosts there are and refuses a third, naming the filter; a group in
//! use is not deleted; an instance requiring a label goes to the host an administrator
//! labelled, and a storage-only host gets no instance.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use stratus_common::api::InstanceState;
use stratus_e2e::TestCloud;

const BOOT: Duration = Duration::from_secs(120);

fn patch_host(cloud: &TestCloud, name: &str, body: Value) -> Value {
    let (status, host) = cloud
        .patch("admin", &format!("/hosts/{name}"), &body)
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{host}");
    host
}

fn kill(cloud: &TestCloud, id: u64) {
    let (status, body) = cloud.delete("alice", &format!("/instances/{id}")).unwrap();
    assert!(status.is_success(), "{status} {body}");
}

#[test]
fn anti_affinity_spreads_a_group_over_two_hosts_and_refuses_a_third_naming_the_filter() {
    let mut cloud = TestCloud::start("placement").unwrap();
    cloud.start_agent().unwrap();
    cloud.register_appliance("appliance").unwrap();
    cloud.create_user("alice").unwrap();
    cloud.start_second_agent("").unwrap();
    let (a, b) = (cloud.host_name.clone(), cloud.host2_name());

    let out = cloud.stratus(
        "alice",
        &["create-group", "web", "--policy", "anti-affinity"],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "GROUP web (anti-affinity)\n"
    );
    let in_web = json!({"image": "appliance", "type": "t1.micro", "group": "web"});
    let first = cloud.run_instance("alice", in_web.clone()).unwrap();
    let second = cloud.run_instance("alice", in_web.clone()).unwrap();
    let mut hosts = [first.host.clone().unwrap(), second.host.clone().unwrap()];
    hosts.sort();
    let mut expected = [a.clone(), b.clone()];
    expected.sort();
    assert_eq!(hosts, expected, "one on each host");
    for vm in [&first, &second] {
        cloud
            .wait_state("alice", vm.id, InstanceState::Running, BOOT)
            .unwrap();
    }
    let third = cloud.run_instance("alice", in_web).unwrap();
    assert_eq!(third.state, InstanceState::Failed);
    assert_eq!(
        third.reason.as_deref(),
        Some(
            "no host can take 1 vCPU and 128 MiB: of 2 host(s), 2 already run an instance of \
             anti-affinity group web (anti-affinity filter)"
        )
    );
    let (status, shown) = cloud.get("alice", "/groups/web").unwrap();
    assert_eq!(status, StatusCode::OK);
    let members: Vec<u64> = shown["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(members, [first.id, second.id], "{shown}");
    let out = cloud.stratus("alice", &["describe-groups", "web"]);
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    for vm in [&first, &second] {
        let member = format!("{}@{}", vm.id, vm.host.as_deref().unwrap());
        assert!(table.contains(&member), "{member} in:\n{table}");
    }
    let (status, error) = cloud.delete("alice", "/groups/web").unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert_eq!(error["code"], "group_in_use");

    // Labels: b is labelled ssd; an instance requiring it goes there, one requiring gpu
    // nowhere.
    let b_view = patch_host(&cloud, &b, json!({"labels": ["ssd"]}));
    assert_eq!(b_view["labels"], json!(["ssd"]));
    let ssd = cloud
        .run_instance(
            "alice",
            json!({"image": "appliance", "type": "t1.micro", "labels": ["ssd"]}),
        )
        .unwrap();
    assert_eq!(ssd.host.as_deref(), Some(b.as_str()));
    kill(&cloud, ssd.id);
    let gpu = cloud
        .run_instance(
            "alice",
            json!({"image": "appliance", "type": "t1.micro", "labels": ["gpu"]}),
        )
        .unwrap();
    assert_eq!(gpu.state, InstanceState::Failed);
    assert_eq!(
        gpu.reason.as_deref(),
        Some(
            "no host can take 1 vCPU and 128 MiB: of 2 host(s), 2 lack a required label \
             (labels filter: gpu)"
        )
    );
    // Roles: with b storage-only, a plain instance goes to a.
    let b_view = patch_host(&cloud, &b, json!({"roles": ["storage"]}));
    assert_eq!(b_view["roles"], json!(["storage"]));
    let plain = cloud
        .run_instance("alice", json!({"image": "appliance", "type": "t1.micro"}))
        .unwrap();
    assert_eq!(plain.host.as_deref(), Some(a.as_str()));
    kill(&cloud, plain.id);
    // A bad rule is refused, naming the field, and makes nothing.
    let before = cloud.get("alice", "/instances").unwrap().1;
    let (status, error) = cloud
        .post(
            "alice",
            "/instances",
            &json!({"image": "appliance", "group": "nope"}),
        )
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert!(
        error["message"].as_str().unwrap().starts_with("group: "),
        "{error}"
    );
    assert_eq!(cloud.get("alice", "/instances").unwrap().1, before);

    // Once its instances are gone the group can be deleted.
    for vm in [&first, &second] {
        kill(&cloud, vm.id);
        cloud
            .wait_state("alice", vm.id, InstanceState::Done, BOOT)
            .unwrap();
    }
    let (status, body) = cloud.delete("alice", "/groups/web").unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}
