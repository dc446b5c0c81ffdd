#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""
`iotracer aio` against real aiobench runs: the report's per-phase call
counts equal the calls aiobench says it made, its shares add up to its
total, and the kernel side counted the requests, iocbs and system calls the
engines really made. aiobench itself checks every byte it read or wrote.

Usage: aio_test.py --iotracer PATH --iowork PATH --aiobench PATH CASE
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import trace_test as tt  # noqa: E402
from trace_test import Fail, check  # noqa: E402

SMALL = ["--files", "300", "--batch", "64", "--iterations", "3"]


def bench_lines(text):
    return {(o["engine"], o["sqpoll"]): o for o in (json.loads(l) for l in text.splitlines() if l.startswith("{"))}


def report_lines(path):
    with open(path) as f:
        return {(o["engine"], o["sqpoll"]): o for o in (json.loads(l) for l in f if l.strip())}


def launched(args, bench_args, timeout=300):
    """iotracer aio -- aiobench ...: (aiobench's JSON by engine, iotracer's report by engine)."""
    d = tempfile.mkdtemp(prefix="iotracer-aio-")
    out = os.path.join(d, "report.json")
    try:
        p = subprocess.run([args.iotracer, "aio", "--json", "-o", out, "--", args.aiobench, "--json"] + bench_args,
                           capture_output=True, text=True, timeout=timeout)
        check(p.returncode == 0, "iotracer aio exited %d: %s" % (p.returncode, p.stderr))
        return bench_lines(p.stdout), report_lines(out)
    finally:
        subprocess.run(["rm", "-rf", d])


def check_run(b, r, engine):
    """One engine's report against aiobench's own account of the same run."""
    what = "%s%s" % (engine, " sqpoll" if b["sqpoll"] else "")
    ios = b["ios"]
    check(b["verified_bytes"] > 0, "%s: aiobench verified nothing: %s" % (what, b))
    check(r["runs"] == 1 and r["ios"] == ios, "%s: report saw %d runs, %d I/Os; aiobench made %d" %
          (what, r["runs"], r["ios"], ios))
    for ph in ("submit", "poll", "clear"):
        check(r[ph + "_calls"] == b[ph + "_calls"], "%s: %d %s calls reported, aiobench made %d" %
              (what, r[ph + "_calls"], ph, b[ph + "_calls"]))
        check(r[ph + "_items"] == ios, "%s: %s probes counted %d operations, aiobench did %d" %
              (what, ph, r[ph + "_items"], ios))
    check(r["unpaired"] == 0, "%s: %d phase ends without a start" % (what, r["unpaired"]))
    check(r["submit_ns"] + r["poll_ns"] + r["clear_ns"] == r["total_ns"], "%s: phases do not add up to the total" % what)
    shares = r["submit_share"] + r["poll_share"] + r["clear_share"]
    check(abs(shares - 1) < 1e-5, "%s: shares add up to %f" % (what, shares))
    # The probes' own times bracket aiobench's clock reads: within the uprobe cost of each other.
    check(r["total_ns"] >= b["total_ns"] * 0.5 and r["total_ns"] <= b["total_ns"] * 3 + 5e6,
          "%s: %d ns measured from outside, %d inside" % (what, r["total_ns"], b["total_ns"]))
    sc = r["syscall_counts"]
    if engine == "io_uring":
        u = r["uring"]
        check(u["submitted"] == ios and u["completed"] == ios, "%s: %d io_uring requests submitted, %d completed; "
              "aiobench made %d" % (what, u["submitted"], u["completed"], ios))
        if b["sqpoll"]:
            check(u["sq_thread"] == ios, "%s: only %d of %d requests submitted by the SQPOLL thread" %
                  (what, u["sq_thread"], ios))
        else:
            check(u["sq_thread"] == 0, "%s: %d requests from an SQPOLL thread that is off" % (what, u["sq_thread"]))
            check(sc.get("io_uring_enter", 0) >= b["submit_calls"], "%s: %s io_uring_enter for %d submits" %
                  (what, sc.get("io_uring_enter"), b["submit_calls"]))
    elif engine == "libaio":
        a = r["aio"]
        check(a["iocbs"] == ios and a["events"] == ios, "%s: %d iocbs, %d events for %d I/Os" %
              (what, a["iocbs"], a["events"], ios))
        check(sc.get("io_submit", 0) == b["submit_calls"], "%s: %s io_submit calls for %d submits" %
              (what, sc.get("io_submit"), b["submit_calls"]))
    else:
        # glibc's helper threads do each request as a plain pread/pwrite.
        rw = sc.get("pread64", 0) + sc.get("pwrite64", 0)
        check(rw == ios, "%s: %d pread64/pwrite64 calls for %d POSIX AIO requests" % (what, rw, ios))
    check(r["syscalls"] == sum(sc.values()), "%s: syscall total and its breakdown differ" % what)


def case_launch(args):
    """All three engines, buffered mixed reads and writes, registered files and buffers."""
    b, r = launched(args, SMALL + ["--rw", "mix", "--reg-files", "--reg-bufs"])
    for engine in ("io_uring", "libaio", "posix"):
        check((engine, False) in b and (engine, False) in r, "%s missing: aiobench %s, report %s" %
              (engine, sorted(b), sorted(r)))
        check_run(b[(engine, False)], r[(engine, False)], engine)
        check(r[(engine, False)]["reg_files"] == (engine == "io_uring"), "registered files flag wrong")
    print("io_uring %.0f us, libaio %.0f us, posix %.0f us" %
          tuple(r[(e, False)]["total_ns"] / 1e3 for e in ("io_uring", "libaio", "posix")))


def case_direct_sqpoll(args):
    """O_DIRECT, and io_uring with SQPOLL: the submissions come from the kernel's thread."""
    b, r = launched(args, SMALL + ["--direct", "--rw", "read"])
    for engine in ("io_uring", "libaio", "posix"):
        check(r[(engine, False)]["direct"], "%s: not reported as O_DIRECT" % engine)
        check_run(b[(engine, False)], r[(engine, False)], engine)
    b, r = launched(args, SMALL + ["--engine", "io_uring", "--sqpoll", "--reg-files"])
    check_run(b[("io_uring", True)], r[("io_uring", True)], "io_uring")


def case_pid(args):
    """Attach to a running aiobench that waits for us."""
    d = tempfile.mkdtemp(prefix="iotracer-aio-")
    out = os.path.join(d, "report.json")
    bench = subprocess.Popen([args.aiobench, "--json", "--wait-attach", "--engine", "libaio,posix"] + SMALL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = bench.stderr.readline()
        m = re.search(r"pid (\d+)", line)
        check(m, "aiobench --wait-attach said: %r" % line)
        t = subprocess.run([args.iotracer, "aio", "--json", "-o", out, "--pid", m.group(1)],
                           capture_output=True, text=True, timeout=300)
        check(t.returncode == 0, "iotracer aio --pid exited %d: %s" % (t.returncode, t.stderr))
        stdout, _ = bench.communicate(timeout=60)
        check(bench.returncode == 0, "aiobench exited %d" % bench.returncode)
        b, r = bench_lines(stdout), report_lines(out)
        for engine in ("libaio", "posix"):
            check_run(b[(engine, False)], r[(engine, False)], engine)
        check(("io_uring", False) not in r, "a report for an engine that did not run")
    finally:
        if bench.poll() is None:
            bench.kill()
        subprocess.run(["rm", "-rf", d])


def case_cli(args):
    """Wrong use gets a clear error, and a non-aiobench target is refused."""
    def run(argv, want_rc, want_text):
        p = subprocess.run([args.iotracer] + argv, capture_output=True, text=True, timeout=60)
        check(p.returncode == want_rc, "%s: exit %d, want %d (%s)" % (argv, p.returncode, want_rc, p.stderr))
        check(want_text in p.stderr + p.stdout, "%s: no %r in %r" % (argv, want_text, p.stderr))

    run(["aio"], 2, "either --pid PID or -- COMMAND")
    run(["aio", "--pid", "1", "--", "true"], 2, "either --pid PID or -- COMMAND")
    run(["aio", "--pid", "x"], 2, "not a process id")
    run(["--mode", "aio", "--help"], 0, "Usage: iotracer aio")
    run(["-j", "--mode", "aio"], 2, "comes first")
    run(["aio", "--", "/nonexistent/aiobench"], 1, "cannot find")
    # A program without aiobench's probes: refused, and not left running.
    run(["aio", "--", "true"], 1, "no aiobench:run_start probe")
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        run(["aio", "--pid", str(sleeper.pid)], 1, "no aiobench:run_start probe")
        check(sleeper.poll() is None, "the refused process was signalled")
    finally:
        sleeper.kill()
    run(["aio", "--pid", "999999999"], 1, "no such process")


def main():
    return tt.run_cases({n[5:]: f for n, f in globals().items() if n.startswith("case_")}, ["--aiobench"])


if __name__ == "__main__":
    sys.exit(main())
