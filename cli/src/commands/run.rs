//! `stratus-run-instance`: start one or more instances of an image, or list the instance types.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use clap::Args;
use stratus_common::api::{CreateInstance, RestartPolicy};
use stratus_common::names::validate_name;

use super::Context;
use crate::config::ResolvedConfig;
use crate::output;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The image to run, by name
    #[arg(value_name = "IMAGE", required_unless_present = "list_types")]
    pub image: Option<String>,

    /// Instance type (size), e.g. m1.small; the site default when absent
    #[arg(short = 't', long = "type", value_name = "TYPE")]
    pub instance_type: Option<String>,

    /// Display name of the instance(s) (letters, digits, '.', '_', '-'); vm-<ID> when absent
    #[arg(long, value_name = "NAME", value_parser = parse_name)]
    pub name: Option<String>,

    /// Number of instances to start
    #[arg(
        short = 'n',
        long = "number",
        value_name = "N",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub number: u32,

    /// Site network to attach the instance(s) to, e.g. public or private; the site's public
    /// network when absent (if it has one)
    #[arg(long, value_name = "NAME", value_parser = parse_name)]
    pub network: Option<String>,

    /// User data for the guest (e.g. a cloud-init script): the content of FILE when the value
    /// names an existing file, else the value itself
    #[arg(long = "user-data", value_name = "FILE-OR-TEXT")]
    pub user_data: Option<String>,

    /// Persistent disk (UUID) to attach to the instance at start, as /dev/vdb, /dev/vdc, ... in
    /// the order given; repeat for more disks
    #[arg(
        long = "persistent-disk",
        value_name = "UUID",
        value_parser = super::volumes::parse_disk_uuid
    )]
    pub persistent_disks: Vec<String>,

    /// Server group of yours to start the instance(s) in (stratus-create-group): its policy
    /// places them on one host (affinity) or each on a host of its own (anti-affinity)
    #[arg(long, value_name = "NAME", value_parser = super::groups::parse_group_name)]
    pub group: Option<String>,

    /// Label the host must carry (e.g. ssd), as administrators set them with
    /// stratus-update-host --labels; repeat it, or separate labels with commas, for several
    #[arg(
        long = "label",
        value_name = "LABEL",
        value_delimiter = ',',
        value_parser = super::hosts::parse_label
    )]
    pub labels: Vec<String>,

    /// Start it again on another host, from its image, if its host fails and an
    /// administrator fences it (what its disk held is lost then; without this flag it waits
    /// for its host to come back)
    #[arg(long)]
    pub evacuate: bool,

    /// What its host does when the guest stops by itself (its emulator crashed, or it powered
    /// itself off): never (report it stopped) or always (start it again with its data, also
    /// while the controller is out of reach)
    #[arg(long, value_name = "POLICY", default_value = "never", value_parser = parse_restart)]
    pub restart: RestartPolicy,

    /// List the instance types instead of starting anything
    #[arg(short = 'l', long = "list-types", conflicts_with = "quiet")]
    pub list_types: bool,

    /// Print the created instances (or the types) as JSON
    #[arg(long, conflicts_with = "quiet")]
    pub json: bool,

    /// Print only the IDs of the created instances, one per line
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

fn parse_name(name: &str) -> Result<String, String> {
    validate_name("name", name)
        .map(|()| name.to_string())
        .map_err(|e| e.to_string())
}

/// The SSH public key to send: the content of the configured key file (`--key`,
/// `STRATUSLAB_KEY`, `user_public_key_file`, else `~/.ssh/id_rsa.pub`). Only the built-in
/// default may be missing (then no key is sent); a file the user named must be readable.
pub fn public_key(resolved: &ResolvedConfig) -> anyhow::Result<Option<String>> {
    let Some(path) = &resolved.user_public_key_file else {
        return Ok(None);
    };
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_owned())),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound && resolved.user_public_key_is_default =>
        {
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| format!("SSH public key file {}", path.display())),
    }
}

/// `--user-data`: a file's content when the value names an existing file, else the value.
pub fn user_data(value: &str) -> anyhow::Result<String> {
    let path = Path::new(value);
    if path.is_file() {
        std::fs::read_to_string(path)
            .with_context(|| format!("user data file {value} (must be UTF-8 text)"))
    } else {
        Ok(value.to_owned())
    }
}

pub fn run(ctx: &Context, args: &RunArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;

    if args.list_types {
        let types = client.list_types()?;
        let text = if args.json {
            output::render_json(&types)
        } else {
            output::render_types_table(&types)
        };
        out.write_all(text.as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }

    let Some(image) = args.image.clone() else {
        anyhow::bail!("no image given: stratus-run-instance IMAGE");
    };
    let request = CreateInstance {
        image,
        instance_type: args.instance_type.clone(),
        name: args.name.clone(),
        network: args.network.clone(),
        ssh_key: public_key(&ctx.resolve()?)?,
        user_data: args.user_data.as_deref().map(user_data).transpose()?,
        persistent_disks: args.persistent_disks.clone(),
        group: args.group.clone(),
        labels: args.labels.clone(),
        evacuate: args.evacuate,
        restart: args.restart,
    };

    if args.json {
        // All or what was made before a failure, so a script can clean up.
        let mut created = Vec::new();
        let mut failure = None;
        for _ in 0..args.number {
            match client.create_instance(&request) {
                Ok(instance) => created.push(instance),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if failure.is_none() || !created.is_empty() {
            out.write_all(output::render_json(&created).as_bytes())?;
        }
        return match failure {
            Some(e) => Err(e.into()),
            None => Ok(ExitCode::SUCCESS),
        };
    }

    // Lines go out as each instance is made, so a failure half-way leaves the IDs on screen.
    if !args.quiet {
        out.write_all(output::render_run_header(args.number).as_bytes())?;
        out.flush()?;
    }
    for index in 1..=args.number as usize {
        let instance = client.create_instance(&request)?;
        let line = if args.quiet {
            output::render_id(&instance)
        } else {
            output::render_run_machine(index, &instance)
        };
        out.write_all(line.as_bytes())?;
        out.flush()?;
    }
    if !args.quiet {
        out.write_all(output::render_run_done().as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn resolved(key: Option<PathBuf>, is_default: bool) -> ResolvedConfig {
        ResolvedConfig {
            config_path: PathBuf::from("/nonexistent/stratuslab-user.cfg"),
            section: None,
            endpoint: None,
            marketplace_endpoint: None,
            pdisk_endpoint: None,
            username: None,
            password: None,
            pdisk_username: None,
            pdisk_password: None,
            user_public_key_file: key,
            user_public_key_is_default: is_default,
            pem_certificate: None,
            pem_key: None,
            p12_certificate: None,
            p12_password: None,
            ca_certificate: None,
        }
    }

    #[test]
    fn the_key_file_is_read_and_only_the_default_may_be_missing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("id_ed25519.pub");
        std::fs::write(&file, "ssh-ed25519 AAAAC3Nz me@host\n").unwrap();
        assert_eq!(
            public_key(&resolved(Some(file), false)).unwrap().as_deref(),
            Some("ssh-ed25519 AAAAC3Nz me@host")
        );
        let missing = dir.path().join("id_rsa.pub");
        assert_eq!(
            public_key(&resolved(Some(missing.clone()), true)).unwrap(),
            None
        );
        let err = public_key(&resolved(Some(missing.clone()), false)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("SSH public key file {}", missing.display())
        );
        assert_eq!(public_key(&resolved(None, true)).unwrap(), None);
    }

    #[test]
    fn user_data_is_a_file_when_one_is_named_else_the_text() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("init.sh");
        std::fs::write(&file, "#!/bin/sh\necho hi\n").unwrap();
        assert_eq!(
            user_data(file.to_str().unwrap()).unwrap(),
            "#!/bin/sh\necho hi\n"
        );
        assert_eq!(user_data("echo hi").unwrap(), "echo hi");
        // A directory is not a file: the value is the text.
        let dir_name = dir.path().to_str().unwrap();
        assert_eq!(user_data(dir_name).unwrap(), dir_name);
    }
}

/// `--restart never|always`.
fn parse_restart(value: &str) -> Result<RestartPolicy, String> {
    match value {
        "never" => Ok(RestartPolicy::Never),
        "always" => Ok(RestartPolicy::Always),
        other => Err(format!(
            "{other:?} is not a restart policy: never or always"
        )),
    }
}
