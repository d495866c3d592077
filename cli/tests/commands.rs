//! The `stratus` binary as a user runs it: classic names, configuration file and environment,
//! exact output, `[ERROR] ` lines and exit codes, against a canned HTTP server on 127.0.0.1.

use std::os::unix::fs::PermissionsExt;

mod support;

use support::{assert_unreachable, reply, stderr, stdout, unused_port, CannedServer, Home};

fn instance_json(id: u64, state: &str) -> String {
    format!(
        r#"{{"id":{id},"name":"vm-{id}","owner":"alice","image":"ttylinux","type":"m1.small",
        "vcpus":1,"memory_mib":128,"host":"node-1","state":"{state}","domain":"one-{id}",
        "created":"2024-05-01T10:00:00Z","updated":"2024-05-01T10:00:00Z","history":[]}}"#
    )
}

/// The classic names these tests run the binary as.
const NAMES: &[&str] = &[
    "run-instance",
    "describe-instance",
    "kill-instance",
    "copy-config",
];

#[test]
fn run_instance_uses_the_selected_section_and_prints_the_guides_output() {
    let server = CannedServer::start(vec![reply("201 Created", &instance_json(5507, "Pending"))]);
    let home = Home::new(NAMES);
    home.write_config(&format!(
        "[default]\nendpoint = 127.0.0.1:1\nusername = nobody\npassword = pw\n\
         pdisk_endpoint = pdisk.example.org\n\n[fav-cloud]\nendpoint = {}\nusername = alice\n",
        server.address
    ));
    let out = home.run(
        "run-instance",
        &["-S", "fav-cloud", "ttylinux", "-t", "m1.small"],
        &[],
    );
    assert_eq!(stderr(&out), "");
    assert_eq!(
        stdout(&out),
        "
 :::::::::::::::::::::::::
 :: Starting machine(s) ::
 :::::::::::::::::::::::::
 :: Starting 1 machine
 :: Machine 1 (vm ID: 5507)
 :: Done!
"
    );
    assert!(out.status.success());
    let requests = server.requests();
    assert!(requests[0].starts_with("POST /api/v1/instances HTTP/1.1\r\n"));
    // alice (from the section) with pw (from [default]).
    assert!(
        requests[0].contains("authorization: Basic YWxpY2U6cHc=\r\n"),
        "{}",
        requests[0]
    );
    assert!(requests[0].ends_with(r#"{"image":"ttylinux","type":"m1.small"}"#));
}

#[test]
fn run_instance_quiet_and_json() {
    let server = CannedServer::start(vec![
        reply("201 Created", &instance_json(7, "Pending")),
        reply("201 Created", &instance_json(8, "Pending")),
        reply("201 Created", &instance_json(9, "Pending")),
    ]);
    let home = Home::new(NAMES);
    let env = [("STRATUSLAB_ENDPOINT", server.address.as_str())];
    let out = home.run("run-instance", &["img", "-n", "2", "-q"], &env);
    assert_eq!(stdout(&out), "7\n8\n");
    assert!(out.status.success());
    let out = home.run("run-instance", &["img", "--json"], &env);
    let created: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(created[0]["id"], 9);
    assert!(out.status.success());
    // No credentials configured: no Authorization header.
    assert!(!server.requests()[0].contains("authorization"));
}

#[test]
fn describe_shows_the_table_and_an_error_for_an_unknown_id() {
    let server = CannedServer::start(vec![
        reply("200 OK", &instance_json(5507, "Running")),
        reply(
            "404 Not Found",
            r#"{"code":"not_found","message":"no instance 42"}"#,
        ),
    ]);
    let home = Home::new(NAMES);
    let out = home.run(
        "describe-instance",
        &["5507", "42", "--endpoint", &server.address],
        &[("STRATUSLAB_ENDPOINT", "127.0.0.1:1")],
    );
    assert_eq!(
        stdout(&out),
        "id   state     vcpu memory    name            cpu% host/ip\n\
         5507 Running   1    131072    vm-5507         -    node-1\n"
    );
    assert_eq!(stderr(&out), "[ERROR] instance 42 not found\n");
    assert_eq!(out.status.code(), Some(1));
    let requests = server.requests();
    assert!(requests[1].starts_with("GET /api/v1/instances/42 HTTP/1.1\r\n"));
}

#[test]
fn kill_confirms_each_instance_and_fails_if_one_failed() {
    let server = CannedServer::start(vec![
        reply("200 OK", &instance_json(1, "Stopping")),
        reply(
            "409 Conflict",
            r#"{"code":"conflict","message":"instance 2 is already Done"}"#,
        ),
        reply("200 OK", &instance_json(3, "Stopping")),
    ]);
    let home = Home::new(NAMES);
    let env = [("STRATUSLAB_ENDPOINT", server.address.as_str())];
    let out = home.run("kill-instance", &["1", "2", "3"], &env);
    assert_eq!(
        stdout(&out),
        " :: Killing instance 1 (now Stopping)\n :: Killing instance 3 (now Stopping)\n"
    );
    assert_eq!(stderr(&out), "[ERROR] instance 2 is already Done\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(server.requests()[2].starts_with("DELETE /api/v1/instances/3 HTTP/1.1\r\n"));
}

#[test]
fn wrong_password_is_one_error_line() {
    let server = CannedServer::start(vec![reply(
        "401 Unauthorized",
        r#"{"code":"unauthorized","message":"bad credentials"}"#,
    )]);
    let home = Home::new(NAMES);
    let out = home.run(
        "kill-instance",
        &["1", "2"],
        &[
            ("STRATUSLAB_ENDPOINT", &format!("{}/", server.address)),
            ("STRATUSLAB_USERNAME", "alice"),
            ("STRATUSLAB_PASSWORD", "wrong"),
        ],
    );
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        format!(
            "[ERROR] authentication failed for user alice at {}\n",
            server.address
        )
    );
    assert_eq!(out.status.code(), Some(1));
    // It stopped at the first ID rather than failing the same way for each.
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn unreachable_endpoint_is_one_error_line() {
    let port = unused_port();
    let home = Home::new(NAMES);
    let out = home.run(
        "describe-instance",
        &["--endpoint", &format!("127.0.0.1:{port}")],
        &[],
    );
    assert_unreachable(&out, port);
}

#[test]
fn missing_endpoint_points_to_copy_config() {
    let home = Home::new(NAMES);
    let out = home.run("describe-instance", &[], &[]);
    assert_eq!(
        stderr(&out),
        format!(
            "[ERROR] no cloud endpoint configured: run stratus-copy-config and set endpoint in {}, \
             or set STRATUSLAB_ENDPOINT, or pass --endpoint\n",
            home.config_path().display()
        )
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn copy_config_writes_a_private_file_once() {
    let home = Home::new(NAMES);
    let out = home.run("copy-config", &[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let path = home.config_path();
    assert!(
        stdout(&out).contains(&path.display().to_string()),
        "{}",
        stdout(&out)
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let out = home.run("copy-config", &[], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("[ERROR] "), "{}", stderr(&out));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));

    let out = home.run("copy-config", &["--force"], &[]);
    assert!(out.status.success());
}
