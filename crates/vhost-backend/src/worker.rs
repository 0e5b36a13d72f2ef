//! The datapath thread. It owns every running ring it was given, polls them in bursts
//! while there is work, and sleeps on the rings' kick eventfds (epoll) when there is
//! none. The control plane talks to it only through [`Ctl`] messages.
//!
//! Per burst, never per packet: one pop, one publication of used entries, one
//! notification decision, at most one interrupt (call eventfd write) per ring.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netproto::ethernet::Mac;
use virtq::{Burst, DeviceQueue, RingError};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::device::DiagMode;
use crate::fdb::{Fdb, FdbConfig, Slot};
use crate::policy::PortPolicy;
use crate::polling::{Coalesce, PollConfig, PollMode, Window};
use crate::stats::{FdbStats, PortStats, WorkerStats};
use crate::sys;

/// Identifies a port inside a worker.
pub type PortId = u32;

/// Chains per burst.
pub const BURST: usize = 32;

/// Most receive chains popped at once for one destination: enough for a 64 KiB frame
/// in small merged buffers.
pub(crate) const RX_BURST_MAX: usize = 128;

/// Rounds between reads of a tap queue that has been quiet.
const TAP_IDLE_POLL: u32 = 16;

/// How many chains ahead of the copy loop buffers are prefetched.
pub(crate) const PREFETCH_AHEAD: usize = 8;

/// Largest frame (without the virtio-net header) a port accepts from a guest.
pub const MAX_FRAME: usize = 65535 + 14 + 4;

/// How often a spinning worker looks for threads waiting for a CPU.
const YIELD_CHECK: Duration = Duration::from_micros(100);

const WAKE_KEY: u64 = u64::MAX;

/// What kind of port a [`NewPort`] is.
pub enum PortKind {
    /// A vhost-user device: its rings arrive later with [`Ctl::Start`].
    Vhost,
    /// One queue of a tap interface (non-blocking, IFF_VNET_HDR with 12-byte headers).
    Tap {
        /// The queue.
        file: File,
        /// What the kernel may send through it.
        offloads: netproto::gso::TxOffloads,
    },
}

/// A port joining a worker.
pub struct NewPort {
    /// Port id (unique in this worker).
    pub id: PortId,
    /// Name for logs.
    pub name: String,
    /// Vhost-user or tap.
    pub kind: PortKind,
    /// A diagnostic mode instead of switching (vhost-user only).
    pub diag: Option<DiagMode>,
    /// Frame size for [`DiagMode::Source`].
    pub frame_size: usize,
    /// The guest's MAC (destination of generated frames).
    pub mac: Mac,
    /// VLANs and address filters.
    pub policy: PortPolicy,
    /// Interrupt coalescing.
    pub coalesce: Coalesce,
    /// Counters.
    pub stats: Arc<PortStats>,
}

/// One learning-table entry as the control plane sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbRecord {
    /// VLAN (0: the default, untagged VLAN).
    pub vlan: u16,
    /// Station address.
    pub mac: Mac,
    /// The port it was learned on.
    pub port: PortId,
    /// Seconds since its last frame.
    pub age_secs: u32,
}

/// A message from the control plane.
pub enum Ctl {
    /// A new port.
    AddPort(Box<NewPort>),
    /// Forget a port and drop its rings.
    RemovePort {
        /// Port id.
        id: PortId,
    },
    /// Start running a ring.
    Start {
        /// Port id.
        id: PortId,
        /// Ring index (virtio-net: 2 * pair for RX, 2 * pair + 1 for TX).
        ring: u16,
        /// The validated queue.
        queue: DeviceQueue,
        /// Kick eventfd (None: the driver never kicks; the ring is always polled).
        kick: Option<File>,
        /// Call eventfd (None: the driver wants no interrupts).
        call: Option<File>,
        /// Error eventfd, signalled when the ring breaks.
        err: Option<File>,
        /// virtio-net header length (12 with VERSION_1 or MRG_RXBUF, else 10).
        hdr_len: usize,
        /// VIRTIO_NET_F_MRG_RXBUF negotiated.
        mrg_rxbuf: bool,
        /// Every negotiated feature bit.
        features: u64,
    },
    /// Stop a ring; the reply carries its vhost-user base (None if it was not running).
    Stop {
        /// Port id.
        id: PortId,
        /// Ring index.
        ring: u16,
        /// Where to send the base.
        reply: Sender<Option<u32>>,
    },
    /// Replace a port's policy.
    SetPolicy {
        /// Port id.
        id: PortId,
        /// The new policy.
        policy: PortPolicy,
    },
    /// Read the learning table.
    FdbDump {
        /// Where to send it.
        reply: Sender<Vec<FdbRecord>>,
    },
    /// Forget the learning table's entries of one port (None: all).
    FdbFlush {
        /// Port id.
        port: Option<PortId>,
    },
    /// Change the learning table's limits.
    SetFdbConfig(FdbConfig),
    /// Change the polling mode and window limits.
    SetPolling(PollConfig),
    /// Replace a running ring's call eventfd.
    SetCall {
        /// Port id.
        id: PortId,
        /// Ring index.
        ring: u16,
        /// New call eventfd.
        call: Option<File>,
    },
}

/// A handle on a datapath thread.
pub struct Worker {
    tx: Sender<Ctl>,
    wake: EventFd,
    /// Messages sent and not yet taken: lets the worker skip the channel (and its
    /// fences) with one relaxed load per round when nothing is queued.
    pending: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    name: String,
    stats: Arc<WorkerStats>,
    fdb_stats: Arc<FdbStats>,
}

impl Worker {
    /// Starts a worker thread with a learning table of the given limits.
    pub fn spawn(name: &str, fdb: FdbConfig) -> io::Result<Arc<Worker>> {
        let (tx, rx) = mpsc::channel();
        let wake = EventFd::new(EFD_NONBLOCK)?;
        let epoll = Epoll::new()?;
        epoll.ctl(ControlOperation::Add, wake.as_raw_fd(), EpollEvent::new(EventSet::IN, WAKE_KEY))?;
        let stop = Arc::new(AtomicBool::new(false));
        let pending = Arc::new(AtomicUsize::new(0));
        let stats = Arc::new(WorkerStats::default());
        let fdb_stats = Arc::new(FdbStats::default());
        let rt = Runtime {
            fdb: Fdb::new(fdb, fdb_stats.clone()),
            stats: stats.clone(),
            ports: Vec::new(),
            epoll,
            wake: wake.try_clone()?,
            rx,
            pending: pending.clone(),
            stop: stop.clone(),
            futile: false,
            clock: Instant::now(),
            now: 0,
            last_aging: 0,
            window: Window::new(PollConfig::default()),
            backpressure: PollConfig::default().backpressure,
            first: 0,
            burst: BURST,
            plan: None,
            vh: Default::default(),
            scratch: vec![0u8; TAP_BUF].into_boxed_slice(),
            segbuf: vec![0u8; TAP_BUF].into_boxed_slice(),
            grobuf: vec![0u8; TAP_BUF].into_boxed_slice(),
            coalescing: 0,
            opened: Vec::with_capacity(256),
        };
        let thread = std::thread::Builder::new().name(name.to_string()).spawn(move || rt.run())?;
        Ok(Arc::new(Worker {
            tx,
            wake,
            pending,
            stop,
            thread: Some(thread),
            name: name.to_string(),
            stats,
            fdb_stats,
        }))
    }

    /// The thread's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The worker's counters.
    pub fn stats(&self) -> &Arc<WorkerStats> {
        &self.stats
    }

    /// The learning table's counters.
    pub fn fdb_stats(&self) -> &Arc<FdbStats> {
        &self.fdb_stats
    }

    /// The learning table's live entries (empty if the worker does not answer in 2 s).
    pub fn fdb_dump(&self) -> Vec<FdbRecord> {
        let (tx, rx) = mpsc::channel();
        self.send(Ctl::FdbDump { reply: tx });
        rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default()
    }

    /// Forgets the entries learned on `port` (None: every entry).
    pub fn fdb_flush(&self, port: Option<PortId>) {
        self.send(Ctl::FdbFlush { port });
    }

    /// Sends a control message and wakes the worker if it sleeps.
    pub fn send(&self, c: Ctl) {
        if self.tx.send(c).is_ok() {
            self.pending.fetch_add(1, Ordering::Release);
            let _ = self.wake.write(1);
        }
    }

    /// Stops a ring and waits (bounded) for its base.
    pub fn stop_ring(&self, id: PortId, ring: u16) -> Option<u32> {
        let (tx, rx) = mpsc::channel();
        self.send(Ctl::Stop { id, ring, reply: tx });
        match rx.recv_timeout(Duration::from_secs(2)) {
            Ok(b) => b,
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.wake.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A running ring.
pub(crate) struct Ring {
    pub(crate) q: DeviceQueue,
    kick: Option<File>,
    call: Option<File>,
    err: Option<File>,
    pub(crate) burst: Burst,
    pub(crate) broken: bool,
    /// As an output (a receive ring being filled by the switch): popped this round.
    pub(crate) open: bool,
    /// Chains popped into `burst` while open.
    pub(crate) n: usize,
    /// Chains used so far while open.
    pub(crate) i: usize,
    /// The most chains the last pop could have returned.
    pub(crate) max: usize,
    /// Frames and bytes written while open.
    pub(crate) pkts: u64,
    pub(crate) bytes: u64,
    /// The queue pair this ring belongs to.
    pub(crate) pair: usize,
    /// Polls that found nothing (published to the queue's counters now and then).
    pub(crate) empty: u64,
    /// As a transmit ring: since when its head frame waits for a receive buffer.
    pub(crate) held_since: Option<Instant>,
    /// As a transmit ring: the receive ring (slot, ring index) its last burst filled.
    pub(crate) last_out: Option<(u16, u16)>,
    /// Interrupt coalescing limits (0, 0: none).
    coal_usecs: u32,
    coal_frames: u32,
    /// A notification the driver asked for waits: since when, and buffers used since.
    irq_since: Option<Instant>,
    irq_frames: u32,
}

impl Ring {
    /// After publishing `n` used buffers: sends the driver a notification if it asked
    /// for one (EVENT_IDX or the flags), at once or, with coalescing, once enough
    /// buffers or time have gone by.
    #[inline]
    pub(crate) fn notify(&mut self, stats: &PortStats, n: usize) {
        let q = stats.queue(self.pair);
        let wanted = self.q.needs_notify();
        if !wanted {
            PortStats::add(&q.interrupts_suppressed, 1);
        }
        if self.coal_usecs == 0 && self.coal_frames <= 1 {
            if wanted {
                self.signal(stats);
            }
            return;
        }
        if wanted && self.irq_since.is_none() {
            self.irq_since = Some(Instant::now());
            self.irq_frames = 0;
        }
        if self.irq_since.is_some() {
            self.irq_frames = self.irq_frames.saturating_add(n as u32);
            self.flush_irq(stats, false);
        }
    }

    /// Sends a coalesced notification that is due (or any pending one, with `force`).
    /// Returns true while one still waits.
    pub(crate) fn flush_irq(&mut self, stats: &PortStats, force: bool) -> bool {
        let Some(t) = self.irq_since else { return false };
        let due = force
            || (self.coal_frames > 0 && self.irq_frames >= self.coal_frames)
            || t.elapsed() >= Duration::from_micros(self.coal_usecs as u64);
        if due {
            self.irq_since = None;
            self.signal(stats);
        }
        !due
    }

    fn signal(&mut self, stats: &PortStats) {
        if let Some(c) = &self.call {
            let _ = (&*c).write(&1u64.to_ne_bytes());
            PortStats::add(&stats.interrupts, 1);
            PortStats::add(&stats.queue(self.pair).interrupts, 1);
        }
    }

    #[cold]
    pub(crate) fn fail(&mut self, port: &str, ring: usize, e: RingError, stats: &PortStats) {
        self.broken = true;
        PortStats::add(&stats.ring_errors, 1);
        eprintln!(
            "virtwire: port {port}: ring {ring} stopped: {e} (it runs again after the driver resets it)"
        );
        if let Some(f) = &self.err {
            let _ = (&*f).write(&1u64.to_ne_bytes());
        }
    }
}

/// A vhost-user port's rings.
pub(crate) struct Vhost {
    pub(crate) rings: Vec<Option<Ring>>,
    /// virtio-net header length.
    pub(crate) hdr_len: usize,
    /// VIRTIO_NET_F_MRG_RXBUF negotiated.
    pub(crate) mrg: bool,
    /// Queue pairs whose receive ring runs (where the switch may deliver).
    pub(crate) rx_live: Vec<u16>,
    /// A frame for this port waited past the backpressure bound: frames for it are
    /// dropped at once until it takes one again.
    pub(crate) stalled: bool,
    /// What the guest may send (checksum and segmentation offloads).
    pub(crate) tx_offloads: netproto::gso::TxOffloads,
    /// What the guest takes as it is.
    pub(crate) accept: crate::offload::Accept,
}

impl Vhost {
    pub(crate) fn refresh_live(&mut self) {
        self.rx_live.clear();
        for (i, r) in self.rings.iter().enumerate().step_by(2) {
            if r.as_ref().is_some_and(|r| !r.broken) {
                self.rx_live.push((i / 2) as u16);
            }
        }
    }
}

/// A tap queue.
pub(crate) struct Tap {
    pub(crate) f: File,
    /// Receive buffers for one burst of reads (header + frame each).
    pub(crate) bufs: Vec<Box<[u8]>>,
    pub(crate) lens: [usize; BURST],
    /// Where a frame for the tap is assembled.
    pub(crate) out: Box<[u8]>,
    /// Rounds since the last read that returned frames.
    pub(crate) quiet: u32,
    /// What the kernel may send (TUNSETOFFLOAD).
    pub(crate) offloads: netproto::gso::TxOffloads,
}

/// Header + largest frame, the size of a tap buffer.
pub(crate) const TAP_BUF: usize = netproto::virtio_net::HDR_LEN + MAX_FRAME;

pub(crate) enum Io {
    Vhost(Vhost),
    Tap(Box<Tap>),
}

pub(crate) struct PortRt {
    pub(crate) id: PortId,
    pub(crate) name: String,
    pub(crate) diag: Option<DiagMode>,
    pub(crate) policy: PortPolicy,
    pub(crate) coalesce: Coalesce,
    pub(crate) stats: Arc<PortStats>,
    pub(crate) io: Io,
    /// diag = source: the frame template and sequence number.
    pub(crate) frame: Vec<u8>,
    pub(crate) seq: u64,
}

impl PortRt {
    /// True when the port has work it can do now without being woken.
    fn can_progress(&self) -> bool {
        let Io::Vhost(v) = &self.io else { return false };
        let live = |i: usize| v.rings.get(i).and_then(|r| r.as_ref()).filter(|r| !r.broken);
        let has = |i: usize| live(i).is_some_and(|r| r.q.has_avail());
        (0..v.rings.len().div_ceil(2)).any(|pair| {
            let (rx, tx) = (2 * pair, 2 * pair + 1);
            match self.diag {
                Some(DiagMode::Reflect) => has(tx) && has(rx),
                Some(DiagMode::Sink) | None => has(tx),
                Some(DiagMode::Source) => has(rx),
            }
        })
    }
}

/// The switch's per-frame decision (see `forward`).
#[derive(Clone, Copy, Default)]
pub(crate) struct Dec {
    /// Destination slot, or one of FLOOD, FLOOD_UNKNOWN, DROP.
    pub(crate) dest: u16,
    pub(crate) vlan: u16,
    /// The frame's 802.1Q TCI when tagged (its priority bits are kept).
    pub(crate) tci: u16,
    /// 4 when the frame arrived tagged.
    pub(crate) tag_in: u8,
    /// Frame length (without the virtio-net header).
    pub(crate) flen: u32,
    /// Flow hash for choosing a receive queue.
    pub(crate) hash: u32,
    /// Destination MAC (for the unicast filter).
    pub(crate) dst: Mac,
    /// A TCP segment (over IPv4 or IPv6): a candidate for coalescing.
    pub(crate) tcp: bool,
}

pub(crate) struct Runtime {
    pub(crate) ports: Vec<Option<PortRt>>,
    epoll: Epoll,
    wake: EventFd,
    rx: Receiver<Ctl>,
    pending: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    /// The last sleep attempt found work ready, and nothing has moved since.
    futile: bool,
    pub(crate) fdb: Fdb,
    stats: Arc<WorkerStats>,
    clock: Instant,
    /// Seconds since the worker started (the learning table's clock).
    pub(crate) now: u32,
    last_aging: u32,
    window: Window,
    /// How long a frame may wait in its sender's ring for a receive buffer.
    pub(crate) backpressure: Duration,
    /// The port the current round started with.
    first: usize,
    /// Burst size of the switching path (`PollConfig::burst`).
    pub(crate) burst: usize,
    /// The frame being switched has offload work: what, and its header.
    pub(crate) plan: Option<netproto::gso::TxPlan>,
    pub(crate) vh: netproto::virtio_net::NetHdr,
    /// A frame with offload work, copied out of its sender (validated there).
    pub(crate) scratch: Box<[u8]>,
    /// Where software offload work (checksum, segments) is done.
    pub(crate) segbuf: Box<[u8]>,
    /// Where TCP segments are coalesced.
    pub(crate) grobuf: Box<[u8]>,
    /// Ports with interrupt coalescing (0: no notification is ever deferred).
    coalescing: usize,
    /// Receive rings (slot, ring index) opened as outputs in the current burst.
    pub(crate) opened: Vec<(u16, u16)>,
}

fn key(id: PortId, ring: u16) -> u64 {
    (id as u64) << 16 | ring as u64
}

const TAP_RING: u16 = u16::MAX;

impl Runtime {
    fn slot_of(&self, id: PortId) -> Option<usize> {
        self.ports.iter().position(|p| p.as_ref().is_some_and(|p| p.id == id))
    }

    fn port_mut(&mut self, id: PortId) -> Option<&mut PortRt> {
        self.ports.iter_mut().flatten().find(|p| p.id == id)
    }

    fn run(mut self) {
        // "/proc/thread-self" links to "<pid>/task/<tid>".
        if let Some(tid) = std::fs::read_link("/proc/thread-self")
            .ok()
            .and_then(|p| p.file_name().and_then(|t| t.to_str()).and_then(|t| t.parse().ok()))
        {
            self.stats.tid.store(tid, Ordering::Relaxed);
        }
        let mut events = vec![EpollEvent::default(); 64];
        let cpus = crate::polling::online_cpus();
        let mut idle: u32 = 0;
        let mut busy_rounds: u32 = 0;
        // When the last round with work ended (set by the first empty round after it),
        // the last check for waiting threads, and whether we slept since.
        let mut idle_start: Option<Instant> = None;
        let mut last_check = Instant::now();
        let mut slept = false;
        let (mut busy_c, mut idle_c, mut pkts) = (0u64, 0u64, 0u64);
        // The end of a busy round is the start of the next one when nothing ran in
        // between: one TSC read per round under load.
        let mut t_end: Option<u64> = None;
        self.publish_window();
        while !self.stop.load(Ordering::Relaxed) {
            while self.pending.load(Ordering::Relaxed) != 0 {
                t_end = None;
                match self.rx.try_recv() {
                    Ok(c) => {
                        self.pending.fetch_sub(1, Ordering::Relaxed);
                        self.apply(c)
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            let t0 = t_end.take().unwrap_or_else(sys::rdtsc);
            let work = self.poll_round();
            let t1 = sys::rdtsc();
            let dt = t1.wrapping_sub(t0);
            if work > 0 {
                busy_c += dt;
                pkts += work as u64;
                idle = 0;
                self.futile = false;
                if let Some(t) = idle_start.take() {
                    if slept {
                        slept = false;
                        self.window.after_sleep(t.elapsed());
                        self.publish_window();
                    }
                }
                // Counters only this thread writes: plain stores, no locked adds.
                self.stats.busy_cycles.store(busy_c, Ordering::Relaxed);
                self.stats.packets.store(pkts, Ordering::Relaxed);
                busy_rounds = busy_rounds.wrapping_add(1);
                if self.coalescing > 0 && busy_rounds.is_multiple_of(64) {
                    self.flush_irqs();
                }
                if busy_rounds.is_multiple_of(4096) {
                    // Under constant load the idle path never runs: keep the table's
                    // clock moving.
                    self.tick();
                }
                t_end = Some(t1);
                continue;
            }
            idle_c += dt;
            idle += 1;
            if idle == 1 && idle_start.is_none() {
                idle_start = Some(Instant::now());
            }
            let window = self.window.current();
            if window != Some(Duration::ZERO) {
                // Read the clock only once per 64 empty rounds.
                if !idle.is_multiple_of(64) {
                    std::hint::spin_loop();
                    continue;
                }
                self.stats.idle_cycles.store(idle_c, Ordering::Relaxed);
                self.tick();
                self.publish_local();
                if self.coalescing > 0 && self.flush_irqs() {
                    // A deferred notification is due within microseconds: keep
                    // polling rather than sleep past it.
                    continue;
                }
                let Some(window) = window else { continue };
                let spun = idle_start.map(|t| t.elapsed()).unwrap_or_default();
                if spun < window {
                    if !self.window.config().yield_to_others || last_check.elapsed() < YIELD_CHECK {
                        continue;
                    }
                    last_check = Instant::now();
                    if !crate::polling::cpu_contended(cpus) {
                        continue;
                    }
                    // Someone waits for a CPU: give ours back now.
                    self.window.shrink();
                    self.publish_window();
                    PortStats::add(&self.stats.yields, 1);
                }
            }
            self.stats.idle_cycles.store(idle_c, Ordering::Relaxed);
            self.publish_local();
            if self.coalescing > 0 && self.flush_irqs() {
                continue;
            }
            self.sleep(&mut events);
            slept = true;
            PortStats::add(&self.stats.sleeps, 1);
            self.tick();
            idle = 0;
        }
    }

    /// Sends the coalesced notifications that are due; true while some still wait.
    fn flush_irqs(&mut self) -> bool {
        let mut waiting = false;
        for p in self.ports.iter_mut().flatten() {
            let Io::Vhost(v) = &mut p.io else { continue };
            for r in v.rings.iter_mut().flatten() {
                waiting |= r.flush_irq(&p.stats, false);
            }
        }
        waiting
    }

    fn count_coalescing(&mut self) {
        self.coalescing = self.ports.iter().flatten().filter(|p| p.coalesce != Coalesce::default()).count();
    }

    /// Publishes counters kept in plain fields on the hot path.
    fn publish_local(&mut self) {
        for p in self.ports.iter_mut().flatten() {
            let Io::Vhost(v) = &mut p.io else { continue };
            for r in v.rings.iter_mut().skip(1).step_by(2).flatten() {
                PortStats::add(&p.stats.queue(r.pair).empty_polls, std::mem::take(&mut r.empty));
            }
        }
    }

    fn publish_window(&self) {
        let (mode, ns) = match self.window.current() {
            None => (0, 0),
            Some(w) if self.window.config().mode == PollMode::Interrupt => (2, w.as_nanos() as u64),
            Some(w) => (1, w.as_nanos() as u64),
        };
        self.stats.mode.store(mode, Ordering::Relaxed);
        self.stats.window_ns.store(ns, Ordering::Relaxed);
    }

    /// Advances the learning table's clock; ages it once a second.
    fn tick(&mut self) {
        self.now = self.clock.elapsed().as_secs() as u32;
        if self.now != self.last_aging {
            self.last_aging = self.now;
            self.fdb.age(self.now);
        }
    }

    /// One round over every port; returns frames taken in.
    fn poll_round(&mut self) -> usize {
        let mut work = 0;
        // Each round starts one port further on, so that no sender is always first to
        // the receive buffers a busy receiver posts.
        let n = self.ports.len();
        self.first = if self.first + 1 >= n { 0 } else { self.first + 1 };
        for k in 0..n {
            let s = if self.first + k >= n { self.first + k - n } else { self.first + k };
            let Some(p) = self.ports[s].as_mut() else { continue };
            work += match (&mut p.io, p.diag) {
                (Io::Vhost(_), Some(_)) => p.poll_diag(),
                (Io::Vhost(v), None) => {
                    // Look before taking the port out of its slot.
                    let mut any = false;
                    for r in v.rings.iter_mut().skip(1).step_by(2).flatten() {
                        if r.broken {
                            continue;
                        }
                        if r.q.has_avail() {
                            any = true;
                        } else {
                            r.empty += 1;
                        }
                    }
                    if any {
                        self.forward_vhost(s)
                    } else {
                        0
                    }
                }
                (Io::Tap(t), _) => {
                    // A read is a system call: a quiet tap is read every TAP_IDLE_POLL
                    // rounds (and whenever epoll wakes us for it).
                    t.quiet = t.quiet.saturating_add(1);
                    if t.quiet > 1 && !t.quiet.is_multiple_of(TAP_IDLE_POLL) {
                        0
                    } else {
                        self.forward_tap(s)
                    }
                }
            };
        }
        work
    }

    /// Enables kicks on every ring (re-checking each ring after enabling, the race of
    /// virtio 1.x 2.7.10), then sleeps until a kick, a tap frame or a control message.
    fn sleep(&mut self, events: &mut [EpollEvent]) {
        let mut pollable_only = false;
        for p in self.ports.iter_mut().flatten() {
            let Io::Vhost(v) = &mut p.io else { continue };
            for r in v.rings.iter_mut().flatten() {
                if r.broken {
                    continue;
                }
                if r.kick.is_none() {
                    pollable_only = true;
                }
                r.q.enable_kicks();
            }
        }
        // Re-check after enabling (each enable ends with a full barrier): sleep unless a
        // port can move a frame now. Frames waiting for receive buffers that the guest
        // has not posted are no reason to spin: its refill kicks us.
        let pending = self.ports.iter().flatten().any(|p| p.can_progress());
        // Work that looks ready twice in a row without anything moving in between (a
        // guest whose buffers can never hold its frames, say) gets a 1 ms nap, not a
        // spinning core.
        let futile = pending && self.futile;
        self.futile = pending;
        if !pending || futile {
            // A ring without a kick fd can only be polled: nap briefly instead. Taps
            // wait at most a second so that the learning table still ages.
            let timeout = if pollable_only || futile { 1 } else { 1000 };
            let n = self.epoll.wait(timeout, events).unwrap_or(0);
            for ev in &events[..n] {
                let k = ev.data();
                if k == WAKE_KEY {
                    let _ = self.wake.read();
                    continue;
                }
                let (id, ring) = ((k >> 16) as PortId, (k & 0xffff) as u16);
                if let Some(p) = self.port_mut(id) {
                    match &mut p.io {
                        Io::Tap(t) => t.quiet = 0,
                        Io::Vhost(v) => {
                            if let Some(Some(r)) = v.rings.get_mut(ring as usize) {
                                if let Some(f) = &r.kick {
                                    let mut b = [0u8; 8];
                                    let _ = (&*f).read(&mut b);
                                }
                                PortStats::add(&p.stats.kicks, 1);
                                PortStats::add(&p.stats.queue(ring as usize / 2).kicks, 1);
                            }
                        }
                    }
                }
            }
        }
        for p in self.ports.iter_mut().flatten() {
            let Io::Vhost(v) = &mut p.io else { continue };
            for r in v.rings.iter_mut().flatten() {
                r.q.disable_kicks();
            }
        }
    }

    fn unwatch(&self, f: &File) {
        let _ = self.epoll.ctl(ControlOperation::Delete, f.as_raw_fd(), EpollEvent::default());
    }

    fn apply(&mut self, c: Ctl) {
        match c {
            Ctl::AddPort(np) => {
                let NewPort { id, name, kind, diag, frame_size, mac, policy, coalesce, stats } = *np;
                let io = match kind {
                    PortKind::Vhost => Io::Vhost(Vhost {
                        rings: Vec::new(),
                        hdr_len: 12,
                        mrg: false,
                        rx_live: Vec::new(),
                        stalled: false,
                        tx_offloads: Default::default(),
                        accept: Default::default(),
                    }),
                    PortKind::Tap { file: f, offloads } => {
                        if let Err(e) = self.epoll.ctl(
                            ControlOperation::Add,
                            f.as_raw_fd(),
                            EpollEvent::new(EventSet::IN, key(id, TAP_RING)),
                        ) {
                            eprintln!("virtwire: port {name}: cannot watch the tap: {e}");
                        }
                        Io::Tap(Box::new(Tap {
                            f,
                            bufs: (0..BURST).map(|_| vec![0u8; TAP_BUF].into_boxed_slice()).collect(),
                            lens: [0; BURST],
                            out: vec![0u8; TAP_BUF].into_boxed_slice(),
                            quiet: 0,
                            offloads,
                        }))
                    }
                };
                let port = PortRt {
                    id,
                    name,
                    diag,
                    policy,
                    coalesce,
                    stats,
                    io,
                    frame: crate::diag::source_frame(mac, frame_size),
                    seq: 0,
                };
                match self.ports.iter().position(|p| p.is_none()) {
                    Some(s) => self.ports[s] = Some(port),
                    None if self.ports.len() < Slot::MAX as usize - 3 => self.ports.push(Some(port)),
                    None => eprintln!("virtwire: port {}: too many ports on one worker", port.name),
                }
                self.count_coalescing();
            }
            Ctl::RemovePort { id } => {
                if let Some(s) = self.slot_of(id) {
                    let p = self.ports[s].take().expect("slot_of found it");
                    match &p.io {
                        Io::Vhost(v) => {
                            for r in v.rings.iter().flatten() {
                                if let Some(k) = &r.kick {
                                    self.unwatch(k);
                                }
                            }
                        }
                        Io::Tap(t) => self.unwatch(&t.f),
                    }
                    self.fdb.flush(Some(s as Slot));
                    self.count_coalescing();
                }
            }
            Ctl::Start { id, ring, mut queue, kick, call, err, hdr_len, mrg_rxbuf, features } => {
                let epoll = &self.epoll;
                let Some(p) = self.ports.iter_mut().flatten().find(|p| p.id == id) else { return };
                let Io::Vhost(v) = &mut p.io else { return };
                let i = ring as usize;
                if v.rings.len() <= i {
                    v.rings.resize_with(i + 1, || None);
                }
                if let Some(old) = v.rings[i].take() {
                    if let Some(k) = &old.kick {
                        let _ = epoll.ctl(ControlOperation::Delete, k.as_raw_fd(), EpollEvent::default());
                    }
                }
                if let Some(k) = &kick {
                    if let Err(e) = epoll.ctl(
                        ControlOperation::Add,
                        k.as_raw_fd(),
                        EpollEvent::new(EventSet::IN, key(id, ring)),
                    ) {
                        eprintln!("virtwire: port {}: ring {ring}: cannot watch kick fd: {e}", p.name);
                    }
                }
                queue.disable_kicks();
                let coal = p.coalesce.for_ring(i);
                v.hdr_len = hdr_len;
                v.mrg = mrg_rxbuf;
                v.tx_offloads = netproto::gso::TxOffloads::from_features(features);
                v.accept = crate::offload::Accept::from_features(features);
                v.rings[i] = Some(Ring {
                    q: queue,
                    kick,
                    call,
                    err,
                    burst: Burst::with_capacity(RX_BURST_MAX),
                    broken: false,
                    open: false,
                    n: 0,
                    i: 0,
                    max: 0,
                    pkts: 0,
                    bytes: 0,
                    pair: i / 2,
                    empty: 0,
                    held_since: None,
                    last_out: None,
                    coal_usecs: coal.0,
                    coal_frames: coal.1,
                    irq_since: None,
                    irq_frames: 0,
                });
                v.refresh_live();
            }
            Ctl::Stop { id, ring, reply } => {
                let mut base = None;
                let epoll = &self.epoll;
                if let Some(p) = self.ports.iter_mut().flatten().find(|p| p.id == id) {
                    if let Io::Vhost(v) = &mut p.io {
                        if let Some(slot) = v.rings.get_mut(ring as usize) {
                            if let Some(r) = slot.take() {
                                if let Some(k) = &r.kick {
                                    let _ = epoll.ctl(
                                        ControlOperation::Delete,
                                        k.as_raw_fd(),
                                        EpollEvent::default(),
                                    );
                                }
                                base = Some(r.q.base());
                            }
                        }
                        v.refresh_live();
                    }
                }
                let _ = reply.send(base);
            }
            Ctl::SetCall { id, ring, call } => {
                if let Some(p) = self.port_mut(id) {
                    if let Io::Vhost(v) = &mut p.io {
                        if let Some(Some(r)) = v.rings.get_mut(ring as usize) {
                            r.call = call;
                        }
                    }
                }
            }
            Ctl::SetPolicy { id, policy } => {
                if let Some(s) = self.slot_of(id) {
                    if let Some(p) = self.ports[s].as_mut() {
                        p.policy = policy;
                    }
                    // Addresses learned under the old policy may no longer hold.
                    self.fdb.flush(Some(s as Slot));
                }
            }
            Ctl::FdbDump { reply } => {
                self.tick();
                let recs = self
                    .fdb
                    .dump(self.now)
                    .into_iter()
                    .filter_map(|e| {
                        let p = self.ports.get(e.slot as usize)?.as_ref()?;
                        Some(FdbRecord { vlan: e.vlan, mac: e.mac, port: p.id, age_secs: e.age_secs })
                    })
                    .collect();
                let _ = reply.send(recs);
            }
            Ctl::FdbFlush { port } => match port {
                None => self.fdb.flush(None),
                Some(id) => {
                    if let Some(s) = self.slot_of(id) {
                        self.fdb.flush(Some(s as Slot));
                    }
                }
            },
            Ctl::SetFdbConfig(c) => self.fdb.set_config(c),
            Ctl::SetPolling(c) => {
                self.window = Window::new(c);
                self.backpressure = c.backpressure;
                self.burst = c.burst.clamp(1, BURST);
                self.publish_window();
            }
        }
    }
}
