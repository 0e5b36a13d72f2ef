//! `virtwire bench gen|sink|loop|pingpong`: traffic through a vhost-user backend,
//! driven by our virtio-user frontend (the role DPDK's virtio-user PMD plays for
//! testpmd).
//!
//! Threads: one per queue pair, each polling only its own pair (busy polling unless
//! `--wait`, which blocks on the receive queue's call eventfd when idle). Frames are
//! the test frames of [`virtio_user::frame`]: unicast MACs, a sequence number and a
//! pattern, so receivers can verify them.
//!
//! Behind a learning switch a reflector must swap the MACs of what it sends back
//! (`loop --swap-macs`; `pingpong --reflector` serves a second port that way from
//! its own thread), and a receiver that never transmits must announce itself once
//! (`sink --announce`) or the switch floods everything sent to it.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;
use virtio_user::{frame, Config, FrontendListener, Layout, Packet, QueuePair, VirtioUser};

use crate::sys;

/// Which traffic command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Transmit only.
    Gen,
    /// Receive only.
    Sink,
    /// Transmit one burst, then send back everything received (testpmd io fwd with
    /// --tx-first).
    Loop,
    /// One frame in flight per queue pair; round-trip latency.
    Pingpong,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Gen => "gen",
            Mode::Sink => "sink",
            Mode::Loop => "loop",
            Mode::Pingpong => "pingpong",
        }
    }
}

/// on | off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

/// A MAC address written as six hex bytes separated by colons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut m = [0u8; 6];
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(format!("MAC {s:?}: expected six bytes like 02:00:00:00:00:01"));
        }
        for (b, p) in m.iter_mut().zip(parts) {
            *b = u8::from_str_radix(p, 16).map_err(|_| format!("MAC {s:?}: {p:?} is not a hex byte"))?;
        }
        Ok(Mac(m))
    }
}

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

/// Destination MAC when the backend does not give one in its config space.
pub const DEFAULT_DST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

/// Arguments shared by the traffic commands.
#[derive(Args, Debug, Clone)]
pub struct TrafficArgs {
    /// vhost-user socket of the backend.
    #[arg(long)]
    pub socket: PathBuf,
    /// Listen on --socket and wait for the backend to connect (for backends in client
    /// mode, such as DPDK's vhost PMD with client=1).
    #[arg(long)]
    pub server: bool,
    /// Frame size in bytes (Ethernet header and payload, no FCS).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Queue pairs (one thread each).
    #[arg(long, default_value_t = 1)]
    pub queues: u16,
    /// Ring layout: split or packed.
    #[arg(long, default_value = "split")]
    pub layout: Layout,
    /// Mergeable receive buffers (VIRTIO_NET_F_MRG_RXBUF).
    #[arg(long, value_enum, default_value = "on")]
    pub mrg_rxbuf: OnOff,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Frames per burst.
    #[arg(long, default_value_t = 32)]
    pub burst: usize,
    /// Entries per virtqueue.
    #[arg(long, default_value_t = 256)]
    pub queue_size: u16,
    /// Destination MAC (default: the MAC in the backend's config space when it has one,
    /// else 02:00:00:00:00:02).
    #[arg(long)]
    pub dst_mac: Option<Mac>,
    /// Source MAC.
    #[arg(long, default_value = "02:00:00:00:00:01")]
    pub src_mac: Mac,
    /// When idle, block on the receive call eventfd instead of busy polling.
    #[arg(long)]
    pub wait: bool,
    /// Pingpong: seconds to wait for a reply before counting the frame lost.
    #[arg(long, default_value_t = 0.2)]
    pub reply_timeout: f64,
    /// Pingpong: start a round trip at most every this many microseconds (a steady
    /// sender, e.g. 100 for 10 kpps); 0: back to back.
    #[arg(long, default_value_t = 0)]
    pub interval_us: u64,
    /// Pingpong with --interval-us: sleep until the next send instead of spinning (the
    /// reply is still awaited by polling unless --wait).
    #[arg(long)]
    pub sleep_pacing: bool,
    /// Pingpong: also drive the vhost-user port at this socket (a second device, one
    /// queue pair) from the same thread, sending every frame it receives back with its
    /// MACs swapped: each round trip crosses the backend twice, --socket to this port
    /// and back. With --server both sockets listen.
    #[arg(long)]
    pub reflector: Option<PathBuf>,
    /// Loop: send frames back with source and destination MACs swapped (a reflector
    /// behind a learning switch).
    #[arg(long)]
    pub swap_macs: bool,
    /// Loop: send no first burst (and none after a silence): only send back what
    /// arrives, e.g. as the far end of a pingpong.
    #[arg(long)]
    pub reflect_only: bool,
    /// Sink: first send one broadcast test frame from --src-mac, so that a learning
    /// switch knows which port the sink is on.
    #[arg(long)]
    pub announce: bool,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub min: f64,
    pub mean: f64,
    /// Round trips measured.
    pub samples: u64,
    /// Frames whose reply did not come within the reply timeout.
    pub lost: u64,
}

/// The report: one JSON object with --json.
#[derive(Debug, Clone, Serialize)]
pub struct TrafficReport {
    pub mode: &'static str,
    pub socket: String,
    pub layout: &'static str,
    pub mrg_rxbuf: bool,
    pub queues: u16,
    /// One polling thread per queue pair.
    pub threads: u16,
    pub size: usize,
    pub burst: usize,
    pub duration_s: f64,
    /// gen: frames sent; sink: received; loop: received and sent back; pingpong: round
    /// trips.
    pub packets: u64,
    /// Frame bytes counted in `packets` (no virtio-net header, no FCS).
    pub bytes: u64,
    pub pps: f64,
    /// Frame bits per second (`bytes` * 8 / duration: no preamble, gap or FCS).
    pub bps: f64,
    /// CPU time (user + system) this process used while the traffic ran.
    pub cpu_seconds: f64,
    pub tx_packets: u64,
    pub rx_packets: u64,
    /// Received frames that are not test frames.
    pub rx_foreign: u64,
    /// Received test frames with a wrong length or pattern.
    pub rx_corrupt: u64,
    /// Virtio features acked, in hex.
    pub features: String,
    /// Pingpong with --reflector: frames the reflector port sent back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reflected: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<Latency>,
}

/// Log-linear latency histogram (128 sub-buckets per power of two: under 0.8% error),
/// preallocated so that recording allocates nothing.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    n: u64,
    sum: u128,
    min: u64,
    max: u64,
}

const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;

impl Default for Histogram {
    fn default() -> Self {
        Self { counts: vec![0; (64 * SUB) as usize], n: 0, sum: 0, min: u64::MAX, max: 0 }
    }
}

impl Histogram {
    fn index(v: u64) -> usize {
        if v < 2 * SUB {
            return v as usize;
        }
        let shift = 63 - v.leading_zeros() - SUB_BITS;
        (shift as u64 * SUB + (v >> shift)) as usize
    }

    /// Midpoint of bucket `i`.
    fn value(i: usize) -> f64 {
        let i = i as u64;
        if i < 2 * SUB {
            return i as f64;
        }
        let shift = i / SUB - 1;
        let mant = i - shift * SUB;
        let lo = mant << shift;
        lo as f64 + ((1u64 << shift) - 1) as f64 / 2.0
    }

    /// Records one value (nanoseconds).
    pub fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.n += 1;
        self.sum += v as u128;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.n += o.n;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }

    /// The value at quantile `q` (0..=1); the exact maximum for q = 1.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        if q >= 1.0 {
            return self.max as f64;
        }
        let rank = ((q * self.n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value(i).clamp(self.min as f64, self.max as f64);
            }
        }
        self.max as f64
    }
}

/// What one queue pair's thread counted.
#[derive(Debug, Default)]
struct WorkerResult {
    tx_packets: u64,
    tx_bytes: u64,
    rx_packets: u64,
    rx_bytes: u64,
    foreign: u64,
    corrupt: u64,
    lost: u64,
    reflected: u64,
    hist: Option<Histogram>,
}

/// Everything a worker needs besides its queue pair.
#[derive(Debug, Clone, Copy)]
struct Plan {
    mode: Mode,
    size: usize,
    burst: usize,
    dst: [u8; 6],
    src: [u8; 6],
    wait: bool,
    duration: Duration,
    reply_timeout: Duration,
    interval_us: u64,
    sleep_pacing: bool,
    swap_macs: bool,
    reflect_only: bool,
    announce: bool,
}

/// Loop mode: silence after which another first burst is sent.
const REPRIME: Duration = Duration::from_millis(200);

/// Bytes of the scratch buffer frames are received into (largest frame we accept).
const RX_SCRATCH: usize = 65536;

/// Swaps the destination and source MACs of a frame in place.
fn swap_macs(f: &mut [u8]) {
    if f.len() >= 12 {
        for i in 0..6 {
            f.swap(i, i + 6);
        }
    }
}

/// Sends back, MACs swapped, whatever the reflector port `r` received; returns how many.
fn reflect(r: &mut QueuePair, pkts: &mut [Packet], deadline: Instant) -> Result<u64> {
    let n = r.rx_burst(pkts)?;
    for p in &mut pkts[..n] {
        let len = p.len();
        swap_macs(&mut p.buf_mut()[..len]);
    }
    let mut sent = 0;
    while sent < n {
        sent += r.tx_burst(&pkts[sent..n])?;
        if Instant::now() >= deadline {
            break;
        }
    }
    Ok(sent as u64)
}

fn worker(
    qp: &mut QueuePair,
    mut refl: Option<&mut QueuePair>,
    plan: Plan,
    go: &Barrier,
) -> Result<WorkerResult> {
    let q = qp.index();
    let mut res = WorkerResult::default();
    // Everything the loop touches is allocated here, before the clock starts.
    let mut frames: Vec<Vec<u8>> = (0..plan.burst).map(|_| vec![0u8; plan.size]).collect();
    for f in &mut frames {
        frame::build(f, plan.dst, plan.src, q);
    }
    let mut pkts: Vec<Packet> = (0..plan.burst).map(|_| Packet::with_capacity(RX_SCRATCH)).collect();
    let mut scratch = vec![0u8; RX_SCRATCH];
    let idle_wait = Duration::from_millis(10);
    go.wait();
    let start = Instant::now();
    let deadline = start + plan.duration;
    match plan.mode {
        Mode::Gen => {
            let mut seq = 0u64;
            while Instant::now() < deadline {
                for (i, f) in frames.iter_mut().enumerate() {
                    frame::stamp(f, seq + i as u64, 0);
                }
                let n = qp.tx_burst(&frames)?;
                seq += n as u64;
                res.tx_packets += n as u64;
                res.tx_bytes += (n * plan.size) as u64;
                if n == 0 {
                    std::hint::spin_loop();
                }
            }
        }
        Mode::Sink => {
            if plan.announce {
                // Sequence number u64::MAX: no pingpong waiting for its first reply
                // mistakes it for one.
                let mut f = vec![0u8; frame::MIN_LEN];
                frame::build(&mut f, [0xff; 6], plan.src, q);
                frame::stamp(&mut f, u64::MAX, 0);
                res.tx_packets += qp.tx_burst(std::slice::from_ref(&f))? as u64;
            }
            while Instant::now() < deadline {
                let n = qp.rx_burst_with(plan.burst, &mut scratch, |f, _| {
                    res.rx_bytes += f.len() as u64;
                    match frame::check(f) {
                        Ok(_) => {}
                        Err(frame::FrameError::NotOurs) => res.foreign += 1,
                        Err(_) => res.corrupt += 1,
                    }
                })?;
                res.rx_packets += n as u64;
                if n == 0 && plan.wait {
                    qp.wait_rx(idle_wait.min(deadline.saturating_duration_since(Instant::now())))?;
                }
            }
        }
        Mode::Loop => {
            // --tx-first: one burst starts the loop. If nothing has come back for
            // REPRIME (the backend dropped the burst, e.g. testpmd drains its queues
            // when it starts forwarding), another burst restarts it.
            let mut seq = 0u64;
            let mut last_rx = Instant::now() - REPRIME;
            while Instant::now() < deadline {
                if !plan.reflect_only && last_rx.elapsed() >= REPRIME {
                    for (i, f) in frames.iter_mut().enumerate() {
                        frame::stamp(f, seq + i as u64, 0);
                    }
                    let n = qp.tx_burst(&frames)?;
                    seq += n as u64;
                    res.tx_packets += n as u64;
                    res.tx_bytes += (n * plan.size) as u64;
                    last_rx = Instant::now();
                }
                let n = qp.rx_burst(&mut pkts)?;
                if n == 0 {
                    if plan.wait {
                        qp.wait_rx(idle_wait.min(deadline.saturating_duration_since(Instant::now())))?;
                    }
                    continue;
                }
                last_rx = Instant::now();
                res.rx_packets += n as u64;
                for p in &mut pkts[..n] {
                    res.rx_bytes += p.len() as u64;
                    if frame::peek(p.data()).is_err() {
                        res.foreign += 1;
                    }
                    if plan.swap_macs {
                        let len = p.len();
                        swap_macs(&mut p.buf_mut()[..len]);
                    }
                }
                // Send everything back; a full ring pushes back rather than drops.
                let mut sent = 0;
                while sent < n {
                    sent += qp.tx_burst(&pkts[sent..n])?;
                    if Instant::now() >= deadline {
                        break;
                    }
                }
                res.tx_packets += sent as u64;
                res.tx_bytes += pkts[..sent].iter().map(|p| p.len() as u64).sum::<u64>();
            }
        }
        Mode::Pingpong => {
            let mut hist = Histogram::default();
            let f = &mut frames[0];
            let mut seq = 0u64;
            let interval = Duration::from_micros(plan.interval_us);
            let mut next = Instant::now();
            'outer: while Instant::now() < deadline {
                if !interval.is_zero() {
                    // Paced: wait for the next slot, spinning for precision unless asked
                    // to sleep (the round trip is timed from the actual send either way).
                    if plan.sleep_pacing {
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        }
                    }
                    while Instant::now() < next {
                        std::hint::spin_loop();
                    }
                    next += interval;
                }
                let t0 = Instant::now();
                frame::stamp(f, seq, t0.duration_since(start).as_nanos() as u64);
                while qp.tx_burst(std::slice::from_ref(&*f))? == 0 {
                    if Instant::now() >= deadline {
                        break 'outer;
                    }
                }
                res.tx_packets += 1;
                res.tx_bytes += plan.size as u64;
                let reply_by = t0 + plan.reply_timeout;
                let mut done = false;
                while !done {
                    if let Some(r) = refl.as_deref_mut() {
                        res.reflected += reflect(r, &mut pkts, reply_by)?;
                    }
                    let mut rtt = None;
                    let n = qp.rx_burst_with(plan.burst, &mut scratch, |fr, _| match frame::check(fr) {
                        Ok(info) if info.seq == seq && info.queue == q => rtt = Some(t0.elapsed()),
                        Ok(_) => {}
                        Err(frame::FrameError::NotOurs) => res.foreign += 1,
                        Err(_) => res.corrupt += 1,
                    })?;
                    res.rx_packets += n as u64;
                    if let Some(r) = rtt {
                        res.rx_bytes += plan.size as u64;
                        hist.record(r.as_nanos() as u64);
                        done = true;
                    } else {
                        let now = Instant::now();
                        if now >= reply_by {
                            res.lost += 1;
                            done = true;
                        } else if n == 0 && plan.wait {
                            qp.wait_rx(reply_by - now)?;
                        }
                    }
                }
                seq += 1;
            }
            res.hist = Some(hist);
        }
    }
    Ok(res)
}

/// The device on --socket and, with --reflector, the reflector's device.
fn connect(a: &TrafficArgs) -> Result<(VirtioUser, Option<VirtioUser>)> {
    let max_frame = a.size;
    let cfg = Config {
        queue_pairs: a.queues,
        queue_size: a.queue_size,
        layout: a.layout,
        mrg_rxbuf: a.mrg_rxbuf == OnOff::On,
        rx_buf_len: if a.mrg_rxbuf == OnOff::On { 2048 } else { (max_frame as u32 + 12).max(2048) },
        tx_buf_len: (max_frame as u32 + 12).max(2048),
        ..Config::default()
    };
    let on = |p: &PathBuf| format!("virtio-user on {}", p.display());
    if a.server {
        // Both sockets listen before either waits, so the backend may connect to them
        // in any order.
        let main = FrontendListener::bind(&a.socket).with_context(|| on(&a.socket))?;
        let refl = match &a.reflector {
            Some(p) => Some((FrontendListener::bind(p).with_context(|| on(p))?, p)),
            None => None,
        };
        let dev = main.accept(&cfg).with_context(|| on(&a.socket))?;
        let refl = match refl {
            Some((l, p)) => Some(l.accept(&cfg).with_context(|| on(p))?),
            None => None,
        };
        return Ok((dev, refl));
    }
    let dev = VirtioUser::connect(&a.socket, &cfg).with_context(|| on(&a.socket))?;
    let refl = match &a.reflector {
        Some(p) => Some(VirtioUser::connect(p, &cfg).with_context(|| on(p))?),
        None => None,
    };
    Ok((dev, refl))
}

/// Runs one traffic command and returns its report.
pub fn run(mode: Mode, a: &TrafficArgs) -> Result<TrafficReport> {
    anyhow::ensure!(
        a.size >= frame::MIN_LEN && a.size <= 9216,
        "--size must be between {} and 9216 bytes",
        frame::MIN_LEN
    );
    anyhow::ensure!(a.duration > 0.0 && a.duration.is_finite(), "--duration must be positive");
    anyhow::ensure!(a.burst >= 1 && a.burst <= 512, "--burst must be between 1 and 512");
    anyhow::ensure!(a.reply_timeout > 0.0 && a.reply_timeout.is_finite(), "--reply-timeout must be positive");
    if a.reflector.is_some() {
        anyhow::ensure!(mode == Mode::Pingpong, "--reflector is a pingpong option");
        anyhow::ensure!(a.queues == 1, "--reflector takes one queue pair");
        anyhow::ensure!(!a.wait, "--reflector polls both ports: it does not combine with --wait");
    }
    anyhow::ensure!(!a.swap_macs || mode == Mode::Loop, "--swap-macs is a loop option");
    anyhow::ensure!(!a.reflect_only || mode == Mode::Loop, "--reflect-only is a loop option");
    anyhow::ensure!(!a.announce || mode == Mode::Sink, "--announce is a sink option");
    anyhow::ensure!(!a.sleep_pacing || mode == Mode::Pingpong, "--sleep-pacing is a pingpong option");
    let (mut dev, mut refl_dev) = connect(a)?;
    let neg = dev.negotiated().clone();
    let dst = a.dst_mac.map(|m| m.0).or_else(|| neg.mac()).unwrap_or(DEFAULT_DST_MAC);
    let plan = Plan {
        mode,
        size: a.size,
        burst: a.burst,
        dst,
        src: a.src_mac.0,
        wait: a.wait,
        duration: Duration::from_secs_f64(a.duration),
        reply_timeout: Duration::from_secs_f64(a.reply_timeout),
        interval_us: a.interval_us,
        sleep_pacing: a.sleep_pacing,
        swap_macs: a.swap_macs,
        reflect_only: a.reflect_only,
        announce: a.announce,
    };
    let pairs = dev.queue_pairs_mut();
    let mut refl_pair = refl_dev.as_mut().map(|d| &mut d.queue_pairs_mut()[0]);
    let go = Barrier::new(pairs.len() + 1);
    let (results, elapsed, cpu) = std::thread::scope(|s| -> Result<_> {
        let go = &go;
        let handles: Vec<_> = pairs
            .iter_mut()
            .enumerate()
            .map(|(i, qp)| {
                let r = if i == 0 { refl_pair.take() } else { None };
                s.spawn(move || worker(qp, r, plan, go))
            })
            .collect();
        go.wait();
        let cpu0 = sys::process_cpu_seconds();
        let t0 = Instant::now();
        let mut results = Vec::new();
        for h in handles {
            results.push(h.join().map_err(|_| anyhow::anyhow!("traffic thread panicked"))??);
        }
        Ok((results, t0.elapsed().as_secs_f64(), sys::process_cpu_seconds() - cpu0))
    })?;
    dev.shutdown().context("shutting down the device")?;
    if let Some(d) = &mut refl_dev {
        d.shutdown().context("shutting down the reflector's device")?;
    }

    let sum = |f: fn(&WorkerResult) -> u64| results.iter().map(f).sum::<u64>();
    let (tx, rx) = (sum(|r| r.tx_packets), sum(|r| r.rx_packets));
    let (packets, bytes) = match mode {
        Mode::Gen => (tx, sum(|r| r.tx_bytes)),
        Mode::Sink | Mode::Loop => (rx, sum(|r| r.rx_bytes)),
        Mode::Pingpong => {
            let n = results.iter().filter_map(|r| r.hist.as_ref()).map(|h| h.n).sum::<u64>();
            (n, n * a.size as u64)
        }
    };
    let latency_us = (mode == Mode::Pingpong).then(|| {
        let mut h = Histogram::default();
        for r in &results {
            if let Some(x) = &r.hist {
                h.merge(x);
            }
        }
        let us = |ns: f64| (ns / 1e3 * 100.0).round() / 100.0;
        Latency {
            p50: us(h.quantile(0.50)),
            p90: us(h.quantile(0.90)),
            p99: us(h.quantile(0.99)),
            max: us(h.quantile(1.0)),
            min: us(if h.n > 0 { h.min as f64 } else { 0.0 }),
            mean: us(if h.n > 0 { h.sum as f64 / h.n as f64 } else { 0.0 }),
            samples: h.n,
            lost: sum(|r| r.lost),
        }
    });
    Ok(TrafficReport {
        mode: mode.name(),
        socket: a.socket.display().to_string(),
        layout: a.layout.name(),
        mrg_rxbuf: a.mrg_rxbuf == OnOff::On,
        queues: a.queues,
        threads: a.queues,
        size: a.size,
        burst: a.burst,
        duration_s: elapsed,
        packets,
        bytes,
        pps: packets as f64 / elapsed,
        bps: bytes as f64 * 8.0 / elapsed,
        cpu_seconds: cpu,
        tx_packets: tx,
        rx_packets: rx,
        rx_foreign: sum(|r| r.foreign),
        rx_corrupt: sum(|r| r.corrupt),
        features: format!("{:#x}", neg.features),
        reflected: a.reflector.as_ref().map(|_| sum(|r| r.reflected)),
        latency_us,
    })
}

/// Prints a report as a table.
pub fn print(r: &TrafficReport) {
    println!(
        "{} on {}: {} layout, mergeable rx {}, {} queue pair(s), one polling thread each; features {}",
        r.mode,
        r.socket,
        r.layout,
        if r.mrg_rxbuf { "on" } else { "off" },
        r.queues,
        r.features
    );
    let mut headers =
        vec!["mode", "size", "seconds", "packets", "Mpps", "Gbit/s", "cpu s", "tx", "rx", "bad rx"];
    let mut row = vec![
        r.mode.to_string(),
        r.size.to_string(),
        format!("{:.2}", r.duration_s),
        r.packets.to_string(),
        format!("{:.3}", r.pps / 1e6),
        format!("{:.3}", r.bps / 1e9),
        format!("{:.2}", r.cpu_seconds),
        r.tx_packets.to_string(),
        r.rx_packets.to_string(),
        (r.rx_foreign + r.rx_corrupt).to_string(),
    ];
    if let Some(l) = &r.latency_us {
        headers.extend(["p50 us", "p90 us", "p99 us", "max us", "lost"]);
        row.extend([
            format!("{:.2}", l.p50),
            format!("{:.2}", l.p90),
            format!("{:.2}", l.p99),
            format!("{:.2}", l.max),
            l.lost.to_string(),
        ]);
    }
    super::print_table(&headers, &[row]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_within_one_percent() {
        let mut h = Histogram::default();
        for v in 1..=100_000u64 {
            h.record(v * 10);
        }
        for (q, want) in [(0.5, 500_000.0), (0.9, 900_000.0), (0.99, 990_000.0)] {
            let got = h.quantile(q);
            assert!((got - want).abs() / want < 0.01, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.quantile(1.0), 1_000_000.0);
        let mut small = Histogram::default();
        small.record(7);
        assert_eq!(small.quantile(0.5), 7.0);
    }

    #[test]
    fn histogram_index_is_monotonic_and_continuous() {
        let mut last = 0;
        for v in 0..100_000u64 {
            let i = Histogram::index(v);
            assert!(i == last || i == last + 1, "v {v}: {last} -> {i}");
            assert!(Histogram::value(i) <= v as f64 + (v as f64) / 128.0 + 1.0);
            last = i;
        }
        assert!(Histogram::index(u64::MAX) < 64 * SUB as usize);
    }

    #[test]
    fn mac_parse() {
        assert_eq!("02:00:00:00:00:0a".parse::<Mac>().unwrap(), Mac([2, 0, 0, 0, 0, 10]));
        assert!("02:00:00:00:00".parse::<Mac>().is_err());
        assert!("zz:00:00:00:00:00".parse::<Mac>().is_err());
        assert_eq!(Mac([2, 0, 0, 0, 0, 10]).to_string(), "02:00:00:00:00:0a");
    }
}
