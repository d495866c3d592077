//! A real Prometheus server (Debian's `prometheus`) the tests start on loopback with its own
//! data directory, scraping what a test points it at every second; stopped by its pid when
//! dropped. Tests read what it stored through its query API.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::Value;

use crate::{free_port, Spawned};

/// How long a test waits for Prometheus to have scraped what it expects.
const WAIT: Duration = Duration::from_secs(60);

pub struct Prometheus {
    _process: Spawned,
    port: u16,
}

impl Prometheus {
    /// Starts Prometheus in `dir` with one scrape job, `job` (YAML of a `scrape_configs` item
    /// without its name, indented by four spaces), scraped every second.
    pub fn start(dir: &Path, name: &str, job: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: {name}\n{job}"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian's package; scripts/install-deps.sh installs it)");
        Self {
            _process: Spawned(child),
            port,
        }
    }

    /// An answer of Prometheus's HTTP API (`/api/v1/<path>`), if it gave one.
    pub fn api(&self, http: &Client, path: &str, query: &[(&str, &str)]) -> Option<Value> {
        let response = http
            .get(format!("http://127.0.0.1:{}/api/v1/{path}", self.port))
            .query(query)
            .send()
            .ok()?;
        response.json().ok()
    }

    /// The value of `query`'s single sample once Prometheus has one that `want` accepts.
    pub fn wait_value(&self, http: &Client, query: &str, want: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + WAIT;
        let mut last = Value::Null;
        loop {
            if let Some(answer) = self.api(http, "query", &[("query", query)]) {
                let value = answer["data"]["result"][0]["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok());
                if let Some(value) = value.filter(|v| want(*v)) {
                    return value;
                }
                last = answer;
            }
            assert!(Instant::now() < deadline, "{query}: {last}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The label sets of `query`'s samples once there are `count` of them.
    pub fn wait_series(&self, http: &Client, query: &str, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        let mut last = Value::Null;
        loop {
            if let Some(answer) = self.api(http, "query", &[("query", query)]) {
                if let Some(series) = answer["data"]["result"].as_array() {
                    if series.len() == count {
                        return series.iter().map(|s| s["metric"].clone()).collect();
                    }
                }
                last = answer;
            }
            assert!(Instant::now() < deadline, "{query}: {last}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
