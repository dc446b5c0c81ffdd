#!/usr/bin/env python3
"""End-to-end: host mode joins each guest request to the QEMU request and host I/O that served it.

Two QEMU guests run at once. The first has six virtio-blk disks: raw and
qcow2 images, each under aio=threads, aio=native (cache=none) and
aio=io_uring; its backend calls are probed. The second has four raw images
under aio=threads and io_uring, cached and not (cache=none): a QEMU with only
such drives has no backend call probed, and its host I/O names its request
by the guest's data buffers it carries.
In each guest the guest agent streams over virtio-serial to one host agent
that traces both QEMU processes (uprobes) and the host kernel beneath them.
Each guest issues a known pattern on every disk: O_DIRECT reads and writes
one at a time (iowork direct), and libaio reads four in flight (iowork aio).

Asserted per request, not as a total: it is matched on the exact key (the
header's guest-physical address) to a QEMU request of the same sector,
length and operation, in its own VM only (the second guest's agent runs
without its virtio layer, so it gives no header address: its requests must
match on the fallback key, sector, length and operation, all the same); the host I/O QEMU issued for it
was found, through the host path its aio mode takes (a system call from a
QEMU worker thread, Linux AIO, io_uring), on its own image file, at the
same offset for raw images. Then: a QEMU whose version is not in the
layout table is refused with a clear message.

usage: test-host.py BUILD_DIR IOTRACER IOWORK
Exit 0 pass, 1 fail, 77 only if QEMU cannot run here.
"""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qtest import Fail, check, guest_args, sections  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import perfetto_test  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DIRECT = 12
AIO = 16
# (format, aio, cache): each guest's disks, vda, vdb, ... in this order.
VM_DISKS = [[("raw", "threads", "writeback"), ("qcow2", "threads", "writeback"),
             ("raw", "native", "none"), ("qcow2", "native", "none"),
             ("raw", "io_uring", "writeback"), ("qcow2", "io_uring", "writeback")],
            # Raw images under threads and io_uring only: no backend call probed in this QEMU.
            [("raw", "threads", "writeback"), ("raw", "threads", "none"),
             ("raw", "io_uring", "writeback"), ("raw", "io_uring", "none")]]
BACKEND_PROBES = [True, False]


def names(disks):
    return ["vd" + chr(ord("a") + i) for i in range(len(disks))]
PORT = "/dev/virtio-ports/org.iotracer.0"
HOST_KIND = {"threads": "syscall", "native": "aio", "io_uring": "io_uring"}

GUEST_SCRIPT = r"""
set -u
for d in %(names)s; do echo "=== dev $d"; cat /sys/block/$d/dev; done
iotracer --mode guest --connect serial:%(port)s --json --no-status --comm iowork %(agent_args)s > /tmp/g.json 2>/tmp/g.err &
gp=$!
i=0
while ! grep -q '"event":"ready"' /tmp/g.json; do
  i=$((i + 1)); if [ $i -gt 1800 ] || ! kill -0 $gp 2>/dev/null; then echo "=== no-link"; cat /tmp/g.err; exit 1; fi
  sleep 0.1
done
for d in %(names)s; do
  echo "=== ops $d direct"; echo go | iowork direct /dev/$d %(direct)d
  echo "=== ops $d aio"; echo go | iowork aio /dev/$d %(aio)d
done
sleep 3
kill -INT $gp
wait $gp
echo "=== guest rc $?"
echo "=== guest stderr"; cat /tmp/g.err
echo "=== end"
"""
# The second VM's guest agent leaves out the virtio layer: its records carry no header address,
# so the host joins them on the fallback key (drive, sector, length, operation).
AGENT_ARGS = ["", "--layers syscall,block,io_uring,aio"]
MATCH = ["gpa", "sector"]


def guest_script(disks, agent_args):
    return GUEST_SCRIPT % {"names": " ".join(names(disks)), "port": PORT, "direct": DIRECT, "aio": AIO,
                           "agent_args": agent_args}





def make_images(d, tag, disks):
    paths = []
    for i, (fmt, _, _) in enumerate(disks):
        p = os.path.join(d, "%s-%d.%s" % (tag, i, fmt))
        # Allocated up front, so that reads reach the host's disk (a hole reads as zeroes without I/O).
        if fmt == "raw":
            subprocess.run(["dd", "if=/dev/zero", "of=" + p, "bs=1M", "count=64", "conv=fsync", "status=none"], check=True)
        else:
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=full", p, "64M"],
                           check=True)
        paths.append(p)
    return paths


def start_guest(build, sock, images, disks, name, agent_args, qemu=None, script=None):
    cmd = [os.path.join(HERE, "run-guest.sh"), "--build-dir", build, "--timeout", "600",
           "--serial-socket", sock + ",name=org.iotracer.0", "--qemu-arg=-name", "--qemu-arg=" + name]
    if qemu:
        cmd += ["--qemu", qemu]
    for img, (fmt, aio, cache) in zip(images, disks):
        cmd += ["--disk", "%s,format=%s,if=virtio,aio=%s,cache=%s" % (img, fmt, aio, cache)]
    p = subprocess.Popen(cmd + ["--", script or guest_script(disks, agent_args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    out = {}
    t = threading.Thread(target=lambda: out.update(zip(("stdout", "stderr"), p.communicate())), daemon=True)
    t.start()
    return p, t, out


def start_host(iotracer, tmp, args):
    """The host agent writing JSON to tmp/host.json (stderr tmp/host.err), once it listens."""
    hout = open(os.path.join(tmp, "host.json"), "w")
    herr = open(os.path.join(tmp, "host.err"), "w+")
    host = subprocess.Popen([iotracer, "--mode", "host", "--json"] + args, stdout=hout, stderr=herr, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and '"type":"listening"' not in open(hout.name).read():
        check(host.poll() is None, "host agent exited: %s" % open(herr.name).read())
        time.sleep(0.1)
    return host, hout, herr


def keep_output(build, tmp, test):
    """The host agent's whole output, kept for a failure that does not come back on the next run."""
    keep = os.path.join(build, "qemu-test", "logs", "%s-failed-%d.json" % (test, int(time.time())))
    try:
        os.makedirs(os.path.dirname(keep), exist_ok=True)
        shutil.copy(os.path.join(tmp, "host.json"), keep)
        print("the host agent's output: %s" % keep)
    except OSError as err:
        print("the host agent's output could not be kept: %s" % err)


def host_test_args(doc):
    """(BUILD_DIR, IOTRACER, IOWORK) from the command line, or the exit code: 77 without root (BPF)."""
    if os.geteuid() != 0:
        print("SKIP: host mode loads BPF programs: needs root")
        return 77
    return guest_args(doc)


def cleanup(host, tmp):
    """The host agent stopped if it still runs; the test's files removed (kept with IOTRACER_KEEP set)."""
    if host and host.poll() is None:
        host.kill()
    if os.environ.get("IOTRACER_KEEP"):
        print("kept %s" % tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def failed(err, herr_text, build, tmp, test):
    """A failure said, with the host agent's last words and its whole output kept: the exit code, 1."""
    print("FAIL: %s" % err)
    print("--- host stderr tail ---\n" + herr_text[-3000:])
    keep_output(build, tmp, test)
    return 1


def finish(host, hout, herr, guests):
    """Waits for the guests, stops the host agent: (its JSON objects, its stderr), or None if QEMU cannot run."""
    for _, t, _ in guests:
        t.join(timeout=700)
    time.sleep(1)
    host.send_signal(signal.SIGINT)
    host.wait(timeout=60)
    hout.close()
    if any(p.returncode == 77 for p, _, _ in guests):
        print("SKIP: QEMU cannot run here: " + guests[0][2].get("stderr", "")[-2000:])
        return None
    herr.seek(0)
    return [json.loads(l) for l in open(hout.name) if l.strip()], herr.read()


SPLIT_QEMU = {"kick_to_qemu", "qemu_to_host", "host_io", "host_to_guest_irq"}


def check_vm(name, secs, recs, vm, images, disks, match, backend_probes, split=SPLIT_QEMU, seen_at="qemu"):
    """Every request the guest issued, matched in its own VM on the key it gave, down to its image file.

    split: the segments each request's latency split must have; seen_at: where its QEMU request was seen
    (QEMU's own probes, or on the kernel route the host kernel's io_uring submission, host_submit).
    """
    check("guest rc 0" in secs, "%s: guest agent failed:\n%s" % (name, "\n".join(secs.get("guest stderr", []))))
    check(vm.get("backend_probes") is backend_probes, "%s: backend calls probed: %s, expected %s" %
          (name, vm.get("backend_probes"), backend_probes))
    pid = vm["qemu_pid"]
    inodes = [os.stat(p).st_ino for p in images]
    total = 0
    for i, disk in enumerate(names(disks)):
        fmt, aio, cache = disks[i]
        dev = secs["dev " + disk][0].strip()
        for mode, want_n in (("direct", DIRECT), ("aio", AIO)):
            ops = [json.loads(l) for l in secs["ops %s %s" % (disk, mode)] if l.strip()]
            ops = [o for o in ops if "op" in o]
            check(len(ops) == want_n, "%s %s %s: iowork reported %d requests" % (name, disk, mode, len(ops)))
            kind = "aio" if mode == "aio" else "syscall"
            got = [r for r in recs if r["dev"] == dev and r["kind"] == kind and
                   (kind == "aio" or r.get("syscall") in ("pread64", "pwrite64"))]
            want = sorted((o["op"], o["sector"], o["len"]) for o in ops)
            have = sorted((r["op"], r["sector"], r["len"]) for r in got)
            check(have == want, "%s %s %s: guest records differ from what iowork issued:\n  issued:   %s\n  "
                  "reported: %s\n  (%d records of this VM on %s)" % (name, disk, mode, want, have, len(recs),
                                                                  sorted({(r["dev"], r["kind"]) for r in recs})))
            for r in got:
                h = r["host"]
                what = "%s %s (%s, aio=%s, cache=%s) %s sector %s" % (name, disk, fmt, aio, cache, r["op"],
                                                                       r["sector"])
                check(h["match"] == match, "%s: not matched on the %s key: %s" % (what, match, h))
                check(h["qemu_pid"] == pid, "%s: matched in QEMU pid %s, its VM is %d" % (what, h["qemu_pid"], pid))
                q = h["qemu"]
                if match == "gpa":
                    check(q["gpa"] == r["virtio_hdr_gpa"], "%s: header address differs: %s" % (what, q))
                else:
                    check("virtio_hdr_gpa" not in r, "%s: the guest gave a header address" % what)
                check((q["op"], q["sector"], q["len"]) == (r["op"], r["sector"], r["len"]),
                      "%s: QEMU request %s is not the guest's" % (what, q))
                check(q.get("seen_at") == seen_at, "%s: QEMU request seen at %s, not %s" % (what, q.get("seen_at"),
                                                                                             seen_at))
                check(h["host_io"], "%s: no host I/O found for it: %s" % (what, h))
                for io in h["host_io"]:
                    check(io["backend"] == aio and io["kind"] == HOST_KIND[aio],
                          "%s: host I/O %s does not take the aio=%s path" % (what, io, aio))
                    check(io["inode"] == inodes[i], "%s: host I/O on inode %d, the image is %d"
                          % (what, io["inode"], inodes[i]))
                if fmt == "raw":
                    check(len(h["host_io"]) == 1 and h["host_io"][0]["offset"] == r["sector"] * 512 and
                          h["host_io"][0]["len"] == r["len"], "%s: raw image I/O at %s" % (what, h["host_io"]))
                    # A raw image hands the guest's own buffers down: the backend call is tied to this
                    # request by them, not by the thread alone (this checks the layout's iov offsets too).
                    check(h["host_io"][0]["linked_by"] == "buffers",
                          "%s: host I/O tied to its request by %s" % (what, h["host_io"][0]["linked_by"]))
                segs = {s["seg"] for s in h["split_ns"]}
                check(split <= segs, "%s: latency split incomplete: %s" % (what, h["split_ns"]))
                check(not (segs & ({"kick_to_qemu", "qemu_to_host", "kick_to_host"} - split)),
                      "%s: split has segments of another route: %s" % (what, h["split_ns"]))
                total += 1
    return total


def check_trace(path, objs):
    """In the Perfetto trace, each joined request is one flow: guest, QEMU, host I/O, back in the guest."""
    try:
        packets = perfetto_test.decode(path)
        flows, _, _ = perfetto_test.analyse(packets)
    except perfetto_test.Fail as e:
        raise Fail("Perfetto trace: %s" % e)
    # QEMU's own I/O is on its threads' tracks, named by their command names (read from /proc: the host
    # kernel's compact records carry none).
    qpids = {o["qemu_pid"] for o in objs if o.get("type") == "vm" and o.get("event") == "traced"}
    threads = [perfetto_test.one(perfetto_test.one(p, "track_descriptor"), "thread") for p in packets
               if "thread" in perfetto_test.one(p, "track_descriptor", {})]
    names = [perfetto_test.one(t, "thread_name") for t in threads if perfetto_test.one(t, "pid") in qpids]
    check(names and all(names), "QEMU thread tracks without a name: %s" % names)
    want = sum(1 for o in objs if o.get("type") == "io" and o.get("host", {}).get("host_io"))
    good = 0
    for sl in flows.values():
        names = [perfetto_test.one(s[3], "name") for s in sl]
        if "host_io" not in names:
            continue
        # The flow is in time order (the trace processor's rule). Guest and host times agree only
        # within the clock's uncertainty (early on, before good samples, up to milliseconds), so the
        # guest's and the host's slices may interleave; the flow must hold both sides.
        host = ("kick_to_qemu", "qemu_to_host", "host_io")
        check(all(n in names for n in host), "flow misses a host slice: %s" % names)
        # QEMU's part on the track of the QEMU thread that submitted it, the host I/O on its thread's.
        where = {perfetto_test.one(s[3], "name"): s[2] for s in sl}
        check(where["kick_to_qemu"].startswith("qemu thread ") and where["qemu_to_host"].startswith("qemu thread "),
              "QEMU slices on %s, %s" % (where["kick_to_qemu"], where["qemu_to_host"]))
        check(where["host_io"].startswith("host I/O thread "), "host I/O slice on %s" % where["host_io"])
        # Back in the guest: its interrupt and completion, or (no virtio layer: vm2) the device slice
        # that spans the host's part to the completion.
        check(any(n in names for n in ("syscall", "block")) and
              any(n in names for n in ("irq", "completion", "device")), "flow misses the guest's side: %s" % names)
        good += 1
    check(good == want, "%d flows reach the host's QEMU and host I/O tracks, %d joined requests have host I/O"
          % (good, want))
    return good


def check_refusal(iotracer, tmp):
    """A QEMU of a version not in the table: refused, clearly, never misread."""
    src = shutil.which("qemu-system-x86_64")
    fake = os.path.join(tmp, "qemu-system-x86_64")
    data = open(src, "rb").read()
    i = data.find(b"QEMU emulator version ")
    check(i >= 0, "no version banner in %s" % src)
    j = i + len(b"QEMU emulator version ")
    k = j
    while data[k:k + 1] in b"0123456789.":
        k += 1
    fake_ver = (b"9.9." + b"9" * 20)[:k - j]
    with open(fake, "wb") as f:
        f.write(data[:j] + fake_ver + data[k:])
    os.chmod(fake, 0o755)
    # A copy outside QEMU's install looks for its modules (TCG is one) relative to itself: point it at
    # the installed ones, whose stamp the banner does not change. No KVM needed.
    prefix = os.path.dirname(os.path.dirname(os.path.realpath(src)))
    mods = glob.glob(os.path.join(prefix, "lib", "*", "qemu", "accel-tcg-x86_64.so")) + \
        glob.glob(os.path.join(prefix, "lib", "qemu", "accel-tcg-x86_64.so"))
    env = dict(os.environ, QEMU_MODULE_DIR=os.path.dirname(mods[0])) if mods else None
    q = subprocess.Popen([fake, "-M", "none", "-accel", "tcg", "-nodefaults", "-display", "none", "-S"],
                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    time.sleep(1)
    try:
        if q.poll() is not None:
            raise Fail("the patched QEMU did not start: %s" % q.stderr.read().decode()[-300:])
        r = subprocess.run([iotracer, "--mode", "host", "--qemu-pid", str(q.pid), "--listen",
                            "unix:" + os.path.join(tmp, "x.sock"), "--duration", "1"], capture_output=True,
                           text=True, timeout=60)
    finally:
        q.kill()
        q.wait()
    check(r.returncode == 1 and "not in the layout table" in r.stderr and fake_ver.decode() in r.stderr,
          "QEMU %s was not refused clearly (exit %d): %s" % (fake_ver.decode(), r.returncode, r.stderr[-600:]))
    return fake_ver.decode()


def main():
    args = host_test_args(__doc__)
    if isinstance(args, int):
        return args
    build, iotracer, iowork = args
    tmp = tempfile.mkdtemp(prefix="iotracer-host-", dir="/var/tmp")
    host = None
    try:
        socks = [os.path.join(tmp, "vm%d.sock" % i) for i in (1, 2)]
        images = [make_images(tmp, "vm%d" % (i + 1), VM_DISKS[i]) for i in (0, 1)]
        trace = os.path.join(tmp, "host.pftrace")
        host, hout, herr = start_host(iotracer, tmp, ["--summary", "--requests", "--perfetto", trace,
                                                      "--listen", "serial:" + socks[0], "--listen", "serial:" + socks[1]])
        guests = [start_guest(build, socks[i], images[i], VM_DISKS[i], "vm%d" % (i + 1), AGENT_ARGS[i])
                  for i in (0, 1)]
        done = finish(host, hout, herr, guests)
        if done is None:
            return 77
        objs, herr_text = done
        try:
            check(host.returncode == 0, "host agent exited %d:\n%s" % (host.returncode, herr_text[-3000:]))
            vms = {o["name"]: o for o in objs if o.get("type") == "vm" and o.get("event") == "traced"}
            total = 0
            for i, (p, _, out) in enumerate(guests):
                name = "vm%d" % (i + 1)
                secs = sections(out.get("stdout", ""))
                check(p.returncode == 0 and "end" in secs, "%s failed (rc %s):\n%s\n%s" % (
                    name, p.returncode, out.get("stdout", "")[-3000:], out.get("stderr", "")[-2000:]))
                check(name in vms, "host did not trace %s: %s" % (name, list(vms)))
                recs = [o for o in objs if o.get("type") == "io" and o.get("guest", "").startswith(
                    "qemu:%d/" % vms[name]["qemu_pid"])]
                total += check_vm(name, secs, recs, vms[name], images[i], VM_DISKS[i], MATCH[i], BACKEND_PROBES[i])
            corr = [o for o in objs if o.get("type") == "correlation"]
            check(corr and corr[0]["no_qemu_request"] == 0 and corr[0]["key_disagrees"] == 0 and
                  corr[0]["no_vm"] == 0, "guest requests left unmatched: %s" % corr)
            check([o for o in objs if o.get("type") == "vm_summary"], "no guest-to-host summary")
            # Debian's QEMU has no USDT probes: every submit came from the blk_aio_* uprobes.
            check(corr[0].get("qemu_usdt_submits") == 0 and
                  all(v.get("qemu_probes") == "uprobes" for v in vms.values()),
                  "USDT probes used on a QEMU without them: %s, %s" % (corr, list(vms.values())))
            # vm2's backend calls are not probed: one hit per submit, plus one per backend call of vm1's.
            c = corr[0]
            check(c["uprobe_hits"] == c["qemu_submits"] + c["qemu_not_virtio"] + c["backends"],
                  "uprobe hits %d, for %d submits (%d not virtio-blk) and %d backend calls: vm2's backend "
                  "calls trapped" % (c["uprobe_hits"], c["qemu_submits"], c["qemu_not_virtio"], c["backends"]))
            # Debian's QEMU 7.2 is the build whose blk_aio_* code the probe table checks: each
            # hit there must be one emulated trap, not a single-stepped entry.
            check("single-stepped" not in herr_text,
                  "the qemu layer fell back to single-stepped probes (QEMU's code differs from the table in "
                  "common/qemu.c; re-check it): %s" % [l for l in herr_text.splitlines() if "single-stepped" in l])
            flows_ok = check_trace(trace, objs)
            ver = check_refusal(iotracer, tmp)
        except Fail as e:
            return failed(e, herr_text, build, tmp, "test-host")
        c = corr[0]
        print("PASS: %d guest requests in 2 VMs (raw and qcow2; threads, native, io_uring) each matched in its own "
              "VM, with its host I/O: vm1 on the header address, vm2 (no virtio layer) on drive/sector/length/op; %d uprobe hits for %d QEMU requests; %d Perfetto "
              "flows from guest through QEMU and host I/O back to the guest; QEMU %s refused; of %d backend calls "
              "%d tied to their request by its buffers (%d made in a later turn), %d not tied; vm2 (no backend "
              "probes): %d host I/Os tied by their buffers"
              % (total, c["uprobe_hits"], c["qemu_requests"], flows_ok, ver, c["backends"], c["backends_by_iov"],
                 c["backends_relinked"], c["backends_unlinked"], c["host_by_buffers"]))
        return 0
    finally:
        cleanup(host, tmp)


if __name__ == "__main__":
    sys.exit(main())
