//! Guest memory: guest-physical regions mapped into this process.
//!
//! This module owns every `unsafe` access to memory that a guest (or any vhost-user peer)
//! shares with us. The rest of the crate sees two things:
//!
//! * [`GuestMemory`]: a set of non-overlapping regions, each a guest-physical range backed
//!   by an `mmap` of a file descriptor (memfd, hugetlbfs, shm) at some offset. It
//!   translates a guest-physical `(addr, len)` into a [`HostSpan`] with one bounds check.
//! * [`HostSpan`]: a checked, host-virtual view of guest bytes. Every load and store goes
//!   through a raw pointer with volatile or byte-copy semantics; we never form a Rust
//!   reference into guest memory because the guest may write it at any moment. Ring code
//!   reads each field once into a local and validates the local.
//!
//! Lifetime rule (the invariant the rest of the crate keeps): a `HostSpan` is only used
//! while the `Arc<GuestMemory>` it was translated from is alive. Queues hold that `Arc`
//! for as long as they hold spans, and [`crate::Burst`] holds it for the segments it
//! hands out, so a memory-table change (vhost-user SET_MEM_TABLE) can never unmap memory
//! that a span still points into: the old mapping lives until its last holder drops it.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU8, Ordering};
use std::sync::Arc;

use crate::error::MemError;

/// Whether the CPU has PREFETCHW (CPUID 8000_0001h ECX bit 8, "3DNowPrefetch"/PRFCHW):
/// 0 unknown, 1 no, 2 yes. Without `-C target-feature=+prfchw` the compiler lowers a
/// write prefetch hint to a plain read prefetch, which brings the line in shared state,
/// and the store that follows pays a second round trip to take ownership. So the
/// instruction is issued directly when the CPU has it.
#[cfg(target_arch = "x86_64")]
static PREFETCHW: AtomicU8 = AtomicU8::new(0);

/// A CPU feature answered once: `flag` holds 0 (not asked yet), 1 (no) or 2 (yes).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn cpu_has(flag: &AtomicU8, detect: fn() -> bool) -> bool {
    match flag.load(Ordering::Relaxed) {
        2 => true,
        1 => false,
        _ => detect_into(flag, detect),
    }
}

#[cfg(target_arch = "x86_64")]
#[cold]
fn detect_into(flag: &AtomicU8, detect: fn() -> bool) -> bool {
    let has = detect();
    flag.store(if has { 2 } else { 1 }, Ordering::Relaxed);
    has
}

/// Whether write prefetches are issued as PREFETCHW on this CPU.
#[cfg(target_arch = "x86_64")]
pub fn has_prefetchw() -> bool {
    cpu_has(&PREFETCHW, || {
        // Leaf 8000_0000h gives the highest extended leaf, checked before 8000_0001h.
        use core::arch::x86_64::__cpuid;
        __cpuid(0x8000_0000).eax >= 0x8000_0001 && __cpuid(0x8000_0001).ecx & (1 << 8) != 0
    })
}

/// Prefetches the cache line at `p` for writing: PREFETCHW (exclusive state) when the
/// CPU has it, else a read prefetch.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_write(p: *const u8) {
    if has_prefetchw() {
        // SAFETY: PREFETCHW is only a hint: it never faults (not even on an unmapped
        // address), writes no register or flag, and the CPU was checked to have it.
        unsafe {
            core::arch::asm!("prefetchw byte ptr [{0}]", in(reg) p, options(nostack, preserves_flags, readonly))
        }
    } else {
        // SAFETY: a prefetch is only a hint and never faults.
        unsafe { core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>()) }
    }
}

/// One guest-physical region mapped into our address space.
#[derive(Debug)]
pub struct Region {
    /// Guest-physical start address.
    gpa: u64,
    /// Length in bytes of the guest-physical range.
    size: u64,
    /// Userspace address the frontend uses for this region (vhost-user "user address"),
    /// used to translate vring addresses given in the frontend's address space.
    user_addr: u64,
    /// Host pointer that corresponds to `gpa`.
    host: NonNull<u8>,
    /// What was passed to mmap (so that Drop can unmap it).
    map_base: NonNull<u8>,
    map_len: usize,
}

// SAFETY: a Region is a plain description of a shared mapping; the pointers it holds are
// only dereferenced through HostSpan accessors, which use volatile/byte-copy semantics
// that are sound under concurrent access from other threads or processes.
unsafe impl Send for Region {}
// SAFETY: see `Send` above; Region has no interior mutability of its own.
unsafe impl Sync for Region {}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: map_base/map_len are exactly what a successful mmap returned and this
        // Region is the only owner of that mapping.
        unsafe {
            libc::munmap(self.map_base.as_ptr().cast(), self.map_len);
        }
    }
}

impl Region {
    /// Guest-physical start address.
    pub fn gpa(&self) -> u64 {
        self.gpa
    }
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// The frontend's userspace address of this region.
    pub fn user_addr(&self) -> u64 {
        self.user_addr
    }
}

/// Description of a region to map, as vhost-user's memory table gives it.
#[derive(Debug, Clone, Copy)]
pub struct RegionSpec {
    /// Guest-physical start address.
    pub gpa: u64,
    /// Size in bytes.
    pub size: u64,
    /// The frontend's userspace address of the region (0 when unused).
    pub user_addr: u64,
    /// Offset into the file where the region starts.
    pub mmap_offset: u64,
}

/// A set of mapped guest-physical regions, sorted by address and non-overlapping.
#[derive(Debug, Default)]
pub struct GuestMemory {
    regions: Vec<Region>,
    /// Where writes are logged while live migration runs (VHOST_F_LOG_ALL).
    log: Option<Arc<DirtyLog>>,
}

/// A host-virtual span of guest memory, produced only by [`GuestMemory::translate`].
///
/// Accessors check offsets against the span length, so a span can never reach outside
/// the range that was validated when it was created.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HostSpan {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a HostSpan is a bounds-checked window into a shared mapping; all accesses are
// volatile or raw byte copies, which are fine from any thread (see the module docs for
// the lifetime rule that keeps the mapping alive).
unsafe impl Send for HostSpan {}
// SAFETY: as for Send.
unsafe impl Sync for HostSpan {}

impl GuestMemory {
    /// An empty memory map (every translation fails).
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `spec.size` bytes of `fd` starting at `spec.mmap_offset` as guest-physical
    /// range `[spec.gpa, spec.gpa + spec.size)` and adds it to the map.
    ///
    /// Like DPDK's vhost library, the mapping starts at file offset 0 and covers
    /// `mmap_offset + size` bytes, so an offset that is not page aligned still works.
    pub fn add_region(&mut self, fd: BorrowedFd<'_>, spec: RegionSpec) -> Result<(), MemError> {
        if spec.size == 0 {
            return Err(MemError::EmptyRegion { gpa: spec.gpa });
        }
        let end = spec
            .gpa
            .checked_add(spec.size)
            .ok_or(MemError::RegionOverflow { gpa: spec.gpa, size: spec.size })?;
        spec.user_addr
            .checked_add(spec.size)
            .ok_or(MemError::RegionOverflow { gpa: spec.user_addr, size: spec.size })?;
        for r in &self.regions {
            if spec.gpa < r.gpa + r.size && r.gpa < end {
                return Err(MemError::Overlap { gpa: spec.gpa, size: spec.size, other: r.gpa });
            }
        }
        let map_len =
            spec.mmap_offset
                .checked_add(spec.size)
                .filter(|l| *l <= isize::MAX as u64)
                .ok_or(MemError::RegionOverflow { gpa: spec.gpa, size: spec.size })? as usize;
        // Refuse fds whose file is too small: touching a page past EOF of a memfd raises
        // SIGBUS, which would let a peer kill us.
        let file_len = fd_len(fd).map_err(|e| MemError::Map { gpa: spec.gpa, source: e })?;
        if let Some(len) = file_len {
            if len < map_len as u64 {
                return Err(MemError::FileTooSmall { gpa: spec.gpa, need: map_len as u64, have: len });
            }
        }
        // SAFETY: we ask the kernel for a fresh shared mapping of a file descriptor we
        // borrow; the result is checked for MAP_FAILED before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_NORESERVE,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(MemError::Map { gpa: spec.gpa, source: io::Error::last_os_error() });
        }
        let map_base = NonNull::new(p.cast::<u8>()).expect("mmap returned null");
        // SAFETY: mmap_offset < map_len, so the pointer stays inside the mapping.
        let host = unsafe { NonNull::new_unchecked(map_base.as_ptr().add(spec.mmap_offset as usize)) };
        let region =
            Region { gpa: spec.gpa, size: spec.size, user_addr: spec.user_addr, host, map_base, map_len };
        let pos = self.regions.partition_point(|r| r.gpa < spec.gpa);
        self.regions.insert(pos, region);
        Ok(())
    }

    /// Removes the region that starts at `gpa` with `size` bytes (vhost-user REM_MEM_REG).
    pub fn remove_region(&mut self, gpa: u64, size: u64) -> Result<(), MemError> {
        let pos = self
            .regions
            .iter()
            .position(|r| r.gpa == gpa && r.size == size)
            .ok_or(MemError::NoSuchRegion { gpa, size })?;
        self.regions.remove(pos);
        Ok(())
    }

    /// Logs every later device write into this memory in `log` (or stops logging).
    pub fn set_log(&mut self, log: Option<Arc<DirtyLog>>) {
        self.log = log;
    }

    /// The dirty log in force, if any.
    #[inline(always)]
    pub fn log(&self) -> Option<&Arc<DirtyLog>> {
        self.log.as_ref()
    }

    /// The regions, in address order.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// Total bytes mapped for guest memory.
    pub fn total_size(&self) -> u64 {
        self.regions.iter().map(|r| r.size).sum()
    }

    /// Translates `[gpa, gpa + len)` to a host span if the whole range lies inside one
    /// region. `hint` is a per-caller last-hit cache of the region index: the common case
    /// costs one comparison pair.
    #[inline]
    pub(crate) fn translate(&self, gpa: u64, len: u64, hint: &mut usize) -> Option<HostSpan> {
        if let Some(r) = self.regions.get(*hint) {
            if let Some(s) = Self::in_region(r, gpa, len) {
                return Some(s);
            }
        }
        self.translate_slow(gpa, len, hint)
    }

    #[cold]
    fn translate_slow(&self, gpa: u64, len: u64, hint: &mut usize) -> Option<HostSpan> {
        let idx = self.regions.partition_point(|r| r.gpa <= gpa).checked_sub(1)?;
        let s = Self::in_region(&self.regions[idx], gpa, len)?;
        *hint = idx;
        Some(s)
    }

    #[inline(always)]
    fn in_region(r: &Region, gpa: u64, len: u64) -> Option<HostSpan> {
        let off = gpa.wrapping_sub(r.gpa);
        // off < size and len <= size - off, written without overflow.
        if gpa >= r.gpa && off < r.size && len <= r.size - off {
            // SAFETY: off < size, and [host, host + size) is inside the mapping.
            let ptr = unsafe { NonNull::new_unchecked(r.host.as_ptr().add(off as usize)) };
            Some(HostSpan { ptr, len: len as usize })
        } else if len == 0 && gpa >= r.gpa && off <= r.size {
            // A zero-length buffer at the very end of a region is harmless.
            // SAFETY: off <= size: at most one past the end, never dereferenced (len 0).
            let ptr = unsafe { NonNull::new_unchecked(r.host.as_ptr().add(off as usize)) };
            Some(HostSpan { ptr, len: 0 })
        } else {
            None
        }
    }

    /// Copies `src` into guest memory at `gpa` (one region must hold the whole range).
    pub fn write(&self, gpa: u64, src: &[u8]) -> Result<(), MemError> {
        let mut h = 0;
        let s = self
            .translate(gpa, src.len() as u64, &mut h)
            .ok_or(MemError::OutOfRange { addr: gpa, len: src.len() as u64 })?;
        s.write_bytes(0, src);
        Ok(())
    }

    /// Copies guest memory at `gpa` into `dst` (one region must hold the whole range).
    pub fn read(&self, gpa: u64, dst: &mut [u8]) -> Result<(), MemError> {
        let mut h = 0;
        let s = self
            .translate(gpa, dst.len() as u64, &mut h)
            .ok_or(MemError::OutOfRange { addr: gpa, len: dst.len() as u64 })?;
        s.read_bytes(0, dst);
        Ok(())
    }

    /// Translates an address in the frontend's userspace (vhost-user vring addresses) to
    /// a guest-physical address.
    pub fn user_to_gpa(&self, uaddr: u64, len: u64) -> Option<u64> {
        self.regions.iter().find_map(|r| {
            let off = uaddr.checked_sub(r.user_addr)?;
            (off < r.size && len <= r.size - off).then_some(r.gpa + off)
        })
    }
}

/// Length of the file behind `fd`, or `None` for kinds of file that have no size.
fn fd_len(fd: BorrowedFd<'_>) -> io::Result<Option<u64>> {
    // SAFETY: fstat writes into a zeroed stat buffer we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd (borrowed) and a valid out-pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if st.st_mode & libc::S_IFMT == libc::S_IFREG {
        Ok(Some(st.st_size as u64))
    } else {
        Ok(None)
    }
}

/// Page size of the vhost-user dirty log: one bit per 4 KiB of guest-physical memory.
pub const LOG_PAGE: u64 = 4096;

/// The dirty-page log a vhost-user frontend shares for live migration
/// (VHOST_USER_SET_LOG_BASE with VHOST_USER_PROTOCOL_F_LOG_SHMFD): bit `n` of the map
/// stands for guest-physical page `n`. While VHOST_F_LOG_ALL is negotiated the device
/// sets the bit of every page it writes (frame data and used-ring updates), so the
/// migration copies that page again. The frontend reads and clears bits concurrently,
/// so bits are set with atomic OR.
#[derive(Debug)]
pub struct DirtyLog {
    map_base: NonNull<u8>,
    map_len: usize,
    log: NonNull<u8>,
    len: usize,
}

// SAFETY: the log is shared memory accessed only through atomic byte operations.
unsafe impl Send for DirtyLog {}
// SAFETY: as for Send.
unsafe impl Sync for DirtyLog {}

impl DirtyLog {
    /// Maps `size` bytes of `fd` at `offset` (mapping from file offset 0, as for memory
    /// regions, so an unaligned offset works).
    pub fn map(fd: BorrowedFd<'_>, size: u64, offset: u64) -> Result<Self, MemError> {
        if size == 0 {
            return Err(MemError::EmptyRegion { gpa: 0 });
        }
        let map_len = offset
            .checked_add(size)
            .filter(|l| *l <= isize::MAX as u64)
            .ok_or(MemError::RegionOverflow { gpa: offset, size })? as usize;
        let file_len = fd_len(fd).map_err(|e| MemError::Map { gpa: 0, source: e })?;
        if let Some(len) = file_len {
            if len < map_len as u64 {
                return Err(MemError::FileTooSmall { gpa: 0, need: map_len as u64, have: len });
            }
        }
        // SAFETY: a fresh shared mapping of a borrowed fd, checked for MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(MemError::Map { gpa: 0, source: io::Error::last_os_error() });
        }
        let map_base = NonNull::new(p.cast::<u8>()).expect("mmap returned null");
        // SAFETY: offset < map_len.
        let log = unsafe { NonNull::new_unchecked(map_base.as_ptr().add(offset as usize)) };
        Ok(Self { map_base, map_len, log, len: size as usize })
    }

    #[inline(always)]
    fn byte(&self, i: usize) -> &AtomicU8 {
        debug_assert!(i < self.len);
        // SAFETY: i < len, inside the mapping, which lives as long as `self`. The byte is
        // shared with another process that reads and clears it: an atomic view is the
        // sound way to read-modify-write it (no plain reference is formed).
        unsafe { AtomicU8::from_ptr(self.log.as_ptr().add(i)) }
    }

    /// Marks every page that `[gpa, gpa + len)` touches as dirty. Pages past the end of
    /// the log are ignored (the frontend sized the log for its memory).
    #[inline]
    pub fn mark(&self, gpa: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = gpa / LOG_PAGE;
        let last = gpa.saturating_add(len - 1) / LOG_PAGE;
        for page in first..=last {
            let i = (page / 8) as usize;
            if i >= self.len {
                break;
            }
            let bit = 1u8 << (page % 8);
            let b = self.byte(i);
            // Skip the locked read-modify-write when the bit is already set.
            if b.load(Ordering::Relaxed) & bit == 0 {
                b.fetch_or(bit, Ordering::Relaxed);
            }
        }
    }

    /// True when the page holding `gpa` is marked.
    pub fn is_marked(&self, gpa: u64) -> bool {
        let page = gpa / LOG_PAGE;
        let i = (page / 8) as usize;
        i < self.len && self.byte(i).load(Ordering::Relaxed) & (1 << (page % 8)) != 0
    }

    /// Size of the bitmap in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty bitmap (never: `map` refuses size 0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for DirtyLog {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping mmap returned; nothing else owns it.
        unsafe {
            libc::munmap(self.map_base.as_ptr().cast(), self.map_len);
        }
    }
}

/// Creates an anonymous shared-memory file of `size` bytes (memfd), as a frontend does
/// for the memory it shares with a vhost-user backend.
pub fn memfd_create(name: &str, size: u64) -> io::Result<OwnedFd> {
    let cname = std::ffi::CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: cname is a valid NUL-terminated string.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: valid fd; ftruncate has no memory-safety preconditions.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

impl HostSpan {
    /// Length of the span in bytes.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-length span.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline(always)]
    fn check(&self, off: usize, n: usize) -> bool {
        off <= self.len && n <= self.len - off
    }

    /// Bounds and natural alignment for an `n`-byte scalar access (`n` a power of two,
    /// at most 8). Ring areas are validated aligned at setup, so this never fails for
    /// them; it keeps a misaligned access impossible rather than undefined.
    #[inline(always)]
    fn check_scalar(&self, off: usize, n: usize) -> bool {
        self.check(off, n) && (self.ptr.as_ptr() as usize + off) & (n - 1) == 0
    }

    /// Reads a little-endian u16 at `off` once. Out-of-range offsets read as 0 (callers
    /// only use offsets they derived from the validated span length).
    #[inline(always)]
    pub fn read_u16(&self, off: usize) -> u16 {
        if !self.check_scalar(off, 2) {
            return 0;
        }
        // SAFETY: [off, off+2) is inside the span; a volatile read through a raw pointer
        // never forms a reference, and any bit pattern is a valid u16.
        u16::from_le(unsafe { self.ptr.as_ptr().add(off).cast::<u16>().read_volatile() })
    }

    /// Reads a little-endian u32 at `off` once.
    #[inline(always)]
    pub fn read_u32(&self, off: usize) -> u32 {
        if !self.check_scalar(off, 4) {
            return 0;
        }
        // SAFETY: in bounds (checked above); volatile raw read.
        u32::from_le(unsafe { self.ptr.as_ptr().add(off).cast::<u32>().read_volatile() })
    }

    /// Reads one 16-byte virtio descriptor at `off` (split and packed share the size)
    /// as `(addr, len, third, fourth)`: for split `(addr, len, flags, next)`, for packed
    /// `(addr, len, id, flags)`. Each field is read exactly once.
    #[inline(always)]
    pub fn read_desc(&self, off: usize) -> (u64, u32, u16, u16) {
        if !self.check_scalar(off, 8) || !self.check(off, 16) {
            return (0, 0, 0, 0);
        }
        // SAFETY: [off, off+16) is in bounds; a 16-byte volatile read of plain integers.
        let raw = unsafe { self.ptr.as_ptr().add(off).cast::<[u64; 2]>().read_volatile() };
        let a = u64::from_le(raw[0]);
        let b = u64::from_le(raw[1]);
        (a, b as u32, (b >> 32) as u16, (b >> 48) as u16)
    }

    /// Writes a little-endian u16 at `off`.
    #[inline(always)]
    pub fn write_u16(&self, off: usize, v: u16) {
        if !self.check_scalar(off, 2) {
            return;
        }
        // SAFETY: in bounds; volatile raw write of plain bytes into shared memory.
        unsafe { self.ptr.as_ptr().add(off).cast::<u16>().write_volatile(v.to_le()) }
    }

    /// Writes a little-endian u32 at `off`.
    #[inline(always)]
    pub fn write_u32(&self, off: usize, v: u32) {
        if !self.check_scalar(off, 4) {
            return;
        }
        // SAFETY: in bounds; volatile raw write.
        unsafe { self.ptr.as_ptr().add(off).cast::<u32>().write_volatile(v.to_le()) }
    }

    /// Writes a little-endian u64 at `off`.
    #[inline(always)]
    pub fn write_u64(&self, off: usize, v: u64) {
        if !self.check_scalar(off, 8) {
            return;
        }
        // SAFETY: in bounds; volatile raw write.
        unsafe { self.ptr.as_ptr().add(off).cast::<u64>().write_volatile(v.to_le()) }
    }

    /// Writes a 16-byte descriptor `(addr, len, third, fourth)` at `off` (see `read_desc`).
    #[inline(always)]
    pub fn write_desc(&self, off: usize, addr: u64, len: u32, c: u16, d: u16) {
        if !self.check_scalar(off, 8) || !self.check(off, 16) {
            return;
        }
        let b = (len as u64) | ((c as u64) << 32) | ((d as u64) << 48);
        // SAFETY: in bounds; volatile raw write of two u64 words.
        unsafe {
            let p = self.ptr.as_ptr().add(off).cast::<u64>();
            p.write_volatile(addr.to_le());
            p.add(1).write_volatile(b.to_le());
        }
    }

    /// Copies bytes out of guest memory starting at `off` into `dst`; returns how many
    /// were copied (short at the end of the span). The bytes are a snapshot: the guest
    /// may change them concurrently, so callers validate what they parse from `dst`.
    #[inline(always)]
    pub fn read_bytes(&self, off: usize, dst: &mut [u8]) -> usize {
        if off >= self.len {
            return 0;
        }
        let n = dst.len().min(self.len - off);
        // SAFETY: source range is in bounds; the destination is our own buffer and cannot
        // overlap guest memory mapped here. Byte copies have no invalid values.
        unsafe { copy_bytes(dst.as_mut_ptr(), self.ptr.as_ptr().add(off), n) }
        n
    }

    /// Hints the CPU to bring the first `lines` cache lines of the span into cache, in
    /// exclusive state when `for_write` (PREFETCHW), so that a later store does not pay a
    /// second ownership request. Issued for a whole burst before copying, so the cache
    /// misses of its buffers overlap instead of being paid one after another.
    #[inline(always)]
    pub fn prefetch(&self, lines: usize, for_write: bool) {
        self.prefetch_lines(0, lines, for_write)
    }

    /// Like [`HostSpan::prefetch`] for lines `from..to` of the span (clipped to it).
    #[inline(always)]
    pub fn prefetch_lines(&self, from: usize, to: usize, for_write: bool) {
        #[cfg(target_arch = "x86_64")]
        {
            use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let to = to.min(self.len.div_ceil(64));
            for i in from..to {
                // The address is inside the span (a prefetch could not fault anyway).
                let p = self.ptr.as_ptr().wrapping_add(i * 64);
                if for_write {
                    prefetch_write(p)
                } else {
                    // SAFETY: a prefetch is only a hint: it never faults and has no
                    // architectural effect.
                    unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>()) }
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (from, to, for_write);
    }

    /// Hints the CPU to bring in, for reading, the cache lines that hold bytes
    /// `off..off + len` of the span (clipped to it): only the lines a reader will
    /// touch, so a header it skips costs no cache miss.
    #[inline(always)]
    pub fn prefetch_range(&self, off: usize, len: usize) {
        #[cfg(target_arch = "x86_64")]
        if off < self.len && len > 0 {
            let base = self.ptr.as_ptr() as usize;
            let end = base + off + len.min(self.len - off);
            let mut line = (base + off) & !63;
            while line < end {
                // SAFETY: a prefetch is only a hint and never faults; `line` is the start
                // of a cache line that holds at least one byte of the span.
                unsafe {
                    core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(line as *const i8)
                }
                line += 64;
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (off, len);
    }

    /// Prefetches the cache line holding byte `off` of the span (for reading).
    #[inline(always)]
    pub fn prefetch_at(&self, off: usize) {
        #[cfg(target_arch = "x86_64")]
        if off < self.len {
            // SAFETY: a prefetch never faults; the address is inside the span.
            unsafe {
                core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                    self.ptr.as_ptr().add(off).cast::<i8>(),
                )
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = off;
    }

    /// Prefetches the cache line holding byte `off` of the span for writing (PREFETCHW).
    #[inline(always)]
    pub fn prefetch_w_at(&self, off: usize) {
        #[cfg(target_arch = "x86_64")]
        if off < self.len {
            prefetch_write(self.ptr.as_ptr().wrapping_add(off));
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = off;
    }

    /// Copies `N` bytes at `off` out of guest memory, or `None` when they do not fit.
    /// A fixed size lets the copy compile to a few wide moves (headers, small frames).
    #[inline(always)]
    pub fn read_array<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        if !self.check(off, N) {
            return None;
        }
        let mut out = [0u8; N];
        // SAFETY: [off, off+N) is in bounds; raw byte copy into our own array.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(off), out.as_mut_ptr(), N) }
        Some(out)
    }

    /// Copies `src` into guest memory at `off`; returns how many bytes were written.
    #[inline(always)]
    pub fn write_bytes(&self, off: usize, src: &[u8]) -> usize {
        if off >= self.len {
            return 0;
        }
        let n = src.len().min(self.len - off);
        // SAFETY: destination range is in bounds of the span; src is our own memory.
        unsafe { copy_bytes(self.ptr.as_ptr().add(off), src.as_ptr(), n) }
        n
    }

    /// Copies `n` bytes from `src` at `src_off` into this span at `off`: one copy from
    /// one guest's memory into another's (or within one guest). Returns bytes copied.
    #[inline(always)]
    pub fn copy_from_span(&self, off: usize, src: &HostSpan, src_off: usize, n: usize) -> usize {
        if off >= self.len || src_off >= src.len {
            return 0;
        }
        let n = n.min(self.len - off).min(src.len - src_off);
        // SAFETY: both ranges are in bounds of their spans. A malicious guest can make two
        // of its own buffers overlap: `copy_bytes` only uses raw unaligned loads and
        // stores, so an overlap yields scrambled bytes for that guest, never UB for us.
        unsafe { copy_bytes(self.ptr.as_ptr().add(off), src.ptr.as_ptr().add(src_off), n) }
        n
    }

    /// Fills `n` bytes at `off` with `byte`.
    pub fn fill(&self, off: usize, byte: u8, n: usize) -> usize {
        if off >= self.len {
            return 0;
        }
        let n = n.min(self.len - off);
        // SAFETY: in bounds of the span.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(off), byte, n) }
        n
    }
}

/// Whether the CPU has AVX2 (checked once): 0 unknown, 1 no, 2 yes.
#[cfg(target_arch = "x86_64")]
static AVX2: AtomicU8 = AtomicU8::new(0);

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn has_avx2() -> bool {
    cpu_has(&AVX2, || std::arch::is_x86_feature_detected!("avx2"))
}

/// [`copy_bytes`] in 32-byte moves.
///
/// # Safety
/// As for [`copy_bytes`], and the CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn copy_avx2(dst: *mut u8, src: *const u8, n: usize) {
    use core::arch::x86_64::{__m256i, _mm256_loadu_si256, _mm256_storeu_si256};
    let mut i = 0;
    // SAFETY (for the whole body): every access is within [0, n) of both pointers, as
    // the caller guarantees, with unaligned loads and stores.
    unsafe {
        while i + 64 <= n {
            let a = _mm256_loadu_si256(src.add(i).cast::<__m256i>());
            let b = _mm256_loadu_si256(src.add(i + 32).cast::<__m256i>());
            _mm256_storeu_si256(dst.add(i).cast::<__m256i>(), a);
            _mm256_storeu_si256(dst.add(i + 32).cast::<__m256i>(), b);
            i += 64;
        }
        if i + 32 <= n {
            let a = _mm256_loadu_si256(src.add(i).cast::<__m256i>());
            _mm256_storeu_si256(dst.add(i).cast::<__m256i>(), a);
            i += 32;
        }
        // The last bytes: one 32-byte move ending at n (n >= 32 here).
        if i < n {
            let a = _mm256_loadu_si256(src.add(n - 32).cast::<__m256i>());
            _mm256_storeu_si256(dst.add(n - 32).cast::<__m256i>(), a);
        }
    }
}

/// Copies of at least this many bytes use 32-byte AVX2 moves when the CPU has them (a
/// 1518-byte frame is then 48 loads and stores instead of 95). Measured in the two-port
/// loop with 1518-byte frames: about 13% fewer cycles per frame than 16-byte moves with
/// the cores near each other, 4% fewer far apart; REP MOVSB, tried too, was 7% better
/// near but 27% worse far (docs/benchmarks.md).
#[cfg(target_arch = "x86_64")]
const WIDE_COPY_MIN: usize = 256;

/// Copies `n` bytes forward with 16-byte unaligned moves, for frame copies into and out
/// of guest memory; from [`WIDE_COPY_MIN`] bytes on, with 32-byte moves.
///
/// glibc's memcpy picks its AVX-512 variant on CPUs that have it. For the small copies of
/// the datapath (frames into guest buffers last written by another core) that variant
/// measured over twice as slow here as plain 16-byte moves (diag "source", 64-byte
/// frames: about 16 against 34 Mpps on the same host), so the datapath uses this routine.
/// An empty `asm!` in the loop keeps the compiler from turning it back into a memcpy call.
///
/// # Safety
/// `src` must be valid for reads and `dst` for writes of `n` bytes. The ranges may
/// overlap (the result is then unspecified bytes, not undefined behaviour).
#[inline(always)]
unsafe fn copy_bytes(dst: *mut u8, src: *const u8, n: usize) {
    #[cfg(target_arch = "x86_64")]
    if n >= WIDE_COPY_MIN && has_avx2() {
        // SAFETY: the caller's guarantees carry over; the CPU has AVX2.
        unsafe { copy_avx2(dst, src, n) };
        return;
    }
    let mut i = 0;
    // SAFETY (for the whole body): every access is within [0, n) of both pointers, as
    // the caller guarantees, and uses unaligned raw loads/stores of plain integers.
    unsafe {
        while i + 64 <= n {
            let a = src.add(i).cast::<[u128; 4]>().read_unaligned();
            dst.add(i).cast::<[u128; 4]>().write_unaligned(a);
            i += 64;
            #[cfg(target_arch = "x86_64")]
            core::arch::asm!("", options(nomem, nostack, preserves_flags));
        }
        while i + 16 <= n {
            let a = src.add(i).cast::<u128>().read_unaligned();
            dst.add(i).cast::<u128>().write_unaligned(a);
            i += 16;
        }
        if i + 8 <= n {
            dst.add(i).cast::<u64>().write_unaligned(src.add(i).cast::<u64>().read_unaligned());
            i += 8;
        }
        if i + 4 <= n {
            dst.add(i).cast::<u32>().write_unaligned(src.add(i).cast::<u32>().read_unaligned());
            i += 4;
        }
        while i < n {
            dst.add(i).write(src.add(i).read());
            i += 1;
        }
    }
}

/// Orders earlier loads of ring memory before later loads (after reading an index or
/// flags that publish data written by the other side).
#[inline(always)]
pub fn acquire() {
    fence(Ordering::Acquire);
}

/// Orders earlier stores before later stores (before publishing an index or flags).
#[inline(always)]
pub fn release() {
    fence(Ordering::Release);
}

/// Full barrier: a store (e.g. enabling notifications) must be visible before a later
/// load (re-checking the ring), as virtio's notification races require.
#[inline(always)]
pub fn full() {
    fence(Ordering::SeqCst);
}

#[cfg(test)]
mod tests {

    /// The CPUID check agrees with what the kernel reports ("3dnowprefetch" is the
    /// kernel's name for the PREFETCHW bit).
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn prefetchw_detection_matches_the_kernel() {
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap();
        let flags = info.lines().find(|l| l.starts_with("flags")).unwrap();
        let kernel = flags.split_whitespace().any(|f| f == "3dnowprefetch");
        assert_eq!(has_prefetchw(), kernel);
        assert_eq!(has_prefetchw(), kernel, "cached answer");
    }

    use super::*;
    use std::os::fd::AsFd;

    fn mem_with(regions: &[(u64, u64)]) -> (GuestMemory, Vec<OwnedFd>) {
        let mut m = GuestMemory::new();
        let mut fds = Vec::new();
        for &(gpa, size) in regions {
            let fd = memfd_create("t", size).unwrap();
            m.add_region(fd.as_fd(), RegionSpec { gpa, size, user_addr: gpa + 0x1000_0000, mmap_offset: 0 })
                .unwrap();
            fds.push(fd);
        }
        (m, fds)
    }

    #[test]
    fn copies_of_every_size_land_whole_and_nowhere_else() {
        // Both copy routines: 16-byte moves below WIDE_COPY_MIN, 32-byte ones from it on.
        let (m, _fds) = mem_with(&[(0, 0x10000)]);
        let mut h = 0;
        let src = m.translate(0, 4096, &mut h).unwrap();
        let dst = m.translate(0x8000, 4096, &mut h).unwrap();
        let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 31 + 7) as u8).collect();
        src.write_bytes(0, &pattern);
        for n in [0, 1, 15, 16, 17, 63, 64, 65, 255, 256, 257, 1518, 4000, 5000] {
            for off in [0, 3, 64] {
                dst.fill(0, 0xee, 4096);
                let c = dst.copy_from_span(off, &src, 5, n);
                assert_eq!(c, n.min(4096 - off).min(4096 - 5), "n {n} off {off}");
                let mut got = vec![0u8; 4096];
                dst.read_bytes(0, &mut got);
                assert!(got[..off].iter().all(|&b| b == 0xee), "n {n} off {off}: before");
                assert_eq!(&got[off..off + c], &pattern[5..5 + c], "n {n} off {off}");
                assert!(got[off + c..].iter().all(|&b| b == 0xee), "n {n} off {off}: after");
            }
        }
    }

    #[test]
    fn translate_inside_and_across_regions() {
        let (m, _fds) = mem_with(&[(0, 0x10000), (0x20000, 0x10000)]);
        let mut hint = 0;
        assert!(m.translate(0, 0x10000, &mut hint).is_some());
        assert!(m.translate(0xfff0, 0x20, &mut hint).is_none(), "crosses end of region 0");
        assert!(m.translate(0x18000, 1, &mut hint).is_none(), "hole between regions");
        let s = m.translate(0x20010, 16, &mut hint).unwrap();
        assert_eq!(hint, 1);
        assert_eq!(s.len(), 16);
        assert!(m.translate(u64::MAX - 4, 16, &mut hint).is_none(), "wraps");
        assert!(m.translate(0x2fff0, u64::MAX, &mut hint).is_none());
    }

    #[test]
    fn overlapping_region_rejected() {
        let (mut m, _fds) = mem_with(&[(0x1000, 0x10000)]);
        let fd = memfd_create("t", 0x10000).unwrap();
        let e = m
            .add_region(fd.as_fd(), RegionSpec { gpa: 0x8000, size: 0x10000, user_addr: 0, mmap_offset: 0 })
            .unwrap_err();
        assert!(matches!(e, MemError::Overlap { .. }), "{e}");
    }

    #[test]
    fn file_too_small_rejected() {
        let mut m = GuestMemory::new();
        let fd = memfd_create("t", 0x1000).unwrap();
        let e = m
            .add_region(fd.as_fd(), RegionSpec { gpa: 0, size: 0x10000, user_addr: 0, mmap_offset: 0 })
            .unwrap_err();
        assert!(matches!(e, MemError::FileTooSmall { .. }), "{e}");
    }

    #[test]
    fn mmap_offset_is_honoured() {
        let fd = memfd_create("t", 0x3000).unwrap();
        let mut a = GuestMemory::new();
        a.add_region(fd.as_fd(), RegionSpec { gpa: 0, size: 0x3000, user_addr: 0, mmap_offset: 0 }).unwrap();
        let mut b = GuestMemory::new();
        b.add_region(
            fd.as_fd(),
            RegionSpec { gpa: 0x100000, size: 0x1000, user_addr: 0, mmap_offset: 0x1800 },
        )
        .unwrap();
        let mut h = 0;
        a.translate(0x1800, 4, &mut h).unwrap().write_u32(0, 0xdeadbeef);
        assert_eq!(b.translate(0x100000, 4, &mut h).unwrap().read_u32(0), 0xdeadbeef);
    }

    #[test]
    fn span_accessors_stay_in_bounds() {
        let (m, _fds) = mem_with(&[(0, 0x1000)]);
        let mut h = 0;
        let s = m.translate(0x10, 8, &mut h).unwrap();
        s.write_u64(0, 0x0102030405060708);
        assert_eq!(s.read_desc(0).0, 0, "a 16-byte read past an 8-byte span reads as zeros");
        assert_eq!(s.read_u32(0), 0x05060708);
        assert_eq!(s.read_u32(8), 0, "out of span reads as 0");
        s.write_u32(6, 0xffffffff); // ignored
        assert_eq!(s.read_u16(6), 0x0102);
        let mut buf = [0u8; 32];
        assert_eq!(s.read_bytes(0, &mut buf), 8);
        assert_eq!(s.read_bytes(9, &mut buf), 0);
    }

    #[test]
    fn user_addresses_translate() {
        let (m, _fds) = mem_with(&[(0, 0x1000), (0x4000, 0x1000)]);
        assert_eq!(m.user_to_gpa(0x1000_4010, 16), Some(0x4010));
        assert_eq!(m.user_to_gpa(0x1000_0ff8, 16), None);
    }

    #[test]
    fn dirty_log_marks_each_touched_page_once() {
        let fd = memfd_create("log", 8).unwrap(); // 64 pages
        let log = DirtyLog::map(fd.as_fd(), 8, 0).unwrap();
        log.mark(0x1fff, 2); // pages 1 and 2
        assert!(!log.is_marked(0));
        assert!(log.is_marked(0x1000) && log.is_marked(0x2000));
        assert!(!log.is_marked(0x3000));
        log.mark(0x5000, 0); // nothing
        assert!(!log.is_marked(0x5000));
        log.mark(63 * 4096, 1 << 20); // runs past the log: clipped, no panic
        assert!(log.is_marked(63 * 4096));
        log.mark(u64::MAX - 10, 100); // wraps: clipped
        let mut bytes = vec![0u8; 8];
        use std::io::Read;
        std::fs::File::from(fd.try_clone().unwrap()).read_exact(&mut bytes).unwrap();
        assert_eq!(bytes[0], 0b0000_0110);
        assert_eq!(bytes[7], 0b1000_0000);
        assert!(DirtyLog::map(fd.as_fd(), 16, 0).is_err(), "log larger than its file accepted");
    }

    #[test]
    fn remove_region() {
        let (mut m, _fds) = mem_with(&[(0, 0x1000), (0x4000, 0x1000)]);
        m.remove_region(0, 0x1000).unwrap();
        let mut h = 0;
        assert!(m.translate(0, 1, &mut h).is_none());
        assert!(m.translate(0x4000, 1, &mut h).is_some());
        assert!(m.remove_region(0, 0x1000).is_err());
    }
}
