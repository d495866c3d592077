//! qcow2 headers, written and read in-process.
//!
//! Two jobs that must not depend on qemu tools:
//! - [`create_overlay`] writes an instance's copy-on-write disk on top of a cached base image.
//!   It is on the boot path of every instance, so it is a handful of syscalls rather than a
//!   `qemu-img` process (which costs tens of milliseconds and a fork per instance).
//! - [`inspect`] reads what a file really is before any qemu tool or guest touches it. A file
//!   declared "raw" that is really qcow2 (or vmdk, ...) could name a backing file or an
//!   external data file on the host and leak it into a guest, so formats are detected from
//!   the content, never trusted from a name or a declaration.
//!
//! The on-disk layout follows qemu's `docs/interop/qcow2.txt` (big-endian fields).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use stratus_common::api::DiskFormat;

const QCOW_MAGIC: &[u8; 4] = b"QFI\xfb";

/// 64 KiB clusters: qemu's default, the best trade-off between metadata size and
/// copy-on-write granularity for cloud images.
const CLUSTER_BITS: u32 = 16;
const CLUSTER_SIZE: u64 = 1 << CLUSTER_BITS;
/// 16-bit refcounts (refcount_order 4), qemu's default and the only width v2 knows.
const REFCOUNT_ORDER: u32 = 4;

/// Length of the version 2 header; version 3 adds five fields up to [`V3_HEADER_LEN`].
const V2_HEADER_LEN: usize = 72;
const V3_HEADER_LEN: usize = 104;

const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xE279_2ACA;
const EXT_DATA_FILE: u32 = 0x4441_5441;

/// Incompatible feature bit 2: guest data lives in an external data file, not in the image.
const INCOMPAT_DATA_FILE: u64 = 1 << 2;

/// The qcow2 specification caps a backing file name at 1023 bytes.
const MAX_BACKING_NAME: usize = 1023;
/// qemu refuses L1 tables larger than 32 MiB (`QCOW_MAX_L1_SIZE`); with 64 KiB clusters
/// that is 2 PiB of virtual disk.
const MAX_L1_BYTES: u64 = 32 << 20;

/// Errors of qcow2 creation and inspection.
#[derive(Debug, thiserror::Error)]
pub enum Qcow2Error {
    /// The backing file would be resolved relative to the overlay's directory: a path that
    /// silently means something else once the overlay moves.
    #[error("backing file {0} is not an absolute path")]
    RelativeBacking(PathBuf),
    #[error("backing file name {0} is longer than 1023 bytes")]
    BackingNameTooLong(PathBuf),
    #[error("virtual size {0} is not a positive multiple of 512 bytes")]
    InvalidSize(u64),
    #[error("virtual size {0} is too large for a qcow2 image")]
    SizeTooLarge(u64),
    #[error("{0} already exists")]
    AlreadyExists(PathBuf),
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a valid qcow2 image: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Qcow2Error + 'a {
    move |source| Qcow2Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The format of an image file, as detected from its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DetectedFormat {
    /// No known magic: the bytes are the disk.
    Raw,
    Qcow2,
    /// qcow version 1 (same magic as qcow2, version 1).
    Qcow,
    Vmdk,
    Vhdx,
    Vdi,
    Qed,
    /// Virtual PC / VHD.
    Vpc,
    Luks,
    Parallels,
    Bochs,
}

impl DetectedFormat {
    /// The name qemu uses for the format.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
            Self::Qcow => "qcow",
            Self::Vmdk => "vmdk",
            Self::Vhdx => "vhdx",
            Self::Vdi => "vdi",
            Self::Qed => "qed",
            Self::Vpc => "vpc",
            Self::Luks => "luks",
            Self::Parallels => "parallels",
            Self::Bochs => "bochs",
        }
    }

    /// The image format this is, if it is one StratusLab accepts.
    pub fn disk_format(self) -> Option<DiskFormat> {
        match self {
            Self::Raw => Some(DiskFormat::Raw),
            Self::Qcow2 => Some(DiskFormat::Qcow2),
            _ => None,
        }
    }
}

impl std::fmt::Display for DetectedFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// qcow2 header facts that decide whether an image is safe and supported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qcow2Details {
    /// 2 or 3.
    pub version: u32,
    pub cluster_size: u64,
    /// Incompatible feature bits (bit 0 dirty, 1 corrupt, 2 external data file,
    /// 3 compression type, 4 extended L2). Unknown bits make qemu refuse the image.
    pub incompatible_features: u64,
    /// Non-zero when the image is encrypted (1 AES, 2 LUKS).
    pub crypt_method: u32,
    /// Internal snapshots.
    pub snapshots: u32,
}

/// What [`inspect`] found out about an image file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: DetectedFormat,
    /// Size of the disk the guest sees, in bytes: the file length for raw, the header's
    /// size for qcow and qcow2, 0 for the other formats (recognised only to be refused).
    pub virtual_size: u64,
    /// The backing file the image names, exactly as stored (qcow and qcow2).
    pub backing_file: Option<String>,
    /// The backing file's format, from the qcow2 header extension.
    pub backing_format: Option<String>,
    /// Guest data lives in another host file (qcow2 incompatible feature bit 2 or the
    /// data-file header extension).
    pub external_data_file: bool,
    /// The external data file's name, when the header extension gives one.
    pub data_file: Option<String>,
    /// Present for qcow2.
    pub qcow2: Option<Qcow2Details>,
}

impl ImageInfo {
    fn plain(format: DetectedFormat, virtual_size: u64) -> Self {
        Self {
            format,
            virtual_size,
            backing_file: None,
            backing_format: None,
            external_data_file: false,
            data_file: None,
            qcow2: None,
        }
    }
}

/// The fixed part of a qcow2 header. Fields that only version 3 has are zero for version 2.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Header {
    version: u32,
    backing_file_offset: u64,
    backing_file_size: u32,
    cluster_bits: u32,
    size: u64,
    crypt_method: u32,
    l1_size: u32,
    l1_table_offset: u64,
    refcount_table_offset: u64,
    refcount_table_clusters: u32,
    nb_snapshots: u32,
    snapshots_offset: u64,
    incompatible_features: u64,
    compatible_features: u64,
    autoclear_features: u64,
    refcount_order: u32,
    header_length: u32,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Header {
    /// Encodes a version 3 header of `V3_HEADER_LEN` bytes.
    fn encode_v3(&self) -> [u8; V3_HEADER_LEN] {
        let mut b = [0u8; V3_HEADER_LEN];
        let mut put = |at: usize, bytes: &[u8]| b[at..at + bytes.len()].copy_from_slice(bytes);
        put(0, QCOW_MAGIC);
        put(4, &self.version.to_be_bytes());
        put(8, &self.backing_file_offset.to_be_bytes());
        put(16, &self.backing_file_size.to_be_bytes());
        put(20, &self.cluster_bits.to_be_bytes());
        put(24, &self.size.to_be_bytes());
        put(32, &self.crypt_method.to_be_bytes());
        put(36, &self.l1_size.to_be_bytes());
        put(40, &self.l1_table_offset.to_be_bytes());
        put(48, &self.refcount_table_offset.to_be_bytes());
        put(56, &self.refcount_table_clusters.to_be_bytes());
        put(60, &self.nb_snapshots.to_be_bytes());
        put(64, &self.snapshots_offset.to_be_bytes());
        put(72, &self.incompatible_features.to_be_bytes());
        put(80, &self.compatible_features.to_be_bytes());
        put(88, &self.autoclear_features.to_be_bytes());
        put(96, &self.refcount_order.to_be_bytes());
        put(100, &self.header_length.to_be_bytes());
        b
    }

    /// Decodes a version 2 or 3 header from the start of the file. Checks only what is
    /// needed to read the rest of the header safely.
    fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() < V2_HEADER_LEN || &b[..4] != QCOW_MAGIC {
            return Err("truncated header".into());
        }
        let version = be32(b, 4);
        let mut h = Header {
            version,
            backing_file_offset: be64(b, 8),
            backing_file_size: be32(b, 16),
            cluster_bits: be32(b, 20),
            size: be64(b, 24),
            crypt_method: be32(b, 32),
            l1_size: be32(b, 36),
            l1_table_offset: be64(b, 40),
            refcount_table_offset: be64(b, 48),
            refcount_table_clusters: be32(b, 56),
            nb_snapshots: be32(b, 60),
            snapshots_offset: be64(b, 64),
            incompatible_features: 0,
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: REFCOUNT_ORDER,
            header_length: V2_HEADER_LEN as u32,
        };
        match version {
            2 => {}
            3 => {
                if b.len() < V3_HEADER_LEN {
                    return Err("truncated version 3 header".into());
                }
                h.incompatible_features = be64(b, 72);
                h.compatible_features = be64(b, 80);
                h.autoclear_features = be64(b, 88);
                h.refcount_order = be32(b, 96);
                h.header_length = be32(b, 100);
                if (h.header_length as usize) < V3_HEADER_LEN {
                    return Err(format!("header length {} below 104", h.header_length));
                }
            }
            v => return Err(format!("unsupported version {v}")),
        }
        // qemu accepts 512 B .. 2 MiB clusters.
        if !(9..=21).contains(&h.cluster_bits) {
            return Err(format!("cluster_bits {} out of range", h.cluster_bits));
        }
        if h.header_length as u64 > 1 << h.cluster_bits {
            return Err(format!(
                "header length {} exceeds a cluster",
                h.header_length
            ));
        }
        Ok(h)
    }
}

/// One header extension: type and payload.
fn push_extension(buf: &mut Vec<u8>, kind: u32, data: &[u8]) {
    buf.extend_from_slice(&kind.to_be_bytes());
    buf.extend_from_slice(&(data.len() as u32).to_be_bytes());
    buf.extend_from_slice(data);
    buf.resize(buf.len().next_multiple_of(8), 0);
}

/// Number of L1 entries for `virtual_size`: each L1 entry maps one L2 table, which maps
/// `cluster_size / 8` clusters.
fn l1_entries(virtual_size: u64) -> u64 {
    let per_l2 = CLUSTER_SIZE * (CLUSTER_SIZE / 8);
    virtual_size.div_ceil(per_l2)
}

/// The bytes of a new overlay and where they go; everything else in the file is zeros.
struct OverlayLayout {
    /// Header, header extensions and backing file name.
    cluster0: Vec<u8>,
    refcount_table_offset: u64,
    refcount_table: [u8; 8],
    refcount_block_offset: u64,
    refcount_block: Vec<u8>,
    file_len: u64,
}

/// Lays out an overlay: pure, so the layout is unit-tested apart from the file system.
// `u64::is_multiple_of` needs Rust 1.87; the workspace supports 1.85.
#[allow(clippy::manual_is_multiple_of)]
fn overlay_layout(
    backing: &[u8],
    backing_format: DiskFormat,
    virtual_size: u64,
) -> Result<OverlayLayout, Qcow2Error> {
    if virtual_size == 0 || virtual_size % 512 != 0 {
        return Err(Qcow2Error::InvalidSize(virtual_size));
    }
    let l1_size = l1_entries(virtual_size);
    if l1_size * 8 > MAX_L1_BYTES {
        return Err(Qcow2Error::SizeTooLarge(virtual_size));
    }
    // Cluster 0: header; 1: refcount table; 2: refcount block; 3..: L1 table.
    let refcount_table_offset = CLUSTER_SIZE;
    let refcount_block_offset = 2 * CLUSTER_SIZE;
    let l1_table_offset = 3 * CLUSTER_SIZE;
    let l1_clusters = (l1_size * 8).div_ceil(CLUSTER_SIZE);
    let used_clusters = 3 + l1_clusters;

    let mut cluster0 = Vec::with_capacity(V3_HEADER_LEN + 32 + backing.len());
    cluster0.resize(V3_HEADER_LEN, 0);
    push_extension(
        &mut cluster0,
        EXT_BACKING_FORMAT,
        backing_format.as_str().as_bytes(),
    );
    push_extension(&mut cluster0, EXT_END, &[]);
    let backing_file_offset = cluster0.len() as u64;
    cluster0.extend_from_slice(backing);

    let header = Header {
        version: 3,
        backing_file_offset,
        backing_file_size: backing.len() as u32,
        cluster_bits: CLUSTER_BITS,
        size: virtual_size,
        crypt_method: 0,
        l1_size: l1_size as u32,
        l1_table_offset,
        refcount_table_offset,
        refcount_table_clusters: 1,
        nb_snapshots: 0,
        snapshots_offset: 0,
        incompatible_features: 0,
        compatible_features: 0,
        autoclear_features: 0,
        refcount_order: REFCOUNT_ORDER,
        header_length: V3_HEADER_LEN as u32,
    };
    cluster0[..V3_HEADER_LEN].copy_from_slice(&header.encode_v3());

    let refcount_block: Vec<u8> = (0..used_clusters)
        .flat_map(|_| 1u16.to_be_bytes())
        .collect();
    // At most 3 + 512 clusters (MAX_L1_BYTES), far below one block's 32768 entries.
    debug_assert!(refcount_block.len() as u64 <= CLUSTER_SIZE);

    Ok(OverlayLayout {
        cluster0,
        refcount_table_offset,
        refcount_table: refcount_block_offset.to_be_bytes(),
        refcount_block_offset,
        refcount_block,
        // Like qemu-img, the file ends right after the L1 table; the table is a hole, which
        // reads as zeros: every L2 entry unallocated, every read falls through to the backing.
        file_len: l1_table_offset + l1_size * 8,
    })
}

/// Removes a temporary file unless disarmed, so a failed creation leaves nothing behind.
struct RemoveOnDrop<'a>(Option<&'a Path>);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(path) = self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Writes a qcow2 v3 overlay at `path` whose reads fall through to `backing` until the guest
/// writes. `virtual_size` must be the base's virtual size (the caller knows it from
/// [`inspect`]); the backing file is not opened here, which keeps this a few syscalls.
///
/// The image appears atomically and durably: it is written to a temporary file in the same
/// directory, fsynced, then published under `path` with `link(2)`, which (unlike `rename(2)`)
/// fails if `path` exists, so an existing disk is never replaced. The directory is fsynced
/// last so the name survives a host crash.
pub fn create_overlay(
    path: &Path,
    backing: &Path,
    backing_format: DiskFormat,
    virtual_size: u64,
) -> Result<(), Qcow2Error> {
    if !backing.is_absolute() {
        return Err(Qcow2Error::RelativeBacking(backing.to_path_buf()));
    }
    let backing_bytes = backing.as_os_str().as_bytes();
    if backing_bytes.len() > MAX_BACKING_NAME {
        return Err(Qcow2Error::BackingNameTooLong(backing.to_path_buf()));
    }
    let layout = overlay_layout(backing_bytes, backing_format, virtual_size)?;

    let file_name = path.file_name().ok_or_else(|| Qcow2Error::Io {
        action: "create",
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "no file name"),
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if path.symlink_metadata().is_ok() {
        return Err(Qcow2Error::AlreadyExists(path.to_path_buf()));
    }

    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp_name);

    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(io_error("create", &tmp))?;
    let mut cleanup = RemoveOnDrop(Some(&tmp));

    let write = |data: &[u8], offset: u64| {
        file.write_all_at(data, offset)
            .map_err(io_error("write", &tmp))
    };
    write(&layout.cluster0, 0)?;
    write(&layout.refcount_table, layout.refcount_table_offset)?;
    write(&layout.refcount_block, layout.refcount_block_offset)?;
    file.set_len(layout.file_len)
        .map_err(io_error("extend", &tmp))?;
    file.sync_all().map_err(io_error("fsync", &tmp))?;
    drop(file);

    match std::fs::hard_link(&tmp, path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(Qcow2Error::AlreadyExists(path.to_path_buf()));
        }
        Err(e) => return Err(io_error("publish", path)(e)),
    }
    // The temporary name goes now; if this fails the image is still complete under `path`.
    cleanup.0 = None;
    std::fs::remove_file(&tmp).map_err(io_error("remove", &tmp))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("fsync", dir))
}

/// Detects the real format of the image at `path` from its content and, for qcow2, reads the
/// header facts that matter for safety: backing file, external data file, feature bits.
///
/// Reads at most the first cluster and the backing file name; never follows the backing
/// chain or opens the data file.
pub fn inspect(path: &Path) -> Result<ImageInfo, Qcow2Error> {
    let file = File::open(path).map_err(io_error("open", path))?;
    // Seeking works for block devices too, whose metadata length is 0.
    let len = {
        use std::io::Seek;
        (&file)
            .seek(io::SeekFrom::End(0))
            .map_err(io_error("size", path))?
    };
    let mut head = vec![0u8; len.min(512) as usize];
    file.read_exact_at(&mut head, 0)
        .map_err(io_error("read", path))?;

    let corrupt = |reason: String| Qcow2Error::Corrupt {
        path: path.to_path_buf(),
        reason,
    };

    if head.starts_with(QCOW_MAGIC) {
        if head.len() >= 8 && be32(&head, 4) == 1 {
            return inspect_qcow1(&file, &head, len).map_err(corrupt);
        }
        return inspect_qcow2(&file, len).map_err(corrupt);
    }
    if let Some(format) = detect_other(&head) {
        return Ok(ImageInfo::plain(format, 0));
    }
    // A fixed-size VHD has its only "conectix" footer in the last 512 bytes.
    if len >= 1024 {
        let mut footer = [0u8; 8];
        file.read_exact_at(&mut footer, len - 512)
            .map_err(io_error("read", path))?;
        if &footer == b"conectix" {
            return Ok(ImageInfo::plain(DetectedFormat::Vpc, 0));
        }
    }
    Ok(ImageInfo::plain(DetectedFormat::Raw, len))
}

/// Magics at the start of the file of the formats qemu would otherwise probe.
fn detect_other(head: &[u8]) -> Option<DetectedFormat> {
    const MAGICS: &[(&[u8], DetectedFormat)] = &[
        (b"KDMV", DetectedFormat::Vmdk),
        (b"COWD", DetectedFormat::Vmdk),
        (b"# Disk DescriptorFile", DetectedFormat::Vmdk),
        (b"vhdxfile", DetectedFormat::Vhdx),
        (b"QED\0", DetectedFormat::Qed),
        (b"conectix", DetectedFormat::Vpc),
        (b"LUKS\xba\xbe", DetectedFormat::Luks),
        (b"WithoutFreeSpace", DetectedFormat::Parallels),
        (b"WithouFreSpacExt", DetectedFormat::Parallels),
        (b"Bochs Virtual HD Image", DetectedFormat::Bochs),
    ];
    if let Some((_, format)) = MAGICS.iter().find(|(magic, _)| head.starts_with(magic)) {
        return Some(*format);
    }
    // VDI: little-endian signature 0xbeda107f at offset 0x40.
    if head.len() >= 0x44 && head[0x40..0x44] == 0xbeda_107fu32.to_le_bytes() {
        return Some(DetectedFormat::Vdi);
    }
    None
}

fn inspect_qcow1(file: &File, head: &[u8], len: u64) -> Result<ImageInfo, String> {
    if head.len() < 32 {
        return Err("truncated qcow header".into());
    }
    Ok(ImageInfo {
        backing_file: read_backing_name(file, len, be64(head, 8), be32(head, 16))?,
        ..ImageInfo::plain(DetectedFormat::Qcow, be64(head, 24))
    })
}

fn read_backing_name(
    file: &File,
    len: u64,
    offset: u64,
    size: u32,
) -> Result<Option<String>, String> {
    if offset == 0 {
        return Ok(None);
    }
    if size as usize > MAX_BACKING_NAME {
        return Err(format!("backing file name of {size} bytes"));
    }
    if offset.checked_add(size as u64).is_none_or(|end| end > len) {
        return Err("backing file name beyond the end of the file".into());
    }
    let mut name = vec![0u8; size as usize];
    file.read_exact_at(&mut name, offset)
        .map_err(|e| format!("reading the backing file name: {e}"))?;
    String::from_utf8(name)
        .map(Some)
        .map_err(|_| "backing file name is not UTF-8".into())
}

fn inspect_qcow2(file: &File, len: u64) -> Result<ImageInfo, String> {
    let mut fixed = vec![0u8; len.min(V3_HEADER_LEN as u64) as usize];
    file.read_exact_at(&mut fixed, 0)
        .map_err(|e| format!("reading the header: {e}"))?;
    let h = Header::decode(&fixed)?;
    let cluster_size = 1u64 << h.cluster_bits;

    // Extensions run from the end of the header to the backing file name (or the end of
    // cluster 0), as qemu reads them.
    let ext_end = match h.backing_file_offset {
        0 => cluster_size,
        o => o.min(cluster_size),
    }
    .min(len);
    let mut backing_format = None;
    let mut data_file = None;
    let mut saw_data_file_ext = false;
    if ext_end > h.header_length as u64 {
        let mut ext = vec![0u8; (ext_end - h.header_length as u64) as usize];
        file.read_exact_at(&mut ext, h.header_length as u64)
            .map_err(|e| format!("reading header extensions: {e}"))?;
        let mut at = 0usize;
        while at + 8 <= ext.len() {
            let kind = be32(&ext, at);
            let size = be32(&ext, at + 4) as usize;
            if kind == EXT_END {
                break;
            }
            let data = ext
                .get(at + 8..at + 8 + size)
                .ok_or_else(|| format!("header extension {kind:#x} overruns cluster 0"))?;
            let text = || String::from_utf8_lossy(data).into_owned();
            match kind {
                EXT_BACKING_FORMAT => backing_format = Some(text()),
                EXT_DATA_FILE => {
                    saw_data_file_ext = true;
                    data_file = Some(text());
                }
                _ => {}
            }
            at += 8 + size.next_multiple_of(8);
        }
    }

    let backing_file = read_backing_name(file, len, h.backing_file_offset, h.backing_file_size)?;
    Ok(ImageInfo {
        format: DetectedFormat::Qcow2,
        virtual_size: h.size,
        backing_file,
        backing_format,
        external_data_file: h.incompatible_features & INCOMPAT_DATA_FILE != 0 || saw_data_file_ext,
        data_file,
        qcow2: Some(Qcow2Details {
            version: h.version,
            cluster_size,
            incompatible_features: h.incompatible_features,
            crypt_method: h.crypt_method,
            snapshots: h.nb_snapshots,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn run(cmd: &mut Command) -> String {
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn qemu_img(args: &[&str]) -> String {
        run(Command::new("qemu-img").args(args))
    }

    fn s(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    fn info_json(path: &Path) -> serde_json::Value {
        // -U: no lock needed, and a plain info must never open the backing chain's locks.
        serde_json::from_str(&qemu_img(&["info", "-U", "--output=json", s(path)])).unwrap()
    }

    fn check_overlay(base: &Path, base_format: DiskFormat, size: u64) {
        let dir = base.parent().unwrap();
        let overlay = dir.join("disk.qcow2");
        create_overlay(&overlay, base, base_format, size).unwrap();

        qemu_img(&["check", s(&overlay)]);
        let info = info_json(&overlay);
        assert_eq!(info["format"], "qcow2");
        assert_eq!(info["virtual-size"], size);
        assert_eq!(info["backing-filename"], s(base));
        assert_eq!(info["backing-filename-format"], base_format.as_str());
        assert_eq!(info["cluster-size"], 65536);
        assert_eq!(info["format-specific"]["data"]["compat"], "1.1");

        let ours = inspect(&overlay).unwrap();
        assert_eq!(ours.format, DetectedFormat::Qcow2);
        assert_eq!(ours.virtual_size, size);
        assert_eq!(ours.backing_file.as_deref(), Some(s(base)));
        assert_eq!(ours.backing_format.as_deref(), Some(base_format.as_str()));
        assert!(!ours.external_data_file);

        let io = |fmt: &str, path: &Path, cmd: &str| {
            let out = run(Command::new("qemu-io").args(["-f", fmt, "-c", cmd, s(path)]));
            assert!(!out.contains("Pattern verification failed"), "{cmd}: {out}");
        };
        io(base_format.as_str(), base, "write -P 0xcd 1M 64k");
        io("qcow2", &overlay, "write -P 0xab 0 64k");
        qemu_img(&["check", s(&overlay)]);
        // Written data reads back; unwritten data falls through to the base.
        io("qcow2", &overlay, "read -P 0xab 0 64k");
        io("qcow2", &overlay, "read -P 0xcd 1M 64k");
        // The base is untouched by writes to the overlay.
        io(base_format.as_str(), base, "read -P 0 0 64k");
    }

    #[test]
    fn overlay_on_qcow2_base_is_accepted_by_qemu() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", s(&base), "64M"]);
        check_overlay(&base, DiskFormat::Qcow2, 64 << 20);
    }

    #[test]
    fn overlay_on_raw_base_is_accepted_by_qemu() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.raw");
        File::create(&base).unwrap().set_len(3 << 20).unwrap();
        check_overlay(&base, DiskFormat::Raw, 3 << 20);
    }

    #[test]
    fn large_overlay_spans_several_l1_entries() {
        // 1 TiB + 512 B: 2049 L1 entries, still one L1 cluster.
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.qcow2");
        let size = (1u64 << 40) + 512;
        qemu_img(&["create", "-q", "-f", "qcow2", s(&base), &size.to_string()]);
        let overlay = dir.path().join("disk.qcow2");
        create_overlay(&overlay, &base, DiskFormat::Qcow2, size).unwrap();
        qemu_img(&["check", s(&overlay)]);
        assert_eq!(info_json(&overlay)["virtual-size"], size);
        let h = Header::decode(&std::fs::read(&overlay).unwrap()).unwrap();
        assert_eq!(h.l1_size, 2049);
    }

    #[test]
    fn overlay_refuses_bad_input_and_existing_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.qcow2");
        let base = dir.path().join("base.raw");
        assert!(matches!(
            create_overlay(&path, Path::new("base.raw"), DiskFormat::Raw, 1 << 20),
            Err(Qcow2Error::RelativeBacking(_))
        ));
        assert!(matches!(
            create_overlay(&path, &base, DiskFormat::Raw, 1000),
            Err(Qcow2Error::InvalidSize(1000))
        ));
        assert!(matches!(
            create_overlay(&path, &base, DiskFormat::Raw, 0),
            Err(Qcow2Error::InvalidSize(0))
        ));
        assert!(matches!(
            create_overlay(&path, &base, DiskFormat::Raw, 1 << 62),
            Err(Qcow2Error::SizeTooLarge(_))
        ));
        let long = PathBuf::from(format!("/{}", "a".repeat(1100)));
        assert!(matches!(
            create_overlay(&path, &long, DiskFormat::Raw, 1 << 20),
            Err(Qcow2Error::BackingNameTooLong(_))
        ));

        std::fs::write(&path, b"precious").unwrap();
        assert!(matches!(
            create_overlay(&path, &base, DiskFormat::Raw, 1 << 20),
            Err(Qcow2Error::AlreadyExists(_))
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
        // Only the precious file: no temporary left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn header_round_trips() {
        let layout = overlay_layout(b"/base", DiskFormat::Raw, 1 << 30).unwrap();
        let h = Header::decode(&layout.cluster0).unwrap();
        assert_eq!(h.version, 3);
        assert_eq!(h.size, 1 << 30);
        assert_eq!(h.l1_size, 2);
        assert_eq!(h.header_length, 104);
        assert_eq!(h.refcount_order, 4);
        assert_eq!(h.backing_file_size, 5);
        let at = h.backing_file_offset as usize;
        assert_eq!(at % 8, 0);
        assert_eq!(&layout.cluster0[at..], b"/base");
        assert_eq!(Header::decode(&h.encode_v3()).unwrap(), h);
        // Header, refcount table, refcount block and one L1 cluster, each counted once.
        assert_eq!(layout.refcount_block, [0, 1, 0, 1, 0, 1, 0, 1]);
    }

    #[test]
    fn inspect_reports_formats_and_hazards() {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);

        qemu_img(&["create", "-q", "-f", "qcow2", s(&p("plain.qcow2")), "16M"]);
        let plain = inspect(&p("plain.qcow2")).unwrap();
        assert_eq!(plain.format, DetectedFormat::Qcow2);
        assert_eq!(plain.virtual_size, 16 << 20);
        assert_eq!(plain.backing_file, None);
        assert!(!plain.external_data_file);
        let details = plain.qcow2.unwrap();
        assert_eq!((details.version, details.cluster_size), (3, 65536));
        assert_eq!(details.crypt_method, 0);

        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "compat=0.10",
            s(&p("v2.qcow2")),
            "1M",
        ]);
        assert_eq!(inspect(&p("v2.qcow2")).unwrap().qcow2.unwrap().version, 2);

        std::fs::write(p("disk.raw"), vec![7u8; 5000]).unwrap();
        let raw = inspect(&p("disk.raw")).unwrap();
        assert_eq!(raw.format, DetectedFormat::Raw);
        assert_eq!(raw.virtual_size, 5000);

        std::fs::write(p("empty.raw"), b"").unwrap();
        assert_eq!(
            inspect(&p("empty.raw")).unwrap().format,
            DetectedFormat::Raw
        );

        qemu_img(&["create", "-q", "-f", "vmdk", s(&p("disk.vmdk")), "16M"]);
        assert_eq!(
            inspect(&p("disk.vmdk")).unwrap().format,
            DetectedFormat::Vmdk
        );
        for (fmt, expected) in [
            ("vdi", DetectedFormat::Vdi),
            ("vhdx", DetectedFormat::Vhdx),
            ("qed", DetectedFormat::Qed),
            ("vpc", DetectedFormat::Vpc),
        ] {
            let file = p(&format!("disk.{fmt}"));
            qemu_img(&["create", "-q", "-f", fmt, s(&file), "16M"]);
            assert_eq!(inspect(&file).unwrap().format, expected, "{fmt}");
        }
        // A fixed VHD carries its footer only at the end.
        let fixed = p("fixed.vhd");
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "vpc",
            "-o",
            "subformat=fixed",
            s(&fixed),
            "1M",
        ]);
        assert_eq!(inspect(&fixed).unwrap().format, DetectedFormat::Vpc);

        let data = p("data.qcow2");
        let data_raw = p("x.raw");
        let opt = format!("data_file={}", s(&data_raw));
        qemu_img(&["create", "-q", "-f", "qcow2", "-o", &opt, s(&data), "16M"]);
        let info = inspect(&data).unwrap();
        assert!(info.external_data_file);
        assert_eq!(info.data_file.as_deref(), Some(s(&data_raw)));
        assert_ne!(
            info.qcow2.unwrap().incompatible_features & INCOMPAT_DATA_FILE,
            0
        );

        let overlay = p("overlay.qcow2");
        create_overlay(&overlay, &p("plain.qcow2"), DiskFormat::Qcow2, 16 << 20).unwrap();
        let info = inspect(&overlay).unwrap();
        assert_eq!(info.backing_file.as_deref(), Some(s(&p("plain.qcow2"))));
        assert_eq!(info.backing_format.as_deref(), Some("qcow2"));

        // A file declared raw whose content is a qcow2 pointing at a host file is caught.
        let evil = p("evil.img");
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "/etc/shadow",
            "-F",
            "raw",
            "-u",
            s(&evil),
            "1M",
        ]);
        let info = inspect(&evil).unwrap();
        assert_eq!(info.format, DetectedFormat::Qcow2);
        assert_eq!(info.backing_file.as_deref(), Some("/etc/shadow"));
    }

    #[test]
    fn inspect_rejects_truncated_qcow2() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short.qcow2");
        std::fs::write(&path, b"QFI\xfb\0\0\0\x03").unwrap();
        assert!(matches!(inspect(&path), Err(Qcow2Error::Corrupt { .. })));
    }
}
