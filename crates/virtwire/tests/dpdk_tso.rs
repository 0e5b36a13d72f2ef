//! Interop with DPDK: TCP segmentation offload (TSO) of testpmd's virtio-user PMD through
//! the switch.
//!
//! testpmd runs two virtio-user ports in its `csum` forwarding engine, the engine that
//! requests TSO per packet, and bridges two VLANs of the switch with them:
//!
//! ```text
//!  netns A (tap, VLAN 10) -- pmd0 (VLAN 10) == testpmd csum == pmd1 (VLAN 20) -- netns B (tap, VLAN 20)
//! ```
//!
//! A kernel TCP stream from A to B (IPv4, then IPv6) crosses testpmd:
//! - A's kernel hands its tap 64 KiB TSO frames; testpmd's port 0 enabled LRO
//!   (`--rx-offloads` TCP_LRO), so its PMD negotiated GUEST_TSO4/6 and the switch passes
//!   these frames to it whole;
//! - `tso set 1000 1` makes the engine mark every TCP packet on port 1 longer than its
//!   headers plus 1000 bytes with RTE_MBUF_F_TX_TCP_SEG (segment size 1000); the virtio
//!   PMD advertises RTE_ETH_TX_OFFLOAD_TCP_TSO when the device offers HOST_TSO4 and
//!   HOST_TSO6, negotiates them once the offload is configured, and turns the flag into a
//!   virtio-net header with GSO_TCPV4/6, gso_size 1000 and a partial TCP checksum
//!   (virtio 1.x 5.1.6.2);
//! - the switch validates that header and, since a tap takes TSO frames, writes them to
//!   B's tap unsegmented.
//!
//! Checked: the negotiated feature bits; the switch's counters (TSO frames passed whole to
//! testpmd and to B, none segmented, no header refused); frames longer than the MTU on
//! B's interface, captured with their virtio-net header (AF_PACKET with PACKET_VNET_HDR),
//! carrying testpmd's segment size 1000 (A's kernel uses its MSS, 1448 or 1428), a valid
//! IPv4 header checksum and lengths, and a partial TCP checksum that completes to a valid
//! one; every byte of both streams as sent; no checksum or header errors in B's kernel.

mod support;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use support::guest::scratch_dir;
use support::switch::{tap_port, wait_for_interface, NetNs, PortStats, Switch};
use support::testpmd::{Testpmd, TestpmdSpec};

/// testpmd's TSO segment size on port 1; A's kernel segments by its MSS (1448 for IPv4
/// with timestamps, 1428 for IPv6), so a frame with this gso_size was marked by testpmd.
const TSO_SEGSZ: u16 = 1000;
/// Bytes sent per stream.
const STREAM_BYTES: usize = 32 << 20;
/// The longest frame that is not a segmentation request at MTU 1500.
const MAX_PLAIN_FRAME: usize = 1514;

const PMD0_MAC: &str = "02:76:77:00:00:10";
const PMD1_MAC: &str = "02:76:77:00:00:11";
const A_MAC: &str = "02:76:77:00:00:0a";
const B_MAC: &str = "02:76:77:00:00:0b";
const A_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const B_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const A_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
const B_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);
const PORT: u16 = 5077;

// Feature bits (virtio 1.x 5.1.3).
const CSUM: u64 = 1 << 0;
const GUEST_CSUM: u64 = 1 << 1;
const GUEST_TSO4: u64 = 1 << 7;
const GUEST_TSO6: u64 = 1 << 8;
const HOST_TSO4: u64 = 1 << 11;
const HOST_TSO6: u64 = 1 << 12;

// virtio-net header fields (virtio 1.x 5.1.6).
const HDR_F_NEEDS_CSUM: u8 = 1;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_ECN: u8 = 0x80;

#[test]
fn testpmd_tso_frames_cross_the_switch_whole() {
    let t0 = Instant::now();
    let pid = std::process::id();
    let dir = scratch_dir("dpdk-tso");
    let (s0, s1) = (dir.join("pmd0.sock"), dir.join("pmd1.sock"));
    let (if_a, if_b) = (format!("vwtsa{pid}"), format!("vwtsb{pid}"));
    let vhost = |name: &str, sock: &std::path::Path, mac: &str, vlan: u16| {
        format!(
            "[[port]]\nname = '{name}'\ntype = 'vhost-user'\nsocket = '{}'\nqueue_pairs = 1\nmac = '{mac}'\nvlan = {vlan}\n",
            sock.display()
        )
    };
    let config = vhost("pmd0", &s0, PMD0_MAC, 10)
        + &vhost("pmd1", &s1, PMD1_MAC, 20)
        + &tap_port("a", &if_a, "vlan = 10")
        + &tap_port("b", &if_b, "vlan = 20");
    let sw = Switch::start(&dir, &config, &[s0.clone(), s1.clone()]);

    // Two namespaces, each behind one tap. Every address beyond testpmd resolves to the
    // testpmd port facing it (as to a router's), so frames reach testpmd as unicast.
    let ns_a = NetNs::create(&format!("vwtsoa{pid}")).expect("create netns A");
    let ns_b = NetNs::create(&format!("vwtsob{pid}")).expect("create netns B");
    for (ns, ifname, mac, v4, v6, peer_v4, peer_v6, next_hop) in [
        (&ns_a, &if_a, A_MAC, A_V4, A_V6, B_V4, B_V6, PMD0_MAC),
        (&ns_b, &if_b, B_MAC, B_V4, B_V6, A_V4, A_V6, PMD1_MAC),
    ] {
        wait_for_interface(ifname, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{e:#}:\n{}", sw.log_text()));
        support::switch::run(std::process::Command::new("ip").args(["link", "set", ifname, "address", mac]))
            .expect("set the tap's address");
        ns.adopt(ifname, &format!("{v4}/24")).expect("move the tap into its namespace");
        ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", ifname, "nodad"]).expect("IPv6 address");
        for peer in [peer_v4.to_string(), peer_v6.to_string()] {
            ns.ip(&["neigh", "replace", &peer, "lladdr", next_hop, "dev", ifname, "nud", "permanent"])
                .expect("static neighbour");
        }
    }

    // testpmd: port 0 takes LRO frames (TCP_LRO | TCP_CKSUM | UDP_CKSUM: 0x1c, without
    // IPV4_CKSUM, which the virtio PMD lacks); both ports hand TCP checksums to the
    // device; port 1 segments by TSO. `tso set` and `csum set` reconfigure a stopped port,
    // hence the stop and start around them (testpmd runs the file once its ports started).
    let cmds = dir.join("testpmd.cmds");
    std::fs::write(
        &cmds,
        format!(
            "port stop all\ncsum set tcp hw 0\ncsum set tcp hw 1\ntso set {TSO_SEGSZ} 1\nport start all\n\
             show port 0 rx_offload configuration\nshow port 1 tx_offload configuration\n"
        ),
    )
    .unwrap();
    let spec = TestpmdSpec {
        virtio_user: true,
        forward_mode: "csum".into(),
        extra_vdev_opts: format!("queue_size=1024,mac={PMD0_MAC}"),
        extra_vdevs: vec![format!(
            "net_virtio_user1,path={},queues=1,queue_size=1024,mac={PMD1_MAC}",
            s1.display()
        )],
        extra_args: vec![
            "--rx-offloads=0x1c".into(),
            "--rxd=1024".into(),
            "--txd=1024".into(),
            // The engine writes the peer's address as destination of what it forwards.
            format!("--eth-peer=0,{A_MAC}"),
            format!("--eth-peer=1,{B_MAC}"),
            format!("--cmdline-file={}", cmds.display()),
        ],
        ..TestpmdSpec::new("tso", s0.clone())
    };
    let pmd = Testpmd::start(spec, Duration::from_secs(60)).expect("testpmd starts");
    let boot_log = pmd.output_so_far();
    assert!(
        boot_log.contains(&format!("TSO segment size for non-tunneled packets is {TSO_SEGSZ}")),
        "tso set not taken:\n{boot_log}"
    );
    let tx_conf = section(&boot_log, "Tx Offloading Configuration of port 1");
    assert!(tx_conf.contains("TCP_TSO"), "port 1 without TCP_TSO:\n{boot_log}");
    let rx_conf = section(&boot_log, "Rx Offloading Configuration of port 0");
    assert!(rx_conf.contains("TCP_LRO"), "port 0 without TCP_LRO:\n{boot_log}");
    let log = sw.log_text();
    let f0 = negotiated(&log, "pmd0");
    let f1 = negotiated(&log, "pmd1");
    eprintln!("negotiated: pmd0 {f0:#x}, pmd1 {f1:#x}");
    let want0 = GUEST_CSUM | GUEST_TSO4 | GUEST_TSO6;
    assert_eq!(f0 & want0, want0, "testpmd's port 0 did not negotiate LRO: {f0:#x}");
    let want1 = CSUM | HOST_TSO4 | HOST_TSO6;
    assert_eq!(f1 & want1, want1, "testpmd's port 1 did not negotiate TSO: {f1:#x}");

    // B's interface, seen from inside B with each frame's virtio-net header.
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    let capture = {
        let (ns, ifname, stop) = (ns_b.name.clone(), if_b.clone(), stop.clone());
        std::thread::spawn(move || capture_in(&ns, &ifname, &stop, ready_tx))
    };
    ready_rx.recv_timeout(Duration::from_secs(10)).expect("capture socket ready");

    let mut streams = Vec::new();
    for (family, dst, seed) in
        [("IPv4", IpAddr::V4(B_V4), 0x7e57_0004u64), ("IPv6", IpAddr::V6(B_V6), 0x7e57_0006)]
    {
        let t = Instant::now();
        let got = transfer(&ns_a.name, &ns_b.name, SocketAddr::new(dst, PORT), seed)
            .unwrap_or_else(|e| panic!("{family} stream through testpmd: {e}\nswitch: {}", sw.stats().0));
        let secs = t.elapsed().as_secs_f64();
        eprintln!("{family}: {got} B intact in {secs:.2} s ({:.0} Mbit/s)", got as f64 * 8.0 / secs / 1e6);
        assert_eq!(got, STREAM_BYTES, "{family} stream cut short");
        streams.push(family);
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let cap = capture.join().expect("capture thread").expect("capture on B's interface");
    eprintln!("captured on B: {cap:?}");

    let st = sw.stats();
    let (p0, p1, pa, pb) = (st.port("pmd0"), st.port("pmd1"), st.port("a"), st.port("b"));
    eprintln!("pmd0: {p0}\npmd1: {p1}\na: {pa}\nb: {pb}");
    let pmd = pmd.stop(Duration::from_secs(20)).expect("testpmd stops with statistics");
    eprintln!("testpmd: rx {} tx {} tx-dropped {}", pmd.rx_packets, pmd.tx_packets, pmd.tx_dropped);

    // A's TSO frames reached testpmd whole (its LRO), testpmd's reached B whole.
    assert!(offload(&p0, "gso_passed") > 0, "no TSO frame passed whole to testpmd's LRO port: {p0}");
    assert_eq!(offload(&p0, "gso_segmented"), 0, "frames segmented for testpmd's LRO port: {p0}");
    assert!(offload(&pb, "gso_passed") > 0, "no TSO frame from testpmd passed whole to B: {pb}");
    assert_eq!(offload(&pb, "gso_segmented"), 0, "testpmd's TSO frames segmented for B's tap: {pb}");
    assert!(
        offload(&pb, "gso_passed") * 2 > pb.tx_packets(),
        "most frames toward B should be testpmd's TSO frames: {pb}"
    );
    for p in [&p0, &p1, &pa, &pb] {
        assert_eq!(p.num("/ring_errors"), 0, "ring errors: {p}");
        assert_eq!(p.num("/drops/bad_header"), 0, "virtio-net headers refused: {p}");
        assert_eq!(p.num("/drops/bad_frame"), 0, "malformed frames: {p}");
        assert_eq!(p.num("/drops/tap_write"), 0, "frames a tap refused: {p}");
    }

    // What B's interface saw: frames beyond the MTU, each one of testpmd's segmentation
    // requests with a header that tells the truth.
    assert!(
        cap.errors.is_empty(),
        "frames on B's interface with a wrong header or checksum: {:#?}",
        cap.errors
    );
    assert!(
        cap.large_v4 >= 10 && cap.large_v6 >= 10,
        "too few frames beyond the MTU on B's interface: {cap:?}"
    );
    assert_eq!(cap.gso_sizes, BTreeSet::from([TSO_SEGSZ]), "segment sizes of the frames on B: {cap:?}");
    assert!(cap.max_len > 8 * MAX_PLAIN_FRAME, "B saw no large TSO frame: {cap:?}");

    // B's kernel took them all: no IPv4 header or TCP checksum errors.
    let snmp = ns_b.exec("cat", &["/proc/net/snmp"]).expect("read B's /proc/net/snmp");
    let snmp = String::from_utf8_lossy(&snmp.stdout).into_owned();
    for (proto, field) in [("Ip", "InHdrErrors"), ("Tcp", "InCsumErrors"), ("Tcp", "InErrs")] {
        assert_eq!(snmp_value(&snmp, proto, field), Some(0), "B's {proto} {field}:\n{snmp}");
    }

    drop((ns_a, ns_b));
    let log = sw.stop();
    eprintln!(
        "testpmd_tso_frames_cross_the_switch_whole: {} streams passed in {:.1} s; virtwire log:\n{log}",
        streams.len(),
        t0.elapsed().as_secs_f64()
    );
}

/// The text of `title`'s block in testpmd's output (up to the next blank line).
fn section<'a>(log: &'a str, title: &str) -> &'a str {
    let Some(at) = log.find(title) else { return "" };
    let rest = &log[at..];
    &rest[..rest.find("\n\n").unwrap_or(rest.len())]
}

/// The last feature set the switch logged as negotiated on `port`.
fn negotiated(log: &str, port: &str) -> u64 {
    let needle = format!("port {port}: features negotiated 0x");
    log.lines()
        .rev()
        .find_map(|l| l.split(&needle).nth(1))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no negotiation of {port} logged:\n{log}"))
}

fn offload(p: &PortStats, name: &str) -> u64 {
    p.num(&format!("/offloads/{name}"))
}

/// `field` of `proto` in /proc/net/snmp (a header line and a value line per protocol).
fn snmp_value(snmp: &str, proto: &str, field: &str) -> Option<i64> {
    let prefix = format!("{proto}:");
    let mut lines = snmp.lines().filter(|l| l.starts_with(&prefix));
    let names = lines.next()?.split_whitespace();
    let values = lines.next()?.split_whitespace();
    names.zip(values).find(|(n, _)| *n == field).and_then(|(_, v)| v.parse().ok())
}

/// Moves the calling thread into network namespace `name` (setns(2) changes only the
/// calling thread's namespace).
fn enter_netns(name: &str) -> std::io::Result<()> {
    let f = File::open(format!("/run/netns/{name}"))?;
    // SAFETY: a valid namespace file descriptor; affects this thread only.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A reproducible byte stream (xorshift64), produced in 64 KiB blocks.
struct Pattern {
    state: u64,
    block: Vec<u8>,
    at: usize,
}

impl Pattern {
    const BLOCK: usize = 64 << 10;

    fn new(seed: u64) -> Pattern {
        Pattern { state: seed | 1, block: vec![0; Self::BLOCK], at: Self::BLOCK }
    }

    /// The next `n` (at most one block) bytes of the stream.
    fn next(&mut self, n: usize) -> &[u8] {
        if self.at == Self::BLOCK {
            for c in self.block.chunks_mut(8) {
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                c.copy_from_slice(&self.state.to_le_bytes());
            }
            self.at = 0;
        }
        let n = n.min(Self::BLOCK - self.at);
        let s = &self.block[self.at..self.at + n];
        self.at += n;
        s
    }
}

/// Sends [`STREAM_BYTES`] of pattern `seed` over TCP from namespace `from` to `to` at
/// `dst`, and returns how many bytes arrived equal to what was sent (an error at the
/// first that differs).
fn transfer(from: &str, to: &str, dst: SocketAddr, seed: u64) -> Result<usize, String> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let to = to.to_string();
    let receiver = std::thread::spawn(move || -> Result<usize, String> {
        enter_netns(&to).map_err(|e| format!("enter {to}: {e}"))?;
        let listener = TcpListener::bind(dst).map_err(|e| format!("listen on {dst}: {e}"))?;
        let _ = ready_tx.send(());
        let (mut conn, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        conn.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
        let mut expect = Pattern::new(seed);
        let mut buf = vec![0u8; Pattern::BLOCK];
        let mut total = 0;
        loop {
            let n = conn.read(&mut buf).map_err(|e| format!("receive after {total} B: {e}"))?;
            if n == 0 {
                return Ok(total);
            }
            let mut off = 0;
            while off < n {
                let want = expect.next(n - off);
                let got = &buf[off..off + want.len()];
                if got != want {
                    let i = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
                    return Err(format!("byte {} of the stream differs from what was sent", total + off + i));
                }
                off += want.len();
            }
            total += n;
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).map_err(|_| "receiver not listening".to_string())?;
    let from = from.to_string();
    let sender = std::thread::spawn(move || -> Result<(), String> {
        enter_netns(&from).map_err(|e| format!("enter {from}: {e}"))?;
        let mut conn = TcpStream::connect_timeout(&dst, Duration::from_secs(10))
            .map_err(|e| format!("connect to {dst}: {e}"))?;
        conn.set_write_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
        let mut pattern = Pattern::new(seed);
        let mut sent = 0;
        while sent < STREAM_BYTES {
            let chunk = pattern.next(STREAM_BYTES - sent);
            conn.write_all(chunk).map_err(|e| format!("send after {sent} B: {e}"))?;
            sent += chunk.len();
        }
        conn.shutdown(Shutdown::Write).map_err(|e| e.to_string())
    });
    let sent = sender.join().map_err(|_| "sender panicked".to_string())?;
    if let Err(e) = sent {
        // A receiver that found a differing byte and closed explains the failed send
        // better; one that never got a connection still waits in accept (left behind).
        std::thread::sleep(Duration::from_millis(500));
        if receiver.is_finished() {
            if let Ok(Err(r)) = receiver.join() {
                return Err(format!("{r} (sender: {e})"));
            }
        }
        return Err(e);
    }
    receiver.join().map_err(|_| "receiver panicked".to_string())?
}

/// What the capture on B's interface found in the frames from A's addresses.
#[derive(Debug, Default)]
struct Capture {
    /// Frames from A seen.
    frames: u64,
    /// Of these, longer than [`MAX_PLAIN_FRAME`], per family.
    large_v4: u64,
    large_v6: u64,
    max_len: usize,
    /// gso_size of every segmentation request seen.
    gso_sizes: BTreeSet<u16>,
    /// The first few frames that broke a rule.
    errors: Vec<String>,
}

/// Captures frames arriving on `ifname` inside namespace `ns` until `stop`, each with the
/// virtio-net header the kernel derives from the packet's offload state (packet(7),
/// PACKET_VNET_HDR), and checks those from A.
fn capture_in(
    ns: &str,
    ifname: &str,
    stop: &AtomicBool,
    ready: mpsc::Sender<()>,
) -> std::io::Result<Capture> {
    enter_netns(ns)?;
    let sock = packet_socket(ifname)?;
    let _ = ready.send(());
    let mut cap = Capture::default();
    let mut buf = vec![0u8; 10 + 65536 + 64];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: sockaddr_ll is plain old data; all zeroes is a valid value.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: buf and from are valid for the lengths given.
        let n = unsafe {
            libc::recvfrom(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut from_len,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted) {
                continue;
            }
            return Err(e);
        }
        if from.sll_pkttype == libc::PACKET_OUTGOING || (n as usize) < 10 {
            continue;
        }
        check_frame(&buf[..10], &buf[10..n as usize], &mut cap);
    }
    Ok(cap)
}

/// A packet socket for every protocol on `ifname`, with virtio-net headers, a 200 ms
/// receive timeout and a large buffer.
fn packet_socket(ifname: &str) -> std::io::Result<OwnedFd> {
    let all = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket calls with valid arguments; the descriptor is owned at once.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(all));
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let sock = OwnedFd::from_raw_fd(fd);
        let set = |level: i32, opt: i32, val: *const libc::c_void, len: usize| -> std::io::Result<()> {
            if libc::setsockopt(fd, level, opt, val, len as libc::socklen_t) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        };
        let one: libc::c_int = 1;
        set(libc::SOL_PACKET, libc::PACKET_VNET_HDR, (&one as *const libc::c_int).cast(), 4)?;
        let rcvbuf: libc::c_int = 32 << 20;
        set(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, (&rcvbuf as *const libc::c_int).cast(), 4)?;
        let tv = libc::timeval { tv_sec: 0, tv_usec: 200_000 };
        let tv_len = std::mem::size_of::<libc::timeval>();
        set(libc::SOL_SOCKET, libc::SO_RCVTIMEO, (&tv as *const libc::timeval).cast(), tv_len)?;
        let name = std::ffi::CString::new(ifname).expect("interface name");
        let index = libc::if_nametoindex(name.as_ptr());
        if index == 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = all;
        addr.sll_ifindex = index as i32;
        let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        if libc::bind(fd, (&addr as *const libc::sockaddr_ll).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(sock)
    }
}

/// Checks one received frame `f` (Ethernet onwards) with its virtio-net header `h` (10
/// bytes, little-endian on this host). Frames from A longer than the MTU must be
/// testpmd's segmentation requests: GSO_TCPV4/6 matching the IP version, gso_size
/// [`TSO_SEGSZ`], a partial checksum at the TCP checksum field whose completion gives a
/// valid TCP checksum, IP lengths that match the frame, and (IPv4) a valid header
/// checksum.
fn check_frame(h: &[u8], f: &[u8], cap: &mut Capture) {
    let u16le = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
    let (flags, gso_type, gso_size, csum_start, csum_offset) = (h[0], h[1], u16le(4), u16le(6), u16le(8));
    let be16 = |i: usize| u16::from_be_bytes([f[i], f[i + 1]]);
    if f.len() < 14 + 40 {
        return;
    }
    let (v4, l4, pseudo) = match be16(12) {
        0x0800 => {
            let ihl = usize::from(f[14] & 0x0f) * 4;
            if f[23] != 6 || f[26..30] != A_V4.octets() || f.len() < 14 + ihl + 20 {
                return;
            }
            let src: [u8; 4] = f[26..30].try_into().unwrap();
            let dst: [u8; 4] = f[30..34].try_into().unwrap();
            let l4_len = f.len() - 14 - ihl;
            (true, 14 + ihl, netproto::csum::pseudo_header_v4(src, dst, 6, l4_len as u16))
        }
        0x86dd => {
            if f[20] != 6 || f[22..38] != A_V6.octets() || f.len() < 54 + 20 {
                return;
            }
            let src: [u8; 16] = f[22..38].try_into().unwrap();
            let dst: [u8; 16] = f[38..54].try_into().unwrap();
            (false, 54, netproto::csum::pseudo_header_v6(&src, &dst, 6, (f.len() - 54) as u32))
        }
        _ => return,
    };
    cap.frames += 1;
    if gso_type != 0 {
        cap.gso_sizes.insert(gso_size);
    }
    if f.len() <= MAX_PLAIN_FRAME {
        return;
    }
    if v4 {
        cap.large_v4 += 1;
    } else {
        cap.large_v6 += 1;
    }
    cap.max_len = cap.max_len.max(f.len());
    let mut wrong = Vec::new();
    let want_type = if v4 { GSO_TCPV4 } else { GSO_TCPV6 };
    if gso_type & !GSO_ECN != want_type || gso_size != TSO_SEGSZ {
        wrong.push(format!("gso_type {gso_type} gso_size {gso_size}, want {want_type} and {TSO_SEGSZ}"));
    }
    if flags & HDR_F_NEEDS_CSUM == 0 || usize::from(csum_start) != l4 || csum_offset != 16 {
        wrong.push(format!("flags {flags} csum_start {csum_start} csum_offset {csum_offset}"));
    }
    if v4 {
        let ihl = l4 - 14;
        if usize::from(be16(16)) != f.len() - 14 {
            wrong.push(format!("IPv4 total length {} for {} B", be16(16), f.len() - 14));
        }
        if !netproto::csum::verify(&f[14..14 + ihl]) {
            wrong.push("IPv4 header checksum".to_string());
        }
    } else if usize::from(be16(18)) != f.len() - 54 {
        wrong.push(format!("IPv6 payload length {} for {} B", be16(18), f.len() - 54));
    }
    // The field holds the pseudo-header sum; completing it as a device would must give a
    // segment that verifies against the pseudo-header.
    let mut done = f.to_vec();
    if netproto::csum::complete_partial(&mut done, l4, 16).is_ok() {
        let mut s = pseudo;
        s.add_bytes(&done[l4..]);
        if s.fold() != 0xffff {
            wrong.push(format!("TCP checksum field {:#06x} is not the pseudo-header sum", be16(l4 + 16)));
        }
    }
    if !wrong.is_empty() && cap.errors.len() < 5 {
        cap.errors.push(format!("{} B frame: {}", f.len(), wrong.join("; ")));
    }
}
