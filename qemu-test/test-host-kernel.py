#!/usr/bin/env python3
"""End-to-end: host mode's kernel route (--qemu-route kernel): a VM whose drives are all raw images under
aio=io_uring or native is traced with no probe in QEMU, from the host kernel's io_uring and Linux AIO
submissions alone.

Three guests at once on the installed QEMU, one host agent with --qemu-route kernel:
kern1 has raw images under aio=io_uring only (cached and cache=none), plus one
more with the guest's own merging off, whose adjacent reads QEMU merges into
one io_uring call: it takes the kernel route, its host I/O tied by its
buffers. kern3 has raw images under aio=native and io_uring: it takes the
kernel route too, each submission standing for its backend call (Linux AIO
is seen per bio, by sector). kern2 has a raw image under aio=threads: it
keeps its uprobes, attached for its process alone.

Asserted per request, as in test-host.py: matched on the header's
guest-physical address to a QEMU request of the same sector, length and
operation, with the host I/O QEMU issued for it on its own image file at the
same offset; kern1's requests seen at the host's submission (their split has
kick_to_host, no stamp inside QEMU), kern2's in QEMU. In the Perfetto trace each such request's flow has one kick_to_host
slice. Then: no uprobe trapped
for kern1's reads and writes (every uprobe hit is one of kern2's submits).

usage: test-host-kernel.py BUILD_DIR IOTRACER IOWORK
Exit 0 pass, 1 fail, 77 only if QEMU cannot run here.
"""
import importlib.util
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from qtest import Fail, check, sections  # noqa: E402
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
import perfetto_test  # noqa: E402


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, path))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


th = load("test_host", "test-host.py")
tu = load("test_host_usdt", "test-host-usdt.py")

# (name, disks, route): kern1 and kern3 on the kernel route, kern2 (aio=threads) on its uprobes.
VMS = [("kern1", [("raw", "io_uring", "writeback"), ("raw", "io_uring", "none")], "kernel"),
       ("kern2", [("raw", "threads", "none"), ("raw", "io_uring", "writeback")], "uprobes"),
       ("kern3", [("raw", "native", "none"), ("raw", "io_uring", "none")], "kernel")]
MERGE_DISK = ("raw", "io_uring", "writeback")
SPLIT_KERNEL = {"kick_to_host", "host_io", "host_to_guest_irq"}


def check_flows(path, want_kernel, want_qemu):
    """In the Perfetto trace, a kernel-route request's flow has one kick_to_host slice and no QEMU stamp's."""
    try:
        flows, _, _ = perfetto_test.analyse(perfetto_test.decode(path))
    except perfetto_test.Fail as e:
        raise Fail("Perfetto trace: %s" % e)
    kernel = qemu = 0
    for sl in flows.values():
        names = [perfetto_test.one(s[3], "name") for s in sl]
        if "host_io" not in names:
            continue
        if "kick_to_host" in names:
            check("kick_to_qemu" not in names and "qemu_to_host" not in names,
                  "a flow has slices of both routes: %s" % names)
            kernel += 1
        else:
            check("kick_to_qemu" in names and "qemu_to_host" in names, "flow misses a QEMU slice: %s" % names)
            qemu += 1
    check((kernel, qemu) == (want_kernel, want_qemu), "flows through the host: %d on the kernel route, %d through "
          "QEMU's probes; joined requests with host I/O: %d and %d" % (kernel, qemu, want_kernel, want_qemu))


def main():
    args = th.host_test_args(__doc__)
    if isinstance(args, int):
        return args
    build, iotracer, iowork = args
    tmp = tempfile.mkdtemp(prefix="iotracer-kernel-", dir="/var/tmp")
    host = None
    try:
        disks = [d + ([MERGE_DISK] if name == "kern1" else []) for name, d, route in VMS]
        socks = [os.path.join(tmp, "%s.sock" % name) for name, _, _ in VMS]
        images = [th.make_images(tmp, name, disks[i]) for i, (name, _, _) in enumerate(VMS)]
        listen = [a for sk in socks for a in ("--listen", "serial:" + sk)]
        trace = os.path.join(tmp, "host.pftrace")
        host, hout, herr = th.start_host(iotracer, tmp, ["--requests", "--qemu-route", "kernel", "--perfetto", trace]
                                         + listen)
        guests = []
        for i, (name, d, route) in enumerate(VMS):
            script = th.guest_script(d, "")
            if name == "kern1":
                mdev = th.names(disks[i])[-1]
                script = script.replace("sleep 3\n", tu.MERGE_SCRIPT % {"d": mdev, "n": tu.ADJACENT} +
                                        "sleep 3\n", 1)
            guests.append(th.start_guest(build, socks[i], images[i], disks[i], name, "", script=script))
        done = th.finish(host, hout, herr, guests)
        if done is None:
            return 77
        objs, herr_text = done
        try:
            check(host.returncode == 0, "host agent exited %d:\n%s" % (host.returncode, herr_text[-3000:]))
            total = kernel_reqs = merged = 0
            flows = {}
            for i, (name, d, route) in enumerate(VMS):
                p, _, out = guests[i]
                secs = sections(out.get("stdout", ""))
                check(p.returncode == 0 and "end" in secs, "%s failed (rc %s):\n%s\n%s" % (
                    name, p.returncode, out.get("stdout", "")[-3000:], out.get("stderr", "")[-2000:]))
                vms = [o for o in objs if o.get("type") == "vm" and o.get("event") == "traced" and
                       o.get("name") == name]
                check(vms, "host did not trace %s: %s" % (name, [o for o in objs if o.get("type") == "vm"]))
                vm = vms[0]
                check(vm.get("qemu_probes") == route, "%s: traced through %s, expected %s" % (
                    name, vm.get("qemu_probes"), route))
                recs = [o for o in objs if o.get("type") == "io" and
                        o.get("guest", "").startswith("qemu:%d/" % vm["qemu_pid"])]
                flows[route] = flows.get(route, 0) + sum(1 for r in recs if r.get("host", {}).get("host_io"))
                if route == "kernel":
                    n = th.check_vm(name, secs, recs, vm, images[i][:len(d)], d, "gpa", False, split=SPLIT_KERNEL,
                                    seen_at="host_submit")
                    m = 0
                    if name == "kern1":
                        m = tu.check_merged(name, th.names(disks[i])[-1], secs, recs, vm["qemu_pid"], images[i][-1])
                    kernel_reqs += n + m
                    merged += m
                    total += n + m
                else:
                    total += th.check_vm(name, secs, recs, vm, images[i], d, "gpa", False)
            check_flows(trace, flows["kernel"], flows["uprobes"])
            corr = [o for o in objs if o.get("type") == "correlation"]
            check(corr and corr[0]["no_qemu_request"] == 0 and corr[0]["key_disagrees"] == 0 and
                  corr[0]["no_vm"] == 0, "guest requests left unmatched: %s" % corr)
            c = corr[0]
            check(c["qemu_kernel_submits"] >= kernel_reqs - merged,
                  "%d QEMU submits on the kernel route for kern1's %d requests (%d of them merged)" %
                  (c["qemu_kernel_submits"], kernel_reqs, merged))
            # Only kern2's reads and writes (and any flush) trapped: kern1's came from the host kernel.
            check(c["uprobe_hits"] == c["qemu_submits"] - c["qemu_kernel_submits"] + c["qemu_not_virtio"],
                  "uprobe hits %d, for %d submits of which %d on the kernel route (%d not virtio-blk): kern1 "
                  "trapped in QEMU" % (c["uprobe_hits"], c["qemu_submits"], c["qemu_kernel_submits"],
                                      c["qemu_not_virtio"]))
        except Fail as e:
            return th.failed(e, herr_text, build, tmp, "test-host-kernel")
        print("PASS: %d guest requests in 3 VMs each matched on the header address with its host I/O: kern1 "
              "(raw, io_uring) and kern3 (raw, native and io_uring) on the kernel route, %d requests from %d "
              "io_uring and Linux AIO submissions and no uprobe hit, %d adjacent reads QEMU merged; kern2 (raw, "
              "threads and io_uring) on its own uprobes, %d hits; %d submissions of the kernel-route VMs not a "
              "virtio-blk read or write" %
              (total, kernel_reqs, c["qemu_kernel_submits"], merged, c["uprobe_hits"], c["qemu_kernel_other"]))
        return 0
    finally:
        th.cleanup(host, tmp)


if __name__ == "__main__":
    sys.exit(main())
