//! Header validation (every lie rejected with its reason) and software segmentation
//! checked segment by segment with etherparse.

mod common;

use common::Flow;
use netproto::gso::{segment, validate_tx, GsoKind, HdrError, SegmentError, TxOffloads, TxPlan};
use netproto::parse::{tcp_flags, ParseError};
use netproto::virtio_net::*;
use proptest::prelude::*;

const ACK: u8 = tcp_flags::ACK;

fn plan_of(p: Result<TxPlan, HdrError>) -> netproto::gso::GsoPlan {
    match p {
        Ok(TxPlan::Gso(g)) => g,
        other => panic!("expected a GSO plan, got {other:?}"),
    }
}

fn segments(frame: &[u8], hdr: &NetHdr, mss: u16) -> Vec<Vec<u8>> {
    let plan = plan_of(validate_tx(hdr, frame, &TxOffloads::ALL));
    let mut buf = vec![0u8; plan.max_segment_len(mss)];
    let mut out = Vec::new();
    let n = segment(frame, &plan, mss, &mut buf, |s| out.push(s.to_vec())).unwrap();
    assert_eq!(n, out.len());
    assert_eq!(n, plan.segment_count(mss));
    out
}

#[test]
fn plain_and_checksum_only_frames() {
    let f = Flow::new(false, None);
    let frame = common::tcp_frame(&f, 1, ACK, 1, &[1; 100]);
    assert_eq!(validate_tx(&NetHdr::default(), &frame, &TxOffloads::ALL), Ok(TxPlan::Plain));
    let mut partial = frame.clone();
    let h = common::make_partial(&mut partial, &f, 6);
    assert_eq!(validate_tx(&h, &partial, &TxOffloads::ALL), Ok(TxPlan::Csum { start: 34, offset: 16 }));
    // Any protocol may be checksummed without GSO: only the bounds are checked.
    let h = NetHdr { flags: HDR_F_NEEDS_CSUM, csum_start: 3, csum_offset: 7, ..NetHdr::default() };
    assert_eq!(validate_tx(&h, &[0u8; 12], &TxOffloads::ALL), Ok(TxPlan::Csum { start: 3, offset: 7 }));
    // hdr_len and gso_size mean nothing without a GSO type.
    let h = NetHdr { hdr_len: 9999, gso_size: 3, ..NetHdr::default() };
    assert_eq!(validate_tx(&h, &frame, &TxOffloads::ALL), Ok(TxPlan::Plain));
}

#[test]
fn good_gso_headers_are_accepted() {
    for (v6, vlan, proto) in [(false, None, 6), (true, Some(3), 6), (false, Some(9), 17), (true, None, 17)] {
        let f = Flow::new(v6, vlan);
        let (frame, h) = common::gso_frame(&f, proto, 5, ACK, 7, &[3; 5000], 1400);
        let plan = plan_of(validate_tx(&h, &frame, &TxOffloads::ALL));
        let kind = match (proto, v6) {
            (6, false) => GsoKind::TcpV4,
            (6, true) => GsoKind::TcpV6,
            _ => GsoKind::UdpL4,
        };
        assert_eq!(plan.kind, kind);
        assert_eq!(plan.mss, 1400);
        assert_eq!(plan.hdr_len(), usize::from(h.hdr_len));
        assert_eq!(plan.segment_count(1400), 4);
        // Without GUEST_HDRLEN, hdr_len is a hint: smaller or larger values within the
        // frame are fine.
        let hint = TxOffloads { guest_hdrlen: false, ..TxOffloads::ALL };
        for hdr_len in [0, 14, h.hdr_len + 100] {
            let h2 = NetHdr { hdr_len, ..h };
            assert!(matches!(validate_tx(&h2, &frame, &hint), Ok(TxPlan::Gso(_))));
        }
    }
}

#[test]
fn lying_headers_are_rejected_with_their_reason() {
    let f4 = Flow::new(false, None);
    let (tso4, h4) = common::gso_frame(&f4, 6, 1, ACK, 1, &[1; 3000], 1000);
    let (tso6, h6) = common::gso_frame(&Flow::new(true, None), 6, 1, ACK, 1, &[1; 3000], 1000);
    let (uso, hu) = common::gso_frame(&f4, 17, 1, ACK, 1, &[1; 3000], 1000);
    let (cwr, hc) = common::gso_frame(&f4, 6, 1, ACK | tcp_flags::CWR, 1, &[1; 3000], 1000);
    let all = TxOffloads::ALL;
    let len = tso4.len();
    let max4 = 65535 - 20 - 32;

    let cases: Vec<(&str, NetHdr, Vec<u8>, TxOffloads, HdrError)> = vec![
        (
            "DATA_VALID",
            NetHdr { flags: h4.flags | HDR_F_DATA_VALID, ..h4 },
            tso4.clone(),
            all,
            HdrError::RxOnlyFlags(2),
        ),
        (
            "RSC_INFO",
            NetHdr { flags: h4.flags | HDR_F_RSC_INFO, ..h4 },
            tso4.clone(),
            all,
            HdrError::RxOnlyFlags(4),
        ),
        ("no CSUM", h4, tso4.clone(), TxOffloads { csum: false, ..all }, HdrError::CsumNotNegotiated),
        (
            "csum_start past end",
            NetHdr { gso_type: GSO_NONE, csum_start: len as u16 + 1, csum_offset: 0, ..h4 },
            tso4.clone(),
            all,
            HdrError::CsumStartOutOfRange { start: len as u16 + 1, len },
        ),
        (
            "csum field past end",
            NetHdr { gso_type: GSO_NONE, csum_start: len as u16 - 2, csum_offset: 1, ..h4 },
            tso4.clone(),
            all,
            HdrError::CsumOffsetOutOfRange { start: len as u16 - 2, offset: 1, len },
        ),
        (
            "csum_offset huge",
            NetHdr { csum_offset: u16::MAX, ..h4 },
            tso4.clone(),
            all,
            HdrError::CsumOffsetOutOfRange { start: 34, offset: u16::MAX, len },
        ),
        ("gso_type 2", NetHdr { gso_type: 2, ..h4 }, tso4.clone(), all, HdrError::UnknownGsoType(2)),
        ("gso_type 0x7f", NetHdr { gso_type: 0x7f, ..h4 }, tso4.clone(), all, HdrError::UnknownGsoType(0x7f)),
        ("UFO", NetHdr { gso_type: GSO_UDP, ..hu }, uso.clone(), all, HdrError::UfoUnsupported),
        (
            "no TSO4",
            h4,
            tso4.clone(),
            TxOffloads { tso4: false, ..all },
            HdrError::GsoNotNegotiated(GSO_TCPV4),
        ),
        (
            "no TSO6",
            h6,
            tso6.clone(),
            TxOffloads { tso6: false, ..all },
            HdrError::GsoNotNegotiated(GSO_TCPV6),
        ),
        ("no USO", hu, uso.clone(), TxOffloads { uso: false, ..all }, HdrError::GsoNotNegotiated(GSO_UDP_L4)),
        ("GSO without NEEDS_CSUM", NetHdr { flags: 0, ..h4 }, tso4.clone(), all, HdrError::GsoWithoutCsum),
        ("gso_size 0", NetHdr { gso_size: 0, ..h4 }, tso4.clone(), all, HdrError::GsoSizeZero),
        (
            "gso_size too large",
            NetHdr { gso_size: max4 + 1, ..h4 },
            tso4.clone(),
            all,
            HdrError::GsoSizeTooLarge { gso_size: max4 + 1, max: max4 },
        ),
        (
            "truncated frame",
            h4,
            tso4[..len - 1].to_vec(),
            all,
            HdrError::Parse(ParseError::Ipv4TotalLenExceedsFrame),
        ),
        ("not IP", h4, vec![0u8; 60], all, HdrError::Parse(ParseError::NotIp(0))),
        (
            "TCPV6 on IPv4",
            NetHdr { gso_type: GSO_TCPV6, ..h4 },
            tso4.clone(),
            all,
            HdrError::GsoTypeMismatch { gso_type: GSO_TCPV6 },
        ),
        (
            "TCPV4 on IPv6",
            NetHdr { gso_type: GSO_TCPV4, ..h6 },
            tso6.clone(),
            all,
            HdrError::GsoTypeMismatch { gso_type: GSO_TCPV4 },
        ),
        (
            "UDP_L4 on TCP",
            NetHdr { gso_type: GSO_UDP_L4, ..h4 },
            tso4.clone(),
            all,
            HdrError::GsoTypeMismatch { gso_type: GSO_UDP_L4 },
        ),
        (
            "TCPV4 on UDP",
            NetHdr { gso_type: GSO_TCPV4, ..hu },
            uso.clone(),
            all,
            HdrError::GsoTypeMismatch { gso_type: GSO_TCPV4 },
        ),
        ("trailing bytes", h4, [&tso4[..], &[0]].concat(), all, HdrError::TrailingBytes),
        (
            "csum_start off",
            NetHdr { csum_start: 36, ..h4 },
            tso4.clone(),
            all,
            HdrError::CsumStartMismatch { declared: 36, actual: 34 },
        ),
        (
            "csum_offset UDP's",
            NetHdr { csum_offset: 6, ..h4 },
            tso4.clone(),
            all,
            HdrError::CsumOffsetMismatch { declared: 6, actual: 16 },
        ),
        (
            "csum_offset TCP's",
            NetHdr { csum_offset: 16, ..hu },
            uso.clone(),
            all,
            HdrError::CsumOffsetMismatch { declared: 16, actual: 6 },
        ),
        (
            "hdr_len short",
            NetHdr { hdr_len: h4.hdr_len - 1, ..h4 },
            tso4.clone(),
            all,
            HdrError::HdrLenMismatch { declared: h4.hdr_len - 1, actual: 66 },
        ),
        (
            "hdr_len long",
            NetHdr { hdr_len: h4.hdr_len + 1, ..h4 },
            tso4.clone(),
            all,
            HdrError::HdrLenMismatch { declared: h4.hdr_len + 1, actual: 66 },
        ),
        (
            "hdr_len hint past end",
            NetHdr { hdr_len: len as u16 + 1, ..h4 },
            tso4.clone(),
            TxOffloads { guest_hdrlen: false, ..all },
            HdrError::HdrLenBeyondFrame { declared: len as u16 + 1, len },
        ),
        (
            "SYN",
            h4,
            set_flags(&tso4, 34, ACK | tcp_flags::SYN),
            all,
            HdrError::TcpFlagsNotSegmentable(tcp_flags::SYN),
        ),
        (
            "RST",
            h4,
            set_flags(&tso4, 34, tcp_flags::RST),
            all,
            HdrError::TcpFlagsNotSegmentable(tcp_flags::RST),
        ),
        ("ECN on UDP", NetHdr { gso_type: GSO_UDP_L4 | GSO_ECN, ..hu }, uso.clone(), all, HdrError::EcnOnUdp),
        ("ECN not negotiated", hc, cwr.clone(), TxOffloads { ecn: false, ..all }, HdrError::EcnNotNegotiated),
        (
            "ECN without CWR",
            NetHdr { gso_type: GSO_TCPV4 | GSO_ECN, ..h4 },
            tso4.clone(),
            all,
            HdrError::EcnWithoutCwr,
        ),
        ("CWR without ECN", NetHdr { gso_type: GSO_TCPV4, ..hc }, cwr.clone(), all, HdrError::CwrWithoutEcn),
    ];
    for (name, h, frame, off, want) in cases {
        assert_eq!(validate_tx(&h, &frame, &off), Err(want), "{name}");
        assert!(!want.to_string().is_empty());
    }
    // And the untouched ones pass.
    for (h, frame) in [(h4, &tso4), (h6, &tso6), (hu, &uso), (hc, &cwr)] {
        assert!(matches!(validate_tx(&h, frame, &all), Ok(TxPlan::Gso(_))));
    }
}

fn set_flags(frame: &[u8], l4: usize, flags: u8) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[l4 + 13] = flags;
    f
}

#[test]
fn ipv6_extension_headers_are_copied_and_counted() {
    let f = Flow::new(true, Some(8));
    let payload: Vec<u8> = (0..3500u32).map(|i| (i * 5) as u8).collect();
    let (plain, h) = common::gso_frame(&f, 6, 100, ACK | tcp_flags::PSH, 0, &payload, 1000);
    // Insert an 8-byte Destination Options header (next header TCP, one PadN option).
    let l3 = f.l3();
    let mut frame = plain[..l3 + 40].to_vec();
    frame.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
    frame.extend_from_slice(&plain[l3 + 40..]);
    frame[l3 + 6] = 60;
    let plen = u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]) + 8;
    frame[l3 + 4..l3 + 6].copy_from_slice(&plen.to_be_bytes());
    let h = NetHdr { csum_start: h.csum_start + 8, hdr_len: h.hdr_len + 8, ..h };
    let segs = segments(&frame, &h, 1000);
    assert_eq!(segs.len(), 4);
    let mut joined = Vec::new();
    for s in &segs {
        assert_eq!(&s[l3 + 40..l3 + 48], &[6, 0, 1, 4, 0, 0, 0, 0]);
        joined.extend(common::check(s).payload);
    }
    assert_eq!(joined, payload);
}

#[test]
fn segment_errors() {
    let (frame, h) = common::gso_frame(&Flow::new(false, None), 6, 1, ACK, 1, &[1; 3000], 1000);
    let plan = plan_of(validate_tx(&h, &frame, &TxOffloads::ALL));
    let mut buf = vec![0u8; 2000];
    let nothing = |_: &[u8]| panic!("no segment expected");
    assert_eq!(segment(&frame, &plan, 0, &mut buf, nothing), Err(SegmentError::MssZero));
    let max = 65535 - 20 - 32;
    assert_eq!(
        segment(&frame, &plan, max + 1, &mut buf, nothing),
        Err(SegmentError::MssTooLarge { mss: max + 1, max })
    );
    let need = plan.max_segment_len(1000);
    assert_eq!(need, 1066);
    assert_eq!(
        segment(&frame, &plan, 1000, &mut buf[..need - 1], nothing),
        Err(SegmentError::BufferTooSmall { need, have: need - 1 })
    );
    assert_eq!(segment(&frame[..100], &plan, 1000, &mut buf, nothing), Err(SegmentError::FrameMismatch));
}

#[test]
fn empty_payload_gives_one_completed_segment() {
    let f = Flow::new(true, Some(1));
    let (frame, h) = common::gso_frame(&f, 6, 9, ACK | tcp_flags::FIN, 1, &[], 1000);
    let segs = segments(&frame, &h, 1000);
    assert_eq!(segs.len(), 1);
    let s = common::check(&segs[0]);
    assert_eq!(s.flags, ACK | tcp_flags::FIN);
    assert!(s.payload.is_empty());
}

#[test]
fn urgent_pointer_follows_the_urgent_data() {
    let f = Flow::new(false, None);
    // Urgent data ends 2500 bytes in: segments 0..=2 point at it, segment 3 does not.
    let mut frame = common::tcp_frame_urg(&f, 1000, ACK | tcp_flags::URG, 1, 2500, &[5; 4000]);
    let mut h = common::make_partial(&mut frame, &f, 6);
    h.gso_type = GSO_TCPV4;
    h.gso_size = 1000;
    h.hdr_len = 66;
    let segs = segments(&frame, &h, 1000);
    let seen: Vec<_> = segs.iter().map(|s| common::check(s)).collect();
    assert_eq!(seen.iter().map(|s| s.urg).collect::<Vec<_>>(), [2500, 1500, 500, 0]);
    assert_eq!(
        seen.iter().map(|s| s.flags & tcp_flags::URG != 0).collect::<Vec<_>>(),
        [true, true, true, false]
    );
}

fn flags_strategy() -> impl Strategy<Value = u8> {
    prop::sample::select(vec![
        ACK,
        ACK | tcp_flags::PSH,
        ACK | tcp_flags::FIN,
        ACK | tcp_flags::PSH | tcp_flags::FIN,
        ACK | tcp_flags::CWR,
        ACK | tcp_flags::ECE | tcp_flags::CWR | tcp_flags::PSH,
        ACK | tcp_flags::ECE,
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every segment is a well-formed frame that etherparse accepts with correct
    /// checksums; payloads concatenate to the original; sequence numbers, IP ids,
    /// lengths and flags follow the rules of `segment`.
    #[test]
    fn segments_are_valid_and_cover_the_payload(
        mut flow in common::flow_strategy(),
        udp in any::<bool>(),
        ip_opt_words in 0usize..=10,
        payload in prop::collection::vec(any::<u8>(), 0..12000),
        mss in 1u16..3000,
        resegment in prop::option::of(1u16..3000),
        seq in any::<u32>(),
        ip_id in any::<u16>(),
        flags in flags_strategy(),
    ) {
        if !flow.v6 {
            flow.ip_options = vec![1; ip_opt_words * 4];
        }
        // Keep the number of segments reasonable.
        let mss = mss.max((payload.len() / 400) as u16 + 1);
        let proto = if udp { 17 } else { 6 };
        let (frame, h) = common::gso_frame(&flow, proto, seq, flags, ip_id, &payload, mss);
        let mss = resegment.map_or(mss, |m| m.max((payload.len() / 400) as u16 + 1));
        let segs = segments(&frame, &h, mss);
        let hdr_len = usize::from(h.hdr_len);
        prop_assert_eq!(segs.len(), payload.len().div_ceil(usize::from(mss)).max(1));
        let mut joined = Vec::new();
        let n = segs.len();
        for (i, s) in segs.iter().enumerate() {
            let seen = common::check(s);
            prop_assert_eq!(&s[..flow.l3()], &frame[..flow.l3()]);
            prop_assert_eq!(seen.vlan, flow.vlan);
            let want_len = if i + 1 == n { payload.len() - i * usize::from(mss) } else { usize::from(mss) };
            prop_assert_eq!(seen.payload.len(), want_len);
            prop_assert_eq!(s.len(), hdr_len + want_len);
            if !flow.v6 {
                prop_assert_eq!(seen.ip_id, Some(ip_id.wrapping_add(i as u16)));
                // IPv4 options are copied to every segment.
                prop_assert_eq!(&s[flow.l3() + 20..flow.l4()], &flow.ip_options[..]);
            }
            if udp {
                prop_assert_eq!(seen.udp_len, Some((8 + want_len) as u16));
            } else {
                prop_assert_eq!(seen.seq, Some(seq.wrapping_add((i * usize::from(mss)) as u32)));
                let mut want = flags;
                if i + 1 != n {
                    want &= !(tcp_flags::FIN | tcp_flags::PSH);
                }
                if i != 0 {
                    want &= !tcp_flags::CWR;
                }
                prop_assert_eq!(seen.flags, want);
                // Ports, ack, window and options are copied.
                let l4 = flow.l4();
                prop_assert_eq!(&s[l4..l4 + 4], &frame[l4..l4 + 4]);
                prop_assert_eq!(&s[l4 + 8..l4 + 12], &frame[l4 + 8..l4 + 12]);
                prop_assert_eq!(&s[l4 + 14..l4 + 16], &frame[l4 + 14..l4 + 16]);
                prop_assert_eq!(&s[l4 + 20..hdr_len], &frame[l4 + 20..hdr_len]);
            }
            joined.extend_from_slice(&seen.payload);
        }
        prop_assert_eq!(joined, payload);
    }
}
