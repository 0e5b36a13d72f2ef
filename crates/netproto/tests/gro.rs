//! Receive coalescing: what merges, what passes through untouched, and the two round
//! trips with segmentation.

mod common;

use common::Flow;
use netproto::csum;
use netproto::gro::{Gro, GroOpts};
use netproto::gso::{segment, validate_tx, TxOffloads, TxPlan};
use netproto::parse::{self, tcp_flags};
use netproto::virtio_net::*;
use proptest::prelude::*;

const ACK: u8 = tcp_flags::ACK;
const PSH: u8 = tcp_flags::PSH;
const CWR: u8 = tcp_flags::CWR;

type Frames = Vec<(NetHdr, Vec<u8>)>;

fn run_with(buf_len: usize, opts: GroOpts, input: &[(NetHdr, Vec<u8>)]) -> Frames {
    let mut buf = vec![0u8; buf_len];
    let mut gro = Gro::new(&mut buf, opts);
    let mut out = Vec::new();
    let mut sink = |h: &NetHdr, f: &[u8]| out.push((*h, f.to_vec()));
    for (h, f) in input {
        gro.push(h, f, &mut sink);
    }
    gro.flush(&mut sink);
    assert!(!gro.pending());
    out
}

fn run(opts: GroOpts, input: &[(NetHdr, Vec<u8>)]) -> Frames {
    run_with(65535 + 18, opts, input)
}

/// Segments a merged frame again (whatever its checksum flags), or returns a plain
/// frame as is.
fn expand(out: &Frames) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    for (h, f) in out {
        if h.gso_type == GSO_NONE {
            frames.push(f.clone());
            continue;
        }
        let l4 = parse::parse(f).unwrap().l4;
        let tx =
            NetHdr { flags: HDR_F_NEEDS_CSUM, csum_start: l4 as u16, csum_offset: 16, num_buffers: 0, ..*h };
        let mut f = f.clone();
        if h.flags & HDR_F_NEEDS_CSUM == 0 {
            // A completed checksum: put the pseudo-header sum back, as a sender would.
            let ph = parse::parse(&f).unwrap();
            let p = ph.pseudo_header(ph.l4_len()).unwrap().fold();
            f[l4 + 16..l4 + 18].copy_from_slice(&p.to_be_bytes());
        }
        let Ok(TxPlan::Gso(plan)) = validate_tx(&tx, &f, &TxOffloads::ALL) else {
            panic!("merged frame does not validate: {:?}", validate_tx(&tx, &f, &TxOffloads::ALL));
        };
        let mut buf = vec![0u8; plan.max_segment_len(h.gso_size)];
        segment(&f, &plan, h.gso_size, &mut buf, |s| frames.push(s.to_vec())).unwrap();
    }
    frames
}

/// In-order segments of one flow, fully checksummed: `count - 1` of `mss` bytes and a
/// last one of `last` bytes.
fn flow_segments(
    f: &Flow,
    seq: u32,
    ip_id: u16,
    mss: usize,
    count: usize,
    last: usize,
    flags: &[u8],
) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    let mut off = 0usize;
    for i in 0..count {
        let len = if i + 1 == count { last } else { mss };
        let payload: Vec<u8> = (0..len).map(|j| ((off + j) * 7 + 3) as u8).collect();
        let fl = flags.get(i).copied().unwrap_or(ACK);
        v.push(common::tcp_frame(
            f,
            seq.wrapping_add(off as u32),
            fl,
            ip_id.wrapping_add(i as u16),
            &payload,
        ));
        off += len;
    }
    v
}

fn plain(frames: Vec<Vec<u8>>) -> Frames {
    frames.into_iter().map(|f| (NetHdr::default(), f)).collect()
}

fn payload_of(frame: &[u8]) -> Vec<u8> {
    let h = parse::parse(frame).unwrap();
    frame[h.payload..h.end].to_vec()
}

#[test]
fn a_run_of_segments_becomes_one_frame() {
    for (v6, vlan) in [(false, None), (true, None), (false, Some(100)), (true, Some(4000))] {
        let f = Flow::new(v6, vlan);
        let segs = flow_segments(&f, 0xffff_f000, 0xfffe, 1448, 11, 500, &[]);
        let out = run(GroOpts::default(), &plain(segs.clone()));
        assert_eq!(out.len(), 1, "v6 {v6} vlan {vlan:?}");
        let (h, frame) = &out[0];
        let l4 = f.l4() as u16;
        let hdr_len = l4 + 20 + f.tcp_options.len() as u16;
        assert_eq!(h.gso_type, if v6 { GSO_TCPV6 } else { GSO_TCPV4 });
        assert_eq!((h.gso_size, h.hdr_len), (1448, hdr_len));
        assert_eq!((h.flags, h.csum_start, h.csum_offset), (HDR_F_NEEDS_CSUM, l4, 16));
        assert_eq!(frame.len(), usize::from(hdr_len) + 10 * 1448 + 500);
        // The field holds the pseudo-header sum: completing it gives a valid frame.
        let mut done = frame.clone();
        csum::complete_partial(&mut done, h.csum_start.into(), h.csum_offset.into()).unwrap();
        let seen = common::check(&done);
        assert_eq!(seen.seq, Some(0xffff_f000));
        assert_eq!(seen.flags, ACK);
        if !v6 {
            assert_eq!(seen.ip_id, Some(0xfffe));
        }
        let joined: Vec<u8> = segs.iter().flat_map(|s| payload_of(s)).collect();
        assert_eq!(seen.payload, joined);
        assert_eq!(expand(&out), segs);
    }
}

#[test]
fn full_checksum_and_rsc_info() {
    let f = Flow::new(false, Some(5));
    let segs = plain(flow_segments(&f, 1, 1, 1000, 7, 1000, &[]));
    let full = run(GroOpts { full_csum: true, ..GroOpts::default() }, &segs);
    assert_eq!(full.len(), 1);
    assert_eq!(full[0].0.flags, HDR_F_DATA_VALID);
    common::check(&full[0].1);

    // RSC_EXT (5.1.6.4.1): segment count in csum_start, duplicate ACKs in csum_offset.
    let rsc = run(GroOpts { rsc_ext: true, ..GroOpts::default() }, &segs);
    assert_eq!(rsc.len(), 1);
    assert_eq!(rsc[0].0.flags, HDR_F_NEEDS_CSUM | HDR_F_RSC_INFO);
    assert_eq!((rsc[0].0.csum_start, rsc[0].0.csum_offset), (7, 0));
    assert_eq!(rsc[0].0.gso_size, 1000);
    let rsc_full = run(GroOpts { rsc_ext: true, full_csum: true, ..GroOpts::default() }, &segs);
    assert_eq!(rsc_full[0].0.flags, HDR_F_DATA_VALID | HDR_F_RSC_INFO);
    assert_eq!(rsc_full[0].0.csum_start, 7);
    common::check(&rsc_full[0].1);
    assert_eq!(rsc_full[0].1, full[0].1);
    for out in [&full, &rsc, &rsc_full] {
        assert_eq!(expand(out), segs.iter().map(|s| s.1.clone()).collect::<Vec<_>>());
    }
}

#[test]
fn a_lone_segment_passes_through_with_its_header() {
    let f = Flow::new(false, None);
    let seg = common::tcp_frame(&f, 1, ACK, 1, &[1; 100]);
    let h = NetHdr { flags: HDR_F_DATA_VALID, num_buffers: 1, ..NetHdr::default() };
    for opts in [GroOpts::default(), GroOpts { rsc_ext: true, full_csum: true, ..GroOpts::default() }] {
        assert_eq!(run(opts, &[(h, seg.clone())]), vec![(h, seg.clone())]);
    }
}

#[test]
fn partial_and_valid_inputs_merge_bad_unverified_ones_do_not() {
    let f = Flow::new(true, None);
    let segs = flow_segments(&f, 1, 0, 500, 3, 500, &[]);
    // NEEDS_CSUM inputs (pseudo-header sum in the field).
    let partial: Frames = segs
        .iter()
        .map(|s| {
            let mut s = s.clone();
            let h = common::make_partial(&mut s, &f, 6);
            (h, s)
        })
        .collect();
    let out = run(GroOpts::default(), &partial);
    assert_eq!(out.len(), 1);
    assert_eq!(expand(&out), segs);

    // A corrupted payload: trusted when DATA_VALID vouches for it, not otherwise.
    let mut bad = segs.clone();
    let at = bad[1].len() - 5;
    bad[1][at] ^= 0x40;
    let valid: Frames =
        bad.iter().map(|s| (NetHdr { flags: HDR_F_DATA_VALID, ..NetHdr::default() }, s.clone())).collect();
    assert_eq!(run(GroOpts::default(), &valid).len(), 1);
    let out = run(GroOpts::default(), &plain(bad.clone()));
    assert_eq!(out.len(), 3);
    assert_eq!(out.iter().map(|o| o.1.clone()).collect::<Vec<_>>(), bad);
}

/// The second frame cannot join the first: both come out unchanged, in order.
#[test]
fn frames_that_cannot_merge_pass_through_unchanged() {
    let f = Flow::new(false, Some(10));
    let a = common::tcp_frame(&f, 1000, ACK, 1, &[1; 100]);
    let next = |f: &Flow, seq: u32, flags: u8, id: u16| common::tcp_frame(f, seq, flags, id, &[2; 100]);
    let with = |edit: &dyn Fn(&mut Flow)| {
        let mut g = f.clone();
        edit(&mut g);
        g
    };
    let ok = NetHdr::default();
    let fix_ip = |mut v: Vec<u8>| {
        let l3 = f.l3();
        csum::set_ipv4_header_checksum(&mut v[l3..l3 + 20]).unwrap();
        v
    };
    let mut cases: Vec<(&str, NetHdr, Vec<u8>)> = vec![
        ("sequence gap", ok, next(&f, 1101, ACK, 2)),
        ("retransmission", ok, next(&f, 1000, ACK, 2)),
        ("other ack", ok, next(&with(&|g| g.ack += 1), 1100, ACK, 2)),
        ("other window", ok, next(&with(&|g| g.window += 1), 1100, ACK, 2)),
        ("other options", ok, next(&with(&|g| g.tcp_options[5] ^= 1), 1100, ACK, 2)),
        ("CE mark", ok, next(&with(&|g| g.tos = 3), 1100, ACK, 2)),
        ("other TTL", ok, next(&with(&|g| g.ttl = 63), 1100, ACK, 2)),
        ("no DF", ok, next(&with(&|g| g.df = false), 1100, ACK, 2)),
        ("IP id jump", ok, next(&f, 1100, ACK, 3)),
        ("other VLAN", ok, next(&with(&|g| g.vlan = Some(11)), 1100, ACK, 2)),
        ("untagged", ok, next(&with(&|g| g.vlan = None), 1100, ACK, 2)),
        ("other port", ok, next(&with(&|g| g.dport += 1), 1100, ACK, 2)),
        ("other address", ok, next(&with(&|g| g.src4[3] = 9), 1100, ACK, 2)),
        ("IP options", ok, next(&with(&|g| g.ip_options = vec![1; 4]), 1100, ACK, 2)),
        ("longer than the first", ok, common::tcp_frame(&f, 1100, ACK, 2, &[2; 101])),
        ("SYN", ok, next(&f, 1100, ACK | tcp_flags::SYN, 2)),
        ("FIN", ok, next(&f, 1100, ACK | tcp_flags::FIN, 2)),
        ("RST", ok, next(&f, 1100, ACK | tcp_flags::RST, 2)),
        ("URG", ok, common::tcp_frame_urg(&f, 1100, ACK | tcp_flags::URG, 2, 10, &[2; 100])),
        ("no ACK", ok, next(&f, 1100, 0, 2)),
        ("ECE appears", ok, next(&f, 1100, ACK | tcp_flags::ECE, 2)),
        ("CWR after the first", ok, next(&f, 1100, ACK | CWR, 2)),
        ("pure ACK", ok, common::tcp_frame(&f, 1100, ACK, 2, &[])),
        ("UDP", ok, common::udp_frame(&f, 2, &[2; 100])),
        ("GSO input", NetHdr { gso_type: GSO_TCPV4, gso_size: 50, ..ok }, next(&f, 1100, ACK, 2)),
        ("RSC_INFO input", NetHdr { flags: HDR_F_RSC_INFO, ..ok }, next(&f, 1100, ACK, 2)),
        (
            "NEEDS_CSUM elsewhere",
            NetHdr { flags: HDR_F_NEEDS_CSUM, csum_start: 40, csum_offset: 16, ..ok },
            next(&f, 1100, ACK, 2),
        ),
        ("padding", ok, [next(&f, 1100, ACK, 2), vec![0; 4]].concat()),
        ("not IP", ok, vec![0xab; 80]),
    ];
    let mut bad_tcp = next(&f, 1100, ACK, 2);
    bad_tcp[f.l4() + 16] ^= 1;
    cases.push(("bad TCP checksum", ok, bad_tcp));
    let mut bad_ip = next(&f, 1100, ACK, 2);
    bad_ip[f.l3() + 10] ^= 1;
    cases.push(("bad IP checksum", ok, bad_ip));
    let mut mf = next(&f, 1100, ACK, 2);
    mf[f.l3() + 6] |= 0x20;
    cases.push(("fragment", ok, fix_ip(mf)));
    for (name, h, x) in cases {
        let input = vec![(ok, a.clone()), (h, x)];
        assert_eq!(run(GroOpts::default(), &input), input, "{name}");
    }
    // IPv6 not taken when the driver has no TSO6; interleaved flows never merge.
    let f6 = Flow::new(true, None);
    let v6 = plain(flow_segments(&f6, 1, 0, 100, 3, 100, &[]));
    assert_eq!(run(GroOpts { tso6: false, ..GroOpts::default() }, &v6), v6);
    let g = with(&|g| g.sport += 1);
    let a2 = flow_segments(&f, 1, 1, 100, 2, 100, &[]);
    let b2 = flow_segments(&g, 1, 1, 100, 2, 100, &[]);
    let mixed = plain(vec![a2[0].clone(), b2[0].clone(), a2[1].clone(), b2[1].clone()]);
    assert_eq!(run(GroOpts::default(), &mixed), mixed);
}

#[test]
fn psh_or_a_short_segment_ends_the_merge() {
    let f = Flow::new(false, None);
    let segs = flow_segments(&f, 1, 1, 100, 5, 100, &[ACK, PSH | ACK, ACK, ACK, ACK]);
    let out = run(GroOpts::default(), &plain(segs.clone()));
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].1[f.l4() + 13], ACK | PSH);
    assert_eq!(out[0].0.gso_size, 100);
    assert_eq!(out[1].0.gso_size, 100);
    assert_eq!(expand(&out), segs);

    // 100, 60, 100: the short one closes the first merge.
    let mut segs = flow_segments(&f, 1, 1, 100, 2, 60, &[]);
    segs.extend(flow_segments(&f, 161, 3, 100, 1, 100, &[]));
    let out = run(GroOpts::default(), &plain(segs.clone()));
    assert_eq!(out.len(), 2);
    assert_eq!(out[1], (NetHdr::default(), segs[2].clone()));
    assert_eq!(expand(&out), segs);

    // A PSH segment that would start a flow passes through.
    let segs = flow_segments(&f, 1, 1, 100, 3, 100, &[PSH | ACK, ACK, ACK]);
    let out = run(GroOpts::default(), &plain(segs.clone()));
    assert_eq!(out.len(), 2);
    assert_eq!(out[0], (NetHdr::default(), segs[0].clone()));
}

#[test]
fn cwr_only_first_and_only_with_guest_ecn() {
    let f = Flow::new(true, Some(2));
    let segs = plain(flow_segments(&f, 1, 0, 100, 3, 100, &[ACK | CWR]));
    let out = run(GroOpts::default(), &segs);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0.gso_type, GSO_TCPV6 | GSO_ECN);
    let out = run(GroOpts { ecn: false, ..GroOpts::default() }, &segs);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0], segs[0]);
    assert_eq!(out[1].0.gso_type, GSO_TCPV6);
}

#[test]
fn segment_count_and_buffer_limits() {
    let f = Flow::new(false, None);
    let segs = plain(flow_segments(&f, 1, 1, 100, 5, 100, &[]));
    let out = run(GroOpts { max_segs: 2, ..GroOpts::default() }, &segs);
    assert_eq!(out.iter().map(|o| o.0.gso_type != GSO_NONE).collect::<Vec<_>>(), [true, true, false]);
    assert_eq!(expand(&out), segs.iter().map(|s| s.1.clone()).collect::<Vec<_>>());
    let out = run(GroOpts { max_segs: 1, ..GroOpts::default() }, &segs);
    assert_eq!(out, segs);
    // Room for the first segment and two more payloads.
    let first = segs[0].1.len();
    let out = run_with(first + 200, GroOpts::default(), &segs);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].1.len(), first + 200);
    // A buffer smaller than one frame: everything passes through.
    assert_eq!(run_with(first - 1, GroOpts::default(), &segs), segs);
    // No GUEST_CSUM, nothing merges.
    let opts = GroOpts::from_features(features::GUEST_TSO4 | features::GUEST_TSO6);
    assert_eq!(run(opts, &segs), segs);
    let opts = GroOpts::from_features(features::GUEST_CSUM | features::GUEST_TSO4 | features::RSC_EXT);
    assert!(opts.tso4 && !opts.tso6 && !opts.ecn && opts.rsc_ext);
}

/// A frame of `len` bytes, none of which can be taken for a mergeable segment.
fn noise(len: usize, byte: u8) -> Vec<u8> {
    vec![byte; len]
}

#[derive(Debug, Clone)]
enum Item {
    A,
    B,
    PureAck,
    Udp,
    Noise(usize),
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// segment(coalesce(x)) == x, byte for byte, for any run of in-order segments.
    #[test]
    fn segmenting_coalesced_segments_gives_them_back(
        flow in common::flow_strategy(),
        count in 1usize..30,
        mss in 1usize..1500,
        last in any::<prop::sample::Index>(),
        psh_last in any::<bool>(),
        cwr_first in any::<bool>(),
        seq in any::<u32>(),
        ip_id in any::<u16>(),
        valid in any::<bool>(),
        rsc_ext in any::<bool>(),
        full_csum in any::<bool>(),
        ecn in any::<bool>(),
    ) {
        let last = last.index(mss) + 1;
        let mut flags = vec![ACK; count];
        if cwr_first {
            flags[0] |= CWR;
        }
        if psh_last {
            flags[count - 1] |= PSH;
        }
        let segs = flow_segments(&flow, seq, ip_id, mss, count, last, &flags);
        let h = NetHdr { flags: if valid { HDR_F_DATA_VALID } else { 0 }, ..NetHdr::default() };
        let input: Frames = segs.iter().map(|s| (h, s.clone())).collect();
        let opts = GroOpts { rsc_ext, full_csum, ecn, ..GroOpts::default() };
        let out = run(opts, &input);
        // Everything merges into one frame, except a first segment with CWR when the
        // driver takes no ECN, which passes through on its own.
        let want = if cwr_first && !ecn && count > 1 { 2 } else { 1 };
        prop_assert_eq!(out.len(), want);
        prop_assert_eq!(expand(&out), segs);
    }

    /// coalesce(segment(x)) == x for a TSO frame: the same bytes and the same header.
    #[test]
    fn coalescing_segments_gives_the_large_frame_back(
        flow in common::flow_strategy(),
        payload_len in 1usize..20000,
        mss in 1u16..1500,
        flags in prop::sample::select(vec![ACK, ACK | PSH, ACK | CWR, ACK | CWR | PSH, ACK | tcp_flags::ECE]),
        seq in any::<u32>(),
        ip_id in any::<u16>(),
        valid in any::<bool>(),
    ) {
        let mss = mss.max((payload_len / 60) as u16 + 1);
        let payload: Vec<u8> = (0..payload_len).map(|i| (i * 31 + 7) as u8).collect();
        let (x, hx) = common::gso_frame(&flow, 6, seq, flags, ip_id, &payload, mss);
        let Ok(TxPlan::Gso(plan)) = validate_tx(&hx, &x, &TxOffloads::ALL) else {
            panic!("TSO frame rejected");
        };
        let mut buf = vec![0u8; plan.max_segment_len(mss)];
        let mut segs = Vec::new();
        segment(&x, &plan, mss, &mut buf, |s| segs.push(s.to_vec())).unwrap();
        let h = NetHdr { flags: if valid { HDR_F_DATA_VALID } else { 0 }, ..NetHdr::default() };
        let input: Frames = segs.iter().map(|s| (h, s.clone())).collect();
        let out = run(GroOpts::default(), &input);
        prop_assert_eq!(out.len(), 1);
        if segs.len() > 1 {
            prop_assert_eq!(&out[0].0, &hx);
            prop_assert_eq!(&out[0].1, &x);
        } else {
            prop_assert_eq!(&out[0], &input[0]);
            prop_assert_eq!(payload_of(&out[0].1), payload);
        }
    }

    /// With FIN (never merged) the byte stream still comes back whole and in order.
    #[test]
    fn fin_keeps_the_byte_stream(
        flow in common::flow_strategy(),
        payload_len in 1usize..6000,
        mss in 1u16..1500,
    ) {
        let mss = mss.max((payload_len / 60) as u16 + 1);
        let payload: Vec<u8> = (0..payload_len).map(|i| (i * 17) as u8).collect();
        let (x, hx) = common::gso_frame(&flow, 6, 5, ACK | tcp_flags::FIN | PSH, 9, &payload, mss);
        let Ok(TxPlan::Gso(plan)) = validate_tx(&hx, &x, &TxOffloads::ALL) else {
            panic!("TSO frame rejected");
        };
        let mut buf = vec![0u8; plan.max_segment_len(mss)];
        let mut segs = Vec::new();
        segment(&x, &plan, mss, &mut buf, |s| segs.push(s.to_vec())).unwrap();
        let out = run(GroOpts::default(), &plain(segs.clone()));
        prop_assert_eq!(out.len(), if segs.len() > 2 { 2 } else { segs.len() });
        let joined: Vec<u8> = out.iter().flat_map(|o| payload_of(&o.1)).collect();
        prop_assert_eq!(joined, payload);
        prop_assert_eq!(expand(&out), segs);
    }

    /// Any interleaving of two flows and other traffic: expanding the output gives the
    /// input back in order, and every frame left alone keeps its header.
    #[test]
    fn order_is_kept_and_bystanders_are_untouched(
        flow in common::flow_strategy(),
        items in prop::collection::vec(
            prop_oneof![
                4 => Just(Item::A),
                3 => Just(Item::B),
                1 => Just(Item::PureAck),
                1 => Just(Item::Udp),
                1 => (0usize..200).prop_map(Item::Noise),
            ],
            0..80,
        ),
        mss in 1usize..400,
        rsc_ext in any::<bool>(),
        full_csum in any::<bool>(),
    ) {
        let mut other = flow.clone();
        other.dport = other.dport.wrapping_add(1);
        let (mut seq_a, mut seq_b, mut id_a, mut id_b) = (7u32, 9000u32, 1u16, 500u16);
        let mut input = Vec::new();
        for (n, it) in items.iter().enumerate() {
            let pl: Vec<u8> = (0..mss).map(|i| (i + n) as u8).collect();
            let (h, f) = match it {
                Item::A => {
                    let f = common::tcp_frame(&flow, seq_a, ACK, id_a, &pl);
                    seq_a = seq_a.wrapping_add(mss as u32);
                    id_a = id_a.wrapping_add(1);
                    (NetHdr::default(), f)
                }
                Item::B => {
                    let f = common::tcp_frame(&other, seq_b, ACK, id_b, &pl);
                    seq_b = seq_b.wrapping_add(mss as u32);
                    id_b = id_b.wrapping_add(1);
                    (NetHdr { flags: HDR_F_DATA_VALID, ..NetHdr::default() }, f)
                }
                Item::PureAck => (NetHdr::default(), common::tcp_frame(&flow, seq_a, ACK, 0, &[])),
                Item::Udp => (NetHdr { num_buffers: 1, ..NetHdr::default() }, common::udp_frame(&flow, 3, &pl)),
                Item::Noise(len) => (NetHdr { flags: 0x40, ..NetHdr::default() }, noise(*len, n as u8)),
            };
            input.push((h, f));
        }
        let out = run(GroOpts { rsc_ext, full_csum, ..GroOpts::default() }, &input);
        prop_assert!(out.len() <= input.len());
        prop_assert_eq!(expand(&out), input.iter().map(|i| i.1.clone()).collect::<Vec<_>>());
        // Frames that come out without GSO are inputs, header and all, in input order.
        let mut rest = input.iter();
        for o in out.iter().filter(|o| o.0.gso_type == GSO_NONE) {
            prop_assert!(rest.any(|i| i == o));
        }
    }
}
