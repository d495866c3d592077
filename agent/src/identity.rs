//! The host's identity: its private key and the certificate the site CA gave it, kept under
//! `<state_dir>/tls/` (the key readable by root only). The agent enrols with a join token when
//! the join token file holds one it has not used yet (a new host, or a host an administrator
//! revoked and enrols again), renews its certificate when two thirds of its life have passed,
//! and replaces key and certificate together, each written whole before it is renamed in.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use std::time::Duration;

use sha2::{Digest, Sha256};
use stratus_common::agent::EnrolHost;
use x509_parser::prelude::FromDer;

use crate::controller_client::{ClientError, ControllerClient};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not a usable certificate: {why}")]
    BadCertificate { path: PathBuf, why: String },
    #[error("cannot make a key and certificate request: {0}")]
    Request(#[from] rcgen::Error),
    #[error(
        "no host certificate: put a join token for host {host} in {file} (an administrator \
         makes one: POST /api/v1/hosts/{host}/join-tokens)"
    )]
    NoToken { host: String, file: PathBuf },
    #[error("the host certificate expired: put a new join token for host {host} in {file}")]
    Expired { host: String, file: PathBuf },
    #[error(transparent)]
    Controller(#[from] ClientError),
    #[error("the controller's certificate does not parse: {0}")]
    BadAnswer(String),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A private key and its certificate, PEM, with the certificate's validity.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    pub key_pem: String,
    pub certificate_pem: String,
    /// Start and end of validity, seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// `certificate_pem` (one certificate) with the key it certifies.
    pub fn new(key_pem: String, certificate_pem: String) -> Result<Self, String> {
        let block = x509_parser::pem::Pem::iter_from_buffer(certificate_pem.as_bytes())
            .next()
            .ok_or("no certificate")?
            .map_err(|e| e.to_string())?;
        let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(&block.contents)
            .map_err(|e| e.to_string())?;
        let validity = parsed.validity();
        Ok(Self {
            key_pem,
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            certificate_pem,
        })
    }

    /// Whether it is past two thirds of its life at `now` (seconds since the epoch).
    pub fn renewal_due(&self, now: i64) -> bool {
        let life = (self.not_after - self.not_before).max(0);
        now >= self.not_before + life * 2 / 3
    }

    pub fn expired(&self, now: i64) -> bool {
        now >= self.not_after
    }
}

/// Makes sure the host holds a certificate the controllers accept, and tells `client` to
/// present it: enrols with the token in `join_token_file` if it holds one not used before,
/// else keeps the certificate on disk. A controller that cannot be reached yet is waited for;
/// a refused token is an error.
pub async fn establish(
    client: &ControllerClient,
    store: &IdentityStore,
    host: &str,
    join_token_file: &Path,
) -> Result<Identity, IdentityError> {
    let token = fs::read_to_string(join_token_file)
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    let fresh = token.filter(|t| !store.used(&token_digest(t)));
    let now = unix_now();
    let identity = match (fresh, store.load()?) {
        (Some(token), _) => {
            let identity = request(client, host, Some(token.clone())).await?;
            store.save(&identity)?;
            store.mark_used(&token_digest(&token))?;
            tracing::info!(
                host,
                not_after = identity.not_after,
                "enrolled with a join token"
            );
            identity
        }
        (None, Some(identity)) if !identity.expired(now) => identity,
        (None, Some(_)) => {
            return Err(IdentityError::Expired {
                host: host.to_owned(),
                file: join_token_file.to_owned(),
            })
        }
        (None, None) => {
            return Err(IdentityError::NoToken {
                host: host.to_owned(),
                file: join_token_file.to_owned(),
            })
        }
    };
    client.set_identity(&identity)?;
    Ok(identity)
}

/// Renews the host's certificate whenever two thirds of its life have passed, forever: a new
/// key, a request over the certificate in force, then both saved and presented, and handed
/// to `renewed` (which installs it where QEMU reads it).
pub async fn renew_forever(
    client: ControllerClient,
    store: IdentityStore,
    host: String,
    mut identity: Identity,
    renewed_hook: impl Fn(&Identity) + Send + 'static,
) {
    loop {
        let due = identity.not_before + (identity.not_after - identity.not_before) * 2 / 3;
        let wait = (due - unix_now()).clamp(0, 3600) as u64;
        tokio::time::sleep(Duration::from_secs(wait)).await;
        if !identity.renewal_due(unix_now()) {
            continue;
        }
        let renewed = match request(&client, &host, None).await {
            Ok(renewed) => renewed,
            Err(e) => {
                tracing::warn!(host, error = %crate::failure::error_chain(&e), "certificate renewal failed; retrying in a minute");
                tokio::time::sleep(Duration::from_secs(60)).await;
                continue;
            }
        };
        let saved = store
            .save(&renewed)
            .map_err(|e| crate::failure::error_chain(&e))
            .and_then(|()| {
                client
                    .set_identity(&renewed)
                    .map_err(|e| crate::failure::error_chain(&e))
            });
        match saved {
            Ok(()) => {
                tracing::info!(
                    host,
                    not_after = renewed.not_after,
                    "host certificate renewed"
                );
                renewed_hook(&renewed);
                identity = renewed;
            }
            Err(e) => tracing::warn!(host, error = %e, "a renewed certificate could not be kept"),
        }
    }
}

/// A new key and a certificate for it, asked of the controller with `token` (enrolment) or
/// over the certificate in force (renewal); waits for a controller that cannot be reached.
async fn request(
    client: &ControllerClient,
    host: &str,
    token: Option<String>,
) -> Result<Identity, IdentityError> {
    let (key_pem, csr) = new_request(host)?;
    let enrol = EnrolHost {
        csr,
        join_token: token,
    };
    let mut delay = Duration::from_millis(200);
    let answer = loop {
        match client.enrol(host, &enrol).await {
            Ok(answer) => break answer,
            Err(e) if e.is_transient() => {
                tracing::warn!(host, error = %crate::failure::error_chain(&e), "certificate request not answered; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    };
    Identity::new(key_pem, answer.certificate).map_err(IdentityError::BadAnswer)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A new key for `host` and a certificate request for it (PEM each).
pub fn new_request(host: &str) -> Result<(String, String), IdentityError> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![host.to_owned()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, host);
    let request = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), request.pem()?))
}

/// The lowercase hex SHA-256 of a join token.
pub fn token_digest(token: &str) -> String {
    stratus_common::hex::encode(Sha256::digest(token.as_bytes()))
}

/// Where the identity is kept.
pub struct IdentityStore {
    dir: PathBuf,
}

impl IdentityStore {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn key(&self) -> PathBuf {
        self.dir.join("host.key")
    }

    fn certificate(&self) -> PathBuf {
        self.dir.join("host.pem")
    }

    fn used_token(&self) -> PathBuf {
        self.dir.join("join-token.sha256")
    }

    /// The identity on disk, if there is one.
    pub fn load(&self) -> Result<Option<Identity>, IdentityError> {
        let (key, certificate) = (self.key(), self.certificate());
        let key_pem = match fs::read_to_string(&key) {
            Ok(pem) => pem,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&key)(e)),
        };
        let certificate_pem = fs::read_to_string(&certificate).map_err(io_error(&certificate))?;
        Identity::new(key_pem, certificate_pem)
            .map(Some)
            .map_err(|why| IdentityError::BadCertificate {
                path: certificate,
                why,
            })
    }

    /// Writes key and certificate: each whole under a temporary name, fsynced, then renamed
    /// in, the certificate last (a crash between leaves the old certificate with a new key,
    /// which the next start reports rather than uses).
    pub fn save(&self, identity: &Identity) -> Result<(), IdentityError> {
        fs::create_dir_all(&self.dir).map_err(io_error(&self.dir))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .map_err(io_error(&self.dir))?;
        write_replacing(&self.key(), identity.key_pem.as_bytes(), 0o600)?;
        write_replacing(
            &self.certificate(),
            identity.certificate_pem.as_bytes(),
            0o644,
        )
    }

    /// Whether the join token with this digest was the last one enrolled with.
    pub fn used(&self, digest: &str) -> bool {
        fs::read_to_string(self.used_token()).is_ok_and(|d| d.trim() == digest)
    }

    pub fn mark_used(&self, digest: &str) -> Result<(), IdentityError> {
        write_replacing(&self.used_token(), digest.as_bytes(), 0o600)
    }
}

fn write_replacing(path: &Path, contents: &[u8], mode: u32) -> Result<(), IdentityError> {
    crate::durable::replace(path, contents, mode, None).map_err(|e| IdentityError::Io {
        path: e.path,
        source: e.source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(key_pem: &str, not_before: i64, not_after: i64) -> String {
        let key = rcgen::KeyPair::from_pem(key_pem).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["node-1".into()]).unwrap();
        params.not_before = time::OffsetDateTime::from_unix_timestamp(not_before).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn an_identity_is_kept_whole_with_its_key_private_and_knows_when_to_renew() {
        let dir = tempfile::tempdir().unwrap();
        let store = IdentityStore::new(dir.path().join("tls"));
        assert!(store.load().unwrap().is_none());
        let (key_pem, request) = new_request("node-1").unwrap();
        assert!(request.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        let identity = Identity::new(key_pem.clone(), certificate(&key_pem, 1_000, 4_000)).unwrap();
        store.save(&identity).unwrap();
        assert_eq!(store.load().unwrap(), Some(identity.clone()));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("tls/host.key")), 0o600);
        assert_eq!(mode(&dir.path().join("tls")), 0o700);
        assert!(!identity.renewal_due(2_999));
        assert!(identity.renewal_due(3_000));
        assert!(!identity.expired(3_999));
        assert!(identity.expired(4_000));
        let digest = token_digest("stratus-join_x");
        assert!(!store.used(&digest));
        store.mark_used(&digest).unwrap();
        assert!(store.used(&digest));
        assert!(!store.used(&token_digest("stratus-join_y")));
    }
}
