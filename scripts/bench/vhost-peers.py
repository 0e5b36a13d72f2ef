#!/usr/bin/env python3
"""Side-by-side vhost-user backend benchmark: the same DPDK testpmd virtio-user frontend
against (a) virtwire and (b) dpdk-testpmd with a vhost port, in three shapes:

  guest-to-host  frontend txonly  -> virtwire diag=sink    | testpmd rxonly
  host-to-guest  frontend rxonly  <- virtwire diag=source  | testpmd txonly
  loop           frontend io --tx-first <-> virtwire diag=reflect | testpmd io

The frontend's forwarding lcore runs on CPU 0 and the backend on CPU 1. Runs are
interleaved (virtwire, testpmd, virtwire, ...) and the median of each cell is reported
with the ratio virtwire / testpmd. Rates are what the frontend counted over the
measured window (its TX for guest-to-host, its RX otherwise), so both backends are
measured by the same yardstick. CPU seconds of the backend process over the window are
reported too. Prints a table, or JSON with --json.

Needs root (hugepages), dpdk-testpmd (Debian dpdk-dev) and a release build of virtwire.
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

from benchlib import (TESTPMD, VIRTWIRE, Testpmd, cacheline_rtt, eal, ensure_hugepages, placement,
                      proc_cpu_seconds)

SHAPES = {
    # shape: (frontend fwd mode, virtwire diag, backend testpmd fwd mode, frontend counter)
    "guest-to-host": ("txonly", "sink", "rxonly", "TX-packets"),
    "host-to-guest": ("rxonly", "source", "txonly", "RX-packets"),
    "loop": ("io", "reflect", "io", "RX-packets"),
}


def measure(backend, shape, size, secs, tmp, queue_size):
    fe_mode, diag, be_mode, counter = SHAPES[shape]
    sock = os.path.join(tmp, f"{backend}.sock")
    if os.path.exists(sock):
        os.unlink(sock)
    be = None
    be_testpmd = None
    if backend == "virtwire":
        cfg = os.path.join(tmp, "vw.toml")
        with open(cfg, "w") as f:
            f.write(
                f"[[port]]\nname='bench'\ntype='vhost-user'\nsocket='{sock}'\n"
                f"diag='{diag}'\ndiag_frame_size={size}\n"
            )
        be = subprocess.Popen(
            ["taskset", "-c", "1", VIRTWIRE, "run", "--config", cfg],
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(tmp, "vw.log"), "w"),
        )
        be_pid = be.pid
    else:
        args = eal(f"vwb-be-{os.getpid()}", 0, False) + [
            "--vdev", f"net_vhost0,iface={sock},queues=1",
            "--", "-i", "--total-num-mbufs=32768", f"--txpkts={size}",
            f"--forward-mode={be_mode}", "--disable-link-check",
        ]
        be_testpmd = Testpmd(args, "0-1")
        be_testpmd.wait_for("testpmd>", 60)
        be_testpmd.cmd("start")
        be_pid = be_testpmd.p.pid
    end = time.time() + 10
    while not os.path.exists(sock):
        if time.time() > end:
            raise RuntimeError(f"{backend}: no socket")
        time.sleep(0.05)
    fe_args = eal(f"vwb-fe-{os.getpid()}", 1, True) + [
        "--vdev", f"net_virtio_user0,path={sock},queues=1,queue_size={queue_size}",
        "--", "-i", "--total-num-mbufs=32768", f"--txpkts={size}", f"--forward-mode={fe_mode}",
        "--disable-link-check",
    ]
    fe = Testpmd(fe_args, "0-1")
    try:
        fe.wait_for("testpmd>", 60)
        fe.cmd("start tx_first" if fe_mode == "io" else "start")
        time.sleep(1.0)  # warm up
        fe.cmd("clear port stats all")
        cpu0 = proc_cpu_seconds(be_pid)
        t0 = time.time()
        time.sleep(secs)
        fe.cmd("show port stats all")
        t1 = time.time()
        cpu1 = proc_cpu_seconds(be_pid)
        time.sleep(0.5)
        text = fe.read()
        block = text[text.rfind("NIC statistics for port 0"):]
        m = re.search(counter + r":\s+(\d+)", block)
        if not m:
            raise RuntimeError(f"no {counter} in:\n{block}")
        pkts = int(m.group(1))
        fe.cmd("stop")
    finally:
        fe.close()
        if be is not None:
            be.send_signal(signal.SIGTERM)
            be.wait(timeout=10)
        if be_testpmd is not None:
            be_testpmd.cmd("stop")
            be_testpmd.close()
    dt = t1 - t0
    return {"mpps": pkts / dt / 1e6, "backend_cpu_s": (cpu1 - cpu0), "window_s": dt}


def measure_pingpong(backend, size, secs, tmp):
    """Round-trip latency with one frame in flight, measured by virtwire's own
    virtio-user frontend (`virtwire bench pingpong`), against virtwire diag=reflect or
    testpmd io forwarding."""
    sock = os.path.join(tmp, f"pp-{backend}.sock")
    if os.path.exists(sock):
        os.unlink(sock)
    be = None
    be_testpmd = None
    if backend == "virtwire":
        cfg = os.path.join(tmp, "pp.toml")
        with open(cfg, "w") as f:
            f.write(f"[[port]]\nname='pp'\ntype='vhost-user'\nsocket='{sock}'\ndiag='reflect'\n")
        be = subprocess.Popen(["taskset", "-c", "1", VIRTWIRE, "run", "--config", cfg],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        args = eal(f"vwb-pp-{os.getpid()}", 0, False) + [
            "--vdev", f"net_vhost0,iface={sock},queues=1",
            "--", "-i", "--total-num-mbufs=32768", "--forward-mode=io", "--disable-link-check",
        ]
        be_testpmd = Testpmd(args, "0-1")
        be_testpmd.wait_for("testpmd>", 60)
        be_testpmd.cmd("start")
    end = time.time() + 10
    while not os.path.exists(sock):
        if time.time() > end:
            raise RuntimeError(f"{backend}: no socket")
        time.sleep(0.05)
    try:
        out = subprocess.run(["taskset", "-c", "0", VIRTWIRE, "bench", "pingpong", "--socket", sock,
                              "--size", str(size), "--duration", str(secs), "--json"],
                             capture_output=True, text=True, timeout=secs + 60)
        if out.returncode:
            raise RuntimeError(f"pingpong failed: {out.stderr}")
        r = json.loads(out.stdout)
    finally:
        if be is not None:
            be.send_signal(signal.SIGTERM)
            be.wait(timeout=10)
        if be_testpmd is not None:
            be_testpmd.cmd("stop")
            be_testpmd.close()
    lat = r["latency_us"]
    return {"p50_us": lat["p50"], "p99_us": lat["p99"], "mpps": r["pps"] / 1e6}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--sizes", default="64,1518")
    ap.add_argument("--shapes", default="guest-to-host,host-to-guest,loop")
    ap.add_argument("--queue-size", type=int, default=256)
    ap.add_argument("--pingpong", action="store_true", help="also measure round-trip latency")
    a = ap.parse_args()
    if not shutil.which(TESTPMD):
        sys.exit("dpdk-testpmd not found (apt-get install dpdk-dev)")
    if not os.path.exists(VIRTWIRE):
        sys.exit(f"{VIRTWIRE} not found (cargo build --release -p virtwire)")
    ensure_hugepages()
    sizes = [int(s) for s in a.sizes.split(",")]
    shapes = a.shapes.split(",")
    results = {}
    tmp = tempfile.mkdtemp(prefix="vw-bench-")
    try:
        for _ in range(a.repeat):
            for shape in shapes:
                for size in sizes:
                    for backend in ("virtwire", "testpmd"):
                        rtt = cacheline_rtt()
                        r = measure(backend, shape, size, a.seconds, tmp, a.queue_size)
                        rtt_after = cacheline_rtt()
                        r["cacheline_rtt_ns"] = placement(rtt, rtt_after)
                        results.setdefault((shape, size, backend), []).append(r)
                        if not a.json:
                            print(f"  {shape:13} {size:5} {backend:9} {r['mpps']:.3f} Mpps (cache-line rtt {rtt} ns)",
                                  file=sys.stderr)
        if a.pingpong:
            for _ in range(a.repeat):
                for backend in ("virtwire", "testpmd"):
                    rtt = cacheline_rtt()
                    r = measure_pingpong(backend, 64, a.seconds, tmp)
                    r["cacheline_rtt_ns"] = placement(rtt, cacheline_rtt())
                    results.setdefault(("pingpong", 64, backend), []).append(r)
                    if not a.json:
                        print(f"  pingpong         64 {backend:9} p50 {r['p50_us']:.2f} us (cache-line rtt {rtt} ns)",
                              file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for shape in shapes:
        for size in sizes:
            vw = [r["mpps"] for r in results[(shape, size, "virtwire")]]
            tp = [r["mpps"] for r in results[(shape, size, "testpmd")]]
            vw_cpu = statistics.median(r["backend_cpu_s"] / r["window_s"] for r in results[(shape, size, "virtwire")])
            tp_cpu = statistics.median(r["backend_cpu_s"] / r["window_s"] for r in results[(shape, size, "testpmd")])
            rows.append({
                "shape": shape, "frame_bytes": size,
                "virtwire_mpps": statistics.median(vw), "testpmd_mpps": statistics.median(tp),
                "ratio": statistics.median(vw) / statistics.median(tp) if statistics.median(tp) else None,
                "virtwire_runs": vw, "testpmd_runs": tp,
                "virtwire_cpu_cores": vw_cpu, "testpmd_cpu_cores": tp_cpu,
                "virtwire_gbps": statistics.median(vw) * size * 8 / 1e3,
                "cacheline_rtt_ns": [r["cacheline_rtt_ns"] for b in ("virtwire", "testpmd")
                                     for r in results[(shape, size, b)]],
            })
            # The host moves this machine's two vCPUs between "near" (cache-line round
            # trip well under 150 ns) and "far" placements; compare like with like.
            for cls, test in (("near", lambda x: x is not None and x < 150), ("far", lambda x: x is not None and x >= 150)):
                v = [r["mpps"] for r in results[(shape, size, "virtwire")] if test(r["cacheline_rtt_ns"])]
                t = [r["mpps"] for r in results[(shape, size, "testpmd")] if test(r["cacheline_rtt_ns"])]
                rows[-1][f"ratio_{cls}"] = statistics.median(v) / statistics.median(t) if v and t else None
                rows[-1][f"runs_{cls}"] = [len(v), len(t)]
    latency = []
    if a.pingpong:
        vw = results[("pingpong", 64, "virtwire")]
        tp = results[("pingpong", 64, "testpmd")]
        latency.append({
            "shape": "pingpong", "frame_bytes": 64,
            "virtwire_p50_us": statistics.median(r["p50_us"] for r in vw),
            "testpmd_p50_us": statistics.median(r["p50_us"] for r in tp),
            "virtwire_p99_us": statistics.median(r["p99_us"] for r in vw),
            "testpmd_p99_us": statistics.median(r["p99_us"] for r in tp),
            "virtwire_runs_p50": [r["p50_us"] for r in vw], "testpmd_runs_p50": [r["p50_us"] for r in tp],
            "cacheline_rtt_ns": [r["cacheline_rtt_ns"] for r in vw + tp],
        })
        for cls, test in (("near", lambda x: x is not None and x < 150), ("far", lambda x: x is not None and x >= 150)):
            for name, rs in (("virtwire", vw), ("testpmd", tp)):
                v = [r["p50_us"] for r in rs if test(r["cacheline_rtt_ns"])]
                latency[-1][f"{name}_p50_us_{cls}"] = statistics.median(v) if v else None
    if a.json:
        print(json.dumps(rows + latency, indent=2))
        return
    fmt = lambda x: "-" if x is None else f"{x:.2f}"
    print(f"{'shape':13} {'bytes':>5} {'virtwire Mpps':>13} {'testpmd Mpps':>12} {'ratio':>6} {'near':>5} {'far':>5} "
          f"{'vw cores':>8} {'tp cores':>8}  runs (virtwire | testpmd)")
    for r in rows:
        print(f"{r['shape']:13} {r['frame_bytes']:>5} {r['virtwire_mpps']:>13.3f} {r['testpmd_mpps']:>12.3f} "
              f"{r['ratio']:>6.2f} {fmt(r['ratio_near']):>5} {fmt(r['ratio_far']):>5} "
              f"{r['virtwire_cpu_cores']:>8.2f} {r['testpmd_cpu_cores']:>8.2f}  "
              f"{' '.join(f'{x:.2f}' for x in r['virtwire_runs'])} | {' '.join(f'{x:.2f}' for x in r['testpmd_runs'])}")
    for r in latency:
        print(f"\npingpong 64 B round trip (one frame in flight, virtwire's frontend): "
              f"virtwire p50 {r['virtwire_p50_us']:.2f} us p99 {r['virtwire_p99_us']:.2f} us | "
              f"testpmd p50 {r['testpmd_p50_us']:.2f} us p99 {r['testpmd_p99_us']:.2f} us")
        print(f"  p50 near placement: virtwire {fmt(r['virtwire_p50_us_near'])} us, testpmd {fmt(r['testpmd_p50_us_near'])} us; "
              f"far: virtwire {fmt(r['virtwire_p50_us_far'])} us, testpmd {fmt(r['testpmd_p50_us_far'])} us")


if __name__ == "__main__":
    main()
