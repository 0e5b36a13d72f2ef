//! virtio-net offloads through the switch with real Linux guests (Debian's kernel and
//! virtio_net under QEMU TCG): guests that negotiated checksum and segmentation offloads
//! get TSO frames passed whole; a guest without them gets the frames segmented and the
//! checksums completed by the switch; a tap port (TUN offloads) exchanges 64 KiB TSO
//! frames with a guest; and a VLAN tag inserted or removed on the way moves the header's
//! offsets with it.
//!
//! Every guest reports its `/proc/net/snmp` and eth0's receive error counters at the end:
//! a checksum the switch got wrong shows as `InCsumErrors` (TCP, UDP) or `InHdrErrors` (IP
//! header checksum of a segment) in the receiving guest, a virtio-net header the guest
//! refused as `rx_frame_errors`.
//!
//! The guests are heavy (one TCG vCPU each on a small machine), so the cases run one at a
//! time whatever the test harness's thread count.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use support::guest::{mac_for, scratch_dir, Guest, GuestSpec, QEMU};
use support::switch::{
    assert_port_clean, boot, done, guest_modules, iperf_report, iperf_report_from, tap_port, vhost_user_port,
    wait, wait_for_interface, IperfReport, NetNs, PortStats, Switch, GUEST_PRELUDE,
};

/// Serialises the guest cases of this file.
static GUESTS: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    GUESTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Shell functions of these cases, after [`GUEST_PRELUDE`]:
/// - `vw_ethtool TAG DEV`: `ethtool -k DEV`, each line behind `VW-ETHTOOL-TAG `;
/// - `vw_features`: the feature bits eth0's virtio device negotiated (`0`/`1` per bit,
///   bit 0 first) as `VW-FEATURES bits=...`;
/// - `vw_counters TAG`: `/proc/net/snmp` and eth0's receive error counters (as a `Dev:`
///   header and value line, like snmp's), each line behind `VW-SNMP-TAG `.
const OFFLOAD_PRELUDE: &str = r#"
vw_ethtool() {
    ethtool -k "$2" 2>&1 | sed "s/^/VW-ETHTOOL-$1 /"
}
vw_features() {
    echo "VW-FEATURES bits=$(cat /sys/class/net/eth0/device/features)"
}
vw_counters() {
    sed "s/^/VW-SNMP-$1 /" /proc/net/snmp
    vw_s=/sys/class/net/eth0/statistics
    echo "VW-SNMP-$1 Dev: rx_frame_errors rx_length_errors rx_crc_errors rx_packets"
    echo "VW-SNMP-$1 Dev: $(cat $vw_s/rx_frame_errors) $(cat $vw_s/rx_length_errors) \
$(cat $vw_s/rx_crc_errors) $(cat $vw_s/rx_packets)"
}
"#;

/// A guest on `socket` with address `ip`, running `script` after the shared preludes.
fn spec(name: &str, socket: &Path, ip: &str, script: &str) -> GuestSpec {
    GuestSpec {
        vhost_user_socket: socket.to_path_buf(),
        mac: mac_for(name),
        ip: ip.to_string(),
        script: format!("{GUEST_PRELUDE}\n{OFFLOAD_PRELUDE}\n{script}\n"),
        console_input: true,
        ..GuestSpec::new(name)
    }
}

/// The `-device` options that take every offload away from a guest: it neither sends
/// partial checksums or segmentation requests (csum, host_*) nor accepts them (guest_*).
/// USO properties only where this QEMU has them (7.2 has none).
fn offloads_off() -> &'static str {
    static OPTS: OnceLock<String> = OnceLock::new();
    OPTS.get_or_init(|| {
        let mut opts = vec![
            "csum=off",
            "guest_csum=off",
            "guest_tso4=off",
            "guest_tso6=off",
            "guest_ecn=off",
            "guest_ufo=off",
            "host_tso4=off",
            "host_tso6=off",
            "host_ecn=off",
            "host_ufo=off",
        ];
        let help = Command::new(QEMU)
            .args(["-device", "virtio-net-device,help"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr))
            .unwrap_or_default();
        for p in ["guest_uso4=off", "guest_uso6=off", "host_uso=off"] {
            let name = p.trim_end_matches("off");
            if help.contains(name) {
                opts.push(p);
            }
        }
        opts.join(",")
    })
}

fn go(guest: &mut Guest) {
    let name = guest.name.clone();
    guest.send_console("go").unwrap_or_else(|e| panic!("{name}: {e:#}"));
}

/// The lines behind `prefix` (and a space) on a console, without it.
fn prefixed_lines(console: &str, prefix: &str) -> Vec<String> {
    let p = format!("{prefix} ");
    console.lines().filter_map(|l| l.trim_end_matches('\r').strip_prefix(&p).map(str::to_string)).collect()
}

/// `ethtool -k` output as feature -> "on"/"off" (a "[fixed]" note dropped).
fn ethtool_features<S: AsRef<str>>(lines: &[S]) -> BTreeMap<String, String> {
    lines
        .iter()
        .filter_map(|l| {
            let (k, v) = l.as_ref().split_once(':')?;
            Some((k.trim().to_string(), v.split_whitespace().next()?.to_string()))
        })
        .collect()
}

/// The features `ethtool -k` printed behind `VW-ETHTOOL-<tag>` on a guest console.
fn guest_ethtool(guest: &str, console: &str, tag: &str) -> BTreeMap<String, String> {
    let f = ethtool_features(&prefixed_lines(console, &format!("VW-ETHTOOL-{tag}")));
    assert!(f.contains_key("tx-checksumming"), "{guest}: no ethtool -k output ({tag}); console:\n{console}");
    f
}

/// Asserts that each of `want` (feature, "on"/"off") is as wanted.
fn assert_features(who: &str, f: &BTreeMap<String, String>, want: &[(&str, &str)]) {
    for (k, v) in want {
        assert_eq!(f.get(*k).map(String::as_str), Some(*v), "{who}: ethtool -k {k}; all features: {f:#?}");
    }
}

/// virtio-net feature bits (virtio 1.x 5.1.3).
const F_CSUM: usize = 0;
const F_GUEST_CSUM: usize = 1;
const F_GUEST_TSO4: usize = 7;
const F_GUEST_TSO6: usize = 8;
const F_GUEST_ECN: usize = 9;
const F_GUEST_UFO: usize = 10;
const F_HOST_TSO4: usize = 11;
const F_HOST_TSO6: usize = 12;
const F_HOST_ECN: usize = 13;
const F_HOST_UFO: usize = 14;
/// The offloads the switch offers that QEMU 7.2 passes on (it knows no USO bits).
const OFFLOAD_BITS: &[(usize, &str)] = &[
    (F_CSUM, "CSUM"),
    (F_GUEST_CSUM, "GUEST_CSUM"),
    (F_GUEST_TSO4, "GUEST_TSO4"),
    (F_GUEST_TSO6, "GUEST_TSO6"),
    (F_GUEST_ECN, "GUEST_ECN"),
    (F_HOST_TSO4, "HOST_TSO4"),
    (F_HOST_TSO6, "HOST_TSO6"),
    (F_HOST_ECN, "HOST_ECN"),
];

/// The feature bits a guest printed with `vw_features`.
fn guest_features(guest: &str, console: &str) -> Vec<bool> {
    let f = support::guest::marker_fields(console, "VW-FEATURES");
    let bits = f.get("bits").unwrap_or_else(|| panic!("{guest}: no VW-FEATURES line; console:\n{console}"));
    bits.chars().map(|c| c == '1').collect()
}

/// Asserts that the guest negotiated every offload bit of [`OFFLOAD_BITS`] (`on`) or
/// none of them nor the UFO bits (`!on`).
fn assert_offload_bits(guest: &str, console: &str, on: bool) {
    let f = guest_features(guest, console);
    let bits: String = f.iter().map(|&b| if b { '1' } else { '0' }).collect();
    eprintln!("{guest}: virtio-net features {bits}");
    let has = |b: usize| f.get(b).copied().unwrap_or(false);
    let mut check: Vec<(usize, &str)> = OFFLOAD_BITS.to_vec();
    if !on {
        check.extend([(F_GUEST_UFO, "GUEST_UFO"), (F_HOST_UFO, "HOST_UFO")]);
    }
    for (b, name) in check {
        assert_eq!(has(b), on, "{guest}: feature {name} (bit {b}) negotiated: {}", !on);
    }
}

/// `/proc/net/snmp`-style text (pairs of `Proto: names...` and `Proto: values...` lines)
/// as "Proto:Name" -> value.
fn snmp_counters<S: AsRef<str>>(lines: &[S]) -> BTreeMap<String, u64> {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for l in lines {
        let mut it = l.as_ref().split_whitespace();
        let Some(proto) = it.next().filter(|p| p.ends_with(':')) else { continue };
        let rest: Vec<String> = it.map(str::to_string).collect();
        match headers.remove(proto) {
            Some(names) => {
                for (n, v) in names.iter().zip(&rest) {
                    if let Ok(v) = v.parse::<i64>() {
                        out.insert(format!("{proto}{n}"), v.max(0) as u64);
                    }
                }
            }
            None => {
                headers.insert(proto.to_string(), rest);
            }
        }
    }
    out
}

/// Asserts that a receiver found no checksum error and refused no virtio-net header.
/// `counters` from [`snmp_counters`]; `dev` whether the `Dev:` line must be there.
fn assert_no_csum_errors(who: &str, c: &BTreeMap<String, u64>, dev: bool, context: &str) {
    let mut keys = vec!["Tcp:InCsumErrors", "Udp:InCsumErrors", "Ip:InHdrErrors"];
    if dev {
        keys.extend(["Dev:rx_frame_errors", "Dev:rx_length_errors"]);
    }
    for k in keys {
        let v = c.get(k).unwrap_or_else(|| panic!("{who}: no {k} counter: {c:?}\n{context}"));
        assert_eq!(*v, 0, "{who}: {k} = {v}; counters: {c:?}\n{context}");
    }
    assert!(c.get("Tcp:InSegs").copied().unwrap_or(0) > 0, "{who}: no TCP segments counted: {c:?}");
}

/// The guest's counters printed behind `VW-SNMP-<tag>`, checked.
fn assert_guest_clean(guest: &str, console: &str, tag: &str) -> BTreeMap<String, u64> {
    let c = snmp_counters(&prefixed_lines(console, &format!("VW-SNMP-{tag}")));
    eprintln!(
        "{guest}: Tcp InSegs={:?} InCsumErrors={:?} RetransSegs={:?} Udp InCsumErrors={:?} \
         Ip InHdrErrors={:?} eth0 rx_frame_errors={:?} rx_packets={:?}",
        c.get("Tcp:InSegs"),
        c.get("Tcp:InCsumErrors"),
        c.get("Tcp:RetransSegs"),
        c.get("Udp:InCsumErrors"),
        c.get("Ip:InHdrErrors"),
        c.get("Dev:rx_frame_errors"),
        c.get("Dev:rx_packets"),
    );
    assert_no_csum_errors(guest, &c, true, &format!("console:\n{console}"));
    c
}

fn report(console: &str, tag: &str) -> IperfReport {
    let r = iperf_report(console, tag).unwrap_or_else(|e| panic!("{e:#}; console:\n{console}"));
    check_report(tag, &r);
    r
}

/// [`support::switch::check_report`], and no one-second interval without traffic.
fn check_report(tag: &str, r: &IperfReport) {
    support::switch::check_report(tag, r);
    assert!(r.interval_bytes.iter().all(|&b| b > 0), "iperf3 {tag}: an interval moved nothing (a stall)");
}

/// The port's `offloads` counters: (gso_passed, gso_segmented, gso_segments,
/// csum_completed).
fn offloads(p: &PortStats) -> (u64, u64, u64, u64) {
    (
        p.num("/offloads/gso_passed"),
        p.num("/offloads/gso_segmented"),
        p.num("/offloads/gso_segments"),
        p.num("/offloads/csum_completed"),
    )
}

/// No refused frame, header or ring on `port`.
fn assert_clean(sw: &Switch, port: &str) {
    let p = assert_port_clean(sw, port);
    assert_eq!(p.num("/drops/bad_header"), 0, "virtio-net headers refused from {port}: {p}");
}

/// What a guest that negotiated every offload the switch offers shows in `ethtool -k`.
const ALL_ON: &[(&str, &str)] = &[
    ("rx-checksumming", "on"),
    ("tx-checksumming", "on"),
    ("tcp-segmentation-offload", "on"),
    ("tx-tcp-segmentation", "on"),
    ("tx-tcp6-segmentation", "on"),
    ("tx-tcp-ecn-segmentation", "on"),
    ("generic-segmentation-offload", "on"),
];

/// Two guests with every offload on: TSO frames cross the switch whole, the receiver's
/// checksums hold.
#[test]
fn offloads_on_between_two_vms() {
    let _serial = one_at_a_time();
    let t0 = Instant::now();
    let dir = scratch_dir("off-on");
    let (s1, s2) = (dir.join("vm1.sock"), dir.join("vm2.sock"));
    let (n1, n2) = ("ofon-vm1", "ofon-vm2");
    let config =
        vhost_user_port("vm1", &s1, &mac_for(n1), "") + &vhost_user_port("vm2", &s2, &mac_for(n2), "");
    let sw = Switch::start(&dir, &config, &[s1.clone(), s2.clone()]);

    let mut vm2 = boot(spec(
        n2,
        &s2,
        "10.0.0.2/24",
        "vw_features; vw_ethtool k eth0\n\
         iperf3 -s >/tmp/iperf3-server.log 2>&1 &\n\
         vw_go end\n\
         vw_counters end\n\
         vw_done",
    ));
    let mut vm1 = boot(spec(
        n1,
        &s1,
        "10.0.0.1/24",
        "vw_features; vw_ethtool k eth0\n\
         vw_wait_ping 10.0.0.2 120\n\
         vw_iperf fwd -c 10.0.0.2 -t 4\n\
         vw_counters end\n\
         vw_done",
    ));
    wait(&mut vm2, "VW-WAIT end");
    wait(&mut vm1, "VW-DONE");
    go(&mut vm2);
    wait(&mut vm2, "VW-DONE");
    let (c1, c2) = (vm1.console_so_far(), vm2.console_so_far());
    assert_offload_bits("vm1", &c1, true);
    assert_offload_bits("vm2", &c2, true);
    assert_features("vm1", &guest_ethtool("vm1", &c1, "k"), ALL_ON);
    assert_features("vm2", &guest_ethtool("vm2", &c2, "k"), ALL_ON);
    let fwd = report(&c1, "fwd");

    let stats = sw.stats();
    let (p1, p2) = (stats.port("vm1"), stats.port("vm2"));
    eprintln!("vm1: {p1}\nvm2: {p2}");
    let (passed, segmented, _, completed) = offloads(&p2);
    assert!(passed > 0, "no TSO frame passed whole to vm2: {p2}");
    // vm2 takes everything: the switch did no work for it.
    assert_eq!((segmented, completed), (0, 0), "software offload work for vm2, which takes it all: {p2}");
    // Whole TSO frames: far fewer frames than MSS-sized segments would be.
    assert!(
        p2.tx_packets() < fwd.received_bytes / 1448,
        "vm2 got {} frames for {} B: no large frames",
        p2.tx_packets(),
        fwd.received_bytes
    );
    assert_guest_clean("vm1", &c1, "end");
    assert_guest_clean("vm2", &c2, "end");
    assert_clean(&sw, "vm1");
    assert_clean(&sw, "vm2");
    drop((vm1, vm2));
    done("offloads_on_between_two_vms", t0, sw);
}

/// A guest without any offload next to one with all: the switch segments the TSO frames
/// and completes the partial checksums sent to the first, and the first's checksums hold;
/// its own plain frames reach the second with no work done.
#[test]
fn offloads_off_guest_talks_to_offloads_on_guest() {
    let _serial = one_at_a_time();
    let t0 = Instant::now();
    let dir = scratch_dir("off-mix");
    let (s1, s2) = (dir.join("vm1.sock"), dir.join("vm2.sock"));
    let (n1, n2) = ("ofmx-vm1", "ofmx-vm2");
    let config =
        vhost_user_port("vm1", &s1, &mac_for(n1), "") + &vhost_user_port("vm2", &s2, &mac_for(n2), "");
    let sw = Switch::start(&dir, &config, &[s1.clone(), s2.clone()]);

    let mut vm1 = boot(spec(
        n1,
        &s1,
        "10.0.0.1/24",
        "vw_features; vw_ethtool k eth0\n\
         iperf3 -s >/tmp/iperf3-server.log 2>&1 &\n\
         vw_wait_ping 10.0.0.2 120\n\
         vw_iperf fwd -c 10.0.0.2 -t 4\n\
         vw_go end\n\
         vw_counters end\n\
         vw_done",
    ));
    let opts = offloads_off();
    eprintln!("vm2 device options: {opts}");
    let mut vm2 = boot(GuestSpec {
        extra_device_opts: opts.to_string(),
        ..spec(
            n2,
            &s2,
            "10.0.0.2/24",
            "vw_features; vw_ethtool k eth0\n\
             iperf3 -s >/tmp/iperf3-server.log 2>&1 &\n\
             vw_go rev\n\
             vw_iperf rev -c 10.0.0.1 -t 4\n\
             vw_counters end\n\
             vw_done",
        )
    });

    // Phase 1: vm1 -> vm2.
    wait(&mut vm2, "VW-WAIT rev");
    wait(&mut vm1, "VW-WAIT end");
    let (c1, c2) = (vm1.console_so_far(), vm2.console_so_far());
    assert_offload_bits("vm1", &c1, true);
    assert_offload_bits("vm2", &c2, false);
    assert_features("vm1", &guest_ethtool("vm1", &c1, "k"), ALL_ON);
    assert_features(
        "vm2",
        &guest_ethtool("vm2", &c2, "k"),
        &[
            ("tx-checksumming", "off"),
            ("tcp-segmentation-offload", "off"),
            ("tx-tcp-segmentation", "off"),
            ("tx-tcp6-segmentation", "off"),
        ],
    );
    let fwd = report(&c1, "fwd");
    let st = sw.stats();
    let (p1, p2) = (st.port("vm1"), st.port("vm2"));
    eprintln!("after vm1 -> vm2: vm1: {p1}\nvm2: {p2}");
    let (passed, segmented, segments, completed) = offloads(&p2);
    assert_eq!(passed, 0, "TSO frames passed whole to vm2, which has no GUEST_TSO: {p2}");
    assert!(segmented > 0, "no TSO frame segmented for vm2: {p2}");
    assert!(segments > segmented, "{segmented} TSO frames cut into only {segments} segments: {p2}");
    assert!(completed > 0, "no partial checksum completed for vm2: {p2}");
    // What vm2 sends needs no work: no offload counter moves for vm1.
    assert_eq!(offloads(&p1), (0, 0, 0, 0), "offload work for frames from vm2 (no offloads): {p1}");
    assert!(
        p2.tx_packets() >= fwd.received_bytes / 1500,
        "vm2 got {} frames for {} B: frames larger than its MTU",
        p2.tx_packets(),
        fwd.received_bytes
    );

    // Phase 2: vm2 -> vm1.
    go(&mut vm2);
    wait(&mut vm2, "VW-DONE");
    go(&mut vm1);
    wait(&mut vm1, "VW-DONE");
    let (c1, c2) = (vm1.console_so_far(), vm2.console_so_far());
    report(&c2, "rev");
    let st2 = sw.stats();
    let (q1, q2) = (st2.port("vm1"), st2.port("vm2"));
    eprintln!("after vm2 -> vm1: vm1: {q1}\nvm2: {q2}");
    assert_eq!(offloads(&q1), (0, 0, 0, 0), "offload work for frames from vm2 (no offloads): {q1}");
    assert!(offloads(&q2).3 > completed, "vm1's ACKs (partial checksums) were not completed for vm2: {q2}");
    assert_guest_clean("vm1", &c1, "end");
    assert_guest_clean("vm2", &c2, "end");
    assert_clean(&sw, "vm1");
    assert_clean(&sw, "vm2");
    drop((vm1, vm2));
    done("offloads_off_guest_talks_to_offloads_on_guest", t0, sw);
}

/// A network namespace of the host on a tap port and a guest: the kernel's TSO frames
/// reach the guest whole, the guest's reach the kernel whole, checksums hold both ways.
#[test]
fn host_namespace_to_vm_with_offloads() {
    let _serial = one_at_a_time();
    let t0 = Instant::now();
    let pid = std::process::id();
    let ifname = format!("vwo{pid}");
    let dir = scratch_dir("off-tap");
    let s1 = dir.join("vm1.sock");
    let n1 = "oftp-vm1";
    let config = vhost_user_port("vm1", &s1, &mac_for(n1), "") + &tap_port("host", &ifname, "");
    let sw = Switch::start(&dir, &config, std::slice::from_ref(&s1));
    wait_for_interface(&ifname, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}:\n{}", sw.log_text()));
    let ns = NetNs::create(&format!("vwons{pid}")).expect("create netns");
    ns.adopt(&ifname, "10.0.0.100/24").expect("move the tap into the namespace");
    let out = ns.exec("ethtool", &["-k", &ifname]).expect("ethtool (install ethtool)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_features(
        "tap",
        &ethtool_features(&lines),
        &[("tx-checksumming", "on"), ("tcp-segmentation-offload", "on"), ("tx-tcp-segmentation", "on")],
    );

    let mut vm1 = boot(spec(
        n1,
        &s1,
        "10.0.0.1/24",
        "vw_features; vw_ethtool k eth0\n\
         iperf3 -s >/tmp/iperf3-server.log 2>&1 &\n\
         vw_wait_ping 10.0.0.100 120\n\
         vw_go end\n\
         vw_counters end\n\
         vw_done",
    ));
    wait(&mut vm1, "VW-WAIT end");
    let c1 = vm1.console_so_far();
    assert_offload_bits("vm1", &c1, true);
    assert_features("vm1", &guest_ethtool("vm1", &c1, "k"), ALL_ON);

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
            check_report(tag, &r);
            return r;
        }
        panic!("iperf3 {tag} never reached the VM:\n{last}");
    };

    // Namespace -> VM: the kernel hands the tap TSO frames; the guest takes them whole.
    let to_vm = iperf("ns-to-vm", &[]);
    let st = sw.stats();
    let (pv, ph) = (st.port("vm1"), st.port("host"));
    eprintln!("after ns -> vm1: vm1: {pv}\nhost: {ph}");
    let (passed, segmented, _, _) = offloads(&pv);
    assert!(passed > 0, "no TSO frame from the tap passed whole to vm1: {pv}");
    assert_eq!(segmented, 0, "frames segmented for vm1, which takes TSO: {pv}");
    assert!(
        ph.rx_packets() < to_vm.received_bytes / 1448,
        "the tap gave {} frames for {} B: no TSO frames from the kernel",
        ph.rx_packets(),
        to_vm.received_bytes
    );

    // VM -> namespace: the guest's TSO frames go to the tap whole.
    iperf("vm-to-ns", &["-R"]);
    let st = sw.stats();
    let (pv, ph) = (st.port("vm1"), st.port("host"));
    eprintln!("after vm1 -> ns: vm1: {pv}\nhost: {ph}");
    let (passed, segmented, _, _) = offloads(&ph);
    assert!(passed > 0, "no TSO frame from vm1 passed whole to the tap: {ph}");
    assert_eq!(segmented, 0, "frames segmented for the tap: {ph}");
    let snmp = ns.exec("cat", &["/proc/net/snmp"]).expect("read the namespace's /proc/net/snmp");
    let text = String::from_utf8_lossy(&snmp.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_no_csum_errors("namespace", &snmp_counters(&lines), false, &text);

    go(&mut vm1);
    wait(&mut vm1, "VW-DONE");
    assert_guest_clean("vm1", &vm1.console_so_far(), "end");
    assert_clean(&sw, "vm1");
    let ph = sw.port_stats("host");
    assert_eq!(ph.num("/drops/bad_header"), 0, "virtio-net headers from the tap refused: {ph}");
    assert_eq!(ph.num("/drops/tap_write"), 0, "frames the tap refused: {ph}");
    drop(vm1);
    drop(ns);
    done("host_namespace_to_vm_with_offloads", t0, sw);
}

/// Access ports on VLAN 10 and a trunk guest carrying it tagged: the switch inserts a tag
/// into the TSO frames of an access port and removes it from the trunk's, moving the
/// header's checksum start and header length with it. Toward the trunk, a checksum start
/// not moved past the inserted tag lies before the TCP header once the trunk's kernel has
/// removed the tag, so it checks the (partial) checksum itself and counts errors. (Toward
/// the access port a start left 4 bytes too far goes unnoticed by a receiver that
/// delivers locally.) A third guest without offloads gets the trunk's tagged TSO frames
/// segmented and untagged, with checksums its kernel verifies.
#[test]
fn vlan_tag_insert_keeps_offload_offsets_right() {
    let _serial = one_at_a_time();
    let t0 = Instant::now();
    let dir = scratch_dir("off-vlan");
    let names = ["vm1", "vm3", "trunk"];
    let guests = ["ofvl-vm1", "ofvl-vm3", "ofvl-trunk"];
    let socks: Vec<_> = names.iter().map(|n| dir.join(format!("{n}.sock"))).collect();
    let extra = ["vlan = 10", "vlan = 10", "trunks = [10]"];
    let config: String =
        (0..3).map(|i| vhost_user_port(names[i], &socks[i], &mac_for(guests[i]), extra[i])).collect();
    let sw = Switch::start(&dir, &config, &socks);

    let (modules, insmod) = guest_modules(&["8021q"]).expect("the guest kernel's 8021q module");
    let mut trunk = boot(GuestSpec {
        files: modules,
        ..spec(
            guests[2],
            &socks[2],
            "",
            &format!(
                "{insmod}\
                 vconfig add eth0 10 && ip link set eth0.10 name v10 || echo 'VW-ERROR vlan 10'\n\
                 ip addr add 10.0.0.4/24 dev v10\n\
                 ip link set v10 up\n\
                 vw_features; vw_ethtool k eth0\n\
                 vw_ethtool v10 v10\n\
                 iperf3 -s >/tmp/iperf3-server.log 2>&1 &\n\
                 vw_go end\n\
                 vw_counters end\n\
                 vw_done"
            ),
        )
    });
    let mut vm1 = boot(spec(
        guests[0],
        &socks[0],
        "10.0.0.1/24",
        "vw_wait_ping 10.0.0.4 120\n\
         vw_iperf ins -c 10.0.0.4 -t 4\n\
         vw_iperf strip -c 10.0.0.4 -t 4 -R\n\
         vw_counters end\n\
         vw_done",
    ));
    let mut vm3 = boot(GuestSpec {
        extra_device_opts: offloads_off().to_string(),
        ..spec(
            guests[1],
            &socks[1],
            "10.0.0.3/24",
            "vw_features\n\
             vw_go seg\n\
             vw_wait_ping 10.0.0.4 60\n\
             vw_iperf seg -c 10.0.0.4 -t 4 -R\n\
             vw_counters end\n\
             vw_done",
        )
    });

    wait(&mut trunk, "VW-WAIT end");
    let tc = trunk.console_so_far();
    assert!(!tc.contains("VW-ERROR"), "trunk guest setup failed:\n{tc}");
    assert_offload_bits("trunk", &tc, true);
    assert_features("trunk eth0", &guest_ethtool("trunk", &tc, "k"), ALL_ON);
    // The VLAN device sends TSO frames (the tag goes into them in software).
    assert_features(
        "trunk v10",
        &guest_ethtool("trunk", &tc, "v10"),
        &[("tx-checksumming", "on"), ("tcp-segmentation-offload", "on")],
    );

    // Phase 1: vm1 -> trunk (tag inserted), trunk -> vm1 (tag removed), offloads passed.
    wait(&mut vm1, "VW-DONE");
    let c1 = vm1.console_so_far();
    report(&c1, "ins");
    report(&c1, "strip");
    let st = sw.stats();
    let (p1, pt) = (st.port("vm1"), st.port("trunk"));
    eprintln!("after phase 1: vm1: {p1}\ntrunk: {pt}");
    assert!(offloads(&pt).0 > 0, "no TSO frame passed (tagged) to the trunk: {pt}");
    assert!(offloads(&p1).0 > 0, "no TSO frame passed (untagged) to vm1: {p1}");
    assert_eq!(offloads(&pt).1, 0, "frames segmented for the trunk, which takes TSO: {pt}");
    assert_eq!(offloads(&p1).1, 0, "frames segmented for vm1, which takes TSO: {p1}");
    assert_guest_clean("vm1", &c1, "end");

    // Phase 2: trunk -> vm3 (no offloads): tagged TSO frames segmented and untagged.
    wait(&mut vm3, "VW-WAIT seg");
    go(&mut vm3);
    wait(&mut vm3, "VW-DONE");
    let c3 = vm3.console_so_far();
    assert_offload_bits("vm3", &c3, false);
    report(&c3, "seg");
    let p3 = sw.port_stats("vm3");
    eprintln!("after phase 2: vm3: {p3}");
    let (passed, segmented, segments, completed) = offloads(&p3);
    assert_eq!(passed, 0, "TSO frames passed whole to vm3, which has no GUEST_TSO: {p3}");
    assert!(segmented > 0 && segments > segmented, "trunk's TSO frames not segmented for vm3: {p3}");
    assert!(completed > 0, "no partial checksum completed for vm3: {p3}");
    assert_guest_clean("vm3", &c3, "end");

    go(&mut trunk);
    wait(&mut trunk, "VW-DONE");
    assert_guest_clean("trunk", &trunk.console_so_far(), "end");
    for n in names {
        assert_clean(&sw, n);
    }
    drop((vm1, vm3, trunk));
    done("vlan_tag_insert_keeps_offload_offsets_right", t0, sw);
}
