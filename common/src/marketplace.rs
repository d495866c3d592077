//! The Marketplace's image metadata: the document an endorser signs to vouch for an image, its
//! StratusLab-style identifier, the checks of its structure and content, and the signed envelope
//! (a JWS, RFC 7515, in the flattened JSON serialization) it travels in.
//!
//! Pure: no I/O and no cryptography. Building the signing input and splitting an envelope are
//! here so that the CLI (which signs) and the controller (which verifies) agree on every byte;
//! the signature itself is made and checked by the callers. `docs/marketplace.md` describes the
//! format for people writing their own tools.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::agent::ImageSpec;
use crate::api::{Artifact, Compression, DiskFormat};
use crate::artifact::{validate_artifact, validate_location, MAX_LOCATIONS};
use crate::names::is_sha256_hex;

/// Length of an image identifier: 160 bits in base64 digits, as the original StratusLab's.
pub const IDENTIFIER_LEN: usize = 27;
/// Longest `os`, `os_version`, `arch` and `version`, in bytes.
pub const MAX_SHORT_TEXT_LEN: usize = 64;
/// Longest `description` and `deprecated` reason, in bytes.
pub const MAX_DESCRIPTION_LEN: usize = 1024;
/// Longest endorser email (RFC 5321's path limit).
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest endorser certificate subject, in bytes.
pub const MAX_SUBJECT_LEN: usize = 1024;
/// Longest kernel command line (x86's `COMMAND_LINE_SIZE`), as for registered images.
pub const MAX_CMDLINE_LEN: usize = 2048;
/// Largest signed envelope accepted, in bytes: metadata plus a certificate chain fit easily, and
/// a bound keeps a hostile upload from costing memory in the replicated state.
pub const MAX_ENVELOPE_LEN: usize = 64 * 1024;
/// Most certificates in the `x5c` chain (the signer and its intermediates).
pub const MAX_CHAIN_LEN: usize = 5;

/// What an image is for.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ImageKind {
    /// A bootable machine image: instances start from it.
    Machine,
    /// A data disk image: attached to instances, never booted.
    Disk,
}

impl ImageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Machine => "machine",
            Self::Disk => "disk",
        }
    }
}

/// Checksums of the image after decompression: what a host has on disk once it has fetched and
/// decompressed the file at a location.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Checksums {
    /// Lowercase hex SHA-256. Required: hosts check downloads against it and the identifier is
    /// derived from it.
    pub sha256: String,
    /// Lowercase hex SHA-1, for tools of the original Marketplace; informative only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha1: Option<String>,
    /// Lowercase hex MD5, for tools of the original Marketplace; informative only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
}

/// Who vouches for the image. Both values must match the certificate the entry is signed with, so
/// a reader can trust them without looking at the certificate.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = EntryEndorser))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Endorser {
    /// The endorser's email: one of the certificate's subjectAltName rfc822Name values or its
    /// subject's emailAddress. `stratus-sign-metadata` fills it in when empty.
    #[serde(default)]
    pub email: String,
    /// The signing certificate's subject as an RFC 4514 string (most specific RDN first, e.g.
    /// `CN=Jane Doe,O=Example,C=FR`). `stratus-sign-metadata` fills it in.
    #[serde(default)]
    pub subject: String,
}

/// The signed content of a Marketplace entry: one endorser's statement about one image.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImageMetadata {
    /// The image identifier, derived from `checksums.sha256` by [`identifier_from_sha256`]; all
    /// entries about the same image content share it, whoever endorses them.
    pub identifier: String,
    /// Machine image (bootable) or data disk image.
    pub kind: ImageKind,
    /// Format of the image after decompression; hosts refuse a disk whose header says otherwise.
    pub format: DiskFormat,
    /// Compression of the file at the locations; hosts decompress while they download.
    #[serde(default)]
    pub compression: Compression,
    /// Size in bytes of the image after decompression. A download that grows past it is cut off.
    pub size: u64,
    /// Checksums of the image after decompression.
    pub checksums: Checksums,
    /// Operating system, e.g. `ttylinux`, `debian`.
    pub os: String,
    /// Version of the operating system, e.g. `12`.
    pub os_version: String,
    /// Machine architecture the image runs on, e.g. `x86_64`.
    pub arch: String,
    /// The image's own version, chosen by its maker, e.g. `1.0`.
    pub version: String,
    /// A one-line human description.
    pub description: String,
    /// Download URLs of the (possibly compressed) file, tried in order: `http://`, `https://` or
    /// `file://`.
    pub locations: Vec<String>,
    /// Who endorses the entry; must match the signing certificate.
    #[serde(default)]
    pub endorser: Endorser,
    /// When the endorser made the entry: RFC 3339 in UTC (`2024-05-01T10:00:00Z`). Among one
    /// endorser's entries for an image, the latest `created` is the one that counts.
    pub created: String,
    /// Until when the endorsement holds: RFC 3339 in UTC, after `created`. Expired entries are
    /// refused by the site policy.
    pub valid_until: String,
    /// Set when the endorser withdraws the image: why (e.g. `security hole, use XYZ`). Entries
    /// are never deleted; deprecating is uploading a newer entry with this set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated: Option<String>,
    /// For direct kernel boot: the kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<Artifact>,
    /// For direct kernel boot: the initrd (needs a kernel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<Artifact>,
    /// For direct kernel boot: the kernel command line (needs a kernel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
}

impl ImageMetadata {
    /// `created` in milliseconds since the Unix epoch.
    pub fn created_ms(&self) -> Result<u64, MetadataError> {
        parse_timestamp("created", &self.created)
    }

    /// `valid_until` in milliseconds since the Unix epoch.
    pub fn valid_until_ms(&self) -> Result<u64, MetadataError> {
        parse_timestamp("valid_until", &self.valid_until)
    }
}

/// A problem with a metadata document or its envelope, naming the field or part at fault.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum MetadataError {
    #[error("{field}: {reason}")]
    Field { field: String, reason: String },
    #[error("identifier: {found:?} does not match checksums.sha256 (expected {expected})")]
    IdentifierMismatch { found: String, expected: String },
    #[error("{part}: not valid base64url without padding")]
    Base64Url { part: &'static str },
    #[error("{part}: not valid base64")]
    Base64 { part: String },
    #[error("{part}: {reason}")]
    Json { part: &'static str, reason: String },
    #[error("signed metadata is {size} bytes, more than the {max} accepted")]
    TooLarge { size: usize, max: usize },
    #[error(
        "protected.x5c: must hold 1 to {MAX_CHAIN_LEN} certificates, signer first (found {count})"
    )]
    ChainLength { count: usize },
}

fn field_error(field: impl Into<String>, reason: impl Into<String>) -> MetadataError {
    MetadataError::Field {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The identifier of the image whose SHA-256 digest is `digest`: base64url (`A-Z a-z 0-9 - _`),
/// without padding, of the digest's first 20 bytes.
///
/// Why this shape: the original StratusLab identifiers were 160-bit hashes (SHA-1) written in 27
/// base64 digits, short enough to type and to put in URLs, file names and domain metadata without
/// escaping. Keeping 160 bits keeps that length while deriving it from SHA-256, which hosts check
/// downloads against; 160 bits leave collisions out of reach (2^80 work). Being a function of the
/// content, two endorsers of the same bytes name the same image. Identifiers of the original
/// Marketplace (from SHA-1) are not reproduced; imported entries get new ones.
pub fn identifier_from_digest(digest: &[u8; 32]) -> String {
    URL_SAFE_NO_PAD.encode(&digest[..20])
}

/// [`identifier_from_digest`] of a lowercase hex SHA-256 (64 digits).
pub fn identifier_from_sha256(hex: &str) -> Result<String, MetadataError> {
    let digest = decode_hex::<32>(hex)
        .ok_or_else(|| field_error("checksums.sha256", "must be 64 lowercase hex digits"))?;
    Ok(identifier_from_digest(&digest))
}

/// Whether `s` has the form of an identifier (27 base64url digits).
pub fn is_identifier(s: &str) -> bool {
    s.len() == IDENTIFIER_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn decode_hex<const N: usize>(hex: &str) -> Option<[u8; N]> {
    fn digit(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        }
    }
    let bytes = hex.as_bytes();
    if bytes.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks a text field: at most `max` bytes, no control characters, and not empty if `required`.
fn check_text(field: &str, value: &str, max: usize, required: bool) -> Result<(), MetadataError> {
    if required && value.trim().is_empty() {
        return Err(field_error(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(field_error(field, format!("longer than {max} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(field_error(field, "must not contain control characters"));
    }
    if value.chars().any(crate::names::is_bidi_control) {
        return Err(field_error(
            field,
            "must not contain bidirectional formatting characters",
        ));
    }
    Ok(())
}

/// Checks the form of an email address: `local@domain`, no spaces or controls; that it belongs to
/// the signer is the verifier's check against the certificate.
pub fn validate_email(field: &str, email: &str) -> Result<(), MetadataError> {
    check_text(field, email, MAX_EMAIL_LEN, true)?;
    let valid = email.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && !domain.is_empty()
            && !domain.contains('@')
            && !email.chars().any(char::is_whitespace)
    });
    if !valid {
        return Err(field_error(
            field,
            format!("not an email address: {email:?}"),
        ));
    }
    Ok(())
}

/// Checks the structure and content of a metadata document, naming the first field at fault. An
/// entry must pass this before it is signed and again when it is uploaded.
pub fn validate(metadata: &ImageMetadata) -> Result<(), MetadataError> {
    validate_unsigned(metadata)?;
    validate_email("endorser.email", &metadata.endorser.email)?;
    check_text(
        "endorser.subject",
        &metadata.endorser.subject,
        MAX_SUBJECT_LEN,
        true,
    )
}

/// [`validate`] less the endorser, which the signer fills in from its certificate: what
/// `stratus-build-metadata` can check. An endorser value already present must still be well
/// formed.
pub fn validate_unsigned(metadata: &ImageMetadata) -> Result<(), MetadataError> {
    let m = metadata;
    if !is_sha256_hex(&m.checksums.sha256) {
        return Err(field_error(
            "checksums.sha256",
            "must be 64 lowercase hex digits",
        ));
    }
    if m.checksums
        .sha1
        .as_deref()
        .is_some_and(|h| !is_lower_hex(h, 40))
    {
        return Err(field_error(
            "checksums.sha1",
            "must be 40 lowercase hex digits",
        ));
    }
    if m.checksums
        .md5
        .as_deref()
        .is_some_and(|h| !is_lower_hex(h, 32))
    {
        return Err(field_error(
            "checksums.md5",
            "must be 32 lowercase hex digits",
        ));
    }
    let expected = identifier_from_sha256(&m.checksums.sha256)?;
    if m.identifier != expected {
        return Err(MetadataError::IdentifierMismatch {
            found: m.identifier.clone(),
            expected,
        });
    }
    if m.size == 0 {
        return Err(field_error("size", "must be positive"));
    }
    check_text("os", &m.os, MAX_SHORT_TEXT_LEN, true)?;
    check_text("os_version", &m.os_version, MAX_SHORT_TEXT_LEN, true)?;
    check_text("arch", &m.arch, MAX_SHORT_TEXT_LEN, true)?;
    if !m
        .arch
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(field_error(
            "arch",
            format!(
                "may contain only letters, digits, '_' and '-': {:?}",
                m.arch
            ),
        ));
    }
    check_text("version", &m.version, MAX_SHORT_TEXT_LEN, true)?;
    check_text("description", &m.description, MAX_DESCRIPTION_LEN, false)?;

    if m.locations.is_empty() {
        return Err(field_error("locations", "at least one location is needed"));
    }
    if m.locations.len() > MAX_LOCATIONS {
        return Err(field_error(
            "locations",
            format!("at most {MAX_LOCATIONS} locations"),
        ));
    }
    for location in &m.locations {
        validate_location("locations", location).map_err(artifact_error)?;
    }

    if !m.endorser.email.is_empty() {
        validate_email("endorser.email", &m.endorser.email)?;
    }
    check_text(
        "endorser.subject",
        &m.endorser.subject,
        MAX_SUBJECT_LEN,
        false,
    )?;

    let created = m.created_ms()?;
    let valid_until = m.valid_until_ms()?;
    if valid_until <= created {
        return Err(field_error(
            "valid_until",
            format!("must be after created ({})", m.created),
        ));
    }
    if let Some(reason) = &m.deprecated {
        check_text("deprecated", reason, MAX_DESCRIPTION_LEN, true)?;
    }

    for (field, artifact) in [("kernel", &m.kernel), ("initrd", &m.initrd)] {
        if let Some(artifact) = artifact {
            validate_artifact(field, artifact).map_err(artifact_error)?;
        }
    }
    if m.kernel.is_none() {
        if m.initrd.is_some() {
            return Err(field_error("initrd", "needs a kernel"));
        }
        if m.cmdline.is_some() {
            return Err(field_error("cmdline", "needs a kernel"));
        }
    }
    if let Some(cmdline) = &m.cmdline {
        check_text("cmdline", cmdline, MAX_CMDLINE_LEN, false)?;
    }
    Ok(())
}

/// `common::artifact` reports `"field: reason"` strings; split them back into a field error.
fn artifact_error(message: String) -> MetadataError {
    match message.split_once(": ") {
        Some((field, reason)) => field_error(field, reason),
        None => field_error("artifact", message),
    }
}

/// What a host needs to boot from the image the entry describes.
pub fn image_spec(metadata: &ImageMetadata) -> ImageSpec {
    ImageSpec {
        name: metadata.identifier.clone(),
        format: metadata.format,
        disk: Artifact {
            locations: metadata.locations.clone(),
            sha256: metadata.checksums.sha256.clone(),
            size: Some(metadata.size),
            compression: metadata.compression,
        },
        kernel: metadata.kernel.clone(),
        initrd: metadata.initrd.clone(),
        cmdline: metadata.cmdline.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// Timestamps
// ---------------------------------------------------------------------------------------------

/// Parses an RFC 3339 UTC timestamp, `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, into milliseconds since
/// the Unix epoch (digits of the fraction past milliseconds are dropped). Offsets other than `Z`
/// are refused so that equal instants are equal strings, and dates before 1970 too.
pub fn parse_timestamp(field: &str, text: &str) -> Result<u64, MetadataError> {
    let bad = || {
        field_error(
            field,
            format!("not an RFC 3339 UTC time like 2024-05-01T10:00:00Z: {text:?}"),
        )
    };
    let b = text.as_bytes();
    if b.len() < 20 || b.len() > 40 || !text.is_ascii() {
        return Err(bad());
    }
    let number = |range: std::ops::Range<usize>| -> Result<u64, MetadataError> {
        let digits = &text[range];
        if digits.bytes().all(|c| c.is_ascii_digit()) {
            digits.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let rest = &text[19..];
    let fraction = match rest.strip_suffix('Z') {
        Some("") => "",
        Some(f) => f
            .strip_prefix('.')
            .filter(|d| !d.is_empty())
            .ok_or_else(bad)?,
        None => return Err(bad()),
    };
    if !fraction.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let millis = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u64, |acc, c| acc * 10 + u64::from(c - b'0'));
    if year < 1970
        || !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(bad());
    }
    let days = days_from_civil(year, month, day);
    Ok(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis)
}

/// Renders epoch milliseconds as the RFC 3339 UTC form metadata uses: whole seconds when there
/// are no milliseconds (`2024-05-01T10:00:00Z`), else with three decimals.
pub fn format_timestamp(epoch_ms: u64) -> String {
    let full = crate::time::rfc3339_ms(epoch_ms);
    if epoch_ms.is_multiple_of(1000) {
        full.replace(".000Z", "Z")
    } else {
        full
    }
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (year >= 1970); Howard Hinnant's algorithm,
/// the inverse of `time::civil_from_days`.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

// ---------------------------------------------------------------------------------------------
// The signed envelope
// ---------------------------------------------------------------------------------------------

/// The signature algorithms an entry may be signed with (JWS `alg` values, RFC 7518).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub enum JwsAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (RSA keys of 2048 bits or more).
    RS256,
    /// ECDSA on P-256 with SHA-256; the signature is `r || s`, 32 bytes each.
    ES256,
    /// ECDSA on P-384 with SHA-384; the signature is `r || s`, 48 bytes each.
    ES384,
}

impl JwsAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
        }
    }
}

/// The JWS protected header. Only these two parameters are accepted, so nothing outside the
/// signature's reach (or unknown to verifiers, like `crit`) can change what an entry means.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct JwsHeader {
    /// The signature algorithm; must fit the signer certificate's key.
    pub alg: JwsAlgorithm,
    /// The certificate chain as standard base64 (with padding, RFC 7515 §4.1.6) DER: the signer's
    /// certificate first, then any intermediates towards a CA the site trusts.
    pub x5c: Vec<String>,
}

impl JwsHeader {
    /// A header for `alg` carrying the DER certificates `chain`, signer first.
    pub fn new<C: AsRef<[u8]>>(alg: JwsAlgorithm, chain: &[C]) -> Self {
        Self {
            alg,
            x5c: chain.iter().map(|der| STANDARD.encode(der)).collect(),
        }
    }

    /// The DER certificates of `x5c`, signer first (1 to [`MAX_CHAIN_LEN`]).
    pub fn certificates(&self) -> Result<Vec<Vec<u8>>, MetadataError> {
        if self.x5c.is_empty() || self.x5c.len() > MAX_CHAIN_LEN {
            return Err(MetadataError::ChainLength {
                count: self.x5c.len(),
            });
        }
        self.x5c
            .iter()
            .enumerate()
            .map(|(i, b64)| {
                STANDARD.decode(b64).map_err(|_| MetadataError::Base64 {
                    part: format!("protected.x5c[{i}]"),
                })
            })
            .collect()
    }
}

/// A signed Marketplace entry: a JWS in the flattened JSON serialization (RFC 7515 §7.2.2) with
/// only the protected header.
///
/// `payload` is the base64url of the exact JSON bytes of an [`ImageMetadata`]; verifiers parse
/// the metadata from those bytes as signed, never from a re-serialisation, so whitespace or key
/// order chosen by the signer cannot matter.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SignedMetadata {
    /// base64url (no padding) of the JSON [`JwsHeader`].
    pub protected: String,
    /// base64url (no padding) of the JSON [`ImageMetadata`].
    pub payload: String,
    /// base64url (no padding) of the signature over `ASCII(protected || '.' || payload)`.
    pub signature: String,
}

/// A header and payload encoded and ready to sign; [`UnsignedEnvelope::signing_input`] gives the
/// bytes to sign, [`UnsignedEnvelope::with_signature`] the finished envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsignedEnvelope {
    pub protected: String,
    pub payload: String,
}

impl UnsignedEnvelope {
    /// Encodes `header` and the compact JSON of `metadata`.
    pub fn new(header: &JwsHeader, metadata: &ImageMetadata) -> Self {
        // Serialising these plain structs cannot fail: string keys, no custom serialisers.
        let header_json = serde_json::to_vec(header).unwrap_or_default();
        let payload_json = serde_json::to_vec(metadata).unwrap_or_default();
        Self {
            protected: URL_SAFE_NO_PAD.encode(header_json),
            payload: URL_SAFE_NO_PAD.encode(payload_json),
        }
    }

    /// The bytes the signature covers.
    pub fn signing_input(&self) -> Vec<u8> {
        signing_input(&self.protected, &self.payload)
    }

    /// The envelope with its signature (raw bytes: PKCS#1 v1.5 for RS256, `r || s` for ES*).
    pub fn with_signature(self, signature: &[u8]) -> SignedMetadata {
        SignedMetadata {
            protected: self.protected,
            payload: self.payload,
            signature: URL_SAFE_NO_PAD.encode(signature),
        }
    }
}

/// JWS signing input: `ASCII(BASE64URL(protected) || '.' || BASE64URL(payload))`.
pub fn signing_input(protected: &str, payload: &str) -> Vec<u8> {
    let mut input = Vec::with_capacity(protected.len() + 1 + payload.len());
    input.extend_from_slice(protected.as_bytes());
    input.push(b'.');
    input.extend_from_slice(payload.as_bytes());
    input
}

/// An envelope split into its decoded parts; the signature is still to be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedEnvelope {
    pub header: JwsHeader,
    /// The DER certificates of `header.x5c`, signer first.
    pub certificates: Vec<Vec<u8>>,
    /// The payload bytes exactly as signed.
    pub payload: Vec<u8>,
    /// The metadata parsed from `payload` (not yet validated).
    pub metadata: ImageMetadata,
    /// The raw signature.
    pub signature: Vec<u8>,
    /// What the signature covers.
    pub signing_input: Vec<u8>,
}

fn decode_url(part: &'static str, text: &str) -> Result<Vec<u8>, MetadataError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| MetadataError::Base64Url { part })
}

impl SignedMetadata {
    /// Parses an envelope from its JSON text, refusing more than [`MAX_ENVELOPE_LEN`] bytes.
    pub fn from_json(json: &[u8]) -> Result<Self, MetadataError> {
        if json.len() > MAX_ENVELOPE_LEN {
            return Err(MetadataError::TooLarge {
                size: json.len(),
                max: MAX_ENVELOPE_LEN,
            });
        }
        serde_json::from_slice(json).map_err(|e| MetadataError::Json {
            part: "signed metadata",
            reason: e.to_string(),
        })
    }

    /// The bytes the signature covers.
    pub fn signing_input(&self) -> Vec<u8> {
        signing_input(&self.protected, &self.payload)
    }

    /// The decoded protected header.
    pub fn header(&self) -> Result<JwsHeader, MetadataError> {
        let bytes = decode_url("protected", &self.protected)?;
        serde_json::from_slice(&bytes).map_err(|e| MetadataError::Json {
            part: "protected",
            reason: e.to_string(),
        })
    }

    /// The payload bytes exactly as signed.
    pub fn payload_bytes(&self) -> Result<Vec<u8>, MetadataError> {
        decode_url("payload", &self.payload)
    }

    /// The metadata parsed from the payload bytes as signed (not yet validated).
    pub fn metadata(&self) -> Result<ImageMetadata, MetadataError> {
        parse_metadata(&self.payload_bytes()?)
    }

    /// Decodes every part; the caller then checks the chain and the signature.
    pub fn open(&self) -> Result<OpenedEnvelope, MetadataError> {
        let total = self.protected.len() + self.payload.len() + self.signature.len();
        if total > MAX_ENVELOPE_LEN {
            return Err(MetadataError::TooLarge {
                size: total,
                max: MAX_ENVELOPE_LEN,
            });
        }
        let header = self.header()?;
        let certificates = header.certificates()?;
        let payload = self.payload_bytes()?;
        let metadata = parse_metadata(&payload)?;
        let signature = decode_url("signature", &self.signature)?;
        Ok(OpenedEnvelope {
            header,
            certificates,
            payload,
            metadata,
            signature,
            signing_input: self.signing_input(),
        })
    }
}

/// Parses a metadata document (JSON), naming the unknown or missing field on error.
pub fn parse_metadata(json: &[u8]) -> Result<ImageMetadata, MetadataError> {
    serde_json::from_slice(json).map_err(|e| MetadataError::Json {
        part: "metadata",
        reason: e.to_string(),
    })
}

// ---------------------------------------------------------------------------------------------
// Certificate names
// ---------------------------------------------------------------------------------------------

/// One attribute of a distinguished name as read from a certificate, for [`format_dn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnAttribute {
    /// The attribute type's OID in dotted form, e.g. `2.5.4.3` for CN.
    pub oid: String,
    /// The value.
    pub value: DnValue,
}

/// An attribute value: a decoded string, or the DER of a value that is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnValue {
    Text(String),
    Der(Vec<u8>),
}

/// The short names RFC 4514 §3 lists, plus the registered descriptors common in grid and email
/// certificates (emailAddress above all: IGTF user certificates carry it).
const DN_NAMES: [(&str, &str); 16] = [
    ("2.5.4.3", "CN"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.6", "C"),
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
    ("1.2.840.113549.1.9.1", "emailAddress"),
    ("2.5.4.5", "serialNumber"),
    ("2.5.4.4", "SN"),
    ("2.5.4.42", "givenName"),
    ("2.5.4.12", "title"),
    ("2.5.4.46", "dnQualifier"),
    ("2.5.4.65", "pseudonym"),
];

/// Renders a distinguished name as an RFC 4514 string: RDNs from the last (most specific) to the
/// first, separated by `,`; attributes of one RDN joined by `+`; known types by short name,
/// others by dotted OID; special characters escaped; non-string values as `#` and hex DER.
///
/// `rdns` is in certificate order (usually `C` first). The signer and the verifier both render
/// the certificate's subject with this function, which is why it lives here.
pub fn format_dn(rdns: &[Vec<DnAttribute>]) -> String {
    rdns.iter()
        .rev()
        .map(|rdn| {
            rdn.iter()
                .map(|attribute| {
                    let name = DN_NAMES
                        .iter()
                        .find(|(oid, _)| *oid == attribute.oid)
                        .map_or(attribute.oid.as_str(), |(_, name)| name);
                    let value = match &attribute.value {
                        DnValue::Text(text) => escape_dn_value(text),
                        DnValue::Der(der) => {
                            let hex = crate::hex::encode(der);
                            format!("#{hex}")
                        }
                    };
                    format!("{name}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// RFC 4514 §2.4 escaping.
fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:02x}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA256: &str = "63579492ebcb6247443c86c2d0892110b9ab7b8aceb30ea2b567b3ce7e0a3f58";

    fn metadata() -> ImageMetadata {
        ImageMetadata {
            identifier: identifier_from_sha256(SHA256).unwrap(),
            kind: ImageKind::Machine,
            format: DiskFormat::Qcow2,
            compression: Compression::Gzip,
            size: 12_582_912,
            checksums: Checksums {
                sha256: SHA256.into(),
                sha1: Some("4cfcd694e6078720bd611b9e16b2d06c4bdac237".into()),
                md5: Some("4f2278435f539b657ca3ce3dd09153d4".into()),
            },
            os: "ttylinux".into(),
            os_version: "9.3".into(),
            arch: "x86_64".into(),
            version: "1.0".into(),
            description: "ttylinux test appliance".into(),
            locations: vec!["https://images.example.org/ttylinux-9.3.qcow2.gz".into()],
            endorser: Endorser {
                email: "jane@example.org".into(),
                subject: "CN=Jane Doe,O=Example,C=FR".into(),
            },
            created: "2024-05-01T10:00:00Z".into(),
            valid_until: "2025-05-01T10:00:00Z".into(),
            deprecated: None,
            kernel: None,
            initrd: None,
            cmdline: None,
        }
    }

    fn artifact() -> Artifact {
        Artifact {
            locations: vec!["http://h/vmlinuz".into()],
            sha256: "ab".repeat(32),
            size: Some(10),
            compression: Compression::None,
        }
    }

    fn field_of(err: MetadataError) -> String {
        match err {
            MetadataError::Field { field, .. } => field,
            MetadataError::IdentifierMismatch { .. } => "identifier".into(),
            other => panic!("not a field error: {other}"),
        }
    }

    #[test]
    fn identifier_is_27_base64url_digits_of_the_first_160_bits() {
        let id = identifier_from_sha256(SHA256).unwrap();
        assert_eq!(id.len(), IDENTIFIER_LEN);
        assert!(is_identifier(&id));
        // base64url of 63 57 94 92 eb cb 62 47 44 3c 86 c2 d0 89 21 10 b9 ab 7b 8a.
        assert_eq!(id, "Y1eUkuvLYkdEPIbC0IkhELmre4o");
        // All ones exercise '-' and '_', the url-safe digits.
        assert_eq!(identifier_from_digest(&[0xff; 32]), "_".repeat(26) + "8");
        assert_eq!(
            identifier_from_digest(&[0xfb; 32]).chars().next(),
            Some('-')
        );
        assert!(identifier_from_sha256("ABC").is_err());
        assert!(identifier_from_sha256(&SHA256.to_uppercase()).is_err());
        assert!(!is_identifier("short"));
        assert!(!is_identifier("Y1eUkuvLYkdEPIbC0IkhELmre4+"));
    }

    #[test]
    fn valid_metadata_passes() {
        assert_eq!(validate(&metadata()), Ok(()));
        let mut m = metadata();
        m.kernel = Some(artifact());
        m.initrd = Some(artifact());
        m.cmdline = Some("console=ttyS0 root=/dev/vda".into());
        m.deprecated = Some("use 9.4".into());
        assert_eq!(validate(&m), Ok(()));
    }

    #[test]
    fn each_bad_field_is_named() {
        type Change = Box<dyn Fn(&mut ImageMetadata)>;
        let cases: Vec<(&str, Change)> = vec![
            ("identifier", Box::new(|m| m.identifier = "x".repeat(27))),
            (
                "checksums.sha256",
                Box::new(|m| m.checksums.sha256 = "zz".into()),
            ),
            (
                "checksums.sha1",
                Box::new(|m| m.checksums.sha1 = Some("ab".into())),
            ),
            (
                "checksums.md5",
                Box::new(|m| m.checksums.md5 = Some("AB".repeat(16))),
            ),
            ("size", Box::new(|m| m.size = 0)),
            ("os", Box::new(|m| m.os = " ".into())),
            ("os_version", Box::new(|m| m.os_version = "x".repeat(65))),
            ("arch", Box::new(|m| m.arch = "x86 64".into())),
            ("version", Box::new(|m| m.version = "1\n2".into())),
            ("description", Box::new(|m| m.description = "a\u{7}".into())),
            ("locations", Box::new(|m| m.locations.clear())),
            (
                "locations",
                Box::new(|m| m.locations = vec!["ftp://h/x".into()]),
            ),
            (
                "locations",
                Box::new(|m| m.locations = vec!["http://h/x".into(); 9]),
            ),
            (
                "endorser.email",
                Box::new(|m| m.endorser.email = "jane".into()),
            ),
            ("endorser.email", Box::new(|m| m.endorser.email.clear())),
            ("endorser.subject", Box::new(|m| m.endorser.subject.clear())),
            ("created", Box::new(|m| m.created = "yesterday".into())),
            (
                "valid_until",
                Box::new(|m| m.valid_until = m.created.clone()),
            ),
            (
                "deprecated",
                Box::new(|m| m.deprecated = Some(String::new())),
            ),
            (
                "kernel.sha256",
                Box::new(|m| {
                    let mut a = artifact();
                    a.sha256 = "x".into();
                    m.kernel = Some(a);
                }),
            ),
            ("initrd", Box::new(|m| m.initrd = Some(artifact()))),
            (
                "cmdline",
                Box::new(|m| m.cmdline = Some("console=ttyS0".into())),
            ),
            (
                "cmdline",
                Box::new(|m| {
                    m.kernel = Some(artifact());
                    m.cmdline = Some("x".repeat(2049));
                }),
            ),
        ];
        for (field, change) in cases {
            let mut m = metadata();
            change(&mut m);
            let err = validate(&m).expect_err(field);
            assert!(
                err.to_string().starts_with(field),
                "{field}: message {err:?}"
            );
            assert_eq!(field_of(err), field);
        }
    }

    #[test]
    fn json_round_trips_and_refuses_unknown_fields() {
        let m = metadata();
        let json = serde_json::to_string_pretty(&m).unwrap();
        assert_eq!(parse_metadata(json.as_bytes()).unwrap(), m);
        assert!(json.contains(r#""kind": "machine""#));
        assert!(json.contains(r#""compression": "gzip""#));
        assert!(!json.contains("deprecated"), "absent options are left out");

        let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
        value["colour"] = "blue".into();
        let err = parse_metadata(value.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("unknown field `colour`"), "{err}");
        value.as_object_mut().unwrap().remove("colour");
        value["checksums"]["sha512"] = "00".into();
        assert!(parse_metadata(value.to_string().as_bytes()).is_err());
    }

    #[test]
    fn unsigned_documents_may_leave_the_endorser_and_compression_out() {
        let mut value = serde_json::to_value(metadata()).unwrap();
        let object = value.as_object_mut().unwrap();
        object.remove("endorser");
        object.remove("compression");
        let m = parse_metadata(value.to_string().as_bytes()).unwrap();
        assert_eq!(m.endorser, Endorser::default());
        assert_eq!(m.compression, Compression::None);
        assert!(field_of(validate(&m).unwrap_err()).starts_with("endorser"));
        assert_eq!(validate_unsigned(&m), Ok(()));
        let mut m = m;
        m.endorser.email = "not-an-email".into();
        assert_eq!(
            field_of(validate_unsigned(&m).unwrap_err()),
            "endorser.email"
        );
    }

    #[test]
    fn timestamps_parse_and_format() {
        assert_eq!(parse_timestamp("t", "1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_timestamp("t", "2011-07-20T16:37:10Z"),
            Ok(1_311_179_830_000)
        );
        assert_eq!(
            parse_timestamp("t", "2000-02-29T00:00:00.1239Z"),
            Ok(951_782_400_123)
        );
        assert_eq!(
            parse_timestamp("t", "2024-12-31T23:59:59.5Z"),
            Ok(1_735_689_599_500)
        );
        for bad in [
            "2011-07-20 16:37:10Z",
            "2011-07-20T16:37:10",
            "2011-07-20T16:37:10+02:00",
            "2011-02-29T00:00:00Z",
            "2011-13-01T00:00:00Z",
            "2011-07-20T24:00:00Z",
            "2011-07-20T16:37:60Z",
            "1969-12-31T23:59:59Z",
            "2011-07-20T16:37:10.Z",
            "2011-07-20T16:37:10.1a2Z",
            "+011-07-20T16:37:10Z",
            "2011-07-2\u{e9}16:37:10Z",
        ] {
            let err = parse_timestamp("created", bad).unwrap_err();
            assert!(err.to_string().starts_with("created: "), "{bad}");
        }
        assert_eq!(format_timestamp(1_311_179_830_000), "2011-07-20T16:37:10Z");
        assert_eq!(
            format_timestamp(951_782_400_123),
            "2000-02-29T00:00:00.123Z"
        );
        for ms in [0, 951_782_400_123, 1_311_179_830_000, 4_102_444_800_000] {
            assert_eq!(parse_timestamp("t", &format_timestamp(ms)), Ok(ms));
        }
    }

    #[test]
    fn image_spec_carries_the_disk_and_boot_artifacts() {
        let mut m = metadata();
        m.kernel = Some(artifact());
        m.cmdline = Some("console=ttyS0".into());
        let spec = image_spec(&m);
        assert_eq!(spec.name, m.identifier);
        assert_eq!(spec.format, DiskFormat::Qcow2);
        assert_eq!(spec.disk.locations, m.locations);
        assert_eq!(spec.disk.sha256, SHA256);
        assert_eq!(spec.disk.size, Some(12_582_912));
        assert_eq!(spec.disk.compression, Compression::Gzip);
        assert_eq!(spec.kernel, Some(artifact()));
        assert_eq!(spec.cmdline.as_deref(), Some("console=ttyS0"));
    }

    #[test]
    fn envelope_round_trips() {
        let m = metadata();
        let header = JwsHeader::new(JwsAlgorithm::ES256, &[b"leaf".to_vec(), b"ca".to_vec()]);
        let unsigned = UnsignedEnvelope::new(&header, &m);
        let input = unsigned.signing_input();
        assert_eq!(
            input,
            format!("{}.{}", unsigned.protected, unsigned.payload).into_bytes()
        );
        let signed = unsigned.with_signature(&[1, 2, 3]);
        assert_eq!(signed.signing_input(), input);

        let json = serde_json::to_vec(&signed).unwrap();
        let parsed = SignedMetadata::from_json(&json).unwrap();
        let opened = parsed.open().unwrap();
        assert_eq!(opened.header, header);
        assert_eq!(opened.certificates, [b"leaf".to_vec(), b"ca".to_vec()]);
        assert_eq!(opened.metadata, m);
        assert_eq!(opened.signature, [1, 2, 3]);
        assert_eq!(opened.signing_input, input);
        assert_eq!(opened.payload, serde_json::to_vec(&m).unwrap());

        // The header is exactly {"alg":..,"x5c":[..]} with standard base64 certificates.
        let header_json = URL_SAFE_NO_PAD.decode(&signed.protected).unwrap();
        assert_eq!(
            String::from_utf8(header_json).unwrap(),
            r#"{"alg":"ES256","x5c":["bGVhZg==","Y2E="]}"#
        );
    }

    #[test]
    fn metadata_is_read_from_the_payload_bytes_as_signed() {
        // A signer may pretty-print: the bytes, not a re-serialisation, are what count.
        let pretty = serde_json::to_vec_pretty(&metadata()).unwrap();
        let signed = SignedMetadata {
            protected: URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","x5c":["AA=="]}"#),
            payload: URL_SAFE_NO_PAD.encode(&pretty),
            signature: URL_SAFE_NO_PAD.encode([9]),
        };
        let opened = signed.open().unwrap();
        assert_eq!(opened.payload, pretty);
        assert_eq!(opened.metadata, metadata());
    }

    #[test]
    fn bad_envelopes_name_the_part() {
        let good =
            UnsignedEnvelope::new(&JwsHeader::new(JwsAlgorithm::RS256, &[b"c"]), &metadata())
                .with_signature(&[1]);
        let mut e = good.clone();
        e.payload.push('=');
        assert_eq!(
            e.open().unwrap_err(),
            MetadataError::Base64Url { part: "payload" }
        );
        let mut e = good.clone();
        e.signature = "***".into();
        assert_eq!(
            e.open().unwrap_err(),
            MetadataError::Base64Url { part: "signature" }
        );
        let mut e = good.clone();
        e.protected = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","x5c":["AA=="]}"#);
        assert!(matches!(
            e.open(),
            Err(MetadataError::Json {
                part: "protected",
                ..
            })
        ));
        e.protected = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","x5c":["AA=="],"crit":["b64"]}"#);
        assert!(matches!(
            e.open(),
            Err(MetadataError::Json {
                part: "protected",
                ..
            })
        ));
        e.protected = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","x5c":[]}"#);
        assert_eq!(
            e.open().unwrap_err(),
            MetadataError::ChainLength { count: 0 }
        );
        e.protected = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","x5c":["%%"]}"#);
        assert_eq!(
            e.open().unwrap_err().to_string(),
            "protected.x5c[0]: not valid base64"
        );
        let mut e = good.clone();
        e.payload = URL_SAFE_NO_PAD.encode(b"{}");
        assert!(matches!(
            e.open(),
            Err(MetadataError::Json {
                part: "metadata",
                ..
            })
        ));

        assert!(matches!(
            SignedMetadata::from_json(
                br#"{"protected":"","payload":"","signature":"","header":{}}"#
            ),
            Err(MetadataError::Json { .. })
        ));
        let huge = vec![b' '; MAX_ENVELOPE_LEN + 1];
        assert!(matches!(
            SignedMetadata::from_json(&huge),
            Err(MetadataError::TooLarge { .. })
        ));
    }

    #[test]
    fn distinguished_names_render_as_rfc_4514() {
        let attr = |oid: &str, value: &str| DnAttribute {
            oid: oid.into(),
            value: DnValue::Text(value.into()),
        };
        let rdns = vec![
            vec![attr("2.5.4.6", "FR")],
            vec![attr("2.5.4.10", "CNRS")],
            vec![attr("2.5.4.11", "LAL")],
            vec![
                attr("2.5.4.3", "Jane Doe"),
                attr("1.2.840.113549.1.9.1", "jane@example.org"),
            ],
        ];
        assert_eq!(
            format_dn(&rdns),
            "CN=Jane Doe+emailAddress=jane@example.org,OU=LAL,O=CNRS,C=FR"
        );
        let tricky = vec![
            vec![attr("2.5.4.3", " #a,b+c\"d\\e;<f> ")],
            vec![DnAttribute {
                oid: "1.2.3.4".into(),
                value: DnValue::Der(vec![0x04, 0x01, 0xab]),
            }],
        ];
        assert_eq!(
            format_dn(&tricky),
            r#"1.2.3.4=#0401ab,CN=\ #a\,b\+c\"d\\e\;\<f\>\ "#
        );
        assert_eq!(format_dn(&[]), "");
    }
}
