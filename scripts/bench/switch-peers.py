#!/usr/bin/env python3
"""Two-port switch benchmark: one DPDK testpmd with two virtio-user ports generates a loop
of traffic on CPU 0, and the switch under test, on CPU 1, forwards it between the two:

  (a) virtwire      two vhost-user ports (server), MAC learning
  (b) testpmd       two vhost PMD ports in io forwarding: a wire, no lookup at all, the
                    upper bound of a switch built on DPDK's vhost library
  (c) OVS-DPDK      Debian's openvswitch-switch-dpdk: a netdev bridge with two
                    dpdkvhostuserclient ports and the NORMAL action, one PMD thread

The frontend sends one burst per port (`start tx_first`) and then forwards whatever it
receives on one port out of the other, in testpmd's `mac` mode with each port's peer
address set to the other port's MAC: a frame leaves port 0 addressed to port 1 and comes
back on port 1, which sends it out again addressed to port 0. (`io` mode would send the
frame back unchanged, with port 0's source address, out of port 1: a learning switch sees
the MAC move to port 1 and, the destination being learned on that same port, drops it.)
The same frontend in the same mode drives all three, so the switch is the only variable.
The learning table is warm after the first frames.

Runs are interleaved (virtwire, testpmd, OVS, virtwire, ...), the medians are reported,
with the ratio to OVS-DPDK. The rate is what the frontend received on both ports over the
measured window (after a warm-up). Per switch: CPU time of the switch process over the
window divided by the frames forwarded, and busy cycles per frame as the switch counts
them (virtwire: `virtwire stats --json` workers; OVS: `ovs-appctl
dpif-netdev/pmd-stats-show` processing cycles after `pmd-stats-clear`; testpmd:
`--record-core-cycles`, over its whole forwarding run). Each run records the placement
of the two vCPUs before and after (`virtwire bench cacheline`) and the frontend's cycles
per frame, which show the placement during the run (see run_class), and how much CPU
other processes took during the window; a run disturbed by other work is repeated. Prints
a table, or JSON with --json (--save FILE writes the JSON next to the table).

Needs root (hugepages), dpdk-testpmd (Debian dpdk-dev), a release build of virtwire,
and openvswitch-switch-dpdk (installed with apt-get when missing). OVS runs from a private
directory (its own database, run and log directory); nothing of a system OVS is used.
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import benchlib
from benchlib import TESTPMD, VIRTWIRE, Testpmd, cacheline_rtt, eal, ensure_hugepages, placement, proc_cpu_seconds

SWITCHES = ("virtwire", "testpmd", "ovs")
MACS = ("52:54:00:00:01:00", "52:54:00:00:01:01")
OVS_VSWITCHD = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk"
OVS_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
FRONTEND_CPUS = "0-1"  # forwarding lcore 0; the main lcore (1) only reads commands
SWITCH_CPU = "1"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def ensure_ovs():
    """Install Debian's DPDK build of ovs-vswitchd when it is missing, without starting the
    system's OVS service (a policy-rc.d that denies service starts is put in place for the
    install when there is none)."""
    if os.path.exists(OVS_VSWITCHD) and shutil.which("ovsdb-server") and shutil.which("ovs-vsctl"):
        return
    log("installing openvswitch-switch-dpdk")
    policy = "/usr/sbin/policy-rc.d"
    ours = not os.path.exists(policy)
    if ours:
        with open(policy, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(policy, 0o755)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "openvswitch-switch-dpdk"]
    try:
        if subprocess.run(cmd, env=env).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, check=True)
            subprocess.run(cmd, env=env, check=True)
    finally:
        if ours:
            os.unlink(policy)
    if not os.path.exists(OVS_VSWITCHD):
        sys.exit(f"{OVS_VSWITCHD} missing after installing openvswitch-switch-dpdk")


def cpu_busy_seconds():
    """Busy time of all CPUs (user, nice, system, irq, softirq) and steal, in seconds."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / ticks, (v[7] if len(v) > 7 else 0) / ticks


def wait_quiet(max_load, limit=900):
    """Wait (up to `limit` seconds) until the machine's CPU use over a 2-second sample is
    under `max_load` cores, so that runs do not compete with other work."""
    end = time.time() + limit
    said = False
    while True:
        b0, _ = cpu_busy_seconds()
        time.sleep(2)
        b1, _ = cpu_busy_seconds()
        load = (b1 - b0) / 2
        if load < max_load or time.time() > end:
            return load
        if not said:
            log(f"  waiting for the machine to be quiet (other work uses {load:.2f} cores)")
            said = True


def wait_paths(paths, timeout, what, proc=None):
    end = time.time() + timeout
    while not all(os.path.exists(p) for p in paths):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        if time.time() > end:
            raise RuntimeError(f"{what}: no {' '.join(p for p in paths if not os.path.exists(p))} within {timeout}s")
        time.sleep(0.05)


def wait_after(t, needle, mark, timeout):
    """Wait for `needle` in what testpmd `t` printed after offset `mark`."""
    end = time.time() + timeout
    while needle not in t.read()[mark:]:
        if t.p.poll() is not None:
            raise RuntimeError(f"testpmd exited:\n{t.read()[-3000:]}")
        if time.time() > end:
            raise RuntimeError(f"testpmd: no {needle!r} within {timeout}s:\n{t.read()[mark:][-3000:]}")
        time.sleep(0.05)
    return t.read()[mark:]


def read_log(path, tail=40):
    try:
        with open(path) as f:
            return "".join(f.readlines()[-tail:])
    except OSError:
        return ""


class Virtwire:
    """virtwire with two vhost-user ports in server mode and a run directory of its own."""

    frontend_server = False
    binary = VIRTWIRE
    extra_args = []
    extra_config = ""  # TOML written after run_dir, e.g. a [datapath] table
    port_config = ""  # TOML lines added to every [[port]] table

    def __init__(self, d):
        self.dir = d
        self.run_dir = os.path.join(d, "run")
        self.sockets = [os.path.join(d, f"p{i}.sock") for i in range(2)]
        self.env = dict(os.environ, VIRTWIRE_RUN_DIR=self.run_dir)
        self.log_path = os.path.join(d, "virtwire.log")
        self.p = None

    def start(self, size):
        cfg = os.path.join(self.dir, "virtwire.toml")
        with open(cfg, "w") as f:
            f.write(f'run_dir = "{self.run_dir}"\n{self.extra_config}')
            for i, sock in enumerate(self.sockets):
                f.write(f'\n[[port]]\nname = "p{i}"\ntype = "vhost-user"\nsocket = "{sock}"\n'
                        f'mode = "server"\nqueue_pairs = 1\nmac = "{MACS[i]}"\n{self.port_config}')
        self.p = subprocess.Popen(
            ["taskset", "-c", SWITCH_CPU, self.binary, "run", "--config", cfg, "--run-dir", self.run_dir]
            + self.extra_args,
            stdout=subprocess.DEVNULL, stderr=open(self.log_path, "w"), env=self.env)
        try:
            wait_paths(self.sockets + [os.path.join(self.run_dir, "ctl.sock")], 10, "virtwire", self.p)
        except RuntimeError as e:
            raise RuntimeError(f"{e}\n{read_log(self.log_path)}")
        self.pid = self.p.pid

    def connected(self):
        pass

    def stats(self):
        out = subprocess.run([self.binary, "stats", "--json"], capture_output=True, text=True, env=self.env, timeout=10)
        if out.returncode:
            raise RuntimeError(f"virtwire stats: {out.stderr.strip()}")
        return json.loads(out.stdout)

    def begin(self):
        self.s0 = self.stats()

    def end(self):
        s1 = self.stats()
        busy = sum(w["busy_cycles"] for w in s1["workers"]) - sum(w["busy_cycles"] for w in self.s0["workers"])
        pkts = sum(w["packets"] for w in s1["workers"]) - sum(w["packets"] for w in self.s0["workers"])
        drops = {}
        for p0, p1 in zip(self.s0["ports"], s1["ports"]):
            for k, v in p1["drops"].items():
                drops[k] = drops.get(k, 0) + v - p0["drops"].get(k, 0)
        return {"busy_cycles": busy, "switch_packets": pkts, "switch_drops": drops,
                "fdb_entries": s1["fdb"]["entries"]}

    def stop(self):
        benchlib.terminate(self.p)
        return {}


class TestpmdWire:
    """dpdk-testpmd with two vhost PMD ports in io forwarding, its forwarding lcore on CPU 1."""

    frontend_server = False

    def __init__(self, d):
        self.dir = d
        self.sockets = [os.path.join(d, f"p{i}.sock") for i in range(2)]
        self.t = None

    def start(self, size):
        args = eal(f"vwsw-be-{os.getpid()}", 0, False)
        for i, sock in enumerate(self.sockets):
            args += ["--vdev", f"net_vhost{i},iface={sock},queues=1"]
        args += ["--", "-i", "--total-num-mbufs=16384", "--forward-mode=io", "--record-core-cycles",
                 "--disable-link-check"]
        self.t = Testpmd(args, "0-1")
        self.t.wait_for("testpmd>", 60)
        self.t.cmd("start")
        self.started = time.time()
        wait_paths(self.sockets, 10, "testpmd")
        self.pid = self.t.p.pid

    def connected(self):
        pass

    def begin(self):
        pass

    def end(self):
        # Busy cycles come from the stop printout (the whole forwarding run); read in stop().
        return {}

    def stop(self):
        r = {}
        if self.t is None:
            return r
        t, self.t = self.t, None
        try:
            mark = len(t.read())
            t.cmd("stop")
            text = wait_after(t, "Done.", mark, 10)
            # DPDK 22.11 prints "total cycles", later releases "busy cycles": both are the
            # cycles of forwarding calls that received at least one frame.
            m = re.search(r"CPU cycles/packet=([\d.]+) \((?:busy|total) cycles=(\d+) / total \w+ packets=(\d+)\)"
                          r" at (\d+) MHz", text)
            if m:
                r = {"busy_cycles": int(m.group(2)), "switch_packets": int(m.group(3)),
                     "tsc_mhz": int(m.group(4)), "forwarding_s": time.time() - self.started}
        finally:
            t.close()
        return r


class OvsDpdk:
    """ovsdb-server + ovs-vswitchd (DPDK build) from a private directory: a netdev bridge
    with two dpdkvhostuserclient ports and the NORMAL action, one PMD thread on CPU 1."""

    frontend_server = True

    def __init__(self, d):
        self.dir = d
        self.sockets = [os.path.join(d, f"p{i}.sock") for i in range(2)]
        self.db = os.path.join(d, "conf.db")
        self.db_sock = os.path.join(d, "db.sock")
        self.env = dict(os.environ, OVS_RUNDIR=d, OVS_LOGDIR=d, OVS_DBDIR=d, OVS_SYSCONFDIR=d, OVS_PKGDATADIR="/usr/share/openvswitch")
        self.server = None
        self.vswitchd = None

    def vsctl(self, *args, wait=True):
        cmd = ["ovs-vsctl", f"--db=unix:{self.db_sock}", "--timeout=30"] + ([] if wait else ["--no-wait"]) + list(args)
        out = subprocess.run(cmd, capture_output=True, text=True, env=self.env)
        if out.returncode:
            raise RuntimeError(f"{' '.join(cmd)}: {out.stderr.strip()}\n{read_log(os.path.join(self.dir, 'ovs-vswitchd.log'))}")
        return out.stdout.strip()

    def appctl(self, *args):
        cmd = ["ovs-appctl", "-t", os.path.join(self.dir, "ovs-vswitchd.ctl")] + list(args)
        out = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=30)
        if out.returncode:
            raise RuntimeError(f"{' '.join(cmd)}: {out.stderr.strip()}")
        return out.stdout

    def start(self, size):
        d = self.dir
        subprocess.run(["ovsdb-tool", "create", self.db, OVS_SCHEMA], check=True, env=self.env)
        self.server = subprocess.Popen(
            ["taskset", "-c", SWITCH_CPU, "ovsdb-server", self.db, f"--remote=punix:{self.db_sock}",
             f"--unixctl={d}/ovsdb-server.ctl", f"--pidfile={d}/ovsdb-server.pid", f"--log-file={d}/ovsdb-server.log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env)
        wait_paths([self.db_sock], 10, "ovsdb-server", self.server)
        self.vsctl("init", wait=False)
        self.vsctl("set", "Open_vSwitch", ".",
                   "other_config:dpdk-init=true",
                   "other_config:dpdk-extra=--no-pci --in-memory --single-file-segments",
                   "other_config:dpdk-socket-mem=512",
                   f"other_config:pmd-cpu-mask={1 << int(SWITCH_CPU):#x}",
                   wait=False)
        # The whole process on the switch core, as virtwire: DPDK's main lcore and the PMD
        # thread both end up on CPU 1.
        self.vswitchd = subprocess.Popen(
            ["taskset", "-c", SWITCH_CPU, OVS_VSWITCHD, f"unix:{self.db_sock}", f"--pidfile={d}/ovs-vswitchd.pid",
             f"--unixctl={d}/ovs-vswitchd.ctl", f"--log-file={d}/ovs-vswitchd.log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env)
        self.pid = self.vswitchd.pid
        wait_paths([os.path.join(d, "ovs-vswitchd.ctl")], 60, "ovs-vswitchd", self.vswitchd)
        self.vsctl("add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev")
        for i, sock in enumerate(self.sockets):
            self.vsctl("add-port", "br0", f"p{i}", "--", "set", "Interface", f"p{i}", "type=dpdkvhostuserclient",
                       f"options:vhost-server-path={sock}", f"ofport_request={i + 1}")
        flows = subprocess.run(["ovs-ofctl", "dump-flows", f"unix:{d}/br0.mgmt"], capture_output=True, text=True,
                               env=self.env).stdout
        if "actions=NORMAL" not in flows:
            raise RuntimeError(f"br0 has no NORMAL flow:\n{flows}")

    def connected(self):
        end = time.time() + 30
        while True:
            states = [self.vsctl("get", "Interface", f"p{i}", "link_state") for i in range(2)]
            if all(s == "up" for s in states):
                return
            if time.time() > end:
                raise RuntimeError(f"OVS ports not up: {states}\n{read_log(os.path.join(self.dir, 'ovs-vswitchd.log'))}")
            time.sleep(0.1)

    def begin(self):
        self.appctl("dpif-netdev/pmd-stats-clear")

    def end(self):
        text = self.appctl("dpif-netdev/pmd-stats-show")
        busy = pkts = 0
        for block in text.split("pmd thread")[1:]:
            m = re.search(r"processing cycles:\s+(\d+)", block)
            n = re.search(r"packets received:\s+(\d+)", block)
            if m and n:
                busy += int(m.group(1))
                pkts += int(n.group(1))
        drops = {}
        for i in range(2):
            st = self.vsctl("get", "Interface", f"p{i}", "statistics")
            for k, v in re.findall(r'"?(\w*drop\w*)"?=(\d+)', st):
                drops[k] = drops.get(k, 0) + int(v)
        return {"busy_cycles": busy, "switch_packets": pkts, "switch_drops_total": drops}

    def stop(self):
        d = self.dir
        for proc, ctl in ((self.vswitchd, "ovs-vswitchd.ctl"), (self.server, "ovsdb-server.ctl")):
            if proc is None or proc.poll() is not None:
                continue
            args = ["exit", "--cleanup"] if ctl == "ovs-vswitchd.ctl" else ["exit"]
            subprocess.run(["ovs-appctl", "-t", os.path.join(d, ctl)] + args, env=self.env,
                           capture_output=True, timeout=30)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return {}


def frontend_show(fe, mark=None):
    """Send (unless `mark` says it was sent) `show port stats all` and return the frames
    received on both ports so far and the receive rate of both since the previous show."""
    if mark is None:
        mark = len(fe.read())
        fe.cmd("show port stats all")
    text = wait_after(fe, "NIC statistics for port 1", mark, 30)
    end = time.time() + 5
    while "Tx-bps" not in text[text.find("NIC statistics for port 1"):] and time.time() < end:
        time.sleep(0.02)
        text = fe.read()[mark:]
    rx = pps = 0
    for port in range(2):
        block = text[text.find(f"NIC statistics for port {port}"):]
        m = re.search(r"RX-packets:\s+(\d+)", block)
        n = re.search(r"Rx-pps:\s+(\d+)", block)
        if not m or not n:
            raise RuntimeError(f"no RX-packets or Rx-pps for port {port} in:\n{text}")
        rx += int(m.group(1))
        pps += int(n.group(1))
    return rx, pps


def frontend(switch, size, queue_size):
    """The traffic source: testpmd with two virtio-user ports in mac forwarding, each
    port's peer set to the other port's MAC."""
    args = eal(f"vwsw-fe-{os.getpid()}", 1, True)
    server = ",server=1" if switch.frontend_server else ""
    for i, sock in enumerate(switch.sockets):
        args += ["--vdev", f"net_virtio_user{i},path={sock},queues=1,queue_size={queue_size},mac={MACS[i]}{server}"]
    args += ["--", "-i", "--total-num-mbufs=32768", f"--txpkts={size}", "--forward-mode=mac",
             f"--eth-peer=0,{MACS[1]}", f"--eth-peer=1,{MACS[0]}", "--record-core-cycles",
             "--disable-link-check"]
    return Testpmd(args, FRONTEND_CPUS)


def measure(name, size, secs, warmup, tmp, queue_size, bursts):
    d = tempfile.mkdtemp(prefix=f"{name}-{size}-", dir=tmp)
    switch = {"virtwire": Virtwire, "testpmd": TestpmdWire, "ovs": OvsDpdk}[name](d)
    fe = None
    r = {}
    try:
        switch.start(size)
        fe = frontend(switch, size, queue_size)
        fe.wait_for("testpmd>", 90)
        switch.connected()
        fe.cmd(f"start tx_first {bursts}" if bursts > 1 else "start tx_first")
        time.sleep(warmup)
        # Rates are the frontend's own: two `show port stats all` bracket the window and
        # testpmd prints the rate between them ("Throughput (since last show)", timed with
        # its TSC). Its command line runs on CPU 1 next to the polling switch and may take
        # a while to answer, so the script's clock would not do. CPU times are read right
        # after each command is sent, the switch's own counters right after those; they are
        # only used in ratios (CPU per packet at the measured rate, cycles per packet).
        rx0, _ = frontend_show(fe)
        t0 = time.time()
        sw0 = proc_cpu_seconds(switch.pid)
        fe0 = proc_cpu_seconds(fe.p.pid)
        busy0, steal0 = cpu_busy_seconds()
        c0 = time.time()
        switch.begin()
        r["switch_counters_begin_s"] = time.time() - c0
        time.sleep(max(0.0, t0 + secs - time.time()))
        mark = len(fe.read())
        fe.cmd("show port stats all")
        sw1 = proc_cpu_seconds(switch.pid)
        fe1 = proc_cpu_seconds(fe.p.pid)
        busy1, steal1 = cpu_busy_seconds()
        c1 = time.time()
        r.update(switch.end())
        r["switch_counters_end_s"] = time.time() - c1
        rx1, pps = frontend_show(fe, mark)
        t1 = time.time()
        pkts = rx1 - rx0
        mark = len(fe.read())
        fe.cmd("stop")
        m = re.search(r"CPU cycles/packet=([\d.]+) .* at (\d+) MHz", wait_after(fe, "Done.", mark, 10))
        if m:
            r["frontend_cycles_per_packet"] = float(m.group(1))
            r["frontend_ns_per_packet"] = float(m.group(1)) / int(m.group(2)) * 1e3
        r.update(switch.stop())
    finally:
        if fe is not None:
            fe.close()
        switch.stop()
    dc = c1 - c0
    r.update({
        "mpps": pps / 1e6,
        "packets": pkts,
        "window_s": pkts / pps if pps else None,
        "script_window_s": t1 - t0,
        "cpu_window_s": dc,
        "switch_cpu_s": sw1 - sw0,
        "frontend_cpu_s": fe1 - fe0,
        "switch_cpu_ns_per_packet": (sw1 - sw0) / dc / pps * 1e9 if pps else None,
        "other_cpu_cores": max(0.0, (busy1 - busy0) - (sw1 - sw0) - (fe1 - fe0)) / dc,
        "steal_cores": (steal1 - steal0) / dc,
    })
    if r.get("switch_packets"):
        r["busy_cycles_per_packet"] = r["busy_cycles"] / r["switch_packets"]
    shutil.rmtree(d, ignore_errors=True)
    return r


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# The placement of a run: the cache-line round trip before and after it must agree (near
# under 150 ns, far above), and so must the frontend's cost per frame over the run, which
# does the same work in every run and is mostly cross-core misses: about 35 ns per frame
# when near, 70 to 110 ns when far. A run that disagrees was moved during the run.
FRONTEND_NEAR_NS = 55


def run_class(r):
    rtt, fe = r.get("cacheline_rtt_ns"), r.get("frontend_ns_per_packet")
    if rtt is None or fe is None:
        return None
    if rtt < 150 and fe < FRONTEND_NEAR_NS:
        return "near"
    if rtt >= 150 and fe >= FRONTEND_NEAR_NS:
        return "far"
    return None



def summarize(results, sizes, switches):
    rows = []
    for size in sizes:
        ovs = median(r["mpps"] for r in results.get((size, "ovs"), []))
        for name in switches:
            rs = results[(size, name)]
            mpps = median(r["mpps"] for r in rs)
            row = {
                "frame_bytes": size, "switch": name,
                "mpps": mpps, "gbps": mpps * size * 8 / 1e3,
                "vs_ovs": mpps / ovs if ovs else None,
                "cpu_ns_per_packet": median(r["switch_cpu_ns_per_packet"] for r in rs),
                "busy_cycles_per_packet": median(r.get("busy_cycles_per_packet") for r in rs),
                "switch_cpu_cores": median(r["switch_cpu_s"] / r["cpu_window_s"] for r in rs),
                "switch_counters_s": [round(max(r["switch_counters_begin_s"], r["switch_counters_end_s"]), 3) for r in rs],
                "frontend_cycles_per_packet": median(r.get("frontend_cycles_per_packet") for r in rs),
                "runs_mpps": [r["mpps"] for r in rs],
                "cacheline_rtt_ns": [r["cacheline_rtt_ns"] for r in rs],
                "placement": [r["placement"] for r in rs],
                "other_cpu_cores": [round(r["other_cpu_cores"], 3) for r in rs],
                "disturbed_runs": sum(1 for r in rs if r["disturbed"]),
                "runs": rs,
            }
            for cls in ("near", "far"):
                test = lambda r: r["placement"] == cls
                v = median(r["mpps"] for r in rs if test(r))
                o = median(r["mpps"] for r in results.get((size, "ovs"), []) if test(r))
                row[f"mpps_{cls}"] = v
                row[f"vs_ovs_{cls}"] = v / o if v is not None and o else None
                row[f"runs_{cls}"] = sum(1 for r in rs if test(r))
                row[f"busy_cycles_per_packet_{cls}"] = median(
                    r.get("busy_cycles_per_packet") for r in rs if test(r))
            rows.append(row)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON array instead of the table")
    ap.add_argument("--save", metavar="FILE", help="also write that JSON array (with every run) to FILE")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of interleaved runs (default 3)")
    ap.add_argument("--seconds", type=float, default=5.0, help="measured window per run (default 5)")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of traffic before the window (default 1)")
    ap.add_argument("--sizes", default="64,1518", help="frame sizes in bytes (default 64,1518)")
    ap.add_argument("--switches", default=",".join(SWITCHES), help="subset of virtwire,testpmd,ovs")
    ap.add_argument("--queue-size", type=int, default=256, help="frontend ring size (default 256)")
    ap.add_argument("--virtwire", default=VIRTWIRE, help=f"virtwire binary (default {VIRTWIRE})")
    ap.add_argument("--virtwire-args", default="", help="extra arguments of `virtwire run`, e.g. '--poll-mode poll'")
    ap.add_argument("--bursts", type=int, default=1, help="bursts of 32 frames per port sent by tx_first (default 1)")
    ap.add_argument("--max-other-load", type=float, default=0.15,
                    help="repeat a run during which other processes used more than this many cores (default 0.15)")
    ap.add_argument("--retries", type=int, default=3, help="repeats of a run disturbed by other work (default 3)")
    a = ap.parse_args()
    switches = [s for s in a.switches.split(",") if s]
    for s in switches:
        if s not in SWITCHES:
            sys.exit(f"unknown switch {s!r} (one of {', '.join(SWITCHES)})")
    if os.geteuid() != 0:
        sys.exit("needs root (hugepages, OVS-DPDK)")
    if not shutil.which(TESTPMD):
        sys.exit("dpdk-testpmd not found (apt-get install dpdk-dev)")
    if not os.path.exists(a.virtwire):
        sys.exit(f"{a.virtwire} not found (cargo build --release -p virtwire)")
    if "ovs" in switches:
        ensure_ovs()
    ensure_hugepages()
    sizes = [int(s) for s in a.sizes.split(",")]
    results = {}
    tmp = tempfile.mkdtemp(prefix="vw-switch-bench-")
    # A copy, so that a rebuild during the run does not change what is measured.
    Virtwire.binary = os.path.join(tmp, "virtwire")
    shutil.copy2(a.virtwire, Virtwire.binary)
    Virtwire.extra_args = a.virtwire_args.split()
    benchlib.VIRTWIRE = Virtwire.binary  # for `virtwire bench cacheline`
    log(f"load average before: {open('/proc/loadavg').read().split()[:3]}")
    try:
        for _ in range(a.repeat):
            for size in sizes:
                for name in switches:
                    for attempt in range(a.retries + 1):
                        wait_quiet(a.max_other_load)
                        rtt = cacheline_rtt()
                        r = measure(name, size, a.seconds, a.warmup, tmp, a.queue_size, a.bursts)
                        rtt_after = cacheline_rtt()
                        r["cacheline_rtt_ns"] = placement(rtt, rtt_after)
                        r["placement"] = run_class(r)
                        r["cacheline_rtt_before_after_ns"] = [rtt, rtt_after]
                        r["disturbed"] = r["other_cpu_cores"] > a.max_other_load
                        if not r["disturbed"] or attempt == a.retries:
                            break
                        log(f"  {size:5} {name:9} {r['mpps']:7.3f} Mpps  other work used {r['other_cpu_cores']:.2f} cores: again")
                    results.setdefault((size, name), []).append(r)
                    cpp = r.get("busy_cycles_per_packet")
                    log(f"  {size:5} {name:9} {r['mpps']:7.3f} Mpps  cpu {r['switch_cpu_ns_per_packet'] or 0:6.1f} ns/pkt  "
                        f"busy {cpp or 0:6.1f} cyc/pkt  other load {r['other_cpu_cores']:.2f} cores  "
                        f"(cache-line rtt {rtt} / {rtt_after} ns)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = summarize(results, sizes, switches)
    if a.save:
        with open(a.save, "w") as f:
            json.dump(rows, f, indent=2)
    if a.json:
        print(json.dumps(rows, indent=2))
        return
    print_table(rows)


def print_table(rows):
    f = lambda x, p=2: "-" if x is None else f"{x:.{p}f}"
    print(f"{'':16}{'all runs':^30} | {'near placement':^25} | {'far placement':^25} |")
    print(f"{'bytes':>5} {'switch':9} {'Mpps':>7} {'Gbit/s':>7} {'vs OVS':>6} {'cyc/pkt':>7} | "
          f"{'Mpps':>7} {'vs OVS':>6} {'cyc/pkt':>7} {'n':>2} | {'Mpps':>7} {'vs OVS':>6} {'cyc/pkt':>7} {'n':>2} | "
          f"{'CPU ns/pkt':>10}  runs (Mpps)")
    for r in rows:
        print(f"{r['frame_bytes']:>5} {r['switch']:9} {f(r['mpps'], 3):>7} {f(r['gbps']):>7} {f(r['vs_ovs']):>6} "
              f"{f(r['busy_cycles_per_packet'], 1):>7} | "
              + " | ".join(f"{f(r[f'mpps_{c}'], 3):>7} {f(r[f'vs_ovs_{c}']):>6} "
                           f"{f(r[f'busy_cycles_per_packet_{c}'], 1):>7} {r[f'runs_{c}']:>2}" for c in ("near", "far"))
              + f" | {f(r['cpu_ns_per_packet'], 1):>10}  {' '.join(f'{x:.2f}' for x in r['runs_mpps'])}"
              + (f"  ({r['disturbed_runs']} disturbed by other work)" if r["disturbed_runs"] else ""))
    print("\nMpps: frames forwarded per second, both directions together, as the frontend received them; "
          "Gbit/s: those frames' bytes (no preamble, gap or CRC); cyc/pkt: busy cycles per frame as the switch "
          "counts them (testpmd: over its whole forwarding run); near/far: runs whose vCPU placement was near "
          "(or far) before, during and after, against OVS runs of the same class; CPU ns/pkt: switch process CPU "
          "time per frame at the measured rate")


if __name__ == "__main__":
    main()
