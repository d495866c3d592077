//! `stratus-remove-host HOST...`: forget hosts for good (administrators): their certificates
//! are revoked, and a host that comes back must enrol again with a new join token. A host is
//! removed only once it holds no instance or disk, unless forced.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use crate::commands::{for_each_id, Context};
use crate::output;

#[derive(Debug, Args)]
pub struct RemoveHostArgs {
    /// Names of the hosts to remove
    #[arg(value_name = "HOST", required = true)]
    pub hosts: Vec<String>,

    /// Remove a host even though it still holds instances or disks: only for a host that is
    /// down and gone for good. Its instances fail and the disks it stored are lost
    #[arg(long)]
    pub force: bool,
}

pub fn run(
    ctx: &Context,
    args: &RemoveHostArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    for_each_id(
        &args.hosts,
        err,
        |host| client.remove_host(host, args.force).map(|()| host.clone()),
        |host| {
            out.write_all(output::render_removed_host(&host).as_bytes())?;
            out.flush()
        },
    )
}
