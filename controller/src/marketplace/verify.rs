//! Verifying an uploaded entry, in the order of the Marketplace's upload workflow: the envelope
//! and the metadata's structure and content, the certificate chain against the site's trust, the
//! signature, that the endorser named in the metadata is the certificate's owner, and the date
//! window. What passes is a [`VerifiedEntry`], ready to be appended to the registry.

use std::time::Duration;

use ring::signature::{
    UnparsedPublicKey, VerificationAlgorithm, ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED,
    RSA_PKCS1_2048_8192_SHA256,
};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use serde::{Deserialize, Serialize};
use stratus_common::certificate::{read_certificate, CertificateInfo, KeyKind};
use stratus_common::marketplace::{
    self, format_timestamp, ImageMetadata, JwsAlgorithm, MetadataError, SignedMetadata,
};
use thiserror::Error;
use webpki::{EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeId, KeyPurposeIdIter};

use super::trust::{sha256_hex, TrustStore};

/// How far in the future an entry's `created` may be: clocks of endorsers and controllers differ.
pub const MAX_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;

/// An entry whose signature, certificate and dates checked out at upload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VerifiedEntry {
    /// The metadata as signed.
    pub metadata: ImageMetadata,
    /// The endorser's email (from the metadata, proven by the certificate).
    pub endorser_email: String,
    /// The signing certificate's subject, RFC 4514.
    pub endorser_subject: String,
    /// Lowercase hex SHA-256 of the signing certificate's DER.
    pub cert_sha256: String,
    /// `metadata.created` in epoch milliseconds.
    pub created_ms: u64,
    /// `metadata.valid_until` in epoch milliseconds.
    pub valid_until_ms: u64,
    /// Why the signer was trusted.
    pub trust: TrustPath,
    /// The envelope as uploaded, so anyone can verify the entry again.
    pub envelope: SignedMetadata,
}

/// What made the signing certificate trusted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "by")]
pub enum TrustPath {
    /// A chain to one of the site's CAs.
    CertificateAuthority {
        /// The CA's subject, RFC 4514.
        ca_subject: String,
    },
    /// The certificate itself is a registered endorser certificate.
    RegisteredEndorser,
}

/// Why an upload was refused. Each cause has its own variant so the API can give it its own code.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("{0}")]
    Envelope(MetadataError),
    #[error("invalid metadata: {0}")]
    InvalidMetadata(MetadataError),
    #[error("protected.x5c[{index}]: {reason}")]
    BadCertificate { index: usize, reason: String },
    #[error(
        "the signing certificate has an {key}: only RSA (2048 to 8192 bits) and ECDSA P-256 or \
         P-384 keys can sign entries"
    )]
    UnsupportedKey { key: String },
    #[error(
        "protected.alg {alg} does not fit the signing certificate's {key} key (use {expected})"
    )]
    AlgorithmMismatch {
        alg: &'static str,
        key: String,
        expected: &'static str,
    },
    #[error(
        "certificate not issued by a trusted CA or registered endorser \
         (subject {subject}, issuer {issuer})"
    )]
    Untrusted { subject: String, issuer: String },
    #[error(
        "certificate {subject} may not sign entries: its extended key usage allows none of \
         emailProtection, codeSigning, clientAuth"
    )]
    UnsuitableCertificate { subject: String },
    #[error("certificate chain of {subject} does not verify: {reason}")]
    ChainInvalid { subject: String, reason: String },
    #[error("certificate expired on {not_after} (signer {subject})")]
    CertificateExpired { subject: String, not_after: String },
    #[error("certificate not valid before {not_before} (signer {subject})")]
    CertificateNotYetValid { subject: String, not_before: String },
    #[error("signature does not verify")]
    BadSignature,
    #[error("endorser.subject {claimed:?} is not the signing certificate's subject {actual:?}")]
    SubjectMismatch { claimed: String, actual: String },
    #[error(
        "endorser.email {email} is not in the signing certificate (which has: {})",
        if certificate_emails.is_empty() { "no email".to_string() } else { certificate_emails.join(", ") }
    )]
    EmailNotInCertificate {
        email: String,
        certificate_emails: Vec<String>,
    },
    #[error("entry created {created}, in the future")]
    CreatedInFuture { created: String },
    #[error("entry expired on {valid_until}")]
    Expired { valid_until: String },
}

impl VerifyError {
    /// A stable machine-readable code for API errors.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Envelope(_) => "malformed_envelope",
            Self::InvalidMetadata(_) => "invalid_metadata",
            Self::BadCertificate { .. } => "bad_certificate",
            Self::UnsupportedKey { .. } => "unsupported_key",
            Self::AlgorithmMismatch { .. } => "algorithm_mismatch",
            Self::Untrusted { .. } => "untrusted_signer",
            Self::UnsuitableCertificate { .. } => "unsuitable_certificate",
            Self::ChainInvalid { .. } => "invalid_chain",
            Self::CertificateExpired { .. } => "certificate_expired",
            Self::CertificateNotYetValid { .. } => "certificate_not_yet_valid",
            Self::BadSignature => "bad_signature",
            Self::SubjectMismatch { .. } => "subject_mismatch",
            Self::EmailNotInCertificate { .. } => "email_not_in_certificate",
            Self::CreatedInFuture { .. } => "created_in_future",
            Self::Expired { .. } => "entry_expired",
        }
    }
}

/// Verifies an uploaded envelope against the site's trust at `now_ms` (epoch milliseconds).
pub fn verify(
    envelope: &SignedMetadata,
    trust: &TrustStore,
    now_ms: u64,
) -> Result<VerifiedEntry, VerifyError> {
    // 1. Structure and content.
    let opened = envelope.open().map_err(VerifyError::Envelope)?;
    let metadata = opened.metadata;
    marketplace::validate(&metadata).map_err(VerifyError::InvalidMetadata)?;
    let created_ms = metadata
        .created_ms()
        .map_err(VerifyError::InvalidMetadata)?;
    let valid_until_ms = metadata
        .valid_until_ms()
        .map_err(VerifyError::InvalidMetadata)?;

    // 2. The signer's certificate and its trust.
    let leaf_der = &opened.certificates[0];
    let leaf = read_certificate(leaf_der).map_err(|e| VerifyError::BadCertificate {
        index: 0,
        reason: e.to_string(),
    })?;
    for (index, der) in opened.certificates.iter().enumerate().skip(1) {
        read_certificate(der).map_err(|e| VerifyError::BadCertificate {
            index,
            reason: e.to_string(),
        })?;
    }
    let trust_path = if trust.is_registered_endorser(leaf_der) {
        check_validity(&leaf, now_ms)?;
        TrustPath::RegisteredEndorser
    } else {
        verify_chain(&opened.certificates, &leaf, trust, now_ms)?
    };

    // 3. The signature, with the leaf's key.
    let algorithm = signature_algorithm(opened.header.alg, &leaf.key)?;
    UnparsedPublicKey::new(algorithm, &leaf.public_key)
        .verify(&opened.signing_input, &opened.signature)
        .map_err(|_| VerifyError::BadSignature)?;

    // 4. The endorser named is the certificate's owner.
    if metadata.endorser.subject != leaf.subject {
        return Err(VerifyError::SubjectMismatch {
            claimed: metadata.endorser.subject.clone(),
            actual: leaf.subject,
        });
    }
    if !leaf.has_email(&metadata.endorser.email) {
        return Err(VerifyError::EmailNotInCertificate {
            email: metadata.endorser.email.clone(),
            certificate_emails: leaf.emails,
        });
    }

    // 5. The date window.
    if created_ms > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
        return Err(VerifyError::CreatedInFuture {
            created: metadata.created.clone(),
        });
    }
    if valid_until_ms <= now_ms {
        return Err(VerifyError::Expired {
            valid_until: metadata.valid_until.clone(),
        });
    }

    Ok(VerifiedEntry {
        endorser_email: metadata.endorser.email.clone(),
        endorser_subject: leaf.subject,
        cert_sha256: sha256_hex(leaf_der),
        created_ms,
        valid_until_ms,
        trust: trust_path,
        envelope: envelope.clone(),
        metadata,
    })
}

/// The `ring` algorithm for a JWS `alg`, after checking it fits the certificate's key.
fn signature_algorithm(
    alg: JwsAlgorithm,
    key: &KeyKind,
) -> Result<&'static dyn VerificationAlgorithm, VerifyError> {
    let Some(expected) = key.jws_algorithm() else {
        return Err(VerifyError::UnsupportedKey {
            key: key.to_string(),
        });
    };
    if let KeyKind::Rsa { bits } = key {
        if !(2048..=8192).contains(bits) {
            return Err(VerifyError::UnsupportedKey {
                key: key.to_string(),
            });
        }
    }
    if alg != expected {
        return Err(VerifyError::AlgorithmMismatch {
            alg: alg.as_str(),
            key: key.to_string(),
            expected: expected.as_str(),
        });
    }
    Ok(match alg {
        JwsAlgorithm::RS256 => &RSA_PKCS1_2048_8192_SHA256,
        JwsAlgorithm::ES256 => &ECDSA_P256_SHA256_FIXED,
        JwsAlgorithm::ES384 => &ECDSA_P384_SHA384_FIXED,
    })
}

/// Validity of a registered endorser's certificate (a CA chain's validity is webpki's check).
fn check_validity(leaf: &CertificateInfo, now_ms: u64) -> Result<(), VerifyError> {
    if leaf.is_valid_at(now_ms) {
        return Ok(());
    }
    let now_secs = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
    if now_secs < leaf.not_before {
        Err(VerifyError::CertificateNotYetValid {
            subject: leaf.subject.clone(),
            not_before: render_secs(leaf.not_before),
        })
    } else {
        Err(VerifyError::CertificateExpired {
            subject: leaf.subject.clone(),
            not_after: render_secs(leaf.not_after),
        })
    }
}

fn render_secs(secs: i64) -> String {
    format_timestamp(u64::try_from(secs).unwrap_or(0).saturating_mul(1000))
}

/// Extended key usages an endorsement certificate may carry (any one of them, or none): the
/// purposes of a person's signing certificate. Host certificates (serverAuth only) are refused.
struct EndorsementUsage;

/// DER contents of the accepted EKU OIDs.
const EKU_EMAIL_PROTECTION: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x04];
const EKU_CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];
const EKU_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
const EKU_ANY: &[u8] = &[0x55, 0x1d, 0x25, 0x00];

impl ExtendedKeyUsageValidator for EndorsementUsage {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        let accepted = [
            EKU_EMAIL_PROTECTION,
            EKU_CODE_SIGNING,
            EKU_CLIENT_AUTH,
            EKU_ANY,
        ]
        .map(KeyPurposeId::new);
        let mut present = Vec::new();
        for id in iter {
            let id = id?;
            if accepted.contains(&id) {
                return Ok(());
            }
            present.push(id.to_decoded_oid());
        }
        if present.is_empty() {
            Ok(())
        } else {
            Err(webpki::Error::RequiredEkuNotFoundContext(
                webpki::RequiredEkuNotFoundContext {
                    required: webpki::KeyUsage::required(EKU_EMAIL_PROTECTION),
                    present,
                },
            ))
        }
    }
}

/// Builds a chain from the leaf through the other `x5c` certificates to a trusted CA.
fn verify_chain(
    certificates: &[Vec<u8>],
    leaf: &CertificateInfo,
    trust: &TrustStore,
    now_ms: u64,
) -> Result<TrustPath, VerifyError> {
    let leaf_der = CertificateDer::from(certificates[0].as_slice());
    let end_entity =
        EndEntityCert::try_from(&leaf_der).map_err(|e| VerifyError::BadCertificate {
            index: 0,
            reason: format!("{e:?}"),
        })?;
    let anchor_ders: Vec<CertificateDer<'_>> = trust
        .trusted_cas
        .iter()
        .map(|der| CertificateDer::from(der.as_slice()))
        .collect();
    // The store checked every CA when it was built; one that fails now is simply skipped.
    let anchors: Vec<TrustAnchor<'_>> = anchor_ders
        .iter()
        .filter_map(|der| webpki::anchor_from_trusted_cert(der).ok())
        .collect();
    let intermediates: Vec<CertificateDer<'_>> = certificates[1..]
        .iter()
        .map(|der| CertificateDer::from(der.as_slice()))
        .collect();
    let time = UnixTime::since_unix_epoch(Duration::from_millis(now_ms));

    let path = end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            time,
            EndorsementUsage,
            None,
            None,
        )
        .map_err(|e| chain_error(e, leaf))?;

    let anchor_subject = path.anchor().subject.as_ref();
    let ca_subject = trust
        .trusted_cas
        .iter()
        .filter_map(|der| read_certificate(der).ok().map(|info| (der, info)))
        .find(|(der, _)| {
            webpki::anchor_from_trusted_cert(&CertificateDer::from(der.as_slice()))
                .is_ok_and(|a| a.subject.as_ref() == anchor_subject)
        })
        .map(|(_, info)| info.subject)
        .unwrap_or_default();
    Ok(TrustPath::CertificateAuthority { ca_subject })
}

fn chain_error(error: webpki::Error, leaf: &CertificateInfo) -> VerifyError {
    let subject = leaf.subject.clone();
    let render = |t: UnixTime| render_secs(i64::try_from(t.as_secs()).unwrap_or(i64::MAX));
    match error {
        // A bad signature on the leaf or an intermediate means an issuer that merely bears the
        // name of a trusted CA: as untrusted as an unknown one.
        webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey => {
            VerifyError::Untrusted {
                subject,
                issuer: leaf.issuer.clone(),
            }
        }
        webpki::Error::CertExpired { not_after, .. } => VerifyError::CertificateExpired {
            subject,
            not_after: render(not_after),
        },
        webpki::Error::CertNotValidYet { not_before, .. } => VerifyError::CertificateNotYetValid {
            subject,
            not_before: render(not_before),
        },
        webpki::Error::RequiredEkuNotFoundContext(_) => {
            VerifyError::UnsuitableCertificate { subject }
        }
        webpki::Error::CaUsedAsEndEntity => VerifyError::BadCertificate {
            index: 0,
            reason: "a CA certificate cannot sign entries".into(),
        },
        other => VerifyError::ChainInvalid {
            subject,
            reason: format!("{other:?}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marketplace::testing::{metadata_for, sign, Pki, TestKey, DAY_MS, NOW_MS};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

    fn trust(pki: &Pki) -> TrustStore {
        TrustStore::from_pem(&pki.ca.cert.pem(), "").unwrap()
    }

    #[test]
    fn good_signatures_verify_with_every_key_kind() {
        let pki = Pki::new();
        for kind in [TestKey::Rsa, TestKey::P256, TestKey::P384] {
            let endorser = pki.endorser(kind, "jane@example.org");
            let envelope = sign(&endorser, &[&pki.ca.cert], &metadata_for(&endorser));
            let entry =
                verify(&envelope, &trust(&pki), NOW_MS).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
            assert_eq!(entry.endorser_email, "jane@example.org");
            assert_eq!(entry.endorser_subject, endorser.subject());
            assert_eq!(entry.cert_sha256, sha256_hex(endorser.cert.der()));
            assert_eq!(entry.envelope, envelope);
            assert_eq!(
                entry.trust,
                TrustPath::CertificateAuthority {
                    ca_subject: "CN=Test Grid CA,O=StratusLab Test,C=EU".into()
                }
            );
        }
    }

    #[test]
    fn chains_through_an_intermediate_ca() {
        let pki = Pki::new();
        let intermediate = pki.intermediate();
        let endorser = pki.endorser_issued_by(TestKey::P256, "jane@example.org", &intermediate);
        let envelope = sign(&endorser, &[&intermediate.cert], &metadata_for(&endorser));
        assert!(verify(&envelope, &trust(&pki), NOW_MS).is_ok());
        // Without the intermediate in x5c, no chain can be built.
        let envelope = sign(&endorser, &[], &metadata_for(&endorser));
        assert!(matches!(
            verify(&envelope, &trust(&pki), NOW_MS),
            Err(VerifyError::Untrusted { .. })
        ));
    }

    #[test]
    fn registered_self_signed_endorsers_verify_without_a_ca() {
        let pki = Pki::new();
        let solo = pki.self_signed_endorser(TestKey::Rsa, "solo@example.org");
        let envelope = sign(&solo, &[], &metadata_for(&solo));
        let store = TrustStore::from_pem("", &solo.cert.pem()).unwrap();
        let entry = verify(&envelope, &store, NOW_MS).unwrap();
        assert_eq!(entry.trust, TrustPath::RegisteredEndorser);
        // Not registered and not from a trusted CA.
        let err = verify(&envelope, &trust(&pki), NOW_MS).unwrap_err();
        assert!(matches!(err, VerifyError::Untrusted { .. }), "{err}");
        assert!(err
            .to_string()
            .starts_with("certificate not issued by a trusted CA or registered endorser"));
    }

    #[test]
    fn unknown_issuer_is_untrusted() {
        let pki = Pki::new();
        // A CA of another name, and an impostor CA with the trusted CA's very name.
        for stranger in [Pki::with_ca_name("Elsewhere CA"), Pki::new()] {
            let endorser = stranger.endorser(TestKey::P256, "eve@example.org");
            let envelope = sign(&endorser, &[&stranger.ca.cert], &metadata_for(&endorser));
            let err = verify(&envelope, &trust(&pki), NOW_MS).unwrap_err();
            assert!(matches!(err, VerifyError::Untrusted { .. }), "{err}");
            assert_eq!(err.code(), "untrusted_signer");
        }
    }

    #[test]
    fn tampered_payload_does_not_verify() {
        let pki = Pki::new();
        let endorser = pki.endorser(TestKey::P256, "jane@example.org");
        let mut envelope = sign(&endorser, &[], &metadata_for(&endorser));
        let mut metadata = envelope.metadata().unwrap();
        metadata.locations = vec!["http://evil.example/x.qcow2".into()];
        envelope.payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&metadata).unwrap());
        let err = verify(&envelope, &trust(&pki), NOW_MS).unwrap_err();
        assert_eq!(err, VerifyError::BadSignature);
        assert_eq!(err.to_string(), "signature does not verify");
    }

    #[test]
    fn wrong_key_does_not_verify() {
        let pki = Pki::new();
        let endorser = pki.endorser(TestKey::P256, "jane@example.org");
        let impostor = pki.endorser(TestKey::P256, "jane@example.org");
        // Signed with the impostor's key, presenting the endorser's certificate.
        let mut envelope = sign(&impostor, &[], &metadata_for(&endorser));
        let genuine = sign(&endorser, &[], &metadata_for(&endorser));
        envelope.protected = genuine.protected.clone();
        let resigned = sign_input_with(&impostor, &envelope);
        envelope.signature = resigned;
        assert_eq!(
            verify(&envelope, &trust(&pki), NOW_MS).unwrap_err(),
            VerifyError::BadSignature
        );
    }

    fn sign_input_with(
        key_holder: &crate::marketplace::testing::Endorser,
        envelope: &SignedMetadata,
    ) -> String {
        URL_SAFE_NO_PAD.encode(key_holder.sign_bytes(&envelope.signing_input()))
    }

    #[test]
    fn algorithm_must_fit_the_key() {
        let pki = Pki::new();
        let endorser = pki.endorser(TestKey::P384, "jane@example.org");
        let mut envelope = sign(&endorser, &[], &metadata_for(&endorser));
        let mut header = envelope.header().unwrap();
        header.alg = JwsAlgorithm::ES256;
        envelope.protected = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap());
        envelope.signature = sign_input_with(&endorser, &envelope);
        let err = verify(&envelope, &trust(&pki), NOW_MS).unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::AlgorithmMismatch {
                    alg: "ES256",
                    expected: "ES384",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn expired_entry_is_refused() {
        let pki = Pki::new();
        let endorser = pki.endorser(TestKey::P256, "jane@example.org");
        let mut metadata = metadata_for(&endorser);
        metadata.created = format_timestamp(NOW_MS - 30 * DAY_MS);
        metadata.valid_until = format_timestamp(NOW_MS - DAY_MS);
        let envelope = sign(&endorser, &[], &metadata);
        let err = verify(&envelope, &trust(&pki), NOW_MS).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("entry expired on {}", format_timestamp(NOW_MS - DAY_MS))
        );
        assert!(matches!(err, VerifyError::Expired { .. }));
    }

    #[test]
    fn entry_from_the_future_is_refused_beyond_the_skew() {
        let pki = Pki::new();
        let endorser = pki.endorser(TestKey::P256, "jane@example.org");
        let mut metadata = metadata_for(&endorser);
        metadata.created = format_timestamp(NOW_MS + MAX_CLOCK_SKEW_MS / 2);
        assert!(verify(&sign(&endorser, &[], &metadata), &trust(&pki), NOW_MS).is_ok());
        metadata.created = format_timestamp(NOW_MS + 2 * MAX_CLOCK_SKEW_MS);
        assert!(matches!(
            verify(&sign(&endorser, &[], &metadata), &trust(&pki), NOW_MS),
            Err(VerifyError::CreatedInFuture { .. })
        ));
    }

    #[test]
    fn expired_certificate_is_refused() {
        let pki = Pki::new();
        let old = pki.expired_endorser(TestKey::P256, "jane@example.org");
        let envelope = sign(&old, &[], &metadata_for(&old));
        let err = verify(&envelope, &trust(&pki), NOW_MS).unwrap_err();
        assert!(
            matches!(err, VerifyError::CertificateExpired { .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("certificate expired on 2024-06-01T"),
            "{err}"
        );
        // Pinned certificates are held to their validity too.
        let store = TrustStore::from_pem("", &old.cert.pem()).unwrap();
        let err = verify(&envelope, &store, NOW_MS).unwrap_err();
        assert!(
            matches!(err, VerifyError::CertificateExpired { .. }),
            "{err}"
        );
    }

    #[test]
    fn subject_must_be_the_certificates() {
        let pki = Pki::new();
        let endorser = pki.endorser(TestKey::P256, "jane@example.org");
        let mut metadata = metadata_for(&endorser);
        metadata.endorser.subject = "CN=Somebody Else,O=StratusLab Test,C=EU".into();
        let err = verify(&sign(&endorser, &[], &metadata), &trust(&pki), NOW_MS).unwrap_err();
        assert!(matches!(err, VerifyError::SubjectMismatch { .. }), "{err}");
    }

    #[test]
    fn email_must_be_in_the_certificate() {
        let pki = Pki::new();
        let endorser = pki.endorser(TestKey::P256, "jane@example.org");
        let mut metadata = metadata_for(&endorser);
        metadata.endorser.email = "JANE@EXAMPLE.ORG".into();
        assert!(verify(&sign(&endorser, &[], &metadata), &trust(&pki), NOW_MS).is_ok());
        metadata.endorser.email = "boss@example.org".into();
        let err = verify(&sign(&endorser, &[], &metadata), &trust(&pki), NOW_MS).unwrap_err();
        assert_eq!(
            err.to_string(),
            "endorser.email boss@example.org is not in the signing certificate \
             (which has: jane@example.org, jane.doe@example.org)"
        );
    }

    #[test]
    fn server_certificates_cannot_sign() {
        let pki = Pki::new();
        let host = pki.host_certificate("jane@example.org");
        let envelope = sign(&host, &[], &metadata_for(&host));
        let err = verify(&envelope, &trust(&pki), NOW_MS).unwrap_err();
        assert!(
            matches!(err, VerifyError::UnsuitableCertificate { .. }),
            "{err}"
        );
    }

    #[test]
    fn invalid_metadata_and_broken_envelopes_are_refused_first() {
        let pki = Pki::new();
        let endorser = pki.endorser(TestKey::P256, "jane@example.org");
        let mut metadata = metadata_for(&endorser);
        metadata.size = 0;
        let err = verify(&sign(&endorser, &[], &metadata), &trust(&pki), NOW_MS).unwrap_err();
        assert_eq!(err.to_string(), "invalid metadata: size: must be positive");
        let mut envelope = sign(&endorser, &[], &metadata_for(&endorser));
        envelope.signature = "!".into();
        assert!(matches!(
            verify(&envelope, &trust(&pki), NOW_MS),
            Err(VerifyError::Envelope(_))
        ));
        let mut envelope = sign(&endorser, &[], &metadata_for(&endorser));
        let mut header = envelope.header().unwrap();
        header.x5c[0] = base64::engine::general_purpose::STANDARD.encode(b"junk");
        envelope.protected = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap());
        assert!(matches!(
            verify(&envelope, &trust(&pki), NOW_MS),
            Err(VerifyError::BadCertificate { index: 0, .. })
        ));
    }

    #[test]
    fn certificate_names_are_read_as_rfc_4514() {
        let pki = Pki::new();
        let endorser = pki.endorser(TestKey::P256, "jane@example.org");
        let info = read_certificate(endorser.cert.der()).unwrap();
        assert_eq!(
            info.subject,
            "emailAddress=jane.doe@example.org,CN=Jane Doe,OU=Endorsers,O=StratusLab Test,C=EU"
        );
        assert_eq!(info.issuer, "CN=Test Grid CA,O=StratusLab Test,C=EU");
        assert_eq!(info.emails, ["jane@example.org", "jane.doe@example.org"]);
        assert_eq!(info.key, KeyKind::EcdsaP256);
        let rsa = pki.endorser(TestKey::Rsa, "jane@example.org");
        assert_eq!(
            read_certificate(rsa.cert.der()).unwrap().key,
            KeyKind::Rsa { bits: 2048 }
        );
    }
}
