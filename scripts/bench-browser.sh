#!/usr/bin/env bash
# The browser benchmark: release build, then headless Chromium (Debian's, driven by
# playwright-core from janus-compat/) against peregrine on the test pattern. Prints the
# time to first live picture (bundled page over WHEP and over the Janus API, the
# unchanged demo page with janus.js) with where the time goes, and glass-to-glass per
# picture at 1, 10 and 100 viewers next to the server's own delay.
# Settings (environment): LOADS=20 GAP_MS=200-3000 SECONDS=10 VIEWERS=1,10,100
# RESOLUTION=1280x720 SEED=1 CHROMIUM=/usr/bin/chromium.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v node >/dev/null || {
    echo "bench-browser.sh needs node and chromium (scripts/install-test-deps.sh)" >&2
    exit 1
}
[[ -d janus-compat/node_modules/playwright-core ]] || npm --prefix janus-compat ci
cargo build --release --bins
target="${CARGO_TARGET_DIR:-$(pwd)/target}"

PEREGRINE_BIN="$target/release/peregrine" PEREGRINE_LOAD="$target/release/peregrine-load" \
    node benches/browser/bench.mjs
