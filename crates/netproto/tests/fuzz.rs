//! Random and mutated input never panics, and whatever is accepted behaves.

mod common;

use netproto::csum;
use netproto::gro::{Gro, GroOpts};
use netproto::gso::{segment, validate_tx, TxOffloads, TxPlan};
use netproto::parse::{self, tcp_flags};
use netproto::virtio_net::*;
use proptest::prelude::*;

/// Runs everything that takes a header and a frame; panics only on broken promises.
fn exercise(hdr: &NetHdr, frame: &[u8], features: u64, mss: u16) {
    if let Ok(h) = parse::parse(frame) {
        assert!(h.l3 < h.l4 && h.l4 <= h.payload && h.payload <= h.end && h.end <= frame.len());
        let _ = h.l4_checksum_ok(frame);
        let _ = h.ip_checksum_ok(frame);
    }
    let mut copy = frame.to_vec();
    let _ = csum::complete_partial(&mut copy, hdr.csum_start.into(), hdr.csum_offset.into());
    for off in [TxOffloads::ALL, TxOffloads::from_features(features), TxOffloads::default()] {
        match validate_tx(hdr, frame, &off) {
            Ok(TxPlan::Csum { start, offset }) => {
                let mut f = frame.to_vec();
                csum::complete_partial(&mut f, start, offset).expect("validated offsets");
            }
            Ok(TxPlan::Gso(plan)) => {
                for m in [plan.mss, mss] {
                    let want = plan.max_segment_len(m);
                    let mut buf = vec![0u8; want];
                    let mut total = 0;
                    let r = segment(frame, &plan, m, &mut buf, |s| {
                        assert!(s.len() <= want);
                        total += s.len() - plan.hdr_len();
                    });
                    if m == plan.mss {
                        let n = r.expect("a validated plan segments");
                        assert_eq!(n, plan.segment_count(m));
                        assert_eq!(total, plan.headers.payload_len());
                    }
                    // Too small a buffer is an error, not a panic.
                    let _ = segment(frame, &plan, m, &mut buf[..want / 2], |_| {});
                }
            }
            Ok(TxPlan::Plain) | Err(_) => {}
        }
    }
}

fn header() -> impl Strategy<Value = NetHdr> {
    (any::<[u8; 12]>(), any::<bool>()).prop_map(|(b, small)| {
        let mut h = NetHdr::parse(&b);
        if small {
            // Keep offsets near real ones so that more frames get past the checks.
            h.csum_start %= 80;
            h.csum_offset %= 24;
            h.hdr_len %= 100;
            h.gso_type &= 0x87;
        }
        h
    })
}

/// A valid GSO frame and header to start mutating from.
fn base() -> impl Strategy<Value = (Vec<u8>, NetHdr)> {
    (
        common::flow_strategy(),
        any::<bool>(),
        0usize..3000,
        1u16..1500,
        prop::sample::select(vec![
            tcp_flags::ACK,
            tcp_flags::ACK | tcp_flags::CWR,
            tcp_flags::URG | tcp_flags::ACK,
        ]),
    )
        .prop_map(|(flow, udp, len, mss, flags)| {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            common::gso_frame(&flow, if udp { 17 } else { 6 }, 1, flags, 1, &payload, mss)
        })
}

/// Byte flips, mostly in the headers, and a possible truncation or extension.
fn mutations() -> impl Strategy<Value = (Vec<(prop::sample::Index, u8)>, Option<prop::sample::Index>, usize)>
{
    (
        prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..6),
        prop::option::of(any::<prop::sample::Index>()),
        0usize..4,
    )
}

fn mutate(frame: &mut Vec<u8>, m: &(Vec<(prop::sample::Index, u8)>, Option<prop::sample::Index>, usize)) {
    let hot = frame.len().min(100);
    for (i, x) in &m.0 {
        if hot > 0 {
            let at = i.index(hot);
            frame[at] ^= x;
        }
    }
    if let Some(t) = &m.1 {
        let keep = t.index(frame.len() + 1);
        frame.truncate(keep);
    }
    frame.extend(std::iter::repeat_n(0xee, m.2));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_and_headers_never_panic(
        frame in prop::collection::vec(any::<u8>(), 0..200),
        hdr in header(),
        features in any::<u64>(),
        mss in any::<u16>(),
    ) {
        exercise(&hdr, &frame, features, mss);
    }

    #[test]
    fn mutated_gso_frames_never_panic(
        (mut frame, mut hdr) in base(),
        m in mutations(),
        hdr_bytes in prop::option::of(header()),
        features in any::<u64>(),
        mss in any::<u16>(),
    ) {
        mutate(&mut frame, &m);
        if let Some(h) = hdr_bytes {
            // Keep some fields of the good header, take others at random.
            hdr = NetHdr { flags: h.flags, gso_size: h.gso_size, hdr_len: h.hdr_len, ..hdr };
        }
        exercise(&hdr, &frame, features, mss);
    }

    /// Mutated segments of one flow: coalescing never panics, and because every input
    /// comes without checksum flags (so is verified), segmenting the output gives the
    /// input back.
    #[test]
    fn coalescing_mutated_segments_is_safe(
        flow in common::flow_strategy(),
        mss in 1usize..300,
        edits in prop::collection::vec(prop::option::of(mutations()), 1..20),
        small_buf in any::<bool>(),
        rsc_ext in any::<bool>(),
        full_csum in any::<bool>(),
    ) {
        let mut input = Vec::new();
        for (i, e) in edits.iter().enumerate() {
            let pl: Vec<u8> = (0..mss).map(|j| (i * 3 + j) as u8).collect();
            let mut f = common::tcp_frame(&flow, (i * mss) as u32, tcp_flags::ACK, i as u16, &pl);
            if let Some(m) = e {
                mutate(&mut f, m);
            }
            input.push(f);
        }
        let mut buf = vec![0u8; if small_buf { 700 } else { 65535 + 18 }];
        let mut gro = Gro::new(&mut buf, GroOpts { rsc_ext, full_csum, ..GroOpts::default() });
        let mut out: Vec<(NetHdr, Vec<u8>)> = Vec::new();
        let mut sink = |h: &NetHdr, f: &[u8]| out.push((*h, f.to_vec()));
        for f in &input {
            gro.push(&NetHdr::default(), f, &mut sink);
        }
        gro.flush(&mut sink);
        let mut again = Vec::new();
        for (h, f) in &out {
            if h.gso_type == GSO_NONE {
                again.push(f.clone());
                continue;
            }
            let p = parse::parse(f).unwrap();
            let mut f = f.clone();
            let pseudo = p.pseudo_header(p.l4_len()).unwrap().fold();
            f[p.l4 + 16..p.l4 + 18].copy_from_slice(&pseudo.to_be_bytes());
            let tx = NetHdr { flags: HDR_F_NEEDS_CSUM, csum_start: p.l4 as u16, csum_offset: 16, ..*h };
            let Ok(TxPlan::Gso(plan)) = validate_tx(&tx, &f, &TxOffloads::ALL) else {
                panic!("merged frame does not validate");
            };
            let mut sb = vec![0u8; plan.max_segment_len(h.gso_size)];
            segment(&f, &plan, h.gso_size, &mut sb, |s| again.push(s.to_vec())).unwrap();
        }
        prop_assert_eq!(again, input);
    }
}
