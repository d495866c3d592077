//! Administrators manage accounts and site images from the command line: create a user (with
//! a password on standard input), list users, make one an administrator, set a new password
//! (the old one stops working), remove a user (not oneself, not one who still owns an
//! instance), and remove a site image (new instances can no longer name it).

use std::io::Write;
use std::process::{Command, Stdio};

use reqwest::StatusCode;
use serde_json::json;
use stratus_e2e::{bin, TestCloud};

/// `stratus NAME ARGS...` as `user` (with `password`), `input` on its standard input; returns
/// (success, stdout, stderr).
fn stratus(
    cloud: &TestCloud,
    user: &str,
    password: &str,
    args: &[&str],
    input: &str,
) -> (bool, String, String) {
    let mut child = Command::new(bin("stratus"))
        .args(args)
        .env("HOME", &cloud.dir)
        .env("STRATUSLAB_ENDPOINT", format!("127.0.0.1:{}", cloud.port))
        .env("STRATUSLAB_USERNAME", user)
        .env("STRATUSLAB_PASSWORD", password)
        .env("STRATUSLAB_CA_CERTIFICATE", cloud.ca_certificate())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn administrators_manage_users_and_site_images_from_the_command_line() {
    let cloud = TestCloud::start("accounts").unwrap();
    let admin_pw = cloud.admin_password.clone();
    let admin = |args: &[&str], input: &str| stratus(&cloud, "admin", &admin_pw, args, input);

    let (ok, out, err) = admin(
        &["create-user", "bob", "--password-stdin"],
        "bob-password\n",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "USER bob\n");
    assert_eq!(cloud.get("bob", "/instances").unwrap().0, StatusCode::OK);
    let (ok, out, _) = admin(&["create-user", "carol"], "");
    assert!(ok);
    let generated = out
        .lines()
        .nth(1)
        .unwrap()
        .strip_prefix("PASSWORD ")
        .unwrap();
    assert_eq!(generated.len(), 32, "{out}");

    let (_, out, _) = admin(&["describe-users"], "");
    assert_eq!(out, "name  admin\nadmin yes\nbob   no\ncarol no\n");

    // bob is no administrator yet; then he is.
    let (ok, _, err) = stratus(&cloud, "bob", "bob-password", &["describe-users"], "");
    assert!(!ok);
    assert!(err.starts_with("[ERROR] "), "{err}");
    let (ok, out, _) = admin(&["update-user", "bob", "--admin"], "");
    assert!(ok);
    assert_eq!(out, "UPDATED user bob (administrator)\n");
    assert_eq!(cloud.get("bob", "/users").unwrap().0, StatusCode::OK);

    // A new password: the old one no longer works.
    let (ok, _, err) = stratus(
        &cloud,
        "bob",
        "bob-password",
        &["update-user", "carol", "--password-stdin"],
        "carol-password\n",
    );
    assert!(ok, "{err}");
    assert!(!stratus(&cloud, "carol", generated, &["describe-instance"], "").0);
    assert_eq!(cloud.get("carol", "/instances").unwrap().0, StatusCode::OK);

    // Bad input names the field and changes nothing.
    let patch = |body: serde_json::Value| {
        let response = cloud
            .client()
            .unwrap()
            .patch(cloud.url("/users/carol"))
            .basic_auth("admin", Some(&admin_pw))
            .json(&body)
            .send()
            .unwrap();
        (response.status(), response.text().unwrap())
    };
    let (status, body) = patch(json!({"password": "short"}));
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("password"), "{body}");
    let (status, body) = patch(json!({}));
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("body"), "{body}");
    assert_eq!(cloud.get("carol", "/instances").unwrap().0, StatusCode::OK);

    // Not oneself; not a user who still owns an instance (one that could not be placed is
    // still theirs until killed).
    let (ok, _, err) = admin(&["delete-user", "admin"], "");
    assert!(!ok);
    assert_eq!(err, "[ERROR] name: you cannot remove your own account\n");
    cloud.register_appliance("appliance").unwrap();
    let (status, _) = cloud
        .post("carol", "/instances", &json!({"image": "appliance"}))
        .unwrap();
    assert_eq!(status, StatusCode::CREATED);
    let (ok, _, err) = admin(&["delete-user", "carol"], "");
    assert!(!ok);
    assert_eq!(
        err,
        "[ERROR] user carol still owns 1 instance(s) and 0 volume(s): kill and delete them first\n"
    );
    let (ok, out, err) = admin(&["delete-user", "bob"], "");
    assert!(ok, "{err}");
    assert_eq!(out, "DELETED user bob\n");
    assert_eq!(
        cloud.get("bob", "/instances").unwrap().0,
        StatusCode::UNAUTHORIZED
    );

    // A site image goes away; new instances cannot name it.
    let (ok, _, err) = stratus(
        &cloud,
        "carol",
        "carol-password",
        &["delete-image", "appliance"],
        "",
    );
    assert!(!ok, "only administrators");
    assert!(err.starts_with("[ERROR] "), "{err}");
    let (ok, out, _) = admin(&["delete-image", "appliance"], "");
    assert!(ok);
    assert_eq!(out, "DELETED image appliance\n");
    let (_, images) = cloud.get("carol", "/images").unwrap();
    assert_eq!(images["site"], json!([]));
    let (status, body) = cloud
        .post("carol", "/instances", &json!({"image": "appliance"}))
        .unwrap();
    assert!(status.is_client_error(), "{status} {body}");
    let (ok, _, err) = admin(&["delete-image", "appliance"], "");
    assert!(!ok);
    assert_eq!(err, "[ERROR] site image appliance not found\n");
}
