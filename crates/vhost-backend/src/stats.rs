//! Per-port counters. Written by the worker once per burst (relaxed atomic adds), read by
//! the control plane at any time.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Counters of one port.
#[derive(Debug, Default)]
pub struct PortStats {
    /// Frames the guest transmitted that we took from its TX rings.
    pub from_guest_packets: AtomicU64,
    /// Bytes of those frames (without the virtio-net header).
    pub from_guest_bytes: AtomicU64,
    /// Frames we delivered into the guest's RX rings.
    pub to_guest_packets: AtomicU64,
    /// Bytes of those frames.
    pub to_guest_bytes: AtomicU64,
    /// Frames dropped because the guest posted no receive buffer big enough.
    pub drop_rx_buffer_small: AtomicU64,
    /// Frames dropped because their chain was shorter than a virtio-net header or
    /// longer than the largest frame we accept.
    pub drop_bad_frame: AtomicU64,
    /// Bursts processed (non-empty pops of a TX ring).
    pub bursts: AtomicU64,
    /// Kicks received while the worker slept.
    pub kicks: AtomicU64,
    /// Interrupts (call eventfd writes) sent.
    pub interrupts: AtomicU64,
    /// Rings stopped because the guest broke the virtqueue rules.
    pub ring_errors: AtomicU64,
}

/// A snapshot of [`PortStats`].
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct PortStatsSnapshot {
    pub from_guest_packets: u64,
    pub from_guest_bytes: u64,
    pub to_guest_packets: u64,
    pub to_guest_bytes: u64,
    pub drop_rx_buffer_small: u64,
    pub drop_bad_frame: u64,
    pub bursts: u64,
    pub kicks: u64,
    pub interrupts: u64,
    pub ring_errors: u64,
}

impl PortStats {
    /// Adds `n` to a counter.
    #[inline(always)]
    pub fn add(c: &AtomicU64, n: u64) {
        if n != 0 {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> PortStatsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PortStatsSnapshot {
            from_guest_packets: g(&self.from_guest_packets),
            from_guest_bytes: g(&self.from_guest_bytes),
            to_guest_packets: g(&self.to_guest_packets),
            to_guest_bytes: g(&self.to_guest_bytes),
            drop_rx_buffer_small: g(&self.drop_rx_buffer_small),
            drop_bad_frame: g(&self.drop_bad_frame),
            bursts: g(&self.bursts),
            kicks: g(&self.kicks),
            interrupts: g(&self.interrupts),
            ring_errors: g(&self.ring_errors),
        }
    }
}
