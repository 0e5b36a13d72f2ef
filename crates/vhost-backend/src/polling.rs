//! When a worker spins and when it sleeps.
//!
//! * `poll`: always spin, like a DPDK PMD thread: lowest latency, a whole core.
//! * `interrupt`: sleep on the kick eventfds as soon as a round finds nothing, like
//!   vhost-net: no spinning, a wakeup per kick.
//! * `adaptive` (default): after the last work, keep polling for a window, then enable
//!   notifications and sleep. The window adapts the way KVM's halt polling adapts
//!   `halt_poll_ns` (virt/kvm/kvm_main.c, grow_halt_poll_ns/shrink_halt_poll_ns): a
//!   sleep that ended within the maximum window means polling a little longer would
//!   have caught the work without a wakeup, so the window doubles (from a start
//!   value); a sleep longer than the maximum means the traffic has gaps no window
//!   would bridge, so it halves. While it spins, the worker checks about every 100 us
//!   whether another thread is waiting for a CPU (more runnable threads than online
//!   CPUs, from the fourth field of /proc/loadavg): if so it stops spinning at once and
//!   halves its window, so a vCPU or a compile sharing its core gets it back.
//!   With `adaptive_window` off the window stays at its maximum: the worker still
//!   sleeps after it and still yields, but never grows or shrinks it.

use std::time::Duration;

/// The polling mode of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PollMode {
    /// Always spin.
    Poll,
    /// Spin for an adaptive window after the last work, then sleep.
    #[default]
    Adaptive,
    /// Sleep whenever a round finds nothing.
    Interrupt,
}

impl std::str::FromStr for PollMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "poll" => Ok(PollMode::Poll),
            "adaptive" => Ok(PollMode::Adaptive),
            "interrupt" => Ok(PollMode::Interrupt),
            _ => Err(format!("unknown polling mode {s:?} (expected poll, adaptive or interrupt)")),
        }
    }
}

/// A worker's polling configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollConfig {
    /// The mode.
    pub mode: PollMode,
    /// Largest adaptive window.
    pub max_window: Duration,
    /// Where a growing window starts.
    pub start_window: Duration,
    /// Adapt the window (adaptive mode); false keeps it at `max_window`.
    pub adaptive_window: bool,
    /// Yield to other runnable threads (adaptive mode).
    pub yield_to_others: bool,
    /// How long a unicast frame may wait in its sender's transmit ring for the
    /// receiver to post a buffer before it is dropped (zero: never wait).
    pub backpressure: Duration,
    /// Most frames taken from a transmit ring, or receive buffers popped, at once
    /// (1..=32; 32 by default).
    pub burst: usize,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            mode: PollMode::Adaptive,
            max_window: Duration::from_micros(200),
            start_window: Duration::from_micros(10),
            adaptive_window: true,
            yield_to_others: true,
            backpressure: Duration::from_micros(500),
            burst: 32,
        }
    }
}

/// The adaptive window.
#[derive(Debug, Clone)]
pub struct Window {
    cfg: PollConfig,
    cur: Duration,
}

impl Window {
    /// A window for `cfg`, starting at the start value.
    pub fn new(cfg: PollConfig) -> Window {
        let cur = match cfg.mode {
            PollMode::Interrupt => Duration::ZERO,
            _ if !cfg.adaptive_window => cfg.max_window,
            _ => cfg.start_window.min(cfg.max_window),
        };
        Window { cfg, cur }
    }

    /// The configuration.
    pub fn config(&self) -> PollConfig {
        self.cfg
    }

    /// How long to keep spinning after the last work (None: forever).
    pub fn current(&self) -> Option<Duration> {
        match self.cfg.mode {
            PollMode::Poll => None,
            PollMode::Interrupt => Some(Duration::ZERO),
            PollMode::Adaptive => Some(self.cur),
        }
    }

    /// After a sleep: `idle` is the time from the last work to the wakeup that
    /// brought new work.
    pub fn after_sleep(&mut self, idle: Duration) {
        if self.cfg.mode != PollMode::Adaptive || !self.cfg.adaptive_window {
            return;
        }
        if idle <= self.cfg.max_window {
            self.cur = (self.cur * 2).max(self.cfg.start_window).min(self.cfg.max_window);
        } else {
            self.shrink();
        }
    }

    /// Another thread wanted the CPU while we spun (the caller stops spinning either
    /// way; a fixed window keeps its size for the next time).
    pub fn shrink(&mut self) {
        if !self.cfg.adaptive_window {
            return;
        }
        self.cur /= 2;
        if self.cur < self.cfg.start_window / 2 {
            self.cur = Duration::ZERO;
        }
    }
}

/// Interrupt coalescing of one port, with the meaning of the virtio-net
/// VIRTIO_NET_CTRL_NOTF_COAL_RX_SET / _TX_SET parameters (virtio 1.3 5.1.6.5.6) and of
/// `ethtool -C` rx-usecs/rx-frames/tx-usecs/tx-frames: a used-buffer notification the
/// driver asked for is sent once `frames` buffers were used since the first one it
/// covers, or `usecs` after that first one, whichever comes first. `rx` is the guest's
/// receive queues, `tx` its transmit queues. All zero (the default): every notification
/// is sent at the end of its burst. QEMU keeps the control queue of a vhost-user
/// device, so these come from the port's configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Coalesce {
    /// Receive queues: most microseconds a notification waits.
    pub rx_usecs: u32,
    /// Receive queues: buffers that trigger it.
    pub rx_frames: u32,
    /// Transmit queues: most microseconds a notification waits.
    pub tx_usecs: u32,
    /// Transmit queues: buffers that trigger it.
    pub tx_frames: u32,
}

impl Coalesce {
    /// (usecs, frames) for ring `ring` of a virtio-net device (even: receive).
    pub fn for_ring(&self, ring: usize) -> (u32, u32) {
        if ring.is_multiple_of(2) {
            (self.rx_usecs, self.rx_frames)
        } else {
            (self.tx_usecs, self.tx_frames)
        }
    }
}

/// True when more threads are runnable than there are online CPUs (someone waits for
/// a CPU). Reads /proc/loadavg ("0.00 0.01 0.05 R/T last_pid": R counts running and
/// runnable threads, ourselves included).
pub fn cpu_contended(online_cpus: usize) -> bool {
    let Ok(s) = std::fs::read_to_string("/proc/loadavg") else { return false };
    let running = s.split_whitespace().nth(3).and_then(|f| f.split('/').next()).and_then(|r| r.parse().ok());
    running.is_some_and(|r: usize| r > online_cpus)
}

/// CPUs online in the whole system, the bound [`cpu_contended`] compares the
/// system-wide runnable count with (/sys/devices/system/cpu/online, e.g. "0-3,6").
/// Not the CPUs this process may use: a switch pinned to one CPU would otherwise see
/// a waiting thread whenever any other CPU is busy, and stop spinning at once every
/// time it checks.
pub fn online_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| cpu_list_len(s.trim()))
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

/// How many CPUs a kernel CPU list ("0-3,6,8-9") names; None when it does not parse.
fn cpu_list_len(s: &str) -> Option<usize> {
    let mut n = 0;
    for part in s.split(',') {
        n += match part.split_once('-') {
            Some((a, b)) => b.parse::<usize>().ok()?.checked_sub(a.parse::<usize>().ok()?)? + 1,
            None => part.parse::<usize>().map(|_| 1).ok()?,
        };
    }
    (n > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn window_grows_on_short_sleeps_and_shrinks_on_long_ones() {
        let mut w = Window::new(PollConfig::default());
        assert_eq!(w.current(), Some(us(10)));
        w.after_sleep(us(60));
        assert_eq!(w.current(), Some(us(20)));
        for _ in 0..10 {
            w.after_sleep(us(150));
        }
        assert_eq!(w.current(), Some(us(200)), "capped at the maximum");
        w.after_sleep(Duration::from_millis(5));
        assert_eq!(w.current(), Some(us(100)));
        for _ in 0..10 {
            w.after_sleep(Duration::from_secs(1));
        }
        assert_eq!(w.current(), Some(Duration::ZERO), "idle traffic: no spinning at all");
        w.after_sleep(us(3));
        assert_eq!(w.current(), Some(us(10)), "grows again from the start value");
    }

    #[test]
    fn a_fixed_window_stays_at_the_maximum() {
        let cfg = PollConfig { adaptive_window: false, max_window: us(150), ..Default::default() };
        let mut w = Window::new(cfg);
        assert_eq!(w.current(), Some(us(150)), "starts at the maximum, not the start value");
        w.after_sleep(us(3));
        assert_eq!(w.current(), Some(us(150)));
        for _ in 0..10 {
            w.after_sleep(Duration::from_secs(1));
            w.shrink();
        }
        assert_eq!(w.current(), Some(us(150)), "neither long sleeps nor yields shrink it");
        // The other modes ignore the knob.
        let poll = Window::new(PollConfig { mode: PollMode::Poll, ..cfg });
        assert_eq!(poll.current(), None);
        let irq = Window::new(PollConfig { mode: PollMode::Interrupt, ..cfg });
        assert_eq!(irq.current(), Some(Duration::ZERO));
    }

    #[test]
    fn modes() {
        let poll = Window::new(PollConfig { mode: PollMode::Poll, ..Default::default() });
        assert_eq!(poll.current(), None);
        let mut irq = Window::new(PollConfig { mode: PollMode::Interrupt, ..Default::default() });
        irq.after_sleep(us(1));
        assert_eq!(irq.current(), Some(Duration::ZERO));
        assert_eq!("adaptive".parse::<PollMode>(), Ok(PollMode::Adaptive));
        assert!("busy".parse::<PollMode>().unwrap_err().contains("poll, adaptive or interrupt"));
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(cpu_list_len("0-1"), Some(2));
        assert_eq!(cpu_list_len("0"), Some(1));
        assert_eq!(cpu_list_len("0-3,6,8-9"), Some(7));
        assert_eq!(cpu_list_len(""), None);
        assert_eq!(cpu_list_len("3-1"), None);
        assert_eq!(cpu_list_len("a-b"), None);
        // The system's CPUs, whatever this process's affinity.
        assert!(online_cpus() >= std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    }

    #[test]
    fn loadavg_is_readable() {
        // One CPU per runnable thread this test can see is a bound it cannot exceed by
        // itself: with a huge CPU count nobody is ever waiting.
        assert!(!cpu_contended(1 << 20));
    }
}
