//! Interop with DPDK: testpmd's virtio-user PMD (a DPDK application playing the guest)
//! attached to virtwire's device, in both ring layouts, with and without mergeable
//! receive buffers, with one and two queue pairs. Counts are checked on both sides:
//! what testpmd sent, virtwire received, reflected, and testpmd received back.

mod support;

use std::time::Duration;

use support::daemon::{final_counter, Daemon};
use support::guest::scratch_dir;
use support::testpmd::{Testpmd, TestpmdSpec};

struct Case {
    name: &'static str,
    packed: bool,
    mrg_rxbuf: bool,
    queues: u16,
    /// virtwire's diag mode, and testpmd's forwarding mode facing it.
    diag: &'static str,
    forward_mode: &'static str,
}

/// One testpmd with hugepages at a time: two would compete for the two CPUs and for
/// the reserved hugepages.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(c: Case) {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch_dir(c.name);
    let sock = dir.join("vw.sock");
    let config = format!(
        "[[port]]\nname = 'pmd'\ntype = 'vhost-user'\nsocket = '{}'\nqueue_pairs = {}\ndiag = '{}'\n",
        sock.display(),
        c.queues,
        c.diag
    );
    let daemon = Daemon::start(dir.path(), &config, std::slice::from_ref(&sock));
    let spec = TestpmdSpec {
        virtio_user: true,
        queues: c.queues,
        forward_mode: c.forward_mode.into(),
        tx_first: c.forward_mode == "io",
        extra_vdev_opts: format!("packed_vq={},mrg_rxbuf={}", u8::from(c.packed), u8::from(c.mrg_rxbuf)),
        ..TestpmdSpec::new(c.name, sock.clone())
    };
    let pmd = Testpmd::start(spec, Duration::from_secs(60)).expect("testpmd starts");
    std::thread::sleep(Duration::from_secs(2));
    let st = pmd.stop(Duration::from_secs(20)).expect("testpmd stops with statistics");
    let log = daemon.stop();
    eprintln!("{}: testpmd rx={} tx={}; virtwire:\n{log}", c.name, st.rx_packets, st.tx_packets);
    // SIGTERM stops virtwire cleanly: it reports its counters and removes its socket.
    assert!(log.contains("signal 15: stopping"), "no clean stop:\n{log}");
    assert!(!sock.exists(), "socket {} left behind", sock.display());

    let from_guest = final_counter(&log, "pmd", "from guest").expect("counters");
    let to_guest = final_counter(&log, "pmd", "to guest").expect("counters");
    assert_eq!(final_counter(&log, "pmd", "ring errors"), Some(0), "{log}");
    let layout = if c.packed { "packed layout" } else { "split layout" };
    assert!(log.contains(layout), "{layout} expected:\n{log}");
    let last_ring = 2 * c.queues - 1;
    assert!(log.contains(&format!("ring {last_ring} running")), "ring {last_ring} never ran:\n{log}");
    let mrg_bit = 1u64 << 15;
    let negotiated = log
        .lines()
        .find_map(|l| l.split("features negotiated 0x").nth(1))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .expect("negotiation logged");
    assert_eq!(negotiated & mrg_bit != 0, c.mrg_rxbuf, "MRG_RXBUF negotiation: {negotiated:#x}");

    match c.diag {
        "reflect" => {
            assert!(st.rx_packets > 10_000, "too little traffic: {}", st.rx_packets);
            // Everything testpmd received came from virtwire, which reflected exactly
            // what it took from testpmd; at most the in-flight frames differ.
            assert_eq!(from_guest, to_guest, "virtwire reflected a different count");
            assert!(st.rx_packets <= to_guest && to_guest <= st.tx_packets, "{st:?} vs {to_guest}");
            assert!(
                st.tx_packets - st.rx_packets <= 1024 * c.queues as u64,
                "{} lost",
                st.tx_packets - st.rx_packets
            );
        }
        "sink" => {
            assert!(st.tx_packets > 10_000, "too little traffic: {}", st.tx_packets);
            assert!(from_guest <= st.tx_packets && st.tx_packets - from_guest <= 1024 * c.queues as u64);
        }
        "source" => {
            assert!(st.rx_packets > 10_000, "too little traffic: {}", st.rx_packets);
            assert!(st.rx_packets <= to_guest, "testpmd got more than virtwire sent");
        }
        _ => unreachable!(),
    }
}

#[test]
fn split_mergeable_reflect() {
    run(Case {
        name: "pmd-split",
        packed: false,
        mrg_rxbuf: true,
        queues: 1,
        diag: "reflect",
        forward_mode: "io",
    });
}

#[test]
fn packed_mergeable_reflect() {
    run(Case {
        name: "pmd-packed",
        packed: true,
        mrg_rxbuf: true,
        queues: 1,
        diag: "reflect",
        forward_mode: "io",
    });
}

#[test]
fn split_without_mergeable_two_queues_reflect() {
    run(Case {
        name: "pmd-split-q2",
        packed: false,
        mrg_rxbuf: false,
        queues: 2,
        diag: "reflect",
        forward_mode: "io",
    });
}

#[test]
fn packed_two_queues_reflect() {
    run(Case {
        name: "pmd-packed-q2",
        packed: true,
        mrg_rxbuf: false,
        queues: 2,
        diag: "reflect",
        forward_mode: "io",
    });
}

#[test]
fn txonly_into_sink() {
    run(Case {
        name: "pmd-sink",
        packed: false,
        mrg_rxbuf: true,
        queues: 1,
        diag: "sink",
        forward_mode: "txonly",
    });
}

#[test]
fn source_into_rxonly() {
    run(Case {
        name: "pmd-source",
        packed: true,
        mrg_rxbuf: true,
        queues: 1,
        diag: "source",
        forward_mode: "rxonly",
    });
}
