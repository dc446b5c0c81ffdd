#!/usr/bin/env python3
"""End-to-end: iotracer in standalone mode inside a real QEMU guest.

The guest runs Debian's 6.1 kernel, which has fentry and kprobes (the host
kernel here has neither), so this is where those attach routes are exercised:
once with the defaults (fentry), once with --no-fentry (kprobe). In each run iotracer traces a known O_DIRECT pattern on a
virtio-blk disk and must report every request, with the virtio layer present.

usage: test-iotracer.py BUILD_DIR IOTRACER IOWORK
Exit 0 pass, 1 fail, 77 only if QEMU cannot run here.
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qtest import Fail, check, guest_args, sections  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TS_ORDER = ["syscall_enter", "uring_submit", "uring_async", "uring_poll", "fs", "pagecache",
            "bio_queue", "rq_insert", "rq_issue", "driver", "irq", "rq_complete", "bio_end",
            "uring_taskwork", "uring_complete", "syscall_exit"]
COUNT = 12
AIO_COUNT = 16
# The guest's RAM (run-guest.sh's default, all of it below the PCI hole on -machine pc), with slack: the
# virtio header GPAs are physical addresses within it.
GUEST_RAM = 1 << 30
GPA_BOUND = GUEST_RAM + (1 << 30)
# The disks the guest gets, and what iotracer must call their driver.
DISKS = [("vda", "virtio-blk", "raw", "virtio"), ("nvme0n1", "nvme", "qcow2", "nvme"), ("sda", "scsi", "raw", "scsi")]

GUEST_SCRIPT = r"""
set -u
ready() {  # PID ERRFILE LABEL: wait until that tracer is attached
  i=0
  while ! grep -q 'layer aio' $2 2>/dev/null; do
    i=$((i + 1))
    if [ $i -gt 1200 ] || ! kill -0 $1 2>/dev/null; then
      echo "=== $3 failed-start"; cat $2; return 1
    fi
    sleep 0.1
  done
}
run_case() {
  label=$1; shift
  rm -f /tmp/t.json /tmp/t.err /tmp/ops.json /tmp/r.json /tmp/r.err
  iotracer --json --no-status --comm iowork "$@" -o /tmp/t.json 2>/tmp/t.err &
  tp=$!
  ready $tp /tmp/t.err $label || return 1
  if [ $ring = 1 ]; then
    # A second tracer, started while kallsyms hides addresses, must take the direct map's base from
    # the virtio ring instead of page_offset_base: both see the same requests.
    kr=$(cat /proc/sys/kernel/kptr_restrict)
    echo 2 > /proc/sys/kernel/kptr_restrict
    iotracer --json --no-status --comm iowork --dev /dev/vda "$@" -o /tmp/r.json 2>/tmp/r.err &
    rp=$!
    ready $rp /tmp/r.err "$label ring" || return 1
    echo $kr > /proc/sys/kernel/kptr_restrict
  fi
  for d in vda nvme0n1 sda; do
    echo go | iowork direct /dev/$d %(count)d > /tmp/ops.$d.json
  done
  # 4 requests in flight at a time.
  echo go | iowork aio /dev/vda %(aio)d > /tmp/ops.vda-aio.json
  sleep 1
  kill -INT $tp
  wait $tp
  echo "=== $label rc $?"
  if [ $ring = 1 ]; then
    kill -INT $rp
    wait $rp
    echo "=== $label ring rc $?"
    echo "=== $label ring trace"; cat /tmp/r.json
    echo "=== $label ring stderr"; cat /tmp/r.err
  fi
  for d in vda nvme0n1 sda vda-aio; do echo "=== $label ops $d"; cat /tmp/ops.$d.json; done
  echo "=== $label trace"; cat /tmp/t.json
  echo "=== $label stderr"; cat /tmp/t.err
}
for d in vda nvme0n1 sda; do echo "=== dev $d"; cat /sys/block/$d/dev; done
echo "=== page_offset_base"; grep ' page_offset_base$' /proc/kallsyms
echo "=== iomem"; cat /proc/iomem
ring=1 ; run_case fentry
ring=0 ; run_case kprobe --no-fentry
echo "=== end"
""" % {"count": COUNT, "aio": AIO_COUNT}





def ram_ranges(secs):
    """The guest's top-level "System RAM" ranges in its /proc/iomem."""
    ranges = []
    for line in secs["iomem"]:
        span, _, name = line.partition(" : ")
        if name.strip() == "System RAM" and not line.startswith(" "):
            lo, hi = span.split("-")
            ranges.append((int(lo, 16), int(hi, 16)))
    check(ranges and ranges[-1][1] > 0, "guest /proc/iomem shows no RAM: %s" % secs["iomem"][:20])
    return ranges


def check_vq_keys(what, recs, ranges):
    """Virtio header GPAs: physical addresses in RAM, 8-byte aligned, distinct among requests in flight
    together. Returns how many pairs of requests were in flight together."""
    spans = []
    for r in recs:
        gpa = r.get("virtio_hdr_gpa")
        check(gpa, "%s: no virtio_hdr_gpa: %s" % (what, r))
        check(gpa % 8 == 0, "%s: virtio_hdr_gpa %#x not 8-byte aligned" % (what, gpa))
        check(gpa < GPA_BOUND, "%s: virtio_hdr_gpa %#x beyond the guest's RAM" % (what, gpa))
        check(any(lo <= gpa and gpa + 15 <= hi for lo, hi in ranges),
              "%s: virtio_hdr_gpa %#x in no System RAM range %s" % (what, gpa, [(hex(a), hex(b)) for a, b in ranges]))
        spans.append((r["ts_ns"]["rq_issue"], r["ts_ns"]["rq_complete"], r))
    overlapping = 0
    for i, (ia, ca, a) in enumerate(spans):
        for ib, cb, b in spans[i + 1:]:
            if ia < cb and ib < ca:
                overlapping += 1
                check(a["virtio_hdr_gpa"] != b["virtio_hdr_gpa"], "%s: requests in flight together share "
                      "virtio_hdr_gpa %#x:\n  %s\n  %s" % (what, a["virtio_hdr_gpa"], a, b))
    return overlapping


def check_vq_case(secs, label, objs, ring):
    """The virtio-blk key of each request on vda, and the same key from the ring's base (ring)."""
    ranges = ram_ranges(secs)
    dev = secs["dev vda"][0].strip()
    sync = [o for o in objs if o.get("type") == "io" and o["kind"] == "syscall"
            and o["syscall"] in ("pread64", "pwrite64") and o["dev"] == dev]
    check_vq_keys("%s vda" % label, sync, ranges)
    ops = [json.loads(l) for l in secs["%s ops vda-aio" % label] if l.strip()]
    want = sorted((o["op"], o["sector"], o["len"]) for o in ops if "op" in o)
    aio = [o for o in objs if o.get("type") == "io" and o["kind"] == "aio" and o["dev"] == dev]
    got = sorted((r["op"], r["sector"], r["len"]) for r in aio)
    check(len(want) == AIO_COUNT and want == got, "%s vda aio: requests differ\n  issued:   %s\n  reported: %s" %
          (label, want, got))
    check(check_vq_keys("%s vda aio" % label, aio, ranges) > 0,
          "%s: no two aio requests were in flight together: distinct keys untested" % label)
    if not ring:
        return
    check(label + " ring rc 0" in secs, "%s: the ring-based tracer did not exit 0:\n%s" % (
        label, "\n".join(secs.get(label + " ring stderr", []))))
    other = {}
    for o in (json.loads(l) for l in secs[label + " ring trace"] if l.strip()):
        if o.get("type") == "io" and o["dev"] == dev and o["kind"] in ("syscall", "aio"):
            other[(o["kind"], o["op"], o["sector"], o["len"])] = o.get("virtio_hdr_gpa")
    for r in sync + aio:
        k = (r["kind"], r["op"], r["sector"], r["len"])
        check(k in other, "%s: the ring-based tracer missed %s" % (label, r))
        check(other[k] == r["virtio_hdr_gpa"], "%s: virtio_hdr_gpa %#x from page_offset_base, %s from the "
              "virtio ring, for %s" % (label, r["virtio_hdr_gpa"], other[k] and hex(other[k]), r))


def check_case(secs, label, fs_route, virtio_route, ring=False):
    check(label + " rc 0" in secs, "%s: iotracer did not exit 0: %s\n%s" % (
        label, [k for k in secs if k.startswith(label)], "\n".join(secs.get(label + " stderr", []))))
    objs = [json.loads(l) for l in secs[label + " trace"] if l.strip()]
    layers = {o["layer"]: o for o in objs if o.get("type") == "layer"}
    for name in ("syscall", "fs", "block", "virtio", "nvme", "scsi"):
        check(layers[name]["state"] == "on", "%s: layer %s not on: %s" % (label, name, layers[name]))
    check(layers["fs"]["route"].startswith(fs_route), "%s: fs route is %r" % (label, layers["fs"]["route"]))
    check(layers["virtio"]["route"].startswith(virtio_route),
          "%s: virtio route is %r" % (label, layers["virtio"]["route"]))
    # 6.1 has kernel BTF: the tp_btf programs (typed reads the verifier must accept) are the ones loaded.
    check(layers["block"]["route"].startswith("tp_btf"), "%s: block route is %r" % (label, layers["block"]["route"]))
    stats = [o for o in objs if o.get("type") == "stats"]
    check(stats and stats[-1]["lost"] == 0, "%s: loss or no stats: %s" % (label, stats))
    for disk, driver, _, _ in DISKS:
        ops = [json.loads(l) for l in secs["%s ops %s" % (label, disk)] if l.strip()]
        ops = [o for o in ops if "op" in o]
        check(len(ops) == COUNT, "%s: iowork reported %d requests on %s" % (label, len(ops), disk))
        # --comm iowork also catches the dynamic loader reading libraries from the initramfs: keep the disk's.
        dev = secs["dev " + disk][0].strip()
        recs = [o for o in objs if o.get("type") == "io" and o["kind"] == "syscall"
                and o["syscall"] in ("pread64", "pwrite64") and o["dev"] == dev]
        check_disk(label, disk, driver, ops, recs)
    check_vq_case(secs, label, objs, ring)


def check_disk(label, disk, driver, ops, recs):
    want = sorted((o["op"], o["sector"], o["len"]) for o in ops)
    got = sorted((r["op"], r["sector"] if r["sector"] is not None else -1, r["len"]) for r in recs)
    check(want == got, "%s %s: requests differ\n  issued:   %s\n  reported: %s" % (label, disk, want, got))
    for r in recs:
        check(r.get("driver") == driver, "%s: %s not seen as %s: %s" % (label, disk, driver, r))
        for k in ("syscall_enter", "fs", "bio_queue", "rq_issue", "driver", "rq_complete", "syscall_exit"):
            check(k in r["ts_ns"], "%s %s: no %s stamp: %s" % (label, disk, k, r))
        ts = [r["ts_ns"][k] for k in TS_ORDER if k in r["ts_ns"]]
        check(ts == sorted(ts), "%s: stamps out of order: %s" % (label, r["ts_ns"]))
        check(sum(s["ns"] for s in r["split_ns"]) == r["total_ns"], "%s: split does not add up" % label)
        # The virtio kick (virtqueue_notify) follows the issue, so its driver segment is real time; nvme
        # sets its command up before the issue, so its hand-off is stamped at the issue.
        if driver == "virtio-blk":
            check(r["ts_ns"]["driver"] > r["ts_ns"]["rq_issue"], "%s: kick not after issue: %s" % (label, r["ts_ns"]))
        if driver in ("virtio-blk", "nvme"):
            check("irq" in r["ts_ns"], "%s %s: no device interrupt stamp: %s" % (label, disk, r["ts_ns"]))


def main():
    args = guest_args(__doc__)
    if isinstance(args, int):
        return args
    build, iotracer, iowork = args
    with tempfile.TemporaryDirectory(prefix="iotracer-qemu-") as tmp:
        cmd = [os.path.join(HERE, "run-guest.sh"), "--build-dir", build, "--timeout", "600"]
        for name, _, fmt, iface in DISKS:
            img = os.path.join(tmp, name + "." + fmt)
            if fmt == "raw":
                with open(img, "wb") as f:
                    f.truncate(64 << 20)
            else:
                subprocess.run(["qemu-img", "create", "-q", "-f", fmt, img, "64M"], check=True)
            cmd += ["--disk", "%s,format=%s,if=%s" % (img, fmt, iface)]
        r = subprocess.run(cmd + ["--", GUEST_SCRIPT], capture_output=True, text=True)
    if r.returncode == 77:
        print("SKIP: QEMU cannot run here: " + r.stderr[-2000:])
        return 77
    secs = sections(r.stdout)
    try:
        check(r.returncode == 0 and "end" in secs, "guest run failed (rc %d)\n%s\n%s" % (
            r.returncode, r.stdout[-4000:], r.stderr[-4000:]))
        # kallsyms exports page_offset_base here: the first tracer of each run reads it.
        check([l for l in secs["page_offset_base"] if l.strip() and int(l.split()[0], 16)],
              "guest kallsyms has no page_offset_base: %s" % secs["page_offset_base"])
        check_case(secs, "fentry", "fentry", "fentry virtio_queue_rq", ring=True)
        check_case(secs, "kprobe", "kprobe", "kprobe virtio_queue_rq")
    except Fail as e:
        print("FAIL: %s" % e)
        print("--- guest stdout tail ---\n" + r.stdout[-3000:])
        return 1
    print("PASS: %d requests on each of virtio-blk, nvme and scsi traced in the guest, through the fentry "
          "and the kprobe routes; virtio header GPAs agree from page_offset_base and from the ring" % COUNT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
