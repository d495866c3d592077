//! The command line of `stratus-agent` (its clap definition), here rather than in the binary
//! so the packages' man pages and shell completions are generated from it.

use std::path::PathBuf;

use clap::Parser;

/// The StratusLab host agent.
#[derive(Parser)]
#[command(version, about)]
pub struct Args {
    /// Configuration file (TOML).
    #[arg(long, short = 'c', default_value = "/etc/stratuslab/agent.toml")]
    pub config: PathBuf,
}
