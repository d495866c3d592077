//! `stratus-create-user`: create an account (administrators), with the password given on
//! standard input or a generated one, printed once.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use super::password_from_stdin;
use crate::commands::Context;
use crate::output;

#[derive(Debug, Args)]
pub struct CreateUserArgs {
    /// Login name (letters, digits, `.`, `_`, `-`)
    #[arg(value_name = "NAME")]
    pub name: String,

    /// Read the password (at least 8 characters) from the first line of standard input;
    /// without it a random one is made and printed
    #[arg(long)]
    pub password_stdin: bool,

    /// Make the account an administrator
    #[arg(long)]
    pub admin: bool,
}

pub fn run(ctx: &Context, args: &CreateUserArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let (password, generated) = if args.password_stdin {
        (password_from_stdin()?, false)
    } else {
        (uuid::Uuid::new_v4().simple().to_string(), true)
    };
    let user = client.create_user(&args.name, &password, args.admin)?;
    out.write_all(
        output::render_user_created(&user, generated.then_some(password.as_str())).as_bytes(),
    )?;
    Ok(ExitCode::SUCCESS)
}
