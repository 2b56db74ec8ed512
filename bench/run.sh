#!/usr/bin/env bash
# Build the release binary and run the spine benchmarks (JSON lines on stdout).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tributary-target}"
cargo build --release --locked --quiet
exec python3 bench/spine.py "${1:-all}" --bin "$CARGO_TARGET_DIR/release/tributary"
