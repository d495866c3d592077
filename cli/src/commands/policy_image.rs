//! `stratus-policy-image`: ask the site policy, as an instance start would (endorsers allowed,
//! deny lists, deprecation, expiry, size), whether Marketplace images may run here, and from
//! which endorser's entry.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use super::Context;
use crate::output;

#[derive(Debug, Args)]
pub struct PolicyImageArgs {
    /// Marketplace image identifiers
    #[arg(value_name = "IDENTIFIER", required = true)]
    pub identifiers: Vec<String>,

    /// Print the verdicts as a JSON array
    #[arg(long)]
    pub json: bool,
}

/// Exit status: success only if every image is allowed; an image refused, unknown or not an
/// identifier is a failure.
pub fn run(
    ctx: &Context,
    args: &PolicyImageArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let client = ctx.marketplace_client()?;
    let mut status = ExitCode::SUCCESS;
    let mut verdicts = Vec::new();
    for identifier in &args.identifiers {
        match client.image_policy(identifier) {
            Ok(verdict) => {
                if !verdict.allowed {
                    status = ExitCode::FAILURE;
                }
                if !args.json {
                    out.write_all(output::render_verdict(&verdict).as_bytes())?;
                    out.flush()?;
                }
                verdicts.push(verdict);
            }
            Err(e) if e.is_fatal() => return Err(e.into()),
            // The API's messages name the identifier ("no Marketplace entry for image X").
            Err(e) => {
                err.write_all(output::render_error(&e.to_string()).as_bytes())?;
                status = ExitCode::FAILURE;
            }
        }
    }
    if args.json {
        out.write_all(output::render_json(&verdicts).as_bytes())?;
    }
    Ok(status)
}
