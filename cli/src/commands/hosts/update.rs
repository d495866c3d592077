//! `stratus-update-host`: put a host in maintenance, so that no new instance or disk is placed
//! on it while those it holds stay, or back in service (administrators).

use std::io::Write;
use std::process::ExitCode;

use clap::{ArgGroup, Args};
use stratus_common::api::UpdateHost;

use crate::commands::Context;
use crate::output;

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("change").required(true)))]
pub struct UpdateHostArgs {
    /// Name of the host
    #[arg(value_name = "HOST")]
    pub host: String,

    /// Keep new instances and disks off the host (those it holds stay; it is drained, and may
    /// be shut down, once it runs no instance any more)
    #[arg(long, group = "change")]
    pub maintenance: bool,

    /// Why, for the other administrators (with --maintenance)
    // `requires` alone lets `--no-maintenance --reason` through: clap excuses a missing
    // requirement when an argument conflicting with it (the other of the group) is present.
    #[arg(
        long,
        value_name = "TEXT",
        requires = "maintenance",
        conflicts_with = "no_maintenance"
    )]
    pub reason: Option<String>,

    /// Put the host back in service
    #[arg(long, group = "change")]
    pub no_maintenance: bool,
}

impl UpdateHostArgs {
    /// The request: the group makes `--maintenance` and `--no-maintenance` exclusive.
    pub fn update(&self) -> UpdateHost {
        UpdateHost {
            maintenance: self.maintenance,
            reason: self.reason.clone(),
        }
    }
}

pub fn run(ctx: &Context, args: &UpdateHostArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let host = ctx.client()?.update_host(&args.host, &args.update())?;
    out.write_all(output::render_host_updated(&host).as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
