//! Persistent disks, as chapter 7 of the user's guide uses them, with real guests: a disk made,
//! formatted and written by one VM is read back by the next; disks hot-plugged into a running
//! VM appear in the guest and go away on detach; a guest that does not release a disk keeps it
//! `detaching` (then `stuck`), never silently free; one writer per disk; owner-only delete.
//! The guests run shell scripts given as user data (cloud-init runs `#!` user data) and print
//! what they see on their serial console, which the test reads.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use stratus_common::api::InstanceState;
use stratus_e2e::events::EventStream;
use stratus_e2e::TestCloud;

const BOOT: Duration = Duration::from_secs(120);

/// A cloud whose agent stores volumes, with users alice and bob.
fn cloud(name: &str, controller_extra: &str) -> TestCloud {
    cloud_offering(name, controller_extra, None)
}

/// Like [`cloud`], the storage host offering only `memory_mib` to instances.
fn cloud_offering(name: &str, controller_extra: &str, memory_mib: Option<u64>) -> TestCloud {
    let mut cloud = TestCloud::start_with(name, controller_extra).unwrap();
    if let Some(offered) = memory_mib {
        let reserved = stratus_e2e::host_memory_mib().unwrap() - offered;
        cloud
            .set_agent_option("reserved_memory_mib", &reserved.to_string())
            .unwrap();
    }
    cloud.store_volumes().unwrap();
    cloud.start_agent().unwrap();
    cloud.register_appliance("appliance").unwrap();
    cloud.create_user("alice").unwrap();
    cloud.create_user("bob").unwrap();
    cloud
}

/// Runs a CLI command as `user`; returns (success, stdout, stderr).
fn cli(cloud: &TestCloud, user: &str, args: &[&str]) -> (bool, String, String) {
    let out = cloud.stratus(user, args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `stratus-create-volume`: the new disk's UUID, from the guide's `DISK <uuid>` line.
fn create_volume(cloud: &TestCloud, user: &str, args: &[&str]) -> String {
    let mut all = vec!["create-volume"];
    all.extend_from_slice(args);
    let (ok, out, err) = cli(cloud, user, &all);
    assert!(ok, "create-volume failed: {err}");
    let id = out
        .trim()
        .strip_prefix("DISK ")
        .unwrap_or_else(|| panic!("not a DISK line: {out:?}"))
        .to_owned();
    assert_eq!(id.len(), 36, "{out}");
    id
}

fn volume(cloud: &TestCloud, user: &str, id: &str) -> Value {
    let (status, value) = cloud.get(user, &format!("/volumes/{id}")).unwrap();
    assert_eq!(status, StatusCode::OK, "{value}");
    value
}

/// Waits for a line starting with `prefix` on the instance's console; returns the line.
fn wait_console(cloud: &TestCloud, id: u64, prefix: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let console = cloud.console(id);
        if let Some(line) = console
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
        {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no {prefix:?} from instance {id} in {timeout:?}; console:\n{console}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for the last `DISKS` line (the guest's view of its persistent disks, by serial) to
/// equal `expected`.
fn wait_disks(cloud: &TestCloud, id: u64, expected: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let console = cloud.console(id);
        let last = console
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(str::trim)
            .rfind(|l| l.starts_with("DISKS"))
            .unwrap_or("")
            .to_owned();
        if last == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "instance {id}: last {last:?}, waited for {expected:?}; console:\n{console}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A guest script: finds the disk whose serial is `serial` by its stable name, as the README
/// tells users to (`/dev/disk/by-id/virtio-<serial>`), then runs `body` with `$dev` set.
fn with_disk(serial: &str, body: &str) -> String {
    format!(
        "#!/bin/sh\n\
         dev=\n\
         for i in $(seq 1 300); do\n\
           [ -b /dev/disk/by-id/virtio-{serial} ] && dev=$(readlink -f /dev/disk/by-id/virtio-{serial}) && break\n\
           sleep 0.1\n\
         done\n\
         [ -n \"$dev\" ] || {{ echo NODISK; exit 1; }}\n\
         set -e\n\
         {body}\n"
    )
}

/// A guest script printing `DISKS <serials>` (sorted; `DISKS` alone for none) whenever the set
/// of its persistent disks' `/dev/disk/by-id/virtio-<serial>` links changes (made and removed
/// on hot-plug and unplug, as udev does).
const WATCH_DISKS: &str = "#!/bin/sh\n\
    last=x\n\
    while :; do\n\
      now=$(for l in /dev/disk/by-id/virtio-*; do [ -b \"$l\" ] && echo \"${l##*/virtio-}\"; done | sort | tr '\\n' ' ')\n\
      if [ \"$now\" != \"$last\" ]; then echo \"DISKS $now\" | sed 's/ *$//'; last=$now; fi\n\
      sleep 0.05\n\
    done\n";

fn serial(id: &str) -> String {
    stratus_common::volumes::serial(id)
}

fn run_vm(cloud: &TestCloud, user: &str, disks: &[&str], user_data: &str) -> u64 {
    let vm = cloud
        .run_instance(
            user,
            json!({"image": "appliance", "type": "t1.micro", "persistent_disks": disks, "user_data": user_data}),
        )
        .unwrap();
    cloud
        .wait_state(user, vm.id, InstanceState::Running, BOOT)
        .unwrap();
    vm.id
}

fn kill(cloud: &TestCloud, user: &str, id: u64) {
    let (ok, _, err) = cli(cloud, user, &["kill-instance", &id.to_string()]);
    assert!(ok, "{err}");
    cloud
        .wait_state(user, id, InstanceState::Done, Duration::from_secs(60))
        .unwrap();
}

/// The guide's workflow (7.1 to 7.5), with the VM next to the disk or on another host (NBD).
fn guide_workflow(cloud: &TestCloud) {
    let disk = create_volume(cloud, "alice", &["--size=1", "--tag=myprivate-disk"]);
    let (_, listing, _) = cli(cloud, "alice", &["describe-volumes"]);
    assert!(listing.contains(&format!(":: DISK {disk}")), "{listing}");
    assert!(listing.contains("visibility: private"), "{listing}");
    assert!(listing.contains("tag: myprivate-disk"), "{listing}");
    assert!(listing.contains("owner: alice"), "{listing}");
    assert!(listing.contains("size: 1"), "{listing}");
    assert!(listing.contains("users: 0"), "{listing}");
    // Bob does not see alice's private disk.
    let (_, bobs, _) = cli(cloud, "bob", &["describe-volumes"]);
    assert!(!bobs.contains(&disk), "{bobs}");

    let write = with_disk(
        &serial(&disk),
        "mkfs.ext4 -q \"$dev\" 2>/dev/null || mke2fs -q \"$dev\"\n\
         mount \"$dev\" /mnt\n\
         echo Testing_Persistent_Disk > /mnt/test_pdisk\n\
         umount /mnt\n\
         sync\n\
         echo \"WROTE $dev\"",
    );
    let first = run_vm(cloud, "alice", &[&disk], &write);
    wait_console(cloud, first, "WROTE /dev/vd", BOOT);
    assert_eq!(volume(cloud, "alice", &disk)["users"], 1);
    // In use: the owner cannot delete it either.
    let (ok, _, err) = cli(cloud, "alice", &["delete-volume", &disk]);
    assert!(!ok);
    assert!(err.contains("in use by instance"), "{err}");
    kill(cloud, "alice", first);
    assert_eq!(volume(cloud, "alice", &disk)["users"], 0);

    let read = with_disk(
        &serial(&disk),
        "mount \"$dev\" /mnt\n\
         echo \"READ $(cat /mnt/test_pdisk)\"\n\
         umount /mnt",
    );
    let second = run_vm(cloud, "alice", &[&disk], &read);
    assert_eq!(
        wait_console(cloud, second, "READ", BOOT),
        "READ Testing_Persistent_Disk"
    );
    kill(cloud, "alice", second);

    // 7.5: only the owner deletes.
    let (ok, _, err) = cli(cloud, "bob", &["delete-volume", &disk]);
    assert!(!ok);
    assert!(err.contains(&format!("disk {disk} not found")), "{err}");
    cloud
        .stratus("alice", &["update-volume", "--public", &disk])
        .status
        .success()
        .then_some(())
        .expect("update-volume --public");
    let (ok, _, err) = cli(cloud, "bob", &["delete-volume", &disk]);
    assert!(!ok);
    assert!(
        err.contains(&format!("Not enough rights to delete disk {disk}")),
        "{err}"
    );
    let (ok, out, err) = cli(cloud, "alice", &["delete-volume", &disk]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("DELETED {disk}"));
    let file = cloud.dir.join(format!("agent/volumes/{disk}.raw"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while file.exists()
        || cloud.get("alice", &format!("/volumes/{disk}")).unwrap().0 == StatusCode::OK
    {
        assert!(Instant::now() < deadline, "disk not removed");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_guides_disk_workflow_keeps_data_across_vms() {
    let cloud = cloud("volumes-guide", "");
    guide_workflow(&cloud);
}

#[test]
fn the_guides_disk_workflow_works_from_another_host_over_nbd() {
    // The storage host takes no instances (it offers less memory than the smallest type), so
    // every VM runs on the second host and reaches its disk over NBD.
    // The second host's agent gives this libvirt its client certificate, as on a compute
    // host; what the directory held before comes back when the test ends.
    let _libvirt_client = stratus_e2e::SavedNbdClientDir::save();
    let mut cloud = cloud_offering("volumes-nbd", "", Some(64));
    cloud
        .start_second_agent(&format!(
            "reserved_memory_mib = 0\nnbd_client_tls_dir = \"{}\"",
            stratus_e2e::LIBVIRT_NBD_DIR
        ))
        .unwrap();
    let (status, hosts) = cloud.get("admin", "/hosts").unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(hosts.as_array().unwrap().len(), 2);
    guide_workflow_remote(&cloud);
}

/// The guide's workflow with the VMs on the second host: every VM must land there.
fn guide_workflow_remote(cloud: &TestCloud) {
    let disk = create_volume(cloud, "alice", &["--size=1", "--tag=remote"]);
    assert_eq!(
        volume(cloud, "alice", &disk)["host"],
        cloud.host_name.as_str()
    );
    let write = with_disk(
        &serial(&disk),
        "mkfs.ext4 -q \"$dev\" 2>/dev/null || mke2fs -q \"$dev\"\n\
         mount \"$dev\" /mnt\n\
         echo Over_NBD > /mnt/test_pdisk\n\
         umount /mnt\n\
         sync\n\
         echo \"WROTE $dev\"",
    );
    let vm = cloud
        .run_instance(
            "alice",
            json!({"image": "appliance", "type": "t1.micro", "persistent_disks": [disk], "user_data": write}),
        )
        .unwrap();
    let vm = cloud
        .wait_state("alice", vm.id, InstanceState::Running, BOOT)
        .unwrap();
    assert_eq!(vm.host.as_deref(), Some(cloud.host2_name().as_str()));
    let view = volume(cloud, "alice", &disk);
    assert_eq!(view["attachments"][0]["remote"], true, "{view}");
    wait_console(cloud, vm.id, "WROTE /dev/vd", BOOT);
    kill(cloud, "alice", vm.id);
    // Read it back, then watch the disks for a hot-plug over NBD.
    let read = with_disk(
        &serial(&disk),
        &format!(
            "mount \"$dev\" /mnt\n\
             echo \"READ $(cat /mnt/test_pdisk)\"\n\
             umount /mnt\n\
             set +e\n{}",
            WATCH_DISKS.trim_start_matches("#!/bin/sh\n")
        ),
    );
    let second = run_vm(cloud, "alice", &[&disk], &read);
    assert_eq!(wait_console(cloud, second, "READ", BOOT), "READ Over_NBD");
    wait_disks(cloud, second, &format!("DISKS {}", serial(&disk)), BOOT);
    exports_open_only_for_their_host(cloud);
    let extra = create_volume(cloud, "alice", &["--size=1", "--tag=hot"]);
    let id = second.to_string();
    let (ok, out, err) = cli(cloud, "alice", &["attach-volume", "-i", &id, &extra]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        format!("ATTACHED {extra} in VM {second} on /dev/vdc\n")
    );
    let mut both = [serial(&disk), serial(&extra)];
    both.sort();
    wait_disks(
        cloud,
        second,
        &format!("DISKS {} {}", both[0], both[1]),
        Duration::from_secs(30),
    );
    let (ok, out, err) = cli(cloud, "alice", &["detach-volume", "-i", &id, &extra]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("DETACHED {extra} from VM {second}")),
        "{out}"
    );
    wait_disks(
        cloud,
        second,
        &format!("DISKS {}", serial(&disk)),
        Duration::from_secs(30),
    );
    assert_eq!(volume(cloud, "alice", &extra)["users"], 0);
    kill(cloud, "alice", second);
    // No NBD server is left once nothing uses the disks.
    let pool = cloud.dir.join("agent/volumes");
    let deadline = Instant::now() + Duration::from_secs(20);
    while processes_naming(&pool.display().to_string()) > 0 {
        assert!(
            Instant::now() < deadline,
            "an NBD server outlived its attachment"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The storage host's running export (there is one, for the second host's instance), as
/// (name, port) from its record.
fn the_export(cloud: &TestCloud) -> (String, u16) {
    let dir = cloud.dir.join("agent/exports");
    let records: Vec<Value> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0];
    assert_eq!(record["client"], cloud.host2_name().as_str(), "{record}");
    (
        record["export"].as_str().unwrap().to_owned(),
        record["port"].as_u64().unwrap() as u16,
    )
}

/// Opens the export as `qemu-img` holding the certificate and key of the agent whose state
/// directory is `agent_dir`; the client's error when refused.
fn open_export_as(
    cloud: &TestCloud,
    agent_dir: &str,
    export: &str,
    port: u16,
) -> Result<(), String> {
    let creds = cloud.dir.join(format!("{agent_dir}-nbd-client"));
    std::fs::create_dir_all(&creds).unwrap();
    let tls = cloud.dir.join(agent_dir).join("tls");
    std::fs::copy(
        cloud.dir.join("controller/ca.pem"),
        creds.join("ca-cert.pem"),
    )
    .unwrap();
    std::fs::copy(tls.join("host.pem"), creds.join("client-cert.pem")).unwrap();
    std::fs::copy(tls.join("host.key"), creds.join("client-key.pem")).unwrap();
    let out = std::process::Command::new("qemu-img")
        .args([
            "info",
            "--object",
            &format!(
                "tls-creds-x509,id=tls0,dir={},endpoint=client",
                creds.display()
            ),
            "--image-opts",
            &format!(
                "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port={port},\
                 export={export},tls-creds=tls0,tls-hostname={}",
                cloud.host_name
            ),
        ])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The test: an export opened with another host's certificate (here the storage
/// host's own, a valid certificate of the same site) is refused, and so is a client with no
/// certificate; the host of the instance it serves opens it, and its guest keeps its disk
/// (the caller goes on using it).
fn exports_open_only_for_their_host(cloud: &TestCloud) {
    let (export, port) = the_export(cloud);
    open_export_as(cloud, "agent2", &export, port).expect("the rightful host opens its export");
    let err = open_export_as(cloud, "agent", &export, port).unwrap_err();
    assert!(err.contains("Could not open"), "{err}");
    let log =
        std::fs::read_to_string(cloud.dir.join(format!("agent/exports/{export}.log"))).unwrap();
    assert!(
        log.contains(&format!(
            "authz check for CN={},O=StratusLab,OU=stratuslab-host is denied",
            cloud.host_name
        )),
        "{log}"
    );
    let out = std::process::Command::new("qemu-img")
        .args(["info", &format!("nbd://127.0.0.1:{port}/{export}")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TLS negotiation required"), "{err}");
}

/// How many processes name `needle` on their command line.
fn processes_naming(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .count()
}

#[test]
fn hot_plugged_disks_appear_in_the_guest_and_leave_on_detach() {
    let cloud = cloud("volumes-hotplug", "");
    let a = create_volume(&cloud, "alice", &["--size=1", "--tag=a"]);
    let b = create_volume(&cloud, "alice", &["--size=1", "--tag=b"]);
    let vm = run_vm(&cloud, "alice", &[], WATCH_DISKS);
    wait_disks(&cloud, vm, "DISKS", BOOT);
    let id = vm.to_string();
    let (ok, out, err) = cli(&cloud, "alice", &["attach-volume", "-i", &id, &a, &b]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        format!("ATTACHED {a} in VM {vm} on /dev/vdb\nATTACHED {b} in VM {vm} on /dev/vdc\n")
    );
    let mut both = [serial(&a), serial(&b)];
    both.sort();
    wait_disks(
        &cloud,
        vm,
        &format!("DISKS {} {}", both[0], both[1]),
        Duration::from_secs(30),
    );
    assert_eq!(
        volume(&cloud, "alice", &a)["attachments"][0]["state"],
        "attached"
    );
    // A second instance cannot take a read-write disk in use.
    let other = run_vm(&cloud, "alice", &[], "#!/bin/sh\ntrue\n");
    let (ok, _, err) = cli(
        &cloud,
        "alice",
        &["attach-volume", "-i", &other.to_string(), &a],
    );
    assert!(!ok);
    assert!(err.contains("already attached to instance"), "{err}");

    let (ok, out, err) = cli(&cloud, "alice", &["detach-volume", "-i", &id, &a, &b]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("DETACHED {a} from VM {vm}")), "{out}");
    assert!(out.contains(&format!("DETACHED {b} from VM {vm}")), "{out}");
    wait_disks(&cloud, vm, "DISKS", Duration::from_secs(30));
    for disk in [&a, &b] {
        assert_eq!(volume(&cloud, "alice", disk)["users"], 0);
    }
    // Detaching a disk that is not attached is a clear error.
    let (ok, _, err) = cli(&cloud, "alice", &["detach-volume", "-i", &id, &a]);
    assert!(!ok);
    assert!(
        err.contains(&format!("DISK {a}: Disk is not attached to VM {vm}")),
        "{err}"
    );
    // Now free, the other instance can have it.
    let (ok, _, err) = cli(
        &cloud,
        "alice",
        &["attach-volume", "-i", &other.to_string(), &a],
    );
    assert!(ok, "{err}");
}

#[test]
fn of_two_concurrent_attaches_of_one_disk_exactly_one_wins() {
    let cloud = cloud("volumes-race", "");
    let disk = create_volume(&cloud, "alice", &["--size=1"]);
    let first = run_vm(&cloud, "alice", &[], "#!/bin/sh\ntrue\n");
    let second = run_vm(&cloud, "alice", &[], "#!/bin/sh\ntrue\n");
    let statuses: Vec<StatusCode> = std::thread::scope(|scope| {
        let handles: Vec<_> = [first, second]
            .into_iter()
            .map(|vm| {
                let (cloud, disk) = (&cloud, &disk);
                scope.spawn(move || {
                    cloud
                        .post(
                            "alice",
                            &format!("/instances/{vm}/volumes"),
                            &json!({"volume": disk}),
                        )
                        .unwrap()
                        .0
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut sorted = statuses.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [StatusCode::ACCEPTED, StatusCode::CONFLICT],
        "{statuses:?}"
    );
    assert_eq!(volume(&cloud, "alice", &disk)["users"], 1);
}

#[test]
fn a_guest_that_does_not_release_a_disk_keeps_it_detaching_then_stuck() {
    // A guest booted without ACPI cannot hear the unplug request.
    let cloud = cloud("volumes-stuck", "[volumes]\ndetach_timeout_secs = 5\n");
    let appliance = stratus_e2e::appliance().unwrap();
    let mut image =
        appliance.image_json("noacpi", &format!("file://{}", appliance.dir().display()));
    let cmdline = image["cmdline"]
        .as_str()
        .unwrap_or("console=ttyS0")
        .to_owned();
    image["cmdline"] = json!(format!("{cmdline} acpi=off"));
    cloud.register_image(&image).unwrap();
    let disk = create_volume(&cloud, "alice", &["--size=1"]);
    let vm = cloud
        .run_instance("alice", json!({"image": "noacpi", "type": "t1.micro"}))
        .unwrap();
    cloud
        .wait_state("alice", vm.id, InstanceState::Running, BOOT)
        .unwrap();
    cloud.wait_banner(vm.id, BOOT).unwrap();
    let id = vm.id.to_string();
    let mut events = EventStream::open(
        &cloud,
        "alice",
        &format!("?object=volume/{disk}&types=volume-"),
        None,
    )
    .unwrap();
    let (ok, _, err) = cli(&cloud, "alice", &["attach-volume", "-i", &id, &disk]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(
        &cloud,
        "alice",
        &["detach-volume", "-i", &id, "--timeout", "15", &disk],
    );
    assert!(!ok, "the detach claimed success");
    assert!(err.contains("has not released"), "{err}");
    let view = volume(&cloud, "alice", &disk);
    assert_eq!(view["attachments"][0]["state"], "stuck", "{view}");
    assert_eq!(view["users"], 1);
    // The event stream told of each step, and of the disk getting stuck.
    let told = events
        .until(Duration::from_secs(30), |e| e.kind == "volume-stuck")
        .unwrap();
    let kinds: Vec<&str> = told.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "volume-attaching",
            "volume-attached",
            "volume-detaching",
            "volume-stuck"
        ]
    );
    assert_eq!(told[3].details["instance"], vm.id);
    // Nobody else gets it meanwhile.
    let other = run_vm(&cloud, "alice", &[], "#!/bin/sh\ntrue\n");
    let (status, _) = cloud
        .post(
            "alice",
            &format!("/instances/{other}/volumes"),
            &json!({"volume": disk}),
        )
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT);
    // The user may force it off, explicitly.
    let (ok, _, err) = cli(
        &cloud,
        "alice",
        &["detach-volume", "-i", &id, "--force", &disk],
    );
    assert!(ok, "{err}");
    assert_eq!(volume(&cloud, "alice", &disk)["users"], 0);
}
