//! The API against its own OpenAPI document, checked by schemathesis (PyPI, in the virtualenv
//! `scripts/schemathesis.sh venv` makes) on a live controller over TLS: it generates requests
//! from the document (valid and invalid, every operation, then chains of them) and fails on a
//! 5xx, a status, content type, header or body the document does not declare, invalid data
//! that is accepted, a method the route lacks that is not a 405, or credentials that are
//! ignored. Users' operations run as an administrator with an API token; the agents'
//! operations with a host certificate. The site has a host and an image, so instances are
//! really created and placed.

use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::StatusCode;
use serde_json::{json, Value};
use stratus_e2e::{repo_root, TestCloud};

/// Checks schemathesis runs: all but two, whose premise this API does not share:
/// - `positive_data_acceptance` expects every request the schema allows to succeed; the API's
///   rules go beyond a JSON schema (a name must be free, a volume must exist, an RFC 4514
///   subject must parse), so such requests get a 4xx naming the field, as they should;
/// - `use_after_free` expects a deleted object to be 404 at once; `DELETE` of an instance is a
///   kill, and the instance stays visible (Stopping, then Done, with its history) as
///   `stratus-describe-instance` shows it.
const EXCLUDED_CHECKS: &str = "positive_data_acceptance,use_after_free";

fn schemathesis() -> PathBuf {
    let path = repo_root().join("build/schemathesis-venv/bin/schemathesis");
    assert!(
        path.exists(),
        "{} is missing: `scripts/schemathesis.sh venv` makes it (make test does)",
        path.display()
    );
    path
}

/// Runs schemathesis with `args` against the cloud's document; panics with its report unless
/// it found nothing.
fn run(cloud: &TestCloud, config: &Path, label: &str, args: &[&str]) {
    let report_dir = cloud.dir.join(format!("schemathesis-{label}"));
    let output = Command::new(schemathesis())
        .arg("--config-file")
        .arg(config)
        .arg("run")
        .arg(format!("{}/api/v1/openapi.json", cloud.base()))
        .arg("--tls-verify")
        .arg(cloud.ca_certificate())
        .args(["--checks", "all", "--exclude-checks", EXCLUDED_CHECKS])
        .args(["--request-timeout", "30", "--max-examples", "40"])
        .args(["--report", "junit", "--report-dir"])
        .arg(&report_dir)
        .args(args)
        .current_dir(&cloud.dir)
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .output()
        .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis ({label}) found problems:\n{stdout}\n{stderr}\ncontroller log:\n{}",
        cloud.log("controller.log")
    );
    // It ran what we meant: every operation of the selection, none skipped for lack of a
    // schema.
    let summary = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("Tested:"))
        .unwrap_or_else(|| panic!("no summary in schemathesis's output:\n{stdout}"));
    let selected = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("Selected:"))
        .unwrap_or_default();
    let selected = selected.split(['/', ':']).nth(1).unwrap_or("").trim();
    assert_eq!(
        summary.trim().trim_start_matches("Tested:").trim(),
        selected,
        "{stdout}"
    );
    eprintln!("schemathesis ({label}):\n{stdout}");
}

#[test]
fn the_api_keeps_to_its_openapi_document() {
    // Failed logins are part of what is tested (every operation with wrong credentials): the
    // limits are raised so those answers stay 401 rather than 429.
    let cloud = TestCloud::start_with(
        "openapi",
        "[logins]\nfailures_per_account = 1000000\nfailures_per_source = 1000000\n",
    )
    .unwrap();

    // The document: served to anyone, OpenAPI 3.1, every operation with an error shape.
    let http = cloud.client().unwrap();
    let response = http
        .get(format!("{}/api/v1/openapi.json", cloud.base()))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let document: Value = response.json().unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(
        document["paths"]["/api/v1/instances"]["post"]["responses"]["201"]["content"]
            ["application/json"]["schema"]["$ref"],
        "#/components/schemas/Instance"
    );

    // A site with something in it: an image, a host that takes instances.
    cloud.register_appliance("appliance").unwrap();
    let host = cloud
        .enrol_and_register("openapi-host", 64, 262144)
        .unwrap();
    let (status, token) = cloud
        .post("admin", "/tokens", &json!({"name": "schemathesis"}))
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{token}");
    let token = token["token"].as_str().unwrap().to_owned();

    // Streams would never end: they are asked for what is kept only; a host's long poll does
    // not wait. The agents' run speaks for the enrolled host.
    let config = cloud.dir.join("schemathesis.toml");
    std::fs::write(
        &config,
        "[[operations]]\ninclude-name = \"GET /api/v1/events\"\n\
         parameters = { \"query.follow\" = false }\n\n\
         [[operations]]\ninclude-name = \"GET /api/v1/instances/{id}/console\"\n\
         parameters = { \"query.follow\" = false }\n\n\
         [[operations]]\ninclude-name = \"GET /api/v1/hosts/{name}/desired\"\n\
         parameters = { \"path.name\" = \"openapi-host\", \"query.wait\" = 0 }\n\n\
         [[operations]]\ninclude-tag = \"agents\"\n\
         parameters = { \"path.name\" = \"openapi-host\" }\n",
    )
    .unwrap();

    let certificate = cloud.dir.join("openapi-host.pem");
    let key = cloud.dir.join("openapi-host.key");
    std::fs::write(&certificate, &host.certificate_pem).unwrap();
    std::fs::write(&key, &host.key_pem).unwrap();
    run(
        &cloud,
        &config,
        "agents",
        &[
            "--include-tag",
            "agents",
            "--request-cert",
            certificate.to_str().unwrap(),
            "--request-cert-key",
            key.to_str().unwrap(),
        ],
    );

    // Then the users' operations (which may revoke the host's certificate, as an
    // administrator may).
    run(
        &cloud,
        &config,
        "users",
        &[
            "--exclude-tag",
            "agents",
            "--header",
            &format!("Authorization: Bearer {token}"),
        ],
    );

    // The controller is still whole: it answers the token it was tested with (the runs may
    // have changed the administrator's password or flag, as an administrator may).
    let answer = http
        .get(cloud.url("/instances"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
}
