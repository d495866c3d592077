//! A real browser for the web pages' tests: Debian's chromium, headless, driven over WebDriver
//! by chromedriver (`stratus_e2e::Chromedriver`, stopped with its chromium), trusting the site CA through an NSS
//! database of its own, so pages are reached over the controller's real TLS endpoint.
//!
//! Shared by the browser tests as `#[path = "browser/mod.rs"] mod browser;`: it is not part
//! of the `stratus-e2e` library, whose dependencies are the binaries' too (the WebDriver
//! client's TLS features would change theirs).
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};

use stratus_e2e::Chromedriver;

/// How long a page is given to show what a test waits for, when nothing slow (a boot) is
/// involved.
pub const SOON: Duration = Duration::from_secs(30);

/// chromedriver for a chromium that trusts `ca` (a PEM file), stopped with its chromium
/// when dropped, also when a test failed before closing its browser.
pub type Driver = Chromedriver;

pub fn driver(ca: &Path) -> Driver {
    Chromedriver::start(ca).unwrap()
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
        driver.chrome_options(&format!("profile-{profile}")),
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
