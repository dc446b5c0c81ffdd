#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""
--perfetto against a real workload: the real iotracer writes the trace,
protoc (our proto/perfetto_trace.proto) decodes it, and the test holds it
against what the workload did and against the rules the Perfetto trace
processor applies (tracks described before use, slices that nest, flows).

Cases:
  standalone   O_DIRECT on a loop device, with --json on stdout as well
  uring        io_uring, 4 in flight: overlapping requests on separate lanes
  summary      --summary --perfetto: records are copied out for the trace
  cut          SIGINT while a long workload runs: the file still decodes
  cli          --perfetto where it does not belong
"""
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import trace_test as tt  # noqa: E402
from trace_test import Fail, Skip, check  # noqa: E402

PROTO_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "proto")
PROTO = os.path.join(PROTO_DIR, "perfetto_trace.proto")


def parse_text(text):
    """protoc's text format into nested dicts; every field is a list of values."""
    root = {}
    stack = [root]
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.endswith("{"):
            d = {}
            stack[-1].setdefault(line[:-1].strip(), []).append(d)
            stack.append(d)
        elif line == "}":
            stack.pop()
        else:
            k, _, v = line.partition(":")
            v = v.strip()
            if v.startswith('"'):
                v = v[1:-1]
            else:
                try:
                    v = int(v)
                except ValueError:
                    pass
            stack[-1].setdefault(k.strip(), []).append(v)
    check(len(stack) == 1, "unbalanced protoc output")
    return root


def decode(path):
    if not shutil_which("protoc"):
        raise Skip("protoc is not installed (protobuf-compiler)")
    with open(path, "rb") as f:
        r = subprocess.run(["protoc", "--decode=perfetto.protos.Trace", "-I", PROTO_DIR, PROTO], stdin=f,
                           capture_output=True)
    check(r.returncode == 0, "protoc cannot decode %s: %s" % (path, r.stderr.decode()[-500:]))
    return resolve_interned(parse_text(r.stdout.decode()).get("packet", []))


def resolve_interned(packets):
    """Puts interned event and annotation names back in place, checking each was defined before its use."""
    ev_names, ann_names, str_values = {}, {}, {}
    for i, p in enumerate(packets):
        for idata in p.get("interned_data", []):
            for n in idata.get("event_names", []):
                ev_names[one(n, "iid")] = one(n, "name")
            for n in idata.get("debug_annotation_names", []):
                ann_names[one(n, "iid")] = one(n, "name")
            for n in idata.get("debug_annotation_string_values", []):
                str_values[one(n, "iid")] = one(n, "str")
        for ev in p.get("track_event", []):
            if "name_iid" in ev:
                iid = one(ev, "name_iid")
                check(iid in ev_names, "packet %d uses event name %s before it is defined" % (i, iid))
                check(one(p, "sequence_flags", 0) & 2, "packet %d uses interned names without saying so" % i)
                ev["name"] = [ev_names[iid]]
            for a in ev.get("debug_annotations", []):
                if "name_iid" in a:
                    iid = one(a, "name_iid")
                    check(iid in ann_names, "packet %d uses annotation name %s before it is defined" % (i, iid))
                    a["name"] = [ann_names[iid]]
                if "string_value_iid" in a:
                    iid = one(a, "string_value_iid")
                    check(iid in str_values, "packet %d uses string value %s before it is defined" % (i, iid))
                    a["string_value"] = [str_values[iid]]
    return packets


def shutil_which(name):
    import shutil
    return shutil.which(name)


def one(d, k, default=None):
    v = d.get(k)
    return v[0] if v else default


def annotations(ev):
    out = {}
    for a in ev.get("debug_annotations", []):
        for k in ("uint_value", "int_value", "string_value", "bool_value"):
            if k in a:
                out[one(a, "name")] = one(a, k)
    return out


def analyse(packets):
    """Checks the structure; returns (slices by flow id, instants, track names)."""
    check(packets, "the trace has no packets")
    check(one(packets[0], "sequence_flags", 0) & 1, "first packet does not clear incremental state")
    described = {}
    events = []         # (index, ts, track, event)
    for i, p in enumerate(packets):
        check(one(p, "trusted_packet_sequence_id") == 1, "packet %d has no sequence id" % i)
        check(one(p, "timestamp") is not None, "packet %d has no timestamp" % i)
        if "track_descriptor" in p:
            d = one(p, "track_descriptor")
            uuid = one(d, "uuid")
            check(uuid, "track descriptor without uuid: %s" % d)
            parent = one(d, "parent_uuid")
            if parent is not None:
                check(parent in described, "track %s described before its parent %s" % (uuid, parent))
            name = one(d, "name")
            if name is None and "process" in d:
                name = "process %s" % one(one(d, "process"), "pid")
            if name is None and "thread" in d:
                name = "thread %s" % one(one(d, "thread"), "tid")
            described[uuid] = name
        if "track_event" in p:
            ev = one(p, "track_event")
            track = one(ev, "track_uuid")
            check(track in described, "event on track %s before any descriptor of it: %s" % (track, ev))
            events.append((i, one(p, "timestamp"), track, ev))

    # Slices nest on each track the way trace_processor pairs them: in time order (ties in file
    # order), an END closes the newest open BEGIN. It must close the one written for it.
    by_track = {}
    prev = None
    for e in events:
        typ = one(e[3], "type")
        if typ == "TYPE_SLICE_END":
            check(prev and one(prev[3], "type") == "TYPE_SLICE_BEGIN" and prev[2] == e[2] and prev[0] == e[0] - 1,
                  "END at packet %d does not follow its BEGIN" % e[0])
            check(e[1] >= prev[1], "slice ends before it begins: %s .. %s" % (prev[1], e[1]))
        prev = e
        by_track.setdefault(e[2], []).append(e)
    for track, evs in by_track.items():
        stack = []
        for e in sorted(evs, key=lambda e: (e[1], e[0])):
            typ = one(e[3], "type")
            if typ == "TYPE_SLICE_BEGIN":
                stack.append(e)
            elif typ == "TYPE_SLICE_END":
                check(stack, "END without an open slice on track %s (%s)" % (described[track], e))
                b = stack.pop()
                check(b[0] == e[0] - 1, "slices overlap on track %s: the END at packet %d would close the "
                      "slice begun at packet %d" % (described[track], e[0], b[0]))
        check(not stack, "slices left open on track %s" % described[track])

    flows = {}
    instants = []
    ring_flows = {}     # io_uring links and reaps (ids with bit 63): id -> [(ts, out?, track name, event)]
    for i, ts, track, ev in events:
        typ = one(ev, "type")
        for fid in ev.get("flow_ids", []):
            if fid >> 63:
                ring_flows.setdefault(fid, []).append((ts, True, described[track], ev))
        for fid in ev.get("terminating_flow_ids", []):
            if fid >> 63:
                ring_flows.setdefault(fid, []).append((ts, False, described[track], ev))
        if typ == "TYPE_INSTANT":
            if one(ev, "name") != "reap":
                instants.append((ts, track, ev))
            continue
        if typ != "TYPE_SLICE_BEGIN":
            continue
        ids = [f for f in ev.get("flow_ids", []) + ev.get("terminating_flow_ids", []) if not f >> 63]
        check(len(ids) == 1, "a slice in %d request flows: %s" % (len(ids), ev))
        flows.setdefault(ids[0], []).append((ts, i, described[track], ev))
    # A ring flow leaves one event and ends at a later one (or never, when its reap was not seen);
    # its id may then serve again (requests are recycled). Pairs, in file order.
    pairs = []
    for fid, ends in ring_flows.items():
        pending = None
        for e in ends:
            if e[1]:
                pending = e
            else:
                check(pending, "ring flow %x ends without a start: %s" % (fid, e[3]))
                check(e[0] >= pending[0], "ring flow %x goes back in time: %s at %d, %s at %d" %
                      (fid, one(pending[3], "name"), pending[0], one(e[3], "name"), e[0]))
                pairs.append((pending, e))
                pending = None
    analyse.ring_pairs = pairs
    for fid, sl in flows.items():
        check([s[0] for s in sl] == sorted(s[0] for s in sl), "flow %d goes back in time: %s" %
              (fid, [(s[0], one(s[3], "name")) for s in sl]))
        term = [s for s in sl if fid in s[3].get("terminating_flow_ids", [])]
        check(len(term) == 1 and term[0] is sl[-1], "flow %d does not end at its last slice" % fid)
    return flows, instants, described


def flow_of(flows, op):
    """The flow whose slices carry the workload's op, sector and length."""
    for fid, sl in flows.items():
        a = annotations(sl[0][3])
        if a.get("op") == op["op"] and a.get("sector") == op["sector"] and a.get("len") == op["len"]:
            for s in sl:
                check(annotations(s[3]) == a, "slices of one request annotated differently: %s" % sl)
            return sl
    raise Fail("no flow in the trace for %s" % op)


def traced_perfetto(args, extra, count=12, mode="direct", on_ext4=False):
    """The workload on a raw loop device, or on a file of an ext4 there (on_ext4)."""
    d = tempfile.mkdtemp(prefix="iotracer-pf-")
    path = os.path.join(d, "t.pftrace")
    try:
        if on_ext4:
            with tt.ext4_on_loop() as (_, mnt):
                data = os.path.join(mnt, "data")
                tt.run(["dd", "if=/dev/zero", "of=" + data, "bs=1M", "count=16", "conv=fsync", "status=none"])
                pid, ops, recs, layers = tt.traced(args, mode, data, count, extra=["--perfetto", path] + extra)
        else:
            with tt.loop_device() as (dev, _):
                pid, ops, recs, layers = tt.traced(args, mode, dev, count, extra=["--perfetto", path] + extra)
        size = os.path.getsize(path)
        packets = decode(path)
    finally:
        subprocess.run(["rm", "-rf", d])
    return pid, ops, recs, packets, size


def case_standalone(args):
    pid, ops, recs, packets, size = traced_perfetto(args, [])
    flows, instants, tracks = analyse(packets)
    with_segs = [r for r in recs if r["split_ns"]]
    check(len(flows) == len(with_segs), "%d flows for %d requests with a latency split" %
          (len(flows), len(with_segs)))
    check(len(instants) == len(recs), "%d thread instants for %d requests" % (len(instants), len(recs)))
    for op in ops:
        sl = flow_of(flows, op)
        a = annotations(sl[0][3])
        check(a["pid"] == pid and a["comm"] == "iowork", "wrong pid/comm: %s" % a)
        rec = [r for r in recs if (r["op"], r["sector"], r["len"]) == (op["op"], op["sector"], op["len"])]
        check(len(rec) == 1, "JSON has %d records for %s" % (len(rec), op))
        rec = rec[0]
        names = [one(s[3], "name") for s in sl]
        check(names == [s["layer"] for s in rec["split_ns"]], "slices %s, split %s" % (names, rec["split_ns"]))
        t0 = min(v for v in rec["ts_ns"].values())
        check(sl[0][0] == t0, "first slice at %d, request began at %d" % (sl[0][0], t0))
        tracks_used = {s[2].split(" #")[0] for s in sl}
        check({"syscall", "block"} <= tracks_used, "layer tracks of a direct read: %s" % tracks_used)
    print("trace: %d bytes, %d packets, %d requests: %.0f bytes per request" %
          (size, len(packets), len(recs), size / max(1, len(recs))))


def case_uring(args):
    """Requests in flight together: each layer's slices spread over lanes, still one flow each."""
    pid, ops, recs, packets, size = traced_perfetto(args, [], count=32, mode="uring")
    flows, _, tracks = analyse(packets)
    check(len(flows) == len([r for r in recs if r["split_ns"]]), "%d flows for %d requests" % (len(flows), len(recs)))
    for op in ops:
        flow_of(flows, op)
    lanes = [n for n in tracks.values() if n and " #" in n]
    check(lanes, "4 requests in flight, yet every layer fit on one lane: %s" % sorted(set(tracks.values()), key=str))


def ring_tracks(tracks, pid):
    """The names of the tracks under each io_uring ring group."""
    rings = [u for u, n in tracks.items() if n and n.startswith("io_uring ring ")]
    check(rings, "no io_uring ring track: %s" % sorted(set(map(str, tracks.values()))))
    return rings


def uring_flow_of(flows, op):
    """The flow of the io_uring request (not its bios) that read op's offset and length."""
    for fid, sl in flows.items():
        a = annotations(sl[0][3])
        if str(a.get("call", "")).startswith("uring:") and a.get("offset") == op["offset"] and \
                a.get("len") == op["len"]:
            return sl
    raise Fail("no io_uring flow in the trace for %s" % op)


def case_uring_ring(args):
    """Requests punted to io-wq: each ring is a track group with its io-workers and reaps."""
    # On ext4: iomap's direct I/O shows which io-worker ran each request.
    pid, ops, recs, packets, size = traced_perfetto(args, [], count=16, mode="uring-async", on_ext4=True)
    flows, _, tracks = analyse(packets)
    ring_tracks(tracks, pid)
    for op in ops:
        sl = uring_flow_of(flows, op)
        names = [one(s[3], "name") for s in sl]
        where = {one(s[3], "name"): s[2] for s in sl}
        check("io-wq" in names, "a punted request without its io-wq slice: %s" % names)
        check(where["io-wq"].startswith("iou-wrk-"), "io-wq slice on track %s, not an io-worker's" % where["io-wq"])
        check(where["uring-submit"].startswith("requests"), "submission on track %s" % where["uring-submit"])
        a = annotations(sl[0][3])
        check(a.get("io_worker") and a["io_worker"] != pid, "no io_worker named: %s" % a)
    # The program reaps each batch before it submits the next: all but the last batch's reaps are seen.
    reaped = 0
    for out, end in analyse.ring_pairs:
        check(end[2] == "reaped" and one(end[3], "name") == "reap", "ring flow ends on %s" % end[2])
        reaped += 1
    check(reaped >= len(ops) - 4, "only %d of %d completions reached a reap" % (reaped, len(ops)))
    print("%d requests, %d reaps seen, worker tracks: %s" % (len(ops), reaped,
          sorted({n for n in tracks.values() if n and n.startswith("iou-wrk")})))


def case_uring_link(args):
    """Linked requests: an arrow from each to the next of its chain, in order."""
    pid, ops, recs, packets, size = traced_perfetto(args, [], count=16, mode="uring-link")
    flows, _, tracks = analyse(packets)
    ring_tracks(tracks, pid)
    for op in ops:
        uring_flow_of(flows, op)
    links = 0
    for out, end in analyse.ring_pairs:
        if end[2] == "reaped":
            continue
        a, b = annotations(out[3]), annotations(end[3])
        check(b.get("offset", 0) > a.get("offset", 0), "link from offset %s back to %s" %
              (a.get("offset"), b.get("offset")))
        check(b.get("linked"), "a link arrow into a request not marked linked: %s" % b)
        links += 1
    # A linked request gets its arrow where a slice of it follows the one before (its block I/O;
    # one issued by an io-worker, with no slice after its submission, gets none).
    linked = [fid for fid, sl in flows.items() if any(annotations(s[3]).get("linked") for s in sl)]
    check(len(linked) >= 3, "only %d requests marked linked" % len(linked))
    check(len(linked) - 2 <= links <= len(linked), "%d link arrows for %d linked requests" % (links, len(linked)))
    print("%d requests, %d link arrows" % (len(ops), links))


def case_summary(args):
    pid, ops, recs, packets, size = traced_perfetto(args, ["--summary"])
    check(not recs, "--summary printed requests")
    flows, _, _ = analyse(packets)
    for op in ops:
        flow_of(flows, op)


def case_cut(args):
    d = tempfile.mkdtemp(prefix="iotracer-pf-")
    path = os.path.join(d, "t.pftrace")
    t = w = None
    try:
        with tt.loop_device(4096) as (dev, _):
            w, pid = tt.start_workload(args.iowork, "direct", dev, 30000)
            t = tt.Tracer(args.iotracer, ["--pid", str(pid), "--perfetto", path])
            t.wait_ready()
            w.stdin.write("go\n")
            w.stdin.flush()
            time.sleep(1.0)
            check(w.poll() is None, "the workload ended before the cut: make it longer")
            t.proc.send_signal(signal.SIGINT)
            rc = t.proc.wait(timeout=30)
            check(rc == 0, "iotracer exited %d after SIGINT" % rc)
            alive = w.poll() is None
            w.kill()
            w.wait()
            check(alive, "the workload ended before iotracer stopped: the cut was not mid-run")
        packets = decode(path)
        flows, _, _ = analyse(packets)
        check(len(flows) > 10, "only %d requests in the cut trace" % len(flows))
        print("cut trace: %d packets, %d requests" % (len(packets), len(flows)))
    finally:
        for p in (t and t.proc, w):
            if p and p.poll() is None:
                p.kill()
        subprocess.run(["rm", "-rf", d])


def case_guest(args):
    """A guest agent writes its own trace beside what it streams (here to a host that is not there)."""
    d = tempfile.mkdtemp(prefix="iotracer-pf-")
    path = os.path.join(d, "t.pftrace")
    try:
        with tt.loop_device() as (dev, _):
            w, pid = tt.start_workload(args.iowork, "direct", dev, 12)
            t = subprocess.Popen([args.iotracer, "--mode", "guest", "--connect", "unix:" + os.path.join(d, "nohost"),
                                  "--pid", str(pid), "--perfetto", path], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
            seen = 0
            while seen < 10:
                line = t.stderr.readline()
                check(line, "iotracer --mode guest exited before tracing")
                seen += "iotracer: layer" in line
            ops = tt.finish_workload(w)
            time.sleep(0.5)
            t.send_signal(signal.SIGINT)
            err = t.communicate(timeout=30)[1]
            check(t.returncode == 0, "guest agent exited %d: %s" % (t.returncode, err))
        flows, instants, tracks = analyse(decode(path))
        for op in ops:
            flow_of(flows, op)
        print("guest trace: %d flows for %d requests; %s" % (len(flows), len(ops), err.strip().splitlines()[-1:]))
    finally:
        subprocess.run(["rm", "-rf", d])


def case_cli(args):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "t.pftrace")
        r = subprocess.run([args.iotracer, "--mode", "guest", "--perfetto", path, "--summary"], capture_output=True,
                           text=True)
        check(r.returncode == 2 and "--summary" in r.stderr, "guest --summary: rc %d %r" % (r.returncode, r.stderr))
        check(not os.path.exists(path), "a refused command line created the trace file")
        r = subprocess.run([args.iotracer, "--perfetto", os.path.join(d, "no", "such", "dir")], capture_output=True,
                           text=True)
        check(r.returncode == 1 and "cannot open" in r.stderr, "unwritable path: rc %d %r" % (r.returncode, r.stderr))
        r = subprocess.run([args.iotracer, "--help"], capture_output=True, text=True)
        check("--perfetto FILE" in r.stdout, "--help does not document --perfetto")


def main():
    return tt.run_cases({n[5:]: f for n, f in globals().items() if n.startswith("case_")})


if __name__ == "__main__":
    sys.exit(main())
