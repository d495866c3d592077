//! `stratus-run-instance`: start one or more instances of an image, or list the instance types.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use stratus_common::api::CreateInstance;
use stratus_common::names::validate_name;

use super::Context;
use crate::output;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The image to run, by name
    #[arg(value_name = "IMAGE", required_unless_present = "list_types")]
    pub image: Option<String>,

    /// Instance type (size), e.g. m1.small; the site default when absent
    #[arg(short = 't', long = "type", value_name = "TYPE")]
    pub instance_type: Option<String>,

    /// Display name of the instance(s) (letters, digits, '.', '_', '-'); vm-<ID> when absent
    #[arg(long, value_name = "NAME", value_parser = parse_name)]
    pub name: Option<String>,

    /// Number of instances to start
    #[arg(
        short = 'n',
        long = "number",
        value_name = "N",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub number: u32,

    /// List the instance types instead of starting anything
    #[arg(short = 'l', long = "list-types", conflicts_with = "quiet")]
    pub list_types: bool,

    /// Print the created instances (or the types) as JSON
    #[arg(long, conflicts_with = "quiet")]
    pub json: bool,

    /// Print only the IDs of the created instances, one per line
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

fn parse_name(name: &str) -> Result<String, String> {
    validate_name("name", name)
        .map(|()| name.to_string())
        .map_err(|e| e.to_string())
}

pub fn run(ctx: &Context, args: &RunArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;

    if args.list_types {
        let types = client.list_types()?;
        let text = if args.json {
            output::render_json(&types)
        } else {
            output::render_types_table(&types)
        };
        out.write_all(text.as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }

    let Some(image) = args.image.clone() else {
        anyhow::bail!("no image given: stratus-run-instance IMAGE");
    };
    let request = CreateInstance {
        image,
        instance_type: args.instance_type.clone(),
        name: args.name.clone(),
    };

    if args.json {
        // All or what was made before a failure, so a script can clean up.
        let mut created = Vec::new();
        let mut failure = None;
        for _ in 0..args.number {
            match client.create_instance(&request) {
                Ok(instance) => created.push(instance),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if failure.is_none() || !created.is_empty() {
            out.write_all(output::render_json(&created).as_bytes())?;
        }
        return match failure {
            Some(e) => Err(e.into()),
            None => Ok(ExitCode::SUCCESS),
        };
    }

    // Lines go out as each instance is made, so a failure half-way leaves the IDs on screen.
    if !args.quiet {
        out.write_all(output::render_run_header(args.number).as_bytes())?;
        out.flush()?;
    }
    for index in 1..=args.number as usize {
        let instance = client.create_instance(&request)?;
        let line = if args.quiet {
            output::render_id(&instance)
        } else {
            output::render_run_machine(index, &instance)
        };
        out.write_all(line.as_bytes())?;
        out.flush()?;
    }
    if !args.quiet {
        out.write_all(output::render_run_done().as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}
