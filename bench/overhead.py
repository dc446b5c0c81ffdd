#!/usr/bin/env python3
"""Overhead benchmarks of iotracer, each a ratio against an untraced run (or a
peer tool) measured in the same run, written as markdown.

  cpu   fio psync at 12,000 read IOPS + 250 write IOPS on a loop device over
        tmpfs (direct/buffered x sequential/random): machine system CPU with
        and without iotracer (all layers), alternating, plus iotracer's own
        CPU and its peak resident memory.
  iops  4 KiB random direct reads at the highest rate fio reaches on a loop
        device over tmpfs: untraced, iotracer (all layers), and a bpftrace
        script that records only block issue/complete.

Not a test: numbers are reported, never asserted.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HZ = os.sysconf("SC_CLK_TCK")
BPFTRACE_SCRIPT = r"""
tracepoint:block:block_rq_issue { @start[args->dev, args->sector] = nsecs; }
tracepoint:block:block_rq_complete /@start[args->dev, args->sector]/ {
  @usecs = hist((nsecs - @start[args->dev, args->sector]) / 1000);
  delete(@start[args->dev, args->sector]);
}
"""


def cpu_jiffies():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
    return {"system": system + irq + softirq, "busy": user + nice + system + irq + softirq + steal}


def proc_cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def proc_rss_kb(pid):
    rss = hwm = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


class Loop:
    def __init__(self, size_mb):
        self.dir = tempfile.mkdtemp(prefix="iotracer-bench-")
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm" % (size_mb + 16), "tmpfs", self.dir], check=True)
        img = os.path.join(self.dir, "img")
        with open(img, "wb") as f:
            f.truncate(size_mb << 20)
        subprocess.run(["dd", "if=/dev/zero", "of=" + img, "bs=1M", "count=%d" % size_mb, "conv=notrunc",
                        "status=none"], check=True)
        self.dev = subprocess.run(["losetup", "--find", "--show", img], check=True, capture_output=True,
                                  text=True).stdout.strip()

    def close(self):
        subprocess.run(["losetup", "-d", self.dev])
        subprocess.run(["umount", self.dir])
        shutil.rmtree(self.dir, ignore_errors=True)


def fio(args, dev, jobs, runtime):
    cmd = ["fio", "--output-format=json", "--time_based", "--runtime=%d" % runtime, "--filename=" + dev,
           "--group_reporting=0"]
    for j in jobs:
        cmd += ["--name=" + j["name"]] + ["--%s=%s" % (k, v) for k, v in j.items() if k != "name"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    data = json.loads(out[out.index("{"):])
    return {j["jobname"]: j["read"]["iops"] + j["write"]["iops"] for j in data["jobs"]}


class Tracer:
    def __init__(self, cmd, ready=None):
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log, text=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            self.log.seek(0)
            if ready is None or ready in self.log.read():
                break
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError("%s exited: %s" % (cmd[0], self.log.read()))
            time.sleep(0.1)
        if ready is None:
            time.sleep(3)  # bpftrace says nothing useful when attached; give it time
        self.pid = self.proc.pid

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.seek(0)
        return self.log.read()


def iotracer_cmd(args, out):
    return [args.iotracer, "--no-status", "--json", "-o", out]


def cpu_bench(args, md):
    variants = [("direct", "randread", "randwrite", 1), ("direct", "read", "write", 1),
                ("buffered", "randread", "randwrite", 0), ("buffered", "read", "write", 0)]
    md.append("### CPU overhead at 12,000 read + 250 write IOPS (fio psync, loop device over tmpfs)\n")
    md.append("Machine system CPU (system+irq+softirq over both cores) in percent of one core, mean of %d "
              "alternating %d s runs each; iotracer with every layer on, writing every request as JSON to a "
              "file on tmpfs.\n" % (args.reps, args.runtime))
    md.append("| I/O | untraced sys CPU | traced sys CPU | added (% of one core) | iotracer process CPU "
              "(% of one core) | records/s | achieved IOPS untraced / traced |")
    md.append("|---|---|---|---|---|---|---|")
    loop = Loop(256)
    rss_peak = 0
    try:
        for mode, rd, wr, direct in variants:
            base, traced, own, recs, iops_b, iops_t = [], [], [], [], [], []
            jobs = [dict(name="reader", rw=rd, bs="4k", direct=direct, ioengine="psync", rate_iops=12000),
                    dict(name="writer", rw=wr, bs="4k", direct=direct, ioengine="psync", rate_iops=250,
                         offset="128m")]
            for rep in range(args.reps):
                for with_tracer in (False, True):
                    t = None
                    outdir = tempfile.mkdtemp(prefix="iotracer-out-", dir="/dev/shm")
                    out = os.path.join(outdir, "records.json")
                    if with_tracer:
                        t = Tracer(iotracer_cmd(args, out), ready="layer aio")
                        c0 = proc_cpu(t.pid)
                    j0 = cpu_jiffies()
                    t0 = time.time()
                    if t:
                        import threading
                        samples = []
                        stop_sampling = threading.Event()

                        def sample():
                            while not stop_sampling.wait(0.5):
                                try:
                                    samples.append(proc_rss_kb(t.pid)[0])
                                except OSError:
                                    break
                        th = threading.Thread(target=sample, daemon=True)
                        th.start()
                    iops = fio(args, loop.dev, jobs, args.runtime)
                    dt = time.time() - t0
                    j1 = cpu_jiffies()
                    sys_pct = (j1["system"] - j0["system"]) / HZ / dt * 100
                    if t:
                        stop_sampling.set()
                        th.join()
                        own.append((proc_cpu(t.pid) - c0) / HZ / dt * 100)
                        rss, hwm = proc_rss_kb(t.pid)
                        rss_peak = max([rss_peak, rss] + samples)
                        t.stop()
                        with open(out) as f:
                            n = sum(1 for l in f if '"type":"io"' in l)
                        recs.append(n / dt)
                        traced.append(sys_pct)
                        iops_t.append(sum(iops.values()))
                    else:
                        base.append(sys_pct)
                        iops_b.append(sum(iops.values()))
                    shutil.rmtree(outdir, ignore_errors=True)
            m = statistics.mean
            sd = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0
            md.append("| %s %s | %.2f ± %.2f | %.2f ± %.2f | %.2f | %.2f | %.0f | %.0f / %.0f |" % (
                mode, rd, m(base), sd(base), m(traced), sd(traced), m(traced) - m(base), m(own), m(recs),
                m(iops_b), m(iops_t)))
            print(md[-1], flush=True)
    finally:
        loop.close()
    md.append("\nPeak resident memory (VmRSS, sampled every 0.5 s) of the iotracer process during these runs: "
              "**%.1f MiB**.\n" % (rss_peak / 1024))


def iops_bench(args, md):
    md.append("### IOPS retained at the highest rate (fio libaio, 4 KiB random direct reads, iodepth 32, "
              "loop device over tmpfs)\n")
    md.append("Mean of %d runs of %d s per configuration, interleaved.\n" % (args.reps, args.runtime))
    md.append("| configuration | IOPS | ratio to untraced |")
    md.append("|---|---|---|")
    loop = Loop(256)
    results = {"untraced": [], "iotracer (all layers, JSON to file)": [], "iotracer --summary": [],
               "bpftrace block issue/complete": []}
    jobs = [dict(name="rr", rw="randread", bs="4k", direct=1, ioengine="libaio", iodepth=32)]
    outdir = tempfile.mkdtemp(prefix="iotracer-out-", dir="/dev/shm")
    try:
        for rep in range(args.reps):
            for name in results:
                t = None
                if name.startswith("iotracer (all"):
                    t = Tracer(iotracer_cmd(args, os.path.join(outdir, "r.json")), ready="layer aio")
                elif name == "iotracer --summary":
                    t = Tracer([args.iotracer, "--no-status", "--summary", "-o", os.path.join(outdir, "s.txt")],
                               ready="layer aio")
                elif name.startswith("bpftrace"):
                    if not shutil.which("bpftrace"):
                        continue
                    t = Tracer(["bpftrace", "-e", BPFTRACE_SCRIPT])
                iops = fio(args, loop.dev, jobs, args.runtime)
                if t:
                    t.stop()
                results[name].append(sum(iops.values()))
        base = statistics.mean(results["untraced"])
        for name, xs in results.items():
            if not xs:
                md.append("| %s | not run (missing) | |" % name)
                continue
            md.append("| %s | %.0f | %.3f |" % (name, statistics.mean(xs), statistics.mean(xs) / base))
            print(md[-1], flush=True)
    finally:
        loop.close()
        shutil.rmtree(outdir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iotracer", required=True)
    ap.add_argument("--runtime", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default="-")
    ap.add_argument("what", nargs="*", default=["cpu", "iops"])
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: needs root (loop devices, BPF)")
    md = []
    uname = os.uname()
    md.append("_Measured %s on %s %s, %d CPUs, by bench/overhead.py._\n" % (
        time.strftime("%Y-%m-%d"), uname.sysname, uname.release, os.cpu_count()))
    if "cpu" in args.what:
        cpu_bench(args, md)
    if "iops" in args.what:
        iops_bench(args, md)
    text = "\n".join(md) + "\n"
    if args.out == "-":
        sys.stdout.write(text)
    else:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
