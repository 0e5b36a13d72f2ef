//! virtwire's device against its own virtio-user frontend, in one process: both ring
//! layouts, 1 and 4 queue pairs, mergeable receive buffers on and off (and frames that
//! span several merged buffers), and a frontend that disconnects and comes back. Every
//! frame must come back intact, on its own queue pair, in order, with its MACs swapped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netproto::ethernet::Mac;
use vhost_backend::{DiagMode, Port, PortSpec, SocketMode, Worker};
use virtio_user::{frame, Config, Layout, Packet, VirtioUser};

const SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

fn socket(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("vw-vu-{tag}-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn reflect_port(tag: &str, queue_pairs: u16, id: u32, worker: &Arc<Worker>) -> (Port, PathBuf) {
    let sock = socket(tag);
    let spec = PortSpec {
        name: tag.to_string(),
        queue_pairs,
        mac: Mac([0x52, 0x54, 0, 0, 0, 1]),
        mtu: 0,
        diag: Some(DiagMode::Reflect),
        policy: Default::default(),
        diag_frame_size: 64,
        coalesce: Default::default(),
        withheld_features: 0,
    };
    (Port::start(spec, &sock, SocketMode::Server, id, worker.clone()).unwrap(), sock)
}

/// Sends `n` frames of `size` bytes on every queue pair and checks they all come back.
fn exchange(dev: &mut VirtioUser, n: u64, size: usize) {
    let qps = dev.num_queue_pairs() as usize;
    let mut out: Vec<Packet> = (0..32).map(|_| Packet::with_capacity(size + 64)).collect();
    for qp in 0..qps {
        let mut buf = vec![0u8; size];
        frame::build(&mut buf, DST, SRC, qp as u16);
        let (mut sent, mut got) = (0u64, 0u64);
        let deadline = Instant::now() + Duration::from_secs(20);
        while got < n {
            assert!(Instant::now() < deadline, "qp {qp}: {got} of {n} frames came back");
            if sent < n && sent - got < 64 {
                frame::stamp(&mut buf, sent, 0);
                sent += dev.tx_burst(qp, &[&buf[..]]).unwrap() as u64;
            }
            let r = dev.rx_burst(qp, &mut out).unwrap();
            for p in &out[..r] {
                assert!(!p.truncated(), "qp {qp}: truncated frame");
                let f = p.data();
                let info = frame::check(f).unwrap_or_else(|e| panic!("qp {qp}: bad frame: {e:?}"));
                assert_eq!(info.queue as usize, qp, "frame came back on another queue pair");
                assert_eq!(info.seq, got, "qp {qp}: out of order");
                assert_eq!(&f[0..6], &SRC, "destination MAC not swapped");
                assert_eq!(&f[6..12], &DST, "source MAC not swapped");
                assert_eq!(f.len(), size);
                got += 1;
            }
        }
    }
}

fn run(tag: &str, layout: Layout, queue_pairs: u16, mrg_rxbuf: bool, rx_buf_len: u32, size: usize) {
    let worker = Worker::spawn("test-dp", Default::default()).unwrap();
    let (port, sock) = reflect_port(tag, queue_pairs, 1, &worker);
    let cfg = Config { layout, queue_pairs, mrg_rxbuf, rx_buf_len, tx_buf_len: 4096, ..Config::default() };
    let mut dev = VirtioUser::connect(&sock, &cfg).unwrap();
    assert_eq!(dev.negotiated().mrg_rxbuf(), mrg_rxbuf);
    exchange(&mut dev, 300, size);
    dev.shutdown().unwrap();
    let s = port.stats.snapshot();
    assert_eq!(s.ring_errors, 0);
    assert_eq!(s.rx_packets, 300 * queue_pairs as u64);
    assert_eq!(s.tx_packets, 300 * queue_pairs as u64);
}

#[test]
fn split_one_pair_mergeable() {
    run("s1m", Layout::Split, 1, true, 2048, 64);
}

#[test]
fn split_four_pairs_no_mergeable() {
    run("s4", Layout::Split, 4, false, 2048, 1514);
}

#[test]
fn packed_one_pair_no_mergeable() {
    run("p1", Layout::Packed, 1, false, 2048, 64);
}

#[test]
fn packed_four_pairs_mergeable() {
    run("p4m", Layout::Packed, 4, true, 2048, 1514);
}

#[test]
fn frames_spanning_merged_buffers_both_layouts() {
    // 256-byte receive buffers: a 1500-byte frame takes six of them (num_buffers = 6).
    run("s-span", Layout::Split, 1, true, 256, 1500);
    run("p-span", Layout::Packed, 2, true, 256, 1500);
}

#[test]
fn frontend_reconnects_to_the_same_port() {
    let worker = Worker::spawn("test-dp", Default::default()).unwrap();
    let (port, sock) = reflect_port("recon", 1, 7, &worker);
    for round in 0..3 {
        let layout = if round % 2 == 0 { Layout::Split } else { Layout::Packed };
        let mut dev = VirtioUser::connect(&sock, &Config { layout, ..Config::default() }).unwrap();
        exchange(&mut dev, 100, 128);
        if round < 2 {
            dev.shutdown().unwrap();
        } else {
            // The last one just goes away, as a crashed frontend would.
            drop(dev);
        }
    }
    let t = Instant::now();
    while port.connected.load(std::sync::atomic::Ordering::Relaxed) {
        assert!(t.elapsed() < Duration::from_secs(5), "port still thinks a frontend is connected");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(port.stats.snapshot().tx_packets, 300);
}

#[test]
fn two_ports_on_one_worker_are_independent() {
    let worker = Worker::spawn("test-dp", Default::default()).unwrap();
    let (_a, sa) = reflect_port("ind-a", 1, 1, &worker);
    let (_b, sb) = reflect_port("ind-b", 2, 2, &worker);
    let mut da = VirtioUser::connect(&sa, &Config::default()).unwrap();
    let mut db =
        VirtioUser::connect(&sb, &Config { queue_pairs: 2, layout: Layout::Packed, ..Config::default() })
            .unwrap();
    exchange(&mut da, 200, 64);
    // Port a's frontend vanishes; port b keeps forwarding.
    drop(da);
    exchange(&mut db, 200, 64);
    db.shutdown().unwrap();
}

/// Live migration's dirty log: while VHOST_F_LOG_ALL is set, every page virtwire writes
/// (received frames, used-ring updates) is marked in the log shared by SET_LOG_BASE;
/// after logging stops nothing more is marked.
#[test]
fn dirty_log_marks_what_the_device_writes() {
    use std::io::{Read, Seek, SeekFrom, Write};
    for (i, layout) in [Layout::Split, Layout::Packed].into_iter().enumerate() {
        let worker = Worker::spawn("test-dp", Default::default()).unwrap();
        let (port, sock) = reflect_port(&format!("log{i}"), 1, 1, &worker);
        let mut dev = VirtioUser::connect(&sock, &Config { layout, ..Config::default() }).unwrap();
        exchange(&mut dev, 50, 64);
        let pages = dev.memory_size().div_ceil(4096);
        let log_len = pages.div_ceil(8);
        let fd = virtq::mem::memfd_create("dirty-log", log_len).unwrap();
        let mut log = std::fs::File::from(fd);
        dev.start_dirty_log(std::os::fd::AsFd::as_fd(&log), log_len).unwrap();
        let read_bits = |log: &mut std::fs::File| -> u32 {
            let mut b = Vec::new();
            log.seek(SeekFrom::Start(0)).unwrap();
            log.read_to_end(&mut b).unwrap();
            b.iter().map(|x| x.count_ones()).sum()
        };
        let clear = |log: &mut std::fs::File| {
            log.seek(SeekFrom::Start(0)).unwrap();
            log.write_all(&vec![0u8; log_len as usize]).unwrap();
        };
        // Restarting the rings on a logging memory map already writes ring flags, which
        // are logged; start counting from a clean log, as a VMM's first sync pass does.
        std::thread::sleep(Duration::from_millis(50));
        clear(&mut log);
        exchange(&mut dev, 200, 1000);
        let marked = read_bits(&mut log);
        // 200 frames of 1000 bytes land in receive buffers spread over many pages, plus
        // the pages of both used rings.
        assert!(marked >= 3, "{layout:?}: only {marked} pages marked");
        assert!(marked as u64 <= pages, "{layout:?}: more pages marked than exist");
        // Stop logging, clear the log (as the VMM does), and check nothing is marked.
        dev.stop_dirty_log().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        clear(&mut log);
        exchange(&mut dev, 50, 1000);
        assert_eq!(read_bits(&mut log), 0, "{layout:?}: pages marked after logging stopped");
        dev.shutdown().unwrap();
        assert_eq!(port.stats.snapshot().ring_errors, 0);
    }
}

/// Client mode: the frontend listens (as QEMU with `server=on` does) and virtwire
/// connects; when the frontend goes away and comes back on the same path, virtwire
/// connects again by itself.
#[test]
fn client_mode_reconnects_when_the_frontend_restarts() {
    let worker = Worker::spawn("test-dp", Default::default()).unwrap();
    let sock = socket("client");
    let listener = virtio_user::FrontendListener::bind(&sock).unwrap();
    let spec = PortSpec {
        name: "client".into(),
        queue_pairs: 1,
        mac: Mac([0x52, 0x54, 0, 0, 0, 9]),
        mtu: 0,
        diag: Some(DiagMode::Reflect),
        policy: Default::default(),
        diag_frame_size: 64,
        coalesce: Default::default(),
        withheld_features: 0,
    };
    let port = Port::start(spec, &sock, SocketMode::Client, 3, worker.clone()).unwrap();
    let mut dev = listener.accept(&Config::default()).unwrap();
    exchange(&mut dev, 100, 64);
    // The frontend process "restarts": its socket and connection go away, then a new
    // one listens on the same path.
    drop(dev);
    drop(listener);
    let listener = virtio_user::FrontendListener::bind(&sock).unwrap();
    let mut dev = listener.accept(&Config { layout: Layout::Packed, ..Config::default() }).unwrap();
    exchange(&mut dev, 100, 64);
    dev.shutdown().unwrap();
    assert_eq!(port.stats.snapshot().tx_packets, 200);
}

/// CPU seconds used so far by this process's thread named `name`.
fn thread_cpu_seconds(name: &str) -> f64 {
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap();
            let f: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
            let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
            return ticks as f64 / 100.0;
        }
    }
    panic!("no thread {name}");
}

/// A guest that transmits but stops taking received frames fills its receive ring: the
/// reflected frames then have nowhere to go and stay in its transmit ring. The worker
/// must not spin on them: it sleeps until the guest posts receive buffers (and kicks),
/// then delivers everything.
#[test]
fn a_guest_that_stops_receiving_does_not_make_the_worker_spin() {
    let worker = Worker::spawn("dp-stuck", Default::default()).unwrap();
    let (port, sock) = reflect_port("stuck", 1, 1, &worker);
    let mut dev = VirtioUser::connect(&sock, &Config { queue_size: 64, ..Config::default() }).unwrap();
    let mut buf = vec![0u8; 64];
    frame::build(&mut buf, DST, SRC, 0);
    // 64 receive buffers; send more than that without receiving.
    let mut sent = 0u64;
    while sent < 100 {
        frame::stamp(&mut buf, sent, 0);
        sent += dev.tx_burst(0, &[&buf[..]]).unwrap() as u64;
    }
    std::thread::sleep(Duration::from_millis(200));
    let before = thread_cpu_seconds("dp-stuck");
    std::thread::sleep(Duration::from_secs(1));
    let used = thread_cpu_seconds("dp-stuck") - before;
    assert!(used < 0.2, "worker used {used:.2} s of CPU in 1 s while blocked on a full receive ring");
    // The guest receives again: everything it sent comes back, in order.
    let mut out: Vec<Packet> = (0..32).map(|_| Packet::with_capacity(128)).collect();
    let mut got = 0u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while got < sent {
        assert!(Instant::now() < deadline, "only {got} of {sent} frames came back");
        let r = dev.rx_burst(0, &mut out).unwrap();
        for p in &out[..r] {
            assert_eq!(frame::check(p.data()).unwrap().seq, got);
            got += 1;
        }
    }
    dev.shutdown().unwrap();
    assert_eq!(port.stats.snapshot().tx_packets, sent);
}

/// With a frontend attached and nothing flowing, the worker sleeps on the kick
/// eventfds instead of polling.
#[test]
fn an_idle_port_costs_no_cpu() {
    let worker = Worker::spawn("dp-idle", Default::default()).unwrap();
    let (_port, sock) = reflect_port("idle", 2, 1, &worker);
    let mut dev = VirtioUser::connect(&sock, &Config { queue_pairs: 2, ..Config::default() }).unwrap();
    exchange(&mut dev, 10, 64);
    std::thread::sleep(Duration::from_millis(100));
    let before = thread_cpu_seconds("dp-idle");
    std::thread::sleep(Duration::from_secs(1));
    let used = thread_cpu_seconds("dp-idle") - before;
    assert!(used < 0.05, "idle worker used {used:.2} s of CPU in 1 s");
    // And it wakes up when traffic comes back.
    exchange(&mut dev, 10, 64);
    dev.shutdown().unwrap();
}

/// A guest whose receive buffers are so small that a frame needs more of them than a
/// burst holds: that frame is dropped and counted (the ring keeps moving), frames that
/// fit still come back, and the worker does not spin.
#[test]
fn frames_needing_more_buffers_than_a_burst_are_dropped_not_stuck() {
    let worker = Worker::spawn("dp-tiny", Default::default()).unwrap();
    let (port, sock) = reflect_port("tiny", 1, 1, &worker);
    let cfg = Config { rx_buf_len: 76, tx_buf_len: 4096, queue_size: 256, ..Config::default() };
    let mut dev = VirtioUser::connect(&sock, &cfg).unwrap();
    // 3000 bytes + header in 76-byte buffers: 40 buffers, more than a 32-chain burst.
    let mut big = vec![0u8; 3000];
    frame::build(&mut big, DST, SRC, 0);
    for seq in 0..5 {
        frame::stamp(&mut big, seq, 0);
        while dev.tx_burst(0, &[&big[..]]).unwrap() == 0 {}
    }
    let t = Instant::now();
    while port.stats.snapshot().drop_rx_buffer_small < 5 {
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", port.stats.snapshot());
        std::thread::sleep(Duration::from_millis(10));
    }
    let before = thread_cpu_seconds("dp-tiny");
    std::thread::sleep(Duration::from_secs(1));
    let used = thread_cpu_seconds("dp-tiny") - before;
    assert!(used < 0.2, "worker used {used:.2} s of CPU in 1 s");
    // A frame that fits in 32 buffers still makes the round trip.
    exchange(&mut dev, 20, 200);
    dev.shutdown().unwrap();
    assert_eq!(port.stats.snapshot().ring_errors, 0);
}
