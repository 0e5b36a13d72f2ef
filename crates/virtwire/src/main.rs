//! virtwire: a userspace virtual switch for KVM virtual machines over vhost-user.

mod api;
mod bench;
mod cli;
mod config;
mod control;
mod daemon;
mod demo;
mod metrics;
mod switch;
mod sys;
mod watch;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "virtwire",
    version,
    about = "A userspace virtual switch for KVM virtual machines over vhost-user"
)]
struct Cli {
    /// Run directory of the switch (control socket RUN_DIR/ctl.sock, vhost-user sockets in
    /// RUN_DIR/sockets/). Default: $VIRTWIRE_RUN_DIR, else /run/virtwire as root, else
    /// $XDG_RUNTIME_DIR/virtwire or /tmp/virtwire-UID.
    #[arg(long, global = true, value_name = "DIR")]
    run_dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the switch: the control socket, and the ports of a configuration file if given.
    Run {
        /// TOML configuration (run_dir, metrics, [fdb], one [[port]] table per port).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Serve Prometheus metrics at http://ADDR/metrics (loopback only, e.g. 127.0.0.1:9090).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
        /// Worker polling: adaptive (default: spin for an adaptive window after the last
        /// frame, then sleep), poll (always spin), interrupt (never spin).
        #[arg(long, value_name = "MODE")]
        poll_mode: Option<vhost_backend::PollMode>,
    },
    /// Add, remove, list and show ports of the running switch.
    Port {
        #[command(subcommand)]
        cmd: cli::PortCmd,
    },
    /// The running switch's learning table (forwarding database).
    Fdb {
        #[command(subcommand)]
        cmd: cli::FdbCmd,
    },
    /// Counters of the running switch: every port, worker and the learning table, or one port.
    Stats {
        /// Only this port.
        port: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Show rates, refreshed every INTERVAL seconds, like top.
        #[arg(long, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "1")]
        watch: Option<f64>,
        /// With --watch: stop after this many screens.
        #[arg(long, requires = "watch")]
        count: Option<u64>,
    },
    /// Two virtio-user endpoints exchange frames through a switch in this process; then
    /// how to attach a QEMU VM.
    Demo {
        /// Seconds of traffic.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Frame size in bytes (Ethernet header and payload, no FCS).
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// Benchmarks that print tables (or JSON with --json).
    Bench {
        #[command(subcommand)]
        which: bench::BenchCmd,
    },
}

fn dispatch(cli: Cli) -> Result<()> {
    let run_dir = || config::resolve_run_dir(cli.run_dir.as_deref(), None);
    match cli.cmd {
        Cmd::Run { config, metrics, poll_mode } => {
            daemon::run(daemon::RunArgs { config, run_dir: cli.run_dir.clone(), metrics, poll_mode })
        }
        Cmd::Port { cmd } => cli::port(&run_dir(), cmd),
        Cmd::Fdb { cmd } => cli::fdb(&run_dir(), cmd),
        Cmd::Stats { port, json: _, watch: Some(secs), count } => {
            anyhow::ensure!(secs > 0.0 && secs.is_finite(), "--watch: the interval must be positive");
            watch::run(&run_dir(), port.as_deref(), std::time::Duration::from_secs_f64(secs), count)
        }
        Cmd::Stats { port, json, watch: None, count: _ } => cli::stats(&run_dir(), port, json),
        Cmd::Demo { seconds, size } => demo::run(seconds, size, &run_dir()),
        Cmd::Bench { which } => bench::main(which),
    }
}

fn main() {
    if let Err(e) = dispatch(Cli::parse()) {
        // One line naming the problem, its causes joined with ": ".
        eprintln!("virtwire: {e:#}");
        std::process::exit(1);
    }
}
