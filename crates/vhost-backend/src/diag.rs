//! Diagnostic port modes (like testpmd's forwarding modes): a port that reflects,
//! sinks or sources frames instead of switching them, the way the device alone is
//! tested and measured.

use netproto::ethernet::Mac;
use netproto::virtio_net::NetHdr;
use virtq::{Burst, Chain};

use crate::device::DiagMode;
use crate::stats::PortStats;
use crate::worker::{Io, PortRt, Ring, Vhost, BURST, MAX_FRAME, PREFETCH_AHEAD};

/// Room for the largest virtio-net header in front of a frame template.
const HDR_MAX: usize = netproto::virtio_net::HDR_LEN;

/// A generated frame behind a virtio-net header for one receive buffer (num_buffers =
/// 1): to the guest's MAC from 02:00:00:00:00:01, EtherType 0x88b5 (IEEE local
/// experimental), an 8-byte sequence number, then a byte pattern.
pub(crate) fn source_frame(mac: Mac, size: usize) -> Vec<u8> {
    let size = size.clamp(60, MAX_FRAME);
    let mut t = vec![0u8; HDR_MAX + size];
    t[..HDR_MAX].copy_from_slice(&NetHdr::plain(1).to_bytes());
    let f = &mut t[HDR_MAX..];
    f[..6].copy_from_slice(&mac.0);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    for (i, b) in f.iter_mut().enumerate().skip(22) {
        *b = i as u8;
    }
    t
}

/// Picks receive chains `from..` of `rx` for a frame of `need` bytes (header
/// included): one chain, or with MRG_RXBUF as many as it takes. Returns how many, or
/// `None` when there are not enough (backpressure) and `Some(0)` when a single chain
/// can never hold it (without MRG_RXBUF).
#[inline]
pub(crate) fn pick_rx(rx: &Burst, from: usize, need: usize, mrg: bool) -> Option<usize> {
    let mut cap = 0usize;
    let mut k = 0;
    while cap < need {
        if from + k >= rx.len() {
            return None;
        }
        cap += rx.chain(from + k).write_len() as usize;
        k += 1;
        if !mrg && cap < need {
            return Some(0);
        }
    }
    Some(k)
}

/// Writes one frame into rx chains `first..first + k`: the header (num_buffers = k when
/// merging, 1 otherwise, as virtio 1.x 5.1.6.4 requires) then the frame bytes from
/// `fill`, which copies `n` frame bytes starting at frame offset `src_off` into the
/// given chain at `dst_off` and returns bytes copied.
#[inline]
fn deliver(
    rx: &mut Ring,
    first: usize,
    k: usize,
    hdr_len: usize,
    flen: usize,
    mut fill: impl FnMut(&Chain<'_>, usize, usize, usize) -> usize,
) {
    let hdr = NetHdr::plain(k as u16).to_bytes();
    let mut copied = 0;
    for j in 0..k {
        let d = rx.burst.chain(first + j);
        let mut off = 0;
        if j == 0 {
            off = d.write_at(0, &hdr[..hdr_len]);
        }
        let n = fill(&d, off, copied, flen - copied);
        copied += n;
        rx.q.add_used(d.token(), (off + n) as u32);
    }
}

/// The receive and transmit rings of queue pair `pair`, when running and healthy.
fn pair_of(rings: &mut [Option<Ring>], pair: usize) -> (Option<&mut Ring>, Option<&mut Ring>) {
    let mid = (2 * pair + 1).min(rings.len());
    let (a, b) = rings.split_at_mut(mid);
    let rx = a.get_mut(2 * pair).and_then(|r| r.as_mut()).filter(|r| !r.broken);
    let tx = b.first_mut().and_then(|r| r.as_mut()).filter(|r| !r.broken);
    (rx, tx)
}

impl PortRt {
    /// One round over the rings of a port in a diagnostic mode; returns frames moved.
    pub(crate) fn poll_diag(&mut self) -> usize {
        let Io::Vhost(v) = &mut self.io else { return 0 };
        let pairs = v.rings.len().div_ceil(2);
        let mut work = 0;
        for pair in 0..pairs {
            work += match self.diag {
                Some(DiagMode::Reflect) => reflect(v, &self.name, &self.stats, pair),
                Some(DiagMode::Sink) => sink(v, &self.name, &self.stats, pair),
                Some(DiagMode::Source) => {
                    source(v, &self.name, &self.stats, &mut self.frame, &mut self.seq, pair)
                }
                None => 0,
            };
        }
        work
    }
}

fn sink(v: &mut Vhost, name: &str, stats: &PortStats, pair: usize) -> usize {
    let Some(tx) = v.rings.get_mut(2 * pair + 1).and_then(|r| r.as_mut()) else { return 0 };
    if tx.broken {
        return 0;
    }
    let n = match tx.q.pop(&mut tx.burst, BURST) {
        Ok(n) => n,
        Err(e) => {
            tx.fail(name, 2 * pair + 1, e, stats);
            return 0;
        }
    };
    if n == 0 {
        return 0;
    }
    let mut bytes = 0u64;
    for i in 0..n {
        let c = tx.burst.chain(i);
        bytes += (c.read_len() as u64).saturating_sub(v.hdr_len as u64);
        tx.q.add_used(c.token(), 0);
    }
    tx.q.publish_used();
    tx.notify(stats, n);
    stats.count_rx(pair, n, bytes);
    n
}

fn source(
    v: &mut Vhost,
    name: &str,
    stats: &PortStats,
    template: &mut [u8],
    seq_out: &mut u64,
    pair: usize,
) -> usize {
    let (hdr_len, mrg) = (v.hdr_len, v.mrg);
    // `template`: a 12-byte header (num_buffers = 1) then the frame, so that the
    // common case (one receive buffer) is one copy.
    let mut seq = *seq_out;
    let Some(rx) = v.rings.get_mut(2 * pair).and_then(|r| r.as_mut()) else { return 0 };
    if rx.broken {
        return 0;
    }
    let n = match rx.q.pop(&mut rx.burst, BURST) {
        Ok(n) => n,
        Err(e) => {
            rx.fail(name, 2 * pair, e, stats);
            return 0;
        }
    };
    for i in 0..PREFETCH_AHEAD.min(n) {
        rx.burst.chain(i).prefetch(2);
    }
    let mut ri = 0;
    let mut sent = 0;
    let flen = template.len() - HDR_MAX;
    while ri < n {
        if ri + PREFETCH_AHEAD < n {
            rx.burst.chain(ri + PREFETCH_AHEAD).prefetch(2);
        }
        match pick_rx(&rx.burst, ri, hdr_len + flen, mrg) {
            None => break,
            Some(0) => {
                // This buffer can never hold the frame: hand it back empty.
                PortStats::add(&stats.drop_rx_buffer_small, 1);
                let t = rx.burst.chain(ri).token();
                rx.q.add_used(t, 0);
                ri += 1;
            }
            Some(k) => {
                // The sequence number lives at frame bytes 14..22.
                template[HDR_MAX + 14..HDR_MAX + 22].copy_from_slice(&seq.to_be_bytes());
                if k == 1 {
                    let d = rx.burst.chain(ri);
                    let w = d.write_at(0, &template[HDR_MAX - hdr_len..]);
                    rx.q.add_used(d.token(), w as u32);
                } else {
                    let frame = &template[HDR_MAX..];
                    deliver(rx, ri, k, hdr_len, flen, |d, off, src_off, len| {
                        d.write_at(off, &frame[src_off..src_off + len])
                    });
                }
                seq += 1;
                ri += k;
                sent += 1;
            }
        }
    }
    rx.q.rewind(&rx.burst, ri);
    if ri > 0 {
        rx.q.publish_used();
        rx.notify(stats, ri);
    }
    *seq_out = seq;
    PortStats::add(&stats.tx_packets, sent as u64);
    PortStats::add(&stats.tx_bytes, (sent * flen) as u64);
    let q = stats.queue(pair);
    PortStats::add(&q.tx_packets, sent as u64);
    PortStats::add(&q.tx_bytes, (sent * flen) as u64);
    sent
}

fn reflect(v: &mut Vhost, name: &str, stats: &PortStats, pair: usize) -> usize {
    let (hdr_len, mrg) = (v.hdr_len, v.mrg);
    let (Some(rx), Some(tx)) = pair_of(&mut v.rings, pair) else { return 0 };
    if !tx.q.has_avail() {
        return 0;
    }
    // Both rings' first lines are needed now: load them in parallel.
    rx.q.prefetch_next();
    tx.q.prefetch_next();
    let ntx = match tx.q.pop(&mut tx.burst, BURST) {
        Ok(n) => n,
        Err(e) => {
            tx.fail(name, 2 * pair + 1, e, stats);
            return 0;
        }
    };
    if ntx == 0 {
        return 0;
    }
    // One receive chain per frame is the common case (a frame that needs more, with
    // mergeable buffers, waits for the next round); popping more would only be
    // validated and rewound.
    let mut want = ntx;
    let mut nrx = match rx.q.pop(&mut rx.burst, want) {
        Ok(n) => n,
        Err(e) => {
            rx.fail(name, 2 * pair, e, stats);
            tx.q.rewind(&tx.burst, 0);
            return 0;
        }
    };
    // Prefetch a few frames ahead of the copy loop (software pipelining): enough to
    // overlap the cache misses on both guests' buffers, few enough not to flood
    // the CPU's miss queue.
    for i in 0..PREFETCH_AHEAD.min(ntx) {
        tx.burst.chain(i).prefetch(2);
    }
    for i in 0..PREFETCH_AHEAD.min(nrx) {
        rx.burst.chain(i).prefetch(2);
    }
    let (mut ri, mut ti) = (0usize, 0usize);
    let (mut delivered, mut bytes, mut bad, mut small) = (0u64, 0u64, 0u64, 0u64);
    while ti < ntx {
        let c = tx.burst.chain(ti);
        if ti + PREFETCH_AHEAD < ntx {
            tx.burst.chain(ti + PREFETCH_AHEAD).prefetch(2);
        }
        if ri + PREFETCH_AHEAD < nrx {
            rx.burst.chain(ri + PREFETCH_AHEAD).prefetch(2);
        }
        let total = c.read_len() as usize;
        if total < hdr_len + 14 || total - hdr_len > MAX_FRAME {
            bad += 1;
            tx.q.add_used(c.token(), 0);
            ti += 1;
            continue;
        }
        let flen = total - hdr_len;
        let k = match pick_rx(&rx.burst, ri, hdr_len + flen, mrg) {
            // Not enough receive chains in this burst for the first frame: pop a
            // full burst if we asked for fewer, else the frame needs more merged
            // buffers than a burst holds and is dropped, so the ring always moves.
            None if ri == 0 && nrx == want && want < BURST => {
                rx.q.rewind(&rx.burst, 0);
                want = BURST;
                nrx = match rx.q.pop(&mut rx.burst, want) {
                    Ok(n) => n,
                    Err(e) => {
                        // The frames from here on stay in the transmit ring.
                        rx.fail(name, 2 * pair, e, stats);
                        break;
                    }
                };
                continue;
            }
            None if ri == 0 && nrx == BURST => Some(0),
            other => other,
        };
        let k = match k {
            None => break,
            Some(0) => {
                small += 1;
                tx.q.add_used(c.token(), 0);
                ti += 1;
                continue;
            }
            Some(k) => k,
        };
        let mut macs = [0u8; 12];
        c.read_at(hdr_len, &mut macs);
        macs.rotate_left(6);
        deliver(rx, ri, k, hdr_len, flen, |d, off, src_off, len| {
            let n = d.copy_from(off, &c, hdr_len + src_off, len);
            if src_off == 0 {
                d.write_at(off, &macs);
            }
            n
        });
        tx.q.add_used(c.token(), 0);
        ri += k;
        ti += 1;
        delivered += 1;
        bytes += flen as u64;
    }
    // Frames with no receive buffer yet stay in the guest's TX ring (backpressure);
    // unused receive buffers go back too.
    tx.q.rewind(&tx.burst, ti);
    rx.q.rewind(&rx.burst, ri);
    // Received frames first: they are what the guest is waiting for.
    if ri > 0 {
        rx.q.publish_used();
        rx.notify(stats, ri);
    }
    if ti > 0 {
        tx.q.publish_used();
        tx.notify(stats, ti);
    }
    stats.count_rx(pair, ti, bytes);
    PortStats::add(&stats.tx_packets, delivered);
    PortStats::add(&stats.tx_bytes, bytes);
    PortStats::add(&stats.drop_bad_frame, bad);
    PortStats::add(&stats.drop_rx_buffer_small, small);
    let q = stats.queue(pair);
    PortStats::add(&q.tx_packets, delivered);
    PortStats::add(&q.tx_bytes, bytes);
    ti
}
