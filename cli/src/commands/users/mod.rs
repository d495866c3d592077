//! Administrators' account commands: `stratus-create-user`, `stratus-describe-users`,
//! `stratus-update-user`, `stratus-delete-user`. Passwords are read from the first line of
//! standard input (`--password-stdin`, so they never show in the process list) or, at
//! creation, generated and printed once.

pub mod create;
pub mod delete;
pub mod describe;
pub mod update;

use std::io::BufRead;

/// The first line of standard input, without its line end.
fn password_from_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    anyhow::ensure!(!password.is_empty(), "no password on standard input");
    Ok(password)
}
