//! The persistent disk commands of the guide's chapter 7 as a user runs them
//! (`stratus-create-volume`, `-describe-volumes`, `-update-volume`, `-delete-volume`,
//! `-attach-volume`, `-detach-volume`, `run-instance --persistent-disk`): exact output,
//! `[ERROR] ` lines, exit codes, the requests sent and the endpoint they go to, against a canned
//! HTTP server on 127.0.0.1.

mod support;

use stratus_common::volumes::{AttachmentState, Volume, VolumeAttachment, VolumeState, VolumeType};
use support::{assert_unreachable, reply, stderr, stdout, unused_port, CannedServer, Home};

/// The guide's disks.
const PRIVATE: &str = "9c5a2c03-8243-4a1b-a248-0f0d22d948c2";
const PUBLIC: &str = "a4324f26-39e0-4965-8c8f-3287cd0936e5";
const HOTPLUG_1: &str = "1e8e9104-681c-4269-8aae-e513c6723ac6";
const HOTPLUG_2: &str = "5822c376-9ce1-434e-95d1-cdaa240cd47c";

const NAMES: &[&str] = &[
    "create-volume",
    "describe-volumes",
    "update-volume",
    "delete-volume",
    "attach-volume",
    "detach-volume",
    "run-instance",
    "describe-instance",
];

fn volume(id: &str) -> Volume {
    Volume {
        id: id.into(),
        owner: "testor1".into(),
        tag: "myprivate-disk".into(),
        size: 5,
        visibility: "private".into(),
        volume_type: VolumeType::DataRw,
        state: VolumeState::Available,
        reason: None,
        host: "node-1".into(),
        created: "2011-07-20T16:10:37.000Z".into(),
        serial: id.chars().take(20).collect(),
        users: 0,
        attachments: Vec::new(),
        changes: Vec::new(),
    }
}

/// `id` attached to `vm` on `device` in `state`.
fn attached(id: &str, vm: u64, device: &str, state: AttachmentState) -> Volume {
    let mut v = volume(id);
    v.users = 1;
    v.attachments = vec![VolumeAttachment {
        instance: vm,
        device: device.into(),
        state,
        hotplug: true,
        read_only: false,
        remote: false,
        since: "2011-07-20T16:40:00.000Z".into(),
    }];
    v
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap()
}

fn ok(volume: &Volume) -> String {
    reply("200 OK", &json(volume))
}

fn accepted(volume: &Volume) -> String {
    reply("202 Accepted", &json(volume))
}

fn api_error(status: &str, code: &str, message: &str) -> String {
    reply(
        status,
        &serde_json::json!({ "code": code, "message": message }).to_string(),
    )
}

/// The request line of a request the server saw.
fn request_line(request: &str) -> &str {
    request.split("\r\n").next().unwrap()
}

fn request_lines(requests: &[String]) -> Vec<&str> {
    requests.iter().map(|r| request_line(r)).collect()
}

/// The body of a request the server saw.
fn body(request: &str) -> &str {
    request.split_once("\r\n\r\n").unwrap().1
}

/// Runs `stratus-<name>` with the pdisk endpoint in the environment.
fn run(home: &Home, server: &CannedServer, name: &str, args: &[&str]) -> std::process::Output {
    home.run(
        name,
        args,
        &[("STRATUSLAB_PDISK_ENDPOINT", server.address.as_str())],
    )
}

#[test]
fn create_prints_the_disk_and_uses_the_pdisk_endpoint_and_credentials() {
    let server = CannedServer::start(vec![reply("201 Created", &json(&volume(PRIVATE)))]);
    let home = Home::new(NAMES);
    // The cloud endpoint is not listening: the disk service is asked.
    home.write_config(&format!(
        "[default]\nendpoint = 127.0.0.1:{}\nusername = alice\npassword = pw\n\
         pdisk_endpoint = {}\npdisk_password = pdpw\n",
        unused_port(),
        server.address
    ));
    let out = home.run("create-volume", &["--size=5", "--tag=myprivate-disk"], &[]);
    assert_eq!(stderr(&out), "");
    assert_eq!(stdout(&out), format!("DISK {PRIVATE}\n"));
    assert!(out.status.success());
    let requests = server.requests();
    assert_eq!(request_line(&requests[0]), "POST /api/v1/volumes HTTP/1.1");
    assert_eq!(
        body(&requests[0]),
        r#"{"size":5,"tag":"myprivate-disk","public":false}"#
    );
    // alice (the cloud username) with pdpw (the pdisk password).
    assert!(
        requests[0].contains("authorization: Basic YWxpY2U6cGRwdw==\r\n"),
        "{}",
        requests[0]
    );
}

#[test]
fn create_waits_for_a_slow_storage_host() {
    let mut creating = volume(PUBLIC);
    creating.state = VolumeState::Creating;
    let server = CannedServer::start(vec![
        reply("201 Created", &json(&creating)),
        ok(&creating),
        ok(&volume(PUBLIC)),
    ]);
    let home = Home::new(NAMES);
    let out = run(
        &home,
        &server,
        "create-volume",
        &[
            "--public",
            "--size=10",
            "--tag=mypublic-disk",
            "--type",
            "data-ro",
        ],
    );
    assert_eq!(stderr(&out), "");
    assert_eq!(stdout(&out), format!("DISK {PUBLIC}\n"));
    assert!(out.status.success());
    let requests = server.requests();
    assert_eq!(
        body(&requests[0]),
        r#"{"size":10,"tag":"mypublic-disk","public":true,"type":"data-ro"}"#
    );
    assert_eq!(
        request_lines(&requests[1..]),
        vec![format!("GET /api/v1/volumes/{PUBLIC} HTTP/1.1"); 2]
    );
}

#[test]
fn create_that_fails_on_the_storage_host_is_an_error() {
    let mut creating = volume(PRIVATE);
    creating.state = VolumeState::Creating;
    let mut failed = volume(PRIVATE);
    failed.state = VolumeState::Failed;
    failed.reason = Some("cannot create the file: No space left on device".into());
    let server = CannedServer::start(vec![reply("201 Created", &json(&creating)), ok(&failed)]);
    let home = Home::new(NAMES);
    let out = run(&home, &server, "create-volume", &["--size=5"]);
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        format!(
            "[ERROR] DISK {PRIVATE}: could not be created: cannot create the file: No space \
             left on device\n"
        )
    );
    assert_eq!(out.status.code(), Some(1));
    server.requests();
}

#[test]
fn create_over_quota_is_the_clouds_message() {
    let server = CannedServer::start(vec![api_error(
        "403 Forbidden",
        "quota_exceeded",
        "quota exceeded: alice may have at most 20 disks",
    )]);
    let home = Home::new(NAMES);
    let out = run(&home, &server, "create-volume", &["--size=5"]);
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        "[ERROR] quota exceeded: alice may have at most 20 disks\n"
    );
    assert_eq!(out.status.code(), Some(1));
    server.requests();
}

#[test]
fn describe_prints_the_guides_blocks_in_the_apis_order() {
    let mut public = volume(PUBLIC);
    public.visibility = "public".into();
    public.tag = "mypublic-disk".into();
    public.owner = "testor2".into();
    public.created = "2011-07-20T16:37:10.000Z".into();
    let mut in_use = attached(HOTPLUG_1, 24, "/dev/vdb", AttachmentState::Detaching);
    in_use.tag = "scratch".into();
    let mut creating = volume(HOTPLUG_2);
    creating.state = VolumeState::Creating;
    creating.tag = "new".into();
    let server = CannedServer::start(vec![reply(
        "200 OK",
        &json(&vec![public, volume(PRIVATE), in_use, creating]),
    )]);
    let home = Home::new(NAMES);
    let out = run(&home, &server, "describe-volumes", &[]);
    assert_eq!(stderr(&out), "");
    assert_eq!(
        stdout(&out),
        "\
:: DISK a4324f26-39e0-4965-8c8f-3287cd0936e5
    created: 2011/07/20 16:37:10
    visibility: public
    tag: mypublic-disk
    owner: testor2
    size: 5
    users: 0
    type: data-rw
:: DISK 9c5a2c03-8243-4a1b-a248-0f0d22d948c2
    created: 2011/07/20 16:10:37
    visibility: private
    tag: myprivate-disk
    owner: testor1
    size: 5
    users: 0
    type: data-rw
:: DISK 1e8e9104-681c-4269-8aae-e513c6723ac6
    created: 2011/07/20 16:10:37
    visibility: private
    tag: scratch
    owner: testor1
    size: 5
    users: 1
    type: data-rw
    attached: VM 24 on /dev/vdb (detaching)
:: DISK 5822c376-9ce1-434e-95d1-cdaa240cd47c
    created: 2011/07/20 16:10:37
    visibility: private
    tag: new
    owner: testor1
    size: 5
    users: 0
    type: data-rw
    state: creating
"
    );
    assert!(out.status.success());
    assert_eq!(
        request_line(&server.requests()[0]),
        "GET /api/v1/volumes HTTP/1.1"
    );
}

#[test]
fn describe_named_disks_reports_the_unknown_ones() {
    let server = CannedServer::start(vec![
        api_error(
            "404 Not Found",
            "not_found",
            &format!("disk {HOTPLUG_1} not found"),
        ),
        ok(&volume(PRIVATE)),
    ]);
    let home = Home::new(NAMES);
    let out = run(
        &home,
        &server,
        "describe-volumes",
        &[HOTPLUG_1, &PRIVATE.to_uppercase(), "--json"],
    );
    assert_eq!(
        stderr(&out),
        format!("[ERROR] disk {HOTPLUG_1} not found\n")
    );
    let shown: Vec<Volume> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(shown, [volume(PRIVATE)]);
    assert_eq!(out.status.code(), Some(1));
    let requests = server.requests();
    // Named in capitals, asked for as the cloud writes it.
    assert_eq!(
        request_line(&requests[1]),
        format!("GET /api/v1/volumes/{PRIVATE} HTTP/1.1")
    );
}

#[test]
fn not_a_uuid_is_a_usage_error_before_any_request() {
    let home = Home::new(NAMES);
    let out = home.run(
        "delete-volume",
        &["../instances/1"],
        &[("STRATUSLAB_ENDPOINT", "127.0.0.1:1")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("\"../instances/1\" is not a disk UUID"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn update_sends_only_the_changes_and_prints_the_disk() {
    let server = CannedServer::start(vec![
        ok(&volume(PRIVATE)),
        api_error(
            "409 Conflict",
            "conflict",
            &format!("the type of disk {PRIVATE} can change only while no instance uses it"),
        ),
    ]);
    let home = Home::new(NAMES);
    let out = run(&home, &server, "update-volume", &["--public", PRIVATE]);
    assert_eq!(stderr(&out), "");
    assert_eq!(stdout(&out), format!("DISK {PRIVATE}\n"));
    assert!(out.status.success());
    let out = run(
        &home,
        &server,
        "update-volume",
        &[PRIVATE, "--type=data-ro", "--tag", "ro"],
    );
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        format!("[ERROR] the type of disk {PRIVATE} can change only while no instance uses it\n")
    );
    assert_eq!(out.status.code(), Some(1));
    let requests = server.requests();
    assert_eq!(
        request_line(&requests[0]),
        format!("PATCH /api/v1/volumes/{PRIVATE} HTTP/1.1")
    );
    assert_eq!(body(&requests[0]), r#"{"public":true}"#);
    assert_eq!(body(&requests[1]), r#"{"tag":"ro","type":"data-ro"}"#);
}

#[test]
fn update_help_lists_the_types_and_properties() {
    let home = Home::new(NAMES);
    let out = home.run("update-volume", &["-h"], &[]);
    assert!(out.status.success());
    let help = stdout(&out);
    assert!(
        help.contains("Properties that can be updated:") && help.contains("Disk types:"),
        "{help}"
    );
    assert!(help.contains("  data-ro     read-only data disk"), "{help}");
}

#[test]
fn delete_confirms_each_disk_and_reports_another_users_disk() {
    let server = CannedServer::start(vec![
        reply("204 No Content", ""),
        api_error(
            "403 Forbidden",
            "forbidden",
            &format!("Not enough rights to delete disk {PUBLIC}"),
        ),
        reply("204 No Content", ""),
    ]);
    let home = Home::new(NAMES);
    let out = run(
        &home,
        &server,
        "delete-volume",
        &[PRIVATE, PUBLIC, HOTPLUG_1],
    );
    assert_eq!(
        stdout(&out),
        format!("DELETED {PRIVATE}\nDELETED {HOTPLUG_1}\n")
    );
    assert_eq!(
        stderr(&out),
        format!("[ERROR] Not enough rights to delete disk {PUBLIC}\n")
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        request_lines(&server.requests()),
        [
            format!("DELETE /api/v1/volumes/{PRIVATE} HTTP/1.1"),
            format!("DELETE /api/v1/volumes/{PUBLIC} HTTP/1.1"),
            format!("DELETE /api/v1/volumes/{HOTPLUG_1} HTTP/1.1"),
        ]
    );
}

#[test]
fn attach_waits_until_the_guest_has_each_disk() {
    use AttachmentState::{Attached, Attaching};
    let server = CannedServer::start(vec![
        accepted(&attached(HOTPLUG_1, 24, "/dev/vdb", Attaching)),
        accepted(&attached(HOTPLUG_2, 24, "/dev/vdc", Attaching)),
        ok(&attached(HOTPLUG_1, 24, "/dev/vdb", Attaching)),
        ok(&attached(HOTPLUG_1, 24, "/dev/vdb", Attached)),
        ok(&attached(HOTPLUG_2, 24, "/dev/vdc", Attached)),
    ]);
    let home = Home::new(NAMES);
    let out = run(
        &home,
        &server,
        "attach-volume",
        &["-i", "24", HOTPLUG_1, HOTPLUG_2],
    );
    assert_eq!(stderr(&out), "");
    assert_eq!(
        stdout(&out),
        format!(
            "ATTACHED {HOTPLUG_1} in VM 24 on /dev/vdb\nATTACHED {HOTPLUG_2} in VM 24 on /dev/vdc\n"
        )
    );
    assert!(out.status.success());
    let requests = server.requests();
    assert_eq!(
        request_lines(&requests),
        [
            "POST /api/v1/instances/24/volumes HTTP/1.1".to_string(),
            "POST /api/v1/instances/24/volumes HTTP/1.1".to_string(),
            format!("GET /api/v1/volumes/{HOTPLUG_1} HTTP/1.1"),
            format!("GET /api/v1/volumes/{HOTPLUG_1} HTTP/1.1"),
            format!("GET /api/v1/volumes/{HOTPLUG_2} HTTP/1.1"),
        ]
    );
    assert_eq!(body(&requests[0]), format!(r#"{{"volume":"{HOTPLUG_1}"}}"#));
    assert_eq!(body(&requests[1]), format!(r#"{{"volume":"{HOTPLUG_2}"}}"#));
}

#[test]
fn attach_reports_a_taken_disk_and_one_the_host_could_not_plug() {
    let mut dropped = volume(HOTPLUG_2);
    dropped.reason = Some("attaching to instance 24 failed: the guest has no free PCI slot".into());
    let server = CannedServer::start(vec![
        api_error(
            "409 Conflict",
            "conflict",
            &format!("disk {HOTPLUG_1} is read-write and already attached to instance 3"),
        ),
        accepted(&attached(
            HOTPLUG_2,
            24,
            "/dev/vdb",
            AttachmentState::Attaching,
        )),
        ok(&dropped),
    ]);
    let home = Home::new(NAMES);
    let out = run(
        &home,
        &server,
        "attach-volume",
        &["-i", "24", HOTPLUG_1, HOTPLUG_2],
    );
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        format!(
            "[ERROR] disk {HOTPLUG_1} is read-write and already attached to instance 3\n\
             [ERROR] DISK {HOTPLUG_2}: attaching to instance 24 failed: the guest has no free \
             PCI slot\n"
        )
    );
    assert_eq!(out.status.code(), Some(1));
    server.requests();
}

#[test]
fn attach_gives_up_after_the_timeout() {
    let attaching = attached(HOTPLUG_1, 24, "/dev/vdb", AttachmentState::Attaching);
    let server = CannedServer::start(vec![accepted(&attaching), ok(&attaching)]);
    let home = Home::new(NAMES);
    let out = run(
        &home,
        &server,
        "attach-volume",
        &["-i", "24", HOTPLUG_1, "--timeout", "0"],
    );
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        format!(
            "[ERROR] DISK {HOTPLUG_1}: not attached to VM 24 after 0 s (still attaching); \
             stratus-describe-volumes shows how it goes\n"
        )
    );
    assert_eq!(out.status.code(), Some(1));
    server.requests();
}

#[test]
fn detach_waits_until_the_guest_released_each_disk() {
    use AttachmentState::{Attached, Detaching};
    let server = CannedServer::start(vec![
        ok(&attached(HOTPLUG_1, 24, "/dev/vdb", Attached)),
        accepted(&attached(HOTPLUG_1, 24, "/dev/vdb", Detaching)),
        ok(&attached(HOTPLUG_2, 24, "/dev/vdc", Attached)),
        accepted(&attached(HOTPLUG_2, 24, "/dev/vdc", Detaching)),
        ok(&attached(HOTPLUG_1, 24, "/dev/vdb", Detaching)),
        ok(&volume(HOTPLUG_1)),
        ok(&volume(HOTPLUG_2)),
    ]);
    let home = Home::new(NAMES);
    let out = run(
        &home,
        &server,
        "detach-volume",
        &["-i", "24", HOTPLUG_1, HOTPLUG_2],
    );
    assert_eq!(stderr(&out), "");
    assert_eq!(
        stdout(&out),
        format!(
            "DETACHED {HOTPLUG_1} from VM 24 on /dev/vdb\n\
             DETACHED {HOTPLUG_2} from VM 24 on /dev/vdc\n"
        )
    );
    assert!(out.status.success());
    assert_eq!(
        request_lines(&server.requests()),
        [
            format!("GET /api/v1/volumes/{HOTPLUG_1} HTTP/1.1"),
            format!("DELETE /api/v1/instances/24/volumes/{HOTPLUG_1} HTTP/1.1"),
            format!("GET /api/v1/volumes/{HOTPLUG_2} HTTP/1.1"),
            format!("DELETE /api/v1/instances/24/volumes/{HOTPLUG_2} HTTP/1.1"),
            format!("GET /api/v1/volumes/{HOTPLUG_1} HTTP/1.1"),
            format!("GET /api/v1/volumes/{HOTPLUG_1} HTTP/1.1"),
            format!("GET /api/v1/volumes/{HOTPLUG_2} HTTP/1.1"),
        ]
    );
}

const STUCK_MESSAGE: &str = "the guest of VM 24 has not released the disk (attachment stuck); \
                             unmount it in the guest, or detach with --force to free it anyway";

#[test]
fn detach_of_a_disk_the_guest_holds_fails_and_leaves_it_stuck() {
    use AttachmentState::{Attached, Detaching, Stuck};
    let server = CannedServer::start(vec![
        ok(&attached(HOTPLUG_1, 24, "/dev/vdb", Attached)),
        accepted(&attached(HOTPLUG_1, 24, "/dev/vdb", Detaching)),
        ok(&attached(HOTPLUG_1, 24, "/dev/vdb", Stuck)),
    ]);
    let home = Home::new(NAMES);
    let out = run(&home, &server, "detach-volume", &["-i", "24", HOTPLUG_1]);
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        format!("[ERROR] DISK {HOTPLUG_1}: {STUCK_MESSAGE}\n")
    );
    assert_eq!(out.status.code(), Some(1));
    // No forced detach without --force.
    assert!(!server.requests().iter().any(|r| r.contains("force")));
}

#[test]
fn detach_that_times_out_says_the_same() {
    use AttachmentState::{Attached, Detaching};
    let server = CannedServer::start(vec![
        ok(&attached(HOTPLUG_1, 24, "/dev/vdb", Attached)),
        accepted(&attached(HOTPLUG_1, 24, "/dev/vdb", Detaching)),
        ok(&attached(HOTPLUG_1, 24, "/dev/vdb", Detaching)),
    ]);
    let home = Home::new(NAMES);
    let out = run(
        &home,
        &server,
        "detach-volume",
        &["-i", "24", HOTPLUG_1, "--timeout=0"],
    );
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        format!("[ERROR] DISK {HOTPLUG_1}: {STUCK_MESSAGE}\n")
    );
    assert_eq!(out.status.code(), Some(1));
    server.requests();
}

#[test]
fn forced_detach_frees_a_stuck_disk_with_a_warning() {
    use AttachmentState::{Attached, Detaching, Stuck};
    let server = CannedServer::start(vec![
        // Already stuck: forced at once.
        ok(&attached(HOTPLUG_1, 24, "/dev/vdb", Stuck)),
        accepted(&volume(HOTPLUG_1)),
        // Attached: asked normally, forced once it is stuck.
        ok(&attached(HOTPLUG_2, 24, "/dev/vdc", Attached)),
        accepted(&attached(HOTPLUG_2, 24, "/dev/vdc", Detaching)),
        ok(&attached(HOTPLUG_2, 24, "/dev/vdc", Stuck)),
        accepted(&volume(HOTPLUG_2)),
    ]);
    let home = Home::new(NAMES);
    let out = run(
        &home,
        &server,
        "detach-volume",
        &["-i", "24", HOTPLUG_1, HOTPLUG_2, "--force"],
    );
    assert_eq!(
        stdout(&out),
        format!(
            "DETACHED {HOTPLUG_1} from VM 24 on /dev/vdb\n\
             DETACHED {HOTPLUG_2} from VM 24 on /dev/vdc\n"
        )
    );
    let warning = |id: &str, device: &str| {
        format!(
            "[WARNING] DISK {id}: forced off VM 24 without its guest releasing it: the guest \
             may still hold {device}, and what it had not written to the disk is lost\n"
        )
    };
    assert_eq!(
        stderr(&out),
        warning(HOTPLUG_1, "/dev/vdb") + &warning(HOTPLUG_2, "/dev/vdc")
    );
    assert!(out.status.success());
    assert_eq!(
        request_lines(&server.requests()),
        [
            format!("GET /api/v1/volumes/{HOTPLUG_1} HTTP/1.1"),
            format!("DELETE /api/v1/instances/24/volumes/{HOTPLUG_1}?force=true HTTP/1.1"),
            format!("GET /api/v1/volumes/{HOTPLUG_2} HTTP/1.1"),
            format!("DELETE /api/v1/instances/24/volumes/{HOTPLUG_2} HTTP/1.1"),
            format!("GET /api/v1/volumes/{HOTPLUG_2} HTTP/1.1"),
            format!("DELETE /api/v1/instances/24/volumes/{HOTPLUG_2}?force=true HTTP/1.1"),
        ]
    );
}

#[test]
fn forced_detach_of_a_disk_released_meanwhile_is_a_plain_detach() {
    use AttachmentState::{Attached, Detaching, Stuck};
    let server = CannedServer::start(vec![
        ok(&attached(HOTPLUG_1, 24, "/dev/vdb", Attached)),
        accepted(&attached(HOTPLUG_1, 24, "/dev/vdb", Detaching)),
        ok(&attached(HOTPLUG_1, 24, "/dev/vdb", Stuck)),
        api_error(
            "400 Bad Request",
            "not_attached",
            &format!("DISK {HOTPLUG_1}: Disk is not attached to VM 24"),
        ),
    ]);
    let home = Home::new(NAMES);
    let out = run(
        &home,
        &server,
        "detach-volume",
        &["-i", "24", "--force", HOTPLUG_1],
    );
    assert_eq!(stderr(&out), "");
    assert_eq!(
        stdout(&out),
        format!("DETACHED {HOTPLUG_1} from VM 24 on /dev/vdb\n")
    );
    assert!(out.status.success());
    server.requests();
}

#[test]
fn detach_of_a_disk_not_attached_is_the_guides_error() {
    let id = "2a17226f-b006-45d8-930e-13fbef3c6cdc";
    let server = CannedServer::start(vec![
        ok(&volume(id)),
        api_error(
            "400 Bad Request",
            "not_attached",
            &format!("DISK {id}: Disk is not attached to VM 41"),
        ),
    ]);
    let home = Home::new(NAMES);
    let out = run(&home, &server, "detach-volume", &["-i", "41", id]);
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        format!("[ERROR] DISK {id}: Disk is not attached to VM 41\n")
    );
    assert_eq!(out.status.code(), Some(1));
    server.requests();
}

fn instance_json(id: u64, disks: &str) -> String {
    format!(
        r#"{{"id":{id},"name":"vm-{id}","owner":"alice","image":"ttylinux","type":"m1.small",
        "vcpus":1,"memory_mib":128,"host":"node-1","state":"Running","domain":"one-{id}",
        "created":"2024-05-01T10:00:00Z","updated":"2024-05-01T10:00:00Z","history":[]
        {disks}}}"#
    )
}

#[test]
fn run_instance_sends_the_persistent_disks_to_the_cloud_endpoint() {
    let server = CannedServer::start(vec![reply("201 Created", &instance_json(3, ""))]);
    let home = Home::new(NAMES);
    let out = home.run(
        "run-instance",
        &[
            &format!("--persistent-disk={PRIVATE}"),
            "--persistent-disk",
            HOTPLUG_1,
            "GOaxJFdoEXvqAm9ArJgnZO_ky6F",
            "-q",
        ],
        &[
            ("STRATUSLAB_ENDPOINT", server.address.as_str()),
            ("STRATUSLAB_PDISK_ENDPOINT", "127.0.0.1:1"),
        ],
    );
    assert_eq!(stderr(&out), "");
    assert_eq!(stdout(&out), "3\n");
    let requests = server.requests();
    assert_eq!(
        body(&requests[0]),
        format!(
            r#"{{"image":"GOaxJFdoEXvqAm9ArJgnZO_ky6F","persistent_disks":["{PRIVATE}","{HOTPLUG_1}"]}}"#
        )
    );
}

#[test]
fn describe_instance_shows_the_disks_under_the_row() {
    let disks =
        format!(r#","disks":[{{"volume":"{PRIVATE}","device":"/dev/vdb","state":"attached"}}]"#);
    let server = CannedServer::start(vec![reply(
        "200 OK",
        &format!("[{}]", instance_json(3, &disks)),
    )]);
    let home = Home::new(NAMES);
    let out = home.run(
        "describe-instance",
        &[],
        &[("STRATUSLAB_ENDPOINT", server.address.as_str())],
    );
    assert_eq!(
        stdout(&out),
        format!(
            "id  state     vcpu memory    name            cpu% host/ip\n\
             3   Running   1    131072    vm-3            -    node-1\n    \
             disk {PRIVATE} on /dev/vdb (attached)\n"
        )
    );
    assert!(out.status.success());
    server.requests();
}

#[test]
fn pdisk_endpoint_is_the_option_then_the_environment_then_the_file_then_the_cloud() {
    let list = || reply("200 OK", "[]");
    let cloud = CannedServer::start(vec![list()]);
    let file = CannedServer::start(vec![list()]);
    let env = CannedServer::start(vec![list()]);
    let option = CannedServer::start(vec![list()]);
    let home = Home::new(NAMES);
    home.write_config(&format!("endpoint = {}\n", cloud.address));
    // Nothing configured for the disks: the cloud endpoint.
    assert!(home.run("describe-volumes", &[], &[]).status.success());
    home.write_config(&format!(
        "endpoint = {}\npdisk_endpoint = {}\n",
        cloud.address, file.address
    ));
    assert!(home.run("describe-volumes", &[], &[]).status.success());
    let env_vars = [("STRATUSLAB_PDISK_ENDPOINT", env.address.as_str())];
    assert!(home
        .run("describe-volumes", &[], &env_vars)
        .status
        .success());
    let out = home.run(
        "describe-volumes",
        &["--pdisk-endpoint", &option.address],
        &env_vars,
    );
    assert!(out.status.success());
    // Each server answered its one request.
    for server in [cloud, file, env, option] {
        assert_eq!(
            request_line(&server.requests()[0]),
            "GET /api/v1/volumes HTTP/1.1"
        );
    }

    // An unreachable disk service is one error line.
    let port = unused_port();
    let out = home.run(
        "describe-volumes",
        &["--pdisk-endpoint", &format!("127.0.0.1:{port}")],
        &[],
    );
    assert_unreachable(&out, port);
}
