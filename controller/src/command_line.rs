//! The command line of `stratus-controller` (its clap definition), here rather than in the
//! binary so the packages' man pages and shell completions are generated from it.

use std::path::PathBuf;

use clap::Parser;

/// The StratusLab controller.
#[derive(Parser)]
#[command(version, about)]
pub struct Args {
    /// Configuration file (TOML).
    #[arg(long, short = 'c', default_value = "/etc/stratuslab/controller.toml")]
    pub config: PathBuf,
    /// Override `listen` from the file.
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Override `state_dir` from the file.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// One-shot recovery of a cluster that lost its majority for good: this node's store
    /// becomes a one-node cluster with this node as its only voter (what it has committed is
    /// kept). Start it once like this, then add the other nodes again, each with a wiped state
    /// directory and `join = true`. Never use it while the old majority may come back.
    #[arg(long)]
    pub force_new_cluster: bool,
}
