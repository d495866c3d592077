//! `stratus-delete-volume`: delete persistent disks (only your own, and only while no instance
//! uses them).

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use super::parse_disk_uuid;
use crate::commands::{for_each_id, Context};
use crate::output;

#[derive(Debug, Args)]
pub struct DeleteVolumeArgs {
    /// UUIDs of the disks to delete
    #[arg(value_name = "UUID", required = true, value_parser = parse_disk_uuid)]
    pub ids: Vec<String>,
}

pub fn run(
    ctx: &Context,
    args: &DeleteVolumeArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let client = ctx.volume_client()?;
    for_each_id(
        &args.ids,
        err,
        |id| client.delete_volume(id).map(|()| id.clone()),
        |id| {
            out.write_all(output::render_deleted(&id).as_bytes())?;
            out.flush()
        },
    )
}
