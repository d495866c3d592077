//! `stratus-describe-endorsers`: the endorser certificates the Marketplace trusts directly (in
//! addition to the certificates its trusted CAs issued).

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use super::Context;
use crate::output;

#[derive(Debug, Args)]
pub struct DescribeEndorsersArgs {
    /// Print the endorsers as a JSON array
    #[arg(long)]
    pub json: bool,
}

pub fn run(
    ctx: &Context,
    args: &DescribeEndorsersArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let endorsers = ctx.marketplace_client()?.list_endorsers()?;
    let text = if args.json {
        output::render_json(&endorsers)
    } else {
        output::render_endorsers(&endorsers)
    };
    out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
