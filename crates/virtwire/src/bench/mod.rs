//! Benchmark commands. Each prints a table, or with `--json` JSON: one array for
//! `ring`, one object for the traffic commands.

pub mod ring;
pub mod traffic;

use anyhow::Result;
use clap::{Args, Subcommand};

/// Runs one benchmark command.
pub fn main(cmd: BenchCmd) -> Result<()> {
    match cmd {
        BenchCmd::Ring(a) => bench_ring(a),
        BenchCmd::Gen(a) => bench_traffic(traffic::Mode::Gen, a),
        BenchCmd::Sink(a) => bench_traffic(traffic::Mode::Sink, a),
        BenchCmd::Loop(a) => bench_traffic(traffic::Mode::Loop, a),
        BenchCmd::Pingpong(a) => bench_traffic(traffic::Mode::Pingpong, a),
        BenchCmd::Cacheline { json } => {
            let ns = ring::cacheline_rtt_ns();
            if json {
                println!("{}", serde_json::json!({ "cacheline_rtt_ns": ns.round() }));
            } else {
                println!("CPU0 <-> CPU1 cache-line round trip: {ns:.0} ns");
            }
            Ok(())
        }
    }
}

/// Prints rows as an aligned text table.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> =
            cells.iter().enumerate().map(|(i, c)| format!("{:>width$}", c, width = w[i])).collect();
        println!("{}", s.join("  "));
    };
    line(headers.to_vec());
    line(w.iter().map(|n| "-".repeat(*n)).collect::<Vec<_>>().iter().map(|s| s.as_str()).collect());
    for r in rows {
        line(r.iter().map(|s| s.as_str()).collect());
    }
}

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Raw virtqueue throughput: split, packed and rust-vmm virtio-queue, 1 and 2 threads.
    Ring(RingArgs),
    /// Transmit test frames through a vhost-user backend (virtio-user frontend).
    Gen(traffic::TrafficArgs),
    /// Receive and verify frames from a vhost-user backend.
    Sink(traffic::TrafficArgs),
    /// Transmit one burst, then send back everything received (like testpmd io fwd
    /// with --tx-first; another burst after 200 ms without traffic).
    Loop(traffic::TrafficArgs),
    /// One frame in flight per queue pair: round-trip latency percentiles.
    Pingpong(traffic::TrafficArgs),
    /// Round trip of one cache line between CPU 0 and CPU 1 in ns: how far apart the
    /// host placed the two CPUs (compare benchmark runs only under the same placement).
    Cacheline {
        /// Print `{"cacheline_rtt_ns": N}`.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct RingArgs {
    /// Print one JSON array instead of a table.
    #[arg(long)]
    json: bool,
    /// Milliseconds per measurement.
    #[arg(long, default_value_t = 700)]
    duration_ms: u64,
    /// Measurements per row; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Ring size (a power of two).
    #[arg(long, default_value_t = 256)]
    size: u16,
    /// Buffer size in bytes.
    #[arg(long, default_value_t = 64)]
    buf_len: u32,
    /// Batch sizes, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    batch: Vec<usize>,
    /// Rows to run, comma separated: split, packed, virtio-queue (default: all).
    #[arg(long, value_delimiter = ',')]
    layout: Vec<String>,
    /// Thread counts, comma separated: 1 (driver and device in one thread), 2.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<u32>,
}

fn bench_traffic(mode: traffic::Mode, a: traffic::TrafficArgs) -> Result<()> {
    let r = traffic::run(mode, &a)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        traffic::print(&r);
    }
    Ok(())
}

fn bench_ring(a: RingArgs) -> Result<()> {
    virtq::check_size(a.size as u32)?;
    anyhow::ensure!(a.buf_len > 0 && a.buf_len <= 65536, "--buf-len must be between 1 and 65536");
    anyhow::ensure!(a.batch.iter().all(|b| *b >= 1 && *b <= 64), "--batch values must be between 1 and 64");
    anyhow::ensure!(a.threads.iter().all(|t| *t == 1 || *t == 2), "--threads values must be 1 or 2");
    for l in &a.layout {
        anyhow::ensure!(
            ["split", "packed", "virtio-queue"].contains(&l.as_str()),
            "--layout {l:?}: expected split, packed or virtio-queue"
        );
    }
    let opts = ring::RingOpts {
        duration_ms: a.duration_ms,
        repeat: a.repeat,
        size: a.size,
        buf_len: a.buf_len,
        batches: a.batch,
        layouts: a.layout,
        threads: a.threads,
    };
    let rtt = ring::cacheline_rtt_ns();
    let rows = ring::run(&opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "ring size {}, {}-byte buffers, EVENT_IDX on, median of {} x {} ms; CPU0<->CPU1 cache-line round trip {:.0} ns",
        opts.size, opts.buf_len, opts.repeat, opts.duration_ms, rtt
    );
    println!(
        "per-queue device state: {} bytes (queue of either layout, any size, plus a 32-chain burst)",
        virtq::per_queue_state_bytes(32)
    );
    let base = |threads: u32, batch: usize| {
        rows.iter()
            .find(|r| r.layout == "virtio-queue" && r.threads == threads && r.batch == batch)
            .map(|r| r.mops)
    };
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let ratio = base(r.threads, r.batch).map(|b| format!("{:.2}x", r.mops / b)).unwrap_or_default();
            vec![
                r.layout.to_string(),
                r.threads.to_string(),
                r.batch.to_string(),
                format!("{:.2}", r.mops),
                ratio,
                format!("{:.1}", r.kicks_per_mdesc),
                format!("{:.1}", r.irqs_per_mdesc),
                r.runs.iter().map(|x| format!("{x:.1}")).collect::<Vec<_>>().join(" "),
            ]
        })
        .collect();
    print_table(
        &["layout", "threads", "batch", "Mdesc/s", "vs virtio-queue", "kicks/Mdesc", "irqs/Mdesc", "runs"],
        &table,
    );
    Ok(())
}
