//! A Linux guest (QEMU, TCG) on DPDK testpmd's vhost PMD in macswap mode: every frame the
//! guest sends comes back to it. Proves the guest harness (tests/support/guest.rs) and
//! the guest-side reflect check (tests/support/reflect.rs) against a reference vhost-user
//! backend, in both connection directions and both ring layouts; virtwire's own device
//! with `diag = "reflect"` runs the same guest side.

mod support;

use std::time::Duration;

use support::guest::{scratch_dir, Guest, GuestSpec, Transport};
use support::reflect::{bits, check_reflect_output, reflect_script};
use support::testpmd::{Testpmd, TestpmdSpec};

const FRAMES: u32 = 20;
const BOOT_AND_RUN: Duration = Duration::from_secs(180);
const TESTPMD_START: Duration = Duration::from_secs(60);

struct Case {
    name: &'static str,
    /// QEMU listens on the socket and testpmd connects (else the reverse).
    qemu_listens: bool,
    packed: bool,
    queues: u16,
    transport: Transport,
}

fn run(case: Case) {
    let dir = scratch_dir(case.name);
    let sock = dir.join("vhost.sock");
    let spec = GuestSpec {
        vhost_user_socket: sock.clone(),
        socket_server: case.qemu_listens,
        ip: "10.0.0.1/24".into(),
        queues: case.queues,
        vcpus: case.queues,
        layout_packed: case.packed,
        transport: case.transport,
        script: reflect_script("10.0.0.2", FRAMES),
        ..GuestSpec::new(case.name)
    };
    let pmd_spec = TestpmdSpec {
        client: case.qemu_listens,
        queues: case.queues,
        ..TestpmdSpec::new(case.name, sock.clone())
    };

    // Whoever listens starts first (QEMU blocks at startup until the handshake is done,
    // and a connecting testpmd retries until the socket exists).
    let (guest, pmd) = if case.qemu_listens {
        let guest = Guest::boot(spec).expect("boot guest");
        let pmd = Testpmd::start(pmd_spec, TESTPMD_START).expect("start testpmd");
        (guest, pmd)
    } else {
        let pmd = Testpmd::start(pmd_spec, TESTPMD_START).expect("start testpmd");
        let guest = Guest::boot(spec).expect("boot guest");
        (guest, pmd)
    };
    eprintln!("{}: {}", case.name, guest.command_line());

    let out = guest.wait_exit(BOOT_AND_RUN).expect("guest ran to the end");
    let stats = pmd.stop(Duration::from_secs(20)).expect("testpmd stops with statistics");
    eprintln!(
        "{}: boot to eth0 up {:?}, total {:?}; testpmd rx={} tx={} tx_dropped={}",
        case.name, out.boot_time, out.total_time, stats.rx_packets, stats.tx_packets, stats.tx_dropped
    );

    if std::env::var_os("VIRTWIRE_SHOW_CONSOLE").is_some() {
        eprintln!("{}: console:\n{}", case.name, out.console);
    }
    let report =
        check_reflect_output(&out.console, FRAMES).unwrap_or_else(|e| panic!("{}: {e:#}", case.name));
    eprintln!(
        "{}: sent {} received {}; features {}",
        case.name,
        report.sent,
        report.received,
        report.feature_names().join(",")
    );
    assert_eq!(out.status, 0, "guest script failed; console:\n{}", out.console);
    assert!(report.has_feature(bits::VERSION_1), "not virtio 1.0: {}", report.feature_bits);
    assert_eq!(report.has_feature(bits::RING_PACKED), case.packed, "packed ring negotiation");
    if case.queues > 1 {
        assert!(report.has_feature(bits::MQ), "MQ not negotiated: {}", report.feature_bits);
    }
    assert!(
        stats.rx_packets >= u64::from(FRAMES) && stats.tx_packets >= u64::from(FRAMES),
        "testpmd saw rx={} tx={}, want >= {FRAMES} each",
        stats.rx_packets,
        stats.tx_packets
    );
}

#[test]
fn guest_reflect_split_backend_listens() {
    run(Case {
        name: "split-srv",
        qemu_listens: false,
        packed: false,
        queues: 1,
        transport: Transport::Mmio,
    });
}

#[test]
fn guest_reflect_packed_qemu_listens() {
    run(Case { name: "packed-cli", qemu_listens: true, packed: true, queues: 1, transport: Transport::Mmio });
}

#[test]
fn guest_reflect_two_queues() {
    run(Case { name: "mq2", qemu_listens: false, packed: false, queues: 2, transport: Transport::Mmio });
}

#[test]
fn guest_reflect_pci() {
    run(Case { name: "pci", qemu_listens: false, packed: false, queues: 1, transport: Transport::Pci });
}
