//! `stratus-upload-metadata`: upload entries signed by `stratus-sign-metadata` to the
//! Marketplace, which checks them (structure, trust in the signer, signature, dates) and appends
//! them to its registry. Each file is its own upload: a refused one is reported and the others
//! go on.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use stratus_common::marketplace::{parse_metadata, SignedMetadata, MAX_ENVELOPE_LEN};

use super::Context;
use crate::output;

#[derive(Debug, Args)]
pub struct UploadMetadataArgs {
    /// Signed metadata files, as stratus-sign-metadata writes them
    #[arg(value_name = "SIGNED_METADATA", required = true)]
    pub files: Vec<PathBuf>,

    /// Print the accepted entries as a JSON array
    #[arg(long)]
    pub json: bool,
}

pub fn run(
    ctx: &Context,
    args: &UploadMetadataArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let client = ctx.marketplace_client()?;
    let mut status = ExitCode::SUCCESS;
    let mut accepted = Vec::new();
    for path in &args.files {
        let failure = match read_envelope(path) {
            Err(e) => format!("{e:#}"),
            Ok(envelope) => match client.upload_entry(&envelope) {
                Ok(entry) => {
                    if !args.json {
                        out.write_all(output::render_uploaded(&entry).as_bytes())?;
                        out.flush()?;
                    }
                    accepted.push(entry);
                    continue;
                }
                // The endpoint itself failed: the next files would fail the same way. What
                // was accepted so far is still said.
                Err(e) if e.is_fatal() => {
                    if args.json {
                        out.write_all(output::render_json(&accepted).as_bytes())?;
                    }
                    return Err(e.into());
                }
                Err(e) => e.to_string(),
            },
        };
        let message = format!("{}: {failure}", path.display());
        err.write_all(output::render_error(&message).as_bytes())?;
        status = ExitCode::FAILURE;
    }
    if args.json {
        out.write_all(output::render_json(&accepted).as_bytes())?;
    }
    Ok(status)
}

/// Reads a signed envelope, refusing files too large to be one (an image given by mistake is not
/// read whole) and telling unsigned metadata apart.
fn read_envelope(path: &Path) -> anyhow::Result<SignedMetadata> {
    let file = File::open(path).context("cannot read it")?;
    let mut bytes = Vec::new();
    file.take(MAX_ENVELOPE_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .context("cannot read it")?;
    envelope_from_bytes(&bytes)
}

/// The envelope in a file's bytes, or why they are not one.
fn envelope_from_bytes(bytes: &[u8]) -> anyhow::Result<SignedMetadata> {
    if bytes.len() > MAX_ENVELOPE_LEN {
        anyhow::bail!(
            "more than {MAX_ENVELOPE_LEN} bytes: not signed metadata (give the file \
             stratus-sign-metadata wrote, not the image)"
        );
    }
    match SignedMetadata::from_json(bytes) {
        Ok(envelope) => Ok(envelope),
        Err(_) if parse_metadata(bytes).is_ok() => anyhow::bail!(
            "unsigned metadata: sign it with stratus-sign-metadata first, then upload what it \
             writes"
        ),
        Err(e) => Err(anyhow::Error::new(e).context("not signed metadata")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_are_recognised_and_other_files_explained() {
        let envelope =
            envelope_from_bytes(br#"{"protected":"a","payload":"b","signature":"c"}"#).unwrap();
        assert_eq!(envelope.payload, "b");

        let unsigned = br#"{"identifier":"Y1eUkuvLYkdEPIbC0IkhELmre4o","kind":"machine",
            "format":"raw","size":1,"checksums":{"sha256":"00"},"os":"x","os_version":"1",
            "arch":"x86_64","version":"1","description":"","locations":[],
            "created":"2024-01-01T00:00:00Z","valid_until":"2025-01-01T00:00:00Z"}"#;
        let err = envelope_from_bytes(unsigned).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsigned metadata: sign it with stratus-sign-metadata first, then upload what it \
             writes"
        );

        let err = envelope_from_bytes(b"QFI\xfb\x00\x00").unwrap_err();
        assert!(
            format!("{err:#}").starts_with("not signed metadata: signed metadata: "),
            "{err:#}"
        );
        let err = envelope_from_bytes(&vec![b' '; MAX_ENVELOPE_LEN + 1]).unwrap_err();
        assert!(
            err.to_string().starts_with("more than 65536 bytes"),
            "{err}"
        );
    }
}
