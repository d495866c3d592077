//! `stratus-delete-group`: delete server groups of yours (only once every instance in them is
//! Done).

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use super::parse_group_name;
use crate::commands::{for_each_id, Context};
use crate::output;

#[derive(Debug, Args)]
pub struct DeleteGroupArgs {
    /// Names of the groups to delete
    #[arg(value_name = "NAME", required = true, value_parser = parse_group_name)]
    pub names: Vec<String>,
}

pub fn run(
    ctx: &Context,
    args: &DeleteGroupArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    for_each_id(
        &args.names,
        err,
        |name| client.delete_group(name).map(|()| name.clone()),
        |name| {
            out.write_all(output::render_deleted(&format!("group {name}")).as_bytes())?;
            out.flush()
        },
    )
}
