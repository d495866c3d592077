//! `stratus-create-volume`: make a persistent disk and print its UUID once it is ready.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use stratus_common::volumes::{CreateVolume, VolumeType};

use super::{create_progress, parse_tag, poll, CreateProgress, TypeArg, CREATE_WAIT};
use crate::commands::Context;
use crate::output;

#[derive(Debug, Args)]
pub struct CreateVolumeArgs {
    /// Size of the disk in GiB
    #[arg(
        short = 's',
        long,
        value_name = "GiB",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub size: u64,

    /// A label for the disk, shown by stratus-describe-volumes (at most 64 bytes)
    #[arg(long, value_name = "TAG", value_parser = parse_tag)]
    pub tag: Option<String>,

    /// Let every user see and attach the disk (only you may change or delete it); private when
    /// absent
    #[arg(long)]
    pub public: bool,

    /// Disk type: data-rw (the default) or data-ro
    #[arg(long = "type", value_name = "TYPE")]
    pub volume_type: Option<TypeArg>,

    /// Print the disk as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(
    ctx: &Context,
    args: &CreateVolumeArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let client = ctx.volume_client()?;
    let request = CreateVolume {
        size: args.size,
        tag: args.tag.clone(),
        public: args.public,
        volume_type: args.volume_type.map(VolumeType::from),
    };
    let created = client.create_volume(&request)?;

    // The storage host makes the file after the answer when it is slow: wait for it.
    let deadline = Instant::now() + CREATE_WAIT;
    let mut latest = created.clone();
    let progress = match create_progress(&created) {
        CreateProgress::Pending => poll(deadline, || {
            latest = client.get_volume(&created.id)?;
            Ok::<_, anyhow::Error>(match create_progress(&latest) {
                CreateProgress::Pending => None,
                done => Some(done),
            })
        })?,
        done => Some(done),
    };
    match progress {
        Some(CreateProgress::Failed(reason)) => {
            anyhow::bail!("DISK {}: could not be created: {reason}", created.id)
        }
        None => err.write_all(
            output::render_warning(&format!(
                "DISK {} is still being created after {} s; stratus-describe-volumes shows \
                 when it is available",
                created.id,
                CREATE_WAIT.as_secs()
            ))
            .as_bytes(),
        )?,
        Some(_) => {}
    }
    let text = if args.json {
        output::render_json(&latest)
    } else {
        output::render_disk(&latest.id)
    };
    out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
