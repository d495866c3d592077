//! A cluster of real controller processes for the tests, each in a network namespace of its
//! own, joined by veths to a bridge in a "switch" namespace; the test process reaches them
//! through one more veth from its own namespace. So a partition is a real link going down.
//! Addresses are from 198.18.0.0/15 (RFC 2544, for benchmarking: never a real network), one /24
//! per cluster. Everything is torn down on drop — processes stopped by pid, then the
//! namespaces (which takes their veths) and the test's own veth — also when a test fails.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{bin, destroy_domain, running_domains, set_mode, Appliance, BANNER, TEST_ROOT};

static SEQ: AtomicU32 = AtomicU32::new(0);

pub const API_PORT: u16 = 8440;
pub const PEER_PORT: u16 = 8450;
/// How long the harness waits for a node to answer, join or log what it must.
pub const WAIT: Duration = Duration::from_secs(30);

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `nft ARGS` inside namespace `ns`.
fn nft_in(ns: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft"])
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!("nft in {ns}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// An HTTP client trusting the site CA `ca_pem` only.
fn client(ca_pem: &[u8], timeout: Duration, connect: Duration) -> anyhow::Result<Client> {
    Ok(Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem)?)
        .timeout(timeout)
        .connect_timeout(connect)
        .build()?)
}

fn in_ns(ns: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut full = vec!["netns", "exec", ns, "ip"];
    full.extend_from_slice(args);
    ip(&full)
}

pub struct Node {
    pub id: u64,
    pub ns: String,
    pub address: String,
    pub child: Option<Child>,
    pub dir: PathBuf,
}

impl Node {
    pub fn api(&self) -> String {
        format!("{}:{API_PORT}", self.address)
    }

    pub fn peer(&self) -> String {
        format!("{}:{PEER_PORT}", self.address)
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }
}

pub struct TestCluster {
    pub dir: PathBuf,
    tag: String,
    subnet: String,
    switch: String,
    host_veth: String,
    pub nodes: BTreeMap<u64, Node>,
    pub admin_password: String,
    http: Client,
    /// The site CA's certificate, PEM.
    ca_pem: Vec<u8>,
    /// A host agent (in the test's own namespace) naming every node, once started.
    agent: Option<Child>,
    /// More hosts' agents, each in a namespace of its own, by suffix (see
    /// [`Self::start_agent_in_namespace`]).
    ns_agents: BTreeMap<String, NsAgent>,
    pub host_name: String,
    /// Filesystems mounted for the test, unmounted on drop.
    mounts: Vec<PathBuf>,
}

impl TestCluster {
    /// The namespaces and links for `n` nodes; no controller started yet.
    pub fn new(name: &str, n: u64) -> anyhow::Result<Self> {
        let seq = SEQ.fetch_add(1, Ordering::SeqCst);
        let tag = format!("c{}{}", std::process::id() % 100_000, seq);
        let subnet = format!(
            "198.18.{}",
            (std::process::id() as usize * 7 + seq as usize) % 250 + 1
        );
        let dir = PathBuf::from(TEST_ROOT).join(format!("{name}-{tag}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("agent"))?;
        // The site CA every node shares (as a site copies the first node's to the others).
        let (ca, _) = stratus_controller::pki::SiteCa::load_or_create(
            &dir.join("ca.pem"),
            &dir.join("ca.key"),
            true,
        )?;
        let ca_pem = ca.certificate_pem().as_bytes().to_vec();
        // The qemu user reads instance files under it.
        set_mode(std::path::Path::new(TEST_ROOT), 0o755)?;
        set_mode(&dir, 0o755)?;
        let mut cluster = Self {
            agent: None,
            ns_agents: BTreeMap::new(),
            host_name: format!("host-{tag}"),
            mounts: Vec::new(),
            dir,
            switch: format!("{tag}-sw"),
            host_veth: format!("{tag}h"),
            tag: tag.clone(),
            subnet: subnet.clone(),
            nodes: BTreeMap::new(),
            admin_password: format!("admin-pw-{tag}"),
            http: client(&ca_pem, Duration::from_secs(15), Duration::from_secs(1))?,
            ca_pem,
        };
        // Built step by step so that Drop removes whatever was made if a step fails.
        ip(&["netns", "add", &cluster.switch])?;
        in_ns(&cluster.switch, &["link", "add", "br0", "type", "bridge"])?;
        in_ns(&cluster.switch, &["link", "set", "br0", "up"])?;
        let host_peer = format!("{tag}hp");
        ip(&[
            "link",
            "add",
            &cluster.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            &host_peer,
        ])?;
        ip(&["link", "set", &host_peer, "netns", &cluster.switch])?;
        in_ns(
            &cluster.switch,
            &["link", "set", &host_peer, "master", "br0", "up"],
        )?;
        ip(&[
            "addr",
            "add",
            &format!("{subnet}.254/24"),
            "dev",
            &cluster.host_veth,
        ])?;
        ip(&["link", "set", &cluster.host_veth, "up"])?;
        for id in 1..=n {
            cluster.add_namespace(id)?;
        }
        Ok(cluster)
    }

    fn add_namespace(&mut self, id: u64) -> anyhow::Result<()> {
        let ns = format!("{}-n{id}", self.tag);
        ip(&["netns", "add", &ns])?;
        let address = format!("{}.{id}", self.subnet);
        let node_dir = self.dir.join(format!("node-{id}"));
        fs::create_dir_all(&node_dir)?;
        self.nodes.insert(
            id,
            Node {
                id,
                ns: ns.clone(),
                address: address.clone(),
                child: None,
                dir: node_dir,
            },
        );
        let (inside, outside) = (format!("{}e{id}", self.tag), format!("{}s{id}", self.tag));
        self.link_to_switch(&ns, &inside, &outside, &address)
    }

    /// Links namespace `ns` to the switch: a veth whose end `outside` is on the bridge and
    /// whose end `inside` is the namespace's `eth0` with `address`/24 (and `lo` up).
    fn link_to_switch(
        &self,
        ns: &str,
        inside: &str,
        outside: &str,
        address: &str,
    ) -> anyhow::Result<()> {
        in_ns(ns, &["link", "set", "lo", "up"])?;
        ip(&[
            "link", "add", inside, "type", "veth", "peer", "name", outside,
        ])?;
        ip(&["link", "set", inside, "netns", ns])?;
        ip(&["link", "set", outside, "netns", &self.switch])?;
        in_ns(
            &self.switch,
            &["link", "set", outside, "master", "br0", "up"],
        )?;
        in_ns(ns, &["link", "set", inside, "name", "eth0"])?;
        in_ns(
            ns,
            &["addr", "add", &format!("{address}/24"), "dev", "eth0"],
        )?;
        in_ns(ns, &["link", "set", "eth0", "up"])
    }

    /// Writes node `id`'s configuration: a member that joins, unless it is the first; `extra`
    /// is more TOML.
    pub fn configure(&self, id: u64, join: bool, extra: &str) -> anyhow::Result<()> {
        let node = &self.nodes[&id];
        let d = self.dir.display();
        fs::write(
            node.dir.join("controller.toml"),
            format!(
                "node_id = {id}\nlisten = \"{api}\"\npeer_listen = \"{peer}\"\njoin = {join}\n\
                 state_dir = \"{nd}/state\"\n\
                 admin_password = \"{pw}\"\n{snapshots}{extra}\n\
                 [tls]\nca_certificate = \"{d}/ca.pem\"\nca_key = \"{d}/ca.key\"\n",
                api = node.api(),
                peer = node.peer(),
                nd = node.dir.display(),
                pw = self.admin_password,
                // Small, so that a node catching up gets a snapshot (unless `extra` says).
                snapshots = if extra.contains("snapshot_every") {
                    ""
                } else {
                    "snapshot_every = 20\n"
                },
            ),
        )?;
        Ok(())
    }

    /// Starts node `id`'s controller inside its namespace (its pid is the controller's: `ip
    /// netns exec` execs it).
    pub fn start(&mut self, id: u64) -> anyhow::Result<()> {
        self.start_with_args(id, &[])
    }

    /// Like [`Self::start`], with more command-line arguments for the controller.
    pub fn start_with_args(&mut self, id: u64, args: &[&str]) -> anyhow::Result<()> {
        let node = self.nodes.get_mut(&id).expect("node");
        assert!(node.child.is_none(), "node {id} already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("controller.log"))?;
        let config = node.dir.join("controller.toml");
        let child = Command::new("ip")
            .args(["netns", "exec", &node.ns])
            .arg(bin("stratus-controller"))
            .args(["--config", &config.display().to_string()])
            .args(args)
            .env("STRATUS_LOG", "info,raft=info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        node.child = Some(child);
        Ok(())
    }

    /// Waits until node `id` answers HTTP at all.
    pub fn wait_serving(&self, id: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            // Any answer will do: a node waiting to be added has no users to authenticate.
            if self.get(id, "/cluster").is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "node {id} did not answer in {timeout:?}; log:\n{}",
                    self.log(id)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the configured nodes `1..=voters`: node 1 creates the cluster, each other one is
    /// started, then added through node 1's members API and must come out a voter.
    pub fn form(&mut self, voters: u64) -> anyhow::Result<()> {
        self.start(1)?;
        self.wait_serving(1, WAIT)?;
        for id in 2..=voters {
            self.start(id)?;
            self.wait_serving(id, WAIT)?;
            let (status, member) = self.add_member(1, id)?;
            if status != StatusCode::CREATED || member["role"] != "voter" {
                bail!("adding node {id}: {status} {member}\n{}", self.log(id));
            }
        }
        Ok(())
    }

    /// Waits until node `id`'s log has a line containing `text`.
    pub fn wait_log(&self, id: u64, text: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + WAIT;
        while !self.log(id).contains(text) {
            if Instant::now() > deadline {
                bail!(
                    "node {id} never logged {text:?}; its log:\n{}",
                    self.log(id)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Signals node `id`'s controller (the harness's own child, by pid).
    pub fn signal(&self, id: u64, signal: i32) {
        if let Some(pid) = self.nodes[&id].pid() {
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// Stops node `id` with SIGTERM (a clean shutdown) and reaps it.
    pub fn stop(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("node");
        if let Some(mut child) = node.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }

    /// SIGKILLs node `id` and reaps it.
    pub fn kill(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("node");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self, id: u64) -> String {
        fs::read_to_string(self.nodes[&id].dir.join("controller.log")).unwrap_or_default()
    }

    /// A client of the nodes' APIs (trusting the site CA) with these timeouts.
    pub fn client(&self, timeout: Duration, connect: Duration) -> anyhow::Result<Client> {
        client(&self.ca_pem, timeout, connect)
    }

    pub fn url(&self, id: u64, path: &str) -> String {
        format!("https://{}/api/v1{path}", self.nodes[&id].api())
    }

    fn answer(response: reqwest::blocking::Response) -> anyhow::Result<(StatusCode, Value)> {
        let status = response.status();
        let text = response.text()?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).with_context(|| format!("{status}: {text}"))?
        };
        Ok((status, body))
    }

    pub fn get(&self, id: u64, path: &str) -> anyhow::Result<(StatusCode, Value)> {
        Self::answer(
            self.http
                .get(self.url(id, path))
                .basic_auth("admin", Some(&self.admin_password))
                .send()?,
        )
    }

    /// A POST; answers the status, body and the ID of the node that served it.
    pub fn post(
        &self,
        id: u64,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<(StatusCode, Value, Option<u64>)> {
        self.post_with(id, path, body, &[])
    }

    /// A POST with extra headers.
    pub fn post_with(
        &self,
        id: u64,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(StatusCode, Value, Option<u64>)> {
        let mut request = self
            .http
            .post(self.url(id, path))
            .basic_auth("admin", Some(&self.admin_password))
            .json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send()?;
        let served = response
            .headers()
            .get("x-stratus-node")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let (status, body) = Self::answer(response)?;
        Ok((status, body, served))
    }

    pub fn delete(&self, id: u64, path: &str) -> anyhow::Result<(StatusCode, Value)> {
        Self::answer(
            self.http
                .delete(self.url(id, path))
                .basic_auth("admin", Some(&self.admin_password))
                .send()?,
        )
    }

    /// The leader as node `id` sees it, with the term.
    pub fn leader_seen_by(&self, id: u64) -> Option<(u64, u64)> {
        let (status, cluster) = self.get(id, "/cluster").ok()?;
        if status != StatusCode::OK {
            return None;
        }
        Some((cluster["leader"].as_u64()?, cluster["term"].as_u64()?))
    }

    /// Waits until a running node names a leader that itself says it leads.
    pub fn wait_leader(&self, timeout: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            for (&id, node) in &self.nodes {
                if node.child.is_none() {
                    continue;
                }
                if let Some((leader, _)) = self.leader_seen_by(id) {
                    if self.nodes.get(&leader).is_some_and(|n| n.child.is_some())
                        && self.leader_seen_by(leader).map(|(l, _)| l) == Some(leader)
                    {
                        return Ok(leader);
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("no leader in {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Adds node `id` (running with `join = true`) through node `via`: answers the status and
    /// the member as the API showed it.
    pub fn add_member(&self, via: u64, id: u64) -> anyhow::Result<(StatusCode, Value)> {
        let node = &self.nodes[&id];
        let (status, body, _) = self.post(
            via,
            "/cluster/members",
            &json!({"id": id, "address": node.peer(), "api_address": node.api()}),
        )?;
        Ok((status, body))
    }

    /// Cuts node `id` off from the other nodes (nft drops in its namespace, both ways); the
    /// test process still reaches it.
    pub fn isolate(&self, id: u64) -> anyhow::Result<()> {
        let node = &self.nodes[&id];
        let rules = format!(
            "table inet partition {{\n\
             chain input {{ type filter hook input priority 0; ip saddr {s}.0/24 ip saddr != {s}.254 drop; }}\n\
             chain output {{ type filter hook output priority 0; ip daddr {s}.0/24 ip daddr != {s}.254 drop; }}\n\
             }}\n",
            s = self.subnet
        );
        let file = node.dir.join("partition.nft");
        fs::write(&file, rules)?;
        nft_in(&node.ns, &["-f", &file.display().to_string()])
    }

    /// Undoes [`Self::isolate`].
    pub fn heal(&self, id: u64) -> anyhow::Result<()> {
        nft_in(
            &self.nodes[&id].ns,
            &["delete", "table", "inet", "partition"],
        )
    }

    /// Puts node `id`'s state directory on a tmpfs of `mib` MiB of its own (before it first
    /// starts), so that the test can fill it.
    pub fn small_disk(&mut self, id: u64, mib: u64) -> anyhow::Result<()> {
        let state = self.nodes[&id].dir.join("state");
        fs::create_dir_all(&state)?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(&state)
            .output()?;
        if !out.status.success() {
            bail!("mount tmpfs: {}", String::from_utf8_lossy(&out.stderr));
        }
        self.mounts.push(state);
        Ok(())
    }

    /// Waits until node `id`'s controller has exited; answers its exit status.
    pub fn wait_exit(
        &mut self,
        id: u64,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let node = self.nodes.get_mut(&id).expect("node");
            if let Some(status) = node.child.as_mut().expect("running").try_wait()? {
                node.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("node {id} still running after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether node `id` is running.
    pub fn running(&self, id: u64) -> bool {
        self.nodes[&id].child.is_some()
    }
}

impl TestCluster {
    /// Starts a host agent that knows every node, and waits until the cluster sees its host up.
    pub fn start_agent(&mut self) -> anyhow::Result<()> {
        let host = self.host_name.clone();
        let child = self.spawn_agent(&host, "agent", None)?;
        self.agent = Some(child);
        self.wait_host_up(&host, "agent")
    }

    /// Writes the configuration of the agent of `host` (a join token made through a node, as
    /// an administrator would; its state in `<name>/`, its log `<name>.log`), and starts it,
    /// in namespace `ns` if given (its pid is the agent's: `ip netns exec` execs it).
    fn spawn_agent(&self, host: &str, name: &str, ns: Option<&str>) -> anyhow::Result<Child> {
        let first = *self.nodes.keys().next().expect("a node");
        let (status, body, _) = self.post(
            first,
            &format!("/hosts/{host}/join-tokens"),
            &serde_json::json!({}),
        )?;
        if status != StatusCode::CREATED {
            bail!("join token: {status} {body}");
        }
        let token_file = self.dir.join(format!("{name}.join-token"));
        fs::write(&token_file, body["token"].as_str().context("a token")?)?;
        let controllers: Vec<String> = self
            .nodes
            .values()
            .map(|n| format!("https://{}", n.api()))
            .collect();
        let d = self.dir.display();
        let config = self.dir.join(format!("{name}.toml"));
        // Like every test agent, it leaves libvirt's NBD client directory alone.
        fs::write(
            &config,
            format!(
                "controller = \"{}\"\nca_certificate = \"{d}/ca.pem\"\n\
                 join_token_file = \"{}\"\nhost_name = \"{host}\"\n\
                 state_dir = \"{d}/{name}\"\ndomain_type = \"qemu\"\nreserved_memory_mib = 0\n\
                 poll_wait_secs = 20\nresync_secs = 2\nallow_loopback_sources = true\n\
                 file_location_roots = [\"{TEST_ROOT}\"]\n\
                 nbd_client_tls_dir = \"\"\n",
                controllers.join(","),
                token_file.display(),
            ),
        )?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))?;
        let mut command = match ns {
            Some(ns) => {
                let mut command = Command::new("ip");
                command
                    .args(["netns", "exec", ns])
                    .arg(bin("stratus-agent"));
                command
            }
            None => Command::new(bin("stratus-agent")),
        };
        Ok(command
            .args(["--config", &config.display().to_string()])
            .env("STRATUS_LOG", "info,stratus_agent=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?)
    }

    /// Waits until the cluster sees `host` up; the error carries the log `<name>.log`.
    fn wait_host_up(&self, host: &str, name: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + WAIT;
        while self.host_status_of(host).as_deref() != Some("up") {
            if Instant::now() > deadline {
                let log = fs::read_to_string(self.dir.join(format!("{name}.log")));
                bail!(
                    "the agent of {host} did not register in {WAIT:?}; log:\n{}",
                    log.unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The agent's host as some running node answers for it.
    pub fn host(&self) -> Option<Value> {
        self.host_named(&self.host_name)
    }

    pub fn host_status(&self) -> Option<String> {
        Some(self.host()?["status"].as_str()?.to_owned())
    }

    pub fn agent_log(&self) -> String {
        fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// Registers the test appliance as `name` (through node `via`).
    pub fn register_appliance(&self, via: u64, name: &str) -> anyhow::Result<Appliance> {
        let a = crate::appliance()?;
        let body = a.image_json(name, &format!("file://{}", a.dir().display()));
        let (status, answer, _) = self.post(via, "/images", &body)?;
        if status != StatusCode::CREATED {
            bail!("registering the appliance: {status} {answer}");
        }
        Ok(a)
    }

    /// Waits for the appliance's banner on instance `id`'s console.
    pub fn wait_banner(&self, id: u64, timeout: Duration) -> anyhow::Result<()> {
        self.wait_banner_in("agent", id, timeout)
            .with_context(|| format!("agent log:\n{}", self.agent_log()))
    }

    /// The running libvirt domains of this cluster's instances.
    pub fn domains(&self, cluster_id: &str) -> Vec<String> {
        let prefix = format!("stratus-{}-", &cluster_id[..8]);
        running_domains()
            .into_iter()
            .filter(|d| d.starts_with(&prefix))
            .collect()
    }
}

/// A host agent in a namespace of its own, linked to the switch: cutting its link cuts the
/// host off from every controller (and only it).
struct NsAgent {
    ns: String,
    /// Its veth's end in the switch namespace.
    switch_end: String,
    child: Option<Child>,
}

impl TestCluster {
    /// Starts the agent of another host, `<host_name>-<suffix>`, in a namespace of its own
    /// whose link to the switch the test may take down ([`Self::cut_agent`]); its state is in
    /// `agent-<suffix>/`. Waits until the cluster sees the host up; answers its name.
    pub fn start_agent_in_namespace(&mut self, suffix: &str) -> anyhow::Result<String> {
        assert!(
            !self.ns_agents.contains_key(suffix),
            "agent {suffix} already made"
        );
        let index = 100 + self.ns_agents.len();
        let ns = format!("{}-{suffix}", self.tag);
        let (inside, outside) = (
            format!("{}e{suffix}", self.tag),
            format!("{}s{suffix}", self.tag),
        );
        let host = format!("{}-{suffix}", self.host_name);
        ip(&["netns", "add", &ns])?;
        self.ns_agents.insert(
            suffix.to_owned(),
            NsAgent {
                ns: ns.clone(),
                switch_end: outside.clone(),
                child: None,
            },
        );
        self.link_to_switch(&ns, &inside, &outside, &format!("{}.{index}", self.subnet))?;
        let child = self.spawn_agent(&host, &format!("agent-{suffix}"), Some(&ns))?;
        self.ns_agents.get_mut(suffix).expect("made above").child = Some(child);
        self.wait_host_up(&host, &format!("agent-{suffix}"))?;
        Ok(host)
    }

    /// Stops agent `suffix` as systemd would (SIGTERM) and waits for it to exit.
    pub fn stop_ns_agent(&mut self, suffix: &str) {
        if let Some(mut child) = self.ns_agents.get_mut(suffix).and_then(|a| a.child.take()) {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }

    /// Takes the link of agent `suffix`'s namespace down: its host is cut off from every
    /// controller.
    pub fn cut_agent(&self, suffix: &str) -> anyhow::Result<()> {
        in_ns(
            &self.switch,
            &["link", "set", &self.ns_agents[suffix].switch_end, "down"],
        )
    }

    /// Brings the link of agent `suffix`'s namespace up again.
    pub fn reconnect_agent(&self, suffix: &str) -> anyhow::Result<()> {
        in_ns(
            &self.switch,
            &["link", "set", &self.ns_agents[suffix].switch_end, "up"],
        )
    }

    pub fn ns_agent_log(&self, suffix: &str) -> String {
        fs::read_to_string(self.dir.join(format!("agent-{suffix}.log"))).unwrap_or_default()
    }

    /// Host `name` as some running node answers for it.
    pub fn host_named(&self, name: &str) -> Option<Value> {
        for (&id, node) in &self.nodes {
            if node.child.is_none() {
                continue;
            }
            if let Ok((StatusCode::OK, host)) = self.get(id, &format!("/hosts/{name}")) {
                return Some(host);
            }
        }
        None
    }

    pub fn host_status_of(&self, name: &str) -> Option<String> {
        Some(self.host_named(name)?["status"].as_str()?.to_owned())
    }

    /// Waits for the appliance's banner on instance `id`'s console, as the agent whose state
    /// directory is `agent_dir` (under the cluster's directory) keeps it.
    pub fn wait_banner_in(
        &self,
        agent_dir: &str,
        id: u64,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let console = self
            .dir
            .join(format!("{agent_dir}/instances/{id}/console.log"));
        let deadline = Instant::now() + timeout;
        while !fs::read_to_string(&console)
            .unwrap_or_default()
            .contains(BANNER)
        {
            if Instant::now() > deadline {
                bail!(
                    "no banner from instance {id} in {timeout:?} ({})",
                    console.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
            let _ = agent.wait();
        }
        for agent in self.ns_agents.values_mut() {
            if let Some(mut child) = agent.child.take() {
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                let _ = child.wait();
            }
            let _ = ip(&["netns", "delete", &agent.ns]);
        }
        // The domains this cluster's agent started (their names carry the cluster ID).
        let cluster_id = self
            .nodes
            .keys()
            .find_map(|&id| self.get(id, "/cluster").ok())
            .and_then(|(_, c)| c["cluster_id"].as_str().map(str::to_owned));
        if let Some(cluster_id) = cluster_id.filter(|c| c.len() >= 8) {
            for domain in self.domains(&cluster_id) {
                destroy_domain(&domain);
            }
        }
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                // A stopped node must be resumed to die of SIGTERM; SIGKILL needs no resume.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for mount in &self.mounts {
            let _ = Command::new("umount").arg(mount).status();
        }
        for node in self.nodes.values() {
            let _ = ip(&["netns", "delete", &node.ns]);
        }
        let _ = ip(&["netns", "delete", &self.switch]);
        let _ = ip(&["link", "delete", &self.host_veth]);
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
