#!/usr/bin/env python3
"""End-to-end: host mode on a QEMU built with USDT probes (the dtrace trace backend, as Fedora and RHEL
build it): reads and writes come from its trace points, not from uprobes on blk_aio_*.

The QEMU is Debian's own source of the installed version, built here with
--enable-trace-backends=dtrace (build-qemu-usdt.sh, cached after the first
build). One guest with raw images under aio=threads, io_uring and native, and
a qcow2 image under aio=threads; the guest agent streams over virtio-serial.

Asserted per request, as in test-host.py: matched on the header's
guest-physical address to a QEMU request of the same sector, length and
operation, with the host I/O QEMU issued for it on its own image file (at the
same offset for raw images, tied by its buffers). Then: the host agent says
the VM is probed through USDT, and the uprobe hits are only the backend
calls' and the flushes': the reads and writes were seen at the USDT sites
(each hit counted once, USDT or uprobe).

usage: test-host-usdt.py BUILD_DIR IOTRACER IOWORK
Exit 0 pass, 1 fail, 77 only if QEMU cannot run here.
"""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from qtest import Fail, check, guest_args, sections  # noqa: E402

_spec = importlib.util.spec_from_file_location("test_host", os.path.join(HERE, "test-host.py"))
th = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(th)

DISKS = [("raw", "threads", "writeback"), ("raw", "io_uring", "none"), ("raw", "native", "none"),
         ("qcow2", "threads", "writeback")]
# One more raw disk, with the guest's own merging off: batches of four reads of adjacent blocks reach
# QEMU as four requests, which virtio-blk merges into one call (the USDT virtio_blk_submit_multireq).
MERGE_DISK = ("raw", "threads", "writeback")
MERGE_DEV = "vd" + chr(ord("a") + len(DISKS))
ADJACENT = 16
MERGE_SCRIPT = """echo "=== dev %(d)s"; cat /sys/block/%(d)s/dev
echo 2 > /sys/block/%(d)s/queue/nomerges
echo "=== ops %(d)s adjacent"; echo go | iowork aio-adjacent /dev/%(d)s %(n)d
""" % {"d": MERGE_DEV, "n": ADJACENT}


def check_merged(secs, recs, pid, image):
    """Each read of the merged batches: matched on its own header address, with the merged call's host I/O."""
    dev = secs["dev " + MERGE_DEV][0].strip()
    ops = [json.loads(l) for l in secs["ops %s adjacent" % MERGE_DEV] if l.strip()]
    ops = [o for o in ops if "op" in o]
    check(len(ops) == ADJACENT, "%s: iowork reported %d requests" % (MERGE_DEV, len(ops)))
    got = [r for r in recs if r["dev"] == dev and r["kind"] == "aio"]
    want = sorted((o["op"], o["sector"], o["len"]) for o in ops)
    have = sorted((r["op"], r["sector"], r["len"]) for r in got)
    check(have == want, "%s: guest records differ from what iowork issued:\n  issued:   %s\n  reported: %s"
          % (MERGE_DEV, want, have))
    ino = os.stat(image).st_ino
    for r in got:
        what = "%s adjacent read sector %d" % (MERGE_DEV, r["sector"])
        h = r["host"]
        check(h["match"] == "gpa" and h["qemu_pid"] == pid and h["qemu"]["gpa"] == r["virtio_hdr_gpa"],
              "%s: not matched on its own header address: %s" % (what, h))
        check((h["qemu"]["op"], h["qemu"]["sector"], h["qemu"]["len"]) == (r["op"], r["sector"], r["len"]),
              "%s: QEMU request %s is not the guest's" % (what, h["qemu"]))
        check(h["host_io"], "%s: no host I/O found for it: %s" % (what, h))
        io = h["host_io"][0]
        # The merged call's one host I/O covers this request's blocks.
        check(io["inode"] == ino and io["offset"] <= r["sector"] * 512 and
              io["offset"] + io["len"] >= r["sector"] * 512 + r["len"],
              "%s: host I/O %s does not cover it" % (what, io))
    return len(got)


def main():
    if os.geteuid() != 0:
        print("SKIP: host mode loads BPF programs: needs root")
        return 77
    args = guest_args(__doc__)
    if isinstance(args, int):
        return args
    build, iotracer, iowork = args
    b = subprocess.run([os.path.join(HERE, "build-qemu-usdt.sh")], capture_output=True, text=True)
    if b.returncode != 0:
        print(b.stderr[-3000:])
        print("FAIL: building QEMU with USDT probes failed")
        return 1
    qemu = b.stdout.strip().splitlines()[-1]
    tmp = tempfile.mkdtemp(prefix="iotracer-usdt-", dir="/var/tmp")
    host = None
    try:
        sock = os.path.join(tmp, "vm.sock")
        images = th.make_images(tmp, "usdt", DISKS)
        host, hout, herr = th.start_host(iotracer, tmp, ["--requests", "--listen", "serial:" + sock])
        images += th.make_images(tmp, "merge", [MERGE_DISK])
        script = th.guest_script(DISKS, "").replace("sleep 3\n", MERGE_SCRIPT + "sleep 3\n", 1)
        p, t, out = th.start_guest(build, sock, images, DISKS + [MERGE_DISK], "usdt", "", qemu=qemu,
                                   script=script)
        t.join(timeout=700)
        time.sleep(1)
        host.send_signal(signal.SIGINT)
        host.wait(timeout=60)
        hout.close()
        if p.returncode == 77:
            print("SKIP: QEMU cannot run here: " + out.get("stderr", "")[-2000:])
            return 77
        objs = [json.loads(l) for l in open(hout.name) if l.strip()]
        herr.seek(0)
        herr_text = herr.read()
        try:
            check(host.returncode == 0, "host agent exited %d:\n%s" % (host.returncode, herr_text[-3000:]))
            secs = sections(out.get("stdout", ""))
            check(p.returncode == 0 and "end" in secs, "the guest failed (rc %s):\n%s\n%s" % (
                p.returncode, out.get("stdout", "")[-3000:], out.get("stderr", "")[-2000:]))
            vms = [o for o in objs if o.get("type") == "vm" and o.get("event") == "traced" and o.get("name") == "usdt"]
            check(vms, "host did not trace the VM: %s" % [o for o in objs if o.get("type") == "vm"])
            vm = vms[0]
            check(vm.get("qemu_probes") == "usdt", "the VM is not probed through USDT: %s" % vm)
            check("reads and writes through its USDT probes" in herr_text,
                  "the host agent did not say it uses the USDT probes:\n%s" % herr_text[-2000:])
            recs = [o for o in objs if o.get("type") == "io" and
                    o.get("guest", "").startswith("qemu:%d/" % vm["qemu_pid"])]
            total = th.check_vm("usdt", secs, recs, vm, images[:len(DISKS)], DISKS, "gpa", True)
            merged = check_merged(secs, recs, vm["qemu_pid"], images[-1])
            total += merged
            corr = [o for o in objs if o.get("type") == "correlation"]
            check(corr and corr[0]["no_qemu_request"] == 0 and corr[0]["key_disagrees"] == 0 and
                  corr[0]["qemu_merge_unknown"] == 0, "guest requests left unmatched: %s" % corr)
            check(corr[0]["qemu_merges"] > 0, "QEMU merged none of the adjacent reads: %s" % corr)
            c = corr[0]
            # Reads and writes come from the USDT sites only (flushes from blk_aio_flush's uprobe).
            check(c["qemu_usdt_submits"] >= total and c["qemu_submits"] - c["qemu_usdt_submits"] < total,
                  "%d QEMU submits, %d of them from USDT probes, for %d guest requests: the reads and writes "
                  "were not (only) seen through USDT" % (c["qemu_submits"], c["qemu_usdt_submits"], total))
            # Every read and write was seen at a USDT site: a hit each, as the backend calls and the
            # flushes (uprobes) are. Nothing else traps.
            check(c["uprobe_hits"] == c["qemu_submits"] + c["qemu_not_virtio"] + c["backends"] + c["qemu_merges"],
                  "probe hits %d, for %d submits (%d not virtio-blk), %d backend calls and %d merges"
                  % (c["uprobe_hits"], c["qemu_submits"], c["qemu_not_virtio"], c["backends"], c["qemu_merges"]))
        except Fail as e:
            print("FAIL: %s" % e)
            print("--- host stderr tail ---\n" + herr_text[-3000:])
            th.keep_output(build, tmp, "test-host-usdt")
            return 1
        print("PASS: %d guest requests on a USDT QEMU (%s) each matched on the header address with its host I/O "
              "(raw: threads, io_uring, native; qcow2: threads; %d adjacent reads QEMU merged); %d probe hits for %d QEMU requests, %d backend "
              "calls, %d merged calls" % (total, qemu, merged, c["uprobe_hits"], c["qemu_requests"], c["backends"],
                                          c["qemu_merges"]))
        return 0
    finally:
        if host and host.poll() is None:
            host.kill()
        if os.environ.get("IOTRACER_KEEP"):
            print("kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
