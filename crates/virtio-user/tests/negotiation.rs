//! Negotiation and setup against a scripted vhost-user backend (rust-vmm's backend
//! side): which features are acked, what the memory table and vring addresses look
//! like, how refusals and missing features are reported, and the shutdown sequence.

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use netproto::virtio_net::{features as net, NetConfig};
use vhost::vhost_user::message::*;
use vhost::vhost_user::{
    Backend, BackendListener, Error as VuError, GpuBackend, Listener, Result as VuResult,
    VhostUserBackendReqHandlerMut,
};
use vhost::VhostUserMemoryRegionBase;
use virtio_user::{Config, Error, Layout, VirtioUser, DEFAULT_USER_ADDR};
use virtq::features as vf;

const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

/// What the scripted backend offers and how it answers.
#[derive(Clone)]
struct Script {
    features: u64,
    protocol: VhostUserProtocolFeatures,
    queue_num: u64,
    /// SET_VRING_NUM above this is refused.
    max_ring: u32,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            features: vf::VERSION_1
                | vf::EVENT_IDX
                | vf::RING_PACKED
                | vf::INDIRECT_DESC
                | net::MRG_RXBUF
                | net::MAC
                | net::MQ
                | net::CSUM
                | net::PROTOCOL_FEATURES,
            protocol: VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::CONFIG,
            queue_num: 2,
            max_ring: 1024,
        }
    }
}

/// What the backend saw.
#[derive(Default, Debug)]
struct Seen {
    requests: Vec<String>,
    acked: u64,
    protocol: u64,
    /// (gpa, size, user_addr, mmap_offset) per region.
    regions: Vec<(u64, u64, u64, u64)>,
    /// index -> (desc, used, avail)
    addrs: Vec<(u32, u64, u64, u64)>,
    bases: Vec<(u32, u32)>,
    enabled: Vec<(u32, bool)>,
    kicks: Vec<u8>,
    calls: Vec<u8>,
}

struct Stub {
    script: Script,
    seen: Arc<Mutex<Seen>>,
}

impl Stub {
    fn log(&self, s: String) {
        self.seen.lock().unwrap().requests.push(s);
    }
}

fn nope<T>() -> VuResult<T> {
    Err(VuError::InvalidOperation("not supported by the test backend"))
}

impl VhostUserBackendReqHandlerMut for Stub {
    fn set_owner(&mut self) -> VuResult<()> {
        self.log("SET_OWNER".into());
        Ok(())
    }
    fn reset_owner(&mut self) -> VuResult<()> {
        Ok(())
    }
    fn reset_device(&mut self) -> VuResult<()> {
        Ok(())
    }
    fn get_features(&mut self) -> VuResult<u64> {
        self.log("GET_FEATURES".into());
        Ok(self.script.features)
    }
    fn set_features(&mut self, features: u64) -> VuResult<()> {
        self.log("SET_FEATURES".into());
        self.seen.lock().unwrap().acked = features;
        Ok(())
    }
    fn set_mem_table(
        &mut self,
        ctx: &[VhostUserMemoryRegion],
        files: Vec<File>,
        _postcopy: Option<bool>,
    ) -> VuResult<Option<Vec<VhostUserMemoryRegionBase>>> {
        self.log("SET_MEM_TABLE".into());
        let mut seen = self.seen.lock().unwrap();
        for (r, f) in ctx.iter().zip(&files) {
            let (gpa, size, ua, off) = (r.guest_phys_addr, r.memory_size, r.user_addr, r.mmap_offset);
            assert!(f.metadata().unwrap().len() >= size + off, "region file shorter than the region");
            seen.regions.push((gpa, size, ua, off));
        }
        Ok(None)
    }
    fn set_vring_num(&mut self, index: u32, num: u32) -> VuResult<()> {
        self.log(format!("SET_VRING_NUM {index} {num}"));
        if num > self.script.max_ring {
            return Err(VuError::InvalidParam);
        }
        Ok(())
    }
    fn set_vring_addr(
        &mut self,
        index: u32,
        _flags: VhostUserVringAddrFlags,
        descriptor: u64,
        used: u64,
        available: u64,
        _log: u64,
    ) -> VuResult<()> {
        self.log(format!("SET_VRING_ADDR {index}"));
        self.seen.lock().unwrap().addrs.push((index, descriptor, used, available));
        Ok(())
    }
    fn set_vring_base(&mut self, index: u32, base: u32) -> VuResult<()> {
        self.log(format!("SET_VRING_BASE {index}"));
        self.seen.lock().unwrap().bases.push((index, base));
        Ok(())
    }
    fn get_vring_base(&mut self, index: u32) -> VuResult<VhostUserVringState> {
        self.log(format!("GET_VRING_BASE {index}"));
        Ok(VhostUserVringState::new(index, 0))
    }
    fn set_vring_kick(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        assert!(fd.is_some(), "kick fd expected");
        self.log(format!("SET_VRING_KICK {index}"));
        self.seen.lock().unwrap().kicks.push(index);
        Ok(())
    }
    fn set_vring_call(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        assert!(fd.is_some(), "call fd expected");
        self.log(format!("SET_VRING_CALL {index}"));
        self.seen.lock().unwrap().calls.push(index);
        Ok(())
    }
    fn set_vring_err(&mut self, _index: u8, _fd: Option<File>) -> VuResult<()> {
        Ok(())
    }
    fn get_protocol_features(&mut self) -> VuResult<VhostUserProtocolFeatures> {
        self.log("GET_PROTOCOL_FEATURES".into());
        Ok(self.script.protocol)
    }
    fn set_protocol_features(&mut self, features: u64) -> VuResult<()> {
        self.log("SET_PROTOCOL_FEATURES".into());
        self.seen.lock().unwrap().protocol = features;
        Ok(())
    }
    fn get_queue_num(&mut self) -> VuResult<u64> {
        self.log("GET_QUEUE_NUM".into());
        Ok(self.script.queue_num)
    }
    fn set_vring_enable(&mut self, index: u32, enable: bool) -> VuResult<()> {
        self.log(format!("SET_VRING_ENABLE {index} {}", enable as u8));
        self.seen.lock().unwrap().enabled.push((index, enable));
        Ok(())
    }
    fn get_config(&mut self, offset: u32, size: u32, _flags: VhostUserConfigFlags) -> VuResult<Vec<u8>> {
        self.log("GET_CONFIG".into());
        let mut cfg =
            NetConfig { mac: MAC, status: 1, max_virtqueue_pairs: 2, mtu: 1500 }.to_bytes().to_vec();
        cfg.resize(256, 0);
        Ok(cfg[offset as usize..(offset + size) as usize].to_vec())
    }
    fn set_config(&mut self, _o: u32, _b: &[u8], _f: VhostUserConfigFlags) -> VuResult<()> {
        nope()
    }
    fn set_backend_req_fd(&mut self, _backend: Backend) {}
    fn set_gpu_socket(&mut self, _g: GpuBackend) -> VuResult<()> {
        nope()
    }
    fn get_shared_object(&mut self, _u: VhostUserSharedMsg) -> VuResult<File> {
        nope()
    }
    fn get_inflight_fd(&mut self, _i: &VhostUserInflight) -> VuResult<(VhostUserInflight, File)> {
        nope()
    }
    fn set_inflight_fd(&mut self, _i: &VhostUserInflight, _f: File) -> VuResult<()> {
        nope()
    }
    fn get_max_mem_slots(&mut self) -> VuResult<u64> {
        Ok(8)
    }
    fn add_mem_region(
        &mut self,
        _r: &VhostUserSingleMemoryRegion,
        _f: File,
        _p: Option<bool>,
    ) -> VuResult<Option<VhostUserMemoryRegionBase>> {
        nope()
    }
    fn remove_mem_region(&mut self, _r: &VhostUserSingleMemoryRegion) -> VuResult<()> {
        nope()
    }
    fn set_device_state_fd(
        &mut self,
        _d: VhostTransferStateDirection,
        _p: VhostTransferStatePhase,
        _f: File,
    ) -> VuResult<Option<File>> {
        nope()
    }
    fn check_device_state(&mut self) -> VuResult<()> {
        Ok(())
    }
    fn get_shmem_config(&mut self) -> VuResult<VhostUserShMemConfig> {
        nope()
    }
    fn set_log_base(&mut self, _l: &VhostUserLog, _f: File) -> VuResult<()> {
        nope()
    }
}

/// A scripted backend listening on a fresh socket, served by a thread until the
/// frontend disconnects.
struct Backendd {
    dir: PathBuf,
    path: PathBuf,
    seen: Arc<Mutex<Seen>>,
    thread: Option<JoinHandle<()>>,
}

impl Backendd {
    fn start(name: &str, script: Script) -> Self {
        let dir = std::env::temp_dir().join(format!("vw-nego-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("backend.sock");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut listener = Listener::new(&path, true).unwrap();
        let stub = Arc::new(Mutex::new(Stub { script, seen: seen.clone() }));
        let thread = std::thread::spawn(move || {
            let mut bl = BackendListener::new(&mut listener, stub).unwrap();
            let mut h = bl.accept().unwrap().expect("blocking accept");
            loop {
                match h.handle_request() {
                    Ok(()) => {}
                    Err(VuError::Disconnected | VuError::PartialMessage) => break,
                    Err(VuError::SocketBroken(_)) => break,
                    Err(_) => {} // a refused request; the connection goes on
                }
            }
        });
        Backendd { dir, path, seen, thread: Some(thread) }
    }

    fn finish(mut self) -> Seen {
        self.thread.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

impl Drop for Backendd {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn cfg(pairs: u16, layout: Layout) -> Config {
    Config {
        queue_pairs: pairs,
        layout,
        queue_size: 64,
        timeout: Duration::from_secs(5),
        ..Config::default()
    }
}

#[test]
fn acks_only_what_it_wants_and_sets_up_every_ring() {
    let b = Backendd::start("full", Script::default());
    let mut dev = VirtioUser::connect(&b.path, &cfg(2, Layout::Split)).unwrap();
    let neg = dev.negotiated().clone();
    let want = vf::VERSION_1 | vf::EVENT_IDX | net::MRG_RXBUF | net::MAC | net::MQ | net::PROTOCOL_FEATURES;
    assert_eq!(neg.features, want, "acked {:#x}", neg.features);
    assert_eq!(neg.mac(), Some(MAC));
    assert_eq!(neg.backend_queues, Some(2), "two queue pairs, counted as QEMU and DPDK do");
    let bases = dev.shutdown().unwrap();
    assert_eq!(bases, vec![0; 4]);
    let size = dev.memory_size();
    drop(dev);
    let seen = b.finish();
    assert_eq!(seen.acked, want);
    assert_eq!(
        seen.protocol,
        (VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::REPLY_ACK)
            .bits()
    );
    assert_eq!(seen.requests[0], "SET_OWNER");
    // One region at guest-physical 0, at the user address, covering the whole memfd.
    assert_eq!(seen.regions, vec![(0, size, DEFAULT_USER_ADDR, 0)]);
    // Every vring address lies in the user address space of that region.
    assert_eq!(seen.addrs.len(), 4);
    for &(i, d, u, a) in &seen.addrs {
        for x in [d, u, a] {
            assert!((DEFAULT_USER_ADDR..DEFAULT_USER_ADDR + size).contains(&x), "ring {i}: {x:#x}");
        }
        assert_eq!(d % 16, 0);
    }
    assert_eq!(seen.kicks, vec![0, 1, 2, 3]);
    assert_eq!(seen.calls, vec![0, 1, 2, 3]);
    assert_eq!(seen.bases, vec![(0, 0), (1, 0), (2, 0), (3, 0)]);
    // Enabled once set up; at shutdown disabled, then stopped with GET_VRING_BASE.
    let on: Vec<_> = seen.enabled.iter().filter(|e| e.1).map(|e| e.0).collect();
    let off: Vec<_> = seen.enabled.iter().filter(|e| !e.1).map(|e| e.0).collect();
    assert_eq!((on, off), (vec![0, 1, 2, 3], vec![0, 1, 2, 3]));
    let tail: Vec<&str> = seen.requests.iter().rev().take(4).map(|s| s.as_str()).collect();
    assert_eq!(tail, ["GET_VRING_BASE 3", "GET_VRING_BASE 2", "GET_VRING_BASE 1", "GET_VRING_BASE 0"]);
}

#[test]
fn packed_ring_base_carries_the_wrap_counter() {
    let b = Backendd::start("packed", Script::default());
    let mut dev = VirtioUser::connect(&b.path, &cfg(1, Layout::Packed)).unwrap();
    assert!(dev.negotiated().has(vf::RING_PACKED));
    dev.shutdown().unwrap();
    drop(dev);
    let seen = b.finish();
    // vhost-user packed ring state: index in bits 0-14, wrap counter (1 at start) in 15.
    assert_eq!(seen.bases, vec![(0, 0x8000), (1, 0x8000)]);
}

#[test]
fn missing_packed_ring_is_a_clear_error() {
    let b = Backendd::start(
        "nopacked",
        Script { features: Script::default().features & !vf::RING_PACKED, ..Script::default() },
    );
    let err = VirtioUser::connect(&b.path, &cfg(1, Layout::Packed)).unwrap_err();
    assert!(matches!(err, Error::MissingFeature { feature: "VIRTIO_F_RING_PACKED", .. }), "{err}");
    assert!(err.to_string().contains("use the split layout"), "{err}");
    let seen = b.finish();
    assert!(!seen.requests.iter().any(|r| r == "SET_FEATURES"), "nothing acked: {:?}", seen.requests);
}

#[test]
fn missing_mergeable_buffers_is_a_clear_error_unless_turned_off() {
    let script = Script { features: Script::default().features & !net::MRG_RXBUF, ..Script::default() };
    let b = Backendd::start("nomrg", script.clone());
    let err = VirtioUser::connect(&b.path, &cfg(1, Layout::Split)).unwrap_err();
    assert!(matches!(err, Error::MissingFeature { feature: "VIRTIO_NET_F_MRG_RXBUF", .. }), "{err}");
    b.finish();
    let b = Backendd::start("nomrg2", script);
    let dev = VirtioUser::connect(&b.path, &Config { mrg_rxbuf: false, ..cfg(1, Layout::Split) }).unwrap();
    assert!(!dev.negotiated().mrg_rxbuf());
    drop(dev);
    b.finish();
}

#[test]
fn too_few_queue_pairs_is_a_clear_error() {
    let b = Backendd::start("fewq", Script { queue_num: 1, ..Script::default() });
    let err = VirtioUser::connect(&b.path, &cfg(2, Layout::Split)).unwrap_err();
    assert!(matches!(err, Error::TooFewQueues { pairs: 2, backend_queues: 1 }), "{err}");
    b.finish();
}

#[test]
fn one_pair_on_a_backend_that_counts_pairs() {
    // GET_QUEUE_NUM 1 for one queue pair: both rings must still be reachable.
    let b = Backendd::start("onepair", Script { queue_num: 1, ..Script::default() });
    let mut dev = VirtioUser::connect(&b.path, &cfg(1, Layout::Split)).unwrap();
    assert_eq!(dev.shutdown().unwrap().len(), 2);
    drop(dev);
    let seen = b.finish();
    assert_eq!(seen.kicks, vec![0, 1]);
}

#[test]
fn refused_request_fails_at_that_request() {
    // REPLY_ACK (always offered by rust-vmm's backend side) reports the refusal.
    let b = Backendd::start("refuse", Script { max_ring: 32, ..Script::default() });
    let err = VirtioUser::connect(&b.path, &cfg(1, Layout::Split)).unwrap_err();
    assert!(matches!(err, Error::Request { request: "SET_VRING_NUM", .. }), "{err}");
    b.finish();
}

#[test]
fn without_protocol_features_one_pair_starts_on_kick() {
    let script =
        Script { features: Script::default().features & !net::PROTOCOL_FEATURES, ..Script::default() };
    let b = Backendd::start("noproto", script.clone());
    let mut dev = VirtioUser::connect(&b.path, &cfg(1, Layout::Split)).unwrap();
    assert_eq!(dev.negotiated().protocol, 0);
    dev.shutdown().unwrap();
    drop(dev);
    let seen = b.finish();
    assert!(seen.enabled.is_empty(), "SET_VRING_ENABLE needs protocol features");
    assert!(!seen.requests.iter().any(|r| r.starts_with("GET_PROTOCOL")));
    let b = Backendd::start("noproto2", script);
    let err = VirtioUser::connect(&b.path, &cfg(2, Layout::Split)).unwrap_err();
    assert!(matches!(err, Error::MissingFeature { .. }), "{err}");
    b.finish();
}
