//! The layout parser against etherparse, and every malformed case with its reason.

mod common;

use common::Flow;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use netproto::parse::{parse, tcp_flags, Ip, ParseError, Transport};
use proptest::prelude::*;

fn tcp4() -> Vec<u8> {
    common::tcp_frame(&Flow::new(false, None), 1, tcp_flags::ACK, 1, &[7; 10])
}

fn put16(f: &mut [u8], at: usize, v: u16) {
    f[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// An IPv6 TCP frame with the given extension headers (each a whole header, its first
/// byte rewritten to chain them) between the fixed header and TCP.
fn tcp6_with_extensions(exts: &[Vec<u8>], first_next: u8) -> Vec<u8> {
    let f = Flow::new(true, None);
    let plain = common::tcp_frame(&f, 1, tcp_flags::ACK, 0, &[1, 2, 3]);
    let tcp = plain[54..].to_vec();
    let mut v = plain[..54].to_vec();
    v[20] = first_next;
    for (i, e) in exts.iter().enumerate() {
        let mut e = e.clone();
        e[0] = if i + 1 == exts.len() { 6 } else { exts[i + 1][0] };
        v.extend_from_slice(&e);
    }
    v.extend_from_slice(&tcp);
    let plen = (v.len() - 54) as u16;
    put16(&mut v, 18, plen);
    v
}

/// Destination Options header: next header placeholder, 8 bytes, one PadN option.
fn dstopts(kind_of_next: u8) -> Vec<u8> {
    vec![kind_of_next, 0, 1, 4, 0, 0, 0, 0]
}

#[test]
fn ipv6_hop_by_hop_and_destination_options_are_walked() {
    // HBH (next: DstOpts) then DstOpts of 16 bytes (next: TCP).
    let hbh = vec![60, 0, 1, 4, 0, 0, 0, 0];
    let dst = vec![6, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut v = tcp6_with_extensions(&[hbh, dst], 0);
    // The chain: fixed header says HBH(0); HBH says 60; DstOpts says TCP.
    v[54] = 60;
    v[62] = 6;
    let h = parse(&v).unwrap();
    let Ip::V6(ip) = h.ip else { panic!("not IPv6") };
    assert_eq!(ip.ext_len, 24);
    assert_eq!(ip.protocol, 6);
    assert_eq!(h.l4, 54 + 24);
    assert_eq!(h.payload_len(), 3);
    // The pseudo-header length excludes extension headers (RFC 8200 8.1).
    assert!(h.l4_checksum_ok(&v));
}

#[test]
fn malformed_frames_are_rejected_with_their_reason() {
    let v4 = tcp4();
    let f6 = Flow::new(true, None);
    let v6 = common::tcp_frame(&f6, 1, tcp_flags::ACK, 0, &[7; 10]);
    let vlan = common::tcp_frame(&Flow::new(false, Some(5)), 1, tcp_flags::ACK, 1, &[7; 10]);
    let udp = common::udp_frame(&Flow::new(false, None), 1, &[7; 10]);

    let mut cases: Vec<(&str, Vec<u8>, ParseError)> = Vec::new();
    let m = |f: &Vec<u8>, edit: &dyn Fn(&mut Vec<u8>)| {
        let mut c = f.clone();
        edit(&mut c);
        c
    };
    cases.push(("empty", vec![], ParseError::EthernetTruncated));
    cases.push(("13 bytes", v4[..13].to_vec(), ParseError::EthernetTruncated));
    cases.push(("tag cut", vlan[..17].to_vec(), ParseError::VlanTruncated));
    cases.push(("802.1ad", m(&v4, &|c| put16(c, 12, 0x88a8)), ParseError::StackedVlan));
    cases.push(("double 802.1Q", m(&vlan, &|c| put16(c, 16, 0x8100)), ParseError::StackedVlan));
    cases.push(("ARP", m(&v4, &|c| put16(c, 12, 0x0806)), ParseError::NotIp(0x0806)));
    cases.push(("IPv4 cut", v4[..33].to_vec(), ParseError::Ipv4Truncated));
    cases.push(("IPv4 version 6", m(&v4, &|c| c[14] = 0x65), ParseError::Ipv4BadVersion(6)));
    cases.push(("IHL 4", m(&v4, &|c| c[14] = 0x44), ParseError::Ipv4BadIhl(4)));
    let short4 = common::tcp_frame(&Flow::new(false, None), 1, tcp_flags::ACK, 1, &[]);
    cases.push(("IHL 15", m(&short4, &|c| c[14] = 0x4f), ParseError::Ipv4OptionsTruncated));
    cases.push(("total < IHL", m(&v4, &|c| put16(c, 16, 19)), ParseError::Ipv4TotalLenTooSmall));
    let over = (v4.len() - 14 + 1) as u16;
    cases.push(("total > frame", m(&v4, &|c| put16(c, 16, over)), ParseError::Ipv4TotalLenExceedsFrame));
    cases.push(("MF", m(&v4, &|c| put16(c, 20, 0x2000)), ParseError::Ipv4Fragment));
    cases.push(("frag offset", m(&v4, &|c| put16(c, 20, 0x4001)), ParseError::Ipv4Fragment));
    cases.push(("IPv6 cut", v6[..53].to_vec(), ParseError::Ipv6Truncated));
    cases.push(("IPv6 version 4", m(&v6, &|c| c[14] = 0x40), ParseError::Ipv6BadVersion(4)));
    let over6 = (v6.len() - 54 + 1) as u16;
    cases.push(("payload > frame", m(&v6, &|c| put16(c, 18, over6)), ParseError::Ipv6PayloadLenExceedsFrame));
    // Hop-by-hop whose length byte (the TCP header's second byte) runs past the payload.
    cases.push(("ext cut", m(&v6, &|c| c[20] = 0), ParseError::Ipv6ExtensionTruncated));
    cases.push(("fragment header", m(&v6, &|c| c[20] = 44), ParseError::Ipv6UnsupportedExtension(44)));
    cases.push(("routing header", m(&v6, &|c| c[20] = 43), ParseError::Ipv6UnsupportedExtension(43)));
    let misplaced = tcp6_with_extensions(&[dstopts(0), dstopts(6)], 60);
    let mut misplaced = misplaced;
    misplaced[54] = 0;
    cases.push(("HBH second", misplaced, ParseError::Ipv6MisplacedHopByHop));
    let five: Vec<Vec<u8>> = (0..5).map(|_| dstopts(60)).collect();
    cases.push(("five extensions", tcp6_with_extensions(&five, 60), ParseError::Ipv6TooManyExtensions));
    cases.push(("ICMP", m(&v4, &|c| c[23] = 1), ParseError::UnsupportedTransport(1)));
    cases.push(("IPv6 ICMP", m(&v6, &|c| c[20] = 58), ParseError::UnsupportedTransport(58)));
    cases.push(("TCP cut", m(&short4, &|c| put16(c, 16, 39)), ParseError::TcpTruncated));
    let off = 14 + 20 + 12;
    cases.push(("data offset 4", m(&v4, &|c| c[off] = 0x40), ParseError::TcpBadDataOffset(4)));
    cases.push(("data offset 15", m(&short4, &|c| c[off] = 0xf0), ParseError::TcpOptionsTruncated));
    cases.push(("UDP cut", m(&udp, &|c| put16(c, 16, 27)), ParseError::UdpTruncated));
    cases.push((
        "UDP length",
        m(&udp, &|c| put16(c, 38, 19)),
        ParseError::UdpLengthMismatch { udp: 19, ip: 18 },
    ));

    for (name, frame, want) in cases {
        assert_eq!(parse(&frame), Err(want), "{name}");
        // And the error prints.
        assert!(!want.to_string().is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Offsets and fields agree with etherparse on well-formed frames, padded or not.
    #[test]
    fn parse_agrees_with_etherparse(
        mut flow in common::flow_strategy(),
        udp in any::<bool>(),
        ip_opt_words in 0usize..=10,
        payload in prop::collection::vec(any::<u8>(), 0..300),
        pad in 0usize..20,
        seq in any::<u32>(),
    ) {
        if !flow.v6 {
            flow.ip_options = (0..ip_opt_words * 4).map(|i| if i % 4 == 0 { 1 } else { 0 }).collect();
        }
        let mut frame = if udp {
            common::udp_frame(&flow, 3, &payload)
        } else {
            common::tcp_frame(&flow, seq, tcp_flags::ACK | tcp_flags::PSH, 3, &payload)
        };
        let ip_end = frame.len();
        frame.extend(std::iter::repeat_n(0, pad));
        let h = parse(&frame).unwrap();
        prop_assert_eq!(h.end, ip_end);
        prop_assert_eq!(h.l3, flow.l3());
        prop_assert_eq!(h.l4, flow.l4());
        prop_assert_eq!(h.payload_len(), payload.len());
        prop_assert_eq!(&frame[h.payload..h.end], &payload[..]);
        prop_assert_eq!(h.vlan_tci.map(|t| t & 0x0fff), flow.vlan);
        prop_assert!(h.ip_checksum_ok(&frame));
        prop_assert!(h.l4_checksum_ok(&frame));

        let p = SlicedPacket::from_ethernet(&frame[..ip_end]).unwrap();
        match (&h.ip, p.net.as_ref().unwrap()) {
            (Ip::V4(ours), NetSlice::Ipv4(theirs)) => {
                let t = theirs.header().to_header();
                prop_assert_eq!(ours.header_len, t.header_len());
                prop_assert_eq!(ours.total_len, t.total_len);
                prop_assert_eq!(ours.id, t.identification);
                prop_assert_eq!(ours.ttl, t.time_to_live);
                prop_assert_eq!(ours.src, t.source);
                prop_assert_eq!(ours.dst, t.destination);
                prop_assert_eq!(ours.dont_fragment(), t.dont_fragment);
            }
            (Ip::V6(ours), NetSlice::Ipv6(theirs)) => {
                let t = theirs.header().to_header();
                prop_assert_eq!(ours.payload_len, t.payload_length);
                prop_assert_eq!(ours.traffic_class, t.traffic_class);
                prop_assert_eq!(ours.flow_label, t.flow_label.value());
                prop_assert_eq!(ours.hop_limit, t.hop_limit);
                prop_assert_eq!(ours.src, t.source);
                prop_assert_eq!(ours.dst, t.destination);
            }
            _ => prop_assert!(false, "IP version differs"),
        }
        match (&h.transport, p.transport.as_ref().unwrap()) {
            (Transport::Tcp(ours), TransportSlice::Tcp(theirs)) => {
                prop_assert_eq!(ours.src_port, theirs.source_port());
                prop_assert_eq!(ours.dst_port, theirs.destination_port());
                prop_assert_eq!(ours.seq, theirs.sequence_number());
                prop_assert_eq!(ours.ack, theirs.acknowledgment_number());
                prop_assert_eq!(ours.header_len, theirs.header_len());
                prop_assert_eq!(ours.window, theirs.window_size());
                prop_assert_eq!(ours.checksum, theirs.checksum());
                prop_assert_eq!(ours.flags, tcp_flags::ACK | tcp_flags::PSH);
            }
            (Transport::Udp(ours), TransportSlice::Udp(theirs)) => {
                prop_assert_eq!(ours.src_port, theirs.source_port());
                prop_assert_eq!(ours.length, theirs.length());
                prop_assert_eq!(ours.checksum, theirs.checksum());
            }
            _ => prop_assert!(false, "transport differs"),
        }
    }
}
