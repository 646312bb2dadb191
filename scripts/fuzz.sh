#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60), one after the other.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Not part of CI: a sanitizer build plus minutes per target is too much for it. Needs
# cargo-fuzz (`cargo install cargo-fuzz`). cargo-fuzz wants a nightly compiler for the
# sanitizer flags; on a stable toolchain RUSTC_BOOTSTRAP=1 lets it use them. The build
# goes to its own target directory (FUZZ_TARGET_DIR, default: the normal target
# directory's path with -fuzz appended): sanitizer builds cannot share the normal one.
#
# New inputs found go to fuzz/corpus/TARGET (not committed); the committed seeds in
# fuzz/seeds/TARGET are read too. A crash leaves its input in fuzz/artifacts/TARGET and
# makes this script exit non-zero after the remaining targets have run.
set -uo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
export RUSTC_BOOTSTRAP="${RUSTC_BOOTSTRAP:-1}"
# openh264's C code is instrumented too and trips ASan's ODR check on its own tables.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_odr_violation=0}"
target_dir="${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-$(pwd)/target}}"
[[ "$target_dir" == *-fuzz ]] || target_dir="$target_dir-fuzz"
export CARGO_TARGET_DIR="$target_dir"

if ! command -v cargo-fuzz >/dev/null; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz" >&2
    exit 2
fi

cd fuzz
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

cargo fuzz build || exit 1

failed=()
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "seeds/$target"
    echo "== $target (${seconds}s)"
    if ! cargo fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1; then
        failed+=("$target")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "crashes in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
echo "all ${#targets[@]} targets ran ${seconds}s without a crash"
