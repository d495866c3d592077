//! NBD exports of pool volumes, for instances on other hosts: one `qemu-storage-daemon` per
//! export (so per attachment), serving one raw file under one name.
//!
//! - No port race: the agent binds the listening socket itself (port 0, the kernel picks a
//!   free port) and hands it to the daemon as an inherited file descriptor
//!   (`--nbd-server addr.type=fd`); nothing else can take the port between choosing and
//!   listening.
//! - Readiness: the daemon writes its pid file only once its export and server exist, so a
//!   pid file holding the child's pid means ready; exiting first means it failed, and its
//!   standard error (kept in `<name>.log`) says why.
//! - Durability: the file is opened with `O_DIRECT` where the file system has it (no page
//!   cache between the export and the disk) and flushes are honoured (`no-flush` off), so a
//!   FLUSH (or FUA write) from the guest returns only after fdatasync on the file. The guest
//!   sees a volatile write cache and sends those flushes, as with a local disk.
//! - Reconnects: the daemon keeps listening for as long as it runs and serves any number of
//!   connections, so a client that lost its connection connects again.
//! - Agent restarts: a daemon runs in its own process group and outlives the agent (the guest
//!   keeps its disk). Each export is recorded in `<state_dir>/<name>.json` (pid, port, name,
//!   file); [`NbdExports::open`] re-adopts a record only if its pid still runs
//!   `qemu-storage-daemon` with that export's pid file and export arguments
//!   (`/proc/<pid>/cmdline`), and drops the others. Only recorded pids are ever signalled.
//!
//! - Trust: every export is served over TLS with the host's certificate (see
//!   [`super::credentials`]), and opens only for the client host it was made for: the
//!   daemon verifies the client's certificate against the site CA and checks its subject
//!   against an authorization list of that one host (`authz-simple`). A client without a
//!   certificate, with another CA's, or with another host's is refused during the handshake
//!   (the daemon's log says which subject was denied). Exports a previous version started
//!   without TLS are adopted as they are, so a running guest keeps its disk across the
//!   upgrade; they end with their attachment.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::credentials::ServerCredentials;

/// The NBD server program, found on `PATH`.
pub const PROGRAM: &str = "qemu-storage-daemon";

/// How long a daemon may take to set up its export (it takes a few milliseconds).
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a daemon may take to exit after SIGTERM before it gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
const KILL_WAIT: Duration = Duration::from_secs(5);
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// The descriptor number the daemon finds its listening socket under.
const LISTEN_FD: RawFd = 3;
const MAX_EXPORT_NAME: usize = 128;

/// Whether `name` may name an export: 1 to 128 characters of `[A-Za-z0-9_-]`. The name is
/// also a file name in the state directory and goes into domain XML.
pub fn is_export_name(name: &str) -> bool {
    (1..=MAX_EXPORT_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Where clients reach an export.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NbdEndpoint {
    /// The address the server listens on.
    pub host: String,
    pub port: u16,
}

/// Why an export could not be started, stopped or read back.
#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    #[error("NBD export name {0:?} is not 1 to 128 characters of [A-Za-z0-9_-]")]
    InvalidName(String),
    #[error("NBD listen address {0} is unspecified: clients need an address to connect to")]
    UnspecifiedListen(IpAddr),
    #[error("NBD export {name}: {client:?} is not a host name")]
    InvalidClient { name: String, client: String },
    #[error("no TLS credentials in {0} yet: the host's certificate is installed there first")]
    NoCredentials(PathBuf),
    #[error("{0} is not an absolute UTF-8 path")]
    InvalidPath(PathBuf),
    #[error("{0} is not a regular file")]
    NotAFile(PathBuf),
    #[error("export {name} already serves {path} (read-only: {read_only})")]
    Conflict {
        name: String,
        path: PathBuf,
        read_only: bool,
    },
    #[error("export {name} already opens for host {client}")]
    OtherClient { name: String, client: String },
    #[error("{path} is already exported by {export}, and one of the two is writable")]
    InUse { path: PathBuf, export: String },
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot run {PROGRAM}")]
    Spawn(#[source] io::Error),
    #[error("{PROGRAM} for export {name} exited ({status}): {stderr}")]
    Exited {
        name: String,
        status: String,
        stderr: String,
    },
    #[error("{PROGRAM} for export {name} was not ready within {timeout:?}")]
    NotReady { name: String, timeout: Duration },
    #[error("{PROGRAM} (pid {pid}) for export {name} does not exit")]
    StillRunning { name: String, pid: u32 },
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> NbdError + 'a {
    move |source| NbdError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// What `<state_dir>/<name>.json` holds about one running export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    export: String,
    path: PathBuf,
    read_only: bool,
    pid: u32,
    host: String,
    port: u16,
    /// The only host it opens for, over TLS; `None`: a plain export a previous version made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client: Option<String>,
}

impl Record {
    fn endpoint(&self) -> NbdEndpoint {
        NbdEndpoint {
            host: self.host.clone(),
            port: self.port,
        }
    }
}

/// The running exports of one host, each a `qemu-storage-daemon` this type started (or
/// adopted after a restart). Operations are serialised; `stop` may take a few seconds.
#[derive(Debug)]
pub struct NbdExports {
    dir: PathBuf,
    listen: IpAddr,
    credentials: ServerCredentials,
    exports: Mutex<BTreeMap<String, Record>>,
}

impl NbdExports {
    /// Opens the state directory (created 0700 if missing), adopts the exports whose daemon
    /// still runs, drops the records of the others, and stops daemons whose start never
    /// completed (a pid file but no record: the agent died in between). New exports listen
    /// on `listen`, which is also the host clients are told to connect to, and present the
    /// certificate in `credentials`.
    pub fn open(
        state_dir: &Path,
        listen: IpAddr,
        credentials: ServerCredentials,
    ) -> Result<Self, NbdError> {
        if listen.is_unspecified() {
            return Err(NbdError::UnspecifiedListen(listen));
        }
        std::fs::create_dir_all(state_dir).map_err(io_error("create", state_dir))?;
        std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_error("set the mode of", state_dir))?;
        // Daemons are recognised by the pid file path on their command line: the same
        // directory named differently (a trailing slash, a symbolic link) must not make
        // running exports unrecognisable.
        let dir = std::fs::canonicalize(state_dir).map_err(io_error("resolve", state_dir))?;
        let this = Self {
            dir,
            listen,
            credentials,
            exports: Mutex::new(BTreeMap::new()),
        };
        let mut adopted = BTreeMap::new();
        let mut pid_files = Vec::new();
        for entry in std::fs::read_dir(&this.dir).map_err(io_error("read", &this.dir))? {
            let entry = entry.map_err(io_error("read", &this.dir))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(export) = name.strip_suffix(".json").filter(|n| is_export_name(n)) {
                match this.read_record(&path) {
                    Some(record) if record.export == export && this.runs(&record) => {
                        tracing::info!(
                            export,
                            pid = record.pid,
                            port = record.port,
                            "adopted a running NBD export"
                        );
                        adopted.insert(export.to_owned(), record);
                    }
                    _ => {
                        tracing::warn!(
                            export,
                            "dropping the record of an NBD export that no longer runs"
                        );
                        // Its pid file may still name a daemon of this export (one whose
                        // record was never rewritten): stop that one too.
                        this.stop_unrecorded(export)?;
                    }
                }
            } else if let Some(export) = name.strip_suffix(".pid").filter(|n| is_export_name(n)) {
                pid_files.push(export.to_owned());
            } else if name.starts_with('.') && name.ends_with(".tmp") {
                remove_file(&path)?;
            }
        }
        for export in pid_files {
            if !adopted.contains_key(&export) {
                this.stop_unrecorded(&export)?;
            }
        }
        *this.lock() = adopted;
        Ok(this)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Record>> {
        self.exports.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record_path(&self, export: &str) -> PathBuf {
        self.dir.join(format!("{export}.json"))
    }

    fn pid_path(&self, export: &str) -> PathBuf {
        self.dir.join(format!("{export}.pid"))
    }

    fn log_path(&self, export: &str) -> PathBuf {
        self.dir.join(format!("{export}.log"))
    }

    fn read_record(&self, path: &Path) -> Option<Record> {
        let text = std::fs::read(path).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Writes the record durably (temporary file, fsync, rename, fsync of the directory).
    fn write_record(&self, record: &Record) -> Result<(), NbdError> {
        let path = self.record_path(&record.export);
        let tmp = self.dir.join(format!(".{}.json.tmp", record.export));
        let text =
            serde_json::to_vec_pretty(record).map_err(|e| io_error("encode", &path)(e.into()))?;
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_error("create", &tmp))?;
        file.write_all(&text)
            .and_then(|()| file.sync_all())
            .map_err(io_error("write", &tmp))?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(io_error("rename", &tmp))?;
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<(), NbdError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error("fsync", &self.dir))
    }

    /// Removes an export's record, pid file and log.
    fn remove_files(&self, export: &str) -> Result<(), NbdError> {
        remove_file(&self.record_path(export))?;
        remove_file(&self.pid_path(export))?;
        remove_file(&self.log_path(export))?;
        self.sync_dir()
    }

    /// Whether the record's pid is a live `qemu-storage-daemon` serving this very export.
    fn runs(&self, record: &Record) -> bool {
        let expected = [
            "--export".to_owned(),
            export_arg(&record.export, record.read_only),
        ];
        self.runs_with(record.pid, &record.export, &expected)
    }

    /// Whether `pid` is a live `qemu-storage-daemon` with this export's pid file (and the
    /// `expected` consecutive arguments). A reused pid fails this: no other process has our
    /// pid file path on its command line.
    fn runs_with(&self, pid: u32, export: &str, expected: &[String]) -> bool {
        reap(pid);
        let Some(args) = live_cmdline(pid) else {
            return false;
        };
        let program = args
            .first()
            .and_then(|a| Path::new(a).file_name())
            .and_then(|n| n.to_str());
        let pid_file = self.pid_path(export);
        let pid_arg = [
            "--pidfile".to_owned(),
            pid_file.to_string_lossy().into_owned(),
        ];
        program == Some(PROGRAM)
            && args.windows(2).any(|w| w == pid_arg)
            && (expected.is_empty() || args.windows(expected.len()).any(|w| w == expected))
    }

    /// A daemon that wrote its pid file but never got a record (the agent died during the
    /// start): no caller was told of it, so it is stopped.
    fn stop_unrecorded(&self, export: &str) -> Result<(), NbdError> {
        let pid_file = self.pid_path(export);
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok());
        if let Some(pid) = pid.filter(|&p| self.runs_with(p, export, &[])) {
            tracing::warn!(
                export,
                pid,
                "stopping an NBD export whose start never completed"
            );
            terminate(pid, export, || self.runs_with(pid, export, &[]))?;
        }
        self.remove_files(export)
    }

    /// Serves the raw file at `path` as export `name` on a fresh port, read-only if asked,
    /// over TLS to host `client` only. Idempotent: an export of that name already serving
    /// that file the same way is returned as it is; one serving something else is a
    /// [`NbdError::Conflict`]. A failed start leaves no process and no record.
    pub fn start(
        &self,
        name: &str,
        path: &Path,
        read_only: bool,
        client: &str,
    ) -> Result<NbdEndpoint, NbdError> {
        if !is_export_name(name) {
            return Err(NbdError::InvalidName(name.to_owned()));
        }
        if stratus_common::names::validate_name("client", client).is_err() {
            return Err(NbdError::InvalidClient {
                name: name.to_owned(),
                client: client.to_owned(),
            });
        }
        let path_text = path
            .to_str()
            .filter(|_| path.is_absolute())
            .ok_or_else(|| NbdError::InvalidPath(path.to_path_buf()))?;
        let mut exports = self.lock();
        if let Some(record) = exports.get(name) {
            if self.runs(record) {
                if record.path == path && record.read_only == read_only {
                    match record.client.as_deref() {
                        Some(c) if c == client => return Ok(record.endpoint()),
                        Some(c) => {
                            return Err(NbdError::OtherClient {
                                name: name.to_owned(),
                                client: c.to_owned(),
                            })
                        }
                        None => {
                            tracing::warn!(
                                export = name,
                                "export started without TLS by a previous version: kept \
                                 for its guest until its attachment ends"
                            );
                            return Ok(record.endpoint());
                        }
                    }
                }
                return Err(NbdError::Conflict {
                    name: name.to_owned(),
                    path: record.path.clone(),
                    read_only: record.read_only,
                });
            }
            tracing::warn!(
                export = name,
                pid = record.pid,
                "NBD export died; starting it again"
            );
            exports.remove(name);
        }
        // QEMU's image locking does not stop two NBD exports (each shares write access) from
        // writing one file, so a file is exported by several names only read-only.
        if let Some(other) = exports
            .values()
            .find(|r| r.path == path && (!r.read_only || !read_only) && self.runs(r))
        {
            return Err(NbdError::InUse {
                path: path.to_path_buf(),
                export: other.export.clone(),
            });
        }
        self.remove_files(name)?;
        if !self.credentials.installed() {
            return Err(NbdError::NoCredentials(self.credentials.dir().to_owned()));
        }
        let credentials_dir = self
            .credentials
            .dir()
            .to_str()
            .ok_or_else(|| NbdError::InvalidPath(self.credentials.dir().to_owned()))?;

        let meta = std::fs::metadata(path).map_err(io_error("inspect", path))?;
        if !meta.is_file() {
            return Err(NbdError::NotAFile(path.to_path_buf()));
        }
        let direct = supports_direct_io(path)?;
        if !direct {
            tracing::warn!(path = %path.display(),
                "the file system has no O_DIRECT: the NBD export goes through the page cache");
        }

        let addr = SocketAddr::new(self.listen, 0);
        let listener =
            TcpListener::bind(addr).map_err(|source| NbdError::Listen { addr, source })?;
        let port = listener
            .local_addr()
            .map_err(|source| NbdError::Listen { addr, source })?
            .port();
        let log_path = self.log_path(name);
        let log = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(io_error("create", &log_path))?;
        let pid_path = self.pid_path(name);
        let mut command = Command::new(PROGRAM);
        command
            .arg("--object")
            .arg(tls_object_arg(credentials_dir))
            .arg("--object")
            .arg(authz_object_arg(client))
            .arg("--blockdev")
            .arg(file_node_arg(path_text, read_only, direct))
            .arg("--blockdev")
            .arg(format_node_arg(read_only))
            .arg("--nbd-server")
            .arg(server_arg())
            .arg("--export")
            .arg(export_arg(name, read_only))
            .arg("--pidfile")
            .arg(&pid_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Its own process group: a signal to the agent's group (Ctrl-C, a service
            // manager stopping the agent's group) does not take the guest's disk away.
            .process_group(0);
        let fd = listener.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and calls only
        // async-signal-safe functions (dup2, fcntl), touching no memory of the parent.
        unsafe {
            command.pre_exec(move || hand_over_listener(fd));
        }
        let started = Instant::now();
        let child = command.spawn().map_err(NbdError::Spawn)?;
        // From here on only the daemon holds the socket.
        drop(listener);
        let mut starting = Starting {
            child: Some(child),
            exports: self,
            name,
        };
        let pid = starting.wait_ready(&pid_path)?;
        let record = Record {
            export: name.to_owned(),
            path: path.to_path_buf(),
            read_only,
            pid,
            host: self.listen.to_string(),
            port,
            client: Some(client.to_owned()),
        };
        self.write_record(&record)?;
        starting.keep();
        tracing::info!(export = name, pid, port, path = %path.display(), read_only, client,
            elapsed = ?started.elapsed(), "NBD export started");
        let endpoint = record.endpoint();
        exports.insert(name.to_owned(), record);
        Ok(endpoint)
    }

    /// Stops export `name` (SIGTERM to its recorded pid, SIGKILL if it has not exited after
    /// a few seconds) and forgets it. `Ok(false)` when there was no such export.
    pub fn stop(&self, name: &str) -> Result<bool, NbdError> {
        if !is_export_name(name) {
            return Err(NbdError::InvalidName(name.to_owned()));
        }
        let mut exports = self.lock();
        let Some(record) = exports.get(name).cloned() else {
            return Ok(false);
        };
        if self.runs(&record) {
            terminate(record.pid, name, || self.runs(&record))?;
        }
        exports.remove(name);
        self.remove_files(name)?;
        tracing::info!(export = name, pid = record.pid, "NBD export stopped");
        Ok(true)
    }

    /// The exports that run now, by name. An export whose daemon died is dropped here (and
    /// so is started again by the next `start` of it).
    pub fn list(&self) -> Vec<(String, NbdEndpoint)> {
        let mut exports = self.lock();
        let dead: Vec<String> = exports
            .values()
            .filter(|r| !self.runs(r))
            .map(|r| r.export.clone())
            .collect();
        for name in dead {
            tracing::warn!(export = %name, "NBD export died");
            exports.remove(&name);
            if let Err(e) = self.remove_files(&name) {
                tracing::warn!(export = %name, error = %e, "cannot remove a dead export's files");
            }
        }
        exports
            .values()
            .map(|r| (r.export.clone(), r.endpoint()))
            .collect()
    }

    /// The pid of export `name`'s daemon, if it runs.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.lock().get(name).map(|r| r.pid)
    }
}

/// A daemon being started: killed (and its files removed) unless [`Starting::keep`] is
/// called, so a failed start leaves nothing behind.
struct Starting<'a> {
    child: Option<Child>,
    exports: &'a NbdExports,
    name: &'a str,
}

impl Starting<'_> {
    /// Waits until the daemon wrote its pid into `pid_path` (its export exists), or exited.
    fn wait_ready(&mut self, pid_path: &Path) -> Result<u32, NbdError> {
        let child = self.child.as_mut().expect("child present until kept");
        let pid = child.id();
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let stderr = std::fs::read_to_string(self.exports.log_path(self.name))
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                return Err(NbdError::Exited {
                    name: self.name.to_owned(),
                    status: status.to_string(),
                    stderr,
                });
            }
            let written = std::fs::read_to_string(pid_path)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok());
            if written == Some(pid) {
                return Ok(pid);
            }
            if started.elapsed() >= READY_TIMEOUT {
                return Err(NbdError::NotReady {
                    name: self.name.to_owned(),
                    timeout: READY_TIMEOUT,
                });
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// The daemon runs on: it is reaped by pid when stopped (or by whoever adopts it).
    fn keep(mut self) {
        self.child = None;
    }
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if let Err(e) = self.exports.remove_files(self.name) {
                tracing::warn!(export = self.name, error = %e, "cannot clean up a failed export");
            }
        }
    }
}

/// Puts the listening socket at [`LISTEN_FD`] in the child, without close-on-exec.
fn hand_over_listener(fd: RawFd) -> io::Result<()> {
    // SAFETY (both calls): plain descriptor syscalls on descriptors of this process.
    let rc = if fd == LISTEN_FD {
        // dup2 onto itself would keep the close-on-exec flag.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }
    } else {
        unsafe { libc::dup2(fd, LISTEN_FD) }
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The daemon's TLS credentials: the host's certificate, and client certificates verified
/// against the site CA.
fn tls_object_arg(dir: &str) -> String {
    json!({
        "qom-type": "tls-creds-x509",
        "id": "tls",
        "dir": dir,
        "endpoint": "server",
        "verify-peer": true,
    })
    .to_string()
}

/// Who may connect: the one host whose instance uses the export, by its certificate's
/// subject.
fn authz_object_arg(client: &str) -> String {
    json!({
        "qom-type": "authz-simple",
        "id": "authz",
        "identity": stratus_common::subjects::host_dn(client),
    })
    .to_string()
}

/// The NBD server: on the inherited socket, TLS required, the authorization list checked.
fn server_arg() -> String {
    json!({
        "addr": {"type": "fd", "str": LISTEN_FD.to_string()},
        "tls-creds": "tls",
        "tls-authz": "authz",
    })
    .to_string()
}

/// The daemon's protocol node: the file. `discard: unmap` lets guest trims punch holes.
fn file_node_arg(path: &str, read_only: bool, direct: bool) -> String {
    json!({
        "driver": "file",
        "node-name": "file",
        "filename": path,
        "read-only": read_only,
        // Linux native AIO needs O_DIRECT.
        "aio": if direct { "native" } else { "threads" },
        "cache": {"direct": direct, "no-flush": false},
        "discard": "unmap",
    })
    .to_string()
}

fn format_node_arg(read_only: bool) -> String {
    json!({
        "driver": "raw",
        "node-name": "disk",
        "file": "file",
        "read-only": read_only,
        "discard": "unmap",
    })
    .to_string()
}

fn export_arg(name: &str, read_only: bool) -> String {
    json!({
        "type": "nbd",
        "id": "export",
        "node-name": "disk",
        "name": name,
        "writable": !read_only,
    })
    .to_string()
}

/// Whether the file can be opened with `O_DIRECT` (tmpfs, for one, refuses it).
fn supports_direct_io(path: &Path) -> Result<bool, NbdError> {
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
        Err(e) => Err(io_error("open", path)(e)),
    }
}

fn remove_file(path: &Path) -> Result<(), NbdError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("remove", path)(e)),
    }
}

/// A pid we may signal: never 0, 1 or a negative number (a process group, or every process).
fn signalable(pid: u32) -> Option<libc::pid_t> {
    libc::pid_t::try_from(pid).ok().filter(|&p| p > 1)
}

/// Collects the exit status of `pid` if it is our child and has exited (a daemon started by
/// this process), so it does not linger as a zombie. Harmless for other pids.
fn reap(pid: u32) {
    if let Some(pid) = signalable(pid) {
        let mut status = 0;
        // SAFETY: waitpid on one pid with WNOHANG; `status` is a valid out pointer.
        unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    }
}

/// The command line of `pid` if it is alive (zombies, whose command line is gone, are not).
fn live_cmdline(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the command name, which is in parentheses and may contain any byte.
    let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
    if matches!(state, 'Z' | 'X' | 'x') {
        return None;
    }
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None;
    }
    Some(
        raw.split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// SIGTERM, then SIGKILL if `still_ours` holds after [`STOP_GRACE`]; `Ok` once it no longer
/// holds. `still_ours` re-checks the pid's identity, so a pid reused meanwhile is never
/// signalled again.
fn terminate(pid: u32, name: &str, still_ours: impl Fn() -> bool) -> Result<(), NbdError> {
    let Some(target) = signalable(pid) else {
        return Ok(());
    };
    for (signal, wait) in [(libc::SIGTERM, STOP_GRACE), (libc::SIGKILL, KILL_WAIT)] {
        if !still_ours() {
            return Ok(());
        }
        // SAFETY: kill(2) on a single positive pid checked to be our daemon just now.
        unsafe { libc::kill(target, signal) };
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if !still_ours() {
                return Ok(());
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        if signal == libc::SIGTERM {
            tracing::warn!(export = name, pid, "NBD server ignored SIGTERM; killing it");
        }
    }
    if still_ours() {
        return Err(NbdError::StillRunning {
            name: name.to_owned(),
            pid,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// Server credentials in `dir/tls`, not installed.
    fn no_credentials(dir: &tempfile::TempDir) -> ServerCredentials {
        ServerCredentials::new(dir.path().join("tls"))
    }

    #[test]
    fn export_names_are_checked() {
        assert!(is_export_name("a"));
        assert!(is_export_name("vol-9c5a2c03_x9"));
        assert!(is_export_name(&"e".repeat(128)));
        for bad in [
            "",
            "a b",
            "a/b",
            "..",
            "a.b",
            "a,b",
            "a\0",
            "é",
            &"e".repeat(129),
        ] {
            assert!(!is_export_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn exports_require_tls_and_the_one_client_hosts_certificate() {
        let tls: serde_json::Value = serde_json::from_str(&tls_object_arg("/s/tls,x")).unwrap();
        assert_eq!(tls["qom-type"], "tls-creds-x509");
        assert_eq!(tls["dir"], "/s/tls,x");
        assert_eq!(tls["endpoint"], "server");
        assert_eq!(tls["verify-peer"], true);
        let authz: serde_json::Value = serde_json::from_str(&authz_object_arg("node-2")).unwrap();
        assert_eq!(authz["qom-type"], "authz-simple");
        assert_eq!(
            authz["identity"],
            "CN=node-2,O=StratusLab,OU=stratuslab-host"
        );
        let server: serde_json::Value = serde_json::from_str(&server_arg()).unwrap();
        assert_eq!(server["addr"]["type"], "fd");
        assert_eq!(server["addr"]["str"], LISTEN_FD.to_string());
        assert_eq!(server["tls-creds"], tls["id"]);
        assert_eq!(server["tls-authz"], authz["id"]);
    }

    #[test]
    fn arguments_are_json_with_the_name_escaped() {
        let arg = export_arg("e-1", true);
        let v: serde_json::Value = serde_json::from_str(&arg).unwrap();
        assert_eq!(v["name"], "e-1");
        assert_eq!(v["writable"], false);
        let file = file_node_arg("/p/a,b\"c.raw", false, true);
        let v: serde_json::Value = serde_json::from_str(&file).unwrap();
        assert_eq!(v["filename"], "/p/a,b\"c.raw");
        assert_eq!(v["cache"]["direct"], true);
        assert_eq!(v["cache"]["no-flush"], false);
        assert_eq!(v["aio"], "native");
        let v: serde_json::Value = serde_json::from_str(&file_node_arg("/p", true, false)).unwrap();
        assert_eq!(v["aio"], "threads");
        assert_eq!(v["read-only"], true);
    }

    #[test]
    fn unspecified_listen_addresses_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for addr in [IpAddr::V4(Ipv4Addr::UNSPECIFIED), "::".parse().unwrap()] {
            assert!(matches!(
                NbdExports::open(dir.path(), addr, no_credentials(&dir)),
                Err(NbdError::UnspecifiedListen(_))
            ));
        }
    }

    #[test]
    fn bad_starts_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("nbd");
        let exports = NbdExports::open(&state, LOCALHOST, no_credentials(&dir)).unwrap();
        assert_eq!(
            std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let file = dir.path().join("v.raw");
        std::fs::write(&file, [0u8; 512]).unwrap();
        assert!(matches!(
            exports.start("a/b", &file, false, "node-2"),
            Err(NbdError::InvalidName(_))
        ));
        for client in ["", "a,b", "CN=x", "-x", "a b"] {
            assert!(matches!(
                exports.start("e", &file, false, client),
                Err(NbdError::InvalidClient { .. })
            ));
        }
        assert!(matches!(
            exports.start("e", Path::new("v.raw"), false, "node-2"),
            Err(NbdError::InvalidPath(_))
        ));
        // Before the host's certificate is installed nothing is served.
        assert!(matches!(
            exports.start("e", &file, false, "node-2"),
            Err(NbdError::NoCredentials(_))
        ));
        super::super::credentials::ServerCredentials::new(dir.path().join("tls"))
            .install(super::super::credentials::Pems {
                ca: "CA",
                certificate: "C",
                key: "K",
            })
            .unwrap();
        assert!(matches!(
            exports.start("e", &dir.path().join("missing.raw"), false, "node-2"),
            Err(NbdError::Io { .. })
        ));
        assert!(matches!(
            exports.start("e", dir.path(), false, "node-2"),
            Err(NbdError::NotAFile(_))
        ));
        assert!(matches!(exports.stop("a b"), Err(NbdError::InvalidName(_))));
        assert!(!exports.stop("e").unwrap());
        assert!(exports.list().is_empty());
        assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0);
    }

    /// A record whose pid runs something else (here: a `sleep` this test started, and this
    /// test process itself) is dropped on open, and that process is not signalled.
    #[test]
    fn records_of_other_processes_are_dropped_not_killed() {
        let dir = tempfile::tempdir().unwrap();
        let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
        let write = |export: &str, pid: u32| {
            let record = Record {
                export: export.into(),
                path: "/p/v.raw".into(),
                read_only: false,
                pid,
                host: "127.0.0.1".into(),
                port: 10809,
                client: None,
            };
            std::fs::write(
                dir.path().join(format!("{export}.json")),
                serde_json::to_vec(&record).unwrap(),
            )
            .unwrap();
        };
        write("sleeper", sleeper.id());
        write("me", std::process::id());
        write("gone", u32::MAX);
        write("zero", 0);
        std::fs::write(dir.path().join("garbled.json"), "{").unwrap();
        // A pid file naming a process that is not our daemon: removed, process untouched.
        std::fs::write(dir.path().join("orphan.pid"), format!("{}\n", sleeper.id())).unwrap();
        std::fs::write(dir.path().join(".x.json.tmp"), "").unwrap();

        let creds = tempfile::tempdir().unwrap();
        let exports = NbdExports::open(dir.path(), LOCALHOST, no_credentials(&creds)).unwrap();
        assert!(exports.list().is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(sleeper.try_wait().unwrap().is_none(), "sleep was signalled");
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
    }
}
