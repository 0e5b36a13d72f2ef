//! Property tests: a random driver and the device, interleaved in a random schedule.
//!
//! The driver posts chains of 1-4 buffers with random lengths, directions and payload
//! bytes (directly or through an indirect table), publishes them and decides whether to
//! kick; the device pops bursts of random size, completes a random subset in random
//! order with random written lengths (writing known bytes into the writable buffers) and
//! sometimes publishes and decides on an interrupt; the driver polls. Both sides also
//! switch notifications on and off. As the API asks, every publish is followed by one
//! notification decision (packed event positions are only defined modulo twice the
//! ring size, so deciding less often than that is not supported).
//!
//! A model tracks what must happen, and after every step the test checks:
//! * the device pops exactly the published chains, in ring order, each with the id the
//!   driver got back from `add`, the same buffers (address, length, direction), and the
//!   readable bytes the driver wrote;
//! * the driver gets back exactly the published completions, in the order the device
//!   added them, with their lengths, and reads the bytes the device wrote (and nothing
//!   beyond the written length changed);
//! * every posted chain comes back exactly once, free-descriptor accounting is exact,
//!   `enable_kicks`/`enable_interrupts` report exactly whether work is pending, and no
//!   notification is lost: once a side armed notifications and found nothing to do, the
//!   next decision after new work is published says "notify";
//! * at the end everything drains, however many times the small rings wrapped.

mod common;
use common::*;

use std::collections::{HashMap, HashSet, VecDeque};

use proptest::prelude::*;
use virtq::{features, Buf, Burst, GuestArena, Layout, PostError, Token, Used};

/// Largest buffer length; each in-flight chain owns a slab of four such buffers.
const MAXLEN: u32 = 64;
const SLAB: u64 = 4 * MAXLEN as u64;
/// What the driver puts in writable buffers before posting them.
const SENTINEL: u8 = 0xee;

#[derive(Debug, Clone)]
enum Op {
    /// Driver: add a chain (not yet published).
    Post { nbufs: usize, nread: usize, lens: [u32; 4], seed: u64, indirect: bool },
    /// Driver: publish and decide on a kick (the API asks for one decision per publish).
    Publish,
    /// Device: pop a burst of up to `max` chains.
    Pop { max: usize },
    /// Device: complete some popped chains (`(which, written length)` selectors), and
    /// maybe publish them and decide on an interrupt (one decision per publish).
    Complete { picks: Vec<(usize, u32)>, publish: bool },
    /// Driver: collect up to `max` completions.
    Poll { max: usize },
    /// Driver: enable or disable interrupts.
    Interrupts { enable: bool },
    /// Device: enable or disable kicks.
    Kicks { enable: bool },
}

/// Buffers per chain: mostly short chains, so that small rings hold several at once.
fn nbufs() -> impl Strategy<Value = usize> {
    prop_oneof![3 => Just(1usize), 3 => Just(2usize), 1 => Just(3usize), 1 => Just(4usize)]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (nbufs(), 0usize..=4, prop::array::uniform4(0u32..=MAXLEN), any::<u64>(), any::<bool>())
            .prop_map(|(nbufs, r, lens, seed, indirect)| Op::Post {
                nbufs,
                nread: r % (nbufs + 1),
                lens,
                seed,
                indirect
            }),
        3 => Just(Op::Publish),
        4 => (1usize..=16).prop_map(|max| Op::Pop { max }),
        4 => (prop::collection::vec((any::<usize>(), any::<u32>()), 0..=8), any::<bool>())
            .prop_map(|(picks, publish)| Op::Complete { picks, publish }),
        4 => (1usize..=16).prop_map(|max| Op::Poll { max }),
        1 => any::<bool>().prop_map(|enable| Op::Interrupts { enable }),
        1 => any::<bool>().prop_map(|enable| Op::Kicks { enable }),
    ]
}

fn sizes() -> impl Strategy<Value = u16> {
    prop_oneof![1 => Just(1u16), 2 => Just(2u16), 4 => Just(4u16), 2 => Just(8u16), 1 => Just(16u16)]
}

/// The bytes the device writes into chain `seq`'s writable part.
fn pattern(seq: u64, n: u32) -> Vec<u8> {
    (0..n)
        .map(|i| (seq as u32).wrapping_mul(151).wrapping_add(i.wrapping_mul(7)).wrapping_add(1) as u8)
        .collect()
}

struct Posted {
    seq: u64,
    bufs: Vec<Buf>,
    payload: Vec<u8>,
    cap: u32,
    slab: usize,
    ndesc: u16,
}

struct Popped {
    burst: usize,
    chain: usize,
    id: u16,
    token: Token,
    cap: u32,
}

struct Sim {
    arena: GuestArena,
    r: Ring,
    data: u64,
    size: u16,
    layout: Layout,
    indirect: bool,
    free_slabs: Vec<usize>,
    /// Driver: chains in flight by id.
    posted: HashMap<u16, Posted>,
    /// Ids added and not yet popped, in ring order; the first `published` are published.
    order: VecDeque<u16>,
    published: usize,
    /// Bursts with chains not yet completed (chains are completed long after their pop),
    /// with the number of such chains.
    bursts: HashMap<usize, (Burst, usize)>,
    next_burst: usize,
    /// Popped, not completed.
    outstanding: Vec<Popped>,
    /// Completed, not published.
    unpublished: Vec<(u16, u32)>,
    /// Published, not yet polled, in used-ring order.
    visible: VecDeque<(u16, u32)>,
    expected_free: u16,
    next_seq: u64,
    returned: HashSet<u64>,
    /// Set when the device armed kicks and found nothing: chains published since.
    dev_armed: Option<usize>,
    /// Set when the driver armed interrupts and found nothing: completions published since.
    drv_armed: Option<usize>,
    what: String,
}

impl Sim {
    fn new(layout: Layout, size: u16, event_idx: bool, indirect: bool) -> Self {
        let mut feats = features::VERSION_1;
        if event_idx {
            feats |= features::EVENT_IDX;
        }
        if indirect {
            feats |= features::INDIRECT_DESC;
        }
        let mut arena = arena();
        let r = ring_in(&mut arena, layout, size, feats);
        let data = arena.alloc(size as u64 * SLAB, 4096).unwrap();
        Sim {
            arena,
            r,
            data,
            size,
            layout,
            indirect,
            free_slabs: (0..size as usize).rev().collect(),
            posted: HashMap::new(),
            order: VecDeque::new(),
            published: 0,
            bursts: HashMap::new(),
            next_burst: 0,
            outstanding: Vec::new(),
            unpublished: Vec::new(),
            visible: VecDeque::new(),
            expected_free: size,
            next_seq: 0,
            returned: HashSet::new(),
            dev_armed: None,
            drv_armed: None,
            what: format!("{layout:?} size {size} event_idx {event_idx} indirect {indirect}"),
        }
    }

    fn step(&mut self, op: &Op) {
        match op {
            Op::Post { nbufs, nread, lens, seed, indirect } => {
                self.post(*nbufs, *nread, lens, *seed, *indirect)
            }
            Op::Publish => self.publish(true),
            Op::Pop { max } => {
                self.pop(*max);
            }
            Op::Complete { picks, publish } => self.complete(picks, *publish, true),
            Op::Poll { max } => {
                self.poll(*max);
            }
            Op::Interrupts { enable } => {
                if *enable {
                    let r = self.r.drv.enable_interrupts();
                    assert_eq!(r, !self.visible.is_empty(), "{}: enable_interrupts", self.what);
                    self.drv_armed = if r { None } else { Some(0) };
                } else {
                    self.r.drv.disable_interrupts();
                    self.drv_armed = None;
                }
            }
            Op::Kicks { enable } => {
                if *enable {
                    let r = self.r.dev.enable_kicks();
                    assert_eq!(r, self.published > 0, "{}: enable_kicks", self.what);
                    assert_eq!(self.r.dev.has_avail(), r);
                    self.dev_armed = if r { None } else { Some(0) };
                } else {
                    self.r.dev.disable_kicks();
                    self.dev_armed = None;
                }
            }
        }
        self.check_invariants();
    }

    fn check_invariants(&self) {
        assert_eq!(self.r.dev.broken(), None, "{}", self.what);
        assert_eq!(self.r.drv.in_flight() as usize, self.posted.len(), "{}", self.what);
        assert_eq!(self.r.drv.num_free(), self.expected_free, "{}", self.what);
        assert_eq!(self.r.dev.has_avail(), self.published > 0, "{}", self.what);
    }

    fn post(&mut self, nbufs: usize, nread: usize, lens: &[u32; 4], seed: u64, indirect: bool) {
        let use_indirect = indirect && self.indirect;
        let need = if use_indirect { 1 } else { nbufs as u16 };
        let Some(slab) = self.free_slabs.pop() else {
            // Every slab is in flight, so every descriptor is too.
            assert_eq!(self.expected_free, 0, "{}", self.what);
            let b = [rbuf(self.data, 1)];
            let r = if use_indirect { self.r.drv.add_indirect(&b) } else { self.r.drv.add(&b) };
            assert_eq!(r, Err(PostError::Full), "{}", self.what);
            return;
        };
        let mem = self.arena.mem().clone();
        let base = self.data + slab as u64 * SLAB;
        let mut rng = Prng::new(seed);
        let mut bufs = Vec::new();
        let mut payload = Vec::new();
        let mut cap = 0;
        for (i, &len) in lens.iter().enumerate().take(nbufs) {
            let addr = base + i as u64 * MAXLEN as u64;
            let writable = i >= nread;
            if writable {
                mem.write(addr, &[SENTINEL; MAXLEN as usize]).unwrap();
                cap += len;
            } else {
                let bytes = rng.bytes(len as usize);
                mem.write(addr, &bytes).unwrap();
                payload.extend_from_slice(&bytes);
            }
            bufs.push(Buf { addr, len, writable });
        }
        let res = if use_indirect { self.r.drv.add_indirect(&bufs) } else { self.r.drv.add(&bufs) };
        if use_indirect && nbufs > self.size as usize {
            // No chain may be longer than the queue, not even through an indirect table.
            assert_eq!(res, Err(PostError::IndirectTooLong(nbufs)), "{}", self.what);
            self.free_slabs.push(slab);
            return;
        }
        if need > self.expected_free {
            assert_eq!(res, Err(PostError::Full), "{}", self.what);
            self.free_slabs.push(slab);
            return;
        }
        let id = res.unwrap_or_else(|e| panic!("{}: add failed: {e}", self.what));
        assert!(id < self.size);
        let seq = self.next_seq;
        self.next_seq += 1;
        let prev = self.posted.insert(id, Posted { seq, bufs, payload, cap, slab, ndesc: need });
        assert!(prev.is_none(), "{}: id {id} handed out twice", self.what);
        self.order.push_back(id);
        self.expected_free -= need;
    }

    fn publish(&mut self, kick: bool) {
        self.r.drv.publish();
        let newly = self.order.len() - self.published;
        self.published = self.order.len();
        if let Some(c) = self.dev_armed.as_mut() {
            *c += newly;
        }
        if kick {
            let k = self.r.drv.needs_kick();
            if let Some(c) = self.dev_armed {
                if c > 0 {
                    assert!(k, "{}: lost kick: device armed and {c} chains published since", self.what);
                    self.dev_armed = None;
                }
            }
        }
    }

    fn pop(&mut self, max: usize) -> usize {
        let mut burst = Burst::with_capacity(16);
        let n = self.r.dev.pop(&mut burst, max);
        let want = self.published.min(max).min(16);
        assert_eq!(n, Ok(want), "{}: pop", self.what);
        let mem = self.arena.mem().clone();
        for (i, c) in burst.iter().enumerate() {
            let id = self.order.pop_front().unwrap();
            assert_eq!(c.id(), id, "{}: chains come out in ring order", self.what);
            let p = &self.posted[&id];
            let ndesc = if self.layout == Layout::Split { 1 } else { p.ndesc };
            assert_eq!(c.token().ndesc(), ndesc);
            let segs: Vec<Buf> = c
                .readable()
                .iter()
                .map(|s| Buf { addr: s.gpa(), len: s.len() as u32, writable: false })
                .chain(c.writable().iter().map(|s| Buf {
                    addr: s.gpa(),
                    len: s.len() as u32,
                    writable: true,
                }))
                .collect();
            assert_eq!(segs, p.bufs, "{}: buffers of chain {id}", self.what);
            assert_eq!(c.read_len() as usize, p.payload.len());
            assert_eq!(c.write_len(), p.cap);
            let mut got = vec![0u8; p.payload.len() + 8];
            assert_eq!(c.read_at(0, &mut got), p.payload.len());
            assert_eq!(
                &got[..p.payload.len()],
                &p.payload[..],
                "{}: readable bytes of chain {id}",
                self.what
            );
            // Reading at an offset gathers across buffers too.
            if p.payload.len() > 3 {
                let mut tail = vec![0u8; p.payload.len() - 3];
                assert_eq!(c.read_at(3, &mut tail), p.payload.len() - 3);
                assert_eq!(&tail[..], &p.payload[3..]);
            }
            // The guest memory still holds what the driver wrote (the device only reads).
            for b in c.readable() {
                let mut direct = vec![0u8; b.len()];
                mem.read(b.gpa(), &mut direct).unwrap();
                let mut via = vec![0u8; b.len()];
                assert_eq!(b.read(0, &mut via), b.len());
                assert_eq!(direct, via);
            }
            self.outstanding.push(Popped {
                burst: self.next_burst,
                chain: i,
                id,
                token: c.token(),
                cap: p.cap,
            });
        }
        self.published -= want;
        if want > 0 {
            self.bursts.insert(self.next_burst, (burst, want));
            self.next_burst += 1;
        }
        want
    }

    fn complete(&mut self, picks: &[(usize, u32)], publish: bool, notify: bool) {
        for &(which, l) in picks {
            if self.outstanding.is_empty() {
                break;
            }
            let p = self.outstanding.remove(which % self.outstanding.len());
            let w = l % (p.cap + 1);
            let seq = self.posted[&p.id].seq;
            let (burst, left) = self.bursts.get_mut(&p.burst).unwrap();
            let c = burst.chain(p.chain);
            assert_eq!(c.id(), p.id);
            assert_eq!(c.token(), p.token);
            // Scatter the bytes in two writes, the second at an offset.
            let bytes = pattern(seq, w);
            let cut = (which >> 8) % (w as usize + 1);
            assert_eq!(c.write_at(0, &bytes[..cut]), cut);
            assert_eq!(c.write_at(cut, &bytes[cut..]), w as usize - cut);
            // Writing past the writable part is cut short.
            assert_eq!(c.write_at(p.cap as usize, &[1, 2, 3]), 0);
            *left -= 1;
            if *left == 0 {
                self.bursts.remove(&p.burst);
            }
            self.r.dev.add_used(p.token, w);
            self.unpublished.push((p.id, w));
        }
        if publish {
            self.r.dev.publish_used();
            let newly = self.unpublished.len();
            self.visible.extend(self.unpublished.drain(..));
            if let Some(c) = self.drv_armed.as_mut() {
                *c += newly;
            }
            if notify {
                let k = self.r.dev.needs_notify();
                if let Some(c) = self.drv_armed {
                    if c > 0 {
                        assert!(k, "{}: lost interrupt: driver armed and {c} completions since", self.what);
                        self.drv_armed = None;
                    }
                }
            }
        }
    }

    fn poll(&mut self, max: usize) -> usize {
        let mut out = vec![Used { id: u16::MAX, len: u32::MAX }; max];
        let n = self.r.drv.poll_used(&mut out);
        let want = self.visible.len().min(max);
        assert_eq!(n, Ok(want), "{}: poll_used", self.what);
        let mem = self.arena.mem().clone();
        for u in &out[..want] {
            let (id, len) = self.visible.pop_front().unwrap();
            assert_eq!(*u, Used { id, len }, "{}: completion order", self.what);
            let p = self.posted.remove(&id).unwrap();
            assert!(self.returned.insert(p.seq), "{}: chain {} returned twice", self.what, p.seq);
            // The bytes the device wrote, then the untouched rest.
            let mut written = Vec::new();
            let mut read_back = Vec::new();
            for b in &p.bufs {
                let mut v = vec![0u8; b.len as usize];
                mem.read(b.addr, &mut v).unwrap();
                if b.writable {
                    written.extend_from_slice(&v);
                } else {
                    read_back.extend_from_slice(&v);
                }
            }
            assert_eq!(read_back, p.payload, "{}: readable buffers changed", self.what);
            let len = len as usize;
            assert_eq!(&written[..len], &pattern(p.seq, len as u32)[..], "{}: bytes written", self.what);
            assert!(written[len..].iter().all(|b| *b == SENTINEL), "{}: wrote past len", self.what);
            self.free_slabs.push(p.slab);
            self.expected_free += p.ndesc;
        }
        want
    }

    /// Publishes everything, then pops, completes and polls until nothing is in flight.
    fn drain(&mut self) {
        self.publish(true);
        let mut rounds = 0;
        while !self.posted.is_empty() {
            rounds += 1;
            assert!(rounds < 1000, "{}: ring does not drain", self.what);
            while self.pop(16) > 0 {}
            let all: Vec<(usize, u32)> = (0..self.outstanding.len()).map(|_| (0, u32::MAX)).collect();
            self.complete(&all, true, true);
            self.poll(64);
            self.check_invariants();
        }
        assert!(self.outstanding.is_empty() && self.unpublished.is_empty() && self.visible.is_empty());
        assert_eq!(self.returned.len() as u64, self.next_seq, "{}: every chain came back", self.what);
        assert_eq!(self.r.drv.num_free(), self.size);
        assert_eq!(self.r.drv.in_flight(), 0);
    }
}

fn run(layout: Layout, size: u16, event_idx: bool, indirect: bool, ops: &[Op]) {
    let mut sim = Sim::new(layout, size, event_idx, indirect);
    for op in ops {
        sim.step(op);
    }
    sim.drain();
    // The ring is still healthy: one more full round.
    exercise_after(&mut sim);
}

/// After the random schedule the queue still carries traffic normally.
fn exercise_after(sim: &mut Sim) {
    for _ in 0..3 {
        sim.step(&Op::Post { nbufs: 1, nread: 0, lens: [8, 0, 0, 0], seed: 1, indirect: false });
    }
    sim.drain();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn split_plain(size in sizes(), ops in prop::collection::vec(op_strategy(), 1..600)) {
        run(Layout::Split, size, false, false, &ops);
    }

    #[test]
    fn split_event_idx(size in sizes(), ops in prop::collection::vec(op_strategy(), 1..600)) {
        run(Layout::Split, size, true, false, &ops);
    }

    #[test]
    fn split_indirect(size in sizes(), ops in prop::collection::vec(op_strategy(), 1..600)) {
        run(Layout::Split, size, false, true, &ops);
    }

    #[test]
    fn split_event_idx_indirect(size in sizes(), ops in prop::collection::vec(op_strategy(), 1..600)) {
        run(Layout::Split, size, true, true, &ops);
    }

    #[test]
    fn packed_plain(size in sizes(), ops in prop::collection::vec(op_strategy(), 1..600)) {
        run(Layout::Packed, size, false, false, &ops);
    }

    #[test]
    fn packed_event_idx(size in sizes(), ops in prop::collection::vec(op_strategy(), 1..600)) {
        run(Layout::Packed, size, true, false, &ops);
    }

    #[test]
    fn packed_indirect(size in sizes(), ops in prop::collection::vec(op_strategy(), 1..600)) {
        run(Layout::Packed, size, false, true, &ops);
    }

    #[test]
    fn packed_event_idx_indirect(size in sizes(), ops in prop::collection::vec(op_strategy(), 1..600)) {
        run(Layout::Packed, size, true, true, &ops);
    }
}

/// Long deterministic schedules that push the free-running 16-bit indices (split) and
/// sequence numbers (packed) through their wrap at 2^16, several times for the small
/// rings, with the same checks as the property tests.
#[test]
fn indices_wrap_past_u16() {
    for layout in LAYOUTS {
        for (size, event_idx, indirect) in [(4u16, true, true), (16, false, true), (8, true, false)] {
            let mut sim = Sim::new(layout, size, event_idx, indirect);
            let mut rng = Prng::new(size as u64 * 7 + event_idx as u64);
            // Each chain takes at least one position; 70000 chains pass 2^16 positions.
            while sim.next_seq < 70_000 {
                for _ in 0..1 + rng.below(size as u64) {
                    let nbufs = 1 + rng.below(3) as usize;
                    let op = Op::Post {
                        nbufs,
                        nread: rng.below(nbufs as u64 + 1) as usize,
                        lens: [1 + rng.below(16) as u32, rng.below(16) as u32, 8, 8],
                        seed: rng.next_u64(),
                        indirect: rng.below(2) == 0,
                    };
                    sim.step(&op);
                }
                sim.step(&Op::Publish);
                sim.step(&Op::Pop { max: 1 + rng.below(16) as usize });
                let picks =
                    (0..rng.below(8)).map(|_| (rng.next_u64() as usize, rng.next_u64() as u32)).collect();
                sim.step(&Op::Complete { picks, publish: true });
                sim.step(&Op::Poll { max: 1 + rng.below(16) as usize });
                if rng.below(4) == 0 {
                    let enable = rng.below(2) == 0;
                    sim.step(&if rng.below(2) == 0 {
                        Op::Kicks { enable }
                    } else {
                        Op::Interrupts { enable }
                    });
                }
            }
            sim.drain();
        }
    }
}
