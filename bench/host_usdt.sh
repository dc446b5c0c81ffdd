#!/bin/bash
# bench-host-usdt: host mode on the installed QEMU (uprobes) and on QEMUs built from the same source
# with USDT probes, their sites 1-byte nops (sys/sdt.h) and 5-byte nops (which kernels from 6.18 on
# optimize past the trap), three guests booted together, runs interleaved in every round.
# usage: host_usdt.sh IOTRACER IOWORK BUILD_DIR OUT
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -eq 4 ] || { echo "usage: $0 IOTRACER IOWORK BUILD_DIR OUT" >&2; exit 2; }
q1=$("$here/../qemu-test/build-qemu-usdt.sh")
q5=$("$here/../qemu-test/build-qemu-usdt.sh" --nop5)
exec python3 "$here/host.py" --iotracer "$1" --iowork "$2" --build "$3" --out "$4" --disks image0 \
    --modes off,host,summary --qemu installed= --qemu "usdt=$q1" --qemu "usdt-nop5=$q5"
