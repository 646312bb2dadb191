#!/usr/bin/env bash
# Installs what the tests need beyond a Rust toolchain: Debian's Chromium for the browser
# tests, ffmpeg (the stand-in camera encoder and the JSMpeg transcoder), a C compiler for
# the memsink tests, and the npm packages the browser tests load (janus.js, webrtc-adapter,
# playwright-core, JSMpeg, jmuxer).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)
# The memsink tests compile an independent C peer.
command -v cc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
if ((${#need_apt[@]})); then
  echo "installing system packages: ${need_apt[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

echo "installing npm packages for the browser tests"
(cd janus-compat && npm ci --no-audit --no-fund --loglevel=error)
