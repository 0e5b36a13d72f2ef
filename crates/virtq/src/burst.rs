//! A burst of validated descriptor chains, and the views through which callers read and
//! write the buffers of a chain.
//!
//! Per-queue memory stays small: a burst keeps one flat segment array shared by all its
//! chains (typically 1-2 segments each for virtio-net), allocated once for the burst
//! size and grown out of line only when a guest posts longer chains. Chains are indices
//! into it. The burst holds the `Arc<GuestMemory>` its segments point into, so no
//! segment can outlive its mapping.

use std::sync::Arc;

use crate::mem::{DirtyLog, GuestMemory, HostSpan};
use crate::Token;

/// One buffer of a chain: a translated guest-physical range.
#[derive(Debug)]
pub struct Seg {
    pub(crate) span: HostSpan,
    pub(crate) gpa: u64,
}

impl Seg {
    /// Guest-physical address of the buffer.
    #[inline]
    pub fn gpa(&self) -> u64 {
        self.gpa
    }
    /// Length of the buffer in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.span.len()
    }
    /// True for a zero-length buffer.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.span.is_empty()
    }
    /// Copies `N` bytes at `off`, or `None` when the buffer is shorter.
    #[inline(always)]
    pub fn read_array<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        self.span.read_array(off)
    }
    /// Copies bytes from the buffer at `off` into `dst` (a snapshot the guest may be
    /// changing: validate what you parse). Returns bytes copied.
    #[inline]
    pub fn read(&self, off: usize, dst: &mut [u8]) -> usize {
        self.span.read_bytes(off, dst)
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct ChainInfo {
    pub(crate) token: Token,
    pub(crate) seg_start: u32,
    pub(crate) nread: u16,
    pub(crate) nwrite: u16,
    pub(crate) read_len: u32,
    pub(crate) write_len: u32,
}

/// A burst of chains popped from one queue.
#[derive(Debug)]
pub struct Burst {
    mem: Option<Arc<GuestMemory>>,
    /// `mem`'s dirty log, kept here so that a chain view finds it in one load.
    log: Option<Arc<DirtyLog>>,
    pub(crate) chains: Vec<ChainInfo>,
    pub(crate) segs: Vec<Seg>,
    cap: usize,
}

impl Burst {
    /// A burst that holds up to `max_chains` chains without allocating for chains of up
    /// to four buffers each.
    pub fn with_capacity(max_chains: usize) -> Self {
        let cap = max_chains.max(1);
        Self { mem: None, log: None, chains: Vec::with_capacity(cap), segs: Vec::with_capacity(cap * 4), cap }
    }

    /// Bytes a burst of `max_chains` takes, its preallocated arrays included.
    pub fn footprint(max_chains: usize) -> usize {
        let cap = max_chains.max(1);
        std::mem::size_of::<Burst>()
            + cap * std::mem::size_of::<ChainInfo>()
            + cap * 4 * std::mem::size_of::<Seg>()
    }

    /// Maximum number of chains one pop puts here.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Number of chains in the burst.
    #[inline]
    pub fn len(&self) -> usize {
        self.chains.len()
    }

    /// True when the last pop found nothing.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty()
    }

    /// Chain `i` of the burst.
    #[inline]
    pub fn chain(&self, i: usize) -> Chain<'_> {
        let info = &self.chains[i];
        let start = info.seg_start as usize;
        let end = start + info.nread as usize + info.nwrite as usize;
        let log = self.log.as_deref();
        Chain { info, segs: &self.segs[start..end], log }
    }

    /// Prefetches the start of every chain's first buffers: call once after a pop and
    /// before touching frame bytes, so the burst's cache misses overlap.
    #[inline]
    pub fn prefetch(&self, lines: usize) {
        for i in 0..self.len() {
            self.chain(i).prefetch(lines);
        }
    }

    /// Iterates over the chains.
    pub fn iter(&self) -> impl Iterator<Item = Chain<'_>> {
        (0..self.len()).map(move |i| self.chain(i))
    }

    /// The tokens of all chains, for completing them.
    pub fn tokens(&self) -> impl Iterator<Item = Token> + '_ {
        self.chains.iter().map(|c| c.token)
    }

    /// Empties the burst and pins the memory map its next segments will point into.
    #[inline]
    pub(crate) fn reset(&mut self, mem: &Arc<GuestMemory>) {
        self.chains.clear();
        self.segs.clear();
        match &self.mem {
            Some(m) if Arc::ptr_eq(m, mem) => {}
            _ => {
                self.mem = Some(mem.clone());
                self.log = mem.log().cloned();
            }
        }
    }
}

/// A validated descriptor chain: device-readable buffers first, then device-writable.
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a> {
    info: &'a ChainInfo,
    segs: &'a [Seg],
    /// Where writes into the chain are logged during live migration.
    log: Option<&'a DirtyLog>,
}

impl<'a> Chain<'a> {
    /// What to pass to `add_used` to complete this chain.
    #[inline]
    pub fn token(&self) -> Token {
        self.info.token
    }
    /// Buffer id of the chain.
    #[inline]
    pub fn id(&self) -> u16 {
        self.info.token.id
    }
    /// The device-readable buffers.
    #[inline]
    pub fn readable(&self) -> &'a [Seg] {
        &self.segs[..self.info.nread as usize]
    }
    /// The device-writable buffers.
    #[inline]
    pub fn writable(&self) -> &'a [Seg] {
        &self.segs[self.info.nread as usize..]
    }
    /// Total bytes of the readable buffers.
    #[inline]
    pub fn read_len(&self) -> u32 {
        self.info.read_len
    }
    /// Total bytes of the writable buffers.
    #[inline]
    pub fn write_len(&self) -> u32 {
        self.info.write_len
    }

    /// Prefetches the first `lines` cache lines of the chain's first readable and first
    /// writable buffer (see [`Burst::prefetch`]).
    #[inline(always)]
    pub fn prefetch(&self, lines: usize) {
        if let Some(s) = self.readable().first() {
            s.span.prefetch(lines, false);
        }
        if let Some(s) = self.writable().first() {
            s.span.prefetch(lines, true);
        }
    }

    /// Prefetches the lines of readable bytes `off..off + len` that lie in the chain's
    /// first readable buffer.
    #[inline(always)]
    pub fn prefetch_read(&self, off: usize, len: usize) {
        if let Some(s) = self.readable().first() {
            s.span.prefetch_range(off, len);
        }
    }

    /// Prefetches, for writing, cache lines `from..to` of the chain's first writable
    /// buffer (clipped to it).
    #[inline]
    pub fn prefetch_write_lines(&self, from: usize, to: usize) {
        if let Some(s) = self.writable().first() {
            s.span.prefetch_lines(from, to, true);
        }
    }

    /// Gathers readable bytes starting at byte `off` of the chain into `dst`. Returns
    /// bytes copied.
    pub fn read_at(&self, mut off: usize, dst: &mut [u8]) -> usize {
        let mut done = 0;
        for s in self.readable() {
            if done == dst.len() {
                break;
            }
            if off >= s.len() {
                off -= s.len();
                continue;
            }
            done += s.span.read_bytes(off, &mut dst[done..]);
            off = 0;
        }
        done
    }

    /// Scatters `src` into the writable buffers starting at byte `off` of the writable
    /// part. Returns bytes written (short when the buffers are too small).
    pub fn write_at(&self, mut off: usize, src: &[u8]) -> usize {
        let mut done = 0;
        for s in self.writable() {
            if done == src.len() {
                break;
            }
            if off >= s.len() {
                off -= s.len();
                continue;
            }
            let n = s.span.write_bytes(off, &src[done..]);
            if let Some(l) = self.log {
                l.mark(s.gpa + off as u64, n as u64);
            }
            done += n;
            off = 0;
        }
        done
    }

    /// Writes `hdr` and then `n` readable bytes of `src` (from its byte `src_off`) at the
    /// start of this chain's first writable buffer, when that buffer holds both and the
    /// bytes lie in `src`'s first readable buffer: the usual frame of one buffer on
    /// each side, without walking segment lists. Returns the bytes written, or `None`,
    /// having written nothing, for any other layout.
    #[inline(always)]
    pub fn put_copy(&self, hdr: &[u8], src: &Chain<'_>, src_off: usize, n: usize) -> Option<usize> {
        let d = self.writable().first()?;
        let s = src.readable().first()?;
        let total = hdr.len() + n;
        if d.len() < total || src_off > s.len() || n > s.len() - src_off {
            return None;
        }
        d.span.write_bytes(0, hdr);
        d.span.copy_from_span(hdr.len(), &s.span, src_off, n);
        if let Some(l) = self.log {
            l.mark(d.gpa, total as u64);
        }
        Some(total)
    }

    /// Like [`Chain::put_copy`] with the frame bytes in host memory.
    #[inline(always)]
    pub fn put_bytes(&self, hdr: &[u8], bytes: &[u8]) -> Option<usize> {
        let d = self.writable().first()?;
        let total = hdr.len() + bytes.len();
        if d.len() < total {
            return None;
        }
        d.span.write_bytes(0, hdr);
        d.span.write_bytes(hdr.len(), bytes);
        if let Some(l) = self.log {
            l.mark(d.gpa, total as u64);
        }
        Some(total)
    }

    /// Copies up to `n` readable bytes of `src` (from its byte `src_off`) into this
    /// chain's writable part at `off`: one copy from guest memory to guest memory.
    /// Returns bytes copied.
    pub fn copy_from(&self, mut off: usize, src: &Chain<'_>, src_off: usize, n: usize) -> usize {
        let rsegs = src.readable();
        let (mut si, mut soff) = (0, src_off);
        let mut done = 0;
        for d in self.writable() {
            if off >= d.len() {
                off -= d.len();
                continue;
            }
            while off < d.len() && done < n {
                // Skip exhausted (or empty) source segments.
                while si < rsegs.len() && soff >= rsegs[si].len() {
                    soff -= rsegs[si].len();
                    si += 1;
                }
                if si == rsegs.len() {
                    return done;
                }
                let c = d.span.copy_from_span(off, &rsegs[si].span, soff, n - done);
                if let Some(l) = self.log {
                    l.mark(d.gpa + off as u64, c as u64);
                }
                done += c;
                off += c;
                soff += c;
            }
            if done == n {
                break;
            }
            off = 0;
        }
        done
    }
}

/// Builds one chain into a burst while enforcing the rules every layout shares:
/// readable buffers before writable ones, total length within 32 bits, every buffer
/// inside guest memory.
pub(crate) struct ChainAcc {
    seg_start: u32,
    nread: u16,
    nwrite: u16,
    read_len: u32,
    write_len: u32,
}

impl ChainAcc {
    #[inline(always)]
    pub(crate) fn new(burst: &Burst) -> Self {
        Self { seg_start: burst.segs.len() as u32, nread: 0, nwrite: 0, read_len: 0, write_len: 0 }
    }

    #[inline(always)]
    pub(crate) fn add(
        &mut self,
        burst: &mut Burst,
        mem: &GuestMemory,
        hint: &mut usize,
        addr: u64,
        len: u32,
        writable: bool,
    ) -> Result<(), crate::RingError> {
        use crate::RingError;
        if writable {
            self.write_len = self.write_len.checked_add(len).ok_or(RingError::LengthOverflow)?;
            self.nwrite = self.nwrite.wrapping_add(1);
        } else {
            if self.nwrite != 0 {
                return Err(RingError::ReadableAfterWritable);
            }
            self.read_len = self.read_len.checked_add(len).ok_or(RingError::LengthOverflow)?;
            self.nread = self.nread.wrapping_add(1);
        }
        self.read_len.checked_add(self.write_len).ok_or(RingError::LengthOverflow)?;
        let span = mem.translate(addr, len as u64, hint).ok_or(RingError::BufferOutOfRange { addr, len })?;
        burst.segs.push(Seg { span, gpa: addr });
        Ok(())
    }

    /// A chain of one buffer, translated by the caller: what `new`, `add` and `finish`
    /// would record for it.
    #[inline(always)]
    pub(crate) fn single(burst: &mut Burst, span: HostSpan, gpa: u64, writable: bool, token: Token) {
        let seg_start = burst.segs.len() as u32;
        let len = span.len() as u32;
        burst.segs.push(Seg { span, gpa });
        let (nread, nwrite, read_len, write_len) = if writable { (0, 1, 0, len) } else { (1, 0, len, 0) };
        burst.chains.push(ChainInfo { token, seg_start, nread, nwrite, read_len, write_len });
    }

    #[inline(always)]
    pub(crate) fn finish(self, burst: &mut Burst, token: Token) {
        burst.chains.push(ChainInfo {
            token,
            seg_start: self.seg_start,
            nread: self.nread,
            nwrite: self.nwrite,
            read_len: self.read_len,
            write_len: self.write_len,
        });
    }

    /// Drops the segments of a chain that failed validation.
    pub(crate) fn abort(self, burst: &mut Burst) {
        burst.segs.truncate(self.seg_start as usize);
    }
}
