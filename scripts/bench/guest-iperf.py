#!/usr/bin/env python3
"""VM-to-VM TCP throughput (iperf3) between two Linux guests under QEMU TCG, through

  virtwire   two vhost-user ports of the switch (virtwire listens, QEMU connects), and
  testpmd    DPDK testpmd with two vhost PMD ports in io forwarding: a wire between the
             two guests, no lookup at all (testpmd listens, QEMU connects),

each with the guests' virtio-net offloads on (QEMU's defaults: checksum offload, TSO,
mergeable buffers) and off (`csum=off,guest_csum=off,guest_tso4=off,...` on both guests'
devices). The four setups are measured in the same run, interleaved (virtwire/on,
testpmd/on, virtwire/off, testpmd/off, then again), and the table gives medians.

The guests are the ones of the guest tests: Debian's kernel and virtio_net under
`qemu-system-x86_64 -accel tcg -M microvm`, one vCPU and 256 MiB (a shared memfd) each,
busybox and iperf3 in an initramfs built by scripts/guest/build.sh (run here when its
outputs are missing or stale). The guest on the first port runs `iperf3 -c` against the
one on the second port for --seconds (after --omit seconds not counted); the rate is what
the receiver got, as iperf3 reports it.

Per run the script also records:
  - the offload bits each guest's virtio-net device negotiated (sysfs `features`) and
    what `ethtool -k eth0` shows;
  - for virtwire, the change of every port's counters over the iperf3 run
    (`virtwire stats --json`: offloads.gso_passed, gso_segmented, gso_segments,
    csum_completed, gro_frames, gro_segments; frames, drops, kicks, interrupts);
  - for testpmd, the features its vhost library negotiated per socket (its log at
    lib.vhost.config:info) and its port counters;
  - CPU seconds of the switch process (virtwire or testpmd) and of each QEMU over the
    iperf3 run, and what other processes used meanwhile;
  - each receiver's TCP checksum errors (`/proc/net/snmp`) and iperf3's retransmits.

Multiqueue (--queues 1,4 measures each setup with 1 and with 4 queue pairs, interleaved):
QEMU's `-netdev vhost-user,...,queues=N` and `mq=on` on the device, `ethtool -L eth0
combined N` in each guest (its init, from `vw.queues=N` on the kernel command line, as in
the guest tests), `queue_pairs = N` on both virtwire ports, and `queues=N` on testpmd's
vhost vdevs with `--rxq=N --txq=N`. Each run checks that both guests use N queue pairs
(`ethtool -l`) and records their per-queue packet counters (`ethtool -S`) and, for
virtwire, its per-queue counters. The devices are virtio-mmio by default (one interrupt
line for all queues); `--transport pci` uses `virtio-net-pci` with 2N+2 MSI-X vectors
(--vectors); with MSI-X, QEMU 7.2 under TCG crashed (SIGSEGV) before the guest booted.
--iperf-args adds arguments to the client's iperf3 (e.g. `-l 256 -N` for 256-byte writes
with TCP_NODELAY, `-M 88` for the smallest MSS); the table's B/frame column shows what
that made of the frames the switch carried.

Every measured run (switch start, guest boots, iperf3) holds an exclusive flock on
/tmp/bench.lock (--lock), so that benchmarks sharing the machine take turns.

The switch (virtwire or testpmd, the whole process) is pinned to CPU 1 (--switch-cpu);
the QEMU processes run wherever the scheduler puts them unless --guest-cpus is given.
virtwire runs with its default adaptive polling; testpmd polls all the time.

Runs as root, like the other benchmarks here. Needs qemu-system-x86 (7.2 or later),
dpdk-testpmd (Debian dpdk-dev; it runs with --no-huge and maps the guests' memfd memory),
a release build of virtwire, and what scripts/guest/build.sh needs. Prints a table, or
JSON with --json (--save FILE writes the JSON as well as printing the table).
"""

import argparse
import ctypes
import json
import mmap
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import ROOT, TESTPMD, VIRTWIRE, Testpmd, proc_cpu_seconds, terminate

QEMU = "qemu-system-x86_64"
SETUPS = ("virtwire/on", "testpmd/on", "virtwire/off", "testpmd/off")
OFFLOADS_OFF = ["csum=off", "guest_csum=off", "guest_tso4=off", "guest_tso6=off", "guest_ecn=off",
                "guest_ufo=off", "host_tso4=off", "host_tso6=off", "host_ecn=off", "host_ufo=off"]
GUEST_TIMEOUT = 300
# virtio-net feature bits (virtio 1.x 5.1.3) reported per guest (offloads, and MQ for --queues).
FEATURE_BITS = {0: "CSUM", 1: "GUEST_CSUM", 7: "GUEST_TSO4", 8: "GUEST_TSO6", 9: "GUEST_ECN",
                10: "GUEST_UFO", 11: "HOST_TSO4", 12: "HOST_TSO6", 13: "HOST_ECN", 14: "HOST_UFO",
                15: "MRG_RXBUF", 22: "MQ", 29: "EVENT_IDX", 32: "VERSION_1", 34: "RING_PACKED",
                35: "IN_ORDER"}
OFFLOAD_COUNTERS = ("gso_passed", "gso_segmented", "gso_segments", "csum_completed", "gro_frames", "gro_segments")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---- the guest image and QEMU command line (as crates/virtwire/tests/support/guest.rs) --

def guest_image():
    """scripts/guest/build.sh's kernel and initramfs (built or found in its cache)."""
    out = os.environ.get("VIRTWIRE_GUEST_DIR", os.path.join(ROOT, "target", "guest"))
    r = subprocess.run(["bash", os.path.join(ROOT, "scripts", "guest", "build.sh")],
                       env=dict(os.environ, VIRTWIRE_GUEST_DIR=out), stdin=subprocess.DEVNULL,
                       capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"scripts/guest/build.sh failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    image = (os.path.join(out, "vmlinux"), os.path.join(out, "initramfs.cpio"))
    for p in image:
        if not os.path.isfile(p):
            sys.exit(f"scripts/guest/build.sh did not produce {p}")
    return image


def mac_for(name):
    """A locally administered MAC derived from `name` (FNV-1a, as the guest tests)."""
    h = 0x811C9DC5
    for b in name.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return "52:54:" + ":".join(f"{x:02x}" for x in h.to_bytes(4, "big"))


def host_tsc_khz():
    """The host's TSC rate in kHz for the guest's tsc_early_khz= (under TCG the guest's TSC
    runs at the host's rate, and the guest's clock, by which iperf3 measures, follows it).
    $VIRTWIRE_GUEST_TSC_KHZ overrides; else rdtsc against the monotonic clock, median of
    three 50 ms windows; else /proc/cpuinfo's MHz."""
    env = os.environ.get("VIRTWIRE_GUEST_TSC_KHZ")
    if env:
        return int(env)
    try:
        # rdtsc; shl rdx, 32; or rax, rdx; ret
        code = bytes([0x0F, 0x31, 0x48, 0xC1, 0xE2, 0x20, 0x48, 0x09, 0xD0, 0xC3])
        buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        buf.write(code)
        rdtsc = ctypes.CFUNCTYPE(ctypes.c_uint64)(ctypes.addressof(ctypes.c_char.from_buffer(buf)))
        khz = []
        for _ in range(3):
            t0, c0 = time.monotonic_ns(), rdtsc()
            time.sleep(0.05)
            c1, t1 = rdtsc(), time.monotonic_ns()
            khz.append((c1 - c0) * 1_000_000 // max(1, t1 - t0))
        return sorted(khz)[1]
    except (OSError, ValueError, TypeError):
        with open("/proc/cpuinfo") as f:
            m = re.search(r"cpu MHz\s*:\s*([\d.]+)", f.read())
        return int(float(m.group(1)) * 1000)


def offloads_off_opts():
    """The -device options that take every offload away from a guest (USO ones only where
    this QEMU has them; 7.2 has none)."""
    r = subprocess.run([QEMU, "-device", "virtio-net-device,help"], capture_output=True, text=True)
    help_text = r.stdout + r.stderr
    opts = list(OFFLOADS_OFF)
    for p in ("guest_uso4", "guest_uso6", "host_uso"):
        if p + "=" in help_text:
            opts.append(p + "=off")
    return ",".join(opts)


def newc(files):
    """A newc cpio archive holding `files` [(path, bytes, mode)] and a trailer, padded to
    512 bytes (it is appended to the initramfs)."""
    out = bytearray()
    ino = 0x70000000

    def pad(n):
        out.extend(b"\0" * (-len(out) % n))

    def entry(name, mode, data):
        nonlocal ino
        ino += 1
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
        out.extend(b"070701" + b"".join(f"{f:08x}".encode() for f in fields) + name.encode() + b"\0")
        pad(4)
        out.extend(data)
        pad(4)

    for path, data, mode in files:
        entry(path.lstrip("/"), 0o100000 | mode, data)
    entry("TRAILER!!!", 0, b"")
    pad(512)
    return bytes(out)


def qemu_args(name, sock, mac, ip, image, initrd, device_opts, tsc_khz, mem_mb=256, queues=1, vcpus=1,
              transport="mmio", vectors=None):
    """QEMU's arguments for one guest. `queues` > 1 adds `mq=on` to the device and
    `vw.queues=N` to the kernel command line (the guest's init then runs `ethtool -L eth0
    combined N`, as in the guest tests). transport "mmio": `-M microvm` and
    `virtio-net-device` (virtio-mmio: one interrupt line for every queue); "pci": `-M pc`
    and `virtio-net-pci` with `vectors` MSI-X vectors (0: INTx, the guest tests' choice)."""
    vmlinux, _ = image
    if transport == "pci":
        machine = "pc,memory-backend=mem"
        nvec = 2 * queues + 2 if vectors is None else vectors
        device = f"virtio-net-pci,vectors={nvec}"
    else:
        machine = "microvm,pit=on,memory-backend=mem"
        device = "virtio-net-device"
    device += f",netdev=n0,mac={mac}" + (",mq=on" if queues > 1 else "") + (f",{device_opts}" if device_opts else "")
    cmdline = ["console=ttyS0", "panic=-1", "oops=panic", "loglevel=4", f"tsc_early_khz={tsc_khz}",
               "tsc=reliable", f"vw.name={name}", f"vw.ip={ip}"] + ([f"vw.queues={queues}"] if queues > 1 else [])
    return (["-accel", "tcg", "-M", machine, "-m", f"{mem_mb}M",
             "-object", f"memory-backend-memfd,id=mem,size={mem_mb}M,share=on", "-smp", str(vcpus),
             "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none", "-serial", "stdio",
             "-no-reboot"]
            + (["-global", "virtio-mmio.force-legacy=false"] if transport != "pci" else [])
            + ["-chardev", f"socket,id=c0,path={sock},reconnect=1",
               "-netdev", f"vhost-user,id=n0,chardev=c0,queues={queues}", "-device", device,
               "-kernel", vmlinux, "-initrd", initrd, "-append", " ".join(cmdline)])


# Shell functions of the guest scripts (busybox sh).
PRELUDE = r"""set -u
stty -echo </dev/console 2>/dev/null
vw_now() { read -r vw_up _ </proc/uptime; echo "${vw_up%.*}"; }
vw_wait_ping() {
    vw_end=$(( $(vw_now) + $2 ))
    while [ "$(vw_now)" -lt "$vw_end" ]; do
        ping -c 1 -W 1 "$1" >/dev/null 2>&1 && return 0
        usleep 200000
    done
    echo "VW-UNREACHABLE to=$1"
    return 1
}
vw_go() {
    echo "VW-WAIT $1"
    read -r vw_line </dev/console
}
vw_done() {
    echo "VW-DONE"
    while :; do sleep 60; done
}
vw_report() {
    echo "VW-FEATURES bits=$(cat /sys/class/net/eth0/device/features)"
    echo "VW-CHANNELS $(ethtool -l eth0 2>/dev/null | awk '/^Combined/ { n = $2 } END { print "combined=" n }')"
    ethtool -k eth0 2>&1 | sed "s/^/VW-ETHTOOL /"
}
vw_counters() {
    sed "s/^/VW-SNMP /" /proc/net/snmp
    vw_s=/sys/class/net/eth0/statistics
    echo "VW-DEV rx_packets=$(cat $vw_s/rx_packets) tx_packets=$(cat $vw_s/tx_packets)" \
        "rx_errors=$(cat $vw_s/rx_errors) rx_dropped=$(cat $vw_s/rx_dropped)" \
        "rx_frame_errors=$(cat $vw_s/rx_frame_errors) rx_length_errors=$(cat $vw_s/rx_length_errors)"
    echo "VW-QUEUES $(ethtool -S eth0 2>/dev/null | awk '/[rt]x_queue_[0-9]+_packets:/ { sub(":", "", $1); printf "%s=%s ", $1, $2 }')"
}
"""

SERVER_SCRIPT = """vw_report
iperf3 -s >/tmp/iperf3-server.log 2>&1 &
vw_go end
vw_counters
vw_done
"""

CLIENT_SCRIPT = """vw_report
vw_wait_ping {peer} 120
vw_go iperf
vw_n=0
while :; do
    iperf3 --json -c {peer} -t {secs} -O {omit} {iperf_args} >/tmp/r.json 2>&1
    vw_st=$?
    grep -qE 'unable to connect|Connection refused' /tmp/r.json || break
    vw_n=$((vw_n + 1))
    [ $vw_n -ge 15 ] && break
    sleep 1
done
echo "VW-JSON-BEGIN"
cat /tmp/r.json
echo
echo "VW-JSON-END status=$vw_st"
vw_counters
vw_done
"""


class Guest:
    """One QEMU guest; its serial console (stdout) collected by a thread, its stdin kept
    open to type on the console."""

    def __init__(self, name, sock, ip, script, image, tmp, device_opts, tsc_khz, cpus, queues=1, vcpus=1,
                 transport="mmio", vectors=None):
        self.name = name
        initrd = os.path.join(tmp, f"{name}-initrd.cpio")
        with open(image[1], "rb") as src, open(initrd, "wb") as dst:
            shutil.copyfileobj(src, dst)
            dst.write(newc([("/test.sh", (PRELUDE + "\n" + script).encode(), 0o755)]))
        self.mac = mac_for(name)
        args = qemu_args(name, sock, self.mac, ip, image, initrd, device_opts, tsc_khz, queues=queues,
                         vcpus=vcpus, transport=transport, vectors=vectors)
        self.command = [QEMU] + args
        pre = ["taskset", "-c", cpus] if cpus else []
        self.p = subprocess.Popen(pre + self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        self.pid = self.p.pid
        self.buf = bytearray()
        self.err = bytearray()
        self.lock = threading.Lock()
        self.readers = [threading.Thread(target=self._read, args=(self.p.stdout, self.buf), daemon=True),
                        threading.Thread(target=self._read, args=(self.p.stderr, self.err), daemon=True)]
        for t in self.readers:
            t.start()

    def _read(self, pipe, buf):
        while True:
            chunk = pipe.read1(65536)
            if not chunk:
                return
            with self.lock:
                buf.extend(chunk)

    def console(self):
        with self.lock:
            return self.buf.decode(errors="replace").replace("\r", "")

    def wait_for(self, needle, timeout=GUEST_TIMEOUT):
        end = time.time() + timeout
        while True:
            if needle in self.console():
                return
            if self.p.poll() is not None or time.time() > end:
                with self.lock:
                    err = self.err.decode(errors="replace")
                why = f"QEMU exited ({self.p.returncode})" if self.p.poll() is not None else f"not within {timeout}s"
                raise RuntimeError(f"guest {self.name}: no {needle!r}: {why}\n--- console:\n{self.console()[-6000:]}"
                                   f"\n--- qemu stderr:\n{err[-3000:]}\n--- command: {' '.join(self.command)}")
            time.sleep(0.02)

    def type(self, line):
        self.p.stdin.write(line.encode() + b"\n")
        self.p.stdin.flush()

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()


def parse_features(console):
    m = re.findall(r"^VW-FEATURES bits=([01]+)", console, re.M)
    if not m:
        return None
    bits = m[-1]
    return {"bits": bits, "offloads": [n for b, n in FEATURE_BITS.items() if b < len(bits) and bits[b] == "1"]}


def parse_ethtool(console):
    keys = ("rx-checksumming", "tx-checksumming", "tcp-segmentation-offload", "generic-segmentation-offload",
            "generic-receive-offload", "scatter-gather")
    out = {}
    for line in re.findall(r"^VW-ETHTOOL (.*)$", console, re.M):
        k, _, v = line.partition(":")
        if k.strip() in keys:
            out[k.strip()] = v.split()[0] if v.split() else ""
    return out


def parse_channels(console):
    m = re.findall(r"^VW-CHANNELS combined=(\d*)", console, re.M)
    return int(m[-1]) if m and m[-1] else None


def parse_queues(console):
    """The guest's per-queue packet counters (`ethtool -S eth0`) at the end of the run:
    {"rx": [...], "tx": [...]} by queue index."""
    m = re.findall(r"^VW-QUEUES (.*)$", console, re.M)
    out = {"rx": {}, "tx": {}}
    if m:
        for kv in m[-1].split():
            k, _, v = kv.partition("=")
            q = re.match(r"([rt]x)_queue_(\d+)_packets$", k)
            if q and v.isdigit():
                out[q.group(1)][int(q.group(2))] = int(v)
    return {d: [out[d][i] for i in sorted(out[d])] for d in out}


def parse_snmp(console):
    headers, out = {}, {}
    for line in re.findall(r"^VW-SNMP (.*)$", console, re.M):
        parts = line.split()
        if not parts or not parts[0].endswith(":"):
            continue
        proto = parts[0]
        if proto in headers:
            for n, v in zip(headers.pop(proto), parts[1:]):
                try:
                    out[proto + n] = int(v)
                except ValueError:
                    pass
        else:
            headers[proto] = parts[1:]
    m = re.findall(r"^VW-DEV (.*)$", console, re.M)
    if m:
        for kv in m[-1].split():
            k, _, v = kv.partition("=")
            out["Dev:" + k] = int(v) if v.isdigit() else v
    return {k: out[k] for k in ("Tcp:InSegs", "Tcp:OutSegs", "Tcp:RetransSegs", "Tcp:InCsumErrors", "Ip:InHdrErrors",
                                "Ip:InReceives", "Dev:rx_packets", "Dev:tx_packets", "Dev:rx_errors",
                                "Dev:rx_dropped", "Dev:rx_frame_errors", "Dev:rx_length_errors") if k in out}


def parse_iperf(console):
    m = re.search(r"^VW-JSON-BEGIN\n(.*?)^VW-JSON-END status=(\S*)", console, re.M | re.S)
    if not m:
        raise RuntimeError(f"no iperf3 report on the console:\n{console[-4000:]}")
    try:
        v = json.loads(m.group(1))
    except ValueError as e:
        raise RuntimeError(f"iperf3 printed no JSON ({e}):\n{m.group(1)[-3000:]}")
    if "error" in v:
        raise RuntimeError(f"iperf3 failed: {v['error']}")
    end = v["end"]
    return {"mbit_s": end["sum_received"]["bits_per_second"] / 1e6,
            "received_bytes": end["sum_received"]["bytes"],
            "sent_bytes": end["sum_sent"]["bytes"],
            "seconds": end["sum_received"]["seconds"],
            "retransmits": end["sum_sent"].get("retransmits"),
            "interval_mbit_s": [round(i["sum"]["bits_per_second"] / 1e6, 1) for i in v.get("intervals", [])
                                if not i["sum"].get("omitted")]}


def cpu_busy_seconds():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / os.sysconf("SC_CLK_TCK")


def wait_quiet(max_load, limit=900):
    """Wait (up to `limit` seconds) until the machine's CPU use over 2 s is under `max_load`
    cores."""
    end = time.time() + limit
    said = False
    while True:
        b0 = cpu_busy_seconds()
        time.sleep(2)
        load = (cpu_busy_seconds() - b0) / 2
        if load < max_load or time.time() > end:
            return load
        if not said:
            log(f"  waiting for the machine to be quiet (other work uses {load:.2f} cores)")
            said = True


def wait_paths(paths, timeout, what, proc):
    end = time.time() + timeout
    while not all(os.path.exists(p) for p in paths):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        if time.time() > end:
            raise RuntimeError(f"{what}: no {' '.join(p for p in paths if not os.path.exists(p))} within {timeout}s")
        time.sleep(0.05)


# ---- the two switches ----------------------------------------------------------------

class Virtwire:
    binary = VIRTWIRE

    def __init__(self, d, cpu, macs, extra_args, queues=1):
        self.queues = queues
        self.dir = d
        self.cpu = cpu
        self.macs = macs
        self.extra_args = extra_args
        self.run_dir = os.path.join(d, "run")
        self.sockets = [os.path.join(d, f"vm{i + 1}.sock") for i in range(2)]
        self.log_path = os.path.join(d, "virtwire.log")
        self.p = None

    def start(self):
        cfg = os.path.join(self.dir, "virtwire.toml")
        with open(cfg, "w") as f:
            for i, sock in enumerate(self.sockets):
                f.write(f"[[port]]\nname = 'vm{i + 1}'\ntype = 'vhost-user'\nsocket = '{sock}'\nmode = 'server'\n"
                        f"queue_pairs = {self.queues}\nmac = '{self.macs[i]}'\n\n")
        self.p = subprocess.Popen(["taskset", "-c", self.cpu, self.binary, "run", "--config", cfg,
                                   "--run-dir", self.run_dir] + self.extra_args,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=open(self.log_path, "w"))
        self.pid = self.p.pid
        try:
            wait_paths(self.sockets + [os.path.join(self.run_dir, "ctl.sock")], 20, "virtwire", self.p)
        except RuntimeError as e:
            raise RuntimeError(f"{e}\n{self.log()}")

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def stats(self):
        r = subprocess.run([self.binary, "--run-dir", self.run_dir, "stats", "--json"], capture_output=True,
                           text=True, timeout=20)
        if r.returncode:
            raise RuntimeError(f"virtwire stats: {r.stderr.strip()}")
        return json.loads(r.stdout)

    def begin(self):
        self.s0 = self.stats()

    def end(self):
        s1 = self.stats()
        before = {p["name"]: p for p in self.s0["ports"]}
        ports = {}
        for p in s1["ports"]:
            b = before.get(p["name"], {})
            bo = b.get("offloads", {})
            ports[p["name"]] = {
                "offloads": {k: p["offloads"].get(k, 0) - bo.get(k, 0) for k in OFFLOAD_COUNTERS},
                "rx_packets": p["rx_packets"] - b.get("rx_packets", 0),
                "tx_packets": p["tx_packets"] - b.get("tx_packets", 0),
                "rx_bytes": p["rx_bytes"] - b.get("rx_bytes", 0),
                "tx_bytes": p["tx_bytes"] - b.get("tx_bytes", 0),
                "drops": {k: v - b.get("drops", {}).get(k, 0) for k, v in p["drops"].items()
                          if v - b.get("drops", {}).get(k, 0)},
                "ring_errors": p.get("ring_errors", 0) - b.get("ring_errors", 0),
                # Notifications: kicks from the guest, interrupts to it.
                "kicks": p.get("kicks", 0) - b.get("kicks", 0),
                "interrupts": p.get("interrupts", 0) - b.get("interrupts", 0),
                # Per queue pair: frames received from the guest (rx) and sent to it (tx).
                "queues": [{"rx_packets": q["rx_packets"] - bq.get("rx_packets", 0),
                            "tx_packets": q["tx_packets"] - bq.get("tx_packets", 0),
                            "kicks": q.get("kicks", 0) - bq.get("kicks", 0),
                            "interrupts": q.get("interrupts", 0) - bq.get("interrupts", 0)}
                           for q, bq in zip(p.get("queues", []),
                                            b.get("queues", []) + [{}] * len(p.get("queues", [])))],
            }
        return {"ports": ports}

    def stop(self):
        terminate(self.p)
        return {}


class TestpmdWire:
    """dpdk-testpmd, two vhost PMD ports (servers) in io forwarding; its main lcore and its
    forwarding lcore both on the switch CPU."""

    def __init__(self, d, cpu, devargs, queues=1):
        self.queues = queues
        self.dir = d
        self.cpu = cpu
        self.devargs = devargs
        self.sockets = [os.path.join(d, f"vm{i + 1}.sock") for i in range(2)]
        self.t = None

    def start(self):
        args = [f"--lcores=0@{self.cpu},1@{self.cpu}", "--main-lcore", "0", "--no-pci", "--no-huge", "-m", "512",
                "--no-shconf", f"--file-prefix=vwgi-{os.getpid()}", "--log-level=lib.eal:notice",
                "--log-level=lib.vhost.config:info", "--log-level=pmd.net.vhost:info"]
        for i, sock in enumerate(self.sockets):
            extra = f",{self.devargs}" if self.devargs else ""
            args += ["--vdev", f"net_vhost{i},iface={sock},queues={self.queues}{extra}"]
        args += ["--", "-i", "--total-num-mbufs=16384", "--forward-mode=io", "--nb-cores=1", "--disable-link-check",
                 f"--rxq={self.queues}", f"--txq={self.queues}"]
        self.command = [TESTPMD] + args
        self.t = Testpmd(args, self.cpu)
        self.t.wait_for("testpmd>", 60)
        self.t.cmd("start")
        self.t.wait_for("io packet forwarding", 10)
        self.pid = self.t.p.pid
        end = time.time() + 10
        while not all(os.path.exists(s) for s in self.sockets):
            if time.time() > end:
                raise RuntimeError(f"testpmd created no sockets:\n{self.t.read()[-3000:]}")
            time.sleep(0.05)

    def begin(self):
        self.mark = len(self.t.read())

    def end(self):
        return {}

    def stop(self):
        r = {}
        if self.t is None:
            return r
        t, self.t = self.t, None
        try:
            mark = len(t.read())
            t.cmd("show port stats all")
            deadline = time.time() + 10
            while "NIC statistics for port 1" not in t.read()[mark:] and time.time() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
            text = t.read()[mark:]
            ports = {}
            for port in range(2):
                block = text[text.find(f"NIC statistics for port {port}"):]
                m = {k: re.search(rf"{k}:\s+(\d+)", block) for k in ("RX-packets", "RX-missed", "RX-errors",
                                                                    "RX-nombuf", "RX-bytes", "TX-packets",
                                                                    "TX-errors", "TX-bytes")}
                ports[f"vm{port + 1}"] = {k: int(v.group(1)) for k, v in m.items() if v}
            r["ports"] = ports
            whole = t.read()
            feats = re.findall(r"\((\S+?)\) negotiated Virtio features: (0x[0-9a-f]+)", whole)
            r["negotiated"] = {os.path.basename(s): f for s, f in feats}
            r["negotiated_offloads"] = {os.path.basename(s): [n for b, n in FEATURE_BITS.items() if int(f, 16) >> b & 1]
                                        for s, f in feats}
            r["log_notes"] = sorted(set(l.strip() for l in whole.splitlines()
                                        if re.search(r"csum|cksum|TSO|LRO|offload", l, re.I)))
        finally:
            t.close()
        return r


# ---- one run -------------------------------------------------------------------------

def run_key(setup, queues):
    return f"{setup}/q{queues}"


def measure(setup, queues, a, image, tsc_khz, off_opts, tmp):
    switch_name, offloads = setup.split("/")
    d = tempfile.mkdtemp(prefix=f"{switch_name}-{offloads}-q{queues}-", dir=tmp)
    names = ("gi-vm1", "gi-vm2")
    macs = [mac_for(n) for n in names]
    if switch_name == "virtwire":
        sw = Virtwire(d, a.switch_cpu, macs, a.virtwire_args.split(), queues)
    else:
        sw = TestpmdWire(d, a.switch_cpu, a.testpmd_devargs, queues)
    device_opts = off_opts if offloads == "off" else ""
    guest_opts = {"queues": queues, "vcpus": a.vcpus, "transport": a.transport, "vectors": a.vectors}
    guests = []
    r = {"setup": run_key(setup, queues), "switch": switch_name, "offloads": offloads, "queues": queues}
    try:
        sw.start()
        server = Guest(names[1], sw.sockets[1], "10.0.0.2/24", SERVER_SCRIPT, image, d, device_opts, tsc_khz,
                       a.guest_cpus, **guest_opts)
        guests.append(server)
        client = Guest(names[0], sw.sockets[0], "10.0.0.1/24",
                       CLIENT_SCRIPT.format(peer="10.0.0.2", secs=a.seconds, omit=a.omit, iperf_args=a.iperf_args),
                       image, d, device_opts, tsc_khz, a.guest_cpus, **guest_opts)
        guests.append(client)
        t_boot = time.time()
        server.wait_for("VW-WAIT end")
        client.wait_for("VW-WAIT iperf")
        r["boot_s"] = time.time() - t_boot
        if "VW-UNREACHABLE" in client.console():
            raise RuntimeError(f"vm1 cannot reach vm2:\n{client.console()[-3000:]}")
        sw.begin()
        cpu0 = {"switch": proc_cpu_seconds(sw.pid), "vm1": proc_cpu_seconds(client.pid),
                "vm2": proc_cpu_seconds(server.pid)}
        busy0, t0 = cpu_busy_seconds(), time.time()
        client.type("go")
        client.wait_for("VW-JSON-END", a.seconds + a.omit + 120)
        t1 = time.time()
        cpu1 = {"switch": proc_cpu_seconds(sw.pid), "vm1": proc_cpu_seconds(client.pid),
                "vm2": proc_cpu_seconds(server.pid)}
        busy1 = cpu_busy_seconds()
        r.update(sw.end())
        server.type("go")
        server.wait_for("VW-DONE")
        client.wait_for("VW-DONE")
        c1, c2 = client.console(), server.console()
        r["iperf"] = parse_iperf(c1)
        r["mbit_s"] = r["iperf"]["mbit_s"]
        r["window_s"] = t1 - t0
        cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
        r["cpu_s"] = cpu
        r["other_cpu_cores"] = max(0.0, (busy1 - busy0) - sum(cpu.values())) / (t1 - t0)
        r["guests"] = {k: {"features": parse_features(c), "ethtool": parse_ethtool(c), "counters": parse_snmp(c),
                           "channels": parse_channels(c), "queues": parse_queues(c)}
                       for k, c in (("vm1", c1), ("vm2", c2))}
        for k, g in r["guests"].items():
            if g["channels"] != queues:
                raise RuntimeError(f"{k} uses {g['channels']} queue pairs, not {queues}:\n"
                                   f"{(c1 if k == 'vm1' else c2)[-3000:]}")
    except Exception:
        if isinstance(sw, Virtwire):
            log(f"virtwire log:\n{sw.log()}")
        elif sw.t is not None:
            log(f"testpmd output:\n{sw.t.read()[-4000:]}")
        raise
    finally:
        for g in guests:
            g.kill()
        r.update({k: v for k, v in sw.stop().items() if k not in r or not r[k]})
        if not a.keep:
            shutil.rmtree(d, ignore_errors=True)
    return r


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def frame_sizes(r):
    """Mean bytes per frame from vm1 (the sender) and toward vm2, as the switch counted
    them: virtwire over the iperf3 run, testpmd over its whole life (boot, ping and the
    iperf3 connection setup add a few hundred frames)."""
    p = r.get("ports", {})
    a, b = p.get("vm1", {}), p.get("vm2", {})
    if r["switch"] == "virtwire":
        pairs = ((a.get("rx_bytes"), a.get("rx_packets")), (b.get("tx_bytes"), b.get("tx_packets")))
    else:
        pairs = ((a.get("RX-bytes"), a.get("RX-packets")), (b.get("TX-bytes"), b.get("TX-packets")))
    return [x / n if x is not None and n else None for x, n in pairs]


def summarize(results, keys):
    rows = {}
    for s in keys:
        rs = results.get(s, [])
        rows[s] = {
            "setup": s,
            "queues": rs[0]["queues"] if rs else None,
            "mbit_s": median(r["mbit_s"] for r in rs),
            "runs_mbit_s": [round(r["mbit_s"], 1) for r in rs],
            "retransmits": median(r["iperf"]["retransmits"] for r in rs),
            "switch_cpu_s": median(r["cpu_s"]["switch"] for r in rs),
            "switch_cpu_cores": median(r["cpu_s"]["switch"] / r["window_s"] for r in rs),
            "guest_cpu_cores": median((r["cpu_s"]["vm1"] + r["cpu_s"]["vm2"]) / r["window_s"] for r in rs),
            "guest_cpu_s": median(r["cpu_s"]["vm1"] + r["cpu_s"]["vm2"] for r in rs),
            "window_s": median(r["window_s"] for r in rs),
            "disturbed_runs": sum(1 for r in rs if r.get("disturbed")),
            "receiver_csum_errors": sum(r["guests"]["vm2"]["counters"].get("Tcp:InCsumErrors", 0) for r in rs),
            "frame_bytes_from_vm1": median(frame_sizes(r)[0] for r in rs),
            "frame_bytes_to_vm2": median(frame_sizes(r)[1] for r in rs),
            "runs": rs,
        }
    ratio = lambda x, y: x / y if x is not None and y else None
    for s in keys:
        sw, off, q = s.split("/")
        if sw == "virtwire" and f"testpmd/{off}/{q}" in rows:
            rows[s]["vs_testpmd"] = ratio(rows[s]["mbit_s"], rows[f"testpmd/{off}/{q}"]["mbit_s"])
        if off == "on" and f"{sw}/off/{q}" in rows:
            rows[s]["on_vs_off"] = ratio(rows[s]["mbit_s"], rows[f"{sw}/off/{q}"]["mbit_s"])
        if q != "q1" and f"{sw}/{off}/q1" in rows:
            rows[s]["vs_q1"] = ratio(rows[s]["mbit_s"], rows[f"{sw}/{off}/q1"]["mbit_s"])
    return [rows[s] for s in keys]


class BenchLock:
    """An exclusive fcntl lock on `path` held around each measured run, so that benchmarks
    sharing the machine take turns; no-op without a path."""

    def __init__(self, path):
        self.path = path
        self.fd = None

    def __enter__(self):
        if self.path:
            import fcntl
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log(f"  waiting for the lock on {self.path}")
                t0 = time.time()
                fcntl.flock(self.fd, fcntl.LOCK_EX)
                log(f"  got the lock after {time.time() - t0:.0f} s")
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of interleaved runs (default 3)")
    ap.add_argument("--seconds", type=int, default=5, help="iperf3 -t (default 5)")
    ap.add_argument("--omit", type=int, default=1, help="iperf3 -O: seconds of slow start not counted (default 1)")
    ap.add_argument("--setups", default=",".join(SETUPS), help=f"subset of {','.join(SETUPS)}")
    ap.add_argument("--testpmd-devargs", default="tso=1",
                    help="devargs added to each net_vhost vdev (default tso=1; '' for none)")
    ap.add_argument("--switch-cpu", default="1", help="CPU of the switch process (default 1)")
    ap.add_argument("--guest-cpus", default="", help="taskset CPU list for the QEMU processes (default: not pinned)")
    ap.add_argument("--virtwire", default=VIRTWIRE, help=f"virtwire binary (default {VIRTWIRE})")
    ap.add_argument("--virtwire-args", default="", help="extra arguments of `virtwire run`, e.g. '--poll-mode poll'")
    ap.add_argument("--max-other-load", type=float, default=0.3,
                    help="before each run, wait until other work uses fewer cores than this (default 0.3)")
    ap.add_argument("--retries", type=int, default=2, help="repeats of a run disturbed by other work (default 2)")
    ap.add_argument("--queues", default="1",
                    help="queue pairs per guest, a list measured in turn within each round, e.g. 1,4 (default 1): "
                         "QEMU netdev queues=N and mq=on, the guest's ethtool -L eth0 combined N, virtwire's "
                         "queue_pairs = N, testpmd's vhost queues=N and --rxq/--txq N")
    ap.add_argument("--iperf-args", default="",
                    help="more arguments of the client's iperf3, e.g. '-l 256 -N' (256-byte writes, TCP_NODELAY) "
                         "or '-M 88' (MSS); one stream unless -P is given")
    ap.add_argument("--vcpus", type=int, default=1, help="vCPUs per guest (default 1)")
    ap.add_argument("--transport", choices=("mmio", "pci"), default="mmio",
                    help="mmio: -M microvm, virtio-net-device (default); pci: -M pc, virtio-net-pci")
    ap.add_argument("--vectors", type=int, default=None,
                    help="MSI-X vectors of virtio-net-pci (default 2N+2; 0 for INTx)")
    ap.add_argument("--lock", default="/tmp/bench.lock",
                    help="file locked (flock, exclusive) around each measured run (default /tmp/bench.lock; '' for none)")
    ap.add_argument("--save", help="also write the JSON to this file")
    ap.add_argument("--keep", action="store_true", help="keep each run's directory (configs, logs, initrds)")
    a = ap.parse_args()
    setups = [s for s in a.setups.split(",") if s]
    for s in setups:
        if s not in SETUPS:
            sys.exit(f"unknown setup {s!r} (one of {', '.join(SETUPS)})")
    queue_list = [int(q) for q in a.queues.split(",") if q]
    if not queue_list or any(q < 1 or q > 16 for q in queue_list):
        sys.exit("--queues: numbers from 1 to 16")
    keys = [run_key(s, q) for s in setups for q in queue_list]
    if os.geteuid() != 0:
        sys.exit("needs root")
    for tool in (QEMU, "taskset"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found")
    if any(s.startswith("testpmd") for s in setups) and not shutil.which(TESTPMD):
        sys.exit("dpdk-testpmd not found (apt-get install dpdk-dev)")
    if any(s.startswith("virtwire") for s in setups) and not os.path.exists(a.virtwire):
        sys.exit(f"{a.virtwire} not found (cargo build --release -p virtwire)")
    image = guest_image()
    tsc_khz = host_tsc_khz()
    off_opts = offloads_off_opts()
    tmp = tempfile.mkdtemp(prefix="vw-guest-iperf-")
    # A copy, so that a rebuild during the run does not change what is measured.
    Virtwire.binary = os.path.join(tmp, "virtwire")
    if os.path.exists(a.virtwire):
        shutil.copy2(a.virtwire, Virtwire.binary)
    log(f"guest TSC {tsc_khz} kHz; offloads-off device options: {off_opts}")
    log(f"load average before: {' '.join(open('/proc/loadavg').read().split()[:3])}")
    log(f"queue pairs {queue_list}; iperf3 client arguments: {a.iperf_args or '(none)'}; "
        f"{a.vcpus} vCPU(s) per guest, {a.transport}")
    results = {}
    try:
        for rnd in range(a.repeat):
            for s in setups:
                for q in queue_list:
                    k = run_key(s, q)
                    for attempt in range(a.retries + 1):
                        with BenchLock(a.lock):
                            load = wait_quiet(a.max_other_load)
                            r = measure(s, q, a, image, tsc_khz, off_opts, tmp)
                        r["round"] = rnd
                        r["load_before_cores"] = load
                        r["disturbed"] = r["other_cpu_cores"] > a.max_other_load
                        if not r["disturbed"] or attempt == a.retries:
                            break
                        log(f"  round {rnd + 1} {k:16} {r['mbit_s']:8.1f} Mbit/s: other work used "
                            f"{r['other_cpu_cores']:.2f} cores meanwhile: again")
                    results.setdefault(k, []).append(r)
                    extra = ""
                    if "ports" in r and s.startswith("virtwire"):
                        o = r["ports"]["vm2"]["offloads"]
                        extra = "".join(f" vm2 {c}={o[c]}" for c in OFFLOAD_COUNTERS if o[c])
                    fb = frame_sizes(r)
                    g = r["guests"]
                    log(f"  round {rnd + 1} {k:16} {r['mbit_s']:8.1f} Mbit/s  retr {r['iperf']['retransmits']}  "
                        f"switch cpu {r['cpu_s']['switch']:.2f} s  guests {r['cpu_s']['vm1']:.2f}+{r['cpu_s']['vm2']:.2f} s "
                        f"in {r['window_s']:.1f} s  other {r['other_cpu_cores']:.2f} cores  "
                        f"B/frame {fb[0] or 0:.0f}->{fb[1] or 0:.0f}  vm1 tx queues {g['vm1']['queues']['tx']} "
                        f"vm2 rx queues {g['vm2']['queues']['rx']}{extra}")
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    rows = summarize(results, keys)
    doc = {"tsc_khz": tsc_khz, "offloads_off_device_options": off_opts, "testpmd_devargs": a.testpmd_devargs,
           "seconds": a.seconds, "omit": a.omit, "guest_cpus": a.guest_cpus, "switch_cpu": a.switch_cpu,
           "queues": queue_list, "iperf_args": a.iperf_args, "vcpus": a.vcpus, "transport": a.transport,
           "vectors": a.vectors, "rows": rows}
    if a.save:
        with open(a.save, "w") as f:
            json.dump(doc, f, indent=2)
    if a.json:
        print(json.dumps(doc, indent=2))
        return
    f = lambda x, p=1: "-" if x is None else f"{x:.{p}f}"
    print(f"{'setup':16} {'Mbit/s':>8} {'vs testpmd':>10} {'on/off':>6} {'vs q1':>5} {'retr':>5} {'switch CPU s':>12} "
          f"{'(cores)':>7} {'guests CPU s':>12} {'(cores)':>7} {'window s':>8} {'B/frame':>13}  runs (Mbit/s)")
    for r in rows:
        print(f"{r['setup']:16} {f(r['mbit_s']):>8} {f(r.get('vs_testpmd'), 2):>10} {f(r.get('on_vs_off'), 2):>6} "
              f"{f(r.get('vs_q1'), 2):>5} {f(r['retransmits'], 0):>5} {f(r['switch_cpu_s'], 2):>12} "
              f"{f(r['switch_cpu_cores'], 2):>7} {f(r['guest_cpu_s'], 2):>12} {f(r['guest_cpu_cores'], 2):>7} "
              f"{f(r['window_s']):>8} {f(r['frame_bytes_from_vm1'], 0):>6}/{f(r['frame_bytes_to_vm2'], 0):<6}"
              f"  {' '.join(str(x) for x in r['runs_mbit_s'])}"
              + (f"  ({r['disturbed_runs']} disturbed by other work)" if r["disturbed_runs"] else ""))
    print("\nB/frame: mean bytes per frame from vm1 / toward vm2 as the switch counted them.")
    print("\nqueues each run used (guest ethtool -S, packets per queue): vm1 transmit, vm2 receive; "
          "and for virtwire, frames it took from each of vm1's queue pairs:")
    for r in rows:
        for run in r["runs"]:
            g = run["guests"]
            line = f"  {r['setup']:16} round {run['round'] + 1}: vm1 tx {g['vm1']['queues']['tx']}  vm2 rx {g['vm2']['queues']['rx']}"
            if run["switch"] == "virtwire":
                line += f"  virtwire from vm1 {[q['rx_packets'] for q in run.get('ports', {}).get('vm1', {}).get('queues', [])]}"
            print(line)
    print("\nvirtwire counters over each iperf3 run, toward vm2 (the receiver) and toward vm1 (the sender): "
          "offload work, frames sent to the port, kicks from it and interrupts to it:")
    for r in rows:
        if not r["setup"].startswith("virtwire"):
            continue
        for run in r["runs"]:
            p = run.get("ports", {})
            cells = []
            for port in ("vm2", "vm1"):
                o = p.get(port, {}).get("offloads", {})
                cells.append(" ".join(f"{k}={o.get(k, 0)}" for k in OFFLOAD_COUNTERS)
                             + f"  frames={p.get(port, {}).get('tx_packets', 0)}"
                             + f" kicks={p.get(port, {}).get('kicks', 0)} interrupts={p.get(port, {}).get('interrupts', 0)}")
            print(f"  {r['setup']:16} round {run['round'] + 1}: vm2: {cells[0]}\n{'':33}vm1: {cells[1]}")
    print("\nnegotiated offload bits (guest side, vm1 / vm2) and, for testpmd, what its vhost library negotiated:")
    for r in rows:
        if not r["runs"]:
            continue
        run = r["runs"][0]
        g = run["guests"]
        feats = lambda x: " ".join(x["features"]["offloads"]) if x["features"] else "?"
        print(f"  {r['setup']:16} vm1: {feats(g['vm1'])}\n{'':19}vm2: {feats(g['vm2'])}")
        if "negotiated" in run:
            for sock, v in sorted(run["negotiated"].items()):
                print(f"{'':16}testpmd {sock}: {v} ({' '.join(run['negotiated_offloads'][sock])})")
            for note in run.get("log_notes", []):
                if re.search(r"csum|TSO|LRO", note, re.I):
                    print(f"{'':16}testpmd log: {note}")
    csum = [(r["setup"], r["receiver_csum_errors"]) for r in rows if r["receiver_csum_errors"]]
    if csum:
        print(f"\nTCP checksum errors counted by the receiver: {csum}")


if __name__ == "__main__":
    main()
