//! Small syscall wrappers: CPU affinity, eventfds, process CPU time, user id. The only `unsafe`
//! in this crate lives here.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Pins the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is its empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes a bit inside the set we own; cpu is bounded by the caller's
    // count of online CPUs (and CPU_SET ignores values past the set size).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: valid pointer to a cpu_set_t of the size we pass; 0 = calling thread.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Number of online CPUs (not limited by the calling thread's affinity).
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n < 1 {
        1
    } else {
        n as usize
    }
}

/// A non-blocking eventfd (kick or call notification).
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// Creates a non-blocking, close-on-exec eventfd.
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd has no memory-safety preconditions.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd nobody else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Adds 1 to the counter (wakes a waiter).
    pub fn notify(&self) -> io::Result<()> {
        let v: u64 = 1;
        // SAFETY: writes 8 bytes from a local u64 to our own fd.
        let r = unsafe { libc::write(self.0.as_raw_fd(), (&v as *const u64).cast(), 8) };
        if r != 8 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// CPU time (user + system) used by this process so far, in seconds.
pub fn process_cpu_seconds() -> f64 {
    // SAFETY: rusage is plain data, filled by getrusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// The effective user id of this process.
pub fn uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
