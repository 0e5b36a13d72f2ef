//! `virtwire run`: creates the run directory, serves the control socket and the ports of
//! the configuration file (if any) on one datapath worker, and, until SIGINT or
//! SIGTERM, takes port changes from the control socket. On the signal it prints each
//! port's counters and removes the sockets it created.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::config::{self, Config};
use crate::control;
use crate::metrics;
use crate::switch::{self, Switch};

/// What `virtwire run` was given.
pub struct RunArgs {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--run-dir`.
    pub run_dir: Option<PathBuf>,
    /// `--metrics`.
    pub metrics: Option<String>,
    /// `--poll-mode`.
    pub poll_mode: Option<vhost_backend::PollMode>,
}

/// Creates `dir` (and its parents) with mode 0755 if it does not exist.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .with_context(|| format!("run directory {}", dir.display()))?;
    // The umask may have taken bits away.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("run directory {}", dir.display()))
}

/// One port's closing line (tests and scripts parse it).
pub fn final_line(c: &switch::FinalCounters) -> String {
    let s = &c.stats;
    format!(
        "virtwire: port {}: from guest {} packets in {} bursts, to guest {} packets, drops {} (small rx buffer) {} (bad frame) {} (no rx buffer) {} (spoofed) {} (vlan) {} (tap write), kicks {}, interrupts {}, ring errors {}",
        c.name,
        s.rx_packets,
        s.bursts,
        s.tx_packets,
        s.drop_rx_buffer_small,
        s.drop_bad_frame,
        s.drop_no_rx_buffer,
        s.drop_spoofed,
        s.drop_vlan,
        s.drop_tap_write,
        s.kicks,
        s.interrupts,
        s.ring_errors
    )
}

/// Runs the daemon until a signal arrives.
pub fn run(a: RunArgs) -> Result<()> {
    let cfg = match &a.config {
        Some(p) => config::load(p)?,
        None => Config {
            run_dir: None,
            metrics: None,
            fdb: Default::default(),
            polling: Default::default(),
            ports: Vec::new(),
        },
    };
    let run_dir = config::resolve_run_dir(a.run_dir.as_deref(), cfg.run_dir.as_deref());
    let metrics_addr = match a.metrics.as_deref().or(cfg.metrics.as_deref()) {
        Some(m) => Some(metrics::parse_addr(m)?),
        None => None,
    };
    // Every port is checked before anything is created.
    let ports = config::validate_ports(&cfg.ports, &run_dir)?;
    // Install the handler before any socket exists, so that no signal can leave one behind.
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("signal handlers")?;
    ensure_dir(&run_dir)?;
    let sockets_dir = run_dir.join("sockets");
    ensure_dir(&sockets_dir)?;
    let mut polling = cfg.polling;
    if let Some(m) = a.poll_mode {
        polling.mode = m;
    }
    let sw = Arc::new(Switch::new(&run_dir, cfg.fdb)?);
    sw.set_polling(polling);
    let ctl_path = control::socket_path(&run_dir);
    let listener = match control::bind(&ctl_path) {
        Ok(l) => Some(l),
        // With ports of its own a second daemon is still useful; without any it has
        // nothing to do.
        Err(control::BindError::InUse) if !ports.is_empty() => {
            eprintln!(
                "virtwire: control socket {} is served by another virtwire; this one runs its configured ports without one",
                ctl_path.display()
            );
            None
        }
        Err(control::BindError::InUse) => anyhow::bail!(
            "control socket {}: another virtwire is running with run directory {} (use --run-dir)",
            ctl_path.display(),
            run_dir.display()
        ),
        Err(control::BindError::Other(e)) => return Err(e),
    };
    let owns_ctl = listener.is_some();
    let cleanup = |sw: &Switch| {
        let counters = sw.shutdown_all();
        if owns_ctl {
            let _ = std::fs::remove_file(&ctl_path);
        }
        counters
    };
    let started = (|| -> Result<()> {
        if let Some(l) = listener {
            control::serve(l, sw.clone())?;
            eprintln!("virtwire: control socket {}", ctl_path.display());
        }
        for p in &cfg.ports {
            let info = sw.add(p)?;
            eprintln!("virtwire: port {}: {}", info.name, switch::describe(&info));
        }
        if let Some(addr) = metrics_addr {
            let bound = metrics::serve(addr, sw.clone())?;
            eprintln!("virtwire: metrics on http://{bound}/metrics");
        }
        Ok(())
    })();
    if let Err(e) = started {
        cleanup(&sw);
        return Err(e);
    }
    eprintln!("virtwire: running with {} port(s); Ctrl-C or SIGTERM stops", ports.len());
    if let Some(sig) = signals.forever().next() {
        eprintln!("virtwire: signal {sig}: stopping");
    }
    for c in cleanup(&sw) {
        eprintln!("{}", final_line(&c));
    }
    // Connections still being served end with the process.
    std::process::exit(0);
}
