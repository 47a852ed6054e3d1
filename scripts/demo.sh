#!/usr/bin/env bash
# The demo: set up (idempotent), then run facekp on the webcam, or on the bundled
# sample video when no camera opens; in a window when there is a display, else
# headless, writing out/demo.mp4 and out/demo.jsonl. Extra arguments go to `facekp run`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ -n "${DISPLAY:-}" ]; then
  exec target/release/facekp run "$@"
fi
mkdir -p out
exec target/release/facekp run --headless --output out/demo.mp4 --keypoints out/demo.jsonl "$@"
