//! What the control socket carries: requests, responses and the shapes of their
//! results, which are also what `--json` prints.
//!
//! One JSON object per line each way:
//!
//! ```text
//! -> {"cmd":"port-add","port":{"name":"vm1","type":"vhost-user"}}
//! <- {"ok":true,"result":{"name":"vm1","type":"vhost-user",...}}
//! -> {"cmd":"port-del","name":"vm9"}
//! <- {"ok":false,"error":"port vm9: no such port"}
//! ```

use serde::{Deserialize, Serialize};

use crate::config::PortConfig;

/// A request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Add a port; the result is its [`PortInfo`].
    PortAdd {
        /// The port.
        port: Box<PortConfig>,
    },
    /// Remove a port; the result is null.
    PortDel {
        /// Its name.
        name: String,
    },
    /// Every port's [`PortInfo`].
    PortList,
    /// One port's [`PortShow`].
    PortShow {
        /// Its name.
        name: String,
    },
    /// The learning table: a list of [`FdbEntry`].
    FdbShow,
    /// Forget learned addresses (of one port, or all); the result is null.
    FdbFlush {
        /// Only this port's entries.
        #[serde(default)]
        port: Option<String>,
    },
    /// Counters: a [`StatsReport`], or one port's [`PortStats`].
    Stats {
        /// Only this port.
        #[serde(default)]
        port: Option<String>,
    },
}

/// A response: `{"ok":true,"result":...}` or `{"ok":false,"error":"..."}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    /// Success.
    pub ok: bool,
    /// The result (success only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// The reason (failure only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    /// A success.
    pub fn ok(result: serde_json::Value) -> Response {
        Response { ok: true, result: Some(result), error: None }
    }

    /// A failure.
    pub fn err(error: impl Into<String>) -> Response {
        Response { ok: false, result: None, error: Some(error.into()) }
    }
}

/// A port as `port list` shows it: every setting with its effective value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PortInfo {
    /// Name.
    pub name: String,
    /// "vhost-user" or "tap".
    #[serde(rename = "type")]
    pub kind: String,
    /// vhost-user socket path (null for a tap).
    pub socket: Option<String>,
    /// vhost-user: "server" or "client".
    pub mode: Option<String>,
    /// tap: kernel interface name.
    pub ifname: Option<String>,
    /// A frontend is attached (always true for a tap).
    pub connected: bool,
    /// Queue pairs.
    pub queue_pairs: u16,
    /// vhost-user: the MAC in the device's config space.
    pub mac: Option<String>,
    /// vhost-user: MTU reported to the guest (null: none).
    pub mtu: Option<u16>,
    /// Access VLAN.
    pub vlan: Option<u16>,
    /// Trunk VLANs.
    pub trunks: Option<Vec<u16>>,
    /// Trunk native VLAN.
    pub native_vlan: Option<u16>,
    /// Allowed source addresses (empty: any).
    pub macs: Vec<String>,
    /// Receives unknown unicast despite `macs`.
    pub promiscuous: bool,
    /// Diagnostic mode (null: switching).
    pub diag: Option<String>,
    /// The datapath worker that serves it.
    pub worker: String,
}

/// `port show`: the port and its counters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PortShow {
    /// The port.
    #[serde(flatten)]
    pub info: PortInfo,
    /// Its counters.
    pub stats: PortStats,
}

/// Frames dropped, by reason.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Drops {
    /// The port had no receive buffer posted.
    pub no_rx_buffer: u64,
    /// The port's receive buffers were too small.
    pub rx_buffer_small: u64,
    /// Malformed frames from the port.
    pub bad_frame: u64,
    /// Frames from a source address the port may not use.
    pub spoofed: u64,
    /// Frames on a VLAN the port does not carry.
    pub vlan: u64,
    /// Frames the tap device refused.
    pub tap_write: u64,
    /// Frames whose virtio-net header did not describe them.
    #[serde(default)]
    pub bad_header: u64,
}

impl Drops {
    /// (reason, count) pairs, in a fixed order.
    pub fn by_reason(&self) -> [(&'static str, u64); 7] {
        [
            ("no_rx_buffer", self.no_rx_buffer),
            ("rx_buffer_small", self.rx_buffer_small),
            ("bad_frame", self.bad_frame),
            ("spoofed", self.spoofed),
            ("vlan", self.vlan),
            ("tap_write", self.tap_write),
            ("bad_header", self.bad_header),
        ]
    }

    /// All drops.
    pub fn total(&self) -> u64 {
        self.by_reason().iter().map(|(_, n)| n).sum()
    }
}

/// Offload work toward a port.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Offloads {
    /// Segmentation requests passed whole (the port negotiated the offload).
    pub gso_passed: u64,
    /// Segmentation requests done in software for the port ...
    pub gso_segmented: u64,
    /// ... into this many segments.
    pub gso_segments: u64,
    /// Partial checksums completed in software for the port.
    pub csum_completed: u64,
    /// Frames coalesced from TCP segments for the port (GRO) ...
    #[serde(default)]
    pub gro_frames: u64,
    /// ... from this many segments.
    #[serde(default)]
    pub gro_segments: u64,
}

/// Counters of one queue pair.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueueStats {
    /// Queue pair index.
    pub queue: u16,
    /// Frames the switch received on this pair.
    pub rx_packets: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Frames the switch sent on this pair.
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Non-empty receive bursts.
    pub rx_bursts: u64,
    /// Receive burst sizes: 1, 2-3, 4-7, 8-15, 16-31, 32+ frames.
    #[serde(default)]
    pub rx_burst_hist: [u64; 6],
    /// Polls of the pair's transmit ring that found nothing.
    #[serde(default)]
    pub empty_polls: u64,
    /// Kicks received while the worker slept.
    #[serde(default)]
    pub kicks: u64,
    /// Interrupts sent to the guest.
    #[serde(default)]
    pub interrupts: u64,
    /// Bursts completed without an interrupt because the guest asked for none.
    #[serde(default)]
    pub interrupts_suppressed: u64,
}

/// Counters of one port. `rx` is what the switch received from the port, `tx` what it
/// sent to it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortStats {
    /// Name.
    pub name: String,
    /// "vhost-user" or "tap".
    #[serde(rename = "type")]
    pub kind: String,
    /// A frontend is attached.
    pub connected: bool,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Bursts taken from the port.
    pub bursts: u64,
    /// Times a frame from the port waited in its ring for a full receiver.
    #[serde(default)]
    pub backpressure: u64,
    /// Drops by reason.
    pub drops: Drops,
    /// Offload work toward the port.
    #[serde(default)]
    pub offloads: Offloads,
    /// Kicks received while the worker slept.
    pub kicks: u64,
    /// Interrupts sent.
    pub interrupts: u64,
    /// Rings stopped because the guest broke the virtqueue rules.
    pub ring_errors: u64,
    /// Per queue pair.
    pub queues: Vec<QueueStats>,
}

/// Counters of one datapath worker.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WorkerStats {
    /// Thread name.
    pub name: String,
    /// TSC cycles of rounds that moved frames.
    pub busy_cycles: u64,
    /// TSC cycles of rounds that found nothing.
    pub idle_cycles: u64,
    /// Frames the worker took in.
    pub packets: u64,
    /// Times it went to sleep.
    pub sleeps: u64,
    /// Times it stopped spinning early for a thread waiting for a CPU.
    #[serde(default)]
    pub yields: u64,
    /// Polling mode: poll, adaptive or interrupt.
    #[serde(default)]
    pub mode: String,
    /// Current polling window (adaptive mode), microseconds.
    #[serde(default)]
    pub poll_window_us: f64,
    /// busy_cycles / packets.
    pub busy_cycles_per_packet: f64,
    /// CPU time of the worker thread.
    pub cpu_seconds: f64,
}

/// Counters of the learning table.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FdbStats {
    pub entries: u64,
    pub learned: u64,
    pub moves: u64,
    pub aged: u64,
    pub refused_port_cap: u64,
    pub refused_global_cap: u64,
}

/// `stats`: everything.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StatsReport {
    pub ports: Vec<PortStats>,
    pub workers: Vec<WorkerStats>,
    pub fdb: FdbStats,
}

/// One learning-table entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FdbEntry {
    /// VLAN (0: the default VLAN).
    pub vlan: u16,
    /// Station address.
    pub mac: String,
    /// The port it was learned on.
    pub port: String,
    /// Seconds since its last frame.
    pub age_seconds: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_reject() {
        let r: Request = serde_json::from_str(r#"{"cmd":"port-list"}"#).unwrap();
        assert_eq!(r, Request::PortList);
        let r: Request = serde_json::from_str(r#"{"cmd":"stats"}"#).unwrap();
        assert_eq!(r, Request::Stats { port: None });
        let r: Request =
            serde_json::from_str(r#"{"cmd":"port-add","port":{"name":"a","type":"tap"}}"#).unwrap();
        assert!(matches!(r, Request::PortAdd { port } if port.name == "a"));
        for bad in [
            r#"{"cmd":"reboot"}"#,
            r#"{"cmd":"port-del"}"#,
            r#"{"cmd":"port-del","name":"a","x":1}"#,
            r#"{"cmd":"port-add","port":{"name":"a","type":"tap","queue_pairs":70000}}"#,
            r#"[1,2]"#,
            r#"{"#,
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn response_shapes() {
        let ok = serde_json::to_string(&Response::ok(serde_json::json!([]))).unwrap();
        assert_eq!(ok, r#"{"ok":true,"result":[]}"#);
        let err = serde_json::to_string(&Response::err("no")).unwrap();
        assert_eq!(err, r#"{"ok":false,"error":"no"}"#);
    }
}
