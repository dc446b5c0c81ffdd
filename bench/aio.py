#!/usr/bin/env python3
"""The async I/O interfaces side by side: aiobench's configurations of docs/aio.md, measured here.

Each configuration runs the three engines (io_uring, libaio, POSIX AIO) at
batch 1024, buffer 1024 B, 16 iterations, registered files and buffers on,
buffered I/O on /var/tmp: once untraced (aiobench's own clock) and once under
`iotracer aio` (the USDT probes and the kernel counters), alternating, for
ROUNDS rounds. Costs are per iteration (the sum of submit, poll and clear
over one pass of all files), the median of the rounds.

usage: aio.py --iotracer EXE --aiobench EXE --out FILE [--rounds R] [--dir DIR]
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ENGINES = ("io_uring", "libaio", "posix")
# Total cost in microseconds of a published run of the same configurations (io_uring, libaio, posix).
PUBLISHED = {
    "2048 files": (1909, 2215, 29338),
    "5120 files": (8588, 10964, 787187),
    "10240 files, SQPOLL": (10391, 13509, 818702),
}
CONFIGS = [
    ("2048 files", ["--files", "2048"]),
    ("5120 files", ["--files", "5120"]),
    ("10240 files, SQPOLL", ["--files", "10240", "--sqpoll"]),
]
RWS = [("writes", ["--rw", "write"]), ("reads", ["--rw", "read"])]
EXTRA = [("2048 files, O_DIRECT, writes", ["--files", "2048", "--direct", "--rw", "write"])]
COMMON = ["--batch", "1024", "--bs", "1024", "--iterations", "16", "--reg-files", "--reg-bufs"]


def lines(text):
    return {o["engine"]: o for o in (json.loads(l) for l in text.splitlines() if l.startswith("{"))}


def untraced(args, extra):
    p = subprocess.run([args.aiobench, "--json", "--dir", args.dir] + COMMON + extra,
                       capture_output=True, text=True, check=True)
    return lines(p.stdout)


def traced(args, extra):
    with tempfile.NamedTemporaryFile("r", suffix=".json") as rep:
        p = subprocess.run([args.iotracer, "aio", "--json", "-o", rep.name, "--", args.aiobench, "--json",
                            "--dir", args.dir] + COMMON + extra, capture_output=True, text=True)
        if p.returncode:
            raise SystemExit("iotracer aio failed: %s" % p.stderr)
        return lines(p.stdout), {o["engine"]: o for o in (json.loads(l) for l in rep if l.strip())}


def med(xs):
    return statistics.median(xs) if xs else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iotracer", required=True)
    ap.add_argument("--aiobench", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default="/var/tmp")
    args = ap.parse_args()

    out = ["# aiobench under iotracer aio: this machine's run", "",
           "Written by `bench/aio.py` (`meson compile -C build bench-aio`) on %s, kernel %s, %d CPUs; "
           "files on %s. Median of %d rounds; docs/aio.md explains." %
           (time.strftime("%Y-%m-%d"), platform.release(), os.cpu_count(), args.dir, args.rounds), "",
           "Common: batch 1024, buffer 1024 B, 16 iterations, registered files and buffers (io_uring), "
           "buffered unless said. Costs are µs per iteration (submit + poll + clear over one pass of all "
           "files).", ""]
    runs = [("%s, %s" % (n, rw), e + re, n) for rw, re in RWS for n, e in CONFIGS] + [(n, e, None) for n, e in EXTRA]
    for name, extra, pubkey in runs:
        own, ext, rep = {e: [] for e in ENGINES}, {e: [] for e in ENGINES}, {e: [] for e in ENGINES}
        under = {e: [] for e in ENGINES}
        for _ in range(args.rounds):
            u = untraced(args, extra)
            b, r = traced(args, extra)
            for e in ENGINES:
                own[e].append(u[e]["total_ns"] / u[e]["iterations"] / 1e3)
                under[e].append(b[e]["total_ns"] / b[e]["iterations"] / 1e3)
                ext[e].append(r[e]["total_ns"] / r[e]["iterations"] / r[e]["runs"] / 1e3)
                rep[e].append(r[e])
        pub = PUBLISHED.get(pubkey)
        out += ["## %s" % name, "",
                "| engine | total cost (µs), iotracer | submit | poll | clear | untraced, aiobench's clock | "
                "traced / untraced | published |",
                "|---|---|---|---|---|---|---|---|"]
        for i, e in enumerate(ENGINES):
            last = rep[e][-1]
            shares = [med([r[k + "_share"] for r in rep[e]]) for k in ("submit", "poll", "clear")]
            out.append("| %s | %.0f | %.2f | %.2f | %.2f | %.0f | %.2f | %s |" % (
                e, med(ext[e]), shares[0], shares[1], shares[2], med(own[e]), med(under[e]) / med(own[e]),
                "%d" % pub[i] if pub else "—"))
        out += ["", "Kernel side (last round):", ""]
        for e in ENGINES:
            r = rep[e][-1]
            ios = r["ios"]
            sc = sorted(r["syscall_counts"].items(), key=lambda kv: -kv[1])[:4]
            detail = ""
            if e == "io_uring":
                u = r["uring"]
                detail = "%d requests: %d punted to io-wq, %d armed a poll, %d submitted by the SQPOLL thread; " % (
                    u["submitted"], u["punted"], u["poll_armed"], u["sq_thread"])
            elif e == "libaio":
                a = r["aio"]
                detail = "%d iocbs, %.2f µs each inside io_submit; " % (a["iocbs"], a["submit_ns"] / 1e3 / max(1, a["iocbs"]))
            out.append("- %s: %s%.4f system calls per I/O (%s)" % (
                e, detail, r["syscalls"] / max(1, ios), ", ".join("%s %d" % kv for kv in sc)))
        out.append("")
        print("done: %s" % name, flush=True)
    with open(args.out, "w") as f:
        f.write("\n".join(out) + "\n")
    print("wrote %s" % args.out)


if __name__ == "__main__":
    sys.exit(main())
