//! An agent's own `/metrics`, scraped by a real Prometheus (Debian's `prometheus`, started by
//! the test on loopback with its own data directory, stopped by pid) over HTTPS with the
//! host's certificate (checked against the site CA) and the bearer token from the agent's
//! root-only token file. What Prometheus stores is what happened on the host: the real guests'
//! CPU seconds, disk reads and network series under their instance IDs, an image-cache miss
//! for each artifact of the first instance and a hit for each of the second's, one
//! acceptance-to-running observation and one network set-up per instance, one hot-plug and
//! one unplug of a persistent disk. A scrape without the token, or with a wrong one, is
//! refused with a JSON 401; plain HTTP gets no answer.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};
use stratus_common::api::InstanceState;
use stratus_e2e::netlab::NetLab;
use stratus_e2e::prometheus::Prometheus;
use stratus_e2e::{free_port, TestCloud};

const BOOT: Duration = Duration::from_secs(180);

/// Starts Prometheus scraping the agent's metrics.
fn prometheus(cloud: &TestCloud, metrics_port: u16, token_file: &std::path::Path) -> Prometheus {
    Prometheus::start(
        &cloud.dir.join("prometheus"),
        "agent",
        &format!(
            "    scheme: https\n    \
             tls_config:\n      ca_file: {ca}\n      server_name: {host}\n    \
             authorization:\n      type: Bearer\n      credentials_file: {token}\n    \
             static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n",
            ca = cloud.ca_certificate().display(),
            host = cloud.host_name,
            token = token_file.display(),
        ),
    )
}

/// Waits until the volume's attachments satisfy `done`.
fn wait_volume(cloud: &TestCloud, volume: &str, what: &str, done: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + BOOT;
    loop {
        let (status, view) = cloud.get("alice", &format!("/volumes/{volume}")).unwrap();
        assert_eq!(status, StatusCode::OK, "{view}");
        if done(&view) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {view}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn prometheus_scrapes_a_hosts_guests_cache_and_latencies_with_its_token_only() {
    let lab = NetLab::new(0, 24);
    let mut cloud = TestCloud::start_with("agent-metrics", &lab.config).unwrap();
    let metrics_port = free_port();
    let token = format!("metrics-token-{}", std::process::id());
    let token_file = cloud.dir.join("metrics-token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    for (key, value) in [
        ("network_netns", format!("\"{}\"", lab.netns)),
        ("metrics_listen", format!("\"127.0.0.1:{metrics_port}\"")),
        (
            "metrics_token_file",
            format!("\"{}\"", token_file.display()),
        ),
        (
            "volume_pool",
            format!("\"{}\"", cloud.dir.join("agent/volumes").display()),
        ),
        ("nbd_listen", "\"127.0.0.1\"".to_owned()),
    ] {
        cloud.set_agent_option(key, &value).unwrap();
    }
    cloud.start_agent().unwrap();
    cloud.register_appliance("appliance").unwrap();
    cloud.create_user("alice").unwrap();

    // Over HTTPS, the host's certificate for its name (from the site CA); no token, no metrics.
    let ca = std::fs::read(cloud.ca_certificate()).unwrap();
    let https = Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .resolve(
            &cloud.host_name,
            format!("127.0.0.1:{metrics_port}").parse().unwrap(),
        )
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = format!("https://{}:{metrics_port}/metrics", cloud.host_name);
    let anonymous = https.get(&url).send().unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert!(anonymous.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    let body: Value = anonymous.json().unwrap();
    assert_eq!(body["code"], "unauthenticated", "{body}");
    assert_eq!(
        body["message"],
        "the metrics need a bearer token (Authorization: Bearer <the token in the agent's \
         metrics_token_file>)"
    );
    let wrong = https.get(&url).bearer_auth("guessed").send().unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let body: Value = wrong.json().unwrap();
    assert_eq!(body["code"], "unauthenticated", "{body}");
    assert_eq!(body["message"], "wrong bearer token for the metrics");
    let plain = Client::new()
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .bearer_auth(&token)
        .send();
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    let page = https.get(&url).bearer_auth(&token).send().unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = page.text().unwrap();
    for line in [
        "stratus_libvirt_up 1",
        "stratus_image_cache_misses_total 0",
        "# TYPE stratus_instance_accepted_to_running_seconds histogram",
        "stratus_instance_accepted_to_running_seconds_count 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
    }

    // A real Prometheus scrapes it the way an operator would configure it.
    let server = prometheus(&cloud, metrics_port, &token_file);
    let local = Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    server.wait_value(&local, "up{job=\"agent\"}", |v| v == 1.0);

    // One real guest: its CPU, its disk and its network under its instance ID and name.
    let first = cloud
        .run_instance(
            "alice",
            json!({"image": "appliance", "type": "t1.micro", "name": "web"}),
        )
        .unwrap();
    cloud
        .wait_state("alice", first.id, InstanceState::Running, BOOT)
        .unwrap();
    cloud.wait_banner(first.id, BOOT).unwrap();
    let id = first.id.to_string();
    let of_first = format!("instance_id=\"{id}\",name=\"web\"");
    server.wait_value(
        &local,
        &format!("stratus_instance_cpu_seconds_total{{{of_first}}}"),
        |v| v > 0.0,
    );
    server.wait_value(
        &local,
        &format!("stratus_instance_disk_read_bytes_total{{{of_first},device=\"vda\"}}"),
        |v| v > 0.0,
    );
    server.wait_value(
        &local,
        &format!("stratus_instance_memory_bytes{{{of_first}}}"),
        |v| v == (first.memory_mib << 20) as f64,
    );
    for metric in [
        "stratus_instance_network_receive_bytes_total",
        "stratus_instance_network_transmit_bytes_total",
    ] {
        let series = server.wait_series(&local, &format!("{metric}{{{of_first}}}"), 1);
        assert!(
            series[0]["interface"]
                .as_str()
                .is_some_and(|i| i.starts_with('s')),
            "the guest's tap: {series:?}"
        );
    }
    let artifacts = 3.0; // the appliance's disk, kernel and initrd
    server.wait_value(&local, "stratus_image_cache_misses_total", |v| {
        v == artifacts
    });
    assert_eq!(
        server.wait_value(&local, "stratus_image_cache_downloads_total", |_| true),
        artifacts
    );
    assert_eq!(
        server.wait_value(&local, "stratus_image_cache_hits_total", |_| true),
        0.0
    );
    let downloaded = server.wait_value(&local, "stratus_image_cache_download_bytes_total", |v| {
        v > 0.0
    });
    assert_eq!(
        server.wait_value(&local, "stratus_image_cache_bytes", |_| true),
        downloaded
    );
    server.wait_value(
        &local,
        "stratus_instance_accepted_to_running_seconds_count",
        |v| v == 1.0,
    );
    let waited = server.wait_value(
        &local,
        "stratus_instance_accepted_to_running_seconds_sum",
        |_| true,
    );
    assert!(waited > 0.0 && waited < BOOT.as_secs_f64(), "{waited}");
    server.wait_value(&local, "stratus_network_setup_seconds_count", |v| v == 1.0);

    // A second instance of the same image: every artifact a hit, nothing downloaded again.
    let second = cloud
        .run_instance("alice", json!({"image": "appliance", "type": "t1.micro"}))
        .unwrap();
    cloud
        .wait_state("alice", second.id, InstanceState::Running, BOOT)
        .unwrap();
    server.wait_value(&local, "stratus_image_cache_hits_total", |v| v == artifacts);
    assert_eq!(
        server.wait_value(&local, "stratus_image_cache_misses_total", |_| true),
        artifacts
    );
    assert_eq!(
        server.wait_value(&local, "stratus_image_cache_download_bytes_total", |_| true),
        downloaded
    );
    server.wait_value(
        &local,
        "stratus_instance_accepted_to_running_seconds_count",
        |v| v == 2.0,
    );
    server.wait_value(&local, "stratus_network_setup_seconds_count", |v| v == 2.0);
    let guests = server.wait_series(&local, "stratus_instance_cpu_seconds_total", 2);
    let mut ids: Vec<&str> = guests
        .iter()
        .map(|g| g["instance_id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut expected = vec![id.clone(), second.id.to_string()];
    expected.sort();
    assert_eq!(ids, expected);

    // What the page says now is kept with the test's files (STRATUS_KEEP_TEST_DIRS=1).
    let page = https.get(&url).bearer_auth(&token).send().unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    std::fs::write(cloud.dir.join("agent-metrics.txt"), page.text().unwrap()).unwrap();

    // A persistent disk hot-plugged into the first guest and unplugged again.
    let (status, volume) = cloud
        .post("alice", "/volumes", &json!({"size": 1}))
        .unwrap();
    assert!(status.is_success(), "{status} {volume}");
    let volume = volume["id"].as_str().unwrap().to_owned();
    wait_volume(&cloud, &volume, "available", |v| v["state"] == "available");
    let (status, body) = cloud
        .post(
            "alice",
            &format!("/instances/{}/volumes", first.id),
            &json!({"volume": volume}),
        )
        .unwrap();
    assert!(status.is_success(), "{status} {body}");
    wait_volume(&cloud, &volume, "attached", |v| {
        v["attachments"][0]["state"] == "attached"
    });
    server.wait_value(&local, "stratus_disk_attach_seconds_count", |v| v == 1.0);
    server.wait_series(
        &local,
        &format!("stratus_instance_disk_read_bytes_total{{{of_first},device=\"vdb\"}}"),
        1,
    );
    let (status, body) = cloud
        .delete(
            "alice",
            &format!("/instances/{}/volumes/{volume}", first.id),
        )
        .unwrap();
    assert!(status.is_success(), "{status} {body}");
    wait_volume(&cloud, &volume, "detached", |v| {
        v["attachments"].as_array().is_some_and(|a| a.is_empty())
    });
    server.wait_value(&local, "stratus_disk_detach_seconds_count", |v| v == 1.0);

    // Killed, a guest leaves the scrape.
    for vm in [first.id, second.id] {
        let (status, body) = cloud.delete("alice", &format!("/instances/{vm}")).unwrap();
        assert!(status.is_success(), "{status} {body}");
        cloud
            .wait_state("alice", vm, InstanceState::Done, BOOT)
            .unwrap();
    }
    server.wait_series(&local, "stratus_instance_cpu_seconds_total", 0);
}
