//! virtwire as an L2 switch between real Linux guests (Debian's kernel and virtio_net under
//! QEMU TCG, busybox user space, iperf3): two VMs talking, a VM and a network namespace
//! on a tap port, VLAN access and trunk ports, source-MAC anti-spoofing, a multiqueue
//! guest spreading traffic over its queue pairs, and ports added and removed through the
//! CLI while traffic flows.
//!
//! The guests are heavy (one TCG vCPU each on a small machine), so the cases run one at a
//! time whatever the test harness's thread count.

mod support;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use support::guest::{mac_for, scratch_dir, GuestSpec, Transport};
use support::switch::{
    assert_port_clean, boot, done, guest_modules, iperf_report_from, ping_received, report, tap_port,
    vhost_user_port, wait, wait_for_interface, IperfReport, NetNs, Switch, GUEST_PRELUDE, MIN_IPERF_BYTES,
};

/// Serialises the guest cases of this file.
static GUESTS: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    GUESTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Echo requests per positive ping check, and the answers required.
const PINGS: u64 = 5;
const PINGS_OK: u64 = 4;

/// A guest on `socket` with address `ip`, running `script` after the shared prelude.
fn spec(name: &str, socket: &std::path::Path, ip: &str, script: &str) -> GuestSpec {
    GuestSpec {
        vhost_user_socket: socket.to_path_buf(),
        ip: ip.to_string(),
        script: format!("{GUEST_PRELUDE}\n{script}\n"),
        console_input: true,
        ..GuestSpec::new(name)
    }
}

/// The `received=` count of marker `VW-PING-<tag>`.
fn ping_marker(console: &str, tag: &str) -> u64 {
    let f = support::guest::marker_fields(console, &format!("VW-PING-{tag}"));
    f.get("received")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VW-PING-{tag} received= marker; console:\n{console}"))
}

fn assert_ping_ok(guest: &str, console: &str, tag: &str) {
    let n = ping_marker(console, tag);
    assert!(n >= PINGS_OK, "{guest}: ping {tag}: {n} of {PINGS} answered; console:\n{console}");
}

fn assert_ping_fails(guest: &str, console: &str, tag: &str) {
    let n = ping_marker(console, tag);
    assert_eq!(n, 0, "{guest}: ping {tag} was answered {n} times; console:\n{console}");
}

fn assert_clean(sw: &Switch, port: &str) {
    assert_port_clean(sw, port);
}

/// Pings `addr` from namespace `ns` (busybox ping): the answers and the whole output.
fn ns_ping(ns: &NetNs, addr: &str, count: u64) -> (u64, String) {
    let count = count.to_string();
    let out =
        ns.exec("busybox", &["ping", "-c", &count, "-i", "0.2", "-W", "2", addr]).expect("busybox ping");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let answered = ping_received(&text).unwrap_or_else(|| panic!("no ping summary:\n{text}"));
    (answered, text)
}

/// Two VMs on two vhost-user ports: ping both ways, then iperf3 TCP both ways.
#[test]
fn two_vms_ping_and_iperf3() {
    let _serial = one_at_a_time();
    let t0 = Instant::now();
    let dir = scratch_dir("sw-two");
    let (s1, s2) = (dir.join("vm1.sock"), dir.join("vm2.sock"));
    let (m1, m2) = (mac_for("sw2-vm1"), mac_for("sw2-vm2"));
    let config = vhost_user_port("vm1", &s1, &m1, "") + &vhost_user_port("vm2", &s2, &m2, "");
    let sw = Switch::start(&dir, &config, &[s1.clone(), s2.clone()]);

    let mut vm1 = boot(GuestSpec {
        mac: m1,
        ..spec(
            "sw2-vm1",
            &s1,
            "10.0.0.1/24",
            "iperf3 -s >/tmp/iperf3-server.log 2>&1 &\n\
             vw_wait_ping 10.0.0.2 120\n\
             vw_ping to2 10.0.0.2 5\n\
             vw_done",
        )
    });
    let mut vm2 = boot(GuestSpec {
        mac: m2,
        ..spec(
            "sw2-vm2",
            &s2,
            "10.0.0.2/24",
            "vw_wait_ping 10.0.0.1 120\n\
             vw_ping to1 10.0.0.1 5\n\
             vw_iperf fwd -c 10.0.0.1 -t 4\n\
             vw_iperf rev -c 10.0.0.1 -t 4 -R\n\
             vw_done",
        )
    });
    wait(&mut vm1, "VW-DONE");
    wait(&mut vm2, "VW-DONE");
    let (c1, c2) = (vm1.console_so_far(), vm2.console_so_far());
    assert_ping_ok("vm1", &c1, "to2");
    assert_ping_ok("vm2", &c2, "to1");
    let fwd = report(&c2, "fwd");
    let rev = report(&c2, "rev");

    // The switch carried it: what vm2 sent went out to vm1 and back the other way.
    let stats = sw.stats();
    let (p1, p2) = (stats.port("vm1"), stats.port("vm2"));
    eprintln!("vm1: {p1}\nvm2: {p2}");
    assert!(p2.rx_bytes() >= fwd.received_bytes, "vm2 sent {} B through the switch", p2.rx_bytes());
    assert!(p1.tx_bytes() >= fwd.received_bytes, "vm1 got {} B from the switch", p1.tx_bytes());
    assert!(p1.rx_bytes() >= rev.received_bytes, "vm1 sent {} B through the switch", p1.rx_bytes());
    assert!(p2.tx_bytes() >= rev.received_bytes, "vm2 got {} B from the switch", p2.tx_bytes());
    assert_clean(&sw, "vm1");
    assert_clean(&sw, "vm2");
    drop((vm1, vm2));
    done("two_vms_ping_and_iperf3", t0, sw);
}

/// A VM and a network namespace of the host on a tap port: ping both ways, iperf3 both ways.
#[test]
fn vm_and_host_namespace_over_tap() {
    let _serial = one_at_a_time();
    let t0 = Instant::now();
    let pid = std::process::id();
    let ifname = format!("vwt{pid}");
    let dir = scratch_dir("sw-tap");
    let s1 = dir.join("vm1.sock");
    let m1 = mac_for("swt-vm1");
    let config = vhost_user_port("vm1", &s1, &m1, "") + &tap_port("host", &ifname, "");
    let sw = Switch::start(&dir, &config, std::slice::from_ref(&s1));
    wait_for_interface(&ifname, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}:\n{}", sw.log_text()));
    let ns = NetNs::create(&format!("vwtns{pid}")).expect("create netns");
    ns.adopt(&ifname, "10.0.0.100/24").expect("move the tap into the namespace");

    let mut vm1 = boot(GuestSpec {
        mac: m1,
        ..spec(
            "swt-vm1",
            &s1,
            "10.0.0.1/24",
            "iperf3 -s >/tmp/iperf3-server.log 2>&1 &\n\
             vw_wait_ping 10.0.0.100 120\n\
             vw_ping host 10.0.0.100 5\n\
             vw_done",
        )
    });
    wait(&mut vm1, "VW-DONE");
    let c1 = vm1.console_so_far();
    assert_ping_ok("vm1", &c1, "host");

    // From the namespace to the VM.
    let (answered, text) = ns_ping(&ns, "10.0.0.1", PINGS);
    assert!(answered >= PINGS_OK, "namespace -> vm1: {answered} of {PINGS} answered:\n{text}");

    let iperf = |tag: &str, extra: &[&str]| -> IperfReport {
        let mut args = vec!["--json", "-c", "10.0.0.1", "-t", "4"];
        args.extend_from_slice(extra);
        let mut last = String::new();
        for _ in 0..10 {
            let out = ns.exec("iperf3", &args).expect("run iperf3 (install iperf3)");
            last = String::from_utf8_lossy(&out.stdout).into_owned();
            let v: serde_json::Value = match serde_json::from_str(&last) {
                Ok(v) => v,
                Err(e) => panic!("iperf3 {tag} printed no JSON ({e}):\n{last}"),
            };
            if v.get("error").is_some_and(|e| e.to_string().contains("unable to connect")) {
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
            let r = iperf_report_from(&v, out.status.code().unwrap_or(-1))
                .unwrap_or_else(|e| panic!("iperf3 {tag}: {e:#}"));
            eprintln!(
                "iperf3 {tag}: sent {} B, received {} B, {:.1} Mbit/s",
                r.sent_bytes,
                r.received_bytes,
                r.received_bps / 1e6
            );
            assert!(
                r.sent_bytes >= MIN_IPERF_BYTES && r.received_bytes >= MIN_IPERF_BYTES,
                "iperf3 {tag} moved too little: {r:?}"
            );
            return r;
        }
        panic!("iperf3 {tag} never reached the VM:\n{last}");
    };
    let to_vm = iperf("host-to-vm", &[]);
    let from_vm = iperf("vm-to-host", &["-R"]);

    let stats = sw.stats();
    let (pv, ph) = (stats.port("vm1"), stats.port("host"));
    eprintln!("vm1: {pv}\nhost: {ph}");
    assert!(ph.rx_bytes() >= to_vm.received_bytes, "the tap port took in {} B", ph.rx_bytes());
    assert!(pv.tx_bytes() >= to_vm.received_bytes, "vm1 got {} B", pv.tx_bytes());
    assert!(pv.rx_bytes() >= from_vm.received_bytes, "vm1 sent {} B", pv.rx_bytes());
    assert!(ph.tx_bytes() >= from_vm.received_bytes, "the tap port got {} B", ph.tx_bytes());
    assert_clean(&sw, "vm1");
    drop(vm1);
    drop(ns);
    done("vm_and_host_namespace_over_tap", t0, sw);
}

/// Access ports on VLANs 10 and 20 and a trunk carrying both. The trunk is a guest with
/// 802.1Q subinterfaces (the guest kernel's 8021q module; the host kernel may be built
/// without one), so its frames are tagged and it only understands tagged frames.
/// A second trunk, a tap in a network namespace with native VLAN 10, reaches VLAN 10
/// untagged and nothing else.
#[test]
fn vlan_access_and_trunk_ports() {
    let _serial = one_at_a_time();
    let t0 = Instant::now();
    let dir = scratch_dir("sw-vlan");
    let sock = |n: &str| dir.join(format!("{n}.sock"));
    let names = ["vm1", "vm2", "vm3", "trunk"];
    let macs: Vec<String> = names.iter().map(|n| mac_for(&format!("swv-{n}"))).collect();
    let extra = ["vlan = 10", "vlan = 10", "vlan = 20", "trunks = [10, 20]"];
    let config: String =
        (0..4).map(|i| vhost_user_port(names[i], &sock(names[i]), &macs[i], extra[i])).collect();
    let socks: Vec<_> = names.iter().map(|n| sock(n)).collect();
    let pid = std::process::id();
    let ifname = format!("vwv{pid}");
    let config = config + &tap_port("tap", &ifname, "trunks = [10, 20]\nnative_vlan = 10");
    let sw = Switch::start(&dir, &config, &socks);
    wait_for_interface(&ifname, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}:\n{}", sw.log_text()));
    let ns = NetNs::create(&format!("vwvns{pid}")).expect("create netns");
    let no_ipv6 = "for c in all default; do echo 1 >/proc/sys/net/ipv6/conf/$c/disable_ipv6 || exit 1; done";
    let out = ns.exec("sh", &["-c", no_ipv6]).expect("disable IPv6");
    assert!(out.status.success(), "disable IPv6 in the namespace: {out:?}");
    ns.adopt(&ifname, "10.0.0.5/24").expect("move the tap into the namespace");

    // No IPv6: the only frames are the ones the scripts cause.
    let vspec = |i: usize, ip: &str, script: &str| GuestSpec {
        mac: macs[i].clone(),
        extra_cmdline: "ipv6.disable=1".into(),
        ..spec(&format!("swv-{}", names[i]), &socks[i], ip, script)
    };
    let (modules, insmod) = guest_modules(&["8021q"]).expect("the guest kernel's 8021q module");
    let mut vm1 = boot(vspec(
        0,
        "10.0.0.1/24",
        "vw_go p1\n\
         vw_wait_ping 10.0.0.2 60\n\
         vw_ping to2 10.0.0.2 5\n\
         vw_ping to3 10.0.0.3 3\n\
         vw_done",
    ));
    let mut vm2 = boot(vspec(
        1,
        "10.0.0.2/24",
        "vw_go p1\n\
         vw_wait_ping 10.0.0.1 60\n\
         vw_ping to1 10.0.0.1 5\n\
         vw_ping to3 10.0.0.3 3\n\
         vw_done",
    ));
    let mut vm3 = boot(vspec(
        2,
        "10.0.0.3/24",
        "ip addr add 10.0.20.3/24 dev eth0\n\
         vw_go p1\n\
         vw_ping to1 10.0.0.1 3\n\
         vw_ping to2 10.0.0.2 3\n\
         vw_done",
    ));
    let mut trunk = boot(GuestSpec {
        files: modules,
        ..vspec(
            3,
            "",
            &format!(
                "{insmod}\
                 vconfig add eth0 10 && ip link set eth0.10 name v10 || echo 'VW-ERROR vlan 10'\n\
                 vconfig add eth0 20 && ip link set eth0.20 name v20 || echo 'VW-ERROR vlan 20'\n\
                 ip addr add 10.0.0.4/24 dev v10\n\
                 ip addr add 10.0.20.4/24 dev v20\n\
                 ip link set v10 up\n\
                 ip link set v20 up\n\
                 cat /proc/net/vlan/config\n\
                 vw_go p2\n\
                 vw_wait_ping 10.0.0.1 60\n\
                 vw_ping v10to1 10.0.0.1 5\n\
                 vw_wait_ping 10.0.20.3 60\n\
                 vw_ping v20to3 10.0.20.3 5\n\
                 vw_ping v10to3 10.0.0.3 3\n\
                 echo \"VW-VLANRX v10=$(cat /sys/class/net/v10/statistics/rx_packets) \
                 v20=$(cat /sys/class/net/v20/statistics/rx_packets)\"\n\
                 vw_done"
            ),
        )
    });

    // Phase 1: every guest is up; the access ports talk among themselves, the tap trunk
    // talks to VLAN 10 untagged; the trunk guest only listens.
    for g in [&mut vm1, &mut vm2, &mut vm3] {
        wait(g, "VW-WAIT p1");
    }
    wait(&mut trunk, "VW-WAIT p2");
    let tc = trunk.console_so_far();
    assert!(!tc.contains("VW-ERROR"), "trunk guest setup failed:\n{tc}");
    for g in [&mut vm1, &mut vm2, &mut vm3] {
        g.send_console("go").unwrap();
    }
    for g in [&mut vm1, &mut vm2, &mut vm3] {
        wait(g, "VW-DONE");
    }
    let (c1, c2, c3) = (vm1.console_so_far(), vm2.console_so_far(), vm3.console_so_far());
    assert_ping_ok("vm1", &c1, "to2");
    assert_ping_ok("vm2", &c2, "to1");
    assert_ping_fails("vm1", &c1, "to3");
    assert_ping_fails("vm2", &c2, "to3");
    assert_ping_fails("vm3", &c3, "to1");
    assert_ping_fails("vm3", &c3, "to2");
    // The tap trunk's untagged frames belong to VLAN 10.
    let (answered, text) = ns_ping(&ns, "10.0.0.1", PINGS);
    assert!(answered >= PINGS_OK, "tap trunk (native VLAN 10) -> vm1: {answered} of {PINGS}:\n{text}");
    let (answered, text) = ns_ping(&ns, "10.0.0.3", 3);
    assert_eq!(answered, 0, "tap trunk (native VLAN 10) reached vm3 on VLAN 20:\n{text}");
    let s1 = sw.stats();
    for n in names.iter().chain(&["tap"]) {
        eprintln!("after phase 1: {n}: {}", s1.port(n));
    }
    // vm3 transmitted (its ARP requests reached the switch), yet nothing came to it: no
    // frame of VLAN 10 (from vm1, vm2 or the tap trunk) was delivered to the VLAN 20 port.
    assert!(s1.port("vm3").rx_packets() > 0, "vm3 sent nothing: {}", s1.port("vm3"));
    assert_eq!(s1.port("vm3").tx_packets(), 0, "frames reached the VLAN 20 port: {}", s1.port("vm3"));
    assert!(s1.port("vm1").tx_packets() > 0 && s1.port("vm2").tx_packets() > 0);
    let tap = s1.port("tap");
    assert!(tap.rx_packets() > 0 && tap.tx_packets() > 0, "tap trunk: {tap}");

    // Phase 2: the trunk reaches VLAN 10 and VLAN 20 through its tagged subinterfaces.
    trunk.send_console("go").unwrap();
    wait(&mut trunk, "VW-DONE");
    let tc = trunk.console_so_far();
    assert_ping_ok("trunk", &tc, "v10to1");
    assert_ping_ok("trunk", &tc, "v20to3");
    assert_ping_fails("trunk", &tc, "v10to3");
    let rx = support::guest::marker_fields(&tc, "VW-VLANRX");
    for v in ["v10", "v20"] {
        let n: u64 = rx.get(v).and_then(|s| s.parse().ok()).unwrap_or(0);
        assert!(n >= PINGS_OK, "trunk's {v} received {n} tagged frames; console:\n{tc}");
    }
    let s2 = sw.stats();
    for n in names {
        eprintln!("after phase 2: {n}: {}", s2.port(n));
    }
    assert!(s2.port("vm3").tx_packets() >= PINGS_OK, "VLAN 20 traffic from the trunk: {}", s2.port("vm3"));
    assert!(s2.port("trunk").rx_packets() > 0 && s2.port("trunk").tx_packets() > 0);

    for n in names {
        assert_clean(&sw, n);
    }
    drop((vm1, vm2, vm3, trunk));
    drop(ns);
    done("vlan_access_and_trunk_ports", t0, sw);
}

/// A port restricted to its guest's MAC drops frames with any other source address.
#[test]
fn spoofed_source_mac_is_dropped() {
    let _serial = one_at_a_time();
    let t0 = Instant::now();
    let dir = scratch_dir("sw-spoof");
    let (s1, s2) = (dir.join("vm1.sock"), dir.join("vm2.sock"));
    let (m1, m2) = (mac_for("sws-vm1"), mac_for("sws-vm2"));
    let spoofed = "52:54:00:5b:00:f1";
    let config =
        vhost_user_port("vm1", &s1, &m1, &format!("macs = ['{m1}']")) + &vhost_user_port("vm2", &s2, &m2, "");
    let sw = Switch::start(&dir, &config, &[s1.clone(), s2.clone()]);

    let mut vm1 = boot(GuestSpec {
        mac: m1.clone(),
        ..spec(
            "sws-vm1",
            &s1,
            "10.0.0.1/24",
            &format!(
                "vw_wait_ping 10.0.0.2 120\n\
                 vw_ping before 10.0.0.2 5\n\
                 vw_go spoof\n\
                 ip link set eth0 address {spoofed} || {{ ip link set eth0 down; \
                 ip link set eth0 address {spoofed}; ip link set eth0 up; }}\n\
                 echo \"VW-MAC now=$(cat /sys/class/net/eth0/address)\"\n\
                 vw_ping spoofed 10.0.0.2 5\n\
                 vw_go restore\n\
                 ip link set eth0 address {m1} || {{ ip link set eth0 down; \
                 ip link set eth0 address {m1}; ip link set eth0 up; }}\n\
                 vw_wait_ping 10.0.0.2 30\n\
                 vw_ping after 10.0.0.2 5\n\
                 vw_done"
            ),
        )
    });
    let mut vm2 = boot(GuestSpec { mac: m2, ..spec("sws-vm2", &s2, "10.0.0.2/24", "vw_done") });
    wait(&mut vm2, "VW-DONE");

    wait(&mut vm1, "VW-WAIT spoof");
    assert_ping_ok("vm1", &vm1.console_so_far(), "before");
    let before = sw.port_stats("vm1");
    eprintln!("before: {before}");
    assert_eq!(before.num("/drops/spoofed"), 0, "frames with vm1's own MAC counted as spoofed: {before}");
    assert!(before.rx_packets() > 0);

    vm1.send_console("go").unwrap();
    wait(&mut vm1, "VW-WAIT restore");
    let c = vm1.console_so_far();
    let now = support::guest::marker_fields(&c, "VW-MAC");
    assert_eq!(now.get("now").map(String::as_str), Some(spoofed), "the guest's MAC did not change:\n{c}");
    assert_ping_fails("vm1", &c, "spoofed");
    let during = sw.port_stats("vm1");
    eprintln!("spoofed: {during}");
    assert!(during.num("/drops/spoofed") > 0, "no spoofed drops counted: {during}");

    vm1.send_console("go").unwrap();
    wait(&mut vm1, "VW-DONE");
    assert_ping_ok("vm1", &vm1.console_so_far(), "after");
    assert_clean(&sw, "vm1");
    assert_clean(&sw, "vm2");
    drop((vm1, vm2));
    done("spoofed_source_mac_is_dropped", t0, sw);
}

/// A guest with four queue pairs on two vCPUs sends through more than one of them.
#[test]
fn multiqueue_guest_uses_several_queues() {
    let _serial = one_at_a_time();
    let t0 = Instant::now();
    let dir = scratch_dir("sw-mq");
    let (s1, s2) = (dir.join("vm1.sock"), dir.join("vm2.sock"));
    let (m1, m2) = (mac_for("swm-vm1"), mac_for("swm-vm2"));
    let config = vhost_user_port("vm1", &s1, &m1, "queue_pairs = 4") + &vhost_user_port("vm2", &s2, &m2, "");
    let sw = Switch::start(&dir, &config, &[s1.clone(), s2.clone()]);

    let mut vm2 = boot(GuestSpec {
        mac: m2,
        ..spec(
            "swm-vm2",
            &s2,
            "10.0.0.2/24",
            "iperf3 -s -p 5201 >/tmp/s1.log 2>&1 &\n\
             iperf3 -s -p 5202 >/tmp/s2.log 2>&1 &\n\
             vw_done",
        )
    });
    // One sender pinned to each vCPU: the driver maps queue pairs 0 and 2 to CPU 0 and 1
    // and 3 to CPU 1 (XPS), so the two senders use different queues.
    let mut vm1 = boot(GuestSpec {
        mac: m1,
        queues: 4,
        vcpus: 2,
        transport: Transport::Pci,
        ..spec(
            "swm-vm1",
            &s1,
            "10.0.0.1/24",
            "echo \"VW-CHANNELS $(ethtool -l eth0 | awk '/^Combined/ { n = $2 } END { print \"combined=\" n }')\"\n\
             vw_wait_ping 10.0.0.2 120\n\
             vw_iperf_run mq0 -c 10.0.0.2 -p 5201 -t 5 -P 2 -A 0 &\n\
             p0=$!\n\
             vw_iperf_run mq1 -c 10.0.0.2 -p 5202 -t 5 -P 2 -A 1 &\n\
             wait $p0 $!\n\
             vw_iperf_print mq0\n\
             vw_iperf_print mq1\n\
             vw_done",
        )
    });
    wait(&mut vm2, "VW-DONE");
    wait(&mut vm1, "VW-DONE");
    let c1 = vm1.console_so_far();
    let ch = support::guest::marker_fields(&c1, "VW-CHANNELS");
    assert_eq!(ch.get("combined").map(String::as_str), Some("4"), "eth0 does not use 4 queue pairs:\n{c1}");
    report(&c1, "mq0");
    report(&c1, "mq1");

    let p = sw.port_stats("vm1");
    eprintln!("vm1: {p}");
    let queues = p.queues();
    assert_eq!(queues.len(), 4, "vm1 should have 4 queue pairs: {p}");
    let busy = queues.iter().filter(|(rx, tx)| rx + tx >= 100).count();
    assert!(busy >= 2, "traffic on {busy} queue pair(s) of vm1 only: {queues:?}");
    let busy_rx = queues.iter().filter(|(rx, _)| *rx >= 100).count();
    assert!(busy_rx >= 2, "vm1 transmitted on {busy_rx} queue pair(s) only: {queues:?}");
    let sum_rx: u64 = queues.iter().map(|q| q.0).sum();
    assert_eq!(sum_rx, p.rx_packets(), "queue counters do not add up: {p}");
    assert_clean(&sw, "vm1");
    assert_clean(&sw, "vm2");
    drop((vm1, vm2));
    done("multiqueue_guest_uses_several_queues", t0, sw);
}

/// Ports (a vhost-user port and a tap) added and removed through the CLI while an iperf3
/// stream runs between two VMs: the stream never stalls.
#[test]
fn ports_change_while_traffic_flows() {
    let _serial = one_at_a_time();
    let t0 = Instant::now();
    let dir = scratch_dir("sw-live");
    let (s1, s2, s3) = (dir.join("vm1.sock"), dir.join("vm2.sock"), dir.join("vm3.sock"));
    let (m1, m2) = (mac_for("swl-vm1"), mac_for("swl-vm2"));
    let config = vhost_user_port("vm1", &s1, &m1, "") + &vhost_user_port("vm2", &s2, &m2, "");
    let sw = Switch::start(&dir, &config, &[s1.clone(), s2.clone()]);

    let mut vm1 = boot(GuestSpec {
        mac: m1,
        ..spec("swl-vm1", &s1, "10.0.0.1/24", "iperf3 -s >/tmp/iperf3-server.log 2>&1 &\nvw_done")
    });
    let mut vm2 = boot(GuestSpec {
        mac: m2,
        ..spec(
            "swl-vm2",
            &s2,
            "10.0.0.2/24",
            "vw_wait_ping 10.0.0.1 120\n\
             echo VW-IPERF-START\n\
             vw_iperf live -c 10.0.0.1 -t 10 -i 1 -R\n\
             vw_done",
        )
    });
    wait(&mut vm1, "VW-DONE");
    wait(&mut vm2, "VW-IPERF-START");
    std::thread::sleep(Duration::from_secs(2));

    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap_or_else(|| panic!("port list --json is not an array: {v}"))
            .iter()
            .filter_map(|p| p.get("name").and_then(|n| n.as_str()).map(str::to_string))
            .collect()
    };
    let sock3 = s3.display().to_string();
    let tap3 = format!("vwl{}", std::process::id());
    for round in 0..2 {
        let t = Instant::now();
        sw.cli_ok(&[
            "port",
            "add",
            "vm3",
            "--type",
            "vhost-user",
            "--socket",
            &sock3,
            "--mac",
            "52:54:00:5b:00:03",
        ]);
        assert!(s3.exists(), "round {round}: port add did not create {sock3}");
        let list = names(&sw.cli_json(&["port", "list", "--json"]));
        assert!(list.contains(&"vm3".to_string()), "round {round}: vm3 not listed: {list:?}");
        let p3 = sw.port_stats("vm3");
        assert!(!p3.connected(), "nothing connected to vm3, yet: {p3}");
        std::thread::sleep(Duration::from_millis(500));
        sw.cli_ok(&["port", "add", "tap3", "--type", "tap", "--ifname", &tap3]);
        wait_for_interface(&tap3, Duration::from_secs(5)).unwrap_or_else(|e| panic!("round {round}: {e:#}"));
        let list = names(&sw.cli_json(&["port", "list", "--json"]));
        assert!(list.contains(&"tap3".to_string()), "round {round}: tap3 not listed: {list:?}");
        std::thread::sleep(Duration::from_millis(500));
        sw.cli_ok(&["port", "del", "vm3"]);
        sw.cli_ok(&["port", "del", "tap3"]);
        let list = names(&sw.cli_json(&["port", "list", "--json"]));
        assert_eq!(list.len(), 2, "round {round}: after port del: {list:?}");
        assert!(!s3.exists(), "round {round}: port del left {sock3} behind");
        assert!(
            !std::path::Path::new("/sys/class/net").join(&tap3).exists(),
            "round {round}: port del left interface {tap3} behind"
        );
        assert!(!sw.cli(&["stats", "vm3", "--json"]).success, "round {round}: stats of a removed port");
        eprintln!("round {round}: vm3 and tap3 added and removed in {:?}", t.elapsed());
        std::thread::sleep(Duration::from_millis(500));
    }
    // The changes happened while the stream ran.
    let so_far = vm2.console_so_far();
    assert!(
        !so_far.contains("VW-JSON-END live"),
        "the iperf3 run ended before the ports changed; raise its duration:\n{so_far}"
    );
    wait(&mut vm2, "VW-DONE");
    let c2 = vm2.console_so_far();
    let r = report(&c2, "live");
    assert!(r.interval_bytes.len() >= 9, "iperf3 reported {} intervals", r.interval_bytes.len());
    assert!(r.interval_bytes.iter().all(|&b| b > 0), "an interval moved nothing: {:?}", r.interval_bytes);
    assert_clean(&sw, "vm1");
    assert_clean(&sw, "vm2");
    drop((vm1, vm2));
    done("ports_change_while_traffic_flows", t0, sw);
}
