//! The commands that talk to a running switch over its control socket: `port`, `fdb`,
//! `stats`. Human output is aligned tables; `--json` prints what the switch answered.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use crate::api::{FdbEntry, PortInfo, PortShow, PortStats, Request, StatsReport};
use crate::config::PortConfig;
use crate::control;

#[derive(Subcommand)]
pub enum PortCmd {
    /// Add a port to the running switch.
    Add(Box<PortAddArgs>),
    /// Remove a port (its socket or tap interface goes away).
    Del {
        /// Port name.
        name: String,
    },
    /// List the ports.
    List {
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Show one port's settings and counters.
    Show {
        /// Port name.
        name: String,
        /// Print a JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct PortAddArgs {
    /// Port name: 1-32 letters, digits, '-' or '_'.
    name: String,
    /// vhost-user (a VM's virtio-net device) or tap (a kernel interface).
    #[arg(long = "type", value_name = "TYPE", value_parser = ["vhost-user", "tap"])]
    kind: String,
    /// vhost-user socket (default RUN_DIR/sockets/NAME.sock).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// vhost-user: server (virtwire listens) or client (virtwire connects).
    #[arg(long, value_parser = ["server", "client"])]
    mode: Option<String>,
    /// vhost-user: queue pairs (1-64).
    #[arg(long)]
    queue_pairs: Option<u16>,
    /// vhost-user: the MAC address in the device's config space.
    #[arg(long)]
    mac: Option<String>,
    /// vhost-user: MTU reported to the guest.
    #[arg(long)]
    mtu: Option<u16>,
    /// tap: kernel interface name (default: the port name).
    #[arg(long)]
    ifname: Option<String>,
    /// Access port on this VLAN (untagged frames; tagged frames are dropped).
    #[arg(long, conflicts_with = "trunks")]
    vlan: Option<u16>,
    /// Trunk port carrying these VLANs tagged, e.g. 10,20.
    #[arg(long, value_delimiter = ',', num_args = 1)]
    trunks: Option<Vec<u16>>,
    /// Trunk port: the VLAN of untagged frames.
    #[arg(long, requires = "trunks")]
    native_vlan: Option<u16>,
    /// The only source MACs the port may send from, e.g. 52:54:00:00:00:01,52:54:00:00:00:02.
    #[arg(long, value_delimiter = ',', num_args = 1)]
    macs: Option<Vec<String>>,
    /// With --macs: receive unknown unicast too.
    #[arg(long)]
    promiscuous: bool,
    /// A diagnostic mode instead of switching: reflect, sink or source.
    #[arg(long, value_parser = ["reflect", "sink", "source"])]
    diag: Option<String>,
    /// Frame size of --diag source.
    #[arg(long)]
    diag_frame_size: Option<usize>,
    /// vhost-user: a receive notification waits at most this many microseconds.
    #[arg(long)]
    coalesce_rx_usecs: Option<u32>,
    /// vhost-user: ... or until this many frames arrived.
    #[arg(long)]
    coalesce_rx_frames: Option<u32>,
    /// vhost-user: a transmit completion notification waits at most this many microseconds.
    #[arg(long)]
    coalesce_tx_usecs: Option<u32>,
    /// vhost-user: ... or until this many frames were sent.
    #[arg(long)]
    coalesce_tx_frames: Option<u32>,
    /// vhost-user: do not offer VIRTIO_RING_F_EVENT_IDX (notification flags only).
    #[arg(long)]
    no_event_idx: bool,
}

#[derive(Subcommand)]
pub enum FdbCmd {
    /// Show the learning table.
    Show {
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Forget learned addresses.
    Flush {
        /// Only those learned on this port.
        #[arg(long)]
        port: Option<String>,
    },
}

/// A path as the daemon should see it: relative paths are taken from here.
fn absolute(p: PathBuf) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p);
    }
    Ok(std::env::current_dir().context("current directory")?.join(p))
}

pub(crate) fn call<T: serde::de::DeserializeOwned>(
    run_dir: &Path,
    req: &Request,
) -> Result<(serde_json::Value, T)> {
    let v = control::request(run_dir, req)?;
    let t = serde_json::from_value(v.clone()).context("the switch answered in an unexpected shape")?;
    Ok((v, t))
}

fn print_json(v: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Prints an aligned table: columns whose cells are all numbers are right-aligned.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    print!("{}", format_table(headers, rows));
}

/// An aligned table as text, one line per row (see [`table`]).
pub fn format_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let n = headers.len();
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    let mut numeric = vec![!rows.is_empty(); n];
    for r in rows {
        for (i, c) in r.iter().enumerate().take(n) {
            w[i] = w[i].max(c.chars().count());
            if c.parse::<f64>().is_err() {
                numeric[i] = false;
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let s: Vec<String> = cells
            .enumerate()
            .map(|(i, c)| if numeric[i] { format!("{c:>0$}", w[i]) } else { format!("{c:<0$}", w[i]) })
            .collect();
        out.push_str(s.join("  ").trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for r in rows {
        line(&mut r.iter().map(|s| s.as_str()));
    }
    out
}

fn dash<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn vlan_text(p: &PortInfo) -> String {
    match (&p.vlan, &p.trunks) {
        (Some(v), _) => v.to_string(),
        (None, Some(t)) => {
            let t: Vec<String> = t.iter().map(|v| v.to_string()).collect();
            match p.native_vlan {
                Some(n) => format!("trunk {} native {n}", t.join(",")),
                None => format!("trunk {}", t.join(",")),
            }
        }
        (None, None) => "-".into(),
    }
}

fn macs_text(p: &PortInfo) -> String {
    if p.macs.is_empty() {
        "any".into()
    } else if p.promiscuous {
        format!("{} (promiscuous)", p.macs.join(","))
    } else {
        p.macs.join(",")
    }
}

fn endpoint(p: &PortInfo) -> String {
    match (&p.socket, &p.ifname) {
        (Some(s), _) if p.mode.as_deref() == Some("client") => format!("{s} (client)"),
        (Some(s), _) => s.clone(),
        (None, Some(i)) => i.clone(),
        (None, None) => "-".into(),
    }
}

fn state(p: &PortInfo) -> &'static str {
    match (p.kind.as_str(), p.connected) {
        ("tap", _) => "up",
        (_, true) => "connected",
        (_, false) => "waiting",
    }
}

fn print_ports(ports: &[PortInfo]) {
    let rows: Vec<Vec<String>> = ports
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.kind.clone(),
                endpoint(p),
                vlan_text(p),
                macs_text(p),
                dash(p.diag.clone()),
                state(p).into(),
            ]
        })
        .collect();
    table(&["NAME", "TYPE", "SOCKET/IFNAME", "VLAN", "MACS", "DIAG", "STATE"], &rows);
}

fn print_port_counters(s: &PortStats) {
    let kv = |k: &str, v: String| println!("  {k:<12} {v}");
    kv("rx", format!("{} packets, {} bytes (from the port)", s.rx_packets, s.rx_bytes));
    kv("tx", format!("{} packets, {} bytes (to the port)", s.tx_packets, s.tx_bytes));
    let d: Vec<String> =
        s.drops.by_reason().iter().filter(|(_, n)| *n > 0).map(|(r, n)| format!("{r} {n}")).collect();
    kv("drops", if d.is_empty() { "0".into() } else { format!("{} ({})", s.drops.total(), d.join(", ")) });
    kv(
        "events",
        format!(
            "{} bursts, {} kicks, {} interrupts, {} ring errors",
            s.bursts, s.kicks, s.interrupts, s.ring_errors
        ),
    );
    if s.queues.len() > 1 || s.kind != "tap" {
        println!();
        let rows: Vec<Vec<String>> = s
            .queues
            .iter()
            .map(|q| {
                vec![
                    q.queue.to_string(),
                    q.rx_packets.to_string(),
                    q.rx_bytes.to_string(),
                    q.rx_bursts.to_string(),
                    q.tx_packets.to_string(),
                    q.tx_bytes.to_string(),
                ]
            })
            .collect();
        table(&["QUEUE", "RX PACKETS", "RX BYTES", "RX BURSTS", "TX PACKETS", "TX BYTES"], &rows);
    }
}

fn print_show(s: &PortShow) {
    let p = &s.info;
    let kv = |k: &str, v: String| println!("  {k:<12} {v}");
    println!("port {}", p.name);
    kv("type", p.kind.clone());
    if let Some(sock) = &p.socket {
        kv("socket", format!("{sock} ({})", p.mode.as_deref().unwrap_or("server")));
    }
    if let Some(i) = &p.ifname {
        kv("ifname", i.clone());
    }
    kv("state", state(p).into());
    if p.kind == "vhost-user" {
        kv("queue pairs", p.queue_pairs.to_string());
        kv("mac", dash(p.mac.clone()));
        kv("mtu", dash(p.mtu));
    }
    kv("vlan", vlan_text(p));
    kv("macs", macs_text(p));
    kv("diag", dash(p.diag.clone()));
    kv("worker", p.worker.clone());
    print_port_counters(&s.stats);
}

fn print_stats(r: &StatsReport) {
    let rows: Vec<Vec<String>> = r
        .ports
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.kind.clone(),
                p.rx_packets.to_string(),
                p.rx_bytes.to_string(),
                p.tx_packets.to_string(),
                p.tx_bytes.to_string(),
                p.drops.total().to_string(),
                p.ring_errors.to_string(),
            ]
        })
        .collect();
    table(
        &["PORT", "TYPE", "RX PACKETS", "RX BYTES", "TX PACKETS", "TX BYTES", "DROPS", "RING ERRORS"],
        &rows,
    );
    println!();
    let rows: Vec<Vec<String>> = r
        .workers
        .iter()
        .map(|w| {
            vec![
                w.name.clone(),
                w.packets.to_string(),
                format!("{:.1}", w.busy_cycles_per_packet),
                w.busy_cycles.to_string(),
                w.idle_cycles.to_string(),
                w.sleeps.to_string(),
                w.mode.clone(),
                if w.mode == "adaptive" { format!("{:.0}", w.poll_window_us) } else { "-".into() },
                format!("{:.2}", w.cpu_seconds),
            ]
        })
        .collect();
    table(
        &[
            "WORKER",
            "PACKETS",
            "CYCLES/PKT",
            "BUSY CYCLES",
            "IDLE CYCLES",
            "SLEEPS",
            "MODE",
            "WINDOW US",
            "CPU S",
        ],
        &rows,
    );
    let f = &r.fdb;
    println!(
        "\nfdb: {} entries; {} learned, {} moved, {} aged; refused {} (port cap) {} (table cap)",
        f.entries, f.learned, f.moves, f.aged, f.refused_port_cap, f.refused_global_cap
    );
}

/// `virtwire port ...`.
pub fn port(run_dir: &Path, cmd: PortCmd) -> Result<()> {
    match cmd {
        PortCmd::Add(a) => {
            let a = *a;
            let cfg = PortConfig {
                name: a.name,
                kind: a.kind,
                socket: a.socket.map(absolute).transpose()?,
                mode: a.mode,
                queue_pairs: a.queue_pairs,
                mac: a.mac,
                mtu: a.mtu,
                ifname: a.ifname,
                vlan: a.vlan,
                trunks: a.trunks,
                native_vlan: a.native_vlan,
                macs: a.macs,
                promiscuous: a.promiscuous.then_some(true),
                diag: a.diag,
                diag_frame_size: a.diag_frame_size,
                coalesce_rx_usecs: a.coalesce_rx_usecs,
                coalesce_rx_frames: a.coalesce_rx_frames,
                coalesce_tx_usecs: a.coalesce_tx_usecs,
                coalesce_tx_frames: a.coalesce_tx_frames,
                event_idx: a.no_event_idx.then_some(false),
            };
            let (_, info): (_, PortInfo) = call(run_dir, &Request::PortAdd { port: Box::new(cfg) })?;
            println!("port {}: {}", info.name, crate::switch::describe(&info));
        }
        PortCmd::Del { name } => {
            control::request(run_dir, &Request::PortDel { name })?;
        }
        PortCmd::List { json } => {
            let (v, ports): (_, Vec<PortInfo>) = call(run_dir, &Request::PortList)?;
            if json {
                print_json(&v)?;
            } else {
                print_ports(&ports);
            }
        }
        PortCmd::Show { name, json } => {
            let (v, s): (_, PortShow) = call(run_dir, &Request::PortShow { name })?;
            if json {
                print_json(&v)?;
            } else {
                print_show(&s);
            }
        }
    }
    Ok(())
}

/// `virtwire fdb ...`.
pub fn fdb(run_dir: &Path, cmd: FdbCmd) -> Result<()> {
    match cmd {
        FdbCmd::Show { json } => {
            let (v, entries): (_, Vec<FdbEntry>) = call(run_dir, &Request::FdbShow)?;
            if json {
                print_json(&v)?;
            } else {
                let rows: Vec<Vec<String>> = entries
                    .iter()
                    .map(|e| {
                        vec![e.port.clone(), e.vlan.to_string(), e.mac.clone(), e.age_seconds.to_string()]
                    })
                    .collect();
                table(&["PORT", "VLAN", "MAC", "AGE"], &rows);
            }
        }
        FdbCmd::Flush { port } => {
            control::request(run_dir, &Request::FdbFlush { port })?;
        }
    }
    Ok(())
}

/// `virtwire stats [PORT]`.
pub fn stats(run_dir: &Path, port: Option<String>, json: bool) -> Result<()> {
    match port {
        Some(p) => {
            let (v, s): (_, PortStats) = call(run_dir, &Request::Stats { port: Some(p) })?;
            if json {
                print_json(&v)?;
            } else {
                println!(
                    "port {} ({}, {})",
                    s.name,
                    s.kind,
                    if s.connected { "connected" } else { "waiting" }
                );
                print_port_counters(&s);
            }
        }
        None => {
            let (v, r): (_, StatsReport) = call(run_dir, &Request::Stats { port: None })?;
            if json {
                print_json(&v)?;
            } else {
                print_stats(&r);
            }
        }
    }
    Ok(())
}
