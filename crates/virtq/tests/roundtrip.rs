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
