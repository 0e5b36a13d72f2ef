//! Flow hashing of whole frames (built with etherparse): which fields each hash type
//! covers, fragments and extension headers, and that no input panics.

mod common;

use common::Flow;
use netproto::parse::{self, tcp_flags, Ip, Transport};
use netproto::rss::{flow_hash, hash_types, FlowHash, HashReport, Toeplitz, DEFAULT_TOEPLITZ};
use proptest::prelude::*;

const ALL: u32 = hash_types::SUPPORTED;

/// The first IPv4 and IPv6 flows of Microsoft's RSS verification suite.
fn ms_flow(v6: bool, vlan: Option<u16>) -> Flow {
    let mut f = Flow::new(v6, vlan);
    f.src4 = [66, 9, 149, 187];
    f.dst4 = [161, 142, 100, 80];
    f.src6 = "3ffe:2501:200:1fff::7".parse::<std::net::Ipv6Addr>().unwrap().octets();
    f.dst6 = "3ffe:2501:200:3::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
    f.sport = 2794;
    f.dport = 1766;
    f
}

const V4_2: u32 = 0x323e8fc2;
const V4_4: u32 = 0x51ccc178;
const V6_2: u32 = 0x2cc18cd5;
const V6_4: u32 = 0x40207d3d;

fn fh(value: u32, report: HashReport) -> Option<FlowHash> {
    Some(FlowHash { value, report })
}

fn hash(frame: &[u8], types: u32) -> Option<FlowHash> {
    DEFAULT_TOEPLITZ.flow_hash(frame, types)
}

fn tcp(f: &Flow) -> Vec<u8> {
    common::tcp_frame(f, 1, tcp_flags::ACK, 7, b"payload")
}

/// `frame` (untagged IPv6) with extension headers inserted after the fixed header: each
/// given with its type, the next header fields chained and the last set to `last`.
fn with_v6_extensions(frame: &[u8], exts: &[(u8, Vec<u8>)], last: u8) -> Vec<u8> {
    let l3 = 14;
    let mut v = frame[..l3 + 40].to_vec();
    v[l3 + 6] = exts.first().map_or(last, |e| e.0);
    for (i, (_, e)) in exts.iter().enumerate() {
        let mut e = e.clone();
        e[0] = exts.get(i + 1).map_or(last, |n| n.0);
        v.extend_from_slice(&e);
    }
    v.extend_from_slice(&frame[l3 + 40..]);
    let plen = (v.len() - l3 - 40) as u16;
    v[l3 + 4..l3 + 6].copy_from_slice(&plen.to_be_bytes());
    v
}

#[test]
fn ipv4_hash_types() {
    for vlan in [None, Some(100)] {
        let f = ms_flow(false, vlan);
        let t = tcp(&f);
        let u = common::udp_frame(&f, 7, b"x");
        let icmp = common::ip_frame(&f, 1, 7, &[8, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(hash(&t, ALL), fh(V4_4, HashReport::Tcpv4));
        assert_eq!(hash(&u, ALL), fh(V4_4, HashReport::Udpv4));
        assert_eq!(hash(&icmp, ALL), fh(V4_2, HashReport::Ipv4));
        assert_eq!(flow_hash(&t), Some(V4_4));

        // A transport hash type applies to its own protocol only; IPv4 is the fallback.
        assert_eq!(hash(&t, hash_types::IPV4 | hash_types::UDPV4), fh(V4_2, HashReport::Ipv4));
        assert_eq!(hash(&u, hash_types::IPV4 | hash_types::TCPV4), fh(V4_2, HashReport::Ipv4));
        assert_eq!(hash(&u, hash_types::TCPV4), None);
        assert_eq!(hash(&icmp, hash_types::TCPV4 | hash_types::UDPV4), None);
        assert_eq!(hash(&t, hash_types::TCPV4), fh(V4_4, HashReport::Tcpv4));
        // IPv6 and _EX types do not apply to IPv4.
        let v6_types = hash_types::IPV6 | hash_types::TCPV6 | hash_types::UDPV6 | hash_types::IP_EX;
        assert_eq!(hash(&t, v6_types), None);
        assert_eq!(hash(&t, 0), None);
    }
}

#[test]
fn ipv4_options_and_fragments() {
    let mut f = ms_flow(false, None);
    f.ip_options = vec![1, 1, 1, 0, 7, 7, 7, 7];
    let t = tcp(&f);
    assert_eq!(hash(&t, ALL), fh(V4_4, HashReport::Tcpv4));

    let f = ms_flow(false, None);
    let t = tcp(&f);
    // More fragments, then a non-zero offset: addresses only, the first fragment too.
    for flags_frag in [0x2000u16, 0x0001, 0x4000 | 0x00b9] {
        let mut g = t.clone();
        g[14 + 6..14 + 8].copy_from_slice(&flags_frag.to_be_bytes());
        let want =
            if flags_frag & 0x3fff != 0 { fh(V4_2, HashReport::Ipv4) } else { fh(V4_4, HashReport::Tcpv4) };
        assert_eq!(hash(&g, ALL), want, "{flags_frag:#06x}");
        assert_eq!(hash(&g, hash_types::TCPV4), want.filter(|h| h.report == HashReport::Tcpv4));
    }
}

#[test]
fn ipv6_hash_types() {
    for vlan in [None, Some(4094)] {
        let f = ms_flow(true, vlan);
        let t = tcp(&f);
        let u = common::udp_frame(&f, 0, b"x");
        let icmp = common::ip_frame(&f, 58, 0, &[128, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(hash(&t, ALL), fh(V6_4, HashReport::Tcpv6));
        assert_eq!(hash(&u, ALL), fh(V6_4, HashReport::Udpv6));
        assert_eq!(hash(&icmp, ALL), fh(V6_2, HashReport::Ipv6));
        assert_eq!(flow_hash(&u), Some(V6_4));
        assert_eq!(hash(&t, hash_types::IPV6 | hash_types::UDPV6), fh(V6_2, HashReport::Ipv6));
        assert_eq!(hash(&u, hash_types::TCPV6), None);
        assert_eq!(hash(&t, hash_types::IPV4 | hash_types::TCPV4 | hash_types::UDPV4), None);
        // _EX types are not implemented: they change nothing.
        let ex = hash_types::IP_EX | hash_types::TCP_EX | hash_types::UDP_EX;
        assert_eq!(hash(&t, ALL | ex), hash(&t, ALL));
        assert_eq!(hash(&t, ex), None);
    }
}

#[test]
fn ipv6_extension_headers() {
    let f = ms_flow(true, None);
    let t = tcp(&f);
    let hop = (0, vec![0, 0, 1, 4, 0, 0, 0, 0]);
    let dst = (60, {
        let mut d = vec![0u8; 24];
        d[1] = 2;
        d
    });
    let routing = (43, vec![0, 0, 0, 0, 0, 0, 0, 0]);
    // Payload Len 4: (4 + 2) * 4 = 24 bytes.
    let ah = (51, {
        let mut a = vec![0u8; 24];
        a[1] = 4;
        a
    });
    let frag = (44, vec![0, 0, 0, 0, 0, 0, 0, 1]);
    let esp = (50, vec![0u8; 8]);

    let walked = [
        vec![hop.clone()],
        vec![hop.clone(), dst.clone()],
        vec![routing.clone(), dst.clone()],
        vec![dst.clone(), ah.clone()],
        vec![ah.clone()],
        vec![dst.clone(); 8],
    ];
    for exts in walked {
        let g = with_v6_extensions(&t, &exts, 6);
        assert_eq!(hash(&g, ALL), fh(V6_4, HashReport::Tcpv6), "{exts:?}");
        assert_eq!(hash(&g, hash_types::TCPV6), fh(V6_4, HashReport::Tcpv6));
        let u = with_v6_extensions(&common::udp_frame(&f, 0, b"x"), &exts, 17);
        assert_eq!(hash(&u, ALL), fh(V6_4, HashReport::Udpv6), "{exts:?}");
    }

    // A fragment, ESP, too many headers (eight are walked), or one that runs past the
    // frame: addresses only.
    let mut long = hop.clone();
    long.1[1] = 200;
    let stopped =
        [vec![frag.clone()], vec![hop.clone(), frag.clone()], vec![esp], vec![dst.clone(); 9], vec![long]];
    for exts in stopped {
        let g = with_v6_extensions(&t, &exts, 6);
        assert_eq!(hash(&g, ALL), fh(V6_2, HashReport::Ipv6), "{exts:?}");
        assert_eq!(hash(&g, hash_types::TCPV6), None);
    }
}

#[test]
fn not_ip_or_malformed() {
    let f = ms_flow(false, None);
    let t = tcp(&f);

    let mut arp = t.clone();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    assert_eq!(hash(&arp, ALL), None);

    // IPv4 under the IPv6 EtherType and the other way round.
    let mut g = t.clone();
    g[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    assert_eq!(hash(&g, ALL), None);
    let mut g = tcp(&ms_flow(true, None));
    g[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    assert_eq!(hash(&g, ALL), None);

    // IHL below 5.
    let mut g = t.clone();
    g[14] = 0x44;
    assert_eq!(hash(&g, ALL), None);

    // A TCP header cut short falls back to the addresses; an IP header cut short is
    // no hash at all.
    for n in 0..t.len() {
        let want = match n {
            0..34 => None,
            34..54 => fh(V4_2, HashReport::Ipv4),
            _ => fh(V4_4, HashReport::Tcpv4),
        };
        assert_eq!(hash(&t[..n], ALL), want, "{n} bytes");
    }
    let t6 = tcp(&ms_flow(true, None));
    for n in 0..t6.len() {
        let want = match n {
            0..54 => None,
            54..74 => fh(V6_2, HashReport::Ipv6),
            _ => fh(V6_4, HashReport::Tcpv6),
        };
        assert_eq!(hash(&t6[..n], ALL), want, "{n} bytes");
    }
}

#[test]
fn two_vlan_tags() {
    let t = tcp(&ms_flow(false, Some(5)));
    let mut g = t[..12].to_vec();
    g.extend_from_slice(&[0x88, 0xa8, 0x00, 0x07]);
    g.extend_from_slice(&t[12..]);
    assert_eq!(hash(&g, ALL), fh(V4_4, HashReport::Tcpv4));
    // A third tag is not looked through.
    let mut h = g[..12].to_vec();
    h.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
    h.extend_from_slice(&g[12..]);
    assert_eq!(hash(&h, ALL), None);
}

#[test]
fn other_keys() {
    // The all-zero key hashes everything to zero; another key gives another hash.
    let f = ms_flow(false, None);
    let t = tcp(&f);
    let zero = Toeplitz::new(&[]).unwrap();
    assert_eq!(zero.flow_hash(&t, ALL), fh(0, HashReport::Tcpv4));
    let other = Toeplitz::new(&[0x5a; 40]).unwrap();
    let h = other.flow_hash(&t, ALL).unwrap().value;
    assert_eq!(h, other.hash_v4(f.src4, f.dst4, Some((f.sport, f.dport))));
    assert_ne!(h, V4_4);
}

fn any_frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..128),
        // Past the EtherType, with the right IP version, to get deeper.
        (prop::sample::select(vec![0x0800u16, 0x86dd, 0x8100]), prop::collection::vec(any::<u8>(), 0..128))
            .prop_map(|(et, rest)| {
                let mut v = vec![0u8; 12];
                v.extend_from_slice(&et.to_be_bytes());
                v.extend_from_slice(&rest);
                let l3 = if et == 0x8100 {
                    if v.len() >= 18 {
                        v[16..18].copy_from_slice(&[0x08, 0x00]);
                    }
                    18
                } else {
                    14
                };
                if let Some(b) = v.get_mut(l3) {
                    *b = if et == 0x86dd { 0x60 | (*b & 0x0f) } else { 0x40 | (*b & 0x0f) };
                }
                v
            }),
    ]
}

/// A real frame with bytes flipped and its length cut or extended.
fn mutated_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        common::flow_strategy(),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(f, udp, payload, flips, cut)| {
            let mut v = if udp {
                common::udp_frame(&f, 1, &payload)
            } else {
                common::tcp_frame(&f, 1, 0x10, 1, &payload)
            };
            for (i, x) in flips {
                let i = i.index(v.len());
                v[i] ^= x;
            }
            let n = cut.index(v.len() + 1);
            v.truncate(n.max(v.len() / 2));
            v
        })
}

proptest! {
    #[test]
    fn never_panics(frame in prop_oneof![any_frame(), mutated_frame()], types in any::<u32>()) {
        let _ = flow_hash(&frame);
        let got = hash(&frame, types);
        if let Some(h) = got {
            // A report is only given for an enabled type.
            prop_assert!(types & (1 << (h.report.to_wire() - 1)) != 0);
        }
        // Agrees with the layout parser wherever that accepts the frame.
        if let Ok(p) = parse::parse(&frame) {
            let ports = match p.transport {
                Transport::Tcp(t) => (t.src_port, t.dst_port),
                Transport::Udp(u) => (u.src_port, u.dst_port),
            };
            let want = match p.ip {
                Ip::V4(ip) => DEFAULT_TOEPLITZ.hash_v4(ip.src, ip.dst, Some(ports)),
                Ip::V6(ip) => DEFAULT_TOEPLITZ.hash_v6(&ip.src, &ip.dst, Some(ports)),
            };
            prop_assert_eq!(flow_hash(&frame), Some(want));
        }
    }

    /// Only the tuple counts: payload, sequence numbers, TTL, TOS, flow label, options,
    /// VLAN tag and the IP identification change nothing.
    #[test]
    fn only_the_tuple_counts(
        f in common::flow_strategy(),
        src4 in any::<[u8; 4]>(),
        dst4 in any::<[u8; 4]>(),
        src6 in any::<[u8; 16]>(),
        dst6 in any::<[u8; 16]>(),
        sport in any::<u16>(),
        dport in any::<u16>(),
        payload in prop::collection::vec(any::<u8>(), 0..200),
        seq in any::<u32>(),
        ip_id in any::<u16>(),
    ) {
        let f = Flow { src4, dst4, src6, dst6, sport, dport, ..f };
        let want = if f.v6 {
            DEFAULT_TOEPLITZ.hash_v6(&src6, &dst6, Some((sport, dport)))
        } else {
            DEFAULT_TOEPLITZ.hash_v4(src4, dst4, Some((sport, dport)))
        };
        let t = common::tcp_frame(&f, seq, tcp_flags::ACK, ip_id, &payload);
        let u = common::udp_frame(&f, ip_id, &payload);
        prop_assert_eq!(flow_hash(&t), Some(want));
        prop_assert_eq!(flow_hash(&u), Some(want));
        let plain = Flow::new(f.v6, None);
        let base = Flow { src4, dst4, src6, dst6, sport, dport, ..plain };
        prop_assert_eq!(flow_hash(&common::tcp_frame(&base, 0, 0, 0, &[])), Some(want));
    }
}
