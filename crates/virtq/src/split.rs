//! The split virtqueue (virtio 1.x section 2.7), device and driver sides.
//!
//! Layout in guest memory, little-endian:
//! * descriptor table: `size` x 16 bytes `{addr: u64, len: u32, flags: u16, next: u16}`,
//!   16-byte aligned;
//! * avail ring (driver area): `flags: u16, idx: u16, ring: [u16; size], used_event: u16`,
//!   2-byte aligned;
//! * used ring (device area): `flags: u16, idx: u16, ring: [{id: u32, len: u32}; size],
//!   avail_event: u16`, 4-byte aligned.

use std::sync::Arc;

use crate::burst::{Burst, ChainAcc};
use crate::error::{PostError, RingError, SetupError};
use crate::mem::{self, DirtyLog, GuestMemory, HostSpan};
use crate::setup::{check_bufs, check_indirect_area, map_area};
use crate::{features, need_event, Buf, RingAddrs, Token, Used};

/// VIRTQ_DESC_F_NEXT.
pub const DESC_F_NEXT: u16 = 1;
/// VIRTQ_DESC_F_WRITE.
pub const DESC_F_WRITE: u16 = 2;
/// VIRTQ_DESC_F_INDIRECT.
pub const DESC_F_INDIRECT: u16 = 4;
/// VIRTQ_AVAIL_F_NO_INTERRUPT.
pub const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// VIRTQ_USED_F_NO_NOTIFY.
pub const USED_F_NO_NOTIFY: u16 = 1;

/// Most chains one pop returns.
pub const POP_MAX: usize = 64;

/// Byte sizes of the three areas for a queue of `size` entries.
pub fn area_sizes(size: u16) -> (u64, u64, u64) {
    let n = size as u64;
    (16 * n, 6 + 2 * n, 6 + 8 * n)
}

/// Translates and checks the three areas of a split ring.
fn map_areas(
    mem: &GuestMemory,
    size: u16,
    a: RingAddrs,
) -> Result<(HostSpan, HostSpan, HostSpan), SetupError> {
    let (dl, al, ul) = area_sizes(size);
    Ok((
        map_area(mem, "descriptor table", a.desc, dl, 16)?,
        map_area(mem, "avail ring", a.driver, al, 2)?,
        map_area(mem, "used ring", a.device, ul, 4)?,
    ))
}

/// The device side of a split virtqueue.
#[derive(Debug)]
pub struct SplitDevice {
    mem: Arc<GuestMemory>,
    desc: HostSpan,
    avail: HostSpan,
    used: HostSpan,
    size: u16,
    mask: u16,
    event_idx: bool,
    indirect: bool,
    last_avail: u16,
    /// Used index as last published.
    used_idx: u16,
    /// Entries written to the used ring but not yet published.
    pending: u16,
    signalled_used: u16,
    signalled_valid: bool,
    hint: usize,
    broken: Option<RingError>,
    /// Guest-physical address of the used ring, for the dirty log.
    used_gpa: u64,
    /// The memory's dirty log when live migration logging is on.
    log: Option<Arc<DirtyLog>>,
}

impl SplitDevice {
    /// Sets up the device side of a ring of `size` entries at `addrs`, with the
    /// negotiated `features` (EVENT_IDX and INDIRECT_DESC matter here). The indices
    /// start at 0; see [`SplitDevice::set_state`] to resume.
    pub fn new(
        mem: Arc<GuestMemory>,
        size: u16,
        addrs: RingAddrs,
        features: u64,
    ) -> Result<Self, SetupError> {
        crate::check_size(size as u32)?;
        let (desc, avail, used) = map_areas(&mem, size, addrs)?;
        let log = mem.log().cloned();
        Ok(Self {
            mem,
            desc,
            avail,
            used,
            size,
            mask: size - 1,
            event_idx: features & features::EVENT_IDX != 0,
            indirect: features & features::INDIRECT_DESC != 0,
            last_avail: 0,
            used_idx: 0,
            pending: 0,
            signalled_used: 0,
            signalled_valid: false,
            hint: 0,
            broken: None,
            used_gpa: addrs.device,
            log,
        })
    }

    /// Resumes at `last_avail` (vhost-user SET_VRING_BASE) and takes the used index from
    /// the ring itself, as a device that restarts on a running ring must.
    pub fn set_state(&mut self, last_avail: u16) {
        self.last_avail = last_avail;
        self.used_idx = self.used.read_u16(2);
        self.pending = 0;
        self.signalled_valid = false;
        self.broken = None;
    }

    /// Next avail index the device will read (vhost-user GET_VRING_BASE).
    pub fn last_avail(&self) -> u16 {
        self.last_avail
    }

    /// Published used index.
    pub fn used_idx(&self) -> u16 {
        self.used_idx
    }

    /// Queue size.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// The error that broke this queue, if any.
    pub fn broken(&self) -> Option<RingError> {
        self.broken
    }

    #[cold]
    fn fail(&mut self, e: RingError) -> Result<usize, RingError> {
        self.broken = Some(e);
        Err(e)
    }

    /// Starts loading the lines the next burst touches first: the avail index and ring
    /// entries (read) and the next used entries and used index (written). Issued for
    /// several queues before popping any, the cache misses on them overlap.
    #[inline]
    pub fn prefetch_next(&self) {
        self.avail.prefetch_at(2);
        self.avail.prefetch_at(4 + 2 * (self.last_avail & self.mask) as usize);
        let used = 4 + 8 * (self.used_idx & self.mask) as usize;
        self.used.prefetch_w_at(2);
        for i in 0..4 {
            self.used.prefetch_w_at(used + 64 * i);
        }
    }

    /// Number of chains the driver has made available and we have not popped.
    #[inline]
    pub fn avail_pending(&self) -> u16 {
        self.avail.read_u16(2).wrapping_sub(self.last_avail)
    }

    /// Pops up to `max` (and at most the burst's capacity) available chains into
    /// `burst`, each validated. Returns how many. An error marks the queue broken.
    #[inline]
    pub fn pop(&mut self, burst: &mut Burst, max: usize) -> Result<usize, RingError> {
        burst.reset(&self.mem);
        if let Some(e) = self.broken {
            return Err(e);
        }
        let avail_idx = self.avail.read_u16(2);
        let pending = avail_idx.wrapping_sub(self.last_avail);
        if pending == 0 {
            return Ok(0);
        }
        if pending > self.size {
            return self.fail(RingError::AvailIndexJump {
                old: self.last_avail,
                new: avail_idx,
                size: self.size,
            });
        }
        // The ring entries and descriptors behind avail.idx are published by it.
        mem::acquire();
        let n = (pending as usize).min(max).min(burst.capacity()).min(POP_MAX);
        // Read the burst's heads once, and start loading their descriptors before
        // walking any chain, so the descriptor cache misses overlap.
        let mut heads = [0u16; POP_MAX];
        for (i, h) in heads.iter_mut().enumerate().take(n) {
            let slot = self.last_avail.wrapping_add(i as u16) & self.mask;
            *h = self.avail.read_u16(4 + 2 * slot as usize);
            if *h < self.size {
                self.desc.prefetch_at(*h as usize * 16);
            }
        }
        for &head in &heads[..n] {
            if let Err(e) = self.parse(head, burst) {
                return self.fail(e);
            }
        }
        self.last_avail = self.last_avail.wrapping_add(n as u16);
        Ok(n)
    }

    #[inline(always)]
    fn parse(&mut self, head: u16, burst: &mut Burst) -> Result<(), RingError> {
        // The usual chain: one direct descriptor, in guest memory. Anything else (or a
        // descriptor that fails a check) takes the full walk, which reads the
        // descriptor afresh and validates it on its own.
        if head < self.size {
            let (addr, len, flags, _) = self.desc.read_desc(head as usize * 16);
            if flags & (DESC_F_NEXT | DESC_F_INDIRECT) == 0 {
                if let Some(span) = self.mem.translate(addr, len as u64, &mut self.hint) {
                    let token = Token { id: head, ndesc: 1 };
                    ChainAcc::single(burst, span, addr, flags & DESC_F_WRITE != 0, token);
                    return Ok(());
                }
            }
        }
        let mut acc = ChainAcc::new(burst);
        let r = self.walk(head, burst, &mut acc);
        match r {
            Ok(()) => {
                acc.finish(burst, Token { id: head, ndesc: 1 });
                Ok(())
            }
            Err(e) => {
                acc.abort(burst);
                Err(e)
            }
        }
    }

    #[inline(always)]
    fn walk(&mut self, head: u16, burst: &mut Burst, acc: &mut ChainAcc) -> Result<(), RingError> {
        let size = self.size;
        if head >= size {
            return Err(RingError::DescIndexOutOfRange { index: head, size });
        }
        let mem = &*self.mem;
        let hint = &mut self.hint;
        let mut table = self.desc;
        let mut table_len = size as u32;
        let mut idx = head;
        let mut in_indirect = false;
        // Buffer descriptors seen in the whole chain, direct and indirect: a chain may not
        // be longer than the queue (virtio 1.x 2.7.5.3.1), which also bounds loops. The
        // indirect descriptor itself is not a buffer and is not counted (it can occur only
        // once), so an indirect table of `size` entries is accepted, as checked below.
        let mut count: u32 = 0;
        loop {
            let (addr, len, flags, next) = table.read_desc(idx as usize * 16);
            if flags & DESC_F_INDIRECT != 0 {
                if in_indirect {
                    return Err(RingError::NestedIndirect);
                }
                if !self.indirect {
                    return Err(RingError::IndirectNotNegotiated);
                }
                if flags & DESC_F_NEXT != 0 {
                    return Err(RingError::IndirectWithNext);
                }
                if len == 0 || len % 16 != 0 {
                    return Err(RingError::IndirectLength(len));
                }
                if len / 16 > size as u32 {
                    return Err(RingError::ChainTooLong { limit: size as u32 });
                }
                if addr % 16 != 0 {
                    return Err(RingError::IndirectOutOfRange { addr, len });
                }
                table = mem
                    .translate(addr, len as u64, hint)
                    .ok_or(RingError::IndirectOutOfRange { addr, len })?;
                table_len = len / 16;
                in_indirect = true;
                idx = 0;
                continue;
            }
            count += 1;
            if count > size as u32 {
                return Err(RingError::ChainTooLong { limit: size as u32 });
            }
            acc.add(burst, mem, hint, addr, len, flags & DESC_F_WRITE != 0)?;
            if flags & DESC_F_NEXT == 0 {
                return Ok(());
            }
            if next as u32 >= table_len {
                return Err(RingError::DescIndexOutOfRange { index: next, size: table_len as u16 });
            }
            idx = next;
        }
    }

    /// Records a device write of `len` bytes at `off` in the used ring in the dirty log.
    #[inline(always)]
    fn log_used(&self, off: usize, len: u64) {
        if let Some(l) = &self.log {
            l.mark(self.used_gpa + off as u64, len);
        }
    }

    /// Steps the avail position back by `n` chains (see [`crate::DeviceQueue::rewind`]).
    pub fn rewind(&mut self, n: u16) {
        self.last_avail = self.last_avail.wrapping_sub(n);
    }

    /// Writes one used element (not yet visible to the driver). Completion may be in
    /// any order: out-of-order completion avoids head-of-line blocking.
    #[inline(always)]
    pub fn add_used(&mut self, token: Token, len: u32) {
        let slot = self.used_idx.wrapping_add(self.pending) & self.mask;
        let off = 4 + 8 * slot as usize;
        self.used.write_u32(off, token.id as u32);
        self.used.write_u32(off + 4, len);
        self.log_used(off, 8);
        self.pending = self.pending.wrapping_add(1);
    }

    /// Publishes every used element added since the last call with one store of the
    /// used index.
    #[inline(always)]
    pub fn publish_used(&mut self) {
        if self.pending == 0 {
            return;
        }
        self.used_idx = self.used_idx.wrapping_add(self.pending);
        self.pending = 0;
        mem::release();
        self.used.write_u16(2, self.used_idx);
        self.log_used(2, 2);
    }

    /// Does the driver want an interrupt for what was published since the last
    /// decision? With EVENT_IDX: `vring_need_event(used_event, new, old)`; without it:
    /// unless the driver set VIRTQ_AVAIL_F_NO_INTERRUPT (virtio 1.x 2.7.10).
    #[inline]
    pub fn needs_notify(&mut self) -> bool {
        let new = self.used_idx;
        let old = self.signalled_used;
        if new == old && self.signalled_valid {
            return false;
        }
        // The used index store must be visible before we read the driver's wish.
        mem::full();
        let valid = self.signalled_valid;
        self.signalled_used = new;
        self.signalled_valid = true;
        if self.event_idx {
            let event = self.avail.read_u16(4 + 2 * self.size as usize);
            !valid || need_event(event, new, old)
        } else {
            self.avail.read_u16(0) & AVAIL_F_NO_INTERRUPT == 0
        }
    }

    /// Asks the driver for kicks again; returns true when chains are already available
    /// (the caller must poll again rather than sleep, closing the race of 2.7.10).
    pub fn enable_kicks(&mut self) -> bool {
        if self.event_idx {
            let off = 4 + 8 * self.size as usize;
            self.used.write_u16(off, self.last_avail);
            self.log_used(off, 2);
        } else {
            self.used.write_u16(0, 0);
            self.log_used(0, 2);
        }
        mem::full();
        self.avail_pending() != 0
    }

    /// Tells the driver not to kick (we are polling). With EVENT_IDX nothing is
    /// written: the driver kicks at most once more, when it passes the old avail_event.
    pub fn disable_kicks(&mut self) {
        if !self.event_idx {
            self.used.write_u16(0, USED_F_NO_NOTIFY);
            self.log_used(0, 2);
        }
    }
}

/// The driver side of a split virtqueue: what a virtio-net driver in a guest does, used
/// by the virtio-user frontend and by the tests.
#[derive(Debug)]
pub struct SplitDriver {
    mem: Arc<GuestMemory>,
    desc: HostSpan,
    avail: HostSpan,
    used: HostSpan,
    size: u16,
    mask: u16,
    event_idx: bool,
    /// Driver-private copy of the descriptor links (never read back from the ring).
    next: Vec<u16>,
    free_head: u16,
    num_free: u16,
    /// Per head: descriptors in the chain (0 = not in flight) and writable capacity.
    ndesc: Vec<u16>,
    cap: Vec<u32>,
    in_flight: u16,
    avail_idx: u16,
    kicked_avail: u16,
    last_used: u16,
    indirect: Option<(u64, u16)>,
    hint: usize,
}

impl SplitDriver {
    /// Lays out a ring of `size` entries at `addrs` in driver-owned memory, zeroing the
    /// rings. `indirect` is an optional area of `size * per_chain * 16` bytes for
    /// indirect tables, `per_chain` entries per head.
    pub fn new(
        mem: Arc<GuestMemory>,
        size: u16,
        addrs: RingAddrs,
        features: u64,
        indirect: Option<(u64, u16)>,
    ) -> Result<Self, SetupError> {
        crate::check_size(size as u32)?;
        let (desc, avail, used) = map_areas(&mem, size, addrs)?;
        check_indirect_area(&mem, size, indirect)?;
        desc.fill(0, 0, desc.len());
        avail.fill(0, 0, avail.len());
        used.fill(0, 0, used.len());
        let next = (1..=size).collect();
        Ok(Self {
            mem,
            desc,
            avail,
            used,
            size,
            mask: size - 1,
            event_idx: features & features::EVENT_IDX != 0,
            next,
            free_head: 0,
            num_free: size,
            ndesc: vec![0; size as usize],
            cap: vec![0; size as usize],
            in_flight: 0,
            avail_idx: 0,
            kicked_avail: 0,
            last_used: 0,
            indirect,
            hint: 0,
        })
    }

    /// Free descriptors.
    pub fn num_free(&self) -> u16 {
        self.num_free
    }

    /// Chains posted and not yet returned.
    pub fn in_flight(&self) -> u16 {
        self.in_flight
    }

    fn check_bufs(&mut self, bufs: &[Buf]) -> Result<u32, PostError> {
        check_bufs(&self.mem, &mut self.hint, bufs)
    }

    /// Writes a chain into the descriptor table and the avail ring (not yet visible to
    /// the device: see [`SplitDriver::publish`]). Returns the head id.
    #[inline]
    pub fn add(&mut self, bufs: &[Buf]) -> Result<u16, PostError> {
        let cap = self.check_bufs(bufs)?;
        let n = bufs.len();
        if n > self.num_free as usize {
            return Err(PostError::Full);
        }
        let head = self.free_head;
        let mut idx = head;
        for (i, b) in bufs.iter().enumerate() {
            let last = i + 1 == n;
            let mut flags = if b.writable { DESC_F_WRITE } else { 0 };
            if !last {
                flags |= DESC_F_NEXT;
            }
            let next = self.next[idx as usize];
            self.desc.write_desc(idx as usize * 16, b.addr, b.len, flags, if last { 0 } else { next });
            if last {
                self.free_head = next;
            } else {
                idx = next;
            }
        }
        self.num_free -= n as u16;
        self.finish_add(head, n as u16, cap);
        Ok(head)
    }

    /// Like [`SplitDriver::add`], but through an indirect table: one ring descriptor.
    pub fn add_indirect(&mut self, bufs: &[Buf]) -> Result<u16, PostError> {
        let cap = self.check_bufs(bufs)?;
        let (area, per) = self.indirect.ok_or(PostError::IndirectTooLong(bufs.len()))?;
        // No chain may be longer than the queue, indirect ones included (virtio 1.x
        // 2.7.5.3.1); the device side refuses them as ChainTooLong.
        if bufs.len() > per as usize || bufs.len() > self.size as usize {
            return Err(PostError::IndirectTooLong(bufs.len()));
        }
        if self.num_free == 0 {
            return Err(PostError::Full);
        }
        let head = self.free_head;
        let table_gpa = area + head as u64 * per as u64 * 16;
        let mut h = 0;
        let table = self
            .mem
            .translate(table_gpa, bufs.len() as u64 * 16, &mut h)
            .ok_or(PostError::OutOfRange { addr: table_gpa, len: bufs.len() as u32 * 16 })?;
        for (i, b) in bufs.iter().enumerate() {
            let last = i + 1 == bufs.len();
            let mut flags = if b.writable { DESC_F_WRITE } else { 0 };
            if !last {
                flags |= DESC_F_NEXT;
            }
            table.write_desc(i * 16, b.addr, b.len, flags, if last { 0 } else { i as u16 + 1 });
        }
        self.desc.write_desc(head as usize * 16, table_gpa, bufs.len() as u32 * 16, DESC_F_INDIRECT, 0);
        self.free_head = self.next[head as usize];
        self.num_free -= 1;
        self.finish_add(head, 1, cap);
        Ok(head)
    }

    #[inline(always)]
    fn finish_add(&mut self, head: u16, ndesc: u16, cap: u32) {
        self.ndesc[head as usize] = ndesc;
        self.cap[head as usize] = cap;
        self.in_flight += 1;
        let slot = self.avail_idx & self.mask;
        self.avail.write_u16(4 + 2 * slot as usize, head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
    }

    /// Makes every chain added so far visible to the device with one index store.
    #[inline]
    pub fn publish(&mut self) {
        mem::release();
        self.avail.write_u16(2, self.avail_idx);
    }

    /// Does the device want a kick for what was published since the last decision?
    #[inline]
    pub fn needs_kick(&mut self) -> bool {
        mem::full();
        let new = self.avail_idx;
        let old = self.kicked_avail;
        self.kicked_avail = new;
        if self.event_idx {
            let event = self.used.read_u16(4 + 8 * self.size as usize);
            need_event(event, new, old)
        } else {
            self.used.read_u16(0) & USED_F_NO_NOTIFY == 0
        }
    }

    /// Collects up to `out.len()` completed chains. Returns how many; an error means the
    /// device broke the ring rules.
    #[inline]
    pub fn poll_used(&mut self, out: &mut [Used]) -> Result<usize, RingError> {
        let used_idx = self.used.read_u16(2);
        let moved = used_idx.wrapping_sub(self.last_used);
        if moved == 0 {
            return Ok(0);
        }
        if moved > self.in_flight {
            return Err(RingError::UsedIndexJump { moved, in_flight: self.in_flight });
        }
        mem::acquire();
        let n = (moved as usize).min(out.len());
        for o in out.iter_mut().take(n) {
            let slot = self.last_used & self.mask;
            let off = 4 + 8 * slot as usize;
            let (id, len) = (self.used.read_u32(off), self.used.read_u32(off + 4));
            if id >= self.size as u32 || self.ndesc[id as usize] == 0 {
                return Err(RingError::UnknownUsedId(id));
            }
            let id = id as u16;
            let cap = self.cap[id as usize];
            if len > cap {
                return Err(RingError::UsedLenTooLarge { id, len, cap });
            }
            // Return the chain's descriptors to the free list, following our own links.
            let nd = self.ndesc[id as usize];
            let mut last = id;
            for _ in 1..nd {
                last = self.next[last as usize];
            }
            self.next[last as usize] = self.free_head;
            self.free_head = id;
            self.num_free += nd;
            self.ndesc[id as usize] = 0;
            self.in_flight -= 1;
            self.last_used = self.last_used.wrapping_add(1);
            *o = Used { id, len };
        }
        Ok(n)
    }

    /// Asks for interrupts again; returns true when used entries are already waiting.
    pub fn enable_interrupts(&mut self) -> bool {
        if self.event_idx {
            self.avail.write_u16(4 + 2 * self.size as usize, self.last_used);
        } else {
            self.avail.write_u16(0, 0);
        }
        mem::full();
        self.used.read_u16(2) != self.last_used
    }

    /// Asks the device not to interrupt (we are polling).
    pub fn disable_interrupts(&mut self) {
        if self.event_idx {
            // An event index just behind us is only reached again after 2^16 entries.
            self.avail.write_u16(4 + 2 * self.size as usize, self.last_used.wrapping_sub(1));
        } else {
            self.avail.write_u16(0, AVAIL_F_NO_INTERRUPT);
        }
    }
}
