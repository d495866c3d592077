//! `stratus-create-group`: make a server group of yours, whose policy places the instances
//! started in it (`stratus-run-instance --group NAME`).

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use stratus_common::api::{CreateGroup, GroupPolicy};

use super::{parse_group_name, PolicyArg};
use crate::commands::Context;
use crate::output;

#[derive(Debug, Args)]
pub struct CreateGroupArgs {
    /// Name of the group (letters, digits, '.', '_', '-'), unique among your groups
    #[arg(value_name = "NAME", value_parser = parse_group_name)]
    pub name: String,

    /// How the group's instances are placed: affinity (all on one host) or anti-affinity (each
    /// on a host of its own)
    #[arg(long, value_name = "POLICY")]
    pub policy: PolicyArg,

    /// Print the group as JSON
    #[arg(long)]
    pub json: bool,
}

impl CreateGroupArgs {
    pub fn request(&self) -> CreateGroup {
        CreateGroup {
            name: self.name.clone(),
            policy: GroupPolicy::from(self.policy),
        }
    }
}

pub fn run(ctx: &Context, args: &CreateGroupArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let group = ctx.client()?.create_group(&args.request())?;
    let text = if args.json {
        output::render_json(&group)
    } else {
        output::render_group_created(&group)
    };
    out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
