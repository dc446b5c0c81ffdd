#!/usr/bin/env python3
"""End-to-end: a guest agent inside a real QEMU guest streams to a host agent over virtio-serial.

The host agent connects to the unix socket QEMU serves for a virtio-serial
port; the guest agent (Debian's 6.1 kernel, fentry routes) traces a known
O_DIRECT pattern on its virtio-blk disk and streams it. Midway the test
kills the host agent and starts another: the guest must notice through the
port, resend what was not acknowledged and report nothing lost. Checked:
the guest is named by the QEMU process that serves the socket (never by its
own claims), each request arrives once with its sector and length, the
times are on the host's clock (inside the window the host saw), and the
clock uncertainty the protocol reports. vsock is tried only where the host
has /dev/vhost-vsock.

usage: test-channel.py BUILD_DIR IOTRACER IOWORK
Exit 0 pass, 1 fail, 77 only if QEMU cannot run here.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qtest import Fail, check, guest_args, sections  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
COUNT = 12
PORT = "/dev/virtio-ports/org.iotracer.0"

GUEST_SCRIPT = r"""
set -u
echo "=== dev"; cat /sys/block/vda/dev
iotracer --mode guest --connect serial:%(port)s --json --no-status --comm iowork --dev /dev/vda \
    > /tmp/g.json 2>/tmp/g.err &
gp=$!
wait_for() {  # PATTERN COUNT FILE: until FILE has COUNT lines matching PATTERN
  i=0
  while [ "$(grep -c "$1" "$3" 2>/dev/null)" -lt "$2" ]; do
    i=$((i + 1))
    if [ $i -gt 1800 ] || ! kill -0 $gp 2>/dev/null; then echo "=== timeout $1"; cat /tmp/g.err; return 1; fi
    sleep 0.1
  done
}
wait_for '"event":"ready"' 1 /tmp/g.json
echo go | iowork direct /dev/vda %(count)d > /tmp/ops1.json
# The test kills the host agent once it has these and starts another: wait for the new connection.
wait_for '"event":"ready"' 2 /tmp/g.json
echo go | iowork direct /dev/vda %(count)d > /tmp/ops2.json
sleep 3
kill -INT $gp
wait $gp
echo "=== guest rc $?"
echo "=== ops1"; cat /tmp/ops1.json
echo "=== ops2"; cat /tmp/ops2.json
echo "=== guest json"; cat /tmp/g.json
echo "=== guest stderr"; cat /tmp/g.err
echo "=== end"
""" % {"port": PORT, "count": COUNT}





class Host:
    def __init__(self, iotracer, sock, name):
        self.name = name
        self.lines = []
        self.errf = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([iotracer, "--mode", "host", "--no-qemu", "--listen", "serial:" + sock, "--json"],
                                     stdout=subprocess.PIPE, stderr=self.errf, text=True)
        self.t = threading.Thread(target=lambda: [self.lines.append(l) for l in self.proc.stdout], daemon=True)
        self.t.start()

    def objs(self, **m):
        out = []
        for l in list(self.lines):
            o = json.loads(l)
            if all(o.get(k) == v for k, v in m.items()):
                out.append(o)
        return out

    def stderr(self):
        self.errf.seek(0)
        return self.errf.read()

    def stop(self, sig):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.t.join(timeout=10)


def io_of(host, dev):
    return [o for o in host.objs(type="io") if o.get("kind") == "syscall" and
            o.get("syscall") in ("pread64", "pwrite64") and o["dev"] == dev]


def keys(recs):
    return sorted((r["op"], r["sector"], r["len"]) for r in recs)


def main():
    args = guest_args(__doc__)
    if isinstance(args, int):
        return args
    build, iotracer, iowork = args
    notes = []
    with tempfile.TemporaryDirectory(prefix="iotracer-chan-") as tmp:
        sock = os.path.join(tmp, "serial.sock")
        img = os.path.join(tmp, "vda.raw")
        with open(img, "wb") as f:
            f.truncate(64 << 20)
        # The host agent may start first: it waits for QEMU's socket.
        h1 = Host(iotracer, sock, "host 1")
        h2 = None
        t_start = time.monotonic_ns()
        cmd = [os.path.join(HERE, "run-guest.sh"), "--build-dir", build, "--timeout", "600",
               "--disk", img + ",format=raw,if=virtio", "--serial-socket", sock + ",name=org.iotracer.0",
               "--qemu-arg=-name", "--qemu-arg=chan-test", "--", GUEST_SCRIPT]
        guest = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out = {}
        reader = threading.Thread(target=lambda: out.update(zip(("stdout", "stderr"), guest.communicate())),
                                  daemon=True)
        reader.start()
        try:
            # Phase 1 reaches host 1; once it acknowledged all of it, it dies without a goodbye.
            deadline = time.time() + 600
            qemu_pid = None
            while time.time() < deadline and guest.poll() is None:
                st = h1.objs(type="guest", event="stats")
                hello = h1.objs(type="guest", event="hello")
                if hello and qemu_pid is None:
                    qemu_pid = int(hello[0]["guest"].split(":")[1].split("/")[0])
                    exe = os.readlink("/proc/%d/exe" % qemu_pid)
                    check(os.path.basename(exe).startswith("qemu-system-"),
                          "guest named %s, but pid %d is %s" % (hello[0]["guest"], qemu_pid, exe))
                    check(hello[0]["guest"] == "qemu:%d/chan-test" % qemu_pid,
                          "guest named %r, want qemu:%d/chan-test" % (hello[0]["guest"], qemu_pid))
                if st and st[-1]["records_sent"] >= COUNT and st[-1]["records_acked"] == st[-1]["records_sent"]:
                    break
                time.sleep(0.2)
            check(qemu_pid, "host 1 never got a hello:\n%s" % h1.stderr())
            h1.stop(signal.SIGKILL)
            time.sleep(1)
            h2 = Host(iotracer, sock, "host 2")
            reader.join(timeout=600)
            t_end = time.monotonic_ns()
            time.sleep(1)
            h2.stop(signal.SIGINT)
        finally:
            if guest.poll() is None:
                guest.kill()
            h1.stop(signal.SIGKILL)
            if h2:
                h2.stop(signal.SIGKILL)
    if guest.returncode == 77:
        print("SKIP: QEMU cannot run here: " + out.get("stderr", "")[-2000:])
        return 77
    secs = sections(out.get("stdout", ""))
    try:
        check(guest.returncode == 0 and "end" in secs, "guest run failed (rc %s)\n%s\n%s" % (
            guest.returncode, out.get("stdout", "")[-4000:], out.get("stderr", "")[-3000:]))
        check("guest rc 0" in secs, "guest agent did not exit 0:\n%s" % "\n".join(secs.get("guest stderr", [])))
        dev = secs["dev"][0].strip()
        ops1 = [json.loads(l) for l in secs["ops1"] if l.strip()]
        ops2 = [json.loads(l) for l in secs["ops2"] if l.strip()]
        ops1 = [o for o in ops1 if "op" in o]
        ops2 = [o for o in ops2 if "op" in o]
        check(len(ops1) == COUNT and len(ops2) == COUNT, "iowork reported %d and %d requests" % (len(ops1), len(ops2)))
        r1, r2 = io_of(h1, dev), io_of(h2, dev)
        check(keys(r1) == keys(ops1), "host 1: requests differ\n  issued: %s\n  got:    %s" % (keys(ops1), keys(r1)))
        check(keys(r2) == keys(ops2), "host 2: requests differ\n  issued: %s\n  got:    %s" % (keys(ops2), keys(r2)))
        for r in r1 + r2:
            check(r["guest"].startswith("qemu:%d" % qemu_pid), "record from %s" % r["guest"])
            check("clock" not in r, "record left on guest time: %s" % r)
            ts = r["ts_ns"]
            check(t_start <= ts["syscall_enter"] <= ts["syscall_exit"] <= t_end,
                  "times %d..%d not inside the host's window %d..%d" % (ts["syscall_enter"], ts["syscall_exit"],
                                                                        t_start, t_end))
            check("irq" in ts and "driver" in ts and r.get("driver") == "virtio-blk",
                  "virtio-blk layers missing: %s" % r)
        gj = [json.loads(l) for l in secs["guest json"] if l.strip()]
        gs = [o for o in gj if o.get("type") == "guest_stats"]
        check(gs, "no guest_stats from the guest agent")
        s = gs[-1]
        check(s["reconnects"] == 1 and s["lost_wire"] == 0 and s["lost_kernel"] == 0 and s["unacked"] == 0 and
              s["records_acked"] == s["records_traced"], "guest lost records across the host restart: %s" % s)
        check([o for o in gj if o.get("event") == "disconnected"], "the guest did not notice the host leaving")
        clocks = h2.objs(type="guest", event="clock")
        check(clocks, "host 2 reported no clock estimate")
        c = clocks[-1]
        check(c["uncertainty_ns"] < 50000000, "clock uncertainty %d ns: the exchange is not working" % c["uncertainty_ns"])
        notes.append("clock offset %+.1f us, uncertainty %.1f us, drift %.1f ppm, %d samples (TCG, virtio-serial)"
                     % (c["offset_ns"] / 1e3, c["uncertainty_ns"] / 1e3, c["drift_ppm"], c["samples"]))
        closed = h2.objs(type="guest", event="closed")
        # After the goodbye host 2 connects to the port again (a guest agent may start anew) until QEMU exits.
        check(closed and closed[0]["reason"] == "goodbye" and closed[0]["records"] == COUNT,
              "no goodbye at host 2: %s" % closed)
    except Fail as e:
        print("FAIL: %s" % e)
        print("--- guest stdout tail ---\n" + out.get("stdout", "")[-3000:])
        print("--- host 1 ---\n" + h1.stderr()[-2000:])
        if h2:
            print("--- host 2 ---\n" + h2.stderr()[-2000:])
        return 1
    if not os.path.exists("/dev/vhost-vsock"):
        notes.append("vsock not tried: this host has no /dev/vhost-vsock")
    print("PASS: %d + %d requests from a QEMU guest over virtio-serial, across a host agent restart; %s"
          % (len(ops1), len(ops2), "; ".join(notes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
