//! Ethernet II frames (IEEE 802.3) and 802.1Q tags: addresses, EtherType, helpers.

use std::fmt;

/// Length of an Ethernet header without a VLAN tag.
pub const HDR_LEN: usize = 14;
/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of RARP (used for gratuitous announcements after migration).
pub const ETHERTYPE_RARP: u16 = 0x8035;
/// EtherType of an 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// A 48-bit MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: Mac = Mac([0xff; 6]);

    /// True for group (multicast or broadcast) addresses.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }

    /// True for the broadcast address.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// True for 00:00:00:00:00:00.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(format!("MAC address {s:?}: expected six hex bytes separated by ':'"));
        }
        let mut b = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.is_empty() || p.len() > 2 {
                return Err(format!("MAC address {s:?}: bad byte {p:?}"));
            }
            b[i] = u8::from_str_radix(p, 16).map_err(|_| format!("MAC address {s:?}: bad byte {p:?}"))?;
        }
        Ok(Mac(b))
    }
}

/// Destination, source and EtherType of a frame (the EtherType after one VLAN tag is
/// not looked through here).
pub fn parse_header(frame: &[u8]) -> Option<(Mac, Mac, u16)> {
    if frame.len() < HDR_LEN {
        return None;
    }
    let mut d = [0u8; 6];
    let mut s = [0u8; 6];
    d.copy_from_slice(&frame[..6]);
    s.copy_from_slice(&frame[6..12]);
    Some((Mac(d), Mac(s), u16::from_be_bytes([frame[12], frame[13]])))
}

/// Swaps destination and source addresses in place (what a reflector does).
pub fn swap_macs(frame: &mut [u8]) {
    if frame.len() >= 12 {
        for i in 0..6 {
            frame.swap(i, 6 + i);
        }
    }
}

/// Builds the gratuitous RARP frame a vhost-user backend sends for a migrated guest
/// (VHOST_USER_SEND_RARP): broadcast, RARP "reverse request" (opcode 3) announcing
/// `mac`, as QEMU's announce does. 60 bytes (minimum frame without FCS).
pub fn rarp_announce(mac: Mac) -> [u8; 60] {
    let mut f = [0u8; 60];
    f[..6].copy_from_slice(&Mac::BROADCAST.0);
    f[6..12].copy_from_slice(&mac.0);
    f[12..14].copy_from_slice(&ETHERTYPE_RARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // hardware type: Ethernet
    f[16..18].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes()); // protocol type
    f[18] = 6; // hardware address length
    f[19] = 4; // protocol address length
    f[20..22].copy_from_slice(&3u16.to_be_bytes()); // reverse request
    f[22..28].copy_from_slice(&mac.0); // sender hardware address
    f[32..38].copy_from_slice(&mac.0); // target hardware address
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parse_and_print() {
        let m: Mac = "52:54:00:ab:cd:0f".parse().unwrap();
        assert_eq!(m.to_string(), "52:54:00:ab:cd:0f");
        assert!(!m.is_multicast());
        assert!("01:00:5e:00:00:01".parse::<Mac>().unwrap().is_multicast());
        assert!("52:54:00:ab:cd".parse::<Mac>().is_err());
        assert!("52:54:00:ab:cd:zz".parse::<Mac>().is_err());
        assert!("52:54:00:ab:cd:123".parse::<Mac>().is_err());
    }

    #[test]
    fn swap_and_parse() {
        let mut f = [0u8; 60];
        f[..6].copy_from_slice(&[1; 6]);
        f[6..12].copy_from_slice(&[2; 6]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        swap_macs(&mut f);
        let (d, s, t) = parse_header(&f).unwrap();
        assert_eq!((d, s, t), (Mac([2; 6]), Mac([1; 6]), ETHERTYPE_IPV4));
        assert!(parse_header(&f[..13]).is_none());
    }

    #[test]
    fn rarp_frame() {
        let m = Mac([0x52, 0x54, 0, 1, 2, 3]);
        let f = rarp_announce(m);
        let (d, s, t) = parse_header(&f).unwrap();
        assert!(d.is_broadcast());
        assert_eq!(s, m);
        assert_eq!(t, ETHERTYPE_RARP);
        assert_eq!(&f[22..28], &m.0);
    }
}
