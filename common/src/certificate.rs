//! What the Marketplace reads from an X.509 certificate: the subject as an RFC 4514 string, the
//! email addresses, the validity window and the public key. Parsing only: whether the certificate
//! is trusted and whether a signature verifies is the controller's business.
//!
//! It sits in `common` (behind the `x509` feature, so crates that do not sign or verify skip the
//! parser) because the signer (`stratus-sign-metadata`) and the verifier (the controller) must
//! render the same subject string from the same certificate byte for byte.

use thiserror::Error;
use x509_parser::asn1_rs::{Tag, ToDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

use crate::marketplace::{format_dn, DnAttribute, DnValue, JwsAlgorithm};

const OID_EMAIL_ADDRESS: &str = "1.2.840.113549.1.9.1";
const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum CertificateError {
    #[error("not a DER X.509 certificate: {0}")]
    Parse(String),
    #[error("certificate has trailing data after its DER encoding")]
    TrailingData,
    #[error("certificate subjectAltName extension is malformed: {0}")]
    SubjectAltName(String),
}

/// The kind of public key a certificate carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA, with the modulus size in bits.
    Rsa { bits: usize },
    /// ECDSA on NIST P-256.
    EcdsaP256,
    /// ECDSA on NIST P-384.
    EcdsaP384,
    /// Anything else (DSA, Ed25519, other curves), by algorithm OID (and curve OID if any).
    Other { algorithm: String },
}

impl KeyKind {
    /// The JWS algorithm entries signed with this key use, if it is one the Marketplace accepts.
    pub fn jws_algorithm(&self) -> Option<JwsAlgorithm> {
        match self {
            Self::Rsa { .. } => Some(JwsAlgorithm::RS256),
            Self::EcdsaP256 => Some(JwsAlgorithm::ES256),
            Self::EcdsaP384 => Some(JwsAlgorithm::ES384),
            Self::Other { .. } => None,
        }
    }
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rsa { bits } => write!(f, "RSA {bits}-bit"),
            Self::EcdsaP256 => f.write_str("ECDSA P-256"),
            Self::EcdsaP384 => f.write_str("ECDSA P-384"),
            Self::Other { algorithm } => write!(f, "unsupported key {algorithm}"),
        }
    }
}

/// The parts of a certificate the Marketplace uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The subject as an RFC 4514 string (most specific RDN first).
    pub subject: String,
    /// The issuer as an RFC 4514 string.
    pub issuer: String,
    /// Email addresses: the subjectAltName rfc822Name values, then the subject's emailAddress
    /// attributes, in certificate order, without repeats.
    pub emails: Vec<String>,
    /// Start of validity, seconds since the Unix epoch (negative before 1970).
    pub not_before: i64,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
    /// The key's kind.
    pub key: KeyKind,
    /// The subjectPublicKey bits: the DER RSAPublicKey for RSA, the uncompressed point for EC;
    /// the form `ring` verifies with.
    pub public_key: Vec<u8>,
    /// Whether basicConstraints says it is a CA.
    pub is_ca: bool,
}

impl CertificateInfo {
    /// Whether `email` is one of the certificate's addresses. Compared without regard to ASCII
    /// case: the domain part is case-insensitive and no CA issues addresses differing only in
    /// the case of the local part.
    pub fn has_email(&self, email: &str) -> bool {
        self.emails.iter().any(|e| e.eq_ignore_ascii_case(email))
    }

    /// Whether the certificate is valid at `epoch_ms` (bounds included).
    pub fn is_valid_at(&self, epoch_ms: u64) -> bool {
        let secs = i64::try_from(epoch_ms / 1000).unwrap_or(i64::MAX);
        self.not_before <= secs && secs <= self.not_after
    }
}

/// Reads a DER certificate.
pub fn read_certificate(der: &[u8]) -> Result<CertificateInfo, CertificateError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| CertificateError::Parse(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CertificateError::TrailingData);
    }
    let mut emails: Vec<String> = Vec::new();
    let mut add = |email: &str| {
        if !emails.iter().any(|e| e == email) {
            emails.push(email.to_string());
        }
    };
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CertificateError::SubjectAltName(e.to_string()))?;
    for name in san.iter().flat_map(|san| &san.value.general_names) {
        if let GeneralName::RFC822Name(email) = name {
            add(email);
        }
    }
    for attribute in cert.subject().iter_attributes() {
        if attribute.attr_type().to_id_string() == OID_EMAIL_ADDRESS {
            if let DnValue::Text(email) = attribute_value(attribute) {
                add(&email);
            }
        }
    }
    let spki = cert.public_key();
    let algorithm = spki.algorithm.algorithm.to_id_string();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|oid| oid.to_id_string());
    let public_key = spki.subject_public_key.data.to_vec();
    let key = match (algorithm.as_str(), curve.as_deref()) {
        (OID_RSA_ENCRYPTION, _) => KeyKind::Rsa {
            bits: rsa_modulus_bits(&spki.parsed()),
        },
        (OID_EC_PUBLIC_KEY, Some(OID_P256)) => KeyKind::EcdsaP256,
        (OID_EC_PUBLIC_KEY, Some(OID_P384)) => KeyKind::EcdsaP384,
        (_, Some(curve)) => KeyKind::Other {
            algorithm: format!("{algorithm} ({curve})"),
        },
        (_, None) => KeyKind::Other { algorithm },
    };
    Ok(CertificateInfo {
        subject: name_to_string(cert.subject()),
        issuer: name_to_string(cert.issuer()),
        emails,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        key,
        public_key,
        is_ca: cert.is_ca(),
    })
}

fn rsa_modulus_bits(
    parsed: &Result<x509_parser::public_key::PublicKey<'_>, x509_parser::error::X509Error>,
) -> usize {
    match parsed {
        Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => {
            let modulus = rsa.modulus;
            let skip = modulus.iter().take_while(|b| **b == 0).count();
            match modulus.get(skip) {
                Some(first) => (modulus.len() - skip) * 8 - first.leading_zeros() as usize,
                None => 0,
            }
        }
        _ => 0,
    }
}

fn name_to_string(name: &X509Name<'_>) -> String {
    let rdns: Vec<Vec<DnAttribute>> = name
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|attribute| DnAttribute {
                    oid: attribute.attr_type().to_id_string(),
                    value: attribute_value(attribute),
                })
                .collect()
        })
        .collect();
    format_dn(&rdns)
}

/// A value as text when it is a string type (UTF-8, Printable, IA5, Numeric, Teletex read as
/// Latin-1, BMP as UTF-16, Universal as UTF-32), else its DER.
fn attribute_value(attribute: &AttributeTypeAndValue<'_>) -> DnValue {
    let any = attribute.attr_value();
    let data = any.data;
    let text = match any.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::NumericString => {
            std::str::from_utf8(data).ok().map(str::to_string)
        }
        Tag::TeletexString => Some(data.iter().map(|&b| char::from(b)).collect()),
        Tag::BmpString if data.len() % 2 == 0 => {
            let units: Vec<u16> = data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        Tag::UniversalString if data.len() % 4 == 0 => data
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        _ => None,
    };
    match text {
        Some(text) => DnValue::Text(text),
        None => DnValue::Der(any.to_der_vec().unwrap_or_else(|_| data.to_vec())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_refused_without_panicking() {
        assert!(matches!(
            read_certificate(b"not a certificate"),
            Err(CertificateError::Parse(_))
        ));
        assert!(read_certificate(&[]).is_err());
        assert!(read_certificate(&[0x30, 0x82, 0xff, 0xff]).is_err());
    }
}
