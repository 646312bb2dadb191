#!/usr/bin/env bash
# Installs what building peregrine needs beyond a Rust toolchain: a C/C++ compiler
# (openh264 is built from source) and libclang (the V4L2 bindings are generated from the
# kernel headers at build time). Uses apt-get for whatever is missing.
set -euo pipefail
. "$(dirname "$0")/lib/apt.sh"

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
command -v c++ >/dev/null 2>&1 || need_apt+=(g++)
# bindgen needs the library and clang's own headers, which the -dev package brings.
has_libclang() {
  [ -n "${LIBCLANG_PATH:-}" ] && return 0
  if command -v dpkg >/dev/null 2>&1; then
    dpkg -s libclang-dev >/dev/null 2>&1
  else
    compgen -G '/usr/lib*/libclang*.so*' >/dev/null || compgen -G '/usr/lib/llvm*/lib/libclang*.so*' >/dev/null
  fi
}
has_libclang || need_apt+=(libclang-dev)
[ -e /usr/include/linux/videodev2.h ] || need_apt+=(linux-libc-dev)

if ((${#need_apt[@]})); then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "please install: a C/C++ compiler, libclang and the Linux kernel headers (${need_apt[*]} on Debian)" >&2
    exit 1
  fi
  echo "installing build prerequisites: ${need_apt[*]}"
  apt_install "${need_apt[@]}"
fi
