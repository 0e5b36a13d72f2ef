//! Connection, negotiation and virtqueue setup of a virtio-user device: the frontend
//! side of the vhost-user protocol (docs/interop/vhost-user.rst in QEMU), with every
//! message framed by rust-vmm's `vhost::vhost_user::Frontend`.

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netproto::virtio_net::{self, NetConfig, CONFIG_LEN, HDR_LEN};
use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserHeaderFlag};
use vhost::vhost_user::{Frontend, VhostUserFrontend, VhostUserProtocolFeatures};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtq::{DriverQueue, GuestArena, Layout, RingAddrs};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::error::RequestExt;
use crate::queue::{BufLayout, QueuePair, Vq};
use crate::{Error, Packet, Result};

/// The "user address" at which the frontend tells the backend its memory lives
/// (VhostUserMemoryRegion.userspace_addr). It only has to be consistent: vring addresses
/// in SET_VRING_ADDR are given in this space (user_addr + guest-physical address), and
/// buffer addresses in descriptors are guest-physical. Deliberately different from 0 so
/// that a backend that confuses the two address spaces fails at once.
pub const DEFAULT_USER_ADDR: u64 = 0x4000_0000_0000;

/// Largest number of queue pairs: SET_VRING_KICK/CALL carry the ring index in bits 0-7.
pub const MAX_QUEUE_PAIRS: u16 = 128;

/// What to ask of the backend.
#[derive(Debug, Clone)]
pub struct Config {
    /// Queue pairs (VIRTIO_NET_F_MQ when more than one).
    pub queue_pairs: u16,
    /// Entries per virtqueue (a power of two).
    pub queue_size: u16,
    /// Ring layout; packed requires VIRTIO_F_RING_PACKED from the backend.
    pub layout: Layout,
    /// Require VIRTIO_NET_F_MRG_RXBUF (true) or leave it off (false).
    pub mrg_rxbuf: bool,
    /// Use VIRTIO_F_EVENT_IDX when the backend offers it.
    pub event_idx: bool,
    /// Use VIRTIO_F_INDIRECT_DESC for transmit (header and frame as a two-entry
    /// indirect table) when the backend offers it.
    pub indirect: bool,
    /// Bytes of each receive buffer, virtio-net header included.
    pub rx_buf_len: u32,
    /// Bytes of each transmit buffer, header included: the largest frame is 12 less.
    pub tx_buf_len: u32,
    /// Connect/accept deadline, and the timeout for each vhost-user reply.
    pub timeout: Duration,
    /// The user address of guest memory (see [`DEFAULT_USER_ADDR`]).
    pub user_addr: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            queue_pairs: 1,
            queue_size: 256,
            layout: Layout::Split,
            mrg_rxbuf: true,
            event_idx: true,
            indirect: false,
            rx_buf_len: 2048,
            tx_buf_len: 2048,
            timeout: Duration::from_secs(10),
            user_addr: DEFAULT_USER_ADDR,
        }
    }
}

/// Smallest receive buffer without MRG_RXBUF: header plus a 1514-byte frame (virtio
/// 1.x 5.1.6.3.1).
pub const MIN_RX_BUF_NO_MRG: u32 = 1526;

impl Config {
    fn validate(&self) -> Result<()> {
        let bad = |s: String| Err(Error::InvalidConfig(s));
        if self.queue_pairs == 0 || self.queue_pairs > MAX_QUEUE_PAIRS {
            return bad(format!("queue pairs {} not in 1..={MAX_QUEUE_PAIRS}", self.queue_pairs));
        }
        if virtq::check_size(self.queue_size as u32).is_err() {
            return bad(format!("queue size {} is not a power of two in 1..=32768", self.queue_size));
        }
        if self.rx_buf_len < (HDR_LEN + 64) as u32 || self.rx_buf_len > 65536 {
            return bad(format!(
                "receive buffer of {} bytes not in {}..=65536",
                self.rx_buf_len,
                HDR_LEN + 64
            ));
        }
        if !self.mrg_rxbuf && self.rx_buf_len < MIN_RX_BUF_NO_MRG {
            return bad(format!(
                "receive buffers of {} bytes need MRG_RXBUF; without it each must hold {MIN_RX_BUF_NO_MRG}",
                self.rx_buf_len
            ));
        }
        if self.tx_buf_len < (HDR_LEN + 60) as u32 || self.tx_buf_len > 65536 + HDR_LEN as u32 {
            return bad(format!(
                "transmit buffer of {} bytes not in {}..=65548",
                self.tx_buf_len,
                HDR_LEN + 60
            ));
        }
        Ok(())
    }
}

/// The outcome of negotiation.
#[derive(Debug, Clone)]
pub struct Negotiated {
    /// Virtio features the backend offered (GET_FEATURES).
    pub offered: u64,
    /// Virtio features acked (SET_FEATURES).
    pub features: u64,
    /// Protocol features offered (0 without VHOST_USER_F_PROTOCOL_FEATURES).
    pub protocol_offered: u64,
    /// Protocol features acked.
    pub protocol: u64,
    /// GET_QUEUE_NUM's answer (queue pairs for QEMU and DPDK), when the MQ protocol
    /// feature was negotiated.
    pub backend_queues: Option<u64>,
    /// The virtio-net config space, when the CONFIG protocol feature was negotiated.
    pub config: Option<NetConfig>,
    /// Ring layout in use.
    pub layout: Layout,
    /// Queue pairs set up.
    pub queue_pairs: u16,
    /// Entries per virtqueue.
    pub queue_size: u16,
}

impl Negotiated {
    /// True when every bit of `f` was acked.
    pub fn has(&self, f: u64) -> bool {
        self.features & f == f
    }
    /// VIRTIO_NET_F_MRG_RXBUF.
    pub fn mrg_rxbuf(&self) -> bool {
        self.has(virtio_net::features::MRG_RXBUF)
    }
    /// VIRTIO_F_EVENT_IDX.
    pub fn event_idx(&self) -> bool {
        self.has(virtq::features::EVENT_IDX)
    }
    /// VIRTIO_F_INDIRECT_DESC.
    pub fn indirect(&self) -> bool {
        self.has(virtq::features::INDIRECT_DESC)
    }
    /// The MAC address in the config space (VIRTIO_NET_F_MAC and CONFIG negotiated).
    pub fn mac(&self) -> Option<[u8; 6]> {
        if self.has(virtio_net::features::MAC) {
            self.config.map(|c| c.mac)
        } else {
            None
        }
    }
}

const PROTO_FEATURES: u64 = virtio_net::features::PROTOCOL_FEATURES;

/// Names of the features we may require, for error messages.
fn feature_name(f: u64) -> &'static str {
    match f {
        virtq::features::VERSION_1 => "VIRTIO_F_VERSION_1",
        virtq::features::RING_PACKED => "VIRTIO_F_RING_PACKED",
        virtio_net::features::MRG_RXBUF => "VIRTIO_NET_F_MRG_RXBUF",
        virtio_net::features::MQ => "VIRTIO_NET_F_MQ",
        PROTO_FEATURES => "VHOST_USER_F_PROTOCOL_FEATURES",
        _ => "a required feature",
    }
}

/// A listening socket for backends that connect to us (the vhost-user "client" role
/// on their side: DPDK's vhost PMD with client=1, QEMU's server=on equivalent).
#[derive(Debug)]
pub struct FrontendListener {
    listener: UnixListener,
    path: PathBuf,
}

impl FrontendListener {
    /// Binds `path` (replacing a stale socket file there).
    pub fn bind(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Ok(md) = std::fs::symlink_metadata(&path) {
            if md.file_type().is_socket() {
                let _ = std::fs::remove_file(&path);
            }
        }
        let listener =
            UnixListener::bind(&path).map_err(|source| Error::Accept { path: path.clone(), source })?;
        listener.set_nonblocking(true).map_err(|source| Error::Accept { path: path.clone(), source })?;
        Ok(Self { listener, path })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits up to `cfg.timeout` for a backend to connect, then sets the device up.
    pub fn accept(&self, cfg: &Config) -> Result<VirtioUser> {
        let deadline = Instant::now() + cfg.timeout;
        let stream = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Err(Error::AcceptTimeout { path: self.path.clone(), secs: cfg.timeout.as_secs() })
                }
                Err(source) => return Err(Error::Accept { path: self.path.clone(), source }),
            }
        };
        stream.set_nonblocking(false).map_err(Error::Socket)?;
        VirtioUser::from_stream(stream, cfg)
    }
}

impl Drop for FrontendListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A virtio-net device driven over vhost-user: the shared memory, the negotiated
/// features and the queue pairs.
pub struct VirtioUser {
    fe: Frontend,
    arena: GuestArena,
    pairs: Vec<QueuePair>,
    neg: Negotiated,
    user_addr: u64,
    stopped: bool,
}

impl std::fmt::Debug for VirtioUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioUser")
            .field("socket_fd", &self.fe.as_raw_fd())
            .field("negotiated", &self.neg)
            .field("memory_size", &self.arena.size())
            .field("queue_pairs", &self.pairs.len())
            .field("stopped", &self.stopped)
            .finish()
    }
}

impl VirtioUser {
    /// Connects to a backend listening on `path` (retrying while the socket does not
    /// exist or refuses, until `cfg.timeout`), negotiates and sets up the queues.
    pub fn connect(path: impl AsRef<Path>, cfg: &Config) -> Result<Self> {
        cfg.validate()?;
        let path = path.as_ref();
        let deadline = Instant::now() + cfg.timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                    ) && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(source) => return Err(Error::Connect { path: path.to_path_buf(), source }),
            }
        };
        Self::from_stream(stream, cfg)
    }

    /// Binds `path`, waits for a backend to connect (server mode) and sets up.
    pub fn accept(path: impl AsRef<Path>, cfg: &Config) -> Result<Self> {
        cfg.validate()?;
        FrontendListener::bind(path)?.accept(cfg)
    }

    /// Sets up the device over an already connected socket.
    pub fn from_stream(stream: UnixStream, cfg: &Config) -> Result<Self> {
        cfg.validate()?;
        // Bound every wait for a reply, so a stuck backend becomes an error.
        stream.set_read_timeout(Some(cfg.timeout)).map_err(Error::Socket)?;
        stream.set_write_timeout(Some(cfg.timeout)).map_err(Error::Socket)?;
        let mut fe =
            Frontend::from_stream(stream.try_clone().map_err(Error::Socket)?, 2 * cfg.queue_pairs as u64);
        let neg = negotiate(&mut fe, &stream, cfg)?;
        let (arena, pairs) = setup_queues(&mut fe, cfg, &neg)?;
        Ok(Self { fe, arena, pairs, neg, user_addr: cfg.user_addr, stopped: false })
    }

    /// The negotiated features and config.
    pub fn negotiated(&self) -> &Negotiated {
        &self.neg
    }

    /// Number of queue pairs.
    pub fn num_queue_pairs(&self) -> u16 {
        self.pairs.len() as u16
    }

    /// Size in bytes of the shared guest memory.
    pub fn memory_size(&self) -> u64 {
        self.arena.size()
    }

    /// The user address sent in SET_MEM_TABLE.
    pub fn user_addr(&self) -> u64 {
        self.user_addr
    }

    /// Queue pair `index`.
    pub fn queue_pair(&mut self, index: usize) -> Result<&mut QueuePair> {
        if self.stopped {
            return Err(Error::ShutDown);
        }
        let pairs = self.pairs.len() as u16;
        self.pairs.get_mut(index).ok_or(Error::NoSuchQueuePair { index, pairs })
    }

    /// All queue pairs, e.g. to drive each from its own thread (`QueuePair` is `Send`).
    pub fn queue_pairs_mut(&mut self) -> &mut [QueuePair] {
        &mut self.pairs
    }

    /// Transmits frames on queue pair `qp`: see [`QueuePair::tx_burst`].
    pub fn tx_burst<T: AsRef<[u8]>>(&mut self, qp: usize, frames: &[T]) -> Result<usize> {
        self.queue_pair(qp)?.tx_burst(frames)
    }

    /// Receives frames on queue pair `qp`: see [`QueuePair::rx_burst`].
    pub fn rx_burst(&mut self, qp: usize, out: &mut [Packet]) -> Result<usize> {
        self.queue_pair(qp)?.rx_burst(out)
    }

    /// Starts dirty-page logging as a VMM does when live migration begins: shares `log`
    /// (a file of `size` bytes, one bit per 4 KiB page of guest memory) with
    /// SET_LOG_BASE, then sets VHOST_F_LOG_ALL with SET_FEATURES. The backend must offer
    /// LOG_ALL and the LOG_SHMFD protocol feature.
    pub fn start_dirty_log(&mut self, log: std::os::fd::BorrowedFd<'_>, size: u64) -> Result<()> {
        use vhost::VhostUserDirtyLogRegion;
        let log_all = virtio_net::features::LOG_ALL;
        if self.neg.offered & log_all == 0 {
            return Err(Error::MissingFeature {
                feature: feature_name(log_all),
                offered: self.neg.offered,
                hint: "",
            });
        }
        if self.neg.protocol & VhostUserProtocolFeatures::LOG_SHMFD.bits() == 0 {
            return Err(Error::MissingProtocolFeature {
                feature: "LOG_SHMFD",
                offered: self.neg.protocol_offered,
                hint: "",
            });
        }
        let region =
            VhostUserDirtyLogRegion { mmap_size: size, mmap_offset: 0, mmap_handle: log.as_raw_fd() };
        self.fe.set_log_base(0, Some(region)).req("SET_LOG_BASE")?;
        self.neg.features |= log_all;
        self.fe.set_features(self.neg.features).req("SET_FEATURES")?;
        Ok(())
    }

    /// Stops dirty-page logging (SET_FEATURES without VHOST_F_LOG_ALL).
    pub fn stop_dirty_log(&mut self) -> Result<()> {
        self.neg.features &= !virtio_net::features::LOG_ALL;
        self.fe.set_features(self.neg.features).req("SET_FEATURES")?;
        Ok(())
    }

    /// Stops the device: SET_VRING_ENABLE 0 on every ring (when protocol features were
    /// negotiated), then GET_VRING_BASE on every ring, which stops it (vhost-user: "the
    /// back-end must stop the ring upon receiving GET_VRING_BASE"). Returns each ring's
    /// base, in ring order. The queue pairs must not be used afterwards.
    pub fn shutdown(&mut self) -> Result<Vec<u32>> {
        if self.stopped {
            return Err(Error::ShutDown);
        }
        self.stopped = true;
        let rings = 2 * self.pairs.len();
        if self.neg.features & PROTO_FEATURES != 0 {
            for r in 0..rings {
                self.fe.set_vring_enable(r, false).req("SET_VRING_ENABLE")?;
            }
        }
        let mut bases = Vec::with_capacity(rings);
        for r in 0..rings {
            bases.push(self.fe.get_vring_base(r).req("GET_VRING_BASE")?);
        }
        Ok(bases)
    }
}

impl Drop for VirtioUser {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.shutdown();
        }
    }
}

/// Feature negotiation, in QEMU's order: SET_OWNER, GET_FEATURES, GET/SET_PROTOCOL_
/// FEATURES, GET_QUEUE_NUM, GET_CONFIG, SET_FEATURES.
fn negotiate(fe: &mut Frontend, stream: &UnixStream, cfg: &Config) -> Result<Negotiated> {
    use virtio_net::features as net;
    use virtq::features as vf;

    fe.set_owner().req("SET_OWNER")?;
    let offered = fe.get_features().req("GET_FEATURES")?;

    let mut required = vf::VERSION_1;
    if cfg.layout == Layout::Packed {
        required |= vf::RING_PACKED;
    }
    if cfg.mrg_rxbuf {
        required |= net::MRG_RXBUF;
    }
    if cfg.queue_pairs > 1 {
        // MQ needs protocol features for GET_QUEUE_NUM and SET_VRING_ENABLE.
        required |= net::MQ | PROTO_FEATURES;
    }
    for bit in 0..64 {
        let f = 1u64 << bit;
        if required & f != 0 && offered & f == 0 {
            let hint = match f {
                vf::RING_PACKED => "; use the split layout",
                net::MRG_RXBUF => "; turn mergeable receive buffers off",
                net::MQ | PROTO_FEATURES => "; use one queue pair",
                _ => "",
            };
            return Err(Error::MissingFeature { feature: feature_name(f), offered, hint });
        }
    }
    let mut optional = net::MAC | PROTO_FEATURES;
    if cfg.event_idx {
        optional |= vf::EVENT_IDX;
    }
    if cfg.indirect {
        optional |= vf::INDIRECT_DESC;
    }
    // Only ack what is offered (virtio 1.x 2.2.1: the driver must not accept a feature
    // the device did not offer). VIRTIO_NET_F_MQ is acked without VIRTIO_NET_F_CTRL_VQ:
    // over vhost-user, queue pairs are switched with SET_VRING_ENABLE instead of the
    // control queue, as QEMU and DPDK's virtio-user do.
    let features = required | (optional & offered);

    let mut protocol_offered = 0;
    let mut protocol = VhostUserProtocolFeatures::empty();
    if offered & PROTO_FEATURES != 0 {
        let pf = fe.get_protocol_features().req("GET_PROTOCOL_FEATURES")?;
        protocol_offered = pf.bits();
        let want = VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::LOG_SHMFD;
        protocol = pf & want;
        if cfg.queue_pairs > 1 && !protocol.contains(VhostUserProtocolFeatures::MQ) {
            return Err(Error::MissingProtocolFeature {
                feature: "MQ",
                offered: protocol_offered,
                hint: "; use one queue pair",
            });
        }
        fe.set_protocol_features(protocol).req("SET_PROTOCOL_FEATURES")?;
        if protocol.contains(VhostUserProtocolFeatures::REPLY_ACK) {
            // vhost-user REPLY_ACK: with NEED_REPLY set, every request without a reply of
            // its own is acknowledged with a u64 (0 = success), so a refused request
            // fails at the request that caused it.
            fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }
    }
    let mut backend_queues = None;
    if protocol.contains(VhostUserProtocolFeatures::MQ) {
        let n = fe.get_queue_num().req("GET_QUEUE_NUM")?;
        // For virtio-net, QEMU and DPDK read the answer as queue pairs (backends differ:
        // some count virtqueues), so any answer of at least the pairs asked for is fine.
        if n < cfg.queue_pairs as u64 {
            return Err(Error::TooFewQueues { pairs: cfg.queue_pairs, backend_queues: n });
        }
        let rings = 2 * cfg.queue_pairs as u64;
        if n < rings {
            // The vhost crate's Frontend takes the answer as a bound on ring indices and
            // would refuse our transmit rings. Continue on a fresh Frontend over the same
            // connection, bounded by our ring count, and bring its view of the
            // negotiation up to date: GET_FEATURES is a query, and the protocol features
            // are sent again unchanged.
            let mut fresh = Frontend::from_stream(stream.try_clone().map_err(Error::Socket)?, rings);
            fresh.get_features().req("GET_FEATURES")?;
            fresh.set_protocol_features(protocol).req("SET_PROTOCOL_FEATURES")?;
            if protocol.contains(VhostUserProtocolFeatures::REPLY_ACK) {
                fresh.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
            }
            *fe = fresh;
        }
        backend_queues = Some(n);
    }
    let mut config = None;
    if protocol.contains(VhostUserProtocolFeatures::CONFIG) {
        let (_, bytes) = fe
            .get_config(0, CONFIG_LEN as u32, VhostUserConfigFlags::empty(), &[0u8; CONFIG_LEN])
            .req("GET_CONFIG")?;
        let b: &[u8; CONFIG_LEN] = bytes
            .get(..CONFIG_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(Error::ShortConfig { got: bytes.len(), want: CONFIG_LEN })?;
        config = Some(NetConfig::parse(b));
    }
    fe.set_features(features).req("SET_FEATURES")?;
    Ok(Negotiated {
        offered,
        features,
        protocol_offered,
        protocol: protocol.bits(),
        backend_queues,
        config,
        layout: cfg.layout,
        queue_pairs: cfg.queue_pairs,
        queue_size: cfg.queue_size,
    })
}

fn round_up(x: u64, to: u64) -> u64 {
    x.div_ceil(to) * to
}

/// Sizes the guest memory: per pair two rings, the transmit indirect tables and one
/// buffer per descriptor slot in each direction.
fn arena_size(cfg: &Config, indirect: bool) -> u64 {
    let size = cfg.queue_size as u64;
    let [d, a, u] = DriverQueue::area_sizes(cfg.layout, cfg.queue_size);
    let ring = round_up(d, 4096) + a + u + 128;
    let ind = if indirect { size * 2 * 16 + 64 } else { 0 };
    let bufs = size * (round_up(cfg.rx_buf_len as u64, 64) + round_up(cfg.tx_buf_len as u64, 64)) + 2 * 4096;
    let per_pair = 2 * ring + ind + bufs;
    round_up(4096 + cfg.queue_pairs as u64 * per_pair + 4096, 2 << 20)
}

fn alloc(arena: &mut GuestArena, len: u64, align: u64) -> Result<u64> {
    arena.alloc(len, align).ok_or(Error::ArenaFull { size: arena.size() })
}

/// Lays out one virtqueue in the arena.
fn make_ring(
    arena: &mut GuestArena,
    cfg: &Config,
    features: u64,
    indirect: bool,
    index: u16,
) -> Result<(DriverQueue, RingAddrs)> {
    let [d, a, u] = DriverQueue::area_sizes(cfg.layout, cfg.queue_size);
    let addrs = RingAddrs {
        desc: alloc(arena, d, 4096)?,
        driver: alloc(arena, a, 64)?,
        device: alloc(arena, u, 64)?,
    };
    let ind = if indirect { Some((alloc(arena, cfg.queue_size as u64 * 2 * 16, 64)?, 2u16)) } else { None };
    let q = DriverQueue::new(cfg.layout, arena.mem().clone(), cfg.queue_size, addrs, features, ind)
        .map_err(|source| Error::Setup { queue: index, source })?;
    Ok((q, addrs))
}

fn eventfd() -> Result<EventFd> {
    EventFd::new(EFD_NONBLOCK).map_err(Error::EventFd)
}

/// SET_MEM_TABLE, then per ring SET_VRING_NUM, SET_VRING_BASE, SET_VRING_ADDR,
/// SET_VRING_KICK, SET_VRING_CALL (QEMU's order), then SET_VRING_ENABLE on every ring.
fn setup_queues(fe: &mut Frontend, cfg: &Config, neg: &Negotiated) -> Result<(GuestArena, Vec<QueuePair>)> {
    let indirect = neg.indirect();
    let mut arena = GuestArena::new(arena_size(cfg, indirect), cfg.user_addr)?;
    // One region: guest-physical 0, at our chosen user address, offset 0 in the memfd.
    let region = VhostUserMemoryRegionInfo {
        guest_phys_addr: 0,
        memory_size: arena.size(),
        userspace_addr: cfg.user_addr,
        mmap_offset: 0,
        mmap_handle: arena.fd().as_raw_fd(),
    };
    fe.set_mem_table(&[region]).req("SET_MEM_TABLE")?;

    let ua = |gpa: u64| cfg.user_addr + gpa;
    let size = cfg.queue_size;
    // Initial ring position: split, avail index 0; packed, index 0 with the wrap
    // counter 1 in bit 15 (vhost-user "Ring states").
    let base = match cfg.layout {
        Layout::Split => 0,
        Layout::Packed => virtq::packed::base_from_seq(0, size),
    };
    let rx_stride = round_up(cfg.rx_buf_len as u64, 64);
    let tx_stride = round_up(cfg.tx_buf_len as u64, 64);
    let mut pairs = Vec::with_capacity(cfg.queue_pairs as usize);
    for p in 0..cfg.queue_pairs {
        let (rxi, txi) = (2 * p, 2 * p + 1);
        let (rxq, rx_addrs) = make_ring(&mut arena, cfg, neg.features, false, rxi)?;
        let (txq, tx_addrs) = make_ring(&mut arena, cfg, neg.features, indirect, txi)?;
        let rx_buf = BufLayout {
            base: alloc(&mut arena, size as u64 * rx_stride, 4096)?,
            stride: rx_stride,
            len: cfg.rx_buf_len,
        };
        let tx_buf = BufLayout {
            base: alloc(&mut arena, size as u64 * tx_stride, 4096)?,
            stride: tx_stride,
            len: cfg.tx_buf_len,
        };
        let rx = Vq { index: rxi, q: rxq, kick: eventfd()?, call: eventfd()? };
        let tx = Vq { index: txi, q: txq, kick: eventfd()?, call: eventfd()? };
        let mut qp =
            QueuePair::new(p, arena.mem().clone(), rx, tx, rx_buf, tx_buf, indirect, neg.mrg_rxbuf())?;
        // Populate the receive queue before the device starts (virtio 1.x 5.1.6.3).
        qp.fill_rx()?;
        for (i, addrs) in [(rxi, rx_addrs), (txi, tx_addrs)] {
            let i = i as usize;
            let (kick, call) = qp.ring_fds(i % 2 == 1);
            fe.set_vring_num(i, size).req("SET_VRING_NUM")?;
            fe.set_vring_base(i, base).req("SET_VRING_BASE")?;
            // Split: descriptor table, avail ring (driver area), used ring (device
            // area). Packed: the ring, driver and device event suppression areas.
            let data = VringConfigData {
                queue_max_size: size,
                queue_size: size,
                flags: 0,
                desc_table_addr: ua(addrs.desc),
                used_ring_addr: ua(addrs.device),
                avail_ring_addr: ua(addrs.driver),
                log_addr: None,
            };
            fe.set_vring_addr(i, &data).req("SET_VRING_ADDR")?;
            fe.set_vring_kick(i, kick).req("SET_VRING_KICK")?;
            fe.set_vring_call(i, call).req("SET_VRING_CALL")?;
        }
        pairs.push(qp);
    }
    // With VHOST_USER_F_PROTOCOL_FEATURES rings start disabled and run after
    // SET_VRING_ENABLE 1; without it, a ring starts when its kick fd arrives.
    if neg.features & PROTO_FEATURES != 0 {
        for r in 0..2 * cfg.queue_pairs as usize {
            fe.set_vring_enable(r, true).req("SET_VRING_ENABLE")?;
        }
    }
    for qp in &mut pairs {
        qp.kick_rx()?;
    }
    Ok((arena, pairs))
}
