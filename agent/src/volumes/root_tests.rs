//! Tests against the real NBD server (`qemu-storage-daemon`) and QEMU's own NBD client
//! (`qemu-img`, `qemu-io`) over TLS, on loopback only, with certificates of a test site CA.
//! Every daemon a test starts is killed by pid by a guard when the test fails, and its files
//! are in the test's temporary directory.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use super::credentials::ServerCredentials;
use super::test_pki::TestPki;
use super::*;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const MIB: u64 = 1 << 20;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// An export name unique to this process and call.
fn unique(tag: &str) -> String {
    format!(
        "t{}-{tag}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A volume ID unique to this call.
fn volume_id() -> String {
    format!(
        "00000000-0000-4000-8000-{:06x}{:06x}",
        std::process::id() & 0xff_ffff,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

/// The storage host serving the exports, and the host they are made for.
const STORAGE: &str = "storage-a";
const CLIENT: &str = "compute-b";

/// A site CA with the storage host's server credentials and client credentials of the
/// rightful client host and of another host.
struct Tls {
    dir: tempfile::TempDir,
    server: ServerCredentials,
    client: PathBuf,
    other: PathBuf,
}

impl Tls {
    fn new() -> Self {
        let pki = TestPki::new();
        let dir = tempfile::tempdir().unwrap();
        let server = pki.server(&dir.path().join("server"), STORAGE);
        let client = pki.client_dir(&dir.path().join("client"), CLIENT);
        let other = pki.client_dir(&dir.path().join("other"), "compute-c");
        Self {
            dir,
            server,
            client,
            other,
        }
    }
}

/// The `--object` making the client's TLS credentials from a directory.
fn tls_object(client: &Path) -> String {
    format!(
        "tls-creds-x509,id=tls0,dir={},endpoint=client",
        client.display()
    )
}

/// The `--image-opts` of an NBD export over TLS, the server checked to be `server`; `prefix`
/// puts the NBD options under a format node (`file.`).
fn nbd_opts(name: &str, endpoint: &NbdEndpoint, server: &str, prefix: &str) -> String {
    [
        "driver=nbd".to_owned(),
        "server.type=inet".to_owned(),
        format!("server.host={}", endpoint.host),
        format!("server.port={}", endpoint.port),
        format!("export={name}"),
        "tls-creds=tls0".to_owned(),
        format!("tls-hostname={server}"),
    ]
    .iter()
    .map(|o| format!("{prefix}{o}"))
    .collect::<Vec<_>>()
    .join(",")
}

/// The export's size as a client holding the credentials in `client` sees it, or the
/// client's error.
fn size_as(client: &Path, name: &str, endpoint: &NbdEndpoint, server: &str) -> Result<u64, String> {
    let out = run(
        "qemu-img",
        &[
            "info",
            "--output=json",
            "--object",
            &tls_object(client),
            "--image-opts",
            &nbd_opts(name, endpoint, server, ""),
        ],
    );
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    Ok(info["virtual-size"].as_u64().unwrap())
}

/// The export's size as the rightful client sees it; `None` if it cannot be opened.
fn virtual_size(tls: &Tls, name: &str, endpoint: &NbdEndpoint) -> Option<u64> {
    size_as(&tls.client, name, endpoint, STORAGE).ok()
}

/// `qemu-io` commands on the export (raw), as the rightful client.
fn qemu_io(
    tls: &Tls,
    name: &str,
    endpoint: &NbdEndpoint,
    read_only: bool,
    commands: &[&str],
) -> Output {
    let object = tls_object(&tls.client);
    let opts = format!("driver=raw,{}", nbd_opts(name, endpoint, STORAGE, "file."));
    let mut args = vec!["--object", &object, "--image-opts"];
    if read_only {
        args.push("-r");
    }
    for command in commands {
        args.extend(["-c", command]);
    }
    args.push(&opts);
    run("qemu-io", &args)
}

fn alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped by a parent that is not us) is not alive.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().to_owned())
        })
        .is_some_and(|rest| !rest.starts_with('Z'))
}

/// Kills, by pid, every daemon of the test's state directory still running when the test
/// ends (failed or not): the pids in its pid files and records, checked to be
/// `qemu-storage-daemon` with a pid file in that directory.
struct KillGuard(PathBuf);

impl Drop for KillGuard {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.0) else {
            return;
        };
        let dir = self.0.to_string_lossy().into_owned();
        for entry in entries.flatten() {
            let Ok(text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            let pid = text.trim().parse::<u32>().ok().or_else(|| {
                serde_json::from_str::<serde_json::Value>(&text).ok()?["pid"]
                    .as_u64()
                    .and_then(|p| u32::try_from(p).ok())
            });
            let Some(pid) = pid.filter(|&p| p > 1) else {
                continue;
            };
            let ours = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains(nbd::PROGRAM) && c.contains(&dir)
            });
            if ours {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                let mut status = 0;
                // SAFETY: waitpid on one pid; ECHILD if it is not this process's child.
                unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
            }
        }
    }
}

/// `chattr +i` on a file, undone on drop (so the temporary directory can be removed).
struct Immutable<'a>(&'a Path);

impl<'a> Immutable<'a> {
    fn set(path: &'a Path) -> Self {
        let out = run("chattr", &["+i", path.to_str().unwrap()]);
        assert!(out.status.success(), "{out:?}");
        Self(path)
    }
}

impl Drop for Immutable<'_> {
    fn drop(&mut self) {
        let _ = run("chattr", &["-i", self.0.to_str().unwrap()]);
    }
}

#[test]
fn export_serves_the_volume_and_survives_an_agent_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let pool = VolumePool::open(&tmp.path().join("pool")).unwrap();
    let state = tmp.path().join("nbd");
    let _guard = KillGuard(state.clone());

    let rw_id = volume_id();
    let ro_id = volume_id();
    pool.create(&rw_id, 64 * MIB).unwrap();
    pool.create(&ro_id, 32 * MIB).unwrap();
    let rw_path = pool.path(&rw_id).unwrap();
    let ro_path = pool.path(&ro_id).unwrap();

    let tls = Tls::new();
    let exports = NbdExports::open(&state, LOCALHOST, tls.server.clone()).unwrap();
    let rw = unique("rw");
    let ro = unique("ro");
    let rw_end = exports.start(&rw, &rw_path, false, CLIENT).unwrap();
    let ro_end = exports.start(&ro, &ro_path, true, CLIENT).unwrap();
    assert_eq!(rw_end.host, "127.0.0.1");
    assert_ne!(rw_end.port, ro_end.port);

    // Idempotent for the same file and client, refused for another use of the name.
    assert_eq!(exports.start(&rw, &rw_path, false, CLIENT).unwrap(), rw_end);
    assert!(matches!(
        exports.start(&rw, &rw_path, true, CLIENT),
        Err(NbdError::Conflict { .. })
    ));
    assert!(matches!(
        exports.start(&rw, &rw_path, false, "compute-c"),
        Err(NbdError::OtherClient { client, .. }) if client == CLIENT
    ));

    assert_eq!(virtual_size(&tls, &rw, &rw_end), Some(64 * MIB));
    assert_eq!(virtual_size(&tls, &ro, &ro_end), Some(32 * MIB));
    // Only the exact name is served.
    assert_eq!(virtual_size(&tls, "other", &rw_end), None);

    // A write through the export is in the file once acknowledged and flushed.
    let out = qemu_io(&tls, &rw, &rw_end, false, &["write -P 0x5a 0 64k", "flush"]);
    assert!(out.status.success(), "{out:?}");
    let data = std::fs::read(&rw_path).unwrap();
    assert!(data[..64 * 1024].iter().all(|&b| b == 0x5a));
    assert!(data[64 * 1024..128 * 1024].iter().all(|&b| b == 0));

    // The read-only export refuses writes and the file stays zeros.
    let out = qemu_io(&tls, &ro, &ro_end, false, &["write -P 0x5a 0 64k"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("wrote 65536"), "{text}");
    assert!(std::fs::read(&ro_path).unwrap().iter().all(|&b| b == 0));
    let out = qemu_io(&tls, &ro, &ro_end, true, &["read -P 0 0 64k"]);
    assert!(out.status.success(), "{out:?}");

    // The agent restarts: the daemons keep running and are adopted with their endpoints
    // (also when the state directory is spelt differently).
    let pids = (exports.pid(&rw).unwrap(), exports.pid(&ro).unwrap());
    drop(exports);
    let exports = NbdExports::open(&state.join("."), LOCALHOST, tls.server.clone()).unwrap();
    let mut listed = exports.list();
    listed.sort();
    let mut expected = vec![(rw.clone(), rw_end.clone()), (ro.clone(), ro_end.clone())];
    expected.sort();
    assert_eq!(listed, expected);
    assert_eq!((exports.pid(&rw).unwrap(), exports.pid(&ro).unwrap()), pids);
    assert_eq!(exports.start(&rw, &rw_path, false, CLIENT).unwrap(), rw_end);
    // A client reconnects after the restart.
    assert_eq!(virtual_size(&tls, &rw, &rw_end), Some(64 * MIB));

    // Stopping ends the daemon and forgets the export; again is harmless.
    assert!(exports.stop(&rw).unwrap());
    assert!(!alive(pids.0), "pid {} still runs", pids.0);
    assert!(!exports.stop(&rw).unwrap());
    assert_eq!(virtual_size(&tls, &rw, &rw_end), None);
    assert!(exports.stop(&ro).unwrap());
    assert!(!alive(pids.1));
    assert!(exports.list().is_empty());
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0);
}

#[test]
fn failed_or_interrupted_starts_leave_nothing_running() {
    let tmp = tempfile::tempdir().unwrap();
    let pool = VolumePool::open(&tmp.path().join("pool")).unwrap();
    let state = tmp.path().join("nbd");
    let _guard = KillGuard(state.clone());
    let id = volume_id();
    pool.create(&id, 16 * MIB).unwrap();
    let path = pool.path(&id).unwrap();

    let tls = Tls::new();
    let exports = NbdExports::open(&state, LOCALHOST, tls.server.clone()).unwrap();
    let first = unique("a");
    exports.start(&first, &path, false, CLIENT).unwrap();

    // A second export of the file is refused while either is writable; read-only ones may
    // share it.
    let second = unique("b");
    assert!(matches!(
        exports.start(&second, &path, false, CLIENT),
        Err(NbdError::InUse { export, .. }) if export == first
    ));
    assert!(matches!(
        exports.start(&second, &path, true, CLIENT),
        Err(NbdError::InUse { .. })
    ));

    // The daemon cannot open the file (immutable, so not even root may write it): it exits,
    // the error carries its message, and nothing of that export remains.
    let other_id = volume_id();
    pool.create(&other_id, 16 * MIB).unwrap();
    let other = pool.path(&other_id).unwrap();
    let _immutable = Immutable::set(&other);
    let err = exports.start(&second, &other, false, CLIENT).unwrap_err();
    match &err {
        NbdError::Exited { stderr, .. } => {
            assert!(stderr.contains("not permitted"), "{stderr}")
        }
        other => panic!("unexpected error: {other}"),
    }
    assert!(exports.pid(&second).is_none());
    let names: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with(&second)), "{names:?}");
    assert_eq!(exports.list().len(), 1);
    // Read-only, it can be served.
    let third = unique("c");
    let endpoint = exports.start(&third, &other, true, CLIENT).unwrap();
    assert_eq!(virtual_size(&tls, &third, &endpoint), Some(16 * MIB));
    assert!(exports.stop(&third).unwrap());

    // A daemon that died behind the agent's back is noticed and started again.
    let pid = exports.pid(&first).unwrap();
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while exports.list().iter().any(|(n, _)| *n == first) {
        assert!(
            std::time::Instant::now() < deadline,
            "dead export still listed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let again = exports.start(&first, &path, false, CLIENT).unwrap();
    assert_eq!(virtual_size(&tls, &first, &again), Some(16 * MIB));

    // The agent dies after the daemon started but before its record was written: the next
    // open stops that daemon, which no caller was ever told of.
    let pid = exports.pid(&first).unwrap();
    drop(exports);
    std::fs::remove_file(state.join(format!("{first}.json"))).unwrap();
    assert!(alive(pid));
    let exports = NbdExports::open(&state, LOCALHOST, tls.server.clone()).unwrap();
    assert!(!alive(pid), "unrecorded daemon {pid} still runs");
    assert!(exports.list().is_empty());
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0);
}

/// The issue's test: an export opened with another host's certificate is refused, and so is
/// every client that is not the host it was made for; the rightful host still reads it.
#[test]
fn an_export_opens_only_for_the_host_it_was_made_for() {
    let tmp = tempfile::tempdir().unwrap();
    let pool = VolumePool::open(&tmp.path().join("pool")).unwrap();
    let state = tmp.path().join("nbd");
    let _guard = KillGuard(state.clone());
    let id = volume_id();
    pool.create(&id, 16 * MIB).unwrap();
    let tls = Tls::new();
    let exports = NbdExports::open(&state, LOCALHOST, tls.server.clone()).unwrap();
    let name = unique("authz");
    let endpoint = exports
        .start(&name, &pool.path(&id).unwrap(), false, CLIENT)
        .unwrap();
    let log = || std::fs::read_to_string(state.join(format!("{name}.log"))).unwrap();
    assert_eq!(
        size_as(&tls.client, &name, &endpoint, STORAGE),
        Ok(16 * MIB),
        "{}",
        log()
    );

    // Another host of the same site: its certificate is valid, but not the one allowed.
    let err = size_as(&tls.other, &name, &endpoint, STORAGE).unwrap_err();
    assert!(err.contains("Could not open"), "{err}");
    let log = std::fs::read_to_string(state.join(format!("{name}.log"))).unwrap();
    assert!(
        log.contains("authz check for CN=compute-c,O=StratusLab,OU=stratuslab-host is denied"),
        "{log}"
    );
    // No certificate at all: the server insists on TLS.
    let out = run(
        "qemu-img",
        &[
            "info",
            &format!("nbd://{}:{}/{name}", endpoint.host, endpoint.port),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TLS negotiation required"), "{err}");
    // The rightful host's name on a certificate from another CA.
    let foreign = TestPki::new().client_dir(&tls.dir.path().join("foreign"), CLIENT);
    assert!(size_as(&foreign, &name, &endpoint, STORAGE).is_err());
    // The client checks the server too: a server that is not the storage host it expects.
    let err = size_as(&tls.client, &name, &endpoint, "storage-z").unwrap_err();
    assert!(
        err.contains("does not match the hostname storage-z"),
        "{err}"
    );

    // None of that disturbed the export: the rightful host reads and writes.
    let out = qemu_io(
        &tls,
        &name,
        &endpoint,
        false,
        &["write -P 0x3c 0 4k", "read -P 0x3c 0 4k"],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(exports.stop(&name).unwrap());
}

#[test]
fn pool_file_paths_are_what_the_export_serves() {
    // The pool and the exports agree on what a volume is: a raw file of the volume's size.
    let tmp = tempfile::tempdir().unwrap();
    let pool = VolumePool::open(tmp.path()).unwrap();
    let id = volume_id();
    pool.create(&id, 8 * MIB).unwrap();
    let out = run(
        "qemu-img",
        &[
            "info",
            "--output=json",
            pool.path(&id).unwrap().to_str().unwrap(),
        ],
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["format"], "raw");
    assert_eq!(info["virtual-size"], 8 * MIB);
    assert!(Path::new(&pool.path(&id).unwrap()).exists());
}
