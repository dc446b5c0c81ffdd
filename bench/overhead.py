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
import threading
import time

HZ = os.sysconf("SC_CLK_TCK")
BPFTRACE_SCRIPT = r"""
tracepoint:block:block_rq_issue { @start[args->dev, args->sector] = nsecs; }
tracepoint:block:block_rq_complete /@start[args->dev, args->sector]/ {
  @usecs = hist((nsecs - @start[args->dev, args->sector]) / 1000);
  delete(@start[args->dev, args->sector]);
}
"""


CPUACCT = "/sys/fs/cgroup/cpuacct/cpuacct.usage"


def machine_cpu_s():
    """CPU time of every task on the machine, in seconds.

    The root cpuacct cgroup (v1) sums the scheduler's exact per-task runtime,
    kernel threads and BPF programs run in task context included. /proc/stat
    samples at each tick instead, and a rate-limited fio that wakes on timers
    hides from the tick: it under-reports by an order of magnitude here.
    """
    if os.path.exists(CPUACCT):
        with open(CPUACCT) as f:
            return int(f.read()) / 1e9
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / HZ


def proc_cpu_ns(pid):
    """CPU time of every thread of pid, in ns: schedstat is exact, where /proc/PID/stat counts ticks (an 8 s
    run at 0.3% of a core is two or three of them)."""
    total = 0
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, t)) as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def bpf_progs():
    out = subprocess.run(["bpftool", "prog", "show", "-j"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def our_btf_id():
    """The BTF object of the iotracer BPF programs just loaded (the newest block_bio_queue program)."""
    ours = [p for p in bpf_progs() if p.get("name", "").endswith("block_bio_queue")]
    return max(ours, key=lambda p: p["id"])["btf_id"] if ours else None


def bpf_runtime_ns(btf_id):
    """Time the kernel spent in our BPF programs so far (kernel.bpf_stats_enabled=1), and their runs."""
    ns = cnt = 0
    for p in bpf_progs():
        if p.get("btf_id") == btf_id:
            ns += p.get("run_time_ns", 0)
            cnt += p.get("run_cnt", 0)
    return ns, cnt


# The tracepoint each of our programs runs on, by its name (btf_/raw_ prefixes dropped; sys_* are syscalls:).
PROG_HOOKS = {"block_rq_complete": "block:block_rq_complete", "block_bio_queue": "block:block_bio_queue",
              "block_rq_issue": "block:block_rq_issue", "block_rq_insert": "block:block_rq_insert",
              "io_uring_complete": "io_uring:io_uring_complete", "io_uring_submit_req": "io_uring:io_uring_submit_req",
              "uring_dio_begin": "iomap:iomap_dio_rw_begin", "irq_handler_entry": "irq:irq_handler_entry",
              "sched_switch": "sched:sched_switch", "sys_exit_io_uring_enter_only": "syscalls:sys_exit_io_uring_enter"}


def prog_hook(name):
    """category:event of the tracepoint our program `name` runs on, or None (uprobes, rare hooks)."""
    for pre in ("btf_", "raw_"):
        if name.startswith(pre):
            name = name[len(pre):]
    if name in PROG_HOOKS:
        return PROG_HOOKS[name]
    return "syscalls:" + name if name.startswith(("sys_enter_", "sys_exit_")) else None


class Floor:
    """What the kernel's per-program accounting (kernel.bpf_stats_enabled) adds to each run it measures.

    Empty programs ("twins": two instructions, nothing else) on the tracepoints our programs run on, loaded
    by bpftrace for the length of a run: what the accounting reports for them per run is its own cost (two
    clock reads, interrupts off and on) at that hook, under the same load. Multiplied by the runs of our
    programs there, it is the part of their measured time that is the measuring."""

    def __init__(self, progs_before):
        self.hooks = sorted({h for h in (prog_hook(p.get("name", "")) for p in progs_before) if h})
        self.proc = None
        if self.hooks and shutil.which("bpftrace"):
            self.proc = subprocess.Popen(["bpftrace", "-e", ",".join("tracepoint:" + h for h in self.hooks) + " { }"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(4)  # bpftrace says nothing when it has attached
        self.t0 = self.twins()

    def twins(self):
        names = {h.split(":")[1][:15]: h for h in self.hooks}
        return {names[p["name"]]: (p.get("run_time_ns", 0), p.get("run_cnt", 0)) for p in bpf_progs()
                if p.get("name") in names and p.get("bytes_xlated", 99) <= 16}

    def share_ns(self, ours, per):
        """ours: {prog name: runs}; the accounting's share of their measured time in ns, divided by per (the
        requests, for ns per request; the seconds, for ns per second)."""
        t1 = self.twins()
        per_run = {h: (t1[h][0] - self.t0[h][0]) / max(t1[h][1] - self.t0[h][1], 1) for h in t1 if h in self.t0}
        return sum(runs * per_run.get(prog_hook(name), 0) for name, runs in ours.items()) / per

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=30)


def proc_minflt(pid):
    """Minor page faults of process pid so far (all its threads)."""
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


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


def measure(args, loop, jobs, tracer_cmd, side_cmd=None, floor=False):
    """One fio run; machine system CPU and, when traced, the tracer's own CPU, RSS and output. side_cmd (the
    host agent a guest agent streams to) runs alongside, started first; its CPU is not the tracer's. floor:
    empty twins of the tracer's programs run too (Floor), for the accounting's share of its BPF time."""
    t = side = None
    if side_cmd:
        side = Tracer(side_cmd, ready="listening")
    if tracer_cmd:
        t = Tracer(tracer_cmd, ready="layer aio")
        btf = our_btf_id()
        ours = [p for p in bpf_progs() if p.get("btf_id") == btf]
        fl = Floor(ours) if floor else None
        runs0 = {p["id"]: p.get("run_cnt", 0) for p in ours}
        b0 = bpf_runtime_ns(btf)
        c0 = proc_cpu_ns(t.pid)
    samples = []
    stop_sampling = threading.Event()

    def sample():
        while not stop_sampling.wait(0.25):
            try:
                samples.append(proc_rss_kb(t.pid)[0])
            except OSError:
                break
    th = threading.Thread(target=sample, daemon=True)
    if t:
        th.start()
    c0m = machine_cpu_s()
    t0 = time.time()
    iops = fio(args, loop.dev, jobs, args.runtime)
    dt = time.time() - t0
    c1m = machine_cpu_s()
    res = {"cpu": (c1m - c0m) / dt * 100, "iops": sum(iops.values())}
    if t:
        stop_sampling.set()
        th.join()
        res["own"] = (proc_cpu_ns(t.pid) - c0) / 1e9 / dt * 100
        b1 = bpf_runtime_ns(btf)
        res["bpf"] = (b1[0] - b0[0]) / 1e9 / dt * 100
        if fl:
            runs = {p["name"]: p.get("run_cnt", 0) - runs0[p["id"]] for p in bpf_progs() if p["id"] in runs0}
            # Per second, like the BPF time: the accounting's share of it, in % of one core.
            res["floor"] = fl.share_ns(runs, dt) / 1e9 * 100
            fl.stop()
        res["bpf_runs"] = (b1[1] - b0[1]) / dt
        res["rss_kb"] = max(samples + [proc_rss_kb(t.pid)[0]])
        t.stop()
    if side:
        side.stop()
    return res


def cpu_bench(args, md):
    variants = [("direct", "randread", "randwrite", 1), ("direct", "read", "write", 1),
                ("buffered", "randread", "randwrite", 0), ("buffered", "read", "write", 0)]
    outdir = tempfile.mkdtemp(prefix="iotracer-out-", dir="/dev/shm")
    configs = [("untraced", None),
               ("records", [args.iotracer, "--no-status", "--json", "-o", os.path.join(outdir, "r.json")]),
               ("summary", [args.iotracer, "--no-status", "--summary", "-o", os.path.join(outdir, "s.txt")]),
               # The guest agent as it runs in a VM, streaming every request to a host agent (here over a unix
               # socket, the host only receiving): the guest side of host mode's cost, on a real CPU.
               ("guest", [args.iotracer, "--mode", "guest", "--connect", "unix:" + os.path.join(outdir, "g.sock")]),
               # The same with empty twins of its programs (overhead.Floor): the accounting's share of its BPF time.
               ("guest-floor", [args.iotracer, "--mode", "guest", "--connect",
                                "unix:" + os.path.join(outdir, "g.sock")])]
    if args.compare:
        # Another build (an earlier commit's), interleaved with this one in every repetition.
        configs += [(name + " (compared)", [args.compare] + cmd[1:]) for name, cmd in configs[1:4]]
    host_cmd = [args.iotracer, "--mode", "host", "--no-qemu", "--listen", "unix:" + os.path.join(outdir, "g.sock"),
                "--summary", "-o", os.path.join(outdir, "h.txt")]
    md.append("### CPU overhead at 12,000 read + 250 write IOPS (fio psync, loop device over tmpfs)\n")
    md.append("CPU time of every task on the machine (fio, kernel threads, iotracer, and the BPF programs in "
              "whatever task they run), from the root cpuacct cgroup, in percent of one core; mean ± stdev of "
              "%d interleaved runs of %d s per configuration. *records*: iotracer with every layer on, writing "
              "every request as a JSON line to a file on tmpfs. *summary*: `--summary`, histograms kept in the "
              "kernel. *guest*: `--mode guest`, every request streamed as protobuf to a host agent over a unix "
              "socket (the host agent, only receiving, is not counted). Added = traced minus untraced. The iotracer process's own share (user + system, from "
              "/proc/PID/schedstat) is part of the added time and shown on its own. *guest-floor*: *guest* again, "
              "with empty programs beside each of its tracepoint programs (bench/overhead.py, Floor): the last "
              "column is the part of its BPF time that is the kernel's accounting of it.\n" % (args.reps, args.runtime))
    md.append("The direct measure of iotracer's cost is the **BPF time** (the kernel's own accounting of the "
              "time spent in iotracer's programs, `kernel.bpf_stats_enabled=1`) plus the **iotracer process** "
              "CPU: both are exact, and their sum is the *cost* column. The machine-wide difference is shown "
              "too; on this 2-vCPU VM its run-to-run noise (the ± column) is larger than the cost itself.\n")
    md.append("| I/O | mode | cost (% of one core) | BPF time | iotracer process | BPF runs/s | "
              "machine CPU untraced | machine CPU traced (added) | IOPS untraced / traced | of the BPF time, "
              "the accounting's |")
    md.append("|---|---|---|---|---|---|---|---|---|---|")
    variants = [v for v in variants if not args.variants or "%s-%s" % (v[0], v[1]) in args.variants.split(",")]
    configs = [c for c in configs if c[0] == "untraced" or not args.configs or
               c[0].split(" ")[0] in args.configs.split(",")]
    loop = Loop(256)
    rss = {name: 0 for name, _ in configs}
    m = statistics.mean
    sd = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0
    try:
        for mode, rd, wr, direct in variants:
            jobs = [dict(name="reader", rw=rd, bs="4k", direct=direct, ioengine="psync", rate_iops=12000),
                    dict(name="writer", rw=wr, bs="4k", direct=direct, ioengine="psync", rate_iops=250,
                         offset="128m")]
            res = {name: [] for name, _ in configs}
            for rep in range(args.reps):
                for name, cmd in configs:
                    res[name].append(measure(args, loop, jobs, cmd, host_cmd if name.startswith("guest") else None,
                                             floor=name == "guest-floor"))
            base = [r["cpu"] for r in res["untraced"]]
            for name in [c[0] for c in configs if c[0] != "untraced"]:
                rs = res[name]
                xs = [r["cpu"] for r in rs]
                bpf, own = m([r["bpf"] for r in rs]), m([r["own"] for r in rs])
                rss[name] = max([rss[name]] + [r["rss_kb"] for r in rs])
                md.append("| %s %s | %s | **%.2f** | %.2f | %.2f | %.0f | %.2f ± %.2f | %.2f ± %.2f (%+.2f) | "
                          "%.0f / %.0f | %s |" % (
                              mode, rd, name, bpf + own, bpf, own, m([r["bpf_runs"] for r in rs]), m(base),
                              sd(base), m(xs), sd(xs), m(xs) - m(base), m([r["iops"] for r in res["untraced"]]),
                              m([r["iops"] for r in rs]),
                              "%.2f" % m([r["floor"] for r in rs]) if "floor" in rs[0] else "-"))
                print(md[-1], flush=True)
    finally:
        loop.close()
        shutil.rmtree(outdir, ignore_errors=True)
    md.append("\nPeak resident memory (VmRSS, sampled every 0.25 s) of the iotracer process during these runs: " +
              ", ".join("**%.1f MiB** %s" % (kb / 1024, name) for name, kb in rss.items() if kb) + ".\n")


def iops_bench(args, md):
    md.append("### IOPS retained at the highest rate (fio libaio, 4 KiB random direct reads, iodepth 32, "
              "loop device over tmpfs)\n")
    md.append("Median of %d interleaved runs of %d s per configuration (min–max in brackets): the VM's "
              "run-to-run noise makes a mean of few runs swing either way.\n" % (args.reps, args.runtime))
    md.append("| configuration | median IOPS (min–max) | median ratio to untraced |")
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
        base = statistics.median(results["untraced"])
        for name, xs in results.items():
            if not xs:
                md.append("| %s | not run (missing) | |" % name)
                continue
            md.append("| %s | %.0f (%.0f–%.0f) | %.3f |" % (name, statistics.median(xs), min(xs), max(xs),
                                                        statistics.median(xs) / base))
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
    ap.add_argument("--variants", default="",
                    help="cpu: a subset of direct-randread,direct-read,buffered-randread,buffered-read (a quick "
                    "look; the docs' run uses all four)")
    ap.add_argument("--configs", default="",
                    help="cpu: a subset of records,summary,guest,guest-floor (untraced always runs)")
    ap.add_argument("--compare", metavar="EXE", help="cpu: another iotracer build, its records, summary and guest "
                    "configurations interleaved with this one's in every repetition")
    ap.add_argument("what", nargs="*", default=["cpu", "iops"])
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: needs root (loop devices, BPF)")
    md = []
    uname = os.uname()
    md.append("_Measured %s on %s %s, %d CPUs, by bench/overhead.py._\n" % (
        time.strftime("%Y-%m-%d"), uname.sysname, uname.release, os.cpu_count()))
    if "cpu" in args.what:
        # The kernel accounts time per BPF program only while asked to (it costs a clock read per run).
        with open("/proc/sys/kernel/bpf_stats_enabled") as f:
            stats_was = f.read().strip()
        subprocess.run(["sysctl", "-q", "kernel.bpf_stats_enabled=1"], check=True)
        try:
            cpu_bench(args, md)
        finally:
            subprocess.run(["sysctl", "-q", "kernel.bpf_stats_enabled=" + stats_was])
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
