//! virtwire: a userspace virtual switch for KVM virtual machines over vhost-user.

mod bench;
mod config;
mod daemon;
mod sys;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "virtwire",
    version,
    about = "A userspace virtual switch for KVM virtual machines over vhost-user"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the switch daemon with the ports of a configuration file.
    Run {
        /// TOML configuration (one [[port]] table per port).
        #[arg(long)]
        config: Option<std::path::PathBuf>,
    },
    /// Benchmarks that print tables (or JSON with --json).
    Bench {
        #[command(subcommand)]
        which: bench::BenchCmd,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run { config } => daemon::run(config.as_deref()),
        Cmd::Bench { which } => bench::main(which),
    }
}
