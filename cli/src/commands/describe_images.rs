//! `stratus-describe-images`: the images an instance can start from: Marketplace entries (by
//! default the latest per image and endorser, newest first, a page at a time) matching the
//! filters, and the images the site's administrators registered.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use stratus_common::api::Image;
use stratus_common::marketplace::{parse_timestamp, ImageKind};

use super::build_metadata::parse_kind;
use super::Context;
use crate::client::ImageQuery;
use crate::output;

/// Most entries the Marketplace gives in one page.
const MAX_LIMIT: u64 = 1000;

#[derive(Debug, Args)]
pub struct DescribeImagesArgs {
    /// Only this image (Marketplace identifier), or the site image of this name
    #[arg(long, value_name = "ID")]
    pub identifier: Option<String>,

    /// Only Marketplace entries of this operating system, e.g. ttylinux
    #[arg(long, value_name = "OS")]
    pub os: Option<String>,

    /// Only Marketplace entries by this endorser
    #[arg(long, value_name = "EMAIL")]
    pub endorser: Option<String>,

    /// Only machine (bootable) or only disk (data disk) images
    #[arg(long, value_name = "KIND", value_parser = parse_kind)]
    pub kind: Option<ImageKind>,

    /// Only entries created at or after this time (RFC 3339 UTC, e.g. 2024-05-01T10:00:00Z)
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub from: Option<String>,

    /// Only entries created at or before this time (RFC 3339 UTC)
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub to: Option<String>,

    /// Every entry ever uploaded, not only the latest per image and endorser
    #[arg(long)]
    pub history: bool,

    /// Marketplace entries per page (the Marketplace's default is 100)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_LIMIT))]
    pub limit: Option<u64>,

    /// Marketplace entries to skip, for the next pages
    #[arg(long, value_name = "N")]
    pub offset: Option<u64>,

    /// Print the answer as JSON ({"site": [...], "marketplace": {"items": [...], ...}})
    #[arg(long)]
    pub json: bool,
}

/// An RFC 3339 UTC time, as the Marketplace takes it.
fn parse_time(text: &str) -> Result<String, String> {
    parse_timestamp("time", text)
        .map(|_| text.to_string())
        .map_err(|_| "not an RFC 3339 UTC time like 2024-05-01T10:00:00Z".to_string())
}

impl DescribeImagesArgs {
    /// The query these options make; refuses a date range that cannot match.
    pub fn query(&self) -> anyhow::Result<ImageQuery> {
        if let (Some(from), Some(to)) = (&self.from, &self.to) {
            let ms = |t: &str| parse_timestamp("time", t).unwrap_or(0);
            if ms(from) > ms(to) {
                anyhow::bail!("--from {from} is after --to {to}: no entry can match");
            }
        }
        Ok(ImageQuery {
            identifier: self.identifier.clone(),
            os: self.os.clone(),
            endorser: self.endorser.clone(),
            kind: self.kind,
            from: self.from.clone(),
            to: self.to.clone(),
            history: self.history,
            limit: self.limit,
            offset: self.offset,
        })
    }

    /// The site images to show with the Marketplace page: the API gives all of them whatever the
    /// query, so they are filtered here. They have no OS, endorser, kind or creation range in the
    /// Marketplace's sense, so any of those filters leaves them out; `--identifier` keeps the one
    /// of that name; later pages leave them out (the first page showed them).
    pub fn site_images(&self, mut site: Vec<Image>) -> Vec<Image> {
        let marketplace_only = self.os.is_some()
            || self.endorser.is_some()
            || self.kind.is_some()
            || self.from.is_some()
            || self.to.is_some()
            || self.offset.unwrap_or(0) > 0;
        if marketplace_only {
            return Vec::new();
        }
        if let Some(name) = &self.identifier {
            site.retain(|image| &image.name == name);
        }
        site.sort_by(|a, b| a.name.cmp(&b.name));
        site
    }
}

pub fn run(
    ctx: &Context,
    args: &DescribeImagesArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let query = args.query()?;
    let client = ctx.marketplace_client()?;
    let mut list = client.list_images(&query)?;
    list.site = args.site_images(std::mem::take(&mut list.site));
    let text = if args.json {
        output::render_json(&list)
    } else {
        output::render_image_list(&list)
    };
    out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use stratus_common::api::{Artifact, Compression, DiskFormat};

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: DescribeImagesArgs,
    }

    fn args(argv: &[&str]) -> Result<DescribeImagesArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("describe").chain(argv.iter().copied())).map(|c| c.args)
    }

    fn image(name: &str) -> Image {
        Image {
            name: name.into(),
            format: DiskFormat::Qcow2,
            disk: Artifact {
                locations: vec!["http://h/x".into()],
                sha256: "ab".repeat(32),
                size: None,
                compression: Compression::None,
            },
            kernel: None,
            initrd: None,
            cmdline: None,
            owner: "admin".into(),
            created: "2024-05-01T10:00:00.000Z".into(),
        }
    }

    fn names(images: &[Image]) -> Vec<&str> {
        images.iter().map(|i| i.name.as_str()).collect()
    }

    #[test]
    fn options_make_the_query() {
        let a = args(&[
            "--os",
            "ttylinux",
            "--endorser",
            "jane@example.org",
            "--kind",
            "disk",
            "--from",
            "2024-01-01T00:00:00Z",
            "--to",
            "2024-12-31T23:59:59.5Z",
            "--history",
            "--limit",
            "10",
            "--offset",
            "20",
        ])
        .unwrap();
        assert_eq!(
            a.query().unwrap(),
            ImageQuery {
                identifier: None,
                os: Some("ttylinux".into()),
                endorser: Some("jane@example.org".into()),
                kind: Some(ImageKind::Disk),
                from: Some("2024-01-01T00:00:00Z".into()),
                to: Some("2024-12-31T23:59:59.5Z".into()),
                history: true,
                limit: Some(10),
                offset: Some(20),
            }
        );
        assert_eq!(args(&[]).unwrap().query().unwrap(), ImageQuery::default());
    }

    #[test]
    fn bad_options_are_refused() {
        assert!(args(&["--kind", "floppy"]).is_err());
        assert!(args(&["--from", "2024-01-01"]).is_err());
        assert!(args(&["--to", "2024-01-01T00:00:00+02:00"]).is_err());
        assert!(args(&["--limit", "0"]).is_err());
        assert!(args(&["--limit", "1001"]).is_err());
        assert!(args(&["--offset", "-1"]).is_err());
        let a = args(&[
            "--from",
            "2024-02-01T00:00:00Z",
            "--to",
            "2024-01-01T00:00:00Z",
        ])
        .unwrap();
        assert_eq!(
            a.query().unwrap_err().to_string(),
            "--from 2024-02-01T00:00:00Z is after --to 2024-01-01T00:00:00Z: no entry can match"
        );
    }

    #[test]
    fn site_images_follow_the_filters() {
        let site = || vec![image("ubuntu"), image("debian"), image("ttylinux")];
        assert_eq!(
            names(&args(&[]).unwrap().site_images(site())),
            ["debian", "ttylinux", "ubuntu"]
        );
        assert_eq!(
            names(&args(&["--history"]).unwrap().site_images(site())),
            ["debian", "ttylinux", "ubuntu"]
        );
        assert_eq!(
            names(
                &args(&["--identifier", "debian"])
                    .unwrap()
                    .site_images(site())
            ),
            ["debian"]
        );
        for filter in [
            &["--os", "debian"][..],
            &["--endorser", "jane@example.org"],
            &["--kind", "machine"],
            &["--from", "2024-01-01T00:00:00Z"],
            &["--to", "2024-01-01T00:00:00Z"],
            &["--offset", "100"],
        ] {
            assert!(
                args(filter).unwrap().site_images(site()).is_empty(),
                "{filter:?}"
            );
        }
        assert!(!args(&["--offset", "0"])
            .unwrap()
            .site_images(site())
            .is_empty());
    }
}
