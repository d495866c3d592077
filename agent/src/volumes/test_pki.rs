//! A site CA for tests of NBD over TLS: host certificates with the subjects a controller
//! issues (`CN=<host>, O=StratusLab, OU=stratuslab-host`, the host name as DNS name), the
//! server and client credential directories QEMU reads, and a guard that installs a client
//! identity in libvirt's NBD certificate directory for one test at a time and puts back what
//! was there before.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use stratus_common::subjects::{ORGANIZATION, OU_HOST};

use super::credentials::{ClientCredentials, Pems, ServerCredentials};

pub struct TestPki {
    certificate: Certificate,
    key: KeyPair,
    pub ca_pem: String,
}

/// A host's certificate and key, PEM.
pub struct HostPems {
    pub certificate: String,
    pub key: String,
}

impl TestPki {
    pub fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::OrganizationName, ORGANIZATION);
        params
            .distinguished_name
            .push(DnType::CommonName, "StratusLab test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let certificate = params.self_signed(&key).unwrap();
        let ca_pem = certificate.pem();
        Self {
            certificate,
            key,
            ca_pem,
        }
    }

    /// A certificate for `host` as a controller issues it.
    pub fn host(&self, host: &str) -> HostPems {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![host.to_owned()]).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, host);
        params
            .distinguished_name
            .push(DnType::OrganizationName, ORGANIZATION);
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, OU_HOST);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let certificate = params
            .signed_by(&key, &self.certificate, &self.key)
            .unwrap();
        HostPems {
            certificate: certificate.pem(),
            key: key.serialize_pem(),
        }
    }

    fn pems<'a>(&'a self, host: &'a HostPems) -> Pems<'a> {
        Pems {
            ca: &self.ca_pem,
            certificate: &host.certificate,
            key: &host.key,
        }
    }

    /// `host`'s server credentials, installed in `dir`.
    pub fn server(&self, dir: &Path, host: &str) -> ServerCredentials {
        let server = ServerCredentials::new(dir.to_owned());
        server.install(self.pems(&self.host(host))).unwrap();
        server
    }

    /// `host`'s client credentials, installed in `dir` (root only), for `qemu-img` and
    /// `qemu-io` (`--object tls-creds-x509,dir=...,endpoint=client`).
    pub fn client_dir(&self, dir: &Path, host: &str) -> PathBuf {
        let client =
            ClientCredentials::new(dir.to_owned(), None, dir.join("..").join("marker")).unwrap();
        client.install(self.pems(&self.host(host))).unwrap();
        dir.to_owned()
    }
}

/// libvirt's NBD certificate directory as this machine's libvirt uses it (`qemu.conf` left
/// as Debian ships it).
pub const LIBVIRT_NBD_DIR: &str = "/etc/pki/qemu";
const CLIENT_FILES: [&str; 3] = ["ca-cert.pem", "client-cert.pem", "client-key.pem"];

static LIBVIRT_CLIENT: Mutex<()> = Mutex::new(());

/// `host`'s client identity in [`LIBVIRT_NBD_DIR`] while it lives (one test at a time); on
/// drop, the files that were there before are put back and the directories the guard made
/// are removed.
pub struct LibvirtClient {
    saved: Vec<(PathBuf, Option<Vec<u8>>)>,
    /// The directories the guard made, innermost first.
    made_dirs: Vec<PathBuf>,
    _serial: MutexGuard<'static, ()>,
}

impl LibvirtClient {
    pub fn install(pki: &TestPki, host: &str, scratch: &Path) -> Self {
        let serial = LIBVIRT_CLIENT.lock().unwrap_or_else(|e| e.into_inner());
        let dir = Path::new(LIBVIRT_NBD_DIR);
        let made_dirs = dir
            .ancestors()
            .take_while(|d| !d.exists())
            .map(Path::to_path_buf)
            .collect();
        let saved = CLIENT_FILES
            .iter()
            .map(|f| (dir.join(f), std::fs::read(dir.join(f)).ok()))
            .collect();
        let guard = Self {
            saved,
            made_dirs,
            _serial: serial,
        };
        let client =
            ClientCredentials::new(dir.to_owned(), None, scratch.join("tls/nbd-client-dir"))
                .unwrap();
        client.install(pki.pems(&pki.host(host))).unwrap();
        guard
    }
}

impl Drop for LibvirtClient {
    fn drop(&mut self) {
        for (path, before) in &self.saved {
            match before {
                Some(bytes) => {
                    let _ = std::fs::write(path, bytes);
                }
                None => {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        for dir in &self.made_dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}
