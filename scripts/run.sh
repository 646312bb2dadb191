#!/usr/bin/env bash
# Builds (installing the build prerequisites if missing) and runs peregrine; arguments
# go to peregrine. With none it streams the camera at /dev/video0 if there is one, the
# test pattern otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-build-deps.sh
exec cargo run --release -- "$@"
