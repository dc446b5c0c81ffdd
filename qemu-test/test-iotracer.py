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

HERE = os.path.dirname(os.path.abspath(__file__))
TS_ORDER = ["syscall_enter", "uring_submit", "uring_async", "uring_poll", "fs", "pagecache",
            "bio_queue", "rq_insert", "rq_issue", "driver", "irq", "rq_complete", "bio_end",
            "uring_taskwork", "uring_complete", "syscall_exit"]
COUNT = 12
# The disks the guest gets, and what iotracer must call their driver.
DISKS = [("vda", "virtio-blk", "raw", "virtio"), ("nvme0n1", "nvme", "qcow2", "nvme"), ("sda", "scsi", "raw", "scsi")]

GUEST_SCRIPT = r"""
set -u
run_case() {
  label=$1; shift
  rm -f /tmp/t.json /tmp/t.err /tmp/ops.json
  iotracer --json --no-status --comm iowork "$@" -o /tmp/t.json 2>/tmp/t.err &
  tp=$!
  i=0
  while ! grep -q 'layer aio' /tmp/t.err 2>/dev/null; do
    i=$((i + 1))
    if [ $i -gt 1200 ] || ! kill -0 $tp 2>/dev/null; then
      echo "=== $label failed-start"; cat /tmp/t.err; return 1
    fi
    sleep 0.1
  done
  for d in vda nvme0n1 sda; do
    echo go | iowork direct /dev/$d %(count)d > /tmp/ops.$d.json
  done
  sleep 1
  kill -INT $tp
  wait $tp
  echo "=== $label rc $?"
  for d in vda nvme0n1 sda; do echo "=== $label ops $d"; cat /tmp/ops.$d.json; done
  echo "=== $label trace"; cat /tmp/t.json
  echo "=== $label stderr"; cat /tmp/t.err
}
for d in vda nvme0n1 sda; do echo "=== dev $d"; cat /sys/block/$d/dev; done
run_case fentry
run_case kprobe --no-fentry
echo "=== end"
""" % {"count": COUNT}


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def sections(out):
    cur, secs = None, {}
    for line in out.splitlines():
        if line.startswith("=== "):
            cur = line[4:]
            secs[cur] = []
        elif cur is not None:
            secs[cur].append(line)
    return secs


def check_case(secs, label, fs_route, virtio_route):
    check(label + " rc 0" in secs, "%s: iotracer did not exit 0: %s\n%s" % (
        label, [k for k in secs if k.startswith(label)], "\n".join(secs.get(label + " stderr", []))))
    objs = [json.loads(l) for l in secs[label + " trace"] if l.strip()]
    layers = {o["layer"]: o for o in objs if o.get("type") == "layer"}
    for name in ("syscall", "fs", "block", "virtio", "nvme", "scsi"):
        check(layers[name]["state"] == "on", "%s: layer %s not on: %s" % (label, name, layers[name]))
    check(layers["fs"]["route"].startswith(fs_route), "%s: fs route is %r" % (label, layers["fs"]["route"]))
    check(layers["virtio"]["route"].startswith(virtio_route),
          "%s: virtio route is %r" % (label, layers["virtio"]["route"]))
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
    if len(sys.argv) != 4:
        print(__doc__)
        return 2
    build, iotracer, iowork = sys.argv[1:]
    b = subprocess.run([os.path.join(HERE, "build-guest.sh"), build, iotracer, iowork], capture_output=True,
                       text=True)
    if b.returncode != 0:
        print(b.stdout + b.stderr)
        print("FAIL: building the guest failed")
        return 1
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
        check_case(secs, "fentry", "fentry", "fentry virtio_queue_rq")
        check_case(secs, "kprobe", "kprobe", "kprobe virtio_queue_rq")
    except Fail as e:
        print("FAIL: %s" % e)
        print("--- guest stdout tail ---\n" + r.stdout[-3000:])
        return 1
    print("PASS: %d requests on each of virtio-blk, nvme and scsi traced in the guest, through the fentry "
          "and the kprobe routes" % COUNT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
