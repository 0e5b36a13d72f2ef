//! The vhost-user protocol handler of one virtio-net port (QEMU docs/interop/vhost-user.rst):
//! feature negotiation, the guest memory table, and each ring's lifecycle. Framing and
//! dispatch come from rust-vmm's `vhost` crate; every decision is ours.
//!
//! A ring runs once it has a size, addresses, a kick (or the "no fd" flag) and guest
//! memory, and is enabled: with VHOST_USER_F_PROTOCOL_FEATURES rings start disabled and
//! wait for SET_VRING_ENABLE; without it a ring starts when its kick arrives. A running
//! ring belongs to the worker; GET_VRING_BASE takes it back and returns its position.
//!
//! Every rejected message is logged with its reason. Set-type messages get an error
//! reply when REPLY_ACK is negotiated (the `vhost` crate sends it for an `Err`).
//! Get-type messages cannot carry an error reply, so a bad one marks the connection
//! for closing instead of leaving the frontend waiting.

use std::fs::File;
use std::os::fd::AsFd;
use std::sync::Arc;

use netproto::ethernet::Mac;
use netproto::virtio_net::{self as vnet, features as nf, NetConfig};
use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserConfigFlags, VhostUserInflight,
    VhostUserLog, VhostUserMemoryRegion, VhostUserProtocolFeatures, VhostUserShMemConfig, VhostUserSharedMsg,
    VhostUserSingleMemoryRegion, VhostUserVringAddrFlags, VhostUserVringState,
};
use vhost::vhost_user::{
    Backend, Error as VuError, GpuBackend, Result as VuResult, VhostUserBackendReqHandlerMut,
};
use vhost::VhostUserMemoryRegionBase;
use virtq::{features as vf, DeviceQueue, DirtyLog, GuestMemory, Layout, RegionSpec, RingAddrs};

use crate::worker::{Ctl, PortId, Worker};

/// What a port does with the frames of its guest, instead of switching them
/// (like testpmd's forwarding modes): the way the device alone is tested and measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiagMode {
    /// Every frame the guest transmits comes back to it with the MACs swapped.
    Reflect,
    /// Every frame the guest transmits is counted and dropped.
    Sink,
    /// The guest's receive rings are filled with generated frames.
    Source,
}

impl std::str::FromStr for DiagMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "reflect" => Ok(DiagMode::Reflect),
            "sink" => Ok(DiagMode::Sink),
            "source" => Ok(DiagMode::Source),
            _ => Err(format!("unknown diag mode {s:?} (expected reflect, sink or source)")),
        }
    }
}

/// A port's configuration as the device needs it.
#[derive(Debug, Clone)]
pub struct PortSpec {
    /// Port name (for logs and the control plane).
    pub name: String,
    /// Queue pairs offered (VIRTIO_NET_F_MQ when above 1).
    pub queue_pairs: u16,
    /// MAC address reported in the config space.
    pub mac: Mac,
    /// MTU reported in the config space (VIRTIO_NET_F_MTU), 0 for none.
    pub mtu: u16,
    /// A diagnostic mode instead of switching.
    pub diag: Option<DiagMode>,
    /// VLANs and address filters.
    pub policy: crate::policy::PortPolicy,
    /// Frame size for [`DiagMode::Source`].
    pub diag_frame_size: usize,
    /// Interrupt coalescing.
    pub coalesce: crate::polling::Coalesce,
    /// Feature bits not to offer even though the device supports them (a port
    /// configured with `event_idx = false` withholds VIRTIO_RING_F_EVENT_IDX, say).
    pub withheld_features: u64,
}

/// The offload feature bits a switching port offers.
pub const OFFLOADS: u64 = nf::CSUM
    | nf::GUEST_CSUM
    | nf::HOST_TSO4
    | nf::HOST_TSO6
    | nf::HOST_ECN
    | nf::HOST_USO
    | nf::GUEST_TSO4
    | nf::GUEST_TSO6
    | nf::GUEST_ECN
    | nf::GUEST_USO4
    | nf::GUEST_USO6
    | nf::RSC_EXT;

/// Virtio feature bits this device offers. Offload bits come with checksum and
/// segmentation support. VHOST_F_LOG_ALL (with the LOG_SHMFD protocol feature) is live
/// migration's dirty-page logging.
pub fn offered_features(spec: &PortSpec) -> u64 {
    // VIRTIO_F_IN_ORDER (virtio 1.x 2.7.9 / 2.8.21): every mode of this device uses and
    // completes the buffers of a ring in the order they were made available (bursts are
    // completed front to back; unused tails are rewound, never skipped), so it is offered.
    // Drivers such as DPDK's virtio PMD then use their in-order fast paths.
    let mut f = vf::VERSION_1
        | vf::RING_PACKED
        | vf::EVENT_IDX
        | vf::INDIRECT_DESC
        | vf::IN_ORDER
        | nf::MRG_RXBUF
        | nf::MAC
        | nf::STATUS
        | nf::LOG_ALL
        | nf::PROTOCOL_FEATURES;
    if spec.queue_pairs > 1 {
        f |= nf::MQ;
    }
    if spec.mtu != 0 {
        f |= nf::MTU;
    }
    // Offloads (virtio 1.x 5.1.3, 5.1.6.2, 5.1.6.4): the switch validates what the
    // guest sends once, passes checksum and segmentation work through to receivers that
    // negotiated it, and does it in software for those that did not. Diagnostic modes
    // move frames without looking at them, so they offer none.
    if spec.diag.is_none() {
        f |= OFFLOADS;
    }
    f & !spec.withheld_features
}

/// Protocol features this device offers (REPLY_ACK is added by the `vhost` crate).
/// RARP, NET_MTU and STATUS are not offered: the `vhost` crate does not dispatch their
/// messages, so a frontend that used them would wait for replies that never come.
pub fn offered_protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
        | VhostUserProtocolFeatures::LOG_SHMFD
}

/// Most memory regions accepted (GET_MAX_MEM_SLOTS).
pub const MAX_MEM_SLOTS: usize = 32;

#[derive(Default)]
struct RingSetup {
    num: Option<u16>,
    /// desc, avail (driver area), used (device area): frontend virtual addresses.
    addr: Option<(u64, u64, u64)>,
    base: u32,
    /// Some(None): the frontend said it will never kick (VHOST_USER_VRING_NOFD_MASK).
    kick: Option<Option<File>>,
    call: Option<File>,
    err: Option<File>,
    /// Last SET_VRING_ENABLE for this ring on this connection (None: never sent).
    enabled: Option<bool>,
    running: bool,
}

/// The device state of one connection.
pub struct NetDevice {
    spec: Arc<PortSpec>,
    id: PortId,
    worker: Arc<Worker>,
    acked: u64,
    proto_acked: u64,
    regions: Vec<(RegionSpec, File)>,
    /// How many ADD_MEM_REG requests added each region (see `add_mem_region`).
    region_refs: Vec<u32>,
    mem: Option<Arc<GuestMemory>>,
    /// The dirty log from SET_LOG_BASE; in force while VHOST_F_LOG_ALL is negotiated.
    log: Option<Arc<DirtyLog>>,
    rings: Vec<RingSetup>,
    /// Why the connection must close (a get-type request failed).
    pub fatal: Option<String>,
}

fn invalid<T>(port: &str, why: String) -> VuResult<T> {
    eprintln!("virtwire: port {port}: rejected: {why}");
    Err(VuError::InvalidParam)
}

impl NetDevice {
    /// A fresh device for a new connection.
    pub fn new(spec: Arc<PortSpec>, id: PortId, worker: Arc<Worker>) -> Self {
        let n = spec.queue_pairs as usize * 2;
        Self {
            spec,
            id,
            worker,
            acked: 0,
            proto_acked: 0,
            regions: Vec::new(),
            region_refs: Vec::new(),
            mem: None,
            log: None,
            rings: (0..n).map(|_| RingSetup::default()).collect(),
            fatal: None,
        }
    }

    /// Negotiated virtio features.
    pub fn acked_features(&self) -> u64 {
        self.acked
    }

    fn ring(&mut self, index: u32) -> VuResult<&mut RingSetup> {
        let n = self.rings.len();
        match self.rings.get_mut(index as usize) {
            Some(r) => Ok(r),
            None => {
                invalid(&self.spec.name, format!("ring index {index} out of range (the port has {n} rings)"))
            }
        }
    }

    fn layout(&self) -> Layout {
        Layout::from_features(self.acked)
    }

    fn hdr_len(&self) -> usize {
        // virtio 1.x 5.1.6: 12 bytes with VERSION_1 or MRG_RXBUF, 10 for legacy drivers.
        if self.acked & (vf::VERSION_1 | nf::MRG_RXBUF) != 0 {
            vnet::HDR_LEN
        } else {
            10
        }
    }

    /// Stops every running ring (connection lost or reset).
    pub fn stop_all(&mut self) {
        for i in 0..self.rings.len() {
            self.stop_ring(i);
        }
    }

    fn stop_ring(&mut self, i: usize) -> u32 {
        if self.rings[i].running {
            self.rings[i].running = false;
            if let Some(b) = self.worker.stop_ring(self.id, i as u16) {
                self.rings[i].base = b;
            }
        }
        self.rings[i].base
    }

    /// Area sizes of a ring, for translating its addresses.
    fn area_lens(&self, num: u16) -> (u64, u64, u64) {
        match self.layout() {
            Layout::Split => virtq::split::area_sizes(num),
            Layout::Packed => (16 * num as u64, 4, 4),
        }
    }

    fn maybe_start(&mut self, i: usize) -> VuResult<()> {
        let proto = self.acked & nf::PROTOCOL_FEATURES != 0;
        let r = &self.rings[i];
        // With PROTOCOL_FEATURES rings start disabled until SET_VRING_ENABLE
        // (vhost-user.rst, "Ring states"). QEMU's virtio-net may send its first enables
        // before SET_FEATURES, which the vhost crate refuses as premature, so a ring that
        // was never explicitly enabled or disabled on this connection runs once kicked,
        // as it would without PROTOCOL_FEATURES; an explicit disable always holds.
        let enabled = r.enabled.unwrap_or(true) || !proto;
        let ready = !r.running
            && r.num.is_some()
            && r.addr.is_some()
            && r.kick.is_some()
            && enabled
            && self.mem.is_some();
        if !ready {
            return Ok(());
        }
        let name = self.spec.name.clone();
        let mem = self.mem.clone().expect("checked above");
        let num = r.num.expect("checked above");
        let (d_va, a_va, u_va) = r.addr.expect("checked above");
        let (dl, al, ul) = self.area_lens(num);
        let tr = |what: &str, va: u64, len: u64| {
            mem.user_to_gpa(va, len)
                .ok_or_else(|| format!("ring {i}: {what} at {va:#x} ({len} bytes) is outside guest memory"))
        };
        let addrs = match (|| {
            Ok::<_, String>(RingAddrs {
                desc: tr("descriptor area", d_va, dl)?,
                driver: tr("driver area", a_va, al)?,
                device: tr("device area", u_va, ul)?,
            })
        })() {
            Ok(a) => a,
            Err(why) => return invalid(&name, why),
        };
        let mut q = match DeviceQueue::new(self.layout(), mem, num, addrs, self.acked) {
            Ok(q) => q,
            Err(e) => return invalid(&name, format!("ring {i}: {e}")),
        };
        let base = r.base;
        q.set_base(base as u16, None);
        let dup = |f: &Option<File>| f.as_ref().and_then(|f| f.try_clone().ok());
        let kick = r.kick.as_ref().and_then(dup_opt);
        let (call, err) = (dup(&r.call), dup(&r.err));
        self.worker.send(Ctl::Start {
            id: self.id,
            ring: i as u16,
            queue: q,
            kick,
            call,
            err,
            hdr_len: self.hdr_len(),
            mrg_rxbuf: self.acked & nf::MRG_RXBUF != 0,
            features: self.acked,
        });
        self.rings[i].running = true;
        eprintln!(
            "virtwire: port {name}: ring {i} running ({} layout, size {num}, features {:#x})",
            self.layout().name(),
            self.acked
        );
        Ok(())
    }

    /// Rebuilds the memory map from the current regions; running rings restart on it.
    fn remap(&mut self) -> VuResult<()> {
        let mut m = GuestMemory::new();
        for (spec, f) in &self.regions {
            if let Err(e) = m.add_region(f.as_fd(), *spec) {
                return invalid(&self.spec.name, format!("memory region: {e}"));
            }
        }
        if self.acked & nf::LOG_ALL != 0 {
            m.set_log(self.log.clone());
        }
        let running: Vec<usize> = (0..self.rings.len()).filter(|i| self.rings[*i].running).collect();
        for &i in &running {
            self.stop_ring(i);
        }
        self.mem = Some(Arc::new(m));
        for i in running {
            self.maybe_start(i)?;
        }
        Ok(())
    }
}

fn same_region(a: &RegionSpec, b: &RegionSpec) -> bool {
    a.gpa == b.gpa && a.size == b.size && a.user_addr == b.user_addr && a.mmap_offset == b.mmap_offset
}

fn dup_opt(f: &Option<File>) -> Option<File> {
    f.as_ref().and_then(|f| f.try_clone().ok())
}

impl VhostUserBackendReqHandlerMut for NetDevice {
    fn set_owner(&mut self) -> VuResult<()> {
        Ok(())
    }

    fn reset_owner(&mut self) -> VuResult<()> {
        self.stop_all();
        self.acked = 0;
        Ok(())
    }

    fn reset_device(&mut self) -> VuResult<()> {
        self.stop_all();
        for r in self.rings.iter_mut() {
            *r = RingSetup::default();
        }
        self.acked = 0;
        Ok(())
    }

    fn get_features(&mut self) -> VuResult<u64> {
        Ok(offered_features(&self.spec))
    }

    fn set_features(&mut self, features: u64) -> VuResult<()> {
        let offered = offered_features(&self.spec);
        if features & !offered != 0 {
            return invalid(
                &self.spec.name,
                format!("features {features:#x} include bits never offered ({:#x})", features & !offered),
            );
        }
        if self.rings.iter().any(|r| r.running) && (features ^ self.acked) & vf::RING_PACKED != 0 {
            return invalid(&self.spec.name, "ring layout changed while rings run".into());
        }
        let logging_changed = (features ^ self.acked) & nf::LOG_ALL != 0;
        self.acked = features;
        eprintln!("virtwire: port {}: features negotiated {features:#x}", self.spec.name);
        if logging_changed && !self.regions.is_empty() {
            // Running rings restart on a memory map that logs (or stops logging) every
            // write: the live-migration dirty log of vhost-user.rst.
            self.remap()?;
            eprintln!(
                "virtwire: port {}: dirty-page logging {}",
                self.spec.name,
                if features & nf::LOG_ALL != 0 { "on" } else { "off" }
            );
        }
        Ok(())
    }

    fn set_mem_table(
        &mut self,
        ctx: &[VhostUserMemoryRegion],
        files: Vec<File>,
        _postcopy: Option<bool>,
    ) -> VuResult<Option<Vec<VhostUserMemoryRegionBase>>> {
        if ctx.len() > MAX_MEM_SLOTS || ctx.len() != files.len() {
            return invalid(
                &self.spec.name,
                format!("memory table with {} regions and {} fds", ctx.len(), files.len()),
            );
        }
        let mut regions = Vec::with_capacity(ctx.len());
        for (r, f) in ctx.iter().zip(files) {
            // The message struct is packed: copy each field out before use.
            let (gpa, size, user_addr, mmap_offset) =
                (r.guest_phys_addr, r.memory_size, r.user_addr, r.mmap_offset);
            regions.push((RegionSpec { gpa, size, user_addr, mmap_offset }, f));
        }
        let refs = vec![1; regions.len()];
        let old = std::mem::replace(&mut self.regions, regions);
        let old_refs = std::mem::replace(&mut self.region_refs, refs);
        if let Err(e) = self.remap() {
            self.regions = old;
            self.region_refs = old_refs;
            return Err(e);
        }
        Ok(None)
    }

    fn set_vring_num(&mut self, index: u32, num: u32) -> VuResult<()> {
        let name = self.spec.name.clone();
        let r = self.ring(index)?;
        if r.running {
            return invalid(&name, format!("ring {index}: SET_VRING_NUM while the ring runs"));
        }
        match virtq::check_size(num) {
            Ok(n) => {
                r.num = Some(n);
                Ok(())
            }
            Err(e) => invalid(&name, format!("ring {index}: {e}")),
        }
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
        let name = self.spec.name.clone();
        let mem = self.mem.clone();
        let r = self.ring(index)?;
        if r.running {
            return invalid(&name, format!("ring {index}: SET_VRING_ADDR while the ring runs"));
        }
        if let Some(m) = &mem {
            for (what, va) in
                [("descriptor area", descriptor), ("driver area", available), ("device area", used)]
            {
                if m.user_to_gpa(va, 1).is_none() {
                    return invalid(
                        &name,
                        format!("ring {index}: {what} at {va:#x} is outside guest memory"),
                    );
                }
            }
        }
        r.addr = Some((descriptor, available, used));
        Ok(())
    }

    fn set_vring_base(&mut self, index: u32, base: u32) -> VuResult<()> {
        let name = self.spec.name.clone();
        let r = self.ring(index)?;
        if r.running {
            return invalid(&name, format!("ring {index}: SET_VRING_BASE while the ring runs"));
        }
        r.base = base;
        Ok(())
    }

    fn get_vring_base(&mut self, index: u32) -> VuResult<VhostUserVringState> {
        if index as usize >= self.rings.len() {
            let why = format!("GET_VRING_BASE for ring {index}, out of range");
            eprintln!("virtwire: port {}: rejected: {why}; closing the connection", self.spec.name);
            self.fatal = Some(why);
            return Err(VuError::InvalidParam);
        }
        let base = self.stop_ring(index as usize);
        // The ring is stopped: it needs a new kick (and enable) before it runs again.
        // The ring is stopped until it is set up and kicked again.
        self.rings[index as usize].kick = None;
        Ok(VhostUserVringState::new(index, base))
    }

    fn set_vring_kick(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        let i = index as usize;
        if self.ring(index as u32)?.running {
            // A new kick fd for a running ring: restart it with the new one.
            self.stop_ring(i);
        }
        self.ring(index as u32)?.kick = Some(fd);
        self.maybe_start(i)
    }

    fn set_vring_call(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        let id = self.id;
        let worker = self.worker.clone();
        let r = self.ring(index as u32)?;
        if r.running {
            worker.send(Ctl::SetCall { id, ring: index as u16, call: dup_opt(&fd) });
        }
        r.call = fd;
        Ok(())
    }

    fn set_vring_err(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        self.ring(index as u32)?.err = fd;
        Ok(())
    }

    fn get_protocol_features(&mut self) -> VuResult<VhostUserProtocolFeatures> {
        Ok(offered_protocol_features())
    }

    fn set_protocol_features(&mut self, features: u64) -> VuResult<()> {
        let offered = offered_protocol_features().bits() | VhostUserProtocolFeatures::REPLY_ACK.bits();
        if features & !offered != 0 {
            return invalid(
                &self.spec.name,
                format!("protocol features {features:#x} include bits never offered"),
            );
        }
        self.proto_acked = features;
        Ok(())
    }

    fn get_queue_num(&mut self) -> VuResult<u64> {
        // Queue pairs, as QEMU's vhost-user net and DPDK count them.
        Ok(self.spec.queue_pairs as u64)
    }

    fn set_vring_enable(&mut self, index: u32, enable: bool) -> VuResult<()> {
        let i = index as usize;
        self.ring(index)?.enabled = Some(enable);
        if enable {
            self.maybe_start(i)
        } else {
            if self.rings[i].running {
                self.stop_ring(i);
            }
            Ok(())
        }
    }

    fn get_config(&mut self, offset: u32, size: u32, _flags: VhostUserConfigFlags) -> VuResult<Vec<u8>> {
        let cfg = NetConfig {
            mac: self.spec.mac.0,
            status: vnet::S_LINK_UP,
            max_virtqueue_pairs: self.spec.queue_pairs,
            mtu: self.spec.mtu,
        }
        .to_bytes();
        let mut space = vec![0u8; 256];
        space[..cfg.len()].copy_from_slice(&cfg);
        let (o, s) = (offset as usize, size as usize);
        match o.checked_add(s) {
            Some(end) if end <= space.len() => Ok(space[o..end].to_vec()),
            _ => invalid(
                &self.spec.name,
                format!("GET_CONFIG offset {offset} size {size} past the config space"),
            ),
        }
    }

    fn set_config(&mut self, _offset: u32, _buf: &[u8], _flags: VhostUserConfigFlags) -> VuResult<()> {
        invalid(&self.spec.name, "SET_CONFIG: the virtio-net config space is read-only here".into())
    }

    fn set_backend_req_fd(&mut self, _backend: Backend) {}

    fn set_gpu_socket(&mut self, _gpu_backend: GpuBackend) -> VuResult<()> {
        Err(VuError::InvalidOperation("not a GPU device"))
    }

    fn get_shared_object(&mut self, _uuid: VhostUserSharedMsg) -> VuResult<File> {
        Err(VuError::InvalidOperation("shared objects are not supported"))
    }

    fn get_inflight_fd(&mut self, _inflight: &VhostUserInflight) -> VuResult<(VhostUserInflight, File)> {
        self.fatal = Some("GET_INFLIGHT_FD without INFLIGHT_SHMFD".into());
        Err(VuError::InvalidOperation("inflight tracking is not offered"))
    }

    fn set_inflight_fd(&mut self, _inflight: &VhostUserInflight, _file: File) -> VuResult<()> {
        Err(VuError::InvalidOperation("inflight tracking is not offered"))
    }

    fn get_max_mem_slots(&mut self) -> VuResult<u64> {
        Ok(MAX_MEM_SLOTS as u64)
    }

    fn add_mem_region(
        &mut self,
        region: &VhostUserSingleMemoryRegion,
        fd: File,
        _postcopy: Option<bool>,
    ) -> VuResult<Option<VhostUserMemoryRegionBase>> {
        let (gpa, size, user_addr, mmap_offset) =
            (region.guest_phys_addr, region.memory_size, region.user_addr, region.mmap_offset);
        let spec = RegionSpec { gpa, size, user_addr, mmap_offset };
        // QEMU's virtio-net drives one vhost device per queue pair over the same
        // connection, and each adds the same regions: count identical additions
        // instead of mapping a region twice.
        if let Some(i) = self.regions.iter().position(|(s, _)| same_region(s, &spec)) {
            self.region_refs[i] += 1;
            return Ok(None);
        }
        if self.regions.len() >= MAX_MEM_SLOTS {
            return invalid(&self.spec.name, format!("ADD_MEM_REG: already {MAX_MEM_SLOTS} regions"));
        }
        self.regions.push((spec, fd));
        self.region_refs.push(1);
        if let Err(e) = self.remap() {
            self.regions.pop();
            self.region_refs.pop();
            return Err(e);
        }
        Ok(None)
    }

    fn remove_mem_region(&mut self, region: &VhostUserSingleMemoryRegion) -> VuResult<()> {
        let (gpa, size) = (region.guest_phys_addr, region.memory_size);
        let Some(pos) = self.regions.iter().position(|(s, _)| s.gpa == gpa && s.size == size) else {
            return invalid(&self.spec.name, format!("REM_MEM_REG: no region at {gpa:#x} size {size:#x}"));
        };
        if self.region_refs[pos] > 1 {
            self.region_refs[pos] -= 1;
            return Ok(());
        }
        let removed = self.regions.remove(pos);
        self.region_refs.remove(pos);
        if let Err(e) = self.remap() {
            self.regions.insert(pos, removed);
            self.region_refs.insert(pos, 1);
            return Err(e);
        }
        Ok(())
    }

    fn set_device_state_fd(
        &mut self,
        _direction: VhostTransferStateDirection,
        _phase: VhostTransferStatePhase,
        _fd: File,
    ) -> VuResult<Option<File>> {
        Err(VuError::InvalidOperation("device state transfer is not offered"))
    }

    fn check_device_state(&mut self) -> VuResult<()> {
        Err(VuError::InvalidOperation("device state transfer is not offered"))
    }

    fn get_shmem_config(&mut self) -> VuResult<VhostUserShMemConfig> {
        self.fatal = Some("GET_SHMEM_CONFIG is not offered".into());
        Err(VuError::InvalidOperation("shared memory regions are not offered"))
    }

    fn set_log_base(&mut self, log: &VhostUserLog, file: File) -> VuResult<()> {
        let (size, offset) = (log.mmap_size, log.mmap_offset);
        match DirtyLog::map(file.as_fd(), size, offset) {
            Ok(l) => {
                self.log = Some(Arc::new(l));
                if self.acked & nf::LOG_ALL != 0 && !self.regions.is_empty() {
                    self.remap()?;
                }
                Ok(())
            }
            Err(e) => {
                // The crate answers SET_LOG_BASE itself after an Ok only; without a
                // usable log, migration cannot be correct: close the connection.
                let why = format!("SET_LOG_BASE: dirty log of {size} bytes at offset {offset}: {e}");
                eprintln!("virtwire: port {}: rejected: {why}", self.spec.name);
                self.fatal = Some(why);
                Err(VuError::InvalidParam)
            }
        }
    }
}

impl Drop for NetDevice {
    fn drop(&mut self) {
        self.stop_all();
    }
}
