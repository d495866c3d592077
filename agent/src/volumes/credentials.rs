//! The TLS credentials QEMU reads for NBD, made from the host's certificate and key and the
//! site CA, in the directory layout QEMU's `tls-creds-x509` object expects:
//!
//! - **Server** (a storage host's exports): `ca-cert.pem`, `server-cert.pem`,
//!   `server-key.pem` under `<state_dir>/tls/nbd-server/`, read by the `qemu-storage-daemon`
//!   the agent starts (as root) for each export. Each export also names the one client host
//!   it opens for (an authorization list of that host's certificate subject).
//! - **Client** (a compute host's guests): `ca-cert.pem`, `client-cert.pem`,
//!   `client-key.pem` in libvirt's NBD certificate directory (`nbd_tls_x509_cert_dir` of
//!   `qemu.conf`, `/etc/pki/qemu` unless the site changed it), which libvirt hands to QEMU
//!   for every disk with `tls='yes'`. QEMU runs as its own user, so the key is readable by
//!   root and one group (`libvirt-qemu` on Debian). One client identity per libvirt: the
//!   agent that runs the guests installs it. The directory is remembered in
//!   `<state_dir>/tls/nbd-client-dir`, so purging the agent removes what it installed.
//!
//! QEMU reads the files when it makes the object (an export's start, a guest's start or a
//! hot-plug), so a renewed certificate is written in place and taken by the next of those;
//! each file is written whole under a temporary name and renamed in.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why credentials could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("group {0:?} (nbd_client_key_group) does not exist")]
    NoGroup(String),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> CredentialsError + '_ {
    move |source| CredentialsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The PEM texts credentials are made of.
#[derive(Clone, Copy)]
pub struct Pems<'a> {
    pub ca: &'a str,
    pub certificate: &'a str,
    pub key: &'a str,
}

/// The server side: a directory only root reads.
#[derive(Debug, Clone)]
pub struct ServerCredentials {
    dir: PathBuf,
}

impl ServerCredentials {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The directory QEMU is given (`dir=` of its `tls-creds-x509` object).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a certificate has been installed (exports cannot start before).
    pub fn installed(&self) -> bool {
        self.dir.join("server-cert.pem").is_file() && self.dir.join("server-key.pem").is_file()
    }

    pub fn install(&self, pems: Pems<'_>) -> Result<(), CredentialsError> {
        make_dir(&self.dir, 0o700)?;
        write_file(&self.dir.join("ca-cert.pem"), pems.ca, 0o644, None)?;
        write_file(&self.dir.join("server-key.pem"), pems.key, 0o600, None)?;
        write_file(
            &self.dir.join("server-cert.pem"),
            pems.certificate,
            0o644,
            None,
        )
    }
}

/// The groups QEMU runs as under libvirt as distributions ship it: Debian and Ubuntu, then
/// Fedora and RHEL.
pub const QEMU_GROUPS: [&str; 2] = ["libvirt-qemu", "qemu"];

/// The client side: libvirt's NBD certificate directory.
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    dir: PathBuf,
    key_gid: Option<u32>,
    /// Where the directory is remembered for the package's purge.
    marker: PathBuf,
}

impl ClientCredentials {
    /// `key_group`: the group that may read the key besides root (QEMU's), by name, which
    /// must exist; `None`: the first of [`QEMU_GROUPS`] this system has, else root only
    /// (QEMU running as root).
    pub fn new(
        dir: PathBuf,
        key_group: Option<&str>,
        marker: PathBuf,
    ) -> Result<Self, CredentialsError> {
        let gid_of = |name: &str| {
            nix::unistd::Group::from_name(name)
                .ok()
                .flatten()
                .map(|g| g.gid.as_raw())
        };
        let key_gid = match key_group {
            Some(name) => {
                Some(gid_of(name).ok_or_else(|| CredentialsError::NoGroup(name.to_owned()))?)
            }
            None => QEMU_GROUPS.iter().find_map(|name| gid_of(name)),
        };
        Ok(Self {
            dir,
            key_gid,
            marker,
        })
    }

    pub fn install(&self, pems: Pems<'_>) -> Result<(), CredentialsError> {
        if let Some(parent) = self.marker.parent() {
            make_dir(parent, 0o700)?;
        }
        let dir = self.dir.to_string_lossy();
        write_file(&self.marker, &format!("{dir}\n"), 0o600, None)?;
        make_dir(&self.dir, 0o755)?;
        write_file(&self.dir.join("ca-cert.pem"), pems.ca, 0o644, None)?;
        let key_mode = if self.key_gid.is_some() { 0o640 } else { 0o600 };
        write_file(
            &self.dir.join("client-key.pem"),
            pems.key,
            key_mode,
            self.key_gid,
        )?;
        write_file(
            &self.dir.join("client-cert.pem"),
            pems.certificate,
            0o644,
            None,
        )
    }
}

/// What the agent installs for QEMU, from the site CA and each certificate the host gets.
pub struct QemuCredentials {
    pub ca_pem: String,
    pub server: Option<ServerCredentials>,
    pub client: Option<ClientCredentials>,
}

impl QemuCredentials {
    /// Installs `identity` (at start, and after each renewal).
    pub fn install(&self, identity: &crate::identity::Identity) -> Result<(), CredentialsError> {
        let pems = Pems {
            ca: &self.ca_pem,
            certificate: &identity.certificate_pem,
            key: &identity.key_pem,
        };
        if let Some(server) = &self.server {
            server.install(pems)?;
        }
        if let Some(client) = &self.client {
            client.install(pems)?;
        }
        Ok(())
    }
}

fn make_dir(dir: &Path, mode: u32) -> Result<(), CredentialsError> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(io_error(dir))
}

/// Writes `contents` durably and whole ([`crate::durable::replace`]); unchanged contents with
/// the same mode and group are left alone.
fn write_file(
    path: &Path,
    contents: &str,
    mode: u32,
    gid: Option<u32>,
) -> Result<(), CredentialsError> {
    if let Ok(meta) = fs::metadata(path) {
        let same_owner = gid.is_none_or(|g| std::os::unix::fs::MetadataExt::gid(&meta) == g);
        if same_owner
            && meta.permissions().mode() & 0o777 == mode
            && fs::read(path).is_ok_and(|old| old == contents.as_bytes())
        {
            return Ok(());
        }
    }
    crate::durable::replace(path, contents.as_bytes(), mode, gid).map_err(|e| {
        CredentialsError::Io {
            path: e.path,
            source: e.source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    const PEMS: Pems<'static> = Pems {
        ca: "CA\n",
        certificate: "CERT\n",
        key: "KEY\n",
    };

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn server_credentials_are_root_only() {
        let tmp = tempfile::tempdir().unwrap();
        let server = ServerCredentials::new(tmp.path().join("tls/nbd-server"));
        assert!(!server.installed());
        server.install(PEMS).unwrap();
        assert!(server.installed());
        let dir = server.dir();
        assert_eq!(mode(dir), 0o700);
        assert_eq!(fs::read_to_string(dir.join("ca-cert.pem")).unwrap(), "CA\n");
        assert_eq!(
            fs::read_to_string(dir.join("server-cert.pem")).unwrap(),
            "CERT\n"
        );
        assert_eq!(
            fs::read_to_string(dir.join("server-key.pem")).unwrap(),
            "KEY\n"
        );
        assert_eq!(mode(&dir.join("server-key.pem")), 0o600);
        // A renewal replaces them and leaves no temporary file.
        server
            .install(Pems {
                certificate: "CERT2\n",
                ..PEMS
            })
            .unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("server-cert.pem")).unwrap(),
            "CERT2\n"
        );
        assert_eq!(fs::read_dir(dir).unwrap().count(), 3);
    }

    #[test]
    fn the_client_key_is_readable_by_the_named_group_and_the_directory_remembered() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki/qemu");
        let marker = tmp.path().join("state/tls/nbd-client-dir");
        // A group every system has, other than root's own.
        let client = ClientCredentials::new(dir.clone(), Some("nogroup"), marker.clone()).unwrap();
        client.install(PEMS).unwrap();
        let key = dir.join("client-key.pem");
        assert_eq!(mode(&key), 0o640);
        let nogroup = nix::unistd::Group::from_name("nogroup").unwrap().unwrap();
        assert_eq!(fs::metadata(&key).unwrap().gid(), nogroup.gid.as_raw());
        assert_eq!(mode(&dir.join("client-cert.pem")), 0o644);
        assert_eq!(
            fs::read_to_string(&marker).unwrap(),
            format!("{}\n", dir.display())
        );
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 3);

        // Unnamed: QEMU's group as the distribution names it.
        let detected = ClientCredentials::new(dir.clone(), None, marker).unwrap();
        let expected = QEMU_GROUPS
            .iter()
            .find_map(|g| nix::unistd::Group::from_name(g).unwrap());
        assert_eq!(detected.key_gid, expected.map(|g| g.gid.as_raw()));

        assert!(matches!(
            ClientCredentials::new(dir, Some("no-such-group-here"), tmp.path().join("m")),
            Err(CredentialsError::NoGroup(g)) if g == "no-such-group-here"
        ));
    }
}
