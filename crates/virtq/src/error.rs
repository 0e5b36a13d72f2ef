//! Errors of the ring engine: one variant per distinct cause, so that a log line or a
//! counter can say exactly what a guest got wrong.

use std::io;

/// Why a memory region could not be mapped or changed.
#[derive(Debug, thiserror::Error)]
pub enum MemError {
    /// A region of zero bytes.
    #[error("region at gpa {gpa:#x} has size 0")]
    EmptyRegion { gpa: u64 },
    /// Address plus size wraps the 64-bit address space.
    #[error("region at gpa {gpa:#x} with size {size:#x} overflows the address space")]
    RegionOverflow { gpa: u64, size: u64 },
    /// The region overlaps one already mapped.
    #[error("region at gpa {gpa:#x} size {size:#x} overlaps the region at gpa {other:#x}")]
    Overlap { gpa: u64, size: u64, other: u64 },
    /// The backing file is shorter than the region (touching it would raise SIGBUS).
    #[error("region at gpa {gpa:#x}: file has {have} bytes, region needs {need}")]
    FileTooSmall { gpa: u64, need: u64, have: u64 },
    /// mmap failed.
    #[error("region at gpa {gpa:#x}: mmap failed: {source}")]
    Map { gpa: u64, source: io::Error },
    /// REM_MEM_REG named a region that is not mapped.
    #[error("no region at gpa {gpa:#x} with size {size:#x}")]
    NoSuchRegion { gpa: u64, size: u64 },
    /// A read or write through the memory map fell outside guest memory.
    #[error("guest address {addr:#x} length {len} is outside guest memory")]
    OutOfRange { addr: u64, len: u64 },
}

/// Why a queue could not be set up.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SetupError {
    /// Queue size zero, not a power of two, or above 32768.
    #[error("queue size {0} is not a power of two between 1 and 32768")]
    BadSize(u32),
    /// A ring area is not aligned as the spec requires.
    #[error("{area} at {addr:#x} is not aligned to {align} bytes")]
    Misaligned { area: &'static str, addr: u64, align: u64 },
    /// A ring area does not lie inside one guest memory region.
    #[error("{area} at {addr:#x} ({len} bytes) is outside guest memory")]
    OutsideMemory { area: &'static str, addr: u64, len: u64 },
}

/// A violation of the virtqueue rules by the other side. Every one of them makes the
/// queue unusable until it is reset; other queues are unaffected.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum RingError {
    /// A buffer's address or length is outside guest memory.
    #[error("descriptor buffer {addr:#x}+{len} is outside guest memory")]
    BufferOutOfRange { addr: u64, len: u32 },
    /// A head or next index is not below the size of its table.
    #[error("descriptor index {index} is out of range for a table of {size}")]
    DescIndexOutOfRange { index: u16, size: u16 },
    /// More descriptors than the table holds: a loop, or a chain longer than the queue.
    #[error("descriptor chain longer than its table ({limit}): looping or too long")]
    ChainTooLong { limit: u32 },
    /// An indirect descriptor inside an indirect table.
    #[error("indirect descriptor inside an indirect table")]
    NestedIndirect,
    /// An indirect table whose length is zero or not a multiple of 16.
    #[error("indirect table length {0} is not a non-zero multiple of 16")]
    IndirectLength(u32),
    /// The indirect table itself lies outside guest memory.
    #[error("indirect table {addr:#x}+{len} is outside guest memory")]
    IndirectOutOfRange { addr: u64, len: u32 },
    /// VIRTQ_DESC_F_INDIRECT and VIRTQ_DESC_F_NEXT together (virtio 1.x 2.7.5.3.1).
    #[error("descriptor has both INDIRECT and NEXT")]
    IndirectWithNext,
    /// VIRTQ_DESC_F_INDIRECT used without VIRTIO_F_INDIRECT_DESC.
    #[error("indirect descriptor without VIRTIO_F_INDIRECT_DESC")]
    IndirectNotNegotiated,
    /// A device-readable descriptor after a device-writable one (virtio 1.x 2.7.4.2).
    #[error("device-readable descriptor after a device-writable one")]
    ReadableAfterWritable,
    /// The avail index moved by more than the queue size.
    #[error("avail index moved from {old} to {new}, more than the queue size {size}")]
    AvailIndexJump { old: u16, new: u16, size: u16 },
    /// The sum of the buffer lengths of a chain does not fit in 32 bits.
    #[error("total length of the descriptor chain overflows 32 bits")]
    LengthOverflow,
    /// Driver side: the device returned a buffer id that is not in flight.
    #[error("device returned buffer id {0}, which the driver never posted")]
    UnknownUsedId(u32),
    /// Driver side: the device claims to have written more than the buffer holds.
    #[error("device wrote {len} bytes into buffer {id} of {cap}")]
    UsedLenTooLarge { id: u16, len: u32, cap: u32 },
    /// Driver side: the used index moved by more than the number of buffers in flight.
    #[error("used index moved by {moved} with only {in_flight} buffers in flight")]
    UsedIndexJump { moved: u16, in_flight: u16 },
}

/// Driver side: why buffers could not be posted (not a fault of the other side).
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum PostError {
    /// Not enough free descriptors or buffer ids.
    #[error("ring is full")]
    Full,
    /// A chain with no buffers.
    #[error("empty chain")]
    Empty,
    /// A buffer that the driver's own memory does not hold.
    #[error("buffer {addr:#x}+{len} is outside the driver's memory")]
    OutOfRange { addr: u64, len: u32 },
    /// A readable buffer after a writable one.
    #[error("readable buffer after a writable one")]
    Order,
    /// Indirect requested but no indirect area configured, or the chain is too long for it.
    #[error("indirect chain of {0} buffers does not fit the indirect area")]
    IndirectTooLong(usize),
}
