#!/usr/bin/env bash
# Runs every test: formatting and lints, the Rust unit and integration tests (real
# WebRTC peers, real sockets), and the browser tests (real janus.js in headless Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== cargo build"
cargo build --bins
echo "== cargo test"
cargo test --all-targets
echo "== browser tests"
PEREGRINE_BIN="${CARGO_TARGET_DIR:-$(pwd)/target}/debug/peregrine" npm --prefix janus-compat test
