//! The frontend against a real vhost-user backend: DPDK testpmd's vhost PMD in io
//! forwarding mode, which with one port sends every frame it receives back out of the
//! same port and queue. Each test starts its own testpmd (unique socket and
//! --file-prefix) and stops it at the end.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use virtio_user::{frame, Config, FrontendListener, Layout, Packet, VirtioUser};

/// testpmd busy-polls a core: run one at a time on small machines.
static SERIAL: Mutex<()> = Mutex::new(());

const SRC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const DST: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn find_testpmd() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join("dpdk-testpmd");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "dpdk-testpmd not found in PATH: these tests need DPDK's testpmd as the vhost-user backend. \
         Run scripts/test.sh, which installs it (Debian package dpdk-dev)."
    );
}

struct Testpmd {
    child: Option<Child>,
    dir: PathBuf,
    socket: PathBuf,
    prefix: String,
    log: PathBuf,
}

impl Testpmd {
    /// Starts testpmd with one vhost port of `queues` queue pairs in io forwarding mode.
    /// `client`: testpmd connects to our socket instead of listening.
    fn start(name: &str, queues: u16, client: bool, listener_path: Option<&Path>) -> Self {
        let bin = find_testpmd();
        let tag = format!("vw-{name}-{}", std::process::id());
        let dir = std::env::temp_dir().join(&tag);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = listener_path.map(Path::to_path_buf).unwrap_or_else(|| dir.join("vhost.sock"));
        let log = dir.join("testpmd.log");
        let vdev = format!(
            "net_vhost0,iface={},queues={queues},client={}",
            socket.display(),
            if client { 1 } else { 0 }
        );
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        // Two lcores (main and one busy-polling forwarder) that float over all CPUs:
        // pinning the poller would starve whatever else runs on that CPU.
        let ncpu = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let cpus = if ncpu > 1 { format!("(0-{})", ncpu - 1) } else { "0".to_string() };
        // Line-buffered output, so that the log shows when forwarding has started.
        let child = Command::new("stdbuf")
            .arg("-oL")
            .arg(bin)
            .arg(format!("--lcores=0@{cpus},1@{cpus}"))
            .args(["--no-huge", "-m", "256", "--no-shconf", "--no-pci", "--vdev", &vdev])
            .arg(format!("--file-prefix={tag}"))
            .args([
                "--",
                "--forward-mode=io",
                "--auto-start",
                "--disable-link-check",
                "--total-num-mbufs=8192",
            ])
            .arg(format!("--rxq={queues}"))
            .arg(format!("--txq={queues}"))
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn dpdk-testpmd");
        let mut t = Testpmd { child: Some(child), dir, socket, prefix: tag, log };
        // Talk to testpmd only once forwarding runs: starting forwarding drains the
        // port's receive queues, which would swallow frames we sent before. (In client
        // mode testpmd has connected by then and waits in our listen backlog.)
        t.wait_for(
            |t| (client || t.socket.exists()) && t.log().contains("Press enter to exit"),
            "forwarding",
        );
        t
    }

    fn wait_for(&mut self, cond: impl Fn(&Self) -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond(self) {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("testpmd exited ({st}) before {what}:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "testpmd did not create {what}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Stops testpmd the way an operator does (end of input), so it prints its
    /// statistics; returns its output.
    fn stop(mut self) -> String {
        if let Some(mut c) = self.child.take() {
            drop(c.stdin.take());
            let deadline = Instant::now() + Duration::from_secs(15);
            while c.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.log()
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(&self.prefix));
    }
}

/// Frame sizes cycled through: minimum, odd, typical and full-size Ethernet.
fn size_of(seq: u64, max: usize) -> usize {
    const SIZES: [usize; 6] = [60, 64, 333, 1000, 1514, 127];
    SIZES[(seq % SIZES.len() as u64) as usize].min(max)
}

/// Sends `n` numbered frames on every queue pair, keeping at most `window` in flight
/// per pair, and checks that each comes back once, intact, in order, on the pair that
/// sent it. Returns the total frames received.
fn reflect(dev: &mut VirtioUser, n: u64, max_size: usize, window: u64) -> u64 {
    let pairs = dev.num_queue_pairs() as usize;
    let mut bufs: Vec<Vec<u8>> = (0..32).map(|_| vec![0u8; 1514]).collect();
    let mut out: Vec<Packet> = (0..32).map(|_| Packet::with_capacity(2048)).collect();
    let mut sent = vec![0u64; pairs];
    let mut got = vec![0u64; pairs];
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.iter().any(|g| *g < n) {
        assert!(Instant::now() < deadline, "timed out: sent {sent:?}, received {got:?} of {n} per pair");
        for q in 0..pairs {
            // Transmit a burst while the window allows.
            let room = (window - (sent[q] - got[q])).min(n - sent[q]).min(32) as usize;
            if room > 0 {
                let mut frames: Vec<&[u8]> = Vec::with_capacity(room);
                for (i, b) in bufs.iter_mut().take(room).enumerate() {
                    let seq = sent[q] + i as u64;
                    let len = size_of(seq, max_size);
                    frame::build(&mut b[..len], DST, SRC, q as u16);
                    frame::stamp(&mut b[..len], seq, 0);
                }
                for (i, b) in bufs.iter().take(room).enumerate() {
                    frames.push(&b[..size_of(sent[q] + i as u64, max_size)]);
                }
                sent[q] += dev.tx_burst(q, &frames).unwrap() as u64;
            }
            let k = dev.rx_burst(q, &mut out).unwrap();
            for p in &out[..k] {
                assert!(!p.truncated(), "frame truncated: {} of {}", p.len(), p.frame_len());
                let info = frame::check(p.data()).unwrap_or_else(|e| {
                    let d = p.data();
                    panic!(
                        "pair {q}: bad frame after {} good: {e}; seq field {:?} len {} hdr {:?} stats {:?}",
                        got[q],
                        &d[22..30],
                        d.len(),
                        p.hdr(),
                        dev.queue_pair(q).unwrap().stats()
                    )
                });
                assert_eq!(info.queue as usize, q, "frame of pair {} came back on pair {q}", info.queue);
                assert_eq!(info.seq, got[q], "pair {q}: out of order or lost frame");
                assert_eq!(info.len, size_of(info.seq, max_size));
                assert_eq!(&p.data()[..6], &DST);
                got[q] += 1;
            }
        }
    }
    for q in 0..pairs {
        let s = dev.queue_pair(q).unwrap().stats();
        assert_eq!(s.tx_packets, n, "pair {q} stats {s:?}");
        assert_eq!(s.rx_packets, n, "pair {q} stats {s:?}");
        assert_eq!(s.rx_errors, 0, "pair {q} stats {s:?}");
        assert_eq!(s.rx_truncated, 0, "pair {q} stats {s:?}");
    }
    got.iter().sum()
}

fn run_reflect(name: &str, layout: Layout, mrg_rxbuf: bool, queues: u16) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tp = Testpmd::start(name, queues, false, None);
    let cfg = Config { layout, mrg_rxbuf, queue_pairs: queues, ..Config::default() };
    let mut dev = VirtioUser::connect(&tp.socket, &cfg).unwrap_or_else(|e| panic!("{e}\n{}", tp.log()));
    let neg = dev.negotiated().clone();
    eprintln!("negotiated: {neg:x?}");
    assert_eq!(neg.layout, layout);
    assert_eq!(neg.mrg_rxbuf(), mrg_rxbuf);
    assert_eq!(neg.queue_pairs, queues);
    const N: u64 = 2000;
    let total = reflect(&mut dev, N, 1514, 128);
    assert_eq!(total, N * queues as u64);
    let bases = dev.shutdown().unwrap();
    assert_eq!(bases.len(), 2 * queues as usize);
    // The transmit rings' positions: one descriptor per frame.
    for q in 0..queues as usize {
        let want = match layout {
            Layout::Split => N as u32,
            Layout::Packed => virtq::packed::base_from_seq(N as u16, cfg.queue_size) as u32,
        };
        assert_eq!(bases[2 * q + 1] & 0xffff, want, "GET_VRING_BASE of tx ring {}", 2 * q + 1);
    }
    drop(dev);
    let log = tp.stop();
    assert!(log.contains("Bye"), "testpmd did not exit cleanly:\n{log}");
}

#[test]
fn split_mrg_on_1q() {
    run_reflect("s-m1-q1", Layout::Split, true, 1);
}

#[test]
fn split_mrg_off_1q() {
    run_reflect("s-m0-q1", Layout::Split, false, 1);
}

#[test]
fn packed_mrg_on_1q() {
    run_reflect("p-m1-q1", Layout::Packed, true, 1);
}

#[test]
fn packed_mrg_off_1q() {
    run_reflect("p-m0-q1", Layout::Packed, false, 1);
}

#[test]
fn split_mrg_on_2q() {
    run_reflect("s-m1-q2", Layout::Split, true, 2);
}

#[test]
fn split_mrg_off_2q() {
    run_reflect("s-m0-q2", Layout::Split, false, 2);
}

#[test]
fn packed_mrg_on_2q() {
    run_reflect("p-m1-q2", Layout::Packed, true, 2);
}

#[test]
fn packed_mrg_off_2q() {
    run_reflect("p-m0-q2", Layout::Packed, false, 2);
}

/// Receive buffers of 256 bytes: frames up to 1514 bytes arrive merged from several
/// buffers (num_buffers > 1), in both layouts.
#[test]
fn mergeable_small_buffers_span_several() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for layout in [Layout::Split, Layout::Packed] {
        let tp = Testpmd::start(&format!("mrg-small-{}", layout.name()), 1, false, None);
        let cfg = Config { layout, rx_buf_len: 256, ..Config::default() };
        let mut dev = VirtioUser::connect(&tp.socket, &cfg).unwrap_or_else(|e| panic!("{e}\n{}", tp.log()));
        reflect(&mut dev, 600, 1514, 32);
        let s = dev.queue_pair(0).unwrap().stats();
        // Of the six sizes cycled, 333, 1000 and 1514 exceed the 244 bytes of frame the
        // first 256-byte buffer holds behind the header.
        assert_eq!(s.rx_merged, 300, "expected merged frames, stats {s:?}");
        dev.shutdown().unwrap();
        drop(dev);
        tp.stop();
    }
}

/// Indirect descriptors for transmit, and a blocking wait on the call eventfd.
#[test]
fn indirect_tx_and_interrupt_wait() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tp = Testpmd::start("indirect", 1, false, None);
    let cfg = Config { indirect: true, ..Config::default() };
    let mut dev = VirtioUser::connect(&tp.socket, &cfg).unwrap_or_else(|e| panic!("{e}\n{}", tp.log()));
    assert!(dev.negotiated().indirect(), "testpmd offers VIRTIO_F_INDIRECT_DESC");
    reflect(&mut dev, 500, 1514, 64);
    // One frame at a time, waiting on the call eventfd instead of polling.
    let qp = dev.queue_pair(0).unwrap();
    let mut f = vec![0u8; 100];
    let mut out = vec![Packet::with_capacity(2048)];
    for seq in 0..20u64 {
        frame::build(&mut f, DST, SRC, 0);
        frame::stamp(&mut f, seq, 0);
        assert_eq!(qp.tx_burst(&[&f[..]]).unwrap(), 1);
        assert!(qp.wait_rx(Duration::from_secs(5)).unwrap(), "no frame within 5 s");
        assert_eq!(qp.rx_burst(&mut out).unwrap(), 1);
        assert_eq!(frame::check(out[0].data()).unwrap().seq, seq);
    }
    // Nothing in flight: the wait times out.
    let t = Instant::now();
    assert!(!qp.wait_rx(Duration::from_millis(100)).unwrap());
    assert!(t.elapsed() >= Duration::from_millis(90));
    dev.shutdown().unwrap();
    drop(dev);
    tp.stop();
}

/// Server mode: we listen, testpmd's vhost PMD connects (client=1).
#[test]
fn server_mode_backend_connects() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("vw-listen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = RemoveOnDrop(dir.clone());
    let path = dir.join("frontend.sock");
    let listener = FrontendListener::bind(&path).unwrap();
    let tp = Testpmd::start("server", 1, true, Some(&path));
    let cfg = Config { timeout: Duration::from_secs(30), ..Config::default() };
    let mut dev = listener.accept(&cfg).unwrap_or_else(|e| panic!("{e}\n{}", tp.log()));
    reflect(&mut dev, 300, 1514, 64);
    dev.shutdown().unwrap();
    drop(dev);
    drop(listener);
    tp.stop();
}

/// Removes a directory when dropped, also when the test fails.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
