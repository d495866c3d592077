//! `stratus-fence-host HOST...`: declare hosts that are down dead (administrators), after
//! powering them off or cutting them off for good: their instances run with `--evacuate` (all
//! of them, where the site evacuates all) start again on other hosts, from their image. A
//! fenced host that comes back destroys its copies of them.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use crate::commands::{for_each_id, Context};
use crate::output;

#[derive(Debug, Args)]
pub struct FenceHostArgs {
    /// Names of the hosts to fence (each must be down)
    #[arg(value_name = "HOST", required = true)]
    pub hosts: Vec<String>,
}

pub fn run(
    ctx: &Context,
    args: &FenceHostArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    for_each_id(
        &args.hosts,
        err,
        |host| client.fence_host(host),
        |host| {
            out.write_all(output::render_fenced_host(&host).as_bytes())?;
            out.flush()
        },
    )
}
