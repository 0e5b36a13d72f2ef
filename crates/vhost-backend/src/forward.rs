//! Switching: frames taken from one port's transmit rings (or read from a tap) go to
//! the ports the learning table, the VLANs and the address filters choose.
//!
//! Per frame: one read of its first bytes (addresses, tag, flow fields), one table
//! lookup for the source (skipped when it repeats) and one for the destination, then
//! the copy: straight from the sender's guest memory into the receiver's (one copy),
//! inserting or removing an 802.1Q tag on the way when the ports' VLAN modes differ.
//! Per burst: a destination's receive ring is popped once when the first frame for it
//! comes, and its used entries are published (with at most one interrupt) once at the
//! end. A destination without a posted buffer loses the frame (counted as
//! `drop_no_rx_buffer` on that port); the sender's ring always moves, so one slow
//! receiver never stalls traffic to the others.

use std::io::{Read, Write};
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use netproto::ethernet::Mac;
use netproto::virtio_net::NetHdr;
use virtq::Chain;

use netproto::gro::{Gro, GroOpts};
use netproto::gso::{TxOffloads, TxPlan};
use netproto::virtio_net::HDR_F_RSC_INFO;

use crate::diag::pick_rx;
use crate::fdb::Slot;
use crate::offload::{pass_header, Accept};
use crate::policy::{Egress, PortPolicy};
use crate::stats::PortStats;
use crate::worker::{Dec, Io, Ring, Runtime, BURST, MAX_FRAME, PREFETCH_AHEAD, RX_BURST_MAX, TAP_BUF};

/// Broadcast and multicast: every port of the VLAN but the sender.
pub(crate) const FLOOD: u16 = u16::MAX;
/// Unicast to an address nobody learned: the ports that take unknown unicast.
pub(crate) const FLOOD_UNKNOWN: u16 = u16::MAX - 1;
/// Nowhere.
pub(crate) const DROP: u16 = u16::MAX - 2;

/// Bytes of a frame looked at to classify it: Ethernet, a tag, an IPv6 header and the
/// ports of TCP or UDP.
const PEEK: usize = 64;

const HDR: usize = netproto::virtio_net::HDR_LEN;

/// Frames longer than this have their following lines prefetched one frame ahead.
const LARGE: usize = 256;

/// Where a frame's bytes are.
#[derive(Clone, Copy)]
enum Src<'a> {
    /// A guest's transmit chain; the frame starts after a `usize`-byte header.
    Chain(Chain<'a>, usize),
    /// A host buffer holding just the frame.
    Buf(&'a [u8]),
}

impl Src<'_> {
    /// Copies frame bytes from `off` into `dst`; returns bytes copied.
    fn read(&self, off: usize, dst: &mut [u8]) -> usize {
        match self {
            Src::Chain(c, h) => c.read_at(h + off, dst),
            Src::Buf(b) => {
                let n = dst.len().min(b.len().saturating_sub(off));
                dst[..n].copy_from_slice(&b[off..off + n]);
                n
            }
        }
    }

    /// Copies `n` frame bytes from `off` into chain `d` at `doff`.
    fn copy_into(&self, d: &Chain<'_>, doff: usize, off: usize, n: usize) -> usize {
        match self {
            Src::Chain(c, h) => d.copy_from(doff, c, h + off, n),
            Src::Buf(b) => d.write_at(doff, b.get(off..off + n).unwrap_or(&[])),
        }
    }
}

/// One piece of an outgoing frame: input bytes `off..off + len`, or (`tag`) the new
/// 802.1Q tag.
#[derive(Clone, Copy, Default)]
struct Piece {
    tag: bool,
    off: usize,
    len: usize,
}

/// How a frame leaves for one port: up to three pieces (addresses, new tag, the rest
/// after the old tag), or one when nothing changes.
struct Out {
    pieces: [Piece; 3],
    tag: [u8; 4],
    len: usize,
}

impl Out {
    #[inline]
    fn new(d: &Dec, eg: Egress) -> Out {
        let flen = d.flen as usize;
        let tag_in = d.tag_in as usize;
        let tagged = eg == Egress::Tagged;
        // Keep the priority bits of an incoming tag (IEEE 802.1Q PCP/DEI).
        let tci = (d.tci & 0xf000) | d.vlan;
        let tag = [0x81, 0x00, (tci >> 8) as u8, tci as u8];
        let same = if tagged { tag_in == 4 && d.tci & 0xfff == d.vlan } else { tag_in == 0 };
        if same {
            let mut pieces = [Piece::default(); 3];
            pieces[0] = Piece { tag: false, off: 0, len: flen };
            return Out { pieces, tag, len: flen };
        }
        let t = if tagged { 4 } else { 0 };
        Out {
            pieces: [
                Piece { tag: false, off: 0, len: 12 },
                Piece { tag: true, off: 0, len: t },
                Piece { tag: false, off: 12 + tag_in, len: flen - 12 - tag_in },
            ],
            tag,
            len: flen - tag_in + t,
        }
    }
}

/// The flow hash that picks a receive queue: the Toeplitz hash of virtio 1.2 5.1.6.4.3
/// with the default key (IPv4/IPv6 addresses, plus TCP/UDP ports when present and the
/// packet is not a fragment), the hash a guest's own RSS would compute. Frames that are
/// not IP hash their MAC addresses, so they too stay on one queue.
#[inline]
fn flow_hash(h: &[u8]) -> u32 {
    match netproto::rss::DEFAULT_TOEPLITZ.flow_hash(h, netproto::rss::hash_types::SUPPORTED) {
        Some(f) => f.value,
        None => netproto::rss::DEFAULT_TOEPLITZ.hash(h.get(..12).unwrap_or(h)),
    }
}

/// The receive queue (among the `live` ones) for a flow hash: the spec's indirection
/// table (virtio 1.2 5.1.6.5.7.1) of 128 entries filled round-robin over the queues,
/// as a driver sets it up by default.
#[inline]
pub(crate) fn rx_queue_of(hash: u32, live: usize) -> usize {
    (hash as usize & 127) % live
}

#[inline(always)]
fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a[..b.len().min(8)].copy_from_slice(&b[..b.len().min(8)]);
    u64::from_be_bytes(a)
}

/// The last source learned and destination looked up in a burst: consecutive frames
/// of one flow skip the table.
struct Cache {
    src: u64,
    dst: u64,
    dest: u16,
    /// `dest` spreads frames over more than one receive queue (needs a flow hash).
    multi: bool,
    /// The first 14 bytes (addresses and EtherType) of the last frame, as two
    /// overlapping words, and its decision, when that decision holds for any frame
    /// with the same bytes: untagged, one receive queue, not TCP (no flow hash).
    head: (u64, u64),
    last: Option<Dec>,
}

impl Cache {
    fn new() -> Cache {
        Cache { src: u64::MAX, dst: u64::MAX, dest: DROP, multi: false, head: (0, 0), last: None }
    }
}

/// Whether a frame may wait in its sender's ring for a receive buffer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// No (flooded copies, tap senders).
    Never,
    /// Yes.
    Allowed,
    /// It has waited as long as it may.
    Expired,
}

/// What became of one copy of a frame.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// Written, or dropped and counted.
    Done,
    /// The destination had no receive buffer (nothing counted yet).
    NoBuffer,
}

/// What classifying a frame found.
enum Verdict {
    Forward(Dec),
    Bad,
    Spoofed,
    Vlan,
}

impl Runtime {
    /// Classifies one frame from the port in `slot` and learns its source.
    #[inline]
    fn classify(
        &mut self,
        slot: usize,
        policy: &PortPolicy,
        src: &Src,
        flen: usize,
        c: &mut Cache,
    ) -> Verdict {
        let mut h = [0u8; PEEK];
        let n = src.read(0, &mut h[..flen.min(PEEK)]);
        self.classify_peek(slot, policy, &h[..n], flen, c)
    }

    /// Classifies a frame of `flen` bytes from its first bytes `h` (up to PEEK).
    #[inline]
    fn classify_peek(
        &mut self,
        slot: usize,
        policy: &PortPolicy,
        h: &[u8],
        flen: usize,
        c: &mut Cache,
    ) -> Verdict {
        let n = h.len();
        if n < 14 {
            return Verdict::Bad;
        }
        let head = (be_u64(&h[0..8]), be_u64(&h[6..14]));
        if let Some(last) = c.last {
            if head == c.head {
                // The frames of a burst mostly share their addresses: same bytes, same
                // decision, once this frame is known not to be TCP.
                let tcp = match head.1 as u16 {
                    0x0800 => h.get(14 + 9) == Some(&6),
                    0x86dd => h.get(14 + 6) == Some(&6),
                    _ => false,
                };
                if !tcp {
                    return Verdict::Forward(Dec { flen: flen as u32, ..last });
                }
            }
        }
        c.last = None;
        let dst = Mac([h[0], h[1], h[2], h[3], h[4], h[5]]);
        let smac = Mac([h[6], h[7], h[8], h[9], h[10], h[11]]);
        if smac.is_multicast() {
            return Verdict::Bad;
        }
        if !policy.source_allowed(&smac) {
            return Verdict::Spoofed;
        }
        let et = u16::from_be_bytes([h[12], h[13]]);
        let (tag, tci, tag_in, l3, et) = if et == netproto::ethernet::ETHERTYPE_VLAN && n >= 18 {
            let tci = u16::from_be_bytes([h[14], h[15]]);
            (Some(tci & 0xfff), tci, 4u8, 18, u16::from_be_bytes([h[16], h[17]]))
        } else {
            (None, 0, 0, 14, et)
        };
        let Some(vlan) = policy.ingress_vlan(tag) else { return Verdict::Vlan };
        let lk = (vlan as u64) << 48 | be_u64(&h[6..12]) >> 16;
        if lk != c.src {
            c.src = lk;
            c.dst = u64::MAX;
            self.fdb.learn(vlan, &smac, slot as Slot, self.now);
        }
        let dk = (vlan as u64) << 48 | be_u64(&h[0..6]) >> 16;
        let (dest, multi) = if dk == c.dst {
            (c.dest, c.multi)
        } else if dst.is_multicast() {
            (FLOOD, true)
        } else {
            let d = match self.fdb.lookup(vlan, &dst, self.now) {
                // Never back out of the port it came in on.
                Some(d) if d as usize == slot => DROP,
                Some(d) => d,
                None => FLOOD_UNKNOWN,
            };
            (c.dst, c.dest, c.multi) = (dk, d, self.spreads(d));
            (d, c.multi)
        };
        let tcp = match et {
            0x0800 => h.get(l3 + 9) == Some(&6),
            0x86dd => h.get(l3 + 6) == Some(&6),
            _ => false,
        };
        // The hash only matters where there is a queue to choose, and for coalescing
        // (which keeps one flow's segments together).
        let hash = if multi || tcp { flow_hash(&h[..n]) } else { 0 };
        let d = Dec { dest, vlan, tci, tag_in, flen: flen as u32, hash, dst, tcp };
        if tag_in == 0 && !multi && !tcp {
            (c.head, c.last) = (head, Some(d));
        }
        Verdict::Forward(d)
    }

    /// Prefetches the next lines of a receive ring (see `prefetch_next`).
    #[inline]
    fn prefetch_output(&self, t: usize, ri: usize) {
        if let Some(Some(p)) = self.ports.get(t) {
            if let Io::Vhost(v) = &p.io {
                if let Some(Some(r)) = v.rings.get(ri) {
                    if !r.broken {
                        r.q.prefetch_next();
                    }
                }
            }
        }
    }

    /// Whether frames for `dest` may go to more than one receive queue.
    fn spreads(&self, dest: u16) -> bool {
        match dest {
            FLOOD | FLOOD_UNKNOWN => true,
            DROP => false,
            t => match self.ports.get(t as usize) {
                Some(Some(p)) => match &p.io {
                    Io::Vhost(v) => v.rx_live.len() > 1,
                    Io::Tap(_) => false,
                },
                _ => false,
            },
        }
    }

    /// Sends one classified frame to its destinations. Returns true when the frame
    /// must wait: its one destination has no receive buffer and `may_wait` allows
    /// holding it in the sender's ring (backpressure). Flooded frames never wait: a
    /// port without room loses its copy.
    #[inline]
    fn deliver(&mut self, s: usize, src: &Src, d: &Dec, wait: Wait) -> bool {
        match d.dest {
            DROP => {}
            FLOOD | FLOOD_UNKNOWN => {
                for t in 0..self.ports.len() {
                    let Some(p) = self.ports[t].as_ref() else { continue };
                    if t == s || p.diag.is_some() {
                        continue;
                    }
                    // Unknown unicast: ports that take it, and a port pinned to that
                    // address that has not sent yet.
                    if d.dest == FLOOD_UNKNOWN && !p.policy.takes_unicast(&d.dst) {
                        continue;
                    }
                    if self.output(t, src, d) == Sent::NoBuffer {
                        self.no_buffer(t, Wait::Never);
                    }
                }
            }
            t => {
                let t = t as usize;
                let Some(p) = self.ports.get(t).and_then(|p| p.as_ref()) else { return false };
                if p.diag.is_none()
                    && p.policy.takes_unicast(&d.dst)
                    && self.output(t, src, d) == Sent::NoBuffer
                {
                    return self.no_buffer(t, wait);
                }
            }
        }
        false
    }

    /// A frame found no receive buffer at the port in slot `t`: hold it (true) when
    /// allowed and the port is not known to be stalled, else drop and count it. A
    /// frame that waited past the bound marks the port stalled: until it takes a
    /// frame again, frames for it are dropped at once instead of holding up their
    /// senders.
    #[cold]
    fn no_buffer(&mut self, t: usize, wait: Wait) -> bool {
        let Some(p) = self.ports[t].as_mut() else { return false };
        if let Io::Vhost(v) = &mut p.io {
            match wait {
                Wait::Allowed if !v.stalled => return true,
                Wait::Expired => v.stalled = true,
                _ => {}
            }
        }
        PortStats::add(&p.stats.drop_no_rx_buffer, 1);
        false
    }

    /// Writes one frame to the port in slot `t` (with its offload work, if it has any).
    #[inline]
    fn output(&mut self, t: usize, src: &Src, d: &Dec) -> Sent {
        match self.plan {
            None => self.output_with(t, src, d, None),
            Some(plan) => self.output_offload(t, src, d, plan),
        }
    }

    /// A frame with offload work for the port in slot `t`: passed on with its header
    /// when the port takes that offload, else finished in software first.
    #[cold]
    fn output_offload(&mut self, t: usize, src: &Src, d: &Dec, plan: TxPlan) -> Sent {
        let Some(p) = self.ports[t].as_ref() else { return Sent::Done };
        let accept = match &p.io {
            Io::Vhost(v) => v.accept,
            Io::Tap(_) => Accept::ALL,
        };
        let eg = p.policy.egress(d.vlan);
        if eg == Egress::Drop {
            return Sent::Done;
        }
        let Src::Buf(frame) = *src else { return Sent::Done };
        if accept.takes(&plan) {
            let delta = Out::new(d, eg).len as isize - d.flen as isize;
            let sent = self.output_with(t, src, d, Some(pass_header(&self.vh, delta)));
            if sent == Sent::Done && matches!(plan, TxPlan::Gso(_)) {
                self.count(t, |s| &s.gso_passed, 1);
            }
            return sent;
        }
        let mut seg = std::mem::take(&mut self.segbuf);
        let sent = match plan {
            TxPlan::Plain => self.output_with(t, src, d, None),
            TxPlan::Csum { start, offset } => {
                let f = &mut seg[..frame.len()];
                f.copy_from_slice(frame);
                match netproto::csum::complete_partial(f, start, offset) {
                    Ok(_) => {
                        self.count(t, |s| &s.csum_completed, 1);
                        self.output_with(t, &Src::Buf(f), d, None)
                    }
                    Err(_) => {
                        self.count(t, |s| &s.drop_bad_header, 1);
                        Sent::Done
                    }
                }
            }
            TxPlan::Gso(g) => {
                let mut lost = 0u64;
                let r = netproto::gso::segment(frame, &g, g.mss, &mut seg, |piece| {
                    let dp = Dec { flen: piece.len() as u32, ..*d };
                    if self.output_with(t, &Src::Buf(piece), &dp, None) == Sent::NoBuffer {
                        lost += 1;
                    }
                });
                match r {
                    Ok(n) => {
                        self.count(t, |s| &s.gso_segmented, 1);
                        self.count(t, |s| &s.gso_segments, n as u64);
                        self.count(t, |s| &s.drop_no_rx_buffer, lost);
                    }
                    Err(_) => self.count(t, |s| &s.drop_bad_header, 1),
                }
                // Segments are never held: the ones without room are dropped.
                Sent::Done
            }
        };
        self.segbuf = seg;
        sent
    }

    /// Writes one frame to the port in slot `t` behind `hdr` (None: no offload).
    #[inline]
    fn output_with(&mut self, t: usize, src: &Src, d: &Dec, hdr: Option<NetHdr>) -> Sent {
        let Some(p) = self.ports[t].as_mut() else { return Sent::Done };
        let eg = p.policy.egress(d.vlan);
        if eg == Egress::Drop {
            return Sent::Done;
        }
        let out = Out::new(d, eg);
        let stats = &*p.stats;
        match &mut p.io {
            Io::Vhost(v) => {
                let live = v.rx_live.len();
                if live == 0 {
                    // The guest has not started a receive queue: nothing to wait for.
                    PortStats::add(&stats.drop_no_rx_buffer, 1);
                    return Sent::Done;
                }
                let pair =
                    if live == 1 { v.rx_live[0] } else { v.rx_live[rx_queue_of(d.hash, live)] } as usize;
                let ri = 2 * pair;
                let (hdr_len, mrg) = (v.hdr_len, v.mrg);
                let Some(r) = v.rings.get_mut(ri).and_then(|r| r.as_mut()) else { return Sent::Done };
                if !r.open {
                    let n = match r.q.pop(&mut r.burst, self.burst) {
                        Ok(n) => n,
                        Err(e) => {
                            r.fail(&p.name, ri, e, stats);
                            v.refresh_live();
                            PortStats::add(&stats.drop_no_rx_buffer, 1);
                            return Sent::Done;
                        }
                    };
                    for i in 0..PREFETCH_AHEAD.min(n) {
                        r.burst.chain(i).prefetch(2);
                    }
                    (r.open, r.n, r.i, r.max, r.pkts, r.bytes) = (true, n, 0, self.burst, 0, 0);
                    self.opened.push((t as u16, ri as u16));
                }
                let need = hdr_len + out.len;
                let mut k = pick_rx(&r.burst, r.i, need, mrg);
                if k.is_none() && r.n == r.max {
                    // The buffers popped so far are used up, or too few for one large
                    // frame (64 KiB in 1.5 KiB buffers takes 44): publish what was used
                    // and take up to RX_BURST_MAX more.
                    r.q.rewind(&r.burst, r.i);
                    if r.i > 0 {
                        r.q.publish_used();
                    }
                    match r.q.pop(&mut r.burst, RX_BURST_MAX) {
                        Ok(n) => (r.n, r.i, r.max) = (n, 0, RX_BURST_MAX),
                        Err(e) => {
                            (r.n, r.i) = (0, 0);
                            r.fail(&p.name, ri, e, stats);
                            v.refresh_live();
                            PortStats::add(&stats.drop_no_rx_buffer, 1);
                            return Sent::Done;
                        }
                    }
                    k = pick_rx(&r.burst, 0, need, mrg);
                }
                match k {
                    None => return Sent::NoBuffer,
                    Some(0) => {
                        // A buffer that can never hold the frame goes back empty.
                        let tok = r.burst.chain(r.i).token();
                        r.q.add_used(tok, 0);
                        r.i += 1;
                        PortStats::add(&stats.drop_rx_buffer_small, 1);
                    }
                    Some(k) => {
                        write_chains(r, k, hdr_len, src, &out, hdr.unwrap_or_default());
                        r.pkts += 1;
                        r.bytes += out.len as u64;
                        v.stalled = false;
                    }
                }
                Sent::Done
            }
            Io::Tap(tap) => {
                // The tap takes the frame behind a zeroed virtio-net header (no offload
                // flags): one write, the kernel copies it.
                let buf = &mut tap.out[..HDR + out.len];
                buf[..HDR].copy_from_slice(&hdr.unwrap_or_default().to_bytes());
                let mut at = HDR;
                for pc in &out.pieces {
                    let dst = &mut buf[at..at + pc.len];
                    if pc.tag {
                        dst.copy_from_slice(&out.tag[..pc.len]);
                    } else {
                        src.read(pc.off, dst);
                    }
                    at += pc.len;
                }
                match (&tap.f).write(buf) {
                    // A tap takes a frame whole or not at all.
                    Ok(w) if w == buf.len() => {
                        PortStats::add(&stats.tx_packets, 1);
                        PortStats::add(&stats.tx_bytes, out.len as u64);
                        let q = stats.queue(0);
                        PortStats::add(&q.tx_packets, 1);
                        PortStats::add(&q.tx_bytes, out.len as u64);
                    }
                    _ => PortStats::add(&stats.drop_tap_write, 1),
                }
                Sent::Done
            }
        }
    }

    /// Publishes every receive ring filled during the burst, with one notification
    /// decision each.
    fn close_outputs(&mut self) {
        for k in 0..self.opened.len() {
            let (t, ri) = self.opened[k];
            let Some(p) = self.ports.get_mut(t as usize).and_then(|p| p.as_mut()) else { continue };
            let Io::Vhost(v) = &mut p.io else { continue };
            let Some(r) = v.rings.get_mut(ri as usize).and_then(|r| r.as_mut()) else { continue };
            if !r.open {
                continue;
            }
            r.open = false;
            r.q.rewind(&r.burst, r.i);
            if r.i > 0 {
                r.q.publish_used();
                r.notify(&p.stats, r.pkts as usize);
            }
            let st = &*p.stats;
            PortStats::add(&st.tx_packets, r.pkts);
            PortStats::add(&st.tx_bytes, r.bytes);
            let q = st.queue(ri as usize / 2);
            PortStats::add(&q.tx_packets, r.pkts);
            PortStats::add(&q.tx_bytes, r.bytes);
        }
        self.opened.clear();
    }

    /// A frame with offload work, in host memory: validated against what its sender
    /// negotiated, then switched with that work done per destination. Returns true
    /// when it must wait for a full receiver (see `deliver`).
    #[cold]
    fn switch_offloaded(
        &mut self,
        s: usize,
        (policy, stats, offloads): (&PortPolicy, &PortStats, &TxOffloads),
        frame: &[u8],
        hdr: &NetHdr,
        cache: &mut Cache,
        wait: Wait,
    ) -> bool {
        let plan = match netproto::gso::validate_tx(hdr, frame, offloads) {
            Ok(p) => p,
            Err(_) => {
                PortStats::add(&stats.drop_bad_header, 1);
                return false;
            }
        };
        let src = Src::Buf(frame);
        match self.classify(s, policy, &src, frame.len(), cache) {
            Verdict::Forward(d) => {
                self.plan = Some(plan);
                self.vh = *hdr;
                let blocked = self.deliver(s, &src, &d, wait);
                self.plan = None;
                blocked
            }
            ref v => {
                Self::refuse(stats, v);
                false
            }
        }
    }

    /// Coalescing options toward the port in slot `t`, when it takes coalesced TCP
    /// segments (a vhost-user port that negotiated GUEST_CSUM and GUEST_TSO4/6).
    fn gro_opts(&self, t: u16) -> Option<GroOpts> {
        let p = self.ports.get(t as usize)?.as_ref()?;
        let Io::Vhost(v) = &p.io else { return None };
        let a = v.accept;
        (p.diag.is_none() && a.csum && (a.tso4 || a.tso6) && v.mrg).then_some(GroOpts {
            tso4: a.tso4,
            tso6: a.tso6,
            ecn: a.ecn,
            rsc_ext: a.rsc_ext,
            full_csum: false,
            max_segs: 44,
        })
    }

    /// Delivers what the coalescer hands out: a merged frame (with its segmentation
    /// header) or a segment that could not merge, as it came.
    fn gro_out(&mut self, t: usize, d: &Dec, h: &NetHdr, f: &[u8]) {
        let Some(p) = self.ports[t].as_ref() else { return };
        let eg = p.policy.egress(d.vlan);
        if eg == Egress::Drop || !p.policy.takes_unicast(&d.dst) {
            return;
        }
        let dp = Dec { flen: f.len() as u32, ..*d };
        let hdr = if h.gso_type != 0 || h.flags != 0 {
            let delta = Out::new(&dp, eg).len as isize - dp.flen as isize;
            if h.gso_type != 0 && h.gso_size != 0 {
                let payload = f.len().saturating_sub(h.hdr_len as usize);
                self.count(t, |s| &s.gro_frames, 1);
                self.count(t, |s| &s.gro_segments, payload.div_ceil(h.gso_size as usize) as u64);
            }
            let mut out = pass_header(h, delta);
            if h.flags & HDR_F_RSC_INFO != 0 {
                // RSC_EXT: csum_start and csum_offset carry the coalesced segment and
                // duplicate ACK counts (virtio 1.x 5.1.6.4), not offsets.
                (out.flags, out.csum_start, out.csum_offset) = (h.flags, h.csum_start, h.csum_offset);
            }
            Some(out)
        } else {
            None
        };
        if self.output_with(t, &Src::Buf(f), &dp, hdr) == Sent::NoBuffer {
            self.count(t, |s| &s.drop_no_rx_buffer, 1);
        }
    }

    /// Adds `n` to a counter of the port in slot `t`.
    #[inline]
    fn count(&self, t: usize, counter: impl Fn(&PortStats) -> &AtomicU64, n: u64) {
        if let Some(Some(p)) = self.ports.get(t) {
            PortStats::add(counter(&p.stats), n);
        }
    }

    /// Hands out whatever the coalescer holds.
    #[inline(always)]
    fn gro_flush(&mut self, gro: &mut Option<(u16, Dec, Gro<'_>)>) {
        if gro.is_some() {
            self.gro_flush_held(gro);
        }
    }

    fn gro_flush_held(&mut self, gro: &mut Option<(u16, Dec, Gro<'_>)>) {
        if let Some((t, d, mut g)) = gro.take() {
            let t = t as usize;
            g.flush(&mut |h, f| self.gro_out(t, &d, h, f));
        }
    }

    /// Counts a frame that classification refused.
    #[cold]
    fn refuse(stats: &PortStats, v: &Verdict) {
        match v {
            Verdict::Bad => PortStats::add(&stats.drop_bad_frame, 1),
            Verdict::Spoofed => PortStats::add(&stats.drop_spoofed, 1),
            Verdict::Vlan => PortStats::add(&stats.drop_vlan, 1),
            Verdict::Forward(_) => {}
        }
    }

    /// One burst from each transmit ring of the vhost-user port in slot `s`; returns
    /// frames taken.
    pub(crate) fn forward_vhost(&mut self, s: usize) -> usize {
        // The sender leaves its slot while its frames are switched, so it is never
        // its own destination and its rings can be borrowed next to the receivers'.
        let Some(mut sp) = self.ports[s].take() else { return 0 };
        let mut moved = 0;
        if let Io::Vhost(v) = &mut sp.io {
            let hdr_len = v.hdr_len;
            let offloads = v.tx_offloads;
            let has_offloads = offloads != TxOffloads::default();
            // Coalescing only helps senders that cannot send large segments themselves.
            let gro_src = !offloads.tso4 && !offloads.tso6;
            for pair in 0..v.rings.len().div_ceil(2) {
                let ti = 2 * pair + 1;
                let Some(tx) = v.rings.get_mut(ti).and_then(|r| r.as_mut()) else { continue };
                if tx.broken || !tx.q.has_avail() {
                    continue;
                }
                // Start loading the ring lines this burst will touch, here and at the
                // receive ring the previous burst went to, so that those cache misses
                // (lines the other side wrote last) overlap instead of queueing.
                tx.q.prefetch_next();
                if let Some((t, ri)) = tx.last_out {
                    self.prefetch_output(t as usize, ri as usize);
                }
                let n = match tx.q.pop(&mut tx.burst, self.burst) {
                    Ok(n) => n,
                    Err(e) => {
                        tx.fail(&sp.name, ti, e, &sp.stats);
                        continue;
                    }
                };
                if n == 0 {
                    continue;
                }
                // The lines the first read below touches: the header and the frame's
                // first bytes, or, from a sender without offloads, whose header is never
                // looked at, the frame's first bytes only (a header in a line of its own,
                // as DPDK's virtio PMD lays it out in the mbuf headroom, is then never
                // loaded).
                let (pf_off, pf_len) = if has_offloads { (0, hdr_len + PEEK) } else { (hdr_len, PEEK) };
                for i in 0..PREFETCH_AHEAD.min(n) {
                    tx.burst.chain(i).prefetch_read(pf_off, pf_len);
                }
                let mut cache = Cache::new();
                let mut bytes = 0u64;
                let mut done = 0;
                let mut sc = std::mem::take(&mut self.scratch);
                let mut gbuf = std::mem::take(&mut self.grobuf);
                let mut gro: Option<(u16, Dec, Gro<'_>)> = None;
                while done < n {
                    let i = done;
                    if i + PREFETCH_AHEAD < n {
                        tx.burst.chain(i + PREFETCH_AHEAD).prefetch_read(pf_off, pf_len);
                    }
                    let c = tx.burst.chain(i);
                    let total = c.read_len() as usize;
                    // Received bytes count every frame taken, like received packets.
                    let flen = total.saturating_sub(hdr_len);
                    if flen > LARGE && i + 1 < n {
                        // A large frame: the next one's lines past its first, while
                        // this one is copied.
                        let c1 = tx.burst.chain(i + 1);
                        let l1 = (c1.read_len() as usize).min(MAX_FRAME + hdr_len);
                        c1.prefetch_read(hdr_len + PEEK, l1.saturating_sub(hdr_len + PEEK));
                    }
                    // A frame may wait for its destination's buffers up to the bound
                    // (backpressure); past it, it is dropped.
                    let wait = match tx.held_since {
                        _ if self.backpressure.is_zero() => Wait::Never,
                        None => Wait::Allowed,
                        Some(t) if t.elapsed() < self.backpressure => Wait::Allowed,
                        Some(_) => Wait::Expired,
                    };
                    // One read for the virtio-net header and the frame's first bytes.
                    // Without offloads the header is not read at all (virtio 1.x 5.1.6.2:
                    // its fields mean nothing then, and num_buffers is unused on transmit).
                    let mut peek = [0u8; HDR + PEEK];
                    let mut hdr = NetHdr::default();
                    let h = if has_offloads {
                        let got = c.read_at(0, &mut peek[..hdr_len + flen.min(PEEK)]);
                        if hdr_len >= 10 {
                            let mut b = [0u8; HDR];
                            b[..hdr_len.min(HDR)].copy_from_slice(&peek[..hdr_len.min(HDR)]);
                            hdr = NetHdr::parse(&b);
                        }
                        &peek[hdr_len.min(got)..got]
                    } else {
                        let got = c.read_at(hdr_len, &mut peek[..flen.min(PEEK)]);
                        &peek[..got]
                    };
                    let blocked = if total < hdr_len + 14 || flen > MAX_FRAME {
                        Self::refuse(&sp.stats, &Verdict::Bad);
                        false
                    } else if hdr.flags != 0 || hdr.gso_type != 0 {
                        // Offload work: the frame is copied out once, validated, then
                        // switched from the copy.
                        self.gro_flush(&mut gro);
                        c.read_at(hdr_len, &mut sc[..flen]);
                        self.switch_offloaded(
                            s,
                            (&sp.policy, &sp.stats, &offloads),
                            &sc[..flen],
                            &hdr,
                            &mut cache,
                            wait,
                        )
                    } else {
                        let src = Src::Chain(c, hdr_len);
                        match self.classify_peek(s, &sp.policy, h, flen, &mut cache) {
                            Verdict::Forward(d) if gro_src && d.tcp && d.dest < DROP => {
                                // A TCP segment from a sender that cannot segment
                                // itself, to a port that takes large frames: coalesce
                                // (GRO). Segments that do not merge leave unchanged.
                                // One flow, one way out at a time: anything else
                                // first hands out what was held.
                                let same = |g: &Dec| {
                                    (g.dest, g.vlan, g.tci, g.tag_in, g.hash, g.dst)
                                        == (d.dest, d.vlan, d.tci, d.tag_in, d.hash, d.dst)
                                };
                                if gro.as_ref().is_some_and(|(_, g, _)| !same(g)) {
                                    self.gro_flush(&mut gro);
                                }
                                if gro.is_none() {
                                    if let Some(o) = self.gro_opts(d.dest) {
                                        gro = Some((d.dest, d, Gro::new(&mut gbuf, o)));
                                    }
                                }
                                match gro.as_mut() {
                                    Some((t, gd, g)) => {
                                        let (t, gd) = (*t as usize, *gd);
                                        c.read_at(hdr_len, &mut sc[..flen]);
                                        g.push(&NetHdr::default(), &sc[..flen], &mut |h, f| {
                                            self.gro_out(t, &gd, h, f)
                                        });
                                        false
                                    }
                                    None => self.deliver(s, &src, &d, wait),
                                }
                            }
                            Verdict::Forward(d) => {
                                self.gro_flush(&mut gro);
                                self.deliver(s, &src, &d, wait)
                            }
                            ref v => {
                                Self::refuse(&sp.stats, v);
                                false
                            }
                        }
                    };
                    if blocked {
                        self.gro_flush(&mut gro);
                        if tx.held_since.is_none() {
                            tx.held_since = Some(Instant::now());
                            PortStats::add(&sp.stats.backpressure, 1);
                        }
                        break;
                    }
                    tx.held_since = None;
                    let flen = flen as u64;
                    bytes += flen;
                    tx.q.add_used(c.token(), 0);
                    done += 1;
                }
                self.gro_flush(&mut gro);
                self.scratch = sc;
                self.grobuf = gbuf;
                tx.last_out = self.opened.last().copied();
                self.close_outputs();
                // Frames held for a full receiver stay in the sender's ring, in order.
                tx.q.rewind(&tx.burst, done);
                if done > 0 {
                    tx.q.publish_used();
                    tx.notify(&sp.stats, done);
                    sp.stats.count_rx(pair, done, bytes);
                }
                moved += done;
            }
        }
        self.ports[s] = Some(sp);
        moved
    }

    /// One burst of reads from the tap port in slot `s`; returns frames taken.
    pub(crate) fn forward_tap(&mut self, s: usize) -> usize {
        let Some(mut sp) = self.ports[s].take() else { return 0 };
        let mut n = 0;
        if let Io::Tap(t) = &mut sp.io {
            while n < BURST {
                match (&t.f).read(&mut t.bufs[n]) {
                    Ok(len) => {
                        t.lens[n] = len;
                        n += 1;
                    }
                    Err(_) => break,
                }
            }
            if n > 0 {
                t.quiet = 0;
                let mut cache = Cache::new();
                let mut bytes = 0u64;
                for i in 0..n {
                    let len = t.lens[i].min(TAP_BUF);
                    bytes += len.saturating_sub(HDR) as u64;
                    if len < HDR + 14 {
                        Self::refuse(&sp.stats, &Verdict::Bad);
                        continue;
                    }
                    let frame = &t.bufs[i][HDR..len];
                    let mut hb = [0u8; HDR];
                    hb.copy_from_slice(&t.bufs[i][..HDR]);
                    let hdr = NetHdr::parse(&hb);
                    // A tap read cannot be given back: frames from it never wait.
                    if hdr.flags != 0 || hdr.gso_type != 0 {
                        let ctx = (&sp.policy, &*sp.stats, &t.offloads);
                        self.switch_offloaded(s, ctx, frame, &hdr, &mut cache, Wait::Never);
                        continue;
                    }
                    let src = Src::Buf(frame);
                    match self.classify(s, &sp.policy, &src, len - HDR, &mut cache) {
                        Verdict::Forward(d) => {
                            self.deliver(s, &src, &d, Wait::Never);
                        }
                        ref v => Self::refuse(&sp.stats, v),
                    }
                }
                self.close_outputs();
                sp.stats.count_rx(0, n, bytes);
            }
        }
        self.ports[s] = Some(sp);
        n
    }
}

/// Writes a frame into `k` receive chains from `r.i` on: the virtio-net header `hdr`
/// (with num_buffers = k, virtio 1.x 5.1.6.4) then the pieces of `out`.
#[inline]
fn write_chains(r: &mut Ring, k: usize, hdr_len: usize, src: &Src, out: &Out, mut hdr: NetHdr) {
    hdr.num_buffers = k as u16;
    let hdr = hdr.to_bytes();
    if k == 1 && out.pieces[1].len == 0 && out.pieces[2].len == 0 && !out.pieces[0].tag {
        // One receive buffer, the frame unchanged in one piece: header and frame go in
        // with two direct copies when both sides are single buffers.
        if r.i + PREFETCH_AHEAD < r.n {
            r.burst.chain(r.i + PREFETCH_AHEAD).prefetch(2);
        }
        if out.len > LARGE && r.i + 1 < r.n {
            // A large frame: the next buffer's lines past its first two, for the next
            // frame of this size.
            let lines = (hdr_len + out.len).div_ceil(64) + 1;
            r.burst.chain(r.i + 1).prefetch_write_lines(2, lines);
        }
        let pc = out.pieces[0];
        let d = r.burst.chain(r.i);
        let put = match src {
            Src::Chain(c, h) => d.put_copy(&hdr[..hdr_len], c, h + pc.off, pc.len),
            Src::Buf(b) => b.get(pc.off..pc.off + pc.len).and_then(|b| d.put_bytes(&hdr[..hdr_len], b)),
        };
        if let Some(w) = put {
            r.q.add_used(d.token(), w as u32);
            r.i += 1;
            return;
        }
    }
    let (mut pi, mut poff) = (0usize, 0usize);
    for j in 0..k {
        if r.i + j + PREFETCH_AHEAD < r.n {
            r.burst.chain(r.i + j + PREFETCH_AHEAD).prefetch(2);
        }
        let d = r.burst.chain(r.i + j);
        let cap = d.write_len() as usize;
        let mut off = if j == 0 { d.write_at(0, &hdr[..hdr_len]) } else { 0 };
        while off < cap && pi < out.pieces.len() {
            let pc = out.pieces[pi];
            let n = (pc.len - poff).min(cap - off);
            let w = if pc.tag {
                d.write_at(off, &out.tag[poff..poff + n])
            } else {
                src.copy_into(&d, off, pc.off + poff, n)
            };
            off += w;
            poff += w;
            if poff == pc.len {
                pi += 1;
                poff = 0;
            } else if w < n {
                break;
            }
        }
        r.q.add_used(d.token(), off as u32);
    }
    r.i += k;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(tag_in: u8, tci: u16, vlan: u16, flen: u32) -> Dec {
        Dec { tag_in, tci, vlan, flen, ..Default::default() }
    }

    #[test]
    fn out_pieces() {
        // Untagged in, untagged out: one piece.
        let o = Out::new(&dec(0, 0, 0, 60), Egress::Untagged);
        assert_eq!((o.len, o.pieces[0].len, o.pieces[1].len), (60, 60, 0));
        // Tag inserted.
        let o = Out::new(&dec(0, 0, 10, 60), Egress::Tagged);
        assert_eq!(o.len, 64);
        assert_eq!(o.tag, [0x81, 0, 0, 10]);
        assert_eq!((o.pieces[2].off, o.pieces[2].len), (12, 48));
        // Tag stripped.
        let o = Out::new(&dec(4, 0x200a, 10, 64), Egress::Untagged);
        assert_eq!(o.len, 60);
        assert_eq!((o.pieces[1].len, o.pieces[2].off, o.pieces[2].len), (0, 16, 48));
        // Same tag both sides (priority kept): one piece.
        let o = Out::new(&dec(4, 0x200a, 10, 64), Egress::Tagged);
        assert_eq!((o.len, o.pieces[0].len), (64, 64));
        // Priority tag in, tagged out with the port's VLAN and the priority kept.
        let o = Out::new(&dec(4, 0x6000, 7, 64), Egress::Tagged);
        assert_eq!(o.tag, [0x81, 0, 0x60, 7]);
        assert_eq!(o.len, 64);
    }

    #[test]
    fn flow_hash_separates_flows_and_keeps_one() {
        let mut f = vec![0u8; 60];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[23] = 6;
        f[26..34].copy_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        let mut seen = std::collections::HashSet::new();
        for port in 0..64u16 {
            f[34..36].copy_from_slice(&port.to_be_bytes());
            let a = flow_hash(&f);
            assert_eq!(a, flow_hash(&f));
            // The guest's own RSS (Toeplitz, default key) computes the same value.
            let ip = |o: usize| [f[o], f[o + 1], f[o + 2], f[o + 3]];
            let want = netproto::rss::DEFAULT_TOEPLITZ.hash_v4(ip(26), ip(30), Some((port, 0)));
            assert_eq!(a, want);
            seen.insert(rx_queue_of(a, 4));
        }
        assert_eq!(seen.len(), 4, "64 flows reach all four queues");
        // Short or odd frames hash without panicking; non-IP frames hash their addresses.
        assert_eq!(flow_hash(&f[..20]), flow_hash(&f[..20]));
        let _ = flow_hash(&f[..5]);
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let mut arp2 = arp.clone();
        arp2[20] ^= 1;
        assert_eq!(flow_hash(&arp), flow_hash(&arp2));
    }
}
