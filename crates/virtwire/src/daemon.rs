//! `virtwire run`: starts the configured ports on one datapath worker and serves them
//! until SIGINT or SIGTERM, then removes the sockets it created.

use std::path::Path;

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use vhost_backend::{Port, Worker};

use crate::config;

/// Runs the daemon with the ports of `config_path` until a signal arrives.
pub fn run(config_path: Option<&Path>) -> Result<()> {
    let ports = match config_path {
        Some(p) => config::load(p)?,
        None => Vec::new(),
    };
    // Install the handler before any socket exists, so that no signal can leave one behind.
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("signal handlers")?;
    let worker = Worker::spawn("virtwire-dp0", Default::default()).context("datapath worker")?;
    let mut running = Vec::new();
    for (i, p) in ports.into_iter().enumerate() {
        let name = p.spec.name.clone();
        let port = Port::start(p.spec, &p.socket, p.mode, i as u32, worker.clone())
            .with_context(|| format!("port {name}: socket {}", p.socket.display()))?;
        eprintln!(
            "virtwire: port {name}: vhost-user {} on {}",
            if port.mode == vhost_backend::SocketMode::Server { "server" } else { "client" },
            port.socket.display()
        );
        running.push(port);
    }
    eprintln!("virtwire: running with {} port(s); Ctrl-C or SIGTERM stops", running.len());
    if let Some(sig) = signals.forever().next() {
        eprintln!("virtwire: signal {sig}: stopping");
    }
    for p in running.iter_mut() {
        let s = p.stats.snapshot();
        eprintln!(
            "virtwire: port {}: from guest {} packets in {} bursts, to guest {} packets, drops {} (small rx buffer) {} (bad frame), kicks {}, interrupts {}, ring errors {}",
            p.spec.name,
            s.rx_packets,
            s.bursts,
            s.tx_packets,
            s.drop_rx_buffer_small,
            s.drop_bad_frame,
            s.kicks,
            s.interrupts,
            s.ring_errors
        );
        p.shutdown();
    }
    // Connections still being served end with the process.
    std::process::exit(0);
}
