//! `stratus-controller`: starts the Raft node, bootstraps a new cluster, serves the HTTP API.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use stratus_controller::config::ControllerConfig;
use stratus_controller::images::MarketplaceSettings;
use stratus_controller::marketplace::TrustStore;
use stratus_controller::replica::{Consistency, Replica, ReplicaConfig};
use stratus_controller::services::{Services, Settings};
use stratus_controller::{api, secrets};

/// The StratusLab controller.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML).
    #[arg(long, short = 'c', default_value = "/etc/stratuslab/controller.toml")]
    config: PathBuf,
    /// Override `listen` from the file.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Override `state_dir` from the file.
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

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
        eprintln!("stratus-controller: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = load_config(&args)?;
    init_tracing(&config.log_format);
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("state directory {}", config.state_dir.display()))?;
    let agent_token = secrets::read_or_create(&config.agent_token_file)
        .with_context(|| format!("agent token {}", config.agent_token_file.display()))?;
    let replica = Replica::start(ReplicaConfig::single(
        config.node_id,
        config.state_dir.join("raft.redb"),
        config.snapshot_every,
    ))?;
    if !replica.wait_for_leader(Duration::from_secs(10)).await {
        anyhow::bail!("no Raft leader after 10 s");
    }
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
            agent_token,
            host_timeout: Duration::from_secs(config.host_timeout_secs),
            marketplace,
            volumes: config.volumes.settings(),
        },
    ));
    if !replica
        .read(Consistency::Linearizable, |s| s.is_bootstrapped())
        .await?
    {
        let password = match &config.admin_password {
            Some(p) => p.clone(),
            None => {
                let file = config.admin_password_file();
                secrets::read_or_create(&file)
                    .with_context(|| format!("admin password {}", file.display()))?
            }
        };
        services
            .users
            .bootstrap_if_needed(
                &config.admin_user,
                &password,
                config.cpu_allocation_ratio,
                None,
            )
            .await
            .context("bootstrap")?;
        tracing::info!(admin = %config.admin_user, "new cluster bootstrapped");
    }
    services
        .networks
        .define_configured(&config.networks)
        .await
        .context("networks")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listen on {}", config.listen))?;
    let cluster = services.cluster().await?.cluster_id;
    tracing::info!(listen = %config.listen, %cluster, "controller serving");
    axum::serve(listener, api::router(services))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("HTTP server")?;
    replica.shutdown();
    tracing::info!("controller stopped");
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
