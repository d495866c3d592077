//! The placement commands as a user runs them: server groups (`stratus-create-group`,
//! `-describe-groups`, `-delete-group`), `run-instance --group/--label` and
//! `update-host --roles/--labels`: exact output, `[ERROR] ` lines, exit codes and the requests
//! sent, against a canned HTTP server on 127.0.0.1.

mod support;

use stratus_common::api::{Group, GroupMember, GroupPolicy, InstanceState};
use support::{reply, stderr, stdout, CannedServer, Home};

const NAMES: &[&str] = &[
    "create-group",
    "describe-groups",
    "delete-group",
    "run-instance",
    "update-host",
];

fn group(name: &str, owner: &str, policy: GroupPolicy, members: &[(u64, Option<&str>)]) -> Group {
    Group {
        name: name.into(),
        owner: owner.into(),
        policy,
        created: "2026-05-01T10:00:00Z".into(),
        members: members
            .iter()
            .map(|(id, host)| GroupMember {
                id: *id,
                state: if host.is_some() {
                    InstanceState::Running
                } else {
                    InstanceState::Pending
                },
                host: host.map(Into::into),
            })
            .collect(),
    }
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap()
}

fn api_error(status: &str, code: &str, message: &str) -> String {
    reply(
        status,
        &serde_json::json!({ "code": code, "message": message }).to_string(),
    )
}

fn request_line(request: &str) -> &str {
    request.split("\r\n").next().unwrap()
}

fn body(request: &str) -> &str {
    request.split_once("\r\n\r\n").unwrap().1
}

/// Runs `stratus-<name>` with the cloud endpoint in the environment.
fn run(home: &Home, server: &CannedServer, name: &str, args: &[&str]) -> std::process::Output {
    home.run(
        name,
        args,
        &[
            ("STRATUSLAB_ENDPOINT", server.address.as_str()),
            ("STRATUSLAB_USERNAME", "alice"),
        ],
    )
}

#[test]
fn create_group_prints_the_group() {
    let web = group("web", "alice", GroupPolicy::AntiAffinity, &[]);
    let server = CannedServer::start(vec![
        reply("201 Created", &json(&web)),
        reply("201 Created", &json(&web)),
        api_error(
            "409 Conflict",
            "conflict",
            "you already have a server group web",
        ),
    ]);
    let home = Home::new(NAMES);
    let out = run(
        &home,
        &server,
        "create-group",
        &["web", "--policy", "anti-affinity"],
    );
    assert_eq!(stderr(&out), "");
    assert_eq!(stdout(&out), "GROUP web (anti-affinity)\n");
    assert!(out.status.success());

    let out = run(
        &home,
        &server,
        "create-group",
        &["web", "--policy=anti-affinity", "--json"],
    );
    assert_eq!(serde_json::from_str::<Group>(&stdout(&out)).unwrap(), web);

    let out = run(
        &home,
        &server,
        "create-group",
        &["web", "--policy", "affinity"],
    );
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        "[ERROR] you already have a server group web\n"
    );
    assert_eq!(out.status.code(), Some(1));

    let requests = server.requests();
    assert_eq!(request_line(&requests[0]), "POST /api/v1/groups HTTP/1.1");
    assert_eq!(
        body(&requests[0]),
        r#"{"name":"web","policy":"anti-affinity"}"#
    );
    assert_eq!(body(&requests[2]), r#"{"name":"web","policy":"affinity"}"#);
}

#[test]
fn describe_groups_lists_them_sorted_or_the_ones_named() {
    let web = group(
        "web",
        "alice",
        GroupPolicy::AntiAffinity,
        &[(5507, Some("node-1")), (5508, Some("node-2")), (5509, None)],
    );
    let db_bob = group("db", "bob", GroupPolicy::Affinity, &[]);
    let db_alice = group(
        "db",
        "alice",
        GroupPolicy::Affinity,
        &[(12, Some("node-3"))],
    );
    let server = CannedServer::start(vec![
        reply("200 OK", &json(&[&web, &db_bob, &db_alice])),
        reply("200 OK", &json(&web)),
        api_error("404 Not Found", "not_found", "server group cache not found"),
        api_error("404 Not Found", "not_found", "server group cache not found"),
    ]);
    let home = Home::new(NAMES);
    let out = run(&home, &server, "describe-groups", &[]);
    assert_eq!(stderr(&out), "");
    assert_eq!(
        stdout(&out),
        "\
name policy        owner members id@host
db   affinity      alice 1       12@node-3
db   affinity      bob   0       -
web  anti-affinity alice 3       5507@node-1 5508@node-2 5509@-
"
    );
    assert!(out.status.success());

    // One found, one not: the table of the one, an error line for the other, exit 1.
    let out = run(&home, &server, "describe-groups", &["web", "cache"]);
    assert_eq!(
        stdout(&out),
        "\
name policy        owner members id@host
web  anti-affinity alice 3       5507@node-1 5508@node-2 5509@-
"
    );
    assert_eq!(stderr(&out), "[ERROR] server group cache not found\n");
    assert_eq!(out.status.code(), Some(1));

    // --json naming only unknown groups: the errors, not an empty array.
    let out = run(&home, &server, "describe-groups", &["cache", "--json"]);
    assert_eq!(stdout(&out), "");
    assert_eq!(out.status.code(), Some(1));

    let requests = server.requests();
    assert_eq!(request_line(&requests[0]), "GET /api/v1/groups HTTP/1.1");
    assert_eq!(
        request_line(&requests[1]),
        "GET /api/v1/groups/web HTTP/1.1"
    );
    assert_eq!(
        request_line(&requests[2]),
        "GET /api/v1/groups/cache HTTP/1.1"
    );
}

#[test]
fn delete_group_confirms_each_and_reports_one_in_use() {
    let server = CannedServer::start(vec![
        reply("204 No Content", ""),
        api_error(
            "409 Conflict",
            "group_in_use",
            "server group web holds instance 5507, which is not Done",
        ),
        reply("204 No Content", ""),
    ]);
    let home = Home::new(NAMES);
    let out = run(&home, &server, "delete-group", &["db", "web", "cache"]);
    assert_eq!(stdout(&out), "DELETED group db\nDELETED group cache\n");
    assert_eq!(
        stderr(&out),
        "[ERROR] server group web holds instance 5507, which is not Done\n"
    );
    assert_eq!(out.status.code(), Some(1));
    let requests = server.requests();
    let lines: Vec<&str> = requests.iter().map(|r| request_line(r)).collect();
    assert_eq!(
        lines,
        [
            "DELETE /api/v1/groups/db HTTP/1.1",
            "DELETE /api/v1/groups/web HTTP/1.1",
            "DELETE /api/v1/groups/cache HTTP/1.1",
        ]
    );
}

#[test]
fn a_bad_group_name_is_a_usage_error_before_asking() {
    let home = Home::new(NAMES);
    let out = home.run("delete-group", &["../instances"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("group may contain only letters"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn run_instance_sends_the_group_and_labels() {
    let instance = r#"{"id":7,"name":"vm-7","owner":"alice","image":"ttylinux","type":"m1.small",
        "vcpus":1,"memory_mib":128,"state":"Pending","domain":"one-7",
        "created":"2024-05-01T10:00:00Z","updated":"2024-05-01T10:00:00Z","history":[]}"#;
    let server = CannedServer::start(vec![reply("201 Created", instance)]);
    let home = Home::new(NAMES);
    let out = run(
        &home,
        &server,
        "run-instance",
        &[
            "ttylinux",
            "--group",
            "web",
            "--label",
            "ssd,gpu",
            "--label=rack-2",
            "-q",
        ],
    );
    assert_eq!(stderr(&out), "");
    assert_eq!(stdout(&out), "7\n");
    let requests = server.requests();
    assert_eq!(
        body(&requests[0]),
        r#"{"image":"ttylinux","group":"web","labels":["ssd","gpu","rack-2"]}"#
    );
}

fn host_view(roles: &[&str], labels: &[&str], maintenance: bool) -> String {
    let mut view = serde_json::json!({
        "name": "node-1", "vcpus": 8, "memory_mib": 16384, "disk_gib": 200,
        "domain_type": "kvm", "arch": "x86_64", "hypervisor": "qemu:///system",
        "used_vcpus": 0, "used_memory_mib": 0, "instances": 0, "status": "up",
        "drained": maintenance, "unknown_domains": [], "roles": roles, "labels": labels,
    });
    if maintenance {
        view["maintenance"] = serde_json::json!({"since": "2026-05-01T09:00:00Z"});
    }
    reply("200 OK", &view.to_string())
}

#[test]
fn update_host_sends_only_what_changes_and_says_what_the_host_is_now() {
    let server = CannedServer::start(vec![
        host_view(&["storage"], &["ssd", "gpu"], false),
        host_view(&["compute", "storage"], &[], true),
        host_view(&["compute", "storage"], &[], false),
    ]);
    let home = Home::new(NAMES);
    let out = run(
        &home,
        &server,
        "update-host",
        &["node-1", "--roles", "storage", "--labels", "ssd,gpu"],
    );
    assert_eq!(stderr(&out), "");
    assert_eq!(
        stdout(&out),
        "UPDATED host node-1: roles storage; labels ssd,gpu\n"
    );
    assert!(out.status.success());

    let out = run(
        &home,
        &server,
        "update-host",
        &[
            "node-1",
            "--maintenance",
            "--roles=compute,storage",
            "--labels",
            "",
        ],
    );
    assert_eq!(
        stdout(&out),
        "MAINTENANCE host node-1: drained\n\
         UPDATED host node-1: roles compute,storage; labels (none)\n"
    );

    // Maintenance alone: the one line it always printed.
    let out = run(
        &home,
        &server,
        "update-host",
        &["node-1", "--no-maintenance"],
    );
    assert_eq!(stdout(&out), "IN SERVICE host node-1\n");

    let requests = server.requests();
    assert_eq!(
        request_line(&requests[0]),
        "PATCH /api/v1/hosts/node-1 HTTP/1.1"
    );
    assert_eq!(
        body(&requests[0]),
        r#"{"roles":["storage"],"labels":["ssd","gpu"]}"#
    );
    assert_eq!(
        body(&requests[1]),
        r#"{"maintenance":true,"roles":["compute","storage"],"labels":[]}"#
    );
    assert_eq!(body(&requests[2]), r#"{"maintenance":false}"#);
}

#[test]
fn update_host_needs_a_change() {
    let home = Home::new(NAMES);
    let out = home.run("update-host", &["node-1"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    for flag in ["--maintenance", "--no-maintenance", "--roles", "--labels"] {
        assert!(err.contains(flag), "{flag} missing from:\n{err}");
    }
}
