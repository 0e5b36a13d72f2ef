//! Counters. Written by the worker once per burst (relaxed loads and stores: it is the
//! only writer, on lines only it writes), read by the control plane at any time.
//!
//! Directions are the switch's view: `rx` is what the switch received from a port (a
//! VM's transmissions, taken from its TX rings), `tx` what it sent to the port (put into
//! the VM's RX rings, or written to a tap).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Adds `n` to a counter. Every counter has one writer, the datapath worker, so a
/// relaxed load and store do: a locked add would also wait for every store before it to
/// reach the cache, frame bytes written to another core's lines included.
#[inline(always)]
fn add(c: &AtomicU64, n: u64) {
    if n != 0 {
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }
}

#[inline(always)]
fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Counters of one queue pair.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct QueueStats {
    /// Frames taken from this pair's transmit ring.
    pub rx_packets: AtomicU64,
    /// Their bytes (without the virtio-net header).
    pub rx_bytes: AtomicU64,
    /// Non-empty pops of this pair's transmit ring.
    pub rx_bursts: AtomicU64,
    /// Frames put into this pair's receive ring.
    pub tx_packets: AtomicU64,
    /// Their bytes.
    pub tx_bytes: AtomicU64,
    /// Sizes of the bursts taken from the transmit ring: 1, 2-3, 4-7, 8-15, 16-31, 32+.
    pub rx_burst_hist: [AtomicU64; BURST_BUCKETS],
    /// Polls of the transmit ring that found nothing (published every few rounds).
    pub empty_polls: AtomicU64,
    /// Kicks received on either ring of the pair while the worker slept.
    pub kicks: AtomicU64,
    /// Interrupts sent (call eventfd writes) for either ring of the pair.
    pub interrupts: AtomicU64,
    /// Bursts completed without an interrupt because the driver did not want one
    /// (EVENT_IDX or VRING_AVAIL_F_NO_INTERRUPT / packed event suppression).
    pub interrupts_suppressed: AtomicU64,
}

/// Buckets of the burst-size histogram.
pub const BURST_BUCKETS: usize = 6;

/// The histogram bucket of a burst of `n` frames.
#[inline(always)]
pub fn burst_bucket(n: usize) -> usize {
    ((usize::BITS - 1 - n.max(1).leading_zeros()) as usize).min(BURST_BUCKETS - 1)
}

/// A snapshot of [`QueueStats`].
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct QueueStatsSnapshot {
    pub queue: u16,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_bursts: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_burst_hist: [u64; BURST_BUCKETS],
    pub empty_polls: u64,
    pub kicks: u64,
    pub interrupts: u64,
    pub interrupts_suppressed: u64,
}

/// Counters of one port.
#[derive(Debug, Default)]
pub struct PortStats {
    /// Frames the switch received from the port.
    pub rx_packets: AtomicU64,
    /// Bytes of those frames (without the virtio-net header).
    pub rx_bytes: AtomicU64,
    /// Frames the switch sent to the port.
    pub tx_packets: AtomicU64,
    /// Bytes of those frames.
    pub tx_bytes: AtomicU64,
    /// Frames for this port dropped because it had no receive buffer posted.
    pub drop_no_rx_buffer: AtomicU64,
    /// Frames dropped because the guest posted no receive buffer big enough.
    pub drop_rx_buffer_small: AtomicU64,
    /// Frames from the port shorter than an Ethernet header, longer than the largest
    /// frame accepted, or with a multicast source address.
    pub drop_bad_frame: AtomicU64,
    /// Frames from the port whose source MAC is not one of the port's addresses.
    pub drop_spoofed: AtomicU64,
    /// Frames from the port on a VLAN the port does not carry.
    pub drop_vlan: AtomicU64,
    /// Frames the tap device refused (its kernel queue was full).
    pub drop_tap_write: AtomicU64,
    /// Times a frame from the port waited in its transmit ring because its
    /// destination had no receive buffer (backpressure).
    pub backpressure: AtomicU64,
    /// Frames from the port whose virtio-net header did not describe the frame.
    pub drop_bad_header: AtomicU64,
    /// Segmentation requests passed to the port whole (it negotiated the offload).
    pub gso_passed: AtomicU64,
    /// Segmentation requests for the port done in software ...
    pub gso_segmented: AtomicU64,
    /// ... into this many segments.
    pub gso_segments: AtomicU64,
    /// Partial checksums completed in software for the port.
    pub csum_completed: AtomicU64,
    /// Frames coalesced (GRO) from TCP segments for the port ...
    pub gro_frames: AtomicU64,
    /// ... from this many segments.
    pub gro_segments: AtomicU64,
    /// Bursts processed (non-empty pops of a transmit ring or reads of a tap).
    pub bursts: AtomicU64,
    /// Kicks received while the worker slept.
    pub kicks: AtomicU64,
    /// Interrupts (call eventfd writes) sent.
    pub interrupts: AtomicU64,
    /// Rings stopped because the guest broke the virtqueue rules.
    pub ring_errors: AtomicU64,
    /// Per queue pair.
    pub queues: Box<[QueueStats]>,
}

/// A snapshot of [`PortStats`] without the queues.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct PortStatsSnapshot {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub drop_no_rx_buffer: u64,
    pub drop_rx_buffer_small: u64,
    pub drop_bad_frame: u64,
    pub drop_spoofed: u64,
    pub drop_vlan: u64,
    pub drop_tap_write: u64,
    pub backpressure: u64,
    pub drop_bad_header: u64,
    pub gso_passed: u64,
    pub gso_segmented: u64,
    pub gso_segments: u64,
    pub csum_completed: u64,
    pub gro_frames: u64,
    pub gro_segments: u64,
    pub bursts: u64,
    pub kicks: u64,
    pub interrupts: u64,
    pub ring_errors: u64,
}

impl PortStats {
    /// Counters for a port with `queue_pairs` queue pairs.
    pub fn new(queue_pairs: usize) -> PortStats {
        PortStats {
            queues: (0..queue_pairs.max(1)).map(|_| QueueStats::default()).collect(),
            ..Default::default()
        }
    }

    /// Adds `n` to a counter.
    #[inline(always)]
    pub fn add(c: &AtomicU64, n: u64) {
        add(c, n)
    }

    /// The counters of queue pair `q` (the last pair's for an out-of-range index).
    #[inline(always)]
    pub fn queue(&self, q: usize) -> &QueueStats {
        &self.queues[q.min(self.queues.len() - 1)]
    }

    /// Counts a burst of `n` frames (`bytes` bytes) taken from queue pair `pair`.
    #[inline]
    pub fn count_rx(&self, pair: usize, n: usize, bytes: u64) {
        add(&self.rx_packets, n as u64);
        add(&self.rx_bytes, bytes);
        add(&self.bursts, 1);
        let q = self.queue(pair);
        add(&q.rx_packets, n as u64);
        add(&q.rx_bytes, bytes);
        add(&q.rx_bursts, 1);
        add(&q.rx_burst_hist[burst_bucket(n)], 1);
    }

    /// Reads every port counter.
    pub fn snapshot(&self) -> PortStatsSnapshot {
        PortStatsSnapshot {
            rx_packets: get(&self.rx_packets),
            rx_bytes: get(&self.rx_bytes),
            tx_packets: get(&self.tx_packets),
            tx_bytes: get(&self.tx_bytes),
            drop_no_rx_buffer: get(&self.drop_no_rx_buffer),
            drop_rx_buffer_small: get(&self.drop_rx_buffer_small),
            drop_bad_frame: get(&self.drop_bad_frame),
            drop_spoofed: get(&self.drop_spoofed),
            drop_vlan: get(&self.drop_vlan),
            drop_tap_write: get(&self.drop_tap_write),
            backpressure: get(&self.backpressure),
            drop_bad_header: get(&self.drop_bad_header),
            gso_passed: get(&self.gso_passed),
            gso_segmented: get(&self.gso_segmented),
            gso_segments: get(&self.gso_segments),
            csum_completed: get(&self.csum_completed),
            gro_frames: get(&self.gro_frames),
            gro_segments: get(&self.gro_segments),
            bursts: get(&self.bursts),
            kicks: get(&self.kicks),
            interrupts: get(&self.interrupts),
            ring_errors: get(&self.ring_errors),
        }
    }

    /// Reads every queue's counters.
    pub fn queue_snapshots(&self) -> Vec<QueueStatsSnapshot> {
        self.queues
            .iter()
            .enumerate()
            .map(|(i, q)| QueueStatsSnapshot {
                queue: i as u16,
                rx_packets: get(&q.rx_packets),
                rx_bytes: get(&q.rx_bytes),
                rx_bursts: get(&q.rx_bursts),
                tx_packets: get(&q.tx_packets),
                tx_bytes: get(&q.tx_bytes),
                rx_burst_hist: std::array::from_fn(|i| get(&q.rx_burst_hist[i])),
                empty_polls: get(&q.empty_polls),
                kicks: get(&q.kicks),
                interrupts: get(&q.interrupts),
                interrupts_suppressed: get(&q.interrupts_suppressed),
            })
            .collect()
    }
}

/// Counters of one datapath worker.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct WorkerStats {
    /// TSC cycles spent in polling rounds that moved frames.
    pub busy_cycles: AtomicU64,
    /// TSC cycles spent in polling rounds that found nothing (spinning before sleep).
    pub idle_cycles: AtomicU64,
    /// Frames the worker took in (from every port).
    pub packets: AtomicU64,
    /// Times the worker went to sleep on its eventfds.
    pub sleeps: AtomicU64,
    /// The worker thread's kernel thread id (for its CPU time in /proc).
    pub tid: AtomicU64,
    /// Times the worker stopped spinning early because another thread waited for a CPU.
    pub yields: AtomicU64,
    /// Polling mode: 0 poll, 1 adaptive, 2 interrupt.
    pub mode: AtomicU64,
    /// The current adaptive polling window, in nanoseconds.
    pub window_ns: AtomicU64,
}

/// A snapshot of [`WorkerStats`].
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct WorkerStatsSnapshot {
    pub busy_cycles: u64,
    pub idle_cycles: u64,
    pub packets: u64,
    pub sleeps: u64,
    pub yields: u64,
    /// "poll", "adaptive" or "interrupt".
    pub mode: &'static str,
    /// The current polling window in microseconds (adaptive mode).
    pub poll_window_us: f64,
    /// busy_cycles / packets (0 when no packets).
    pub busy_cycles_per_packet: f64,
    /// CPU time (user + system) of the worker thread, from /proc.
    pub cpu_seconds: f64,
}

impl WorkerStats {
    /// Reads the counters and the thread's CPU time.
    pub fn snapshot(&self) -> WorkerStatsSnapshot {
        let (busy, packets) = (get(&self.busy_cycles), get(&self.packets));
        WorkerStatsSnapshot {
            busy_cycles: busy,
            idle_cycles: get(&self.idle_cycles),
            packets,
            sleeps: get(&self.sleeps),
            yields: get(&self.yields),
            mode: match get(&self.mode) {
                0 => "poll",
                2 => "interrupt",
                _ => "adaptive",
            },
            poll_window_us: get(&self.window_ns) as f64 / 1000.0,
            busy_cycles_per_packet: if packets == 0 { 0.0 } else { busy as f64 / packets as f64 },
            cpu_seconds: thread_cpu_seconds(get(&self.tid)).unwrap_or(0.0),
        }
    }
}

/// utime + stime of a thread of this process, from /proc/self/task/TID/stat.
pub fn thread_cpu_seconds(tid: u64) -> Option<f64> {
    if tid == 0 {
        return None;
    }
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14, 15.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Counters of the MAC learning table.
#[derive(Debug, Default)]
pub struct FdbStats {
    /// Entries now in the table.
    pub entries: AtomicU64,
    /// Addresses learned.
    pub learned: AtomicU64,
    /// Stations that moved to another port.
    pub moves: AtomicU64,
    /// Entries removed by aging.
    pub aged: AtomicU64,
    /// Addresses not learned because their port had reached its cap.
    pub refused_port_cap: AtomicU64,
    /// Addresses not learned because the table had reached its cap.
    pub refused_global_cap: AtomicU64,
}

/// A snapshot of [`FdbStats`].
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct FdbStatsSnapshot {
    pub entries: u64,
    pub learned: u64,
    pub moves: u64,
    pub aged: u64,
    pub refused_port_cap: u64,
    pub refused_global_cap: u64,
}

impl FdbStats {
    /// Reads every counter.
    pub fn snapshot(&self) -> FdbStatsSnapshot {
        FdbStatsSnapshot {
            entries: get(&self.entries),
            learned: get(&self.learned),
            moves: get(&self.moves),
            aged: get(&self.aged),
            refused_port_cap: get(&self.refused_port_cap),
            refused_global_cap: get(&self.refused_global_cap),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn burst_buckets() {
        let b: Vec<usize> =
            [0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 64].iter().map(|&n| super::burst_bucket(n)).collect();
        assert_eq!(b, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
    }
}
