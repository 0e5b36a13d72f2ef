//! One type for either layout, so that the vhost-user device and the frontend pick the
//! layout at negotiation time. Dispatch is one predictable branch per call.

use std::sync::Arc;

use crate::packed::{self, PackedDevice, PackedDriver};
use crate::split::{SplitDevice, SplitDriver};
use crate::{Buf, Burst, GuestMemory, PostError, RingAddrs, RingError, SetupError, Token, Used};

/// Ring layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Split virtqueue (virtio 1.x 2.7).
    Split,
    /// Packed virtqueue (virtio 1.x 2.8).
    Packed,
}

impl Layout {
    /// The layout that `features` select (VIRTIO_F_RING_PACKED).
    pub fn from_features(features: u64) -> Self {
        if features & crate::features::RING_PACKED != 0 {
            Layout::Packed
        } else {
            Layout::Split
        }
    }

    /// Name as used in configuration and reports.
    pub fn name(&self) -> &'static str {
        match self {
            Layout::Split => "split",
            Layout::Packed => "packed",
        }
    }
}

impl std::str::FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "split" => Ok(Layout::Split),
            "packed" => Ok(Layout::Packed),
            _ => Err(format!("unknown ring layout {s:?} (expected split or packed)")),
        }
    }
}

/// The device side of a virtqueue of either layout.
#[derive(Debug)]
pub enum DeviceQueue {
    /// Split layout.
    Split(SplitDevice),
    /// Packed layout.
    Packed(PackedDevice),
}

macro_rules! dev {
    ($s:expr, $q:ident => $e:expr) => {
        match $s {
            DeviceQueue::Split($q) => $e,
            DeviceQueue::Packed($q) => $e,
        }
    };
}

impl DeviceQueue {
    /// Sets up a device queue.
    pub fn new(
        layout: Layout,
        mem: Arc<GuestMemory>,
        size: u16,
        addrs: RingAddrs,
        features: u64,
    ) -> Result<Self, SetupError> {
        Ok(match layout {
            Layout::Split => DeviceQueue::Split(SplitDevice::new(mem, size, addrs, features)?),
            Layout::Packed => DeviceQueue::Packed(PackedDevice::new(mem, size, addrs, features)?),
        })
    }

    /// The layout.
    pub fn layout(&self) -> Layout {
        match self {
            DeviceQueue::Split(_) => Layout::Split,
            DeviceQueue::Packed(_) => Layout::Packed,
        }
    }

    /// Queue size.
    pub fn size(&self) -> u16 {
        dev!(self, q => q.size())
    }

    /// Sets the position from a vhost-user ring base. Split: the base is the next avail
    /// index and the used index is read from the ring. Packed: bits 0-14 index and bit
    /// 15 wrap counter of the avail position; the used position is given the same way
    /// in `used_base` (vhost-user passes it in the upper 16 bits) or, when absent, taken
    /// equal to the avail position, as a device resuming a quiesced ring does.
    pub fn set_base(&mut self, avail_base: u16, used_base: Option<u16>) {
        match self {
            DeviceQueue::Split(q) => q.set_state(avail_base),
            DeviceQueue::Packed(q) => {
                let size = q.size();
                let a = packed::seq_from_base(avail_base, size);
                let u = used_base.map(|b| packed::seq_from_base(b, size)).unwrap_or(a);
                q.set_state(a, u)
            }
        }
    }

    /// The position as a vhost-user ring base (GET_VRING_BASE): split: next avail index;
    /// packed: avail index | wrap << 15 in the low 16 bits, the used one in the high.
    pub fn base(&self) -> u32 {
        match self {
            DeviceQueue::Split(q) => q.last_avail() as u32,
            DeviceQueue::Packed(q) => {
                let s = q.size();
                packed::base_from_seq(q.next_avail(), s) as u32
                    | (packed::base_from_seq(q.next_used(), s) as u32) << 16
            }
        }
    }

    /// See [`SplitDevice::pop`].
    #[inline]
    pub fn pop(&mut self, burst: &mut Burst, max: usize) -> Result<usize, RingError> {
        dev!(self, q => q.pop(burst, max))
    }

    /// Gives back the chains `keep..` of the burst most recently popped from this queue,
    /// so the next pop returns them again (backpressure: a frame that cannot be
    /// delivered now stays in the guest's ring). Only valid before the next pop.
    pub fn rewind(&mut self, burst: &Burst, keep: usize) {
        if keep >= burst.len() {
            return;
        }
        match self {
            DeviceQueue::Split(q) => q.rewind((burst.len() - keep) as u16),
            DeviceQueue::Packed(q) => {
                let slots: u16 =
                    burst.chains[keep..].iter().map(|c| c.token.ndesc).fold(0u16, |a, b| a.wrapping_add(b));
                q.rewind(slots)
            }
        }
    }

    /// Completes one chain (not yet visible).
    #[inline(always)]
    pub fn add_used(&mut self, token: Token, len: u32) {
        dev!(self, q => q.add_used(token, len))
    }

    /// Publishes the completions added since the last call.
    #[inline]
    pub fn publish_used(&mut self) {
        dev!(self, q => q.publish_used())
    }

    /// One notification decision for what was published since the last one.
    #[inline]
    pub fn needs_notify(&mut self) -> bool {
        dev!(self, q => q.needs_notify())
    }

    /// Re-enables kicks; true if work arrived meanwhile.
    pub fn enable_kicks(&mut self) -> bool {
        dev!(self, q => q.enable_kicks())
    }

    /// Suppresses kicks while polling.
    pub fn disable_kicks(&mut self) {
        dev!(self, q => q.disable_kicks())
    }

    /// See [`SplitDevice::prefetch_next`].
    #[inline]
    pub fn prefetch_next(&self) {
        dev!(self, q => q.prefetch_next())
    }

    /// True when the driver made something available that we have not popped.
    #[inline]
    pub fn has_avail(&self) -> bool {
        match self {
            DeviceQueue::Split(q) => q.avail_pending() != 0,
            DeviceQueue::Packed(q) => q.has_avail(),
        }
    }

    /// The error that broke this queue, if any.
    pub fn broken(&self) -> Option<RingError> {
        dev!(self, q => q.broken())
    }
}

/// The driver side of a virtqueue of either layout.
#[derive(Debug)]
pub enum DriverQueue {
    /// Split layout.
    Split(SplitDriver),
    /// Packed layout.
    Packed(PackedDriver),
}

macro_rules! drv {
    ($s:expr, $q:ident => $e:expr) => {
        match $s {
            DriverQueue::Split($q) => $e,
            DriverQueue::Packed($q) => $e,
        }
    };
}

impl DriverQueue {
    /// Lays out a driver queue in driver-owned memory.
    pub fn new(
        layout: Layout,
        mem: Arc<GuestMemory>,
        size: u16,
        addrs: RingAddrs,
        features: u64,
        indirect: Option<(u64, u16)>,
    ) -> Result<Self, SetupError> {
        Ok(match layout {
            Layout::Split => DriverQueue::Split(SplitDriver::new(mem, size, addrs, features, indirect)?),
            Layout::Packed => DriverQueue::Packed(PackedDriver::new(mem, size, addrs, features, indirect)?),
        })
    }

    /// Bytes the three areas of a ring of `size` take, each rounded up to 64 bytes, in
    /// order desc, driver, device: a simple layout helper for drivers.
    pub fn area_sizes(layout: Layout, size: u16) -> [u64; 3] {
        let r = |x: u64| (x + 63) & !63;
        match layout {
            Layout::Split => {
                let (d, a, u) = crate::split::area_sizes(size);
                [r(d), r(a), r(u)]
            }
            Layout::Packed => [r(16 * size as u64), 64, 64],
        }
    }

    /// Posts a chain; returns its id.
    #[inline]
    pub fn add(&mut self, bufs: &[Buf]) -> Result<u16, PostError> {
        drv!(self, q => q.add(bufs))
    }

    /// Posts a chain through an indirect table.
    pub fn add_indirect(&mut self, bufs: &[Buf]) -> Result<u16, PostError> {
        drv!(self, q => q.add_indirect(bufs))
    }

    /// Publishes posted chains.
    #[inline]
    pub fn publish(&mut self) {
        drv!(self, q => q.publish())
    }

    /// One kick decision for what was published since the last one.
    #[inline]
    pub fn needs_kick(&mut self) -> bool {
        drv!(self, q => q.needs_kick())
    }

    /// Collects completed chains.
    #[inline]
    pub fn poll_used(&mut self, out: &mut [Used]) -> Result<usize, RingError> {
        drv!(self, q => q.poll_used(out))
    }

    /// Re-enables interrupts; true if completions arrived meanwhile.
    pub fn enable_interrupts(&mut self) -> bool {
        drv!(self, q => q.enable_interrupts())
    }

    /// Suppresses interrupts while polling.
    pub fn disable_interrupts(&mut self) {
        drv!(self, q => q.disable_interrupts())
    }

    /// Free descriptors (split) or ring slots (packed).
    pub fn num_free(&self) -> u16 {
        drv!(self, q => q.num_free())
    }

    /// Chains in flight.
    pub fn in_flight(&self) -> u16 {
        drv!(self, q => q.in_flight())
    }
}
