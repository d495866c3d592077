//! Helpers for the end-to-end tests and benchmarks: a whole cloud (controller + agent as real
//! processes, real libvirt, the test appliance) in a directory of its own, torn down on drop —
//! processes stopped by pid, this cloud's domains destroyed, files removed — also when a test
//! fails.

pub mod cluster;
pub mod events;
pub mod hosts;
pub mod image_server;
pub mod netlab;
pub mod pki;
pub mod prometheus;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};
use stratus_common::api::{Instance, InstanceState};

/// Where test clouds keep their files: somewhere the qemu process (user libvirt-qemu) can
/// reach, whatever the checkout's own permissions are.
pub const TEST_ROOT: &str = "/var/lib/stratuslab-test";

/// The line the appliance prints on its serial console once it is up.
pub const BANNER: &str = "STRATUSLAB-APPLIANCE-READY";

pub const LIBVIRT_URI: &str = "qemu:///system";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A home directory for a browser that trusts `ca` (a PEM file): an NSS database of its own
/// (`.pki/nssdb`, where chromium looks), made with `certutil`.
pub fn browser_home(ca: &Path) -> anyhow::Result<tempfile::TempDir> {
    let home = tempfile::tempdir()?;
    let nss = home.path().join(".pki/nssdb");
    fs::create_dir_all(&nss)?;
    let db = format!("sql:{}", nss.display());
    let ca = ca.to_str().context("the CA's path is not UTF-8")?;
    for args in [
        vec!["-d", &db, "-N", "--empty-password"],
        vec![
            "-d",
            &db,
            "-A",
            "-t",
            "C,,",
            "-n",
            "stratus-test-ca",
            "-i",
            ca,
        ],
    ] {
        let out = Command::new("certutil").args(&args).output()?;
        if !out.status.success() {
            bail!("certutil {args:?}: {out:?}");
        }
    }
    Ok(home)
}

/// chromedriver on a loopback port, for a chromium whose home (`home`) trusts a site CA;
/// killed with the chromium it started (its process group) when dropped.
pub struct Chromedriver {
    pub port: u16,
    pub home: tempfile::TempDir,
    _process: SpawnedGroup,
}

impl Chromedriver {
    /// Starts chromedriver for a chromium that trusts `ca` (a PEM file); returns once it
    /// listens.
    pub fn start(ca: &Path) -> anyhow::Result<Self> {
        use std::os::unix::process::CommandExt as _;
        let home = browser_home(ca)?;
        let port = free_port();
        let process = SpawnedGroup(
            Command::new("chromedriver")
                .process_group(0)
                .arg(format!("--port={port}"))
                .env("HOME", home.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context(
                    "chromedriver (Debian's chromium-driver; scripts/install-deps.sh installs it)",
                )?,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpListener::bind(("127.0.0.1", port)).is_ok() {
            if Instant::now() > deadline {
                bail!("chromedriver did not listen");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            port,
            home,
            _process: process,
        })
    }

    /// The `goog:chromeOptions` of a headless session with a profile of its own (`profile`,
    /// a directory name under the home): Debian's chromium, no network of its own.
    pub fn chrome_options(&self, profile: &str) -> Value {
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--window-size=1400,1100",
                format!("--user-data-dir={}", self.home.path().join(profile).display()),
            ],
        })
    }
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_owned()
}

/// The directory holding the workspace's binaries of the profile the tests were built with.
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("STRATUS_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test executable");
    let mut dir = exe.parent().expect("exe dir").to_owned();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// The test appliance's files, copied (once) under [`TEST_ROOT`].
#[derive(Debug, Clone)]
pub struct Appliance {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub disk: PathBuf,
    pub sha256: String,
    pub kernel_sha256: String,
    pub initrd_sha256: String,
    pub cmdline: String,
}

/// Lowercase hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut file = fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    std::io::copy(&mut file, &mut hasher)?;
    Ok(stratus_common::hex::encode(hasher.finalize()))
}

impl Appliance {
    /// The appliance as an image registration, its files fetched from `base` (a `file://`
    /// directory URL or an `http://` server serving the appliance directory), each with its
    /// size declared.
    pub fn image_json(&self, name: &str, base: &str) -> Value {
        let artifact = |file: &str, sha: &str| {
            let size = fs::metadata(self.dir().join(file))
                .map(|m| m.len())
                .expect("appliance file");
            json!({"locations": [format!("{base}/{file}")], "sha256": sha, "size": size})
        };
        json!({
            "name": name,
            "format": "qcow2",
            "disk": artifact("disk.qcow2", &self.sha256),
            "kernel": artifact("vmlinuz", &self.kernel_sha256),
            "initrd": artifact("initrd.img", &self.initrd_sha256),
            "cmdline": self.cmdline,
        })
    }

    /// The directory holding the appliance's files.
    pub fn dir(&self) -> &Path {
        self.disk.parent().expect("appliance directory")
    }
}

/// Finds the built appliance (`make appliance`) and makes a copy qemu can read.
pub fn appliance() -> anyhow::Result<Appliance> {
    let built = std::env::var("STRATUS_APPLIANCE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("build/appliance"));
    let meta: Value =
        serde_json::from_str(&fs::read_to_string(built.join("image.json")).with_context(
            || format!("{}/image.json: run `make appliance` first", built.display()),
        )?)?;
    let sha256 = meta["sha256"]
        .as_str()
        .context("image.json sha256")?
        .to_owned();
    let cmdline = meta["cmdline"]
        .as_str()
        .unwrap_or("console=ttyS0")
        .to_owned();
    let kernel_sha256 = sha256_file(&built.join("vmlinuz"))?;
    let initrd_sha256 = sha256_file(&built.join("initrd.img"))?;
    // The copy is named after all three files, so a rebuilt kernel or initrd is never missed.
    let key: String = {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("{sha256}{kernel_sha256}{initrd_sha256}"));
        stratus_common::hex::encode(&digest[..8])
    };
    let target = Path::new(TEST_ROOT).join(format!("appliance-{key}"));
    if !target.join("disk.qcow2").exists() {
        fs::create_dir_all(TEST_ROOT)?;
        let staging = Path::new(TEST_ROOT).join(format!(
            ".appliance-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir_all(&staging)?;
        for file in ["vmlinuz", "initrd.img", "disk.qcow2"] {
            fs::copy(built.join(file), staging.join(file))
                .with_context(|| format!("copy {file}"))?;
        }
        set_mode(&staging, 0o755)?;
        if fs::rename(&staging, &target).is_err() {
            // Another test won the race; its copy is identical.
            let _ = fs::remove_dir_all(&staging);
        }
    }
    Ok(Appliance {
        kernel_sha256,
        initrd_sha256,
        kernel: target.join("vmlinuz"),
        initrd: target.join("initrd.img"),
        disk: target.join("disk.qcow2"),
        sha256,
        cmdline,
    })
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// A process a test started (a Prometheus, a chromedriver), killed by its pid and reaped when
/// dropped, also when the test fails.
pub struct Spawned(pub Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child started as the leader of a process group of its own
/// (`CommandExt::process_group(0)`), with everything it started in turn (chromedriver's
/// chromium): the whole group is killed when dropped, then the child reaped.
pub struct SpawnedGroup(pub Child);

impl Drop for SpawnedGroup {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            // SAFETY: a plain syscall; the group's ID is the child's own pid, which it leads
            // until it is reaped just below.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.0.wait();
    }
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Starts libvirtd and virtlogd if they are not running (CI machines have no systemd).
pub fn ensure_libvirtd() {
    let up = || {
        Command::new("virsh")
            .args(["-c", LIBVIRT_URI, "list", "--name"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if up() {
        return;
    }
    panic!(
        "libvirtd is not answering at {LIBVIRT_URI}: run scripts/install-deps.sh (make test does)"
    );
}

/// A whole cloud for one test.
pub struct TestCloud {
    pub dir: PathBuf,
    pub port: u16,
    pub admin_password: String,
    pub host_name: String,
    controller: Option<Child>,
    agent: Option<Child>,
    /// A second host's agent (see [`TestCloud::start_second_agent`]).
    agent2: Option<Child>,
    /// Trusts the site CA, once the controller made it.
    http: std::sync::OnceLock<Client>,
    cluster_prefix: Option<String>,
}

impl TestCloud {
    /// A controller (and no agent yet) in a new directory under [`TEST_ROOT`].
    pub fn start(name: &str) -> anyhow::Result<Self> {
        Self::start_with(name, "")
    }

    /// Like [`Self::start`], with `extra` TOML appended to the controller's configuration.
    pub fn start_with(name: &str, extra: &str) -> anyhow::Result<Self> {
        ensure_libvirtd();
        let dir = Path::new(TEST_ROOT).join(format!(
            "{name}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("agent"))?;
        set_mode(Path::new(TEST_ROOT), 0o755)?;
        set_mode(&dir, 0o755)?;
        let port = free_port();
        let peer_port = free_port();
        let admin_password = format!("admin-pw-{}", std::process::id());
        fs::write(
            dir.join("controller.toml"),
            format!(
                "listen = \"127.0.0.1:{port}\"\npeer_listen = \"127.0.0.1:{peer_port}\"\nstate_dir = \"{d}/controller\"\nadmin_password = \"{admin_password}\"\nsnapshot_every = 50\ncpu_allocation_ratio = 16.0\n{extra}\n",
                d = dir.display()
            ),
        )?;
        let host_name = format!(
            "host-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        fs::write(
            dir.join("agent.toml"),
            format!(
                "controller = \"https://127.0.0.1:{port}\"\nca_certificate = \"{d}/controller/ca.pem\"\njoin_token_file = \"{d}/join-token\"\nhost_name = \"{host_name}\"\nstate_dir = \"{d}/agent\"\ndomain_type = \"qemu\"\nreserved_memory_mib = 0\npoll_wait_secs = 20\nresync_secs = 2\nallow_loopback_sources = true\nfile_location_roots = [\"{TEST_ROOT}\"]\nnbd_client_tls_dir = \"\"\n",
                d = dir.display()
            ),
        )?;
        let mut cloud = Self {
            dir,
            port,
            admin_password,
            host_name,
            controller: None,
            agent: None,
            agent2: None,
            http: std::sync::OnceLock::new(),
            cluster_prefix: None,
        };
        cloud.start_controller()?;
        Ok(cloud)
    }

    /// A controller with an agent registered and an appliance image called `appliance`.
    pub fn with_agent(name: &str) -> anyhow::Result<Self> {
        Self::with_agent_offering(name, None)
    }

    /// Like [`Self::with_agent`], with the host offering only `memory_mib` to instances (the
    /// agent keeps the rest back as reserved memory).
    pub fn with_agent_offering(name: &str, memory_mib: Option<u64>) -> anyhow::Result<Self> {
        let mut cloud = Self::start(name)?;
        if let Some(offered) = memory_mib {
            let reserved = host_memory_mib()?.saturating_sub(offered);
            let path = cloud.dir.join("agent.toml");
            let config = fs::read_to_string(&path)?.replace(
                "reserved_memory_mib = 0",
                &format!("reserved_memory_mib = {reserved}"),
            );
            fs::write(&path, config)?;
        }
        cloud.start_agent()?;
        cloud.register_appliance("appliance")?;
        Ok(cloud)
    }

    fn spawn(&self, binary: &str, config: &str, log: &str) -> anyhow::Result<Child> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(log))?;
        Ok(Command::new(bin(binary))
            .args(["--config", &self.dir.join(config).display().to_string()])
            .env("STRATUS_LOG", "info,stratus_agent=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?)
    }

    pub fn start_controller(&mut self) -> anyhow::Result<()> {
        assert!(self.controller.is_none(), "controller already running");
        self.controller =
            Some(self.spawn("stratus-controller", "controller.toml", "controller.log")?);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // Answering is not enough: a restarted node answers `/cluster` before it has
            // won its election, and every other request needs a leader.
            let answer = self.get("admin", "/cluster").ok();
            if let Some((StatusCode::OK, cluster)) = answer.filter(|(_, c)| !c["leader"].is_null())
            {
                let id = cluster["cluster_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                self.cluster_prefix = Some(format!("stratus-{}-", &id[..8]));
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "controller did not answer with a leader in 20 s; log:\n{}",
                    self.log("controller.log")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the controller with SIGTERM (a clean shutdown) and waits for it.
    pub fn stop_controller(&mut self) {
        stop(self.controller.take(), libc::SIGTERM);
    }

    /// Makes the agent a storage host at its next start: a volume pool in its directory
    /// (`agent/volumes`), exports served on loopback.
    pub fn store_volumes(&self) -> anyhow::Result<()> {
        let pool = self.dir.join("agent/volumes");
        self.set_agent_option("volume_pool", &format!("\"{}\"", pool.display()))?;
        self.set_agent_option("nbd_listen", "\"127.0.0.1\"")
    }

    /// Sets `key = value` (a TOML value) in the agent's configuration, for its next start.
    pub fn set_agent_option(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let path = self.dir.join("agent.toml");
        let mut lines: Vec<String> = fs::read_to_string(&path)?
            .lines()
            .filter(|l| !l.starts_with(&format!("{key} =")))
            .map(str::to_owned)
            .collect();
        lines.push(format!("{key} = {value}"));
        fs::write(&path, lines.join("\n") + "\n")?;
        Ok(())
    }

    /// The agent's image cache directory.
    pub fn image_cache(&self) -> PathBuf {
        self.dir.join("agent/images")
    }

    /// Digests of what the agent's image cache holds.
    pub fn cached(&self) -> Vec<String> {
        let mut held: Vec<String> = fs::read_dir(self.image_cache().join("sha256"))
            .map(|d| {
                d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        held.sort();
        held
    }

    /// Makes a join token for `host` as the administrator and writes it where its agent's
    /// configuration says (`file`, under the cloud's directory).
    pub fn write_join_token(&self, host: &str, file: &str) -> anyhow::Result<()> {
        let (status, body) =
            self.post("admin", &format!("/hosts/{host}/join-tokens"), &json!({}))?;
        if status != StatusCode::CREATED {
            bail!("join token for {host}: {status} {body}");
        }
        let token = body["token"].as_str().context("a token")?;
        fs::write(self.dir.join(file), token)?;
        Ok(())
    }

    pub fn start_agent(&mut self) -> anyhow::Result<()> {
        assert!(self.agent.is_none(), "agent already running");
        let host = self.host_name.clone();
        self.write_join_token(&host, "join-token")?;
        self.agent = Some(self.spawn("stratus-agent", "agent.toml", "agent.log")?);
        let host = self.host_name.clone();
        self.wait_registered(&host, "agent.log")
    }

    /// The second host's name.
    pub fn host2_name(&self) -> String {
        format!("{}-b", self.host_name)
    }

    /// Starts a second agent on this machine, as another host: its own name and state
    /// directory (`agent2/`), the first agent's other settings less its volume pool and
    /// `extra` TOML lines added.
    pub fn start_second_agent(&mut self, extra: &str) -> anyhow::Result<()> {
        assert!(self.agent2.is_none(), "second agent already running");
        let first = fs::read_to_string(self.dir.join("agent.toml"))?;
        let replaced: Vec<String> = [
            "volume_pool",
            "nbd_listen",
            "host_name",
            "state_dir",
            "join_token_file",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain(
            extra
                .lines()
                .filter_map(|l| Some(l.split_once('=')?.0.trim().to_owned())),
        )
        .collect();
        let mut lines: Vec<String> = first
            .lines()
            .filter(|l| {
                !replaced
                    .iter()
                    .any(|key| l.split_once('=').is_some_and(|(k, _)| k.trim() == key))
            })
            .map(str::to_owned)
            .collect();
        lines.push(format!("host_name = \"{}\"", self.host2_name()));
        lines.push(format!("state_dir = \"{}/agent2\"", self.dir.display()));
        lines.push(format!(
            "join_token_file = \"{}/join-token-2\"",
            self.dir.display()
        ));
        lines.push(extra.to_owned());
        fs::write(self.dir.join("agent2.toml"), lines.join("\n") + "\n")?;
        self.write_join_token(&self.host2_name(), "join-token-2")?;
        self.agent2 = Some(self.spawn("stratus-agent", "agent2.toml", "agent2.log")?);
        let host = self.host2_name();
        self.wait_registered(&host, "agent2.log")
    }

    fn wait_registered(&self, host: &str, log: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((StatusCode::OK, hosts)) = self.get("admin", "/hosts") {
                let registered = hosts
                    .as_array()
                    .is_some_and(|hs| hs.iter().any(|h| h["name"] == host && h["status"] == "up"));
                if registered {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("agent did not register in 30 s; log:\n{}", self.log(log));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The running controller's process ID.
    pub fn controller_pid(&self) -> u32 {
        self.controller.as_ref().expect("controller running").id()
    }

    /// Kills the agent without warning (SIGKILL), as a crash would.
    pub fn kill_agent(&mut self) {
        stop(self.agent.take(), libc::SIGKILL);
    }

    pub fn log(&self, name: &str) -> String {
        fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}/api/v1{path}", self.port)
    }

    /// The site CA the controller made at its first start.
    pub fn ca_certificate(&self) -> PathBuf {
        self.dir.join("controller/ca.pem")
    }

    /// The API's base URL, `https://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Enrols `host` with a join token the administrator makes now, as its agent would.
    pub fn enrol_host(&self, host: &str) -> anyhow::Result<hosts::EnrolledHost> {
        let token = hosts::join_token(self.http()?, &self.base(), &self.admin_password, host)?;
        hosts::enrol(
            &self.base(),
            &fs::read(self.ca_certificate())?,
            host,
            &token,
        )
    }

    /// Enrols `host` and registers it, as its agent would, offering `vcpus` and `memory_mib`
    /// (a host on paper: no agent runs for it, so its instances stay Pending).
    pub fn enrol_and_register(
        &self,
        host: &str,
        vcpus: u32,
        memory_mib: u64,
    ) -> anyhow::Result<hosts::EnrolledHost> {
        let enrolled = self.enrol_host(host)?;
        let registered = enrolled
            .client
            .post(self.url("/hosts"))
            .json(
                &serde_json::json!({"name": host, "vcpus": vcpus, "memory_mib": memory_mib,
                "disk_gib": 10, "domain_type": "qemu", "arch": "x86_64", "hypervisor": "test"}),
            )
            .send()?;
        if registered.status() != StatusCode::OK {
            bail!(
                "registering {host}: {} {}",
                registered.status(),
                registered.text()?
            );
        }
        Ok(enrolled)
    }

    /// An HTTP client trusting the site CA (only), without credentials.
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(self.http()?.clone())
    }

    fn http(&self) -> anyhow::Result<&Client> {
        if let Some(http) = self.http.get() {
            return Ok(http);
        }
        let pem = fs::read(self.ca_certificate())
            .with_context(|| format!("{}", self.ca_certificate().display()))?;
        let http = Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(self.http.get_or_init(|| http))
    }

    /// The password [`TestCloud::create_user`] gives `user`.
    pub fn password(&self, user: &str) -> String {
        if user == "admin" {
            self.admin_password.clone()
        } else {
            format!("{user}-password")
        }
    }

    fn send(
        &self,
        request: reqwest::blocking::RequestBuilder,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let response = request.send()?;
        let status = response.status();
        let text = response.text()?;
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, value))
    }

    pub fn get(&self, user: &str, path: &str) -> anyhow::Result<(StatusCode, Value)> {
        self.send(
            self.http()?
                .get(self.url(path))
                .basic_auth(user, Some(self.password(user))),
        )
    }

    pub fn post(
        &self,
        user: &str,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<(StatusCode, Value)> {
        self.send_json(reqwest::Method::POST, user, path, body)
    }

    pub fn patch(
        &self,
        user: &str,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<(StatusCode, Value)> {
        self.send_json(reqwest::Method::PATCH, user, path, body)
    }

    fn send_json(
        &self,
        method: reqwest::Method,
        user: &str,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<(StatusCode, Value)> {
        self.send(
            self.http()?
                .request(method, self.url(path))
                .basic_auth(user, Some(self.password(user)))
                .json(body),
        )
    }

    /// POSTs a raw body with a JSON content type.
    pub fn post_raw(
        &self,
        user: &str,
        path: &str,
        body: &str,
    ) -> anyhow::Result<(StatusCode, Value)> {
        self.send(
            self.http()?
                .post(self.url(path))
                .basic_auth(user, Some(self.password(user)))
                .header("content-type", "application/json")
                .body(body.to_owned()),
        )
    }

    pub fn delete(&self, user: &str, path: &str) -> anyhow::Result<(StatusCode, Value)> {
        self.send(
            self.http()?
                .delete(self.url(path))
                .basic_auth(user, Some(self.password(user))),
        )
    }

    /// An HTTP client trusting the site CA, with no overall timeout: for answers that stream
    /// (the caller reads until it saw what it waits for).
    pub fn streaming_client(&self) -> anyhow::Result<Client> {
        let pem = fs::read(self.ca_certificate())?;
        Ok(Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
            .timeout(None)
            .build()?)
    }

    /// `GET /instances/{id}/console?follow=true` as `user`: the open response, to read the
    /// console as it streams.
    pub fn follow_console(
        &self,
        user: &str,
        id: u64,
    ) -> anyhow::Result<reqwest::blocking::Response> {
        let response = self
            .streaming_client()?
            .get(self.url(&format!("/instances/{id}/console?follow=true")))
            .basic_auth(user, Some(self.password(user)))
            .send()?;
        if response.status() != StatusCode::OK {
            bail!("console of instance {id}: {}", response.status());
        }
        Ok(response)
    }

    /// Creates a user whose password is `<name>-password`.
    pub fn create_user(&self, name: &str) -> anyhow::Result<()> {
        let (status, body) = self.post(
            "admin",
            "/users",
            &json!({"name": name, "password": self.password(name)}),
        )?;
        if status != StatusCode::CREATED {
            bail!("creating user {name}: {status} {body}");
        }
        Ok(())
    }

    pub fn register_appliance(&self, name: &str) -> anyhow::Result<Appliance> {
        let a = appliance()?;
        self.register_image(&a.image_json(name, &format!("file://{}", a.dir().display())))?;
        Ok(a)
    }

    /// Registers an image (admin) from its JSON registration.
    pub fn register_image(&self, body: &Value) -> anyhow::Result<()> {
        let (status, body) = self.post("admin", "/images", body)?;
        if status != StatusCode::CREATED {
            bail!("registering an image: {status} {body}");
        }
        Ok(())
    }

    /// Runs `stratus NAME ARGS...` against this cloud as `user`; returns the output.
    pub fn stratus(&self, user: &str, args: &[&str]) -> std::process::Output {
        Command::new(bin("stratus"))
            .args(args)
            .env("HOME", &self.dir)
            .env("STRATUSLAB_ENDPOINT", format!("127.0.0.1:{}", self.port))
            .env("STRATUSLAB_CA_CERTIFICATE", self.ca_certificate())
            .env("STRATUSLAB_USERNAME", user)
            .env("STRATUSLAB_PASSWORD", self.password(user))
            .output()
            .expect("run stratus")
    }

    /// Builds Marketplace metadata for the appliance with `stratus build-metadata` (locations in
    /// the appliance's directory) and signs it with `stratus sign-metadata`; returns the signed
    /// envelope's path. `edit` may change the metadata between the two.
    pub fn sign_appliance(
        &self,
        appliance: &Appliance,
        signer: &pki::Signer,
        name: &str,
        edit: impl FnOnce(&mut Value),
    ) -> anyhow::Result<PathBuf> {
        let base = format!("file://{}", appliance.dir().display());
        let unsigned = self.dir.join(format!("{name}.json"));
        let signed = self.dir.join(format!("{name}.signed.json"));
        let out = self.stratus(
            "admin",
            &[
                "build-metadata",
                &appliance.disk.display().to_string(),
                "--os",
                "stratuslab-appliance",
                "--os-version",
                "1",
                "--version",
                "1.0",
                "--description",
                "StratusLab test appliance",
                "--location",
                &format!("{base}/disk.qcow2"),
                "--kernel-location",
                &format!("{base}/vmlinuz"),
                "--kernel-sha256",
                &appliance.kernel_sha256,
                "--initrd-location",
                &format!("{base}/initrd.img"),
                "--initrd-sha256",
                &appliance.initrd_sha256,
                "--cmdline",
                &appliance.cmdline,
                "--email",
                &signer.email,
                "-o",
                &unsigned.display().to_string(),
            ],
        );
        if !out.status.success() {
            bail!("build-metadata: {}", String::from_utf8_lossy(&out.stderr));
        }
        let mut metadata: Value = serde_json::from_slice(&fs::read(&unsigned)?)?;
        edit(&mut metadata);
        fs::write(&unsigned, serde_json::to_vec_pretty(&metadata)?)?;
        let out = self.stratus(
            "admin",
            &[
                "sign-metadata",
                &unsigned.display().to_string(),
                "--pem-cert",
                &signer.cert.display().to_string(),
                "--pem-key",
                &signer.key.display().to_string(),
                "-o",
                &signed.display().to_string(),
            ],
        );
        if !out.status.success() {
            bail!("sign-metadata: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(signed)
    }

    /// Creates an instance and returns it as the API answered.
    pub fn run_instance(&self, user: &str, body: Value) -> anyhow::Result<Instance> {
        let (status, value) = self.post(user, "/instances", &body)?;
        if status != StatusCode::CREATED {
            bail!("run instance: {status} {value}");
        }
        Ok(serde_json::from_value(value)?)
    }

    pub fn instance(&self, user: &str, id: u64) -> anyhow::Result<Instance> {
        let (status, value) = self.get(user, &format!("/instances/{id}"))?;
        if status != StatusCode::OK {
            bail!("instance {id}: {status} {value}");
        }
        Ok(serde_json::from_value(value)?)
    }

    /// Waits until the instance is in `state`; fails early if it reaches another final state.
    pub fn wait_state(
        &self,
        user: &str,
        id: u64,
        state: InstanceState,
        timeout: Duration,
    ) -> anyhow::Result<Instance> {
        let deadline = Instant::now() + timeout;
        loop {
            let instance = self.instance(user, id)?;
            if instance.state == state {
                return Ok(instance);
            }
            if instance.state.is_terminal() {
                bail!(
                    "instance {id} is {} ({:?}), not {state}",
                    instance.state,
                    instance.reason
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "instance {id} still {} after {timeout:?}; agent log:\n{}",
                    instance.state,
                    self.log("agent.log")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The instance's directory on whichever of the two hosts has it.
    pub fn instance_dir(&self, id: u64) -> PathBuf {
        let second = self.dir.join("agent2/instances").join(id.to_string());
        if second.exists() {
            return second;
        }
        self.dir.join("agent/instances").join(id.to_string())
    }

    pub fn console(&self, id: u64) -> String {
        fs::read_to_string(self.instance_dir(id).join("console.log")).unwrap_or_default()
    }

    /// Waits for the appliance's banner on the instance's serial console; returns the line.
    pub fn wait_banner(&self, id: u64, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            // Only a whole line: the guest may still be writing it.
            let console = self.console(id);
            let complete = console
                .split_inclusive('\n')
                .find(|l| l.contains(BANNER) && l.ends_with('\n'));
            if let Some(line) = complete {
                return Ok(line.trim().to_owned());
            }
            if Instant::now() > deadline {
                bail!(
                    "no banner from instance {id} in {timeout:?}; console:\n{}",
                    self.console(id)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Names of the libvirt domains of this cloud that are running.
    pub fn domains(&self) -> Vec<String> {
        let prefix = self.cluster_prefix.clone().unwrap_or_default();
        running_domains()
            .into_iter()
            .filter(|d| d.starts_with(&prefix))
            .collect()
    }

    pub fn cluster_prefix(&self) -> &str {
        self.cluster_prefix.as_deref().unwrap_or_default()
    }
}

/// The host's memory in MiB, from /proc/meminfo.
pub fn host_memory_mib() -> anyhow::Result<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo")?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("MemTotal in /proc/meminfo")?;
    Ok(kib / 1024)
}

/// Deletes the taps whose names start with `prefix` and their nft chains in `bridge stratus`.
pub fn remove_taps(prefix: &str) {
    let Ok(links) = fs::read_dir("/sys/class/net") else {
        return;
    };
    for link in links.flatten() {
        let name = link.file_name().to_string_lossy().into_owned();
        let rest = name.strip_prefix(prefix).unwrap_or("x");
        if !rest.chars().all(|c| c.is_ascii_digit() || c == 'n') || rest.is_empty() {
            continue;
        }
        let quiet = |cmd: &str, args: &[&str]| {
            let _ = Command::new(cmd)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        quiet("ip", &["link", "del", &name]);
        quiet(
            "nft",
            &[
                "delete",
                "element",
                "bridge",
                "stratus",
                "taps",
                &format!("{{ \"{name}\" }}"),
            ],
        );
        quiet(
            "nft",
            &[
                "delete",
                "chain",
                "bridge",
                "stratus",
                &format!("tap_{name}"),
            ],
        );
    }
}

/// Names of all running domains under qemu:///system.
pub fn running_domains() -> Vec<String> {
    let out = Command::new("virsh")
        .args(["-c", LIBVIRT_URI, "list", "--name"])
        .output();
    match out {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The UUID libvirt gave a running domain (changes if the domain is restarted).
pub fn domain_uuid(name: &str) -> Option<String> {
    let out = Command::new("virsh")
        .args(["-c", LIBVIRT_URI, "domuuid", name])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub fn destroy_domain(name: &str) {
    let _ = Command::new("virsh")
        .args(["-c", LIBVIRT_URI, "destroy", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Stops (SIGTERM, then SIGKILL) the processes whose command line names a path under `dir`:
/// helpers the agents of one test cloud started, such as NBD servers.
pub fn stop_processes_using(dir: &Path) {
    let needle = dir.display().to_string();
    let pids = || -> Vec<i32> {
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                    .unwrap_or(false)
            })
            .collect()
    };
    for pid in pids() {
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !pids().is_empty() {
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in pids() {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

fn stop(child: Option<Child>, signal: i32) {
    if let Some(mut child) = child {
        // Only the process this harness started, by its pid.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// libvirt's NBD certificate directory on this machine (`qemu.conf` as Debian ships it).
pub const LIBVIRT_NBD_DIR: &str = "/etc/pki/qemu";

/// Saves what libvirt's NBD certificate directory holds, for a test whose agent installs its
/// client certificate there (test agents do not, unless told: `nbd_client_tls_dir`), and
/// puts it back on drop: the files as they were, the directories it did not have removed.
/// One such test runs at a time.
pub struct SavedNbdClientDir {
    files: Vec<(PathBuf, Option<Vec<u8>>)>,
    made_dirs: Vec<PathBuf>,
}

impl SavedNbdClientDir {
    pub fn save() -> Self {
        let dir = Path::new(LIBVIRT_NBD_DIR);
        Self {
            files: ["ca-cert.pem", "client-cert.pem", "client-key.pem"]
                .iter()
                .map(|f| (dir.join(f), fs::read(dir.join(f)).ok()))
                .collect(),
            made_dirs: dir
                .ancestors()
                .take_while(|d| !d.exists())
                .map(Path::to_path_buf)
                .collect(),
        }
    }
}

impl Drop for SavedNbdClientDir {
    fn drop(&mut self) {
        for (path, before) in &self.files {
            let _ = match before {
                Some(bytes) => fs::write(path, bytes),
                None => fs::remove_file(path),
            };
        }
        for dir in &self.made_dirs {
            let _ = fs::remove_dir(dir);
        }
    }
}

impl Drop for TestCloud {
    fn drop(&mut self) {
        stop(self.agent.take(), libc::SIGTERM);
        stop(self.agent2.take(), libc::SIGTERM);
        stop(self.controller.take(), libc::SIGTERM);
        if let Some(prefix) = &self.cluster_prefix {
            for domain in self.domains() {
                destroy_domain(&domain);
            }
            // Taps the agent made for this cloud (`s` + 4 hex digits of the cluster ID) and their
            // anti-spoofing rules, in case a test failed before killing its instances.
            let cluster4: String = prefix
                .trim_start_matches("stratus-")
                .chars()
                .take(4)
                .collect();
            remove_taps(&format!("s{cluster4}"));
        }
        // NBD servers outlive their agent by design (guests keep their disks across an agent
        // restart); the ones serving this cloud's volumes are found by their pool's path.
        stop_processes_using(&self.dir);
        if std::env::var_os("STRATUS_KEEP_TEST_DIRS").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
