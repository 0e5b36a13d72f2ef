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
