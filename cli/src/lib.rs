//! The StratusLab command line client (the `stratus` binary runs [`main`]). Each command is also
//! reachable under its classic name (`stratus-run-instance` is `stratus run-instance`),
//! configured as the user's guide says (`~/.stratuslab/stratuslab-user.cfg`, `STRATUSLAB_*`,
//! command-line options). [`command`] gives the clap definition to the packages' man pages.
//!
//! Adding a command: a module under `commands/` with its `Args` struct and `run` function, a
//! variant in [`Command`] (its kebab-case name is the subcommand, `stratus-<name>` the classic
//! name), and an arm in [`dispatch`].

mod client;
mod commands;
mod config;
mod credentials;
mod endpoint;
mod image_file;
mod multicall;

pub use multicall::PREFIX as CLASSIC_PREFIX;
mod output;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use commands::build_metadata::BuildMetadataArgs;
use commands::console::ConsoleArgs;
use commands::copy_config::CopyConfigArgs;
use commands::delete_image::DeleteImageArgs;
use commands::deprecate_metadata::DeprecateMetadataArgs;
use commands::describe::DescribeArgs;
use commands::describe_endorsers::DescribeEndorsersArgs;
use commands::describe_images::DescribeImagesArgs;
use commands::events::EventsArgs;
use commands::groups::create::CreateGroupArgs;
use commands::groups::delete::DeleteGroupArgs;
use commands::groups::describe::DescribeGroupsArgs;
use commands::hosts::describe::DescribeHostsArgs;
use commands::hosts::fence::FenceHostArgs;
use commands::hosts::join_token::CreateJoinTokenArgs;
use commands::hosts::remove::RemoveHostArgs;
use commands::hosts::revoke::RevokeHostArgs;
use commands::hosts::update::UpdateHostArgs;
use commands::kill::KillArgs;
use commands::policy_image::PolicyImageArgs;
use commands::power::PowerArgs;
use commands::register_endorser::RegisterEndorserArgs;
use commands::run::RunArgs;
use commands::sign_metadata::SignMetadataArgs;
use commands::upload_metadata::UploadMetadataArgs;
use commands::users::create::CreateUserArgs;
use commands::users::delete::DeleteUserArgs;
use commands::users::describe::DescribeUsersArgs;
use commands::users::update::UpdateUserArgs;
use commands::volumes::attach::AttachVolumeArgs;
use commands::volumes::create::CreateVolumeArgs;
use commands::volumes::delete::DeleteVolumeArgs;
use commands::volumes::describe::DescribeVolumesArgs;
use commands::volumes::detach::DetachVolumeArgs;
use commands::volumes::update::UpdateVolumeArgs;
use commands::Context;
use config::CliOptions;

#[derive(Debug, Parser)]
#[command(
    name = "stratus",
    version,
    about = "StratusLab command line client",
    propagate_version = true
)]
struct Cli {
    #[command(flatten)]
    options: CliOptions,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start virtual machine instances of an image (or list the instance types)
    RunInstance(RunArgs),
    /// Show virtual machine instances and their state
    DescribeInstance(DescribeArgs),
    /// Destroy virtual machine instances and release their resources
    KillInstance(KillArgs),
    /// Power instances off, keeping their disk, addresses and persistent disks
    StopInstance(PowerArgs),
    /// Boot stopped instances again, on their host, from their own disk
    StartInstance(PowerArgs),
    /// Restart running instances (an ACPI request, the power cut after a timeout)
    RebootInstance(PowerArgs),
    /// Print an instance's serial console output (--follow: as the guest writes it)
    ConsoleInstance(ConsoleArgs),
    /// Print what happened in the cloud (--follow: as it happens)
    Events(EventsArgs),
    /// Create a persistent disk (volume) and print its UUID
    CreateVolume(CreateVolumeArgs),
    /// List your persistent disks and everyone's public ones
    DescribeVolumes(DescribeVolumesArgs),
    /// Change a persistent disk's visibility, tag or type (-h lists them)
    UpdateVolume(UpdateVolumeArgs),
    /// Delete persistent disks (only your own)
    DeleteVolume(DeleteVolumeArgs),
    /// Hot-plug persistent disks into a running instance (waits until the guest has them)
    AttachVolume(AttachVolumeArgs),
    /// Unplug persistent disks from a running instance (waits until the guest releases them)
    DetachVolume(DetachVolumeArgs),
    /// Create a server group: its instances run on one host (affinity) or apart (anti-affinity)
    CreateGroup(CreateGroupArgs),
    /// List your server groups, their members and the hosts they run on
    DescribeGroups(DescribeGroupsArgs),
    /// Delete server groups (only your own, once every instance in them is done)
    DeleteGroup(DeleteGroupArgs),
    /// Copy the reference configuration file to ~/.stratuslab/stratuslab-user.cfg
    CopyConfig(CopyConfigArgs),
    /// Describe an image file as unsigned Marketplace metadata (checksums, size, format)
    // Its --version is the image's version, so the version flag is left to `stratus`.
    #[command(disable_version_flag = true)]
    BuildMetadata(Box<BuildMetadataArgs>),
    /// Sign Marketplace metadata with your certificate (PKCS#12 or PEM)
    SignMetadata(SignMetadataArgs),
    /// Upload signed metadata to the Marketplace
    UploadMetadata(UploadMetadataArgs),
    /// List Marketplace entries (filtered, a page at a time) and the site's images
    DescribeImages(DescribeImagesArgs),
    /// Ask the site policy whether Marketplace images may run here
    PolicyImage(PolicyImageArgs),
    /// Withdraw your endorsement of an image: upload a signed, deprecated copy of your entry
    DeprecateMetadata(DeprecateMetadataArgs),
    /// List the endorser certificates the Marketplace trusts directly
    DescribeEndorsers(DescribeEndorsersArgs),
    /// Trust an endorser certificate directly (administrators)
    RegisterEndorser(RegisterEndorserArgs),
    /// Remove site images (administrators; instances made from them keep them)
    DeleteImage(DeleteImageArgs),
    /// Create an account (administrators)
    CreateUser(CreateUserArgs),
    /// List the accounts (administrators)
    DescribeUsers(DescribeUsersArgs),
    /// Set an account's password or administrator flag (administrators)
    UpdateUser(UpdateUserArgs),
    /// Remove accounts (administrators)
    DeleteUser(DeleteUserArgs),
    /// Make a one-time token a new hypervisor host enrols with (administrators)
    CreateJoinToken(CreateJoinTokenArgs),
    /// Take every certificate of hosts out of force (administrators)
    RevokeHost(RevokeHostArgs),
    /// List the hypervisor hosts, their state, roles, load and labels (administrators)
    DescribeHosts(DescribeHostsArgs),
    /// Put a host in maintenance or back in service, or set its roles and labels
    /// (administrators)
    UpdateHost(UpdateHostArgs),
    /// Remove hosts from the cloud for good (administrators)
    RemoveHost(RemoveHostArgs),
    /// Declare hosts that are down dead, so that their instances run with --evacuate start
    /// elsewhere (administrators)
    FenceHost(FenceHostArgs),
}

fn dispatch(
    command: &Command,
    ctx: &Context,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    match command {
        Command::RunInstance(args) => commands::run::run(ctx, args, out),
        Command::DescribeInstance(args) => commands::describe::run(ctx, args, out, err),
        Command::KillInstance(args) => commands::kill::run(ctx, args, out, err),
        Command::StopInstance(args) => {
            commands::power::run(ctx, client::PowerAction::Stop, args, out, err)
        }
        Command::StartInstance(args) => {
            commands::power::run(ctx, client::PowerAction::Start, args, out, err)
        }
        Command::RebootInstance(args) => {
            commands::power::run(ctx, client::PowerAction::Reboot, args, out, err)
        }
        Command::ConsoleInstance(args) => commands::console::run(ctx, args, out),
        Command::Events(args) => commands::events::run(ctx, args, out),
        Command::CreateVolume(args) => commands::volumes::create::run(ctx, args, out, err),
        Command::DescribeVolumes(args) => commands::volumes::describe::run(ctx, args, out, err),
        Command::UpdateVolume(args) => commands::volumes::update::run(ctx, args, out),
        Command::DeleteVolume(args) => commands::volumes::delete::run(ctx, args, out, err),
        Command::AttachVolume(args) => commands::volumes::attach::run(ctx, args, out, err),
        Command::DetachVolume(args) => commands::volumes::detach::run(ctx, args, out, err),
        Command::CreateGroup(args) => commands::groups::create::run(ctx, args, out),
        Command::DescribeGroups(args) => commands::groups::describe::run(ctx, args, out, err),
        Command::DeleteGroup(args) => commands::groups::delete::run(ctx, args, out, err),
        Command::CopyConfig(args) => commands::copy_config::run(ctx, args, out),
        Command::BuildMetadata(args) => commands::build_metadata::run(ctx, args, out),
        Command::SignMetadata(args) => commands::sign_metadata::run(ctx, args, out, err),
        Command::UploadMetadata(args) => commands::upload_metadata::run(ctx, args, out, err),
        Command::DescribeImages(args) => commands::describe_images::run(ctx, args, out),
        Command::PolicyImage(args) => commands::policy_image::run(ctx, args, out, err),
        Command::DeprecateMetadata(args) => commands::deprecate_metadata::run(ctx, args, out, err),
        Command::DescribeEndorsers(args) => commands::describe_endorsers::run(ctx, args, out),
        Command::RegisterEndorser(args) => commands::register_endorser::run(ctx, args, out),
        Command::DeleteImage(args) => commands::delete_image::run(ctx, args, out, err),
        Command::CreateUser(args) => commands::users::create::run(ctx, args, out),
        Command::DescribeUsers(args) => commands::users::describe::run(ctx, args, out),
        Command::UpdateUser(args) => commands::users::update::run(ctx, args, out),
        Command::DeleteUser(args) => commands::users::delete::run(ctx, args, out, err),
        Command::CreateJoinToken(args) => commands::hosts::join_token::run(ctx, args, out),
        Command::RevokeHost(args) => commands::hosts::revoke::run(ctx, args, out, err),
        Command::DescribeHosts(args) => commands::hosts::describe::run(ctx, args, out),
        Command::UpdateHost(args) => commands::hosts::update::run(ctx, args, out),
        Command::RemoveHost(args) => commands::hosts::remove::run(ctx, args, out, err),
        Command::FenceHost(args) => commands::hosts::fence::run(ctx, args, out, err),
    }
}

/// The clap definition of `stratus` and its subcommands, for the man pages and shell
/// completions the packages ship.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Runs `stratus` (or a classic `stratus-X` name) with the process's arguments and environment.
pub fn main() -> ExitCode {
    let args = multicall::expand_args(std::env::args_os().collect());
    // Usage errors, --help and --version: clap prints and exits (2 for a usage error).
    let cli = Cli::parse_from(args);
    let ctx = Context {
        options: cli.options,
        env: config::process_env(),
    };

    let mut out = io::stdout().lock();
    let mut err = io::stderr().lock();
    let result = dispatch(&cli.command, &ctx, &mut out, &mut err);
    let flushed = out.flush();
    match result.and_then(|code| flushed.map(|()| code).map_err(Into::into)) {
        Ok(code) => code,
        // The reader went away (`| head`): nothing more to say to anyone.
        Err(e) if is_broken_pipe(&e) => ExitCode::FAILURE,
        Err(e) => {
            let _ = err.write_all(output::render_error(&format!("{e:#}")).as_bytes());
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use stratus_common::api::UpdateHost;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let args = args.iter().map(std::ffi::OsString::from).collect();
        Cli::try_parse_from(multicall::expand_args(args))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn classic_name_with_options_after_it() {
        let cli = parse(&[
            "stratus-run-instance",
            "-S",
            "fav-cloud",
            "ttylinux",
            "-n",
            "2",
        ])
        .unwrap();
        assert_eq!(cli.options.section.as_deref(), Some("fav-cloud"));
        let Command::RunInstance(run) = cli.command else {
            panic!("not run-instance")
        };
        assert_eq!(run.image.as_deref(), Some("ttylinux"));
        assert_eq!(run.number, 2);
    }

    #[test]
    fn global_options_before_the_subcommand() {
        let cli = parse(&[
            "stratus",
            "--endpoint",
            "h:1",
            "describe-instance",
            "5",
            "6",
        ])
        .unwrap();
        assert_eq!(cli.options.endpoint.as_deref(), Some("h:1"));
        let Command::DescribeInstance(d) = cli.command else {
            panic!("not describe-instance")
        };
        assert_eq!(d.ids, [5, 6]);
    }

    #[test]
    fn run_instance_needs_an_image_unless_listing_types() {
        assert!(parse(&["stratus-run-instance"]).is_err());
        assert!(parse(&["stratus-run-instance", "-l"]).is_ok());
        assert!(parse(&["stratus-run-instance", "img", "-n", "0"]).is_err());
        assert!(parse(&["stratus-run-instance", "img", "--json", "-q"]).is_err());
        assert!(parse(&["stratus-run-instance", "img", "--name", "../x"]).is_err());
    }

    #[test]
    fn marketplace_commands_by_their_classic_names() {
        let cli = parse(&[
            "stratus-build-metadata",
            "disk.img",
            "--os",
            "ttylinux",
            "--os-version",
            "9.3",
            "--version",
            "1.0",
            "--description",
            "d",
            "--location",
            "http://h/disk.img",
            "--location",
            "http://mirror/disk.img",
        ])
        .unwrap();
        let Command::BuildMetadata(build) = cli.command else {
            panic!("not build-metadata")
        };
        assert_eq!(build.version, "1.0");
        assert_eq!(build.locations.len(), 2);
        assert!(parse(&["stratus-build-metadata", "disk.img", "--os", "x"]).is_err());

        let cli = parse(&[
            "stratus-sign-metadata",
            "m.json",
            "-o",
            "s.json",
            "--p12-cert",
            "/u.p12",
            "--p12-password",
            "pw",
        ])
        .unwrap();
        assert_eq!(
            cli.options.p12_cert.as_deref(),
            Some(std::path::Path::new("/u.p12"))
        );
        assert_eq!(cli.options.p12_password.as_deref(), Some("pw"));
        let Command::SignMetadata(sign) = cli.command else {
            panic!("not sign-metadata")
        };
        assert_eq!(sign.output.as_deref(), Some(std::path::Path::new("s.json")));
        // `stratus --version` still answers.
        assert!(parse(&["stratus", "--version"])
            .is_err_and(|e| e.kind() == clap::error::ErrorKind::DisplayVersion));
    }

    #[test]
    fn marketplace_registry_commands_by_their_classic_names() {
        let cli = parse(&[
            "stratus-upload-metadata",
            "a.json",
            "b.json",
            "--marketplace-endpoint",
            "mp:1",
        ])
        .unwrap();
        assert_eq!(cli.options.marketplace_endpoint.as_deref(), Some("mp:1"));
        let Command::UploadMetadata(upload) = cli.command else {
            panic!("not upload-metadata")
        };
        assert_eq!(upload.files.len(), 2);
        assert!(parse(&["stratus-upload-metadata"]).is_err());

        let cli = parse(&[
            "stratus-describe-images",
            "--os",
            "ttylinux",
            "--kind",
            "machine",
            "--limit",
            "5",
            "--json",
        ])
        .unwrap();
        let Command::DescribeImages(describe) = cli.command else {
            panic!("not describe-images")
        };
        assert_eq!(describe.os.as_deref(), Some("ttylinux"));
        assert_eq!(describe.limit, Some(5));
        assert!(describe.json);
        assert!(parse(&["stratus-describe-images", "extra"]).is_err());

        let cli = parse(&["stratus-policy-image", "X", "Y", "--json"]).unwrap();
        let Command::PolicyImage(policy) = cli.command else {
            panic!("not policy-image")
        };
        assert_eq!(policy.identifiers, ["X", "Y"]);
        assert!(parse(&["stratus-policy-image"]).is_err());

        let cli = parse(&[
            "stratus-deprecate-metadata",
            "X",
            "--reason",
            "use 9.4",
            "--pem-cert",
            "/c.pem",
            "--pem-key",
            "/k.pem",
        ])
        .unwrap();
        assert_eq!(
            cli.options.pem_cert.as_deref(),
            Some(std::path::Path::new("/c.pem"))
        );
        let Command::DeprecateMetadata(deprecate) = cli.command else {
            panic!("not deprecate-metadata")
        };
        assert_eq!(deprecate.reason, "use 9.4");
        assert!(parse(&["stratus-deprecate-metadata", "X"]).is_err());

        assert!(parse(&["stratus-describe-endorsers"]).is_ok());
        assert!(parse(&["stratus-register-endorser", "cert.pem"]).is_ok());
        assert!(parse(&["stratus-register-endorser"]).is_err());
    }

    const DISK: &str = "9c5a2c03-8243-4a1b-a248-0f0d22d948c2";
    const DISK2: &str = "5822c376-9ce1-434e-95d1-cdaa240cd47c";

    #[test]
    fn volume_commands_by_their_classic_names() {
        let cli = parse(&[
            "stratus-create-volume",
            "--size=5",
            "--tag=myprivate-disk",
            "--pdisk-endpoint",
            "pd:1",
        ])
        .unwrap();
        assert_eq!(cli.options.pdisk_endpoint.as_deref(), Some("pd:1"));
        let Command::CreateVolume(create) = cli.command else {
            panic!("not create-volume")
        };
        assert_eq!(
            (create.size, create.tag.as_deref()),
            (5, Some("myprivate-disk"))
        );
        assert!(!create.public && create.volume_type.is_none());
        assert!(parse(&[
            "stratus-create-volume",
            "--public",
            "--size=10",
            "--type",
            "data-ro"
        ])
        .is_ok());
        assert!(parse(&["stratus-create-volume"]).is_err());
        assert!(parse(&["stratus-create-volume", "--size=0"]).is_err());
        assert!(parse(&["stratus-create-volume", "--size=1", "--type", "rw"]).is_err());

        let cli = parse(&["stratus-describe-volumes", DISK, &DISK2.to_uppercase()]).unwrap();
        let Command::DescribeVolumes(describe) = cli.command else {
            panic!("not describe-volumes")
        };
        assert_eq!(describe.ids, [DISK, DISK2]);
        assert!(parse(&["stratus-describe-volumes"]).is_ok());
        assert!(parse(&["stratus-describe-volumes", "5507"]).is_err());

        let cli = parse(&["stratus-update-volume", "--public", DISK]).unwrap();
        let Command::UpdateVolume(update) = cli.command else {
            panic!("not update-volume")
        };
        assert_eq!(update.update().public, Some(true));
        let cli = parse(&["stratus-update-volume", DISK, "--private", "--tag", ""]).unwrap();
        let Command::UpdateVolume(update) = cli.command else {
            panic!("not update-volume")
        };
        let request = update.update();
        assert_eq!(
            (request.public, request.tag.as_deref()),
            (Some(false), Some(""))
        );
        // Nothing to change, or contradictory changes.
        assert!(parse(&["stratus-update-volume", DISK]).is_err());
        assert!(parse(&["stratus-update-volume", DISK, "--public", "--private"]).is_err());

        assert!(parse(&["stratus-delete-volume"]).is_err());
        assert!(parse(&["stratus-delete-volume", DISK, DISK2]).is_ok());

        let cli = parse(&["stratus-attach-volume", "-i", "24", DISK, DISK2]).unwrap();
        let Command::AttachVolume(attach) = cli.command else {
            panic!("not attach-volume")
        };
        assert_eq!((attach.instance, attach.ids.len()), (24, 2));
        assert_eq!(attach.timeout, 120);
        assert!(parse(&["stratus-attach-volume", DISK]).is_err());
        assert!(parse(&["stratus-attach-volume", "-i", "24"]).is_err());

        let cli = parse(&[
            "stratus-detach-volume",
            "-i",
            "41",
            DISK,
            "--force",
            "--timeout",
            "5",
        ])
        .unwrap();
        let Command::DetachVolume(detach) = cli.command else {
            panic!("not detach-volume")
        };
        assert!(detach.force);
        assert_eq!((detach.instance, detach.timeout), (41, 5));

        let cli = parse(&[
            "stratus-run-instance",
            "--persistent-disk",
            DISK,
            &format!("--persistent-disk={DISK2}"),
            "ttylinux",
        ])
        .unwrap();
        let Command::RunInstance(run) = cli.command else {
            panic!("not run-instance")
        };
        assert_eq!(run.persistent_disks, [DISK, DISK2]);
        assert!(parse(&["stratus-run-instance", "--persistent-disk", "x", "img"]).is_err());
    }

    #[test]
    fn update_volume_help_lists_the_types_and_properties() {
        let help = parse(&["stratus-update-volume", "-h"])
            .unwrap_err()
            .to_string();
        for text in [
            "data-rw",
            "data-ro",
            "visibility",
            "tag",
            "type",
            "--public",
        ] {
            assert!(help.contains(text), "{text} missing from:\n{help}");
        }
    }

    #[test]
    fn host_commands_by_their_classic_names() {
        let cli = parse(&["stratus-describe-hosts", "--json"]).unwrap();
        let Command::DescribeHosts(describe) = cli.command else {
            panic!("not describe-hosts")
        };
        assert!(describe.json);
        assert!(parse(&["stratus-describe-hosts", "h1"]).is_err());

        let cli = parse(&[
            "stratus-update-host",
            "h1",
            "--maintenance",
            "--reason",
            "disk replacement",
        ])
        .unwrap();
        let Command::UpdateHost(update) = cli.command else {
            panic!("not update-host")
        };
        assert_eq!(update.host, "h1");
        assert_eq!(
            update.update(),
            UpdateHost {
                maintenance: Some(true),
                reason: Some("disk replacement".into()),
                ..UpdateHost::default()
            }
        );
        let cli = parse(&["stratus-update-host", "h1", "--no-maintenance"]).unwrap();
        let Command::UpdateHost(update) = cli.command else {
            panic!("not update-host")
        };
        assert_eq!(
            update.update(),
            UpdateHost {
                maintenance: Some(false),
                ..UpdateHost::default()
            }
        );
        // At most one of --maintenance and --no-maintenance, and at least one change; a reason
        // only with maintenance.
        let usage_error = |args: &[&str]| {
            let kind = parse(args).unwrap_err().kind();
            assert!(
                matches!(
                    kind,
                    clap::error::ErrorKind::MissingRequiredArgument
                        | clap::error::ErrorKind::ArgumentConflict
                ),
                "{args:?}: {kind:?}"
            );
        };
        usage_error(&["stratus-update-host", "h1"]);
        usage_error(&["stratus-update-host", "h1", "--reason", "x"]);
        usage_error(&[
            "stratus-update-host",
            "h1",
            "--no-maintenance",
            "--reason",
            "x",
        ]);
        usage_error(&[
            "stratus-update-host",
            "h1",
            "--maintenance",
            "--no-maintenance",
        ]);
        assert!(parse(&["stratus-update-host", "--maintenance"]).is_err());
        usage_error(&[
            "stratus-update-host",
            "h1",
            "--reason",
            "x",
            "--roles",
            "compute",
        ]);
        usage_error(&[
            "stratus-update-host",
            "h1",
            "--no-maintenance",
            "--reason",
            "x",
            "--labels",
            "ssd",
        ]);

        let cli = parse(&["stratus-remove-host", "h1", "h2", "--force"]).unwrap();
        let Command::RemoveHost(remove) = cli.command else {
            panic!("not remove-host")
        };
        assert_eq!(remove.hosts, ["h1", "h2"]);
        assert!(remove.force);
        let cli = parse(&["stratus-remove-host", "h1"]).unwrap();
        let Command::RemoveHost(remove) = cli.command else {
            panic!("not remove-host")
        };
        assert!(!remove.force);
        assert!(parse(&["stratus-remove-host"]).is_err());
        let cli = parse(&["stratus-fence-host", "h1"]).unwrap();
        let Command::FenceHost(fence) = cli.command else {
            panic!("not fence-host")
        };
        assert_eq!(fence.hosts, ["h1"]);
        assert!(parse(&["stratus-fence-host"]).is_err());
    }

    fn update_host(args: &[&str]) -> Result<UpdateHost, clap::Error> {
        let mut all = vec!["stratus-update-host", "h1"];
        all.extend_from_slice(args);
        let Command::UpdateHost(update) = parse(&all)?.command else {
            panic!("not update-host")
        };
        Ok(update.update())
    }

    #[test]
    fn update_host_sets_roles_and_labels_and_leaves_the_rest() {
        use stratus_common::api::HostRole::{Compute, Storage};
        assert_eq!(
            update_host(&["--roles", "compute,storage"]).unwrap(),
            UpdateHost {
                roles: Some(vec![Compute, Storage]),
                ..UpdateHost::default()
            }
        );
        assert_eq!(
            update_host(&["--roles=storage", "--labels", "ssd,gpu"]).unwrap(),
            UpdateHost {
                roles: Some(vec![Storage]),
                labels: Some(vec!["ssd".into(), "gpu".into()]),
                ..UpdateHost::default()
            }
        );
        // '' clears the labels: an empty list is sent, not nothing.
        assert_eq!(
            update_host(&["--labels", ""]).unwrap(),
            UpdateHost {
                labels: Some(Vec::new()),
                ..UpdateHost::default()
            }
        );
        assert_eq!(
            update_host(&["--maintenance", "--reason", "r", "--labels=ssd"]).unwrap(),
            UpdateHost {
                maintenance: Some(true),
                reason: Some("r".into()),
                labels: Some(vec!["ssd".into()]),
                ..UpdateHost::default()
            }
        );
        assert_eq!(
            update_host(&["--no-maintenance", "--roles", "compute"]).unwrap(),
            UpdateHost {
                maintenance: Some(false),
                roles: Some(vec![Compute]),
                ..UpdateHost::default()
            }
        );
        // At least one role, only known ones; labels the cloud would refuse are refused here.
        for bad in [
            &["--roles", ""][..],
            &["--roles", "gpu"],
            &["--roles", "compute,"],
            &["--roles"],
            &["--labels", "a b"],
            &["--labels", "ssd,,gpu"],
            &["--labels"],
        ] {
            let kind = update_host(bad).unwrap_err().kind();
            assert!(
                matches!(
                    kind,
                    clap::error::ErrorKind::InvalidValue | clap::error::ErrorKind::ValueValidation
                ),
                "{bad:?}: {kind:?}"
            );
        }
    }

    #[test]
    fn update_host_help_names_the_roles() {
        let help = parse(&["stratus-update-host", "-h"])
            .unwrap_err()
            .to_string();
        for text in ["--roles", "compute", "storage", "--labels", "--maintenance"] {
            assert!(help.contains(text), "{text} missing from:\n{help}");
        }
    }

    #[test]
    fn group_commands_by_their_classic_names() {
        let cli = parse(&["stratus-create-group", "web", "--policy", "anti-affinity"]).unwrap();
        let Command::CreateGroup(create) = cli.command else {
            panic!("not create-group")
        };
        assert_eq!(
            create.request(),
            stratus_common::api::CreateGroup {
                name: "web".into(),
                policy: stratus_common::api::GroupPolicy::AntiAffinity,
            }
        );
        assert!(!create.json);
        let cli = parse(&["stratus-create-group", "--policy=affinity", "db", "--json"]).unwrap();
        let Command::CreateGroup(create) = cli.command else {
            panic!("not create-group")
        };
        assert_eq!(
            create.request().policy,
            stratus_common::api::GroupPolicy::Affinity
        );
        assert!(create.json);
        // A policy is needed, one of the two; a name the cloud would refuse is refused here.
        assert!(parse(&["stratus-create-group", "web"]).is_err());
        assert!(parse(&["stratus-create-group", "web", "--policy", "spread"]).is_err());
        assert!(parse(&["stratus-create-group", "--policy", "affinity"]).is_err());
        assert!(parse(&["stratus-create-group", "../x", "--policy", "affinity"]).is_err());

        let cli = parse(&["stratus-describe-groups", "web", "db", "--json"]).unwrap();
        let Command::DescribeGroups(describe) = cli.command else {
            panic!("not describe-groups")
        };
        assert_eq!(describe.names, ["web", "db"]);
        assert!(describe.json);
        let cli = parse(&["stratus-describe-groups"]).unwrap();
        let Command::DescribeGroups(describe) = cli.command else {
            panic!("not describe-groups")
        };
        assert!(describe.names.is_empty() && !describe.json);
        assert!(parse(&["stratus-describe-groups", "a/b"]).is_err());

        let cli = parse(&["stratus-delete-group", "web", "db"]).unwrap();
        let Command::DeleteGroup(delete) = cli.command else {
            panic!("not delete-group")
        };
        assert_eq!(delete.names, ["web", "db"]);
        assert!(parse(&["stratus-delete-group"]).is_err());
        assert!(parse(&["stratus-delete-group", ""]).is_err());
    }

    #[test]
    fn run_instance_takes_a_group_and_labels() {
        let cli = parse(&[
            "stratus-run-instance",
            "ttylinux",
            "--group",
            "web",
            "--label",
            "ssd",
            "--label=gpu,rack-2",
        ])
        .unwrap();
        let Command::RunInstance(run) = cli.command else {
            panic!("not run-instance")
        };
        assert_eq!(run.group.as_deref(), Some("web"));
        assert_eq!(run.labels, ["ssd", "gpu", "rack-2"]);

        let cli = parse(&["stratus-run-instance", "ttylinux"]).unwrap();
        let Command::RunInstance(run) = cli.command else {
            panic!("not run-instance")
        };
        assert_eq!((run.group, run.labels), (None, Vec::<String>::new()));

        assert!(parse(&["stratus-run-instance", "img", "--group", "a b"]).is_err());
        assert!(parse(&["stratus-run-instance", "img", "--label", ""]).is_err());
        assert!(parse(&["stratus-run-instance", "img", "--label", "ssd,,gpu"]).is_err());
        assert!(parse(&["stratus-run-instance", "img", "--label", "x=y"]).is_err());
    }

    #[test]
    fn remove_host_force_says_what_is_lost() {
        let help = parse(&["stratus-remove-host", "-h"])
            .unwrap_err()
            .to_string();
        for text in [
            "down and gone for good",
            "instances fail",
            "disks it stored are lost",
        ] {
            assert!(help.contains(text), "{text} missing from:\n{help}");
        }
    }

    #[test]
    fn kill_instance_needs_numeric_ids() {
        assert!(parse(&["stratus-kill-instance"]).is_err());
        assert!(parse(&["stratus-kill-instance", "abc"]).is_err());
        assert!(parse(&["stratus-kill-instance", "1", "2"]).is_ok());
    }
}
