#!/bin/bash
# run-guest.sh [options] -- COMMAND...
#
# Boots the guest built by build-guest.sh under QEMU, runs COMMAND in it
# with /bin/sh (busybox ash), and exits with COMMAND's exit status. The
# command's stdout and stderr come out on this script's stdout and stderr;
# kernel messages stay in the console log. See docs/qemu-test.md.
#
# Exit status: the command's own, or
#   2    bad usage
#   124  the guest did not finish within --timeout
#   125  the guest died without reporting a status (kernel panic, QEMU
#        error, /init failure); the console tail is printed

# QEMU options are comma-separated key=value lists inside array elements.
# shellcheck disable=SC2054
set -euo pipefail

prog=${0##*/}
here=$(cd "$(dirname "$0")" && pwd)

usage() {
    cat <<EOF
usage: $prog [options] -- COMMAND...

Boots the qemu-test guest and runs COMMAND in it (one argument: a shell
script text; several: a command line, each argument quoted as is).

options:
  --build-dir DIR        build dir holding qemu-test/guest (default: \$QEMU_TEST_BUILD_DIR or ./build)
  --disk FILE[,format=raw|qcow2][,aio=threads|native|io_uring][,cache=MODE]
         [,if=virtio|nvme|scsi][,serial=ID]
                         add a disk (repeatable); virtio disks are /dev/vda,
                         /dev/vdb... in order, and /dev/disk/by-id/virtio-diskN
  --serial-socket PATH[,name=NAME]
                         add a virtio-serial port (default name org.iotracer.N)
                         served on the host as the unix socket PATH (server, nowait);
                         the guest sees /dev/virtio-ports/NAME
  --vsock-cid N          add vhost-vsock-pci with guest CID N (if /dev/vhost-vsock exists)
  --timeout SECONDS      hard limit for the whole run (default 300)
  --console-log FILE     where the console goes (default BUILD_DIR/qemu-test/logs/)
  --mem SIZE             guest memory, QEMU syntax (default 1G)
  --smp N                guest CPUs (default 2)
  --accel auto|kvm|tcg   accelerator (default auto: KVM if a probe boot works, cached)
  --append ARGS          extra kernel command line arguments
  --qemu-arg ARG         one more QEMU argument, as is (repeatable)
  --qemu PATH            the QEMU binary (default: \$QEMU_TEST_QEMU or qemu-system-x86_64
                         on PATH); its firmware is the installed QEMU's
  -h, --help             this text
EOF
}

die() { echo "$prog: error: $*" >&2; exit 2; }
note() { echo "$prog: $*" >&2; }

build_dir=${QEMU_TEST_BUILD_DIR:-build}
disks=()
sockets=()
vsock_cid=
timeout=300
console_log=
mem=1G
smp=2
accel=${QEMU_TEST_ACCEL:-auto}
append=
extra_qemu=()
qemu=${QEMU_TEST_QEMU:-}

need_arg() { [ $# -ge 2 ] || die "option $1 needs a value"; }
while [ $# -gt 0 ]; do
    case $1 in
    --) shift; break ;;
    -h | --help) usage; exit 0 ;;
    --*=*) opt=${1%%=*}; val=${1#*=}; shift; set -- "$opt" "$val" "$@"; continue ;;
    --build-dir) need_arg "$@"; build_dir=$2; shift 2 ;;
    --disk) need_arg "$@"; disks+=("$2"); shift 2 ;;
    --serial-socket) need_arg "$@"; sockets+=("$2"); shift 2 ;;
    --vsock-cid) need_arg "$@"; vsock_cid=$2; shift 2 ;;
    --timeout) need_arg "$@"; timeout=$2; shift 2 ;;
    --console-log) need_arg "$@"; console_log=$2; shift 2 ;;
    --mem) need_arg "$@"; mem=$2; shift 2 ;;
    --smp) need_arg "$@"; smp=$2; shift 2 ;;
    --accel) need_arg "$@"; accel=$2; shift 2 ;;
    --append) need_arg "$@"; append=$2; shift 2 ;;
    --qemu-arg) need_arg "$@"; extra_qemu+=("$2"); shift 2 ;;
    --qemu) need_arg "$@"; qemu=$2; shift 2 ;;
    *) usage >&2; die "unknown option '$1' (the command goes after --)" ;;
    esac
done
[ $# -ge 1 ] || { usage >&2; die "no command given"; }
if ! [[ $timeout =~ ^[0-9]+$ ]] || [ "$timeout" -eq 0 ]; then die "--timeout must be a positive number of seconds"; fi
[[ $smp =~ ^[0-9]+$ ]] || die "--smp must be a number"
[ -z "$vsock_cid" ] || [[ $vsock_cid =~ ^[0-9]+$ && $vsock_cid -ge 3 ]] || die "--vsock-cid must be a number >= 3"
case $accel in auto | kvm | tcg) ;; *) die "--accel must be auto, kvm or tcg" ;; esac

# One argument is a script; several are a command line whose words must
# reach the guest unchanged, so quote each for sh.
if [ $# -eq 1 ]; then
    cmd=$1
else
    cmd=
    for a in "$@"; do cmd+="'${a//\'/\'\\\'\'}' "; done
fi

mkdir -p "$build_dir"
build_dir=$(cd "$build_dir" && pwd)
top=$build_dir/qemu-test
guest=$top/guest
# QEMU option values are comma separated; a comma in our paths would split them.
[[ $top != *,* ]] || die "the build dir path must not contain a comma: $top"
if [ ! -s "$guest/vmlinuz" ] || [ ! -s "$guest/initramfs.img" ]; then
    note "no guest in $guest yet; building one (without extra files)"
    "$here/build-guest.sh" "$build_dir" >&2 || { echo "$prog: error: build-guest.sh failed" >&2; exit 125; }
fi
if [ -n "$qemu" ]; then
    [ -x "$qemu" ] || die "--qemu $qemu: not an executable file"
    # A QEMU built here (qemu-test/build-qemu-usdt.sh) has no firmware of its own: the installed
    # QEMU's, where Debian's looks for it.
    for d in /usr/lib/ipxe/qemu /usr/share/seabios /usr/share/qemu; do
        [ ! -d "$d" ] || extra_qemu=(-L "$d" "${extra_qemu[@]}")
    done
else
    qemu=$(command -v qemu-system-x86_64) || die "qemu-system-x86_64 not found (run build-guest.sh, it installs it)"
fi

mkdir -p "$top/logs"
if [ -z "$console_log" ]; then
    console_log=$top/logs/console-$(date +%Y%m%d-%H%M%S)-$$.log
    ln -sfn "${console_log##*/}" "$top/logs/last-console.log"
    # Keep the 50 newest default logs.
    { ls -1t "$top"/logs/console-*.log 2>/dev/null || true; } | tail -n +51 | while read -r old; do rm -f "$old"; done
fi
mkdir -p "$(dirname "$console_log")"
console_log=$(cd "$(dirname "$console_log")" && pwd)/${console_log##*/}
[[ $console_log != *,* ]] || die "the console log path must not contain a comma"
: >"$console_log"

# setpriv --pdeathsig makes a child die with us, even when we are killed
# with SIGKILL and no trap can run.
launcher=()
launcher_term=()
if setpriv --help 2>/dev/null | grep -q pdeathsig; then
    launcher=(setpriv --pdeathsig KILL --)
    launcher_term=(setpriv --pdeathsig TERM --)
fi

# --- accelerator ---------------------------------------------------------
# /dev/kvm existing proves nothing (here it exists but guests hang or QEMU
# aborts), so KVM is used only after one real probe boot succeeded. The
# verdict is cached per build dir, keyed by host kernel, QEMU and guest.
decide_accel() {
    if [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
        echo tcg
        return
    fi
    local cache=$top/accel key verdict probe_log out rc
    key="$(uname -r) $("$qemu" --version | head -n1) $(cat "$guest/kernel-release" 2>/dev/null) ${QEMU_TEST_KVM_CPU:-host}"
    exec 8>"$top/.accel.lock"
    flock 8
    if [ -s "$cache" ] && [ "$(head -n1 "$cache")" = "$key" ]; then
        sed -n 2p "$cache"
        return
    fi
    probe_log=$top/logs/kvm-probe.log
    note "probing KVM with a short boot (once per build dir; log: $probe_log)"
    rc=0
    # pdeathsig: should we be killed meanwhile, the probe stops too (its
    # own trap then stops its QEMU).
    out=$(${launcher_term[@]+"${launcher_term[@]}"} "$0" --build-dir "$build_dir" --accel kvm --timeout "${QEMU_TEST_KVM_PROBE_TIMEOUT:-20}" \
        --console-log "$probe_log" --mem 256M --smp 1 -- 'echo qemu-test-kvm-ok' 2>"$probe_log.stderr") || rc=$?
    if [ $rc -eq 0 ] && [ "$out" = qemu-test-kvm-ok ]; then verdict=kvm; else verdict=tcg; fi
    note "KVM probe: $([ $verdict = kvm ] && echo works || echo "failed (status $rc)"), using $verdict"
    printf '%s\n%s\n' "$key" "$verdict" >"$cache"
    echo "$verdict"
}
if [ "$accel" = auto ]; then accel=$(decide_accel); fi

# --- per-run files and cleanup --------------------------------------------
# A run killed with SIGKILL leaves its run dir behind; its pid is in the
# name, so the next run can tell it is dead and remove it.
for d in "$top"/run.*; do
    [ -d "$d" ] || continue
    pid=${d##*/run.}
    pid=${pid%%.*}
    if [[ $pid =~ ^[0-9]+$ ]] && ! kill -0 "$pid" 2>/dev/null; then rm -rf "$d"; fi
done
rundir=$(mktemp -d "$top/run.$$.XXXXXX")
qemu_pid=
# shellcheck disable=SC2317 # called from the traps
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM HUP
    # Stop QEMU whatever happened to us: our child, and whatever the
    # pidfile names (the same process, unless something odd happened).
    [ -z "$qemu_pid" ] || kill_qemu "$qemu_pid"
    pid=$(cat "$rundir/qemu.pid" 2>/dev/null || true)
    case $(cat "/proc/$pid/comm" 2>/dev/null) in qemu-system*) kill_qemu "$pid" ;; esac
    [ -n "${QEMU_TEST_KEEP_RUNDIR:-}" ] || rm -rf "$rundir"
    exit "$rc"
}
kill_qemu() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

nonce=$(tr -d '-' </proc/sys/kernel/random/uuid | cut -c1-16)
printf '%s\n' "$cmd" >"$rundir/cmd.sh"
: >"$rundir/stdout"
: >"$rundir/stderr"

# --- QEMU command line ---------------------------------------------------
kcmd="console=ttyS0 quiet panic=-1 oops=panic random.trust_cpu=on $append"
args=(
    -nodefaults -no-user-config -display none -no-reboot
    -machine pc -m "$mem" -smp "$smp"
    -kernel "$guest/vmlinuz" -initrd "$guest/initramfs.img" -append "$kcmd"
    -chardev "file,id=con,path=$console_log,append=on" -serial chardev:con
    -fw_cfg "name=opt/org.iotracer/cmd,file=$rundir/cmd.sh"
    -fw_cfg "name=opt/org.iotracer/nonce,string=$nonce"
    -pidfile "$rundir/qemu.pid"
)
case $accel in
kvm) args+=(-accel kvm -cpu "${QEMU_TEST_KVM_CPU:-host}") ;;
# -cpu max gives the guest every feature TCG emulates (RDRAND for the
# entropy pool, SSE4.2 for crc32c, ...).
tcg) args+=(-accel tcg -cpu max) ;;
esac

# Disks come first so that PCI slot order, and so vda, vdb..., follow the
# order of --disk.
have_scsi=
i=0
for spec in ${disks[@]+"${disks[@]}"}; do
    file=${spec%%,*}
    [ -e "$file" ] || die "disk '$file' does not exist"
    file=$(cd "$(dirname "$file")" && pwd)/${file##*/}
    [[ $file != *,* ]] || die "disk path must not contain a comma: $file"
    fmt='' aio='' cache='' bus=virtio serial=disk$i
    rest=
    [ "$spec" = "${spec#*,}" ] || rest=${spec#*,}
    IFS=, read -r -a kvs <<<"$rest"
    for kv in ${kvs[@]+"${kvs[@]}"}; do
        case $kv in
        format=*) fmt=${kv#*=} ;;
        aio=*) aio=${kv#*=} ;;
        cache=*) cache=${kv#*=} ;;
        if=*) bus=${kv#*=} ;;
        serial=*) serial=${kv#*=} ;;
        *) die "unknown --disk option '$kv' in '$spec'" ;;
        esac
    done
    if [ -z "$fmt" ]; then
        case $file in *.qcow2) fmt=qcow2 ;; *) fmt=raw ;; esac
    fi
    # Linux AIO needs O_DIRECT; QEMU refuses aio=native without it.
    if [ "$aio" = native ] && [ -z "$cache" ]; then cache=none; fi
    drive="file=$file,if=none,id=drive$i,format=$fmt"
    [ -z "$aio" ] || drive+=",aio=$aio"
    [ -z "$cache" ] || drive+=",cache=$cache"
    args+=(-drive "$drive")
    case $bus in
    virtio) args+=(-device "virtio-blk-pci,drive=drive$i,serial=$serial") ;;
    nvme) args+=(-device "nvme,drive=drive$i,serial=$serial") ;;
    scsi)
        if [ -z "$have_scsi" ]; then args+=(-device virtio-scsi-pci,id=scsi0); have_scsi=1; fi
        args+=(-device "scsi-hd,drive=drive$i,bus=scsi0.0,serial=$serial")
        ;;
    *) die "unknown disk interface 'if=$bus' (virtio, nvme or scsi)" ;;
    esac
    i=$((i + 1))
done

# virtio-serial: the command's stdout/stderr (files on the host, so nothing
# is lost and no tty mangles them), then the user's sockets.
args+=(
    -device virtio-serial-pci,id=vser
    -chardev "file,id=gout,path=$rundir/stdout"
    -device virtserialport,bus=vser.0,chardev=gout,name=org.qemu-test.stdout
    -chardev "file,id=gerr,path=$rundir/stderr"
    -device virtserialport,bus=vser.0,chardev=gerr,name=org.qemu-test.stderr
)
i=0
for spec in ${sockets[@]+"${sockets[@]}"}; do
    path=${spec%%,*}
    name=org.iotracer.$i
    case $spec in *,name=*) name=${spec#*,name=} ;; *,*) die "bad --serial-socket '$spec'" ;; esac
    [[ $path != *,* ]] || die "socket path must not contain a comma: $path"
    args+=(
        -chardev "socket,id=sock$i,path=$path,server=on,wait=off"
        -device "virtserialport,bus=vser.0,chardev=sock$i,name=$name"
    )
    i=$((i + 1))
done

if [ -n "$vsock_cid" ]; then
    if [ -e /dev/vhost-vsock ]; then
        args+=(-device "vhost-vsock-pci,guest-cid=$vsock_cid")
    else
        note "notice: /dev/vhost-vsock missing on this host; no vsock device (--vsock-cid $vsock_cid ignored)"
    fi
fi

args+=(${extra_qemu[@]+"${extra_qemu[@]}"})

# --- run -----------------------------------------------------------------
# QEMU runs in the background so our traps fire at once (bash defers traps
# while a foreground child runs), under setpriv --pdeathsig (see above).
echo "$prog: $qemu ${args[*]}" >"$rundir/qemu.cmdline"
# Milliseconds; $SECONDS only counts whole seconds from an arbitrary phase.
now_ms() { local t=${EPOCHREALTIME//[.,]/}; echo $((t / 1000)); }
start=$(now_ms)
${launcher[@]+"${launcher[@]}"} "$qemu" "${args[@]}" </dev/null >"$rundir/qemu.out" 2>&1 &
qemu_pid=$!

timed_out=
qemu_rc=0
# bash itself reports a child killed by a signal ("Aborted ...") on its
# stderr; that belongs in the log, not in the caller's output.
{
    while kill -0 "$qemu_pid" 2>/dev/null; do
        if [ $(($(now_ms) - start)) -ge $((timeout * 1000)) ]; then
            timed_out=1
            kill_qemu "$qemu_pid"
            break
        fi
        sleep 0.2
    done
    wait "$qemu_pid" || qemu_rc=$?
} 2>>"$rundir/qemu.out"
qemu_pid=
elapsed=$((($(now_ms) - start) / 1000))

# Read the verdict from the console alone, before anything is appended.
# (NUL bytes, which a kernel may leave on a serial line, cannot live in a variable.)
console=$(tr -d '\r\000' <"$console_log")
status=$(echo "$console" | sed -n "s/^QEMU_TEST_EXIT_$nonce=\([0-9][0-9]*\)\$/\1/p" | tail -n1)
began=
if echo "$console" | grep -aq "^QEMU_TEST_BEGIN_$nonce\$"; then began=1; fi
panic=$(echo "$console" | grep -a -m1 'Kernel panic' | sed 's/^\[[ 0-9.]*\] //' || true)
on_console=
if echo "$console" | grep -aq "^QEMU_TEST_OUTPUT_ON_CONSOLE_$nonce\$"; then on_console=1; fi

# Keep everything about the run in the console log, after the console
# (the command's output capped at 1 MiB each: it is a copy).
{
    echo
    echo "==== qemu-test: accel=$accel elapsed=${elapsed}s qemu_status=$qemu_rc${timed_out:+ TIMEOUT}"
    cat "$rundir/qemu.cmdline"
    if [ -s "$rundir/qemu.out" ]; then echo "==== qemu output"; cat "$rundir/qemu.out"; fi
    if [ -s "$rundir/stdout" ]; then echo "==== guest stdout"; head -c 1M "$rundir/stdout"; fi
    if [ -s "$rundir/stderr" ]; then echo "==== guest stderr"; head -c 1M "$rundir/stderr"; fi
} >>"$console_log"

if [ -n "$on_console" ]; then
    # The guest had no virtio-serial ports (virtio_console did not load):
    # its output is on the console between the markers, mixed with any
    # kernel messages printed meanwhile.
    note "warning: the guest had no output ports; its output comes from the console"
    echo "$console" | sed -n "/^QEMU_TEST_BEGIN_$nonce\$/,/^QEMU_TEST_EXIT_$nonce=/p" |
        sed '1d;$d' | sed '$ { /^$/d }'
else
    cat "$rundir/stdout"
    cat "$rundir/stderr" >&2
fi

tail_console() {
    echo "---- last 40 lines of the console ($console_log) ----"
    echo "$console" | tail -n 40
    if [ -s "$rundir/qemu.out" ]; then
        echo "---- qemu output ----"
        tail -n 20 "$rundir/qemu.out"
    fi
    echo "----"
}

if [ -n "$timed_out" ]; then
    {
        echo "$prog: error: timeout: the guest did not finish within $timeout s ($accel)"
        tail_console
    } >&2
    exit 124
fi
if [ -z "$status" ]; then
    {
        if [ -n "$panic" ]; then
            echo "$prog: error: the guest kernel panicked: $panic"
        elif [ "$qemu_rc" -ne 0 ] && [ -z "$began" ]; then
            echo "$prog: error: QEMU failed (status $qemu_rc) before the guest ran the command"
        elif [ -z "$began" ]; then
            echo "$prog: error: the guest never started the command (QEMU status $qemu_rc)"
        else
            echo "$prog: error: the guest stopped without reporting an exit status (QEMU status $qemu_rc)"
        fi
        tail_console
    } >&2
    exit 125
fi
exit "$status"
