//! Persistent disks (volumes): the API's request and view types, and the rules every part
//! agrees on (UUIDs, the guest-visible serial, device targets).
//!
//! A volume is a raw file in the volume pool of one storage host. Attached to an instance on
//! that host, the guest uses the file directly; on another host, through an NBD export the
//! storage host serves for that one attachment.

use serde::{Deserialize, Serialize};

/// Largest tag, in bytes.
pub const MAX_TAG_LEN: usize = 64;

/// `POST /api/v1/volumes`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"size": 1, "tag": "scratch"})))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreateVolume {
    /// Size in GiB (at least 1).
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub size: u64,
    /// A free-form label shown by describe (printable, at most 64 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Visible to every user (they may attach it); private when absent.
    #[serde(default)]
    pub public: bool,
    /// `data-rw` (default) or `data-ro`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub volume_type: Option<VolumeType>,
}

/// `PATCH /api/v1/volumes/{id}` (the owner or an administrator): what to change.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UpdateVolume {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Changing the type needs the volume free (no attachment).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub volume_type: Option<VolumeType>,
}

/// How guests may use a volume.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub enum VolumeType {
    /// A read-write data disk: attached to at most one instance at a time.
    #[serde(rename = "data-rw")]
    DataRw,
    /// A read-only data disk: any number of instances may attach it at once.
    #[serde(rename = "data-ro")]
    DataRo,
}

impl VolumeType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DataRw => "data-rw",
            Self::DataRo => "data-ro",
        }
    }

    pub fn read_only(self) -> bool {
        self == Self::DataRo
    }
}

impl std::str::FromStr for VolumeType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "data-rw" => Ok(Self::DataRw),
            "data-ro" => Ok(Self::DataRo),
            other => Err(format!(
                "unknown volume type {other:?} (data-rw or data-ro)"
            )),
        }
    }
}

/// Where a volume is in its life.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum VolumeState {
    /// Its storage host is making the file.
    Creating,
    /// Ready to attach.
    Available,
    /// Its storage host could not make it (see `reason`); it can only be deleted.
    Failed,
    /// Being removed from its storage host.
    Deleting,
}

/// Where an attachment is.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum AttachmentState {
    /// Being plugged in (for a disk on another host, its export is being set up first).
    Attaching,
    /// The guest has it.
    Attached,
    /// Unplug asked; waiting for the guest to release the device.
    Detaching,
    /// Detaching for longer than the site's detach timeout: the guest does not release the
    /// device. Only a forced detach frees it.
    Stuck,
}

impl AttachmentState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Attaching => "attaching",
            Self::Attached => "attached",
            Self::Detaching => "detaching",
            Self::Stuck => "stuck",
        }
    }
}

/// One instance using a volume.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeAttachment {
    pub instance: u64,
    /// The device the disk was given, e.g. `/dev/vdb`. Guests name disks in the order they
    /// find them; the disk's serial (see [`serial`]) is the stable name
    /// (`/dev/disk/by-id/virtio-<serial>`).
    pub device: String,
    pub state: AttachmentState,
    /// Plugged into a running instance (not attached at its start).
    pub hotplug: bool,
    /// The guest sees it read-only.
    pub read_only: bool,
    /// Reached over the network (NBD) from a host other than the volume's.
    pub remote: bool,
    /// RFC 3339 time it entered its state.
    pub since: String,
}

/// A volume as the API shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Volume {
    /// Its UUID.
    pub id: String,
    pub owner: String,
    #[serde(default)]
    pub tag: String,
    /// GiB.
    pub size: u64,
    /// `public` or `private`.
    pub visibility: String,
    #[serde(rename = "type")]
    pub volume_type: VolumeType,
    pub state: VolumeState,
    /// Why it Failed, or what went wrong with its last attachment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The storage host holding it.
    pub host: String,
    /// RFC 3339.
    pub created: String,
    /// The serial the guest sees.
    pub serial: String,
    /// How many instances use it.
    pub users: usize,
    pub attachments: Vec<VolumeAttachment>,
    /// Who changed it and how (the audit trail), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<crate::api::Change>,
}

/// `POST /api/v1/instances/{id}/volumes`: hot-plug a volume into a running instance.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AttachVolume {
    /// The volume's UUID.
    pub volume: String,
}

/// One persistent disk of an instance, as the instance view shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceDisk {
    pub volume: String,
    pub device: String,
    pub state: AttachmentState,
}

/// Whether `s` is a UUID as the cloud writes them: lowercase hex, hyphenated 8-4-4-4-12.
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
        })
}

/// The serial number a guest sees for a volume: its UUID's first 20 characters (virtio-blk
/// keeps 20 bytes), as OpenStack does, so `/dev/disk/by-id/virtio-<serial>` finds it.
pub fn serial(volume_id: &str) -> String {
    volume_id.chars().take(20).collect()
}

/// Device targets persistent disks may take: `vdb` to `vdz` (`vda` is the root disk).
pub fn targets() -> impl Iterator<Item = String> {
    (b'b'..=b'z').map(|c| format!("vd{}", c as char))
}

/// Whether `s` is a valid persistent-disk target.
pub fn is_target(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 3 && &b[..2] == b"vd" && (b'b'..=b'z').contains(&b[2])
}

/// Checks a tag: at most [`MAX_TAG_LEN`] bytes, no control or bidirectional formatting
/// characters.
pub fn validate_tag(tag: &str) -> Result<(), crate::names::TextError> {
    crate::names::validate_text("tag", tag, MAX_TAG_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_recognised_strictly() {
        assert!(is_uuid("9c5a2c03-8243-4a1b-a248-0f0d22d948c2"));
        assert!(!is_uuid("9C5A2C03-8243-4A1B-A248-0F0D22D948C2"));
        assert!(!is_uuid("9c5a2c03-8243-4a1b-a248-0f0d22d948c"));
        assert!(!is_uuid("9c5a2c0308243-4a1b-a248-0f0d22d948c2"));
        assert!(!is_uuid("../../../../etc/passwd/aaaaaaaaaaaaaa"));
    }

    #[test]
    fn serial_is_the_first_twenty_characters() {
        assert_eq!(
            serial("9c5a2c03-8243-4a1b-a248-0f0d22d948c2"),
            "9c5a2c03-8243-4a1b-a"
        );
    }

    #[test]
    fn targets_run_from_vdb_to_vdz() {
        let all: Vec<String> = targets().collect();
        assert_eq!(all.len(), 25);
        assert_eq!(all[0], "vdb");
        assert_eq!(all[24], "vdz");
        assert!(all.iter().all(|t| is_target(t)));
        assert!(!is_target("vda"));
        assert!(!is_target("sdb"));
        assert!(!is_target("vdbb"));
    }

    #[test]
    fn tags_are_checked() {
        assert!(validate_tag("myprivate-disk").is_ok());
        assert!(validate_tag("with space é").is_ok());
        assert!(validate_tag("bad\nline")
            .unwrap_err()
            .to_string()
            .starts_with("tag:"));
        assert!(validate_tag(&"x".repeat(65))
            .unwrap_err()
            .to_string()
            .starts_with("tag:"));
    }

    #[test]
    fn volume_types_round_trip() {
        for t in [VolumeType::DataRw, VolumeType::DataRo] {
            assert_eq!(t.as_str().parse::<VolumeType>().unwrap(), t);
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
        }
        assert!("rw".parse::<VolumeType>().is_err());
    }
}
