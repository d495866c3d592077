//! `stratus-controller`: starts the Raft node, bootstraps a new cluster, serves the HTTP API.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use stratus_common::api::CreateNetwork;
use stratus_controller::command_line::Args;
use stratus_controller::config::ControllerConfig;
use stratus_controller::images::MarketplaceSettings;
use stratus_controller::marketplace::TrustStore;
use stratus_controller::peer::{self, Directory, GrpcTransport, Me, PeerService};
use stratus_controller::pki::tls::{self, NodeTls};
use stratus_controller::pki::SiteCa;
use stratus_controller::replica::{Consistency, Replica, ReplicaConfig};
use stratus_controller::services::{Services, Settings};
use stratus_controller::state::MemberRecord;
use stratus_controller::{api, secrets};
use tokio_rustls::TlsAcceptor;

fn load_config(args: &Args) -> anyhow::Result<ControllerConfig> {
    let mut config = match std::fs::read_to_string(&args.config) {
        Ok(text) => {
            toml::from_str(&text).with_context(|| format!("config {}", args.config.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ControllerConfig::default(),
        Err(e) => return Err(e).with_context(|| format!("config {}", args.config.display())),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(dir) = &args.state_dir {
        config.state_dir = dir.clone();
    }
    config
        .validate()
        .with_context(|| format!("config {}", args.config.display()))?;
    Ok(config)
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRATUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,raft=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("stratus-controller: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = load_config(&args)?;
    init_tracing(&config.log_format);
    let shutdown = shutdown_on_signal();
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("state directory {}", config.state_dir.display()))?;

    // The site CA: made by a new cluster's first node, taken from the first node by the
    // others; this node's certificate is made from it at every start.
    let store = config.state_dir.join("raft.redb");
    let may_create = !config.join && !store.exists();
    let (ca, _) = SiteCa::load_or_create(&config.ca_certificate(), &config.ca_key(), may_create)?;
    let ca = Arc::new(ca);
    let tls = Arc::new(NodeTls {
        ca_pem: ca.certificate_pem().to_owned(),
        node: ca
            .issue_node(config.node_id, &config.certificate_names())
            .context("this node's certificate")?,
        user_roots: match &config.tls.user_ca_file {
            Some(file) => {
                let pem = std::fs::read_to_string(file)
                    .with_context(|| format!("tls.user_ca_file {}", file.display()))?;
                stratus_controller::pki::pem_certificates(&pem)
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("tls.user_ca_file {}", file.display()))?
            }
            None => Vec::new(),
        },
    });
    let api_tls = TlsAcceptor::from(tls.api_server_config().context("TLS for the API")?);
    let forwarding_tls = tls
        .node_client_config()
        .context("TLS for forwarding to the leader")?;

    // Raft, with its peers over gRPC.
    let me = Me {
        node_id: config.node_id,
        address: config.peer_address().to_string(),
        tls: Some(tls.clone()),
    };
    let directory = Directory::default();
    let transport = GrpcTransport::new(me.clone(), directory.clone());
    let mut replica_config = ReplicaConfig::single(
        config.node_id,
        config.state_dir.join("raft.redb"),
        config.snapshot_every,
    );
    if config.join {
        replica_config.voters.clear();
    }
    replica_config.force_new_cluster = args.force_new_cluster;
    let replica =
        Replica::start_with(replica_config, Arc::new(transport.clone())).with_context(|| {
            format!(
                "raft store {}",
                config.state_dir.join("raft.redb").display()
            )
        })?;
    transport.bind(replica.clone());
    let peer_listener = tokio::net::TcpListener::bind(config.peer_listen)
        .await
        .with_context(|| format!("peer_listen on {}", config.peer_listen))?;
    let peers = PeerService::new(
        me.clone(),
        replica.clone(),
        directory,
        config.state_dir.join("incoming-snapshots"),
    );
    let peer_server = tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(peer::server_tls(&tls))
            .context("TLS for the peer listener")?
            .add_service(peers.into_server())
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(peer_listener),
                stopping(&shutdown),
            ),
    );

    let mut trust = TrustStore::default();
    if let Some(file) = &config.marketplace.trusted_ca_file {
        let pem = std::fs::read_to_string(file)
            .with_context(|| format!("marketplace.trusted_ca_file {}", file.display()))?;
        trust.add_trusted_cas_pem(&file.display().to_string(), &pem)?;
    }
    let marketplace = MarketplaceSettings {
        trusted_cas: trust.trusted_cas,
        policy: config.marketplace.policy.clone(),
    };
    let services = Arc::new(Services::start(
        replica.clone(),
        Settings {
            ca: Some(ca.clone()),
            host_timeout: Duration::from_secs(config.host_timeout_secs),
            host_lease: Some(Duration::from_secs(config.host_lease_secs))
                .filter(|lease| !lease.is_zero()),
            placement: stratus_controller::scheduler::SitePlacement {
                strategy: config.placement,
                evacuate: config.evacuate,
            },
            marketplace,
            volumes: config.volumes.settings(),
            me,
            login_failures: config.logins.limits(),
            forwarding_tls: Some(forwarding_tls),
        },
    ));
    let bootstrapped = replica
        .read(Consistency::Stale, |s| s.is_bootstrapped())
        .await?;
    if !bootstrapped && !config.join {
        // A new cluster of one: it leads at once; create its first admin before serving.
        if !replica.wait_for_leader(Duration::from_secs(10)).await {
            anyhow::bail!("no Raft leader after 10 s");
        }
        bootstrap(&config, &services, &replica).await?;
    }
    tokio::spawn(define_networks(services.clone(), config.networks.clone()));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listen on {}", config.listen))?;
    let plain = match config.tls.plain_listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("tls.plain_listen on {address}"))?,
        ),
        None => None,
    };
    let identity = replica.identity();
    tracing::info!(
        listen = %config.listen,
        peer_listen = %config.peer_listen,
        plain_listen = ?config.tls.plain_listen,
        node = config.node_id,
        cluster = identity.cluster_id.as_deref().unwrap_or("(none yet: waiting to be added)"),
        "controller serving (TLS)"
    );
    let app = api::router(services);
    let plain_server = plain
        .map(|listener| tokio::spawn(tls::serve(listener, None, app.clone(), stopping(&shutdown))));
    let serve = tls::serve(listener, Some(api_tls), app, stopping(&shutdown));
    tokio::select! {
        () = serve => {}
        // A controller whose Raft node stopped must not go on answering: exit with why, so
        // the service manager restarts it (or the admin sees what to do).
        reason = replica.halted() => {
            peer_server.abort();
            anyhow::bail!("the raft node stopped: {reason}");
        }
    }
    if let Some(plain_server) = plain_server {
        let _ = plain_server.await;
    }
    peer_server.abort();
    replica.shutdown();
    tracing::info!("controller stopped");
    Ok(())
}

/// Creates the new cluster's first admin and records this node as its first member.
async fn bootstrap(
    config: &ControllerConfig,
    services: &Services,
    replica: &Replica,
) -> anyhow::Result<()> {
    let password = match &config.admin_password {
        Some(p) => p.clone(),
        None => {
            let file = config.admin_password_file();
            secrets::read_or_create(&file)
                .with_context(|| format!("admin password {}", file.display()))?
        }
    };
    let identity = replica.identity();
    let first = MemberRecord {
        id: config.node_id,
        address: config.peer_address().to_string(),
        api_address: config.api_address().to_string(),
        incarnation: identity.incarnation.clone(),
        voter: true,
    };
    services
        .users
        .bootstrap_if_needed(
            &config.admin_user,
            &password,
            config.cpu_allocation_ratio,
            identity.cluster_id.clone(),
            Some(first),
        )
        .await
        .context("bootstrap")?;
    tracing::info!(admin = %config.admin_user, "new cluster bootstrapped");
    Ok(())
}

/// Defines the configured networks the replicated state lacks, once the cluster can take
/// writes (a restarted member may have to wait for its peers).
async fn define_networks(services: Arc<Services>, networks: Vec<CreateNetwork>) {
    if networks.is_empty() {
        return;
    }
    let mut logged = false;
    loop {
        let bootstrapped = services
            .replica
            .read(Consistency::Linearizable, |s| s.is_bootstrapped())
            .await;
        if bootstrapped == Ok(true) {
            match services.networks.define_configured(&networks).await {
                Ok(()) => return,
                Err(e) if !logged => {
                    tracing::warn!(error = %e, "configured networks not defined yet; retrying");
                    logged = true;
                }
                Err(_) => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A watch that turns true on SIGTERM or SIGINT, for every server to stop on.
fn shutdown_on_signal() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        let _ = tx.send(true);
    });
    rx
}

/// Completes once the shutdown watch turned true.
fn stopping(
    shutdown: &tokio::sync::watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> {
    let mut shutdown = shutdown.clone();
    async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    }
}
