//! `stratus-describe-users`: the accounts of the cloud (administrators).

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use crate::commands::Context;
use crate::output;

#[derive(Debug, Args)]
pub struct DescribeUsersArgs {
    /// Print the accounts as a JSON array
    #[arg(long)]
    pub json: bool,
}

pub fn run(
    ctx: &Context,
    args: &DescribeUsersArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let mut users = ctx.client()?.list_users()?;
    users.sort_by(|a, b| a.name.cmp(&b.name));
    let text = if args.json {
        output::render_json(&users)
    } else {
        output::render_users(&users)
    };
    out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
