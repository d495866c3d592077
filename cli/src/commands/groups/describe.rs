//! `stratus-describe-groups`: your server groups (an administrator's: everyone's), or the ones
//! named, with their members and the hosts they run on.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use super::parse_group_name;
use crate::commands::{for_each_id, Context};
use crate::output;

#[derive(Debug, Args)]
pub struct DescribeGroupsArgs {
    /// Group names; all the groups you may see when none is given
    #[arg(value_name = "NAME", value_parser = parse_group_name)]
    pub names: Vec<String>,

    /// Print the groups as a JSON array
    #[arg(long)]
    pub json: bool,
}

pub fn run(
    ctx: &Context,
    args: &DescribeGroupsArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let (groups, status) = if args.names.is_empty() {
        let mut groups = client.list_groups()?;
        // An administrator sees every user's: groups of one name together.
        groups.sort_by(|a, b| (&a.name, &a.owner).cmp(&(&b.name, &b.owner)));
        (groups, ExitCode::SUCCESS)
    } else {
        let mut found = Vec::new();
        let status = for_each_id(
            &args.names,
            err,
            |name| client.get_group(name),
            |group| {
                found.push(group);
                Ok(())
            },
        )?;
        (found, status)
    };
    let text = if args.json {
        // Naming only unknown groups prints just the errors, not an empty array.
        if groups.is_empty() && !args.names.is_empty() {
            String::new()
        } else {
            output::render_json(&groups)
        }
    } else {
        output::render_groups(&groups)
    };
    out.write_all(text.as_bytes())?;
    Ok(status)
}
