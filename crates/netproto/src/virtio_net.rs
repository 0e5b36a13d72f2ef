//! The virtio-net device (virtio 1.x section 5.1): feature bits, the header that
//! precedes every frame, and the device configuration space.

/// virtio-net feature bits (virtio 1.x 5.1.3) and the vhost-user ones that share the
/// feature word.
pub mod features {
    /// VIRTIO_NET_F_CSUM: device handles packets with partial checksum.
    pub const CSUM: u64 = 1 << 0;
    /// VIRTIO_NET_F_GUEST_CSUM: driver handles packets with partial checksum.
    pub const GUEST_CSUM: u64 = 1 << 1;
    /// VIRTIO_NET_F_CTRL_GUEST_OFFLOADS.
    pub const CTRL_GUEST_OFFLOADS: u64 = 1 << 2;
    /// VIRTIO_NET_F_MTU: the config space carries the MTU.
    pub const MTU: u64 = 1 << 3;
    /// VIRTIO_NET_F_MAC: the config space carries the MAC address.
    pub const MAC: u64 = 1 << 5;
    /// VIRTIO_NET_F_GUEST_TSO4.
    pub const GUEST_TSO4: u64 = 1 << 7;
    /// VIRTIO_NET_F_GUEST_TSO6.
    pub const GUEST_TSO6: u64 = 1 << 8;
    /// VIRTIO_NET_F_GUEST_ECN.
    pub const GUEST_ECN: u64 = 1 << 9;
    /// VIRTIO_NET_F_HOST_TSO4.
    pub const HOST_TSO4: u64 = 1 << 11;
    /// VIRTIO_NET_F_HOST_TSO6.
    pub const HOST_TSO6: u64 = 1 << 12;
    /// VIRTIO_NET_F_HOST_ECN.
    pub const HOST_ECN: u64 = 1 << 13;
    /// VIRTIO_NET_F_MRG_RXBUF: receive buffers can be merged.
    pub const MRG_RXBUF: u64 = 1 << 15;
    /// VIRTIO_NET_F_STATUS: the config space carries link status.
    pub const STATUS: u64 = 1 << 16;
    /// VIRTIO_NET_F_CTRL_VQ.
    pub const CTRL_VQ: u64 = 1 << 17;
    /// VIRTIO_NET_F_GUEST_ANNOUNCE.
    pub const GUEST_ANNOUNCE: u64 = 1 << 21;
    /// VIRTIO_NET_F_MQ: multiple queue pairs.
    pub const MQ: u64 = 1 << 22;
    /// VHOST_F_LOG_ALL: log every write into guest memory (live migration).
    pub const LOG_ALL: u64 = 1 << 26;
    /// VHOST_USER_F_PROTOCOL_FEATURES.
    pub const PROTOCOL_FEATURES: u64 = 1 << 30;
    /// VIRTIO_NET_F_GUEST_USO4.
    pub const GUEST_USO4: u64 = 1 << 54;
    /// VIRTIO_NET_F_GUEST_USO6.
    pub const GUEST_USO6: u64 = 1 << 55;
    /// VIRTIO_NET_F_HOST_USO.
    pub const HOST_USO: u64 = 1 << 56;
    /// VIRTIO_NET_F_GUEST_HDRLEN.
    pub const GUEST_HDRLEN: u64 = 1 << 59;
    /// VIRTIO_NET_F_RSC_EXT.
    pub const RSC_EXT: u64 = 1 << 61;
}

/// Size of the virtio-net header with VIRTIO_F_VERSION_1 or MRG_RXBUF (5.1.6): 12 bytes.
pub const HDR_LEN: usize = 12;

/// VIRTIO_NET_HDR_F_NEEDS_CSUM.
pub const HDR_F_NEEDS_CSUM: u8 = 1;
/// VIRTIO_NET_HDR_F_DATA_VALID.
pub const HDR_F_DATA_VALID: u8 = 2;
/// VIRTIO_NET_HDR_F_RSC_INFO.
pub const HDR_F_RSC_INFO: u8 = 4;

/// VIRTIO_NET_HDR_GSO_NONE.
pub const GSO_NONE: u8 = 0;
/// VIRTIO_NET_HDR_GSO_TCPV4.
pub const GSO_TCPV4: u8 = 1;
/// VIRTIO_NET_HDR_GSO_UDP.
pub const GSO_UDP: u8 = 3;
/// VIRTIO_NET_HDR_GSO_TCPV6.
pub const GSO_TCPV6: u8 = 4;
/// VIRTIO_NET_HDR_GSO_UDP_L4.
pub const GSO_UDP_L4: u8 = 5;
/// VIRTIO_NET_HDR_GSO_ECN.
pub const GSO_ECN: u8 = 0x80;

/// `struct virtio_net_hdr` (virtio 1.x 5.1.6), little-endian on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetHdr {
    /// VIRTIO_NET_HDR_F_*.
    pub flags: u8,
    /// VIRTIO_NET_HDR_GSO_*.
    pub gso_type: u8,
    /// Length of the headers to copy into each segment.
    pub hdr_len: u16,
    /// Maximum segment payload size.
    pub gso_size: u16,
    /// Where checksumming starts.
    pub csum_start: u16,
    /// Where to store the checksum, relative to `csum_start`.
    pub csum_offset: u16,
    /// Number of merged receive buffers (MRG_RXBUF; otherwise 0 on transmit).
    pub num_buffers: u16,
}

impl NetHdr {
    /// Parses the 12-byte header.
    pub fn parse(b: &[u8; HDR_LEN]) -> Self {
        let u = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Self {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
            num_buffers: u(10),
        }
    }

    /// Emits the 12-byte header.
    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b[10..12].copy_from_slice(&self.num_buffers.to_le_bytes());
        b
    }

    /// A header for a frame with no offload, as received through `num_buffers` buffers.
    pub fn plain(num_buffers: u16) -> Self {
        Self { num_buffers, ..Self::default() }
    }
}

/// VIRTIO_NET_S_LINK_UP.
pub const S_LINK_UP: u16 = 1;
/// VIRTIO_NET_S_ANNOUNCE.
pub const S_ANNOUNCE: u16 = 2;

/// The first fields of `struct virtio_net_config` (virtio 1.x 5.1.4) that virtwire fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    /// MAC address (VIRTIO_NET_F_MAC).
    pub mac: [u8; 6],
    /// VIRTIO_NET_S_* (VIRTIO_NET_F_STATUS).
    pub status: u16,
    /// Maximum queue pairs (VIRTIO_NET_F_MQ).
    pub max_virtqueue_pairs: u16,
    /// MTU (VIRTIO_NET_F_MTU).
    pub mtu: u16,
}

/// Bytes of the config space covered by [`NetConfig`].
pub const CONFIG_LEN: usize = 12;

impl NetConfig {
    /// Little-endian layout: mac[6], status, max_virtqueue_pairs, mtu.
    pub fn to_bytes(&self) -> [u8; CONFIG_LEN] {
        let mut b = [0u8; CONFIG_LEN];
        b[..6].copy_from_slice(&self.mac);
        b[6..8].copy_from_slice(&self.status.to_le_bytes());
        b[8..10].copy_from_slice(&self.max_virtqueue_pairs.to_le_bytes());
        b[10..12].copy_from_slice(&self.mtu.to_le_bytes());
        b
    }

    /// Parses the layout of [`NetConfig::to_bytes`].
    pub fn parse(b: &[u8; CONFIG_LEN]) -> Self {
        let u = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&b[..6]);
        Self { mac, status: u(6), max_virtqueue_pairs: u(8), mtu: u(10) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip_little_endian() {
        let h = NetHdr {
            flags: HDR_F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 3,
        };
        let b = h.to_bytes();
        assert_eq!(b, [1, 1, 54, 0, 0xa8, 0x05, 34, 0, 16, 0, 3, 0]);
        assert_eq!(NetHdr::parse(&b), h);
    }

    #[test]
    fn config_layout() {
        let c = NetConfig { mac: [2, 0, 0, 0, 0, 1], status: S_LINK_UP, max_virtqueue_pairs: 4, mtu: 1500 };
        let b = c.to_bytes();
        assert_eq!(&b[..6], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(&b[6..], &[1, 0, 4, 0, 0xdc, 0x05]);
        assert_eq!(NetConfig::parse(&b), c);
    }
}
