//! The system calls of tap devices that std does not wrap: the TUN/TAP ioctls
//! (linux/if_tun.h), interface flags (SIOCGIFFLAGS/SIOCSIFFLAGS), O_NONBLOCK, and the
//! time-stamp counter. Every
//! `unsafe` block of this crate is here.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
const IFF_MULTI_QUEUE: i16 = 0x0100;
const IFF_VNET_HDR: i16 = 0x4000;

/// struct ifreq as the flag ioctls use it: the name, then a 16-bit flags field, padded
/// to the kernel's 40 bytes.
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: i16,
    _pad: [u8; 22],
}

fn ifreq(name: &str) -> io::Result<IfReqFlags> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() >= libc::IFNAMSIZ || b.iter().any(|&c| c == 0 || c == b'/' || c == b' ') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?}: 1-15 characters without '/', spaces or NUL"),
        ));
    }
    let mut r = IfReqFlags { name: [0; libc::IFNAMSIZ], flags: 0, _pad: [0; 22] };
    r.name[..b.len()].copy_from_slice(b);
    Ok(r)
}

fn check(rc: libc::c_int, what: &str) -> io::Result<()> {
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

/// Opens one queue of tap interface `name` (created if absent): no packet-info prefix,
/// a 12-byte virtio-net header in front of every frame, checksum and segmentation
/// offloads on, non-blocking. Returns the queue and the TUN_F_* offloads in force.
pub fn open_tap_queue(name: &str) -> io::Result<(File, u32)> {
    let mut req = ifreq(name)?;
    req.flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| io::Error::new(e.kind(), format!("/dev/net/tun: {e}")))?;
    let fd = f.as_raw_fd();
    // SAFETY: `fd` is an open /dev/net/tun descriptor owned by `f`; TUNSETIFF reads and
    // writes a struct ifreq, and `req` is a live, properly sized one.
    check(unsafe { libc::ioctl(fd, TUNSETIFF, &mut req as *mut IfReqFlags) }, "TUNSETIFF")?;
    let hdr: libc::c_int = 12;
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which is valid.
    check(unsafe { libc::ioctl(fd, TUNSETVNETHDRSZ, &hdr as *const libc::c_int) }, "TUNSETVNETHDRSZ")?;
    // Offloads the switch takes from the kernel (and so the kernel may hand over:
    // partial checksums, TCP and, on kernels that have it, UDP segmentation). Linux
    // before 6.2 refuses the USO bits: then without them.
    let mut offloads = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_USO4 | TUN_F_USO6;
    // SAFETY: TUNSETOFFLOAD takes its argument by value.
    if unsafe { libc::ioctl(fd, TUNSETOFFLOAD, offloads as libc::c_ulong) } < 0 {
        offloads &= !(TUN_F_USO4 | TUN_F_USO6);
        // SAFETY: as above.
        check(unsafe { libc::ioctl(fd, TUNSETOFFLOAD, offloads as libc::c_ulong) }, "TUNSETOFFLOAD")?;
    }
    set_nonblocking(&f)?;
    Ok((f, offloads))
}

/// TUNSETOFFLOAD bits (linux/if_tun.h).
pub const TUN_F_CSUM: u32 = 0x01;
/// TCP over IPv4 segmentation.
pub const TUN_F_TSO4: u32 = 0x02;
/// TCP over IPv6 segmentation.
pub const TUN_F_TSO6: u32 = 0x04;
/// TCP segmentation with ECN.
pub const TUN_F_TSO_ECN: u32 = 0x08;
/// UDP segmentation over IPv4.
pub const TUN_F_USO4: u32 = 0x20;
/// UDP segmentation over IPv6.
pub const TUN_F_USO6: u32 = 0x40;

/// Sets O_NONBLOCK on a file.
pub fn set_nonblocking(f: &File) -> io::Result<()> {
    let fd = f.as_raw_fd();
    // SAFETY: fcntl on a descriptor owned by `f`; F_GETFL/F_SETFL take no pointers.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    check(fl, "F_GETFL")?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) }, "F_SETFL")
}

/// Sets interface `name` administratively up.
pub fn set_link_up(name: &str) -> io::Result<()> {
    // SAFETY: socket() takes no pointers; the result is checked before use.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    check(s, "socket")?;
    // SAFETY: `s` is a descriptor we just opened and own from here on.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    let mut req = ifreq(name)?;
    // SAFETY: SIOCGIFFLAGS fills the flags of a valid struct ifreq.
    check(
        unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req as *mut IfReqFlags) },
        "SIOCGIFFLAGS",
    )?;
    req.flags |= libc::IFF_UP as i16;
    // SAFETY: SIOCSIFFLAGS reads a valid struct ifreq.
    check(
        unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &req as *const IfReqFlags) },
        "SIOCSIFFLAGS",
    )
}

/// The time-stamp counter (cycles at the invariant TSC rate).
#[inline(always)]
pub fn rdtsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: RDTSC reads a counter; it touches no memory and is available on every
    // x86-64 CPU.
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        use std::sync::OnceLock;
        static T0: OnceLock<std::time::Instant> = OnceLock::new();
        T0.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn interface_names_are_checked() {
        assert!(super::ifreq("").is_err());
        assert!(super::ifreq("a-very-long-name0").is_err());
        assert!(super::ifreq("a/b").is_err());
        assert!(super::ifreq("vw-tap0").is_ok());
    }
}
