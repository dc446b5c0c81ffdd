#!/usr/bin/env python3
"""What --perfetto costs: trace bytes per request and iotracer's CPU per request, with and without it.

The same O_DIRECT workload (tests/iowork direct on a loop device) runs under
iotracer writing JSON lines to /dev/null, then writing JSON lines and a
Perfetto trace, alternating, in the same run. iotracer's CPU comes from
/proc/PID/schedstat (all threads), read just before it is stopped.

usage: perfetto.py --iotracer EXE --iowork EXE --out FILE [--requests N] [--rounds R]
"""
import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from trace_test import finish_workload, loop_device, start_workload  # noqa: E402
from overhead import proc_cpu_ns  # noqa: E402


def one(args, dev, trace):
    w, pid = start_workload(args.iowork, "direct", dev, args.requests)
    cmd = [args.iotracer, "--pid", str(pid), "--json", "--no-status", "-o", "/dev/null"]
    if trace:
        cmd += ["--perfetto", trace]
    t = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    # Attached once the layer lines are out.
    seen = 0
    while seen < 10:
        line = t.stderr.readline()
        if not line:
            raise SystemExit("iotracer exited")
        seen += "iotracer: layer" in line
    c0 = proc_cpu_ns(t.pid)
    ops = finish_workload(w)
    time.sleep(0.5)
    cpu = proc_cpu_ns(t.pid) - c0
    t.send_signal(signal.SIGINT)
    t.wait(timeout=60)
    size = os.path.getsize(trace) if trace else 0
    return cpu / len(ops), size / len(ops)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iotracer", required=True)
    ap.add_argument("--iowork", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    base, withp, sizes = [], [], []
    with loop_device(512) as (dev, d):
        trace = os.path.join(tempfile.mkdtemp(dir=d), "t.pftrace")
        for _ in range(args.rounds):
            base.append(one(args, dev, None)[0])
            cpu, size = one(args, dev, trace)
            withp.append(cpu)
            sizes.append(size)
    b, p = statistics.median(base) / 1e3, statistics.median(withp) / 1e3
    lines = ["# Perfetto benchmark run", "",
             "Written by `bench/perfetto.py` on %s, %s: %d O_DIRECT requests per run (reads and writes of 4-16 KiB "
             "on a loop device), %d rounds, medians." % (time.strftime("%Y-%m-%d %H:%M"), os.uname().release,
                                                        args.requests, args.rounds), "",
             "| | iotracer CPU per request | trace bytes per request |", "|---|---|---|",
             "| JSON lines only | %.2f us | - |" % b,
             "| JSON lines and --perfetto | %.2f us (+%.2f us) | %.0f |" % (p, p - b, statistics.median(sizes))]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
