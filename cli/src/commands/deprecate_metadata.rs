//! `stratus-deprecate-metadata`: withdraw your endorsement of an image. Entries are never deleted
//! or changed; deprecating is uploading a newer entry, the same statement with `deprecated` set,
//! signed with your certificate. So the command fetches your latest entry for the image (by the
//! email addresses your certificate carries), copies it with the reason and a new `created`,
//! signs it as `stratus-sign-metadata` does, and uploads it.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use stratus_common::api::MarketplaceEntry;
use stratus_common::marketplace::{
    format_timestamp, parse_timestamp, ImageMetadata, MAX_DESCRIPTION_LEN,
};

use super::build_metadata::now_ms;
use super::sign_metadata::{load_signer, sign, PrepareError};
use super::{marketplace_client, Context};
use crate::client::{ClientError, ImageQuery};
use crate::output;

#[derive(Debug, Args)]
pub struct DeprecateMetadataArgs {
    /// The Marketplace identifier of the image
    #[arg(value_name = "IDENTIFIER")]
    pub identifier: String,

    /// Why the image is withdrawn, e.g. "security hole, use 9.4"
    #[arg(long, value_name = "TEXT", value_parser = parse_reason)]
    pub reason: String,
}

/// A reason the Marketplace accepts: one line of text, not blank, at most 1024 bytes.
fn parse_reason(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("give the reason the image is withdrawn".into());
    }
    if text.len() > MAX_DESCRIPTION_LEN {
        return Err(format!("at most {MAX_DESCRIPTION_LEN} bytes"));
    }
    if text.chars().any(char::is_control) {
        return Err("one line of text, without control characters".into());
    }
    Ok(text.to_string())
}

pub fn run(
    ctx: &Context,
    args: &DeprecateMetadataArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let identifier = &args.identifier;
    if !stratus_common::marketplace::is_identifier(identifier) {
        return Err(ClientError::NotAnIdentifier {
            identifier: identifier.clone(),
        }
        .into());
    }
    let resolved = ctx.resolve()?;
    let signer = load_signer(&resolved)?;
    let certificate = signer.certificate();
    if certificate.emails.is_empty() {
        return Err(PrepareError::NoEmail {
            subject: certificate.subject.clone(),
        }
        .into());
    }
    let client = marketplace_client(&resolved)?;

    // Your latest entry under each address of your certificate (usually one).
    let mut latest: Vec<MarketplaceEntry> = Vec::new();
    for email in &certificate.emails {
        let query = ImageQuery {
            identifier: Some(identifier.clone()),
            endorser: Some(email.clone()),
            limit: Some(1),
            ..ImageQuery::default()
        };
        let page = client.list_images(&query)?.marketplace;
        for entry in page.items {
            let yours = entry.identifier == *identifier
                && entry.endorser_email.eq_ignore_ascii_case(email)
                && !latest.iter().any(|e| e.seq == entry.seq);
            if yours {
                latest.push(entry);
            }
        }
    }
    if latest.is_empty() {
        anyhow::bail!(
            "no Marketplace entry for image {identifier} endorsed by {}: only an image's \
             endorsers can deprecate their entries",
            certificate.emails.join(" or ")
        );
    }

    for entry in &latest {
        let now = now_ms();
        if let Some(previous) = &entry.metadata.deprecated {
            let note = format!(
                "image {identifier} is already deprecated by {} (entry {}): {previous}",
                entry.endorser_email, entry.seq
            );
            err.write_all(output::render_warning(&note).as_bytes())?;
        }
        let mut metadata = deprecation(entry, &args.reason, now)?;
        let envelope = sign(&signer, &mut metadata, now, err)
            .with_context(|| format!("image {identifier}: not deprecated"))?;
        let uploaded = client.upload_entry(&envelope)?;
        out.write_all(output::render_deprecated(&uploaded).as_bytes())?;
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The metadata deprecating `entry`: the same statement with `deprecated` set, created now. The
/// endorser's newest `created` is the one that counts and an equal one is a duplicate, so if the
/// entry claims a later time (a clock ahead of ours), one second after it.
pub fn deprecation(
    entry: &MarketplaceEntry,
    reason: &str,
    now_ms: u64,
) -> anyhow::Result<ImageMetadata> {
    let mut metadata = entry.metadata.clone();
    if metadata
        .valid_until_ms()
        .is_ok_and(|valid_until| valid_until <= now_ms)
    {
        anyhow::bail!(
            "entry {} for image {} expired on {}: the site policy refuses it already, and \
             the Marketplace accepts nothing past its valid_until",
            entry.seq,
            entry.identifier,
            metadata.valid_until
        );
    }
    let after_previous = parse_timestamp("created", &metadata.created)
        .map_or(0, |created| created.saturating_add(1000));
    metadata.created = format_timestamp(now_ms.max(after_previous));
    metadata.deprecated = Some(reason.to_string());
    Ok(metadata)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::commands::sign_metadata::tests::metadata;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: DeprecateMetadataArgs,
    }

    fn args(argv: &[&str]) -> Result<DeprecateMetadataArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("deprecate").chain(argv.iter().copied()))
            .map(|c| c.args)
    }

    /// 2025-01-01T00:00:00Z.
    const NOW: u64 = 1_735_689_600_000;

    fn entry() -> MarketplaceEntry {
        let mut metadata = metadata("jane@example.org");
        metadata.description = "d".into();
        metadata.endorser.subject = "CN=Jane Doe".into();
        MarketplaceEntry {
            seq: 7,
            identifier: metadata.identifier.clone(),
            endorser_email: "jane@example.org".into(),
            endorser_subject: "CN=Jane Doe".into(),
            cert_sha256: "cd".repeat(32),
            trusted_by: "ca".into(),
            uploaded: "2024-12-01T00:00:01.000Z".into(),
            metadata,
        }
    }

    #[test]
    fn deprecation_copies_the_entry_with_the_reason_and_a_new_time() {
        let e = entry();
        let m = deprecation(&e, "security hole, use 9.4", NOW).unwrap();
        assert_eq!(m.deprecated.as_deref(), Some("security hole, use 9.4"));
        assert_eq!(m.created, "2025-01-01T00:00:00Z");
        let mut same = m.clone();
        same.deprecated = None;
        same.created = e.metadata.created.clone();
        assert_eq!(same, e.metadata, "nothing else changes");
    }

    #[test]
    fn deprecation_comes_after_an_entry_from_the_future() {
        let mut e = entry();
        e.metadata.created = "2025-01-01T00:03:00.250Z".into();
        let m = deprecation(&e, "r", NOW).unwrap();
        assert_eq!(m.created, "2025-01-01T00:03:01.250Z");
        e.metadata.created = "2025-01-01T00:00:00Z".into();
        assert_eq!(
            deprecation(&e, "r", NOW).unwrap().created,
            "2025-01-01T00:00:01Z"
        );
    }

    #[test]
    fn an_expired_entry_cannot_be_deprecated() {
        let mut e = entry();
        e.metadata.valid_until = "2024-12-31T00:00:00Z".into();
        let err = deprecation(&e, "r", NOW).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("entry 7 for image q6urq6urq6urq6urq6urq6urq6s expired on"),
            "{err}"
        );
    }

    #[test]
    fn the_reason_is_required_and_one_line() {
        let id = "q6urq6urq6urq6urq6urq6urq6s";
        let a = args(&[id, "--reason", "use 9.4"]).unwrap();
        assert_eq!((a.identifier.as_str(), a.reason.as_str()), (id, "use 9.4"));
        assert!(args(&[id]).is_err());
        assert!(args(&[id, "--reason", " "]).is_err());
        assert!(args(&[id, "--reason", "a\nb"]).is_err());
        assert!(args(&[id, "--reason", &"x".repeat(1025)]).is_err());
    }
}
