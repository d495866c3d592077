//! `stratus-events`: what happened in the cloud, as the event stream tells it: by default the
//! latest events (of your own instances and disks, or everything for an administrator), with
//! `--follow` every event from then on as it happens, across controller failovers.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use super::Context;
use crate::client::ClientError;
use crate::output::{render_event, render_json_line};

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Keep printing events as they happen
    #[arg(short, long)]
    pub follow: bool,

    /// Start after this event's sequence number (instead of the latest events)
    #[arg(long, value_name = "SEQ")]
    pub since: Option<u64>,

    /// How many of the latest events to print first
    #[arg(
        short = 'n',
        long,
        value_name = "N",
        default_value_t = 20,
        conflicts_with = "since"
    )]
    pub last: usize,

    /// Only events of this type (repeatable; a name ending in '-' is a prefix: instance-)
    #[arg(short = 't', long = "type", value_name = "TYPE")]
    pub types: Vec<String>,

    /// Only events about this object: instance/5, volume/<uuid>, host/<name>
    #[arg(long, value_name = "KIND/ID")]
    pub object: Option<String>,

    /// One JSON envelope per line
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &Context, args: &EventsArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let mut query: Vec<(&str, String)> = Vec::new();
    match args.since {
        Some(since) => query.push(("since", since.to_string())),
        None => query.push(("last", args.last.to_string())),
    }
    if !args.types.is_empty() {
        query.push(("types", args.types.join(",")));
    }
    if let Some(object) = &args.object {
        query.push(("object", object.clone()));
    }
    let json = args.json;
    client.events(&query, args.follow, &mut |event| {
        let line = if json {
            render_json_line(&event)
        } else {
            render_event(&event)
        };
        // Each event as it comes: a follower sees it when it happens.
        out.write_all(line.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| ClientError::Output(e.to_string()))
    })?;
    Ok(ExitCode::SUCCESS)
}
