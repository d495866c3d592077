//! A real browser for the web pages' tests: Debian's chromium, headless, driven over WebDriver
//! by chromedriver (started here, stopped by its pid), trusting the site CA through an NSS
//! database of its own, so pages are reached over the controller's real TLS endpoint.
//!
//! Shared by the browser tests as `#[path = "browser/mod.rs"] mod browser;`: it is not part
//! of the `stratus-e2e` library, whose dependencies are the binaries' too (the WebDriver
//! client's TLS features would change theirs).
#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use stratus_e2e::{free_port, SpawnedGroup};

/// How long a page is given to show what a test waits for, when nothing slow (a boot) is
/// involved.
pub const SOON: Duration = Duration::from_secs(30);

/// chromedriver with a home of its own (its chromium's NSS database trusts the site CA),
/// killed with the chromium it started (its process group) when dropped, also when a test
/// failed before closing its browser.
pub struct Driver {
    _process: SpawnedGroup,
    port: u16,
    home: tempfile::TempDir,
}

/// Starts chromedriver for a chromium that trusts `ca` (a PEM file).
pub fn driver(ca: &Path) -> Driver {
    let home = stratus_e2e::browser_home(ca).unwrap();
    let port = free_port();
    let child = Command::new("chromedriver")
        .process_group(0)
        .arg(format!("--port={port}"))
        .env("HOME", home.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian's chromium-driver; scripts/install-deps.sh installs it)");
    let driver = Driver {
        _process: SpawnedGroup(child),
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

/// A new headless chromium session (its own profile under the driver's home).
pub async fn browser(driver: &Driver) -> Client {
    // The WebDriver client's TLS (unused: chromedriver is plain HTTP on loopback) wants a
    // crypto provider chosen; ring, as everywhere else here.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut capabilities = serde_json::Map::new();
    static PROFILE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let profile = PROFILE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--window-size=1400,1100",
                format!("--user-data-dir={}", driver.home.path().join(format!("profile-{profile}")).display()),
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

/// Fills and sends the login form at `base`.
pub async fn log_in(browser: &Client, base: &str, user: &str, password: &str) {
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
pub async fn wait_css(browser: &Client, css: &str, timeout: Duration) -> Element {
    browser
        .wait()
        .at_most(timeout)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css} within {timeout:?}: {e}"))
}

/// The text of the page's error message (`p.error`), once it shows one.
pub async fn error_text(browser: &Client) -> String {
    wait_css(browser, "p.error", SOON)
        .await
        .text()
        .await
        .unwrap()
}

/// The text of the first element matching `css`, once it equals `expected` (at most
/// `timeout`); panics with what it showed last.
pub async fn wait_text(browser: &Client, css: &str, expected: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let shown = match browser.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.ok(),
            Err(_) => None,
        };
        if shown.as_deref() == Some(expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{css} shows {shown:?}, not {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The text of the first element matching `css`, once it contains `needle` (at most
/// `timeout`); panics with what it showed last.
pub async fn wait_contains(browser: &Client, css: &str, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let shown = match browser.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.ok(),
            Err(_) => None,
        };
        if let Some(text) = shown.as_deref().filter(|t| t.contains(needle)) {
            return text.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "{css} shows {shown:?}, without {needle:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Saves a screenshot of the page as `<target>/tmp/<name>.png` and says where.
pub async fn screenshot(browser: &Client, name: &str) {
    let shot = browser.screenshot().await.unwrap();
    let dir = stratus_e2e::bin_dir()
        .parent()
        .expect("the target directory")
        .join("tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, shot).unwrap();
    eprintln!("screenshot: {}", path.display());
}
