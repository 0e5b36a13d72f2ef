//! virtio-user: a virtio-net driver in userspace that drives a vhost-user backend, like
//! DPDK's virtio-user PMD or QEMU with a guest driver, without a VM.
//!
//! The frontend owns the "guest" memory (a memfd, [`virtq::GuestArena`]) and shares it
//! with the backend in SET_MEM_TABLE; it lays out the virtqueues with
//! [`virtq::DriverQueue`] and runs the virtio-net data path on them. Every vhost-user
//! message goes through rust-vmm's `vhost::vhost_user::Frontend`.
//!
//! ```no_run
//! use virtio_user::{Config, Packet, VirtioUser};
//! let mut dev = VirtioUser::connect("/tmp/vhost.sock", &Config::default())?;
//! let frame = [0u8; 64];
//! dev.tx_burst(0, &[&frame[..]])?;
//! let mut out: Vec<Packet> = (0..32).map(|_| Packet::with_capacity(2048)).collect();
//! let n = dev.rx_burst(0, &mut out)?;
//! dev.shutdown()?;
//! # Ok::<(), virtio_user::Error>(())
//! ```
//!
//! Threads: [`VirtioUser::queue_pairs_mut`] hands out the queue pairs, each `Send`, so
//! one thread can drive each pair; negotiation and shutdown stay with the owner.
//!
//! Notifications: poll mode by default (the driver asks the device not to interrupt);
//! [`QueuePair::wait_rx`] blocks on the receive queue's call eventfd instead.

mod device;
mod error;
pub mod frame;
mod queue;
#[cfg(test)]
mod tests;

pub use device::{
    Config, FrontendListener, Negotiated, VirtioUser, DEFAULT_USER_ADDR, MAX_QUEUE_PAIRS, MIN_RX_BUF_NO_MRG,
};
pub use error::{Error, Result};
pub use queue::{Packet, QueuePair, QueueStats, RxMeta};
pub use virtq::Layout;
