//! The packed virtqueue (virtio 1.x section 2.8), device and driver sides.
//!
//! One ring of `size` x 16-byte descriptors `{addr: u64, len: u32, id: u16, flags: u16}`
//! (16-byte aligned) and two 4-byte event suppression structures
//! `{off_wrap: u16, flags: u16}`: the driver's (driver area, read by the device) and the
//! device's (device area, read by the driver).
//!
//! Both sides keep free-running 16-bit sequence numbers for their positions: the slot is
//! `seq & (size - 1)` and the wrap counter, which starts at 1, is
//! `1 ^ ((seq / size) & 1)`. Queue sizes are powers of two (see [`crate::check_size`]),
//! so the sequence numbers wrap consistently at 2^16.

use std::sync::Arc;

use crate::burst::{Burst, ChainAcc};
use crate::error::{PostError, RingError, SetupError};
use crate::mem::{self, DirtyLog, GuestMemory, HostSpan};
use crate::setup::{check_bufs, check_indirect_area, map_area};
use crate::{features, Buf, RingAddrs, Token, Used};

/// VIRTQ_DESC_F_NEXT.
pub const DESC_F_NEXT: u16 = 1;
/// VIRTQ_DESC_F_WRITE.
pub const DESC_F_WRITE: u16 = 2;
/// VIRTQ_DESC_F_INDIRECT.
pub const DESC_F_INDIRECT: u16 = 4;
/// VIRTQ_DESC_F_AVAIL (bit 7).
pub const DESC_F_AVAIL: u16 = 1 << 7;
/// VIRTQ_DESC_F_USED (bit 15).
pub const DESC_F_USED: u16 = 1 << 15;
/// RING_EVENT_FLAGS_ENABLE.
pub const EVENT_F_ENABLE: u16 = 0;
/// RING_EVENT_FLAGS_DISABLE.
pub const EVENT_F_DISABLE: u16 = 1;
/// RING_EVENT_FLAGS_DESC (only with VIRTIO_F_EVENT_IDX).
pub const EVENT_F_DESC: u16 = 2;

#[inline(always)]
fn wrap_of(seq: u16, log2: u32) -> u16 {
    1 ^ ((seq >> log2) & 1)
}

/// Sequence number of the (slot, wrap) pair `off_wrap` relative to `new`: how far the
/// event position lies behind `new`, in `[0, 2 * size)`.
#[inline(always)]
fn event_behind(off_wrap: u16, new: u16, size: u16) -> u32 {
    let size = size as u32;
    let pos = (off_wrap & 0x7fff) as u32 & (size - 1);
    let e_mod = pos + if off_wrap >> 15 == 1 { 0 } else { size };
    let n_mod = new as u32 & (2 * size - 1);
    (n_mod + 2 * size - e_mod) & (2 * size - 1)
}

/// The packed form of `vring_need_event`: was the event position passed by moving from
/// `old` to `new`?
#[inline(always)]
fn packed_need_event(off_wrap: u16, new: u16, old: u16, size: u16) -> bool {
    let behind = event_behind(off_wrap, new, size);
    behind.wrapping_sub(1) < new.wrapping_sub(old) as u32
}

fn map_areas(
    mem: &GuestMemory,
    size: u16,
    a: RingAddrs,
) -> Result<(HostSpan, HostSpan, HostSpan), SetupError> {
    Ok((
        map_area(mem, "descriptor ring", a.desc, 16 * size as u64, 16)?,
        map_area(mem, "driver event suppression", a.driver, 4, 4)?,
        map_area(mem, "device event suppression", a.device, 4, 4)?,
    ))
}

/// Converts a vhost-user ring base (bits 0-14 index, bit 15 wrap counter) into a
/// sequence number.
pub fn seq_from_base(base: u16, size: u16) -> u16 {
    let idx = (base & 0x7fff) & (size - 1);
    if base >> 15 == 1 {
        idx
    } else {
        idx.wrapping_add(size)
    }
}

/// Converts a sequence number into a vhost-user ring base (index | wrap << 15).
pub fn base_from_seq(seq: u16, size: u16) -> u16 {
    let log2 = size.trailing_zeros();
    (seq & (size - 1)) | (wrap_of(seq, log2) << 15)
}

/// The device side of a packed virtqueue.
#[derive(Debug)]
pub struct PackedDevice {
    mem: Arc<GuestMemory>,
    ring: HostSpan,
    driver_evt: HostSpan,
    device_evt: HostSpan,
    size: u16,
    mask: u16,
    log2: u32,
    event_idx: bool,
    indirect: bool,
    next_avail: u16,
    next_used: u16,
    /// The first used descriptor of the current batch: its flags are stored last.
    pending_head: Option<(u16, u16)>,
    signalled_used: u16,
    signalled_valid: bool,
    hint: usize,
    broken: Option<RingError>,
    /// Guest-physical addresses of the ring and of the device event suppression area.
    ring_gpa: u64,
    device_evt_gpa: u64,
    /// The memory's dirty log when live migration logging is on.
    log: Option<Arc<DirtyLog>>,
}

impl PackedDevice {
    /// Sets up the device side of a packed ring of `size` entries at `addrs`.
    pub fn new(
        mem: Arc<GuestMemory>,
        size: u16,
        addrs: RingAddrs,
        features: u64,
    ) -> Result<Self, SetupError> {
        crate::check_size(size as u32)?;
        let (ring, driver_evt, device_evt) = map_areas(&mem, size, addrs)?;
        let log = mem.log().cloned();
        Ok(Self {
            mem,
            ring,
            driver_evt,
            device_evt,
            size,
            mask: size - 1,
            log2: size.trailing_zeros(),
            event_idx: features & features::EVENT_IDX != 0,
            indirect: features & features::INDIRECT_DESC != 0,
            next_avail: 0,
            next_used: 0,
            pending_head: None,
            signalled_used: 0,
            signalled_valid: false,
            hint: 0,
            broken: None,
            ring_gpa: addrs.desc,
            device_evt_gpa: addrs.device,
            log,
        })
    }

    /// Resumes at the given sequence numbers (see [`seq_from_base`]).
    pub fn set_state(&mut self, next_avail: u16, next_used: u16) {
        self.next_avail = next_avail;
        self.next_used = next_used;
        self.pending_head = None;
        self.signalled_valid = false;
        self.broken = None;
    }

    /// Next avail sequence number.
    pub fn next_avail(&self) -> u16 {
        self.next_avail
    }

    /// Next used sequence number.
    pub fn next_used(&self) -> u16 {
        self.next_used
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

    #[inline(always)]
    fn is_avail(&self, flags: u16, seq: u16) -> bool {
        let wrap = wrap_of(seq, self.log2);
        let a = (flags >> 7) & 1;
        let u = flags >> 15;
        a == wrap && u != wrap
    }

    /// Starts loading the ring lines the next burst reads (avail) and writes (used).
    #[inline]
    pub fn prefetch_next(&self) {
        self.ring.prefetch_at((self.next_avail & self.mask) as usize * 16);
        self.ring.prefetch_w_at((self.next_used & self.mask) as usize * 16);
    }

    /// True when the driver has made a chain available at our position.
    #[inline]
    pub fn has_avail(&self) -> bool {
        let slot = self.next_avail & self.mask;
        self.is_avail(self.ring.read_u16(slot as usize * 16 + 14), self.next_avail)
    }

    /// Pops up to `max` available chains into `burst`. An error marks the queue broken.
    #[inline]
    pub fn pop(&mut self, burst: &mut Burst, max: usize) -> Result<usize, RingError> {
        burst.reset(&self.mem);
        if let Some(e) = self.broken {
            return Err(e);
        }
        let max = max.min(burst.capacity());
        // Start loading the descriptors a burst may cover (they are consecutive).
        for i in 0..(max.min(self.size as usize) * 16).div_ceil(64) {
            let slot = (self.next_avail as usize + i * 4) & self.mask as usize;
            self.ring.prefetch_at(slot * 16);
        }
        let mut n = 0;
        while n < max {
            let slot = self.next_avail & self.mask;
            let flags = self.ring.read_u16(slot as usize * 16 + 14);
            if !self.is_avail(flags, self.next_avail) {
                break;
            }
            // The rest of the chain was written before these flags.
            mem::acquire();
            let mut acc = ChainAcc::new(burst);
            match self.walk(flags, burst, &mut acc) {
                Ok((id, ndesc)) => {
                    acc.finish(burst, Token { id, ndesc });
                    self.next_avail = self.next_avail.wrapping_add(ndesc);
                    n += 1;
                }
                Err(e) => {
                    acc.abort(burst);
                    return self.fail(e);
                }
            }
        }
        Ok(n)
    }

    /// Walks the chain at `next_avail` whose head flags were already read. Returns the
    /// buffer id (from the last descriptor, virtio 1.x 2.8.6) and the slots it takes.
    #[inline(always)]
    fn walk(
        &mut self,
        head_flags: u16,
        burst: &mut Burst,
        acc: &mut ChainAcc,
    ) -> Result<(u16, u16), RingError> {
        let size = self.size;
        let mem = &*self.mem;
        let hint = &mut self.hint;
        let mut seq = self.next_avail;
        let mut flags = head_flags;
        let mut ndesc: u16 = 0;
        loop {
            // One 16-byte read; its flags half is ignored because `flags` was read
            // (once) before the acquire barrier that orders this read after it.
            let (addr, len, id, _) = self.ring.read_desc((seq & self.mask) as usize * 16);
            ndesc += 1;
            if ndesc > size {
                return Err(RingError::ChainTooLong { limit: size as u32 });
            }
            if flags & DESC_F_INDIRECT != 0 {
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
                let table = mem
                    .translate(addr, len as u64, hint)
                    .ok_or(RingError::IndirectOutOfRange { addr, len })?;
                // In an indirect table the entries are sequential and NEXT is ignored
                // (virtio 1.x 2.8.8).
                for i in 0..(len / 16) as usize {
                    let (a, l, _id, f) = table.read_desc(i * 16);
                    if f & DESC_F_INDIRECT != 0 {
                        return Err(RingError::NestedIndirect);
                    }
                    acc.add(burst, mem, hint, a, l, f & DESC_F_WRITE != 0)?;
                }
                return Ok((id, ndesc));
            }
            acc.add(burst, mem, hint, addr, len, flags & DESC_F_WRITE != 0)?;
            if flags & DESC_F_NEXT == 0 {
                return Ok((id, ndesc));
            }
            seq = seq.wrapping_add(1);
            flags = self.ring.read_u16((seq & self.mask) as usize * 16 + 14);
        }
    }

    /// Records a device write of `len` bytes at `off` of the ring in the dirty log.
    #[inline(always)]
    fn log_ring(&self, off: usize, len: u64) {
        if let Some(l) = &self.log {
            l.mark(self.ring_gpa + off as u64, len);
        }
    }

    /// Steps the avail position back by `slots` ring slots (see
    /// [`crate::DeviceQueue::rewind`]).
    pub fn rewind(&mut self, slots: u16) {
        self.next_avail = self.next_avail.wrapping_sub(slots);
    }

    /// Writes one used descriptor. The first of a batch keeps its flags back until
    /// [`PackedDevice::publish_used`], so the driver sees the whole batch at once.
    #[inline(always)]
    pub fn add_used(&mut self, token: Token, len: u32) {
        let slot = self.next_used & self.mask;
        let off = slot as usize * 16;
        let wrap = wrap_of(self.next_used, self.log2);
        let mut flags = if wrap == 1 { DESC_F_AVAIL | DESC_F_USED } else { 0 };
        if len > 0 {
            flags |= DESC_F_WRITE;
        }
        // len, id and flags share the aligned 8-byte word at offset 8. The batch's first
        // element gets len and id now and its flags at publish time; the others are one
        // 8-byte store, which no reader can observe half done, so the flags can never be
        // seen before the id and length they describe.
        if self.pending_head.is_none() {
            self.ring.write_u32(off + 8, len);
            self.ring.write_u16(off + 12, token.id);
            self.pending_head = Some((slot, flags));
        } else {
            self.ring.write_u64(off + 8, len as u64 | (token.id as u64) << 32 | (flags as u64) << 48);
        }
        self.log_ring(off + 8, 8);
        self.next_used = self.next_used.wrapping_add(token.ndesc);
    }

    /// Makes the batch visible: one store of the first used descriptor's flags.
    #[inline(always)]
    pub fn publish_used(&mut self) {
        if let Some((slot, flags)) = self.pending_head.take() {
            mem::release();
            self.ring.write_u16(slot as usize * 16 + 14, flags);
        }
    }

    /// Does the driver want an interrupt for what was published since the last decision?
    #[inline]
    pub fn needs_notify(&mut self) -> bool {
        let new = self.next_used;
        let old = self.signalled_used;
        if new == old && self.signalled_valid {
            return false;
        }
        mem::full();
        let valid = self.signalled_valid;
        self.signalled_used = new;
        self.signalled_valid = true;
        match self.driver_evt.read_u16(2) {
            EVENT_F_DISABLE => false,
            EVENT_F_DESC if self.event_idx => {
                !valid || packed_need_event(self.driver_evt.read_u16(0), new, old, self.size)
            }
            _ => true,
        }
    }

    /// Asks the driver for kicks again; returns true when a chain is already available.
    pub fn enable_kicks(&mut self) -> bool {
        if let Some(l) = &self.log {
            l.mark(self.device_evt_gpa, 4);
        }
        if self.event_idx {
            self.device_evt.write_u16(0, base_from_seq(self.next_avail, self.size));
            self.device_evt.write_u16(2, EVENT_F_DESC);
        } else {
            self.device_evt.write_u16(2, EVENT_F_ENABLE);
        }
        mem::full();
        self.has_avail()
    }

    /// Tells the driver not to kick.
    pub fn disable_kicks(&mut self) {
        self.device_evt.write_u16(2, EVENT_F_DISABLE);
        if let Some(l) = &self.log {
            l.mark(self.device_evt_gpa, 4);
        }
    }
}

/// The driver side of a packed virtqueue.
#[derive(Debug)]
pub struct PackedDriver {
    mem: Arc<GuestMemory>,
    ring: HostSpan,
    driver_evt: HostSpan,
    device_evt: HostSpan,
    size: u16,
    mask: u16,
    log2: u32,
    event_idx: bool,
    next_avail: u16,
    next_used: u16,
    free_slots: u16,
    free_ids: Vec<u16>,
    /// Per buffer id: ring slots taken (0 = not in flight) and writable capacity.
    ndesc: Vec<u16>,
    cap: Vec<u32>,
    in_flight: u16,
    pending_head: Option<(u16, u16)>,
    kicked_avail: u16,
    indirect: Option<(u64, u16)>,
    hint: usize,
}

impl PackedDriver {
    /// Lays out a packed ring at `addrs` in driver-owned memory, zeroing it.
    pub fn new(
        mem: Arc<GuestMemory>,
        size: u16,
        addrs: RingAddrs,
        features: u64,
        indirect: Option<(u64, u16)>,
    ) -> Result<Self, SetupError> {
        crate::check_size(size as u32)?;
        let (ring, driver_evt, device_evt) = map_areas(&mem, size, addrs)?;
        check_indirect_area(&mem, size, indirect)?;
        ring.fill(0, 0, ring.len());
        driver_evt.fill(0, 0, 4);
        device_evt.fill(0, 0, 4);
        Ok(Self {
            mem,
            ring,
            driver_evt,
            device_evt,
            size,
            mask: size - 1,
            log2: size.trailing_zeros(),
            event_idx: features & features::EVENT_IDX != 0,
            next_avail: 0,
            next_used: 0,
            free_slots: size,
            free_ids: (0..size).rev().collect(),
            ndesc: vec![0; size as usize],
            cap: vec![0; size as usize],
            in_flight: 0,
            pending_head: None,
            kicked_avail: 0,
            indirect,
            hint: 0,
        })
    }

    /// Free ring slots.
    pub fn num_free(&self) -> u16 {
        self.free_slots
    }

    /// Chains posted and not yet returned.
    pub fn in_flight(&self) -> u16 {
        self.in_flight
    }

    fn check_bufs(&mut self, bufs: &[Buf]) -> Result<u32, PostError> {
        check_bufs(&self.mem, &mut self.hint, bufs)
    }

    #[inline(always)]
    fn avail_flags(&self, seq: u16) -> u16 {
        if wrap_of(seq, self.log2) == 1 {
            DESC_F_AVAIL
        } else {
            DESC_F_USED
        }
    }

    #[inline(always)]
    fn write_slot(&mut self, seq: u16, addr: u64, len: u32, id: u16, flags: u16, head: bool) {
        let off = (seq & self.mask) as usize * 16;
        self.ring.write_u64(off, addr);
        if head && self.pending_head.is_none() {
            self.ring.write_u32(off + 8, len);
            self.ring.write_u16(off + 12, id);
            self.pending_head = Some((seq & self.mask, flags));
        } else {
            // The address must be visible before the flags; len, id and flags go in one
            // aligned 8-byte store.
            mem::release();
            self.ring.write_u64(off + 8, len as u64 | (id as u64) << 32 | (flags as u64) << 48);
        }
    }

    /// Writes a chain into the ring (not yet visible: see [`PackedDriver::publish`]).
    /// Returns its buffer id.
    #[inline]
    pub fn add(&mut self, bufs: &[Buf]) -> Result<u16, PostError> {
        let cap = self.check_bufs(bufs)?;
        let n = bufs.len();
        if n > self.free_slots as usize {
            return Err(PostError::Full);
        }
        let id = self.free_ids.pop().ok_or(PostError::Full)?;
        // Write the tail first and the head last, so a device that races us never
        // sees a head whose chain is incomplete.
        for i in (0..n).rev() {
            let b = bufs[i];
            let seq = self.next_avail.wrapping_add(i as u16);
            let mut flags = self.avail_flags(seq) | if b.writable { DESC_F_WRITE } else { 0 };
            if i + 1 != n {
                flags |= DESC_F_NEXT;
            }
            self.write_slot(seq, b.addr, b.len, id, flags, i == 0);
        }
        self.finish_add(id, n as u16, cap);
        Ok(id)
    }

    /// Like [`PackedDriver::add`], through an indirect table.
    pub fn add_indirect(&mut self, bufs: &[Buf]) -> Result<u16, PostError> {
        let cap = self.check_bufs(bufs)?;
        let (area, per) = self.indirect.ok_or(PostError::IndirectTooLong(bufs.len()))?;
        // No chain may be longer than the queue, indirect ones included (virtio 1.x
        // 2.7.5.3.1); the device side refuses them as ChainTooLong.
        if bufs.len() > per as usize || bufs.len() > self.size as usize {
            return Err(PostError::IndirectTooLong(bufs.len()));
        }
        if self.free_slots == 0 {
            return Err(PostError::Full);
        }
        let id = self.free_ids.pop().ok_or(PostError::Full)?;
        let table_gpa = area + id as u64 * per as u64 * 16;
        let mut h = 0;
        let table = self
            .mem
            .translate(table_gpa, bufs.len() as u64 * 16, &mut h)
            .ok_or(PostError::OutOfRange { addr: table_gpa, len: bufs.len() as u32 * 16 })?;
        for (i, b) in bufs.iter().enumerate() {
            table.write_desc(i * 16, b.addr, b.len, 0, if b.writable { DESC_F_WRITE } else { 0 });
        }
        let seq = self.next_avail;
        let flags = self.avail_flags(seq) | DESC_F_INDIRECT;
        self.write_slot(seq, table_gpa, bufs.len() as u32 * 16, id, flags, true);
        self.finish_add(id, 1, cap);
        Ok(id)
    }

    #[inline(always)]
    fn finish_add(&mut self, id: u16, ndesc: u16, cap: u32) {
        self.ndesc[id as usize] = ndesc;
        self.cap[id as usize] = cap;
        self.in_flight += 1;
        self.free_slots -= ndesc;
        self.next_avail = self.next_avail.wrapping_add(ndesc);
    }

    /// Makes every chain added so far visible: one store of the first head's flags.
    #[inline]
    pub fn publish(&mut self) {
        if let Some((slot, flags)) = self.pending_head.take() {
            mem::release();
            self.ring.write_u16(slot as usize * 16 + 14, flags);
        }
    }

    /// Does the device want a kick for what was published since the last decision?
    #[inline]
    pub fn needs_kick(&mut self) -> bool {
        mem::full();
        let new = self.next_avail;
        let old = self.kicked_avail;
        self.kicked_avail = new;
        if new == old {
            return false;
        }
        match self.device_evt.read_u16(2) {
            EVENT_F_DISABLE => false,
            EVENT_F_DESC if self.event_idx => {
                packed_need_event(self.device_evt.read_u16(0), new, old, self.size)
            }
            _ => true,
        }
    }

    /// Collects up to `out.len()` completed buffers.
    #[inline]
    pub fn poll_used(&mut self, out: &mut [Used]) -> Result<usize, RingError> {
        // Positions and counts live in locals for the loop and are stored once at the
        // end: updating adjacent 16-bit fields in place made the compiler merge them into
        // one wide load right after a narrow store (a store-forwarding stall per buffer).
        let mut next_used = self.next_used;
        let mut in_flight = self.in_flight;
        let mut freed = 0u16;
        let mut n = 0;
        let mut err = None;
        while n < out.len() {
            let off = (next_used & self.mask) as usize * 16;
            let flags = self.ring.read_u16(off + 14);
            let wrap = wrap_of(next_used, self.log2);
            let a = (flags >> 7) & 1;
            let u = flags >> 15;
            if a != u || u != wrap {
                break;
            }
            if in_flight == 0 {
                err = Some(RingError::UsedIndexJump { moved: 1, in_flight: 0 });
                break;
            }
            mem::acquire();
            let id = self.ring.read_u16(off + 12);
            // Element Length is reserved in used descriptors without
            // VIRTQ_DESC_F_WRITE and ignored by drivers (virtio 1.x 2.8.4): report 0
            // (devices such as DPDK's vhost put the read length there).
            let len = if flags & DESC_F_WRITE != 0 { self.ring.read_u32(off + 8) } else { 0 };
            let Some(&nd) = self.ndesc.get(id as usize).filter(|nd| **nd != 0) else {
                err = Some(RingError::UnknownUsedId(id as u32));
                break;
            };
            let cap = self.cap[id as usize];
            if len > cap {
                err = Some(RingError::UsedLenTooLarge { id, len, cap });
                break;
            }
            self.ndesc[id as usize] = 0;
            self.free_ids.push(id);
            freed += nd;
            in_flight -= 1;
            next_used = next_used.wrapping_add(nd);
            out[n] = Used { id, len };
            n += 1;
        }
        self.next_used = next_used;
        self.in_flight = in_flight;
        self.free_slots += freed;
        match err {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }

    fn used_ready(&self) -> bool {
        let off = (self.next_used & self.mask) as usize * 16;
        let flags = self.ring.read_u16(off + 14);
        let wrap = wrap_of(self.next_used, self.log2);
        (flags >> 7) & 1 == wrap && flags >> 15 == wrap
    }

    /// Asks for interrupts again; returns true when used buffers are already waiting.
    pub fn enable_interrupts(&mut self) -> bool {
        if self.event_idx {
            self.driver_evt.write_u16(0, base_from_seq(self.next_used, self.size));
            self.driver_evt.write_u16(2, EVENT_F_DESC);
        } else {
            self.driver_evt.write_u16(2, EVENT_F_ENABLE);
        }
        mem::full();
        self.in_flight > 0 && self.used_ready()
    }

    /// Asks the device not to interrupt.
    pub fn disable_interrupts(&mut self) {
        self.driver_evt.write_u16(2, EVENT_F_DISABLE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_roundtrip() {
        for size in [1u16, 2, 256, 32768] {
            for seq in [0u16, 1, size.wrapping_sub(1), size, size.wrapping_add(1), 65535] {
                let b = base_from_seq(seq, size);
                assert_eq!(
                    seq_from_base(b, size) & (2u32 * size as u32 - 1) as u16,
                    seq & (2u32 * size as u32 - 1) as u16
                );
            }
        }
        assert_eq!(base_from_seq(0, 256), 0x8000, "wrap counter starts at 1");
        assert_eq!(base_from_seq(256, 256), 0);
    }

    #[test]
    fn packed_event_window() {
        // size 8: event at slot 2 of wrap 1 (seq 2), moving used from 0 to 4 crosses it.
        assert!(packed_need_event(0x8002, 4, 0, 8));
        assert!(!packed_need_event(0x8002, 2, 0, 8));
        assert!(packed_need_event(0x8002, 3, 2, 8));
        // seq 10 is slot 2 of wrap 0.
        assert!(packed_need_event(0x0002, 11, 9, 8));
        assert!(!packed_need_event(0x8002, 11, 9, 8));
    }
}
