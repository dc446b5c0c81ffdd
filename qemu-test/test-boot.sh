#!/bin/bash
# test-boot.sh BUILD_DIR
#
# Smoke test of the qemu-test harness: builds the guest, boots it for real
# and checks that commands run, that BTF and kallsyms are there, that disks
# given with --disk read back byte for byte, that exit statuses and stdout
# come back clean, and that a kernel panic and a hung command both fail
# quickly without leaving QEMU behind.
#
# Exit: 0 all passed, 1 something failed, 77 (skip) only when QEMU cannot
# be made to run on this machine at all.
# The guest commands are single-quoted on purpose: they expand in the guest.
# shellcheck disable=SC2016
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
[ $# -eq 1 ] || { echo "usage: ${0##*/} BUILD_DIR" >&2; exit 1; }
build_dir=$(mkdir -p "$1" && cd "$1" && pwd)
tmp=$build_dir/qemu-test/test-boot
rm -rf "$tmp"
mkdir -p "$tmp"

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok - $*"; }
fail() { failed=$((failed + 1)); echo "not ok - $*"; }
ms() { local t=${EPOCHREALTIME//[.,]/}; echo $((t / 1000)); }
qemu_procs() { pgrep -f "qemu-system-x86_64 .*$build_dir/qemu-test/guest/vmlinuz" || true; }
run() { "$here/run-guest.sh" --build-dir "$build_dir" "$@"; }

# --- build ---------------------------------------------------------------
# zstd as an extra file: a dynamic binary whose libraries are not all in the
# base image, so the extras archive and its library copying are exercised.
t0=$(ms)
if ! "$here/build-guest.sh" "$build_dir" "$(command -v zstd || echo /usr/bin/zstd)"; then
    if ! command -v qemu-system-x86_64 >/dev/null; then
        echo "SKIP: QEMU is not installed and could not be installed" >&2
        exit 77
    fi
    echo "not ok - build-guest.sh failed"
    echo "0 passed, 1 failed"
    exit 1
fi
echo "# guest built in $((($(ms) - t0) / 1000)) s"
# Can QEMU start at all? (An empty machine, told to quit at once.)
if ! echo quit | timeout 30 qemu-system-x86_64 -accel tcg -machine none -nodefaults \
    -display none -monitor stdio -S >/dev/null 2>"$tmp/probe.err"; then
    echo "SKIP: qemu-system-x86_64 cannot start here: $(head -n3 "$tmp/probe.err")" >&2
    exit 77
fi

# --- disks with known content --------------------------------------------
# A 1 MiB raw disk: a text header, then a byte pattern. The same bytes in a
# qcow2 image and on an NVMe disk check the format and if= options.
{
    printf 'qemu-test disk v1\n'
    i=0
    while [ $i -lt 4096 ]; do printf 'block %08d 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n' $i; i=$((i + 1)); done
} | head -c 1048576 >"$tmp/disk0.raw"
truncate -s 1M "$tmp/disk0.raw"
qemu-img convert -f raw -O qcow2 "$tmp/disk0.raw" "$tmp/disk1.qcow2"
cp "$tmp/disk0.raw" "$tmp/disk2.raw"
want=$(sha256sum <"$tmp/disk0.raw" | cut -d' ' -f1)

# --- 1: the basics, in one boot to keep the suite short -----------------
t0=$(ms)
rc=0
run --timeout 240 \
    --disk "$tmp/disk0.raw" \
    --disk "$tmp/disk1.qcow2,aio=io_uring,cache=none" \
    --disk "$tmp/disk2.raw,if=nvme,aio=native" \
    -- '
echo "kernel=$(uname -r)"
ls /sys/kernel/btf/vmlinux
echo "vfs_read=$(cat /proc/kallsyms | grep -c " vfs_read$")"
echo "head=$(head -c 17 /dev/vda)"
echo "vda=$(sha256sum </dev/vda | cut -d" " -f1)"
echo "vdb=$(sha256sum </dev/vdb | cut -d" " -f1)"
echo "nvme=$(sha256sum </dev/nvme0n1 | cut -d" " -f1)"
echo "byid=$(readlink /dev/disk/by-id/virtio-disk1)"
echo "tracing=$(test -e /sys/kernel/tracing/events && echo yes)"
echo "p:qt_probe vfs_read" >/sys/kernel/tracing/kprobe_events &&
    test -e /sys/kernel/tracing/events/kprobes/qt_probe/id && echo kprobe=ok
echo "ftrace=$(grep -c "^vfs_read\$" /sys/kernel/tracing/available_filter_functions)"
echo "bpffs=$(grep -c " /sys/fs/bpf bpf " /proc/mounts)"
echo "fio=$(fio --version)"
echo "zstd=$(zstd -q -c </proc/version | zstd -dc | cut -c1-13)"
echo to-stderr >&2
' >"$tmp/basic.out" 2>"$tmp/basic.err" || rc=$?
echo "# boot + basic command: $((($(ms) - t0) / 1000)) s"
cat "$tmp/basic.out"
expect() { # expect NAME LINE: LINE must be in the basic run's stdout
    if grep -qxF -- "$2" "$tmp/basic.out"; then ok "$1"; else fail "$1 (no line '$2')"; fi
}
if [ $rc -eq 0 ]; then ok "basic command exits 0"; else fail "basic command exited $rc"; sed 's/^/# /' "$tmp/basic.err"; fi
expect "guest runs Debian's 6.1 kernel" "kernel=$(cat "$build_dir/qemu-test/guest/kernel-release")"
expect "guest has BTF" /sys/kernel/btf/vmlinux
expect "kallsyms has vfs_read once" "vfs_read=1"
expect "virtio disk header" "head=qemu-test disk v1"
expect "virtio raw disk reads back" "vda=$want"
expect "virtio qcow2 disk (io_uring) reads back" "vdb=$want"
expect "nvme disk (aio=native) reads back" "nvme=$want"
expect "by-id names follow --disk order" "byid=../../vdb"
expect "tracefs mounted" "tracing=yes"
expect "kprobes work" "kprobe=ok"
expect "vfs_read can be ftraced (fentry)" "ftrace=1"
expect "bpffs mounted" "bpffs=1"
expect "fio runs" "fio=fio-3.33"
expect "extra file runs with its libraries" "zstd=Linux version"
# Nothing but the command's output on stdout: no kernel noise, no markers.
if [ "$(wc -l <"$tmp/basic.out")" -eq 14 ]; then ok "stdout carries only the command's output"; else fail "stdout has extra lines"; fi
# The harness's own notes (e.g. the one-off KVM probe) are prefixed with its name.
if [ "$(grep -v '^run-guest.sh: ' "$tmp/basic.err")" = to-stderr ]; then
    ok "stderr comes back apart"
else
    fail "stderr was '$(head -c 300 "$tmp/basic.err")'"
fi

# --- 2: argument quoting ------------------------------------------------
rc=0
out=$(run --timeout 120 -- printf '[%s]\n' "a  b" "it's" '$HOME') || rc=$?
if [ $rc -eq 0 ] && [ "$out" = "$(printf '[%s]\n' "a  b" "it's" '$HOME')" ]; then
    ok "several arguments reach the guest unchanged"
else
    fail "argument quoting: rc=$rc out='$out'"
fi

# --- 3: exit status, virtio-serial socket, vsock notice -------------------
# The host end of the socket is a small python3 client (when python3 is
# there): it waits for the guest's line, answers, and the guest echoes the
# answer on stdout before exiting 7.
sock=$tmp/serial.sock
have_py=
if command -v python3 >/dev/null; then
    have_py=1
    cat >"$tmp/sock-peer.py" <<'EOF'
import os, socket, sys, time
path, deadline = sys.argv[1], time.time() + 150
while True:
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        break
    except OSError:
        if time.time() > deadline:
            sys.exit("peer: no socket")
        time.sleep(0.05)
data = b""
while not data.endswith(b"\n"):
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
s.sendall(b"host-got:" + data)
time.sleep(1)
EOF
    timeout 160 python3 "$tmp/sock-peer.py" "$sock" &
    peer=$!
fi
rc=0
out=$(run --timeout 150 --serial-socket "$sock" --vsock-cid 3 -- '
exec 3<>/dev/virtio-ports/org.iotracer.0
echo guest-hello >&3
'"${have_py:+head -n1 <&3}"'
exit 7' 2>"$tmp/serial.err") || rc=$?
if [ $rc -eq 7 ]; then ok "guest exit status is returned"; else fail "exit 7 gave $rc"; fi
if [ -n "$have_py" ]; then
    wait "$peer" || true
    if [ "$out" = host-got:guest-hello ]; then ok "virtio-serial port round trip over the unix socket"; else fail "serial socket: got '$out'"; fi
else
    echo "# python3 missing: serial socket round trip not checked"
fi
if [ -e /dev/vhost-vsock ] || grep -q 'vhost-vsock missing' "$tmp/serial.err"; then
    ok "--vsock-cid handled"
else
    fail "--vsock-cid: no notice on a host without /dev/vhost-vsock"
fi

# --- 4: kernel panic -------------------------------------------------------
t0=$(ms)
rc=0
run --timeout 120 -- 'echo c > /proc/sysrq-trigger; sleep 100' >"$tmp/panic.out" 2>"$tmp/panic.err" || rc=$?
secs=$((($(ms) - t0) / 1000))
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $secs -lt 100 ]; then
    ok "a kernel panic fails the run at once (status $rc, ${secs} s)"
else
    fail "kernel panic: status $rc after ${secs} s"
fi
if grep -q 'Kernel panic' "$tmp/panic.err" && grep -q 'last 40 lines of the console' "$tmp/panic.err"; then
    ok "a panic shows the console tail"
else
    fail "no console tail after a panic"
fi
sed 's/^/# /' "$tmp/panic.err" | head -n 5

# --- 5: a hung command -----------------------------------------------------
t0=$(ms)
rc=0
run --timeout 30 -- 'sleep 1000' >"$tmp/hang.out" 2>"$tmp/hang.err" || rc=$?
secs=$((($(ms) - t0) / 1000))
if [ $rc -eq 124 ] && [ $secs -le 40 ]; then
    ok "a hung command times out with 124 (${secs} s)"
else
    fail "hung command: status $rc after ${secs} s"
fi
if [ -z "$(qemu_procs)" ]; then ok "no QEMU left behind"; else fail "QEMU still running: $(qemu_procs)"; fi

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
