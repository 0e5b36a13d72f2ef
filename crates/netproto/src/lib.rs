//! netproto: wire formats as plain values over bytes. No I/O, no guest memory: callers
//! copy bytes in and out. Each format is checked once at the edge.

pub mod ethernet;
pub mod virtio_net;
