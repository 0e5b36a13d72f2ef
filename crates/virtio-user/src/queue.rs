//! The data path of one virtio-net queue pair: transmit (virtqueue 2N+1) and receive
//! (virtqueue 2N), as a virtio-net driver runs them (virtio 1.x 5.1.6).
//!
//! Every descriptor slot owns one preallocated buffer in the shared guest memory, so
//! the hot path allocates nothing: transmit copies a frame into a free slot's buffer
//! behind a header written once at setup; receive copies from the used buffers into
//! memory the caller provides and reposts the buffers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use netproto::virtio_net::{NetHdr, HDR_LEN};
use virtq::{Buf, DriverQueue, GuestMemory, Used};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::poll::{EpollContext, EpollEvents};

use crate::{Error, Result};

fn errno(e: vmm_sys_util::errno::Error) -> Error {
    Error::EventFd(std::io::Error::from_raw_os_error(e.errno()))
}

/// A receive buffer the caller owns: rx_burst copies one frame into it.
#[derive(Debug, Clone)]
pub struct Packet {
    buf: Box<[u8]>,
    len: usize,
    frame_len: usize,
    hdr: NetHdr,
}

impl Packet {
    /// A packet buffer that holds frames of up to `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self { buf: vec![0; capacity].into_boxed_slice(), len: 0, frame_len: 0, hdr: NetHdr::default() }
    }

    /// The frame bytes received (at most the capacity).
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Length of the received bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no frame is held.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Length of the frame as the device wrote it; larger than [`Packet::len`] when the
    /// frame did not fit and was truncated.
    #[inline]
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// True when the frame was longer than the buffer.
    #[inline]
    pub fn truncated(&self) -> bool {
        self.frame_len > self.len
    }

    /// The virtio-net header that came with the frame (num_buffers is the number of
    /// receive buffers it was merged from).
    #[inline]
    pub fn hdr(&self) -> &NetHdr {
        &self.hdr
    }

    /// Capacity in bytes.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Replaces the contents with `frame` (truncated to the capacity), e.g. to build
    /// frames to transmit.
    pub fn set(&mut self, frame: &[u8]) {
        let n = frame.len().min(self.buf.len());
        self.buf[..n].copy_from_slice(&frame[..n]);
        self.len = n;
        self.frame_len = frame.len();
        self.hdr = NetHdr::default();
    }

    /// Mutable access to the whole buffer, for building frames in place; finish with
    /// [`Packet::set_len`].
    pub fn buf_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// Sets the length after writing through [`Packet::buf_mut`].
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.buf.len());
        self.frame_len = self.len;
    }
}

impl AsRef<[u8]> for Packet {
    fn as_ref(&self) -> &[u8] {
        self.data()
    }
}

/// What rx_burst_with reports about each frame besides its bytes.
#[derive(Debug, Clone, Copy)]
pub struct RxMeta {
    /// Length as the device wrote it (the slice passed is shorter when truncated).
    pub frame_len: usize,
    /// The virtio-net header.
    pub hdr: NetHdr,
}

/// Counters of one queue pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Frames handed to the device.
    pub tx_packets: u64,
    /// Frame bytes handed to the device (without the virtio-net header).
    pub tx_bytes: u64,
    /// Kicks written to the transmit queue's eventfd.
    pub tx_kicks: u64,
    /// tx_burst calls that found no free transmit slot for at least one frame.
    pub tx_ring_full: u64,
    /// Frames received.
    pub rx_packets: u64,
    /// Frame bytes received (without the virtio-net header).
    pub rx_bytes: u64,
    /// Frames that arrived in more than one buffer (VIRTIO_NET_F_MRG_RXBUF).
    pub rx_merged: u64,
    /// Frames longer than the caller's buffer, delivered truncated.
    pub rx_truncated: u64,
    /// Used buffers dropped as malformed (shorter than the header, num_buffers 0 or
    /// larger than the queue).
    pub rx_errors: u64,
    /// Kicks written to the receive queue's eventfd (after reposting buffers).
    pub rx_kicks: u64,
    /// Receive buffers posted (initial fill and refills).
    pub rx_posted: u64,
}

/// Fixed parameters of a queue pair's buffers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BufLayout {
    /// Guest-physical address of slot 0's buffer.
    pub(crate) base: u64,
    /// Bytes per slot (a multiple of 64).
    pub(crate) stride: u64,
    /// Bytes of each buffer posted (header included).
    pub(crate) len: u32,
}

impl BufLayout {
    #[inline(always)]
    fn addr(&self, slot: u16) -> u64 {
        self.base + slot as u64 * self.stride
    }
}

/// Slot bookkeeping shared by both directions: which buffer each in-flight id carries.
#[derive(Debug)]
struct Slots {
    slot_of_id: Vec<u16>,
    free: Vec<u16>,
}

impl Slots {
    fn new(size: u16) -> Self {
        Self { slot_of_id: vec![0; size as usize], free: (0..size).rev().collect() }
    }

    /// Frees and returns the slot that carried buffer `id` (DriverQueue has checked that
    /// `id` was in flight).
    #[inline(always)]
    fn take(&mut self, id: u16) -> u16 {
        let slot = self.slot_of_id[id as usize];
        self.free.push(slot);
        slot
    }
}

/// One virtqueue plus its notification eventfds.
#[derive(Debug)]
pub(crate) struct Vq {
    pub(crate) index: u16,
    pub(crate) q: DriverQueue,
    pub(crate) kick: EventFd,
    pub(crate) call: EventFd,
}

impl Vq {
    /// Publishes posted buffers and kicks when the device asks for it (virtio 1.x
    /// 2.7.13 / 2.8.21: the driver checks notification suppression after publishing).
    #[inline]
    fn publish_and_kick(&mut self) -> Result<bool> {
        self.q.publish();
        if self.q.needs_kick() {
            self.kick.write(1).map_err(|source| Error::Kick { queue: self.index, source })?;
            return Ok(true);
        }
        Ok(false)
    }
}

/// A virtio-net queue pair: receive queue 2N and transmit queue 2N+1 (virtio 1.x
/// 5.1.2).
#[derive(Debug)]
pub struct QueuePair {
    pair: u16,
    mem: Arc<GuestMemory>,
    rx: Vq,
    tx: Vq,
    rx_buf: BufLayout,
    tx_buf: BufLayout,
    rx_slots: Slots,
    tx_slots: Slots,
    tx_indirect: bool,
    mrg_rxbuf: bool,
    /// Used receive buffers collected from the ring and not yet turned into frames
    /// (a frame's buffers are consumed together); `id` holds the buffer's slot.
    backlog: Vec<Used>,
    bl_head: usize,
    bl_len: usize,
    tx_used: Vec<Used>,
    epoll: EpollContext<u32>,
    events: EpollEvents,
    stats: QueueStats,
}

impl QueuePair {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        pair: u16,
        mem: Arc<GuestMemory>,
        rx: Vq,
        tx: Vq,
        rx_buf: BufLayout,
        tx_buf: BufLayout,
        tx_indirect: bool,
        mrg_rxbuf: bool,
    ) -> Result<Self> {
        let size = rx.q.num_free();
        let tx_size = tx.q.num_free();
        let epoll = EpollContext::new().map_err(errno)?;
        epoll.add(&rx.call, 0).map_err(errno)?;
        let mut qp = Self {
            pair,
            mem,
            rx,
            tx,
            rx_buf,
            tx_buf,
            rx_slots: Slots::new(size),
            tx_slots: Slots::new(tx_size),
            tx_indirect,
            mrg_rxbuf,
            backlog: vec![Used { id: 0, len: 0 }; size as usize],
            bl_head: 0,
            bl_len: 0,
            tx_used: vec![Used { id: 0, len: 0 }; tx_size as usize],
            epoll,
            events: EpollEvents::new(),
            stats: QueueStats::default(),
        };
        // Transmit headers never change (no offloads, num_buffers 0 on transmit: virtio
        // 1.x 5.1.6.2), so they are written once per slot here.
        let hdr = NetHdr::default().to_bytes();
        for slot in 0..tx_size {
            qp.mem.write(qp.tx_buf.addr(slot), &hdr)?;
        }
        // Poll mode: ask the device not to interrupt on either queue (virtio 1.x
        // 2.7.7 / 2.8.10, VIRTQ_AVAIL_F_NO_INTERRUPT or the event index).
        qp.rx.q.disable_interrupts();
        qp.tx.q.disable_interrupts();
        Ok(qp)
    }

    /// Fills the receive queue with every free buffer (virtio 1.x 5.1.6.3: the driver
    /// keeps the receive queue populated). Does not kick; [`QueuePair::kick_rx`] does.
    pub(crate) fn fill_rx(&mut self) -> Result<usize> {
        let mut n = 0;
        while let Some(&slot) = self.rx_slots.free.last() {
            let b = Buf { addr: self.rx_buf.addr(slot), len: self.rx_buf.len, writable: true };
            match self.rx.q.add(&[b]) {
                Ok(id) => {
                    self.rx_slots.free.pop();
                    self.rx_slots.slot_of_id[id as usize] = slot;
                    n += 1;
                }
                Err(virtq::PostError::Full) => break,
                Err(source) => return Err(Error::Post { queue: self.rx.index, source }),
            }
        }
        self.stats.rx_posted += n as u64;
        Ok(n)
    }

    /// Publishes the receive buffers and kicks if the device wants it.
    pub(crate) fn kick_rx(&mut self) -> Result<()> {
        if self.rx.publish_and_kick()? {
            self.stats.rx_kicks += 1;
        }
        Ok(())
    }

    /// The kick and call eventfds of the transmit (`tx`) or receive ring, to send to
    /// the backend.
    pub(crate) fn ring_fds(&self, tx: bool) -> (&EventFd, &EventFd) {
        let v = if tx { &self.tx } else { &self.rx };
        (&v.kick, &v.call)
    }

    /// The queue pair's index N (virtqueues 2N and 2N+1).
    pub fn index(&self) -> u16 {
        self.pair
    }

    /// Counters so far.
    pub fn stats(&self) -> QueueStats {
        self.stats
    }

    /// Largest frame tx_burst accepts.
    pub fn max_tx_frame(&self) -> usize {
        self.tx_buf.len as usize - HDR_LEN
    }

    /// Transmit buffers free right now (after reclaiming completed ones).
    pub fn tx_free(&mut self) -> Result<usize> {
        self.reclaim_tx()?;
        Ok(self.tx_slots.free.len())
    }

    /// Returns completed transmit buffers to the free list.
    fn reclaim_tx(&mut self) -> Result<()> {
        if self.tx.q.in_flight() == 0 {
            return Ok(());
        }
        let n = self
            .tx
            .q
            .poll_used(&mut self.tx_used)
            .map_err(|source| Error::Ring { queue: self.tx.index, source })?;
        for u in &self.tx_used[..n] {
            self.tx_slots.take(u.id);
        }
        Ok(())
    }

    /// Transmits up to `frames.len()` frames; returns how many were queued (fewer when
    /// the ring is full). Each goes out behind a 12-byte virtio-net header with no
    /// offloads (virtio 1.x 5.1.6.2). Kicks only when the device's notification
    /// suppression asks for it.
    pub fn tx_burst<T: AsRef<[u8]>>(&mut self, frames: &[T]) -> Result<usize> {
        let max = self.max_tx_frame();
        if let Some(f) = frames.iter().find(|f| f.as_ref().len() > max) {
            return Err(Error::FrameTooLarge { len: f.as_ref().len(), max });
        }
        self.reclaim_tx()?;
        let mut sent = 0;
        let mut bytes = 0u64;
        for f in frames {
            let f = f.as_ref();
            let Some(slot) = self.tx_slots.free.pop() else {
                self.stats.tx_ring_full += 1;
                break;
            };
            let addr = self.tx_buf.addr(slot);
            self.mem.write(addr + HDR_LEN as u64, f)?;
            let res = if self.tx_indirect {
                // Header and frame as two descriptors of one indirect table (virtio 1.x
                // 2.7.5.3 / 2.8.19); they are adjacent, so no copy differs.
                self.tx.q.add_indirect(&[
                    Buf { addr, len: HDR_LEN as u32, writable: false },
                    Buf { addr: addr + HDR_LEN as u64, len: f.len() as u32, writable: false },
                ])
            } else {
                self.tx.q.add(&[Buf { addr, len: (HDR_LEN + f.len()) as u32, writable: false }])
            };
            match res {
                Ok(id) => self.tx_slots.slot_of_id[id as usize] = slot,
                Err(virtq::PostError::Full) => {
                    self.tx_slots.free.push(slot);
                    self.stats.tx_ring_full += 1;
                    break;
                }
                Err(source) => {
                    self.tx_slots.free.push(slot);
                    return Err(Error::Post { queue: self.tx.index, source });
                }
            }
            sent += 1;
            bytes += f.len() as u64;
        }
        if sent > 0 {
            self.stats.tx_packets += sent as u64;
            self.stats.tx_bytes += bytes;
            if self.tx.publish_and_kick()? {
                self.stats.tx_kicks += 1;
            }
        }
        Ok(sent)
    }

    /// Moves newly used receive buffers into the backlog.
    fn collect_rx(&mut self) -> Result<()> {
        if self.bl_head > 0 {
            self.backlog.copy_within(self.bl_head..self.bl_len, 0);
            self.bl_len -= self.bl_head;
            self.bl_head = 0;
        }
        if self.bl_len < self.backlog.len() {
            let n = self
                .rx
                .q
                .poll_used(&mut self.backlog[self.bl_len..])
                .map_err(|source| Error::Ring { queue: self.rx.index, source })?;
            // poll_used returns the ids to the driver's free list at once, and a refill
            // may hand them out again while these buffers wait here: remember slots,
            // not ids.
            for u in &mut self.backlog[self.bl_len..self.bl_len + n] {
                u.id = self.rx_slots.slot_of_id[u.id as usize];
            }
            self.bl_len += n;
        }
        Ok(())
    }

    /// Turns the next complete frame in the backlog into bytes in `dst`. Returns `None`
    /// when no complete frame is waiting.
    ///
    /// Without VIRTIO_NET_F_MRG_RXBUF each used buffer is one frame. With it, the first
    /// buffer's header carries num_buffers, the count of used buffers the frame spans;
    /// the header is only in the first (virtio 1.x 5.1.6.4, 5.1.6.4.2).
    fn next_frame(&mut self, dst: &mut [u8]) -> Result<Option<RxMeta>> {
        loop {
            if self.bl_head == self.bl_len {
                return Ok(None);
            }
            let first = self.backlog[self.bl_head];
            if (first.len as usize) < HDR_LEN {
                // A used length below the header size is a device error: drop the buffer.
                self.rx_slots.free.push(first.id);
                self.bl_head += 1;
                self.stats.rx_errors += 1;
                continue;
            }
            let mut hb = [0u8; HDR_LEN];
            self.mem.read(self.rx_buf.addr(first.id), &mut hb)?;
            let hdr = NetHdr::parse(&hb);
            let nbufs = if self.mrg_rxbuf { hdr.num_buffers as usize } else { 1 };
            let available = self.bl_len - self.bl_head + self.rx.q.in_flight() as usize;
            if nbufs == 0 || nbufs > available {
                // num_buffers must be at least 1 and cannot exceed the buffers the
                // device holds or has returned.
                self.rx_slots.free.push(first.id);
                self.bl_head += 1;
                self.stats.rx_errors += 1;
                continue;
            }
            if self.bl_head + nbufs > self.bl_len {
                // The device makes all buffers of a frame used together (5.1.6.4), so
                // the rest is in the ring already or the backlog is full; try again
                // after collecting.
                return Ok(None);
            }
            let mut off = 0usize;
            let mut frame_len = 0usize;
            for k in 0..nbufs {
                let u = self.backlog[self.bl_head + k];
                let slot = u.id;
                self.rx_slots.free.push(slot);
                let skip = if k == 0 { HDR_LEN } else { 0 };
                let n = (u.len as usize).saturating_sub(skip);
                frame_len += n;
                let c = n.min(dst.len() - off);
                if c > 0 {
                    self.mem.read(self.rx_buf.addr(slot) + skip as u64, &mut dst[off..off + c])?;
                    off += c;
                }
            }
            self.bl_head += nbufs;
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += frame_len as u64;
            if nbufs > 1 {
                self.stats.rx_merged += 1;
            }
            if frame_len > off {
                self.stats.rx_truncated += 1;
            }
            return Ok(Some(RxMeta { frame_len, hdr }));
        }
    }

    /// Reposts freed receive buffers and kicks if needed.
    fn refill_rx(&mut self) -> Result<()> {
        if !self.rx_slots.free.is_empty() && self.fill_rx()? > 0 {
            self.kick_rx()?;
        }
        Ok(())
    }

    /// Receives up to `out.len()` frames into the caller's packets; returns how many.
    /// Frames longer than a packet's capacity are truncated (see
    /// [`Packet::truncated`]). Receive buffers are reposted before returning.
    pub fn rx_burst(&mut self, out: &mut [Packet]) -> Result<usize> {
        self.collect_rx()?;
        let mut n = 0;
        while n < out.len() {
            let p = &mut out[n];
            match self.next_frame(&mut p.buf)? {
                Some(m) => {
                    p.len = m.frame_len.min(p.buf.len());
                    p.frame_len = m.frame_len;
                    p.hdr = m.hdr;
                    n += 1;
                }
                None => break,
            }
        }
        self.refill_rx()?;
        Ok(n)
    }

    /// Receives up to `max` frames, handing each to `f` as a slice of `scratch` (which
    /// bounds the frame size; longer frames arrive truncated, with the full length in
    /// [`RxMeta::frame_len`]). Returns how many.
    pub fn rx_burst_with<F>(&mut self, max: usize, scratch: &mut [u8], mut f: F) -> Result<usize>
    where
        F: FnMut(&[u8], RxMeta),
    {
        self.collect_rx()?;
        let mut n = 0;
        while n < max {
            match self.next_frame(scratch)? {
                Some(m) => {
                    f(&scratch[..m.frame_len.min(scratch.len())], m);
                    n += 1;
                }
                None => break,
            }
        }
        self.refill_rx()?;
        Ok(n)
    }

    /// True when a received frame is waiting.
    pub fn rx_pending(&mut self) -> Result<bool> {
        if self.bl_head < self.bl_len {
            return Ok(true);
        }
        self.collect_rx()?;
        Ok(self.bl_head < self.bl_len)
    }

    /// Blocks until a frame is received or `timeout` passes; returns true when one is
    /// waiting. Re-enables the receive queue's interrupts for the wait and disables
    /// them again after, re-checking the ring after enabling to close the race with
    /// the device (virtio 1.x 2.7.7.1 / 2.8.10.1). Spurious wakeups (a notification
    /// for buffers already consumed) go back to waiting.
    pub fn wait_rx(&mut self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.rx_pending()? {
                return Ok(true);
            }
            // Clear notifications for buffers already consumed before re-arming; the
            // eventfd is non-blocking, so an error just means it was empty.
            let _ = self.rx.call.read();
            if self.rx.q.enable_interrupts() {
                self.rx.q.disable_interrupts();
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.rx.q.disable_interrupts();
                return Ok(false);
            }
            // epoll counts whole milliseconds: round up, or the last fraction of a
            // millisecond of every wait would spin through zero-timeout waits.
            let left = Duration::from_millis(left.as_micros().div_ceil(1000) as u64);
            let res = self.epoll.wait_timeout(&self.events, left).map(|ev| ev.iter_readable().count());
            self.rx.q.disable_interrupts();
            res.map_err(errno)?;
        }
    }

    /// The receive queue's call eventfd (the backend writes it when interrupts are
    /// enabled), for callers that run their own event loop.
    pub fn rx_call_fd(&self) -> &EventFd {
        &self.rx.call
    }
}
