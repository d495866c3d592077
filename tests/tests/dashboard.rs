//! The administrators' dashboard in a real browser (`stratus_e2e::browser`: Debian's chromium,
//! headless, over the real TLS endpoint). A wrong password and a user who is not an
//! administrator are refused; an administrator sees a VM started through the CLI counted
//! Running on the overview, listed on the instances page, and on its own page its history and
//! serial console, then Done when killed, without the page being reloaded; with three
//! controller nodes, a dashboard opened on a follower keeps updating when the leader is killed.
//! The test saves screenshots (`target/tmp/dashboard*.png`).

use std::time::{Duration, Instant};

use fantoccini::Locator;
use serde_json::json;
mod browser;

use browser::{
    browser, driver, error_text, log_in, screenshot, wait_contains, wait_css, wait_text, SOON,
};
use stratus_e2e::cluster::{TestCluster, WAIT};
use stratus_e2e::TestCloud;

const BOOT: Duration = Duration::from_secs(120);

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
    let mut cloud = TestCloud::start("dashboard").unwrap();
    cloud.store_volumes().unwrap();
    cloud.start_agent().unwrap();
    cloud.register_appliance("appliance").unwrap();
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
        // alice lands on the pages every user has, and is refused every administrators' one.
        log_in(&browser, &base, "alice", &cloud.password("alice")).await;
        wait_css(&browser, "form[action='/logout']", SOON).await;
        assert_eq!(browser.current_url().await.unwrap().path(), "/marketplace");
        browser.goto(&format!("{base}/")).await.unwrap();
        assert_eq!(browser.current_url().await.unwrap().path(), "/marketplace");
        for page in [
            "/hosts",
            "/hosts/any",
            "/instances",
            "/volumes",
            "/images",
            "/events",
            "/instances/1",
        ] {
            browser.goto(&format!("{base}{page}")).await.unwrap();
            let refused = error_text(&browser).await;
            assert!(refused.contains("alice is not one"), "{page}: {refused}");
        }
        browser
            .find(Locator::Css("form[action='/logout'] button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_css(&browser, "form[action='/login']", SOON).await;

        // The administrator's overview, following the event stream.
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
        wait_text(&browser, "dd.count[data-state='Running']", "0", SOON).await;
        // A mark that a reload would wipe out.
        let mark = |value: u32| {
            let browser = browser.clone();
            async move {
                browser
                    .execute(
                        &format!("window.stillTheSamePage = {value}; return 1;"),
                        vec![],
                    )
                    .await
                    .unwrap();
            }
        };
        let still_marked = |value: u32| {
            let browser = browser.clone();
            async move {
                let mark = browser
                    .execute("return window.stillTheSamePage;", vec![])
                    .await
                    .unwrap();
                assert_eq!(mark, json!(value), "the page was reloaded");
            }
        };
        mark(42).await;
        // The page and its event stream came over HTTP/2: one connection carries every stream
        // the site's pages open (HTTP/1.1 would allow a browser six).
        let protocol = browser
            .execute(
                "return performance.getEntriesByType('navigation')[0].nextHopProtocol;",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(protocol, json!("h2"));

        // A VM started through the CLI is counted Running, live.
        let id = vm_id(&cloud.stratus("alice", &["run-instance", "appliance", "-t", "t1.micro"]));
        wait_text(&browser, "dd.count[data-state='Running']", "1", BOOT).await;
        let host_count = format!("tr[data-host='{}'] td.instances", cloud.host_name);
        wait_text(&browser, &host_count, "1", SOON).await;
        wait_contains(
            &browser,
            "#activity-list",
            &format!("instance-running instance/{id}"),
            SOON,
        )
        .await;
        still_marked(42).await;
        screenshot(&browser, "dashboard").await;

        // The instances page lists it, with its owner and name.
        browser.goto(&format!("{base}/instances")).await.unwrap();
        let row = format!("tr[data-id='{id}']");
        wait_css(&browser, &format!("{row}[data-state='Running']"), SOON).await;
        wait_text(&browser, &format!("{row} td.owner"), "alice", SOON).await;
        wait_text(
            &browser,
            &format!("{row} td.name"),
            &format!("vm-{id}"),
            SOON,
        )
        .await;

        // Its page: its history so far, and the serial console's latest lines.
        browser
            .goto(&format!("{base}/instances/{id}"))
            .await
            .unwrap();
        wait_css(&browser, "#connection[data-state='live']", SOON).await;
        wait_text(&browser, "#state", "Running", SOON).await;
        let history = wait_contains(&browser, "#history-rows", "Running", SOON).await;
        assert!(history.contains("Pending"), "{history}");
        wait_contains(&browser, "#console", stratus_e2e::BANNER, BOOT).await;
        screenshot(&browser, "dashboard-instance").await;

        // The volumes page: a disk made and hot-plugged through the CLI appears, attached,
        // without a reload.
        browser.goto(&format!("{base}/volumes")).await.unwrap();
        wait_css(&browser, "#connection[data-state='live']", SOON).await;
        mark(44).await;
        let created = cloud.stratus("alice", &["create-volume", "--size=1", "--tag=web"]);
        let text = String::from_utf8_lossy(&created.stdout).into_owned();
        let disk = text
            .trim()
            .strip_prefix("DISK ")
            .unwrap_or_else(|| panic!("{created:?}"))
            .to_owned();
        let volume_row = format!("tr[data-volume='{disk}']");
        wait_css(
            &browser,
            &format!("{volume_row}[data-state='available']"),
            BOOT,
        )
        .await;
        let out = cloud.stratus("alice", &["attach-volume", "-i", &id.to_string(), &disk]);
        assert!(out.status.success(), "{out:?}");
        wait_css(
            &browser,
            &format!("{volume_row} li[data-instance='{id}'][data-state='attached']"),
            BOOT,
        )
        .await;
        wait_text(&browser, &format!("{volume_row} td.owner"), "alice", SOON).await;
        wait_text(&browser, &format!("{volume_row} td.tag"), "web", SOON).await;
        still_marked(44).await;
        screenshot(&browser, "dashboard-volumes").await;

        // The host's page draws its use from what its agent measured.
        browser
            .goto(&format!("{base}/hosts/{}", cloud.host_name))
            .await
            .unwrap();
        wait_css(
            &browser,
            "figure[data-graph='cpu'][data-points]:not([data-points='0']) canvas",
            BOOT,
        )
        .await;
        wait_css(&browser, "figure[data-graph='memory'] canvas", SOON).await;
        screenshot(&browser, "dashboard-host").await;
        browser
            .goto(&format!("{base}/hosts/{}?range=day", cloud.host_name))
            .await
            .unwrap();
        wait_css(
            &browser,
            "figure[data-graph='cpu'][data-points]:not([data-points='0']) canvas",
            SOON,
        )
        .await;

        // The images page: the appliance, cached on the host that ran it.
        browser.goto(&format!("{base}/images")).await.unwrap();
        wait_contains(
            &browser,
            "tr[data-image='appliance'] td.cached",
            &cloud.host_name,
            SOON,
        )
        .await;

        // The events page, filtered to volumes: the attachment is there.
        browser
            .goto(&format!("{base}/events?type=volume-"))
            .await
            .unwrap();
        let log = wait_contains(
            &browser,
            "#event-list",
            &format!("volume-attached volume/{disk}"),
            SOON,
        )
        .await;
        assert!(
            !log.contains("instance-running"),
            "the filter let through: {log}"
        );

        browser
            .goto(&format!("{base}/instances/{id}"))
            .await
            .unwrap();
        wait_text(&browser, "#state", "Running", SOON).await;
        wait_css(&browser, &format!("#disks tr[data-volume='{disk}']"), SOON).await;
        mark(43).await;

        // Killed: Done, without a reload, and its history tells it.
        let out = cloud.stratus("alice", &["kill-instance", &id.to_string()]);
        assert!(out.status.success(), "{out:?}");
        wait_text(&browser, "#state", "Done", BOOT).await;
        wait_css(&browser, "#history-rows tr[data-state='Done']", SOON).await;
        still_marked(43).await;

        // Back on the overview: the host counts none again, and the image caches' hit rate is
        // shown from what the agent measured (a first start misses).
        browser.goto(&format!("{base}/")).await.unwrap();
        wait_text(&browser, &host_count, "0", SOON).await;
        let hits = wait_contains(&browser, "#cache-hits", "%", SOON).await;
        assert!(hits.trim_end_matches(" %").parse::<u32>().is_ok(), "{hits}");

        // The list filtered by state shows it among the Done, and no other page admits
        // alice's browser.
        browser
            .goto(&format!("{base}/instances?state=Done&owner=alice"))
            .await
            .unwrap();
        wait_css(&browser, &format!("{row}[data-state='Done']"), SOON).await;
        browser
            .goto(&format!("{base}/instances/999999"))
            .await
            .unwrap();
        assert_eq!(error_text(&browser).await, "There is no instance 999999.");
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
