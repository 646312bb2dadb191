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
echo "== fuzz targets compile"
# They run by hand (scripts/fuzz.sh) with a sanitizer toolchain; this keeps them in step
# with the crate's API.
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
cargo check --manifest-path fuzz/Cargo.toml --bins --target-dir "${CARGO_TARGET_DIR:-$(pwd)/target}/fuzz-check"
