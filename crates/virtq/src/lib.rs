//! virtq: virtio 1.x virtqueues, split and packed, device and driver sides.
//!
//! Architecture invariant: this crate does no I/O: no threads, no sockets, no eventfds.
//! It is the only code in virtwire that touches guest memory, and all of its `unsafe`
//! lives in [`mem`]. Everything a guest controls (indices, descriptors, flags, lengths)
//! is read once into a local and validated before use; a violation becomes a
//! [`RingError`] that marks the one queue broken, never a panic.
//!
//! The device side works in bursts: [`DeviceQueue::pop`] fills a [`Burst`] with up to N
//! validated descriptor chains, the caller completes them (in any order) with
//! [`DeviceQueue::add_used`], and [`DeviceQueue::publish_used`] makes the whole burst
//! visible with one index (split) or flags (packed) store. One notification decision
//! ([`DeviceQueue::needs_notify`]) follows per burst.

pub mod error;
pub mod mem;
pub mod packed;
pub mod split;

mod arena;
mod burst;
mod queue;
mod setup;

pub use arena::GuestArena;
pub use burst::{Burst, Chain, Seg};
pub use error::{MemError, PostError, RingError, SetupError};
pub use mem::{DirtyLog, GuestMemory, RegionSpec};
pub use queue::{DeviceQueue, DriverQueue, Layout};

/// Feature bits this crate cares about (virtio 1.x section 6, "Reserved Feature Bits").
pub mod features {
    /// VIRTIO_F_INDIRECT_DESC.
    pub const INDIRECT_DESC: u64 = 1 << 28;
    /// VIRTIO_F_EVENT_IDX.
    pub const EVENT_IDX: u64 = 1 << 29;
    /// VIRTIO_F_VERSION_1.
    pub const VERSION_1: u64 = 1 << 32;
    /// VIRTIO_F_RING_PACKED.
    pub const RING_PACKED: u64 = 1 << 34;
    /// VIRTIO_F_IN_ORDER.
    pub const IN_ORDER: u64 = 1 << 35;
}

/// Largest queue size virtio allows (and vhost-user accepts).
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// Guest-physical addresses of a queue's three areas (virtio 1.x 2.6 / 2.8): the
/// descriptor table (or ring), the driver area (split: avail ring; packed: driver event
/// suppression) and the device area (split: used ring; packed: device event suppression).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingAddrs {
    /// Descriptor area.
    pub desc: u64,
    /// Driver area.
    pub driver: u64,
    /// Device area.
    pub device: u64,
}

/// What the device hands back to complete a chain: the buffer id and, for the packed
/// layout, how many ring slots the chain took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub(crate) id: u16,
    pub(crate) ndesc: u16,
}

impl Token {
    /// The buffer id (split: head descriptor index; packed: buffer id).
    pub fn id(&self) -> u16 {
        self.id
    }
    /// Ring slots the chain took (1 for split or indirect chains' bookkeeping).
    pub fn ndesc(&self) -> u16 {
        self.ndesc
    }
}

/// A completed buffer as the driver sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Used {
    /// The id returned by [`DriverQueue::add`].
    pub id: u16,
    /// Bytes the device wrote into the buffer's writable part.
    pub len: u32,
}

/// A buffer the driver posts: guest-physical address, length and direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buf {
    /// Guest-physical address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// True when the device may write it (VIRTQ_DESC_F_WRITE).
    pub writable: bool,
}

/// Memory a device keeps per queue: the queue itself (either layout; no heap, whatever
/// the ring size) and a [`Burst`] of `burst` chains with its preallocated arrays (four
/// segments per chain inline; longer chains grow them once, out of line).
pub fn per_queue_state_bytes(burst: usize) -> usize {
    std::mem::size_of::<DeviceQueue>() + Burst::footprint(burst)
}

/// `vring_need_event` (virtio 1.x 2.7.7.2 / 2.7.10): true if `event` lies in the
/// half-open window `[old, new)` in wrapping 16-bit arithmetic.
#[inline(always)]
pub fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// Checks a queue size: a power of two between 1 and 32768. Packed rings may have
/// other sizes in the spec, but every frontend we meet uses powers of two and free
/// running 16-bit sequence numbers depend on it.
pub fn check_size(size: u32) -> Result<u16, SetupError> {
    if size == 0 || size > MAX_QUEUE_SIZE as u32 || !size.is_power_of_two() {
        return Err(SetupError::BadSize(size));
    }
    Ok(size as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn need_event_window() {
        assert!(need_event(5, 6, 5));
        assert!(!need_event(6, 6, 5));
        assert!(need_event(0xffff, 2, 0xfffe));
        assert!(!need_event(3, 2, 0xfffe));
        assert!(!need_event(1, 1, 1));
    }

    #[test]
    fn sizes() {
        assert!(check_size(256).is_ok());
        assert!(check_size(32768).is_ok());
        assert_eq!(check_size(0), Err(SetupError::BadSize(0)));
        assert_eq!(check_size(100), Err(SetupError::BadSize(100)));
        assert_eq!(check_size(65536), Err(SetupError::BadSize(65536)));
    }
}
