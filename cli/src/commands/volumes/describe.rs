//! `stratus-describe-volumes`: the user's disks and everyone's public ones, or the ones named.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use super::parse_disk_uuid;
use crate::commands::{for_each_id, Context};
use crate::output;

#[derive(Debug, Args)]
pub struct DescribeVolumesArgs {
    /// Disk UUIDs; all the disks you may see when none is given
    #[arg(value_name = "UUID", value_parser = parse_disk_uuid)]
    pub ids: Vec<String>,

    /// Print the disks as a JSON array
    #[arg(long)]
    pub json: bool,
}

pub fn run(
    ctx: &Context,
    args: &DescribeVolumesArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let client = ctx.volume_client()?;
    let (volumes, status) = if args.ids.is_empty() {
        (client.list_volumes()?, ExitCode::SUCCESS)
    } else {
        let mut found = Vec::new();
        let status = for_each_id(
            &args.ids,
            err,
            |id| client.get_volume(id),
            |volume| {
                found.push(volume);
                Ok(())
            },
        )?;
        (found, status)
    };
    let text = if args.json {
        // Naming only unknown disks prints just the errors, not an empty array.
        if volumes.is_empty() && !args.ids.is_empty() {
            String::new()
        } else {
            output::render_json(&volumes)
        }
    } else {
        output::render_volumes(&volumes)
    };
    out.write_all(text.as_bytes())?;
    Ok(status)
}
