//! `stratus-kill-instance`: ask the cloud to destroy instances and release their resources.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use super::{for_each_id, Context};
use crate::output;

#[derive(Debug, Args)]
pub struct KillArgs {
    /// IDs of the instances to kill
    #[arg(value_name = "ID", required = true)]
    pub ids: Vec<u64>,
}

pub fn run(
    ctx: &Context,
    args: &KillArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    for_each_id(
        &args.ids,
        err,
        |&id| client.kill_instance(id),
        |instance| {
            out.write_all(output::render_kill(&instance).as_bytes())?;
            out.flush()
        },
    )
}
