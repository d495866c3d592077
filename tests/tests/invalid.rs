//! Bad requests get a clear 4xx with a JSON error naming what is wrong, and create nothing: no
//! instance, no domain, no file.

use serde_json::{json, Value};
use stratus_e2e::TestCloud;

fn instance_count(cloud: &TestCloud) -> usize {
    cloud
        .get("admin", "/instances")
        .unwrap()
        .1
        .as_array()
        .unwrap()
        .len()
}

fn assert_error(status: reqwest::StatusCode, body: &Value, want: u16, mentions: &str) {
    assert_eq!(status.as_u16(), want, "{body}");
    assert!(body["code"].is_string(), "JSON error with a code: {body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(mentions),
        "message {message:?} should mention {mentions:?}"
    );
}

#[test]
fn invalid_requests_get_4xx_and_create_nothing() {
    // The host offers 1024 MiB, so a c1.xlarge (4096 MiB) cannot be placed.
    let cloud = TestCloud::with_agent_offering("invalid", Some(1024)).unwrap();
    cloud.create_user("alice").unwrap();
    cloud.create_user("bob").unwrap();

    let (s, b) = cloud
        .post(
            "alice",
            "/instances",
            &json!({"image": "appliance", "type": "x9.huge"}),
        )
        .unwrap();
    assert_error(s, &b, 400, "x9.huge");
    let (s, b) = cloud
        .post("alice", "/instances", &json!({"image": "no-such-image"}))
        .unwrap();
    assert_error(s, &b, 400, "no-such-image");
    let (s, b) = cloud
        .post_raw("alice", "/instances", "{\"image\": \"appliance\",")
        .unwrap();
    assert_error(s, &b, 400, "EOF while parsing");
    let (s, b) = cloud
        .post(
            "alice",
            "/instances",
            &json!({"image": "appliance", "colour": "red"}),
        )
        .unwrap();
    assert_error(s, &b, 400, "colour");
    let (s, b) = cloud
        .post("alice", "/instances", &json!({"type": "t1.micro"}))
        .unwrap();
    assert_error(s, &b, 400, "image");
    let (s, b) = cloud
        .post(
            "alice",
            "/instances",
            &json!({"image": "appliance", "name": "a<'&/../"}),
        )
        .unwrap();
    assert_error(s, &b, 400, "name");
    let image = |name: &str, location: &str| json!({"name": name, "format": "raw", "disk": {"locations": [location], "sha256": "00".repeat(32)}});
    let (s, b) = cloud
        .post(
            "admin",
            "/images",
            &image("../etc", "http://images.example/x.raw"),
        )
        .unwrap();
    assert_error(s, &b, 400, "name");
    let (s, b) = cloud
        .post("admin", "/images", &image("ok-name", "/etc/shadow"))
        .unwrap();
    assert_error(s, &b, 400, "disk.locations");
    let (s, b) = cloud
        .post(
            "admin",
            "/images",
            &image("ok-name", "file:///images/../etc/shadow"),
        )
        .unwrap();
    assert_error(s, &b, 400, "disk.locations");
    let (s, b) = cloud
        .post(
            "alice",
            "/images",
            &image("mine", "http://images.example/x.raw"),
        )
        .unwrap();
    assert_error(s, &b, 403, "administrator");
    assert_eq!(instance_count(&cloud), 0);
    assert!(cloud.domains().is_empty());
    assert!(
        !cloud.dir.join("agent/instances").exists()
            || std::fs::read_dir(cloud.dir.join("agent/instances"))
                .unwrap()
                .next()
                .is_none()
    );

    // Unauthenticated and wrong passwords.
    let response = reqwest::blocking::get(cloud.url("/instances")).unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    let wrong = reqwest::blocking::Client::new()
        .get(cloud.url("/instances"))
        .basic_auth("alice", Some("wrong-password"))
        .send()
        .unwrap();
    assert_eq!(wrong.status(), 401);

    // Another user's instance: bob cannot see or kill alice's. (Its placement fails on purpose:
    // c1.xlarge does not fit in 1024 MiB, so no guest is booted for this check.)
    let (s, alice_vm) = cloud
        .post(
            "alice",
            "/instances",
            &json!({"image": "appliance", "type": "c1.xlarge"}),
        )
        .unwrap();
    assert_eq!(s, 201, "{alice_vm}");
    assert_eq!(alice_vm["state"], "Failed");
    assert_eq!(
        alice_vm["reason"], "no host with 8 vCPU and 4096 MiB free",
        "{alice_vm}"
    );
    let id = alice_vm["id"].as_u64().unwrap();
    let (s, b) = cloud.get("bob", &format!("/instances/{id}")).unwrap();
    assert_error(s, &b, 404, "not found");
    let (s, b) = cloud.delete("bob", &format!("/instances/{id}")).unwrap();
    assert_error(s, &b, 404, "not found");
    assert_eq!(cloud.get("bob", "/instances").unwrap().1, json!([]));
    assert_eq!(
        cloud
            .get("alice", "/instances")
            .unwrap()
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        cloud.get("alice", &format!("/instances/{id}")).unwrap().1["state"],
        "Failed"
    );
    let (s, b) = cloud.get("alice", "/instances/abc").unwrap();
    assert_error(s, &b, 400, "id");
    let (s, b) = cloud.get("alice", "/hosts").unwrap();
    assert_error(s, &b, 403, "administrator");
    let (s, b) = cloud.get("alice", "/nothing-here").unwrap();
    assert_error(s, &b, 404, "no such API resource");
    assert!(cloud.domains().is_empty());
}
