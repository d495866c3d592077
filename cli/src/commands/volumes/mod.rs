//! The persistent disk (volume) commands of the guide's chapter 7: create, describe, update,
//! delete, and hot-plug (attach) or unplug (detach) disks of running instances. They talk to the
//! persistent disk endpoint (`pdisk_endpoint`, the cloud's unless configured).
//!
//! Here: what they share. Disk UUIDs as users type them, and the waiting: the API answers an
//! attach or detach at once (202) and the host does the work afterwards, so the commands poll the
//! disk until its attachment to the instance has reached the state wanted.

pub mod attach;
pub mod create;
pub mod delete;
pub mod describe;
pub mod detach;
pub mod update;

use std::thread;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use stratus_common::volumes::{
    is_uuid, validate_tag, AttachmentState, Volume, VolumeState, VolumeType,
};
use thiserror::Error;

use super::ItemFailure;
use crate::client::ClientError;

/// How often a waiting command asks for the disk again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How long attach and detach wait by default (`--timeout`): longer than a site's usual detach
/// timeout (60 s), after which a detach that the guest ignores shows as `stuck`.
pub const DEFAULT_WAIT_SECS: u64 = 120;

/// How long `create-volume` waits for the storage host to make the disk.
pub const CREATE_WAIT: Duration = Duration::from_secs(60);

/// A disk UUID from the command line: trimmed and lower-cased (the cloud writes them in lower
/// case), refused unless it is one.
pub fn parse_disk_uuid(value: &str) -> Result<String, String> {
    let id = value.trim().to_ascii_lowercase();
    if is_uuid(&id) {
        Ok(id)
    } else {
        Err(format!(
            "{value:?} is not a disk UUID (like 9c5a2c03-8243-4a1b-a248-0f0d22d948c2)"
        ))
    }
}

/// `--type`: the disk types, as users write them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TypeArg {
    /// Read-write data disk: attached to one instance at a time (the default)
    #[value(name = "data-rw")]
    DataRw,
    /// Read-only data disk: any number of instances may attach it at once
    #[value(name = "data-ro")]
    DataRo,
}

impl From<TypeArg> for VolumeType {
    fn from(arg: TypeArg) -> Self {
        match arg {
            TypeArg::DataRw => Self::DataRw,
            TypeArg::DataRo => Self::DataRo,
        }
    }
}

/// A tag from the command line, checked as the cloud will.
pub fn parse_tag(value: &str) -> Result<String, String> {
    validate_tag(value)
        .map(|()| value.to_owned())
        .map_err(|e| e.to_string())
}

/// Why one disk of a command's list failed.
#[derive(Debug, Error)]
pub enum DiskFailure {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The cloud took the request but the disk did not get where it should: the message says
    /// which disk and why.
    #[error("{0}")]
    NotDone(String),
}

impl ItemFailure for DiskFailure {
    fn is_fatal(&self) -> bool {
        matches!(self, Self::Client(e) if e.is_fatal())
    }
}

/// Where a hot-plug of a disk into an instance is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachProgress {
    /// Still being plugged in.
    Pending,
    /// The guest has it, on this device.
    Attached { device: String },
    /// The attachment is gone: the host could not plug the disk in (the disk's `reason` says
    /// why).
    Dropped,
}

/// How far the attachment of `volume` to `instance` has got.
pub fn attach_progress(volume: &Volume, instance: u64) -> AttachProgress {
    match volume.attachments.iter().find(|a| a.instance == instance) {
        None => AttachProgress::Dropped,
        Some(a) if a.state == AttachmentState::Attached => AttachProgress::Attached {
            device: a.device.clone(),
        },
        Some(_) => AttachProgress::Pending,
    }
}

/// Where an unplug of a disk from an instance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetachProgress {
    /// The guest has not released it yet.
    Pending,
    /// It has not released it for longer than the site's detach timeout.
    Stuck,
    /// The attachment is gone.
    Detached,
}

/// How far the detachment of `volume` from `instance` has got.
pub fn detach_progress(volume: &Volume, instance: u64) -> DetachProgress {
    match volume.attachments.iter().find(|a| a.instance == instance) {
        None => DetachProgress::Detached,
        Some(a) if a.state == AttachmentState::Stuck => DetachProgress::Stuck,
        Some(_) => DetachProgress::Pending,
    }
}

/// Where the making of a new disk is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateProgress {
    Pending,
    Ready,
    /// The storage host could not make it: why.
    Failed(String),
}

pub fn create_progress(volume: &Volume) -> CreateProgress {
    match volume.state {
        VolumeState::Creating => CreateProgress::Pending,
        VolumeState::Failed => CreateProgress::Failed(
            volume
                .reason
                .clone()
                .unwrap_or_else(|| "no reason given".to_owned()),
        ),
        // Available, or already being deleted by someone else: not ours to wait for.
        VolumeState::Available | VolumeState::Deleting => CreateProgress::Ready,
    }
}

/// Asks `check` for an answer until it has one or `deadline` passes (then `None`), every
/// [`POLL_INTERVAL`]. It is asked at least once, however late it is.
pub fn poll<T, E>(
    deadline: Instant,
    mut check: impl FnMut() -> Result<Option<T>, E>,
) -> Result<Option<T>, E> {
    loop {
        if let Some(answer) = check()? {
            return Ok(Some(answer));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        thread::sleep(POLL_INTERVAL.min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use stratus_common::volumes::VolumeAttachment;

    use super::*;
    use crate::output::tests::volume;

    fn with_attachment(instance: u64, state: AttachmentState) -> Volume {
        let mut v = volume("9c5a2c03-8243-4a1b-a248-0f0d22d948c2");
        v.attachments = vec![
            VolumeAttachment {
                instance: 99,
                device: "/dev/vdb".into(),
                state: AttachmentState::Attached,
                hotplug: true,
                read_only: true,
                remote: false,
                since: "2024-05-01T10:00:00.000Z".into(),
            },
            VolumeAttachment {
                instance,
                device: "/dev/vdc".into(),
                state,
                hotplug: true,
                read_only: true,
                remote: true,
                since: "2024-05-01T10:00:00.000Z".into(),
            },
        ];
        v
    }

    #[test]
    fn uuids_are_normalised_and_checked() {
        assert_eq!(
            parse_disk_uuid(" 9C5A2C03-8243-4A1B-A248-0F0D22D948C2 ").unwrap(),
            "9c5a2c03-8243-4a1b-a248-0f0d22d948c2"
        );
        assert_eq!(
            parse_disk_uuid("../../etc").unwrap_err(),
            "\"../../etc\" is not a disk UUID (like 9c5a2c03-8243-4a1b-a248-0f0d22d948c2)"
        );
        assert!(parse_tag("my disk").is_ok());
        assert!(parse_tag("bad\nline").is_err());
    }

    #[test]
    fn attach_progress_follows_the_instances_attachment_only() {
        use AttachmentState::*;
        assert_eq!(
            attach_progress(&with_attachment(3, Attaching), 3),
            AttachProgress::Pending
        );
        assert_eq!(
            attach_progress(&with_attachment(3, Attached), 3),
            AttachProgress::Attached {
                device: "/dev/vdc".into()
            }
        );
        // Another instance's attachment (read-only disks have several) does not count.
        assert_eq!(
            attach_progress(&with_attachment(4, Attaching), 3),
            AttachProgress::Dropped
        );
        // Detaching already (someone else asked): not attached, keep waiting until it is gone.
        assert_eq!(
            attach_progress(&with_attachment(3, Detaching), 3),
            AttachProgress::Pending
        );
    }

    #[test]
    fn detach_progress_follows_the_instances_attachment_only() {
        use AttachmentState::*;
        for state in [Attached, Attaching, Detaching] {
            assert_eq!(
                detach_progress(&with_attachment(3, state), 3),
                DetachProgress::Pending
            );
        }
        assert_eq!(
            detach_progress(&with_attachment(3, Stuck), 3),
            DetachProgress::Stuck
        );
        assert_eq!(
            detach_progress(&with_attachment(4, Stuck), 3),
            DetachProgress::Detached
        );
    }

    #[test]
    fn create_progress_waits_only_while_creating() {
        let mut v = volume("9c5a2c03-8243-4a1b-a248-0f0d22d948c2");
        assert_eq!(create_progress(&v), CreateProgress::Ready);
        v.state = VolumeState::Creating;
        assert_eq!(create_progress(&v), CreateProgress::Pending);
        v.state = VolumeState::Failed;
        assert_eq!(
            create_progress(&v),
            CreateProgress::Failed("no reason given".into())
        );
        v.reason = Some("pool full".into());
        assert_eq!(
            create_progress(&v),
            CreateProgress::Failed("pool full".into())
        );
    }

    #[test]
    fn poll_asks_at_least_once_and_stops_at_the_deadline() {
        let mut asked = 0;
        let answer: Result<Option<()>, ()> = poll(Instant::now(), || {
            asked += 1;
            Ok(None)
        });
        assert_eq!((answer, asked), (Ok(None), 1));

        let mut asked = 0;
        let answer: Result<_, ()> = poll(Instant::now() + Duration::from_secs(30), || {
            asked += 1;
            Ok((asked == 3).then_some(asked))
        });
        assert_eq!(answer, Ok(Some(3)));

        let answer: Result<Option<()>, &str> =
            poll(Instant::now() + Duration::from_secs(30), || Err("gone"));
        assert_eq!(answer, Err("gone"));
    }
}
