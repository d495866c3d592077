//! Base images as this plain registry knows them: a local file (absolute path or
//! `file://` URL) that must match its registered SHA-256 and declared format before any overlay
//! is made on it. Verified files are remembered by (size, modification time) so a second start
//! does not hash again. (The content-addressed download cache replaces this with the
//! Marketplace work.)

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use stratus_common::agent::ImageSpec;
use stratus_common::api::DiskFormat;

use super::qcow2::{self, DetectedFormat};

#[derive(Debug, thiserror::Error)]
pub enum BaseImageError {
    #[error("{field} location {location:?} is not a local absolute path or file:// URL")]
    Location {
        field: &'static str,
        location: String,
    },
    #[error("cannot read {field} {path}")]
    Read {
        field: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("image checksum mismatch")]
    ChecksumMismatch,
    #[error("image format mismatch: declared {declared}, found {found}")]
    FormatMismatch {
        declared: &'static str,
        found: String,
    },
    #[error("image has a backing file; base images must be standalone")]
    BackingFile,
    #[error("image uses an external data file")]
    ExternalDataFile,
    #[error("cannot inspect the image")]
    Inspect(#[from] qcow2::Qcow2Error),
}

/// A base image checked and ready to put overlays on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    pub disk: PathBuf,
    pub format: DiskFormat,
    pub virtual_size: u64,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
}

#[derive(Default)]
pub struct BaseImages {
    /// Files whose content was hashed: path -> (length, mtime, sha256).
    verified: Mutex<HashMap<PathBuf, (u64, SystemTime, String)>>,
}

fn local_path(field: &'static str, location: &str) -> Result<PathBuf, BaseImageError> {
    let path = location.strip_prefix("file://").unwrap_or(location);
    let path = Path::new(path);
    if path.is_absolute()
        && !path
            .components()
            .any(|c| c == std::path::Component::ParentDir)
    {
        Ok(path.to_owned())
    } else {
        Err(BaseImageError::Location {
            field,
            location: location.to_owned(),
        })
    }
}

fn readable_file(field: &'static str, location: &str) -> Result<PathBuf, BaseImageError> {
    let path = local_path(field, location)?;
    std::fs::metadata(&path).map_err(|source| BaseImageError::Read {
        field,
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

impl BaseImages {
    /// Checks the image's disk (checksum, real format, no backing or data file) and its
    /// kernel and initrd, and says where they are.
    pub fn resolve(&self, spec: &ImageSpec) -> Result<ResolvedImage, BaseImageError> {
        let disk = readable_file("disk", &spec.location)?;
        self.verify_checksum(&disk, &spec.sha256)?;
        let info = qcow2::inspect(&disk)?;
        let found = match info.format {
            DetectedFormat::Qcow2 => DiskFormat::Qcow2,
            DetectedFormat::Raw => DiskFormat::Raw,
            other => {
                return Err(BaseImageError::FormatMismatch {
                    declared: spec.format.as_str(),
                    found: format!("{other:?}").to_lowercase(),
                })
            }
        };
        if found != spec.format {
            return Err(BaseImageError::FormatMismatch {
                declared: spec.format.as_str(),
                found: found.as_str().to_owned(),
            });
        }
        if info.backing_file.is_some() {
            return Err(BaseImageError::BackingFile);
        }
        if info.external_data_file {
            return Err(BaseImageError::ExternalDataFile);
        }
        let kernel = spec
            .kernel
            .as_deref()
            .map(|k| readable_file("kernel", k))
            .transpose()?;
        let initrd = spec
            .initrd
            .as_deref()
            .map(|i| readable_file("initrd", i))
            .transpose()?;
        Ok(ResolvedImage {
            disk,
            format: found,
            virtual_size: info.virtual_size,
            kernel,
            initrd,
            cmdline: spec.cmdline.clone(),
        })
    }

    fn verify_checksum(&self, path: &Path, expected: &str) -> Result<(), BaseImageError> {
        let read_err = |source| BaseImageError::Read {
            field: "disk",
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        let key = (meta.len(), meta.modified().map_err(read_err)?);
        let known = self
            .verified
            .lock()
            .expect("verified lock")
            .get(path)
            .cloned();
        let actual = match known {
            Some((len, mtime, sha)) if (len, mtime) == key => sha,
            _ => {
                let sha = sha256_file(path).map_err(read_err)?;
                self.verified
                    .lock()
                    .expect("verified lock")
                    .insert(path.to_owned(), (key.0, key.1, sha.clone()));
                sha
            }
        };
        if actual == expected {
            Ok(())
        } else {
            Err(BaseImageError::ChecksumMismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(location: &Path, sha256: String, format: DiskFormat) -> ImageSpec {
        ImageSpec {
            name: "t".into(),
            location: format!("file://{}", location.display()),
            format,
            sha256,
            kernel: None,
            initrd: None,
            cmdline: None,
        }
    }

    #[test]
    fn a_matching_raw_image_resolves_and_a_changed_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        std::fs::write(&path, vec![7u8; 1 << 16]).unwrap();
        let sha = sha256_file(&path).unwrap();
        let images = BaseImages::default();
        let resolved = images
            .resolve(&spec(&path, sha.clone(), DiskFormat::Raw))
            .unwrap();
        assert_eq!(resolved.virtual_size, 1 << 16);
        assert_eq!(resolved.disk, path);
        // Declared qcow2 but really raw.
        let err = images
            .resolve(&spec(&path, sha.clone(), DiskFormat::Qcow2))
            .unwrap_err();
        assert!(
            matches!(err, BaseImageError::FormatMismatch { .. }),
            "{err}"
        );
        // Content changes (size changes too, so the remembered hash is not reused).
        std::fs::write(&path, vec![8u8; 1 << 15]).unwrap();
        let err = images
            .resolve(&spec(&path, sha, DiskFormat::Raw))
            .unwrap_err();
        assert_eq!(err.to_string(), "image checksum mismatch");
    }

    #[test]
    fn relative_and_traversing_locations_are_refused() {
        assert!(local_path("disk", "disk.raw").is_err());
        assert!(local_path("disk", "file:///a/../etc/shadow").is_err());
        assert_eq!(
            local_path("disk", "file:///a/b").unwrap(),
            PathBuf::from("/a/b")
        );
    }
}
