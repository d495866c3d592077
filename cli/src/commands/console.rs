//! `stratus-console-instance`: print an instance's serial console (what the guest printed,
//! the last 256 KiB), and with `--follow` go on printing it as the guest writes, until the
//! instance ends or the user interrupts.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use super::Context;

#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// ID of the instance
    #[arg(value_name = "ID")]
    pub id: u64,

    /// Keep printing new output as the guest writes it
    #[arg(short, long)]
    pub follow: bool,
}

pub fn run(ctx: &Context, args: &ConsoleArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    client.console(args.id, args.follow, out)?;
    Ok(ExitCode::SUCCESS)
}
