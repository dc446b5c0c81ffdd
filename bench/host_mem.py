#!/usr/bin/env python3
"""The host agent's memory with four guests streaming at once.

Four qemu-test guests (TCG, 1 vCPU, 512 MiB each), each with a raw image
(aio=io_uring, cache=none) and the guest agent streaming to one host agent
over its own virtio-serial port, while fio reads its disk (4 KiB random
direct reads, iodepth 16). The host agent traces the four QEMU processes and
joins every request. Its resident memory is sampled every 200 ms; the peak
is reported beside what was streamed and joined. Results as Markdown.

usage: host_mem.py --iotracer EXE --iowork EXE --build BUILD_DIR --out FILE [--guests N] [--seconds S]
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "qemu-test"))
from host import GUEST, Ctl, qemu_pid_of  # noqa: E402
from overhead import proc_rss_kb  # noqa: E402
from qtest import build_guest  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iotracer", required=True)
    ap.add_argument("--iowork", required=True)
    ap.add_argument("--build", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--guests", type=int, default=4)
    ap.add_argument("--seconds", type=int, default=15)
    args = ap.parse_args()
    err = build_guest(args.build, args.iotracer, args.iowork)
    if err:
        raise SystemExit(err)
    tmp = tempfile.mkdtemp(prefix="iotracer-bench-mem-", dir="/var/tmp")
    guests, ctls, disks, qpids, datas = [], [], [], [], []
    host = None
    try:
        for i in range(args.guests):
            data, ctlp = os.path.join(tmp, "data%d.sock" % i), os.path.join(tmp, "ctl%d.sock" % i)
            img = os.path.join(tmp, "disk%d.raw" % i)
            subprocess.run(["dd", "if=/dev/zero", "of=" + img, "bs=1M", "count=128", "conv=fsync", "status=none"],
                           check=True)
            cmd = [os.path.join(HERE, "..", "qemu-test", "run-guest.sh"), "--build-dir", args.build,
                   "--timeout", "1200", "--mem", "512M", "--smp", "1",
                   "--serial-socket", data + ",name=org.iotracer.0", "--serial-socket", ctlp + ",name=org.iotracer.ctl",
                   "--disk", img + ",format=raw,if=virtio,aio=io_uring,cache=none,serial=image%d" % i, "--", GUEST]
            g = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            threading.Thread(target=g.communicate, daemon=True).start()
            guests.append(g)
            datas.append(data)
            ctls.append(ctlp)
        ctls = [Ctl(p) for p in ctls]
        for i, c in enumerate(ctls):
            serials = dict(kv.split("=") for kv in c.cmd("serials").split())
            disks.append({serials[d]: d for d in serials}["image%d" % i])
            qpids.append(qemu_pid_of(os.path.join(tmp, "ctl%d.sock" % i)))
        hout = os.path.join(tmp, "host.json")
        argv = [args.iotracer, "--mode", "host", "--json", "-o", hout]
        for d in datas:
            argv += ["--listen", "serial:" + d]
        for p in qpids:
            argv += ["--qemu-pid", str(p)]
        host = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while not (os.path.exists(hout) and open(hout).read().count('"listening"') >= args.guests):
            if time.time() > deadline or host.poll() is not None:
                raise SystemExit("host agent did not start: %s" % host.stderr.read())
            time.sleep(0.1)
        for c, d in zip(ctls, disks):
            if c.cmd("agent-start " + d) != "ready":
                raise SystemExit("a guest agent did not connect")
        rss, stop = [], threading.Event()

        def sample():
            while not stop.wait(0.2):
                rss.append(proc_rss_kb(host.pid)[0])
        st = threading.Thread(target=sample, daemon=True)
        st.start()
        results = [None] * args.guests

        def fio(i):
            r = json.loads(ctls[i].cmd("fio %s %d" % (disks[i], args.seconds)))
            results[i] = r["jobs"][0]["read"]["total_ios"]
        ts = [threading.Thread(target=fio, args=(i,)) for i in range(args.guests)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        stopped = [c.cmd("agent-stop") for c in ctls]
        time.sleep(1.5)
        stop.set()
        st.join()
        host.send_signal(signal.SIGINT)
        host.wait(timeout=60)
        objs = [json.loads(l) for l in open(hout) if l.startswith("{")]
        corr = [o for o in objs if o.get("type") == "correlation"]
        c = corr[-1] if corr else {}
        by_guest = {}
        for o in objs:
            if o.get("type") == "io" and "guest" in o:
                by_guest[o["guest"]] = by_guest.get(o["guest"], 0) + 1
        for c_ in ctls:
            c_.cmd("quit", timeout=30)
    finally:
        if host and host.poll() is None:
            host.kill()
        for g in guests:
            if g.poll() is None:
                g.kill()
        subprocess.run(["rm", "-rf", tmp])
    lines = ["# Host agent memory with %d guests streaming" % args.guests, "",
             "Written by `bench/host_mem.py` on %s, %s, %d CPUs, QEMU under TCG: %d guests (1 vCPU, 512 MiB, a raw "
             "image with aio=io_uring, cache=none), each streaming every request of a %d s fio run (4 KiB random "
             "direct reads, iodepth 16) to one host agent that traces the %d QEMU processes and joins every "
             "request, writing JSON lines. Explained in docs/benchmarks.md." % (
                 time.strftime("%Y-%m-%d %H:%M"), os.uname().release, os.cpu_count(), args.guests, args.seconds,
                 args.guests), "",
             "| host agent RSS, peak | samples | guest requests by fio | joined records by guest | matched (gpa) | "
             "with host I/O |",
             "|---|---|---|---|---|---|",
             "| %.1f MiB | %d | %s | %s | %d of %d | %d |" % (
                 max(rss) / 1024 if rss else 0, len(rss), " + ".join(str(n) for n in results),
                 ", ".join("%s %d" % kv for kv in sorted(by_guest.items())), c.get("gpa", 0),
                 sum(c.get(k, 0) for k in ("gpa", "sector", "no_qemu_request", "key_disagrees", "no_vm",
                                           "hold_full", "not_virtio")),
                 c.get("with_host_io", 0)),
             "", "The host agent's correlation counters (why a guest record was or was not matched, what was "
             "dropped):", "", "```", json.dumps(c, sort_keys=True), "```", ""]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print("guest agents:", stopped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
