//! netproto: wire formats as plain values over bytes. No I/O, no guest memory: callers
//! copy bytes in and out. Each format is checked once at the edge.
//!
//! The offload modules serve the virtio-net offloads (virtio 1.x 5.1.6): [`csum`] for
//! Internet checksums, [`parse`] for a frame's L2/L3/L4 layout, [`gso`] for checking a
//! transmitted header and segmenting large frames, [`gro`] for coalescing received
//! TCP segments. [`rss`] hashes a frame's flow for receive-side scaling (5.1.6.4.3).
//! None of them allocates on the per-packet path.

#![forbid(unsafe_code)]

pub mod csum;
pub mod ethernet;
pub mod gro;
pub mod gso;
pub mod parse;
pub mod rss;
pub mod virtio_net;
