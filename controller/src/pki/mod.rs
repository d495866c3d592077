//! The site's PKI: the CA every controller of a cluster shares (made with its key at a new
//! cluster's first start, or the site's own), the certificates it issues (each controller
//! node's, each host's), and what a certificate presented on a TLS link says about its holder.
//!
//! A certificate's role is its organizational unit, which only this CA sets: a controller node
//! (`stratuslab-controller`, common name `controller-<id>`) or a host (`stratuslab-host`,
//! common name the host's name). Anything else chaining to a trusted root is a user
//! certificate, named by its subject.

pub mod tls;

use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateSigningRequestParams,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
    SerialNumber,
};
use x509_parser::prelude::FromDer;

use stratus_common::subjects::ORGANIZATION;
pub use stratus_common::subjects::{OU_CONTROLLER, OU_HOST};

/// How long a controller node's certificate lasts (it is made again at every start).
const NODE_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long the CA a new cluster makes lasts.
const CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// Certificates start being valid a little before they are made, for clocks slightly behind.
const BACKDATE: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not a usable CA certificate: {why}")]
    BadCertificate { path: PathBuf, why: String },
    #[error("{path}: not a usable private key: {why}")]
    BadKey { path: PathBuf, why: String },
    #[error("the CA key {key} is not the key of the CA certificate {certificate}")]
    KeyMismatch { certificate: PathBuf, key: PathBuf },
    #[error(
        "the site CA {certificate} is missing: a node that joins a cluster needs the CA of the \
         cluster's first node (copy its CA certificate and key, same paths, key readable by the \
         controller only)"
    )]
    Missing { certificate: PathBuf },
    #[error("only one of the CA certificate {certificate} and its key {key} exists")]
    HalfMissing { certificate: PathBuf, key: PathBuf },
    #[error("cannot issue a certificate")]
    Issue(#[from] rcgen::Error),
    #[error("certificate request: {0}")]
    Request(String),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A certificate and its private key, PEM.
#[derive(Clone)]
pub struct Issued {
    pub certificate_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").finish_non_exhaustive()
    }
}

/// A host certificate this CA signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCertificate {
    pub certificate_pem: String,
    /// Its serial number, lowercase hex.
    pub serial: String,
    /// End of validity, milliseconds since the Unix epoch.
    pub not_after_ms: u64,
}

/// The site CA: its certificate and the key that signs with it.
pub struct SiteCa {
    certificate: Certificate,
    key: KeyPair,
    pem: String,
}

impl std::fmt::Debug for SiteCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteCa").finish_non_exhaustive()
    }
}

fn datetime(at: SystemTime) -> time::OffsetDateTime {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn random_serial() -> SerialNumber {
    // 16 bytes, unguessable, whose first byte is 0x40 to 0x7f: positive (top bit clear) and
    // never zero, so the DER integer keeps all 16 bytes and a certificate's serial reads back
    // exactly as it was recorded (a leading zero byte is dropped by the encoding, and a host
    // certificate with one was never found in force: seen once in about 250 enrolments).
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x3f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

/// Writes `contents` to a new file `path` with `mode`, fsynced; never over an existing file.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_error(path))?;
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_error(path))?;
    file.write_all(contents).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}

impl SiteCa {
    /// Loads the CA from its two files, or, when neither exists and `create` is set (the first
    /// start of a new cluster), makes one: the key (mode 0600) first, then the certificate.
    /// Answers whether it was made now.
    pub fn load_or_create(
        certificate: &Path,
        key: &Path,
        create: bool,
    ) -> Result<(Self, bool), PkiError> {
        match (certificate.exists(), key.exists()) {
            (true, true) => Ok((Self::load(certificate, key)?, false)),
            (false, false) if create => {
                let ca = Self::generate()?;
                write_new(key, ca.key.serialize_pem().as_bytes(), 0o600)?;
                write_new(certificate, ca.pem.as_bytes(), 0o644)?;
                tracing::info!(certificate = %certificate.display(), "site CA created");
                Ok((ca, true))
            }
            (false, false) => Err(PkiError::Missing {
                certificate: certificate.to_owned(),
            }),
            _ => Err(PkiError::HalfMissing {
                certificate: certificate.to_owned(),
                key: key.to_owned(),
            }),
        }
    }

    fn generate() -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::OrganizationName, ORGANIZATION);
        // A name of its own: a client holding another site's CA is then told the issuer is
        // unknown, not that a signature is bad.
        let tag: [u8; 4] = rand::random();
        params.distinguished_name.push(
            DnType::CommonName,
            format!("StratusLab site CA {}", stratus_common::hex::encode(tag)),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = datetime(now - BACKDATE);
        params.not_after = datetime(now + CA_VALIDITY);
        params.serial_number = Some(random_serial());
        let certificate = params.self_signed(&key)?;
        let pem = certificate.pem();
        Ok(Self {
            certificate,
            key,
            pem,
        })
    }

    fn load(certificate_path: &Path, key_path: &Path) -> Result<Self, PkiError> {
        let pem = fs::read_to_string(certificate_path).map_err(io_error(certificate_path))?;
        let key_pem = fs::read_to_string(key_path).map_err(io_error(key_path))?;
        let bad_certificate = |why: String| PkiError::BadCertificate {
            path: certificate_path.to_owned(),
            why,
        };
        let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::BadKey {
            path: key_path.to_owned(),
            why: e.to_string(),
        })?;
        let der = pem_certificates(&pem)
            .map_err(bad_certificate)?
            .into_iter()
            .next()
            .ok_or_else(|| bad_certificate("no certificate in the file".into()))?;
        let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(&der)
            .map_err(|e| bad_certificate(e.to_string()))?;
        if !parsed.is_ca() {
            return Err(bad_certificate("it is not a CA (basicConstraints)".into()));
        }
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(PkiError::KeyMismatch {
                certificate: certificate_path.to_owned(),
                key: key_path.to_owned(),
            });
        }
        // Issuing needs the CA's name and key, which a certificate made again from its
        // parameters carries (its own signature is not what anyone checks).
        let params = CertificateParams::from_ca_cert_pem(&pem)
            .map_err(|e| bad_certificate(e.to_string()))?;
        let certificate = params.self_signed(&key)?;
        Ok(Self {
            certificate,
            key,
            pem,
        })
    }

    /// The CA certificate, PEM, as the files have it.
    pub fn certificate_pem(&self) -> &str {
        &self.pem
    }

    /// The CA certificate, DER.
    pub fn certificate_der(&self) -> Vec<u8> {
        pem_certificates(&self.pem)
            .ok()
            .and_then(|c| c.into_iter().next())
            .unwrap_or_default()
    }

    /// A certificate and key for controller node `node_id`, for both ends of its TLS links
    /// (the API and the peer listener as server, the peer links and forwarding as client),
    /// naming `names` (IP addresses and DNS names) as its subject alternative names.
    pub fn issue_node(&self, node_id: u64, names: &[String]) -> Result<Issued, PkiError> {
        let key = KeyPair::generate()?;
        let params = leaf(
            OU_CONTROLLER,
            &format!("controller-{node_id}"),
            names,
            SystemTime::now(),
            NODE_VALIDITY,
        )?;
        let certificate = params.signed_by(&key, &self.certificate, &self.key)?;
        Ok(Issued {
            certificate_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs the key of a host's certificate request (PEM) for `host`, valid `validity` from
    /// `now`. What the request asks for besides its key (names, usages) is ignored: the CA
    /// decides the certificate's contents.
    pub fn sign_host(
        &self,
        host: &str,
        request_pem: &str,
        names: &[String],
        now: SystemTime,
        validity: Duration,
    ) -> Result<HostCertificate, PkiError> {
        let request = CertificateSigningRequestParams::from_pem(request_pem)
            .map_err(|e| PkiError::Request(e.to_string()))?;
        let mut all = vec![host.to_owned()];
        all.extend(names.iter().cloned());
        let mut params = leaf(OU_HOST, host, &all, now, validity)?;
        let serial = random_serial();
        let serial_hex = stratus_common::hex::encode(serial.as_ref());
        params.serial_number = Some(serial);
        let certificate = params.signed_by(&request.public_key, &self.certificate, &self.key)?;
        let not_after = now + validity;
        Ok(HostCertificate {
            certificate_pem: certificate.pem(),
            serial: serial_hex,
            not_after_ms: not_after
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        })
    }
}

/// The parameters of a certificate this CA issues to a controller node or a host: its role
/// (organizational unit) and name, its alternative names, for both ends of TLS (a node serves
/// the API and calls its peers; a host calls the controller and serves its NBD exports),
/// valid from a little before `now` for `validity`.
fn leaf(
    role: &str,
    name: &str,
    names: &[String],
    now: SystemTime,
    validity: Duration,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    // The subject's attributes in the order certificates have always had them (common name
    // first): QEMU's NBD authorization lists match the subject as a string in this order
    // (`stratus_common::subjects::host_dn`).
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, ORGANIZATION);
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, role);
    params.subject_alt_names = subject_alt_names(names)?;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = datetime(now - BACKDATE);
    params.not_after = datetime(now + validity);
    params.serial_number = Some(random_serial());
    Ok(params)
}

fn subject_alt_names(names: &[String]) -> Result<Vec<SanType>, PkiError> {
    let mut sans = Vec::new();
    for name in names {
        let san = match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                name.clone()
                    .try_into()
                    .map_err(|e: rcgen::Error| PkiError::Request(format!("{name}: {e}")))?,
            ),
        };
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    Ok(sans)
}

/// The DER certificates of a PEM text, in order.
pub fn pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| e.to_string())?;
        if block.label == "CERTIFICATE" {
            out.push(block.contents);
        }
    }
    Ok(out)
}

/// Who holds a certificate that chained to a root this controller trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// A controller node of this cluster, by its node ID.
    Controller(u64),
    /// A hypervisor host, by name, and the certificate's serial (lowercase hex).
    Host { name: String, serial: String },
    /// Anyone else: a user, by the certificate's subject (RFC 4514).
    User { subject: String },
}

/// What a (verified) certificate says about its holder; `None` if it does not parse.
pub fn holder_of(der: &[u8]) -> Option<Holder> {
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let subject = parsed.subject();
    let first = |attrs: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue>| {
        attrs
            .next()
            .and_then(|a| a.as_str().ok())
            .map(str::to_owned)
    };
    let ou = first(&mut subject.iter_organizational_unit());
    let cn = first(&mut subject.iter_common_name());
    match (ou.as_deref(), cn) {
        (Some(OU_CONTROLLER), Some(cn)) => cn
            .strip_prefix("controller-")
            .and_then(|id| id.parse().ok())
            .map(Holder::Controller),
        (Some(OU_HOST), Some(name)) => Some(Holder::Host {
            name,
            serial: stratus_common::hex::encode(parsed.raw_serial()),
        }),
        (Some(OU_CONTROLLER | OU_HOST), None) => None,
        _ => stratus_common::certificate::read_certificate(der)
            .ok()
            .map(|info| Holder::User {
                subject: info.subject,
            }),
    }
}

#[cfg(test)]
mod tests;
