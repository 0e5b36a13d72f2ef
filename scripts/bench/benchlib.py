"""Shared pieces of the benchmark scripts in this directory: hugepages, DPDK testpmd
driven through its stdin, process CPU time, and the placement of this machine's two vCPUs
(`virtwire bench cacheline`)."""

import json
import os
import signal
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VIRTWIRE = os.path.join(ROOT, "target", "release", "virtwire")
TESTPMD = "dpdk-testpmd"


def terminate(p, timeout=10):
    """Stops a child with SIGTERM (it prints its counters and removes its sockets), and
    kills it if it has not exited within `timeout` seconds."""
    if p is not None and p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def ensure_hugepages():
    with open("/proc/sys/vm/nr_hugepages") as f:
        if int(f.read().strip() or 0) < 1024:
            with open("/proc/sys/vm/nr_hugepages", "w") as w:
                w.write("1024")
    with open("/proc/mounts") as f:
        if not any(l.split()[2] == "hugetlbfs" for l in f if len(l.split()) > 2):
            os.makedirs("/dev/hugepages", exist_ok=True)
            subprocess.run(["mount", "-t", "hugetlbfs", "nodev", "/dev/hugepages"], check=True)


def proc_cpu_seconds(pid):
    """utime + stime of a process and its threads, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class Testpmd:
    """An interactive testpmd driven through its stdin."""

    def __init__(self, args, cpu_list):
        self.p = subprocess.Popen(
            ["taskset", "-c", cpu_list, "stdbuf", "-oL", "-eL", TESTPMD] + args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self.out = []
        os.set_blocking(self.p.stdout.fileno(), False)

    def read(self):
        try:
            while True:
                chunk = self.p.stdout.read()
                if not chunk:
                    break
                self.out.append(chunk)
        except (BlockingIOError, TypeError):
            pass
        return "".join(self.out)

    def wait_for(self, needle, timeout):
        end = time.time() + timeout
        while time.time() < end:
            if needle in self.read():
                return
            if self.p.poll() is not None:
                raise RuntimeError(f"testpmd exited:\n{self.read()}")
            time.sleep(0.05)
        raise RuntimeError(f"testpmd: no {needle!r} within {timeout}s:\n{self.read()}")

    def cmd(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def close(self):
        try:
            self.cmd("quit")
            self.p.wait(timeout=10)
        except Exception:
            self.p.kill()
            self.p.wait()


def eal(prefix, main_lcore, huge):
    mem = ["--single-file-segments", "--in-memory", "-m", "1024"] if huge else ["--no-huge", "-m", "1024", "--no-shconf"]
    return ["-l", "0,1", "--main-lcore", str(main_lcore), "--no-pci", f"--file-prefix={prefix}", "--log-level=lib.eal:notice"] + mem


def placement(before, after):
    """The cache-line round trip of a run when the placement was the same before and
    after it (both near, under 150 ns, or both far); None when it changed meanwhile."""
    if before is None or after is None or (before < 150) != (after < 150):
        return None
    return max(before, after)


def cacheline_rtt():
    """CPU0<->CPU1 cache-line round trip in ns (the host's placement of our two vCPUs)."""
    out = subprocess.run([VIRTWIRE, "bench", "cacheline", "--json"], capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout)["cacheline_rtt_ns"] if out.returncode == 0 else None
