//! Test frames: Ethernet frames that carry a sequence number, a timestamp and a fixed
//! pattern, so that a receiver can tell its own frames from others and check that
//! every byte survived the trip.
//!
//! Layout (multi-byte fields little-endian except the EtherType):
//!
//! | offset | bytes | field |
//! | --- | --- | --- |
//! | 0 | 6 | destination MAC |
//! | 6 | 6 | source MAC |
//! | 12 | 2 | EtherType 0x88b5 (IEEE 802 local experimental), big-endian |
//! | 14 | 4 | magic `VWTF` |
//! | 18 | 2 | frame length |
//! | 20 | 2 | queue pair that sent it |
//! | 22 | 8 | sequence number |
//! | 30 | 8 | timestamp (ns, sender's clock) |
//! | 38 | .. | pattern: byte `i` is `i as u8 ^ queue as u8 ^ 0xa5` |

/// EtherType of test frames: IEEE 802 local experimental EtherType 1.
pub const ETHERTYPE: u16 = 0x88b5;
/// Magic after the Ethernet header.
pub const MAGIC: [u8; 4] = *b"VWTF";
/// Bytes before the pattern.
pub const HEADER_LEN: usize = 38;
/// Smallest test frame: the minimum Ethernet frame without FCS.
pub const MIN_LEN: usize = 60;

/// What a frame says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// Queue pair that sent it.
    pub queue: u16,
    /// Sequence number.
    pub seq: u64,
    /// Sender's timestamp in nanoseconds.
    pub stamp_ns: u64,
    /// Length.
    pub len: usize,
}

/// Why a frame failed the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not a test frame (EtherType or magic differ, or too short to tell).
    #[error("not a test frame")]
    NotOurs,
    /// The length field disagrees with the received length.
    #[error("frame says {stated} bytes, received {actual}")]
    BadLength { stated: usize, actual: usize },
    /// A pattern byte differs.
    #[error("pattern byte {offset} differs")]
    Corrupt { offset: usize },
}

#[inline(always)]
fn pattern(i: usize, queue: u16) -> u8 {
    (i as u8) ^ (queue as u8) ^ 0xa5
}

/// Writes a complete test frame of `buf.len()` bytes (at least [`MIN_LEN`], at most
/// 65535) with sequence number and timestamp 0.
pub fn build(buf: &mut [u8], dst: [u8; 6], src: [u8; 6], queue: u16) {
    assert!(buf.len() >= MIN_LEN && buf.len() <= u16::MAX as usize, "test frame length out of range");
    buf[0..6].copy_from_slice(&dst);
    buf[6..12].copy_from_slice(&src);
    buf[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
    buf[14..18].copy_from_slice(&MAGIC);
    let len = buf.len() as u16;
    buf[18..20].copy_from_slice(&len.to_le_bytes());
    buf[20..22].copy_from_slice(&queue.to_le_bytes());
    buf[22..38].fill(0);
    for (i, b) in buf.iter_mut().enumerate().skip(HEADER_LEN) {
        *b = pattern(i, queue);
    }
}

/// Sets the sequence number and timestamp of a frame made by [`build`].
#[inline]
pub fn stamp(buf: &mut [u8], seq: u64, stamp_ns: u64) {
    buf[22..30].copy_from_slice(&seq.to_le_bytes());
    buf[30..38].copy_from_slice(&stamp_ns.to_le_bytes());
}

/// Reads the header of a test frame without checking the pattern.
#[inline]
pub fn peek(frame: &[u8]) -> Result<FrameInfo, FrameError> {
    if frame.len() < HEADER_LEN || frame[12..14] != ETHERTYPE.to_be_bytes() || frame[14..18] != MAGIC {
        return Err(FrameError::NotOurs);
    }
    let u16_at = |o: usize| u16::from_le_bytes([frame[o], frame[o + 1]]);
    let u64_at = |o: usize| u64::from_le_bytes(frame[o..o + 8].try_into().expect("8 bytes"));
    let stated = u16_at(18) as usize;
    if stated != frame.len() {
        return Err(FrameError::BadLength { stated, actual: frame.len() });
    }
    Ok(FrameInfo { queue: u16_at(20), seq: u64_at(22), stamp_ns: u64_at(30), len: stated })
}

/// Checks a received test frame completely: header, length and every pattern byte.
pub fn check(frame: &[u8]) -> Result<FrameInfo, FrameError> {
    let info = peek(frame)?;
    if let Some(offset) = frame
        .iter()
        .enumerate()
        .skip(HEADER_LEN)
        .find(|(i, b)| **b != pattern(*i, info.queue))
        .map(|(i, _)| i)
    {
        return Err(FrameError::Corrupt { offset });
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_stamp_check() {
        let mut f = vec![0u8; 128];
        build(&mut f, [2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1], 3);
        stamp(&mut f, 77, 1234);
        let i = check(&f).unwrap();
        assert_eq!(i, FrameInfo { queue: 3, seq: 77, stamp_ns: 1234, len: 128 });
        f[100] ^= 1;
        assert_eq!(check(&f), Err(FrameError::Corrupt { offset: 100 }));
        assert_eq!(check(&f[..64]), Err(FrameError::BadLength { stated: 128, actual: 64 }));
        f[12] = 8;
        assert_eq!(check(&f), Err(FrameError::NotOurs));
    }
}
