//! `stratus-agent`: registers this host, follows the controller's desired state and reconciles
//! it with libvirt. Stopping the agent leaves every domain running.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use stratus_agent::command_line::Args;
use stratus_agent::config::AgentConfig;
use stratus_agent::controller_client::{ClientError, ControllerClient};
use stratus_agent::hypervisor::probe::{resolve_domain_type, ProbeGuest};
use stratus_agent::hypervisor::{Hypervisor, LibvirtHypervisor};
use stratus_agent::identity::{self, IdentityStore};
use stratus_agent::images::cache::ImageCache;
use stratus_agent::images::download::{Downloader, SourcePolicy};
use stratus_agent::instance_dir::InstanceDirs;
use stratus_agent::inventory;
use stratus_agent::lease::{self, Lease};
use stratus_agent::metrics::server::{self as metrics_server, BearerToken, HostCertificate};
use stratus_agent::metrics::AgentMetrics;
use stratus_agent::reconcile::storage::Storage;
use stratus_agent::reconcile::Reconciler;
use stratus_agent::self_fence;
use stratus_agent::volumes::credentials::{ClientCredentials, QemuCredentials, ServerCredentials};
use stratus_agent::volumes::nbd::NbdExports;
use stratus_agent::volumes::pool::VolumePool;
use stratus_common::agent::{HostDesired, RegisterHost};
use tokio::sync::{mpsc, watch};

fn load_config(path: &PathBuf) -> anyhow::Result<AgentConfig> {
    let config: AgentConfig = match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("config {}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => AgentConfig::default(),
        Err(e) => return Err(e).with_context(|| format!("config {}", path.display())),
    };
    config
        .validate()
        .with_context(|| format!("config {}", path.display()))?;
    Ok(config)
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRATUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("stratus-agent: {e:#}");
        std::process::exit(1);
    }
}

fn system_host_name() -> anyhow::Result<String> {
    let name = sysinfo::System::host_name().context("cannot read the host name")?;
    // The cloud's name is the first DNS label.
    Ok(name.split('.').next().unwrap_or_default().to_owned())
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = load_config(&args.config)?;
    init_tracing(&config.log_format);
    let host = match &config.host_name {
        Some(name) => name.clone(),
        None => system_host_name()?,
    };
    stratus_common::names::validate_name("host name", &host)?;
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("state directory {}", config.state_dir.display()))?;

    let hv: Arc<dyn Hypervisor> = Arc::new(
        LibvirtHypervisor::connect(&config.libvirt_uri)
            .with_context(|| format!("libvirt at {}", config.libvirt_uri))?,
    );
    let info = hv.info().context("libvirt host information")?;
    let probe = match (&config.probe_kernel, &config.probe_initrd) {
        (Some(kernel), Some(initrd)) => Some(ProbeGuest {
            kernel: kernel.clone(),
            initrd: initrd.clone(),
            banner: config.probe_banner.clone(),
            work_dir: config.state_dir.join("probe"),
        }),
        _ => None,
    };
    let domain_type = {
        let hv = hv.clone();
        let setting = config.domain_type;
        let info = info.clone();
        tokio::task::spawn_blocking(move || {
            resolve_domain_type(setting, &info, probe.as_ref(), hv.as_ref())
        })
        .await?
    };
    let inv = inventory::measure(&config.state_dir, config.reserved_memory_mib)
        .context("host inventory")?;
    let pool = match &config.volume_pool {
        Some(dir) => Some(Arc::new(
            VolumePool::open(dir).with_context(|| format!("volume pool {}", dir.display()))?,
        )),
        None => None,
    };
    let volume_pool_gib = match &pool {
        Some(pool) => Some(pool.capacity().context("volume pool size")? >> 30),
        None => None,
    };
    let registration = RegisterHost {
        name: host.clone(),
        vcpus: inv.vcpus,
        memory_mib: inv.memory_mib,
        disk_gib: inv.disk_gib,
        domain_type,
        arch: info.arch.clone(),
        hypervisor: info.hypervisor.clone(),
        volume_pool_gib,
    };
    tracing::info!(host = %host, domain_type = domain_type.as_str(), vcpus = inv.vcpus, memory_mib = inv.memory_mib, "agent starting");

    let tls_needed = config
        .controllers()
        .iter()
        .any(|c| c.starts_with("https://"));
    let ca_pem = if tls_needed {
        Some(std::fs::read(&config.ca_certificate).with_context(|| {
            format!(
                "ca_certificate {} (the site CA, copied from a controller's state directory)",
                config.ca_certificate.display()
            )
        })?)
    } else {
        None
    };
    // Self-fencing runs before the controller is reached: an agent that restarts while cut
    // off still destroys in time the guests its lease covers.
    let lease = Arc::new(Lease::open(
        config.state_dir.join("lease"),
        &stratus_agent::reconcile::host_boot(),
    ));
    tokio::spawn(self_fence::watch(
        lease.clone(),
        hv.clone(),
        InstanceDirs::new(&config.state_dir),
        host.clone(),
    ));
    let client = ControllerClient::new(&config.controllers(), ca_pem.as_deref(), None)
        .context("controller client")?;
    let store = IdentityStore::new(config.state_dir.join("tls"));
    let identity = identity::establish(&client, &store, &host, &config.join_token_file)
        .await
        .context("host identity")?;
    // The metrics listener's token and certificate, checked before anything else starts.
    let metrics_token = match config.metrics_listen {
        Some(_) => Some(Arc::new(
            BearerToken::read(&config.metrics_token_file).context("host metrics")?,
        )),
        None => None,
    };
    let metrics_certificate = match config.metrics_listen {
        Some(_) if !config.metrics_plain_http => Some(Arc::new(
            HostCertificate::new(&identity).context("host metrics")?,
        )),
        _ => None,
    };
    let credentials = qemu_credentials(&config, ca_pem.as_deref())?;
    if let Some(credentials) = &credentials {
        credentials
            .install(&identity)
            .context("NBD TLS credentials")?;
    }
    let server_credentials = credentials.as_ref().and_then(|c| c.server.clone());
    tokio::spawn(identity::renew_forever(
        client.clone(),
        store,
        host.clone(),
        identity,
        {
            let metrics_certificate = metrics_certificate.clone();
            move |renewed| {
                if let Some(certificate) = &metrics_certificate {
                    match certificate.replace(renewed) {
                        Ok(()) => {
                            tracing::info!("the metrics listener presents the renewed certificate")
                        }
                        Err(e) => {
                            tracing::warn!(error = %stratus_agent::failure::error_chain(&e), "cannot present the renewed certificate for metrics")
                        }
                    }
                }
                if let Some(credentials) = &credentials {
                    if let Err(e) = credentials.install(renewed) {
                        tracing::warn!(error = %stratus_agent::failure::error_chain(&e), "cannot install the renewed certificate for NBD");
                    }
                }
            }
        },
    ));
    let cluster_id = register(&client, &registration).await;
    tracing::info!(cluster = %cluster_id, "registered with the controller");

    let downloader = Downloader::new(SourcePolicy {
        allow_loopback: config.allow_loopback_sources,
        file_roots: config.file_location_roots.clone(),
        max_undeclared_bytes: config.max_image_bytes,
    });
    let images = Arc::new(
        ImageCache::open(
            &config.state_dir.join("images"),
            config.image_cache_bytes,
            downloader,
        )
        .context("image cache")?,
    );
    let (reports_tx, reports_rx) = mpsc::unbounded_channel();
    let network = stratus_agent::network::Network::host(stratus_agent::network::Uplink {
        interface: config.uplink.clone(),
        vlan: config.uplink_vlan,
    });
    let mut reconciler = Reconciler::new(
        hv.clone(),
        images.clone(),
        network,
        config.network_netns.clone(),
        InstanceDirs::new(&config.state_dir),
        domain_type,
        cluster_id.clone(),
        reports_tx.clone(),
    )
    .with_stop_timeout(Duration::from_secs(config.stop_timeout_secs))
    .with_start_confirmation(START_CONFIRMATION)
    .with_host(&host)
    .with_lease(lease.clone());
    let storage = match (&pool, config.nbd_listen) {
        (Some(pool), Some(listen)) => {
            reconciler = reconciler.with_volume_pool(pool.clone());
            let exports = NbdExports::open(
                &config.state_dir.join("exports"),
                listen,
                server_credentials
                    .clone()
                    .unwrap_or_else(|| ServerCredentials::new(server_credentials_dir(&config))),
            )
            .context("NBD exports")?;
            Some(Arc::new(Storage::new(pool.clone(), exports, reports_tx)))
        }
        _ => None,
    };
    let reconciler = Arc::new(reconciler);
    tokio::spawn(stratus_agent::outbox::report_loop(
        client.clone(),
        host.clone(),
        reports_rx,
    ));
    tokio::spawn(stratus_agent::observe::observe_loop(
        client.clone(),
        host.clone(),
        InstanceDirs::new(&config.state_dir),
        hv.clone(),
        cluster_id.clone(),
        config.state_dir.clone(),
        images.clone(),
    ));
    let (desired_tx, mut desired_rx) = watch::channel::<Option<HostDesired>>(None);
    if let (Some(addr), Some(token)) = (config.metrics_listen, metrics_token) {
        let listener = metrics_server::bind(addr).await?;
        let acceptor = match &metrics_certificate {
            Some(certificate) => {
                Some(metrics_server::tls_acceptor(certificate.clone()).context("host metrics")?)
            }
            None => None,
        };
        let metrics = Arc::new(AgentMetrics::new(
            hv.clone(),
            cluster_id.clone(),
            images.clone(),
            desired_rx.clone(),
            reconciler.timings(),
        ));
        tracing::info!(%addr, tls = acceptor.is_some(), "serving the host's metrics at /metrics");
        tokio::spawn(metrics_server::serve(
            listener,
            acceptor,
            metrics_server::router(metrics, token),
        ));
    }
    let registration = Arc::new(std::sync::Mutex::new(registration));
    if let Some(pool) = &pool {
        tokio::spawn(watch_pool(
            client.clone(),
            registration.clone(),
            pool.clone(),
        ));
    }
    let poller = tokio::spawn(poll_loop(
        client.clone(),
        host.clone(),
        registration,
        Duration::from_secs(config.poll_wait_secs),
        desired_tx,
        lease.clone(),
    ));

    let mut resync = tokio::time::interval(Duration::from_secs(config.resync_secs));
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            changed = desired_rx.changed() => if changed.is_err() { break },
            _ = resync.tick() => {}
            _ = &mut shutdown => break,
        }
        let Some(desired) = desired_rx.borrow_and_update().clone() else {
            continue;
        };
        if desired.cluster_id != cluster_id {
            anyhow::bail!(
                "the controller now serves cluster {} but this agent joined {cluster_id}; restart the agent",
                desired.cluster_id
            );
        }
        let listed_at = reconciler.epoch();
        let domains = {
            let hv = hv.clone();
            match tokio::task::spawn_blocking(move || hv.list()).await? {
                Ok(domains) => domains,
                Err(e) => {
                    tracing::warn!(error = %stratus_agent::failure::error_chain(&e), "cannot list domains");
                    continue;
                }
            }
        };
        if let Some(storage) = storage.as_ref().filter(|s| s.begin()) {
            let storage = storage.clone();
            let (volumes, exports) = (desired.volumes.clone(), desired.exports.clone());
            tokio::task::spawn_blocking(move || storage.reconcile(&volumes, &exports));
        }
        for action in reconciler.plan(&desired, &domains, listed_at) {
            let reconciler = reconciler.clone();
            tokio::task::spawn_blocking(move || reconciler.execute(action));
        }
    }
    poller.abort();
    let since = desired_rx.borrow().as_ref().map_or(0, |d| d.version);
    self_fence::give_up(
        &lease,
        &client,
        hv.clone(),
        InstanceDirs::new(&config.state_dir),
        &host,
        since,
    )
    .await;
    tracing::info!("agent stopped; domains left running");
    Ok(())
}

fn server_credentials_dir(config: &AgentConfig) -> PathBuf {
    config.state_dir.join("tls/nbd-server")
}

/// Where the host's certificate goes for QEMU: the NBD server's credentials on a storage
/// host, the NBD client's in libvirt's directory unless switched off. `None` without the
/// site CA (a controller reached over plain HTTP and no `ca_certificate`): then exports
/// cannot start and remote disks cannot be reached, which the log says now.
fn qemu_credentials(
    config: &AgentConfig,
    ca_pem: Option<&[u8]>,
) -> anyhow::Result<Option<QemuCredentials>> {
    let ca = match ca_pem {
        Some(pem) => Some(pem.to_vec()),
        None => std::fs::read(&config.ca_certificate).ok(),
    };
    let Some(ca) = ca else {
        tracing::warn!(ca_certificate = %config.ca_certificate.display(),
            "no site CA: NBD exports and remote disks (TLS) are unavailable");
        return Ok(None);
    };
    let ca_pem = String::from_utf8(ca).context("ca_certificate is not PEM text")?;
    let server = config
        .volume_pool
        .as_ref()
        .map(|_| ServerCredentials::new(server_credentials_dir(config)));
    let client = if config.nbd_client_tls_dir.as_os_str().is_empty() {
        None
    } else {
        let group = Some(config.nbd_client_key_group.as_str()).filter(|g| !g.is_empty());
        Some(
            ClientCredentials::new(
                config.nbd_client_tls_dir.clone(),
                group,
                config.state_dir.join("tls/nbd-client-dir"),
            )
            .context("nbd_client_key_group")?,
        )
    };
    Ok(Some(QemuCredentials {
        ca_pem,
        server,
        client,
    }))
}

/// Registers, retrying until the controller answers; returns the cluster ID.
async fn register(client: &ControllerClient, registration: &RegisterHost) -> String {
    let mut delay = Duration::from_millis(200);
    loop {
        match client.register(registration).await {
            Ok(registered) => return registered.cluster_id,
            Err(e) => {
                tracing::warn!(error = %stratus_agent::failure::error_chain(&e), "registration failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Long-polls the controller for desired state, forever; each answer renews the lease. A
/// long-poll lasts at most a third of the lease, so a host in touch renews it in time.
async fn poll_loop(
    client: ControllerClient,
    host: String,
    registration: Arc<std::sync::Mutex<RegisterHost>>,
    wait: Duration,
    desired: watch::Sender<Option<HostDesired>>,
    lease: Arc<Lease>,
) {
    let mut version = 0;
    let mut delay = Duration::from_millis(200);
    loop {
        let wait = lease.lease().map_or(wait, |lease| wait.min(lease / 3));
        let sent_at = lease::boottime();
        match client.desired(&host, version, wait).await {
            Ok(next) => {
                // Recorded (what may be evacuated on disk) before anything of it can start.
                let renewed = {
                    let (lease, next) = (lease.clone(), next.clone());
                    tokio::task::spawn_blocking(move || lease.renewed(sent_at, &next)).await
                };
                match renewed {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        // Nothing of this answer runs before the lease is on disk.
                        tracing::error!(error = %stratus_agent::failure::error_chain(&e), "cannot record the lease; asking again");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                        continue;
                    }
                    Err(e) => tracing::error!(error = %e, "recording the lease panicked"),
                }
                version = next.version;
                delay = Duration::from_millis(200);
                desired.send_replace(Some(next));
            }
            Err(e) => {
                tracing::warn!(error = %stratus_agent::failure::error_chain(&e), "waiting for desired state failed; retrying");
                if matches!(&e, ClientError::Refused { status, .. } if status.as_u16() == 404) {
                    let current = registration.lock().expect("registration lock").clone();
                    register(&client, &current).await;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// How often a storage host measures its pool's room again.
const POOL_WATCH: Duration = Duration::from_secs(60);

/// Registers the host again when its volume pool's capacity moved by a GiB or more (something
/// else filled or freed its file system), so the controller places disks by the room there
/// really is. A smaller move waits, so a size near a GiB boundary does not flap.
async fn watch_pool(
    client: ControllerClient,
    registration: Arc<std::sync::Mutex<RegisterHost>>,
    pool: Arc<VolumePool>,
) {
    let mut registered = None;
    let mut tick = tokio::time::interval(POOL_WATCH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let measured = {
            let pool = pool.clone();
            tokio::task::spawn_blocking(move || pool.capacity()).await
        };
        let capacity = match measured {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => {
                tracing::warn!(error = %stratus_agent::failure::error_chain(&e), "cannot measure the volume pool");
                continue;
            }
            Err(_) => continue,
        };
        let first = *registered.get_or_insert(capacity);
        if capacity.abs_diff(first) < 1 << 30 {
            continue;
        }
        let updated = {
            let mut current = registration.lock().expect("registration lock");
            current.volume_pool_gib = Some(capacity >> 30);
            current.clone()
        };
        match client.register(&updated).await {
            Ok(_) => {
                tracing::info!(
                    volume_pool_gib = capacity >> 30,
                    "volume pool capacity changed; registered again"
                );
                registered = Some(capacity);
            }
            Err(e) => {
                tracing::warn!(error = %stratus_agent::failure::error_chain(&e), "registering the new pool capacity failed; retrying")
            }
        }
    }
}

/// How long a fresh start waits for the controller to record it Booting before creating the
/// guest (a later pass tries again after that).
const START_CONFIRMATION: Duration = Duration::from_secs(30);

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
