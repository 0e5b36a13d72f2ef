//! The Internet checksum: the 16-bit ones' complement of the ones' complement sum of
//! 16-bit big-endian words (RFC 1071), its incremental update (RFC 1624), the IPv4
//! header checksum (RFC 791 3.1) and the TCP/UDP pseudo-header sums (RFC 9293 3.1,
//! RFC 768, RFC 8200 8.1).
//!
//! Everything here works on byte slices and fixed arrays; nothing allocates.

use std::fmt;

/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;

/// Adds with end-around carry in 64 bits (RFC 1071 2(A): the sum is independent of the
/// width of the accumulator as long as carries are added back in).
#[inline(always)]
fn add64(acc: u64, v: u64) -> u64 {
    let (s, carry) = acc.overflowing_add(v);
    s + u64::from(carry)
}

/// Folds a 64-bit ones' complement accumulator down to 16 bits (RFC 1071 4.1).
#[inline]
fn fold64(mut s: u64) -> u16 {
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// Sum of `data` taken as native-endian words, 8 bytes at a time, then folded to 16
/// bits. By the byte-order independence of the sum (RFC 1071 2(B)) the result is the
/// big-endian sum with its two bytes in native order; [`Sum`] converts once at the end.
/// A trailing odd byte is padded with a zero byte on its right, as RFC 1071 specifies.
#[inline]
fn sum_native(data: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        if let Ok(w) = <[u8; 8]>::try_from(c) {
            acc = add64(acc, u64::from_ne_bytes(w));
        }
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        if let Some(dst) = w.get_mut(..rest.len()) {
            dst.copy_from_slice(rest);
        }
        acc = add64(acc, u64::from_ne_bytes(w));
    }
    fold64(acc)
}

/// A running ones' complement sum over a byte stream given in any number of pieces.
///
/// Pieces may have odd lengths: a piece that starts at an odd position of the stream
/// contributes its own sum with the two bytes swapped (RFC 1071 2(B)), so the result is
/// the same as summing the concatenation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sum {
    /// Accumulated sum of native-order 16-bit values, carries not yet folded.
    acc: u64,
    /// True when the bytes added so far have an odd total length.
    odd: bool,
}

impl Sum {
    /// An empty sum.
    pub const fn new() -> Self {
        Self { acc: 0, odd: false }
    }

    /// Appends bytes to the stream.
    #[inline]
    pub fn add_bytes(&mut self, data: &[u8]) -> &mut Self {
        let mut s = sum_native(data);
        if self.odd {
            s = s.swap_bytes();
        }
        self.acc = add64(self.acc, u64::from(s));
        self.odd ^= data.len() % 2 == 1;
        self
    }

    /// Appends a 16-bit big-endian word to the stream.
    #[inline]
    pub fn add_u16(&mut self, v: u16) -> &mut Self {
        self.add_bytes(&v.to_be_bytes())
    }

    /// Appends a 32-bit big-endian word to the stream.
    #[inline]
    pub fn add_u32(&mut self, v: u32) -> &mut Self {
        self.add_bytes(&v.to_be_bytes())
    }

    /// Adds a separately computed (folded) sum of a block that starts at an even
    /// position, whatever the parity of the stream so far (used for pseudo-headers).
    #[inline]
    pub fn add_sum(&mut self, folded: u16) -> &mut Self {
        self.acc = add64(self.acc, u64::from(folded.to_be()));
        self
    }

    /// The ones' complement sum folded to 16 bits, in host order (write it with
    /// `to_be_bytes`). This is the value a partially checksummed packet carries in its
    /// checksum field (virtio 1.x 5.1.6.2 point 2).
    #[inline]
    pub fn fold(&self) -> u16 {
        u16::from_be(fold64(self.acc))
    }

    /// The checksum: ones' complement of [`Sum::fold`].
    #[inline]
    pub fn checksum(&self) -> u16 {
        !self.fold()
    }
}

/// The ones' complement sum of `data`, folded (RFC 1071).
pub fn ones_sum(data: &[u8]) -> u16 {
    Sum::new().add_bytes(data).fold()
}

/// The Internet checksum of `data` (RFC 1071): the ones' complement of [`ones_sum`].
pub fn checksum(data: &[u8]) -> u16 {
    !ones_sum(data)
}

/// True when `data`, checksum field included, sums to all ones: the receiver's check of
/// RFC 1071 1(3).
pub fn verify(data: &[u8]) -> bool {
    ones_sum(data) == 0xffff
}

/// Ones' complement addition of two folded sums.
pub fn add(a: u16, b: u16) -> u16 {
    fold64(u64::from(a) + u64::from(b))
}

/// Updates checksum `check` after a 16-bit word of the covered data changed from `old`
/// to `new`: HC' = ~(~HC + ~m + m') (RFC 1624 section 3, eqn. 3).
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    !fold64(u64::from(!check) + u64::from(!old) + u64::from(new))
}

/// [`update16`] for a 32-bit field (two adjacent 16-bit words at an even position).
pub fn update32(check: u16, old: u32, new: u32) -> u16 {
    let hi = update16(check, (old >> 16) as u16, (new >> 16) as u16);
    update16(hi, old as u16, new as u16)
}

/// The IPv4 header checksum of `header` (RFC 791 3.1): the checksum of the header with
/// its checksum field (bytes 10..12) taken as zero. `header` is the whole header,
/// options included (IHL * 4 bytes).
pub fn ipv4_header_checksum(header: &[u8]) -> u16 {
    let mut s = Sum::new();
    s.add_bytes(header.get(..10).unwrap_or(header));
    s.add_bytes(header.get(12..).unwrap_or(&[]));
    s.checksum()
}

/// Computes and stores the IPv4 header checksum of `header` (at least 20 bytes).
pub fn set_ipv4_header_checksum(header: &mut [u8]) -> Result<(), CsumError> {
    if header.len() < 20 {
        return Err(CsumError::Truncated { need: 20, len: header.len() });
    }
    let c = ipv4_header_checksum(header);
    write_u16(header, 10, c)
}

/// Sum of the IPv4 pseudo-header for TCP (RFC 9293 3.1) and UDP (RFC 768): source and
/// destination address, zero, protocol, and the TCP/UDP length (header plus data).
pub fn pseudo_header_v4(src: [u8; 4], dst: [u8; 4], protocol: u8, l4_len: u16) -> Sum {
    let mut s = Sum::new();
    s.add_bytes(&src).add_bytes(&dst).add_u16(u16::from(protocol)).add_u16(l4_len);
    s
}

/// Sum of the IPv6 pseudo-header for upper-layer checksums (RFC 8200 8.1): source and
/// destination address, the 32-bit upper-layer packet length, three zero bytes and the
/// next header value of the upper-layer protocol.
pub fn pseudo_header_v6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, l4_len: u32) -> Sum {
    let mut s = Sum::new();
    s.add_bytes(src).add_bytes(dst).add_u32(l4_len).add_u32(u32::from(next_header));
    s
}

/// Why a checksum could not be placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsumError {
    /// `csum_start` lies beyond the end of the frame.
    StartOutOfRange {
        /// The offending `csum_start`.
        start: usize,
        /// Frame length.
        len: usize,
    },
    /// The 2-byte field at `csum_start + csum_offset` does not lie inside the frame.
    OffsetOutOfRange {
        /// `csum_start`.
        start: usize,
        /// The offending `csum_offset`.
        offset: usize,
        /// Frame length.
        len: usize,
    },
    /// A header is shorter than its fixed part.
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        len: usize,
    },
}

impl fmt::Display for CsumError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CsumError::StartOutOfRange { start, len } => {
                write!(f, "checksum start {start} is beyond the {len}-byte frame")
            }
            CsumError::OffsetOutOfRange { start, offset, len } => {
                write!(f, "checksum field at {start}+{offset} does not fit in the {len}-byte frame")
            }
            CsumError::Truncated { need, len } => write!(f, "header needs {need} bytes, has {len}"),
        }
    }
}

impl std::error::Error for CsumError {}

/// Writes a big-endian u16 at `at`, failing instead of panicking when out of range.
pub(crate) fn write_u16(buf: &mut [u8], at: usize, v: u16) -> Result<(), CsumError> {
    let len = buf.len();
    let end = at.checked_add(2).ok_or(CsumError::Truncated { need: usize::MAX, len })?;
    let dst = buf.get_mut(at..end).ok_or(CsumError::Truncated { need: end, len })?;
    dst.copy_from_slice(&v.to_be_bytes());
    Ok(())
}

/// Completes a partial checksum in place, as a device does for a packet sent with
/// VIRTIO_NET_HDR_F_NEEDS_CSUM (virtio 1.x 5.1.6.2): the field at
/// `csum_start + csum_offset` already holds the pseudo-header sum, so the checksum of
/// `frame[csum_start..]` (to the end of the frame), stored in that field, completes it.
///
/// A computed value of 0x0000 is stored as 0xffff, which is the same number in ones'
/// complement: UDP reserves a transmitted zero for "no checksum" (RFC 768), and TCP
/// accepts either. Returns the stored value. Out-of-range offsets are an error; nothing
/// is written then.
pub fn complete_partial(frame: &mut [u8], csum_start: usize, csum_offset: usize) -> Result<u16, CsumError> {
    let len = frame.len();
    if csum_start > len {
        return Err(CsumError::StartOutOfRange { start: csum_start, len });
    }
    let field = csum_start
        .checked_add(csum_offset)
        .filter(|f| f.checked_add(2).is_some_and(|end| end <= len))
        .ok_or(CsumError::OffsetOutOfRange { start: csum_start, offset: csum_offset, len })?;
    let covered = frame.get(csum_start..).unwrap_or(&[]);
    let mut c = checksum(covered);
    if c == 0 {
        c = 0xffff;
    }
    write_u16(frame, field, c)?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte-wise RFC 1071 sum, the obvious way.
    fn reference(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for (i, b) in data.iter().enumerate() {
            s += if i % 2 == 0 { u32::from(*b) << 8 } else { u32::from(*b) };
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(ones_sum(&d), 0xddf2);
        assert_eq!(checksum(&d), !0xddf2);
    }

    #[test]
    fn all_lengths_and_splits_match_reference() {
        let data: Vec<u8> = (0..300u32).map(|i| (i.wrapping_mul(151) ^ 0x5a) as u8).collect();
        for len in 0..data.len() {
            let d = &data[..len];
            assert_eq!(ones_sum(d), reference(d), "len {len}");
            for split in [0, 1, len / 3, len / 2] {
                if split > len {
                    continue;
                }
                let mut s = Sum::new();
                s.add_bytes(&d[..split]).add_bytes(&d[split..]);
                assert_eq!(s.fold(), reference(d), "len {len} split {split}");
            }
        }
    }

    #[test]
    fn carries_in_all_ones() {
        let d = [0xffu8; 1000];
        assert_eq!(ones_sum(&d), 0xffff);
        assert_eq!(ones_sum(&[]), 0);
    }

    #[test]
    fn rfc1624_example() {
        // RFC 1624 section 4: HC = 0xdd2f, m = 0x5555 -> m' = 0x3285 gives HC' = 0x0000.
        assert_eq!(update16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn complete_partial_bounds() {
        let mut f = [0u8; 10];
        assert_eq!(complete_partial(&mut f, 11, 0), Err(CsumError::StartOutOfRange { start: 11, len: 10 }));
        assert!(matches!(complete_partial(&mut f, 4, 5), Err(CsumError::OffsetOutOfRange { .. })));
        assert!(matches!(complete_partial(&mut f, 4, usize::MAX), Err(CsumError::OffsetOutOfRange { .. })));
        assert!(complete_partial(&mut f, 4, 4).is_ok());
        assert!(verify(&f[4..]));
    }
}
