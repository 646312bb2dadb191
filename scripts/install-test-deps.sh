#!/usr/bin/env bash
# Installs what the tests need beyond a Rust toolchain: the build prerequisites
# (scripts/install-build-deps.sh; its C compiler also builds the memsink tests' C peer),
# Debian's Chromium for the browser tests, ffmpeg (the stand-in camera encoder, the
# camera test recordings and the JSMpeg transcoder), Debian's nginx (the reverse proxy
# in front of a unix socket, as on PiKVM), curl (the README's Admin API examples and
# HTTP Basic logins), Prometheus's promtool (validates /metrics), Debian's Janus (the
# downstream server fed by --rtp-forward, run in network namespaces made with iproute2's
# `ip`), aiortc (the WHEP tests' Python WebRTC player, the WHIP tests' publisher), and
# the npm packages the browser tests load (janus.js, webrtc-adapter, playwright-core,
# JSMpeg, jmuxer, the whip-whep player).
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
# The network namespaces the Janus tests run Janus in.
[ -x /usr/sbin/ip ] || command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
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

# Janus 1.1.2, a real downstream server for the scale-out tests (--rtp-forward into its
# Streaming plugin, VideoRoom behind simple-whip-server). The tests start their own
# instances; the packaged service is not wanted, so it is stopped and disabled again.
if ! command -v janus >/dev/null 2>&1; then
  echo "installing system packages: janus"
  apt_install --no-install-recommends janus
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    sudo=
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo systemctl disable --now janus.service >/dev/null 2>&1 || true
  fi
fi

# simple-whip-server, the WHIP endpoint in front of Janus VideoRoom that --whip-forward
# publishes to. Where the package cannot be installed (a nodejs from outside Debian holds
# back the node-* libraries it depends on) it is unpacked into a folder of its own
# instead; the browser test looks in both places, and takes its node modules from
# janus-compat/node_modules either way.
whip_unpacked=/var/cache/peregrine-tests/simple-whip-server
if [ ! -f /usr/share/simple-whip-server/src/server.js ] && [ ! -f "$whip_unpacked/usr/share/simple-whip-server/src/server.js" ]; then
  echo "installing system packages: simple-whip-server"
  if ! apt_install --no-install-recommends simple-whip-server; then
    echo "simple-whip-server cannot be installed here; unpacking it into $whip_unpacked"
    sudo=
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    tmp=$(mktemp -d)
    apt_download simple-whip-server "$tmp"
    $sudo mkdir -p "$whip_unpacked"
    $sudo dpkg -x "$tmp"/simple-whip-server_*.deb "$whip_unpacked"
    rm -rf "$tmp"
  fi
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    sudo=
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo systemctl disable --now simple-whip-server.service >/dev/null 2>&1 || true
  fi
fi

# aiortc, an independent WebRTC stack in Python, plays WHEP in tests/whep.rs and publishes
# over WHIP in tests/whip_ingest.rs and janus-compat/tests/whip.test.mjs (its PyAV encodes
# the H.264). pip first (a current release); Debian's Python refuses a system-wide pip install without
# --break-system-packages (PEP 668), and without pip Debian's own package does.
if ! python3 -c "import aiortc" >/dev/null 2>&1; then
  echo "installing aiortc (PyPI) for the WHEP and WHIP tests"
  if python3 -m pip --version >/dev/null 2>&1; then
    python3 -m pip install --quiet aiortc 2>/dev/null ||
      python3 -m pip install --quiet --break-system-packages aiortc
  else
    apt_install python3-aiortc
  fi
fi

echo "installing npm packages for the browser tests"
(cd janus-compat && npm ci --no-audit --no-fund --loglevel=error)
