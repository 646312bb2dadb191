#!/usr/bin/env bash
# Installs what the tests need beyond a Rust toolchain: the build prerequisites
# (scripts/install-build-deps.sh; its C compiler also builds the memsink tests' C peer),
# Debian's Chromium for the browser tests, ffmpeg (the stand-in camera encoder, the
# camera test recordings and the JSMpeg transcoder), Debian's nginx (the reverse proxy
# in front of a unix socket, as on PiKVM), curl (the README's Admin API examples and
# HTTP Basic logins), Prometheus's promtool (validates /metrics), and the npm packages
# the browser tests load (janus.js, webrtc-adapter, playwright-core, JSMpeg, jmuxer,
# the whip-whep player), and aiortc (the WHEP test's Python WebRTC player).
set -euo pipefail
. "$(dirname "$0")/lib/apt.sh"
cd "$(dirname "$0")/.."

scripts/install-build-deps.sh

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)
# Signs Janus tokens in the tests, independently of peregrine's own HMAC code, and
# makes the test CA and certificates of the TLS tests.
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# Runs the README's Admin API examples as written, sends browser-like Origins, and logs
# in to the main port with HTTP Basic auth (-u).
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# /usr/sbin is not on every user's PATH.
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || need_apt+=(nginx-light)
if ((${#need_apt[@]})); then
  echo "installing system packages: ${need_apt[*]}"
  apt_install "${need_apt[@]}"
fi

# promtool checks the /metrics exposition (tests/metrics.rs). Debian ships it only in
# the Prometheus server package, which it enables and starts as a service; only the
# tool is wanted here, so the service is stopped and disabled again, and the package's
# recommended node exporter is left out.
if ! command -v promtool >/dev/null 2>&1; then
  echo "installing system packages: prometheus (for promtool)"
  apt_install --no-install-recommends prometheus
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    sudo=
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  fi
fi

# aiortc, an independent WebRTC stack in Python, plays WHEP in tests/whep.rs. pip first
# (a current release); Debian's Python refuses a system-wide pip install without
# --break-system-packages (PEP 668), and without pip Debian's own package does.
if ! python3 -c "import aiortc" >/dev/null 2>&1; then
  echo "installing aiortc (PyPI) for the WHEP test"
  if python3 -m pip --version >/dev/null 2>&1; then
    python3 -m pip install --quiet aiortc 2>/dev/null ||
      python3 -m pip install --quiet --break-system-packages aiortc
  else
    apt_install python3-aiortc
  fi
fi

echo "installing npm packages for the browser tests"
(cd janus-compat && npm ci --no-audit --no-fund --loglevel=error)
