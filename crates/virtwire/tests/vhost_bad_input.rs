//! Bad input from a vhost-user frontend: each case is rejected with a logged reason (and
//! an error reply where REPLY_ACK allows), and the daemon keeps serving: the offending
//! connection may close, the other port keeps answering, and the process never dies.
//!
//! The daemon under test is the real `virtwire run` process. Well-formed requests go
//! through rust-vmm's vhost frontend; malformed ones are written to the socket by hand.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vhost::vhost_user::message::{VhostUserHeaderFlag, VhostUserProtocolFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtq::GuestArena;

mod support;

/// `virtwire run` with two reflect ports, `a` (the one abused) and `b` (the bystander).
struct Daemon {
    d: support::daemon::Daemon,
    dir: support::guest::ScratchDir,
}

impl Daemon {
    fn start(tag: &str) -> Daemon {
        let dir = support::guest::scratch_dir(&format!("bad-{tag}"));
        let cfg = format!(
            "[[port]]\nname='a'\ntype='vhost-user'\nsocket='{0}/a.sock'\nqueue_pairs=1\ndiag='reflect'\n\
             [[port]]\nname='b'\ntype='vhost-user'\nsocket='{0}/b.sock'\ndiag='reflect'\n",
            dir.path().display()
        );
        let d = support::daemon::Daemon::start(dir.path(), &cfg, &[dir.path().join("b.sock")]);
        Daemon { d, dir }
    }

    fn sock(&self, port: &str) -> PathBuf {
        self.dir.path().join(format!("{port}.sock"))
    }

    fn log_text(&self) -> String {
        self.d.log_text()
    }

    fn expect_log(&self, needle: &str) {
        self.d.expect_log(needle);
    }

    /// The process is alive and port `b` still completes a handshake.
    fn still_serving(&mut self) {
        assert!(self.d.alive(), "daemon exited:\n{}", self.d.log_text());
        let fe = handshake(&self.sock("b"));
        assert!(fe.get_features().is_ok());
    }
}

const VERSION_1: u64 = 1 << 32;
const PROTOCOL_FEATURES: u64 = 1 << 30;

/// Connects, negotiates VERSION_1 + protocol features with REPLY_ACK, and asks for an
/// acknowledgement of every later request.
fn handshake(sock: &Path) -> Frontend {
    let mut fe = Frontend::connect(sock, 64).expect("connect");
    fe.set_owner().unwrap();
    let f = fe.get_features().unwrap();
    assert!(f & VERSION_1 != 0 && f & PROTOCOL_FEATURES != 0);
    fe.set_features(VERSION_1 | PROTOCOL_FEATURES).unwrap();
    let pf = fe.get_protocol_features().unwrap();
    assert!(pf.contains(VhostUserProtocolFeatures::REPLY_ACK));
    fe.set_protocol_features(pf).unwrap();
    fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    fe
}

fn region(arena: &GuestArena, user: u64) -> VhostUserMemoryRegionInfo {
    VhostUserMemoryRegionInfo {
        guest_phys_addr: 0,
        memory_size: arena.size(),
        userspace_addr: user,
        mmap_offset: 0,
        mmap_handle: arena.fd().as_raw_fd(),
    }
}

#[test]
fn queue_size_not_power_of_two_or_too_big() {
    let mut d = Daemon::start("size");
    let fe = handshake(&d.sock("a"));
    assert!(fe.set_vring_num(0, 100).is_err(), "size 100 accepted");
    d.expect_log("queue size 100 is not a power of two");
    assert!(fe.set_vring_num(0, 0).is_err(), "size 0 accepted");
    assert!(fe.set_vring_num(0, 65535).is_err(), "size 65535 accepted");
    assert!(fe.set_vring_num(0, 256).is_ok(), "a good size is refused after bad ones");
    d.still_serving();
}

#[test]
fn queue_index_out_of_range() {
    let mut d = Daemon::start("index");
    let fe = handshake(&d.sock("a"));
    // Port a has one queue pair: rings 0 and 1.
    assert!(fe.set_vring_num(2, 256).is_err());
    d.expect_log("ring index 2 out of range");
    assert!(fe.set_vring_base(7, 0).is_err());
    assert!(fe.set_vring_num(1, 256).is_ok());
    d.still_serving();
}

#[test]
fn ring_addresses_outside_guest_memory() {
    let mut d = Daemon::start("addr");
    let fe = handshake(&d.sock("a"));
    let arena = GuestArena::new(1 << 20, 0x7000_0000).unwrap();
    fe.set_mem_table(&[region(&arena, 0x7000_0000)]).unwrap();
    fe.set_vring_num(0, 256).unwrap();
    let cfg = VringConfigData {
        queue_max_size: 256,
        queue_size: 256,
        flags: 0,
        desc_table_addr: 0x9000_0000,
        used_ring_addr: 0x7000_2000,
        avail_ring_addr: 0x7000_1000,
        log_addr: None,
    };
    assert!(fe.set_vring_addr(0, &cfg).is_err());
    d.expect_log("descriptor area at 0x90000000 is outside guest memory");
    let good = VringConfigData { desc_table_addr: 0x7000_4000, ..cfg };
    assert!(fe.set_vring_addr(0, &good).is_ok());
    d.still_serving();
}

#[test]
fn overlapping_and_unmappable_regions() {
    let mut d = Daemon::start("regions");
    let fe = handshake(&d.sock("a"));
    let a1 = GuestArena::new(1 << 20, 0).unwrap();
    let a2 = GuestArena::new(1 << 20, 0).unwrap();
    let r1 = VhostUserMemoryRegionInfo { guest_phys_addr: 0, ..region(&a1, 0x1000_0000) };
    let r2 = VhostUserMemoryRegionInfo { guest_phys_addr: 0x8_0000, ..region(&a2, 0x2000_0000) };
    assert!(fe.set_mem_table(&[r1, r2]).is_err(), "overlapping regions accepted");
    d.expect_log("overlaps");
    // A region larger than its file: touching its end would raise SIGBUS.
    let big = VhostUserMemoryRegionInfo { memory_size: 16 << 20, ..region(&a1, 0x1000_0000) };
    assert!(fe.set_mem_table(&[big]).is_err(), "region past the end of its file accepted");
    d.expect_log("file has");
    // A file descriptor that cannot be mapped at all (a pipe).
    let (rd, _wr) = UnixStream::pair().unwrap();
    let pipe = VhostUserMemoryRegionInfo { mmap_handle: rd.as_raw_fd(), ..region(&a1, 0x1000_0000) };
    assert!(fe.set_mem_table(&[pipe]).is_err(), "unmappable fd accepted");
    d.expect_log("mmap failed");
    assert!(fe.set_mem_table(&[region(&a1, 0x1000_0000)]).is_ok());
    d.still_serving();
}

/// Writes one raw vhost-user message: request, flags (version 1), size, payload.
fn raw_msg(s: &mut UnixStream, req: u32, flags: u32, payload: &[u8]) {
    let mut m = Vec::new();
    m.extend_from_slice(&req.to_le_bytes());
    m.extend_from_slice(&(0x1 | flags).to_le_bytes());
    m.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    m.extend_from_slice(payload);
    s.write_all(&m).unwrap();
}

/// Reads one reply's u64 payload.
fn raw_reply_u64(s: &mut UnixStream) -> (u32, u64) {
    let mut h = [0u8; 12];
    s.read_exact(&mut h).unwrap();
    let mut v = [0u8; 8];
    s.read_exact(&mut v).unwrap();
    (u32::from_le_bytes(h[0..4].try_into().unwrap()), u64::from_le_bytes(v))
}

const GET_FEATURES: u32 = 1;
const SET_VRING_NUM: u32 = 8;
const SET_MEM_TABLE: u32 = 5;

/// True when the daemon closed `s` (EOF) within a few seconds.
fn closed_by_peer(s: &mut UnixStream) -> bool {
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            // Closing a socket with unread bytes in it resets the connection.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn unknown_request_closes_only_its_connection() {
    let mut d = Daemon::start("unknown");
    let mut s = UnixStream::connect(d.sock("a")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // A valid request first: the connection works.
    raw_msg(&mut s, GET_FEATURES, 0, &[]);
    let (req, f) = raw_reply_u64(&mut s);
    assert_eq!(req, GET_FEATURES);
    assert!(f & VERSION_1 != 0);
    // An unknown request code: its payload length cannot be trusted, so the daemon
    // closes this connection rather than guess where the next message starts.
    raw_msg(&mut s, 999, 0, &[0u8; 8]);
    assert!(closed_by_peer(&mut s), "connection left open after an unknown request");
    d.expect_log("malformed vhost-user message");
    d.still_serving();
    // The same port takes a new connection.
    assert!(handshake(&d.sock("a")).get_features().is_ok());
}

#[test]
fn message_of_the_wrong_size() {
    let mut d = Daemon::start("size-msg");
    let mut s = UnixStream::connect(d.sock("a")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // SET_VRING_NUM carries 8 bytes (index, num); send 4, asking for a reply.
    raw_msg(&mut s, SET_VRING_NUM, 0x8, &[0u8; 4]);
    assert!(closed_by_peer(&mut s), "connection left open after a short message");
    d.expect_log("port a: closing the connection: malformed vhost-user message");
    d.still_serving();
    assert!(handshake(&d.sock("a")).get_features().is_ok());
}

#[test]
fn a_second_frontend_is_refused_while_one_is_served() {
    let mut d = Daemon::start("second");
    let first = handshake(&d.sock("a"));
    let mut s = UnixStream::connect(d.sock("a")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(closed_by_peer(&mut s), "second connection neither served nor closed");
    d.expect_log("refusing a second frontend");
    assert!(first.get_features().is_ok(), "the first frontend lost its connection");
    d.still_serving();
}

#[test]
fn memory_table_without_its_file_descriptors() {
    let mut d = Daemon::start("nofd");
    let mut s = UnixStream::connect(d.sock("a")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // One region (num_regions u32, padding u32, then gpa, size, uaddr, offset) but no fd.
    let mut p = Vec::new();
    p.extend_from_slice(&1u32.to_le_bytes());
    p.extend_from_slice(&0u32.to_le_bytes());
    for v in [0u64, 1 << 20, 0x1000_0000, 0] {
        p.extend_from_slice(&v.to_le_bytes());
    }
    raw_msg(&mut s, SET_MEM_TABLE, 0, &p);
    d.expect_log("port a:");
    d.still_serving();
}

#[test]
fn kick_for_a_ring_without_memory_does_not_start_it() {
    let mut d = Daemon::start("early-kick");
    let fe = handshake(&d.sock("a"));
    fe.set_vring_num(0, 256).unwrap();
    let kick = vmm_sys_util::eventfd::EventFd::new(0).unwrap();
    // No memory table and no addresses yet: the kick is stored, nothing runs.
    fe.set_vring_kick(0, &kick).unwrap();
    assert!(!d.log_text().contains("ring 0 running"));
    d.still_serving();
}
