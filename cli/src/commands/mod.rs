//! The subcommands, one module each. A command gets the [`Context`] (options and environment),
//! writes its results to `out` and per-item errors to `err`, and returns the fatal error that
//! stopped it, if any, for `main` to print.

pub mod build_metadata;
pub mod console;
pub mod copy_config;
pub mod delete_image;
pub mod deprecate_metadata;
pub mod describe;
pub mod describe_endorsers;
pub mod describe_images;
pub mod events;
pub mod groups;
pub mod hosts;
pub mod kill;
pub mod policy_image;
pub mod power;
pub mod register_endorser;
pub mod run;
pub mod sign_metadata;
pub mod upload_metadata;
pub mod users;
pub mod volumes;

use std::io::Write;
use std::process::ExitCode;

use crate::client::{Client, ClientError, Credentials};
use crate::config::{self, CliOptions, ConfigFile, ConfigLocation, Env, ResolvedConfig};
use crate::output;

/// What every command starts from: the global command-line options and the environment.
pub struct Context {
    pub options: CliOptions,
    pub env: Env,
}

impl Context {
    pub fn config_location(&self) -> Result<ConfigLocation, config::ConfigError> {
        config::config_location(&self.options, &self.env)
    }

    /// Reads the configuration file and merges it with the environment and the options.
    pub fn resolve(&self) -> Result<ResolvedConfig, config::ConfigError> {
        let location = self.config_location()?;
        let file = ConfigFile::load(&location)?;
        config::resolve(&file, &location.path, &self.env, &self.options)
    }

    /// A client for the configured endpoint and credentials.
    pub fn client(&self) -> anyhow::Result<Client> {
        let resolved = self.resolve()?;
        let endpoint = resolved.endpoint()?.clone();
        Ok(Client::new(
            endpoint,
            credentials(&resolved),
            &tls(&resolved),
        )?)
    }

    /// A client for the Marketplace (the cloud endpoint unless `marketplace_endpoint` is
    /// configured), with the cloud credentials.
    pub fn marketplace_client(&self) -> anyhow::Result<Client> {
        marketplace_client(&self.resolve()?)
    }

    /// A client for the persistent disk service (the cloud endpoint unless `pdisk_endpoint` is
    /// configured), with the pdisk credentials (each the cloud's unless configured).
    pub fn volume_client(&self) -> anyhow::Result<Client> {
        let resolved = self.resolve()?;
        let endpoint = resolved.pdisk_endpoint()?.clone();
        let credentials = resolved.pdisk_username.clone().map(|username| Credentials {
            username,
            password: resolved.pdisk_password.clone().unwrap_or_default(),
        });
        Ok(Client::new(endpoint, credentials, &tls(&resolved))?)
    }
}

/// A Marketplace client from settings already resolved.
pub fn marketplace_client(resolved: &ResolvedConfig) -> anyhow::Result<Client> {
    let endpoint = resolved.marketplace_endpoint()?.clone();
    Ok(Client::new(
        endpoint,
        credentials(resolved),
        &tls(resolved),
    )?)
}

/// How the client checks the cloud's certificate, and the client certificate it presents: the
/// configured `pem_certificate` and `pem_key` (the guide's defaults under `~/.globus` only when
/// configured, since a grid certificate the site does not trust would fail the handshake).
fn tls(resolved: &ResolvedConfig) -> crate::client::Tls {
    let configured = |s: &Option<config::Sourced<std::path::PathBuf>>| {
        s.as_ref()
            .filter(|s| s.source != config::Source::Default)
            .map(|s| s.value.clone())
    };
    let identity = configured(&resolved.pem_certificate).map(|certificate| {
        let key = resolved
            .pem_key
            .as_ref()
            .map(|k| k.value.clone())
            .unwrap_or_else(|| certificate.clone());
        (certificate, key)
    });
    crate::client::Tls {
        ca_certificate: resolved.ca_certificate.clone(),
        identity,
    }
}

fn credentials(resolved: &ResolvedConfig) -> Option<Credentials> {
    resolved.username.clone().map(|username| Credentials {
        username,
        password: resolved.password.clone().unwrap_or_default(),
    })
}

/// A failure about one item of a list a command works through (an instance ID, a disk UUID).
pub trait ItemFailure: std::error::Error + Send + Sync + 'static {
    /// True when it concerns the whole endpoint, so the command should stop, not go on.
    fn is_fatal(&self) -> bool;
}

impl ItemFailure for ClientError {
    fn is_fatal(&self) -> bool {
        ClientError::is_fatal(self)
    }
}

/// Runs `action` on each ID and hands each result to `on_success` as it comes: a failure about
/// one ID is reported on `err` and the others go on; a failure about the whole endpoint stops the
/// loop and is returned. The exit code says whether any ID failed.
fn for_each_id<K, T, E: ItemFailure>(
    ids: &[K],
    err: &mut dyn Write,
    mut action: impl FnMut(&K) -> Result<T, E>,
    mut on_success: impl FnMut(T) -> std::io::Result<()>,
) -> anyhow::Result<ExitCode> {
    let mut status = ExitCode::SUCCESS;
    for id in ids {
        match action(id) {
            Ok(value) => on_success(value)?,
            Err(e) => report_item_failure(e, err, &mut status)?,
        }
    }
    Ok(status)
}

/// Reports a failure about one item as an `[ERROR] ` line on `err` and marks `status` failed;
/// a failure about the whole endpoint is returned instead, to stop the command.
fn report_item_failure<E: ItemFailure>(
    failure: E,
    err: &mut dyn Write,
    status: &mut ExitCode,
) -> anyhow::Result<()> {
    if failure.is_fatal() {
        return Err(failure.into());
    }
    err.write_all(output::render_error(&failure.to_string()).as_bytes())?;
    *status = ExitCode::FAILURE;
    Ok(())
}
