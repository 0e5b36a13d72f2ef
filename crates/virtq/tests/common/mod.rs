//! Shared setup for the ring tests: a guest arena with one ring of either layout, its
//! driver and its device.

#![allow(dead_code)]

use virtq::{features, Buf, DeviceQueue, DriverQueue, GuestArena, Layout, RingAddrs};

pub struct Pair {
    pub arena: GuestArena,
    pub drv: DriverQueue,
    pub dev: DeviceQueue,
    pub addrs: RingAddrs,
    pub size: u16,
}

pub const ALL_FEATURES: u64 = features::VERSION_1 | features::EVENT_IDX | features::INDIRECT_DESC;

pub fn pair(layout: Layout, size: u16, feats: u64) -> Pair {
    let mut arena = GuestArena::new(16 << 20, 0x7f00_0000_0000).unwrap();
    let [d, a, u] = DriverQueue::area_sizes(layout, size);
    let addrs = RingAddrs {
        desc: arena.alloc(d, 64).unwrap(),
        driver: arena.alloc(a, 64).unwrap(),
        device: arena.alloc(u, 64).unwrap(),
    };
    let ind = arena.alloc(size as u64 * 8 * 16, 64).unwrap();
    let drv = DriverQueue::new(layout, arena.mem().clone(), size, addrs, feats, Some((ind, 8))).unwrap();
    let dev = DeviceQueue::new(layout, arena.mem().clone(), size, addrs, feats).unwrap();
    Pair { arena, drv, dev, addrs, size }
}

pub fn rbuf(addr: u64, len: u32) -> Buf {
    Buf { addr, len, writable: false }
}

pub fn wbuf(addr: u64, len: u32) -> Buf {
    Buf { addr, len, writable: true }
}

pub const LAYOUTS: [Layout; 2] = [Layout::Split, Layout::Packed];

// ---------------------------------------------------------------------------------------
// Several rings in one guest memory, and raw access to ring memory for crafting
// malformed rings by hand.
// ---------------------------------------------------------------------------------------

use virtq::{Burst, GuestMemory, Used};

/// Size of the arenas the tests create.
pub const ARENA_SIZE: u64 = 16 << 20;

/// A fresh 16 MiB guest memory.
pub fn arena() -> GuestArena {
    GuestArena::new(ARENA_SIZE, 0x7f00_0000_0000).unwrap()
}

/// Allocates the three areas of a ring of `size` entries in `arena`.
pub fn ring_areas(arena: &mut GuestArena, layout: Layout, size: u16) -> RingAddrs {
    let [d, a, u] = DriverQueue::area_sizes(layout, size);
    RingAddrs {
        desc: arena.alloc(d, 64).unwrap(),
        driver: arena.alloc(a, 64).unwrap(),
        device: arena.alloc(u, 64).unwrap(),
    }
}

/// A driver and a device on one ring that lives in a shared arena.
pub struct Ring {
    pub layout: Layout,
    pub size: u16,
    pub addrs: RingAddrs,
    pub drv: DriverQueue,
    pub dev: DeviceQueue,
    /// Indirect area handed to the driver (`size * IND_PER * 16` bytes).
    pub ind: u64,
}

/// Indirect table entries per head in the rings built by [`ring_in`].
pub const IND_PER: u16 = 8;

/// Lays out a ring of `size` entries in `arena` with a driver and a device on it.
pub fn ring_in(arena: &mut GuestArena, layout: Layout, size: u16, feats: u64) -> Ring {
    let addrs = ring_areas(arena, layout, size);
    let ind = arena.alloc(size as u64 * IND_PER as u64 * 16, 64).unwrap();
    let drv =
        DriverQueue::new(layout, arena.mem().clone(), size, addrs, feats, Some((ind, IND_PER))).unwrap();
    let dev = DeviceQueue::new(layout, arena.mem().clone(), size, addrs, feats).unwrap();
    Ring { layout, size, addrs, drv, dev, ind }
}

pub fn wr16(mem: &GuestMemory, gpa: u64, v: u16) {
    mem.write(gpa, &v.to_le_bytes()).unwrap();
}

pub fn wr32(mem: &GuestMemory, gpa: u64, v: u32) {
    mem.write(gpa, &v.to_le_bytes()).unwrap();
}

pub fn rd16(mem: &GuestMemory, gpa: u64) -> u16 {
    let mut b = [0u8; 2];
    mem.read(gpa, &mut b).unwrap();
    u16::from_le_bytes(b)
}

pub fn rd32(mem: &GuestMemory, gpa: u64) -> u32 {
    let mut b = [0u8; 4];
    mem.read(gpa, &mut b).unwrap();
    u32::from_le_bytes(b)
}

/// Writes a raw 16-byte descriptor `{addr: u64, len: u32, c: u16, d: u16}` at `gpa`:
/// split `(flags, next)`, packed `(id, flags)`.
pub fn wr_desc(mem: &GuestMemory, gpa: u64, addr: u64, len: u32, c: u16, d: u16) {
    let mut b = [0u8; 16];
    b[0..8].copy_from_slice(&addr.to_le_bytes());
    b[8..12].copy_from_slice(&len.to_le_bytes());
    b[12..14].copy_from_slice(&c.to_le_bytes());
    b[14..16].copy_from_slice(&d.to_le_bytes());
    mem.write(gpa, &b).unwrap();
}

/// Split ring field addresses.
pub mod split_off {
    use virtq::RingAddrs;
    pub fn desc(a: &RingAddrs, i: u16) -> u64 {
        a.desc + 16 * i as u64
    }
    pub fn avail_flags(a: &RingAddrs) -> u64 {
        a.driver
    }
    pub fn avail_idx(a: &RingAddrs) -> u64 {
        a.driver + 2
    }
    pub fn avail_ring(a: &RingAddrs, slot: u16) -> u64 {
        a.driver + 4 + 2 * slot as u64
    }
    pub fn used_event(a: &RingAddrs, size: u16) -> u64 {
        a.driver + 4 + 2 * size as u64
    }
    pub fn used_flags(a: &RingAddrs) -> u64 {
        a.device
    }
    pub fn used_idx(a: &RingAddrs) -> u64 {
        a.device + 2
    }
    pub fn used_elem(a: &RingAddrs, slot: u16) -> u64 {
        a.device + 4 + 8 * slot as u64
    }
    pub fn avail_event(a: &RingAddrs, size: u16) -> u64 {
        a.device + 4 + 8 * size as u64
    }
}

/// Packed ring field addresses.
pub mod packed_off {
    use virtq::RingAddrs;
    pub fn desc(a: &RingAddrs, slot: u16) -> u64 {
        a.desc + 16 * slot as u64
    }
    /// Driver event suppression (read by the device): off_wrap at +0, flags at +2.
    pub fn driver_evt(a: &RingAddrs) -> u64 {
        a.driver
    }
    /// Device event suppression (read by the driver).
    pub fn device_evt(a: &RingAddrs) -> u64 {
        a.device
    }
}

/// Small deterministic PRNG (xorshift64*) for payload bytes.
#[derive(Debug, Clone)]
pub struct Prng(pub u64);

impl Prng {
    pub fn new(seed: u64) -> Self {
        Prng((seed ^ 0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Runs `rounds` rounds of traffic through `r` (three chains per round, the middle one
/// through an indirect table when `indirect`), checking the bytes the device reads, the
/// bytes it writes and every completion. Buffers live at `data` (3 x 4096 bytes).
pub fn exercise(arena: &GuestArena, r: &mut Ring, data: u64, rounds: u32, indirect: bool) {
    let mem = arena.mem();
    let mut burst = Burst::with_capacity(16);
    let mut used = [Used { id: 0, len: 0 }; 16];
    for round in 0..rounds {
        let mut posted = Vec::new();
        for i in 0..3u64 {
            let a = data + i * 4096;
            let payload: Vec<u8> = (0..200u32).map(|b| (b * 7 + round * 13 + i as u32) as u8).collect();
            mem.write(a, &payload).unwrap();
            mem.write(a + 2048, &[0u8; 300]).unwrap();
            let bufs = [rbuf(a, 120), rbuf(a + 120, 80), wbuf(a + 2048, 300)];
            let id = if indirect && i == 1 { r.drv.add_indirect(&bufs) } else { r.drv.add(&bufs) }.unwrap();
            posted.push((id, a, payload));
        }
        r.drv.publish();
        assert_eq!(r.dev.pop(&mut burst, 16), Ok(3), "{:?} ring stopped working", r.layout);
        for (c, (id, _, payload)) in burst.iter().zip(&posted) {
            assert_eq!(c.id(), *id);
            assert_eq!((c.read_len(), c.write_len()), (200, 300));
            let mut got = vec![0u8; 200];
            assert_eq!(c.read_at(0, &mut got), 200);
            assert_eq!(&got, payload);
            assert_eq!(c.write_at(0, &payload[..100]), 100);
        }
        for t in burst.tokens() {
            r.dev.add_used(t, 100);
        }
        r.dev.publish_used();
        assert_eq!(r.drv.poll_used(&mut used), Ok(3));
        for (u, (id, a, payload)) in used.iter().zip(&posted) {
            assert_eq!(*u, Used { id: *id, len: 100 });
            let mut w = vec![0u8; 100];
            mem.read(a + 2048, &mut w).unwrap();
            assert_eq!(&w[..], &payload[..100]);
        }
    }
    assert_eq!(r.drv.in_flight(), 0);
    assert_eq!(r.dev.broken(), None);
}
