#!/usr/bin/env python3
"""Benchmark of host mode: what tracing a VM from both sides costs it.

A qemu-test guest gets two disks: vda on QEMU's null-co driver (no host
I/O: QEMU's and the guest's own cost only) and vdb a raw image under
aio=io_uring, cache=none (the host kernel path too). A control port lets
this script drive the guest: fio 4 KiB random direct reads, iodepth 16,
with no tracing ("off"), then with the guest agent streaming to a host agent
that traces the QEMU process and the host kernel beneath it ("on"),
alternating, in the same run.

Reported per disk, medians over the rounds: guest IOPS on/off; host CPU
per guest request (all QEMU threads, the guest agent's work inside the
guest included, plus the host agent), on minus off, and what that adds at
12,000 requests/s in % of one core; uprobe hits per request; requests
matched; the host agent's resident memory. Results as Markdown.

usage: host.py --iotracer EXE --iowork EXE --build BUILD_DIR --out FILE [--rounds N] [--seconds S]
               [--qemu NAME=PATH ...] [--compare EXE] [--modes ...] [--disks ...]
"""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "qemu-test"))
sys.path.insert(0, HERE)
from qtest import build_guest  # noqa: E402
from overhead import Floor, bpf_progs, proc_cpu_ns, proc_minflt, proc_rss_kb  # noqa: E402


def max_prog_id():
    return max([p["id"] for p in bpf_progs()] + [0])


def bpf_ns_of(ids):
    """Kernel time so far in the BPF programs of these ids, i.e. the host agent's (kernel.bpf_stats_enabled=1)."""
    return sum(p.get("run_time_ns", 0) for p in bpf_progs() if p["id"] in ids)

GUEST = r"""
exec 3<>/dev/virtio-ports/org.iotracer.ctl
gp=
while read -r cmd a b <&3; do
  case $cmd in
  agent-start)
    iotracer --mode guest --connect serial:/dev/virtio-ports/org.iotracer.0 --no-status --json \
      --dev /dev/$a > /tmp/g.json 2>/tmp/g.err &
    gp=$!
    i=0; while ! grep -q '"event":"ready"' /tmp/g.json; do i=$((i+1)); [ $i -gt 600 ] && break; sleep 0.1; done
    echo ready >&3 ;;
  agent-stop)
    kill -INT $gp; wait $gp; echo "stopped $(grep guest_stats /tmp/g.json)" >&3 ;;
  fio)
    fio --name=r --filename=/dev/$a --rw=randread --bs=4k --direct=1 --ioengine=libaio --iodepth=16 \
      --runtime=$b --time_based --size=256M --output-format=json 2>/dev/null | tr -d '\n' >&3
    echo >&3 ;;
  serials) for d in /sys/block/vd*; do printf '%s=%s ' ${d##*/} $(cat $d/serial); done >&3; echo >&3 ;;
  quit) echo bye >&3; exit 0 ;;
  esac
done
"""


class Ctl:
    def __init__(self, path):
        deadline = time.time() + 120
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit("no control socket from the guest")
                time.sleep(0.2)
        self.f = self.s.makefile("rw")

    def cmd(self, line, timeout=300):
        self.s.settimeout(timeout)
        self.f.write(line + "\n")
        self.f.flush()
        return self.f.readline().strip()


def qemu_pid_of(sock):
    # Other processes name the socket too (run-guest.sh's helpers), some gone by the time they are looked at.
    deadline = time.time() + 60
    while time.time() < deadline:
        for p in subprocess.run(["pgrep", "-f", sock], capture_output=True, text=True).stdout.split():
            try:
                if os.readlink("/proc/%s/exe" % p).split("/")[-1].startswith("qemu-system"):
                    return int(p)
            except OSError:
                continue
        time.sleep(0.5)
    raise SystemExit("QEMU not found")


def fio_run(ctl, disk, seconds):
    r = json.loads(ctl.cmd("fio %s %d" % (disk, seconds)))
    job = r["jobs"][0]["read"]
    return job["iops"], job["total_ios"]


def start_host(exe, qpid, data, hout, summary=False, kernel=False):
    host = subprocess.Popen([exe, "--mode", "host", "--qemu-pid", str(qpid), "--listen", "serial:" + data,
                             "--json", "-o", hout] + (["--summary"] if summary else []) +
                            (["--qemu-route", "kernel"] if kernel else []), stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (os.path.exists(hout) and '"listening"' in open(hout).read()):
        if time.time() > deadline or host.poll() is not None:
            raise SystemExit("host agent did not start: %s" % host.stderr.read())
        time.sleep(0.1)
    return host


def one_run(args, ctl, qpid, data, tmp, disk, mode, exe):
    """One fio run in a mode: off, host (host agent only), both (guest agent streaming to it), summary (both,
    the host keeping histograms only), kernel (summary on the kernel route: --qemu-route kernel), khost (host on
    the kernel route)."""
    host = None
    hout = os.path.join(tmp, "host.json")
    if os.path.exists(hout):
        os.unlink(hout)
    base_id = max_prog_id()
    joined = mode in ("both", "summary", "kernel")
    if mode != "off":
        host = start_host(exe, qpid, data, hout, summary=mode in ("summary", "kernel"),
                          kernel=mode in ("kernel", "khost"))
    try:
        return measure_run(args, ctl, qpid, disk, mode, host, hout, base_id, joined)
    finally:
        # A run that fails (the guest stops answering) must not leave its host agent tracing.
        if host and host.poll() is None:
            host.kill()
            host.wait()


def measure_run(args, ctl, qpid, disk, mode, host, hout, base_id, joined):
    if joined and ctl.cmd("agent-start " + disk) != "ready":
        raise SystemExit("guest agent did not connect")
    rss = []
    stop = threading.Event()

    def sample():
        while host and not stop.wait(0.2):
            rss.append(proc_rss_kb(host.pid)[0])
    st = threading.Thread(target=sample, daemon=True)
    st.start()
    q0 = proc_cpu_ns(qpid)
    h0 = proc_cpu_ns(host.pid) if host else 0
    f0 = proc_minflt(host.pid) if host else 0
    ours_ids = {p["id"] for p in bpf_progs() if p["id"] > base_id}
    b0 = bpf_ns_of(ours_ids) if host else 0
    # mode floor: host tracing with empty twins of our tracepoint programs, for the accounting's own cost.
    floor = Floor([p for p in bpf_progs() if p["id"] > base_id]) if mode == "floor" else None
    runs0 = {p["id"]: p.get("run_cnt", 0) for p in bpf_progs() if p["id"] > base_id} if floor else None
    # IOTRACER_PROGSTATS=1: which BPF programs the time goes to (per request, printed).
    p0 = {p["id"]: (p.get("name"), p.get("run_time_ns", 0), p.get("run_cnt", 0)) for p in bpf_progs()
          if p["id"] > base_id} if host and os.environ.get("IOTRACER_PROGSTATS") else None
    perf = None
    if host and joined and os.environ.get("IOTRACER_PERF"):
        # IOTRACER_PERF_DWARF=1: call graphs from DWARF (the build has no frame pointers).
        cg = ["--call-graph", "dwarf,16384"] if os.environ.get("IOTRACER_PERF_DWARF") else ["-g"]
        perf = subprocess.Popen(["perf", "record", "-q"] + cg + ["-p", str(host.pid), "-o",
                                 "%s.%s" % (os.environ["IOTRACER_PERF"], disk)], stderr=subprocess.DEVNULL)
    iops, ios = fio_run(ctl, disk, args.seconds)
    if floor:
        ours = {p["name"]: p.get("run_cnt", 0) - runs0[p["id"]] for p in bpf_progs() if p["id"] in runs0}
        floor_ns = floor.share_ns(ours, ios)
        floor.stop()
    if perf:
        perf.send_signal(signal.SIGINT)
        perf.wait()
    res = {"iops": iops, "qemu_us": (proc_cpu_ns(qpid) - q0) / ios / 1e3}
    if p0 is not None:
        rows = []
        for p in bpf_progs():
            if p["id"] in p0:
                name, ns, cnt = p0[p["id"]]
                rows.append((p.get("run_time_ns", 0) - ns, p.get("run_cnt", 0) - cnt, name))
        for ns, cnt, name in sorted(rows, reverse=True)[:12]:
            print("  %-32s %7.3f us/request  %6.2f runs/request" % (name, ns / ios / 1e3, cnt / ios), flush=True)
    if host:
        res["agent_us"] = (proc_cpu_ns(host.pid) - h0) / ios / 1e3
        # Page faults of the agent per request: a window first touched mid-run costs here.
        res["agent_faults"] = (proc_minflt(host.pid) - f0) / ios
        res["bpf_us"] = (bpf_ns_of(ours_ids) - b0) / ios / 1e3
        if floor:
            res["floor_us"] = floor_ns / 1e3
    stop.set()
    st.join()
    if joined:
        # The guest agent's own counts: what it traced, sent, and lost before the host saw it.
        print("  guest agent: " + ctl.cmd("agent-stop").replace("stopped ", "", 1), flush=True)
        time.sleep(1.5)
    if host:
        host.send_signal(signal.SIGINT)
        host.wait(timeout=60)
        corr = [json.loads(l) for l in open(hout) if '"type":"correlation"' in l]
        c = corr[-1] if corr else {}
        # IOTRACER_KEEP=DIR: the host agent's output of a run that left guest records unmatched, to look at.
        unmatched = sum(c.get(k, 0) for k in ("no_qemu_request", "key_disagrees", "no_vm", "hold_full"))
        if unmatched and os.environ.get("IOTRACER_KEEP"):
            keep = os.path.join(os.environ["IOTRACER_KEEP"], "host-%s-%s-%d.json" % (disk, mode, time.time()))
            subprocess.run(["cp", hout, keep])
            print("  %d guest records unmatched: the host agent's output is in %s" % (unmatched, keep), flush=True)
        # Every outcome and loss counter of the join, for a run that did not match everything.
        print("  correlation: " + ", ".join("%s %s" % (k, v) for k, v in sorted(c.items())
                                            if k != "type" and v not in (0, None, "")), flush=True)
        res["hits"] = c.get("uprobe_hits", 0) / max(c.get("qemu_requests", 1), 1)
        res["matched"] = c.get("gpa", 0)
        res["guest_reqs"] = sum(c.get(k, 0) for k in ("gpa", "sector", "no_qemu_request", "key_disagrees", "no_vm",
                                                       "hold_full"))
        res["with_host_io"] = c.get("with_host_io", 0)
        res["qemu_reqs"] = c.get("qemu_requests", 0)
        res["rss_kib"] = max(rss) if rss else 0
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iotracer", required=True)
    ap.add_argument("--iowork", required=True)
    ap.add_argument("--build", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--modes", default="off,host,both,summary,floor",
                    help="a subset of off,host,both,summary,floor,khost,kernel (for a quick look; the docs' run "
                    "uses the first five; khost and kernel are host and summary on --qemu-route kernel, and need "
                    "--disks without null0)")
    ap.add_argument("--disks", default="null0,image0", help="a subset of null0 (null-co), image0 (raw image, "
                    "aio=io_uring), native0 (raw image, aio=native); the guest has only the disks named (a VM with a "
                    "null-co disk is not on the kernel route)")
    ap.add_argument("--qemu", action="append", metavar="NAME=PATH",
                    help="a QEMU binary to run the guest under (repeatable: each its own guest, booted together, "
                    "runs interleaved in every round; default the installed one). qemu-test/build-qemu-usdt.sh "
                    "[--nop5] builds ones with USDT probes")
    ap.add_argument("--compare", metavar="EXE",
                    help="another iotracer build (an earlier commit's) as the host agent too, alternating with "
                    "--iotracer in every round: host CPU per request of the two in the same run (the guest agent "
                    "is --iotracer's in both)")
    args = ap.parse_args()
    labels = [d for d in ("null0", "image0", "native0") if d in args.disks.split(",")]
    if not labels or len(labels) != len(args.disks.split(",")):
        ap.error("--disks: a comma-separated subset of null0,image0,native0")
    modes = tuple(m for m in ("off", "host", "both", "summary", "floor", "khost", "kernel")
                  if m in args.modes.split(","))
    if not modes or len(modes) != len(args.modes.split(",")):
        ap.error("--modes: a comma-separated subset of off,host,both,summary,floor,khost,kernel")
    if ("kernel" in modes or "khost" in modes) and "null0" in labels:
        ap.error("--modes kernel, khost: the kernel route takes a VM whose drives are raw images under io_uring or "
                 "native only: --disks without null0")
    tracers = [("", args.iotracer)] + ([(" (compared)", args.compare)] if args.compare else [])
    # --qemu NAME=PATH (repeatable): each its own guest, all booted at once, runs interleaved in every round.
    qemus = []
    for q in args.qemu or ["installed="]:
        name, _, path = q.partition("=")
        if not name or (path and not os.access(path, os.X_OK)):
            ap.error("--qemu NAME=PATH: %s" % q)
        qemus.append((name, path))
    err = build_guest(args.build, args.iotracer, args.iowork)
    if err:
        raise SystemExit(err)
    with open("/proc/sys/kernel/bpf_stats_enabled") as f:
        stats_was = f.read().strip()
    subprocess.run(["sysctl", "-q", "kernel.bpf_stats_enabled=1"], check=True)
    tmp = tempfile.mkdtemp(prefix="iotracer-bench-host-", dir="/var/tmp")
    guests = []
    for gi, (qname, qpath) in enumerate(qemus):
        g = {"name": qname, "data": os.path.join(tmp, "data%d.sock" % gi), "ctlp": os.path.join(tmp, "ctl%d.sock" % gi)}
        img = os.path.join(tmp, "disk%d.raw" % gi)
        nimg = os.path.join(tmp, "native%d.raw" % gi)
        for path, label in ((img, "image0"), (nimg, "native0")):
            if label in labels:
                subprocess.run(["dd", "if=/dev/zero", "of=" + path, "bs=1M", "count=256", "conv=fsync",
                                "status=none"], check=True)
        # loglevel and all-CPU backtraces: a guest that locks up (seen twice in this benchmark, never in a test)
        # leaves its stacks in the console log (build/qemu-test/logs/last-console.log).
        cmd = [os.path.join(HERE, "..", "qemu-test", "run-guest.sh"), "--build-dir", args.build, "--timeout", "6000",
               "--append", "loglevel=7 softlockup_all_cpu_backtrace=1",
               "--serial-socket", g["data"] + ",name=org.iotracer.0",
               "--serial-socket", g["ctlp"] + ",name=org.iotracer.ctl"]
        if "null0" in labels:
            cmd += ["--qemu-arg=-blockdev", "--qemu-arg=driver=null-co,node-name=null0,size=1073741824,read-zeroes=on",
                    "--qemu-arg=-device", "--qemu-arg=virtio-blk-pci,drive=null0,serial=null0"]
        if "image0" in labels:
            cmd += ["--disk", img + ",format=raw,if=virtio,aio=io_uring,cache=none,serial=image0"]
        if "native0" in labels:
            cmd += ["--disk", nimg + ",format=raw,if=virtio,aio=native,cache=none,serial=native0"]
        cmd += ["--qemu", qpath] if qpath else []
        # The guest's console goes to a file: when the guest stops answering, its last words are the clue.
        g["console_path"] = os.path.join("/var/tmp", "iotracer-bench-host-console%s.log" % (gi or ""))
        g["console"] = open(g["console_path"], "w")
        g["proc"] = subprocess.Popen(cmd + ["--", GUEST], stdout=g["console"], stderr=subprocess.STDOUT, text=True)
        guests.append(g)
    res = {}
    g = guests[0]
    try:
        for g in guests:
            g["ctl"] = Ctl(g["ctlp"])
            g["qpid"] = qemu_pid_of(g["ctlp"])
            serials = dict(kv.split("=") for kv in g["ctl"].cmd("serials").split())
            g["disks"] = {serials[d]: d for d in serials}
        for rnd in range(args.rounds):
            for g in guests:
                for label in labels:
                    for mode in modes:
                        for tag, exe in tracers if mode != "off" else tracers[:1]:
                            r = one_run(args, g["ctl"], g["qpid"], g["data"], tmp, g["disks"][label], mode, exe)
                            res.setdefault((g["name"], label, mode + tag), []).append(r)
                            print(g["name"], label, mode + tag, rnd, json.dumps({k: round(v, 2) for k, v in r.items()}),
                                  flush=True)
        for g in guests:
            g["ctl"].cmd("quit", timeout=30)
    except (OSError, SystemExit) as e:
        g["console"].flush()
        with open(g["console_path"]) as f:
            tail = f.read()[-4000:]
        raise SystemExit("the guest of QEMU %s stopped answering (%s); run-guest.sh's output (%s) ends:\n%s\n"
                         "and the guest's console is in build/qemu-test/logs/" % (g["name"], e, g["console_path"], tail))
    finally:
        subprocess.run(["sysctl", "-q", "kernel.bpf_stats_enabled=" + stats_was])
        for g in guests:
            if g["proc"].poll() is None:
                g["proc"].kill()
            g["console"].close()
        subprocess.run(["rm", "-rf", tmp])

    def med(qname, label, mode, key):
        vals = [r[key] for r in res[(qname, label, mode)] if key in r]
        return statistics.median(vals) if vals else 0.0

    lines = ["# Host mode benchmark run", "",
             "Written by `bench/host.py` on %s, %s, %d CPUs, QEMU under TCG. %d rounds of %d s per disk and mode, "
             "modes interleaved; medians. Explained in docs/benchmarks.md." % (
                 time.strftime("%Y-%m-%d %H:%M"), os.uname().release, os.cpu_count(), args.rounds, args.seconds), "",
             "Modes: off (nothing traced), host (the host agent traces QEMU and the host kernel beneath it), both "
             "(and the guest agent streams every request to it, which the host joins and writes as JSON lines), summary "
             "(the same, the host keeping only the per-segment histograms: `--summary`), floor (as host, with empty "
             "programs beside ours on the same tracepoints: the per-program accounting's own cost, in the last "
             "column; the qemu layer's uprobe program has no twin), khost and kernel (as host and summary, on "
             "`--qemu-route kernel`: no probe in QEMU, QEMU's requests read at the host kernel's io_uring "
             "submissions).", ""]
    if len(qemus) > 1 or qemus[0][1]:
        lines += ["QEMU builds, each its own guest, all running, their runs interleaved in every round: " +
                  "; ".join("%s `%s`" % (n, p or "(the installed one)") for n, p in qemus) + ".", ""]
    lines += [
             "| disk | mode | guest IOPS | vs off | QEMU CPU per request (us) | host agent CPU per request (us) | "
             "BPF per request (us) | probe hits per request (uprobes and USDT) | matched (gpa) of guest records | QEMU requests | "
             "with host I/O | host agent RSS | of the BPF time, the accounting's (us) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (qname, _), (label, name) in [(q, d) for q in qemus
                                      for d in (("null0", "null-co"), ("image0", "raw image, aio=io_uring, cache=none"),
                                                ("native0", "raw image, aio=native, cache=none"))]:
        if label not in labels:
            continue
        if len(qemus) > 1:
            name = "%s, QEMU %s" % (name, qname)
        off = med(qname, label, "off", "iops") if "off" in modes else 0.0
        for mode in [m + t for m in modes for t, _ in (tracers if m != "off" else tracers[:1])]:
            rs = res[(qname, label, mode)]
            matched = sum(r.get("matched", 0) for r in rs)
            total = sum(r.get("guest_reqs", 0) for r in rs)
            joined = mode.split(" ")[0] in ("both", "summary", "kernel")
            lines.append("| %s | %s | %.0f | %.3f | %.1f | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                name, mode, med(qname, label, mode, "iops"), med(qname, label, mode, "iops") / off if off else 0.0, med(qname, label, mode, "qemu_us"),
                "%.2f" % med(qname, label, mode, "agent_us") if mode != "off" else "-",
                "%.2f" % med(qname, label, mode, "bpf_us") if mode != "off" else "-",
                "%.2f" % med(qname, label, mode, "hits") if mode != "off" else "-",
                "%d of %d" % (matched, total) if joined else "-",
                # Fewer guest records than QEMU requests: the guest agent lost some (its line in the log says).
                "%d" % sum(r.get("qemu_reqs", 0) for r in rs) if joined else "-",
                "%d" % sum(r.get("with_host_io", 0) for r in rs) if joined else "-",
                "%.1f MiB" % (max(r.get("rss_kib", 0) for r in rs) / 1024) if mode != "off" else "-",
                "%.2f" % med(qname, label, mode, "floor_us") if mode.startswith("floor") else "-"))
    if args.compare:
        lines += ["", "Compared: `%s` against `%s` (compared), in the same run. Host CPU per request (BPF and host "
                  "agent), this build over the compared one, per round (each round runs both, one after the "
                  "other):" % (args.iotracer, args.compare), ""]
        for qname, _ in qemus:
            for label in labels:
                for mode in [m for m in modes if m != "off"]:
                    a, b = res[(qname, label, mode)], res[(qname, label, mode + " (compared)")]
                    ratios = ["%.2f" % ((x["bpf_us"] + x["agent_us"]) / (y["bpf_us"] + y["agent_us"]))
                              for x, y in zip(a, b)]
                    lines.append("- %s%s, %s: %s" % (label, ", QEMU " + qname if len(qemus) > 1 else "", mode,
                                                     ", ".join(ratios)))
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
