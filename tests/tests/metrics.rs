//! The controller's `/metrics`, scraped by a real Prometheus (Debian's `prometheus`, started
//! by the test on loopback with its own data directory, stopped by pid): the scrape is up over
//! HTTPS with the site CA and an administrator's password, and what Prometheus stored is what
//! happened (this node leads, one host up, one instance Pending, the POST that made it timed
//! under its route template). Only administrators may read the metrics.

use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};
use stratus_e2e::prometheus::Prometheus;
use stratus_e2e::TestCloud;

/// Starts Prometheus scraping the cloud's controller.
fn prometheus(cloud: &TestCloud) -> Prometheus {
    Prometheus::start(
        &cloud.dir.join("prometheus"),
        "stratus",
        &format!(
            "    scheme: https\n    \
             tls_config:\n      ca_file: {ca}\n    \
             basic_auth:\n      username: admin\n      password: {password}\n    \
             static_configs:\n      - targets: ['{target}']\n",
            ca = cloud.ca_certificate().display(),
            password = cloud.password("admin"),
            target = cloud.base().trim_start_matches("https://"),
        ),
    )
}

#[test]
fn prometheus_scrapes_what_happened_and_only_admins_read_metrics() {
    let cloud = TestCloud::start("metrics").unwrap();
    cloud.create_user("alice").unwrap();
    cloud.enrol_and_register("metrics-host", 4, 4096).unwrap();
    cloud.register_appliance("appliance").unwrap();
    let vm = cloud
        .run_instance("alice", json!({"image": "appliance", "type": "t1.micro"}))
        .unwrap();
    assert_eq!(vm.host.as_deref(), Some("metrics-host"));

    // The page itself: Prometheus's text format, administrators only.
    let http = cloud.client().unwrap();
    let metrics_url = format!("{}/metrics", cloud.base());
    let page = http
        .get(&metrics_url)
        .basic_auth("admin", Some(cloud.password("admin")))
        .send()
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = page.text().unwrap();
    for line in [
        "# TYPE stratus_raft_proposal_seconds histogram",
        "# TYPE stratus_http_request_duration_seconds histogram",
        "# TYPE stratus_placement_seconds histogram",
        "stratus_instances{state=\"Pending\"} 1",
        "stratus_hosts{status=\"up\"} 1",
        "stratus_raft_leader 1",
    ] {
        assert!(text.contains(line), "{line} not in:\n{text}");
    }
    let denied = http
        .get(&metrics_url)
        .basic_auth("alice", Some(cloud.password("alice")))
        .send()
        .unwrap();
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    let body: Value = denied.json().unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("metrics"),
        "{body}"
    );
    let anonymous = http.get(&metrics_url).send().unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    // A real Prometheus scrapes it and stores what happened.
    let server = prometheus(&cloud);
    let local = Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    server.wait_value(&local, "up{job=\"stratus\"}", |v| v == 1.0);
    server.wait_value(&local, "stratus_raft_leader", |v| v == 1.0);
    server.wait_value(&local, "stratus_hosts{status=\"up\"}", |v| v == 1.0);
    server.wait_value(&local, "stratus_instances{state=\"Pending\"}", |v| v == 1.0);
    let posts = server.wait_value(
        &local,
        "stratus_http_request_duration_seconds_count{route=\"/api/v1/instances\",method=\"POST\",status=\"201\"}",
        |v| v >= 1.0,
    );
    assert_eq!(posts, 1.0);
    server.wait_value(&local, "stratus_placement_seconds_count", |v| v == 1.0);
    server.wait_value(&local, "stratus_raft_proposal_seconds_count", |v| v >= 4.0);
}
