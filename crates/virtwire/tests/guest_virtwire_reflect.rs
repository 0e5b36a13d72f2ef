//! A Linux guest (Debian's kernel and its virtio_net driver, QEMU under TCG) on a virtwire
//! port with `diag = "reflect"`: the driver negotiates with virtwire's device, the link
//! comes up, and every frame the guest sends comes back to it. Cases cover both ring
//! layouts, both connection directions, two queue pairs, the PCI transport, and a driver
//! that is unloaded and loaded again.

mod support;

use std::time::Duration;

use support::daemon::{final_counter, Daemon};
use support::guest::{scratch_dir, Guest, GuestSpec, Transport};
use support::reflect::{bits, check_reflect_output, reflect_script};

const FRAMES: u32 = 20;
const BOOT_AND_RUN: Duration = Duration::from_secs(180);

struct Case {
    name: &'static str,
    /// virtwire listens (QEMU connects with reconnect=1); else QEMU listens.
    virtwire_listens: bool,
    packed: bool,
    queues: u16,
    transport: Transport,
    /// Shell run before the reflect check (e.g. reloading the driver).
    before: &'static str,
}

/// Unloads and reloads virtio_net, then configures eth0 again: the device sees a reset
/// (GET_VRING_BASE on every ring) and a fresh setup.
const RELOAD: &str = r#"
m=$(grep /virtio_net.ko /etc/modules.order)
rmmod virtio_net || { echo "VW-REFLECT error=rmmod"; exit 2; }
[ -e /sys/class/net/eth0 ] && { echo "VW-REFLECT error=still-there"; exit 2; }
insmod "$m" || { echo "VW-REFLECT error=insmod"; exit 2; }
i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do usleep 100000; i=$((i+1)); done
ip addr add 10.0.0.1/24 dev eth0
ip link set eth0 up
echo "VW-RELOADED"
"#;

fn run(case: Case) {
    let dir = scratch_dir(case.name);
    let sock = dir.join("vm.sock");
    let config = format!(
        "[[port]]\nname = 'vm'\ntype = 'vhost-user'\nsocket = '{}'\nmode = '{}'\nqueue_pairs = {}\ndiag = 'reflect'\n",
        sock.display(),
        if case.virtwire_listens { "server" } else { "client" },
        case.queues
    );
    let spec = GuestSpec {
        vhost_user_socket: sock.clone(),
        socket_server: !case.virtwire_listens,
        ip: "10.0.0.1/24".into(),
        queues: case.queues,
        vcpus: case.queues,
        layout_packed: case.packed,
        transport: case.transport,
        script: format!("{}\n{}", case.before, reflect_script("10.0.0.2", FRAMES)),
        ..GuestSpec::new(case.name)
    };
    // Whoever listens starts first.
    let (daemon, guest) = if case.virtwire_listens {
        let d = Daemon::start(dir.path(), &config, std::slice::from_ref(&sock));
        (d, Guest::boot(spec).expect("boot guest"))
    } else {
        let g = Guest::boot(spec).expect("boot guest");
        (Daemon::start(dir.path(), &config, &[]), g)
    };
    let out = guest.wait_exit(BOOT_AND_RUN).expect("guest ran to the end");
    let log = daemon.stop();
    eprintln!("{}: virtwire log:\n{log}", case.name);
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
    assert!(report.received >= FRAMES as u64);

    // The guest's driver negotiated with virtwire, as virtwire logged it.
    assert!(report.has_feature(bits::VERSION_1), "VERSION_1 not negotiated");
    assert_eq!(report.has_feature(bits::RING_PACKED), case.packed, "ring layout");
    assert!(log.contains("port vm: features negotiated"), "no negotiation logged:\n{log}");
    let layout = if case.packed { "packed layout" } else { "split layout" };
    assert!(log.contains(layout), "no {layout} ring ran:\n{log}");
    if case.queues > 1 {
        assert!(report.has_feature(bits::MQ), "MQ not negotiated");
        let last_ring = 2 * case.queues - 1;
        assert!(log.contains(&format!("ring {last_ring} running")), "ring {last_ring} never ran:\n{log}");
    }
    if !case.before.is_empty() {
        assert!(out.console.contains("VW-RELOADED"), "driver reload did not finish:\n{}", out.console);
    }
    // virtwire reflected at least what the guest counted.
    let reflected = final_counter(&log, "vm", "to guest").expect("final counters in the log");
    assert!(reflected >= FRAMES as u64, "virtwire reflected {reflected} frames:\n{log}");
    assert_eq!(final_counter(&log, "vm", "ring errors"), Some(0));
}

#[test]
fn split_virtwire_listens() {
    run(Case {
        name: "vw-split",
        virtwire_listens: true,
        packed: false,
        queues: 1,
        transport: Transport::Mmio,
        before: "",
    });
}

#[test]
fn packed_qemu_listens() {
    run(Case {
        name: "vw-packed",
        virtwire_listens: false,
        packed: true,
        queues: 1,
        transport: Transport::Mmio,
        before: "",
    });
}

#[test]
fn two_queue_pairs_on_pci() {
    run(Case {
        name: "vw-mq2-pci",
        virtwire_listens: true,
        packed: false,
        queues: 2,
        transport: Transport::Pci,
        before: "",
    });
}

#[test]
fn driver_reload_gets_traffic_again() {
    run(Case {
        name: "vw-reload",
        virtwire_listens: true,
        packed: false,
        queues: 1,
        transport: Transport::Mmio,
        before: RELOAD,
    });
}
