//! Whom the site trusts to sign entries: CAs (a PEM bundle, e.g. the IGTF CAs a grid site
//! already installs) whose certificates vouch for endorsers, and endorser certificates registered
//! directly (self-signed or from a CA the site does not trust), pinned by the SHA-256 of their DER.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use stratus_common::certificate::read_certificate;
use thiserror::Error;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum TrustError {
    #[error("{source_name}: not PEM certificates: {reason}")]
    Pem { source_name: String, reason: String },
    #[error("{source_name}: certificate {index}: {reason}")]
    Certificate {
        source_name: String,
        index: usize,
        reason: String,
    },
    #[error("{source_name}: certificate {index} ({subject}) is not a CA certificate")]
    NotCa {
        source_name: String,
        index: usize,
        subject: String,
    },
}

/// The site's trust for Marketplace signatures. Cheap to clone; built from configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustStore {
    /// DER certificates of the CAs whose (direct or intermediate-mediated) endorser certificates
    /// are accepted.
    pub trusted_cas: Vec<Vec<u8>>,
    /// DER certificates of endorsers accepted as they are, whoever issued them.
    pub endorsers: Vec<Vec<u8>>,
}

impl TrustStore {
    /// A store from a CA bundle and registered endorser certificates, both PEM text (either may
    /// be empty).
    pub fn from_pem(ca_bundle: &str, endorsers: &str) -> Result<Self, TrustError> {
        let mut store = Self::default();
        store.add_trusted_cas_pem("trusted CA bundle", ca_bundle)?;
        store.add_endorsers_pem("registered endorsers", endorsers)?;
        Ok(store)
    }

    /// Adds the CA certificates of a PEM bundle; returns how many. Each must parse and say it is a
    /// CA (basicConstraints), so a user certificate cannot be mistaken for an anchor. `source`
    /// names where the text came from (a file name), for messages.
    pub fn add_trusted_cas_pem(&mut self, source: &str, pem: &str) -> Result<usize, TrustError> {
        let certificates = parse_pem(source, pem)?;
        for (index, der) in certificates.iter().enumerate() {
            let info = read(source, index, der)?;
            if !info.is_ca {
                return Err(TrustError::NotCa {
                    source_name: source.to_string(),
                    index,
                    subject: info.subject,
                });
            }
            webpki::anchor_from_trusted_cert(&CertificateDer::from(der.as_slice())).map_err(
                |e| TrustError::Certificate {
                    source_name: source.to_string(),
                    index,
                    reason: format!("not usable as a trust anchor: {e:?}"),
                },
            )?;
        }
        let count = certificates.len();
        self.trusted_cas.extend(certificates);
        Ok(count)
    }

    /// Adds endorser certificates from PEM text; returns how many.
    pub fn add_endorsers_pem(&mut self, source: &str, pem: &str) -> Result<usize, TrustError> {
        let certificates = parse_pem(source, pem)?;
        for (index, der) in certificates.iter().enumerate() {
            read(source, index, der)?;
        }
        let count = certificates.len();
        self.endorsers.extend(certificates);
        Ok(count)
    }

    /// Whether `der` is one of the registered endorser certificates (same SHA-256 of the DER).
    pub fn is_registered_endorser(&self, der: &[u8]) -> bool {
        let fingerprint = sha256_hex(der);
        self.endorsers.iter().any(|e| sha256_hex(e) == fingerprint)
    }

    /// The SHA-256 fingerprints (lowercase hex) of the registered endorser certificates.
    pub fn endorser_fingerprints(&self) -> Vec<String> {
        self.endorsers.iter().map(|der| sha256_hex(der)).collect()
    }
}

/// Lowercase hex SHA-256 of `bytes`: the fingerprint of a certificate's DER.
pub fn sha256_hex(bytes: &[u8]) -> String {
    stratus_common::hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

fn parse_pem(source: &str, pem: &str) -> Result<Vec<Vec<u8>>, TrustError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|item| item.map(|der| der.as_ref().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TrustError::Pem {
            source_name: source.to_string(),
            reason: e.to_string(),
        })
}

fn read(
    source: &str,
    index: usize,
    der: &[u8],
) -> Result<stratus_common::certificate::CertificateInfo, TrustError> {
    read_certificate(der).map_err(|e| TrustError::Certificate {
        source_name: source.to_string(),
        index,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marketplace::testing::{Pki, TestKey};

    #[test]
    fn builds_from_pem_and_pins_endorsers_by_fingerprint() {
        let pki = Pki::new();
        let registered = pki.self_signed_endorser(TestKey::P256, "solo@example.org");
        let other = pki.self_signed_endorser(TestKey::P256, "other@example.org");
        let store = TrustStore::from_pem(&pki.ca.cert.pem(), &registered.cert.pem()).unwrap();
        assert_eq!(store.trusted_cas, [pki.ca.cert.der().to_vec()]);
        assert!(store.is_registered_endorser(registered.cert.der()));
        assert!(!store.is_registered_endorser(other.cert.der()));
        assert_eq!(
            store.endorser_fingerprints(),
            [sha256_hex(registered.cert.der())]
        );
        assert_eq!(TrustStore::from_pem("", "").unwrap(), TrustStore::default());
    }

    #[test]
    fn refuses_non_ca_anchors_and_garbage() {
        let pki = Pki::new();
        let user = pki.endorser(TestKey::P256, "jane@example.org");
        let err = TrustStore::from_pem(&user.cert.pem(), "").unwrap_err();
        assert!(matches!(err, TrustError::NotCa { index: 0, .. }), "{err}");
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = TrustStore::from_pem("", garbage).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("registered endorsers: certificate 0: "),
            "{err}"
        );
    }
}
