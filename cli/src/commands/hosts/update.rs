//! `stratus-update-host`: put a host in maintenance, so that no new instance or disk is placed
//! on it while those it holds stay, or back in service; say what it is for (its roles) and
//! which labels it carries (administrators). What is not given stays as it is.

use std::io::Write;
use std::process::ExitCode;

use clap::{ArgGroup, Args, ValueEnum};
use stratus_common::api::{HostRole, UpdateHost};

use super::parse_label;
use crate::commands::Context;
use crate::output;

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("change").required(true).multiple(true)))]
pub struct UpdateHostArgs {
    /// Name of the host
    #[arg(value_name = "HOST")]
    pub host: String,

    /// Keep new instances and disks off the host (those it holds stay; it is drained, and may
    /// be shut down, once it runs no instance any more)
    #[arg(long, group = "change", conflicts_with = "no_maintenance")]
    pub maintenance: bool,

    /// Why, for the other administrators (with --maintenance)
    // `requires` alone lets `--no-maintenance --reason` through: clap excuses a missing
    // requirement when an argument conflicting with it (`--no-maintenance`) is present.
    #[arg(
        long,
        value_name = "TEXT",
        requires = "maintenance",
        conflicts_with = "no_maintenance"
    )]
    pub reason: Option<String>,

    /// Put the host back in service
    #[arg(long, group = "change")]
    pub no_maintenance: bool,

    /// What the host is for, comma-separated: compute (it runs instances), storage (it stores
    /// persistent disks), or both. What it holds stays
    #[arg(long, value_name = "ROLES", value_delimiter = ',', group = "change")]
    pub roles: Option<Vec<RoleArg>>,

    /// The labels the host carries, comma-separated (e.g. ssd,gpu), replacing its earlier ones;
    /// '' for none. Instances ask for them with stratus-run-instance --label
    #[arg(long, value_name = "LABELS", group = "change", value_parser = parse_labels)]
    pub labels: Option<Labels>,
}

/// `--roles`: the host roles, as users write them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// It runs instances
    Compute,
    /// It stores persistent disks
    Storage,
}

impl From<RoleArg> for HostRole {
    fn from(arg: RoleArg) -> Self {
        match arg {
            RoleArg::Compute => Self::Compute,
            RoleArg::Storage => Self::Storage,
        }
    }
}

/// `--labels`: a host's whole set of labels (empty to clear them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels(pub Vec<String>);

/// Comma-separated labels, each checked; the empty text is no labels.
fn parse_labels(value: &str) -> Result<Labels, String> {
    if value.trim().is_empty() {
        return Ok(Labels(Vec::new()));
    }
    value
        .split(',')
        .map(parse_label)
        .collect::<Result<_, _>>()
        .map(Labels)
}

impl UpdateHostArgs {
    /// The request: only what was asked to change (the group makes `--maintenance` and
    /// `--no-maintenance` exclusive and asks for at least one change).
    pub fn update(&self) -> UpdateHost {
        UpdateHost {
            maintenance: match (self.maintenance, self.no_maintenance) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
            reason: self.reason.clone(),
            roles: self
                .roles
                .as_ref()
                .map(|roles| roles.iter().copied().map(HostRole::from).collect()),
            labels: self.labels.as_ref().map(|labels| labels.0.clone()),
        }
    }
}

pub fn run(ctx: &Context, args: &UpdateHostArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let update = args.update();
    let host = ctx.client()?.update_host(&args.host, &update)?;
    let mut text = String::new();
    if update.maintenance.is_some() {
        text += &output::render_host_updated(&host);
    }
    if update.roles.is_some() || update.labels.is_some() {
        text += &output::render_host_profile(&host);
    }
    out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_split_on_commas_and_nothing_clears_them() {
        assert_eq!(
            parse_labels("ssd, gpu").unwrap(),
            Labels(vec!["ssd".into(), "gpu".into()])
        );
        assert_eq!(parse_labels("").unwrap(), Labels(Vec::new()));
        assert_eq!(parse_labels(" ").unwrap(), Labels(Vec::new()));
        assert_eq!(
            parse_labels("ssd,,gpu").unwrap_err(),
            "label must not be empty"
        );
        assert!(parse_labels("ssd,a b").is_err());
    }

    #[test]
    fn roles_map_to_the_api_ones() {
        assert_eq!(HostRole::from(RoleArg::Compute), HostRole::Compute);
        assert_eq!(HostRole::from(RoleArg::Storage), HostRole::Storage);
        for arg in RoleArg::value_variants() {
            let name = arg.to_possible_value().unwrap().get_name().to_owned();
            assert_eq!(name, HostRole::from(*arg).to_string());
        }
    }
}
