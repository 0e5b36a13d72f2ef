//! The switch between virtio-user endpoints in one process: learning and flooding,
//! VLAN access and trunk ports, anti-spoofing and unicast filters, receive-queue
//! steering by flow, large frames through merged buffers, and the learning table's
//! caps. Every frame is checked byte for byte where it arrives, and where it must not
//! arrive, its absence is checked after the frames that were sent after it came
//! through elsewhere.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netproto::ethernet::Mac;
use vhost_backend::fdb::FdbConfig;
use vhost_backend::{Port, PortPolicy, PortSpec, SocketMode, VlanMode, Worker};
use virtio_user::{frame, Config, Packet, VirtioUser};

fn mac(i: u8) -> [u8; 6] {
    [0x52, 0x54, 0, 0, 0, i]
}

struct Ep {
    port: Port,
    dev: VirtioUser,
    bufs: Vec<Packet>,
}

impl Ep {
    fn start(tag: &str, id: u32, w: &Arc<Worker>, policy: PortPolicy, qps: u16, cfg: Config) -> Ep {
        Ep::start_coalesced(tag, id, w, policy, qps, cfg, Default::default())
    }

    fn start_coalesced(
        tag: &str,
        id: u32,
        w: &Arc<Worker>,
        policy: PortPolicy,
        qps: u16,
        cfg: Config,
        coalesce: vhost_backend::polling::Coalesce,
    ) -> Ep {
        let sock = std::env::temp_dir().join(format!("vw-sw-{tag}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&sock);
        let spec = PortSpec {
            name: tag.into(),
            queue_pairs: qps,
            mac: Mac(mac(id as u8)),
            mtu: 0,
            diag: None,
            policy,
            diag_frame_size: 64,
            coalesce,
            withheld_features: 0,
        };
        let port = Port::start(spec, &sock, SocketMode::Server, id, w.clone()).unwrap();
        let dev = VirtioUser::connect(&sock, &Config { queue_pairs: qps, ..cfg }).unwrap();
        let _ = std::fs::remove_file::<PathBuf>(sock);
        Ep { port, dev, bufs: (0..64).map(|_| Packet::with_capacity(70_000)).collect() }
    }

    fn send(&mut self, qp: usize, f: &[u8]) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.dev.tx_burst(qp, &[f]).unwrap() == 0 {
            assert!(Instant::now() < deadline, "transmit ring full");
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// Every frame received within `wait` (on any queue pair), with its queue pair.
    fn recv_for(&mut self, wait: Duration) -> Vec<(usize, Vec<u8>)> {
        let mut got = Vec::new();
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            for qp in 0..self.dev.num_queue_pairs() as usize {
                let n = self.dev.rx_burst(qp, &mut self.bufs).unwrap();
                for p in &self.bufs[..n] {
                    assert!(!p.truncated());
                    got.push((qp, p.data().to_vec()));
                }
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        got
    }

    /// Waits for exactly `n` frames.
    fn recv_n(&mut self, n: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < n {
            assert!(Instant::now() < deadline, "{} of {n} frames arrived", got.len());
            for qp in 0..self.dev.num_queue_pairs() as usize {
                let k = self.dev.rx_burst(qp, &mut self.bufs).unwrap();
                got.extend(self.bufs[..k].iter().map(|p| p.data().to_vec()));
            }
        }
        got
    }
}

fn test_frame(dst: [u8; 6], src: [u8; 6], len: usize, seq: u64) -> Vec<u8> {
    let mut f = vec![0u8; len];
    frame::build(&mut f, dst, src, 0);
    frame::stamp(&mut f, seq, 0);
    f
}

/// Inserts an 802.1Q tag after the addresses.
fn tagged(f: &[u8], vid: u16) -> Vec<u8> {
    let mut t = f[..12].to_vec();
    t.extend_from_slice(&[0x81, 0x00, (vid >> 8) as u8, vid as u8]);
    t.extend_from_slice(&f[12..]);
    t
}

fn quiet() -> Duration {
    Duration::from_millis(150)
}

fn open(pols: &[PortPolicy], tag: &str) -> (Arc<Worker>, Vec<Ep>) {
    let w = Worker::spawn(&format!("dp-{tag}"), FdbConfig::default()).unwrap();
    let eps = pols
        .iter()
        .enumerate()
        .map(|(i, p)| Ep::start(&format!("{tag}{i}"), i as u32 + 1, &w, p.clone(), 1, Config::default()))
        .collect();
    (w, eps)
}

#[test]
fn learns_floods_unknown_then_forwards_to_one_port() {
    let (w, mut e) = open(&[PortPolicy::default(), PortPolicy::default(), PortPolicy::default()], "learn");
    let (a, b) = (mac(1), mac(2));
    // Unknown destination: flooded to both other ports.
    let f1 = test_frame(b, a, 60, 1);
    e[0].send(0, &f1);
    assert_eq!(e[1].recv_n(1), vec![f1.clone()]);
    assert_eq!(e[2].recv_n(1), vec![f1.clone()]);
    // b answers: a is known, so only a gets it.
    let f2 = test_frame(a, b, 100, 2);
    e[1].send(0, &f2);
    assert_eq!(e[0].recv_n(1), vec![f2]);
    // Now b is known too: the next frame reaches only b.
    for seq in 0..50 {
        e[0].send(0, &test_frame(b, a, 60 + seq as usize, seq));
    }
    let got = e[1].recv_n(50);
    for (i, f) in got.iter().enumerate() {
        assert_eq!(frame::check(f).unwrap().seq, i as u64, "in order and intact");
    }
    // Broadcast reaches everyone else; afterwards c has seen just the first flood and it.
    let bc = test_frame([0xff; 6], a, 64, 99);
    e[0].send(0, &bc);
    assert_eq!(e[1].recv_n(1), vec![bc.clone()]);
    let c_got = e[2].recv_for(quiet());
    assert_eq!(c_got.len(), 1, "c only gets the broadcast");
    assert_eq!(c_got[0].1, bc);
    let fdb = w.fdb_dump();
    assert!(fdb.iter().any(|r| r.mac == Mac(a) && r.port == 1 && r.vlan == 0), "{fdb:?}");
    assert!(fdb.iter().any(|r| r.mac == Mac(b) && r.port == 2), "{fdb:?}");
    let s = e[0].port.stats.snapshot();
    assert_eq!(s.rx_packets, 52);
    assert_eq!(e[1].port.stats.snapshot().tx_packets, 52);
    // Flush: b is unknown again, so the next frame floods.
    w.fdb_flush(None);
    std::thread::sleep(Duration::from_millis(20));
    let f3 = test_frame(b, a, 60, 7);
    e[0].send(0, &f3);
    assert_eq!(e[2].recv_n(1), vec![f3]);
}

#[test]
fn vlans_access_and_trunk() {
    let access = |v| PortPolicy { vlan: VlanMode::Access(v), ..Default::default() };
    let trunk = PortPolicy {
        vlan: VlanMode::Trunk { allowed: [10, 20].into_iter().collect(), native: None },
        ..Default::default()
    };
    let (_w, mut e) = open(&[access(10), access(10), access(20), trunk], "vlan");
    // A broadcast on VLAN 10: the other access-10 port gets it untagged, the trunk
    // tagged with 10, the VLAN 20 port nothing.
    let bc = test_frame([0xff; 6], mac(1), 80, 1);
    e[0].send(0, &bc);
    assert_eq!(e[1].recv_n(1), vec![bc.clone()]);
    assert_eq!(e[3].recv_n(1), vec![tagged(&bc, 10)]);
    // The trunk sends on VLAN 20: it reaches the VLAN 20 port untagged, nobody else.
    let t20 = test_frame([0xff; 6], mac(4), 90, 2);
    e[3].send(0, &tagged(&t20, 20));
    assert_eq!(e[2].recv_n(1), vec![t20]);
    // Tags the ports do not carry are dropped and counted.
    e[3].send(0, &tagged(&test_frame([0xff; 6], mac(4), 60, 3), 30));
    e[0].send(0, &tagged(&test_frame([0xff; 6], mac(1), 60, 4), 10));
    // Unicast on VLAN 10 between the access ports (learned from the broadcast).
    let u = test_frame(mac(1), mac(2), 70, 5);
    e[1].send(0, &u);
    assert_eq!(e[0].recv_n(1), vec![u]);
    assert!(e[2].recv_for(quiet()).is_empty(), "VLAN 20 saw nothing of VLAN 10");
    assert!(e[1].recv_for(Duration::ZERO).is_empty());
    assert_eq!(e[3].port.stats.snapshot().drop_vlan, 1);
    assert_eq!(e[0].port.stats.snapshot().drop_vlan, 1);
}

#[test]
fn anti_spoofing_and_unicast_filter() {
    let pinned = |m: u8| PortPolicy { macs: vec![Mac(mac(m))], ..Default::default() };
    let (_w, mut e) = open(&[pinned(1), pinned(2), PortPolicy::default()], "spoof");
    // From a forged source: dropped and counted.
    e[0].send(0, &test_frame(mac(2), mac(9), 60, 1));
    // Unknown unicast from the open port: the pinned ports do not take it.
    e[2].send(0, &test_frame(mac(7), mac(3), 60, 2));
    // To the pinned port's own address: delivered even before it was learned.
    let ok = test_frame(mac(2), mac(3), 60, 3);
    e[2].send(0, &ok);
    assert_eq!(e[1].recv_n(1), vec![ok]);
    // From its own address: forwarded.
    let fine = test_frame(mac(3), mac(1), 60, 4);
    e[0].send(0, &fine);
    assert_eq!(e[2].recv_n(1), vec![fine]);
    assert!(e[1].recv_for(quiet()).is_empty());
    assert!(e[0].recv_for(Duration::ZERO).is_empty());
    assert_eq!(e[0].port.stats.snapshot().drop_spoofed, 1);
}

fn udp_frame(dst: [u8; 6], src: [u8; 6], sport: u16, seq: u32) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&50u16.to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&[10, 0, 0, 1]);
    f[30..34].copy_from_slice(&[10, 0, 0, 2]);
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&5201u16.to_be_bytes());
    f[42..46].copy_from_slice(&seq.to_be_bytes());
    f
}

#[test]
fn flows_spread_over_receive_queues_in_order() {
    let w = Worker::spawn("dp-mq", FdbConfig::default()).unwrap();
    let mut a = Ep::start("mqa", 1, &w, PortPolicy::default(), 1, Config::default());
    let mut b = Ep::start("mqb", 2, &w, PortPolicy::default(), 4, Config::default());
    // Teach the switch where b is.
    b.send(0, &test_frame(mac(1), mac(2), 60, 0));
    a.recv_n(1);
    let flows = 16u16;
    for seq in 0..20u32 {
        for fl in 0..flows {
            a.send(0, &udp_frame(mac(2), mac(1), 1000 + fl, seq));
        }
    }
    let mut got: Vec<(usize, Vec<u8>)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 320 && Instant::now() < deadline {
        got.extend(b.recv_for(Duration::from_millis(20)));
    }
    assert_eq!(got.len(), 320);
    let mut queue_of = std::collections::HashMap::new();
    let mut next = std::collections::HashMap::new();
    for (qp, f) in &got {
        let sport = u16::from_be_bytes([f[34], f[35]]);
        let seq = u32::from_be_bytes([f[42], f[43], f[44], f[45]]);
        assert_eq!(*queue_of.entry(sport).or_insert(*qp), *qp, "flow {sport} changed queue");
        let n = next.entry(sport).or_insert(0u32);
        assert_eq!(seq, *n, "flow {sport} reordered");
        *n += 1;
    }
    let used: std::collections::HashSet<_> = queue_of.values().collect();
    assert!(used.len() >= 3, "16 flows used only {used:?}");
    let qs = b.port.stats.queue_snapshots();
    assert_eq!(qs.iter().map(|q| q.tx_packets).sum::<u64>(), 320);
    assert!(qs.iter().filter(|q| q.tx_packets > 0).count() >= 3, "{qs:?}");
}

#[test]
fn large_frames_through_merged_buffers() {
    let w = Worker::spawn("dp-big", FdbConfig::default()).unwrap();
    // 1 KiB receive buffers: a 60000-byte frame spans 59 of them, more than a burst.
    let small_bufs = Config { mrg_rxbuf: true, rx_buf_len: 1024, tx_buf_len: 65536, ..Config::default() };
    let mut a = Ep::start("biga", 1, &w, PortPolicy::default(), 1, small_bufs.clone());
    let mut b = Ep::start("bigb", 2, &w, PortPolicy::default(), 1, small_bufs);
    for (i, len) in [60usize, 1514, 4000, 9018, 20000, 60000, 9018, 61, 60000].into_iter().enumerate() {
        let f = test_frame(mac(2), mac(1), len, i as u64);
        a.send(0, &f);
        let got = b.recv_n(1);
        assert_eq!(got[0].len(), len);
        frame::check(&got[0]).unwrap();
        assert_eq!(got[0], f);
    }
}

#[test]
fn learning_cap_keeps_other_stations() {
    let w =
        Worker::spawn("dp-cap", FdbConfig { max_entries: 1000, max_per_port: 50, aging_secs: 300 }).unwrap();
    let mut a = Ep::start("capa", 1, &w, PortPolicy::default(), 1, Config::default());
    let mut b = Ep::start("capb", 2, &w, PortPolicy::default(), 1, Config::default());
    b.send(0, &test_frame([0xff; 6], mac(2), 60, 0));
    a.recv_n(1);
    // a floods from 500 random sources.
    for chunk in 0..5u32 {
        for i in chunk * 100..(chunk + 1) * 100 {
            let s = i.to_be_bytes();
            a.send(0, &test_frame([0xff; 6], [0x02, 0x99, s[0], s[1], s[2], s[3]], 60, i as u64));
        }
        b.recv_n(100);
    }
    let st = w.fdb_stats().snapshot();
    assert_eq!(st.entries, 51);
    assert_eq!(st.refused_port_cap, 450);
    let fdb = w.fdb_dump();
    assert!(fdb.iter().any(|r| r.mac == Mac(mac(2)) && r.port == 2), "b's entry survived");
    // And b is still reached directly: a frame to it is not flooded back to a.
    let f = test_frame(mac(2), [0x02, 0x99, 0, 0, 0, 1], 60, 1000);
    a.send(0, &f);
    assert_eq!(b.recv_n(1), vec![f]);
}

fn ip(args: &str) {
    let st = std::process::Command::new("ip").args(args.split_whitespace()).status().unwrap();
    assert!(st.success(), "ip {args}");
}

/// Removes the test's network namespace (and with it the tap) however the test ends.
struct Netns(String);
impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn tap_port_carries_arp_both_ways() {
    let w = Worker::spawn("dp-tap", FdbConfig::default()).unwrap();
    let pid = std::process::id();
    let (ifname, ns) = (format!("vwt{}", pid % 100_000), format!("vw-sw-{pid}"));
    let _ = std::process::Command::new("ip").args(["netns", "del", &ns]).status();
    let tap = vhost_backend::TapPort::start("tap", &ifname, PortPolicy::default(), 9, w.clone()).unwrap();
    ip(&format!("netns add {ns}"));
    let _guard = Netns(ns.clone());
    ip(&format!("link set {ifname} netns {ns}"));
    ip(&format!("-n {ns} addr add 10.99.0.1/24 dev {ifname}"));
    ip(&format!("-n {ns} link set {ifname} up"));
    let mut vm = Ep::start("tapvm", 1, &w, PortPolicy::default(), 1, Config::default());
    // An ARP request for the namespace's address, from the endpoint (RFC 826).
    let me = mac(1);
    let mut req = vec![0xff; 6];
    req.extend_from_slice(&me);
    req.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    req.extend_from_slice(&me);
    req.extend_from_slice(&[10, 99, 0, 2, 0, 0, 0, 0, 0, 0, 10, 99, 0, 1]);
    req.resize(60, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let reply = loop {
        assert!(Instant::now() < deadline, "no ARP reply from the namespace");
        vm.send(0, &req);
        let got = vm.recv_for(Duration::from_millis(200));
        if let Some((_, f)) = got.into_iter().find(|(_, f)| f.len() >= 42 && f[12..14] == [0x08, 0x06]) {
            break f;
        }
    };
    assert_eq!(&reply[0..6], &me, "the reply is addressed to the endpoint");
    assert_eq!(&reply[20..22], &[0, 2], "an ARP reply");
    assert_eq!(&reply[28..32], &[10, 99, 0, 1], "for the namespace's address");
    assert!(tap.stats.snapshot().tx_packets >= 1 && tap.stats.snapshot().rx_packets >= 1);
}

fn with_backpressure(tag: &str, bound: Duration) -> Arc<Worker> {
    let w = Worker::spawn(tag, FdbConfig::default()).unwrap();
    w.send(vhost_backend::worker::Ctl::SetPolling(vhost_backend::PollConfig {
        backpressure: bound,
        ..Default::default()
    }));
    w
}

#[test]
fn steady_sender_loses_nothing_next_to_a_flood() {
    // The bound is generous so that the test threads being descheduled on a busy
    // machine cannot make a frame expire; fairness, not the bound, is under test.
    let w = with_backpressure("dp-fair", Duration::from_millis(200));
    let mut a = Ep::start("faira", 1, &w, PortPolicy::default(), 1, Config::default());
    let mut b = Ep::start("fairb", 2, &w, PortPolicy::default(), 1, Config::default());
    let mut c = Ep::start("fairc", 3, &w, PortPolicy::default(), 1, Config::default());
    // Everyone learns where b is.
    b.send(0, &test_frame([0xff; 6], mac(2), 60, 0));
    a.recv_n(1);
    c.recv_n(1);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let flood = std::thread::spawn(move || {
        let f = test_frame(mac(2), mac(1), 60, 0);
        let burst: Vec<&[u8]> = (0..32).map(|_| &f[..]).collect();
        let mut sent = 0u64;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            sent += a.dev.tx_burst(0, &burst).unwrap() as u64;
        }
        (sent, a)
    });
    // c sends 2000 frames about every 100 us while b drains everything it gets.
    let n = 2000u64;
    let mut next = 0u64;
    let (mut from_a, mut seq_c) = (0u64, 0u64);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(20);
    while seq_c < n {
        assert!(Instant::now() < deadline, "{seq_c} of {n} steady frames arrived");
        if next < n && start.elapsed() >= Duration::from_micros(100 * next) {
            let f = test_frame(mac(2), mac(3), 64, next);
            if c.dev.tx_burst(0, &[&f[..]]).unwrap() == 1 {
                next += 1;
            }
        }
        let k = b.dev.rx_burst(0, &mut b.bufs).unwrap();
        for p in &b.bufs[..k] {
            let f = p.data();
            if f[6..12] == mac(3) {
                assert_eq!(frame::check(f).unwrap().seq, seq_c, "steady frames arrive in order");
                seq_c += 1;
            } else {
                from_a += 1;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (flooded, a) = flood.join().unwrap();
    assert!(from_a > 0 && flooded > 0, "the flood ran ({flooded} sent, {from_a} received)");
    assert_eq!(b.port.stats.snapshot().drop_no_rx_buffer, 0, "nothing was dropped, the flood waited");
    assert!(a.port.stats.snapshot().backpressure > 0 || from_a >= flooded, "the flood was held back");
}

#[test]
fn a_receiver_that_takes_nothing_does_not_hold_up_others() {
    let w = with_backpressure("dp-stall", Duration::from_millis(5));
    let mut a = Ep::start("stalla", 1, &w, PortPolicy::default(), 1, Config::default());
    let mut b = Ep::start("stallb", 2, &w, PortPolicy::default(), 1, Config::default());
    let mut d = Ep::start("stalld", 3, &w, PortPolicy::default(), 1, Config::default());
    b.send(0, &test_frame([0xff; 6], mac(2), 60, 0));
    d.send(0, &test_frame([0xff; 6], mac(3), 60, 0));
    a.recv_n(2);
    d.recv_n(1);
    // b never reads: its 256 receive buffers fill, then frames for it wait 5 ms and
    // are dropped, and from then on dropped at once. Frames for d keep flowing.
    for i in 0..400u64 {
        a.send(0, &test_frame(mac(2), mac(1), 60, i));
    }
    for i in 0..100u64 {
        a.send(0, &test_frame(mac(3), mac(1), 60, i));
    }
    let got = d.recv_n(100);
    for (i, f) in got.iter().enumerate() {
        assert_eq!(frame::check(f).unwrap().seq, i as u64);
    }
    let sb = b.port.stats.snapshot();
    // d's broadcast took one of b's 256 buffers.
    assert_eq!(sb.tx_packets, 256, "b took what its ring holds");
    assert_eq!(sb.drop_no_rx_buffer, 400 - 255);
    assert!(a.port.stats.snapshot().backpressure >= 1);
}

/// Sends `n` frames from a to b, one every `gap`, on a thread of its own, while b waits
/// for interrupts; returns b's interrupts and the frames it got.
fn paced_to_waiting_receiver(coal: vhost_backend::polling::Coalesce, n: u64, gap: Duration) -> (u64, u64) {
    let w = Worker::spawn("dp-coal", FdbConfig::default()).unwrap();
    let mut a = Ep::start("coala", 1, &w, PortPolicy::default(), 1, Config::default());
    let mut b = Ep::start_coalesced("coalb", 2, &w, PortPolicy::default(), 1, Config::default(), coal);
    b.send(0, &test_frame([0xff; 6], mac(2), 60, 0));
    a.recv_n(1);
    let sender = std::thread::spawn(move || {
        for i in 0..n {
            a.send(0, &test_frame(mac(2), mac(1), 60, i));
            std::thread::sleep(gap);
        }
        a
    });
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while got < n && Instant::now() < deadline {
        let qp = b.dev.queue_pair(0).unwrap();
        qp.wait_rx(Duration::from_millis(200)).unwrap();
        got += b.dev.rx_burst(0, &mut b.bufs).unwrap() as u64;
    }
    let _a = sender.join().unwrap();
    (b.port.stats.queue_snapshots()[0].interrupts, got)
}

#[test]
fn interrupt_coalescing_by_frames_and_time() {
    use vhost_backend::polling::Coalesce;
    let gap = Duration::from_micros(500);
    let (plain, got) = paced_to_waiting_receiver(Coalesce::default(), 64, gap);
    assert_eq!(got, 64);
    // Up to 16 frames or 20 ms per interrupt: 64 frames 0.5 ms apart need about four.
    let coal = Coalesce { rx_frames: 16, rx_usecs: 20_000, ..Default::default() };
    let (coalesced, got) = paced_to_waiting_receiver(coal, 64, gap);
    assert_eq!(got, 64, "every frame arrives");
    assert!(plain >= 32, "without coalescing about one interrupt per frame: {plain}");
    assert!((2..=12).contains(&coalesced), "coalesced into a few: {coalesced} (plain {plain})");
    // Time bound: three frames, far fewer than 16, still interrupt the receiver.
    let coal = Coalesce { rx_frames: 16, rx_usecs: 5_000, ..Default::default() };
    let (n, got) = paced_to_waiting_receiver(coal, 3, Duration::from_millis(1));
    assert_eq!(got, 3);
    assert!(n >= 1, "the time bound fired");
}
