//! `--only tls`: what trust costs. `POST /instances` to Running over TLS and over the plain
//! loopback listener, alternately in one run; cheap API requests per second with HTTP Basic,
//! an API token and a client certificate; the controller's peak memory through a burst of
//! 1,000 wrong passwords.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use reqwest::blocking::Client;
use serde_json::{json, Value};
use stratus_common::api::InstanceState;
use stratus_e2e::{hosts, TestCloud};

use crate::{ms, report};

/// POST an instance through `base` with `http`, then poll it there until Running; the time.
fn start_via(http: &Client, base: &str, password: &str) -> anyhow::Result<(Duration, u64)> {
    let started = Instant::now();
    let created: Value = http
        .post(format!("{base}/api/v1/instances"))
        .basic_auth("admin", Some(password))
        .json(&json!({"image": "appliance", "type": "t1.micro"}))
        .send()?
        .error_for_status()?
        .json()?;
    let id = created["id"].as_u64().context("an instance ID")?;
    loop {
        let instance: Value = http
            .get(format!("{base}/api/v1/instances/{id}"))
            .basic_auth("admin", Some(password))
            .send()?
            .json()?;
        match instance["state"].as_str() {
            Some("Running") => return Ok((started.elapsed(), id)),
            Some("Failed") | Some("Done") => bail!("instance {id}: {instance}"),
            _ if started.elapsed() > Duration::from_secs(60) => bail!("instance {id}: {instance}"),
            _ => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// Requests per second of `GET /api/v1/types` from 4 threads, each sending `each`.
fn rate(clients: Vec<reqwest::blocking::RequestBuilder>, each: usize) -> anyhow::Result<f64> {
    let failures = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let threads: Vec<_> = clients
        .into_iter()
        .map(|request| {
            let failures = failures.clone();
            std::thread::spawn(move || {
                for _ in 0..each {
                    let ok = request
                        .try_clone()
                        .expect("a request without a streamed body")
                        .send()
                        .is_ok_and(|r| r.status().is_success());
                    if !ok {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let n = threads.len() * each;
    for thread in threads {
        thread.join().expect("a request thread");
    }
    let elapsed = started.elapsed();
    let failed = failures.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} of {n} requests failed");
    }
    Ok(n as f64 / elapsed.as_secs_f64())
}

fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("{field} of {pid}"))
}

pub fn tls_bench(rounds: usize) -> anyhow::Result<()> {
    let plain = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut cloud =
        TestCloud::start_with("bench-tls", &format!("[tls]\nplain_listen = \"{plain}\""))?;
    cloud.start_agent()?;
    cloud.register_appliance("appliance")?;
    let tls = cloud.client()?;
    let plain_http = Client::builder().timeout(Duration::from_secs(30)).build()?;
    let (https_base, http_base) = (cloud.base(), format!("http://{plain}"));
    let password = cloud.admin_password.clone();

    // POST -> Running, alternating, after a warm-up that caches the image.
    let (_, id) = start_via(&tls, &https_base, &password)?;
    cloud.delete("admin", &format!("/instances/{id}"))?;
    cloud.wait_state("admin", id, InstanceState::Done, Duration::from_secs(60))?;
    let (mut over_tls, mut over_plain) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for (samples, http, base) in [
            (&mut over_tls, &tls, &https_base),
            (&mut over_plain, &plain_http, &http_base),
        ] {
            let (elapsed, id) = start_via(http, base, &password)?;
            samples.push(elapsed);
            cloud.delete("admin", &format!("/instances/{id}"))?;
            cloud.wait_state("admin", id, InstanceState::Done, Duration::from_secs(60))?;
        }
    }
    println!("\nTLS: POST /instances -> Running over TLS and over plain HTTP (alternating, image cached)");
    let (tls_p50, tls_p99) = report("over TLS (https)", &mut over_tls);
    let (plain_p50, plain_p99) = report("over plain HTTP (loopback)", &mut over_plain);
    println!(
        "  {:<34} p50 {:>+8.1} ms   p99 {:>+8.1} ms",
        "TLS cost",
        ms(tls_p50) - ms(plain_p50),
        ms(tls_p99) - ms(plain_p99)
    );

    // Cheap requests per second by way of logging in, 4 threads on kept-alive connections.
    cloud.create_user("bench")?;
    let (_, made) = cloud.post("bench", "/tokens", &json!({"name": "bench"}))?;
    let token = made["token"].as_str().context("a token")?.to_owned();
    let grid = tempfile::tempdir_in(stratus_e2e::TEST_ROOT)?;
    let pki = stratus_e2e::pki::TestPki::new(grid.path())?;
    cloud.stop_controller();
    let config = cloud.dir.join("controller.toml");
    let text = std::fs::read_to_string(&config)?;
    std::fs::write(
        &config,
        text.replace(
            "[tls]\n",
            &format!("[tls]\nuser_ca_file = \"{}\"\n", pki.ca_file.display()),
        ),
    )?;
    cloud.start_controller()?;
    let user = pki.user("Bench User")?;
    let (status, body) = cloud.post(
        "admin",
        "/users/bench/certificate-subjects",
        &json!({"subject": "CN=Bench User,O=StratusLab Test"}),
    )?;
    if !status.is_success() {
        bail!("mapping the bench user's certificate: {status} {body}");
    }
    let ca = std::fs::read(cloud.ca_certificate())?;
    let certificate = (
        std::fs::read_to_string(&user.cert)?,
        std::fs::read_to_string(&user.key)?,
    );
    let url = cloud.url("/types");
    let each = 500;
    let basic: Vec<_> = (0..4)
        .map(|_| {
            Ok(hosts::client(&ca, None)?
                .get(&url)
                .basic_auth("bench", Some(cloud.password("bench"))))
        })
        .collect::<anyhow::Result<_>>()?;
    let bearer: Vec<_> = (0..4)
        .map(|_| Ok(hosts::client(&ca, None)?.get(&url).bearer_auth(&token)))
        .collect::<anyhow::Result<_>>()?;
    let with_certificate: Vec<_> = (0..4)
        .map(|_| Ok(hosts::client(&ca, Some((&certificate.0, &certificate.1)))?.get(&url)))
        .collect::<anyhow::Result<_>>()?;
    println!("\nTLS: GET /api/v1/types, 4 clients x {each} requests on kept-alive connections");
    for (name, clients) in [
        ("HTTP Basic (verified once, cached)", basic),
        ("API token", bearer),
        ("client certificate", with_certificate),
    ] {
        println!("  {name:<34} {:>8.0} requests/s", rate(clients, each)?);
    }

    // A burst of 1,000 wrong passwords from 8 threads.
    let pid = cloud.controller_pid();
    let before = status_kib(pid, "VmRSS:")?;
    let started = Instant::now();
    let answers: Vec<u16> = (0..8)
        .map(|t| {
            let (url, http) = (url.clone(), hosts::client(&ca, None));
            std::thread::spawn(move || -> anyhow::Result<Vec<u16>> {
                let http = http?;
                (0..125)
                    .map(|n| {
                        Ok(http
                            .get(&url)
                            .basic_auth(format!("guess-{t}-{}", n % 7), Some("wrong"))
                            .send()?
                            .status()
                            .as_u16())
                    })
                    .collect()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().expect("a burst thread"))
        .collect::<anyhow::Result<Vec<Vec<u16>>>>()?
        .into_iter()
        .flatten()
        .collect();
    let elapsed = started.elapsed();
    let (peak, after) = (status_kib(pid, "VmHWM:")?, status_kib(pid, "VmRSS:")?);
    let refused = answers.iter().filter(|s| **s == 401).count();
    let throttled = answers.iter().filter(|s| **s == 429).count();
    println!("\nTLS: a burst of 1,000 wrong passwords (8 threads, one address)");
    println!(
        "  answered in {:.2} s: {refused} x 401 after an argon2 check, {throttled} x 429 throttled",
        elapsed.as_secs_f64()
    );
    println!(
        "  controller memory: {} MiB before, {} MiB after, peak {} MiB (was 3.8 GB after 600 before the password pool)",
        before / 1024,
        after / 1024,
        peak / 1024
    );
    Ok(())
}
