//! `stratus-describe-hosts`: the hypervisor hosts of the cloud, their state, roles, load and
//! labels (administrators).

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use crate::commands::Context;
use crate::output;

#[derive(Debug, Args)]
pub struct DescribeHostsArgs {
    /// Print the hosts as a JSON array
    #[arg(long)]
    pub json: bool,
}

pub fn run(
    ctx: &Context,
    args: &DescribeHostsArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let mut hosts = ctx.client()?.list_hosts()?;
    hosts.sort_by(|a, b| a.name.cmp(&b.name));
    let text = if args.json {
        output::render_json(&hosts)
    } else {
        output::render_hosts(&hosts)
    };
    out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
