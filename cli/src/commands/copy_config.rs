//! `stratus-copy-config`: put the reference configuration file where the commands read it.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use thiserror::Error;

use super::Context;

/// The reference file, documenting every parameter (also shipped as
/// `/etc/stratuslab/stratuslab-user.cfg.ref`).
pub const REFERENCE_CONFIG: &str = include_str!("../../stratuslab-user.cfg.ref");

/// The file holds a password: readable by its owner only.
const FILE_MODE: u32 = 0o600;
/// Mode of the directories created for it (`~/.stratuslab`).
const DIR_MODE: u32 = 0o700;

#[derive(Debug, Args)]
pub struct CopyConfigArgs {
    /// Overwrite an existing configuration file
    #[arg(short = 'f', long)]
    pub force: bool,
}

#[derive(Debug, Error)]
pub enum CopyConfigError {
    #[error("{} already exists: edit it, or use --force to replace it with the reference file", path.display())]
    Exists { path: PathBuf },
    #[error("cannot create the directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub fn run(ctx: &Context, args: &CopyConfigArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let location = ctx.config_location()?;
    write_reference(&location.path, args.force)?;
    writeln!(
        out,
        "Configuration file: {}\nEdit it to set your endpoint, username and password.",
        location.path.display()
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Writes the reference file to `path` with mode 0600, creating missing directories (0700);
/// an existing file is kept unless `force`.
pub fn write_reference(path: &Path, force: bool) -> Result<(), CopyConfigError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(|source| CopyConfigError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    let write_error = |source| CopyConfigError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut options = OpenOptions::new();
    options.write(true).mode(FILE_MODE);
    if force {
        options.create(true).truncate(true);
    } else {
        // create_new: no window between checking and creating.
        options.create_new(true);
    }
    let mut file = options.open(path).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => CopyConfigError::Exists {
            path: path.to_path_buf(),
        },
        _ => write_error(e),
    })?;
    // An overwritten file keeps its old mode; it must not stay readable by others.
    file.set_permissions(Permissions::from_mode(FILE_MODE))
        .map_err(write_error)?;
    file.write_all(REFERENCE_CONFIG.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(write_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn writes_the_reference_with_mode_0600_in_a_new_0700_directory() {
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join(".stratuslab/stratuslab-user.cfg");
        write_reference(&path, false).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), REFERENCE_CONFIG);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }

    #[test]
    fn refuses_to_overwrite_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user.cfg");
        fs::write(&path, "endpoint = mine\n").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();

        let err = write_reference(&path, false).unwrap_err();
        assert!(matches!(err, CopyConfigError::Exists { .. }), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "endpoint = mine\n");

        write_reference(&path, true).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), REFERENCE_CONFIG);
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn reference_documents_every_key_of_the_guide() {
        for key in [
            "selected_section",
            "endpoint",
            "username",
            "password",
            "user_public_key_file",
            "pdisk_endpoint",
            "marketplace_endpoint",
            "pem_certificate",
            "pem_key",
            "p12_certificate",
            "p12_password",
            "STRATUSLAB_ENDPOINT",
            "STRATUSLAB_USER_CONFIG_SECTION",
            "STRATUSLAB_KEY",
        ] {
            assert!(REFERENCE_CONFIG.contains(key), "{key}");
        }
    }
}
