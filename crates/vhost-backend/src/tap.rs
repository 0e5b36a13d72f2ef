//! Tap ports: a kernel network interface attached to the switch through /dev/net/tun.
//!
//! The interface is created with IFF_MULTI_QUEUE (one queue per worker that serves it)
//! and IFF_VNET_HDR, so every frame crosses with the same 12-byte virtio-net header a
//! guest uses, and with checksum and segmentation offloads on: the host stack hands
//! over 64 KiB TCP segments with partial checksums, which go to guests that take them
//! as they are. The interface is not persistent: it goes away with the port.

use std::io;
use std::sync::Arc;

use crate::policy::PortPolicy;
use crate::stats::PortStats;
use crate::sys;
use crate::worker::{Ctl, NewPort, PortId, PortKind, Worker};

/// A running tap port.
pub struct TapPort {
    /// Port name.
    pub name: String,
    /// Kernel interface name.
    pub ifname: String,
    /// Counters.
    pub stats: Arc<PortStats>,
    id: PortId,
    worker: Arc<Worker>,
    removed: bool,
}

impl TapPort {
    /// Creates interface `ifname`, sets it up, and attaches it to `worker` as port `id`.
    pub fn start(
        name: &str,
        ifname: &str,
        policy: PortPolicy,
        id: PortId,
        worker: Arc<Worker>,
    ) -> io::Result<TapPort> {
        let (f, tun_offloads) = sys::open_tap_queue(ifname)
            .map_err(|e| io::Error::new(e.kind(), format!("tap {ifname}: {e}")))?;
        // What the kernel may now send us, in virtio-net terms.
        let offloads = netproto::gso::TxOffloads {
            csum: tun_offloads & sys::TUN_F_CSUM != 0,
            tso4: tun_offloads & sys::TUN_F_TSO4 != 0,
            tso6: tun_offloads & sys::TUN_F_TSO6 != 0,
            ecn: tun_offloads & sys::TUN_F_TSO_ECN != 0,
            uso: tun_offloads & sys::TUN_F_USO4 != 0,
            guest_hdrlen: false,
        };
        sys::set_link_up(ifname).map_err(|e| io::Error::new(e.kind(), format!("tap {ifname}: {e}")))?;
        let stats = Arc::new(PortStats::new(1));
        worker.send(Ctl::AddPort(Box::new(NewPort {
            id,
            name: name.to_string(),
            kind: PortKind::Tap { file: f, offloads },
            diag: None,
            frame_size: 64,
            mac: netproto::ethernet::Mac::default(),
            policy,
            coalesce: Default::default(),
            stats: stats.clone(),
        })));
        Ok(TapPort { name: name.to_string(), ifname: ifname.to_string(), stats, id, worker, removed: false })
    }

    /// Port id inside its worker.
    pub fn id(&self) -> PortId {
        self.id
    }

    /// Detaches the port; the interface disappears when the worker drops its queue.
    pub fn shutdown(&mut self) {
        if !self.removed {
            self.removed = true;
            self.worker.send(Ctl::RemovePort { id: self.id });
        }
    }
}

impl Drop for TapPort {
    fn drop(&mut self) {
        self.shutdown();
    }
}
