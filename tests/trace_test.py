#!/usr/bin/env python3
"""Integration tests of iotracer on the running kernel.

Each case starts the real iotracer (real BPF programs), filtered on the pid of
its own workload (tests/iowork), issues a known I/O pattern on a real device
and holds iotracer's records against what the workload says it issued,
request by request. Exit 0 pass, 1 fail, 77 skip (only where the machine
truly cannot run the case, with the reason printed).
"""
import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

SKIP = 77
TS_ORDER = ["syscall_enter", "uring_submit", "uring_async", "uring_poll", "fs", "pagecache",
            "bio_queue", "rq_insert", "rq_issue", "driver", "irq", "rq_complete", "bio_end",
            "uring_taskwork", "uring_complete", "syscall_exit"]


class Skip(Exception):
    pass


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def json_lines(lines, who):
    """The objects of a JSON-lines output; a line that is not JSON fails the test."""
    out = []
    for line in list(lines):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise Fail("%s wrote a line that is not JSON: %r (%s)" % (who, line, e))
    return out


class Tracer:
    """The real iotracer binary, JSON on stdout, read by a thread."""

    def __init__(self, exe, args):
        self.lines = []
        self.proc = subprocess.Popen([exe, "--json", "--no-status"] + args, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_ready(self, timeout=60):
        """Layer lines are printed once every program is attached."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if sum(1 for l in list(self.lines) if '"type":"layer"' in l) >= 10:
                return self.layers()
            if self.proc.poll() is not None:
                raise Fail("iotracer exited early (%d): %s" % (self.proc.returncode, self.proc.stderr.read()))
            time.sleep(0.05)
        raise Fail("iotracer did not attach within %ds" % timeout)

    def layers(self):
        return {o["layer"]: o for o in self.objects() if o.get("type") == "layer"}

    def objects(self):
        return json_lines(self.lines, "iotracer")

    def stop(self):
        # Records are emitted when a request completes and read every 100 ms.
        time.sleep(0.5)
        self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise Fail("iotracer did not stop on SIGINT")
        self.reader.join(timeout=10)
        err = self.proc.stderr.read()
        check(rc == 0, "iotracer exited %d after SIGINT: %s" % (rc, err))
        objs = self.objects()
        stats = [o for o in objs if o.get("type") == "stats"]
        check(stats, "no stats line at exit (loss must be reported)")
        check(stats[-1]["lost"] == 0, "records lost: %s" % stats[-1])
        self.summaries = [o for o in objs if o.get("type") == "summary"]
        return [o for o in objs if o.get("type") == "io"], stats[-1]


def start_workload(iowork, mode, path, count):
    w = subprocess.Popen([iowork, mode, path, str(count)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    first = w.stdout.readline()
    if not first:
        raise Fail("iowork failed to start: rc %s" % w.wait())
    return w, json.loads(first)["pid"]


def finish_workload(w):
    w.stdin.write("go\n")
    w.stdin.flush()
    ops = [json.loads(l) for l in w.stdout]
    rc = w.wait()
    check(rc == 0, "iowork exited %d" % rc)
    check(ops and ops[-1].get("done"), "iowork did not finish its work")
    return ops[:-1]


def traced(args, mode, path, count, extra=(), after=None, want_stats=False, setup=None):
    """Run one workload under iotracer --pid and return (pid, ops, records, layers[, stats])."""
    w, pid = start_workload(args.iowork, mode, path, count)
    t = None
    try:
        if setup:
            setup(pid)
        t = Tracer(args.iotracer, ["--pid", str(pid)] + list(extra))
        layers = t.wait_ready()
        ops = finish_workload(w)
        if after:
            after()
        recs, stats = t.stop()
        stats = dict(stats, summaries=t.summaries)
    finally:
        if w.poll() is None:
            w.kill()
        if t and t.proc.poll() is None:
            t.proc.kill()
    if want_stats:
        return pid, ops, recs, layers, stats
    return pid, ops, recs, layers


def check_timing(r):
    """Timestamps in layer order never go backwards; the split adds up to the total."""
    ts = [r["ts_ns"][k] for k in TS_ORDER if k in r["ts_ns"]]
    check(ts == sorted(ts), "timestamps out of layer order: %s" % r["ts_ns"])
    check(sum(s["ns"] for s in r["split_ns"]) == r["total_ns"],
          "split %s does not add up to total %d" % (r["split_ns"], r["total_ns"]))
    check(r["total_ns"] == ts[-1] - ts[0], "total is not last minus first timestamp")


def check_layers_on(layers, names):
    for n in names:
        check(layers[n]["state"] == "on", "layer %s not on here: %s" % (n, layers[n]))


def key(o):
    return (o["op"], o["sector"], o["len"])


def same_requests(ops, recs, what, others=()):
    """The records recs are exactly the requests ops. others: all the run's records, for a failure to show
    what became of the missing ones (another kind, another sector)."""
    want = sorted(key(o) for o in ops)
    got = sorted((r["op"], r["sector"], r["len"]) for r in recs)
    if want != got:
        missing = set(want) - set(got)
        seen = [r for r in others if r not in recs and (r.get("op"), r.get("sector"), r.get("len")) in missing]
        raise Fail("%s: requests differ\n  issued:   %s\n  reported: %s\n  the missing ones among the run's %d "
                   "other records: %s" % (what, want, got, len(others) - len(recs), seen))


def kdev_of(path):
    st = os.stat(path)
    rdev = st.st_rdev if (st.st_mode & 0o170000) == 0o060000 else st.st_dev
    return "%d:%d" % (os.major(rdev), os.minor(rdev))


@contextlib.contextmanager
def loop_device(size_mb=64):
    d = tempfile.mkdtemp(prefix="iotracer-test-")
    img = os.path.join(d, "disk.img")
    dev = None
    try:
        with open(img, "wb") as f:
            f.truncate(size_mb << 20)
        try:
            dev = run(["losetup", "--find", "--show", img]).stdout.strip()
        except (subprocess.CalledProcessError, FileNotFoundError) as e:
            raise Skip("no loop device can be set up here: %s" % getattr(e, "stderr", e))
        yield dev, d
    finally:
        if dev:
            subprocess.run(["losetup", "-d", dev])
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def ext4_on_loop():
    with loop_device(128) as (dev, d):
        mnt = os.path.join(d, "mnt")
        os.mkdir(mnt)
        run(["mkfs.ext4", "-q", "-F", dev])
        run(["mount", dev, mnt])
        try:
            yield dev, mnt
        finally:
            subprocess.run(["umount", mnt])


# ---------------------------------------------------------------- cases

def case_loop_direct(args):
    with loop_device() as (dev, _):
        pid, ops, recs, layers = traced(args, "direct", dev, 12)
    check_layers_on(layers, ["syscall", "block"])
    io = [r for r in recs if r["kind"] == "syscall" and r["syscall"] in ("pread64", "pwrite64")]
    same_requests(ops, io, "O_DIRECT on %s" % dev)
    for r in io:
        check(r["pid"] == pid and r["dev"] == kdev_of(dev), "wrong pid/dev in %s" % r)
        check(r["nr_bios"] >= 1 and r["bio_bytes"] == r["len"], "block part missing: %s" % r)
        for k in ("syscall_enter", "bio_queue", "rq_issue", "rq_complete", "syscall_exit"):
            check(k in r["ts_ns"], "no %s timestamp: %s" % (k, r))
        check_timing(r)
        check(r["offcpu_ns"] <= r["total_ns"], "off-CPU longer than the call: %s" % r)
    # A synchronous direct read sleeps in io_schedule() until its bio completes.
    check(sum(1 for r in io if r["offcpu_ns"] > 0) >= len(io) // 2,
          "sched layer: no off-CPU time on direct reads: %s" % [r["offcpu_ns"] for r in io])


def case_buffered_fsync(args):
    with ext4_on_loop() as (dev, mnt):
        path = os.path.join(mnt, "f")
        pid, ops, recs, layers = traced(args, "buffered", path, 16)
    check_layers_on(layers, ["syscall", "pagecache", "block"])
    writes = [r for r in recs if r["kind"] == "syscall" and r["syscall"] == "pwrite64"]
    check(len(writes) == 16, "expected 16 pwrite64 records, got %d" % len(writes))
    for r in writes:
        check(r["pagecache"]["dirtied"] >= 1, "write did not dirty the page cache: %s" % r)
        check(r["nr_bios"] == 0, "a buffered write waited for block I/O: %s" % r)
        check_timing(r)
    fsyncs = [r for r in recs if r["kind"] == "syscall" and r["syscall"] == "fsync"]
    check(len(fsyncs) == 1, "expected one fsync record, got %d" % len(fsyncs))
    f = fsyncs[0]
    check(f["pid"] == pid and f["dev"] == kdev_of(dev), "fsync misattributed: %s" % f)
    check(f["bio_bytes"] >= 16 * 4096, "fsync wrote %d bytes, want >= %d" % (f["bio_bytes"], 16 * 4096))
    check_timing(f)


def case_writeback_attribution(args):
    """Writeback done later by a kworker is attributed to the process that dirtied the pages."""
    with ext4_on_loop() as (dev, mnt):
        path = os.path.join(mnt, "f")
        pid, ops, recs, layers = traced(args, "dirty", path, 32,
                                        after=lambda: run(["sync", "-f", path]))
        ino = os.stat(path).st_ino
    check_layers_on(layers, ["pagecache", "block"])
    wb = [r for r in recs if r["kind"] == "bio" and r["attribution"] == "writeback-dirtier"]
    check(wb, "no writeback records attributed to the writer; got kinds %s" %
          sorted(set((r["kind"], r["attribution"]) for r in recs)))
    for r in wb:
        check(r["pid"] == pid, "writeback attributed to pid %d, writer is %d" % (r["pid"], pid))
        check(r["actor_tid"] != pid, "writeback should be done by a kernel worker: %s" % r)
        # Reads happen too: ext4 reads allocation metadata while writing the inode back.
        check(r["op"] in ("write", "read") and r["dev"] == kdev_of(dev), "unexpected writeback record %s" % r)
        check(r["inode"] == ino, "writeback of inode %d attributed via inode %d" % (ino, r["inode"]))
        check_timing(r)
    total = sum(r["len"] for r in wb if r["op"] == "write")
    check(total >= 32 * 4096, "writeback of %d bytes attributed, wrote %d" % (total, 32 * 4096))


def case_uring(args):
    with loop_device() as (dev, _):
        pid, ops, recs, layers, stats = traced(args, "uring", dev, 16, want_stats=True)
    check_layers_on(layers, ["io_uring", "block"])
    # With kernel BTF the tp_btf programs, whose typed reads the verifier must accept, are the ones
    # loaded: a refusal would fall back to raw_tp quietly.
    if os.path.exists("/sys/kernel/btf/vmlinux"):
        for l in ("io_uring", "block"):
            check(layers[l]["route"].startswith("tp_btf"), "%s layer fell back to %s" % (l, layers[l]["route"]))
    io = [r for r in recs if r["kind"] == "io_uring"]
    same_requests(ops, io, "io_uring reads on %s" % dev)
    for r in io:
        check(r["pid"] == pid and r["result"] == r["len"], "bad io_uring record %s" % r)
        check(r["offset"] == r["sector"] * 512, "offset/sector disagree: %s" % r)
        for k in ("uring_submit", "bio_queue", "rq_issue", "rq_complete", "uring_complete"):
            check(k in r["ts_ns"], "no %s timestamp: %s" % (k, r))
        check_timing(r)
    # Control calls are counted, not records: at least one submit, at most one per request and reap.
    check(1 <= stats["calls_io_uring_enter"] <= 32, "io_uring_enter calls: %s" % stats)
    check(not [r for r in recs if r["kind"] == "syscall"], "control calls must not be request records")
    check(stats["req_io_uring"] == 16, "stats count %d io_uring requests" % stats["req_io_uring"])


def case_uring_iowq(args):
    """Requests punted to io-wq: their bios are issued by iou-wrk threads and attributed to the process."""
    with loop_device() as (dev, _):
        pid, ops, recs, layers = traced(args, "uring-async", dev, 16)
        loopdev = kdev_of(dev)
    check_layers_on(layers, ["io_uring", "block"])
    reqs = [r for r in recs if r["kind"] == "io_uring"]
    check(len(reqs) == 16, "want 16 io_uring records, got %d" % len(reqs))
    for r in reqs:
        check("io-wq" in r["flags"] and "uring_async" in r["ts_ns"], "request not seen punted: %s" % r)
        check(r["pid"] == pid and r["result"] == r["len"], "bad io_uring record %s" % r)
        check_timing(r)
    # A raw block device has no iomap entry naming the request a worker runs: the bios stand alone,
    # attributed to the process, and say so.
    # (The workload's own page faults may read its binary from another disk meanwhile.)
    bios = [r for r in recs if r["kind"] == "bio" and r["dev"] == loopdev]
    same_requests(ops, bios, "bios of io-wq workers")
    for r in bios:
        check(r["attribution"] == "io-wq-process" and r["pid"] == pid and r["actor_tid"] != pid,
              "io-wq bio misattributed: %s" % r)
        check(r["comm"].startswith("iou-wrk"), "issued by %s, not an io-wq worker" % r["comm"])
        check_timing(r)


def case_aio(args):
    with loop_device() as (dev, _):
        pid, ops, recs, layers, stats = traced(args, "aio", dev, 16, want_stats=True)
    check_layers_on(layers, ["aio", "block"])
    io = [r for r in recs if r["kind"] == "aio"]
    same_requests(ops, io, "libaio reads on %s" % dev, recs)
    for r in io:
        check(r["pid"] == pid, "bad aio record %s" % r)
        for k in ("syscall_enter", "bio_queue", "rq_issue", "rq_complete"):
            check(k in r["ts_ns"], "no %s timestamp: %s" % (k, r))
        check_timing(r)
    # iowork submits 4 batches of 4 and reaps each batch with one or more io_getevents.
    check(stats["calls_io_submit"] == 4, "io_submit calls: %s" % stats)
    check(4 <= stats["calls_io_getevents"] <= 16, "io_getevents calls: %s" % stats)
    check(stats["req_aio"] == 16, "stats count %d aio requests" % stats["req_aio"])


def virtio_root_dir():
    """A directory on a file system whose disk is virtio-blk, or Skip."""
    for d in ("/var/tmp", "/tmp", "/root"):
        try:
            st = os.stat(d)
        except OSError:
            continue
        dev = "%d:%d" % (os.major(st.st_dev), os.minor(st.st_dev))
        for name in os.listdir("/sys/block"):
            with open("/sys/block/%s/dev" % name) as f:
                if f.read().strip() != dev:
                    continue
            drv = os.path.realpath("/sys/block/%s/device/driver" % name)
            if drv.endswith("virtio_blk"):
                return d, dev
    raise Skip("no writable directory on a virtio-blk disk on this machine")


def ram_ranges():
    """The machine's physical RAM: top-level "System RAM" ranges of /proc/iomem, and MemTotal in bytes."""
    ranges = []
    with open("/proc/iomem") as f:
        for line in f:
            span, _, name = line.rstrip("\n").partition(" : ")
            if name == "System RAM" and not line.startswith(" "):
                lo, hi = span.split("-")
                ranges.append((int(lo, 16), int(hi, 16)))
    with open("/proc/meminfo") as f:
        total = next(int(l.split()[1]) * 1024 for l in f if l.startswith("MemTotal:"))
    check(ranges and ranges[-1][1] > 0, "/proc/iomem shows no RAM (addresses hidden?): %s" % ranges)
    return ranges, total


def check_vq_keys(recs, ranges, ram_bytes, what):
    """Each record's virtio header GPA is a physical address in RAM, 8-byte aligned, and no two requests
    in flight at the same time share one. Returns how many pairs of records were in flight together."""
    for r in recs:
        gpa = r.get("virtio_hdr_gpa")
        check(gpa, "%s: no virtio_hdr_gpa: %s" % (what, r))
        check(gpa % 8 == 0, "%s: virtio_hdr_gpa %#x not 8-byte aligned" % (what, gpa))
        check(gpa < ram_bytes + (4 << 30), "%s: virtio_hdr_gpa %#x beyond RAM (%d bytes) + 4 GiB" %
              (what, gpa, ram_bytes))
        # struct virtio_blk_outhdr is 16 bytes, all of it in one RAM range.
        check(any(lo <= gpa and gpa + 15 <= hi for lo, hi in ranges),
              "%s: virtio_hdr_gpa %#x in no System RAM range %s" % (what, gpa, [(hex(a), hex(b)) for a, b in ranges]))
    # In flight: from the (first) request's issue to the completion. Bios merged into one request are
    # reported apart with that request's stamps, and its key: those are one request, not two.
    spans = []
    for r in recs:
        ts = r["ts_ns"]
        check("rq_issue" in ts and ("rq_complete" in ts or "bio_end" in ts), "%s: no request stamps: %s" % (what, r))
        spans.append((ts["rq_issue"], ts.get("rq_complete", ts.get("bio_end")), r))
    overlapping = 0
    for i, (ia, ca, a) in enumerate(spans):
        for ib, cb, b in spans[i + 1:]:
            if (ia, ca) == (ib, cb) or not (ia < cb and ib < ca):
                continue
            overlapping += 1
            check(a["virtio_hdr_gpa"] != b["virtio_hdr_gpa"],
                  "%s: two requests in flight together share virtio_hdr_gpa %#x:\n  %s\n  %s" %
                  (what, a["virtio_hdr_gpa"], a, b))
    return overlapping


def case_virtio_direct(args):
    d, dev = virtio_root_dir()
    ranges, ram = ram_ranges()
    tmp = tempfile.mkdtemp(prefix="iotracer-virtio-", dir=d)
    path = os.path.join(tmp, "data")
    try:
        run(["dd", "if=/dev/zero", "of=" + path, "bs=1M", "count=4", "oflag=direct", "conv=fsync"])
        ino = os.stat(path).st_ino
        pid, ops, recs, layers = traced(args, "direct", path, 8)
        # Requests in flight together (4 at a time), and the other kinds a request can end up in.
        _, aio_ops, aio_recs, _ = traced(args, "aio", path, 16)
        _, uring_ops, uring_recs, _ = traced(args, "uring", path, 16)
        wpath = os.path.join(tmp, "dirty")
        _, _, wb_recs, _ = traced(args, "dirty", wpath, 32, after=lambda: run(["sync", "-f", wpath]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    check_layers_on(layers, ["syscall", "fs", "block", "virtio"])
    io = [r for r in recs if r["kind"] == "syscall" and r["syscall"] in ("pread64", "pwrite64")]
    check(all(o["sector"] >= 0 for o in ops), "FIEMAP gave no physical sector: %s" % ops)
    same_requests(ops, io, "O_DIRECT on a file on virtio disk %s" % dev)
    for r in io:
        check(r["dev"] == dev and r.get("driver") == "virtio-blk", "not seen as virtio-blk: %s" % r)
        for k in ("syscall_enter", "fs", "bio_queue", "rq_issue", "driver", "irq", "rq_complete"):
            check(k in r["ts_ns"], "no %s timestamp: %s" % (k, r))
        check_timing(r)
    check_vq_keys(io, ranges, ram, "pread64/pwrite64")

    aio = [r for r in aio_recs if r["kind"] == "aio"]
    same_requests(aio_ops, aio, "libaio on virtio disk %s" % dev, aio_recs)
    check(check_vq_keys(aio, ranges, ram, "aio") > 0, "no two aio requests were in flight together: "
          "the test of distinct keys proved nothing")
    uring = [r for r in uring_recs if r["kind"] == "io_uring"]
    same_requests(uring_ops, uring, "io_uring on virtio disk %s" % dev)
    # Direct I/O names its file where it starts (iomap_dio_rw_begin), the disk by its bios, the result by its CQE.
    for r in uring:
        check(r["inode"] == ino and r["dev"] == dev and r["result"] == r["len"], "bad io_uring record: %s" % r)
    check_vq_keys(uring, ranges, ram, "io_uring")
    wb = [r for r in wb_recs if r["kind"] == "bio" and r["attribution"] == "writeback-dirtier" and r["dev"] == dev]
    check(wb, "no writeback of the dirty file attributed on %s: %s" % (dev, [(r["kind"], r["attribution"])
                                                                          for r in wb_recs]))
    check_vq_keys(wb, ranges, ram, "writeback bios")
    # Whatever the kind (page faults of the workloads read from this disk too), a request the virtio-blk
    # driver saw carries its key.
    for r in recs + aio_recs + uring_recs + wb_recs:
        if r.get("driver") == "virtio-blk":
            check(r.get("virtio_hdr_gpa"), "a %s record on virtio-blk without virtio_hdr_gpa: %s" % (r["kind"], r))


def case_filters(args):
    """--dev of another device and --min-latency above everything leave nothing; --sample keeps a share."""
    with loop_device() as (dev, _):
        with loop_device() as (other, _):
            _, ops, recs, _ = traced(args, "direct", dev, 6, extra=["--dev", other])
            check(not [r for r in recs if r["kind"] == "syscall" and r["syscall"] in ("pread64", "pwrite64")],
                  "--dev %s let through I/O on %s" % (other, dev))
        _, ops, recs, _ = traced(args, "direct", dev, 6, extra=["--dev", dev, "--min-latency", "10000000"])
        check(not recs, "--min-latency 10 s let through %d records" % len(recs))
        _, ops, recs, _ = traced(args, "direct", dev, 6, extra=["--dev", dev, "--layers", "block"])
        bios = [r for r in recs if r["kind"] == "bio"]
        check(len(bios) == 6 and all("syscall_enter" not in r["ts_ns"] for r in bios),
              "--layers block: want 6 bare bio records, got %s" % [(r["kind"], r["ts_ns"].keys()) for r in recs])
        same_requests(ops, bios, "--layers block")


def case_file_filters(args):
    """--file, --dir, --comm, --cgroup and --sample select exactly the requests they name, in the kernel."""
    def io_of(recs):
        return [r for r in recs if r["kind"] == "syscall" and r["syscall"] in ("pread64", "pwrite64")]

    cg_root = "/sys/fs/cgroup/unified" if os.path.ismount("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"
    with ext4_on_loop() as (dev, mnt):
        for d in ("a", "b"):
            os.mkdir(os.path.join(mnt, d))
            run(["dd", "if=/dev/zero", "of=" + os.path.join(mnt, d, "f"), "bs=1M", "count=4", "oflag=direct",
                 "status=none"])
        fa, fb = os.path.join(mnt, "a", "f"), os.path.join(mnt, "b", "f")
        for extra, want in ((["--file", fa], True), (["--file", fb], False), (["--dir", mnt], True),
                            (["--dir", os.path.join(mnt, "a")], True), (["--dir", os.path.join(mnt, "b")], False),
                            (["--comm", "iowork"], True), (["--comm", "not-iowork"], False),
                            (["--sample", "1"], True), (["--sample", "1000000"], False)):
            _, ops, recs, _ = traced(args, "direct", fa, 6, extra=extra)
            if want:
                same_requests(ops, io_of(recs), " ".join(extra))
            else:
                check(not io_of(recs), "%s let through %d requests" % (" ".join(extra), len(io_of(recs))))
        if not os.path.exists(os.path.join(cg_root, "cgroup.procs")):
            return
        cgs = [tempfile.mkdtemp(prefix="iotracer-test-", dir=cg_root) for _ in range(2)]
        try:
            def into_first(pid):
                with open(os.path.join(cgs[0], "cgroup.procs"), "w") as f:
                    f.write(str(pid))
            for cg, want in ((cgs[0], True), (cgs[1], False)):
                _, ops, recs, _ = traced(args, "direct", fa, 6, extra=["--cgroup", cg], setup=into_first)
                if want:
                    same_requests(ops, io_of(recs), "--cgroup")
                else:
                    check(not io_of(recs), "--cgroup of another cgroup let through %d requests" % len(recs))
        finally:
            for cg in cgs:
                with contextlib.suppress(OSError):
                    os.rmdir(cg)


def case_summary(args):
    """--summary alone aggregates in the kernel: no request records, histograms per layer."""
    with loop_device() as (dev, _):
        pid, ops, recs, layers, stats = traced(args, "direct", dev, 20, extra=["--summary"], want_stats=True)
    check(not recs, "--summary alone must not copy requests out, got %d" % len(recs))
    check(stats["emitted"] == 0, "records were emitted: %s" % stats)
    check(stats["req_syscall"] == 20, "summary counted %d syscall requests, issued 20" % stats["req_syscall"])
    check(len(stats["summaries"]) == 1, "want one summary object at exit, got %d" % len(stats["summaries"]))
    lay = stats["summaries"][0]["layers"]
    check(lay["total"]["count"] == 20, "total histogram holds %d requests" % lay["total"]["count"])
    for name in ("syscall", "block", "device", "completion"):
        check(name in lay and lay[name]["count"] == 20, "layer %s histogram: %s" % (name, lay.get(name)))
        h = lay[name]
        check(h["p50_ns"] <= h["p90_ns"] <= h["p99_ns"] <= h["max_ns"], "percentiles out of order: %s" % h)
        check(sum(h["log2_ns"].values()) == h["count"], "log2 slots do not add up: %s" % h)
    check(lay["total"]["max_ns"] >= max(lay[n]["max_ns"] for n in ("syscall", "block", "device")),
          "a layer took longer than the whole request")
    # With --interval each summary covers its own interval: over the run they add up to what was issued.
    with loop_device() as (dev, _):
        _, _, recs, _, stats = traced(args, "direct", dev, 20, extra=["--summary", "--interval", "1"],
                                      want_stats=True, after=lambda: time.sleep(2.5))
    sums = stats["summaries"]
    check(len(sums) >= 3, "want a summary per second and one at exit, got %d" % len(sums))
    check(sum(x["records"] for x in sums) == 20 and sum(x["layers"]["total"]["count"] for x in sums) == 20,
          "interval summaries count %s requests, 20 were issued" % [x["records"] for x in sums])


def case_cli_errors(args):
    exe = args.iotracer
    r = subprocess.run([exe, "--bogus"], capture_output=True, text=True)
    check(r.returncode == 2 and "--help" in r.stderr, "unknown flag: rc %d %r" % (r.returncode, r.stderr))
    r = subprocess.run([exe, "--layers", "syscall,nope"], capture_output=True, text=True)
    check(r.returncode == 2 and "nope" in r.stderr, "unknown layer: rc %d %r" % (r.returncode, r.stderr))
    r = subprocess.run([exe, "--dev", "/etc/passwd"], capture_output=True, text=True)
    check(r.returncode == 2 and "block device" in r.stderr, "bad --dev: %r" % r.stderr)
    r = subprocess.run([exe, "--help"], capture_output=True, text=True)
    check(r.returncode == 0 and "--layers" in r.stdout and "--min-latency" in r.stdout, "--help incomplete")
    # A layer named explicitly that this kernel cannot serve is an error, not a silent gap.
    missing = [l for l, tp in (("nvme", "nvme/nvme_setup_cmd"), ("scsi", "scsi/scsi_dispatch_cmd_start"))
               if not os.path.exists("/sys/kernel/tracing/events/" + tp)]
    if missing:
        r = subprocess.run([exe, "--layers", "block," + missing[0], "--duration", "1"], capture_output=True,
                           text=True, timeout=120)
        check(r.returncode == 1 and ("layer '%s'" % missing[0]) in r.stderr,
              "explicit unavailable layer: rc %d %r" % (r.returncode, r.stderr))
    # Not privileged: a clear one-line error and a non-zero exit.
    if shutil.which("setpriv"):
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", exe, "--duration", "1"],
                           capture_output=True, text=True, timeout=60)
        check(r.returncode == 1 and "root" in r.stderr, "unprivileged: rc %d %r" % (r.returncode, r.stderr))


def run_cases(cases, extra_args=()):
    """The command line of a test script whose cases are cases[NAME](args); extra_args: more --PATH options."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--iotracer", required=True)
    ap.add_argument("--iowork", required=True)
    for a in extra_args:
        ap.add_argument(a, required=True)
    ap.add_argument("case", choices=sorted(cases))
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("SKIP: loading BPF programs needs root, and this test runs as uid %d" % os.geteuid())
        return SKIP
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        print("SKIP: this kernel has no BTF")
        return SKIP
    try:
        cases[args.case](args)
    except Skip as e:
        print("SKIP: %s" % e)
        return SKIP
    except Fail as e:
        print("FAIL: %s" % e)
        return 1
    print("PASS: %s" % args.case)
    return 0


def main():
    return run_cases({n[5:]: f for n, f in globals().items() if n.startswith("case_")})


if __name__ == "__main__":
    sys.exit(main())
