//! The administrators' dashboard in a real browser: Debian's chromium, headless, driven over
//! WebDriver by chromedriver (both started by the test, stopped by pid), trusting the site CA
//! through an NSS database of its own (so the page is reached over the real TLS endpoint).
//! A wrong password and a user who is not an administrator are refused; an administrator sees
//! a VM started through the CLI appear and turn Running, then Done when killed, without the
//! page being reloaded; with three controller nodes, a dashboard opened on a follower keeps
//! updating when the leader is killed. The test saves a screenshot
//! (`target/tmp/dashboard.png`).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use stratus_e2e::cluster::{TestCluster, WAIT};
use stratus_e2e::{free_port, Spawned, TestCloud};

const BOOT: Duration = Duration::from_secs(120);
const SOON: Duration = Duration::from_secs(30);

/// chromedriver with a home of its own (its chromium's NSS database trusts the site CA),
/// killed by its pid when dropped.
struct Driver {
    _process: Spawned,
    port: u16,
    home: tempfile::TempDir,
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
}

fn driver(ca: &Path) -> Driver {
    let home = tempfile::tempdir().unwrap();
    let nss = home.path().join(".pki/nssdb");
    std::fs::create_dir_all(&nss).unwrap();
    let db = format!("sql:{}", nss.display());
    run("certutil", &["-d", &db, "-N", "--empty-password"]);
    run(
        "certutil",
        &[
            "-d",
            &db,
            "-A",
            "-t",
            "C,,",
            "-n",
            "stratus-test-ca",
            "-i",
            ca.to_str().unwrap(),
        ],
    );
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .env("HOME", home.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian's chromium-driver; scripts/install-deps.sh installs it)");
    let driver = Driver {
        _process: Spawned(child),
        port,
        home,
    };
    let deadline = Instant::now() + SOON;
    while TcpListener::bind(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    driver
}

async fn browser(driver: &Driver) -> Client {
    // The WebDriver client's TLS (unused: chromedriver is plain HTTP on loopback) wants a
    // crypto provider chosen; ring, as everywhere else here.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1400,1100",
                format!("--user-data-dir={}", driver.home.path().join("profile").display()),
            ],
        }),
    );
    ClientBuilder::rustls()
        .unwrap()
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a chromium session")
}

async fn log_in(browser: &Client, base: &str, user: &str, password: &str) {
    browser.goto(&format!("{base}/login")).await.unwrap();
    let form = browser
        .form(Locator::Css("form[action='/login']"))
        .await
        .unwrap();
    form.set_by_name("username", user).await.unwrap();
    form.set_by_name("password", password).await.unwrap();
    form.submit().await.unwrap();
}

/// The first element matching `css`, once there is one (at most `timeout`).
async fn wait_css(browser: &Client, css: &str, timeout: Duration) -> fantoccini::elements::Element {
    browser
        .wait()
        .at_most(timeout)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css} within {timeout:?}: {e}"))
}

async fn error_text(browser: &Client) -> String {
    wait_css(browser, "p.error", SOON)
        .await
        .text()
        .await
        .unwrap()
}

/// The instance ID `stratus-run-instance` printed.
fn vm_id(output: &std::process::Output) -> u64 {
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    text.split("(vm ID: ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no vm ID in {text}"))
}

#[test]
fn an_administrator_watches_a_vm_live_and_others_are_refused() {
    let cloud = TestCloud::with_agent("dashboard").unwrap();
    cloud.create_user("alice").unwrap();
    let driver = driver(&cloud.ca_certificate());
    let base = cloud.base();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let browser = browser(&driver).await;
        // Not logged in: the login form.
        browser.goto(&format!("{base}/")).await.unwrap();
        assert!(browser.current_url().await.unwrap().path() == "/login");
        // A wrong password, then a user who is not an administrator: refused.
        log_in(&browser, &base, "admin", "not-the-password").await;
        assert_eq!(error_text(&browser).await, "Wrong user name or password.");
        log_in(&browser, &base, "alice", &cloud.password("alice")).await;
        let refused = error_text(&browser).await;
        assert!(refused.contains("alice is not one"), "{refused}");
        browser
            .find(Locator::Css("form[action='/logout'] button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_css(&browser, "form[action='/login']", SOON).await;

        // The administrator's dashboard, following the event stream.
        log_in(&browser, &base, "admin", &cloud.password("admin")).await;
        wait_css(&browser, "#connection[data-state='live']", SOON).await;
        let host = browser
            .find(Locator::Css(&format!(
                "tr[data-host='{}']",
                cloud.host_name
            )))
            .await
            .unwrap();
        assert_eq!(
            host.attr("data-status").await.unwrap().as_deref(),
            Some("up")
        );
        // A mark that a reload would wipe out.
        browser
            .execute("window.stillTheSamePage = 42; return 1;", vec![])
            .await
            .unwrap();

        // A VM started through the CLI appears and turns Running.
        let id = vm_id(&cloud.stratus("alice", &["run-instance", "appliance", "-t", "t1.micro"]));
        let row = format!("tr[data-id='{id}']");
        wait_css(&browser, &format!("{row}[data-state='Running']"), BOOT).await;
        let owner = browser
            .find(Locator::Css(&format!("{row} td.owner")))
            .await
            .unwrap();
        assert_eq!(owner.text().await.unwrap(), "alice");
        // Its name too, which the page learnt from the event that made the row.
        let name = browser
            .find(Locator::Css(&format!("{row} td.name")))
            .await
            .unwrap();
        assert_eq!(name.text().await.unwrap(), format!("vm-{id}"));
        let running = browser
            .find(Locator::Css("dd.count[data-state='Running']"))
            .await
            .unwrap();
        assert_eq!(running.text().await.unwrap(), "1");
        let shot = browser.screenshot().await.unwrap();
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
        std::fs::write(&path, shot).unwrap();
        eprintln!("screenshot: {}", path.display());

        // Killed: Done, still without a reload; the activity log tells it.
        let out = cloud.stratus("alice", &["kill-instance", &id.to_string()]);
        assert!(out.status.success(), "{out:?}");
        wait_css(&browser, &format!("{row}[data-state='Done']"), BOOT).await;
        let mark = browser
            .execute("return window.stillTheSamePage;", vec![])
            .await
            .unwrap();
        assert_eq!(mark, json!(42), "the page was reloaded");
        let activity = browser
            .find(Locator::Css("#activity-list"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            activity.contains(&format!("instance-done instance/{id}")),
            "{activity}"
        );
        browser.close().await.unwrap();
    });
}

/// With three controller nodes, a dashboard opened on a follower keeps updating when the
/// leader is killed: its event stream is served by the node the page came from, the session
/// is a replicated token, and the page learns of the new leader from the stream.
#[test]
fn the_dashboard_on_a_follower_keeps_updating_across_a_leader_kill() {
    let mut cluster = TestCluster::new("dashboard-cluster", 3).unwrap();
    for id in 1..=3 {
        cluster.configure(id, id != 1, "").unwrap();
    }
    cluster.form(3).unwrap();
    let leader = cluster.wait_leader(WAIT).unwrap();
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let base = format!("https://{}", cluster.nodes[&follower].api());
    let driver = driver(&cluster.dir.join("ca.pem"));
    // The cluster's helpers block (reqwest's blocking client): they run between the browser's
    // async steps, never inside them.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let browser = runtime.block_on(async {
        let browser = browser(&driver).await;
        log_in(&browser, &base, "admin", &cluster.admin_password).await;
        if browser
            .wait()
            .at_most(SOON)
            .for_element(Locator::Css("#connection[data-state='live']"))
            .await
            .is_err()
        {
            let url = browser.current_url().await.unwrap();
            let source = browser.source().await.unwrap();
            panic!("the dashboard did not go live at {url}:\n{source}");
        }
        browser
            .execute("window.stillTheSamePage = 7; return 1;", vec![])
            .await
            .unwrap();
        browser
    });

    cluster.kill(leader);
    let next = cluster.wait_leader(WAIT).unwrap();
    assert_ne!(next, leader);
    // The page shows the new leader, told by the stream.
    runtime.block_on(async {
        let shown = format!("node {next}");
        let deadline = Instant::now() + WAIT;
        loop {
            let text = browser
                .find(Locator::Id("leader"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if text == shown {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the page shows {text:?}, not {shown:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // And the changes made under the new leader.
    let (status, body, _) = cluster
        .post(
            follower,
            "/networks",
            &json!({"name": "after-kill", "cidr": "10.99.0.0/24", "gateway": "10.99.0.1",
                    "bridge": "bafter"}),
        )
        .unwrap();
    assert_eq!(status.as_u16(), 201, "{body}");
    runtime.block_on(async {
        browser
            .wait()
            .at_most(SOON)
            .for_element(Locator::XPath(
                "//ol[@id='activity-list']/li[contains(., 'network-defined network/after-kill')]",
            ))
            .await
            .unwrap();
        let mark = browser
            .execute("return window.stillTheSamePage;", vec![])
            .await
            .unwrap();
        assert_eq!(mark, json!(7), "the page was reloaded");
        browser.close().await.unwrap();
    });
}
