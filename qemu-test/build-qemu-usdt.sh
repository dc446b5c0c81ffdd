#!/bin/bash
# build-qemu-usdt.sh [--nop5]
#
# Builds the installed QEMU's own Debian source (the same version and
# patches) with the dtrace trace backend, as Fedora and RHEL build theirs:
# a qemu-system-x86_64 with USDT probes, for the qemu layer's USDT route
# (docs/qemu-layer.md). Prints the binary's path on stdout.
#
# Cached in $IOTRACER_QEMU_CACHE (default /var/cache/iotracer/qemu-usdt)
# per source version: only the first run builds (a few minutes on 2 cores,
# x86_64 system emulation only, TCG). Needs root the first time: it adds a
# deb-src entry for the archives apt already uses, downloads the source
# and installs the build's few dependencies.
#
# --nop5: each probe site a 5-byte nop instead of sys/sdt.h's 1-byte one.
# Kernels from 6.18 on turn a uprobe on a 5-byte nop into a call past the
# trap (bench-uprobe: 1.27 against 5.1 us a hit here); bench-host measures
# what that does to QEMU's cost per request. Cached apart from the other.
#
# Exit status: 0 built or cached, 1 failed (the reason on stderr).
set -euo pipefail

prog=${0##*/}
note() { echo "$prog: $*" >&2; }
die() { echo "$prog: error: $*" >&2; exit 1; }

nop5=
case ${1:-} in
--nop5) nop5=1 ;;
"") ;;
*) die "usage: $prog [--nop5]" ;;
esac

srcver=$(dpkg-query -W -f='${source:Version}' qemu-system-x86 2>/dev/null) ||
    die "qemu-system-x86 is not installed (build-guest.sh installs it)"
cache=${IOTRACER_QEMU_CACHE:-/var/cache/iotracer/qemu-usdt}/${srcver//:/_}${nop5:+-nop5}
bin=$cache/qemu-system-x86_64
if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
    echo "$bin"
    exit 0
fi
[ "$(id -u)" = 0 ] || die "not built yet, and building needs root (apt)"

export DEBIAN_FRONTEND=noninteractive
# The source comes from the archives apt already uses: their deb-src twins.
if ! apt-get source --print-uris qemu="$srcver" >/dev/null 2>&1; then
    list=/etc/apt/sources.list.d/iotracer-deb-src.sources
    note "adding deb-src entries for apt's own archives ($list)"
    : >"$list.tmp"
    for f in /etc/apt/sources.list.d/*.sources; do
        [ "$f" != "$list" ] || continue
        sed -n '/^Types:.*\bdeb\b/,/^$/p' "$f" | sed 's/^Types:.*/Types: deb-src/' >>"$list.tmp"
        echo >>"$list.tmp"
    done
    if [ -f /etc/apt/sources.list ]; then
        sed -n 's/^deb \(.*\)/deb-src \1/p' /etc/apt/sources.list >/etc/apt/sources.list.d/iotracer-deb-src.list
    fi
    mv "$list.tmp" "$list"
    apt-get update -qq
fi
deps=(build-essential ninja-build meson pkg-config python3 systemtap-sdt-dev dpkg-dev
      libglib2.0-dev libpixman-1-dev libfdt-dev zlib1g-dev libaio-dev liburing-dev)
missing=()
for p in "${deps[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    note "installing ${missing[*]}"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

work=$(mktemp -d /var/tmp/qemu-usdt.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
note "fetching the source of qemu $srcver"
apt-get source -qq --download-only qemu="$srcver" >/dev/null 2>&1 || die "apt-get source qemu=$srcver failed"
dpkg-source -x ./*.dsc src >/dev/null 2>&1 ||
    die "cannot unpack the source"
cflags=
if [ -n "$nop5" ]; then
    # sys/sdt.h defines its nop unguarded: a header of the same name found first takes the real one
    # in and then redefines it (used only where a probe is expanded, later). Bytes, not a mnemonic:
    # the assembler would drop a zero displacement and make it 4 bytes.
    mkdir -p nop5/sys
    printf '%s\n' '#include_next <sys/sdt.h>' '#undef _SDT_NOP' \
        '#define _SDT_NOP .byte 0x0f; .byte 0x1f; .byte 0x44; .byte 0x00; .byte 0x00' >nop5/sys/sdt.h
    cflags=-I$work/nop5
fi
mkdir bld
cd bld
note "configuring (dtrace trace backend, x86_64 system emulation)"
../src/configure --prefix=/usr --firmwarepath=/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu \
    --target-list=x86_64-softmmu --enable-trace-backends=dtrace --enable-linux-aio \
    --enable-linux-io-uring --disable-docs --disable-werror --disable-gtk --disable-sdl --disable-vnc \
    --disable-opengl --disable-spice --disable-curses --disable-xen --disable-slirp --disable-capstone \
    --disable-tools --disable-guest-agent ${cflags:+--extra-cflags="$cflags"} >configure.log 2>&1 || { tail -20 configure.log >&2; die "configure failed"; }
note "building (a few minutes)"
ninja qemu-system-x86_64 >build.log 2>&1 || { tail -30 build.log >&2; die "the build failed"; }
./qemu-system-x86_64 --version >/dev/null || die "the built QEMU does not run"
if [ -n "$nop5" ]; then
    # Whole outputs read, no reader quitting early: under pipefail a writer's SIGPIPE is a failure.
    site=$(readelf -n qemu-system-x86_64 | awk '/Name: virtio_blk_handle_read$/ { getline;
                                                sub(/.*Location: 0x/, ""); sub(/,.*/, ""); print }')
    insn=$(objdump -d --start-address="0x${site:-0}" --stop-address="$((0x${site:-0} + 5))" qemu-system-x86_64)
    [[ $insn == *"0f 1f 44 00 00"* ]] || die "the probe sites of the --nop5 build are not 5-byte nops"
fi
mkdir -p "$cache"
cp qemu-system-x86_64 "$bin.tmp"
mv "$bin.tmp" "$bin"
echo "$bin"
