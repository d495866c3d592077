//! `stratus-delete-image`: remove site images (administrators). Instances already made from
//! one keep it; new ones can no longer name it. Marketplace entries are never deleted: their
//! endorsers deprecate them (`stratus-deprecate-metadata`).

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use super::{for_each_id, Context};
use crate::output;

#[derive(Debug, Args)]
pub struct DeleteImageArgs {
    /// Names of the site images to remove
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
}

pub fn run(
    ctx: &Context,
    args: &DeleteImageArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    for_each_id(
        &args.names,
        err,
        |name| client.delete_image(name).map(|()| name.clone()),
        |name| {
            out.write_all(output::render_deleted(&format!("image {name}")).as_bytes())?;
            out.flush()
        },
    )
}
