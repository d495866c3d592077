//! Images through the host's cache, served over HTTP on loopback: checksums are enforced, bad
//! images (a wrong checksum, a backing file, a format other than declared, a decompression
//! bomb) never enter the cache, concurrent starts share one download, a download cut short by
//! a crash is never used, and eviction never takes a base that an instance uses.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use stratus_common::api::InstanceState;
use stratus_e2e::image_server::ImageServer;
use stratus_e2e::{appliance, sha256_file, TestCloud, TEST_ROOT};

const BOOT: Duration = Duration::from_secs(120);

/// A server serving the appliance's three files.
fn appliance_server() -> (ImageServer, stratus_e2e::Appliance) {
    let a = appliance().unwrap();
    let server = ImageServer::start().unwrap();
    for file in ["disk.qcow2", "vmlinuz", "initrd.img"] {
        server.serve_file(&format!("/{file}"), &a.dir().join(file));
    }
    (server, a)
}

fn wait_failed(cloud: &TestCloud, id: u64) -> String {
    let deadline = Instant::now() + BOOT;
    loop {
        let vm = cloud.instance("admin", id).unwrap();
        if vm.state == InstanceState::Failed {
            return vm.reason.unwrap_or_default();
        }
        assert!(
            Instant::now() < deadline && !vm.state.is_terminal(),
            "instance {id} is {}",
            vm.state
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tmp_files(cloud: &TestCloud) -> usize {
    std::fs::read_dir(cloud.image_cache().join("tmp")).map_or(0, |d| d.count())
}

#[test]
fn a_corrupted_image_fails_with_checksum_mismatch_and_nothing_enters_the_cache() {
    let cloud = TestCloud::with_agent("corrupt").unwrap();
    let (server, a) = appliance_server();
    let corrupted = cloud.dir.join("corrupted.qcow2");
    let mut bytes = std::fs::read(&a.disk).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&corrupted, bytes).unwrap();
    server.serve_file("/corrupted.qcow2", &corrupted);
    let mut image = a.image_json("corrupt", &server.base());
    image["disk"]["locations"] = json!([server.url("/corrupted.qcow2")]);
    cloud.register_image(&image).unwrap();

    let vm = cloud
        .run_instance("admin", json!({"image": "corrupt", "type": "t1.micro"}))
        .unwrap();
    assert_eq!(wait_failed(&cloud, vm.id), "image checksum mismatch");
    assert!(
        !cloud.cached().contains(&a.sha256),
        "the bad disk is not in the cache"
    );
    assert_eq!(tmp_files(&cloud), 0, "no partial file left");
    assert!(cloud.domains().is_empty());
}

#[test]
fn a_gzip_bomb_and_a_disk_of_another_format_than_declared_fail_and_leave_nothing_cached() {
    let mut cloud = TestCloud::start("bomb").unwrap();
    // Images that declare no size may have 64 MiB here.
    cloud
        .set_agent_option("max_image_bytes", "67108864")
        .unwrap();
    cloud.start_agent().unwrap();
    let (server, a) = appliance_server();
    // 1 GiB of zeros is about 1 MiB of gzip.
    let bomb = cloud.dir.join("bomb.raw.gz");
    let mut encoder = flate2::write::GzEncoder::new(
        std::fs::File::create(&bomb).unwrap(),
        flate2::Compression::best(),
    );
    let zeros = vec![0u8; 1 << 20];
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    for _ in 0..1024 {
        std::io::Write::write_all(&mut encoder, &zeros).unwrap();
        sha2::Digest::update(&mut hasher, &zeros);
    }
    encoder.finish().unwrap();
    let bomb_sha = stratus_common::hex::encode(sha2::Digest::finalize(hasher));
    server.serve_file("/bomb.raw.gz", &bomb);
    let mut image = a.image_json("bomb", &server.base());
    image["format"] = json!("raw");
    image["disk"] = json!({"locations": [server.url("/bomb.raw.gz")], "sha256": bomb_sha, "compression": "gzip"});
    cloud.register_image(&image).unwrap();
    // The appliance's qcow2 disk, declared raw.
    let mut image = a.image_json("liar", &server.base());
    image["format"] = json!("raw");
    cloud.register_image(&image).unwrap();

    let vm = cloud
        .run_instance("admin", json!({"image": "bomb", "type": "t1.micro"}))
        .unwrap();
    let reason = wait_failed(&cloud, vm.id);
    assert_eq!(
        reason,
        "image larger than 67108864 bytes, the most accepted for an image that declares no size (max_image_bytes)"
    );
    let vm = cloud
        .run_instance("admin", json!({"image": "liar", "type": "t1.micro"}))
        .unwrap();
    assert_eq!(
        wait_failed(&cloud, vm.id),
        "image format mismatch: declared raw, found qcow2"
    );
    assert!(
        !cloud.cached().contains(&a.sha256) && !cloud.cached().contains(&bomb_sha),
        "neither disk is in the cache: {:?}",
        cloud.cached()
    );
    assert_eq!(tmp_files(&cloud), 0, "no partial file left");
    assert!(cloud.domains().is_empty());
}

#[test]
fn a_qcow2_with_a_backing_file_is_refused() {
    let cloud = TestCloud::with_agent("backing").unwrap();
    let a = appliance().unwrap();
    let evil = cloud.dir.join("evil.qcow2");
    let status = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&a.disk)
        .arg(&evil)
        .status()
        .unwrap();
    assert!(status.success());
    let mut image = a.image_json("evil", &format!("file://{}", a.dir().display()));
    image["disk"] = json!({"locations": [format!("file://{}", evil.display())], "sha256": sha256_file(&evil).unwrap()});
    cloud.register_image(&image).unwrap();
    let vm = cloud
        .run_instance("admin", json!({"image": "evil", "type": "t1.micro"}))
        .unwrap();
    let reason = wait_failed(&cloud, vm.id);
    assert!(reason.contains("backing file"), "{reason}");
    assert!(cloud.domains().is_empty());
    assert_eq!(tmp_files(&cloud), 0);
}

#[test]
fn twenty_concurrent_starts_of_one_uncached_image_make_one_request_and_all_run() {
    let cloud = TestCloud::with_agent("storm").unwrap();
    let (server, a) = appliance_server();
    // Slow enough that all twenty starts arrive while the one download runs.
    server.throttle("/disk.qcow2", 1 << 20);
    cloud
        .register_image(&a.image_json("storm", &server.base()))
        .unwrap();
    let ids: Vec<u64> = (0..20)
        .map(|_| {
            cloud
                .run_instance("admin", json!({"image": "storm", "type": "t1.micro"}))
                .unwrap()
                .id
        })
        .collect();
    for &id in &ids {
        cloud
            .wait_state("admin", id, InstanceState::Running, BOOT)
            .unwrap();
    }
    assert_eq!(
        server.requests("/disk.qcow2"),
        1,
        "one download of the disk"
    );
    assert_eq!(server.requests("/vmlinuz"), 1);
    assert_eq!(server.requests("/initrd.img"), 1);
    assert_eq!(cloud.domains().len(), 20);
    for &id in &ids {
        cloud.delete("admin", &format!("/instances/{id}")).unwrap();
    }
    for &id in &ids {
        cloud
            .wait_state("admin", id, InstanceState::Done, BOOT)
            .unwrap();
    }
    assert!(cloud.domains().is_empty());
}

#[test]
fn an_agent_killed_mid_download_leaves_no_usable_partial_and_the_next_start_completes() {
    let mut cloud = TestCloud::with_agent("mid-download").unwrap();
    let (server, a) = appliance_server();
    // About 9 s for the ~1 MB disk: time to kill the agent in the middle.
    server.throttle("/disk.qcow2", 100 << 10);
    cloud
        .register_image(&a.image_json("slow", &server.base()))
        .unwrap();
    let vm = cloud
        .run_instance("admin", json!({"image": "slow", "type": "t1.micro"}))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while tmp_files(&cloud) == 0 {
        assert!(Instant::now() < deadline, "the download never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    cloud.kill_agent();
    assert!(
        !cloud.cached().contains(&a.sha256),
        "a partial download is never published"
    );
    assert_eq!(
        cloud.instance("admin", vm.id).unwrap().state,
        InstanceState::Booting
    );

    cloud.start_agent().unwrap();
    cloud
        .wait_state("admin", vm.id, InstanceState::Running, BOOT)
        .unwrap();
    let banner = cloud.wait_banner(vm.id, BOOT).unwrap();
    assert!(banner.contains("disk=ok"), "{banner}");
    assert_eq!(
        server.requests("/disk.qcow2"),
        2,
        "fetched again from the start"
    );
    assert!(cloud.cached().contains(&a.sha256));
    assert_eq!(tmp_files(&cloud), 0, "the partial file was dropped");
}

#[test]
fn eviction_never_removes_a_base_in_use() {
    let mut cloud = TestCloud::start("evict").unwrap();
    // A budget far below one image: everything not in use is evicted at once.
    cloud.set_agent_option("image_cache_bytes", "1").unwrap();
    cloud.start_agent().unwrap();
    let a = cloud.register_appliance("appliance").unwrap();
    // A second image: the same disk converted to raw (other bytes, other digest).
    let raw = std::path::Path::new(TEST_ROOT).join(format!("evict-raw-{}.img", std::process::id()));
    let status = Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(&a.disk)
        .arg(&raw)
        .status()
        .unwrap();
    assert!(status.success());
    let raw_sha = sha256_file(&raw).unwrap();
    let mut image = a.image_json("appliance-raw", &format!("file://{}", a.dir().display()));
    image["format"] = json!("raw");
    let size = std::fs::metadata(&raw).unwrap().len();
    image["disk"] = json!({"locations": [format!("file://{}", raw.display())], "sha256": raw_sha, "size": size});
    cloud.register_image(&image).unwrap();

    let first = cloud
        .run_instance("admin", json!({"image": "appliance", "type": "t1.micro"}))
        .unwrap();
    cloud
        .wait_state("admin", first.id, InstanceState::Running, BOOT)
        .unwrap();
    let second = cloud
        .run_instance(
            "admin",
            json!({"image": "appliance-raw", "type": "t1.micro"}),
        )
        .unwrap();
    cloud
        .wait_state("admin", second.id, InstanceState::Running, BOOT)
        .unwrap();
    // Both bases are in use: far over budget, neither is evicted.
    assert!(cloud.cached().contains(&a.sha256));
    assert!(cloud.cached().contains(&raw_sha));

    cloud
        .delete("admin", &format!("/instances/{}", first.id))
        .unwrap();
    cloud
        .wait_state("admin", first.id, InstanceState::Done, BOOT)
        .unwrap();
    let cached = cloud.cached();
    assert!(!cached.contains(&a.sha256), "the unused base is evicted");
    assert!(cached.contains(&raw_sha), "the base in use stays");
    assert!(
        cached.contains(&a.kernel_sha256),
        "the kernel is still used by the second instance"
    );
    // The guest on the kept base still runs and reads its disk.
    assert!(cloud
        .wait_banner(second.id, BOOT)
        .unwrap()
        .contains("disk=ok"));
    let _ = std::fs::remove_file(raw);
}

#[test]
fn an_admin_precaches_an_image_so_starts_need_no_download_and_it_stays_until_unpinned() {
    let mut cloud = TestCloud::start("precache").unwrap();
    // A budget far below one image: only what is in use or pinned stays.
    cloud.set_agent_option("image_cache_bytes", "1").unwrap();
    cloud.start_agent().unwrap();
    cloud.create_user("alice").unwrap();
    let (server, a) = appliance_server();
    cloud
        .register_image(&a.image_json("pre", &server.base()))
        .unwrap();
    let host = cloud.host_name.clone();

    let (status, body) = cloud
        .post(
            "alice",
            &format!("/hosts/{host}/images"),
            &json!({"image": "pre"}),
        )
        .unwrap();
    assert_eq!(status, 403, "{body}");
    let (status, body) = cloud
        .post(
            "admin",
            &format!("/hosts/{host}/images"),
            &json!({"image": "pre"}),
        )
        .unwrap();
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["precache"], json!([a.sha256]));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, hosts) = cloud.get("admin", "/hosts").unwrap();
        if hosts[0]["images"]
            .as_array()
            .unwrap()
            .contains(&json!(a.sha256))
        {
            break;
        }
        assert!(Instant::now() < deadline, "never reported as held: {hosts}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(server.requests("/disk.qcow2"), 1);

    // Starting and killing an instance needs no download, and the pinned image outlives it.
    let run_and_kill = |cloud: &TestCloud| {
        let vm = cloud
            .run_instance("admin", json!({"image": "pre", "type": "t1.micro"}))
            .unwrap();
        cloud
            .wait_state("admin", vm.id, InstanceState::Running, BOOT)
            .unwrap();
        cloud
            .delete("admin", &format!("/instances/{}", vm.id))
            .unwrap();
        cloud
            .wait_state("admin", vm.id, InstanceState::Done, BOOT)
            .unwrap();
    };
    run_and_kill(&cloud);
    assert_eq!(
        server.requests("/disk.qcow2"),
        1,
        "served from the pre-cached copy"
    );
    assert!(
        cloud.cached().contains(&a.sha256),
        "pinned: not evicted despite the budget"
    );

    // Unpinned, it goes at the next eviction.
    let (status, body) = cloud
        .delete("admin", &format!("/hosts/{host}/images/{}", a.sha256))
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["precache"], json!([]));
    let (status, _) = cloud
        .delete("admin", &format!("/hosts/{host}/images/{}", a.sha256))
        .unwrap();
    assert_eq!(status, 404);
    std::thread::sleep(Duration::from_secs(3));
    run_and_kill(&cloud);
    assert!(
        !cloud.cached().contains(&a.sha256),
        "evicted once unpinned and unused"
    );
}
