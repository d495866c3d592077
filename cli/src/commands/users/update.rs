//! `stratus-update-user`: set an account's password or make it an administrator, or not
//! (administrators).

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use super::password_from_stdin;
use crate::commands::Context;
use crate::output;

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("change").required(true).multiple(true))]
pub struct UpdateUserArgs {
    /// The account's login name
    #[arg(value_name = "NAME")]
    pub name: String,

    /// Set the password read from the first line of standard input (at least 8 characters)
    #[arg(long, group = "change")]
    pub password_stdin: bool,

    /// Make the account an administrator
    #[arg(long, group = "change", conflicts_with = "no_admin")]
    pub admin: bool,

    /// Make the account an ordinary user
    #[arg(long, group = "change")]
    pub no_admin: bool,
}

pub fn run(ctx: &Context, args: &UpdateUserArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let password = args.password_stdin.then(password_from_stdin).transpose()?;
    let admin = match (args.admin, args.no_admin) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    let user = client.update_user(&args.name, password.as_deref(), admin)?;
    out.write_all(output::render_user_updated(&user).as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
