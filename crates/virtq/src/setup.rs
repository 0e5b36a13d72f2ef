//! Checks shared by both ring layouts: translating a ring area, the driver's indirect
//! area, and the buffers a driver posts.

use crate::error::{PostError, SetupError};
use crate::mem::{GuestMemory, HostSpan};
use crate::Buf;

/// Translates one ring area, checking its alignment (virtio 1.x 2.7 / 2.8).
pub(crate) fn map_area(
    mem: &GuestMemory,
    area: &'static str,
    addr: u64,
    len: u64,
    align: u64,
) -> Result<HostSpan, SetupError> {
    if !addr.is_multiple_of(align) {
        return Err(SetupError::Misaligned { area, addr, align });
    }
    let mut hint = 0;
    mem.translate(addr, len, &mut hint).ok_or(SetupError::OutsideMemory { area, addr, len })
}

/// Checks that a driver's indirect area (`per` table entries for each of `size` ids)
/// lies in its memory.
pub(crate) fn check_indirect_area(
    mem: &GuestMemory,
    size: u16,
    indirect: Option<(u64, u16)>,
) -> Result<(), SetupError> {
    if let Some((gpa, per)) = indirect {
        let len = size as u64 * per as u64 * 16;
        map_area(mem, "indirect area", gpa, len, 1)?;
    }
    Ok(())
}

/// Checks the buffers of a chain a driver posts: not empty, inside its memory,
/// readable before writable. Returns the writable capacity.
pub(crate) fn check_bufs(mem: &GuestMemory, hint: &mut usize, bufs: &[Buf]) -> Result<u32, PostError> {
    if bufs.is_empty() {
        return Err(PostError::Empty);
    }
    let mut seen_write = false;
    let mut cap = 0u32;
    for b in bufs {
        if mem.translate(b.addr, b.len as u64, hint).is_none() {
            return Err(PostError::OutOfRange { addr: b.addr, len: b.len });
        }
        if b.writable {
            seen_write = true;
            cap = cap.saturating_add(b.len);
        } else if seen_write {
            return Err(PostError::Order);
        }
    }
    Ok(cap)
}
