#!/usr/bin/env bash
# The fan-out benchmark: release build, a pre-encoded 1280x720 30 fps ~2 Mbit/s H.264
# file (so H.264 encoding is not in the figures), then peregrine-load --bench, which
# starts peregrine on it and prints a table for WebRTC viewers (100, 300, 600, 1000 and
# on while they are held: viewers held, loss, server CPU per packet and per
# viewer-second, load generator CPU and which process saturated, RSS per viewer and
# after they left, TTFF, the server's capture-to-send delay, server CPU per thread),
# one for MJPEG /stream clients (the server decodes the H.264 and encodes JPEG once per
# picture for all of them), and both side by side. Extra arguments go to
# peregrine-load (e.g. --steps 1,10 --duration 5 --json out.json, --transport webrtc
# for WebRTC only, --decode-sample N for how many viewers decode their pictures).
# GOP=frames sets the keyframe interval (default 60 = 2 s); a file source cannot make
# keyframes on request, so a new viewer starts from the cached GOP, which the first
# pictures it gets replay.
# --audio on|both: WebRTC viewers ask for sound (both: the steps without, then with it,
# and a table of what sound costs per viewer-second); the server then gets a sound
# source, SOUND (default "--audio tone", the test tone; SOUND= for none).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v ffmpeg >/dev/null || {
    echo "bench.sh needs ffmpeg (Debian: apt-get install ffmpeg)" >&2
    exit 1
}
GOP="${GOP:-60}"
cargo build --release --bins
target="${CARGO_TARGET_DIR:-target}"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "encoding the input (1280x720, 30 fps, 2 Mbit/s, GOP $GOP) ..." >&2
ffmpeg -nostdin -loglevel error \
    -f lavfi -i "testsrc2=size=1280x720:rate=30,format=yuv420p" -t 20 \
    -c:v libx264 -profile:v baseline -preset veryfast -tune zerolatency \
    -b:v 2M -maxrate 2M -bufsize 2M -g "$GOP" -keyint_min "$GOP" -sc_threshold 0 \
    -x264-params repeat-headers=1 -bsf:v h264_mp4toannexb -f h264 "$tmp/input.h264"

sound_args=()
prev=""
for arg in "$@"; do
    case "$prev $arg" in
    "--audio on" | "--audio both" | "--audio -"* | *" --audio=on" | *" --audio=both") want_sound=1 ;;
    esac
    prev="$arg"
done
# `--audio` without a value means on.
[[ "$prev" == "--audio" ]] && want_sound=1
if [[ -n "${want_sound:-}" ]]; then
    for word in ${SOUND---audio tone}; do
        sound_args+=("--peregrine-arg=$word")
    done
fi

"$target/release/peregrine-load" --bench "$tmp/input.h264" \
    --peregrine "$target/release/peregrine" --transport both "${sound_args[@]}" "$@"

# The browser half (BROWSER=0 leaves it out): time to first live picture after navigation
# and glass-to-glass per picture in Chromium, at 1, 10 and 100 viewers.
if [[ "${BROWSER:-1}" != 0 ]]; then
    if command -v node >/dev/null && [[ -x "${CHROMIUM:-/usr/bin/chromium}" ]]; then
        echo
        scripts/bench-browser.sh
    else
        echo "browser figures left out: they need node and chromium (scripts/install-test-deps.sh)" >&2
    fi
fi
