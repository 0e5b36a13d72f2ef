//! Checksum and segmentation offloads between ports (virtio 1.x 5.1.6.2, 5.1.6.4).
//!
//! A frame that arrives with work left in its virtio-net header (a partial checksum, a
//! segmentation request) is validated once, at the edge (`netproto::gso::validate_tx`;
//! a header that lies is dropped and counted). Then, per destination: a port that
//! negotiated the same offload gets the frame whole with the header passed on (offsets
//! moved by a VLAN tag inserted or removed); any other gets the work done in software:
//! the checksum completed, or the frame cut into segments with complete checksums.
//! A tap takes every offload (the kernel finishes the work where it must).

use netproto::gso::{GsoKind, TxPlan};
use netproto::parse::Ip;
use netproto::virtio_net::{features as nf, NetHdr, HDR_F_NEEDS_CSUM};

/// What a receiver takes without software help.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accept {
    /// VIRTIO_NET_F_GUEST_CSUM: partial checksums.
    pub csum: bool,
    /// VIRTIO_NET_F_GUEST_TSO4.
    pub tso4: bool,
    /// VIRTIO_NET_F_GUEST_TSO6.
    pub tso6: bool,
    /// VIRTIO_NET_F_GUEST_USO4.
    pub uso4: bool,
    /// VIRTIO_NET_F_GUEST_USO6.
    pub uso6: bool,
    /// VIRTIO_NET_F_GUEST_ECN: TCP segmentation requests with the ECN bit.
    pub ecn: bool,
    /// VIRTIO_NET_F_RSC_EXT: coalesced frames report how many segments they hold
    /// (virtio 1.x 5.1.6.4, VIRTIO_NET_HDR_F_RSC_INFO).
    pub rsc_ext: bool,
}

impl Accept {
    /// Everything (a tap: the kernel segments and checksums what it must).
    pub const ALL: Accept =
        Accept { csum: true, tso4: true, tso6: true, uso4: true, uso6: true, ecn: true, rsc_ext: false };

    /// What a guest negotiated.
    pub fn from_features(f: u64) -> Accept {
        Accept {
            csum: f & nf::GUEST_CSUM != 0,
            tso4: f & nf::GUEST_TSO4 != 0,
            tso6: f & nf::GUEST_TSO6 != 0,
            uso4: f & nf::GUEST_USO4 != 0,
            uso6: f & nf::GUEST_USO6 != 0,
            ecn: f & nf::GUEST_ECN != 0,
            rsc_ext: f & nf::RSC_EXT != 0,
        }
    }

    /// True when a frame needing `plan` can be passed as it is. A segmentation
    /// request also needs GUEST_CSUM (its checksum is partial).
    pub fn takes(&self, plan: &TxPlan) -> bool {
        match plan {
            TxPlan::Plain => true,
            TxPlan::Csum { .. } => self.csum,
            TxPlan::Gso(g) => {
                let kind = match (g.kind, &g.headers.ip) {
                    (GsoKind::TcpV4, _) => self.tso4,
                    (GsoKind::TcpV6, _) => self.tso6,
                    (GsoKind::UdpL4, Ip::V4(_)) => self.uso4,
                    (GsoKind::UdpL4, _) => self.uso6,
                };
                self.csum && kind && (!g.ecn || self.ecn)
            }
        }
    }
}

/// The header to pass on with a frame whose first `12` bytes stay and whose rest moved
/// by `delta` bytes (an 802.1Q tag inserted: +4, removed: -4).
pub fn pass_header(h: &NetHdr, delta: isize) -> NetHdr {
    let adj = |v: u16| (v as isize + delta).clamp(0, u16::MAX as isize) as u16;
    let csum = h.flags & HDR_F_NEEDS_CSUM != 0;
    NetHdr {
        flags: h.flags & HDR_F_NEEDS_CSUM,
        gso_type: h.gso_type,
        hdr_len: if h.hdr_len != 0 { adj(h.hdr_len) } else { 0 },
        gso_size: h.gso_size,
        csum_start: if csum { adj(h.csum_start) } else { 0 },
        csum_offset: if csum { h.csum_offset } else { 0 },
        num_buffers: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netproto::virtio_net::GSO_TCPV4;

    #[test]
    fn header_offsets_follow_the_tag() {
        let h = NetHdr {
            flags: HDR_F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 1,
        };
        let t = pass_header(&h, 4);
        assert_eq!((t.hdr_len, t.csum_start, t.csum_offset, t.gso_size), (70, 38, 16, 1448));
        let u = pass_header(&t, -4);
        assert_eq!((u.hdr_len, u.csum_start), (66, 34));
        assert_eq!(u.num_buffers, 0, "the writer sets num_buffers");
    }

    #[test]
    fn features_map_to_what_is_taken() {
        let a = Accept::from_features(nf::GUEST_CSUM | nf::GUEST_TSO4);
        assert!(a.csum && a.tso4 && !a.tso6 && !a.ecn);
        assert!(a.takes(&TxPlan::Plain));
        assert!(a.takes(&TxPlan::Csum { start: 34, offset: 16 }));
        assert!(!Accept::default().takes(&TxPlan::Csum { start: 34, offset: 16 }));
    }
}
