use std::sync::Arc;

use stratus_common::agent::{domain_name, Desire, HostDesired, ImageSpec};
use stratus_common::api::{Artifact, Compression, DiskFormat};
use tokio::sync::watch;

use super::server::{self, BearerToken, HostCertificate, ServeError};
use super::*;
use crate::hypervisor::{BlockStats, FakeHypervisor, InstanceTag, InterfaceStats, RunState};
use crate::identity::Identity;
use crate::images::download::{Downloader, SourcePolicy};
use crate::volumes::test_pki::TestPki;

const CLUSTER: &str = "c0ffee00-0000-4000-8000-000000000000";

/// Instances `id` named `name`, to run.
fn desired(names: &[(u64, &str)]) -> HostDesired {
    let image = ImageSpec {
        name: "img".into(),
        format: DiskFormat::Raw,
        disk: Artifact {
            locations: vec![],
            sha256: String::new(),
            size: None,
            compression: Compression::None,
        },
        kernel: None,
        initrd: None,
        cmdline: None,
    };
    let ids: Vec<(u64, Desire)> = names.iter().map(|&(id, _)| (id, Desire::Run)).collect();
    let mut desired = crate::reconcile::tests::desired(&image, &ids);
    for (instance, &(_, name)) in desired.instances.iter_mut().zip(names) {
        instance.hostname = name.into();
    }
    desired
}

struct Rig {
    _dir: tempfile::TempDir,
    hv: Arc<FakeHypervisor>,
    timings: Timings,
    metrics: Arc<AgentMetrics>,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let hv = Arc::new(FakeHypervisor::new());
    let cache = Arc::new(
        ImageCache::open(
            &dir.path().join("images"),
            1 << 30,
            Downloader::new(SourcePolicy::default()),
        )
        .unwrap(),
    );
    let (_tx, rx) = watch::channel(Some(desired(&[(5, "web"), (6, "db")])));
    let timings = Timings::default();
    let metrics = Arc::new(AgentMetrics::new(
        hv.clone(),
        CLUSTER.into(),
        cache,
        rx,
        &timings,
    ));
    Rig {
        _dir: dir,
        hv,
        timings,
        metrics,
    }
}

fn has(text: &str, line: &str) {
    assert!(text.lines().any(|l| l == line), "{line:?} not in:\n{text}");
}

#[test]
fn a_scrape_shows_each_guest_of_this_cluster_with_its_counters_and_the_cache() {
    let rig = rig();
    let ours = domain_name(CLUSTER, 5);
    rig.hv.insert_domain(
        &ours,
        Some(InstanceTag {
            cluster_id: CLUSTER.into(),
            instance_id: 5,
            host: None,
        }),
        RunState::Running,
    );
    rig.hv.set_guest_stats(
        &ours,
        GuestStats {
            cpu_ns: 2_500_000_000,
            vcpus: 2,
            memory_bytes: 256 << 20,
            rss_bytes: Some(100 << 20),
            usable_bytes: None,
            disks: vec![BlockStats {
                device: "vda".into(),
                read_bytes: 4096,
                written_bytes: 512,
                reads: 3,
                writes: 1,
            }],
            interfaces: vec![InterfaceStats {
                interface: "stap5n0".into(),
                receive_bytes: 1000,
                transmit_bytes: 2000,
                receive_packets: 10,
                transmit_packets: 20,
                ..InterfaceStats::default()
            }],
        },
    );
    // Another cluster's guest and a domain that is not ours at all stay out.
    rig.hv.insert_domain(
        "stratus-other-6",
        Some(InstanceTag {
            cluster_id: "another".into(),
            instance_id: 6,
            host: None,
        }),
        RunState::Running,
    );
    rig.hv
        .insert_domain("somebody-elses", None, RunState::Running);
    rig.timings.observe_running(0);
    rig.timings.network_setup.observe(0.003);

    let text = rig.metrics.render();
    for line in [
        "stratus_libvirt_up 1",
        "# TYPE stratus_instance_cpu_seconds_total counter",
        "stratus_instance_cpu_seconds_total{instance_id=\"5\",name=\"web\"} 2.5",
        "stratus_instance_vcpus{instance_id=\"5\",name=\"web\"} 2",
        "stratus_instance_memory_bytes{instance_id=\"5\",name=\"web\"} 268435456",
        "stratus_instance_memory_rss_bytes{instance_id=\"5\",name=\"web\"} 104857600",
        "stratus_instance_disk_read_bytes_total{instance_id=\"5\",name=\"web\",device=\"vda\"} 4096",
        "stratus_instance_disk_written_bytes_total{instance_id=\"5\",name=\"web\",device=\"vda\"} 512",
        "stratus_instance_disk_reads_completed_total{instance_id=\"5\",name=\"web\",device=\"vda\"} 3",
        "stratus_instance_network_receive_bytes_total{instance_id=\"5\",name=\"web\",interface=\"stap5n0\"} 1000",
        "stratus_instance_network_transmit_bytes_total{instance_id=\"5\",name=\"web\",interface=\"stap5n0\"} 2000",
        "stratus_instance_network_transmit_packets_total{instance_id=\"5\",name=\"web\",interface=\"stap5n0\"} 20",
        "stratus_image_cache_bytes 0",
        "stratus_image_cache_budget_bytes 1073741824",
        "stratus_image_cache_hits_total 0",
        "stratus_image_cache_misses_total 0",
        "stratus_image_cache_download_bytes_total 0",
        "# TYPE stratus_instance_accepted_to_running_seconds histogram",
        "stratus_instance_accepted_to_running_seconds_count 1",
        "stratus_network_setup_seconds_count 1",
        "stratus_disk_attach_seconds_count 0",
        "stratus_disk_detach_seconds_count 0",
    ] {
        has(&text, line);
    }
    assert!(!text.contains("instance_id=\"6\""), "{text}");
    assert!(
        !text.contains("stratus_instance_memory_usable_bytes"),
        "not reported, not shown: {text}"
    );

    // A guest gone is gone from the next scrape.
    rig.hv.remove_domain(&ours);
    let text = rig.metrics.render();
    assert!(!text.contains("stratus_instance_cpu_seconds"), "{text}");
    has(&text, "stratus_libvirt_up 1");
}

#[test]
fn without_libvirt_a_scrape_still_shows_the_host_and_says_so() {
    let rig = rig();
    rig.hv.fail_lists(Some("libvirtd is down"));
    let text = rig.metrics.render();
    has(&text, "stratus_libvirt_up 0");
    has(&text, "stratus_image_cache_artifacts 0");
}

#[test]
fn the_token_file_must_be_root_only_and_hold_a_token() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "s3cret\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = BearerToken::read(&path).unwrap_err();
    assert!(
        matches!(err, ServeError::TokenMode { mode: 0o644, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("chmod 600"), "{err}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    BearerToken::read(&path).unwrap();
    std::fs::write(&path, " \n").unwrap();
    assert!(matches!(
        BearerToken::read(&path),
        Err(ServeError::TokenEmpty(_))
    ));
    assert!(matches!(
        BearerToken::read(&dir.path().join("missing")),
        Err(ServeError::TokenIo { .. })
    ));
}

fn identity(pki: &TestPki, host: &str) -> Identity {
    let pems = pki.host(host);
    Identity::new(pems.key, pems.certificate).unwrap()
}

/// A client that trusts only `ca_pem` and reaches `host` at `addr` (no connection reuse).
fn client(ca_pem: &str, host: &str, addr: std::net::SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .resolve(host, addr)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

#[tokio::test]
async fn scrapes_need_the_token_and_get_json_refusals() {
    let rig = rig();
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = server::router(rig.metrics.clone(), Arc::new(BearerToken::new("s3cret")));
    let task = tokio::spawn(server::serve(listener, None, app));
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/metrics");

    let anonymous = http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), reqwest::StatusCode::UNAUTHORIZED);
    assert!(anonymous.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    let body: serde_json::Value = anonymous.json().await.unwrap();
    assert_eq!(body["code"], "unauthenticated");
    assert!(
        body["message"].as_str().unwrap().contains("bearer token"),
        "{body}"
    );
    let basic = http
        .get(&url)
        .basic_auth("admin", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), reqwest::StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = basic.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("only a bearer"));
    let wrong = http.get(&url).bearer_auth("guess").send().await.unwrap();
    assert_eq!(wrong.status(), reqwest::StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = wrong.json().await.unwrap();
    assert_eq!(body["message"], "wrong bearer token for the metrics");

    let page = http.get(&url).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(page.status(), reqwest::StatusCode::OK);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    assert!(page.text().await.unwrap().contains("stratus_libvirt_up 1"));

    let elsewhere = http
        .get(format!("http://{addr}/api/v1/instances"))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), reqwest::StatusCode::NOT_FOUND);
    let body: serde_json::Value = elsewhere.json().await.unwrap();
    assert_eq!(body["code"], "not_found");
    let post = http.post(&url).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(post.status(), reqwest::StatusCode::METHOD_NOT_ALLOWED);
    let body: serde_json::Value = post.json().await.unwrap();
    assert_eq!(body["code"], "method_not_allowed");
    task.abort();
}

#[tokio::test]
async fn over_tls_the_host_presents_its_certificate_and_a_renewed_one_at_once() {
    let rig = rig();
    let (first_ca, second_ca) = (TestPki::new(), TestPki::new());
    let host = "metrics-host";
    let certificate = Arc::new(HostCertificate::new(&identity(&first_ca, host)).unwrap());
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = server::router(rig.metrics.clone(), Arc::new(BearerToken::new("s3cret")));
    let acceptor = server::tls_acceptor(certificate.clone()).unwrap();
    let task = tokio::spawn(server::serve(listener, Some(acceptor), app));
    let url = format!("https://{host}:{}/metrics", addr.port());
    let scrape = |ca: &str| {
        let request = client(ca, host, addr).get(&url).bearer_auth("s3cret");
        async move { request.send().await.map(|r| r.status()) }
    };

    assert_eq!(
        scrape(&first_ca.ca_pem).await.unwrap(),
        reqwest::StatusCode::OK
    );
    assert!(scrape(&second_ca.ca_pem).await.is_err());
    // Plain HTTP gets no answer from the TLS listener.
    assert!(reqwest::Client::new()
        .get(format!("http://{addr}/metrics"))
        .bearer_auth("s3cret")
        .send()
        .await
        .is_err());

    // Renewed (here by another CA, to tell them apart): new connections see the new one.
    certificate.replace(&identity(&second_ca, host)).unwrap();
    assert_eq!(
        scrape(&second_ca.ca_pem).await.unwrap(),
        reqwest::StatusCode::OK
    );
    assert!(scrape(&first_ca.ca_pem).await.is_err());
    task.abort();
}
