//! `--only dashboard`: what operators' pages cost at the scale of a site's instance table.
//! One controller with 1,000 instances (placed on an enrolled host that never runs them, so
//! no guest is needed): the time and size of a `/metrics` scrape and of the dashboard page
//! (from the request to its last byte, with an administrator's session).

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use reqwest::redirect::Policy;
use serde_json::json;
use stratus_e2e::TestCloud;

use crate::report;

const INSTANCES: usize = 1000;
const SAMPLES: usize = 50;

pub fn dashboard_bench() -> anyhow::Result<()> {
    println!("dashboard and metrics at {INSTANCES} instances (n={SAMPLES} each)");
    let cloud = TestCloud::start("dashboard-bench")?;
    let host = cloud.enrol_host("bench-host")?;
    let registered = host
        .client
        .post(cloud.url("/hosts"))
        .json(
            &json!({"name": "bench-host", "vcpus": 4096, "memory_mib": 16u64 << 20,
                      "disk_gib": 100000, "domain_type": "qemu", "arch": "x86_64",
                      "hypervisor": "bench"}),
        )
        .send()?;
    if !registered.status().is_success() {
        bail!("register: {}", registered.status());
    }
    cloud.register_appliance("appliance")?;
    for k in 0..INSTANCES {
        let (status, body) = cloud.post(
            "admin",
            "/instances",
            &json!({"image": "appliance", "type": "t1.micro", "name": format!("vm-{k}")}),
        )?;
        if !status.is_success() {
            bail!("instance {k}: {status} {body}");
        }
    }
    let http = cloud.client()?;
    let password = cloud.password("admin");

    let mut scrapes = Vec::with_capacity(SAMPLES);
    let mut size = 0;
    for _ in 0..SAMPLES {
        let started = Instant::now();
        let text = http
            .get(format!("{}/metrics", cloud.base()))
            .basic_auth("admin", Some(&password))
            .send()?
            .error_for_status()?
            .text()?;
        scrapes.push(started.elapsed());
        size = text.len();
    }
    report("GET /metrics (to the last byte)", &mut scrapes);
    println!("  /metrics size: {:.1} KiB", size as f64 / 1024.0);

    // A session as a browser gets it.
    let browser = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(
            cloud.ca_certificate(),
        )?)?)
        .redirect(Policy::none())
        .timeout(Duration::from_secs(30))
        .build()?;
    let login = browser
        .post(format!("{}/login", cloud.base()))
        .form(&[("username", "admin"), ("password", password.as_str())])
        .send()?;
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .context("a session cookie")?
        .to_owned();
    let mut pages = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let started = Instant::now();
        let page = browser
            .get(format!("{}/", cloud.base()))
            .header("cookie", &cookie)
            .send()?
            .error_for_status()?
            .bytes()?;
        pages.push(started.elapsed());
        size = page.len();
    }
    report("GET / (dashboard, to the last byte)", &mut pages);
    let mut assets = 0;
    for path in ["/ui/live.js", "/ui/overview.js", "/ui/style.css"] {
        assets += browser
            .get(format!("{}{path}", cloud.base()))
            .send()?
            .error_for_status()?
            .bytes()?
            .len();
    }
    println!(
        "  dashboard page: {:.1} KiB of HTML, and {:.1} KiB of script and style",
        size as f64 / 1024.0,
        assets as f64 / 1024.0
    );
    Ok(())
}
