//! The users' web pages in a real browser (Debian's chromium, headless, over the controller's
//! real TLS endpoint): a user who is not an administrator logs in and lands on the
//! Marketplace, uploads a signed entry from a file (a tampered one refused with the API's own
//! message) and sees it listed with the site policy's verdict; on the Storage page creates a
//! disk, attaches it to their running VM (started through the CLI) and sees it attached
//! without a reload, detaches and deletes it; never sees another user's private disk but sees
//! a public one. Forms posted with a missing, wrong or tampered CSRF token, or from another
//! site, are refused (403, a clear message) and change nothing; the administrators' pages are
//! refused to the user. Screenshots: `target/tmp/web-*.png`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use reqwest::blocking::Client as Http;
use reqwest::StatusCode;
use serde_json::{json, Value};
use stratus_e2e::pki::TestPki;
use stratus_e2e::{appliance, TestCloud, TEST_ROOT};

mod browser;

use browser::{browser, driver, error_text, log_in, screenshot, wait_contains, wait_css, SOON};

const BOOT: Duration = Duration::from_secs(120);

/// A cloud trusting a test CA's endorsers, whose agent stores volumes; users alice and bob.
fn cloud(pki: &TestPki) -> TestCloud {
    let trust = format!(
        "[marketplace]\ntrusted_ca_file = \"{}\"\n",
        pki.ca_file.display()
    );
    let mut cloud = TestCloud::start_with("web-pages", &trust).unwrap();
    cloud.store_volumes().unwrap();
    cloud.start_agent().unwrap();
    cloud.register_appliance("appliance").unwrap();
    cloud.create_user("alice").unwrap();
    cloud.create_user("bob").unwrap();
    cloud
}

/// Runs a CLI command as `user` and returns its standard output; it must succeed.
fn cli(cloud: &TestCloud, user: &str, args: &[&str]) -> String {
    let out = cloud.stratus(user, args);
    assert!(out.status.success(), "stratus {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The instance ID `stratus-run-instance` printed.
fn vm_id(stdout: &str) -> u64 {
    stdout
        .split("(vm ID: ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no vm ID in {stdout}"))
}

/// `stratus-create-volume`: the new disk's UUID.
fn create_volume(cloud: &TestCloud, user: &str, args: &[&str]) -> String {
    let mut all = vec!["create-volume", "--size", "1"];
    all.extend_from_slice(args);
    let out = cli(cloud, user, &all);
    out.trim()
        .strip_prefix("DISK ")
        .unwrap_or_else(|| panic!("not a DISK line: {out:?}"))
        .to_owned()
}

/// The UUIDs of the disks `user` sees through the API.
fn volume_ids(cloud: &TestCloud, user: &str) -> Vec<String> {
    let (status, list) = cloud.get(user, "/volumes").unwrap();
    assert_eq!(status, StatusCode::OK, "{list}");
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect()
}

fn marketplace_total(cloud: &TestCloud) -> u64 {
    let (_, list) = cloud.get("alice", "/images?history=true").unwrap();
    list["marketplace"]["total"].as_u64().unwrap()
}

/// An HTTP client for the web pages, as a browser without JavaScript: trusts the site CA,
/// follows no redirects (the test looks at each answer).
fn web_client(cloud: &TestCloud) -> Http {
    let pem = std::fs::read(cloud.ca_certificate()).unwrap();
    Http::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Logs `user` in through the login form; returns the `Cookie` header of the session.
fn session(cloud: &TestCloud, http: &Http, user: &str) -> String {
    let response = http
        .post(page_url(cloud, "/login"))
        .form(&[("username", user), ("password", &cloud.password(user))])
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie");
    cookie.split(';').next().unwrap().to_owned()
}

/// The CSRF token in a page's forms.
fn form_token(page: &str) -> String {
    page.split(r#"name="csrf" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a form with a CSRF token")
        .to_owned()
}

/// Runs `f`, which blocks (reqwest's blocking client), on a thread of its own: never inside the
/// browser's async steps.
fn blocking<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().unwrap())
}

/// A web page's address (not under the API's `/api/v1`).
fn page_url(cloud: &TestCloud, path: &str) -> String {
    format!("{}{path}", cloud.base())
}

/// Waits until no element matches `css` (at most `timeout`).
async fn wait_gone(browser: &Client, css: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while browser.find(Locator::Css(css)).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "{css} still shown after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn click(browser: &Client, css: &str) {
    wait_css(browser, css, SOON).await.click().await.unwrap();
}

/// Sets a mark a reload would wipe out, or checks it is still there.
async fn mark(browser: &Client, value: u32) {
    browser
        .execute(
            &format!("window.stillTheSamePage = {value}; return 1;"),
            vec![],
        )
        .await
        .unwrap();
}

async fn still_marked(browser: &Client, value: u32) {
    let mark = browser
        .execute("return window.stillTheSamePage;", vec![])
        .await
        .unwrap();
    assert_eq!(mark, json!(value), "the page was reloaded");
}

/// Uploads `file` through the Marketplace's upload page.
async fn upload(browser: &Client, base: &str, file: &Path) {
    browser
        .goto(&format!("{base}/marketplace/upload"))
        .await
        .unwrap();
    wait_css(browser, "input[name='metadata']", SOON)
        .await
        .send_keys(&file.display().to_string())
        .await
        .unwrap();
    click(browser, "#upload-form button[type='submit']").await;
}

/// Sets the hidden CSRF field of the form matching `form` to `value` (as a forger would).
async fn tamper(browser: &Client, form: &str, value: &str) {
    browser
        .execute(
            "document.querySelector(arguments[0]).querySelector(\"input[name='csrf']\").value = arguments[1]; return 1;",
            vec![json!(form), json!(value)],
        )
        .await
        .unwrap();
}

const REFUSED: &str =
    "This form's security token is missing or wrong: reload the page and send it again.";

#[test]
fn a_user_publishes_an_image_and_manages_a_disk_on_the_web_pages() {
    let pki_dir: PathBuf = Path::new(TEST_ROOT).join(format!("pki-web-{}", std::process::id()));
    let pki = TestPki::new(&pki_dir).unwrap();
    let cloud = cloud(&pki);
    let base = cloud.base();

    // alice's VM boots while she uses the Marketplace.
    let vm = vm_id(&cli(
        &cloud,
        "alice",
        &["run-instance", "appliance", "-t", "t1.micro"],
    ));
    // bob's disks: a private one alice must never see, a public one she may.
    let bob_private = create_volume(&cloud, "bob", &["--tag", "bob-private"]);
    let bob_public = create_volume(&cloud, "bob", &["--public", "--tag", "bob-public"]);

    // A signed entry for the appliance, and a copy whose signature is another's.
    let a = appliance().unwrap();
    let jane = pki.endorser("jane@example.org").unwrap();
    let signed = cloud
        .sign_appliance(&a, &jane, "appliance", |_| {})
        .unwrap();
    let mut forged: Value = serde_json::from_slice(&std::fs::read(&signed).unwrap()).unwrap();
    let other = cloud
        .sign_appliance(&a, &jane, "appliance-2", |m| {
            m["description"] = json!("not what was signed")
        })
        .unwrap();
    let other: Value = serde_json::from_slice(&std::fs::read(&other).unwrap()).unwrap();
    forged["signature"] = other["signature"].clone();
    let forged_file = cloud.dir.join("forged.signed.json");
    std::fs::write(&forged_file, serde_json::to_vec(&forged).unwrap()).unwrap();
    // What the API (and so the CLI) says of the forged file.
    let (status, api_refusal) = cloud
        .post_raw("alice", "/images", &serde_json::to_string(&forged).unwrap())
        .unwrap();
    assert!(status.is_client_error(), "{status} {api_refusal}");
    let api_message = api_refusal["message"].as_str().unwrap().to_owned();

    let driver = driver(&cloud.ca_certificate());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let browser = browser(&driver).await;

        // alice is no administrator: her login lands on the Marketplace, still empty.
        log_in(&browser, &base, "alice", &cloud.password("alice")).await;
        wait_css(&browser, "#connection[data-state='live']", SOON).await;
        assert_eq!(browser.current_url().await.unwrap().path(), "/marketplace");
        wait_contains(&browser, "#total", "0 matching entries", SOON).await;
        let nav = wait_css(&browser, "header nav", SOON)
            .await
            .text()
            .await
            .unwrap();
        assert_eq!(
            nav.split_whitespace().collect::<Vec<_>>(),
            ["Marketplace", "Storage"],
            "only the users' sections"
        );

        // The forged file is refused with the API's own message; nothing is listed.
        upload(&browser, &base, &forged_file).await;
        assert_eq!(error_text(&browser).await, api_message);
        wait_contains(&browser, "#refused-file", "forged.signed.json", SOON).await;
        assert_eq!(blocking(|| marketplace_total(&cloud)), 0);

        // An upload whose form token was tampered with is refused, and nothing is listed.
        browser
            .goto(&format!("{base}/marketplace/upload"))
            .await
            .unwrap();
        tamper(&browser, "#upload-form", "forged-token").await;
        wait_css(&browser, "input[name='metadata']", SOON)
            .await
            .send_keys(&signed.display().to_string())
            .await
            .unwrap();
        click(&browser, "#upload-form button[type='submit']").await;
        assert_eq!(error_text(&browser).await, REFUSED);
        assert_eq!(blocking(|| marketplace_total(&cloud)), 0);

        // The signed file is taken: the entry's page, with the site's verdict.
        upload(&browser, &base, &signed).await;
        let uploaded = wait_contains(&browser, "#uploaded", "UPLOADED", SOON).await;
        let identifier = browser
            .current_url()
            .await
            .unwrap()
            .path()
            .strip_prefix("/marketplace/images/")
            .expect("the entry's page")
            .to_owned();
        assert_eq!(identifier.len(), 27, "StratusLab-style identifier");
        assert!(
            uploaded.contains(&format!("UPLOADED {identifier} endorser jane@example.org")),
            "{uploaded}"
        );
        wait_css(&browser, "p.verdict[data-allowed='true']", SOON).await;
        wait_contains(&browser, "#kind", "machine", SOON).await;
        wait_contains(&browser, "#sha256", &a.sha256, SOON).await;
        wait_contains(&browser, "#endorser", "jane@example.org", SOON).await;
        wait_contains(&browser, "#os", "stratuslab-appliance 1", SOON).await;
        wait_contains(&browser, "#version", "1.0", SOON).await;
        screenshot(&browser, "web-marketplace-entry").await;

        // Listed with its verdict, and found by a query on its OS, not on another.
        browser.goto(&format!("{base}/marketplace")).await.unwrap();
        let row = format!("tr[data-identifier='{identifier}']");
        wait_contains(&browser, &format!("{row} td.verdict"), "allowed", SOON).await;
        screenshot(&browser, "web-marketplace").await;
        browser
            .goto(&format!(
                "{base}/marketplace?os=stratuslab-appliance&endorser=jane%40example.org&history=on"
            ))
            .await
            .unwrap();
        wait_css(&browser, &row, SOON).await;
        browser
            .goto(&format!("{base}/marketplace?os=ttylinux"))
            .await
            .unwrap();
        wait_contains(&browser, "#total", "0 matching entries", SOON).await;
        browser
            .goto(&format!("{base}/marketplace?from=someday"))
            .await
            .unwrap();
        assert!(error_text(&browser).await.starts_with("from: "));
        browser
            .goto(&format!("{base}/marketplace/endorsers"))
            .await
            .unwrap();
        wait_contains(&browser, "tr[data-endorser='jane@example.org']", "1", SOON).await;
        screenshot(&browser, "web-marketplace-endorsers").await;

        // Storage: bob's public disk, never his private one.
        browser.goto(&format!("{base}/storage")).await.unwrap();
        wait_css(&browser, "#connection[data-state='live']", SOON).await;
        wait_css(&browser, &format!("tr[data-id='{bob_public}']"), SOON).await;
        let source = browser.source().await.unwrap();
        assert!(
            !source.contains(&bob_private),
            "bob's private disk shown to alice"
        );
        assert!(!source.contains("bob-private"));

        // alice creates a disk.
        let form = browser.form(Locator::Css("form#create")).await.unwrap();
        form.set_by_name("size", "1").await.unwrap();
        form.set_by_name("tag", "alice-web").await.unwrap();
        form.submit().await.unwrap();
        let created = wait_contains(&browser, "p.notice[role='status']", "created", SOON).await;
        let disk = created
            .strip_prefix("DISK ")
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_else(|| panic!("{created}"))
            .to_owned();
        let disk_row = format!("tr[data-id='{disk}']");
        wait_css(
            &browser,
            &format!("{disk_row}[data-state='available']"),
            SOON,
        )
        .await;
        wait_contains(&browser, &format!("{disk_row} td.tag"), "alice-web", SOON).await;
        assert!(blocking(|| volume_ids(&cloud, "alice")).contains(&disk));

        // Her VM running (its guest up, so it answers hot-plug), she attaches the disk and
        // sees it attached without a reload.
        blocking(|| cloud.wait_banner(vm, BOOT)).unwrap();
        browser.goto(&format!("{base}/storage")).await.unwrap();
        wait_css(&browser, "#connection[data-state='live']", SOON).await;
        wait_css(
            &browser,
            &format!("{disk_row} form.attach select option[value='{vm}']"),
            SOON,
        )
        .await
        .click()
        .await
        .unwrap();
        click(&browser, &format!("{disk_row} form.attach button")).await;
        wait_contains(
            &browser,
            "p.notice[role='status']",
            "is being attached",
            SOON,
        )
        .await;
        mark(&browser, 7).await;
        let attachment = format!("{disk_row} li[data-instance='{vm}']");
        wait_css(
            &browser,
            &format!("{attachment}[data-state='attached']"),
            BOOT,
        )
        .await;
        wait_contains(&browser, &attachment, "/dev/vd", SOON).await;
        still_marked(&browser, 7).await;
        screenshot(&browser, "web-storage").await;
        let (_, volume) = blocking(|| cloud.get("alice", &format!("/volumes/{disk}"))).unwrap();
        assert_eq!(volume["attachments"][0]["state"], "attached", "{volume}");

        // A delete whose token was tampered with is refused; the disk stays attached.
        tamper(&browser, &format!("{disk_row} form.delete"), "forged-token").await;
        click(&browser, &format!("{disk_row} form.delete button")).await;
        assert_eq!(error_text(&browser).await, REFUSED);
        let (status, volume) =
            blocking(|| cloud.get("alice", &format!("/volumes/{disk}"))).unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(volume["state"], "available", "{volume}");
        assert_eq!(volume["attachments"][0]["state"], "attached", "{volume}");

        // Deleting it attached is refused with the service's message.
        browser.goto(&format!("{base}/storage")).await.unwrap();
        click(&browser, &format!("{disk_row} form.delete button")).await;
        let refusal = error_text(&browser).await;
        assert!(
            refusal.contains(&disk) && refusal.contains(&vm.to_string()),
            "{refusal}"
        );

        // Detached: the attachment goes, live.
        browser.goto(&format!("{base}/storage")).await.unwrap();
        wait_css(&browser, "#connection[data-state='live']", SOON).await;
        click(&browser, &format!("{attachment} form.detach button")).await;
        wait_contains(
            &browser,
            "p.notice[role='status']",
            "is being detached",
            SOON,
        )
        .await;
        wait_gone(&browser, &attachment, BOOT).await;

        // Deleted: its row goes.
        click(&browser, &format!("{disk_row} form.delete button")).await;
        wait_contains(&browser, "p.notice[role='status']", "deleted", SOON).await;
        wait_gone(&browser, &disk_row, BOOT).await;
        assert!(!blocking(|| volume_ids(&cloud, "alice")).contains(&disk));

        // The administrators' pages are not hers.
        browser.goto(&format!("{base}/instances")).await.unwrap();
        assert!(error_text(&browser).await.contains("alice is not one"));
        browser.close().await.unwrap();
    });

    // Forms posted without the page: no token, a wrong one, or from another site: refused,
    // nothing made. The page's own token with a bad size: the service's message.
    let http = web_client(&cloud);
    let cookie = session(&cloud, &http, "alice");
    let page = http
        .get(page_url(&cloud, "/storage"))
        .header("cookie", &cookie)
        .send()
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let token = form_token(&page.text().unwrap());
    let before = volume_ids(&cloud, "alice");
    let create = |fields: &[(&str, &str)], origin: Option<&str>| {
        let mut request = http
            .post(page_url(&cloud, "/storage/volumes"))
            .header("cookie", &cookie)
            .form(fields);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let response = request.send().unwrap();
        (response.status(), response.text().unwrap())
    };
    let disk = [
        ("size", "1"),
        ("visibility", "private"),
        ("type", "data-rw"),
    ];
    let (status, body) = create(&disk, None);
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains(REFUSED), "{body}");
    fn with_token<'a>(disk: &[(&'a str, &'a str)], token: &'a str) -> Vec<(&'a str, &'a str)> {
        let mut fields = disk.to_vec();
        fields.push(("csrf", token));
        fields
    }
    let (status, body) = create(&with_token(&disk, "AAAAforged"), None);
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains(REFUSED), "{body}");
    let (status, body) = create(&with_token(&disk, &token), Some("https://evil.example"));
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body.contains("This form can only be sent from this site."),
        "{body}"
    );
    let mut zero = with_token(&disk, &token);
    zero[0] = ("size", "0");
    let (status, body) = create(&zero, Some(&base));
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("size: must be 1 to"), "{body}");
    assert_eq!(
        volume_ids(&cloud, "alice"),
        before,
        "a refused form made a disk"
    );
    // bob's token is not alice's.
    let bob = session(&cloud, &http, "bob");
    let bob_page = http
        .get(page_url(&cloud, "/storage"))
        .header("cookie", &bob)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let bob_token = form_token(&bob_page);
    assert_ne!(bob_token, token);
    let (status, _) = create(&with_token(&disk, &bob_token), None);
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Every administrators' page is refused to alice; her home is the Marketplace.
    for path in ["/hosts", "/instances", "/volumes", "/images", "/events"] {
        let response = http
            .get(page_url(&cloud, path))
            .header("cookie", &cookie)
            .send()
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
    }
    let home = http
        .get(page_url(&cloud, "/"))
        .header("cookie", &cookie)
        .send()
        .unwrap();
    assert!(home.status().is_redirection());
    assert_eq!(home.headers()["location"], "/marketplace");

    cli(&cloud, "alice", &["kill-instance", &vm.to_string()]);
    let _ = std::fs::remove_dir_all(pki_dir);
}
