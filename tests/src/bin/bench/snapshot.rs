//! The replicated state's snapshot at the scale of a large site: 20,000 instances on 100
//! hosts, built by applying the commands, then encoded and decoded with the codec every Raft
//! snapshot goes through, and installed into a fresh fsynced store as a follower catching up
//! installs it (snapshot, configuration, hard state and log in one transaction).

use std::time::Instant;

use stratus_common::api::{Artifact, DiskFormat, DomainType};
use stratus_controller::codec;
use stratus_controller::replica::storage::DurableStorage;
use stratus_controller::state::{
    standard_types, Command, HostRecord, ImageRecord, State, UserRecord,
};

const HOSTS: usize = 100;
pub const INSTANCES: usize = 20_000;

/// A site of `hosts` hosts with [`INSTANCES`] instances spread over them (also the placement
/// bench's).
pub fn large_state(hosts: usize) -> anyhow::Result<State> {
    let mut state = State::default();
    let apply = |state: &mut State, command: Command| -> anyhow::Result<()> {
        state
            .apply(command)
            .map(drop)
            .map_err(|e| anyhow::anyhow!("{e}"))
    };
    apply(
        &mut state,
        Command::Bootstrap {
            cluster_id: "bench".into(),
            admin: UserRecord {
                name: "admin".into(),
                password_hash: "$argon2id$bench".into(),
                admin: true,
                created_ms: 1,
            },
            types: standard_types(),
            cpu_allocation_ratio_percent: 1600,
            first_member: None,
        },
    )?;
    for h in 0..hosts {
        apply(
            &mut state,
            Command::RegisterHost(HostRecord {
                name: format!("host-{h}"),
                vcpus: 64,
                memory_mib: 1 << 20,
                disk_gib: 1000,
                domain_type: DomainType::Qemu,
                arch: "x86_64".into(),
                hypervisor: "bench".into(),
                registered_ms: 2,
                volume_pool_gib: None,
            }),
        )?;
    }
    apply(
        &mut state,
        Command::RegisterImage(ImageRecord {
            name: "appliance".into(),
            format: DiskFormat::Qcow2,
            disk: Artifact {
                locations: vec!["http://images.example/appliance.qcow2".into()],
                sha256: "ab".repeat(32),
                size: Some(1 << 30),
                compression: Default::default(),
            },
            kernel: None,
            initrd: None,
            cmdline: None,
            owner: "admin".into(),
            created_ms: 3,
        }),
    )?;
    let spec = state.images["appliance"].spec();
    for i in 0..INSTANCES {
        apply(
            &mut state,
            Command::CreateInstance {
                owner: format!("user-{}", i % 500),
                name: Some(format!("vm-{i}")),
                image: "appliance".into(),
                image_spec: spec.clone(),
                instance_type: "m1.small".into(),
                host: Some(format!("host-{}", i % hosts)),
                failure: None,
                at_ms: 10 + i as u64,
                network: None,
                ssh_key: Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBench user@site".into()),
                user_data: None,
                volumes: Vec::new(),
                idempotency_key: Some(format!("key-{i}")),
            },
        )?;
    }
    Ok(state)
}

pub fn snapshot_bench() -> anyhow::Result<()> {
    println!("replicated state snapshot: {INSTANCES} instances on {HOSTS} hosts");
    let built = Instant::now();
    let state = large_state(HOSTS)?;
    println!(
        "  {:<34} {:>8.1} ms",
        "built by applying the commands",
        crate::ms(built.elapsed())
    );
    // JSON of the in-memory types (what state-machine version 1 wrote), for comparison.
    let started = Instant::now();
    let json = serde_json::to_vec(&state)?;
    let json_encode = started.elapsed();
    let started = Instant::now();
    let back: State = serde_json::from_slice(&json)?;
    let json_decode = started.elapsed();
    anyhow::ensure!(back == state, "the JSON did not decode to the same state");
    print_codec(
        "snapshot as JSON (version 1)",
        json.len(),
        json_encode,
        json_decode,
    );
    // What a snapshot is: bincode of the stored types, framed with version and checksum.
    let started = Instant::now();
    let bytes = codec::encode(&state);
    let encode = started.elapsed();
    let started = Instant::now();
    let back: State = codec::decode(&bytes)?;
    let decode = started.elapsed();
    anyhow::ensure!(
        back == state,
        "the snapshot did not decode to the same state"
    );
    print_codec("snapshot as bincode (framed)", bytes.len(), encode, decode);
    // Installed as a follower installs one: the store written and fsynced, the state decoded.
    // On the disk the tests use (a tmpfs /tmp would hide the fsync).
    std::fs::create_dir_all(stratus_e2e::TEST_ROOT)?;
    let dir = tempfile::tempdir_in(stratus_e2e::TEST_ROOT)?;
    let (store, _) = DurableStorage::open(&dir.path().join("raft.redb"), &[])?;
    let mut snapshot = raft::prelude::Snapshot {
        data: bytes.clone().into(),
        ..Default::default()
    };
    let meta = snapshot.mut_metadata();
    meta.index = 40_000;
    meta.term = 3;
    meta.mut_conf_state().voters = vec![1, 2, 3];
    let started = Instant::now();
    store.install_snapshot(&snapshot)?;
    let _: State = codec::decode(&snapshot.data)?;
    println!(
        "  {:<34} {:>8.1} ms",
        "installed on a follower (fsync)",
        crate::ms(started.elapsed())
    );
    Ok(())
}

fn print_codec(what: &str, len: usize, encode: std::time::Duration, decode: std::time::Duration) {
    println!(
        "  {:<34} {:>8.1} MiB   encode {:.1} ms   decode {:.1} ms",
        what,
        len as f64 / (1 << 20) as f64,
        crate::ms(encode),
        crate::ms(decode)
    );
}
