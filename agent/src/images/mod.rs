//! Images on this host: the content-addressed cache of downloaded artifacts (`cache`), the
//! downloader behind it (`download`), qcow2 headers (`qcow2`), and `prepare`, which turns an
//! instance's image spec into checked local files.

pub mod cache;
pub mod download;
pub mod qcow2;

use std::path::PathBuf;

use stratus_common::agent::ImageSpec;
use stratus_common::api::DiskFormat;

use cache::{CacheError, ImageCache};
use qcow2::DetectedFormat;

/// An image's files, cached and checked, ready for an overlay and a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedImage {
    pub disk: PathBuf,
    pub format: DiskFormat,
    pub virtual_size: u64,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
    /// SHA-256 of every artifact used (disk first), to hold them in the cache.
    pub digests: Vec<String>,
}

/// Why an image cannot be used; its text (with its causes) is the reason a user sees on the
/// Failed instance.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Fetch(#[from] CacheError),
    #[error("cannot inspect the image")]
    Inspect(#[source] qcow2::Qcow2Error),
    #[error("image format {0} is not allowed")]
    NotAllowed(&'static str),
    #[error("{}", cache::format_mismatch(*.declared, *.found))]
    Mismatch {
        declared: DiskFormat,
        found: DiskFormat,
    },
}

/// Fetches (or finds) the image's artifacts and checks that the disk really is the format it
/// is declared to be.
pub fn prepare(cache: &ImageCache, spec: &ImageSpec) -> Result<PreparedImage, PrepareError> {
    let disk = cache.ensure(&spec.disk, Some(spec.format))?;
    let info = qcow2::inspect(&disk).map_err(PrepareError::Inspect)?;
    let found = match info.format {
        DetectedFormat::Qcow2 => DiskFormat::Qcow2,
        DetectedFormat::Raw => DiskFormat::Raw,
        other => return Err(PrepareError::NotAllowed(other.as_str())),
    };
    // Checked before the download was published; a disk already cached under the same
    // checksum may have been declared otherwise by another image.
    if found != spec.format {
        return Err(PrepareError::Mismatch {
            declared: spec.format,
            found,
        });
    }
    let mut digests = vec![spec.disk.sha256.clone()];
    let mut fetch = |artifact: &Option<stratus_common::api::Artifact>| match artifact {
        Some(a) => {
            let path = cache.ensure(a, None)?;
            digests.push(a.sha256.clone());
            Ok::<_, PrepareError>(Some(path))
        }
        None => Ok(None),
    };
    let kernel = fetch(&spec.kernel)?;
    let initrd = fetch(&spec.initrd)?;
    Ok(PreparedImage {
        disk,
        format: found,
        virtual_size: info.virtual_size,
        kernel,
        initrd,
        cmdline: spec.cmdline.clone(),
        digests,
    })
}
