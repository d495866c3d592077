//! `stratus-detach-volume`: ask running instances' guests to release disks and wait until they
//! have; with `--force`, free the ones a guest does not release.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use stratus_common::volumes::{AttachmentState, Volume};

use super::{
    detach_progress, parse_disk_uuid, poll, DetachProgress, DiskFailure, DEFAULT_WAIT_SECS,
};
use crate::client::{Client, ClientError};
use crate::commands::{for_each_id, report_item_failure, Context};
use crate::output;

#[derive(Debug, Args)]
pub struct DetachVolumeArgs {
    /// ID of the running instance to unplug the disks from
    #[arg(short = 'i', long = "instance", value_name = "VM")]
    pub instance: u64,

    /// UUIDs of the disks to detach (unmount them in the guest first)
    #[arg(value_name = "UUID", required = true, value_parser = parse_disk_uuid)]
    pub ids: Vec<String>,

    /// Free a disk the guest does not release (its attachment is stuck) anyway: the guest may
    /// still hold the device, and what it had not written to the disk is lost
    #[arg(long)]
    pub force: bool,

    /// How long to wait, in seconds, for the guest to release every disk
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_WAIT_SECS)]
    pub timeout: u64,
}

/// The API's code for a detach of a disk the instance does not have.
const NOT_ATTACHED: &str = "not_attached";

/// A detach the cloud accepted.
struct Asked {
    id: String,
    /// Where the guest had the disk, from before the detach (a forced detach's answer no longer
    /// shows it).
    device: Option<String>,
    /// The answer to the detach.
    volume: Volume,
    forced: bool,
}

/// A disk off the instance.
struct Detached {
    id: String,
    device: Option<String>,
    forced: bool,
}

pub fn run(
    ctx: &Context,
    args: &DetachVolumeArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let client = ctx.volume_client()?;
    let vm = args.instance;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    // Every disk is asked for first, so the guest releases them while the command waits.
    let mut asked = Vec::new();
    let mut status = for_each_id(
        &args.ids,
        err,
        |id| ask(&client, id, vm, args.force),
        |a| {
            asked.push(a);
            Ok(())
        },
    )?;
    // Not `for_each_id`: a forced detach also writes a warning to `err`.
    for a in &asked {
        match wait_detached(&client, a, vm, args, deadline) {
            Ok(done) => {
                if done.forced {
                    let warning = output::render_forced_off(&done.id, vm, done.device.as_deref());
                    err.write_all(warning.as_bytes())?;
                }
                out.write_all(
                    output::render_detached(&done.id, vm, done.device.as_deref()).as_bytes(),
                )?;
                out.flush()?;
            }
            Err(e) => report_item_failure(e, err, &mut status)?,
        }
    }
    Ok(status)
}

/// Notes where the disk is in the guest, then asks for the detach (forced only if asked and
/// the attachment is already stuck: the cloud refuses to force one that is not).
fn ask(client: &Client, id: &str, vm: u64, force: bool) -> Result<Asked, DiskFailure> {
    let before = client.get_volume(id)?;
    let attachment = before.attachments.iter().find(|a| a.instance == vm);
    let forced = force && attachment.is_some_and(|a| a.state == AttachmentState::Stuck);
    // Not attached: the cloud's answer says so in the guide's words.
    let volume = client.detach_volume(vm, id, forced)?;
    let device = attachment
        .or_else(|| volume.attachments.iter().find(|a| a.instance == vm))
        .map(|a| a.device.clone());
    Ok(Asked {
        id: id.to_owned(),
        device,
        volume,
        forced,
    })
}

fn wait_detached(
    client: &Client,
    asked: &Asked,
    vm: u64,
    args: &DetachVolumeArgs,
    deadline: Instant,
) -> Result<Detached, DiskFailure> {
    let id = &asked.id;
    let detached = |forced| Detached {
        id: id.clone(),
        device: asked.device.clone(),
        forced,
    };
    let progress = match detach_progress(&asked.volume, vm) {
        DetachProgress::Pending => poll(deadline, || {
            let latest = client.get_volume(id)?;
            Ok::<_, DiskFailure>(match detach_progress(&latest, vm) {
                DetachProgress::Pending => None,
                done => Some(done),
            })
        })?,
        done => Some(done),
    };
    match progress {
        Some(DetachProgress::Detached) => Ok(detached(asked.forced)),
        // Stuck, or still detaching when the time is up.
        _ if args.force => match client.detach_volume(vm, id, true) {
            Ok(_) => Ok(detached(true)),
            // The guest let go between the last look and the forced detach.
            Err(ClientError::Api { code, .. }) if code == NOT_ATTACHED => Ok(detached(false)),
            Err(e) => Err(e.into()),
        },
        _ => Err(DiskFailure::NotDone(format!(
            "DISK {id}: the guest of VM {vm} has not released the disk (attachment stuck); \
             unmount it in the guest, or detach with --force to free it anyway"
        ))),
    }
}
