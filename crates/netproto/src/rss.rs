//! Receive-side scaling: the Toeplitz hash of virtio 1.2 5.1.6.4.3 ("Hash calculation
//! for incoming packets"), which is Microsoft's RSS hash, and the indirection table of
//! the "Receive-side scaling (RSS)" control command (5.1.6.5) that maps a hash to a
//! receive queue.
//!
//! The hash of an input of n bytes under a key K is the XOR, over every input bit that
//! is set, of the 32 key bits starting at that bit's position (input and key read left
//! to right, most significant bit first). As XOR is linear, the contribution of each
//! input byte depends only on its position and value: [`Toeplitz`] keeps one 256-entry
//! table per byte position, and hashing n bytes is n lookups.
//!
//! Which bytes are hashed (5.1.6.4.3.1 to 5.1.6.4.3.4), all in network byte order:
//! - TCP or UDP over IPv4, when the matching hash type is enabled: source address,
//!   destination address, source port, destination port (12 bytes).
//! - Any other IPv4 packet, or a fragment (MF set or a non-zero offset, the first
//!   fragment included, as NDIS requires), when IPv4 is enabled: the two addresses (8).
//! - IPv6 the same way with 16-byte addresses (36 or 32 bytes). Extension headers are
//!   skipped to find TCP or UDP; a Fragment header, ESP or an unknown header ends the
//!   walk with the 2-tuple.
//!
//! The `_EX` hash types (home address and routing header type 2 addresses) are not
//! implemented: [`hash_types::SUPPORTED`] leaves them out, and [`Toeplitz::flow_hash`]
//! ignores them, hashing IPv6 packets with extension headers as the spec says to when
//! no `_EX` type is enabled.

use std::fmt;

use crate::csum::{PROTO_TCP, PROTO_UDP};
use crate::ethernet::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN, HDR_LEN};
use crate::parse::ETHERTYPE_QINQ;

/// Length of the key the tables are built for, and the longest key accepted: the
/// `rss_max_key_size` a device reports must be at least 40 (virtio 1.2 5.1.4), and 40
/// bytes cover the longest input (36 bytes for TCP or UDP over IPv6).
pub const KEY_LEN: usize = 40;

/// The key Microsoft publishes with its RSS verification suite, used by many NICs and
/// drivers as their default.
pub const DEFAULT_KEY: [u8; KEY_LEN] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0, 0xd0,
    0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42,
    0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

/// Hash type bits (VIRTIO_NET_HASH_TYPE_*, virtio 1.2 5.1.6.4.3.1), as found in
/// `supported_hash_types` of the device configuration and `hash_types` of the RSS and
/// hash configuration commands.
pub mod hash_types {
    /// VIRTIO_NET_HASH_TYPE_IPv4: IPv4 addresses.
    pub const IPV4: u32 = 1 << 0;
    /// VIRTIO_NET_HASH_TYPE_TCPv4: IPv4 addresses and TCP ports.
    pub const TCPV4: u32 = 1 << 1;
    /// VIRTIO_NET_HASH_TYPE_UDPv4: IPv4 addresses and UDP ports.
    pub const UDPV4: u32 = 1 << 2;
    /// VIRTIO_NET_HASH_TYPE_IPv6: IPv6 addresses.
    pub const IPV6: u32 = 1 << 3;
    /// VIRTIO_NET_HASH_TYPE_TCPv6: IPv6 addresses and TCP ports.
    pub const TCPV6: u32 = 1 << 4;
    /// VIRTIO_NET_HASH_TYPE_UDPv6: IPv6 addresses and UDP ports.
    pub const UDPV6: u32 = 1 << 5;
    /// VIRTIO_NET_HASH_TYPE_IP_EX (not implemented here).
    pub const IP_EX: u32 = 1 << 6;
    /// VIRTIO_NET_HASH_TYPE_TCP_EX (not implemented here).
    pub const TCP_EX: u32 = 1 << 7;
    /// VIRTIO_NET_HASH_TYPE_UDP_EX (not implemented here).
    pub const UDP_EX: u32 = 1 << 8;
    /// The types [`super::Toeplitz::flow_hash`] implements.
    pub const SUPPORTED: u32 = IPV4 | TCPV4 | UDPV4 | IPV6 | TCPV6 | UDPV6;
}

/// What a hash was computed over: the `hash_report` values (VIRTIO_NET_HASH_REPORT_*,
/// virtio 1.2 5.1.6.4.4) other than NONE, which is a frame without a hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum HashReport {
    /// IPv4 addresses.
    Ipv4 = 1,
    /// IPv4 addresses and TCP ports.
    Tcpv4 = 2,
    /// IPv4 addresses and UDP ports.
    Udpv4 = 3,
    /// IPv6 addresses.
    Ipv6 = 4,
    /// IPv6 addresses and TCP ports.
    Tcpv6 = 5,
    /// IPv6 addresses and UDP ports.
    Udpv6 = 6,
}

impl HashReport {
    /// VIRTIO_NET_HASH_REPORT_NONE.
    pub const NONE: u16 = 0;

    /// The value of the `hash_report` field.
    pub fn to_wire(self) -> u16 {
        self as u16
    }
}

/// A frame's hash and what it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowHash {
    /// The Toeplitz hash.
    pub value: u32,
    /// The fields hashed.
    pub report: HashReport,
}

/// A key longer than [`KEY_LEN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyTooLong(pub usize);

impl fmt::Display for KeyTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RSS key of {} bytes is longer than {KEY_LEN}", self.0)
    }
}

impl std::error::Error for KeyTooLong {}

/// The Toeplitz hash under one key, with a lookup table per input byte position.
///
/// The tables take 40 KiB; build one per key (at configuration time) and share it.
/// Hashing does not allocate.
#[derive(Clone)]
pub struct Toeplitz {
    key: [u8; KEY_LEN],
    /// `table[i][b]`: the contribution of byte value `b` at input position `i`.
    table: [[u32; 256]; KEY_LEN],
}

/// The hasher for [`DEFAULT_KEY`], built at compile time.
pub static DEFAULT_TOEPLITZ: Toeplitz = Toeplitz::from_key(&DEFAULT_KEY);

impl Toeplitz {
    /// Builds the tables for a 40-byte key.
    pub const fn from_key(key: &[u8; KEY_LEN]) -> Self {
        let mut table = [[0u32; 256]; KEY_LEN];
        let mut pos = 0;
        while pos < KEY_LEN {
            // Key bits 8*pos .. 8*pos+39, left-aligned in the low 40 bits; bytes past
            // the key are zero.
            let mut window: u64 = 0;
            let mut i = 0;
            while i < 5 {
                let b = if pos + i < KEY_LEN { key[pos + i] } else { 0 };
                window = (window << 8) | b as u64;
                i += 1;
            }
            // Input bit 7 - k of this byte (k = 0 is the most significant) selects the
            // 32 key bits starting k bits into the window.
            let mut bit = [0u32; 8];
            let mut k = 0;
            while k < 8 {
                bit[7 - k] = (window >> (8 - k)) as u32;
                k += 1;
            }
            // Each value is the value without its lowest set bit, plus that bit.
            let mut v = 1;
            while v < 256 {
                table[pos][v] = table[pos][v & (v - 1)] ^ bit[v.trailing_zeros() as usize];
                v += 1;
            }
            pos += 1;
        }
        Toeplitz { key: *key, table }
    }

    /// Builds the tables for a key of at most [`KEY_LEN`] bytes. A shorter key is
    /// extended with zero bits, which is what the definition gives: key bits past the
    /// end contribute nothing.
    pub fn new(key: &[u8]) -> Result<Self, KeyTooLong> {
        let mut k = [0u8; KEY_LEN];
        k.get_mut(..key.len()).ok_or(KeyTooLong(key.len()))?.copy_from_slice(key);
        Ok(Self::from_key(&k))
    }

    /// The key, zero-extended to [`KEY_LEN`] bytes.
    pub fn key(&self) -> &[u8; KEY_LEN] {
        &self.key
    }

    /// The hash of `input`. Bytes past the first [`KEY_LEN`] meet only key bits past
    /// the key, which are zero, and so do not change the hash.
    #[inline]
    pub fn hash(&self, input: &[u8]) -> u32 {
        self.fold(0, input)
    }

    /// XOR of the contributions of `bytes` placed at input position `at`.
    #[inline(always)]
    fn fold(&self, at: usize, bytes: &[u8]) -> u32 {
        let mut h = 0;
        for (t, &b) in self.table.iter().skip(at).zip(bytes) {
            h ^= t[usize::from(b)];
        }
        h
    }

    /// The hash of an IPv4 flow: source and destination address, then, when `ports`
    /// is given, source and destination port, all in network byte order.
    #[inline]
    pub fn hash_v4(&self, src: [u8; 4], dst: [u8; 4], ports: Option<(u16, u16)>) -> u32 {
        let mut h = self.fold(0, &src) ^ self.fold(4, &dst);
        if let Some((sp, dp)) = ports {
            h ^= self.fold(8, &sp.to_be_bytes()) ^ self.fold(10, &dp.to_be_bytes());
        }
        h
    }

    /// The hash of an IPv6 flow, laid out as for [`Toeplitz::hash_v4`] with 16-byte
    /// addresses.
    #[inline]
    pub fn hash_v6(&self, src: &[u8; 16], dst: &[u8; 16], ports: Option<(u16, u16)>) -> u32 {
        let mut h = self.fold(0, src) ^ self.fold(16, dst);
        if let Some((sp, dp)) = ports {
            h ^= self.fold(32, &sp.to_be_bytes()) ^ self.fold(34, &dp.to_be_bytes());
        }
        h
    }

    /// The hash of an Ethernet frame (untagged, or with one or two VLAN tags) under
    /// the enabled hash types `types` ([`hash_types`]), or `None` when the frame gets
    /// no hash: not IP, an IP header cut short or malformed, or no enabled type that
    /// applies. The packet goes to the unclassified queue then.
    ///
    /// Only headers are read: the IP header, extension headers and the first bytes of
    /// the transport header. Lengths in the IP header are not checked against the
    /// frame; a transport header counts as present when its fixed part (20 bytes for
    /// TCP, 8 for UDP) is in the frame.
    pub fn flow_hash(&self, frame: &[u8], types: u32) -> Option<FlowHash> {
        let (ethertype, l3) = l3_offset(frame)?;
        let ip = frame.get(l3..)?;
        match ethertype {
            ETHERTYPE_IPV4 => self.flow_hash_v4(ip, types),
            ETHERTYPE_IPV6 => self.flow_hash_v6(ip, types),
            _ => None,
        }
    }

    fn flow_hash_v4(&self, ip: &[u8], types: u32) -> Option<FlowHash> {
        use hash_types::{IPV4, TCPV4, UDPV4};
        if types & (IPV4 | TCPV4 | UDPV4) == 0 {
            return None;
        }
        let h: &[u8; 20] = ip.first_chunk()?;
        let ihl = usize::from(h[0] & 0x0f) * 4;
        if h[0] >> 4 != 4 || ihl < 20 {
            return None;
        }
        let src = [h[12], h[13], h[14], h[15]];
        let dst = [h[16], h[17], h[18], h[19]];
        let fragment = u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0;
        if !fragment {
            let l4 = match h[9] {
                PROTO_TCP if types & TCPV4 != 0 => Some((20, HashReport::Tcpv4)),
                PROTO_UDP if types & UDPV4 != 0 => Some((8, HashReport::Udpv4)),
                _ => None,
            };
            if let Some((min_len, report)) = l4 {
                if let Some(ports) = ports(ip, ihl, min_len) {
                    return Some(FlowHash { value: self.hash_v4(src, dst, Some(ports)), report });
                }
            }
        }
        if types & IPV4 == 0 {
            return None;
        }
        Some(FlowHash { value: self.hash_v4(src, dst, None), report: HashReport::Ipv4 })
    }

    fn flow_hash_v6(&self, ip: &[u8], types: u32) -> Option<FlowHash> {
        use hash_types::{IPV6, TCPV6, UDPV6};
        if types & (IPV6 | TCPV6 | UDPV6) == 0 {
            return None;
        }
        let h: &[u8; 40] = ip.first_chunk()?;
        if h[0] >> 4 != 6 {
            return None;
        }
        let src: &[u8; 16] = h[8..24].try_into().ok()?;
        let dst: &[u8; 16] = h[24..40].try_into().ok()?;
        if let Some((proto, off)) = ipv6_transport(ip, h[6]) {
            let l4 = match proto {
                PROTO_TCP if types & TCPV6 != 0 => Some((20, HashReport::Tcpv6)),
                PROTO_UDP if types & UDPV6 != 0 => Some((8, HashReport::Udpv6)),
                _ => None,
            };
            if let Some((min_len, report)) = l4 {
                if let Some(ports) = ports(ip, off, min_len) {
                    return Some(FlowHash { value: self.hash_v6(src, dst, Some(ports)), report });
                }
            }
        }
        if types & IPV6 == 0 {
            return None;
        }
        Some(FlowHash { value: self.hash_v6(src, dst, None), report: HashReport::Ipv6 })
    }
}

impl Default for Toeplitz {
    fn default() -> Self {
        DEFAULT_TOEPLITZ.clone()
    }
}

impl fmt::Debug for Toeplitz {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Toeplitz { key: ")?;
        for b in self.key {
            write!(f, "{b:02x}")?;
        }
        f.write_str(" }")
    }
}

/// The hash of `frame` under [`DEFAULT_KEY`] with every [`hash_types::SUPPORTED`] type
/// enabled; see [`Toeplitz::flow_hash`].
#[inline]
pub fn flow_hash(frame: &[u8]) -> Option<u32> {
    DEFAULT_TOEPLITZ.flow_hash(frame, hash_types::SUPPORTED).map(|h| h.value)
}

/// The EtherType after at most two VLAN tags (802.1Q or 802.1ad), and the offset of
/// what follows it.
#[inline]
fn l3_offset(frame: &[u8]) -> Option<(u16, usize)> {
    let mut off = HDR_LEN;
    let mut ethertype = be16(frame, off - 2)?;
    for _ in 0..2 {
        if ethertype != ETHERTYPE_VLAN && ethertype != ETHERTYPE_QINQ {
            break;
        }
        off += 4;
        ethertype = be16(frame, off - 2)?;
    }
    Some((ethertype, off))
}

#[inline]
fn be16(b: &[u8], at: usize) -> Option<u16> {
    let [x, y] = *b.get(at..)?.first_chunk()?;
    Some(u16::from_be_bytes([x, y]))
}

/// Source and destination port of a transport header at `off`, when `min_len` bytes
/// of it are in `ip`.
#[inline]
fn ports(ip: &[u8], off: usize, min_len: usize) -> Option<(u16, u16)> {
    let l4 = ip.get(off..)?;
    if l4.len() < min_len {
        return None;
    }
    let &[a, b, c, d] = l4.first_chunk()?;
    Some((u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d])))
}

/// Most IPv6 extension headers walked before giving up on the transport header.
const MAX_IPV6_EXTENSIONS: usize = 8;

/// The upper-layer protocol of an IPv6 packet and its offset from the IPv6 header, or
/// `None` when a Fragment header, ESP, No Next Header, an unknown header or a
/// truncated one comes first. Walks Hop-by-Hop, Routing, Destination Options,
/// Mobility, HIP and Shim6 (RFC 8200 4, RFC 6564 format) and AH (RFC 4302 2.2).
fn ipv6_transport(ip: &[u8], first: u8) -> Option<(u8, usize)> {
    let mut next = first;
    let mut off = 40;
    for _ in 0..MAX_IPV6_EXTENSIONS {
        let len_units = |unit: usize, extra: usize| -> Option<usize> {
            Some((usize::from(*ip.get(off + 1)?) + extra) * unit)
        };
        let len = match next {
            PROTO_TCP | PROTO_UDP => return Some((next, off)),
            // Hop-by-Hop, Routing, Destination Options, Mobility, HIP, Shim6: 8-octet
            // units, not counting the first 8.
            0 | 43 | 60 | 135 | 139 | 140 => len_units(8, 1)?,
            // AH: 4-octet units, minus 2.
            51 => len_units(4, 2)?,
            _ => return None,
        };
        next = *ip.get(off)?;
        off += len;
    }
    matches!(next, PROTO_TCP | PROTO_UDP).then_some((next, off))
}

/// Longest indirection table: `indirection_table_mask` is 16 bits.
pub const MAX_INDIRECTION_LEN: usize = 1 << 16;

/// Length of the table [`IndirectionTable::spread`] is usually given: the smallest
/// `rss_max_indirection_table_length` a device may report (virtio 1.2 5.1.4).
pub const DEFAULT_INDIRECTION_LEN: usize = 128;

/// Why an indirection table was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndirectionError {
    /// The length is not a power of two between 1 and [`MAX_INDIRECTION_LEN`].
    BadLength(usize),
    /// No queue to spread over.
    NoQueues,
}

impl fmt::Display for IndirectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            IndirectionError::BadLength(n) => write!(
                f,
                "indirection table length {n} is not a power of two between 1 and {MAX_INDIRECTION_LEN}"
            ),
            IndirectionError::NoQueues => write!(f, "no receive queue to spread over"),
        }
    }
}

impl std::error::Error for IndirectionError {}

/// The RSS indirection table (`indirection_table` and `indirection_table_mask` of
/// `struct virtio_net_rss_config`, virtio 1.2 5.1.6.5 "Receive-side scaling"): a
/// packet with hash `h` goes to receive queue `table[h & mask]`. Entries are receive
/// queue numbers, 0 for receiveq1; what they index is up to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndirectionTable {
    entries: Box<[u16]>,
    /// `entries.len() - 1`.
    mask: u32,
}

impl IndirectionTable {
    /// A table with these entries; their number must be a power of two.
    pub fn new(entries: &[u16]) -> Result<Self, IndirectionError> {
        let n = entries.len();
        if !n.is_power_of_two() || n > MAX_INDIRECTION_LEN {
            return Err(IndirectionError::BadLength(n));
        }
        let mask = u32::try_from(n - 1).map_err(|_| IndirectionError::BadLength(n))?;
        Ok(IndirectionTable { entries: entries.into(), mask })
    }

    /// A table of `len` entries spreading hashes evenly over queues `0..queues`:
    /// entry `i` is `i % queues`.
    pub fn spread(len: usize, queues: u16) -> Result<Self, IndirectionError> {
        if queues == 0 {
            return Err(IndirectionError::NoQueues);
        }
        if !len.is_power_of_two() || len > MAX_INDIRECTION_LEN {
            return Err(IndirectionError::BadLength(len));
        }
        let entries: Vec<u16> = (0..len).map(|i| (i % usize::from(queues)) as u16).collect();
        Self::new(&entries)
    }

    /// The queue for a hash: `entries[hash & mask]`.
    #[inline]
    pub fn queue(&self, hash: u32) -> u16 {
        // In range: the length is mask + 1.
        self.entries.get((hash & self.mask) as usize).copied().unwrap_or(0)
    }

    /// `indirection_table_mask`: the number of entries minus one.
    pub fn mask(&self) -> u16 {
        self.mask as u16
    }

    /// The entries.
    pub fn entries(&self) -> &[u16] {
        &self.entries
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false: a table has at least one entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Source, source port, destination, destination port, hash over the addresses,
    /// hash over addresses and ports.
    type Vector<A> = (A, u16, A, u16, u32, u32);

    /// Microsoft's RSS verification suite, IPv4.
    const V4: [Vector<[u8; 4]>; 5] = [
        ([66, 9, 149, 187], 2794, [161, 142, 100, 80], 1766, 0x323e8fc2, 0x51ccc178),
        ([199, 92, 111, 2], 14230, [65, 69, 140, 83], 4739, 0xd718262a, 0xc626b0ea),
        ([24, 19, 198, 95], 12898, [12, 22, 207, 184], 38024, 0xd2d0a5de, 0x5c2b394a),
        ([38, 27, 205, 30], 48228, [209, 142, 163, 6], 2217, 0x82989176, 0xafc7327f),
        ([153, 39, 163, 191], 44251, [202, 188, 127, 2], 1303, 0x5d1809c5, 0x10e828a2),
    ];

    /// The same suite, IPv6.
    const V6: [Vector<&str>; 3] = [
        ("3ffe:2501:200:1fff::7", 2794, "3ffe:2501:200:3::1", 1766, 0x2cc18cd5, 0x40207d3d),
        ("3ffe:501:8::260:97ff:fe40:efab", 14230, "ff02::1", 4739, 0x0f0c461c, 0xdde51bbf),
        (
            "3ffe:1900:4545:3:200:f8ff:fe21:67cf",
            44251,
            "fe80::200:f8ff:fe21:67cf",
            38024,
            0x4b61e985,
            0x02d1feef,
        ),
    ];

    fn v6(s: &str) -> [u8; 16] {
        s.parse::<std::net::Ipv6Addr>().unwrap().octets()
    }

    /// The definition, one bit at a time.
    fn reference(key: &[u8], input: &[u8]) -> u32 {
        let key_bit = |i: usize| key.get(i / 8).is_some_and(|b| b & (0x80 >> (i % 8)) != 0);
        let mut h = 0u32;
        for i in 0..input.len() * 8 {
            if input[i / 8] & (0x80 >> (i % 8)) != 0 {
                h ^= (0..32).fold(0u32, |w, j| (w << 1) | u32::from(key_bit(i + j)));
            }
        }
        h
    }

    #[test]
    fn microsoft_ipv4_vectors() {
        let t = &DEFAULT_TOEPLITZ;
        for (src, sp, dst, dp, two, four) in V4 {
            assert_eq!(t.hash_v4(src, dst, None), two, "{src:?} -> {dst:?}");
            assert_eq!(t.hash_v4(src, dst, Some((sp, dp))), four, "{src:?}:{sp} -> {dst:?}:{dp}");
            let mut input = [src, dst].concat();
            assert_eq!(t.hash(&input), two);
            input.extend_from_slice(&sp.to_be_bytes());
            input.extend_from_slice(&dp.to_be_bytes());
            assert_eq!(t.hash(&input), four);
            assert_eq!(reference(&DEFAULT_KEY, &input), four);
        }
    }

    #[test]
    fn microsoft_ipv6_vectors() {
        let t = &DEFAULT_TOEPLITZ;
        for (src, sp, dst, dp, two, four) in V6 {
            let (s, d) = (v6(src), v6(dst));
            assert_eq!(t.hash_v6(&s, &d, None), two, "{src} -> {dst}");
            assert_eq!(t.hash_v6(&s, &d, Some((sp, dp))), four, "{src}.{sp} -> {dst}.{dp}");
            let mut input = [s, d].concat();
            assert_eq!(t.hash(&input), two);
            input.extend_from_slice(&sp.to_be_bytes());
            input.extend_from_slice(&dp.to_be_bytes());
            assert_eq!(t.hash(&input), four);
            assert_eq!(reference(&DEFAULT_KEY, &input), four);
        }
    }

    #[test]
    fn tables_match_the_definition() {
        let key: Vec<u8> = (0..KEY_LEN as u8).map(|i| i.wrapping_mul(73).wrapping_add(11)).collect();
        let t = Toeplitz::new(&key).unwrap();
        let input: Vec<u8> = (0..48u8).map(|i| i.wrapping_mul(151) ^ 0x5a).collect();
        for n in 0..=input.len() {
            assert_eq!(t.hash(&input[..n]), reference(&key, &input[..n]), "{n} bytes");
        }
        for n in 0..=KEY_LEN {
            let short = Toeplitz::new(&key[..n]).unwrap();
            assert_eq!(short.hash(&input), reference(&key[..n], &input), "key of {n} bytes");
        }
    }

    #[test]
    fn keys() {
        assert_eq!(Toeplitz::new(&[0; 41]).unwrap_err(), KeyTooLong(41));
        assert_eq!(Toeplitz::new(&DEFAULT_KEY).unwrap().key(), &DEFAULT_KEY);
        assert_eq!(Toeplitz::new(&[1, 2]).unwrap().key()[..3], [1, 2, 0]);
        assert_eq!(Toeplitz::default().hash(&[1, 2, 3]), DEFAULT_TOEPLITZ.hash(&[1, 2, 3]));
        assert!(format!("{:?}", Toeplitz::default()).contains("6d5a56da"));
        assert_eq!(Toeplitz::new(&[]).unwrap().hash(&[0xff; 40]), 0);
    }

    #[test]
    fn report_values() {
        assert_eq!(HashReport::NONE, 0);
        let all = [
            HashReport::Ipv4,
            HashReport::Tcpv4,
            HashReport::Udpv4,
            HashReport::Ipv6,
            HashReport::Tcpv6,
            HashReport::Udpv6,
        ];
        let types = [
            hash_types::IPV4,
            hash_types::TCPV4,
            hash_types::UDPV4,
            hash_types::IPV6,
            hash_types::TCPV6,
            hash_types::UDPV6,
        ];
        // VIRTIO_NET_HASH_TYPE_XXX = 1 << (VIRTIO_NET_HASH_REPORT_XXX - 1).
        for (r, t) in all.into_iter().zip(types) {
            assert_eq!(1u32 << (r.to_wire() - 1), t);
        }
    }

    #[test]
    fn indirection() {
        let t = IndirectionTable::spread(DEFAULT_INDIRECTION_LEN, 3).unwrap();
        assert_eq!((t.len(), t.mask()), (128, 127));
        assert_eq!(t.entries()[..7], [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(t.queue(0x51ccc178), (0x78 % 3) as u16);
        assert_eq!(t.queue(u32::MAX), (127 % 3) as u16);
        let mut counts = [0usize; 3];
        for h in 0..1024u32 {
            counts[usize::from(t.queue(h.wrapping_mul(0x9e37_79b9)))] += 1;
        }
        assert!(counts.iter().all(|&c| c > 250), "{counts:?}");

        let one = IndirectionTable::new(&[7]).unwrap();
        assert_eq!((one.queue(0), one.queue(u32::MAX), one.mask()), (7, 7, 0));
        let max = IndirectionTable::spread(MAX_INDIRECTION_LEN, 1000).unwrap();
        assert_eq!((max.mask(), max.queue(u32::MAX)), (0xffff, (0xffff % 1000) as u16));

        assert_eq!(IndirectionTable::new(&[]), Err(IndirectionError::BadLength(0)));
        assert_eq!(IndirectionTable::new(&[0; 3]), Err(IndirectionError::BadLength(3)));
        assert_eq!(IndirectionTable::spread(1 << 17, 2), Err(IndirectionError::BadLength(1 << 17)));
        assert_eq!(IndirectionTable::spread(128, 0), Err(IndirectionError::NoQueues));
    }
}
