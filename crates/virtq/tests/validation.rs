//! One test per validation rule of the ring engine, for both layouts where the rule
//! applies.
//!
//! Malformed rings are written by hand into guest memory (the "victim" ring has a device
//! but no driver). Every device-side test checks the exact [`RingError`] that
//! [`DeviceQueue::pop`] returns, that the queue reports itself broken (and stays so), and
//! that a well-behaved ring in the same guest memory keeps working before and after.
//! Driver-side rules are checked the same way with used entries written by hand.
//!
//! The file ends with the setup errors, a malformed chain in the middle of a burst and
//! the notification suppression rules of virtio 1.x 2.7.7, 2.7.10 and 2.8.10.

mod common;
use common::*;

use virtq::packed::{DESC_F_AVAIL, DESC_F_USED, EVENT_F_DESC, EVENT_F_DISABLE, EVENT_F_ENABLE};
use virtq::split::{AVAIL_F_NO_INTERRUPT, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, USED_F_NO_NOTIFY};
use virtq::{
    features, Burst, DeviceQueue, DriverQueue, GuestArena, Layout, RingAddrs, RingError, SetupError, Used,
};

const NEXT: u16 = DESC_F_NEXT;
const WRITE: u16 = DESC_F_WRITE;
const INDIRECT: u16 = DESC_F_INDIRECT;
const NO_INDIRECT: u64 = features::VERSION_1 | features::EVENT_IDX;

/// A layout-neutral descriptor for crafting chains. `next` only matters for split rings:
/// `None` links to the following descriptor of the crafted chain.
#[derive(Debug, Clone, Copy)]
struct D {
    addr: u64,
    len: u32,
    flags: u16,
    next: Option<u16>,
}

fn d(addr: u64, len: u32, flags: u16) -> D {
    D { addr, len, flags, next: None }
}

fn dn(addr: u64, len: u32, flags: u16, next: u16) -> D {
    D { addr, len, flags, next: Some(next) }
}

/// `n` readable 16-byte buffers at `buf` chained with NEXT (the last one ends the chain).
fn rchain(buf: u64, n: usize) -> Vec<D> {
    let mut v = vec![d(buf, 16, NEXT); n];
    v[n - 1].flags = 0;
    v
}

/// A well-behaved ring and a victim ring in one guest memory. The victim has only a
/// device: the test plays its driver by writing ring memory directly.
struct Env {
    arena: GuestArena,
    good: Ring,
    good_data: u64,
    layout: Layout,
    size: u16,
    addrs: RingAddrs,
    dev: DeviceQueue,
    /// 64 KiB of valid buffer space for the victim's descriptors.
    buf: u64,
    /// Bump pointer for indirect tables (16-byte aligned).
    tables: u64,
    /// Split: next unused descriptor index. Packed: next ring slot.
    next_desc: u16,
    /// Split: avail index written so far.
    avail_idx: u16,
    /// Packed: next buffer id.
    next_id: u16,
}

fn env(layout: Layout, size: u16, feats: u64) -> Env {
    let mut arena = arena();
    let good = ring_in(&mut arena, layout, 64, ALL_FEATURES);
    let good_data = arena.alloc(3 * 4096, 4096).unwrap();
    let addrs = ring_areas(&mut arena, layout, size);
    let dev = DeviceQueue::new(layout, arena.mem().clone(), size, addrs, feats).unwrap();
    let buf = arena.alloc(1 << 16, 4096).unwrap();
    let tables = arena.alloc(1 << 16, 4096).unwrap();
    let mut e = Env {
        arena,
        good,
        good_data,
        layout,
        size,
        addrs,
        dev,
        buf,
        tables,
        next_desc: 0,
        avail_idx: 0,
        next_id: 0,
    };
    e.check_good();
    e
}

impl Env {
    fn check_good(&mut self) {
        exercise(&self.arena, &mut self.good, self.good_data, 2, true);
    }

    /// Makes a crafted chain available. Split: descriptors at consecutive indices from
    /// `next_desc`, head pushed on the avail ring and the avail index published. Packed:
    /// consecutive slots from `next_desc` with AVAIL set for the first lap, head last.
    /// Returns the head index (split) or buffer id (packed).
    fn post(&mut self, chain: &[D]) -> u16 {
        let mem = self.arena.mem().clone();
        let start = self.next_desc;
        self.next_desc += chain.len() as u16;
        match self.layout {
            Layout::Split => {
                for (i, x) in chain.iter().enumerate() {
                    let idx = start + i as u16;
                    let next = x.next.unwrap_or(idx + 1);
                    wr_desc(&mem, split_off::desc(&self.addrs, idx), x.addr, x.len, x.flags, next);
                }
                self.push_head(start);
                start
            }
            Layout::Packed => {
                let id = self.next_id;
                self.next_id += 1;
                for (i, x) in chain.iter().enumerate().rev() {
                    let slot = (start + i as u16) % self.size;
                    assert!(start + (i as u16) < self.size, "crafted packed chains stay in the first lap");
                    wr_desc(
                        &mem,
                        packed_off::desc(&self.addrs, slot),
                        x.addr,
                        x.len,
                        id,
                        x.flags | DESC_F_AVAIL,
                    );
                }
                id
            }
        }
    }

    /// Split: pushes `head` on the avail ring and publishes the avail index.
    fn push_head(&mut self, head: u16) {
        let mem = self.arena.mem();
        wr16(mem, split_off::avail_ring(&self.addrs, self.avail_idx % self.size), head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        wr16(mem, split_off::avail_idx(&self.addrs), self.avail_idx);
    }

    /// Writes an indirect table in the victim's layout; returns its address and length.
    fn table(&mut self, entries: &[D]) -> (u64, u32) {
        let gpa = self.tables;
        let mem = self.arena.mem();
        for (i, x) in entries.iter().enumerate() {
            let at = gpa + 16 * i as u64;
            match self.layout {
                Layout::Split => {
                    wr_desc(mem, at, x.addr, x.len, x.flags, x.next.unwrap_or(i as u16 + 1));
                }
                Layout::Packed => wr_desc(mem, at, x.addr, x.len, 0, x.flags),
            }
        }
        self.tables += (16 * entries.len() as u64).max(16).next_multiple_of(64);
        (gpa, 16 * entries.len() as u32)
    }

    /// The victim's next pop fails with exactly `want`, the queue is broken and stays
    /// broken, and the other ring in the same memory still works.
    fn expect(&mut self, want: RingError) {
        let mut burst = Burst::with_capacity(64);
        let what = format!("{:?} size {}", self.layout, self.size);
        assert_eq!(self.dev.pop(&mut burst, 64), Err(want), "{what}");
        assert_eq!(self.dev.broken(), Some(want), "{what}");
        assert!(!want.to_string().is_empty());
        assert_eq!(self.dev.pop(&mut burst, 64), Err(want), "{what}: the error is sticky");
        assert!(burst.is_empty());
        self.check_good();
    }

    /// The victim's next pop succeeds with `n` chains (used for the boundary cases that
    /// must be accepted).
    fn expect_ok(&mut self, n: usize) -> Burst {
        let mut burst = Burst::with_capacity(64);
        assert_eq!(self.dev.pop(&mut burst, 64), Ok(n), "{:?} size {}", self.layout, self.size);
        assert_eq!(self.dev.broken(), None);
        burst
    }
}

// ---------------------------------------------------------------------------------------
// Device side
// ---------------------------------------------------------------------------------------

#[test]
fn buffer_out_of_range() {
    for layout in LAYOUTS {
        let cases = [
            (ARENA_SIZE, 1),
            (ARENA_SIZE - 8, 16),
            (0x1000, ARENA_SIZE as u32),
            (1 << 40, 64),
            (u64::MAX - 4, 16),
            (u64::MAX, 0),
        ];
        for (addr, len) in cases {
            // Alone, as the second (writable) buffer, and inside an indirect table.
            for place in 0..3 {
                let mut e = env(layout, 8, ALL_FEATURES);
                let buf = e.buf;
                match place {
                    0 => e.post(&[d(addr, len, 0)]),
                    1 => e.post(&[d(buf, 64, NEXT), d(addr, len, WRITE)]),
                    _ => {
                        let (t, tl) = e.table(&[d(buf, 64, NEXT), d(addr, len, WRITE)]);
                        e.post(&[d(t, tl, INDIRECT)])
                    }
                };
                e.expect(RingError::BufferOutOfRange { addr, len });
            }
        }
    }
}

#[test]
fn zero_length_buffer_at_end_of_memory_is_accepted() {
    for layout in LAYOUTS {
        let mut e = env(layout, 8, ALL_FEATURES);
        let buf = e.buf;
        e.post(&[d(buf, 16, NEXT), d(ARENA_SIZE, 0, WRITE)]);
        let b = e.expect_ok(1);
        assert_eq!(b.chain(0).writable().len(), 1);
        assert!(b.chain(0).writable()[0].is_empty());
    }
}

#[test]
fn split_head_index_out_of_range() {
    for head in [8u16, 9, 0x7fff, 0xffff] {
        let mut e = env(Layout::Split, 8, ALL_FEATURES);
        e.push_head(head);
        e.expect(RingError::DescIndexOutOfRange { index: head, size: 8 });
    }
    // A bad head after good ones in the same burst.
    let mut e = env(Layout::Split, 8, ALL_FEATURES);
    let buf = e.buf;
    e.post(&[d(buf, 64, 0)]);
    e.post(&[d(buf, 64, WRITE)]);
    e.push_head(8);
    e.expect(RingError::DescIndexOutOfRange { index: 8, size: 8 });
}

#[test]
fn split_next_index_out_of_range() {
    for next in [8u16, 100, 0xffff] {
        let mut e = env(Layout::Split, 8, ALL_FEATURES);
        let buf = e.buf;
        e.post(&[d(buf, 64, NEXT), dn(buf, 64, NEXT | WRITE, next)]);
        e.expect(RingError::DescIndexOutOfRange { index: next, size: 8 });
    }
    // Inside an indirect table the bound is the table length, not the queue size.
    let mut e = env(Layout::Split, 8, ALL_FEATURES);
    let buf = e.buf;
    let (t, tl) = e.table(&[d(buf, 8, NEXT), d(buf, 8, NEXT), dn(buf, 8, NEXT, 3)]);
    e.post(&[d(t, tl, INDIRECT)]);
    e.expect(RingError::DescIndexOutOfRange { index: 3, size: 3 });
}

#[test]
fn split_looping_chain() {
    let size = 8;
    let lim = RingError::ChainTooLong { limit: size as u32 };
    // Self loop, two-cycle, a loop entered after a tail, and a loop through every entry.
    let loops: [&[D]; 4] = [
        &[dn(0, 0, NEXT, 0)],
        &[dn(0, 0, NEXT, 1), dn(0, 0, NEXT, 0)],
        &[dn(0, 0, NEXT, 1), dn(0, 0, NEXT, 2), dn(0, 0, NEXT, 1)],
        &[
            dn(0, 0, NEXT, 1),
            dn(0, 0, NEXT, 2),
            dn(0, 0, NEXT, 3),
            dn(0, 0, NEXT, 4),
            dn(0, 0, NEXT, 5),
            dn(0, 0, NEXT, 6),
            dn(0, 0, NEXT, 7),
            dn(0, 0, NEXT, 0),
        ],
    ];
    for chain in loops {
        let mut e = env(Layout::Split, size, ALL_FEATURES);
        let buf = e.buf;
        let chain: Vec<D> = chain.iter().map(|x| D { addr: buf, len: 16, ..*x }).collect();
        e.post(&chain);
        e.expect(lim);
    }
    // A loop inside an indirect table.
    let mut e = env(Layout::Split, size, ALL_FEATURES);
    let buf = e.buf;
    let (t, tl) = e.table(&[dn(buf, 8, NEXT, 1), dn(buf, 8, NEXT, 0)]);
    e.post(&[d(t, tl, INDIRECT)]);
    e.expect(lim);
    // Boundary: a chain through all `size` descriptors is fine.
    let mut e = env(Layout::Split, size, ALL_FEATURES);
    let buf = e.buf;
    let mut chain = vec![d(buf, 16, NEXT); size as usize];
    chain[size as usize - 1].flags = 0;
    e.post(&chain);
    let b = e.expect_ok(1);
    assert_eq!(b.chain(0).readable().len(), size as usize);
}

#[test]
fn chain_longer_than_queue() {
    for layout in LAYOUTS {
        let size = 8u16;
        let lim = RingError::ChainTooLong { limit: size as u32 };
        // An indirect table with more entries than the queue has.
        let mut e = env(layout, size, ALL_FEATURES);
        let buf = e.buf;
        let (t, tl) = e.table(&rchain(buf, size as usize + 1));
        e.post(&[d(t, tl, INDIRECT)]);
        e.expect(lim);

        if layout == Layout::Packed {
            // NEXT on every slot of the ring: the chain never ends.
            let mut e = env(layout, size, ALL_FEATURES);
            let buf = e.buf;
            e.post(&vec![d(buf, 8, NEXT); size as usize]);
            e.expect(lim);
        } else {
            // Direct descriptors followed by an indirect table: together longer than the
            // queue (3 + 6 buffers in a queue of 8).
            let mut e = env(layout, size, ALL_FEATURES);
            let buf = e.buf;
            let (t, tl) = e.table(&rchain(buf, 6));
            e.post(&[d(buf, 8, NEXT), d(buf, 8, NEXT), d(buf, 8, NEXT), d(t, tl, INDIRECT)]);
            e.expect(lim);
        }
    }
}

/// The limits are inclusive: a chain of exactly `size` buffers is legal whether it is
/// direct, indirect, or (split) direct descriptors followed by an indirect table.
#[test]
fn chain_of_exactly_queue_size_is_accepted() {
    for layout in LAYOUTS {
        for size in [1u16, 2, 4, 8] {
            // Direct.
            let mut e = env(layout, size, ALL_FEATURES);
            let buf = e.buf;
            let mut chain = vec![d(buf, 16, NEXT); size as usize];
            chain[size as usize - 1].flags = WRITE;
            let id = e.post(&chain);
            let b = e.expect_ok(1);
            assert_eq!(b.chain(0).id(), id);
            assert_eq!(b.chain(0).readable().len() + b.chain(0).writable().len(), size as usize);

            // One indirect table of `size` entries.
            let mut e = env(layout, size, ALL_FEATURES);
            let buf = e.buf;
            let (t, tl) = e.table(&rchain(buf, size as usize));
            e.post(&[d(t, tl, INDIRECT)]);
            let b = e.expect_ok(1);
            assert_eq!(b.chain(0).readable().len(), size as usize, "{layout:?} size {size}");
            assert_eq!(b.chain(0).read_len(), 16 * size as u32);
            assert_eq!(b.chain(0).token().ndesc(), 1);
        }
        // Split: 2 direct + 6 indirect = 8 buffers in a queue of 8.
        if layout == Layout::Split {
            let mut e = env(layout, 8, ALL_FEATURES);
            let buf = e.buf;
            let (t, tl) = e.table(&rchain(buf, 6));
            e.post(&[d(buf, 8, NEXT), d(buf, 8, NEXT), d(t, tl, INDIRECT)]);
            let b = e.expect_ok(1);
            assert_eq!(b.chain(0).readable().len(), 8);
        }
    }
}

#[test]
fn nested_indirect() {
    for layout in LAYOUTS {
        for second in [false, true] {
            let mut e = env(layout, 8, ALL_FEATURES);
            let buf = e.buf;
            let (inner, il) = e.table(&[d(buf, 8, 0)]);
            let (t, tl) = if second {
                e.table(&[d(buf, 8, NEXT), d(inner, il, INDIRECT)])
            } else {
                e.table(&[d(inner, il, INDIRECT)])
            };
            e.post(&[d(t, tl, INDIRECT)]);
            e.expect(RingError::NestedIndirect);
        }
    }
}

#[test]
fn indirect_table_length() {
    for layout in LAYOUTS {
        for len in [0u32, 1, 8, 17, 24, 40] {
            let mut e = env(layout, 8, ALL_FEATURES);
            let buf = e.buf;
            let (t, _) = e.table(&[d(buf, 8, NEXT), d(buf, 8, NEXT), d(buf, 8, 0)]);
            e.post(&[d(t, len, INDIRECT)]);
            e.expect(RingError::IndirectLength(len));
        }
    }
}

#[test]
fn indirect_table_out_of_range() {
    for layout in LAYOUTS {
        let tables_base = env(layout, 8, ALL_FEATURES).tables;
        let cases = [
            (ARENA_SIZE, 16),
            (ARENA_SIZE - 16, 32),
            (1 << 40, 16),
            (u64::MAX - 15, 16),
            // A table that is not 16-byte aligned is refused as unreachable too.
            (tables_base + 8, 16),
        ];
        for (addr, len) in cases {
            let mut e = env(layout, 8, ALL_FEATURES);
            assert_eq!(e.tables, tables_base);
            e.post(&[d(addr, len, INDIRECT)]);
            e.expect(RingError::IndirectOutOfRange { addr, len });
        }
    }
}

#[test]
fn indirect_with_next() {
    for layout in LAYOUTS {
        let mut e = env(layout, 8, ALL_FEATURES);
        let buf = e.buf;
        let (t, tl) = e.table(&[d(buf, 8, 0)]);
        e.post(&[d(t, tl, INDIRECT | NEXT), d(buf, 8, WRITE)]);
        e.expect(RingError::IndirectWithNext);
    }
}

#[test]
fn indirect_not_negotiated() {
    for layout in LAYOUTS {
        for feats in [NO_INDIRECT, features::VERSION_1] {
            let mut e = env(layout, 8, feats);
            let buf = e.buf;
            let (t, tl) = e.table(&[d(buf, 8, 0), d(buf, 8, WRITE)]);
            e.post(&[d(t, tl, INDIRECT)]);
            e.expect(RingError::IndirectNotNegotiated);
        }
        // Same ring contents with the feature: accepted.
        let mut e = env(layout, 8, ALL_FEATURES);
        let buf = e.buf;
        let (t, tl) = e.table(&[d(buf, 8, NEXT), d(buf, 8, WRITE)]);
        e.post(&[d(t, tl, INDIRECT)]);
        e.expect_ok(1);
    }
}

#[test]
fn readable_after_writable() {
    for layout in LAYOUTS {
        let buf = env(layout, 8, ALL_FEATURES).buf;
        let direct: [&[D]; 3] = [
            &[d(buf, 8, WRITE | NEXT), d(buf, 8, 0)],
            &[d(buf, 8, NEXT), d(buf, 8, WRITE | NEXT), d(buf, 8, 0)],
            &[d(buf, 8, WRITE | NEXT), d(buf, 8, WRITE | NEXT), d(buf, 8, NEXT), d(buf, 8, WRITE)],
        ];
        for chain in direct {
            let mut e = env(layout, 8, ALL_FEATURES);
            e.post(chain);
            e.expect(RingError::ReadableAfterWritable);
        }
        // Inside an indirect table.
        let tables: [&[D]; 2] = [
            &[d(buf, 8, WRITE | NEXT), d(buf, 8, 0)],
            &[d(buf, 8, NEXT), d(buf, 8, WRITE | NEXT), d(buf, 8, 0)],
        ];
        for table in tables {
            let mut e = env(layout, 8, ALL_FEATURES);
            let (t, tl) = e.table(table);
            e.post(&[d(t, tl, INDIRECT)]);
            e.expect(RingError::ReadableAfterWritable);
        }
        // Split only: writable direct descriptors followed by an indirect table that
        // starts with a readable one.
        if layout == Layout::Split {
            let mut e = env(layout, 8, ALL_FEATURES);
            let (t, tl) = e.table(&[d(buf, 8, 0)]);
            e.post(&[d(buf, 8, WRITE | NEXT), d(t, tl, INDIRECT)]);
            e.expect(RingError::ReadableAfterWritable);
        }
    }
}

#[test]
fn split_avail_index_jump() {
    let size = 8u16;
    for idx in [size + 1, 100, 0x8000, 0xffff] {
        let mut e = env(Layout::Split, size, ALL_FEATURES);
        wr16(e.arena.mem(), split_off::avail_idx(&e.addrs), idx);
        e.expect(RingError::AvailIndexJump { old: 0, new: idx, size });
    }
    // After some traffic, measured from the device's position.
    let mut e = env(Layout::Split, size, ALL_FEATURES);
    let buf = e.buf;
    for _ in 0..3 {
        e.post(&[d(buf, 8, 0)]);
    }
    e.expect_ok(3);
    wr16(e.arena.mem(), split_off::avail_idx(&e.addrs), 3 + size + 1);
    e.expect(RingError::AvailIndexJump { old: 3, new: 3 + size + 1, size });
    // Boundary: exactly `size` chains pending is fine.
    let mut e = env(Layout::Split, size, ALL_FEATURES);
    let buf = e.buf;
    for _ in 0..size {
        e.post(&[d(buf, 8, 0)]);
    }
    e.expect_ok(size as usize);
}

#[test]
fn total_length_overflow() {
    for layout in LAYOUTS {
        let buf = env(layout, 8, ALL_FEATURES).buf;
        // The overflow is detected before the (also bad) range of the huge buffer.
        let chains: [&[D]; 4] = [
            &[d(buf, 0x1000, NEXT), d(buf, u32::MAX - 0x800, WRITE)],
            &[d(buf, 0x1000, NEXT), d(buf, u32::MAX, 0)],
            &[d(buf, 0x10, WRITE | NEXT), d(buf, u32::MAX - 0x8, WRITE)],
            &[d(buf, 1, NEXT), d(buf, 1, NEXT), d(buf, u32::MAX - 1, WRITE)],
        ];
        for chain in chains {
            let mut e = env(layout, 8, ALL_FEATURES);
            e.post(chain);
            e.expect(RingError::LengthOverflow);
        }
        let mut e = env(layout, 8, ALL_FEATURES);
        let (t, tl) = e.table(&[d(buf, 0x1000, NEXT), d(buf, u32::MAX - 0xfff, WRITE)]);
        e.post(&[d(t, tl, INDIRECT)]);
        e.expect(RingError::LengthOverflow);
    }
}

/// `DeviceQueue::set_base` (a vhost-user ring reset) clears the broken state.
#[test]
fn reset_clears_broken() {
    for layout in LAYOUTS {
        let mut e = env(layout, 8, ALL_FEATURES);
        let buf = e.buf;
        e.post(&[d(buf, 8, WRITE | NEXT), d(buf, 8, 0)]);
        e.expect(RingError::ReadableAfterWritable);
        // The "driver" repairs the ring and the front end resets the queue.
        let mem = e.arena.mem().clone();
        match layout {
            Layout::Split => wr_desc(&mem, split_off::desc(&e.addrs, 1), buf, 8, WRITE, 0),
            Layout::Packed => wr_desc(&mem, packed_off::desc(&e.addrs, 1), buf, 8, 0, WRITE | DESC_F_AVAIL),
        }
        let base = e.dev.base();
        assert_eq!(base, if layout == Layout::Packed { 0x8000_8000 } else { 0 });
        e.dev.set_base(base as u16, Some((base >> 16) as u16));
        assert_eq!(e.dev.broken(), None);
        let b = e.expect_ok(1);
        assert_eq!((b.chain(0).read_len(), b.chain(0).write_len()), (0, 16));
    }
}

// ---------------------------------------------------------------------------------------
// Driver side: the device breaks the rules
// ---------------------------------------------------------------------------------------

struct DrvEnv {
    arena: GuestArena,
    good: Ring,
    good_data: u64,
    victim: Ring,
    data: u64,
}

fn drv_env(layout: Layout) -> DrvEnv {
    let mut arena = arena();
    let good = ring_in(&mut arena, layout, 64, ALL_FEATURES);
    let good_data = arena.alloc(3 * 4096, 4096).unwrap();
    let victim = ring_in(&mut arena, layout, 8, ALL_FEATURES);
    let data = arena.alloc(1 << 16, 4096).unwrap();
    let mut e = DrvEnv { arena, good, good_data, victim, data };
    e.check_good();
    e
}

impl DrvEnv {
    fn check_good(&mut self) {
        exercise(&self.arena, &mut self.good, self.good_data, 2, true);
    }

    fn poll_err(&mut self, want: RingError) {
        let mut out = [Used { id: 0, len: 0 }; 16];
        assert_eq!(self.victim.drv.poll_used(&mut out), Err(want), "{:?}", self.victim.layout);
        self.check_good();
    }

    /// Writes a used element by hand as a misbehaving device would, and publishes it.
    fn fake_used(&mut self, pos: u16, id: u32, len: u32) {
        let mem = self.arena.mem().clone();
        let a = &self.victim.addrs;
        match self.victim.layout {
            Layout::Split => {
                let slot = pos % self.victim.size;
                wr32(&mem, split_off::used_elem(a, slot), id);
                wr32(&mem, split_off::used_elem(a, slot) + 4, len);
                wr16(&mem, split_off::used_idx(a), pos + 1);
            }
            Layout::Packed => {
                assert!(pos < self.victim.size, "first lap only");
                wr_desc(
                    &mem,
                    packed_off::desc(a, pos),
                    0,
                    len,
                    id as u16,
                    DESC_F_AVAIL | DESC_F_USED | WRITE,
                );
            }
        }
    }
}

#[test]
fn used_id_never_posted() {
    for layout in LAYOUTS {
        // An id that is in range but not in flight, and one beyond the queue size.
        let bad_ids: &[u32] = match layout {
            Layout::Split => &[5, 8, 70000],
            Layout::Packed => &[5, 8, 0xffff],
        };
        for &bad in bad_ids {
            let mut e = drv_env(layout);
            let data = e.data;
            let id = e.victim.drv.add(&[wbuf(data, 64)]).unwrap();
            assert_ne!(id as u32, bad);
            e.victim.drv.publish();
            e.fake_used(0, bad, 0);
            e.poll_err(RingError::UnknownUsedId(bad));
        }
        // The device completes the same chain twice.
        let mut e = drv_env(layout);
        let data = e.data;
        let a = e.victim.drv.add(&[wbuf(data, 64)]).unwrap();
        let _b = e.victim.drv.add(&[wbuf(data + 64, 64)]).unwrap();
        e.victim.drv.publish();
        let mut burst = Burst::with_capacity(8);
        assert_eq!(e.victim.dev.pop(&mut burst, 8), Ok(2));
        let t = burst.chain(0).token();
        assert_eq!(t.id(), a);
        e.victim.dev.add_used(t, 1);
        e.victim.dev.add_used(t, 1);
        e.victim.dev.publish_used();
        let mut out = [Used { id: 0, len: 0 }; 1];
        assert_eq!(e.victim.drv.poll_used(&mut out), Ok(1));
        assert_eq!(out[0], Used { id: a, len: 1 });
        e.poll_err(RingError::UnknownUsedId(a as u32));
    }
}

#[test]
fn used_len_larger_than_writable_capacity() {
    for layout in LAYOUTS {
        let mut e = drv_env(layout);
        let data = e.data;
        let id = e.victim.drv.add(&[rbuf(data, 32), wbuf(data + 64, 100), wbuf(data + 256, 28)]).unwrap();
        e.victim.drv.publish();
        let mut burst = Burst::with_capacity(8);
        assert_eq!(e.victim.dev.pop(&mut burst, 8), Ok(1));
        assert_eq!(burst.chain(0).write_len(), 128);
        e.victim.dev.add_used(burst.chain(0).token(), 129);
        e.victim.dev.publish_used();
        e.poll_err(RingError::UsedLenTooLarge { id, len: 129, cap: 128 });

        // A device-readable-only chain has no capacity at all.
        let mut e = drv_env(layout);
        let data = e.data;
        let id = e.victim.drv.add(&[rbuf(data, 32)]).unwrap();
        e.victim.drv.publish();
        assert_eq!(e.victim.dev.pop(&mut burst, 8), Ok(1));
        e.victim.dev.add_used(burst.chain(0).token(), 1);
        e.victim.dev.publish_used();
        e.poll_err(RingError::UsedLenTooLarge { id, len: 1, cap: 0 });

        // Exactly the capacity is fine.
        let mut e = drv_env(layout);
        let data = e.data;
        let id = e.victim.drv.add(&[rbuf(data, 32), wbuf(data + 64, 100)]).unwrap();
        e.victim.drv.publish();
        assert_eq!(e.victim.dev.pop(&mut burst, 8), Ok(1));
        e.victim.dev.add_used(burst.chain(0).token(), 100);
        e.victim.dev.publish_used();
        let mut out = [Used { id: 0, len: 0 }; 2];
        assert_eq!(e.victim.drv.poll_used(&mut out), Ok(1));
        assert_eq!(out[0], Used { id, len: 100 });
    }
}

#[test]
fn split_used_index_jump() {
    // Two in flight, the device claims three.
    let mut e = drv_env(Layout::Split);
    let data = e.data;
    e.victim.drv.add(&[wbuf(data, 64)]).unwrap();
    e.victim.drv.add(&[wbuf(data + 64, 64)]).unwrap();
    e.victim.drv.publish();
    wr16(e.arena.mem(), split_off::used_idx(&e.victim.addrs), 3);
    e.poll_err(RingError::UsedIndexJump { moved: 3, in_flight: 2 });
    // Nothing in flight at all.
    let mut e = drv_env(Layout::Split);
    wr16(e.arena.mem(), split_off::used_idx(&e.victim.addrs), 1);
    e.poll_err(RingError::UsedIndexJump { moved: 1, in_flight: 0 });
    // Backwards (a wrapping jump of 0xffff).
    let mut e = drv_env(Layout::Split);
    let data = e.data;
    e.victim.drv.add(&[wbuf(data, 64)]).unwrap();
    e.victim.drv.publish();
    wr16(e.arena.mem(), split_off::used_idx(&e.victim.addrs), 0xffff);
    e.poll_err(RingError::UsedIndexJump { moved: 0xffff, in_flight: 1 });
}

#[test]
fn packed_used_descriptor_with_nothing_in_flight() {
    let mut e = drv_env(Layout::Packed);
    e.fake_used(0, 0, 0);
    e.poll_err(RingError::UsedIndexJump { moved: 1, in_flight: 0 });
}

// ---------------------------------------------------------------------------------------
// Setup errors
// ---------------------------------------------------------------------------------------

fn area_names(layout: Layout) -> [&'static str; 3] {
    match layout {
        Layout::Split => ["descriptor table", "avail ring", "used ring"],
        Layout::Packed => ["descriptor ring", "driver event suppression", "device event suppression"],
    }
}

fn area_lens(layout: Layout, size: u16) -> [u64; 3] {
    let n = size as u64;
    match layout {
        Layout::Split => [16 * n, 6 + 2 * n, 6 + 8 * n],
        Layout::Packed => [16 * n, 4, 4],
    }
}

fn set_area(a: &mut RingAddrs, k: usize, v: u64) {
    match k {
        0 => a.desc = v,
        1 => a.driver = v,
        _ => a.device = v,
    }
}

fn both_fail(arena: &GuestArena, layout: Layout, size: u16, addrs: RingAddrs, want: SetupError) {
    let mem = arena.mem().clone();
    assert_eq!(DeviceQueue::new(layout, mem.clone(), size, addrs, ALL_FEATURES).unwrap_err(), want);
    assert_eq!(DriverQueue::new(layout, mem, size, addrs, ALL_FEATURES, None).unwrap_err(), want);
}

#[test]
fn setup_misaligned_rings() {
    let mut a = arena();
    for layout in LAYOUTS {
        let good = ring_areas(&mut a, layout, 8);
        let aligns: [u64; 3] = match layout {
            Layout::Split => [16, 2, 4],
            Layout::Packed => [16, 4, 4],
        };
        for k in 0..3 {
            for delta in (1..aligns[k]).filter(|x| x.is_power_of_two()) {
                let mut addrs = good;
                let addr = [good.desc, good.driver, good.device][k] + delta;
                set_area(&mut addrs, k, addr);
                let area = area_names(layout)[k];
                both_fail(&a, layout, 8, addrs, SetupError::Misaligned { area, addr, align: aligns[k] });
            }
        }
        // The good addresses work.
        DeviceQueue::new(layout, a.mem().clone(), 8, good, ALL_FEATURES).unwrap();
    }
}

#[test]
fn setup_rings_outside_memory() {
    let mut a = arena();
    for layout in LAYOUTS {
        let size = 8;
        let good = ring_areas(&mut a, layout, size);
        let lens = area_lens(layout, size);
        for (k, (len, area)) in lens.into_iter().zip(area_names(layout)).enumerate() {
            // Starting past the end, crossing the end, and far away.
            for addr in [ARENA_SIZE, ARENA_SIZE - 16, 1 << 40, u64::MAX - 15] {
                let mut addrs = good;
                set_area(&mut addrs, k, addr);
                if addr.checked_add(len).is_some_and(|end| end <= ARENA_SIZE) {
                    continue; // fits (only the 4-byte packed areas at ARENA_SIZE - 16)
                }
                both_fail(&a, layout, size, addrs, SetupError::OutsideMemory { area, addr, len });
            }
        }
        // The driver's indirect area must be inside memory too.
        let e =
            DriverQueue::new(layout, a.mem().clone(), size, good, ALL_FEATURES, Some((ARENA_SIZE - 64, 8)))
                .unwrap_err();
        assert_eq!(
            e,
            SetupError::OutsideMemory {
                area: "indirect area",
                addr: ARENA_SIZE - 64,
                len: size as u64 * 8 * 16
            }
        );
    }
}

#[test]
fn setup_bad_sizes() {
    let mut a = arena();
    for layout in LAYOUTS {
        let addrs = ring_areas(&mut a, layout, 1024);
        for size in [0u16, 3, 6, 100, 255, 1000, 32767, 32769, 0xffff] {
            both_fail(&a, layout, size, addrs, SetupError::BadSize(size as u32));
        }
        for size in [1u16, 2, 256, 1024] {
            DeviceQueue::new(layout, a.mem().clone(), size, addrs, ALL_FEATURES).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------
// A malformed chain in the middle of a burst
// ---------------------------------------------------------------------------------------

#[test]
fn bad_chain_in_the_middle_of_a_burst() {
    for layout in LAYOUTS {
        for kind in 0..8 {
            for small_burst in [false, true] {
                let mut e = env(layout, 16, ALL_FEATURES);
                let buf = e.buf;
                let mut ids = Vec::new();
                for i in 0..3u64 {
                    ids.push(e.post(&[d(buf + 64 * i, 32, NEXT), d(buf + 1024 + 64 * i, 32, WRITE)]));
                }
                let (want, text) = match kind {
                    0 => {
                        e.post(&[d(buf, 8, NEXT), d(ARENA_SIZE, 8, WRITE)]);
                        (RingError::BufferOutOfRange { addr: ARENA_SIZE, len: 8 }, "outside guest memory")
                    }
                    1 => {
                        e.post(&[d(buf, 8, WRITE | NEXT), d(buf, 8, 0)]);
                        (RingError::ReadableAfterWritable, "readable descriptor after a device-writable")
                    }
                    2 => {
                        let (t, tl) = e.table(&[d(buf, 8, 0)]);
                        e.post(&[d(t, tl, INDIRECT | NEXT), d(buf, 8, 0)]);
                        (RingError::IndirectWithNext, "both INDIRECT and NEXT")
                    }
                    3 => {
                        let (t, _) = e.table(&[d(buf, 8, 0)]);
                        e.post(&[d(t, 20, INDIRECT)]);
                        (RingError::IndirectLength(20), "not a non-zero multiple of 16")
                    }
                    4 => {
                        let (inner, il) = e.table(&[d(buf, 8, 0)]);
                        let (t, tl) = e.table(&[d(inner, il, INDIRECT)]);
                        e.post(&[d(t, tl, INDIRECT)]);
                        (RingError::NestedIndirect, "indirect descriptor inside an indirect table")
                    }
                    5 => {
                        e.post(&[d(buf, 8, NEXT), d(buf, u32::MAX, WRITE)]);
                        (RingError::LengthOverflow, "overflows 32 bits")
                    }
                    6 => {
                        e.post(&[d(1 << 40, 32, INDIRECT)]);
                        (RingError::IndirectOutOfRange { addr: 1 << 40, len: 32 }, "indirect table")
                    }
                    _ => {
                        let (t, tl) = e.table(&rchain(buf, 17));
                        e.post(&[d(t, tl, INDIRECT)]);
                        (RingError::ChainTooLong { limit: 16 }, "longer than its table")
                    }
                };
                for i in 0..2u64 {
                    e.post(&[d(buf + 2048 + 64 * i, 16, 0)]);
                }
                assert!(e.dev.has_avail());
                let mut burst = Burst::with_capacity(16);
                if small_burst {
                    // The good chains come out whole; the next pop meets the bad one.
                    assert_eq!(e.dev.pop(&mut burst, 3), Ok(3));
                    let got: Vec<u16> = burst.iter().map(|c| c.id()).collect();
                    assert_eq!(got, ids);
                    for c in burst.iter() {
                        assert_eq!((c.read_len(), c.write_len()), (32, 32));
                    }
                    assert_eq!(e.dev.broken(), None);
                }
                let err = e.dev.pop(&mut burst, 16).unwrap_err();
                assert_eq!(err, want, "{layout:?} kind {kind}");
                assert!(err.to_string().contains(text), "{err} should mention {text:?}");
                assert_eq!(e.dev.broken(), Some(want));
                e.check_good();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Notification suppression
// ---------------------------------------------------------------------------------------

/// A ring in its own arena plus helpers to move traffic in whole bursts.
struct Notif {
    arena: GuestArena,
    r: Ring,
    data: u64,
    burst: Burst,
    /// Buffers per chain posted by `post`.
    nbufs: usize,
}

fn notif(layout: Layout, size: u16, feats: u64) -> Notif {
    let mut arena = arena();
    let r = ring_in(&mut arena, layout, size, feats);
    let data = arena.alloc(1 << 16, 4096).unwrap();
    Notif { arena, r, data, burst: Burst::with_capacity(64), nbufs: 1 }
}

impl Notif {
    /// The driver posts and publishes `k` chains.
    fn post(&mut self, k: usize) {
        for _ in 0..k {
            let bufs: Vec<_> = (0..self.nbufs as u64).map(|i| wbuf(self.data + 64 * i, 64)).collect();
            self.r.drv.add(&bufs).unwrap();
        }
        self.r.drv.publish();
    }

    /// The device pops exactly `k` chains, completes and publishes them.
    fn serve(&mut self, k: usize) {
        assert_eq!(self.r.dev.pop(&mut self.burst, k), Ok(k));
        for t in self.burst.tokens() {
            self.r.dev.add_used(t, 8);
        }
        self.r.dev.publish_used();
    }

    /// The driver collects everything; returns how many.
    fn reap(&mut self) -> usize {
        let mut out = [Used { id: 0, len: 0 }; 64];
        self.r.drv.poll_used(&mut out).unwrap()
    }

    fn rd(&self, gpa: u64) -> u16 {
        rd16(self.arena.mem(), gpa)
    }

    fn wr(&self, gpa: u64, v: u16) {
        wr16(self.arena.mem(), gpa, v)
    }
}

/// Split ring without EVENT_IDX: VIRTQ_AVAIL_F_NO_INTERRUPT and VIRTQ_USED_F_NO_NOTIFY
/// (virtio 1.x 2.7.7 and 2.7.10).
#[test]
fn split_flags_without_event_idx() {
    let mut n = notif(Layout::Split, 8, features::VERSION_1 | features::INDIRECT_DESC);
    let a = n.r.addrs;

    // Kicks: the driver kicks after every publish unless the device set NO_NOTIFY.
    for _ in 0..3 {
        n.post(1);
        assert!(n.r.drv.needs_kick());
        n.serve(1);
        assert_eq!(n.reap(), 1);
    }
    n.r.dev.disable_kicks();
    assert_eq!(n.rd(split_off::used_flags(&a)), USED_F_NO_NOTIFY);
    for _ in 0..3 {
        n.post(1);
        assert!(!n.r.drv.needs_kick());
    }
    // Work raced in while kicks were off: enable_kicks reports it.
    assert!(n.r.dev.enable_kicks());
    assert_eq!(n.rd(split_off::used_flags(&a)), 0);
    n.serve(3);
    assert_eq!(n.reap(), 3);
    assert!(!n.r.dev.enable_kicks(), "nothing pending");
    n.post(2);
    assert!(n.r.drv.needs_kick());
    n.serve(2);
    assert_eq!(n.reap(), 2);

    // Interrupts: the device notifies after every burst unless NO_INTERRUPT is set, and
    // once per burst: a second decision without new completions says no.
    for _ in 0..3 {
        n.post(2);
        n.serve(2);
        assert!(n.r.dev.needs_notify());
        assert!(!n.r.dev.needs_notify(), "nothing new since the last decision");
        assert_eq!(n.reap(), 2);
    }
    n.r.drv.disable_interrupts();
    assert_eq!(n.rd(split_off::avail_flags(&a)), AVAIL_F_NO_INTERRUPT);
    for _ in 0..3 {
        n.post(1);
        n.serve(1);
        assert!(!n.r.dev.needs_notify());
    }
    // Completions raced in while interrupts were off: enable_interrupts reports them.
    assert!(n.r.drv.enable_interrupts());
    assert_eq!(n.rd(split_off::avail_flags(&a)), 0);
    assert_eq!(n.reap(), 3);
    assert!(!n.r.drv.enable_interrupts(), "nothing pending");
    n.post(1);
    n.serve(1);
    assert!(n.r.dev.needs_notify());
    assert_eq!(n.reap(), 1);

    // The device follows whatever the driver wrote, read fresh at each decision.
    n.wr(split_off::avail_flags(&a), AVAIL_F_NO_INTERRUPT);
    n.post(1);
    n.serve(1);
    assert!(!n.r.dev.needs_notify());
    n.wr(split_off::avail_flags(&a), 0);
    n.post(1);
    n.serve(1);
    assert!(n.r.dev.needs_notify());
    assert_eq!(n.reap(), 2);
    n.wr(split_off::used_flags(&a), USED_F_NO_NOTIFY);
    n.post(1);
    assert!(!n.r.drv.needs_kick());
    n.wr(split_off::used_flags(&a), 0);
    n.post(1);
    assert!(n.r.drv.needs_kick());
}

/// Split ring with EVENT_IDX: used_event and avail_event with `vring_need_event`
/// (virtio 1.x 2.7.7.2 / 2.7.10.2).
#[test]
fn split_event_idx() {
    let mut n = notif(Layout::Split, 8, features::VERSION_1 | features::EVENT_IDX);
    let a = n.r.addrs;
    let size = n.r.size;
    let avail_event = split_off::avail_event(&a, size);
    let used_event = split_off::used_event(&a, size);
    assert_eq!(n.rd(avail_event), 0);
    assert_eq!(n.rd(used_event), 0);

    // --- kicks: the driver kicks iff avail_event lies in [old, new) of its avail index.
    n.post(2); // [0, 2) holds 0
    assert!(n.r.drv.needs_kick());
    n.post(1); // [2, 3)
    assert!(!n.r.drv.needs_kick());
    n.serve(3);
    assert!(!n.r.dev.enable_kicks());
    assert_eq!(n.rd(avail_event), 3);
    n.post(1); // [3, 4)
    assert!(n.r.drv.needs_kick());
    n.post(1); // [4, 5)
    assert!(!n.r.drv.needs_kick());
    // Two chains arrived since the device last looked: enable_kicks says so, and writes
    // its own position (not the driver's) so that no kick is lost.
    assert!(n.r.dev.enable_kicks());
    assert_eq!(n.rd(avail_event), 3);
    n.serve(2);
    assert_eq!(n.reap(), 5);
    // With EVENT_IDX, disable_kicks writes nothing: the old avail_event stays.
    n.r.dev.disable_kicks();
    assert_eq!(n.rd(avail_event), 3);
    // avail_event set ahead by hand: only the burst that crosses it kicks.
    n.wr(avail_event, 9);
    n.post(1); // [5, 6)
    assert!(!n.r.drv.needs_kick());
    n.post(2); // [6, 8)
    assert!(!n.r.drv.needs_kick());
    n.post(2); // [8, 10) holds 9
    assert!(n.r.drv.needs_kick());
    n.serve(5);
    assert_eq!(n.reap(), 5);
    n.post(1); // [10, 11)
    assert!(!n.r.drv.needs_kick());
    n.serve(1);
    assert_eq!(n.reap(), 1);

    // --- interrupts: the device notifies iff used_event lies in [old, new) of its used
    // index, where old is the used index at the previous decision.
    n.wr(used_event, 0);
    // The device's used index is 11 now (decisions so far: none).
    n.post(2);
    n.serve(2); // first decision: always notify (nothing known about the driver yet)
    assert!(n.r.dev.needs_notify());
    n.post(1);
    n.serve(1); // [13, 14), used_event 0
    assert!(!n.r.dev.needs_notify());
    assert_eq!(n.reap(), 3);
    assert!(!n.r.drv.enable_interrupts());
    assert_eq!(n.rd(used_event), 14);
    n.post(1);
    n.serve(1); // [14, 15) holds 14
    assert!(n.r.dev.needs_notify());
    assert!(!n.r.dev.needs_notify(), "one decision per burst");
    n.post(1);
    n.serve(1); // [15, 16)
    assert!(!n.r.dev.needs_notify());
    // disable_interrupts moves used_event just behind the driver: never reached soon.
    n.r.drv.disable_interrupts();
    assert_eq!(n.rd(used_event), 13); // last_used (14) - 1
    for _ in 0..3 {
        n.post(2);
        n.serve(2);
        assert!(!n.r.dev.needs_notify());
        n.reap();
    }
    // A completion raced in before interrupts were enabled again.
    n.post(1);
    n.serve(1);
    assert!(n.r.drv.enable_interrupts());
    assert_eq!(n.reap(), 1);
    assert!(!n.r.drv.enable_interrupts());
    let u = n.rd(split_off::used_idx(&a));
    assert_eq!(n.rd(used_event), u);
    // The device's undecided burst [u - 1, u) does not reach used_event = u.
    assert!(!n.r.dev.needs_notify());
    n.post(1);
    n.serve(1);
    assert!(n.r.dev.needs_notify());
    assert_eq!(n.reap(), 1);
    // used_event set ahead by hand: only the burst that crosses it notifies.
    let u = n.rd(split_off::used_idx(&a));
    n.wr(used_event, u + 3);
    for (k, want) in [(1, false), (1, false), (2, true), (1, false)] {
        n.post(k);
        n.serve(k);
        assert_eq!(n.r.dev.needs_notify(), want, "burst of {k}");
        n.reap();
    }
}

/// EVENT_IDX arithmetic across the 16-bit wrap of the split indices (device side, with a
/// hand-played driver).
#[test]
fn split_event_idx_across_index_wrap() {
    let mut e = env(Layout::Split, 8, features::VERSION_1 | features::EVENT_IDX);
    let mem = e.arena.mem().clone();
    let a = e.addrs;
    let buf = e.buf;
    // Resume a ring whose indices are about to wrap.
    let base = 0xfffcu16;
    wr16(&mem, split_off::used_idx(&a), base);
    e.dev.set_base(base, None);
    e.avail_idx = base;
    for i in 0..8 {
        wr_desc(&mem, split_off::desc(&a, i), buf, 8, WRITE, 0);
    }
    let mut burst = Burst::with_capacity(8);
    let mut serve = |e: &mut Env, k: u16| {
        for i in 0..k {
            e.push_head(i);
        }
        assert_eq!(e.dev.pop(&mut burst, 8), Ok(k as usize));
        for t in burst.tokens() {
            e.dev.add_used(t, 8);
        }
        e.dev.publish_used();
    };
    serve(&mut e, 1); // used 0xfffc -> 0xfffd
    assert!(e.dev.needs_notify(), "first decision after a reset");
    wr16(&mem, split_off::used_event(&a, 8), 0x0001);
    serve(&mut e, 2); // [0xfffd, 0xffff)
    assert!(!e.dev.needs_notify());
    serve(&mut e, 2); // [0xffff, 0x0001)
    assert!(!e.dev.needs_notify());
    serve(&mut e, 1); // [0x0001, 0x0002)
    assert!(e.dev.needs_notify());
    assert_eq!(rd16(&mem, split_off::used_idx(&a)), 0x0002);
    wr16(&mem, split_off::used_event(&a, 8), 0xfffe);
    serve(&mut e, 3); // [0x0002, 0x0005)
    assert!(!e.dev.needs_notify());
    // avail_event across the wrap.
    assert!(!e.dev.enable_kicks());
    assert_eq!(rd16(&mem, split_off::avail_event(&a, 8)), 0x0005);
}

/// Packed ring without EVENT_IDX: RING_EVENT_FLAGS_ENABLE / DISABLE (virtio 1.x 2.8.10).
#[test]
fn packed_enable_disable() {
    let mut n = notif(Layout::Packed, 4, features::VERSION_1 | features::INDIRECT_DESC);
    let a = n.r.addrs;
    let drv_flags = packed_off::driver_evt(&a) + 2;
    let dev_flags = packed_off::device_evt(&a) + 2;
    assert_eq!(n.rd(drv_flags), EVENT_F_ENABLE);
    assert_eq!(n.rd(dev_flags), EVENT_F_ENABLE);

    // Kicks, several laps of a ring of 4.
    for _ in 0..6 {
        n.post(3);
        assert!(n.r.drv.needs_kick());
        assert!(!n.r.drv.needs_kick(), "nothing published since the last decision");
        n.serve(3);
        assert_eq!(n.reap(), 3);
    }
    n.r.dev.disable_kicks();
    assert_eq!(n.rd(dev_flags), EVENT_F_DISABLE);
    for _ in 0..3 {
        n.post(1);
        assert!(!n.r.drv.needs_kick());
    }
    assert!(n.r.dev.enable_kicks(), "work raced in");
    assert_eq!(n.rd(dev_flags), EVENT_F_ENABLE);
    n.serve(3);
    assert_eq!(n.reap(), 3);
    assert!(!n.r.dev.enable_kicks());
    n.post(1);
    assert!(n.r.drv.needs_kick());
    n.serve(1);
    assert_eq!(n.reap(), 1);

    // Interrupts.
    for _ in 0..6 {
        n.post(2);
        n.serve(2);
        assert!(n.r.dev.needs_notify());
        assert!(!n.r.dev.needs_notify(), "nothing published since the last decision");
        assert_eq!(n.reap(), 2);
    }
    n.r.drv.disable_interrupts();
    assert_eq!(n.rd(drv_flags), EVENT_F_DISABLE);
    for _ in 0..3 {
        n.post(1);
        n.serve(1);
        assert!(!n.r.dev.needs_notify());
    }
    assert!(n.r.drv.enable_interrupts(), "completions raced in");
    assert_eq!(n.rd(drv_flags), EVENT_F_ENABLE);
    assert_eq!(n.reap(), 3);
    assert!(!n.r.drv.enable_interrupts());
    n.post(1);
    n.serve(1);
    assert!(n.r.dev.needs_notify());
    assert_eq!(n.reap(), 1);
    // Flags written by hand are read fresh at every decision.
    n.wr(drv_flags, EVENT_F_DISABLE);
    n.post(1);
    n.serve(1);
    assert!(!n.r.dev.needs_notify());
    n.wr(drv_flags, EVENT_F_ENABLE);
    n.post(1);
    n.serve(1);
    assert!(n.r.dev.needs_notify());
    assert_eq!(n.reap(), 2);
}

/// Packed ring with EVENT_IDX and RING_EVENT_FLAGS_DESC: off_wrap names a (slot, wrap
/// counter) position; the other side notifies iff it moved past that position.
#[test]
fn packed_desc_event_idx() {
    let mut n = notif(Layout::Packed, 4, features::VERSION_1 | features::EVENT_IDX);
    let a = n.r.addrs;
    let drv_evt = packed_off::driver_evt(&a);
    let dev_evt = packed_off::device_evt(&a);
    // ENABLE still means "always" with EVENT_IDX negotiated.
    n.post(1);
    assert!(n.r.drv.needs_kick());
    n.serve(1);
    assert!(n.r.dev.needs_notify());
    assert_eq!(n.reap(), 1);
    // Positions (sequence numbers) are now 1 on both sides; wrap counter 1.

    // --- kicks
    assert!(!n.r.dev.enable_kicks());
    assert_eq!(n.rd(dev_evt), 0x8001, "slot 1, wrap counter 1");
    assert_eq!(n.rd(dev_evt + 2), EVENT_F_DESC);
    n.post(1); // [1, 2) holds 1
    assert!(n.r.drv.needs_kick());
    n.post(1); // [2, 3)
    assert!(!n.r.drv.needs_kick());
    assert!(n.r.dev.enable_kicks(), "two chains raced in");
    assert_eq!(n.rd(dev_evt), 0x8001);
    n.serve(2);
    assert_eq!(n.reap(), 2);
    assert!(!n.r.dev.enable_kicks());
    assert_eq!(n.rd(dev_evt), 0x8003, "slot 3, wrap counter 1");
    // Two-descriptor chains: positions advance by 2 per chain and wrap the ring.
    n.nbufs = 2;
    n.post(1); // [3, 5) holds 3
    assert!(n.r.drv.needs_kick());
    n.serve(1);
    assert_eq!(n.reap(), 1);
    assert!(!n.r.dev.enable_kicks());
    assert_eq!(n.rd(dev_evt), 0x0001, "position 5 is slot 1 with wrap counter 0");
    n.post(1); // [5, 7)
    assert!(n.r.drv.needs_kick());
    n.serve(1);
    assert_eq!(n.reap(), 1);
    // Hand-written event positions. Position 7 now; ask for a kick at position 10
    // (slot 2, wrap counter 1 again).
    n.wr(dev_evt, 0x8002);
    n.post(1); // [7, 9)
    assert!(!n.r.drv.needs_kick());
    n.serve(1);
    assert_eq!(n.reap(), 1);
    n.post(1); // [9, 11) holds 10
    assert!(n.r.drv.needs_kick());
    n.serve(1);
    assert_eq!(n.reap(), 1);
    // An event with the wrong wrap counter lies a whole ring behind or ahead: position
    // 11 now; 0x0003 names position 7 (slot 3, wrap 0), already passed.
    n.wr(dev_evt, 0x0003);
    n.post(1); // [11, 13)
    assert!(!n.r.drv.needs_kick());
    n.serve(1);
    assert_eq!(n.reap(), 1);
    // DISABLE wins over the event.
    n.r.dev.disable_kicks();
    assert_eq!(n.rd(dev_evt + 2), EVENT_F_DISABLE);
    n.wr(dev_evt, 0x0002); // position 14: slot 2, wrap counter 0
    n.post(2); // [13, 17) holds 14, but kicks are disabled
    assert!(!n.r.drv.needs_kick());
    n.serve(2);
    assert_eq!(n.reap(), 2);
    // Position 17 now.

    // --- interrupts (one-descriptor chains again)
    n.nbufs = 1;
    assert!(!n.r.drv.enable_interrupts());
    assert_eq!(n.rd(drv_evt), 0x8001, "position 17 is slot 1, wrap counter 1");
    assert_eq!(n.rd(drv_evt + 2), EVENT_F_DESC);
    n.post(1);
    n.serve(1); // [17, 18) holds 17
    assert!(n.r.dev.needs_notify());
    n.post(1);
    n.serve(1); // [18, 19)
    assert!(!n.r.dev.needs_notify());
    assert!(n.r.drv.enable_interrupts(), "completions waiting");
    assert_eq!(n.reap(), 2);
    assert!(!n.r.drv.enable_interrupts());
    assert_eq!(n.rd(drv_evt), 0x8003, "position 19: slot 3, wrap counter 1");
    n.nbufs = 3;
    n.post(1);
    n.serve(1); // [19, 22) holds 19
    assert!(n.r.dev.needs_notify());
    assert!(!n.r.dev.needs_notify(), "one decision per burst");
    assert_eq!(n.reap(), 1);
    // Hand-written: position 22 now; event at position 25 (slot 1, wrap counter 1).
    n.nbufs = 1;
    n.wr(drv_evt, 0x8001);
    for want in [false, false, false, true, false] {
        n.post(1);
        n.serve(1);
        assert_eq!(n.r.dev.needs_notify(), want);
        assert_eq!(n.reap(), 1);
    }
    // DISABLE wins over the event.
    n.r.drv.disable_interrupts();
    assert_eq!(n.rd(drv_evt + 2), EVENT_F_DISABLE);
    for _ in 0..4 {
        n.post(1);
        n.serve(1);
        assert!(!n.r.dev.needs_notify());
        assert_eq!(n.reap(), 1);
    }
}

/// The driver side never posts what its device would refuse: an indirect chain longer
/// than the queue is a post error, not a broken ring.
#[test]
fn driver_refuses_indirect_chain_longer_than_queue() {
    for layout in LAYOUTS {
        let mut a = arena();
        let mut r = ring_in(&mut a, layout, 4, ALL_FEATURES);
        let data = a.alloc(4096, 4096).unwrap();
        let bufs: Vec<_> = (0..5u64).map(|i| wbuf(data + 64 * i, 64)).collect();
        assert_eq!(r.drv.add_indirect(&bufs), Err(virtq::PostError::IndirectTooLong(5)));
        assert_eq!(r.drv.in_flight(), 0);
        assert_eq!(r.drv.num_free(), 4);
        // Exactly the queue size is fine, and the device agrees.
        let id = r.drv.add_indirect(&bufs[..4]).unwrap();
        r.drv.publish();
        let mut burst = Burst::with_capacity(4);
        assert_eq!(r.dev.pop(&mut burst, 4), Ok(1));
        assert_eq!(burst.chain(0).id(), id);
        assert_eq!(burst.chain(0).writable().len(), 4);
        r.dev.add_used(burst.chain(0).token(), 256);
        r.dev.publish_used();
        let mut out = [Used { id: 0, len: 0 }; 1];
        assert_eq!(r.drv.poll_used(&mut out), Ok(1));
        assert_eq!(out[0], Used { id, len: 256 });
    }
}
