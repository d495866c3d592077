//! `stratus-register-endorser` (administrators): trust one endorser certificate directly, so
//! that entries it signs are accepted even if no trusted CA issued it (self-signed ones too).
//! Only the certificate is sent: a private key in the same file stays here.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use stratus_common::api::RegisterEndorser;

use super::Context;
use crate::output;

/// Largest certificate file read.
const MAX_PEM_LEN: u64 = 1024 * 1024;
const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

#[derive(Debug, Args)]
pub struct RegisterEndorserArgs {
    /// The endorser's certificate (PEM)
    #[arg(value_name = "CERT.pem")]
    pub certificate: PathBuf,

    /// Print the registered endorser as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(
    ctx: &Context,
    args: &RegisterEndorserArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let path = &args.certificate;
    let mut text = String::new();
    File::open(path)
        .and_then(|f| f.take(MAX_PEM_LEN).read_to_string(&mut text))
        .with_context(|| format!("cannot read {}", path.display()))?;
    let certificate = certificate_pem(&text).with_context(|| format!("{}", path.display()))?;
    let endorser = ctx
        .marketplace_client()?
        .register_endorser(&RegisterEndorser { certificate })?;
    let text = if args.json {
        output::render_json(&endorser)
    } else {
        output::render_endorser_registered(&endorser)
    };
    out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// The one PEM certificate block of `text`, alone (nothing else of the file is sent).
fn certificate_pem(text: &str) -> anyhow::Result<String> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let Some(end) = rest[start..].find(END) else {
            anyhow::bail!("a PEM certificate has no {END} line");
        };
        let end = start + end + END.len();
        blocks.push(&rest[start..end]);
        rest = &rest[end..];
    }
    let block = match blocks.as_slice() {
        [] => anyhow::bail!("no PEM certificate in it ({BEGIN} ... {END})"),
        [one] => *one,
        more => anyhow::bail!(
            "{} certificates in it: register one endorser certificate at a time",
            more.len()
        ),
    };
    CertificateDer::from_pem_slice(block.as_bytes())
        .map_err(|e| anyhow::anyhow!("not a valid PEM certificate: {e}"))?;
    Ok(format!("{block}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A syntactically valid PEM block (the server checks the certificate itself).
    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBAA==\n-----END CERTIFICATE-----";

    #[test]
    fn only_the_certificate_is_kept() {
        let file = format!(
            "Bag Attributes\n{CERT}\n-----BEGIN PRIVATE KEY-----\nMIIBAA==\n\
             -----END PRIVATE KEY-----\n"
        );
        assert_eq!(certificate_pem(&file).unwrap(), format!("{CERT}\n"));
        assert_eq!(certificate_pem(CERT).unwrap(), format!("{CERT}\n"));
    }

    #[test]
    fn none_several_or_broken_certificates_are_refused() {
        let err = certificate_pem("-----BEGIN PRIVATE KEY-----\nMIIBAA==\n").unwrap_err();
        assert!(err.to_string().starts_with("no PEM certificate"), "{err}");
        let err = certificate_pem(&format!("{CERT}\n{CERT}\n")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "2 certificates in it: register one endorser certificate at a time"
        );
        assert!(certificate_pem("-----BEGIN CERTIFICATE-----\nMIIBAA==\n").is_err());
        assert!(certificate_pem(
            "-----BEGIN CERTIFICATE-----\n%%% not base64\n-----END CERTIFICATE-----"
        )
        .is_err());
    }
}
