//! Files replaced whole and durably: written under a temporary name beside the file (its mode
//! and group set before any byte is written), fsynced, renamed over the old one, and the
//! directory fsynced, so a crash leaves either the old file or the new one, never half of one.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What could not be done, and to which file.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}")]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> WriteError + '_ {
    move |source| WriteError {
        path: path.to_owned(),
        source,
    }
}

/// Replaces `path` with `contents`, mode `mode`, group `gid` if given.
pub fn replace(
    path: &Path,
    contents: &[u8],
    mode: u32,
    gid: Option<u32>,
) -> Result<(), WriteError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(at(&tmp))?;
    if let Some(gid) = gid {
        std::os::unix::fs::fchown(&file, None, Some(gid)).map_err(at(&tmp))?;
    }
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(at(&tmp))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(at(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(at(path))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(at(dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole_with_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        replace(&path, b"one", 0o600, None).unwrap();
        replace(&path, b"two", 0o640, None).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        let err = replace(&dir.path().join("no/such/dir"), b"x", 0o600, None).unwrap_err();
        assert!(err.path.ends_with("no/such/.dir.tmp"), "{err:?}");
    }
}
