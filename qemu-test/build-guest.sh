#!/bin/bash
# build-guest.sh BUILD_DIR [EXTRA_FILE...]
#
# Builds, from Debian packages only, a bootable x86_64 guest for the
# end-to-end tests: Debian 12's 6.1 kernel (taken from its .deb, never
# installed on the host) and a busybox initramfs with the modules, fio and
# every EXTRA_FILE (placed in /usr/local/bin in the guest, with the shared
# libraries it needs).
#
# Output, all under BUILD_DIR/qemu-test/:
#   guest/vmlinuz          the kernel
#   guest/initramfs.img    what QEMU boots: base.img followed by extras.img
#                          (the kernel unpacks concatenated cpio archives)
#   guest/base.img         kernel modules, busybox, fio, mke2fs, /init
#   guest/extras.img       the EXTRA_FILEs and their libraries (if any)
#   guest/kernel-release   `uname -r` of the guest
#   guest/config           the guest kernel's config
#   guest/stamp            what the guest was built from (the cache key)
#   debs/                  the downloaded kernel package
#
# Idempotent: nothing is rebuilt unless its cache key changes. The base key
# is the kernel package and version, this script, the guest's /init and the
# versions of the Debian packages copied in; the extras key adds the path,
# size, mtime and content of every EXTRA_FILE. A new EXTRA_FILE (say, a
# freshly compiled iotracer) therefore costs a small archive and a copy, not
# a whole rebuild.
#
# Environment:
#   QEMU_TEST_KERNEL_PKG     kernel package to use (default: what
#                            linux-image-amd64 depends on)
#   QEMU_TEST_EXTRA_MODULES  more module names to load at boot (space separated)
#   QEMU_TEST_COMPRESS       gzip (default) or zstd
set -euo pipefail

prog=${0##*/}
here=$(cd "$(dirname "$0")" && pwd)

die() { echo "$prog: error: $*" >&2; exit 1; }
note() { echo "$prog: $*" >&2; }

[ $# -ge 1 ] || die "usage: $prog BUILD_DIR [EXTRA_FILE...]"
build_dir=$1
shift
mkdir -p "$build_dir"
build_dir=$(cd "$build_dir" && pwd)
top=$build_dir/qemu-test
mkdir -p "$top"

extras=()
for f in "$@"; do
    [ -f "$f" ] || die "extra file '$f' does not exist or is not a regular file"
    extras+=("$(cd "$(dirname "$f")" && pwd)/${f##*/}")
done

# One build at a time per build dir (meson may run several tests at once).
exec 9>"$top/.build.lock"
flock 9

# --- host packages -------------------------------------------------------
# Installed only when missing; `apt-get update` only when something must
# be installed, so a cached build never touches the network.
pkgs=(qemu-system-x86 qemu-utils busybox-static cpio e2fsprogs fio zstd xz-utils kmod gzip util-linux)
missing=()
for p in "${pkgs[@]}"; do
    if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing packages (${missing[*]}); run as root or install them"
    note "installing ${missing[*]}"
    apt-get update -qq >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
fi

# --- which kernel --------------------------------------------------------
# linux-image-amd64 is Debian 12's meta package; it depends on exactly one
# linux-image-6.1.0-N-amd64. We resolve it without installing anything.
resolve_kernel() {
    if [ -n "${QEMU_TEST_KERNEL_PKG:-}" ]; then
        kpkg=$QEMU_TEST_KERNEL_PKG
    else
        kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
            awk '$1 == "Depends:" && $2 ~ /^linux-image-6\.1\.0-.*-amd64$/ { print $2; exit }')
    fi
    kver=
    if [ -n "$kpkg" ]; then
        kver=$(apt-cache policy "$kpkg" 2>/dev/null | awk '$1 == "Candidate:" { print $2; exit }')
        [ "$kver" != "(none)" ] || kver=
    fi
}
resolve_kernel
if [ -z "$kver" ]; then
    # No package lists yet (fresh machine): fetch them once and retry.
    note "apt package lists do not know the kernel package; running apt-get update"
    apt-get update -qq >&2 || true
    resolve_kernel
fi
if [ -z "$kver" ]; then
    # Offline but built before: keep using what we have.
    if [ -s "$top/guest/stamp" ] && [ -s "$top/guest/vmlinuz" ]; then
        note "cannot resolve the kernel package; keeping the existing guest"
        exit 0
    fi
    die "cannot resolve the Debian 6.1 kernel package (apt-cache depends linux-image-amd64 gave '${kpkg:-nothing}')"
fi

# --- cache keys ----------------------------------------------------------
compress=${QEMU_TEST_COMPRESS:-gzip}
case $compress in gzip | zstd) ;; *) die "QEMU_TEST_COMPRESS must be gzip or zstd" ;; esac
guest=$top/guest
mkdir -p "$guest"
script_sum=$(sha256sum <"$0" | cut -d' ' -f1)
if [ -n "$kver" ]; then
    base_key=$(
        echo "kernel $kpkg=$kver"
        echo "script $script_sum"
        echo "init $(sha256sum <"$here/guest-init.sh" | cut -d' ' -f1)"
        echo "pkgs $(dpkg-query -W -f='${Package}=${Version} ' busybox-static fio e2fsprogs)"
        echo "modules ${QEMU_TEST_EXTRA_MODULES:-}"
        echo "compress $compress"
    )
elif [ -s "$guest/base.stamp" ] && [ -s "$guest/base.img" ] && [ -s "$guest/vmlinuz" ]; then
    # Offline, but built before: keep the base we have.
    note "cannot resolve the kernel package; keeping the existing base image"
    base_key=$(cat "$guest/base.stamp")
else
    die "cannot resolve the Debian 6.1 kernel package (apt-cache depends linux-image-amd64 gave '${kpkg:-nothing}')"
fi
extras_key=$(
    echo "script $script_sum"
    echo "compress $compress"
    echo "base $(echo "$base_key" | sha256sum | cut -d' ' -f1)"
    for f in ${extras[@]+"${extras[@]}"}; do
        echo "extra $f $(stat -c '%s %Y' "$f") $(sha256sum <"$f" | cut -d' ' -f1)"
    done
)
key=$(printf '%s\n%s' "$base_key" "$extras_key")
if [ -s "$guest/stamp" ] && [ -s "$guest/vmlinuz" ] && [ -s "$guest/initramfs.img" ] &&
    [ "$(cat "$guest/stamp")" = "$key" ]; then
    note "guest is up to date ($guest)"
    exit 0
fi

start=$SECONDS
work=$(mktemp -d "$top/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT

case $compress in
gzip) comp=(gzip -6) ;;
zstd) comp=(zstd -q -T0 -10) ;;
esac
# pack DIR OUT: a reproducible cpio newc archive of DIR, owned by root.
pack() {
    (cd "$1" && find . -print0 | LC_ALL=C sort -z |
        cpio --null -o -H newc -R 0:0 --reproducible --quiet) | "${comp[@]}" >"$2"
}

# copy_with_libs ROOT SRC DEST: copy an executable into ROOT and, for a
# dynamic ELF, the libraries ldd finds plus the dynamic loader, at the same
# paths as on the host. Paths listed in $skip_libs (the base image's files)
# are not copied again.
declare -A copied
skip_libs=
copy_with_libs() {
    local root=$1 src=$2 dest=$3 lib out
    mkdir -p "$root$(dirname "$dest")"
    cp -L "$src" "$root$dest"
    # ldd fails (or says "not a dynamic executable") for static binaries and
    # non-ELF files: nothing more to copy then.
    out=$(LC_ALL=C ldd "$src" 2>/dev/null) || return 0
    if echo "$out" | grep -q 'not found'; then
        die "$src needs libraries that are not installed: $(echo "$out" | grep 'not found' | tr -s ' \t' ' ')"
    fi
    for lib in $(echo "$out" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }'); do
        [ -z "${copied[$lib]:-}" ] || continue
        copied[$lib]=1
        [ -e "$lib" ] || die "library $lib (needed by $src) does not exist"
        if [ -n "$skip_libs" ] && grep -qxF ".$lib" "$skip_libs"; then continue; fi
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
}

build_base() {
    note "building the base image (kernel $kpkg $kver)"
    # --- kernel package ------------------------------------------------------
    debs=$top/debs
    mkdir -p "$debs"
    deb=$(ls "$debs/${kpkg}_${kver//:/%3a}_"*.deb 2>/dev/null | head -n1 || true)
    if [ -z "$deb" ]; then
        note "downloading $kpkg $kver"
        # Keep only the current kernel's .deb; old ones are 70 MB each.
        rm -f "$debs"/*.deb
        # APT::Sandbox::User=root: the _apt user may not be able to write here.
        if ! (cd "$debs" && apt-get download -q -o APT::Sandbox::User=root "$kpkg=$kver" >&2); then
            # Stale package lists name a version the archive no longer has:
            # refresh them once and start over, since the kernel (and so the
            # cache key) may change.
            if [ -z "${QEMU_TEST_APT_UPDATED:-}" ]; then
                note "download failed; refreshing the package lists and retrying"
                apt-get update -qq >&2 || true
                rm -rf "$work"
                QEMU_TEST_APT_UPDATED=1 exec "$0" "$build_dir" ${extras[@]+"${extras[@]}"}
            fi
            die "apt-get download $kpkg=$kver failed"
        fi
        deb=$(ls "$debs/${kpkg}_"*.deb 2>/dev/null | head -n1 || true)
        [ -n "$deb" ] || die "apt-get download did not leave a .deb for $kpkg in $debs"
    fi
    note "unpacking $(basename "$deb")"
    dpkg-deb -x "$deb" "$work/k"
    vmlinuz=$(ls "$work"/k/boot/vmlinuz-* 2>/dev/null | head -n1 || true)
    [ -n "$vmlinuz" ] || die "no /boot/vmlinuz-* in $deb"
    krel=${vmlinuz##*/vmlinuz-}
    mroot=
    for d in "$work/k/lib/modules/$krel" "$work/k/usr/lib/modules/$krel"; do
        [ -d "$d" ] && mroot=$d
    done
    [ -n "$mroot" ] || die "no modules directory for $krel in $deb"
    grep -q '^CONFIG_DEBUG_INFO_BTF=y' "$work/k/boot/config-$krel" ||
        note "warning: $krel has no CONFIG_DEBUG_INFO_BTF; /sys/kernel/btf/vmlinux will be missing"

    # The package ships no modules.dep (the postinst runs depmod); make one.
    if [ ! -s "$mroot/modules.dep" ]; then
        base=${mroot%/lib/modules/"$krel"}
        depmod -b "$base" -F "$work/k/boot/System.map-$krel" "$krel" ||
            die "depmod failed on the unpacked $kpkg"
    fi

    # --- modules -------------------------------------------------------------
    # Loaded at boot, in this order of intent (dependencies come first anyway).
    # crc32c_generic: ext4 needs the crc32c crypto driver but only names it as a
    # softdep, which modules.dep does not carry.
    want_boot=(
        virtio virtio_ring virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
        qemu_fw_cfg virtio_console virtio_blk virtio_scsi scsi_mod sd_mod
        nvme_core nvme
        vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport vsock_loopback
        loop crc16 crc32c_generic crc32c_intel libcrc32c mbcache jbd2 ext4
    )
    # Shipped but not loaded: `modprobe NAME` in the guest when a test wants it
    # (each creates block devices that would otherwise show up in every trace).
    want_optional=(null_blk brd)
    # shellcheck disable=SC2206
    want_boot+=(${QEMU_TEST_EXTRA_MODULES:-})
    required=(virtio virtio_pci virtio_blk virtio_console qemu_fw_cfg)

    norm() { echo "${1//-/_}"; }

    declare -A path_of deps_of builtin
    while IFS= read -r line; do
        [ -n "$line" ] || continue
        mod=${line%%:*}
        name=${mod##*/}
        name=$(norm "${name%%.ko*}")
        path_of[$name]=$mod
        deps_of[$mod]=${line#*:}
    done <"$mroot/modules.dep"
    if [ -r "$mroot/modules.builtin" ]; then
        while IFS= read -r mod; do
            name=${mod##*/}
            builtin[$(norm "${name%%.ko*}")]=1
        done <"$mroot/modules.builtin"
    fi

    declare -A seen
    order=()
    add_mod() { # add_mod PATH: its dependencies first, then itself
        local p=$1 d
        [ -z "${seen[$p]:-}" ] || return 0
        seen[$p]=1
        # modules.dep lists every (transitive) dependency; recursing keeps the
        # order right whatever order depmod wrote them in.
        for d in ${deps_of[$p]:-}; do add_mod "$d"; done
        order+=("$p")
    }
    for m in "${want_boot[@]}"; do
        n=$(norm "$m")
        if [ -n "${builtin[$n]:-}" ]; then continue; fi
        if [ -z "${path_of[$n]:-}" ]; then
            for r in "${required[@]}"; do
                [ "$r" != "$n" ] || die "module $n is neither built in nor shipped by $kpkg"
            done
            note "warning: module $n not found in $kpkg, skipped"
            continue
        fi
        add_mod "${path_of[$n]}"
    done
    boot_order=("${order[@]}")
    for m in "${want_optional[@]}"; do
        n=$(norm "$m")
        [ -z "${builtin[$n]:-}" ] && [ -n "${path_of[$n]:-}" ] && add_mod "${path_of[$n]}"
    done

    # --- root file system ----------------------------------------------------
    root=$work/root
    mkdir -p "$root"/{bin,sbin,dev,proc,sys,run,tmp,root,etc/qemu-test,lib,lib64} \
        "$root"/usr/{bin,sbin,lib,local/bin} "$root"/mnt "$root"/var/tmp
    chmod 1777 "$root/tmp" "$root/var/tmp"
    # A console node lets the kernel give /init its stdio before devtmpfs is up.
    mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || true
    mknod -m 666 "$root/dev/null" c 1 3 2>/dev/null || true

    # busybox-static: no libraries needed. Every applet becomes a link in /bin,
    # which comes after /usr/local/bin and /usr/bin in PATH, so real tools win.
    bb=/bin/busybox
    [ -x "$bb" ] || bb=/usr/bin/busybox
    file_is_static() { ! LC_ALL=C ldd "$1" >/dev/null 2>&1; }
    file_is_static "$bb" || die "$bb is not static; is busybox-static installed?"
    cp "$bb" "$root/bin/busybox"
    for a in $("$bb" --list); do
        [ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"
    done

    copy_with_libs "$root" "$(command -v fio)" /usr/bin/fio
    # ext4 with all features from inside the guest (busybox mke2fs only makes ext2).
    copy_with_libs "$root" "$(command -v mke2fs)" /usr/sbin/mke2fs
    for a in mkfs.ext4 mkfs.ext2; do ln -sf mke2fs "$root/usr/sbin/$a"; done

    # Modules, decompressed: busybox insmod does not reliably read .ko.xz/.zst.
    mdest=$root/lib/modules/$krel
    : >"$root/etc/qemu-test/modules.load"
    for p in "${order[@]}"; do
        src=$mroot/$p
        dst=${p%.ko*}.ko
        mkdir -p "$mdest/$(dirname "$dst")"
        case $p in
        *.ko) cp "$src" "$mdest/$dst" ;;
        *.ko.xz) xz -dc "$src" >"$mdest/$dst" ;;
        *.ko.zst) zstd -qdc "$src" >"$mdest/$dst" ;;
        *.ko.gz) gzip -dc "$src" >"$mdest/$dst" ;;
        *) die "unknown module file type: $p" ;;
        esac
    done
    for p in "${boot_order[@]}"; do echo "${p%.ko*}.ko" >>"$root/etc/qemu-test/modules.load"; done
    # A modules.dep for the modules we ship, so `modprobe` works in the guest.
    for p in "${order[@]}"; do
        printf '%s:' "${p%.ko*}.ko"
        for d in ${deps_of[$p]:-}; do printf ' %s' "${d%.ko*}.ko"; done
        echo
    done >"$mdest/modules.dep"
    cp "$mroot/modules.builtin" "$mdest/" 2>/dev/null || true
    mkdir -p "$root/boot"
    cp "$work/k/boot/config-$krel" "$root/boot/"

    cp "$here/guest-init.sh" "$root/init"
    chmod 755 "$root/init"
    cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
    cat >"$root/etc/group" <<'EOF'
root:x:0:
tty:x:5:
nogroup:x:65534:
EOF
    printf '127.0.0.1 localhost qemu-test\n::1 localhost\n' >"$root/etc/hosts"
    echo qemu-test >"$root/etc/hostname"
    echo "$kpkg $kver" >"$root/etc/qemu-test/kernel"

    mkdir -p "$work/base-out"
    pack "$root" "$work/base-out/base.img"
    (cd "$root" && find . ! -type d) | LC_ALL=C sort >"$work/base-out/base.files"
    cp "$vmlinuz" "$work/base-out/vmlinuz"
    echo "$krel" >"$work/base-out/kernel-release"
    cp "$work/k/boot/config-$krel" "$work/base-out/config"
    printf '%s\n' "$base_key" >"$work/base-out/base.stamp"
    rm -rf "$work/k" "$root"
    note "base image: $krel, $(du -h "$work/base-out/base.img" | cut -f1), ${#boot_order[@]} modules loaded at boot"
}

# --- base image ----------------------------------------------------------
# Files are replaced one by one with rename(2), the stamp last, so an
# interrupted build is simply redone next time.
if [ ! -s "$guest/base.stamp" ] || [ "$(cat "$guest/base.stamp")" != "$base_key" ] ||
    [ ! -s "$guest/base.img" ] || [ ! -s "$guest/vmlinuz" ]; then
    rm -f "$guest/stamp" "$guest/base.stamp"
    build_base
    for f in vmlinuz kernel-release config base.files base.img; do
        mv -f "$work/base-out/$f" "$guest/$f"
    done
    mv -f "$work/base-out/base.stamp" "$guest/base.stamp"
fi

# --- extras --------------------------------------------------------------
rm -f "$guest/extras.img"
if [ ${#extras[@]} -gt 0 ]; then
    xroot=$work/extras
    mkdir -p "$xroot/usr/local/bin"
    skip_libs=$guest/base.files
    for f in "${extras[@]}"; do
        copy_with_libs "$xroot" "$f" "/usr/local/bin/${f##*/}"
    done
    pack "$xroot" "$guest/extras.img"
fi

# The kernel unpacks one archive after the other, so concatenation is all
# it takes; later files win.
if [ ${#extras[@]} -gt 0 ]; then
    cat "$guest/base.img" "$guest/extras.img" >"$work/initramfs.img"
else
    # Nothing to add: share the base image's blocks instead of copying 35 MB.
    ln -f "$guest/base.img" "$work/initramfs.img" 2>/dev/null || cp "$guest/base.img" "$work/initramfs.img"
fi
mv -f "$work/initramfs.img" "$guest/initramfs.img"
printf '%s\n' "$key" >"$guest/stamp"
note "guest ready in $((SECONDS - start)) s: $guest (initramfs $(du -h "$guest/initramfs.img" | cut -f1), ${#extras[@]} extra file(s))"
