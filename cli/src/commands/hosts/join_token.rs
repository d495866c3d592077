//! `stratus-create-join-token HOST`: a one-time token for a hypervisor host (administrators).
//! The host's agent enrols with it (`join_token_file` in its `agent.toml`) and gets a
//! certificate of its own; the token is shown this once.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use super::super::Context;
use crate::output;

#[derive(Debug, Args)]
pub struct CreateJoinTokenArgs {
    /// The host's name in the cloud (its agent's host_name, by default the system host name)
    #[arg(value_name = "HOST")]
    pub host: String,
    /// How long the token may be used, in seconds (an hour unless given, at most a week)
    #[arg(long, value_name = "SECS")]
    pub ttl: Option<u64>,
    /// Print the answer as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(
    ctx: &Context,
    args: &CreateJoinTokenArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let token = ctx.client()?.create_join_token(&args.host, args.ttl)?;
    let text = if args.json {
        format!("{}\n", serde_json::to_string_pretty(&token)?)
    } else {
        output::render_join_token(&token)
    };
    out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
