#!/usr/bin/env bash
# Sets everything up, then runs a short standalone trace while a small
# workload (direct reads and writes, a buffered write and an fsync) runs in a
# temporary folder, and prints each request with its latency split and the
# per-layer summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null

work=$(mktemp -d /var/tmp/iotracer-demo.XXXXXX)
log="$work/iotracer.err"
trap 'kill "$tracer" 2>/dev/null || true; rm -rf "$work"' EXIT

build/common/iotracer --duration "${DURATION:-6}" --summary --requests --no-status --comm dd "$@" 2>"$log" &
tracer=$!
# Start the workload once iotracer says it is tracing.
for _ in $(seq 300); do
  grep -q 'tracing' "$log" 2>/dev/null && break
  if ! kill -0 "$tracer" 2>/dev/null; then cat "$log" >&2; exit 1; fi
  sleep 0.1
done
cat "$log" >&2
dd if=/dev/zero of="$work/data" bs=64k count=16 oflag=direct status=none
dd if="$work/data" of=/dev/null bs=4k count=32 iflag=direct status=none
dd if=/dev/zero of="$work/buffered" bs=4k count=8 conv=fsync status=none
wait "$tracer"
