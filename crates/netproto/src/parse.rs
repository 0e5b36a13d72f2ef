//! A validated view of a frame's layout: Ethernet II, at most one 802.1Q tag, IPv4 or
//! IPv6, then TCP or UDP. [`parse`] checks every length against the frame and against
//! the other headers once; the offsets it returns can then be used without further
//! checks against the same frame.
//!
//! Supported:
//! - Ethernet II (IEEE 802.3 clause 3.2.6) with no tag or one 802.1Q tag (TPID 0x8100).
//!   Stacked tags (802.1ad, or 0x8100 twice) are rejected.
//! - IPv4 (RFC 791) with options (IHL 5..=15). Fragments (MF set or a non-zero fragment
//!   offset) are rejected: their transport header or payload is not all there.
//! - IPv6 (RFC 8200) with Hop-by-Hop Options and Destination Options extension headers
//!   (section 4.3, 4.6). Routing (whose final destination changes the pseudo-header),
//!   Fragment, AH, ESP and the other extension headers are rejected.
//! - TCP (RFC 9293 3.1) with options; UDP (RFC 768).
//!
//! Bytes after the end of the IP packet (Ethernet padding) are allowed and reported
//! through [`Headers::end`].

use std::fmt;

use crate::csum::{self, PROTO_TCP, PROTO_UDP};
use crate::ethernet::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN};

/// EtherType of an 802.1ad service tag.
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

/// TCP header flag bits (RFC 9293 3.1, RFC 3168 6.1 for ECE and CWR), as found in byte
/// 13 of the header.
pub mod tcp_flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push function.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field is significant.
    pub const ACK: u8 = 0x10;
    /// Urgent pointer field is significant.
    pub const URG: u8 = 0x20;
    /// ECN-Echo.
    pub const ECE: u8 = 0x40;
    /// Congestion Window Reduced.
    pub const CWR: u8 = 0x80;
}

/// Why a frame does not parse. Each variant names the first check that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than an Ethernet header.
    EthernetTruncated,
    /// An 802.1Q tag is cut short.
    VlanTruncated,
    /// A second VLAN tag (802.1ad or stacked 802.1Q).
    StackedVlan,
    /// The EtherType is neither IPv4 nor IPv6.
    NotIp(u16),
    /// Fewer than 20 bytes for the IPv4 header.
    Ipv4Truncated,
    /// Version field is not 4 under EtherType IPv4.
    Ipv4BadVersion(u8),
    /// IHL below 5.
    Ipv4BadIhl(u8),
    /// The options announced by IHL are not in the frame.
    Ipv4OptionsTruncated,
    /// Total length smaller than the header.
    Ipv4TotalLenTooSmall,
    /// Total length runs past the end of the frame.
    Ipv4TotalLenExceedsFrame,
    /// MF set or fragment offset non-zero.
    Ipv4Fragment,
    /// Fewer than 40 bytes for the IPv6 header.
    Ipv6Truncated,
    /// Version field is not 6 under EtherType IPv6.
    Ipv6BadVersion(u8),
    /// Payload length runs past the end of the frame.
    Ipv6PayloadLenExceedsFrame,
    /// An extension header runs past the IPv6 payload.
    Ipv6ExtensionTruncated,
    /// An extension header this parser does not walk (routing, fragment, AH, ESP...).
    Ipv6UnsupportedExtension(u8),
    /// Hop-by-Hop Options anywhere but first (RFC 8200 4.3).
    Ipv6MisplacedHopByHop,
    /// More extension headers than this parser walks.
    Ipv6TooManyExtensions,
    /// The upper-layer protocol is neither TCP nor UDP.
    UnsupportedTransport(u8),
    /// Fewer than 20 bytes of TCP header inside the IP payload.
    TcpTruncated,
    /// Data offset below 5.
    TcpBadDataOffset(u8),
    /// The options announced by the data offset are not inside the IP payload.
    TcpOptionsTruncated,
    /// Fewer than 8 bytes of UDP header inside the IP payload.
    UdpTruncated,
    /// The UDP length field differs from the length the IP header gives.
    UdpLengthMismatch {
        /// UDP length field.
        udp: u16,
        /// Length from the IP header.
        ip: usize,
    },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ParseError::*;
        match *self {
            EthernetTruncated => write!(f, "frame shorter than an Ethernet header"),
            VlanTruncated => write!(f, "VLAN tag truncated"),
            StackedVlan => write!(f, "stacked VLAN tags are not supported"),
            NotIp(t) => write!(f, "EtherType {t:#06x} is not IP"),
            Ipv4Truncated => write!(f, "IPv4 header truncated"),
            Ipv4BadVersion(v) => write!(f, "IP version {v} under EtherType IPv4"),
            Ipv4BadIhl(v) => write!(f, "IPv4 IHL {v} below 5"),
            Ipv4OptionsTruncated => write!(f, "IPv4 options truncated"),
            Ipv4TotalLenTooSmall => write!(f, "IPv4 total length smaller than its header"),
            Ipv4TotalLenExceedsFrame => write!(f, "IPv4 total length exceeds the frame"),
            Ipv4Fragment => write!(f, "IPv4 fragment"),
            Ipv6Truncated => write!(f, "IPv6 header truncated"),
            Ipv6BadVersion(v) => write!(f, "IP version {v} under EtherType IPv6"),
            Ipv6PayloadLenExceedsFrame => write!(f, "IPv6 payload length exceeds the frame"),
            Ipv6ExtensionTruncated => write!(f, "IPv6 extension header truncated"),
            Ipv6UnsupportedExtension(n) => write!(f, "IPv6 extension header {n} not supported"),
            Ipv6MisplacedHopByHop => write!(f, "IPv6 hop-by-hop options header not first"),
            Ipv6TooManyExtensions => write!(f, "too many IPv6 extension headers"),
            UnsupportedTransport(p) => write!(f, "transport protocol {p} is neither TCP nor UDP"),
            TcpTruncated => write!(f, "TCP header truncated"),
            TcpBadDataOffset(d) => write!(f, "TCP data offset {d} below 5"),
            TcpOptionsTruncated => write!(f, "TCP options truncated"),
            UdpTruncated => write!(f, "UDP header truncated"),
            UdpLengthMismatch { udp, ip } => {
                write!(f, "UDP length {udp} differs from the {ip} bytes the IP header gives")
            }
        }
    }
}

impl std::error::Error for ParseError {}

/// IPv4 header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4 {
    /// Header length in bytes (IHL * 4), options included.
    pub header_len: usize,
    /// Type of service / DSCP and ECN (RFC 2474, RFC 3168).
    pub tos: u8,
    /// Total length.
    pub total_len: u16,
    /// Identification.
    pub id: u16,
    /// Flags and fragment offset, as on the wire.
    pub flags_frag: u16,
    /// Time to live.
    pub ttl: u8,
    /// Protocol.
    pub protocol: u8,
    /// Header checksum as found.
    pub checksum: u16,
    /// Source address.
    pub src: [u8; 4],
    /// Destination address.
    pub dst: [u8; 4],
}

impl Ipv4 {
    /// The DF bit.
    pub fn dont_fragment(&self) -> bool {
        self.flags_frag & 0x4000 != 0
    }
}

/// IPv6 header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6 {
    /// Traffic class (DSCP and ECN).
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
    /// Payload length (extension headers included).
    pub payload_len: u16,
    /// Hop limit.
    pub hop_limit: u8,
    /// Source address.
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
    /// Bytes of extension headers between the fixed header and the transport header.
    pub ext_len: usize,
    /// The upper-layer protocol (the last next header).
    pub protocol: u8,
}

/// The network layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ip {
    /// IPv4.
    V4(Ipv4),
    /// IPv6.
    V6(Ipv6),
}

/// TCP header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tcp {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Header length in bytes (data offset * 4), options included.
    pub header_len: usize,
    /// Flags ([`tcp_flags`]).
    pub flags: u8,
    /// Window.
    pub window: u16,
    /// Checksum as found.
    pub checksum: u16,
    /// Urgent pointer.
    pub urgent: u16,
}

/// UDP header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Udp {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Length (header and data).
    pub length: u16,
    /// Checksum as found.
    pub checksum: u16,
}

/// The transport layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP.
    Tcp(Tcp),
    /// UDP.
    Udp(Udp),
}

/// Offset of the TCP checksum field in the TCP header.
pub const TCP_CSUM_OFFSET: usize = 16;
/// Offset of the UDP checksum field in the UDP header.
pub const UDP_CSUM_OFFSET: usize = 6;

/// The validated layout of a frame. All offsets are from the start of the frame and
/// satisfy `l3 < l4 <= payload <= end <= frame.len()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headers {
    /// The 802.1Q tag control information, when the frame is tagged.
    pub vlan_tci: Option<u16>,
    /// Offset of the IP header.
    pub l3: usize,
    /// The IP header.
    pub ip: Ip,
    /// Offset of the TCP or UDP header.
    pub l4: usize,
    /// The transport header.
    pub transport: Transport,
    /// Offset of the transport payload (the length of all headers).
    pub payload: usize,
    /// End of the IP packet; bytes after it are link-layer padding.
    pub end: usize,
}

impl Headers {
    /// Transport header and payload length.
    pub fn l4_len(&self) -> usize {
        self.end.saturating_sub(self.l4)
    }

    /// Transport payload length.
    pub fn payload_len(&self) -> usize {
        self.end.saturating_sub(self.payload)
    }

    /// Transport protocol number.
    pub fn protocol(&self) -> u8 {
        match self.transport {
            Transport::Tcp(_) => PROTO_TCP,
            Transport::Udp(_) => PROTO_UDP,
        }
    }

    /// Offset of the transport checksum field within the transport header.
    pub fn l4_csum_offset(&self) -> usize {
        match self.transport {
            Transport::Tcp(_) => TCP_CSUM_OFFSET,
            Transport::Udp(_) => UDP_CSUM_OFFSET,
        }
    }

    /// The pseudo-header sum for a transport segment of `l4_len` bytes between this
    /// frame's addresses, or `None` if `l4_len` does not fit the IPv4 pseudo-header.
    pub fn pseudo_header(&self, l4_len: usize) -> Option<csum::Sum> {
        match &self.ip {
            Ip::V4(h) => {
                let l = u16::try_from(l4_len).ok()?;
                Some(csum::pseudo_header_v4(h.src, h.dst, self.protocol(), l))
            }
            Ip::V6(h) => {
                let l = u32::try_from(l4_len).ok()?;
                Some(csum::pseudo_header_v6(&h.src, &h.dst, self.protocol(), l))
            }
        }
    }

    /// True when the transport checksum of `frame` (the frame this was parsed from)
    /// is correct.
    pub fn l4_checksum_ok(&self, frame: &[u8]) -> bool {
        let (Some(seg), Some(mut s)) = (frame.get(self.l4..self.end), self.pseudo_header(self.l4_len()))
        else {
            return false;
        };
        if let Transport::Udp(u) = self.transport {
            // RFC 768: a zero checksum means none was computed (IPv4 only; RFC 8200 8.1
            // makes it mandatory over IPv6).
            if u.checksum == 0 && matches!(self.ip, Ip::V4(_)) {
                return true;
            }
        }
        s.add_bytes(seg).fold() == 0xffff
    }

    /// True when the IPv4 header checksum of `frame` is correct (always true for IPv6,
    /// which has none).
    pub fn ip_checksum_ok(&self, frame: &[u8]) -> bool {
        match &self.ip {
            Ip::V4(h) => frame.get(self.l3..self.l3.saturating_add(h.header_len)).is_some_and(csum::verify),
            Ip::V6(_) => true,
        }
    }
}

#[inline]
fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

#[inline]
fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([*b.get(at)?, *b.get(at + 1)?, *b.get(at + 2)?, *b.get(at + 3)?]))
}

/// Most extension headers walked before giving up.
const MAX_IPV6_EXTENSIONS: usize = 4;
/// IPv6 Hop-by-Hop Options.
const IPV6_HOPOPTS: u8 = 0;
/// IPv6 Destination Options.
const IPV6_DSTOPTS: u8 = 60;

/// Extension header numbers that RFC 8200 4 and the IANA registry define and that this
/// parser does not walk: Routing, Fragment, ESP, AH, No Next Header, Mobility, HIP,
/// Shim6 and the two experimental values.
const IPV6_OTHER_EXTENSIONS: [u8; 10] = [43, 44, 50, 51, 59, 135, 139, 140, 253, 254];

/// Parses and validates a frame's headers. See the module documentation for what is
/// supported; everything else is an error naming the failed check.
pub fn parse(frame: &[u8]) -> Result<Headers, ParseError> {
    let mut ethertype = be16(frame, 12).ok_or(ParseError::EthernetTruncated)?;
    let mut l3 = crate::ethernet::HDR_LEN;
    let mut vlan_tci = None;
    if ethertype == ETHERTYPE_QINQ {
        return Err(ParseError::StackedVlan);
    }
    if ethertype == ETHERTYPE_VLAN {
        vlan_tci = Some(be16(frame, 14).ok_or(ParseError::VlanTruncated)?);
        ethertype = be16(frame, 16).ok_or(ParseError::VlanTruncated)?;
        l3 = 18;
        if ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
            return Err(ParseError::StackedVlan);
        }
    }
    let (ip, l4, end) = match ethertype {
        ETHERTYPE_IPV4 => parse_ipv4(frame, l3)?,
        ETHERTYPE_IPV6 => parse_ipv6(frame, l3)?,
        t => return Err(ParseError::NotIp(t)),
    };
    // l4 <= end <= frame.len() here.
    let seg = frame.get(l4..end).ok_or(ParseError::Ipv4TotalLenExceedsFrame)?;
    let protocol = match &ip {
        Ip::V4(h) => h.protocol,
        Ip::V6(h) => h.protocol,
    };
    let (transport, hlen) = match protocol {
        PROTO_TCP => {
            if seg.len() < 20 {
                return Err(ParseError::TcpTruncated);
            }
            let off = seg.get(12).copied().ok_or(ParseError::TcpTruncated)? >> 4;
            if off < 5 {
                return Err(ParseError::TcpBadDataOffset(off));
            }
            let header_len = usize::from(off) * 4;
            if header_len > seg.len() {
                return Err(ParseError::TcpOptionsTruncated);
            }
            let t = Tcp {
                src_port: be16(seg, 0).ok_or(ParseError::TcpTruncated)?,
                dst_port: be16(seg, 2).ok_or(ParseError::TcpTruncated)?,
                seq: be32(seg, 4).ok_or(ParseError::TcpTruncated)?,
                ack: be32(seg, 8).ok_or(ParseError::TcpTruncated)?,
                header_len,
                flags: seg.get(13).copied().ok_or(ParseError::TcpTruncated)?,
                window: be16(seg, 14).ok_or(ParseError::TcpTruncated)?,
                checksum: be16(seg, 16).ok_or(ParseError::TcpTruncated)?,
                urgent: be16(seg, 18).ok_or(ParseError::TcpTruncated)?,
            };
            (Transport::Tcp(t), header_len)
        }
        PROTO_UDP => {
            if seg.len() < 8 {
                return Err(ParseError::UdpTruncated);
            }
            let u = Udp {
                src_port: be16(seg, 0).ok_or(ParseError::UdpTruncated)?,
                dst_port: be16(seg, 2).ok_or(ParseError::UdpTruncated)?,
                length: be16(seg, 4).ok_or(ParseError::UdpTruncated)?,
                checksum: be16(seg, 6).ok_or(ParseError::UdpTruncated)?,
            };
            if usize::from(u.length) != seg.len() {
                return Err(ParseError::UdpLengthMismatch { udp: u.length, ip: seg.len() });
            }
            (Transport::Udp(u), 8)
        }
        p => return Err(ParseError::UnsupportedTransport(p)),
    };
    Ok(Headers { vlan_tci, l3, ip, l4, transport, payload: l4 + hlen, end })
}

/// Returns the header, the transport offset and the end of the packet.
fn parse_ipv4(frame: &[u8], l3: usize) -> Result<(Ip, usize, usize), ParseError> {
    let h = frame.get(l3..).ok_or(ParseError::Ipv4Truncated)?;
    if h.len() < 20 {
        return Err(ParseError::Ipv4Truncated);
    }
    let vihl = h.first().copied().ok_or(ParseError::Ipv4Truncated)?;
    if vihl >> 4 != 4 {
        return Err(ParseError::Ipv4BadVersion(vihl >> 4));
    }
    let ihl = vihl & 0x0f;
    if ihl < 5 {
        return Err(ParseError::Ipv4BadIhl(ihl));
    }
    let header_len = usize::from(ihl) * 4;
    if header_len > h.len() {
        return Err(ParseError::Ipv4OptionsTruncated);
    }
    let total_len = be16(h, 2).ok_or(ParseError::Ipv4Truncated)?;
    if usize::from(total_len) < header_len {
        return Err(ParseError::Ipv4TotalLenTooSmall);
    }
    if usize::from(total_len) > h.len() {
        return Err(ParseError::Ipv4TotalLenExceedsFrame);
    }
    let flags_frag = be16(h, 6).ok_or(ParseError::Ipv4Truncated)?;
    if flags_frag & 0x3fff != 0 {
        return Err(ParseError::Ipv4Fragment);
    }
    let mut src = [0u8; 4];
    let mut dst = [0u8; 4];
    src.copy_from_slice(h.get(12..16).ok_or(ParseError::Ipv4Truncated)?);
    dst.copy_from_slice(h.get(16..20).ok_or(ParseError::Ipv4Truncated)?);
    let ip = Ipv4 {
        header_len,
        tos: h.get(1).copied().ok_or(ParseError::Ipv4Truncated)?,
        total_len,
        id: be16(h, 4).ok_or(ParseError::Ipv4Truncated)?,
        flags_frag,
        ttl: h.get(8).copied().ok_or(ParseError::Ipv4Truncated)?,
        protocol: h.get(9).copied().ok_or(ParseError::Ipv4Truncated)?,
        checksum: be16(h, 10).ok_or(ParseError::Ipv4Truncated)?,
        src,
        dst,
    };
    Ok((Ip::V4(ip), l3 + header_len, l3 + usize::from(total_len)))
}

fn parse_ipv6(frame: &[u8], l3: usize) -> Result<(Ip, usize, usize), ParseError> {
    let h = frame.get(l3..).ok_or(ParseError::Ipv6Truncated)?;
    if h.len() < 40 {
        return Err(ParseError::Ipv6Truncated);
    }
    let w0 = be32(h, 0).ok_or(ParseError::Ipv6Truncated)?;
    let version = (w0 >> 28) as u8;
    if version != 6 {
        return Err(ParseError::Ipv6BadVersion(version));
    }
    let payload_len = be16(h, 4).ok_or(ParseError::Ipv6Truncated)?;
    let end = 40 + usize::from(payload_len);
    if end > h.len() {
        return Err(ParseError::Ipv6PayloadLenExceedsFrame);
    }
    let mut next = h.get(6).copied().ok_or(ParseError::Ipv6Truncated)?;
    let mut off = 40;
    let mut walked = 0;
    while next == IPV6_HOPOPTS || next == IPV6_DSTOPTS || IPV6_OTHER_EXTENSIONS.contains(&next) {
        if next != IPV6_HOPOPTS && next != IPV6_DSTOPTS {
            return Err(ParseError::Ipv6UnsupportedExtension(next));
        }
        if next == IPV6_HOPOPTS && walked != 0 {
            return Err(ParseError::Ipv6MisplacedHopByHop);
        }
        if walked == MAX_IPV6_EXTENSIONS {
            return Err(ParseError::Ipv6TooManyExtensions);
        }
        // Next Header, Hdr Ext Len in 8-octet units not counting the first 8 (RFC 8200 4.3).
        let ext = h.get(off..end).ok_or(ParseError::Ipv6ExtensionTruncated)?;
        let (Some(&nh), Some(&units)) = (ext.first(), ext.get(1)) else {
            return Err(ParseError::Ipv6ExtensionTruncated);
        };
        let len = (usize::from(units) + 1) * 8;
        if len > ext.len() {
            return Err(ParseError::Ipv6ExtensionTruncated);
        }
        off += len;
        next = nh;
        walked += 1;
    }
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(h.get(8..24).ok_or(ParseError::Ipv6Truncated)?);
    dst.copy_from_slice(h.get(24..40).ok_or(ParseError::Ipv6Truncated)?);
    let ip = Ipv6 {
        traffic_class: (w0 >> 20) as u8,
        flow_label: w0 & 0x000f_ffff,
        payload_len,
        hop_limit: h.get(7).copied().ok_or(ParseError::Ipv6Truncated)?,
        src,
        dst,
        ext_len: off - 40,
        protocol: next,
    };
    Ok((Ip::V6(ip), l3 + off, l3 + end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp4(payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20 + payload];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
        f[23] = PROTO_TCP;
        f[14 + 20 + 12] = 5 << 4;
        f
    }

    #[test]
    fn minimal_tcp4() {
        let f = tcp4(3);
        let h = parse(&f).unwrap();
        assert_eq!((h.l3, h.l4, h.payload, h.end), (14, 34, 54, 57));
        assert_eq!(h.payload_len(), 3);
        assert!(matches!(h.transport, Transport::Tcp(t) if t.header_len == 20));
    }

    #[test]
    fn padding_is_not_payload() {
        let mut f = tcp4(0);
        f.resize(60, 0);
        let h = parse(&f).unwrap();
        assert_eq!(h.end, 54);
        assert_eq!(h.payload_len(), 0);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let f = tcp4(0);
        for n in 0..f.len() {
            assert!(parse(&f[..n]).is_err(), "len {n}");
        }
    }
}
