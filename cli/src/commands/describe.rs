//! `stratus-describe-instance`: the table of the user's instances, or of the ones named.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use super::{for_each_id, Context};
use crate::output;

#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// Instance IDs; all the instances you may see when none is given
    #[arg(value_name = "ID")]
    pub ids: Vec<u64>,

    /// Print the instances as a JSON array
    #[arg(long)]
    pub json: bool,
}

pub fn run(
    ctx: &Context,
    args: &DescribeArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let (instances, status) = if args.ids.is_empty() {
        let mut all = client.list_instances()?;
        all.sort_by_key(|i| i.id);
        (all, ExitCode::SUCCESS)
    } else {
        let mut found = Vec::new();
        let status = for_each_id(
            &args.ids,
            err,
            |&id| client.get_instance(id),
            |instance| {
                found.push(instance);
                Ok(())
            },
        )?;
        (found, status)
    };

    // Naming only unknown IDs prints just the errors, not an empty table.
    if args.ids.is_empty() || !instances.is_empty() {
        let text = if args.json {
            output::render_json(&instances)
        } else {
            output::render_instance_table(&instances)
        };
        out.write_all(text.as_bytes())?;
    }
    Ok(status)
}
