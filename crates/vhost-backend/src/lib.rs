//! vhost-backend: virtwire serves virtio-net devices to VMs over vhost-user.
//!
//! * [`device`]: the vhost-user protocol handler of one port (feature negotiation,
//!   memory table, each ring's lifecycle), built on rust-vmm's `vhost` crate for framing.
//! * [`worker`]: the datapath thread that owns running rings and moves frames.
//! * [`server`]: a port's connection loop (server or client mode, reconnecting).
//! * [`tap`]: tap ports (a kernel interface through /dev/net/tun).
//! * [`fdb`], [`policy`]: the switch's learning table, VLANs and address filters.
//!
//! The control plane (device) and the datapath (worker) meet at one narrow interface:
//! messages ([`worker::Ctl`]) that hand a ready ring to the worker or take it back.

pub mod device;
mod diag;
pub mod fdb;
mod forward;
pub mod offload;
pub mod policy;
pub mod polling;
pub mod server;
pub mod stats;
mod sys;
pub mod tap;
pub mod worker;

pub use device::{DiagMode, PortSpec};
pub use fdb::FdbConfig;
pub use policy::{PortPolicy, VlanMode, VlanSet};
pub use polling::{PollConfig, PollMode};
pub use server::{Port, SocketMode};
pub use stats::{PortStats, WorkerStats};
pub use tap::TapPort;
pub use worker::{FdbRecord, Worker};
