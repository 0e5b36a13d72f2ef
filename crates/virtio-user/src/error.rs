//! One error type for the frontend: every variant names what failed and, for a
//! vhost-user message, which request it was.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while connecting to, negotiating with, or driving a
/// vhost-user backend.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration asks for something impossible (queue size, buffer size...).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// Connecting to the backend's socket failed (after retrying until the timeout).
    #[error("cannot connect to vhost-user socket {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    /// Creating the listening socket (server mode) or accepting on it failed.
    #[error("cannot accept a vhost-user backend on {path}: {source}")]
    Accept { path: PathBuf, source: io::Error },
    /// No backend connected to our listening socket in time (server mode).
    #[error("no vhost-user backend connected to {path} within {secs} s")]
    AcceptTimeout { path: PathBuf, secs: u64 },
    /// Setting socket options (timeouts) failed.
    #[error("vhost-user socket: {0}")]
    Socket(io::Error),
    /// A vhost-user request failed: the socket broke, the backend answered with an error
    /// (REPLY_ACK value != 0), or its reply was malformed.
    #[error("vhost-user {request} failed: {source}")]
    Request { request: &'static str, source: vhost::Error },
    /// The backend does not offer a virtio feature we need.
    #[error("backend does not offer {feature} (offered virtio features {offered:#x}){hint}")]
    MissingFeature { feature: &'static str, offered: u64, hint: &'static str },
    /// The backend does not offer a vhost-user protocol feature we need.
    #[error("backend does not offer vhost-user protocol feature {feature} (offered {offered:#x}){hint}")]
    MissingProtocolFeature { feature: &'static str, offered: u64, hint: &'static str },
    /// The backend has fewer queue pairs than asked for.
    #[error("backend supports {backend_queues} queue pairs (GET_QUEUE_NUM), {pairs} requested")]
    TooFewQueues { pairs: u16, backend_queues: u64 },
    /// The config space read with GET_CONFIG is shorter than the fields we need.
    #[error("GET_CONFIG returned {got} bytes, expected {want}")]
    ShortConfig { got: usize, want: usize },
    /// Creating the shared guest memory failed.
    #[error("guest memory: {0}")]
    Memory(#[from] virtq::MemError),
    /// The rings and buffers do not fit the guest memory we sized (a bug).
    #[error("guest memory of {size} bytes too small for the rings and buffers")]
    ArenaFull { size: u64 },
    /// A virtqueue could not be laid out.
    #[error("virtqueue {queue}: {source}")]
    Setup { queue: u16, source: virtq::SetupError },
    /// Creating or using an eventfd (kick, call) or the epoll set failed.
    #[error("eventfd: {0}")]
    EventFd(io::Error),
    /// Writing the kick eventfd failed.
    #[error("virtqueue {queue}: kick failed: {source}")]
    Kick { queue: u16, source: io::Error },
    /// The backend broke the virtqueue rules (bad used id, length, index...).
    #[error("virtqueue {queue}: backend broke the ring: {source}")]
    Ring { queue: u16, source: virtq::RingError },
    /// Posting a buffer failed (a bug: slots and descriptors are sized together).
    #[error("virtqueue {queue}: cannot post buffer: {source}")]
    Post { queue: u16, source: virtq::PostError },
    /// A frame larger than a transmit buffer.
    #[error("frame of {len} bytes exceeds the largest transmit frame ({max} bytes)")]
    FrameTooLarge { len: usize, max: usize },
    /// A queue pair index out of range.
    #[error("queue pair {index} does not exist ({pairs} configured)")]
    NoSuchQueuePair { index: usize, pairs: u16 },
    /// The device was already shut down.
    #[error("device already shut down")]
    ShutDown,
}

/// Result with the frontend's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adapter naming the request of a failing vhost-user call.
pub(crate) trait RequestExt<T> {
    fn req(self, request: &'static str) -> Result<T>;
}

impl<T> RequestExt<T> for std::result::Result<T, vhost::Error> {
    fn req(self, request: &'static str) -> Result<T> {
        self.map_err(|source| Error::Request { request, source })
    }
}
