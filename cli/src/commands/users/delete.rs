//! `stratus-delete-user`: remove accounts (administrators; never your own, never the last
//! administrator, never one that still owns instances or disks).

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use crate::commands::{for_each_id, Context};
use crate::output;

#[derive(Debug, Args)]
pub struct DeleteUserArgs {
    /// Login names of the accounts to remove
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
}

pub fn run(
    ctx: &Context,
    args: &DeleteUserArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    for_each_id(
        &args.names,
        err,
        |name| client.delete_user(name).map(|()| name.clone()),
        |name| {
            out.write_all(output::render_deleted(&format!("user {name}")).as_bytes())?;
            out.flush()
        },
    )
}
