//! Basic traffic through both layouts: what the driver posts, the device sees intact,
//! and every completion comes back with its length.

mod common;
use common::*;
use virtq::{Burst, Used};

#[test]
fn tx_and_rx_roundtrip_both_layouts() {
    for layout in LAYOUTS {
        for indirect in [false, true] {
            let mut p = pair(layout, 64, ALL_FEATURES);
            let mut burst = Burst::with_capacity(32);
            let mut used = [Used { id: 0, len: 0 }; 64];
            let buf = p.arena.alloc(64 * 2048, 64).unwrap();
            for round in 0..20u32 {
                let mut ids = Vec::new();
                for i in 0..10u64 {
                    let a = buf + i * 2048;
                    let payload: Vec<u8> = (0..100).map(|b| (b as u32 + round + i as u32) as u8).collect();
                    p.arena.mem().write(a, &payload).unwrap();
                    let bufs = [rbuf(a, 40), rbuf(a + 40, 60), wbuf(a + 1024, 512)];
                    let id = if indirect { p.drv.add_indirect(&bufs) } else { p.drv.add(&bufs) }.unwrap();
                    ids.push(id);
                }
                p.drv.publish();
                let n = p.dev.pop(&mut burst, 32).unwrap();
                assert_eq!(n, 10, "{layout:?} indirect={indirect}");
                for (i, c) in burst.iter().enumerate() {
                    assert_eq!(c.read_len(), 100);
                    assert_eq!(c.write_len(), 512);
                    let mut got = [0u8; 100];
                    assert_eq!(c.read_at(0, &mut got), 100);
                    let want: Vec<u8> = (0..100).map(|b| (b as u32 + round + i as u32) as u8).collect();
                    assert_eq!(&got[..], &want[..]);
                    assert_eq!(c.write_at(0, &got[..50]), 50);
                }
                // Complete out of order.
                let toks: Vec<_> = burst.tokens().collect();
                for t in toks.iter().rev() {
                    p.dev.add_used(*t, 50);
                }
                p.dev.publish_used();
                let n = p.drv.poll_used(&mut used).unwrap();
                assert_eq!(n, 10);
                let mut got_ids: Vec<u16> = used[..n].iter().map(|u| u.id).collect();
                got_ids.reverse();
                assert_eq!(got_ids, ids);
                assert!(used[..n].iter().all(|u| u.len == 50));
                for i in 0..10u64 {
                    let mut w = [0u8; 50];
                    p.arena.mem().read(buf + i * 2048 + 1024, &mut w).unwrap();
                    assert_eq!(w[0], (round + i as u32) as u8);
                }
            }
            assert_eq!(p.drv.in_flight(), 0);
        }
    }
}

/// `put_copy` and `put_bytes` write header and frame when each side is one buffer that
/// holds them, and write nothing (leaving the general path to the caller) otherwise.
#[test]
fn put_copy_takes_single_buffers_and_refuses_other_layouts() {
    for layout in LAYOUTS {
        let mut p = pair(layout, 64, ALL_FEATURES);
        let mut burst = Burst::with_capacity(32);
        let buf = p.arena.alloc(16 * 4096, 64).unwrap();
        let frame: Vec<u8> = (0..200u32).map(|b| (b * 7 + 1) as u8).collect();
        p.arena.mem().write(buf, &frame).unwrap();
        let hdr = [0xa5u8; 12];
        // 0: source, the frame in one buffer; 1: the same frame split in two buffers;
        // 2: a receive buffer that holds header and frame; 3: one that is 1 byte short;
        // 4: the right size but split in two buffers.
        p.drv.add(&[rbuf(buf, 200)]).unwrap();
        p.drv.add(&[rbuf(buf, 100), rbuf(buf + 100, 100)]).unwrap();
        let rx = buf + 4096;
        p.drv.add(&[wbuf(rx, 212)]).unwrap();
        p.drv.add(&[wbuf(rx + 4096, 211)]).unwrap();
        p.drv.add(&[wbuf(rx + 8192, 100), wbuf(rx + 8192 + 100, 112)]).unwrap();
        p.drv.publish();
        assert_eq!(p.dev.pop(&mut burst, 32).unwrap(), 5, "{layout:?}");
        let (whole, split) = (burst.chain(0), burst.chain(1));
        let (fits, short, two) = (burst.chain(2), burst.chain(3), burst.chain(4));
        assert_eq!(fits.put_copy(&hdr, &whole, 0, 200), Some(212), "{layout:?}");
        let mut got = [0u8; 212];
        p.arena.mem().read(rx, &mut got).unwrap();
        assert_eq!(&got[..12], &hdr);
        assert_eq!(&got[12..], &frame[..]);
        // An offset into the source, as when the sender's header is skipped.
        assert_eq!(fits.put_copy(&hdr, &whole, 12, 188), Some(200));
        p.arena.mem().read(rx, &mut got[..200]).unwrap();
        assert_eq!(&got[12..200], &frame[12..]);
        assert_eq!(fits.put_copy(&hdr, &whole, 13, 188), None, "past the source buffer");
        assert_eq!(fits.put_copy(&hdr, &split, 0, 200), None, "split source");
        assert_eq!(short.put_copy(&hdr, &whole, 0, 200), None, "short receive buffer");
        assert_eq!(two.put_copy(&hdr, &whole, 0, 200), None, "split receive buffer");
        assert_eq!(short.put_bytes(&hdr, &frame), None);
        assert_eq!(short.put_bytes(&hdr, &frame[..199]), Some(211));
        let mut untouched = [0u8; 100];
        p.arena.mem().read(rx + 8192, &mut untouched).unwrap();
        assert!(untouched.iter().all(|&b| b == 0), "a refused put writes nothing");
    }
}
