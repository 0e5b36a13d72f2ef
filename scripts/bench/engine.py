#!/usr/bin/env python3
"""Datapath engine benchmarks: what the polling modes, bursts, notification suppression,
coalescing and yielding cost and buy. The switch under test runs on CPU 1 (the whole
process pinned), every endpoint on CPU 0; virtwire's endpoints are its own virtio-user
traffic tools (`virtwire bench ...`), the loop's is DPDK testpmd (switch-peers.py).

  1 idle      four attached ports that send nothing (`bench sink --wait`, which sleeps
              on its interrupt eventfd): CPU of the switch process over a window, for
              virtwire adaptive and poll (and interrupt with --idle-modes) and OVS-DPDK
  2 loop      switch-peers.py's two-port loop (testpmd virtio-user frontend, 64-byte
              frames, mac forwarding): virtwire adaptive against poll
  3 latency   one thread of `virtwire bench pingpong --reflector` drives two ports: it
              sends a frame on one, the switch forwards it to the other, where the same
              thread sends it back with MACs swapped; the round trip crosses the switch
              twice. Paced at 1 and 10 kpps and back to back; virtwire adaptive, poll,
              interrupt, and OVS-DPDK
  4 fairness  the same pingpong at 10 kpps (SCHED_FIFO, sleeping between sends, so that
              it shares CPU 0 with the flood without losing its turn) next to
              `bench gen` flooding 64-byte frames at a `bench sink --announce --wait`
              receiver through the same switch: loss and latency without and with the
              flood, in one switch run; virtwire adaptive and poll, and OVS-DPDK
  5 ablation  each optimization off, one at a time, against the defaults in the same
              round: the loop (Mpps, busy cycles per frame) for `burst = 1`,
              `event_idx = false`, coalescing on, `adaptive_window = false` and
              `yield = false`; endpoints that sleep on interrupts (a 10 kpps pingpong
              with `--wait` against `bench loop --reflect-only --wait`, and two
              `bench loop --wait` ends with 32 frames each in flight) for interrupts
              and kicks per frame with and without EVENT_IDX and coalescing; the fixed
              window at 1 and 10 kpps (CPU and latency, from table 3's rounds); and a
              CPU-bound thread on the switch's core next to a 10 kpps pingpong with
              yielding on and off

Every measured run (switch start to stop) holds an exclusive flock on /tmp/bench.lock,
so it never overlaps other benchmarks, and starts only once the machine is quiet (other
work under --max-other-load cores, waited for up to a minute). Runs are interleaved: each
round runs every configuration of every selected table once. Tables give medians over
the rounds; ratios are medians of per-round ratios, each between two runs of the same
round ("same placement": only rounds where both runs had the same placement). Each run
records the CPU0<->CPU1 cache-line round trip before and after it (`virtwire bench
cacheline`: the placement of this machine's two vCPUs, near or far) and counts as near or
far when both agree. --save keeps every run; --from prints the tables of a saved file
again.

Needs root (hugepages, SCHED_FIFO, OVS-DPDK), dpdk-testpmd, openvswitch-switch-dpdk
(installed with apt-get when missing) and a release build of virtwire.
"""

import argparse
import contextlib
import fcntl
import importlib.util
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
from benchlib import ensure_hugepages, placement, proc_cpu_seconds

HERE = os.path.dirname(os.path.abspath(__file__))


def _switch_peers():
    spec = importlib.util.spec_from_file_location("switch_peers", os.path.join(HERE, "switch-peers.py"))
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


sp = _switch_peers()

SWITCH_CPU = "1"
ENDPOINT_CPU = "0"
LOCK = "/tmp/bench.lock"
FIFO_PRIO = "50"
VW = benchlib.VIRTWIRE  # replaced by a private copy in main()
TABLES = ("idle", "loop", "latency", "fairness", "ablation")

MACS = {
    "ping": "02:00:00:00:00:01", "refl": "02:00:00:00:00:02",
    "flood": "02:00:00:00:00:03", "recv": "02:00:00:00:00:04",
    "a": "02:00:00:00:00:0a", "b": "02:00:00:00:00:0b",
}
for _i in range(8):
    MACS[f"idle{_i}"] = f"02:00:00:00:01:{_i:02x}"

# Coalescing as the ablation turns it on, on every port: a receive interrupt waits up to
# 50 us or until 32 frames were used, like `ethtool -C rx-usecs 50 rx-frames 32`.
COALESCE = {"coalesce_rx_usecs": 50, "coalesce_rx_frames": 32}

# The loop configurations of tables 2 and 5: (name, --poll-mode, [datapath], per port).
LOOP_CONFIGS = [
    ("adaptive", "adaptive", {}, {}),
    ("poll", "poll", {}, {}),
    ("burst = 1", "adaptive", {"burst": 1}, {}),
    ("event_idx = false", "adaptive", {}, {"event_idx": False}),
    ("coalescing on", "adaptive", {}, COALESCE),
    ("adaptive_window = false", "adaptive", {"adaptive_window": False}, {}),
    ("yield = false", "adaptive", {"yield": False}, {}),
]

# Latency setups of table 3 (and the fixed window of table 5).
LAT_CONFIGS = [
    ("virtwire adaptive", "adaptive", {}),
    ("virtwire adaptive, adaptive_window = false", "adaptive", {"adaptive_window": False}),
    ("virtwire poll", "poll", {}),
    ("virtwire interrupt", "interrupt", {}),
    ("OVS-DPDK", None, None),
]
LAT_RATES = [("1 kpps", 1000), ("10 kpps", 100), ("back to back", 0)]

SLEEP_CONFIGS = [
    ("defaults", {}),
    ("event_idx = false", {"event_idx": False}),
    ("coalescing on", COALESCE),
]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Running things


@contextlib.contextmanager
def bench_lock():
    """Holds an exclusive flock on /tmp/bench.lock (the lock `flock /tmp/bench.lock cmd`
    takes), so that no other benchmark or test runs at the same time."""
    with open(LOCK, "a") as f:
        t = time.time()
        fcntl.flock(f, fcntl.LOCK_EX)
        if time.time() - t > 1:
            log(f"  (waited {time.time() - t:.0f} s for {LOCK})")
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def quiet(max_load, limit=60):
    """Waits (up to `limit` s) until the machine's busy CPU over half a second is under
    `max_load` cores; returns that load."""
    end = time.time() + limit
    said = False
    while True:
        b0, _ = sp.cpu_busy_seconds()
        time.sleep(0.5)
        b1, _ = sp.cpu_busy_seconds()
        load = (b1 - b0) / 0.5
        if load < max_load or time.time() > end:
            return load
        if not said:
            log(f"  waiting for the machine to be quiet (other work uses {load:.2f} cores)")
            said = True


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return json.dumps(v)


class VwSwitch:
    """`virtwire run` with vhost-user ports in server mode, one queue pair each, the whole
    process on CPU 1."""

    name = "virtwire"
    endpoints_listen = False

    def __init__(self, d, ports, mode="adaptive", datapath=None, port_extra=None):
        self.dir = d
        self.ports = list(ports)
        self.mode = mode
        self.datapath = datapath or {}
        self.port_extra = port_extra or {}
        self.run_dir = os.path.join(d, "run")
        self.log_path = os.path.join(d, "virtwire.log")
        self.p = None
        self.pid = None

    def socket(self, port):
        return os.path.join(self.dir, f"{port}.sock")

    def start(self):
        cfg = os.path.join(self.dir, "virtwire.toml")
        with open(cfg, "w") as f:
            f.write(f'run_dir = "{self.run_dir}"\n')
            if self.datapath:
                f.write("\n[datapath]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in self.datapath.items()))
            for port in self.ports:
                f.write(f'\n[[port]]\nname = "{port}"\ntype = "vhost-user"\nsocket = "{self.socket(port)}"\n'
                        f'mode = "server"\nqueue_pairs = 1\nmac = "{MACS[port]}"\n')
                f.write("".join(f"{k} = {toml_value(v)}\n" for k, v in self.port_extra.items()))
        self.p = subprocess.Popen(
            ["taskset", "-c", SWITCH_CPU, VW, "run", "--config", cfg, "--run-dir", self.run_dir,
             "--poll-mode", self.mode],
            stdout=subprocess.DEVNULL, stderr=open(self.log_path, "w"))
        self.pid = self.p.pid
        try:
            sp.wait_paths([self.socket(p) for p in self.ports] + [os.path.join(self.run_dir, "ctl.sock")], 10,
                          "virtwire", self.p)
        except RuntimeError as e:
            raise RuntimeError(f"{e}\n{sp.read_log(self.log_path)}")

    def stats(self):
        out = subprocess.run([VW, "--run-dir", self.run_dir, "stats", "--json"], capture_output=True, text=True,
                             timeout=10)
        if out.returncode:
            raise RuntimeError(f"virtwire stats: {out.stderr.strip()}")
        return json.loads(out.stdout)

    def wait_connected(self, ports, timeout=20, eps=()):
        end = time.time() + timeout
        while True:
            s = self.stats()
            up = {p["name"] for p in s["ports"] if p["connected"]}
            if all(p in up for p in ports):
                return
            check_endpoints(eps)
            if time.time() > end:
                raise RuntimeError(f"virtwire: ports {sorted(set(ports) - up)} not connected\n"
                                   f"{sp.read_log(self.log_path)}")
            time.sleep(0.05)

    def tx_packets(self, port):
        """Frames the switch sent to `port`, and the frames dropped toward it."""
        for p in self.stats()["ports"]:
            if p["name"] == port:
                return p["tx_packets"], sum(p["drops"].values())
        raise RuntimeError(f"no port {port}")

    def stop(self):
        benchlib.terminate(self.p)


class OvsSwitch(sp.OvsDpdk):
    """switch-peers.py's private OVS-DPDK (one PMD thread, the whole process on CPU 1) with
    any number of dpdkvhostuserclient ports: the endpoints listen."""

    name = "ovs"
    endpoints_listen = True

    def __init__(self, d, ports):
        super().__init__(d)
        self.ports = list(ports)
        self.sockets = [os.path.join(d, f"{p}.sock") for p in self.ports]

    def socket(self, port):
        return self.sockets[self.ports.index(port)]

    def start(self):
        super().start(0)

    def wait_connected(self, ports, timeout=30, eps=()):
        end = time.time() + timeout
        while True:
            states = [self.vsctl("get", "Interface", f"p{self.ports.index(p)}", "link_state") for p in ports]
            if all(s == "up" for s in states):
                return
            check_endpoints(eps)
            if time.time() > end:
                raise RuntimeError(f"OVS ports {ports} not up: {states}\n"
                                   f"{sp.read_log(os.path.join(self.dir, 'ovs-vswitchd.log'))}")
            time.sleep(0.1)

    def tx_packets(self, port):
        # Live port counters (the database's statistics column is refreshed only every
        # few seconds).
        n = self.ports.index(port) + 1
        out = subprocess.run(["ovs-ofctl", "dump-ports", f"unix:{self.dir}/br0.mgmt", str(n)],
                             capture_output=True, text=True, env=self.env, timeout=30).stdout
        m = re.search(r"tx pkts=(\d+|\?), bytes=(?:\d+|\?), drop=(\d+|\?)", out)
        if not m:
            raise RuntimeError(f"ovs-ofctl dump-ports: no tx counters for port {n}:\n{out}")
        return tuple(0 if x == "?" else int(x) for x in m.groups())

    def pmd_cpu(self):
        """CPU seconds of the PMD threads."""
        total = 0.0
        task = f"/proc/{self.pid}/task"
        for tid in os.listdir(task):
            try:
                with open(f"{task}/{tid}/comm") as f:
                    if not f.read().startswith("pmd"):
                        continue
                with open(f"{task}/{tid}/stat") as f:
                    v = f.read().rsplit(")", 1)[1].split()
                total += (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")
            except OSError:
                pass
        return total


def make_switch(d, kind, ports, mode="adaptive", datapath=None, port_extra=None):
    if kind == "ovs":
        return OvsSwitch(d, ports)
    return VwSwitch(d, ports, mode, datapath, port_extra)


def check_endpoints(eps):
    for e in eps:
        if e.p.poll() is not None:
            raise RuntimeError(f"{e.what} exited early ({e.p.returncode}): {e.p.stderr.read()[-2000:]}")


class Endpoint:
    """One `virtwire bench ...` process (JSON report), pinned to CPU 0, optionally
    SCHED_FIFO."""

    def __init__(self, sw, args, fifo=False):
        cmd = ["taskset", "-c", ENDPOINT_CPU, VW, "bench"] + args + ["--json"]
        if sw.endpoints_listen:
            cmd.append("--server")
        if fifo:
            cmd = ["chrt", "-f", FIFO_PRIO] + cmd
        self.what = " ".join(args[:1])
        self.cmd = cmd
        self.report = None
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def cpu(self):
        try:
            return proc_cpu_seconds(self.p.pid)
        except OSError:
            return 0.0

    def result(self, timeout):
        out, err = self.p.communicate(timeout=timeout)
        if self.p.returncode:
            raise RuntimeError(f"{' '.join(self.cmd)}: exit {self.p.returncode}\n{err[-2000:]}")
        self.report = json.loads(out)
        return self.report

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def pingpong_args(sw, interval_us, secs, ping="ping", refl="refl"):
    return ["pingpong", "--socket", sw.socket(ping), "--reflector", sw.socket(refl),
            "--src-mac", MACS[ping], "--dst-mac", MACS[refl], "--duration", str(secs),
            "--interval-us", str(interval_us)]


class Window:
    """CPU time of the switch (and of other processes) between begin() and end()."""

    def __init__(self, sw, eps=()):
        self.sw = sw
        self.eps = list(eps)

    def begin(self):
        self.t0 = time.time()
        self.c0 = proc_cpu_seconds(self.sw.pid)
        self.e0 = [e.cpu() for e in self.eps]
        self.b0, self.s0 = sp.cpu_busy_seconds()
        return self

    def end(self):
        dt = time.time() - self.t0
        c = proc_cpu_seconds(self.sw.pid) - self.c0
        # An endpoint that has exited is gone from /proc: take the CPU time it reported
        # for its traffic instead.
        e = sum(x.report["cpu_seconds"] if x.report is not None else x.cpu() - x0
                for x, x0 in zip(self.eps, self.e0))
        b1, s1 = sp.cpu_busy_seconds()
        return {"window_s": dt, "switch_cpu_s": c, "switch_cores": c / dt, "endpoint_cores": e / dt,
                "other_cores": max(0.0, (b1 - self.b0) - c - e) / dt, "steal_cores": (s1 - self.s0) / dt}


def with_switch(kind, ports, fn, mode="adaptive", datapath=None, port_extra=None, tmp=None):
    d = tempfile.mkdtemp(prefix=f"{kind}-", dir=tmp)
    sw = make_switch(d, kind, ports, mode, datapath, port_extra)
    eps = []
    try:
        sw.start()
        return fn(sw, eps)
    finally:
        for e in eps:
            e.stop()
        sw.stop()
        shutil.rmtree(d, ignore_errors=True)


def worker_counters(s):
    w = s["workers"]
    return {"packets": sum(x["packets"] for x in w), "busy_cycles": sum(x["busy_cycles"] for x in w),
            "sleeps": sum(x["sleeps"] for x in w), "yields": sum(x.get("yields", 0) for x in w),
            "interrupts": sum(p["interrupts"] for p in s["ports"]), "kicks": sum(p["kicks"] for p in s["ports"])}


def counters_delta(s0, s1):
    a, b = worker_counters(s0), worker_counters(s1)
    return {k: b[k] - a[k] for k in a}


# ---------------------------------------------------------------------------------------
# The runs


def run_idle(kind, mode, a, tmp):
    ports = [f"idle{i}" for i in range(a.idle_ports)]

    def body(sw, eps):
        for p in ports:
            eps.append(Endpoint(sw, ["sink", "--socket", sw.socket(p), "--wait", "--src-mac", MACS[p],
                                     "--duration", str(a.idle_seconds + 60)]))
        sw.wait_connected(ports, eps=eps)
        time.sleep(a.settle)
        w = Window(sw, eps).begin()
        s0 = sw.stats() if kind != "ovs" else None
        pmd0 = sw.pmd_cpu() if kind == "ovs" else None
        time.sleep(a.idle_seconds)
        r = w.end()
        if kind == "ovs":
            r["pmd_cores"] = (sw.pmd_cpu() - pmd0) / r["window_s"]
        else:
            d = counters_delta(s0, sw.stats())
            r["worker_sleeps_per_s"] = d["sleeps"] / r["window_s"]
            r["frames"] = d["packets"]
        check_endpoints(eps)
        return r

    return with_switch(kind, ports, body, mode=mode, tmp=tmp)


def run_loop(cfg, a, tmp):
    name, mode, datapath, port_extra = cfg
    sp.Virtwire.extra_args = ["--poll-mode", mode]
    sp.Virtwire.extra_config = "".join(f"{k} = {toml_value(v)}\n" for k, v in datapath.items())
    if sp.Virtwire.extra_config:
        sp.Virtwire.extra_config = "\n[datapath]\n" + sp.Virtwire.extra_config
    sp.Virtwire.port_config = "".join(f"{k} = {toml_value(v)}\n" for k, v in port_extra.items())
    r = sp.measure("virtwire", 64, a.seconds, a.warmup, tmp, 256, 1)
    r["other_cores"] = r.pop("other_cpu_cores")
    return r


def run_latency(kind, mode, datapath, a, tmp):
    ports = ["ping", "refl"]

    def body(sw, eps):
        out = {}
        for label, interval in LAT_RATES:
            e = Endpoint(sw, pingpong_args(sw, interval, a.latency_seconds))
            sw.wait_connected(ports, eps=[e])
            w = Window(sw, [e]).begin()
            rep = e.result(a.latency_seconds + 60)
            r = w.end()
            r.update(pingpong_summary(rep))
            out[label] = r
        return out

    return with_switch(kind, ports, body, mode=mode or "adaptive", datapath=datapath, tmp=tmp)


def pingpong_summary(rep):
    lat = rep["latency_us"]
    return {"p50_us": lat["p50"], "p99_us": lat["p99"], "max_us": lat["max"], "samples": lat["samples"],
            "lost": lat["lost"], "kpps": rep["packets"] / rep["duration_s"] / 1e3}


def run_fairness(key, a, tmp):
    ports = ["ping", "refl", "flood", "recv"]
    secs = a.latency_seconds

    def steady(sw, eps):
        # SCHED_FIFO and sleeping between sends: on CPU 0 next to the flood, the steady
        # sender runs as soon as its next send is due; the reply is awaited by polling
        # (10 ms at most, so that a lost frame does not hold CPU 0 for long).
        e = Endpoint(sw, pingpong_args(sw, 100, secs) + ["--sleep-pacing", "--reply-timeout", "0.01"], fifo=True)
        sw.wait_connected(["ping", "refl"], eps=eps + [e])
        w = Window(sw, eps + [e]).begin()
        f0 = sw.tx_packets("recv")
        rep = e.result(secs + 60)
        f1 = sw.tx_packets("recv")
        r = w.end()
        r.update(pingpong_summary(rep))
        r["flood_delivered_mpps"] = (f1[0] - f0[0]) / r["window_s"] / 1e6
        r["flood_dropped_mpps"] = (f1[1] - f0[1]) / r["window_s"] / 1e6
        return r

    def body(sw, eps):
        eps.append(Endpoint(sw, ["sink", "--socket", sw.socket("recv"), "--wait", "--announce",
                                 "--src-mac", MACS["recv"], "--duration", str(4 * secs + 120)]))
        sw.wait_connected(["recv"], eps=eps)
        time.sleep(0.3)
        out = {"unloaded": steady(sw, eps)}
        gen = Endpoint(sw, ["gen", "--socket", sw.socket("flood"), "--src-mac", MACS["flood"],
                            "--dst-mac", MACS["recv"], "--duration", str(secs + 3)])
        eps.append(gen)
        sw.wait_connected(["flood"], eps=eps)
        time.sleep(0.5)
        out["loaded"] = steady(sw, eps)
        g = gen.result(secs + 60)
        out["loaded"]["flood_offered_mpps"] = g["pps"] / 1e6
        return out

    if key == "ovs":
        return with_switch("ovs", ports, body, tmp=tmp)
    return with_switch("virtwire", ports, body, mode=key, tmp=tmp)


def run_sleeping(port_extra, a, tmp):
    """Endpoints that sleep on their interrupt eventfds: a 10 kpps pingpong with --wait
    against a reflector with --wait, then two loop ends with --wait."""
    ports = ["a", "b"]
    secs = a.latency_seconds

    def body(sw, eps):
        out = {}
        refl = Endpoint(sw, ["loop", "--socket", sw.socket("b"), "--swap-macs", "--reflect-only", "--wait",
                             "--src-mac", MACS["b"], "--dst-mac", MACS["a"], "--duration", str(secs + 60)])
        eps.append(refl)
        sw.wait_connected(["b"], eps=eps)
        pp = Endpoint(sw, ["pingpong", "--socket", sw.socket("a"), "--wait", "--interval-us", "100",
                           "--src-mac", MACS["a"], "--dst-mac", MACS["b"], "--duration", str(secs)])
        sw.wait_connected(["a"], eps=[refl, pp])
        w = Window(sw, [refl, pp]).begin()
        s0 = sw.stats()
        rep = pp.result(secs + 60)
        d = counters_delta(s0, sw.stats())
        r = w.end()
        r.update(pingpong_summary(rep))
        r["interrupts_per_frame"] = d["interrupts"] / d["packets"] if d["packets"] else None
        r["kicks_per_frame"] = d["kicks"] / d["packets"] if d["packets"] else None
        out["pingpong"] = r
        refl.stop()
        eps.remove(refl)
        ends = [Endpoint(sw, ["loop", "--socket", sw.socket(x), "--swap-macs", "--wait", "--src-mac", MACS[x],
                              "--dst-mac", MACS[y], "--duration", str(secs + 3)]) for x, y in (("a", "b"), ("b", "a"))]
        eps.extend(ends)
        sw.wait_connected(ports, eps=ends)
        time.sleep(1)
        w = Window(sw, ends).begin()
        s0 = sw.stats()
        time.sleep(secs)
        d = counters_delta(s0, sw.stats())
        r = w.end()
        r["mpps"] = d["packets"] / r["window_s"] / 1e6
        r["interrupts_per_frame"] = d["interrupts"] / d["packets"] if d["packets"] else None
        r["kicks_per_frame"] = d["kicks"] / d["packets"] if d["packets"] else None
        for e in ends:
            e.result(secs + 60)
        out["loop"] = r
        return out

    return with_switch("virtwire", ports, body, port_extra=port_extra, tmp=tmp)


def run_hog(yield_on, a, tmp):
    """A CPU-bound thread pinned to the switch's core, next to a 10 kpps pingpong that
    polls on CPU 0 (three runnable threads on two CPUs)."""
    ports = ["ping", "refl"]
    secs = a.latency_seconds

    def body(sw, eps):
        hog = subprocess.Popen(["taskset", "-c", SWITCH_CPU, sys.executable, "-c", "while True: pass"])
        try:
            e = Endpoint(sw, pingpong_args(sw, 100, secs))
            sw.wait_connected(ports, eps=[e])
            w = Window(sw, [e]).begin()
            h0 = proc_cpu_seconds(hog.pid)
            s0 = sw.stats()
            rep = e.result(secs + 60)
            d = counters_delta(s0, sw.stats())
            r = w.end()
            r["hog_cores"] = (proc_cpu_seconds(hog.pid) - h0) / r["window_s"]
            r["other_cores"] = max(0.0, r["other_cores"] - r["hog_cores"])
            r["yields_per_s"] = d["yields"] / r["window_s"]
            r.update(pingpong_summary(rep))
            return r
        finally:
            hog.kill()
            hog.wait()

    return with_switch("virtwire", ports, body, datapath={"yield": yield_on}, tmp=tmp)


# ---------------------------------------------------------------------------------------
# Orchestration


def plan(a):
    """Every run of one round, as (table, key, function)."""
    runs = []
    if "idle" in a.tables:
        for m in a.idle_modes:
            runs.append(("idle", m, lambda tmp, m=m: run_idle("ovs" if m == "ovs" else "virtwire", m, a, tmp)))
    loops = set()
    if "loop" in a.tables:
        loops |= {"adaptive", "poll"}
    if "ablation" in a.tables:
        loops |= {c[0] for c in LOOP_CONFIGS if c[0] != "poll"}
    for c in LOOP_CONFIGS:
        if c[0] in loops:
            runs.append(("loop", c[0], lambda tmp, c=c: run_loop(c, a, tmp)))
    lats = set()
    if "latency" in a.tables:
        lats |= {c[0] for c in LAT_CONFIGS if c[0] != LAT_CONFIGS[1][0]}
    if "ablation" in a.tables:
        lats |= {LAT_CONFIGS[0][0], LAT_CONFIGS[1][0]}
    for name, mode, dp in LAT_CONFIGS:
        if name not in lats or (mode is None and not a.ovs):
            continue
        kind = "ovs" if mode is None else "virtwire"
        runs.append(("latency", name, lambda tmp, k=kind, m=mode, d=dp: run_latency(k, m, d, a, tmp)))
    if "fairness" in a.tables:
        for key in ["adaptive", "poll"] + (["ovs"] if a.ovs else []):
            runs.append(("fairness", key, lambda tmp, k=key: run_fairness(k, a, tmp)))
    if "ablation" in a.tables:
        for name, extra in SLEEP_CONFIGS:
            runs.append(("sleeping", name, lambda tmp, e=extra: run_sleeping(e, a, tmp)))
        for y in (True, False):
            runs.append(("hog", f"yield = {'true' if y else 'false'}", lambda tmp, y=y: run_hog(y, a, tmp)))
    return runs


def other_load(r):
    """The largest load of other processes in a result (nested for multi-phase runs)."""
    if isinstance(r, dict):
        vals = [r["other_cores"]] if "other_cores" in r else []
        vals += [other_load(v) for v in r.values() if isinstance(v, dict)]
        return max(vals) if vals else 0.0
    return 0.0


def execute(a, tmp):
    runs = plan(a)
    results = {}
    t_start = time.time()
    for rnd in range(a.repeat):
        for table, key, fn in runs:
            for attempt in range(a.retries + 1):
                with bench_lock():
                    q = quiet(a.max_other_load)
                    rtt0 = sp.cacheline_rtt()
                    t = time.time()
                    r = fn(tmp)
                    took = time.time() - t
                    rtt1 = sp.cacheline_rtt()
                load = other_load(r)
                disturbed = load > a.max_other_load
                if not disturbed or attempt == a.retries:
                    break
                log(f"  [{rnd + 1}] {table:8} {key}: other work used {load:.2f} cores: again")
            r = {"result": r, "round": rnd, "cacheline_rtt_ns": [rtt0, rtt1],
                 "placement": None if placement(rtt0, rtt1) is None else ("near" if placement(rtt0, rtt1) < 150 else "far"),
                 "quiet_load": q, "other_load": load, "disturbed": disturbed, "seconds": took}
            results.setdefault((table, key), []).append(r)
            log(f"  [{rnd + 1}/{a.repeat}] {table:8} {key:45} {brief(table, r['result'])}  "
                f"(rtt {rtt0}/{rtt1} ns, other {load:.2f}, {took:.0f} s, total {time.time() - t_start:.0f} s)")
    return results


def brief(table, r):
    f = lambda x, p=2: "-" if x is None else f"{x:.{p}f}"
    if table == "idle":
        return f"switch {100 * r['switch_cores']:.2f}% of a core"
    if table == "loop":
        return f"{r['mpps']:.2f} Mpps, {f(r.get('busy_cycles_per_packet'), 0)} cyc/frame"
    if table == "latency":
        return "  ".join(f"{k}: p50 {v['p50_us']:.2f} p99 {v['p99_us']:.2f} cpu {v['switch_cores']:.2f}" for k, v in r.items())
    if table == "fairness":
        u, l = r["unloaded"], r["loaded"]
        return (f"p50/p99 {u['p50_us']:.2f}/{u['p99_us']:.2f} -> {l['p50_us']:.2f}/{l['p99_us']:.2f} us, "
                f"lost {u['lost']}/{l['lost']}, flood {l['flood_offered_mpps']:.2f} offered "
                f"{l['flood_delivered_mpps']:.2f} delivered Mpps")
    if table == "sleeping":
        p, l = r["pingpong"], r["loop"]
        return (f"pingpong p50 {p['p50_us']:.1f} p99 {p['p99_us']:.1f} irq/frame {f(p['interrupts_per_frame'])}; "
                f"loop {l['mpps']:.2f} Mpps irq/frame {f(l['interrupts_per_frame'], 3)} kicks/frame "
                f"{f(l['kicks_per_frame'], 3)}")
    if table == "hog":
        return (f"hog {r['hog_cores']:.2f} switch {r['switch_cores']:.2f} cores, p50 {r['p50_us']:.1f} "
                f"p99 {r['p99_us']:.1f} us, lost {r['lost']}, yields/s {r['yields_per_s']:.0f}")
    return ""


# ---------------------------------------------------------------------------------------
# Tables


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ratio_per_round(runs, base_runs, get, same_placement=False):
    """Median over rounds of get(run) / get(base run of the same round); with
    `same_placement`, only rounds where both runs had the same known placement."""
    base = {b["round"]: b for b in base_runs}
    out = []
    for r in runs:
        b = base.get(r["round"])
        if b is None or (same_placement and (r["placement"] is None or r["placement"] != b["placement"])):
            continue
        v, w = get(r["result"]), get(b["result"])
        if v is not None and w:
            out.append(v / w)
    return med(out)


def by_placement(runs, get):
    """{near, far}: (median of get over the runs of that placement, how many)."""
    out = {}
    for cls in ("near", "far"):
        xs = [get(r["result"]) for r in runs if r["placement"] == cls]
        out[cls] = (med(xs), len(xs))
    return out


def placements(runs):
    c = [r["placement"] or "moved" for r in runs]
    return " ".join(f"{c.count(k)} {k}" for k in ("near", "far", "moved") if c.count(k))


def summarize(results):
    R = lambda t, k: results.get((t, k), [])
    tables = {}
    idle = []
    for key in ("adaptive", "interrupt", "poll", "ovs"):
        runs = R("idle", key)
        if not runs:
            continue
        rs = [r["result"] for r in runs]
        idle.append({
            "switch": "OVS-DPDK" if key == "ovs" else f"virtwire {key}",
            "cpu_pct": 100 * med(r["switch_cores"] for r in rs),
            "runs_pct": [100 * r["switch_cores"] for r in rs],
            "pmd_pct": 100 * med(r["pmd_cores"] for r in rs) if key == "ovs" else None,
            "worker_sleeps_per_s": med(r.get("worker_sleeps_per_s") for r in rs),
            "endpoint_pct": 100 * med(r["endpoint_cores"] for r in rs),
            "other_cores": [round(r["other_cores"], 2) for r in rs],
        })
    tables["idle"] = idle

    def loop_row(key, base):
        runs = R("loop", key)
        if not runs:
            return None
        rs = [r["result"] for r in runs]
        cls = by_placement(runs, lambda r: r["mpps"])
        return {
            "config": key, "mpps": med(r["mpps"] for r in rs),
            "vs_base": ratio_per_round(runs, R("loop", base), lambda r: r["mpps"]) if key != base else 1.0,
            "vs_base_same_placement": ratio_per_round(runs, R("loop", base), lambda r: r["mpps"], True)
            if key != base else 1.0,
            "mpps_near": cls["near"][0], "runs_near": cls["near"][1],
            "mpps_far": cls["far"][0], "runs_far": cls["far"][1],
            "busy_cycles_per_frame": med(r.get("busy_cycles_per_packet") for r in rs),
            "cpu_ns_per_frame": med(r["switch_cpu_ns_per_packet"] for r in rs),
            "runs_mpps": [r["mpps"] for r in rs], "placement": placements(runs),
            "other_cores": [round(r["other_cores"], 2) for r in rs],
        }

    tables["loop"] = [x for x in (loop_row("adaptive", "poll"), loop_row("poll", "poll")) if x]

    lat = []
    for name, _, _ in LAT_CONFIGS:
        runs = R("latency", name)
        if not runs or name == LAT_CONFIGS[1][0]:
            continue
        for label, _ in LAT_RATES:
            rs = [r["result"][label] for r in runs]
            lat.append(lat_row(name, label, rs, runs, R("latency", "virtwire poll")))
    tables["latency"] = lat

    fair = []
    for key in ("adaptive", "poll", "ovs"):
        runs = R("fairness", key)
        if not runs:
            continue
        u = [r["result"]["unloaded"] for r in runs]
        l = [r["result"]["loaded"] for r in runs]
        fair.append({
            "switch": "OVS-DPDK" if key == "ovs" else f"virtwire {key}",
            "unloaded_p50_us": med(r["p50_us"] for r in u), "unloaded_p99_us": med(r["p99_us"] for r in u),
            "loaded_p50_us": med(r["p50_us"] for r in l), "loaded_p99_us": med(r["p99_us"] for r in l),
            "p50_ratio": med(b["p50_us"] / x["p50_us"] for x, b in zip(u, l)),
            "p99_ratio": med(b["p99_us"] / x["p99_us"] for x, b in zip(u, l)),
            "unloaded_lost": sum(r["lost"] for r in u), "loaded_lost": sum(r["lost"] for r in l),
            "unloaded_samples": sum(r["samples"] for r in u), "loaded_samples": sum(r["samples"] for r in l),
            "steady_kpps": med(r["kpps"] for r in l),
            "flood_offered_mpps": med(r["flood_offered_mpps"] for r in l),
            "flood_delivered_mpps": med(r["flood_delivered_mpps"] for r in l),
            "flood_dropped_mpps": med(r["flood_dropped_mpps"] for r in l),
            "runs_loaded_p99_us": [r["p99_us"] for r in l],
            "switch_cores_loaded": med(r["switch_cores"] for r in l),
        })
    tables["fairness"] = fair

    abl = {"loop": [], "sleeping": [], "window": [], "yield": []}
    for c in LOOP_CONFIGS:
        if c[0] == "poll":
            continue
        row = loop_row(c[0], "adaptive")
        if row:
            abl["loop"].append(row)
    for name, _ in SLEEP_CONFIGS:
        runs = R("sleeping", name)
        if not runs:
            continue
        p = [r["result"]["pingpong"] for r in runs]
        l = [r["result"]["loop"] for r in runs]
        abl["sleeping"].append({
            "config": name,
            "pingpong_p50_us": med(r["p50_us"] for r in p), "pingpong_p99_us": med(r["p99_us"] for r in p),
            "pingpong_lost": sum(r["lost"] for r in p),
            "pingpong_interrupts_per_frame": med(r["interrupts_per_frame"] for r in p),
            "pingpong_kicks_per_frame": med(r["kicks_per_frame"] for r in p),
            "pingpong_switch_pct": 100 * med(r["switch_cores"] for r in p),
            "loop_mpps": med(r["mpps"] for r in l),
            "loop_vs_defaults": ratio_per_round(runs, R("sleeping", "defaults"), lambda r: r["loop"]["mpps"]),
            "loop_interrupts_per_frame": med(r["interrupts_per_frame"] for r in l),
            "loop_kicks_per_frame": med(r["kicks_per_frame"] for r in l),
            "loop_switch_pct": 100 * med(r["switch_cores"] for r in l),
            "loop_endpoint_pct": 100 * med(r["endpoint_cores"] for r in l),
        })
    for name in (LAT_CONFIGS[0][0], LAT_CONFIGS[1][0]):
        runs = R("latency", name)
        if not runs:
            continue
        for label, _ in LAT_RATES[:2]:
            rs = [r["result"][label] for r in runs]
            abl["window"].append(lat_row(name, label, rs, runs, R("latency", LAT_CONFIGS[0][0])))
    for name in ("yield = true", "yield = false"):
        runs = R("hog", name)
        if not runs:
            continue
        rs = [r["result"] for r in runs]
        abl["yield"].append({
            "config": name, "hog_cores": med(r["hog_cores"] for r in rs),
            "switch_cores": med(r["switch_cores"] for r in rs),
            "p50_us": med(r["p50_us"] for r in rs), "p99_us": med(r["p99_us"] for r in rs),
            "lost": sum(r["lost"] for r in rs), "yields_per_s": med(r["yields_per_s"] for r in rs),
            "runs_hog_cores": [round(r["hog_cores"], 2) for r in rs],
        })
    tables["ablation"] = abl
    return tables


def lat_row(name, label, rs, runs, base_runs):
    row = {
        "switch": name, "rate": label,
        "p50_us": med(r["p50_us"] for r in rs), "p99_us": med(r["p99_us"] for r in rs),
        "lost": sum(r["lost"] for r in rs), "samples": sum(r["samples"] for r in rs),
        "switch_cpu_pct": 100 * med(r["switch_cores"] for r in rs),
        "runs_p50_us": [r["p50_us"] for r in rs], "runs_p99_us": [r["p99_us"] for r in rs],
        "placement": placements(runs),
    }
    if base_runs:
        row["p50_vs_base"] = ratio_per_round(runs, base_runs, lambda r: r[label]["p50_us"])
        row["p50_vs_base_same_placement"] = ratio_per_round(runs, base_runs, lambda r: r[label]["p50_us"], True)
    for cls, (v, n) in by_placement(runs, lambda r: r[label]["p50_us"]).items():
        row[f"p50_us_{cls}"], row[f"runs_{cls}"] = v, n
    for cls, (v, n) in by_placement(runs, lambda r: r[label]["p99_us"]).items():
        row[f"p99_us_{cls}"] = v
    return row


def f(x, p=2):
    return "-" if x is None else f"{x:.{p}f}"


def cls_cell(v, n):
    return f"{f(v)} ({n})" if n else "-"


def loop_cells(r):
    return [r["config"], f(r["mpps"], 3), f(r["vs_base"], 3), f(r["vs_base_same_placement"], 3),
            cls_cell(r["mpps_near"], r["runs_near"]), cls_cell(r["mpps_far"], r["runs_far"]),
            f(r["busy_cycles_per_frame"], 0), f(r["cpu_ns_per_frame"], 1),
            " ".join(f"{x:.2f}" for x in r["runs_mpps"]), r["placement"]]


def md(headers, rows):
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
    print()


def print_tables(t, a):
    if t["idle"] and "idle" in a.tables:
        print(f"Table 1. Idle: {a.idle_ports} attached ports sending nothing, switch process CPU over "
              f"{a.idle_seconds:.0f} s (% of one core)\n")
        md(["switch", "CPU % of a core", "runs", "OVS PMD thread %", "worker wakeups/s", "endpoints' CPU %"],
           [[r["switch"], f(r["cpu_pct"], 3), " ".join(f"{x:.3f}" for x in r["runs_pct"]), f(r["pmd_pct"], 1),
             f(r["worker_sleeps_per_s"], 1), f(r["endpoint_pct"], 2)] for r in t["idle"]])
    if t["loop"] and "loop" in a.tables:
        print("Table 2. Two-port loop, 64-byte frames (testpmd frontend on CPU 0, switch on CPU 1)\n")
        md(["mode", "Mpps", "vs poll", "vs poll, same placement", "Mpps near (runs)", "Mpps far (runs)",
            "busy cycles/frame", "CPU ns/frame", "runs (Mpps)", "placement"], [loop_cells(r) for r in t["loop"]])
    if t["latency"] and "latency" in a.tables:
        print("Table 3. Round trip through the switch and back (two traversals), 64-byte frames, one in flight\n")
        md(["switch", "rate", "p50 us", "p99 us", "p50 vs poll", "p50 vs poll, same placement", "p50 near (runs)",
            "p50 far (runs)", "lost", "switch CPU %", "runs p50", "placement"],
           [[r["switch"], r["rate"], f(r["p50_us"]), f(r["p99_us"]), f(r.get("p50_vs_base")),
             f(r.get("p50_vs_base_same_placement")), cls_cell(r["p50_us_near"], r["runs_near"]),
             cls_cell(r["p50_us_far"], r["runs_far"]), r["lost"], f(r["switch_cpu_pct"], 1),
             " ".join(f"{x:.2f}" for x in r["runs_p50_us"]), r["placement"]] for r in t["latency"]])
    if t["fairness"] and "fairness" in a.tables:
        print("Table 4. A 10 kpps steady sender next to a 64-byte flood through the same switch\n")
        md(["switch", "p50 us unloaded", "p50 us loaded", "p99 us unloaded", "p99 us loaded", "p50 loaded/unloaded",
            "p99 loaded/unloaded", "lost unloaded", "lost loaded", "flood offered Mpps", "flood delivered Mpps",
            "runs p99 loaded"],
           [[r["switch"], f(r["unloaded_p50_us"]), f(r["loaded_p50_us"]), f(r["unloaded_p99_us"]),
             f(r["loaded_p99_us"]), f(r["p50_ratio"]), f(r["p99_ratio"]), f"{r['unloaded_lost']} of {r['unloaded_samples'] + r['unloaded_lost']}",
             f"{r['loaded_lost']} of {r['loaded_samples'] + r['loaded_lost']}", f(r["flood_offered_mpps"]),
             f(r["flood_delivered_mpps"]), " ".join(f"{x:.1f}" for x in r["runs_loaded_p99_us"])] for r in t["fairness"]])
    ab = t["ablation"]
    if "ablation" not in a.tables:
        return
    if ab["loop"]:
        print("Table 5a. Ablation, two-port loop (64-byte frames): each optimization off against the defaults\n")
        md(["config", "Mpps", "vs defaults", "vs defaults, same placement", "Mpps near (runs)", "Mpps far (runs)",
            "busy cycles/frame", "CPU ns/frame", "runs (Mpps)", "placement"], [loop_cells(r) for r in ab["loop"]])
    if ab["sleeping"]:
        print("Table 5b. Ablation, endpoints that sleep on interrupts (virtwire adaptive): a 10 kpps pingpong, "
              "and a loop of two ends with 32 frames each in flight\n")
        md(["config", "pingpong p50 us", "p99 us", "lost", "irqs/frame", "kicks/frame", "switch CPU %",
            "loop Mpps", "vs defaults", "irqs/frame", "kicks/frame", "switch CPU %", "endpoints' CPU %"],
           [[r["config"], f(r["pingpong_p50_us"], 1), f(r["pingpong_p99_us"], 1), r["pingpong_lost"],
             f(r["pingpong_interrupts_per_frame"], 3), f(r["pingpong_kicks_per_frame"], 3),
             f(r["pingpong_switch_pct"], 1), f(r["loop_mpps"], 3), f(r["loop_vs_defaults"], 3),
             f(r["loop_interrupts_per_frame"], 3), f(r["loop_kicks_per_frame"], 3), f(r["loop_switch_pct"], 1),
             f(r["loop_endpoint_pct"], 1)] for r in ab["sleeping"]])
    if ab["window"]:
        print("Table 5c. Ablation, the adaptive window against a fixed one (poll_window_max_us = 200): "
              "paced pingpong, polling endpoints\n")
        md(["config", "rate", "p50 us", "p99 us", "p50 vs adaptive", "p50 vs adaptive, same placement",
            "switch CPU %", "runs p50", "placement"],
           [[r["switch"], r["rate"], f(r["p50_us"]), f(r["p99_us"]), f(r.get("p50_vs_base")),
             f(r.get("p50_vs_base_same_placement")), f(r["switch_cpu_pct"], 1),
             " ".join(f"{x:.2f}" for x in r["runs_p50_us"]), r["placement"]] for r in ab["window"]])
    if ab["yield"]:
        print("Table 5d. Ablation, yielding: a CPU-bound thread on the switch's core next to a 10 kpps pingpong "
              "(polling, CPU 0)\n")
        md(["config", "CPU-bound thread (cores)", "switch (cores)", "p50 us", "p99 us", "lost", "yields/s",
            "runs (thread cores)"],
           [[r["config"], f(r["hog_cores"]), f(r["switch_cores"]), f(r["p50_us"], 1), f(r["p99_us"], 1), r["lost"],
             f(r["yields_per_s"], 0), " ".join(f"{x:.2f}" for x in r["runs_hog_cores"])] for r in ab["yield"]])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print JSON instead of the tables")
    ap.add_argument("--save", metavar="FILE", help="also write the JSON (tables and every run) to FILE")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of interleaved runs (default 3)")
    ap.add_argument("--tables", default=",".join(TABLES), help=f"subset of {','.join(TABLES)}")
    ap.add_argument("--idle-seconds", type=float, default=30.0, help="idle window (default 30)")
    ap.add_argument("--idle-ports", type=int, default=4, help="idle ports attached (default 4)")
    ap.add_argument("--idle-modes", default="adaptive,poll,ovs",
                    help="idle table rows: adaptive, poll, interrupt, ovs (default adaptive,poll,ovs)")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds between attaching and the idle window")
    ap.add_argument("--seconds", type=float, default=3.0, help="loop window (default 3)")
    ap.add_argument("--warmup", type=float, default=1.0, help="loop warm-up (default 1)")
    ap.add_argument("--latency-seconds", type=float, default=3.0,
                    help="length of each pingpong (and of each sleeping-endpoint loop) (default 3)")
    ap.add_argument("--no-ovs", dest="ovs", action="store_false", help="leave OVS-DPDK out")
    ap.add_argument("--virtwire", default=benchlib.VIRTWIRE, help=f"virtwire binary (default {benchlib.VIRTWIRE})")
    ap.add_argument("--max-other-load", type=float, default=0.3,
                    help="repeat a run during which other processes used more than this many cores (default 0.3)")
    ap.add_argument("--retries", type=int, default=1, help="repeats of a disturbed run (default 1)")
    ap.add_argument("--from", dest="from_file", metavar="FILE",
                    help="measure nothing: print the tables of the runs a --save FILE holds")
    a = ap.parse_args()
    if a.from_file:
        with open(a.from_file) as fh:
            doc = json.load(fh)
        results = {tuple(k.split("/", 1)): v for k, v in doc["runs"].items()}
        m = doc["meta"]
        for k in ("idle_seconds", "idle_ports"):
            setattr(a, k, m.get(k, getattr(a, k)))
        a.tables = [t for t in a.tables.split(",") if t in m.get("tables", TABLES)]
        print(f"build {m['build']}, {m['cpu']}, {m['repeat']} rounds, {m['seconds']} s\n")
        print_tables(summarize(results), a)
        return
    a.tables = [t for t in a.tables.split(",") if t]
    for t in a.tables:
        if t not in TABLES:
            sys.exit(f"unknown table {t!r} (one of {', '.join(TABLES)})")
    a.idle_modes = [m for m in a.idle_modes.split(",") if m and (m != "ovs" or a.ovs)]
    for m in a.idle_modes:
        if m not in ("adaptive", "poll", "interrupt", "ovs"):
            sys.exit(f"unknown idle mode {m!r}")
    if os.geteuid() != 0:
        sys.exit("needs root (hugepages, SCHED_FIFO, OVS-DPDK)")
    if not shutil.which(sp.TESTPMD):
        sys.exit("dpdk-testpmd not found (apt-get install dpdk-dev)")
    if not os.path.exists(a.virtwire):
        sys.exit(f"{a.virtwire} not found (cargo build --release -p virtwire)")
    if a.ovs:
        sp.ensure_ovs()
    ensure_hugepages()
    global VW
    tmp = tempfile.mkdtemp(prefix="vw-engine-bench-")
    # A private copy, so that a rebuild during the run does not change what is measured.
    VW = os.path.join(tmp, "virtwire")
    shutil.copy2(a.virtwire, VW)
    sp.Virtwire.binary = VW
    benchlib.VIRTWIRE = VW
    t0 = time.time()
    build = git_rev()  # before the runs: the tree may change while they go on
    log(f"build {build}; load average before: {open('/proc/loadavg').read().split()[:3]}")
    try:
        results = execute(a, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    tables = summarize(results)
    meta = {"command": " ".join(sys.argv), "seconds": round(time.time() - t0), "repeat": a.repeat,
            "cpu": cpu_model(), "build": build, "virtwire": a.virtwire, "tables": a.tables,
            "idle_seconds": a.idle_seconds, "idle_ports": a.idle_ports}
    doc = {"meta": meta, "tables": tables,
           "runs": {f"{t}/{k}": v for (t, k), v in results.items()}}
    if a.save:
        with open(a.save, "w") as fh:
            json.dump(doc, fh, indent=2)
    if a.json:
        print(json.dumps(doc, indent=2))
        return
    print(f"build {meta['build']}, {meta['cpu']}, {a.repeat} rounds, {meta['seconds']} s\n")
    print_tables(tables, a)


def cpu_model():
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def git_rev():
    """The commit (git rev-parse --short HEAD), with "+changes" when tracked files differ
    from it."""
    out = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", HERE, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return (out.stdout.strip() or "?") + ("+changes" if dirty else "")


if __name__ == "__main__":
    main()
