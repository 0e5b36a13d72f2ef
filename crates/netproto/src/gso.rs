//! Transmit offloads: checking a virtio-net header against the frame it describes
//! (virtio 1.x 5.1.6.2, "Packet Transmission"), and software segmentation of a TSO or
//! USO frame into wire-sized frames for a peer that cannot take it whole.
//!
//! [`validate_tx`] is run once per frame, on guest-controlled input; every lie about
//! offsets, sizes or protocol is an [`HdrError`]. The [`GsoPlan`] it returns drives
//! [`segment`], which writes each segment into a caller-provided buffer and hands it to
//! a closure, so the per-packet path does not allocate.

use std::fmt;

use crate::csum::{self, Sum};
use crate::parse::{self, tcp_flags, Headers, Ip, ParseError, Transport};
use crate::virtio_net::{
    features, NetHdr, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP, GSO_UDP_L4, HDR_F_DATA_VALID,
    HDR_F_NEEDS_CSUM, HDR_F_RSC_INFO,
};

/// The transmit offloads negotiated with the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TxOffloads {
    /// VIRTIO_NET_F_CSUM: the driver may send partial checksums.
    pub csum: bool,
    /// VIRTIO_NET_F_HOST_TSO4.
    pub tso4: bool,
    /// VIRTIO_NET_F_HOST_TSO6.
    pub tso6: bool,
    /// VIRTIO_NET_F_HOST_USO.
    pub uso: bool,
    /// VIRTIO_NET_F_HOST_ECN.
    pub ecn: bool,
    /// VIRTIO_NET_F_GUEST_HDRLEN: `hdr_len` is exact for GSO frames.
    pub guest_hdrlen: bool,
}

impl TxOffloads {
    /// Every transmit offload this module handles.
    pub const ALL: Self =
        Self { csum: true, tso4: true, tso6: true, uso: true, ecn: true, guest_hdrlen: true };

    /// The offloads in a negotiated feature word.
    pub fn from_features(f: u64) -> Self {
        Self {
            csum: f & features::CSUM != 0,
            tso4: f & features::HOST_TSO4 != 0,
            tso6: f & features::HOST_TSO6 != 0,
            uso: f & features::HOST_USO != 0,
            ecn: f & features::HOST_ECN != 0,
            guest_hdrlen: f & features::GUEST_HDRLEN != 0,
        }
    }
}

/// What kind of segmentation a frame asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsoKind {
    /// VIRTIO_NET_HDR_GSO_TCPV4.
    TcpV4,
    /// VIRTIO_NET_HDR_GSO_TCPV6.
    TcpV6,
    /// VIRTIO_NET_HDR_GSO_UDP_L4 (UDP over IPv4 or IPv6).
    UdpL4,
}

/// A validated segmentation request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GsoPlan {
    /// The segmentation asked for.
    pub kind: GsoKind,
    /// The frame's layout.
    pub headers: Headers,
    /// `gso_size`: payload bytes per segment.
    pub mss: u16,
    /// VIRTIO_NET_HDR_GSO_ECN was set (and the TCP header carries CWR).
    pub ecn: bool,
}

impl GsoPlan {
    /// Length of the headers copied into every segment (Ethernet, IP, transport).
    pub fn hdr_len(&self) -> usize {
        self.headers.payload
    }

    /// Number of segments [`segment`] produces with `mss` (at least one).
    pub fn segment_count(&self, mss: u16) -> usize {
        let p = self.headers.payload_len();
        let m = usize::from(mss.max(1));
        p.div_ceil(m).max(1)
    }

    /// Largest segment, headers included, that [`segment`] writes with `mss`.
    pub fn max_segment_len(&self, mss: u16) -> usize {
        self.hdr_len().saturating_add(usize::from(mss).min(self.headers.payload_len()))
    }
}

/// What the device has to do with a transmitted frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxPlan {
    /// Nothing: the frame is complete.
    Plain,
    /// Complete the partial checksum ([`csum::complete_partial`]) before handing the
    /// frame to anyone that did not negotiate VIRTIO_NET_F_GUEST_CSUM. The offsets are
    /// within the frame.
    Csum {
        /// `csum_start`.
        start: usize,
        /// `csum_offset`.
        offset: usize,
    },
    /// Segment it (or pass it whole to a peer that takes this GSO type).
    Gso(GsoPlan),
}

/// Why a transmitted header does not describe its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HdrError {
    /// DATA_VALID or RSC_INFO on transmit; the driver MUST NOT set them (5.1.6.2.1).
    RxOnlyFlags(u8),
    /// NEEDS_CSUM without VIRTIO_NET_F_CSUM.
    CsumNotNegotiated,
    /// `csum_start` beyond the frame.
    CsumStartOutOfRange {
        /// `csum_start`.
        start: u16,
        /// Frame length.
        len: usize,
    },
    /// The checksum field at `csum_start + csum_offset` is not inside the frame.
    CsumOffsetOutOfRange {
        /// `csum_start`.
        start: u16,
        /// `csum_offset`.
        offset: u16,
        /// Frame length.
        len: usize,
    },
    /// A `gso_type` the specification does not define.
    UnknownGsoType(u8),
    /// VIRTIO_NET_HDR_GSO_UDP (UFO, IP fragmentation) is not offered.
    UfoUnsupported,
    /// A GSO type whose feature was not negotiated (5.1.6.2.1).
    GsoNotNegotiated(u8),
    /// A GSO frame without NEEDS_CSUM (5.1.6.2.1: the driver MUST set it).
    GsoWithoutCsum,
    /// `gso_size` is zero.
    GsoSizeZero,
    /// `gso_size` makes segments whose IP length does not fit 16 bits.
    GsoSizeTooLarge {
        /// `gso_size`.
        gso_size: u16,
        /// Largest acceptable value for these headers.
        max: u16,
    },
    /// The frame's headers are malformed.
    Parse(ParseError),
    /// `gso_type` does not match the frame's IP version or transport protocol.
    GsoTypeMismatch {
        /// `gso_type` without the ECN bit.
        gso_type: u8,
    },
    /// A GSO frame with bytes after the end of the IP packet.
    TrailingBytes,
    /// For a GSO frame, `csum_start` is not the transport header offset.
    CsumStartMismatch {
        /// `csum_start`.
        declared: u16,
        /// Transport header offset.
        actual: usize,
    },
    /// For a GSO frame, `csum_offset` is not the transport checksum field.
    CsumOffsetMismatch {
        /// `csum_offset`.
        declared: u16,
        /// 16 for TCP, 6 for UDP.
        actual: usize,
    },
    /// With VIRTIO_NET_F_GUEST_HDRLEN, `hdr_len` differs from the real header length.
    HdrLenMismatch {
        /// `hdr_len`.
        declared: u16,
        /// Length of Ethernet, IP and transport headers.
        actual: usize,
    },
    /// Without VIRTIO_NET_F_GUEST_HDRLEN, `hdr_len` (a hint) is beyond the frame.
    HdrLenBeyondFrame {
        /// `hdr_len`.
        declared: u16,
        /// Frame length.
        len: usize,
    },
    /// SYN or RST in a TCP frame to be segmented.
    TcpFlagsNotSegmentable(u8),
    /// GSO_ECN on a UDP GSO frame.
    EcnOnUdp,
    /// GSO_ECN without VIRTIO_NET_F_HOST_ECN.
    EcnNotNegotiated,
    /// GSO_ECN set but the TCP header has no CWR.
    EcnWithoutCwr,
    /// CWR in a TCP frame to be segmented without GSO_ECN (5.1.6.2.1).
    CwrWithoutEcn,
}

impl From<ParseError> for HdrError {
    fn from(e: ParseError) -> Self {
        HdrError::Parse(e)
    }
}

impl fmt::Display for HdrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use HdrError::*;
        match *self {
            RxOnlyFlags(x) => write!(f, "receive-only flags {x:#x} on transmit"),
            CsumNotNegotiated => write!(f, "NEEDS_CSUM without VIRTIO_NET_F_CSUM"),
            CsumStartOutOfRange { start, len } => write!(f, "csum_start {start} beyond the {len}-byte frame"),
            CsumOffsetOutOfRange { start, offset, len } => {
                write!(f, "checksum field at {start}+{offset} outside the {len}-byte frame")
            }
            UnknownGsoType(t) => write!(f, "unknown gso_type {t:#x}"),
            UfoUnsupported => write!(f, "UDP fragmentation offload is not supported"),
            GsoNotNegotiated(t) => write!(f, "gso_type {t} not negotiated"),
            GsoWithoutCsum => write!(f, "GSO frame without NEEDS_CSUM"),
            GsoSizeZero => write!(f, "gso_size is zero"),
            GsoSizeTooLarge { gso_size, max } => write!(f, "gso_size {gso_size} above {max}"),
            Parse(e) => write!(f, "malformed frame: {e}"),
            GsoTypeMismatch { gso_type } => write!(f, "gso_type {gso_type} does not match the frame"),
            TrailingBytes => write!(f, "GSO frame has bytes after the IP packet"),
            CsumStartMismatch { declared, actual } => {
                write!(f, "csum_start {declared} is not the transport header at {actual}")
            }
            CsumOffsetMismatch { declared, actual } => {
                write!(f, "csum_offset {declared} is not the transport checksum at {actual}")
            }
            HdrLenMismatch { declared, actual } => {
                write!(f, "hdr_len {declared} but headers are {actual} bytes")
            }
            HdrLenBeyondFrame { declared, len } => {
                write!(f, "hdr_len {declared} beyond the {len}-byte frame")
            }
            TcpFlagsNotSegmentable(x) => write!(f, "TCP flags {x:#x} cannot be segmented"),
            EcnOnUdp => write!(f, "GSO_ECN on a UDP frame"),
            EcnNotNegotiated => write!(f, "GSO_ECN without VIRTIO_NET_F_HOST_ECN"),
            EcnWithoutCwr => write!(f, "GSO_ECN but the TCP header has no CWR"),
            CwrWithoutEcn => write!(f, "CWR in a GSO frame without GSO_ECN"),
        }
    }
}

impl std::error::Error for HdrError {}

/// Largest `gso_size` for which every segment's IP length field fits: the IPv4 total
/// length (RFC 791) or the IPv6 payload length (RFC 8200 3), and the UDP length.
pub fn max_mss(h: &Headers) -> u16 {
    let l4_hdr = h.payload.saturating_sub(h.l4);
    let ip_part = match h.ip {
        // The IPv4 total length counts the IP header itself.
        Ip::V4(_) => h.l4.saturating_sub(h.l3),
        // The IPv6 payload length counts extension headers, not the fixed header.
        Ip::V6(_) => h.l4.saturating_sub(h.l3).saturating_sub(40),
    };
    let max = 65535usize.saturating_sub(ip_part).saturating_sub(l4_hdr);
    u16::try_from(max).unwrap_or(u16::MAX)
}

/// Checks a transmitted header against its frame (virtio 1.x 5.1.6.2 and 5.1.6.2.1)
/// and says what the device must do with it.
///
/// Rules applied, in order:
/// - DATA_VALID and RSC_INFO are rejected (the driver MUST NOT set them); other unknown
///   flag bits are ignored (the device MUST ignore flags it does not recognize).
/// - NEEDS_CSUM needs VIRTIO_NET_F_CSUM; its field must lie inside the frame.
/// - `gso_type` NONE (with or without the ECN bit, which then means nothing) gives
///   [`TxPlan::Plain`] or [`TxPlan::Csum`]; `hdr_len` and `gso_size` are then unused
///   (the device MUST NOT rely on `hdr_len`).
/// - A GSO type must be defined, supported and negotiated, come with NEEDS_CSUM and a
///   non-zero `gso_size`, and match the parsed frame: IP version and transport,
///   `csum_start` at the transport header, `csum_offset` at its checksum field, no
///   bytes after the IP packet, `gso_size` small enough for the IP length fields.
/// - `hdr_len` must equal the header length when VIRTIO_NET_F_GUEST_HDRLEN is
///   negotiated; otherwise it is a hint and only has to lie within the frame.
/// - TCP: no SYN or RST; GSO_ECN needs VIRTIO_NET_F_HOST_ECN and is set exactly when
///   the header carries CWR (the ECN bit of 5.1.6.2.1, RFC 3168 6.1.2).
pub fn validate_tx(hdr: &NetHdr, frame: &[u8], offloads: &TxOffloads) -> Result<TxPlan, HdrError> {
    let len = frame.len();
    let rx_only = hdr.flags & (HDR_F_DATA_VALID | HDR_F_RSC_INFO);
    if rx_only != 0 {
        return Err(HdrError::RxOnlyFlags(rx_only));
    }
    let needs_csum = hdr.flags & HDR_F_NEEDS_CSUM != 0;
    if needs_csum {
        if !offloads.csum {
            return Err(HdrError::CsumNotNegotiated);
        }
        if usize::from(hdr.csum_start) > len {
            return Err(HdrError::CsumStartOutOfRange { start: hdr.csum_start, len });
        }
        if usize::from(hdr.csum_start) + usize::from(hdr.csum_offset) + 2 > len {
            return Err(HdrError::CsumOffsetOutOfRange {
                start: hdr.csum_start,
                offset: hdr.csum_offset,
                len,
            });
        }
    }
    let ecn = hdr.gso_type & GSO_ECN != 0;
    let gso_type = hdr.gso_type & !GSO_ECN;
    let (kind, negotiated) = match gso_type {
        GSO_NONE => {
            return Ok(if needs_csum {
                TxPlan::Csum { start: usize::from(hdr.csum_start), offset: usize::from(hdr.csum_offset) }
            } else {
                TxPlan::Plain
            });
        }
        GSO_TCPV4 => (GsoKind::TcpV4, offloads.tso4),
        GSO_TCPV6 => (GsoKind::TcpV6, offloads.tso6),
        GSO_UDP_L4 => (GsoKind::UdpL4, offloads.uso),
        GSO_UDP => return Err(HdrError::UfoUnsupported),
        t => return Err(HdrError::UnknownGsoType(t)),
    };
    if !negotiated {
        return Err(HdrError::GsoNotNegotiated(gso_type));
    }
    if !needs_csum {
        return Err(HdrError::GsoWithoutCsum);
    }
    if hdr.gso_size == 0 {
        return Err(HdrError::GsoSizeZero);
    }
    let h = parse::parse(frame)?;
    let matches = matches!(
        (kind, &h.ip, &h.transport),
        (GsoKind::TcpV4, Ip::V4(_), Transport::Tcp(_))
            | (GsoKind::TcpV6, Ip::V6(_), Transport::Tcp(_))
            | (GsoKind::UdpL4, _, Transport::Udp(_))
    );
    if !matches {
        return Err(HdrError::GsoTypeMismatch { gso_type });
    }
    if h.end != len {
        return Err(HdrError::TrailingBytes);
    }
    if usize::from(hdr.csum_start) != h.l4 {
        return Err(HdrError::CsumStartMismatch { declared: hdr.csum_start, actual: h.l4 });
    }
    if usize::from(hdr.csum_offset) != h.l4_csum_offset() {
        return Err(HdrError::CsumOffsetMismatch { declared: hdr.csum_offset, actual: h.l4_csum_offset() });
    }
    if offloads.guest_hdrlen {
        if usize::from(hdr.hdr_len) != h.payload {
            return Err(HdrError::HdrLenMismatch { declared: hdr.hdr_len, actual: h.payload });
        }
    } else if usize::from(hdr.hdr_len) > len {
        return Err(HdrError::HdrLenBeyondFrame { declared: hdr.hdr_len, len });
    }
    let max = max_mss(&h);
    if hdr.gso_size > max {
        return Err(HdrError::GsoSizeTooLarge { gso_size: hdr.gso_size, max });
    }
    match h.transport {
        Transport::Udp(_) => {
            if ecn {
                return Err(HdrError::EcnOnUdp);
            }
        }
        Transport::Tcp(t) => {
            let bad = t.flags & (tcp_flags::SYN | tcp_flags::RST);
            if bad != 0 {
                return Err(HdrError::TcpFlagsNotSegmentable(bad));
            }
            let cwr = t.flags & tcp_flags::CWR != 0;
            if ecn && !offloads.ecn {
                return Err(HdrError::EcnNotNegotiated);
            }
            if ecn && !cwr {
                return Err(HdrError::EcnWithoutCwr);
            }
            if cwr && !ecn {
                return Err(HdrError::CwrWithoutEcn);
            }
        }
    }
    Ok(TxPlan::Gso(GsoPlan { kind, headers: h, mss: hdr.gso_size, ecn }))
}

/// Why [`segment`] could not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentError {
    /// `mss` is zero.
    MssZero,
    /// `mss` makes segments whose IP length does not fit.
    MssTooLarge {
        /// Requested.
        mss: u16,
        /// Largest acceptable.
        max: u16,
    },
    /// The output buffer cannot hold the largest segment.
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        have: usize,
    },
    /// The frame is not the one the plan was made from.
    FrameMismatch,
}

impl fmt::Display for SegmentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SegmentError::MssZero => write!(f, "segment size is zero"),
            SegmentError::MssTooLarge { mss, max } => write!(f, "segment size {mss} above {max}"),
            SegmentError::BufferTooSmall { need, have } => {
                write!(f, "segment buffer of {have} bytes, {need} needed")
            }
            SegmentError::FrameMismatch => write!(f, "frame does not match its segmentation plan"),
        }
    }
}

impl std::error::Error for SegmentError {}

fn put16(b: &mut [u8], at: usize, v: u16) -> Result<(), SegmentError> {
    csum::write_u16(b, at, v).map_err(|_| SegmentError::FrameMismatch)
}

fn put32(b: &mut [u8], at: usize, v: u32) -> Result<(), SegmentError> {
    let dst = b.get_mut(at..at.saturating_add(4)).ok_or(SegmentError::FrameMismatch)?;
    dst.copy_from_slice(&v.to_be_bytes());
    Ok(())
}

/// Cuts the frame `plan` was made from into segments of at most `mss` payload bytes
/// (normally `plan.mss`), as a device does for VIRTIO_NET_HDR_GSO_TCPV4/TCPV6/UDP_L4
/// (virtio 1.x 5.1.6.2 point 3). Each segment is written to the front of `buf`, which
/// must hold [`GsoPlan::max_segment_len`] bytes, and passed to `out` before the next
/// one overwrites it. Returns the number of segments.
///
/// Every segment gets the frame's headers with:
/// - IPv4: total length, identification incremented per segment (wrapping), header
///   checksum (RFC 791); IPv6: payload length (RFC 8200).
/// - TCP: sequence number advanced by the payload already sent; FIN and PSH only on the
///   last segment, CWR only on the first (RFC 3168 6.1.2: CWR is set once, on the first
///   new segment after the window reduction); URG kept only while the urgent pointer
///   still points into or beyond the segment, re-based on its sequence number
///   (RFC 9293 3.8.5); full checksum.
/// - UDP (USO): each segment a datagram with its own length and full checksum, a zero
///   result sent as 0xffff (RFC 768).
///
/// A frame without payload gives one segment, its headers completed.
pub fn segment<F: FnMut(&[u8])>(
    frame: &[u8],
    plan: &GsoPlan,
    mss: u16,
    buf: &mut [u8],
    mut out: F,
) -> Result<usize, SegmentError> {
    let h = &plan.headers;
    if mss == 0 {
        return Err(SegmentError::MssZero);
    }
    let max = max_mss(h);
    if mss > max {
        return Err(SegmentError::MssTooLarge { mss, max });
    }
    if !(h.l3 < h.l4 && h.l4 <= h.payload && h.payload <= h.end) {
        return Err(SegmentError::FrameMismatch);
    }
    let frame = frame.get(..h.end).ok_or(SegmentError::FrameMismatch)?;
    let (head, payload) = frame.split_at(h.payload);
    let need = plan.max_segment_len(mss);
    if buf.len() < need {
        return Err(SegmentError::BufferTooSmall { need, have: buf.len() });
    }
    let hdr_len = h.payload;
    let l3_hdr = h.l4 - h.l3;
    let l4_hdr = h.payload - h.l4;
    let mss = usize::from(mss);
    let count = plan.segment_count(mss as u16);
    for i in 0..count {
        let start = i * mss;
        let end = (start + mss).min(payload.len());
        let chunk = payload.get(start..end).ok_or(SegmentError::FrameMismatch)?;
        let seg_len = hdr_len + chunk.len();
        let seg = buf.get_mut(..seg_len).ok_or(SegmentError::BufferTooSmall { need, have: 0 })?;
        let (sh, sp) = seg.split_at_mut(hdr_len);
        sh.copy_from_slice(head);
        sp.copy_from_slice(chunk);
        let l4_len = l4_hdr + chunk.len();
        let first = i == 0;
        let last = i + 1 == count;
        match h.ip {
            Ip::V4(ip) => {
                // Fits: mss <= max_mss.
                put16(seg, h.l3 + 2, (l3_hdr + l4_len) as u16)?;
                put16(seg, h.l3 + 4, ip.id.wrapping_add(i as u16))?;
                put16(seg, h.l3 + 10, 0)?;
                let c = csum::ipv4_header_checksum(seg.get(h.l3..h.l4).ok_or(SegmentError::FrameMismatch)?);
                put16(seg, h.l3 + 10, c)?;
            }
            // Extension headers count in the payload length (RFC 8200 3).
            Ip::V6(_) => put16(seg, h.l3 + 4, (l3_hdr.saturating_sub(40) + l4_len) as u16)?,
        }
        let csum_at = h.l4 + h.l4_csum_offset();
        match h.transport {
            Transport::Tcp(t) => {
                let seq = t.seq.wrapping_add(start as u32);
                put32(seg, h.l4 + 4, seq)?;
                let mut flags = t.flags;
                if !last {
                    flags &= !(tcp_flags::FIN | tcp_flags::PSH);
                }
                if !first {
                    flags &= !tcp_flags::CWR;
                }
                let mut urgent = t.urgent;
                if t.flags & tcp_flags::URG != 0 {
                    // Distance from this segment's first byte to the end of urgent data.
                    let left = t.seq.wrapping_add(u32::from(t.urgent)).wrapping_sub(seq) as i32;
                    if left > 0 {
                        urgent = left.min(0xffff) as u16;
                    } else {
                        flags &= !tcp_flags::URG;
                        urgent = 0;
                    }
                }
                *seg.get_mut(h.l4 + 13).ok_or(SegmentError::FrameMismatch)? = flags;
                put16(seg, h.l4 + 18, urgent)?;
            }
            Transport::Udp(_) => put16(seg, h.l4 + 4, l4_len as u16)?,
        }
        put16(seg, csum_at, 0)?;
        let mut s: Sum = h.pseudo_header(l4_len).ok_or(SegmentError::FrameMismatch)?;
        s.add_bytes(seg.get(h.l4..).ok_or(SegmentError::FrameMismatch)?);
        let mut c = s.checksum();
        if c == 0 && matches!(h.transport, Transport::Udp(_)) {
            c = 0xffff;
        }
        put16(seg, csum_at, c)?;
        out(seg);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_with_ecn_bit_is_plain() {
        let h = NetHdr { gso_type: GSO_ECN, ..NetHdr::default() };
        assert_eq!(validate_tx(&h, &[0u8; 60], &TxOffloads::ALL), Ok(TxPlan::Plain));
    }

    #[test]
    fn from_features() {
        let o = TxOffloads::from_features(features::CSUM | features::HOST_TSO4);
        assert!(o.csum && o.tso4 && !o.tso6 && !o.uso && !o.ecn && !o.guest_hdrlen);
    }
}
