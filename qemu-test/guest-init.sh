#!/bin/sh
# /init of the qemu-test guest (busybox ash, runs as PID 1).
#
# Installed into the initramfs by build-guest.sh. It prepares a minimal but
# tracer-friendly system (proc, sysfs, devtmpfs, tracefs, debugfs, bpffs,
# cgroup2), loads the modules listed in /etc/qemu-test/modules.load, fetches
# the command to run from QEMU's fw_cfg, runs it, reports its exit status on
# the console and powers the machine off.
#
# Protocol with run-guest.sh (keep both sides in sync):
#   fw_cfg opt/org.iotracer/cmd    the shell script to run (sh -c semantics)
#   fw_cfg opt/org.iotracer/nonce  a per-run token used in the markers
#   virtio-serial port org.qemu-test.stdout / .stderr: the command's stdout
#                                  and stderr (kept apart from kernel noise)
#   console (ttyS0) markers:
#     QEMU_TEST_BEGIN_<nonce>        just before the command starts
#     QEMU_TEST_EXIT_<nonce>=<n>     the command's exit status
# If anything here fails before the exit marker is printed, run-guest.sh
# reports the guest as broken; if PID 1 dies the kernel panics and, with
# panic=-1 and -no-reboot, QEMU exits at once.

PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
HOME=/root
export PATH HOME

say() { echo "qemu-test: $*"; }

# The kernel may not have been able to open /dev/console on the bare
# initramfs; mount devtmpfs first and re-attach our stdio to the console.
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm /run /tmp
mount -t devpts -o gid=5,mode=620 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
# Tracing and BPF file systems: the tracer expects them where a normal
# distribution mounts them.
mount -t tracefs tracefs /sys/kernel/tracing || say "cannot mount tracefs"
mount -t debugfs debugfs /sys/kernel/debug || say "cannot mount debugfs"
mount -t bpf bpf /sys/fs/bpf || say "cannot mount bpffs"
mount -t cgroup2 cgroup2 /sys/fs/cgroup || say "cannot mount cgroup2"
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
hostname qemu-test
ip link set lo up 2>/dev/null
# BPF maps are memcg-accounted on 6.1, but older tools still check RLIMIT_MEMLOCK.
# shellcheck disable=SC3045 # busybox ash has ulimit -l
ulimit -l unlimited 2>/dev/null

# Load modules in dependency order (computed on the host from modules.dep).
# busybox insmod cannot resolve dependencies itself and the files are
# stored uncompressed, so plain insmod in this order is all that is needed.
kver=$(uname -r)
if [ -r /etc/qemu-test/modules.load ]; then
    while read -r m; do
        [ -n "$m" ] || continue
        insmod "/lib/modules/$kver/$m" 2>/dev/null || say "insmod $m failed"
    done </etc/qemu-test/modules.load
fi

# Stable names, as udev would make them: /dev/disk/by-id/virtio-<serial>,
# /dev/disk/by-id/nvme-<serial> and /dev/virtio-ports/<port name>.
mkdir -p /dev/disk/by-id /dev/virtio-ports
for b in /sys/block/vd* /sys/block/nvme*; do
    [ -e "$b" ] || continue
    n=${b##*/}
    s=
    if [ -r "$b/serial" ]; then s=$(cat "$b/serial"); fi
    if [ -z "$s" ] && [ -r "$b/device/serial" ]; then s=$(cat "$b/device/serial"); fi
    s=$(echo "$s" | tr -d ' ')
    [ -n "$s" ] || continue
    case $n in vd*) p=virtio ;; *) p=nvme ;; esac
    ln -sf "../../$n" "/dev/disk/by-id/$p-$s"
done
for p in /sys/class/virtio-ports/vport*; do
    [ -r "$p/name" ] || continue
    name=$(cat "$p/name")
    [ -n "$name" ] && ln -sf "../${p##*/}" "/dev/virtio-ports/$name"
done

# Fetch the command. qemu_fw_cfg exposes each named blob as a file.
fw=/sys/firmware/qemu_fw_cfg/by_name/opt/org.iotracer
i=0
while [ ! -r "$fw/cmd/raw" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
mkdir -p /run/qemu-test
if ! cat "$fw/cmd/raw" >/run/qemu-test/cmd.sh 2>/dev/null; then
    say "no command found in fw_cfg ($fw/cmd); is qemu_fw_cfg loaded?"
    sync
    poweroff -f
fi
nonce=$(cat "$fw/nonce/raw" 2>/dev/null)

out=/dev/virtio-ports/org.qemu-test.stdout
err=/dev/virtio-ports/org.qemu-test.stderr
if [ ! -e "$out" ] || [ ! -e "$err" ]; then
    # Without virtio_console the output goes to the console, between the
    # markers; run-guest.sh then takes it from there.
    say "no output ports, command output goes to the console"
    echo "QEMU_TEST_OUTPUT_ON_CONSOLE_$nonce"
    out=/dev/console
    err=/dev/console
fi

cd /root 2>/dev/null || cd /
echo "QEMU_TEST_BEGIN_$nonce"
# A subshell so that `exit` in the command cannot end PID 1.
(sh /run/qemu-test/cmd.sh) </dev/null >"$out" 2>"$err"
rc=$?
sync
echo
echo "QEMU_TEST_EXIT_$nonce=$rc"
# -f: no init to ask; this is an immediate ACPI power-off, QEMU then exits.
poweroff -f
# Should poweroff not work, the sysrq route does the same.
echo o >/proc/sysrq-trigger
sleep 10
