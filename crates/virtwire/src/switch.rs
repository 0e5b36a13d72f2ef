//! The switch as the control plane sees it: datapath workers and the ports attached to
//! them, by name. The daemon, the control socket and the metrics endpoint share one
//! [`Switch`]; every method takes the lock for as long as it needs.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vhost_backend::policy::VlanMode;
use vhost_backend::stats::PortStatsSnapshot;
use vhost_backend::worker::PortId;
use vhost_backend::{FdbConfig, SocketMode, TapPort, Worker};

use crate::api::{self, Drops, FdbEntry, PortInfo, PortShow, QueueStats, StatsReport, WorkerStats};
use crate::config::{self, Attach, PortConfig};

/// A running port's handle.
enum Handle {
    Vhost(vhost_backend::Port),
    Tap(TapPort),
}

struct Entry {
    port: config::Port,
    id: PortId,
    worker: usize,
    handle: Handle,
}

impl Entry {
    fn name(&self) -> &str {
        &self.port.spec.name
    }

    fn kind(&self) -> &'static str {
        match self.handle {
            Handle::Vhost(_) => "vhost-user",
            Handle::Tap(_) => "tap",
        }
    }

    fn stats(&self) -> &vhost_backend::PortStats {
        match &self.handle {
            Handle::Vhost(p) => &p.stats,
            Handle::Tap(t) => &t.stats,
        }
    }

    fn connected(&self) -> bool {
        match &self.handle {
            Handle::Vhost(p) => p.connected.load(Ordering::Relaxed),
            Handle::Tap(_) => true,
        }
    }

    fn shutdown(&mut self) {
        match &mut self.handle {
            Handle::Vhost(p) => p.shutdown(),
            Handle::Tap(t) => t.shutdown(),
        }
    }

    fn port_stats(&self) -> api::PortStats {
        let st = self.stats();
        let s = st.snapshot();
        api::PortStats {
            name: self.name().to_string(),
            kind: self.kind().to_string(),
            connected: self.connected(),
            rx_packets: s.rx_packets,
            rx_bytes: s.rx_bytes,
            tx_packets: s.tx_packets,
            tx_bytes: s.tx_bytes,
            bursts: s.bursts,
            backpressure: s.backpressure,
            drops: Drops {
                no_rx_buffer: s.drop_no_rx_buffer,
                rx_buffer_small: s.drop_rx_buffer_small,
                bad_frame: s.drop_bad_frame,
                spoofed: s.drop_spoofed,
                vlan: s.drop_vlan,
                tap_write: s.drop_tap_write,
                bad_header: s.drop_bad_header,
            },
            offloads: crate::api::Offloads {
                gso_passed: s.gso_passed,
                gso_segmented: s.gso_segmented,
                gso_segments: s.gso_segments,
                csum_completed: s.csum_completed,
                gro_frames: s.gro_frames,
                gro_segments: s.gro_segments,
            },
            kicks: s.kicks,
            interrupts: s.interrupts,
            ring_errors: s.ring_errors,
            queues: st
                .queue_snapshots()
                .into_iter()
                .map(|q| QueueStats {
                    queue: q.queue,
                    rx_packets: q.rx_packets,
                    rx_bytes: q.rx_bytes,
                    tx_packets: q.tx_packets,
                    tx_bytes: q.tx_bytes,
                    rx_bursts: q.rx_bursts,
                    rx_burst_hist: q.rx_burst_hist,
                    empty_polls: q.empty_polls,
                    kicks: q.kicks,
                    interrupts: q.interrupts,
                    interrupts_suppressed: q.interrupts_suppressed,
                })
                .collect(),
        }
    }
}

struct Inner {
    workers: Vec<Arc<Worker>>,
    /// Port ids increase and are never reused, so a stale id can never name a new port.
    next_id: PortId,
    ports: Vec<Entry>,
    /// Set by [`Switch::shutdown_all`]: no port may be added after it.
    closed: bool,
}

/// The switch: workers and ports.
pub struct Switch {
    run_dir: PathBuf,
    inner: Mutex<Inner>,
}

/// What a port counted, for the daemon's closing lines.
#[derive(Debug)]
pub struct FinalCounters {
    /// Port name.
    pub name: String,
    /// Its counters.
    pub stats: PortStatsSnapshot,
}

/// The reason in an I/O error, without the path prefixes the layers below add and
/// without the "(os error N)" suffix: "permission denied", "no such file or directory".
fn reason(e: &std::io::Error, prefixes: &[&str]) -> String {
    let mut s = e.to_string();
    for p in prefixes {
        if let Some(rest) = s.strip_prefix(&format!("{p}: ")) {
            s = rest.to_string();
        }
    }
    if let Some(i) = s.rfind(" (os error ") {
        if s.ends_with(')') {
            s.truncate(i);
        }
    }
    // "TUNSETIFF: Operation not permitted" -> "TUNSETIFF: operation not permitted".
    let start = s.rfind(": ").map(|i| i + 2).unwrap_or(0);
    let mut chars = s[start..].chars();
    if let (Some(a), Some(b)) = (chars.next(), chars.next()) {
        if a.is_ascii_uppercase() && b.is_ascii_lowercase() {
            s.replace_range(start..start + 1, &a.to_ascii_lowercase().to_string());
        }
    }
    s
}

fn interface_exists(ifname: &str) -> bool {
    Path::new("/sys/class/net").join(ifname).exists()
}

impl Switch {
    /// Starts one datapath worker with the given learning-table limits.
    pub fn new(run_dir: &Path, fdb: FdbConfig) -> Result<Switch> {
        let w = Worker::spawn("virtwire-dp0", fdb).context("datapath worker")?;
        Ok(Switch {
            run_dir: run_dir.to_path_buf(),
            inner: Mutex::new(Inner { workers: vec![w], next_id: 0, ports: Vec::new(), closed: false }),
        })
    }

    /// Sets every worker's polling mode and window limits.
    pub fn set_polling(&self, c: vhost_backend::PollConfig) {
        for w in &self.lock().workers {
            w.send(vhost_backend::worker::Ctl::SetPolling(c));
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves the port list intact: every
        // change to it is a single push or remove.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The datapath workers.
    pub fn workers(&self) -> Vec<Arc<Worker>> {
        self.lock().workers.clone()
    }

    /// Validates and starts a port.
    pub fn add(&self, cfg: &PortConfig) -> Result<PortInfo> {
        let port = cfg.validate(&self.run_dir)?;
        let n = port.spec.name.clone();
        let mut inner = self.lock();
        if inner.closed {
            bail!("port {n}: the switch is stopping");
        }
        if inner.ports.iter().any(|e| e.name() == n) {
            bail!("port {n}: a port with this name already exists");
        }
        match &port.attach {
            Attach::VhostUser { socket, mode } => {
                if let Some(o) = inner.ports.iter().find(|e| e.port.socket() == Some(socket.as_path())) {
                    bail!("port {n}: socket {} is used by port {}", socket.display(), o.name());
                }
                if *mode == SocketMode::Server {
                    // Never remove something that is not a socket in the name of a stale one.
                    if let Ok(m) = std::fs::symlink_metadata(socket) {
                        if !m.file_type().is_socket() {
                            bail!("port {n}: socket {}: exists and is not a socket", socket.display());
                        }
                    }
                }
            }
            Attach::Tap { ifname } => {
                if let Some(o) = inner.ports.iter().find(|e| e.port.ifname() == Some(ifname.as_str())) {
                    bail!("port {n}: ifname {ifname} is used by port {}", o.name());
                }
                if interface_exists(ifname) {
                    bail!("port {n}: ifname {ifname}: an interface with this name already exists");
                }
            }
        }
        let w = 0;
        let worker = inner.workers[w].clone();
        let id = inner.next_id;
        let Some(next) = id.checked_add(1) else {
            bail!("port {n}: every port id of this switch has been used; restart it to add more ports");
        };
        // Taken even if the start fails: an id the worker may have seen is never reused.
        inner.next_id = next;
        let handle = match &port.attach {
            Attach::VhostUser { socket, mode } => {
                let s = socket.display().to_string();
                let p = vhost_backend::Port::start(port.spec.clone(), socket, *mode, id, worker)
                    .map_err(|e| anyhow::anyhow!("port {n}: socket {s}: {}", reason(&e, &[&s])))?;
                Handle::Vhost(p)
            }
            Attach::Tap { ifname } => {
                let t = TapPort::start(&n, ifname, port.spec.policy.clone(), id, worker).map_err(|e| {
                    anyhow::anyhow!("port {n}: tap {ifname}: {}", reason(&e, &[&format!("tap {ifname}")]))
                })?;
                Handle::Tap(t)
            }
        };
        let e = Entry { port, id, worker: w, handle };
        let info = Self::info(&inner, &e);
        inner.ports.push(e);
        Ok(info)
    }

    /// Stops and removes a port; its socket (server mode) or interface goes away.
    pub fn del(&self, name: &str) -> Result<FinalCounters> {
        let (mut e, worker) = {
            let mut inner = self.lock();
            let Some(i) = inner.ports.iter().position(|e| e.name() == name) else {
                bail!("port {name}: no such port");
            };
            let e = inner.ports.remove(i);
            let w = inner.workers[e.worker].clone();
            (e, w)
        };
        e.shutdown();
        worker.fdb_flush(Some(e.id));
        if let Some(ifname) = e.port.ifname() {
            // The worker closes the tap queue when it takes the removal; report the
            // interface gone only once it is.
            let t = Instant::now();
            while interface_exists(ifname) && t.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(FinalCounters { name: name.to_string(), stats: e.stats().snapshot() })
    }

    /// Stops every port, in the order they were added.
    pub fn shutdown_all(&self) -> Vec<FinalCounters> {
        let mut ports = {
            let mut inner = self.lock();
            inner.closed = true;
            std::mem::take(&mut inner.ports)
        };
        ports
            .iter_mut()
            .map(|e| {
                e.shutdown();
                FinalCounters { name: e.name().to_string(), stats: e.stats().snapshot() }
            })
            .collect()
    }

    fn info(inner: &Inner, e: &Entry) -> PortInfo {
        let spec = &e.port.spec;
        let p = &spec.policy;
        let (vlan, trunks, native_vlan) = match &p.vlan {
            VlanMode::Any => (None, None, None),
            VlanMode::Access(v) => (Some(*v), None, None),
            VlanMode::Trunk { allowed, native } => (None, Some(allowed.to_vec()), *native),
        };
        let vhost = matches!(e.handle, Handle::Vhost(_));
        let (socket, mode, ifname) = match &e.port.attach {
            Attach::VhostUser { socket, mode } => (
                Some(socket.display().to_string()),
                Some(if *mode == SocketMode::Server { "server" } else { "client" }.to_string()),
                None,
            ),
            Attach::Tap { ifname } => (None, None, Some(ifname.clone())),
        };
        PortInfo {
            name: spec.name.clone(),
            kind: e.kind().to_string(),
            socket,
            mode,
            ifname,
            connected: e.connected(),
            queue_pairs: spec.queue_pairs,
            mac: vhost.then(|| spec.mac.to_string()),
            mtu: (vhost && spec.mtu != 0).then_some(spec.mtu),
            vlan,
            trunks,
            native_vlan,
            macs: p.macs.iter().map(|m| m.to_string()).collect(),
            promiscuous: p.promiscuous,
            diag: spec.diag.map(|d| {
                serde_json::to_value(d).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
            }),
            worker: inner.workers.get(e.worker).map(|w| w.name().to_string()).unwrap_or_default(),
        }
    }

    /// Every port, in the order they were added.
    pub fn list(&self) -> Vec<PortInfo> {
        let inner = self.lock();
        inner.ports.iter().map(|e| Self::info(&inner, e)).collect()
    }

    /// One port with its counters.
    pub fn show(&self, name: &str) -> Result<PortShow> {
        let inner = self.lock();
        let Some(e) = inner.ports.iter().find(|e| e.name() == name) else {
            bail!("port {name}: no such port");
        };
        Ok(PortShow { info: Self::info(&inner, e), stats: e.port_stats() })
    }

    /// One port's counters.
    pub fn port_stats(&self, name: &str) -> Result<api::PortStats> {
        let inner = self.lock();
        match inner.ports.iter().find(|e| e.name() == name) {
            Some(e) => Ok(e.port_stats()),
            None => bail!("port {name}: no such port"),
        }
    }

    /// Every counter: ports, workers, learning table.
    pub fn stats(&self) -> StatsReport {
        let inner = self.lock();
        let mut fdb = api::FdbStats::default();
        let workers = inner
            .workers
            .iter()
            .map(|w| {
                let f = w.fdb_stats().snapshot();
                fdb.entries += f.entries;
                fdb.learned += f.learned;
                fdb.moves += f.moves;
                fdb.aged += f.aged;
                fdb.refused_port_cap += f.refused_port_cap;
                fdb.refused_global_cap += f.refused_global_cap;
                let s = w.stats().snapshot();
                WorkerStats {
                    name: w.name().to_string(),
                    busy_cycles: s.busy_cycles,
                    idle_cycles: s.idle_cycles,
                    packets: s.packets,
                    sleeps: s.sleeps,
                    yields: s.yields,
                    mode: s.mode.to_string(),
                    poll_window_us: s.poll_window_us,
                    busy_cycles_per_packet: s.busy_cycles_per_packet,
                    cpu_seconds: s.cpu_seconds,
                }
            })
            .collect();
        StatsReport { ports: inner.ports.iter().map(|e| e.port_stats()).collect(), workers, fdb }
    }

    /// The learning table, with port names.
    pub fn fdb_show(&self) -> Vec<FdbEntry> {
        // Ask the workers without holding the lock: a dump waits for the worker.
        let (workers, names) = {
            let inner = self.lock();
            let names: Vec<(usize, PortId, String)> =
                inner.ports.iter().map(|e| (e.worker, e.id, e.name().to_string())).collect();
            (inner.workers.clone(), names)
        };
        let mut out = Vec::new();
        for (wi, w) in workers.iter().enumerate() {
            for r in w.fdb_dump() {
                let port = names
                    .iter()
                    .find(|(w, id, _)| *w == wi && *id == r.port)
                    .map(|(_, _, n)| n.clone())
                    // An entry of a port removed a moment ago, before its flush.
                    .unwrap_or_else(|| format!("#{}", r.port));
                out.push(FdbEntry { vlan: r.vlan, mac: r.mac.to_string(), port, age_seconds: r.age_secs });
            }
        }
        out.sort_by(|a, b| (a.vlan, &a.mac).cmp(&(b.vlan, &b.mac)));
        out
    }

    /// Forgets learned addresses: one port's, or all.
    pub fn fdb_flush(&self, port: Option<&str>) -> Result<()> {
        let inner = self.lock();
        match port {
            Some(name) => {
                let Some(e) = inner.ports.iter().find(|e| e.name() == name) else {
                    bail!("port {name}: no such port");
                };
                inner.workers[e.worker].fdb_flush(Some(e.id));
            }
            None => {
                for w in &inner.workers {
                    w.fdb_flush(None);
                }
            }
        }
        Ok(())
    }

    /// Answers one control request.
    pub fn handle(&self, req: api::Request) -> Result<serde_json::Value> {
        use api::Request as R;
        let v = match req {
            R::PortAdd { port } => {
                let info = self.add(&port)?;
                eprintln!("virtwire: port {}: added: {}", info.name, describe(&info));
                serde_json::to_value(info)?
            }
            R::PortDel { name } => {
                let c = self.del(&name)?;
                eprintln!("virtwire: port {}: removed", c.name);
                serde_json::Value::Null
            }
            R::PortList => serde_json::to_value(self.list())?,
            R::PortShow { name } => serde_json::to_value(self.show(&name)?)?,
            R::FdbShow => serde_json::to_value(self.fdb_show())?,
            R::FdbFlush { port } => {
                self.fdb_flush(port.as_deref())?;
                serde_json::Value::Null
            }
            R::Stats { port: Some(p) } => serde_json::to_value(self.port_stats(&p)?)?,
            R::Stats { port: None } => serde_json::to_value(self.stats())?,
        };
        Ok(v)
    }
}

/// "vhost-user server on /run/virtwire/sockets/vm1.sock" or "tap vwtap0", for logs.
pub fn describe(p: &PortInfo) -> String {
    let mut s = match (&p.socket, &p.ifname) {
        (Some(sock), _) => format!("vhost-user {} on {sock}", p.mode.as_deref().unwrap_or("server")),
        (None, Some(i)) => format!("tap {i}"),
        (None, None) => p.kind.clone(),
    };
    if let Some(v) = p.vlan {
        s += &format!(", vlan {v}");
    }
    if let Some(t) = &p.trunks {
        let t: Vec<String> = t.iter().map(|v| v.to_string()).collect();
        s += &format!(", trunks {}", t.join(","));
        if let Some(n) = p.native_vlan {
            s += &format!(" (native {n})");
        }
    }
    if let Some(d) = &p.diag {
        s += &format!(", diag {d}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_short() {
        let e = std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("/x/vm3.sock: {}", std::io::Error::from_raw_os_error(libc::EACCES)),
        );
        assert_eq!(reason(&e, &["/x/vm3.sock"]), "permission denied");
        let e = std::io::Error::other("tap t0: TUNSETIFF: Operation not permitted (os error 1)");
        assert_eq!(reason(&e, &["tap t0"]), "TUNSETIFF: operation not permitted");
        let e = std::io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(reason(&e, &[]), "no such file or directory");
    }

    fn vhost(name: &str, socket: &Path) -> PortConfig {
        PortConfig {
            name: name.into(),
            kind: "vhost-user".into(),
            socket: Some(socket.to_path_buf()),
            ..Default::default()
        }
    }

    #[test]
    fn add_list_show_del() {
        let dir = std::env::temp_dir().join(format!("vw-switch-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sw = Switch::new(&dir, FdbConfig::default()).unwrap();
        let a = dir.join("a.sock");
        let info = sw.add(&vhost("a", &a)).unwrap();
        assert_eq!(info.socket.as_deref(), Some(a.to_str().unwrap()));
        assert!(a.exists());
        let e = sw.add(&vhost("a", &dir.join("b.sock"))).unwrap_err().to_string();
        assert_eq!(e, "port a: a port with this name already exists");
        let e = sw.add(&vhost("b", &a)).unwrap_err().to_string();
        assert_eq!(e, format!("port b: socket {} is used by port a", a.display()));
        let e = sw.add(&vhost("c", &dir.join("none/c.sock"))).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("port c: socket {}: no such file or directory", dir.join("none/c.sock").display())
        );
        let f = dir.join("file");
        std::fs::write(&f, "keep me").unwrap();
        let e = sw.add(&vhost("d", &f)).unwrap_err().to_string();
        assert!(e.contains("exists and is not a socket"), "{e}");
        assert!(f.exists());
        // No socket given: one in the run directory's sockets/.
        std::fs::create_dir_all(dir.join("sockets")).unwrap();
        let info = sw
            .add(&PortConfig { name: "e".into(), kind: "vhost-user".into(), ..Default::default() })
            .unwrap();
        assert_eq!(info.socket, Some(dir.join("sockets/e.sock").display().to_string()));
        assert_eq!(sw.list().iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["a", "e"]);
        let s = sw.show("a").unwrap();
        assert_eq!(s.stats.queues.len(), crate::config::default_queue_pairs() as usize);
        assert!(!s.info.connected);
        assert_eq!(sw.stats().ports.len(), 2);
        assert_eq!(sw.stats().workers[0].name, "virtwire-dp0");
        sw.del("a").unwrap();
        assert!(!a.exists());
        assert_eq!(sw.del("a").unwrap_err().to_string(), "port a: no such port");
        assert!(sw.fdb_flush(Some("zz")).is_err());
        sw.fdb_flush(None).unwrap();
        sw.shutdown_all();
        assert!(!dir.join("sockets/e.sock").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
