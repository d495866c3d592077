//! The subcommands, one module each. A command gets the [`Context`] (options and environment),
//! writes its results to `out` and per-item errors to `err`, and returns the fatal error that
//! stopped it, if any, for `main` to print.

pub mod build_metadata;
pub mod copy_config;
pub mod deprecate_metadata;
pub mod describe;
pub mod describe_endorsers;
pub mod describe_images;
pub mod kill;
pub mod policy_image;
pub mod register_endorser;
pub mod run;
pub mod sign_metadata;
pub mod upload_metadata;

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
        Ok(Client::new(endpoint, credentials(&resolved))?)
    }

    /// A client for the Marketplace (the cloud endpoint unless `marketplace_endpoint` is
    /// configured), with the cloud credentials.
    pub fn marketplace_client(&self) -> anyhow::Result<Client> {
        marketplace_client(&self.resolve()?)
    }
}

/// A Marketplace client from settings already resolved.
pub fn marketplace_client(resolved: &ResolvedConfig) -> anyhow::Result<Client> {
    let endpoint = resolved.marketplace_endpoint()?.clone();
    Ok(Client::new(endpoint, credentials(resolved))?)
}

fn credentials(resolved: &ResolvedConfig) -> Option<Credentials> {
    resolved.username.clone().map(|username| Credentials {
        username,
        password: resolved.password.clone().unwrap_or_default(),
    })
}

/// Runs `action` on each ID and hands each result to `on_success` as it comes: a failure about
/// one ID is reported on `err` and the others go on; a failure about the whole endpoint stops the
/// loop and is returned. The exit code says whether any ID failed.
fn for_each_id<T>(
    ids: &[u64],
    err: &mut dyn Write,
    mut action: impl FnMut(u64) -> Result<T, ClientError>,
    mut on_success: impl FnMut(T) -> std::io::Result<()>,
) -> anyhow::Result<ExitCode> {
    let mut status = ExitCode::SUCCESS;
    for &id in ids {
        match action(id) {
            Ok(value) => on_success(value)?,
            Err(e) if e.is_fatal() => return Err(e.into()),
            Err(e) => {
                err.write_all(output::render_error(&e.to_string()).as_bytes())?;
                status = ExitCode::FAILURE;
            }
        }
    }
    Ok(status)
}
