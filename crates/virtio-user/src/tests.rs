//! The data path against virtq's device side in the same process: a scripted device
//! consumes transmit buffers and fills receive buffers (mergeable or not), so frame
//! assembly, slot bookkeeping and refills are checked without a backend.

use netproto::virtio_net::{features as net, NetHdr, HDR_LEN};
use virtq::{features as vf, Burst, DeviceQueue, DriverQueue, GuestArena, Layout, RingAddrs};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::queue::{BufLayout, QueuePair, Vq};
use crate::Packet;

struct Rig {
    _arena: GuestArena,
    qp: QueuePair,
    rx_dev: DeviceQueue,
    tx_dev: DeviceQueue,
    burst: Burst,
    rx_buf_len: usize,
    mrg: bool,
    /// Receive buffers the device has taken.
    rx_popped: u64,
}

fn rig(layout: Layout, mrg: bool, rx_buf_len: u32, size: u16) -> Rig {
    let mut arena = GuestArena::new(8 << 20, 0x1000_0000).unwrap();
    let mut features = vf::VERSION_1 | vf::EVENT_IDX;
    if mrg {
        features |= net::MRG_RXBUF;
    }
    if layout == Layout::Packed {
        features |= vf::RING_PACKED;
    }
    let ring = |arena: &mut GuestArena| {
        let [d, a, u] = DriverQueue::area_sizes(layout, size);
        let addrs = RingAddrs {
            desc: arena.alloc(d, 4096).unwrap(),
            driver: arena.alloc(a, 64).unwrap(),
            device: arena.alloc(u, 64).unwrap(),
        };
        (DriverQueue::new(layout, arena.mem().clone(), size, addrs, features, None).unwrap(), addrs)
    };
    let (rxq, rx_addrs) = ring(&mut arena);
    let (txq, tx_addrs) = ring(&mut arena);
    let stride = (rx_buf_len as u64).div_ceil(64) * 64;
    let rx_buf =
        BufLayout { base: arena.alloc(size as u64 * stride, 4096).unwrap(), stride, len: rx_buf_len };
    let tx_buf = BufLayout { base: arena.alloc(size as u64 * 2048, 4096).unwrap(), stride: 2048, len: 2048 };
    let ev = || EventFd::new(EFD_NONBLOCK).unwrap();
    let mut qp = QueuePair::new(
        0,
        arena.mem().clone(),
        Vq { index: 0, q: rxq, kick: ev(), call: ev() },
        Vq { index: 1, q: txq, kick: ev(), call: ev() },
        rx_buf,
        tx_buf,
        false,
        mrg,
    )
    .unwrap();
    assert_eq!(qp.fill_rx().unwrap(), size as usize);
    qp.kick_rx().unwrap();
    let rx_dev = DeviceQueue::new(layout, arena.mem().clone(), size, rx_addrs, features).unwrap();
    let tx_dev = DeviceQueue::new(layout, arena.mem().clone(), size, tx_addrs, features).unwrap();
    Rig {
        _arena: arena,
        qp,
        rx_dev,
        tx_dev,
        burst: Burst::with_capacity(64),
        rx_buf_len: rx_buf_len as usize,
        mrg,
        rx_popped: 0,
    }
}

fn frame_of(seq: usize) -> Vec<u8> {
    let len = [60, 64, 333, 1000, 1514, 127, 2000][seq % 7];
    (0..len).map(|i| (i ^ seq) as u8).collect()
}

impl Rig {
    /// The device side of transmit: reads every pending chain, checks the header, and
    /// returns the frames.
    fn device_tx(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let n = self.tx_dev.pop(&mut self.burst, 64).unwrap();
        for i in 0..n {
            let c = self.burst.chain(i);
            let mut b = vec![0u8; c.read_len() as usize];
            assert_eq!(c.read_at(0, &mut b), b.len());
            assert_eq!(NetHdr::parse(b[..HDR_LEN].try_into().unwrap()), NetHdr::default());
            out.push(b[HDR_LEN..].to_vec());
            self.tx_dev.add_used(c.token(), 0);
        }
        self.tx_dev.publish_used();
        out
    }

    /// Receive buffers needed for `frame`.
    fn need(&self, frame: &[u8]) -> usize {
        if self.mrg {
            (HDR_LEN + frame.len()).div_ceil(self.rx_buf_len)
        } else {
            1
        }
    }

    /// Receive buffers posted and not yet taken by the device.
    fn rx_available(&self) -> u64 {
        self.qp.stats().rx_posted - self.rx_popped
    }

    /// The device side of receive: delivers `frame` the way a virtio-net device does,
    /// spreading it over several buffers with MRG_RXBUF. `num_buffers` overrides the
    /// header's count (to inject errors).
    fn device_rx(&mut self, frame: &[u8], num_buffers: Option<u16>) {
        let need = self.need(frame);
        assert_eq!(self.rx_dev.pop(&mut self.burst, need).unwrap(), need, "receive buffers missing");
        self.rx_popped += need as u64;
        let hdr = NetHdr::plain(num_buffers.unwrap_or(if self.mrg { need as u16 } else { 0 })).to_bytes();
        let mut data = hdr.to_vec();
        data.extend_from_slice(frame);
        let mut off = 0;
        for i in 0..need {
            let c = self.burst.chain(i);
            let k = (data.len() - off).min(c.write_len() as usize);
            assert_eq!(c.write_at(0, &data[off..off + k]), k);
            off += k;
            self.rx_dev.add_used(c.token(), k as u32);
        }
        assert_eq!(off, data.len(), "frame does not fit one buffer without MRG_RXBUF");
        self.rx_dev.publish_used();
    }
}

fn roundtrip(layout: Layout, mrg: bool, rx_buf_len: u32) {
    let mut r = rig(layout, mrg, rx_buf_len, 64);
    let mut out: Vec<Packet> = (0..5).map(|_| Packet::with_capacity(4096)).collect();
    let total = 500;
    let (mut sent, mut got) = (0, 0);
    let mut pending: std::collections::VecDeque<Vec<u8>> = Default::default();
    while got < total {
        // Transmit a few, let the device take them and queue them for delivery.
        if sent < total {
            let frames: Vec<Vec<u8>> = (sent..(sent + 9).min(total)).map(frame_of).collect();
            let n = r.qp.tx_burst(&frames).unwrap();
            sent += n;
            for f in r.device_tx() {
                pending.push_back(f);
            }
        }
        // Deliver as many as the posted receive buffers hold.
        while let Some(f) = pending.front() {
            if r.rx_available() < r.need(f) as u64 {
                break;
            }
            let f = pending.pop_front().unwrap();
            r.device_rx(&f, None);
        }
        // Receive in small bursts: frames wait in the backlog across calls while the
        // refill reuses descriptor ids.
        let n = r.qp.rx_burst(&mut out).unwrap();
        for p in &out[..n] {
            assert_eq!(p.data(), &frame_of(got)[..], "frame {got}");
            assert!(!p.truncated());
            got += 1;
        }
    }
    let s = r.qp.stats();
    assert_eq!((s.tx_packets, s.rx_packets, s.rx_errors), (total as u64, total as u64, 0), "{s:?}");
    if mrg && rx_buf_len < 1000 {
        assert!(s.rx_merged > 0, "{s:?}");
    }
}

#[test]
fn split_roundtrip() {
    roundtrip(Layout::Split, false, 2048 + HDR_LEN as u32);
}

#[test]
fn packed_roundtrip() {
    roundtrip(Layout::Packed, false, 2048 + HDR_LEN as u32);
}

#[test]
fn split_mergeable_roundtrip() {
    roundtrip(Layout::Split, true, 256);
}

#[test]
fn packed_mergeable_roundtrip() {
    roundtrip(Layout::Packed, true, 256);
}

#[test]
fn malformed_num_buffers_dropped_and_counted() {
    let mut r = rig(Layout::Split, true, 256, 16);
    let mut out: Vec<Packet> = (0..4).map(|_| Packet::with_capacity(2048)).collect();
    // num_buffers 0 is invalid.
    r.device_rx(&frame_of(0), Some(0));
    r.device_rx(&frame_of(1), None);
    let n = r.qp.rx_burst(&mut out).unwrap();
    assert_eq!(n, 1);
    assert_eq!(out[0].data(), &frame_of(1)[..]);
    assert_eq!(r.qp.stats().rx_errors, 1);
    // num_buffers beyond the buffers the device holds: dropped, not waited for forever.
    r.device_rx(&frame_of(5), Some(40));
    r.device_rx(&frame_of(0), None);
    let n = r.qp.rx_burst(&mut out).unwrap();
    assert_eq!(n, 1);
    assert_eq!(out[0].data(), &frame_of(0)[..]);
    assert_eq!(r.qp.stats().rx_errors, 2);
}

#[test]
fn short_packet_buffer_truncates() {
    let mut r = rig(Layout::Packed, true, 256, 16);
    let f = frame_of(3); // 1000 bytes over 4 buffers
    r.device_rx(&f, None);
    let mut out = vec![Packet::with_capacity(100)];
    assert_eq!(r.qp.rx_burst(&mut out).unwrap(), 1);
    assert!(out[0].truncated());
    assert_eq!(out[0].frame_len(), 1000);
    assert_eq!(out[0].data(), &f[..100]);
    assert_eq!(out[0].hdr().num_buffers, 4);
    let s = r.qp.stats();
    assert_eq!((s.rx_truncated, s.rx_merged), (1, 1));
}

#[test]
fn tx_ring_full_returns_short_count() {
    let mut r = rig(Layout::Split, false, 2048, 8);
    let frames: Vec<Vec<u8>> = (0..12)
        .map(frame_of)
        .map(|mut f| {
            f.truncate(1500);
            f
        })
        .collect();
    assert_eq!(r.qp.tx_burst(&frames).unwrap(), 8);
    assert_eq!(r.qp.tx_burst(&frames).unwrap(), 0);
    assert_eq!(r.device_tx().len(), 8);
    assert_eq!(r.qp.tx_burst(&frames[8..]).unwrap(), 4);
    let big = vec![0u8; 2048];
    assert!(matches!(r.qp.tx_burst(&[&big[..]]), Err(crate::Error::FrameTooLarge { len: 2048, max: 2036 })));
}

#[test]
fn wait_rx_ignores_stale_notifications_and_wakes_on_frames() {
    use std::time::{Duration, Instant};
    let mut r = rig(Layout::Split, true, 2048, 16);
    // A notification for nothing: the wait still lasts its whole timeout.
    r.qp.rx_call_fd().write(1).unwrap();
    let t = Instant::now();
    assert!(!r.qp.wait_rx(Duration::from_millis(60)).unwrap());
    assert!(t.elapsed() >= Duration::from_millis(60));
    // A frame already used: no wait at all.
    r.device_rx(&frame_of(2), None);
    assert!(r.qp.wait_rx(Duration::from_secs(5)).unwrap());
    let mut out = vec![Packet::with_capacity(2048)];
    assert_eq!(r.qp.rx_burst(&mut out).unwrap(), 1);
    // A frame that arrives during the wait, signalled from another thread the way a
    // backend writes the call eventfd.
    let call = r.qp.rx_call_fd().try_clone().unwrap();
    std::thread::scope(|s| {
        let rx_dev = &mut r.rx_dev;
        let burst = &mut r.burst;
        s.spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            assert_eq!(rx_dev.pop(burst, 1).unwrap(), 1);
            let c = burst.chain(0);
            let mut data = NetHdr::plain(1).to_bytes().to_vec();
            data.extend_from_slice(&frame_of(0));
            c.write_at(0, &data);
            rx_dev.add_used(c.token(), data.len() as u32);
            rx_dev.publish_used();
            call.write(1).unwrap();
        });
        let t = Instant::now();
        assert!(r.qp.wait_rx(Duration::from_secs(5)).unwrap());
        assert!(t.elapsed() < Duration::from_secs(4));
    });
    assert_eq!(r.qp.rx_burst(&mut out).unwrap(), 1);
    assert_eq!(out[0].data(), &frame_of(0)[..]);
}
