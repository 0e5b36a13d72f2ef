//! Receive coalescing: in-order TCP segments of one flow merged into one large frame
//! handed to a driver that negotiated VIRTIO_NET_F_GUEST_TSO4/6, with the header of
//! virtio 1.x 5.1.6.4 ("Processing of Incoming Packets") and, with
//! VIRTIO_NET_F_RSC_EXT, the coalescing statistics of 5.1.6.4.1.
//!
//! A [`Gro`] context lives for one burst. Frames are pushed in order; each is either
//! appended to the flow being built or, when it cannot be, the flow is flushed first.
//! Frames that are not candidates pass through byte-for-byte with their own header, and
//! the order of frames on output is the order of input: one flow is built at a time.
//!
//! Merge rules (those of Linux `tcp_gro_receive` and of the receive segment coalescing
//! rules NDIS documents, restricted so that [`crate::gso::segment`] of the result gives
//! back the original segments):
//! - candidates: TCP over IPv4 without options and not fragmented, or over IPv6 without
//!   extension headers; no bytes after the IP packet; a non-empty payload; ACK set and
//!   none of SYN, RST, URG, FIN; CWR only when the driver takes GSO_ECN; no GSO type and
//!   no RSC_INFO in the incoming header; a checksum known good (NEEDS_CSUM at the TCP
//!   checksum, or DATA_VALID) or verified here; for IPv4 a correct header checksum.
//! - same flow: identical Ethernet header and VLAN tag; identical IP header except the
//!   length, the identification (which must be the previous one plus one) and the
//!   IPv4 checksum; identical TCP header except the sequence number (which must follow
//!   on), the checksum and PSH; CWR only on the first segment.
//! - sizes: the first segment's payload is the MSS; later ones carry at most that, and
//!   one that is shorter, or carries PSH, ends the merge. The result's IP length fits
//!   16 bits and the frame fits the caller's buffer.
//!
//! Duplicate ACKs are never absorbed: pure ACKs carry no payload, so they pass
//! through (after a flush, keeping the order) and the RSC duplicate-ACK count is
//! always zero, which is what the NDIS coalescing rules ask of it.

use crate::csum;
use crate::parse::{self, tcp_flags, Headers, Ip, Transport, TCP_CSUM_OFFSET};
use crate::virtio_net::{
    features, NetHdr, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, HDR_F_DATA_VALID, HDR_F_NEEDS_CSUM,
    HDR_F_RSC_INFO,
};

/// What the receiving driver negotiated, and how to fill the checksum of merged frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroOpts {
    /// VIRTIO_NET_F_GUEST_TSO4: merge TCP over IPv4.
    pub tso4: bool,
    /// VIRTIO_NET_F_GUEST_TSO6: merge TCP over IPv6.
    pub tso6: bool,
    /// VIRTIO_NET_F_GUEST_ECN: merged frames may carry CWR (flagged GSO_ECN).
    pub ecn: bool,
    /// VIRTIO_NET_F_RSC_EXT: report RSC_INFO with the segment and duplicate-ACK counts
    /// in `csum_start` and `csum_offset`.
    pub rsc_ext: bool,
    /// Compute the full TCP checksum and flag DATA_VALID instead of leaving the
    /// pseudo-header sum with NEEDS_CSUM. The specification asks for NEEDS_CSUM with
    /// every GSO frame (5.1.6.4.1), so this is for consumers other than a virtio
    /// driver, or drivers known to accept a completed checksum.
    pub full_csum: bool,
    /// Most segments in one merged frame.
    pub max_segs: u16,
}

impl Default for GroOpts {
    fn default() -> Self {
        Self { tso4: true, tso6: true, ecn: true, rsc_ext: false, full_csum: false, max_segs: 64 }
    }
}

impl GroOpts {
    /// Options for a driver that negotiated the feature word `f`. Without
    /// VIRTIO_NET_F_GUEST_CSUM nothing is merged (GUEST_TSO4/6 require it, 5.1.3.1).
    pub fn from_features(f: u64) -> Self {
        let csum = f & features::GUEST_CSUM != 0;
        Self {
            tso4: csum && f & features::GUEST_TSO4 != 0,
            tso6: csum && f & features::GUEST_TSO6 != 0,
            ecn: f & features::GUEST_ECN != 0,
            rsc_ext: f & features::RSC_EXT != 0,
            ..Self::default()
        }
    }
}

/// The flow being built; its first segment and the appended payloads are in the
/// context's buffer.
#[derive(Debug, Clone, Copy)]
struct Flow {
    /// Header the first segment came with (for a flow that stays one segment).
    first_hdr: NetHdr,
    /// Layout of the first segment (and of the merged frame, lengths aside).
    h: Headers,
    /// TCP flags of the first segment.
    flags: u8,
    /// Bytes used in the buffer.
    len: usize,
    /// Sequence number the next segment must carry.
    next_seq: u32,
    /// IPv4 identification the next segment must carry.
    next_id: u16,
    /// Payload length of the first segment.
    mss: usize,
    /// Segments merged.
    segs: u16,
    /// PSH seen on the last segment (which ends the merge).
    psh: bool,
}

/// A candidate segment.
struct Cand {
    h: Headers,
    flags: u8,
    seq: u32,
}

/// A per-burst coalescing context writing merged frames into a caller-provided buffer.
/// A buffer of 65535 + 18 bytes (largest IP packet behind a tagged Ethernet header)
/// never limits a merge.
#[derive(Debug)]
pub struct Gro<'b> {
    buf: &'b mut [u8],
    opts: GroOpts,
    flow: Option<Flow>,
}

impl<'b> Gro<'b> {
    /// A context merging into `buf`.
    pub fn new(buf: &'b mut [u8], opts: GroOpts) -> Self {
        Self { buf, opts, flow: None }
    }

    /// True when a flow is being built (a [`Gro::flush`] would emit something).
    pub fn pending(&self) -> bool {
        self.flow.is_some()
    }

    /// Takes one received frame with the header it came with. Whatever becomes ready
    /// (a flushed flow, this frame passing through) is handed to `out` in order.
    pub fn push<F: FnMut(&NetHdr, &[u8])>(&mut self, hdr: &NetHdr, frame: &[u8], out: &mut F) {
        let Some(c) = self.candidate(hdr, frame) else {
            self.flush(out);
            out(hdr, frame);
            return;
        };
        if let Some(flow) = self.flow {
            if self.can_append(&flow, &c, frame) {
                self.append(flow, &c, hdr, frame, out);
                return;
            }
            self.flush(out);
        }
        // Start a flow, unless nothing could follow this segment.
        let ends = c.flags & tcp_flags::PSH != 0 || self.opts.max_segs <= 1;
        let Some(dst) = self.buf.get_mut(..frame.len()).filter(|_| !ends) else {
            out(hdr, frame);
            return;
        };
        dst.copy_from_slice(frame);
        let next_id = match c.h.ip {
            Ip::V4(v) => v.id.wrapping_add(1),
            Ip::V6(_) => 0,
        };
        let mss = c.h.payload_len();
        self.flow = Some(Flow {
            first_hdr: *hdr,
            h: c.h,
            flags: c.flags,
            len: frame.len(),
            next_seq: c.seq.wrapping_add(mss as u32),
            next_id,
            mss,
            segs: 1,
            psh: false,
        });
    }

    /// Emits the flow being built, if any.
    pub fn flush<F: FnMut(&NetHdr, &[u8])>(&mut self, out: &mut F) {
        let Some(flow) = self.flow.take() else {
            return;
        };
        let Some(frame) = self.buf.get_mut(..flow.len) else {
            return;
        };
        if flow.segs == 1 {
            out(&flow.first_hdr, frame);
            return;
        }
        // `finish` cannot fail for a flow built by `push` (lengths were checked as
        // segments were appended); if it did, a half-fixed frame is not emitted.
        if let Some(hdr) = finish(frame, &flow, &self.opts) {
            out(&hdr, frame);
        }
    }

    /// Checks whether `frame` could be merged at all, verifying its checksums if its
    /// header does not vouch for them.
    fn candidate(&self, hdr: &NetHdr, frame: &[u8]) -> Option<Cand> {
        if hdr.gso_type != GSO_NONE || hdr.flags & HDR_F_RSC_INFO != 0 {
            return None;
        }
        let h = parse::parse(frame).ok()?;
        let Transport::Tcp(t) = h.transport else {
            return None;
        };
        let ok_ip = match h.ip {
            Ip::V4(v) => self.opts.tso4 && v.header_len == 20,
            Ip::V6(v) => self.opts.tso6 && v.ext_len == 0,
        };
        if !ok_ip || h.end != frame.len() || h.payload_len() == 0 {
            return None;
        }
        let bad = tcp_flags::SYN | tcp_flags::RST | tcp_flags::URG | tcp_flags::FIN;
        if t.flags & tcp_flags::ACK == 0 || t.flags & bad != 0 {
            return None;
        }
        if t.flags & tcp_flags::CWR != 0 && !self.opts.ecn {
            return None;
        }
        if !h.ip_checksum_ok(frame) {
            return None;
        }
        let partial = hdr.flags & HDR_F_NEEDS_CSUM != 0;
        if partial && (usize::from(hdr.csum_start) != h.l4 || usize::from(hdr.csum_offset) != TCP_CSUM_OFFSET)
        {
            return None;
        }
        let trusted = partial || hdr.flags & HDR_F_DATA_VALID != 0;
        if !trusted && !h.l4_checksum_ok(frame) {
            return None;
        }
        Some(Cand { h, flags: t.flags, seq: t.seq })
    }

    fn can_append(&self, flow: &Flow, c: &Cand, frame: &[u8]) -> bool {
        let h = &flow.h;
        if c.h.l4 != h.l4 || c.h.payload != h.payload || flow.segs >= self.opts.max_segs {
            return false;
        }
        let pl = c.h.payload_len();
        if pl > flow.mss || flow.len + pl > self.buf.len() {
            return false;
        }
        let Some(first) = self.buf.get(..h.payload) else {
            return false;
        };
        let same = |r: std::ops::Range<usize>| match (first.get(r.clone()), frame.get(r)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        };
        let (l3, l4) = (h.l3, h.l4);
        let ip_ok = match (h.ip, c.h.ip) {
            (Ip::V4(_), Ip::V4(n)) => {
                flow.len - l3 + pl <= 65535
                    && n.id == flow.next_id
                    && same(l3..l3 + 2)
                    && same(l3 + 6..l3 + 10)
                    && same(l3 + 12..l4)
            }
            (Ip::V6(_), Ip::V6(_)) => {
                flow.len - l3 - 40 + pl <= 65535 && same(l3..l3 + 4) && same(l3 + 6..l4)
            }
            _ => false,
        };
        // L2 header, ports, ack, data offset, window, urgent pointer, options.
        ip_ok
            && same(0..l3)
            && c.seq == flow.next_seq
            && same(l4..l4 + 4)
            && same(l4 + 8..l4 + 13)
            && same(l4 + 14..l4 + 16)
            && same(l4 + 18..h.payload)
            && c.flags & !tcp_flags::PSH == flow.flags & !tcp_flags::CWR
    }

    /// Appends a segment that [`Gro::can_append`] accepted.
    fn append<F: FnMut(&NetHdr, &[u8])>(
        &mut self,
        mut flow: Flow,
        c: &Cand,
        hdr: &NetHdr,
        frame: &[u8],
        out: &mut F,
    ) {
        let pl = c.h.payload_len();
        let (Some(src), Some(dst)) =
            (frame.get(c.h.payload..c.h.end), self.buf.get_mut(flow.len..flow.len + pl))
        else {
            // Not reached after `can_append`; keep the frame rather than lose it.
            self.flush(out);
            out(hdr, frame);
            return;
        };
        dst.copy_from_slice(src);
        flow.len += pl;
        flow.next_seq = flow.next_seq.wrapping_add(pl as u32);
        flow.next_id = flow.next_id.wrapping_add(1);
        flow.segs += 1;
        flow.psh = c.flags & tcp_flags::PSH != 0;
        let done = flow.psh || pl < flow.mss || flow.segs >= self.opts.max_segs;
        self.flow = Some(flow);
        if done {
            self.flush(out);
        }
    }
}

/// Fixes the merged frame's headers and builds its virtio-net header.
fn finish(frame: &mut [u8], flow: &Flow, opts: &GroOpts) -> Option<NetHdr> {
    let h = &flow.h;
    let l4_len = flow.len.checked_sub(h.l4)?;
    let put16 = |frame: &mut [u8], at: usize, v: u16| csum::write_u16(frame, at, v).ok();
    let mut gso_type = match h.ip {
        Ip::V4(_) => {
            put16(frame, h.l3 + 2, u16::try_from(flow.len - h.l3).ok()?)?;
            put16(frame, h.l3 + 10, 0)?;
            let c = csum::ipv4_header_checksum(frame.get(h.l3..h.l4)?);
            put16(frame, h.l3 + 10, c)?;
            GSO_TCPV4
        }
        Ip::V6(_) => {
            put16(frame, h.l3 + 4, u16::try_from(flow.len - h.l3 - 40).ok()?)?;
            GSO_TCPV6
        }
    };
    if flow.flags & tcp_flags::CWR != 0 {
        gso_type |= GSO_ECN;
    }
    if flow.psh {
        let f = frame.get_mut(h.l4 + 13)?;
        *f |= tcp_flags::PSH;
    }
    let csum_at = h.l4 + TCP_CSUM_OFFSET;
    put16(frame, csum_at, 0)?;
    let pseudo = h.pseudo_header(l4_len)?;
    let mut hdr = NetHdr {
        gso_type,
        hdr_len: u16::try_from(h.payload).ok()?,
        gso_size: u16::try_from(flow.mss).ok()?,
        ..NetHdr::default()
    };
    if opts.full_csum {
        let mut s = pseudo;
        s.add_bytes(frame.get(h.l4..)?);
        put16(frame, csum_at, s.checksum())?;
        hdr.flags = HDR_F_DATA_VALID;
    } else {
        // 5.1.6.2 point 2: the field holds the pseudo-header sum.
        put16(frame, csum_at, pseudo.fold())?;
        hdr.flags = HDR_F_NEEDS_CSUM;
        hdr.csum_start = u16::try_from(h.l4).ok()?;
        hdr.csum_offset = TCP_CSUM_OFFSET as u16;
    }
    if opts.rsc_ext {
        hdr.flags |= HDR_F_RSC_INFO;
        hdr.csum_start = flow.segs;
        hdr.csum_offset = 0;
    }
    Some(hdr)
}
