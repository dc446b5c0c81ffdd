#!/usr/bin/env bash
# Installs what iotracer needs from Debian's archive (only what is missing),
# then configures and builds it in ./build. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(
  meson ninja-build pkg-config gcc clang llvm bpftool
  libbpf-dev libelf-dev zlib1g-dev
  protobuf-c-compiler libprotobuf-c-dev protobuf-compiler
  liburing-dev libaio-dev systemtap-sdt-dev
  python3 fio bpftrace e2fsprogs util-linux mount coreutils procps libclang-rt-14-dev
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) != 0 ]]; then
    echo "setup: missing packages ${missing[*]}; run this as root to install them" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ ! -f build/build.ninja ]]; then
  meson setup build --buildtype=debugoptimized
fi
ninja -C build
