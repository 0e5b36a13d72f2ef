//! The MAC learning table (forwarding database): (VLAN, MAC) -> port, O(1) per lookup.
//!
//! A hash table that grows with the number of stations (no fixed array), keyed by a
//! seeded multiply-fold hash so that a guest choosing its source addresses cannot aim
//! them at one bucket. Entries age out after `aging_secs` without a frame from that
//! station; a station seen on another port moves there.
//!
//! **At the caps.** A port that owns `max_per_port` entries learns no more addresses, and
//! nor does anyone once the table holds `max_entries`. Nothing is evicted to make room:
//! a guest flooding random source MACs fills its own quota and stops there, every other
//! station keeps its entry. Frames from an address that was not learned are still
//! forwarded; frames *to* it are flooded, as for any unknown destination, until aging
//! frees room. Each refusal is counted ([`FdbStats`]).
//!
//! Only the worker that owns the table touches it; the control plane reads it by message.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use netproto::ethernet::Mac;

use crate::stats::{FdbStats, PortStats};

/// A port's slot in its worker (stable while the port exists).
pub type Slot = u16;

/// Table limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbConfig {
    /// Most entries in the table.
    pub max_entries: usize,
    /// Most entries one port may own.
    pub max_per_port: usize,
    /// Seconds without a frame after which an entry is forgotten.
    pub aging_secs: u32,
}

impl Default for FdbConfig {
    /// The limits of a typical hardware or OVS bridge: 8192 stations, 300 s aging, and
    /// a per-port share of 1024.
    fn default() -> Self {
        FdbConfig { max_entries: 8192, max_per_port: 1024, aging_secs: 300 }
    }
}

/// One entry as the control plane sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbEntry {
    /// VLAN (0: the default, untagged VLAN).
    pub vlan: u16,
    /// Station address.
    pub mac: Mac,
    /// The port's slot.
    pub slot: Slot,
    /// Seconds since the station last sent a frame.
    pub age_secs: u32,
}

#[derive(Clone, Copy)]
struct Entry {
    slot: Slot,
    seen: u32,
}

/// Hashes the one u64 key with a per-table random seed: a 64x64->128 multiply folded to
/// 64 bits (the mixing step of wyhash/foldhash), two multiplies in all.
#[derive(Clone, Copy)]
pub struct KeyHash {
    seed: u64,
}

/// The hasher built by [`KeyHash`].
pub struct KeyHasher {
    seed: u64,
    h: u64,
}

#[inline(always)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = (a as u128) * (b as u128);
    (p as u64) ^ ((p >> 64) as u64)
}

impl BuildHasher for KeyHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher { seed: self.seed, h: 0 }
    }
}

impl Hasher for KeyHasher {
    #[inline(always)]
    fn write_u64(&mut self, k: u64) {
        self.h = fold_mul(fold_mul(k ^ self.seed, 0x9e37_79b9_7f4a_7c15), self.seed | 1);
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(self.h ^ *b as u64);
        }
    }
    #[inline(always)]
    fn finish(&self) -> u64 {
        self.h
    }
}

fn random_seed() -> u64 {
    use std::hash::BuildHasher as _;
    std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64)
}

#[inline(always)]
fn key(vlan: u16, mac: &Mac) -> u64 {
    let m = &mac.0;
    (vlan as u64) << 48
        | (m[0] as u64) << 40
        | (m[1] as u64) << 32
        | (m[2] as u64) << 24
        | (m[3] as u64) << 16
        | (m[4] as u64) << 8
        | m[5] as u64
}

/// The learning table.
pub struct Fdb {
    map: HashMap<u64, Entry, KeyHash>,
    per_port: Vec<u32>,
    cfg: FdbConfig,
    stats: Arc<FdbStats>,
}

impl Fdb {
    /// An empty table.
    pub fn new(cfg: FdbConfig, stats: Arc<FdbStats>) -> Fdb {
        let map = HashMap::with_capacity_and_hasher(256, KeyHash { seed: random_seed() });
        Fdb { map, per_port: Vec::new(), cfg, stats }
    }

    /// Its limits.
    pub fn config(&self) -> FdbConfig {
        self.cfg
    }

    /// Changes the limits (entries above a new cap stay until they age out).
    pub fn set_config(&mut self, cfg: FdbConfig) {
        self.cfg = cfg;
    }

    /// Entries in the table.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn count(&mut self, slot: Slot) -> &mut u32 {
        let i = slot as usize;
        if self.per_port.len() <= i {
            self.per_port.resize(i + 1, 0);
        }
        &mut self.per_port[i]
    }

    /// Records that `mac` on `vlan` sent a frame through `slot` at time `now` (seconds).
    #[inline]
    pub fn learn(&mut self, vlan: u16, mac: &Mac, slot: Slot, now: u32) {
        let k = key(vlan, mac);
        if let Some(e) = self.map.get_mut(&k) {
            if e.slot == slot {
                if e.seen != now {
                    e.seen = now;
                }
                return;
            }
            self.relearn(k, slot, now);
            return;
        }
        self.insert(k, slot, now);
    }

    #[cold]
    fn relearn(&mut self, k: u64, slot: Slot, now: u32) {
        // A station move: the old port gives the entry up; the new one takes it if it
        // has room, else the station is unknown (flooded to) until it has.
        let Some(old) = self.map.remove(&k) else { return };
        *self.count(old.slot) -= 1;
        PortStats::add(&self.stats.moves, 1);
        self.stats.entries.store(self.map.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.insert(k, slot, now);
    }

    #[cold]
    fn insert(&mut self, k: u64, slot: Slot, now: u32) {
        let cap = self.cfg.max_per_port as u32;
        if *self.count(slot) >= cap {
            PortStats::add(&self.stats.refused_port_cap, 1);
            return;
        }
        if self.map.len() >= self.cfg.max_entries {
            PortStats::add(&self.stats.refused_global_cap, 1);
            return;
        }
        self.map.insert(k, Entry { slot, seen: now });
        *self.count(slot) += 1;
        PortStats::add(&self.stats.learned, 1);
        self.stats.entries.store(self.map.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// The port `mac` on `vlan` was last seen on, unless that is older than the aging
    /// time.
    #[inline]
    pub fn lookup(&self, vlan: u16, mac: &Mac, now: u32) -> Option<Slot> {
        let e = self.map.get(&key(vlan, mac))?;
        (now.wrapping_sub(e.seen) <= self.cfg.aging_secs).then_some(e.slot)
    }

    /// Removes entries older than the aging time; returns how many.
    pub fn age(&mut self, now: u32) -> usize {
        let aging = self.cfg.aging_secs;
        let before = self.map.len();
        let per_port = &mut self.per_port;
        self.map.retain(|_, e| {
            let keep = now.wrapping_sub(e.seen) <= aging;
            if !keep {
                per_port[e.slot as usize] -= 1;
            }
            keep
        });
        let n = before - self.map.len();
        PortStats::add(&self.stats.aged, n as u64);
        self.stats.entries.store(self.map.len() as u64, std::sync::atomic::Ordering::Relaxed);
        n
    }

    /// Forgets every entry of `slot` (None: every entry).
    pub fn flush(&mut self, slot: Option<Slot>) {
        match slot {
            None => {
                self.map.clear();
                self.per_port.clear();
            }
            Some(s) => {
                self.map.retain(|_, e| e.slot != s);
                if let Some(c) = self.per_port.get_mut(s as usize) {
                    *c = 0;
                }
            }
        }
        self.stats.entries.store(self.map.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Every live entry, sorted by VLAN then MAC.
    pub fn dump(&self, now: u32) -> Vec<FdbEntry> {
        let mut v: Vec<FdbEntry> = self
            .map
            .iter()
            .filter(|(_, e)| now.wrapping_sub(e.seen) <= self.cfg.aging_secs)
            .map(|(k, e)| {
                let b = k.to_be_bytes();
                FdbEntry {
                    vlan: (k >> 48) as u16,
                    mac: Mac([b[2], b[3], b[4], b[5], b[6], b[7]]),
                    slot: e.slot,
                    age_secs: now.wrapping_sub(e.seen),
                }
            })
            .collect();
        v.sort_by_key(|e| (e.vlan, e.mac.0));
        v
    }

    /// Entries owned by `slot`.
    pub fn port_entries(&self, slot: Slot) -> u32 {
        self.per_port.get(slot as usize).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(i: u32) -> Mac {
        let b = i.to_be_bytes();
        Mac([0x52, 0x54, b[0], b[1], b[2], b[3]])
    }

    fn table(max_entries: usize, max_per_port: usize) -> (Fdb, Arc<FdbStats>) {
        let st = Arc::new(FdbStats::default());
        (Fdb::new(FdbConfig { max_entries, max_per_port, aging_secs: 10 }, st.clone()), st)
    }

    #[test]
    fn learns_looks_up_per_vlan() {
        let (mut f, _) = table(100, 100);
        f.learn(0, &mac(1), 3, 0);
        f.learn(10, &mac(1), 4, 0);
        assert_eq!(f.lookup(0, &mac(1), 1), Some(3));
        assert_eq!(f.lookup(10, &mac(1), 1), Some(4));
        assert_eq!(f.lookup(20, &mac(1), 1), None);
        assert_eq!(f.lookup(0, &mac(2), 1), None);
    }

    #[test]
    fn station_move() {
        let (mut f, st) = table(100, 100);
        f.learn(0, &mac(1), 1, 0);
        f.learn(0, &mac(1), 2, 1);
        assert_eq!(f.lookup(0, &mac(1), 1), Some(2));
        assert_eq!((f.port_entries(1), f.port_entries(2)), (0, 1));
        assert_eq!(st.snapshot().moves, 1);
    }

    #[test]
    fn aging_forgets_and_sweeps() {
        let (mut f, st) = table(100, 100);
        f.learn(0, &mac(1), 1, 0);
        f.learn(0, &mac(2), 1, 5);
        assert_eq!(f.lookup(0, &mac(1), 10), Some(1));
        assert_eq!(f.lookup(0, &mac(1), 11), None, "older than the aging time");
        assert_eq!(f.age(11), 1);
        assert_eq!(f.len(), 1);
        assert_eq!(f.port_entries(1), 1);
        assert_eq!(st.snapshot().aged, 1);
        // Refreshing keeps an entry alive.
        f.learn(0, &mac(2), 1, 14);
        assert_eq!(f.lookup(0, &mac(2), 20), Some(1));
    }

    #[test]
    fn per_port_cap_protects_others() {
        let (mut f, st) = table(1000, 16);
        f.learn(0, &mac(0xffff), 2, 0);
        // Port 1 floods random sources.
        for i in 0..10_000 {
            f.learn(0, &mac(i), 1, 0);
        }
        assert_eq!(f.port_entries(1), 16);
        assert_eq!(f.lookup(0, &mac(0xffff), 0), Some(2), "another port's station survives");
        assert_eq!(st.snapshot().refused_port_cap, 10_000 - 16);
        // Addresses already known still refresh at the cap.
        f.learn(0, &mac(3), 1, 5);
        assert_eq!(f.lookup(0, &mac(3), 14), Some(1));
    }

    #[test]
    fn global_cap() {
        let (mut f, st) = table(20, 16);
        for p in 0..3u16 {
            for i in 0..16 {
                f.learn(0, &mac(p as u32 * 100 + i), p, 0);
            }
        }
        assert_eq!(f.len(), 20);
        assert_eq!(st.snapshot().refused_global_cap, 28);
        assert_eq!(st.snapshot().entries, 20);
        // Aging frees room.
        f.age(100);
        f.learn(0, &mac(999), 2, 100);
        assert_eq!(f.lookup(0, &mac(999), 100), Some(2));
    }

    #[test]
    fn flush_and_dump() {
        let (mut f, _) = table(100, 100);
        f.learn(0, &mac(2), 1, 0);
        f.learn(0, &mac(1), 2, 3);
        f.learn(7, &mac(1), 2, 3);
        let d = f.dump(4);
        assert_eq!(d.len(), 3);
        assert_eq!((d[0].mac, d[0].slot, d[0].age_secs), (mac(1), 2, 1));
        assert_eq!(d[2].vlan, 7);
        f.flush(Some(2));
        assert_eq!(f.len(), 1);
        assert_eq!(f.port_entries(2), 0);
        f.flush(None);
        assert!(f.is_empty());
    }

    #[test]
    fn hash_spreads_sequential_macs() {
        let h = KeyHash { seed: 12345 };
        let mut buckets = [0u32; 64];
        for i in 0..64 * 64 {
            buckets[(h.hash_one(key(0, &mac(i))) & 63) as usize] += 1;
        }
        assert!(buckets.iter().all(|&b| b > 32 && b < 100), "{buckets:?}");
    }
}
