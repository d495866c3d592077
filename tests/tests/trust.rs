//! Trust between hosts and the controller, over the real TLS API: a host enrols once with a
//! join token, then acts only for itself and only while its certificate is in force.

use reqwest::blocking::Client;
use serde_json::{json, Value};
use stratus_e2e::hosts::{self, EnrolledHost};
use stratus_e2e::TestCloud;

fn answer(response: reqwest::blocking::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

fn registration(name: &str) -> Value {
    json!({"name": name, "vcpus": 4, "memory_mib": 4096, "disk_gib": 10,
           "domain_type": "qemu", "arch": "x86_64", "hypervisor": "test"})
}

fn register(cloud: &TestCloud, http: &Client, name: &str) -> (u16, Value) {
    answer(
        http.post(cloud.url("/hosts"))
            .json(&registration(name))
            .send()
            .unwrap(),
    )
}

fn desired(cloud: &TestCloud, http: &Client, name: &str) -> (u16, Value) {
    answer(
        http.get(cloud.url(&format!("/hosts/{name}/desired?since=0&wait=0")))
            .send()
            .unwrap(),
    )
}

fn report(cloud: &TestCloud, http: &Client, name: &str, unknown: &str) -> (u16, Value) {
    answer(
        http.post(cloud.url(&format!("/hosts/{name}/report")))
            .json(&json!({"instances": [], "unknown_domains": [unknown]}))
            .send()
            .unwrap(),
    )
}

fn assert_refused(got: (u16, Value), status: u16, code: &str, mentions: &str) {
    let (s, body) = got;
    assert_eq!(s, status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(mentions), "{message:?} lacks {mentions:?}");
}

fn host_view(cloud: &TestCloud, name: &str) -> Value {
    let (status, hosts) = cloud.get("admin", "/hosts").unwrap();
    assert_eq!(status, 200, "{hosts}");
    hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

fn renew(cloud: &TestCloud, host: &EnrolledHost, name: &str) -> (u16, Value) {
    let (_, csr) = hosts::key_and_request(name).unwrap();
    answer(
        host.client
            .post(cloud.url(&format!("/hosts/{name}/certificate")))
            .json(&json!({"csr": csr}))
            .send()
            .unwrap(),
    )
}

#[test]
fn a_host_acts_only_for_itself_and_only_with_a_certificate_in_force() {
    let cloud = TestCloud::start("trust").unwrap();
    let a = cloud.enrol_host("host-a").unwrap();
    let b = cloud.enrol_host("host-b").unwrap();
    assert_eq!(register(&cloud, &a.client, "host-a").0, 200);
    assert_eq!(register(&cloud, &b.client, "host-b").0, 200);

    // Host A's certificate cannot register, poll or report as host B, and changes nothing.
    let before = host_view(&cloud, "host-b");
    assert_refused(
        register(&cloud, &a.client, "host-b"),
        403,
        "other_host",
        "host host-a's certificate cannot act for host host-b",
    );
    assert_refused(
        desired(&cloud, &a.client, "host-b"),
        403,
        "other_host",
        "host-b",
    );
    assert_refused(
        report(&cloud, &a.client, "host-b", "stratus-forged-1"),
        403,
        "other_host",
        "host-b",
    );
    let after = host_view(&cloud, "host-b");
    assert_eq!(after["unknown_domains"], before["unknown_domains"]);
    assert_eq!(after["vcpus"], 4);
    // Its trail: the administrator's join token, its enrolment and registration, by itself.
    let trail: Vec<(String, String)> = after["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["by"].as_str().unwrap().to_owned(),
                c["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(trail[0], ("admin".to_owned(), "join token".to_owned()));
    assert_eq!(trail[1].0, "host host-b");
    assert!(
        trail[1].1.starts_with("enrolled: certificate "),
        "{trail:?}"
    );
    assert_eq!(trail[2], ("host host-b".to_owned(), "register".to_owned()));
    assert_eq!(trail.len(), 3, "{trail:?}");
    // For itself, it may.
    let (status, own) = desired(&cloud, &a.client, "host-a");
    assert_eq!(status, 200, "{own}");
    let (status, reported) = report(&cloud, &a.client, "host-a", "stratus-mine-1");
    assert_eq!(status, 200, "{reported}");
    assert_eq!(reported, json!({"refused": []}), "nothing refused");

    // No certificate (a user's password is not a host's identity): refused.
    let anonymous = cloud.client().unwrap();
    assert_refused(
        desired(&cloud, &anonymous, "host-a"),
        401,
        "host_certificate_required",
        "join token",
    );
    let with_password = anonymous
        .post(cloud.url("/hosts"))
        .basic_auth("admin", Some(&cloud.admin_password))
        .json(&registration("host-a"))
        .send()
        .unwrap();
    assert_refused(
        answer(with_password),
        401,
        "host_certificate_required",
        "certificate",
    );

    // A join token is for one host, once.
    let token = hosts::join_token(
        &cloud.client().unwrap(),
        &cloud.base(),
        &cloud.admin_password,
        "host-c",
    )
    .unwrap();
    let ca = std::fs::read(cloud.ca_certificate()).unwrap();
    let wrong_host = hosts::enrol(&cloud.base(), &ca, "host-d", &token)
        .err()
        .unwrap();
    assert!(
        wrong_host.to_string().contains("join_token_invalid"),
        "{wrong_host}"
    );
    let c = hosts::enrol(&cloud.base(), &ca, "host-c", &token).unwrap();
    assert_eq!(register(&cloud, &c.client, "host-c").0, 200);
    let again = hosts::enrol(&cloud.base(), &ca, "host-c", &token)
        .err()
        .unwrap();
    assert!(
        again.to_string().contains("403") && again.to_string().contains("join_token_invalid"),
        "{again}"
    );

    // Renewal is over the certificate in force, for its own host only.
    assert_refused(renew(&cloud, &b, "host-a"), 403, "other_host", "host-a");
    let (status, renewed) = renew(&cloud, &b, "host-b");
    assert_eq!(status, 201, "{renewed}");
    assert_ne!(renewed["serial"], b.serial.as_str());

    // Revoked, host A is refused whatever it asks, renewal included; host B goes on.
    let (status, body) = answer(
        cloud
            .client()
            .unwrap()
            .delete(cloud.url("/hosts/host-a/certificate"))
            .basic_auth("admin", Some(&cloud.admin_password))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 204, "{body}");
    assert_refused(
        desired(&cloud, &a.client, "host-a"),
        401,
        "certificate_revoked",
        "not in force",
    );
    assert_refused(
        renew(&cloud, &a, "host-a"),
        401,
        "certificate_revoked",
        "enrol again",
    );
    assert_eq!(desired(&cloud, &b.client, "host-b").0, 200);
    // Only an administrator revokes.
    let (status, body) = cloud.delete("admin", "/hosts/host-b/certificate").unwrap();
    assert_eq!(status, 204, "{body}");
    cloud.create_user("mallory").unwrap();
    let (status, body) = cloud
        .delete("mallory", "/hosts/host-c/certificate")
        .unwrap();
    assert_eq!(status, 403, "{body}");
    assert_eq!(desired(&cloud, &c.client, "host-c").0, 200);

    // The administrator's commands: a join token for a new host, and revoking it.
    let out = cloud.stratus("admin", &["create-join-token", "host-e", "--ttl", "600"]);
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = printed
        .strip_prefix("JOIN-TOKEN ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{printed}"));
    assert!(printed.contains(" for host host-e (until "), "{printed}");
    let e = hosts::enrol(&cloud.base(), &ca, "host-e", token).unwrap();
    assert_eq!(register(&cloud, &e.client, "host-e").0, 200);
    let out = cloud.stratus("admin", &["revoke-host", "host-e"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "REVOKED host host-e\n"
    );
    assert_refused(
        desired(&cloud, &e.client, "host-e"),
        401,
        "certificate_revoked",
        "host-e",
    );
    let out = cloud.stratus("mallory", &["create-join-token", "host-f"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("only an administrator may make join tokens"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A certificate of another CA does not even get through the TLS handshake.
    let other = cloud.dir.join("other-ca");
    let (other_ca, _) = stratus_controller::pki::SiteCa::load_or_create(
        &other.join("ca.pem"),
        &other.join("ca.key"),
        true,
    )
    .unwrap();
    let (key, csr) = hosts::key_and_request("host-c").unwrap();
    let forged = other_ca
        .sign_host(
            "host-c",
            &csr,
            &[],
            std::time::SystemTime::now(),
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
    let impostor = hosts::client(&ca, Some((&forged.certificate_pem, &key))).unwrap();
    let refused = impostor
        .get(cloud.url("/hosts/host-c/desired?since=0&wait=0"))
        .send()
        .unwrap_err();
    assert!(refused.is_connect() || refused.is_request(), "{refused}");
}

#[test]
fn users_log_in_with_a_mapped_certificate_or_a_token_and_a_revoked_token_fails() {
    // A grid CA the site trusts for its users (removed with the directory, also on failure).
    std::fs::create_dir_all(stratus_e2e::TEST_ROOT).unwrap();
    let grid = tempfile::tempdir_in(stratus_e2e::TEST_ROOT).unwrap();
    let pki = stratus_e2e::pki::TestPki::new(grid.path()).unwrap();
    let cloud = TestCloud::start_with(
        "users",
        &format!("[tls]\nuser_ca_file = \"{}\"", pki.ca_file.display()),
    )
    .unwrap();
    cloud.create_user("alice").unwrap();
    cloud.create_user("bob").unwrap();
    let ca = std::fs::read(cloud.ca_certificate()).unwrap();
    let bearer = |token: &str, path: &str| {
        answer(
            hosts::client(&ca, None)
                .unwrap()
                .get(cloud.url(path))
                .bearer_auth(token)
                .send()
                .unwrap(),
        )
    };

    // An API token: made with the password, then used instead of it.
    let (status, made) = cloud
        .post("alice", "/tokens", &json!({"name": "ci"}))
        .unwrap();
    assert_eq!(status, 201, "{made}");
    let token = made["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("stratus-api_"), "{token}");
    assert_eq!(bearer(&token, "/instances").0, 200);
    // What it does is recorded as done with it (no host here: the instance is made Failed).
    cloud.register_appliance("appliance").unwrap();
    let (status, vm) = answer(
        hosts::client(&ca, None)
            .unwrap()
            .post(cloud.url("/instances"))
            .bearer_auth(&token)
            .json(&json!({"image": "appliance"}))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 201, "{vm}");
    let (_, vm) = cloud
        .get("alice", &format!("/instances/{}", vm["id"]))
        .unwrap();
    assert_eq!(vm["owner"], "alice");
    assert_eq!(vm["changes"][0]["by"], "alice (token ci)", "{vm}");
    assert_eq!(vm["changes"][0]["action"], "create", "{vm}");
    let (status, listed) = bearer(&token, "/tokens");
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["owner"], "alice");
    assert!(
        listed[0].get("token").is_none(),
        "the secret is never listed"
    );
    // Only its owner (or an administrator) revokes it; revoked, it fails.
    let id = made["id"].as_str().unwrap();
    let (status, body) = cloud.delete("bob", &format!("/tokens/{id}")).unwrap();
    assert_eq!(status, 404, "{body}");
    assert_eq!(bearer(&token, "/instances").0, 200);
    let (status, body) = cloud.delete("alice", &format!("/tokens/{id}")).unwrap();
    assert_eq!(status, 204, "{body}");
    assert_refused(
        bearer(&token, "/instances"),
        401,
        "token_invalid",
        "revoked",
    );
    assert_refused(
        bearer("stratus-api_made-up", "/instances"),
        401,
        "token_invalid",
        "not valid",
    );

    // A client certificate of a CA the site trusts for users, once mapped to a user.
    let jane = pki.user("Jane Doe").unwrap();
    let identity = (
        std::fs::read_to_string(&jane.cert).unwrap(),
        std::fs::read_to_string(&jane.key).unwrap(),
    );
    let with_certificate =
        hosts::client(&ca, Some((identity.0.as_str(), identity.1.as_str()))).unwrap();
    let (status, refused) = answer(
        with_certificate
            .get(cloud.url("/instances"))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 401, "{refused}");
    assert_eq!(refused["code"], "certificate_unmapped");
    let subject = "CN=Jane Doe,O=StratusLab Test";
    assert!(
        refused["message"].as_str().unwrap().contains(subject),
        "{refused}"
    );
    let (status, body) = cloud
        .post(
            "bob",
            "/users/alice/certificate-subjects",
            &json!({"subject": subject}),
        )
        .unwrap();
    assert_eq!(status, 403, "only an administrator maps subjects: {body}");
    let (status, body) = cloud
        .post(
            "admin",
            "/users/alice/certificate-subjects",
            &json!({"subject": subject}),
        )
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let (status, tokens) = answer(with_certificate.get(cloud.url("/tokens")).send().unwrap());
    assert_eq!(status, 200, "{tokens}");
    // The certificate takes precedence over a password sent with it (here bob's).
    let (status, made) = answer(
        with_certificate
            .post(cloud.url("/tokens"))
            .basic_auth("bob", Some(cloud.password("bob")))
            .json(&json!({"name": "from-the-certificate"}))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["owner"], "alice");

    // The CLI logs in with the guide's pem_certificate and pem_key, without a password.
    let out = std::process::Command::new(stratus_e2e::bin("stratus"))
        .args(["describe-instance"])
        .env("HOME", &cloud.dir)
        .env("STRATUSLAB_ENDPOINT", format!("127.0.0.1:{}", cloud.port))
        .env("STRATUSLAB_CA_CERTIFICATE", cloud.ca_certificate())
        .env("STRATUSLAB_PEM_CERTIFICATE", &jane.cert)
        .env("STRATUSLAB_PEM_KEY", &jane.key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Unmapped again, the certificate no longer logs in.
    let unmap = hosts::client(&ca, None)
        .unwrap()
        .delete(cloud.url("/users/alice/certificate-subjects"))
        .basic_auth("admin", Some(&cloud.admin_password))
        .json(&json!({"subject": subject}))
        .send()
        .unwrap();
    assert_eq!(unmap.status(), 204);
    let (status, _) = answer(
        with_certificate
            .get(cloud.url("/instances"))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 401);
}
