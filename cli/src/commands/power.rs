//! `stratus-stop-instance`, `stratus-start-instance`, `stratus-reboot-instance`: power
//! instances off (keeping their disk, addresses and persistent disks), boot stopped ones again
//! on their host, restart running ones. Each asks and returns; `stratus-describe-instance`
//! shows the instance reach Stopped or Running.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use super::{for_each_id, Context};
use crate::client::PowerAction;
use crate::output;

#[derive(Debug, Args)]
pub struct PowerArgs {
    /// IDs of the instances
    #[arg(value_name = "ID", required = true)]
    pub ids: Vec<u64>,
}

pub fn run(
    ctx: &Context,
    action: PowerAction,
    args: &PowerArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    for_each_id(
        &args.ids,
        err,
        |&id| client.power_instance(id, action),
        |instance| {
            out.write_all(output::render_power(action, &instance).as_bytes())?;
            out.flush()
        },
    )
}
