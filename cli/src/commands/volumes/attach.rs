//! `stratus-attach-volume`: hot-plug disks into a running instance and wait until its guest has
//! them.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use stratus_common::volumes::Volume;

use super::{
    attach_progress, parse_disk_uuid, poll, AttachProgress, DiskFailure, DEFAULT_WAIT_SECS,
};
use crate::client::Client;
use crate::commands::{for_each_id, Context};
use crate::output;

#[derive(Debug, Args)]
pub struct AttachVolumeArgs {
    /// ID of the running instance to plug the disks into
    #[arg(short = 'i', long = "instance", value_name = "VM")]
    pub instance: u64,

    /// UUIDs of the disks to attach (they get the free devices in this order)
    #[arg(value_name = "UUID", required = true, value_parser = parse_disk_uuid)]
    pub ids: Vec<String>,

    /// How long to wait, in seconds, for the guest to have every disk
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_WAIT_SECS)]
    pub timeout: u64,
}

pub fn run(
    ctx: &Context,
    args: &AttachVolumeArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let client = ctx.volume_client()?;
    let vm = args.instance;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    // Every disk is asked for first, so the host plugs them in while the command waits.
    let mut asked = Vec::new();
    let asking = for_each_id(
        &args.ids,
        err,
        |id| client.attach_volume(vm, id),
        |volume| {
            asked.push(volume);
            Ok(())
        },
    )?;
    let waiting = for_each_id(
        &asked,
        err,
        |volume| wait_attached(&client, volume, vm, deadline, args.timeout),
        |(id, device)| {
            out.write_all(output::render_attached(&id, vm, &device).as_bytes())?;
            out.flush()
        },
    )?;
    Ok(if asking == ExitCode::SUCCESS {
        waiting
    } else {
        asking
    })
}

/// Waits until the guest of `vm` has the disk the attach answer `volume` shows; gives back the
/// disk's UUID and its device.
fn wait_attached(
    client: &Client,
    volume: &Volume,
    vm: u64,
    deadline: Instant,
    timeout_secs: u64,
) -> Result<(String, String), DiskFailure> {
    let id = &volume.id;
    let mut reason = volume.reason.clone();
    let progress = match attach_progress(volume, vm) {
        AttachProgress::Pending => poll(deadline, || {
            let latest = client.get_volume(id)?;
            reason = latest.reason.clone();
            Ok::<_, DiskFailure>(match attach_progress(&latest, vm) {
                AttachProgress::Pending => None,
                done => Some(done),
            })
        })?,
        done => Some(done),
    };
    match progress {
        Some(AttachProgress::Attached { device }) => Ok((id.clone(), device)),
        Some(AttachProgress::Dropped) => Err(DiskFailure::NotDone(format!(
            "DISK {id}: {}",
            reason.unwrap_or_else(|| format!("the host could not plug it into VM {vm}"))
        ))),
        Some(AttachProgress::Pending) | None => Err(DiskFailure::NotDone(format!(
            "DISK {id}: not attached to VM {vm} after {timeout_secs} s (still attaching); \
             stratus-describe-volumes shows how it goes"
        ))),
    }
}
