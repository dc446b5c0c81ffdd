#!/usr/bin/env python3
"""End-to-end: host mode on a QEMU built with USDT probes (the dtrace trace backend, as Fedora and RHEL
build it): reads and writes come from its trace points, not from uprobes on blk_aio_*.

The QEMU is Debian's own source of the installed version, built here with
--enable-trace-backends=dtrace (build-qemu-usdt.sh, cached after the first
build). Two guests at once: usdt1 with raw images under aio=threads,
io_uring and native and a qcow2 image under aio=threads (backend calls
probed), usdt2 with raw images under threads and io_uring only (none probed:
host I/O tied by the buffers the USDT submit carries). Each also reads
adjacent blocks four at a time with its own merging off, which QEMU merges.
The guest agents stream over virtio-serial.

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
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from qtest import Fail, check, sections  # noqa: E402

_spec = importlib.util.spec_from_file_location("test_host", os.path.join(HERE, "test-host.py"))
th = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(th)

# Two guests: one whose backend calls are probed (qcow2, aio=native), one of raw images under threads and
# io_uring only (none probed: its host I/O names its request by the buffers the USDT submit carries).
VMS = [("usdt1", [("raw", "threads", "writeback"), ("raw", "io_uring", "none"), ("raw", "native", "none"),
                  ("qcow2", "threads", "writeback")], True),
       ("usdt2", [("raw", "threads", "none"), ("raw", "io_uring", "writeback")], False)]
# In each, one more raw disk with the guest's own merging off: batches of four reads of adjacent blocks reach
# QEMU as four requests, which virtio-blk merges into one call (the USDT virtio_blk_submit_multireq).
MERGE_DISK = ("raw", "threads", "writeback")
ADJACENT = 16
MERGE_SCRIPT = """echo "=== dev %(d)s"; cat /sys/block/%(d)s/dev
echo 2 > /sys/block/%(d)s/queue/nomerges
echo "=== ops %(d)s adjacent"; echo go | iowork aio-adjacent /dev/%(d)s %(n)d
"""


def check_merged(name, mdev, secs, recs, pid, image):
    """Each read of the merged batches: matched on its own header address, with the merged call's host I/O."""
    dev = secs["dev " + mdev][0].strip()
    ops = [json.loads(l) for l in secs["ops %s adjacent" % mdev] if l.strip()]
    ops = [o for o in ops if "op" in o]
    check(len(ops) == ADJACENT, "%s %s: iowork reported %d requests" % (name, mdev, len(ops)))
    got = [r for r in recs if r["dev"] == dev and r["kind"] == "aio"]
    want = sorted((o["op"], o["sector"], o["len"]) for o in ops)
    have = sorted((r["op"], r["sector"], r["len"]) for r in got)
    check(have == want, "%s %s: guest records differ from what iowork issued:\n  issued:   %s\n  reported: %s"
          % (name, mdev, want, have))
    ino = os.stat(image).st_ino
    for r in got:
        what = "%s %s adjacent read sector %d" % (name, mdev, r["sector"])
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
    args = th.host_test_args(__doc__)
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
        socks = [os.path.join(tmp, "%s.sock" % name) for name, _, _ in VMS]
        images = [th.make_images(tmp, name, disks + [MERGE_DISK]) for name, disks, _ in VMS]
        listen = [a for sk in socks for a in ("--listen", "serial:" + sk)]
        host, hout, herr = th.start_host(iotracer, tmp, ["--requests"] + listen)
        guests = []
        for i, (name, disks, _) in enumerate(VMS):
            mdev = th.names(disks + [MERGE_DISK])[-1]
            script = th.guest_script(disks, "").replace(
                "sleep 3\n", MERGE_SCRIPT % {"d": mdev, "n": ADJACENT} + "sleep 3\n", 1)
            guests.append(th.start_guest(build, socks[i], images[i], disks + [MERGE_DISK], name, "", qemu=qemu,
                                         script=script))
        done = th.finish(host, hout, herr, guests)
        if done is None:
            return 77
        objs, herr_text = done
        try:
            check(host.returncode == 0, "host agent exited %d:\n%s" % (host.returncode, herr_text[-3000:]))
            check(herr_text.count("reads and writes through its USDT probes") == len(VMS),
                  "the host agent did not say it uses the USDT probes:\n%s" % herr_text[-2000:])
            total = merged = 0
            for i, (name, disks, backend) in enumerate(VMS):
                p, _, out = guests[i]
                secs = sections(out.get("stdout", ""))
                check(p.returncode == 0 and "end" in secs, "%s failed (rc %s):\n%s\n%s" % (
                    name, p.returncode, out.get("stdout", "")[-3000:], out.get("stderr", "")[-2000:]))
                vms = [o for o in objs if o.get("type") == "vm" and o.get("event") == "traced" and o.get("name") == name]
                check(vms, "host did not trace %s: %s" % (name, [o for o in objs if o.get("type") == "vm"]))
                vm = vms[0]
                check(vm.get("qemu_probes") == "usdt", "%s is not probed through USDT: %s" % (name, vm))
                recs = [o for o in objs if o.get("type") == "io" and
                        o.get("guest", "").startswith("qemu:%d/" % vm["qemu_pid"])]
                total += th.check_vm(name, secs, recs, vm, images[i][:len(disks)], disks, "gpa", backend)
                n = check_merged(name, th.names(disks + [MERGE_DISK])[-1], secs, recs, vm["qemu_pid"], images[i][-1])
                merged += n
                total += n
            corr = [o for o in objs if o.get("type") == "correlation"]
            check(corr and corr[0]["no_qemu_request"] == 0 and corr[0]["key_disagrees"] == 0 and
                  corr[0]["qemu_merge_unknown"] == 0, "guest requests left unmatched: %s" % corr)
            c = corr[0]
            check(c["qemu_merges"] >= 2 * len(VMS), "QEMU merged %d calls of the adjacent reads: %s"
                  % (c["qemu_merges"], corr))
            # Reads and writes come from the USDT sites only (flushes from blk_aio_flush's uprobe).
            check(c["qemu_usdt_submits"] >= total and c["qemu_submits"] - c["qemu_usdt_submits"] < total,
                  "%d QEMU submits, %d of them from USDT probes, for %d guest requests: the reads and writes "
                  "were not (only) seen through USDT" % (c["qemu_submits"], c["qemu_usdt_submits"], total))
            # Every read and write was seen at a USDT site: a hit each, as the backend calls (usdt1's only)
            # and the flushes (uprobes) are. Nothing else traps.
            check(c["uprobe_hits"] == c["qemu_submits"] + c["qemu_not_virtio"] + c["backends"] + c["qemu_merges"],
                  "probe hits %d, for %d submits (%d not virtio-blk), %d backend calls and %d merges"
                  % (c["uprobe_hits"], c["qemu_submits"], c["qemu_not_virtio"], c["backends"], c["qemu_merges"]))
        except Fail as e:
            return th.failed(e, herr_text, build, tmp, "test-host-usdt")
        print("PASS: %d guest requests in 2 VMs on a USDT QEMU (%s) each matched on the header address with its "
              "host I/O (usdt1 with backend probes: raw under threads, io_uring, native, qcow2 under threads; usdt2 "
              "raw under threads and io_uring, tied by buffers; %d adjacent reads QEMU merged); %d probe hits for %d "
              "QEMU requests, %d backend calls, %d merged calls" % (total, qemu, merged, c["uprobe_hits"],
                                                                    c["qemu_requests"], c["backends"], c["qemu_merges"]))
        return 0
    finally:
        th.cleanup(host, tmp)


if __name__ == "__main__":
    sys.exit(main())
