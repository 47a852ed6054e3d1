#!/usr/bin/env bash
# The tests: set up (idempotent), then the lint gate (rustfmt, clippy with
# warnings as errors) and the unit and integration tests on real data (the
# shipped weights, ../shared videos and samples, fixtures in tests/data).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export LIBTORCH_USE_PYTORCH=1
export PATH="$PWD/.venv/bin:$PATH"
cargo fmt --check
cargo clippy --release --locked --all-targets -q -- -D warnings
cargo test --release --locked "$@"
