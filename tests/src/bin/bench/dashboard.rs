//! `--only dashboard`: what operators' pages cost at the scale of a site's instance table.
//! One controller with 1,000 instances (placed on an enrolled host that never runs them, so
//! no guest is needed): the time and size of a `/metrics` scrape and of the overview and
//! instances pages (from the request to its last byte, with an administrator's session), and
//! their first contentful paint in Debian's headless chromium, driven over WebDriver
//! (chromedriver's HTTP protocol, spoken here with reqwest), as the browser measures it
//! (`performance.getEntriesByName("first-contentful-paint")`).

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use reqwest::redirect::Policy;
use serde_json::{json, Value};
use stratus_e2e::{Chromedriver, TestCloud};

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
    for (path, name) in [("/", "overview"), ("/instances", "instances")] {
        let mut pages = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            let started = Instant::now();
            let page = browser
                .get(format!("{}{path}", cloud.base()))
                .header("cookie", &cookie)
                .send()?
                .error_for_status()?
                .bytes()?;
            pages.push(started.elapsed());
            size = page.len();
        }
        report(
            &format!("GET {path} ({name}, to the last byte)"),
            &mut pages,
        );
        println!("  {name} page: {:.1} KiB of HTML", size as f64 / 1024.0);
    }
    let mut assets = 0;
    for path in ["/ui/style.css", "/ui/live.js", "/ui/overview.js"] {
        assets += browser
            .get(format!("{}{path}", cloud.base()))
            .send()?
            .error_for_status()?
            .bytes()?
            .len();
    }
    println!(
        "  the overview's script and style: {:.1} KiB",
        assets as f64 / 1024.0
    );
    first_paint(&cloud, &password)
}

/// How many page loads the first-paint figures are taken over.
const PAINTS: usize = 20;

/// First contentful paint of the overview and the instances page in headless chromium.
fn first_paint(cloud: &TestCloud, password: &str) -> anyhow::Result<()> {
    let driver = Chromedriver::start(&cloud.ca_certificate())?;
    let port = driver.port;
    let webdriver = format!("http://127.0.0.1:{port}");
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let session: Value = http
        .post(format!("{webdriver}/session"))
        .json(&json!({"capabilities": {"alwaysMatch": {
                "goog:chromeOptions": driver.chrome_options("profile")}}}))
        .send()?
        .error_for_status()?
        .json()?;
    let id = session["value"]["sessionId"]
        .as_str()
        .context("a WebDriver session")?
        .to_owned();
    let base = format!("{webdriver}/session/{id}");
    let go = |url: String| -> anyhow::Result<()> {
        http.post(format!("{base}/url"))
            .json(&json!({ "url": url }))
            .send()?
            .error_for_status()?;
        Ok(())
    };
    let script = |source: &str, args: Value| -> anyhow::Result<Value> {
        let answer: Value = http
            .post(format!("{base}/execute/sync"))
            .json(&json!({"script": source, "args": args}))
            .send()?
            .error_for_status()?
            .json()?;
        Ok(answer["value"].clone())
    };
    go(format!("{}/login", cloud.base()))?;
    script(
        "const f = document.querySelector(\"form[action='/login']\");\
         f.username.value = arguments[0]; f.password.value = arguments[1]; f.submit(); return 1;",
        json!(["admin", password]),
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while script("return location.pathname;", json!([]))? != json!("/") {
        if Instant::now() > deadline {
            bail!("the browser did not log in");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for (path, name) in [("/", "overview"), ("/instances", "instances")] {
        let mut paints = Vec::with_capacity(PAINTS);
        let mut transferred = 0.0;
        for _ in 0..PAINTS {
            go(format!("{}{path}", cloud.base()))?;
            // The paint entry may come after the load the navigation waited for.
            let figures: Value = http
                .post(format!("{base}/execute/async"))
                .json(&json!({"args": [], "script":
                    "const done = arguments[arguments.length - 1];\
                     const size = () => performance.getEntriesByType('navigation')[0].transferSize\
                       + performance.getEntriesByType('resource').reduce((s, r) => s + r.transferSize, 0);\
                     new PerformanceObserver((list, observer) => {\
                       const p = list.getEntriesByName('first-contentful-paint')[0];\
                       if (p) { observer.disconnect(); done([p.startTime, size()]); }\
                     }).observe({ type: 'paint', buffered: true });"}))
                .send()?
                .error_for_status()?
                .json::<Value>()?["value"]
                .clone();
            let paint = figures[0].as_f64().context("no first contentful paint")?;
            transferred = figures[1].as_f64().unwrap_or(0.0);
            paints.push(Duration::from_secs_f64(paint / 1000.0));
        }
        report(
            &format!("first paint of {path} ({name}, chromium)"),
            &mut paints,
        );
        println!(
            "  {name}: {:.1} KiB transferred for the page and what it loads",
            transferred / 1024.0
        );
    }
    http.delete(&base).send()?;
    Ok(())
}
