//! `virtwire stats --watch`: the switch's counters as rates, refreshed like `top`.
//!
//! Per worker: its polling mode and window, how much of the time it was awake it spent
//! moving frames (busy cycles over busy + idle cycles), its CPU use, frames per second
//! and busy cycles per frame. Per port and queue pair: packets and megabits per second
//! each way, the mean burst size, polls that found nothing, kicks, interrupts sent and
//! suppressed, and drops, all per second over the last interval.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::api::{Request, StatsReport};
use crate::cli::{call, format_table};

fn per_s(now: u64, before: u64, secs: f64) -> f64 {
    now.saturating_sub(before) as f64 / secs
}

fn rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Renders one screen from two reports `secs` apart.
pub fn render(prev: &StatsReport, cur: &StatsReport, secs: f64, only: Option<&str>) -> String {
    let mut out = Vec::new();
    let rows: Vec<Vec<String>> = cur
        .workers
        .iter()
        .map(|w| {
            let p = prev.workers.iter().find(|p| p.name == w.name).cloned().unwrap_or_default();
            let busy = w.busy_cycles.saturating_sub(p.busy_cycles);
            let idle = w.idle_cycles.saturating_sub(p.idle_cycles);
            let pkts = w.packets.saturating_sub(p.packets);
            vec![
                w.name.clone(),
                w.mode.clone(),
                if w.mode == "adaptive" { format!("{:.0}", w.poll_window_us) } else { "-".into() },
                format!("{:.1}", 100.0 * (w.cpu_seconds - p.cpu_seconds).max(0.0) / secs),
                format!(
                    "{:.1}",
                    if busy + idle == 0 { 0.0 } else { 100.0 * busy as f64 / (busy + idle) as f64 }
                ),
                rate(pkts as f64 / secs),
                if pkts == 0 { "-".into() } else { format!("{:.0}", busy as f64 / pkts as f64) },
                rate(per_s(w.sleeps, p.sleeps, secs)),
                rate(per_s(w.yields, p.yields, secs)),
            ]
        })
        .collect();
    let _ = writeln!(
        out,
        "{}",
        format_table(
            &["WORKER", "MODE", "WINDOW US", "CPU %", "BUSY %", "PKTS/S", "CYC/PKT", "SLEEPS/S", "YIELDS/S"],
            &rows,
        )
    );
    let mut rows = Vec::new();
    for port in cur.ports.iter().filter(|p| only.is_none_or(|o| o == p.name)) {
        let pp = prev.ports.iter().find(|p| p.name == port.name);
        let drops_now: u64 = port.drops.by_reason().iter().map(|(_, v)| v).sum();
        let drops_before: u64 = pp.map(|p| p.drops.by_reason().iter().map(|(_, v)| v).sum()).unwrap_or(0);
        for q in &port.queues {
            let pq =
                pp.and_then(|p| p.queues.iter().find(|x| x.queue == q.queue)).cloned().unwrap_or_default();
            let bursts = q.rx_bursts.saturating_sub(pq.rx_bursts);
            let rxp = q.rx_packets.saturating_sub(pq.rx_packets);
            rows.push(vec![
                port.name.clone(),
                q.queue.to_string(),
                rate(rxp as f64 / secs),
                format!("{:.1}", per_s(q.rx_bytes, pq.rx_bytes, secs) * 8.0 / 1e6),
                rate(per_s(q.tx_packets, pq.tx_packets, secs)),
                format!("{:.1}", per_s(q.tx_bytes, pq.tx_bytes, secs) * 8.0 / 1e6),
                if bursts == 0 { "-".into() } else { format!("{:.1}", rxp as f64 / bursts as f64) },
                rate(per_s(q.empty_polls, pq.empty_polls, secs)),
                rate(per_s(q.kicks, pq.kicks, secs)),
                rate(per_s(q.interrupts, pq.interrupts, secs)),
                rate(per_s(q.interrupts_suppressed, pq.interrupts_suppressed, secs)),
                if q.queue == 0 { rate(per_s(drops_now, drops_before, secs)) } else { String::new() },
            ]);
        }
    }
    let _ = writeln!(
        out,
        "{}",
        format_table(
            &[
                "PORT",
                "Q",
                "RX PPS",
                "RX MBIT/S",
                "TX PPS",
                "TX MBIT/S",
                "BURST",
                "EMPTY/S",
                "KICKS/S",
                "IRQ/S",
                "NO IRQ/S",
                "DROPS/S",
            ],
            &rows,
        )
    );
    let f = &cur.fdb;
    let _ = write!(
        out,
        "fdb: {} entries, {} learned/s, {} moves/s",
        f.entries,
        rate(per_s(f.learned, prev.fdb.learned, secs)),
        rate(per_s(f.moves, prev.fdb.moves, secs))
    );
    String::from_utf8_lossy(&out).into_owned()
}

/// Polls the switch every `interval` and prints rates; stops after `count` screens
/// (None: until interrupted).
pub fn run(run_dir: &Path, port: Option<&str>, interval: Duration, count: Option<u64>) -> Result<()> {
    let tty = std::io::stdout().is_terminal();
    let (_, mut prev): (_, StatsReport) = call(run_dir, &Request::Stats { port: None })?;
    let mut t = Instant::now();
    let mut shown = 0;
    while count.is_none_or(|c| shown < c) {
        std::thread::sleep(interval);
        let (_, cur): (_, StatsReport) = call(run_dir, &Request::Stats { port: None })?;
        let secs = t.elapsed().as_secs_f64().max(1e-3);
        t = Instant::now();
        let screen = render(&prev, &cur, secs, port);
        let mut o = std::io::stdout().lock();
        if tty {
            // Home and clear, like top.
            write!(o, "\x1b[H\x1b[2J")?;
        }
        writeln!(o, "virtwire stats, every {:.1} s (Ctrl-C quits)\n{screen}\n", interval.as_secs_f64())?;
        o.flush()?;
        prev = cur;
        shown += 1;
    }
    Ok(())
}
