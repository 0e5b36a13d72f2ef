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
use netproto::virtio_net::NetHdr;
use virtq::{Burst, Chain, DeviceQueue, RingError};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::device::DiagMode;
use crate::fdb::{Fdb, FdbConfig};
use crate::policy::PortPolicy;
use crate::stats::{FdbStats, PortStats, WorkerStats};

/// Identifies a port inside a worker.
pub type PortId = u32;

/// Chains per burst.
pub const BURST: usize = 32;

/// How many chains ahead of the copy loop buffers are prefetched.
const PREFETCH_AHEAD: usize = 4;

/// Largest frame (without the virtio-net header) a port accepts from a guest.
pub const MAX_FRAME: usize = 65535 + 14 + 4;

/// How long a worker keeps polling after the last work before it sleeps on kicks.
const POLL_WINDOW: Duration = Duration::from_micros(50);

const WAKE_KEY: u64 = u64::MAX;

/// What kind of port a [`NewPort`] is.
pub enum PortKind {
    /// A vhost-user device: its rings arrive later with [`Ctl::Start`].
    Vhost,
    /// One queue of a tap interface (non-blocking, IFF_VNET_HDR with 12-byte headers).
    Tap(File),
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

struct Ring {
    q: DeviceQueue,
    kick: Option<File>,
    call: Option<File>,
    err: Option<File>,
    burst: Burst,
    broken: bool,
}

impl Ring {
    #[inline]
    fn notify(&mut self, stats: &PortStats) {
        if self.q.needs_notify() {
            if let Some(c) = &self.call {
                let _ = (&*c).write(&1u64.to_ne_bytes());
                PortStats::add(&stats.interrupts, 1);
            }
        }
    }

    #[cold]
    fn fail(&mut self, port: &str, ring: usize, e: RingError, stats: &PortStats) {
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

struct PortRt {
    id: PortId,
    name: String,
    diag: DiagMode,
    frame: Vec<u8>,
    seq: u64,
    stats: Arc<PortStats>,
    rings: Vec<Option<Ring>>,
    hdr_len: usize,
    mrg: bool,
}

struct Runtime {
    ports: Vec<PortRt>,
    epoll: Epoll,
    wake: EventFd,
    rx: Receiver<Ctl>,
    pending: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    /// The last sleep attempt found work ready, and nothing has moved since.
    futile: bool,
    fdb: Fdb,
    stats: Arc<WorkerStats>,
}

fn key(id: PortId, ring: u16) -> u64 {
    (id as u64) << 16 | ring as u64
}

impl Runtime {
    fn run(mut self) {
        // "/proc/thread-self" links to "<pid>/task/<tid>".
        if let Some(tid) = std::fs::read_link("/proc/thread-self")
            .ok()
            .and_then(|p| p.file_name().and_then(|t| t.to_str()).and_then(|t| t.parse().ok()))
        {
            self.stats.tid.store(tid, Ordering::Relaxed);
        }
        let mut events = vec![EpollEvent::default(); 64];
        let mut idle: u32 = 0;
        let mut idle_since = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            while self.pending.load(Ordering::Relaxed) != 0 {
                match self.rx.try_recv() {
                    Ok(c) => {
                        self.pending.fetch_sub(1, Ordering::Relaxed);
                        self.apply(c)
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            let mut work = 0;
            for p in self.ports.iter_mut() {
                work += p.poll();
            }
            if work > 0 {
                idle = 0;
                self.futile = false;
                continue;
            }
            // Read the clock only once per 64 empty rounds.
            idle += 1;
            if idle == 1 {
                idle_since = Instant::now();
            }
            if !idle.is_multiple_of(64) || idle_since.elapsed() < POLL_WINDOW {
                std::hint::spin_loop();
                continue;
            }
            self.sleep(&mut events);
            idle = 0;
        }
    }

    /// Enables kicks on every ring (re-checking each ring after enabling, the race of
    /// virtio 1.x 2.7.10), then sleeps until a kick or a control message.
    fn sleep(&mut self, events: &mut [EpollEvent]) {
        let mut pollable_only = false;
        for p in self.ports.iter_mut() {
            for r in p.rings.iter_mut().flatten() {
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
        let pending = self.ports.iter().any(|p| p.can_progress());
        // Work that looks ready twice in a row without anything moving in between (a
        // guest whose buffers can never hold its frames, say) gets a 1 ms nap, not a
        // spinning core.
        let futile = pending && self.futile;
        self.futile = pending;
        if !pending || futile {
            // A ring without a kick fd can only be polled: nap briefly instead.
            let timeout = if pollable_only || futile { 1 } else { -1 };
            let n = self.epoll.wait(timeout, events).unwrap_or(0);
            for ev in &events[..n] {
                let k = ev.data();
                if k == WAKE_KEY {
                    let _ = self.wake.read();
                    continue;
                }
                let (id, ring) = ((k >> 16) as PortId, (k & 0xffff) as usize);
                if let Some(p) = self.ports.iter_mut().find(|p| p.id == id) {
                    if let Some(Some(r)) = p.rings.get_mut(ring) {
                        if let Some(f) = &r.kick {
                            let mut b = [0u8; 8];
                            let _ = (&*f).read(&mut b);
                        }
                        PortStats::add(&p.stats.kicks, 1);
                    }
                }
            }
        }
        for p in self.ports.iter_mut() {
            for r in p.rings.iter_mut().flatten() {
                r.q.disable_kicks();
            }
        }
    }

    fn apply(&mut self, c: Ctl) {
        match c {
            Ctl::AddPort(np) => {
                let NewPort { id, name, kind: _, diag, frame_size, mac, policy: _, stats } = *np;
                let frame = source_frame(mac, frame_size);
                self.ports.push(PortRt {
                    id,
                    name,
                    diag: diag.unwrap_or(DiagMode::Sink),
                    frame,
                    seq: 0,
                    stats,
                    rings: Vec::new(),
                    hdr_len: 12,
                    mrg: false,
                });
            }
            Ctl::RemovePort { id } => {
                if let Some(i) = self.ports.iter().position(|p| p.id == id) {
                    let p = self.ports.remove(i);
                    for r in p.rings.iter().flatten() {
                        if let Some(k) = &r.kick {
                            let _ = self.epoll.ctl(
                                ControlOperation::Delete,
                                k.as_raw_fd(),
                                EpollEvent::default(),
                            );
                        }
                    }
                }
            }
            Ctl::Start { id, ring, mut queue, kick, call, err, hdr_len, mrg_rxbuf } => {
                let Some(p) = self.ports.iter_mut().find(|p| p.id == id) else { return };
                let i = ring as usize;
                if p.rings.len() <= i {
                    p.rings.resize_with(i + 1, || None);
                }
                if let Some(old) = p.rings[i].take() {
                    if let Some(k) = &old.kick {
                        let _ =
                            self.epoll.ctl(ControlOperation::Delete, k.as_raw_fd(), EpollEvent::default());
                    }
                }
                if let Some(k) = &kick {
                    if let Err(e) = self.epoll.ctl(
                        ControlOperation::Add,
                        k.as_raw_fd(),
                        EpollEvent::new(EventSet::IN, key(id, ring)),
                    ) {
                        eprintln!("virtwire: port {}: ring {ring}: cannot watch kick fd: {e}", p.name);
                    }
                }
                queue.disable_kicks();
                p.hdr_len = hdr_len;
                p.mrg = mrg_rxbuf;
                p.rings[i] = Some(Ring {
                    q: queue,
                    kick,
                    call,
                    err,
                    burst: Burst::with_capacity(BURST),
                    broken: false,
                });
            }
            Ctl::Stop { id, ring, reply } => {
                let mut base = None;
                if let Some(p) = self.ports.iter_mut().find(|p| p.id == id) {
                    if let Some(slot) = p.rings.get_mut(ring as usize) {
                        if let Some(r) = slot.take() {
                            if let Some(k) = &r.kick {
                                let _ = self.epoll.ctl(
                                    ControlOperation::Delete,
                                    k.as_raw_fd(),
                                    EpollEvent::default(),
                                );
                            }
                            base = Some(r.q.base());
                        }
                    }
                }
                let _ = reply.send(base);
            }
            Ctl::SetPolicy { .. } => {}
            Ctl::FdbDump { reply } => {
                let _ = reply.send(Vec::new());
            }
            Ctl::FdbFlush { port: _ } => self.fdb.flush(None),
            Ctl::SetFdbConfig(c) => self.fdb.set_config(c),
            Ctl::SetCall { id, ring, call } => {
                if let Some(p) = self.ports.iter_mut().find(|p| p.id == id) {
                    if let Some(Some(r)) = p.rings.get_mut(ring as usize) {
                        r.call = call;
                    }
                }
            }
        }
    }
}

/// Room for the largest virtio-net header in front of a frame template.
const HDR_MAX: usize = netproto::virtio_net::HDR_LEN;

/// A generated frame behind a virtio-net header for one receive buffer (num_buffers =
/// 1): to the guest's MAC from 02:00:00:00:00:01, EtherType 0x88b5 (IEEE local
/// experimental), an 8-byte sequence number, then a byte pattern.
fn source_frame(mac: Mac, size: usize) -> Vec<u8> {
    let size = size.clamp(60, MAX_FRAME);
    let mut t = vec![0u8; HDR_MAX + size];
    t[..HDR_MAX].copy_from_slice(&NetHdr::plain(1).to_bytes());
    let f = &mut t[HDR_MAX..];
    f[..6].copy_from_slice(&mac.0);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    for (i, b) in f.iter_mut().enumerate().skip(22) {
        *b = i as u8;
    }
    t
}

/// Picks receive chains `from..` of `rx` for a frame of `need` bytes (header
/// included): one chain, or with MRG_RXBUF as many as it takes. Returns how many, or
/// `None` when there are not enough (backpressure) and `Some(0)` when a single chain
/// can never hold it (without MRG_RXBUF).
#[inline]
fn pick_rx(rx: &Burst, from: usize, need: usize, mrg: bool) -> Option<usize> {
    let mut cap = 0usize;
    let mut k = 0;
    while cap < need {
        if from + k >= rx.len() {
            return None;
        }
        cap += rx.chain(from + k).write_len() as usize;
        k += 1;
        if !mrg && cap < need {
            return Some(0);
        }
    }
    Some(k)
}

/// Writes one frame into rx chains `first..first + k`: the header (num_buffers = k when
/// merging, 1 otherwise, as virtio 1.x 5.1.6.4 requires) then the frame bytes from
/// `fill`, which copies `n` frame bytes starting at frame offset `src_off` into the
/// given chain at `dst_off` and returns bytes copied.
#[inline]
fn deliver(
    rx: &mut Ring,
    first: usize,
    k: usize,
    hdr_len: usize,
    flen: usize,
    mut fill: impl FnMut(&Chain<'_>, usize, usize, usize) -> usize,
) {
    let hdr = NetHdr::plain(k as u16).to_bytes();
    let mut copied = 0;
    for j in 0..k {
        let d = rx.burst.chain(first + j);
        let mut off = 0;
        if j == 0 {
            off = d.write_at(0, &hdr[..hdr_len]);
        }
        let n = fill(&d, off, copied, flen - copied);
        copied += n;
        rx.q.add_used(d.token(), (off + n) as u32);
    }
}

/// The receive and transmit rings of queue pair `pair`, when running and healthy.
fn pair_of(rings: &mut [Option<Ring>], pair: usize) -> (Option<&mut Ring>, Option<&mut Ring>) {
    let mid = (2 * pair + 1).min(rings.len());
    let (a, b) = rings.split_at_mut(mid);
    let rx = a.get_mut(2 * pair).and_then(|r| r.as_mut()).filter(|r| !r.broken);
    let tx = b.first_mut().and_then(|r| r.as_mut()).filter(|r| !r.broken);
    (rx, tx)
}

impl PortRt {
    /// True when some queue pair of the port has work it can do now.
    fn can_progress(&self) -> bool {
        let live = |i: usize| self.rings.get(i).and_then(|r| r.as_ref()).filter(|r| !r.broken);
        let has = |i: usize| live(i).is_some_and(|r| r.q.has_avail());
        (0..self.rings.len().div_ceil(2)).any(|pair| {
            let (rx, tx) = (2 * pair, 2 * pair + 1);
            match self.diag {
                DiagMode::Reflect => has(tx) && has(rx),
                DiagMode::Sink => has(tx),
                DiagMode::Source => has(rx),
            }
        })
    }

    /// One round over the port's rings; returns frames moved.
    fn poll(&mut self) -> usize {
        let pairs = self.rings.len().div_ceil(2);
        let mut work = 0;
        for pair in 0..pairs {
            work += match self.diag {
                DiagMode::Reflect => self.reflect(pair),
                DiagMode::Sink => self.sink(pair),
                DiagMode::Source => self.source(pair),
            };
        }
        work
    }

    fn sink(&mut self, pair: usize) -> usize {
        let (name, stats) = (&self.name, &*self.stats);
        let Some(tx) = self.rings.get_mut(2 * pair + 1).and_then(|r| r.as_mut()) else { return 0 };
        if tx.broken {
            return 0;
        }
        let n = match tx.q.pop(&mut tx.burst, BURST) {
            Ok(n) => n,
            Err(e) => {
                tx.fail(name, 2 * pair + 1, e, stats);
                return 0;
            }
        };
        if n == 0 {
            return 0;
        }
        let mut bytes = 0u64;
        for i in 0..n {
            let c = tx.burst.chain(i);
            bytes += (c.read_len() as u64).saturating_sub(self.hdr_len as u64);
            tx.q.add_used(c.token(), 0);
        }
        tx.q.publish_used();
        tx.notify(stats);
        PortStats::add(&stats.rx_packets, n as u64);
        PortStats::add(&stats.rx_bytes, bytes);
        PortStats::add(&stats.bursts, 1);
        n
    }

    fn source(&mut self, pair: usize) -> usize {
        let (hdr_len, mrg) = (self.hdr_len, self.mrg);
        let (name, stats) = (&self.name, &*self.stats);
        // `frame` is a template: a 12-byte header (num_buffers = 1) then the frame, so
        // that the common case (one receive buffer) is one copy.
        let template = &mut self.frame;
        let mut seq = self.seq;
        let Some(rx) = self.rings.get_mut(2 * pair).and_then(|r| r.as_mut()) else { return 0 };
        if rx.broken {
            return 0;
        }
        let n = match rx.q.pop(&mut rx.burst, BURST) {
            Ok(n) => n,
            Err(e) => {
                rx.fail(name, 2 * pair, e, stats);
                return 0;
            }
        };
        for i in 0..PREFETCH_AHEAD.min(n) {
            rx.burst.chain(i).prefetch(2);
        }
        let mut ri = 0;
        let mut sent = 0;
        let flen = template.len() - HDR_MAX;
        while ri < n {
            if ri + PREFETCH_AHEAD < n {
                rx.burst.chain(ri + PREFETCH_AHEAD).prefetch(2);
            }
            match pick_rx(&rx.burst, ri, hdr_len + flen, mrg) {
                None => break,
                Some(0) => {
                    // This buffer can never hold the frame: hand it back empty.
                    PortStats::add(&stats.drop_rx_buffer_small, 1);
                    let t = rx.burst.chain(ri).token();
                    rx.q.add_used(t, 0);
                    ri += 1;
                }
                Some(k) => {
                    // The sequence number lives at frame bytes 14..22.
                    template[HDR_MAX + 14..HDR_MAX + 22].copy_from_slice(&seq.to_be_bytes());
                    if k == 1 {
                        let d = rx.burst.chain(ri);
                        let w = d.write_at(0, &template[HDR_MAX - hdr_len..]);
                        rx.q.add_used(d.token(), w as u32);
                    } else {
                        let frame = &template[HDR_MAX..];
                        deliver(rx, ri, k, hdr_len, flen, |d, off, src_off, len| {
                            d.write_at(off, &frame[src_off..src_off + len])
                        });
                    }
                    seq += 1;
                    ri += k;
                    sent += 1;
                }
            }
        }
        rx.q.rewind(&rx.burst, ri);
        if ri > 0 {
            rx.q.publish_used();
            rx.notify(stats);
        }
        self.seq = seq;
        PortStats::add(&stats.tx_packets, sent as u64);
        PortStats::add(&stats.tx_bytes, (sent * flen) as u64);
        sent
    }

    fn reflect(&mut self, pair: usize) -> usize {
        let (hdr_len, mrg) = (self.hdr_len, self.mrg);
        let (name, stats) = (&self.name, &*self.stats);
        let (Some(rx), Some(tx)) = pair_of(&mut self.rings, pair) else { return 0 };
        if !tx.q.has_avail() {
            return 0;
        }
        // Both rings' first lines are needed now: load them in parallel.
        rx.q.prefetch_next();
        tx.q.prefetch_next();
        let ntx = match tx.q.pop(&mut tx.burst, BURST) {
            Ok(n) => n,
            Err(e) => {
                tx.fail(name, 2 * pair + 1, e, stats);
                return 0;
            }
        };
        if ntx == 0 {
            return 0;
        }
        // One receive chain per frame is the common case (a frame that needs more, with
        // mergeable buffers, waits for the next round); popping more would only be
        // validated and rewound.
        let mut want = ntx;
        let mut nrx = match rx.q.pop(&mut rx.burst, want) {
            Ok(n) => n,
            Err(e) => {
                rx.fail(name, 2 * pair, e, stats);
                tx.q.rewind(&tx.burst, 0);
                return 0;
            }
        };
        // Prefetch a few frames ahead of the copy loop (software pipelining): enough to
        // overlap the cache misses on both guests' buffers, few enough not to flood
        // the CPU's miss queue.
        for i in 0..PREFETCH_AHEAD.min(ntx) {
            tx.burst.chain(i).prefetch(2);
        }
        for i in 0..PREFETCH_AHEAD.min(nrx) {
            rx.burst.chain(i).prefetch(2);
        }
        let (mut ri, mut ti) = (0usize, 0usize);
        let (mut delivered, mut bytes, mut bad, mut small) = (0u64, 0u64, 0u64, 0u64);
        while ti < ntx {
            let c = tx.burst.chain(ti);
            if ti + PREFETCH_AHEAD < ntx {
                tx.burst.chain(ti + PREFETCH_AHEAD).prefetch(2);
            }
            if ri + PREFETCH_AHEAD < nrx {
                rx.burst.chain(ri + PREFETCH_AHEAD).prefetch(2);
            }
            let total = c.read_len() as usize;
            if total < hdr_len + 14 || total - hdr_len > MAX_FRAME {
                bad += 1;
                tx.q.add_used(c.token(), 0);
                ti += 1;
                continue;
            }
            let flen = total - hdr_len;
            let k = match pick_rx(&rx.burst, ri, hdr_len + flen, mrg) {
                // Not enough receive chains in this burst for the first frame: pop a
                // full burst if we asked for fewer, else the frame needs more merged
                // buffers than a burst holds and is dropped, so the ring always moves.
                None if ri == 0 && nrx == want && want < BURST => {
                    rx.q.rewind(&rx.burst, 0);
                    want = BURST;
                    nrx = match rx.q.pop(&mut rx.burst, want) {
                        Ok(n) => n,
                        Err(e) => {
                            // The frames from here on stay in the transmit ring.
                            rx.fail(name, 2 * pair, e, stats);
                            break;
                        }
                    };
                    continue;
                }
                None if ri == 0 && nrx == BURST => Some(0),
                other => other,
            };
            let k = match k {
                None => break,
                Some(0) => {
                    small += 1;
                    tx.q.add_used(c.token(), 0);
                    ti += 1;
                    continue;
                }
                Some(k) => k,
            };
            let mut macs = [0u8; 12];
            c.read_at(hdr_len, &mut macs);
            macs.rotate_left(6);
            deliver(rx, ri, k, hdr_len, flen, |d, off, src_off, len| {
                let n = d.copy_from(off, &c, hdr_len + src_off, len);
                if src_off == 0 {
                    d.write_at(off, &macs);
                }
                n
            });
            tx.q.add_used(c.token(), 0);
            ri += k;
            ti += 1;
            delivered += 1;
            bytes += flen as u64;
        }
        // Frames with no receive buffer yet stay in the guest's TX ring (backpressure);
        // unused receive buffers go back too.
        tx.q.rewind(&tx.burst, ti);
        rx.q.rewind(&rx.burst, ri);
        // Received frames first: they are what the guest is waiting for.
        if ri > 0 {
            rx.q.publish_used();
            rx.notify(stats);
        }
        if ti > 0 {
            tx.q.publish_used();
            tx.notify(stats);
        }
        PortStats::add(&stats.rx_packets, ti as u64);
        PortStats::add(&stats.tx_packets, delivered);
        PortStats::add(&stats.rx_bytes, bytes);
        PortStats::add(&stats.tx_bytes, bytes);
        PortStats::add(&stats.drop_bad_frame, bad);
        PortStats::add(&stats.drop_rx_buffer_small, small);
        PortStats::add(&stats.bursts, 1);
        ti
    }
}
