//! Checksums against a byte-wise reference and against etherparse.

mod common;

use common::Flow;
use etherparse::checksum::Sum16BitWords;
use netproto::csum::{self, Sum};
use proptest::prelude::*;

/// RFC 1071 the slow way: one byte at a time, carries folded as they come.
fn reference_sum(data: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for (i, b) in data.iter().enumerate() {
        s += if i % 2 == 0 { u32::from(*b) << 8 } else { u32::from(*b) };
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn sum_matches_bytewise_reference(
        data in prop::collection::vec(any::<u8>(), 0..3000),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
    ) {
        prop_assert_eq!(csum::ones_sum(&data), reference_sum(&data));
        // Any split into pieces, odd ones included, gives the same sum.
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1)).collect();
        points.sort_unstable();
        let mut s = Sum::new();
        let mut at = 0;
        for p in points {
            s.add_bytes(&data[at..p]);
            at = p;
        }
        s.add_bytes(&data[at..]);
        prop_assert_eq!(s.fold(), reference_sum(&data));
    }

    #[test]
    fn checksum_matches_etherparse(data in prop::collection::vec(any::<u8>(), 0..3000)) {
        // etherparse keeps its sum in native byte order; `to_be` gives the checksum value.
        let theirs = Sum16BitWords::new().add_slice(&data).ones_complement().to_be();
        prop_assert_eq!(csum::checksum(&data), theirs);
    }

    #[test]
    fn ipv4_header_checksum_matches_etherparse(
        id in any::<u16>(),
        ttl in any::<u8>(),
        proto in any::<u8>(),
        len in 0u16..60000,
        src in any::<[u8; 4]>(),
        dst in any::<[u8; 4]>(),
        opt_words in 0usize..=10,
        opt_byte in any::<u8>(),
    ) {
        let mut h = etherparse::Ipv4Header::new(len, ttl, etherparse::IpNumber(proto), src, dst).unwrap();
        h.identification = id;
        h.options = etherparse::Ipv4Options::try_from(&vec![opt_byte; opt_words * 4][..]).unwrap();
        h.set_payload_len(usize::from(len)).unwrap();
        let expect = h.calc_header_checksum();
        let mut bytes = h.to_bytes().to_vec();
        prop_assert_eq!(csum::ipv4_header_checksum(&bytes), expect);
        // The stored checksum field does not matter, and setting it gives etherparse's.
        bytes[10] = !bytes[10];
        csum::set_ipv4_header_checksum(&mut bytes).unwrap();
        prop_assert_eq!(u16::from_be_bytes([bytes[10], bytes[11]]), expect);
        prop_assert!(csum::verify(&bytes));
    }

    #[test]
    fn pseudo_headers_match_etherparse(
        v6 in any::<bool>(),
        proto in prop::sample::select(vec![6u8, 17]),
        l4_len in 8usize..2000,
        src in any::<[u8; 16]>(),
        dst in any::<[u8; 16]>(),
    ) {
        let mut f = Flow::new(v6, None);
        f.src6 = src;
        f.dst6 = dst;
        f.src4 = [src[0], src[1], src[2], src[3]];
        f.dst4 = [dst[0], dst[1], dst[2], dst[3]];
        let ours = if v6 {
            csum::pseudo_header_v6(&src, &dst, proto, l4_len as u32).fold()
        } else {
            csum::pseudo_header_v4(f.src4, f.dst4, proto, l4_len as u16).fold()
        };
        prop_assert_eq!(ours, f.pseudo_fold(proto, l4_len));
    }

    #[test]
    fn transport_checksums_match_etherparse(
        v6 in any::<bool>(),
        udp in any::<bool>(),
        payload in prop::collection::vec(any::<u8>(), 0..2000),
        seq in any::<u32>(),
    ) {
        let f = Flow::new(v6, None);
        let frame = if udp {
            common::udp_frame(&f, 1, &payload)
        } else {
            common::tcp_frame(&f, seq, netproto::parse::tcp_flags::ACK, 1, &payload)
        };
        let h = netproto::parse::parse(&frame).unwrap();
        prop_assert!(h.l4_checksum_ok(&frame));
        prop_assert!(h.ip_checksum_ok(&frame));
        // Recompute with the field zeroed: the same value etherparse wrote (modulo the
        // UDP rule that sends zero as all ones).
        let mut copy = frame.clone();
        let at = h.l4 + h.l4_csum_offset();
        copy[at] = 0;
        copy[at + 1] = 0;
        let mut s = h.pseudo_header(h.l4_len()).unwrap();
        s.add_bytes(&copy[h.l4..]);
        let mut c = s.checksum();
        if udp && c == 0 {
            c = 0xffff;
        }
        prop_assert_eq!(c, u16::from_be_bytes([frame[at], frame[at + 1]]));
    }

    #[test]
    fn incremental_update_matches_recompute(
        mut data in prop::collection::vec(any::<u8>(), 2..400),
        word in any::<prop::sample::Index>(),
        new in any::<u16>(),
        new32 in any::<u32>(),
    ) {
        if data.len() % 2 == 1 {
            data.pop();
        }
        let c = csum::checksum(&data);
        let i = word.index(data.len() / 2) * 2;
        let old = u16::from_be_bytes([data[i], data[i + 1]]);
        data[i..i + 2].copy_from_slice(&new.to_be_bytes());
        let updated = csum::update16(c, old, new);
        let recomputed = csum::checksum(&data);
        // Equal as ones' complement numbers (0x0000 and 0xffff are both zero).
        prop_assert!(updated == recomputed || (updated | recomputed == 0xffff && updated & recomputed == 0));
        // Stored in place of a checksum word, it verifies.
        let mut with = data.clone();
        with.extend_from_slice(&updated.to_be_bytes());
        prop_assert!(csum::verify(&with));
        if data.len() >= 4 {
            let j = ((i / 4) * 4).min(data.len() - 4);
            let old32 = u32::from_be_bytes([data[j], data[j + 1], data[j + 2], data[j + 3]]);
            let c = csum::checksum(&data);
            data[j..j + 4].copy_from_slice(&new32.to_be_bytes());
            let mut with = data.clone();
            with.extend_from_slice(&csum::update32(c, old32, new32).to_be_bytes());
            prop_assert!(csum::verify(&with));
        }
    }

    #[test]
    fn complete_partial_completes_or_rejects(
        mut frame in prop::collection::vec(any::<u8>(), 0..300),
        start in 0usize..320,
        offset in 0usize..320,
    ) {
        let before = frame.clone();
        let in_range = start + offset + 2 <= frame.len();
        match csum::complete_partial(&mut frame, start, offset) {
            Ok(c) => {
                prop_assert!(in_range);
                prop_assert_ne!(c, 0);
                prop_assert_eq!(&frame[start + offset..start + offset + 2], &c.to_be_bytes()[..]);
                // The field held the pseudo-header sum P; with it added back, the
                // covered bytes now sum to all ones. (A field at an odd offset cannot
                // be completed this way by any device; real checksum fields are even.)
                if offset % 2 == 0 {
                    let p = u16::from_be_bytes([before[start + offset], before[start + offset + 1]]);
                    let mut s = Sum::new();
                    s.add_sum(p).add_bytes(&frame[start..]);
                    prop_assert_eq!(s.fold(), 0xffff);
                }
            }
            Err(_) => {
                prop_assert!(!in_range);
                prop_assert_eq!(frame, before);
            }
        }
    }
}

#[test]
fn complete_partial_fills_a_real_tcp_frame() {
    for v6 in [false, true] {
        for udp in [false, true] {
            let f = Flow::new(v6, Some(7));
            let payload: Vec<u8> = (0..999u32).map(|i| (i * 13) as u8).collect();
            let full = if udp {
                common::udp_frame(&f, 9, &payload)
            } else {
                common::tcp_frame(&f, 77, netproto::parse::tcp_flags::ACK, 9, &payload)
            };
            let mut partial = full.clone();
            let h = common::make_partial(&mut partial, &f, if udp { 17 } else { 6 });
            assert_ne!(partial, full);
            csum::complete_partial(&mut partial, h.csum_start.into(), h.csum_offset.into()).unwrap();
            common::check(&partial);
        }
    }
}
