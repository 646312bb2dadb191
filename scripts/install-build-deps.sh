#!/usr/bin/env bash
# Installs what building peregrine needs beyond a Rust toolchain: a C/C++ compiler
# (openh264 is built from source), libclang (the V4L2 bindings are generated from the
# kernel headers at build time), pkg-config with libopus and ALSA's library (the Opus
# codec and sound capture/playback link against the system's), and nasm on x86 (openh264's
# SIMD code). Uses apt-get for whatever is missing.
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
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
pkg-config --exists opus 2>/dev/null || need_apt+=(libopus-dev)
pkg-config --exists alsa 2>/dev/null || need_apt+=(libasound2-dev)
# openh264's SIMD code on x86 is assembled by nasm; without it the build silently falls
# back to plain C, and encoding the test pattern or a raw camera costs about twice the CPU.
case "$(uname -m)" in
  x86_64 | i?86) command -v nasm >/dev/null 2>&1 || need_apt+=(nasm) ;;
esac

if ((${#need_apt[@]})); then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "please install: a C/C++ compiler, libclang, the Linux kernel headers, pkg-config, libopus and ALSA headers, and nasm on x86 (${need_apt[*]} on Debian)" >&2
    exit 1
  fi
  echo "installing build prerequisites: ${need_apt[*]}"
  apt_install "${need_apt[@]}"
fi
