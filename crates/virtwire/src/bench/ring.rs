//! `virtwire bench ring`: raw virtqueue throughput, in the spirit of Linux's
//! tools/virtio/ringtest. A driver and a device exchange 64-byte buffers over one ring of
//! 256 entries; the device really reads every byte; notifications go through the real
//! suppression logic (EVENT_IDX negotiated; a kick or interrupt that the logic asks for
//! is a real eventfd write and is counted). Rows: our split ring, our packed ring, and
//! rust-vmm's virtio-queue as the device of the same split ring with the same driver.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use serde::Serialize;
use virtio_queue::{Queue, QueueT};
use virtq::{features, Buf, Burst, DeviceQueue, DriverQueue, GuestArena, Layout, RingAddrs, Used};
use vm_memory::{Address, Bytes, FileOffset, GuestAddress, GuestMemoryMmap};

use crate::sys::{self, EventFd};

/// Options of `bench ring`.
#[derive(Debug, Clone)]
pub struct RingOpts {
    /// Milliseconds per measurement.
    pub duration_ms: u64,
    /// Measurements per row (the median is reported).
    pub repeat: usize,
    /// Ring size.
    pub size: u16,
    /// Buffer size in bytes.
    pub buf_len: u32,
    /// Batch sizes to run.
    pub batches: Vec<usize>,
    /// Rows to run: "split", "packed", "virtio-queue" (empty: all).
    pub layouts: Vec<String>,
    /// Thread counts to run (1, 2).
    pub threads: Vec<u32>,
}

impl Default for RingOpts {
    fn default() -> Self {
        Self {
            duration_ms: 700,
            repeat: 3,
            size: 256,
            buf_len: 64,
            batches: vec![1, 32],
            layouts: Vec::new(),
            threads: vec![1, 2],
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct RingRow {
    /// "split", "packed" or "virtio-queue".
    pub layout: &'static str,
    /// 1: driver and device in one thread; 2: one thread each, on two CPUs.
    pub threads: u32,
    /// Descriptors per burst.
    pub batch: usize,
    /// Median million descriptors per second.
    pub mops: f64,
    /// Every measurement, in Mdesc/s.
    pub runs: Vec<f64>,
    /// Kicks the driver sent per million descriptors (median run).
    pub kicks_per_mdesc: f64,
    /// Interrupts the device sent per million descriptors (median run).
    pub irqs_per_mdesc: f64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ours(Layout),
    VirtioQueue,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Ours(l) => l.name(),
            Kind::VirtioQueue => "virtio-queue",
        }
    }
    fn layout(self) -> Layout {
        match self {
            Kind::Ours(l) => l,
            Kind::VirtioQueue => Layout::Split,
        }
    }
}

const FEATURES: u64 = features::VERSION_1 | features::EVENT_IDX | features::INDIRECT_DESC;

/// The device side under test.
trait BenchDevice: Send {
    /// One burst: pop up to `batch`, read every byte, complete, publish, decide on an
    /// interrupt. Returns descriptors completed and whether an interrupt is due.
    fn step(&mut self, batch: usize) -> Result<(usize, bool)>;
    /// Tells the driver not to kick (the device polls).
    fn disable_kicks(&mut self);
}

struct Ours {
    q: DeviceQueue,
    burst: Burst,
    sum: u64,
}

impl BenchDevice for Ours {
    #[inline]
    fn step(&mut self, batch: usize) -> Result<(usize, bool)> {
        let n = self.q.pop(&mut self.burst, batch).map_err(|e| anyhow!("device: {e}"))?;
        if n == 0 {
            return Ok((0, false));
        }
        let mut buf = [0u8; 64];
        for i in 0..n {
            let c = self.burst.chain(i);
            // The common case: one readable buffer of exactly 64 bytes.
            if let ([seg], 64) = (c.readable(), c.read_len()) {
                if let Some(b) = seg.read_array::<64>(0) {
                    for w in b.chunks_exact(8) {
                        self.sum = self.sum.wrapping_add(u64::from_le_bytes(w.try_into().unwrap()));
                    }
                    self.q.add_used(c.token(), 0);
                    continue;
                }
            }
            let mut off = 0;
            while off < c.read_len() as usize {
                let got = c.read_at(off, &mut buf);
                for w in buf[..got].chunks_exact(8) {
                    self.sum = self.sum.wrapping_add(u64::from_le_bytes(w.try_into().unwrap()));
                }
                off += got.max(1);
            }
            self.q.add_used(c.token(), 0);
        }
        self.q.publish_used();
        black_box(self.sum);
        Ok((n, self.q.needs_notify()))
    }
    fn disable_kicks(&mut self) {
        self.q.disable_kicks();
    }
}

struct VirtioQueueDev {
    q: Queue,
    mem: GuestMemoryMmap<()>,
    heads: Vec<u16>,
    sum: u64,
}

impl BenchDevice for VirtioQueueDev {
    #[inline]
    fn step(&mut self, batch: usize) -> Result<(usize, bool)> {
        let mut n = 0;
        let mut buf = [0u8; 64];
        while n < batch {
            let Some(chain) = self.q.pop_descriptor_chain(&self.mem) else { break };
            let head = chain.head_index();
            for d in chain {
                let mut off = 0u64;
                while off < d.len() as u64 {
                    let want = (d.len() as u64 - off).min(64) as usize;
                    self.mem
                        .read_slice(&mut buf[..want], d.addr().unchecked_add(off))
                        .map_err(|e| anyhow!("virtio-queue read: {e}"))?;
                    for w in buf[..want].chunks_exact(8) {
                        self.sum = self.sum.wrapping_add(u64::from_le_bytes(w.try_into().unwrap()));
                    }
                    off += want as u64;
                }
            }
            self.heads[n] = head;
            n += 1;
        }
        if n == 0 {
            return Ok((0, false));
        }
        for &h in &self.heads[..n] {
            self.q.add_used(&self.mem, h, 0).map_err(|e| anyhow!("virtio-queue add_used: {e}"))?;
        }
        black_box(self.sum);
        let notify = self.q.needs_notification(&self.mem).map_err(|e| anyhow!("virtio-queue: {e}"))?;
        Ok((n, notify))
    }
    fn disable_kicks(&mut self) {
        let _ = self.q.disable_notification(&self.mem);
    }
}

/// The driver: posts 64-byte readable buffers, reclaims completions.
struct Driver {
    q: DriverQueue,
    bufs: u64,
    buf_len: u32,
    size: u16,
    next: u64,
    used: Vec<Used>,
    kicks: u64,
    kick: EventFd,
}

impl Driver {
    #[inline]
    fn step(&mut self, batch: usize) -> Result<usize> {
        let got = self.q.poll_used(&mut self.used).map_err(|e| anyhow!("driver: {e}"))?;
        let mut posted = 0;
        while posted < batch && self.q.num_free() > 0 {
            let slot = self.next % self.size as u64;
            let b = Buf { addr: self.bufs + slot * self.buf_len as u64, len: self.buf_len, writable: false };
            self.q.add(&[b]).map_err(|e| anyhow!("driver post: {e}"))?;
            self.next += 1;
            posted += 1;
        }
        if posted > 0 {
            self.q.publish();
            if self.q.needs_kick() {
                self.kick.notify()?;
                self.kicks += 1;
            }
        }
        Ok(got)
    }
}

struct Setup {
    _arena: GuestArena,
    driver: Driver,
    device: Box<dyn BenchDevice>,
    call: EventFd,
}

fn setup(kind: Kind, opts: &RingOpts) -> Result<Setup> {
    let size = opts.size;
    let layout = kind.layout();
    let mem_size = 8u64 << 20;
    let mut arena = GuestArena::new(mem_size, 0).context("guest memory")?;
    let [d, a, u] = DriverQueue::area_sizes(layout, size);
    let addrs = RingAddrs {
        desc: arena.alloc(d, 4096).unwrap(),
        driver: arena.alloc(a, 4096).unwrap(),
        device: arena.alloc(u, 4096).unwrap(),
    };
    let bufs = arena.alloc(size as u64 * opts.buf_len as u64, 4096).context("buffers do not fit")?;
    let pattern: Vec<u8> = (0..size as usize * opts.buf_len as usize).map(|i| i as u8).collect();
    arena.mem().write(bufs, &pattern)?;
    let q = DriverQueue::new(layout, arena.mem().clone(), size, addrs, FEATURES, None)?;
    let mut q = q;
    q.disable_interrupts();
    let driver = Driver {
        q,
        bufs,
        buf_len: opts.buf_len,
        size,
        next: 0,
        used: vec![Used { id: 0, len: 0 }; size as usize],
        kicks: 0,
        kick: EventFd::new()?,
    };
    let mut device: Box<dyn BenchDevice> = match kind {
        Kind::Ours(l) => Box::new(Ours {
            q: DeviceQueue::new(l, arena.mem().clone(), size, addrs, FEATURES)?,
            burst: Burst::with_capacity(64),
            sum: 0,
        }),
        Kind::VirtioQueue => {
            let file = std::fs::File::from(arena.fd().try_clone_to_owned()?);
            let mem = GuestMemoryMmap::<()>::from_ranges_with_files([(
                GuestAddress(0),
                mem_size as usize,
                Some(FileOffset::new(file, 0)),
            )])
            .map_err(|e| anyhow!("vm-memory: {e}"))?;
            let mut q = Queue::new(size).map_err(|e| anyhow!("virtio-queue: {e}"))?;
            let split = |x: u64| (Some(x as u32), Some((x >> 32) as u32));
            let (l, h) = split(addrs.desc);
            q.set_desc_table_address(l, h);
            let (l, h) = split(addrs.driver);
            q.set_avail_ring_address(l, h);
            let (l, h) = split(addrs.device);
            q.set_used_ring_address(l, h);
            q.set_event_idx(true);
            q.set_ready(true);
            if !q.is_valid(&mem) {
                return Err(anyhow!("virtio-queue rejected the ring layout"));
            }
            Box::new(VirtioQueueDev { q, mem, heads: vec![0; 64], sum: 0 })
        }
    };
    device.disable_kicks();
    Ok(Setup { _arena: arena, driver, device, call: EventFd::new()? })
}

struct Sample {
    mops: f64,
    kicks_per_mdesc: f64,
    irqs_per_mdesc: f64,
}

fn run_one_thread(kind: Kind, batch: usize, opts: &RingOpts) -> Result<Sample> {
    let opts = opts.clone();
    std::thread::spawn(move || one_thread(kind, batch, &opts))
        .join()
        .map_err(|_| anyhow!("bench thread panicked"))?
}

fn one_thread(kind: Kind, batch: usize, opts: &RingOpts) -> Result<Sample> {
    let Setup { _arena, mut driver, mut device, call } = setup(kind, opts)?;
    let _ = sys::pin_to_cpu(0);
    let dur = Duration::from_millis(opts.duration_ms);
    let (mut done, mut irqs) = (0u64, 0u64);
    // Warm up, then measure.
    for _ in 0..10_000 {
        driver.step(batch)?;
        device.step(batch)?;
    }
    let start = Instant::now();
    let kicks0 = driver.kicks;
    loop {
        for _ in 0..256 {
            driver.step(batch)?;
            let (n, irq) = device.step(batch)?;
            done += n as u64;
            if irq {
                call.notify()?;
                irqs += 1;
            }
        }
        if start.elapsed() >= dur {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let m = done as f64 / 1e6;
    Ok(Sample {
        mops: m / secs,
        kicks_per_mdesc: (driver.kicks - kicks0) as f64 / m,
        irqs_per_mdesc: irqs as f64 / m,
    })
}

fn run_two_threads(kind: Kind, batch: usize, opts: &RingOpts) -> Result<Sample> {
    let Setup { _arena, mut driver, mut device, call } = setup(kind, opts)?;
    let cpus = sys::online_cpus();
    let stop = Arc::new(AtomicBool::new(false));
    let go = Arc::new(Barrier::new(3));
    let done = Arc::new(AtomicU64::new(0));
    let dev_thread = {
        let (stop, go, done) = (stop.clone(), go.clone(), done.clone());
        std::thread::spawn(move || -> Result<u64> {
            let _ = sys::pin_to_cpu(1 % cpus);
            let (mut n_done, mut irqs) = (0u64, 0u64);
            go.wait();
            while !stop.load(Ordering::Relaxed) {
                let (n, irq) = device.step(batch)?;
                n_done += n as u64;
                if irq {
                    call.notify()?;
                    irqs += 1;
                }
                if n == 0 {
                    std::hint::spin_loop();
                }
            }
            done.store(n_done, Ordering::Relaxed);
            Ok(irqs)
        })
    };
    let drv_thread = {
        let (stop, go) = (stop.clone(), go.clone());
        std::thread::spawn(move || -> Result<u64> {
            let _ = sys::pin_to_cpu(0);
            go.wait();
            while !stop.load(Ordering::Relaxed) {
                driver.step(batch)?;
            }
            Ok(driver.kicks)
        })
    };
    go.wait();
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(opts.duration_ms));
    stop.store(true, Ordering::Relaxed);
    let irqs = dev_thread.join().map_err(|_| anyhow!("device thread panicked"))??;
    let kicks = drv_thread.join().map_err(|_| anyhow!("driver thread panicked"))??;
    let secs = start.elapsed().as_secs_f64();
    let m = done.load(Ordering::Relaxed) as f64 / 1e6;
    Ok(Sample {
        mops: m / secs,
        kicks_per_mdesc: kicks as f64 / m.max(1e-9),
        irqs_per_mdesc: irqs as f64 / m.max(1e-9),
    })
}

/// Round trip of one cache line between CPU 0 and CPU 1, in nanoseconds: tells how far
/// apart the host placed this machine's two vCPUs (results are only comparable under the
/// same placement).
pub fn cacheline_rtt_ns() -> f64 {
    if sys::online_cpus() < 2 {
        return f64::NAN;
    }
    let flag = Arc::new(AtomicU64::new(0));
    const ROUNDS: u64 = 200_000;
    let f2 = flag.clone();
    let f1 = flag.clone();
    let main = std::thread::spawn(move || {
        let flag = f1;
        let _ = sys::pin_to_cpu(0);
        let start = Instant::now();
        for i in 0..ROUNDS {
            flag.store(2 * i + 1, Ordering::Release);
            while flag.load(Ordering::Acquire) != 2 * i + 2 {
                std::hint::spin_loop();
            }
        }
        start.elapsed().as_nanos() as f64 / ROUNDS as f64
    });
    let t = std::thread::spawn(move || {
        let _ = sys::pin_to_cpu(1);
        for i in 0..ROUNDS {
            while f2.load(Ordering::Acquire) != 2 * i + 1 {
                std::hint::spin_loop();
            }
            f2.store(2 * i + 2, Ordering::Release);
        }
    });
    let ns = main.join().unwrap_or(f64::NAN);
    let _ = t.join();
    ns
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

/// Runs every row. Measurements of different rows are interleaved (round-robin over the
/// repeats) so that a noisy moment hurts all rows alike.
pub fn run(opts: &RingOpts) -> Result<Vec<RingRow>> {
    let kinds = [Kind::Ours(Layout::Split), Kind::Ours(Layout::Packed), Kind::VirtioQueue];
    let mut cells = Vec::new();
    for &threads in &opts.threads {
        for &batch in &opts.batches {
            for kind in kinds {
                if !opts.layouts.is_empty() && !opts.layouts.iter().any(|l| l == kind.name()) {
                    continue;
                }
                cells.push((kind, threads, batch, Vec::<Sample>::new()));
            }
        }
    }
    for _ in 0..opts.repeat.max(1) {
        for (kind, threads, batch, samples) in cells.iter_mut() {
            let s = if *threads == 1 {
                run_one_thread(*kind, *batch, opts)
            } else {
                run_two_threads(*kind, *batch, opts)
            }
            .with_context(|| format!("{} threads={} batch={}", kind.name(), threads, batch))?;
            samples.push(s);
        }
    }
    Ok(cells
        .into_iter()
        .map(|(kind, threads, batch, mut samples)| {
            samples.sort_by(|a, b| a.mops.partial_cmp(&b.mops).unwrap_or(std::cmp::Ordering::Equal));
            let mid = &samples[samples.len() / 2];
            let mut runs: Vec<f64> = samples.iter().map(|s| s.mops).collect();
            let mops = median(&mut runs);
            RingRow {
                layout: kind.name(),
                threads,
                batch,
                mops,
                runs,
                kicks_per_mdesc: mid.kicks_per_mdesc,
                irqs_per_mdesc: mid.irqs_per_mdesc,
            }
        })
        .collect())
}
