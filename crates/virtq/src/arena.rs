//! A driver's own guest memory: one memfd mapped at guest-physical address 0, with a
//! bump allocator for rings and buffers. The virtio-user frontend shares this memory with
//! a vhost-user backend; tests and benchmarks use it to play the guest.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use crate::mem::{memfd_create, GuestMemory, RegionSpec};
use crate::MemError;

/// A memfd-backed guest memory with a bump allocator.
#[derive(Debug)]
pub struct GuestArena {
    mem: Arc<GuestMemory>,
    fd: OwnedFd,
    size: u64,
    next: u64,
}

impl GuestArena {
    /// Creates `size` bytes of shared memory mapped at guest-physical 0 (and, for the
    /// vhost-user memory table, at "user address" `user_addr`).
    pub fn new(size: u64, user_addr: u64) -> Result<Self, MemError> {
        let fd = memfd_create("virtwire-guest", size).map_err(|e| MemError::Map { gpa: 0, source: e })?;
        let mut mem = GuestMemory::new();
        mem.add_region(fd.as_fd(), RegionSpec { gpa: 0, size, user_addr, mmap_offset: 0 })?;
        // Leave the first page unused so that address 0 is never a valid buffer.
        Ok(Self { mem: Arc::new(mem), fd, size, next: 4096 })
    }

    /// The memory map.
    pub fn mem(&self) -> &Arc<GuestMemory> {
        &self.mem
    }

    /// The backing file, to share with a backend.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Allocates `len` bytes aligned to `align` (a power of two); `None` when full.
    pub fn alloc(&mut self, len: u64, align: u64) -> Option<u64> {
        let start = self.next.checked_add(align - 1)? & !(align - 1);
        let end = start.checked_add(len)?;
        if end > self.size {
            return None;
        }
        self.next = end;
        Some(start)
    }
}
