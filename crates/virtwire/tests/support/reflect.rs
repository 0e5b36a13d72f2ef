//! Guest side of a "reflect" test: the backend sends every frame the guest transmits back
//! to it (DPDK testpmd `--forward-mode=macswap` today, virtwire's `diag = "reflect"` later).
//!
//! The guest pins a static ARP entry for a peer address to its own MAC and pings the peer:
//! each echo request leaves with destination MAC = the guest's own MAC, so the reflected
//! frame (whether or not its MACs were swapped) is addressed to the guest again and counts
//! in eth0's `rx_packets` (the IP layer then drops it: the peer address is not local).
//! The script prints the negotiated virtio features and the counters as console markers;
//! [`check_reflect_output`] parses and checks them.

use anyhow::{bail, Context, Result};

/// The guest script: sends `frames` ICMP echo requests to `peer_ip` (an address in eth0's
/// subnet that no one owns) and waits up to 10 s for as many frames to come back.
/// Exits 0 when at least `frames` came back.
pub fn reflect_script(peer_ip: &str, frames: u32) -> String {
    format!(
        r#"set -u
stats=/sys/class/net/eth0/statistics
echo "VW-FEATURES bits=$(cat /sys/class/net/eth0/device/features)"
mac=$(cat /sys/class/net/eth0/address)
arp -i eth0 -s {peer_ip} "$mac" || {{ echo "VW-REFLECT error=arp"; exit 2; }}
rx0=$(cat $stats/rx_packets)
tx0=$(cat $stats/tx_packets)
ping -q -c {frames} -i 0.1 -W 1 {peer_ip} >/dev/null 2>&1
i=0
while [ $i -lt 100 ]; do
    rx=$(cat $stats/rx_packets)
    [ $((rx - rx0)) -ge {frames} ] && break
    usleep 100000
    i=$((i + 1))
done
rx1=$(cat $stats/rx_packets)
tx1=$(cat $stats/tx_packets)
echo "VW-REFLECT frames={frames} sent=$((tx1 - tx0)) received=$((rx1 - rx0)) rx_dropped=$(cat $stats/rx_dropped) rx_errors=$(cat $stats/rx_errors) tx_errors=$(cat $stats/tx_errors)"
echo "--- ethtool -S eth0"
ethtool -S eth0 2>&1 | head -n 40
[ $((rx1 - rx0)) -ge {frames} ]
"#
    )
}

/// What the guest reported.
#[derive(Clone, Debug)]
pub struct ReflectReport {
    pub frames: u64,
    pub sent: u64,
    pub received: u64,
    /// Negotiated virtio feature bits as sysfs prints them (char i = bit i).
    pub feature_bits: String,
}

impl ReflectReport {
    pub fn has_feature(&self, bit: usize) -> bool {
        self.feature_bits.as_bytes().get(bit) == Some(&b'1')
    }

    /// Names of the negotiated feature bits.
    pub fn feature_names(&self) -> Vec<String> {
        feature_names(&self.feature_bits)
    }
}

/// Parses the script's markers and checks that at least `frames` frames were sent and
/// came back. Errors carry the console.
pub fn check_reflect_output(console: &str, frames: u32) -> Result<ReflectReport> {
    let r = super::guest::marker_fields(console, "VW-REFLECT");
    let f = super::guest::marker_fields(console, "VW-FEATURES");
    if let Some(e) = r.get("error") {
        bail!("guest reflect script failed: {e}; console:\n{console}");
    }
    let num = |k: &str| -> Result<u64> {
        r.get(k)
            .with_context(|| format!("no VW-REFLECT {k}= on the console:\n{console}"))?
            .parse()
            .with_context(|| format!("VW-REFLECT {k}= is not a number"))
    };
    let report = ReflectReport {
        frames: num("frames")?,
        sent: num("sent")?,
        received: num("received")?,
        feature_bits: f.get("bits").cloned().context("no VW-FEATURES bits= on the console")?,
    };
    if report.frames != u64::from(frames) {
        bail!("the guest ran the script for {} frames, expected {frames}", report.frames);
    }
    if report.sent < report.frames {
        bail!("guest sent only {} of {frames} frames; console:\n{console}", report.sent);
    }
    if report.received < report.frames {
        bail!(
            "guest sent {} frames but only {} came back (want >= {frames}); console:\n{console}",
            report.sent,
            report.received
        );
    }
    Ok(report)
}

/// virtio-net feature bit numbers (virtio 1.x spec, section 5.1.3; common bits 6.).
pub mod bits {
    pub const CSUM: usize = 0;
    pub const GUEST_CSUM: usize = 1;
    pub const CTRL_GUEST_OFFLOADS: usize = 2;
    pub const MTU: usize = 3;
    pub const MAC: usize = 5;
    pub const GUEST_TSO4: usize = 7;
    pub const GUEST_TSO6: usize = 8;
    pub const GUEST_ECN: usize = 9;
    pub const GUEST_UFO: usize = 10;
    pub const HOST_TSO4: usize = 11;
    pub const HOST_TSO6: usize = 12;
    pub const HOST_ECN: usize = 13;
    pub const HOST_UFO: usize = 14;
    pub const MRG_RXBUF: usize = 15;
    pub const STATUS: usize = 16;
    pub const CTRL_VQ: usize = 17;
    pub const CTRL_RX: usize = 18;
    pub const CTRL_VLAN: usize = 19;
    pub const GUEST_ANNOUNCE: usize = 21;
    pub const MQ: usize = 22;
    pub const CTRL_MAC_ADDR: usize = 23;
    pub const RING_INDIRECT_DESC: usize = 28;
    pub const RING_EVENT_IDX: usize = 29;
    pub const VERSION_1: usize = 32;
    pub const ACCESS_PLATFORM: usize = 33;
    pub const RING_PACKED: usize = 34;
    pub const IN_ORDER: usize = 35;
    pub const ORDER_PLATFORM: usize = 36;
    pub const NOTIFICATION_DATA: usize = 38;
}

/// Names for a sysfs feature bit string (unknown bits as `bit<N>`).
pub fn feature_names(bitstring: &str) -> Vec<String> {
    use bits::*;
    let names: &[(usize, &str)] = &[
        (CSUM, "CSUM"),
        (GUEST_CSUM, "GUEST_CSUM"),
        (CTRL_GUEST_OFFLOADS, "CTRL_GUEST_OFFLOADS"),
        (MTU, "MTU"),
        (MAC, "MAC"),
        (GUEST_TSO4, "GUEST_TSO4"),
        (GUEST_TSO6, "GUEST_TSO6"),
        (GUEST_ECN, "GUEST_ECN"),
        (GUEST_UFO, "GUEST_UFO"),
        (HOST_TSO4, "HOST_TSO4"),
        (HOST_TSO6, "HOST_TSO6"),
        (HOST_ECN, "HOST_ECN"),
        (HOST_UFO, "HOST_UFO"),
        (MRG_RXBUF, "MRG_RXBUF"),
        (STATUS, "STATUS"),
        (CTRL_VQ, "CTRL_VQ"),
        (CTRL_RX, "CTRL_RX"),
        (CTRL_VLAN, "CTRL_VLAN"),
        (GUEST_ANNOUNCE, "GUEST_ANNOUNCE"),
        (MQ, "MQ"),
        (CTRL_MAC_ADDR, "CTRL_MAC_ADDR"),
        (RING_INDIRECT_DESC, "RING_INDIRECT_DESC"),
        (RING_EVENT_IDX, "RING_EVENT_IDX"),
        (VERSION_1, "VERSION_1"),
        (ACCESS_PLATFORM, "ACCESS_PLATFORM"),
        (RING_PACKED, "RING_PACKED"),
        (IN_ORDER, "IN_ORDER"),
        (ORDER_PLATFORM, "ORDER_PLATFORM"),
        (NOTIFICATION_DATA, "NOTIFICATION_DATA"),
    ];
    bitstring
        .bytes()
        .enumerate()
        .filter(|&(_, b)| b == b'1')
        .map(|(i, _)| {
            names
                .iter()
                .find(|(n, _)| *n == i)
                .map(|(_, s)| s.to_string())
                .unwrap_or_else(|| format!("bit{i}"))
        })
        .collect()
}
