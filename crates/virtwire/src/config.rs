//! The daemon's TOML configuration, and the port description shared with the control
//! socket (`virtwire port add` sends a [`PortConfig`] as JSON).
//!
//! ```toml
//! run_dir = "/run/virtwire"        # optional
//! metrics = "127.0.0.1:9090"       # optional
//!
//! [datapath]                       # optional
//! mode = "adaptive"                # or "poll" (always spin), "interrupt" (never spin)
//! poll_window_max_us = 200         # adaptive: longest polling window after the last frame
//! adaptive_window = true           # adaptive: false keeps the window at poll_window_max_us
//! yield = true                     # adaptive: stop spinning when a thread waits for a CPU
//! backpressure_us = 500            # a frame waits this long for a full receiver, then drops
//! burst = 32                       # frames per burst (1..=32)
//!
//! [fdb]                            # optional
//! max_entries = 8192
//! max_per_port = 1024
//! aging_seconds = 300
//!
//! [[port]]
//! name = "vm1"
//! type = "vhost-user"              # or "tap"
//! socket = "/run/virtwire/vm1.sock"  # default RUN_DIR/sockets/NAME.sock
//! mode = "server"                  # or "client": connect to the frontend's socket
//! queue_pairs = 2                  # default: one per CPU the switch may use (at most 8)
//! mac = "52:54:00:00:00:01"
//! mtu = 1500
//! vlan = 10                        # access port; or trunks = [10, 20], native_vlan = 10
//! macs = ["52:54:00:00:00:01"]     # allowed source addresses
//! promiscuous = false
//! diag = "reflect"                 # optional: "reflect", "sink" or "source"
//! diag_frame_size = 64
//! ```
//!
//! Every error names the port and the field.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use netproto::ethernet::Mac;
use serde::{Deserialize, Serialize};
use vhost_backend::{DiagMode, FdbConfig, PollConfig, PollMode, PortPolicy, PortSpec, SocketMode, VlanMode};

/// The whole file.
#[derive(Debug, Deserialize, Serialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Run directory (control socket, default socket directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_dir: Option<PathBuf>,
    /// Prometheus endpoint address (loopback only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    /// Learning table limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fdb: Option<FdbSection>,
    /// Worker polling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datapath: Option<DatapathSection>,
    /// Ports.
    #[serde(default)]
    pub port: Vec<PortConfig>,
}

/// The `[fdb]` table.
#[derive(Debug, Deserialize, Serialize, Default, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct FdbSection {
    /// Most entries in the table.
    #[serde(default)]
    pub max_entries: Option<usize>,
    /// Most entries one port may own.
    #[serde(default)]
    pub max_per_port: Option<usize>,
    /// Seconds without a frame after which an entry is forgotten.
    #[serde(default)]
    pub aging_seconds: Option<u32>,
}

impl FdbSection {
    /// The limits, defaults filled in; errors name the field.
    pub fn validate(&self) -> Result<FdbConfig> {
        let d = FdbConfig::default();
        let c = FdbConfig {
            max_entries: self.max_entries.unwrap_or(d.max_entries),
            max_per_port: self.max_per_port.unwrap_or(d.max_per_port),
            aging_secs: self.aging_seconds.unwrap_or(d.aging_secs),
        };
        if !(1..=1 << 24).contains(&c.max_entries) {
            bail!("fdb: max_entries {} is outside 1..=16777216", c.max_entries);
        }
        if c.max_per_port == 0 || c.max_per_port > c.max_entries {
            bail!("fdb: max_per_port {} is outside 1..=max_entries ({})", c.max_per_port, c.max_entries);
        }
        if !(1..=1_000_000).contains(&c.aging_secs) {
            bail!("fdb: aging_seconds {} is outside 1..=1000000", c.aging_secs);
        }
        Ok(c)
    }
}

/// The `[datapath]` table.
#[derive(Debug, Deserialize, Serialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct DatapathSection {
    /// "adaptive" (default), "poll" or "interrupt".
    #[serde(default)]
    pub mode: Option<String>,
    /// Largest adaptive polling window, microseconds (default 200).
    #[serde(default)]
    pub poll_window_max_us: Option<u64>,
    /// Adapt the polling window (default true); false keeps it at
    /// `poll_window_max_us`.
    #[serde(default)]
    pub adaptive_window: Option<bool>,
    /// Stop spinning when another thread waits for a CPU (default true).
    #[serde(default, rename = "yield")]
    pub yield_to_others: Option<bool>,
    /// How long a frame may wait in its sender's ring for a full receiver,
    /// microseconds (default 500; 0: drop at once).
    #[serde(default)]
    pub backpressure_us: Option<u64>,
    /// Frames per burst, 1..=32 (default 32).
    #[serde(default)]
    pub burst: Option<usize>,
}

impl DatapathSection {
    /// The polling configuration, defaults filled in; errors name the field.
    pub fn validate(&self) -> Result<PollConfig> {
        let d = PollConfig::default();
        let mode = match &self.mode {
            Some(m) => m.parse::<PollMode>().map_err(|e| anyhow::anyhow!("datapath: mode: {e}"))?,
            None => d.mode,
        };
        let max_us = self.poll_window_max_us.unwrap_or(d.max_window.as_micros() as u64);
        if !(1..=100_000).contains(&max_us) {
            bail!("datapath: poll_window_max_us {max_us} is outside 1..=100000");
        }
        let max_window = std::time::Duration::from_micros(max_us);
        let bp = self.backpressure_us.unwrap_or(d.backpressure.as_micros() as u64);
        if bp > 1_000_000 {
            bail!("datapath: backpressure_us {bp} is outside 0..=1000000");
        }
        let burst = self.burst.unwrap_or(d.burst);
        if !(1..=32).contains(&burst) {
            bail!("datapath: burst {burst} is outside 1..=32");
        }
        Ok(PollConfig {
            burst,
            mode,
            max_window,
            start_window: d.start_window.min(max_window),
            adaptive_window: self.adaptive_window.unwrap_or(d.adaptive_window),
            yield_to_others: self.yield_to_others.unwrap_or(d.yield_to_others),
            backpressure: std::time::Duration::from_micros(bp),
        })
    }
}

/// One port as written: a `[[port]]` table, or the body of a port add request.
#[derive(Debug, Deserialize, Serialize, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// Unique name.
    pub name: String,
    /// Port kind: "vhost-user" or "tap".
    #[serde(rename = "type")]
    pub kind: String,
    /// vhost-user: unix socket path (default RUN_DIR/sockets/NAME.sock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// vhost-user: "server" (default) or "client".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// vhost-user: queue pairs (default: one per CPU the switch may use, at most 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_pairs: Option<u16>,
    /// vhost-user: MAC address of the guest's interface (default: derived from the name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// vhost-user: MTU reported to the guest (default: none reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    /// tap: kernel interface name (default: the port name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// Access port on this VLAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// Trunk port carrying these VLANs tagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trunks: Option<Vec<u16>>,
    /// Trunk port: the VLAN of untagged frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_vlan: Option<u16>,
    /// The only source addresses the port may send from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macs: Option<Vec<String>>,
    /// With `macs`: receive unknown unicast too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promiscuous: Option<bool>,
    /// vhost-user: a diagnostic mode ("reflect", "sink" or "source") instead of switching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diag: Option<String>,
    /// Frame size for diag = "source" (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diag_frame_size: Option<usize>,
    /// vhost-user: interrupt coalescing of the guest's receive queues: most
    /// microseconds a notification waits (like `ethtool -C rx-usecs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coalesce_rx_usecs: Option<u32>,
    /// vhost-user: frames that trigger a receive notification (`rx-frames`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coalesce_rx_frames: Option<u32>,
    /// vhost-user: the same for the guest's transmit queues (`tx-usecs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coalesce_tx_usecs: Option<u32>,
    /// vhost-user: frames that trigger a transmit completion notification (`tx-frames`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coalesce_tx_frames: Option<u32>,
    /// vhost-user: offer VIRTIO_RING_F_EVENT_IDX (default true; false makes the guest
    /// and the switch fall back to the plain notification flags).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_idx: Option<bool>,
}

/// How a validated port attaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attach {
    /// A vhost-user socket.
    VhostUser {
        /// Socket path.
        socket: PathBuf,
        /// Server or client.
        mode: SocketMode,
    },
    /// A tap interface.
    Tap {
        /// Kernel interface name.
        ifname: String,
    },
}

/// A validated port.
#[derive(Debug, Clone)]
pub struct Port {
    /// Device parameters and policy (for a tap port only the name and policy matter).
    pub spec: PortSpec,
    /// Socket or interface.
    pub attach: Attach,
}

impl Port {
    /// The socket path of a vhost-user port.
    pub fn socket(&self) -> Option<&Path> {
        match &self.attach {
            Attach::VhostUser { socket, .. } => Some(socket),
            Attach::Tap { .. } => None,
        }
    }

    /// The interface name of a tap port.
    pub fn ifname(&self) -> Option<&str> {
        match &self.attach {
            Attach::Tap { ifname } => Some(ifname),
            Attach::VhostUser { .. } => None,
        }
    }
}

/// Queue pairs a vhost-user port offers when its configuration does not say.
pub fn default_queue_pairs() -> u16 {
    std::thread::available_parallelism().map(|n| n.get().min(8) as u16).unwrap_or(1)
}

/// A locally administered MAC derived from a port name, stable across runs.
pub fn default_mac(name: &str) -> Mac {
    let mut h: u32 = 0x811c9dc5;
    for b in name.bytes() {
        h = (h ^ b as u32).wrapping_mul(0x01000193);
    }
    let b = h.to_be_bytes();
    Mac([0x52, 0x54, b[0], b[1], b[2], b[3]])
}

/// Checks a port name: 1-32 characters of letters, digits, '-' or '_'.
pub fn check_name(n: &str) -> Result<()> {
    if n.is_empty() || n.len() > 32 || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        bail!("port {n:?}: name must be 1-32 characters of letters, digits, '-' or '_'");
    }
    Ok(())
}

/// Checks a kernel interface name (what Linux accepts, minus the characters that make
/// trouble in scripts).
fn check_ifname(n: &str, port: &str) -> Result<()> {
    if n.is_empty() || n.len() > 15 {
        bail!(
            "port {port}: ifname {n:?} must be 1-15 characters (Linux interface names are short; set ifname)"
        );
    }
    if n == "." || n == ".." || !n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        bail!("port {port}: ifname {n:?} must be letters, digits, '-', '_' or '.'");
    }
    Ok(())
}

impl PortConfig {
    /// Checks one port; errors name the port and the field. A vhost-user port without
    /// a socket gets `RUN_DIR/sockets/NAME.sock`.
    pub fn validate(&self, run_dir: &Path) -> Result<Port> {
        check_name(&self.name)?;
        let n = &self.name;
        let policy = self.policy()?;
        match self.kind.as_str() {
            "vhost-user" => {
                if self.ifname.is_some() {
                    bail!("port {n}: ifname: only tap ports have an interface name");
                }
                let mode: SocketMode = self
                    .mode
                    .as_deref()
                    .unwrap_or("server")
                    .parse()
                    .map_err(|e| anyhow::anyhow!("port {n}: mode: {e}"))?;
                // Multiqueue by default: as many queue pairs as CPUs the switch may use
                // (at most 8); a guest enables what it wants of them.
                let queue_pairs = self.queue_pairs.unwrap_or_else(default_queue_pairs);
                if queue_pairs == 0 || queue_pairs > 64 {
                    bail!("port {n}: queue_pairs {queue_pairs} is outside 1..=64");
                }
                let mac = match &self.mac {
                    Some(m) => m.parse::<Mac>().map_err(|e| anyhow::anyhow!("port {n}: mac: {e}"))?,
                    None => default_mac(n),
                };
                if mac.is_multicast() || mac.is_zero() {
                    bail!("port {n}: mac {mac} is not a unicast address");
                }
                let mtu = self.mtu.unwrap_or(0);
                if mtu != 0 && !(68..=65535 - 18).contains(&(mtu as u32)) {
                    bail!("port {n}: mtu {mtu} is outside 68..=65517");
                }
                let diag = match &self.diag {
                    Some(d) => {
                        Some(d.parse::<DiagMode>().map_err(|e| anyhow::anyhow!("port {n}: diag: {e}"))?)
                    }
                    None => None,
                };
                let diag_frame_size = self.diag_frame_size.unwrap_or(64);
                if !(60..=65535).contains(&diag_frame_size) {
                    bail!("port {n}: diag_frame_size {diag_frame_size} is outside 60..=65535");
                }
                let socket = match &self.socket {
                    Some(s) => s.clone(),
                    None => run_dir.join("sockets").join(format!("{n}.sock")),
                };
                if socket.as_os_str().is_empty() {
                    bail!("port {n}: socket path is empty");
                }
                if socket.as_os_str().len() > 107 {
                    bail!(
                        "port {n}: socket path {} is longer than a unix socket address allows (107)",
                        socket.display()
                    );
                }
                let coalesce = self.coalesce()?;
                Ok(Port {
                    spec: PortSpec {
                        name: n.clone(),
                        queue_pairs,
                        mac,
                        mtu,
                        diag,
                        policy,
                        diag_frame_size,
                        coalesce,
                        withheld_features: if self.event_idx == Some(false) {
                            virtq::features::EVENT_IDX
                        } else {
                            0
                        },
                    },
                    attach: Attach::VhostUser { socket, mode },
                })
            }
            "tap" => {
                let only_vhost = [
                    ("socket", self.socket.is_some()),
                    ("mode", self.mode.is_some()),
                    ("queue_pairs", self.queue_pairs.is_some()),
                    ("mac", self.mac.is_some()),
                    ("mtu", self.mtu.is_some()),
                    ("diag", self.diag.is_some()),
                    ("diag_frame_size", self.diag_frame_size.is_some()),
                    ("coalesce_rx_usecs", self.coalesce_rx_usecs.is_some()),
                    ("coalesce_rx_frames", self.coalesce_rx_frames.is_some()),
                    ("coalesce_tx_usecs", self.coalesce_tx_usecs.is_some()),
                    ("coalesce_tx_frames", self.coalesce_tx_frames.is_some()),
                    ("event_idx", self.event_idx.is_some()),
                ];
                if let Some((field, _)) = only_vhost.iter().find(|(_, set)| *set) {
                    bail!("port {n}: {field}: only vhost-user ports have this setting");
                }
                let ifname = self.ifname.clone().unwrap_or_else(|| n.clone());
                check_ifname(&ifname, n)?;
                Ok(Port {
                    spec: PortSpec {
                        name: n.clone(),
                        queue_pairs: 1,
                        mac: Mac::default(),
                        mtu: 0,
                        diag: None,
                        policy,
                        diag_frame_size: 64,
                        coalesce: Default::default(),
                        withheld_features: 0,
                    },
                    attach: Attach::Tap { ifname },
                })
            }
            k => bail!("port {n}: type {k:?} is not supported (expected \"vhost-user\" or \"tap\")"),
        }
    }

    /// Interrupt coalescing; errors name the field.
    fn coalesce(&self) -> Result<vhost_backend::polling::Coalesce> {
        let n = &self.name;
        let usecs = |f: &str, v: Option<u32>| -> Result<u32> {
            let v = v.unwrap_or(0);
            if v > 100_000 {
                bail!("port {n}: {f} {v} is outside 0..=100000");
            }
            Ok(v)
        };
        let frames = |f: &str, v: Option<u32>| -> Result<u32> {
            let v = v.unwrap_or(0);
            if v > 4096 {
                bail!("port {n}: {f} {v} is outside 0..=4096");
            }
            Ok(v)
        };
        Ok(vhost_backend::polling::Coalesce {
            rx_usecs: usecs("coalesce_rx_usecs", self.coalesce_rx_usecs)?,
            rx_frames: frames("coalesce_rx_frames", self.coalesce_rx_frames)?,
            tx_usecs: usecs("coalesce_tx_usecs", self.coalesce_tx_usecs)?,
            tx_frames: frames("coalesce_tx_frames", self.coalesce_tx_frames)?,
        })
    }

    /// The VLAN and address policy.
    fn policy(&self) -> Result<PortPolicy> {
        let n = &self.name;
        let vlan = match (self.vlan, &self.trunks, self.native_vlan) {
            (Some(_), Some(_), _) => {
                bail!("port {n}: vlan and trunks: a port is either an access port (vlan) or a trunk (trunks)")
            }
            (Some(_), None, Some(_)) | (None, None, Some(_)) => {
                bail!("port {n}: native_vlan: only trunk ports (trunks = [...]) have a native VLAN")
            }
            (Some(v), None, None) => VlanMode::Access(v),
            (None, Some(t), native) => VlanMode::Trunk { allowed: t.iter().copied().collect(), native },
            (None, None, None) => VlanMode::Any,
        };
        let mut macs = Vec::new();
        for m in self.macs.iter().flatten() {
            let mac = m.parse::<Mac>().map_err(|e| anyhow::anyhow!("port {n}: macs: {e}"))?;
            if !macs.contains(&mac) {
                macs.push(mac);
            }
        }
        // Checked here: the VLAN set keeps only the low 12 bits of what it is given.
        if let Some(v) = self.trunks.iter().flatten().find(|v| !(1..=4094).contains(*v)) {
            bail!("port {n}: trunk vlan {v} is outside 1..=4094");
        }
        let p = PortPolicy { vlan, macs, promiscuous: self.promiscuous.unwrap_or(false) };
        p.validate().map_err(|e| anyhow::anyhow!("port {n}: {e}"))?;
        Ok(p)
    }
}

/// A parsed and validated configuration file.
#[derive(Debug, Clone)]
pub struct Config {
    /// `run_dir`, if the file sets it.
    pub run_dir: Option<PathBuf>,
    /// `metrics`, if the file sets it.
    pub metrics: Option<String>,
    /// Learning table limits.
    pub fdb: FdbConfig,
    /// Worker polling.
    pub polling: PollConfig,
    /// Ports as written (validated against the run directory once it is known).
    pub ports: Vec<PortConfig>,
}

/// Parses a configuration text and checks everything that does not depend on the run
/// directory.
pub fn parse(text: &str) -> Result<Config> {
    let f: ConfigFile = toml::from_str(text).context("configuration")?;
    let fdb = f.fdb.unwrap_or_default().validate()?;
    let polling = f.datapath.unwrap_or_default().validate()?;
    for p in &f.port {
        p.validate(Path::new("/run/virtwire"))?;
    }
    Ok(Config { run_dir: f.run_dir, metrics: f.metrics, fdb, polling, ports: f.port })
}

/// Validates ports against `run_dir` and against each other (names, sockets and
/// interface names are unique).
pub fn validate_ports(ports: &[PortConfig], run_dir: &Path) -> Result<Vec<Port>> {
    let mut names = HashSet::new();
    let mut sockets = HashSet::new();
    let mut ifnames = HashSet::new();
    let mut out = Vec::new();
    for p in ports {
        let v = p.validate(run_dir)?;
        if !names.insert(v.spec.name.clone()) {
            bail!("port {}: a port with this name already exists", v.spec.name);
        }
        if let Some(s) = v.socket() {
            if !sockets.insert(s.to_path_buf()) {
                bail!("port {}: socket {} is used by another port", v.spec.name, s.display());
            }
        }
        if let Some(i) = v.ifname() {
            if !ifnames.insert(i.to_string()) {
                bail!("port {}: ifname {i} is used by another port", v.spec.name);
            }
        }
        out.push(v);
    }
    Ok(out)
}

/// Reads and parses a configuration file.
pub fn load(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    parse(&text).with_context(|| format!("{}", path.display()))
}

/// The run directory: `--run-dir`, else `VIRTWIRE_RUN_DIR`, else the configuration's
/// `run_dir`, else [`default_run_dir`].
pub fn resolve_run_dir(flag: Option<&Path>, file: Option<&Path>) -> PathBuf {
    if let Some(d) = flag {
        return d.to_path_buf();
    }
    if let Some(d) = std::env::var_os("VIRTWIRE_RUN_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = file {
        return d.to_path_buf();
    }
    default_run_dir()
}

/// `/run/virtwire` for root; else `$XDG_RUNTIME_DIR/virtwire`, or `/tmp/virtwire-UID`.
pub fn default_run_dir() -> PathBuf {
    let uid = crate::sys::uid();
    if uid == 0 {
        return PathBuf::from("/run/virtwire");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("virtwire"),
        None => PathBuf::from(format!("/tmp/virtwire-{uid}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(text: &str) -> Result<Vec<Port>> {
        let c = parse(text)?;
        validate_ports(&c.ports, Path::new("/run/vw"))
    }

    fn err(text: &str) -> String {
        format!("{:#}", ports(text).unwrap_err())
    }

    fn vhost(p: &Port) -> (&Path, SocketMode) {
        match &p.attach {
            Attach::VhostUser { socket, mode } => (socket, *mode),
            Attach::Tap { .. } => panic!("not a vhost-user port"),
        }
    }

    #[test]
    fn a_full_port() {
        let p = ports(
            r#"
            [[port]]
            name = "vm1"
            type = "vhost-user"
            socket = "/tmp/vm1.sock"
            mode = "client"
            queue_pairs = 4
            mac = "52:54:00:00:00:01"
            mtu = 1500
            diag = "source"
            diag_frame_size = 1518
            "#,
        )
        .unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(vhost(&p[0]), (Path::new("/tmp/vm1.sock"), SocketMode::Client));
        assert_eq!(p[0].spec.queue_pairs, 4);
        assert_eq!(p[0].spec.mac.to_string(), "52:54:00:00:00:01");
        assert_eq!(p[0].spec.diag, Some(DiagMode::Source));
        assert_eq!(p[0].spec.diag_frame_size, 1518);
    }

    #[test]
    fn defaults() {
        let p = ports("[[port]]\nname='a'\ntype='vhost-user'\nsocket='/tmp/a'\ndiag='sink'\n").unwrap();
        assert_eq!(vhost(&p[0]).1, SocketMode::Server);
        assert_eq!(p[0].spec.queue_pairs, default_queue_pairs());
        assert_eq!(p[0].spec.mac, default_mac("a"));
        assert_eq!(p[0].spec.diag_frame_size, 64);
        assert_eq!(p[0].spec.policy, PortPolicy::default());
        // No diag: a switching port; no socket: one in the run directory.
        let p = ports("[[port]]\nname='b'\ntype='vhost-user'\n").unwrap();
        assert_eq!(p[0].spec.diag, None);
        assert_eq!(vhost(&p[0]).0, Path::new("/run/vw/sockets/b.sock"));
    }

    #[test]
    fn the_whole_file() {
        let c = parse(
            r#"
            run_dir = "/tmp/vwrun"
            metrics = "127.0.0.1:9090"
            [fdb]
            max_entries = 100
            max_per_port = 10
            aging_seconds = 60
            [[port]]
            name = "t1"
            type = "tap"
            ifname = "vwtap0"
            trunks = [10, 20]
            native_vlan = 10
            macs = ["52:54:00:00:00:01"]
            promiscuous = true
            [[port]]
            name = "vm1"
            type = "vhost-user"
            vlan = 10
            "#,
        )
        .unwrap();
        assert_eq!(c.run_dir.as_deref(), Some(Path::new("/tmp/vwrun")));
        assert_eq!(c.metrics.as_deref(), Some("127.0.0.1:9090"));
        assert_eq!(c.fdb, FdbConfig { max_entries: 100, max_per_port: 10, aging_secs: 60 });
        let p = validate_ports(&c.ports, Path::new("/tmp/vwrun")).unwrap();
        assert_eq!(p[0].attach, Attach::Tap { ifname: "vwtap0".into() });
        assert_eq!(
            p[0].spec.policy.vlan,
            VlanMode::Trunk { allowed: [10, 20].into_iter().collect(), native: Some(10) }
        );
        assert_eq!(p[0].spec.policy.macs, vec![Mac([0x52, 0x54, 0, 0, 0, 1])]);
        assert!(p[0].spec.policy.promiscuous);
        assert_eq!(p[1].spec.policy.vlan, VlanMode::Access(10));
        assert_eq!(vhost(&p[1]).0, Path::new("/tmp/vwrun/sockets/vm1.sock"));
    }

    #[test]
    fn port_config_round_trips_through_json() {
        let c = PortConfig {
            name: "vm1".into(),
            kind: "vhost-user".into(),
            trunks: Some(vec![5, 6]),
            ..Default::default()
        };
        let j = serde_json::to_string(&c).unwrap();
        assert_eq!(j, r#"{"name":"vm1","type":"vhost-user","trunks":[5,6]}"#);
        assert_eq!(serde_json::from_str::<PortConfig>(&j).unwrap(), c);
    }

    #[test]
    fn errors_name_the_port_and_field() {
        let base = "type='vhost-user'\nsocket='/tmp/x'\ndiag='sink'\n";
        assert!(err(&format!("[[port]]\nname='p1'\n{base}mac='01:00:00:00:00:01'")).contains("port p1: mac"));
        assert!(err(&format!("[[port]]\nname='p1'\n{base}queue_pairs=0")).contains("port p1: queue_pairs"));
        assert!(err("[[port]]\nname='p2'\ntype='veth'\nsocket='/x'").contains("port p2: type"));
        assert!(err("[[port]]\nname='p3'\ntype='vhost-user'\nsocket='/x'\ndiag='mirror'")
            .contains("port p3: diag"));
        assert!(err("[[port]]\nname='p4'\ntype='vhost-user'\nsocket='/x'\nmode='peer'\ndiag='sink'")
            .contains("port p4: mode"));
        assert!(err("[[port]]\nname='p5'\ntype='tap'\nsocket='/x'").contains("port p5: socket"));
        assert!(err("[[port]]\nname='p6'\ntype='tap'\nifname='a/b'").contains("port p6: ifname"));
        assert!(err("[[port]]\nname='a-very-long-port-name'\ntype='tap'").contains("ifname"));
        assert!(
            err("[[port]]\nname='p7'\ntype='tap'\nvlan=10\ntrunks=[20]").contains("port p7: vlan and trunks")
        );
        assert!(err("[[port]]\nname='p8'\ntype='tap'\nvlan=4095").contains("port p8: vlan 4095"));
        assert!(err("[[port]]\nname='p9'\ntype='tap'\ntrunks=[0]").contains("port p9: trunk vlan 0"));
        assert!(err("[[port]]\nname='p9'\ntype='tap'\ntrunks=[5000]").contains("port p9: trunk vlan 5000"));
        assert!(err("[[port]]\nname='p9'\ntype='tap'\ntrunks=[]").contains("port p9: trunks"));
        assert!(err("[[port]]\nname='pa'\ntype='tap'\nnative_vlan=3").contains("port pa: native_vlan"));
        assert!(err("[[port]]\nname='pb'\ntype='tap'\nmacs=['zz']").contains("port pb: macs"));
        assert!(err("[[port]]\nname='pc'\ntype='tap'\nmacs=['ff:ff:ff:ff:ff:ff']").contains("port pc: macs"));
        assert!(err("[[port]]\nname='p d'\ntype='tap'").contains("name must be"));
        assert!(err("[fdb]\nmax_per_port=0").contains("fdb: max_per_port"));
        assert!(err("[datapath]\nmode='busy'").contains("datapath: mode"));
        assert!(err("[[port]]\nname='c'\ntype='vhost-user'\ncoalesce_rx_usecs=200000")
            .contains("port c: coalesce_rx_usecs 200000"));
        assert!(err("[[port]]\nname='c'\ntype='tap'\ncoalesce_tx_frames=4").contains("only vhost-user"));
        assert!(err("[datapath]\npoll_window_max_us=0").contains("poll_window_max_us"));
        let c = parse("[datapath]\nmode='poll'\nyield=false\n").unwrap();
        assert_eq!(c.polling.mode, PollMode::Poll);
        assert!(!c.polling.yield_to_others);
        assert!(c.polling.adaptive_window, "adapts by default");
        assert!(err("[datapath]\nadaptive_window='no'").contains("adaptive_window"));
        let dup = format!(
            "[[port]]\nname='a'\n{base}[[port]]\nname='a'\ntype='vhost-user'\nsocket='/y'\ndiag='sink'"
        );
        assert!(err(&dup).contains("already exists"));
        let dups = format!("[[port]]\nname='a'\n{base}[[port]]\nname='b'\n{base}");
        assert!(err(&dups).contains("used by another port"));
        let dupi = "[[port]]\nname='a'\ntype='tap'\nifname='x'\n[[port]]\nname='b'\ntype='tap'\nifname='x'";
        assert!(err(dupi).contains("port b: ifname x is used by another port"));
        assert!(err("[[port]]\nname='a'\ntype='vhost-user'\nsocket='/x'\ndiag='sink'\ncolour='red'")
            .contains("unknown field"));
    }

    #[test]
    fn a_fixed_polling_window() {
        let c = parse("[datapath]\nadaptive_window=false\npoll_window_max_us=300\n").unwrap();
        assert!(!c.polling.adaptive_window);
        assert_eq!(c.polling.mode, PollMode::Adaptive);
        assert_eq!(c.polling.max_window, std::time::Duration::from_micros(300));
        let w = vhost_backend::polling::Window::new(c.polling);
        assert_eq!(w.current(), Some(std::time::Duration::from_micros(300)), "starts at its maximum");
    }
}
