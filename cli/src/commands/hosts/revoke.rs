//! `stratus-revoke-host HOST...`: take every certificate (and unused join token) of hosts out
//! of force (administrators). A revoked host's agent is refused until it enrols again with a
//! new join token.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use super::super::{for_each_id, Context};
use crate::output;

#[derive(Debug, Args)]
pub struct RevokeHostArgs {
    /// Names of the hosts to revoke
    #[arg(value_name = "HOST", required = true)]
    pub hosts: Vec<String>,
}

pub fn run(
    ctx: &Context,
    args: &RevokeHostArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    for_each_id(
        &args.hosts,
        err,
        |host| client.revoke_host(host).map(|()| host.clone()),
        |host| {
            out.write_all(output::render_revoked(&host).as_bytes())?;
            out.flush()
        },
    )
}
