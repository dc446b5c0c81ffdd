#!/usr/bin/env python3
"""Benchmarks of the guest <-> host channel; results as Markdown.

1. Host ingest: how many records per second one host core decodes, puts on
   its clock and accounts, fed by bench/guestgen over a unix socket as fast
   as the host takes them. The host's CPU time comes from
   /proc/PID/schedstat (nanoseconds on the CPU), so the rate is records per
   second of host CPU, whatever else the machine runs. Two host outputs:
   --summary (decode, clock, histograms: the agent's own cost) and JSON lines
   written to /dev/null (plus formatting every record).
2. The host agent's peak resident memory with 4 guests streaming at once.
3. Clock offset uncertainty between a QEMU guest and this host as the
   protocol measures and reports it (qemu-test/test-channel.py's run).

usage: channel.py --iotracer EXE --guestgen EXE --iowork EXE --build BUILD_DIR --out FILE
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from overhead import proc_cpu_ns as cpu_ns  # noqa: E402  (every thread, exact)
from overhead import proc_rss_kb as mem_kib  # noqa: E402  (VmRSS, VmHWM) in KiB


def start_host(exe, sock, out_args):
    errf = tempfile.TemporaryFile(mode="w+")
    p = subprocess.Popen([exe, "--mode", "host", "--no-qemu", "--listen", "unix:" + sock] + out_args,
                         stdout=subprocess.DEVNULL, stderr=errf, text=True)
    deadline = time.time() + 10
    while time.time() < deadline:
        errf.seek(0)
        if "listening on" in errf.read():
            return p, errf
        time.sleep(0.02)
    p.kill()
    raise SystemExit("host agent did not start")


def ingest(args, out_args, records, batch):
    with tempfile.TemporaryDirectory() as d:
        sock = os.path.join(d, "h.sock")
        p, errf = start_host(args.iotracer, sock, out_args)
        c0 = cpu_ns(p.pid)
        t0 = time.monotonic()
        g = subprocess.run([args.guestgen, "unix:" + sock, "stream", "--records", str(records),
                            "--batch", str(batch), "--linger", "60"], capture_output=True, text=True)
        wall = time.monotonic() - t0
        c1 = cpu_ns(p.pid)
        p.terminate()
        p.wait()
        if g.returncode != 0:
            raise SystemExit("guestgen failed: %s %s" % (g.stdout, g.stderr))
        errf.seek(0)
        log = errf.read()
        m = re.search(r"(\d+) records", log.splitlines()[-1])
        got = int(m.group(1)) if m else -1
        if got != records:
            raise SystemExit("host took %d of %d records:\n%s" % (got, records, log))
    return records / ((c1 - c0) / 1e9), records / wall


def four_guests_rss(args):
    with tempfile.TemporaryDirectory() as d:
        sock = os.path.join(d, "h.sock")
        p, _ = start_host(args.iotracer, sock, ["--json", "-o", "/dev/null"])
        gens = [subprocess.Popen([args.guestgen, "unix:" + sock, "stream", "--records", "500000",
                                  "--rate", "50000", "--linger", "60"], stdout=subprocess.DEVNULL)
                for _ in range(4)]
        rss = 0
        while any(g.poll() is None for g in gens):
            rss = max(rss, mem_kib(p.pid)[0])
            time.sleep(0.1)
        kib = (rss, mem_kib(p.pid)[1])
        p.terminate()
        p.wait()
    return kib


def guest_rss(args):
    """Peak resident set of a guest agent streaming a 2,000-request O_DIRECT run (needs root and a loop device)."""
    with tempfile.TemporaryDirectory() as d:
        sock = os.path.join(d, "h.sock")
        img = os.path.join(d, "disk.img")
        with open(img, "wb") as f:
            f.truncate(512 << 20)
        dev = subprocess.run(["losetup", "--find", "--show", img], capture_output=True, text=True).stdout.strip()
        if not dev:
            return None
        h, _ = start_host(args.iotracer, sock, ["--json", "-o", "/dev/null"])
        g = subprocess.Popen([args.iotracer, "--mode", "guest", "--connect", "unix:" + sock, "--comm", "iowork",
                              "--json", "--no-status"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            while "aio" not in (g.stdout.readline() or "aio"):
                pass
            w = subprocess.Popen([args.iowork, "direct", dev, "2000"], stdin=subprocess.PIPE,
                                 stdout=subprocess.DEVNULL, text=True)
            rss = 0
            w.stdin.write("go\n")
            w.stdin.flush()
            while w.poll() is None:
                rss = max(rss, mem_kib(g.pid)[0])
                time.sleep(0.1)
            time.sleep(0.5)
            kib = (max(rss, mem_kib(g.pid)[0]), mem_kib(g.pid)[1])
        finally:
            g.terminate()
            g.wait()
            h.terminate()
            h.wait()
            subprocess.run(["losetup", "-d", dev])
    return kib


def clock_run(args):
    r = subprocess.run([sys.executable, os.path.join(HERE, "..", "qemu-test", "test-channel.py"), args.build,
                        args.iotracer, args.iowork], capture_output=True, text=True)
    m = re.search(r"clock offset ([-+0-9.]+) us, uncertainty ([0-9.]+) us, drift ([-0-9.]+) ppm, (\d+) samples",
                  r.stdout)
    if r.returncode != 0 or not m:
        return None, r.stdout[-500:]
    return m.groups(), None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iotracer", required=True)
    ap.add_argument("--guestgen", required=True)
    ap.add_argument("--iowork", required=True)
    ap.add_argument("--build", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--records", type=int, default=2000000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-qemu", action="store_true")
    args = ap.parse_args()

    lines = ["# Channel benchmark run", "",
             "Written by `bench/channel.py` on %s, %s, %d CPUs. Explained in docs/benchmarks.md."
             % (time.strftime("%Y-%m-%d %H:%M"), os.uname().release, os.cpu_count()), "",
             "## Host ingest (records per second of host CPU; target at least 2,000,000)", "",
             "| host output | batch | runs | records/s per host core (median, min-max) | wall records/s |",
             "|---|---|---|---|---|"]
    for label, out_args in (("--summary (decode, clock, histograms)", ["--summary"]),
                            ("JSON lines to /dev/null", ["--json", "-o", "/dev/null"])):
        for batch in (128,):
            rates, walls = [], []
            for _ in range(args.runs):
                r, w = ingest(args, out_args, args.records, batch)
                rates.append(r)
                walls.append(w)
            lines.append("| %s | %d | %d | %.2fM (%.2f-%.2fM) | %.2fM |" % (
                label, batch, args.runs, statistics.median(rates) / 1e6, min(rates) / 1e6, max(rates) / 1e6,
                statistics.median(walls) / 1e6))
            print(lines[-1], flush=True)
    kib = four_guests_rss(args)
    lines += ["", "## Host agent memory", "",
              "Resident set with 4 guests streaming 50,000 records/s each: %.1f MiB at most while "
              "streaming (VmRSS sampled every 100 ms), %.1f MiB peak over the whole run (VmHWM); "
              "target 16 MB." % (kib[0] / 1024, kib[1] / 1024)]
    print(lines[-1], flush=True)
    gk = guest_rss(args) if os.geteuid() == 0 else None
    lines += ["", "Guest agent resident set while streaming 2,000 O_DIRECT requests: %s (target 8 MB)."
              % ("%.1f MiB at most while streaming, %.1f MiB peak including BPF load (VmHWM)"
                 % (gk[0] / 1024, gk[1] / 1024) if gk else "not measured (needs root and a loop device)")]
    print(lines[-1], flush=True)
    if not args.no_qemu:
        c, err = clock_run(args)
        lines += ["", "## Clock synchronisation, QEMU guest (TCG) over virtio-serial", ""]
        if c:
            lines.append("Offset %s us, reported uncertainty %s us, drift %s ppm, from %s samples." % c)
        else:
            lines.append("The qemu-test run failed: %s" % err)
        print(lines[-1], flush=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
