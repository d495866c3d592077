//! `stratus-sign-metadata`: sign metadata made by `stratus-build-metadata` with the endorser's
//! certificate (PEM or PKCS#12, as the user configuration says), producing the envelope the
//! Marketplace accepts. The endorser fields are filled in from the certificate, and the metadata
//! is checked as the Marketplace will check it, so that what is signed will be accepted.
//! [`load_signer`] and [`sign`] are shared with `stratus-deprecate-metadata`.

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use stratus_common::certificate::CertificateInfo;
use stratus_common::marketplace::{
    format_timestamp, parse_metadata, validate, ImageMetadata, SignedMetadata, MAX_ENVELOPE_LEN,
};
use thiserror::Error;

use super::build_metadata::now_ms;
use super::Context;
use crate::config::ResolvedConfig;
use crate::credentials::Signer;
use crate::output;

#[derive(Debug, Args)]
pub struct SignMetadataArgs {
    /// The unsigned metadata (JSON), as stratus-build-metadata writes it
    #[arg(value_name = "METADATA")]
    pub metadata: PathBuf,

    /// Write the signed metadata to FILE instead of standard output
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PrepareError {
    #[error(
        "the certificate {subject} carries no email address (subjectAltName email or \
         emailAddress): Marketplace entries need one"
    )]
    NoEmail { subject: String },
    #[error(
        "the certificate {subject} expired on {not_after}: the Marketplace would refuse the entry"
    )]
    CertificateExpired { subject: String, not_after: String },
    #[error("valid_until {valid_until} has passed: the Marketplace would refuse the entry")]
    Expired { valid_until: String },
    #[error(
        "the certificate's {key} key cannot sign entries: use an RSA or ECDSA P-256/P-384 key"
    )]
    UnsupportedKey { key: String },
}

pub fn run(
    ctx: &Context,
    args: &SignMetadataArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let path = &args.metadata;
    let text = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if text.len() > MAX_ENVELOPE_LEN {
        anyhow::bail!(
            "{}: {} bytes is too large for metadata (at most {MAX_ENVELOPE_LEN})",
            path.display(),
            text.len()
        );
    }
    let mut metadata = parse_metadata(&text).with_context(|| format!("{}", path.display()))?;

    let signer = load_signer(&ctx.resolve()?)?;
    let envelope = sign(&signer, &mut metadata, now_ms(), err)
        .with_context(|| format!("{}", path.display()))?;
    let json = output::render_json(&envelope);
    match &args.output {
        Some(target) => {
            fs::write(target, json)
                .with_context(|| format!("cannot write {}", target.display()))?;
            out.write_all(
                output::render_metadata_signed(
                    &metadata.identifier,
                    &metadata.endorser.email,
                    &target.display().to_string(),
                )
                .as_bytes(),
            )?;
        }
        None => out.write_all(json.as_bytes())?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The signing credentials the configuration names (PKCS#12 or PEM), loaded.
pub fn load_signer(resolved: &ResolvedConfig) -> anyhow::Result<Signer> {
    let credentials = resolved.signing_credentials(|p| p.exists())?;
    Ok(Signer::load(&credentials)?)
}

/// Fills the endorser in from the signer's certificate ([`prepare`]), checks the metadata as the
/// Marketplace will, and signs it. A note about a replaced email goes to `err` as a warning.
pub fn sign(
    signer: &Signer,
    metadata: &mut ImageMetadata,
    now_ms: u64,
    err: &mut dyn Write,
) -> anyhow::Result<SignedMetadata> {
    if let Some(note) = prepare(metadata, signer.certificate(), now_ms)? {
        err.write_all(output::render_warning(&note).as_bytes())?;
    }
    validate(metadata).context("not signed")?;
    Ok(signer.sign(metadata)?)
}

/// Fills the endorser in from the signing certificate: its subject, and the metadata's email if
/// the certificate carries it, else the certificate's first. Refuses what the Marketplace would
/// refuse for reasons of the certificate or the dates. Returns a note for the user when the
/// email was replaced.
pub fn prepare(
    metadata: &mut ImageMetadata,
    certificate: &CertificateInfo,
    now_ms: u64,
) -> Result<Option<String>, PrepareError> {
    if certificate.key.jws_algorithm().is_none() {
        return Err(PrepareError::UnsupportedKey {
            key: certificate.key.to_string(),
        });
    }
    if !certificate.is_valid_at(now_ms) {
        return Err(PrepareError::CertificateExpired {
            subject: certificate.subject.clone(),
            not_after: format_timestamp(
                u64::try_from(certificate.not_after)
                    .unwrap_or(0)
                    .saturating_mul(1000),
            ),
        });
    }
    if metadata
        .valid_until_ms()
        .is_ok_and(|valid_until| valid_until <= now_ms)
    {
        return Err(PrepareError::Expired {
            valid_until: metadata.valid_until.clone(),
        });
    }
    let Some(first_email) = certificate.emails.first() else {
        return Err(PrepareError::NoEmail {
            subject: certificate.subject.clone(),
        });
    };
    metadata.endorser.subject = certificate.subject.clone();
    let requested = &metadata.endorser.email;
    if certificate.has_email(requested) {
        return Ok(None);
    }
    let note = (!requested.is_empty()).then(|| {
        format!("endorser.email {requested} is not in your certificate: signing as {first_email}")
    });
    metadata.endorser.email = first_email.clone();
    Ok(note)
}

#[cfg(test)]
pub(crate) mod tests {
    use stratus_common::api::{Compression, DiskFormat};
    use stratus_common::certificate::KeyKind;
    use stratus_common::marketplace::{identifier_from_sha256, Checksums, Endorser, ImageKind};

    use super::*;

    const NOW: u64 = 1_735_689_600_000;

    fn certificate(emails: &[&str]) -> CertificateInfo {
        CertificateInfo {
            subject: "CN=Jane Doe,O=Example,C=FR".into(),
            issuer: "CN=Example CA".into(),
            emails: emails.iter().map(|e| e.to_string()).collect(),
            not_before: 1_700_000_000,
            not_after: 1_900_000_000,
            key: KeyKind::EcdsaP256,
            public_key: vec![4; 65],
            is_ca: false,
        }
    }

    /// Unsigned metadata asking for `email` as the endorser (the subject left to [`prepare`]),
    /// valid from 2024-12-01 to 2025-12-01; shared with the `stratus-deprecate-metadata` tests.
    pub(crate) fn metadata(email: &str) -> ImageMetadata {
        let sha256 = "ab".repeat(32);
        ImageMetadata {
            identifier: identifier_from_sha256(&sha256).unwrap(),
            kind: ImageKind::Machine,
            format: DiskFormat::Raw,
            compression: Compression::None,
            size: 4096,
            checksums: Checksums {
                sha256,
                sha1: None,
                md5: None,
            },
            os: "ttylinux".into(),
            os_version: "9.3".into(),
            arch: "x86_64".into(),
            version: "1.0".into(),
            description: String::new(),
            locations: vec!["http://127.0.0.1/x.img".into()],
            endorser: Endorser {
                email: email.into(),
                subject: String::new(),
            },
            created: "2024-12-01T00:00:00Z".into(),
            valid_until: "2025-12-01T00:00:00Z".into(),
            deprecated: None,
            kernel: None,
            initrd: None,
            cmdline: None,
        }
    }

    #[test]
    fn fills_the_subject_and_the_certificates_email() {
        let mut m = metadata("");
        let note = prepare(&mut m, &certificate(&["jane@example.org"]), NOW).unwrap();
        assert_eq!(note, None);
        assert_eq!(m.endorser.subject, "CN=Jane Doe,O=Example,C=FR");
        assert_eq!(m.endorser.email, "jane@example.org");
        assert_eq!(validate(&m), Ok(()));
    }

    #[test]
    fn keeps_a_requested_email_the_certificate_has() {
        let cert = certificate(&["jane@example.org", "jane@lab.example.org"]);
        let mut m = metadata("jane@lab.example.org");
        assert_eq!(prepare(&mut m, &cert, NOW).unwrap(), None);
        assert_eq!(m.endorser.email, "jane@lab.example.org");

        let mut m = metadata("boss@example.org");
        let note = prepare(&mut m, &cert, NOW).unwrap().unwrap();
        assert!(
            note.contains("boss@example.org is not in your certificate"),
            "{note}"
        );
        assert_eq!(m.endorser.email, "jane@example.org");
    }

    #[test]
    fn refuses_what_the_marketplace_would() {
        let mut m = metadata("");
        assert!(matches!(
            prepare(&mut m, &certificate(&[]), NOW),
            Err(PrepareError::NoEmail { .. })
        ));
        let mut expired = certificate(&["jane@example.org"]);
        expired.not_after = 1_700_000_001;
        assert!(matches!(
            prepare(&mut m, &expired, NOW),
            Err(PrepareError::CertificateExpired { .. })
        ));
        let mut old = metadata("");
        old.valid_until = "2024-12-31T00:00:00Z".into();
        assert_eq!(
            prepare(&mut old, &certificate(&["jane@example.org"]), NOW)
                .unwrap_err()
                .to_string(),
            "valid_until 2024-12-31T00:00:00Z has passed: the Marketplace would refuse the entry"
        );
        let mut dsa = certificate(&["jane@example.org"]);
        dsa.key = KeyKind::Other {
            algorithm: "1.2.840.10040.4.1".into(),
        };
        assert!(matches!(
            prepare(&mut m, &dsa, NOW),
            Err(PrepareError::UnsupportedKey { .. })
        ));
    }
}
