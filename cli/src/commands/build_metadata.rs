//! `stratus-build-metadata`: describe an image file as unsigned Marketplace metadata. The file is
//! read once: its compression, and the decompressed image's size, checksums and disk format, come
//! from its content; the rest from the options. `stratus-sign-metadata` signs the result.

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::Args;
use stratus_common::api::{Artifact, Compression};
use stratus_common::marketplace::{
    format_timestamp, identifier_from_sha256, validate_unsigned, Checksums, Endorser, ImageKind,
    ImageMetadata,
};

use super::Context;
use crate::image_file::{self, Inspection};
use crate::output;

/// Longest validity accepted, in days (a century).
const MAX_VALID_DAYS: u32 = 36_500;
const DAY_MS: u64 = 86_400_000;

#[derive(Debug, Args)]
pub struct BuildMetadataArgs {
    /// The image file as it will be downloaded: qcow2 or raw, plain or gzip, xz or zstd
    /// compressed
    #[arg(value_name = "IMAGE_FILE")]
    pub image: PathBuf,

    /// Operating system, e.g. ttylinux, debian
    #[arg(long, value_name = "OS")]
    pub os: String,

    /// Version of the operating system, e.g. 12
    #[arg(long = "os-version", value_name = "VERSION")]
    pub os_version: String,

    /// The image's own version, e.g. 1.0
    #[arg(long = "version", value_name = "VERSION")]
    pub version: String,

    /// One-line description of the image
    #[arg(long, value_name = "TEXT")]
    pub description: String,

    /// Download URL of the file (http://, https:// or file://); repeat for mirrors
    #[arg(long = "location", value_name = "URL", required = true)]
    pub locations: Vec<String>,

    /// machine (bootable) or disk (data disk)
    #[arg(long, value_name = "KIND", default_value = "machine", value_parser = parse_kind)]
    pub kind: ImageKind,

    /// Machine architecture the image runs on
    #[arg(long, value_name = "ARCH", default_value = "x86_64")]
    pub arch: String,

    /// Days the endorsement stays valid
    #[arg(
        long = "valid-for",
        value_name = "DAYS",
        default_value_t = 365,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_VALID_DAYS))
    )]
    pub valid_for: u32,

    /// Endorser email (one your certificate carries); taken from the certificate when signing
    /// if absent
    #[arg(long, value_name = "EMAIL")]
    pub email: Option<String>,

    /// Direct kernel boot: download URL of the kernel; repeat for mirrors
    #[arg(
        long = "kernel-location",
        value_name = "URL",
        requires = "kernel_sha256"
    )]
    pub kernel_locations: Vec<String>,

    /// Direct kernel boot: SHA-256 of the kernel (lowercase hex)
    #[arg(
        long = "kernel-sha256",
        value_name = "HEX",
        requires = "kernel_locations"
    )]
    pub kernel_sha256: Option<String>,

    /// Direct kernel boot: size of the kernel in bytes
    #[arg(
        long = "kernel-size",
        value_name = "BYTES",
        requires = "kernel_locations"
    )]
    pub kernel_size: Option<u64>,

    /// Direct kernel boot: download URL of the initrd; repeat for mirrors
    #[arg(
        long = "initrd-location",
        value_name = "URL",
        requires_all = ["initrd_sha256", "kernel_locations"]
    )]
    pub initrd_locations: Vec<String>,

    /// Direct kernel boot: SHA-256 of the initrd (lowercase hex)
    #[arg(
        long = "initrd-sha256",
        value_name = "HEX",
        requires = "initrd_locations"
    )]
    pub initrd_sha256: Option<String>,

    /// Direct kernel boot: size of the initrd in bytes
    #[arg(
        long = "initrd-size",
        value_name = "BYTES",
        requires = "initrd_locations"
    )]
    pub initrd_size: Option<u64>,

    /// Direct kernel boot: the kernel command line
    #[arg(long, value_name = "CMDLINE", requires = "kernel_locations")]
    pub cmdline: Option<String>,

    /// Write the metadata to FILE instead of standard output
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub(crate) fn parse_kind(kind: &str) -> Result<ImageKind, String> {
    match kind {
        "machine" => Ok(ImageKind::Machine),
        "disk" => Ok(ImageKind::Disk),
        _ => Err("must be machine or disk".to_string()),
    }
}

pub fn run(
    _ctx: &Context,
    args: &BuildMetadataArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let file = fs::File::open(&args.image)
        .with_context(|| format!("cannot open {}", args.image.display()))?;
    let inspection =
        image_file::inspect(file).with_context(|| format!("{}", args.image.display()))?;
    let metadata = build(args, &inspection, now_ms())?;
    let json = output::render_json(&metadata);
    match &args.output {
        Some(path) => {
            fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
            out.write_all(
                output::render_metadata_written(&metadata.identifier, &path.display().to_string())
                    .as_bytes(),
            )?;
        }
        None => out.write_all(json.as_bytes())?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Milliseconds since the Unix epoch, rounded down to the second (metadata times are seconds).
pub(crate) fn now_ms() -> u64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    secs * 1000
}

/// The unsigned metadata of an inspected image, created at `now_ms`; checked as far as it can be
/// before the signer fills in the endorser.
pub fn build(
    args: &BuildMetadataArgs,
    inspection: &Inspection,
    now_ms: u64,
) -> anyhow::Result<ImageMetadata> {
    let artifact = |locations: &[String], sha256: &Option<String>, size| {
        sha256.as_ref().map(|sha256| Artifact {
            locations: locations.to_vec(),
            sha256: sha256.clone(),
            size,
            compression: Compression::None,
        })
    };
    let metadata = ImageMetadata {
        identifier: identifier_from_sha256(&inspection.sha256)?,
        kind: args.kind,
        format: inspection.format,
        compression: inspection.compression,
        size: inspection.size,
        checksums: Checksums {
            sha256: inspection.sha256.clone(),
            sha1: Some(inspection.sha1.clone()),
            md5: Some(inspection.md5.clone()),
        },
        os: args.os.clone(),
        os_version: args.os_version.clone(),
        arch: args.arch.clone(),
        version: args.version.clone(),
        description: args.description.clone(),
        locations: args.locations.clone(),
        endorser: Endorser {
            email: args.email.clone().unwrap_or_default(),
            subject: String::new(),
        },
        created: format_timestamp(now_ms),
        valid_until: format_timestamp(now_ms + u64::from(args.valid_for) * DAY_MS),
        deprecated: None,
        kernel: artifact(
            &args.kernel_locations,
            &args.kernel_sha256,
            args.kernel_size,
        ),
        initrd: artifact(
            &args.initrd_locations,
            &args.initrd_sha256,
            args.initrd_size,
        ),
        cmdline: args.cmdline.clone(),
    };
    validate_unsigned(&metadata)?;
    Ok(metadata)
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use stratus_common::api::DiskFormat;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BuildMetadataArgs,
    }

    fn args(extra: &[&str]) -> Result<BuildMetadataArgs, clap::Error> {
        let mut argv = vec![
            "build",
            "img.qcow2.gz",
            "--os",
            "ttylinux",
            "--os-version",
            "9.3",
            "--version",
            "1.0",
            "--description",
            "ttylinux test appliance",
            "--location",
            "https://images.example.org/ttylinux.qcow2.gz",
        ];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).map(|c| c.args)
    }

    fn inspection() -> Inspection {
        Inspection {
            compression: Compression::Gzip,
            format: DiskFormat::Qcow2,
            size: 12_582_912,
            sha256: "63579492ebcb6247443c86c2d0892110b9ab7b8aceb30ea2b567b3ce7e0a3f58".into(),
            sha1: "4cfcd694e6078720bd611b9e16b2d06c4bdac237".into(),
            md5: "4f2278435f539b657ca3ce3dd09153d4".into(),
        }
    }

    /// 2011-07-20T16:37:10Z.
    const NOW: u64 = 1_311_179_830_000;

    #[test]
    fn metadata_comes_from_the_file_and_the_options() {
        let m = build(
            &args(&["--email", "jane@example.org"]).unwrap(),
            &inspection(),
            NOW,
        )
        .unwrap();
        assert_eq!(m.identifier, "Y1eUkuvLYkdEPIbC0IkhELmre4o");
        assert_eq!(m.kind, ImageKind::Machine);
        assert_eq!(m.format, DiskFormat::Qcow2);
        assert_eq!(m.compression, Compression::Gzip);
        assert_eq!(m.size, 12_582_912);
        assert_eq!(
            m.checksums.md5.as_deref(),
            Some("4f2278435f539b657ca3ce3dd09153d4")
        );
        assert_eq!(m.arch, "x86_64");
        assert_eq!(m.created, "2011-07-20T16:37:10Z");
        assert_eq!(m.valid_until, "2012-07-19T16:37:10Z");
        assert_eq!(m.endorser.email, "jane@example.org");
        assert_eq!(m.endorser.subject, "");
        assert_eq!(m.kernel, None);
    }

    #[test]
    fn direct_boot_options_make_kernel_and_initrd() {
        let sha = "ab".repeat(32);
        let a = args(&[
            "--kind",
            "machine",
            "--valid-for",
            "30",
            "--kernel-location",
            "http://h/vmlinuz",
            "--kernel-sha256",
            &sha,
            "--initrd-location",
            "http://h/initrd",
            "--initrd-sha256",
            &sha,
            "--cmdline",
            "console=ttyS0",
        ])
        .unwrap();
        let m = build(&a, &inspection(), NOW).unwrap();
        assert_eq!(m.kernel.unwrap().locations, ["http://h/vmlinuz"]);
        assert_eq!(m.initrd.unwrap().sha256, sha);
        assert_eq!(m.cmdline.as_deref(), Some("console=ttyS0"));
        assert_eq!(m.valid_until, "2011-08-19T16:37:10Z");
    }

    #[test]
    fn bad_options_are_refused() {
        assert!(args(&["--kind", "floppy"]).is_err());
        assert!(args(&["--valid-for", "0"]).is_err());
        assert!(
            args(&["--kernel-location", "http://h/k"]).is_err(),
            "needs the sha256"
        );
        assert!(args(&["--initrd-location", "http://h/i", "--initrd-sha256", "x"]).is_err());
        assert!(args(&["--cmdline", "quiet"]).is_err(), "needs a kernel");

        let err = build(
            &args(&["--location", "ftp://h/x"]).unwrap(),
            &inspection(),
            NOW,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "locations: locations must be http://, https:// or file:// URLs: \"ftp://h/x\""
        );
        let err = build(&args(&["--email", "jane"]).unwrap(), &inspection(), NOW).unwrap_err();
        assert!(err.to_string().starts_with("endorser.email: "), "{err}");
        let err = build(&args(&["--arch", "x86 64"]).unwrap(), &inspection(), NOW).unwrap_err();
        assert!(err.to_string().starts_with("arch: "), "{err}");
    }
}
