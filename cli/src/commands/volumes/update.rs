//! `stratus-update-volume`: change what may be changed on a disk (its owner or an
//! administrator): visibility, tag and type.

use std::io::Write;
use std::process::ExitCode;

use clap::{ArgGroup, Args};
use stratus_common::volumes::{UpdateVolume, VolumeType};

use super::{parse_disk_uuid, parse_tag, TypeArg};
use crate::commands::Context;
use crate::output;

/// What `-h` adds: the guide says it lists the disk types and the properties that can change.
const PROPERTIES_AND_TYPES: &str = "\
Properties that can be updated:
  visibility  --public or --private: whether every user may see and attach the disk
  tag         --tag TAG: its label (at most 64 bytes; --tag '' clears it)
  type        --type TYPE: only while no instance uses the disk

Disk types:
  data-rw     read-write data disk: attached to one instance at a time (the default)
  data-ro     read-only data disk: any number of instances may attach it at once";

#[derive(Debug, Args)]
#[command(
    after_help = PROPERTIES_AND_TYPES,
    group(ArgGroup::new("change").required(true).multiple(true))
)]
pub struct UpdateVolumeArgs {
    /// UUID of the disk to change
    #[arg(value_name = "UUID", value_parser = parse_disk_uuid)]
    pub id: String,

    /// Make the disk public: every user may see and attach it
    #[arg(long, group = "change", conflicts_with = "private")]
    pub public: bool,

    /// Make the disk private: only you may see and attach it
    #[arg(long, group = "change")]
    pub private: bool,

    /// New label of the disk
    #[arg(long, value_name = "TAG", group = "change", value_parser = parse_tag)]
    pub tag: Option<String>,

    /// New disk type
    #[arg(long = "type", value_name = "TYPE", group = "change")]
    pub volume_type: Option<TypeArg>,

    /// Print the disk as changed, as JSON
    #[arg(long)]
    pub json: bool,
}

impl UpdateVolumeArgs {
    /// The request: only what was asked to change.
    pub fn update(&self) -> UpdateVolume {
        UpdateVolume {
            public: match (self.public, self.private) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
            tag: self.tag.clone(),
            volume_type: self.volume_type.map(VolumeType::from),
        }
    }
}

pub fn run(
    ctx: &Context,
    args: &UpdateVolumeArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let client = ctx.volume_client()?;
    let volume = client.update_volume(&args.id, &args.update())?;
    let text = if args.json {
        output::render_json(&volume)
    } else {
        output::render_disk(&volume.id)
    };
    out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
