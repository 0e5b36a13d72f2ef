//! Frames built and checked with etherparse, an implementation independent of the
//! code under test.

#![allow(dead_code)]

use etherparse::checksum::Sum16BitWords;
use etherparse::{
    EtherType, Ethernet2Header, IpDscp, IpEcn, IpNumber, Ipv4Header, Ipv4Options, Ipv6FlowLabel, Ipv6Header,
    NetSlice, SingleVlanHeader, SlicedPacket, TcpHeader, TransportSlice, UdpHeader, VlanId, VlanPcp,
};
use netproto::parse::tcp_flags;
use netproto::virtio_net::{NetHdr, GSO_ECN, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, HDR_F_NEEDS_CSUM};
use proptest::prelude::*;

pub const MAC_A: [u8; 6] = [0x52, 0x54, 0x00, 0x00, 0x00, 0x01];
pub const MAC_B: [u8; 6] = [0x52, 0x54, 0x00, 0x00, 0x00, 0x02];

/// Everything about a flow's headers that stays the same from segment to segment.
#[derive(Clone, Debug)]
pub struct Flow {
    pub vlan: Option<u16>,
    pub v6: bool,
    pub src4: [u8; 4],
    pub dst4: [u8; 4],
    pub src6: [u8; 16],
    pub dst6: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub ttl: u8,
    /// DSCP << 2 | ECN.
    pub tos: u8,
    pub flow_label: u32,
    pub df: bool,
    /// IPv4 options, a multiple of 4 bytes up to 40.
    pub ip_options: Vec<u8>,
    /// TCP options, a multiple of 4 bytes up to 40.
    pub tcp_options: Vec<u8>,
    pub window: u16,
    pub ack: u32,
}

impl Flow {
    pub fn new(v6: bool, vlan: Option<u16>) -> Self {
        Flow {
            vlan,
            v6,
            src4: [10, 0, 0, 1],
            dst4: [10, 0, 0, 2],
            src6: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            dst6: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            sport: 40000,
            dport: 5201,
            ttl: 64,
            tos: 0,
            flow_label: 0x12345,
            df: true,
            ip_options: Vec::new(),
            // NOP, NOP, timestamps.
            tcp_options: vec![1, 1, 8, 10, 0, 0, 1, 0, 0, 0, 2, 0],
            window: 502,
            ack: 0x1000_0000,
        }
    }

    /// Offset of the IP header.
    pub fn l3(&self) -> usize {
        if self.vlan.is_some() {
            18
        } else {
            14
        }
    }

    /// Offset of the transport header.
    pub fn l4(&self) -> usize {
        self.l3() + if self.v6 { 40 } else { 20 + self.ip_options.len() }
    }

    /// Pseudo-header sum, folded and not complemented (what a NEEDS_CSUM field holds).
    pub fn pseudo_fold(&self, proto: u8, l4_len: usize) -> u16 {
        let s = if self.v6 {
            Sum16BitWords::new()
                .add_16bytes(self.src6)
                .add_16bytes(self.dst6)
                .add_4bytes((l4_len as u32).to_be_bytes())
                .add_2bytes([0, proto])
        } else {
            Sum16BitWords::new()
                .add_4bytes(self.src4)
                .add_4bytes(self.dst4)
                .add_2bytes([0, proto])
                .add_2bytes((l4_len as u16).to_be_bytes())
        };
        !s.ones_complement().to_be()
    }
}

pub fn flow_strategy() -> impl Strategy<Value = Flow> {
    (
        any::<bool>(),
        prop::option::of(0u16..4095),
        prop::sample::select(vec![0usize, 4, 12, 20, 40]),
        any::<u8>(),
        any::<u32>(),
        any::<u16>(),
        1u8..=255,
        0u32..0x10_0000,
    )
        .prop_map(|(v6, vlan, opt_len, tos, ack, window, ttl, flow_label)| {
            let mut f = Flow::new(v6, vlan);
            f.tcp_options = (0..opt_len).map(|i| if i % 4 == 0 { 1 } else { (i * 7) as u8 }).collect();
            f.tos = tos;
            f.ack = ack;
            f.window = window;
            f.ttl = ttl;
            f.flow_label = flow_label;
            f
        })
}

fn l2(f: &Flow, ethertype: EtherType) -> Vec<u8> {
    let mut v = Vec::new();
    match f.vlan {
        Some(id) => {
            v.extend_from_slice(
                &Ethernet2Header {
                    source: MAC_A,
                    destination: MAC_B,
                    ether_type: EtherType::VLAN_TAGGED_FRAME,
                }
                .to_bytes(),
            );
            v.extend_from_slice(
                &SingleVlanHeader {
                    pcp: VlanPcp::try_new(3).unwrap(),
                    drop_eligible_indicator: false,
                    vlan_id: VlanId::try_new(id).unwrap(),
                    ether_type: ethertype,
                }
                .to_bytes(),
            );
        }
        None => v.extend_from_slice(
            &Ethernet2Header { source: MAC_A, destination: MAC_B, ether_type: ethertype }.to_bytes(),
        ),
    }
    v
}

/// Ethernet, VLAN, IP header (with its checksum) in front of the transport bytes `l4`.
pub fn ip_frame(f: &Flow, proto: u8, ip_id: u16, l4: &[u8]) -> Vec<u8> {
    if f.v6 {
        let mut v = l2(f, EtherType::IPV6);
        let ip = Ipv6Header {
            traffic_class: f.tos,
            flow_label: Ipv6FlowLabel::try_new(f.flow_label).unwrap(),
            payload_length: l4.len() as u16,
            next_header: IpNumber(proto),
            hop_limit: f.ttl,
            source: f.src6,
            destination: f.dst6,
        };
        v.extend_from_slice(&ip.to_bytes());
        v.extend_from_slice(l4);
        v
    } else {
        let mut v = l2(f, EtherType::IPV4);
        let mut ip = Ipv4Header::new(0, f.ttl, IpNumber(proto), f.src4, f.dst4).unwrap();
        ip.options = Ipv4Options::try_from(&f.ip_options[..]).unwrap();
        ip.set_payload_len(l4.len()).unwrap();
        ip.identification = ip_id;
        ip.dont_fragment = f.df;
        ip.dscp = IpDscp::try_new(f.tos >> 2).unwrap();
        ip.ecn = IpEcn::try_new(f.tos & 3).unwrap();
        ip.header_checksum = ip.calc_header_checksum();
        v.extend_from_slice(&ip.to_bytes());
        v.extend_from_slice(l4);
        v
    }
}

fn tcp_header(f: &Flow, seq: u32, flags: u8, urg: u16) -> TcpHeader {
    let mut t = TcpHeader::new(f.sport, f.dport, seq, f.window);
    t.acknowledgment_number = f.ack;
    t.fin = flags & tcp_flags::FIN != 0;
    t.syn = flags & tcp_flags::SYN != 0;
    t.rst = flags & tcp_flags::RST != 0;
    t.psh = flags & tcp_flags::PSH != 0;
    t.ack = flags & tcp_flags::ACK != 0;
    t.urg = flags & tcp_flags::URG != 0;
    t.ece = flags & tcp_flags::ECE != 0;
    t.cwr = flags & tcp_flags::CWR != 0;
    t.urgent_pointer = urg;
    t.set_options_raw(&f.tcp_options).unwrap();
    t
}

/// A fully checksummed TCP frame.
pub fn tcp_frame_urg(f: &Flow, seq: u32, flags: u8, ip_id: u16, urg: u16, payload: &[u8]) -> Vec<u8> {
    let mut t = tcp_header(f, seq, flags, urg);
    t.checksum = if f.v6 {
        t.calc_checksum_ipv6_raw(f.src6, f.dst6, payload).unwrap()
    } else {
        t.calc_checksum_ipv4_raw(f.src4, f.dst4, payload).unwrap()
    };
    let mut l4 = t.to_bytes().to_vec();
    l4.extend_from_slice(payload);
    ip_frame(f, 6, ip_id, &l4)
}

/// A fully checksummed TCP frame.
pub fn tcp_frame(f: &Flow, seq: u32, flags: u8, ip_id: u16, payload: &[u8]) -> Vec<u8> {
    tcp_frame_urg(f, seq, flags, ip_id, 0, payload)
}

/// A fully checksummed UDP frame.
pub fn udp_frame(f: &Flow, ip_id: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = UdpHeader { source_port: f.sport, destination_port: f.dport, length: 0, checksum: 0 };
    u.length = (8 + payload.len()) as u16;
    u.checksum = if f.v6 {
        u.calc_checksum_ipv6_raw(f.src6, f.dst6, payload).unwrap()
    } else {
        u.calc_checksum_ipv4_raw(f.src4, f.dst4, payload).unwrap()
    };
    let mut l4 = u.to_bytes().to_vec();
    l4.extend_from_slice(payload);
    ip_frame(f, 17, ip_id, &l4)
}

/// Replaces the transport checksum by the pseudo-header sum, as a driver does for
/// NEEDS_CSUM, and returns a header saying so (no GSO).
pub fn make_partial(frame: &mut [u8], f: &Flow, proto: u8) -> NetHdr {
    let l4 = f.l4();
    let l4_len = frame.len() - l4;
    let off = if proto == 6 { 16 } else { 6 };
    let p = f.pseudo_fold(proto, l4_len);
    frame[l4 + off..l4 + off + 2].copy_from_slice(&p.to_be_bytes());
    NetHdr { flags: HDR_F_NEEDS_CSUM, csum_start: l4 as u16, csum_offset: off as u16, ..NetHdr::default() }
}

/// A TSO/USO frame as a driver hands it over: partial checksum and a GSO header.
pub fn gso_frame(
    f: &Flow,
    proto: u8,
    seq: u32,
    flags: u8,
    ip_id: u16,
    payload: &[u8],
    mss: u16,
) -> (Vec<u8>, NetHdr) {
    let mut frame =
        if proto == 6 { tcp_frame(f, seq, flags, ip_id, payload) } else { udp_frame(f, ip_id, payload) };
    let mut h = make_partial(&mut frame, f, proto);
    h.gso_type = match (proto, f.v6) {
        (6, false) => GSO_TCPV4,
        (6, true) => GSO_TCPV6,
        _ => GSO_UDP_L4,
    };
    if proto == 6 && flags & tcp_flags::CWR != 0 {
        h.gso_type |= GSO_ECN;
    }
    h.gso_size = mss;
    h.hdr_len = (f.l4() + if proto == 6 { 20 + f.tcp_options.len() } else { 8 }) as u16;
    (frame, h)
}

/// What etherparse sees in a frame whose checksums it has verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub vlan: Option<u16>,
    pub ip_id: Option<u16>,
    pub seq: Option<u32>,
    pub flags: u8,
    pub urg: u16,
    pub udp_len: Option<u16>,
    pub payload: Vec<u8>,
}

/// Parses `frame` with etherparse and asserts that its lengths and checksums are right.
pub fn check(frame: &[u8]) -> Seen {
    let p = SlicedPacket::from_ethernet(frame).expect("etherparse rejects the frame");
    let vlan = p.link_exts.iter().find_map(|e| match e {
        etherparse::LinkExtSlice::Vlan(v) => Some(v.vlan_identifier().value()),
        _ => None,
    });
    let l3 = if vlan.is_some() { 18 } else { 14 };
    let (src, ip_id) = match p.net.as_ref().expect("no IP") {
        NetSlice::Ipv4(ip) => {
            let h = ip.header().to_header();
            assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 header checksum");
            assert_eq!(usize::from(h.total_len), frame.len() - l3, "IPv4 total length");
            (Addr::V4(h.source, h.destination), Some(h.identification))
        }
        NetSlice::Ipv6(ip) => {
            let h = ip.header().to_header();
            assert_eq!(usize::from(h.payload_length), frame.len() - l3 - 40, "IPv6 payload length");
            (Addr::V6(h.source, h.destination), None)
        }
        NetSlice::Arp(_) => panic!("ARP"),
    };
    match p.transport.expect("no transport") {
        TransportSlice::Tcp(t) => {
            let c = match src {
                Addr::V4(s, d) => t.calc_checksum_ipv4(s, d).unwrap(),
                Addr::V6(s, d) => t.calc_checksum_ipv6(s, d).unwrap(),
            };
            // 0x0000 and 0xffff are the same ones' complement number; a device that
            // completes a partial checksum may write either.
            assert!(t.checksum() == c || (c == 0 && t.checksum() == 0xffff), "TCP checksum");
            Seen {
                vlan,
                ip_id,
                seq: Some(t.sequence_number()),
                flags: t.header_slice()[13],
                urg: t.urgent_pointer(),
                udp_len: None,
                payload: t.payload().to_vec(),
            }
        }
        TransportSlice::Udp(u) => {
            let h = u.to_header();
            let c = match src {
                Addr::V4(s, d) => h.calc_checksum_ipv4_raw(s, d, u.payload()).unwrap(),
                Addr::V6(s, d) => h.calc_checksum_ipv6_raw(s, d, u.payload()).unwrap(),
            };
            assert_eq!(h.checksum, c, "UDP checksum");
            assert_eq!(usize::from(h.length), u.slice().len(), "UDP length");
            Seen {
                vlan,
                ip_id,
                seq: None,
                flags: 0,
                urg: 0,
                udp_len: Some(h.length),
                payload: u.payload().to_vec(),
            }
        }
        _ => panic!("not TCP or UDP"),
    }
}

enum Addr {
    V4([u8; 4], [u8; 4]),
    V6([u8; 16], [u8; 16]),
}
