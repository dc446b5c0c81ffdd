#!/usr/bin/env python3
"""Integration tests of the guest and host agents on this machine.

Real guest agents (real BPF programs, each filtered on its own workload)
stream to a real host agent over unix sockets; the host agent is killed
and restarted mid-stream; hostile peers (bench/guestgen) send what a broken
or malicious guest could. Each case holds the host's output against what
the workloads issued, request by request. Exit 0 pass, 1 fail, 77 skip.
"""
import argparse
import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from trace_test import (SKIP, Fail, Skip, check, finish_workload, json_lines, kdev_of,  # noqa: E402
                        loop_device, same_requests, start_workload)


class Agent:
    """An iotracer process with --json output read by a thread."""

    def __init__(self, exe, args, name):
        self.name = name
        self.lines = []
        self.errf = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([exe, "--json"] + args, stdout=subprocess.PIPE, stderr=self.errf,
                                     text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def stderr(self):
        self.errf.seek(0)
        return self.errf.read()

    def objects(self):
        return json_lines(self.lines, self.name)

    def events(self, **match):
        return [o for o in self.objects() if all(o.get(k) == v for k, v in match.items())]

    def wait_for(self, what, pred, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if pred():
                return
            if self.proc.poll() is not None:
                raise Fail("%s exited (%d) waiting for %s:\n%s" % (self.name, self.proc.returncode, what,
                                                                  self.stderr()))
            time.sleep(0.05)
        raise Fail("%s: no %s within %d s:\n%s" % (self.name, what, timeout, self.stderr()))

    def stop(self, sig=signal.SIGINT, want_rc=0):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise Fail("%s did not stop on signal %d" % (self.name, sig))
        self.reader.join(timeout=10)
        if want_rc is not None:
            check(rc == want_rc, "%s exited %d, not %d:\n%s" % (self.name, rc, want_rc, self.stderr()))
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()



def scratch_dir():
    """A temporary directory for sockets and files, removed when the test ends, whatever the outcome."""
    d = tempfile.mkdtemp(prefix="iotracer-chan-")
    atexit.register(shutil.rmtree, d, True)
    return d

def host_agent(exe, sock, name="host"):
    h = Agent(exe, ["--mode", "host", "--no-qemu", "--listen", "unix:" + sock], name)
    h.wait_for("listening line", lambda: h.events(type="listening"), 10)
    return h


def guest_agent(exe, sock, extra, name="guest", ready=True):
    g = Agent(exe, ["--mode", "guest", "--connect", "unix:" + sock, "--no-status"] + extra, name)
    g.wait_for("layer lines", lambda: len(g.events(type="layer")) >= 10)
    if ready:
        g.wait_for("connection to the host", lambda: g.events(type="link", event="ready"), 10)
    return g


def guest_stats(g):
    s = g.events(type="guest_stats")
    check(len(s) == 1, "%s printed %d guest_stats objects" % (g.name, len(s)))
    return s[0]


def io_records(host, guest_id=None, dev=None):
    recs = [o for o in host.events(type="io") if o.get("kind") == "syscall" and
            o.get("syscall") in ("pread64", "pwrite64")]
    if guest_id is not None:
        recs = [r for r in recs if r["guest"] == guest_id]
    if dev is not None:
        recs = [r for r in recs if r["dev"] == dev]
    return recs


def cleanup(*agents):
    for a in agents:
        if a:
            a.kill()


# ---------------------------------------------------------------- cases

def case_two_guests(args):
    """Two guest agents on one host: each guest's requests, and only its own, on the host's clock."""
    d = scratch_dir()
    sock = os.path.join(d, "host.sock")
    h = g1 = g2 = None
    with loop_device() as (dev1, _), loop_device() as (dev2, _):
        w1, pid1 = start_workload(args.iowork, "direct", dev1, 16)
        w2, pid2 = start_workload(args.iowork, "direct", dev2, 16)
        try:
            h = host_agent(args.iotracer, sock)
            g1 = guest_agent(args.iotracer, sock, ["--pid", str(pid1)], "guest 1")
            g2 = guest_agent(args.iotracer, sock, ["--pid", str(pid2)], "guest 2")
            t0 = time.monotonic_ns()
            ops1 = finish_workload(w1)
            ops2 = finish_workload(w2)
            t1 = time.monotonic_ns()
            time.sleep(0.3)
            g1.stop()
            g2.stop()
            h.wait_for("both goodbyes", lambda: len(h.events(type="guest", event="closed")) >= 2, 10)
            h.stop()
        finally:
            cleanup(h, g1, g2)
            for w in (w1, w2):
                if w.poll() is None:
                    w.kill()
    os.rmdir(d)

    ids = {g1: "unix:%d" % g1.proc.pid, g2: "unix:%d" % g2.proc.pid}
    hellos = h.events(type="guest", event="hello")
    check(sorted(e["guest"] for e in hellos) == sorted(ids.values()),
          "guests named %s, want the agents' pids %s" % ([e["guest"] for e in hellos], sorted(ids.values())))
    for g, ops, pid, dev in ((g1, ops1, pid1, dev1), (g2, ops2, pid2, dev2)):
        gid = ids[g]
        recs = io_records(h, gid)
        same_requests(ops, recs, "%s (%s)" % (g.name, gid))
        check(all(r["pid"] == pid and r["dev"] == kdev_of(dev) for r in recs),
              "%s: a record of another guest's workload: %s" % (gid, [r for r in recs if r["pid"] != pid][:1]))
        # Same machine: the host's clock is the guest's, so every time must fall in the window we saw.
        for r in recs:
            check("clock" not in r, "%s: record not put on the host clock: %s" % (gid, r))
            ts = r["ts_ns"]
            check(t0 - 2000000 <= ts["syscall_enter"] <= ts["syscall_exit"] <= t1 + 2000000,
                  "%s: times %d..%d outside the workload's %d..%d" % (gid, ts["syscall_enter"],
                                                                      ts["syscall_exit"], t0, t1))
        clocks = h.events(type="guest", event="clock", guest=gid)
        check(clocks, "%s: no clock estimate reported" % gid)
        c = clocks[-1]
        check(abs(c["offset_ns"]) <= c["uncertainty_ns"] and c["uncertainty_ns"] < 5000000,
              "%s: clock offset %d ns outside its uncertainty %d ns (the true offset is 0 here)"
              % (gid, c["offset_ns"], c["uncertainty_ns"]))
        s = guest_stats(g)
        check(s["lost_kernel"] == 0 and s["lost_wire"] == 0 and s["unacked"] == 0 and
              s["records_acked"] == s["records_sent"] == s["records_traced"] >= len(ops),
              "%s: not everything acknowledged: %s" % (g.name, s))
        closed = h.events(type="guest", event="closed", guest=gid)
        check(len(closed) == 1 and closed[0]["reason"] == "goodbye" and closed[0]["records"] == s["records_sent"],
              "%s: host saw %s, guest sent %d" % (gid, closed, s["records_sent"]))
    print("two guests: %d + %d requests, each on its own guest; clock offset within uncertainty"
          % (len(ops1), len(ops2)))


def case_host_restart(args):
    """The host agent is killed mid-stream; the guest reconnects to its successor and resends what was not acknowledged."""
    d = scratch_dir()
    sock = os.path.join(d, "host.sock")
    h1 = h2 = g = None
    with loop_device() as (dev, _):
        try:
            h1 = host_agent(args.iotracer, sock, "host 1")
            g = guest_agent(args.iotracer, sock, ["--comm", "iowork", "--dev", dev])
            w, _ = start_workload(args.iowork, "direct", dev, 12)
            ops1 = finish_workload(w)

            def acked_all():
                st = h1.events(type="guest", event="stats")
                return st and st[-1]["records_acked"] == st[-1]["records_traced"] >= len(ops1) and \
                    len(io_records(h1)) >= len(ops1)
            h1.wait_for("acknowledgement of the first requests", acked_all, 15)
            h1.stop(signal.SIGKILL, want_rc=None)
            g.wait_for("the guest noticing", lambda: g.events(type="link", event="disconnected"), 10)

            # Requests traced while no host listens wait in the guest's queue.
            w, _ = start_workload(args.iowork, "direct", dev, 12)
            ops2 = finish_workload(w)
            time.sleep(0.5)
            h2 = host_agent(args.iotracer, sock, "host 2")
            h2.wait_for("the second requests", lambda: len(io_records(h2)) >= len(ops2), 20)
            time.sleep(0.3)
            g.stop()
            h2.wait_for("goodbye", lambda: h2.events(type="guest", event="closed"), 10)
            h2.stop()
        finally:
            cleanup(h1, h2, g)
    os.rmdir(d)

    same_requests(ops1, io_records(h1), "host 1 (before the kill)")
    same_requests(ops2, io_records(h2), "host 2 (after the restart)")
    s = guest_stats(g)
    check(s["reconnects"] == 1, "guest reconnected %d times, want 1: %s" % (s["reconnects"], s))
    check(s["lost_wire"] == 0 and s["lost_kernel"] == 0 and s["unacked"] == 0 and
          s["records_acked"] == s["records_traced"], "guest lost records across the restart: %s" % s)
    st2 = h2.events(type="guest", event="stats")
    check(st2 and st2[-1]["reconnects"] == 1, "the new host was not told of the reconnection: %s" % st2[-1:])
    check("reconnecting" in g.stderr(), "guest did not say it lost the host:\n%s" % g.stderr())
    print("host restart: %d requests before, %d while the host was down, none lost or doubled"
          % (len(ops1), len(ops2)))


def case_queue_full(args):
    """No host for a while and a small queue: the guest drops whole batches and counts every record it dropped."""
    d = scratch_dir()
    sock = os.path.join(d, "host.sock")
    h = g = None
    with loop_device(512) as (dev, _):
        try:
            g = guest_agent(args.iotracer, sock, ["--comm", "iowork", "--dev", dev, "--queue-kb", "64"],
                            ready=False)
            w, _ = start_workload(args.iowork, "direct", dev, 2000)
            ops = finish_workload(w)
            time.sleep(0.3)
            h = host_agent(args.iotracer, sock)
            h.wait_for("the guest", lambda: h.events(type="guest", event="hello"), 20)

            def settled():
                st = h.events(type="guest", event="stats")
                return st and st[-1]["records_acked"] + st[-1]["lost_wire"] == st[-1]["records_traced"]
            h.wait_for("the queue to drain", settled, 20)
            g.stop()
            h.wait_for("goodbye", lambda: h.events(type="guest", event="closed"), 10)
            h.stop()
        finally:
            cleanup(h, g)
    os.rmdir(d)

    s = guest_stats(g)
    got = io_records(h)
    check(s["lost_wire"] > 0, "a 64 KiB queue held %d requests without dropping any: %s" % (len(ops), s))
    check(s["unacked"] == 0 and s["records_acked"] + s["lost_wire"] == s["records_traced"],
          "records unaccounted for: %s" % s)
    check(len(got) + s["lost_wire"] >= len(ops) and len(got) < len(ops),
          "host got %d of %d requests with %d reported lost" % (len(got), len(ops), s["lost_wire"]))
    want = {(o["op"], o["sector"], o["len"]) for o in ops}
    keys = [(r["op"], r["sector"], r["len"]) for r in got]
    check(len(set(keys)) == len(keys), "the host printed a request twice")
    check(set(keys) <= want, "the host printed requests nobody issued: %s" % sorted(set(keys) - want)[:3])
    hs = h.events(type="guest", event="stats")[-1]
    check(hs["lost_wire"] == s["lost_wire"], "host was told %d lost, guest counted %d" % (hs["lost_wire"],
                                                                                         s["lost_wire"]))
    print("queue full: %d requests, %d delivered, %d counted lost on the wire (%d records in all)"
          % (len(ops), len(got), s["lost_wire"], s["records_traced"]))


HOSTILE = [
    ("no-preamble", "preamble"),
    ("garbage", "limit"),
    ("oversized", "limit"),
    ("truncated", "inside"),
    ("wrong-version", "protocol version 99"),
    ("not-hello", "not a hello"),
    ("unknown-message", "no message we know"),
    ("silent-reader", "does not read"),
]


def case_hostile(args):
    """Each malformed stream ends its own connection with a reason; a good guest streaming meanwhile loses nothing."""
    if not args.guestgen:
        raise Skip("bench/guestgen was not built")
    d = scratch_dir()
    sock = os.path.join(d, "host.sock")
    h = g = None
    results = {}
    with loop_device() as (dev, _):
        try:
            h = host_agent(args.iotracer, sock)
            g = guest_agent(args.iotracer, sock, ["--comm", "iowork", "--dev", dev])
            w, _ = start_workload(args.iowork, "direct", dev, 400)
            t = threading.Thread(target=lambda: results.setdefault("ops", finish_workload(w)))
            t.start()
            for mode, _ in HOSTILE:
                # One record per batch: the host's replies pile up after few records, not millions.
                extra = ["--batch", "1", "--records", "500000"] if mode == "silent-reader" else []
                r = subprocess.run([args.guestgen, "unix:" + sock, mode, "--linger", "20"] + extra,
                                   capture_output=True, text=True, timeout=60)
                results[mode] = (r.returncode, r.stdout.strip(), r.stderr.strip())
            t.join(timeout=120)
            ops = results.get("ops")
            check(ops, "the workload did not finish")
            time.sleep(0.3)
            g.stop()
            h.wait_for("the good guest's goodbye",
                       lambda: h.events(type="guest", event="closed", guest="unix:%d" % g.proc.pid), 10)
            h.stop()
        finally:
            cleanup(h, g)
    os.rmdir(d)

    closed = h.events(type="guest", event="closed")
    gid = "unix:%d" % g.proc.pid
    for mode, why in HOSTILE:
        rc, out, err = results[mode]
        check(rc == 0, "guestgen %s: the host did not close the connection (rc %d): %s %s" % (mode, rc, out, err))
    bad = [c for c in closed if c["guest"] != gid]
    reasons = [c["reason"] for c in bad]
    check(len(bad) == len(HOSTILE), "expected %d hostile connections closed, got %d: %s"
          % (len(HOSTILE), len(bad), reasons))
    for (mode, why), reason in zip(HOSTILE, reasons):
        check(why in reason, "%s: closed with '%s', expected a reason mentioning '%s'" % (mode, reason, why))
    herr = h.stderr()
    check(all(r in herr for r in reasons), "the reasons are not in the host's log:\n%s" % herr)
    same_requests(ops, io_records(h, gid), "the good guest, while hostile peers came and went")
    check(not g.events(type="link", event="disconnected"), "the good guest lost its connection")
    s = guest_stats(g)
    check(s["records_acked"] == s["records_traced"] and s["lost_wire"] == 0, "good guest lost records: %s" % s)
    print("hostile peers: %s each ended alone; the good guest's %d requests all arrived"
          % (", ".join(m for m, _ in HOSTILE), len(ops)))


def case_cli(args):
    """Wrong flags and unusable addresses: clear one-line errors, exit 2 for usage, 1 for the environment."""
    d = scratch_dir()
    plain = os.path.join(d, "plain-file")
    open(plain, "w").close()
    cases = [
        (["--mode", "guest", "--listen", "unix:/x"], 2, "--listen is for --mode host"),
        (["--mode", "host", "--connect", "unix:/x"], 2, "--connect is for --mode guest"),
        (["--mode", "host", "--pid", "1"], 2, "give them to the guest agents"),
        (["--mode", "host", "--pid", "1", "--layers", "block"], 2, "give them to the guest agents"),
        (["--mode", "host", "--no-qemu", "--layers", "fs"], 2, "not with --no-qemu"),
        (["--mode", "host", "--layers", "nosuch"], 2, "unknown layer"),
        (["--mode", "guest", "--summary"], 2, "belong to the host agent"),
        (["--mode", "guest", "--connect", "vsock:2"], 2, "vsock:CID:PORT"),
        (["--mode", "guest", "--connect", "carrier-pigeon:1"], 2, "unknown transport"),
        (["--mode", "guest", "--queue-kb", "8"], 2, "64 KiB at least"),
        (["--mode", "host", "--listen", "unix:" + plain], 1, "exists and is no socket"),
        (["--mode", "host", "--listen", "serial:" + plain], 1, "not a socket"),
        (["--mode", "host", "--listen", "serial:" + os.path.join(d, "later.sock"), "--duration", "0.3"], 0,
         "retrying"),
        (["--mode", "guest", "--connect", "serial:" + os.path.join(d, "no-such-port")], 1, "cannot open serial:"),
        (["--mode", "standalone", "--queue-kb", "100"], 2, "--queue-kb is for --mode guest"),
        (["--mode", "host", "--qemu-route", "fastest"], 2, "unknown route 'fastest' (probes, kernel)"),
        (["--mode", "guest", "--qemu-route", "kernel"], 2, "are for --mode host"),
        (["--mode", "host", "--qemu-route", "kernel", "--no-qemu"], 2, "contradict each other"),
    ]
    try:
        for argv, rc, msg in cases:
            r = subprocess.run([args.iotracer] + argv, capture_output=True, text=True, timeout=30)
            check(r.returncode == rc and msg in r.stderr,
                  "iotracer %s: exit %d (want %d), stderr %r (want %r)" % (" ".join(argv), r.returncode, rc,
                                                                          r.stderr, msg))
        r = subprocess.run([args.iotracer, "--help"], capture_output=True, text=True)
        check("--mode guest" in r.stdout and "--listen ADDR" in r.stdout and "--qemu-route R" in r.stdout and
              "not in this version yet" not in r.stdout,
              "--help does not describe guest and host modes")
    finally:
        os.unlink(plain)
        os.rmdir(d)
    print("cli: %d wrong invocations refused clearly" % len(cases))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iotracer", required=True)
    ap.add_argument("--iowork", required=True)
    ap.add_argument("--guestgen")
    ap.add_argument("case")
    args = ap.parse_args()
    fn = globals().get("case_" + args.case)
    if not fn:
        print("unknown case %s" % args.case)
        return 2
    if os.geteuid() != 0 and args.case != "cli":
        print("SKIP: needs root to load BPF programs")
        return SKIP
    try:
        fn(args)
    except Skip as e:
        print("SKIP: %s" % e)
        return SKIP
    except Fail as e:
        print("FAIL: %s" % e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
